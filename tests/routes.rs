//! A config file with several routes and every credential kind, end to end against the
//! stand-in issuer: routing and prefix stripping, 404 and 403, and credential files
//! rotated without a restart.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use mintproxy::demo::echo::Echo;
use mintproxy::demo::keygen::GeneratedKey;
use support::{get, local_listener, send, Issued};

/// Writes `contents` as `name` into the issued key's directory; returns the path.
fn write(issued: &Issued, name: &str, contents: &str) -> PathBuf {
    let path = issued.dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Starts the proxy from a config file written with `toml`.
async fn proxy_from_config(issued: &Issued, toml: &str) -> support::Proxy {
    let config = write(issued, "mintproxy.toml", toml);
    support::start(
        &support::serve_config(&["--config", config.to_str().unwrap()]),
        support::fast_policy(),
    )
    .await
}

/// The bearer token the upstream received in its `n`th request.
fn bearer(echo: &Echo, n: usize) -> String {
    let seen = echo.seen();
    let value = seen[n].headers[http::header::AUTHORIZATION].to_str().unwrap();
    value.strip_prefix("Bearer ").unwrap().to_owned()
}

/// Waits until `done` holds, failing after `limit`.
async fn eventually(limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_pick_their_upstream_and_credential() {
    let issued = support::issuer().await;
    let issuer = issued.issuer.url().to_owned();
    let users = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let billing = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let reports = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();

    issued.issuer.register_client_secret("billing svc", "s3cr:et/+");
    write(&issued, "billing-secret.txt", "s3cr:et/+\n");
    let app_key = GeneratedKey::new("app-key-1", "reports-client");
    issued
        .issuer
        .register_application_key(&app_key.key_id, &app_key.subject, &app_key.public_key_der());
    write(&issued, "reports-app-key.json", &app_key.application_key_json());

    let proxy = proxy_from_config(
        &issued,
        &format!(
            r#"
            [credentials.zitadel]
            key_file = "service-user.json"
            issuer = "{issuer}"

            [credentials.billing]
            client_id = "billing svc"
            client_secret_file = "billing-secret.txt"
            issuer = "{issuer}"
            scopes = ["openid"]

            [credentials.reports]
            client_key_file = "reports-app-key.json"
            issuer = "{issuer}"
            scopes = ["openid"]

            [[routes]]
            prefix = "/"
            upstream = "{users}"
            credential = "zitadel"

            [[routes]]
            prefix = "/billing/"
            strip_prefix = true
            upstream = "{billing}"
            credential = "billing"

            [[routes]]
            prefix = "/billing/reports/"
            strip_prefix = true
            upstream = "{reports}/api"
            credential = "reports"
            "#,
            users = users.url(),
            billing = billing.url(),
            reports = reports.url(),
        ),
    )
    .await;

    for path in [
        "/v2/users?x=1",
        "/billing/invoices?page=2",
        "/billing",
        "/billing/reports/q1",
        "/billingx",
    ] {
        assert_eq!(get(proxy.addr, path).await.status, StatusCode::OK, "{path}");
    }
    let targets = |echo: &Echo| echo.seen().iter().map(|s| s.target.clone()).collect::<Vec<_>>();
    assert_eq!(targets(&users), ["/v2/users?x=1", "/billingx"]);
    assert_eq!(targets(&billing), ["/invoices?page=2", "/"]);
    assert_eq!(targets(&reports), ["/api/q1"]);

    // Each route carried its own credential's token.
    let user_of = |echo: &Echo| issued.issuer.token_user(&bearer(echo, 0));
    assert_eq!(user_of(&users).as_deref(), Some("test-user"));
    assert_eq!(user_of(&billing).as_deref(), Some("billing svc"));
    assert_eq!(user_of(&reports).as_deref(), Some("reports-client"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404_and_policy_is_403_without_contacting_the_upstream() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let proxy = proxy_from_config(
        &issued,
        &format!(
            r#"
            [credentials.zitadel]
            key_file = "service-user.json"
            issuer = "{issuer}"

            [[routes]]
            prefix = "/api/"
            strip_prefix = true
            upstream = "{echo}"
            credential = "zitadel"
            allow_methods = ["GET"]
            allow_paths = ["/management/v1/"]
            deny_paths = ["/management/v1/iam/"]
            "#,
            issuer = issued.issuer.url(),
            echo = echo.url(),
        ),
    )
    .await;

    let missing = get(proxy.addr, "/other/thing").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"], "no_route");

    let post = Request::post(format!("http://{}/api/management/v1/users", proxy.addr))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let refused = send(post).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.json()["detail"],
        "refused by policy: method POST is not allowed on this route"
    );
    assert!(refused.headers["proxy-status"]
        .to_str()
        .unwrap()
        .contains("error=http_request_denied"));

    for path in [
        "/api/admin/v1/x",
        "/api/management/v1/iam/members",
        "/api/management/v1/../../admin/v1/x",
    ] {
        assert_eq!(
            get(proxy.addr, path).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    assert!(
        echo.seen().is_empty(),
        "refused requests never reach the upstream"
    );

    assert_eq!(
        get(proxy.addr, "/api/management/v1/users").await.status,
        StatusCode::OK
    );
    assert_eq!(echo.seen()[0].target, "/management/v1/users");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_is_used_and_rotated_without_restart() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    // A personal access token: here, one the issuer really issued.
    let mint = || mint_for(&issued);
    let first = mint().await;
    let token_file = write(&issued, "pat.txt", &format!("{first}\n"));
    let proxy = proxy_from_config(
        &issued,
        &format!(
            "[credentials.pat]\ntoken_file = \"pat.txt\"\n\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\ncredential = \"pat\"\n",
            echo.url()
        ),
    )
    .await;
    assert_eq!(get(proxy.addr, "/one").await.status, StatusCode::OK);
    assert_eq!(bearer(&echo, 0), first);

    let second = mint().await;
    std::fs::write(&token_file, &second).unwrap();
    eventually(Duration::from_secs(5), async || {
        get(proxy.addr, "/again").await;
        bearer(&echo, echo.seen().len() - 1) == second
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_file_is_used_without_restart() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let proxy = support::proxy(&issued, echo.url(), &[]).await;
    assert_eq!(get(proxy.addr, "/before").await.status, StatusCode::OK);
    assert_eq!(issued.issuer.token_requests(), 1);

    // The operator creates a new key in ZITADEL, deletes the old one, and swaps the file.
    let new_key = GeneratedKey::new("test-key-2", "test-user");
    issued
        .issuer
        .register_key(&new_key.key_id, &new_key.subject, &new_key.public_key_der());
    issued.issuer.remove_key(&issued.key.key_id);
    replace_file(&issued.key_file, &new_key.key_json());

    // The change is noticed and a token minted with the new key, without a restart and
    // without waiting for the old token to expire (the old key could no longer mint).
    eventually(Duration::from_secs(5), async || {
        issued.issuer.token_requests() >= 2
    })
    .await;
    assert_eq!(get(proxy.addr, "/after").await.status, StatusCode::OK);
    assert_ne!(
        bearer(&echo, 1),
        bearer(&echo, 0),
        "the token minted with the new key is in use"
    );
    assert_eq!(echo.seen().len(), 2, "no request was refused and replayed");
}

/// Replaces a file the way an editor or a Secret update does: write aside, rename over.
fn replace_file(path: &Path, contents: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// A token the issuer issued for the harness's service user.
async fn mint_for(issued: &Issued) -> String {
    let credential = mintproxy::config::validate_credential_flags(&mintproxy::config::raw::RawCredential {
        key_file: Some(issued.key_file.clone()),
        issuer: Some(issued.issuer.url().to_owned()),
        ..Default::default()
    })
    .unwrap();
    let token = mintproxy::app::mint_once(&credential, &Default::default())
        .await
        .unwrap();
    token.access_token.expose().to_owned()
}
