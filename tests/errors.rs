//! The errors a caller gets from the stack, over real TCP against the
//! simulator on paused time: a request that can never succeed (a caller's
//! mistake, a client that cannot send it) is refused or handed back at
//! once; a connection never established is retried whatever the method;
//! and an error that ends a request carries the attempt history, with why
//! the layers stopped.

mod common;

use std::error::Error as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mpsd_sim::Fault;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_mpsd::logical::{AttemptHistory, GaveUp, Purpose};
use tower_mpsd::retry::{InvalidUri, RequestFailed, RetryLayer};
use tower_mpsd::rules::backoff::Cause;
use tower_mpsd::{BoxError, MpsdLayer, ServiceBuilderExt};

use common::{auth, http_client, https_client, https_sim, quiet_sim, request, SCID};

/// Every error in `error`'s source chain, outermost first.
fn chain(error: &BoxError) -> Vec<String> {
    let mut shown = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&**error);
    while let Some(e) = next {
        shown.push(e.to_string());
        next = e.source();
    }
    shown
}

#[tokio::test(start_paused = true)]
async fn a_uri_without_an_authority_is_refused_at_once_and_nothing_is_sent() {
    let sim = quiet_sim().await;
    let client = ServiceBuilder::new().mpsd().service(http_client());
    let path = format!("/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/s1");
    let t0 = Instant::now();
    let err = client
        .clone()
        .oneshot(request(Method::GET, &path).build())
        .await
        .unwrap_err();
    println!("relative URI: {err} (after {:?})", t0.elapsed());
    let invalid = err.downcast_ref::<InvalidUri>().expect("InvalidUri");
    assert_eq!(invalid.uri().path(), path);
    assert_eq!(t0.elapsed(), Duration::ZERO, "refused at once, not retried");
    assert!(sim.log().is_empty(), "nothing reached the server");

    // With an authority but no scheme: the same.
    let authority_only = sim.base_uri().replace("http://", "");
    let err = client
        .oneshot(request(Method::GET, authority_only).build())
        .await
        .unwrap_err();
    assert!(err.is::<InvalidUri>(), "{err}");
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(sim.log().is_empty());
}

/// A body that sends its first half, then fails: the caller's mistake,
/// which hyper reports as a user error.
#[derive(Clone)]
struct FailingBody {
    sent: bool,
}

impl Body for FailingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if std::mem::replace(&mut self.sent, true) {
            Poll::Ready(Some(Err("the caller's body source broke".into())))
        } else {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{\"type\":")))))
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(16)
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_that_fails_is_the_callers_mistake_and_is_not_retried() {
    let sim = quiet_sim().await;
    // A handle query is a read: this caller retries POSTs after transient
    // failures, so only the kind of failure keeps this one from a retry.
    let retry = RetryLayer::new().safe_to_repeat(|m| m == Method::GET || m == Method::POST);
    let client = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().retry(retry))
        .service(Client::builder(TokioExecutor::new()).build_http::<FailingBody>());
    let req = Request::post(format!(
        "{}/handles/query?include=relatedInfo",
        sim.base_uri()
    ))
    .header("x-xbl-contract-version", "107")
    .header("authorization", auth("alice"))
    .header("content-type", "application/json")
    .body(FailingBody { sent: false })
    .unwrap();
    let t0 = Instant::now();
    let err = client.oneshot(req).await.unwrap_err();
    let shown = chain(&err);
    println!("failing body: {shown:?} after {:?}", t0.elapsed());
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "handed back at once, no backoff"
    );
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&*err);
    let mut hyper_error = None;
    while let Some(e) = next {
        hyper_error = hyper_error.or(e.downcast_ref::<hyper::Error>());
        next = e.source();
    }
    let hyper_error = hyper_error.expect("a hyper::Error in the chain");
    assert!(hyper_error.is_user(), "{hyper_error:?}");
    let failed = err.downcast_ref::<RequestFailed>().expect("RequestFailed");
    let purposes: Vec<_> = failed
        .history()
        .attempts()
        .iter()
        .map(|a| a.purpose)
        .collect();
    assert_eq!(purposes, [Purpose::First], "sent once");
    assert_eq!(failed.history().gave_up, Some(GaveUp::CannotSucceed));
    assert!(
        shown
            .last()
            .unwrap()
            .contains("the caller's body source broke"),
        "{shown:?}"
    );
    // The simulator logs what it answers; it never had the whole request.
    assert_eq!(sim.log().len(), 0, "{:?}", sim.log());
}

#[tokio::test(start_paused = true)]
async fn a_get_reset_until_the_attempts_run_out_carries_its_history() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "reset2");
    sim.script(Fault::status(StatusCode::OK).reset().times(2));
    let client = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().max_attempts(2))
        .service(http_client());
    let t0 = Instant::now();
    let err = client
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap_err();
    let shown = chain(&err);
    println!("reset twice: {shown:?} after {:?}", t0.elapsed());

    let failed = err.downcast_ref::<RequestFailed>().expect("RequestFailed");
    let history = failed.history();
    let sent: Vec<_> = history
        .attempts()
        .iter()
        .map(|a| (a.purpose, a.outcome))
        .collect();
    assert_eq!(
        sent,
        [
            (Purpose::First, None),
            (Purpose::Retry(Cause::Transient), None)
        ]
    );
    assert_eq!(history.gave_up, Some(GaveUp::MaxAttempts));
    assert_eq!(
        failed.to_string(),
        format!(
            "mpsd request failed after 2 attempts: {}",
            shown.last().unwrap()
        ),
        "one line, ending with the root cause"
    );
    // The history's times are the server's: both sends reached it, then.
    let log = sim.log();
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|e| e.broken));
    let arrived: Vec<_> = log.iter().map(|e| e.at - t0).collect();
    let sent_after: Vec<_> = history.attempts().iter().map(|a| a.sent_after).collect();
    assert_eq!(arrived, sent_after);
    assert_eq!(history.total, t0.elapsed());
    assert_eq!(history.attempts()[1].waited, arrived[1] - arrived[0]);
    println!("sends at {arrived:?}, over at {:?}", history.total);

    // The inner error is the source, and owned through `into_parts`.
    let source = failed.source().expect("the inner error");
    assert!(
        source.is::<hyper_util::client::legacy::Error>(),
        "{source:?}"
    );
    let failed = *err.downcast::<RequestFailed>().unwrap();
    let (source, history) = failed.into_parts();
    assert!(source.is::<hyper_util::client::legacy::Error>());
    assert_eq!(history.attempts().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_scheme_other_than_http_or_https_is_refused_at_once_and_nothing_is_sent() {
    let sim = quiet_sim().await;
    let client = ServiceBuilder::new().mpsd().service(http_client());
    let typo = sim.base_uri().replace("http://", "htp://") + "/handles/h1";
    let t0 = Instant::now();
    let err = client
        .oneshot(request(Method::GET, typo).build())
        .await
        .unwrap_err();
    println!("htp:// scheme: {err} (after {:?})", t0.elapsed());
    let invalid = err.downcast_ref::<InvalidUri>().expect("InvalidUri");
    assert_eq!(invalid.uri().scheme_str(), Some("htp"));
    assert_eq!(
        err.to_string(),
        "request URI \"/handles/h1\" has scheme \"htp\": only http and https can be sent"
    );
    assert_eq!(t0.elapsed(), Duration::ZERO, "refused at once, not retried");
    assert!(sim.log().is_empty(), "nothing reached the server");
}

/// The attempts of a request that ended in an error, and why it stopped.
fn failed_with(err: &BoxError) -> (&AttemptHistory, Vec<Purpose>) {
    let failed = err
        .downcast_ref::<RequestFailed>()
        .unwrap_or_else(|| panic!("RequestFailed, not {err:?}"));
    let history = failed.history();
    assert!(
        history.attempts().iter().all(|a| a.outcome.is_none()),
        "{history:?}"
    );
    let purposes = history.attempts().iter().map(|a| a.purpose).collect();
    (history, purposes)
}

#[tokio::test(start_paused = true)]
async fn an_https_only_client_given_http_fails_at_once_with_the_connectors_reason() {
    // Tried as a new user would: the HTTPS client of the docs, pointed at
    // a plain-HTTP address. Its connector refuses the scheme itself.
    let sim = https_sim().await;
    let client = ServiceBuilder::new()
        .mpsd()
        .service(https_client(&sim, false));
    let plain = sim.base_uri().replace("https://", "http://") + "/handles/h1";
    let t0 = Instant::now();
    let err = client
        .oneshot(request(Method::GET, plain).build())
        .await
        .unwrap_err();
    println!("https-only given http: {err} (after {:?})", t0.elapsed());
    assert_eq!(
        err.to_string(),
        "mpsd request failed after 1 attempt: unsupported scheme http"
    );
    let (history, purposes) = failed_with(&err);
    assert_eq!(purposes, [Purpose::First], "sent once, no retry");
    assert_eq!(history.gave_up, Some(GaveUp::CannotSucceed));
    assert_eq!(t0.elapsed(), Duration::ZERO, "no backoff");
    assert!(sim.log().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_http_client_given_https_or_a_version_it_cannot_speak_fails_at_once() {
    let sim = quiet_sim().await;
    let client = ServiceBuilder::new().mpsd().service(http_client());
    let t0 = Instant::now();

    // hyper-util's HttpConnector serves http:// only, by default.
    let tls = sim.base_uri().replace("http://", "https://") + "/handles/h1";
    let err = client
        .clone()
        .oneshot(request(Method::GET, tls).build())
        .await
        .unwrap_err();
    println!("http client given https: {err}");
    assert_eq!(
        err.to_string(),
        "mpsd request failed after 1 attempt: invalid URL, scheme is not http"
    );
    let (history, purposes) = failed_with(&err);
    assert_eq!(purposes, [Purpose::First]);
    assert_eq!(history.gave_up, Some(GaveUp::CannotSucceed));

    // An HTTP version the client does not speak: its `User…` error kind.
    let mut ancient = request(Method::GET, sim.base_uri() + "/handles/h1").build();
    *ancient.version_mut() = http::Version::HTTP_09;
    let err = client.oneshot(ancient).await.unwrap_err();
    println!("HTTP/0.9: {err}");
    let (history, purposes) = failed_with(&err);
    assert_eq!(purposes, [Purpose::First]);
    assert_eq!(history.gave_up, Some(GaveUp::CannotSucceed));
    assert!(err.to_string().contains("UserUnsupportedVersion"), "{err}");

    assert_eq!(t0.elapsed(), Duration::ZERO, "no backoff");
    assert!(sim.log().is_empty());
}

/// An address on loopback where nothing listens: a port the OS gave out
/// and took back.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// Checks a request refused by a closed port at every attempt: each
/// retry is marked as a connection never made, waited the backoff of a
/// transient failure (between `2ⁿ⁻¹` and `2ⁿ` s before attempt `n + 1`),
/// and the error names the refusal in one line, never the token.
fn check_never_connected(err: &BoxError, attempts: usize, elapsed: Duration) {
    let (history, purposes) = failed_with(err);
    let mut expected = vec![Purpose::First];
    expected.resize(attempts, Purpose::Retry(Cause::NotConnected));
    assert_eq!(purposes, expected);
    assert_eq!(history.gave_up, Some(GaveUp::MaxAttempts));
    assert_eq!(history.total, elapsed);
    let s = Duration::from_secs;
    for (n, attempt) in history.attempts().iter().enumerate().skip(1) {
        let (least, most) = (s(1 << (n - 1)), s(1 << n));
        // tokio's timers round a wait up to the next millisecond.
        let waited = attempt.waited;
        assert!(
            least <= waited && waited <= most + Duration::from_millis(1),
            "attempt {n}: {waited:?}"
        );
    }
    let last = history.attempts().last().unwrap();
    assert_eq!(last.sent_after, elapsed, "the last refusal came at once");

    let root = chain(err).pop().unwrap();
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&**err);
    let mut kinds = Vec::new();
    while let Some(e) = next {
        kinds.extend(e.downcast_ref::<std::io::Error>().map(|io| io.kind()));
        next = e.source();
    }
    assert_eq!(kinds, [refused.kind()], "the OS's refusal, at the root");
    assert_eq!(
        err.to_string(),
        format!("mpsd request failed after {attempts} attempts: {root}")
    );
    let debug = format!("{err:?}");
    for shown in [err.to_string(), debug] {
        assert!(!shown.contains("token-of-alice"), "{shown}");
        assert!(!shown.contains("authorization"), "{shown}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_get_to_a_closed_port_is_retried_as_never_connected_and_says_so() {
    let client = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().max_attempts(3))
        .service(http_client());
    let uri = format!("{}/handles/h1", closed_port());
    let t0 = Instant::now();
    let err = client
        .oneshot(request(Method::GET, uri).build())
        .await
        .unwrap_err();
    let (history, _) = failed_with(&err);
    let at: Vec<_> = history.attempts().iter().map(|a| a.sent_after).collect();
    println!(
        "closed port GET: {err} (sent at {at:?}, over at {:?})",
        t0.elapsed()
    );
    check_never_connected(&err, 3, t0.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_put_to_a_closed_port_is_retried_too_since_nothing_was_sent() {
    let client = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().max_attempts(3))
        .service(http_client());
    let uri = format!(
        "{}/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/s1",
        closed_port()
    );
    let t0 = Instant::now();
    let put = request(Method::PUT, uri).json(serde_json::json!({"members": {"me": {}}}));
    let err = client.oneshot(put.build()).await.unwrap_err();
    let (history, _) = failed_with(&err);
    let at: Vec<_> = history.attempts().iter().map(|a| a.sent_after).collect();
    println!(
        "closed port PUT: {err} (sent at {at:?}, over at {:?})",
        t0.elapsed()
    );
    check_never_connected(&err, 3, t0.elapsed());
    assert!(!format!("{err:?}").contains("members"), "no body shown");
}

#[tokio::test(start_paused = true)]
async fn the_default_stack_bounds_a_closed_port_by_its_deadline_and_attempts() {
    // As a new user meets it: the defaults (20 s, 5 attempts). The count
    // depends on the jitter: the waits before attempts 2 to 5 take
    // 15 to 30 s in all, so the fifth goes only when they fit in 20 s.
    let client = ServiceBuilder::new().mpsd().service(http_client());
    let uri = format!("{}/handles/h1", closed_port());
    let t0 = Instant::now();
    let err = client
        .oneshot(request(Method::GET, uri).build())
        .await
        .unwrap_err();
    let (history, purposes) = failed_with(&err);
    println!(
        "closed port GET, defaults: {err} ({} attempts, gave up {:?}, over at {:?})",
        purposes.len(),
        history.gave_up,
        t0.elapsed()
    );
    assert!(
        t0.elapsed() <= Duration::from_secs(20),
        "within the deadline"
    );
    match history.gave_up {
        Some(GaveUp::MaxAttempts) => assert_eq!(purposes.len(), 5),
        Some(GaveUp::Deadline { wait }) => {
            assert_eq!(purposes.len(), 4);
            assert!(t0.elapsed() + wait > Duration::from_secs(20), "{wait:?}");
        }
        other => panic!("gave up {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_put_cut_off_after_it_was_sent_is_not_repeated_and_says_why() {
    let sim = quiet_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "cut");
    sim.script(Fault::status(StatusCode::OK).reset().times(1));
    let client = ServiceBuilder::new().mpsd().service(http_client());
    let t0 = Instant::now();
    let put = request(Method::PUT, &uri).json(serde_json::json!({"members": {"me": {}}}));
    let err = client.oneshot(put.build()).await.unwrap_err();
    println!("PUT reset: {err} (after {:?})", t0.elapsed());
    let (history, purposes) = failed_with(&err);
    assert_eq!(purposes, [Purpose::First], "it may have been applied");
    assert_eq!(history.gave_up, Some(GaveUp::NotSafeToRepeat));
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(sim.log().len(), 1, "it reached the server");
}

#[tokio::test(start_paused = true)]
async fn what_happened_is_kept_after_reading_the_answer() {
    use tower_mpsd::response::read_response;

    let sim = quiet_sim().await;
    let client = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().max_attempts(2))
        .service(http_client());
    let uri = sim.base_uri() + "/handles/h1";
    let t0 = Instant::now();

    // One 503, then the answer: no handle h1, a 404.
    sim.script(common::overloaded("2").times(1));
    let res = client
        .clone()
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    let read = read_response(res, 1 << 16).await;
    // Read as an error that keeps its history.
    let err = read.unwrap_err();
    let history = err.history().expect("the history, after reading");
    let purposes: Vec<_> = history.attempts().iter().map(|a| a.purpose).collect();
    assert_eq!(
        purposes,
        [Purpose::First, Purpose::Retry(Cause::Overloaded)]
    );
    assert!(history.attempts()[1].waited >= Duration::from_secs(2));
    assert_eq!(history.total, t0.elapsed());
    assert_eq!(history.gave_up, None, "a 404 is an answer, not giving up");
    println!("404 after a 503: {err}; {:?}", history.attempts());

    // 503 twice: the attempts run out, and the read error says why.
    let t1 = Instant::now();
    sim.script(common::overloaded("1").times(2));
    let res = client
        .clone()
        .oneshot(request(Method::GET, &uri).build())
        .await
        .unwrap();
    let err = read_response(res, 1 << 16).await.unwrap_err();
    let history = err.history().expect("the history, after reading");
    assert_eq!(history.attempts().len(), 2);
    assert_eq!(history.gave_up, Some(GaveUp::MaxAttempts));
    assert_eq!(history.total, t1.elapsed());

    // A success at once: one attempt, nothing given up.
    let session = sim.session_uri(SCID, "LobbySession", "read");
    common::create(&session, "alice", serde_json::json!({})).await;
    let res = client
        .oneshot(request(Method::GET, &session).build())
        .await
        .unwrap();
    let ok = read_response(res, 1 << 16).await.unwrap();
    let history = ok.history.expect("the history, after reading");
    assert_eq!(history.attempts().len(), 1);
    assert_eq!(history.gave_up, None);
}

/// A TLS front end that drops every connection during the handshake (a
/// restart, a load balancer shedding): nothing of the request was sent,
/// so even a write is sent again, and the history says why.
#[tokio::test(start_paused = true)]
async fn a_handshake_cut_off_is_a_connection_never_made_even_for_a_put() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut hello = [0u8; 16];
            let _ = socket.read(&mut hello).await; // the ClientHello begins
        }
    });
    let client = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().max_attempts(3))
        .service(webpki_client());
    let uri = format!(
        "https://127.0.0.1:{port}/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/s1"
    );
    let put = request(Method::PUT, uri).json(serde_json::json!({"members": {"me": {}}}));
    let err = client.oneshot(put.build()).await.unwrap_err();
    let (history, purposes) = failed_with(&err);
    println!("handshake cut off, PUT: {err}");
    assert_eq!(
        purposes,
        [
            Purpose::First,
            Purpose::Retry(Cause::NotConnected),
            Purpose::Retry(Cause::NotConnected)
        ]
    );
    assert_eq!(history.gave_up, Some(GaveUp::MaxAttempts));
}

/// A certificate the client does not trust will not become trusted by
/// asking again: handed back after one attempt, with the handshake's
/// reason.
#[tokio::test(start_paused = true)]
async fn a_certificate_refused_fails_at_once() {
    let sim = https_sim().await;
    let client = ServiceBuilder::new().mpsd().service(webpki_client());
    let t0 = Instant::now();
    let err = client
        .oneshot(request(Method::GET, sim.base_uri() + "/handles/h1").build())
        .await
        .unwrap_err();
    println!("untrusted certificate: {err}");
    let (history, purposes) = failed_with(&err);
    assert_eq!(purposes, [Purpose::First]);
    assert_eq!(history.gave_up, Some(GaveUp::CannotSucceed));
    assert_eq!(t0.elapsed(), Duration::ZERO, "no backoff");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert!(sim.log().is_empty());
}

/// The docs' production client: HTTPS trusting webpki's roots only.
fn webpki_client() -> Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_only()
        .enable_all_versions()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}
