//! `X-Request-ID`: kept when the client sends a sane one, generated (UUID v4) otherwise;
//! forwarded to the backend and echoed in the response.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Response};
use tower::{Layer, Service};

use super::{BoxFuture, Req};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied ID we keep.
const MAX_LEN: usize = 128;

#[derive(Clone, Copy)]
pub struct RequestIdLayer;

#[derive(Clone)]
pub struct RequestId<S> {
    inner: S,
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;
    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId { inner }
    }
}

impl<S, B> Service<Req> for RequestId<S>
where
    S: Service<Req, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = BoxFuture<Response<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) if is_sane(v) => v.clone(),
            _ => generate(),
        };
        req.headers_mut().insert(X_REQUEST_ID, id.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            res.headers_mut().insert(X_REQUEST_ID, id);
            Ok(res)
        })
    }
}

fn is_sane(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| c.is_ascii_graphic())
}

/// A UUID v4 from 128 random bits of the thread's fast generator (unique, not secret: a
/// request ID needs no cryptographic strength).
fn generate() -> HeaderValue {
    let bytes = fastrand::u128(..).to_le_bytes();
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_uuids_and_unique() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(uuid::Uuid::parse_str(a.to_str().unwrap()).is_ok());
    }

    #[test]
    fn only_sane_ids_are_kept() {
        assert!(is_sane(&HeaderValue::from_static("abc-123")));
        assert!(!is_sane(&HeaderValue::from_static("")));
        assert!(!is_sane(&HeaderValue::from_static("has space")));
        assert!(!is_sane(&HeaderValue::from_str(&"x".repeat(129)).unwrap()));
    }
}
