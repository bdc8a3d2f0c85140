//! Operating the proxy: the admin listener (`/healthz`, `/readyz` flipping from 503 to
//! 200 when the first token arrives, `/metrics` moving with requests and refreshes), JSON
//! logs from the real binary that parse line by line and carry no secret, the admin
//! flag's validation, and the Kubernetes manifests and Dockerfile using only flags that
//! `mintproxy serve --help` lists.

#[path = "support/served.rs"]
mod served;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use mintproxy::cli::{Cli, Command};
use mintproxy::demo::echo::Echo;
use mintproxy::demo::issuer::{Behaviour, Failure};
use served::{eventually, samples, scrape, value, wait_ready, Served};
use support::{fast_policy, local_listener, serve_config, start_operated, Issued};

/// The flags of `serve` for the issued key in front of `upstream`.
fn flags<'a>(issued: &'a Issued, upstream: &'a str) -> Vec<&'a str> {
    vec![
        "--upstream",
        upstream,
        "--key-file",
        issued.key_file.to_str().unwrap(),
        "--issuer",
        issued.issuer.url(),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_flips_from_503_to_200_when_the_first_token_arrives() {
    let issued = support::issuer().await;
    issued.issuer.set_behaviour(Behaviour {
        failure: Some(Failure::Unavailable),
        ..Behaviour::default()
    });
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let running = start_operated(&serve_config(&flags(&issued, echo.url())), fast_policy()).await;
    let admin = running.admin;

    // While the issuer is down: not ready, and the body says which credential and why.
    let body = eventually(Duration::from_secs(5), "readyz reports the failure", || async {
        let answer = support::get(admin, "/readyz").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        let body = answer.json();
        (body["credentials"][0]["state"] == "failing").then_some(body)
    })
    .await;
    assert_eq!(body["ready"], false);
    assert_eq!(body["credentials"][0]["name"], "default");
    let error = body["credentials"][0]["last_error"].as_str().unwrap();
    assert!(error.contains("temporarily_unavailable"), "{error}");
    // Alive all the same, and the admin paths are not proxied paths.
    assert_eq!(support::get(admin, "/healthz").await.status, StatusCode::OK);
    assert_eq!(
        support::get(admin, "/anything").await.status,
        StatusCode::NOT_FOUND
    );
    let proxied = support::get(running.proxy.addr, "/readyz").await;
    assert_eq!(proxied.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(proxied.json()["error"], "no_token");

    // The issuer recovers: the next retry mints, and readiness follows.
    issued.issuer.set_behaviour(Behaviour::default());
    wait_ready(admin).await;
    let body = support::get(admin, "/readyz").await.json();
    assert_eq!(body["ready"], true);
    assert_eq!(body["credentials"][0]["state"], "ready");
    assert!(
        body["credentials"][0]["expires_in_s"].as_u64().unwrap() > 40_000,
        "{body}"
    );
    assert!(body["credentials"][0].get("last_error").is_none(), "{body}");
    // The proxied path now reaches the echo upstream.
    assert_eq!(
        support::get(running.proxy.addr, "/readyz").await.status,
        StatusCode::OK
    );
    assert_eq!(echo.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_with_requests_and_refreshes() {
    let issued = support::issuer().await;
    // Two-second tokens: the refresher mints again after about 1.6 s.
    issued.issuer.set_behaviour(Behaviour {
        expires_in: 2,
        ..Behaviour::default()
    });
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let running = start_operated(&serve_config(&flags(&issued, echo.url())), fast_policy()).await;
    let (proxy, admin) = (running.proxy.addr, running.admin);
    wait_ready(admin).await;

    let route = ("route", "/");
    let before = scrape(admin).await;
    for i in 0..5 {
        let mut request = Request::get(format!("http://{proxy}/things?page={i}"));
        if i < 2 {
            request = request.header("authorization", "Basic Y2xpZW50OnNlY3JldA==");
        }
        let answer = support::send(request.body(Full::default()).unwrap()).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let post = Request::post(format!("http://{proxy}/things"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    assert_eq!(support::send(post).await.status, StatusCode::OK);
    let after = scrape(admin).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);

    let reads = [route, ("method", "read"), ("status", "200")];
    assert_eq!(delta("mintproxy_requests_total", &reads), 5.0, "{after}");
    let writes = [route, ("method", "write"), ("status", "200")];
    assert_eq!(delta("mintproxy_requests_total", &writes), 1.0);
    assert_eq!(delta("mintproxy_request_duration_seconds_count", &[route]), 6.0);
    assert_eq!(delta("mintproxy_bearer_injected_total", &[route]), 6.0);
    assert_eq!(
        delta("mintproxy_client_authorization_replaced_total", &[route]),
        2.0
    );
    assert_eq!(value(&after, "mintproxy_upstream_errors_total", &[route]), 0.0);

    // The token's expiry is published, within its two seconds.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let credential = ("credential", "default");
    let expiry = value(&after, "mintproxy_token_expiry_timestamp_seconds", &[credential]);
    assert!(expiry > now - 3.0 && expiry < now + 3.0, "{expiry} vs {now}");

    // A refresh moves the fetch counter without any request.
    let ok = [credential, ("result", "ok")];
    let minted = value(&after, "mintproxy_token_fetches_total", &ok);
    assert!(minted >= 1.0);
    eventually(Duration::from_secs(10), "a refresh is counted", || async {
        (value(&scrape(admin).await, "mintproxy_token_fetches_total", &ok) > minted).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_upstream_errors_by_kind_and_refusals_by_status() {
    let issued = support::issuer().await;
    // Nothing listens there: every forward fails with 502.
    let closed = {
        let listener = local_listener().await;
        format!("http://{}", listener.local_addr().unwrap())
    };
    let running = start_operated(&serve_config(&flags(&issued, &closed)), fast_policy()).await;
    let (proxy, admin) = (running.proxy.addr, running.admin);
    wait_ready(admin).await;

    assert_eq!(support::get(proxy, "/x").await.status, StatusCode::BAD_GATEWAY);
    let refused = support::raw(
        proxy,
        "GET /x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    let connect = support::raw(
        proxy,
        &format!("CONNECT example.com:443 HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");

    let text = scrape(admin).await;
    let route = ("route", "/");
    let at = |labels: &[(&str, &str)]| value(&text, "mintproxy_requests_total", labels);
    assert_eq!(at(&[route, ("method", "read"), ("status", "502")]), 1.0);
    assert_eq!(at(&[route, ("method", "read"), ("status", "403")]), 1.0);
    assert_eq!(at(&[route, ("method", "other"), ("status", "405")]), 1.0);
    let unreachable = [route, ("kind", "unreachable")];
    assert_eq!(value(&text, "mintproxy_upstream_errors_total", &unreachable), 1.0);
    // Only the 502 is an upstream error; refusals are not, and nothing was injected.
    let errors: f64 = samples(&text)
        .iter()
        .filter(|s| s.name == "mintproxy_upstream_errors_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(errors, 1.0, "{text}");
    assert_eq!(value(&text, "mintproxy_bearer_injected_total", &[route]), 0.0);
}

/// An upstream that reads one request head and then answers `answer` and closes, or
/// (`None`) never answers; and the count of heads it has read.
async fn raw_upstream(answer: Option<&'static [u8]>) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = local_listener().await;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(AtomicUsize::new(0));
    let counting = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let counting = counting.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                counting.fetch_add(1, Ordering::SeqCst);
                match answer {
                    Some(answer) => {
                        let _ = stream.write_all(answer).await;
                    }
                    // Holds the connection, reading whatever comes, until the proxy closes.
                    None => while let Ok(1..) = stream.read(&mut buffer).await {},
                }
            });
        }
    });
    (url, heads)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_that_breaks_off_is_counted_as_truncated() {
    let issued = support::issuer().await;
    let (upstream, _) = raw_upstream(Some(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")).await;
    let running = start_operated(&serve_config(&flags(&issued, &upstream)), fast_policy()).await;
    let (proxy, admin) = (running.proxy.addr, running.admin);
    wait_ready(admin).await;
    let answer = support::raw(
        proxy,
        &format!("GET /x HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    // The client gets the connection closed on it, with at most the part that came.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    let text = scrape(admin).await;
    let truncated = [("route", "/"), ("kind", "truncated")];
    assert_eq!(
        value(&text, "mintproxy_upstream_errors_total", &truncated),
        1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_abandons_its_upload_is_not_an_unreachable_upstream() {
    use tokio::io::AsyncWriteExt;
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let running = start_operated(&serve_config(&flags(&issued, echo.url())), fast_policy()).await;
    let (proxy, admin) = (running.proxy.addr, running.admin);
    wait_ready(admin).await;
    // Announces a megabyte, sends a tenth of it (more than the replay buffer, so it
    // streams), and goes away.
    let mut client = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let head = format!("POST /upload HTTP/1.1\r\nHost: {proxy}\r\nContent-Length: 1000000\r\n\r\n");
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(&[b'x'; 100_000]).await.unwrap();
    drop(client);
    let route = ("route", "/");
    let text = eventually(
        Duration::from_secs(10),
        "the abandoned upload is counted",
        || async {
            let text = scrape(admin).await;
            let counted: f64 = samples(&text)
                .iter()
                .filter(|s| s.name == "mintproxy_requests_total")
                .map(|s| s.value)
                .sum();
            (counted == 1.0).then_some(text)
        },
    )
    .await;
    let client_body = [route, ("kind", "client_body")];
    assert_eq!(
        value(&text, "mintproxy_upstream_errors_total", &client_body),
        1.0,
        "{text}"
    );
    let unreachable = [route, ("kind", "unreachable")];
    assert_eq!(
        value(&text, "mintproxy_upstream_errors_total", &unreachable),
        0.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "mintproxy_requests_total", &[route, ("status", "502")]),
        0.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_http2_stream_is_logged_as_499_not_as_a_status_never_sent() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let issued = support::issuer().await;
    let (upstream, _) = raw_upstream(None).await;
    let running = start_operated(&serve_config(&flags(&issued, &upstream)), fast_policy()).await;
    let (proxy, admin) = (running.proxy.addr, running.admin);
    wait_ready(admin).await;
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get(format!("http://{proxy}/slow"))
        .body(Full::<Bytes>::default())
        .unwrap();
    // The upstream never answers; the client gives up and resets the stream.
    let gave_up = tokio::time::timeout(Duration::from_millis(300), sender.send_request(request)).await;
    assert!(gave_up.is_err(), "the upstream never answers");
    let text = eventually(
        Duration::from_secs(10),
        "the cancelled request is counted",
        || async {
            let text = scrape(admin).await;
            text.contains("mintproxy_requests_total{").then_some(text)
        },
    )
    .await;
    let route = ("route", "/");
    assert_eq!(
        value(&text, "mintproxy_requests_total", &[route, ("status", "499")]),
        1.0,
        "{text}"
    );
    let errors: f64 = samples(&text)
        .iter()
        .filter(|s| s.name == "mintproxy_upstream_errors_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(errors, 0.0, "the client's doing, not the upstream's: {text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn three_revocations_in_ten_seconds_never_reach_the_client_and_each_retry_is_counted() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let running = start_operated(&serve_config(&flags(&issued, echo.url())), fast_policy()).await;
    let (proxy, admin) = (running.proxy.addr, running.admin);
    wait_ready(admin).await;
    assert_eq!(support::get(proxy, "/before").await.status, StatusCode::OK);
    for revocation in 1..=3 {
        issued.issuer.revoke_all();
        let answer = support::get(proxy, "/after").await;
        assert_eq!(answer.status, StatusCode::OK, "after revocation {revocation}");
    }
    let text = scrape(admin).await;
    let retried = [("route", "/"), ("reason", "unauthorized")];
    assert_eq!(
        value(&text, "mintproxy_upstream_retries_total", &retried),
        3.0,
        "{text}"
    );
    assert_eq!(issued.issuer.token_requests(), 4, "one mint per revocation");
}

/// Parses `serve` flags with an explicit `--listen`, as the binary would.
fn load(args: &[&str]) -> Result<mintproxy::config::Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token.txt");
    support::write_private(&token, "opaque-token\n");
    let mut argv = vec![
        "mintproxy",
        "serve",
        "--upstream",
        "http://127.0.0.1:9",
        "--token-file",
        token.to_str().unwrap(),
    ];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv).map_err(|e| e.to_string())?.command {
        Command::Serve(serve) => serve.load().map_err(|e| e.to_string()),
        _ => unreachable!(),
    }
}

#[test]
fn the_admin_address_is_validated() {
    let same = load(&["--listen", "127.0.0.1:8080", "--admin-listen", "127.0.0.1:8080"]).unwrap_err();
    assert!(
        same.starts_with("--admin-listen: 127.0.0.1:8080 is the proxy's own address"),
        "{same}"
    );
    let overlapping = load(&[
        "--listen",
        "0.0.0.0:8080",
        "--allow-remote",
        "--admin-listen",
        "127.0.0.1:8080",
    ])
    .unwrap_err();
    assert!(overlapping.starts_with("--admin-listen: "), "{overlapping}");

    let remote = load(&["--admin-listen", "0.0.0.0:9090"]).unwrap_err();
    assert!(
        remote.starts_with("--admin-listen: 0.0.0.0:9090 is not a loopback address; pass --allow-remote"),
        "{remote}"
    );
    let config = load(&["--admin-listen", "0.0.0.0:9090", "--allow-remote"]).unwrap();
    assert_eq!(config.admin_listen, Some("0.0.0.0:9090".parse().unwrap()));
    assert_eq!(
        config.listen,
        "127.0.0.1:8080".parse().unwrap(),
        "the proxy stays on loopback"
    );
    let config = load(&["--admin-listen", "127.0.0.1:9090"]).unwrap();
    assert_eq!(config.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(load(&[]).unwrap().admin_listen, None, "off by default");
    let zeros = load(&["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]).unwrap();
    assert_eq!(
        zeros.admin_listen,
        Some("127.0.0.1:0".parse().unwrap()),
        "two free ports"
    );
}

/// The real binary with `--log-format json`: stdout names the proxy's address, every
/// stderr line is a JSON object, the admin listener announces itself, the access line has
/// its fields, SIGTERM stops it cleanly, and no token, assertion or client credential
/// shows anywhere.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_parse_and_carry_no_secret() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let served = Served::start(&flags(&issued, echo.url())).await;
    let (proxy, admin) = (served.proxy, served.admin);
    wait_ready(admin).await;

    let client_secret = "Basic c2VjcmV0LWNsaWVudDpwYXNzd29yZA==";
    let request = Request::builder()
        .method(Method::DELETE)
        .uri(format!(
            "http://{proxy}/v2/users/42?force=true&token=query-secret"
        ))
        .header("authorization", client_secret)
        .body(Full::default())
        .unwrap();
    assert_eq!(support::send(request).await.status, StatusCode::OK);
    let text = scrape(admin).await;
    let replaced = value(
        &text,
        "mintproxy_client_authorization_replaced_total",
        &[("route", "/")],
    );
    assert_eq!(replaced, 1.0, "the binary wires metrics to the proxy: {text}");

    // SIGTERM: drain, stop the admin listener too, exit 0.
    served.terminate();
    let first = served.first_line.clone();
    let (status, lines) = served.exit().await;
    assert!(status.success(), "{status}");
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "the admin listener is closed"
    );

    assert!(!lines.is_empty());
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    for event in &events {
        for key in ["timestamp", "level", "target"] {
            assert!(event.get(key).is_some(), "{key} missing: {event}");
        }
    }
    let access: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["target"] == "mintproxy::access")
        .collect();
    assert_eq!(access.len(), 1, "one access line per request: {access:?}");
    let line = access[0];
    assert_eq!(line["method"], "DELETE");
    assert_eq!(line["path"], "/v2/users/42", "the query is left out");
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "/");
    assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
    let minted = events
        .iter()
        .find(|e| e["message"] == "minted a new token")
        .unwrap_or_else(|| panic!("{lines:?}"));
    // The stand-in, like ZITADEL, does not state the scopes: the requested ones are logged.
    assert_eq!(minted["scope"], mintproxy::config::DEFAULT_SCOPES.join(" "));
    assert_eq!(minted["scope_source"], "requested");

    let everything = format!("{first}\n{}", lines.join("\n"));
    let mut secrets = issued.issuer.secrets_seen();
    assert!(!secrets.is_empty());
    secrets.extend([
        client_secret.to_owned(),
        "c2VjcmV0LWNsaWVudDpwYXNzd29yZA==".to_owned(),
        "query-secret".to_owned(),
    ]);
    for secret in &secrets {
        assert!(!everything.contains(secret.as_str()), "a secret was logged");
    }
}

/// `--shutdown-delay`: on SIGTERM `/readyz` turns 503 at once while the proxy keeps
/// serving new connections for the delay; then it drains and exits 0.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn the_shutdown_delay_keeps_serving_while_unready() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let mut args = flags(&issued, echo.url());
    args.extend(["--shutdown-delay", "2s"]);
    let served = Served::start(&args).await;
    let (proxy, admin) = (served.proxy, served.admin);
    wait_ready(admin).await;
    served.terminate();
    let signalled = Instant::now();
    eventually(Duration::from_secs(1), "/readyz turns 503 at once", || async {
        (support::get(admin, "/readyz").await.status == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    assert_eq!(
        support::get(proxy, "/during-the-delay").await.status,
        StatusCode::OK,
        "a new caller is still served during the delay"
    );
    let (status, _) = served.exit().await;
    assert!(status.success(), "{status}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "exits only after the delay"
    );
}

/// A request still in flight at the drain deadline is cut: the log says how many, and
/// the exit status is non-zero.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn requests_cut_at_the_drain_deadline_are_counted_and_fail_the_exit() {
    let issued = support::issuer().await;
    let (upstream, heads) = raw_upstream(None).await;
    let mut args = flags(&issued, &upstream);
    args.extend(["--shutdown-timeout", "300ms"]);
    let served = Served::start(&args).await;
    let (proxy, admin) = (served.proxy, served.admin);
    wait_ready(admin).await;
    let stuck = tokio::spawn(async move {
        support::raw(proxy, &format!("GET /stuck HTTP/1.1\r\nHost: {proxy}\r\n\r\n")).await
    });
    eventually(
        Duration::from_secs(10),
        "the upstream holds the request",
        || async { (heads.load(Ordering::SeqCst) > 0).then_some(()) },
    )
    .await;
    served.terminate();
    let (status, lines) = served.exit().await;
    assert!(!status.success(), "a cut drain fails the exit: {status}");
    let cut = lines.iter().find_map(|line| {
        let event: serde_json::Value = serde_json::from_str(line).ok()?;
        event.get("requests_cut")?.as_u64()
    });
    assert_eq!(cut, Some(1), "{lines:?}");
    let _ = stuck.await;
}

/// Ctrl-C starts the drain, whose log line says how many requests are in flight and the
/// deadline; a second Ctrl-C during it stops the process at once with status 130 (128 +
/// SIGINT), not after the 30 s drain.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_second_ctrl_c_during_the_drain_stops_at_once() {
    let issued = support::issuer().await;
    let (upstream, heads) = raw_upstream(None).await;
    let served = Served::start(&flags(&issued, &upstream)).await;
    let (proxy, admin) = (served.proxy, served.admin);
    wait_ready(admin).await;
    let held = tokio::spawn(async move {
        support::raw(proxy, &format!("GET /held HTTP/1.1\r\nHost: {proxy}\r\n\r\n")).await
    });
    eventually(
        Duration::from_secs(10),
        "the upstream holds the request",
        || async { (heads.load(Ordering::SeqCst) > 0).then_some(()) },
    )
    .await;

    served.signal("INT");
    let (in_flight, deadline_s) = served
        .log_event("the drain line", |event| {
            let message = event["message"].as_str()?;
            message
                .starts_with("shutting down: draining")
                .then(|| (event["in_flight"].as_u64(), event["deadline_s"].as_f64()))
        })
        .await;
    assert_eq!(in_flight, Some(1), "the drain line counts the held request");
    assert_eq!(deadline_s, Some(30.0), "and names the drain deadline");

    served.signal("INT");
    let signalled = Instant::now();
    let (status, lines) = served.exit().await;
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "stopped at once, not after the 30 s drain: {:?}",
        signalled.elapsed()
    );
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("mintproxy: a second signal (SIGINT): stopping now")),
        "{lines:?}"
    );
    let _ = held.await;
}

/// `--flag` names and `MINTPROXY_*` variables that `mintproxy serve --help` documents.
async fn serve_help() -> (BTreeSet<String>, BTreeSet<String>) {
    let run = support::run_binary(&["serve", "--help"], &[]).await;
    assert!(run.status.success(), "{}", run.stderr);
    let words = |prefix: &str| -> BTreeSet<String> {
        run.stdout
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .filter(|word| word.starts_with(prefix) && word.len() > prefix.len())
            .map(str::to_owned)
            .collect()
    };
    (words("--"), words("MINTPROXY_"))
}

/// Checks one mintproxy container of a manifest against the help: every flag and every
/// variable exists, the command is `serve`, the key comes from the chart's Secret
/// read-only, and the probes hit the admin listener's endpoints on its port.
fn check_container(
    file: &str,
    container: &serde_yaml_ng::Value,
    volumes: &serde_yaml_ng::Value,
    help: &(BTreeSet<String>, BTreeSet<String>),
) {
    let strings = |value: &serde_yaml_ng::Value| -> Vec<String> {
        value
            .as_sequence()
            .map(|items| items.iter().map(|i| i.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    let args = strings(&container["args"]);
    assert_eq!(
        args.first().map(String::as_str),
        Some("serve"),
        "{file}: {args:?}"
    );
    for arg in args.iter().filter(|a| a.starts_with("--")) {
        let flag = arg.split('=').next().unwrap();
        assert!(
            help.0.contains(flag),
            "{file}: {flag} is not a flag of `mintproxy serve`"
        );
    }
    let env: BTreeMap<String, String> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_owned();
            (name, e["value"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    for name in env.keys().filter(|n| n.starts_with("MINTPROXY_")) {
        assert!(
            help.1.contains(name),
            "{file}: {name} is not read by `mintproxy serve`"
        );
    }

    // The key file sits in a read-only mount of the chart's Secret, owner-only.
    let key_file = &env["MINTPROXY_KEY_FILE"];
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    let mount = mounts
        .iter()
        .find(|m| key_file.starts_with(m["mountPath"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("{file}: no mount holds {key_file}"));
    assert_eq!(mount["readOnly"].as_bool(), Some(true), "{file}");
    let volume = volumes
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("{file}: no volume {:?}", mount["name"]));
    let secret = &volume["secret"];
    assert_eq!(secret["secretName"].as_str(), Some("zitadel-admin-sa"), "{file}");
    assert_eq!(
        secret["items"][0]["key"].as_str(),
        Some("zitadel-admin-sa.json"),
        "{file}"
    );
    assert!(
        key_file.ends_with(secret["items"][0]["path"].as_str().unwrap()),
        "{file}"
    );
    assert_eq!(secret["defaultMode"].as_u64(), Some(0o400), "{file}: defaultMode");

    // Probes: /readyz and /healthz on the port --admin-listen binds.
    let admin_port: u16 = args
        .iter()
        .position(|a| a == "--admin-listen")
        .map(|i| args[i + 1].rsplit(':').next().unwrap().parse().unwrap())
        .unwrap_or_else(|| panic!("{file}: no --admin-listen"));
    let ports = container["ports"].as_sequence().unwrap();
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{file}: {probe}");
        let port = match &get["port"] {
            serde_yaml_ng::Value::String(name) => ports
                .iter()
                .find(|p| p["name"].as_str() == Some(name))
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("{file}: no port named {name}")),
            other => other.as_u64().unwrap(),
        };
        assert_eq!(port, u64::from(admin_port), "{file}: {probe} port");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_manifests_parse_and_use_only_real_flags() {
    let help = serve_help().await;
    assert!(help.0.contains("--admin-listen") && help.0.contains("--log-format"));
    assert!(help.1.contains("MINTPROXY_ADMIN_LISTEN") && help.1.contains("MINTPROXY_LOG_FORMAT"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"sidecar.yaml".to_owned()) && names.contains(&"gateway.yaml".to_owned()),
        "{names:?}"
    );

    let mut kinds = Vec::new();
    for (path, name) in files.iter().zip(&names) {
        let text = std::fs::read_to_string(path).unwrap();
        let mut containers = 0;
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let doc: serde_yaml_ng::Value =
                serde::Deserialize::deserialize(document).unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
            let api_version = doc["apiVersion"].as_str();
            let kind = doc["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: a document without kind"));
            assert!(
                api_version.is_some_and(|v| !v.is_empty()),
                "{name}: {kind} without apiVersion"
            );
            assert!(
                doc["metadata"]["name"].as_str().is_some(),
                "{name}: {kind} without a name"
            );
            kinds.push(format!("{name}: {kind}"));
            let pod = match kind {
                "Pod" => &doc["spec"],
                "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => &doc["spec"]["template"]["spec"],
                _ => continue,
            };
            let all = pod["containers"]
                .as_sequence()
                .into_iter()
                .chain(pod["initContainers"].as_sequence())
                .flatten();
            for container in all {
                if container["image"]
                    .as_str()
                    .is_some_and(|i| i.contains("mintproxy"))
                {
                    check_container(name, container, &pod["volumes"], &help);
                    containers += 1;
                }
            }
        }
        assert!(containers > 0, "{name}: no mintproxy container");
    }
    for expected in [
        "gateway.yaml: Deployment",
        "gateway.yaml: Service",
        "sidecar.yaml: Deployment",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "{expected} missing: {kinds:?}"
        );
    }

    // The gateway's Deployment runs two replicas and accepts its Service's name.
    let gateway = std::fs::read_to_string(dir.join("gateway.yaml")).unwrap();
    let deployment: serde_yaml_ng::Value = serde_yaml_ng::Deserializer::from_str(&gateway)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|d: &serde_yaml_ng::Value| d["kind"] == "Deployment")
        .unwrap();
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(2));
    let service: serde_yaml_ng::Value = serde_yaml_ng::Deserializer::from_str(&gateway)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|d: &serde_yaml_ng::Value| d["kind"] == "Service")
        .unwrap();
    let service_name = service["metadata"]["name"].as_str().unwrap();
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap();
    let hosts = args
        .iter()
        .position(|a| a == "--allow-host")
        .map(|i| args[i + 1].as_str().unwrap())
        .expect("the gateway names its Service with --allow-host");
    assert!(hosts.split(',').any(|h| h == service_name), "{hosts}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dockerfile_uses_only_real_flags() {
    let help = serve_help().await;
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let exec_form = |instruction: &str| -> Vec<String> {
        let line = dockerfile
            .lines()
            .find_map(|l| l.strip_prefix(instruction))
            .unwrap_or_else(|| panic!("no {instruction}"));
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{instruction} is not exec form: {e}"))
    };
    assert_eq!(exec_form("ENTRYPOINT "), ["mintproxy"]);
    let cmd = exec_form("CMD ");
    assert_eq!(cmd[0], "serve");
    for flag in cmd.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.0.contains(flag.as_str()),
            "Dockerfile: {flag} is not a flag of serve"
        );
    }
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(dockerfile
        .lines()
        .any(|l| l.starts_with("USER ") && !l.contains("root")));
}
