use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body;
use pin_project_lite::pin_project;
use serde_json::Value;
use tokio::time::{sleep, Instant};
use tower::util::rng::{HasherRng, Rng};
use tower::{Service, ServiceExt};

use super::body::RebaseBody;
use super::layer::Config;
use super::policy::{Decision, LostRace, RebasePolicy};
use super::rules::{current_session, rebase_head, reread, Condition, Unusable};
use crate::classify::outcome_of;
use crate::classify::Call;
use crate::error::Refused;
use crate::logical::{GaveUp, LogicalLayer, LogicalRequest, Purpose};
use crate::replay::NotReplayable;
use crate::response::{collect_capped, read_capped, ReadFailure};
use crate::BoxError;

/// In the extensions of a 412 the layer handed back without rebasing it:
/// why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotRebased {
    /// The request body is over the layer's cap (or was marked
    /// [`NotReplayable`]); the write was sent once.
    BodyTooLarge,
    /// Neither the 412 nor a re-read gave the session's ETag.
    NoEtag,
    /// Neither the 412 nor a re-read gave the session as a JSON object.
    NotJson,
    /// The session is larger than the layer's cap.
    SessionTooLarge,
    /// The re-read answered neither 200 nor 204.
    Reread {
        /// What it answered.
        status: StatusCode,
    },
    /// The re-read failed without an answer (a connection error), or its
    /// body broke off.
    RereadFailed,
    /// A cooldown or pacing below would not let the re-read or the rebased
    /// write go before the deadline; nothing was sent.
    CoolingDown {
        /// How long until it may go.
        retry_in: Duration,
    },
    /// The policy chose to hand the 412 back; it carries the fresh session
    /// and its ETag.
    Declined,
    /// The conflict rounds were used up.
    Rounds,
    /// The logical request's attempt limit was reached.
    Attempts,
    /// The pause before a rebased write would end past the deadline.
    Deadline,
}

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
    /// conditional write goes straight through; a conditional write runs
    /// its conflict rounds in a boxed `async` block: they read bodies, call
    /// the policy and re-read, and a hand-written state machine for them
    /// would cost more in clarity than the one allocation per write.
    pub struct ResponseFuture<F, R> {
        #[pin]
        kind: Kind<F, R>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, R> {
        Through { #[pin] future: F },
        Rebasing { future: BoxFuture<'static, Result<Response<RebaseBody<R>>, BoxError>> },
    }
}

impl<F, R> ResponseFuture<F, R> {
    pub(crate) fn through(future: F) -> Self {
        Self {
            kind: Kind::Through { future },
        }
    }

    pub(crate) fn rebasing(
        future: BoxFuture<'static, Result<Response<RebaseBody<R>>, BoxError>>,
    ) -> Self {
        Self {
            kind: Kind::Rebasing { future },
        }
    }
}

impl<F, R> fmt::Debug for ResponseFuture<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, R, E> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<Response<R>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RebaseBody<R>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Through { future } => {
                let res = ready!(future.poll(cx)).map_err(Into::into)?;
                Poll::Ready(Ok(res.map(RebaseBody::inner)))
            }
            KindProj::Rebasing { future } => future.as_mut().poll(cx),
        }
    }
}

/// A 412 whose body has been read.
struct Lost {
    head: http::response::Parts,
    body: Bytes,
}

impl Lost {
    /// The 412 as it came, with the reason it was not rebased.
    fn hand_back<R>(mut self, why: NotRebased) -> Response<RebaseBody<R>> {
        tracing::debug!(?why, "mpsd rebase: handing the 412 back");
        // The body handed back is what was read; its length speaks for it.
        self.head.headers.remove(header::CONTENT_LENGTH);
        let mut res = Response::from_parts(self.head, RebaseBody::read(self.body));
        res.extensions_mut().insert(why);
        res
    }

    /// The 412, carrying the session as it is now and its ETag.
    fn fresh(mut self, etag: &HeaderValue, session: Bytes) -> Self {
        self.head.headers.insert(header::ETAG, etag.clone());
        self.head.headers.remove(header::CONTENT_LENGTH);
        self.body = session;
        self
    }
}

/// One logical write, through its conflict rounds.
pub(crate) async fn run<S, P, B, R>(
    mut svc: S,
    mut policy: P,
    mut req: Request<B>,
    (mut condition, session_uri): (Condition, Uri),
    config: Config,
) -> Result<Response<RebaseBody<R>>, BoxError>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: Into<BoxError>,
    P: RebasePolicy,
    B: Body + Clone + From<Bytes>,
    B::Error: Into<BoxError>,
    R: Body<Data = Bytes>,
    R::Error: Into<BoxError>,
{
    let (logical, owner) = LogicalRequest::of_or_insert(&mut req, LogicalLayer::for_rebase());
    let call = logical.call().clone();
    let (mut write, body) = req.into_parts();
    let mut sent_body = if write.extensions.get::<NotReplayable>().is_some() {
        None
    } else {
        collect_capped(body.clone(), config.body_limit).await.ok()
    };
    let mut rng = HasherRng::new();

    let first = Request::from_parts(write.clone(), body);
    let mut res = send(&mut svc, first, true, &logical, &call).await?;
    let mut round = 0;
    let finish = |mut res: Response<RebaseBody<R>>| {
        if owner {
            res.extensions_mut().insert(logical.take_history());
        }
        Ok(res)
    };
    loop {
        if res.status() != StatusCode::PRECONDITION_FAILED {
            return finish(res.map(RebaseBody::inner));
        }
        round += 1;
        tracing::debug!(round, "mpsd rebase: the write lost a race");
        let Some(body) = sent_body.take() else {
            logical.gave_up(GaveUp::NotReplayable);
            let mut res = res.map(RebaseBody::inner);
            res.extensions_mut().insert(NotRebased::BodyTooLarge);
            return finish(res);
        };
        let (head, lost_body) = res.into_parts();
        let read = read_capped(Response::new(lost_body), config.session_limit).await;
        let too_large = matches!(read, Err(ReadFailure::TooLarge));
        // A body that broke off is no use: the session is re-read below.
        let lost = Lost {
            head,
            body: read.unwrap_or_default(),
        };
        if too_large {
            logical.gave_up(GaveUp::NoSession);
            return finish(lost.hand_back(NotRebased::SessionTooLarge));
        }
        if round > config.max_rounds {
            logical.gave_up(GaveUp::ConflictRounds);
            return finish(lost.hand_back(NotRebased::Rounds));
        }

        // The session as it is now: from the 412, or by a GET.
        let (etag, session, session_bytes) = match current_session(&lost.head.headers, &lost.body) {
            Ok((etag, session)) => {
                let bytes = lost.body.clone();
                (etag, session, bytes)
            }
            Err(_) => {
                if !logical.take_send(Purpose::Reread) {
                    logical.gave_up(GaveUp::MaxAttempts);
                    return finish(lost.hand_back(NotRebased::Attempts));
                }
                let mut get = reread::<B>(&write, session_uri.clone());
                // Its own call, not the logical request's: the layers below
                // classify its answer as the GET it is.
                let reread_call = Call::of(&get);
                get.extensions_mut().insert(reread_call.clone());
                let answer = match send(&mut svc, get, false, &logical, &reread_call).await {
                    Ok(answer) => answer,
                    Err(error) => {
                        // The write's answer is known (412: not applied);
                        // the re-read's failure must not replace it.
                        tracing::debug!(%error, "mpsd rebase: the re-read failed");
                        let why = match Refused::wait_for(&error) {
                            Some(retry_in) => NotRebased::CoolingDown { retry_in },
                            None => NotRebased::RereadFailed,
                        };
                        logical.gave_up(GaveUp::NoSession);
                        return finish(lost.hand_back(why));
                    }
                };
                match reread_session(answer, config.session_limit).await {
                    Ok(current) => current,
                    Err(Reread::Gone) => return Err(RebaseError::SessionGone.into()),
                    Err(Reread::Stop(why)) => {
                        logical.gave_up(GaveUp::NoSession);
                        return finish(lost.hand_back(why));
                    }
                }
            }
        };

        let conflict = LostRace {
            method: &write.method,
            uri: &write.uri,
            create_only: condition == Condition::CreateOnly,
            body: &body,
            session: &session,
            etag: &etag,
            round,
        };
        let next_body = match policy.rebase(&conflict) {
            Err(e) => return Err(RebaseError::Policy(e).into()),
            Ok(Decision::Retry(next)) => next,
            Ok(Decision::GiveUp) => {
                logical.gave_up(GaveUp::PolicyDeclined);
                return finish(
                    lost.fresh(&etag, session_bytes)
                        .hand_back(NotRebased::Declined),
                );
            }
        };
        let pause = spread(config.spread, round).mul_f64(rng.next_f64());
        if pause > logical.deadline().saturating_duration_since(Instant::now()) {
            logical.gave_up(GaveUp::Deadline { wait: pause });
            return finish(
                lost.fresh(&etag, session_bytes)
                    .hand_back(NotRebased::Deadline),
            );
        }
        if !logical.take_send(Purpose::Rebased) {
            logical.gave_up(GaveUp::MaxAttempts);
            return finish(
                lost.fresh(&etag, session_bytes)
                    .hand_back(NotRebased::Attempts),
            );
        }
        sleep(pause).await;
        // Later rounds rebase the write as last sent.
        condition = rebase_head(&mut write, &etag);
        let next = Request::from_parts(write.clone(), B::from(next_body.clone()));
        res = match send(&mut svc, next, false, &logical, &call).await {
            Ok(res) => res,
            // Refused below, unsent: the 412 in hand is still the answer.
            Err(error) => match Refused::wait_for(&error) {
                Some(retry_in) => {
                    logical.gave_up(GaveUp::CoolingDown { retry_in });
                    let why = NotRebased::CoolingDown { retry_in };
                    return finish(lost.fresh(&etag, session_bytes).hand_back(why));
                }
                // It may have been applied: the caller must know.
                None => return Err(error),
            },
        };
        sent_body = Some(next_body);
    }
}

/// The pause window before the `round`th rebased write: `spread`, doubled
/// each round up to 32×, so writers who keep meeting spread further apart.
fn spread(spread: Duration, round: u32) -> Duration {
    spread.saturating_mul(1 << round.saturating_sub(1).min(5))
}

enum Reread {
    Gone,
    Stop(NotRebased),
}

/// The session from a re-read's answer.
async fn reread_session<R>(
    answer: Response<R>,
    limit: usize,
) -> Result<(HeaderValue, Value, Bytes), Reread>
where
    R: Body,
    R::Error: Into<BoxError>,
{
    match answer.status() {
        StatusCode::OK => {}
        StatusCode::NO_CONTENT => return Err(Reread::Gone),
        status => return Err(Reread::Stop(NotRebased::Reread { status })),
    }
    let headers = answer.headers().clone();
    let bytes = match read_capped(answer, limit).await {
        Ok(bytes) => bytes,
        Err(ReadFailure::TooLarge) => return Err(Reread::Stop(NotRebased::SessionTooLarge)),
        Err(ReadFailure::Body(_)) => return Err(Reread::Stop(NotRebased::RereadFailed)),
    };
    match current_session(&headers, &bytes) {
        Ok((etag, session)) => Ok((etag, session, bytes)),
        Err(Unusable::NoEtag) => Err(Reread::Stop(NotRebased::NoEtag)),
        Err(Unusable::NotJson) => Err(Reread::Stop(NotRebased::NotJson)),
    }
}

/// Sends one request through the inner service and records its answer.
async fn send<S, B, R>(
    svc: &mut S,
    req: Request<B>,
    first: bool,
    logical: &LogicalRequest,
    call: &Call,
) -> Result<Response<R>, BoxError>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: Into<BoxError>,
{
    // The first send uses the service the caller made ready.
    let ready = if first {
        svc
    } else {
        svc.ready().await.map_err(Into::into)?
    };
    let sent = Instant::now();
    let mut res = ready.call(req).await.map_err(Into::into);
    // Classified once: by a layer further in, or here.
    let (outcome, record) = match &mut res {
        Ok(res) => {
            let (outcome, new) = outcome_of(res, call);
            (Some(outcome), new)
        }
        // A send refused below (a cooldown or pacing) never went out.
        Err(e) => (None, Refused::wait_for(e).is_none()),
    };
    if record {
        logical.record(sent, outcome, Instant::now());
    }
    res
}
