//! From flags to the typed configuration the program runs on. Every error names the flag
//! and the value that is wrong.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use url::Url;

use crate::cli::{CredentialArgs, ServeArgs};
use crate::proxy::Upstream;
use crate::token::{Endpoint, JwtProfileSource, KeyFileError, ServiceAccountKey};

/// The scopes ZITADEL's own SDKs ask for, so ZITADEL's APIs accept the token.
pub const DEFAULT_SCOPES: [&str; 2] = ["openid", "urn:zitadel:iam:org:project:id:zitadel:aud"];

/// A ZITADEL service-user credential, validated.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The service user's key.
    pub key: ServiceAccountKey,
    /// The issuer as given (discovery states the exact string used as `aud`).
    pub issuer: String,
    /// Token endpoint override.
    pub token_endpoint: Option<Url>,
    /// The scopes requested.
    pub scopes: Vec<String>,
}

impl Credential {
    /// The token source for this credential, using `http` for discovery and token requests.
    pub fn source(&self, http: reqwest::Client) -> JwtProfileSource {
        let endpoint = Endpoint::new(http, self.issuer.clone(), self.token_endpoint.clone());
        JwtProfileSource::new(self.key.clone(), endpoint, &self.scopes)
    }
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where requests go.
    pub upstream: Arc<Upstream>,
    /// The credential whose token is injected.
    pub credential: Credential,
    /// Extra headers for every upstream request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ServeArgs {
    /// Validates the flags; reads and checks the key file.
    pub fn validate(&self) -> Result<ServeConfig, ConfigError> {
        let upstream = Upstream::parse(&self.upstream)
            .map_err(|e| ConfigError::flag("--upstream", e.to_string()))?;
        let origin = Url::parse(&self.upstream)
            .map(|u| u.origin().ascii_serialization())
            .map_err(|e| ConfigError::flag("--upstream", e.to_string()))?;
        Ok(ServeConfig {
            listen: self.listen,
            upstream: Arc::new(upstream),
            credential: self.credential.validate(Some(&origin))?,
            headers: self
                .headers
                .iter()
                .map(|h| parse_header(h))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl CredentialArgs {
    /// Validates the credential flags; `default_issuer` stands in for a missing `--issuer`.
    pub fn validate(&self, default_issuer: Option<&str>) -> Result<Credential, ConfigError> {
        let issuer = match (&self.issuer, default_issuer) {
            (Some(issuer), _) => issuer.clone(),
            (None, Some(default)) => default.to_owned(),
            (None, None) => {
                return Err(ConfigError::flag(
                    "--issuer",
                    "is required (the URL of your ZITADEL instance)",
                ))
            }
        };
        let parsed = Url::parse(&issuer)
            .map_err(|e| ConfigError::flag("--issuer", format!("{issuer:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConfigError::flag(
                "--issuer",
                format!("{issuer:?} must be an http or https URL"),
            ));
        }
        let token_endpoint = self
            .token_endpoint
            .as_deref()
            .map(|url| {
                Url::parse(url).map_err(|e| {
                    ConfigError::flag("--token-endpoint", format!("{url:?} is not a URL: {e}"))
                })
            })
            .transpose()?;
        let mut scopes: Vec<String> = if self.scopes.is_empty() {
            DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect()
        } else {
            self.scopes
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect()
        };
        for id in self.project_ids.iter().filter(|id| !id.is_empty()) {
            scopes.push(format!("urn:zitadel:iam:org:project:id:{id}:aud"));
        }
        Ok(Credential {
            key: ServiceAccountKey::from_file(&self.key_file)?,
            issuer,
            token_endpoint,
            scopes,
        })
    }
}

/// Parses `Name: value`.
fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), ConfigError> {
    // Messages quote the name only: a header value may be a secret.
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| ConfigError::flag("--header", "expected 'Name: value'"))?;
    let fail = |reason: &str| ConfigError::flag("--header", format!("{:?}: {reason}", name.trim()));
    let name =
        HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| fail("invalid header name"))?;
    if name == http::header::AUTHORIZATION || name == http::header::HOST {
        return Err(fail("mintproxy sets this header itself"));
    }
    let value = HeaderValue::from_str(value.trim()).map_err(|_| fail("invalid header value"))?;
    Ok((name, value))
}

/// Configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag's value is wrong.
    #[error("{flag}: {reason}")]
    Flag {
        /// The flag, e.g. `--upstream`.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The key file cannot be used.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
}

impl ConfigError {
    fn flag(flag: &'static str, reason: impl Into<String>) -> Self {
        Self::Flag {
            flag,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_need_a_name_and_a_value() {
        let (name, value) = parse_header("x-zitadel-orgid: 1234").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("x-zitadel-orgid", "1234")
        );
        assert_eq!(
            parse_header("x-zitadel-orgid").unwrap_err().to_string(),
            "--header: expected 'Name: value'"
        );
        assert_eq!(
            parse_header("Authorization: Bearer x")
                .unwrap_err()
                .to_string(),
            "--header: \"Authorization\": mintproxy sets this header itself"
        );
        assert!(parse_header("bad name: x").is_err());
    }
}
