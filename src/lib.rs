//! Tower layers that speak the status-code contract of the Xbox Live
//! Multiplayer Session Directory (MPSD).
//!
//! Every response is classified exactly as the service's status table says
//! ([`outcome::Outcome`]: the four meanings of 204, the two bodies of 403
//! and 412, `Retry-After` on 429 and 503), recorded in the response's
//! extensions by [`classify::ClassifyLayer`], reported to `tower-http`'s
//! tracing by [`classify::MpsdClassifier`], and read into a typed result by
//! [`response::read_response`]. The pure rules live in their own modules
//! ([`target`], [`identity`], [`retry_after`], [`rate_limit`], [`backoff`]);
//! the [`sim`] module (feature `sim`) is an MPSD simulator on loopback.
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
//! use tower_mpsd::classify::{ClassifyLayer, MpsdClassifier};
//! use tower_mpsd::response::read_response;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_mpsd::BoxError> {
//! let mpsd = ServiceBuilder::new()
//!     .layer(TraceLayer::new(MpsdClassifier::new()))
//!     .layer(ClassifyLayer::new())
//!     .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
//!
//! let req = Request::get("http://sessiondirectory.xboxlive.com/serviceconfigs/scid/sessionTemplates/t/sessions/s")
//!     .header("authorization", "XBL3.0 x=<userhash>;<token>")
//!     .body(Full::default())?;
//! let session = read_response(mpsd.oneshot(req).await?, 1 << 20).await?;
//! println!("{:?} {:?}", session.outcome, session.etag);
//! # Ok(())
//! # }
//! ```

pub mod backoff;
pub mod classify;
pub mod identity;
pub mod logical;
pub mod outcome;
pub mod pace;
pub mod rate_limit;
pub mod replay;
pub mod response;
pub mod retry;
pub mod retry_after;
pub mod revalidate;
pub mod target;

#[cfg(feature = "sim")]
pub mod sim;

/// The boxed error type of bodies and services this crate wraps.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
