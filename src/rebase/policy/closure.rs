use std::fmt;

use super::{Decision, LostRace, RebasePolicy};
use crate::BoxError;

/// A policy made of a closure; see [`rebase_fn`].
///
/// It holds the closure boxed, so the closure's type is not part of the
/// stack's type. That is what lets a stack built with a closure be moved
/// into `tokio::spawn` from an `async` block: a closure's type carries its
/// signature, here `-> Result<Decision, BoxError>`, and rustc erases the
/// `'static` inside `BoxError` when it checks that the block is `Send`,
/// then cannot prove the closure still has that signature ("one type is
/// more general than the other", [rust-lang/rust#102211]). A named `fn`
/// has no signature in its type, which is why it never showed the error.
/// The box costs one allocation when a conditional write starts (the
/// policy is cloned for it) and a dynamic call per conflict.
///
/// [rust-lang/rust#102211]: https://github.com/rust-lang/rust/issues/102211
pub struct RebaseFn {
    f: Box<dyn PolicyFn>,
}

/// A boxable, clonable policy closure.
trait PolicyFn: Send + Sync + 'static {
    fn call(&mut self, conflict: &LostRace<'_>) -> Result<Decision, BoxError>;
    fn clone_box(&self) -> Box<dyn PolicyFn>;
}

impl<F> PolicyFn for F
where
    F: FnMut(&LostRace<'_>) -> Result<Decision, BoxError> + Clone + Send + Sync + 'static,
{
    fn call(&mut self, conflict: &LostRace<'_>) -> Result<Decision, BoxError> {
        self(conflict)
    }

    fn clone_box(&self) -> Box<dyn PolicyFn> {
        Box::new(self.clone())
    }
}

/// Rebases with a closure: the usual choice for read-modify-write, where
/// the closure re-applies its change to the fresh session.
///
/// The closure is cloned for each conditional write, so state it mutates
/// lasts one logical request. The only annotation it needs is the type of
/// its argument, `&LostRace<'_>`, and not even that when it is written in
/// the call to `rebase_fn`; the stack it goes into can be spawned and
/// boxed like any other (see [`RebaseFn`] for why that needed care).
///
/// ```
/// use serde_json::json;
/// use tower_mpsd::rebase::policy::{rebase_fn, LostRace, Decision};
///
/// // Add 1 to a counter, whatever it is now.
/// let policy = rebase_fn(|conflict: &LostRace<'_>| {
///     let now = conflict.session["properties"]["custom"]["count"].as_u64().unwrap_or(0);
///     let delta = json!({"properties": {"custom": {"count": now + 1}}});
///     Ok(Decision::Retry(delta.to_string().into()))
/// });
/// # let _ = policy;
/// ```
///
/// A stack with such a policy goes into `tokio::spawn`, from an `async`
/// block too, and into a `BoxCloneSyncService`:
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tower::util::BoxCloneSyncService;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_mpsd::rebase::policy::{rebase_fn, LostRace, Decision};
/// use tower_mpsd::rebase::RebaseLayer;
/// use tower_mpsd::{MpsdLayer, ServiceBuilderExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), tower_mpsd::BoxError> {
/// let mpsd = service_fn(|_req: Request<Full<Bytes>>| async {
///     Ok::<_, http::Error>(Response::new(Full::<Bytes>::default()))
/// });
/// let stack = MpsdLayer::new().rebase(RebaseLayer::new(rebase_fn(|c: &LostRace<'_>| {
///     Ok(Decision::Retry(c.body.clone()))
/// })));
/// let client = ServiceBuilder::new().mpsd_with(stack).service(mpsd);
/// let get = || Request::get("http://mpsd.test/handles/h").body(Full::default());
///
/// let spawned = tokio::spawn(client.clone().oneshot(get()?));
/// let req = get()?;
/// let in_a_block = tokio::spawn({
///     let client = client.clone();
///     async move { client.oneshot(req).await }
/// });
/// let boxed = BoxCloneSyncService::new(client);
/// assert!(spawned.await?.is_ok());
/// assert!(in_a_block.await?.is_ok());
/// assert!(boxed.oneshot(get()?).await.is_ok());
/// # Ok(())
/// # }
/// ```
pub fn rebase_fn<F>(f: F) -> RebaseFn
where
    F: FnMut(&LostRace<'_>) -> Result<Decision, BoxError> + Clone + Send + Sync + 'static,
{
    RebaseFn { f: Box::new(f) }
}

impl Clone for RebaseFn {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone_box(),
        }
    }
}

impl RebasePolicy for RebaseFn {
    fn rebase(&mut self, conflict: &LostRace<'_>) -> Result<Decision, BoxError> {
        self.f.call(conflict)
    }
}

impl fmt::Debug for RebaseFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RebaseFn").finish_non_exhaustive()
    }
}
