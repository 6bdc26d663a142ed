//! Who is calling: the user hash of `Authorization: XBL3.0 x=<userhash>;<token>`.
//!
//! Written from the documented header form, apart from `tower-mpsd`'s own
//! parser (see [`route`](crate::route) for why). The simulator trusts any
//! non-empty token: it checks the form, not a signature.

/// The caller's user hash, or `None` when the header is not an XBL3.0
/// value with a non-empty hash and a non-empty token.
pub(crate) fn caller(authorization: &[u8]) -> Option<String> {
    let value = std::str::from_utf8(authorization).ok()?;
    let mut words = value.split_whitespace();
    let scheme = words.next()?;
    let credentials: String = words.collect();
    if !scheme.eq_ignore_ascii_case("xbl3.0") {
        return None;
    }
    let (hash, token) = credentials.split_once(';')?;
    let hash = hash
        .strip_prefix("x=")
        .or_else(|| hash.strip_prefix("X="))?;
    (!hash.is_empty() && !token.is_empty()).then(|| hash.to_owned())
}

#[cfg(test)]
mod tests {
    use super::caller;

    #[test]
    fn the_user_hash_of_an_xbl_header() {
        assert_eq!(caller(b"XBL3.0 x=42;tok").as_deref(), Some("42"));
        assert_eq!(caller(b"xbl3.0 X=42;tok").as_deref(), Some("42"));
        assert_eq!(caller(b"XBL3.0  x=42;tok ").as_deref(), Some("42"));
    }

    #[test]
    fn anything_else_is_nobody() {
        for bad in [
            &b""[..],
            b"XBL3.0",
            b"XBL3.0 x=;tok",
            b"XBL3.0 x=42;",
            b"XBL3.0 x=42",
            b"Bearer x=42;tok",
            b"XBL3.0 x=\xff;tok",
        ] {
            assert_eq!(caller(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
