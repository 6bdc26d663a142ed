use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Request, Response, Uri};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::future::ResponseFuture;
use super::limits::{Limits, Pattern, Table};
use crate::backoff::Cause;
use crate::error::{Refused, RefusedBy};
use crate::logical::LogicalRequest;
use crate::retry::default_cooldown_key;
use crate::BoxError;

/// Gives the pacing key of a request, or `None` to let it through unpaced.
/// See [`PaceLayer::key`].
pub type PaceKeyFn = Arc<dyn Fn(&Uri, &HeaderMap) -> Option<String> + Send + Sync>;

/// The default pacing key: the authority and the `XBL3.0 x=<userhash>`
/// user, the same key as the 429 cooldown of
/// [`RetryLayer`](crate::retry::RetryLayer), since MPSD counts each user
/// apart. A request without a user is not paced (MPSD refuses it anyway).
pub fn default_pace_key(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    default_cooldown_key(Cause::Throttled, uri, headers)
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

/// Settings of a [`PaceLayer`].
#[derive(Clone)]
struct Config {
    limits: Limits,
    routes: Vec<Route>,
    margin: Duration,
    max_wait: Duration,
    max_keys: usize,
    key: PaceKeyFn,
}

/// Adds [`Pace`] to a stack. Clones share the limiter (every key's send
/// times); the setters that change what it counts (`limits`, `route`,
/// `no_routes`, `margin`, `max_keys`), called on a clone, give that clone a
/// new, unshared limiter. `max_wait` and `key` keep the shared one.
#[derive(Clone)]
#[must_use]
pub struct PaceLayer {
    config: Config,
    table: Arc<Mutex<Table>>,
}

impl fmt::Debug for PaceLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaceLayer")
            .field("limits", &self.config.limits)
            .field("routes", &self.config.routes)
            .field("margin", &self.config.margin)
            .field("max_wait", &self.config.max_wait)
            .field("max_keys", &self.config.max_keys)
            .finish_non_exhaustive()
    }
}

impl Default for PaceLayer {
    fn default() -> Self {
        Self::new()
    }
}

/// The route every new layer has: handle queries.
const HANDLE_QUERY: &str = "POST /handles/query";

impl PaceLayer {
    /// A layer with the defaults documented in [the module](crate::pace):
    /// MPSD's limits for every request, handle queries' limits on
    /// `POST /handles/query` as well, a 100 ms margin, a 20 s longest
    /// wait, 10,000 keys.
    pub fn new() -> Self {
        let config = Config {
            limits: Limits::mpsd(),
            routes: Vec::new(),
            margin: Duration::from_millis(100),
            max_wait: Duration::from_secs(20),
            max_keys: 10_000,
            key: Arc::new(default_pace_key),
        };
        Self {
            table: Arc::new(Mutex::new(table(&config))),
            config,
        }
        .route(HANDLE_QUERY, Limits::mpsd_handle_query())
    }

    fn rebuilt(mut self) -> Self {
        self.table = Arc::new(Mutex::new(table(&self.config)));
        self
    }

    /// The limits every request is paced by. Default [`Limits::mpsd`]:
    /// the service's documented 30 per 15 s and 300 per 300 s per user.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self.rebuilt()
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
        self.config.routes.retain(|r| r.pattern != parsed);
        self.config.routes.push(Route {
            text: pattern.trim().to_owned(),
            pattern: parsed,
            limits,
        });
        self.rebuilt()
    }

    /// Removes every route, the default one for handle queries included.
    pub fn no_routes(mut self) -> Self {
        self.config.routes.clear();
        self.rebuilt()
    }

    /// Time added to each window's period before a slot counts as open.
    /// Default 100 ms: MPSD counts a request when it arrives and the
    /// limiter when it leaves, so jitter in network latency could bring two
    /// sends a period apart within one window at the service; 100 ms costs
    /// under 1 % of the burst rate and 0.04 % of the sustain rate.
    /// `Duration::ZERO` matches the service's windows exactly.
    pub fn margin(mut self, margin: Duration) -> Self {
        self.config.margin = margin;
        self.rebuilt()
    }

    /// The longest a request waits for its slot when no outer layer of
    /// this crate has set a deadline (a [`LogicalRequest`] in its
    /// extensions, whose deadline holds instead). Default 20 s: the retry
    /// layer's deadline, Microsoft's SDK's retry window; to a caller a wait
    /// for a slot is no different from a wait for a retry. A request whose
    /// slot is further off fails at once with [`Refused`].
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.config.max_wait = max_wait;
        self
    }

    /// What requests are paced by: requests with the same key share the
    /// windows, `None` lets a request through unpaced. Default
    /// [`default_pace_key`] (authority and user).
    pub fn key<F>(mut self, key: F) -> Self
    where
        F: Fn(&Uri, &HeaderMap) -> Option<String> + Send + Sync + 'static,
    {
        self.config.key = Arc::new(key);
        self
    }

    /// How many keys are remembered at most. Default 10,000, as for the
    /// retry layer's cooldowns. Keys whose windows have drained are
    /// forgotten first; if none has, the least recently sent one is (its
    /// next requests may then be throttled by the service). Memory per key
    /// is at most the larger `max` of its windows in instants.
    pub fn max_keys(mut self, n: usize) -> Self {
        self.config.max_keys = n;
        self.rebuilt()
    }
}

fn table(config: &Config) -> Table {
    Table::new(
        config.limits,
        config.routes.iter().map(|r| r.limits).collect(),
        config.margin,
        config.max_keys,
    )
}

impl<S> Layer<S> for PaceLayer {
    type Service = Pace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Pace {
            inner,
            config: Arc::new(self.config.clone()),
            table: self.table.clone(),
        }
    }
}

/// Paces requests so that each key stays within MPSD's rate limits; see
/// [`PaceLayer`]. Clones share the limiter.
#[derive(Clone)]
pub struct Pace<S> {
    inner: S,
    config: Arc<Config>,
    table: Arc<Mutex<Table>>,
}

impl<S> Pace<S> {
    crate::macros::define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for Pace<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pace")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Pace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(key) = (self.config.key)(req.uri(), req.headers()) else {
            return ResponseFuture::calling(self.inner.call(req));
        };
        let matched: Vec<usize> = self
            .config
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.pattern.matches(req.method(), req.uri()))
            .map(|(i, _)| i)
            .collect();
        let now = Instant::now();
        let deadline = match req.extensions().get::<LogicalRequest>() {
            Some(logical) => logical.deadline(),
            // A `max_wait` too large for the clock means "no limit".
            None => now
                .checked_add(self.config.max_wait)
                .unwrap_or(far_future(now)),
        };
        let reserved = self
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reserve(&key, &matched, now, deadline);
        match reserved {
            Ok(slot) if slot <= now => ResponseFuture::calling(self.inner.call(req)),
            Ok(slot) => {
                tracing::debug!(wait = ?(slot - now), "mpsd pace: waiting for a slot");
                // The ready service waits with the request; a clone takes its place.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::waiting(slot, inner, req)
            }
            Err(slot) => {
                let attempts = req
                    .extensions()
                    .get::<LogicalRequest>()
                    .map_or(0, LogicalRequest::attempts);
                ResponseFuture::failed(Refused::new(RefusedBy::Pace, slot - now, attempts))
            }
        }
    }
}

/// About thirty years on: further than any deadline this crate sets.
fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(86_400 * 365 * 30)
}
