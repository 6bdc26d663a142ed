//! How long to wait before retrying, and whether the wait may start at all.
//!
//! Pure arithmetic, no I/O and no clock: callers pass the random draw and
//! the time left, so every rule is tested exactly.
//!
//! | cause | wait before the next attempt |
//! |---|---|
//! | 503 with `Retry-After: h` | `h × (1 + 0.2·r)`: never earlier than asked, spread upward like Microsoft's SDK (1.0–1.2×) |
//! | 429 with `Retry-After: h` | `max(h, r · base · 2ⁿ)`: full jitter, never shorter than asked |
//! | 429 or 503 without a usable header, 408/5xx, an error, a connection never established | `base · 2ⁿ⁻¹ · (1 + r)`: between `base·2ⁿ⁻¹` and `base·2ⁿ`, as the SDK's 2ⁿ–2ⁿ⁺¹ s |
//! | an HTTP/2 stream refused (`REFUSED_STREAM`) or excluded by a `GOAWAY` with `NO_ERROR` | none: at once |
//!
//! where `r` is uniform in `[0, 1)` and `n` counts the failed attempts so
//! far (1 after the first). Computed backoff is capped at `max_wait`; a
//! server hint longer than `max_wait`, or a wait that would end past the
//! deadline, is not started at all.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_mpsd::rules::backoff::{Backoff, Cause, Plan};
//!
//! let backoff = Backoff::default();
//! let s = Duration::from_secs;
//! let plan = backoff.plan(Cause::Overloaded, Some(s(5)), 1, 0.5, s(20));
//! assert_eq!(plan, Plan::Wait(Duration::from_millis(5_500)));
//! // A hint that does not fit in the time left fails fast, carrying the hint.
//! let plan = backoff.plan(Cause::Overloaded, Some(s(30)), 1, 0.0, s(20));
//! assert_eq!(plan, Plan::GiveUp { wait: s(30), why: tower_mpsd::rules::backoff::TooLong::PastDeadline });
//! ```

use std::time::Duration;

/// Why a retry is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// 503: the service is overloaded.
    Overloaded,
    /// 429: this caller is throttled.
    Throttled,
    /// 408, 500, 502, 504 or an error of the client after which the
    /// request may have reached the server.
    Transient,
    /// The server said it did not process the request (an HTTP/2 stream
    /// reset with `REFUSED_STREAM`, or excluded by a `GOAWAY` with
    /// `NO_ERROR`): sent again at once, whatever its
    /// method, as gRPC's transparent retry does. Retried by the layers that
    /// retry [`Transient`](Self::Transient) failures.
    Unprocessed,
    /// The client never established a connection (refused, unreachable, a
    /// DNS failure, a connect timeout, a TLS handshake cut off):
    /// nothing was sent, so it is sent again whatever its method, after
    /// the backoff of a [`Transient`](Self::Transient) failure (a closed
    /// port is not open a moment later). Retried by the layers that retry
    /// transient failures.
    NotConnected,
}

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first computed wait's upper bound, doubled per failure.
    /// Default 1 s: the SDK's first wait is 1–2 s (2⁰–2¹ s).
    pub base: Duration,
    /// The longest single wait. Default 60 s: the SDK's cap.
    pub max_wait: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max_wait: Duration::from_secs(60),
        }
    }
}

/// What to do about one failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Wait this long, then retry.
    Wait(Duration),
    /// Do not wait: the wait it would take is too long.
    GiveUp {
        /// The wait that was needed (at least the server's hint).
        wait: Duration,
        /// Why it was not started.
        why: TooLong,
    },
}

/// Why a wait was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TooLong {
    /// The server asked for more than the longest single wait.
    OverCap,
    /// The wait would end past the logical request's deadline.
    PastDeadline,
}

impl Backoff {
    /// The wait for `cause` after `failures` failed attempts (at least 1),
    /// given the server's hint and a random draw `r` in `[0, 1)`.
    pub fn wait(&self, cause: Cause, hint: Option<Duration>, failures: u32, r: f64) -> Duration {
        let r = if (0.0..1.0).contains(&r) { r } else { 0.0 };
        let ceiling = self.exponential(failures);
        match (cause, hint) {
            // Nothing was processed and nothing said to wait: no backoff.
            (Cause::Unprocessed, _) => Duration::ZERO,
            (Cause::Overloaded, Some(hint)) => hint.saturating_add(hint.mul_f64(0.2 * r)),
            (Cause::Throttled, Some(hint)) => hint.max(ceiling.mul_f64(r)),
            _ => {
                // A hint, whatever the cause, is a floor.
                let floor = ceiling / 2;
                let computed = floor.saturating_add(floor.mul_f64(r));
                computed.max(hint.unwrap_or_default())
            }
        }
    }

    /// Decides whether to wait, with `left` the time until the deadline.
    pub fn plan(
        &self,
        cause: Cause,
        hint: Option<Duration>,
        failures: u32,
        r: f64,
        left: Duration,
    ) -> Plan {
        let hint_over_cap = hint.is_some_and(|h| h > self.max_wait);
        let wait = self.wait(cause, hint, failures, r);
        if hint_over_cap {
            return Plan::GiveUp {
                wait,
                why: TooLong::OverCap,
            };
        }
        // The cap trims jitter and computed backoff, never the hint itself
        // (a hint over the cap was refused above).
        let wait = match hint {
            Some(hint) => wait.min(self.max_wait.max(hint)),
            None => wait.min(self.max_wait),
        };
        if wait > left {
            Plan::GiveUp {
                wait,
                why: TooLong::PastDeadline,
            }
        } else {
            Plan::Wait(wait)
        }
    }

    /// `base · 2^(failures)`, capped at `max_wait`, without overflow.
    fn exponential(&self, failures: u32) -> Duration {
        let doublings = failures.min(32);
        self.base
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(Duration::MAX)
            .min(self.max_wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn overloaded_stretches_the_hint_upward_only() {
        let b = Backoff::default();
        assert_eq!(b.wait(Cause::Overloaded, Some(S(10)), 1, 0.0), S(10));
        assert_eq!(b.wait(Cause::Overloaded, Some(S(10)), 1, 0.5), S(11));
        assert!(b.wait(Cause::Overloaded, Some(S(10)), 9, 0.999_999) < S(12));
        assert_eq!(
            b.wait(Cause::Overloaded, Some(Duration::ZERO), 3, 0.7),
            Duration::ZERO
        );
    }

    #[test]
    fn throttled_is_full_jitter_but_never_below_the_hint() {
        let b = Backoff::default();
        assert_eq!(b.wait(Cause::Throttled, Some(S(3)), 1, 0.0), S(3));
        assert_eq!(b.wait(Cause::Throttled, Some(S(3)), 3, 0.5), S(4)); // 0.5 × 8 s
        assert_eq!(b.wait(Cause::Throttled, Some(S(3)), 3, 0.25), S(3)); // 2 s < hint
    }

    #[test]
    fn without_a_hint_the_wait_doubles_within_bounds() {
        let b = Backoff::default();
        for cause in [Cause::Overloaded, Cause::Throttled, Cause::Transient] {
            assert_eq!(b.wait(cause, None, 1, 0.0), S(1));
            assert_eq!(b.wait(cause, None, 1, 0.5), Duration::from_millis(1500));
            assert_eq!(b.wait(cause, None, 3, 0.0), S(4));
            assert_eq!(
                b.wait(cause, None, 40, 0.0),
                S(30),
                "capped at 60 s, floor half of it"
            );
        }
    }

    #[test]
    fn plans_respect_cap_and_deadline() {
        let b = Backoff::default();
        assert_eq!(
            b.plan(Cause::Throttled, Some(S(61)), 1, 0.0, S(1000)),
            Plan::GiveUp {
                wait: S(61),
                why: TooLong::OverCap
            }
        );
        assert_eq!(
            b.plan(Cause::Overloaded, Some(S(60)), 1, 0.5, S(1000)),
            Plan::Wait(S(60)),
            "the cap trims jitter, never the hint"
        );
        assert_eq!(
            b.plan(Cause::Transient, None, 1, 0.0, Duration::from_millis(999)),
            Plan::GiveUp {
                wait: S(1),
                why: TooLong::PastDeadline
            }
        );
        assert_eq!(
            b.plan(Cause::Transient, None, 1, 0.0, S(1)),
            Plan::Wait(S(1))
        );
    }

    #[test]
    fn garbage_draws_and_huge_hints_do_not_panic() {
        let b = Backoff::default();
        for r in [f64::NAN, -1.0, 1.0, f64::INFINITY] {
            assert_eq!(b.wait(Cause::Throttled, None, u32::MAX, r), S(30));
        }
        let huge = Duration::MAX;
        assert_eq!(b.wait(Cause::Overloaded, Some(huge), 1, 0.9), huge);
        assert!(matches!(
            b.plan(Cause::Throttled, Some(huge), 1, 0.9, S(20)),
            Plan::GiveUp { .. }
        ));
    }
}
