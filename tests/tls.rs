//! The stack over HTTPS, on HTTP/1.1 and HTTP/2, as MPSD is served: the
//! simulator with its self-signed certificate, a hyper-util client over
//! hyper-rustls trusting it, real TCP on loopback, paused time. The
//! `Retry-After` timings and the shared cooldown run over HTTPS too, in
//! `tests/retry.rs`, once per transport.

mod common;

// The demo brings its client module, which `common` includes too: the
// same code twice, for one test binary.
#[path = "../examples/demo.rs"]
#[allow(dead_code, unreachable_pub, clippy::duplicate_mod)]
mod demo;

use std::time::Duration;

use common::{https_client, https_sim, request, SCID};
use futures_util::future::join_all;
use http::{Method, Response, StatusCode, Version};
use hyper::body::Incoming;
use mpsd_sim::{Fault, GoAway, GoAwaySent, LogEntry, SimHandle, Simulator};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_mpsd::classify::ClassifyBody;
use tower_mpsd::error::RequestFailed;
use tower_mpsd::logical::{AttemptHistory, Purpose};
use tower_mpsd::pace::PaceLayer;
use tower_mpsd::rules::backoff::Cause;
use tower_mpsd::{BoxError, MpsdLayer, ServiceBuilderExt};

fn since(t0: Instant, log: &[LogEntry]) -> Vec<Duration> {
    log.iter().map(|e| e.at - t0).collect()
}

#[tokio::test(start_paused = true)]
async fn every_row_of_the_demo_over_https_on_http1_and_http2() {
    for h2 in [false, true] {
        let report = demo::run(h2).await.unwrap();
        assert_eq!(report.covered, demo::ROWS.len(), "h2={h2}: {report:?}");
        assert!(report.stack_ok, "h2={h2}: {report:?}");
        assert_eq!(report.wrong_version, 0, "h2={h2}: {report:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn alpn_picks_http2_when_offered_and_http1_otherwise() {
    let sim = https_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "alpn");
    for (h2, version) in [(false, Version::HTTP_11), (true, Version::HTTP_2)] {
        let res = https_client(&sim, h2)
            .request(request(Method::GET, &uri).build())
            .await
            .unwrap();
        assert_eq!(
            (res.status(), res.version()),
            (StatusCode::NO_CONTENT, version)
        );
    }
    let seen: Vec<Version> = sim.log().iter().map(|e| e.version).collect();
    assert_eq!(seen, [Version::HTTP_11, Version::HTTP_2]);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let sim = https_sim().await;
    let other = https_sim().await;
    let uri = sim.session_uri(SCID, "LobbySession", "untrusted");
    // Trusts another simulator's certificate, not this one's.
    let err = https_client(&other, true)
        .request(request(Method::GET, &uri).build())
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert!(sim.log().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_refused_http2_stream_is_sent_again_at_once_even_a_write() {
    let t0 = Instant::now();
    let refuse = Fault::status(StatusCode::OK)
        .method(Method::PUT)
        .refuse_stream();
    let (sim, res) = put_after(|sim| sim.script(refuse), "refused").await;
    let res = res.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let log = sim.log();
    let seen: Vec<(bool, u16, Duration)> = log
        .iter()
        .map(|e| (e.broken, e.status.as_u16(), e.at - t0))
        .collect();
    println!("refused stream, then: {seen:?}");
    assert_eq!(
        seen,
        [(true, 200, Duration::ZERO), (false, 201, Duration::ZERO)]
    );
    assert_sent_again_as_unprocessed(&res);
}

#[tokio::test(start_paused = true)]
async fn a_stream_reset_otherwise_is_not_sent_again_when_a_write() {
    // `INTERNAL_ERROR`: the server may have applied it.
    let reset = Fault::status(StatusCode::OK).method(Method::PUT).reset();
    let (sim, res) = put_after(|sim| sim.script(reset), "reset").await;
    let err = res.unwrap_err();
    let failed = err
        .downcast_ref::<RequestFailed>()
        .expect("a RequestFailed");
    assert_eq!(failed.history().attempts().len(), 1);
    assert_eq!(sim.log().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn after_a_goaway_every_write_goes_once_on_a_new_connection() {
    let sim = https_sim().await;
    let base = sim.session_uri(SCID, "LobbySession", "drain");
    sim.script(
        Fault::status(StatusCode::NO_CONTENT)
            .method(Method::GET)
            .go_away(),
    );
    let client = ServiceBuilder::new()
        .mpsd()
        .service(https_client(&sim, true));
    let read = client.clone().oneshot(request(Method::GET, &base).build());
    assert_eq!(read.await.unwrap().status(), StatusCode::NO_CONTENT);
    let writes = (0..8).map(|i| {
        let put = request(Method::PUT, format!("{base}-{i}"))
            .json(serde_json::json!({"members": {"me": {}}}));
        client.clone().oneshot(put.build())
    });
    for res in join_all(writes).await {
        assert_eq!(res.unwrap().status(), StatusCode::CREATED);
    }
    let log = sim.log();
    let puts: Vec<_> = log.iter().filter(|e| e.method == Method::PUT).collect();
    println!(
        "after GOAWAY: GET on connection {}, PUTs on {:?}",
        log[0].connection,
        puts.iter().map(|e| e.connection).collect::<Vec<_>>()
    );
    assert_eq!(puts.len(), 8, "each write once");
    assert!(puts.iter().all(|e| e.connection != log[0].connection));
}

/// The `h2::Error` in `error`'s source chain, if any.
fn h2_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a h2::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return Some(h2);
        }
        next = e.source();
    }
    None
}

/// The scripted `GOAWAY` sent for the first request, on connection 0.
fn only_go_away(sim: &SimHandle) -> GoAwaySent {
    let sent = sim.go_aways();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!((sent[0].connection, sent[0].stream), (0, 1), "{sent:?}");
    sent[0]
}

/// A PUT of session `name` through the recommended stack over HTTP/2, to
/// a fresh HTTPS simulator that `script` has scripted: the simulator and
/// the PUT's result.
async fn put_after(
    script: impl FnOnce(&SimHandle),
    name: &str,
) -> (
    SimHandle,
    Result<Response<ClassifyBody<Incoming>>, BoxError>,
) {
    let sim = https_sim().await;
    script(&sim);
    let client = ServiceBuilder::new()
        .mpsd()
        .service(https_client(&sim, true));
    let uri = sim.session_uri(SCID, "LobbySession", name);
    let put = request(Method::PUT, &uri).json(serde_json::json!({"members": {"me": {}}}));
    let res = client.oneshot(put.build()).await;
    (sim, res)
}

/// A PUT answered with `go_away` in flight.
async fn put_under(
    go_away: GoAway,
    name: &str,
) -> (
    SimHandle,
    Result<Response<ClassifyBody<Incoming>>, BoxError>,
) {
    put_after(|sim| sim.script_go_away(go_away), name).await
}

/// The answer came from a second send, made because the first was not
/// processed.
fn assert_sent_again_as_unprocessed<B>(res: &Response<B>) {
    let history = AttemptHistory::of(res).unwrap();
    let purposes: Vec<_> = history.attempts().iter().map(|a| a.purpose).collect();
    assert_eq!(
        purposes,
        [Purpose::First, Purpose::Retry(Cause::Unprocessed)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_write_a_goaway_excludes_is_sent_again_at_once_on_a_new_connection() {
    let t0 = Instant::now();
    let (sim, res) = put_under(GoAway::excluding(h2::Reason::NO_ERROR), "excluded").await;
    let res = res.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let sent = only_go_away(&sim);
    assert_eq!(sent.last_stream_id, 0, "the PUT, in flight, was excluded");
    let log = sim.log();
    let seen: Vec<(Method, u16, u64, Duration)> = log
        .iter()
        .map(|e| (e.method.clone(), e.status.as_u16(), e.connection, e.at - t0))
        .collect();
    println!("GOAWAY {sent:?}, then: {seen:?}");
    assert_eq!(
        seen,
        [(Method::PUT, 201, 1, Duration::ZERO)],
        "applied once, at once, on a new connection"
    );
    assert!(sim.session(SCID, "LobbySession", "excluded").is_some());
    assert_sent_again_as_unprocessed(&res);
}

#[tokio::test(start_paused = true)]
async fn a_write_an_error_coded_goaway_cuts_off_is_not_sent_again() {
    let (sim, res) = put_under(GoAway::excluding(h2::Reason::INTERNAL_ERROR), "failed").await;
    let err = res.unwrap_err();
    let failed = err
        .downcast_ref::<RequestFailed>()
        .expect("a RequestFailed");
    assert_eq!(failed.history().attempts().len(), 1);
    // The caller sees the server's GOAWAY and its code.
    let h2 = h2_error(failed).expect("an h2 error in the chain");
    assert!(h2.is_go_away() && h2.is_remote(), "{h2:?}");
    assert_eq!(h2.reason(), Some(h2::Reason::INTERNAL_ERROR));
    assert_eq!(only_go_away(&sim).last_stream_id, 0);
    assert!(sim.log().is_empty());
    assert!(sim.session(SCID, "LobbySession", "failed").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_write_a_goaway_includes_but_leaves_unanswered_is_not_sent_again() {
    for reason in [h2::Reason::NO_ERROR, h2::Reason::INTERNAL_ERROR] {
        let (sim, res) = put_under(GoAway::including(reason), "included").await;
        let err = res.unwrap_err();
        let failed = err
            .downcast_ref::<RequestFailed>()
            .expect("a RequestFailed");
        assert_eq!(failed.history().attempts().len(), 1, "{reason:?}");
        // Whatever the code, h2 fails an included stream the connection
        // closes under with an I/O error (`BrokenPipe`), not the GOAWAY's.
        println!("{reason:?} GOAWAY including the PUT: {err:?}");
        assert!(h2_error(failed).is_none(), "{err:?}");
        assert_eq!(only_go_away(&sim).last_stream_id, 1);
        assert!(sim.log().is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn forty_callers_paced_over_one_http2_connection_get_no_429() {
    // MPSD's own limits: 30 per 15 s and 300 per 300 s per user.
    let sim = Simulator::builder().https().start().await.unwrap();
    let uri = sim.session_uri(SCID, "LobbySession", "h2-paced");
    let client = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().pace(PaceLayer::new()))
        .service(https_client(&sim, true));
    let t0 = Instant::now();
    let calls = (0..40).map(|_| client.clone().oneshot(request(Method::GET, &uri).build()));
    for res in join_all(calls).await {
        assert_eq!(res.unwrap().status(), StatusCode::NO_CONTENT);
    }
    let log = sim.log();
    let times = since(t0, &log);
    let burst = times
        .iter()
        .filter(|t| **t < Duration::from_secs(15))
        .count();
    println!(
        "h2 paced: {} requests, {burst} in the first 15 s, the rest from {:?}",
        times.len(),
        times
            .iter()
            .filter(|t| **t >= Duration::from_secs(15))
            .min()
    );
    assert!(log
        .iter()
        .all(|e| e.version == Version::HTTP_2 && e.connection == 0));
    assert!(
        log.iter().all(|e| e.status == StatusCode::NO_CONTENT),
        "no 429"
    );
    assert_eq!((times.len(), burst), (40, 30));
}
