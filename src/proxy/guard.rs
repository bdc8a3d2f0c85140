//! The proxy's own door against browsers: a web page can make a browser send requests to
//! `127.0.0.1`, so a request must name an accepted host (which stops DNS rebinding) and
//! must not come cross-site (which stops CSRF).

use std::net::SocketAddr;

use http::{header, HeaderMap, Uri};

use super::error::{Malformed, ProxyError};
use super::policy::Refusal;

const SEC_FETCH_SITE: header::HeaderName = header::HeaderName::from_static("sec-fetch-site");

/// Accepted host names: the loopback names on the listen port, plus `--allow-host`.
#[derive(Debug, Clone)]
pub struct HostGuard {
    /// (lowercase host, port; `None`: any port)
    names: Vec<(String, Option<u16>)>,
    /// `host:port` of each name with a port: matched byte for byte first.
    exact: Vec<String>,
    any: bool,
}

impl HostGuard {
    /// The loopback names (and the listen address itself, when specific) on the bound
    /// port (any port on a Unix socket, `bound` = `None`), plus `extra` names (`name` for
    /// any port, `name:port`, or `*` for any host).
    pub fn new(bound: Option<SocketAddr>, extra: &[String]) -> Self {
        let port = bound.map(|b| b.port());
        let mut names: Vec<(String, Option<u16>)> = ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .map(|name| ((*name).to_owned(), port))
            .collect();
        if let Some(bound) = bound.filter(|b| !b.ip().is_unspecified() && !b.ip().is_loopback()) {
            let ip = match bound {
                SocketAddr::V4(v4) => v4.ip().to_string(),
                SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
            };
            names.push((ip, port));
        }
        let mut any = false;
        for name in extra.iter().map(|n| n.trim().to_ascii_lowercase()) {
            if name == "*" {
                any = true;
            } else if let Some((host, port)) = split_host_port(&name) {
                names.push((host.to_owned(), port));
            }
        }
        let exact = names
            .iter()
            .filter_map(|(name, port)| port.map(|port| format!("{name}:{port}")))
            .collect();
        Self { names, exact, any }
    }

    /// Refuses a foreign `Host` (or HTTP/2 `:authority`), a cross-site fetch, and an
    /// `Origin` that is not an accepted host (403); and two `Host` fields, or one that
    /// disagrees with an absolute-form target or `:authority` (400).
    pub fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), ProxyError> {
        // One pass over the few fields a request has costs less than three lookups.
        let (mut host, mut site, mut origin) = (None, None, None);
        for (name, value) in headers {
            let seen = if name == header::HOST {
                if host.is_some() {
                    return Err(Malformed::DuplicateHost.into());
                }
                &mut host
            } else if name == header::ORIGIN {
                &mut origin
            } else if name == SEC_FETCH_SITE {
                &mut site
            } else {
                continue;
            };
            seen.get_or_insert(value);
        }
        if let (Some(authority), Some(host)) = (uri.authority(), host) {
            if !authority
                .as_str()
                .as_bytes()
                .eq_ignore_ascii_case(host.as_bytes())
            {
                return Err(Malformed::HostMismatch.into());
            }
        }
        let host = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| host.and_then(|h| h.to_str().ok()))
            .ok_or_else(|| Refusal::Host("(none)".to_owned()))?;
        if !self.accepts(host, 80) {
            return Err(Refusal::Host(host.to_owned()).into());
        }
        if site.is_some_and(|site| site == "cross-site") {
            return Err(Refusal::CrossSite("Sec-Fetch-Site: cross-site".to_owned()).into());
        }
        if let Some(origin) = origin {
            let text = origin.to_str().unwrap_or("(not text)");
            let accepted = origin_authority(text)
                .is_some_and(|(authority, default_port)| self.accepts(authority, default_port));
            if !accepted {
                return Err(Refusal::CrossSite(format!("Origin: {text}")).into());
            }
        }
        Ok(())
    }

    fn accepts(&self, authority: &str, default_port: u16) -> bool {
        if self.any {
            return true;
        }
        // What clients send nearly always: one of the names, as stored, with its port.
        if self.exact.iter().any(|exact| exact == authority) {
            return true;
        }
        // Names are stored lowercase; compare without allocating on every request.
        let Some((host, port)) = split_host_port(authority) else {
            return false;
        };
        let port = port.unwrap_or(default_port);
        self.names
            .iter()
            .any(|(name, allowed)| name.eq_ignore_ascii_case(host) && allowed.is_none_or(|p| p == port))
    }
}

/// `host[:port]`, `[v6][:port]` -> (host, port). `None` when the port is not a number.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let port_at = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => i,
        _ => return Some((authority, None)),
    };
    let port = authority[port_at + 1..].parse().ok()?;
    Some((&authority[..port_at], Some(port)))
}

/// `http://host:port` -> (`host:port`, default port of the scheme).
fn origin_authority(origin: &str) -> Option<(&str, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    Some((rest.trim_end_matches('/'), default_port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn check(guard: &HostGuard, pairs: &[(&str, &str)]) -> Result<(), Refusal> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        guard
            .check(&Uri::from_static("/"), &headers)
            .map_err(|error| match error {
                ProxyError::Forbidden(refusal) => refusal,
                other => panic!("not a refusal: {other}"),
            })
    }

    #[test]
    fn two_hosts_or_a_host_against_the_authority_are_malformed() {
        let guard = HostGuard::new(Some("127.0.0.1:8080".parse().unwrap()), &[]);
        let mut headers = HeaderMap::new();
        headers.append(header::HOST, HeaderValue::from_static("localhost:8080"));
        headers.append(header::HOST, HeaderValue::from_static("evil.example"));
        let malformed = |result| matches!(result, Err(ProxyError::Malformed(_)));
        assert!(malformed(guard.check(&Uri::from_static("/"), &headers)));
        let mut one = HeaderMap::new();
        one.insert(header::HOST, HeaderValue::from_static("evil.example"));
        let absolute = Uri::from_static("http://localhost:8080/x");
        assert!(malformed(guard.check(&absolute, &one)));
        one.insert(header::HOST, HeaderValue::from_static("LOCALHOST:8080"));
        assert!(
            guard.check(&absolute, &one).is_ok(),
            "the same authority, any case"
        );
    }

    #[test]
    fn loopback_names_on_the_listen_port_are_accepted() {
        let guard = HostGuard::new(Some("127.0.0.1:8080".parse().unwrap()), &[]);
        for host in ["localhost:8080", "127.0.0.1:8080", "[::1]:8080", "LOCALHOST:8080"] {
            assert_eq!(check(&guard, &[("host", host)]), Ok(()), "{host}");
        }
        for host in [
            "evil.example:8080",
            "localhost:9090",
            "localhost",
            "127.0.0.1.nip.io:8080",
        ] {
            assert!(
                matches!(check(&guard, &[("host", host)]), Err(Refusal::Host(_))),
                "{host}"
            );
        }
        assert!(check(&guard, &[]).is_err(), "a missing Host is refused");
    }

    #[test]
    fn allowed_hosts_add_names() {
        let extra = ["proxy.internal".to_owned(), "gw.example:443".to_owned()];
        let guard = HostGuard::new(Some("0.0.0.0:8080".parse().unwrap()), &extra);
        assert_eq!(check(&guard, &[("host", "proxy.internal:1234")]), Ok(()));
        assert_eq!(check(&guard, &[("host", "gw.example:443")]), Ok(()));
        assert!(check(&guard, &[("host", "gw.example:80")]).is_err());
        let any = HostGuard::new(Some("0.0.0.0:8080".parse().unwrap()), &["*".to_owned()]);
        assert_eq!(check(&any, &[("host", "whatever:1")]), Ok(()));
    }

    #[test]
    fn cross_site_browser_requests_are_refused() {
        let guard = HostGuard::new(Some("127.0.0.1:8080".parse().unwrap()), &[]);
        let host = ("host", "localhost:8080");
        assert_eq!(
            check(&guard, &[host, ("origin", "http://localhost:8080")]),
            Ok(())
        );
        assert_eq!(check(&guard, &[host, ("sec-fetch-site", "same-origin")]), Ok(()));
        for refused in [
            ("origin", "https://evil.example"),
            ("origin", "null"),
            ("origin", "http://localhost:3000"),
            ("sec-fetch-site", "cross-site"),
        ] {
            assert!(
                matches!(check(&guard, &[host, refused]), Err(Refusal::CrossSite(_))),
                "{refused:?}"
            );
        }
    }
}
