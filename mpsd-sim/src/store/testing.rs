//! Helpers for the store's unit tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;

pub(crate) use http::StatusCode;
pub(crate) use serde_json::{json, Value};

use super::Request;
pub(crate) use super::{Reply, Store, JSON, TEXT};

pub(crate) const S: &str = "/serviceconfigs/scid/sessionTemplates/LobbySession/sessions/s1";
pub(crate) const JOIN: &str = r#"{"members":{"me":{}}}"#;

pub(crate) fn store() -> Store {
    Store::new(["LobbySession", "GameSession"])
}

/// One request with optional `If-Match` / `If-None-Match`.
pub(crate) fn call_if(
    store: &mut Store,
    method: &str,
    path: &str,
    user: &str,
    headers: (Option<&str>, Option<&str>),
    body: &str,
) -> Reply {
    call_at(store, t0(), method, path, user, headers, body)
}

/// The time of every request unless a test says otherwise:
/// 2023-11-14T22:13:20Z.
pub(crate) fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// [`call_if`] at a given wall-clock time.
pub(crate) fn call_at(
    store: &mut Store,
    now: SystemTime,
    method: &str,
    path: &str,
    user: &str,
    (if_match, if_none_match): (Option<&str>, Option<&str>),
    body: &str,
) -> Reply {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    store.handle(&Request {
        method: &method,
        path,
        query,
        user,
        if_match,
        if_none_match,
        body: body.as_bytes(),
        now,
    })
}

pub(crate) fn call(store: &mut Store, method: &str, path: &str, user: &str, body: &str) -> Reply {
    call_if(store, method, path, user, (None, None), body)
}

pub(crate) fn body(reply: &Reply) -> Value {
    assert_eq!(reply.content_type, Some(JSON), "{reply:?}");
    serde_json::from_slice(&reply.body).unwrap()
}

pub(crate) fn etag(reply: &Reply) -> String {
    reply.etag.as_deref().expect("an ETag").to_owned()
}

pub(crate) fn assert_empty(reply: &Reply, status: u16) {
    assert_eq!(reply.status.as_u16(), status, "{reply:?}");
    assert!(reply.body.is_empty(), "{reply:?}");
    assert_eq!(reply.content_type, None, "{reply:?}");
}

pub(crate) fn assert_text(reply: &Reply, status: u16) {
    assert_eq!(reply.status.as_u16(), status, "{reply:?}");
    assert_eq!(reply.content_type, Some(TEXT), "{reply:?}");
    assert!(!reply.body.is_empty(), "{reply:?}");
}

/// A session with `a` as member 0 and `b` as member 1.
pub(crate) fn two_members() -> Store {
    let mut s = store();
    assert_eq!(call(&mut s, "PUT", S, "a", JOIN).status, 201);
    assert_eq!(call(&mut s, "PUT", S, "b", JOIN).status, 200);
    s
}
