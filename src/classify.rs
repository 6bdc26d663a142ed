//! Middleware that classifies every MPSD response and records the
//! [`Outcome`] (and the [`Call`] it was classified for) in the response's
//! extensions, plus a classifier for
//! `tower_http::trace::TraceLayer`.
//!
//! Each answer is classified once. In [`MpsdLayer`](crate::MpsdLayer),
//! [`Classify`] is the innermost layer: it classifies every send's answer,
//! records the attempt in the logical request's history, and the layers
//! above read the [`Outcome`] from the response's extensions. A layer of
//! this crate used without it classifies an answer that has no outcome
//! yet itself, the same way.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_mpsd::{classify::ClassifyLayer, outcome::Outcome};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let mpsd = service_fn(|_req: Request<Full<Bytes>>| async {
//!     // A GET of a session that does not exist.
//!     let res = Response::builder().status(StatusCode::NO_CONTENT).body(Full::<Bytes>::default())?;
//!     Ok::<_, http::Error>(res)
//! });
//! let client = ServiceBuilder::new().layer(ClassifyLayer::new()).service(mpsd);
//!
//! let uri = "https://sessiondirectory.xboxlive.com/serviceconfigs/s/sessionTemplates/t/sessions/n";
//! let res = client.oneshot(Request::get(uri).body(Full::default())?).await?;
//! assert_eq!(res.extensions().get::<Outcome>(), Some(&Outcome::SessionMissing));
//! # Ok(())
//! # }
//! ```
//!
//! With `tower-http`'s tracing, MPSD failure classes show up in its events:
//!
//! ```
//! use tower_http::trace::TraceLayer;
//! use tower_mpsd::classify::MpsdClassifier;
//!
//! let trace = TraceLayer::new(MpsdClassifier::new());
//! # let _ = trace;
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_http::classify::{
    ClassifiedResponse, ClassifyResponse, MakeClassifier, NeverClassifyEos,
};

use tokio::time::Instant;

use crate::logical::LogicalRequest;
use crate::outcome::{classify, Call, Outcome};

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
fn call_of<B>(req: &Request<B>, logical: Option<&LogicalRequest>) -> Call {
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

/// A [`MakeClassifier`] for `tower-http`: responses whose [`Outcome`] is not
/// a success are failures of class [`MpsdFailure::Response`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MpsdClassifier(());

impl MpsdClassifier {
    /// A new classifier.
    pub fn new() -> Self {
        Self(())
    }
}

impl MakeClassifier for MpsdClassifier {
    type Classifier = ClassifyMpsd;
    type FailureClass = MpsdFailure;
    type ClassifyEos = NeverClassifyEos<MpsdFailure>;

    fn make_classifier<B>(&self, req: &Request<B>) -> Self::Classifier {
        ClassifyMpsd {
            call: Call::of(req),
        }
    }
}

/// The per-request [`ClassifyResponse`] made by [`MpsdClassifier`].
#[derive(Debug, Clone)]
pub struct ClassifyMpsd {
    call: Call,
}

impl ClassifyResponse for ClassifyMpsd {
    type FailureClass = MpsdFailure;
    type ClassifyEos = NeverClassifyEos<MpsdFailure>;

    fn classify_response<B>(
        self,
        res: &Response<B>,
    ) -> ClassifiedResponse<Self::FailureClass, Self::ClassifyEos> {
        let outcome = match res.extensions().get::<Outcome>() {
            Some(outcome) => *outcome,
            None => classify(&self.call, res.status(), res.headers()),
        };
        if outcome.is_success() {
            ClassifiedResponse::Ready(Ok(()))
        } else {
            ClassifiedResponse::Ready(Err(MpsdFailure::Response(outcome)))
        }
    }

    fn classify_error<E>(self, error: &E) -> Self::FailureClass
    where
        E: fmt::Display + 'static,
    {
        MpsdFailure::Error(error.to_string())
    }
}

/// Why `tower-http` counted a call as failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MpsdFailure {
    /// The service answered with an outcome that is not a success.
    Response(Outcome),
    /// The inner service failed (e.g. a connection error).
    Error(String),
}

impl fmt::Display for MpsdFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Response(outcome) => write!(f, "mpsd {outcome}"),
            Self::Error(error) => write!(f, "error: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header, StatusCode};

    #[test]
    fn trace_classifier_splits_on_content_type() {
        let req = Request::put("/serviceconfigs/s/sessionTemplates/t/sessions/n/members/me")
            .body(())
            .unwrap();
        let res = Response::builder()
            .status(StatusCode::FORBIDDEN)
            .header(header::CONTENT_TYPE, "application/json")
            .body(())
            .unwrap();
        let classifier = MpsdClassifier::new().make_classifier(&req);
        match classifier.classify_response(&res) {
            ClassifiedResponse::Ready(Err(class)) => {
                assert_eq!(class, MpsdFailure::Response(Outcome::ReadOnly));
                assert_eq!(class.to_string(), "mpsd 403 read_only");
            }
            _ => panic!("a 403 is a failure"),
        }
        let ok = Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(())
            .unwrap();
        let get = Request::get("/x").body(()).unwrap();
        assert!(matches!(
            MpsdClassifier::new()
                .make_classifier(&get)
                .classify_response(&ok),
            ClassifiedResponse::Ready(Ok(()))
        ));
    }
}
