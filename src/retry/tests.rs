//! Unit tests of the retry layer's cooldown admission against a mocked
//! service on paused time: which request goes when, and what each gets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{AttemptHistory, GaveUp, RetryLayer};
use crate::logical::LogicalLayer;
use crate::BoxError;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;
use tower::{service_fn, ServiceBuilder, ServiceExt};

type Log = Arc<Mutex<Vec<(Duration, String, u16)>>>;

/// Answers from `script` (status, retry-after, delay) in order, then 200.
fn server(
    t0: Instant,
    script: Vec<(u16, Option<&'static str>, u64)>,
) -> (
    impl tower::Service<
            Request<Full<Bytes>>,
            Response = Response<Full<Bytes>>,
            Error = BoxError,
            Future = impl Send,
        > + Clone,
    Log,
) {
    let script = Arc::new(Mutex::new(script.into_iter().rev().collect::<Vec<_>>()));
    let log: Log = Arc::default();
    let l = log.clone();
    let svc = service_fn(move |req: Request<Full<Bytes>>| {
        let (status, ra, delay) = script.lock().unwrap().pop().unwrap_or((200, None, 0));
        let user = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let l = l.clone();
        async move {
            l.lock().unwrap().push((t0.elapsed(), user, status));
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let mut b = Response::builder().status(status);
            if let Some(ra) = ra {
                b = b.header("retry-after", ra);
            }
            Ok::<_, BoxError>(b.body(Full::default()).unwrap())
        }
    });
    (svc, log)
}

fn get(user: &str) -> Request<Full<Bytes>> {
    Request::get("http://mpsd.test/serviceconfigs/c/sessionTemplates/t/sessions/s")
        .header("authorization", format!("XBL3.0 x={user};tok"))
        .body(Full::default())
        .unwrap()
}

/// A request that would be the authority's 503 probe, but must wait on its
/// own user's 429 cooldown, lets the probe role go meanwhile.
#[tokio::test(start_paused = true)]
async fn a_request_waiting_on_one_gate_holds_no_probe_of_another() {
    let t0 = Instant::now();
    let (svc, log) = server(t0, vec![(429, Some("10"), 0), (503, Some("1"), 0)]);
    let client = ServiceBuilder::new()
        .layer(LogicalLayer::new(Duration::from_secs(20), 1))
        .layer(RetryLayer::new())
        .service(svc);
    // u gets a 429 (u's gate until 10 s), v a 503 (authority gate until 1 s).
    let _ = client.clone().oneshot(get("u")).await.unwrap();
    let _ = client.clone().oneshot(get("v")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // u's next request becomes the authority probe, then waits for u's gate.
    let c = tokio::spawn(client.clone().oneshot(get("u")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // v's request has no reason to wait: the authority cooldown is over.
    let d = client.clone().oneshot(get("v")).await.unwrap();
    assert_eq!(d.status(), StatusCode::OK);
    let _ = c.await;
    let log = log.lock().unwrap().clone();
    println!("{log:?}");
    let v_at = log.iter().filter(|e| e.1.contains("x=v")).nth(1).unwrap().0;
    assert!(
        v_at < Duration::from_secs(3),
        "v's request reached the server at {v_at:?}"
    );
}

/// throttled() above overloaded(), as the docs suggest: a GET that keeps
/// getting 500 is not reported as given up as not safe to repeat.
#[tokio::test(start_paused = true)]
async fn stacked_layers_do_not_call_a_get_unsafe() {
    let t0 = Instant::now();
    let (svc, _log) = server(t0, vec![(500, None, 0); 10]);
    let client = ServiceBuilder::new()
        .layer(RetryLayer::throttled())
        .layer(RetryLayer::overloaded())
        .service(svc);
    let res = client.oneshot(get("u")).await.unwrap();
    let h = AttemptHistory::of(&res).unwrap();
    println!("{h:?}");
    assert_ne!(h.gave_up, Some(GaveUp::NotSafeToRepeat), "a GET is safe");
}

#[tokio::test(start_paused = true)]
async fn a_layer_not_retrying_500_does_not_call_a_get_unsafe() {
    let t0 = Instant::now();
    let (svc, _log) = server(t0, vec![(500, None, 0)]);
    let client = ServiceBuilder::new()
        .layer(RetryLayer::throttled())
        .service(svc);
    let res = client.oneshot(get("u")).await.unwrap();
    let h = AttemptHistory::of(&res).unwrap();
    println!("{h:?}");
    assert_ne!(h.gave_up, Some(GaveUp::NotSafeToRepeat), "a GET is safe");
}

/// A request that got a 503 and planned a retry meets a cooldown another
/// request extended past its deadline: it gets its 503 back.
#[tokio::test(start_paused = true)]
async fn a_cooldown_after_a_planned_retry_hands_back_the_last_response() {
    let t0 = Instant::now();
    let (svc, log) = server(t0, vec![(503, Some("2"), 0), (503, Some("30"), 500)]);
    let client = ServiceBuilder::new().layer(RetryLayer::new()).service(svc);
    let a = client.clone().oneshot(get("u"));
    let b = client.clone().oneshot(get("v"));
    let (a, b) = tokio::join!(a, b);
    println!("log {:?}", log.lock().unwrap());
    assert_eq!(b.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    let a = a.expect("the 503 A got, not an error");
    assert_eq!(a.status(), StatusCode::SERVICE_UNAVAILABLE);
    let history = AttemptHistory::of(&a).unwrap();
    assert!(
        matches!(history.gave_up, Some(GaveUp::CoolingDown { .. })),
        "{history:?}"
    );
    assert_eq!(
        history.attempts().len(),
        1,
        "no send was counted that never went"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_of_duration_max_is_no_deadline() {
    let t0 = Instant::now();
    let (svc, _log) = server(t0, vec![]);
    let client = ServiceBuilder::new()
        .layer(LogicalLayer::new(Duration::MAX, 5))
        .layer(RetryLayer::new())
        .service(svc);
    let res = tokio::spawn(client.oneshot(get("u"))).await;
    assert!(res.is_ok(), "panicked: {:?}", res.err());
}

/// A request waiting out its cooldown lets go of the readiness it was
/// given (here a concurrency permit), so another user's request goes.
#[tokio::test(start_paused = true)]
async fn a_request_waiting_on_a_cooldown_holds_no_readiness_below() {
    use tower::limit::ConcurrencyLimitLayer;
    let t0 = Instant::now();
    let (svc, log) = server(t0, vec![(429, Some("10"), 0)]);
    let client = ServiceBuilder::new()
        .layer(LogicalLayer::new(Duration::from_secs(20), 1))
        .layer(RetryLayer::new())
        .layer(ConcurrencyLimitLayer::new(1))
        .service(svc);
    // u is throttled for 10 s; u's next request waits that out.
    let _ = client.clone().oneshot(get("u")).await.unwrap();
    let waiting = tokio::spawn(client.clone().oneshot(get("u")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let v = client.clone().oneshot(get("v")).await.unwrap();
    assert_eq!(v.status(), StatusCode::OK);
    let v_at = log
        .lock()
        .unwrap()
        .iter()
        .find(|e| e.1.contains("x=v"))
        .unwrap()
        .0;
    assert_eq!(
        v_at,
        Duration::from_secs(1),
        "v did not wait for u's cooldown"
    );
    assert_eq!(waiting.await.unwrap().unwrap().status(), StatusCode::OK);
}

/// A retry whose service below never becomes ready (another request holds
/// the only concurrency permit) ends at the deadline with the last answer.
#[tokio::test(start_paused = true)]
async fn a_retry_waits_for_readiness_no_longer_than_the_deadline() {
    use tower::limit::ConcurrencyLimitLayer;
    let t0 = Instant::now();
    let (svc, log) = server(t0, vec![(429, Some("1"), 0), (200, None, 3_600_000)]);
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(ConcurrencyLimitLayer::new(1))
        .service(svc);
    let throttled = tokio::spawn(client.clone().oneshot(get("u")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // v's request takes the permit and hangs.
    let _hanging = tokio::spawn(client.clone().oneshot(get("v")));
    let res = throttled.await.unwrap().unwrap();
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the last answer"
    );
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(20),
        "at the deadline, not later"
    );
    let history = AttemptHistory::of(&res).unwrap();
    assert_eq!(
        history.attempts().len(),
        1,
        "the retry never went: {history:?}"
    );
    assert!(
        matches!(history.gave_up, Some(GaveUp::Deadline { .. })),
        "{history:?}"
    );
    assert_eq!(log.lock().unwrap().len(), 2);
}

/// With a shared store that never answers, cooldowns fall back to the
/// process's own: a 503's `Retry-After` still holds back the next request.
#[cfg(feature = "redis")]
#[tokio::test(start_paused = true)]
async fn with_redis_unreachable_the_processs_own_cooldown_holds() {
    let store = crate::fleet::RedisStore::open("redis://127.0.0.1:1/").unwrap();
    let cooldowns = super::Cooldowns::builder().redis(store.clone()).build();
    let t0 = Instant::now();
    let (svc, log) = server(t0, vec![(503, Some("2"), 0)]);
    let client = ServiceBuilder::new()
        .layer(LogicalLayer::new(Duration::from_secs(20), 1))
        .layer(RetryLayer::new().with_cooldowns(cooldowns))
        .service(svc);
    let first = client.clone().oneshot(get("u")).await.unwrap();
    assert_eq!(first.status(), 503, "one attempt: handed back");
    let went_at = log.lock().unwrap()[0].0;
    let second = client.clone().oneshot(get("v")).await.unwrap();
    assert_eq!(second.status(), 200);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].0 - went_at, Duration::from_secs(2), "{log:?}");
    assert!(!store.is_shared());
    assert_eq!(store.fallbacks(), 1, "one warning for the transition");
}

/// A request waiting for Redis's answer about its cooldowns lets go of the
/// readiness it was given, as for any other wait: here Redis accepts the
/// connection and never answers, and another request's service is ready
/// meanwhile.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_request_waiting_for_redis_holds_no_readiness_below() {
    use futures_util::FutureExt;
    use tower::limit::ConcurrencyLimitLayer;
    use tower::Service;

    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}/", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let store = crate::fleet::RedisStore::builder(url)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let cooldowns = super::Cooldowns::builder().redis(store).build();
    let (svc, _log) = server(Instant::now(), vec![]);
    let client = ServiceBuilder::new()
        .layer(LogicalLayer::new(Duration::from_secs(60), 1))
        .layer(RetryLayer::new().with_cooldowns(cooldowns))
        .layer(ConcurrencyLimitLayer::new(1))
        .service(svc);

    let mut alice = client.clone();
    alice.ready().await.unwrap();
    let mut waiting = Box::pin(alice.call(get("alice")));
    for _ in 0..20 {
        assert!((&mut waiting).now_or_never().is_none(), "Redis answered");
        tokio::task::yield_now().await;
    }
    let mut bob = client.clone();
    assert!(
        bob.ready().now_or_never().is_some(),
        "alice's request holds the only permit while it waits for Redis"
    );
    assert!(waiting.now_or_never().is_none(), "still waiting for Redis");
}

/// A future first polled well after its call, and answered 503 in that
/// poll: the cooldown runs its `Retry-After` from the answer, not from
/// the call (whose clock reading the first poll otherwise shares).
#[tokio::test(start_paused = true)]
async fn a_cooldown_counts_from_the_answer_when_the_first_poll_comes_late() {
    use tower::Service;

    let t0 = Instant::now();
    let (svc, log) = server(t0, vec![(503, Some("5"), 0)]);
    let limits = LogicalLayer::new(Duration::from_secs(1), 1);
    let mut client = ServiceBuilder::new()
        .layer(RetryLayer::new().making_context(limits, true))
        .service(svc);
    let late = client.ready().await.unwrap().call(get("u"));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        late.await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // 3 s after the answer the authority's cooldown holds 2 s more, past
    // this request's deadline: refused at once, nothing sent.
    tokio::time::advance(Duration::from_secs(3)).await;
    let refused = client.ready().await.unwrap().call(get("v")).await;
    assert!(refused.is_err(), "sent during the cooldown: {refused:?}");
    assert_eq!(log.lock().unwrap().len(), 1);
}
