//! Retrying 503 and 429 (and, when safe to repeat, transient failures) the way
//! MPSD asks: not before `Retry-After`, with jitter, with cooldowns shared by
//! every request (per authority for 503, per authority and user for 429),
//! and never past the deadline.
//!
//! - **503**: waits `Retry-After × [1.0, 1.2)` (never earlier than asked);
//!   without a usable header, exponential backoff. The cooldown is shared
//!   per authority.
//! - **429**: exponential backoff with full jitter, never shorter than
//!   `Retry-After`. The cooldown is shared per authority and user (the
//!   `x=<userhash>` of `XBL3.0` authorization).
//! - **Cooldowns**: while one is in force, new requests to the same key wait
//!   for its end if that fits their deadline, or fail at once with
//!   [`Refused`](crate::error::Refused) without touching the network. When it ends, one probe
//!   goes first; after its success the waiters are released one
//!   `release_spacing` apart. See the rules in the docs of [`Cooldowns`],
//!   the handle a layer's clones share and that several stacks can share
//!   ([`RetryLayer::with_cooldowns`]); with the `redis` feature, several
//!   processes too (`CooldownsBuilder::redis`, see the crate's `fleet`
//!   module).
//! - **Limits** (defaults and why): deadline 20 s per logical request
//!   (Microsoft's SDK's retry window); 5 attempts; no single wait over 60 s
//!   (the SDK's cap), a longer hint is handed back at once; a cooldown
//!   holds its key at most a day, whatever the hint (the one cap shared
//!   with pacing's learnt holds and Redis's answers); a retry budget
//!   shared by all clones ([`RetryBudget`], 10 retries per second plus 20 %
//!   of requests, over 10 s: tower's own defaults), or by several stacks
//!   given one with [`RetryLayer::with_budget`].
//! - **Slow answers**: an attempt still unanswered at the deadline (but not
//!   before it has had `min_attempt_time`, 5 s, the SDK's floor) is
//!   abandoned with [`AttemptTimedOut`]; a request safe to repeat with time left is
//!   retried, anything else is handed back.
//!   Waiting for the inner service's readiness before a retry is bounded by
//!   the deadline too: past it, the last answer is handed back.
//! - **Method safety**: 429 and 503 are retried for any method (the service
//!   refused the request without applying it). 408, 500, 502, 504 and
//!   errors of the inner service (but a connection never made, below) are
//!   retried only for GET, HEAD and OPTIONS by default: an MPSD PUT is a
//!   merge the server may have applied, and a replay could undo a write
//!   made in between. 202 is never retried.
//! - **Unprocessed requests**: an HTTP/2 stream the server reset with
//!   `REFUSED_STREAM`, or one a `GOAWAY` with `NO_ERROR` excluded (its
//!   stream id is above the last one the `GOAWAY` names), was not
//!   processed (RFC 9113 §8.7), so it is sent again at once, with no
//!   backoff and whatever its method, as gRPC's transparent retry does; it
//!   still counts against the attempts, the budget and the deadline. A
//!   request a `GOAWAY` included but the connection closed before
//!   answering, or one cut off by a `GOAWAY` with an error code, keeps the
//!   method rules: h2 0.4 gives the first an I/O error, and uses an
//!   error-coded `GOAWAY` error for the whole connection's end too.
//! - **Connections never made**: an error of the client that shows no
//!   connection was established (hyper-util's legacy client's
//!   `is_connect()` with an OS `io::Error` in its chain: refused,
//!   unreachable, DNS, connect timeout, a TLS handshake cut off) proves
//!   nothing was sent, so it is retried whatever the method, with the backoff of a
//!   transient failure, within the deadline and the attempts; the history
//!   marks those retries [`Cause::NotConnected`](crate::rules::backoff::Cause::NotConnected).
//! - **Requests that can never succeed** fail at once, never retried: a
//!   URI without an authority or with a scheme other than `http` or
//!   `https` is refused with [`InvalidUri`] before anything is sent (it is
//!   checked once, when the [logical request](crate::logical) is parsed);
//!   an error that is the caller's (a `hyper::Error` with `is_user()`, such
//!   as a request body that failed) or the client's configuration (a
//!   connector that refuses the scheme, such as hyper-rustls's
//!   `https_only()` given `http`; an HTTP version hyper-util cannot speak)
//!   is handed back after one attempt, with
//!   [`GaveUp::CannotSucceed`]. The rule that tells them from a failed
//!   connection is in [`crate::error`].
//! - **Errors**: an error of the inner service that ends the logical
//!   request comes back as [`RequestFailed`], with the [`AttemptHistory`]
//!   (whose `gave_up` always says why it stopped) and a one-line `Display`
//!   naming the root cause; this crate's own errors are not wrapped. [`crate::error`] lists them
//!   all.
//! - **Bodies**: the request body must be `Clone` (e.g.
//!   `http_body_util::Full<Bytes>`) to be replayed; put a
//!   [`ReplayLayer`](crate::replay::ReplayLayer) outside this layer for any
//!   other body. A request marked
//!   [`NotReplayable`](crate::replay::NotReplayable) (over that layer's
//!   cap) is sent once and its answer handed back.
//! - **Layers and stacking**: [`RetryLayer::new`] handles all of the above;
//!   [`RetryLayer::overloaded`] (503 and transient failures) and
//!   [`RetryLayer::throttled`] (429) are the same behaviours as separate
//!   layers. However many of this crate's layers are stacked, a logical
//!   request has one deadline and one attempt limit: see [`crate::logical`].
//!
//! When the layer stops retrying, the caller gets the last response, with
//! an [`AttemptHistory`] ([`AttemptHistory::of`]) saying why. A request waiting to
//! retry keeps its last answer so that it can hand it back if the retry
//! cannot go in time; over hyper, that answer's connection stays out of the
//! pool meanwhile. A retry is paid for (a send of the attempt limit, a
//! withdrawal from the budget, its counter) when it goes, not when it is
//! planned.
//!
//! The budget is not tower's `TpsBudget` (see [`RetryBudget`] for why),
//! and the loop is not tower's `retry::Policy`, which is asked only after
//! an answer: a cooldown must be able to hold back, or fail at once, a
//! request before its first send.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_mpsd::retry::{AttemptHistory, RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_mpsd::BoxError> {
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
//! let counter = calls.clone();
//! let mpsd = service_fn(move |_req: Request<Full<Bytes>>| {
//!     let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     async move {
//!         // Overloaded once, then fine.
//!         let status = if n == 0 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
//!         Response::builder().status(status).header("retry-after", "2").body(Full::<Bytes>::default())
//!     }
//! });
//! let client = ServiceBuilder::new().layer(RetryLayer::new()).service(mpsd);
//! let res = client.oneshot(Request::get("http://mpsd.test/handles/h1").body(Full::default())?).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//! let history = AttemptHistory::of(&res).unwrap();
//! assert_eq!(history.attempts().len(), 2);
//! assert!(history.attempts()[1].waited >= std::time::Duration::from_secs(2));
//! # Ok(())
//! # }
//! ```

mod budget;
mod cooldown;
mod error;
mod future;
mod layer;
mod stats;
#[cfg(test)]
mod tests;

pub use crate::logical::{Attempt, AttemptHistory, GaveUp, Purpose};
pub use budget::RetryBudget;
pub use cooldown::{Cooldowns, CooldownsBuilder};
pub use error::{InvalidUri, RequestFailed};
pub use future::{AttemptTimedOut, ResponseFuture};
pub use layer::{default_cooldown_key, KeyFn, Retry, RetryLayer};
pub use stats::RetryStats;
