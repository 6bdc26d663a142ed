//! The revalidate layer against the simulator over real TCP: what moved
//! over the wire (the simulator's log of statuses and body bytes) while a
//! caller polls sessions and only ever sees 200s.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{http_client, quiet_sim, request, SCID};
use http::{header, Method, Response, StatusCode};
use http_body_util::BodyExt;
use mpsd_sim::LogEntry;
use serde_json::json;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_mpsd::classify::ClassifyLayer;
use tower_mpsd::classify::Outcome;
use tower_mpsd::revalidate::{Cache, RevalidateBody, RevalidateLayer, Revalidated};

type Res = Response<RevalidateBody<hyper::body::Incoming>>;

fn stack(
    layer: &RevalidateLayer,
) -> impl Service<
    http::Request<http_body_util::Full<Bytes>>,
    Response = Res,
    Error = hyper_util::client::legacy::Error,
> + Clone {
    ServiceBuilder::new()
        .layer(layer.clone())
        .service(http_client())
}

/// Sends through `client`; the status, the body, and whether it was revalidated.
async fn call<S>(client: &S, req: common::Req) -> (StatusCode, Bytes, bool)
where
    S: Service<http::Request<http_body_util::Full<Bytes>>, Response = Res> + Clone,
    S::Error: std::fmt::Debug,
{
    let res = client.clone().oneshot(req.build()).await.unwrap();
    let revalidated = res.extensions().get::<Revalidated>().is_some();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, body, revalidated)
}

/// Creates a session with `user` as its member, without the layer.
async fn create(uri: &str, user: &'static str, custom: serde_json::Value) {
    let res = http_client()
        .request(
            request(Method::PUT, uri)
                .user(Some(user))
                .json(json!({"members": {"me": {}}, "properties": {"custom": custom}}))
                .build(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}

fn statuses(log: &[LogEntry]) -> Vec<u16> {
    log.iter().map(|e| e.status.as_u16()).collect()
}

#[tokio::test(start_paused = true)]
async fn polling_an_unchanged_session_moves_only_304s() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "poll");
    create(&uri, "alice", json!({"map": "dust", "mode": "ctf"})).await;
    sim.clear_log();
    let client = stack(&RevalidateLayer::new());

    let (status, first, revalidated) = call(&client, request(Method::GET, &uri)).await;
    assert_eq!((status, revalidated), (StatusCode::OK, false));
    const POLLS: usize = 100;
    for _ in 0..POLLS {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (status, body, revalidated) = call(&client, request(Method::GET, &uri)).await;
        assert_eq!((status, revalidated), (StatusCode::OK, true));
        assert_eq!(body, first, "the caller sees the whole session each time");
    }

    let log = sim.log();
    assert_eq!(log.len(), POLLS + 1);
    assert_eq!(log[0].status, StatusCode::OK);
    assert_eq!(log[0].response_bytes, first.len());
    for entry in &log[1..] {
        assert_eq!(entry.status, StatusCode::NOT_MODIFIED);
        assert_eq!(entry.response_bytes, 0);
        assert_eq!(entry.if_none_match, log[1].if_none_match);
    }
    assert!(log[1].if_none_match.is_some());
    let over_the_wire: usize = log.iter().map(|e| e.response_bytes).sum();
    let without = (POLLS + 1) * first.len();
    println!(
        "{} GETs of a {}-byte session: {over_the_wire} body bytes over the wire \
         ({} x 304), {without} without revalidation",
        POLLS + 1,
        first.len(),
        POLLS
    );
    assert_eq!(over_the_wire, first.len());
}

#[tokio::test(start_paused = true)]
async fn a_change_is_seen_on_the_next_poll() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "change");
    create(&uri, "alice", json!({"map": "dust"})).await;
    let client = stack(&RevalidateLayer::new());
    let (_, before, _) = call(&client, request(Method::GET, &uri)).await;
    let (_, _, revalidated) = call(&client, request(Method::GET, &uri)).await;
    assert!(revalidated);

    // Someone else changes the session, not through this stack.
    let res = http_client()
        .request(
            request(Method::PUT, &uri)
                .user(Some("bob"))
                .json(json!({"members": {"me": {}}}))
                .build(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let (status, after, revalidated) = call(&client, request(Method::GET, &uri)).await;
    assert_eq!((status, revalidated), (StatusCode::OK, false));
    assert_ne!(after, before);
    let doc: serde_json::Value = serde_json::from_slice(&after).unwrap();
    assert_eq!(doc["membersInfo"]["count"], 2);
    // ... and the new version is what later 304s stand for.
    let (_, again, revalidated) = call(&client, request(Method::GET, &uri)).await;
    assert!(revalidated);
    assert_eq!(again, after);
    assert_eq!(statuses(&sim.log())[1..], [200, 304, 200, 200, 304]);
}

#[tokio::test(start_paused = true)]
async fn writes_through_the_stack_drop_the_session_and_its_elements() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "write");
    let other = sim.session_uri(SCID, "LobbySession", "other");
    create(&uri, "alice", json!({})).await;
    create(&other, "alice", json!({})).await;
    let layer = RevalidateLayer::new();
    let client = stack(&layer);
    let me = format!("{uri}/members/me");
    for u in [&uri, &me, &other] {
        call(&client, request(Method::GET, u)).await;
    }
    assert_eq!(layer.usage().entries, 3);

    // An element write (spelled differently) drops the session's two reads.
    let properties = uri.replace("sessionTemplates", "sessiontemplates") + "/properties";
    let (status, _, _) = call(
        &client,
        request(Method::PUT, &properties).json(json!({"custom": {"k": 1}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(layer.usage().entries, 1, "only the other session is left");

    sim.clear_log();
    let (status, body, revalidated) = call(&client, request(Method::GET, &uri)).await;
    assert_eq!((status, revalidated), (StatusCode::OK, false));
    assert!(String::from_utf8_lossy(&body).contains("\"k\":1"));
    let log = sim.log();
    assert_eq!(log[0].if_none_match, None, "nothing left to revalidate");
    let (_, _, revalidated) = call(&client, request(Method::GET, &other)).await;
    assert!(revalidated, "other sessions keep their entries");
}

#[tokio::test(start_paused = true)]
async fn a_204_on_get_removes_the_entry() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "gone");
    create(&uri, "alice", json!({})).await;
    let layer = RevalidateLayer::new();
    let client = stack(&layer);
    call(&client, request(Method::GET, &uri)).await;
    assert_eq!(layer.usage().entries, 1);

    // The last member leaves, elsewhere: the session is deleted.
    let res = http_client()
        .request(
            request(Method::PUT, &uri)
                .json(json!({"members": {"me": null}}))
                .build(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let (status, body, revalidated) = call(&client, request(Method::GET, &uri)).await;
    assert_eq!(
        (status, body.len(), revalidated),
        (StatusCode::NO_CONTENT, 0, false)
    );
    assert_eq!(layer.usage().entries, 0);
    assert_eq!(layer.usage().bytes, 0);
}

#[tokio::test(start_paused = true)]
async fn the_cache_honours_its_entry_bound_least_recently_used_first() {
    let sim = quiet_sim().await;
    let uris: Vec<String> = (0..5)
        .map(|i| sim.session_uri(SCID, "LobbySession", &format!("s{i}")))
        .collect();
    for uri in &uris {
        create(uri, "alice", json!({})).await;
    }
    let layer = RevalidateLayer::with_cache(Cache::builder().max_entries(3).build());
    let client = stack(&layer);
    for uri in &uris[..3] {
        call(&client, request(Method::GET, uri)).await;
    }
    // s0 is used again, so s1 is the least recently used when s3 and s4 come.
    call(&client, request(Method::GET, &uris[0])).await;
    for uri in &uris[3..] {
        call(&client, request(Method::GET, uri)).await;
    }
    assert_eq!(layer.usage().entries, 3);

    sim.clear_log();
    // The cached ones first, so that reading the others evicts nothing yet.
    for i in [0, 3, 4, 1, 2] {
        call(&client, request(Method::GET, &uris[i])).await;
    }
    let revalidated: Vec<bool> = sim
        .log()
        .iter()
        .map(|e| e.status == StatusCode::NOT_MODIFIED)
        .collect();
    // s0, s3, s4 were cached; s1 and s2 had been evicted.
    assert_eq!(revalidated, [true, true, true, false, false]);
    assert!(layer.usage().entries <= 3);
}

#[tokio::test(start_paused = true)]
async fn the_cache_honours_its_byte_bounds() {
    let sim = quiet_sim().await;
    let uris: Vec<String> = (0..4)
        .map(|i| sim.session_uri(SCID, "LobbySession", &format!("b{i}")))
        .collect();
    for uri in &uris {
        create(uri, "alice", json!({})).await;
    }
    // Learn an entry's size with an unbounded cache.
    let probe = RevalidateLayer::new();
    call(&stack(&probe), request(Method::GET, &uris[0])).await;
    let one = probe.usage().bytes;
    assert!(one > 0);

    let layer = RevalidateLayer::with_cache(Cache::builder().max_bytes(2 * one + one / 2).build());
    let client = stack(&layer);
    for uri in &uris {
        call(&client, request(Method::GET, uri)).await;
        let usage = layer.usage();
        assert!(usage.bytes <= 2 * one + one / 2, "{usage:?}");
    }
    assert_eq!(layer.usage().entries, 2);
    println!("byte bound {}: {:?}", 2 * one + one / 2, layer.usage());

    // A body over the per-body cap passes through whole and uncached.
    let small = RevalidateLayer::with_cache(Cache::builder().max_body_bytes(16).build());
    let client = stack(&small);
    sim.clear_log();
    for _ in 0..2 {
        let (status, body, revalidated) = call(&client, request(Method::GET, &uris[0])).await;
        assert_eq!((status, revalidated), (StatusCode::OK, false));
        serde_json::from_slice::<serde_json::Value>(&body).expect("the whole document");
    }
    let log = sim.log();
    assert_eq!(statuses(&log), [200, 200]);
    assert_eq!(log[1].if_none_match, None);
    assert_eq!(small.usage().entries, 0);
}

#[tokio::test(start_paused = true)]
async fn an_inner_classify_layer_sees_the_304_and_the_caller_a_200() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "classified");
    create(&uri, "alice", json!({})).await;
    let client = ServiceBuilder::new()
        .layer(RevalidateLayer::new())
        .layer(ClassifyLayer::new())
        .service(http_client());
    for expect_revalidated in [false, true] {
        let res = client
            .clone()
            .oneshot(request(Method::GET, &uri).build())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(Outcome::of(&res), Some(Outcome::Ok));
        assert_eq!(
            res.extensions().get::<Revalidated>().is_some(),
            expect_revalidated
        );
        let length: usize = res.headers()[header::CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(res.headers().contains_key(header::ETAG));
        assert_eq!(
            res.into_body().collect().await.unwrap().to_bytes().len(),
            length
        );
    }
    assert_eq!(statuses(&sim.log())[1..], [200, 304]);
}

#[tokio::test(start_paused = true)]
async fn a_callers_own_if_none_match_is_left_alone() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "own");
    create(&uri, "alice", json!({})).await;
    let client = stack(&RevalidateLayer::new());
    call(&client, request(Method::GET, &uri)).await;
    let (status, body, revalidated) = call(
        &client,
        request(Method::GET, &uri).header(header::IF_NONE_MATCH, "\"no-such-etag\""),
    )
    .await;
    assert_eq!((status, revalidated), (StatusCode::OK, false));
    assert!(!body.is_empty());
    assert_eq!(
        sim.log().last().unwrap().if_none_match.as_deref(),
        Some("\"no-such-etag\"")
    );
}

#[tokio::test(start_paused = true)]
async fn two_stacks_given_one_cache_revalidate_each_others_reads() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "shared-cache");
    create(&uri, "alice", json!({"map": "dust"})).await;
    sim.clear_log();
    let cache = Cache::new();
    // Two stacks built apart, each with its own layer and client.
    let first = stack(&RevalidateLayer::with_cache(cache.clone()));
    let second = stack(&RevalidateLayer::with_cache(cache.clone()));

    let read = first
        .clone()
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let etag = read.headers()[header::ETAG].to_str().unwrap().to_owned();
    let body = read.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(cache.usage().entries, 1);

    // The same GET through the second asks If-None-Match with that ETag.
    let (status, again, revalidated) = call(&second, request(Method::GET, &uri)).await;
    assert_eq!((status, revalidated), (StatusCode::OK, true));
    assert_eq!(again, body);
    let log = sim.log();
    let sent: Vec<Option<&str>> = log.iter().map(|e| e.if_none_match.as_deref()).collect();
    println!(
        "shared cache: statuses {:?}, If-None-Match sent {sent:?}",
        statuses(&log)
    );
    assert_eq!(statuses(&log), [200, 304]);
    assert_eq!(sent, [None, Some(etag.as_str())]);
}
