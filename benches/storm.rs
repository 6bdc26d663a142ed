//! Storms on virtual time: the stack against the baselines when the
//! service sheds load, throttles a user, or sees writers race.
//!
//! Everything runs on one current-thread tokio runtime with paused time,
//! against the simulator over real TCP on 127.0.0.1, so the figures are
//! deterministic up to the random jitter of the clients (and the same on
//! any machine). Between each client and the hyper-util client sits a
//! [`Wire`]: it adds a one-way latency of [`LATENCY`] each way (10 ms, so a
//! round trip takes 20 ms of virtual time) and records, for each send, the
//! order in which it was sent and its answer received, and the answer's
//! status and `Retry-After`. Every metric is derived from the simulator's
//! request log (which request arrived when, and what it was answered) plus
//! those records and the clients' results. Each request carries a tag in
//! its query (`?c=<logical request>`), which the simulator ignores and
//! logs, so log entries and records are matched per logical request, in
//! order.
//!
//! All clients of a run are tasks of one process sharing one client: one
//! stack (so they share its cooldowns and budget), one tower `Retry` (which
//! shares only its budget), or one SDK gate.
//!
//! # `overload`
//!
//! The simulator serves at most [`CAPACITY`] requests per [`WINDOW`]
//! (10 per second) and answers the rest 503 with `Retry-After`; its rate
//! limits are off. N = 200 clients each make one logical request, a GET of
//! a session, starting 50 ms apart (20 per second, twice the capacity, for
//! 10 s). Strategies: `stack` (`ServiceBuilder::new().mpsd()`, defaults),
//! `naive` (tower `Retry` with [`baseline::StatusPolicy`]: exponential
//! backoff from 1 s, no `Retry-After`, no shared cooldown, a `TpsBudget`),
//! and `sdk` ([`baseline::sdk_call`]).
//!
//! - `amplification`: requests the server received / logical requests.
//! - `goodput`: requests the server served (answered with anything but 503
//!   or 429) / requests it received: the share of its work that was useful.
//! - `early`: requests that arrived before an instant the process had been
//!   told. Precisely: a request r arriving at t is early when some earlier
//!   answer a (503 or 429 with `Retry-After: h`, arriving at the server at
//!   τ) has τ + h > t, and either a answered an earlier send of r's own
//!   logical request, or a's answer had been received by the process
//!   before r was sent, for the same cooldown scope (503: the whole
//!   service; 429: the same user). `early_own` counts the first kind only.
//! - `p50_ms`, `p99_ms`: time from the start of a logical request to its
//!   successful answer, over the logical requests that succeeded.
//! - `failed`: logical requests that ended without a success (an error, a
//!   fail-fast, or a last 503).
//!
//! # `throttle`
//!
//! The simulator enforces MPSD's limits (30 per 15 s, 300 per 300 s per
//! user, throttled requests counted). One user's caller sends 31 GETs one
//! after another (the 31st is throttled: the process now knows the
//! cooldown), then at 1 s 64 concurrent callers of the same user each make
//! one GET. `during_cooldown` is `early` above: requests that reached the
//! server while a `Retry-After` the process had been told was in force.
//! `failed` counts the 64 callers that got no success; `requests` is
//! everything the server received after the first 429.
//!
//! # `contention`
//!
//! W writers (1, 4, 16, 64; rate limits and overload off) each make
//! [`WRITES`] read-modify-writes of `properties.custom.count` on one
//! session through `MpsdLayer::new().rebase(RebaseLayer::new(increment))`,
//! `increment` a `rebase_fn` that re-applies +1 to the count of the fresh
//! session: a GET (tagged `r`) reads the count and ETag, a PUT with
//! `If-Match` writes count + 1.
//!
//! - `attempts_per_write`: requests the server received for the writes
//!   (everything but the tagged reads) / logical writes.
//! - `lost_updates`: writes reported successful minus the counter's final
//!   increase; must be 0.
//! - `writes_per_s`: successful writes per second of virtual time, from the
//!   first read to the last answer.
//! - `failed`: writes handed back unsuccessful (e.g. a 412 after the
//!   conflict rounds ran out).
//!
//! The writers share one stack, which sequences their conditional writes
//! per session (see `tower_mpsd::sequence`). `contention_4x16` puts 16
//! writers on each of 4 stacks built separately, as 4 processes: nothing
//! is shared but the server.
//!
//! # `coalesce`
//!
//! 64 callers of one user GET one session (one URI) at one instant, 10
//! bursts a second apart, through the stack with a rebase policy, which
//! coalesces identical GETs (`coalesce`), and without one, the baseline
//! (`coalesce_off`).
//!
//! - `requests_per_burst`: requests the simulator received / bursts.
//! - `identical`: callers per burst whose status and body equal the first
//!   caller's, on average.
//! - `failed`: callers without a 200.
//!
//! `cargo bench --bench storm` prints one `summary:` line
//! per scenario and strategy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{join_all, BoxFuture};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use mpsd_sim::{LogEntry, Overload, SimHandle, Simulator};
use serde_json::json;
use tokio::time::{sleep, sleep_until, Instant};
use tower::util::rng::HasherRng;
use tower::Layer;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_mpsd::error::Refused;
use tower_mpsd::pace::PaceLayer;
use tower_mpsd::rebase::policy::{rebase_fn, Decision, LostRace};
use tower_mpsd::rebase::RebaseLayer;
use tower_mpsd::{MpsdLayer, ServiceBuilderExt};

mod baseline;

use baseline::{sdk_call, BoxError, SdkGate, StatusPolicy};

const SCID: &str = "00000000-0000-0000-0000-00006a0b1c2d";
/// One-way network latency added by the [`Wire`].
const LATENCY: Duration = Duration::from_millis(10);
/// Overload: logical requests, their spacing, and the server's capacity.
const CLIENTS: usize = 200;
const SPACING: Duration = Duration::from_millis(50);
const CAPACITY: u32 = 50;
const WINDOW: Duration = Duration::from_secs(5);
/// Throttle: concurrent callers of one user.
const CALLERS: usize = 64;
/// Contention: writes per writer.
const WRITES: usize = 5;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One send as the process saw it.
#[derive(Debug, Clone)]
struct Record {
    tag: String,
    /// Order of the send among all events of the process.
    sent_seq: u64,
    /// Order of the answer's receipt, or `None` when the send failed.
    recv_seq: Option<u64>,
    retry_after: Option<Duration>,
}

#[derive(Default)]
struct Records {
    seq: u64,
    sends: Vec<Record>,
}

/// The network between the clients and the simulator: latency each way,
/// and a record of every send.
#[derive(Clone)]
struct Wire {
    client: HttpClient,
    records: Arc<Mutex<Records>>,
}

impl Wire {
    fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            records: Arc::default(),
        }
    }

    fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().sends.clone()
    }
}

fn tag_of(uri: &http::Uri) -> String {
    uri.query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("c=")))
        .unwrap_or("")
        .to_owned()
}

impl Service<Request<Full<Bytes>>> for Wire {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Incoming>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let index = {
                let mut records = this.records.lock().unwrap();
                let sent_seq = records.seq;
                records.seq += 1;
                records.sends.push(Record {
                    tag: tag_of(req.uri()),
                    sent_seq,
                    recv_seq: None,
                    retry_after: None,
                });
                records.sends.len() - 1
            };
            sleep(LATENCY).await;
            let result = this.client.request(req).await;
            sleep(LATENCY).await;
            let mut records = this.records.lock().unwrap();
            let recv_seq = records.seq;
            records.seq += 1;
            let record = &mut records.sends[index];
            if let Ok(res) = &result {
                record.recv_seq = Some(recv_seq);
                record.retry_after = res
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_secs);
            }
            Ok(result?)
        })
    }
}

/// The client under test.
#[derive(Clone)]
enum Strategy {
    Stack(<MpsdLayer as tower::Layer<Wire>>::Service),
    Naive(tower::retry::Retry<StatusPolicy, Wire>),
    Sdk(Wire, SdkGate),
}

impl Strategy {
    fn all(wire: &Wire) -> [(&'static str, Strategy); 3] {
        [
            (
                "stack",
                Strategy::Stack(ServiceBuilder::new().mpsd().service(wire.clone())),
            ),
            (
                "naive",
                Strategy::Naive(tower::retry::Retry::new(StatusPolicy::new(), wire.clone())),
            ),
            ("sdk", Strategy::Sdk(wire.clone(), SdkGate::default())),
        ]
    }

    /// The final status, or `None` for an error (fail-fast included).
    async fn call(self, req: Request<Full<Bytes>>) -> Option<StatusCode> {
        let result: Result<Response<Incoming>, BoxError> = match self {
            Strategy::Stack(svc) => svc.oneshot(req).await,
            Strategy::Naive(svc) => svc.oneshot(req).await,
            Strategy::Sdk(wire, gate) => sdk_call(wire, req, &gate, &mut HasherRng::new())
                .await
                .map_err(|e| format!("{e:?}").into()),
        };
        let res = result.ok()?;
        let status = res.status();
        res.into_body().collect().await.ok()?;
        Some(status)
    }
}

fn get(uri: &str, user: &str, tag: &str) -> Request<Full<Bytes>> {
    Request::get(format!("{uri}?c={tag}"))
        .header(header::AUTHORIZATION, format!("XBL3.0 x={user};token"))
        .header("x-xbl-contract-version", "107")
        .body(Full::default())
        .expect("a valid request")
}

async fn create_session(sim: &SimHandle, name: &str, custom: serde_json::Value) -> String {
    let uri = sim.session_uri(SCID, "LobbySession", name);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let body = json!({"members": {"me": {}}, "properties": {"custom": custom}});
    let mut req = get(&uri, "host", "setup");
    *req.method_mut() = Method::PUT;
    *req.body_mut() = Full::from(body.to_string());
    let res = client.request(req).await.expect("the simulator answers");
    assert_eq!(res.status(), StatusCode::CREATED);
    uri
}

fn refused(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 503)
}

/// The `early` requests of the module docs: (early, early_own).
fn early(log: &[LogEntry], records: &[Record]) -> (usize, usize) {
    // Pair each logged arrival with its send: per tag, in order.
    let mut sends: HashMap<&str, Vec<&Record>> = HashMap::new();
    for r in records.iter().filter(|r| r.recv_seq.is_some()) {
        sends.entry(r.tag.as_str()).or_default().push(r);
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    struct Arrival<'a> {
        at: Instant,
        tag: String,
        scope: Option<String>,
        send: &'a Record,
    }
    let arrivals: Vec<Arrival<'_>> = log
        .iter()
        .map(|e| {
            let tag = e.path.split_once("?c=").map_or("", |(_, t)| t).to_owned();
            let n = seen.entry(tag.clone()).or_default();
            let send = sends[tag.as_str()][*n];
            *n += 1;
            let scope = match e.status.as_u16() {
                503 => Some(String::new()),
                429 => e.user.clone(),
                _ => None,
            };
            Arrival {
                at: e.at,
                tag,
                scope,
                send,
            }
        })
        .collect();
    let told: Vec<(&Arrival<'_>, Instant)> = arrivals
        .iter()
        .filter(|a| a.scope.is_some())
        .filter_map(|a| Some((a, a.at + a.send.retry_after?)))
        .collect();
    let (mut any, mut own) = (0, 0);
    for (r, entry) in arrivals.iter().zip(log) {
        let is_own = |a: &Arrival<'_>| a.tag == r.tag && a.send.sent_seq < r.send.sent_seq;
        let user_scope = |a: &Arrival<'_>| match a.scope.as_deref() {
            Some("") => true,
            scope => scope == entry.user.as_deref(),
        };
        let known =
            |a: &Arrival<'_>| user_scope(a) && a.send.recv_seq.is_some_and(|s| s < r.send.sent_seq);
        let before = told.iter().filter(|(_, until)| r.at < *until);
        let mut before_own = false;
        let mut before_known = false;
        for (a, _) in before {
            before_own |= is_own(a);
            before_known |= known(a);
        }
        own += usize::from(before_own);
        any += usize::from(before_own || before_known);
    }
    (any, own)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

async fn overload() {
    for name in ["stack", "naive", "sdk"] {
        let sim = Simulator::builder().no_rate_limit().start().await.unwrap();
        let uri = create_session(&sim, "storm", json!({})).await;
        sim.set_overload(Some(Overload {
            capacity: CAPACITY,
            window: WINDOW,
        }));
        sim.clear_log();
        let wire = Wire::new();
        let strategy = Strategy::all(&wire)
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1;
        let t0 = Instant::now();
        let clients = (0..CLIENTS).map(|i| {
            let (strategy, uri) = (strategy.clone(), uri.clone());
            tokio::spawn(async move {
                sleep_until(t0 + SPACING * i as u32).await;
                let start = Instant::now();
                let status = strategy
                    .call(get(&uri, &format!("u{i}"), &i.to_string()))
                    .await;
                (status, start.elapsed())
            })
        });
        let results: Vec<_> = join_all(clients)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let log = sim.log();
        let records = wire.records();
        let received = log.len();
        let served = log.iter().filter(|e| !refused(e.status)).count();
        let mut times: Vec<Duration> = results
            .iter()
            .filter(|(s, _)| s.is_some_and(|s| s.is_success()))
            .map(|(_, t)| *t)
            .collect();
        times.sort();
        let failed = CLIENTS - times.len();
        let (early, early_own) = early(&log, &records);
        println!(
            "summary: storm/overload_{name} amplification={:.3} goodput={:.3} early={early} early_own={early_own} p50_ms={:.0} p99_ms={:.0} failed={failed}",
            received as f64 / CLIENTS as f64,
            served as f64 / received as f64,
            percentile(&times, 0.50),
            percentile(&times, 0.99),
        );
        sim.shutdown().await;
    }
}

async fn throttle() {
    for name in ["stack", "naive", "sdk"] {
        // MPSD's own limits, the simulator's default.
        let sim = Simulator::builder().start().await.unwrap();
        let uri = create_session(&sim, "throttle", json!({})).await;
        sim.clear_log();
        let wire = Wire::new();
        let strategy = Strategy::all(&wire)
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1;
        let t0 = Instant::now();
        let prefill = {
            let (strategy, uri) = (strategy.clone(), uri.clone());
            tokio::spawn(async move {
                for k in 0..31 {
                    strategy
                        .clone()
                        .call(get(&uri, "u", &format!("p{k}")))
                        .await;
                }
            })
        };
        let callers = (0..CALLERS).map(|i| {
            let (strategy, uri) = (strategy.clone(), uri.clone());
            tokio::spawn(async move {
                sleep_until(t0 + Duration::from_secs(1)).await;
                strategy.call(get(&uri, "u", &i.to_string())).await
            })
        });
        let results = join_all(callers).await;
        prefill.await.unwrap();
        let log = sim.log();
        let records = wire.records();
        let failed = results
            .iter()
            .filter(|r| !r.as_ref().unwrap().is_some_and(|s| s.is_success()))
            .count();
        let first = log
            .iter()
            .position(|e| e.status == StatusCode::TOO_MANY_REQUESTS);
        let requests = first.map_or(0, |i| log.len() - i - 1);
        let (during, _) = early(&log, &records);
        println!(
            "summary: storm/throttle_{name} during_cooldown={during} requests={requests} failed={failed}"
        );
        sim.shutdown().await;
    }
}

/// The rebase policy: +1 on the count of the session as it is now.
fn increment(conflict: &LostRace<'_>) -> Result<Decision, tower_mpsd::BoxError> {
    let now = conflict.session["properties"]["custom"]["count"]
        .as_u64()
        .unwrap_or(0);
    let delta = json!({"properties": {"custom": {"count": now + 1}}});
    Ok(Decision::Retry(delta.to_string().into()))
}

async fn contention() {
    for (stacks, writers) in [(1, 1usize), (1, 4), (1, 16), (1, 64), (4, 16)] {
        let sim = Simulator::builder().no_rate_limit().start().await.unwrap();
        let uri = create_session(&sim, "counter", json!({"count": 0})).await;
        sim.clear_log();
        // Each stack has its own state, as separate processes would.
        let stack = || {
            ServiceBuilder::new()
                .mpsd_with(MpsdLayer::new().rebase(RebaseLayer::new(rebase_fn(increment))))
                .service(Wire::new())
        };
        let stacks: Vec<_> = (0..stacks).map(|_| stack()).collect();
        let writers = stacks.len() * writers;
        let t0 = Instant::now();
        let tasks = (0..writers).map(|w| {
            let (stack, uri) = (stacks[w % stacks.len()].clone(), uri.clone());
            tokio::spawn(async move {
                let user = format!("w{w}");
                let mut ok = 0usize;
                for _ in 0..WRITES {
                    let read = stack.clone().oneshot(get(&uri, &user, "r")).await.unwrap();
                    let etag = read.headers()[header::ETAG].clone();
                    let body = read.into_body().collect().await.unwrap().to_bytes();
                    let session: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let count = session["properties"]["custom"]["count"].as_u64().unwrap();
                    let delta = json!({"properties": {"custom": {"count": count + 1}}});
                    let mut put = get(&uri, &user, &format!("w{w}"));
                    *put.method_mut() = Method::PUT;
                    put.headers_mut().insert(header::IF_MATCH, etag);
                    *put.body_mut() = Full::from(delta.to_string());
                    if let Ok(res) = stack.clone().oneshot(put).await {
                        ok += usize::from(res.status().is_success());
                        let _ = res.into_body().collect().await;
                    }
                }
                ok
            })
        });
        let ok: usize = join_all(tasks).await.into_iter().map(Result::unwrap).sum();
        let elapsed = t0.elapsed();
        let log = sim.log();
        let write_requests = log.iter().filter(|e| !e.path.ends_with("?c=r")).count();
        let total = writers * WRITES;
        let final_count = sim.session(SCID, "LobbySession", "counter").unwrap()["properties"]
            ["custom"]["count"]
            .as_u64()
            .unwrap() as i64;
        let name = match stacks.len() {
            1 => format!("w{writers}"),
            n => format!("{n}x{}", writers / n),
        };
        println!(
            "summary: storm/contention_{name} attempts_per_write={:.2} lost_updates={} writes_per_s={:.1} failed={}",
            write_requests as f64 / total as f64,
            ok as i64 - final_count,
            ok as f64 / elapsed.as_secs_f64(),
            total - ok,
        );
        sim.shutdown().await;
    }
}

/// Coalescing: [`CALLERS`] callers of one user GET one session at one
/// instant, [`BURSTS`] times a second apart, through the stack with a
/// rebase policy (which coalesces identical GETs: `storm/coalesce`) and
/// without one (`storm/coalesce_off`, the baseline). `requests_per_burst`:
/// requests the simulator received / bursts; `identical`: callers per
/// burst whose status and body equal the burst's first caller's, on
/// average; `failed`: callers without a 200.
async fn coalesce() {
    const BURSTS: usize = 10;
    for (name, coalescing) in [("coalesce", true), ("coalesce_off", false)] {
        let sim = Simulator::builder().no_rate_limit().start().await.unwrap();
        let uri = create_session(&sim, "read", json!({"count": 0})).await;
        sim.clear_log();
        let stack = if coalescing {
            MpsdLayer::new()
                .rebase(RebaseLayer::new(rebase_fn(increment)))
                .layer(Wire::new())
                .map_response(|res| res.map(|b| b.boxed()))
                .boxed_clone()
        } else {
            MpsdLayer::new()
                .layer(Wire::new())
                .map_response(|res| res.map(|b| b.map_err(Into::into).boxed()))
                .boxed_clone()
        };
        let (mut identical, mut failed) = (0, 0);
        for burst in 0..BURSTS {
            let answers = join_all((0..CALLERS).map(|i| {
                let stack = stack.clone();
                let req = get(&uri, "u", &format!("{burst}-{i}"));
                let req = {
                    // One question: the same URI (the tag goes in a header).
                    let (mut parts, body) = req.into_parts();
                    parts.uri = uri.parse().unwrap();
                    Request::from_parts(parts, body)
                };
                async move {
                    let res = stack.oneshot(req).await.ok()?;
                    let status = res.status();
                    let body = res.into_body().collect().await.ok()?.to_bytes();
                    Some((status, body))
                }
            }))
            .await;
            failed += answers
                .iter()
                .filter(|a| !a.as_ref().is_some_and(|(s, _)| *s == StatusCode::OK))
                .count();
            identical += answers.iter().filter(|a| **a == answers[0]).count();
            sleep(Duration::from_secs(1)).await;
        }
        println!(
            "summary: storm/{name} requests_per_burst={:.2} identical={:.1} failed={failed}",
            sim.log().len() as f64 / BURSTS as f64,
            identical as f64 / BURSTS as f64,
        );
        sim.shutdown().await;
    }
}

/// Pacing: 8 callers of one user send GETs as fast as they can for ten
/// virtual minutes against MPSD's limits (30 per 15 s, 300 per 300 s),
/// through the stack with `PaceLayer` (`pace/throttle`) and without it
/// (`pace/throttle_unpaced`). A caller told to come back later (a
/// `Refused` error) sleeps that long first.
/// `throughput_ratio`: requests served per second / the sustain limit's
/// 1 per second; `429s`: answers 429 the simulator sent.
async fn pace() {
    const SPAN: Duration = Duration::from_secs(600);
    for (name, paced) in [("throttle", true), ("throttle_unpaced", false)] {
        let sim = Simulator::builder().start().await.unwrap();
        let uri = create_session(&sim, "pace", json!({})).await;
        sim.clear_log();
        let wire = Wire::new();
        let stack = if paced {
            MpsdLayer::new()
                .pace(PaceLayer::new())
                .layer(wire.clone())
                .boxed_clone()
        } else {
            MpsdLayer::new().layer(wire.clone()).boxed_clone()
        };
        let t0 = Instant::now();
        let callers = (0..8).map(|caller| {
            let (stack, uri) = (stack.clone(), uri.clone());
            async move {
                let mut n = 0;
                while t0.elapsed() < SPAN {
                    let req = get(&uri, "u", &format!("{caller}-{n}"));
                    n += 1;
                    if let Err(e) = stack.clone().oneshot(req).await {
                        sleep(come_back_in(&e)).await;
                    }
                }
            }
        });
        join_all(callers).await;
        let log = sim.log();
        let in_span = log.iter().filter(|e| e.at - t0 < SPAN);
        let served = in_span.clone().filter(|e| !refused(e.status)).count();
        let throttled = in_span
            .filter(|e| e.status == StatusCode::TOO_MANY_REQUESTS)
            .count();
        println!(
            "summary: pace/{name} throughput_ratio={:.3} 429s={throttled}",
            served as f64 / SPAN.as_secs_f64(),
        );
        sim.shutdown().await;
    }
}

/// How long an error of the stack says to wait before trying again.
fn come_back_in(error: &BoxError) -> Duration {
    if let Some(refused) = error.downcast_ref::<Refused>() {
        return refused.retry_in.max(Duration::from_millis(1));
    }
    Duration::from_secs(1)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(async {
        overload().await;
        throttle().await;
        contention().await;
        coalesce().await;
        pace().await;
    });
}
