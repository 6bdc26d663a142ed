//! The user's XBL token on every request, refreshed once on a 401.
//!
//! [`AuthLayer`] sets `Authorization: XBL3.0 x=<userhash>;<token>` on each
//! request from a [`TokenSource`] (the application's sign-in, or
//! [`FixedToken`]), and caches the token until it expires. When the
//! service answers 401 (the token expired early or was revoked: the
//! request was not applied), it asks the source once for a fresh token
//! and sends the request again; when the answer is 401 again, or the
//! source gives the same token, the 401 is handed back. The source is
//! called once at a time: the requests needing a token meanwhile
//! (concurrent 401s among them) wait for that one call, so concurrent 401s
//! cause one refresh. When the call fails, every request waiting for it
//! fails at once with [`TokenUnavailable`], and nothing is sent; none
//! waits longer than [`token_timeout`](AuthLayer::token_timeout) (20 s,
//! the stack's deadline) for a token.
//!
//! # Where it goes
//!
//! Outside the recommended stack ([`MpsdLayer`](crate::MpsdLayer)):
//! `ServiceBuilder::new().layer(AuthLayer::new(source)).mpsd()`. The
//! stack's logical request, cooldowns and pacing then read the user from
//! the header this layer set ([`LogicalRequest::user`](crate::logical::LogicalRequest::user)),
//! so a 429's cooldown and the pace windows are the user's. The resend
//! after a 401 is a new logical request, with its own deadline and
//! attempts: the first one was not applied, and carried another token.
//!
//! The request body must be `Clone` (see [`replay`](crate::replay)).
//!
//! The token never shows: not in [`Token`]'s `Debug`, not in this crate's
//! logs (the user hash only) or errors, and the header value is marked
//! sensitive.
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{header, Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_mpsd::auth::{AuthLayer, Token, TokenFuture, TokenSource};
//!
//! /// Each sign-in gives a new token.
//! #[derive(Default)]
//! struct SignIn(AtomicUsize);
//!
//! impl TokenSource for SignIn {
//!     fn token(&self, _refresh: bool) -> TokenFuture<'_> {
//!         let n = self.0.fetch_add(1, Ordering::SeqCst);
//!         Box::pin(async move {
//!             Ok(Token::new("1234567890", &format!("t{n}"))?.expires_in(Duration::from_secs(3600)))
//!         })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_mpsd::BoxError> {
//! // The service revoked t0 early.
//! let mpsd = service_fn(|req: Request<Full<Bytes>>| async move {
//!     let auth = req.headers()[header::AUTHORIZATION].to_str()?.to_owned();
//!     let status = if auth.ends_with(";t0") { 401 } else { 200 };
//!     Ok::<_, tower_mpsd::BoxError>(Response::builder().status(status).body(Full::<Bytes>::default())?)
//! });
//! let client = ServiceBuilder::new()
//!     .layer(AuthLayer::new(SignIn::default()))
//!     .service(mpsd);
//! let req = Request::get("https://mpsd.test/handles/h1").body(Full::default())?;
//! let res = client.oneshot(req).await?;
//! assert_eq!(res.status(), StatusCode::OK, "sent again with t1");
//! # Ok(())
//! # }
//! ```

mod layer;
mod token;

pub use layer::{Auth, AuthLayer, ResponseFuture};
pub use token::{FixedToken, InvalidToken, Token, TokenFuture, TokenSource, TokenUnavailable};
