//! Client authentication, by a secret (HTTP Basic, RFC 6749 §2.3.1) or by a signed
//! assertion (RFC 7523 §2.2: `private_key_jwt` with a ZITADEL application key file, or a
//! service user's key), and the client credentials grant (RFC 6749 §4.4) that uses it.

use base64::Engine;
use http::HeaderValue;

use super::file::WatchedFile;
use super::jwt_profile::signed_assertion;
use super::keyfile::KeyKind;
use super::{ChangeFuture, Endpoint, FetchFuture, Token, TokenError, TokenSource};

/// `client_assertion_type` for `private_key_jwt` (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the client proves who it is: for the client credentials grant, and for a token
/// exchange, which authenticates the proxy as a client the same ways.
#[derive(Debug)]
pub enum ClientAuth {
    /// A client secret, read from this file (surrounding whitespace ignored), sent with
    /// HTTP Basic.
    Secret {
        /// The client id.
        client_id: String,
        /// The file holding the secret.
        file: WatchedFile,
    },
    /// A client assertion signed with a ZITADEL key file: an application's key
    /// (`private_key_jwt`) or a service user's key; its id is the client id.
    Assertion {
        /// The key file.
        key_file: WatchedFile,
        /// Which kind of key the file must hold.
        kind: KeyKind,
    },
}

impl ClientAuth {
    /// Sends `grant` (form fields) to `endpoint`, authenticated as this client.
    pub(crate) async fn request(
        &self,
        endpoint: &Endpoint,
        grant: &[(&str, &str)],
    ) -> Result<Token, TokenError> {
        match self {
            Self::Secret { client_id, file } => {
                let secret = file.read(read_secret)?;
                endpoint
                    .request(grant, Some(basic_auth(client_id, &secret)))
                    .await
            }
            Self::Assertion { key_file, kind } => {
                let signed = signed_assertion(key_file, *kind, endpoint).await?;
                let mut form = grant.to_vec();
                form.extend([
                    ("client_id", signed.subject.as_str()),
                    ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                    ("client_assertion", signed.assertion.expose()),
                ]);
                signed.explain(endpoint.request(&form, None).await)
            }
        }
    }

    /// The file the client's secret or key is read from.
    pub(crate) fn file(&self) -> &WatchedFile {
        match self {
            Self::Secret { file, .. } | Self::Assertion { key_file: file, .. } => file,
        }
    }
}

/// Mints tokens with the client credentials grant.
#[derive(Debug)]
pub struct ClientCredentialsSource {
    auth: ClientAuth,
    endpoint: Endpoint,
    scope: String,
}

impl ClientCredentialsSource {
    /// A source for the client `auth` proves at `endpoint`.
    pub fn new(auth: ClientAuth, endpoint: Endpoint, scopes: &[String]) -> Self {
        Self {
            auth,
            endpoint,
            scope: scopes.join(" "),
        }
    }
}

impl TokenSource for ClientCredentialsSource {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let grant = [
                ("grant_type", "client_credentials"),
                ("scope", self.scope.as_str()),
            ];
            self.auth.request(&self.endpoint, &grant).await
        })
    }

    fn changed(&self) -> ChangeFuture<'_> {
        Box::pin(self.auth.file().changed())
    }
}

/// Reads a secret file; the secret itself never appears in the error.
pub(crate) fn read_secret(path: &std::path::Path) -> Result<crate::secret::Secret, TokenError> {
    let fail = |reason: String| TokenError::CredentialFile {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(fail("it is empty".into()));
    }
    Ok(crate::secret::Secret::new(trimmed))
}

/// `Basic base64(urlencode(id):urlencode(secret))`, as RFC 6749 §2.3.1 asks.
fn basic_auth(client_id: &str, secret: &crate::secret::Secret) -> HeaderValue {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(client_id), encode(secret.expose()));
    let mut value = HeaderValue::try_from(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))
    .expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_form_encodes_id_and_secret_first() {
        let value = basic_auth("my client", &crate::secret::Secret::new("p@ss:w rd"));
        assert!(value.is_sensitive());
        let encoded = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
        assert_eq!(decoded, b"my+client:p%40ss%3Aw+rd");
    }
}
