//! Matchmaking hoppers: `POST .../hoppers/{hopper}` submits a ticket,
//! `GET .../hoppers/{hopper}/stats` reports on the hopper.

use http::StatusCode;
use serde_json::json;

use super::{Reply, Request, Store};

/// The `waitTime` a hopper reports, in seconds. The simulator matches
/// nobody, so it has no measured average: it reports the sample value of
/// MPSD's `HopperStatsResults` reference (a choice).
pub(crate) const HOPPER_WAIT_SECS: u64 = 30;

impl Store {
    /// Submitting a matchmaking ticket: 201 with the ticket's `ticketId`
    /// (a GUID) and its `waitTime` in seconds, as MPSD answers (the shape
    /// Microsoft's SDK reads). The simulator only counts tickets, per
    /// hopper; none is ever matched, and the wait is the hopper's
    /// [`HOPPER_WAIT_SECS`].
    pub(super) fn on_hopper(&mut self, scid: &str, hopper: &str, req: &Request<'_>) -> Reply {
        match req.method.as_str() {
            "POST" => {
                *self
                    .tickets
                    .entry((scid.to_owned(), hopper.to_owned()))
                    .or_default() += 1;
                let ticket = json!({"ticketId": self.next_guid(), "waitTime": HOPPER_WAIT_SECS});
                Reply::json(StatusCode::CREATED, &ticket)
            }
            _ => Reply::not_allowed("POST"),
        }
    }

    /// A hopper's statistics: its name, the wait time and the population
    /// (tickets submitted to it: since the simulator matches nobody, all
    /// of them are still waiting). The fields are served under both names
    /// seen for them: `hopperName`/`waitTime` (MPSD's REST reference) and
    /// `name`/`estimatedWaitTime`.
    pub(super) fn on_hopper_stats(&self, scid: &str, hopper: &str, req: &Request<'_>) -> Reply {
        if req.method.as_str() != "GET" {
            return Reply::not_allowed("GET");
        }
        let population = self
            .tickets
            .get(&(scid.to_owned(), hopper.to_owned()))
            .copied()
            .unwrap_or(0);
        Reply::json(
            StatusCode::OK,
            &json!({
                "name": hopper,
                "hopperName": hopper,
                "waitTime": HOPPER_WAIT_SECS,
                "estimatedWaitTime": HOPPER_WAIT_SECS,
                "population": population,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::*;

    #[test]
    fn stats_name_the_hopper_and_count_its_tickets() {
        let mut s = store();
        let stats = "/serviceconfigs/scid/hoppers/Ranked/stats";
        let empty = call(&mut s, "GET", stats, "a", "");
        assert_eq!(empty.status, StatusCode::OK);
        assert_eq!(
            body(&empty),
            json!({"name": "Ranked", "hopperName": "Ranked", "waitTime": 30,
                   "estimatedWaitTime": 30, "population": 0})
        );
        for _ in 0..2 {
            let ticket = call(
                &mut s,
                "POST",
                "/serviceconfigs/scid/hoppers/Ranked",
                "a",
                "{}",
            );
            assert_eq!(ticket.status, StatusCode::CREATED);
        }
        call(
            &mut s,
            "POST",
            "/serviceconfigs/other/hoppers/Ranked",
            "a",
            "{}",
        );
        assert_eq!(body(&call(&mut s, "GET", stats, "a", ""))["population"], 2);
        let quick = "/serviceconfigs/scid/hoppers/Quick/stats";
        assert_eq!(body(&call(&mut s, "GET", quick, "a", ""))["population"], 0);
        let wrong = call(&mut s, "POST", stats, "a", "");
        assert_eq!(
            (wrong.status, wrong.allow),
            (StatusCode::METHOD_NOT_ALLOWED, Some("GET"))
        );
    }
}
