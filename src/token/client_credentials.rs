//! The client credentials grant (RFC 6749 §4.4), the client authenticated by a secret
//! (HTTP Basic, §2.3.1) or by a signed assertion (`private_key_jwt`, RFC 7523 §2.2, with a
//! ZITADEL application key file).

use base64::Engine;
use http::HeaderValue;

use super::file::WatchedFile;
use super::jwt_profile::signed_assertion;
use super::keyfile::KeyKind;
use super::{ChangeFuture, Endpoint, FetchFuture, TokenError, TokenSource};

/// `client_assertion_type` for `private_key_jwt` (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the client proves who it is.
#[derive(Debug)]
pub enum ClientAuth {
    /// A client secret, read from this file (surrounding whitespace ignored).
    Secret(WatchedFile),
    /// A ZITADEL application key file signing a client assertion.
    PrivateKeyJwt(WatchedFile),
}

/// Mints tokens with the client credentials grant.
#[derive(Debug)]
pub struct ClientCredentialsSource {
    client_id: String,
    auth: ClientAuth,
    endpoint: Endpoint,
    scope: String,
}

impl ClientCredentialsSource {
    /// A source for `client_id` authenticating with `auth` at `endpoint`.
    pub fn new(
        client_id: impl Into<String>,
        auth: ClientAuth,
        endpoint: Endpoint,
        scopes: &[String],
    ) -> Self {
        Self {
            client_id: client_id.into(),
            auth,
            endpoint,
            scope: scopes.join(" "),
        }
    }

    fn file(&self) -> &WatchedFile {
        match &self.auth {
            ClientAuth::Secret(file) | ClientAuth::PrivateKeyJwt(file) => file,
        }
    }
}

impl TokenSource for ClientCredentialsSource {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let mut form = vec![
                ("grant_type", "client_credentials"),
                ("scope", self.scope.as_str()),
            ];
            match &self.auth {
                ClientAuth::Secret(file) => {
                    let secret = file.read(read_secret)?;
                    let basic = basic_auth(&self.client_id, &secret);
                    self.endpoint.request(&form, Some(basic)).await
                }
                ClientAuth::PrivateKeyJwt(file) => {
                    let signed = signed_assertion(file, KeyKind::Application, &self.endpoint).await?;
                    form.extend([
                        ("client_id", self.client_id.as_str()),
                        ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                        ("client_assertion", signed.assertion.expose()),
                    ]);
                    signed.explain(self.endpoint.request(&form, None).await)
                }
            }
        })
    }

    fn changed(&self) -> ChangeFuture<'_> {
        Box::pin(self.file().changed())
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
