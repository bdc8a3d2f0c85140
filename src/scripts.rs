//! What `mintproxy token` gives scripts beyond a single mint: the token kept on disk
//! between runs ([`crate::token::disk_cache`]), and kubectl's `ExecCredential`.

use std::time::SystemTime;

use crate::app::{self, MintError};
use crate::config::Credential;
use crate::tls::Trust;
use crate::token::disk_cache::{CacheKey, DiskCache};
use crate::token::{KeyKind, SigningKey, Token, TokenError};

/// A token, and the moment its lifetime counts from.
#[derive(Debug)]
pub struct Obtained {
    /// The token; its `lifetime` is what is left of it at `as_of`.
    pub token: Token,
    /// When the lifetime started counting: just before the mint, or the cache lookup.
    pub as_of: SystemTime,
}

impl Obtained {
    /// When the token expires, if it does.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.token.lifetime.map(|lifetime| self.as_of + lifetime)
    }
}

/// A token for `credential`: with `use_cache`, one kept on disk if it has enough life
/// left; otherwise a new one, kept for the next run.
pub async fn token(credential: &Credential, trust: &Trust, use_cache: bool) -> Result<Obtained, MintError> {
    let cache = match cache_key(credential)? {
        Some(key) if use_cache => DiskCache::default_dir()
            .and_then(DiskCache::open)
            .map(|cache| (cache, key)),
        _ => None,
    };
    let as_of = SystemTime::now();
    if let Some(token) = cache.as_ref().and_then(|(cache, key)| cache.load(key, as_of)) {
        tracing::debug!("using the token from the cache");
        return Ok(Obtained { token, as_of });
    }
    let token = app::mint_once(credential, trust).await?;
    if let Some((cache, key)) = &cache {
        cache.store(key, &token, as_of);
    }
    Ok(Obtained { token, as_of })
}

/// The identity of the tokens `credential` mints; `None` for a token file, which needs no
/// cache. The key file is read for its key id: a new key means new tokens.
fn cache_key(credential: &Credential) -> Result<Option<CacheKey>, MintError> {
    let key_id = |path, kind| {
        SigningKey::from_file(path, kind)
            .map(|key| key.key_id)
            .map_err(|e| MintError::Token(TokenError::KeyFile(e)))
    };
    let (principal, endpoint) = match credential {
        Credential::JwtProfile { key_file, endpoint } => {
            (key_id(key_file, KeyKind::ServiceAccount)?, endpoint)
        }
        // The client id is the key file's own (validation checks it): the key id says all.
        Credential::ClientKey {
            key_file, endpoint, ..
        } => (key_id(key_file, KeyKind::Application)?, endpoint),
        Credential::ClientSecret {
            client_id, endpoint, ..
        } => (client_id.clone(), endpoint),
        Credential::StaticToken { .. } => return Ok(None),
    };
    Ok(Some(CacheKey::new(
        &principal,
        &endpoint.issuer,
        endpoint.token_endpoint.as_ref().map(url::Url::as_str),
        &endpoint.scopes,
        &endpoint.params,
    )))
}

/// kubectl's `ExecCredential` (client.authentication.k8s.io/v1) carrying the token, as a
/// kubeconfig `exec` plugin prints it; kubectl reuses it until `expirationTimestamp`.
pub fn exec_credential(obtained: &Obtained) -> serde_json::Value {
    let mut status = serde_json::json!({ "token": obtained.token.access_token.expose() });
    if let Some(expires_at) = obtained.expires_at() {
        status["expirationTimestamp"] = crate::rfc3339::format(expires_at).into();
    }
    serde_json::json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": status,
    })
}
