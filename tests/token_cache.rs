//! The token cache seen from a caller of the proxy: single flight on a cold start,
//! refresh ahead of expiry, stale-while-failing, an immediate 503 when no valid token
//! is left, quick recovery after an outage, a new token for every revocation, and a
//! refresher that survives a hostile token response.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use mintproxy::demo::echo::Echo;
use mintproxy::demo::issuer::{Behaviour, Failure};
use mintproxy::demo::{json_response, spawn_server};
use mintproxy::token::RefreshPolicy;
use support::{get, local_listener};

fn behaviour(expires_in: u64, failure: Option<Failure>) -> Behaviour {
    Behaviour {
        expires_in,
        failure,
        ..Behaviour::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_callers_on_a_cold_start_cause_one_token_request() {
    let issued = support::issuer().await;
    // A slow token endpoint keeps the first fetch in flight while all callers arrive.
    issued.issuer.set_behaviour(Behaviour {
        delay: Duration::from_millis(300),
        ..Behaviour::default()
    });
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let proxy = support::proxy(&issued, echo.url(), &[]).await;

    let addr = proxy.addr;
    let calls: Vec<_> = (0..100)
        .map(|i| tokio::spawn(async move { get(addr, &format!("/call/{i}")).await }))
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(issued.issuer.token_requests(), 1);
    assert_eq!(echo.seen().len(), 100, "no request was refused and replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_token_is_refreshed_ahead_of_expiry() {
    let issued = support::issuer().await;
    issued.issuer.set_behaviour(behaviour(2, None));
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let proxy = support::proxy(&issued, echo.url(), &[]).await;

    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(4500) {
        assert_eq!(get(proxy.addr, "/tick").await.status, StatusCode::OK);
        sent += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Refreshes near 1.6 s, 3.2 s (and maybe 4.8 s, jitter allowing).
    let fetches = issued.issuer.token_requests();
    assert!((3..=4).contains(&fetches), "{fetches} token requests");
    // The echo upstream refuses expired tokens; a refused request would have been replayed
    // and show up twice.
    assert_eq!(
        echo.seen().len(),
        sent,
        "no request ever carried an expired token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down_goes_unnoticed_while_the_token_is_valid() {
    let issued = support::issuer().await;
    issued.issuer.set_behaviour(behaviour(3, None));
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let proxy = support::proxy(&issued, echo.url(), &[]).await;
    assert_eq!(get(proxy.addr, "/first").await.status, StatusCode::OK);

    issued
        .issuer
        .set_behaviour(behaviour(3, Some(Failure::Unavailable)));
    // Until the refresher (at ~80 % of 3 s) has failed twice, every request still succeeds
    // with the old token.
    let outage = Instant::now();
    while issued.issuer.token_requests() < 3 {
        assert_eq!(get(proxy.addr, "/during").await.status, StatusCode::OK);
        assert!(
            outage.elapsed() < Duration::from_secs(5),
            "the refresher never retried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Then the token expires: no valid token, so 503 at once with the provider's words.
    let answer = loop {
        let answer = get(proxy.addr, "/expired").await;
        if answer.status != StatusCode::OK {
            break answer;
        }
        assert!(
            outage.elapsed() < Duration::from_secs(5),
            "the expired token was still used"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json()["provider_error"], "temporarily_unavailable");

    // The provider comes back: service returns within the capped backoff.
    issued.issuer.set_behaviour(behaviour(3, None));
    let back = Instant::now();
    loop {
        if get(proxy.addr, "/back").await.status == StatusCode::OK {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(3), "service did not return");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_valid_token_answers_503_with_the_reason_at_once() {
    let issued = support::issuer().await;
    issued
        .issuer
        .set_behaviour(behaviour(60, Some(Failure::Unavailable)));
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let proxy = support::proxy(&issued, echo.url(), &[]).await;

    for _ in 0..5 {
        let started = Instant::now();
        let answer = get(proxy.addr, "/nothing").await;
        // A bound against hanging, not a performance figure: the fetch itself is local.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers["content-type"], "application/json");
        assert!(answer.headers["proxy-status"]
            .to_str()
            .unwrap()
            .starts_with("mintproxy; error=proxy_internal_error"));
        let body = answer.json();
        assert_eq!(body["error"], "no_token");
        assert_eq!(body["provider_error"], "temporarily_unavailable");
        assert_eq!(body["provider_error_description"], "the issuer is down");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("refused the grant (503)"),
            "{body}"
        );
    }
    assert!(
        echo.seen().is_empty(),
        "nothing reached the upstream without a token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_without_a_token_is_a_failure_not_a_token() {
    let issued = support::issuer().await;
    issued.issuer.set_behaviour(behaviour(60, Some(Failure::NoToken)));
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let proxy = support::proxy(&issued, echo.url(), &[]).await;
    let answer = get(proxy.addr, "/").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let detail = answer.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("without a usable token: no `access_token`"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_is_diagnosed() {
    let issued = support::issuer().await;
    issued.issuer.remove_key(&issued.key.key_id);
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let proxy = support::proxy(&issued, echo.url(), &[]).await;
    let body = get(proxy.addr, "/").await.json();
    assert_eq!(body["provider_error"], "invalid_grant");
    assert_eq!(body["provider_error_description"], "key not found: unknown kid");
    assert!(
        body["diagnosis"]
            .as_str()
            .unwrap()
            .starts_with("unknown or expired key"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_with_a_trailing_slash_is_an_audience_mismatch() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    // With the token endpoint given, no discovery corrects the issuer string, and ZITADEL
    // compares `aud` as a string.
    let issuer = format!("{}/", issued.issuer.url());
    let token_endpoint = format!("{}/oauth/v2/token", issued.issuer.url());
    let proxy = support::proxy(
        &issued,
        echo.url(),
        &["--issuer", &issuer, "--token-endpoint", &token_endpoint],
    )
    .await;
    let body = get(proxy.addr, "/").await.json();
    assert_eq!(body["provider_error_description"], "audience is not valid");
    assert!(
        body["diagnosis"]
            .as_str()
            .unwrap()
            .starts_with("audience mismatch"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_supplies_the_exact_issuer_string() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    // A trailing slash on --issuer is harmless with discovery: `aud` comes from the document.
    let issuer = format!("{}/", issued.issuer.url());
    let proxy = support::proxy(&issued, echo.url(), &["--issuer", &issuer]).await;
    assert_eq!(get(proxy.addr, "/").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_returns_within_a_second_of_the_issuer_despite_a_long_backoff() {
    let issued = support::issuer().await;
    issued.issuer.set_behaviour(behaviour(2, None));
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    // After a failure the refresher alone would wait 5 to 10 s.
    let policy = RefreshPolicy {
        backoff_base: Duration::from_secs(10),
        backoff_cap: Duration::from_secs(10),
        ..RefreshPolicy::default()
    };
    let proxy = support::proxy_with_policy(&issued, echo.url(), &[], policy).await;
    assert_eq!(get(proxy.addr, "/first").await.status, StatusCode::OK);

    // The issuer goes down; the refresh (at ~1.6 s) fails and the token expires at 1.9 s.
    issued
        .issuer
        .set_behaviour(behaviour(2, Some(Failure::Unavailable)));
    let outage = Instant::now();
    while get(proxy.addr, "/during").await.status == StatusCode::OK {
        assert!(
            outage.elapsed() < Duration::from_secs(4),
            "the token never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every request is answered 503 at once, and has the refresher retry (at most every
    // 250 ms), well before its backoff would.
    let failed = issued.issuer.token_requests();
    while issued.issuer.token_requests() < failed + 2 {
        let started = Instant::now();
        assert_eq!(
            get(proxy.addr, "/down").await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(started.elapsed() < Duration::from_secs(1), "a request waited");
        assert!(outage.elapsed() < Duration::from_secs(4), "no retry on demand");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    issued.issuer.set_behaviour(behaviour(2, None));
    let back = Instant::now();
    while get(proxy.addr, "/back").await.status != StatusCode::OK {
        assert!(
            back.elapsed() < Duration::from_secs(1),
            "service not back within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_revocation_gets_a_new_token_even_three_within_ten_seconds() {
    let stack = support::stack().await;
    let issuer = &stack.issued.issuer;
    let started = Instant::now();
    assert_eq!(get(stack.proxy.addr, "/first").await.status, StatusCode::OK);
    for revocation in 1..=3 {
        issuer.revoke_all();
        // The upstream refuses the revoked token; the proxy mints and replays.
        let answer = get(stack.proxy.addr, "/after").await;
        assert_eq!(answer.status, StatusCode::OK, "revocation {revocation}");
        assert_eq!(issuer.token_requests(), 1 + revocation);
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(stack.echo.seen().len(), 1 + 3 * 2, "one refusal per revocation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_expires_in_is_refused_and_the_refresher_lives_on() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    // A token endpoint that answers with a lifetime past what a clock can hold.
    let listener = local_listener().await;
    let token_endpoint = format!("http://{}/oauth/v2/token", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    spawn_server(listener, move |_request| {
        counted.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::json!({
            "access_token": "abc",
            "token_type": "Bearer",
            "expires_in": 9_223_372_036_854_775_808_u64,
        });
        async move { json_response(StatusCode::OK, &body) }
    });
    let proxy = support::proxy(
        &issued,
        echo.url(),
        &[
            "--issuer",
            issued.issuer.url(),
            "--token-endpoint",
            &token_endpoint,
        ],
    )
    .await;

    let started = Instant::now();
    loop {
        let answer = get(proxy.addr, "/").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        let detail = answer.json()["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.contains("`expires_in` is 9223372036854775808: more than 10 years"),
            "{detail}"
        );
        // The refresher is alive: it keeps asking.
        if requests.load(Ordering::SeqCst) >= 3 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "the refresher died");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(echo.seen().is_empty());
}
