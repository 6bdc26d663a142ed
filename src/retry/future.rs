use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Extensions, Request, Response};
use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{sleep_until, Instant, Sleep};
use tower::util::rng::{HasherRng, Rng};
use tower::Service;

use super::budget::RetryBudget;
use super::cooldown::{Admission, Cooldowns, Key, ProbeGuard, SharedAdmission, Ticket};
use super::error::{failure, Failure, InvalidUri, RequestFailed};
use super::layer::Config;
use super::stats::{bump, RetryStats};
use crate::classify::{outcome_of, Call, LazyCall};
use crate::classify::{Outcome, Retryable};
use crate::error::{Refused, RefusedBy};
use crate::logical::{at_most, GaveUp, Live, LogicalContext, LogicalRequest, Purpose};
use crate::replay::NotReplayable;
use crate::rules::backoff::{Cause, Plan, TooLong};
use crate::BoxError;

/// What every service of one layer shares, behind one `Arc`: a request
/// takes a reference to it, not a copy of each part.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) budget: Arc<RetryBudget>,
    pub(crate) cooldowns: Cooldowns,
    pub(crate) stats: Arc<RetryStats>,
}

/// An attempt got no answer by the logical request's deadline (or, when
/// little time was left, within the layer's `min_attempt_time`), and was
/// abandoned. The server may have applied it: a write is not repeated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptTimedOut {
    /// How long the attempt waited for its answer.
    pub after: Duration,
    /// Sends of this logical request, the abandoned one included.
    pub attempts: usize,
}

impl fmt::Display for AttemptTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no answer after {:?}: the deadline passed", self.after)
    }
}

impl std::error::Error for AttemptTimedOut {}

/// Why a retry is wanted, and the server's hint.
fn cause(outcome: &Outcome, safe_to_repeat: bool) -> Option<(Cause, Option<Duration>)> {
    match outcome.retryable() {
        Retryable::Overloaded { after } => Some((Cause::Overloaded, after)),
        Retryable::Throttled { after } => Some((Cause::Throttled, after)),
        Retryable::IfSafeToRepeat if safe_to_repeat => Some((Cause::Transient, None)),
        _ => None,
    }
}

/// The logical request's clock, asked once, the first time it is needed.
struct LazyNow(Option<Instant>);

impl LazyNow {
    fn get(&mut self, logical: &LogicalContext) -> Instant {
        *self.0.get_or_insert_with(|| logical.now())
    }
}

/// The logical request this layer works in: shared with the layers around
/// it through the request's extensions, or, when the stack says nothing
/// else reads it (`RetryLayer::making_context`),
/// kept here alone, inline, with nothing allocated and nothing put in the
/// request, and its state changed without taking its lock ([`Live`]).
/// Inline rather than boxed: moving the larger future costs a first-try
/// success less than the allocation would (`benches/overhead.rs`).
#[allow(clippy::large_enum_variant)]
enum Logical {
    Shared(LogicalRequest),
    Owned(LogicalContext),
}

impl Logical {
    /// The context's changing part: through its lock when shared, and
    /// without one when kept here.
    fn live(&mut self) -> Live<'_> {
        match self {
            Logical::Shared(logical) => logical.context().live(),
            Logical::Owned(context) => context.live_kept(),
        }
    }
}

impl std::ops::Deref for Logical {
    type Target = LogicalContext;

    fn deref(&self) -> &LogicalContext {
        match self {
            Logical::Shared(logical) => logical.context(),
            Logical::Owned(context) => context,
        }
    }
}

impl fmt::Debug for Logical {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// The cooldown keys of one request: the 503 one, then the 429 one.
/// Worked out only once a cooldown exists or must be made.
type Keys = [Option<Key>; 2];

pin_project! {
    /// The future of [`Retry`](super::Retry): one logical request, as far
    /// as this layer's causes go.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        attempts: Attempts<S, B>,
        #[pin]
        state: State<S::Future>,
    }
}

/// The request, kept to be sent again.
///
/// Its head is kept without the extensions, which every send needs but no
/// send may share: when they hold only the logical request (as they do
/// unless something else put its own there), the first send takes them
/// and a retry gets a new map holding the logical request, so a first-try
/// success copies no extension map. Otherwise each send gets a copy. A
/// context kept in the future goes in no map: a request with no
/// extensions of its own is sent with none.
struct Kept<B> {
    head: http::request::Parts,
    body: B,
    extensions: Extensions,
}

impl<B> Kept<B> {
    fn new(req: Request<B>) -> Self {
        let (mut head, body) = req.into_parts();
        let extensions = std::mem::take(&mut head.extensions);
        Self {
            head,
            body,
            extensions,
        }
    }
}

impl<B: Clone> Kept<B> {
    /// The request for the next send.
    fn next(&mut self, logical: &Logical) -> Request<B> {
        let mut req = Request::from_parts(self.head.clone(), self.body.clone());
        let Logical::Shared(logical) = logical else {
            if !self.extensions.is_empty() {
                *req.extensions_mut() = self.extensions.clone();
            }
            return req;
        };
        *req.extensions_mut() = match self.extensions.len() {
            0 => {
                let mut extensions = Extensions::new();
                extensions.insert(logical.clone());
                extensions
            }
            1 => std::mem::take(&mut self.extensions),
            _ => self.extensions.clone(),
        };
        req
    }
}

/// Everything of a [`ResponseFuture`] but its state.
struct Attempts<S, B>
where
    S: Service<Request<B>>,
{
    svc: S,
    req: Kept<B>,
    shared: Arc<Shared>,
    logical: Logical,
    owner: bool,
    /// What the request is when it is not the logical request's call: a
    /// rebase re-read's own.
    call: Option<Call>,
    safe_to_repeat: bool,
    replayable: bool,
    first: bool,
    /// Why the next send is made.
    purpose: Purpose,
    /// What only a cooldown or a retry needs, made the first time one
    /// does: a first-try success with no cooldown in force neither
    /// allocates it nor moves it with the future.
    waits: Option<Box<Waits<S::Response>>>,
}

/// The part of [`Attempts`] that only cooldowns and retries use.
struct Waits<Res> {
    keys: Option<Keys>,
    probes: [Option<ProbeGuard>; 2],
    /// Slots in a spaced release, per key, for this attempt.
    tickets: [Option<Ticket>; 2],
    rng: HasherRng,
    /// The last answer (or error), kept while a retry is pending: it is
    /// what the caller gets if the retry cannot go before the deadline.
    /// Over hyper, an answer kept with its body unread holds its
    /// connection until then.
    last: Option<Result<Res, BoxError>>,
}

impl<Res> Waits<Res> {
    fn new() -> Box<Self> {
        Box::new(Self {
            keys: None,
            probes: [None, None],
            tickets: [None, None],
            rng: HasherRng::new(),
            last: None,
        })
    }

    /// Lets any probe role go.
    fn drop_probes(waits: &mut Option<Box<Self>>) {
        if let Some(waits) = waits {
            waits.probes = [None, None];
        }
    }
}

pin_project! {
    #[project = StateProj]
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    enum State<F> {
        // The URI cannot be sent anywhere: refused before anything else.
        Invalid { error: InvalidUri },
        // Passing the cooldown of key `index`, then the next.
        Admit { index: usize },
        // Only with a shared store: its answer about key `index`.
        AdmitShared { index: usize, answer: SharedAdmission },
        // Sleeping, then passing the cooldown of key `then_admit`.
        Sleep { then_admit: usize, #[pin] sleep: Sleep },
        // Waiting for the answer of key `index`'s probe, until the deadline.
        AwaitProbe {
            index: usize,
            answer: Pin<Box<OwnedNotified>>,
            #[pin]
            deadline: Sleep,
        },
        // Waiting for the service to be ready for a retry, until the
        // deadline; the timer is set only once readiness is not there at once.
        Ready { #[pin] deadline: Option<Sleep> },
        // The attempt in flight, sent at `sent` and bounded by `until` (see
        // `AttemptTimedOut`); the timer is set only once the answer is not
        // there at once.
        Calling {
            #[pin]
            future: F,
            sent: Instant,
            until: Instant,
            #[pin]
            timeout: Option<Sleep>,
        },
        Done,
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("logical", &self.attempts.logical)
            .finish_non_exhaustive()
    }
}

impl<S, B, R> ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    /// Starts the first attempt with `svc`, which the caller made ready.
    pub(crate) fn new(svc: S, mut req: Request<B>, shared: Arc<Shared>) -> Self {
        let config = &shared.config;
        let found = req.extensions().get::<LogicalRequest>().cloned();
        let owner = found.is_none();
        let logical = match found {
            Some(found) => Logical::Shared(found),
            None if config.keep_context => {
                Logical::Owned(LogicalContext::kept(&req, config.limits))
            }
            None => {
                let (made, _) = LogicalRequest::of_or_insert(&mut req, config.limits);
                made.context().track_yields();
                Logical::Shared(made)
            }
        };
        let call = req.extensions().get::<Call>().cloned();
        let safe_to_repeat = (config.safe_to_repeat)(req.method());
        let replayable = req.extensions().get::<NotReplayable>().is_none();
        let invalid = logical.invalid_uri().cloned();
        if invalid.is_none() {
            // A request found under way (a rebase round) counts when it
            // comes here, not when it began.
            let at = if owner {
                logical.start()
            } else {
                logical.now()
            };
            shared.budget.deposit(at);
        }
        let attempts = Attempts {
            svc,
            req: Kept::new(req),
            logical,
            owner,
            call,
            safe_to_repeat,
            replayable,
            first: true,
            purpose: Purpose::First,
            waits: None,
            shared,
        };
        Self {
            attempts,
            state: match invalid {
                None => State::Admit { index: 0 },
                Some(error) => State::Invalid { error },
            },
        }
    }
}

impl<S, B, R> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    B: Clone,
{
    type Output = Result<Response<R>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut polled = this.attempts.poll_states(this.state, cx);
        if this.attempts.owner {
            let mut logical = this.attempts.logical.live();
            match &mut polled {
                Poll::Pending => logical.yielded(),
                Poll::Ready(result) => logical.end(result),
            }
        }
        polled
    }
}

impl<S, B, R> Attempts<S, B>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    B: Clone,
{
    /// Drives the state machine as far as it goes in this poll.
    fn poll_states(
        &mut self,
        mut state: Pin<&mut State<S::Future>>,
        cx: &mut Context<'_>,
    ) -> Poll<Finished<R>> {
        let me = self;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Invalid { error } => {
                    let error = error.clone();
                    state.set(State::Done);
                    tracing::debug!(%error, "mpsd retry: refused before sending");
                    return Poll::Ready(Err(error.into()));
                }
                StateProj::Admit { index } => {
                    let index = *index;
                    if index == 2 || me.shared.cooldowns.is_empty() {
                        me.send_state()
                    } else {
                        match me.admit(index) {
                            Ok(next) => next,
                            Err(until) => {
                                state.set(State::Done);
                                return Poll::Ready(me.fail_fast(until));
                            }
                        }
                    }
                }
                StateProj::AdmitShared { index, answer } => {
                    let admission = ready!(answer.as_mut().poll(cx));
                    match me.admitted(*index, admission) {
                        Ok(next) => next,
                        Err(until) => {
                            state.set(State::Done);
                            return Poll::Ready(me.fail_fast(until));
                        }
                    }
                }
                StateProj::Sleep { then_admit, sleep } => {
                    ready!(sleep.poll(cx));
                    State::Admit { index: *then_admit }
                }
                StateProj::AwaitProbe {
                    index,
                    answer,
                    deadline,
                } => {
                    if answer.as_mut().poll(cx).is_ready() {
                        State::Admit { index: *index }
                    } else if deadline.poll(cx).is_ready() {
                        // The cooldown is over; its probe's answer is not.
                        state.set(State::Done);
                        return Poll::Ready(me.fail_fast(Instant::now()));
                    } else {
                        return Poll::Pending;
                    }
                }
                StateProj::Ready { mut deadline } => match me.svc.poll_ready(cx) {
                    Poll::Ready(Ok(())) => match me.pay_for_send() {
                        Ok(()) => me.call_state(),
                        Err(done) => {
                            state.set(State::Done);
                            return Poll::Ready(done);
                        }
                    },
                    Poll::Ready(Err(e)) => {
                        state.set(State::Done);
                        return Poll::Ready(Err(me.with_history(e.into())));
                    }
                    Poll::Pending => {
                        if deadline.is_none() {
                            deadline.set(Some(sleep_until(me.logical.deadline())));
                        }
                        if let Some(deadline) = deadline.as_pin_mut() {
                            ready!(deadline.poll(cx));
                        }
                        state.set(State::Done);
                        return Poll::Ready(me.unready_by_deadline());
                    }
                },
                StateProj::Calling {
                    future,
                    sent,
                    until,
                    mut timeout,
                } => {
                    let sent = *sent;
                    let result = match future.poll(cx) {
                        Poll::Ready(result) => result.map_err(Into::into),
                        Poll::Pending => {
                            if timeout.is_none() {
                                timeout.set(Some(sleep_until(*until)));
                            }
                            if let Some(timeout) = timeout.as_pin_mut() {
                                ready!(timeout.poll(cx));
                            }
                            Err(me.timed_out(sent))
                        }
                    };
                    match me.settle(result, sent) {
                        Ok(wait) => State::Sleep {
                            then_admit: 0,
                            sleep: tokio::time::sleep(wait),
                        },
                        Err(done) => {
                            state.set(State::Done);
                            return Poll::Ready(done);
                        }
                    }
                }
                StateProj::Done => panic!("retry future polled after completion"),
            };
            state.set(next);
        }
    }
}

type Finished<R> = Result<Response<R>, BoxError>;

impl<S, B, R> Attempts<S, B>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    B: Clone,
{
    fn waits(&mut self) -> &mut Waits<Response<R>> {
        self.waits.get_or_insert_with(Waits::new)
    }

    /// The cooldown keys, worked out on first use.
    fn keys<'a>(&'a mut self) -> &'a Keys
    where
        R: 'a,
    {
        let config = &self.shared.config;
        let req = &self.req.head;
        let waits = self.waits.get_or_insert_with(Waits::new);
        waits.keys.get_or_insert_with(|| {
            [Cause::Overloaded, Cause::Throttled].map(|c| {
                let handled = config.handles(c);
                let key = handled.then(|| (config.key)(c, &req.uri, &req.headers));
                key.flatten().map(|k| Key(c, k))
            })
        })
    }

    /// One step past key `index`'s cooldown: `Err` with the instant it
    /// ends when that is past the deadline.
    fn admit(&mut self, index: usize) -> Result<State<S::Future>, Instant> {
        let deadline = self.logical.deadline();
        let Some(key) = self.keys()[index].clone() else {
            return Ok(State::Admit { index: index + 1 });
        };
        let ticket = self.waits().tickets[index];
        #[cfg(feature = "redis")]
        if let Some(answer) = self.shared.cooldowns.admit_shared(&key, deadline, ticket) {
            // Redis's answer is a wait like any other.
            self.unready();
            return Ok(State::AdmitShared { index, answer });
        }
        let now = Instant::now();
        let admission = self.shared.cooldowns.admit(&key, now, deadline, ticket);
        self.admitted(index, admission)
    }

    /// The step after key `index`'s cooldown said what the request may do.
    fn admitted(
        &mut self,
        index: usize,
        admission: Admission,
    ) -> Result<State<S::Future>, Instant> {
        let deadline = self.logical.deadline();
        // Any wait starts the pass over, holding no probe role meanwhile:
        // a request must not keep others of one key waiting while it waits
        // for another.
        let wait = match admission {
            Admission::Go => return Ok(State::Admit { index: index + 1 }),
            Admission::Probe(guard) => {
                self.waits().probes[index] = Some(guard);
                return Ok(State::Admit { index: index + 1 });
            }
            Admission::FailFast(until) => return Err(until),
            Admission::GoAt(at, ticket) => {
                self.waits().tickets[index] = Some(ticket);
                State::Sleep {
                    then_admit: 0,
                    sleep: sleep_until(at),
                }
            }
            Admission::WaitUntil(at) => State::Sleep {
                then_admit: 0,
                sleep: sleep_until(at),
            },
            Admission::WaitForProbe(answer) => State::AwaitProbe {
                index: 0,
                answer,
                deadline: sleep_until(deadline),
            },
        };
        Waits::drop_probes(&mut self.waits);
        self.unready();
        Ok(wait)
    }

    /// Before a wait, the service the caller made ready is let go (a clone
    /// takes its place), so that no readiness (a concurrency permit, a
    /// buffer slot) is held while sleeping; the send polls readiness again.
    fn unready(&mut self) {
        if std::mem::take(&mut self.first) {
            self.svc = self.svc.clone();
        }
    }

    /// A cooldown (here or in a layer below) will not let the request go
    /// before its deadline: the last answer, if a retry was pending, or
    /// else [`Refused`] by the cooldown.
    fn fail_fast(&mut self, until: Instant) -> Finished<R> {
        bump(&self.shared.stats.fail_fasts);
        Waits::drop_probes(&mut self.waits);
        let retry_in = until.saturating_duration_since(Instant::now());
        tracing::debug!(?retry_in, "mpsd cooldown: failing fast");
        if let Some(done) = self.hand_back_last(GaveUp::CoolingDown { retry_in }) {
            return done;
        }
        let attempts = self.logical.attempts();
        Err(Refused::new(RefusedBy::Cooldown, retry_in, attempts).into())
    }

    /// Past the cooldowns: the first attempt goes to the service the
    /// caller made ready; any other send waits for readiness again.
    fn send_state(&mut self) -> State<S::Future> {
        if std::mem::take(&mut self.first) {
            self.call_state()
        } else {
            State::Ready { deadline: None }
        }
    }

    /// A retry is paid for when it is about to go, not when it is planned:
    /// a withdrawal from the budget, a send of the attempt limit, its
    /// counter. When it cannot be, the last answer goes back.
    fn pay_for_send(&mut self) -> Result<(), Finished<R>> {
        let Purpose::Retry(why) = self.purpose else {
            return Ok(());
        };
        let refused = if !self.shared.budget.withdraw(self.logical.live().now()) {
            bump(&self.shared.stats.budget_refusals);
            GaveUp::Budget
        } else if !self.logical.take_send(self.purpose) {
            GaveUp::MaxAttempts
        } else {
            let stats = &self.shared.stats;
            bump(match why {
                Cause::Overloaded => &stats.retries_overloaded,
                Cause::Throttled => &stats.retries_throttled,
                _ => &stats.retries_transient,
            });
            crate::metrics::retry(why);
            return Ok(());
        };
        // A retry is planned only after an answer, which is kept till now.
        Err(self
            .hand_back_last(refused)
            .unwrap_or_else(|| Err("no answer kept".into())))
    }

    fn call_state(&mut self) -> State<S::Future> {
        if let Some(waits) = &mut self.waits {
            waits.last = None;
            waits.tickets = [None, None];
        }
        let sent = self.logical.live().now();
        let floor = at_most(sent, self.shared.config.min_attempt_time);
        State::Calling {
            future: self.svc.call(self.req.next(&self.logical)),
            sent,
            until: self.logical.deadline().max(floor),
            timeout: None,
        }
    }

    /// The service below was not ready by the deadline: the last answer,
    /// if a retry was pending, or else [`AttemptTimedOut`] (nothing sent).
    fn unready_by_deadline(&mut self) -> Finished<R> {
        tracing::debug!("mpsd retry: the service was not ready by the deadline");
        let reason = GaveUp::Deadline {
            wait: Duration::ZERO,
        };
        if let Some(done) = self.hand_back_last(reason) {
            return done;
        }
        Waits::drop_probes(&mut self.waits);
        self.give_up(reason);
        Err(AttemptTimedOut {
            after: Duration::ZERO,
            attempts: self.logical.attempts(),
        }
        .into())
    }

    /// Stops a pending retry before it is sent: lets any probe role go,
    /// says why, and hands back the answer kept for this; `None` when there
    /// is none.
    fn hand_back_last(&mut self, reason: GaveUp) -> Option<Finished<R>> {
        let last = self.waits.as_mut()?.last.take()?;
        Waits::drop_probes(&mut self.waits);
        self.give_up(reason);
        Some(self.finish(last))
    }

    fn timed_out(&self, sent: Instant) -> BoxError {
        let after = sent.elapsed();
        tracing::debug!(?after, "mpsd attempt: no answer by the deadline");
        AttemptTimedOut {
            after,
            attempts: self.logical.attempts() + 1,
        }
        .into()
    }

    /// Reads one answer to a send at `sent`: `Ok(wait)` to retry after
    /// `wait`, or the result to hand back.
    fn settle(&mut self, mut result: Finished<R>, sent: Instant) -> Result<Duration, Finished<R>> {
        // Read only when needed: for a cooldown or the time left, not for a
        // first-try success.
        let mut now = LazyNow(None);
        // Classified once: by a layer further in, or here.
        let outcome = match &mut result {
            Ok(res) => {
                let call = || match &self.call {
                    Some(call) => LazyCall::known(call.clone()),
                    None => self.logical.lazy_call().clone(),
                };
                Some(outcome_of(res, call).0)
            }
            Err(_) => None,
        };
        // A layer below refused to send (its own cooldown or pacing): that
        // is an answer about the future, not a failure to retry.
        let unsent = result.as_ref().err().and_then(Refused::wait_for);
        if let Some(retry_in) = unsent {
            // Nothing went out: the last answer stands, if there is one.
            if let Some(done) = self.hand_back_last(GaveUp::CoolingDown { retry_in }) {
                bump(&self.shared.stats.fail_fasts);
                return Err(done);
            }
        } else {
            self.logical.live().record_answer(sent, outcome);
        }
        tracing::debug!(sends = self.logical.sends(), outcome = ?outcome.map(|o| o.name()), "mpsd attempt");

        let config = &self.shared.config;
        let failure = result
            .as_ref()
            .err()
            .filter(|_| unsent.is_none())
            .map(|e| failure(&**e));
        let wanted = match (&outcome, failure) {
            (Some(o), _) => cause(o, self.safe_to_repeat),
            // Not processed, or not even connected: safe to send again,
            // even a write.
            (None, Some(Failure::Unprocessed)) => Some((Cause::Unprocessed, None)),
            (None, Some(Failure::NotConnected)) => Some((Cause::NotConnected, None)),
            (None, Some(Failure::Unknown)) if self.safe_to_repeat => Some((Cause::Transient, None)),
            _ => None,
        }
        .filter(|(c, _)| config.handles(*c));
        self.report_to_cooldowns(wanted, outcome.is_some());

        let Some((why, hint)) = wanted else {
            if let Some(reason) = self.not_retried(outcome.as_ref(), failure) {
                self.give_up(reason);
            }
            return Err(self.finish(result));
        };
        if !self.replayable {
            self.give_up(GaveUp::NotReplayable);
            return Err(self.finish(result));
        }
        if !self.logical.has_sends_left() {
            self.give_up(GaveUp::MaxAttempts);
            return Err(self.finish(result));
        }
        let failures = self.logical.sends();
        let left = (self.logical.deadline()).saturating_duration_since(now.get(&self.logical));
        let r = self.waits().rng.next_f64();
        let wait = match self
            .shared
            .config
            .backoff
            .plan(why, hint, failures, r, left)
        {
            Plan::Wait(wait) => wait,
            Plan::GiveUp { wait, why } => {
                self.give_up(match why {
                    TooLong::OverCap => GaveUp::OverCap { wait },
                    _ => GaveUp::Deadline { wait },
                });
                return Err(self.finish(result));
            }
        };
        self.purpose = Purpose::Retry(why);
        self.waits().last = Some(result);
        self.unready();
        tracing::debug!(?wait, cause = ?why, "mpsd retry: waiting");
        Ok(wait)
    }

    /// Tells the cooldowns what an answer says: 503 closes the authority's
    /// gate, 429 the user's; any probe this request was is settled.
    ///
    /// The clock is read here, not taken from the logical request's reading
    /// for this poll: a first poll shares the call's reading, and a
    /// cooldown must not end before `Retry-After` counted from when the
    /// answer came, however late the caller first polled.
    fn report_to_cooldowns(&mut self, wanted: Option<(Cause, Option<Duration>)>, answered: bool) {
        let mut read = None;
        let mut received = || *read.get_or_insert_with(Instant::now);
        let closed = match wanted {
            Some((c @ (Cause::Overloaded | Cause::Throttled), hint)) => {
                let backoff = &self.shared.config.backoff;
                let hint = hint.unwrap_or_else(|| backoff.wait(c, None, 1, 0.0));
                let until = received() + hint.min(crate::rules::retry_after::MAX_HOLD);
                let key = self.keys().iter().flatten().find(|k| k.0 == c).cloned();
                key.map(|k| (k, until))
            }
            _ => None,
        };
        if let Some((key, until)) = &closed {
            self.shared.cooldowns.close(key.clone(), *until);
        }
        let Some(waits) = &mut self.waits else {
            return;
        };
        for (index, probe) in waits.probes.iter_mut().enumerate() {
            let Some(probe) = probe.take() else { continue };
            let probed = waits.keys.as_ref().and_then(|k| k[index].as_ref());
            match &closed {
                Some((key, until)) if probed == Some(key) => probe.closed_again(*until),
                _ if answered => probe.opened(received()),
                // An error drops the guard: the probe role passes on.
                _ => {}
            }
        }
    }

    /// Why an answer or error no retry is wanted for stops the logical
    /// request short of a success, if it does: a final answer (a 404, a
    /// 412 for the rebase layer) is no giving up, nor is a cause this
    /// layer leaves to another.
    fn not_retried(&self, outcome: Option<&Outcome>, failure: Option<Failure>) -> Option<GaveUp> {
        let transient = self.shared.config.handles(Cause::Transient);
        match (outcome, failure) {
            (_, Some(Failure::Permanent)) => Some(GaveUp::CannotSucceed),
            (Some(o), _) if matches!(o.retryable(), Retryable::IfSafeToRepeat) && transient => {
                Some(GaveUp::NotSafeToRepeat)
            }
            // Only a request not safe to repeat gets here with an error
            // that may have been sent.
            (None, Some(Failure::Unknown)) if transient => Some(GaveUp::NotSafeToRepeat),
            _ => None,
        }
    }

    fn give_up(&self, reason: GaveUp) {
        bump(&self.shared.stats.give_ups);
        tracing::debug!(?reason, "mpsd retry: giving up");
        self.logical.gave_up(reason);
    }

    /// Hands the answer back (the layer that made the logical request
    /// puts its history in it, see `poll`). An error of the inner service
    /// gets the history so far, from any layer (see [`RequestFailed`]).
    fn finish(&self, result: Finished<R>) -> Finished<R> {
        result.map_err(|e| self.with_history(e))
    }

    /// `error` in a [`RequestFailed`] with the history so far, unless it is
    /// one of this crate's own errors.
    fn with_history(&self, error: BoxError) -> BoxError {
        RequestFailed::wrap(error, || self.logical.history())
    }
}
