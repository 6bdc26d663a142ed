//! One process of a fleet sharing its cooldowns and pacing through Redis:
//! the crate's stack with its own in-process state, given a `RedisStore`.
//! The fleet tests start it beside stacks of their own.
//!
//! ```text
//! cargo run --features redis --example fleet_member -- BASE_URI REDIS_URL USER SECONDS
//! ```
//!
//! It sends GETs of `USER`'s session from four callers for `SECONDS`, then
//! prints `ok=<answers> failed=<errors>`.

#[path = "../tests/support/fleet.rs"]
mod fleet;

use std::time::Duration;

use tokio::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, redis, user, secs] = args.as_slice() else {
        return Err("usage: fleet_member BASE_URI REDIS_URL USER SECONDS".into());
    };
    let member = fleet::member(Some(redis), fleet::pace_limits());
    let until = Instant::now() + Duration::from_secs_f64(secs.parse()?);
    let sent = fleet::run_callers(&member.client, base, &[user], 4, until, Duration::ZERO).await;
    println!("ok={} failed={}", sent.ok, sent.failed);
    Ok(())
}
