//! Reload on SIGHUP, through the real binary and a real signal: a changed header is seen
//! and a changed `listen` named as needing a restart; an unchanged credential sends no new
//! token request while a changed one mints anew and a removed one is gone; a broken file
//! is kept out (the old routes serve on, the error is counted and logged with its key
//! path); a request in flight finishes on the configuration it started with; and without
//! `--config`, SIGHUP changes nothing and the process lives on.

#![cfg(unix)]

#[path = "support/served.rs"]
mod served;
mod support;

use std::path::PathBuf;

use http::StatusCode;
use mintproxy::demo::echo::Echo;
use served::{scrape, value, wait_ready, Served};
use support::{local_listener, Issued};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One `[credentials.NAME]` table for the issued key, with `scopes`.
fn credential(issued: &Issued, name: &str, scopes: &str) -> String {
    format!(
        "[credentials.{name}]\nkey_file = {:?}\nissuer = {:?}\nscopes = {scopes}\n\n",
        issued.key_file.to_str().unwrap(),
        issued.issuer.url(),
    )
}

/// One `[[routes]]` table sending `prefix` to `upstream` with `credential`'s token and the
/// header `x-version: version`.
fn route(prefix: &str, upstream: &str, credential: &str, version: &str) -> String {
    format!(
        "[[routes]]\nprefix = {prefix:?}\nupstream = {upstream:?}\ncredential = {credential:?}\n\
         headers = {{ \"x-version\" = {version:?} }}\n\n"
    )
}

/// Writes the config file `text` beside the issued key.
fn write_config(issued: &Issued, text: &str) -> PathBuf {
    let path = issued.dir.path().join("mintproxy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `mintproxy_config_reloads_total{result}` on the admin listener.
async fn reloads(served: &Served, result: &str) -> f64 {
    value(
        &scrape(served.admin).await,
        "mintproxy_config_reloads_total",
        &[("result", result)],
    )
}

/// Sends SIGHUP and waits for the reload's last log line: applied or refused. Returns it.
async fn reload(served: &Served, nth: usize) -> serde_json::Value {
    served.signal("HUP");
    served
        .log_event("the reload's outcome", |event| {
            let message = event["message"].as_str()?;
            let outcome =
                message == "configuration reloaded" || message.starts_with("configuration reload refused");
            (outcome && event["reload"].as_u64() == Some(nth as u64)).then(|| event.clone())
        })
        .await
}

/// The `x-version` header the echo upstream answered with for `path`.
async fn version_seen(served: &Served, path: &str) -> String {
    let answer = support::get(served.proxy, path).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.json()["headers"]["x-version"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_header_is_seen_after_sighup_and_a_changed_listen_is_named_for_a_restart() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let before = format!(
        "listen = \"127.0.0.1:0\"\n\n{}{}",
        credential(&issued, "zitadel", r#"["openid"]"#),
        route("/", echo.url(), "zitadel", "1")
    );
    let file = write_config(&issued, &before);
    let served = Served::start_listening(&["--config", file.to_str().unwrap()]).await;
    wait_ready(served.admin).await;
    assert_eq!(version_seen(&served, "/x").await, "1");

    let after = before
        .replace("127.0.0.1:0", "127.0.0.1:1")
        .replace(r#""x-version" = "1""#, r#""x-version" = "2""#);
    write_config(&issued, &after);
    let reloaded = reload(&served, 1).await;
    assert_eq!(reloaded["message"], "configuration reloaded", "{reloaded}");
    assert_eq!(
        version_seen(&served, "/x").await,
        "2",
        "the new header, on a new connection"
    );
    let restart = served
        .log_event("the restart warning", |event| {
            (event["level"] == "WARN" && event["setting"].is_string()).then(|| event.clone())
        })
        .await;
    assert_eq!(restart["setting"], "listen", "{restart}");
    assert!(
        restart["message"].as_str().unwrap().contains("restart"),
        "{restart}"
    );
    assert_eq!(reloads(&served, "ok").await, 1.0);
    assert_eq!(reloads(&served, "error").await, 0.0);
    // Still listening where it started.
    assert_eq!(version_seen(&served, "/y").await, "2");
    assert_eq!(
        issued.issuer.token_requests(),
        1,
        "the unchanged credential minted once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_credential_keeps_its_token_a_changed_one_mints_anew_a_removed_one_is_gone() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    // `changed` changes by its token parameters: every field of a definition counts.
    let config = |changed_params: &str, with_removed: bool| {
        let mut text = credential(&issued, "kept", r#"["openid"]"#)
            + &credential(&issued, "changed", r#"["openid"]"#)
            + changed_params
            + &route("/kept/", echo.url(), "kept", "1")
            + &route("/changed/", echo.url(), "changed", "1");
        if with_removed {
            text += &credential(&issued, "removed", r#"["openid"]"#);
            text += &route("/removed/", echo.url(), "removed", "1");
        }
        text
    };
    let file = write_config(&issued, &config("", true));
    let served = Served::start(&["--config", file.to_str().unwrap()]).await;
    wait_ready(served.admin).await;
    assert_eq!(issued.issuer.token_requests(), 3);
    let bearer = |path: &str| {
        let seen = echo.seen();
        let last = seen.iter().rev().find(|s| s.target.starts_with(path)).unwrap();
        last.headers["authorization"].clone()
    };
    version_seen(&served, "/kept/a").await;
    let kept_before = bearer("/kept/");

    write_config(
        &issued,
        &config("token_params = { audience = \"billing-api\" }\n\n", false),
    );
    let reloaded = reload(&served, 1).await;
    assert_eq!(reloaded["credentials_kept"], r#"["kept"]"#, "{reloaded}");
    assert_eq!(reloaded["credentials_started"], r#"["changed"]"#, "{reloaded}");
    assert_eq!(
        reloaded["credentials_stopped"], r#"["changed", "removed"]"#,
        "{reloaded}"
    );
    // A request on the changed credential waits for its new cache's first token.
    version_seen(&served, "/changed/a").await;
    version_seen(&served, "/kept/b").await;
    assert_eq!(
        bearer("/kept/"),
        kept_before,
        "the kept credential's token serves on"
    );
    assert_eq!(
        issued.issuer.token_requests(),
        4,
        "one new token request: the changed credential's"
    );
    let text = scrape(served.admin).await;
    let fetches = |credential: &str| {
        value(
            &text,
            "mintproxy_token_fetches_total",
            &[("credential", credential), ("result", "ok")],
        )
    };
    assert_eq!((fetches("kept"), fetches("changed")), (1.0, 2.0), "{text}");
    let expiry = |credential: &str| {
        value(
            &text,
            "mintproxy_token_expiry_timestamp_seconds",
            &[("credential", credential)],
        )
    };
    assert_eq!(
        expiry("removed"),
        0.0,
        "no expiry watched for a removed credential: {text}"
    );
    assert!(expiry("kept") > 0.0, "{text}");
    assert_eq!(
        support::get(served.proxy, "/removed/a").await.status,
        StatusCode::NOT_FOUND
    );
    let ready = support::get(served.admin, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    let names: Vec<String> = ready.json()["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["changed", "kept"], "readiness follows the reload");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_file_is_kept_out_logged_with_its_key_path_and_counted() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let good = |version: &str| {
        credential(&issued, "zitadel", r#"["openid"]"#) + &route("/", echo.url(), "zitadel", version)
    };
    let file = write_config(&issued, &good("1"));
    let served = Served::start(&["--config", file.to_str().unwrap()]).await;
    wait_ready(served.admin).await;

    // Valid TOML, a wrong reference, and a new header that must not be applied.
    let broken = good("2").replace(r#"credential = "zitadel""#, r#"credential = "zitadl""#);
    write_config(&issued, &broken);
    let refused = reload(&served, 1).await;
    assert_eq!(refused["level"], "ERROR", "{refused}");
    assert_eq!(
        refused["error"], r#"routes[0].credential: unknown credential "zitadl""#,
        "{refused}"
    );
    assert_eq!(reloads(&served, "error").await, 1.0);
    assert_eq!(reloads(&served, "ok").await, 0.0);
    assert_eq!(
        version_seen(&served, "/x").await,
        "1",
        "the running configuration stays"
    );

    // Not TOML at all: the file, line and column.
    write_config(&issued, "[[routes]\n");
    let refused = reload(&served, 2).await;
    let error = refused["error"].as_str().unwrap();
    assert!(error.starts_with(&format!("{}:1:", file.display())), "{refused}");
    assert_eq!(reloads(&served, "error").await, 2.0);

    // Fixed: applied.
    write_config(&issued, &good("3"));
    assert_eq!(reload(&served, 3).await["message"], "configuration reloaded");
    assert_eq!(version_seen(&served, "/x").await, "3");
    assert_eq!(reloads(&served, "ok").await, 1.0);
    assert_eq!(issued.issuer.token_requests(), 1);
}

/// An upstream that takes one request, hands over its head, and answers only when
/// released.
async fn held_upstream() -> (
    String,
    tokio::sync::oneshot::Receiver<String>,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = local_listener().await;
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (head_tx, head_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buffer = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the proxy sends a whole head");
            head.extend_from_slice(&buffer[..n]);
        }
        head_tx.send(String::from_utf8(head).unwrap()).unwrap();
        release_rx.await.unwrap();
        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nold config";
        stream.write_all(answer.as_bytes()).await.unwrap();
    });
    (url, head_rx, release_tx)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_in_flight_finishes_on_the_configuration_it_started_with() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let (held, head, release) = held_upstream().await;
    let config = |scopes: &str, upstream: &str, version: &str| {
        credential(&issued, "zitadel", scopes) + &route("/", upstream, "zitadel", version)
    };
    let file = write_config(&issued, &config(r#"["openid"]"#, &held, "1"));
    let served = Served::start(&["--config", file.to_str().unwrap()]).await;
    wait_ready(served.admin).await;
    let proxy = served.proxy;
    let in_flight = tokio::spawn(async move { support::get(proxy, "/slow").await });
    let head = head.await.unwrap();
    assert!(head.contains("x-version: 1\r\n"), "{head}");

    // Another upstream, header and credential; the held request's credential is replaced.
    write_config(&issued, &config(r#"["openid", "profile"]"#, echo.url(), "2"));
    assert_eq!(reload(&served, 1).await["message"], "configuration reloaded");
    assert_eq!(
        version_seen(&served, "/new").await,
        "2",
        "new requests take the new routes"
    );

    release.send(()).unwrap();
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(&answer.body[..], b"old config");
    assert_eq!(
        echo.seen().len(),
        1,
        "only the request after the reload reached the new upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_config_file_sighup_reloads_nothing_and_the_process_lives_on() {
    let issued = support::issuer().await;
    let echo = Echo::start(local_listener().await, issued.issuer.clone()).unwrap();
    let served = Served::start(&issued.flags(echo.url())).await;
    // At once: the handler is in place before the proxy serves.
    served.signal("HUP");
    let ignored = served
        .log_event("the note that there is nothing to reload", |event| {
            let message = event["message"].as_str()?;
            message.contains("nothing to reload").then(|| event.clone())
        })
        .await;
    assert_eq!(ignored["level"], "WARN", "{ignored}");
    wait_ready(served.admin).await;
    assert_eq!(support::get(served.proxy, "/x").await.status, StatusCode::OK);
    assert_eq!(
        reloads(&served, "ok").await + reloads(&served, "error").await,
        0.0
    );
    served.terminate();
    let (status, _) = served.exit().await;
    assert!(status.success(), "SIGHUP did not end the process: {status}");
}
