//! Fine-grained rate limiting per user and overload shedding: pure state
//! machines that take the current `tokio::time::Instant` as a parameter.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

/// One rate-limit window: at most `max` requests in any `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Requests allowed in one period.
    pub max: u32,
    /// The window's length.
    pub period: Duration,
}

/// MPSD's fine-grained rate limits: a burst and a sustain window, both
/// enforced at once, per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// The short window.
    pub burst: Window,
    /// The long window.
    pub sustain: Window,
}

impl RateLimits {
    /// MPSD's documented limits: 30 requests per 15 s and 300 per 300 s.
    pub fn mpsd() -> Self {
        Self {
            burst: Window {
                max: 30,
                period: Duration::from_secs(15),
            },
            sustain: Window {
                max: 300,
                period: Duration::from_secs(300),
            },
        }
    }

    /// These limits with both request counts multiplied by `factor`
    /// (rounded, at least 1); the periods stay. `scaled(0.1)` of
    /// [`mpsd`](Self::mpsd) allows 3 per 15 s and 30 per 300 s.
    pub fn scaled(self, factor: f64) -> Self {
        let scale = |w: Window| Window {
            // `as` saturates, and maps NaN to 0; `max(1)` keeps a window usable.
            max: ((f64::from(w.max) * factor).round() as u32).max(1),
            period: w.period,
        };
        Self {
            burst: scale(self.burst),
            sustain: scale(self.sustain),
        }
    }
}

impl Default for RateLimits {
    /// [`RateLimits::mpsd`].
    fn default() -> Self {
        Self::mpsd()
    }
}

/// Overload shedding: at most `capacity` requests in each fixed `window`
/// (counted from the server's start); the rest get 503 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overload {
    /// Requests served per window.
    pub capacity: u32,
    /// The window's length.
    pub window: Duration,
}

/// Whole seconds in `d`, rounded up, at least 1: a `Retry-After` of 0
/// would invite an immediate retry that is refused again.
pub(crate) fn retry_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// A throttled request: what the 429 says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Throttled {
    /// Seconds until one more request would pass.
    pub(crate) retry_after: u64,
    /// Requests in the tripped window, this one included.
    pub(crate) current: usize,
    /// The tripped window.
    pub(crate) window: Window,
}

impl Throttled {
    /// The documented 429 body.
    pub(crate) fn body(&self) -> String {
        json!({
            "version": 1,
            "currentRequests": self.current,
            "maxRequests": self.window.max,
            "periodInSeconds": retry_secs(self.window.period),
            "limitType": "Rate",
        })
        .to_string()
    }
}

/// Users are forgotten lazily, once per this many requests.
const PRUNE_EVERY: u32 = 1024;

/// Per-user sliding-window rate limiter over two windows.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limits: RateLimits,
    /// Each user's request times, oldest first.
    users: HashMap<String, VecDeque<Instant>>,
    since_prune: u32,
}

impl RateLimiter {
    pub(crate) fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            users: HashMap::new(),
            since_prune: 0,
        }
    }

    pub(crate) fn set_limits(&mut self, limits: RateLimits) {
        self.limits = limits;
    }

    fn longest(&self) -> Duration {
        self.limits.burst.period.max(self.limits.sustain.period)
    }

    /// Records a request by `user` at `now` and says whether it is throttled.
    /// Throttled requests are recorded too: MPSD counts them, so a client
    /// that keeps sending while throttled stays throttled.
    pub(crate) fn check(&mut self, user: &str, now: Instant) -> Result<(), Throttled> {
        self.prune(now);
        let longest = self.longest();
        // Four sustain windows' worth bounds memory per user.
        let cap = 4 * self.limits.sustain.max.max(self.limits.burst.max).max(1) as usize;
        let history = match self.users.get_mut(user) {
            Some(history) => history,
            None => self.users.entry(user.to_owned()).or_default(),
        };
        history.push_back(now);
        while history.len() > cap || history.front().is_some_and(|&t| now - t >= longest) {
            history.pop_front();
        }
        let burst = tripped(history, self.limits.burst, now);
        let sustain = tripped(history, self.limits.sustain, now);
        match (burst, sustain) {
            (None, None) => Ok(()),
            // The body names the burst window; the wait covers both.
            (Some(burst), sustain) => Err(Throttled {
                retry_after: burst.retry_after.max(sustain.map_or(0, |s| s.retry_after)),
                ..burst
            }),
            (None, Some(sustain)) => Err(sustain),
        }
    }

    fn prune(&mut self, now: Instant) {
        self.since_prune += 1;
        if self.since_prune < PRUNE_EVERY {
            return;
        }
        self.since_prune = 0;
        let longest = self.longest();
        self.users
            .retain(|_, history| history.back().is_some_and(|&t| now - t < longest));
    }
}

/// Whether the request just recorded at the back of `history` trips `window`.
fn tripped(history: &VecDeque<Instant>, window: Window, now: Instant) -> Option<Throttled> {
    let current = history
        .iter()
        .rev()
        .take_while(|&&t| now - t < window.period)
        .count();
    let max = window.max as usize;
    // Throttled when the requests before this one already filled the window.
    if current <= max {
        return None;
    }
    // One more request passes once at most `max - 1` recorded ones are in
    // the window, i.e. once the `max`-th newest has left it.
    let oldest_to_leave = history[history.len() - max.max(1)];
    Some(Throttled {
        retry_after: retry_secs(oldest_to_leave + window.period - now),
        current,
        window,
    })
}

/// Fixed-window overload shedder.
#[derive(Debug)]
pub(crate) struct Shedder {
    start: Instant,
    overload: Option<Overload>,
    /// The index of the current window since `start`.
    window: u128,
    served: u32,
}

impl Shedder {
    pub(crate) fn new(start: Instant, overload: Option<Overload>) -> Self {
        Self {
            start,
            overload,
            window: 0,
            served: 0,
        }
    }

    /// Replaces the setting; the current window starts counting afresh.
    pub(crate) fn set(&mut self, overload: Option<Overload>) {
        self.overload = overload;
        self.served = 0;
    }

    /// `Err(seconds until the window ends)` when the request is shed.
    pub(crate) fn check(&mut self, now: Instant) -> Result<(), u64> {
        let Some(overload) = self.overload else {
            return Ok(());
        };
        let length = overload.window.as_nanos().max(1);
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        let window = elapsed / length;
        if window != self.window {
            self.window = window;
            self.served = 0;
        }
        if self.served < overload.capacity {
            self.served += 1;
            return Ok(());
        }
        let left = (window + 1) * length - elapsed;
        Err(retry_secs(Duration::from_nanos(
            u64::try_from(left).unwrap_or(u64::MAX),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn small() -> RateLimits {
        RateLimits {
            burst: Window {
                max: 3,
                period: secs(10),
            },
            sustain: Window {
                max: 5,
                period: secs(100),
            },
        }
    }

    #[test]
    fn mpsd_and_scaled() {
        let l = RateLimits::mpsd();
        assert_eq!((l.burst.max, l.burst.period), (30, secs(15)));
        assert_eq!((l.sustain.max, l.sustain.period), (300, secs(300)));
        let s = l.scaled(0.1);
        assert_eq!((s.burst.max, s.sustain.max), (3, 30));
        assert_eq!(s.burst.period, secs(15));
        assert_eq!(l.scaled(0.0).burst.max, 1);
        assert_eq!(l.scaled(f64::NAN).sustain.max, 1);
        assert_eq!(l.scaled(2.0).sustain.max, 600);
        assert_eq!(RateLimits::default(), l);
    }

    #[test]
    fn retry_secs_rounds_up_to_at_least_one() {
        assert_eq!(retry_secs(Duration::ZERO), 1);
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(secs(2)), 2);
        assert_eq!(retry_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn burst_trips_after_max_and_reports_the_drain_time() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(small());
        for i in 0..3 {
            assert_eq!(rl.check("u", t0 + secs(i)), Ok(()), "request {i}");
        }
        let throttled = rl.check("u", t0 + secs(3)).unwrap_err();
        // Requests at 0, 1, 2, 3: the one at 1 must leave (at 11) for one more.
        assert_eq!(throttled.retry_after, 8);
        assert_eq!(throttled.current, 4);
        assert_eq!(throttled.window, small().burst);
        let body: serde_json::Value = serde_json::from_str(&throttled.body()).unwrap();
        assert_eq!(
            body,
            json!({"version":1,"currentRequests":4,"maxRequests":3,"periodInSeconds":10,"limitType":"Rate"})
        );
    }

    #[test]
    fn other_users_are_not_affected() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(small());
        for _ in 0..3 {
            rl.check("a", t0).unwrap();
        }
        assert!(rl.check("a", t0).is_err());
        assert_eq!(rl.check("b", t0), Ok(()));
    }

    #[test]
    fn window_is_strictly_younger_than_period() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(small());
        for _ in 0..3 {
            rl.check("u", t0).unwrap();
        }
        assert!(rl.check("u", t0 + Duration::from_millis(9_999)).is_err());
        // At exactly t0 + 10 s the first three have left; the throttled one
        // at 9.999 s still counts, so this is the second of three.
        assert_eq!(rl.check("u", t0 + secs(10)), Ok(()));
    }

    #[test]
    fn throttled_requests_count_so_hammering_stays_throttled() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(small());
        for _ in 0..3 {
            rl.check("u", t0).unwrap();
        }
        // Keep sending once a second: every window holds >= 3 requests.
        for s in 1..30 {
            assert!(rl.check("u", t0 + secs(s)).is_err(), "at {s}s");
        }
    }

    #[test]
    fn waiting_out_retry_after_lets_the_next_request_through() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(small());
        for _ in 0..3 {
            rl.check("u", t0).unwrap();
        }
        let wait = rl.check("u", t0 + secs(4)).unwrap_err().retry_after;
        assert_eq!(wait, 6);
        assert_eq!(rl.check("u", t0 + secs(4 + wait)), Ok(()));
    }

    #[test]
    fn sustain_trips_and_reports_its_window() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(small());
        // Spread out so the burst window never fills.
        for i in 0..5 {
            rl.check("u", t0 + secs(i * 10)).unwrap();
        }
        let throttled = rl.check("u", t0 + secs(50)).unwrap_err();
        assert_eq!(throttled.window, small().sustain);
        assert_eq!(throttled.current, 6);
        // Requests at 0..=50 step 10; the one at 10 must leave (at 110).
        assert_eq!(throttled.retry_after, 60);
    }

    #[test]
    fn both_tripped_names_burst_and_waits_for_both() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimits {
            burst: Window {
                max: 2,
                period: secs(10),
            },
            sustain: Window {
                max: 2,
                period: secs(100),
            },
        });
        rl.check("u", t0).unwrap();
        rl.check("u", t0).unwrap();
        let throttled = rl.check("u", t0 + secs(1)).unwrap_err();
        assert_eq!(throttled.window.period, secs(10));
        assert_eq!(throttled.retry_after, 99);
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(small());
        for _ in 0..1000 {
            let _ = rl.check("u", t0);
        }
        assert_eq!(rl.users["u"].len(), 20);
        for i in 0..PRUNE_EVERY {
            let _ = rl.check(&format!("user{i}"), t0);
        }
        // Long after the sustain period everyone is forgotten on the next prune.
        for _ in 0..PRUNE_EVERY {
            let _ = rl.check("late", t0 + secs(1000));
        }
        assert_eq!(rl.users.len(), 1);
    }

    #[test]
    fn zero_max_always_throttles() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimits {
            burst: Window {
                max: 0,
                period: secs(10),
            },
            sustain: small().sustain,
        });
        assert_eq!(rl.check("u", t0).unwrap_err().retry_after, 10);
    }

    #[test]
    fn shedder_serves_capacity_per_fixed_window() {
        let t0 = Instant::now();
        let overload = Overload {
            capacity: 2,
            window: secs(10),
        };
        let mut shed = Shedder::new(t0, Some(overload));
        assert_eq!(shed.check(t0 + secs(1)), Ok(()));
        assert_eq!(shed.check(t0 + secs(2)), Ok(()));
        assert_eq!(shed.check(t0 + Duration::from_millis(2500)), Err(8));
        assert_eq!(shed.check(t0 + Duration::from_millis(9999)), Err(1));
        assert_eq!(shed.check(t0 + secs(10)), Ok(()));
        assert_eq!(shed.check(t0 + secs(15)), Ok(()));
        assert_eq!(shed.check(t0 + secs(19)), Err(1));
        shed.set(None);
        assert_eq!(shed.check(t0 + secs(19)), Ok(()));
        shed.set(Some(Overload {
            capacity: 0,
            ..overload
        }));
        assert_eq!(shed.check(t0 + secs(21)), Err(9));
    }
}
