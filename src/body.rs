//! Request and response bodies the layers hold: reading one up to a cap,
//! playing back what was read, and [`Held`], the one response body behind
//! every layer's public body type.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;

pin_project! {
    /// A response body as a layer hands it on: the inner service's body as
    /// it comes, or what the layer read of it. Nothing read is lost: a body
    /// read in part plays the part, then the rest; one whose reading failed
    /// plays the part, then the error. Each layer's public body type
    /// (`ClassifyBody`, `RebaseBody`, ...) wraps one, named by
    /// [`held_body!`](crate::macros::held_body).
    #[project = HeldProj]
    pub(crate) enum Held<B> {
        Inner {
            #[pin]
            body: B,
        },
        Whole {
            whole: Buffered,
        },
        Partial {
            prefix: Option<Bytes>,
            rest: Pin<Box<B>>,
        },
        Failed {
            prefix: Option<Bytes>,
            error: Option<BoxError>,
        },
    }
}

impl<B> Held<B> {
    /// The inner service's body, passed on.
    pub(crate) fn inner(body: B) -> Self {
        Self::Inner { body }
    }

    /// A body read whole: its bytes, then its trailers.
    pub(crate) fn whole(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self::Whole {
            whole: Buffered::new(data, trailers),
        }
    }

    /// A body read up to a cap: `prefix`, then the `rest` as it comes.
    pub(crate) fn partial(prefix: Bytes, rest: Pin<Box<B>>) -> Self {
        Self::Partial {
            prefix: Some(prefix).filter(|d| !d.is_empty()),
            rest,
        }
    }

    /// A body whose reading failed: `prefix`, then `error`.
    pub(crate) fn failed(prefix: Bytes, error: BoxError) -> Self {
        Self::Failed {
            prefix: Some(prefix).filter(|d| !d.is_empty()),
            error: Some(error),
        }
    }

    /// Which of the four it is, for `Debug`; `whole` names a body read whole.
    pub(crate) fn kind(&self, whole: &'static str) -> &'static str {
        match self {
            Self::Inner { .. } => "inner",
            Self::Whole { .. } => whole,
            Self::Partial { .. } => "partial",
            Self::Failed { .. } => "failed",
        }
    }
}

/// An empty body, whatever `B` is, so layers that answer on their own
/// (tower-http's `TimeoutLayer`) can wrap a stack over a body without a
/// `Default`, such as hyper's `Incoming`.
impl<B> Default for Held<B> {
    fn default() -> Self {
        Self::whole(Bytes::new(), None)
    }
}

impl<B> Body for Held<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            HeldProj::Inner { body } => {
                let frame = ready!(body.poll_frame(cx));
                Poll::Ready(frame.map(|f| f.map(to_bytes).map_err(Into::into)))
            }
            HeldProj::Whole { whole } => Poll::Ready(whole.next_frame().map(Ok)),
            HeldProj::Partial { prefix, rest } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                let frame = ready!(rest.as_mut().poll_frame(cx));
                Poll::Ready(frame.map(|f| f.map(to_bytes).map_err(Into::into)))
            }
            HeldProj::Failed { prefix, error } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                Poll::Ready(error.take().map(Err))
            }
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match self {
            Self::Inner { body } => body.is_end_stream(),
            Self::Whole { whole } => whole.is_end_stream(),
            Self::Partial { .. } => false,
            Self::Failed { prefix, error } => prefix.is_none() && error.is_none(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Inner { body } => body.size_hint(),
            Self::Whole { whole } => whole.size_hint(),
            Self::Partial { prefix, rest } => hint_after(prefix.as_ref(), rest.size_hint()),
            Self::Failed { .. } => SizeHint::default(),
        }
    }
}

/// What reading a body up to a cap found.
pub(crate) enum Read {
    /// The whole body is in the buffer, with its trailers if any.
    Whole(Option<HeaderMap>),
    /// The body is longer than the cap; what was read is in the buffer.
    OverCap,
}

/// Reads frames into `read` until the body ends or passes `limit`.
pub(crate) fn read_within<B>(
    mut body: Pin<&mut B>,
    read: &mut BytesMut,
    limit: usize,
    cx: &mut Context<'_>,
) -> Poll<Result<Read, BoxError>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit as u64 {
        return Poll::Ready(Ok(Read::OverCap));
    }
    loop {
        if read.len() > limit {
            return Poll::Ready(Ok(Read::OverCap));
        }
        let Some(frame) = ready!(body.as_mut().poll_frame(cx)) else {
            return Poll::Ready(Ok(Read::Whole(None)));
        };
        match frame.map_err(Into::into)?.into_data() {
            Ok(mut data) => {
                while data.has_remaining() {
                    let chunk = data.chunk();
                    read.extend_from_slice(chunk);
                    let n = chunk.len();
                    data.advance(n);
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return Poll::Ready(Ok(Read::Whole(Some(trailers))));
                }
            }
        }
    }
}

/// A body read whole: its bytes, then its trailers, each sent once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Buffered {
    data: Option<Bytes>,
    /// Boxed: bodies rarely have trailers, and every response moved from
    /// layer to layer carries a body of this size.
    trailers: Option<Box<HeaderMap>>,
}

impl Buffered {
    pub(crate) fn new(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            data: Some(data).filter(|d| !d.is_empty()),
            trailers: trailers.map(Box::new),
        }
    }

    /// The next frame, or `None` at the end.
    pub(crate) fn next_frame(&mut self) -> Option<Frame<Bytes>> {
        match self.data.take() {
            Some(data) => Some(Frame::data(data)),
            None => self
                .trailers
                .take()
                .map(|trailers| Frame::trailers(*trailers)),
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// A frame of any body as a frame of `Bytes`.
pub(crate) fn to_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
}

/// The size of a body that plays `prefix` (what was read) before `rest`.
pub(crate) fn hint_after(prefix: Option<&Bytes>, rest: SizeHint) -> SizeHint {
    let read = prefix.map_or(0, |p| p.len() as u64);
    let mut hint = SizeHint::new();
    hint.set_lower(rest.lower().saturating_add(read));
    if let Some(upper) = rest.upper() {
        hint.set_upper(upper.saturating_add(read));
    }
    hint
}
