//! The response body of [`Classify`](super::Classify): the inner service's
//! body as it comes, or a 429's body the layer read to learn its fields.

crate::macros::held_body! {
    /// The response body of [`Classify`](super::Classify): the inner
    /// service's body, passed on, or, for a 429 whose small body the layer
    /// read (see [`ClassifyLayer`](super::ClassifyLayer)), those bytes
    /// played back, or the error that cut reading them short.
    ClassifyBody, whole: "read"
}
