use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body;
use pin_project_lite::pin_project;
use serde_json::Value;
use tokio::time::{sleep, Instant, Sleep};
use tower::util::rng::{HasherRng, Rng};
use tower::Service;

use super::body::RebaseBody;
use super::layer::Config;
use super::policy::{Decision, LostRace, RebasePolicy};
use super::rules::{
    current_session, pause, rebase_head, reread, reread_session, reread_status, Condition, Reread,
};
use crate::body::{read_within, Read};
use crate::classify::outcome_of;
use crate::classify::{Call, Classified, LazyCall, Outcome};
use crate::error::{Refused, RefusedBy};
use crate::logical::{GaveUp, LogicalLayer, LogicalRequest, NoSession, Purpose};
use crate::ready::Held;
use crate::replay::NotReplayable;
use crate::response::{announced_over, ReadFailure};
use crate::sequence::{Count, Entry, Seen, SessionBoard, Snapshot, Turn};
use crate::BoxError;

/// A rebase that could not end in an answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum RebaseError {
    /// The session was deleted between the 412 and the re-read (the GET
    /// answered 204): there is nothing to write to.
    SessionGone,
    /// The policy failed.
    Policy(BoxError),
}

impl fmt::Display for RebaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SessionGone => {
                f.write_str("the session was deleted before the write was rebased")
            }
            Self::Policy(e) => write!(f, "rebase policy failed: {e}"),
        }
    }
}

impl std::error::Error for RebaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Policy(e) => Some(&**e),
            Self::SessionGone => None,
        }
    }
}

pin_project! {
    /// The future of [`Rebase`](super::Rebase). A request that is not a
    /// conditional write goes straight through. A conditional write runs
    /// its conflict rounds in place: keeping its body, sending it, reading
    /// a 412, re-reading the session, asking the policy, pausing, sending
    /// the rebased write.
    pub struct ResponseFuture<S, P, B, R>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        kind: Kind<S::Future, Rounds<S, P>, B, R>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, W, B, R> {
        Through { #[pin] future: F },
        Rebasing { rounds: W, #[pin] state: State<F, B, R> },
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B, R> {
        // Reading a copy of the write's body to keep it (none when the body
        // may not be kept), then sending the write with the service the
        // caller made ready, unless the read or a queue kept it waiting.
        Keeping {
            #[pin]
            copy: Option<B>,
            read: BytesMut,
            body: Option<B>,
        },
        // Waiting for its turn in the session's queue (sequenced writes).
        Queued { wait: Waiting, since: Instant, body: Option<B> },
        // Waiting for the service to be ready for the send `next`.
        Ready { next: Next<B> },
        // A send in flight.
        Calling { sending: Sending, #[pin] future: F },
        // Reading the body of a 412 or of a re-read's 200.
        Reading { of: Of, #[pin] body: R, read: BytesMut },
        // Reading the body of a sequenced write's answer, for the board.
        Recording { head: Option<http::response::Parts>, #[pin] body: R, read: BytesMut },
        // The random pause before a rebased write conditional on `etag`.
        Pausing { etag: HeaderValue, body: Bytes, #[pin] sleep: Sleep },
        Done,
    }
}

/// A wait for a turn in a session's queue, over at the deadline.
type Waiting = Pin<Box<dyn Future<Output = Result<Turn, ()>> + Send>>;

/// A send, once the service is ready.
enum Next<B> {
    /// The write as the caller gave it, after a wait.
    First(B),
    Reread,
    /// The rebased write, with this body.
    Rebased(Bytes),
}

/// What a send in flight is.
enum Sending {
    /// The write, first or rebased.
    Write,
    /// The re-read, with its own call.
    Reread(Call),
}

/// Whose body is being read.
enum Of {
    /// The 412's (its head is in [`Rounds::lost`]).
    Lost,
    /// The re-read's, with its headers.
    Session(HeaderMap),
}

/// Everything of a rebasing [`ResponseFuture`] but its state.
struct Rounds<S, P> {
    svc: Held<S>,
    policy: P,
    config: Config,
    logical: LogicalRequest,
    owner: bool,
    /// The write's head, as last sent.
    write: http::request::Parts,
    condition: Condition,
    session_uri: Uri,
    /// The write's body as last sent, when it could be kept.
    body: Option<Bytes>,
    /// The 412 in hand, from its head's arrival until the round ends: what
    /// the caller gets when the round cannot end in a new answer.
    lost: Option<Lost>,
    round: u32,
    /// When the send in flight went.
    sent: Instant,
    rng: HasherRng,
    /// The board sequencing the session's writes, if any; the write's
    /// turn while it holds it; its `If-Match` as the caller sent it.
    board: Option<SessionBoard>,
    turn: Option<Turn>,
    first_if_match: Option<HeaderValue>,
}

type Finished<R> = Result<Response<RebaseBody<R>>, BoxError>;

/// What a step of the rounds leads to.
enum Step<F, B, R> {
    /// The next state.
    Go(State<F, B, R>),
    /// What the caller gets.
    Done(Finished<R>),
}

impl<S, P, B, R> ResponseFuture<S, P, B, R>
where
    S: Service<Request<B>>,
{
    pub(crate) fn through(future: S::Future) -> Self {
        Self {
            kind: Kind::Through { future },
        }
    }

    /// Starts the rounds of `req`, a conditional write, with `svc`, which
    /// the caller made ready.
    pub(crate) fn rebasing(
        svc: Held<S>,
        policy: P,
        mut req: Request<B>,
        (condition, session_uri): (Condition, Uri),
        config: Config,
        board: Option<SessionBoard>,
    ) -> Self
    where
        B: Clone,
    {
        let (logical, owner) = LogicalRequest::of_or_insert(&mut req, LogicalLayer::for_rebase());
        let (write, body) = req.into_parts();
        let keep = write.extensions.get::<NotReplayable>().is_none();
        let start = logical.start();
        let first_if_match = board
            .as_ref()
            .and_then(|_| write.headers.get(header::IF_MATCH).cloned());
        let rounds = Rounds {
            svc,
            policy,
            config,
            logical,
            owner,
            write,
            condition,
            session_uri,
            body: None,
            lost: None,
            round: 0,
            sent: start,
            rng: HasherRng::new(),
            board,
            turn: None,
            first_if_match,
        };
        Self {
            kind: Kind::Rebasing {
                rounds,
                state: State::Keeping {
                    copy: keep.then(|| body.clone()),
                    read: BytesMut::new(),
                    body: Some(body),
                },
            },
        }
    }
}

impl<S, P, B, R> fmt::Debug for ResponseFuture<S, P, B, R>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, P, B, R> Future for ResponseFuture<S, P, B, R>
where
    S: Service<Request<B>, Response = Response<R>> + Clone,
    S::Error: Into<BoxError>,
    P: RebasePolicy,
    B: Body + From<Bytes>,
    B::Error: Into<BoxError>,
    R: Body,
    R::Error: Into<BoxError>,
{
    type Output = Finished<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (me, mut state) = match self.project().kind.project() {
            KindProj::Through { future } => {
                let res = ready!(future.poll(cx)).map_err(Into::into)?;
                return Poll::Ready(Ok(res.map(RebaseBody::inner)));
            }
            KindProj::Rebasing { rounds, state } => (rounds, state),
        };
        loop {
            let step = match state.as_mut().project() {
                StateProj::Keeping { copy, read, body } => {
                    if let Some(copy) = copy.as_pin_mut() {
                        let limit = me.config.body_limit;
                        let Poll::Ready(kept) = read_within(copy, read, limit, cx) else {
                            me.svc.release();
                            return Poll::Pending;
                        };
                        me.body = kept_body(kept, read);
                    }
                    let body = body.take().expect("the write's body goes once");
                    me.enter(body)
                }
                StateProj::Queued { wait, since, body } => {
                    let turn = ready!(wait.as_mut().poll(cx));
                    me.logical.context().queued(since.elapsed());
                    let body = body.take().expect("the write's body goes once");
                    match turn {
                        Ok(turn) => {
                            me.turn = Some(turn);
                            me.go_first(body)
                        }
                        Err(()) => Step::Done(Err(me.refused_by_queue())),
                    }
                }
                StateProj::Ready { next } => match ready!(me.svc.poll_ready(cx)) {
                    Ok(()) => Step::Go(me.send(std::mem::replace(next, Next::Reread))),
                    // Not sent, so not recorded; otherwise a failed send.
                    Err(e) => me.failed(matches!(next, Next::Reread), e.into()),
                },
                StateProj::Calling { sending, future } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    let result = me.record(result, sending);
                    let reread = matches!(sending, Sending::Reread(_));
                    match result {
                        Ok(res) if reread => me.reread_answered(res),
                        Ok(res) => me.write_answered(res),
                        Err(e) => me.failed(reread, e),
                    }
                }
                StateProj::Reading { of, body, read } => {
                    let limit = me.config.session_limit;
                    let read = read_result(ready!(read_within(body, read, limit, cx)), read);
                    match of {
                        Of::Lost => me.lost_read(read),
                        Of::Session(headers) => me.session_read(headers, read),
                    }
                }
                StateProj::Recording { head, body, read } => {
                    let limit = me.config.session_limit;
                    let read = read_result(ready!(read_within(body, read, limit, cx)), read);
                    let head = head.take().expect("the answer's head goes once");
                    me.recorded(head, read)
                }
                StateProj::Pausing { etag, body, sleep } => {
                    ready!(sleep.poll(cx));
                    // Later rounds rebase the write as last sent.
                    me.condition = rebase_head(&mut me.write, etag);
                    Step::Go(State::Ready {
                        next: Next::Rebased(std::mem::take(body)),
                    })
                }
                StateProj::Done => panic!("rebase future polled after completion"),
            };
            match step {
                Step::Go(next) => state.set(next),
                Step::Done(done) => {
                    // The next write of the session may go.
                    me.turn = None;
                    state.set(State::Done);
                    return Poll::Ready(done);
                }
            }
        }
    }
}

impl<S, P> Rounds<S, P> {
    /// Takes the write's turn in its session's queue, when sequenced, then
    /// sends it.
    fn enter<F, B, R>(&mut self, body: B) -> Step<F, B, R>
    where
        S: Service<Request<B>, Future = F> + Clone,
        P: RebasePolicy,
        B: From<Bytes>,
    {
        let Some(board) = &self.board else {
            return Step::Go(self.send_first(body));
        };
        match board.enter(&self.session_uri, self.logical.deadline()) {
            Entry::Now(turn) => {
                self.turn = Some(turn);
                self.go_first(body)
            }
            Entry::Wait(wait) => {
                board.count(Count::Waited);
                self.svc.release();
                Step::Go(State::Queued {
                    wait,
                    since: Instant::now(),
                    body: Some(body),
                })
            }
            Entry::Full => Step::Done(Err(self.refused_by_queue())),
        }
    }

    /// The write, its turn come: rebased first if the board knows it is
    /// stale.
    fn go_first<F, B, R>(&mut self, body: B) -> Step<F, B, R>
    where
        S: Service<Request<B>, Future = F>,
        P: RebasePolicy,
        B: From<Bytes>,
    {
        match self.rebase_before_sending() {
            Ok(Some(rebased)) => Step::Go(self.send_first(B::from(rebased))),
            Ok(None) => Step::Go(self.send_first(body)),
            Err(e) => Step::Done(Err(e)),
        }
    }

    /// The body to send instead, when the board knows a newer session than
    /// the one the write is conditional on and the policy rebases on it.
    fn rebase_before_sending(&mut self) -> Result<Option<Bytes>, BoxError>
    where
        P: RebasePolicy,
    {
        let (Some(board), Some(body)) = (self.board.clone(), self.body.as_ref()) else {
            return Ok(None);
        };
        let if_match = match self.condition {
            Condition::Match => Some(self.write.headers.get(header::IF_MATCH)),
            Condition::CreateOnly => None,
        };
        let Some(Snapshot { etag, body: known }) =
            board.stale(&self.session_uri, if_match.flatten())
        else {
            return Ok(None);
        };
        let Ok(session @ Value::Object(_)) = serde_json::from_slice::<Value>(&known) else {
            return Ok(None);
        };
        let conflict = LostRace {
            method: &self.write.method,
            uri: &self.write.uri,
            create_only: self.condition == Condition::CreateOnly,
            body,
            session: &session,
            etag: &etag,
            round: 0,
            before_sending: true,
        };
        let next = match self.policy.rebase(&conflict) {
            Err(e) => return Err(RebaseError::Policy(e).into()),
            Ok(Decision::GiveUp) => return Ok(None),
            Ok(Decision::Retry(next)) => next,
        };
        tracing::debug!("mpsd rebase: a stale write rebased before it was sent");
        board.count(Count::RebasedBeforeSending);
        self.logical.context().rebased_before_sending();
        crate::metrics::rebased(true);
        self.condition = rebase_head(&mut self.write, &etag);
        self.body = Some(next.clone());
        Ok(Some(next))
    }

    /// The write could not have its turn in time, or the queue was full:
    /// handed back unsent.
    fn refused_by_queue(&self) -> BoxError {
        if let Some(board) = &self.board {
            board.count(Count::Refused);
        }
        tracing::debug!("mpsd rebase: no turn in the session's queue before the deadline");
        Refused::new(
            RefusedBy::Queue,
            Duration::ZERO,
            self.logical.context().attempts(),
        )
        .into()
    }

    /// The final answer to the write: read for the board when sequenced and
    /// it carries the session, then handed back.
    fn answered<F, B, R>(&mut self, res: Response<R>) -> Step<F, B, R>
    where
        R: Body,
    {
        if self.board.is_none() {
            return Step::Done(self.finish(res.map(RebaseBody::inner)));
        }
        let within = |n: u64| n <= self.config.session_limit as u64;
        let session = matches!(res.status(), StatusCode::OK | StatusCode::CREATED)
            && res.headers().contains_key(header::ETAG)
            && res.body().size_hint().exact().is_some_and(within);
        if session {
            let (head, body) = res.into_parts();
            return Step::Go(State::Recording {
                head: Some(head),
                body,
                read: BytesMut::new(),
            });
        }
        // Any other answer (a 204, an error status, a session without an
        // `ETag` or an announced length within the cap) tells nothing
        // usable of the session as it is now: forget what was known of it.
        self.note(Seen::Gone);
        Step::Done(self.finish(res.map(RebaseBody::inner)))
    }

    /// The sequenced write's answer, read: noted on the board, handed back.
    fn recorded<F, B, R>(
        &mut self,
        head: http::response::Parts,
        read: Result<Bytes, ReadFailure>,
    ) -> Step<F, B, R> {
        match read {
            Ok(body) => {
                if let Some(etag) = head.headers.get(header::ETAG) {
                    self.saw(etag, &body);
                }
                Step::Done(self.finish(Response::from_parts(head, RebaseBody::read(body))))
            }
            Err(failure) => {
                self.note(Seen::Gone);
                Step::Done(Err(match failure {
                    ReadFailure::Body(e) => e,
                    ReadFailure::TooLarge => "the answer is longer than it announced".into(),
                }))
            }
        }
    }

    /// Notes on the board, if any, an answer carrying `body` at `etag`: the
    /// session as it is now when `body` is a JSON object.
    fn saw(&mut self, etag: &HeaderValue, body: &Bytes) {
        let object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let seen = if object {
            Seen::Session(Snapshot {
                etag: etag.clone(),
                body: body.clone(),
            })
        } else {
            Seen::Gone
        };
        self.note(seen);
    }

    /// Notes `seen` on the board, if any, and on the write's turn (for the
    /// fleet), as superseding the `If-Match` values the write carried: as
    /// the caller sent it, and as last sent.
    fn note(&mut self, seen: Seen) {
        let Some(board) = &self.board else {
            return;
        };
        let sent = [
            self.first_if_match.as_ref(),
            self.write.headers.get(header::IF_MATCH),
        ];
        if let Some(turn) = &mut self.turn {
            turn.saw(&seen, sent);
        }
        board.record(&self.session_uri, sent, seen);
    }

    /// Sends the write for the first time: at once with the service the
    /// caller made ready, unless a wait let that readiness go.
    fn send_first<B, F, R>(&mut self, body: B) -> State<F, B, R> {
        State::Ready {
            next: Next::First(body),
        }
    }

    /// Makes and sends `next`, the service being ready.
    fn send<B, F, R>(&mut self, next: Next<B>) -> State<F, B, R>
    where
        S: Service<Request<B>, Future = F>,
        B: From<Bytes>,
    {
        let (sending, req) = match next {
            Next::First(body) => (
                Sending::Write,
                Request::from_parts(self.write.clone(), body),
            ),
            Next::Reread => {
                let mut get = reread::<B>(&self.write, self.session_uri.clone());
                // Its own call, not the logical request's: the layers below
                // classify its answer as the GET it is.
                let call = Call::of(&get);
                get.extensions_mut().insert(call.clone());
                (Sending::Reread(call), get)
            }
            Next::Rebased(body) => {
                let req = Request::from_parts(self.write.clone(), B::from(body.clone()));
                self.body = Some(body);
                (Sending::Write, req)
            }
        };
        self.sent = Instant::now();
        State::Calling {
            sending,
            future: self.svc.call(req),
        }
    }

    /// Records the answer to a send, unless it was classified and recorded
    /// further in, or the send was refused below and never went.
    fn record<R>(
        &self,
        mut result: Result<Response<R>, BoxError>,
        sending: &Sending,
    ) -> Result<Response<R>, BoxError> {
        let call = || match sending {
            Sending::Write => self.logical.context().lazy_call().clone(),
            Sending::Reread(call) => LazyCall::known(call.clone()),
        };
        let (outcome, record) = match &mut result {
            Ok(res) => {
                let (outcome, new) = outcome_of(res, call);
                (Some(outcome), new)
            }
            Err(e) => (None, Refused::wait_for(e).is_none()),
        };
        if record {
            self.logical.context().record_answer(self.sent, outcome);
        }
        result
    }

    /// A write's answer: the caller's unless it is a 412 that can be rebased.
    fn write_answered<F, B, R>(&mut self, res: Response<R>) -> Step<F, B, R>
    where
        R: Body,
    {
        // A new answer: the 412 of the last round is no longer the one in hand.
        self.lost = None;
        if res.status() != StatusCode::PRECONDITION_FAILED {
            return self.answered(res);
        }
        if let Some(board) = &self.board {
            board.count(Count::PreconditionFailed);
        }
        self.round += 1;
        tracing::debug!(round = self.round, "mpsd rebase: the write lost a race");
        if self.body.is_none() {
            self.logical.context().gave_up(GaveUp::NotReplayable);
            return Step::Done(self.finish(res.map(RebaseBody::inner)));
        }
        let (head, body) = res.into_parts();
        self.lost = Some(Lost {
            head,
            body: Bytes::new(),
        });
        Step::Go(State::Reading {
            of: Of::Lost,
            body,
            read: BytesMut::new(),
        })
    }

    /// A send that failed or was refused below.
    fn failed<F, B, R>(&mut self, reread: bool, error: BoxError) -> Step<F, B, R> {
        let refused = Refused::wait_for(&error);
        if reread {
            // The write's answer is known (412: not applied); the
            // re-read's failure must not replace it.
            tracing::debug!(%error, "mpsd rebase: the re-read failed");
            let why = match refused {
                Some(retry_in) => GaveUp::CoolingDown { retry_in },
                None => GaveUp::NoSession(NoSession::RereadFailed),
            };
            return Step::Done(self.stop(why));
        }
        match (refused, self.lost.is_some()) {
            // The rebased write was refused below, unsent: the 412 in hand
            // is still the answer.
            (Some(retry_in), true) => Step::Done(self.stop(GaveUp::CoolingDown { retry_in })),
            // The first write's error is the caller's; a rebased write
            // may have been applied: the caller must know.
            _ => Step::Done(Err(error)),
        }
    }

    /// The 412's body, read: the session is in it, or must be re-read.
    fn lost_read<F, B, R>(&mut self, read: Result<Bytes, ReadFailure>) -> Step<F, B, R>
    where
        P: RebasePolicy,
    {
        let too_large = matches!(read, Err(ReadFailure::TooLarge));
        // A body that broke off is no use: the session is re-read below.
        self.lost.as_mut().expect("a 412 in hand").body = read.unwrap_or_default();
        if too_large {
            return Step::Done(self.stop(GaveUp::NoSession(NoSession::TooLarge)));
        }
        if self.round > self.config.max_rounds {
            return Step::Done(self.stop(GaveUp::ConflictRounds));
        }
        // The session as it is now: from the 412, or by a GET.
        let lost = self.lost.as_ref().expect("a 412 in hand");
        match current_session(&lost.head.headers, &lost.body) {
            Ok((etag, session)) => {
                let bytes = lost.body.clone();
                self.ask(etag, &session, bytes)
            }
            Err(_) => {
                if !self.logical.context().take_send(Purpose::Reread) {
                    return Step::Done(self.stop(GaveUp::MaxAttempts));
                }
                Step::Go(State::Ready { next: Next::Reread })
            }
        }
    }

    /// The re-read's answer: a session to read, or the end of the round.
    fn reread_answered<F, B, R>(&mut self, answer: Response<R>) -> Step<F, B, R> {
        let limit = self.config.session_limit;
        match reread_status(answer.status(), announced_over(answer.headers(), limit)) {
            Ok(()) => {
                let (head, body) = answer.into_parts();
                Step::Go(State::Reading {
                    of: Of::Session(head.headers),
                    body,
                    read: BytesMut::new(),
                })
            }
            Err(Reread::Gone) => Step::Done(Err(RebaseError::SessionGone.into())),
            Err(Reread::Stop(why)) => Step::Done(self.stop(GaveUp::NoSession(why))),
        }
    }

    /// The re-read's body, read.
    fn session_read<F, B, R>(
        &mut self,
        headers: &HeaderMap,
        read: Result<Bytes, ReadFailure>,
    ) -> Step<F, B, R>
    where
        P: RebasePolicy,
    {
        match reread_session(headers, read) {
            Ok((etag, session, bytes)) => self.ask(etag, &session, bytes),
            Err(why) => Step::Done(self.stop(GaveUp::NoSession(why))),
        }
    }

    /// Asks the policy about the session as it is now (`session`, read
    /// from `bytes`, at `etag`); on a retry, the pause before it.
    fn ask<F, B, R>(&mut self, etag: HeaderValue, session: &Value, bytes: Bytes) -> Step<F, B, R>
    where
        P: RebasePolicy,
    {
        let conflict = LostRace {
            method: &self.write.method,
            uri: &self.write.uri,
            create_only: self.condition == Condition::CreateOnly,
            body: self
                .body
                .as_ref()
                .expect("a 412 without a kept body is handed back"),
            session,
            etag: &etag,
            round: self.round,
            before_sending: false,
        };
        let decision = self.policy.rebase(&conflict);
        // The latest session known: writes queued behind this one that read
        // an older one are rebased on it (or a later one) before they go.
        self.saw(&etag, &bytes);
        // From here on, the 412 handed back carries the fresh session.
        let lost = self.lost.take().expect("a 412 in hand");
        self.lost = Some(lost.fresh(&etag, bytes));
        let next = match decision {
            Err(e) => return Step::Done(Err(RebaseError::Policy(e).into())),
            Ok(Decision::Retry(next)) => next,
            Ok(Decision::GiveUp) => return Step::Done(self.stop(GaveUp::PolicyDeclined)),
        };
        let left = self
            .logical
            .deadline()
            .saturating_duration_since(Instant::now());
        let pause = match pause(self.config.spread, self.round, self.rng.next_f64(), left) {
            Ok(pause) => pause,
            Err(why) => return Step::Done(self.stop(why)),
        };
        if !self.logical.context().take_send(Purpose::Rebased) {
            return Step::Done(self.stop(GaveUp::MaxAttempts));
        }
        crate::metrics::rebased(false);
        Step::Go(State::Pausing {
            etag,
            body: next,
            sleep: sleep(pause),
        })
    }

    /// Ends the round with the 412 in hand, saying why it was not rebased.
    fn stop<R>(&mut self, why: GaveUp) -> Finished<R> {
        tracing::debug!(?why, "mpsd rebase: handing the 412 back");
        self.logical.context().gave_up(why);
        let lost = self.lost.take().expect("a 412 in hand");
        if let Some(etag) = lost.head.headers.get(header::ETAG) {
            self.saw(etag, &lost.body);
        }
        self.finish(lost.hand_back())
    }

    /// Hands `res` back; the layer that made the logical request puts its
    /// history in it.
    fn finish<R>(&self, mut res: Response<RebaseBody<R>>) -> Finished<R> {
        if self.owner {
            self.logical.context().hand_history_to(&mut res);
        }
        Ok(res)
    }
}

/// A 412 in hand: its head, and its body once read (or, once known, the
/// session as it is now).
struct Lost {
    head: http::response::Parts,
    body: Bytes,
}

impl Lost {
    /// The 412 as it came (or with the session as it is now).
    fn hand_back<R>(mut self) -> Response<RebaseBody<R>> {
        // The body handed back is what was read; its length speaks for it.
        self.head.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(self.head, RebaseBody::read(self.body))
    }

    /// The 412, carrying the session as it is now and its ETag: a 412 with
    /// a session, as MPSD answers a stale `If-Match`, and classified so
    /// (it may have come without a body, as a create-only write's does).
    fn fresh(mut self, etag: &HeaderValue, session: Bytes) -> Self {
        let headers = &mut self.head.headers;
        headers.insert(header::ETAG, etag.clone());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.remove(header::CONTENT_LENGTH);
        if let Some(classified) = self.head.extensions.get_mut::<Classified>() {
            classified.outcome = Outcome::SessionChanged;
        }
        self.body = session;
        self
    }
}

/// The body kept from reading a copy of the write's: what was read, if it
/// was read whole within the cap.
fn kept_body(kept: Result<Read, BoxError>, read: &mut BytesMut) -> Option<Bytes> {
    match kept {
        Ok(Read::Whole(_)) => Some(std::mem::take(read).freeze()),
        Ok(Read::OverCap) | Err(_) => None,
    }
}

/// What reading a 412's or a re-read's body up to the session cap gave.
fn read_result(read: Result<Read, BoxError>, bytes: &mut BytesMut) -> Result<Bytes, ReadFailure> {
    match read {
        Ok(Read::Whole(_)) => Ok(std::mem::take(bytes).freeze()),
        Ok(Read::OverCap) => Err(ReadFailure::TooLarge),
        Err(e) => Err(ReadFailure::Body(e)),
    }
}
