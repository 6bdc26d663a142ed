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
//! - `throttle_shared`: one user hammered for 10 s by the 4 stacks and a
//!   member process (this bench started again), sharing Redis;
//!   `throttle_local`: the 4 stacks without Redis (the baseline). 429s
//!   counted at the simulator; `throughput_ratio` is the requests admitted
//!   within the run over what the windows admit.
//! - `overload_shared`: a 503 with `Retry-After: 2` answered to one
//!   stack: `early` requests before it ended, `probes` after it,
//!   `amplification` the requests in the first 100 ms after the first,
//!   `first_second` those in the first second (the spaced release);
//!   `overload_local`: the same without Redis (the baseline).
//! - `redis_down`: Redis killed 2 s into a 6 s run, restarted 2 s later:
//!   requests `failed`, and the 99th percentile latency.
//! - `outage`: one user hammered by the 4 stacks for 30 s, Redis killed
//!   6 s in and restarted 10 s later; each stack paces at its share of
//!   the windows meanwhile (the default `WhileAway::Share`);
//!   `outage_local_fallback`: the same with `WhileAway::Alone`, each stack
//!   by the whole windows (the baseline).
//! - `cluster_shared`: a Redis Cluster of 3 masters, one user whose keys
//!   live on each, each hammered for 10 s by the 4 stacks (4 callers per
//!   user each) sharing the cluster: 429s summed over the users, and the
//!   lowest user's `throughput_ratio`.
//! - `tls_shared`: `throttle_shared`'s user on a TLS-only `redis-server`
//!   whose CA (made here) the stores are given, for 10 s.
//! - `cluster_failover`: `cluster_shared` on 3 masters with a replica
//!   each, for 12 s; 3 s in, the master of one user is killed (its replica
//!   takes over after the cluster's 1 s node timeout): requests `failed`,
//!   and the 429s.
//! - `contention_4x16_shared`: 16 writers on each of 4 stacks, each writer
//!   making 5 read-modify-writes of one counter (a GET, then a PUT of
//!   count + 1 with `If-Match`), each stack with a session board shared
//!   through Redis; `contention_4x16_local`: the same with boards of their
//!   own (the baseline, as `storm/contention_4x16` in real time over
//!   loopback). `attempts_per_write`: PUTs the simulator received per
//!   write; `failed`: writes handed back unsuccessful; `lost_updates`:
//!   successful writes minus the counter's increase; `writes_per_s`:
//!   successful writes per second of the run.
//!
//! `redis_calls_per_request` on `throttle_shared`: the calls Redis's
//! clients made (`INFO commandstats`, counting the calls clients send, not
//! the commands scripts run inside them) from 2 s into the run, when every
//! member has connected, loaded its scripts and subscribed, to its end,
//! heartbeats included, over the requests the callers started meanwhile
//! (each reserves its slot as it starts); `with_start_up`: all the calls from before the members
//! started, over every request the callers made (in a 10 s run of about
//! 100 requests, each member's start costs some 25 calls: a script load
//! per script and caller that found it missing, the subscription, the
//! first heartbeat, and its first requests' cooldown questions, asked
//! before it listens).
//!
//! Goals: shared 429s=0, throughput_ratio >= 0.95, probes=1, early=0,
//! redis_down failed=0, redis_calls_per_request <= 1.05; outage 429s <= 5
//! and throughput_ratio >= 0.85; cluster_shared and tls_shared 429s=0 at
//! throughput_ratio >= 0.95; cluster_failover failed=0 and 429s <= 5;
//! contention shared attempts_per_write <= 1.05, failed=0,
//! lost_updates=0, local failed=0, lost_updates=0.

#[path = "../tests/support/fleet.rs"]
mod fleet;
#[path = "../tests/support/fleet_redis.rs"]
mod fleet_redis;
#[path = "../tests/support/fleet_writes.rs"]
mod fleet_writes;
#[path = "../tests/support/redis_servers.rs"]
mod redis_servers;

use std::process::Command;
use std::time::Duration;

use tower_mpsd::fleet::WhileAway;

/// The first argument that makes this bench a member process.
const MEMBER: &str = "--fleet-member";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The bench starts itself again as the fleet's member process
    // (`cargo bench` builds no examples).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(MEMBER) {
        fleet::member_main(&args[1..])
            .await
            .expect("the member runs");
        return;
    }
    let Some(mut redis) = fleet::RedisServer::start() else {
        return;
    };
    let url = redis.url();
    for (name, store) in [("throttle_shared", Some(&redis)), ("throttle_local", None)] {
        let child = store.map(|_| {
            let mut member = Command::new(std::env::current_exe().unwrap());
            member.arg(MEMBER);
            member
        });
        let got = fleet::throttle(store, child, 10.0).await;
        let per_request = match got.calls {
            Some((all, warm)) => format!(
                " redis_calls_per_request={:.3} calls={warm} requests={} with_start_up={:.3}",
                warm as f64 / got.started_warm.max(1) as f64,
                got.started_warm,
                all as f64 / got.requests.max(1) as f64,
            ),
            None => String::new(),
        };
        println!(
            "summary: fleet/{name} 429s={} throughput_ratio={:.3}{per_request}",
            got.throttled, got.ratio
        );
    }
    for (name, store) in [
        ("overload_shared", Some(url.as_str())),
        ("overload_local", None),
    ] {
        let got = fleet::overload(store).await;
        println!(
            "summary: fleet/{name} amplification={} probes={} early={} first_second={}",
            got.amplification, got.probes, got.early, got.first_second
        );
    }
    let got = fleet::redis_down(&mut redis).await;
    println!(
        "summary: fleet/redis_down failed={} p99_ms={:.1}",
        got.failed, got.p99_ms
    );
    for (name, store) in [
        ("contention_4x16_shared", Some(url.as_str())),
        ("contention_4x16_local", None),
    ] {
        let got = fleet_writes::contention(store, None).await;
        println!(
            "summary: fleet/{name} attempts_per_write={:.3} failed={} lost_updates={} writes_per_s={:.1}",
            got.attempts_per_write(),
            got.wrote.failed,
            got.lost_updates,
            got.writes_per_s()
        );
    }
    for (name, rule) in [
        ("outage", WhileAway::Share),
        ("outage_local_fallback", WhileAway::Alone),
    ] {
        let (run, down) = (Duration::from_secs(30), Duration::from_secs(6));
        let heartbeat = Duration::from_secs(5);
        let got = fleet::outage(&mut redis, rule, heartbeat, run, down..down + OUTAGE).await;
        println!(
            "summary: fleet/{name} 429s={} throughput_ratio={:.3} admitted_while_away={} failed={} shared_after={}",
            got.throttled, got.ratio, got.admitted_meanwhile, got.failed, got.shared_after
        );
    }
    drop(redis);
    production_kinds().await;
}

/// The scenarios on the kinds of Redis production runs.
async fn production_kinds() {
    if let Some(cluster) = redis_servers::Cluster::start(3, 0) {
        let got = fleet_redis::cluster_shared(&cluster, 10.0).await;
        println!(
            "summary: fleet/cluster_shared 429s={} throughput_ratio={:.3} users={}",
            got.throttled(),
            got.ratio(),
            got.users.len()
        );
    }
    if let Some(server) = redis_servers::TlsServer::start(false) {
        let got = fleet_redis::tls_shared(&server, 10.0).await;
        println!(
            "summary: fleet/tls_shared 429s={} throughput_ratio={:.3}",
            got.throttled(),
            got.ratio()
        );
    }
    if let Some(mut cluster) = redis_servers::Cluster::start(3, 1) {
        let kill_after = Duration::from_secs(3);
        let got = fleet_redis::cluster_failover(&mut cluster, 12.0, kill_after).await;
        println!(
            "summary: fleet/cluster_failover failed={} 429s={} shared_after={}",
            got.failed,
            got.throttled(),
            got.shared_after
        );
    }
}

/// How long Redis is stopped in the outage scenarios.
const OUTAGE: Duration = Duration::from_secs(10);
