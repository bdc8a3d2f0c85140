//! The example configs in `examples/config/` stay valid: each one (listed at test time,
//! so a new example is covered without touching this file) is copied into a temporary
//! directory next to freshly generated stand-ins for every file it references, and
//! `mintproxy check --config <copy>` must accept it and list its credentials and routes.
//!
//! Online: `mixed.toml` (one credential of each kind), with its issuers and upstreams
//! pointed at the in-process stand-in issuer, must mint every credential with
//! `check --online` without printing any token; and with its service user's key unknown
//! to the issuer, `check --online` must fail and say why.
//!
//! The shipped examples cannot carry keys: each one's opening comment names the files to
//! supply (and the check to run then), and each Kubernetes manifest's mintproxy container,
//! with a generated key in place of its Secret's, passes `check --online`.

mod support;

use std::path::{Path, PathBuf};

use mintproxy::config::default_scopes;
use mintproxy::demo::issuer::Issuer;
use mintproxy::demo::keygen::GeneratedKey;
use tempfile::TempDir;

/// How `check` describes a token the stand-in issuer minted (its default `expires_in` is
/// 43 200 s).
const ISSUER_LIFETIME: &str = "valid for 12h0m0s";

/// The line `check --online` starts its minting report with.
const MINTING: &str = "minting one token per credential:\n";

/// The example configs, sorted.
fn example_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected at least 3 example configs in {}, found {files:?}",
        dir.display()
    );
    files
}

/// The example config `name`.
fn example(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/config")
        .join(name);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// A file an example references, as written for the test: what the issuer must know to
/// accept it, and what must never be printed.
enum Filled {
    /// A service user's key (`key_file`).
    ServiceKey(GeneratedKey),
    /// An application key (`client_key_file`).
    ApplicationKey(GeneratedKey),
    /// A client secret (`client_secret_file`) for `client_id`.
    Secret { client_id: String, secret: String },
    /// A ready token (`token_file`).
    Token(String),
}

impl Filled {
    /// Makes the stand-in issuer accept this credential.
    fn register(&self, issuer: &Issuer) {
        match self {
            Self::ServiceKey(key) => issuer.register_key(&key.key_id, &key.subject, &key.public_key_der()),
            Self::ApplicationKey(key) => {
                issuer.register_application_key(&key.key_id, &key.subject, &key.public_key_der())
            }
            Self::Secret { client_id, secret } => issuer.register_client_secret(client_id, secret),
            Self::Token(_) => {}
        }
    }

    /// Text from the file that must never appear in output: the key material's PEM lines
    /// (long ones only, so a chance match cannot fail a test), the secret, the token.
    fn secrets(&self) -> Vec<String> {
        match self {
            Self::ServiceKey(key) | Self::ApplicationKey(key) => key
                .pkcs1_pem()
                .lines()
                .filter(|line| !line.starts_with("-----") && line.len() >= 16)
                .map(str::to_owned)
                .collect(),
            Self::Secret { secret, .. } => vec![secret.clone()],
            Self::Token(token) => vec![token.clone()],
        }
    }
}

/// A copy of an example config, with every file it references created beside it.
struct ExampleCopy {
    /// Holds the copy and its files.
    _dir: TempDir,
    /// The copied config file.
    config: PathBuf,
    /// The copy, parsed.
    table: toml::Table,
    /// What was written for each credential, by credential name.
    filled: Vec<(String, Filled)>,
}

/// Copies `example` into a temporary directory, first pointing every `issuer` and
/// `upstream` at `point_at` when given, and creates every credential file it references.
fn copy_example(example: &Path, point_at: Option<&str>) -> ExampleCopy {
    let dir = tempfile::tempdir().unwrap();
    let mut text = std::fs::read_to_string(example).unwrap();
    if let Some(url) = point_at {
        text = rewrite_urls(&text, url);
    }
    let config = dir.path().join(example.file_name().unwrap());
    std::fs::write(&config, &text).unwrap();
    let table: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{} is not TOML: {e}", example.display()));
    if let Some(url) = point_at {
        assert_points_at(&table, url);
    }
    let filled = credentials(&table)
        .into_iter()
        .flat_map(|(name, credential)| {
            fill_credential_files(dir.path(), name, credential)
                .into_iter()
                .map(move |filled| (name.to_owned(), filled))
        })
        .collect();
    ExampleCopy {
        _dir: dir,
        config,
        table,
        filled,
    }
}

/// `text` with every `issuer = ...` and `upstream = ...` line replaced by `url`.
fn rewrite_urls(text: &str, url: &str) -> String {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let key = ["issuer", "upstream"].into_iter().find(|key| {
                trimmed
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            });
            match key {
                Some(key) => format!("{}{key} = {url:?}\n", &line[..line.len() - trimmed.len()]),
                None => format!("{line}\n"),
            }
        })
        .collect()
}

/// Asserts the rewrite reached every issuer and upstream (none hides in an inline table).
fn assert_points_at(table: &toml::Table, url: &str) {
    for (name, credential) in credentials(table) {
        if let Some(issuer) = string(credential, "issuer") {
            assert_eq!(issuer, url, "credentials.{name}.issuer was not rewritten");
        }
    }
    for (index, route) in routes(table).iter().enumerate() {
        assert_eq!(
            string(route, "upstream"),
            Some(url),
            "routes[{index}].upstream was not rewritten"
        );
    }
}

/// Creates the files credential `name` references (mode 600), relative to `dir`.
fn fill_credential_files(dir: &Path, name: &str, credential: &toml::Table) -> Vec<Filled> {
    let mut filled = Vec::new();
    let write = |key: &str, contents: &str| {
        if let Some(path) = string(credential, key) {
            support::write_private(&dir.join(path), contents);
            true
        } else {
            false
        }
    };
    let service_key = GeneratedKey::new(format!("{name}-key"), format!("{name}-user"));
    if write("key_file", &service_key.key_json()) {
        filled.push(Filled::ServiceKey(service_key));
    }
    let client_id = string(credential, "client_id").unwrap_or(name).to_owned();
    let application_key = GeneratedKey::new(format!("{name}-app-key"), client_id.clone());
    if write("client_key_file", &application_key.application_key_json()) {
        filled.push(Filled::ApplicationKey(application_key));
    }
    let secret = format!("client-secret-of-{name}-0123456789");
    if write("client_secret_file", &secret) {
        filled.push(Filled::Secret { client_id, secret });
    }
    let token = format!("static-token-of-{name}-0123456789");
    if write("token_file", &token) {
        filled.push(Filled::Token(token));
    }
    filled
}

/// The `[credentials.NAME]` tables, by name.
fn credentials(table: &toml::Table) -> Vec<(&str, &toml::Table)> {
    table
        .get("credentials")
        .and_then(toml::Value::as_table)
        .map(|credentials| {
            credentials
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_table().expect("a credential is a table")))
                .collect()
        })
        .unwrap_or_default()
}

/// The `[[routes]]` tables.
fn routes(table: &toml::Table) -> Vec<&toml::Table> {
    table
        .get("routes")
        .and_then(toml::Value::as_array)
        .map(|routes| {
            routes
                .iter()
                .map(|r| r.as_table().expect("a route is a table"))
                .collect()
        })
        .unwrap_or_default()
}

/// The string at `key`, if any.
fn string<'a>(table: &'a toml::Table, key: &str) -> Option<&'a str> {
    table.get(key).and_then(toml::Value::as_str)
}

/// Whether the credential mints at a token endpoint (everything but a token file).
fn is_grant(credential: &toml::Table) -> bool {
    !credential.contains_key("token_file")
}

/// The scopes a grant-based credential asks for, space-separated as sent: its `scopes`
/// or the default ones, then one audience per project id.
fn expected_scopes(credential: &toml::Table) -> String {
    let strings = |key: &str| -> Option<Vec<String>> {
        credential.get(key).and_then(toml::Value::as_array).map(|list| {
            list.iter()
                .map(|v| v.as_str().expect("a string").to_owned())
                .collect()
        })
    };
    let mut scopes = strings("scopes").unwrap_or_else(default_scopes);
    for id in strings("project_ids").unwrap_or_default() {
        scopes.push(format!("urn:zitadel:iam:org:project:id:{id}:aud"));
    }
    scopes.join(" ")
}

/// Runs `mintproxy check --config <copy> extra...`.
async fn check(copy: &ExampleCopy, extra: &[&str]) -> support::BinaryRun {
    let config = copy.config.to_str().unwrap();
    support::run_binary(&[&["check", "--config", config], extra].concat(), &[]).await
}

/// The report line of credential `name` in `check --online`'s minting section.
fn minting_line<'a>(run: &'a support::BinaryRun, name: &str) -> &'a str {
    let (_, minting) = run
        .stdout
        .split_once(MINTING)
        .unwrap_or_else(|| panic!("no minting report: {run:#?}"));
    let start = format!("  {name}: ");
    minting
        .lines()
        .find(|line| line.starts_with(&start))
        .unwrap_or_else(|| panic!("no minting line for {name}: {run:#?}"))
}

/// Asserts none of the issuer's tokens and assertions, nor anything from the credential
/// files, shows on stdout or stderr (naming which, never printing the secret whole).
fn assert_no_secrets(run: &support::BinaryRun, issuer: &Issuer, copy: &ExampleCopy) {
    let seen = issuer.secrets_seen();
    assert!(!seen.is_empty(), "the issuer minted tokens");
    let from_files = copy.filled.iter().flat_map(|(_, filled)| filled.secrets());
    for secret in seen.into_iter().chain(from_files) {
        for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            assert!(
                !text.contains(&secret),
                "{stream} shows a secret starting {:?}",
                secret.chars().take(8).collect::<String>()
            );
        }
    }
}

/// Every example passes `check` offline, lists each credential by name and each route by
/// its prefix and credential, and (its files being mode 600) warns about nothing.
#[tokio::test]
async fn every_example_passes_check() {
    for example in example_files() {
        let copy = copy_example(&example, None);
        let run = check(&copy, &[]).await;
        let what = example.display();
        assert!(run.status.success(), "{what}: {run:#?}");
        assert_eq!(run.stderr, "", "{what}: no warnings expected");
        assert!(
            run.stdout.starts_with("configuration is valid; listening on "),
            "{what}: {run:#?}"
        );
        let credentials = credentials(&copy.table);
        assert!(!credentials.is_empty(), "{what} has no credentials");
        for (name, _) in credentials {
            let listed = format!("\n  {name}: ");
            assert!(
                run.stdout.contains(&listed),
                "{what}: credential {name} not listed; {run:#?}"
            );
        }
        let routes = routes(&copy.table);
        assert!(!routes.is_empty(), "{what} has no routes");
        for route in routes {
            let prefix = string(route, "prefix").expect("a route has a prefix");
            let shown = match prefix.trim_end_matches('/') {
                "" => "/",
                trimmed => trimmed,
            };
            let credential = string(route, "credential").expect("a route has a credential");
            let listed = run.stdout.lines().any(|line| {
                line.starts_with(&format!("  {shown} -> "))
                    && line.contains(&format!("(credential {credential}"))
            });
            assert!(listed, "{what}: route {prefix} not listed; {run:#?}");
        }
    }
}

/// `mixed.toml` pointed at the stand-in issuer: `check --online` mints each credential
/// once, reports each grant's lifetime and scopes, and prints no token or secret.
#[tokio::test(flavor = "multi_thread")]
async fn mixed_example_mints_every_credential_online() {
    let issued = support::issuer().await;
    let issuer = &issued.issuer;
    let copy = copy_example(&example("mixed.toml"), Some(issuer.url()));
    let kinds: Vec<&str> = copy
        .filled
        .iter()
        .map(|(_, filled)| match filled {
            Filled::ServiceKey(_) => "key_file",
            Filled::ApplicationKey(_) => "client_key_file",
            Filled::Secret { .. } => "client_secret_file",
            Filled::Token(_) => "token_file",
        })
        .collect();
    for kind in ["key_file", "client_key_file", "client_secret_file", "token_file"] {
        assert!(
            kinds.contains(&kind),
            "mixed.toml should show a {kind} credential"
        );
    }
    for (_, filled) in &copy.filled {
        filled.register(issuer);
    }

    let run = check(&copy, &["--online"]).await;
    assert!(run.status.success(), "{run:#?}");
    let mut grants = 0;
    for (name, credential) in credentials(&copy.table) {
        let line = minting_line(&run, name);
        if is_grant(credential) {
            grants += 1;
            // The stand-in, like ZITADEL, does not state the scopes: the requested ones show.
            let expected = format!(
                "  {name}: ok, {ISSUER_LIFETIME}, scopes: {} (requested)",
                expected_scopes(credential)
            );
            assert_eq!(line, expected);
        } else {
            assert_eq!(
                line,
                format!("  {name}: ok, no expiry stated, scopes: (none stated: a ready token)")
            );
        }
    }
    assert_eq!(issuer.token_requests(), grants, "one token request per grant");
    assert_no_secrets(&run, issuer, &copy);
}

/// `mixed.toml` with its service user's key unknown to the issuer (deleted in ZITADEL):
/// `check --online` fails, reports that credential as FAILED with the likely cause, and
/// still mints the others.
#[tokio::test(flavor = "multi_thread")]
async fn online_check_with_an_unregistered_key_fails_with_the_likely_cause() {
    let issued = support::issuer().await;
    let issuer = &issued.issuer;
    let copy = copy_example(&example("mixed.toml"), Some(issuer.url()));
    let mut unregistered = Vec::new();
    for (name, filled) in &copy.filled {
        match filled {
            Filled::ServiceKey(_) => unregistered.push(name.as_str()),
            other => other.register(issuer),
        }
    }
    assert!(!unregistered.is_empty(), "mixed.toml has a service user key");

    let run = check(&copy, &["--online"]).await;
    assert_eq!(run.status.code(), Some(1), "{run:#?}");
    for (name, _) in credentials(&copy.table) {
        let line = minting_line(&run, name);
        if unregistered.contains(&name) {
            assert!(line.starts_with(&format!("  {name}: FAILED: ")), "{line}");
            let cause = format!("{line}\n    likely cause: unknown or expired key");
            assert!(run.stdout.contains(&cause), "{run:#?}");
        } else {
            assert!(line.starts_with(&format!("  {name}: ok, ")), "{line}");
        }
    }
    assert_no_secrets(&run, issuer, &copy);
}

/// The keys of a credential that name a file to supply.
const CREDENTIAL_FILE_KEYS: [&str; 4] = ["key_file", "client_key_file", "client_secret_file", "token_file"];

/// The comment lines `text` opens with, joined.
fn opening_comment(text: &str) -> String {
    text.lines()
        .take_while(|line| line.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each example config's opening comment names every file its credentials reference, to
/// be supplied beside it, and the `check --online` to run on it then.
#[test]
fn every_example_names_the_files_to_supply() {
    for example in example_files() {
        let text = std::fs::read_to_string(&example).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let comment = opening_comment(&text);
        let what = example.display();
        assert!(comment.contains("# Supply beside this file"), "{what}: {comment}");
        for (name, credential) in credentials(&table) {
            for key in CREDENTIAL_FILE_KEYS {
                if let Some(file) = string(credential, key) {
                    assert!(
                        comment.contains(&format!("#   {file} ")),
                        "{what}: credentials.{name}.{key} = {file:?} is not among the files to supply"
                    );
                }
            }
        }
        let check = format!(
            "mintproxy check --config examples/config/{} --online",
            example.file_name().unwrap().to_string_lossy()
        );
        assert!(comment.contains(&check), "{what}: {check} missing");
    }
}

/// The Kubernetes manifests with a mintproxy container, sorted.
fn manifests() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    files
}

/// Each manifest's mintproxy container, run as `mintproxy check ... --online` with its own
/// arguments and environment, but a generated key where its Secret's is mounted and the
/// stand-in issuer as its upstream (and so its issuer), mints a token; its opening comment
/// names the Secret and the key inside it to supply.
#[tokio::test(flavor = "multi_thread")]
async fn every_kubernetes_manifest_passes_check_online_with_a_generated_key() {
    use serde_yaml_ng::Value;
    for manifest in manifests() {
        let what = manifest.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&manifest).unwrap();
        let comment = opening_comment(&text);
        let documents: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|document| serde::Deserialize::deserialize(document).unwrap())
            .collect();
        let pod = documents
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .map(|d| &d["spec"]["template"]["spec"])
            .unwrap_or_else(|| panic!("{what}: no Deployment"));
        let container = pod["containers"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|c| c["image"].as_str().is_some_and(|i| i.contains("mintproxy")))
            .unwrap_or_else(|| panic!("{what}: no mintproxy container"));
        let text_of = |v: &Value| v.as_str().unwrap().to_owned();

        // The mounted Secret, its key, and where the file lands.
        let mount = &container["volumeMounts"][0];
        let volume = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("{what}: the mount has no volume"));
        let secret = text_of(&volume["secret"]["secretName"]);
        let item = &volume["secret"]["items"][0];
        let mounted = format!("{}/{}", text_of(&mount["mountPath"]), text_of(&item["path"]));
        for named in [format!("`{secret}`"), format!("`{}`", text_of(&item["key"]))] {
            assert!(
                comment.contains(&named),
                "{what}: the comment does not name {named}"
            );
        }

        let issued = support::issuer().await;
        let key_file = issued.dir.path().join("generated-key.json");
        support::write_private(&key_file, &issued.key.key_json());
        let mut env: Vec<(String, String)> = container["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| (text_of(&e["name"]), text_of(&e["value"])))
            .collect();
        for (name, value) in &mut env {
            match name.as_str() {
                "MINTPROXY_KEY_FILE" => {
                    assert_eq!(
                        *value, mounted,
                        "{what}: the key file is where the Secret is mounted"
                    );
                    *value = key_file.to_str().unwrap().to_owned();
                }
                "MINTPROXY_UPSTREAM" => *value = issued.issuer.url().to_owned(),
                _ => {}
            }
        }
        let args: Vec<String> = container["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(text_of)
            .collect();
        assert_eq!(args[0], "serve", "{what}");
        let mut check: Vec<&str> = vec!["check"];
        check.extend(args[1..].iter().map(String::as_str));
        check.push("--online");
        let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let run = support::run_binary(&check, &env).await;
        assert!(run.status.success(), "{what}: {run:#?}");
        assert!(
            run.stdout
                .contains(&format!("  default: ok, {ISSUER_LIFETIME}, scopes: ")),
            "{what}: {run:#?}"
        );
        assert_eq!(issued.issuer.token_requests(), 1, "{what}");
    }
}
