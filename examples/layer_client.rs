//! Embedding the bearer layer: your own hyper client calls a ZITADEL-protected API with
//! a self-refreshing service-user token, no proxy in between.
//!
//! ```sh
//! cargo run --example layer_client -- sa.json https://my-instance.zitadel.cloud
//! ```
//!
//! Calls `GET {ISSUER_URL}/auth/v1/users/me` (the service user's own profile) and prints
//! the status and body, never the token.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mintproxy::app::token_http_client;
use mintproxy::config::default_scopes;
use mintproxy::layer::BearerLayer;
use mintproxy::token::{Endpoint, JwtProfileSource, KeyKind, RefreshPolicy, SigningKey, TokenCache};
use tokio_util::sync::CancellationToken;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let (Some(key_file), Some(issuer)) = (args.next(), args.next()) else {
        return Err("usage: layer_client KEY_FILE ISSUER_URL".into());
    };
    let url: http::Uri = format!("{}/auth/v1/users/me", issuer.trim_end_matches('/')).parse()?;

    // The token cache, as in `cached_token.rs`: one background task keeps it fresh.
    // Fail early with a clear message; the source reads the file again at each mint.
    SigningKey::from_file(Path::new(&key_file), KeyKind::ServiceAccount)?;
    let endpoint = Endpoint::new(token_http_client(&Default::default())?, issuer, None);
    // The ZITADEL audience scope is what lets the token call ZITADEL's own APIs.
    let scopes = default_scopes();
    let source = JwtProfileSource::new(&key_file, endpoint, &scopes);
    let stop = CancellationToken::new();
    let cache = TokenCache::spawn("example", source, RefreshPolicy::default(), stop.clone());

    // Any hyper client will do; this one speaks HTTPS with the crate's rustls settings.
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(mintproxy::tls::client_config(&Default::default())?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(https);
    // Every request through `client` now leaves with `Authorization: Bearer <token>`.
    let client = ServiceBuilder::new()
        .layer(BearerLayer::new(cache))
        .service(client);

    let request = http::Request::get(url)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())?;
    let response = client.oneshot(request).await?;
    println!("{}", response.status());
    let body = response.into_body().collect().await?.to_bytes();
    println!("{}", String::from_utf8_lossy(&body));

    stop.cancel();
    Ok(())
}
