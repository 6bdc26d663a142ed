//! The cooldowns this process has heard of: what lets an ordinary request
//! skip asking Redis about cooldowns at all.
//!
//! Closing a cooldown in Redis announces it on a channel in the same
//! script; each store's listener (see `store.rs`) adds what it hears here,
//! and reads the fleet's list of recent cooldowns whenever it
//! (re)subscribes, so nothing closed before it listened is missed. While
//! it listens, a cooldown key not heard of is not in Redis (apart from one
//! closed in the last instant, still on its way), so its requests go
//! without a call; a key heard of is asked about, as before. When Redis
//! says a key has no cooldown any more, it is forgotten here, unless it
//! was heard of again since the question was asked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// How long after its end a cooldown heard of is forgotten when no request
/// asked about it: Redis keeps a cooldown a minute after it ends too.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// How many cooldowns are remembered at most: as many as
/// [`Cooldowns`](crate::retry::Cooldowns) keeps by default. Past that,
/// every request asks Redis, as without announcements, until some are
/// forgotten.
const MAX_HEARD: usize = 10_000;

/// Whether a request must ask Redis about a cooldown key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// No: not heard of while listening.
    No,
    /// Yes; `Some(n)`: heard of as the `n`-th announcement (to forget it
    /// only if nothing was heard of it since), `None`: not listening.
    Yes(Option<u64>),
}

#[derive(Debug, Default)]
pub(crate) struct Heard {
    listening: AtomicBool,
    count: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    keys: HashMap<String, Entry>,
    next_purge: Option<Instant>,
    /// A cooldown heard of found no room: until room is made, every key
    /// is asked about.
    full: bool,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    forget_at: Instant,
    number: u64,
}

impl Heard {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether every cooldown closed in Redis since the last subscription
    /// reaches this process.
    pub(crate) fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    pub(crate) fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Relaxed);
    }

    /// How many cooldowns are remembered.
    pub(crate) fn len(&self) -> usize {
        self.lock().keys.len()
    }

    /// Notes the cooldown `name`, ending `left` from `now` (negative: it
    /// ended `-left` ago, in microseconds).
    pub(crate) fn hear(&self, name: &str, left_us: i64, now: Instant) {
        let number = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let left =
            Duration::from_micros(left_us.unsigned_abs()).min(crate::rules::retry_after::MAX_HOLD);
        let end = if left_us >= 0 {
            now + left
        } else {
            now.checked_sub(left).unwrap_or(now)
        };
        let forget_at = end + FORGET_AFTER;
        let mut state = self.lock();
        if !state.keys.contains_key(name) && state.keys.len() >= MAX_HEARD {
            state.keys.retain(|_, e| e.forget_at > now);
            if state.keys.len() >= MAX_HEARD {
                // Remembering it would take room without bound: ask about
                // every key again, as without announcements.
                state.full = true;
                return;
            }
        }
        let entry = state
            .keys
            .entry(name.to_owned())
            .or_insert(Entry { forget_at, number });
        entry.forget_at = entry.forget_at.max(forget_at);
        entry.number = number;
    }

    /// Whether a request of the cooldown `name` must ask Redis.
    pub(crate) fn ask(&self, name: &str) -> Ask {
        if !self.is_listening() {
            return Ask::Yes(None);
        }
        let state = self.lock();
        match state.keys.get(name) {
            Some(entry) => Ask::Yes(Some(entry.number)),
            None if state.full => Ask::Yes(None),
            None => Ask::No,
        }
    }

    /// Redis said `name` has no cooldown, when asked after announcement
    /// `number`: forgotten unless heard of again since.
    pub(crate) fn cleared(&self, name: &str, number: u64) {
        let mut state = self.lock();
        if state.keys.get(name).is_some_and(|e| e.number == number) {
            state.keys.remove(name);
        }
    }

    /// Whether no request needs to ask Redis about any cooldown: listening,
    /// with none heard of. Cooldowns long over are forgotten here, at most
    /// once a second.
    pub(crate) fn is_quiet(&self, now: Instant) -> bool {
        if !self.is_listening() {
            return false;
        }
        let mut state = self.lock();
        if state.keys.is_empty() {
            return true;
        }
        if state.next_purge.map_or(true, |at| now >= at) {
            state.next_purge = Some(now + Duration::from_secs(1));
            state.keys.retain(|_, e| e.forget_at > now);
            // Room again: what finds none is asked about meanwhile, and
            // what closes later is heard.
            state.full &= state.keys.len() >= MAX_HEARD;
        }
        state.keys.is_empty()
    }

    /// Parses an announcement: `"<micros left> <name>"`.
    pub(crate) fn parse(message: &str) -> Option<(i64, &str)> {
        let (left, name) = message.split_once(' ')?;
        Some((left.parse().ok()?, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_key_not_heard_of_is_asked_about_only_while_not_listening() {
        let heard = Heard::default();
        let now = Instant::now();
        assert_eq!(heard.ask("503 a"), Ask::Yes(None));
        assert!(!heard.is_quiet(now));
        heard.set_listening(true);
        assert_eq!(heard.ask("503 a"), Ask::No);
        assert!(heard.is_quiet(now));
        heard.hear("503 a", 2_000_000, now);
        assert_eq!(heard.ask("503 a"), Ask::Yes(Some(1)));
        assert!(!heard.is_quiet(now));
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_heard_of_again_while_asking_is_not_forgotten() {
        let heard = Heard::default();
        heard.set_listening(true);
        let now = Instant::now();
        heard.hear("429 a u", 1_000_000, now);
        let Ask::Yes(Some(asked)) = heard.ask("429 a u") else {
            panic!()
        };
        heard.hear("429 a u", 1_000_000, now);
        heard.cleared("429 a u", asked);
        assert_eq!(heard.ask("429 a u"), Ask::Yes(Some(2)));
        heard.cleared("429 a u", 2);
        assert_eq!(heard.ask("429 a u"), Ask::No);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cooldown_nobody_asked_about_is_forgotten_a_minute_after_it_ends() {
        let heard = Heard::default();
        heard.set_listening(true);
        let t0 = Instant::now();
        heard.hear("503 a", 1_000_000, t0);
        heard.hear("503 b", -30_000_000, t0);
        assert!(!heard.is_quiet(t0 + Duration::from_secs(60)));
        assert_eq!(heard.len(), 1, "b ended 30 s before");
        assert!(!heard.is_quiet(t0 + Duration::from_millis(60_500)));
        assert!(heard.is_quiet(t0 + Duration::from_secs(62)));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_bound_every_key_is_asked_about_until_room_is_made() {
        let heard = Heard::default();
        heard.set_listening(true);
        let t0 = Instant::now();
        for i in 0..MAX_HEARD {
            heard.hear(&format!("429 a u{i}"), 1_000_000, t0);
        }
        heard.hear("503 a", 1_000_000, t0);
        assert_eq!(heard.len(), MAX_HEARD);
        assert_eq!(heard.ask("503 a"), Ask::Yes(None));
        assert_eq!(heard.ask("429 b u"), Ask::Yes(None));
        assert!(heard.is_quiet(t0 + Duration::from_secs(62)));
        assert_eq!(heard.ask("429 b u"), Ask::No);
    }

    #[test]
    fn announcements_parse() {
        assert_eq!(Heard::parse("1500 503 a b"), Some((1500, "503 a b")));
        assert_eq!(Heard::parse("-3 429 x"), Some((-3, "429 x")));
        assert_eq!(Heard::parse("soon 503 a"), None);
        assert_eq!(Heard::parse("12"), None);
    }
}
