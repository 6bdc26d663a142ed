//! What to do when a conditional write loses a race: the [`RebasePolicy`]
//! trait and three policies.
//!
//! tower's `retry::Policy` decides on a request and a result it already
//! holds; a rebase needs the session as it is *now* (read from the 412 or by
//! a GET) and answers with a new body, so it has a trait of its own.
//!
//! | policy | conditional write (`If-Match`) | create-only (`If-None-Match: *`) |
//! |---|---|---|
//! | [`rebase_fn`] | your closure decides | your closure decides |
//! | [`ResendDelta`] | the same body with the fresh ETag | hands the 412 back |
//! | [`CreateOnly`] | hands the 412 back | hands it back, or re-sends the body as an update of the existing session |

mod closure;
mod create_only;
mod resend;

use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use serde_json::Value;

pub use closure::{rebase_fn, RebaseFn};
pub use create_only::CreateOnly;
pub use resend::ResendDelta;

use crate::BoxError;

/// Decides what to do about one lost race.
pub trait RebasePolicy {
    /// Given the write that lost and the session as it is now, retry with
    /// a new body or give up. An error ends the logical request with it.
    fn rebase(&mut self, conflict: &LostRace<'_>) -> Result<Decision, BoxError>;
}

/// A write that lost a race, and the session as it is now.
#[derive(Debug)]
#[non_exhaustive]
pub struct LostRace<'a> {
    /// The write's method (PUT or DELETE).
    pub method: &'a Method,
    /// The write's URI (the session or one of its elements).
    pub uri: &'a Uri,
    /// Whether the write was create-only (`If-None-Match: *`) rather than
    /// conditional on an ETag (`If-Match`).
    pub create_only: bool,
    /// The body of the write as last sent.
    pub body: &'a Bytes,
    /// The whole session document as it is now.
    pub session: &'a Value,
    /// The session's current ETag: the retried write's `If-Match`.
    pub etag: &'a HeaderValue,
    /// Which conflict this is for the logical request, from 1; 0 for a
    /// rebase [before sending](Self::before_sending), which costs no send
    /// and no conflict round.
    pub round: u32,
    /// Whether the write has not been sent yet: the session is the latest
    /// one the stack saw (a [`SessionBoard`](crate::sequence::SessionBoard)
    /// knew the write's `ETag` was superseded), not one a 412 answered.
    /// Declining sends the write as it came.
    pub before_sending: bool,
}

/// A policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Send the write again with this body and `If-Match: <fresh ETag>`.
    Retry(Bytes),
    /// Hand the 412 back, carrying the fresh session and its ETag.
    GiveUp,
}
