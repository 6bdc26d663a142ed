//! The Redis store: a connection, the scripts, and whether Redis answers.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{FromRedisValue, Script, ScriptInvocation};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::util::rng::{HasherRng, Rng};

use super::connect::{Connection, Credentials, Nodes, Target};
use super::scripts;
use crate::pace::Limits;

/// A Redis server or cluster that several processes share their cooldowns
/// and pace windows through; see [the module](crate::fleet). A cheap
/// handle: clones share one connection (which reconnects on its own, and
/// in a cluster follows its topology), and one record of whether Redis
/// answers.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Connection,
    /// For the session board's subscription: a client of one node (for a
    /// cluster, its first seed: a node hears every node's messages).
    subscriber: Option<redis::Client>,
    /// What kind of Redis, for `Debug` (never a URL).
    target: String,
    prefix: String,
    timeout: Duration,
    probe_lease: Duration,
    /// This process's part of every member and token it writes.
    instance: u64,
    sequence: AtomicU64,
    shared: AtomicBool,
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
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.inner.target)
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("probe_lease", &self.inner.probe_lease)
            .field("shared", &self.is_shared())
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
}

/// Without the URLs: they may carry a password (`redis://:password@host/`).
impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("target", &self.target.describe())
            .field("prefix", &self.prefix)
            .field("timeout", &self.target.timeout)
            .field("probe_lease", &self.probe_lease)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
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
        let subscriber = self.target.subscriber();
        let conn = self.target.connect()?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conn,
                subscriber,
                target,
                prefix: self.prefix,
                timeout,
                probe_lease: self.probe_lease,
                instance: HasherRng::new().next_u64(),
                sequence: AtomicU64::new(0),
                shared: AtomicBool::new(true),
                next_try: Mutex::new(Instant::now()),
                fallbacks: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                pace_reserve: Script::new(scripts::PACE_RESERVE),
                pace_learn: Script::new(scripts::PACE_LEARN),
                cooldown_admit: Script::new(scripts::COOLDOWN_ADMIT),
                cooldown_close: Script::new(scripts::COOLDOWN_CLOSE),
                cooldown_probed: Script::new(scripts::COOLDOWN_PROBED),
            }),
        })
    }
}

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
    /// call, the channel it announces turns on, and a client for its
    /// subscription.
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

    pub(super) fn board_subscriber(&self) -> Option<&redis::Client> {
        self.inner.subscriber.as_ref()
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
        if self.inner.shared.swap(false, Ordering::Relaxed) {
            self.inner.fallbacks.fetch_add(1, Ordering::Relaxed);
            crate::metrics::redis_fallback();
            tracing::warn!(%error, "mpsd fleet: Redis failed; using this process's own state");
        }
    }

    /// Reserves a slot for `key` under `general` and the matched `routes`
    /// (name, limits), waiting at most `limit`; `None` when Redis failed.
    pub(crate) fn pace_reserve(
        &self,
        key: &str,
        general: Limits,
        routes: &[(&str, Limits)],
        margin: Duration,
        limit: Duration,
    ) -> impl Future<Output = Option<PaceReservation>> + Send + 'static {
        let store = self.clone();
        let mut keys = vec![self.key("pace", key, ":floor"), self.key("pace", key, "")];
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
                .arg(member);
            for limits in windows {
                call.arg(limits.burst.max)
                    .arg(micros(limits.burst.period))
                    .arg(limits.sustain.max)
                    .arg(micros(limits.sustain.period));
            }
            let (reserved, wait): (i64, i64) = store.run(call).await?;
            let wait = from_micros(wait);
            // A slot past the limit is refused even if Redis says otherwise.
            Some(if reserved == 1 && wait <= limit {
                PaceReservation::Reserved(wait)
            } else {
                PaceReservation::Refused(wait)
            })
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
            Some(match kind {
                1 => CooldownAdmission::Probe { token, gen },
                2 => CooldownAdmission::Wait(wait),
                3 => CooldownAdmission::GoAt(wait, gen),
                4 => CooldownAdmission::WaitForProbe(wait),
                _ => CooldownAdmission::Go,
            })
        }
    }

    /// Extends the cooldown `key` to at least `after` from now.
    pub(crate) fn cooldown_close(
        &self,
        key: &str,
        after: Duration,
    ) -> impl Future<Output = Option<()>> + Send + 'static {
        let store = self.clone();
        let redis_key = self.key("cooldown", key, "");
        async move {
            let mut call = store.inner.cooldown_close.prepare_invoke();
            call.key(redis_key).arg(micros(after));
            store.run::<i64>(call).await.map(drop)
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
    use super::RedisStore;

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
