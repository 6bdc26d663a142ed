use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Method, Request, Response};
use tower::retry::budget::TpsBudget;
use tower::{Layer, Service};

use super::cooldown::Cooldowns;
use super::future::{run, Shared};
use super::history::RetryStats;
use crate::backoff::Backoff;
use crate::BoxError;

/// Settings of a [`RetryLayer`].
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) backoff: Backoff,
    pub(crate) max_attempts: u32,
    pub(crate) deadline: Duration,
    pub(crate) retry_transient: fn(&Method) -> bool,
}

/// Adds [`Retry`] to a stack. Clones share the cooldowns, the budget and
/// the counters.
#[derive(Clone)]
#[must_use]
pub struct RetryLayer {
    config: Config,
    budget: Arc<TpsBudget>,
    cooldowns: Cooldowns,
    stats: Arc<RetryStats>,
    max_keys: usize,
    release_spacing: Duration,
}

impl fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("backoff", &self.config.backoff)
            .field("max_attempts", &self.config.max_attempts)
            .field("deadline", &self.config.deadline)
            .field("release_spacing", &self.release_spacing)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

fn safe_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl RetryLayer {
    /// A layer with the defaults documented in [the module](crate::retry).
    pub fn new() -> Self {
        let max_keys = 10_000;
        let release_spacing = Duration::from_millis(50);
        Self {
            config: Config {
                backoff: Backoff::default(),
                max_attempts: 5,
                deadline: Duration::from_secs(20),
                retry_transient: safe_method,
            },
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            cooldowns: Cooldowns::new(max_keys, release_spacing),
            stats: Arc::new(RetryStats::default()),
            max_keys,
            release_spacing,
        }
    }

    /// The overall deadline of one logical request. Default 20 s: the
    /// retry window of Microsoft's SDK.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.config.deadline = deadline;
        self
    }

    /// The most attempts of one logical request, the first included.
    /// Default 5.
    ///
    /// # Panics
    ///
    /// When `n` is zero.
    pub fn max_attempts(mut self, n: u32) -> Self {
        assert!(n > 0, "at least one attempt");
        self.config.max_attempts = n;
        self
    }

    /// The backoff rules, including the longest single wait (default 60 s).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// The retry budget, shared by every clone of this layer.
    pub fn budget(mut self, budget: TpsBudget) -> Self {
        self.budget = Arc::new(budget);
        self
    }

    /// Which methods are retried after 408, 500, 502, 504 or an error.
    /// Default: GET, HEAD and OPTIONS.
    pub fn retry_transient_for(mut self, methods: fn(&Method) -> bool) -> Self {
        self.config.retry_transient = methods;
        self
    }

    /// How far apart the waiters of a cooldown are released after the
    /// probe succeeds. Default 50 ms: 32 queued callers reach the server
    /// over 1.6 s instead of in one burst.
    pub fn release_spacing(mut self, spacing: Duration) -> Self {
        self.release_spacing = spacing;
        self.cooldowns = Cooldowns::new(self.max_keys, spacing);
        self
    }

    /// How many cooldown keys are held at most. Default 10,000.
    pub fn max_cooldown_keys(mut self, n: usize) -> Self {
        self.max_keys = n;
        self.cooldowns = Cooldowns::new(n, self.release_spacing);
        self
    }

    /// The counters of this layer and every service it made.
    pub fn stats(&self) -> Arc<RetryStats> {
        self.stats.clone()
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            shared: Shared {
                config: self.config.clone(),
                budget: self.budget.clone(),
                cooldowns: self.cooldowns.clone(),
                stats: self.stats.clone(),
            },
        }
    }
}

/// Retries MPSD requests; see [`RetryLayer`].
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    shared: Shared,
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
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
    ReqBody: Clone + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ResBody>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The ready service goes with the first attempt; a clone takes its
        // place here.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(run(inner, req, self.shared.clone()))
    }
}
