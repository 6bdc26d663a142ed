//! The `metrics` feature, against the simulator over real TCP on paused
//! time: a 503 and a 429 retried, a write rebased after a 412 and another
//! before it was sent, each counted with its labels, and each logical
//! request's duration recorded as its history says.
#![cfg(feature = "metrics")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use http::{header, Method, StatusCode};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use mpsd_sim::Fault;
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt};
use tower_mpsd::error::Refused;
use tower_mpsd::logical::AttemptHistory;
use tower_mpsd::metrics as names;
use tower_mpsd::rebase::policy::ResendDelta;
use tower_mpsd::rebase::RebaseLayer;
use tower_mpsd::{MpsdLayer, ServiceBuilderExt};

use common::{create, http_client, overloaded, quiet_sim, request, retry_after, send, SCID};

/// Every metric recorded since the last call (a snapshot takes them), as `name{label=value,…}`:
/// counters as their count, histograms as their values.
#[derive(Debug, Default)]
struct Seen {
    counters: BTreeMap<String, u64>,
    histograms: BTreeMap<String, Vec<f64>>,
}

fn seen(snapshotter: &Snapshotter) -> Seen {
    let mut seen = Seen::default();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: Vec<_> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        match value {
            // A series seen before but not since shows as 0 or empty.
            DebugValue::Counter(0) => {}
            DebugValue::Histogram(values) if values.is_empty() => {}
            DebugValue::Counter(n) => {
                seen.counters.insert(name, n);
            }
            DebugValue::Histogram(values) => {
                let values = values.into_iter().map(|v| v.into_inner()).collect();
                seen.histograms.insert(name, values);
            }
            DebugValue::Gauge(_) => panic!("no gauges: {name}"),
        }
    }
    seen
}

fn counters(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test(start_paused = true)]
async fn a_503_a_429_and_rebases_are_counted_with_their_labels() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "watched");
    create(&uri, "alice", json!({})).await;
    let host = "server.address=127.0.0.1";

    // A recorder of this thread only: tests in parallel do not mix.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    tower_mpsd::metrics::describe();
    let client = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().rebase(RebaseLayer::new(ResendDelta)))
        .service(http_client());

    // A 503, then the session.
    sim.script(overloaded("1").times(1));
    let res = client
        .clone()
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let total = AttemptHistory::of(&res).unwrap().total;
    let after_503 = seen(&snapshotter);
    println!("after a 503: {after_503:#?}");
    assert_eq!(
        after_503.counters,
        counters(&[
            ("mpsd.client.cooldowns{mpsd.cause=overloaded}", 1),
            (
                "mpsd.client.responses{http.request.method=GET,mpsd.status_class=2xx,mpsd.outcome=ok}",
                1
            ),
            (
                "mpsd.client.responses{http.request.method=GET,mpsd.status_class=5xx,mpsd.outcome=service_unavailable}",
                1
            ),
            ("mpsd.client.retries{mpsd.cause=overloaded}", 1),
        ])
    );
    let logical = "{http.request.method=GET,mpsd.status_class=2xx}";
    assert_eq!(
        after_503.histograms[&format!("{}{logical}", names::LOGICAL_DURATION)],
        [total.as_secs_f64()],
        "the history's total, in seconds"
    );
    assert!(total.as_secs_f64() >= 1.0, "Retry-After: 1 waited out");
    assert_eq!(
        after_503.histograms[&format!("{}{logical}", names::LOGICAL_ATTEMPTS)],
        [2.0]
    );
    for status in [200, 503] {
        let sends = format!(
            "http.client.request.duration{{http.request.method=GET,{host},http.response.status_code={status}}}"
        );
        assert_eq!(
            after_503.histograms[&sends],
            [0.0],
            "one send, answered at once (paused time)"
        );
    }

    // A 429 from the service, then the session.
    let (name, value) = retry_after("2");
    sim.script(
        Fault::status(StatusCode::TOO_MANY_REQUESTS)
            .header(name, value)
            .body("{}"),
    );
    let res = client
        .clone()
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let after_429 = seen(&snapshotter);
    println!("after a 429: {after_429:#?}");
    assert_eq!(
        after_429.counters,
        counters(&[
            ("mpsd.client.cooldowns{mpsd.cause=throttled}", 1),
            (
                "mpsd.client.responses{http.request.method=GET,mpsd.status_class=2xx,mpsd.outcome=ok}",
                1
            ),
            (
                "mpsd.client.responses{http.request.method=GET,mpsd.status_class=4xx,mpsd.outcome=too_many_requests}",
                1
            ),
            ("mpsd.client.retries{mpsd.cause=throttled}", 1),
        ]),
        "each snapshot takes what came since the last"
    );
    let etag = res.headers()[header::ETAG].to_str().unwrap().to_owned();

    // Someone else writes the session: this stack's ETag is stale, and its
    // write loses the race (412) and is rebased.
    let other = send(
        request(Method::PUT, &uri)
            .user(Some("bob"))
            .json(json!({"members": {"me": {}}})),
    )
    .await;
    assert_eq!(other.outcome, tower_mpsd::classify::Outcome::Ok);
    let write = || {
        request(Method::PUT, &uri)
            .header(header::IF_MATCH, &etag)
            .json(json!({"properties": {"custom": {"k": 1}}}))
            .build()
    };
    let res = client.clone().oneshot(write()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let after_412 = seen(&snapshotter);
    println!("after a 412: {after_412:#?}");
    assert_eq!(
        after_412.counters,
        counters(&[
            ("mpsd.client.rebases{mpsd.rebase=after_412}", 1),
            (
                "mpsd.client.responses{http.request.method=PUT,mpsd.status_class=2xx,mpsd.outcome=ok}",
                1
            ),
            (
                "mpsd.client.responses{http.request.method=PUT,mpsd.status_class=4xx,mpsd.outcome=session_changed}",
                1
            ),
        ])
    );
    let put = "{http.request.method=PUT,mpsd.status_class=2xx}";
    assert_eq!(
        after_412.histograms[&format!("{}{put}", names::LOGICAL_ATTEMPTS)],
        [2.0]
    );

    // The same stale ETag again: the stack's board now knows the session
    // is newer, and rebases the write before it goes.
    let res = client.oneshot(write()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let after_stale = seen(&snapshotter);
    println!("after a stale write: {after_stale:#?}");
    assert_eq!(
        after_stale.counters,
        counters(&[
            ("mpsd.client.rebases{mpsd.rebase=before_sending}", 1),
            (
                "mpsd.client.responses{http.request.method=PUT,mpsd.status_class=2xx,mpsd.outcome=ok}",
                1
            ),
        ])
    );
    assert_eq!(
        after_stale.histograms[&format!("{}{put}", names::LOGICAL_ATTEMPTS)],
        [1.0],
        "sent once, already rebased"
    );

    // No label holds a user, a session or a token.
    let every = [&after_503, &after_429, &after_412, &after_stale];
    let names = every
        .iter()
        .flat_map(|seen| seen.counters.keys().chain(seen.histograms.keys()));
    for name in names {
        for private in ["alice", "bob", "token", "watched", "serviceconfigs"] {
            assert!(!name.contains(private), "{name}");
        }
    }
}

/// The default stack's retry layer makes each logical request: one it
/// refuses before sending (a cooldown past the deadline) still ends, as
/// an error with no send, in the logical request's metrics.
#[tokio::test(start_paused = true)]
async fn a_request_refused_by_a_cooldown_ends_as_an_error() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "refused");
    create(&uri, "alice", json!({})).await;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let client = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().deadline(Duration::from_secs(5)))
        .service(http_client());

    // A 503 whose Retry-After is past the deadline: handed back.
    sim.script(overloaded("30").times(1));
    let res = client
        .clone()
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Within its cooldown: refused, nothing sent.
    let error = client
        .clone()
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap_err();
    assert!(error.is::<Refused>(), "{error}");

    let seen = seen(&snapshotter);
    println!("{seen:#?}");
    let refused = "{http.request.method=GET,mpsd.status_class=error}";
    assert_eq!(
        seen.histograms[&format!("{}{refused}", names::LOGICAL_ATTEMPTS)],
        [0.0],
        "no send"
    );
    assert_eq!(
        seen.histograms[&format!("{}{refused}", names::LOGICAL_DURATION)],
        [0.0],
        "refused at once (paused time)"
    );
    let handed_back = "{http.request.method=GET,mpsd.status_class=5xx}";
    assert_eq!(
        seen.histograms[&format!("{}{handed_back}", names::LOGICAL_ATTEMPTS)],
        [1.0]
    );
}
