//! Pacing requests so that MPSD never has to answer 429: a client-side
//! limiter per user that enforces the service's burst and sustain windows
//! at once, holding a request back until its slot opens.
//!
//! MPSD counts each user's requests over a **burst** window (30 per 15 s)
//! and a **sustain** window (300 per 300 s) at once, both sliding, and
//! counts throttled requests too, so a client that reacts to 429 has
//! already lost: the retries count against it. [`PaceLayer`] keeps the same
//! windows on the client side, per key (the authority and the
//! `XBL3.0 x=<userhash>` user, as the 429 cooldown of the
//! [retry layer](crate::retry)):
//!
//! - A request whose windows have room goes at once; otherwise it takes the
//!   earliest slot at which both windows have room, and waits for it, if
//!   the slot is no later than its deadline (that of the
//!   [`LogicalRequest`](crate::logical::LogicalRequest) an outer layer of
//!   this crate put in its extensions, or, without one, 20 s from now:
//!   the default deadline of [`LogicalLayer`](crate::logical::LogicalLayer)).
//!   Slots are handed out in call order, so waiters queue fairly.
//! - A request whose slot is past its deadline fails at once with
//!   [`Refused`](crate::error::Refused) (in a [`BoxError`](crate::BoxError)), which says when
//!   a slot opens, without touching the network or taking a slot.
//! - **Routes** add limits for requests matching a path pattern, on top of
//!   the general ones; by default handle queries (`POST /handles/query`)
//!   get their documented 1 per 15 s and 20 per 300 s.
//!
//! Defaults, and why: [`Limits::mpsd`] (the service's documented limits),
//! a 100 ms [`margin`](PaceTableBuilder::margin) on each window (network
//! jitter between leaving here and arriving there), 10,000
//! [keys](PaceTableBuilder::max_keys) (as for the retry layer's cooldowns).
//! How long a request may wait for its slot is its logical request's
//! deadline, not a setting of this layer.
//!
//! What is counted, and every key's send times, live in a [`PaceTable`]:
//! a handle whose clones share one table, set up when it is built. A layer
//! made with [`PaceLayer::new`] makes its own, shared by the layer's
//! clones; [`PaceLayer::with_table`] shares one with other stacks, so that
//! a user's requests through all of them count in one set of windows, as
//! at the service. With the `redis` feature, several processes can share
//! them too (`PaceTableBuilder::redis`, see the crate's `fleet` module).
//! A 429 that gets through anyway holds its key back (see [`PaceTable`]),
//! and [`PaceTable::stats`] counts waits, refusals and 429s.
//!
//! A slot is counted when it is taken: a request that is then cancelled or
//! fails before reaching the service still holds it. That errs on the safe
//! side; the service may have counted it anyway.
//!
//! Stack it inside the [retry layer](crate::retry) so that retries are
//! paced too and share the logical request's deadline.
//!
//! # Why hand-written windows, not `governor`
//!
//! `governor` implements GCRA: one rate plus a burst allowance. Two
//! windows would take two limiters, and GCRA is not a sliding window: a
//! quota of 30 per 15 s with a burst of 30 lets 30 through at once and then
//! one every 0.5 s, so up to 59 in one 15 s window, which MPSD throttles.
//! Making GCRA safe would cost about half the throughput, and its clock
//! would need adapting to tokio's paused time. The windows here are a few
//! dozen lines: each key keeps the times of its newest sends (at most the
//! larger `max`, 300 by default), and the next slot is when the `max`-th
//! newest send of each window is a period old. That is exactly the
//! service's rule, so a caller paced with a zero margin is never throttled
//! by a limiter that counts as MPSD does; the crate's simulator does, and
//! the tests hammer it for ten virtual minutes without a 429.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tokio::time::Instant;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_mpsd::error::{Refused, RefusedBy};
//! use tower_mpsd::logical::LogicalLayer;
//! use tower_mpsd::pace::{Limits, PaceLayer, PaceTable, Window};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_mpsd::BoxError> {
//! let mpsd = service_fn(|_req: Request<Full<Bytes>>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
//! });
//! // Two per 10 s, five per 60 s; no margin, a wait of at most 15 s.
//! let limits = Limits::new(
//!     Window::new(2, Duration::from_secs(10)),
//!     Window::new(5, Duration::from_secs(60)),
//! );
//! let table = PaceTable::builder().limits(limits).margin(Duration::ZERO).build();
//! let client = ServiceBuilder::new()
//!     .layer(LogicalLayer::new(Duration::from_secs(15), 1))
//!     .layer(PaceLayer::with_table(table))
//!     .service(mpsd);
//! let get = || {
//!     Request::get("http://mpsd.test/handles/h1")
//!         .header("authorization", "XBL3.0 x=1234;token")
//!         .body(Full::default())
//! };
//!
//! let t0 = Instant::now();
//! client.clone().oneshot(get()?).await?;
//! client.clone().oneshot(get()?).await?;
//! // The third waits until the first is 10 s old ...
//! client.clone().oneshot(get()?).await?;
//! assert_eq!(t0.elapsed(), Duration::from_secs(10));
//! // ... the fourth goes with it, and the fifth waits until the third is.
//! client.clone().oneshot(get()?).await?;
//! client.clone().oneshot(get()?).await?;
//! assert_eq!(t0.elapsed(), Duration::from_secs(20));
//! // The sixth would have to wait for the sustain window (until 60 s): too long.
//! let err = client.clone().oneshot(get()?).await.unwrap_err();
//! let refused = err.downcast_ref::<Refused>().unwrap();
//! assert_eq!((refused.by, refused.retry_in), (RefusedBy::Pace, Duration::from_secs(40)));
//! # Ok(())
//! # }
//! ```

mod future;
mod layer;
mod limits;
mod table;

pub use future::ResponseFuture;
pub use layer::{Pace, PaceLayer};
pub use limits::{Limits, Window};
pub use table::{default_pace_key, PaceKeyFn, PaceStats, PaceTable, PaceTableBuilder};
