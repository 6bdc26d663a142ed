//! The errors a caller gets from the stack, over real TCP against the
//! simulator on paused time: a caller's mistake is refused or handed back
//! at once, and a transport error that ends a retried request carries the
//! attempt history.

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
use tower_mpsd::logical::{GaveUp, Purpose};
use tower_mpsd::retry::{InvalidUri, RequestFailed, RetryLayer};
use tower_mpsd::rules::backoff::Cause;
use tower_mpsd::{BoxError, MpsdLayer, ServiceBuilderExt};

use common::{auth, http_client, quiet_sim, request, SCID};

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
    assert_eq!(failed.to_string(), "mpsd request failed after 2 attempts");
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
