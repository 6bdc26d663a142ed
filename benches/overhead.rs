//! Per-request cost of a successful (200) call, in process, no network.
//!
//! Four services answer the same request (a GET of a session, with an
//! `XBL3.0` authorization and the contract version header, and an empty
//! `Full<Bytes>` body, built afresh for every call):
//!
//! - `bare`: the inner service alone, a `tower::service_fn` answering 200;
//! - `tower_retry`: tower's `Retry` with the hand-written status-checking
//!   [`baseline::StatusPolicy`] around it (what a user writes today);
//! - each layer of the crate alone around it (`classify`, `logical`,
//!   `retry`, `rebase` with `ResendDelta`, `replay`, `pace` with limits
//!   the loop never reaches, `revalidate`), otherwise with its defaults,
//!   so that the cost of each is visible;
//! - `rebase_write`: a conditional write (a PUT of the same session with
//!   `If-Match` and a small JSON body), which the bare service answers 200,
//!   through `rebase` with `ResendDelta` alone: the cost of keeping the
//!   write's body and running the rebase future when no race is lost;
//! - `rebase_write_sequenced`: the same write through `rebase` with a
//!   `SessionBoard` (write sequencing), its queue free: the cost of taking
//!   and releasing the session's turn;
//! - `coalesce`: the GET through `CoalesceLayer` alone, no other caller
//!   asking the same: the cost of opening and closing its flight;
//! - `stack_rebase`: the GET through the recommended stack with a rebase
//!   policy (`ResendDelta`), which adds coalescing and sequencing;
//! - `stack`: the recommended stack, `ServiceBuilder::new().mpsd()`.
//!
//! Each call is `ready()` then `call()`, driven by one poll
//! (`now_or_never`: every success path here completes without waiting),
//! outside any tokio runtime, as a production build without tokio's
//! `test-util` clock would run it. Times come from criterion's samples
//! (`measurement_time` 3 s, 30 samples): `ns_per_req` is the median over
//! samples of the sample's time divided by its iterations. Allocations are
//! counted by a counting global allocator (`stats_alloc`) over 10,000 calls
//! made after the timing; the allocator's count is what `allocs_per_req`
//! reports. `clone_allocs` is what one `Request::clone` of the same request
//! allocates, the floor for any layer that must keep the request to replay
//! it.
//!
//! `ratio_vs_tower_retry` is not the quotient of two of those medians,
//! which are measured tens of seconds apart and, on a small loaded
//! machine, under different loads. It comes from paired rounds after the
//! criterion runs: in each of 15 rounds, 8 timed runs of 5,000 calls of
//! each, taking turns (tower's first in every other round), the round's
//! ratio being the stack's least time over tower's least time: another
//! process taking the CPU only ever adds time, so the least time of a run
//! is the one it touched least. The line gives the median of the rounds'
//! ratios and, as `spread`, their least and greatest.
//!
//! `future_bytes`, on the lines of `tower_retry` and `stack`, is the size
//! of the service's response future (`size_of::<S::Future>()`), which
//! every call builds and moves from layer to layer.
//!
//! `cargo bench --bench overhead` prints one `summary:` line per service
//! and takes about a minute; each layer's line adds `added_ns` and
//! `added_allocs` over `bare`.

use std::alloc::System;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use criterion::Criterion;
use futures_util::FutureExt;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::hint::black_box;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};
use tower_mpsd::classify::ClassifyLayer;
use tower_mpsd::coalesce::CoalesceLayer;
use tower_mpsd::logical::LogicalLayer;
use tower_mpsd::pace::{Limits, PaceLayer, PaceTable, Window};
use tower_mpsd::rebase::{policy::ResendDelta, RebaseLayer};
use tower_mpsd::replay::ReplayLayer;
use tower_mpsd::retry::RetryLayer;
use tower_mpsd::revalidate::RevalidateLayer;
use tower_mpsd::sequence::SessionBoard;
use tower_mpsd::MpsdLayer;
use tower_mpsd::ServiceBuilderExt;

mod baseline;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const URI: &str = "http://sessiondirectory.xboxlive.com/serviceconfigs/00000000-0000-0000-0000-00006a0b1c2d/sessionTemplates/LobbySession/sessions/lobby1";
const ALLOC_CALLS: u64 = 10_000;

fn request() -> Request<Full<Bytes>> {
    Request::get(URI)
        .header(header::AUTHORIZATION, "XBL3.0 x=1234567890;token")
        .header("x-xbl-contract-version", "107")
        .body(Full::default())
        .expect("a valid request")
}

/// A conditional write of the same session: what the rebase layer keeps.
fn write_request() -> Request<Full<Bytes>> {
    Request::put(URI)
        .header(header::AUTHORIZATION, "XBL3.0 x=1234567890;token")
        .header("x-xbl-contract-version", "107")
        .header(header::IF_MATCH, "\"e1\"")
        .body(Full::new(Bytes::from_static(
            br#"{"members":{"me":{"properties":{"custom":{"ready":true}}}}}"#,
        )))
        .expect("a valid request")
}

/// The inner service: 200, empty body, whatever the request's body.
fn bare<B>(
) -> impl Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible, Future = impl Send>
       + Clone
       + Send
       + 'static {
    service_fn(|_req: Request<B>| async {
        Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
    })
}

/// A `PaceLayer` whose windows (a million sends per millisecond) the
/// bench never fills, so no request waits.
fn unreached_pace() -> PaceLayer {
    let window = Window::new(1_000_000, Duration::from_millis(1));
    let table = PaceTable::builder()
        .limits(Limits::new(window, window))
        .margin(Duration::ZERO)
        .build();
    PaceLayer::with_table(table)
}

/// One call of `make()` through `svc`, which must complete in one poll.
fn once<S, B>(svc: &mut S, make: fn() -> Request<Full<Bytes>>)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let call = async {
        let res = svc.ready().await.unwrap().call(make()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        black_box(res);
    };
    call.now_or_never()
        .expect("a success completes in one poll");
}

/// The paired comparison: 15 rounds give a median and a spread worth
/// reading; 8 runs of each per round, of 5,000 calls (a few milliseconds,
/// shorter than a scheduler's time slice), take well under a second.
const PAIRED_ROUNDS: usize = 15;
const PAIRED_RUNS: usize = 8;
const PAIRED_CALLS: u64 = 5_000;

/// Nanoseconds per call of `PAIRED_CALLS` calls through `svc`.
fn time_calls<S, B>(svc: &mut S) -> f64
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for _ in 0..PAIRED_CALLS {
        once(svc, request);
    }
    start.elapsed().as_nanos() as f64 / PAIRED_CALLS as f64
}

/// The per-round ratios of `b`'s least time over `a`'s, sorted: each
/// round times A and B in turns (B first every other round).
fn paired_ratios<S, T, B, C>(a: &mut S, b: &mut T) -> Vec<f64>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    T: Service<Request<Full<Bytes>>, Response = Response<C>>,
    T::Error: std::fmt::Debug,
{
    // Warm both.
    time_calls(a);
    time_calls(b);
    let mut ratios: Vec<f64> = (0..PAIRED_ROUNDS)
        .map(|round| {
            let (mut ta, mut tb) = (f64::MAX, f64::MAX);
            for run in 0..2 * PAIRED_RUNS {
                if (round % 2 == 0) == (run % 2 == 0) {
                    ta = ta.min(time_calls(a));
                } else {
                    tb = tb.min(time_calls(b));
                }
            }
            tb / ta
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios
}

/// The size of `svc`'s response future: what every call builds and moves
/// from layer to layer.
fn future_bytes<S: Service<Request<Full<Bytes>>>>(_svc: &S) -> usize {
    std::mem::size_of::<S::Future>()
}

struct Figures {
    name: &'static str,
    ns_per_req: f64,
    allocs_per_req: f64,
}

fn measure<S, B>(c: &mut Criterion, name: &'static str, svc: S) -> Figures
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    measure_with(c, name, svc, request)
}

/// [`measure`], with each call's request made by `make`.
fn measure_with<S, B>(
    c: &mut Criterion,
    name: &'static str,
    mut svc: S,
    make: fn() -> Request<Full<Bytes>>,
) -> Figures
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let samples = Arc::new(Mutex::new(Vec::new()));
    let kept = samples.clone();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                once(&mut svc, make);
            }
            let elapsed = start.elapsed();
            kept.lock()
                .unwrap()
                .push(elapsed.as_nanos() as f64 / iters as f64);
            elapsed
        })
    });
    let mut per_iter = samples.lock().unwrap().clone();
    per_iter.sort_by(f64::total_cmp);
    let ns_per_req = per_iter[per_iter.len() / 2];

    let region = Region::new(GLOBAL);
    for _ in 0..ALLOC_CALLS {
        once(&mut svc, make);
    }
    let allocs = region.change().allocations;
    Figures {
        name,
        ns_per_req,
        allocs_per_req: allocs as f64 / ALLOC_CALLS as f64,
    }
}

fn main() {
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
        .configure_from_args();

    let bare_f = measure(&mut c, "bare", bare());
    let retry_f = measure(
        &mut c,
        "tower_retry",
        tower::retry::Retry::new(baseline::StatusPolicy::new(), bare()),
    );
    let layers = [
        measure(&mut c, "classify", ClassifyLayer::new().layer(bare())),
        measure(
            &mut c,
            "logical",
            LogicalLayer::new(Duration::from_secs(20), 5).layer(bare()),
        ),
        measure(&mut c, "retry", RetryLayer::new().layer(bare())),
        measure(
            &mut c,
            "rebase",
            RebaseLayer::new(ResendDelta).layer(bare()),
        ),
        measure_with(
            &mut c,
            "rebase_write",
            RebaseLayer::new(ResendDelta).layer(bare()),
            write_request,
        ),
        measure_with(
            &mut c,
            "rebase_write_sequenced",
            RebaseLayer::new(ResendDelta)
                .sequence(SessionBoard::new())
                .layer(bare()),
            write_request,
        ),
        measure(&mut c, "coalesce", CoalesceLayer::new().layer(bare())),
        measure(
            &mut c,
            "stack_rebase",
            ServiceBuilder::new()
                .mpsd_with(MpsdLayer::new().rebase(RebaseLayer::new(ResendDelta)))
                .service(bare()),
        ),
        measure(&mut c, "replay", ReplayLayer::new(64 << 10).layer(bare())),
        // Limits no bench loop reaches: the cost of keeping the windows,
        // not of waiting in them.
        measure(&mut c, "pace", unreached_pace().layer(bare())),
        measure(&mut c, "revalidate", RevalidateLayer::new().layer(bare())),
    ];
    let stack = ServiceBuilder::new().mpsd().service(bare());
    let stack_bytes = future_bytes(&stack);
    let tower_bytes = future_bytes(&tower::retry::Retry::new(
        baseline::StatusPolicy::new(),
        bare(),
    ));
    let stack_f = measure(&mut c, "stack", stack);
    c.final_summary();

    let ratios = paired_ratios(
        &mut tower::retry::Retry::new(baseline::StatusPolicy::new(), bare()),
        &mut ServiceBuilder::new().mpsd().service(bare()),
    );
    let ratio_vs_tower_retry = ratios[ratios.len() / 2];
    let (least, most) = (ratios[0], ratios[ratios.len() - 1]);

    let original = request();
    let region = Region::new(GLOBAL);
    for _ in 0..ALLOC_CALLS {
        black_box(original.clone());
    }
    let clone_allocs = region.change().allocations as f64 / ALLOC_CALLS as f64;

    println!(
        "summary: overhead/{} ns_per_req={:.1} allocs_per_req={:.2}",
        bare_f.name, bare_f.ns_per_req, bare_f.allocs_per_req
    );
    println!(
        "summary: overhead/{} ns_per_req={:.1} allocs_per_req={:.2} future_bytes={tower_bytes}",
        retry_f.name, retry_f.ns_per_req, retry_f.allocs_per_req
    );
    for f in &layers {
        println!(
            "summary: overhead/{} ns_per_req={:.1} allocs_per_req={:.2} added_ns={:.1} added_allocs={:.2}",
            f.name,
            f.ns_per_req,
            f.allocs_per_req,
            f.ns_per_req - bare_f.ns_per_req,
            f.allocs_per_req - bare_f.allocs_per_req,
        );
    }
    println!(
        "summary: overhead/{} ns_per_req={:.1} allocs_per_req={:.2} ratio_vs_bare={:.2} ratio_vs_tower_retry={ratio_vs_tower_retry:.2} spread={least:.2}..{most:.2} added_ns={:.1} added_allocs={:.2} clone_allocs={:.2} future_bytes={stack_bytes}",
        stack_f.name,
        stack_f.ns_per_req,
        stack_f.allocs_per_req,
        stack_f.ns_per_req / bare_f.ns_per_req,
        stack_f.ns_per_req - bare_f.ns_per_req,
        stack_f.allocs_per_req - bare_f.allocs_per_req,
        clone_allocs,
    );
}
