use std::fmt;

use super::{Conflict, Decision, RebasePolicy};
use crate::BoxError;

/// A policy made of a closure; see [`rebase_fn`].
#[derive(Clone)]
pub struct RebaseFn<F> {
    f: F,
}

/// Rebases with a closure: the usual choice for read-modify-write, where
/// the closure re-applies its change to the fresh session.
///
/// ```
/// use serde_json::json;
/// use tower_mpsd::rebase::policy::{rebase_fn, Conflict, Decision};
///
/// // Add 1 to a counter, whatever it is now.
/// let policy = rebase_fn(|conflict: &Conflict<'_>| {
///     let now = conflict.session["properties"]["custom"]["count"].as_u64().unwrap_or(0);
///     let delta = json!({"properties": {"custom": {"count": now + 1}}});
///     Ok(Decision::Retry(delta.to_string().into()))
/// });
/// # let _ = policy;
/// ```
pub fn rebase_fn<F>(f: F) -> RebaseFn<F>
where
    F: FnMut(&Conflict<'_>) -> Result<Decision, BoxError>,
{
    RebaseFn { f }
}

impl<F> RebasePolicy for RebaseFn<F>
where
    F: FnMut(&Conflict<'_>) -> Result<Decision, BoxError>,
{
    fn rebase(&mut self, conflict: &Conflict<'_>) -> Result<Decision, BoxError> {
        (self.f)(conflict)
    }
}

impl<F> fmt::Debug for RebaseFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RebaseFn").finish_non_exhaustive()
    }
}
