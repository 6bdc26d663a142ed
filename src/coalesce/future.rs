use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Extensions, HeaderMap, Request, Response, StatusCode, Version};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tower::Service;

use super::body::CoalesceBody;
use super::layer::{Flight, Flights, Key, Receiver, Role, Sender};
use crate::body::{read_within, Read};
use crate::logical::{at_most, LogicalRequest};
use crate::ready::Held;
use crate::retry::AttemptTimedOut;
use crate::BoxError;

/// An answer shared by the callers of one flight: its head and its body.
pub(crate) struct Answer {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
    body: Bytes,
}

/// The status and the body's length: the body is a session document.
impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Answer {
    fn of(head: &http::response::Parts, body: Bytes) -> Self {
        Self {
            status: head.status,
            version: head.version,
            headers: head.headers.clone(),
            extensions: head.extensions.clone(),
            body,
        }
    }

    fn response<R>(&self) -> Response<CoalesceBody<R>> {
        let mut res = Response::new(CoalesceBody::read(self.body.clone()));
        *res.status_mut() = self.status;
        *res.version_mut() = self.version;
        *res.headers_mut() = self.headers.clone();
        *res.extensions_mut() = self.extensions.clone();
        res
    }
}

/// What a follower hears from its leader.
enum Heard {
    /// The answer, to share.
    Answer(Arc<Answer>),
    /// The answer cannot be shared (over the cap), or the leader's request
    /// failed: each follower sends its own.
    NotShared,
    /// The leader's caller gave up: the followers elect a new leader.
    LeaderGone,
}

/// A follower's wait for the leader's answer, `Err` at its deadline.
type Waiting = Pin<Box<dyn Future<Output = Result<Heard, ()>> + Send>>;

/// The flights a follower may join again, and the key it joins by.
pub(crate) type Rejoin = (Arc<Flights>, Arc<Key>);

pin_project! {
    /// The future of [`Coalesce`](super::Coalesce).
    pub struct ResponseFuture<S, B, R>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, S::Future, B, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, B, R> {
        // Not coalesced, or a follower sending its own.
        Through { #[pin] future: F },
        // The leader's request in flight.
        Leading { #[pin] future: F, flight: Option<Flight>, limit: usize },
        // The leader reading the body it shares.
        Sharing {
            head: Option<http::response::Parts>,
            #[pin]
            body: R,
            read: BytesMut,
            sender: Sender,
            limit: usize,
        },
        // A follower waiting for the leader's answer.
        Following {
            wait: Waiting,
            svc: Option<Held<S>>,
            req: Option<Request<B>>,
            rejoin: Rejoin,
            since: Instant,
            limit: usize,
        },
        // A follower that must send its own (as the new leader of its
        // flight, if it has one), waiting for the service.
        Alone { svc: Held<S>, req: Option<Request<B>>, flight: Option<Flight>, limit: usize },
        Done,
    }
}

type Finished<R> = Result<Response<CoalesceBody<R>>, BoxError>;

impl<S, B, R> ResponseFuture<S, B, R>
where
    S: Service<Request<B>>,
{
    pub(crate) fn through(future: S::Future) -> Self {
        Self {
            state: State::Through { future },
        }
    }

    pub(crate) fn leading(future: S::Future, flight: Flight, limit: usize) -> Self {
        Self {
            state: State::Leading {
                future,
                flight: Some(flight),
                limit,
            },
        }
    }

    /// A follower: waits for `answer` until its logical request's
    /// deadline, if it has one.
    pub(crate) fn following(
        svc: Held<S>,
        req: Request<B>,
        answer: Receiver,
        rejoin: Rejoin,
        limit: usize,
    ) -> Self {
        let since = Instant::now();
        Self {
            state: State::Following {
                wait: wait_for(answer, &req, since),
                svc: Some(svc),
                req: Some(req),
                rejoin,
                since,
                limit,
            },
        }
    }
}

/// Waits for what the leader says, until the deadline of `req`'s logical
/// request, if it has one.
fn wait_for<B>(mut answer: Receiver, req: &Request<B>, since: Instant) -> Waiting {
    let deadline = req
        .extensions()
        .get::<LogicalRequest>()
        .map_or_else(|| at_most(since, Duration::MAX), LogicalRequest::deadline);
    Box::pin(async move {
        match tokio::time::timeout_at(deadline, answer.recv()).await {
            Ok(Ok(Some(shared))) => Ok(Heard::Answer(shared)),
            Ok(Ok(None)) => Ok(Heard::NotShared),
            Ok(Err(broadcast::error::RecvError::Closed)) => Ok(Heard::LeaderGone),
            // One message is sent: never lagged; if it were, go alone.
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => Ok(Heard::NotShared),
            Err(_) => Err(()),
        }
    })
}

impl<S, B, R> fmt::Debug for ResponseFuture<S, B, R>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, R> Future for ResponseFuture<S, B, R>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: Into<BoxError>,
    R: Body<Data = Bytes>,
    R::Error: Into<BoxError>,
{
    type Output = Finished<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Through { future } => {
                    let res = ready!(future.poll(cx)).map_err(Into::into);
                    return finish(state, res.map(|res| res.map(CoalesceBody::inner)));
                }
                StateProj::Leading {
                    future,
                    flight,
                    limit,
                } => {
                    let res = ready!(future.poll(cx)).map_err(Into::into);
                    let flight = flight.take().expect("the flight lands once");
                    match res {
                        Ok(res) => match landed(flight, res, *limit) {
                            Ok(sharing) => sharing,
                            Err(alone) => return finish(state, Ok(alone)),
                        },
                        Err(e) => {
                            // The followers send their own.
                            not_shared(flight.land());
                            return finish(state, Err(e));
                        }
                    }
                }
                StateProj::Sharing {
                    head,
                    body,
                    read,
                    sender,
                    limit,
                } => {
                    let read = ready!(read_within(body, read, *limit, cx)).map(|r| match r {
                        Read::Whole(_) => Some(std::mem::take(read).freeze()),
                        Read::OverCap => None,
                    });
                    let head = head.take().expect("the head is shared once");
                    let res = match read {
                        Ok(Some(body)) => {
                            let answer = Arc::new(Answer::of(&head, body.clone()));
                            // No follower left is no error.
                            let _ = sender.send(Some(answer));
                            Ok(Response::from_parts(head, CoalesceBody::read(body)))
                        }
                        // The followers send their own.
                        Ok(None) => {
                            not_shared(Some(sender.clone()));
                            Err("the answer is longer than it announced".into())
                        }
                        Err(e) => {
                            not_shared(Some(sender.clone()));
                            Err(e)
                        }
                    };
                    return finish(state, res);
                }
                StateProj::Following {
                    wait,
                    svc,
                    req,
                    rejoin: (flights, key),
                    since,
                    limit,
                } => match ready!(wait.as_mut().poll(cx)) {
                    Ok(Heard::Answer(answer)) => {
                        flights.stats.coalesced();
                        return finish(state, Ok(answer.response()));
                    }
                    Ok(Heard::LeaderGone) => match flights.join(key) {
                        Role::Follower(answer) => {
                            // Another follower leads now: wait for it.
                            let req = req.as_ref().expect("the request goes once");
                            *wait = wait_for(answer, req, *since);
                            continue;
                        }
                        Role::Leader(flight) => {
                            flights.stats.alone();
                            State::Alone {
                                svc: svc.take().expect("the service goes once"),
                                req: req.take(),
                                flight: Some(flight),
                                limit: *limit,
                            }
                        }
                    },
                    Ok(Heard::NotShared) => {
                        flights.stats.alone();
                        State::Alone {
                            svc: svc.take().expect("the service goes once"),
                            req: req.take(),
                            flight: None,
                            limit: *limit,
                        }
                    }
                    Err(()) => {
                        let timed_out = AttemptTimedOut {
                            after: since.elapsed(),
                            attempts: 0,
                        };
                        return finish(state, Err(timed_out.into()));
                    }
                },
                StateProj::Alone {
                    svc,
                    req,
                    flight,
                    limit,
                } => {
                    if let Err(e) = ready!(svc.poll_ready(cx)) {
                        // Its followers, if any, send their own.
                        not_shared(flight.take().and_then(Flight::land));
                        return finish(state, Err(e.into()));
                    }
                    let future = svc.call(req.take().expect("the request goes once"));
                    match flight.take() {
                        Some(flight) => State::Leading {
                            future,
                            flight: Some(flight),
                            limit: *limit,
                        },
                        None => State::Through { future },
                    }
                }
                StateProj::Done => panic!("coalesce future polled after completion"),
            };
            state.set(next);
        }
    }
}

/// Ends the future with `result`.
fn finish<S, F, B, R>(
    mut state: Pin<&mut State<S, F, B, R>>,
    result: Finished<R>,
) -> Poll<Finished<R>> {
    state.set(State::Done);
    Poll::Ready(result)
}

/// Tells the followers, if any, that the answer cannot be shared: each
/// sends its own.
fn not_shared(sender: Option<Sender>) {
    if let Some(sender) = sender {
        // No follower left is no error.
        let _ = sender.send(None);
    }
}

/// The leader's answer has come: shared when others wait for it and its
/// body, announced, fits the cap (`Ok`, the next state); else the
/// leader's alone (`Err`), and the others send their own.
// Both results are moved once, into the future's state or out of it:
// boxing one would only add an allocation.
#[allow(clippy::result_large_err)]
fn landed<S, F, B, R>(
    flight: Flight,
    res: Response<R>,
    limit: usize,
) -> Result<State<S, F, B, R>, Response<CoalesceBody<R>>>
where
    R: Body,
{
    let Some(sender) = flight.land() else {
        return Err(res.map(CoalesceBody::inner));
    };
    let fits = res
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= limit as u64);
    if !fits || sender.receiver_count() == 0 {
        not_shared(Some(sender));
        return Err(res.map(CoalesceBody::inner));
    }
    let (head, body) = res.into_parts();
    Ok(State::Sharing {
        head: Some(head),
        body,
        read: BytesMut::new(),
        sender,
        limit,
    })
}
