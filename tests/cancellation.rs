//! The cancellation matrix: the caller drops its future at each await point
//! of each layer of the whole stack (`ReplayLayer` over `MpsdLayer` with a
//! rebase policy, revalidation and pacing), over a mocked MPSD on paused
//! time. After each drop, the next request goes through at the virtual
//! time it should (a probe role, a gate or a slot left behind would hold it
//! back), and the counters add up. The layers spawn no task of their own;
//! the runtime's task count is checked to stay so.
//!
//! A mock, not the simulator, so that the runtime's task count is the
//! layers' alone (the simulator and hyper's pool spawn tasks of their own);
//! `tests/stack.rs` drops callers over real TCP.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use http::{header, Method, Request, Response};
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use serde_json::json;
use tokio::time::Instant;
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
use tower_mpsd::pace::{Limits, PaceLayer, PaceTable, Window};
use tower_mpsd::rebase::policy::ResendDelta;
use tower_mpsd::rebase::RebaseLayer;
use tower_mpsd::replay::ReplayBody;
use tower_mpsd::retry::{RetryLayer, RetryStats};
use tower_mpsd::revalidate::RevalidateLayer;
use tower_mpsd::{MpsdLayer, ServiceBuilderExt};

type Body = StreamBody<BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

const SESSION: &str = "http://mpsd.test/serviceconfigs/c/sessionTemplates/t/sessions/s";

/// One scripted answer: status, `Retry-After`, how long it takes.
#[derive(Clone, Copy)]
struct Answer(u16, Option<&'static str>, u64);

/// A mocked MPSD answering from a script, then 200 with a session.
#[derive(Clone, Default)]
struct Mock {
    script: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<(Duration, Method)>>>,
}

impl Mock {
    fn service(
        &self,
        t0: Instant,
    ) -> impl Service<
        Request<ReplayBody<Body>>,
        Response = Response<Full<Bytes>>,
        Error = BoxError,
        Future = impl Send,
    > + Clone {
        let mock = self.clone();
        service_fn(move |req: Request<ReplayBody<Body>>| {
            let Answer(status, retry_after, millis) = mock
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Answer(200, None, 0));
            mock.seen
                .lock()
                .unwrap()
                .push((t0.elapsed(), req.method().clone()));
            async move {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                let mut res = Response::builder()
                    .status(status)
                    .header(header::ETAG, "\"e1\"")
                    .header(header::CONTENT_TYPE, "application/json");
                if let Some(after) = retry_after {
                    res = res.header(header::RETRY_AFTER, after);
                }
                let body = if status == 200 {
                    json!({"members": {}}).to_string()
                } else {
                    String::new()
                };
                Ok::<_, BoxError>(res.body(Full::from(body))?)
            }
        })
    }

    fn script(&self, answers: &[Answer]) {
        self.script.lock().unwrap().extend(answers.iter().copied());
    }

    fn sends(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn body(parts: &[&'static str], then_hang: bool) -> Body {
    let data =
        stream::iter(parts.to_vec()).map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))));
    let stream = if then_hang {
        data.chain(stream::pending()).boxed()
    } else {
        data.boxed()
    };
    StreamBody::new(stream)
}

fn get() -> Request<Body> {
    request(Method::GET, SESSION, &[], body(&[], false))
}

fn request(method: Method, uri: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, "XBL3.0 x=u;t");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(body).unwrap()
}

/// The whole stack over the mock, pacing with `pace`, and the retry
/// layer's counters.
fn stack(
    mock: &Mock,
    t0: Instant,
    pace: PaceLayer,
) -> (
    impl Service<Request<Body>, Response = impl Send, Error = BoxError, Future = impl Send + 'static>
        + Clone
        + Send
        + 'static,
    Arc<RetryStats>,
) {
    let retry = RetryLayer::new();
    let stats = retry.stats();
    let layers = MpsdLayer::new()
        .retry(retry)
        // Up to 19 s of pause before a rebased write: time to drop it there.
        .rebase(RebaseLayer::new(ResendDelta).spread(Duration::from_secs(19)))
        .revalidate(RevalidateLayer::new())
        .pace(pace);
    let client = ServiceBuilder::new()
        .mpsd_replay(1024)
        .mpsd_with(layers)
        .service(mock.service(t0));
    (client, stats)
}

/// Starts `req`, drops it after `after`, then checks that no task is left
/// and that a plain GET goes through; returns when that GET was sent.
async fn drop_after<S>(client: &S, req: Request<Body>, after: Duration) -> Duration
where
    S: Service<Request<Body>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send,
{
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let call = tokio::spawn(client.clone().oneshot(req));
    tokio::time::sleep(after).await;
    call.abort();
    assert!(matches!(call.await, Err(e) if e.is_cancelled()));
    tokio::task::yield_now().await;
    let left = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert_eq!(left, tasks, "a task was left running");
    let start = Instant::now();
    client
        .clone()
        .oneshot(get())
        .await
        .expect("the next request goes through");
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn dropped_while_buffering_the_body() {
    let (mock, t0) = (Mock::default(), Instant::now());
    let (client, _) = stack(&mock, t0, PaceLayer::new());
    let hanging = request(
        Method::PUT,
        SESSION,
        &[("if-match", "\"e0\"")],
        body(&["{"], true),
    );
    let waited = drop_after(&client, hanging, Duration::from_secs(1)).await;
    assert_eq!(mock.sends(), 1, "only the next GET was sent");
    assert_eq!(waited, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn dropped_while_waiting_for_a_pace_slot() {
    let (mock, t0) = (Mock::default(), Instant::now());
    // One request per 5 s, so that the second waits for its slot.
    let table = PaceTable::builder()
        .no_routes()
        .margin(Duration::ZERO)
        .limits(Limits::new(
            Window::new(1, Duration::from_secs(5)),
            Window::new(100, Duration::from_secs(300)),
        ))
        .build();
    let pace = PaceLayer::with_table(table);
    let (client, _) = stack(&mock, t0, pace);
    client.clone().oneshot(get()).await.unwrap();
    // A dropped waiter's slot stays taken (documented: releasing it could
    // undercount); the next request waits for the slot after it, at 10 s.
    let waited = drop_after(&client, get(), Duration::from_secs(1)).await;
    assert_eq!(mock.sends(), 2);
    assert_eq!(waited, Duration::from_secs(9));
}

#[tokio::test(start_paused = true)]
async fn dropped_while_sleeping_in_backoff() {
    let (mock, t0) = (Mock::default(), Instant::now());
    let (client, stats) = stack(&mock, t0, PaceLayer::new());
    mock.script(&[Answer(503, Some("5"), 0)]);
    let waited = drop_after(&client, get(), Duration::from_secs(1)).await;
    // The authority's cooldown still holds: the next GET waits it out and
    // goes as the probe.
    assert_eq!(waited, Duration::from_secs(4));
    assert_eq!(mock.sends(), 2);
    assert_eq!(
        stats.retries_overloaded(),
        0,
        "a retry is counted when it goes; this one never went"
    );
    assert_eq!(stats.give_ups(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropped_as_the_probe_in_flight() {
    let (mock, t0) = (Mock::default(), Instant::now());
    let (client, _) = stack(&mock, t0, PaceLayer::new());
    // A 503 closes the gate for 1 s; the retry after it is the probe, and
    // its answer hangs. The caller drops it at 5 s.
    mock.script(&[Answer(503, Some("1"), 0), Answer(200, None, 3_600_000)]);
    let waited = drop_after(&client, get(), Duration::from_secs(5)).await;
    // Had the probe role not passed on, the next GET would wait for a
    // probe that never answers, until its deadline.
    assert_eq!(waited, Duration::ZERO);
    assert_eq!(mock.sends(), 3);
}

#[tokio::test(start_paused = true)]
async fn dropped_during_a_reread() {
    let (mock, t0) = (Mock::default(), Instant::now());
    let (client, _) = stack(&mock, t0, PaceLayer::new());
    // A create-only write finds the session (412, no body); the re-read hangs.
    mock.script(&[Answer(412, None, 0), Answer(200, None, 3_600_000)]);
    let put = request(
        Method::PUT,
        SESSION,
        &[("if-none-match", "*")],
        body(&["{}"], false),
    );
    let waited = drop_after(&client, put, Duration::from_secs(10)).await;
    let seen: Vec<Method> = mock
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.1.clone())
        .collect();
    assert_eq!(
        seen,
        [Method::PUT, Method::GET, Method::GET],
        "no write after the drop"
    );
    assert_eq!(waited, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn dropped_in_the_pause_before_a_rebased_write() {
    let (mock, t0) = (Mock::default(), Instant::now());
    let (client, _) = stack(&mock, t0, PaceLayer::new());
    mock.script(&[Answer(412, None, 0)]);
    let put = request(
        Method::PUT,
        SESSION,
        &[("if-match", "\"e0\"")],
        body(&["{}"], false),
    );
    // 412 and the re-read at 0 s, then a pause in [0, 19 s) before the
    // rebased write; the caller drops it at 1 ms, in the pause but for a
    // 1 in 19,000 draw.
    let drop_at = Duration::from_millis(1);
    let waited = drop_after(&client, put, drop_at).await;
    assert_eq!(waited, Duration::ZERO);
    let seen = mock.seen.lock().unwrap().clone();
    assert_eq!(
        seen[..2].iter().map(|s| s.1.clone()).collect::<Vec<_>>(),
        [Method::PUT, Method::GET]
    );
    let late_writes = seen
        .iter()
        .filter(|(at, m)| *m == Method::PUT && *at > drop_at)
        .count();
    assert_eq!(late_writes, 0, "no write after the drop: {seen:?}");
}
