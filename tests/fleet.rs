//! A fleet of stacks sharing cooldowns and pacing through a real
//! `redis-server`, against the simulator over real TCP. Redis's `TIME` is
//! real time, so these run in real time (a few seconds each) and assert
//! counts and orderings, not exact timings.
#![cfg(feature = "redis")]

#[path = "support/fleet.rs"]
mod fleet;

use std::path::PathBuf;

use fleet::RedisServer;

/// The `fleet_member` example, built by `cargo test` beside this test.
fn member_exe() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let exe = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/fleet_member");
    assert!(exe.exists(), "{} is built by cargo test", exe.display());
    exe
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_sharing_redis_stays_within_the_windows() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let got = fleet::throttle(Some(&redis.url()), Some(&member_exe()), 6.0).await;
    eprintln!("{got:?}");
    assert_eq!(got.throttled, 0, "{got:?}");
    assert!(got.ratio >= 0.95, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_same_fleet_is_throttled() {
    // The baseline: what sharing fixes (and proof the scenario can fail).
    let got = fleet::throttle(None, None, 6.0).await;
    eprintln!("{got:?}");
    assert!(got.throttled > 0, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_seen_by_one_member_holds_back_the_fleet_for_one_probe() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let got = fleet::overload(Some(&redis.url())).await;
    eprintln!("{got:?}");
    assert_eq!((got.early, got.probes), (0, 1), "{got:?}");
    assert_eq!(got.amplification, 1, "the release is spaced: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_falls_back_then_shares_again() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let got = fleet::redis_down(&mut redis).await;
    eprintln!("{got:?}");
    assert_eq!(got.failed, 0, "{got:?}");
    assert!(got.ok > 100, "requests kept flowing: {got:?}");
    assert_eq!(got.fell_back, fleet::MEMBERS, "{got:?}");
    assert_eq!(got.shared_after, fleet::MEMBERS, "{got:?}");
    // Bounded added latency: a failed call costs at most the 100 ms timeout.
    assert!(got.p99_ms < 500.0, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_for_one_user_does_not_hold_back_another() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let got = fleet::one_user_throttled(&redis.url()).await;
    eprintln!("{got:?}");
    assert_eq!(got.throttled_user_early, 0, "{got:?}");
    assert!(got.other_user_meanwhile > 10, "{got:?}");
}
