//! Macros shared by the layers' services (crate-private).

/// Defines `get_ref`, `get_mut` and `into_inner` in an `impl<S> Service<S>` block whose struct
/// keeps the wrapped service in a field named `inner`: tower-http's accessors, one definition
/// for every service of this crate.
macro_rules! define_inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes `self`, returning the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}
