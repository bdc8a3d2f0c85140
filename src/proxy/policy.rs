//! Per-route allowlists: which methods and paths a route forwards. Refusals never reach
//! the upstream.

use http::{HeaderMap, Method};

/// Fields that ask an upstream to treat a request as another method (Rails, Spring, many
/// API gateways honour them): while a route lists methods, they must name one of those.
const METHOD_OVERRIDES: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

/// The allowlists of one route. Empty lists allow everything.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    methods: Vec<Method>,
    allow_paths: Vec<String>,
    deny_paths: Vec<String>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The method is not in `allow_methods`.
    #[error("method {0} is not allowed on this route")]
    Method(Method),
    /// The path is under a `deny_paths` prefix, or under no `allow_paths` prefix.
    #[error("path {0} is not allowed on this route")]
    Path(String),
    /// The `Host` is not an accepted name (DNS rebinding).
    #[error("host {0} is not accepted here; add it with --allow-host if it is yours")]
    Host(String),
    /// A browser request from another site (CSRF).
    #[error("cross-site browser request refused ({0})")]
    CrossSite(String),
}

impl Policy {
    /// A policy from its lists; path prefixes match whole segments (`/admin/` covers
    /// `/admin` and `/admin/x`, not `/administrator`).
    pub fn new(methods: Vec<Method>, allow_paths: Vec<String>, deny_paths: Vec<String>) -> Self {
        let trim = |paths: Vec<String>| {
            paths
                .into_iter()
                .map(|p| p.trim_end_matches('/').to_owned())
                .collect()
        };
        Self {
            methods,
            allow_paths: trim(allow_paths),
            deny_paths: trim(deny_paths),
        }
    }

    /// Checks a request's method (and the methods its `headers` ask the upstream to use
    /// instead) and its path (as the upstream will see it, without query).
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        if !self.methods.is_empty() {
            if !self.methods.contains(method) {
                return Err(Refusal::Method(method.clone()));
            }
            for value in METHOD_OVERRIDES.iter().flat_map(|name| headers.get_all(*name)) {
                match Method::from_bytes(value.as_bytes()) {
                    Ok(asked) if self.methods.contains(&asked) => {}
                    Ok(asked) => return Err(Refusal::Method(asked)),
                    Err(_) => return Err(Refusal::Method(method.clone())),
                }
            }
        }
        if !self.has_path_rules() {
            return Ok(());
        }
        let under = |prefix: &String| under_prefix(path, prefix);
        if self.deny_paths.iter().any(under)
            || (!self.allow_paths.is_empty() && !self.allow_paths.iter().any(under))
        {
            return Err(Refusal::Path(path.to_owned()));
        }
        Ok(())
    }
}

impl Policy {
    /// Whether paths are listed: then requests are checked and forwarded with their path
    /// normalized ([`super::normalize`]).
    pub fn has_path_rules(&self) -> bool {
        !self.allow_paths.is_empty() || !self.deny_paths.is_empty()
    }
}

/// `path` is `prefix` or below it, segment-wise; the empty prefix covers everything.
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Policy {
        fn check_plain(&self, method: &Method, path: &str) -> Result<(), Refusal> {
            self.check(method, path, &HeaderMap::new())
        }
    }

    #[test]
    fn method_overrides_must_name_an_allowed_method() {
        let get_only = policy(&["GET"], &[], &[]);
        let with = |name: &'static str, value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(name, http::HeaderValue::from_static(value));
            headers
        };
        for name in METHOD_OVERRIDES {
            assert_eq!(
                get_only.check(&Method::GET, "/x", &with(name, "DELETE")),
                Err(Refusal::Method(Method::DELETE)),
                "{name}"
            );
            assert_eq!(get_only.check(&Method::GET, "/x", &with(name, "GET")), Ok(()));
        }
        let open = policy(&[], &[], &[]);
        assert_eq!(
            open.check(&Method::GET, "/x", &with("x-http-method-override", "DELETE")),
            Ok(()),
            "without method rules the upstream decides"
        );
    }

    fn policy(methods: &[&str], allow: &[&str], deny: &[&str]) -> Policy {
        let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        Policy::new(
            methods.iter().map(|m| m.parse().unwrap()).collect(),
            strings(allow),
            strings(deny),
        )
    }

    #[test]
    fn empty_policy_allows_everything() {
        assert_eq!(
            policy(&[], &[], &[]).check_plain(&Method::DELETE, "/a/../b"),
            Ok(())
        );
    }

    #[test]
    fn methods_are_allowlisted() {
        let get_only = policy(&["GET"], &[], &[]);
        assert_eq!(get_only.check_plain(&Method::GET, "/x"), Ok(()));
        assert_eq!(
            get_only.check_plain(&Method::POST, "/x"),
            Err(Refusal::Method(Method::POST))
        );
    }

    #[test]
    fn paths_match_whole_segments_and_deny_wins() {
        let p = policy(&[], &["/management/v1/"], &["/management/v1/iam/"]);
        assert_eq!(p.check_plain(&Method::GET, "/management/v1"), Ok(()));
        assert_eq!(p.check_plain(&Method::GET, "/management/v1/users"), Ok(()));
        assert!(p.check_plain(&Method::GET, "/management/v1x").is_err());
        assert!(p.check_plain(&Method::GET, "/management/v1/iam").is_err());
        assert!(p.check_plain(&Method::GET, "/management/v1/iam/members").is_err());
        assert!(p.check_plain(&Method::GET, "/admin/v1").is_err());
    }
}
