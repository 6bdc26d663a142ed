//! A fleet sharing cooldowns and pacing through Redis, in real time (Redis's
//! `TIME` is real time), against the simulator on loopback with its windows
//! scaled down to 10 per 1 s and 40 per 5 s. Starts its own `redis-server`.
//!
//! ```text
//! cargo bench --features redis --bench fleet
//! ```
//!
//! Scenarios, each with 4 stacks of 4 callers, each stack with its own
//! in-process state:
//! - `throttle_shared`: one user hammered for 10 s, stacks sharing Redis;
//!   `throttle_local`: the same without Redis (the baseline). 429s counted
//!   at the simulator; `throughput_ratio` is the requests admitted within
//!   the run over what the windows admit.
//! - `overload_shared`: a 503 with `Retry-After: 2` answered to one
//!   stack: `early` requests before it ended, `probes` after it,
//!   `amplification` the requests in the first 100 ms after the first.
//! - `redis_down`: Redis killed 2 s into a 6 s run, restarted 2 s later:
//!   requests `failed`, and the 99th percentile latency.
//!
//! Goals: shared 429s=0, throughput_ratio >= 0.95, probes=1, early=0,
//! redis_down failed=0.

#[path = "../tests/support/fleet.rs"]
mod fleet;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(mut redis) = fleet::RedisServer::start() else {
        return;
    };
    let url = redis.url();
    for (name, store) in [
        ("throttle_shared", Some(url.as_str())),
        ("throttle_local", None),
    ] {
        let got = fleet::throttle(store, None, 10.0).await;
        println!(
            "summary: fleet/{name} 429s={} throughput_ratio={:.3}",
            got.throttled, got.ratio
        );
    }
    let got = fleet::overload(Some(&url)).await;
    println!(
        "summary: fleet/overload_shared amplification={} probes={} early={}",
        got.amplification, got.probes, got.early
    );
    let got = fleet::redis_down(&mut redis).await;
    println!(
        "summary: fleet/redis_down failed={} p99_ms={:.1}",
        got.failed, got.p99_ms
    );
}
