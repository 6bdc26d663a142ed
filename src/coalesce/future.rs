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
use tokio::time::Instant;
use tower::Service;

use super::body::CoalesceBody;
use super::layer::{Flight, Flights, Receiver, Sender};
use crate::body::{read_within, Read};
use crate::logical::{at_most, LogicalRequest};
use crate::retry::AttemptTimedOut;
use crate::BoxError;

/// An answer shared by the callers of one flight: its head and its body.
#[derive(Debug)]
pub(crate) struct Answer {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
    body: Bytes,
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

/// A follower's wait for the leader's answer: `Some` shared answer,
/// `None` when it must send its own, `Err` at its deadline.
type Waiting = Pin<Box<dyn Future<Output = Result<Option<Arc<Answer>>, ()>> + Send>>;

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
            svc: Option<S>,
            req: Option<Request<B>>,
            flights: Arc<Flights>,
            since: Instant,
        },
        // A follower that must send its own, waiting for the service.
        Alone { svc: S, req: Option<Request<B>> },
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
        svc: S,
        req: Request<B>,
        mut answer: Receiver,
        flights: Arc<Flights>,
    ) -> Self {
        let since = Instant::now();
        let deadline = req
            .extensions()
            .get::<LogicalRequest>()
            .map_or_else(|| at_most(since, Duration::MAX), LogicalRequest::deadline);
        let wait = Box::pin(async move {
            match tokio::time::timeout_at(deadline, answer.recv()).await {
                Ok(Ok(shared)) => Ok(shared),
                // The leader gave up without an answer.
                Ok(Err(_)) => Ok(None),
                Err(_) => Err(()),
            }
        });
        Self {
            state: State::Following {
                wait,
                svc: Some(svc),
                req: Some(req),
                flights,
                since,
            },
        }
    }
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
                    // An error drops the flight: the followers send their own.
                    let flight = flight.take().expect("the flight lands once");
                    match res {
                        Ok(res) => match landed(flight, res, *limit) {
                            Ok(sharing) => sharing,
                            Err(alone) => return finish(state, Ok(alone)),
                        },
                        Err(e) => return finish(state, Err(e)),
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
                        // The followers send their own (dropping the
                        // sender tells them).
                        Ok(None) => Err("the answer is longer than it announced".into()),
                        Err(e) => Err(e),
                    };
                    return finish(state, res);
                }
                StateProj::Following {
                    wait,
                    svc,
                    req,
                    flights,
                    since,
                } => match ready!(wait.as_mut().poll(cx)) {
                    Ok(Some(answer)) => {
                        flights.stats.coalesced();
                        return finish(state, Ok(answer.response()));
                    }
                    Ok(None) => {
                        flights.stats.alone();
                        State::Alone {
                            svc: svc.take().expect("the service goes once"),
                            req: req.take(),
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
                StateProj::Alone { svc, req } => {
                    if let Err(e) = ready!(svc.poll_ready(cx)) {
                        return finish(state, Err(e.into()));
                    }
                    let req = req.take().expect("the request goes once");
                    State::Through {
                        future: svc.call(req),
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
