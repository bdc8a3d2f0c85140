//! An upstream that accepts only tokens the stand-in issuer issued, and answers with what
//! it received (the bearer redacted), so the demo and the tests can see what arrived.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use super::issuer::Issuer;
use super::{json_response, spawn_server};

/// What the echo upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: http::Method,
    /// Path and query.
    pub target: String,
    /// Headers, the bearer included.
    pub headers: HeaderMap,
    /// Body length.
    pub body_len: usize,
}

/// The echo upstream.
#[derive(Debug)]
pub struct Echo {
    url: String,
    issuer: Arc<Issuer>,
    seen: Mutex<Vec<Seen>>,
}

impl Echo {
    /// Serves the echo on `listener`, accepting tokens of `issuer`.
    pub fn start(listener: TcpListener, issuer: Arc<Issuer>) -> std::io::Result<Arc<Self>> {
        let echo = Arc::new(Self {
            url: format!("http://{}", listener.local_addr()?),
            issuer,
            seen: Mutex::default(),
        });
        let serving = echo.clone();
        spawn_server(listener, move |request| {
            let echo = serving.clone();
            async move { echo.handle(request).await }
        });
        Ok(echo)
    }

    /// The echo's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body_len = match body.collect().await {
            Ok(body) => body.to_bytes().len(),
            Err(_) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": "body broke off"})),
        };
        let seen = Seen {
            method: parts.method.clone(),
            target: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
            headers: parts.headers.clone(),
            body_len,
        };
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(seen.clone());
        let bearer = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(user) = bearer.and_then(|token| self.issuer.token_user(token)) else {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "invalid_token", "detail": "no bearer token issued by the stand-in issuer"}),
            );
        };
        json_response(StatusCode::OK, &describe(&seen, &user))
    }
}

/// The JSON the echo answers with; the bearer shows as `Bearer [redacted]`.
fn describe(seen: &Seen, user: &str) -> Value {
    let mut headers = Map::new();
    for (name, value) in &seen.headers {
        let shown = if name == http::header::AUTHORIZATION {
            "Bearer [redacted]".to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        headers.insert(name.as_str().to_owned(), Value::String(shown));
    }
    json!({
        "method": seen.method.as_str(),
        "target": seen.target,
        "headers": headers,
        "body_bytes": seen.body_len,
        "token_user": user,
    })
}
