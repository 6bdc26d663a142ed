//! The middleware: classifies each send's answer once and records it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::response::Parts;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use tokio::time::Instant;

use super::body::ClassifyBody;
use super::outcome::{classify_lazily, Call, Classified, LazyCall, Outcome};
use crate::body::{read_within, Held, Read};
use crate::logical::LogicalRequest;
use crate::response::content_length;
use crate::BoxError;

/// The largest 429 body [`Classify`] reads for its rate-limit fields, by
/// its `Content-Length`: 4 KiB, many times MPSD's (about 150 bytes), and
/// small enough to hold for every throttled answer at once.
pub const THROTTLED_BODY_CAP: usize = 4 * 1024;

/// The outcome of an answer to a send of `call`: the one a layer further
/// in put in its extensions (`false`), or else classified now and put
/// there with the call, so readers can tell what the body holds (`true`).
/// `call` is asked for only then, and its path parsed only if the
/// outcome depends on it.
pub(crate) fn outcome_of<B>(
    res: &mut Response<B>,
    call: impl FnOnce() -> LazyCall,
) -> (Outcome, bool) {
    if let Some(outcome) = Outcome::of(res) {
        return (outcome, false);
    }
    let call = call();
    let outcome = classify_lazily(&call, res.status(), res.headers());
    res.extensions_mut()
        .insert(Classified::lazily(outcome, call));
    (outcome, true)
}

/// The call a send makes: one of its own (a re-read the rebase layer made),
/// else the logical request's, else the request's own, each parsed only
/// when asked.
fn call_of<B>(req: &Request<B>, logical: Option<&LogicalRequest>) -> LazyCall {
    if let Some(call) = req.extensions().get::<Call>() {
        return LazyCall::known(call.clone());
    }
    match logical {
        Some(logical) => logical.context().lazy_call().clone(),
        None => LazyCall::of(req),
    }
}

/// Adds [`Classify`] to a stack: each response gets its [`Outcome`], with
/// the [`Call`] it answers, in its extensions ([`Classified`]; read it with
/// [`Outcome::of`]).
///
/// A 429 whose `Content-Length` announces a body of at most
/// [`THROTTLED_BODY_CAP`] bytes has that body read before the response is
/// handed on, so that its outcome carries the body's rate-limit fields
/// ([`Outcome::with_body`]) for the layers above (pacing learns from them)
/// and the caller; the bytes are played back in the [`ClassifyBody`]. A
/// 429 with a larger or unannounced body is handed on unread, without the
/// fields. A body that fails (or runs past its `Content-Length`) while
/// being read leaves the outcome without them and ends with that error.
/// Every other answer's body is passed on as it comes.
///
/// Why here and not in the pace layer, which is what learns from it: this
/// is where each answer is classified once, so the fields reach every
/// layer above, the attempt history and the caller, with pacing or
/// without; the price is the response body type, [`ClassifyBody`]. Only an
/// announced length is read, since an unannounced one could be of any
/// size; a body that stalls holds the answer as a stalled head would, so
/// the same deadline bounds it (the retry layer's, in
/// [`MpsdLayer`](crate::MpsdLayer)).
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
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ClassifyBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let logical = req.extensions().get::<LogicalRequest>().cloned();
        let call = call_of(&req, logical.as_ref());
        // Only a logical request keeps a history to record the send in.
        let sent = logical.map(|logical| {
            let now = logical.context().now();
            (logical, now)
        });
        ResponseFuture {
            state: State::Calling {
                inner: self.inner.call(req),
            },
            call: Some(call),
            sent,
        }
    }
}

pin_project! {
    /// The response future of [`Classify`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
        call: Option<LazyCall>,
        sent: Option<(LogicalRequest, Instant)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Calling {
            #[pin]
            inner: F,
        },
        // A 429's small body, read for its rate-limit fields: boxed, so
        // that every other answer's future is the smaller for it.
        Reading { reading: Pin<Box<Reading<B>>> },
    }
}

pin_project! {
    struct Reading<B> {
        head: Option<Parts>,
        #[pin]
        body: B,
        read: BytesMut,
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Calling { .. } => "calling",
            State::Reading { .. } => "reading",
        };
        f.debug_struct("ResponseFuture")
            .field("call", &self.call)
            .field("state", &state)
            .finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ClassifyBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { inner } => {
                    let result = ready!(inner.poll(cx));
                    let call = this.call.take().expect("polled after completion");
                    let mut res = match result {
                        Ok(res) => res,
                        // Any error here is the client's: this is below
                        // every layer that refuses before sending.
                        Err(e) => {
                            if let Some((logical, sent)) = this.sent.take() {
                                logical.context().record_answer(sent, None);
                            }
                            return Poll::Ready(Err(e));
                        }
                    };
                    let (outcome, new) = outcome_of(&mut res, || call);
                    if !(new && reads_body(&outcome, res.headers())) {
                        if new {
                            record(this.sent, outcome);
                        }
                        return Poll::Ready(Ok(res.map(ClassifyBody::inner)));
                    }
                    let (head, body) = res.into_parts();
                    let reading = Box::pin(Reading {
                        head: Some(head),
                        body,
                        read: BytesMut::new(),
                    });
                    this.state.set(State::Reading { reading });
                }
                StateProj::Reading { reading } => {
                    let reading = reading.as_mut().project();
                    let (head, body, read) = (reading.head, reading.body, reading.read);
                    let read_whole = ready!(read_within(body, read, THROTTLED_BODY_CAP, cx));
                    let mut head = head.take().expect("polled after completion");
                    let body = learn_body(&mut head, read_whole, read.split().freeze());
                    let classified = head.extensions.get::<Classified>();
                    record(this.sent, classified.expect("classified above").outcome);
                    return Poll::Ready(Ok(Response::from_parts(head, body)));
                }
            }
        }
    }
}

/// Records the answer this layer classified in the logical request's
/// history, if there is one to record it in.
fn record(sent: &mut Option<(LogicalRequest, Instant)>, outcome: Outcome) {
    if let Some((logical, sent)) = sent.take() {
        logical.context().record_answer(sent, Some(outcome));
    }
}

/// Whether to read a response's body before handing it on: a 429's, for
/// its rate-limit fields, when its `Content-Length` says it is small.
fn reads_body(outcome: &Outcome, headers: &HeaderMap) -> bool {
    matches!(outcome, Outcome::TooManyRequests { .. })
        && content_length(headers).is_some_and(|len| len > 0 && len <= THROTTLED_BODY_CAP as u64)
}

/// Puts what a 429's body says in the response's [`Outcome`], and gives
/// the body to hand on: the bytes read, or the error that stopped reading
/// them (with the outcome left as the head said).
fn learn_body<B>(head: &mut Parts, read: Result<Read, BoxError>, bytes: Bytes) -> ClassifyBody<B> {
    match read {
        Ok(Read::Whole(trailers)) => {
            if let Some(classified) = head.extensions.get_mut::<Classified>() {
                classified.outcome = classified.outcome.with_body(&bytes);
                classified.body_read = true;
            }
            ClassifyBody::held(Held::whole(bytes, trailers))
        }
        Ok(Read::OverCap) => {
            let error = "the body is longer than its Content-Length announced".into();
            ClassifyBody::held(Held::failed(Bytes::new(), error))
        }
        Err(e) => ClassifyBody::held(Held::failed(Bytes::new(), e)),
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{header, Request, Response, StatusCode};
    use http_body::Frame;
    use http_body_util::{BodyExt, Full, StreamBody};
    use tower::{service_fn, Layer, ServiceExt};

    use super::ClassifyLayer;
    use crate::classify::{Classified, Outcome};
    use crate::rules::rate_limit::RateLimitInfo;

    const FULL_WINDOW: &[u8] = br#"{"currentRequests":31,"maxRequests":30,"periodInSeconds":15}"#;

    fn get() -> Request<()> {
        Request::get("http://mpsd.test/handles/h1")
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn a_small_429_body_is_read_into_the_outcome_and_played_back() {
        let svc = ClassifyLayer::new().layer(service_fn(|_req| async {
            let res = Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header(header::CONTENT_LENGTH, FULL_WINDOW.len())
                .body(Full::new(Bytes::from_static(FULL_WINDOW)))
                .unwrap();
            Ok::<_, Infallible>(res)
        }));
        let res = svc.oneshot(get()).await.unwrap();
        let expected = Outcome::TooManyRequests {
            retry_after: None,
            rate_limit: RateLimitInfo::parse(FULL_WINDOW),
        };
        let classified = res.extensions().get::<Classified>().unwrap();
        assert_eq!(classified.outcome, expected);
        assert!(classified.body_read);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, FULL_WINDOW);
    }

    /// Without a `Content-Length` the body could be any size: it is passed
    /// on unread, and the outcome has no fields.
    #[tokio::test]
    async fn a_429_body_of_unannounced_length_is_passed_on_unread() {
        let svc = ClassifyLayer::new().layer(service_fn(|_req| async {
            let frames = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(
                Bytes::from_static(FULL_WINDOW),
            ))]);
            let mut res = Response::new(StreamBody::new(frames));
            *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            Ok::<_, Infallible>(res)
        }));
        let res = svc.oneshot(get()).await.unwrap();
        let unread = Outcome::TooManyRequests {
            retry_after: None,
            rate_limit: None,
        };
        let classified = res.extensions().get::<Classified>().unwrap();
        assert_eq!(classified.outcome, unread);
        assert!(!classified.body_read);
        assert_eq!(
            format!("{:?}", res.body()),
            "ClassifyBody { kind: \"inner\", .. }"
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, FULL_WINDOW);
    }
}
