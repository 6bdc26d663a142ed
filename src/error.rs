//! Every error a caller can get from this crate's layers, in one place.
//!
//! The services return [`BoxError`](crate::BoxError): downcast it to one
//! of these (they are re-exported here), or walk
//! [`source`](std::error::Error::source) to the client's own error. Reading a response with
//! [`read_response`](crate::response::read_response) returns the typed
//! [`MpsdError`] instead.
//!
//! | error | from | what it means |
//! |---|---|---|
//! | [`RequestFailed`] | [`retry`](crate::retry) | the inner service (the HTTP client) failed: connection refused or reset, a body that could not be sent, a scheme its connector does not serve. It ends the logical request after the attempts in [`history()`](RequestFailed::history), whose `gave_up` says why; its `source()` is the client's error, and its `Display` ends with the root cause |
//! | [`InvalidUri`] | [`retry`](crate::retry) | the URI has no authority, or a scheme other than `http` or `https`; refused at once, nothing sent |
//! | [`Refused`] | [`retry`](crate::retry), [`pace`](crate::pace), [`rebase`](crate::rebase) with a [`sequence`](crate::sequence) board | a cooldown for the endpoint (after a 503 or 429), or MPSD's rate limit for the user, lasts past the deadline, or the session's write queue is full or would not give the write its turn in time: failed at once, nothing sent; retry in [`retry_in`](Refused::retry_in) |
//! | [`AttemptTimedOut`] | [`retry`](crate::retry) | no answer by the deadline; the server may have applied the request |
//! | [`RebaseError`] | [`rebase`](crate::rebase) | after a 412, the session was deleted, or the rebase policy failed |
//! | [`AlreadySent`] | [`replay`](crate::replay) | a body over the replay cap was polled again after it was sent (found in a body's error, or in the source chain of a [`RequestFailed`]) |
//! | [`TokenUnavailable`] | [`auth`](crate::auth) | the token source failed; nothing was sent. Its `source()` is the source's error |
//! | [`MpsdError`] | [`response`](crate::response) | the answer is not a success (`Status`, with the outcome and the server's message or session), its body is over the cap, or it failed |
//!
//! Not errors: an answer the layers gave up retrying (a 503 past the
//! deadline, a 412 the policy declined) comes back as the response, with
//! an [`AttemptHistory`](crate::logical::AttemptHistory)
//! ([`AttemptHistory::of`](crate::logical::AttemptHistory::of)) whose
//! [`gave_up`](crate::logical::AttemptHistory::gave_up) says why.
//! [`logical`](crate::logical) adds no error of its own.
//!
//! Only errors of the inner service are wrapped in [`RequestFailed`]; this
//! crate's own errors are never wrapped, and downcast directly. Errors of
//! the inner service's readiness (`poll_ready`) before a request are passed
//! on as they are. Without a retry layer (a bare
//! [`RebaseLayer`](crate::rebase::RebaseLayer)), the client's errors pass
//! through unwrapped.
//!
//! # Which errors are retried
//!
//! The retry layer reads the inner service's error once, walking its
//! source chain:
//!
//! | the chain holds | what it proves | what the retry layer does |
//! |---|---|---|
//! | an [`InvalidUri`], a `hyper::Error` with `is_user()` (a request body that failed, a header not allowed), a hyper-util legacy client error that is neither a connect nor a send failure (its `User…` kinds, the only ones without a source) | the caller's mistake | hands it back at once: [`GaveUp::CannotSucceed`](crate::logical::GaveUp::CannotSucceed) |
//! | a hyper-util legacy client connect error (`is_connect()`, also under reqwest's errors) with no `io::Error` of an OS kind | the connector refused the destination itself, before touching the network | hands it back at once: `CannotSucceed` |
//! | a connect error with an `io::Error` of the socket or resolver (not `Other` or `InvalidData`) | no connection was made, nothing was sent (refused, unreachable, DNS, connect timeout, a TLS handshake cut off; a certificate refused is permanent) | retries whatever the method: [`Cause::NotConnected`](crate::rules::backoff::Cause::NotConnected) |
//! | an HTTP/2 `REFUSED_STREAM` or `GOAWAY` `NO_ERROR` from the server | not processed | sends again at once: `Cause::Unprocessed` |
//! | anything else (a reset, a timeout, an unknown error) | it may have reached the server | retries only methods safe to repeat, else [`GaveUp::NotSafeToRepeat`](crate::logical::GaveUp::NotSafeToRepeat) |
//!
//! Why the `io::Error` kind is the line between a failed connection and a
//! refused configuration: socket and resolver failures come from the OS
//! and the standard library, which never use `ErrorKind::Other`; a
//! connector that refuses a URI itself carries no `io::Error`
//! (hyper-util's `HttpConnector` given `https`: "invalid URL, scheme is
//! not http") or one it made with `io::Error::other` (hyper-rustls's
//! `https_only()` given `http`: "unsupported scheme http"). The rule's
//! limits: a connector's own timeout without an `io::Error` (reqwest's
//! `connect_timeout`) reads as a refusal and is handed back at once; and
//! reqwest's builder errors (`is_builder()`), which carry only reqwest's
//! own types, read as unknown (retried for a GET): a service adapting
//! reqwest can check `is_builder()` itself.
//!
//! # Example
//!
//! ```
//! use std::io;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_mpsd::error::{InvalidUri, Refused, RefusedBy, RequestFailed};
//! use tower_mpsd::logical::{GaveUp, Purpose};
//! use tower_mpsd::{BoxError, MpsdLayer, ServiceBuilderExt};
//!
//! /// What a caller might tell its user.
//! fn explain(error: &BoxError) -> String {
//!     if let Some(failed) = error.downcast_ref::<RequestFailed>() {
//!         let cause = std::error::Error::source(failed).map(ToString::to_string);
//!         let tries = failed.history().attempts().len();
//!         format!("unreachable after {tries} tries: {}", cause.unwrap_or_default())
//!     } else if let Some(refused) = error.downcast_ref::<Refused>() {
//!         match refused.by {
//!             RefusedBy::Pace => format!("too many requests, try again in {:?}", refused.retry_in),
//!             _ => format!("busy, try again in {:?}", refused.retry_in),
//!         }
//!     } else if error.is::<InvalidUri>() {
//!         format!("a bug: {error}")
//!     } else {
//!         format!("{error}")
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // The server cannot be reached.
//! let mpsd = service_fn(|_req: Request<Full<Bytes>>| async {
//!     let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
//!     Err::<Response<Full<Bytes>>, _>(refused)
//! });
//! let client = ServiceBuilder::new()
//!     .mpsd_with(MpsdLayer::new().max_attempts(3))
//!     .service(mpsd);
//!
//! let get = Request::get("http://mpsd.test/handles/h1").body(Full::default())?;
//! let error = client.clone().oneshot(get).await.unwrap_err();
//! assert_eq!(explain(&error), "unreachable after 3 tries: connection refused");
//! // Its own `Display` says as much, in one line.
//! assert_eq!(error.to_string(), "mpsd request failed after 3 attempts: connection refused");
//! let failed = error.downcast::<RequestFailed>().unwrap();
//! let history = failed.history();
//! assert_eq!(history.attempts()[0].purpose, Purpose::First);
//! assert!(history.attempts()[1..].iter().all(|a| matches!(a.purpose, Purpose::Retry(_))));
//! assert_eq!(history.gave_up, Some(GaveUp::MaxAttempts));
//! let (source, _history) = failed.into_parts();
//! assert!(source.is::<io::Error>());
//!
//! // A path without the host is refused before anything is sent.
//! let relative = Request::get("/handles/h1").body(Full::default())?;
//! let error = client.oneshot(relative).await.unwrap_err();
//! assert!(explain(&error).starts_with("a bug: request URI \"/handles/h1\" lacks"));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

pub use crate::auth::TokenUnavailable;
pub use crate::rebase::RebaseError;
pub use crate::replay::AlreadySent;
pub use crate::response::MpsdError;
pub use crate::retry::{AttemptTimedOut, InvalidUri, RequestFailed};

/// A request refused before it was sent: a cooldown (after a 503 or 429)
/// or MPSD's rate limit (kept by [`PaceLayer`](crate::pace::PaceLayer))
/// would not let it go before its deadline. Nothing reached the network.
///
/// One type for every refusal, so that any layer (and any caller)
/// recognises it without knowing which layer made it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refused {
    /// What refused it.
    pub by: RefusedBy,
    /// How long until it may go: retry no sooner.
    pub retry_in: Duration,
    /// Attempts sent for this logical request before it was refused.
    pub attempts: usize,
}

/// What refused a request before it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusedBy {
    /// A cooldown of its endpoint (503) or user (429).
    Cooldown,
    /// MPSD's per-user rate limit.
    Pace,
    /// The session's write queue ([`crate::sequence`]): it was full, or
    /// the write's turn would not come before its deadline. `retry_in` is
    /// zero: the queue cannot tell when it will move.
    Queue,
}

impl Refused {
    pub(crate) fn new(by: RefusedBy, retry_in: Duration, attempts: usize) -> Self {
        crate::metrics::refused(by);
        Self {
            by,
            retry_in,
            attempts,
        }
    }

    /// How long until `error` may be sent, when it is a [`Refused`].
    pub(crate) fn wait_for(error: &crate::BoxError) -> Option<Duration> {
        error.downcast_ref::<Self>().map(|refused| refused.retry_in)
    }
}

/// Whether `error` is one of this crate's own errors, which say what
/// happened themselves and are never wrapped in [`RequestFailed`].
pub(crate) fn is_own(error: &crate::BoxError) -> bool {
    error.is::<Refused>()
        || error.is::<AttemptTimedOut>()
        || error.is::<InvalidUri>()
        || error.is::<RebaseError>()
        || error.is::<TokenUnavailable>()
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.by {
            RefusedBy::Cooldown => "endpoint cooling down",
            RefusedBy::Pace => "MPSD rate limit: no slot before the deadline",
            RefusedBy::Queue => "the session's write queue: no turn before the deadline",
        };
        write!(f, "{why}; retry in {:?}", self.retry_in)
    }
}

impl std::error::Error for Refused {}
