//! The response body of [`Classify`](super::Classify): the inner service's
//! body as it comes, or a 429's body the layer read to learn its fields.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::body::{to_bytes, Buffered};
use crate::BoxError;

pin_project! {
    /// The response body of [`Classify`](super::Classify): the inner
    /// service's body, passed on, or, for a 429 whose small body the layer
    /// read (see [`ClassifyLayer`](super::ClassifyLayer)), those bytes
    /// played back, or the error that cut reading them short.
    ///
    /// Its [`Default`] is an empty body, whatever `B` is, so layers that
    /// answer on their own (tower-http's `TimeoutLayer`) can wrap a stack
    /// over a body without one, such as hyper's `Incoming`.
    pub struct ClassifyBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Read { read: Buffered },
        Failed { error: Option<BoxError> },
    }
}

impl<B> ClassifyBody<B> {
    /// The inner service's body, passed on.
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// A body the layer read whole.
    pub(crate) fn read(read: Buffered) -> Self {
        Self {
            kind: Kind::Read { read },
        }
    }

    /// A body whose reading failed: it ends with `error`.
    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            kind: Kind::Failed { error: Some(error) },
        }
    }
}

impl<B> Default for ClassifyBody<B> {
    fn default() -> Self {
        Self::read(Buffered::default())
    }
}

impl<B> fmt::Debug for ClassifyBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Read { .. } => "read",
            Kind::Failed { .. } => "failed",
        };
        f.debug_struct("ClassifyBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl<B> Body for ClassifyBody<B>
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
        match self.project().kind.project() {
            KindProj::Inner { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map(to_bytes).map_err(Into::into))),
            KindProj::Read { read } => Poll::Ready(read.next_frame().map(Ok)),
            KindProj::Failed { error } => Poll::Ready(error.take().map(Err)),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Read { read } => read.is_end_stream(),
            Kind::Failed { error } => error.is_none(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Read { read } => read.size_hint(),
            Kind::Failed { .. } => SizeHint::default(),
        }
    }
}
