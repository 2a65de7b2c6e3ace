//! Macros shared by the layers' services (crate-private).

/// Defines `get_ref`, `get_mut` and `into_inner` in the `impl<S> Type<S>` block of a service
/// whose struct keeps the wrapped service in a field named `inner`: tower-http's accessors, one
/// definition for every service of this crate.
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

/// Implements `Service<Request<ReqB>>` for a service `$service<S>` that implements
/// [`Admit`](crate::admit::Admit) and keeps the wrapped service in `inner`: answers with the
/// inner service's response when [`Admit::admit`](crate::admit::Admit::admit) passes, and with
/// the rejection of its error, at once, when it does not.
macro_rules! impl_admitting_service {
    ($service:ident) => {
        impl<S, ReqB, ResB> tower::Service<http::Request<ReqB>> for $service<S>
        where
            S: tower::Service<http::Request<ReqB>, Response = http::Response<ResB>>,
            ResB: From<bytes::Bytes>,
        {
            type Response = http::Response<ResB>;
            type Error = S::Error;
            type Future = $crate::future::ResponseFuture<S::Future>;

            fn poll_ready(
                &mut self,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), Self::Error>> {
                self.inner.poll_ready(cx)
            }

            fn call(&mut self, mut req: http::Request<ReqB>) -> Self::Future {
                use $crate::admit::Admit as _;
                match self.admit(&mut req) {
                    Ok(()) => $crate::future::ResponseFuture::inner(self.inner.call(req)),
                    Err(err) => {
                        self.log_refusal(&err, &req);
                        $crate::future::ResponseFuture::rejected(&err)
                    }
                }
            }
        }
    };
}
