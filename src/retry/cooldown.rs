//! Shared cooldowns: once an endpoint says "come back later", every request
//! that would hit it waits (or fails fast), not only the one that was told.
//!
//! A gate per key holds the instant the cooldown ends. Until then, requests
//! wait for that instant if it fits their deadline, or fail at once. When it
//! ends, the first request through becomes the *probe*; the others wait for
//! its answer. If the probe is told to wait again, the gate closes again
//! with the new instant. If it gets any other answer, the gate is removed
//! and the waiters are released. If the probe's caller drops its future,
//! the waiters are woken and one of them becomes the probe.
//!
//! The release is spread: waiters released by one probe's success are let
//! through one `release_spacing` apart (default 50 ms), so a queue of N
//! callers reaches the server over N × spacing rather than at one instant.
//! Each released waiter holds a [`Ticket`] for its slot; when its slot
//! comes, it asks again, and the ticket lets it through only if the gate
//! has not been closed since. A release stops the moment a released
//! request is told to wait again.
//!
//! The map is bounded: a gate is removed once its release is over, or a
//! minute after its cooldown ended if no request of its key has come since;
//! when the map is full, gates whose cooldown has ended with no probe in
//! flight are forgotten to make room, and if none can be, new gates are
//! refused (requests then simply proceed, as without a cooldown) rather
//! than grow.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;
use tokio::time::Instant;

#[cfg(feature = "redis")]
use crate::fleet::{CooldownAdmission, RedisStore};
use crate::rules::backoff::Cause;

/// What a cooldown kept in a shared store says a request may do: an
/// [`Admission`], once the store (or, when it fails, the process's own
/// state) has answered.
pub(crate) type SharedAdmission = Pin<Box<dyn std::future::Future<Output = Admission> + Send>>;

/// How often a request waiting for another process's probe asks again.
#[cfg(feature = "redis")]
const PROBE_POLL: Duration = Duration::from_millis(50);

/// What a cooldown is keyed by: the cause that closes it (503 or 429) and
/// the key the layer's key function gave for the request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key(pub(crate) Cause, pub(crate) String);

impl Key {
    /// The key's name in a shared store.
    #[cfg(feature = "redis")]
    fn shared_name(&self) -> String {
        let cause = match self.0 {
            Cause::Overloaded => "503",
            Cause::Throttled => "429",
            _ => "other",
        };
        format!("{cause} {}", self.1)
    }
}

#[derive(Debug)]
struct Gate {
    until: Instant,
    probing: bool,
    /// The next instant a released waiter may go, while releasing.
    next_release: Option<Instant>,
    /// Counts the closings of this gate: a ticket is good for one.
    generation: u64,
    notify: Arc<Notify>,
}

/// How long a cooldown that ended with no request of its key since is kept
/// (its next request would be the probe): after a minute with no one
/// coming, there is no herd left to hold back.
const FORGET_AFTER: Duration = Duration::from_secs(60);

impl Gate {
    /// Whether the gate holds nothing back any more: a probe's success
    /// released it and every slot handed out has come, or its cooldown
    /// ended long ago and no request of its key has come since.
    fn settled_by(&self, now: Instant) -> bool {
        if self.probing || now < self.until {
            return false;
        }
        match self.next_release {
            Some(next) => next <= now,
            None => now.saturating_duration_since(self.until) >= FORGET_AFTER,
        }
    }
}

/// A released waiter's claim on its slot: good while the gate has not been
/// closed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

/// The cooldowns of one or more retry layers: one gate per key (the
/// authority for 503, the authority and user for 429), saying until when
/// requests of that key wait, which of them probes, and how the others are
/// released after.
///
/// A cheap handle: clones share one map. A [`RetryLayer`](super::RetryLayer)
/// makes its own unless given one with
/// [`with_cooldowns`](super::RetryLayer::with_cooldowns); its clones, and
/// the services they make, share it. Give one handle to several stacks
/// (two clients of one process talking to MPSD, or an
/// [`overloaded`](super::RetryLayer::overloaded) and a
/// [`throttled`](super::RetryLayer::throttled) layer) so that a
/// `Retry-After` seen through one holds back requests through the others.
/// Its settings are fixed when it is built.
///
/// # Rules
///
/// Until a cooldown ends, requests of its key wait for its end if that
/// fits their deadline, or fail at once without touching the network.
/// When it ends, the first request through is the *probe*; the others
/// wait for its answer. Told to wait again, the probe closes the gate
/// again; any other answer releases the waiters, one
/// [`release_spacing`](CooldownsBuilder::release_spacing) apart. The map
/// is bounded by [`max_keys`](CooldownsBuilder::max_keys): ended gates are
/// forgotten to make room, and if none can be, a new cooldown is not kept
/// (its requests proceed as without one).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// # use tower::service_fn;
/// use tower_mpsd::retry::{Cooldowns, RetryLayer};
///
/// # let hyper_client = service_fn(|_req: http::Request<http_body_util::Full<bytes::Bytes>>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::default()))
/// # });
/// // One set of cooldowns for both clients of this process.
/// let cooldowns = Cooldowns::builder()
///     .release_spacing(Duration::from_millis(100))
///     .build();
/// let lobby = ServiceBuilder::new()
///     .layer(RetryLayer::new().with_cooldowns(cooldowns.clone()))
///     .service(hyper_client.clone());
/// let matchmaking = ServiceBuilder::new()
///     .layer(RetryLayer::new().with_cooldowns(cooldowns.clone()))
///     .service(hyper_client);
/// // A 503 answered to `lobby` now holds back `matchmaking` too.
/// assert_eq!(cooldowns.held(), 0);
/// # drop((lobby, matchmaking));
/// ```
#[derive(Clone)]
pub struct Cooldowns {
    gates: Arc<Mutex<HashMap<Key, Gate>>>,
    /// Whether `gates` may hold a gate: set with every gate made, cleared
    /// only by a purge that leaves none, both under its lock, so that the
    /// common case (no cooldown anywhere) takes no lock.
    any_gate: Arc<AtomicBool>,
    next_purge: Arc<Mutex<Instant>>,
    /// Generations are never reused, even by a new gate of a forgotten key,
    /// so an old ticket is good for nothing new.
    generations: Arc<AtomicU64>,
    max_keys: usize,
    release_spacing: Duration,
    #[cfg(feature = "redis")]
    store: Option<RedisStore>,
}

/// What a request may do now.
#[derive(Debug)]
pub(crate) enum Admission {
    /// No cooldown: go.
    Go,
    /// Go as the probe; report the answer through the guard.
    Probe(ProbeGuard),
    /// Wait until this instant, then ask again.
    WaitUntil(Instant),
    /// Released after a probe's success: ask again at this instant with
    /// the ticket, which lets the request through unless the gate was
    /// closed again meanwhile.
    GoAt(Instant, Ticket),
    /// Wait for the probe's answer, then ask again. The wait is registered
    /// before the lock is released, so the answer cannot be missed.
    WaitForProbe(Pin<Box<OwnedNotified>>),
    /// The cooldown ends at this instant, past the deadline.
    FailFast(Instant),
}

impl fmt::Debug for Cooldowns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cooldowns")
            .field("held", &self.held())
            .field("max_keys", &self.max_keys)
            .field("release_spacing", &self.release_spacing)
            .finish()
    }
}

impl Default for Cooldowns {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds [`Cooldowns`]; from [`Cooldowns::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CooldownsBuilder {
    max_keys: usize,
    release_spacing: Duration,
    #[cfg(feature = "redis")]
    store: Option<RedisStore>,
}

impl CooldownsBuilder {
    /// How many cooldown keys are held at most. Default 10,000: a 429 key
    /// per user, so room for a process acting for thousands of users at
    /// once, in a map of bounded size.
    pub fn max_keys(mut self, n: usize) -> Self {
        self.max_keys = n;
        self
    }

    /// How far apart the waiters of a cooldown are released after the
    /// probe succeeds. Default 50 ms: 32 queued callers reach the server
    /// over 1.6 s instead of in one burst.
    pub fn release_spacing(mut self, spacing: Duration) -> Self {
        self.release_spacing = spacing;
        self
    }

    /// Shares the cooldowns with every process given a store on the same
    /// Redis: one probe and one spaced release fleet-wide, and no call to
    /// Redis for a request meeting no cooldown (see
    /// [the fleet module](crate::fleet)). Default: none, each process
    /// keeps its own.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, store: RedisStore) -> Self {
        self.store = Some(store);
        self
    }

    /// New, empty cooldowns with these settings.
    pub fn build(self) -> Cooldowns {
        #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
        let mut cooldowns = Cooldowns::bounded(self.max_keys, self.release_spacing);
        #[cfg(feature = "redis")]
        {
            cooldowns.store = self.store;
        }
        cooldowns
    }
}

impl Cooldowns {
    /// New, empty cooldowns with the defaults: 10,000 keys, released 50 ms
    /// apart (see [`CooldownsBuilder`] for why).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for cooldowns with other settings.
    pub fn builder() -> CooldownsBuilder {
        CooldownsBuilder {
            max_keys: 10_000,
            release_spacing: Duration::from_millis(50),
            #[cfg(feature = "redis")]
            store: None,
        }
    }

    /// How many cooldown keys are held now (at most
    /// [`max_keys`](CooldownsBuilder::max_keys)), over every layer sharing
    /// them.
    pub fn held(&self) -> usize {
        self.len()
    }

    fn bounded(max_keys: usize, release_spacing: Duration) -> Self {
        Self {
            gates: Arc::new(Mutex::new(HashMap::new())),
            any_gate: Arc::new(AtomicBool::new(false)),
            next_purge: Arc::new(Mutex::new(Instant::now())),
            generations: Arc::new(AtomicU64::new(0)),
            max_keys,
            release_spacing,
            #[cfg(feature = "redis")]
            store: None,
        }
    }

    /// Asks the shared store, when there is one, what a request for `key`
    /// may do (see [`admit`](Self::admit)); when the store fails, the
    /// process's own state decides. No call when the store hears every
    /// cooldown closed and has heard of none for `key`: go. `None`
    /// without a store.
    #[cfg(feature = "redis")]
    pub(crate) fn admit_shared(
        &self,
        key: &Key,
        deadline: Instant,
        ticket: Option<Ticket>,
    ) -> Option<SharedAdmission> {
        let store = self.store.as_ref()?;
        let name = key.shared_name();
        if !store.must_ask(&name) {
            // Not heard of while listening: no cooldown in Redis.
            return Some(Box::pin(std::future::ready(Admission::Go)));
        }
        let limit = deadline.saturating_duration_since(Instant::now());
        let call = store.cooldown_admit(&name, ticket.map(|t| t.0), self.release_spacing, limit);
        let (cooldowns, store, key) = (self.clone(), store.clone(), key.clone());
        Some(Box::pin(async move {
            let answer = call.await;
            let now = Instant::now();
            let wait_until = |until: Instant| {
                if until > deadline {
                    Admission::FailFast(until)
                } else {
                    Admission::WaitUntil(until)
                }
            };
            match answer {
                None => cooldowns.admit(&key, now, deadline, ticket),
                Some(CooldownAdmission::Go) => Admission::Go,
                Some(CooldownAdmission::Probe { token, gen }) => Admission::Probe(ProbeGuard {
                    cooldowns,
                    key: None,
                    generation: gen,
                    lease: Some(Lease { store, name, token }),
                }),
                Some(CooldownAdmission::Wait(wait)) => wait_until(now + wait),
                Some(CooldownAdmission::GoAt(wait, _)) if now + wait > deadline => {
                    Admission::FailFast(now + wait)
                }
                Some(CooldownAdmission::GoAt(wait, gen)) => {
                    Admission::GoAt(now + wait, Ticket(gen))
                }
                // Another process probes: ask again shortly, or when its
                // lease ends, until the deadline.
                Some(CooldownAdmission::WaitForProbe(lease)) if now < deadline => {
                    Admission::WaitUntil((now + lease.min(PROBE_POLL)).min(deadline))
                }
                Some(CooldownAdmission::WaitForProbe(_)) => Admission::FailFast(now),
            }
        }))
    }
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Gate>> {
        // A panic elsewhere while holding the lock leaves a usable map.
        self.gates.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides what a request for `key` may do at `now`, given its deadline
    /// and the ticket it holds for this key, if any.
    pub(crate) fn admit(
        &self,
        key: &Key,
        now: Instant,
        deadline: Instant,
        ticket: Option<Ticket>,
    ) -> Admission {
        let mut gates = self.lock();
        let Some(gate) = gates.get_mut(key) else {
            return Admission::Go;
        };
        if ticket == Some(Ticket(gate.generation)) && now >= gate.until {
            return Admission::Go;
        }
        if now < gate.until {
            return if gate.until > deadline {
                Admission::FailFast(gate.until)
            } else {
                Admission::WaitUntil(gate.until)
            };
        }
        if let Some(next) = gate.next_release {
            // Releasing after a successful probe: one waiter per slot.
            if next > deadline {
                return Admission::FailFast(next);
            }
            if next > now {
                gate.next_release = Some(next + self.release_spacing);
                return Admission::GoAt(next, Ticket(gate.generation));
            }
            gates.remove(key);
            return Admission::Go;
        }
        if gate.probing {
            let mut answer = Box::pin(gate.notify.clone().notified_owned());
            answer.as_mut().enable();
            return Admission::WaitForProbe(answer);
        }
        gate.probing = true;
        Admission::Probe(ProbeGuard {
            cooldowns: self.clone(),
            key: Some(key.clone()),
            generation: gate.generation,
            #[cfg(feature = "redis")]
            lease: None,
        })
    }

    /// Closes the gate for `key` until `until` (extending, never shortening),
    /// here and in the shared store.
    pub(crate) fn close(&self, key: Key, until: Instant) {
        #[cfg(feature = "redis")]
        if let Some(store) = &self.store {
            let after = until.saturating_duration_since(Instant::now());
            crate::fleet::spawn(store.cooldown_close(&key.shared_name(), after));
        }
        let mut gates = self.lock();
        if !gates.contains_key(&key) && gates.len() >= self.max_keys {
            let now = Instant::now();
            gates.retain(|_, g| {
                g.probing || g.until > now || g.next_release.is_some_and(|n| n > now)
            });
            if gates.len() >= self.max_keys {
                return;
            }
        }
        #[cfg(feature = "metrics")]
        if gates.get(&key).map_or(true, |g| g.until <= Instant::now()) {
            crate::metrics::cooldown_started(key.0);
        }
        let gate = gates.entry(key).or_insert_with(|| Gate {
            until,
            probing: false,
            next_release: None,
            generation: 0,
            notify: Arc::new(Notify::new()),
        });
        gate.until = gate.until.max(until);
        gate.next_release = None;
        gate.generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.any_gate.store(true, Ordering::Release);
    }

    /// Whether no cooldown is held: the common case, which needs no keys.
    /// Settled gates are dropped here, at most once a second, so that one
    /// finished cooldown does not make every later request of other keys
    /// look its keys up.
    pub(crate) fn is_empty(&self) -> bool {
        let locally = self.purged_empty();
        #[cfg(feature = "redis")]
        if let Some(store) = &self.store {
            // Redis decides while it answers: ask unless this process
            // hears every cooldown closed and has heard of none in force.
            return store.cooldowns_quiet();
        }
        locally
    }

    /// Whether no gate is held here, once settled gates are dropped.
    fn purged_empty(&self) -> bool {
        if !self.any_gate.load(Ordering::Acquire) {
            return true;
        }
        let mut gates = self.lock();
        if !gates.is_empty() {
            let now = Instant::now();
            if now >= self.purge_at(now) {
                gates.retain(|_, g| !g.settled_by(now));
            }
        }
        let empty = gates.is_empty();
        if empty {
            self.any_gate.store(false, Ordering::Release);
        }
        empty
    }

    /// When the next purge of finished gates is due, moving it a second on
    /// when it is due now.
    fn purge_at(&self, now: Instant) -> Instant {
        let mut next = self.next_purge.lock().unwrap_or_else(|e| e.into_inner());
        let due = *next;
        if now >= due {
            *next = now + Duration::from_secs(1);
        }
        due
    }

    /// How many keys are held.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Held by the probe. Report its answer with [`ProbeGuard::closed_again`]
/// or [`ProbeGuard::opened`]; dropping it unreported hands the probe role
/// to a waiter.
#[derive(Debug)]
pub(crate) struct ProbeGuard {
    cooldowns: Cooldowns,
    key: Option<Key>,
    /// The gate's generation when the probe went: a success opens only
    /// that cooldown, not one another answer set while the probe was out.
    generation: u64,
    /// The probe lease, when the cooldown is kept in a shared store.
    #[cfg(feature = "redis")]
    lease: Option<Lease>,
}

/// A probe lease held in a shared store.
#[cfg(feature = "redis")]
#[derive(Debug)]
struct Lease {
    store: RedisStore,
    name: String,
    token: String,
}

impl ProbeGuard {
    /// Hands the shared lease back: `opened` starts the fleet's release;
    /// `closed_until` first extends the cooldown, in the same task, so that
    /// no process sees the lease gone before the new cooldown is in place.
    #[cfg(feature = "redis")]
    fn end_lease(&mut self, opened: bool, closed_until: Option<Instant>) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let close = closed_until.map(|until| {
            let after = until.saturating_duration_since(Instant::now());
            lease.store.cooldown_close(&lease.name, after)
        });
        let spacing = self.cooldowns.release_spacing;
        let probed =
            lease
                .store
                .cooldown_probed(&lease.name, lease.token, self.generation, opened, spacing);
        crate::fleet::spawn(async move {
            if let Some(close) = close {
                close.await;
            }
            probed.await
        });
    }

    #[cfg(not(feature = "redis"))]
    fn end_lease(&mut self, _opened: bool, _closed_until: Option<Instant>) {}
}

impl ProbeGuard {
    /// The probe was told to wait again: close the gate until `until`.
    pub(crate) fn closed_again(mut self, until: Instant) {
        self.end_lease(false, Some(until));
        if let Some(key) = self.key.take() {
            self.cooldowns.close(key.clone(), until);
            self.finish(&key, None);
        }
    }

    /// The probe got through: release the waiters, spaced out.
    pub(crate) fn opened(mut self, now: Instant) {
        self.end_lease(true, None);
        if let Some(key) = self.key.take() {
            let first = now + self.cooldowns.release_spacing;
            self.finish(&key, Some(first));
        }
    }

    /// Ends the probe and wakes the waiters, in one critical section so that
    /// no waiter can see the gate half settled.
    fn finish(&self, key: &Key, release_from: Option<Instant>) {
        let mut gates = self.cooldowns.lock();
        if let Some(gate) = gates.get_mut(key) {
            gate.probing = false;
            if release_from.is_some() && gate.generation == self.generation {
                gate.next_release = release_from;
            }
            gate.notify.notify_waiters();
        }
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.end_lease(false, None);
        if let Some(key) = self.key.take() {
            // The probe's caller went away: another waiter takes the role.
            self.finish(&key, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_then_a_spaced_release() {
        let c = Cooldowns::bounded(16, Duration::from_millis(50));
        let key = Key(Cause::Overloaded, "a".into());
        let t0 = Instant::now();
        assert!(matches!(c.admit(&key, t0, t0 + s(20), None), Admission::Go));
        c.close(key.clone(), t0 + s(5));
        assert!(
            matches!(c.admit(&key, t0, t0 + s(20), None), Admission::WaitUntil(t) if t == t0 + s(5))
        );
        assert!(
            matches!(c.admit(&key, t0, t0 + s(4), None), Admission::FailFast(t) if t == t0 + s(5))
        );
        let t5 = t0 + s(5);
        let Admission::Probe(probe) = c.admit(&key, t5, t0 + s(20), None) else {
            panic!()
        };
        let Admission::WaitForProbe(_) = c.admit(&key, t5, t0 + s(20), None) else {
            panic!()
        };
        probe.opened(t5);
        let ms = Duration::from_millis;
        assert!(
            matches!(c.admit(&key, t5, t0 + s(20), None), Admission::GoAt(t, _) if t == t5 + ms(50))
        );
        assert!(
            matches!(c.admit(&key, t5, t0 + s(20), None), Admission::GoAt(t, _) if t == t5 + ms(100))
        );
        assert!(matches!(
            c.admit(&key, t5 + ms(200), t0 + s(20), None),
            Admission::Go
        ));
        assert_eq!(c.len(), 0, "the gate is forgotten once released");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_hands_over_and_a_refused_probe_closes_again() {
        let c = Cooldowns::bounded(16, Duration::ZERO);
        let key = Key(Cause::Throttled, "a u".into());
        let t0 = Instant::now();
        c.close(key.clone(), t0);
        let Admission::Probe(probe) = c.admit(&key, t0, t0 + s(20), None) else {
            panic!()
        };
        drop(probe);
        let Admission::Probe(probe) = c.admit(&key, t0, t0 + s(20), None) else {
            panic!("role handed over")
        };
        probe.closed_again(t0 + s(3));
        assert!(
            matches!(c.admit(&key, t0, t0 + s(20), None), Admission::WaitUntil(t) if t == t0 + s(3))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_stops_when_the_gate_closes_again() {
        let ms = Duration::from_millis;
        let c = Cooldowns::bounded(16, ms(50));
        let key = Key(Cause::Overloaded, "a".into());
        let t0 = Instant::now();
        let deadline = t0 + s(20);
        c.close(key.clone(), t0);
        let Admission::Probe(probe) = c.admit(&key, t0, deadline, None) else {
            panic!()
        };
        probe.opened(t0);
        let Admission::GoAt(t1, first) = c.admit(&key, t0, deadline, None) else {
            panic!()
        };
        let Admission::GoAt(t2, second) = c.admit(&key, t0, deadline, None) else {
            panic!()
        };
        // The first released request's slot comes: its ticket lets it go.
        assert!(matches!(
            c.admit(&key, t1, deadline, Some(first)),
            Admission::Go
        ));
        // It is told to wait again: the second's ticket is void.
        c.close(key.clone(), t1 + s(5));
        assert!(matches!(
            c.admit(&key, t2, deadline, Some(second)),
            Admission::WaitUntil(t) if t == t1 + s(5)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_release_is_forgotten_without_another_request_of_its_key() {
        let c = Cooldowns::bounded(16, Duration::from_millis(50));
        let key = Key(Cause::Throttled, "a u".into());
        let t0 = Instant::now();
        c.close(key.clone(), t0 + s(1));
        assert!(!c.is_empty(), "a cooldown in force");
        tokio::time::advance(s(1)).await;
        let Admission::Probe(probe) = c.admit(&key, t0 + s(1), t0 + s(20), None) else {
            panic!()
        };
        probe.opened(t0 + s(1));
        assert!(
            !c.is_empty(),
            "released, but a slot may still be handed out"
        );
        tokio::time::advance(s(2)).await;
        assert!(c.is_empty(), "the release is over");
        assert_eq!(c.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_success_does_not_open_a_gate_closed_again_meanwhile() {
        let c = Cooldowns::bounded(16, Duration::from_millis(50));
        let key = Key(Cause::Overloaded, "a".into());
        let t0 = Instant::now();
        let deadline = t0 + s(100);
        c.close(key.clone(), t0 + s(1));
        let Admission::Probe(probe) = c.admit(&key, t0 + s(1), deadline, None) else {
            panic!()
        };
        // A slow request sent earlier answers 503, Retry-After: 30 ...
        c.close(key.clone(), t0 + s(31));
        // ... then the probe answers 200.
        probe.opened(t0 + s(2));
        let t31 = t0 + s(31);
        // Held together, as three callers in flight would hold them.
        let admitted: Vec<Admission> = (0..3).map(|_| c.admit(&key, t31, deadline, None)).collect();
        let went = admitted
            .iter()
            .filter(|a| matches!(a, Admission::Go | Admission::Probe(_)))
            .count();
        assert_eq!(went, 1, "one probe after the second cooldown, not a herd");
    }

    #[tokio::test(start_paused = true)]
    async fn a_ticket_of_a_forgotten_gate_is_not_good_for_a_new_one() {
        let c = Cooldowns::bounded(16, Duration::from_millis(50));
        let key = Key(Cause::Throttled, "a u".into());
        let t0 = Instant::now();
        let deadline = t0 + s(100);
        c.close(key.clone(), t0);
        let Admission::Probe(probe) = c.admit(&key, t0, deadline, None) else {
            panic!()
        };
        probe.opened(t0);
        let Admission::GoAt(_, ticket) = c.admit(&key, t0, deadline, None) else {
            panic!()
        };
        assert!(matches!(
            c.admit(&key, t0 + s(1), deadline, None),
            Admission::Go
        ));
        assert_eq!(c.len(), 0);
        c.close(key.clone(), t0 + s(2));
        let Admission::Probe(_p) = c.admit(&key, t0 + s(3), deadline, None) else {
            panic!()
        };
        let late = c.admit(&key, t0 + s(3), deadline, Some(ticket));
        assert!(matches!(late, Admission::WaitForProbe(_)), "{late:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cooldown_nobody_came_back_to_is_forgotten_after_a_minute() {
        let c = Cooldowns::bounded(16, Duration::from_millis(50));
        c.close(Key(Cause::Throttled, "a u".into()), Instant::now() + s(1));
        tokio::time::advance(s(30)).await;
        assert!(!c.is_empty(), "its next request is still the probe");
        tokio::time::advance(s(32)).await;
        assert!(c.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_map_is_bounded() {
        let c = Cooldowns::bounded(2, Duration::ZERO);
        let t0 = Instant::now();
        for i in 0..10 {
            c.close(Key(Cause::Overloaded, i.to_string()), t0 + s(1));
        }
        assert_eq!(c.len(), 2);
        tokio::time::advance(s(2)).await;
        c.close(Key(Cause::Overloaded, "late".into()), Instant::now() + s(1));
        assert_eq!(c.len(), 1, "expired gates are forgotten to make room");
    }
}
