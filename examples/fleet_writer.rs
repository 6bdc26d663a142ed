//! One writer process of a fleet sharing its session boards through Redis:
//! the crate's stack with a read-modify-write rebase policy and a
//! `SessionBoard` given a `RedisStore`. The fleet tests and bench start it
//! beside stacks of their own.
//!
//! ```text
//! cargo run --features redis --example fleet_writer -- SESSION_URI REDIS_URL WRITERS WRITES
//! ```
//!
//! `WRITERS` writers each make `WRITES` read-modify-writes of the session's
//! `properties.custom.count`, then it prints `ok=<n> failed=<n>
//! fallbacks=<n>` (times its store found Redis failing).

#[path = "../tests/support/fleet_writes.rs"]
mod fleet_writes;

#[tokio::main]
async fn main() -> Result<(), tower_mpsd::BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    fleet_writes::writer_main(&args).await
}
