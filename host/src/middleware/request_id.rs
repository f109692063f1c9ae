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
/// request ID needs no cryptographic strength), printed without the formatting machinery
/// since it runs for most requests.
fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = fastrand::u128(..);
    // Version 4, variant RFC 4122.
    bits = (bits & !(0xf << 76)) | (0x4 << 76);
    bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let mut text = [b'-'; 36];
    // Two hex digits per byte; the dashes after bytes 4, 6, 8 and 10 stay.
    let mut at = 0;
    for (i, byte) in bits.to_be_bytes().into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(&text))
        .unwrap_or(HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_uuids_and_unique() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        for id in [&a, &b] {
            let parsed = uuid::Uuid::parse_str(id.to_str().unwrap()).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(parsed.hyphenated().to_string(), id.to_str().unwrap());
        }
    }

    #[test]
    fn only_sane_ids_are_kept() {
        assert!(is_sane(&HeaderValue::from_static("abc-123")));
        assert!(!is_sane(&HeaderValue::from_static("")));
        assert!(!is_sane(&HeaderValue::from_static("has space")));
        assert!(!is_sane(&HeaderValue::from_str(&"x".repeat(129)).unwrap()));
    }
}
