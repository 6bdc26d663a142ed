//! [`ServiceBuilderExt`]: this crate's layers as `ServiceBuilder` methods.

use tower::layer::util::Stack;
use tower::ServiceBuilder;

use crate::auth::{AuthLayer, TokenSource};
use crate::classify::ClassifyLayer;
use crate::coalesce::CoalesceLayer;
use crate::logical::LogicalLayer;
use crate::pace::PaceLayer;
use crate::rebase::RebaseLayer;
use crate::replay::ReplayLayer;
use crate::retry::RetryLayer;
use crate::revalidate::RevalidateLayer;
use crate::stack::MpsdLayer;

mod sealed {
    pub trait Sealed<T> {}
}

impl<L> sealed::Sealed<L> for ServiceBuilder<L> {}

/// Adds this crate's layers to a [`ServiceBuilder`], one method per layer.
/// Sealed: implemented for `ServiceBuilder` only.
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tower::{service_fn, ServiceBuilder};
/// use tower_mpsd::ServiceBuilderExt;
///
/// let mpsd = service_fn(|_req: Request<Full<Bytes>>| async {
///     Ok::<_, tower_mpsd::BoxError>(Response::new(Full::<Bytes>::default()))
/// });
/// let client = ServiceBuilder::new().mpsd().service(mpsd);
/// # let _ = client;
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed<L> + Sized {
    /// The recommended stack with its defaults: [`MpsdLayer::new`].
    fn mpsd(self) -> ServiceBuilder<Stack<MpsdLayer, L>>;

    /// The recommended stack, configured.
    fn mpsd_with<R, V, P>(
        self,
        stack: MpsdLayer<R, V, P>,
    ) -> ServiceBuilder<Stack<MpsdLayer<R, V, P>, L>>;

    /// [`ClassifyLayer`]: the outcome of every response in its extensions
    /// ([`Classified`](crate::classify::Classified)).
    fn mpsd_classify(self) -> ServiceBuilder<Stack<ClassifyLayer, L>>;

    /// [`LogicalLayer`]: one deadline and attempt limit for the layers below.
    fn mpsd_logical(self, layer: LogicalLayer) -> ServiceBuilder<Stack<LogicalLayer, L>>;

    /// [`RebaseLayer`]: 412 rebased through a policy.
    fn mpsd_rebase<P>(self, layer: RebaseLayer<P>) -> ServiceBuilder<Stack<RebaseLayer<P>, L>>;

    /// [`RetryLayer`]: 503, 429 and transient failures retried.
    fn mpsd_retry(self, layer: RetryLayer) -> ServiceBuilder<Stack<RetryLayer, L>>;

    /// [`ReplayLayer`]: request bodies buffered up to `limit` bytes.
    fn mpsd_replay(self, limit: usize) -> ServiceBuilder<Stack<ReplayLayer, L>>;

    /// [`RevalidateLayer`]: GETs revalidated with `If-None-Match`.
    fn mpsd_revalidate(self, layer: RevalidateLayer) -> ServiceBuilder<Stack<RevalidateLayer, L>>;

    /// [`PaceLayer`]: requests paced under MPSD's rate limits.
    fn mpsd_pace(self, layer: PaceLayer) -> ServiceBuilder<Stack<PaceLayer, L>>;

    /// [`CoalesceLayer`]: concurrent identical GETs sent once.
    fn mpsd_coalesce(self, layer: CoalesceLayer) -> ServiceBuilder<Stack<CoalesceLayer, L>>;

    /// [`AuthLayer`]: the user's token from `source` on every request,
    /// refreshed once on a 401. Goes before (outside) [`mpsd`](Self::mpsd).
    fn mpsd_auth(self, source: impl TokenSource) -> ServiceBuilder<Stack<AuthLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn mpsd(self) -> ServiceBuilder<Stack<MpsdLayer, L>> {
        self.layer(MpsdLayer::new())
    }

    fn mpsd_with<R, V, P>(
        self,
        stack: MpsdLayer<R, V, P>,
    ) -> ServiceBuilder<Stack<MpsdLayer<R, V, P>, L>> {
        self.layer(stack)
    }

    fn mpsd_classify(self) -> ServiceBuilder<Stack<ClassifyLayer, L>> {
        self.layer(ClassifyLayer::new())
    }

    fn mpsd_logical(self, layer: LogicalLayer) -> ServiceBuilder<Stack<LogicalLayer, L>> {
        self.layer(layer)
    }

    fn mpsd_rebase<P>(self, layer: RebaseLayer<P>) -> ServiceBuilder<Stack<RebaseLayer<P>, L>> {
        self.layer(layer)
    }

    fn mpsd_retry(self, layer: RetryLayer) -> ServiceBuilder<Stack<RetryLayer, L>> {
        self.layer(layer)
    }

    fn mpsd_replay(self, limit: usize) -> ServiceBuilder<Stack<ReplayLayer, L>> {
        self.layer(ReplayLayer::new(limit))
    }

    fn mpsd_revalidate(self, layer: RevalidateLayer) -> ServiceBuilder<Stack<RevalidateLayer, L>> {
        self.layer(layer)
    }

    fn mpsd_pace(self, layer: PaceLayer) -> ServiceBuilder<Stack<PaceLayer, L>> {
        self.layer(layer)
    }

    fn mpsd_coalesce(self, layer: CoalesceLayer) -> ServiceBuilder<Stack<CoalesceLayer, L>> {
        self.layer(layer)
    }

    fn mpsd_auth(self, source: impl TokenSource) -> ServiceBuilder<Stack<AuthLayer, L>> {
        self.layer(AuthLayer::new(source))
    }
}
