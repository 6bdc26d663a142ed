//! Writers of a fleet racing for one session, shared by
//! `tests/fleet_writes.rs`, `benches/fleet.rs` and
//! `examples/fleet_writer.rs`: stacks with state of their own (and, when
//! given a Redis URL, a session board shared through it), each with
//! writers doing read-modify-writes of one counter against the simulator
//! over real TCP.
#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mpsd_sim::{SimHandle, Simulator};
use serde_json::json;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_mpsd::fleet::RedisStore;
use tower_mpsd::logical::AttemptHistory;
use tower_mpsd::rebase::policy::{rebase_fn, Decision, LostRace};
use tower_mpsd::rebase::RebaseLayer;
use tower_mpsd::sequence::SessionBoard;
use tower_mpsd::{BoxError, MpsdLayer, ServiceBuilderExt};

pub const SCID: &str = "00000000-0000-0000-0000-00006a0b1c2d";
/// Stacks in this process, and writers on each, as in
/// `storm/contention_4x16`.
pub const STACKS: usize = 4;
pub const WRITERS: usize = 16;
/// Read-modify-writes per writer.
pub const WRITES: usize = 5;

/// The counter of a session, 0 if unset.
pub fn count_of(session: &serde_json::Value) -> u64 {
    session["properties"]["custom"]["count"]
        .as_u64()
        .unwrap_or(0)
}

fn count_delta(count: u64) -> Full<Bytes> {
    Full::from(json!({"properties": {"custom": {"count": count}}}).to_string())
}

/// Re-applies "add 1" to the session as it is now.
fn increment(conflict: &LostRace<'_>) -> Result<Decision, BoxError> {
    let next = count_of(conflict.session) + 1;
    let delta = json!({"properties": {"custom": {"count": next}}});
    Ok(Decision::Retry(delta.to_string().into()))
}

/// A writer's stack: the recommended stack with the read-modify-write
/// policy and `board`, over a hyper-util client.
pub fn stack(
    board: SessionBoard,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = http::Response<impl http_body::Body<Data = Bytes, Error = BoxError>>,
    Error = BoxError,
    Future = impl Send,
> + Clone
       + Send {
    stack_within(board, Duration::from_secs(20))
}

/// [`stack`], with this deadline per logical request.
pub fn stack_within(
    board: SessionBoard,
    deadline: Duration,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = http::Response<impl http_body::Body<Data = Bytes, Error = BoxError>>,
    Error = BoxError,
    Future = impl Send,
> + Clone
       + Send {
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let layer = MpsdLayer::new()
        .deadline(deadline)
        .rebase(RebaseLayer::new(rebase_fn(increment)).sequence(board));
    ServiceBuilder::new().mpsd_with(layer).service(http)
}

/// A board of its own, shared through `redis` when given (its store
/// too).
pub fn board(redis: Option<&str>) -> (SessionBoard, Option<RedisStore>) {
    let Some(url) = redis else {
        return (SessionBoard::new(), None);
    };
    let store = RedisStore::builder(url)
        .timeout(REDIS_TIMEOUT)
        .build()
        .expect("a Redis URL");
    (
        SessionBoard::builder().redis(store.clone()).build(),
        Some(store),
    )
}

/// How long a call to Redis may take here: the runs share two cores with
/// the simulator and a writer process, so the default 100 ms would fall
/// back now and then for no fault of Redis.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// A request as `user`, tagged `tag` in its query (the simulator ignores
/// it and logs it).
fn request(method: Method, uri: &str, user: &str, tag: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("{uri}?w={tag}"))
        .header(header::AUTHORIZATION, format!("XBL3.0 x={user};token"))
        .header("x-xbl-contract-version", "107")
        .body(Full::default())
        .unwrap()
}

/// What some writers got.
#[derive(Debug, Default, Clone, Copy)]
pub struct Wrote {
    pub ok: usize,
    pub failed: usize,
    /// Times a process's store found Redis failing (and fell back).
    pub fallbacks: u64,
}

impl std::ops::AddAssign for Wrote {
    fn add_assign(&mut self, other: Self) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.fallbacks += other.fallbacks;
    }
}

/// One read-modify-write of the counter at `uri` as `user`: a GET (tagged
/// `r`), then a PUT of count + 1 with `If-Match` (tagged `tag`); the
/// answer's status and attempt history, or the error.
pub async fn write_once<S, B>(
    svc: S,
    uri: &str,
    user: &str,
    tag: &str,
) -> Result<(StatusCode, AttemptHistory), BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>, Error = BoxError> + Clone,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let read = svc
        .clone()
        .oneshot(request(Method::GET, uri, user, "r"))
        .await?;
    let etag = read.headers()[header::ETAG].clone();
    let body = read.into_body().collect().await.map_err(Into::into)?;
    let count = count_of(&serde_json::from_slice(&body.to_bytes())?);
    let mut put = request(Method::PUT, uri, user, tag);
    put.headers_mut().insert(header::IF_MATCH, etag);
    *put.body_mut() = count_delta(count + 1);
    let res = svc.clone().oneshot(put).await?;
    let status = res.status();
    let history = AttemptHistory::of(&res).cloned();
    res.into_body().collect().await.map_err(Into::into)?;
    Ok((status, history.unwrap_or_default()))
}

/// `writers` writers through `svc`, each making `writes` read-modify-writes
/// of the counter at `uri` one after another.
pub async fn run_writers<S, B>(
    svc: &S,
    uri: &str,
    name: &str,
    writers: usize,
    writes: usize,
) -> Wrote
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let tasks = (0..writers).map(|w| {
        let (svc, uri, user) = (svc.clone(), uri.to_owned(), format!("{name}w{w}"));
        tokio::spawn(async move {
            let mut wrote = Wrote::default();
            for _ in 0..writes {
                match write_once(svc.clone(), &uri, &user, &user).await {
                    Ok((status, _)) if status.is_success() => wrote.ok += 1,
                    _ => wrote.failed += 1,
                }
            }
            wrote
        })
    });
    let mut wrote = Wrote::default();
    for got in join_all(tasks).await {
        wrote += got.expect("a writer runs to its end");
    }
    wrote
}

/// A simulator with its rate limits off, and a counter session at 0 on
/// it: the session's URI.
pub async fn counter_session(name: &str) -> (SimHandle, String) {
    let sim = Simulator::builder()
        .no_rate_limit()
        .start()
        .await
        .expect("the simulator starts");
    let uri = sim.session_uri(SCID, "LobbySession", name);
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut create = request(Method::PUT, &uri, "host", "setup");
    let body = json!({"members": {"me": {}}, "properties": {"custom": {"count": 0}}});
    *create.body_mut() = Full::from(body.to_string());
    let res = http.request(create).await.expect("the simulator answers");
    assert_eq!(res.status(), StatusCode::CREATED);
    sim.clear_log();
    (sim, uri)
}

/// The counter's value at the simulator.
pub fn counter(sim: &SimHandle, name: &str) -> u64 {
    count_of(
        &sim.session(SCID, "LobbySession", name)
            .expect("the session"),
    )
}

/// What a contention run shows.
#[derive(Debug)]
pub struct Contention {
    pub writes: usize,
    pub wrote: Wrote,
    /// PUTs the simulator received.
    pub puts: usize,
    /// Successful writes minus the counter's increase.
    pub lost_updates: i64,
    pub elapsed: Duration,
}

impl Contention {
    pub fn attempts_per_write(&self) -> f64 {
        self.puts as f64 / self.writes as f64
    }

    pub fn writes_per_s(&self) -> f64 {
        self.wrote.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// [`STACKS`] stacks of [`WRITERS`] writers in this process, each stack
/// with a board of its own (shared through `redis` when given), plus
/// `child`, a writer process (`examples/fleet_writer.rs`) of as many
/// writers, all writing the counter of one session.
pub async fn contention(redis: Option<&str>, child: Option<Command>) -> Contention {
    contention_with(redis, child, |_| async {}).await
}

/// [`contention`], with `meanwhile` run beside the writers (given the
/// simulator), e.g. to stop Redis mid-run.
pub async fn contention_with<F, Fut>(
    redis: Option<&str>,
    child: Option<Command>,
    meanwhile: F,
) -> Contention
where
    F: FnOnce(SimHandle) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let child = child.map(|c| (c, redis.unwrap_or_default().to_owned()));
    contention_of(|| board(redis), child, meanwhile).await
}

/// [`contention`], each stack with a board (and its store) `boards` makes
/// (e.g. shared through a Redis Cluster), no writer process.
pub async fn contention_on(boards: impl Fn() -> (SessionBoard, Option<RedisStore>)) -> Contention {
    contention_of(boards, None, |_| async {}).await
}

/// The run of [`contention_with`]: boards from `boards`, and `child` given
/// its Redis URL.
async fn contention_of<F, Fut>(
    boards: impl Fn() -> (SessionBoard, Option<RedisStore>),
    child: Option<(Command, String)>,
    meanwhile: F,
) -> Contention
where
    F: FnOnce(SimHandle) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (sim, uri) = counter_session("counter").await;
    let t0 = Instant::now();
    let child = child.map(|(c, redis)| spawn_writer(c, &uri, &redis, WRITERS, WRITES));
    let (boards, stores): (Vec<_>, Vec<_>) = (0..STACKS).map(|_| boards()).unzip();
    let stacks = boards.into_iter().enumerate().map(|(s, board)| {
        let (svc, uri) = (stack(board), uri.clone());
        async move { run_writers(&svc, &uri, &format!("s{s}"), WRITERS, WRITES).await }
    });
    let (wrote, ()) = tokio::join!(join_all(stacks), meanwhile(sim.clone()));
    let mut total = Wrote::default();
    for w in wrote {
        total += w;
    }
    let mut writes = STACKS * WRITERS * WRITES;
    if let Some(child) = child {
        let wrote = tokio::task::spawn_blocking(|| child_wrote(child));
        total += wrote.await.expect("the writer process is read");
        writes += WRITERS * WRITES;
    }
    let elapsed = t0.elapsed();
    total.fallbacks += stores
        .iter()
        .flatten()
        .map(RedisStore::fallbacks)
        .sum::<u64>();
    let puts = sim.log().iter().filter(|e| e.method == Method::PUT).count();
    let lost_updates = total.ok as i64 - counter(&sim, "counter") as i64;
    sim.shutdown().await;
    Contention {
        writes,
        wrote: total,
        puts,
        lost_updates,
        elapsed,
    }
}

/// Starts a writer process: `program` (and any leading arguments), then
/// the session's URI, the Redis URL, the writers and the writes each.
pub fn spawn_writer(
    mut program: Command,
    uri: &str,
    redis: &str,
    writers: usize,
    writes: usize,
) -> Child {
    program
        .args([uri, redis, &writers.to_string(), &writes.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the writer process runs")
}

/// What a writer process printed: `ok=<n> failed=<n> fallbacks=<n>`.
pub fn child_wrote(child: Child) -> Wrote {
    let out = child.wait_with_output().expect("the writer process ends");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.parse().ok())
            .unwrap_or_else(|| panic!("the writer printed {name}<n>: {text:?}"))
    };
    Wrote {
        ok: field("ok="),
        failed: field("failed="),
        fallbacks: field("fallbacks=") as u64,
    }
}

/// A writer process's whole life: `args` are the session's URI, the Redis
/// URL, the writers and the writes each; prints `ok=<n> failed=<n>
/// fallbacks=<n>`.
pub async fn writer_main(args: &[String]) -> Result<(), BoxError> {
    let [uri, redis, writers, writes] = args else {
        return Err("usage: SESSION_URI REDIS_URL WRITERS WRITES".into());
    };
    let (board, store) = board(Some(redis));
    let svc = stack(board);
    let wrote = run_writers(&svc, uri, "child", writers.parse()?, writes.parse()?).await;
    let fallbacks = store.map_or(0, |s| s.fallbacks());
    println!(
        "ok={} failed={} fallbacks={fallbacks}",
        wrote.ok, wrote.failed
    );
    Ok(())
}
