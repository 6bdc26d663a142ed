//! The fleet's size as last known: how many processes share the windows,
//! so that each keeps to its share of them while Redis is away.

use std::time::Duration;

use tokio::time::Instant;

/// The last fleet size Redis reported, kept from falling at once: a
/// restarted Redis has heard from one member before the others' next
/// heartbeats, and a smaller fleet would give each process a larger share.
/// A size holds until no heartbeat has confirmed it for `ttl` (the time a
/// member counts without a heartbeat), then follows Redis down.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FleetSize {
    size: u32,
    confirmed: Option<Instant>,
}

impl Default for FleetSize {
    /// One process, never confirmed: what a process knows before Redis
    /// first answers.
    fn default() -> Self {
        Self {
            size: 1,
            confirmed: None,
        }
    }
}

impl FleetSize {
    /// Redis counted `members` at `now`.
    pub(crate) fn observe(&mut self, members: u32, now: Instant, ttl: Duration) {
        let members = members.max(1);
        let stale = self
            .confirmed
            .map_or(true, |at| now.saturating_duration_since(at) >= ttl);
        if members >= self.size || stale {
            self.size = members;
            self.confirmed = Some(now);
        }
    }

    /// The size, at least 1.
    pub(crate) fn get(&self) -> u32 {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_size_rises_at_once_and_falls_only_when_unconfirmed_for_a_ttl() {
        let ttl = Duration::from_secs(15);
        let t0 = Instant::now();
        let mut size = FleetSize::default();
        assert_eq!(size.get(), 1);
        size.observe(4, t0, ttl);
        assert_eq!(size.get(), 4);
        // A restarted Redis has heard of one member so far.
        size.observe(1, t0 + Duration::from_secs(5), ttl);
        assert_eq!(size.get(), 4);
        size.observe(4, t0 + Duration::from_secs(10), ttl);
        size.observe(3, t0 + Duration::from_secs(24), ttl);
        assert_eq!(size.get(), 4, "confirmed 14 s ago");
        size.observe(3, t0 + Duration::from_secs(25), ttl);
        assert_eq!(size.get(), 3, "a member left");
        size.observe(0, t0 + Duration::from_secs(60), ttl);
        assert_eq!(size.get(), 1, "never below one");
    }
}
