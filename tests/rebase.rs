//! The 412 rebase layer against the simulator over real TCP, on paused
//! time: contending writers lose no update, and every way a rebase can stop
//! ends typed.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{header, Method, Response, StatusCode};
use http_body_util::BodyExt;
use mpsd_sim::{Fault, SimHandle};
use serde_json::{json, Value};
use tower::{ServiceBuilder, ServiceExt};
use tower_mpsd::logical::{AttemptHistory, GaveUp, LogicalLayer, NoSession, Purpose};
use tower_mpsd::rebase::policy::{rebase_fn, CreateOnly, Decision, LostRace, ResendDelta};
use tower_mpsd::rebase::{RebaseBody, RebaseError, RebaseLayer};
use tower_mpsd::retry::RetryLayer;

use common::{create, http_client, overloaded, quiet_sim, request, SCID};

/// Re-applies "add 1 to the counter" to the session as it is now.
fn increment(conflict: &LostRace<'_>) -> Result<Decision, tower_mpsd::BoxError> {
    Ok(Decision::Retry(count_delta(count_of(conflict.session) + 1)))
}

fn count_of(session: &Value) -> u64 {
    session["properties"]["custom"]["count"]
        .as_u64()
        .unwrap_or(0)
}

fn count_delta(count: u64) -> Bytes {
    Bytes::from(json!({"properties": {"custom": {"count": count}}}).to_string())
}

type Answer = (StatusCode, Option<String>, Bytes, AttemptHistory);

async fn read<B>(res: Response<RebaseBody<B>>) -> Answer
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<tower_mpsd::BoxError>,
{
    let status = res.status();
    let etag = res
        .headers()
        .get(header::ETAG)
        .map(|v| v.to_str().unwrap().to_owned());
    let history = AttemptHistory::of(&res).cloned();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, etag, body, history.unwrap_or_default())
}

/// `writers` callers each read the session, then all write `count + 1`
/// with `If-Match` at once, through the rebase layer (at most `rounds`
/// conflicts, so `rounds + 1` sends) above the retry layer. Returns each
/// writer's answer.
async fn contend(sim: &SimHandle, name: &str, writers: usize, rounds: u32) -> Vec<Answer> {
    let uri = sim.session_uri(SCID, "LobbySession", name);
    create(&uri, "alice", json!({})).await;
    let client = ServiceBuilder::new()
        .layer(LogicalLayer::new(Duration::from_secs(20), rounds + 1))
        .layer(RebaseLayer::new(rebase_fn(increment)).max_rounds(rounds))
        .layer(RetryLayer::new())
        .service(http_client());
    let reads = join_all((0..writers).map(|_| {
        let get = request(Method::GET, &uri).build();
        async { read(client.clone().oneshot(get).await.unwrap()).await }
    }))
    .await;
    let writes = reads.into_iter().map(|(status, etag, body, _)| {
        assert_eq!(status, StatusCode::OK);
        let count = count_of(&serde_json::from_slice(&body).unwrap());
        let put = request(Method::PUT, &uri)
            .header(header::IF_MATCH, &etag.unwrap())
            .raw_bytes(count_delta(count + 1))
            .build();
        let client = client.clone();
        async move { read(client.oneshot(put).await.unwrap()).await }
    });
    join_all(writes).await
}

fn final_count(sim: &SimHandle, name: &str) -> u64 {
    count_of(&sim.session(SCID, "LobbySession", name).unwrap())
}

/// How many writers needed how many sends.
fn attempts_table(answers: &[Answer]) -> BTreeMap<usize, usize> {
    let mut table = BTreeMap::new();
    for (_, _, _, history) in answers {
        *table.entry(history.attempts().len()).or_default() += 1;
    }
    table
}

#[tokio::test(start_paused = true)]
async fn sixteen_concurrent_read_modify_writes_lose_no_update() {
    let sim = quiet_sim().await;
    let answers = contend(&sim, "count16", 16, 16).await;
    let table = attempts_table(&answers);
    println!("16 writers, sends per write -> writers: {table:?}");
    for (status, _, body, history) in &answers {
        assert_eq!(*status, StatusCode::OK, "{}", String::from_utf8_lossy(body));
        assert_eq!(history.gave_up, None);
        assert!(history.attempts()[1..]
            .iter()
            .all(|a| a.purpose == Purpose::Rebased));
    }
    assert_eq!(final_count(&sim, "count16"), 16);
    assert!(table.len() > 1, "the writers did contend: {table:?}");
}

#[tokio::test(start_paused = true)]
async fn sixty_four_writers_with_too_few_rounds_get_the_fresh_session_when_they_give_up() {
    let sim = quiet_sim().await;
    let answers = contend(&sim, "count64", 64, 2).await;
    let mut succeeded = 0;
    for (status, etag, body, history) in &answers {
        match *status {
            StatusCode::OK => succeeded += 1,
            StatusCode::PRECONDITION_FAILED => {
                assert_eq!(history.gave_up, Some(GaveUp::ConflictRounds));
                let session: Value = serde_json::from_slice(body).unwrap();
                assert!(session["members"].is_object(), "the whole session");
                assert!(etag.is_some(), "and its ETag");
            }
            other => panic!("{other}"),
        }
    }
    println!(
        "64 writers, 2 rounds: {succeeded} succeeded, sends -> writers: {:?}",
        attempts_table(&answers)
    );
    assert!(succeeded < 64, "two rounds cannot serve 64 writers");
    assert_eq!(final_count(&sim, "count64"), succeeded);
}

/// Creates `name` with If-None-Match: * when it already exists.
/// Returns the answer, the log as (method, status, If-Match) and the
/// session's ETag before the write.
async fn create_again(
    sim: &SimHandle,
    name: &str,
    policy: CreateOnly,
) -> (Answer, Vec<(Method, u16, Option<String>)>, String) {
    let uri = sim.session_uri(SCID, "LobbySession", name);
    let etag = create(&uri, "alice", json!({})).await;
    sim.clear_log();
    let client = ServiceBuilder::new()
        .layer(RebaseLayer::new(policy))
        .service(http_client());
    let put = request(Method::PUT, &uri)
        .header(header::IF_NONE_MATCH, "*")
        .json(json!({"properties": {"custom": {"mode": "ffa"}}}))
        .build();
    let answer = read(client.oneshot(put).await.unwrap()).await;
    let log = sim
        .log()
        .iter()
        .map(|e| (e.method.clone(), e.status.as_u16(), e.if_match.clone()))
        .collect();
    (answer, log, etag)
}

#[tokio::test(start_paused = true)]
async fn a_create_only_write_that_finds_the_session_becomes_an_update_when_asked() {
    let sim = quiet_sim().await;
    let ((status, _, _, history), log, etag) =
        create_again(&sim, "exists", CreateOnly::then_update()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        log,
        [
            (Method::PUT, 412, None),
            (Method::GET, 200, None),
            (Method::PUT, 200, Some(etag))
        ]
    );
    let purposes: Vec<_> = history.attempts().iter().map(|a| a.purpose).collect();
    assert_eq!(
        purposes,
        [Purpose::First, Purpose::Reread, Purpose::Rebased]
    );
    let session = sim.session(SCID, "LobbySession", "exists").unwrap();
    assert_eq!(session["properties"]["custom"]["mode"], "ffa");
}

#[tokio::test(start_paused = true)]
async fn a_create_only_write_that_finds_the_session_is_surfaced_by_default() {
    let sim = quiet_sim().await;
    let ((status, etag, body, history), log, _) =
        create_again(&sim, "surfaced", CreateOnly::surface()).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(log, [(Method::PUT, 412, None), (Method::GET, 200, None)]);
    assert_eq!(history.gave_up, Some(GaveUp::PolicyDeclined));
    let session: Value = serde_json::from_slice(&body).unwrap();
    assert!(session["members"].is_object(), "the fresh session");
    assert!(etag.is_some(), "with its ETag");
}

#[tokio::test(start_paused = true)]
async fn a_session_deleted_before_the_reread_is_a_typed_session_gone() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "gone");
    let etag = create(&uri, "alice", json!({})).await;
    // The last member leaves: the session is deleted.
    let leave = request(Method::PUT, &uri).json(json!({"members": {"me": null}}));
    let left = common::send(leave).await;
    assert_eq!(left.outcome, tower_mpsd::classify::Outcome::SessionDeleted);
    let client = ServiceBuilder::new()
        .layer(RebaseLayer::new(ResendDelta))
        .service(http_client());
    let put = request(Method::PUT, &uri)
        .header(header::IF_MATCH, &etag)
        .json(json!({"properties": {"custom": {"x": 1}}}))
        .build();
    let err = client.oneshot(put).await.unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<RebaseError>(),
            Some(RebaseError::SessionGone)
        ),
        "{err}"
    );
    assert!(
        sim.session(SCID, "LobbySession", "gone").is_none(),
        "nothing re-created"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_cap_is_sent_once_and_its_412_handed_back_with_the_reason() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "big");
    create(&uri, "alice", json!({})).await;
    sim.clear_log();
    let client = ServiceBuilder::new()
        .layer(RebaseLayer::new(ResendDelta).body_limit(16))
        .service(http_client());
    let put = request(Method::PUT, &uri)
        .header(header::IF_MATCH, "\"stale\"")
        .json(json!({"properties": {"custom": {"padding": "x".repeat(64)}}}))
        .build();
    let res = client.oneshot(put).await.unwrap();
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        AttemptHistory::of(&res).unwrap().gave_up,
        Some(GaveUp::NotReplayable)
    );
    assert_eq!(sim.log().len(), 1, "sent once");
}

#[tokio::test(start_paused = true)]
async fn a_503_during_the_reread_is_waited_out_within_one_attempt_limit() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "reread503");
    create(&uri, "alice", json!({})).await;
    sim.script(overloaded("2").method(Method::GET));
    sim.clear_log();
    let client = ServiceBuilder::new()
        .layer(RebaseLayer::new(CreateOnly::then_update()))
        .layer(RetryLayer::new())
        .service(http_client());
    let put = request(Method::PUT, &uri)
        .header(header::IF_NONE_MATCH, "*")
        .json(json!({"properties": {"custom": {"mode": "ffa"}}}))
        .build();
    let (status, _, _, history) = read(client.oneshot(put).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let sent: Vec<_> = history
        .attempts()
        .iter()
        .map(|a| (a.purpose, a.outcome.map(|o| o.status().as_u16())))
        .collect();
    println!("503 during the re-read: {sent:?}");
    assert_eq!(
        sent,
        [
            (Purpose::First, Some(412)),
            (Purpose::Reread, Some(503)),
            (
                Purpose::Retry(tower_mpsd::rules::backoff::Cause::Overloaded),
                Some(200)
            ),
            (Purpose::Rebased, Some(200)),
        ]
    );
    let log = sim.log();
    let gap = log[2].at - log[1].at;
    assert!(
        gap >= Duration::from_secs(2),
        "Retry-After honoured: {gap:?}"
    );
    assert_eq!(log.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_stack_shares_one_attempt_limit_between_rebase_and_retry() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "limit");
    create(&uri, "alice", json!({})).await;
    sim.script(overloaded("1").method(Method::GET).times(5));
    sim.clear_log();
    let client = ServiceBuilder::new()
        .layer(LogicalLayer::new(Duration::from_secs(20), 3))
        .layer(RebaseLayer::new(CreateOnly::then_update()))
        .layer(RetryLayer::new())
        .service(http_client());
    let put = request(Method::PUT, &uri)
        .header(header::IF_NONE_MATCH, "*")
        .json(json!({}))
        .build();
    let res = client.oneshot(put).await.unwrap();
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    let status = StatusCode::SERVICE_UNAVAILABLE;
    assert_eq!(sim.log().len(), 3, "PUT, GET, GET: three sends in all");
    let history = AttemptHistory::of(&res).unwrap();
    assert_eq!(
        history.attempts().len(),
        3,
        "the limit, shared: {history:?}"
    );
    // The retry layer stopped retrying the re-read at the limit; the 412 is
    // handed back because the session could not be read.
    assert_eq!(
        history.gave_up,
        Some(GaveUp::NoSession(NoSession::Reread { status }))
    );
}

#[tokio::test(start_paused = true)]
async fn a_412_and_a_reread_without_an_etag_hand_the_412_back() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "noetag");
    create(&uri, "alice", json!({})).await;
    sim.script(
        Fault::status(StatusCode::PRECONDITION_FAILED)
            .method(Method::PUT)
            .body("oops"),
    );
    sim.script(Fault::status(StatusCode::OK).method(Method::GET).body("{}"));
    let client = ServiceBuilder::new()
        .layer(RebaseLayer::new(ResendDelta))
        .service(http_client());
    let put = request(Method::PUT, &uri)
        .header(header::IF_MATCH, "\"e\"")
        .json(json!({}))
        .build();
    let res = client.oneshot(put).await.unwrap();
    assert_eq!(
        AttemptHistory::of(&res).unwrap().gave_up,
        Some(GaveUp::NoSession(NoSession::NoEtag))
    );
    let (status, _, body, _) = read(res).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(body, "oops", "the original 412, whole");
    assert_eq!(
        sim.log().iter().filter(|e| e.method == Method::PUT).count(),
        2,
        "create + one write"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_policy_is_a_typed_error_and_nothing_more_is_sent() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "policyerr");
    create(&uri, "alice", json!({})).await;
    sim.clear_log();
    let failing = rebase_fn(|_: &LostRace<'_>| Err("cannot merge".into()));
    let client = ServiceBuilder::new()
        .layer(RebaseLayer::new(failing))
        .service(http_client());
    let put = request(Method::PUT, &uri)
        .header(header::IF_MATCH, "\"stale\"")
        .json(json!({}))
        .build();
    let err = client.oneshot(put).await.unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<RebaseError>(),
            Some(RebaseError::Policy(_))
        ),
        "{err}"
    );
    assert_eq!(sim.log().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_412_over_the_session_cap_is_handed_back_without_a_reread() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "huge412");
    create(&uri, "alice", json!({})).await;
    sim.clear_log();
    let client = ServiceBuilder::new()
        .layer(RebaseLayer::new(ResendDelta).session_limit(16))
        .service(http_client());
    let put = request(Method::PUT, &uri)
        .header(header::IF_MATCH, "\"stale\"")
        .json(json!({}))
        .build();
    let res = client.oneshot(put).await.unwrap();
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        AttemptHistory::of(&res).unwrap().gave_up,
        Some(GaveUp::NoSession(NoSession::TooLarge))
    );
    assert!(
        !res.headers().contains_key(header::CONTENT_LENGTH),
        "no length for a body not handed back"
    );
    assert_eq!(sim.log().len(), 1, "no re-read of a session just as large");
}

/// A create-only write's 412 has no body; handed back by a declining
/// policy, it carries the session as it is now, and reads as such: a typed
/// session, whose contents the error's message never shows.
#[tokio::test(start_paused = true)]
async fn a_surfaced_412_reads_as_the_session_it_carries_and_its_message_shows_none_of_it() {
    use tower_mpsd::classify::Outcome;
    use tower_mpsd::response::{read_response, MpsdError, Payload};
    use tower_mpsd::{MpsdLayer, ServiceBuilderExt};

    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "secret");
    let secret = json!({"properties": {"custom": {"password": "hunter2"}}});
    create(&uri, "alice", secret).await;
    let client = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().rebase(RebaseLayer::new(CreateOnly::surface())))
        .service(http_client());
    let put = request(Method::PUT, &uri)
        .header(header::IF_NONE_MATCH, "*")
        .json(json!({}))
        .build();
    let res = client.oneshot(put).await.unwrap();
    assert_eq!(Outcome::of(&res), Some(Outcome::SessionChanged));
    let err = read_response(res, 1 << 20).await.unwrap_err();
    let shown = err.to_string();
    let MpsdError::Status {
        outcome,
        etag,
        payload,
        history,
    } = err
    else {
        panic!("a status error: {shown}");
    };
    // What the layers did is kept through the read.
    let history = history.expect("the stack's history");
    let purposes: Vec<_> = history.attempts().iter().map(|a| a.purpose).collect();
    assert_eq!(purposes, [Purpose::First, Purpose::Reread]);
    assert_eq!(history.gave_up, Some(GaveUp::PolicyDeclined));
    assert_eq!(outcome, Outcome::SessionChanged);
    assert!(etag.is_some(), "with its ETag");
    let Payload::Session(session) = payload else {
        panic!("the session, typed: {payload:?}");
    };
    assert!(String::from_utf8_lossy(&session).contains("hunter2"));
    assert_eq!(shown, "mpsd answered 412 session_changed");
}
