use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Request;
use pin_project_lite::pin_project;
use tokio::time::{sleep_until, Instant, Sleep};
use tower::Service;

use crate::error::Refused;
use crate::BoxError;

pin_project! {
    /// The future of [`Pace`](super::Pace): waits for the request's slot if
    /// it has to, then calls the inner service.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Waiting {
            #[pin]
            sleep: Sleep,
            call: Option<(S, Request<ReqBody>)>,
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
    pub(crate) fn calling(future: S::Future) -> Self {
        Self {
            state: State::Calling { future },
        }
    }

    pub(crate) fn waiting(slot: Instant, service: S, req: Request<ReqBody>) -> Self {
        Self {
            state: State::Waiting {
                sleep: sleep_until(slot),
                call: Some((service, req)),
            },
        }
    }

    pub(crate) fn failed(error: Refused) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<S, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Waiting { .. } => "waiting",
            State::Calling { .. } => "calling",
            State::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, ReqBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Calling { future } => return future.poll(cx).map_err(Into::into),
                StateProj::Failed { error } => {
                    let error = error.take().expect("polled after completion");
                    return Poll::Ready(Err(error.into()));
                }
                StateProj::Waiting { sleep, call } => {
                    ready!(sleep.poll(cx));
                    let (mut service, req) = call.take().expect("polled after completion");
                    State::Calling {
                        future: service.call(req),
                    }
                }
            };
            this.state.set(next);
        }
    }
}
