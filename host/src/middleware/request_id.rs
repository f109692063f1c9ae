//! `X-Request-ID`: kept when the client sends a sane one, generated (UUID v4) otherwise;
//! forwarded to the backend and echoed in the response.

use http::{HeaderName, HeaderValue, Response};

use super::Req;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied ID we keep.
const MAX_LEN: usize = 128;

/// Keeps the client's ID when it is sane, or makes one; sets it on the request for the
/// backend and returns it for the response.
pub fn assign(req: &mut Req) -> HeaderValue {
    let id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) if is_sane(v) => v.clone(),
        _ => generate(),
    };
    req.headers_mut().insert(X_REQUEST_ID, id.clone());
    id
}

/// Echoes the ID in the response.
pub fn stamp<B>(res: &mut Response<B>, id: HeaderValue) {
    res.headers_mut().insert(X_REQUEST_ID, id);
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
