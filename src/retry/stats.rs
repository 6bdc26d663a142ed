//! Counters across every logical request of one retry layer.

use std::sync::atomic::{AtomicU64, Ordering};

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

crate::macros::counter_getters!(
    RetryStats;
    /// Retries after a 503.
    retries_overloaded,
    /// Retries after a 429.
    retries_throttled,
    /// Retries after 408, 500, 502, 504 or an error (a refused HTTP/2
    /// stream, sent again at once, and a connection never made included).
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
