//! For scripts and CLIs, through the real binary against the in-process issuer: the token
//! cache on disk, `--format exec-credential`, `mintproxy exec`, and key expiry in `check`,
//! `serve`, the metrics and a refused mint's diagnosis.

#![cfg(unix)]

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mintproxy::demo::echo::Echo;
use mintproxy::demo::keygen::GeneratedKey;
use mintproxy::rfc3339;
use support::{BinaryRun, Issued};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// The longest a spawned binary may take to say something or exit.
const PATIENCE: Duration = Duration::from_secs(30);

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The issuer with its key file owner-only, so no warning about the file's mode mixes
/// with what the tests look for on stderr.
async fn issuer() -> Issued {
    let issued = support::issuer().await;
    std::fs::set_permissions(&issued.key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    issued
}

// ---------------------------------------------------------------------------------------
// The token cache
// ---------------------------------------------------------------------------------------

/// `mintproxy token --key-file F --issuer URL extra...` with its cache under `cache`.
async fn token(issued: &Issued, cache: &Path, extra: &[&str]) -> BinaryRun {
    let key_file = issued.key_file.to_str().unwrap();
    let args = [
        &["token", "--key-file", key_file, "--issuer", issued.issuer.url()],
        extra,
    ]
    .concat();
    let run = support::run_binary(&args, &[("XDG_CACHE_HOME", cache.to_str().unwrap())]).await;
    assert!(run.status.success(), "{run:#?}");
    run
}

/// The cache files in `cache` (the `mintproxy` directory under it).
fn cache_files(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("mintproxy"))
        .map(|dir| dir.map(|entry| entry.unwrap().path()).collect())
        .unwrap_or_default()
}

/// The one cache file in `cache`.
fn cache_file(cache: &Path) -> PathBuf {
    let files = cache_files(cache);
    assert_eq!(files.len(), 1, "one file per credential, no leftovers: {files:?}");
    files.into_iter().next().unwrap()
}

/// Two runs mint once; `--no-cache` mints again and leaves the cache alone; the directory
/// is 0700, the file 0600, and it holds the token, its times and scope: no key material.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_token_run_uses_the_cached_token() {
    let issued = issuer().await;
    let cache = tempfile::tempdir().unwrap();
    let first = token(&issued, cache.path(), &[]).await;
    let second = token(&issued, cache.path(), &[]).await;
    assert_eq!(issued.issuer.token_requests(), 1, "the second run used the cache");
    assert_eq!(first.stdout, second.stdout);
    assert_eq!(
        issued.issuer.token_user(second.stdout.trim_end()).as_deref(),
        Some("test-user")
    );
    assert_eq!(second.stderr, "", "a cache hit is silent");

    let fresh = token(&issued, cache.path(), &["--no-cache"]).await;
    assert_eq!(issued.issuer.token_requests(), 2, "--no-cache mints");
    assert_ne!(fresh.stdout, first.stdout);
    let again = token(&issued, cache.path(), &["--format", "json"]).await;
    assert_eq!(issued.issuer.token_requests(), 2);
    let json: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(
        json["access_token"].as_str(),
        Some(first.stdout.trim_end()),
        "--no-cache did not write either"
    );
    let left = json["expires_in"].as_u64().unwrap();
    assert!((43_100..=43_200).contains(&left), "what is left of 12 h: {left}");

    let dir_mode = std::fs::metadata(cache.path().join("mintproxy")).unwrap().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let file = cache_file(cache.path());
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let mut fields: Vec<&str> = stored.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["access_token", "expires_at", "issued_at", "scope"]);
    let text = std::fs::read_to_string(&file).unwrap();
    for secret in issued.issuer.secrets_seen() {
        assert!(
            text.contains(&secret) == (secret == first.stdout.trim_end()),
            "only the token itself is kept, no assertion"
        );
    }
    assert!(!text.contains("PRIVATE KEY") && !text.contains(&issued.key.key_id));
}

/// Without XDG_CACHE_HOME the cache lives in ~/.cache/mintproxy.
#[tokio::test(flavor = "multi_thread")]
async fn without_xdg_cache_home_the_cache_is_under_home() {
    let issued = issuer().await;
    let home = tempfile::tempdir().unwrap();
    let key_file = issued.key_file.to_str().unwrap();
    for _ in 0..2 {
        let output = support::binary()
            .args(["token", "--key-file", key_file, "--issuer", issued.issuer.url()])
            .env_remove("XDG_CACHE_HOME")
            .env("HOME", home.path())
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    }
    assert_eq!(issued.issuer.token_requests(), 1);
    cache_file(&home.path().join(".cache"));
}

/// A damaged cache file, one others may read, and (when the tests run as root) one of
/// another user: each is ignored with a warning that names the file and quotes nothing of
/// it, a new token is minted, and the file is replaced by a good one.
#[tokio::test(flavor = "multi_thread")]
async fn unusable_cache_files_are_ignored_with_a_warning() {
    let issued = issuer().await;
    let cache = tempfile::tempdir().unwrap();
    token(&issued, cache.path(), &[]).await;
    let file = cache_file(cache.path());

    std::fs::write(&file, "{\"access_token\": \"leaked-looking\", trunc").unwrap();
    let run = token(&issued, cache.path(), &[]).await;
    assert!(
        run.stderr.contains("ignoring the cached token")
            && run.stderr.contains(file.to_str().unwrap())
            && run.stderr.contains("not a token cache entry"),
        "{run:#?}"
    );
    assert!(!run.stderr.contains("leaked-looking"), "{run:#?}");
    assert_eq!(issued.issuer.token_requests(), 2);

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = token(&issued, cache.path(), &[]).await;
    assert!(
        run.stderr.contains("group or others may read it (mode 644)"),
        "{run:#?}"
    );
    assert_eq!(issued.issuer.token_requests(), 3);
    assert_eq!(
        std::fs::metadata(&file).unwrap().mode() & 0o777,
        0o600,
        "replaced"
    );

    if running_as_root() {
        std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
        let run = token(&issued, cache.path(), &[]).await;
        assert!(
            run.stderr.contains("belongs to another user (uid 65534)"),
            "{run:#?}"
        );
        assert_eq!(issued.issuer.token_requests(), 4);
        assert_ne!(std::fs::metadata(&file).unwrap().uid(), 65534, "replaced");
    }

    let run = token(&issued, cache.path(), &[]).await;
    assert_eq!(run.stderr, "", "the replaced file is good: {run:#?}");
    assert_eq!(issued.issuer.token_requests(), 3 + usize::from(running_as_root()));
}

/// Only root can give a file to another user.
fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Two `token` runs at once on an empty cache both print accepted tokens and leave one
/// good file (renames are atomic), which the next run uses.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_token_runs_are_safe() {
    let issued = issuer().await;
    let cache = tempfile::tempdir().unwrap();
    let (one, two) = tokio::join!(
        token(&issued, cache.path(), &[]),
        token(&issued, cache.path(), &[])
    );
    for run in [&one, &two] {
        assert_eq!(
            issued.issuer.token_user(run.stdout.trim_end()).as_deref(),
            Some("test-user")
        );
        assert_eq!(run.stderr, "", "{run:#?}");
    }
    let minted = issued.issuer.token_requests();
    assert!((1..=2).contains(&minted), "{minted}");
    let third = token(&issued, cache.path(), &[]).await;
    assert_eq!(issued.issuer.token_requests(), minted, "the file left is good");
    assert!(third.stdout == one.stdout || third.stdout == two.stdout);
    cache_file(cache.path());
}

/// `--format exec-credential` prints kubectl's ExecCredential: the token the issuer
/// issued, and when it expires (RFC 3339, UTC).
#[tokio::test(flavor = "multi_thread")]
async fn exec_credential_for_kubectl() {
    let issued = issuer().await;
    let cache = tempfile::tempdir().unwrap();
    let before = SystemTime::now();
    let run = token(&issued, cache.path(), &["--format", "exec-credential"]).await;
    assert_eq!(run.stdout.lines().count(), 1, "{run:#?}");
    let credential: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(credential["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(credential["kind"], "ExecCredential");
    let token = credential["status"]["token"].as_str().unwrap();
    assert_eq!(issued.issuer.token_user(token).as_deref(), Some("test-user"));
    let stamp = credential["status"]["expirationTimestamp"].as_str().unwrap();
    assert!(stamp.ends_with('Z'), "UTC: {stamp}");
    let expires = rfc3339::parse(stamp).unwrap_or_else(|| panic!("not RFC 3339: {stamp}"));
    let twelve_hours = Duration::from_secs(43_200);
    assert!(
        expires + Duration::from_secs(1) >= before + twelve_hours,
        "{stamp}"
    );
    assert!(expires <= SystemTime::now() + twelve_hours, "{stamp}");
    // From the cache, the same token and the same expiry.
    let cached = token_json(&issued, cache.path(), "exec-credential").await;
    assert_eq!(cached["status"], credential["status"]);
    assert_eq!(issued.issuer.token_requests(), 1);
}

async fn token_json(issued: &Issued, cache: &Path, format: &str) -> serde_json::Value {
    let run = token(issued, cache, &["--format", format]).await;
    serde_json::from_str(&run.stdout).unwrap()
}

// ---------------------------------------------------------------------------------------
// mintproxy exec
// ---------------------------------------------------------------------------------------

/// `mintproxy exec <flags for the issuer's key and upstream> extra... -- sh -c SCRIPT`,
/// stdin and stdout piped.
fn exec(issued: &Issued, upstream: &str, extra: &[&str], script: &str) -> Child {
    support::binary()
        .arg("exec")
        .args(issued.flags(upstream))
        .args(extra)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the mintproxy binary starts")
}

/// The next line the child printed.
async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("the command prints in time")
        .unwrap()
        .expect("the command printed a line")
}

fn stdout_lines(child: &mut Child) -> Lines<BufReader<ChildStdout>> {
    BufReader::new(child.stdout.take().unwrap()).lines()
}

async fn exit(child: Child) -> (ExitStatus, String) {
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("mintproxy exec exits")
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// The command finds the proxy in MINTPROXY_URL (and nothing else on stdout); a request
/// through it reaches the upstream with a valid bearer; the command's exit status is
/// mintproxy's, and the proxy is gone after.
#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_the_command_beside_the_proxy() {
    let issued = issuer().await;
    let echo = Echo::start(support::local_listener().await, issued.issuer.clone()).unwrap();
    let script = r#"echo "$MINTPROXY_URL"; echo "token:${MINTPROXY_TOKEN:-none}"; read answer; exit 7"#;
    let mut child = exec(&issued, echo.url(), &[], script);
    let mut lines = stdout_lines(&mut child);
    let url = next_line(&mut lines).await;
    assert_eq!(next_line(&mut lines).await, "token:none", "no token unless asked");
    let addr: std::net::SocketAddr = url
        .strip_prefix("http://127.0.0.1:")
        .map(|port| format!("127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("MINTPROXY_URL is {url:?}"))
        .parse()
        .unwrap();
    let answer = support::get(addr, "/through/exec").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(echo.seen().last().unwrap().target, "/through/exec");

    child.stdin.take().unwrap().write_all(b"done\n").await.unwrap();
    assert_eq!(lines.next_line().await.unwrap(), None, "nothing else on stdout");
    let (status, stderr) = exit(child).await;
    assert_eq!(status.code(), Some(7), "{stderr}");
    assert_eq!(stderr, "", "quiet unless something is wrong");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the proxy stopped"
    );
    assert_eq!(issued.issuer.token_requests(), 1);
}

/// A real client inside the command: curl through $MINTPROXY_URL (skipped without curl).
#[tokio::test(flavor = "multi_thread")]
async fn exec_with_curl_inside() {
    let Some(curl) = curl() else {
        return;
    };
    let issued = issuer().await;
    let echo = Echo::start(support::local_listener().await, issued.issuer.clone()).unwrap();
    let script = format!(r#"{} -sS --fail "$MINTPROXY_URL/from/curl""#, curl.display());
    let child = exec(&issued, echo.url(), &[], &script);
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let body: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(body["token_user"], "test-user", "{body}");
    assert_eq!(echo.seen().last().unwrap().target, "/from/curl");
}

fn curl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("curl"))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "curl is missing (apt-get install curl)"
        );
        println!("skipped: curl is not installed");
    }
    found
}

/// `--export-token` hands the command the proxy's own first token (one mint in all).
#[tokio::test(flavor = "multi_thread")]
async fn exec_exports_a_token_snapshot() {
    let issued = issuer().await;
    let script = r#"printf '%s\n' "$MINTPROXY_TOKEN""#;
    let mut child = exec(&issued, "http://127.0.0.1:9", &["--export-token"], script);
    let token = next_line(&mut stdout_lines(&mut child)).await;
    let (status, stderr) = exit(child).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(issued.issuer.token_user(&token).as_deref(), Some("test-user"));
    assert_eq!(issued.issuer.token_requests(), 1);
}

/// SIGTERM and SIGINT sent to mintproxy reach the command; a command that handles the
/// signal exits with its own status, one killed by it gives 128 + the signal.
#[tokio::test(flavor = "multi_thread")]
async fn exec_passes_signals_on() {
    let issued = issuer().await;
    let trapping = r#"trap 'kill $pid; exit 42' TERM; sleep 1000 >/dev/null 2>&1 & pid=$!; echo ready; wait"#;
    let mut child = exec(&issued, "http://127.0.0.1:9", &[], trapping);
    assert_eq!(next_line(&mut stdout_lines(&mut child)).await, "ready");
    signal(&child, "TERM");
    let (status, stderr) = exit(child).await;
    assert_eq!(status.code(), Some(42), "{stderr}");

    let mut child = exec(&issued, "http://127.0.0.1:9", &[], "echo ready; exec sleep 1000");
    assert_eq!(next_line(&mut stdout_lines(&mut child)).await, "ready");
    signal(&child, "INT");
    let (status, stderr) = exit(child).await;
    assert_eq!(status.code(), Some(128 + 2), "killed by SIGINT: {stderr}");
}

/// Bad flags, a bad configuration, a key the issuer refuses, `--export-token` with two
/// credentials and a missing program all fail before the command runs (it would create
/// `ran`).
#[tokio::test(flavor = "multi_thread")]
async fn exec_fails_before_the_command_starts() {
    let issued = issuer().await;
    let marker = issued.dir.path().join("ran");
    let script = format!("touch {}", marker.display());
    let upstream = "http://127.0.0.1:9";
    let run = |args: Vec<String>| async move {
        let output = support::binary().args(&args).output().await.unwrap();
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let with = |flags: &[&str], extra: &[&str]| -> Vec<String> {
        let mut args = vec!["exec".to_owned()];
        args.extend(flags.iter().chain(extra).map(|f| (*f).to_owned()));
        args.extend(["--", "sh", "-c", &script].map(str::to_owned));
        args
    };
    let good = issued.flags(upstream);

    let (status, stderr) = run(with(&good, &["--bogus"])).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--bogus"), "{stderr}");

    let (status, stderr) = run(with(&["--upstream", upstream], &[])).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("give one of --key-file"), "{stderr}");

    let stranger = GeneratedKey::new("unregistered-key", "test-user");
    let stranger_file = issued.dir.path().join("stranger.json");
    support::write_private(&stranger_file, &stranger.key_json());
    let stranger_flags = [
        "--upstream",
        upstream,
        "--key-file",
        stranger_file.to_str().unwrap(),
        "--issuer",
        issued.issuer.url(),
    ];
    let (status, stderr) = run(with(&stranger_flags, &[])).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("credential default: no valid token") && stderr.contains("key not found"),
        "{stderr}"
    );

    let (status, _) = run(with(&good, &["--export-token"])).await;
    assert!(
        status.success(),
        "the same flags that fail above are all that is wrong"
    );
    assert!(marker.exists());
    std::fs::remove_file(&marker).unwrap();

    // Two credentials: which token would --export-token mean?
    let config = issued.dir.path().join("two.toml");
    let key_file = issued.key_file.display();
    let issuer = issued.issuer.url();
    std::fs::write(
        &config,
        format!(
            "[credentials.a]\nkey_file = \"{key_file}\"\nissuer = \"{issuer}\"\n\
             [credentials.b]\nkey_file = \"{key_file}\"\nissuer = \"{issuer}\"\n\
             [[routes]]\nprefix = \"/a\"\nupstream = \"{upstream}\"\ncredential = \"a\"\n\
             [[routes]]\nprefix = \"/b\"\nupstream = \"{upstream}\"\ncredential = \"b\"\n"
        ),
    )
    .unwrap();
    let (status, stderr) = run(with(
        &["--config", config.to_str().unwrap(), "--export-token"],
        &[],
    ))
    .await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--export-token needs exactly one credential; the configuration has 2"),
        "{stderr}"
    );

    let mut missing = vec!["exec".to_owned()];
    missing.extend(good.iter().map(|f| (*f).to_owned()));
    missing.extend(["--".to_owned(), "no-such-program-here".to_owned()]);
    let (status, stderr) = run(missing).await;
    assert_eq!(status.code(), Some(127), "{stderr}");
    assert!(stderr.contains("cannot run \"no-such-program-here\""), "{stderr}");
    assert!(!marker.exists());
}

// ---------------------------------------------------------------------------------------
// Key expiry
// ---------------------------------------------------------------------------------------

/// A key file for the issuer's user whose `expirationDate` is `date`, registered with the
/// issuer when `registered`.
fn key_expiring(issued: &Issued, date: &str, registered: bool) -> PathBuf {
    let key = GeneratedKey::new(format!("key-{date}"), "test-user");
    if registered {
        issued
            .issuer
            .register_key(&key.key_id, &key.subject, &key.public_key_der());
    }
    let path = issued
        .dir
        .path()
        .join(format!("expiring-{}.json", date.replace(':', "-")));
    support::write_private(&path, &key.key_json_expiring(date));
    path
}

/// `check` for one key file (`--online` when asked).
async fn check(issued: &Issued, key_file: &Path, extra: &[&str]) -> BinaryRun {
    let args = [
        &[
            "check",
            "--upstream",
            "http://127.0.0.1:9",
            "--key-file",
            key_file.to_str().unwrap(),
            "--issuer",
            issued.issuer.url(),
        ],
        extra,
    ]
    .concat();
    support::run_binary(&args, &[]).await
}

/// The time `days` from now (negative: ago), as RFC 3339.
fn in_days(days: f64) -> String {
    let now = SystemTime::now();
    rfc3339::format(if days >= 0.0 {
        now + DAY.mul_f64(days)
    } else {
        now - DAY.mul_f64(-days)
    })
}

/// Near (10 days): a warning, exit 0. Far (400 days): the date, no warning. ZITADEL's
/// "never" (9999): nothing. Past: "expired", when, and a non-zero exit. Malformed: the
/// file and field named, non-zero.
#[tokio::test(flavor = "multi_thread")]
async fn check_tells_of_key_expiry() {
    let issued = issuer().await;

    let near = in_days(10.5);
    let run = check(&issued, &key_expiring(&issued, &near, true), &[]).await;
    assert!(run.status.success(), "{run:#?}");
    let expected = format!("    WARNING: key expires {near}, in 10 days: create a new key");
    assert!(run.stdout.contains(&expected), "{run:#?}");

    let far = in_days(400.5);
    let run = check(&issued, &key_expiring(&issued, &far, true), &[]).await;
    assert!(run.status.success(), "{run:#?}");
    assert!(
        run.stdout
            .contains(&format!("    key expires {far} (in 400 days)")),
        "{run:#?}"
    );

    let run = check(&issued, &key_expiring(&issued, "9999-12-31T23:59:59Z", true), &[]).await;
    assert!(run.status.success() && !run.stdout.contains("expire"), "{run:#?}");

    let past = in_days(-3.5);
    let run = check(&issued, &key_expiring(&issued, &past, true), &[]).await;
    assert_eq!(run.status.code(), Some(1), "{run:#?}");
    assert!(
        run.stdout
            .contains(&format!("    FAILED: key expired at {past}, 3 days ago")),
        "{run:#?}"
    );

    let malformed = key_expiring(&issued, "next tuesday", true);
    let run = check(&issued, &malformed, &[]).await;
    assert_eq!(run.status.code(), Some(1), "{run:#?}");
    let expected = format!(
        "--key-file: key file {}: field `expirationDate` is \"next tuesday\", not an RFC 3339 date",
        malformed.display()
    );
    assert!(run.stderr.contains(&expected), "{run:#?}");
}

/// A mint with an expired key that the issuer refuses says the key expired, and when, in
/// the error and in `check --online`'s likely cause.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_mint_with_an_expired_key_says_so() {
    let issued = issuer().await;
    let past = in_days(-2.5);
    let key_file = key_expiring(&issued, &past, false);
    let args = [
        "token",
        "--key-file",
        key_file.to_str().unwrap(),
        "--issuer",
        issued.issuer.url(),
    ];
    let run = support::run_binary(&args, &[]).await;
    assert_eq!(run.status.code(), Some(1), "{run:#?}");
    let expected = format!("(the key in {} expired at {past})", key_file.display());
    assert!(
        run.stderr.contains("key not found") && run.stderr.contains(&expected),
        "{run:#?}"
    );

    let run = check(&issued, &key_file, &["--online"]).await;
    assert_eq!(run.status.code(), Some(1), "{run:#?}");
    assert!(
        run.stdout
            .contains("likely cause: expired key: the key file's expirationDate has passed"),
        "{run:#?}"
    );
}

/// `serve` warns at start about a key expiring within 30 days.
#[tokio::test(flavor = "multi_thread")]
async fn serve_warns_at_start_of_a_key_expiring_soon() {
    let issued = issuer().await;
    let near = in_days(5.5);
    let key_file = key_expiring(&issued, &near, true);
    let mut child = support::binary()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:9",
        ])
        .args([
            "--key-file",
            key_file.to_str().unwrap(),
            "--issuer",
            issued.issuer.url(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let warning = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if line.contains("key expires") {
                return line;
            }
        }
        panic!("serve ended without the warning");
    })
    .await
    .expect("the warning comes at start");
    assert!(
        warning.contains("WARN")
            && warning.contains(&format!("key expires {near}, in 5 days"))
            && warning.contains("credential=default"),
        "{warning}"
    );
    child.kill().await.unwrap();
}

/// The admin metrics carry the key's expiry.
#[tokio::test(flavor = "multi_thread")]
async fn the_key_expiry_is_a_metric() {
    let issued = issuer().await;
    let date = "2031-05-06T07:08:09Z";
    let key_file = key_expiring(&issued, date, true);
    let flags = [
        "--upstream",
        "http://127.0.0.1:9",
        "--key-file",
        key_file.to_str().unwrap(),
        "--issuer",
        issued.issuer.url(),
    ];
    let config = support::serve_config(&flags);
    let operated = support::start_operated(&config, support::fast_policy()).await;
    let metrics = support::get(operated.admin, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    let expected = rfc3339::parse(date)
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let line =
        format!("mintproxy_credential_key_expiry_timestamp_seconds{{credential=\"default\"}} {expected}");
    assert!(text.lines().any(|l| l == line), "{text}");
}
