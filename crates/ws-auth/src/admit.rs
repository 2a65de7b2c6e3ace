//! What the refusing services share: each implements [`Admit`], and
//! `impl_admitting_service!` (in `macros.rs`) writes the one `Service` impl around it, in
//! tower-http's `ValidateRequest` style: the check runs synchronously in `call`, a request that
//! passes goes to the inner service, a refused one is answered at once by [`ResponseFuture`]
//! without calling (or cloning) the inner service, whose readiness is kept for the next request.
//!
//! [`ResponseFuture`]: crate::ResponseFuture

use http::Request;

use crate::error::AuthError;

/// The check of one refusing service.
pub(crate) trait Admit {
    /// Whether `req` may go on to the inner service; it may insert extensions on the way.
    /// `Err` is answered with the rejection of the error.
    fn admit<B>(&self, req: &mut Request<B>) -> Result<(), AuthError>;

    /// Logs a refusal at `debug`: the code, the reason and the path, never a token, a key or
    /// the query string.
    fn log_refusal<B>(&self, err: &AuthError, req: &Request<B>) {
        tracing::debug!(code = err.code(), reason = %err, path = req.uri().path(), "rejected request");
    }
}
