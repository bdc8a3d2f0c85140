//! RFC 8693 token exchange per route, end to end against the stand-in issuer: the caller's
//! token goes to the issuer as the subject, the route's credential authenticates as the
//! client (a secret by HTTP Basic, or a service user's key as a client assertion), the
//! upstream sees the issued token only, results are cached per caller token, and a missing
//! or refused caller token is answered 401 or 403.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Full;
use mintproxy::demo::echo::Echo;
use mintproxy::demo::issuer::{Behaviour, Failure, Issuer, TokenRequest};
use mintproxy::token::client_credentials::CLIENT_ASSERTION_TYPE;
use mintproxy::token::exchange::{ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT};
use support::{file_config, local_listener, secret_file, send, Answer, Issued};

/// An issuer knowing client `gateway` (secret `gw-s3cret`) and the harness's service user,
/// an echo upstream, and a config with two exchange routes: `/basic/` (the secret, an
/// audience, scopes, a token parameter and a GET-only rule) and `/key/` (the service
/// user's key, nothing asked for).
struct Setup {
    issued: Issued,
    echo: Arc<Echo>,
    config: mintproxy::config::Config,
}

async fn setup() -> Setup {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    issued.issuer.register_client_secret("gateway", "gw-s3cret");
    let secret = secret_file(&issued, "gateway-secret.txt", "gw-s3cret\n");
    let config = file_config(
        &issued,
        &format!(
            r#"
            [credentials.gateway]
            client_id = "gateway"
            client_secret_file = "{secret}"
            issuer = "{issuer}"
            token_params = {{ resource = "https://billing.internal" }}

            [credentials.service-user]
            key_file = "service-user.json"
            issuer = "{issuer}"

            [[routes]]
            prefix = "/basic/"
            strip_prefix = true
            upstream = "{echo}"
            exchange = {{ credential = "gateway", audience = "billing-api", scope = ["openid", "billing"] }}
            allow_methods = ["GET"]

            [[routes]]
            prefix = "/key/"
            upstream = "{echo}"
            exchange = {{ credential = "service-user" }}
            "#,
            issuer = issued.issuer.url(),
            echo = echo.url(),
        ),
    )
    .unwrap();
    Setup { issued, echo, config }
}

/// `method path` through the proxy with `authorization`, if any.
async fn call(addr: std::net::SocketAddr, method: &str, path: &str, authorization: Option<&str>) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    send(request.body(Full::new(Bytes::new())).unwrap()).await
}

/// Has the issuer answer every token request with this refusal.
fn refuse(issuer: &Issuer, status: StatusCode, error: &str, description: &str) {
    issuer.set_behaviour(Behaviour {
        failure: Some(Failure::Refused {
            status,
            error: error.into(),
            description: description.into(),
        }),
        ..Behaviour::default()
    });
}

fn exchanges(issuer: &Issuer) -> Vec<TokenRequest> {
    issuer.received_grants(TOKEN_EXCHANGE_GRANT)
}

/// The one exchange the issuer received, checked to carry `subject` as an access token.
fn only_exchange(issuer: &Issuer, subject: &str) -> TokenRequest {
    let mut sent = exchanges(issuer);
    assert_eq!(sent.len(), 1);
    let exchange = sent.remove(0);
    assert_eq!(exchange.fields("subject_token"), [subject]);
    assert_eq!(exchange.fields("subject_token_type"), [ACCESS_TOKEN_TYPE]);
    exchange
}

/// The bearer token of every request the upstream received, and no header carrying `secret`.
fn upstream_bearers(echo: &Echo, secret: &str) -> Vec<String> {
    echo.seen()
        .iter()
        .map(|seen| {
            for (name, value) in &seen.headers {
                let text = String::from_utf8_lossy(value.as_bytes());
                assert!(
                    !text.contains(secret),
                    "the caller's token reached the upstream in {name}"
                );
            }
            let bearer = seen.headers[header::AUTHORIZATION].to_str().unwrap();
            bearer.strip_prefix("Bearer ").unwrap().to_owned()
        })
        .collect()
}

/// The value of the sample `name{labels}` in `/metrics`, if present.
async fn metric(admin: std::net::SocketAddr, series: &str) -> Option<f64> {
    let text = support::get(admin, "/metrics").await.body;
    let text = String::from_utf8_lossy(&text).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_the_callers_token_as_a_client_with_a_secret_and_caches_the_result() {
    let Setup { issued, echo, config } = setup().await;
    let issuer = &issued.issuer;
    let operated = support::start_operated(&config, support::fast_policy()).await;
    let addr = operated.proxy.addr;
    let alice = issuer.issue("alice", Duration::from_secs(3600));
    let as_alice = format!("Bearer {alice}");

    let answer = call(addr, "GET", "/basic/invoices?page=2", Some(&as_alice)).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(
        answer.json()["token_user"],
        "alice",
        "the issued token is the caller's"
    );
    assert_eq!(answer.json()["target"], "/invoices?page=2");

    let exchange = &only_exchange(issuer, &alice);
    assert_eq!(exchange.fields("audience"), ["billing-api"]);
    assert_eq!(exchange.fields("scope"), ["openid billing"]);
    assert_eq!(
        exchange.fields("resource"),
        ["https://billing.internal"],
        "the credential's token_params"
    );
    assert_eq!(exchange.basic_client.as_deref(), Some("gateway"));
    assert_eq!(exchange.authenticated.as_deref(), Some("gateway"));
    assert_eq!(exchange.field("client_assertion"), None);
    assert_eq!(
        issuer.received().len(),
        1,
        "a credential only exchanges use mints no token of its own"
    );

    // The same caller token again: the cached token, no second exchange.
    let again = call(addr, "GET", "/basic/invoices", Some(&as_alice)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(exchanges(issuer).len(), 1);
    let bearers = upstream_bearers(&echo, &alice);
    assert_eq!(bearers.len(), 2);
    assert_eq!(bearers[0], bearers[1]);
    assert_eq!(issuer.token_user(&bearers[0]).as_deref(), Some("alice"));

    // Another caller token: another exchange, another token.
    let bob = issuer.issue("bob", Duration::from_secs(3600));
    let answer = call(addr, "GET", "/basic/invoices", Some(&format!("Bearer {bob}"))).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["token_user"], "bob");
    assert_eq!(exchanges(issuer).len(), 2);
    assert_eq!(exchanges(issuer)[1].fields("subject_token"), [bob.as_str()]);

    // The route's rules still apply, before any exchange.
    let refused = call(addr, "POST", "/basic/invoices", Some(&as_alice)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(exchanges(issuer).len(), 2);
    assert_eq!(echo.seen().len(), 3);

    let at = |result: &str| format!(r#"mintproxy_token_exchanges_total{{route="/basic",result="{result}"}}"#);
    assert_eq!(metric(operated.admin, &at("exchanged")).await, Some(2.0));
    assert_eq!(metric(operated.admin, &at("cached")).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_as_a_client_with_a_service_users_key() {
    let Setup { issued, echo, config } = setup().await;
    let issuer = &issued.issuer;
    let proxy = support::start(&config, support::fast_policy()).await;
    let carol = issuer.issue("carol", Duration::from_secs(3600));

    let answer = call(proxy.addr, "GET", "/key/me", Some(&format!("bearer {carol}"))).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.json()["token_user"], "carol");
    let exchange = &only_exchange(issuer, &carol);
    assert_eq!(exchange.fields("client_assertion_type"), [CLIENT_ASSERTION_TYPE]);
    assert_eq!(exchange.basic_client, None);
    assert_eq!(
        exchange.authenticated.as_deref(),
        Some("test-user"),
        "the assertion was verified as the service user's"
    );
    assert_eq!(exchange.field("audience"), None, "nothing asked for");
    assert_eq!(exchange.field("scope"), None);
    assert_eq!(upstream_bearers(&echo, &carol).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_caller_token_share_one_exchange() {
    let Setup { issued, echo, config } = setup().await;
    let issuer = &issued.issuer;
    // A slow issuer: every request arrives while the first exchange is under way.
    issuer.set_behaviour(Behaviour {
        delay: Duration::from_millis(500),
        ..Behaviour::default()
    });
    let proxy = support::start(&config, support::fast_policy()).await;
    let dave = format!("Bearer {}", issuer.issue("dave", Duration::from_secs(3600)));
    let requests = (0..8).map(|_| call(proxy.addr, "GET", "/basic/x", Some(&dave)));
    let answers = futures_util::future::join_all(requests).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::OK));
    assert_eq!(exchanges(issuer).len(), 1);
    assert_eq!(echo.seen().len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_caller_token_is_401_with_a_bearer_challenge() {
    let Setup { issued, echo, config } = setup().await;
    let proxy = support::start(&config, support::fast_policy()).await;
    for authorization in [None, Some("Basic Z2F0ZXdheTpndy1zM2NyZXQ="), Some("Bearer ")] {
        let answer = call(proxy.addr, "GET", "/basic/x", authorization).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(answer.json()["error"], "no_caller_token");
    }
    assert!(exchanges(&issued.issuer).is_empty());
    assert!(echo.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issuers_refusal_is_passed_on_without_the_callers_token() {
    let Setup { issued, echo, config } = setup().await;
    let issuer = &issued.issuer;
    let proxy = support::start(&config, support::fast_policy()).await;

    // A token the issuer does not know: invalid_grant, 401.
    let unknown = "not-a-token-the-issuer-knows";
    let answer = call(proxy.addr, "GET", "/basic/x", Some(&format!("Bearer {unknown}"))).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.headers[header::WWW_AUTHENTICATE],
        "Bearer error=\"invalid_token\""
    );
    let body = answer.json();
    assert_eq!(body["error"], "exchange_refused");
    assert_eq!(body["provider_error"], "invalid_grant");
    assert_eq!(
        body["provider_error_description"],
        "subject_token is invalid or has expired"
    );
    assert!(!String::from_utf8_lossy(&answer.body).contains(unknown));

    // A refusal of what the route asks for: 403, the provider's words (its echo of the
    // caller's token cut out).
    let erin = issuer.issue("erin", Duration::from_secs(3600));
    let description = format!("audience billing-api is not for {erin}");
    refuse(issuer, StatusCode::BAD_REQUEST, "invalid_target", &description);
    let answer = call(proxy.addr, "GET", "/basic/x", Some(&format!("Bearer {erin}"))).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(!answer.headers.contains_key(header::WWW_AUTHENTICATE));
    let body = answer.json();
    assert_eq!(body["provider_error"], "invalid_target");
    assert_eq!(
        body["provider_error_description"],
        "audience billing-api is not for [subject token]"
    );
    assert!(!String::from_utf8_lossy(&answer.body).contains(&erin));
    assert!(!answer.headers["proxy-status"].to_str().unwrap().contains(&erin));

    // The proxy's own client refused: not the caller's fault, 503 as for any credential.
    refuse(
        issuer,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    );
    let answer = call(proxy.addr, "GET", "/basic/x", Some(&format!("Bearer {erin}"))).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json()["error"], "no_token");

    // The issuer down: the same 503.
    issuer.set_behaviour(Behaviour {
        failure: Some(Failure::Unavailable),
        ..Behaviour::default()
    });
    let answer = call(proxy.addr, "GET", "/basic/x", Some(&format!("Bearer {erin}"))).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json()["provider_error"], "temporarily_unavailable");

    // Refusals are not cached: once the issuer agrees, the same caller gets through.
    issuer.set_behaviour(Behaviour::default());
    let answer = call(proxy.addr, "GET", "/basic/x", Some(&format!("Bearer {erin}"))).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(exchanges(issuer).len(), 5);
    assert_eq!(echo.seen().len(), 1);
}

/// The upstream refuses the exchanged token (401): it is dropped and the caller's token
/// exchanged again; a caller token revoked meanwhile is then refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchanged_token_the_upstream_refuses_is_exchanged_again() {
    let Setup { issued, echo, config } = setup().await;
    let issuer = &issued.issuer;
    let proxy = support::start(&config, support::fast_policy()).await;
    let frank = issuer.issue("frank", Duration::from_secs(3600));
    let as_frank = format!("Bearer {frank}");
    assert_eq!(
        call(proxy.addr, "GET", "/key/a", Some(&as_frank)).await.status,
        StatusCode::OK
    );

    issuer.revoke_all();
    let answer = call(proxy.addr, "GET", "/key/b", Some(&as_frank)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json()["provider_error"], "invalid_grant");
    assert_eq!(
        exchanges(issuer).len(),
        2,
        "exchanged again after the upstream's 401"
    );
    assert_eq!(echo.seen().len(), 2);
}

#[tokio::test]
async fn an_exchange_route_is_validated_with_its_key_path() {
    let issued = support::issuer().await;
    let issuer = issued.issuer.url();
    secret_file(&issued, "pat.txt", "a-ready-token");
    let config = |route: &str| {
        file_config(
            &issued,
            &format!(
                "[credentials.sa]\nkey_file = \"service-user.json\"\nissuer = \"{issuer}\"\n\n\
                 [credentials.pat]\ntoken_file = \"pat.txt\"\n\n\
                 [[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\ncredential = \"sa\"\n\n\
                 [[routes]]\nprefix = \"/x/\"\nupstream = \"http://127.0.0.1:9\"\n{route}\n"
            ),
        )
    };
    assert_eq!(
        config("credential = \"sa\"\nexchange = { credential = \"sa\" }").unwrap_err(),
        "routes[1].exchange: cannot be combined with routes[1].credential: a route injects its \
         credential's token or exchanges the caller's, not both"
    );
    assert_eq!(
        config("").unwrap_err(),
        "routes[1].credential: is required, or routes[1].exchange = { credential = \"NAME\" } to \
         exchange the caller's token"
    );
    assert_eq!(
        config("exchange = { credential = \"as\" }").unwrap_err(),
        "routes[1].exchange.credential: unknown credential \"as\""
    );
    assert_eq!(
        config("exchange = { credential = \"pat\" }").unwrap_err(),
        "routes[1].exchange.credential: credential \"pat\" is a token file, not a client: an \
         exchange authenticates with client_secret_file, client_key_file or key_file"
    );
    assert_eq!(
        config("exchange = { credential = \"sa\", audience = \"\" }").unwrap_err(),
        "routes[1].exchange.audience: is empty: leave it out, or name the audience"
    );
    let error = config("exchange = { credential = \"sa\", audiences = [\"a\"] }").unwrap_err();
    assert!(error.contains("unknown field `audiences`"), "{error}");
    let valid = config("exchange = { credential = \"sa\", audience = \"a\", scope = [\"openid\"] }").unwrap();
    let route = &valid.routes[1];
    assert_eq!(route.credential, "sa");
    let exchange = route.exchange.as_ref().unwrap();
    assert_eq!(exchange.audience.as_deref(), Some("a"));
    assert_eq!(exchange.scopes, ["openid"]);
}
