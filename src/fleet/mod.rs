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
//! - **Writes to one session**: given to a
//!   [`SessionBoard`](crate::sequence::SessionBoard)
//!   ([`SessionBoardBuilder::redis`](crate::sequence::SessionBoardBuilder::redis)),
//!   the store holds each session's write order (a ticket queue and a turn
//!   lease of 5 s, renewed by a live holder, so a dead one hands it on)
//!   and the session as the last write left it; see
//!   [`crate::sequence`]'s "A fleet".
//!
//! # One call for an ordinary request
//!
//! A request that meets no cooldown makes one call to Redis: its pace
//! reservation. Cooldowns are rare, so they are announced rather than
//! asked about: the script that closes one also `PUBLISH`es it (on the
//! channel `<prefix>cooldowns`), and each store keeps a subscription on a
//! connection of its own (a second connection per store), noting what it
//! hears. A request asks Redis about
//! a cooldown only while one it heard of is in force or being released (or
//! while the store does not listen: before its first subscription, and
//! while Redis is away); Redis saying the cooldown is gone ends that.
//!
//! The window in which a process could miss a cooldown is the
//! announcement's way from Redis to it, about a round trip: the closer
//! notes the cooldown in its own state at once, and the script publishes
//! it in the same atomic step that closes it, so a process that hears it
//! finds it in Redis. A process that (re)subscribes reads the fleet's list
//! of recent cooldowns (a sorted set written *before* each close) after its
//! subscription is in place, so it either reads a cooldown there or hears
//! it. A failed call makes the store subscribe again, in case its
//! subscription died without a word. Announcements are plain `PUBLISH`,
//! not sharded: a Redis Cluster passes them to every node, so one
//! subscription to any node hears them all, and there are few of them.
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
//! // `stack.layer(hyper_client)` as without Redis; `store.is_shared()`,
//! // `store.fallbacks()` and `store.fleet_size()` (or `{store:?}`) say how
//! // Redis has been answering.
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
//! state (fail open), by the rule below. The first failure after a success
//! logs one warning and counts one [`fallback`](RedisStore::fallbacks); the
//! first success after failures logs one `info` line: the fleet shares
//! state again. While Redis fails, it is tried at most once a second (the
//! other requests go straight to the process's own state, without waiting
//! for a timeout). Each process's own state keeps up with its own requests
//! while Redis answers, so a fallback starts from what this process sent.
//!
//! # While Redis is away
//!
//! Falling back to each process's own windows would let a fleet of K
//! processes send K times MPSD's limit exactly while it cannot coordinate.
//! So each process keeps to its *share* instead ([`WhileAway::Share`], the
//! default):
//!
//! - **Membership.** Every [`heartbeat`](RedisStoreBuilder::heartbeat)
//!   (default 15 s), each store adds itself to a sorted set of members by
//!   time (`<prefix>{fleet}`), drops those not heard from for three beats,
//!   and learns the count: the [fleet size](RedisStore::fleet_size). It
//!   rises at once and falls only when the larger count has gone unconfirmed
//!   for three beats, so a restarted Redis, which has heard from one member
//!   so far, does not enlarge anyone's share. Each pace reservation also
//!   counts, in its key's slot, the processes that reserved for that key
//!   within its longest window (no call of its own): fresher than the
//!   heartbeat for a member that joined since.
//! - **Share.** While Redis is away, each process paces by its own sends
//!   (which it counts while sharing too) against each window's `max`
//!   divided by the fleet size last known (or the key's senders, when more
//!   of them), rounded down, and at least 1: the shares add up to no more
//!   than the windows. A 429's `Retry-After` or full window still holds
//!   the key back, as in one process.
//! - **Back.** Redis is tried again at most once a second; as soon as it
//!   answers, the fleet shares again. For the longest window after an
//!   outage, each reservation also takes a slot of the process's share
//!   first (passed to the pace script as the earliest slot): the fleet's
//!   sends meanwhile are in MPSD's windows and not in Redis's, and a
//!   restarted Redis has forgotten the rest too. The cost: for that while
//!   (with MPSD's windows, five minutes), a process that sends more than
//!   its share for a user waits for its share. A lost call is no outage:
//!   when Redis answered at its first try again (the fallback lasted under
//!   2 s) and the fleet's *epoch* is the one this process saw before (a
//!   name kept beside the members, set anew by whoever finds it missing,
//!   so a restarted Redis has a new one), the share is dropped at the
//!   heartbeat that follows the return.
//!
//! A fleet whose processes come and go faster than the heartbeat, or whose
//! windows allow fewer sends than it has members, can still overshoot
//! while Redis is away; a process that never reached Redis knows a fleet
//! of one. [`WhileAway::Alone`] keeps the simpler rule: each process by
//! the whole windows.
//!
//! Nothing in Redis grows without bound: each sorted set is trimmed to the
//! larger `max` of its windows and expires when its newest reservation
//! leaves the longest window; a cooldown, and its entry in the list of
//! recent ones, expire a minute after it ends; a member leaves the fleet's
//! set three heartbeats after its last, and the set and the epoch expire
//! three heartbeats after the fleet's last. Each process remembers at most
//! 10,000 cooldowns it heard of (then asks about every key, as without
//! announcements), each until a minute after its end;
//! a session's write queue and document expire a minute after its last
//! write, the document is kept only up to 64 KiB, and its superseded
//! `ETag`s up to 128.
//!
//! # Which Redis
//!
//! One node, plain or TLS, by its URL ([`RedisStore::open`],
//! [`RedisStore::builder`]); a Redis Cluster by its seed nodes' URLs
//! ([`RedisStore::open_cluster`], [`RedisStore::cluster_builder`]). Both
//! connect on first use, so a process starts while Redis is down.
//!
//! **A cluster** (ElastiCache or MemoryDB in cluster mode, Azure's
//! clustered tiers, `redis-cli --cluster create`): give one or more nodes;
//! the connection asks them for the others, follows `MOVED`/`ASK`, and
//! refreshes the topology itself, so a failover (a replica promoted after
//! its master died) needs nothing from the application. Every key of one
//! script call shares a hash tag (`{...}` around the request's key; braces
//! in the [`prefix`](RedisStoreBuilder::prefix) are replaced), so each
//! call touches one slot, and users spread over the cluster's nodes. Give
//! a cluster's node URL to [`open`](RedisStore::open) instead and the keys
//! of other nodes fail with `MOVED`: the store falls back for them.
//!
//! ```
//! # use tower_mpsd::fleet::RedisStore;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::open_cluster([
//!     "redis://10.0.0.11:6379/",
//!     "redis://10.0.0.12:6379/",
//!     "redis://10.0.0.13:6379/",
//! ])?;
//! # drop(store);
//! # Ok(())
//! # }
//! ```
//!
//! **TLS**: a `rediss://` URL (for a cluster, every seed's). Azure Cache
//! for Redis serves TLS on port 6380 (its plain port, 6379, is off by
//! default); ElastiCache with in-transit encryption serves it on its usual
//! port. The server's certificate is checked against Mozilla's roots
//! (webpki-roots, compiled in: they are the same in every container,
//! including those without a system store, and are read once rather than
//! at each connection), which Azure's and AWS's certificates chain to; a
//! private CA is given with
//! [`root_certificates_pem`](RedisStoreBuilder::root_certificates_pem),
//! a client certificate for mutual TLS with
//! [`client_certificate_pem`](RedisStoreBuilder::client_certificate_pem).
//! TLS is rustls with its `ring` provider. rustls picks a process-wide
//! provider, and panics when a tree builds two (say `aws-lc-rs` from
//! another crate) and none was chosen: a store of `rediss://` URLs
//! installs `ring` when it is opened, unless the application installed
//! one already (then that one is used). An application that installs its
//! own provider does so before it opens a store.
//!
//! ```
//! # use tower_mpsd::fleet::RedisStore;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Azure Cache for Redis: TLS on 6380, the access key as the password.
//! let store = RedisStore::open("rediss://:ACCESS_KEY@my-cache.redis.cache.windows.net:6380/")?;
//! # drop(store);
//! # Ok(())
//! # }
//! ```
//!
//! **Credentials**: a user and password in the URL
//! (`redis://user:password@host/`, Redis 6 ACL users; `redis://:password@`
//! for the default user) are used by every connection, reconnections
//! included. Passwords that rotate (Azure's Entra ID tokens, AWS's IAM
//! tokens, valid 15 minutes) come through
//! [`credentials`](RedisStoreBuilder::credentials) instead: a `watch`
//! channel of [`Credentials`] that the application updates when it
//! renews the token. Each value sent re-authenticates every live
//! connection (`AUTH`), before the old token expires and the server
//! closes them, and new connections use the latest. The hook is the
//! `redis` crate's `StreamingCredentialsProvider` (which re-authenticates
//! live connections, single node and cluster alike) fed by the channel:
//! a channel always holds a current value, which a connection needs at
//! once to log in, and the application needs no `redis` dependency of its
//! own to feed it.
//!
//! ```
//! # use tower_mpsd::fleet::{Credentials, RedisStore};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (renewed, credentials) =
//!     tokio::sync::watch::channel(Credentials::new("app-identity", "first-token"));
//! let store = RedisStore::builder("rediss://my-cache.example:6380/")
//!     .credentials(credentials)
//!     .build()?;
//! // Later, from the task that renews the token:
//! renewed.send_replace(Credentials::new("app-identity", "next-token"));
//! # drop(store);
//! # Ok(())
//! # }
//! ```
//!
//! No script reads keys of two hash tags. The fleet's set of members and
//! list of recent cooldowns are one key each (the members and the epoch
//! under one hash tag), written once per heartbeat and once per cooldown,
//! not per request. Announcements are plain `PUBLISH`, which a cluster
//! passes to every node: the store subscribes through one node (its first
//! seed that answers) and hears them all.
//!
//! # Versions
//!
//! The feature needs Rust 1.88 (the `redis` crate's MSRV; the rest of the
//! crate needs 1.75) and Redis 5 or later (the scripts read `TIME` before
//! writing, which needs effects replication, the default since Redis 5);
//! ACL users need Redis 6. Tested with Redis 7.0: one node, a cluster of
//! 3 masters (plain, TLS only, and with ACL users), 3 masters with a
//! replica each through a failover, a TLS-only node (and mutual TLS), ACL
//! users with a password rotated mid-run (one node and a cluster).

mod board;
mod connect;
mod heard;
mod members;
mod scripts;
mod store;

pub(crate) use board::{FleetBoard, FleetTurn, Known, Learnt};
pub use connect::Credentials;
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
