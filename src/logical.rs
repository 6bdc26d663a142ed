//! One logical request: the deadline, attempt count and history that every
//! layer of this crate in one stack shares.
//!
//! A caller's request may become several sends: retries after 503 or 429,
//! a GET re-reading a session after 412, a rebased write. When the retry
//! and rebase layers are stacked, the outermost one puts a
//! [`LogicalRequest`] in the request's extensions and the ones inside find
//! it there, so the stack has one deadline and one attempt limit, not one
//! per layer. Requests the layers send on their own (the 412 re-read) carry
//! the same context.
//!
//! Counting works without knowing the stack's order: the first send of a
//! logical request is counted when the context is made, and every layer
//! counts each *further* call to its inner service. An attempt is recorded
//! once, by the innermost layer that sees its answer. The layer that made
//! the context puts the [`AttemptHistory`] in the final answer
//! ([`AttemptHistory::of`]).
//!
//! A context nobody else reads is not shared:
//! [`MpsdLayer`](crate::MpsdLayer) without a rebase policy has its retry
//! layer on top make each logical request, and without a revalidate or
//! pace layer either, keep it inline in its response future, so a
//! first-try success allocates nothing for it and puts nothing in the
//! request's extensions. The classify layer
//! below then parses the request's call itself, and the retry layer records
//! each attempt.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_mpsd::logical::{AttemptHistory, GaveUp, LogicalLayer};
//! use tower_mpsd::retry::RetryLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower_mpsd::BoxError> {
//! // Overloaded, whatever is asked.
//! let mpsd = service_fn(|_req: Request<Full<Bytes>>| async {
//!     let res = Response::builder().status(503).header("retry-after", "1");
//!     Ok::<_, tower_mpsd::BoxError>(res.body(Full::<Bytes>::default())?)
//! });
//! let client = ServiceBuilder::new()
//!     .layer(LogicalLayer::new(Duration::from_secs(20), 3))
//!     .layer(RetryLayer::throttled())
//!     .layer(RetryLayer::overloaded())
//!     .service(mpsd);
//! let req = Request::get("http://mpsd.test/handles/h1").body(Full::default())?;
//! let res = client.oneshot(req).await?;
//! let history = AttemptHistory::of(&res).unwrap();
//! assert_eq!(history.attempts().len(), 3, "three sends in all, not three per layer");
//! assert_eq!(history.gave_up, Some(GaveUp::MaxAttempts));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use http::{header, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::classify::{outcome_of, Call, Classified, LazyCall, Outcome};
use crate::retry::InvalidUri;
use crate::rules::backoff::Cause;
use crate::rules::identity::user_hash;
use crate::rules::target::Target;

/// `start + wait`, or, when that is too far to represent, a time so far off
/// that it is as good as never: how this crate spells "no deadline"
/// (`Duration::MAX`) and any other wait too long to matter.
pub(crate) fn at_most(start: Instant, wait: Duration) -> Instant {
    // About thirty years: beyond any deadline or wait that means something,
    // and within what every platform's clock can add.
    const NEVER: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);
    start + wait.min(NEVER)
}

/// The shared context of one logical request; clones share it.
#[derive(Debug, Clone)]
pub struct LogicalRequest(Arc<SharedContext>);

/// A context shared by the layers of a stack, with what only they ask
/// for (the user and the session); a context kept by its owner has none
/// of it.
struct SharedContext {
    context: LogicalContext,
    /// Shared with the request (no copy of its bytes), so that the user
    /// is parsed only when a layer asks, and once; likewise the session
    /// from the call's path.
    authorization: Option<HeaderValue>,
    session: OnceLock<Option<Box<str>>>,
}

/// Written by hand: the `Authorization` must never show, not even in
/// `Debug`.
impl fmt::Debug for SharedContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.context.fmt(f)
    }
}

impl SharedContext {
    fn new<B>(req: &Request<B>, limits: LogicalLayer) -> Self {
        let authorization = req.headers().get(header::AUTHORIZATION).map(|value| {
            // Its token must never show, not even in `Debug`.
            let mut value = value.clone();
            value.set_sensitive(true);
            value
        });
        Self {
            context: LogicalContext::new(req, limits),
            authorization,
            session: OnceLock::new(),
        }
    }
}

/// One logical request's context: shared as a [`LogicalRequest`], or kept
/// by the one layer that reads it (see
/// [`MpsdLayer`](crate::stack::MpsdLayer)'s retry layer) inline in its
/// future, with no allocation.
pub(crate) struct LogicalContext {
    start: Instant,
    deadline: Instant,
    max_attempts: u32,
    /// The caller's request: its method, and its path parsed the first
    /// time a layer asks.
    call: LazyCall,
    /// Boxed: nearly every URI is valid, and the context is kept
    /// inline in a future that every call moves.
    invalid_uri: Option<Box<InvalidUri>>,
    /// Its host, for the metrics' `server.address`: kept only when they
    /// are.
    #[cfg(feature = "metrics")]
    authority: Option<Authority>,
    state: Mutex<State>,
}

/// Written by hand: the URI's user-info and query may hold secrets; the
/// host and the parsed call do not.
impl fmt::Debug for LogicalContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = f.debug_struct("LogicalRequest");
        shown.field("call", &self.call);
        #[cfg(feature = "metrics")]
        shown.field("host", &self.authority.as_ref().map(Authority::host));
        shown
            .field("start", &self.start)
            .field("deadline", &self.deadline)
            .field("max_attempts", &self.max_attempts)
            .field("invalid_uri", &self.invalid_uri)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub(crate) struct State {
    sends: u32,
    next_purpose: Purpose,
    /// Of the wait before the next send, the part spent in a session's
    /// write queue.
    next_queued: Duration,
    last_answer: Instant,
    history: AttemptHistory,
    /// The clock as read in this poll of the stack; see
    /// [`LogicalRequest::now`].
    clock: Clock,
}

impl State {
    /// See [`LogicalRequest::now`].
    fn now(&mut self) -> Instant {
        match self.clock {
            Clock::Read(now) => now,
            Clock::Unread => {
                let now = Instant::now();
                self.clock = Clock::Read(now);
                now
            }
            Clock::Untracked => Instant::now(),
        }
    }
}

/// The clock of a logical request: read when its call begins and then at
/// most once per poll of its owner's future, when that future says when
/// it yields.
#[derive(Debug, Clone, Copy)]
enum Clock {
    /// No owner says when the stack yields: every reading reads it.
    Untracked,
    /// Not read since the stack last yielded.
    Unread,
    /// Read since the call began or the stack last yielded.
    Read(Instant),
}

impl LogicalRequest {
    /// The context itself, which the layers of this crate read and update.
    pub(crate) fn context(&self) -> &LogicalContext {
        &self.0.context
    }

    /// The context in `req`'s extensions, or a new one (deadline from now,
    /// at most `max_attempts` sends) put there. `true` when it is new: the
    /// caller owns it and hands its history back.
    pub(crate) fn of_or_insert<B>(req: &mut Request<B>, limits: LogicalLayer) -> (Self, bool) {
        if let Some(found) = req.extensions().get::<Self>() {
            return (found.clone(), false);
        }
        let logical = Self(Arc::new(SharedContext::new(req, limits)));
        req.extensions_mut().insert(logical.clone());
        (logical, true)
    }

    /// What the caller's request is: its method and the kind of resource it
    /// names, parsed once, the first time a layer asks.
    pub fn call(&self) -> &Call {
        self.context().call()
    }

    /// The path that reads the whole session the request names or lives
    /// under ([`Target::session_path`]), parsed the first time it is asked
    /// for.
    pub fn session_path(&self) -> Option<&str> {
        let session = self.0.session.get_or_init(|| {
            let path = self.context().call.path()?.path();
            Target::parse(path).session_path().map(Into::into)
        });
        session.as_deref()
    }

    /// The user hash of the request's `XBL3.0` `Authorization`
    /// ([`user_hash`]); never the token.
    pub fn user(&self) -> Option<&str> {
        user_hash(self.0.authorization.as_ref()?)
    }

    /// When the logical request began.
    pub fn start(&self) -> Instant {
        self.context().start
    }

    /// When it must be over: no wait that ends later is started.
    pub fn deadline(&self) -> Instant {
        self.context().deadline
    }

    /// Sends so far, the first included.
    pub fn sends(&self) -> u32 {
        self.context().sends()
    }

    /// The history so far, with its total time.
    pub fn history(&self) -> AttemptHistory {
        self.context().history()
    }
}

impl LogicalContext {
    /// A new context for `req`: its deadline from now, at most
    /// `max_attempts` sends.
    pub(crate) fn new<B>(req: &Request<B>, limits: LogicalLayer) -> Self {
        Self::with_clock(req, limits, false)
    }

    /// [`new`](Self::new), for an owner that keeps it to itself, read by
    /// no other layer, and says when it yields (see
    /// [`track_yields`](Self::track_yields)).
    pub(crate) fn kept<B>(req: &Request<B>, limits: LogicalLayer) -> Self {
        Self::with_clock(req, limits, true)
    }

    fn with_clock<B>(req: &Request<B>, limits: LogicalLayer, tracked: bool) -> Self {
        let LogicalLayer {
            deadline,
            max_attempts,
        } = limits;
        let start = Instant::now();
        // Tracked: the stack has not yielded since this reading.
        let clock = if tracked {
            Clock::Read(start)
        } else {
            Clock::Untracked
        };
        Self {
            start,
            deadline: at_most(start, deadline),
            max_attempts,
            call: LazyCall::of(req),
            invalid_uri: InvalidUri::check(req.uri()).err().map(Box::new),
            #[cfg(feature = "metrics")]
            authority: req.uri().authority().cloned(),
            state: Mutex::new(State {
                sends: 1,
                next_purpose: Purpose::First,
                next_queued: Duration::ZERO,
                last_answer: start,
                history: AttemptHistory::default(),
                clock,
            }),
        }
    }

    /// Now, as far as this logical request goes: the clock is read once
    /// per poll of the stack, so that every layer sees one instant for the
    /// sends and answers of that poll, and for what its call does before
    /// the first: a first-try success reads it when the call begins (its
    /// start, and the first send's time) and, if it did not answer at
    /// once, in the poll that has its answer. As in tower's own middleware
    /// (`Timeout` starts its timer in `call`), time counts from the call:
    /// a future is expected to be polled when made. What must not err on
    /// the early side by a late first poll (a cooldown's end) reads the
    /// clock itself.
    /// Time goes on only across a wait, which makes the stack yield; the
    /// owner of the request says when it does ([`yielded`](Self::yielded)).
    /// Without an owner that does, every call reads the clock.
    pub(crate) fn now(&self) -> Instant {
        self.live().now()
    }

    /// For the owner of the request, whose future sees every poll of the
    /// layers inside it: [`now`](Self::now) may keep what it reads until
    /// [`yielded`](Self::yielded) is called. Only for the context just
    /// made: the clock read for its start stands until the stack yields.
    pub(crate) fn track_yields(&self) {
        self.state().clock = Clock::Read(self.start);
    }

    /// For the owner of the request: the stack yielded (its future is
    /// pending), so time may pass before the next poll.
    pub(crate) fn yielded(&self) {
        self.live().yielded();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What changes as the request goes, with what recording it reads,
    /// through the lock: for a context shared by the layers of a stack.
    pub(crate) fn live(&self) -> Live<'_> {
        Live {
            start: self.start,
            call: &self.call,
            #[cfg(feature = "metrics")]
            authority: self.authority.as_ref(),
            state: Held::Locked(self.state()),
        }
    }

    /// [`live`](Self::live), for the owner that keeps the context: with
    /// no lock, which nothing else could take.
    pub(crate) fn live_kept(&mut self) -> Live<'_> {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        Live {
            start: self.start,
            call: &self.call,
            #[cfg(feature = "metrics")]
            authority: self.authority.as_ref(),
            state: Held::Kept(state),
        }
    }

    /// See [`LogicalRequest::call`].
    pub(crate) fn call(&self) -> &Call {
        self.call.get()
    }

    /// The call, parsed or not: for an answer's [`Classified`] entry.
    pub(crate) fn lazy_call(&self) -> &LazyCall {
        &self.call
    }

    /// Why the request's URI cannot be sent (no authority, or a scheme
    /// other than `http` or `https`), checked once when the logical
    /// request began; the retry layer refuses it.
    pub(crate) fn invalid_uri(&self) -> Option<&InvalidUri> {
        self.invalid_uri.as_deref()
    }

    /// See [`LogicalRequest::start`].
    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    /// See [`LogicalRequest::deadline`].
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// See [`LogicalRequest::sends`].
    pub(crate) fn sends(&self) -> u32 {
        self.state().sends
    }

    /// Whether the attempt limit allows one more send.
    pub(crate) fn has_sends_left(&self) -> bool {
        self.state().sends < self.max_attempts
    }

    /// Takes one more send for `purpose`, if the attempt limit allows it.
    #[must_use]
    pub(crate) fn take_send(&self, purpose: Purpose) -> bool {
        let mut state = self.state();
        if state.sends >= self.max_attempts {
            return false;
        }
        state.sends += 1;
        state.next_purpose = purpose;
        true
    }

    /// See [`Live::record_answer`].
    pub(crate) fn record_answer(&self, sent: Instant, outcome: Option<Outcome>) {
        self.live().record_answer(sent, outcome);
    }

    /// Notes that the next send waited `wait` for its turn in its
    /// session's write queue.
    pub(crate) fn queued(&self, wait: Duration) {
        let mut state = self.state();
        state.next_queued = state.next_queued.saturating_add(wait);
    }

    /// Notes that the first send goes rebased on a session known before
    /// it was sent; a later send keeps its own purpose.
    pub(crate) fn rebased_before_sending(&self) {
        let mut state = self.state();
        if state.history.attempts().is_empty() {
            state.next_purpose = Purpose::RebasedBeforeSending;
        }
    }

    /// Notes why the logical request stopped short of a success. The last
    /// reason given stands: that of the layer that chose the final answer
    /// (for a 412 handed back, the rebase layer's, even when the retry
    /// layer below gave up on the re-read first). A later success does not
    /// clear it.
    pub(crate) fn gave_up(&self, reason: GaveUp) {
        self.state().history.gave_up = Some(reason);
    }

    /// How many attempts are recorded so far.
    pub(crate) fn attempts(&self) -> usize {
        self.state().history.attempts().len()
    }

    /// See [`Live::end`].
    pub(crate) fn end<B, E>(&self, result: &mut Result<Response<B>, E>) {
        self.live().end(result);
    }

    /// See [`Live::hand_history_to`].
    pub(crate) fn hand_history_to<B>(&self, res: &mut Response<B>) {
        self.live().hand_history_to(res);
    }

    /// See [`LogicalRequest::history`].
    pub(crate) fn history(&self) -> AttemptHistory {
        let mut state = self.state();
        let now = state.now();
        let mut history = state.history.clone();
        history.total = now - self.start;
        history
    }
}

/// What of a logical request changes as it goes (its [`State`]), with what
/// recording it reads: see [`LogicalContext::live`].
pub(crate) struct Live<'a> {
    start: Instant,
    call: &'a LazyCall,
    #[cfg(feature = "metrics")]
    authority: Option<&'a Authority>,
    state: Held<'a>,
}

/// The state, locked or borrowed from its owner.
enum Held<'a> {
    Locked(MutexGuard<'a, State>),
    Kept(&'a mut State),
}

impl std::ops::Deref for Held<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        match self {
            Held::Locked(state) => state,
            Held::Kept(state) => state,
        }
    }
}

impl std::ops::DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut State {
        match self {
            Held::Locked(state) => state,
            Held::Kept(state) => state,
        }
    }
}

impl Live<'_> {
    /// See [`LogicalContext::now`].
    pub(crate) fn now(&mut self) -> Instant {
        self.state.now()
    }

    /// See [`LogicalContext::yielded`].
    pub(crate) fn yielded(&mut self) {
        if let Clock::Read(_) = self.state.clock {
            self.state.clock = Clock::Unread;
        }
    }

    /// The request's host, for the metrics: kept only when they are.
    fn authority(&self) -> Option<&Authority> {
        #[cfg(feature = "metrics")]
        return self.authority;
        #[cfg(not(feature = "metrics"))]
        None
    }

    /// Records an answer (an outcome, or `None` for an error of the inner
    /// service), sent at `sent` and received [`now`](Self::now), unless an
    /// inner layer already did (then the clock is not read).
    pub(crate) fn record_answer(&mut self, sent: Instant, outcome: Option<Outcome>) {
        let state = &mut *self.state;
        if state.history.attempts().len() >= state.sends as usize {
            return;
        }
        let now = state.now();
        let attempt = Attempt {
            purpose: state.next_purpose,
            sent_after: sent - self.start,
            waited: sent.saturating_duration_since(state.last_answer),
            queued: std::mem::take(&mut state.next_queued),
            outcome,
        };
        state.history.push(attempt);
        state.last_answer = now;
        let (method, authority) = (self.call.method(), self.authority());
        crate::metrics::send_done(method, authority, outcome.as_ref(), now - sent);
    }

    /// For the layer that made the logical request, once it is over with
    /// `result`: its history handed to the answer
    /// ([`hand_history_to`](Self::hand_history_to)), or, for an error
    /// (which carries the history from the layer that failed), the logical
    /// request ended for the metrics.
    pub(crate) fn end<B, E>(mut self, result: &mut Result<Response<B>, E>) {
        match result {
            Ok(res) => self.hand_history_to(res),
            Err(_) => drop(self.take_history(None)),
        }
    }

    /// For the layer that made the logical request, once it is over with
    /// `res`: moves the history into `res`'s [`Classified`] entry (which
    /// it makes, classifying `res` as the logical request's call, if no
    /// layer did).
    pub(crate) fn hand_history_to<B>(mut self, res: &mut Response<B>) {
        let history = self.take_history(Some(res.status()));
        outcome_of(res, || self.call.clone());
        if let Some(classified) = res.extensions_mut().get_mut::<Classified>() {
            classified.history = Some(history);
        }
    }

    /// The history, moved out with its total time: for the layer that
    /// made the logical request, once it is over with `status`, or an
    /// error (`None`).
    fn take_history(&mut self, status: Option<StatusCode>) -> AttemptHistory {
        let now = self.state.now();
        let mut history = std::mem::take(&mut self.state.history);
        history.total = now - self.start;
        let (method, sends) = (self.call.method(), history.attempts().len());
        crate::metrics::logical_done(method, status, sends, history.total);
        history
    }
}

/// Starts the logical request of every request it passes, so that the
/// layers inside it share one deadline and attempt limit whatever their
/// own settings, and puts its [`AttemptHistory`] in the response.
///
/// This is the one place where the limits are set: no other layer has a
/// deadline or an attempt limit of its own.
/// [`MpsdLayer`](crate::stack::MpsdLayer) puts one on top of a rebase
/// policy's layers (its `deadline` and `max_attempts` set it); without a
/// rebase policy it has its retry layer, then on top, make each logical
/// request with the same limits. A retry or rebase layer used without one
/// starts a logical request with [`LogicalLayer::default`]'s limits (20
/// sends for a rebase layer, see [`RebaseLayer`](crate::rebase::RebaseLayer));
/// pacing without one waits at most the default deadline.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct LogicalLayer {
    deadline: Duration,
    max_attempts: u32,
}

impl Default for LogicalLayer {
    /// A 20 s deadline, the retry window of Microsoft's SDK, and 5 sends, a
    /// bound on load whatever the deadline.
    fn default() -> Self {
        Self::new(DEFAULT_DEADLINE, 5)
    }
}

/// The deadline of a logical request no layer set one for: the retry
/// window of Microsoft's SDK.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_secs(20);

/// The sends of a logical request that may be rebased: the first write,
/// the rebase layer's default 16 conflict rounds of one write each (MPSD's
/// 412 carries the session: no re-read), and three retries.
pub(crate) const REBASE_SENDS: u32 = 20;

impl LogicalLayer {
    /// The limits a rebase layer used alone starts a logical request with:
    /// the default deadline and [`REBASE_SENDS`] sends.
    pub(crate) const fn for_rebase() -> Self {
        Self {
            deadline: DEFAULT_DEADLINE,
            max_attempts: REBASE_SENDS,
        }
    }

    /// Logical requests of at most `max_attempts` sends, over by `deadline`.
    ///
    /// The deadline bounds every wait (a backoff, a cooldown, a pace slot)
    /// and, with a floor of the retry layer's `min_attempt_time`, every
    /// attempt. `Duration::MAX` means no deadline. `Duration::ZERO` means
    /// no wait at all, with or without pacing: the first send goes at once
    /// if nothing holds it back, and is [`Refused`](crate::error::Refused)
    /// if a cooldown or a pace slot would; nothing is retried.
    ///
    /// # Panics
    ///
    /// When `max_attempts` is zero.
    #[track_caller]
    pub fn new(deadline: Duration, max_attempts: u32) -> Self {
        assert!(max_attempts > 0, "at least one attempt");
        Self {
            deadline,
            max_attempts,
        }
    }
}

impl<S> Layer<S> for LogicalLayer {
    type Service = Logical<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Logical {
            inner,
            layer: *self,
        }
    }
}

/// Starts logical requests; see [`LogicalLayer`].
#[derive(Debug, Clone)]
pub struct Logical<S> {
    inner: S,
    layer: LogicalLayer,
}

impl<S> Logical<S> {
    crate::macros::define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Logical<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let (logical, owner) = LogicalRequest::of_or_insert(&mut req, self.layer);
        if owner {
            logical.context().track_yields();
        }
        ResponseFuture {
            inner: self.inner.call(req),
            owned: owner.then_some(logical),
        }
    }
}

pin_project! {
    /// The future of [`Logical`]: adds the history to the response.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        owned: Option<LogicalRequest>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(mut result) = this.inner.poll(cx) else {
            if let Some(logical) = this.owned {
                logical.context().yielded();
            }
            return Poll::Pending;
        };
        if let Some(logical) = this.owned.take() {
            logical.context().end(&mut result);
        }
        Poll::Ready(result)
    }
}

/// Why a send was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Purpose {
    /// The caller's request, as given.
    First,
    /// The same request again, after a retryable failure.
    Retry(Cause),
    /// A GET of the session to read its current ETag, after a 412.
    Reread,
    /// The write again, rebased on the session's current ETag.
    Rebased,
    /// The write's first send, rebased before it went: the session it was
    /// conditional on was known to be superseded (see
    /// [`crate::sequence`]), so it went with the fresh ETag and a body
    /// the rebase policy made, with no 412 of its own.
    RebasedBeforeSending,
}

/// One send to the inner service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempt {
    /// Why it was sent.
    pub purpose: Purpose,
    /// When it was sent, from the start of the logical request.
    pub sent_after: Duration,
    /// How long it waited after the previous answer (backoff, cooldown,
    /// or, for the first send, everything since the call).
    pub waited: Duration,
    /// Of `waited`, how long it waited for its turn in its session's write
    /// queue ([`crate::sequence`]); zero for a send that did not queue.
    pub queued: Duration,
    /// Its outcome, or `None` when the inner service failed.
    pub outcome: Option<Outcome>,
}

/// Why the layers stopped and handed back the last answer: the one
/// vocabulary of the retry and rebase layers, in
/// [`AttemptHistory::gave_up`]. A 412 the rebase layer hands back without
/// rebasing it says why here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GaveUp {
    /// The attempt limit was reached.
    MaxAttempts,
    /// The wait needed (at least the server's hint, or a rebased write's
    /// pause) would end past the deadline.
    Deadline {
        /// The wait that was needed.
        wait: Duration,
    },
    /// The server's hint is longer than the longest single wait.
    OverCap {
        /// The wait that was needed.
        wait: Duration,
    },
    /// The shared retry budget is empty.
    Budget,
    /// A retry, a re-read or a rebased write was due, but a cooldown or
    /// pacing would not let it go before the deadline: nothing was sent,
    /// and the last answer is handed back.
    CoolingDown {
        /// How long until it may go.
        retry_in: Duration,
    },
    /// The failure may have been applied and the request is not safe to
    /// repeat.
    NotSafeToRepeat,
    /// The error says no attempt can succeed: the caller's mistake (a
    /// request body that failed, a header not allowed) or the client's
    /// configuration (a scheme its connector does not serve). See
    /// [`crate::error`] for the rule.
    CannotSucceed,
    /// The request's body could not be kept for a replay (over the byte
    /// cap, or marked [`NotReplayable`](crate::replay::NotReplayable)): it
    /// was sent once, and a 412 is handed back unrebased.
    NotReplayable,
    /// The 412 conflict rounds were used up.
    ConflictRounds,
    /// The rebase policy chose to hand the 412 back; it carries the fresh
    /// session and its ETag.
    PolicyDeclined,
    /// After a 412, the session as it is now could not be read.
    NoSession(NoSession),
}

/// Why, after a 412, the session as it is now could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoSession {
    /// It is larger than the rebase layer's cap.
    TooLarge,
    /// Neither the 412 nor a re-read gave the session's ETag.
    NoEtag,
    /// Neither the 412 nor a re-read gave the session as a JSON object.
    NotJson,
    /// The re-read answered neither 200 nor 204.
    Reread {
        /// What it answered.
        status: http::StatusCode,
    },
    /// The re-read failed without an answer (a connection error), or its
    /// body broke off.
    RereadFailed,
}

/// The attempt history of one logical request, in the final response
/// (read it with [`AttemptHistory::of`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptHistory {
    attempts: Attempts,
    /// From the call to the final answer.
    pub total: Duration,
    /// Why the layers stopped before a success, if they did.
    pub gave_up: Option<GaveUp>,
}

impl AttemptHistory {
    /// The history in `res`'s extensions (in its [`Classified`] entry),
    /// put there by the layer that made the logical request.
    pub fn of<B>(res: &Response<B>) -> Option<&Self> {
        res.extensions().get::<Classified>()?.history.as_ref()
    }

    /// Every send, in order.
    pub fn attempts(&self) -> &[Attempt] {
        match &self.attempts {
            Attempts::None => &[],
            Attempts::One(attempt) => std::slice::from_ref(attempt),
            Attempts::Many(attempts) => attempts,
        }
    }

    /// The conflict round in which the write succeeded, when its last send
    /// did: 0 when the first send won (rebased before sending or not), `n`
    /// when the `n`th write rebased after a 412 did. `None` when the last
    /// answer is no success, or nothing was sent.
    pub fn won_in_round(&self) -> Option<u32> {
        let (last, before) = self.attempts().split_last()?;
        let success = last.outcome.as_ref().is_some_and(Outcome::is_success);
        let rebased = |a: &&Attempt| a.purpose == Purpose::Rebased;
        let rounds = before.iter().filter(rebased).count() + usize::from(rebased(&last));
        success.then(|| u32::try_from(rounds).unwrap_or(u32::MAX))
    }

    pub(crate) fn push(&mut self, attempt: Attempt) {
        self.attempts = match std::mem::take(&mut self.attempts) {
            Attempts::None => Attempts::One(attempt),
            Attempts::One(first) => Attempts::Many(vec![first, attempt]),
            Attempts::Many(mut attempts) => {
                attempts.push(attempt);
                Attempts::Many(attempts)
            }
        };
    }
}

/// The sends of a history: most logical requests take one, which is kept
/// without allocating.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Attempts {
    #[default]
    None,
    One(Attempt),
    Many(Vec<Attempt>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_user_info_query_or_token() {
        let mut req = Request::get("https://user:s3cret@mpsd.test/handles/h1?token=abc")
            .header(header::AUTHORIZATION, "XBL3.0 x=1;tok3n")
            .body(())
            .unwrap();
        let (ctx, _) = LogicalRequest::of_or_insert(&mut req, LogicalLayer::default());
        let shown = format!("{ctx:?}");
        if cfg!(feature = "metrics") {
            assert!(shown.contains("mpsd.test"), "{shown}");
        }
        for secret in ["s3cret", "abc", "tok3n"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        let invalid = InvalidUri::check(&"htp://user:s3cret@h/p?token=abc".parse().unwrap());
        let shown = format!("{:?}", invalid.unwrap_err());
        assert!(
            !shown.contains("s3cret") && !shown.contains("abc"),
            "{shown}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_outermost_layer_makes_the_context_and_the_rest_share_it() {
        let mut req = Request::new(());
        let (outer, made) =
            LogicalRequest::of_or_insert(&mut req, LogicalLayer::new(Duration::from_secs(20), 3));
        assert!(made);
        let (inner, made) =
            LogicalRequest::of_or_insert(&mut req, LogicalLayer::new(Duration::from_secs(1), 9));
        assert!(!made);
        assert_eq!(
            inner.deadline(),
            outer.deadline(),
            "the outer deadline holds"
        );
        assert!(inner.context().take_send(Purpose::Reread));
        assert!(outer.context().take_send(Purpose::Rebased));
        assert!(
            !inner.context().take_send(Purpose::Rebased),
            "three sends in all"
        );
        assert_eq!(outer.sends(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_recorded_once_however_many_layers_see_it() {
        let mut req = Request::new(());
        let (ctx, _) = LogicalRequest::of_or_insert(&mut req, LogicalLayer::default());
        let t0 = Instant::now();
        ctx.context().record_answer(t0, None);
        ctx.context().record_answer(t0, None);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(ctx.context().take_send(Purpose::Reread));
        ctx.context().record_answer(Instant::now(), None);
        ctx.context().record_answer(Instant::now(), None);
        let history = ctx.history();
        assert_eq!(history.attempts().len(), 2);
        assert_eq!(history.attempts()[1].purpose, Purpose::Reread);
        assert_eq!(history.attempts()[1].waited, Duration::from_secs(2));
        assert_eq!(history.total, Duration::from_secs(2));
    }

    /// Within one poll the owner's layers share one reading of the clock,
    /// the first poll the reading its call began with; after the stack
    /// yields, the next asks it again. Untracked, every asking reads it.
    #[tokio::test(start_paused = true)]
    async fn the_clock_is_read_once_per_poll_of_the_owner() {
        let mut req = Request::new(());
        let (untracked, _) = LogicalRequest::of_or_insert(&mut req, LogicalLayer::default());
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            untracked.context().now(),
            t0 + Duration::from_secs(1),
            "untracked: read"
        );

        let mut req = Request::new(());
        let (ctx, _) = LogicalRequest::of_or_insert(&mut req, LogicalLayer::default());
        ctx.context().track_yields();
        tokio::time::advance(Duration::from_secs(1)).await;
        let start = t0 + Duration::from_secs(1);
        assert_eq!(
            ctx.context().now(),
            start,
            "no yield yet: the start's reading"
        );
        assert_eq!(ctx.history().total, Duration::ZERO);
        ctx.context().yielded();
        let read = ctx.context().now();
        assert_eq!(
            read,
            t0 + Duration::from_secs(2),
            "after a yield: read again"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            ctx.context().now(),
            read,
            "no yield since: the same reading"
        );
        assert_eq!(ctx.history().total, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_session_and_user_are_parsed_from_the_request_and_the_token_never_shows() {
        let mut req = Request::put(
            "http://mpsd.test/serviceconfigs/c/sessionTemplates/t/sessions/s/members/me?x=1",
        )
        .header(header::AUTHORIZATION, "XBL3.0 x=42;secret-token")
        .body(())
        .unwrap();
        let (ctx, _) = LogicalRequest::of_or_insert(&mut req, LogicalLayer::default());
        assert_eq!(
            ctx.session_path(),
            Some("/serviceconfigs/c/sessionTemplates/t/sessions/s")
        );
        assert_eq!(ctx.user(), Some("42"));
        assert!(!format!("{ctx:?}").contains("secret-token"), "{ctx:?}");

        let mut other = Request::get("http://mpsd.test/handles/h").body(()).unwrap();
        let (ctx, _) = LogicalRequest::of_or_insert(&mut other, LogicalLayer::default());
        assert_eq!((ctx.session_path(), ctx.user()), (None, None));
    }
}
