//! Requests per second over real TCP: a `hyper-util` client against the
//! simulator on 127.0.0.1, bare and behind the recommended stack.
//!
//! The simulator runs with rate limits off and holds one session; every
//! request is a GET of it (200 with the session document, read whole by
//! the caller). At each concurrency (1 and 64 callers, each sending its
//! next request as soon as the last one's body is read) the bare client
//! and the stack (`ServiceBuilder::new().mpsd()` around a clone of the
//! same client, so both use one warm connection pool) take turns, after a
//! warm-up of each: `ROUNDS` rounds, each `RUNS` runs of `RUN` of each,
//! taking turns (the stack first in every other round). A round's rate
//! for each is its best run's: another process taking the CPU only ever
//! lowers a rate, so the best run is the one it touched least, and the
//! runs of a round, within a second, meet the same machine. Each round
//! gives one ratio, `rps_stack / rps_bare` of those rates. `ratio` is the
//! median of the rounds' ratios and `spread` their least and greatest, so
//! that a change can be told from noise; `rps_*` are the medians of the
//! rounds' rates.
//!
//! The simulator has a tokio runtime of its own on one worker thread, and
//! the client (callers and hyper's connection tasks) another on one
//! worker thread: on a small machine the two do not take turns on one
//! scheduler, and what the client spends is what the ratio sees.
//!
//! Then the same at 64 callers over HTTPS (the simulator's self-signed
//! certificate trusted by a hyper-rustls client, TCP_NODELAY on): once
//! with ALPN offering only `http/1.1` (`tls_h1_c64`, a pool of
//! connections) and once offering `h2` (`tls_h2_c64`, every caller
//! multiplexed on one connection). The bare client there is the same TLS
//! client, so `ratio` is what the stack costs over TLS.
//!
//! `cargo bench --bench loopback` prints one `summary:` line per scenario
//! (`c1`, `c64`, `tls_h1_c64`, `tls_h2_c64`) and takes about a minute;
//! `cargo bench --bench loopback -- tls` runs only the scenarios whose
//! name contains `tls`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mpsd_sim::Simulator;
use serde_json::json;
use tokio::runtime::Runtime;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_mpsd::ServiceBuilderExt;

// The demo's client, so the bench measures what the example shows.
#[path = "../examples/demo/https.rs"]
#[allow(dead_code, unreachable_pub)]
mod https;

const SCID: &str = "00000000-0000-0000-0000-00006a0b1c2d";
/// 15 rounds of three 0.15 s runs of each: under 14 s per scenario, so
/// the four take about a minute, and 15 ratios give a median and a spread
/// worth reading.
const ROUNDS: usize = 15;
const RUNS: usize = 3;
const RUN: Duration = Duration::from_millis(150);
const WARM_UP: Duration = Duration::from_millis(500);

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .header(header::AUTHORIZATION, "XBL3.0 x=1234567890;token")
        .header("x-xbl-contract-version", "107")
        .body(Full::default())
        .expect("a valid request")
}

/// Requests completed in `length` by `concurrency` callers of `svc`.
async fn run<S, B>(svc: S, uri: &str, concurrency: usize, length: Duration) -> u64
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    B: http_body::Body + Send,
    B::Data: Send,
    B::Error: std::fmt::Debug,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (svc, done, stop, uri) = (svc.clone(), done.clone(), stop.clone(), uri.to_owned());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let res = svc
                        .clone()
                        .oneshot(get(&uri))
                        .await
                        .map_err(Into::into)
                        .expect("the simulator answers");
                    assert_eq!(res.status(), StatusCode::OK);
                    res.into_body().collect().await.expect("a whole body");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start_count = done.load(Ordering::Relaxed);
    tokio::time::sleep(length).await;
    let count = done.load(Ordering::Relaxed) - start_count;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("a caller finished");
    }
    count
}

/// Bare client and stack in turns, and the `summary:` line.
async fn compare<S>(label: &str, client: S, uri: &str, concurrency: usize)
where
    S: Service<Request<Full<Bytes>>, Response = Response<Incoming>> + Clone + Send + 'static,
    S::Error: Into<BoxError> + Send + Sync + 'static,
    S::Future: Send,
{
    let stack = ServiceBuilder::new().mpsd().service(client.clone());
    run(client.clone(), uri, concurrency, WARM_UP).await;
    run(stack.clone(), uri, concurrency, WARM_UP).await;
    let (mut bare, mut stacked, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (mut b, mut s) = (0, 0);
        for run_of_round in 0..2 * RUNS {
            if (round % 2 == 0) == (run_of_round % 2 == 0) {
                b = b.max(run(client.clone(), uri, concurrency, RUN).await);
            } else {
                s = s.max(run(stack.clone(), uri, concurrency, RUN).await);
            }
        }
        println!("loopback {label} round {round}: best runs of {RUN:?}: bare {b} stack {s}");
        let secs = RUN.as_secs_f64();
        bare.push(b as f64 / secs);
        stacked.push(s as f64 / secs);
        ratios.push(s as f64 / b as f64);
    }
    let (rps_bare, rps_stack) = (median(&mut bare), median(&mut stacked));
    let ratio = median(&mut ratios);
    let (least, most) = (ratios[0], ratios[ratios.len() - 1]);
    println!(
        "summary: loopback/{label} rps_bare={rps_bare:.0} rps_stack={rps_stack:.0} ratio={ratio:.3} spread={least:.3}..{most:.3}"
    );
}

/// A simulator started on `sim_rt`, its own runtime.
fn start_sim(sim_rt: &Runtime, builder: mpsd_sim::SimBuilder) -> mpsd_sim::SimHandle {
    sim_rt
        .block_on(builder.no_rate_limit().start())
        .expect("the simulator")
}

/// The URI of the one session every request reads, created through
/// `client`.
async fn create_session<S>(sim: &mpsd_sim::SimHandle, client: &S) -> String
where
    S: Service<Request<Full<Bytes>>, Response = Response<Incoming>> + Clone,
    S::Error: std::fmt::Debug,
{
    let uri = sim.session_uri(SCID, "LobbySession", "loopback");
    let mut create = get(&uri);
    *create.method_mut() = Method::PUT;
    *create.body_mut() = Full::from(json!({"members": {"me": {}}}).to_string());
    let res = client.clone().oneshot(create).await.expect("created");
    assert_eq!(res.status(), StatusCode::CREATED);
    uri
}

/// Sorts `v` and gives its median.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A runtime of one worker thread, named for what it runs.
fn runtime(name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn main() {
    let (sim_rt, client_rt) = (runtime("simulator"), runtime("client"));
    // `cargo bench` passes `--bench`; anything else names scenarios.
    let only = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wanted = |label: &str| only.as_deref().map_or(true, |o| label.contains(o));

    let sim = start_sim(&sim_rt, Simulator::builder());
    client_rt.block_on(async {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let uri = create_session(&sim, &client).await;
        for concurrency in [1, 64] {
            let label = format!("c{concurrency}");
            if wanted(&label) {
                compare(&label, client.clone(), &uri, concurrency).await;
            }
        }
    });
    sim_rt.block_on(sim.shutdown());

    let tls = [("tls_h1_c64", false), ("tls_h2_c64", true)];
    for (label, h2) in tls.into_iter().filter(|(label, _)| wanted(label)) {
        let sim = start_sim(&sim_rt, Simulator::builder().https());
        client_rt.block_on(async {
            let client = https::https_client(&sim, h2).expect("an HTTPS simulator");
            let uri = create_session(&sim, &client).await;
            compare(label, client, &uri, 64).await;
        });
        sim_rt.block_on(sim.shutdown());
    }
}
