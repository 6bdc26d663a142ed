//! Makes any request body replayable, up to a byte cap, so the retry and
//! rebase layers can send it again.
//!
//! [`ReplayLayer`] reads the body before the request goes on. A body within
//! the cap becomes a [`ReplayBody`] holding the bytes, cloned for free by
//! every retry. A larger body is not dropped and not cut: the request goes
//! on once, streaming what was read followed by the rest, and carries
//! [`NotReplayable`] in its extensions, which tells the layers inside not to
//! send it again (they hand back the first answer, with
//! [`GaveUp::NotReplayable`](crate::logical::GaveUp::NotReplayable) in its
//! history). A clone of such a body that is polled after the original was
//! sent yields [`AlreadySent`] instead of sending a truncated body.
//!
//! Bodies that are already `Clone` and cheap to clone (such as
//! `http_body_util::Full<Bytes>`) need no `ReplayLayer`.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full, StreamBody};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_mpsd::replay::{ReplayBody, ReplayLayer};
//! use tower_mpsd::retry::RetryLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_mpsd::BoxError> {
//! let mpsd = service_fn(|req: Request<ReplayBody<_>>| async move {
//!     let body = req.into_body().collect().await?.to_bytes();
//!     Ok::<_, tower_mpsd::BoxError>(Response::new(body))
//! });
//! let client = ServiceBuilder::new()
//!     .layer(ReplayLayer::new(64 * 1024))
//!     .layer(RetryLayer::new())
//!     .service(mpsd);
//! // A streamed body, which is not `Clone`.
//! let chunks = futures_util::stream::iter([
//!     Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from("{\"a\":"))),
//!     Ok(http_body::Frame::data(Bytes::from("1}"))),
//! ]);
//! let req = Request::put("http://mpsd.test/x").body(StreamBody::new(chunks))?;
//! let res = client.oneshot(req).await?;
//! assert_eq!(res.into_body(), "{\"a\":1}");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::body::{hint_after, read_within, to_bytes, Buffered, Read};
use crate::ready::{self, Held};
use crate::BoxError;

/// Buffers request bodies up to `limit` bytes so they can be replayed.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct ReplayLayer {
    limit: usize,
}

impl ReplayLayer {
    /// Buffers bodies of at most `limit` bytes; larger ones are sent once.
    /// 64 KiB holds any MPSD session write with room to spare: writes are
    /// deltas of a session document.
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl Default for ReplayLayer {
    fn default() -> Self {
        Self::new(64 * 1024)
    }
}

impl<S> Layer<S> for ReplayLayer {
    type Service = Replay<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Replay {
            inner,
            limit: self.limit,
        }
    }
}

/// Buffers request bodies; see [`ReplayLayer`].
#[derive(Debug, Clone)]
pub struct Replay<S> {
    inner: S,
    limit: usize,
}

impl<S> Replay<S> {
    crate::macros::define_inner_service_accessors!();
}

/// In the extensions of a request whose body was over the cap: it may be
/// sent once only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotReplayable {
    /// The cap the body exceeded.
    pub limit: usize,
}

/// A clone of a body over the cap was polled after the body was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadySent(());

impl fmt::Display for AlreadySent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body over the replay cap was already sent")
    }
}

impl std::error::Error for AlreadySent {}

impl<S, B> Service<Request<B>> for Replay<S>
where
    S: Service<Request<ReplayBody<B>>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // A body read at once is sent with the ready service; one that
        // keeps the request waiting lets that readiness go meanwhile.
        let inner = ready::take(&mut self.inner);
        let (parts, body) = req.into_parts();
        ResponseFuture {
            state: State::Reading {
                body: Some(Box::pin(body)),
                head: Some((parts, inner)),
                read: BytesMut::new(),
                limit: self.limit,
            },
        }
    }
}

pin_project! {
    /// The future of [`Replay`]: reads the body, then calls the inner
    /// service. A body that keeps it waiting lets the readiness the caller
    /// drove go meanwhile; the service is driven ready again once it is read.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        Reading {
            // Boxed so that, over the cap, it moves into the body sent once.
            body: Option<Pin<Box<B>>>,
            head: Option<(http::request::Parts, Held<S>)>,
            read: BytesMut,
            limit: usize,
        },
        // The body read: waiting for the service to be ready.
        Ready { req: Option<Request<ReplayBody<B>>>, inner: Held<S> },
        Calling {
            #[pin]
            future: S::Future,
        },
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Calling { future } => return future.poll(cx).map_err(Into::into),
                StateProj::Reading {
                    body,
                    head,
                    read,
                    limit,
                } => {
                    let rest = body.as_mut().expect("polled after completion");
                    let read_so_far = match read_within(rest.as_mut(), read, *limit, cx) {
                        Poll::Ready(read_so_far) => read_so_far?,
                        Poll::Pending => {
                            if let Some((_, inner)) = head {
                                inner.release();
                            }
                            return Poll::Pending;
                        }
                    };
                    let (mut parts, inner) = head.take().expect("polled after completion");
                    let prefix = std::mem::take(read).freeze();
                    let body = match read_so_far {
                        Read::Whole(trailers) => ReplayBody::whole(prefix, trailers),
                        Read::OverCap => {
                            // Sent once: what was read, then the rest.
                            parts.extensions.insert(NotReplayable { limit: *limit });
                            ReplayBody::once(prefix, body.take().expect("checked above"))
                        }
                    };
                    State::Ready {
                        req: Some(Request::from_parts(parts, body)),
                        inner,
                    }
                }
                StateProj::Ready { req, inner } => {
                    ready!(inner.poll_ready(cx)).map_err(Into::into)?;
                    let future = inner.call(req.take().expect("polled after completion"));
                    State::Calling { future }
                }
            };
            this.state.set(next);
        }
    }
}

/// A request body that can be replayed: the bytes of a body within the
/// cap, or, for a larger one, a body that is sent once.
pub struct ReplayBody<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    Whole(Buffered),
    Once {
        prefix: Option<Bytes>,
        shared: Arc<Mutex<Option<Pin<Box<B>>>>>,
        taken: Option<Pin<Box<B>>>,
    },
}

impl<B> ReplayBody<B> {
    fn whole(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: Kind::Whole(Buffered::new(data, trailers)),
        }
    }

    fn once(prefix: Bytes, rest: Pin<Box<B>>) -> Self {
        Self {
            kind: Kind::Once {
                prefix: Some(prefix).filter(|d| !d.is_empty()),
                shared: Arc::new(Mutex::new(Some(rest))),
                taken: None,
            },
        }
    }
}

impl<B> From<Bytes> for ReplayBody<B> {
    fn from(data: Bytes) -> Self {
        Self::whole(data, None)
    }
}

impl<B> Default for ReplayBody<B> {
    fn default() -> Self {
        Self::whole(Bytes::new(), None)
    }
}

impl<B> Clone for ReplayBody<B> {
    fn clone(&self) -> Self {
        let kind = match &self.kind {
            Kind::Whole(whole) => Kind::Whole(whole.clone()),
            Kind::Once { prefix, shared, .. } => Kind::Once {
                prefix: prefix.clone(),
                shared: shared.clone(),
                taken: None,
            },
        };
        Self { kind }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Whole(_) => "whole",
            Kind::Once { .. } => "once",
        };
        f.debug_struct("ReplayBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Whole(whole) => Poll::Ready(whole.next_frame().map(Ok)),
            Kind::Once {
                prefix,
                shared,
                taken,
            } => {
                if taken.is_none() {
                    let rest = shared.lock().unwrap_or_else(|e| e.into_inner()).take();
                    let Some(rest) = rest else {
                        return Poll::Ready(Some(Err(AlreadySent(()).into())));
                    };
                    *taken = Some(rest);
                }
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                let rest = taken.as_mut().expect("taken above");
                let frame = ready!(rest.as_mut().poll_frame(cx));
                Poll::Ready(frame.map(|f| f.map(to_bytes).map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Whole(whole) => whole.is_end_stream(),
            Kind::Once { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Whole(whole) => whole.size_hint(),
            Kind::Once {
                prefix,
                shared,
                taken,
            } => {
                // What was read, and what the rest says of itself, so that a
                // known length is still sent as one.
                let rest = match taken {
                    Some(rest) => rest.size_hint(),
                    None => match &*shared.lock().unwrap_or_else(|e| e.into_inner()) {
                        Some(rest) => rest.size_hint(),
                        None => return SizeHint::default(),
                    },
                };
                hint_after(prefix.as_ref(), rest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use http::{Response, StatusCode};
    use http_body_util::{BodyExt, StreamBody};
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    use super::*;
    use crate::logical::{AttemptHistory, GaveUp};
    use crate::retry::RetryLayer;

    type Chunks = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
    >;

    fn streamed(parts: &[&'static str]) -> Chunks {
        let frames: Vec<_> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    /// A server that refuses the first send with 503 and records every body.
    async fn overloaded_once(limit: usize, body: Chunks) -> (Response<()>, Vec<Bytes>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let server = service_fn(move |req: Request<ReplayBody<Chunks>>| {
            let log = log.clone();
            async move {
                let body = req.into_body().collect().await?.to_bytes();
                let mut seen = log.lock().unwrap();
                seen.push(body);
                let status = if seen.len() == 1 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                };
                let res = Response::builder()
                    .status(status)
                    .header("retry-after", "1");
                Ok::<_, BoxError>(res.body(()).unwrap())
            }
        });
        let client = ServiceBuilder::new()
            .layer(ReplayLayer::new(limit))
            .layer(RetryLayer::new())
            .service(server);
        let req = Request::put("http://mpsd.test/s").body(body).unwrap();
        let res = client.oneshot(req).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        (res, seen)
    }

    #[tokio::test(start_paused = true)]
    async fn a_streamed_body_within_the_cap_is_replayed_whole() {
        let (res, seen) = overloaded_once(8, streamed(&["{\"a\"", ":1}"])).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(seen, ["{\"a\":1}", "{\"a\":1}"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_over_the_cap_is_sent_once_whole_and_the_503_handed_back() {
        let (res, seen) = overloaded_once(4, streamed(&["{\"a\"", ":1", "}"])).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(seen, ["{\"a\":1}"], "nothing lost, nothing sent twice");
        let history = AttemptHistory::of(&res).unwrap();
        assert_eq!(history.gave_up, Some(GaveUp::NotReplayable));
    }

    #[tokio::test]
    async fn a_clone_of_a_sent_once_body_refuses_to_send_a_part() {
        let body = ReplayBody::once(Bytes::from_static(b"ab"), Box::pin(streamed(&["cd"])));
        let copy = body.clone();
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcd");
        let err = copy.collect().await.unwrap_err();
        assert!(err.is::<AlreadySent>(), "{err}");
    }

    #[tokio::test]
    async fn trailers_within_the_cap_are_kept() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-end", "1".parse().unwrap());
        let body = ReplayBody::<Chunks>::whole(Bytes::from_static(b"x"), Some(trailers.clone()));
        let collected = body.clone().collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(body.size_hint().exact(), Some(1));
    }
}

/// No readiness held across a slow body.
#[cfg(test)]
mod readiness {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::{stream, Stream, StreamExt};
    use http::Request;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use tokio::time::Instant;
    use tower::limit::ConcurrencyLimitLayer;
    use tower::{ServiceBuilder, ServiceExt};

    use super::{ReplayBody, ReplayLayer};
    use crate::ready::test_support::{at, upstream, when};

    type Chunks = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;

    /// A PUT by `user` whose body arrives `after` from now.
    fn put(user: &str, after: Duration) -> Request<StreamBody<Chunks>> {
        let chunk = stream::once(async move {
            tokio::time::sleep(after).await;
            Ok(Frame::data(Bytes::from_static(b"{}")))
        });
        Request::put("http://mpsd.test/serviceconfigs/c/sessionTemplates/t/sessions/s")
            .header("authorization", format!("XBL3.0 x={user};token"))
            .body(StreamBody::new(chunk.boxed()))
            .unwrap()
    }

    /// u's body takes 5 s to come; v's request, sent meanwhile through the
    /// one permit of a `ConcurrencyLimit` below, goes at once.
    #[tokio::test(start_paused = true)]
    async fn a_request_with_a_slow_body_holds_no_readiness_below() {
        let t0 = Instant::now();
        let (svc, log) = upstream::<ReplayBody<StreamBody<Chunks>>>(t0);
        let client = ServiceBuilder::new()
            .layer(ReplayLayer::default())
            .layer(ConcurrencyLimitLayer::new(1))
            .service(svc);
        let slow = tokio::spawn(client.clone().oneshot(put("u", Duration::from_secs(5))));
        tokio::time::sleep(Duration::from_secs(1)).await;
        client
            .clone()
            .oneshot(put("v", Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(1), "v waited");
        slow.await.unwrap().unwrap();
        assert_eq!(when(&log), at(&[(1, "v"), (5, "u")]));
    }
}
