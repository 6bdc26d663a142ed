//! Drives a hyper-util client through every row of the MPSD status table
//! against the embedded simulator on loopback, and prints one line per row:
//! what the server sent, how the classifier read it, what the stack does.
//! Then runs the recommended stack (`MpsdLayer` with a rebase policy)
//! through a 503, a 429 and two 412s, and prints every send it made, at its
//! virtual time (the demo runs on tokio's paused clock, so waits are exact
//! and instant).
//!
//! Everything runs over HTTPS, as MPSD is served: the simulator presents
//! a self-signed certificate that the client (hyper-util with
//! hyper-rustls) trusts, and the demo runs twice, once offering only
//! `http/1.1` by ALPN and once offering `h2` too, which the server picks.
//! Each answer's HTTP version is checked against the one negotiated.
//!
//! Run it with `cargo run --example demo`. It exits non-zero
//! if any row was not produced, or the stack did not end as expected.
//! `tests/tls.rs` runs the same code as a test.

// `demo/https.rs` from here, whether this file is the example's root or a
// module of a test that includes it.
#[path = "demo/https.rs"]
pub mod https;

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Version};
use http_body_util::Full;
use mpsd_sim::{Fault, Overload, RateLimits, SimHandle, Simulator, Window};
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt};
use tower_mpsd::classify::ClassifyLayer;
use tower_mpsd::classify::{Classified, Outcome, Retryable};
use tower_mpsd::logical::AttemptHistory;
use tower_mpsd::rebase::policy::ResendDelta;
use tower_mpsd::rebase::RebaseLayer;
use tower_mpsd::response::read_response;
use tower_mpsd::rules::backoff::{Backoff, Cause, Plan};
use tower_mpsd::{MpsdLayer, ServiceBuilderExt};

use https::{https_client, HttpsClient};

type BoxError = tower_mpsd::BoxError;

/// The rows of the table, by status and split, with the outcome each must
/// produce, in the order printed.
pub const ROWS: [(&str, &str); 18] = [
    ("200 read/updated", "ok"),
    ("201 created", "created"),
    ("202 accepted", "accepted"),
    ("204 GET session: missing", "session_missing"),
    ("204 GET element: missing", "element_missing"),
    ("204 PUT session: deleted", "session_deleted"),
    ("204 PUT/DELETE element: gone", "element_gone"),
    ("304 not modified", "not_modified"),
    ("400 bad request", "bad_request"),
    ("403 text: forbidden", "forbidden"),
    ("403 json: read-only", "read_only"),
    ("404 not found", "not_found"),
    ("405 method not allowed", "method_not_allowed"),
    ("409 conflict", "conflict"),
    ("412 no body", "precondition_failed"),
    ("412 json: session changed", "session_changed"),
    ("429 too many requests", "too_many_requests"),
    ("503 service unavailable", "service_unavailable"),
];

struct Demo {
    base: String,
    client: HttpsClient,
    version: Version,
    covered: Vec<bool>,
    /// Answers that came in another HTTP version than negotiated.
    wrong_version: usize,
}

impl Demo {
    fn session(&self, name: &str) -> String {
        format!("{}/serviceconfigs/00000000-0000-0000-0000-0000000d3e70/sessionTemplates/LobbySession/sessions/{name}", self.base)
    }

    /// Sends one request and prints the row it lands on.
    async fn row(
        &mut self,
        row: usize,
        method: Method,
        uri: &str,
        user: &str,
        headers: &[(header::HeaderName, &str)],
        body: &str,
    ) -> Result<Option<String>, BoxError> {
        let mut req = Request::builder().method(method).uri(uri);
        if !user.is_empty() {
            req = req.header(header::AUTHORIZATION, format!("XBL3.0 x={user};demo-token"));
        }
        for (name, value) in headers {
            req = req.header(name, *value);
        }
        let body = Bytes::from(body.to_owned());
        let req = req
            .header("x-xbl-contract-version", "107")
            .body(Full::new(body))?;

        let client = ServiceBuilder::new()
            .layer(ClassifyLayer::new())
            .service(self.client.clone());
        let res = client.oneshot(req).await?;
        self.wrong_version += usize::from(res.version() != self.version);
        let status = res.status();
        let classified = res
            .extensions()
            .get::<Classified>()
            .ok_or("not classified")?;
        let call = classified.call().clone();
        let etag = res
            .headers()
            .get(header::ETAG)
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let read = read_response(res, 1 << 20).await;
        let outcome = read
            .as_ref()
            .map(|ok| ok.outcome)
            .unwrap_or_else(|e| e.outcome());
        let (label, expected) = ROWS[row];
        self.covered[row] |= outcome.name() == expected;
        println!(
            "{:<30} server sent {:<3} -> {:<45} body: {:<9} plan: {}",
            label,
            status.as_u16(),
            outcome.to_string(),
            format!("{:?}", outcome.body_kind(&call)),
            action(outcome),
        );
        Ok(etag)
    }
}

/// What the stack does with an outcome.
fn action(outcome: Outcome) -> String {
    let plan =
        |cause, hint| match Backoff::default().plan(cause, hint, 1, 0.5, Duration::from_secs(20)) {
            Plan::Wait(d) => format!("retry after {d:?}"),
            Plan::GiveUp { wait, why } => format!("give up at once ({why:?}, needed {wait:?})"),
        };
    match outcome.retryable() {
        Retryable::No if outcome.is_success() => "return success".into(),
        Retryable::No => "return typed error, no retry".into(),
        Retryable::Throttled { after } => plan(Cause::Throttled, after),
        Retryable::Overloaded { after } => plan(Cause::Overloaded, after),
        Retryable::IfSafeToRepeat => "retry if safe to repeat".into(),
        Retryable::AfterRebase => "return typed error; retryable after a rebase".into(),
        _ => "return".into(),
    }
}

/// Sends one request through the recommended stack and prints its sends.
async fn through_stack(
    https: &HttpsClient,
    label: &str,
    method: Method,
    uri: &str,
    user: &str,
    headers: &[(header::HeaderName, &str)],
    body: &str,
) -> Result<u16, BoxError> {
    let client = ServiceBuilder::new()
        .mpsd_with(MpsdLayer::new().rebase(RebaseLayer::new(ResendDelta)))
        .service(https.clone());
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("XBL3.0 x={user};demo-token"))
        .header("x-xbl-contract-version", "107");
    for (name, value) in headers {
        req = req.header(name, *value);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned())))?;
    let res = client.oneshot(req).await?;
    let history = AttemptHistory::of(&res).ok_or("no history")?;
    let sends: Vec<String> = history
        .attempts()
        .iter()
        .map(|a| {
            let status = a.outcome.map_or(0, |o| o.status().as_u16());
            format!("{:?} {status} at {:?}", a.purpose, a.sent_after)
        })
        .collect();
    let why = history
        .gave_up
        .map(|why| format!(" (handed back: {why:?})"))
        .unwrap_or_default();
    println!("{label:<30} -> {}{why}", res.status().as_u16());
    println!("{:<30}    sends: {}", "", sends.join(", "));
    Ok(res.status().as_u16())
}

/// The stack at work: each scenario and the final status it must end with.
async fn stack_at_work(
    sim: &SimHandle,
    https: &HttpsClient,
    session: &str,
    stale: &str,
) -> Result<bool, BoxError> {
    println!("\nThe recommended stack (MpsdLayer + RebaseLayer(ResendDelta)), virtual times:");
    let no: &[(header::HeaderName, &str)] = &[];
    let retry_after = |s: &'static str| (header::RETRY_AFTER, header::HeaderValue::from_static(s));
    let (name, value) = retry_after("2");
    sim.script(Fault::status(http::StatusCode::SERVICE_UNAVAILABLE).header(name, value));
    let mut ok = through_stack(
        https,
        "503, Retry-After: 2",
        Method::GET,
        session,
        "heidi",
        no,
        "",
    )
    .await?
        == 200;
    // frank used up his burst window above: the stack waits out the 429.
    ok &= through_stack(
        https,
        "429 from the rate limiter",
        Method::GET,
        session,
        "frank",
        no,
        "",
    )
    .await?
        == 200;
    let ready = json!({"properties": {"custom": {"ready": true}}}).to_string();
    let me = format!("{session}/members/me");
    ok &= through_stack(
        https,
        "412: stale If-Match, rebased",
        Method::PUT,
        &me,
        "alice",
        &[(header::IF_MATCH, stale)],
        &ready,
    )
    .await?
        == 200;
    ok &= through_stack(
        https,
        "412: create-only, not rebased",
        Method::PUT,
        session,
        "ivan",
        &[(header::IF_NONE_MATCH, "*")],
        &json!({"members": {"me": {}}}).to_string(),
    )
    .await?
        == 412;
    Ok(ok)
}

/// What one run of the demo found.
#[derive(Debug)]
pub struct Report {
    /// Rows of the table produced, of [`ROWS`]`.len()`.
    pub covered: usize,
    /// Whether the stack's scenarios ended as expected.
    pub stack_ok: bool,
    /// Answers in another HTTP version than negotiated.
    pub wrong_version: usize,
}

impl Report {
    /// Every row, the stack as expected, every answer in the right version.
    pub fn passed(&self) -> bool {
        self.covered == ROWS.len() && self.stack_ok && self.wrong_version == 0
    }
}

/// Runs every row and the stack's scenarios against a fresh HTTPS
/// simulator, over HTTP/2 (`h2`) or HTTP/1.1.
pub async fn run(h2: bool) -> Result<Report, BoxError> {
    let limits = RateLimits {
        burst: Window {
            max: 6,
            period: Duration::from_secs(15),
        },
        ..RateLimits::mpsd()
    };
    let sim = Simulator::builder()
        .rate_limit(limits)
        .https()
        .start()
        .await?;
    let version = if h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    println!("MPSD simulator on {}, speaking {version:?}", sim.base_uri());
    let mut demo = Demo {
        base: sim.base_uri(),
        client: https_client(&sim, h2)?,
        version,
        covered: vec![false; ROWS.len()],
        wrong_version: 0,
    };
    let s = demo.session("demo");
    let no: &[(header::HeaderName, &str)] = &[];
    let me = json!({"members": {"me": {}}}).to_string();

    let first = demo
        .row(
            1,
            Method::PUT,
            &s,
            "alice",
            no,
            &json!({"members": {"me": {}}, "constants": {"custom": {"mode": "ffa"}}}).to_string(),
        )
        .await?;
    let first = first.ok_or("no ETag")?;
    demo.row(0, Method::GET, &s, "alice", no, "").await?;
    // MPSD's table allows 202 without saying which call answers it: the
    // simulator sends it only when scripted.
    let text = http::HeaderValue::from_static("text/plain");
    sim.script(Fault::status(http::StatusCode::ACCEPTED).header(header::CONTENT_TYPE, text));
    demo.row(
        2,
        Method::POST,
        &format!(
            "{}/serviceconfigs/00000000-0000-0000-0000-0000000d3e70/hoppers/ranked",
            demo.base
        ),
        "alice",
        no,
        &json!({}).to_string(),
    )
    .await?;
    demo.row(3, Method::GET, &demo.session("missing"), "alice", no, "")
        .await?;
    demo.row(4, Method::GET, &format!("{s}/members/9"), "bob", no, "")
        .await?;
    let solo = demo.session("solo");
    demo.row(1, Method::PUT, &solo, "bob", no, &me).await?;
    demo.row(
        5,
        Method::PUT,
        &solo,
        "bob",
        no,
        &json!({"members": {"me": null}}).to_string(),
    )
    .await?;
    demo.row(6, Method::DELETE, &format!("{s}/members/me"), "bob", no, "")
        .await?;
    let current = demo
        .row(
            0,
            Method::PUT,
            &s,
            "bob",
            no,
            &json!({"properties": {"custom": {"round": 2}}}).to_string(),
        )
        .await?;
    demo.row(
        7,
        Method::GET,
        &s,
        "carol",
        &[(
            header::IF_NONE_MATCH,
            current.as_deref().unwrap_or_default(),
        )],
        "",
    )
    .await?;
    demo.row(8, Method::PUT, &s, "carol", no, "{\"members\": ")
        .await?;
    demo.row(9, Method::GET, &s, "", no, "").await?;
    let locked = demo.session("locked");
    demo.row(
        1,
        Method::PUT,
        &locked,
        "carol",
        no,
        &json!({"members": {"me": {}}, "constants": {"system": {"writeRestriction": "members"}}})
            .to_string(),
    )
    .await?;
    demo.row(
        10,
        Method::PUT,
        &format!("{locked}/properties"),
        "dave",
        no,
        &json!({"custom": {"x": 1}}).to_string(),
    )
    .await?;
    demo.row(
        11,
        Method::GET,
        &format!(
            "{}/serviceconfigs/x/sessionTemplates/NoSuchTemplate/sessions/s",
            demo.base
        ),
        "dave",
        no,
        "",
    )
    .await?;
    demo.row(12, Method::POST, &s, "dave", no, &json!({}).to_string())
        .await?;
    demo.row(
        13,
        Method::PUT,
        &s,
        "dave",
        no,
        &json!({"constants": {"custom": {"mode": "teams"}}}).to_string(),
    )
    .await?;
    demo.row(
        14,
        Method::PUT,
        &s,
        "erin",
        &[(header::IF_NONE_MATCH, "*")],
        &me,
    )
    .await?;
    demo.row(
        15,
        Method::PUT,
        &format!("{s}/members/me"),
        "erin",
        &[(header::IF_MATCH, first.as_str())],
        &json!({}).to_string(),
    )
    .await?;
    for _ in 0..6 {
        demo.row(0, Method::GET, &s, "frank", no, "").await?;
    }
    demo.row(16, Method::GET, &s, "frank", no, "").await?;
    sim.set_overload(Some(Overload {
        capacity: 0,
        window: Duration::from_secs(5),
    }));
    demo.row(17, Method::GET, &s, "grace", no, "").await?;
    sim.set_overload(None);
    let stack_ok = stack_at_work(&sim, &demo.client, &s, &first).await?;

    let covered = demo.covered.iter().filter(|c| **c).count();
    for (row, _) in demo.covered.iter().enumerate().filter(|(_, c)| !**c) {
        println!("NOT COVERED: {}", ROWS[row].0);
    }
    println!("rows covered: {covered}/{}", ROWS.len());
    println!("stack scenarios as expected: {stack_ok}");
    println!(
        "answers in another version than {version:?}: {}",
        demo.wrong_version
    );
    sim.shutdown().await;
    Ok(Report {
        covered,
        stack_ok,
        wrong_version: demo.wrong_version,
    })
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), BoxError> {
    let mut passed = true;
    for h2 in [false, true] {
        passed &= run(h2).await?.passed();
        println!();
    }
    if !passed {
        std::process::exit(1)
    }
    Ok(())
}
