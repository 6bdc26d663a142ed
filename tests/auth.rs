//! `AuthLayer` over HTTPS and HTTP/2 against a simulator that issues
//! tokens which expire, on paused time.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{https_client, request, AnyStack, SCID};
use futures_util::future::join_all;
use http::{Method, StatusCode, Version};
use mpsd_sim::{SimHandle, Simulator};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_mpsd::auth::{AuthLayer, FixedToken, Token, TokenFuture, TokenSource, TokenUnavailable};
use tower_mpsd::ServiceBuilderExt;

const USER: &str = "2535405290";
const TTL: Duration = Duration::from_secs(10);

/// Signs in at the simulator: each call issues a token that the simulator
/// honours for `TTL`. With `tell_expiry`, the token says so; without, the
/// client learns it only from the 401.
struct SimSignIn {
    sim: SimHandle,
    tell_expiry: bool,
    calls: Arc<AtomicUsize>,
}

impl TokenSource for SimSignIn {
    fn token(&self, _refresh: bool) -> TokenFuture<'_> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let token = Token::new(USER, &self.sim.issue_token(USER, TTL));
        let tell_expiry = self.tell_expiry;
        Box::pin(async move {
            let token = token?;
            Ok(if tell_expiry {
                token.expires_in(TTL)
            } else {
                token
            })
        })
    }
}

async fn token_checking_sim() -> SimHandle {
    Simulator::builder()
        .no_rate_limit()
        .check_tokens()
        .https()
        .start()
        .await
        .unwrap()
}

/// The recommended stack over HTTP/2 behind `AuthLayer` with a
/// [`SimSignIn`] of `sim`, and the count of its sign-ins.
fn signed_in(sim: &SimHandle, tell_expiry: bool) -> (AnyStack, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let source = SimSignIn {
        sim: sim.clone(),
        tell_expiry,
        calls: Arc::clone(&calls),
    };
    let client = ServiceBuilder::new()
        .mpsd_auth(source)
        .mpsd()
        .service(https_client(sim, true));
    (AnyStack::new(client), calls)
}

/// 32 callers at once, each one GET without an `Authorization` of its own.
async fn herd(client: &AnyStack, uri: &str) -> Vec<StatusCode> {
    let calls = (0..32).map(|_| {
        let req = request(Method::GET, uri).user(None).build();
        client.clone().oneshot(req)
    });
    join_all(calls)
        .await
        .into_iter()
        .map(|res| res.unwrap().status())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_token_revoked_mid_run_under_32_callers_is_refreshed_once() {
    let sim = token_checking_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "refresh");
    let (client, calls) = signed_in(&sim, false);
    let t0 = Instant::now();
    let before = herd(&client, &uri).await;
    tokio::time::sleep(TTL + Duration::from_secs(1)).await;
    let after = herd(&client, &uri).await;

    let log = sim.log();
    let count = |status: u16| log.iter().filter(|e| e.status.as_u16() == status).count();
    println!(
        "token refresh under 32 callers: {} sign-ins; {} requests over HTTP/2 on connections {:?}: \
         {} x 204 before {:?}, then {} x 401 and {} x 204 after {:?}",
        calls.load(Ordering::SeqCst),
        log.len(),
        log.iter().map(|e| e.connection).collect::<std::collections::BTreeSet<_>>(),
        log.iter().filter(|e| e.at - t0 < TTL && e.status == StatusCode::NO_CONTENT).count(),
        TTL,
        count(401),
        log.iter().filter(|e| e.at - t0 > TTL && e.status == StatusCode::NO_CONTENT).count(),
        TTL,
    );
    assert!(before
        .iter()
        .chain(&after)
        .all(|s| *s == StatusCode::NO_CONTENT));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one sign-in, then one refresh"
    );
    assert_eq!(count(401), 32, "each caller's first send after expiry");
    assert_eq!(count(204), 64, "every request ends 2xx, once");
    assert!(log.iter().all(|e| e.version == Version::HTTP_2));
    assert!(log.iter().all(|e| e.user.as_deref() == Some(USER)));
}

#[tokio::test(start_paused = true)]
async fn a_token_known_to_expire_is_refreshed_before_sending() {
    let sim = token_checking_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "expiry");
    let (client, calls) = signed_in(&sim, true);
    herd(&client, &uri).await;
    tokio::time::sleep(TTL).await;
    let after = herd(&client, &uri).await;
    assert!(after.iter().all(|s| *s == StatusCode::NO_CONTENT));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(
        sim.log().iter().all(|e| e.status == StatusCode::NO_CONTENT),
        "no 401 at all"
    );
}

#[tokio::test(start_paused = true)]
async fn a_401_to_a_fixed_token_is_handed_back_after_one_send() {
    let sim = token_checking_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "fixed");
    let token = Token::new(USER, "never-issued").unwrap();
    let client = ServiceBuilder::new()
        .mpsd_auth(FixedToken::new(token))
        .mpsd()
        .service(https_client(&sim, false));
    let res = client
        .oneshot(request(Method::GET, &uri).user(None).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "XBL3.0");
    assert_eq!(sim.log().len(), 1);
}

/// A sign-in that is down.
struct Down;

impl TokenSource for Down {
    fn token(&self, _refresh: bool) -> TokenFuture<'_> {
        Box::pin(async { Err("the sign-in service is unreachable".into()) })
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_token_source_is_a_typed_error_and_nothing_is_sent() {
    let sim = token_checking_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "down");
    let client = ServiceBuilder::new()
        .layer(AuthLayer::new(Down))
        .mpsd()
        .service(https_client(&sim, true));
    let put = request(Method::PUT, &uri).user(None).build();
    let err = client.oneshot(put).await.unwrap_err();
    let unavailable = err
        .downcast_ref::<TokenUnavailable>()
        .expect("a TokenUnavailable");
    let source = std::error::Error::source(unavailable).unwrap().to_string();
    assert_eq!(source, "the sign-in service is unreachable");
    assert!(sim.log().is_empty(), "nothing was sent without a token");
}

#[tokio::test(start_paused = true)]
async fn the_stack_keys_cooldowns_on_the_user_the_auth_layer_set() {
    // One request per user per 15 s: alice's second is throttled.
    let sim = Simulator::builder()
        .rate_limit(common::burst_limits(1))
        .https()
        .start()
        .await
        .unwrap();
    let uri = sim.session_uri(SCID, "LobbySession", "per-user");
    // One set of cooldowns, two users.
    let stack = tower_mpsd::MpsdLayer::new().retry(tower_mpsd::retry::RetryLayer::new());
    let as_user = |user: &str| {
        ServiceBuilder::new()
            .mpsd_auth(FixedToken::new(Token::new(user, "t").unwrap()))
            .mpsd_with(stack.clone())
            .service(https_client(&sim, true))
    };
    let (alice, bob) = (as_user("alice"), as_user("bob"));
    let get = || request(Method::GET, &uri).user(None).build();
    let t0 = Instant::now();
    alice.clone().oneshot(get()).await.unwrap();
    // alice's 429 closes her cooldown; bob, on the same stack, is not held.
    let waiting = tokio::spawn(alice.oneshot(get()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let res = bob.oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        waiting.await.unwrap().unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let seen: Vec<(String, u16, Duration)> = sim
        .log()
        .iter()
        .map(|e| (e.user.clone().unwrap(), e.status.as_u16(), e.at - t0))
        .collect();
    println!("per-user cooldown: {seen:?}");
    let bob_at = seen.iter().find(|(u, ..)| u == "bob").unwrap().2;
    assert!(
        bob_at < Duration::from_secs(1),
        "bob went at once: {seen:?}"
    );
    let alice_last = seen.iter().rfind(|(u, ..)| u == "alice").unwrap();
    assert_eq!(alice_last.1, 204);
    assert!(
        alice_last.2 >= Duration::from_secs(15),
        "alice waited out her 429"
    );
}

/// A sign-in whose every token the simulator does not know.
struct Unknown(Arc<AtomicUsize>);

impl TokenSource for Unknown {
    fn token(&self, _refresh: bool) -> TokenFuture<'_> {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(Token::new(USER, &format!("unknown-{n}"))?) })
    }
}

#[tokio::test(start_paused = true)]
async fn a_401_to_the_fresh_token_too_is_handed_back_after_two_sends() {
    let sim = token_checking_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "unknown");
    let calls = Arc::new(AtomicUsize::new(0));
    let client = ServiceBuilder::new()
        .mpsd_auth(Unknown(Arc::clone(&calls)))
        .mpsd()
        .service(https_client(&sim, true));
    let res = client
        .oneshot(request(Method::PUT, &uri).user(None).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one sign-in, one refresh");
    let statuses: Vec<u16> = sim.log().iter().map(|e| e.status.as_u16()).collect();
    assert_eq!(statuses, [401, 401], "sent twice, not more");
}
