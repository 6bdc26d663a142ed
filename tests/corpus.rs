//! Tests against data nobody on this project wrote: real captured MPSD
//! traffic and other implementations' `Retry-After` vectors, both from
//! `tests/data/corpus/` (see its `NOTICE.md`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use tower::Layer;
use tower::{service_fn, ServiceExt};
use tower_mpsd::classify::ClassifyLayer;
use tower_mpsd::classify::{BodyKind, Call, Outcome};
use tower_mpsd::response::{read_response, Payload};
use tower_mpsd::rules::retry_after::RetryAfter;
use tower_mpsd::rules::target::{Target, TargetKind};

fn corpus(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/data/corpus/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn headers(json: &Value) -> HeaderMap {
    json.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let name: HeaderName = k.parse().unwrap();
            (name, HeaderValue::from_str(v.as_str().unwrap()).unwrap())
        })
        .collect()
}

/// Every captured call, replayed through `ClassifyLayer` and
/// `read_response`, lands on the outcome and body kind the table gives.
#[tokio::test]
async fn real_traffic_is_classified_per_the_table() {
    let calls = corpus("real-traffic.jsonl");
    assert_eq!(calls.len(), 15);
    let mut seen = Vec::new();
    for call in &calls {
        let method: Method = call["method"].as_str().unwrap().parse().unwrap();
        let uri: http::Uri = call["uri"].as_str().unwrap().parse().unwrap();
        let status = StatusCode::from_u16(call["status"].as_u64().unwrap() as u16).unwrap();
        let response_headers = headers(&call["response_headers"]);
        let body = Bytes::from(
            call["response_body"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        let kind = Target::parse(uri.path()).kind();

        let replay = service_fn(move |_req: Request<Full<Bytes>>| {
            let mut res = Response::new(Full::new(body.clone()));
            *res.status_mut() = status;
            *res.headers_mut() = response_headers.clone();
            async move { Ok::<_, std::convert::Infallible>(res) }
        });
        let req = Request::builder()
            .method(method.clone())
            .uri(uri.clone())
            .body(Full::default())
            .unwrap();
        let res = ClassifyLayer::new()
            .layer(replay)
            .oneshot(req)
            .await
            .unwrap();
        let outcome = Outcome::of(&res).unwrap();
        let body_kind = outcome.body_kind(&Call::new(method.clone(), kind));
        let etag = res.headers().get("etag").cloned();

        match (status.as_u16(), kind) {
            (200, TargetKind::Session) | (201, TargetKind::Session) => {
                assert_eq!(body_kind, BodyKind::Session, "{uri}");
                assert!(etag.is_some(), "session answers carry an ETag: {uri}");
            }
            (200 | 201, TargetKind::Query | TargetKind::Handle) => {
                assert_eq!(body_kind, BodyKind::Json, "{uri}")
            }
            (412, TargetKind::Session) => {
                assert_eq!(outcome, Outcome::SessionChanged);
                assert_eq!(body_kind, BodyKind::Session);
            }
            other => panic!("unexpected capture {other:?} for {uri}"),
        }
        let expected = match status.as_u16() {
            200 => Outcome::Ok,
            201 => Outcome::Created,
            _ => Outcome::SessionChanged,
        };
        assert_eq!(outcome, expected, "{method} {uri}");

        let read = read_response(res, 64 * 1024).await;
        match (&read, outcome) {
            (Err(e), Outcome::SessionChanged) => {
                let tower_mpsd::response::MpsdError::Status {
                    etag: Some(etag),
                    payload,
                    ..
                } = e
                else {
                    panic!("{e:?}")
                };
                assert!(etag.to_str().unwrap().starts_with('"'));
                let session = payload.json().unwrap().unwrap();
                assert!(
                    session.get("members").is_some(),
                    "a 412 carries the whole session"
                );
            }
            (Ok(ok), _) => {
                assert!(!matches!(ok.payload, Payload::Message(_)));
                assert!(
                    ok.payload.json().unwrap().is_ok(),
                    "{uri}: body parses as JSON"
                );
            }
            other => panic!("{other:?}"),
        }
        seen.push(status.as_u16());
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, [200, 201, 412]);
}

/// Seconds since the epoch of an RFC 3339 `YYYY-MM-DDTHH:MM:SSZ` date.
fn rfc3339(s: &str) -> SystemTime {
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (proleptic Gregorian), as in Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    UNIX_EPOCH + Duration::from_secs(secs as u64)
}

/// What this crate reads where another implementation reads differently;
/// every other vector must match its source's expectation exactly.
fn our_decision(source: &str, value: &str) -> Option<&'static str> {
    match (source, value) {
        // libHttpClient reads a leading integer and ignores the rest, and
        // has no HTTP-date support. RFC 9110: delay-seconds = 1*DIGIT.
        ("microsoft/libHttpClient", "1.5" | "120abc" | "+5" | "-5") => Some("invalid"),
        ("microsoft/libHttpClient", "99999999999") => Some("delay_seconds"),
        ("microsoft/libHttpClient", "Fri, 31 Dec 1999 23:59:59 GMT") => Some("date"),
        // Azure's test calls its date-only parser; the header also allows
        // delay-seconds, which Azure's own get_retry_after reads first.
        ("Azure/azure-sdk-for-rust", "123") => Some("delay_seconds"),
        _ => None,
    }
}

#[test]
fn retry_after_vectors_match_the_documented_decisions() {
    let vectors = corpus("retry-after-vectors.jsonl");
    assert_eq!(vectors.len(), 88);
    let mut disagreements = 0;
    for v in &vectors {
        let source = v["source"].as_str().unwrap();
        let expected = &v["expected"];
        let mut kind = expected["kind"].as_str().unwrap();
        let now = v["now"]
            .as_str()
            .map(rfc3339)
            .unwrap_or_else(SystemTime::now);
        let value = match &v["value"] {
            Value::Null => None,
            Value::String(s) if s.starts_with("<httpdate::fmt_http_date(now + ") => {
                let secs: u64 = s
                    .trim_start_matches("<httpdate::fmt_http_date(now + ")
                    .trim_end_matches("s)>")
                    .parse()
                    .unwrap();
                Some(httpdate::fmt_http_date(now + Duration::from_secs(secs)))
            }
            Value::String(s) => Some(s.clone()),
            // Repeated field lines: the first one is read.
            Value::Array(lines) => Some(lines[0].as_str().unwrap().to_owned()),
            other => panic!("{other:?}"),
        };
        if let Some(ours) = value
            .as_deref()
            .and_then(|value| our_decision(source, value))
        {
            disagreements += usize::from(ours != kind);
            kind = ours;
        }
        let parsed = value.as_deref().and_then(RetryAfter::parse_str);
        let ctx = format!("{source} {:?} {}", v["value"], v["test"]);
        match kind {
            "absent" | "invalid" => assert_eq!(parsed, None, "{ctx}"),
            "ignored_for_status" => {
                // The parser reads it; the classifier ignores it on statuses
                // other than 429 and 503.
                assert!(parsed.is_some(), "{ctx}");
                let status = StatusCode::from_u16(v["status"].as_u64().unwrap() as u16).unwrap();
                let mut h = HeaderMap::new();
                h.insert(http::header::RETRY_AFTER, value.unwrap().parse().unwrap());
                let outcome = tower_mpsd::classify::classify(
                    &Call::new(Method::GET, TargetKind::Session),
                    status,
                    &h,
                );
                assert_eq!(outcome.retry_after(), None, "{ctx}");
            }
            "delay_seconds" => {
                let Some(RetryAfter::Delay(d)) = parsed else {
                    panic!("{ctx}: {parsed:?}")
                };
                check_seconds(
                    expected,
                    d,
                    &ctx,
                    our_decision(source, value.as_deref().unwrap()).is_some(),
                );
            }
            "date" => {
                let Some(RetryAfter::At(at)) = parsed else {
                    panic!("{ctx}: {parsed:?}")
                };
                if let Some(date) = expected["date"].as_str() {
                    assert_eq!(at, rfc3339(date), "{ctx}");
                }
                if let Some(unix) = expected["unix_seconds"].as_u64() {
                    assert_eq!(at, UNIX_EPOCH + Duration::from_secs(unix), "{ctx}");
                }
                let d = RetryAfter::At(at).delay_from(now);
                if let (Some(lo), Some(hi)) = (
                    expected["seconds_min"].as_u64(),
                    expected["seconds_max"].as_u64(),
                ) {
                    assert!((lo..=hi).contains(&d.as_secs()), "{ctx}: {d:?}");
                }
                if v["now"].is_string() || v["dynamic"] == true || expected["seconds"] == 0 {
                    check_seconds(expected, d, &ctx, false);
                }
            }
            other => panic!("{ctx}: unknown kind {other}"),
        }
    }
    assert_eq!(
        disagreements, 7,
        "each disagreement is listed in our_decision"
    );
}

/// Compares a delay with the vector's `seconds`; linkerd's vectors cap at
/// 300 s inside the parser, where this crate leaves caps to the retry layer.
fn check_seconds(expected: &Value, d: Duration, ctx: &str, ours: bool) {
    let Some(seconds) = expected["seconds"].as_u64() else {
        assert!(ours || expected["seconds"].is_null(), "{ctx}");
        return;
    };
    let capped = expected["note"]
        .as_str()
        .is_some_and(|n| n.contains("capped at max"));
    let got = if capped {
        d.min(Duration::from_secs(300))
    } else {
        d
    };
    // A date 600 s ahead of a `now` taken before formatting may read 599.x s.
    let got = if capped {
        got
    } else {
        Duration::from_secs(got.as_secs())
    };
    assert_eq!(got.as_secs(), seconds, "{ctx}");
    if let Some(raw) = expected["raw_seconds"].as_u64() {
        assert_eq!(d.as_secs(), raw, "{ctx}: the parser keeps the raw value");
    }
}
