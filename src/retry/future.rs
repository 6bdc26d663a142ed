use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use tokio::time::{sleep, sleep_until, Instant};
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::rng::{HasherRng, Rng};
use tower::{Service, ServiceExt};

use super::cooldown::{Admission, Cooldowns, Key, ProbeGuard};
use super::layer::Config;
use super::stats::{bump, RetryStats};
use crate::backoff::{Cause, Plan, TooLong};
use crate::logical::{GaveUp, LogicalRequest, Purpose};
use crate::outcome::{classify, Call, Outcome, Retryable};
use crate::replay::NotReplayable;
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

/// The loop of one logical request, as far as this layer's causes go.
pub(crate) async fn run<S, B, R>(
    mut svc: S,
    mut req: Request<B>,
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
    let (logical, owner) =
        LogicalRequest::of_or_insert(&mut req, config.deadline, config.max_attempts);
    let deadline = logical.deadline();
    let call = Call::of(&req);
    let safe = (config.retry_transient)(req.method());
    let replayable = req.extensions().get::<NotReplayable>().is_none();
    let keys: Vec<Key> = [Cause::Overloaded, Cause::Throttled]
        .into_iter()
        .filter(|c| config.handles(*c))
        .filter_map(|c| (config.key)(c, req.uri(), req.headers()).map(|k| Key(c, k)))
        .collect();
    let mut rng = HasherRng::new();
    let mut first = true;
    budget.deposit();

    loop {
        // Pass the cooldowns: the authority's (503), then the user's (429).
        let mut probes = Vec::with_capacity(keys.len());
        for key in &keys {
            match admitted(&cooldowns, key, deadline).await {
                Ok(probe) => probes.extend(probe.map(|p| (key.clone(), p))),
                Err(until) => {
                    bump(&stats.fail_fasts);
                    let retry_in = until.saturating_duration_since(Instant::now());
                    tracing::debug!(?retry_in, "mpsd cooldown: failing fast");
                    return Err(CoolingDown {
                        retry_in,
                        attempts: logical.history().attempts.len(),
                    }
                    .into());
                }
            }
        }

        let sent = Instant::now();
        let attempt = req.clone();
        let result = if std::mem::take(&mut first) {
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
        logical.record(sent, outcome);
        tracing::debug!(sends = logical.sends(), outcome = ?outcome.map(|o| o.name()), "mpsd attempt");

        let wanted = match &outcome {
            Some(o) => cause(o, safe),
            None if safe => Some((Cause::Transient, None)),
            None => None,
        }
        .filter(|(c, _)| config.handles(*c));
        // Tell the cooldowns what this answer says: 503 closes the
        // authority's gate, 429 the user's.
        let closed = match wanted {
            Some((c @ (Cause::Overloaded | Cause::Throttled), hint)) => {
                let hint = hint.unwrap_or_else(|| config.backoff.wait(c, None, 1, 0.0));
                let until = now + hint.min(MAX_COOLDOWN);
                keys.iter().find(|k| k.0 == c).map(|k| (k.clone(), until))
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

        let give_up = |reason: GaveUp| {
            bump(&stats.give_ups);
            tracing::debug!(?reason, "mpsd retry: giving up");
            logical.gave_up(reason);
        };
        let Some((why, hint)) = wanted else {
            if outcome
                .as_ref()
                .is_some_and(|o| matches!(o.retryable(), Retryable::IfIdempotent))
            {
                give_up(GaveUp::UnsafeMethod);
            }
            return finish(result, &logical, owner);
        };
        if !replayable {
            give_up(GaveUp::NotReplayable);
            return finish(result, &logical, owner);
        }
        if !logical.has_sends_left() {
            give_up(GaveUp::MaxAttempts);
            return finish(result, &logical, owner);
        }
        let failures = logical.sends();
        let left = deadline.saturating_duration_since(now);
        let wait = match config
            .backoff
            .plan(why, hint, failures, rng.next_f64(), left)
        {
            Plan::Wait(wait) => wait,
            Plan::GiveUp { wait, why } => {
                give_up(match why {
                    TooLong::OverCap => GaveUp::OverCap { wait },
                    _ => GaveUp::Deadline { wait },
                });
                return finish(result, &logical, owner);
            }
        };
        if !budget.withdraw() {
            bump(&stats.budget_refusals);
            give_up(GaveUp::Budget);
            return finish(result, &logical, owner);
        }
        logical.take_send(Purpose::Retry(why));
        bump(match why {
            Cause::Overloaded => &stats.retries_overloaded,
            Cause::Throttled => &stats.retries_throttled,
            _ => &stats.retries_transient,
        });
        tracing::debug!(?wait, cause = ?why, "mpsd retry: waiting");
        drop(result);
        sleep(wait).await;
    }
}

/// Hands the answer back; the layer that made the logical request puts its
/// history in the response.
fn finish<R, E: Into<BoxError>>(
    result: Result<Response<R>, E>,
    logical: &LogicalRequest,
    owner: bool,
) -> Result<Response<R>, BoxError> {
    let mut res = result.map_err(Into::into)?;
    if owner {
        res.extensions_mut().insert(logical.history());
    }
    Ok(res)
}
