//! The one table from failure to response: status, JSON body, `Proxy-Status` (RFC 9209),
//! and `grpc-status`/`grpc-message` for gRPC callers.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};
use serde_json::{json, Map, Value};

use super::forward::BoxError;
use super::ProxyBody;
use crate::chain::Chain;
use crate::token::{NoToken, TokenError};

/// Every way the proxy itself can fail a request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No valid token for the route's credential.
    #[error(transparent)]
    NoToken(#[from] NoToken),
    /// An exchange route's request carries no `Authorization: Bearer` token of the caller.
    #[error("this route exchanges the caller's token: send one as Authorization: Bearer <token>")]
    NoCallerToken,
    /// The issuer refused to exchange the caller's token.
    #[error("the issuer refused to exchange the caller's token: {0}")]
    ExchangeRefused(#[source] Box<TokenError>),
    /// The upstream could not be reached, or broke off.
    #[error("upstream unreachable: {}", Chain(.0))]
    UpstreamUnreachable(#[source] super::pool::SendError),
    /// No route serves the path.
    #[error("no route for path {0}")]
    NoRoute(String),
    /// The route's allowlists refuse the request.
    #[error("refused by policy: {0}")]
    Forbidden(#[from] super::policy::Refusal),
    /// The client's request body broke off or was not what it announced.
    #[error("cannot read the request body: {}", Chain(&**.0))]
    ClientBody(#[source] BoxError),
    /// The upstream did not answer in time.
    #[error("upstream did not answer within {0:?}")]
    UpstreamTimeout(std::time::Duration),
    /// The request body is larger than allowed.
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    /// `CONNECT` would make this an open proxy.
    #[error("CONNECT is not supported: mintproxy forwards only to its configured upstream")]
    ConnectRefused,
    /// `TRACE` or `TRACK`: an upstream that echoes the request would hand the bearer to
    /// the caller.
    #[error("{0} is refused: an upstream echoing it would hand the bearer to the caller")]
    TraceRefused(http::Method),
    /// The request's header section is larger than `--max-header-size`.
    #[error("request header section larger than {0} bytes")]
    RequestHeadTooLarge(usize),
    /// The upstream's response header section is larger than the proxy takes.
    #[error("upstream response header section larger than {0} bytes")]
    UpstreamHeadTooLarge(usize),
    /// The request is not one the proxy can forward unambiguously.
    #[error("bad request: {0}")]
    Malformed(#[from] Malformed),
}

/// A request whose meaning depends on who reads it (RFC 9112 §3.2, RFC 9113 §8.3.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// More than one `Host` field: which one the upstream reads is anyone's guess.
    #[error("more than one Host field")]
    DuplicateHost,
    /// `Host` disagrees with the absolute-form target or `:authority`.
    #[error("Host disagrees with the request's authority")]
    HostMismatch,
    /// A path with no unambiguous normal form, while path rules apply.
    #[error("the path has {0}; send it normalized")]
    Path(#[from] super::normalize::Ambiguous),
}

/// gRPC status codes used here (grpc/doc/statuscodes.md).
mod grpc {
    pub const INVALID_ARGUMENT: u8 = 3;
    pub const DEADLINE_EXCEEDED: u8 = 4;
    pub const PERMISSION_DENIED: u8 = 7;
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    pub const UNIMPLEMENTED: u8 = 12;
    pub const UNAVAILABLE: u8 = 14;
    pub const UNAUTHENTICATED: u8 = 16;
}

impl ProxyError {
    /// (HTTP status, short error code, RFC 9209 error type, gRPC status)
    fn classify(&self) -> (StatusCode, &'static str, &'static str, u8) {
        match self {
            Self::NoToken(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no_token",
                "proxy_internal_error",
                grpc::UNAUTHENTICATED,
            ),
            Self::NoCallerToken => (
                StatusCode::UNAUTHORIZED,
                "no_caller_token",
                "http_request_denied",
                grpc::UNAUTHENTICATED,
            ),
            Self::ExchangeRefused(refusal) if exchange_unauthorized(refusal) => (
                StatusCode::UNAUTHORIZED,
                "exchange_refused",
                "http_request_denied",
                grpc::UNAUTHENTICATED,
            ),
            Self::ExchangeRefused(_) => (
                StatusCode::FORBIDDEN,
                "exchange_refused",
                "http_request_denied",
                grpc::PERMISSION_DENIED,
            ),
            Self::UpstreamUnreachable(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                "destination_unavailable",
                grpc::UNAVAILABLE,
            ),
            Self::UpstreamTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "http_response_timeout",
                grpc::DEADLINE_EXCEEDED,
            ),
            Self::BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "http_request_error",
                grpc::RESOURCE_EXHAUSTED,
            ),
            Self::NoRoute(_) => (
                StatusCode::NOT_FOUND,
                "no_route",
                "destination_not_found",
                grpc::UNIMPLEMENTED,
            ),
            Self::Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "http_request_denied",
                grpc::PERMISSION_DENIED,
            ),
            Self::ClientBody(_) => (
                StatusCode::BAD_REQUEST,
                "bad_request_body",
                "http_request_error",
                grpc::INVALID_ARGUMENT,
            ),
            Self::ConnectRefused | Self::TraceRefused(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "http_request_denied",
                grpc::UNIMPLEMENTED,
            ),
            Self::RequestHeadTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_head_too_large",
                "http_request_error",
                grpc::RESOURCE_EXHAUSTED,
            ),
            Self::UpstreamHeadTooLarge(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_head_too_large",
                "http_response_header_section_size",
                grpc::UNAVAILABLE,
            ),
            Self::Malformed(_) => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "http_request_error",
                grpc::INVALID_ARGUMENT,
            ),
        }
    }

    /// The JSON body: `error` and `detail`, plus the token endpoint's own words when the
    /// failure is theirs, and what the proxy's own failure likely means.
    fn body(&self, code: &str) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), json!(code));
        body.insert("detail".into(), json!(self.to_string()));
        let (cause, own) = match self {
            Self::NoToken(no_token) => (no_token.cause(), true),
            Self::ExchangeRefused(refusal) => (Some(&**refusal), false),
            _ => (None, false),
        };
        if let Some(cause) = cause {
            if let Some((error, description)) = cause.provider_error() {
                body.insert("provider_error".into(), json!(error));
                body.insert("provider_error_description".into(), json!(description));
            }
            if let Some(diagnosis) = cause.diagnosis().filter(|_| own) {
                body.insert("diagnosis".into(), json!(diagnosis));
            }
        }
        Value::Object(body)
    }

    /// The `WWW-Authenticate` challenge of a 401 for the caller's own token (RFC 6750 §3).
    fn challenge(&self) -> Option<&'static str> {
        match self {
            Self::NoCallerToken => Some("Bearer"),
            Self::ExchangeRefused(refusal) if exchange_unauthorized(refusal) => {
                Some("Bearer error=\"invalid_token\"")
            }
            _ => None,
        }
    }

    /// The response a caller gets; `grpc` adds the gRPC status headers.
    pub fn to_response(&self, grpc: bool) -> Response<ProxyBody> {
        let (status, code, proxy_status, grpc_status) = self.classify();
        let detail = self.to_string();
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(self.body(code).to_string()))));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(challenge) = self.challenge() {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        let proxy_status = format!(
            "mintproxy; error={proxy_status}; details=\"{}\"",
            sf_string(&detail)
        );
        if let Ok(value) = HeaderValue::try_from(proxy_status) {
            headers.insert("proxy-status", value);
        }
        if grpc {
            headers.insert("grpc-status", HeaderValue::from(u16::from(grpc_status)));
            if let Ok(value) = HeaderValue::try_from(percent_encode(&detail)) {
                headers.insert("grpc-message", value);
            }
        }
        response
    }
}

/// Whether the issuer's refusal says the caller's token is no good (401 to the caller:
/// `invalid_grant`, or the issuer's own 401), rather than that it may not have what the
/// route asks for (403).
fn exchange_unauthorized(refusal: &TokenError) -> bool {
    match refusal {
        TokenError::Rejected { status, error, .. } => *status == 401 || error == "invalid_grant",
        _ => false,
    }
}

/// Text fit for a structured-field string (RFC 8941): printable ASCII, `"` and `\` escaped.
fn sf_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

/// `grpc-message` is percent-encoded UTF-8 (gRPC over HTTP/2 spec).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (b' '..=b'~').contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_is_a_json_405_with_proxy_status() {
        let response = ProxyError::ConnectRefused.to_response(true);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        let headers = response.headers();
        assert_eq!(headers["content-type"], "application/json");
        assert!(headers["proxy-status"]
            .to_str()
            .unwrap()
            .starts_with("mintproxy; error=http_request_denied; details=\"CONNECT"));
        assert_eq!(headers["grpc-status"], "12");
    }

    #[test]
    fn header_texts_are_escaped() {
        assert_eq!(sf_string(r#"a "b" \ é"#), r#"a \"b\" \\ ?"#);
        assert_eq!(percent_encode("100% é"), "100%25 %C3%A9");
    }
}
