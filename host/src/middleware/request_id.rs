//! `X-Request-ID`: kept when the client sends a sane one, generated (UUID v4) otherwise;
//! forwarded to the backend and echoed in the response.

use http::HeaderValue;

use super::Req;

pub use crate::proxy::headers::X_REQUEST_ID;

/// Longest client-supplied ID we keep.
const MAX_LEN: usize = 128;

/// A request's ID: the client's, or one made here. A made one stays a plain array (no
/// allocation, no validation) until something needs a header value.
#[derive(Clone, Debug)]
pub enum RequestId {
    Client(HeaderValue),
    Made([u8; 36]),
}

impl RequestId {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Client(v) => v.as_bytes(),
            RequestId::Made(text) => text,
        }
    }

    pub fn to_value(&self) -> HeaderValue {
        match self {
            RequestId::Client(v) => v.clone(),
            RequestId::Made(text) => value(text),
        }
    }
}

/// The client's ID when it is sane, or a new one. The backend gets it as the request is
/// written ([`crate::proxy::headers::Forwarding`]), the client with the response head.
pub fn assign(req: &Req) -> RequestId {
    match req.headers().get(&X_REQUEST_ID) {
        Some(v) if is_sane(v) => RequestId::Client(v.clone()),
        _ => RequestId::Made(generate()),
    }
}

fn is_sane(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| c.is_ascii_graphic())
}

fn value(text: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(text).unwrap_or(HeaderValue::from_static("invalid"))
}

/// A UUID v4 from 128 random bits of the thread's fast generator (unique, not secret: a
/// request ID needs no cryptographic strength), printed without the formatting machinery
/// since it runs for most requests.
fn generate() -> [u8; 36] {
    let mut bits = fastrand::u128(..);
    // Version 4, variant RFC 4122.
    bits = (bits & !(0xf << 76)) | (0x4 << 76);
    bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let word = |i: u32| hex8((bits >> (96 - 32 * i)) as u32);
    let (a, b, c, d) = (word(0), word(1), word(2), word(3));
    // 8-4-4-4-12 digits.
    let mut text = [b'-'; 36];
    text[0..8].copy_from_slice(&a);
    text[9..13].copy_from_slice(&b[..4]);
    text[14..18].copy_from_slice(&b[4..]);
    text[19..23].copy_from_slice(&c[..4]);
    text[24..28].copy_from_slice(&c[4..]);
    text[28..36].copy_from_slice(&d);
    text
}

/// A 32-bit word as 8 lowercase hex digits, most significant first, worked out in one
/// 64-bit register (a loop over the digits was a third of a request ID's cost).
fn hex8(x: u32) -> [u8; 8] {
    // One nibble per byte, the most significant nibble in the most significant byte.
    let mut v = u64::from(x);
    v = (v | (v << 16)) & 0x0000_ffff_0000_ffff;
    v = (v | (v << 8)) & 0x00ff_00ff_00ff_00ff;
    v = (v | (v << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // 1 in each byte whose nibble is 10 or more: those become 'a'..'f', the rest '0'..'9'.
    let letters = ((v + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (v + 0x3030_3030_3030_3030 + letters * (b'a' - b'0' - 10) as u64).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_uuids_and_unique() {
        let a = value(&generate());
        let b = value(&generate());
        assert_ne!(a, b);
        for id in [&a, &b] {
            let parsed = uuid::Uuid::parse_str(id.to_str().unwrap()).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(parsed.hyphenated().to_string(), id.to_str().unwrap());
        }
    }

    #[test]
    fn hex_digits_of_every_nibble() {
        assert_eq!(&hex8(0x0123_4567), b"01234567");
        assert_eq!(&hex8(0x89ab_cdef), b"89abcdef");
        assert_eq!(&hex8(0), b"00000000");
        assert_eq!(&hex8(u32::MAX), b"ffffffff");
        for x in [0x9a0f_f0a9_u32, 0xdead_beef, 0x1000_000a] {
            assert_eq!(
                String::from_utf8(hex8(x).to_vec()).unwrap(),
                format!("{x:08x}")
            );
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
