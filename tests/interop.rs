//! Interoperability with third-party peers from Debian's packages: curl (HTTP/1.1 and h2c
//! with prior knowledge) and h2load as clients of the proxy, nginx and HAProxy as its
//! upstream on every transport it speaks (HTTP/1.1, h2c, TLS with HTTP/1.1, TLS with
//! HTTP/2), each in front of an in-process server that records what arrived.
//!
//! A missing peer skips its test with a note (`apt-get install nginx-light haproxy
//! nghttp2-client curl openssl`); with `CI=true` it fails instead.

#[path = "support/peers.rs"]
mod peers;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use peers::{Certs, Listener, Peer, Recorder, Seen, SelfSigned};
use support::Issued;

/// The streamed request body: 1 MiB, larger than the proxy's 64 KiB replay buffer.
const BODY_LEN: usize = 1 << 20;

/// How long one curl may take.
const CURL_LIMIT: Duration = Duration::from_secs(20);

/// How a curl client speaks to the proxy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    H1,
    H2c,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::H1 => "h1",
            Client::H2c => "h2c",
        }
    }
}

/// A request body, written to a file for curl.
struct Payload {
    _dir: tempfile::TempDir,
    file: PathBuf,
    bytes: Vec<u8>,
}

impl Payload {
    /// `BODY_LEN` pseudo-random bytes (xorshift), so a dropped or shifted chunk shows.
    fn new() -> Self {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let bytes: Vec<u8> = (0..BODY_LEN)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("body.bin");
        std::fs::write(&file, &bytes).unwrap();
        Payload {
            _dir: dir,
            file,
            bytes,
        }
    }
}

/// What curl got.
struct Answer {
    status: u16,
    body: String,
}

/// Runs curl: a GET, or a POST of `payload` (chunked over HTTP/1.1). `args` choose the
/// protocol and add headers.
async fn curl(curl: &Path, url: &str, payload: Option<&Payload>, args: &[&str]) -> Result<Answer, String> {
    let mut command = tokio::process::Command::new(curl);
    command
        .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .args(args);
    if let Some(payload) = payload {
        command
            .arg("--data-binary")
            .arg(format!("@{}", payload.file.to_str().unwrap()))
            .args(["-H", "Content-Type: application/octet-stream"]);
        if args.contains(&"--http1.1") {
            command.args(["-H", "Transfer-Encoding: chunked"]);
        }
    }
    command.arg(url);
    let ran = peers::run(command, CURL_LIMIT + Duration::from_secs(5), "curl").await;
    if !ran.status.success() {
        return Err(format!("curl failed ({}): {}", ran.status, ran.stderr.trim()));
    }
    let (body, status) = ran.stdout.rsplit_once('\n').unwrap_or(("", &ran.stdout));
    let status = status
        .trim()
        .parse()
        .map_err(|_| format!("curl wrote no status: {:?}", ran.stdout))?;
    Ok(Answer {
        status,
        body: body.to_owned(),
    })
}

/// curl's protocol flags for a client of the proxy.
fn client_args(client: Client) -> &'static [&'static str] {
    match client {
        Client::H1 => &["--http1.1"],
        Client::H2c => &["--http2-prior-knowledge"],
    }
}

/// What the backend should have received.
struct Expected<'a> {
    method: &'a str,
    body: &'a [u8],
    /// Whether the peer received the request over HTTP/2.
    http2: bool,
}

/// Everything wrong with what the backend saw for one request (empty: all well). Never
/// shows a token, only whether it was valid.
fn problems(issued: &Issued, seen: &[Seen], expected: &Expected) -> Vec<String> {
    let mut problems = Vec::new();
    let [seen] = seen else {
        problems.push(format!("the backend saw the request {} times", seen.len()));
        return problems;
    };
    if seen.method != expected.method {
        problems.push(format!("the backend saw method {}", seen.method));
    }
    if seen.authorization.len() != 1 {
        problems.push(format!(
            "the backend saw {} authorization values (want exactly one)",
            seen.authorization.len()
        ));
    }
    for value in &seen.authorization {
        let valid = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|token| issued.issuer.token_user(token))
            .is_some();
        if !valid {
            problems.push("an authorization value is not `Bearer <token issued by the issuer>`".into());
        }
    }
    if let Some(error) = &seen.body_error {
        problems.push(format!("the body broke off at the backend: {error}"));
    }
    if seen.body_len != expected.body.len() {
        problems.push(format!(
            "the body arrived with {} bytes, {} were sent",
            seen.body_len,
            expected.body.len()
        ));
    } else if seen.body_sha256 != peers::sha256(expected.body) {
        problems.push("the body arrived altered (same length, different SHA-256)".into());
    }
    let want = if expected.http2 { "HTTP/2" } else { "HTTP/1.1" };
    if !seen.peer_protocol.starts_with(want) {
        problems.push(format!(
            "the peer received it as {:?}, expected {want}",
            seen.peer_protocol
        ));
    }
    problems
}

/// A short, one-line excerpt of a response body for a failure message.
fn excerpt(body: &str) -> String {
    let line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(240).collect()
}

/// One request through the proxy at `proxy` to the peer; the cell's failure, if any.
#[allow(clippy::too_many_arguments)]
async fn cell(
    name: &str,
    curl_bin: &Path,
    proxy: std::net::SocketAddr,
    client: Client,
    payload: Option<&Payload>,
    issued: &Issued,
    recorder: &Recorder,
    peer_http2: bool,
) -> Option<String> {
    let method = if payload.is_some() { "POST" } else { "GET" };
    let path = format!(
        "/{}",
        name.replace([' ', '='], "/")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "/-_".contains(*c))
            .collect::<String>()
    );
    let answer = curl(
        curl_bin,
        &format!("http://{proxy}{path}"),
        payload,
        client_args(client),
    )
    .await;
    let seen = recorder.take(&path);
    let mut found = match answer {
        Err(error) => vec![error],
        Ok(answer) if answer.status != 200 => {
            vec![format!("status {} ({})", answer.status, excerpt(&answer.body))]
        }
        Ok(answer) => {
            let sent = payload.map_or(0, |p| p.bytes.len());
            if answer.body != format!("ok {sent}\n") {
                vec![format!(
                    "response body {:?}, want the backend's",
                    excerpt(&answer.body)
                )]
            } else {
                Vec::new()
            }
        }
    };
    let expected = Expected {
        method,
        body: payload.map_or(&[][..], |p| &p.bytes),
        http2: peer_http2,
    };
    found.extend(problems(issued, &seen, &expected));
    (!found.is_empty()).then(|| format!("{name} {method}: {}", found.join("; ")))
}

/// The proxy's flags for an upstream listener of `peer`, trusting `ca`.
fn upstream(peer: &Peer, listener: Listener, host: &str, ca: &Path) -> (String, Vec<String>) {
    let port = peer.port(listener);
    let ca = ca.to_str().unwrap().to_owned();
    match listener {
        Listener::Plain => (format!("http://127.0.0.1:{port}"), vec![]),
        Listener::H2c => (
            format!("http://127.0.0.1:{port}"),
            vec!["--upstream-http2".into()],
        ),
        _ => (format!("https://{host}:{port}"), vec!["--upstream-ca".into(), ca]),
    }
}

/// curl straight to one of the peer's listeners (no proxy) with `headers`: a GET of `path`.
async fn direct(
    curl_bin: &Path,
    peer: &Peer,
    certs: &Certs,
    listener: Listener,
    path: &str,
    headers: &[&str],
) -> Answer {
    let port = peer.port(listener);
    let resolve = format!("localhost:{port}:127.0.0.1");
    let ca = certs.ca.to_str().unwrap();
    let mut args: Vec<&str> = headers.iter().flat_map(|h| ["-H", h]).collect();
    let url = match listener {
        Listener::Plain => {
            args.push("--http1.1");
            format!("http://127.0.0.1:{port}{path}")
        }
        Listener::H2c => {
            args.push("--http2-prior-knowledge");
            format!("http://127.0.0.1:{port}{path}")
        }
        _ => {
            let version = if listener.http2() { "--http2" } else { "--http1.1" };
            args.extend([version, "--cacert", ca, "--resolve", &resolve]);
            format!("https://localhost:{port}{path}")
        }
    };
    curl(curl_bin, &url, None, &args).await.unwrap_or_else(|e| {
        panic!(
            "control: curl straight to {} {}: {e}\n{}",
            peer.name,
            listener.name(),
            peer.log_tail(20)
        )
    })
}

/// Checks the peer on its own before the proxy goes through it, on each listener: a
/// forged token gets 200 and is flagged by the checks (the peer works, in the protocol
/// expected, and a foreign token would be caught); two `Authorization` values are either
/// refused by the peer itself (nginx: 400, "client sent duplicate header line") or reach
/// the backend and are flagged (HAProxy), so a duplicate from the proxy cannot pass.
async fn control(curl_bin: &Path, peer: &Peer, certs: &Certs, issued: &Issued, recorder: &Recorder) {
    const FORGED: &str = "an authorization value is not `Bearer <token issued by the issuer>`";
    for listener in Listener::UPSTREAMS {
        let what = format!("control: curl straight to {} {}", peer.name, listener.name());
        let expected = Expected {
            method: "GET",
            body: &[],
            http2: listener.http2(),
        };

        let path = format!("/control/forged/{}", listener.name());
        let answer = direct(
            curl_bin,
            peer,
            certs,
            listener,
            &path,
            &["Authorization: Bearer forged"],
        )
        .await;
        assert_eq!(
            answer.status,
            200,
            "{what}: {}\n{}",
            answer.body,
            peer.log_tail(20)
        );
        assert_eq!(
            problems(issued, &recorder.take(&path), &expected),
            [FORGED],
            "{what}"
        );

        let path = format!("/control/duplicate/{}", listener.name());
        let two = ["Authorization: Bearer forged-1", "Authorization: Bearer forged-2"];
        let answer = direct(curl_bin, peer, certs, listener, &path, &two).await;
        let seen = recorder.take(&path);
        if answer.status == 200 {
            let want = [
                "the backend saw 2 authorization values (want exactly one)",
                FORGED,
                FORGED,
            ];
            assert_eq!(problems(issued, &seen, &expected), want, "{what}, two values");
        } else {
            assert_eq!(answer.status, 400, "{what}, two values: {}", answer.body);
            assert_eq!(seen.len(), 0, "{what}, two values: refused yet forwarded");
        }
    }
}

/// Installed peers, or `None` (skip) when one is missing.
fn tools(names: &[&str]) -> Option<Vec<PathBuf>> {
    names.iter().map(|name| peers::require(name)).collect()
}

/// The matrix for one peer: {curl HTTP/1.1, curl h2c} × {plain, h2c, TLS HTTP/1.1, TLS
/// HTTP/2 upstream} × {GET, streamed 1 MiB POST}.
async fn matrix(peer_name: &str) {
    let Some(found) = tools(&["curl", peer_name]) else {
        return;
    };
    let (curl_bin, peer_bin) = (&found[0], &found[1]);
    let issued = support::issuer().await;
    let recorder = Recorder::start().await;
    let certs = Certs::new();
    let peer = match peer_name {
        "nginx" => peers::nginx(peer_bin, recorder.addr, &certs, None).await,
        _ => peers::haproxy(peer_bin, recorder.addr, &certs).await,
    };
    control(curl_bin, &peer, &certs, &issued, &recorder).await;
    let payload = Payload::new();
    let mut failures = Vec::new();
    let mut cells = 0;
    for listener in Listener::UPSTREAMS {
        let (url, extra) = upstream(&peer, listener, "localhost", &certs.ca);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let proxy = support::proxy(&issued, &url, &extra).await;
        for client in [Client::H1, Client::H2c] {
            for body in [None, Some(&payload)] {
                let name = format!("{peer_name} {} client={}", listener.name(), client.name());
                cells += 1;
                let failed = cell(
                    &name,
                    curl_bin,
                    proxy.addr,
                    client,
                    body,
                    &issued,
                    &recorder,
                    listener.http2(),
                )
                .await;
                failures.extend(failed);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        peer.log_tail(30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_upstream_matrix() {
    matrix("nginx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_upstream_matrix() {
    matrix("haproxy").await;
}

/// `--upstream-ca` with a self-signed certificate made by `openssl req -x509` (which has
/// CA:TRUE): the proxy accepts exactly that certificate when the name and validity fit,
/// over TLS with HTTP/1.1 and with HTTP/2; addressed by a name the certificate does not
/// carry (`127.0.0.1`), it answers 502 and nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_with_openssl_self_signed_certificate() {
    let Some(found) = tools(&["curl", "nginx", "openssl"]) else {
        return;
    };
    let (curl_bin, nginx_bin, openssl) = (&found[0], &found[1], &found[2]);
    let issued = support::issuer().await;
    let recorder = Recorder::start().await;
    let certs = Certs::new();
    let self_signed = SelfSigned::with_openssl(openssl).await;
    let peer = peers::nginx(nginx_bin, recorder.addr, &certs, Some(&self_signed)).await;
    let payload = Payload::new();
    let mut failures = Vec::new();
    for listener in [Listener::SelfSignedH1, Listener::SelfSignedH2] {
        let (url, extra) = upstream(&peer, listener, "localhost", &self_signed.cert);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let proxy = support::proxy(&issued, &url, &extra).await;
        for body in [None, Some(&payload)] {
            let name = format!("nginx {} client=h1", listener.name());
            let failed = cell(
                &name,
                curl_bin,
                proxy.addr,
                Client::H1,
                body,
                &issued,
                &recorder,
                listener.http2(),
            )
            .await;
            failures.extend(failed);
        }

        // The same certificate for the wrong name.
        let (url, extra) = upstream(&peer, listener, "127.0.0.1", &self_signed.cert);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let proxy = support::proxy(&issued, &url, &extra).await;
        let name = format!(
            "nginx {} as https://127.0.0.1 (name mismatch) GET",
            listener.name()
        );
        let path = format!("/mismatch/{}", listener.name());
        match curl(
            curl_bin,
            &format!("http://{}{path}", proxy.addr),
            None,
            &["--http1.1"],
        )
        .await
        {
            Err(error) => failures.push(format!("{name}: {error}")),
            Ok(answer) => {
                let detail = serde_json::from_str::<serde_json::Value>(&answer.body)
                    .ok()
                    .and_then(|v| v["detail"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                let about_name = detail.to_lowercase().contains("name") || detail.contains("127.0.0.1");
                if answer.status != 502 || !about_name {
                    failures.push(format!(
                        "{name}: status {} with detail {detail:?}, want 502 for the name mismatch",
                        answer.status
                    ));
                }
            }
        }
        let reached = recorder.take(&path).len();
        if reached != 0 {
            failures.push(format!("{name}: the request reached the backend {reached} times"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        peer.log_tail(30)
    );
}

/// h2load as the client (h2c with prior knowledge, 4 connections, 8 streams each) through
/// the proxy to nginx over TLS with HTTP/2: every one of 2000 requests succeeds with 2xx,
/// and each reached the backend with exactly one valid token. 2000 requests cross nginx's
/// `keepalive_requests` (1000 by default, HTTP/2 included): nginx then ends the connection
/// with GOAWAY (NO_ERROR), and the requests the proxy had sent past its last stream id were
/// never processed, so they must be retried on a new connection, not failed with 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_through_the_proxy_to_nginx_over_tls_http2() {
    let Some(found) = tools(&["h2load", "nginx"]) else {
        return;
    };
    let (h2load, nginx_bin) = (&found[0], &found[1]);
    let issued = support::issuer().await;
    let recorder = Recorder::start().await;
    let certs = Certs::new();
    let peer = peers::nginx(nginx_bin, recorder.addr, &certs, None).await;
    let (url, extra) = upstream(&peer, Listener::TlsH2, "localhost", &certs.ca);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let proxy = support::proxy(&issued, &url, &extra).await;

    let mut command = tokio::process::Command::new(h2load);
    command
        .args(["-n", "2000", "-c", "4", "-m", "8"])
        .arg(format!("http://{}/h2load", proxy.addr));
    let ran = peers::run(command, Duration::from_secs(40), "h2load").await;
    let line = |prefix: &str| {
        ran.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_owned()
    };
    let (requests, statuses) = (line("requests:"), line("status codes:"));
    let seen = recorder.take("/h2load");
    let valid = seen
        .iter()
        .filter(|s| {
            matches!(&s.authorization[..], [value] if std::str::from_utf8(value).ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .and_then(|t| issued.issuer.token_user(t))
                .is_some())
        })
        .count();
    let http2 = seen
        .iter()
        .filter(|s| s.peer_protocol.starts_with("HTTP/2"))
        .count();
    assert!(
        ran.status.success()
            && requests.contains("2000 succeeded, 0 failed")
            && statuses.contains("2000 2xx, 0 3xx, 0 4xx, 0 5xx")
            && seen.len() == 2000
            && valid == 2000
            && http2 == 2000,
        "h2load client=h2c nginx tls-h2: h2load {}: {requests:?} {statuses:?}; the backend saw {} requests, \
         {valid} with exactly one valid token, {http2} received by nginx over HTTP/2\n{}\n{}",
        ran.status,
        seen.len(),
        ran.stderr.trim(),
        peer.log_tail(30)
    );
}
