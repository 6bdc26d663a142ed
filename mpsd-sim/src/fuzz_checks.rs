//! What the `sim_store` fuzz target in `../fuzz` checks: the store answers
//! any sequence of requests without a panic, with a status MPSD uses.
//!
//! Compiled for `cargo fuzz` (which sets `--cfg fuzzing`) and for this
//! crate's tests, which replay the committed inputs in
//! `fuzz/regressions/sim_store/`.

use std::time::{Duration, UNIX_EPOCH};

use http::Method;

use crate::store::{Request, Store};

/// Requests are separated by `0xff`; each holds, separated by `0x00`, a
/// method byte, the path and query, the user, `If-Match`, `If-None-Match`
/// and the body.
pub fn sim_store(data: &[u8]) {
    let mut store = Store::new(["LobbySession"]);
    for request in data.split(|&b| b == 0xff).take(16) {
        let mut parts = request.splitn(6, |&b| b == 0);
        let mut next = || parts.next().unwrap_or_default();
        let (head, uri, user) = (next(), next(), next());
        let (if_match, if_none_match, body) = (next(), next(), next());
        let methods = [
            Method::GET,
            Method::PUT,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
            Method::HEAD,
            Method::OPTIONS,
        ];
        let method = &methods[usize::from(head.first().copied().unwrap_or(0)) % methods.len()];
        let uri = String::from_utf8_lossy(uri);
        let (path, query) = match uri.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (&*uri, None),
        };
        let text = |b: &[u8]| (!b.is_empty()).then(|| String::from_utf8_lossy(b).into_owned());
        let (if_match, if_none_match) = (text(if_match), text(if_none_match));
        let user = String::from_utf8_lossy(user);
        let req = Request {
            method,
            path,
            query,
            user: &user,
            if_match: if_match.as_deref(),
            if_none_match: if_none_match.as_deref(),
            body,
            // Any fixed time: the store is a pure function of it.
            now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        let status = store.handle(&req).status.as_u16();
        assert!((200..600).contains(&status), "{status}");
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn regression_inputs_pass() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/sim_store");
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            super::sim_store(&std::fs::read(entry.unwrap().path()).unwrap());
            replayed += 1;
        }
        assert!(replayed > 0, "no regression inputs in {dir:?}");
    }
}
