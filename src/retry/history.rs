//! What the retry layer did for one logical request, and counters across
//! all of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::outcome::Outcome;

/// One attempt sent to the inner service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempt {
    /// When it was sent, from the start of the logical request.
    pub sent_after: Duration,
    /// How long the layer waited before sending it (backoff and cooldown).
    pub waited: Duration,
    /// Its outcome, or `None` when the inner service failed.
    pub outcome: Option<Outcome>,
}

/// Why the layer stopped retrying and handed back the last answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GaveUp {
    /// The attempt limit was reached.
    MaxAttempts,
    /// The wait needed (at least the server's hint) would end past the deadline.
    Deadline {
        /// The wait that was needed.
        wait: Duration,
    },
    /// The server's hint is longer than the longest single wait.
    OverCap {
        /// The wait that was needed.
        wait: Duration,
    },
    /// The shared retry budget is empty.
    Budget,
    /// The failure may have been applied and the method is not safe to repeat.
    UnsafeMethod,
}

/// The attempt history of one logical request, in the final response's
/// extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptHistory {
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
    /// From the call to the final answer.
    pub total: Duration,
    /// Why retrying stopped before a success, if it did.
    pub gave_up: Option<GaveUp>,
}

/// Counters shared by every clone of a retry layer and its services.
#[derive(Debug, Default)]
pub struct RetryStats {
    pub(crate) retries_overloaded: AtomicU64,
    pub(crate) retries_throttled: AtomicU64,
    pub(crate) retries_transient: AtomicU64,
    pub(crate) fail_fasts: AtomicU64,
    pub(crate) budget_refusals: AtomicU64,
    pub(crate) give_ups: AtomicU64,
}

macro_rules! getters {
    ($($(#[$doc:meta])* $name:ident),*) => {
        impl RetryStats {
            $($(#[$doc])* pub fn $name(&self) -> u64 { self.$name.load(Ordering::Relaxed) })*
        }
    };
}

getters!(
    /// Retries after a 503.
    retries_overloaded,
    /// Retries after a 429.
    retries_throttled,
    /// Retries after 408, 500, 502, 504 or an error.
    retries_transient,
    /// Requests failed at once by a cooldown, without touching the network.
    fail_fasts,
    /// Retries refused because the budget was empty.
    budget_refusals,
    /// Logical requests that ended by giving up.
    give_ups
);

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
