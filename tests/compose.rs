//! The crate's types composing with the rest of the tower ecosystem, as a
//! user would put them together: the recommended stack under tower-http's
//! `TimeoutLayer`, spawned and boxed with a closure policy, and opened up
//! again with the services' accessors. Against the simulator over real
//! TCP, on paused time.

mod common;

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, StatusCode};
use http_body_util::BodyExt;
use mpsd_sim::Fault;
use serde_json::{json, Value};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_http::timeout::TimeoutLayer;
use tower_mpsd::classify::ClassifyLayer;
use tower_mpsd::logical::{AttemptHistory, LogicalLayer, Purpose};
use tower_mpsd::pace::PaceLayer;
use tower_mpsd::rebase::policy::{rebase_fn, Decision, LostRace, ResendDelta};
use tower_mpsd::rebase::RebaseLayer;
use tower_mpsd::replay::ReplayLayer;
use tower_mpsd::retry::RetryLayer;
use tower_mpsd::revalidate::{RevalidateLayer, Revalidated};
use tower_mpsd::{MpsdLayer, ServiceBuilderExt};

use common::{create, http_client, quiet_sim, request, SCID};

/// `TimeoutLayer` answers on its own with `ResBody::default()`: the
/// stack's body (`RebaseBody<RevalidateBody<ClassifyBody<Incoming>>>`) must have one,
/// though hyper's `Incoming` has none.
#[tokio::test(start_paused = true)]
async fn a_timeout_layer_wraps_the_recommended_stack() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "timeout");
    let etag = create(&uri, "alice", json!({})).await;
    let client = ServiceBuilder::new()
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(5),
        ))
        .mpsd_with(
            MpsdLayer::new()
                .rebase(RebaseLayer::new(ResendDelta))
                .revalidate(RevalidateLayer::new()),
        )
        .service(http_client());
    let get = || request(Method::GET, &uri).build();

    // Read: a 200 through every layer, its body cached.
    let res = client.clone().oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let session = res.into_body().collect().await.unwrap().to_bytes();
    assert!(serde_json::from_slice::<Value>(&session).is_ok());

    // A server that hangs: the timeout answers, with an empty body.
    sim.script(
        Fault::status(StatusCode::OK)
            .method(Method::GET)
            .delay(Duration::from_secs(60)),
    );
    let t0 = Instant::now();
    let res = client.clone().oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(t0.elapsed(), Duration::from_secs(5));
    assert!(res
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());

    // Polling again: a 304 on the wire, the cached 200 to the caller.
    sim.clear_log();
    let res = client.clone().oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.extensions().get::<Revalidated>().is_some());
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), session);
    let log = sim.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status, StatusCode::NOT_MODIFIED);

    // A write that lost a race is rebased under the timeout too.
    common::send(request(Method::PUT, &uri).json(json!({"properties": {"custom": {"b": 1}}})))
        .await;
    let put = request(Method::PUT, format!("{uri}/members/me"))
        .header(header::IF_MATCH, &etag)
        .json(json!({"properties": {"custom": {"ready": true}}}))
        .build();
    let res = client.oneshot(put).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let history = AttemptHistory::of(&res).unwrap();
    let purposes: Vec<_> = history.attempts().iter().map(|a| a.purpose).collect();
    assert_eq!(purposes, [Purpose::First, Purpose::Rebased]);
}

/// The stack a new user writes, a closure for its policy, over a hyper
/// client: moved into `tokio::spawn` from an `async` block and boxed as a
/// `BoxCloneSyncService`, with no annotation beyond `&LostRace<'_>`.
#[tokio::test(start_paused = true)]
async fn a_stack_with_a_closure_policy_is_spawned_and_boxed() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "closure");
    let stale = create(
        &uri,
        "alice",
        json!({"properties": {"custom": {"count": 1}}}),
    )
    .await;
    common::send(request(Method::PUT, &uri).json(json!({"properties": {"custom": {"count": 41}}})))
        .await;
    let stack = MpsdLayer::new().rebase(RebaseLayer::new(rebase_fn(|c: &LostRace<'_>| {
        let count = c.session["properties"]["custom"]["count"]
            .as_u64()
            .unwrap_or(0);
        let delta = json!({"properties": {"custom": {"count": count + 1}}});
        Ok(Decision::Retry(Bytes::from(delta.to_string())))
    })));
    let client = ServiceBuilder::new()
        .mpsd_with(stack)
        .service(http_client());

    let put = request(Method::PUT, &uri)
        .header(header::IF_MATCH, &stale)
        .json(json!({"properties": {"custom": {"count": 2}}}))
        .build();
    let task = tokio::spawn({
        let client = client.clone();
        async move { client.oneshot(put).await }
    });
    let res = task.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let session: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(session["properties"]["custom"]["count"], 42);

    let boxed = BoxCloneSyncService::new(client);
    let res = tokio::spawn(boxed.oneshot(request(Method::GET, &uri).build()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// Every service of the crate hands its inner service back.
#[test]
fn every_service_has_accessors_to_its_inner_service() {
    let mut svc = ClassifyLayer::new().layer(1);
    *svc.get_mut() += 1;
    assert_eq!((*svc.get_ref(), svc.into_inner()), (2, 2));
    let mut svc = LogicalLayer::new(Duration::from_secs(1), 1).layer(1);
    *svc.get_mut() += 1;
    assert_eq!((*svc.get_ref(), svc.into_inner()), (2, 2));
    let mut svc = RetryLayer::new().layer(1);
    *svc.get_mut() += 1;
    assert_eq!((*svc.get_ref(), svc.into_inner()), (2, 2));
    let mut svc = RebaseLayer::new(ResendDelta).layer(1);
    *svc.get_mut() += 1;
    assert_eq!((*svc.get_ref(), svc.into_inner()), (2, 2));
    let mut svc = ReplayLayer::new(16).layer(1);
    *svc.get_mut() += 1;
    assert_eq!((*svc.get_ref(), svc.into_inner()), (2, 2));
    let mut svc = PaceLayer::new().layer(1);
    *svc.get_mut() += 1;
    assert_eq!((*svc.get_ref(), svc.into_inner()), (2, 2));
    let mut svc = RevalidateLayer::new().layer(1);
    *svc.get_mut() += 1;
    assert_eq!((*svc.get_ref(), svc.into_inner()), (2, 2));
    let mut svc = tower_mpsd::coalesce::CoalesceLayer::new().layer(1);
    *svc.get_mut() += 1;
    assert_eq!((*svc.get_ref(), svc.into_inner()), (2, 2));

    // The recommended stack, opened layer by layer down to the client.
    let stack = MpsdLayer::new()
        .rebase(RebaseLayer::new(ResendDelta))
        .revalidate(RevalidateLayer::new())
        .pace(PaceLayer::new())
        .layer(7);
    // Logical, Coalesce, Rebase, Retry, then Revalidate.
    let revalidate = stack
        .into_inner()
        .into_inner()
        .into_inner()
        .into_inner()
        .into_inner();
    assert_eq!(*revalidate.get_ref().get_ref(), 7);
}
