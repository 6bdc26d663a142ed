//! The pace table handle: what requests are paced by, and every key's send
//! times, shared by the layers given it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{HeaderMap, Method, Response, StatusCode, Uri};
use tokio::time::Instant;

use super::limits::{Limits, Pattern, Table};
use crate::classify::Outcome;
#[cfg(feature = "redis")]
use crate::fleet::{PaceReservation, RedisStore};
use crate::rules::identity::user_key;
use crate::rules::retry_after;

/// Gives the pacing key of a request, or `None` to let it through unpaced.
/// See [`PaceTableBuilder::key`].
pub type PaceKeyFn = Arc<dyn Fn(&Uri, &HeaderMap) -> Option<String> + Send + Sync>;

/// The default pacing key: the authority and the `XBL3.0 x=<userhash>`
/// user ([`user_key`]), the same key as the 429 cooldown of
/// [`RetryLayer`](crate::retry::RetryLayer), since MPSD counts each user
/// apart. A request without a user is not paced (MPSD refuses it anyway).
pub fn default_pace_key(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    user_key(uri, headers)
}

#[derive(Clone)]
struct Route {
    text: String,
    pattern: Pattern,
    limits: Limits,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("pattern", &self.text)
            .field("limits", &self.limits)
            .finish()
    }
}

/// What a table counts, fixed when it is built.
#[derive(Clone)]
struct Rules {
    limits: Limits,
    routes: Vec<Route>,
    margin: Duration,
    max_keys: usize,
    key: PaceKeyFn,
    #[cfg(feature = "redis")]
    store: Option<RedisStore>,
}

/// What a [`PaceTable`] has done, over every layer sharing it.
#[derive(Debug, Default)]
pub struct PaceStats {
    waits: AtomicU64,
    refusals: AtomicU64,
    throttled: AtomicU64,
}

impl PaceStats {
    /// Requests that waited for their slot.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Requests refused because their slot was past their deadline.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// 429 answers seen by the pace layers (each pushed its key's next
    /// slot back; see [`PaceTable`]).
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
}

/// The pacing state of one or more [`PaceLayer`](super::PaceLayer)s: the
/// limits, routes, margin and key function, and every key's recent send
/// times, which the windows are counted over.
///
/// A cheap handle: clones share one table. A `PaceLayer` made with
/// [`new`](super::PaceLayer::new) makes its own; its clones, and the
/// services they make, share it. MPSD counts a user's requests wherever
/// they come from, so two stacks of one process acting for the same users
/// should be given one table with
/// [`PaceLayer::with_table`](super::PaceLayer::with_table): together they
/// then stay within the user's windows. Its settings are fixed when it is
/// built ([`PaceTable::builder`]).
///
/// # Learning from 429
///
/// A 429 that reaches a pace layer anyway (its limits set too high, or
/// other clients of the same user) holds its key back: no slot before the
/// answer's `Retry-After` (at most a day, as for cooldowns), or, without one, before the window the 429
/// body names has passed when it says the window is full
/// ([`RateLimitInfo::full_for`]). The body's fields come from the
/// response's [`Outcome`], where
/// [`ClassifyLayer`](crate::classify::ClassifyLayer), innermost in
/// [`MpsdLayer`](crate::MpsdLayer), puts them for a 429 body of at most
/// [`THROTTLED_BODY_CAP`](crate::classify::THROTTLED_BODY_CAP) bytes.
/// Counted in [`PaceStats::throttled`].
///
/// [`RateLimitInfo::full_for`]: crate::rules::rate_limit::RateLimitInfo::full_for
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// # use tower::service_fn;
/// use tower_mpsd::pace::{PaceLayer, PaceTable};
///
/// # let hyper_client = service_fn(|_req: http::Request<http_body_util::Full<bytes::Bytes>>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::<bytes::Bytes>::default()))
/// # });
/// // One table for both clients of this process.
/// let table = PaceTable::builder().margin(Duration::from_millis(200)).build();
/// let lobby = ServiceBuilder::new()
///     .layer(PaceLayer::with_table(table.clone()))
///     .service(hyper_client.clone());
/// let matchmaking = ServiceBuilder::new()
///     .layer(PaceLayer::with_table(table))
///     .service(hyper_client);
/// // A user's requests through `lobby` and `matchmaking` count in one
/// // burst window and one sustain window.
/// # drop((lobby, matchmaking));
/// ```
#[derive(Clone)]
pub struct PaceTable {
    inner: Arc<Inner>,
}

/// Behind one `Arc`: a request's future holds the table at the cost of
/// one reference count.
struct Inner {
    rules: Rules,
    table: Mutex<Table>,
    stats: PaceStats,
}

impl fmt::Debug for PaceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaceTable")
            .field("limits", &self.inner.rules.limits)
            .field("routes", &self.inner.rules.routes)
            .field("margin", &self.inner.rules.margin)
            .field("max_keys", &self.inner.rules.max_keys)
            .finish_non_exhaustive()
    }
}

impl Default for PaceTable {
    fn default() -> Self {
        Self::new()
    }
}

/// The route every new table has: handle queries.
const HANDLE_QUERY: &str = "POST /handles/query";

impl PaceTable {
    /// A new, empty table with the defaults documented on
    /// [`PaceTableBuilder`]: MPSD's limits for every request, handle
    /// queries' limits on `POST /handles/query` as well, a 100 ms margin,
    /// 10,000 keys, keyed by [`default_pace_key`].
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a table with other settings, starting from the
    /// defaults.
    pub fn builder() -> PaceTableBuilder {
        PaceTableBuilder {
            rules: Rules {
                limits: Limits::mpsd(),
                routes: Vec::new(),
                margin: Duration::from_millis(100),
                max_keys: 10_000,
                key: Arc::new(default_pace_key),
                #[cfg(feature = "redis")]
                store: None,
            },
        }
        .route(HANDLE_QUERY, Limits::mpsd_handle_query())
    }

    /// The pacing key of a request, or `None` when it is not paced.
    pub(crate) fn key(&self, uri: &Uri, headers: &HeaderMap) -> Option<String> {
        (self.inner.rules.key)(uri, headers)
    }

    /// What this table has done: waits, refusals, 429s seen.
    pub fn stats(&self) -> &PaceStats {
        &self.inner.stats
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic elsewhere while holding the lock leaves a usable table.
        self.inner.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The indexes of the routes a request matches.
    fn matched(&self, method: &Method, uri: &Uri) -> Vec<usize> {
        self.inner
            .rules
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.pattern.matches(method, uri))
            .map(|(i, _)| i)
            .collect()
    }

    /// Takes the earliest slot for a request of `key`, counting it in the
    /// general windows and those of every route it matches, when that slot
    /// is no later than `deadline`: `Ok(slot)`; otherwise takes nothing,
    /// `Err(slot)`.
    pub(crate) fn reserve(
        &self,
        key: &str,
        method: &Method,
        uri: &Uri,
        now: Instant,
        deadline: Instant,
    ) -> Result<Instant, Instant> {
        let matched = self.matched(method, uri);
        let reserved = self.lock().reserve(key, &matched, now, deadline);
        self.count(&reserved, now);
        reserved
    }

    /// Counts a decision in the stats.
    fn count(&self, reserved: &Result<Instant, Instant>, now: Instant) {
        match reserved {
            Ok(slot) if *slot > now => bump(&self.inner.stats.waits),
            Ok(_) => {}
            Err(_) => bump(&self.inner.stats.refusals),
        }
    }

    /// Reads a response for what it says about `key`'s windows: a 429
    /// holds the key back (see [Learning from 429](#learning-from-429)).
    pub(crate) fn learn<B>(&self, key: &str, res: &Response<B>) {
        if res.status() != StatusCode::TOO_MANY_REQUESTS {
            return;
        }
        bump(&self.inner.stats.throttled);
        let Some(wait) = throttled_for(res) else {
            return;
        };
        // Not capped at the longest window: limits set shorter than the
        // service's are what learning is for.
        let wait = wait.min(crate::rules::retry_after::MAX_HOLD);
        let now = Instant::now();
        self.lock().learn(key, now + wait, now);
        tracing::debug!(?wait, "mpsd pace: a 429 holds the key back");
        #[cfg(feature = "redis")]
        if let Some(store) = &self.inner.rules.store {
            crate::fleet::spawn(store.pace_learn(key, wait));
        }
    }

    /// The shared store, when the table has one.
    #[cfg(feature = "redis")]
    pub(crate) fn store(&self) -> Option<&RedisStore> {
        self.inner.rules.store.as_ref()
    }

    /// As [`reserve`](Self::reserve), in the shared store: one script call;
    /// when it fails, by this process's own windows. A slot reserved in the
    /// store is counted here too, so that a fallback starts from this
    /// process's own sends.
    #[cfg(feature = "redis")]
    pub(crate) fn reserve_shared(
        &self,
        store: &RedisStore,
        key: String,
        method: &Method,
        uri: &Uri,
        now: Instant,
        deadline: Instant,
    ) -> impl std::future::Future<Output = Result<Instant, Instant>> + Send + 'static {
        let matched = self.matched(method, uri);
        let routes: Vec<(&str, Limits)> = matched
            .iter()
            .map(|&i| {
                (
                    self.inner.rules.routes[i].text.as_str(),
                    self.inner.rules.routes[i].limits,
                )
            })
            .collect();
        let limit = deadline.saturating_duration_since(now);
        let rules = &self.inner.rules;
        // Just back from a fallback, Redis may not know what the fleet
        // sent meanwhile: for the longest window, keep to this process's
        // share as well.
        let hold = routes
            .iter()
            .map(|(_, l)| l.longest())
            .fold(rules.limits.longest(), Duration::max)
            + rules.margin;
        let senders = self.lock().senders(&key);
        // Taken here first, so that concurrent requests each take their
        // own slot of the share; Redis then reserves no earlier.
        let held = store.share_since_resumed(hold, senders).map(|members| {
            self.lock()
                .reserve_share(&key, &matched, now, deadline, members)
        });
        let earliest = match held {
            Some(Ok(slot)) => slot - now,
            _ => Duration::ZERO,
        };
        let call = store.pace_reserve(&key, rules.limits, &routes, rules.margin, earliest, limit);
        let share = store.share(senders);
        let table = self.clone();
        async move {
            if let Some(Err(slot)) = held {
                // Past the deadline by the share alone: no call.
                return table.counted(Err(slot), now);
            }
            let reserved = match (call.await, held) {
                (Some((PaceReservation::Reserved(wait), senders)), _) => {
                    let now = Instant::now();
                    let mut local = table.lock();
                    if held.is_none() {
                        local.record(&key, &matched, now + wait, now);
                    }
                    local.note_senders(&key, senders);
                    Ok(now + wait)
                }
                (Some((PaceReservation::Refused(wait), senders)), _) => {
                    table.lock().note_senders(&key, senders);
                    Err(Instant::now() + wait)
                }
                // Redis is away again: the slot of the share taken here.
                (None, Some(local)) => local,
                (None, None) => {
                    // Redis is away: this process's share of the windows.
                    let now = Instant::now();
                    let reserved = table
                        .lock()
                        .reserve_share(&key, &matched, now, deadline, share);
                    return table.counted(reserved, now);
                }
            };
            table.counted(reserved, now)
        }
    }

    #[cfg(feature = "redis")]
    fn counted(
        &self,
        reserved: Result<Instant, Instant>,
        now: Instant,
    ) -> Result<Instant, Instant> {
        self.count(&reserved, now);
        reserved
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// How long a 429 says its key's window stays full: its `Retry-After`, or,
/// when its body says the window is full, the window's period (the body's
/// fields are in the [`Outcome`] when [`ClassifyLayer`] read them).
///
/// [`ClassifyLayer`]: crate::classify::ClassifyLayer
fn throttled_for<B>(res: &Response<B>) -> Option<Duration> {
    let outcome = Outcome::of(res);
    let hint = outcome
        .and_then(|o| o.retry_after())
        .or_else(|| retry_after::delay(res.headers(), std::time::SystemTime::now()));
    let full_window = match outcome {
        Some(Outcome::TooManyRequests {
            rate_limit: Some(info),
            ..
        }) => info.full_for(),
        _ => None,
    };
    hint.or(full_window)
}

/// Builds a [`PaceTable`]; from [`PaceTable::builder`]. Every setting here
/// decides what the table counts, so it is fixed once the table is built.
#[must_use]
pub struct PaceTableBuilder {
    rules: Rules,
}

impl fmt::Debug for PaceTableBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaceTableBuilder")
            .field("limits", &self.rules.limits)
            .field("routes", &self.rules.routes)
            .field("margin", &self.rules.margin)
            .field("max_keys", &self.rules.max_keys)
            .finish_non_exhaustive()
    }
}

impl PaceTableBuilder {
    /// The limits every request is paced by. Default [`Limits::mpsd`]:
    /// the service's documented 30 per 15 s and 300 per 300 s per user.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.rules.limits = limits;
        self
    }

    /// Adds limits for the requests that match `pattern`, on top of
    /// [`limits`](Self::limits): such a request waits for a slot in both,
    /// and counts in both. A pattern is `"[METHOD ]/segment/..."`, its
    /// segments matched ASCII case-insensitively, `*` matching any one
    /// segment; the query string is ignored. The same pattern again
    /// replaces its limits.
    ///
    /// By default `"POST /handles/query"` has [`Limits::mpsd_handle_query`]
    /// (1 per 15 s, 20 per 300 s: the documented limits of handle queries).
    /// MPSD's docs do not say whether handle queries also count against
    /// the general limits; counting them in both cannot cause a 429 and
    /// costs at most 20 general slots per 300 s.
    ///
    /// # Panics
    ///
    /// When `pattern` does not have that form (no leading `/`, a query
    /// string, or an invalid method).
    #[track_caller]
    pub fn route(mut self, pattern: &str, limits: Limits) -> Self {
        // Not `unwrap_or_else`: the panic must point at the caller.
        let Some(parsed) = Pattern::parse(pattern) else {
            panic!("invalid pace route pattern {pattern:?}");
        };
        self.rules.routes.retain(|r| r.pattern != parsed);
        self.rules.routes.push(Route {
            text: pattern.trim().to_owned(),
            pattern: parsed,
            limits,
        });
        self
    }

    /// Removes every route, the default one for handle queries included.
    pub fn no_routes(mut self) -> Self {
        self.rules.routes.clear();
        self
    }

    /// Time added to each window's period before a slot counts as open.
    /// Default 100 ms: MPSD counts a request when it arrives and the
    /// limiter when it leaves, so jitter in network latency could bring two
    /// sends a period apart within one window at the service; 100 ms costs
    /// under 1 % of the burst rate and 0.04 % of the sustain rate.
    /// `Duration::ZERO` matches the service's windows exactly.
    pub fn margin(mut self, margin: Duration) -> Self {
        self.rules.margin = margin;
        self
    }

    /// What requests are paced by: requests with the same key share the
    /// windows, `None` lets a request through unpaced. Default
    /// [`default_pace_key`] (authority and user).
    pub fn key<F>(mut self, key: F) -> Self
    where
        F: Fn(&Uri, &HeaderMap) -> Option<String> + Send + Sync + 'static,
    {
        self.rules.key = Arc::new(key);
        self
    }

    /// How many keys are remembered at most. Default 10,000, as for the
    /// retry layer's cooldowns. Keys whose windows have drained are
    /// forgotten first; if none has, the least recently sent one is (its
    /// next requests may then be throttled by the service). Memory per key
    /// is at most the larger `max` of its windows in instants.
    pub fn max_keys(mut self, n: usize) -> Self {
        self.rules.max_keys = n;
        self
    }

    /// Shares the windows with every process given a store on the same
    /// Redis: see [the fleet module](crate::fleet). Default: none, each
    /// process counts its own requests.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, store: RedisStore) -> Self {
        self.rules.store = Some(store);
        self
    }

    /// A new, empty table with these settings.
    pub fn build(self) -> PaceTable {
        let rules = self.rules;
        let table = Table::new(
            rules.limits,
            rules.routes.iter().map(|r| r.limits).collect(),
            rules.margin,
            rules.max_keys,
        );
        PaceTable {
            inner: Arc::new(Inner {
                rules,
                table: Mutex::new(table),
                stats: PaceStats::default(),
            }),
        }
    }
}
