//! Tower layers that speak the status-code contract of the Xbox Live
//! Multiplayer Session Directory (MPSD).
//!
//! # The layers
//!
//! [`MpsdLayer`] is the recommended stack in one layer (also
//! `ServiceBuilder::mpsd()` through [`ServiceBuilderExt`]). From the
//! outside in, what it holds, each also usable alone:
//!
//! | layer | what it does |
//! |---|---|
//! | [`logical::LogicalLayer`] (with a rebase policy; without one, the retry layer makes each logical request) | one deadline and attempt limit per logical request, the only place they are set; the [`AttemptHistory`](logical::AttemptHistory) in the response |
//! | [`coalesce::CoalesceLayer`] (with a rebase policy) | concurrent identical GETs sent once, every caller given the same answer |
//! | [`rebase::RebaseLayer`] | a write that lost a race (412) re-read and retried through a policy, losing no one's update; with a [`sequence::SessionBoard`] (the stack gives it one), conditional writes to a session go one at a time and a known-stale write is rebased before it is sent |
//! | [`retry::RetryLayer`] | 503 and 429 retried no earlier than `Retry-After`, with jitter, a cooldown shared by every request (per authority for 503, per authority and user for 429), a retry budget, and never past the deadline |
//! | [`revalidate::RevalidateLayer`] | polling with `If-None-Match`, a 304 answered from a bounded cache as a 200 |
//! | [`pace::PaceLayer`] | MPSD's per-user rate limits kept on the client side, so a 429 is avoided rather than waited out |
//! | [`classify::ClassifyLayer`] | each answer classified once, exactly as the service's status table says ([`classify::Outcome`]: the four meanings of 204, the two bodies of 403 and 412, `Retry-After` on 429 and 503, and the rate-limit fields of a 429 body of at most [`THROTTLED_BODY_CAP`](classify::THROTTLED_BODY_CAP), read and played back) |
//!
//! Outside it, [`auth::AuthLayer`] sets the user's XBL token on every
//! request and refreshes it once on a 401.
//!
//! Beside them: [`replay::ReplayLayer`] makes any request body replayable;
//! [`classify::TraceClassifier`] reports outcomes to tower-http's
//! `TraceLayer`; [`response::read_response`] reads an answer into a typed
//! result. The state the layers share (cooldowns, pace windows, the
//! revalidation cache, the write queues, the GETs in flight) is in handles
//! that clones share and that several stacks can be given
//! ([`retry::Cooldowns`], [`pace::PaceTable`], [`revalidate::Cache`],
//! [`sequence::SessionBoard`], and a [`coalesce::CoalesceLayer`] itself,
//! whose clones share its flights). With the `redis` feature, the `fleet`
//! module's `RedisStore` shares cooldowns and pace windows across
//! processes.
//!
//! The pure rules the layers apply (URI targets, identities,
//! `Retry-After`, the 429 body, backoff) are in [`rules`]. The `mpsd-sim`
//! crate beside this one is an MPSD simulator on loopback for tests and
//! demos.
//!
//! # Readiness
//!
//! Readiness may reserve something below: a `ConcurrencyLimit` permit, a
//! `Buffer` slot. So no layer here holds it across a wait. Each layer's
//! `poll_ready` passes the inner service's through, as tower's contract
//! expects (a caller that saw `Ready` may call at once); a request that
//! can go at once is sent with the service the caller made ready. A
//! request that must wait first (for a pace slot, a token, its turn in a
//! session's write queue, a coalesced leader's answer, a slow body, a
//! cooldown or a retry's backoff) drops that ready service before it
//! waits, a clone taking its place, and drives the clone to readiness
//! only when it is about to send, as tower's retry does for its re-calls.
//! One user's throttled requests then never hold up another's. A new
//! layer that waits before it sends does the same, and gets a test with a
//! `tower::limit::ConcurrencyLimit` of 1 below it.
//!
//! # Errors
//!
//! The services return [`BoxError`]; [`error`] lists every error it can
//! hold, what each means, and how to downcast them.
//!
//! # Cargo features
//!
//! By default the library needs only tokio's `time` and `sync`; hyper's
//! core, `h2` and hyper-util's `client-legacy`, with no other features (to
//! recognise their errors: a refused HTTP/2 stream is sent again, a
//! connection never made is retried for any method); and small crates
//! (`http`, `http-body`, `bytes`, `httpdate`, `serde_json`, `memchr`), so
//! it fits any hyper 1.x client. It needs no TLS crate: give it a client
//! over hyper-rustls, as below.
//!
//! - **`redis`**: the `fleet` module, whose `RedisStore` shares cooldowns
//!   and pace windows across a fleet of processes, on one node or a
//!   cluster, over TLS or not. Brings in the `redis` crate (with
//!   `cluster-async`, rustls TLS with webpki roots, and
//!   `token-based-authentication`), `rustls` with *ring* (which builds
//!   with a C compiler) and tokio's `rt`, and needs Rust 1.88 (the `redis`
//!   crate's MSRV). Items that need it are marked in these docs.
//! - **`metrics`**: counters and histograms of every layer (outcomes,
//!   retries, refusals, cooldowns, pace waits, rebases, coalesced reads,
//!   Redis fallbacks, request durations and attempts) through the
//!   `metrics` crate's facade, for any recorder; [`metrics`] lists
//!   them. Without it the calls compile to nothing.
//!
//! # Example
//!
//! ```no_run
//! use bytes::Bytes;
//! use http::{HeaderValue, Request};
//! use http_body_util::Full;
//! use hyper_rustls::HttpsConnectorBuilder;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_http::trace::TraceLayer;
//! use tower_mpsd::classify::TraceClassifier;
//! use tower_mpsd::rebase::{policy::ResendDelta, RebaseLayer};
//! use tower_mpsd::response::read_response;
//! use tower_mpsd::{MpsdLayer, ServiceBuilderExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_mpsd::BoxError> {
//! // MPSD is served over HTTPS; HTTP/2 when it offers it (ALPN).
//! let https = HttpsConnectorBuilder::new()
//!     .with_webpki_roots()
//!     .https_only()
//!     .enable_all_versions()
//!     .build();
//! let mpsd = ServiceBuilder::new()
//!     .layer(TraceLayer::new(TraceClassifier::new()))
//!     // Setting my own member's properties does not depend on what I read:
//!     // on a 412, the same delta is re-sent with the fresh ETag.
//!     .mpsd_with(MpsdLayer::new().rebase(RebaseLayer::new(ResendDelta)))
//!     .service(Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(https));
//!
//! let mut authorization = HeaderValue::from_static("XBL3.0 x=<userhash>;<token>");
//! authorization.set_sensitive(true); // kept out of logs and `Debug`
//! let req = Request::put("https://sessiondirectory.xboxlive.com/serviceconfigs/scid/sessionTemplates/t/sessions/s/members/me")
//!     .header("authorization", authorization)
//!     .header("if-match", "\"<etag>\"")
//!     .body(Full::from(r#"{"properties":{"custom":{"ready":true}}}"#))?;
//! let session = read_response(mpsd.oneshot(req).await?, 1 << 20).await?;
//! println!("{:?} {:?}", session.outcome, session.etag);
//! # Ok(())
//! # }
//! ```
//!
//! # In an application
//!
//! A service that talks to MPSD from many tasks names the stack's type
//! once, boxed, and clones it into each task:
//!
//! ```no_run
//! use bytes::Bytes;
//! use http::{header, HeaderValue, Request, Response};
//! use http_body_util::{combinators::BoxBody, BodyExt, Full};
//! use tower::util::BoxCloneSyncService;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_http::trace::TraceLayer;
//! use tower_mpsd::classify::{Outcome, TraceClassifier};
//! use tower_mpsd::rebase::{policy::ResendDelta, RebaseLayer};
//! use tower_mpsd::response::{read_response, MpsdError};
//! use tower_mpsd::{BoxError, MpsdLayer, ServiceBuilderExt};
//!
//! /// Stored in the application's state and cloned into every task.
//! type Mpsd = BoxCloneSyncService<Request<Full<Bytes>>, Response<BoxBody<Bytes, BoxError>>, BoxError>;
//!
//! fn mpsd(user_hash: &str, token: &str) -> Result<Mpsd, BoxError> {
//!     let mut authorization = HeaderValue::from_str(&format!("XBL3.0 x={user_hash};{token}"))?;
//!     authorization.set_sensitive(true);
//!     let stack = ServiceBuilder::new()
//!         // Above the stack, so that every layer in it sees the user.
//!         .map_request(move |mut req: Request<Full<Bytes>>| {
//!             req.headers_mut().insert(header::AUTHORIZATION, authorization.clone());
//!             req.headers_mut().insert("x-xbl-contract-version", HeaderValue::from_static("107"));
//!             req
//!         })
//!         .layer(TraceLayer::new(TraceClassifier::new()))
//!         .mpsd_with(MpsdLayer::new().rebase(RebaseLayer::new(ResendDelta)))
//!         .service(https_client())
//!         // One body type, whatever the layers wrap it in.
//!         .map_response(|res| res.map(|body| body.map_err(Into::into).boxed()));
//!     Ok(BoxCloneSyncService::new(stack))
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), BoxError> {
//! let mpsd = mpsd("<userhash>", "<token>")?;
//! let uri = "https://sessiondirectory.xboxlive.com/serviceconfigs/{scid}/sessionTemplates/LobbySession/sessions/lobby1/members/me";
//! let task = tokio::spawn(async move {
//!     let req = Request::put(uri).body(Full::from(r#"{"properties":{"custom":{"ready":true}}}"#))?;
//!     Ok::<_, BoxError>(read_response(mpsd.oneshot(req).await?, 1 << 20).await)
//! });
//! // Outer errors: the task panicked, or no answer came (connection,
//! // deadline, a refusal before sending); inner: what MPSD answered.
//! match task.await?? {
//!     Ok(ok) if ok.outcome == Outcome::ElementGone => println!("the session is gone"),
//!     Ok(ok) => println!("joined: {}", ok.outcome),
//!     // The message of a plain-text answer, never a session body.
//!     Err(e @ MpsdError::Status { .. }) => println!("MPSD said {e}"),
//!     Err(e) => println!("could not read the answer: {e}"),
//! }
//! # Ok(())
//! # }
//! # fn https_client() -> hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>> {
//! #     let https = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_only().enable_all_versions().build();
//! #     hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
//! # }
//! ```
//!
//! - **Boxing and spawning**: the stack is `Clone + Send + Sync` when the
//!   client and the rebase policy are (a `rebase_fn` closure included).
//! - **The response body** is the client's, wrapped by each layer that may
//!   read it: [`ClassifyBody`](classify::ClassifyBody), then
//!   [`RevalidateBody`](revalidate::RevalidateBody) with `.revalidate(..)`,
//!   then [`CoalesceBody`](coalesce::CoalesceBody)`<`[`RebaseBody`](rebase::RebaseBody)`<..>>`
//!   with a rebase policy. Each has `BoxError` as its error; mapping to a
//!   `BoxBody`, as above, gives them one name.
//! - **Bodies that are not `Clone`** (streams, `BoxBody`): put
//!   `.mpsd_replay(limit)` above the stack and build the client for what it
//!   passes down: `Client::builder(..).build::<_, ReplayBody<YourBody>>(https)`.
//! - **`Authorization`** is set before the stack: in the request, by a
//!   layer above it as here, or by [`auth::AuthLayer`], which also
//!   refreshes the token. Pacing and the 429 cooldowns key on the user it
//!   names.
//! - **Logs**: the layers emit `tracing` events (retries, cooldowns,
//!   rebases) and never log a token or a body;
//!   `TraceLayer::new(TraceClassifier::new())` adds tower-http's request
//!   spans with MPSD's failure classes.
//!
//! # Any hyper-based client
//!
//! The stack wraps any inner service `S` that satisfies what its layers
//! use (`ReqBody` and `ResBody` are the request's and response's bodies):
//!
//! - `S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone`:
//!   the layers read and set headers and extensions on `http`'s types, and
//!   clone the service to send again (a retry, a re-read, a rebased write).
//! - `S::Error: Into<BoxError>`: the stack's error is [`BoxError`].
//! - `ReqBody: Clone`, to send the request again (`Full<Bytes>` is; for any
//!   other body, [`replay::ReplayLayer`] above the stack); with a rebase
//!   policy also `ReqBody: http_body::Body + From<Bytes>` (the rebased
//!   write's body), its error `Into<BoxError>`.
//! - `ResBody: http_body::Body`, its error `Into<BoxError>`: a 429's small
//!   body is read for its rate-limit fields; with a rebase policy also
//!   `Data = Bytes`, for the 412's session and the answers coalesced reads
//!   share.
//! - To spawn or box the stack: `S`, its future and both bodies `Send +
//!   'static` (and `S: Sync` for `BoxCloneSyncService`).
//! - One call, one send: `S` follows no redirects and retries nothing
//!   itself. The stack decides what may be sent again from the error of
//!   the call; a client that sent a write, followed a redirect and then
//!   failed to connect would read as "never connected", and the write
//!   would be sent twice. hyper-util's client follows no redirects;
//!   reqwest's does by default: give it `redirect::Policy::none()`.
//!
//! hyper-util's client satisfies them all. `reqwest::Client` does not: it
//! is a `Service<reqwest::Request>` answering `reqwest::Response`, not
//! `http`'s types, so the stack built on it implements no `Service`:
//! calling it fails with E0599 ("the method `oneshot` exists for struct
//! `Retry<Classify<Client>>`, but its trait bounds were not satisfied"), which names
//! only the outermost layer's `Service<_>`, not what the client lacks. A `service_fn`
//! converting one into the other is the whole adapter
//! (`examples/reqwest.rs`, and `tests/reqwest.rs` over real TCP):
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, BoxError, ServiceBuilder};
//! use tower_mpsd::ServiceBuilderExt;
//!
//! # fn main() -> Result<(), BoxError> {
//! // One send per call: the stack decides what is sent again.
//! let client = reqwest::Client::builder()
//!     .redirect(reqwest::redirect::Policy::none())
//!     .build()?;
//! let reqwest_service = service_fn(move |req: Request<Full<Bytes>>| {
//!     let client = client.clone();
//!     async move {
//!         let (parts, body) = req.into_parts();
//!         let body = body.collect().await?.to_bytes(); // `Full`: at once
//!         let res = client.execute(reqwest::Request::try_from(Request::from_parts(parts, body))?).await?;
//!         Ok::<_, BoxError>(Response::<reqwest::Body>::from(res))
//!     }
//! });
//! let mpsd = ServiceBuilder::new().mpsd().service(reqwest_service);
//! # drop(mpsd);
//! # Ok(())
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod auth;
mod body;
mod builder;
pub mod classify;
pub mod coalesce;
pub mod error;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod fleet;
#[cfg(any(test, fuzzing))]
pub mod fuzz_checks;
pub mod logical;
mod macros;
pub mod metrics;
pub mod pace;
mod ready;
pub mod rebase;
pub mod replay;
pub mod response;
pub mod retry;
pub mod revalidate;
pub mod rules;
pub mod sequence;
pub mod stack;

pub use builder::ServiceBuilderExt;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
pub use stack::MpsdLayer;

/// The boxed error type of bodies and services this crate wraps.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
