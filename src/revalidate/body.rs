use std::pin::Pin;

use bytes::Bytes;
use http::HeaderMap;

use crate::body::Held;
use crate::BoxError;

crate::macros::held_body! {
    /// The response body of [`Revalidate`](super::Revalidate): the inner
    /// service's body as it comes, or bytes the layer holds (a cached body
    /// served for a 304, or a body it read to cache it). Nothing is lost or
    /// cut: a body over the cap streams what was read, then the rest.
    RevalidateBody, whole: "whole"
}

impl<B> RevalidateBody<B> {
    /// A body read whole, or served from the cache.
    pub(crate) fn whole(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self::held(Held::whole(data, trailers))
    }

    /// A body over the cap: what was read, then the rest.
    pub(crate) fn partial(prefix: Bytes, rest: Pin<Box<B>>) -> Self {
        Self::held(Held::partial(prefix, rest))
    }

    /// A body whose reading failed: what was read, then the error.
    pub(crate) fn failed(prefix: Bytes, error: BoxError) -> Self {
        Self::held(Held::failed(prefix, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{read_within, Read};
    use bytes::BytesMut;
    use http_body::{Body, Frame};
    use http_body_util::{BodyExt, Full, StreamBody};

    fn chunks(
        parts: Vec<Result<&'static str, &'static str>>,
    ) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>>> {
        StreamBody::new(futures_util::stream::iter(parts.into_iter().map(|p| {
            p.map(|s| Frame::data(Bytes::from_static(s.as_bytes())))
                .map_err(BoxError::from)
        })))
    }

    async fn read<B>(body: B, limit: usize) -> (Result<bool, String>, Bytes, Pin<Box<B>>)
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let mut body = Box::pin(body);
        let mut buf = BytesMut::new();
        let r = std::future::poll_fn(|cx| read_within(body.as_mut(), &mut buf, limit, cx)).await;
        let r = r
            .map(|r| matches!(r, Read::Whole(_)))
            .map_err(|e| e.to_string());
        (r, buf.freeze(), body)
    }

    #[tokio::test]
    async fn a_body_within_the_cap_is_read_whole() {
        let (whole, data, _) = read(chunks(vec![Ok("ab"), Ok("cd")]), 4).await;
        assert_eq!((whole, &data[..]), (Ok(true), &b"abcd"[..]));
        let b = RevalidateBody::<Full<Bytes>>::whole(data, None);
        assert_eq!(b.size_hint().exact(), Some(4));
        assert_eq!(b.collect().await.unwrap().to_bytes(), "abcd");
    }

    #[tokio::test]
    async fn a_body_over_the_cap_streams_on_whole() {
        let (whole, data, rest) = read(chunks(vec![Ok("ab"), Ok("cd"), Ok("ef")]), 3).await;
        assert_eq!(whole, Ok(false));
        assert_eq!(data, "abcd");
        let b = RevalidateBody::partial(data, rest);
        assert!(!b.is_end_stream());
        assert_eq!(b.collect().await.unwrap().to_bytes(), "abcdef");
    }

    #[tokio::test]
    async fn a_known_length_over_the_cap_is_not_read_at_all() {
        let (whole, data, rest) = read(Full::new(Bytes::from("abcdef")), 3).await;
        assert_eq!((whole, data.len()), (Ok(false), 0));
        let b = RevalidateBody::partial(data, rest);
        assert_eq!(b.size_hint().exact(), Some(6));
        assert_eq!(b.collect().await.unwrap().to_bytes(), "abcdef");
    }

    #[tokio::test]
    async fn an_error_keeps_what_was_read_then_reports_itself() {
        let (result, data, _) = read(chunks(vec![Ok("ab"), Err("reset")]), 10).await;
        assert_eq!(result, Err("reset".to_owned()));
        let mut b = RevalidateBody::<Full<Bytes>>::failed(data, "reset".into());
        let first = b.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        assert_eq!(b.frame().await.unwrap().unwrap_err().to_string(), "reset");
        assert!(b.frame().await.is_none());
        assert!(b.is_end_stream());
    }

    #[tokio::test]
    async fn the_default_is_empty_without_a_default_inner_body() {
        struct NoDefault;
        let b = RevalidateBody::<NoDefault>::default();
        assert_eq!(format!("{b:?}"), "RevalidateBody { kind: \"whole\", .. }");
        let b = RevalidateBody::<Full<Bytes>>::default();
        assert!(b.is_end_stream());
        assert_eq!(b.size_hint().exact(), Some(0));
        assert!(b.collect().await.unwrap().to_bytes().is_empty());
    }

    #[tokio::test]
    async fn trailers_are_kept() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-t", "1".parse().unwrap());
        let b = RevalidateBody::<Full<Bytes>>::whole(Bytes::from("a"), Some(trailers));
        let collected = b.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-t"], "1");
        let inner = RevalidateBody::inner(Full::new(Bytes::from("xyz")));
        assert_eq!(inner.size_hint().exact(), Some(3));
        assert_eq!(inner.collect().await.unwrap().to_bytes(), "xyz");
    }
}
