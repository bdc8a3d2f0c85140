//! Header hygiene between client and upstream: hop-by-hop removal (RFC 9110 §7.6.1) and
//! the `X-Forwarded-*` headers.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::trace::{Propagation, TRACEPARENT};

/// Hop-by-hop headers that never cross the proxy, whatever `Connection` says; `Connection`
/// first ([`strip_hop_by_hop`] relies on it).
/// (`Trailer` is not among them: it is end to end, RFC 9110 §6.6.2, and hyper sends an
/// HTTP/1.1 client only the trailer fields it declares.)
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Where `name` is in [`HOP_BY_HOP`]; `None` for any other field. A match on the name's
/// text, which tells most fields apart by their length alone: cheaper than comparing
/// `name` with each of them.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "transfer-encoding" => 5,
        "upgrade" => 6,
        _ => return None,
    })
}

/// Whether `name` is a field of the connection rather than of the message, whatever
/// `Connection` says: one of [`HOP_BY_HOP`], or `TE`.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop_index(name).is_some() || *name == header::TE
}

/// Removes hop-by-hop headers, including every header `Connection` names. `TE` survives
/// only as `te: trailers`, which gRPC needs end to end.
///
/// Run this before adding the bearer, so `Connection: authorization` cannot remove it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the fields, no hashing and no allocation: most messages carry none of
    // these, and the rest only `Connection: keep-alive`.
    let mut present = 0u8; // bit i: HOP_BY_HOP[i] is there
    let mut has_te = false;
    let mut wants_trailers = false;
    for (name, value) in headers.iter() {
        if name == header::TE {
            has_te = true;
            // Read before removing: HTTP/1.1 senders list `TE` in `Connection` (RFC 9110 §10.1.4).
            wants_trailers |= list(value.as_bytes()).any(|coding| coding.eq_ignore_ascii_case(b"trailers"));
        } else if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        }
    }
    if present == 0 && !has_te {
        return;
    }
    // The fields `Connection` names, of those that are there: its usual tokens
    // (`keep-alive`, `close`) name none, and removing an absent field costs a lookup.
    let named: Vec<HeaderName> = if present & 1 != 0 {
        headers
            .iter()
            .filter(|(name, _)| *name == header::CONNECTION)
            .flat_map(|(_, value)| list(value.as_bytes()))
            .filter_map(|token| {
                headers
                    .keys()
                    .find(|name| name.as_str().as_bytes().eq_ignore_ascii_case(token))
            })
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    for name in &named {
        headers.remove(name);
    }
    if has_te {
        headers.remove(header::TE);
        if wants_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// Names the proxy sets, replaces or strips, or that tell an upstream who the client is or
/// how a message is framed. A client may not send them spelled with `_` for `-`
/// (`x_forwarded_for`: CGI- and WSGI-style servers read `_` and `-` alike), nor as request
/// trailers; `Forwarded` and `X-Real-IP`, which the proxy does not set, not at all.
const CONTROLLED: [&str; 16] = [
    "host",
    "authorization",
    "proxy-authorization",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
    "x-real-ip",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
];

/// Whether `name` (lowercase, as [`HeaderName`] keeps it) is one of [`CONTROLLED`] in any
/// spelling of `-` and `_`.
fn controlled(name: &str) -> bool {
    CONTROLLED.iter().any(|controlled| {
        controlled.len() == name.len()
            && controlled
                .bytes()
                .zip(name.bytes())
                .all(|(c, n)| c == n || (c == b'-' && n == b'_'))
    })
}

/// Drops the client's fields that would pass for ones the proxy controls: any of
/// `CONTROLLED` spelled with `_`, and `Forwarded` and `X-Real-IP`. Run it on the
/// client's fields after [`strip_hop_by_hop`].
pub fn drop_impostors(headers: &mut HeaderMap) {
    let impostors: Vec<HeaderName> = headers.keys().filter(|name| is_impostor(name)).cloned().collect();
    for name in &impostors {
        headers.remove(name);
    }
}

/// Whether [`drop_impostors`] drops `name`.
fn is_impostor(name: &HeaderName) -> bool {
    static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
    static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
    *name == FORWARDED || *name == X_REAL_IP || (name.as_str().contains('_') && controlled(name.as_str()))
}

/// Keeps only the trailer fields that may pass the proxy, either way: none of
/// `CONTROLLED` in any spelling (a trailer must not forge `X-Forwarded-For` after the
/// proxy's own, nor carry framing or credentials), none of the hop-by-hop ones.
pub fn clean_trailers(trailers: &mut HeaderMap) {
    let refused: Vec<HeaderName> = trailers
        .keys()
        .filter(|name| controlled(name.as_str()) || is_hop_by_hop(name))
        .cloned()
        .collect();
    for name in &refused {
        trailers.remove(name);
    }
}

/// The size of a header section as HTTP/1.1 writes it (`name: value` and CRLF per field),
/// for limits that hold whatever hyper's read buffer happened to take in.
pub fn section_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// The comma-separated tokens of every `name` header, trimmed. Bytes, not text: a value
/// with one odd byte (obs-text) must not hide the names next to it (found by fuzzing).
pub(super) fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| list(value.as_bytes()))
}

/// The trimmed, non-empty elements of a comma-separated field value.
pub(super) fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// The protocol an HTTP/1.1 client asks to switch to (`Connection: upgrade` plus
/// `Upgrade: websocket`, say), read before the hop-by-hop headers go.
pub fn upgrade_requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = tokens(headers, &header::CONNECTION).any(|token| token.eq_ignore_ascii_case(b"upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned()).flatten()
}

/// Puts back the two headers an upgrade needs on the next hop.
pub fn restore_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Which of the fields that the request path reads or replaces a client's request
/// carries, found in one pass: a request has a few fields, and looking each over costs
/// less than looking up the absent ones. A field named absent is absent; one named present
/// may have gone since (named in `Connection`, say).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Carried {
    pub(crate) authorization: bool,
    pub(crate) content_type: bool,
    pub(crate) content_length: bool,
    pub(crate) connection: bool,
    pub(crate) expect: bool,
    pub(crate) x_forwarded_for: bool,
    pub(crate) x_forwarded_proto: bool,
    pub(crate) x_forwarded_host: bool,
    pub(crate) traceparent: bool,
    /// A field [`drop_impostors`] drops.
    pub(crate) impostor: bool,
}

impl Carried {
    /// What `headers` carry.
    pub(crate) fn by(headers: &HeaderMap) -> Self {
        let mut carried = Self::default();
        for name in headers.keys() {
            let seen = if name == header::AUTHORIZATION {
                &mut carried.authorization
            } else if name == header::CONTENT_TYPE {
                &mut carried.content_type
            } else if name == header::CONTENT_LENGTH {
                &mut carried.content_length
            } else if name == header::CONNECTION {
                &mut carried.connection
            } else if name == header::EXPECT {
                &mut carried.expect
            } else if *name == X_FORWARDED_FOR {
                &mut carried.x_forwarded_for
            } else if *name == X_FORWARDED_PROTO {
                &mut carried.x_forwarded_proto
            } else if *name == X_FORWARDED_HOST {
                &mut carried.x_forwarded_host
            } else if *name == TRACEPARENT {
                &mut carried.traceparent
            } else if is_impostor(name) {
                &mut carried.impostor
            } else {
                continue;
            };
            *seen = true;
        }
        carried
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The fields the proxy sets on an upstream request, replacing any the client sent under
/// those names: `X-Forwarded-For/-Proto/-Host` and the trace context (`traceparent`,
/// `tracestate`, [`Propagation`]), then the route's extra headers, which win
/// over them. `Host` is not among them: the HTTP/1.1 client writes the upstream's
/// ([`super::http1::codec::encode_head`]), and over HTTP/2 the authority travels in
/// `:authority` alone (RFC 9113 §8.3.1; servers refuse a request carrying both, nginx:
/// "client sent duplicate host header"). No `Debug`: a route's extra header may carry a
/// secret.
pub(crate) struct ProxyFields<'a> {
    carried: Carried,
    forwarded_for: Option<HeaderValue>,
    forwarded_proto: HeaderValue,
    forwarded_host: Option<&'a HeaderValue>,
    extra: &'a [(HeaderName, HeaderValue)],
    trace: Propagation,
}

impl<'a> ProxyFields<'a> {
    /// `client` (the peer's IP as header text, none on a Unix socket) appended to the
    /// `X-Forwarded-For` in `client_headers` (`carried` says what they carry);
    /// `proto` and `client_host`, the scheme and host the client used; then `extra`; and
    /// the trace context `trace`.
    pub(crate) fn new(
        client_headers: &HeaderMap,
        carried: Carried,
        client: Option<&HeaderValue>,
        proto: &'static str,
        client_host: Option<&'a HeaderValue>,
        extra: &'a [(HeaderName, HeaderValue)],
        trace: Propagation,
    ) -> Self {
        let previous = carried
            .x_forwarded_for
            .then(|| client_headers.get(&X_FORWARDED_FOR))
            .flatten();
        let forwarded_for = client.and_then(|client| match previous {
            Some(previous) => {
                let mut joined = Vec::with_capacity(previous.len() + 2 + client.len());
                joined.extend_from_slice(previous.as_bytes());
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(client.as_bytes());
                HeaderValue::from_bytes(&joined).ok()
            }
            None => Some(client.clone()),
        });
        Self {
            carried,
            forwarded_for,
            forwarded_proto: HeaderValue::from_static(proto),
            forwarded_host: client_host,
            extra,
            trace,
        }
    }

    /// Sets them in `headers` (the client's, hop-by-hop fields already gone), but for the
    /// `X-Forwarded-*` values, which it returns to go beside the map; the client's fields
    /// under those names go. Without a peer address the client's `X-Forwarded-For` passes
    /// as it is; its `X-Forwarded-Host` never does.
    pub fn apply(self, headers: &mut HeaderMap) -> XForwarded {
        let carried = self.carried;
        if carried.x_forwarded_for && self.forwarded_for.is_some() {
            headers.remove(&X_FORWARDED_FOR);
        }
        if carried.x_forwarded_proto {
            headers.remove(&X_FORWARDED_PROTO);
        }
        if carried.x_forwarded_host {
            headers.remove(&X_FORWARDED_HOST);
        }
        self.trace.apply(headers);
        let mut forwarded = XForwarded {
            forwarded_for: self.forwarded_for,
            proto: self.forwarded_proto,
            host: self.forwarded_host.cloned(),
        };
        for (name, value) in self.extra {
            if *name == X_FORWARDED_FOR {
                // The client's, should it have passed for want of a peer address.
                headers.remove(&X_FORWARDED_FOR);
                forwarded.forwarded_for = Some(value.clone());
            } else if *name == X_FORWARDED_PROTO {
                forwarded.proto = value.clone();
            } else if *name == X_FORWARDED_HOST {
                forwarded.host = Some(value.clone());
            } else {
                headers.insert(name.clone(), value.clone());
            }
        }
        forwarded
    }
}

/// The `X-Forwarded-*` values of an upstream request. They go beside its map, not in it:
/// each send writes them, HTTP/1.1 straight into the head
/// ([`super::http1::codec::encode_head`]) and HTTP/2 into its copy of the map, which costs
/// less than putting them in the map for every request.
pub(crate) struct XForwarded {
    forwarded_for: Option<HeaderValue>,
    proto: HeaderValue,
    host: Option<HeaderValue>,
}

impl XForwarded {
    /// The fields, in the order they are written.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        [
            (&X_FORWARDED_FOR, self.forwarded_for.as_ref()),
            (&X_FORWARDED_PROTO, Some(&self.proto)),
            (&X_FORWARDED_HOST, self.host.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
    }
}

/// A client's IP as `X-Forwarded-For` text: worked out once per connection.
pub fn forwarded_for(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).expect("an IP address is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_hop_by_hop_match_follows_the_table() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        for other in [
            "te",
            "trailer",
            "content-length",
            "host",
            "connectio",
            "x-connection",
        ] {
            assert_eq!(hop_by_hop_index(&HeaderName::from_static(other)), None, "{other}");
        }
        assert!(is_hop_by_hop(&header::TE));
    }

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut map = headers(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "authorization"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("authorization", "Basic Zm9vOmJhcg=="),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic eA=="),
            ("te", "gzip, trailers"),
            ("accept", "application/json"),
        ]);
        strip_hop_by_hop(&mut map);
        let mut names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "te"]);
        assert_eq!(map["te"], "trailers");
    }

    #[test]
    fn upgrades_are_read_before_stripping_and_restored_after() {
        let mut map = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")]);
        let protocol = upgrade_requested(&map).unwrap();
        strip_hop_by_hop(&mut map);
        assert!(map.is_empty());
        restore_upgrade(&mut map, protocol);
        assert_eq!(map["connection"], "upgrade");
        assert_eq!(map["upgrade"], "websocket");
        assert!(
            upgrade_requested(&headers(&[("upgrade", "websocket")])).is_none(),
            "needs Connection: upgrade"
        );
    }

    #[test]
    fn te_trailers_survives_being_named_in_connection() {
        let mut map = headers(&[("connection", "TE"), ("te", "trailers")]);
        strip_hop_by_hop(&mut map);
        assert_eq!(map["te"], "trailers");
    }

    #[test]
    fn impostors_of_the_proxy_s_fields_are_dropped() {
        let mut map = headers(&[
            ("x_forwarded_for", "6.6.6.6"),
            ("x_forwarded_host", "evil"),
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("authori_zation", "x"),
            ("x_custom_thing", "kept"),
            ("accept", "*/*"),
        ]);
        drop_impostors(&mut map);
        let mut names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["accept", "authori_zation", "x-forwarded-for", "x_custom_thing"]
        );
    }

    #[test]
    fn trailers_keep_only_what_may_pass() {
        let mut trailers = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x_forwarded_for", "6.6.6.6"),
            ("authorization", "Bearer stolen"),
            ("content-length", "5"),
            ("connection", "close"),
            ("grpc-status", "0"),
            ("x-checksum", "42"),
        ]);
        clean_trailers(&mut trailers);
        let mut names: Vec<&str> = trailers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["grpc-status", "x-checksum"]);
    }

    #[test]
    fn te_without_trailers_is_dropped() {
        let mut map = headers(&[("te", "gzip")]);
        strip_hop_by_hop(&mut map);
        assert!(map.is_empty());
    }

    /// The fields an upstream gets for `client`'s: the map `ProxyFields` leaves, with the
    /// `X-Forwarded-*` ones it returns, as `name: value` in name order.
    fn proxied(
        client: &HeaderMap,
        peer: Option<&HeaderValue>,
        proto: &'static str,
        client_host: Option<&HeaderValue>,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Vec<String> {
        let mut applied = client.clone();
        let forwarded = ProxyFields::new(
            client,
            Carried::by(client),
            peer,
            proto,
            client_host,
            extra,
            Propagation::AsReceived,
        )
        .apply(&mut applied);
        let mut sent: Vec<String> = applied
            .iter()
            .chain(forwarded.fields())
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
            .collect();
        sent.sort_unstable();
        sent
    }

    #[test]
    fn proxy_fields_append_the_client_and_replace_the_clients_own() {
        let client = headers(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "evil"),
            ("x-forwarded-proto", "gopher"),
            ("host", "localhost:8080"),
            ("x-extra", "client"),
            ("accept", "*/*"),
        ]);
        let client_host = HeaderValue::from_static("localhost:8080");
        let peer = forwarded_for("127.0.0.1".parse().unwrap());
        let extra = [(
            HeaderName::from_static("x-extra"),
            HeaderValue::from_static("ours"),
        )];
        assert_eq!(
            proxied(&client, Some(&peer), "http", Some(&client_host), &extra),
            [
                "accept: */*",
                "host: localhost:8080",
                "x-extra: ours",
                "x-forwarded-for: 10.0.0.1, 127.0.0.1",
                "x-forwarded-host: localhost:8080",
                "x-forwarded-proto: http",
            ],
            "host stays for the sender: HTTP/1.1 writes the upstream's, HTTP/2 none"
        );
    }

    #[test]
    fn the_route_s_fields_win_over_the_forwarded_ones() {
        let client = headers(&[("x-forwarded-for", "10.0.0.1"), ("accept", "*/*")]);
        let extra = [
            (
                HeaderName::from_static("x-forwarded-proto"),
                HeaderValue::from_static("https"),
            ),
            (
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_static("192.0.2.1"),
            ),
        ];
        let host = HeaderValue::from_static("api.example");
        assert_eq!(
            proxied(&client, None, "http", Some(&host), &extra),
            [
                "accept: */*",
                "x-forwarded-for: 192.0.2.1",
                "x-forwarded-host: api.example",
                "x-forwarded-proto: https",
            ]
        );
    }

    #[test]
    fn without_a_peer_or_host_the_forwarded_fields_are_what_is_known() {
        let client = headers(&[("x-forwarded-for", "10.0.0.1"), ("x-forwarded-host", "evil")]);
        assert_eq!(
            proxied(&client, None, "https", None, &[]),
            ["x-forwarded-for: 10.0.0.1", "x-forwarded-proto: https"],
            "the client's X-Forwarded-For kept as it sent it; its X-Forwarded-Host never"
        );
    }
}
