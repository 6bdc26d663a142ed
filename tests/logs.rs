//! What the layers log, in a test binary of its own: tracing caches each
//! call site's interest process-wide, so tests running beside this one
//! without a subscriber could hide its events.

mod common;

use std::time::Duration;

use common::{http_client, request, SCID};
use http::{header, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use mpsd_sim::{Fault, Simulator};
use tower::{ServiceBuilder, ServiceExt};
use tower_mpsd::auth::{AuthLayer, Token, TokenFuture, TokenSource};
use tower_mpsd::classify::ClassifyLayer;
use tower_mpsd::logical::AttemptHistory;
use tower_mpsd::pace::PaceLayer;
use tower_mpsd::rebase::{policy::ResendDelta, RebaseLayer};
use tower_mpsd::retry::RetryLayer;
use tower_mpsd::revalidate::RevalidateLayer;
use tower_mpsd::{MpsdLayer, ServiceBuilderExt};

/// A writer the test can read back: everything the subscriber prints.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn logs_never_hold_authorization_or_bodies() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let sim = Simulator::builder().no_rate_limit().start().await.unwrap();
    let uri = sim.session_uri(SCID, "LobbySession", "secret");
    let retry_after = (
        HeaderName::from_static("retry-after"),
        HeaderValue::from_static("1"),
    );
    sim.script(Fault::status(StatusCode::SERVICE_UNAVAILABLE).header(retry_after.0, retry_after.1));
    let put = request(Method::PUT, &uri)
        .json(serde_json::json!({"members": {"me": {}}, "properties": {"custom": {"password": "hunter2"}}}))
        .build();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(ClassifyLayer::new())
        .service(http_client());
    let res = client.oneshot(put).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    // The whole stack: a stale write is rebased (412, re-read, write), and
    // a hanging one ends in a typed error; what the caller is shown too.
    let stack = MpsdLayer::new()
        .rebase(RebaseLayer::new(ResendDelta))
        .revalidate(RevalidateLayer::new())
        .pace(PaceLayer::new());
    let client = ServiceBuilder::new()
        .mpsd_with(stack)
        .service(http_client());
    let stale = request(Method::PUT, format!("{uri}/members/me"))
        .header(header::IF_MATCH, "\"stale\"")
        .json(serde_json::json!({"properties": {"custom": {"password": "hunter2"}}}));
    let res = client.clone().oneshot(stale.build()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut shown = format!("{:?}", AttemptHistory::of(&res));
    sim.script(Fault::status(StatusCode::OK).delay(Duration::from_secs(3600)));
    let hanging = request(Method::GET, &uri);
    let err = client.oneshot(hanging.build()).await.unwrap_err();
    shown += &format!("{err} {err:?}");

    // The auth layer: a token the simulator revokes, refreshed on the 401;
    // then a sign-in that fails. Neither token may show anywhere.
    let checked = Simulator::builder()
        .no_rate_limit()
        .check_tokens()
        .start()
        .await
        .unwrap();
    let auth = AuthLayer::new(SimSignIn(checked.clone()));
    shown += &format!("{auth:?}");
    let client = ServiceBuilder::new()
        .layer(auth)
        .mpsd()
        .service(http_client());
    let uri = checked.session_uri(SCID, "LobbySession", "secret");
    let get = || request(Method::GET, &uri).user(None).build();
    client.clone().oneshot(get()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let res = client.oneshot(get()).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::NO_CONTENT,
        "refreshed after the 401"
    );
    assert!(checked
        .log()
        .iter()
        .any(|e| e.status == StatusCode::UNAUTHORIZED));
    let failing = ServiceBuilder::new()
        .layer(AuthLayer::new(FailingSignIn))
        .mpsd()
        .service(http_client());
    let err = failing.oneshot(get()).await.unwrap_err();
    shown += &format!("{err} {err:?}");

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("mpsd retry: waiting"),
        "the retry was logged: {logs}"
    );
    assert!(
        logs.contains("mpsd rebase"),
        "the rebase was logged: {logs}"
    );
    assert!(
        logs.contains("mpsd auth: 401, sending again"),
        "the refresh was logged: {logs}"
    );
    for secret in [
        "token-of-alice",
        "XBL3.0",
        "hunter2",
        "password",
        "sim-token-",
    ] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
        assert!(
            !shown.contains(secret),
            "{secret} leaked into what the caller sees: {shown}"
        );
    }
}

/// Signs in at the simulator; each token is honoured for one second.
struct SimSignIn(mpsd_sim::SimHandle);

impl TokenSource for SimSignIn {
    fn token(&self, _refresh: bool) -> TokenFuture<'_> {
        let token = Token::new(
            "alice",
            &self.0.issue_token("alice", Duration::from_secs(1)),
        );
        Box::pin(async move { Ok(token?) })
    }
}

/// A sign-in whose token is never handed over: it fails.
struct FailingSignIn;

impl TokenSource for FailingSignIn {
    fn token(&self, _refresh: bool) -> TokenFuture<'_> {
        Box::pin(async { Err("sign-in failed".into()) })
    }
}

/// What a user may print of a stack: the layer and the service, while a
/// GET (coalesced, keyed by its `Authorization`) and a conditional write
/// (sequenced, its session's document on the board) are in flight.
#[tokio::test(start_paused = true)]
async fn a_busy_stack_in_debug_shows_no_token_or_session() {
    let sim = Simulator::builder().no_rate_limit().start().await.unwrap();
    let uri = sim.session_uri(SCID, "LobbySession", "secret");
    let stack = MpsdLayer::new()
        .rebase(RebaseLayer::new(ResendDelta))
        .revalidate(RevalidateLayer::new())
        .pace(PaceLayer::new());
    let client = ServiceBuilder::new()
        .mpsd_with(stack.clone())
        .service(http_client());
    let session = serde_json::json!({"members": {"me": {}}, "properties": {"custom": {"password": "hunter2"}}});
    let create = request(Method::PUT, &uri)
        .header(header::IF_NONE_MATCH, "*")
        .json(session.clone());
    let res = client.clone().oneshot(create.build()).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let etag = res.headers()[header::ETAG].to_str().unwrap().to_owned();
    res.into_body().collect().await.unwrap();

    sim.script(
        Fault::status(StatusCode::OK)
            .delay(Duration::from_secs(60))
            .times(2),
    );
    let get = tokio::spawn(client.clone().oneshot(request(Method::GET, &uri).build()));
    let write = request(Method::PUT, &uri)
        .header(header::IF_MATCH, &etag)
        .json(session);
    let write = tokio::spawn(client.clone().oneshot(write.build()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let shown = format!("{stack:?} {client:?}");
    get.abort();
    write.abort();

    for secret in ["token-of-alice", "XBL3.0", "hunter2", "password"] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    assert!(
        shown.contains("in_flight: 1"),
        "the GET is in flight: {shown}"
    );
}
