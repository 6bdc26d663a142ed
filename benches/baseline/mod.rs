//! The baselines the benches compare the stack with, written as a user of
//! tower would write them today. Each is small on purpose.
//!
//! - [`StatusPolicy`]: a hand-written `tower::retry::Policy` that retries
//!   429, 5xx and transport errors by status, with tower's
//!   `ExponentialBackoff` and a shared `TpsBudget`. It ignores
//!   `Retry-After` and shares no cooldown: the naive baseline.
//! - [`sdk_call`] with an [`SdkGate`]: a re-creation of the retry policy of
//!   Microsoft's own client SDK, as read from its source (backoff, the
//!   `Retry-After` gate per API, no retry of session writes).
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tower::retry::backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::Policy;
use tower::util::rng::{HasherRng, Rng};
use tower::{Service, ServiceExt};

/// The boxed error of the baselines.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The naive baseline: retry 429, any 5xx and transport errors, up to
/// `max_attempts` sends, waiting tower's exponential backoff between them
/// (`Retry-After` is not read), while a `TpsBudget` shared by all clones
/// allows. This is the policy tower's docs sketch, with a status check.
#[derive(Clone)]
pub struct StatusPolicy {
    attempts_left: u32,
    backoff: ExponentialBackoff,
    budget: Arc<TpsBudget>,
}

impl StatusPolicy {
    /// Exponential backoff from 1 s (the stack's and the SDK's first wait)
    /// to 60 s with full jitter (`jitter` 1.0: 1–2 s, 2–4 s, ...), 5 sends
    /// (the stack's default), and tower's default budget parameters
    /// (10 retries per second plus 20 % of requests, over 10 s).
    pub fn new() -> Self {
        let maker = ExponentialBackoffMaker::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
            1.0,
            HasherRng::default(),
        )
        .expect("valid backoff");
        Self::with(maker, TpsBudget::new(Duration::from_secs(10), 10, 0.2), 5)
    }

    /// A policy from its parts.
    pub fn with(mut maker: ExponentialBackoffMaker, budget: TpsBudget, max_attempts: u32) -> Self {
        Self {
            attempts_left: max_attempts - 1,
            backoff: maker.make_backoff(),
            budget: Arc::new(budget),
        }
    }
}

impl<B, E> Policy<Request<Full<Bytes>>, Response<B>, E> for StatusPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Request<Full<Bytes>>,
        result: &mut Result<Response<B>, E>,
    ) -> Option<Self::Future> {
        let retryable = match result {
            Ok(res) => {
                res.status() == StatusCode::TOO_MANY_REQUESTS || res.status().is_server_error()
            }
            Err(_) => true,
        };
        if !retryable {
            self.budget.deposit();
            return None;
        }
        if self.attempts_left == 0 || !self.budget.withdraw() {
            return None;
        }
        self.attempts_left -= 1;
        Some(self.backoff.next_backoff())
    }

    fn clone_request(&mut self, req: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut clone = Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        Some(clone)
    }
}

/// Why a call of the SDK re-creation failed without a response.
#[derive(Debug)]
pub enum SdkError {
    /// The gate of the API failed the call at once with this cached status.
    FastFail(StatusCode),
    /// The attempt timed out or the transport failed.
    Transport(BoxError),
}

/// The SDK's process-wide gate, one entry per API (here: per authority).
/// Clones share it.
#[derive(Clone, Default)]
pub struct SdkGate {
    apis: Arc<Mutex<HashMap<String, GateState>>>,
}

struct GateState {
    until: Instant,
    status: StatusCode,
    /// One call is waiting out the period.
    pending: bool,
}

enum Pass {
    Go,
    WaitUntil(Instant),
    Fail(StatusCode),
}

impl SdkGate {
    fn pass(&self, api: &str, now: Instant) -> Pass {
        let mut apis = self.apis.lock().unwrap();
        match apis.get_mut(api) {
            Some(gate) if now < gate.until => {
                if gate.pending {
                    Pass::Fail(gate.status)
                } else {
                    gate.pending = true;
                    Pass::WaitUntil(gate.until)
                }
            }
            _ => Pass::Go,
        }
    }

    fn close(&self, api: &str, until: Instant, status: StatusCode) {
        let mut apis = self.apis.lock().unwrap();
        let gate = apis.entry(api.to_owned()).or_insert(GateState {
            until,
            status,
            pending: false,
        });
        if until >= gate.until {
            gate.until = until;
            gate.status = status;
        }
    }

    fn done_waiting(&self, api: &str) {
        if let Some(gate) = self.apis.lock().unwrap().get_mut(api) {
            gate.pending = false;
        }
    }
}

/// The SDK's retry window and the margin it keeps (DOMAIN.md: 20 s, 5 s).
const WINDOW: Duration = Duration::from_secs(20);
const MARGIN: Duration = Duration::from_secs(5);

/// One call as Microsoft's SDK makes it (DOMAIN.md, "What Microsoft's own
/// client SDK does"):
///
/// - the gate of the API first: while a `Retry-After` is in force, the
///   first call to come waits it out, every other one fails at once with
///   the cached status, without touching the network;
/// - retries 408, 429, 500, 502, 503, 504 and transport errors, except for
///   session writes (PUT, DELETE), which are never retried;
/// - retry `n` (from 0) waits a random 2ⁿ–2ⁿ⁺¹ s, at most 60 s, at least
///   10 s after a 500; a `Retry-After` in integer seconds, stretched by a
///   random 1.0–1.2, wins when longer;
/// - one 20 s window: no retry whose wait would leave less than 5 s of it;
///   each attempt times out after min(30 s, time left), at least 5 s;
/// - every response carrying `Retry-After` closes the API's gate for that
///   long.
pub async fn sdk_call<S, B>(
    svc: S,
    req: Request<Full<Bytes>>,
    gate: &SdkGate,
    rng: &mut HasherRng,
) -> Result<Response<B>, SdkError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
{
    let start = Instant::now();
    let api = req.uri().authority().map_or("", |a| a.as_str()).to_owned();
    match gate.pass(&api, start) {
        Pass::Go => {}
        Pass::Fail(status) => return Err(SdkError::FastFail(status)),
        Pass::WaitUntil(until) => {
            sleep_until(until).await;
            gate.done_waiting(&api);
        }
    }
    let write = matches!(*req.method(), Method::PUT | Method::DELETE);
    let mut retry = 0u32;
    loop {
        let left = WINDOW.saturating_sub(start.elapsed());
        let attempt_timeout = left
            .min(Duration::from_secs(30))
            .max(Duration::from_secs(5));
        let attempt = clone_request(&req);
        let result = match timeout(attempt_timeout, svc.clone().oneshot(attempt)).await {
            Ok(Ok(res)) => Ok(res),
            Ok(Err(e)) => Err(SdkError::Transport(e.into())),
            Err(elapsed) => Err(SdkError::Transport(elapsed.into())),
        };
        let (status, retry_after) = match &result {
            Ok(res) => (Some(res.status()), integer_retry_after(res)),
            Err(_) => (None, None),
        };
        if let (Some(status), Some(after)) = (status, retry_after) {
            gate.close(&api, Instant::now() + after, status);
        }
        let retryable = status.map_or(true, |s| {
            matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
        });
        if write || !retryable {
            return result;
        }
        let exp = 1u64 << retry.min(6);
        let mut wait = Duration::from_secs(exp).mul_f64(1.0 + rng.next_f64());
        wait = wait.min(Duration::from_secs(60));
        if status == Some(StatusCode::INTERNAL_SERVER_ERROR) {
            wait = wait.max(Duration::from_secs(10));
        }
        if let Some(after) = retry_after {
            wait = wait.max(after.mul_f64(1.0 + 0.2 * rng.next_f64()));
        }
        if start.elapsed() + wait > WINDOW - MARGIN {
            return result;
        }
        sleep(wait).await;
        retry += 1;
    }
}

/// `Retry-After` as the SDK reads it: integer seconds only.
fn integer_retry_after<B>(res: &Response<B>) -> Option<Duration> {
    let value = res.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn clone_request(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut clone = Request::new(req.body().clone());
    *clone.method_mut() = req.method().clone();
    *clone.uri_mut() = req.uri().clone();
    *clone.version_mut() = req.version();
    *clone.headers_mut() = req.headers().clone();
    clone
}
