//! A fleet against the simulator, shared by `tests/fleet.rs`,
//! `benches/fleet.rs` and `examples/fleet_member.rs`: a real `redis-server`
//! started and stopped here, a member's stack over a hyper-util client, and
//! the scenarios the tests assert on and the bench prints.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::Range;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::header::RETRY_AFTER;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mpsd_sim::LogEntry;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};
use tower_mpsd::fleet::{RedisStore, WhileAway};
use tower_mpsd::pace::{Limits, PaceLayer, PaceTable, Window};
use tower_mpsd::retry::{Cooldowns, RetryLayer};
use tower_mpsd::{BoxError, MpsdLayer};

/// A `redis-server` of its own on a free loopback port, without
/// persistence; stopped when dropped.
///
/// While one lives, no other starts in this process: the fleet scenarios
/// run in real time and count arrivals around an instant, so they run one
/// at a time rather than load each other's two cores.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    _one_at_a_time: MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

impl RedisServer {
    /// Starts one and waits until it answers PING. `None` (with a line on
    /// stderr saying how to install it) when `redis-server` is missing,
    /// unless `CI=true`, where that panics.
    pub fn start() -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok();
        if !found {
            let how = "install it with `apt-get install -y redis-server`";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("redis-server is missing: {how}");
            }
            eprintln!("SKIPPED: redis-server is missing; {how} to run the fleet tests");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self {
            child: None,
            port,
            // A scenario that failed (and poisoned the lock) is no reason
            // to fail the next.
            _one_at_a_time: ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()),
        };
        server.restart();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The calls clients have made since the server started, from
    /// `INFO commandstats`: the commands a client sends itself (a script
    /// call, a subscription, a connection's set-up), not those a script
    /// runs inside Redis, which the stats count too. `INFO` (this count's
    /// own) is left out.
    pub fn client_calls(&self) -> u64 {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("Redis answers");
        stream.write_all(b"INFO commandstats\r\n").unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        // A bulk string: `$<len>\r\n<text>\r\n`.
        let text = loop {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "Redis closed the connection");
            reply.extend_from_slice(&buf[..n]);
            let head = String::from_utf8_lossy(&reply);
            let Some((len, body)) = head.split_once("\r\n") else {
                continue;
            };
            let len: usize = len.trim_start_matches('$').parse().unwrap();
            if body.len() >= len {
                break body[..len].to_owned();
            }
        };
        text.lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let top_level = CLIENT_COMMANDS
                    .iter()
                    .any(|c| name == *c || name.starts_with(&format!("{c}|")));
                let calls = stats.strip_prefix("calls=")?.split(',').next()?;
                top_level.then(|| calls.parse::<u64>().ok()).flatten()
            })
            .sum()
    }

    /// Stops the server (as a crash would: SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port, empty, and waits for PING.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        for _ in 0..500 {
            if ping(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not answer PING within 5 s");
    }
}

impl RedisServer {
    /// Holds every client's commands for `ms` milliseconds (`CLIENT
    /// PAUSE`): calls time out as on a lost packet, and Redis keeps its
    /// state.
    pub fn pause(&self, ms: u64) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("Redis answers");
        stream
            .write_all(format!("CLIENT PAUSE {ms} ALL\r\n").as_bytes())
            .unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"+OK\r\n");
    }
}

/// The commands the crate's clients send themselves; the scripts' own
/// commands (`TIME`, `ZADD`, `PUBLISH`, ...) run inside these calls.
const CLIENT_COMMANDS: &[&str] = &[
    "evalsha",
    "eval",
    "script",
    "subscribe",
    "ssubscribe",
    "unsubscribe",
    "hello",
    "ping",
    "select",
    "client",
    "auth",
    "readonly",
    "cluster",
];

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut buf = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut buf).is_ok()
        && &buf == b"+PONG\r\n"
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The simulator's windows in the fleet scenarios: MPSD's two windows
/// scaled down, as in the measurements (10 per 1 s, 40 per 5 s).
pub fn sim_windows() -> mpsd_sim::RateLimits {
    let w = |max, secs| mpsd_sim::Window {
        max,
        period: Duration::from_secs(secs),
    };
    mpsd_sim::RateLimits {
        burst: w(10, 1),
        sustain: w(40, 5),
    }
}

/// Windows the scenarios without a rate limit never reach.
pub fn roomy() -> Limits {
    Limits::new(
        Window::new(100_000, Duration::from_secs(1)),
        Window::new(100_000, Duration::from_secs(1)),
    )
}

/// The same windows for the pace layer.
pub fn pace_limits() -> Limits {
    let sim = sim_windows();
    Limits::new(
        Window::new(sim.burst.max, sim.burst.period),
        Window::new(sim.sustain.max, sim.sustain.period),
    )
}

/// How many requests the windows admit in `d` from an empty start: the
/// greedy schedule (each send at the earliest instant), which no other
/// beats.
pub fn limit_in(d: Duration) -> usize {
    let sim = sim_windows();
    let mut sends: Vec<Duration> = Vec::new();
    loop {
        let mut next = sends.last().copied().unwrap_or_default();
        for w in [sim.burst, sim.sustain] {
            if let Some(i) = sends.len().checked_sub(w.max as usize) {
                next = next.max(sends[i] + w.period);
            }
        }
        if next >= d {
            return sends.len();
        }
        sends.push(next);
    }
}

/// One member's client: answers' statuses, or the stack's error.
pub type Member = BoxCloneService<Request<Full<Bytes>>, StatusCode, BoxError>;

/// A member of the fleet: the crate's stack with its own cooldowns and
/// pace table, shared through Redis when given a URL.
pub struct MemberState {
    pub client: Member,
    pub cooldowns: Cooldowns,
    pub table: PaceTable,
    pub store: Option<RedisStore>,
}

pub fn member(redis: Option<&str>, limits: Limits) -> MemberState {
    let store = redis.map(|url| RedisStore::open(url).expect("a Redis URL"));
    member_with(store, limits)
}

/// A member sharing through `store` when given (any kind of Redis).
pub fn member_with(store: Option<RedisStore>, limits: Limits) -> MemberState {
    let mut table = PaceTable::builder().limits(limits).no_routes();
    let mut cooldowns = Cooldowns::builder().release_spacing(RELEASE_SPACING);
    if let Some(store) = &store {
        table = table.redis(store.clone());
        cooldowns = cooldowns.redis(store.clone());
    }
    let (table, cooldowns) = (table.build(), cooldowns.build());
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let stack = MpsdLayer::new()
        .retry(RetryLayer::new().with_cooldowns(cooldowns.clone()))
        .pace(PaceLayer::with_table(table.clone()));
    let client = stack
        .layer(http)
        .map_response(|res| res.status())
        .map_err(Into::into);
    MemberState {
        client: BoxCloneService::new(client),
        cooldowns,
        table,
        store,
    }
}

/// How late a request another member let through just before the
/// cooldown reached Redis may still arrive: far above loopback latency
/// (about a millisecond), far below the 2 s cooldowns it is measured in,
/// and room for a loaded machine running the suite.
pub const IN_FLIGHT: Duration = Duration::from_millis(250);

/// How far apart a cooldown's waiters are released in the scenarios.
pub const RELEASE_SPACING: Duration = Duration::from_millis(100);

/// A GET of `user`'s session, as that user.
pub fn get(base: &str, user: &str) -> Request<Full<Bytes>> {
    Request::get(format!(
        "{base}/serviceconfigs/00000000-0000-0000-0000-00006a0b1c2d/sessionTemplates/LobbySession/sessions/{user}-lobby"
    ))
    .header(header::AUTHORIZATION, format!("XBL3.0 x={user};token"))
    .header("x-xbl-contract-version", "107")
    .body(Full::default())
    .unwrap()
}

/// What `callers` callers of one member did, each sending for `user` one
/// request after another until `until`, pausing `think` between.
#[derive(Debug, Default, Clone)]
pub struct Sent {
    pub ok: usize,
    pub failed: usize,
    pub latencies: Vec<Duration>,
    /// When each request started.
    pub starts: Vec<Instant>,
}

impl Sent {
    /// Requests started at or after `from`.
    pub fn started_from(&self, from: Instant) -> usize {
        self.starts.iter().filter(|&&at| at >= from).count()
    }
}

pub async fn run_callers(
    client: &Member,
    base: &str,
    users: &[impl AsRef<str>],
    callers: usize,
    until: Instant,
    think: Duration,
) -> Sent {
    let mut tasks = Vec::new();
    for i in 0..callers {
        let client = client.clone();
        let base = base.to_owned();
        let user = users[i % users.len()].as_ref().to_owned();
        tasks.push(tokio::spawn(async move {
            let mut sent = Sent::default();
            while Instant::now() < until {
                let start = Instant::now();
                match client.clone().oneshot(get(&base, &user)).await {
                    Ok(_) => sent.ok += 1,
                    Err(_) => sent.failed += 1,
                }
                sent.latencies.push(start.elapsed());
                sent.starts.push(start);
                tokio::time::sleep(think).await;
            }
            sent
        }));
    }
    let mut all = Sent::default();
    for task in tasks {
        let sent = task.await.unwrap();
        all.ok += sent.ok;
        all.failed += sent.failed;
        all.latencies.extend(sent.latencies);
        all.starts.extend(sent.starts);
    }
    all
}

/// The 99th percentile, in milliseconds.
pub fn p99_ms(latencies: &mut [Duration]) -> f64 {
    latencies.sort_unstable();
    let i = (latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1));
    latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// A simulator on loopback with its rate limits off, for scenarios
/// whose only throttling is what they script.
pub async fn unlimited_sim() -> mpsd_sim::SimHandle {
    let sim = mpsd_sim::Simulator::builder().no_rate_limit();
    sim.start().await.unwrap()
}

/// The example `name` (`fleet_member`, `fleet_writer`), which `cargo
/// test` builds beside the test binary running this.
pub fn example_exe(name: &str) -> Command {
    let deps = std::env::current_exe().unwrap();
    let exe = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(exe.exists(), "{} is built by cargo test", exe.display());
    Command::new(exe)
}

/// Starts a member process: `member` is its program (and any leading
/// arguments); the base URI, Redis URL, user and seconds follow.
pub fn spawn_child(mut member: Command, base: &str, redis: &str, user: &str, secs: f64) -> Child {
    member
        .args([base, redis, user, &secs.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the member process runs")
}

/// A member process's whole life: `args` are the base URI, the Redis URL,
/// the user and the seconds to run; sends GETs of the user's session from
/// four callers, then prints `ok=<answers> failed=<errors>`.
pub async fn member_main(args: &[String]) -> Result<(), BoxError> {
    let start = Instant::now();
    let sent = member_run(args).await?;
    let warm = sent.started_from(start + WARM);
    println!("ok={} failed={} warm={warm}", sent.ok, sent.failed);
    Ok(())
}

/// A number a member process's output gives as `name=<n>`.
fn printed(stdout: &str, name: &str) -> usize {
    stdout
        .split_whitespace()
        .filter_map(|part| part.split_once('='))
        .filter(|(key, _)| *key == name)
        .filter_map(|(_, n)| n.parse::<usize>().ok())
        .sum()
}

async fn member_run(args: &[String]) -> Result<Sent, BoxError> {
    let [base, redis, user, secs] = args else {
        return Err("usage: BASE_URI REDIS_URL USER SECONDS".into());
    };
    let member = member(Some(redis), pace_limits());
    let until = Instant::now() + Duration::from_secs_f64(secs.parse()?);
    let sent = run_callers(
        &member.client,
        base,
        &[user],
        CALLERS,
        until,
        Duration::ZERO,
    )
    .await;
    Ok(sent)
}

/// The fleet's members in process, each with state of its own.
pub const MEMBERS: usize = 4;
/// Callers per member.
pub const CALLERS: usize = 4;

/// What a throttle run shows at the simulator.
#[derive(Debug)]
pub struct Throttle {
    /// Requests answered 429.
    pub throttled: usize,
    /// Requests admitted (not 429) that arrived within the run.
    pub admitted: usize,
    /// `admitted` over what the windows admit in the run.
    pub ratio: f64,
    /// Requests the callers made (answered or refused), the child's too.
    pub requests: usize,
    /// With Redis: the calls its clients made from before the fleet
    /// started until the end, and from [`WARM`] into the run.
    pub calls: Option<(u64, u64)>,
    /// Requests the callers started from [`WARM`] into the run (each
    /// reserves its slot then), the child's too.
    pub started_warm: usize,
}

/// When every member has connected, loaded its scripts and subscribed:
/// the calls after it are those of the requests (and heartbeats).
pub const WARM: Duration = Duration::from_secs(2);

/// A scenario's simulator and the members of the fleet sending to it.
struct Fleet {
    sim: mpsd_sim::SimHandle,
    base: String,
    members: Vec<MemberState>,
}

impl Fleet {
    /// The simulator `sim` describes and `members` members of `limits`,
    /// sharing `redis` when given.
    async fn start(
        sim: mpsd_sim::SimBuilder,
        members: usize,
        redis: Option<&str>,
        limits: Limits,
    ) -> Self {
        let sim = sim.start().await.unwrap();
        let base = sim.base_uri();
        let members = (0..members).map(|_| member(redis, limits)).collect();
        Self { sim, base, members }
    }

    /// `callers` callers of each member send for `users` until `until`,
    /// pausing `think` between requests: what each member sent.
    async fn send(
        &self,
        users: &[impl AsRef<str>],
        callers: usize,
        until: Instant,
        think: Duration,
    ) -> Vec<Sent> {
        let runs = self
            .members
            .iter()
            .map(|m| run_callers(&m.client, &self.base, users, callers, until, think));
        futures_util::future::join_all(runs).await
    }

    /// Scripts `fault` on the simulator `after` from now, in a task.
    fn script_after(&self, after: Duration, fault: mpsd_sim::Fault) -> JoinHandle<()> {
        let sim = self.sim.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            sim.script(fault);
        })
    }
}

/// `prefix0`, `prefix1`, … : one user per caller of a member.
fn users(prefix: &str) -> Vec<String> {
    (0..CALLERS).map(|i| format!("{prefix}{i}")).collect()
}

/// When the simulator first answered `status`.
fn first_answered(log: &[LogEntry], status: StatusCode) -> Instant {
    log.iter()
        .find(|e| e.status == status)
        .unwrap_or_else(|| panic!("a {status} was answered"))
        .at
}

/// Requests arriving in `during`.
fn arrivals(log: &[LogEntry], during: Range<Instant>) -> usize {
    log.iter().filter(|e| during.contains(&e.at)).count()
}

/// A scripted `status` with `Retry-After: 2`.
fn two_seconds(status: StatusCode) -> mpsd_sim::Fault {
    mpsd_sim::Fault::status(status).header(RETRY_AFTER, HeaderValue::from_static("2"))
}

/// `MEMBERS` stacks (and the child process, when given) hammer one user
/// for `secs` against the simulator's scaled-down windows.
pub async fn throttle(server: Option<&RedisServer>, child: Option<Command>, secs: f64) -> Throttle {
    let sim = mpsd_sim::Simulator::builder().rate_limit(sim_windows());
    let calls_before = server.map(RedisServer::client_calls);
    let url = server.map(RedisServer::url);
    let redis = url.as_deref();
    let fleet = Fleet::start(sim, MEMBERS, redis, pace_limits()).await;
    let run = Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let child = child.map(|member| {
        let redis = redis.expect("a child shares Redis");
        spawn_child(member, &fleet.base, redis, "fleet", secs)
    });
    let warm = async {
        tokio::time::sleep_until(t0 + WARM).await;
        server.map(RedisServer::client_calls)
    };
    let (sent, calls_warm) = tokio::join!(
        fleet.send(&["fleet"], CALLERS, t0 + run, Duration::ZERO),
        warm
    );
    let mut requests: usize = sent.iter().map(|s| s.ok + s.failed).sum();
    let mut started_warm: usize = sent.iter().map(|s| s.started_from(t0 + WARM)).sum();
    if let Some(child) = child {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "the child member failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("ok="));
        requests += printed(&stdout, "ok") + printed(&stdout, "failed");
        started_warm += printed(&stdout, "warm");
    }
    let calls_after = server.map(RedisServer::client_calls);
    let log = fleet.sim.log();
    let throttled = log
        .iter()
        .filter(|e| e.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let admitted = log
        .iter()
        .filter(|e| e.status != StatusCode::TOO_MANY_REQUESTS && e.at < t0 + run)
        .count();
    Throttle {
        throttled,
        admitted,
        ratio: admitted as f64 / limit_in(run) as f64,
        requests,
        calls: calls_before
            .zip(calls_warm)
            .zip(calls_after)
            .map(|((before, warm), after)| (after - before, after - warm)),
        started_warm,
    }
}

/// What the fleet sent around a 503 with `Retry-After: 2`.
#[derive(Debug)]
pub struct Overload {
    /// Requests arriving after the 503 (plus [`IN_FLIGHT`] for those
    /// already on their way) and before its `Retry-After` ended.
    pub early: usize,
    /// Requests arriving within half a release spacing of the first one
    /// after the cooldown: the probes.
    pub probes: usize,
    /// Requests arriving in the first 100 ms from the first one after the
    /// cooldown: what the recovering service gets at once.
    pub amplification: usize,
    /// Requests arriving in the first second from the first one after the
    /// cooldown: the probe and the spaced release.
    pub first_second: usize,
}

pub async fn overload(redis: Option<&str>) -> Overload {
    let sim = mpsd_sim::Simulator::builder().no_rate_limit();
    let fleet = Fleet::start(sim, MEMBERS, redis, roomy()).await;
    let until = Instant::now() + Duration::from_secs(5);
    let fault = fleet.script_after(
        Duration::from_secs(1),
        two_seconds(StatusCode::SERVICE_UNAVAILABLE),
    );
    fleet
        .send(&users("u"), CALLERS, until, Duration::from_millis(20))
        .await;
    fault.await.unwrap();
    let log = fleet.sim.log();
    let at_503 = first_answered(&log, StatusCode::SERVICE_UNAVAILABLE);
    let end = at_503 + Duration::from_secs(2);
    let first = log
        .iter()
        .map(|e| e.at)
        .filter(|&at| at >= end)
        .min()
        .expect("requests after");
    Overload {
        early: arrivals(&log, at_503 + IN_FLIGHT..end),
        probes: arrivals(&log, first..first + RELEASE_SPACING / 2),
        amplification: arrivals(&log, first..first + Duration::from_millis(100)),
        first_second: arrivals(&log, first..first + Duration::from_secs(1)),
    }
}

/// What the fleet saw with Redis killed for two seconds mid-run.
#[derive(Debug)]
pub struct RedisDown {
    pub ok: usize,
    pub failed: usize,
    pub p99_ms: f64,
    /// Members that fell back to their own state.
    pub fell_back: usize,
    /// Members sharing state again at the end.
    pub shared_after: usize,
}

pub async fn redis_down(redis: &mut RedisServer) -> RedisDown {
    let sim = mpsd_sim::Simulator::builder().no_rate_limit();
    let url = redis.url();
    let fleet = Fleet::start(sim, MEMBERS, Some(&url), roomy()).await;
    let until = Instant::now() + Duration::from_secs(6);
    let users = users("d");
    let all = fleet.send(&users, CALLERS, until, Duration::from_millis(10));
    let chaos = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        redis.kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        redis.restart();
    };
    let (sent, ()) = tokio::join!(all, chaos);
    let mut latencies: Vec<Duration> = sent.iter().flat_map(|s| s.latencies.clone()).collect();
    let stores: Vec<&RedisStore> = fleet
        .members
        .iter()
        .filter_map(|m| m.store.as_ref())
        .collect();
    RedisDown {
        ok: sent.iter().map(|s| s.ok).sum(),
        failed: sent.iter().map(|s| s.failed).sum(),
        p99_ms: p99_ms(&mut latencies),
        fell_back: stores.iter().filter(|s| s.fallbacks() > 0).count(),
        shared_after: stores.iter().filter(|s| s.is_shared()).count(),
    }
}

/// Requests of two users while one of them is throttled.
#[derive(Debug)]
pub struct OneUser {
    /// Requests of the throttled user arriving within its `Retry-After`
    /// (after 20 ms for those in flight).
    pub throttled_user_early: usize,
    /// Requests of the other user arriving meanwhile.
    pub other_user_meanwhile: usize,
}

/// Two members send for `alice` and `bob`; one of alice's requests is
/// answered 429 with `Retry-After: 2`.
pub async fn one_user_throttled(redis: &str) -> OneUser {
    let sim = mpsd_sim::Simulator::builder().no_rate_limit();
    let fleet = Fleet::start(sim, 2, Some(redis), roomy()).await;
    let until = Instant::now() + Duration::from_secs(4);
    let fault = fleet.script_after(
        Duration::from_millis(500),
        two_seconds(StatusCode::TOO_MANY_REQUESTS).path_contains("/alice-"),
    );
    fleet
        .send(&["alice", "bob"], 4, until, Duration::from_millis(20))
        .await;
    fault.await.unwrap();
    let log = fleet.sim.log();
    let at = first_answered(&log, StatusCode::TOO_MANY_REQUESTS);
    let within = |e: &&LogEntry, user: &str| {
        e.user.as_deref() == Some(user)
            && e.at > at + IN_FLIGHT
            && e.at < at + Duration::from_secs(2)
    };
    OneUser {
        throttled_user_early: log.iter().filter(|e| within(e, "alice")).count(),
        other_user_meanwhile: log.iter().filter(|e| within(e, "bob")).count(),
    }
}

/// What a fleet hammering one user saw with Redis stopped for a while.
#[derive(Debug)]
pub struct Outage {
    /// Requests answered 429.
    pub throttled: usize,
    /// Requests admitted (not 429) within the run over what the windows
    /// admit in it.
    pub ratio: f64,
    /// Requests admitted while Redis was stopped.
    pub admitted_meanwhile: usize,
    /// Requests that ended in an error (a pace refusal, a retry given up).
    pub failed: usize,
    /// Members that fell back to their own state.
    pub fell_back: usize,
    /// Members sharing state again at the end.
    pub shared_after: usize,
    /// The fleet size each member knew at the end.
    pub sizes: Vec<u32>,
}

/// `MEMBERS` stacks, each with a store of its own ruled by `rule` and
/// beating every `heartbeat`, hammer one user for `run` against the
/// simulator's windows; Redis is killed (by its PID) `down_at` into the
/// run and started again on the same port `down_for` later.
pub async fn outage(
    redis: &mut RedisServer,
    rule: WhileAway,
    heartbeat: Duration,
    run: Duration,
    down: Range<Duration>,
) -> Outage {
    let sim = mpsd_sim::Simulator::builder()
        .rate_limit(sim_windows())
        .start()
        .await
        .unwrap();
    let base = sim.base_uri();
    // An empty Redis: members of earlier scenarios count in a fleet until
    // three of their heartbeats have passed.
    redis.restart();
    let url = redis.url();
    let members: Vec<MemberState> = (0..MEMBERS)
        .map(|_| {
            let store = RedisStore::builder(url.as_str())
                .while_away(rule)
                .heartbeat(heartbeat)
                .build()
                .expect("a Redis URL");
            member_with(Some(store), pace_limits())
        })
        .collect();
    let t0 = Instant::now();
    let runs = members.iter().map(|m| {
        run_callers(
            &m.client,
            &base,
            &["fleet"],
            CALLERS,
            t0 + run,
            Duration::ZERO,
        )
    });
    let chaos = async {
        tokio::time::sleep_until(t0 + down.start).await;
        redis.kill();
        tokio::time::sleep_until(t0 + down.end).await;
        redis.restart();
    };
    let (sent, ()) = tokio::join!(futures_util::future::join_all(runs), chaos);
    let log = sim.log();
    let admitted = |during: Range<Instant>| {
        log.iter()
            .filter(|e| e.status != StatusCode::TOO_MANY_REQUESTS && during.contains(&e.at))
            .count()
    };
    let stores: Vec<&RedisStore> = members.iter().filter_map(|m| m.store.as_ref()).collect();
    Outage {
        throttled: log
            .iter()
            .filter(|e| e.status == StatusCode::TOO_MANY_REQUESTS)
            .count(),
        ratio: admitted(t0..t0 + run) as f64 / limit_in(run) as f64,
        admitted_meanwhile: admitted(t0 + down.start..t0 + down.end),
        failed: sent.iter().map(|s| s.failed).sum(),
        fell_back: stores.iter().filter(|s| s.fallbacks() > 0).count(),
        shared_after: stores.iter().filter(|s| s.is_shared()).count(),
        sizes: stores.iter().map(|s| s.fleet_size()).collect(),
    }
}
