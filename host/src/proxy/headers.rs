//! Header rewriting between client and backend: hop-by-hop headers are dropped both ways
//! (RFC 9110 §7.6.1), `X-Forwarded-*` are set, and the client IP is found.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, never the message.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any the `Connection` header names. Most messages
/// carry none, so one pass over the names decides whether there is anything to do.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
}

/// Whether a comma-separated header value (`Connection: keep-alive, Close`) lists `token`,
/// ignoring case and spaces.
pub fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The client's IP: the peer's, unless the peer is a trusted proxy, in which case the
/// rightmost `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer_ip) {
        return peer_ip;
    }
    let hops = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer_ip)
}

/// The peer's address as an `X-Forwarded-For` entry, made once per connection.
pub fn peer_text(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_canonical().to_string())
        .unwrap_or(HeaderValue::from_static("unknown"))
}

/// Sets `X-Forwarded-For` (appending the peer), `X-Forwarded-Proto` and `X-Forwarded-Host`.
/// Proto and host sent by a trusted proxy are kept; anyone else's are replaced.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer_text: &HeaderValue,
    host: Option<HeaderValue>,
    peer_trusted: bool,
) {
    // One lookup per header (an entry, or a plain insert when nothing is kept): this runs
    // for every proxied request.
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Occupied(mut e) => {
            let appended = e
                .get()
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|prev| !prev.is_empty())
                .and_then(|prev| {
                    let mut xff = Vec::with_capacity(prev.len() + 2 + peer_text.len());
                    xff.extend_from_slice(prev.as_bytes());
                    xff.extend_from_slice(b", ");
                    xff.extend_from_slice(peer_text.as_bytes());
                    HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)).ok()
                });
            e.insert(appended.unwrap_or_else(|| peer_text.clone()));
        }
        Entry::Vacant(e) => {
            e.insert(peer_text.clone());
        }
    }
    let proto = HeaderValue::from_static("http");
    if peer_trusted {
        headers.entry(X_FORWARDED_PROTO).or_insert(proto);
    } else {
        headers.insert(X_FORWARDED_PROTO, proto);
    }
    match (peer_trusted, host) {
        (true, Some(h)) => {
            headers.entry(X_FORWARDED_HOST).or_insert(h);
        }
        (true, None) => {}
        (false, Some(h)) => {
            headers.insert(X_FORWARDED_HOST, h);
        }
        (false, None) => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-end-to-end", "kept"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-end-to-end"], "kept");
    }

    #[test]
    fn client_ip_trusts_only_configured_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = map(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7")]);
        let untrusted_peer: SocketAddr = "9.9.9.9:1000".parse().unwrap();
        let trusted_peer: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        assert_eq!(
            client_ip(untrusted_peer, &h, &trusted),
            "9.9.9.9".parse::<IpAddr>().unwrap()
        );
        // The rightmost hop that is not a trusted proxy; 6.6.6.6 could be forged by 1.2.3.4.
        assert_eq!(
            client_ip(trusted_peer, &h, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(trusted_peer, &HeaderMap::new(), &trusted),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn peers_print_as_their_canonical_address() {
        for (peer, text) in [
            ("127.0.0.1:1", "127.0.0.1"),
            ("[::1]:1", "::1"),
            ("[::ffff:10.0.0.1]:1", "10.0.0.1"),
            ("[2001:db8::8a2e:370:7334]:1", "2001:db8::8a2e:370:7334"),
        ] {
            assert_eq!(peer_text(peer.parse().unwrap()), text);
        }
    }

    #[test]
    fn forwarded_headers_append_and_replace() {
        let peer = &peer_text("127.0.0.1:5000".parse().unwrap());
        let host = HeaderValue::from_static("api.example.com");
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarded(&mut h, peer, Some(host.clone()), false);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
        assert_eq!(
            h["x-forwarded-proto"], "http",
            "an untrusted peer cannot claim https"
        );
        assert_eq!(h["x-forwarded-host"], "api.example.com");

        let mut h = map(&[("x-forwarded-proto", "https"), ("x-forwarded-host", "edge")]);
        set_forwarded(&mut h, peer, Some(host.clone()), true);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "edge");

        let mut h = map(&[("x-forwarded-for", " ")]);
        set_forwarded(&mut h, peer, None, false);
        assert_eq!(
            h["x-forwarded-for"], "127.0.0.1",
            "an empty list is replaced"
        );
        assert!(!h.contains_key("x-forwarded-host"));
    }
}
