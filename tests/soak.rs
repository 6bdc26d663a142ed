//! A bounded soak: many callers, many users, through the whole stack,
//! against the simulator with rate limiting, overload shedding and 412
//! contention all on, over real TCP on paused time.
//!
//! The short variant runs with the tests; the full one (10,000 logical
//! requests from 500 callers) is `#[ignore]`d:
//! `cargo test --all-features --test soak -- --ignored --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{header, Method, StatusCode};
use http_body_util::BodyExt;
use mpsd_sim::{Overload, RateLimits, SimHandle, Simulator};
use serde_json::{json, Value};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_mpsd::error::{Refused, RefusedBy};
use tower_mpsd::rebase::policy::{rebase_fn, Decision, LostRace};
use tower_mpsd::rebase::{RebaseError, RebaseLayer};
use tower_mpsd::retry::{AttemptTimedOut, Cooldowns, RetryLayer};
use tower_mpsd::{MpsdLayer, ServiceBuilderExt};

use common::{create, http_client, SCID};

const USERS: [&str; 10] = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9"];
const SESSIONS: usize = 4;
const MAX_COOLDOWN_KEYS: usize = 8;

fn count_of(session: &Value) -> u64 {
    session["properties"]["custom"]["count"]
        .as_u64()
        .unwrap_or(0)
}

fn add_one(session: &Value) -> Bytes {
    let delta = json!({"properties": {"custom": {"count": count_of(session) + 1}}});
    Bytes::from(delta.to_string())
}

/// How each logical request ended.
#[derive(Debug, Default)]
struct Tally {
    ends: BTreeMap<String, usize>,
    increments: Vec<usize>,
}

async fn soak(callers: usize, per_caller: usize) -> (Tally, SimHandle, Duration) {
    let sim = Simulator::builder()
        .rate_limit(RateLimits::mpsd())
        .overload(Overload {
            capacity: 200,
            window: Duration::from_secs(1),
        })
        .start()
        .await
        .unwrap();
    let uris: Vec<String> = (0..SESSIONS)
        .map(|i| sim.session_uri(SCID, "LobbySession", &format!("soak{i}")))
        .collect();
    for uri in &uris {
        create(uri, "creator", json!({})).await;
    }
    let cooldowns = Cooldowns::builder().max_keys(MAX_COOLDOWN_KEYS).build();
    let retry = RetryLayer::new().with_cooldowns(cooldowns);
    let increment = rebase_fn(|c: &LostRace<'_>| Ok(Decision::Retry(add_one(c.session))));
    let stack = MpsdLayer::new()
        .retry(retry.clone())
        .rebase(RebaseLayer::new(increment));
    let client = ServiceBuilder::new()
        .mpsd_with(stack)
        .service(http_client());
    let increments: Arc<Vec<AtomicUsize>> =
        Arc::new((0..SESSIONS).map(|_| AtomicUsize::new(0)).collect());
    let most_keys = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();

    let tasks = (0..callers).map(|caller| {
        let client = client.clone();
        let uris = uris.clone();
        let increments = increments.clone();
        let most_keys = most_keys.clone();
        let retry = retry.clone();
        async move {
            let user = USERS[caller % USERS.len()];
            let mut ends = Vec::with_capacity(per_caller);
            for n in 0..per_caller {
                let which = (caller + n) % SESSIONS;
                let uri = &uris[which];
                let end = if n % 4 == 3 {
                    read_modify_write(&client, uri, user).await
                } else {
                    let get = common::request(Method::GET, uri.as_str()).user(Some(user));
                    ended(client.clone().oneshot(get.build()).await)
                };
                if end == "write 200" {
                    increments[which].fetch_add(1, Ordering::Relaxed);
                }
                most_keys.fetch_max(retry.cooldowns_held(), Ordering::Relaxed);
                ends.push(end);
            }
            ends
        }
    });
    let all = tokio::time::timeout(Duration::from_secs(3600), join_all(tasks))
        .await
        .expect("every caller finishes within an hour of virtual time");
    let elapsed = t0.elapsed();
    let mut tally = Tally::default();
    for end in all.into_iter().flatten() {
        *tally.ends.entry(end).or_default() += 1;
    }
    tally.increments = increments
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    assert!(
        most_keys.load(Ordering::Relaxed) <= MAX_COOLDOWN_KEYS,
        "the cooldown map stayed within its bound"
    );
    (tally, sim, elapsed)
}

/// A GET, then a PUT of `count + 1` with `If-Match`; the rebase layer
/// re-applies the increment on conflict.
async fn read_modify_write<S, B>(client: &S, uri: &str, user: &'static str) -> String
where
    S: tower::Service<
            http::Request<http_body_util::Full<Bytes>>,
            Response = http::Response<B>,
            Error = tower_mpsd::BoxError,
        > + Clone,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let get = common::request(Method::GET, uri).user(Some(user)).build();
    let res = match client.clone().oneshot(get).await {
        Ok(res) if res.status() == StatusCode::OK => res,
        other => return format!("read {}", ended(other)),
    };
    let etag = res.headers()[header::ETAG].to_str().unwrap().to_owned();
    let Ok(body) = res.into_body().collect().await else {
        return "read body error".into();
    };
    let session: Value = serde_json::from_slice(&body.to_bytes()).unwrap();
    let put = common::request(Method::PUT, uri)
        .user(Some(user))
        .header(header::IF_MATCH, &etag)
        .raw_bytes(add_one(&session))
        .build();
    format!("write {}", ended(client.clone().oneshot(put).await))
}

/// A name for how a logical request ended: its status, or its typed error.
fn ended<B>(result: Result<http::Response<B>, tower_mpsd::BoxError>) -> String {
    let e = match result {
        Ok(res) => return res.status().as_u16().to_string(),
        Err(e) => e,
    };
    match e.downcast_ref::<Refused>().map(|r| r.by) {
        Some(RefusedBy::Cooldown) => "CoolingDown".into(),
        Some(RefusedBy::Pace) => "PaceExceeded".into(),
        Some(RefusedBy::Queue) => "QueueRefused".into(),
        _ if e.is::<AttemptTimedOut>() => "AttemptTimedOut".into(),
        _ if e.is::<RebaseError>() => "RebaseError".into(),
        _ => panic!("an untyped error: {e}"),
    }
}

fn check(tally: &Tally, sim: &SimHandle, logical: usize, elapsed: Duration) {
    let ended: usize = tally.ends.values().sum();
    println!(
        "soak: {logical} logical requests, {} sends, {:?} virtual; ends: {:?}; increments: {:?}",
        sim.log().len(),
        elapsed,
        tally.ends,
        tally.increments
    );
    assert_eq!(ended, logical, "every logical request ended");
    for (i, increments) in tally.increments.iter().enumerate() {
        let session = sim
            .session(SCID, "LobbySession", &format!("soak{i}"))
            .unwrap();
        assert_eq!(
            count_of(&session),
            *increments as u64,
            "no lost update on soak{i}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn short_soak_every_request_ends_typed_and_no_update_is_lost() {
    let (tally, sim, elapsed) = soak(100, 10).await;
    check(&tally, &sim, 1_000, elapsed);
}

#[tokio::test(start_paused = true)]
#[ignore = "the full soak: run with --ignored (see the module docs)"]
async fn full_soak_ten_thousand_requests_from_five_hundred_callers() {
    let (tally, sim, elapsed) = soak(500, 20).await;
    check(&tally, &sim, 10_000, elapsed);
}
