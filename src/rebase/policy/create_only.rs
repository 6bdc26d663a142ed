use super::{Decision, LostRace, RebasePolicy};
use crate::BoxError;

/// For create-only writes (`If-None-Match: *`) that found the session
/// already there: hand the 412 back ([`CreateOnly::surface`]), or send the
/// same body as an update of the existing session, conditional on its
/// current ETag ([`CreateOnly::then_update`]). Writes conditional on an
/// ETag are always handed back.
#[derive(Debug, Clone, Copy)]
pub struct CreateOnly {
    then_update: bool,
}

impl CreateOnly {
    /// Hands the 412 back with the existing session and its ETag.
    pub fn surface() -> Self {
        Self { then_update: false }
    }

    /// Re-sends the body as an update of the existing session.
    pub fn then_update() -> Self {
        Self { then_update: true }
    }
}

impl RebasePolicy for CreateOnly {
    fn rebase(&mut self, conflict: &LostRace<'_>) -> Result<Decision, BoxError> {
        Ok(if conflict.create_only && self.then_update {
            Decision::Retry(conflict.body.clone())
        } else {
            Decision::GiveUp
        })
    }
}
