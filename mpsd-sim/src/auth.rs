//! Who is calling: the user hash of `Authorization: XBL3.0 x=<userhash>;<token>`.
//!
//! Written from the documented header form, apart from `tower-mpsd`'s own
//! parser (see [`route`](crate::route) for why). By default the simulator
//! trusts any non-empty token: it checks the form, not a signature. With
//! [`SimBuilder::check_tokens`](crate::SimBuilder::check_tokens) it accepts
//! only the tokens it issued ([`Tokens`]), for their user, until they expire.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// The caller's user hash, or `None` when the header is not an XBL3.0
/// value with a non-empty hash and a non-empty token.
#[cfg(test)]
fn caller(authorization: &[u8]) -> Option<String> {
    credentials(authorization).map(|(hash, _token)| hash)
}

/// The user hash and the token of an XBL3.0 header, or `None` when the
/// header is not an XBL3.0 value with a non-empty hash and a non-empty
/// token.
pub(crate) fn credentials(authorization: &[u8]) -> Option<(String, String)> {
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
    (!hash.is_empty() && !token.is_empty()).then(|| (hash.to_owned(), token.to_owned()))
}

/// The tokens the simulator issued: each for one user, until it expires.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    issued: HashMap<String, (String, Instant)>,
    next: u64,
}

impl Tokens {
    /// A new token for `user`, valid for `ttl` from `now`. Expired ones are
    /// forgotten here, so memory stays bounded by the live ones.
    pub(crate) fn issue(&mut self, user: &str, ttl: Duration, now: Instant) -> String {
        self.issued.retain(|_, (_, until)| *until > now);
        self.next += 1;
        let token = format!("sim-token-{}", self.next);
        let until = now
            .checked_add(ttl)
            .unwrap_or(now + Duration::from_secs(1 << 32));
        self.issued.insert(token.clone(), (user.to_owned(), until));
        token
    }

    /// Whether `token` was issued to `user` and is still valid at `now`.
    pub(crate) fn valid(&self, user: &str, token: &str, now: Instant) -> bool {
        self.issued
            .get(token)
            .is_some_and(|(owner, until)| owner == user && now < *until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_hash_of_an_xbl_header() {
        assert_eq!(caller(b"XBL3.0 x=42;tok").as_deref(), Some("42"));
        assert_eq!(caller(b"xbl3.0 X=42;tok").as_deref(), Some("42"));
        assert_eq!(caller(b"XBL3.0  x=42;tok ").as_deref(), Some("42"));
    }

    #[test]
    fn an_issued_token_is_valid_for_its_user_until_it_expires() {
        let mut tokens = Tokens::default();
        let t0 = Instant::now();
        let token = tokens.issue("42", Duration::from_secs(10), t0);
        assert!(tokens.valid("42", &token, t0 + Duration::from_millis(9_999)));
        assert!(!tokens.valid("42", &token, t0 + Duration::from_secs(10)));
        assert!(!tokens.valid("43", &token, t0));
        assert!(!tokens.valid("42", "made-up", t0));
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
