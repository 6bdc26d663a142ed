//! Write sequencing and read coalescing against the simulator over real
//! TCP, on paused time: the writers of one process no longer make each
//! other's 412s, a queued write keeps its deadline, and identical reads
//! are sent once.

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use mpsd_sim::{Fault, SimHandle};
use serde_json::json;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_mpsd::coalesce::CoalesceLayer;
use tower_mpsd::error::{Refused, RefusedBy};
use tower_mpsd::logical::{AttemptHistory, Purpose};
use tower_mpsd::rebase::policy::rebase_fn;
use tower_mpsd::rebase::RebaseLayer;
use tower_mpsd::retry::AttemptTimedOut;
use tower_mpsd::revalidate::RevalidateLayer;
use tower_mpsd::sequence::SessionBoard;
use tower_mpsd::{BoxError, MpsdLayer, ServiceBuilderExt};

use common::{count_delta, count_of, create, http_client, increment, quiet_sim, request, SCID};

/// The recommended stack with a read-modify-write policy, its board and
/// its coalescing layer given, so that the test reads their counters.
fn stack(
    board: &SessionBoard,
    coalesce: &CoalesceLayer,
    deadline: Duration,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<impl http_body::Body<Data = Bytes, Error = BoxError> + std::fmt::Debug>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    let layer = MpsdLayer::new()
        .deadline(deadline)
        .rebase(RebaseLayer::new(rebase_fn(increment)).sequence(board.clone()))
        .coalesce(coalesce.clone());
    ServiceBuilder::new()
        .mpsd_with(layer)
        .service(http_client())
}

async fn body<B>(res: Response<B>) -> (StatusCode, Option<String>, Bytes)
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let status = res.status();
    let etag = res
        .headers()
        .get(header::ETAG)
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        etag,
        res.into_body().collect().await.unwrap().to_bytes(),
    )
}

fn puts(sim: &SimHandle) -> Vec<mpsd_sim::LogEntry> {
    sim.log()
        .into_iter()
        .filter(|e| e.method == Method::PUT)
        .collect()
}

fn user(i: usize) -> &'static str {
    Box::leak(format!("w{i}").into_boxed_str())
}

/// `writers` read-modify-writes of the counter, all at once through one
/// clone each of `svc`: each reads the session as user `w<i>`, then
/// writes `count + 1` with `If-Match`. The statuses of the writes.
async fn read_modify_write<S, B>(
    svc: &S,
    uri: &str,
    writers: std::ops::Range<usize>,
) -> Vec<StatusCode>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = BoxError> + Clone,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    join_all(writers.map(|i| {
        let svc = svc.clone();
        async move {
            let get = request(Method::GET, uri).user(Some(user(i))).build();
            let (status, etag, read) = body(svc.clone().oneshot(get).await.unwrap()).await;
            assert_eq!(status, StatusCode::OK);
            let count = count_of(&serde_json::from_slice(&read).unwrap());
            let put = request(Method::PUT, uri)
                .user(Some(user(i)))
                .header(header::IF_MATCH, &etag.unwrap())
                .raw_bytes(count_delta(count + 1))
                .build();
            body(svc.oneshot(put).await.unwrap()).await.0
        }
    }))
    .await
}

fn counter(sim: &SimHandle, name: &str) -> u64 {
    count_of(&sim.session(SCID, "LobbySession", name).unwrap())
}

#[tokio::test(start_paused = true)]
async fn sixty_four_writers_through_one_stack_send_sixty_four_puts_and_all_succeed() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "counter");
    create(&uri, "host", json!({})).await;
    sim.clear_log();
    let (board, coalesce) = (SessionBoard::new(), CoalesceLayer::new());
    let svc = stack(&board, &coalesce, Duration::from_secs(20));

    let statuses = read_modify_write(&svc, &uri, 0..64).await;

    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(counter(&sim, "counter"), 64, "no update lost");
    let puts = puts(&sim);
    // Every writer read the same ETag; the first write went as it came and
    // each of the others was rebased on the answer before it: no 412.
    assert_eq!(puts.len(), 64, "one PUT per write");
    assert!(puts.iter().all(|e| e.status == StatusCode::OK));
    let stats = board.stats();
    assert_eq!(stats.writes_sequenced(), 64);
    assert_eq!(stats.rebased_before_sending(), 63);
    assert_eq!(stats.precondition_failed(), 0);
    assert_eq!(board.sessions(), 1);
}

#[tokio::test(start_paused = true)]
async fn four_stacks_with_their_own_boards_lose_no_update_and_rebase_each_others_412s() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "counter");
    create(&uri, "host", json!({})).await;
    sim.clear_log();
    // As four processes: nothing shared but the server.
    let boards: Vec<_> = (0..4).map(|_| SessionBoard::new()).collect();
    let stacks: Vec<_> = boards
        .iter()
        .map(|board| stack(board, &CoalesceLayer::new(), Duration::from_secs(20)))
        .collect();

    let runs = stacks
        .iter()
        .enumerate()
        .map(|(k, svc)| read_modify_write(svc, &uri, k * 16..(k + 1) * 16));
    let statuses: Vec<StatusCode> = join_all(runs).await.into_iter().flatten().collect();

    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count() as u64;
    assert_eq!(counter(&sim, "counter"), ok, "no update lost");
    // Between stacks, as between processes, a write may still lose all
    // its conflict rounds (and get the 412 back), as without sequencing.
    assert!(
        statuses
            .iter()
            .all(|s| matches!(*s, StatusCode::OK | StatusCode::PRECONDITION_FAILED)),
        "{statuses:?}"
    );
    let conflicts: u64 = boards.iter().map(|b| b.stats().precondition_failed()).sum();
    let logged_412 = puts(&sim)
        .iter()
        .filter(|e| e.status == StatusCode::PRECONDITION_FAILED)
        .count() as u64;
    assert!(conflicts > 0, "the stacks raced at the server");
    assert_eq!(conflicts, logged_412, "every 412 was seen and rebased");
    assert_eq!(
        puts(&sim).len() as u64,
        ok + logged_412,
        "every PUT won or lost a race"
    );
}

/// A PUT that the simulator answers 200 (without touching the session)
/// only after `delay`: a write in flight that long.
fn slow_put(name: &str, delay: Duration) -> Fault {
    Fault::status(StatusCode::OK)
        .method(Method::PUT)
        .path_contains(format!("/sessions/{name}"))
        .delay(delay)
}

/// Session `q` on a quiet simulator, with its PUTs answered only after
/// `delay`: the simulator, the session's URI and its `ETag`.
async fn session_with_a_slow_put(delay: Duration) -> (SimHandle, String, String) {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "q");
    let etag = create(&uri, "host", json!({})).await;
    sim.clear_log();
    sim.script(slow_put("q", delay));
    (sim, uri, etag)
}

fn put(uri: &str, etag: &str, count: u64) -> Request<Full<Bytes>> {
    request(Method::PUT, uri)
        .header(header::IF_MATCH, etag)
        .raw_bytes(count_delta(count))
        .build()
}

#[tokio::test(start_paused = true)]
async fn the_history_says_how_long_a_write_queued_that_it_was_rebased_before_sending_and_its_round()
{
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "h");
    let etag = create(&uri, "host", json!({})).await;
    sim.clear_log();
    // The first write is answered after 2 s with a session at an ETag the
    // server never had: the write queued behind it is rebased on that
    // before it goes, loses (412), and wins its first conflict round.
    let answer = json!({"properties": {"custom": {"count": 7}}}).to_string();
    sim.script(
        slow_put("h", Duration::from_secs(2))
            .header(
                header::ETAG,
                http::HeaderValue::from_static("\"elsewhere\""),
            )
            .header(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            )
            .body(answer),
    );
    let (board, coalesce) = (SessionBoard::new(), CoalesceLayer::new());
    let svc = stack(&board, &coalesce, Duration::from_secs(20));

    let first = tokio::spawn(svc.clone().oneshot(put(&uri, &etag, 1)));
    tokio::task::yield_now().await;
    let second = svc.oneshot(put(&uri, &etag, 1)).await.unwrap();
    let first = first.await.unwrap().unwrap();

    let history = |res: &Response<_>| AttemptHistory::of(res).unwrap().clone();
    let (first, second) = (history(&first), history(&second));
    let steps = |h: &AttemptHistory| -> Vec<_> {
        let steps = h.attempts().iter();
        steps
            .map(|a| (a.purpose, a.queued, a.outcome.map(|o| o.status().as_u16())))
            .collect()
    };
    assert_eq!(steps(&first), [(Purpose::First, Duration::ZERO, Some(200))]);
    assert_eq!(first.won_in_round(), Some(0));
    assert_eq!(
        steps(&second),
        [
            (
                Purpose::RebasedBeforeSending,
                Duration::from_secs(2),
                Some(412)
            ),
            (Purpose::Rebased, Duration::ZERO, Some(200)),
        ]
    );
    assert_eq!(
        second.attempts()[0].waited,
        Duration::from_secs(2),
        "all of it queued"
    );
    assert_eq!(second.won_in_round(), Some(1));
    let puts = puts(&sim);
    assert_eq!(puts.len(), 3);
    assert_eq!(puts[1].if_match.as_deref(), Some("\"elsewhere\""));
    // Rebased on the 412's session (count 0, the fault touched nothing).
    assert_eq!(counter(&sim, "h"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_leaves_the_queue_and_the_next_goes_when_the_answer_ahead_arrives() {
    let (sim, uri, etag) = session_with_a_slow_put(Duration::from_secs(2)).await;
    let (board, coalesce) = (SessionBoard::new(), CoalesceLayer::new());
    let svc = stack(&board, &coalesce, Duration::from_secs(20));
    let t0 = Instant::now();

    let ahead = tokio::spawn(svc.clone().oneshot(put(&uri, &etag, 1)));
    tokio::task::yield_now().await;
    let dropped = tokio::spawn(svc.clone().oneshot(put(&uri, &etag, 2)));
    tokio::task::yield_now().await;
    let next = tokio::spawn(svc.clone().oneshot(put(&uri, &etag, 3)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    dropped.abort();
    assert!(dropped.await.unwrap_err().is_cancelled());

    assert_eq!(ahead.await.unwrap().unwrap().status(), StatusCode::OK);
    let (status, ..) = body(next.await.unwrap().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let puts = puts(&sim);
    assert_eq!(puts.len(), 2, "the dropped write was never sent");
    assert_eq!(
        puts[1].at - t0,
        Duration::from_secs(2),
        "sent as the answer ahead arrived"
    );
    assert_eq!(counter(&sim, "q"), 3, "the next write, as it came");
    assert_eq!(board.stats().waited(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_write_whose_deadline_passes_is_handed_back_unsent() {
    let (sim, uri, etag) = session_with_a_slow_put(Duration::from_secs(10)).await;
    let (board, coalesce) = (SessionBoard::new(), CoalesceLayer::new());
    let patient = stack(&board, &coalesce, Duration::from_secs(20));
    let hurried = stack(&board, &coalesce, Duration::from_secs(3));
    let t0 = Instant::now();

    let ahead = tokio::spawn(patient.oneshot(put(&uri, &etag, 1)));
    tokio::task::yield_now().await;
    let error = hurried.oneshot(put(&uri, &etag, 2)).await.unwrap_err();

    assert_eq!(
        Instant::now() - t0,
        Duration::from_secs(3),
        "refused at its deadline"
    );
    let refused = error.downcast_ref::<Refused>().expect("refused");
    assert_eq!((refused.by, refused.attempts), (RefusedBy::Queue, 0));
    ahead.await.unwrap().unwrap();
    assert_eq!(puts(&sim).len(), 1, "only the write ahead was sent");
    assert_eq!(board.stats().refused(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_write_ahead_that_gets_no_answer_holds_the_queue_only_until_it_times_out() {
    let (sim, uri, etag) = session_with_a_slow_put(Duration::from_secs(3600)).await;
    let (board, coalesce) = (SessionBoard::new(), CoalesceLayer::new());
    // The retry layer gives an attempt at least 5 s, then abandons it.
    let short = stack(&board, &coalesce, Duration::from_secs(5));
    let long = stack(&board, &coalesce, Duration::from_secs(20));
    let t0 = Instant::now();

    let ahead = tokio::spawn(short.oneshot(put(&uri, &etag, 1)));
    tokio::task::yield_now().await;
    let (status, ..) = body(long.oneshot(put(&uri, &etag, 2)).await.unwrap()).await;

    let error = ahead.await.unwrap().unwrap_err();
    assert!(error.is::<AttemptTimedOut>(), "{error}");
    assert_eq!(status, StatusCode::OK);
    let puts = puts(&sim);
    assert_eq!(puts.last().unwrap().at - t0, Duration::from_secs(5));
    assert_eq!(counter(&sim, "q"), 2);
}

#[tokio::test(start_paused = true)]
async fn sixty_four_identical_reads_are_sent_once_and_two_users_twice() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "read");
    create(&uri, "host", json!({"properties": {"custom": {"n": 1}}})).await;
    sim.clear_log();
    let (board, coalesce) = (SessionBoard::new(), CoalesceLayer::new());
    let svc = stack(&board, &coalesce, Duration::from_secs(20));
    let get = |who: &'static str| {
        let svc = svc.clone();
        let req = request(Method::GET, &uri).user(Some(who)).build();
        async move { body(svc.oneshot(req).await.unwrap()).await }
    };

    let answers = join_all((0..64).map(|_| get("alice"))).await;
    assert_eq!(sim.log().len(), 1, "one request reached the server");
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "identical answers"
    );
    assert_eq!(answers[0].0, StatusCode::OK);
    assert_eq!(count_of(&serde_json::from_slice(&answers[0].2).unwrap()), 0);
    assert_eq!(coalesce.stats().reads_coalesced(), 63);

    sim.clear_log();
    let users = ["alice", "bob"];
    let answers = join_all((0..64).map(|i| get(users[i % 2]))).await;
    let mut asked: Vec<_> = sim.log().into_iter().map(|e| e.user.unwrap()).collect();
    asked.sort();
    assert_eq!(
        asked,
        ["alice", "bob"],
        "one request per user, never shared"
    );
    assert!(answers.iter().all(|a| a.0 == StatusCode::OK));
}

#[tokio::test(start_paused = true)]
async fn coalesced_reads_are_revalidated_once_and_all_get_the_cached_body() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "read");
    create(&uri, "host", json!({})).await;
    let coalesce = CoalesceLayer::new();
    let layer = MpsdLayer::new()
        .rebase(RebaseLayer::new(rebase_fn(increment)))
        .coalesce(coalesce.clone())
        .revalidate(RevalidateLayer::new());
    let svc = ServiceBuilder::new()
        .mpsd_with(layer)
        .service(http_client());
    let get = || {
        let svc = svc.clone();
        let req = request(Method::GET, &uri).build();
        async move { body(svc.oneshot(req).await.unwrap()).await }
    };
    let first = get().await;
    sim.clear_log();

    let answers = join_all((0..16).map(|_| get())).await;

    let log = sim.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status, StatusCode::NOT_MODIFIED, "a revalidation");
    assert!(
        answers.iter().all(|a| a == &first),
        "the cached 200 for all"
    );
    assert_eq!(coalesce.stats().reads_coalesced(), 15);
}

#[tokio::test(start_paused = true)]
async fn an_element_write_queues_with_its_session_and_other_sessions_do_not_wait() {
    let sim = quiet_sim().await;
    let a = sim.session_uri(SCID, "LobbySession", "a");
    let b = sim.session_uri(SCID, "LobbySession", "b");
    let etag_a = create(&a, "host", json!({})).await;
    let etag_b = create(&b, "host", json!({})).await;
    sim.clear_log();
    sim.script(slow_put("a/members/me", Duration::from_secs(2)));
    let (board, coalesce) = (SessionBoard::new(), CoalesceLayer::new());
    let svc = stack(&board, &coalesce, Duration::from_secs(20));
    let t0 = Instant::now();

    let me = request(Method::PUT, format!("{a}/members/me"))
        .user(Some("host"))
        .header(header::IF_MATCH, &etag_a)
        .json(json!({"properties": {"custom": {"ready": true}}}))
        .build();
    let ahead = tokio::spawn(svc.clone().oneshot(me));
    tokio::task::yield_now().await;
    let same = tokio::spawn(svc.clone().oneshot(put(&a, &etag_a, 1)));
    let other = tokio::spawn(svc.clone().oneshot(put(&b, &etag_b, 1)));
    for task in [ahead, same, other] {
        assert_eq!(task.await.unwrap().unwrap().status(), StatusCode::OK);
    }

    let at = |name: &str| {
        let entry = puts(&sim)
            .into_iter()
            .find(|e| e.path.ends_with(name))
            .unwrap();
        entry.at - t0
    };
    assert_eq!(
        at("/sessions/b"),
        Duration::ZERO,
        "another session: at once"
    );
    assert_eq!(
        at("/sessions/a"),
        Duration::from_secs(2),
        "after its element's write"
    );
}

#[tokio::test(start_paused = true)]
async fn without_coalescing_two_identical_reads_are_both_sent() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "apart");
    create(&uri, "host", json!({})).await;
    let rebase = || RebaseLayer::new(rebase_fn(increment));
    let coalescing = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().rebase(rebase()))
        .service(http_client());
    let apart = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().rebase(rebase()).without_coalescing())
        .service(http_client());
    // The server is slow enough that both GETs are in flight together.
    let slow = || Fault::status(StatusCode::OK).delay(Duration::from_millis(100));

    for (name, expected) in [("coalescing", 1), ("without_coalescing", 2)] {
        sim.clear_log();
        sim.script(slow().times(expected));
        let get = || {
            use futures_util::FutureExt;
            let req = request(Method::GET, &uri).build();
            match name {
                "coalescing" => coalescing
                    .clone()
                    .oneshot(req)
                    .map(|r| r.unwrap().status())
                    .boxed(),
                _ => apart
                    .clone()
                    .oneshot(req)
                    .map(|r| r.unwrap().status())
                    .boxed(),
            }
        };
        let t0 = Instant::now();
        let answers = join_all([get(), get()]).await;
        assert_eq!(answers, [StatusCode::OK; 2]);
        println!(
            "{name}: {} sent, over at {:?}",
            sim.log().len(),
            t0.elapsed()
        );
        assert_eq!(sim.log().len(), expected, "{name}");
        assert_eq!(t0.elapsed(), Duration::from_millis(100), "{name}: together");
    }
}
