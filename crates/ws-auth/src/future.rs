//! The [`ResponseFuture`] of every layer that may refuse a request: the inner service's future,
//! or a rejection that is ready at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use pin_project_lite::pin_project;

use crate::error::AuthError;
use crate::rejection::error_response;

pin_project! {
    /// Response future of [`JwtAuth`](crate::JwtAuth), [`ApiKey`](crate::ApiKey),
    /// [`CheckOrigin`](crate::CheckOrigin) and [`HandshakeRateLimit`](crate::HandshakeRateLimit):
    /// the inner service's future, or a rejection that is ready at once (the inner service was
    /// not called).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Inner {
            #[pin]
            future: F,
        },
        Rejected {
            response: Option<Response<Bytes>>,
        },
    }
}

impl<F> ResponseFuture<F> {
    /// The request passed: the inner service's answer.
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    /// The request is refused with the rejection of `err` ([`error_response`]).
    pub(crate) fn rejected(err: &AuthError) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(error_response(err)),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: From<Bytes>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx),
            KindProj::Rejected { response } => {
                let response = response.take().expect("future polled after completion");
                Poll::Ready(Ok(response.map(B::from)))
            }
        }
    }
}
