//! The token endpoint: OIDC discovery, the token request, and what its errors mean.
//!
//! The HTTP client follows no redirects and ignores `HTTPS_PROXY`-style variables, so a
//! grant carrying an assertion or a client secret only ever goes where it was configured.

use std::fmt;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::OnceCell;
use url::Url;

use super::{Scope, ScopeSource, Token};
use crate::chain::Chain;
use crate::secret::AccessToken;

/// How long connecting to the token endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one discovery or token request may take in all.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the HTTP client for discovery and token requests.
pub fn http_client(tls: rustls::ClientConfig) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("mintproxy/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// An issuer's token endpoint, found by discovery unless given.
#[derive(Debug)]
pub struct Endpoint {
    client: reqwest::Client,
    issuer: String,
    token_endpoint: Option<Url>,
    /// The credential's own parameters (`token_params`), sent with every grant.
    params: Vec<(String, String)>,
    resolved: OnceCell<Resolved>,
    /// Makes a span of each request, when spans are exported.
    tracer: Option<crate::trace::Tracer>,
}

/// The issuer string to put in `aud`, and where to send token requests.
#[derive(Debug, Clone)]
struct Resolved {
    issuer: String,
    token_endpoint: Url,
}

impl Endpoint {
    /// An endpoint for `issuer`; `token_endpoint` skips discovery.
    pub fn new(client: reqwest::Client, issuer: impl Into<String>, token_endpoint: Option<Url>) -> Self {
        Self {
            client,
            issuer: issuer.into(),
            token_endpoint,
            params: Vec::new(),
            resolved: OnceCell::new(),
            tracer: None,
        }
    }

    /// Sends `params` (a credential's `token_params`: `audience`, `resource`, ...) with
    /// every grant, after the grant's own fields.
    pub fn with_params(mut self, params: Vec<(String, String)>) -> Self {
        self.params = params;
        self
    }

    /// Puts each request in a CLIENT span made by `tracer`, when given.
    pub fn traced_by(mut self, tracer: Option<crate::trace::Tracer>) -> Self {
        self.tracer = tracer;
        self
    }

    /// Sends `request` (to `url`), in a span of its own when spans are exported; the
    /// request then carries the span's `traceparent`, so the issuer's spans join it.
    async fn send(
        &self,
        method: http::Method,
        url: &Url,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let Some(tracer) = &self.tracer else {
            return request.send().await;
        };
        let span = tracer.client_span(&method, url);
        let sent = request
            .header(crate::trace::TRACEPARENT.clone(), span.traceparent())
            .send()
            .await;
        span.end(match &sent {
            Ok(response) => Ok(response.status()),
            Err(error) if error.is_timeout() => Err("timeout"),
            Err(error) if error.is_connect() => Err("connect"),
            Err(_) => Err("transport"),
        });
        sent
    }

    /// The issuer exactly as discovery states it: the `aud` of an assertion.
    pub async fn issuer(&self) -> Result<&str, TokenError> {
        Ok(&self.resolve().await?.issuer)
    }

    async fn resolve(&self) -> Result<&Resolved, TokenError> {
        self.resolved
            .get_or_try_init(|| async {
                match &self.token_endpoint {
                    Some(url) => Ok(Resolved {
                        issuer: self.issuer.clone(),
                        token_endpoint: url.clone(),
                    }),
                    None => self.discover().await,
                }
            })
            .await
    }

    async fn discover(&self) -> Result<Resolved, TokenError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let fail = |reason: Reason| TokenError::Discovery {
            url: url.clone(),
            reason,
        };
        let parsed = Url::parse(&url).map_err(|e| fail(format!("not a URL: {e}").into()))?;
        let response = self
            .send(http::Method::GET, &parsed, self.client.get(parsed.clone()))
            .await
            .map_err(|e| fail(Reason::of(&e, url.to_ascii_lowercase().starts_with("https:"))))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("status {status}").into()));
        }
        let document: Value = response
            .json()
            .await
            .map_err(|_| fail("the answer is not JSON".into()))?;
        let text = |field: &str| document.get(field).and_then(Value::as_str).map(str::to_owned);
        let issuer = text("issuer").ok_or_else(|| fail("no `issuer` in the document".into()))?;
        let token_endpoint = text("token_endpoint")
            .ok_or_else(|| fail("no `token_endpoint` in the document".into()))?
            .parse::<Url>()
            .map_err(|e| fail(format!("`token_endpoint` is not a URL: {e}").into()))?;
        tracing::debug!(%issuer, %token_endpoint, "discovered the token endpoint");
        Ok(Resolved {
            issuer,
            token_endpoint,
        })
    }

    /// POSTs a grant (form fields, then the credential's parameters), with
    /// `authorization` (client authentication) when given, and reads the token response:
    /// the one place a token request is made.
    pub async fn request(
        &self,
        form: &[(&str, &str)],
        authorization: Option<http::HeaderValue>,
    ) -> Result<Token, TokenError> {
        let url = &self.resolve().await?.token_endpoint;
        let params = self
            .params
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()));
        let fields: Vec<(&str, &str)> = form.iter().copied().chain(params).collect();
        let mut request = self
            .client
            .post(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .form(&fields);
        if let Some(authorization) = authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        let response =
            self.send(http::Method::POST, url, request)
                .await
                .map_err(|e| TokenError::Transport {
                    url: url.to_string(),
                    reason: Reason::of(&e, url.scheme() == "https"),
                })?;
        let status = response.status();
        let body: Option<Value> = response.json().await.ok();
        if !status.is_success() {
            let field = |name| body.as_ref()?.get(name)?.as_str().map(str::to_owned);
            return Err(TokenError::Rejected {
                url: url.to_string(),
                status: status.as_u16(),
                error: field("error").unwrap_or_else(|| "unexpected_response".to_owned()),
                description: field("error_description"),
            });
        }
        let mut token = parse_token(body.as_ref()).map_err(|reason| TokenError::Unusable {
            url: url.to_string(),
            reason,
        })?;
        if token.scope.is_none() {
            token.scope = form
                .iter()
                .find(|(name, value)| *name == "scope" && !value.is_empty())
                .map(|(_, requested)| Scope {
                    list: (*requested).to_owned(),
                    source: ScopeSource::Requested,
                });
        }
        Ok(token)
    }
}

/// Reads `{access_token, token_type, expires_in, scope}`. The reason for a refusal quotes
/// no value but `expires_in`'s, which is no secret.
fn parse_token(body: Option<&Value>) -> Result<Token, String> {
    let body = body.ok_or("the answer is not JSON")?;
    let access_token = body
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("no `access_token`")?;
    if http::HeaderValue::from_str(access_token).is_err() {
        return Err("`access_token` holds characters a header cannot carry".into());
    }
    match body.get("token_type").and_then(Value::as_str) {
        Some(kind) if kind.eq_ignore_ascii_case("bearer") => {}
        _ => return Err("`token_type` is not Bearer".into()),
    }
    let expires_in = body
        .get("expires_in")
        .ok_or("no `expires_in`: mintproxy does not guess a token's lifetime")?;
    Ok(Token {
        access_token: AccessToken::new(access_token),
        lifetime: Some(lifetime(expires_in)?),
        scope: body.get("scope").and_then(Value::as_str).map(|granted| Scope {
            list: granted.to_owned(),
            source: ScopeSource::Granted,
        }),
    })
}

/// A year: the longest lifetime taken as given; a longer one is cut to it (refreshing
/// early is harmless).
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Longer than this, `expires_in` is taken for garbage, not a lifetime.
const ABSURD_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `expires_in` as a lifetime: a positive whole number of seconds, as a JSON integer or a
/// string holding one (as some providers send).
fn lifetime(expires_in: &Value) -> Result<Duration, String> {
    let seconds = match expires_in {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    let refuse = |why: &str| {
        // Cut short: the value goes into logs and error bodies.
        let mut quoted = expires_in.to_string();
        if let Some((end, _)) = quoted.char_indices().nth(40) {
            quoted.truncate(end);
            quoted.push('…');
        }
        format!("`expires_in` is {quoted}: {why}")
    };
    match seconds.filter(|&s| s > 0).map(Duration::from_secs) {
        None => Err(refuse("not a positive whole number of seconds")),
        Some(lifetime) if lifetime > ABSURD_LIFETIME => Err(refuse("more than 10 years")),
        Some(lifetime) => Ok(lifetime.min(MAX_LIFETIME)),
    }
}

/// Why an issuer could not be reached or read: what happened, and the likely cause when
/// the failure tells it.
#[derive(Debug, Clone)]
pub struct Reason {
    text: String,
    likely: Option<&'static str>,
}

impl Reason {
    /// A failed exchange: the error and its causes on one line, and what they point to.
    fn of(error: &reqwest::Error, https: bool) -> Self {
        Self {
            text: Chain(error).to_string(),
            likely: likely_cause(error, https),
        }
    }
}

/// A reason with no likely cause to name (the issuer answered, but not usefully).
impl From<String> for Reason {
    fn from(text: String) -> Self {
        Self { text, likely: None }
    }
}

impl From<&str> for Reason {
    fn from(text: &str) -> Self {
        text.to_owned().into()
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What a failed exchange with an issuer most likely means, read from the errors behind it
/// (the error text alone, `received corrupt message of type InvalidContentType`, leaves a
/// user guessing). `https`: whether the URL said TLS.
fn likely_cause(error: &reqwest::Error, https: bool) -> Option<&'static str> {
    if error.is_timeout() {
        return Some(
            "no answer in time: a firewall dropping packets, a wrong address or port, or an issuer too slow to answer",
        );
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if let Some(likely) = recognise(error, https) {
            return Some(likely);
        }
        // An io::Error's source() skips the error it wraps (a TLS error, say): look inside.
        cause = match error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner),
            None => error.source(),
        };
    }
    None
}

/// The likely cause one error in the chain points to, if any.
fn recognise(error: &(dyn std::error::Error + 'static), https: bool) -> Option<&'static str> {
    use rustls::{CertificateError, InvalidMessage};
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return match tls {
            // The first byte back was no TLS record: most likely `HTTP/1.1 400 ...`.
            rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType) if https => Some(
                "scheme mismatch: the server answered in plain HTTP, not TLS; write its URL with http:// (or use its TLS port)",
            ),
            rustls::Error::InvalidCertificate(certificate) => Some(match certificate {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    "certificate problem: the server's certificate is not signed by a trusted CA (self-signed?); pass that CA, or the certificate itself, with --upstream-ca"
                }
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                    "certificate problem: the certificate is for another name than the URL's host; use the name it was issued for"
                }
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => {
                    "certificate problem: the certificate has expired or is not valid yet (or this machine's clock is wrong)"
                }
                _ => "certificate problem: the server's certificate was refused (see the error); --upstream-ca adds a CA",
            }),
            _ => None,
        };
    }
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::ConnectionRefused {
            return Some(
                "connection refused: nothing listens at that host and port; check the port in the URL and that the issuer runs",
            );
        }
    }
    // TLS bytes where an HTTP response should be.
    if !https
        && error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse)
    {
        return Some(
            "scheme mismatch: the server did not answer in plain HTTP (it may speak TLS); write its URL with https://",
        );
    }
    // hyper-util's resolver failure; its error type is private, its message is not.
    if error.to_string() == "dns error" {
        return Some(
            "DNS: the host name in the URL does not resolve; check its spelling and this machine's DNS",
        );
    }
    None
}

/// Why no token could be obtained.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The discovery document could not be fetched or read.
    #[error("discovery at {url} failed: {reason}")]
    Discovery {
        /// The discovery URL.
        url: String,
        /// What went wrong.
        reason: Reason,
    },
    /// The token endpoint could not be reached or did not answer in time.
    #[error("token endpoint {url} unreachable: {reason}")]
    Transport {
        /// The token endpoint.
        url: String,
        /// What went wrong.
        reason: Reason,
    },
    /// The token endpoint refused the grant.
    #[error(
        "token endpoint {url} refused the grant ({status}): {error}{}",
        description.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
    )]
    Rejected {
        /// The token endpoint.
        url: String,
        /// HTTP status.
        status: u16,
        /// The provider's `error`.
        error: String,
        /// The provider's `error_description`.
        description: Option<String>,
    },
    /// The token endpoint said 200 but gave no usable token.
    #[error("token endpoint {url} answered without a usable token: {reason}")]
    Unusable {
        /// The token endpoint.
        url: String,
        /// What was missing or wrong.
        reason: String,
    },
    /// A key file cannot be used.
    #[error(transparent)]
    KeyFile(#[from] super::KeyFileError),
    /// A secret or token file cannot be used.
    #[error("credential file {}: {reason}", path.display())]
    CredentialFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong (never its contents).
        reason: String,
    },
    /// A token source returned a token that cannot travel in an HTTP header.
    #[error("the token holds characters a header cannot carry")]
    NotAHeader,
    /// The assertion could not be signed.
    #[error("cannot sign the assertion: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// The issuer refused a grant signed with a key whose `expirationDate` has passed:
    /// that is the likely reason, whatever words the issuer chose.
    #[error(
        "{refusal} (the key in {} expired at {})",
        path.display(),
        crate::rfc3339::format(*expired_at)
    )]
    KeyExpired {
        /// The key file.
        path: std::path::PathBuf,
        /// Its `expirationDate`.
        expired_at: std::time::SystemTime,
        /// The issuer's refusal.
        refusal: Box<TokenError>,
    },
}

impl TokenError {
    /// The provider's own `error` and `error_description`, when it sent them.
    pub fn provider_error(&self) -> Option<(&str, Option<&str>)> {
        match self {
            Self::Rejected {
                error, description, ..
            } => Some((error, description.as_deref())),
            Self::KeyExpired { refusal, .. } => refusal.provider_error(),
            _ => None,
        }
    }

    /// The likely cause, in words a user can act on: the one diagnosis that logs, `check`,
    /// `token`, `/readyz` and the 503 body all show.
    pub fn diagnosis(&self) -> Option<&'static str> {
        if let Self::KeyExpired { .. } = self {
            return Some("expired key: the key file's expirationDate has passed; create a new key in ZITADEL and replace the file");
        }
        if let Self::Discovery { reason, .. } | Self::Transport { reason, .. } = self {
            return reason.likely;
        }
        let (error, description) = self.provider_error()?;
        let text = format!("{error} {}", description.unwrap_or_default()).to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
        if has(&["future", "too old", "to old", "not yet valid", "iat"]) {
            Some("clock skew: this machine's clock and the issuer's disagree; sync it (NTP)")
        } else if has(&["audience", "aud "]) {
            Some("audience mismatch: --issuer must be the issuer exactly as its discovery document states it (mind a trailing slash)")
        } else if has(&["key", "kid", "signature"]) {
            Some("unknown or expired key: the key was deleted or expired in ZITADEL, or belongs to another instance; create a new key for the service user")
        } else if has(&["expired"]) {
            Some("expired assertion or key: check this machine's clock and the key's expiration date")
        } else if has(&["scope"]) {
            Some("missing or invalid scope: check --scope and --project-id")
        } else if has(&["invalid_client", "unauthorized_client", "user"]) {
            Some("the service user is unknown, locked or not allowed this grant")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_token_response() {
        let body = json!({"access_token":"abc","token_type":"Bearer","expires_in":43199,"scope":"openid"});
        let token = parse_token(Some(&body)).unwrap();
        assert_eq!(token.access_token.expose(), "abc");
        assert_eq!(token.lifetime, Some(Duration::from_secs(43199)));
        assert_eq!(
            token.scope,
            Some(Scope {
                list: "openid".into(),
                source: ScopeSource::Granted
            })
        );
        let string_lifetime = json!({"access_token":"abc","token_type":"bearer","expires_in":"60"});
        assert_eq!(
            parse_token(Some(&string_lifetime)).unwrap().lifetime,
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn refuses_unusable_token_responses() {
        let cases = [
            (
                json!({"token_type":"Bearer","expires_in":60}),
                "no `access_token`",
            ),
            (
                json!({"access_token":"","token_type":"Bearer","expires_in":60}),
                "no `access_token`",
            ),
            (
                json!({"access_token":"a\nb","token_type":"Bearer","expires_in":60}),
                "`access_token` holds characters a header cannot carry",
            ),
            (
                json!({"access_token":"abc","token_type":"mac","expires_in":60}),
                "`token_type` is not Bearer",
            ),
            (
                json!({"access_token":"abc","token_type":"Bearer"}),
                "no `expires_in`: mintproxy does not guess a token's lifetime",
            ),
        ];
        for (body, reason) in cases {
            assert_eq!(parse_token(Some(&body)).unwrap_err(), reason, "{body}");
        }
        assert_eq!(parse_token(None).unwrap_err(), "the answer is not JSON");
    }

    #[test]
    fn refuses_a_lifetime_that_is_not_a_positive_whole_number_of_seconds() {
        let ten_years_and_a_second = 10 * 365 * 24 * 3600 + 1;
        let cases = [
            (json!(0), "`expires_in` is 0: not a positive whole number of seconds"),
            (json!(-5), "`expires_in` is -5: not a positive whole number of seconds"),
            (json!(1.5), "`expires_in` is 1.5: not a positive whole number of seconds"),
            (json!("abc"), "`expires_in` is \"abc\": not a positive whole number of seconds"),
            (json!("0"), "`expires_in` is \"0\": not a positive whole number of seconds"),
            (json!(null), "`expires_in` is null: not a positive whole number of seconds"),
            (
                json!(9_223_372_036_854_775_808_u64),
                "`expires_in` is 9223372036854775808: more than 10 years",
            ),
            (
                json!(ten_years_and_a_second),
                "`expires_in` is 315360001: more than 10 years",
            ),
            (
                json!("x".repeat(1000)),
                "`expires_in` is \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…: not a positive whole number of seconds",
            ),
        ];
        for (expires_in, reason) in cases {
            let body = json!({"access_token":"abc","token_type":"Bearer","expires_in":expires_in});
            assert_eq!(parse_token(Some(&body)).unwrap_err(), reason, "{body}");
        }
    }

    #[test]
    fn cuts_a_lifetime_over_a_year_to_a_year() {
        let year = Duration::from_secs(365 * 24 * 3600);
        let lifetime = |expires_in: Value| {
            let body = json!({"access_token":"abc","token_type":"Bearer","expires_in":expires_in});
            parse_token(Some(&body)).unwrap().lifetime.unwrap()
        };
        assert_eq!(lifetime(json!(year.as_secs())), year);
        assert_eq!(lifetime(json!(year.as_secs() + 1)), year);
        assert_eq!(lifetime(json!((10 * year).as_secs())), year);
        assert_eq!(lifetime(json!("40000000")), year);
        assert_eq!(lifetime(json!(1)), Duration::from_secs(1));
    }

    /// An issuer that accepts the connection and never answers: the likely cause is the
    /// timeout, however the error text puts it.
    #[tokio::test]
    async fn a_silent_issuer_is_diagnosed_as_no_answer_in_time() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let error = Endpoint::new(client, url, None).issuer().await.unwrap_err();
        assert!(matches!(error, TokenError::Discovery { .. }), "{error}");
        let diagnosis = error.diagnosis().unwrap_or_default();
        assert!(diagnosis.starts_with("no answer in time"), "{diagnosis}");
        drop(silent);
    }

    #[test]
    fn diagnoses_provider_errors() {
        let rejected = |description: &str| TokenError::Rejected {
            url: "https://issuer.example/oauth/v2/token".into(),
            status: 400,
            error: "invalid_grant".into(),
            description: Some(description.into()),
        };
        let diagnosis = |d: &str| rejected(d).diagnosis().unwrap_or_default();
        assert!(diagnosis("issuedAt of token is in the future").starts_with("clock skew"));
        assert!(diagnosis("audience is not valid").starts_with("audience mismatch"));
        assert!(diagnosis("key not found").starts_with("unknown or expired key"));
        assert!(diagnosis("scope openid is required").starts_with("missing or invalid scope"));
        assert_eq!(rejected("something else").diagnosis(), None);
        assert_eq!(
            rejected("key not found").to_string(),
            "token endpoint https://issuer.example/oauth/v2/token refused the grant (400): invalid_grant: key not found"
        );
    }
}
