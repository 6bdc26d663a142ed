//! Helpers for the store's unit tests.

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
    reply.etag.clone().expect("an ETag")
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
