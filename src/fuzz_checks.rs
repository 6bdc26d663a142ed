//! What each fuzz target in `fuzz/` checks, on raw bytes: every parser
//! that reads server input must be total (no panic) and keep its promises.
//!
//! Compiled for `cargo fuzz` (which sets `--cfg fuzzing`) and for this
//! crate's own tests, which replay the committed regression inputs in
//! `fuzz/regressions/<target>/` as ordinary unit tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};

use crate::classify::{classify_at, Call};
use crate::rebase::rules::{conditional_write, current_session};
use crate::rules::rate_limit::RateLimitInfo;
use crate::rules::retry_after::RetryAfter;
use crate::rules::target::Target;

/// Splits fuzz input into at most `N` parts at `0x00` bytes; missing parts
/// are empty.
fn parts<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&[][..]; N];
    let mut rest = data;
    for (i, slot) in out.iter_mut().enumerate() {
        if i + 1 == N {
            *slot = rest;
            break;
        }
        match rest.iter().position(|&b| b == 0) {
            Some(at) => {
                *slot = &rest[..at];
                rest = &rest[at + 1..];
            }
            None => {
                *slot = rest;
                rest = &[];
            }
        }
    }
    out
}

/// Header lines `name:value`, one per `\n`; malformed lines are skipped,
/// as `http` would refuse them before this crate saw them.
fn headers(lines: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = HeaderValue::from_bytes(&line[colon + 1..]);
        if let (Ok(name), Ok(value)) = (name, value) {
            map.append(name, value);
        }
    }
    map
}

fn method(byte: u8) -> Method {
    [
        Method::GET,
        Method::PUT,
        Method::POST,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
    ][usize::from(byte) % 7]
        .clone()
}

/// `Retry-After`: total; delay-seconds round-trip; a delay from any clock
/// reading is no longer than the date is ahead of it.
pub fn retry_after(data: &[u8]) {
    let [value, clock] = parts::<2>(data);
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return;
    };
    let secs = clock
        .iter()
        .take(8)
        .fold(0u64, |n, &b| (n << 8) | u64::from(b));
    let now = UNIX_EPOCH + Duration::from_secs(secs % (1 << 40));
    match RetryAfter::parse(&value) {
        Some(RetryAfter::Delay(d)) => {
            assert_eq!(d.subsec_nanos(), 0);
            assert_eq!(RetryAfter::Delay(d).delay_from(now), d);
            if d.as_secs() < u64::MAX {
                let again = HeaderValue::from(d.as_secs());
                assert_eq!(RetryAfter::parse(&again), Some(RetryAfter::Delay(d)));
            }
        }
        Some(RetryAfter::At(at)) => {
            let delay = RetryAfter::At(at).delay_from(now);
            let ahead = at.duration_since(now).unwrap_or_default();
            assert_eq!(delay, ahead);
        }
        None => {}
    }
}

/// The 429 body: total on any bytes.
pub fn rate_limit(data: &[u8]) {
    if let Some(info) = RateLimitInfo::parse(data) {
        let _ = format!("{info:?}");
    }
}

/// The classifier: total on any method, path, status, headers and body
/// prefix; the outcome keeps the status.
pub fn classify(data: &[u8]) {
    let [head, path, lines, body] = parts::<4>(data);
    let (Some(&m), Some(&hi), Some(&lo)) = (head.first(), head.get(1), head.get(2)) else {
        return;
    };
    let Ok(status) = StatusCode::from_u16(u16::from_be_bytes([hi, lo]) % 1000) else {
        return;
    };
    let path = String::from_utf8_lossy(path);
    let call = Call::new(method(m), Target::parse(&path).kind());
    let headers = headers(lines);
    let outcome = classify_at(&call, status, &headers, SystemTime::UNIX_EPOCH).with_body(body);
    assert_eq!(outcome.status(), status);
    assert!(!outcome.name().is_empty());
    let _ = (
        outcome.body_kind(&call),
        outcome.retryable(),
        outcome.retry_after(),
    );
    let _ = outcome.to_string();
}

/// The rebase layer's reading of a 412 or a re-read (ETag and session)
/// and of which writes qualify: total, and a session found is a JSON
/// object with a non-empty ETag.
pub fn etag(data: &[u8]) {
    let [head, path, lines, body] = parts::<4>(data);
    let headers = headers(lines);
    if let Ok((etag, session)) = current_session(&headers, &Bytes::copy_from_slice(body)) {
        assert!(!etag.is_empty());
        assert!(session.is_object());
    }
    let mut req = Request::new(());
    *req.method_mut() = method(head.first().copied().unwrap_or(0));
    *req.headers_mut() = headers;
    if let Ok(uri) = std::str::from_utf8(path).unwrap_or("/").parse() {
        *req.uri_mut() = uri;
    }
    if let Some((_, session_uri)) = conditional_write(&req) {
        assert!(matches!(*req.method(), Method::PUT | Method::DELETE));
        assert!(Target::parse(session_uri.path()).session_path().is_some());
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Replays every committed input of `target`; returns how many.
    fn replay(target: &str, check: fn(&[u8])) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            let path = entry.unwrap().path();
            check(&std::fs::read(&path).unwrap());
            n += 1;
        }
        n
    }

    #[test]
    fn regression_inputs_pass_every_check() {
        let replayed = [
            ("retry_after", replay("retry_after", super::retry_after)),
            ("rate_limit", replay("rate_limit", super::rate_limit)),
            ("classify", replay("classify", super::classify)),
            ("etag", replay("etag", super::etag)),
        ];
        for (target, n) in replayed {
            assert!(n > 0, "no regression inputs for {target}");
        }
    }
}
