//! A stand-in for ZITADEL's token endpoint that checks JWT profile assertions the way
//! ZITADEL does: signature with the registered public key, `kid`, `iss` = `sub` = the
//! key's user, `aud` = the issuer string exactly, `iat` at most 1 s in the future and at
//! most 1 h old, `exp` in the future, and `openid` among the scopes.
//!
//! It issues opaque tokens, counts token requests, and can be told to fail, so the demo
//! and the tests run the real flow without a ZITADEL.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::{json_response, spawn_server};
use crate::token::jwt_profile::JWT_BEARER_GRANT;

/// The token endpoint's path, as ZITADEL has it.
pub const TOKEN_PATH: &str = "/oauth/v2/token";

/// How the issuer answers token requests; tests change it while running.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// `expires_in` of issued tokens, in seconds.
    pub expires_in: u64,
    /// Answer every token request with this failure instead.
    pub failure: Option<Failure>,
    /// Wait this long before answering a token request.
    pub delay: Duration,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            expires_in: 43_200,
            failure: None,
            delay: Duration::ZERO,
        }
    }
}

/// A way for the token endpoint to fail.
#[derive(Debug, Clone)]
pub enum Failure {
    /// 503 with `temporarily_unavailable`, as during an outage.
    Unavailable,
    /// 200 with a body that holds no token.
    NoToken,
}

struct RegisteredKey {
    user_id: String,
    public_key: DecodingKey,
}

struct Issued {
    user_id: String,
    expires: Instant,
}

/// The stand-in issuer. Start it with [`Issuer::start`].
pub struct Issuer {
    url: String,
    keys: Mutex<HashMap<String, RegisteredKey>>,
    issued: Mutex<HashMap<String, Issued>>,
    assertions: Mutex<Vec<String>>,
    token_requests: AtomicUsize,
    behaviour: Mutex<Behaviour>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The claims the issuer reads from an assertion (the rest jsonwebtoken checks).
#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    iat: u64,
}

/// A refusal: (status, `error`, `error_description`).
type Refusal = (StatusCode, &'static str, String);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Issuer {
    /// Serves the issuer on `listener`; its issuer string is `http://<local address>`.
    pub fn start(listener: TcpListener) -> std::io::Result<Arc<Self>> {
        let issuer = Arc::new(Self {
            url: format!("http://{}", listener.local_addr()?),
            keys: Mutex::default(),
            issued: Mutex::default(),
            assertions: Mutex::default(),
            token_requests: AtomicUsize::new(0),
            behaviour: Mutex::default(),
        });
        let serving = issuer.clone();
        spawn_server(listener, move |request| {
            let issuer = serving.clone();
            async move { issuer.handle(request).await }
        });
        Ok(issuer)
    }

    /// The issuer string, which assertions must carry as `aud`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Registers a service user's public key (PKCS#1 DER) under `key_id`.
    pub fn register_key(&self, key_id: &str, user_id: &str, public_key_der: &[u8]) {
        let key = RegisteredKey {
            user_id: user_id.to_owned(),
            public_key: DecodingKey::from_rsa_der(public_key_der),
        };
        lock(&self.keys).insert(key_id.to_owned(), key);
    }

    /// Deletes a key, as deleting it in ZITADEL's console would.
    pub fn remove_key(&self, key_id: &str) {
        lock(&self.keys).remove(key_id);
    }

    /// How many token requests arrived.
    pub fn token_requests(&self) -> usize {
        self.token_requests.load(Ordering::SeqCst)
    }

    /// Changes how token requests are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.behaviour) = behaviour;
    }

    /// The user a token was issued to, if it is one of ours and still valid.
    pub fn token_user(&self, token: &str) -> Option<String> {
        let issued = lock(&self.issued);
        issued
            .get(token)
            .filter(|t| Instant::now() < t.expires)
            .map(|t| t.user_id.clone())
    }

    /// Revokes every token issued so far (a resource server will then answer 401).
    pub fn revoke_all(&self) {
        lock(&self.issued).clear();
    }

    /// Every token and assertion this issuer has seen: what must never show in a log.
    pub fn secrets_seen(&self) -> HashSet<String> {
        let mut secrets: HashSet<String> = lock(&self.assertions).iter().cloned().collect();
        secrets.extend(lock(&self.issued).keys().cloned());
        secrets
    }

    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/.well-known/openid-configuration") => json_response(
                StatusCode::OK,
                &json!({
                    "issuer": self.url,
                    "token_endpoint": format!("{}{TOKEN_PATH}", self.url),
                    "grant_types_supported": [JWT_BEARER_GRANT],
                }),
            ),
            (&Method::POST, TOKEN_PATH) => self.token(request).await,
            _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        }
    }

    async fn token(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        self.token_requests.fetch_add(1, Ordering::SeqCst);
        let behaviour = lock(&self.behaviour).clone();
        tokio::time::sleep(behaviour.delay).await;
        let body = match request.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "invalid_request"}),
                )
            }
        };
        match behaviour.failure {
            Some(Failure::Unavailable) => {
                return json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"error": "temporarily_unavailable", "error_description": "the issuer is down"}),
                )
            }
            Some(Failure::NoToken) => {
                return json_response(StatusCode::OK, &json!({"token_type": "Bearer"}))
            }
            None => {}
        }
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        match self.grant(&form) {
            Ok(user_id) => {
                let token = random_token();
                let expires = Instant::now() + Duration::from_secs(behaviour.expires_in);
                lock(&self.issued).insert(token.clone(), Issued { user_id, expires });
                json_response(
                    StatusCode::OK,
                    &json!({
                        "access_token": token,
                        "token_type": "Bearer",
                        "expires_in": behaviour.expires_in,
                        "scope": form.get("scope"),
                    }),
                )
            }
            Err((status, error, description)) => json_response(
                status,
                &json!({"error": error, "error_description": description}),
            ),
        }
    }

    /// Checks a jwt-bearer grant; returns the user it authenticates.
    fn grant(&self, form: &HashMap<String, String>) -> Result<String, Refusal> {
        let invalid = |description: &str| {
            (
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                description.to_owned(),
            )
        };
        if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER_GRANT) {
            return Err((
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only the jwt-bearer grant is supported".into(),
            ));
        }
        let scopes = form.get("scope").map(String::as_str).unwrap_or_default();
        if !scopes.split(' ').any(|s| s == "openid") {
            return Err((
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "scope openid is required".into(),
            ));
        }
        let assertion = form
            .get("assertion")
            .ok_or_else(|| invalid("assertion missing"))?;
        lock(&self.assertions).push(assertion.clone());
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|_| invalid("assertion is not a JWT"))?;
        if header.alg != Algorithm::RS256 {
            return Err(invalid("assertion must be signed with RS256"));
        }
        let kid = header.kid.ok_or_else(|| invalid("assertion has no kid"))?;
        let keys = lock(&self.keys);
        let key = keys
            .get(&kid)
            .ok_or_else(|| invalid("key not found: unknown kid"))?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 0;
        validation.set_audience(&[&self.url]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
        let claims =
            jsonwebtoken::decode::<AssertionClaims>(assertion, &key.public_key, &validation)
                .map_err(|e| match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                        invalid("audience is not valid")
                    }
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        invalid("assertion has expired")
                    }
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                        invalid("signature invalid for key")
                    }
                    _ => invalid("assertion is invalid"),
                })?
                .claims;
        if claims.iss != key.user_id || claims.sub != key.user_id {
            return Err(invalid("iss and sub must be the key's user id"));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if claims.iat > now + 1 {
            return Err(invalid("issuedAt of token is in the future"));
        }
        if claims.iat + 3600 < now {
            return Err(invalid("issuedAt of token is too old"));
        }
        Ok(key.user_id.clone())
    }
}

/// An opaque token: 32 random bytes, base64url.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness is available");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
