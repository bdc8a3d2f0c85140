//! A stand-in for ZITADEL's token endpoint that checks JWT profile assertions the way
//! ZITADEL does: signature with the registered public key, `kid`, `iss` = `sub` = the
//! key's user, `aud` = the issuer string exactly, `iat` at most 1 s in the future and at
//! most 1 h old, `exp` in the future, and `openid` among the scopes.
//!
//! It also serves the client credentials grant, the client authenticated by HTTP Basic
//! (RFC 6749 §2.3.1, form-encoded id and secret) or by a `private_key_jwt` assertion signed
//! with a registered application key (same checks, `iss` = `sub` = the client id).
//!
//! And the RFC 8693 token exchange grant: the client authenticated as above (or by a
//! client assertion signed with a service user's key), the `subject_token` an access token
//! it issued itself ([`Issuer::issue`] makes one for a caller) and still valid; the new
//! token is the subject's.
//!
//! It issues opaque tokens, counts and records token requests, and can be told to fail or
//! refuse, so the demo and the tests run the real flow without a ZITADEL.

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
use crate::token::client_credentials::CLIENT_ASSERTION_TYPE;
use crate::token::exchange::{ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
use crate::token::jwt_profile::JWT_BEARER_GRANT;
use crate::token::KeyKind;

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
    /// State the granted scopes in token answers. ZITADEL's answers leave `scope` out
    /// (its guides show `access_token`, `token_type` and `expires_in` only), and so does the
    /// stand-in unless told.
    pub states_scope: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            expires_in: 43_200,
            failure: None,
            delay: Duration::ZERO,
            states_scope: false,
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
    /// This status, `error` and `error_description`, as a refusal.
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// `error`.
        error: String,
        /// `error_description`.
        description: String,
    },
}

/// One token request as the issuer received it. No `Debug`: it holds secrets.
#[derive(Clone)]
pub struct TokenRequest {
    /// The form fields, in the order sent.
    pub form: Vec<(String, String)>,
    /// The client id of HTTP Basic client authentication, if used.
    pub basic_client: Option<String>,
    /// Whom the request authenticated (the user or client), if it was granted.
    pub authenticated: Option<String>,
}

impl TokenRequest {
    /// The first value of form field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every value of form field `name`.
    pub fn fields(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A granted request: whom the token is for, and who authenticated.
struct Grant {
    subject: String,
    authenticated: String,
}

struct RegisteredKey {
    subject: String,
    kind: KeyKind,
    public_key: DecodingKey,
}

struct Issued {
    subject: String,
    expires: Instant,
}

/// The stand-in issuer. Start it with [`Issuer::start`].
pub struct Issuer {
    url: String,
    keys: Mutex<HashMap<String, RegisteredKey>>,
    client_secrets: Mutex<HashMap<String, String>>,
    issued: Mutex<HashMap<String, Issued>>,
    assertions: Mutex<Vec<String>>,
    received: Mutex<Vec<TokenRequest>>,
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
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Issuer {
    /// Serves the issuer on `listener`; its issuer string is `http://<local address>`.
    pub fn start(listener: TcpListener) -> std::io::Result<Arc<Self>> {
        let issuer = Arc::new(Self {
            url: format!("http://{}", listener.local_addr()?),
            keys: Mutex::default(),
            client_secrets: Mutex::default(),
            issued: Mutex::default(),
            assertions: Mutex::default(),
            received: Mutex::default(),
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
        self.add_key(key_id, user_id, KeyKind::ServiceAccount, public_key_der);
    }

    /// Registers an application's public key for `private_key_jwt` client authentication.
    pub fn register_application_key(&self, key_id: &str, client_id: &str, public_key_der: &[u8]) {
        self.add_key(key_id, client_id, KeyKind::Application, public_key_der);
    }

    fn add_key(&self, key_id: &str, subject: &str, kind: KeyKind, public_key_der: &[u8]) {
        let key = RegisteredKey {
            subject: subject.to_owned(),
            kind,
            public_key: DecodingKey::from_rsa_der(public_key_der),
        };
        lock(&self.keys).insert(key_id.to_owned(), key);
    }

    /// Registers a client that authenticates with a secret.
    pub fn register_client_secret(&self, client_id: &str, secret: &str) {
        lock(&self.client_secrets).insert(client_id.to_owned(), secret.to_owned());
    }

    /// Deletes a key, as deleting it in ZITADEL's console would.
    pub fn remove_key(&self, key_id: &str) {
        lock(&self.keys).remove(key_id);
    }

    /// How many token requests arrived.
    pub fn token_requests(&self) -> usize {
        self.token_requests.load(Ordering::SeqCst)
    }

    /// Every token request received so far, in order.
    pub fn received(&self) -> Vec<TokenRequest> {
        lock(&self.received).clone()
    }

    /// The token requests of `grant_type` received so far.
    pub fn received_grants(&self, grant_type: &str) -> Vec<TokenRequest> {
        let received = lock(&self.received);
        let of_grant = received
            .iter()
            .filter(|r| r.field("grant_type") == Some(grant_type));
        of_grant.cloned().collect()
    }

    /// Issues a token for `subject` living `lifetime`, as if a caller had obtained it
    /// elsewhere: a subject token to exchange.
    pub fn issue(&self, subject: &str, lifetime: Duration) -> String {
        let token = random_token();
        let issued = Issued {
            subject: subject.to_owned(),
            expires: Instant::now() + lifetime,
        };
        lock(&self.issued).insert(token.clone(), issued);
        token
    }

    /// Changes how token requests are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.behaviour) = behaviour;
    }

    /// The user (or client) a token was issued to, if it is one of ours and still valid.
    pub fn token_user(&self, token: &str) -> Option<String> {
        let issued = lock(&self.issued);
        issued
            .get(token)
            .filter(|t| Instant::now() < t.expires)
            .map(|t| t.subject.clone())
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
                    "grant_types_supported": [JWT_BEARER_GRANT, "client_credentials", TOKEN_EXCHANGE_GRANT],
                }),
            ),
            (&Method::POST, TOKEN_PATH) => self.token(request).await,
            _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        }
    }

    async fn token(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        self.token_requests.fetch_add(1, Ordering::SeqCst);
        let basic = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .map(str::to_owned);
        let behaviour = lock(&self.behaviour).clone();
        tokio::time::sleep(behaviour.delay).await;
        let body = match request.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": "invalid_request"})),
        };
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
        let mut received = TokenRequest {
            form: pairs.clone(),
            basic_client: basic
                .as_deref()
                .and_then(|b| basic_credentials(b).map(|(id, _)| id)),
            authenticated: None,
        };
        let record = |received: TokenRequest| lock(&self.received).push(received);
        match behaviour.failure {
            Some(Failure::Refused {
                status,
                error,
                description,
            }) => {
                record(received);
                return json_response(status, &json!({"error": error, "error_description": description}));
            }
            Some(Failure::Unavailable) => {
                record(received);
                return json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"error": "temporarily_unavailable", "error_description": "the issuer is down"}),
                );
            }
            Some(Failure::NoToken) => {
                record(received);
                return json_response(StatusCode::OK, &json!({"token_type": "Bearer"}));
            }
            None => {}
        }
        let form: HashMap<String, String> = pairs.into_iter().collect();
        let granted = self.grant(&form, basic.as_deref());
        received.authenticated = granted.as_ref().ok().map(|g| g.authenticated.clone());
        record(received);
        match granted {
            Ok(Grant { subject, .. }) => {
                let token = random_token();
                let expires = Instant::now() + Duration::from_secs(behaviour.expires_in);
                lock(&self.issued).insert(token.clone(), Issued { subject, expires });
                let mut answer = json!({
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": behaviour.expires_in,
                });
                if behaviour.states_scope {
                    answer["scope"] = json!(form.get("scope"));
                }
                json_response(StatusCode::OK, &answer)
            }
            Err((status, error, description)) => {
                json_response(status, &json!({"error": error, "error_description": description}))
            }
        }
    }

    /// Checks a grant; returns whom the token is for and who authenticated.
    fn grant(&self, form: &HashMap<String, String>, basic: Option<&str>) -> Result<Grant, Refusal> {
        let field = |name: &str| form.get(name).map(String::as_str);
        let scopes = field("scope").unwrap_or_default();
        let by_itself = |subject: String| Grant {
            authenticated: subject.clone(),
            subject,
        };
        match field("grant_type") {
            Some(JWT_BEARER_GRANT) => {
                require_openid(scopes)?;
                let assertion = field("assertion").ok_or_else(|| invalid_grant("assertion missing"))?;
                self.verify_assertion(assertion, &[KeyKind::ServiceAccount])
                    .map(by_itself)
            }
            Some("client_credentials") => {
                let client = self.authenticate_client(form, basic, &[KeyKind::Application])?;
                require_openid(scopes)?;
                Ok(by_itself(client))
            }
            Some(TOKEN_EXCHANGE_GRANT) => {
                let client =
                    self.authenticate_client(form, basic, &[KeyKind::Application, KeyKind::ServiceAccount])?;
                if field("subject_token_type") != Some(ACCESS_TOKEN_TYPE) {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "subject_token_type must be an access token".into(),
                    ));
                }
                let subject = field("subject_token").unwrap_or_default();
                let user = self
                    .token_user(subject)
                    .ok_or_else(|| invalid_grant("subject_token is invalid or has expired"))?;
                Ok(Grant {
                    subject: user,
                    authenticated: client,
                })
            }
            _ => Err((
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only the jwt-bearer, client_credentials and token-exchange grants are supported".into(),
            )),
        }
    }

    /// Client authentication: HTTP Basic with a registered secret, or a client assertion
    /// signed with a registered key of one of `kinds`.
    fn authenticate_client(
        &self,
        form: &HashMap<String, String>,
        basic: Option<&str>,
        kinds: &[KeyKind],
    ) -> Result<String, Refusal> {
        let invalid_client =
            |description: &str| (StatusCode::UNAUTHORIZED, "invalid_client", description.to_owned());
        if let Some(basic) = basic {
            let (id, secret) =
                basic_credentials(basic).ok_or_else(|| invalid_client("malformed Basic credentials"))?;
            return match lock(&self.client_secrets).get(&id) {
                Some(known) if *known == secret => Ok(id),
                _ => Err(invalid_client("client authentication failed")),
            };
        }
        if form.get("client_assertion_type").map(String::as_str) == Some(CLIENT_ASSERTION_TYPE) {
            let assertion = form
                .get("client_assertion")
                .ok_or_else(|| invalid_client("client_assertion missing"))?;
            let client = self.verify_assertion(assertion, kinds)?;
            if form.get("client_id").is_some_and(|id| *id != client) {
                return Err(invalid_client("client_id does not match the assertion"));
            }
            return Ok(client);
        }
        Err(invalid_client("no client authentication"))
    }

    /// Verifies an RFC 7523 assertion signed by a registered key of one of `kinds`; returns
    /// its subject.
    fn verify_assertion(&self, assertion: &str, kinds: &[KeyKind]) -> Result<String, Refusal> {
        lock(&self.assertions).push(assertion.to_owned());
        let header =
            jsonwebtoken::decode_header(assertion).map_err(|_| invalid_grant("assertion is not a JWT"))?;
        if header.alg != Algorithm::RS256 {
            return Err(invalid_grant("assertion must be signed with RS256"));
        }
        let kid = header.kid.ok_or_else(|| invalid_grant("assertion has no kid"))?;
        let keys = lock(&self.keys);
        let key = keys
            .get(&kid)
            .filter(|key| kinds.contains(&key.kind))
            .ok_or_else(|| invalid_grant("key not found: unknown kid"))?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 0;
        validation.set_audience(&[&self.url]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
        let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &key.public_key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidAudience => invalid_grant("audience is not valid"),
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => invalid_grant("assertion has expired"),
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    invalid_grant("signature invalid for key")
                }
                _ => invalid_grant("assertion is invalid"),
            })?
            .claims;
        if claims.iss != key.subject || claims.sub != key.subject {
            return Err(invalid_grant("iss and sub must be the key's user or client id"));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if claims.iat > now + 1 {
            return Err(invalid_grant("issuedAt of token is in the future"));
        }
        if claims.iat + 3600 < now {
            return Err(invalid_grant("issuedAt of token is too old"));
        }
        Ok(key.subject.clone())
    }
}

/// The client id and secret of a Basic value (RFC 6749 §2.3.1: each form-encoded first).
fn basic_credentials(basic: &str) -> Option<(String, String)> {
    let decoded = base64::engine::general_purpose::STANDARD.decode(basic).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((decode(id), decode(secret)))
}

fn invalid_grant(description: &str) -> Refusal {
    (StatusCode::BAD_REQUEST, "invalid_grant", description.to_owned())
}

fn require_openid(scopes: &str) -> Result<(), Refusal> {
    if scopes.split(' ').any(|s| s == "openid") {
        Ok(())
    } else {
        Err((
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope openid is required".into(),
        ))
    }
}

/// An opaque token: 32 random bytes, base64url.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness is available");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
