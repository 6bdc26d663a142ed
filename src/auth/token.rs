//! What the auth layer sends: a [`Token`], from a [`TokenSource`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

use crate::logical::at_most;
use crate::rules::identity::user_hash;
use crate::BoxError;

/// A user's XBL token: the `Authorization: XBL3.0 x=<userhash>;<token>`
/// value, built once, and when it expires.
///
/// The token never shows: `Debug` prints the user hash and the expiry
/// only, and the header value is marked sensitive (hyper and tower-http's
/// `TraceLayer` leave it out).
#[derive(Clone)]
pub struct Token {
    user_hash: Box<str>,
    header: HeaderValue,
    expires_at: Option<Instant>,
}

impl Token {
    /// The token `token` of the user `hash`, with no expiry known.
    ///
    /// `Err` when the token is empty or either has bytes a header cannot
    /// carry, or when the header would not name `hash` as its user (a hash
    /// that is empty or holds `;` or spaces): the stack reads the user back
    /// from the header, with [`user_hash`], and must find this one.
    pub fn new(hash: &str, token: &str) -> Result<Self, InvalidToken> {
        let mut header = HeaderValue::from_str(&format!("XBL3.0 x={hash};{token}"))
            .map_err(|_| InvalidToken(()))?;
        let odd = |c: char| c == ';' || c.is_whitespace();
        if token.is_empty() || hash.contains(odd) || user_hash(&header) != Some(hash) {
            return Err(InvalidToken(()));
        }
        header.set_sensitive(true);
        Ok(Self {
            user_hash: hash.into(),
            header,
            expires_at: None,
        })
    }

    /// Expires `ttl` from now (on `tokio::time`): the auth layer asks its
    /// source for a fresh one before sending anything after that.
    #[must_use]
    pub fn expires_in(mut self, ttl: Duration) -> Self {
        self.expires_at = Some(at_most(Instant::now(), ttl));
        self
    }

    /// The user hash, the caller's identity at MPSD.
    pub fn user_hash(&self) -> &str {
        &self.user_hash
    }

    /// When it expires, if known.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// Whether it has expired at `now`.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// The `Authorization` value (sensitive).
    pub(crate) fn header(&self) -> &HeaderValue {
        &self.header
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("user_hash", &self.user_hash)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A user hash or token that cannot make an `XBL3.0` header naming that
/// user (see [`Token::new`]). It shows neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidToken(());

impl fmt::Display for InvalidToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "not an XBL3.0 credential: the user hash must be non-empty without `;` or spaces, \
             and the token non-empty, in visible ASCII",
        )
    }
}

impl std::error::Error for InvalidToken {}

/// The future a [`TokenSource`] returns.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<Token, BoxError>> + Send + 'a>>;

/// Where the auth layer gets a user's token: the application's sign-in
/// (XSTS for Xbox Live), or [`FixedToken`].
///
/// A trait of its own, not a `tower::Service`: it has one method, no
/// readiness, and the layer shares it behind an `Arc` among every clone.
/// It returns a boxed future so that it can be used as `dyn TokenSource`
/// and on Rust 1.75.
///
/// ```
/// use tower_mpsd::auth::{Token, TokenFuture, TokenSource};
///
/// /// Signs in again every time the service refuses the token.
/// struct SignIn;
///
/// impl TokenSource for SignIn {
///     fn token(&self, refresh: bool) -> TokenFuture<'_> {
///         Box::pin(async move {
///             let (hash, token) = ("1234567890", "eyJ...");
///             Ok(Token::new(hash, token)?)
///         })
///     }
/// }
/// ```
pub trait TokenSource: Send + Sync + 'static {
    /// A token: the cached one if it has one (`refresh` false), or a fresh
    /// one (`refresh` true: the cached one expired, or the service answered
    /// 401 to it). The auth layer calls it once at a time per layer.
    fn token(&self, refresh: bool) -> TokenFuture<'_>;
}

/// A [`TokenSource`] that always gives the same token: for tests and
/// simple tools. A 401 to it is handed back to the caller (a fresh token
/// would be the same one).
#[derive(Debug, Clone)]
pub struct FixedToken(Token);

impl FixedToken {
    /// Always `token`.
    pub fn new(token: Token) -> Self {
        Self(token)
    }
}

impl TokenSource for FixedToken {
    fn token(&self, _refresh: bool) -> TokenFuture<'_> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
}

/// The token source failed: nothing was sent, since MPSD refuses any
/// request without a token. The source's error is the
/// [`source`](std::error::Error::source).
///
/// Every request waiting for the same call of the source gets the same
/// error: cloning it shares the source's.
#[derive(Debug, Clone)]
pub struct TokenUnavailable {
    source: Arc<dyn std::error::Error + Send + Sync>,
}

impl TokenUnavailable {
    pub(crate) fn new(source: BoxError) -> Self {
        Self {
            source: Arc::from(source),
        }
    }
}

impl fmt::Display for TokenUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no XBL token: the token source failed; nothing was sent")
    }
}

impl std::error::Error for TokenUnavailable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_shows_in_debug() {
        let token = Token::new("42", "secret-token").unwrap();
        let shown = format!("{token:?} {:?}", token.header());
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(shown.contains("42"));
        assert!(token.header().is_sensitive());
    }

    #[test]
    fn a_token_with_bytes_no_header_carries_is_refused() {
        let err = Token::new("42", "bad\ntoken").unwrap_err();
        assert!(!err.to_string().contains("bad"));
    }

    #[test]
    fn the_stack_reads_back_the_user_the_token_names() {
        let token = Token::new("2535405290", "eyJ0b2tlbiI").unwrap();
        assert_eq!(user_hash(token.header()), Some("2535405290"));
        for (hash, secret) in [("", "t"), ("4;2", "t"), ("4 2", "t"), ("42", "")] {
            assert!(Token::new(hash, secret).is_err(), "{hash:?} {secret:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_expires_at_its_time() {
        let token = Token::new("42", "t")
            .unwrap()
            .expires_in(Duration::from_secs(10));
        let now = Instant::now();
        assert!(!token.expired(now + Duration::from_millis(9_999)));
        assert!(token.expired(now + Duration::from_secs(10)));
        assert!(!Token::new("42", "t")
            .unwrap()
            .expired(now + Duration::from_secs(1 << 30)));
    }
}
