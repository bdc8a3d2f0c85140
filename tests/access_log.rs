//! The access log of the real binary: its lines on stderr in both formats, with durations
//! to three decimals and no secret; `--access-log off`; `--access-log-sample` keeping
//! about its share and every failure; and a stalled stderr, which drops and counts lines
//! (`mintproxy_access_log_dropped_total`) but never holds up a request, and loses nothing
//! else: every line not counted as dropped is written by the clean stop.

#[path = "support/peers.rs"]
mod peers;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use peers::Recorder;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr};

/// The longest the binary may take to start, answer or stop before the test fails.
const LIMIT: Duration = Duration::from_secs(30);

/// The static token the proxy injects; it must never reach a log.
const TOKEN: &str = "access-log-test-token-0123456789";

/// `mintproxy serve` in front of a recording upstream, with an admin listener and a
/// static token, its stderr read only when the test says so.
struct Served {
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
    stderr: Lines<BufReader<ChildStderr>>,
    /// The stderr lines read so far.
    lines: Vec<String>,
    _upstream: Recorder,
    _dir: TempDir,
}

impl Served {
    /// Starts the binary with `RUST_LOG=info`, `--log-format format` and `flags`; reads
    /// stderr up to the admin listener's address, then no further.
    async fn start(format: &str, flags: &[&str]) -> Self {
        let upstream = Recorder::start().await;
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        support::write_private(&token_file, TOKEN);
        let upstream_url = format!("http://{}", upstream.addr);
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mintproxy"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("MINTPROXY_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args(["--log-format", format, "serve", "--listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0", "--upstream", &upstream_url])
            .arg("--token-file")
            .arg(&token_file)
            .args(flags)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(LIMIT, stdout.next_line())
            .await
            .expect("the proxy starts")
            .unwrap()
            .expect("the proxy names its address");
        let proxy = first
            .strip_prefix("mintproxy listening on http://")
            .unwrap_or_else(|| panic!("{first}"))
            .parse()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut lines = Vec::new();
        let admin = loop {
            let line = tokio::time::timeout(LIMIT, stderr.next_line())
                .await
                .expect("the admin listener starts")
                .unwrap()
                .unwrap_or_else(|| panic!("stderr ended before the admin address: {lines:?}"));
            let admin = line
                .split_once("admin listening on http://")
                .and_then(|(_, rest)| rest.split([' ', '"']).next()?.parse().ok());
            lines.push(line);
            if let Some(admin) = admin {
                break admin;
            }
        };
        Self {
            child,
            proxy,
            admin,
            stderr,
            lines,
            _upstream: upstream,
            _dir: dir,
        }
    }

    /// SIGTERM, then every stderr line to the end, and a clean exit.
    async fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        let read_all = async {
            while let Some(line) = self.stderr.next_line().await.unwrap() {
                self.lines.push(line);
            }
        };
        tokio::time::timeout(LIMIT, read_all)
            .await
            .expect("stderr ends with the process");
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("the proxy exits after SIGTERM")
            .unwrap();
        assert!(status.success(), "{status}: {:?}", self.lines);
        self.lines
    }

    /// One request through the proxy, on a fresh client.
    async fn request(&self, path_and_query: &str) -> StatusCode {
        let request = Request::get(format!("http://{}{path_and_query}", self.proxy))
            .body(Full::<Bytes>::default())
            .unwrap();
        tokio::time::timeout(LIMIT, support::send(request))
            .await
            .expect("the proxy answers")
            .status
    }

    /// `mintproxy_access_log_dropped_total` from the admin listener.
    async fn dropped(&self) -> u64 {
        let text = String::from_utf8(support::get(self.admin, "/metrics").await.body.to_vec()).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix("mintproxy_access_log_dropped_total "))
            .unwrap_or_else(|| panic!("no dropped-lines counter: {text}"))
            .parse()
            .unwrap()
    }
}

/// The access lines among `lines`.
fn access(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .map(String::as_str)
        .filter(|line| line.contains("mintproxy::access"))
        .collect()
}

/// The digits after the point of the number that follows `key` in `line`.
fn decimals_after<'a>(line: &'a str, key: &str) -> &'a str {
    let (_, rest) = line
        .split_once(key)
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    let number = rest.split([' ', ',', '}']).next().unwrap();
    number.split_once('.').map_or("", |(_, decimals)| decimals)
}

#[tokio::test(flavor = "multi_thread")]
async fn access_lines_reach_stderr_in_both_formats_with_three_decimals_and_no_secret() {
    for format in ["text", "json"] {
        let served = Served::start(format, &[]).await;
        assert_eq!(
            served.request("/v2/users?token=query-secret").await,
            StatusCode::OK
        );
        let lines = served.stop().await;
        let access = access(&lines);
        assert_eq!(access.len(), 1, "one line per request: {lines:?}");
        let line = access[0];
        match format {
            "text" => {
                let (timestamp, fields) = line.split_once("  INFO mintproxy::access: ").unwrap();
                assert!(timestamp.ends_with('Z'), "{line}");
                assert!(
                    fields.starts_with("method=GET path=\"/v2/users\" status=200 duration_ms="),
                    "{line}"
                );
                assert!(fields.ends_with(" route=\"/\""), "{line}");
                assert_eq!(decimals_after(line, "duration_ms=").len(), 3, "{line}");
            }
            _ => {
                let event: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(event["target"], "mintproxy::access");
                assert_eq!(event["level"], "INFO");
                assert_eq!(event["method"], "GET");
                assert_eq!(event["path"], "/v2/users");
                assert_eq!(event["status"], 200);
                assert_eq!(event["route"], "/");
                assert!(event["duration_ms"].as_f64().unwrap() >= 0.0);
                assert_eq!(decimals_after(line, "\"duration_ms\":").len(), 3, "{line}");
            }
        }
        let everything = lines.join("\n");
        for secret in ["query-secret", TOKEN] {
            assert!(!everything.contains(secret), "{secret} was logged: {everything}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_off_writes_no_access_line_and_keeps_the_others() {
    let served = Served::start("text", &["--access-log", "off"]).await;
    for _ in 0..3 {
        assert_eq!(served.request("/x").await, StatusCode::OK);
    }
    let lines = served.stop().await;
    assert_eq!(access(&lines), Vec::<&str>::new());
    assert!(
        lines.iter().any(|line| line.contains("shutting down")),
        "other lines still come: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sample_logs_about_its_share_and_every_failure() {
    let served = Served::start("json", &["--access-log-sample", "0.25", "--deny-path", "/denied"]).await;
    for _ in 0..400 {
        assert_eq!(served.request("/ok").await, StatusCode::OK);
    }
    for _ in 0..20 {
        assert_eq!(served.request("/denied").await, StatusCode::FORBIDDEN);
    }
    let lines = served.stop().await;
    let paths: Vec<String> = access(&lines)
        .iter()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            event["path"].as_str().unwrap().to_owned()
        })
        .collect();
    let ok = paths.iter().filter(|path| *path == "/ok").count();
    let denied = paths.iter().filter(|path| *path == "/denied").count();
    assert_eq!(denied, 20, "every refusal is logged");
    // 100 expected; the bounds are more than five standard deviations away.
    assert!((50..=150).contains(&ok), "{ok} of 400 logged at 0.25");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_stderr_drops_and_counts_lines_but_never_holds_up_a_request() {
    // Nobody reads stderr from here on: once the pipe is full, the writer thread blocks,
    // the small buffer fills, and lines must be dropped instead of waited for.
    let served = Served::start("text", &["--access-log-buffer", "4096"]).await;
    let client = support::client();
    let mut sent = 0u64;
    let dropped = loop {
        for _ in 0..100 {
            let request = Request::get(format!("http://{}/flood", served.proxy))
                .body(Full::<Bytes>::default())
                .unwrap();
            let response = tokio::time::timeout(LIMIT, client.request(request))
                .await
                .expect("a request never waits for the log")
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            sent += 1;
        }
        let dropped = served.dropped().await;
        if dropped > 0 {
            break dropped;
        }
        assert!(sent < 50_000, "no line dropped after {sent} requests");
    };
    let lines = served.stop().await;
    let written = access(&lines).len() as u64;
    assert_eq!(
        written + dropped,
        sent,
        "every line is written or counted: {written} written, {dropped} dropped"
    );
}

#[tokio::test]
async fn bad_access_log_values_name_their_flag() {
    for (flag, value) in [
        ("--access-log-sample", "2"),
        ("--access-log-sample", "often"),
        ("--access-log", "maybe"),
        ("--access-log-buffer", "10"),
    ] {
        let run = support::run_binary(&["serve", flag, value, "--upstream", "http://127.0.0.1:9"], &[]).await;
        assert_eq!(run.status.code(), Some(2), "{flag} {value}: {}", run.stderr);
        assert!(run.stderr.contains(flag), "{flag} {value}: {}", run.stderr);
    }
}
