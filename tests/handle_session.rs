//! A session read and written through a handle (`/handles/{id}/session`),
//! as Microsoft's SDK joins a lobby by its handle: over real TCP, the
//! library reads it as the session it is (204 meanings, a typed session
//! body, a lost race rebased).

mod common;

use http::{header, Method, StatusCode};
use http_body_util::BodyExt;
use mpsd_sim::SimHandle;
use serde_json::{json, Value};
use tower::{ServiceBuilder, ServiceExt};
use tower_mpsd::classify::Outcome;
use tower_mpsd::logical::{AttemptHistory, Purpose};
use tower_mpsd::rebase::policy::{rebase_fn, Decision, LostRace};
use tower_mpsd::rebase::RebaseLayer;
use tower_mpsd::response::Payload;
use tower_mpsd::rules::target::TargetKind;

use common::{create, http_client, quiet_sim, request, send, SCID};

/// Creates a session with alice in it and an activity handle to it;
/// returns the session's URI and the handle's session URI.
async fn session_with_handle(sim: &SimHandle, name: &str) -> (String, String) {
    let uri = sim.session_uri(SCID, "LobbySession", name);
    create(&uri, "alice", json!({})).await;
    let handle = send(
        request(Method::POST, format!("{}/handles", sim.base_uri())).json(json!({
            "version": 1,
            "type": "activity",
            "sessionRef": {"scid": SCID, "templateName": "LobbySession", "name": name},
        })),
    )
    .await;
    assert_eq!(handle.outcome, Outcome::Created, "{handle:?}");
    let id = handle.json()["id"].as_str().unwrap().to_owned();
    (uri, format!("{}/handles/{id}/session", sim.base_uri()))
}

#[tokio::test]
async fn a_read_through_a_handle_is_a_session_and_204_means_it_is_missing() {
    let sim = quiet_sim().await;
    let (uri, by_handle) = session_with_handle(&sim, "read").await;

    let read = send(request(Method::GET, &by_handle)).await;
    assert_eq!(read.call.target, TargetKind::Session);
    assert_eq!(read.outcome, Outcome::Ok);
    assert!(read.etag().is_some());
    assert!(
        matches!(&read.result, Ok(ok) if matches!(ok.payload, Payload::Session(_))),
        "{read:?}"
    );
    let location = read.headers.get(header::CONTENT_LOCATION).unwrap();
    assert!(uri.ends_with(location.to_str().unwrap()), "{location:?}");

    // The last member leaves: the session is gone, the handle is not.
    let left = send(request(Method::DELETE, format!("{uri}/members/me"))).await;
    assert_eq!(left.outcome, Outcome::ElementGone, "{left:?}");
    let missing = send(request(Method::GET, &by_handle)).await;
    assert_eq!(missing.outcome, Outcome::SessionMissing, "{missing:?}");
}

#[tokio::test]
async fn a_write_through_a_handle_that_empties_the_session_deleted_it() {
    let sim = quiet_sim().await;
    let (_, by_handle) = session_with_handle(&sim, "leave").await;
    let put = request(Method::PUT, &by_handle).json(json!({"members": {"me": null}}));
    let left = send(put).await;
    assert_eq!(left.outcome, Outcome::SessionDeleted, "{left:?}");
}

/// Re-applies "add 1 to the counter" to the session as it is now.
fn increment(conflict: &LostRace<'_>) -> Result<Decision, tower_mpsd::BoxError> {
    let count = conflict.session["properties"]["custom"]["count"]
        .as_u64()
        .unwrap_or(0);
    let delta = json!({"properties": {"custom": {"count": count + 1}}});
    Ok(Decision::Retry(delta.to_string().into()))
}

#[tokio::test(start_paused = true)]
async fn a_lost_race_through_a_handle_is_rebased() {
    let sim = quiet_sim().await;
    let (uri, by_handle) = session_with_handle(&sim, "race").await;
    let stale = send(request(Method::GET, &by_handle)).await.etag().unwrap();
    // Someone else writes first, through the session's own URI.
    let first = request(Method::PUT, &uri).json(json!({"properties": {"custom": {"count": 1}}}));
    assert_eq!(send(first).await.outcome, Outcome::Ok);

    sim.clear_log();
    let client = ServiceBuilder::new()
        .layer(RebaseLayer::new(rebase_fn(increment)))
        .service(http_client());
    let put = request(Method::PUT, &by_handle)
        .header(header::IF_MATCH, &stale)
        .json(json!({"properties": {"custom": {"count": 1}}}));
    let res = client.oneshot(put.build()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let history = AttemptHistory::of(&res).cloned().unwrap();
    let purposes: Vec<Purpose> = history.attempts().iter().map(|a| a.purpose).collect();
    assert_eq!(purposes, [Purpose::First, Purpose::Rebased], "{history:?}");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let session: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(session["properties"]["custom"]["count"], 2);

    let sent: Vec<(Method, u16)> = sim
        .log()
        .iter()
        .map(|e| (e.method.clone(), e.status.as_u16()))
        .collect();
    assert_eq!(sent, [(Method::PUT, 412), (Method::PUT, 200)]);
    assert!(sim.log().iter().all(|e| e.path.ends_with("/session")));
}
