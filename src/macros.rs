//! Macros the services share.

/// `get_ref`, `get_mut` and `into_inner` for a service that wraps its inner
/// service `S` in a field named `inner`, as tower-http's macro of the same
/// name. Used inside `impl<S, ..> Service<S, ..> { .. }`.
macro_rules! define_inner_service_accessors {
    () => {
        /// Gets a reference to the inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// Gets a mutable reference to the inner service.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes `self`, returning the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

pub(crate) use define_inner_service_accessors;

/// A public getter on `$stats` for each of its `AtomicU64` counters named,
/// with the docs given.
macro_rules! counter_getters {
    ($stats:ty; $($(#[$doc:meta])* $name:ident),* $(,)?) => {
        impl $stats {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> u64 {
                    self.$name.load(std::sync::atomic::Ordering::Relaxed)
                }
            )*
        }
    };
}

pub(crate) use counter_getters;

/// A public response body type `$name<B>`: the inner service's body `B` as
/// it comes, or bytes the layer read and hands back, as tower-http's
/// `opaque_body!`. The layers that read some answers whole (rebase,
/// coalesce) each name their own body with it, so that one implementation
/// serves both.
macro_rules! inner_or_read_body {
    ($(#[$doc:meta])* $name:ident) => {
        pin_project_lite::pin_project! {
            $(#[$doc])*
            ///
            /// Its [`Default`] is an empty body, whatever `B` is, so layers
            /// that answer on their own (tower-http's `TimeoutLayer`) can
            /// wrap a stack over a body without one, such as hyper's
            /// `Incoming`.
            pub struct $name<B> {
                #[pin]
                inner: http_body_util::Either<B, http_body_util::Full<bytes::Bytes>>,
            }
        }

        impl<B> $name<B> {
            /// The inner service's body, passed on.
            pub(crate) fn inner(body: B) -> Self {
                Self {
                    inner: http_body_util::Either::Left(body),
                }
            }

            /// Bytes the layer read.
            pub(crate) fn read(bytes: bytes::Bytes) -> Self {
                Self {
                    inner: http_body_util::Either::Right(http_body_util::Full::new(bytes)),
                }
            }
        }

        impl<B> Default for $name<B> {
            fn default() -> Self {
                Self::read(bytes::Bytes::new())
            }
        }

        impl<B> std::fmt::Debug for $name<B> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let kind = match self.inner {
                    http_body_util::Either::Left(_) => "inner",
                    http_body_util::Either::Right(_) => "read",
                };
                f.debug_struct(stringify!($name))
                    .field("kind", &kind)
                    .finish_non_exhaustive()
            }
        }

        impl<B> http_body::Body for $name<B>
        where
            B: http_body::Body<Data = bytes::Bytes>,
            B::Error: Into<crate::BoxError>,
        {
            type Data = bytes::Bytes;
            type Error = crate::BoxError;

            #[inline]
            fn poll_frame(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, crate::BoxError>>> {
                self.project().inner.poll_frame(cx)
            }

            #[inline]
            fn is_end_stream(&self) -> bool {
                self.inner.is_end_stream()
            }

            #[inline]
            fn size_hint(&self) -> http_body::SizeHint {
                self.inner.size_hint()
            }
        }
    };
}

pub(crate) use inner_or_read_body;
