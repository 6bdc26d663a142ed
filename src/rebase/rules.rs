//! The pure rules of a rebase: which writes qualify, where the current
//! session comes from, how the re-read and the rebased write are made, and
//! how long the pause before a rebased write may be.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, StatusCode, Uri};
use serde_json::Value;

use crate::logical::{GaveUp, NoSession};
use crate::response::ReadFailure;
use crate::rules::target::Target;

/// What a qualifying write is conditional on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Condition {
    /// `If-Match: <etag>`.
    Match,
    /// `If-None-Match: *`: create-only.
    CreateOnly,
}

/// The condition of a PUT or DELETE of a session or one of its elements,
/// and the session's URI; `None` for any other request.
pub(crate) fn conditional_write<B>(req: &Request<B>) -> Option<(Condition, Uri)> {
    if req.method() != Method::PUT && req.method() != Method::DELETE {
        return None;
    }
    let headers = req.headers();
    let condition = if headers.contains_key(header::IF_MATCH) {
        Condition::Match
    } else if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.to_str().is_ok_and(|v| v.trim() == "*"))
    {
        Condition::CreateOnly
    } else {
        return None;
    };
    let session = Target::parse(req.uri().path()).session_path()?;
    let mut uri = Uri::builder().path_and_query(session);
    if let Some(scheme) = req.uri().scheme() {
        uri = uri.scheme(scheme.clone());
    }
    if let Some(authority) = req.uri().authority() {
        uri = uri.authority(authority.clone());
    }
    Some((condition, uri.build().ok()?))
}

/// Why the current session could not be read from an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unusable {
    NoEtag,
    NotJson,
}

/// The session and its ETag from an answer that carries both: a JSON
/// object body and an `ETag` header.
pub(crate) fn current_session(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(HeaderValue, Value), Unusable> {
    let etag = headers
        .get(header::ETAG)
        .filter(|v| !v.is_empty())
        .ok_or(Unusable::NoEtag)?;
    match serde_json::from_slice::<Value>(body) {
        Ok(session @ Value::Object(_)) => Ok((etag.clone(), session)),
        _ => Err(Unusable::NotJson),
    }
}

/// Why a re-read gave no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reread {
    /// It answered 204: the session is gone.
    Gone,
    /// The 412 goes back, for this reason.
    Stop(NoSession),
}

/// Whether a re-read's answer, of `status` and announcing a body over the
/// session cap or not, is worth reading.
pub(crate) fn reread_status(status: StatusCode, over_cap: bool) -> Result<(), Reread> {
    match status {
        StatusCode::OK if over_cap => Err(Reread::Stop(NoSession::TooLarge)),
        StatusCode::OK => Ok(()),
        StatusCode::NO_CONTENT => Err(Reread::Gone),
        status => Err(Reread::Stop(NoSession::Reread { status })),
    }
}

/// The session, its ETag and its bytes from a re-read's 200: its headers
/// and what reading its body up to the session cap gave.
pub(crate) fn reread_session(
    headers: &HeaderMap,
    read: Result<Bytes, ReadFailure>,
) -> Result<(HeaderValue, Value, Bytes), NoSession> {
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(ReadFailure::TooLarge) => return Err(NoSession::TooLarge),
        Err(ReadFailure::Body(_)) => return Err(NoSession::RereadFailed),
    };
    match current_session(headers, &bytes) {
        Ok((etag, session)) => Ok((etag, session, bytes)),
        Err(Unusable::NoEtag) => Err(NoSession::NoEtag),
        Err(Unusable::NotJson) => Err(NoSession::NotJson),
    }
}

/// The pause before the `round`th rebased write, given `r` in `[0, 1)`
/// and the time `left` before the deadline: a random point of a window of
/// `spread`, doubled each round up to 32×, so that writers who keep
/// meeting spread further apart (full jitter). `Err` with the pause when it
/// would end past the deadline.
pub(crate) fn pause(
    spread: Duration,
    round: u32,
    r: f64,
    left: Duration,
) -> Result<Duration, GaveUp> {
    let window = spread.saturating_mul(1 << round.saturating_sub(1).min(5));
    // Within the window however `r` rounds, and no panic for a window too
    // large for `f64` to carry back.
    let wait = Duration::try_from_secs_f64(window.as_secs_f64() * r.clamp(0.0, 1.0))
        .map_or(window, |wait| wait.min(window));
    if wait > left {
        return Err(GaveUp::Deadline { wait });
    }
    Ok(wait)
}

/// Headers a re-read carries over from the write: who is asking, and how.
const CARRIED: [header::HeaderName; 2] = [header::AUTHORIZATION, header::ACCEPT];

/// A GET of the session at `uri`, as the write's caller.
pub(crate) fn reread<B: From<Bytes>>(write: &Parts, uri: Uri) -> Request<B> {
    let mut get = Request::new(B::from(Bytes::new()));
    *get.method_mut() = Method::GET;
    *get.uri_mut() = uri;
    *get.version_mut() = write.version;
    for (name, value) in &write.headers {
        let contract = name.as_str().eq_ignore_ascii_case("x-xbl-contract-version");
        if contract || CARRIED.contains(name) {
            get.headers_mut().append(name, value.clone());
        }
    }
    *get.extensions_mut() = write.extensions.clone();
    get
}

/// Makes the write's head conditional on `etag`, for a rebased body. A
/// create-only write becomes an update: its `If-None-Match` goes.
pub(crate) fn rebase_head(write: &mut Parts, etag: &HeaderValue) -> Condition {
    write.headers.remove(header::IF_NONE_MATCH);
    // The new body may differ in length; the client works it out.
    write.headers.remove(header::CONTENT_LENGTH);
    write.headers.insert(header::IF_MATCH, etag.clone());
    Condition::Match
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn parts(method: Method, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).unwrap().into_parts().0
    }

    const SESSION: &str = "http://mpsd.test/serviceconfigs/c/sessionTemplates/t/sessions/s";

    #[test]
    fn only_conditional_writes_of_sessions_and_elements_qualify() {
        let me = format!("{SESSION}/members/me");
        let cases = [
            (
                Method::PUT,
                SESSION,
                ("if-match", "\"e\""),
                Some(Condition::Match),
            ),
            (
                Method::DELETE,
                me.as_str(),
                ("if-match", "\"e\""),
                Some(Condition::Match),
            ),
            (
                Method::PUT,
                SESSION,
                ("if-none-match", " * "),
                Some(Condition::CreateOnly),
            ),
            (Method::PUT, SESSION, ("if-none-match", "\"e\""), None),
            (Method::PUT, SESSION, ("x-other", "1"), None),
            (Method::GET, SESSION, ("if-match", "\"e\""), None),
            (Method::POST, SESSION, ("if-match", "\"e\""), None),
            (
                Method::PUT,
                "http://mpsd.test/handles/h",
                ("if-match", "\"e\""),
                None,
            ),
        ];
        for (method, uri, header, want) in cases {
            let req = Request::from_parts(parts(method.clone(), uri, &[header]), ());
            let got = conditional_write(&req);
            assert_eq!(got.as_ref().map(|g| g.0), want, "{method} {uri} {header:?}");
            if let Some((_, session)) = got {
                assert_eq!(session, SESSION, "an element maps to its session");
            }
        }
    }

    #[test]
    fn the_current_session_needs_an_etag_and_a_json_object() {
        let mut headers = HeaderMap::new();
        let json = Bytes::from_static(b"{\"members\":{}}");
        assert_eq!(current_session(&headers, &json), Err(Unusable::NoEtag));
        headers.insert(header::ETAG, HeaderValue::from_static("\"e2\""));
        assert_eq!(current_session(&headers, &json).unwrap().0, "\"e2\"");
        for bad in [&b""[..], b"null", b"[1]", b"\"s\"", b"{oops", b"\xff"] {
            let body = Bytes::copy_from_slice(bad);
            assert_eq!(current_session(&headers, &body), Err(Unusable::NotJson));
        }
    }

    #[test]
    fn the_reread_carries_identity_and_contract_but_no_condition() {
        let write = parts(
            Method::PUT,
            &format!("{SESSION}/members/me"),
            &[
                ("authorization", "XBL3.0 x=u;t"),
                ("x-xbl-contract-version", "107"),
                ("if-match", "\"e1\""),
                ("content-type", "application/json"),
            ],
        );
        let get: Request<Full<Bytes>> = reread(&write, SESSION.parse().unwrap());
        assert_eq!(get.method(), Method::GET);
        assert_eq!(get.uri(), SESSION);
        assert_eq!(get.headers()["authorization"], "XBL3.0 x=u;t");
        assert_eq!(get.headers()["x-xbl-contract-version"], "107");
        assert!(!get.headers().contains_key("if-match"));
        assert!(!get.headers().contains_key("content-type"));
    }

    #[test]
    fn only_a_reread_answering_200_within_the_cap_is_read() {
        assert_eq!(reread_status(StatusCode::OK, false), Ok(()));
        assert_eq!(
            reread_status(StatusCode::OK, true),
            Err(Reread::Stop(NoSession::TooLarge))
        );
        assert_eq!(
            reread_status(StatusCode::NO_CONTENT, false),
            Err(Reread::Gone)
        );
        for status in [StatusCode::NOT_FOUND, StatusCode::SERVICE_UNAVAILABLE] {
            let want = Err(Reread::Stop(NoSession::Reread { status }));
            assert_eq!(reread_status(status, false), want);
            assert_eq!(reread_status(status, true), want, "the status speaks first");
        }
    }

    #[test]
    fn a_reread_body_gives_the_session_or_the_reason_it_does_not() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_static("\"e2\""));
        let json = || Ok(Bytes::from_static(b"{\"members\":{}}"));
        let (etag, session, bytes) = reread_session(&headers, json()).unwrap();
        assert_eq!(etag, "\"e2\"");
        assert!(session["members"].is_object());
        assert_eq!(bytes, "{\"members\":{}}");
        let too_large = Err(ReadFailure::TooLarge);
        assert_eq!(
            reread_session(&headers, too_large).unwrap_err(),
            NoSession::TooLarge
        );
        let broke = Err(ReadFailure::Body("reset".into()));
        assert_eq!(
            reread_session(&headers, broke).unwrap_err(),
            NoSession::RereadFailed
        );
        let text = Ok(Bytes::from_static(b"oops"));
        assert_eq!(
            reread_session(&headers, text).unwrap_err(),
            NoSession::NotJson
        );
        assert_eq!(
            reread_session(&HeaderMap::new(), json()).unwrap_err(),
            NoSession::NoEtag
        );
    }

    #[test]
    fn the_pause_window_doubles_each_round_up_to_32_times() {
        let base = Duration::from_millis(50);
        let far = Duration::MAX;
        let windows: Vec<_> = (0..=8)
            .map(|round| pause(base, round, 1.0, far).unwrap().as_millis())
            .collect();
        assert_eq!(windows, [50, 50, 100, 200, 400, 800, 1600, 1600, 1600]);
        assert_eq!(pause(base, 3, 0.0, far), Ok(Duration::ZERO));
        assert_eq!(pause(base, 3, 0.25, far), Ok(Duration::from_millis(50)));
        assert_eq!(
            pause(Duration::MAX, 3, 1.0, far),
            Ok(Duration::MAX),
            "saturates"
        );
    }

    #[test]
    fn a_pause_past_the_deadline_is_not_taken() {
        let base = Duration::from_millis(50);
        let left = Duration::from_millis(40);
        assert_eq!(pause(base, 1, 0.8, left), Ok(left), "ends at the deadline");
        assert_eq!(
            pause(base, 1, 0.9, left),
            Err(GaveUp::Deadline {
                wait: Duration::from_millis(45)
            })
        );
        assert_eq!(pause(base, 1, 0.0, Duration::ZERO), Ok(Duration::ZERO));
    }

    proptest::proptest! {
        #[test]
        fn a_pause_is_within_its_window_and_the_deadline(
            spread_ms in 0u64..10_000,
            round in 0u32..64,
            r in 0.0f64..1.0,
            left_ms in 0u64..100_000,
        ) {
            let (spread, left) = (Duration::from_millis(spread_ms), Duration::from_millis(left_ms));
            let window = spread * 32;
            match pause(spread, round, r, left) {
                Ok(wait) => proptest::prop_assert!(wait <= window.min(left)),
                Err(GaveUp::Deadline { wait }) => proptest::prop_assert!(wait > left && wait <= window),
                Err(other) => proptest::prop_assert!(false, "{other:?}"),
            }
        }
    }

    #[test]
    fn a_rebased_write_is_conditional_on_the_fresh_etag() {
        let mut write = parts(
            Method::PUT,
            SESSION,
            &[("if-none-match", "*"), ("content-length", "2")],
        );
        let etag = HeaderValue::from_static("\"e9\"");
        assert_eq!(rebase_head(&mut write, &etag), Condition::Match);
        assert_eq!(write.headers["if-match"], "\"e9\"");
        assert!(!write.headers.contains_key("if-none-match"));
        assert!(!write.headers.contains_key("content-length"));
    }
}
