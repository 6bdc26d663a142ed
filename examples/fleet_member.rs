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

#[tokio::main]
async fn main() -> Result<(), tower_mpsd::BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    fleet::member_main(&args).await
}
