//! End-to-end tests of the `mintproxy` binary itself: flags and environment variables,
//! output formats, exit codes, error messages, and what reaches the logs.
//!
//! The library tests exercise the same code in process; these run the real executable as
//! a subprocess, because exit codes, stdout/stderr separation, the tracing setup in
//! `main.rs` and signal handling only exist there. The stand-in issuer and the echo
//! upstream run inside the test process (on a multi-threaded runtime, so they keep
//! serving while a test awaits the child).

mod support;

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use mintproxy::config::DEFAULT_SCOPES;
use mintproxy::demo::echo::Echo;
use mintproxy::demo::issuer::Behaviour;
use mintproxy::demo::keygen::GeneratedKey;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// The longest any single run of the binary may take before the test fails (a hang is a
/// failure, not a stuck CI job).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The issuer's `expires_in` unless told otherwise (see `Behaviour::default`).
const DEFAULT_EXPIRES_IN: u64 = 43_200;

/// What one finished run of the binary produced.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// `mintproxy` with a clean environment: no inherited `MINTPROXY_*` or `RUST_LOG`, so the
/// developer's shell cannot change what a test sees.
fn mintproxy() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mintproxy"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MINTPROXY_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG").kill_on_drop(true);
    command
}

/// Runs `mintproxy args...` with `env` added, to completion (bounded by [`RUN_TIMEOUT`]),
/// with a token cache of its own: tests share key ids, and issuers reuse ports.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let cache = tempfile::tempdir().unwrap();
    let mut command = mintproxy();
    command
        .env("XDG_CACHE_HOME", cache.path())
        .args(args)
        .envs(env.iter().copied());
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("mintproxy {args:?} did not finish within {RUN_TIMEOUT:?}"))
        .expect("the mintproxy binary starts");
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `mintproxy token --key-file F --issuer URL extra...`.
async fn token(key_file: &Path, issuer: &str, extra: &[&str]) -> Run {
    let key_file = key_file.to_str().expect("temp paths are UTF-8");
    let mut args = vec!["token", "--key-file", key_file, "--issuer", issuer];
    args.extend_from_slice(extra);
    run(&args, &[]).await
}

/// A run that failed the way `main` fails on purpose: exit code 1 (not a panic's 101,
/// not a signal), nothing on stdout, and no panic message.
fn assert_clean_failure(run: &Run, what: &str) {
    assert_eq!(run.status.code(), Some(1), "{what}: exit status; {run:#?}");
    assert_eq!(run.stdout, "", "{what}: stdout must stay empty; {run:#?}");
    assert!(
        !run.stderr.contains("panicked"),
        "{what}: must not panic; {run:#?}"
    );
}

/// A successful run, with the whole output shown when it was not.
fn assert_success(run: &Run, what: &str) {
    assert!(run.status.success(), "{what}: expected success; {run:#?}");
}

/// The base64 body lines of a PEM block: the private key material itself. Short lines
/// (the tail of the last one) are skipped so a chance match cannot fail a test.
fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|line| !line.starts_with("-----") && line.len() >= 16)
        .map(str::to_owned)
        .collect()
}

/// Asserts `text` contains none of `secrets`, naming which kind leaked (never printing
/// the whole secret, so the failure output is not itself a leak of a real key).
fn assert_hides<'a>(text: &str, secrets: impl IntoIterator<Item = &'a String>, what: &str) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what} leaked (starting {:?})",
            secret.chars().take(8).collect::<String>()
        );
    }
}

/// True if some `Bearer ` in `text` is followed by 20 or more token characters
/// (`[A-Za-z0-9_-]`): a raw bearer token rather than `Bearer [redacted]`.
fn has_raw_bearer(text: &str) -> bool {
    text.match_indices("Bearer ").any(|(at, prefix)| {
        text[at + prefix.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .count()
            >= 20
    })
}

/// `n` random bytes as standard base64: key-looking text no real key contains.
fn random_base64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness is available");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A PKCS#1 PEM cut after half of its body lines but still framed by BEGIN/END lines, so
/// it decodes as PEM and only the DER inside is damaged.
fn truncated_pem(pem: &str) -> String {
    let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let kept = body[..body.len() / 2].join("\n");
    format!("-----BEGIN RSA PRIVATE KEY-----\n{kept}\n-----END RSA PRIVATE KEY-----\n")
}

// ---------------------------------------------------------------------------------------
// mintproxy token
// ---------------------------------------------------------------------------------------

/// The default output is exactly one line, the token, and that token is one the issuer
/// issued to the key's user, after exactly one token request (no retries, no second mint).
#[tokio::test(flavor = "multi_thread")]
async fn token_prints_one_accepted_token() {
    let issued = support::issuer().await;
    let run = token(&issued.key_file, issued.issuer.url(), &[]).await;
    assert_success(&run, "token");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line; {run:#?}");
    assert!(run.stdout.ends_with('\n'));
    assert_eq!(issued.issuer.token_user(lines[0]).as_deref(), Some("test-user"));
    assert_eq!(issued.issuer.token_requests(), 1);
    assert_hides(&run.stderr, &issued.issuer.secrets_seen(), "a secret");
}

/// `--format header` prints a ready-to-use header line.
#[tokio::test(flavor = "multi_thread")]
async fn token_format_header() {
    let issued = support::issuer().await;
    let run = token(&issued.key_file, issued.issuer.url(), &["--format", "header"]).await;
    assert_success(&run, "token --format header");
    let line = run
        .stdout
        .strip_suffix('\n')
        .expect("the line ends with a newline");
    assert!(!line.contains('\n'), "exactly one line; {run:#?}");
    let token = line
        .strip_prefix("Authorization: Bearer ")
        .unwrap_or_else(|| panic!("not a header line: {run:#?}"));
    assert_eq!(issued.issuer.token_user(token).as_deref(), Some("test-user"));
    assert_eq!(issued.issuer.token_requests(), 1);
}

/// `--format json` prints the token with its type, lifetime and scopes.
#[tokio::test(flavor = "multi_thread")]
async fn token_format_json() {
    let issued = support::issuer().await;
    let run = token(&issued.key_file, issued.issuer.url(), &["--format", "json"]).await;
    assert_success(&run, "token --format json");
    assert_eq!(run.stdout.lines().count(), 1, "one line of JSON; {run:#?}");
    let json: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("not JSON: {run:#?}"));
    let token = json["access_token"].as_str().expect("access_token");
    assert_eq!(issued.issuer.token_user(token).as_deref(), Some("test-user"));
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["expires_in"], DEFAULT_EXPIRES_IN);
    // The stand-in, like ZITADEL, does not state the scopes: the requested ones show, so marked.
    assert_eq!(json["scope"], DEFAULT_SCOPES.join(" "));
    assert_eq!(json["scope_source"], "requested");
    assert_eq!(issued.issuer.token_requests(), 1);
}

/// When the issuer states the scopes it granted, those show, marked as granted.
#[tokio::test(flavor = "multi_thread")]
async fn token_format_json_shows_the_scopes_an_issuer_states() {
    let issued = support::issuer().await;
    issued.issuer.set_behaviour(Behaviour {
        states_scope: true,
        ..Behaviour::default()
    });
    let run = token(
        &issued.key_file,
        issued.issuer.url(),
        &["--format", "json", "--scope", "openid profile"],
    )
    .await;
    assert_success(&run, "token --format json");
    let json: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("not JSON: {run:#?}"));
    assert_eq!(json["scope"], "openid profile");
    assert_eq!(json["scope_source"], "granted");
}

/// `token --config FILE` takes the file's only credential without `--credential`; with
/// several, it names them and asks for one; `--credential` picks one.
#[tokio::test(flavor = "multi_thread")]
async fn token_config_uses_the_only_credential() {
    let issued = support::issuer().await;
    let config = issued.dir.path().join("one.toml");
    let credential = format!(
        "[credentials.zitadel]\nkey_file = \"service-user.json\"\nissuer = \"{}\"\n",
        issued.issuer.url()
    );
    std::fs::write(&config, &credential).unwrap();
    let config = config.to_str().unwrap();
    let only = run(&["token", "--config", config], &[]).await;
    assert_success(&only, "token --config with one credential");
    assert_eq!(
        issued.issuer.token_user(only.stdout.trim_end()).as_deref(),
        Some("test-user")
    );

    let two = issued.dir.path().join("two.toml");
    std::fs::write(
        &two,
        format!("{credential}\n[credentials.pat]\ntoken_file = \"service-user.json\"\n"),
    )
    .unwrap();
    let two = two.to_str().unwrap();
    let ambiguous = run(&["token", "--config", two], &[]).await;
    assert_clean_failure(&ambiguous, "token --config with two credentials");
    assert_eq!(
        ambiguous.stderr,
        format!(
            "mintproxy: --credential: {two} holds 2 credentials ([\"pat\", \"zitadel\"]): name one, e.g. --credential pat\n"
        )
    );
    let named = run(&["token", "--config", two, "--credential", "zitadel"], &[]).await;
    assert_success(&named, "token --config --credential");
    assert_eq!(issued.issuer.token_requests(), 2);
}

/// `token` warns about a key file others can read, in the same words as `check` and
/// `serve` (which share the validation), and stays quiet about an owner-only one.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn token_warns_about_a_key_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    const WARNING: &str = "credential file is readable by group or others; restrict it: chmod 600";
    let issued = support::issuer().await;
    let key_file = &issued.key_file;
    std::fs::set_permissions(key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = token(key_file, issued.issuer.url(), &[]).await;
    assert_success(&open, "token with a 644 key file");
    assert!(open.stderr.contains(WARNING), "{open:#?}");
    assert!(open.stderr.contains("mode=\"644\""), "{open:#?}");
    let key = key_file.to_str().unwrap();
    let check = run(
        &["check", "--upstream", issued.issuer.url(), "--key-file", key],
        &[],
    )
    .await;
    assert!(check.stderr.contains(WARNING), "{check:#?}");

    std::fs::set_permissions(key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let private = token(key_file, issued.issuer.url(), &[]).await;
    assert_success(&private, "token with a 600 key file");
    assert_eq!(private.stderr, "", "no warning for an owner-only key file");
}

/// Every flag has a `MINTPROXY_*` twin; a script can configure `token` through the
/// environment alone.
#[tokio::test(flavor = "multi_thread")]
async fn token_reads_its_flags_from_the_environment() {
    let issued = support::issuer().await;
    let key_file = issued.key_file.to_str().unwrap();
    let run = run(
        &["token"],
        &[
            ("MINTPROXY_KEY_FILE", key_file),
            ("MINTPROXY_ISSUER", issued.issuer.url()),
        ],
    )
    .await;
    assert_success(&run, "token configured by environment");
    assert_eq!(
        issued.issuer.token_user(run.stdout.trim_end()).as_deref(),
        Some("test-user")
    );
    assert_eq!(issued.issuer.token_requests(), 1);
}

/// A key the issuer does not know: the provider's own words reach the user, on stderr,
/// with a non-zero exit and no token-shaped output; neither the key nor the assertion
/// that carried it is echoed.
#[tokio::test(flavor = "multi_thread")]
async fn token_with_an_unknown_key_fails_with_the_providers_error() {
    let issued = support::issuer().await;
    let stranger = GeneratedKey::new("unregistered-key", "test-user");
    let key_file = issued.dir.path().join("stranger.json");
    std::fs::write(&key_file, stranger.key_json()).unwrap();

    let run = token(&key_file, issued.issuer.url(), &[]).await;
    assert_clean_failure(&run, "unknown key");
    assert!(run.stderr.contains("key not found"), "{run:#?}");
    assert_eq!(issued.issuer.token_requests(), 1);
    assert_hides(
        &run.stderr,
        &pem_body_lines(&stranger.pkcs1_pem()),
        "the private key",
    );
    let seen = issued.issuer.secrets_seen();
    assert!(!seen.is_empty(), "the issuer saw the assertion");
    assert_hides(&run.stderr, &seen, "the assertion");
}

/// One way a key file can be wrong, and the message it must produce.
struct BadKeyFile {
    /// Test-case name, also the file name.
    name: &'static str,
    /// The file's contents; `None` means the file does not exist.
    contents: Option<String>,
    /// What follows `key file <path>: ` on stderr.
    problem: &'static str,
    /// Text in the file that must not come back on stderr.
    secrets: Vec<String>,
}

/// The key-file problems `token` must report, built around the harness's real key.
fn bad_key_files(key: &GeneratedKey) -> Vec<BadKeyFile> {
    let pem = key.pkcs1_pem();
    let key_lines = pem_body_lines(&pem);
    // The real key file with one field changed (`Value::Null` removes it).
    let with = |field: &str, value: serde_json::Value| {
        let mut json: serde_json::Value = serde_json::from_str(&key.key_json()).unwrap();
        let fields = json.as_object_mut().unwrap();
        if value.is_null() {
            fields.remove(field);
        } else {
            fields.insert(field.to_owned(), value);
        }
        Some(json.to_string())
    };
    let garbage = random_base64(300);
    let garbage_pem = format!("-----BEGIN RSA PRIVATE KEY-----\n{garbage}\n-----END RSA PRIVATE KEY-----\n");
    let case = |name, contents, problem, secrets: &[String]| BadKeyFile {
        name,
        contents,
        problem,
        secrets: secrets.to_vec(),
    };
    let none: &[String] = &[];
    vec![
        case("missing-file", None, "cannot read it", none),
        case(
            "not-json",
            Some(format!("type=serviceaccount\nkey={pem}")),
            "not valid JSON (line 1, column 2)",
            &key_lines,
        ),
        case(
            "json-array",
            Some(format!("[{}]", key.key_json())),
            "expected a JSON object with type, keyId, key and userId (or clientId)",
            &key_lines,
        ),
        case(
            "missing-type",
            with("type", serde_json::Value::Null),
            "field `type` is missing",
            &key_lines,
        ),
        case(
            "missing-keyId",
            with("keyId", serde_json::Value::Null),
            "field `keyId` is missing",
            &key_lines,
        ),
        case(
            "missing-userId",
            with("userId", serde_json::Value::Null),
            "field `userId` is missing",
            &key_lines,
        ),
        case(
            "missing-key",
            with("key", serde_json::Value::Null),
            "field `key` is missing",
            none,
        ),
        case(
            "empty-keyId",
            with("keyId", "".into()),
            "field `keyId` is empty",
            &key_lines,
        ),
        case(
            "numeric-userId",
            with("userId", 12345.into()),
            "field `userId` must be a string",
            &key_lines,
        ),
        case(
            "application-key",
            with("type", "application".into()),
            "field `type` is \"application\": an application's key: use it as a client key (--client-key-file, client_key_file)",
            &key_lines,
        ),
        case(
            "garbage-pem",
            with("key", garbage_pem.into()),
            "field `key` is not an RSA private key in PEM form (PKCS#1 or PKCS#8)",
            &[garbage],
        ),
        case(
            "truncated-pkcs1",
            with("key", truncated_pem(&pem).into()),
            "field `key` is not an RSA private key in PEM form (PKCS#1 or PKCS#8)",
            &key_lines,
        ),
    ]
}

/// Each bad key file fails `token` before any network call, with exit code 1, a message
/// naming the file and what is wrong with it, and no key material.
#[tokio::test(flavor = "multi_thread")]
async fn token_rejects_each_kind_of_bad_key_file() {
    let issued = support::issuer().await;
    let cases = bad_key_files(&issued.key);
    for case in cases {
        let path = issued.dir.path().join(format!("{}.json", case.name));
        if let Some(contents) = &case.contents {
            std::fs::write(&path, contents).unwrap();
        }
        let run = token(&path, issued.issuer.url(), &[]).await;
        assert_clean_failure(&run, case.name);
        let expected = format!(
            "mintproxy: --key-file: key file {}: {}",
            path.display(),
            case.problem
        );
        assert!(
            run.stderr.starts_with(&expected),
            "{}: expected stderr to start with {expected:?}; {run:#?}",
            case.name
        );
        assert_hides(
            &run.stderr,
            &case.secrets,
            &format!("{}: key material", case.name),
        );
    }
    assert_eq!(
        issued.issuer.token_requests(),
        0,
        "a bad key file must fail before any token request"
    );
}

/// PKCS#8 (`BEGIN PRIVATE KEY`) is accepted as well as ZITADEL's PKCS#1.
#[tokio::test(flavor = "multi_thread")]
async fn token_accepts_a_pkcs8_key() {
    let issued = support::issuer().await;
    let path = issued.dir.path().join("pkcs8.json");
    let pem = issued.key.pkcs8_pem();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    std::fs::write(&path, issued.key.key_json_with(&pem)).unwrap();
    let run = token(&path, issued.issuer.url(), &[]).await;
    assert_success(&run, "PKCS#8 key");
    assert_eq!(
        issued.issuer.token_user(run.stdout.trim_end()).as_deref(),
        Some("test-user")
    );
}

// ---------------------------------------------------------------------------------------
// mintproxy serve
// ---------------------------------------------------------------------------------------

/// Reads a child's pipe to the end in the background, so a chatty child never blocks on
/// a full pipe while the test is busy elsewhere.
fn drain(pipe: impl AsyncRead + Unpin + Send + 'static) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        let mut pipe = pipe;
        let _ = pipe.read_to_end(&mut bytes).await;
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A running `mintproxy serve` and the collectors of its output.
struct Served {
    child: Child,
    addr: std::net::SocketAddr,
    first_line: String,
    stdout: tokio::task::JoinHandle<String>,
    stderr: tokio::task::JoinHandle<String>,
}

/// Starts `mintproxy serve` on port 0 with `env` and waits for its "listening on" line,
/// which carries the address it bound.
async fn serve(args: &[&str], env: &[(&str, &str)]) -> Served {
    serve_on("127.0.0.1:0", args, env).await
}

/// Like [`serve`], listening on `listen`.
async fn serve_on(listen: &str, args: &[&str], env: &[(&str, &str)]) -> Served {
    let mut child = mintproxy()
        .arg("serve")
        .args(["--listen", listen])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the mintproxy binary starts");
    let stderr = drain(child.stderr.take().unwrap());
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first_line = String::new();
    tokio::time::timeout(RUN_TIMEOUT, stdout.read_line(&mut first_line))
        .await
        .expect("serve prints its address promptly")
        .unwrap();
    let addr = first_line
        .strip_prefix("mintproxy listening on http://")
        .and_then(|rest| rest.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first_line:?}"));
    Served {
        child,
        addr,
        first_line,
        stdout: drain(stdout),
        stderr,
    }
}

impl Served {
    /// Sends SIGTERM, waits for the exit, and returns the exit status and all output
    /// (stdout, then stderr).
    async fn terminate(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().expect("still running").to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(killed.success(), "kill -TERM {pid}");
        let status = tokio::time::timeout(RUN_TIMEOUT, self.child.wait())
            .await
            .expect("serve exits after SIGTERM")
            .unwrap();
        let stdout = self.stdout.await.unwrap();
        let stderr = self.stderr.await.unwrap();
        (status, format!("{}{stdout}{stderr}", self.first_line))
    }
}

/// Even at trace level (every dependency's logging on), no token, assertion, private key
/// or client credential shows in mintproxy's output, while requests do go through and a
/// token is minted; SIGTERM then stops the proxy cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn serve_logs_no_secret_at_trace_level() {
    let issued = support::issuer().await;
    let echo = Echo::start(support::local_listener().await, issued.issuer.clone()).unwrap();
    let served = serve(&issued.flags(echo.url()), &[("RUST_LOG", "trace")]).await;
    let base = format!("http://{}", served.addr);

    let requests = [
        Request::get(format!("{base}/v2/users/me?x=1")).body(Full::default()),
        Request::post(format!("{base}/v2/things"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"name\":\"small body\"}"))),
        Request::get(format!("{base}/v2/users/me"))
            .header("authorization", "Bearer client-secret-xyz")
            .body(Full::default()),
    ];
    for request in requests {
        let request = request.unwrap();
        let target = request.uri().to_string();
        let answer = support::send(request).await;
        assert_eq!(answer.status, 200, "{target}: {:?}", answer.body);
        assert_eq!(answer.json()["token_user"], "test-user", "{target}");
    }
    assert_eq!(echo.seen().len(), 3);

    let (status, logs) = served.terminate().await;
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(
        logs.contains("minted a new token"),
        "the logs are not trivially empty"
    );
    assert!(logs.lines().count() > 10, "trace logging is on");
    let secrets = issued.issuer.secrets_seen();
    assert!(secrets.len() >= 2, "an assertion and a token were seen");
    assert_hides(&logs, &secrets, "a token or assertion");
    assert_hides(&logs, &pem_body_lines(&issued.key.pkcs1_pem()), "the private key");
    assert!(
        !logs.contains("client-secret-xyz"),
        "the client's credential leaked"
    );
    assert!(!has_raw_bearer(&logs), "a bearer token leaked");
}

/// `--listen localhost:PORT` listens on 127.0.0.1 without `--allow-remote`, and
/// `[::1]:PORT` on IPv6 loopback; each serves a request through.
#[tokio::test(flavor = "multi_thread")]
async fn serve_listens_on_localhost_and_bracketed_ipv6_loopback() {
    let issued = support::issuer().await;
    let echo = Echo::start(support::local_listener().await, issued.issuer.clone()).unwrap();
    for (listen, ip) in [("localhost:0", "127.0.0.1"), ("[::1]:0", "::1")] {
        let served = serve_on(listen, &issued.flags(echo.url()), &[]).await;
        assert_eq!(served.addr.ip().to_string(), ip, "--listen {listen}");
        let answer = support::get(served.addr, "/through").await;
        assert_eq!(answer.status, 200, "--listen {listen}: {:?}", answer.body);
        let (status, _) = served.terminate().await;
        assert!(status.success(), "--listen {listen}: {status}");
    }
}

/// A listen address that is neither an address nor a name and port is refused before
/// anything starts, saying what would do.
#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_a_listen_address_without_a_port() {
    let run = run(
        &[
            "serve",
            "--listen",
            "localhost",
            "--upstream",
            "http://127.0.0.1:9",
            "--token-file",
            "Cargo.toml",
        ],
        &[],
    )
    .await;
    assert_eq!(run.status.code(), Some(2), "a usage error: {run:#?}");
    assert!(
        run.stderr
            .contains("\"localhost\" is not an address like 127.0.0.1:8080, localhost:8080 or unix:/path"),
        "{run:#?}"
    );
}

/// An unusable `--upstream` stops `serve` before it listens, naming the flag.
#[tokio::test(flavor = "multi_thread")]
async fn serve_rejects_a_bad_upstream() {
    let issued = support::issuer().await;
    let key_file = issued.key_file.to_str().unwrap();
    let run = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "ftp://x",
            "--key-file",
            key_file,
            "--issuer",
            issued.issuer.url(),
        ],
        &[],
    )
    .await;
    assert_clean_failure(&run, "bad upstream");
    assert!(run.stderr.contains("--upstream"), "{run:#?}");
    assert_eq!(issued.issuer.token_requests(), 0);
}

// ---------------------------------------------------------------------------------------
// mintproxy demo
// ---------------------------------------------------------------------------------------

/// `demo --once` runs the whole flow and shows the upstream's view with the bearer
/// redacted; no raw token appears anywhere in its output.
#[tokio::test(flavor = "multi_thread")]
async fn demo_once_succeeds_and_shows_no_token() {
    let run = run(&["demo", "--once"], &[]).await;
    assert_success(&run, "demo --once");
    assert!(run.stdout.contains("200 OK"), "{run:#?}");
    assert!(run.stdout.contains("Bearer [redacted]"), "{run:#?}");
    assert!(!has_raw_bearer(&run.stdout), "{run:#?}");
    assert!(!has_raw_bearer(&run.stderr), "{run:#?}");
}

/// A lasting `demo` whose port 8080 is taken says so, and names the address it took
/// instead, which serves; Ctrl-C then stops it cleanly.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn demo_says_when_port_8080_is_taken_and_where_it_went() {
    // Held for the test; if another process holds 8080 already, it is just as taken.
    let _taken = std::net::TcpListener::bind("127.0.0.1:8080");
    let mut child = mintproxy()
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the mintproxy binary starts");
    let stderr = drain(child.stderr.take().unwrap());
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut shown = Vec::new();
    let ready = tokio::time::timeout(RUN_TIMEOUT, async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            let done = line == "Ctrl-C stops it.";
            shown.push(line);
            if done {
                return true;
            }
        }
        false
    })
    .await
    .expect("the demo gets going");
    assert!(ready, "the demo ended early: {shown:#?}");
    let proxy_line = shown
        .iter()
        .find(|line| line.starts_with("4. Proxy at http://"))
        .unwrap_or_else(|| panic!("{shown:#?}"));
    let addr: std::net::SocketAddr = proxy_line["4. Proxy at http://".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(addr.port(), 8080);
    let note = "   Note: not on 127.0.0.1:8080, which is not available (";
    let noted = shown
        .iter()
        .find(|line| line.starts_with(note))
        .unwrap_or_else(|| panic!("no note that 8080 is taken: {shown:#?}"));
    assert!(noted.ends_with(&format!("; use http://{addr}.")), "{noted}");
    assert!(
        shown
            .iter()
            .any(|line| line.trim() == format!("curl -i http://{addr}/anything")),
        "{shown:#?}"
    );
    assert_eq!(support::get(addr, "/anything").await.status, 200);

    let pid = child.id().expect("still running").to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap()
        .success());
    let status = tokio::time::timeout(RUN_TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "Ctrl-C ends the demo cleanly: {status}; {}",
        stderr.await.unwrap()
    );
}

/// The leak detector used above must itself detect a leak, or the tests relying on it
/// could pass vacuously.
#[test]
fn raw_bearer_detector_detects() {
    assert!(has_raw_bearer("authorization: Bearer abcdefghijABCDEFGHIJ_-12"));
    assert!(!has_raw_bearer("authorization: Bearer [redacted]"));
    assert!(!has_raw_bearer("Bearer short-one"));
}
