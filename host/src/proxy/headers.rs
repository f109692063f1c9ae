//! Header rewriting between client and backend: hop-by-hop headers are dropped both ways
//! (RFC 9110 §7.6.1), `X-Forwarded-*` are set, and the client IP is found.

use std::net::{IpAddr, SocketAddr};

use http::Uri;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether `name`, in any case, is a hop-by-hop field: one that describes a connection,
/// never the message (RFC 9110 §7.6.1). By length first: this runs for every field of
/// every request and response.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    let candidates: &[&[u8]] = match name.len() {
        2 => &[b"te"],
        7 => &[b"trailer", b"upgrade"],
        10 => &[b"connection", b"keep-alive"],
        16 => &[b"proxy-connection"],
        17 => &[b"transfer-encoding"],
        18 => &[b"proxy-authenticate"],
        19 => &[b"proxy-authorization"],
        _ => return false,
    };
    candidates.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// A backend's response header fields on their way to the client, hop-by-hop fields left
/// out, each name spelled as the backend sent it.
///
/// Not a `HeaderMap`: building one per response (every name hashed and parsed, every value
/// a reference-counted slice of the head) and dropping it cost about a tenth of the
/// gateway's instructions per proxied request (docs/benchmarks.md). The HTTP/1 server
/// copies each field's `name: value` line as it is; the hyper path turns the fields into
/// map entries with [`Fields::merge_into`].
///
/// Stored as one buffer: per field, the name's and the value's lengths (4 bytes each,
/// little-endian), then the line `name: value\r\n`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fields(Vec<u8>);

/// One field of [`Fields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    /// `name: value\r\n`.
    pub line: &'a [u8],
}

impl Fields {
    pub const fn new() -> Self {
        Fields(Vec::new())
    }

    pub fn with_capacity(bytes: usize) -> Self {
        Fields(Vec::with_capacity(bytes))
    }

    /// Adds a field. The caller has checked both parts (httparse's grammar): no line
    /// breaks, no colon in the name.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let (Ok(n), Ok(v)) = (u32::try_from(name.len()), u32::try_from(value.len())) else {
            return;
        };
        self.0.reserve(8 + name.len() + value.len() + 4);
        self.0.extend_from_slice(&n.to_le_bytes());
        self.0.extend_from_slice(&v.to_le_bytes());
        push_field(&mut self.0, name, value);
    }

    /// The fields, in order.
    pub fn iter(&self) -> impl Iterator<Item = Field<'_>> {
        let mut rest = &self.0[..];
        std::iter::from_fn(move || {
            let (lengths, after) = rest.split_first_chunk::<8>()?;
            let [n0, n1, n2, n3, v0, v1, v2, v3] = *lengths;
            let n = u32::from_le_bytes([n0, n1, n2, n3]) as usize;
            let v = u32::from_le_bytes([v0, v1, v2, v3]) as usize;
            let line_len = n + 2 + v + 2;
            let line = after.get(..line_len)?;
            rest = &after[line_len..];
            Some(Field {
                name: &line[..n],
                value: &line[n + 2..n + 2 + v],
                line,
            })
        })
    }

    /// The first value of `name` (any case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value)
    }

    /// Keeps only the fields whose names `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let mut kept = Fields::with_capacity(self.0.len());
        for f in self.iter().filter(|f| keep(f.name)) {
            kept.push(f.name, f.value);
        }
        *self = kept;
    }

    /// Adds the fields to `map`, except those whose names `map` already has: what the
    /// gateway set replaces what the backend sent. A field that is not a valid header is
    /// left out.
    pub fn merge_into(&self, map: &mut HeaderMap) {
        let set: Vec<HeaderName> = map.keys().cloned().collect();
        for f in self.iter() {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(f.name),
                HeaderValue::from_bytes(f.value),
            ) else {
                continue;
            };
            if !set.contains(&name) {
                map.append(name, value);
            }
        }
    }
}

/// Appends the field line `name: value\r\n`.
pub fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A `Content-Length` value as a number.
pub fn parse_length(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// The fields a `Connection` value names to be dropped with it: its tokens other than
/// its own options `close` and `keep-alive`.
pub fn connection_names(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"close")
                && !t.eq_ignore_ascii_case(b"keep-alive")
        })
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

/// How a request's header fields change on the way to a backend: hop-by-hop fields
/// (and those `Connection` names) and `Expect` (the gateway answered it) are dropped,
/// `Host` is kept (or supplied), `X-Request-ID` is the gateway's, the peer is appended to
/// `X-Forwarded-For`, and `X-Forwarded-Proto` and `-Host` are set; a trusted proxy's own
/// `-Proto` and `-Host` are kept. Without a request ID (`proxy.request_id: false`) the
/// client's `X-Request-ID` passes as any field; without `forwarded_headers` nothing is
/// added, and the `X-Forwarded-*` fields pass from a trusted proxy only.
///
/// Applied as the client writes the request head ([`Forwarding::write_fields`]) rather
/// than by editing the request's `HeaderMap`: the edits hashed a name each and cost about
/// a tenth of the gateway's instructions per proxied request (docs/benchmarks.md).
pub struct Forwarding<'a> {
    pub request_id: Option<&'a [u8]>,
    /// The peer's address ([`peer_text`]).
    pub peer_text: &'a HeaderValue,
    pub peer_trusted: bool,
    /// `proxy.forwarded_headers`.
    pub forwarded_headers: bool,
    /// `Host` for a request that has none and no authority in its URI: the backend's.
    pub backend_authority: &'a str,
}

impl Forwarding<'_> {
    /// Writes the fields the backend gets, each as `name: value\r\n`, into `out`.
    /// `Content-Length` is left out when `drop_length` (the client frames the body
    /// itself).
    pub fn write_fields(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        drop_length: bool,
        out: &mut Vec<u8>,
    ) {
        let start = out.len();
        if let Err(NamesFields) = self.write_with(headers, uri, drop_length, None, out) {
            // Rare: `Connection` names fields to drop, which may come before it.
            let named: Vec<&[u8]> = headers
                .get_all(header::CONNECTION)
                .iter()
                .flat_map(|v| connection_names(v.as_bytes()))
                .collect();
            out.truncate(start);
            let _ = self.write_with(headers, uri, drop_length, Some(&named), out);
        }
    }

    /// One pass over the fields, dropping those `named` by `Connection`. Without that
    /// list, fails when `Connection` names a field.
    fn write_with(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        drop_length: bool,
        named: Option<&[&[u8]]>,
        out: &mut Vec<u8>,
    ) -> Result<(), NamesFields> {
        let mut host = None;
        let mut forwarded_for: Vec<&[u8]> = Vec::new();
        let (mut kept_proto, mut kept_host) = (false, false);
        for (name, value) in headers {
            if *name == header::CONNECTION {
                if named.is_none() && connection_names(value.as_bytes()).next().is_some() {
                    return Err(NamesFields);
                }
                continue;
            }
            let spelled = name.as_str().as_bytes();
            if is_hop_by_hop(spelled)
                || *name == header::EXPECT
                || (drop_length && *name == header::CONTENT_LENGTH)
                || (self.request_id.is_some() && *name == X_REQUEST_ID)
                || named.is_some_and(|named| named.iter().any(|n| n.eq_ignore_ascii_case(spelled)))
            {
                continue;
            }
            let (xff, proto) = (*name == X_FORWARDED_FOR, *name == X_FORWARDED_PROTO);
            if xff || proto || *name == X_FORWARDED_HOST {
                // The gateway's `X-Forwarded-For` carries the client's chain on; otherwise
                // these pass from a trusted proxy only (a client's could be forged).
                if xff && self.forwarded_headers {
                    forwarded_for.push(value.as_bytes());
                    continue;
                }
                if !self.peer_trusted {
                    continue;
                }
                kept_proto |= proto;
                kept_host |= *name == X_FORWARDED_HOST;
            } else if *name == header::HOST {
                host = Some(value.as_bytes());
            }
            push_field(out, spelled, value.as_bytes());
        }
        if host.is_none() {
            // An HTTP/2 request's authority, or the backend's (which is no client's host).
            host = uri.authority().map(|a| a.as_str().as_bytes());
            let value = host.unwrap_or(self.backend_authority.as_bytes());
            push_field(out, b"host", value);
        }
        if let Some(id) = self.request_id {
            push_field(out, X_REQUEST_ID.as_str().as_bytes(), id);
        }
        if !self.forwarded_headers {
            return Ok(());
        }
        out.extend_from_slice(b"x-forwarded-for: ");
        for hop in forwarded_for
            .iter()
            .map(|v| v.trim_ascii())
            .filter(|v| !v.is_empty())
        {
            out.extend_from_slice(hop);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(self.peer_text.as_bytes());
        out.extend_from_slice(b"\r\n");
        if !kept_proto {
            push_field(out, b"x-forwarded-proto", b"http");
        }
        if let (false, Some(host)) = (kept_host, host) {
            push_field(out, b"x-forwarded-host", host);
        }
        Ok(())
    }
}

/// `Connection` names a field not dropped yet.
struct NamesFields;

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

    /// The fields `forwarding` writes for a request with `pairs`, in order.
    fn written(
        forwarding: &Forwarding<'_>,
        uri: &str,
        pairs: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        forwarding.write_fields(&map(pairs), &uri.parse().unwrap(), false, &mut out);
        String::from_utf8(out)
            .unwrap()
            .split_terminator("\r\n")
            .map(|line| {
                let (n, v) = line.split_once(": ").unwrap();
                (n.to_owned(), v.to_owned())
            })
            .collect()
    }

    fn fwd<'a>(id: &'a HeaderValue, peer: &'a HeaderValue, trusted: bool) -> Forwarding<'a> {
        Forwarding {
            request_id: Some(id.as_bytes()),
            peer_text: peer,
            peer_trusted: trusted,
            forwarded_headers: true,
            backend_authority: "backend:8080",
        }
    }

    /// `proxy.request_id: false` and `proxy.forwarded_headers: false`: nothing is added, the
    /// client's request ID passes, and `X-Forwarded-*` only from a trusted proxy.
    #[test]
    fn with_ids_and_forwarded_fields_off_nothing_is_added_and_only_a_trusted_peers_pass() {
        let peer = peer_text("10.0.0.9:5".parse().unwrap());
        let off = |trusted| Forwarding {
            request_id: None,
            forwarded_headers: false,
            ..fwd(&peer, &peer, trusted)
        };
        let sent = [
            ("host", "h"),
            ("x-request-id", "the-clients"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "outer"),
        ];
        assert_eq!(
            written(&off(false), "/", &sent),
            pairs(&[("host", "h"), ("x-request-id", "the-clients")])
        );
        assert_eq!(written(&off(true), "/", &sent), pairs(&sent));
        // Each switch alone.
        let ids_only = Forwarding {
            forwarded_headers: false,
            ..fwd(&peer, &peer, false)
        };
        assert_eq!(
            written(&ids_only, "/", &sent),
            pairs(&[("host", "h"), ("x-request-id", "10.0.0.9")])
        );
        let forwarded_only = Forwarding {
            request_id: None,
            ..fwd(&peer, &peer, false)
        };
        assert_eq!(
            written(&forwarded_only, "/", &sent),
            pairs(&[
                ("host", "h"),
                ("x-request-id", "the-clients"),
                ("x-forwarded-for", "1.2.3.4, 10.0.0.9"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "h"),
            ])
        );
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn drops_hop_by_hop_and_connection_named_fields() {
        let (id, peer) = (
            HeaderValue::from_static("id-1"),
            peer_text("127.0.0.1:5".parse().unwrap()),
        );
        // `x-hop` comes before the `Connection` field that names it.
        let got = written(
            &fwd(&id, &peer, false),
            "/",
            &[
                ("x-hop", "1"),
                ("host", "api.example.com"),
                ("connection", "keep-alive, X-Hop"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("transfer-encoding", "chunked"),
                ("upgrade", "h2c"),
                ("proxy-authorization", "Basic Zm9v"),
                ("expect", "100-continue"),
                ("x-end-to-end", "kept"),
                ("x-request-id", "the-clients"),
            ],
        );
        assert_eq!(
            got,
            pairs(&[
                ("host", "api.example.com"),
                ("x-end-to-end", "kept"),
                ("x-request-id", "id-1"),
                ("x-forwarded-for", "127.0.0.1"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "api.example.com"),
            ])
        );
    }

    #[test]
    fn a_connection_field_naming_no_valid_field_still_gets_a_whole_head() {
        let (id, peer) = (
            HeaderValue::from_static("i"),
            peer_text("127.0.0.1:5".parse().unwrap()),
        );
        let got = written(
            &fwd(&id, &peer, false),
            "/",
            &[
                ("host", "h"),
                ("connection", "not a token, x-hop"),
                ("x-hop", "1"),
                ("x-after", "kept"),
            ],
        );
        assert_eq!(
            got,
            pairs(&[
                ("host", "h"),
                ("x-after", "kept"),
                ("x-request-id", "i"),
                ("x-forwarded-for", "127.0.0.1"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "h"),
            ])
        );
    }

    #[test]
    fn a_missing_host_comes_from_the_uri_or_the_backend() {
        let (id, peer) = (
            HeaderValue::from_static("i"),
            peer_text("127.0.0.1:5".parse().unwrap()),
        );
        let f = fwd(&id, &peer, false);
        let got = written(
            &f,
            "http://h2.example.com/x",
            &[("x-forwarded-host", "forged")],
        );
        assert!(
            got.contains(&("host".into(), "h2.example.com".into())),
            "{got:?}"
        );
        assert!(
            got.contains(&("x-forwarded-host".into(), "h2.example.com".into())),
            "{got:?}"
        );
        let got = written(&f, "/x", &[("x-forwarded-host", "forged")]);
        assert!(
            got.contains(&("host".into(), "backend:8080".into())),
            "{got:?}"
        );
        assert!(
            !got.iter().any(|(n, _)| n == "x-forwarded-host"),
            "the backend's own authority is no client's host, and the forged one goes: {got:?}"
        );
    }

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

    #[test]
    fn hop_by_hop_names_are_found_in_any_case() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name.as_str().as_bytes()), "{name}");
            assert!(is_hop_by_hop(name.as_str().to_uppercase().as_bytes()));
        }
        for name in ["content-length", "x-te", "tee", "date", "upgrades", ""] {
            assert!(!is_hop_by_hop(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn fields_keep_their_lines() {
        let mut fields = Fields::default();
        fields.push(b"Content-Type", b"text/plain");
        fields.push(b"X-Empty", b"");
        let all: Vec<Field<'_>> = fields.iter().collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].name, b"Content-Type");
        assert_eq!(all[0].value, b"text/plain");
        assert_eq!(all[0].line, b"Content-Type: text/plain\r\n");
        assert_eq!(all[1].line, b"X-Empty: \r\n");
        fields.retain(|name| name != b"Content-Type");
        assert_eq!(
            fields.iter().map(|f| f.name).collect::<Vec<_>>(),
            [b"X-Empty"]
        );
    }

    #[test]
    fn fields_merge_under_what_the_gateway_set() {
        let mut fields = Fields::default();
        fields.push(b"Set-Cookie", b"a=1");
        fields.push(b"X-Request-ID", b"backend");
        fields.push(b"set-cookie", b"b=2");
        fields.push(b"Bad Name", b"x");
        fields.push(b"X-Empty", b"");
        assert_eq!(fields.get("set-cookie"), Some(&b"a=1"[..]));
        assert_eq!(fields.get("x-empty"), Some(&b""[..]));
        let mut h = map(&[("x-request-id", "gateway")]);
        fields.merge_into(&mut h);
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(h.get_all("x-request-id").iter().count(), 1);
        assert_eq!(h["x-request-id"], "gateway");
        assert_eq!(h["x-empty"], "");
        assert_eq!(h.len(), 4, "the invalid name is left out: {h:?}");
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
        let id = HeaderValue::from_static("i");
        let peer = &peer_text("127.0.0.1:5000".parse().unwrap());
        let host = ("host", "api.example.com");
        let got = written(
            &fwd(&id, peer, false),
            "/",
            &[
                host,
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-for", " 5.6.7.8 "),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "edge"),
            ],
        );
        assert!(
            got.contains(&(
                "x-forwarded-for".into(),
                "1.2.3.4, 5.6.7.8, 127.0.0.1".into()
            )),
            "{got:?}"
        );
        assert!(
            got.contains(&("x-forwarded-proto".into(), "http".into())),
            "an untrusted peer cannot claim https: {got:?}"
        );
        assert!(
            got.contains(&("x-forwarded-host".into(), "api.example.com".into())),
            "{got:?}"
        );
        assert_eq!(got.len(), 5, "{got:?}");

        let got = written(
            &fwd(&id, peer, true),
            "/",
            &[
                host,
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "edge"),
            ],
        );
        assert!(
            got.contains(&("x-forwarded-for".into(), "127.0.0.1".into())),
            "{got:?}"
        );
        assert!(
            got.contains(&("x-forwarded-proto".into(), "https".into())),
            "{got:?}"
        );
        assert!(
            got.contains(&("x-forwarded-host".into(), "edge".into())),
            "{got:?}"
        );
        assert_eq!(
            got.len(),
            5,
            "a trusted proxy's fields are kept, not doubled: {got:?}"
        );

        let got = written(
            &fwd(&id, peer, false),
            "/",
            &[host, ("x-forwarded-for", " ")],
        );
        assert!(
            got.contains(&("x-forwarded-for".into(), "127.0.0.1".into())),
            "an empty list is replaced: {got:?}"
        );
    }
}
