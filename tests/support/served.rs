//! The real binary as operators run it (`serve --log-format json` with an admin
//! listener), its logs and metrics, and waiting for them: shared by the tests that drive
//! the binary with signals.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support;

/// Polls `check` every 20 ms until it returns `Some`, failing the test after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One sample line of a Prometheus/OpenMetrics text exposition.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses every sample line (comments skipped); panics on a line it cannot read, so a
/// malformed exposition fails the test.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("bad labels: {line}"));
                    (name.to_owned(), parse_labels(body, line))
                }
            };
            Sample { name, labels, value }
        })
        .collect()
}

/// `a="x",b="y\"z"` -> {a: x, b: y"z}.
fn parse_labels(mut body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !body.is_empty() {
        let (key, rest) = body
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label: {line}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("bad escape: {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value: {line}"),
            }
        };
        labels.insert(key.to_owned(), value);
        body = rest[end + 1..].trim_start_matches(',');
    }
    labels
}

/// The value of the one sample `name` whose labels include `labels`; 0 when there is
/// none (a counter not yet incremented has no series).
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<Sample> = samples(text)
        .into_iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "several series match {name} {labels:?}: {matching:?}"
    );
    matching.first().map_or(0.0, |s| s.value)
}

/// Scrapes `/metrics` on the admin listener.
pub async fn scrape(admin: SocketAddr) -> String {
    let answer = support::get(admin, "/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        answer.headers
    );
    let text = String::from_utf8(answer.body.to_vec()).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    text
}

pub async fn wait_ready(admin: SocketAddr) {
    eventually(Duration::from_secs(10), "/readyz answers 200", || async {
        (support::get(admin, "/readyz").await.status == StatusCode::OK).then_some(())
    })
    .await;
}
/// The real binary serving with `--log-format json` and an admin listener: its
/// addresses, and its stderr lines as they come.
pub struct Served {
    child: tokio::process::Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub first_line: String,
    stderr_lines: Arc<Mutex<Vec<String>>>,
    /// Bumped on every new stderr line; closed when stderr ends.
    stderr_grew: tokio::sync::watch::Receiver<()>,
    stderr_done: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Starts `mintproxy serve` with `flags` (after the listen, admin and log flags).
    pub async fn start(flags: &[&str]) -> Self {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend(flags);
        Self::start_listening(&args).await
    }

    /// Like [`Served::start`], with `flags` saying where to listen (or naming a config
    /// file that does).
    pub async fn start_listening(flags: &[&str]) -> Self {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut args = vec!["serve", "--admin-listen", "127.0.0.1:0", "--log-format", "json"];
        args.extend(flags);
        let mut child = support::binary()
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr_lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let collecting = stderr_lines.clone();
        let (grew, stderr_grew) = tokio::sync::watch::channel(());
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr_done = tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                collecting.lock().unwrap().push(line);
                grew.send_replace(());
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let first_line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .expect("the proxy starts")
            .unwrap()
            .unwrap();
        let proxy: SocketAddr = first_line
            .strip_prefix("mintproxy listening on http://")
            .unwrap_or_else(|| panic!("{first_line}"))
            .parse()
            .unwrap();
        let admin = eventually(Duration::from_secs(10), "the admin address is logged", || {
            let lines = stderr_lines.lock().unwrap().clone();
            async move {
                lines.iter().find_map(|line| {
                    let event: serde_json::Value = serde_json::from_str(line).ok()?;
                    event
                        .get("message")?
                        .as_str()?
                        .starts_with("admin listening")
                        .then(|| event["addr"].as_str().unwrap().parse().unwrap())
                })
            }
        })
        .await;
        Self {
            child,
            proxy,
            admin,
            first_line,
            stderr_lines,
            stderr_grew,
            stderr_done,
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends the signal `name` (`TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(killed.success());
    }

    /// The first JSON log event `find` picks, waiting (woken by each new line, up to 30 s)
    /// until one is logged.
    pub async fn log_event<T>(&self, what: &str, find: impl Fn(&serde_json::Value) -> Option<T>) -> T {
        let mut grew = self.stderr_grew.clone();
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let lines = self.stderr_lines.lock().unwrap().clone();
                let found = lines
                    .iter()
                    .filter_map(|line| serde_json::from_str(line).ok())
                    .find_map(|event| find(&event));
                if found.is_some() {
                    return found;
                }
                if grew.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match found {
            Ok(Some(found)) => found,
            Ok(None) => panic!("stderr ended before {what}"),
            Err(_) => panic!("{what} was not logged within 30 s"),
        }
    }

    /// Waits for the exit, and every stderr line.
    pub async fn exit(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the proxy exits after SIGTERM")
            .unwrap();
        self.stderr_done.await.unwrap();
        let lines = self.stderr_lines.lock().unwrap().clone();
        (status, lines)
    }
}
