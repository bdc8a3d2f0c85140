//! The configuration as written: the TOML file's shape (unknown keys are errors), and the
//! same shape built from flags, so both go through one validation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use crate::cli::{CredentialArgs, ProxyArgs};

/// The name of the single credential and route that flags describe.
pub const FLAGS_NAME: &str = "default";

/// The config file's top level.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `listen = "127.0.0.1:8080"`.
    pub listen: Option<String>,
    /// `allow_remote = true`: accept a non-loopback `listen`.
    #[serde(default)]
    pub allow_remote: bool,
    /// `allow_hosts = ["proxy.internal"]`: more accepted Host names.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// `[credentials.NAME]` tables.
    #[serde(default)]
    pub credentials: BTreeMap<String, RawCredential>,
    /// `[[routes]]` tables.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// `otlp_endpoint = "http://127.0.0.1:4318"`: export spans there.
    pub otlp_endpoint: Option<String>,
}

/// One `[credentials.NAME]` table; its kind follows from the fields given.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    /// ZITADEL service user key file (JWT profile grant).
    pub key_file: Option<PathBuf>,
    /// Client id (client credentials grant).
    pub client_id: Option<String>,
    /// File holding the client secret.
    pub client_secret_file: Option<PathBuf>,
    /// ZITADEL application key file (`private_key_jwt`).
    pub client_key_file: Option<PathBuf>,
    /// File holding a ready token.
    pub token_file: Option<PathBuf>,
    /// The issuer URL.
    pub issuer: Option<String>,
    /// Scopes, replacing the default.
    pub scopes: Option<Vec<String>>,
    /// Project ids whose audience scope is added.
    #[serde(default)]
    pub project_ids: Vec<String>,
    /// Token endpoint, skipping discovery.
    pub token_endpoint: Option<String>,
    /// `token_params = { audience = "..." }`: more form fields for every token request,
    /// in name order (from flags, in the order given).
    #[serde(default, deserialize_with = "table_of_strings")]
    pub token_params: Vec<(String, String)>,
}

/// A TOML table of strings as (name, value) pairs, in name order.
fn table_of_strings<'de, D: serde::Deserializer<'de>>(table: D) -> Result<Vec<(String, String)>, D::Error> {
    Ok(BTreeMap::<String, String>::deserialize(table)?
        .into_iter()
        .collect())
}

/// One `[[routes]]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Path prefix this route serves.
    pub prefix: String,
    /// Remove the prefix before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Upstream URL.
    pub upstream: String,
    /// Name of the credential whose token is added.
    pub credential: Option<String>,
    /// Instead of `credential`: exchange the caller's token (RFC 8693).
    pub exchange: Option<RawExchange>,
    /// Extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Only these methods.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// Only paths under these prefixes.
    #[serde(default)]
    pub allow_paths: Vec<String>,
    /// Never paths under these prefixes.
    #[serde(default)]
    pub deny_paths: Vec<String>,
    /// HTTP/2 with prior knowledge (h2c) to a plaintext upstream, e.g. a gRPC server.
    #[serde(default)]
    pub http2: bool,
}

/// A route's `exchange = { credential = "NAME", audience = "...", scope = ["..."] }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExchange {
    /// The credential that authenticates the exchange as a client.
    pub credential: String,
    /// The `audience` asked for.
    pub audience: Option<String>,
    /// The scopes asked for; none: the issuer decides (ZITADEL: the subject token's).
    #[serde(default)]
    pub scope: Vec<String>,
}

impl RawConfig {
    /// Reads a config file. Errors give the line and column, not the text around it.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&file, format!("cannot read it: {e}")))?;
        Self::parse(&text, &file)
    }

    /// Parses config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or_default();
            ConfigError::new(format!("{file}{at}"), without_value(e.message().trim_end()))
        })
    }
}

/// serde quotes the offending value ("invalid type: string \"s3cret\", expected ..."),
/// and a header value may be a secret: keep the kind, drop the value.
fn without_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let kind = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_end_matches(',');
            let expected = rest.split_once(", expected").map_or("", |(_, e)| e);
            return format!("{prefix}{kind}, expected{expected}");
        }
    }
    message.to_owned()
}

/// `:line:column` of a byte offset.
fn line_column(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!(":{line}:{column}")
}

impl CredentialArgs {
    /// The credential flags as a config-file credential.
    pub fn to_raw(&self) -> RawCredential {
        RawCredential {
            key_file: self.key_file.clone(),
            client_id: self.client_id.clone(),
            client_secret_file: self.client_secret_file.clone(),
            client_key_file: self.client_key_file.clone(),
            token_file: self.token_file.clone(),
            issuer: self.issuer.clone(),
            scopes: (!self.scopes.is_empty()).then(|| self.scopes.clone()),
            project_ids: self.project_ids.clone(),
            token_endpoint: self.token_endpoint.clone(),
            token_params: self.token_params.clone(),
        }
    }
}

impl ProxyArgs {
    /// The single-upstream flags as a config with one credential and one route at `/`.
    pub fn to_raw(&self) -> Result<RawConfig, ConfigError> {
        let upstream = self
            .upstream
            .clone()
            .ok_or_else(|| ConfigError::new("--upstream", "is required (or --config with routes)"))?;
        let mut headers = BTreeMap::new();
        for header in &self.headers {
            // Only the name is ever quoted: a header value may be a secret.
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| ConfigError::new("--header", "expected 'Name: value'"))?;
            headers.insert(name.trim().to_owned(), value.trim().to_owned());
        }
        Ok(RawConfig {
            listen: None,
            allow_remote: false,
            allow_hosts: Vec::new(),
            credentials: BTreeMap::from([(FLAGS_NAME.to_owned(), self.credential.to_raw())]),
            routes: vec![RawRoute {
                prefix: "/".to_owned(),
                strip_prefix: false,
                upstream,
                credential: Some(FLAGS_NAME.to_owned()),
                exchange: None,
                headers,
                allow_methods: self.policy.allow_methods.clone(),
                allow_paths: self.policy.allow_paths.clone(),
                deny_paths: self.policy.deny_paths.clone(),
                http2: self.upstream_http2,
            }],
            otlp_endpoint: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors_with_their_position() {
        let dir = tempdir();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:8080\"\n[[routes]]\nprefx = \"/\"\n").unwrap();
        let error = RawConfig::from_file(&path).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{}:3:1: unknown field `prefx`", path.display())),
            "{error}"
        );
    }

    #[test]
    fn type_errors_do_not_quote_the_value() {
        let error =
            RawConfig::parse("[[routes]]\nheaders = { x-api-key = 12345678 }\n", "f.toml").unwrap_err();
        assert_eq!(
            error.to_string(),
            "f.toml:2:25: invalid type: integer, expected a string"
        );
        let error = RawConfig::parse("allow_remote = \"s3cret\"\n", "f.toml").unwrap_err();
        assert_eq!(
            error.to_string(),
            "f.toml:1:16: invalid type: string, expected a boolean"
        );
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mintproxy-raw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
