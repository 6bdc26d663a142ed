crate::macros::held_body! {
    /// The response body of [`Rebase`](super::Rebase): the inner service's
    /// body as it comes, or the bytes of a 412 (or, with a
    /// [`SessionBoard`](crate::sequence::SessionBoard), of a write's answer)
    /// the layer read to find the session in it, handed back.
    RebaseBody, whole: "read"
}

impl<B> RebaseBody<B> {
    /// Bytes the layer read whole.
    pub(crate) fn read(bytes: bytes::Bytes) -> Self {
        Self::held(crate::body::Held::whole(bytes, None))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body::Body;
    use http_body_util::{BodyExt, Full};

    use super::*;

    #[tokio::test]
    async fn either_side_plays_through_and_the_default_is_empty() {
        let inner = RebaseBody::inner(Full::new(Bytes::from("abc")));
        assert_eq!(inner.size_hint().exact(), Some(3));
        assert_eq!(inner.collect().await.unwrap().to_bytes(), "abc");
        let read = RebaseBody::<Full<Bytes>>::read(Bytes::from("{}"));
        assert!(!read.is_end_stream());
        assert_eq!(read.collect().await.unwrap().to_bytes(), "{}");
        // No `Default` needed of the inner body.
        struct NoDefault;
        let empty = RebaseBody::<NoDefault>::default();
        assert_eq!(format!("{empty:?}"), "RebaseBody { kind: \"read\", .. }");
        let empty = RebaseBody::<Full<Bytes>>::default();
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }
}
