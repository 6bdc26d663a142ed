crate::macros::held_body! {
    /// The response body of [`Coalesce`](super::Coalesce): the inner
    /// service's body as it comes, or the bytes of an answer shared by
    /// several callers.
    CoalesceBody, whole: "read"
}

impl<B> CoalesceBody<B> {
    /// Bytes the layer read whole.
    pub(crate) fn read(bytes: bytes::Bytes) -> Self {
        Self::held(crate::body::Held::whole(bytes, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_debug_names_it() {
        let empty = CoalesceBody::<()>::default();
        assert_eq!(format!("{empty:?}"), "CoalesceBody { kind: \"read\", .. }");
    }
}
