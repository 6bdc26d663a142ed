//! Tower layers that speak the status-code contract of the Xbox Live
//! Multiplayer Session Directory (MPSD).
//!
//! Every response is classified exactly as the service's status table says
//! ([`outcome::Outcome`]: the four meanings of 204, the two bodies of 403
//! and 412, `Retry-After` on 429 and 503). On top of that:
//!
//! - [`retry`]: 503 and 429 retried no earlier than `Retry-After`, with
//!   jitter, a cooldown per endpoint shared by every request, a retry
//!   budget, and never past the deadline;
//! - [`rebase`]: a write that lost a race (412) re-read and retried through
//!   a policy, losing no one's update;
//! - [`pace`]: MPSD's per-user rate limits kept on the client side, so 429
//!   is avoided rather than waited out; [`revalidate`]: polling with
//!   `If-None-Match`, a 304 answered from a bounded cache as a 200;
//! - [`logical`]: one deadline and attempt count per logical request, shared
//!   by all of them; [`replay`]: any request body made replayable;
//! - [`stack::MpsdLayer`] and [`ServiceBuilderExt`]: the recommended stack
//!   in one call.
//!
//! [`classify::MpsdClassifier`] reports outcomes to `tower-http`'s tracing
//! and [`response::read_response`] reads an answer into a typed result.
//! The pure rules live in their own modules ([`target`], [`identity`],
//! [`retry_after`], [`rate_limit`], [`backoff`]). The `mpsd-sim` crate
//! beside this one is an MPSD simulator on loopback for tests and demos.
//!
//! # Errors
//!
//! The services return [`BoxError`]; [`error`] lists every error it can
//! hold, what each means, and how to downcast them.
//!
//! # Cargo features
//!
//! None yet: the library needs only tokio's `time` and `sync`, and hyper's
//! core with no features (to recognise its errors), so it fits any hyper
//! 1.x client. Features that bring in a dependency (a shared store, TLS
//! helpers) will be listed here, and marked in these docs with the feature
//! they need.
//!
//! # Example
//!
//! ```no_run
//! use bytes::Bytes;
//! use http::Request;
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_http::trace::TraceLayer;
//! use tower_mpsd::classify::MpsdClassifier;
//! use tower_mpsd::rebase::{policy::ResendDelta, RebaseLayer};
//! use tower_mpsd::response::read_response;
//! use tower_mpsd::{MpsdLayer, ServiceBuilderExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_mpsd::BoxError> {
//! let mpsd = ServiceBuilder::new()
//!     .layer(TraceLayer::new(MpsdClassifier::new()))
//!     // Setting my own member's properties does not depend on what I read:
//!     // on a 412, the same delta is re-sent with the fresh ETag.
//!     .mpsd_with(MpsdLayer::new().rebase(RebaseLayer::new(ResendDelta)))
//!     .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
//!
//! let req = Request::put("http://sessiondirectory.xboxlive.com/serviceconfigs/scid/sessionTemplates/t/sessions/s/members/me")
//!     .header("authorization", "XBL3.0 x=<userhash>;<token>")
//!     .header("if-match", "\"<etag>\"")
//!     .body(Full::from(r#"{"properties":{"custom":{"ready":true}}}"#))?;
//! let session = read_response(mpsd.oneshot(req).await?, 1 << 20).await?;
//! println!("{:?} {:?}", session.outcome, session.etag);
//! # Ok(())
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backoff;
mod body;
mod builder;
pub mod classify;
pub mod error;
#[cfg(any(test, fuzzing))]
pub mod fuzz_checks;
pub mod identity;
pub mod logical;
mod macros;
pub mod outcome;
pub mod pace;
pub mod rate_limit;
pub mod rebase;
pub mod replay;
pub mod response;
pub mod retry;
pub mod retry_after;
pub mod revalidate;
pub mod stack;
pub mod target;

pub use builder::ServiceBuilderExt;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
pub use stack::MpsdLayer;

/// The boxed error type of bodies and services this crate wraps.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
