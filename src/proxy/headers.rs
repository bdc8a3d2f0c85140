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
        } else if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
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
    static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
    static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
    let impostors: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            **name == FORWARDED
                || **name == X_REAL_IP
                || (name.as_str().contains('_') && controlled(name.as_str()))
        })
        .cloned()
        .collect();
    for name in &impostors {
        headers.remove(name);
    }
}

/// Keeps only the trailer fields that may pass the proxy, either way: none of
/// `CONTROLLED` in any spelling (a trailer must not forge `X-Forwarded-For` after the
/// proxy's own, nor carry framing or credentials), none of the hop-by-hop ones.
pub fn clean_trailers(trailers: &mut HeaderMap) {
    let refused: Vec<HeaderName> = trailers
        .keys()
        .filter(|name| controlled(name.as_str()) || HOP_BY_HOP.contains(name))
        .cloned()
        .collect();
    for name in &refused {
        trailers.remove(name);
    }
}

/// Folds a `Content-Length` sent as a list or in several fields (`5, 5`) into one field.
/// hyper's client read the body by it, having refused values that differ; should they
/// differ all the same, the field goes and the body is framed anew.
pub fn fold_content_length(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(header::CONTENT_LENGTH).iter();
    let listed = fields
        .next()
        .is_some_and(|value| value.as_bytes().contains(&b','));
    if fields.next().is_none() && !listed {
        return;
    }
    let single = {
        let mut values = tokens(headers, &header::CONTENT_LENGTH);
        let first = values.next();
        first
            .filter(|first| values.all(|value| value == *first))
            .and_then(|length| HeaderValue::from_bytes(length).ok())
    };
    match single {
        Some(length) => {
            headers.insert(header::CONTENT_LENGTH, length);
        }
        None => {
            headers.remove(header::CONTENT_LENGTH);
        }
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
    pub(crate) connection: bool,
    pub(crate) expect: bool,
    pub(crate) x_forwarded_for: bool,
    pub(crate) traceparent: bool,
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
            } else if name == header::CONNECTION {
                &mut carried.connection
            } else if name == header::EXPECT {
                &mut carried.expect
            } else if *name == X_FORWARDED_FOR {
                &mut carried.x_forwarded_for
            } else if *name == TRACEPARENT {
                &mut carried.traceparent
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
/// over them. `Host` is not among them: hyper's client writes it from the URI (the
/// upstream's host, and its port unless the default) on HTTP/1.1 connections only, as over
/// HTTP/2 the authority travels in `:authority` alone (RFC 9113 §8.3.1) and servers refuse
/// a request carrying both (nginx: "client sent duplicate host header"). No `Debug`: a
/// route's extra header may carry a secret.
pub(crate) struct ProxyFields<'a> {
    forwarded_for: Option<HeaderValue>,
    forwarded_proto: HeaderValue,
    forwarded_host: Option<&'a HeaderValue>,
    extra: &'a [(HeaderName, HeaderValue)],
    trace: Propagation,
}

impl<'a> ProxyFields<'a> {
    /// `client` (the peer's IP as header text, none on a Unix socket) appended to the
    /// `X-Forwarded-For` in `client_headers` (`carried` says whether there is one); `proto`
    /// and `client_host`, the scheme and host the client used; then `extra`; and the trace
    /// context `trace`.
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
            forwarded_for,
            forwarded_proto: HeaderValue::from_static(proto),
            forwarded_host: client_host,
            extra,
            trace,
        }
    }

    /// Sets them in `headers` (the client's, hop-by-hop fields already gone), and removes
    /// the client's `Host`. Without a peer address the client's `X-Forwarded-For` passes as
    /// it is; its `X-Forwarded-Host` never does.
    pub fn apply(self, headers: &mut HeaderMap) {
        headers.remove(header::HOST);
        if let Some(forwarded_for) = self.forwarded_for {
            headers.insert(X_FORWARDED_FOR.clone(), forwarded_for);
        }
        headers.insert(X_FORWARDED_PROTO.clone(), self.forwarded_proto);
        // `insert` replaces whatever the client sent under the name.
        match self.forwarded_host {
            Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
        self.trace.apply(headers);
        for (name, value) in self.extra {
            headers.insert(name.clone(), value.clone());
        }
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
    fn content_length_lists_fold_into_one_field() {
        let mut list = headers(&[("content-length", "5, 5")]);
        fold_content_length(&mut list);
        assert_eq!(list.get_all("content-length").iter().count(), 1);
        assert_eq!(list["content-length"], "5");
        let mut twice = headers(&[("content-length", "5"), ("content-length", "5")]);
        fold_content_length(&mut twice);
        assert_eq!(twice.get_all("content-length").iter().count(), 1);
        let mut differing = headers(&[("content-length", "5, 6")]);
        fold_content_length(&mut differing);
        assert!(!differing.contains_key("content-length"));
        let mut plain = headers(&[("content-length", "7")]);
        fold_content_length(&mut plain);
        assert_eq!(plain["content-length"], "7");
    }

    #[test]
    fn te_without_trailers_is_dropped() {
        let mut map = headers(&[("te", "gzip")]);
        strip_hop_by_hop(&mut map);
        assert!(map.is_empty());
    }

    #[test]
    fn proxy_fields_append_the_client_and_replace_the_clients_own() {
        let client = headers(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "evil"),
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
        let mut applied = client.clone();
        ProxyFields::new(
            &client,
            Carried::by(&client),
            Some(&peer),
            "http",
            Some(&client_host),
            &extra,
            Propagation::AsReceived,
        )
        .apply(&mut applied);
        let mut sent: Vec<(&str, &str)> = applied
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        sent.sort_unstable();
        assert_eq!(
            sent,
            [
                ("accept", "*/*"),
                ("x-extra", "ours"),
                ("x-forwarded-for", "10.0.0.1, 127.0.0.1"),
                ("x-forwarded-host", "localhost:8080"),
                ("x-forwarded-proto", "http"),
            ],
            "no host: hyper's client sets it, on HTTP/1.1 only"
        );
    }

    #[test]
    fn without_a_peer_or_host_the_forwarded_fields_are_what_is_known() {
        let client = headers(&[("x-forwarded-for", "10.0.0.1"), ("x-forwarded-host", "evil")]);
        let mut applied = client.clone();
        ProxyFields::new(
            &client,
            Carried::by(&client),
            None,
            "https",
            None,
            &[],
            Propagation::AsReceived,
        )
        .apply(&mut applied);
        assert_eq!(
            applied["x-forwarded-for"], "10.0.0.1",
            "kept as the client sent it"
        );
        assert!(!applied.contains_key("x-forwarded-host"), "never passed through");
        assert_eq!(applied["x-forwarded-proto"], "https");
    }
}
