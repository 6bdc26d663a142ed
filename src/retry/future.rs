use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{header, Request, Response};
use tokio::time::{sleep, sleep_until, Instant};
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::rng::{HasherRng, Rng};
use tower::{Service, ServiceExt};

use super::cooldown::{Admission, Cooldowns, Key, ProbeGuard};
use super::history::{bump, Attempt, AttemptHistory, GaveUp, RetryStats};
use super::layer::Config;
use crate::backoff::{Cause, Plan, TooLong};
use crate::identity::user_hash;
use crate::outcome::{classify, Call, Outcome, Retryable};
use crate::BoxError;

/// The longest cooldown, whatever the server says: enormous hints must not
/// overflow the clock or close an endpoint for the life of the process.
const MAX_COOLDOWN: Duration = Duration::from_secs(24 * 60 * 60);

/// What every service of one layer shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) budget: Arc<TpsBudget>,
    pub(crate) cooldowns: Cooldowns,
    pub(crate) stats: Arc<RetryStats>,
}

/// A request failed at once, without touching the network: a cooldown for
/// its endpoint is in force past its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoolingDown {
    /// How long until the cooldown ends: retry no sooner.
    pub retry_in: Duration,
    /// Attempts sent for this logical request before it failed.
    pub attempts: usize,
}

impl fmt::Display for CoolingDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint cooling down: retry in {:?}", self.retry_in)
    }
}

impl std::error::Error for CoolingDown {}

/// The cooldown keys a request passes: its authority (503), and its
/// authority and user (429).
fn keys<B>(req: &Request<B>) -> (Key, Option<Key>) {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let user = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(user_hash)
        .map(|u| Key::User(authority.clone(), u.to_owned()));
    (Key::Authority(authority), user)
}

/// Waits until `key` admits the request; `Some` guard when it is the probe.
async fn admitted(
    cooldowns: &Cooldowns,
    key: &Key,
    deadline: Instant,
) -> Result<Option<ProbeGuard>, Instant> {
    loop {
        match cooldowns.admit(key, Instant::now(), deadline) {
            Admission::Go => return Ok(None),
            Admission::Probe(guard) => return Ok(Some(guard)),
            Admission::GoAt(at) => {
                sleep_until(at).await;
                return Ok(None);
            }
            Admission::WaitUntil(at) => sleep_until(at).await,
            Admission::WaitForProbe(answer) => {
                if tokio::time::timeout_at(deadline, answer).await.is_err() {
                    return Err(deadline);
                }
            }
            Admission::FailFast(until) => return Err(until),
        }
    }
}

/// Why a retry is wanted, and the server's hint.
fn cause(outcome: &Outcome, safe: bool) -> Option<(Cause, Option<Duration>)> {
    match outcome.retryable() {
        Retryable::Overloaded { after } => Some((Cause::Overloaded, after)),
        Retryable::Throttled { after } => Some((Cause::Throttled, after)),
        Retryable::IfIdempotent if safe => Some((Cause::Transient, None)),
        _ => None,
    }
}

/// The loop of one logical request.
pub(crate) async fn run<S, B, R>(
    mut svc: S,
    req: Request<B>,
    shared: Shared,
) -> Result<Response<R>, BoxError>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: Into<BoxError>,
    B: Clone,
{
    let Shared {
        config,
        budget,
        cooldowns,
        stats,
    } = shared;
    let start = Instant::now();
    let deadline = start + config.deadline;
    let call = Call::of(&req);
    let safe = (config.retry_transient)(req.method());
    let (authority, user) = keys(&req);
    let mut rng = HasherRng::new();
    let mut history = AttemptHistory::default();
    let mut waited_since = start;
    budget.deposit();

    loop {
        // Pass the cooldowns: the authority's (503), then the user's (429).
        let mut probes = Vec::with_capacity(2);
        for key in std::iter::once(&authority).chain(user.as_ref()) {
            match admitted(&cooldowns, key, deadline).await {
                Ok(probe) => probes.extend(probe.map(|p| (key.clone(), p))),
                Err(until) => {
                    bump(&stats.fail_fasts);
                    let retry_in = until.saturating_duration_since(Instant::now());
                    tracing::debug!(?retry_in, "mpsd cooldown: failing fast");
                    return Err(CoolingDown {
                        retry_in,
                        attempts: history.attempts.len(),
                    }
                    .into());
                }
            }
        }

        let sent = Instant::now();
        let attempt = req.clone();
        let result = if history.attempts.is_empty() {
            svc.call(attempt).await
        } else {
            match svc.ready().await {
                Ok(svc) => svc.call(attempt).await,
                Err(e) => Err(e),
            }
        };
        let now = Instant::now();
        let outcome = result
            .as_ref()
            .ok()
            .map(|res| classify(&call, res.status(), res.headers()));
        history.attempts.push(Attempt {
            sent_after: sent - start,
            waited: sent - waited_since,
            outcome,
        });
        tracing::debug!(attempt = history.attempts.len(), outcome = ?outcome.map(|o| o.name()), "mpsd attempt");

        let wanted = match &outcome {
            Some(o) => cause(o, safe),
            None if safe => Some((Cause::Transient, None)),
            None => None,
        };
        // Tell the cooldowns what this answer says: 503 closes the
        // authority's gate, 429 the user's.
        let closed = match wanted {
            Some((c @ (Cause::Overloaded | Cause::Throttled), hint)) => {
                let hint = hint.unwrap_or_else(|| config.backoff.wait(c, None, 1, 0.0));
                let key = if c == Cause::Overloaded {
                    Some(authority.clone())
                } else {
                    user.clone()
                };
                key.map(|key| (key, now + hint.min(MAX_COOLDOWN)))
            }
            _ => None,
        };
        if let Some((key, until)) = &closed {
            cooldowns.close(key.clone(), *until);
        }
        for (probed, probe) in probes {
            match &closed {
                Some((key, until)) if probed == *key => probe.closed_again(*until),
                _ if outcome.is_some() => probe.opened(now),
                // An error drops the guard: the probe role passes on.
                _ => {}
            }
        }

        let give_up = |reason: GaveUp, history: &mut AttemptHistory| {
            bump(&stats.give_ups);
            tracing::debug!(?reason, "mpsd retry: giving up");
            history.gave_up = Some(reason);
        };
        let Some((why, hint)) = wanted else {
            if outcome
                .as_ref()
                .is_some_and(|o| matches!(o.retryable(), Retryable::IfIdempotent))
            {
                give_up(GaveUp::UnsafeMethod, &mut history);
            }
            return finish(result, history, start);
        };
        if history.attempts.len() >= config.max_attempts as usize {
            give_up(GaveUp::MaxAttempts, &mut history);
            return finish(result, history, start);
        }
        let failures = history.attempts.len() as u32;
        let left = deadline.saturating_duration_since(now);
        let wait = match config
            .backoff
            .plan(why, hint, failures, rng.next_f64(), left)
        {
            Plan::Wait(wait) => wait,
            Plan::GiveUp { wait, why } => {
                let reason = match why {
                    TooLong::OverCap => GaveUp::OverCap { wait },
                    _ => GaveUp::Deadline { wait },
                };
                give_up(reason, &mut history);
                return finish(result, history, start);
            }
        };
        if !budget.withdraw() {
            bump(&stats.budget_refusals);
            give_up(GaveUp::Budget, &mut history);
            return finish(result, history, start);
        }
        bump(match why {
            Cause::Overloaded => &stats.retries_overloaded,
            Cause::Throttled => &stats.retries_throttled,
            _ => &stats.retries_transient,
        });
        tracing::debug!(?wait, cause = ?why, "mpsd retry: waiting");
        waited_since = now;
        drop(result);
        sleep(wait).await;
    }
}

fn finish<R, E: Into<BoxError>>(
    result: Result<Response<R>, E>,
    mut history: AttemptHistory,
    start: Instant,
) -> Result<Response<R>, BoxError> {
    history.total = start.elapsed();
    let mut res = result.map_err(Into::into)?;
    res.extensions_mut().insert(history);
    Ok(res)
}
