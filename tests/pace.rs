//! The pace layer against the simulator's rate limiter, at the same
//! limits, over real TCP on paused time: callers hammering for ten virtual
//! minutes get no 429 and the sustain rate.

mod common;

use std::time::Duration;

use common::{http_client, request, SCID};
use futures_util::future::join_all;
use http::{header, HeaderValue, Method, StatusCode};
use mpsd_sim::{Fault, RateLimits, SimHandle, Simulator, Window};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_mpsd::classify::{ClassifyBody, Outcome, THROTTLED_BODY_CAP};
use tower_mpsd::error::{Refused, RefusedBy};
use tower_mpsd::logical::LogicalLayer;
use tower_mpsd::pace::{Limits, PaceLayer, PaceTable};
use tower_mpsd::response::{read_response, MpsdError, Payload};
use tower_mpsd::retry::RetryLayer;
use tower_mpsd::rules::rate_limit::RateLimitInfo;
use tower_mpsd::{MpsdLayer, ServiceBuilderExt};

const TEN_MINUTES: Duration = Duration::from_secs(600);

async fn sim_with(limits: RateLimits) -> SimHandle {
    Simulator::builder()
        .rate_limit(limits)
        .start()
        .await
        .unwrap()
}

fn handle_query_limits() -> RateLimits {
    RateLimits {
        burst: Window {
            max: 1,
            period: Duration::from_secs(15),
        },
        sustain: Window {
            max: 20,
            period: Duration::from_secs(300),
        },
    }
}

/// What the simulator saw: answers by status, within the first `span`.
struct Tally {
    sent: usize,
    throttled: usize,
}

fn tally(sim: &SimHandle, t0: Instant, span: Duration) -> Tally {
    let log = sim.log();
    let within: Vec<_> = log.iter().filter(|e| e.at - t0 < span).collect();
    Tally {
        sent: within.len(),
        throttled: log
            .iter()
            .filter(|e| e.status == StatusCode::TOO_MANY_REQUESTS)
            .count(),
    }
}

/// Sends `method` to `uri` as `user` as fast as the layer lets it, for ten
/// virtual minutes; refused by pacing, it sleeps as long as told.
async fn hammer<S>(client: S, method: Method, uri: String, user: &'static str) -> usize
where
    S: tower::Service<
            http::Request<http_body_util::Full<bytes::Bytes>>,
            Response = http::Response<hyper::body::Incoming>,
            Error = tower_mpsd::BoxError,
        > + Clone,
{
    let t0 = Instant::now();
    let mut told_to_wait = 0;
    while t0.elapsed() < TEN_MINUTES {
        let req = request(method.clone(), &uri)
            .user(Some(user))
            .json(serde_json::json!({}))
            .build();
        match client.clone().oneshot(req).await {
            Ok(_) => {}
            Err(e) => {
                let exceeded = e.downcast_ref::<Refused>().expect("only pacing fails");
                assert_eq!(exceeded.by, RefusedBy::Pace);
                told_to_wait += 1;
                tokio::time::sleep(exceeded.retry_in).await;
            }
        }
    }
    told_to_wait
}

/// Asserts no 429 and a rate within 5 % of `per_second`.
fn assert_paced(what: &str, tally: &Tally, per_second: f64) {
    let rate = tally.sent as f64 / TEN_MINUTES.as_secs_f64();
    println!(
        "{what}: {} requests in 600 s, {} answered 429; {rate:.4}/s = {:.1} % of the sustain limit",
        tally.sent,
        tally.throttled,
        100.0 * rate / per_second
    );
    assert_eq!(tally.throttled, 0, "{what}: throttled");
    assert!(
        (rate / per_second - 1.0).abs() <= 0.05,
        "{what}: {rate}/s is not within 5 % of {per_second}/s"
    );
}

/// Logical requests that may wait for their slot as long as the test runs.
fn waits_up_to_ten_minutes() -> LogicalLayer {
    LogicalLayer::new(TEN_MINUTES, 1)
}

async fn one_caller_for_ten_minutes(layer: PaceLayer, what: &str) {
    let sim = sim_with(RateLimits::mpsd()).await;
    let uri = sim.session_uri(SCID, "LobbySession", "paced");
    let client = ServiceBuilder::new()
        .layer(waits_up_to_ten_minutes())
        .layer(layer)
        .service(http_client());
    let t0 = Instant::now();
    let told = hammer(client, Method::GET, uri, "alice").await;
    println!("{what}: told to wait {told} times");
    assert_paced(what, &tally(&sim, t0, TEN_MINUTES), 1.0);
}

#[tokio::test(start_paused = true)]
async fn one_caller_hammering_for_ten_minutes_gets_no_429_and_the_sustain_rate() {
    let layer = PaceLayer::new();
    one_caller_for_ten_minutes(layer, "one caller, default margin").await;
}

#[tokio::test(start_paused = true)]
async fn with_no_margin_the_windows_match_the_service_exactly() {
    let table = PaceTable::builder().margin(Duration::ZERO).build();
    let layer = PaceLayer::with_table(table);
    one_caller_for_ten_minutes(layer, "one caller, no margin").await;
}

#[tokio::test(start_paused = true)]
async fn a_caller_told_when_a_slot_opens_waits_that_long_and_gets_no_429() {
    // The default 20 s longest wait: waits for the sustain window fail fast.
    one_caller_for_ten_minutes(PaceLayer::new(), "one caller, 20 s max wait").await;
}

#[tokio::test(start_paused = true)]
async fn eight_callers_of_one_user_share_the_windows() {
    let sim = sim_with(RateLimits::mpsd()).await;
    let uri = sim.session_uri(SCID, "LobbySession", "shared");
    let client = ServiceBuilder::new()
        .layer(waits_up_to_ten_minutes())
        .layer(PaceLayer::new())
        .service(http_client());
    let t0 = Instant::now();
    join_all((0..8).map(|_| hammer(client.clone(), Method::GET, uri.clone(), "alice"))).await;
    assert_paced("eight callers", &tally(&sim, t0, TEN_MINUTES), 1.0);
}

#[tokio::test(start_paused = true)]
async fn users_are_paced_apart() {
    let sim = sim_with(RateLimits::mpsd()).await;
    let uri = sim.session_uri(SCID, "LobbySession", "two");
    let client = ServiceBuilder::new()
        .layer(waits_up_to_ten_minutes())
        .layer(PaceLayer::new())
        .service(http_client());
    let t0 = Instant::now();
    let a = hammer(client.clone(), Method::GET, uri.clone(), "alice");
    let b = hammer(client, Method::GET, uri, "bob");
    futures_util::future::join(a, b).await;
    let log = sim.log();
    for user in ["alice", "bob"] {
        let sent = log
            .iter()
            .filter(|e| e.user.as_deref() == Some(user) && e.at - t0 < TEN_MINUTES)
            .count();
        println!("{user}: {sent} requests in 600 s");
        assert_eq!(sent, 600, "{user}");
    }
    assert!(log
        .iter()
        .all(|e| e.status != StatusCode::TOO_MANY_REQUESTS));
}

#[tokio::test(start_paused = true)]
async fn handle_queries_are_paced_by_their_own_limits_by_default() {
    let sim = sim_with(handle_query_limits()).await;
    let uri = format!("{}/handles/query", sim.base_uri());
    let client = ServiceBuilder::new()
        .layer(waits_up_to_ten_minutes())
        .layer(PaceLayer::new())
        .service(http_client());
    let t0 = Instant::now();
    hammer(client, Method::POST, uri, "alice").await;
    // 20 per 300 s.
    assert_paced(
        "handle queries",
        &tally(&sim, t0, TEN_MINUTES),
        20.0 / 300.0,
    );
}

#[tokio::test(start_paused = true)]
async fn without_the_route_handle_queries_are_throttled() {
    let sim = sim_with(handle_query_limits()).await;
    let uri = format!("{}/handles/query", sim.base_uri());
    let table = PaceTable::builder().no_routes().build();
    let client = ServiceBuilder::new()
        .layer(PaceLayer::with_table(table.clone()))
        .service(http_client());
    for _ in 0..3 {
        let req = request(Method::POST, &uri)
            .json(serde_json::json!({}))
            .build();
        client.clone().oneshot(req).await.unwrap();
    }
    let log = sim.log();
    let statuses: Vec<u16> = log.iter().map(|e| e.status.as_u16()).collect();
    // The 429 teaches the pacer: the third waits out its `Retry-After`
    // (the 15 s window) instead of being throttled too.
    assert_eq!(statuses, [200, 429, 200]);
    assert!(log[2].at - log[1].at >= std::time::Duration::from_secs(14));
    assert_eq!(table.stats().throttled(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_logical_requests_deadline_bounds_the_wait_for_a_slot() {
    let sim = sim_with(RateLimits::mpsd()).await;
    let uri = sim.session_uri(SCID, "LobbySession", "deadline");
    // One limiter, shared by the clones of the layer in both stacks.
    let table = PaceTable::builder().margin(Duration::ZERO).build();
    let pace = PaceLayer::with_table(table);
    let stack = |deadline: u64| {
        ServiceBuilder::new()
            .layer(LogicalLayer::new(Duration::from_secs(deadline), 5))
            // Retries GETs after errors, but not after a refusal by pacing.
            .layer(RetryLayer::new())
            .layer(pace.clone())
            .service(http_client())
    };
    let t0 = Instant::now();
    for _ in 0..30 {
        let req = request(Method::GET, &uri).build();
        stack(5).oneshot(req).await.unwrap();
    }
    // The 31st's slot is at 15 s: past a 5 s deadline, it fails at once ...
    let err = stack(5)
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap_err();
    let exceeded = err.downcast_ref::<Refused>().expect("Refused");
    assert_eq!(exceeded.by, RefusedBy::Pace);
    assert_eq!(exceeded.retry_in, Duration::from_secs(15));
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(sim.log().len(), 30, "it never reached the service");
    // ... and within a 20 s deadline it waits for its slot.
    let res = stack(20)
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(t0.elapsed(), Duration::from_secs(15));
    let log = sim.log();
    assert_eq!(log.len(), 31);
    assert_eq!(log[30].at - t0, Duration::from_secs(15));
    assert!(log.iter().all(|e| e.status == StatusCode::NO_CONTENT));
}

#[tokio::test(start_paused = true)]
async fn custom_limits_match_a_service_with_the_same_limits() {
    // Limits scaled down, as a custom configuration: 3 per 15 s, 30 per 300 s.
    let limits = RateLimits::mpsd().scaled(0.1);
    let sim = sim_with(limits).await;
    let uri = sim.session_uri(SCID, "LobbySession", "scaled");
    let pace = Limits::new(
        tower_mpsd::pace::Window::new(3, Duration::from_secs(15)),
        tower_mpsd::pace::Window::new(30, Duration::from_secs(300)),
    );
    let client = ServiceBuilder::new()
        .layer(waits_up_to_ten_minutes())
        .layer(PaceLayer::with_table(
            PaceTable::builder().limits(pace).build(),
        ))
        .service(http_client());
    let t0 = Instant::now();
    hammer(client, Method::GET, uri, "carol").await;
    assert_paced("scaled limits", &tally(&sim, t0, TEN_MINUTES), 0.1);
}

#[tokio::test(start_paused = true)]
async fn two_stacks_given_one_table_together_stay_within_a_users_burst_window() {
    // The service lets each user 3 requests per 15 s; the table counts the same.
    let sim = common::burst_limited_sim(3).await;
    let uri = sim.session_uri(SCID, "LobbySession", "shared-table");
    let table = PaceTable::builder()
        .limits(Limits::new(
            tower_mpsd::pace::Window::new(3, Duration::from_secs(15)),
            tower_mpsd::pace::Window::new(300, Duration::from_secs(300)),
        ))
        .margin(Duration::ZERO)
        .build();
    // Two stacks built apart, each with its own layers and client.
    let stack = || {
        ServiceBuilder::new()
            .mpsd_with(MpsdLayer::new().pace(PaceLayer::with_table(table.clone())))
            .service(http_client())
    };
    let (first, second) = (stack(), stack());
    let t0 = Instant::now();
    // Alice sends three requests through each, at once.
    let sends = (0..6).map(|i| {
        let client = if i % 2 == 0 { &first } else { &second };
        client.clone().oneshot(request(Method::GET, &uri).build())
    });
    for res in join_all(sends).await {
        assert_eq!(res.unwrap().status(), StatusCode::NO_CONTENT);
    }
    let log = sim.log();
    let times: Vec<Duration> = log.iter().map(|e| e.at - t0).collect();
    let statuses: Vec<u16> = log.iter().map(|e| e.status.as_u16()).collect();
    println!("shared pace table: send times {times:?} statuses {statuses:?}");
    assert_eq!(statuses, [204; 6], "no 429");
    let (now, later) = (Duration::ZERO, Duration::from_secs(15));
    assert_eq!(times, [now, now, now, later, later, later]);
}

/// A zero deadline allows no wait, with pacing or without: a send goes at
/// once when nothing holds it back, and is refused, unsent, when its pace
/// slot is later.
#[tokio::test(start_paused = true)]
async fn a_zero_deadline_sends_at_once_or_is_refused_with_or_without_pacing() {
    let sim = sim_with(RateLimits::mpsd()).await;
    let uri = sim.session_uri(SCID, "LobbySession", "zero");
    let one_per_minute = Limits::new(
        tower_mpsd::pace::Window::new(1, Duration::from_secs(60)),
        tower_mpsd::pace::Window::new(10, Duration::from_secs(600)),
    );
    let table = PaceTable::builder()
        .limits(one_per_minute)
        .margin(Duration::ZERO)
        .build();
    let paced = ServiceBuilder::new()
        .mpsd_with(
            MpsdLayer::new()
                .deadline(Duration::ZERO)
                .pace(PaceLayer::with_table(table)),
        )
        .service(http_client());
    let unpaced = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().deadline(Duration::ZERO))
        .service(http_client());
    let t0 = Instant::now();

    let first = paced
        .clone()
        .oneshot(request(Method::GET, &uri).build())
        .await;
    assert_eq!(first.unwrap().status(), StatusCode::NO_CONTENT);
    let second = paced.oneshot(request(Method::GET, &uri).build()).await;
    let refused = second.unwrap_err().downcast::<Refused>().unwrap();
    assert_eq!(refused.by, RefusedBy::Pace);
    assert_eq!(refused.retry_in, Duration::from_secs(60));
    let third = unpaced.oneshot(request(Method::GET, &uri).build()).await;
    assert_eq!(third.unwrap().status(), StatusCode::NO_CONTENT);

    assert_eq!(t0.elapsed(), Duration::ZERO, "nothing waited");
    assert_eq!(sim.log().len(), 2, "the refused request was never sent");
}

/// The documented 429 body, saying the user's burst window is full.
const FULL_WINDOW: &str = r#"{"version":1,"currentRequests":31,"maxRequests":30,"periodInSeconds":15,"limitType":"Rate"}"#;

/// A 429 whose `Retry-After` is not usable, with `body`.
fn throttled_without_retry_after(body: String) -> Fault {
    Fault::status(StatusCode::TOO_MANY_REQUESTS)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .header(header::RETRY_AFTER, HeaderValue::from_static("soon"))
        .body(body)
}

/// The recommended stack, pacing by `table`, one send per call: a 429
/// comes back to the caller.
fn one_send_stack(
    table: &PaceTable,
) -> impl tower::Service<
    http::Request<http_body_util::Full<bytes::Bytes>>,
    Response = http::Response<ClassifyBody<hyper::body::Incoming>>,
    Error = tower_mpsd::BoxError,
> + Clone {
    ServiceBuilder::new()
        .mpsd_with(
            MpsdLayer::new()
                .max_attempts(1)
                .pace(PaceLayer::with_table(table.clone())),
        )
        .service(http_client())
}

/// Alice's and Bob's next GETs of `uri`, sent together; each answer's
/// user and arrival after `t0`, as the simulator logged them.
async fn next_of_alice_and_bob<S>(
    client: &S,
    sim: &SimHandle,
    uri: &str,
    t0: Instant,
) -> Vec<(String, Duration)>
where
    S: tower::Service<
            http::Request<http_body_util::Full<bytes::Bytes>>,
            Response = http::Response<ClassifyBody<hyper::body::Incoming>>,
            Error = tower_mpsd::BoxError,
        > + Clone,
{
    let alice = client.clone().oneshot(request(Method::GET, uri).build());
    let bob = client
        .clone()
        .oneshot(request(Method::GET, uri).user(Some("bob")).build());
    let (alice, bob) = futures_util::future::join(alice, bob).await;
    assert_eq!(alice.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(bob.unwrap().status(), StatusCode::NO_CONTENT);
    sim.log()
        .iter()
        .map(|e| (e.user.clone().unwrap(), e.at - t0))
        .collect()
}

/// Pacing learns from the 429 body inside the recommended stack: the
/// classify layer reads it, so without a usable `Retry-After` the body's
/// full window holds the user's next request until its period ends, and
/// the caller's outcome carries the body's fields.
#[tokio::test(start_paused = true)]
async fn a_429_body_saying_the_window_is_full_holds_the_users_next_request_for_its_period() {
    let sim = common::quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "full-window");
    sim.script(throttled_without_retry_after(FULL_WINDOW.into()));
    let table = PaceTable::new();
    let client = one_send_stack(&table);
    let t0 = Instant::now();

    let res = client
        .clone()
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    let outcome = Outcome::of(&res).unwrap();
    let info = RateLimitInfo::parse(FULL_WINDOW.as_bytes());
    assert!(info.is_some());
    let expected = Outcome::TooManyRequests {
        retry_after: None,
        rate_limit: info,
    };
    assert_eq!(outcome, expected);
    // The caller still reads the whole body, and the same outcome.
    match read_response(res, 64 << 10).await {
        Err(MpsdError::Status {
            outcome,
            payload: Payload::Json(body),
            ..
        }) => {
            assert_eq!(outcome, expected);
            assert_eq!(body, FULL_WINDOW.as_bytes());
        }
        other => panic!("{other:?}"),
    }

    // Alice waits until the burst window has passed; Bob is not held back.
    let arrivals = next_of_alice_and_bob(&client, &sim, &uri, t0).await;
    let at = |user: &str, secs: u64| (user.to_owned(), Duration::from_secs(secs));
    assert_eq!(arrivals, [at("alice", 0), at("bob", 0), at("alice", 15)]);
    assert_eq!(table.stats().throttled(), 1);
}

/// A 429 body the classify layer does not read (over its cap) or cannot
/// (cut short) leaves the outcome without the body's fields and pacing
/// unheld; the caller still gets the answer, and reads what there is.
#[tokio::test(start_paused = true)]
async fn a_429_body_over_the_cap_or_cut_short_leaves_pacing_to_retry_after_alone() {
    let padded = format!(
        r#"{{"currentRequests":31,"maxRequests":30,"periodInSeconds":15,"padding":"{}"}}"#,
        "x".repeat(THROTTLED_BODY_CAP)
    );
    // When the answer is whole: at once, or, cut short, when the
    // simulator breaks the body off (1 ms after the head).
    let ms = Duration::from_millis;
    for (what, fault, answered) in [
        (
            "over the cap",
            throttled_without_retry_after(padded.clone()),
            ms(0),
        ),
        (
            "cut short",
            throttled_without_retry_after(FULL_WINDOW.into()).truncate(20),
            ms(1),
        ),
    ] {
        let sim = common::quiet_sim().await;
        let uri = sim.session_uri(SCID, "LobbySession", "unread");
        sim.script(fault);
        let table = PaceTable::new();
        let client = one_send_stack(&table);
        let t0 = Instant::now();

        let res = client
            .clone()
            .oneshot(request(Method::GET, &uri).build())
            .await
            .unwrap();
        let unread = Outcome::TooManyRequests {
            retry_after: None,
            rate_limit: None,
        };
        assert_eq!(Outcome::of(&res), Some(unread), "{what}");
        match (what, read_response(res, 64 << 10).await) {
            // Read by the caller under its own cap: the fields are there.
            (
                "over the cap",
                Err(MpsdError::Status {
                    outcome, payload, ..
                }),
            ) => {
                assert_eq!(payload, Payload::Json(padded.clone().into()));
                assert!(matches!(
                    outcome,
                    Outcome::TooManyRequests {
                        rate_limit: Some(_),
                        ..
                    }
                ));
            }
            ("cut short", Err(MpsdError::Body { outcome, .. })) => assert_eq!(outcome, unread),
            (_, other) => panic!("{what}: {other:?}"),
        }

        // Only the retry layer's cooldown for a 429 without `Retry-After`
        // (its backoff's 1 s base, from the answer) holds Alice back.
        let arrivals = next_of_alice_and_bob(&client, &sim, &uri, t0).await;
        let at = |user: &str, after: Duration| (user.to_owned(), after);
        let cooldown = answered + Duration::from_secs(1);
        assert_eq!(
            arrivals,
            [
                at("alice", ms(0)),
                at("bob", answered),
                at("alice", cooldown)
            ],
            "{what}"
        );
        assert_eq!(table.stats().throttled(), 1, "{what}");
    }
}
