//! The recommended stack over reqwest 0.12, through the `service_fn`
//! adapter of `examples/reqwest.rs`, against the simulator over real TCP
//! on paused time: a 204, a 503 retried no earlier than its
//! `Retry-After`, a 412 rebased.

mod common;

#[path = "../examples/reqwest.rs"]
#[allow(dead_code, unreachable_pub)]
mod example;

use std::time::Duration;

use common::{create, overloaded, quiet_sim, request, SCID};
use http::{header, Method, StatusCode};
use serde_json::json;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_mpsd::classify::Outcome;
use tower_mpsd::logical::{AttemptHistory, Purpose};
use tower_mpsd::rebase::{policy::ResendDelta, RebaseLayer};
use tower_mpsd::response::read_response;
use tower_mpsd::rules::backoff::Cause;
use tower_mpsd::{MpsdLayer, ServiceBuilderExt};

use example::{one_send_client, reqwest_service};

/// The stack of the example: `MpsdLayer` with `ResendDelta`, over reqwest.
macro_rules! stack {
    () => {
        ServiceBuilder::new()
            .mpsd_with(MpsdLayer::new().rebase(RebaseLayer::new(ResendDelta)))
            .service(reqwest_service(one_send_client().unwrap()))
    };
}

fn purposes(history: &AttemptHistory) -> Vec<(Purpose, Option<Outcome>)> {
    history
        .attempts()
        .iter()
        .map(|a| (a.purpose, a.outcome))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_missing_session_is_a_204_read_through_reqwest() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "nobody");
    let res = stack!()
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(Outcome::of(&res), Some(Outcome::SessionMissing));
    let read = read_response(res, 1 << 20).await.unwrap();
    assert_eq!(read.outcome, Outcome::SessionMissing);
    let log = sim.log();
    assert_eq!(log.len(), 1, "one request reached the server: {log:?}");
    assert_eq!(
        (log[0].method.clone(), log[0].status),
        (Method::GET, StatusCode::NO_CONTENT)
    );
}

#[tokio::test(start_paused = true)]
async fn a_503_is_retried_through_reqwest_no_earlier_than_its_retry_after() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "shed");
    sim.script(overloaded("2"));
    let t0 = Instant::now();
    let res = stack!()
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let history = AttemptHistory::of(&res).unwrap();
    let unavailable = Outcome::ServiceUnavailable {
        retry_after: Some(Duration::from_secs(2)),
    };
    assert_eq!(
        purposes(history),
        [
            (Purpose::First, Some(unavailable)),
            (
                Purpose::Retry(Cause::Overloaded),
                Some(Outcome::SessionMissing)
            ),
        ]
    );
    assert_eq!(history.gave_up, None);
    let log = sim.log();
    let statuses: Vec<_> = log.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        [StatusCode::SERVICE_UNAVAILABLE, StatusCode::NO_CONTENT]
    );
    assert_eq!(log[0].at - t0, Duration::ZERO);
    let gap = log[1].at - log[0].at;
    // `Retry-After × [1.0, 1.2)`; tokio's timers round up to the millisecond.
    assert!(
        gap >= Duration::from_secs(2) && gap <= Duration::from_millis(2400),
        "{gap:?} outside [2 s, 2.4 s]"
    );
}

#[tokio::test(start_paused = true)]
async fn a_412_is_rebased_through_reqwest_with_the_fresh_etag() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "race");
    let stale = create(&uri, "alice", json!({})).await;
    // Bob joins outside the stack: the ETag alice holds is now stale.
    let bob = create_or_join(&uri, "bob").await;
    assert_ne!(bob, stale);

    let write = request(Method::PUT, format!("{uri}/members/me"))
        .user(Some("alice"))
        .header(header::IF_MATCH, &stale)
        .json(json!({"properties": {"custom": {"ready": true}}}))
        .build();
    let res = stack!().oneshot(write).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let history = AttemptHistory::of(&res).unwrap().clone();
    assert_eq!(
        purposes(&history),
        [
            (Purpose::First, Some(Outcome::SessionChanged)),
            (Purpose::Rebased, Some(Outcome::Ok)),
        ]
    );
    let written = read_response(res, 1 << 20).await.unwrap();
    let session = written.payload.json().unwrap().unwrap();
    assert_eq!(
        session["members"]["0"]["properties"]["custom"]["ready"],
        true
    );
    assert_eq!(session["membersInfo"]["count"], 2, "bob's join is kept");

    // What reached the server: the write with the stale ETag (412), then
    // the same write with bob's ETag, the one the 412 carried.
    let writes: Vec<_> = sim.log().into_iter().skip(2).collect();
    let seen: Vec<_> = writes
        .iter()
        .map(|e| (e.status, e.if_match.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (StatusCode::PRECONDITION_FAILED, Some(stale)),
            (StatusCode::OK, Some(bob)),
        ]
    );
}

/// Joins `user` to the session at `uri` without the stack; its new ETag.
async fn create_or_join(uri: &str, user: &'static str) -> String {
    let joined = common::send(
        request(Method::PUT, uri)
            .user(Some(user))
            .json(json!({"members": {"me": {}}})),
    )
    .await;
    assert_eq!(joined.outcome, Outcome::Ok, "{joined:?}");
    joined.etag().unwrap()
}
