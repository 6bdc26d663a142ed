//! Connection faults from the simulator, over real TCP on paused time: a
//! reset before the answer, a body cut short, an answer that never comes.
//! Each ends in a typed error, and only safe methods are sent again.

mod common;

use std::time::Duration;

use http::{header, Method, StatusCode};
use mpsd_sim::Fault;
use serde_json::json;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_mpsd::logical::{AttemptHistory, GaveUp, LogicalLayer, NoSession, Purpose};
use tower_mpsd::rebase::policy::ResendDelta;
use tower_mpsd::rebase::RebaseLayer;
use tower_mpsd::response::{read_response, MpsdError};
use tower_mpsd::retry::{AttemptTimedOut, RetryLayer};
use tower_mpsd::rules::backoff::Cause;
use tower_mpsd::{MpsdLayer, ServiceBuilderExt};

use common::{create, http_client, quiet_sim, request, SCID};

#[tokio::test(start_paused = true)]
async fn a_reset_get_is_retried_and_a_reset_put_is_not() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "reset");
    sim.script(Fault::status(StatusCode::OK).reset());
    let client = ServiceBuilder::new().mpsd().service(http_client());

    let res = client
        .clone()
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let history = AttemptHistory::of(&res).unwrap();
    let sent: Vec<_> = history
        .attempts()
        .iter()
        .map(|a| (a.purpose, a.outcome.is_some()))
        .collect();
    assert_eq!(
        sent,
        [
            (Purpose::First, false),
            (Purpose::Retry(Cause::Transient), true)
        ]
    );

    sim.clear_log();
    sim.script(Fault::status(StatusCode::OK).reset());
    let put = request(Method::PUT, &uri).json(json!({"members": {"me": {}}}));
    let err = client.oneshot(put.build()).await.unwrap_err();
    println!("reset PUT: {err}");
    let log = sim.log();
    assert_eq!(log.len(), 1, "the write was sent once");
    assert!(log[0].broken);
    assert!(sim.session(SCID, "LobbySession", "reset").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_body_cut_short_is_a_typed_body_error_and_is_not_resent() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "truncated");
    let body = json!({"members": {}, "properties": {"custom": {"x": 1}}}).to_string();
    sim.script(
        Fault::status(StatusCode::OK)
            .header(header::ETAG, "\"e1\"".parse().unwrap())
            .header(header::CONTENT_TYPE, "application/json".parse().unwrap())
            .body(body)
            .truncate(10),
    );
    let client = ServiceBuilder::new().mpsd().service(http_client());
    let res = client
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "the head arrived whole");
    let err = read_response(res, 1 << 20).await.unwrap_err();
    assert!(matches!(err, MpsdError::Body { .. }), "{err}");
    assert_eq!(sim.log().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_412_cut_short_is_reread_by_get_and_rebased() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "cut412");
    create(&uri, "alice", json!({})).await;
    sim.script(
        Fault::status(StatusCode::PRECONDITION_FAILED)
            .method(Method::PUT)
            .header(header::ETAG, "\"e1\"".parse().unwrap())
            .body("{\"members\": {\"0\": {}}}")
            .truncate(5),
    );
    sim.clear_log();
    let client = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().rebase(RebaseLayer::new(ResendDelta)))
        .service(http_client());
    let put = request(Method::PUT, &uri)
        .header(header::IF_MATCH, "\"old\"")
        .json(json!({"properties": {"custom": {"y": 2}}}));
    let res = client.oneshot(put.build()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let sent: Vec<_> = sim
        .log()
        .iter()
        .map(|e| (e.method.clone(), e.status.as_u16()))
        .collect();
    assert_eq!(
        sent,
        [(Method::PUT, 412), (Method::GET, 200), (Method::PUT, 200)]
    );
}

#[tokio::test(start_paused = true)]
async fn an_answer_that_never_comes_ends_at_the_deadline_typed() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "slow");
    sim.script(Fault::status(StatusCode::OK).delay(Duration::from_secs(3600)));
    let client = ServiceBuilder::new()
        .layer(LogicalLayer::new(Duration::from_secs(20), 5))
        .layer(RetryLayer::new())
        .service(http_client());
    let t0 = Instant::now();
    let err = client
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap_err();
    let timed_out = err
        .downcast_ref::<AttemptTimedOut>()
        .expect("AttemptTimedOut");
    assert_eq!(timed_out.after, Duration::from_secs(20));
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(20),
        "not a moment past the deadline"
    );
    assert_eq!(sim.log().len(), 0, "the server never answered");
}

#[tokio::test(start_paused = true)]
async fn a_slow_answer_late_in_the_window_still_gets_the_floor() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "floor");
    // The retry goes at 16 s × [1, 1.2), leaving 0.8 to 4 s of the 20 s
    // window; its answer takes 4.5 s, within the 5 s floor.
    let (name, value) = (header::RETRY_AFTER, "16".parse().unwrap());
    sim.script(Fault::status(StatusCode::SERVICE_UNAVAILABLE).header(name, value));
    let slow = Duration::from_millis(4500);
    sim.script(Fault::status(StatusCode::NO_CONTENT).delay(slow));
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .service(http_client());
    let t0 = Instant::now();
    let res = client
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let log = sim.log();
    println!(
        "floor: retried at {:?}, answered at {:?}",
        log[1].at - t0,
        t0.elapsed()
    );
    assert_eq!(t0.elapsed(), log[1].at - t0 + slow);
    assert!(
        t0.elapsed() > Duration::from_secs(20),
        "answered past the deadline, within the floor"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reread_that_fails_hands_back_the_412_not_the_error() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "rereadfail");
    create(&uri, "alice", json!({})).await;
    // The create-only write's 412 has no body; the GET re-read is reset.
    sim.script(Fault::status(StatusCode::OK).method(Method::GET).reset());
    let client = ServiceBuilder::new()
        .layer(RebaseLayer::new(ResendDelta))
        .service(http_client());
    let put = request(Method::PUT, &uri)
        .header(header::IF_NONE_MATCH, "*")
        .json(json!({}));
    let res = client.oneshot(put.build()).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::PRECONDITION_FAILED,
        "the write's own answer"
    );
    assert_eq!(
        AttemptHistory::of(&res).unwrap().gave_up,
        Some(GaveUp::NoSession(NoSession::RereadFailed))
    );
}
