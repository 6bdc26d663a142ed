//! Sharing cooldowns and pacing across a fleet of processes through Redis
//! (the `redis` cargo feature).
//!
//! Every process keeps its cooldowns ([`Cooldowns`](crate::retry::Cooldowns))
//! and pace windows ([`PaceTable`](crate::pace::PaceTable)) in memory by
//! default. MPSD counts a user's requests wherever they come from, so
//! processes acting for the same users would each fill the user's windows
//! and each send their own probe after a 503. Given one [`RedisStore`]
//! (through [`PaceTableBuilder::redis`](crate::pace::PaceTableBuilder::redis)
//! and [`CooldownsBuilder::redis`](crate::retry::CooldownsBuilder::redis)),
//! they share that state instead:
//!
//! - **Pacing**: one script call per paced request. A sorted set per key
//!   (the same key the in-process pacer uses: authority and user, and one
//!   per matched route) holds the reserved send times; for each window
//!   (`period`, `max`) the `max`-th newest reservation sets the earliest
//!   slot. The script reserves that slot and says how long to wait, or
//!   takes nothing when the wait would pass the request's deadline. Time
//!   is Redis's `TIME`, so the hosts' clocks do not matter; the table's
//!   margin covers late wake-ups and network jitter.
//! - **Cooldowns**: a 503 or 429 with `Retry-After` extends the cooldown's
//!   end atomically. Until then, requests fleet-wide wait or fail fast as
//!   they do in one process; after it, exactly one process holds the probe
//!   lease (it expires after [`probe_lease`](RedisStoreBuilder::probe_lease),
//!   so a dead holder hands it on); after the probe's success the waiters
//!   of every process are released one `release_spacing` apart.
//!
//! # Example
//!
//! ```
//! use tower_mpsd::fleet::RedisStore;
//! use tower_mpsd::pace::{PaceLayer, PaceTable};
//! use tower_mpsd::retry::{Cooldowns, RetryLayer};
//! use tower_mpsd::MpsdLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Connects on first use: the process starts even while Redis is down.
//! let store = RedisStore::open("redis://127.0.0.1:6379/")?;
//! let table = PaceTable::builder().redis(store.clone()).build();
//! let cooldowns = Cooldowns::builder().redis(store.clone()).build();
//! let stack = MpsdLayer::new()
//!     .retry(RetryLayer::new().with_cooldowns(cooldowns))
//!     .pace(PaceLayer::with_table(table));
//! // `stack.layer(hyper_client)` as without Redis; `store.is_shared()` and
//! // `store.fallbacks()` say how Redis has been answering.
//! # drop(stack);
//! # Ok(())
//! # }
//! ```
//!
//! # Failure behaviour
//!
//! Redis is an optimisation, never a dependency: each call has a short
//! [`timeout`](RedisStoreBuilder::timeout) (default 100 ms, a few loopback
//! or same-zone round trips, small against MPSD's 15 s burst window), and
//! on any error or timeout the request is decided by the process's own
//! state, as without Redis (fail open). The first failure after a success
//! logs one warning and counts one [`fallback`](RedisStore::fallbacks); the
//! first success after failures logs one `info` line: the fleet shares
//! state again. While Redis fails, it is tried at most once a second (the
//! other requests go straight to the process's own state, without waiting
//! for a timeout). Each process's own state keeps up with its own requests
//! while Redis answers, so a fallback starts from what this process sent.
//!
//! Nothing in Redis grows without bound: each sorted set is trimmed to the
//! larger `max` of its windows and expires when its newest reservation
//! leaves the longest window; a cooldown expires a minute after it ends.
//!
//! # Redis Cluster
//!
//! Every key of one script call shares a hash tag (`{...}` around the
//! request's key), so each call touches one slot.
//!
//! # Versions
//!
//! The feature needs Rust 1.88 (the `redis` crate's MSRV; the rest of the
//! crate needs 1.75) and Redis 5 or later (the scripts read `TIME` before
//! writing, which needs effects replication, the default since Redis 5);
//! tested with Redis 7.0.

mod heard;
mod members;
mod scripts;
mod store;

pub(crate) use store::{CooldownAdmission, PaceReservation};
pub use store::{RedisStore, RedisStoreBuilder, WhileAway};

/// Runs a call whose answer nobody waits for (telling Redis what an answer
/// said), on the current tokio runtime; outside one it is dropped.
pub(crate) fn spawn<F>(call: F)
where
    F: std::future::Future<Output = Option<()>> + Send + 'static,
{
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(call);
    }
}
