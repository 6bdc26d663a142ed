//! The pure maths of pacing: two sliding windows per key, in the same
//! terms as the service counts them, and the table of keys. No I/O; the
//! current instant is a parameter.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use http::{Method, Uri};
use tokio::time::Instant;

/// One sliding window: at most `max` requests in any `period`. A request
/// counts while it is strictly younger than `period`, as at MPSD (and in
/// the crate's simulator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Window {
    /// Requests allowed in one period; at least 1.
    pub max: u32,
    /// The window's length.
    pub period: Duration,
}

impl Window {
    /// At most `max` requests in any `period`.
    ///
    /// # Panics
    ///
    /// When `max` is zero: such a window would never open.
    #[track_caller]
    pub fn new(max: u32, period: Duration) -> Self {
        assert!(max > 0, "a window must admit at least one request");
        Self { max, period }
    }
}

/// A burst and a sustain window, both enforced at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The short window.
    pub burst: Window,
    /// The long window.
    pub sustain: Window,
}

impl Limits {
    /// Both windows at once.
    pub fn new(burst: Window, sustain: Window) -> Self {
        Self { burst, sustain }
    }

    /// MPSD's documented per-user limits: 30 requests per 15 s (burst) and
    /// 300 per 300 s (sustain).
    pub fn mpsd() -> Self {
        Self::new(
            Window::new(30, Duration::from_secs(15)),
            Window::new(300, Duration::from_secs(300)),
        )
    }

    /// MPSD's documented per-user limits for handle queries
    /// (`POST /handles/query`): 1 per 15 s and 20 per 300 s.
    pub fn mpsd_handle_query() -> Self {
        Self::new(
            Window::new(1, Duration::from_secs(15)),
            Window::new(20, Duration::from_secs(300)),
        )
    }

    fn windows(&self) -> [Window; 2] {
        [self.burst, self.sustain]
    }

    /// How many of the newest sends decide the next slot.
    fn depth(&self) -> usize {
        self.burst.max.max(self.sustain.max) as usize
    }

    /// One process's share of these windows in a fleet of `members`:
    /// each `max` divided by `members`, rounded down so that the shares
    /// add up to no more than the whole, and at least 1 (a window of fewer
    /// sends than members cannot be split).
    pub(crate) fn share(&self, members: u32) -> Self {
        let part = |w: Window| Window {
            max: (w.max / members.max(1)).max(1),
            period: w.period,
        };
        Self::new(part(self.burst), part(self.sustain))
    }

    pub(crate) fn longest(&self) -> Duration {
        self.burst.period.max(self.sustain.period)
    }
}

impl Default for Limits {
    /// [`Limits::mpsd`].
    fn default() -> Self {
        Self::mpsd()
    }
}

/// The send times of one key under one pair of windows, oldest first,
/// never decreasing, and no more of them than the larger `max` (older ones
/// can no longer decide anything).
#[derive(Debug, Default, Clone)]
pub(crate) struct History {
    sends: VecDeque<Instant>,
}

impl History {
    /// The earliest instant, not before `now` nor before the newest send,
    /// at which one more send keeps both windows within their `max`, with
    /// `margin` added to each period.
    ///
    /// At instant `t` a window holds the sends `s` with `t - s < period`;
    /// once the `max`-th newest send is `period` old, at most `max - 1`
    /// remain in it, and since sends never decrease no earlier `t` will do.
    pub(crate) fn next_slot(&self, limits: &Limits, margin: Duration, now: Instant) -> Instant {
        let mut slot = self.sends.back().map_or(now, |&newest| newest.max(now));
        for window in limits.windows() {
            let max = window.max as usize;
            if let Some(index) = self.sends.len().checked_sub(max) {
                slot = slot.max(self.sends[index] + window.period + margin);
            }
        }
        slot
    }

    /// Records a send at `at`, which must not be before the newest one
    /// (see [`next_slot`](Self::next_slot)).
    pub(crate) fn record(&mut self, at: Instant, limits: &Limits) {
        debug_assert!(self.sends.back().map_or(true, |&newest| newest <= at));
        self.sends.push_back(at);
        while self.sends.len() > limits.depth() {
            self.sends.pop_front();
        }
    }

    /// Whether every send is old enough to be forgotten at `now`.
    pub(crate) fn idle(&self, limits: &Limits, margin: Duration, now: Instant) -> bool {
        self.sends
            .back()
            .map_or(true, |&newest| newest + limits.longest() + margin <= now)
    }

    fn newest(&self) -> Option<Instant> {
        self.sends.back().copied()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sends.len()
    }
}

/// Which requests a [`Route`] adds its own limits to: an optional method
/// and a path whose `/`-separated segments are matched one for one, ASCII
/// case-insensitively, with `*` matching any one segment. The query string
/// is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    method: Option<Method>,
    segments: Vec<String>,
}

impl Pattern {
    /// Parses `"[METHOD ]/segment/*/segment"`, or `None` if it is not of
    /// that form.
    pub(crate) fn parse(pattern: &str) -> Option<Self> {
        let pattern = pattern.trim();
        let (method, path) = match pattern.split_once(' ') {
            Some((method, path)) => (Some(method.parse().ok()?), path.trim()),
            None => (None, pattern),
        };
        if !path.starts_with('/') || path.contains('?') {
            return None;
        }
        let segments = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Some(Self { method, segments })
    }

    pub(crate) fn matches(&self, method: &Method, uri: &Uri) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        let mut path = uri.path().split('/').filter(|s| !s.is_empty());
        let mut pattern = self.segments.iter();
        loop {
            match (pattern.next(), path.next()) {
                (None, None) => return true,
                (Some(want), Some(got)) if want == "*" || want.eq_ignore_ascii_case(got) => {}
                _ => return false,
            }
        }
    }
}

/// Every key's histories: one for the limits all requests share, and one
/// per route. Bounded to `max_keys` keys.
#[derive(Debug)]
pub(crate) struct Table {
    limits: Limits,
    routes: Vec<Limits>,
    margin: Duration,
    max_keys: usize,
    keys: HashMap<String, Histories>,
}

#[derive(Debug)]
struct Histories {
    all: History,
    routes: Vec<History>,
    /// No slot before this: learnt from a 429 (see [`Table::learn`]).
    floor: Option<Instant>,
    /// How many processes of a fleet last sent for this key within its
    /// longest window, as a shared store counted them (0: not known).
    #[cfg(feature = "redis")]
    senders: u32,
}

impl Histories {
    fn new(routes: usize) -> Self {
        Self {
            all: History::default(),
            routes: vec![History::default(); routes],
            floor: None,
            #[cfg(feature = "redis")]
            senders: 0,
        }
    }

    fn newest(&self) -> Option<Instant> {
        self.routes
            .iter()
            .filter_map(History::newest)
            .chain(self.all.newest())
            .chain(self.floor)
            .max()
    }
}

impl Table {
    pub(crate) fn new(
        limits: Limits,
        routes: Vec<Limits>,
        margin: Duration,
        max_keys: usize,
    ) -> Self {
        Self {
            limits,
            routes,
            margin,
            max_keys,
            keys: HashMap::new(),
        }
    }

    /// The earliest slot for a request of `key` that also falls under the
    /// routes at `matched` (indexes into the routes), not before `now`.
    /// When the slot is no later than `deadline` it is taken (recorded in
    /// every history it is counted in) and `Ok`; otherwise nothing is
    /// recorded and `Err` holds the slot.
    pub(crate) fn reserve(
        &mut self,
        key: &str,
        matched: &[usize],
        now: Instant,
        deadline: Instant,
    ) -> Result<Instant, Instant> {
        self.reserve_share(key, matched, now, deadline, 1)
    }

    /// As [`reserve`](Self::reserve), by one process's share of every
    /// window in a fleet of `members` ([`Limits::share`]).
    pub(crate) fn reserve_share(
        &mut self,
        key: &str,
        matched: &[usize],
        now: Instant,
        deadline: Instant,
        members: u32,
    ) -> Result<Instant, Instant> {
        let slot = self.next_slot(key, matched, now, members);
        if slot > deadline {
            return Err(slot);
        }
        self.record(key, matched, slot, now);
        Ok(slot)
    }

    /// The earliest slot for a request of `key` under the routes at
    /// `matched`, by this process's share of the windows in a fleet of
    /// `members`; nothing is taken.
    pub(crate) fn next_slot(
        &self,
        key: &str,
        matched: &[usize],
        now: Instant,
        members: u32,
    ) -> Instant {
        let margin = self.margin;
        let Some(h) = self.keys.get(key) else {
            return now;
        };
        matched
            .iter()
            .filter_map(|&i| {
                let limits = self.routes.get(i)?.share(members);
                Some(h.routes.get(i)?.next_slot(&limits, margin, now))
            })
            .chain(h.floor)
            .fold(
                h.all.next_slot(&self.limits.share(members), margin, now),
                Instant::max,
            )
    }

    /// Counts a send of `key` at `slot` (one taken here, or in a store
    /// shared with other processes) in its histories. A slot before the
    /// newest one counts as at the newest: histories never go back.
    pub(crate) fn record(&mut self, key: &str, matched: &[usize], slot: Instant, now: Instant) {
        self.ensure(key, now);
        let histories = self.keys.get_mut(key).expect("ensured above");
        let slot = slot.max(histories.all.newest().unwrap_or(slot));
        histories.all.record(slot, &self.limits);
        for &i in matched {
            if let (Some(history), Some(limits)) = (histories.routes.get_mut(i), self.routes.get(i))
            {
                let slot = slot.max(history.newest().unwrap_or(slot));
                history.record(slot, limits);
            }
        }
    }

    /// How many processes of a fleet sent for `key` lately, as last
    /// counted (0: not known).
    #[cfg(feature = "redis")]
    pub(crate) fn senders(&self, key: &str) -> u32 {
        self.keys.get(key).map_or(0, |h| h.senders)
    }

    /// Notes how many processes of a fleet sent for `key` lately.
    #[cfg(feature = "redis")]
    pub(crate) fn note_senders(&mut self, key: &str, senders: u32) {
        if let Some(histories) = self.keys.get_mut(key) {
            histories.senders = senders;
        }
    }

    /// No slot for `key` before `until`: the service said (with a 429)
    /// that the key's window is full until then.
    pub(crate) fn learn(&mut self, key: &str, until: Instant, now: Instant) {
        self.ensure(key, now);
        let histories = self.keys.get_mut(key).expect("ensured above");
        histories.floor = histories.floor.max(Some(until));
    }

    /// Makes `key`'s histories (making room first) when it has none.
    fn ensure(&mut self, key: &str, now: Instant) {
        if !self.keys.contains_key(key) {
            self.make_room(now);
            let histories = Histories::new(self.routes.len());
            self.keys.insert(key.to_owned(), histories);
        }
    }

    /// Before a new key is added: forgets idle keys once the table is
    /// full, and if none is idle, the key whose newest send is oldest.
    fn make_room(&mut self, now: Instant) {
        if self.keys.len() < self.max_keys {
            return;
        }
        let (limits, routes, margin) = (&self.limits, &self.routes, self.margin);
        self.keys.retain(|_, h| {
            !(h.all.idle(limits, margin, now)
                && h.floor.map_or(true, |floor| floor <= now)
                && h.routes
                    .iter()
                    .zip(routes)
                    .all(|(h, l)| h.idle(l, margin, now)))
        });
        while self.keys.len() >= self.max_keys.max(1) {
            let oldest = self
                .keys
                .iter()
                .min_by_key(|(_, h)| h.newest())
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => self.keys.remove(&key),
                None => break,
            };
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn small() -> Limits {
        Limits::new(Window::new(3, secs(10)), Window::new(5, secs(100)))
    }

    /// Sends at `times` (seconds after t0), each taken at its next slot when
    /// asked at that time; returns the slots as seconds after t0.
    fn slots(limits: Limits, margin: Duration, asks: &[u64]) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut h = History::default();
        asks.iter()
            .map(|&ask| {
                let slot = h.next_slot(&limits, margin, t0 + secs(ask));
                h.record(slot, &limits);
                slot - t0
            })
            .collect()
    }

    #[test]
    fn mpsd_defaults() {
        let l = Limits::mpsd();
        assert_eq!((l.burst.max, l.burst.period), (30, secs(15)));
        assert_eq!((l.sustain.max, l.sustain.period), (300, secs(300)));
        let q = Limits::mpsd_handle_query();
        assert_eq!((q.burst.max, q.burst.period), (1, secs(15)));
        assert_eq!((q.sustain.max, q.sustain.period), (20, secs(300)));
        assert_eq!(Limits::default(), l);
    }

    #[test]
    #[should_panic(expected = "at least one request")]
    fn a_window_of_zero_panics() {
        let _ = Window::new(0, secs(1));
    }

    #[test]
    fn a_burst_then_the_oldest_leaving_opens_the_next_slot() {
        // 3 per 10 s: three at once, the fourth when the first is 10 s old.
        let got = slots(small(), Duration::ZERO, &[0, 0, 0, 0, 0]);
        assert_eq!(got, [0, 0, 0, 10, 10].map(secs));
    }

    #[test]
    fn the_sustain_window_holds_after_the_burst_drains() {
        // 5 per 100 s: after five, the sixth waits for the first to leave.
        let got = slots(small(), Duration::ZERO, &[0; 8]);
        assert_eq!(got, [0, 0, 0, 10, 10, 100, 100, 100].map(secs));
    }

    #[test]
    fn spread_out_sends_never_wait() {
        let got = slots(small(), Duration::ZERO, &[0, 30, 60, 90]);
        assert_eq!(got, [0, 30, 60, 90].map(secs));
    }

    #[test]
    fn the_margin_is_added_to_each_period() {
        let m = Duration::from_millis(100);
        let got = slots(small(), m, &[0, 0, 0, 0]);
        assert_eq!(got[3], secs(10) + m);
    }

    #[test]
    fn slots_never_go_back_in_time() {
        let t0 = Instant::now();
        let mut h = History::default();
        let l = small();
        h.record(t0 + secs(50), &l);
        assert_eq!(h.next_slot(&l, Duration::ZERO, t0), t0 + secs(50));
    }

    #[test]
    fn only_the_larger_max_of_sends_is_kept() {
        let t0 = Instant::now();
        let mut h = History::default();
        for _ in 0..50 {
            h.record(t0, &small());
        }
        assert_eq!(h.len(), 5);
        assert!(!h.idle(&small(), Duration::ZERO, t0 + secs(99)));
        assert!(h.idle(&small(), Duration::ZERO, t0 + secs(100)));
    }

    /// The simulator's rule, restated: a send at `t` passes when fewer than
    /// `max` earlier sends are strictly younger than `period`, for both
    /// windows.
    fn passes(earlier: &[Instant], t: Instant, l: &Limits) -> bool {
        l.windows()
            .iter()
            .all(|w| earlier.iter().filter(|&&s| t - s < w.period).count() < w.max as usize)
    }

    proptest! {
        /// Every slot passes the service's rule, and no earlier instant
        /// would have (the slot is the earliest possible).
        #[test]
        fn slots_are_exactly_the_earliest_that_pass(
            burst in 1u32..6, sustain in 1u32..12,
            burst_s in 1u64..20, sustain_s in 1u64..60,
            asks in proptest::collection::vec(0u64..200, 1..60),
        ) {
            let l = Limits::new(Window::new(burst, secs(burst_s)), Window::new(sustain, secs(sustain_s)));
            let t0 = Instant::now();
            let mut asks = asks;
            asks.sort_unstable();
            let mut h = History::default();
            let mut sent: Vec<Instant> = Vec::new();
            for ask in asks {
                let now = t0 + secs(ask);
                let slot = h.next_slot(&l, Duration::ZERO, now);
                prop_assert!(slot >= now);
                prop_assert!(passes(&sent, slot, &l), "slot {:?} would be throttled", slot - t0);
                let earliest = sent.last().map_or(now, |&s| s.max(now));
                if slot > earliest {
                    let just_before = slot - Duration::from_nanos(1);
                    prop_assert!(!passes(&sent, just_before, &l));
                }
                h.record(slot, &l);
                sent.push(slot);
            }
        }
    }

    #[test]
    fn patterns_parse_and_match() {
        let p = Pattern::parse("POST /handles/query").unwrap();
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert!(p.matches(&Method::POST, &uri("http://h/handles/query")));
        assert!(p.matches(&Method::POST, &uri("http://h/Handles/QUERY?x=1")));
        assert!(!p.matches(&Method::GET, &uri("http://h/handles/query")));
        assert!(!p.matches(&Method::POST, &uri("http://h/handles")));
        assert!(!p.matches(&Method::POST, &uri("http://h/handles/query/x")));
        let any = Pattern::parse("/serviceconfigs/*/sessions").unwrap();
        assert!(any.matches(&Method::GET, &uri("/serviceconfigs/abc/sessions")));
        assert!(any.matches(&Method::PUT, &uri("/serviceconfigs//abc/sessions/")));
        assert!(!any.matches(&Method::GET, &uri("/serviceconfigs/sessions")));
        assert_eq!(Pattern::parse("/").unwrap().segments.len(), 0);
        assert!(Pattern::parse("/")
            .unwrap()
            .matches(&Method::GET, &uri("/")));
        for bad in ["", "handles", "POST handles", "B@D /x", "/x?y=1"] {
            assert_eq!(Pattern::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_route_adds_its_limits_and_its_requests_count_in_both() {
        let t0 = Instant::now();
        let mut t = Table::new(
            small(),
            vec![Limits::mpsd_handle_query()],
            Duration::ZERO,
            10,
        );
        let far = t0 + secs(1000);
        assert_eq!(t.reserve("u", &[0], t0, far), Ok(t0));
        // The route's burst (1 per 15 s) holds the next query back ...
        assert_eq!(t.reserve("u", &[0], t0, far), Ok(t0 + secs(15)));
        // ... and the shared windows count both: a third of 3 per 10 s
        // would be at t0, but the history never goes back before 15 s.
        assert_eq!(t.reserve("u", &[], t0, far), Ok(t0 + secs(15)));
        // Other keys are apart.
        assert_eq!(t.reserve("v", &[0], t0, far), Ok(t0));
        // Unknown route indexes are ignored rather than trusted.
        assert_eq!(t.reserve("w", &[7], t0, far), Ok(t0));
    }

    #[test]
    fn a_slot_past_the_deadline_is_not_taken() {
        let t0 = Instant::now();
        let mut t = Table::new(small(), Vec::new(), Duration::ZERO, 10);
        for _ in 0..3 {
            t.reserve("u", &[], t0, t0).unwrap();
        }
        assert_eq!(t.reserve("u", &[], t0, t0 + secs(9)), Err(t0 + secs(10)));
        assert_eq!(t.reserve("u", &[], t0, t0 + secs(9)), Err(t0 + secs(10)));
        assert_eq!(t.reserve("u", &[], t0, t0 + secs(10)), Ok(t0 + secs(10)));
    }

    #[test]
    fn shares_add_up_to_no_more_than_the_windows_and_are_at_least_one() {
        let mpsd = Limits::mpsd();
        for members in 0..=400u32 {
            let share = mpsd.share(members);
            for (part, whole) in [(share.burst, mpsd.burst), (share.sustain, mpsd.sustain)] {
                assert_eq!(part.period, whole.period);
                assert!(part.max >= 1);
                if members >= 1 && members <= whole.max {
                    assert!(part.max * members <= whole.max, "{members}: {part:?}");
                    assert!(
                        (part.max + 1) * members > whole.max,
                        "rounded down by less than one"
                    );
                }
            }
        }
        assert_eq!(mpsd.share(4).burst.max, 7);
        assert_eq!(mpsd.share(1), mpsd);
    }

    #[test]
    fn a_share_paces_by_this_processs_own_sends() {
        let t0 = Instant::now();
        // 3 per 10 s and 5 per 100 s, split two ways: 1 per 10 s, 2 per 100 s.
        let mut t = Table::new(small(), Vec::new(), Duration::ZERO, 10);
        let far = t0 + secs(1000);
        let share = |t: &mut Table, at| t.reserve_share("u", &[], at, far, 2);
        assert_eq!(share(&mut t, t0), Ok(t0));
        assert_eq!(share(&mut t, t0), Ok(t0 + secs(10)));
        assert_eq!(share(&mut t, t0), Ok(t0 + secs(100)));
        // The whole windows count the same sends: room for more.
        assert_eq!(t.next_slot("u", &[], t0 + secs(100), 1), t0 + secs(100));
    }

    #[test]
    fn the_table_of_keys_is_bounded() {
        let t0 = Instant::now();
        let mut t = Table::new(small(), vec![small()], Duration::ZERO, 3);
        let far = t0 + secs(10_000);
        for k in ["a", "b", "c"] {
            t.reserve(k, &[0], t0, far).unwrap();
        }
        t.reserve("a", &[], t0 + secs(1), far).unwrap();
        t.reserve("c", &[], t0 + secs(1), far).unwrap();
        // Full, none idle: the key whose newest send is oldest ("b") goes.
        t.reserve("d", &[], t0 + secs(2), far).unwrap();
        assert_eq!(t.len(), 3);
        assert!(t.keys.contains_key("a") && !t.keys.contains_key("b"));
        // Long after, every idle key is forgotten at once.
        t.reserve("e", &[], t0 + secs(500), far).unwrap();
        assert_eq!(t.len(), 1);
        let mut none = Table::new(small(), Vec::new(), Duration::ZERO, 0);
        none.reserve("a", &[], t0, far).unwrap();
        assert_eq!(none.len(), 1, "a bound of zero still paces the current key");
    }
}
