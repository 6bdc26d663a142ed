//! The retry layer against the simulator over real TCP, on paused time:
//! which requests reached the server, and at which virtual instants. The
//! scenarios of `Retry-After` timings and of a shared cooldown run over
//! every transport: plain HTTP/1.1, and HTTPS on HTTP/1.1 and on HTTP/2.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{
    burst_limits, http_client, quiet_sim, request, retry_after, AnyStack, Transport, SCID,
};
use futures_util::future::join_all;
use http::{HeaderValue, Method, StatusCode, Version};
use mpsd_sim::{Fault, LogEntry, SimHandle, Simulator};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_mpsd::classify::ClassifyLayer;
use tower_mpsd::error::{Refused, RefusedBy};
use tower_mpsd::logical::LogicalLayer;
use tower_mpsd::retry::{AttemptHistory, Cooldowns, GaveUp, RetryBudget, RetryLayer};
use tower_mpsd::{MpsdLayer, ServiceBuilderExt};

/// Scripts the next `times` answers as `status` with a `Retry-After`.
fn script(sim: &SimHandle, status: StatusCode, times: usize, after: &'static str) {
    let (name, value) = retry_after(after);
    sim.script(Fault::status(status).times(times).header(name, value));
}

fn since(t0: Instant, log: &[LogEntry]) -> Vec<Duration> {
    log.iter().map(|e| e.at - t0).collect()
}

macro_rules! stack {
    ($layer:expr) => {
        ServiceBuilder::new()
            .layer($layer)
            .layer(ClassifyLayer::new())
            .service(http_client())
    };
    // With the logical request's limits set above the retry layer.
    ($limits:expr, $layer:expr) => {
        ServiceBuilder::new()
            .layer($limits)
            .layer($layer)
            .layer(ClassifyLayer::new())
            .service(http_client())
    };
}

/// For each scenario named, one test per transport: `<scenario>::over_http1`,
/// `::over_tls_http1` and `::over_tls_http2`.
macro_rules! over_every_transport {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            use super::Transport;

            #[tokio::test(start_paused = true)]
            async fn over_http1() {
                super::$scenario(Transport::Http1).await
            }

            #[tokio::test(start_paused = true)]
            async fn over_tls_http1() {
                super::$scenario(Transport::TlsHttp1).await
            }

            #[tokio::test(start_paused = true)]
            async fn over_tls_http2() {
                super::$scenario(Transport::TlsHttp2).await
            }
        }
    )+};
}

over_every_transport!(
    a_503_is_retried_no_earlier_than_retry_after_and_within_its_jitter,
    a_429_from_the_rate_limiter_is_waited_out,
    thirty_two_callers_of_one_throttled_user_send_one_probe,
);

/// The recommended stack, with `retry`, over `transport` to `sim`.
fn recommended(transport: Transport, sim: &SimHandle, retry: RetryLayer) -> AnyStack {
    AnyStack::new(
        ServiceBuilder::new()
            .mpsd_with(MpsdLayer::new().retry(retry))
            .service(transport.client(sim)),
    )
}

/// Every answer came in `transport`'s HTTP version.
fn assert_version(transport: Transport, log: &[LogEntry]) {
    let wrong: Vec<_> = log
        .iter()
        .filter(|e| e.version != transport.version())
        .collect();
    assert!(wrong.is_empty(), "{transport:?}: {wrong:?}");
}

async fn a_503_is_retried_no_earlier_than_retry_after_and_within_its_jitter(transport: Transport) {
    let sim = transport.start(Simulator::builder().no_rate_limit()).await;
    let uri = sim.session_uri(SCID, "LobbySession", "s503");
    script(&sim, StatusCode::SERVICE_UNAVAILABLE, 2, "4");
    let t0 = Instant::now();
    let res = recommended(transport, &sim, RetryLayer::new())
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let log = sim.log();
    let times = since(t0, &log);
    println!("{}503 attempt times: {times:?}", transport.label());
    assert_version(transport, &log);
    assert_eq!(times.len(), 3);
    assert_eq!(times[0], Duration::ZERO);
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            // tokio's timers round a wait up to the next millisecond.
            gap >= Duration::from_secs(4) && gap <= Duration::from_millis(4800),
            "{gap:?} outside [4 s, 4.8 s]"
        );
    }
    let history = AttemptHistory::of(&res).unwrap();
    assert_eq!(history.attempts().len(), 3);
    assert_eq!(history.gave_up, None);
}

async fn a_429_from_the_rate_limiter_is_waited_out(transport: Transport) {
    let sim = transport
        .start(Simulator::builder().rate_limit(burst_limits(2)))
        .await;
    let uri = sim.session_uri(SCID, "LobbySession", "s429");
    let client = recommended(transport, &sim, RetryLayer::new());
    let t0 = Instant::now();
    for _ in 0..3 {
        let res = client
            .clone()
            .oneshot(request(Method::GET, &uri).build())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }
    let log = sim.log();
    let times = since(t0, &log);
    let statuses: Vec<u16> = log.iter().map(|e| e.status.as_u16()).collect();
    println!(
        "{}429 attempt times: {times:?} statuses: {statuses:?}",
        transport.label()
    );
    assert_version(transport, &log);
    assert_eq!(statuses, [204, 204, 429, 204]);
    // The 429 said 15 s; the retry came no earlier, and within full jitter's bound.
    let gap = times[3] - times[2];
    assert!(
        gap >= Duration::from_secs(15) && gap <= Duration::from_secs(16),
        "{gap:?}"
    );
}

async fn thirty_two_callers_of_one_throttled_user_send_one_probe(transport: Transport) {
    let sim = transport.start(Simulator::builder().no_rate_limit()).await;
    let uri = sim.session_uri(SCID, "LobbySession", "herd");
    let (name, value) = retry_after("5");
    sim.script(
        Fault::status(StatusCode::TOO_MANY_REQUESTS)
            .header(name, value)
            .body("{}"),
    );
    let layer = RetryLayer::new();
    let client = recommended(transport, &sim, layer.clone());
    let t0 = Instant::now();
    // The first caller is throttled, and the cooldown is set ...
    let first = tokio::spawn(client.clone().oneshot(request(Method::GET, &uri).build()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    // ... then 31 more arrive during it.
    let rest =
        join_all((0..31).map(|_| client.clone().oneshot(request(Method::GET, &uri).build()))).await;
    let first = first.await.unwrap();
    let log = sim.log();
    let times = since(t0, &log);
    let connections: BTreeSet<u64> = log.iter().map(|e| e.connection).collect();
    println!(
        "{}herd: {} requests on connections {connections:?}, probe at {:?}, last at {:?}",
        transport.label(),
        times.len(),
        times[1],
        times.last().unwrap()
    );
    assert_version(transport, &log);
    if transport.version() == Version::HTTP_2 {
        assert_eq!(connections, [0].into(), "all multiplexed on one");
    }
    let during = times[1..]
        .iter()
        .filter(|t| **t < Duration::from_secs(5))
        .count();
    assert_eq!(
        during, 0,
        "nothing reaches the server before the cooldown ends"
    );
    assert_eq!(
        times.len(),
        33,
        "one 429, one probe, then the others, each once"
    );
    for res in rest.into_iter().chain([first]) {
        assert_eq!(res.unwrap().status(), StatusCode::NO_CONTENT);
    }
    // The release is spread out: 50 ms apart.
    let spread = *times.last().unwrap() - times[1];
    assert!(spread >= Duration::from_millis(50 * 30), "{spread:?}");
    assert_eq!(layer.stats().retries_throttled(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_shorter_than_retry_after_sends_nothing_more() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "late");
    script(&sim, StatusCode::SERVICE_UNAVAILABLE, 1, "30");
    let client = stack!(
        LogicalLayer::new(Duration::from_secs(10), 5),
        RetryLayer::new()
    );
    let t0 = Instant::now();
    let res = client
        .clone()
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the last response, at once"
    );
    assert_eq!(t0.elapsed(), Duration::ZERO);
    let history = AttemptHistory::of(&res).unwrap();
    let Some(GaveUp::Deadline { wait }) = history.gave_up else {
        panic!("{history:?}")
    };
    assert!(
        wait >= Duration::from_secs(30) && wait < Duration::from_secs(36),
        "{wait:?}"
    );
    // A new request meets the cooldown and fails fast, typed, without the network.
    let err = client
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap_err();
    let cooling = err.downcast_ref::<Refused>().unwrap();
    assert_eq!(cooling.by, RefusedBy::Cooldown);
    assert_eq!(cooling.retry_in, Duration::from_secs(30));
    assert_eq!(sim.log().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hint_over_the_cap_is_handed_back() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "cap");
    script(
        &sim,
        StatusCode::SERVICE_UNAVAILABLE,
        1,
        "99999999999999999999",
    );
    let res = stack!(
        LogicalLayer::new(Duration::from_secs(1000), 5),
        RetryLayer::new()
    )
    .oneshot(request(Method::GET, &uri).build())
    .await
    .unwrap();
    let history = AttemptHistory::of(&res).unwrap();
    assert!(
        matches!(history.gave_up, Some(GaveUp::OverCap { .. })),
        "{history:?}"
    );
    assert_eq!(sim.log().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn malformed_retry_after_falls_back_to_backoff() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "bad");
    for bad in ["-5", "soon", "Fri, 32 Dec 1999 23:59:59 GMT"] {
        let (name, _) = retry_after("0");
        sim.script(
            Fault::status(StatusCode::SERVICE_UNAVAILABLE)
                .header(name, HeaderValue::from_static(bad)),
        );
    }
    let t0 = Instant::now();
    let res = stack!(RetryLayer::new())
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let times = since(t0, &sim.log());
    println!("fallback attempt times: {times:?}");
    // Backoff without a hint: [1, 2) s, then [2, 4) s, then [4, 8) s.
    let gaps: Vec<Duration> = times.windows(2).map(|p| p[1] - p[0]).collect();
    for (gap, lo) in gaps.iter().zip([1u64, 2, 4]) {
        assert!(
            // tokio's timers round a wait up to the next millisecond.
            *gap >= Duration::from_secs(lo) && *gap <= Duration::from_secs(2 * lo),
            "{gaps:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_are_capped() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "cap3");
    script(&sim, StatusCode::SERVICE_UNAVAILABLE, 10, "1");
    let res = stack!(
        LogicalLayer::new(Duration::from_secs(20), 3),
        RetryLayer::new()
    )
    .oneshot(request(Method::GET, &uri).build())
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        AttemptHistory::of(&res).unwrap().gave_up,
        Some(GaveUp::MaxAttempts)
    );
    assert_eq!(sim.log().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_refuses_retries() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "budget");
    script(&sim, StatusCode::SERVICE_UNAVAILABLE, 20, "0");
    let layer =
        RetryLayer::new().with_budget(Arc::new(RetryBudget::new(Duration::from_secs(10), 1, 0.0)));
    let res = stack!(
        LogicalLayer::new(Duration::from_secs(20), 20),
        layer.clone()
    )
    .oneshot(request(Method::GET, &uri).build())
    .await
    .unwrap();
    let history = AttemptHistory::of(&res).unwrap();
    assert_eq!(history.gave_up, Some(GaveUp::Budget));
    assert_eq!(layer.stats().budget_refusals(), 1);
    // min_per_sec = 1 over a 10 s window allows 10 retries.
    assert_eq!(sim.log().len(), 11);
}

/// With no reserve, retries are paid by the requests' share: at 50 %,
/// one request's deposit does not pay for a retry, two requests' do.
#[tokio::test(start_paused = true)]
async fn a_budget_pays_retries_from_the_share_of_requests() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "share");
    script(&sim, StatusCode::SERVICE_UNAVAILABLE, 2, "0");
    let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.5);
    let layer = RetryLayer::new().with_budget(Arc::new(budget));
    let client = stack!(LogicalLayer::new(Duration::from_secs(20), 5), layer.clone());
    let get = || request(Method::GET, &uri).build();
    let first = client.clone().oneshot(get()).await.unwrap();
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    let history = AttemptHistory::of(&first).unwrap();
    assert_eq!(history.gave_up, Some(GaveUp::Budget));
    let second = client.oneshot(get()).await.unwrap();
    // Retried: 204, the session does not exist.
    assert_eq!(second.status(), StatusCode::NO_CONTENT);
    assert_eq!(AttemptHistory::of(&second).unwrap().attempts().len(), 2);
    assert_eq!(layer.stats().budget_refusals(), 1);
    assert_eq!(sim.log().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_500_on_a_write_is_sent_once_but_a_read_is_retried() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "s500");
    sim.script(Fault::status(StatusCode::INTERNAL_SERVER_ERROR).times(2));
    let put = request(Method::PUT, &uri)
        .json(serde_json::json!({"members": {"me": {}}}))
        .build();
    let res = stack!(RetryLayer::new()).oneshot(put).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        AttemptHistory::of(&res).unwrap().gave_up,
        Some(GaveUp::NotSafeToRepeat)
    );
    assert_eq!(
        sim.log().len(),
        1,
        "a PUT the server may have applied is not repeated"
    );
    let res = stack!(RetryLayer::new())
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim.log().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_dropped_during_a_cooldown_leaves_it_consistent() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "drop");
    script(&sim, StatusCode::SERVICE_UNAVAILABLE, 1, "2");
    let client = stack!(
        LogicalLayer::new(Duration::from_secs(20), 1),
        RetryLayer::new()
    );
    let t0 = Instant::now();
    let first = client
        .clone()
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Two callers wait out the cooldown; one is dropped while waiting.
    let dropped = tokio::spawn(client.clone().oneshot(request(Method::GET, &uri).build()));
    let waiter = tokio::spawn(client.clone().oneshot(request(Method::GET, &uri).build()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    dropped.abort();
    assert!(dropped.await.unwrap_err().is_cancelled());
    let res = waiter.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let times = since(t0, &sim.log());
    assert_eq!(
        times,
        [Duration::ZERO, Duration::from_secs(2)],
        "the waiter went as the probe, at the end"
    );
    let res = client
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::NO_CONTENT,
        "the cooldown is over for the next"
    );
}

#[tokio::test(start_paused = true)]
async fn two_stacks_given_one_cooldowns_handle_share_a_503s_retry_after() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "shared-cooldown");
    script(&sim, StatusCode::SERVICE_UNAVAILABLE, 1, "5");
    let cooldowns = Cooldowns::new();
    // Two stacks built apart, each with its own layer and client.
    let first = stack!(RetryLayer::new().with_cooldowns(cooldowns.clone()));
    let second = stack!(RetryLayer::new().with_cooldowns(cooldowns.clone()));
    let t0 = Instant::now();
    // The first is told 503, Retry-After: 5, and waits to retry ...
    let through_first = tokio::spawn(first.oneshot(request(Method::GET, &uri).build()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cooldowns.held(), 1, "the 503 closed the shared cooldown");
    // ... and a request through the second, a second later, waits for the
    // cooldown's end instead of going at once.
    let res = second
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(t0.elapsed(), Duration::from_secs(5));
    let res = through_first.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let log = sim.log();
    let times = since(t0, &log);
    let statuses: Vec<u16> = log.iter().map(|e| e.status.as_u16()).collect();
    println!("shared cooldowns: attempt times {times:?} statuses {statuses:?}");
    assert_eq!(statuses, [503, 204, 204]);
    assert_eq!(times[..2], [Duration::ZERO, Duration::from_secs(5)]);
    // The first's own retry comes after, one release slot (50 ms) on at
    // the earliest, and within its jitter of Retry-After × [1.0, 1.2).
    assert!(
        times[2] >= Duration::from_millis(5050) && times[2] <= Duration::from_secs(6),
        "{times:?}"
    );
}
