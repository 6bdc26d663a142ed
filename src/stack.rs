//! The recommended stack in one layer: [`MpsdLayer`].
//!
//! From the outside in:
//!
//! | layer | why there |
//! |---|---|
//! | [`ClassifyLayer`] | the final answer carries its [`Outcome`](crate::outcome::Outcome) |
//! | [`LogicalLayer`] | one deadline and attempt limit for everything inside, and the [`AttemptHistory`](crate::logical::AttemptHistory) |
//! | [`RebaseLayer`] (when a policy is given) | its re-reads pass the retry layer's cooldowns |
//! | [`RetryLayer`] | 503, 429 and transient failures |
//!
//! Defaults: a 20 s deadline (the retry window of Microsoft's SDK) and 5
//! sends per logical request, or 8 with a rebase policy (the first write,
//! three conflict rounds of re-read and write, and one retry).
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_mpsd::logical::AttemptHistory;
//! use tower_mpsd::outcome::Outcome;
//! use tower_mpsd::rebase::{policy::ResendDelta, RebaseLayer};
//! use tower_mpsd::ServiceBuilderExt;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_mpsd::BoxError> {
//! let mpsd = service_fn(|_req: Request<Full<Bytes>>| async {
//!     Ok::<_, tower_mpsd::BoxError>(Response::new(Full::<Bytes>::default()))
//! });
//! let stack = tower_mpsd::MpsdLayer::new()
//!     .deadline(std::time::Duration::from_secs(10))
//!     .rebase(RebaseLayer::new(ResendDelta));
//! let client = ServiceBuilder::new().mpsd_with(stack).service(mpsd);
//! let req = Request::get("http://mpsd.test/serviceconfigs/c/sessionTemplates/t/sessions/s")
//!     .body(Full::default())?;
//! let res = client.oneshot(req).await?;
//! assert_eq!(res.extensions().get::<Outcome>(), Some(&Outcome::Ok));
//! assert_eq!(res.extensions().get::<AttemptHistory>().unwrap().attempts.len(), 1);
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use tower::layer::util::Identity;
use tower::Layer;

use crate::classify::{Classify, ClassifyLayer};
use crate::logical::{Logical, LogicalLayer};
use crate::rebase::RebaseLayer;
use crate::retry::{Retry, RetryLayer};

/// The recommended stack; see [the module](crate::stack). `R` is the
/// rebase layer, or [`Identity`] for none.
#[derive(Debug, Clone)]
#[must_use]
pub struct MpsdLayer<R = Identity> {
    deadline: Duration,
    max_attempts: Option<u32>,
    rebase: R,
    retry: RetryLayer,
}

impl MpsdLayer {
    /// The stack with its defaults and no rebase policy: a 412 is handed
    /// back to the caller.
    pub fn new() -> Self {
        Self {
            deadline: Duration::from_secs(20),
            max_attempts: None,
            rebase: Identity::new(),
            retry: RetryLayer::new(),
        }
    }

    /// Retries conflicting writes through `rebase`.
    pub fn rebase<P>(self, rebase: RebaseLayer<P>) -> MpsdLayer<RebaseLayer<P>> {
        MpsdLayer {
            deadline: self.deadline,
            max_attempts: self.max_attempts,
            rebase,
            retry: self.retry,
        }
    }
}

impl Default for MpsdLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> MpsdLayer<R> {
    /// The deadline of each logical request. Default 20 s.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The most sends of each logical request. Default 5, or 8 with a
    /// rebase policy.
    ///
    /// # Panics
    ///
    /// When `n` is zero.
    pub fn max_attempts(mut self, n: u32) -> Self {
        assert!(n > 0, "at least one attempt");
        self.max_attempts = Some(n);
        self
    }

    /// The retry layer, for its backoff, budget, cooldown and method
    /// settings. Its own deadline and attempt limit give way to the
    /// stack's.
    pub fn retry(mut self, retry: RetryLayer) -> Self {
        self.retry = retry;
        self
    }

    fn logical(&self, rebasing: bool) -> LogicalLayer {
        let default = if rebasing { 8 } else { 5 };
        LogicalLayer::new(self.deadline, self.max_attempts.unwrap_or(default))
    }
}

impl<S> Layer<S> for MpsdLayer {
    type Service = Classify<Logical<Retry<S>>>;

    fn layer(&self, inner: S) -> Self::Service {
        let retried = self.retry.layer(inner);
        ClassifyLayer::new().layer(self.logical(false).layer(retried))
    }
}

impl<S, P: Clone> Layer<S> for MpsdLayer<RebaseLayer<P>> {
    type Service = Classify<Logical<crate::rebase::Rebase<Retry<S>, P>>>;

    fn layer(&self, inner: S) -> Self::Service {
        let rebased = self.rebase.layer(self.retry.layer(inner));
        ClassifyLayer::new().layer(self.logical(true).layer(rebased))
    }
}
