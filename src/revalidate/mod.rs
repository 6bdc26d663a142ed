//! Polling sessions for the price of 304s: GETs are revalidated with
//! `If-None-Match`, and a 304 is answered from a cache as the 200 it stands
//! for, so callers code only for 200.
//!
//! MPSD answers a GET whose `If-None-Match` names the session's current
//! `ETag` with 304 and no body; Microsoft's SDK never sends one. With
//! [`RevalidateLayer`] in the stack:
//!
//! - **A GET** whose 200 carries an `ETag` (sessions, their elements,
//!   handles) is read up to [`max_body_bytes`](CacheBuilder::max_body_bytes)
//!   and its body, headers and `ETag` are cached per authority, user,
//!   contract version and path with query. The next GET of the same URI
//!   carries `If-None-Match`; on 304 the caller gets a 200 with the cached
//!   body and headers (updated by the 304's), and [`Revalidated`] in its
//!   extensions. A larger body streams through whole and uncached.
//! - **A 204** to a GET (the session or element does not exist), and 403,
//!   404 and 410, drop the entry; so does a 200 without an `ETag` or with
//!   `Cache-Control: no-store`. Other answers (429, 503, ...) keep it.
//! - **A write** (PUT, DELETE, POST, PATCH) of a session or any of its
//!   elements drops every cached read of that session, for every user,
//!   when it is sent and again when it is answered.
//! - A GET with its own validators (`If-None-Match`, `If-Modified-Since`,
//!   `Range`, ...) passes untouched and uncached.
//!
//! The cache is never trusted without the server: a body is served only
//! for a 304, so a missed invalidation costs a full read, never a stale
//! answer. It is bounded by entry count and by total bytes, the least
//! recently used going first. Defaults, and why: 1,024
//! [entries](CacheBuilder::max_entries) (a few sessions per user polled
//! by one process), 16 MiB [in all](CacheBuilder::max_bytes), 256 KiB
//! [per body](CacheBuilder::max_body_bytes) (far above a session
//! document; reading it ahead of the caller costs little).
//!
//! The entries live in a [`Cache`]: a handle whose clones share one cache,
//! its bounds set when it is built. A layer made with
//! [`RevalidateLayer::new`] makes its own, shared by the layer's clones;
//! [`RevalidateLayer::with_cache`] shares one with other stacks.
//!
//! It works anywhere in a stack: a retried GET carries the same
//! `If-None-Match`. [`MpsdLayer`](crate::MpsdLayer) puts it inside the
//! retry and rebase layers, so they see the 200 it makes (a rebase's
//! re-read is revalidated too). When the 304 was classified (an inner
//! `ClassifyLayer`: a [`Classified`](crate::classify::Classified) in its
//! extensions), the 200's [`Outcome`](crate::classify::Outcome) replaces
//! the 304's.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{header, Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_mpsd::revalidate::{Revalidated, RevalidateLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_mpsd::BoxError> {
//! // A session that never changes: 304 when asked with its ETag.
//! let mpsd = service_fn(|req: Request<Full<Bytes>>| async move {
//!     let res = if req.headers().get(header::IF_NONE_MATCH).is_some_and(|v| v == "\"v1\"") {
//!         Response::builder().status(StatusCode::NOT_MODIFIED).header(header::ETAG, "\"v1\"").body(Full::<Bytes>::default())
//!     } else {
//!         Response::builder().header(header::ETAG, "\"v1\"").body(Full::from("{\"changeNumber\":1}"))
//!     };
//!     Ok::<_, http::Error>(res?)
//! });
//! let layer = RevalidateLayer::new();
//! let client = ServiceBuilder::new().layer(layer.clone()).service(mpsd);
//! let uri = "http://mpsd.test/serviceconfigs/c/sessionTemplates/t/sessions/s";
//!
//! let first = client.clone().oneshot(Request::get(uri).body(Full::default())?).await?;
//! assert!(first.extensions().get::<Revalidated>().is_none());
//! let first = first.into_body().collect().await?.to_bytes();
//!
//! // The second GET moved a 304 over the wire; the caller still sees a 200.
//! let again = client.clone().oneshot(Request::get(uri).body(Full::default())?).await?;
//! assert_eq!(again.status(), StatusCode::OK);
//! assert_eq!(again.extensions().get::<Revalidated>().unwrap().etag, "\"v1\"");
//! assert_eq!(again.into_body().collect().await?.to_bytes(), first);
//! assert_eq!(layer.usage().entries, 1);
//! # Ok(())
//! # }
//! ```

mod body;
mod cache;
mod future;
mod layer;

use http::HeaderValue;

pub use body::RevalidateBody;
pub use future::ResponseFuture;
pub use layer::{Cache, CacheBuilder, CacheUsage, Revalidate, RevalidateLayer};

/// In the extensions of a 200 that the layer made from a 304 and its
/// cached body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Revalidated {
    /// The `ETag` the server confirmed.
    pub etag: HeaderValue,
}
