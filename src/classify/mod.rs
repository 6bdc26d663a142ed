//! Classifying MPSD responses exactly as the service's status table says:
//! the rules ([`classify`]), the middleware that applies them to every
//! answer ([`ClassifyLayer`]), and a classifier for tower-http's tracing
//! ([`TraceClassifier`]).
//!
//! # The rules
//!
//! Pure logic, no I/O: [`classify`] takes what was asked (a [`Call`]: the
//! method and the kind of target) and the response head, and returns an
//! [`Outcome`] with one variant per meaning of the table, including every
//! split it makes on method, target and `Content-Type`:
//!
//! | status | split | outcome |
//! |---|---|---|
//! | 200 / 201 / 202 | | [`Ok`](Outcome::Ok) / [`Created`](Outcome::Created) / [`Accepted`](Outcome::Accepted) |
//! | 204 | GET of a session (its URI or a handle's `/session`) | [`SessionMissing`](Outcome::SessionMissing) |
//! | 204 | GET of an element | [`ElementMissing`](Outcome::ElementMissing) |
//! | 204 | PUT of a session | [`SessionDeleted`](Outcome::SessionDeleted) |
//! | 204 | PUT or DELETE of an element | [`ElementGone`](Outcome::ElementGone) |
//! | 204 | anything else | [`NoContent`](Outcome::NoContent) |
//! | 304 | | [`NotModified`](Outcome::NotModified) |
//! | 400 / 404 / 405 / 409 | | [`BadRequest`](Outcome::BadRequest) / [`NotFound`](Outcome::NotFound) / [`MethodNotAllowed`](Outcome::MethodNotAllowed) / [`Conflict`](Outcome::Conflict) |
//! | 403 | `text/plain` (or anything not JSON) | [`Forbidden`](Outcome::Forbidden) |
//! | 403 | `application/json` | [`ReadOnly`](Outcome::ReadOnly) |
//! | 412 | no body | [`PreconditionFailed`](Outcome::PreconditionFailed) |
//! | 412 | `application/json` | [`SessionChanged`](Outcome::SessionChanged) |
//! | 429 | | [`TooManyRequests`](Outcome::TooManyRequests), with `Retry-After` and the body's fields |
//! | 503 | | [`ServiceUnavailable`](Outcome::ServiceUnavailable), with `Retry-After` |
//! | 401 | not in the table | [`Unauthorized`](Outcome::Unauthorized) |
//! | 408, 500, 502, 504 | not in the table | [`Transient`](Outcome::Transient) |
//! | anything else | not in the table | [`Unexpected`](Outcome::Unexpected) |
//!
//! The 429 body is not in the head; [`Outcome::with_body`] adds its fields
//! once it is read: by [`ClassifyLayer`] for a small body (see there), else
//! by [`read_response`](crate::response::read_response).
//!
//! # Example
//!
//! ```
//! use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
//! use tower_mpsd::classify::{classify, BodyKind, Call, Outcome, Retryable};
//! use tower_mpsd::rules::target::TargetKind;
//!
//! let call = Call::new(Method::PUT, TargetKind::Member);
//! let mut headers = HeaderMap::new();
//! headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
//! let outcome = classify(&call, StatusCode::PRECONDITION_FAILED, &headers);
//! assert_eq!(outcome, Outcome::SessionChanged);
//! // A 4xx that carries a session carries the whole session, even for an element URI.
//! assert_eq!(outcome.body_kind(&call), BodyKind::Session);
//! assert_eq!(outcome.retryable(), Retryable::AfterRebase);
//! ```

//!
//! # The middleware
//!
//! Each answer is classified once. In [`MpsdLayer`](crate::MpsdLayer),
//! [`Classify`] is the innermost layer: it classifies every send's answer,
//! records the attempt in the logical request's history, and the layers
//! above read the [`Outcome`] from the response's extensions, where it
//! sits with the [`Call`] in one [`Classified`] entry. A layer of
//! this crate used without it classifies an answer that has no outcome
//! yet itself, the same way. Put [`ClassifyLayer`] below every layer that
//! may refuse a request before sending it (pacing, cooldowns), as
//! `MpsdLayer` does: it records every error of its inner service as a
//! failed send.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_mpsd::classify::{ClassifyLayer, Outcome};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let mpsd = service_fn(|_req: Request<Full<Bytes>>| async {
//!     // A GET of a session that does not exist.
//!     let res = Response::builder().status(StatusCode::NO_CONTENT).body(Full::<Bytes>::default())?;
//!     Ok::<_, http::Error>(res)
//! });
//! let client = ServiceBuilder::new().layer(ClassifyLayer::new()).service(mpsd);
//!
//! let uri = "https://sessiondirectory.xboxlive.com/serviceconfigs/s/sessionTemplates/t/sessions/n";
//! let res = client.oneshot(Request::get(uri).body(Full::default())?).await?;
//! assert_eq!(Outcome::of(&res), Some(Outcome::SessionMissing));
//! # Ok(())
//! # }
//! ```
//!
//! With `tower-http`'s tracing, MPSD failure classes show up in its events:
//!
//! ```
//! use tower_http::trace::TraceLayer;
//! use tower_mpsd::classify::TraceClassifier;
//!
//! let trace = TraceLayer::new(TraceClassifier::new());
//! # let _ = trace;
//! ```

mod body;
mod layer;
mod outcome;
mod trace;

pub use body::ClassifyBody;
pub(crate) use layer::outcome_of;
pub use layer::{Classify, ClassifyLayer, ResponseFuture, THROTTLED_BODY_CAP};
pub(crate) use outcome::LazyCall;
pub use outcome::{classify, classify_at, BodyKind, Call, Classified, Outcome, Retryable};
pub use trace::{MpsdFailure, TraceClassifier, TraceClassifyResponse};
