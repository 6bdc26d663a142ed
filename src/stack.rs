//! The recommended stack in one layer: [`MpsdLayer`].
//!
//! From the outside in:
//!
//! | layer | why there |
//! |---|---|
//! | [`LogicalLayer`] (when a rebase policy is given) | one deadline and attempt limit for everything inside, the request parsed once, and the [`AttemptHistory`](crate::logical::AttemptHistory); without a rebase policy the retry layer is on top and does this itself, keeping the logical request in its future when no revalidate or pace layer reads it (see [`crate::logical`]) |
//! | [`CoalesceLayer`] (when a rebase policy is given, unless [`without_coalescing`](MpsdLayer::without_coalescing)) | identical concurrent GETs sent once; each caller keeps its own deadline, and the one GET sent is retried, paced and revalidated below |
//! | [`RebaseLayer`] (when a policy is given) | its re-reads pass the retry layer's cooldowns; it sequences conditional writes per session ([`crate::sequence`], unless [`unsequenced`](RebaseLayer::unsequenced)), so their waits count against the deadline and a write that never gets an answer is abandoned by the retry layer below |
//! | [`RetryLayer`] | 503, 429 and transient failures |
//! | [`RevalidateLayer`] (optional) | every GET, retried ones too, asks `If-None-Match` |
//! | [`PaceLayer`] (optional) | it paces what actually goes to the network |
//! | [`ClassifyLayer`] | innermost: each send's answer is classified once (a small 429 body read for its rate-limit fields), its attempt recorded (by the retry layer when it keeps the logical request to itself), and its [`Outcome`](crate::classify::Outcome) put in its extensions (with its call, one [`Classified`](crate::classify::Classified) entry) for the layers above and the caller |
//!
//! Outside it goes [`AuthLayer`](crate::auth::AuthLayer), when the stack
//! should set and refresh the user's token: every layer here then reads the
//! user from the `Authorization` it set.
//!
//! Defaults: a 20 s deadline (the retry window of Microsoft's SDK) and 5
//! sends per logical request, or 20 with a rebase policy (the first write,
//! the rebase layer's 16 conflict rounds of one write each, since MPSD's
//! 412 carries the session, and three retries).
//!
//! # Sharing state between stacks
//!
//! Clones of an `MpsdLayer`, and the services they make, share the retry
//! layer's [`Cooldowns`](crate::retry::Cooldowns), budget and counters, the
//! pace layer's [`PaceTable`](crate::pace::PaceTable), the revalidate
//! layer's [`Cache`](crate::revalidate::Cache), and, with a rebase policy,
//! the write queues of its [`SessionBoard`](crate::sequence::SessionBoard)
//! and the coalescing layer's flights. Separately built stacks
//! share them only when handed the same handles, through the layers the
//! stack takes:
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder};
//! use tower_mpsd::pace::{PaceLayer, PaceTable};
//! use tower_mpsd::retry::{Cooldowns, RetryLayer};
//! use tower_mpsd::revalidate::{Cache, RevalidateLayer};
//! use tower_mpsd::{MpsdLayer, ServiceBuilderExt};
//!
//! let (cooldowns, table, cache) = (Cooldowns::new(), PaceTable::new(), Cache::new());
//! let stack = || {
//!     MpsdLayer::new()
//!         .retry(RetryLayer::new().with_cooldowns(cooldowns.clone()))
//!         .revalidate(RevalidateLayer::with_cache(cache.clone()))
//!         .pace(PaceLayer::with_table(table.clone()))
//! };
//! let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
//!     Ok::<_, tower_mpsd::BoxError>(Response::new(Full::<Bytes>::default()))
//! });
//! // Two clients of one process: one `Retry-After`, one set of rate
//! // windows per user, one cache between them.
//! let lobby = ServiceBuilder::new().mpsd_with(stack()).service(upstream.clone());
//! let matchmaking = ServiceBuilder::new().mpsd_with(stack()).service(upstream);
//! # drop((lobby, matchmaking));
//! ```
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_mpsd::logical::AttemptHistory;
//! use tower_mpsd::classify::Outcome;
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
//! assert_eq!(Outcome::of(&res), Some(Outcome::Ok));
//! assert_eq!(AttemptHistory::of(&res).unwrap().attempts().len(), 1);
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use tower::layer::util::Identity;
use tower::Layer;

use crate::classify::{Classify, ClassifyLayer};
use crate::coalesce::CoalesceLayer;
use crate::logical::{Logical, LogicalLayer};
use crate::pace::PaceLayer;
use crate::rebase::{Rebase, RebaseLayer};
use crate::retry::{Retry, RetryLayer};
use crate::revalidate::RevalidateLayer;

/// The recommended stack; see [the module](crate::stack). `R`, `V` and
/// `P` are the rebase, revalidate and pace layers, [`Identity`] when left
/// out.
#[derive(Debug, Clone)]
#[must_use]
pub struct MpsdLayer<R = Identity, V = Identity, P = Identity> {
    deadline: Duration,
    max_attempts: Option<u32>,
    default_attempts: u32,
    rebase: R,
    retry: RetryLayer,
    revalidate: V,
    pace: P,
}

impl MpsdLayer {
    /// The stack with its defaults, no rebase policy (a 412 is handed back
    /// to the caller), no revalidation and no pacing.
    pub fn new() -> Self {
        Self {
            deadline: Duration::from_secs(20),
            max_attempts: None,
            default_attempts: 5,
            rebase: Identity::new(),
            retry: RetryLayer::new(),
            revalidate: Identity::new(),
            pace: Identity::new(),
        }
    }
}

impl<V, P> MpsdLayer<Identity, V, P> {
    /// Retries conflicting writes (412) through `rebase`'s policy, and
    /// turns on two more things that a stack which writes sessions wants,
    /// each of which can be turned off on its own:
    ///
    /// - **Sequencing** of conditional writes per session, through a new
    ///   [`SessionBoard`](crate::sequence::SessionBoard) (see
    ///   [`crate::sequence`]): writes to one session go one at a time, and
    ///   one the board knows to be stale is rebased before it is sent.
    ///   The layer's own board is used if it was given one
    ///   ([`RebaseLayer::sequence`], to share it or read its counters);
    ///   off with [`RebaseLayer::unsequenced`].
    /// - **Coalescing** of identical concurrent GETs, sent once
    ///   ([`crate::coalesce`]), by a new [`CoalesceLayer`]; give your own
    ///   with [`coalesce`](MpsdLayer::coalesce), or turn it off with
    ///   [`without_coalescing`](MpsdLayer::without_coalescing).
    ///
    /// It also raises the default attempt limit from 5 to 20 (the first
    /// write, the rebase layer's 16 conflict rounds of one write each, and
    /// three retries), unless [`max_attempts`](Self::max_attempts) set one.
    ///
    /// ```
    /// use tower_mpsd::rebase::{policy::ResendDelta, RebaseLayer};
    /// use tower_mpsd::MpsdLayer;
    ///
    /// // Rebasing alone: no write queue, every GET sent by its caller.
    /// let stack = MpsdLayer::new()
    ///     .rebase(RebaseLayer::new(ResendDelta).unsequenced())
    ///     .without_coalescing();
    /// # drop(stack);
    /// ```
    pub fn rebase<Policy>(self, rebase: RebaseLayer<Policy>) -> MpsdLayer<Rebasing<Policy>, V, P> {
        MpsdLayer {
            deadline: self.deadline,
            max_attempts: self.max_attempts,
            default_attempts: crate::logical::REBASE_SENDS,
            rebase: Rebasing {
                coalesce: CoalesceLayer::new(),
                rebase: rebase.sequenced_by_default(),
            },
            retry: self.retry,
            revalidate: self.revalidate,
            pace: self.pace,
        }
    }
}

/// The part of [`MpsdLayer`] a rebase policy brings: coalescing of
/// identical GETs (`C`: a [`CoalesceLayer`], or [`Identity`] after
/// [`without_coalescing`](MpsdLayer::without_coalescing)) over the rebase
/// layer, which sequences conditional writes unless told not to.
#[derive(Debug, Clone)]
pub struct Rebasing<Policy, C = CoalesceLayer> {
    coalesce: C,
    rebase: RebaseLayer<Policy>,
}

impl<S, Policy: Clone, C> Layer<S> for Rebasing<Policy, C>
where
    C: Layer<Rebase<S, Policy>>,
{
    type Service = C::Service;

    fn layer(&self, inner: S) -> Self::Service {
        self.coalesce.layer(self.rebase.layer(inner))
    }
}

impl<Policy, C, V, P> MpsdLayer<Rebasing<Policy, C>, V, P> {
    /// Coalesces identical GETs with `coalesce` (its cap, and counters you
    /// keep a handle to) instead of a new [`CoalesceLayer`]; after
    /// [`without_coalescing`](Self::without_coalescing), turns it back on.
    pub fn coalesce(self, coalesce: CoalesceLayer) -> MpsdLayer<Rebasing<Policy>, V, P> {
        self.with_coalescing(coalesce)
    }

    /// Sends every GET as its caller asked, never sharing one answer
    /// between identical concurrent GETs. Coalescing is on by default with
    /// a rebase policy because a burst of callers reading one session (a
    /// lobby polled by its members) otherwise spends a send each against
    /// MPSD's per-user rate limit; turn it off when each caller must see
    /// its own answer (its own timing, its own 304).
    pub fn without_coalescing(self) -> MpsdLayer<Rebasing<Policy, Identity>, V, P> {
        self.with_coalescing(Identity::new())
    }

    fn with_coalescing<C2>(self, coalesce: C2) -> MpsdLayer<Rebasing<Policy, C2>, V, P> {
        MpsdLayer {
            deadline: self.deadline,
            max_attempts: self.max_attempts,
            default_attempts: self.default_attempts,
            rebase: Rebasing {
                coalesce,
                rebase: self.rebase.rebase,
            },
            retry: self.retry,
            revalidate: self.revalidate,
            pace: self.pace,
        }
    }
}

impl<R, P> MpsdLayer<R, Identity, P> {
    /// Revalidates GETs with `If-None-Match` and answers 304s from a
    /// bounded cache (see [`crate::revalidate`]): the layer's own, or one
    /// shared with other stacks through
    /// [`RevalidateLayer::with_cache`].
    pub fn revalidate(self, revalidate: RevalidateLayer) -> MpsdLayer<R, RevalidateLayer, P> {
        MpsdLayer {
            deadline: self.deadline,
            max_attempts: self.max_attempts,
            default_attempts: self.default_attempts,
            rebase: self.rebase,
            retry: self.retry,
            revalidate,
            pace: self.pace,
        }
    }
}

impl<R, V> MpsdLayer<R, V, Identity> {
    /// Paces requests to stay under MPSD's rate limits (see
    /// [`crate::pace`]), so that 429s are avoided rather than waited out:
    /// by the layer's own table, or one shared with other stacks through
    /// [`PaceLayer::with_table`].
    pub fn pace(self, pace: PaceLayer) -> MpsdLayer<R, V, PaceLayer> {
        MpsdLayer {
            deadline: self.deadline,
            max_attempts: self.max_attempts,
            default_attempts: self.default_attempts,
            rebase: self.rebase,
            retry: self.retry,
            revalidate: self.revalidate,
            pace,
        }
    }
}

impl Default for MpsdLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<R, V, P> MpsdLayer<R, V, P> {
    /// The deadline of each logical request. Default 20 s. `Duration::MAX`
    /// means none; `Duration::ZERO` means no waiting at all (see
    /// [`LogicalLayer::new`]).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The most sends of each logical request. Default 5, or 20 with a
    /// rebase policy (see [the module](crate::stack)).
    ///
    /// # Panics
    ///
    /// When `n` is zero.
    #[track_caller]
    pub fn max_attempts(mut self, n: u32) -> Self {
        assert!(n > 0, "at least one attempt");
        self.max_attempts = Some(n);
        self
    }

    /// The retry layer, for its backoff, cooldown key and method
    /// settings, and the cooldowns and budget it uses (its own, or shared
    /// with other stacks through [`RetryLayer::with_cooldowns`] and
    /// [`RetryLayer::with_budget`]). The deadline and attempt limit are
    /// the stack's ([`deadline`](Self::deadline),
    /// [`max_attempts`](Self::max_attempts)).
    pub fn retry(mut self, retry: RetryLayer) -> Self {
        self.retry = retry;
        self
    }

    fn logical(&self) -> LogicalLayer {
        let attempts = self.max_attempts.unwrap_or(self.default_attempts);
        LogicalLayer::new(self.deadline, attempts)
    }
}

impl<S, R, V, P> Layer<S> for MpsdLayer<R, V, P>
where
    P: Layer<Classify<S>>,
    V: Layer<P::Service>,
    R: StackTop<Retry<V::Service>>,
    V: Below,
    P: Below,
{
    type Service = R::Service;

    fn layer(&self, inner: S) -> Self::Service {
        let paced = self.pace.layer(ClassifyLayer::new().layer(inner));
        let revalidated = self.revalidate.layer(paced);
        let limits = self.logical();
        // Without a rebase policy, the retry layer is on top and makes
        // each logical request itself; with no layer below it that reads
        // the request, it keeps it in its future, in no extension map.
        let keep = !(V::READS_CONTEXT || P::READS_CONTEXT);
        let retry = self.retry.clone().making_context(limits, keep);
        self.rebase.top(retry.layer(revalidated), limits)
    }
}

/// The traits by which [`MpsdLayer`] assembles its stack from its types,
/// public only to be named in its `Layer` bounds: they cannot be named
/// outside this crate.
mod top {
    use crate::logical::LogicalLayer;

    /// What goes on top of the retry layer in [`MpsdLayer`](super::MpsdLayer):
    /// nothing ([`Identity`](tower::layer::util::Identity): the retry
    /// layer makes each logical request), or a rebase policy's layers
    /// ([`Rebasing`](super::Rebasing)) under a
    /// [`LogicalLayer`] that makes it for them all.
    pub trait StackTop<Inner> {
        /// The stack's service.
        type Service;

        /// The stack on `inner`, the retry layer's service, whose logical
        /// requests have `limits`.
        fn top(&self, inner: Inner, limits: LogicalLayer) -> Self::Service;
    }

    /// What may go below the retry layer in
    /// [`MpsdLayer`](super::MpsdLayer): whether it reads the logical
    /// request from the request's extensions, so that the retry layer
    /// must share it rather than keep it to itself.
    pub trait Below {
        /// It reads the logical request.
        const READS_CONTEXT: bool;
    }
}

use top::{Below, StackTop};

impl Below for Identity {
    const READS_CONTEXT: bool = false;
}

/// It waits for a slot until the logical request's deadline.
impl Below for PaceLayer {
    const READS_CONTEXT: bool = true;
}

/// It reads the session and the user as the logical request parsed them.
impl Below for RevalidateLayer {
    const READS_CONTEXT: bool = true;
}

impl<Inner> StackTop<Inner> for Identity {
    type Service = Inner;

    fn top(&self, inner: Inner, _: LogicalLayer) -> Inner {
        inner
    }
}

impl<Inner, Policy: Clone, C> StackTop<Inner> for Rebasing<Policy, C>
where
    C: Layer<Rebase<Inner, Policy>>,
{
    type Service = Logical<C::Service>;

    fn top(&self, inner: Inner, limits: LogicalLayer) -> Self::Service {
        limits.layer(self.layer(inner))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::Full;
    use tokio::time::Instant;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    use crate::logical::{AttemptHistory, LogicalRequest};
    use crate::pace::PaceLayer;
    use crate::{MpsdLayer, ServiceBuilderExt};

    /// A caller's own extension.
    #[derive(Debug, Clone, PartialEq)]
    struct Tag(u32);

    /// What the client saw of each request: the caller's tag, and the
    /// deadline of any logical request in its extensions.
    type Seen = Arc<Mutex<Vec<(Option<Tag>, Option<Instant>)>>>;

    /// A client answering 503 (`Retry-After: 1`) once, then 200, noting
    /// what each request carried.
    fn client(
        seen: Seen,
    ) -> impl tower::Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = crate::BoxError,
        Future = impl Send,
    > + Clone {
        service_fn(move |req: Request<Full<Bytes>>| {
            let ext = req.extensions();
            let mut seen = seen.lock().unwrap();
            let deadline = ext.get::<LogicalRequest>().map(LogicalRequest::deadline);
            seen.push((ext.get::<Tag>().cloned(), deadline));
            let status = if seen.len() == 1 { 503 } else { 200 };
            let res = Response::builder()
                .status(status)
                .header("retry-after", "1");
            std::future::ready(Ok(res.body(Full::default()).unwrap()))
        })
    }

    fn tagged() -> Request<Full<Bytes>> {
        let uri = "http://mpsd.test/serviceconfigs/c/sessionTemplates/t/sessions/s";
        let mut req = Request::get(uri).body(Full::default()).unwrap();
        req.extensions_mut().insert(Tag(7));
        req
    }

    #[tokio::test(start_paused = true)]
    async fn the_default_stack_sends_the_callers_extensions_on_every_send_and_none_of_its_own() {
        let seen = Seen::default();
        let stack = ServiceBuilder::new().mpsd().service(client(seen.clone()));
        let res = stack.oneshot(tagged()).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(AttemptHistory::of(&res).unwrap().attempts().len(), 2);
        assert_eq!(
            *seen.lock().unwrap(),
            [(Some(Tag(7)), None), (Some(Tag(7)), None)],
            "the tag on both sends; the logical request kept in the retry layer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_layer_below_that_reads_it_the_logical_request_is_shared_with_the_stacks_deadline(
    ) {
        let seen = Seen::default();
        let stack = MpsdLayer::new()
            .deadline(Duration::from_secs(7))
            .pace(PaceLayer::new());
        let client = ServiceBuilder::new()
            .mpsd_with(stack)
            .service(client(seen.clone()));
        let start = Instant::now();
        let res = client.oneshot(tagged()).await.unwrap();
        assert_eq!(res.status(), 200);
        let deadline = Some(start + Duration::from_secs(7));
        assert_eq!(
            *seen.lock().unwrap(),
            [(Some(Tag(7)), deadline), (Some(Tag(7)), deadline)],
            "one logical request, of the stack's deadline, on both sends"
        );
    }
}
