use super::{Decision, LostRace, RebasePolicy};
use crate::BoxError;

/// Re-sends the same body with the fresh ETag.
///
/// Right for deltas that do not depend on what was read: "set my own
/// member's properties", "set the server's address". MPSD merges a delta
/// into whatever the session is now, so re-sending it loses no one else's
/// update. Wrong for read-modify-write (a counter, a list built from the
/// old value): use [`rebase_fn`](super::rebase_fn) there. Create-only
/// writes are handed back: turning them into updates is
/// [`CreateOnly`](super::CreateOnly)'s choice to make.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResendDelta;

impl RebasePolicy for ResendDelta {
    fn rebase(&mut self, conflict: &LostRace<'_>) -> Result<Decision, BoxError> {
        Ok(if conflict.create_only {
            Decision::GiveUp
        } else {
            Decision::Retry(conflict.body.clone())
        })
    }
}
