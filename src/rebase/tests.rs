//! Unit tests of the rebase layer over a mocked service on paused time:
//! re-reads and rebased writes refused below (a cooldown) are not sends;
//! a service and a policy that are not `Send` rebase on a `LocalSet`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

use super::policy::{rebase_fn, Decision, LostRace, RebasePolicy};
use super::RebaseLayer;
use crate::logical::{AttemptHistory, GaveUp};
use crate::retry::RetryLayer;
use crate::BoxError;

const URI: &str = "http://mpsd.test/serviceconfigs/c/sessionTemplates/t/sessions/s";

type Script = Arc<Mutex<Vec<(u16, Option<&'static str>, &'static str, u64)>>>;

fn mock(
    script: Script,
    seen: Arc<Mutex<Vec<Method>>>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    service_fn(move |req: Request<Full<Bytes>>| {
        let (status, ra, body, delay) = script.lock().unwrap().remove(0);
        seen.lock().unwrap().push(req.method().clone());
        async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let mut b = Response::builder().status(status);
            if let Some(ra) = ra {
                b = b.header(header::RETRY_AFTER, ra);
            }
            if !body.is_empty() {
                b = b
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::ETAG, "\"e2\"");
            }
            Ok::<_, BoxError>(b.body(Full::from(body)).unwrap())
        }
    })
}

fn put() -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::PUT)
        .uri(URI)
        .header(header::AUTHORIZATION, "XBL3.0 x=u;t")
        .header(header::IF_MATCH, "\"e1\"")
        .body(Full::from("{}"))
        .unwrap()
}

fn get() -> Request<Full<Bytes>> {
    Request::builder()
        .uri(URI)
        .header(header::AUTHORIZATION, "XBL3.0 x=v;t")
        .body(Full::default())
        .unwrap()
}

/// PUT (412, no body) in flight while another request closes the
/// authority's gate for 100 s: the re-read is refused by the retry layer
/// below without being sent. History must not show a re-read that never
/// went.
#[tokio::test(start_paused = true)]
async fn a_refused_reread_is_not_recorded_as_an_attempt() {
    let script: Script = Arc::new(Mutex::new(vec![
        (412, None, "", 500),
        (503, Some("100"), "", 0),
    ]));
    let seen = Arc::default();
    let client = ServiceBuilder::new()
        .layer(RebaseLayer::new(rebase_fn(|_| {
            Ok(Decision::Retry(Bytes::from("{}")))
        })))
        .layer(RetryLayer::new())
        .service(mock(script, Arc::clone(&seen)));
    let (w, g) = tokio::join!(client.clone().oneshot(put()), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.clone().oneshot(get()).await
    });
    assert_eq!(g.unwrap().status(), 503);
    let w = w.unwrap();
    assert_eq!(w.status(), 412);
    let h = AttemptHistory::of(&w).unwrap();
    assert!(
        matches!(h.gave_up, Some(GaveUp::CoolingDown { .. })),
        "the re-read was refused: {h:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 2, "the re-read was never sent");
    assert_eq!(h.attempts().len(), 1, "only the PUT went: {h:?}");
}

/// The 412 carries the session; the rebased write is refused by a
/// cooldown below (nothing sent). The write's known answer (412, not
/// applied) should come back, as with a failed re-read, not an error.
#[tokio::test(start_paused = true)]
async fn a_refused_rebased_write_hands_back_the_412() {
    let script: Script = Arc::new(Mutex::new(vec![
        (412, None, r#"{"members":{}}"#, 500),
        (503, Some("100"), "", 0),
    ]));
    let seen = Arc::default();
    let client = ServiceBuilder::new()
        .layer(
            RebaseLayer::new(rebase_fn(|_| Ok(Decision::Retry(Bytes::from("{}")))))
                .spread(Duration::ZERO),
        )
        .layer(RetryLayer::new())
        .service(mock(script, Arc::clone(&seen)));
    let (w, _g) = tokio::join!(client.clone().oneshot(put()), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.clone().oneshot(get()).await
    });
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "the rebased write was never sent"
    );
    let w = w.expect("the 412, not an error");
    assert_eq!(w.status(), 412);
    let h = AttemptHistory::of(&w).unwrap();
    assert!(
        matches!(h.gave_up, Some(GaveUp::CoolingDown { .. })),
        "the rebased write was refused: {h:?}"
    );
    assert_eq!(h.attempts().len(), 1, "only the first PUT went: {h:?}");
}

/// Re-sends the body, counting its calls in an `Rc`: not `Send`.
#[derive(Clone)]
struct LocalResend(Rc<Cell<u32>>);

impl RebasePolicy for LocalResend {
    fn rebase(&mut self, conflict: &LostRace<'_>) -> Result<Decision, BoxError> {
        self.0.set(self.0.get() + 1);
        Ok(Decision::Retry(conflict.body.clone()))
    }
}

fn is_service<S: Service<Request<Full<Bytes>>>>(svc: S) -> S {
    svc
}

/// Neither the service (its state and its futures hold an `Rc`) nor the
/// policy is `Send` or needs to be: the layer asks no more of them than
/// the retry layer does, and a whole round (412 with the session, the
/// policy, the pause, the rebased write) runs on a `LocalSet`.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_service_and_a_policy_that_are_not_send_rebase_on_a_local_set() {
    let seen: Rc<RefCell<Vec<Option<HeaderValue>>>> = Rc::default();
    let log = Rc::clone(&seen);
    let mpsd = service_fn(move |req: Request<Full<Bytes>>| {
        let log = Rc::clone(&log);
        async move {
            // What each write was conditional on.
            log.borrow_mut()
                .push(req.headers().get(header::IF_MATCH).cloned());
            let first = log.borrow().len() == 1;
            let body = req.into_body().collect().await?.to_bytes();
            let (status, etag, body) = if first {
                (412, "\"e2\"", Bytes::from_static(b"{\"members\":{}}"))
            } else {
                (200, "\"e3\"", body)
            };
            let res = Response::builder()
                .status(status)
                .header(header::ETAG, etag);
            Ok::<_, BoxError>(res.body(Full::new(body))?)
        }
    });
    let calls = Rc::new(Cell::new(0));
    let mut client = is_service(RebaseLayer::new(LocalResend(Rc::clone(&calls))).layer(mpsd));
    let local = tokio::task::LocalSet::new();
    let res = local
        .run_until(async move {
            let call = client.ready().await?.call(put());
            tokio::task::spawn_local(call).await?
        })
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "{}");
    assert_eq!(
        *seen.borrow(),
        [
            Some(HeaderValue::from_static("\"e1\"")),
            Some(HeaderValue::from_static("\"e2\""))
        ]
    );
    assert_eq!(calls.get(), 1);
}

/// Two 412s from another process's writes, then a 200: a write queued
/// behind that read the session at the first 412's `ETag` is rebased
/// before it is sent (the board saw every 412's session), not sent stale.
#[tokio::test(start_paused = true)]
async fn a_queued_write_is_rebased_on_the_session_a_412_carried() {
    let answers = Arc::new(Mutex::new(vec![
        (412, "\"5\""),
        (412, "\"7\""),
        (200, "\"8\""),
        (200, "\"9\""),
    ]));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let mpsd = service_fn({
        let (answers, sent) = (answers.clone(), sent.clone());
        move |req: Request<Full<Bytes>>| {
            let (status, etag) = answers.lock().unwrap().remove(0);
            sent.lock()
                .unwrap()
                .push(req.headers()[header::IF_MATCH].clone());
            async move {
                let res = Response::builder()
                    .status(status)
                    .header(header::ETAG, etag)
                    .body(Full::from(format!("{{\"v\":{etag}}}")))?;
                Ok::<_, BoxError>(res)
            }
        }
    });
    let board = crate::sequence::SessionBoard::new();
    let svc = RebaseLayer::new(super::policy::ResendDelta)
        .sequence(board.clone())
        .layer(mpsd);
    let write = |if_match: &'static str| {
        let mut req = put();
        req.headers_mut()
            .insert(header::IF_MATCH, HeaderValue::from_static(if_match));
        req
    };
    let (a, b) = tokio::join!(
        svc.clone().oneshot(write("\"1\"")),
        svc.oneshot(write("\"5\""))
    );
    let ok = http::StatusCode::OK;
    assert_eq!((a.unwrap().status(), b.unwrap().status()), (ok, ok));
    assert_eq!(*sent.lock().unwrap(), ["\"1\"", "\"5\"", "\"7\"", "\"8\""]);
    assert_eq!(board.stats().rebased_before_sending(), 1);
}

/// The caller of the write in flight drops it: the write queued behind
/// goes at once, and the board's queue is empty afterwards.
#[tokio::test(start_paused = true)]
async fn a_dropped_write_in_flight_lets_the_next_go_at_once() {
    let calls = Arc::new(Mutex::new(0));
    let mpsd = service_fn({
        let calls = calls.clone();
        move |_req: Request<Full<Bytes>>| {
            let first = {
                let mut calls = calls.lock().unwrap();
                *calls += 1;
                *calls == 1
            };
            async move {
                if first {
                    // No answer, ever.
                    std::future::pending::<()>().await;
                }
                Ok::<_, BoxError>(Response::new(Full::from("{}")))
            }
        }
    });
    let board = crate::sequence::SessionBoard::new();
    let svc = RebaseLayer::new(super::policy::ResendDelta)
        .sequence(board.clone())
        .layer(mpsd);
    let t0 = tokio::time::Instant::now();
    let ahead = tokio::spawn(svc.clone().oneshot(put()));
    tokio::task::yield_now().await;
    let next = tokio::spawn(svc.oneshot(put()));
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ahead.abort();
    assert!(ahead.await.unwrap_err().is_cancelled());
    assert_eq!(next.await.unwrap().unwrap().status(), http::StatusCode::OK);
    assert_eq!(tokio::time::Instant::now() - t0, Duration::from_secs(1));
    assert_eq!(*calls.lock().unwrap(), 2);
    assert_eq!(board.stats().waited(), 1);
}

/// A write's 200 whose body does not announce its length (it streams) is
/// handed back as it came, unread: the board does not learn the session,
/// and the write queued behind goes as it came.
#[tokio::test(start_paused = true)]
async fn an_answer_of_unannounced_length_is_not_read_for_the_board() {
    use http_body_util::{combinators::BoxBody, StreamBody};

    let sent = Arc::new(Mutex::new(Vec::new()));
    let mpsd = service_fn({
        let sent = sent.clone();
        move |req: Request<Full<Bytes>>| {
            sent.lock()
                .unwrap()
                .push(req.headers()[header::IF_MATCH].clone());
            async move {
                let frames = futures_util::stream::iter([Ok::<_, BoxError>(
                    http_body::Frame::data(Bytes::from("{\"v\":2}")),
                )]);
                let res = Response::builder()
                    .header(header::ETAG, "\"2\"")
                    .body(BoxBody::new(StreamBody::new(frames)))?;
                Ok::<_, BoxError>(res)
            }
        }
    });
    let board = crate::sequence::SessionBoard::new();
    let svc = RebaseLayer::new(super::policy::ResendDelta)
        .sequence(board.clone())
        .layer(mpsd);
    let (a, b) = tokio::join!(svc.clone().oneshot(put()), svc.oneshot(put()));
    let body = a.unwrap().into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "{\"v\":2}");
    assert_eq!(b.unwrap().status(), http::StatusCode::OK);
    assert_eq!(*sent.lock().unwrap(), ["\"e1\"", "\"e1\""]);
    assert_eq!(board.stats().rebased_before_sending(), 0);
}

/// A write waiting for its turn in its session's queue holds no
/// readiness below. Two clients share one board, each over the one permit
/// of its own `ConcurrencyLimit`: u's write through the first holds the
/// session's turn for 5 s; u's next write to it, through the second,
/// waits for that turn; v's write to another session, through the second
/// meanwhile, goes at once.
#[tokio::test(start_paused = true)]
async fn a_write_waiting_for_its_turn_holds_no_readiness_below() {
    use tokio::time::Instant;
    use tower::limit::ConcurrencyLimitLayer;

    use crate::ready::test_support::{at, request, upstream, when};
    use crate::sequence::SessionBoard;

    let t0 = Instant::now();
    let (svc, log) = upstream(t0);
    let board = SessionBoard::new();
    let client = || {
        ServiceBuilder::new()
            .layer(RebaseLayer::new(super::policy::ResendDelta).sequence(board.clone()))
            .layer(ConcurrencyLimitLayer::new(1))
            .service(svc.clone())
    };
    let (first, second) = (client(), client());
    let write = |session: &str, user, delay_ms| {
        let path = format!("/serviceconfigs/c/sessionTemplates/t/sessions/{session}");
        let mut req = request("PUT", &path, user, delay_ms);
        let etag = HeaderValue::from_static("\"e1\"");
        req.headers_mut().insert(header::IF_MATCH, etag);
        req
    };
    let holding = tokio::spawn(first.oneshot(write("s", "u", 5000)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queued = tokio::spawn(second.clone().oneshot(write("s", "u", 0)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    second.oneshot(write("r", "v", 0)).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(2), "v waited");
    holding.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
    assert_eq!(when(&log), at(&[(0, "u"), (2, "v"), (5, "u")]));
    assert_eq!(board.stats().waited(), 1);
}

/// A body whose one chunk comes at `at`, as does every clone's.
struct SlowBody {
    at: tokio::time::Instant,
    data: Option<Bytes>,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl Clone for SlowBody {
    fn clone(&self) -> Self {
        Self {
            at: self.at,
            data: self.data.clone(),
            sleep: None,
        }
    }
}

impl From<Bytes> for SlowBody {
    fn from(data: Bytes) -> Self {
        Self {
            at: tokio::time::Instant::now(),
            data: Some(data),
            sleep: None,
        }
    }
}

impl http_body::Body for SlowBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let at = self.at;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        std::task::ready!(std::future::Future::poll(sleep.as_mut(), cx));
        std::task::Poll::Ready(self.data.take().map(|d| Ok(http_body::Frame::data(d))))
    }
}

/// A write whose body is slow to come (the layer reads a copy to keep it)
/// holds no readiness below meanwhile: u's write waits 5 s for its body;
/// v's, sent through the one permit of a `ConcurrencyLimit` below, goes
/// at once.
#[tokio::test(start_paused = true)]
async fn a_write_with_a_slow_body_holds_no_readiness_below() {
    use tokio::time::Instant;
    use tower::limit::ConcurrencyLimitLayer;

    use crate::ready::test_support::{at, upstream, when};

    let t0 = Instant::now();
    let (svc, log) = upstream::<SlowBody>(t0);
    let client = ServiceBuilder::new()
        .layer(RebaseLayer::new(super::policy::ResendDelta))
        .layer(ConcurrencyLimitLayer::new(1))
        .service(svc);
    let write = |user: &str, after| {
        let mut body = SlowBody::from(Bytes::from_static(b"{}"));
        body.at += after;
        Request::put(URI)
            .header(header::AUTHORIZATION, format!("XBL3.0 x={user};token"))
            .header(header::IF_MATCH, "\"e1\"")
            .body(body)
            .unwrap()
    };
    let slow = tokio::spawn(client.clone().oneshot(write("u", Duration::from_secs(5))));
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.oneshot(write("v", Duration::ZERO)).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(1), "v waited");
    slow.await.unwrap().unwrap();
    assert_eq!(when(&log), at(&[(1, "v"), (5, "u")]));
}
