use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{sleep_until, Instant, Sleep};
use tower::Service;

use super::table::PaceTable;
use crate::error::{Refused, RefusedBy};
use crate::ready::Held;
use crate::BoxError;

/// A reservation made in a shared store: `Ok(slot)` or `Err(slot)` as
/// [`PaceTable::reserve`] gives them.
pub(crate) type Reservation = Pin<Box<dyn Future<Output = Result<Instant, Instant>> + Send>>;

/// The key a response is learnt for, and the table that learns.
pub(crate) type Learn = Option<(PaceTable, String)>;

pin_project! {
    /// The future of [`Pace`](super::Pace): waits for the request's slot if
    /// it has to, holding no readiness meanwhile, then drives the inner
    /// service to readiness and calls it.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
        learn: Learn,
    }
}

pin_project! {
    #[project = StateProj]
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        // Only with a shared store: its answer decides the slot.
        Reserving {
            reservation: Reservation,
            attempts: usize,
            call: Option<(Held<S>, Request<ReqBody>)>,
        },
        Waiting {
            #[pin]
            sleep: Sleep,
            call: Option<(Held<S>, Request<ReqBody>)>,
        },
        // The slot has come: waiting for the service to be ready.
        Ready {
            call: Option<(Held<S>, Request<ReqBody>)>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
        Failed {
            error: Option<Refused>,
        },
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn calling(future: S::Future, learn: Learn) -> Self {
        Self {
            state: State::Calling { future },
            learn,
        }
    }

    pub(crate) fn waiting(
        slot: Instant,
        service: Held<S>,
        req: Request<ReqBody>,
        learn: Learn,
    ) -> Self {
        Self {
            state: State::Waiting {
                sleep: sleep_until(slot),
                call: Some((service, req)),
            },
            learn,
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn reserving(
        reservation: Reservation,
        attempts: usize,
        service: Held<S>,
        req: Request<ReqBody>,
        learn: Learn,
    ) -> Self {
        Self {
            state: State::Reserving {
                reservation,
                attempts,
                call: Some((service, req)),
            },
            learn,
        }
    }

    pub(crate) fn failed(error: Refused) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
            learn: None,
        }
    }
}

impl<S, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Reserving { .. } => "reserving",
            State::Waiting { .. } => "waiting",
            State::Ready { .. } => "ready",
            State::Calling { .. } => "calling",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    if let (Ok(res), Some((table, key))) = (&result, this.learn.take()) {
                        table.learn(&key, res);
                    }
                    return Poll::Ready(result.map_err(Into::into));
                }
                StateProj::Failed { error } => {
                    let error = error.take().expect("polled after completion");
                    return Poll::Ready(Err(error.into()));
                }
                StateProj::Reserving {
                    reservation,
                    attempts,
                    call,
                } => {
                    let reserved = ready!(reservation.as_mut().poll(cx));
                    let call = call.take();
                    let now = Instant::now();
                    match reserved {
                        Ok(slot) if slot <= now => State::Ready { call },
                        Ok(slot) => {
                            crate::metrics::pace_wait();
                            State::Waiting {
                                sleep: sleep_until(slot),
                                call,
                            }
                        }
                        Err(slot) => State::Failed {
                            error: Some(Refused::new(RefusedBy::Pace, slot - now, *attempts)),
                        },
                    }
                }
                StateProj::Waiting { sleep, call } => {
                    ready!(sleep.poll(cx));
                    State::Ready { call: call.take() }
                }
                StateProj::Ready { call } => {
                    let (service, _) = call.as_mut().expect("polled after completion");
                    if let Err(e) = ready!(service.poll_ready::<Request<ReqBody>>(cx)) {
                        return Poll::Ready(Err(e.into()));
                    }
                    let (mut service, req) = call.take().expect("checked above");
                    State::Calling {
                        future: service.call(req),
                    }
                }
            };
            this.state.set(next);
        }
    }
}
