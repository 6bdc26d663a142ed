//! A fleet of stacks sharing cooldowns and pacing through a real
//! `redis-server`, against the simulator over real TCP. Redis's `TIME` is
//! real time, so these run in real time (a few seconds each) and assert
//! counts and orderings, not exact timings.
#![cfg(feature = "redis")]

#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/redis_servers.rs"]
mod redis_servers;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fleet::RedisServer;
use http::{Request, Response};
use http_body_util::Full;
use tokio::time::Instant;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_mpsd::fleet::{Credentials, RedisStore, WhileAway};
use tower_mpsd::logical::LogicalLayer;
use tower_mpsd::retry::{Cooldowns, RetryLayer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_sharing_redis_stays_within_the_windows() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let got = fleet::throttle(Some(&redis), Some(fleet::example_exe("fleet_member")), 6.0).await;
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
    // One probe, then one request per 100 ms spacing at most.
    assert!(got.first_second <= 12, "the release is spaced: {got:?}");
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

/// Redis killed mid-run (by its PID) and started again empty on the same
/// port: meanwhile each of the 4 stacks paces at its share of the windows
/// (the fleet of 4 it last heard of), then at its share and Redis's slot
/// while Redis has not seen a window since; the simulator's windows are
/// kept. With each stack on the whole windows (`WhileAway::Alone`), the
/// same run was answered 25 429s, and this test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_away_the_fleet_keeps_to_its_shares() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let s = Duration::from_secs;
    let got = fleet::outage(&mut redis, WhileAway::Share, s(1), s(12), s(3)..s(8)).await;
    eprintln!("{got:?}");
    assert!(got.throttled <= 2, "{got:?}");
    assert_eq!(got.fell_back, fleet::MEMBERS, "{got:?}");
    // Requests kept flowing: the windows' sustain rate admits 40 in 5 s,
    // and the fleet's shares add up to it.
    assert!(got.admitted_meanwhile >= 25, "{got:?}");
    assert_eq!(got.shared_after, fleet::MEMBERS, "{got:?}");
    assert_eq!(
        got.sizes,
        [fleet::MEMBERS as u32; fleet::MEMBERS],
        "{got:?}"
    );
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

type Arrivals = Arc<Mutex<Vec<(&'static str, Instant)>>>;

/// A process of the fleet over a mocked server: its answer to its `n`-th
/// request (counted over the whole fleet's arrivals) is `answer(n)`,
/// `None` for never.
fn process(
    redis: &str,
    lease: Duration,
    name: &'static str,
    arrivals: &Arrivals,
    answer: fn(&str, usize) -> Option<u16>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = tower_mpsd::BoxError,
    Future = impl Send,
> + Clone {
    let store = RedisStore::builder(redis)
        .probe_lease(lease)
        .build()
        .unwrap();
    let cooldowns = Cooldowns::builder().redis(store).build();
    let arrivals = arrivals.clone();
    let server = service_fn(move |_req: Request<Full<Bytes>>| {
        let n = {
            let mut log = arrivals.lock().unwrap();
            log.push((name, Instant::now()));
            log.len()
        };
        async move {
            let Some(status) = answer(name, n) else {
                return std::future::pending().await;
            };
            let res = Response::builder()
                .status(status)
                .header("retry-after", "1");
            Ok::<_, std::convert::Infallible>(res.body(Full::<Bytes>::default()).unwrap())
        }
    });
    ServiceBuilder::new()
        .layer(LogicalLayer::new(Duration::from_secs(10), 1))
        .layer(RetryLayer::new().with_cooldowns(cooldowns))
        .service(server)
}

fn get() -> Request<Full<Bytes>> {
    Request::get("http://mpsd.test/handles/h1")
        .header("authorization", "XBL3.0 x=1234;token")
        .body(Full::<Bytes>::default())
        .unwrap()
}

/// A process that dies holding the probe lease (its future leaked, so
/// nothing hands the lease back) holds the fleet only until the lease
/// expires; then another process probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_lease_whose_holder_died_passes_on_when_it_expires() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let lease = Duration::from_millis(400);
    let arrivals = Arrivals::default();
    // The first answer is a 503 for a second; the probe after it never
    // gets one.
    let answer = |name: &str, n| match (name, n) {
        ("a", 1) => Some(503),
        ("a", _) => None,
        _ => Some(200),
    };
    let a = process(&redis.url(), lease, "a", &arrivals, answer);
    let b = process(&redis.url(), lease, "b", &arrivals, answer);
    assert_eq!(a.clone().oneshot(get()).await.unwrap().status(), 503);
    // Let the close reach Redis, then wait out the cooldown.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut probe = Box::pin(a.clone().oneshot(get()));
    tokio::select! {
        _ = &mut probe => panic!("the probe never gets an answer"),
        () = tokio::time::sleep(Duration::from_millis(50)) => {}
    }
    // Process "a" dies: its probe's future is never dropped nor polled.
    std::mem::forget(probe);
    let b_answer = b.clone().oneshot(get()).await.unwrap();
    assert_eq!(b_answer.status(), 200);
    let log = arrivals.lock().unwrap().clone();
    let names: Vec<&str> = log.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["a", "a", "b"], "one probe at a time");
    let held = log[2].1 - log[1].1;
    assert!(
        held >= lease - Duration::from_millis(100),
        "b waited for the lease: {held:?}"
    );
    assert!(
        held < Duration::from_secs(2),
        "and not much longer: {held:?}"
    );
}

/// A probe told to wait again closes the cooldown fleet-wide before it
/// hands its lease back: the other process waits for the new end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_told_to_wait_again_holds_the_fleet_again() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let arrivals = Arrivals::default();
    let answer = |name: &str, _| Some(if name == "a" { 503 } else { 200 });
    let lease = Duration::from_secs(5);
    let a = process(&redis.url(), lease, "a", &arrivals, answer);
    let b = process(&redis.url(), lease, "b", &arrivals, answer);
    assert_eq!(a.clone().oneshot(get()).await.unwrap().status(), 503);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // "a" probes and is told 503, Retry-After: 1 again; "b" asks meanwhile.
    let (probe, b_answer) = tokio::join!(a.clone().oneshot(get()), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.clone().oneshot(get()).await
    });
    assert_eq!(probe.unwrap().status(), 503);
    assert_eq!(b_answer.unwrap().status(), 200);
    let log = arrivals.lock().unwrap().clone();
    let names: Vec<&str> = log.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["a", "a", "b"]);
    let waited = log[2].1 - log[1].1;
    assert!(
        waited >= Duration::from_millis(900),
        "b waited for the new end: {waited:?}"
    );
}

/// A 429 without a usable `Retry-After` whose body says the user's window
/// is full (for 3 s), answered to one member, holds that user's requests
/// from every member until the window has passed: the classify layer reads
/// the body inside the stack, and the pace table shares what it learnt
/// through Redis. (Without the body, only the retry layer's 1 s cooldown
/// would hold them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_body_saying_the_window_is_full_holds_the_user_fleet_wide() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = fleet::unlimited_sim().await;
    let base = sim.base_uri();
    let full = r#"{"version":1,"currentRequests":11,"maxRequests":10,"periodInSeconds":3,"limitType":"Rate"}"#;
    sim.script(
        mpsd_sim::Fault::status(http::StatusCode::TOO_MANY_REQUESTS)
            .header(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            )
            .header(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("soon"),
            )
            .body(full),
    );
    // Windows of 1 s and 5 s, which three requests do not fill: only what
    // the 429 teaches (its body's full 3 s window, the `Retry-After` being
    // unusable; capped at `MAX_HOLD`, a day) holds the user's next slot.
    let (a, b) = (
        fleet::member(Some(&redis.url()), fleet::pace_limits()),
        fleet::member(Some(&redis.url()), fleet::pace_limits()),
    );
    // A's request is throttled, then retried by A.
    let first = tokio::spawn(a.client.clone().oneshot(fleet::get(&base, "alice")));
    while sim.log().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let throttled_at = sim.log()[0].at;
    // Time for A's table to tell Redis, then B sends for the same user.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = b.client.clone().oneshot(fleet::get(&base, "alice")).await;
    assert_eq!(second.unwrap(), http::StatusCode::NO_CONTENT);
    assert_eq!(first.await.unwrap().unwrap(), http::StatusCode::NO_CONTENT);

    let log = sim.log();
    let statuses: Vec<u16> = log.iter().map(|e| e.status.as_u16()).collect();
    assert_eq!(statuses, [429, 204, 204]);
    for later in &log[1..] {
        let after = later.at - throttled_at;
        assert!(
            after >= Duration::from_secs(3),
            "sent {after:?} after the 429"
        );
    }
    assert_eq!(a.table.stats().throttled(), 1);
    let stores = [a.store.unwrap(), b.store.unwrap()];
    assert!(stores.iter().all(|s| s.fallbacks() == 0 && s.is_shared()));
}

/// Waits (in real time, as Redis's `TIME` runs) until `done`, for at
/// most 10 s.
async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let wait = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let waited = tokio::time::timeout(Duration::from_secs(10), wait).await;
    assert!(waited.is_ok(), "{what} within 10 s");
}

/// Waits until `store` hears the fleet's cooldown announcements.
async fn listening(store: &RedisStore) {
    wait_for("the store subscribes", || store.is_listening()).await;
}

/// Once a member hears the fleet's cooldowns, a request that meets none
/// makes exactly one call to Redis (its pace reservation), counted by
/// Redis itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordinary_request_makes_one_redis_call() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = fleet::unlimited_sim().await;
    let base = sim.base_uri();
    let member = fleet::member(Some(&redis.url()), fleet::roomy());
    let store = member.store.clone().unwrap();
    listening(&store).await;
    // The first request loads the pace script.
    let first = member.client.clone().oneshot(fleet::get(&base, "alice"));
    assert_eq!(first.await.unwrap(), http::StatusCode::NO_CONTENT);
    let before = redis.client_calls();
    for _ in 0..20 {
        let answer = member.client.clone().oneshot(fleet::get(&base, "alice"));
        assert_eq!(answer.await.unwrap(), http::StatusCode::NO_CONTENT);
    }
    assert_eq!(redis.client_calls() - before, 20);
    assert!(store.is_shared());
}

/// A member that starts during another's cooldown reads it from the
/// fleet's list when it subscribes: its request waits for the cooldown's
/// end although it never heard the announcement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_started_during_a_cooldown_waits_for_its_end() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = fleet::unlimited_sim().await;
    let base = sim.base_uri();
    sim.script(
        mpsd_sim::Fault::status(http::StatusCode::SERVICE_UNAVAILABLE).header(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("2"),
        ),
    );
    let a = fleet::member(Some(&redis.url()), fleet::roomy());
    listening(a.store.as_ref().unwrap()).await;
    // A's request is answered 503, then waits out the cooldown and retries.
    let first = tokio::spawn(a.client.clone().oneshot(fleet::get(&base, "alice")));
    while sim.log().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let closed_at = sim.log()[0].at;
    // Time for A to close the cooldown in Redis; then B starts.
    tokio::time::sleep(fleet::IN_FLIGHT).await;
    let b = fleet::member(Some(&redis.url()), fleet::roomy());
    listening(b.store.as_ref().unwrap()).await;
    let second = b.client.clone().oneshot(fleet::get(&base, "bob")).await;
    assert_eq!(second.unwrap(), http::StatusCode::NO_CONTENT);
    assert_eq!(first.await.unwrap().unwrap(), http::StatusCode::NO_CONTENT);
    let log = sim.log();
    let statuses: Vec<u16> = log.iter().map(|e| e.status.as_u16()).collect();
    assert_eq!(statuses, [503, 204, 204]);
    for later in &log[1..] {
        let after = later.at - closed_at;
        assert!(
            after >= Duration::from_secs(2),
            "sent {after:?} after the 503"
        );
    }
}

/// Once a cooldown is over in Redis, the first request to ask about it
/// learns so, and the requests after it make one call each again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_cooldown_requests_make_one_redis_call_again() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = fleet::unlimited_sim().await;
    let base = sim.base_uri();
    let member = fleet::member(Some(&redis.url()), fleet::roomy());
    listening(member.store.as_ref().unwrap()).await;
    sim.script(
        mpsd_sim::Fault::status(http::StatusCode::SERVICE_UNAVAILABLE).header(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        ),
    );
    let send = || member.client.clone().oneshot(fleet::get(&base, "alice"));
    // Answered 503, then sent again as the probe after the cooldown.
    assert_eq!(send().await.unwrap(), http::StatusCode::NO_CONTENT);
    // The release after the probe (one spacing) is over in Redis.
    tokio::time::sleep(fleet::RELEASE_SPACING * 2).await;
    let before = redis.client_calls();
    assert_eq!(send().await.unwrap(), http::StatusCode::NO_CONTENT);
    let asked = redis.client_calls();
    assert_eq!(asked - before, 2, "the 503 cooldown asked about, once");
    for _ in 0..20 {
        assert_eq!(send().await.unwrap(), http::StatusCode::NO_CONTENT);
    }
    assert_eq!(redis.client_calls() - asked, 20);
}

/// A call lost while Redis keeps its state (Redis paused for 300 ms: one
/// call times out) is no outage: once Redis answers again, a member that
/// sends for a user alone may use the user's whole windows at once, not
/// only its share of a fleet of 4 (2 per second of the 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_lost_call_a_member_is_not_held_to_its_share() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = fleet::unlimited_sim().await;
    let base = sim.base_uri();
    let members: Vec<fleet::MemberState> = (0..fleet::MEMBERS)
        .map(|_| {
            let store = RedisStore::builder(redis.url())
                .heartbeat(Duration::from_millis(100))
                .build()
                .unwrap();
            fleet::member_with(Some(store), fleet::pace_limits())
        })
        .collect();
    let a = &members[0];
    let store = a.store.clone().unwrap();
    let stores: Vec<RedisStore> = members.iter().filter_map(|m| m.store.clone()).collect();
    wait_for("every member counts 4", || {
        stores.iter().all(|s| s.fleet_size() == 4)
    })
    .await;
    redis.pause(300);
    let first = a.client.clone().oneshot(fleet::get(&base, "alice")).await;
    assert_eq!(first.unwrap(), http::StatusCode::NO_CONTENT);
    assert_eq!(store.fallbacks(), 1, "decided by its own windows");
    wait_for("Redis answers again", || store.is_shared()).await;
    // Time for the beat that follows, which finds the fleet's epoch kept.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sends = (0..8).map(|_| a.client.clone().oneshot(fleet::get(&base, "alice")));
    for answer in futures_util::future::join_all(sends).await {
        assert_eq!(answer.unwrap(), http::StatusCode::NO_CONTENT);
    }
    let log = sim.log();
    let spread = log[log.len() - 1].at - log[1].at;
    assert!(spread < Duration::from_millis(500), "{spread:?}");
}

/// On a Redis Cluster, a member hears a cooldown closed on another node
/// than the one it subscribed through (`PUBLISH` crosses the cluster), and
/// its request waits for the cooldown's end; over TLS, and logged in by
/// credentials given through their channel, a store listens too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldowns_are_heard_across_a_cluster_and_over_tls() {
    if let Some(server) = redis_servers::TlsServer::start(false) {
        let store = RedisStore::builder(server.url())
            .root_certificates_pem(server.certs.ca.clone())
            .build()
            .unwrap();
        listening(&store).await;
    }
    if let Some(server) = redis_servers::AclServer::start(&["user app on >s3cret ~* &* +@all"]) {
        // The credentials come through the channel, not the URL.
        let (_renew, credentials) = tokio::sync::watch::channel(Credentials::new("app", "s3cret"));
        let url = format!("redis://127.0.0.1:{}/", server.node.port);
        let store = RedisStore::builder(url)
            .credentials(credentials)
            .build()
            .unwrap();
        listening(&store).await;
    }
    let Some(cluster) = redis_servers::Cluster::start(3, 0) else {
        return;
    };
    let sim = fleet::unlimited_sim().await;
    let base = sim.base_uri();
    // Each subscribes through its first seed: B through a node that does
    // not hold the cooldown (the authority's 503 key), so it hears of it
    // only across the cluster.
    let authority = base.trim_start_matches("http://");
    let holder = cluster.master_of(&format!("mpsd:cooldown:{{503 {authority}}}"));
    let mut seeds = cluster.seeds();
    seeds.sort_by_key(|seed| seed.contains(&format!(":{holder}/")));
    assert!(!seeds[0].contains(&format!(":{holder}/")));
    let a = RedisStore::open_cluster(seeds.iter().rev()).unwrap();
    let b = RedisStore::open_cluster(seeds).unwrap();
    listening(&a).await;
    listening(&b).await;
    let (a, b) = (
        fleet::member_with(Some(a), fleet::roomy()),
        fleet::member_with(Some(b), fleet::roomy()),
    );
    sim.script(
        mpsd_sim::Fault::status(http::StatusCode::SERVICE_UNAVAILABLE).header(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("2"),
        ),
    );
    let first = tokio::spawn(a.client.clone().oneshot(fleet::get(&base, "alice")));
    while sim.log().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let closed_at = sim.log()[0].at;
    tokio::time::sleep(fleet::IN_FLIGHT).await;
    let second = b.client.clone().oneshot(fleet::get(&base, "bob")).await;
    assert_eq!(second.unwrap(), http::StatusCode::NO_CONTENT);
    assert_eq!(first.await.unwrap().unwrap(), http::StatusCode::NO_CONTENT);
    let log = sim.log();
    let statuses: Vec<u16> = log.iter().map(|e| e.status.as_u16()).collect();
    assert_eq!(statuses, [503, 204, 204]);
    for later in &log[1..] {
        let after = later.at - closed_at;
        assert!(
            after >= Duration::from_secs(2),
            "sent {after:?} after the 503"
        );
    }
    let stores = [a.store.unwrap(), b.store.unwrap()];
    assert!(stores.iter().all(|s| s.is_shared() && s.is_listening()));
}
