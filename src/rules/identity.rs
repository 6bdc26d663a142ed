//! The caller's identity as MPSD sees it: the user hash of an
//! `Authorization: XBL3.0 x=<userhash>;<token>` header.
//!
//! Pure parsing. Only the user hash is ever returned; the token is never
//! copied, logged or stored.
//!
//! # Example
//!
//! ```
//! use http::{header, HeaderMap, HeaderValue, Uri};
//! use tower_mpsd::rules::identity::user_hash;
//!
//! let auth = HeaderValue::from_static("XBL3.0 x=1234567890;eyJ0b2tlbiI");
//! assert_eq!(user_hash(&auth), Some("1234567890"));
//! assert_eq!(user_hash(&HeaderValue::from_static("Bearer abc")), None);
//! ```

use http::{header, HeaderMap, HeaderValue, Uri};

/// The user hash of an `XBL3.0 x=<userhash>;<token>` authorization value,
/// or `None` when the value has another form or an empty hash.
pub fn user_hash(authorization: &HeaderValue) -> Option<&str> {
    let value = authorization.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("XBL3.0") {
        return None;
    }
    let rest = rest.trim_start();
    let rest = rest
        .strip_prefix("x=")
        .or_else(|| rest.strip_prefix("X="))?;
    let (hash, _token) = rest.split_once(';')?;
    let hash = hash.trim();
    (!hash.is_empty()).then_some(hash)
}

/// The key of a request's user at its endpoint: the authority and the
/// user hash, or `None` without an `XBL3.0` user. MPSD counts and throttles
/// each user apart, so the 429 cooldowns and pacing both key on it.
pub fn user_key(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let authority = uri.authority().map_or("", |a| a.as_str());
    let user = user_hash(headers.get(header::AUTHORIZATION)?)?;
    Some(format!("{authority} {user}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(s: &'static str) -> Option<String> {
        user_hash(&HeaderValue::from_static(s)).map(str::to_owned)
    }

    #[test]
    fn reads_the_user_hash() {
        assert_eq!(hash("XBL3.0 x=42;tok"), Some("42".into()));
        assert_eq!(hash("xbl3.0 x=42;tok"), Some("42".into()));
        assert_eq!(hash("XBL3.0  x= 42 ;tok"), Some("42".into()));
        assert_eq!(hash("XBL3.0 x=42;"), Some("42".into()));
    }

    #[test]
    fn rejects_other_forms() {
        for s in [
            "",
            "XBL3.0",
            "XBL3.0 x=;tok",
            "XBL3.0 x=42",
            "Bearer x=42;t",
            "XBL2.0 x=1;t",
        ] {
            assert_eq!(hash(s), None, "{s}");
        }
        assert_eq!(
            user_hash(&HeaderValue::from_bytes(b"XBL3.0 x=\xff;t").unwrap()),
            None
        );
    }
}
