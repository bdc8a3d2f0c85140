//! The pinned upstream: where every request of a route goes, whatever the client asked.

use http::uri::{Authority, Parts, PathAndQuery, Scheme};
use http::Uri;

/// A parsed upstream URL (`http` or `https`, optional base path).
#[derive(Debug, Clone)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    base_path: String,
}

/// An upstream URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("upstream {url:?}: {reason}")]
pub struct UpstreamError {
    url: String,
    reason: &'static str,
}

impl Upstream {
    /// Parses `http://host[:port][/base]` or `https://...`.
    pub fn parse(url: &str) -> Result<Self, UpstreamError> {
        let fail = |reason| UpstreamError {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| fail("not a URL"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| fail("needs a scheme (http:// or https://)"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(fail("the scheme must be http or https"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| fail("needs a host"))?;
        if authority.as_str().contains('@') {
            return Err(fail("credentials in the URL are not supported"));
        }
        if uri.query().is_some() {
            return Err(fail("a query string is not supported in the upstream URL"));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            scheme,
            authority,
            base_path,
        })
    }

    /// The URI to send to: the upstream's origin and base path, then `target` (a path and
    /// query taken from the client's request). Only the path and query of the client's
    /// target are ever used, so an absolute-form target cannot send traffic elsewhere.
    pub fn uri_for(&self, target: PathAndQuery) -> Uri {
        let path_and_query = if self.base_path.is_empty() {
            target
        } else {
            PathAndQuery::try_from(format!("{}{}", self.base_path, target))
                .expect("a valid path and query stays valid behind a valid base path")
        };
        let mut parts = Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).expect("scheme, authority and path were each validated")
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// Host and port, as given.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// `scheme://authority`: the default issuer when flags name one upstream.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// If `location` points at this upstream, the same place seen through the proxy
    /// (path relative to `proxy_origin`); otherwise `None`.
    pub fn rewrite_location(&self, location: &str, proxy_origin: &str) -> Option<String> {
        let uri: Uri = location.parse().ok()?;
        if uri.scheme() != Some(&self.scheme) || !self.same_authority(uri.authority()?) {
            return None;
        }
        let path = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let rest = path.strip_prefix(self.base_path.as_str())?;
        let rest = match rest.chars().next() {
            None => "/",
            Some('/' | '?') => rest,
            Some(_) => return None,
        };
        Some(format!("{proxy_origin}{rest}"))
    }

    fn same_authority(&self, other: &Authority) -> bool {
        let default_port = default_port(&self.scheme);
        self.authority.host().eq_ignore_ascii_case(other.host())
            && self.authority.port_u16().unwrap_or(default_port) == other.port_u16().unwrap_or(default_port)
    }
}

fn default_port(scheme: &Scheme) -> u16 {
    if *scheme == Scheme::HTTPS {
        443
    } else {
        80
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_path_and_query_behind_the_base_path() {
        let upstream = Upstream::parse("https://zitadel.example:8443/api/").unwrap();
        assert_eq!(
            upstream
                .uri_for(PathAndQuery::from_static("/v2/users?limit=5"))
                .to_string(),
            "https://zitadel.example:8443/api/v2/users?limit=5"
        );
        let root = Upstream::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            root.uri_for(PathAndQuery::from_static("/")).to_string(),
            "http://127.0.0.1:9000/"
        );
        assert_eq!(upstream.origin(), "https://zitadel.example:8443");
    }

    #[test]
    fn refuses_unusable_urls() {
        for (url, reason) in [
            ("zitadel.example", "needs a scheme (http:// or https://)"),
            ("ftp://zitadel.example", "the scheme must be http or https"),
            (
                "https://user:pw@zitadel.example",
                "credentials in the URL are not supported",
            ),
            (
                "https://zitadel.example/?a=b",
                "a query string is not supported in the upstream URL",
            ),
        ] {
            assert_eq!(Upstream::parse(url).unwrap_err().reason, reason, "{url}");
        }
    }

    #[test]
    fn rewrites_only_locations_on_the_upstream() {
        let upstream = Upstream::parse("https://zitadel.example/api").unwrap();
        let proxy = "http://127.0.0.1:8080";
        let rewrite = |l| upstream.rewrite_location(l, proxy);
        assert_eq!(
            rewrite("https://zitadel.example/api/ui?x=1").as_deref(),
            Some("http://127.0.0.1:8080/ui?x=1")
        );
        assert_eq!(
            rewrite("https://ZITADEL.example:443/api").as_deref(),
            Some("http://127.0.0.1:8080/")
        );
        assert_eq!(rewrite("https://zitadel.example/apix"), None);
        assert_eq!(rewrite("https://other.example/api/ui"), None);
        assert_eq!(rewrite("http://zitadel.example/api/ui"), None);
        assert_eq!(rewrite("/relative"), None);
    }
}
