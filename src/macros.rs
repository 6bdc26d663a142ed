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
