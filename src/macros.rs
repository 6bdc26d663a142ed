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

/// A public response body type `$name<B>` over the crate's one held body
/// ([`Held`](crate::body::Held)): the inner service's body `B` as it
/// comes, or what the layer read of it, as tower-http's `opaque_body!`.
/// Every layer that reads some answers (classify, rebase, coalesce,
/// revalidate) names its own body with it, so that one implementation
/// serves them all; each adds the constructors it uses over
/// `$name::held`. `$whole` is how `Debug` names a body read whole.
macro_rules! held_body {
    ($(#[$doc:meta])* $name:ident, whole: $whole:literal) => {
        pin_project_lite::pin_project! {
            $(#[$doc])*
            ///
            /// Its [`Default`] is an empty body, whatever `B` is, so layers
            /// that answer on their own (tower-http's `TimeoutLayer`) can
            /// wrap a stack over a body without one, such as hyper's
            /// `Incoming`.
            pub struct $name<B> {
                #[pin]
                held: crate::body::Held<B>,
            }
        }

        impl<B> $name<B> {
            /// The inner service's body, passed on.
            pub(crate) fn inner(body: B) -> Self {
                Self::held(crate::body::Held::inner(body))
            }

            /// What the layer holds of the body.
            pub(crate) fn held(held: crate::body::Held<B>) -> Self {
                Self { held }
            }
        }

        impl<B> Default for $name<B> {
            fn default() -> Self {
                Self::held(crate::body::Held::default())
            }
        }

        impl<B> std::fmt::Debug for $name<B> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("kind", &self.held.kind($whole))
                    .finish_non_exhaustive()
            }
        }

        impl<B> http_body::Body for $name<B>
        where
            B: http_body::Body,
            B::Error: Into<crate::BoxError>,
        {
            type Data = bytes::Bytes;
            type Error = crate::BoxError;

            #[inline]
            fn poll_frame(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, crate::BoxError>>> {
                self.project().held.poll_frame(cx)
            }

            #[inline]
            fn is_end_stream(&self) -> bool {
                self.held.is_end_stream()
            }

            #[inline]
            fn size_hint(&self) -> http_body::SizeHint {
                self.held.size_hint()
            }
        }
    };
}

pub(crate) use held_body;
