use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;

use crate::BoxError;

pin_project! {
    /// The response body of [`Coalesce`](super::Coalesce): the inner
    /// service's body as it comes, or the bytes of an answer shared by
    /// several callers.
    ///
    /// Its [`Default`] is an empty body, whatever `B` is, so layers that
    /// answer on their own (tower-http's `TimeoutLayer`) can wrap a stack
    /// over a body without one, such as hyper's `Incoming`.
    pub struct CoalesceBody<B> {
        #[pin]
        inner: Either<B, Full<Bytes>>,
    }
}

impl<B> CoalesceBody<B> {
    /// The inner service's body, passed on.
    pub(crate) fn inner(body: B) -> Self {
        Self {
            inner: Either::Left(body),
        }
    }

    /// Bytes the layer read.
    pub(crate) fn read(bytes: Bytes) -> Self {
        Self {
            inner: Either::Right(Full::new(bytes)),
        }
    }
}

impl<B> Default for CoalesceBody<B> {
    fn default() -> Self {
        Self::read(Bytes::new())
    }
}

impl<B> fmt::Debug for CoalesceBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner {
            Either::Left(_) => "inner",
            Either::Right(_) => "read",
        };
        f.debug_struct("CoalesceBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl<B> Body for CoalesceBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn either_side_plays_through_and_the_default_is_empty() {
        let inner = CoalesceBody::inner(Full::new(Bytes::from("abc")));
        assert_eq!(inner.size_hint().exact(), Some(3));
        assert_eq!(inner.collect().await.unwrap().to_bytes(), "abc");
        let read = CoalesceBody::<Full<Bytes>>::read(Bytes::from("{}"));
        assert!(!read.is_end_stream());
        assert_eq!(read.collect().await.unwrap().to_bytes(), "{}");
        // No `Default` needed of the inner body.
        struct NoDefault;
        let empty = CoalesceBody::<NoDefault>::default();
        assert_eq!(format!("{empty:?}"), "CoalesceBody { kind: \"read\", .. }");
        let empty = CoalesceBody::<Full<Bytes>>::default();
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }
}
