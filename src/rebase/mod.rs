//! 412: re-read the session's ETag and retry a conditional write through a
//! rebase policy, so that no one's update is lost.
//!
//! MPSD uses optimistic concurrency: a write carries `If-Match: <etag>` (or
//! `If-None-Match: *` to create only) and loses a race with 412. For a PUT
//! or DELETE of a session or one of its elements carrying either header,
//! [`RebaseLayer`]:
//!
//! 1. keeps the request body (up to `body_limit`, default 64 KiB; a larger
//!    one is sent once and its 412 handed back, with
//!    [`GaveUp::NotReplayable`](crate::logical::GaveUp::NotReplayable));
//! 2. on 412, reads the session as it is now: from the 412 itself when it
//!    carries the session as JSON and an `ETag` (MPSD's answer to a stale
//!    `If-Match`), else by a GET of the session's URI (an element URI such
//!    as `.../sessions/{name}/members/me` maps to its session) through the
//!    inner service, so a retry layer below applies its cooldowns to it. A
//!    GET answering 204 means the session is gone: [`RebaseError::SessionGone`];
//! 3. asks the [`policy::RebasePolicy`] chosen when the layer was made:
//!    retry with a new body, sent with `If-Match: <fresh ETag>`, or give up,
//!    and the caller gets the 412 with the fresh session and `ETag`.
//!
//! Rounds are bounded (`max_rounds`, default 16: one write each when the
//! 412 carries the session, and enough for separate processes writing
//! one session, as measured), each rebased write waits a random pause in
//! `[0, spread × 2ⁿ⁻¹)` in round `n` (default spread 50 ms) to spread
//! contending writers, and every
//! send counts toward the logical request's one deadline and attempt limit
//! shared with the retry layers (see [`crate::logical`]). Whenever the
//! layer hands a 412 back unrebased, the response's
//! [`AttemptHistory`](crate::logical::AttemptHistory) says why in its
//! [`gave_up`](crate::logical::AttemptHistory::gave_up) (a
//! [`GaveUp`](crate::logical::GaveUp)); a write that was sent with `If-Match` is never sent
//! without it. 403, 404 and 409 pass through untouched.
//!
//! The response body becomes [`RebaseBody`]: the inner body, or the bytes of
//! a 412 the layer had to read.
//!
//! # Example: read-modify-write
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use serde_json::json;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_mpsd::rebase::policy::{rebase_fn, LostRace, Decision};
//! use tower_mpsd::rebase::RebaseLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_mpsd::BoxError> {
//! // A session whose count is 41 at ETag "e2"; a write with another ETag loses.
//! let mpsd = service_fn(|req: Request<Full<Bytes>>| async move {
//!     let fresh = req.headers()["if-match"] == "\"e2\"";
//!     let (status, etag, body) = if fresh {
//!         (StatusCode::OK, "\"e3\"", req.into_body().collect().await?.to_bytes())
//!     } else {
//!         let session = json!({"properties": {"custom": {"count": 41}}});
//!         (StatusCode::PRECONDITION_FAILED, "\"e2\"", Bytes::from(session.to_string()))
//!     };
//!     let res = Response::builder().status(status).header("etag", etag);
//!     Ok::<_, tower_mpsd::BoxError>(res.body(Full::new(body))?)
//! });
//!
//! // Add 1 to the count: on a conflict, add 1 to the count as it is now.
//! let increment = rebase_fn(|conflict: &LostRace<'_>| {
//!     let count = &conflict.session["properties"]["custom"]["count"];
//!     let delta = json!({"properties": {"custom": {"count": count.as_u64().unwrap_or(0) + 1}}});
//!     Ok(Decision::Retry(delta.to_string().into()))
//! });
//! let client = ServiceBuilder::new().layer(RebaseLayer::new(increment)).service(mpsd);
//!
//! let stale = json!({"properties": {"custom": {"count": 8}}}).to_string();
//! let req = Request::put("http://mpsd.test/serviceconfigs/c/sessionTemplates/t/sessions/s")
//!     .header("if-match", "\"e1\"")
//!     .body(Full::new(Bytes::from(stale)))?;
//! let res = client.oneshot(req).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//! let body = res.into_body().collect().await?.to_bytes();
//! assert_eq!(body, r#"{"properties":{"custom":{"count":42}}}"#);
//! # Ok(())
//! # }
//! ```

mod body;
mod future;
mod layer;
pub mod policy;
pub(crate) mod rules;
#[cfg(test)]
mod tests;

pub use body::RebaseBody;
pub use future::{RebaseError, ResponseFuture};
pub use layer::{Rebase, RebaseLayer};
