crate::macros::inner_or_read_body! {
    /// The response body of [`Coalesce`](super::Coalesce): the inner
    /// service's body as it comes, or the bytes of an answer shared by
    /// several callers.
    CoalesceBody
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
