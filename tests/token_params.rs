//! Token request parameters: a credential's `token_params` (and `--token-param`) reach the
//! issuer with every token request of that credential; names the grant sends itself are
//! refused with their key path; a token file, which makes no token request, refuses them.

mod support;

use http::StatusCode;
use mintproxy::demo::echo::Echo;
use mintproxy::token::jwt_profile::JWT_BEARER_GRANT;
use support::{file_config, get, local_listener, secret_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_parameters_reach_the_issuer_with_each_grant() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    issued.issuer.register_client_secret("billing", "s3cret");
    let secret = secret_file(&issued, "billing-secret.txt", "s3cret");
    let config = file_config(
        &issued,
        &format!(
            r#"
            [credentials.zitadel]
            key_file = "service-user.json"
            issuer = "{issuer}"
            token_params = {{ audience = "users-api", resource = "https://users.internal" }}

            [credentials.billing]
            client_id = "billing"
            client_secret_file = "{secret}"
            issuer = "{issuer}"
            token_params = {{ audience = "billing-api" }}

            [credentials.plain]
            key_file = "service-user.json"
            issuer = "{issuer}"

            [[routes]]
            prefix = "/"
            upstream = "{echo}"
            credential = "zitadel"

            [[routes]]
            prefix = "/billing/"
            upstream = "{echo}"
            credential = "billing"

            [[routes]]
            prefix = "/plain/"
            upstream = "{echo}"
            credential = "plain"
            "#,
            issuer = issued.issuer.url(),
            echo = echo.url(),
        ),
    )
    .unwrap();
    let proxy = support::start(&config, support::fast_policy()).await;
    for path in ["/users", "/billing/invoices", "/plain/x"] {
        assert_eq!(get(proxy.addr, path).await.status, StatusCode::OK, "{path}");
    }

    let jwt_bearer = issued.issuer.received_grants(JWT_BEARER_GRANT);
    assert_eq!(jwt_bearer.len(), 2, "one mint each for zitadel and plain");
    let with_params: Vec<_> = jwt_bearer
        .iter()
        .filter(|r| r.field("audience").is_some())
        .collect();
    assert_eq!(with_params.len(), 1, "only zitadel has parameters");
    assert_eq!(with_params[0].fields("audience"), ["users-api"]);
    assert_eq!(with_params[0].fields("resource"), ["https://users.internal"]);
    assert_eq!(
        with_params[0].fields("grant_type"),
        [JWT_BEARER_GRANT],
        "the grant's own fields stay"
    );

    let client_credentials = issued.issuer.received_grants("client_credentials");
    assert_eq!(client_credentials.len(), 1);
    assert_eq!(client_credentials[0].fields("audience"), ["billing-api"]);
    assert_eq!(client_credentials[0].basic_client.as_deref(), Some("billing"));
    assert_eq!(client_credentials[0].authenticated.as_deref(), Some("billing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_parameters_reach_the_issuer_in_order() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let flags = [
        "--token-param",
        "audience=users-api",
        "--token-param",
        "resource=https://a.internal",
        "--token-param",
        "resource=https://b.internal?x=1&y=2",
    ];
    let proxy = support::proxy(&issued, echo.url(), &flags).await;
    assert_eq!(get(proxy.addr, "/x").await.status, StatusCode::OK);
    let grants = issued.issuer.received_grants(JWT_BEARER_GRANT);
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].fields("audience"), ["users-api"]);
    assert_eq!(
        grants[0].fields("resource"),
        ["https://a.internal", "https://b.internal?x=1&y=2"],
        "a repeated name is sent repeated, each value form-encoded"
    );
}

/// Parameters are part of a credential's definition: another value is another credential.
#[tokio::test]
async fn parameters_are_part_of_the_credentials_definition() {
    let issued = support::issuer().await;
    let config = |audience: &str| {
        let mut flags = issued.flags("http://127.0.0.1:9");
        flags.extend(["--token-param", audience]);
        support::serve_config(&flags).credentials["default"].clone()
    };
    assert_eq!(config("audience=a"), config("audience=a"));
    assert_ne!(config("audience=a"), config("audience=b"));
    assert_ne!(config("audience=a"), config("resource=a"));
}

#[tokio::test]
async fn names_the_grant_sends_itself_are_refused_with_their_key_path() {
    let issued = support::issuer().await;
    let issuer = issued.issuer.url();
    for name in [
        "grant_type",
        "assertion",
        "client_assertion",
        "client_assertion_type",
        "client_id",
        "client_secret",
        "subject_token",
        "Scope",
    ] {
        let toml = format!(
            "[credentials.api]\nkey_file = \"service-user.json\"\nissuer = \"{issuer}\"\n\
             token_params = {{ audience = \"a\", {name} = \"x\" }}\n\n\
             [[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\ncredential = \"api\"\n"
        );
        let error = file_config(&issued, &toml).unwrap_err();
        let expected =
            format!("credentials.api.token_params.{name}: \"{name}\" is a field the grant sends itself");
        assert!(error.starts_with(&expected), "{name}: {error}");
    }
    let error = file_config(
        &issued,
        &format!(
            "[credentials.api]\nkey_file = \"service-user.json\"\nissuer = \"{issuer}\"\n\
             token_params = {{ scope = \"openid\" }}\n\n\
             [[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\ncredential = \"api\"\n"
        ),
    )
    .unwrap_err();
    assert!(
        error.ends_with("; give scopes with credentials.api.scopes"),
        "{error}"
    );

    let mut flags = issued.flags("http://127.0.0.1:9");
    flags.extend(["--token-param", "audience=a", "--token-param", "client_secret=x"]);
    let error = support::try_serve_config(&flags).unwrap_err();
    assert!(
        error.starts_with("--token-param: \"client_secret\" is a field the grant sends itself"),
        "{error}"
    );
    let error = support::try_serve_config(&["--upstream", "http://127.0.0.1:9", "--token-param", "audience"])
        .unwrap_err();
    assert!(error.contains("expected NAME=VALUE"), "{error}");
}

#[tokio::test]
async fn a_token_file_refuses_parameters() {
    let issued = support::issuer().await;
    secret_file(&issued, "pat.txt", "a-ready-token");
    let error = file_config(
        &issued,
        "[credentials.pat]\ntoken_file = \"pat.txt\"\ntoken_params = { audience = \"a\" }\n\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\ncredential = \"pat\"\n",
    )
    .unwrap_err();
    assert_eq!(
        error,
        "credentials.pat.token_params: a token file makes no token request to send them with; \
         they need credentials.pat.key_file, credentials.pat.client_secret_file or \
         credentials.pat.client_key_file"
    );
    let pat = issued.dir.path().join("pat.txt");
    let error = support::try_serve_config(&[
        "--upstream",
        "http://127.0.0.1:9",
        "--token-file",
        pat.to_str().unwrap(),
        "--token-param",
        "audience=a",
    ])
    .unwrap_err();
    assert!(
        error.starts_with("--token-param: a token file makes no token request"),
        "{error}"
    );
}
