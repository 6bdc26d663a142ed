//! Read coalescing (single flight): concurrent identical GETs through one
//! stack are sent once, and every caller gets the same answer.
//!
//! When many tasks of a process poll the same session, most of their GETs
//! are the same question asked at the same time. With [`CoalesceLayer`] in
//! the stack:
//!
//! - **Identical** means the same URI (with its query) and the same
//!   `Authorization`, conditional headers (`If-None-Match`, `If-Match`,
//!   `If-Modified-Since`, `If-Unmodified-Since`), `Accept`,
//!   `Accept-Encoding` and `X-Xbl-Contract-Version`; other headers are not
//!   compared, and the answer is that to the first caller's request. Two
//!   users never share an answer (their `Authorization` differs), nor do a
//!   GET with `If-None-Match` and one without. Only GETs are coalesced, and
//!   not those that give one of those headers twice.
//! - **Once**: the first caller (the leader) sends its GET; callers that
//!   ask the same while it is in flight (followers) wait for its answer.
//!   When the answer's head arrives the flight closes: a later GET starts
//!   a new one, so no one gets an answer older than its own call.
//! - **The same answer**: status, headers, extensions (the
//!   [`Outcome`](crate::classify::Outcome)) and body. The leader reads the
//!   body (up to [`max_body`](CoalesceLayer::max_body), default 256 KiB:
//!   far above a session document) only when someone waits for it; an
//!   answer that does not announce its length within the cap goes to the
//!   leader alone, and each follower sends its own GET. So do the
//!   followers when the leader's request fails or its caller drops it.
//! - **Deadlines**: a follower waits no longer than its own logical
//!   request's deadline (see [`crate::logical`]); past it, it gets
//!   [`AttemptTimedOut`](crate::retry::AttemptTimedOut) with no attempt of
//!   its own. Its [`AttemptHistory`](crate::logical::AttemptHistory) is
//!   its own, and empty: the leader's sends are the leader's.
//!
//! It composes with the other layers below it: the leader's GET is
//! retried, paced and revalidated as any other
//! ([`RevalidateLayer`](crate::revalidate::RevalidateLayer) below it turns
//! a 304 into the 200 every caller gets). [`MpsdLayer`](crate::MpsdLayer)
//! puts it just inside [`LogicalLayer`](crate::logical::LogicalLayer) when
//! a rebase policy is given, with the write sequencing of
//! [`crate::sequence`]; change it with
//! [`MpsdLayer::coalesce`](crate::MpsdLayer::coalesce). Alone, put it
//! inside a `LogicalLayer` so that followers have a deadline.
//!
//! Not guaranteed: coalescing across stacks or processes (the flights are
//! the layer's, shared by its clones), or of GETs that are not concurrent
//! (that is [`crate::revalidate`]'s job).
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_mpsd::coalesce::CoalesceLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_mpsd::BoxError> {
//! let sent = Arc::new(AtomicUsize::new(0));
//! let mpsd = service_fn({
//!     let sent = sent.clone();
//!     move |_req: Request<Full<Bytes>>| {
//!         let n = sent.fetch_add(1, Ordering::SeqCst);
//!         async move {
//!             tokio::time::sleep(Duration::from_millis(20)).await;
//!             Ok::<_, tower_mpsd::BoxError>(Response::new(Full::from(format!("answer {n}"))))
//!         }
//!     }
//! });
//! let coalesce = CoalesceLayer::new();
//! let client = ServiceBuilder::new().layer(coalesce.clone()).service(mpsd);
//! let get = || {
//!     Request::get("http://mpsd.test/serviceconfigs/c/sessionTemplates/t/sessions/s")
//!         .header("authorization", "XBL3.0 x=1;token")
//!         .body(Full::<Bytes>::default())
//! };
//! let (a, b) = tokio::join!(client.clone().oneshot(get()?), client.oneshot(get()?));
//! let (a, b) = (a?.into_body().collect().await?, b?.into_body().collect().await?);
//! assert_eq!((a.to_bytes(), b.to_bytes()), (Bytes::from("answer 0"), Bytes::from("answer 0")));
//! assert_eq!(sent.load(Ordering::SeqCst), 1);
//! assert_eq!(coalesce.stats().reads_coalesced(), 1);
//! # Ok(())
//! # }
//! ```

mod body;
mod future;
mod layer;

pub use body::CoalesceBody;
pub use future::ResponseFuture;
pub use layer::{Coalesce, CoalesceLayer, CoalesceStats};
