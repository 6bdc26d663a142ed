//! The retry budget: retries may be at most a share of the requests of the
//! last few seconds, plus a reserve.
//!
//! Its rule, parameters and defaults are those of tower's
//! [`TpsBudget`](https://docs.rs/tower/0.5/tower/retry/budget/struct.TpsBudget.html)
//! (finagle's before it), to a tenth of `ttl`. It is our own because
//! tower's takes a mutex and reads the clock on every deposit, that is on
//! every request of every caller sharing it; this one is given the time
//! the request already read, and a deposit is one atomic update.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How many windows the time-to-live is cut into: a deposit counts until
/// its window is this many windows old.
const WINDOWS: u32 = 10;

/// Retries allowed as a share of recent requests, plus a reserve for when
/// there are few: [`RetryLayer`](super::RetryLayer)'s, or one shared by
/// several layers ([`with_budget`](super::RetryLayer::with_budget)).
///
/// Over any `ttl`, retries are at most `min_per_sec × ttl` plus
/// `retry_percent` of the logical requests: each request deposits, each
/// retry withdraws and is not made when the balance cannot pay for it,
/// and both count for `ttl` (to the nearest tenth of it). The reserve,
/// `min_per_sec × ttl` retries, is what lets a service with little traffic
/// retry at all.
///
/// ```
/// use std::time::Duration;
/// use tower_mpsd::retry::RetryBudget;
///
/// // 1 retry per second plus 10 % of requests, over 10 s.
/// let budget = RetryBudget::new(Duration::from_secs(10), 1, 0.1);
/// # drop(budget);
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    /// Window numbers count from here.
    epoch: Instant,
    window: Duration,
    /// Per window, by its number modulo [`WINDOWS`]: the number (high 32
    /// bits) and the balance of its deposits less its withdrawals (low 32
    /// bits, signed), in one word so that one update replaces a window
    /// gone stale and counts in the new one at once.
    windows: [AtomicU64; WINDOWS as usize],
    reserve: i64,
    deposit: i32,
    withdrawal: i32,
}

impl RetryBudget {
    /// Allows `min_per_sec` retries per second, plus `retry_percent` of
    /// the requests (0.2 for 20 %; up to 1000, a thousand retries per
    /// request), over the last `ttl` (from 1 to 60 s). Values outside
    /// these bounds are taken as the nearest bound.
    pub fn new(ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        let ttl = ttl.clamp(Duration::from_secs(1), Duration::from_secs(60));
        let percent = if retry_percent.is_nan() {
            0.0
        } else {
            retry_percent.clamp(0.0, 1000.0)
        };
        // In units such that a deposit and a withdrawal are whole: as
        // tower's, so the same parameters allow the same retries.
        let (deposit, withdrawal) = if percent == 0.0 {
            (0, 1)
        } else if percent <= 1.0 {
            (1, (1.0 / percent) as i32)
        } else {
            (1000, (1000.0 / percent) as i32)
        };
        let reserve = i64::from(min_per_sec)
            .saturating_mul(ttl.as_secs() as i64)
            .saturating_mul(i64::from(withdrawal));
        Self {
            epoch: Instant::now(),
            window: ttl / WINDOWS,
            windows: std::array::from_fn(|_| AtomicU64::new(0)),
            reserve,
            deposit,
            withdrawal,
        }
    }

    /// One logical request made at `now`.
    pub(crate) fn deposit(&self, now: Instant) {
        self.add(now, self.deposit);
    }

    /// One retry at `now`, if the balance pays for it.
    pub(crate) fn withdraw(&self, now: Instant) -> bool {
        let current = self.number(now);
        let recent: i64 = (self.windows.iter())
            .map(|slot| unpack(slot.load(Ordering::Acquire)))
            .filter(|&(number, _)| age(current, number) < WINDOWS as i32)
            .map(|(_, balance)| i64::from(balance))
            .sum();
        // Two retries at once may both find the last withdrawal's worth:
        // a budget is a bound on a rate, not an account.
        if self.reserve + recent < i64::from(self.withdrawal) {
            return false;
        }
        self.add(now, -self.withdrawal);
        true
    }

    /// The number of the window `now` falls in.
    fn number(&self, now: Instant) -> u32 {
        // In nanoseconds, a u64 division: u64 nanoseconds last 584 years,
        // and the window is at least 100 ms.
        let since = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        // Wraps after 2^32 windows (13 years of 100 ms ones): windows are
        // told apart by their distance only (`age`).
        (since / self.window.as_nanos() as u64) as u32
    }

    /// Adds `amount` to the balance of `now`'s window, starting it afresh
    /// when its slot holds an older window's. An instant older than the
    /// window held (a request that read the clock before another) counts
    /// in the window held.
    fn add(&self, now: Instant, amount: i32) {
        let number = self.number(now);
        let slot = &self.windows[(number % WINDOWS) as usize];
        let _ = slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
            let (held, balance) = unpack(word);
            Some(if age(number, held) > 0 {
                pack(number, amount)
            } else {
                pack(held, balance.saturating_add(amount))
            })
        });
    }
}

/// How many windows `number` is older than `current` (negative: newer).
fn age(current: u32, number: u32) -> i32 {
    current.wrapping_sub(number) as i32
}

/// 10 retries per second plus 20 % of requests, over 10 s: tower's
/// defaults.
impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 10, 0.2)
    }
}

fn pack(number: u32, balance: i32) -> u64 {
    (u64::from(number) << 32) | u64::from(balance as u32)
}

fn unpack(word: u64) -> (u32, i32) {
    ((word >> 32) as u32, word as u32 as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(min_per_sec: u32, percent: f32) -> RetryBudget {
        RetryBudget::new(Duration::from_secs(10), min_per_sec, percent)
    }

    fn withdrawals(budget: &RetryBudget, now: Instant) -> usize {
        (0..100_000).take_while(|_| budget.withdraw(now)).count()
    }

    #[tokio::test(start_paused = true)]
    async fn the_reserve_is_min_per_sec_times_ttl() {
        let b = budget(2, 0.0);
        assert_eq!(withdrawals(&b, Instant::now()), 20);
        // The withdrawals expire with their windows: the reserve is back.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(withdrawals(&b, Instant::now()), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_and_retries_each_count_for_the_ttl() {
        let b = budget(0, 0.2);
        for _ in 0..100 {
            b.deposit(Instant::now());
        }
        tokio::time::advance(Duration::from_millis(9_500)).await;
        assert_eq!(withdrawals(&b, Instant::now()), 20, "20 % of 100");
        tokio::time::advance(Duration::from_millis(600)).await;
        for _ in 0..100 {
            b.deposit(Instant::now());
        }
        assert_eq!(
            withdrawals(&b, Instant::now()),
            0,
            "the first 100 expired; the 20 retries of the last 10 s used the next 100's share"
        );
        tokio::time::advance(Duration::from_millis(9_500)).await;
        assert_eq!(
            withdrawals(&b, Instant::now()),
            20,
            "the 20 retries expired"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_percent_above_one_allows_more_retries_than_requests() {
        let b = budget(0, 2.0);
        for _ in 0..10 {
            b.deposit(Instant::now());
        }
        assert_eq!(withdrawals(&b, Instant::now()), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_instant_counts_in_the_window_held() {
        let b = budget(0, 1.0);
        let before = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        b.deposit(Instant::now());
        b.deposit(before);
        assert_eq!(withdrawals(&b, Instant::now()), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_balance_saturates_and_bounds_are_taken_as_the_nearest() {
        let b = RetryBudget::new(Duration::ZERO, u32::MAX, f32::NAN);
        assert_eq!(b.window, Duration::from_millis(100), "ttl 1 s");
        assert_eq!((b.deposit, b.withdrawal), (0, 1));
        let b = RetryBudget::new(Duration::from_secs(600), u32::MAX, 1e-12);
        assert_eq!((b.window, b.withdrawal), (Duration::from_secs(6), i32::MAX));
        assert_eq!(b.reserve, i64::MAX, "saturated, not overflowed");
        let b = budget(0, 1000.0);
        for _ in 0..3 {
            b.add(Instant::now(), i32::MAX / 2);
        }
        assert_eq!(unpack(b.windows[0].load(Ordering::Relaxed)).1, i32::MAX);
    }

    /// Deposits from many threads at once into one window: none is lost.
    #[test]
    fn concurrent_deposits_all_count() {
        let b = std::sync::Arc::new(budget(0, 1.0));
        let now = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..10_000).for_each(|_| b.deposit(now)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(withdrawals(&b, now), 40_000);
    }

    #[test]
    fn a_word_holds_a_number_and_a_signed_balance() {
        for (number, balance) in [(0, 0), (7, -5), (u32::MAX, i32::MIN), (1, i32::MAX)] {
            assert_eq!(unpack(pack(number, balance)), (number, balance));
        }
    }
}
