//! The middleware: classifies each send's answer once and records it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use tokio::time::Instant;

use super::outcome::{classify, Call, Outcome};
use crate::logical::LogicalRequest;

/// The outcome of an answer to a send of `call`: the one a layer further
/// in put in its extensions (`false`: that layer recorded the attempt), or
/// else classified now and put there with the call (`true`: the caller
/// records it).
pub(crate) fn outcome_of<B>(res: &mut Response<B>, call: &Call) -> (Outcome, bool) {
    if let Some(outcome) = res.extensions().get::<Outcome>() {
        return (*outcome, false);
    }
    let outcome = classify(call, res.status(), res.headers());
    res.extensions_mut().insert(outcome);
    // The call goes along, so readers can tell what the body holds.
    res.extensions_mut().insert(call.clone());
    (outcome, true)
}

/// The call a send makes: one of its own (a re-read the rebase layer made),
/// else the logical request's, else parsed from the request itself.
pub(crate) fn call_of<B>(req: &Request<B>, logical: Option<&LogicalRequest>) -> Call {
    if let Some(call) = req.extensions().get::<Call>() {
        return call.clone();
    }
    match logical {
        Some(logical) => logical.call().clone(),
        None => Call::of(req),
    }
}

/// Adds [`Classify`] to a stack: each response gets its [`Outcome`] in its
/// extensions.
#[derive(Debug, Clone, Copy, Default)]
#[must_use]
pub struct ClassifyLayer(());

impl ClassifyLayer {
    /// A new layer.
    pub fn new() -> Self {
        Self(())
    }
}

impl<S> Layer<S> for ClassifyLayer {
    type Service = Classify<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Classify { inner }
    }
}

/// Classifies each response of the inner service; see [`ClassifyLayer`].
#[derive(Debug, Clone)]
pub struct Classify<S> {
    inner: S,
}

impl<S> Classify<S> {
    crate::macros::define_inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Classify<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let logical = req.extensions().get::<LogicalRequest>().cloned();
        let call = call_of(&req, logical.as_ref());
        // Only a logical request keeps a history to record the send in.
        let sent = logical.map(|logical| (logical, Instant::now()));
        ResponseFuture {
            inner: self.inner.call(req),
            call: Some(call),
            sent,
        }
    }
}

pin_project! {
    /// The response future of [`Classify`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
        sent: Option<(LogicalRequest, Instant)>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("call", &self.call)
            .finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let call = this.call.take().expect("polled after completion");
        let (outcome, new) = match result {
            Ok(mut res) => {
                let (outcome, new) = outcome_of(&mut res, &call);
                (Ok((res, outcome)), new)
            }
            // Any error here is the client's: this is below every layer
            // that refuses before sending.
            Err(e) => (Err(e), true),
        };
        if let (Some((logical, sent)), true) = (this.sent.take(), new) {
            let answered = outcome.as_ref().ok().map(|(_, outcome)| *outcome);
            logical.record(sent, answered, Instant::now());
        }
        Poll::Ready(outcome.map(|(res, _)| res))
    }
}
