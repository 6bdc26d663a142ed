//! The Redis store: a connection, the scripts, and whether Redis answers.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::{FromRedisValue, Script, ScriptInvocation};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tower::util::rng::{HasherRng, Rng};

use super::connect::{Connection, Credentials, Nodes, Subscriber, Target};
use super::heard::{Ask, Heard};
use super::members::FleetSize;
use super::scripts;
use crate::pace::Limits;

/// A Redis server or cluster that several processes share their cooldowns
/// and pace windows through; see [the module](crate::fleet). A cheap
/// handle: clones share one connection (which reconnects on its own, and
/// in a cluster follows its topology), one subscription to the fleet's
/// cooldown announcements, one heartbeat, and one record of how Redis
/// answers. The subscription and the heartbeat are tasks on the runtime
/// the store was built in; they end when the last clone is dropped.
///
/// Its `Debug` shows its health (never a URL, which may hold a
/// password): whether it [shares](Self::is_shared), its
/// [fallbacks](Self::fallbacks) and [failures](Self::failures), whether it
/// [hears the cooldowns](Self::is_listening) announced, and the
/// [fleet size](Self::fleet_size) as last known.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

/// What each process does while Redis is away; see
/// [the module](crate::fleet#while-redis-is-away).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhileAway {
    /// Pace at this process's share of the windows: each window's `max`
    /// divided by the fleet size last known (at least 1 per window), and
    /// keep to that share as well for the longest window after Redis
    /// answers again from an outage. The default: together the fleet stays
    /// within the windows it shared.
    #[default]
    Share,
    /// Pace by the whole windows, as if this process were the only one
    /// (a fleet of K processes may send K times the windows meanwhile).
    Alone,
}

struct Inner {
    conn: Connection,
    /// The way to subscribe, for the session board's own subscription.
    subscriber: Subscriber,
    /// What kind of Redis, for `Debug` (never a URL).
    target: String,
    prefix: String,
    timeout: Duration,
    probe_lease: Duration,
    /// This process's part of every member and token it writes.
    instance: u64,
    sequence: AtomicU64,
    shared: AtomicBool,
    /// The last fallback, and whether the share still holds after it.
    away: Mutex<Away>,
    while_away: WhileAway,
    heartbeat: Duration,
    fleet: Mutex<FleetSize>,
    heard: Arc<Heard>,
    /// Told when a call fails: the listener subscribes again, in case its
    /// connection died without a word.
    lost: Arc<Notify>,
    /// Told when Redis answers again: the heartbeat task beats at once.
    resume: Arc<Notify>,
    /// Dropped with the store: its tasks end.
    _stop: watch::Sender<()>,
    /// While Redis fails, it is tried again at most once a second: the
    /// others go straight to the process's own state.
    next_try: Mutex<Instant>,
    fallbacks: AtomicU64,
    failures: AtomicU64,
    pace_reserve: Script,
    pace_learn: Script,
    cooldown_admit: Script,
    cooldown_close: Script,
    cooldown_probed: Script,
    cooldown_list: Script,
    cooldowns_heard: Script,
    beat: Script,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.inner.target)
            .field("prefix", &self.inner.prefix)
            .field("shared", &self.is_shared())
            .field("listening", &self.is_listening())
            .field("fleet_size", &self.fleet_size())
            .field("cooldowns_heard", &self.inner.heard.len())
            .field("fallbacks", &self.fallbacks())
            .field("failures", &self.failures())
            .field("while_away", &self.inner.while_away)
            .field("timeout", &self.inner.timeout)
            .field("probe_lease", &self.inner.probe_lease)
            .field("heartbeat", &self.inner.heartbeat)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisStore`]; from [`RedisStore::builder`] (one node) or
/// [`RedisStore::cluster_builder`].
#[derive(Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    target: Target,
    prefix: String,
    probe_lease: Duration,
    while_away: WhileAway,
    heartbeat: Duration,
}

/// Without the URLs: they may carry a password (`redis://:password@host/`).
impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("target", &self.target.describe())
            .field("prefix", &self.prefix)
            .field("timeout", &self.target.timeout)
            .field("probe_lease", &self.probe_lease)
            .field("while_away", &self.while_away)
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// What each process does while Redis is away. Default
    /// [`WhileAway::Share`]: the fleet stays within the windows it shared.
    pub fn while_away(mut self, rule: WhileAway) -> Self {
        self.while_away = rule;
        self
    }

    /// How often this process tells Redis it is a member of the fleet; a
    /// member counts for three of these without one. Default 15 s: the
    /// fleet's size changes over minutes (deploys, scaling), a beat costs
    /// a call (against one per request), and each reservation also counts
    /// the processes sending for its key, which covers a member too new
    /// for the others' last beat; a process that stopped leaves the count
    /// 45 s later. At least 10 ms: a beat is a call to Redis.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(10));
        self
    }

    /// Prefix of every key written. Default `"mpsd:"`. Fleets sharing one
    /// Redis for different services give each its own. Braces become `_`:
    /// in a cluster they would change the keys' hash tag, and the keys of
    /// one call must share a slot.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().replace(['{', '}'], "_");
        self
    }

    /// Trusts these certificate authorities (PEM, one or more) instead of
    /// the default roots (Mozilla's, compiled in), for `rediss://` URLs: a
    /// private CA, or a self-signed server. Checked when the store is
    /// built.
    pub fn root_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.target.root_cert = Some(pem.into());
        self
    }

    /// Presents this certificate chain and private key (PEM) to the
    /// server, for a `rediss://` URL to a server that asks for one
    /// (mutual TLS, `tls-auth-clients yes`). Checked when the store is
    /// built.
    pub fn client_certificate_pem(
        mut self,
        chain: impl Into<Vec<u8>>,
        private_key: impl Into<Vec<u8>>,
    ) -> Self {
        self.target.client_cert = Some((chain.into(), private_key.into()));
        self
    }

    /// Takes the user name and password from `credentials` instead of the
    /// URL, and follows it: each value sent re-authenticates every live
    /// connection (`AUTH`), and new connections use the latest. For
    /// passwords that rotate: Azure's Entra ID tokens, AWS's IAM tokens
    /// (valid 15 minutes), a secret store's rotation. Send the new value
    /// before the old one stops working.
    ///
    /// A `watch` channel because it always holds a current value, which a
    /// connection needs at once to log in, and a value sent replaces any
    /// not yet read; the `redis` crate's `StreamingCredentialsProvider`
    /// does the re-authentication.
    pub fn credentials(mut self, credentials: watch::Receiver<Credentials>) -> Self {
        self.target.credentials = Some(credentials);
        self
    }

    /// How long one call to Redis may take (connecting included) before
    /// the request is decided by the process's own state. Default 100 ms:
    /// a few round trips within a data centre, and small against MPSD's
    /// windows (15 s) and `Retry-After`s (seconds), so a slow Redis costs a
    /// request at most that much.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.target.timeout = timeout;
        self
    }

    /// How long the probe after a cooldown holds its lease. Default 5 s:
    /// longer than an MPSD answer takes, short enough that a process that
    /// died holding it delays the others by little. A probe slower than
    /// this lets a second one go.
    pub fn probe_lease(mut self, lease: Duration) -> Self {
        self.probe_lease = lease;
        self
    }

    /// The store. It connects on first use, so Redis need not be up yet:
    /// until it is, requests use the process's own state.
    ///
    /// # Errors
    ///
    /// When a URL is not a Redis URL, a cluster has no seed, its seeds
    /// disagree (user, password, TLS), a certificate or key is not PEM,
    /// certificates are given for a URL that is not `rediss://`, or when
    /// called outside a tokio runtime (the connection's task needs one).
    pub fn build(self) -> Result<RedisStore, redis::RedisError> {
        if tokio::runtime::Handle::try_current().is_err() {
            let outside = "a RedisStore is built inside a tokio runtime";
            return Err((redis::ErrorKind::Client, outside).into());
        }
        let target = self.target.describe();
        let timeout = self.target.timeout;
        let subscriber = self.target.subscriber()?;
        let conn = self.target.connect()?;
        let (stop, stopped) = watch::channel(());
        let store = RedisStore {
            inner: Arc::new(Inner {
                conn,
                subscriber: subscriber.clone(),
                target,
                prefix: self.prefix,
                timeout,
                probe_lease: self.probe_lease,
                instance: HasherRng::new().next_u64(),
                sequence: AtomicU64::new(0),
                shared: AtomicBool::new(true),
                away: Mutex::default(),
                while_away: self.while_away,
                heartbeat: self.heartbeat,
                fleet: Mutex::new(FleetSize::default()),
                heard: Arc::default(),
                lost: Arc::default(),
                resume: Arc::default(),
                _stop: stop,
                next_try: Mutex::new(Instant::now()),
                fallbacks: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                pace_reserve: Script::new(scripts::PACE_RESERVE),
                pace_learn: Script::new(scripts::PACE_LEARN),
                cooldown_admit: Script::new(scripts::COOLDOWN_ADMIT),
                cooldown_close: Script::new(scripts::COOLDOWN_CLOSE),
                cooldown_probed: Script::new(scripts::COOLDOWN_PROBED),
                cooldown_list: Script::new(scripts::COOLDOWN_LIST),
                cooldowns_heard: Script::new(scripts::COOLDOWNS_HEARD),
                beat: Script::new(scripts::HEARTBEAT),
            }),
        };
        let weak = Arc::downgrade(&store.inner);
        tokio::spawn(listen(weak.clone(), subscriber, stopped.clone()));
        tokio::spawn(beat(weak, stopped));
        Ok(store)
    }
}

/// Until the store is dropped: subscribes to the cooldown announcements,
/// reads the cooldowns closed before, then hears them until the
/// connection ends or a call to Redis fails; again a second after the
/// last try at most (at once after a subscription that lasted).
async fn listen(
    store: Weak<Inner>,
    subscriber: Subscriber,
    mut stop: watch::Receiver<()>,
) -> Option<()> {
    // Which node to try: the next one after a subscription that failed.
    let mut attempt = 0;
    loop {
        let inner = store.upgrade()?;
        let store = RedisStore { inner };
        let heard = store.inner.heard.clone();
        let lost = store.inner.lost.clone();
        let mut lost = std::pin::pin!(lost.notified_owned());
        lost.as_mut().enable();
        let tried = Instant::now();
        let subscribed = store.subscribe(&subscriber, attempt).await;
        drop(store);
        match subscribed {
            Some(mut messages) => {
                hear(&mut messages, &heard, lost.as_mut(), &mut stop).await?;
                heard.set_listening(false);
            }
            None => attempt = attempt.wrapping_add(1),
        }
        tokio::select! {
            () = tokio::time::sleep_until(tried + RETRY_AFTER_FAILURE) => {}
            _ = stop.changed() => return None,
        }
    }
}

/// Notes the announcements heard until the subscription ends or `lost`
/// is told; `None` when the store is dropped.
async fn hear(
    messages: &mut redis::aio::PubSubStream,
    heard: &Heard,
    mut lost: std::pin::Pin<&mut tokio::sync::futures::OwnedNotified>,
    stop: &mut watch::Receiver<()>,
) -> Option<()> {
    loop {
        tokio::select! {
            message = messages.next() => match message {
                Some(message) => {
                    let text: String = message.get_payload().unwrap_or_default();
                    if let Some((left, name)) = Heard::parse(&text) {
                        heard.hear(name, left, Instant::now());
                    }
                }
                None => break,
            },
            () = &mut lost => break,
            _ = stop.changed() => return None,
        }
    }
    Some(())
}

/// Until the store is dropped: a heartbeat every
/// [`heartbeat`](RedisStoreBuilder::heartbeat), and one as soon as Redis
/// answers again after failing.
async fn beat(store: Weak<Inner>, mut stop: watch::Receiver<()>) {
    let mut resumed = false;
    loop {
        let Some(inner) = store.upgrade() else {
            return;
        };
        let store = RedisStore { inner };
        let (every, resume) = (store.inner.heartbeat, store.inner.resume.clone());
        if resumed {
            store.resumed().await;
        } else {
            store.heartbeat().await;
        }
        drop(store);
        resumed = tokio::select! {
            () = tokio::time::sleep(every) => false,
            () = resume.notified() => true,
            _ = stop.changed() => return,
        };
    }
}

/// The last time Redis was away, as this process saw it.
#[derive(Debug, Default)]
struct Away {
    /// When the last fallback began.
    since: Option<Instant>,
    /// When Redis answered again after it, while the share is kept for
    /// the longest window (see [`WhileAway::Share`]).
    resumed: Option<Instant>,
    /// The fleet's epoch as last seen: a new one means Redis lost its
    /// state.
    epoch: Option<String>,
}

/// A fallback shorter than this (Redis answered at its first try again:
/// a lost call, not an outage) keeps no share after it, unless Redis lost
/// its state meanwhile.
const BRIEF_FALLBACK: Duration = Duration::from_secs(2);

/// A pacing reservation made in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PaceReservation {
    /// Reserved: send after this wait.
    Reserved(Duration),
    /// Not reserved: the slot is this far off, past the limit.
    Refused(Duration),
}

/// What a request may do about a cooldown kept in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CooldownAdmission {
    /// No cooldown: go.
    Go,
    /// Go as the probe, holding the lease `token` of generation `gen`.
    Probe { token: String, gen: u64 },
    /// Wait this long, then ask again.
    Wait(Duration),
    /// Released: go after this wait, asking again with the ticket `gen`.
    GoAt(Duration, u64),
    /// Another process probes; its lease ends in this long.
    WaitForProbe(Duration),
}

/// How long after a failure Redis is tried again: meanwhile requests use
/// the process's own state at once rather than each wait for a timeout.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A number of microseconds from a script, as a duration in
/// `0..=MAX_HOLD`: Redis is trusted no more than a server, and adding it to
/// an instant cannot overflow.
fn from_micros(us: i64) -> Duration {
    Duration::from_micros(us.max(0).unsigned_abs()).min(crate::rules::retry_after::MAX_HOLD)
}

impl RedisStore {
    /// A builder for a store on one Redis node at `url`
    /// (`redis://[user:password@]host:port/db`, `rediss://` for TLS, or
    /// `redis+unix:///path`), with the defaults: prefix `"mpsd:"`, a
    /// 100 ms timeout, a 5 s probe lease.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        Self::builder_for(Nodes::Single(url.into()))
    }

    /// A builder for a store on a Redis Cluster reached first through
    /// `seeds` (node URLs as for [`builder`](Self::builder); one is
    /// enough, more survive a seed being down; all with the same user,
    /// password and scheme), with the same defaults. The connection learns
    /// the other nodes from the cluster and follows its topology
    /// (`MOVED`/`ASK`, failovers).
    pub fn cluster_builder<S: Into<String>>(
        seeds: impl IntoIterator<Item = S>,
    ) -> RedisStoreBuilder {
        Self::builder_for(Nodes::Cluster(seeds.into_iter().map(Into::into).collect()))
    }

    fn builder_for(nodes: Nodes) -> RedisStoreBuilder {
        RedisStoreBuilder {
            target: Target {
                nodes,
                timeout: Duration::from_millis(100),
                root_cert: None,
                client_cert: None,
                credentials: None,
            },
            prefix: "mpsd:".to_owned(),
            probe_lease: Duration::from_secs(5),
            while_away: WhileAway::Share,
            heartbeat: Duration::from_secs(15),
        }
    }

    /// A store on one node at `url` with the defaults; see
    /// [`builder`](Self::builder).
    ///
    /// # Errors
    ///
    /// As [`RedisStoreBuilder::build`].
    pub fn open(url: impl Into<String>) -> Result<Self, redis::RedisError> {
        Self::builder(url).build()
    }

    /// A store on the Redis Cluster reached through `seeds` with the
    /// defaults; see [`cluster_builder`](Self::cluster_builder).
    ///
    /// # Errors
    ///
    /// As [`RedisStoreBuilder::build`].
    pub fn open_cluster<S: Into<String>>(
        seeds: impl IntoIterator<Item = S>,
    ) -> Result<Self, redis::RedisError> {
        Self::cluster_builder(seeds).build()
    }

    /// Whether the last call to Redis succeeded: state is shared. `false`
    /// while requests fall back to the process's own state.
    pub fn is_shared(&self) -> bool {
        self.inner.shared.load(Ordering::Relaxed)
    }

    /// How many times this process went from shared to its own state
    /// (Redis failed after answering, or never answered).
    pub fn fallbacks(&self) -> u64 {
        self.inner.fallbacks.load(Ordering::Relaxed)
    }

    /// Calls to Redis that failed or timed out (each decided locally).
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// Whether this process hears the cooldowns the fleet closes, so that
    /// requests meeting none make no call about them. `false` before the
    /// first subscription and while Redis is away: then each request asks.
    pub fn is_listening(&self) -> bool {
        self.inner.heard.is_listening()
    }

    /// How many processes share the windows, as Redis last counted them
    /// (1 until it first answers). While Redis is away, each paces at its
    /// share: see [`WhileAway::Share`].
    pub fn fleet_size(&self) -> u32 {
        self.fleet().get()
    }

    fn fleet(&self) -> MutexGuard<'_, FleetSize> {
        self.inner.fleet.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many ways the windows of a key are split when this process
    /// paces by its own: the fleet's size, or the key's `senders` (the
    /// processes that sent for it within its longest window, as the pace
    /// script last counted them) when more, which is fresher than a
    /// heartbeat; 1 (the whole windows) by [`WhileAway::Alone`].
    pub(crate) fn share(&self, senders: u32) -> u32 {
        match self.inner.while_away {
            WhileAway::Share => self.fleet_size().max(senders),
            WhileAway::Alone => 1,
        }
    }

    /// The share this process still keeps to while sharing again, for
    /// `hold` (the longest window) after Redis answered again: Redis may
    /// have lost what was sent meanwhile (a restarted server is empty).
    /// Not after a brief fallback in which Redis kept its state.
    pub(crate) fn share_since_resumed(&self, hold: Duration, senders: u32) -> Option<u32> {
        let resumed = self.away().resumed;
        let recent = resumed.is_some_and(|at| Instant::now() < at + hold);
        (recent && self.inner.while_away == WhileAway::Share).then(|| self.share(senders))
    }

    /// Whether no request needs to ask Redis about a cooldown: this
    /// process hears them, and has heard of none in force.
    pub(crate) fn cooldowns_quiet(&self) -> bool {
        self.inner.heard.is_quiet(Instant::now())
    }

    /// Whether a request of the cooldown `name` must ask Redis.
    pub(crate) fn must_ask(&self, name: &str) -> bool {
        self.inner.heard.ask(name) != Ask::No
    }

    /// Subscribes to the cooldown announcements on a connection of its
    /// own, then reads the cooldowns closed before; `None` when Redis did
    /// not answer in time.
    async fn subscribe(
        &self,
        subscriber: &Subscriber,
        attempt: usize,
    ) -> Option<redis::aio::PubSubStream> {
        let channel = self.channel();
        let subscribed = async {
            let mut pubsub = subscriber.connect(attempt).await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(self.inner.timeout, subscribed).await {
            Ok(Ok(pubsub)) => {
                let mut call = self.inner.cooldowns_heard.prepare_invoke();
                call.key(self.channel());
                let listed: Vec<(String, i64)> = self.run(call).await?;
                let now = Instant::now();
                for (name, left) in listed {
                    self.inner.heard.hear(&name, left, now);
                }
                self.inner.heard.set_listening(true);
                Some(pubsub.into_on_message())
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "mpsd fleet: no subscription to the cooldowns");
                None
            }
            Err(_elapsed) => None,
        }
    }

    /// The channel cooldowns are announced on, which is also the key of
    /// the list of recent ones.
    fn channel(&self) -> String {
        format!("{}cooldowns", self.inner.prefix)
    }

    fn away(&self) -> MutexGuard<'_, Away> {
        self.inner.away.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells Redis this process is a member, and learns the fleet's size
    /// and epoch: `Some(true)` when the epoch is new since the last beat
    /// (Redis lost its state), `None` when Redis did not answer.
    async fn heartbeat(&self) -> Option<bool> {
        let ttl = self.inner.heartbeat * 3;
        let mut call = self.inner.beat.prepare_invoke();
        let fleet = format!("{}{{fleet}}", self.inner.prefix);
        call.key(&fleet)
            .key(format!("{fleet}:epoch"))
            .arg(format!("{:016x}", self.inner.instance))
            .arg(micros(ttl))
            .arg(self.unique());
        let (members, epoch): (i64, String) = self.run(call).await?;
        let members = u32::try_from(members).unwrap_or(u32::MAX);
        self.fleet().observe(members, Instant::now(), ttl);
        let mut away = self.away();
        let new = away.epoch.as_ref().is_some_and(|seen| *seen != epoch);
        away.epoch = Some(epoch);
        Some(new)
    }

    /// Just after Redis answered again: keeps the share only after an
    /// outage, or when Redis lost its state (a beat says).
    async fn resumed(&self) {
        let Some(lost_state) = self.heartbeat().await else {
            return;
        };
        let mut away = self.away();
        let brief = match (away.since, away.resumed) {
            (Some(since), Some(resumed)) => {
                resumed.saturating_duration_since(since) < BRIEF_FALLBACK
            }
            _ => false,
        };
        if brief && !lost_state {
            away.resumed = None;
        }
    }

    /// A member or token no other call of the fleet writes.
    fn unique(&self) -> String {
        let n = self.inner.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}-{n}", self.inner.instance)
    }

    fn key(&self, kind: &str, key: &str, part: &str) -> String {
        // The request's key in braces: Redis Cluster's hash tag, so that
        // the keys of one call share a slot. Braces inside it would end
        // the tag early; they cannot occur in an authority or user hash,
        // and are replaced for custom keys.
        let key = key.replace(['{', '}'], "_");
        format!("{}{kind}:{{{key}}}{part}", self.inner.prefix)
    }

    /// Runs one script call with the timeout, recording whether Redis
    /// answered; `None` when it did not.
    async fn run<T: FromRedisValue>(&self, invocation: ScriptInvocation<'_>) -> Option<T> {
        if !self.is_shared() && Instant::now() < *self.next_try() {
            return None;
        }
        let mut conn = self.inner.conn.clone();
        let call = invocation.invoke_async::<T>(&mut conn);
        let result = tokio::time::timeout(self.inner.timeout, call).await;
        match result {
            Ok(Ok(value)) => {
                if !self.inner.shared.swap(true, Ordering::Relaxed) {
                    self.away().resumed = Some(Instant::now());
                    self.inner.resume.notify_one();
                    tracing::info!("mpsd fleet: Redis answers again; state is shared");
                }
                Some(value)
            }
            Ok(Err(error)) => {
                self.failed(&error);
                None
            }
            Err(_elapsed) => {
                self.failed(&"no answer within the timeout");
                None
            }
        }
    }

    /// What the session board ([`super::board`]) uses of the store: its
    /// key of `session` and `part` (one hash tag per session), a script
    /// call, the channel it announces turns on, and the way to subscribe.
    pub(super) fn board_key(&self, session: &str, part: &str) -> String {
        self.key("board", session, part)
    }

    pub(super) async fn board_run<T: FromRedisValue>(
        &self,
        invocation: ScriptInvocation<'_>,
    ) -> Option<T> {
        self.run(invocation).await
    }

    pub(super) fn board_channel(&self) -> String {
        format!("{}board:turns", self.inner.prefix)
    }

    pub(super) fn board_subscriber(&self) -> &Subscriber {
        &self.inner.subscriber
    }

    fn next_try(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.inner
            .next_try
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn failed(&self, error: &dyn fmt::Display) {
        self.inner.failures.fetch_add(1, Ordering::Relaxed);
        *self.next_try() = Instant::now() + RETRY_AFTER_FAILURE;
        self.inner.lost.notify_waiters();
        if self.inner.shared.swap(false, Ordering::Relaxed) {
            self.away().since = Some(Instant::now());
            self.inner.fallbacks.fetch_add(1, Ordering::Relaxed);
            crate::metrics::redis_fallback();
            tracing::warn!(%error, "mpsd fleet: Redis failed; using this process's own state");
        }
    }

    /// Reserves a slot for `key` under `general` and the matched `routes`
    /// (name, limits), waiting at most `limit` and at least `earliest`;
    /// with how many processes reserved for `key` within its longest
    /// window. `None` when Redis failed.
    pub(crate) fn pace_reserve(
        &self,
        key: &str,
        general: Limits,
        routes: &[(&str, Limits)],
        margin: Duration,
        earliest: Duration,
        limit: Duration,
    ) -> impl Future<Output = Option<(PaceReservation, u32)>> + Send + 'static {
        let store = self.clone();
        let mut keys = vec![
            self.key("pace", key, ":floor"),
            self.key("pace", key, ":senders"),
            self.key("pace", key, ""),
        ];
        let span = routes
            .iter()
            .map(|(_, limits)| limits.longest())
            .fold(general.longest(), Duration::max)
            + margin;
        let mut windows = vec![general];
        for (name, limits) in routes {
            keys.push(self.key("pace", key, &format!(":route:{name}")));
            windows.push(*limits);
        }
        let member = self.unique();
        async move {
            let mut call = store.inner.pace_reserve.prepare_invoke();
            call.key(keys)
                .arg(micros(margin))
                .arg(micros(limit))
                .arg(member)
                .arg(micros(earliest))
                .arg(format!("{:016x}", store.inner.instance))
                .arg(micros(span));
            for limits in windows {
                call.arg(limits.burst.max)
                    .arg(micros(limits.burst.period))
                    .arg(limits.sustain.max)
                    .arg(micros(limits.sustain.period));
            }
            let (reserved, wait, senders): (i64, i64, i64) = store.run(call).await?;
            let wait = from_micros(wait);
            let senders = u32::try_from(senders.max(1)).unwrap_or(u32::MAX);
            // A slot past the limit is refused even if Redis says otherwise.
            let reservation = if reserved == 1 && wait <= limit {
                PaceReservation::Reserved(wait)
            } else {
                PaceReservation::Refused(wait)
            };
            Some((reservation, senders))
        }
    }

    /// Holds `key`'s pacing back until `after` from now (a 429's
    /// `Retry-After`), fleet-wide.
    pub(crate) fn pace_learn(
        &self,
        key: &str,
        after: Duration,
    ) -> impl Future<Output = Option<()>> + Send + 'static {
        let store = self.clone();
        let floor = self.key("pace", key, ":floor");
        async move {
            let mut call = store.inner.pace_learn.prepare_invoke();
            call.key(floor).arg(micros(after));
            store.run::<i64>(call).await.map(drop)
        }
    }

    /// Asks what a request of the cooldown `key` may do, holding `ticket`,
    /// waiting at most `limit` for a released slot.
    pub(crate) fn cooldown_admit(
        &self,
        key: &str,
        ticket: Option<u64>,
        spacing: Duration,
        limit: Duration,
    ) -> impl Future<Output = Option<CooldownAdmission>> + Send + 'static {
        let store = self.clone();
        let redis_key = self.key("cooldown", key, "");
        let token = self.unique();
        let asked = match self.inner.heard.ask(key) {
            Ask::Yes(Some(number)) => Some((key.to_owned(), number)),
            _ => None,
        };
        async move {
            let mut call = store.inner.cooldown_admit.prepare_invoke();
            call.key(redis_key)
                .arg(&token)
                .arg(ticket.map(|t| t.to_string()).unwrap_or_default())
                .arg(micros(store.inner.probe_lease))
                .arg(micros(spacing))
                .arg(micros(limit));
            let (kind, wait, gen): (i64, i64, i64) = store.run(call).await?;
            let (wait, gen) = (from_micros(wait), gen.max(0).unsigned_abs());
            if (kind, gen) == (0, 0) {
                // No cooldown in Redis (never one, or its release is over).
                if let Some((name, number)) = asked {
                    store.inner.heard.cleared(&name, number);
                }
            }
            Some(match kind {
                1 => CooldownAdmission::Probe { token, gen },
                2 => CooldownAdmission::Wait(wait),
                3 => CooldownAdmission::GoAt(wait, gen),
                4 => CooldownAdmission::WaitForProbe(wait),
                _ => CooldownAdmission::Go,
            })
        }
    }

    /// Extends the cooldown `key` to at least `after` from now, and
    /// announces it to the fleet: first in the list read by processes that
    /// (re)subscribe, then closed and published in one script, so that no
    /// process misses it (see `heard.rs`). Heard of here at once.
    pub(crate) fn cooldown_close(
        &self,
        key: &str,
        after: Duration,
    ) -> impl Future<Output = Option<()>> + Send + 'static {
        let left = i64::try_from(micros(after)).unwrap_or(i64::MAX);
        self.inner.heard.hear(key, left, Instant::now());
        let store = self.clone();
        let redis_key = self.key("cooldown", key, "");
        let name = key.to_owned();
        async move {
            let mut list = store.inner.cooldown_list.prepare_invoke();
            list.key(store.channel()).arg(&name).arg(micros(after));
            // Not listed, the cooldown is still closed and announced: only
            // a process subscribing at that instant would miss it.
            let _ = store.run::<i64>(list).await;
            let mut call = store.inner.cooldown_close.prepare_invoke();
            call.key(redis_key)
                .arg(micros(after))
                .arg(store.channel())
                .arg(&name);
            store.run::<i64>(call).await?;
            // Heard of again now that Redis has it: an answer to a
            // question asked before it landed must not forget it.
            store.inner.heard.hear(&name, left, Instant::now());
            Some(())
        }
    }

    /// Ends the probe holding `token`; `opened` when it got through, which
    /// starts the fleet's release unless the cooldown closed again since
    /// generation `gen`.
    pub(crate) fn cooldown_probed(
        &self,
        key: &str,
        token: String,
        gen: u64,
        opened: bool,
        spacing: Duration,
    ) -> impl Future<Output = Option<()>> + Send + 'static {
        let store = self.clone();
        let redis_key = self.key("cooldown", key, "");
        async move {
            let mut call = store.inner.cooldown_probed.prepare_invoke();
            call.key(redis_key)
                .arg(token)
                .arg(gen)
                .arg(if opened { "1" } else { "0" })
                .arg(micros(spacing));
            store.run::<i64>(call).await.map(drop)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{RedisStore, WhileAway};

    #[test]
    fn outside_a_runtime_is_an_error_not_a_panic() {
        let err = RedisStore::open("redis://127.0.0.1:1/").unwrap_err();
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }

    #[tokio::test]
    async fn a_bad_url_is_an_error() {
        assert!(RedisStore::open("http://example.test/").is_err());
        assert!(RedisStore::open("redis://127.0.0.1:1/").is_ok());
    }

    #[tokio::test]
    async fn the_password_in_the_url_never_shows_in_debug() {
        for url in [
            "redis://:hunter2@127.0.0.1:1/3",
            "redis://me:hunter2@127.0.0.1:1/",
        ] {
            let builder = RedisStore::builder(url);
            let store = builder.clone().build().unwrap();
            let shown = format!("{builder:?} {store:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[tokio::test]
    async fn debug_shows_the_health_an_operator_needs() {
        let store = RedisStore::builder("redis://me:hunter2@127.0.0.1:1/")
            .while_away(WhileAway::Alone)
            .build()
            .unwrap();
        // Nothing listens on port 1: the first heartbeat fails at once.
        let failed = async {
            while store.failures() == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), failed)
            .await
            .expect("the heartbeat fails");
        let shown = format!("{store:?}");
        for health in [
            "shared: false",
            "listening: false",
            "fleet_size: 1",
            "fallbacks: 1",
            "while_away: Alone",
        ] {
            assert!(shown.contains(health), "{health} in {shown}");
        }
        assert!(
            !shown.contains("hunter2") && !shown.contains("127.0.0.1"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn keys_share_a_hash_tag_without_stray_braces() {
        let store = RedisStore::open("redis://127.0.0.1:1/").unwrap();
        assert_eq!(
            store.key("pace", "h u{1}", ":floor"),
            "mpsd:pace:{h u_1_}:floor"
        );
        // A prefix of `{}` would be an empty tag, which Redis ignores:
        // the keys of one call would hash apart.
        let store = RedisStore::builder("redis://127.0.0.1:1/")
            .prefix("{}")
            .build()
            .unwrap();
        assert_eq!(store.key("pace", "k", ""), "__pace:{k}");
    }
}
