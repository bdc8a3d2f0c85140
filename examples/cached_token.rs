//! Using mintproxy as a library: a self-refreshing token for a ZITADEL service user,
//! without the proxy.
//!
//! ```sh
//! cargo run --example cached_token -- sa.json https://my-instance.zitadel.cloud
//! ```
//!
//! Prints when the token expires and the header length, never the token itself.

use std::path::Path;
use std::time::SystemTime;

use mintproxy::app::token_http_client;
use mintproxy::config::default_scopes;
use mintproxy::token::{Endpoint, JwtProfileSource, KeyKind, RefreshPolicy, SigningKey, TokenCache};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(key_file), Some(issuer)) = (args.next(), args.next()) else {
        return Err("usage: cached_token KEY_FILE ISSUER_URL".into());
    };
    // Fail early with a clear message; the source reads the file again at each mint.
    SigningKey::from_file(Path::new(&key_file), KeyKind::ServiceAccount)?;
    let endpoint = Endpoint::new(token_http_client(&Default::default())?, issuer, None);
    let scopes = default_scopes();
    let source = JwtProfileSource::new(&key_file, endpoint, &scopes);

    // One background task keeps the token fresh; `token()` is a lock-free read.
    let stop = CancellationToken::new();
    let cache = TokenCache::spawn("example", source, RefreshPolicy::default(), stop.clone());
    let token = cache.token().await?;
    let remaining = token
        .expires_at
        .and_then(|at| at.duration_since(SystemTime::now()).ok())
        .unwrap_or_default();
    println!(
        "got a token ({} header bytes), valid for {}s, scopes: {}",
        token.header().len(),
        remaining.as_secs(),
        token
            .scope
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), ToString::to_string)
    );
    stop.cancel();
    Ok(())
}
