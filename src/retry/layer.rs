use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, Uri};
use tower::{Layer, Service};

use super::budget::RetryBudget;
use super::cooldown::Cooldowns;
use super::future::{ResponseFuture, Shared};
use super::stats::RetryStats;
use crate::logical::LogicalLayer;
use crate::rules::backoff::{Backoff, Cause};
use crate::rules::identity::user_key;
use crate::BoxError;

/// Gives the cooldown key of a request for a cause (503 or 429), or `None`
/// for no shared cooldown. See [`RetryLayer::cooldown_key`].
pub type KeyFn = Arc<dyn Fn(Cause, &Uri, &HeaderMap) -> Option<String> + Send + Sync>;

/// Settings of a [`RetryLayer`].
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) backoff: Backoff,
    pub(crate) safe_to_repeat: fn(&Method) -> bool,
    pub(crate) min_attempt_time: Duration,
    /// Which causes this layer retries: 503, 429, transient failures.
    pub(crate) causes: [bool; 3],
    pub(crate) key: KeyFn,
    /// The limits of the logical request this layer makes when a request
    /// comes without one: [`LogicalLayer::default`]'s, or, on top of
    /// [`MpsdLayer`](crate::MpsdLayer)'s stack, the stack's.
    pub(crate) limits: LogicalLayer,
    /// Whether a logical request this layer makes is kept to itself,
    /// inline in its future, rather than shared through the request's
    /// extensions: set by `MpsdLayer` when no layer but the classify layer
    /// is below this one.
    pub(crate) keep_context: bool,
}

impl Config {
    pub(crate) fn handles(&self, cause: Cause) -> bool {
        match cause {
            Cause::Overloaded => self.causes[0],
            Cause::Throttled => self.causes[1],
            _ => self.causes[2],
        }
    }
}

/// The default cooldown keys: the authority for 503 (the service as a
/// whole is overloaded), the authority and the `XBL3.0 x=<userhash>` user
/// for 429 (MPSD throttles each user apart); no 429 cooldown without a user.
pub fn default_cooldown_key(cause: Cause, uri: &Uri, headers: &HeaderMap) -> Option<String> {
    match cause {
        Cause::Overloaded => Some(uri.authority().map_or("", |a| a.as_str()).to_owned()),
        Cause::Throttled => user_key(uri, headers),
        _ => None,
    }
}

/// Adds [`Retry`] to a stack. Clones share the cooldowns, the budget and
/// the counters. A new layer makes its own cooldowns and budget; to share
/// them with other stacks, pass them in with
/// [`with_cooldowns`](Self::with_cooldowns) and
/// [`with_budget`](Self::with_budget). No setter replaces them behind the
/// caller's back.
#[derive(Clone)]
#[must_use]
pub struct RetryLayer {
    config: Config,
    budget: Arc<RetryBudget>,
    cooldowns: Cooldowns,
    stats: Arc<RetryStats>,
}

impl fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("backoff", &self.config.backoff)
            .field("causes", &self.config.causes)
            .field("cooldowns", &self.cooldowns)
            .finish_non_exhaustive()
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a request of `method` is safe to repeat after a failure the
/// server may have applied: the methods that change nothing.
fn safe_to_repeat(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl RetryLayer {
    /// A layer retrying 503, 429 and (when safe to repeat) transient
    /// failures, with the defaults documented in [the module](crate::retry).
    pub fn new() -> Self {
        Self::with_causes([true; 3])
    }

    /// A layer for 503 and transient failures only (408, 500, 502, 504,
    /// errors, refused HTTP/2 streams), with a cooldown per authority. Stack it with
    /// [`RetryLayer::throttled`] for the same behaviour as [`RetryLayer::new`]
    /// in two layers, sharing one deadline and attempt count.
    pub fn overloaded() -> Self {
        Self::with_causes([true, false, true])
    }

    /// A layer for 429 only, with a cooldown per authority and user.
    pub fn throttled() -> Self {
        Self::with_causes([false, true, false])
    }

    fn with_causes(causes: [bool; 3]) -> Self {
        Self {
            config: Config {
                backoff: Backoff::default(),
                safe_to_repeat,
                min_attempt_time: Duration::from_secs(5),
                causes,
                key: Arc::new(default_cooldown_key),
                limits: LogicalLayer::default(),
                keep_context: false,
            },
            budget: Arc::new(RetryBudget::default()),
            cooldowns: Cooldowns::new(),
            stats: Arc::new(RetryStats::default()),
        }
    }

    /// The backoff rules, including the longest single wait (default 60 s).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Uses `budget` for this layer's retries, in place of the one it made:
    /// every layer given the same `Arc` draws on one budget. Shared by every
    /// clone of this layer. Default: a new [`RetryBudget`] of 10 retries per
    /// second plus 20 % of requests, over 10 s (tower's own defaults).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tower_mpsd::retry::{RetryBudget, RetryLayer};
    ///
    /// let budget = Arc::new(RetryBudget::new(Duration::from_secs(10), 1, 0.1));
    /// let lobby = RetryLayer::new().with_budget(budget.clone());
    /// let matchmaking = RetryLayer::new().with_budget(budget);
    /// # drop((lobby, matchmaking));
    /// ```
    pub fn with_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// Uses `cooldowns` in place of the ones this layer made, so that it
    /// shares them with every layer given the same handle (see
    /// [`Cooldowns`] for an example with two stacks). Shared by every
    /// clone of this layer. Default: new [`Cooldowns`] (10,000 keys,
    /// released 50 ms apart).
    pub fn with_cooldowns(mut self, cooldowns: Cooldowns) -> Self {
        self.cooldowns = cooldowns;
        self
    }

    /// The cooldowns this layer uses: a handle to give to other layers.
    pub fn cooldowns(&self) -> &Cooldowns {
        &self.cooldowns
    }

    /// Which methods are safe to repeat, and so retried after 408, 500,
    /// 502, 504 or an error, any of which the server may have applied.
    /// Default: GET, HEAD and OPTIONS, which change nothing.
    pub fn safe_to_repeat(mut self, methods: fn(&Method) -> bool) -> Self {
        self.config.safe_to_repeat = methods;
        self
    }

    /// An attempt still unanswered at the deadline is abandoned with
    /// [`AttemptTimedOut`](super::AttemptTimedOut), but never before it has
    /// had this long. Default 5 s: the shortest attempt timeout of
    /// Microsoft's SDK.
    pub fn min_attempt_time(mut self, floor: Duration) -> Self {
        self.config.min_attempt_time = floor;
        self
    }

    /// What a request's cooldown is keyed by, for each cause (503 or 429).
    /// Requests with the same key share one cooldown; `None` opts a request
    /// out. Default: [`default_cooldown_key`].
    pub fn cooldown_key<F>(mut self, key: F) -> Self
    where
        F: Fn(Cause, &Uri, &HeaderMap) -> Option<String> + Send + Sync + 'static,
    {
        self.config.key = Arc::new(key);
        self
    }

    /// How many cooldown keys are held now by this layer's cooldowns
    /// (at most their [`max_keys`](super::CooldownsBuilder::max_keys)),
    /// over every layer sharing them: [`Cooldowns::held`].
    pub fn cooldowns_held(&self) -> usize {
        self.cooldowns.held()
    }

    /// This layer, making the logical request of a request that comes
    /// without one with `limits`, and keeping it in its future when
    /// `keep` (see [`Config::keep_context`]).
    pub(crate) fn making_context(mut self, limits: LogicalLayer, keep: bool) -> Self {
        self.config.limits = limits;
        self.config.keep_context = keep;
        self
    }

    /// The counters of this layer, its clones and every service they made.
    pub fn stats(&self) -> Arc<RetryStats> {
        self.stats.clone()
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            shared: Arc::new(Shared {
                config: self.config.clone(),
                budget: self.budget.clone(),
                cooldowns: self.cooldowns.clone(),
                stats: self.stats.clone(),
            }),
        }
    }
}

/// Retries MPSD requests; see [`RetryLayer`].
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Retry<S> {
    crate::macros::define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Retry<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    ReqBody: Clone,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The ready service goes with the first attempt; a clone takes its
        // place here.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(inner, req, self.shared.clone())
    }
}
