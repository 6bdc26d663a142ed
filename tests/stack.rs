//! The recommended stack against the simulator over real TCP, on paused
//! time: the layers together, an HTTP-date `Retry-After`, a body that
//! cannot be replayed, and callers that go away at every await point.

mod common;

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{header, Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mpsd_sim::{Fault, Simulator};
use serde_json::json;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_mpsd::classify::Outcome;
use tower_mpsd::logical::{AttemptHistory, GaveUp, Purpose};
use tower_mpsd::rebase::policy::{CreateOnly, ResendDelta};
use tower_mpsd::rebase::RebaseLayer;
use tower_mpsd::replay::ReplayBody;
use tower_mpsd::retry::RetryLayer;
use tower_mpsd::rules::backoff::Cause;
use tower_mpsd::{MpsdLayer, ServiceBuilderExt};

use common::{create, http_client, overloaded, quiet_sim, request, SCID};

fn purposes(history: &AttemptHistory) -> Vec<(Purpose, u16)> {
    history
        .attempts()
        .iter()
        .map(|a| (a.purpose, a.outcome.map_or(0, |o| o.status().as_u16())))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_recommended_stack_rides_out_a_503_then_rebases_the_412() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "stack");
    let stale = create(&uri, "alice", json!({})).await;
    // Someone else writes first: the ETag we hold is stale.
    let other = request(Method::PUT, &uri).json(json!({"properties": {"custom": {"b": 1}}}));
    common::send(other).await;
    sim.script(overloaded("1").method(Method::PUT));
    let client = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().rebase(RebaseLayer::new(ResendDelta)))
        .service(http_client());
    let put = request(Method::PUT, format!("{uri}/members/me"))
        .header(header::IF_MATCH, &stale)
        .json(json!({"properties": {"custom": {"ready": true}}}))
        .build();
    let res = client.oneshot(put).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(Outcome::of(&res), Some(Outcome::Ok));
    let history = AttemptHistory::of(&res).unwrap();
    println!("stack: {:?} in {:?}", purposes(history), history.total);
    assert_eq!(
        purposes(history),
        [
            (Purpose::First, 503),
            (Purpose::Retry(Cause::Overloaded), 412),
            (Purpose::Rebased, 200)
        ]
    );
    let session = sim.session(SCID, "LobbySession", "stack").unwrap();
    assert_eq!(
        session["properties"]["custom"]["b"], 1,
        "the other write kept"
    );
    assert_eq!(
        session["members"]["0"]["properties"]["custom"]["ready"],
        true
    );
}

#[tokio::test(start_paused = true)]
async fn an_http_date_retry_after_is_honoured_and_a_past_one_means_now() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "dates");
    // Dates are wall-clock time, which paused time does not move: measure
    // how far the wall clock moves during the test and allow that much.
    let wall0 = SystemTime::now();
    let date = wall0 + Duration::from_secs(3);
    let hint = httpdate::parse_http_date(&httpdate::fmt_http_date(date))
        .unwrap()
        .duration_since(wall0)
        .unwrap();
    sim.script(overloaded(&httpdate::fmt_http_date(date)));
    sim.script(overloaded(&httpdate::fmt_http_date(
        wall0 - Duration::from_secs(3600),
    )));
    let t0 = Instant::now();
    let res = ServiceBuilder::new()
        .mpsd()
        .service(http_client())
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    let drift = wall0.elapsed().unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let times: Vec<Duration> = sim.log().iter().map(|e| e.at - t0).collect();
    println!("date attempt times: {times:?} (hint {hint:?}, wall drift {drift:?})");
    assert_eq!(times.len(), 3);
    let gap = times[1] - times[0];
    assert!(gap + drift >= hint, "not before the date: {gap:?}");
    // Within the 503 jitter; tokio's timers round a wait up to the next ms.
    let most = hint.mul_f64(1.2) + Duration::from_millis(1);
    assert!(gap <= most, "within the 503 jitter: {gap:?}");
    assert_eq!(times[2], times[1], "a date in the past: retry at once");
}

type Chunks = StreamBody<stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

fn chunks(parts: Vec<&'static str>, then_hang: bool) -> Chunks {
    let data = stream::iter(parts).map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))));
    let stream = if then_hang {
        data.chain(stream::pending()).boxed()
    } else {
        data.boxed()
    };
    StreamBody::new(stream)
}

fn streaming_client(
) -> Client<hyper_util::client::legacy::connect::HttpConnector, ReplayBody<Chunks>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn streamed_put(uri: &str, body: Chunks) -> Request<Chunks> {
    let mut req = Request::put(uri).body(body).unwrap();
    req.headers_mut()
        .insert(header::AUTHORIZATION, common::auth("alice"));
    req
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_replay_cap_is_sent_once() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "once");
    sim.script(overloaded("1").method(Method::PUT));
    let client = ServiceBuilder::new()
        .mpsd_replay(8)
        .mpsd()
        .service(streaming_client());
    let body = chunks(vec![r#"{"members":"#, r#"{"me":{}}}"#], false);
    let res = client.oneshot(streamed_put(&uri, body)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let history = AttemptHistory::of(&res).unwrap();
    assert_eq!(history.gave_up, Some(GaveUp::NotReplayable));
    assert_eq!(sim.log().len(), 1, "sent once");
}

#[tokio::test(start_paused = true)]
async fn a_body_within_the_replay_cap_is_replayed_after_a_503() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "twice");
    sim.script(overloaded("1").method(Method::PUT));
    let client = ServiceBuilder::new()
        .mpsd_replay(1024)
        .mpsd()
        .service(streaming_client());
    let body = chunks(vec![r#"{"members":"#, r#"{"me":{}}}"#], false);
    let res = client.oneshot(streamed_put(&uri, body)).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(sim.log().len(), 2);
}

// Cancellation: the caller drops its future at each await point; then the
// next request must go through as if nothing happened. The layers spawn no
// task of their own, so a dropped future leaves nothing running.

#[tokio::test(start_paused = true)]
async fn dropped_while_buffering_the_body_nothing_is_sent() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "buffering");
    let client = ServiceBuilder::new()
        .mpsd_replay(1024)
        .mpsd()
        .service(streaming_client());
    let hanging = chunks(vec!["{"], true);
    let call = client.clone().oneshot(streamed_put(&uri, hanging));
    assert!(tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .is_err());
    assert!(sim.log().is_empty(), "no half body went out");
    let body = chunks(vec![r#"{"members":{"me":{}}}"#], false);
    let res = client.oneshot(streamed_put(&uri, body)).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test(start_paused = true)]
async fn dropped_while_sleeping_in_backoff_the_cooldown_still_holds_then_opens() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "sleeping");
    sim.script(overloaded("5"));
    let layer = RetryLayer::new();
    let stats = layer.stats();
    let client = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().retry(layer))
        .service(http_client());
    let t0 = Instant::now();
    let sleeper = tokio::spawn(client.clone().oneshot(request(Method::GET, &uri).build()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    sleeper.abort();
    assert!(sleeper.await.unwrap_err().is_cancelled());
    let res = client
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let times: Vec<Duration> = sim.log().iter().map(|e| e.at - t0).collect();
    assert_eq!(
        times,
        [Duration::ZERO, Duration::from_secs(5)],
        "waited out, then one probe"
    );
    assert_eq!(
        stats.retries_overloaded(),
        0,
        "a retry is counted when it goes; the dropped one never went"
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_dropped_in_flight_hands_its_role_to_a_waiter() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "probe");
    sim.script(overloaded("2"));
    // The probe's request hangs at the server for a minute.
    sim.script(Fault::status(StatusCode::NO_CONTENT).delay(Duration::from_secs(60)));
    let client = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().max_attempts(1))
        .service(http_client());
    let t0 = Instant::now();
    let first = client
        .clone()
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    let probe = tokio::spawn(client.clone().oneshot(request(Method::GET, &uri).build()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waiter = tokio::spawn(client.clone().oneshot(request(Method::GET, &uri).build()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sim.log().len(),
        1,
        "the probe is in flight, the waiter waits"
    );
    probe.abort();
    let res = waiter.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let log = sim.log();
    let last = log.last().unwrap();
    assert_eq!(
        last.at - t0,
        Duration::from_millis(3010),
        "went as soon as the probe was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn dropped_during_a_reread_no_write_follows_and_the_next_one_works() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "reread");
    create(&uri, "alice", json!({})).await;
    sim.script(overloaded("5").method(Method::GET));
    sim.clear_log();
    let client = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().rebase(RebaseLayer::new(CreateOnly::then_update())))
        .service(http_client());
    let create_only = || {
        request(Method::PUT, &uri)
            .header(header::IF_NONE_MATCH, "*")
            .json(json!({"properties": {"custom": {"mode": "ffa"}}}))
            .build()
    };
    let writer = tokio::spawn(client.clone().oneshot(create_only()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    writer.abort();
    let _ = writer.await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let sent: Vec<_> = sim
        .log()
        .iter()
        .map(|e| (e.method.clone(), e.status.as_u16()))
        .collect();
    assert_eq!(
        sent,
        [(Method::PUT, 412), (Method::GET, 503)],
        "nothing after the drop"
    );
    let res = client.oneshot(create_only()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn every_option_at_once_polls_with_304s_and_no_429() {
    use tower_mpsd::pace::PaceLayer;
    use tower_mpsd::revalidate::{RevalidateLayer, Revalidated};
    // MPSD's own limits: 30 per 15 s, 300 per 300 s.
    let sim = Simulator::builder().start().await.unwrap();
    let uri = sim.session_uri(SCID, "LobbySession", "options");
    // Created by another user: alice's windows start empty.
    let stale = create(&uri, "bob", json!({})).await;
    let by_bob = json!({"properties": {"custom": {"b": 1}}});
    common::send(request(Method::PUT, &uri).user(Some("bob")).json(by_bob)).await;
    sim.clear_log();
    let stack = MpsdLayer::new()
        .rebase(RebaseLayer::new(ResendDelta))
        .revalidate(RevalidateLayer::new())
        .pace(PaceLayer::new());
    let client = ServiceBuilder::new()
        .mpsd_with(stack)
        .service(http_client());
    let t0 = Instant::now();
    let mut revalidated = 0;
    for _ in 0..40 {
        let get = request(Method::GET, &uri).build();
        let res = client.clone().oneshot(get).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        revalidated += usize::from(res.extensions().get::<Revalidated>().is_some());
    }
    // A write with a stale ETag: rebased, and paced too.
    let put = request(Method::PUT, &uri)
        .header(header::IF_MATCH, &stale)
        .json(json!({"properties": {"custom": {"polled": true}}}))
        .build();
    let res = client.clone().oneshot(put).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let history = AttemptHistory::of(&res).unwrap();
    assert_eq!(
        purposes(history),
        [(Purpose::First, 412), (Purpose::Rebased, 200)]
    );
    let log = sim.log();
    let statuses: Vec<u16> = log.iter().map(|e| e.status.as_u16()).collect();
    let count = |s: u16| statuses.iter().filter(|&&x| x == s).count();
    let last = log.last().unwrap().at - t0;
    println!(
        "options: {} requests, 304s {}, 429s {}, revalidated {revalidated}, last at {last:?}",
        log.len(),
        count(304),
        count(429)
    );
    assert_eq!(count(429), 0, "paced under the limits");
    assert_eq!(count(304), 39, "every poll after the first revalidated");
    assert_eq!(revalidated, 39);
    assert!(
        last >= Duration::from_secs(15),
        "the 31st request waited for the burst window"
    );
}
