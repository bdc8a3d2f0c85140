//! Configuration validation through the real interface: `mintproxy serve` flags and
//! config files parsed exactly as the binary parses them (`support::try_serve_config`),
//! with the error text the user sees asserted word for word.
//!
//! Covered: unknown keys (with file:line:col), credential errors (unknown, ambiguous,
//! missing, unreadable or empty files, wrong key kinds, client ids), route errors
//! (prefixes, upstreams, allowlists, headers — whose values never reach a message), the
//! `--config`/flags exclusivity, flag-mode errors naming flags, and the positive side:
//! paths relative to the config file, default scopes and `project_ids`, prefix
//! normalisation, and the precedence of `--listen` over `MINTPROXY_LISTEN` over the
//! file's `listen` (the last through the binary's `check`, which prints the address).

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mintproxy::config::{Config, Credential, EndpointConfig, DEFAULT_SCOPES};
use mintproxy::demo::keygen::GeneratedKey;
use tempfile::TempDir;

/// The clientId of the application key the tests write.
const APP_CLIENT_ID: &str = "reports-app";

/// How `--config` next to route or credential flags is refused.
const CONFIG_WITH_FLAGS: &str = "--config: cannot be combined with --upstream, credential, --header or allowlist flags: put the route in the file";

/// A header value that must never show in an error message.
const HEADER_SECRET: &str = "s3cr3t-header-value-0123456789";

/// A service user's key file (generated once: RSA key generation is slow).
fn service_key_json() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| GeneratedKey::new("sa-key", "sa-user").key_json())
}

/// An application's key file with clientId [`APP_CLIENT_ID`] (generated once).
fn application_key_json() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| GeneratedKey::new("app-key", APP_CLIENT_ID).application_key_json())
}

/// A temporary directory holding one config file (`mintproxy.toml`) and the files it names.
struct ConfigDir {
    dir: TempDir,
}

impl ConfigDir {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `name` inside the directory (where a relative path in the config file points).
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the credential file `name` (mode 600) and returns its path.
    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        support::write_private(&path, contents);
        path
    }

    /// Writes `toml` as the config file and returns its path.
    fn config_file(&self, toml: &str) -> PathBuf {
        self.write("mintproxy.toml", toml)
    }

    /// Loads `toml` as `serve --config` would.
    fn load(&self, toml: &str) -> Result<Config, String> {
        let file = self.config_file(toml);
        support::try_serve_config(&["--config", file.to_str().unwrap()])
    }

    /// The error `toml` is refused with.
    fn error(&self, toml: &str) -> String {
        match self.load(toml) {
            Ok(config) => panic!("expected an error, got {config:#?}"),
            Err(error) => error,
        }
    }

    /// The error message's prefix for a problem in the config file itself.
    fn at(&self, line_column: &str) -> String {
        format!("{}:{line_column}", self.path("mintproxy.toml").display())
    }
}

/// A `[[routes]]` table.
fn route(prefix: &str, credential: &str) -> String {
    format!(
        "[[routes]]\nprefix = {prefix:?}\nupstream = \"http://127.0.0.1:9\"\ncredential = {credential:?}\n"
    )
}

/// A config with `credentials` (TOML tables) and one route at `/` using credential `x`.
fn with_route(credentials: &str) -> String {
    format!("{credentials}\n{}", route("/", "x"))
}

/// A config with a token-file credential `x` (its file not written: route errors come
/// first) and one route at `/` with `settings` added to the route table.
fn route_with(settings: &str) -> String {
    format!(
        "[credentials.x]\ntoken_file = \"pat.txt\"\n\n{}{settings}\n",
        route("/", "x")
    )
}

/// The text of the I/O error reading the missing `path` (worded by the platform).
fn not_found(path: &Path) -> String {
    assert!(!path.exists());
    std::fs::read(path).unwrap_err().to_string()
}

/// The error the `serve` flags are refused with.
fn flag_error(flags: &[&str]) -> String {
    match support::try_serve_config(flags) {
        Ok(config) => panic!("expected an error for {flags:?}, got {config:#?}"),
        Err(error) => error,
    }
}

/// The issuer and scopes of a grant-based credential.
fn endpoint(credential: &Credential) -> &EndpointConfig {
    match credential {
        Credential::JwtProfile { endpoint, .. }
        | Credential::ClientSecret { endpoint, .. }
        | Credential::ClientKey { endpoint, .. } => endpoint,
        Credential::StaticToken { .. } => panic!("a token file has no endpoint"),
    }
}

/// [`DEFAULT_SCOPES`] followed by `extra`.
fn default_scopes_and(extra: &[&str]) -> Vec<String> {
    DEFAULT_SCOPES
        .iter()
        .chain(extra)
        .map(|s| (*s).to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------
// The file's shape
// ---------------------------------------------------------------------------------------

/// A misspelt top-level key is an error at its line and column, not ignored.
#[test]
fn unknown_top_level_key_is_refused_with_its_position() {
    let dir = ConfigDir::new();
    let error = dir.error(&format!("lisen = \"127.0.0.1:8080\"\n{}", route("/", "x")));
    let expected = format!("{}: unknown field `lisen`, expected one of", dir.at("1:1"));
    assert!(error.starts_with(&expected), "{error}");
    assert!(error.contains("`listen`"), "the right key is suggested: {error}");
}

/// A misspelt key inside `[[routes]]` (a dropped allowlist would be a silent hole).
#[test]
fn unknown_route_key_is_refused_with_its_position() {
    let dir = ConfigDir::new();
    let error = dir.error(&route_with("allow_method = [\"GET\"]"));
    let expected = format!("{}: unknown field `allow_method`, expected one of", dir.at("8:1"));
    assert!(error.starts_with(&expected), "{error}");
    assert!(error.contains("`allow_methods`"), "{error}");
}

/// A misspelt key inside `[credentials.NAME]`.
#[test]
fn unknown_credential_key_is_refused_with_its_position() {
    let dir = ConfigDir::new();
    let error = dir.error(&with_route(
        "[credentials.x]\ntoken_file = \"pat.txt\"\nscope = [\"openid\"]\n",
    ));
    let expected = format!("{}: unknown field `scope`, expected one of", dir.at("3:1"));
    assert!(error.starts_with(&expected), "{error}");
}

/// A config file that does not exist is named.
#[test]
fn missing_config_file_is_named() {
    let dir = ConfigDir::new();
    let file = dir.path("absent.toml");
    let error = flag_error(&["--config", file.to_str().unwrap()]);
    assert_eq!(
        error,
        format!("{}: cannot read it: {}", file.display(), not_found(&file))
    );
}

/// Without any `[[routes]]` there is nothing to serve.
#[test]
fn no_routes_is_refused() {
    let dir = ConfigDir::new();
    dir.write("pat.txt", "token");
    let error = dir.error("[credentials.x]\ntoken_file = \"pat.txt\"\n");
    assert_eq!(error, "routes: at least one [[routes]] table is needed");
    assert_eq!(dir.error(""), "routes: at least one [[routes]] table is needed");
}

/// A `listen` that is not an address (a name without a port) is refused; `localhost` with
/// a port is loopback.
#[test]
fn bad_listen_address_is_refused() {
    let dir = ConfigDir::new();
    let error = dir.error(&format!("listen = \"localhost\"\n{}", route_with("")));
    assert_eq!(
        error,
        "listen: \"localhost\" is not an address like 127.0.0.1:8080, localhost:8080 or unix:/path"
    );
    // Without --listen, so the file's own is used.
    dir.write("pat.txt", "token");
    let file = dir.config_file(&format!("listen = \"localhost:8080\"\n{}", route_with("")));
    let cli = <mintproxy::cli::Cli as clap::Parser>::try_parse_from([
        "mintproxy",
        "serve",
        "--config",
        file.to_str().unwrap(),
    ])
    .unwrap();
    let mintproxy::cli::Command::Serve(serve) = cli.command else {
        unreachable!()
    };
    assert_eq!(serve.load().unwrap().listen.to_string(), "127.0.0.1:8080");
}

// ---------------------------------------------------------------------------------------
// Credentials in a config file
// ---------------------------------------------------------------------------------------

/// A route naming a credential that does not exist (a typo) names the route and the name.
#[test]
fn unknown_credential_is_refused() {
    let dir = ConfigDir::new();
    let toml = format!(
        "[credentials.billing]\ntoken_file = \"pat.txt\"\n\n{}{}",
        route("/a/", "billing"),
        route("/b/", "biling")
    );
    assert_eq!(
        dir.error(&toml),
        "routes[1].credential: unknown credential \"biling\""
    );
}

/// Two kinds of credential in one table: which one was meant cannot be guessed.
#[test]
fn ambiguous_credential_is_refused() {
    let dir = ConfigDir::new();
    let error = dir.error(&with_route(
        "[credentials.x]\nkey_file = \"sa.json\"\ntoken_file = \"pat.txt\"\n",
    ));
    assert_eq!(
        error,
        "credentials.x: ambiguous credential: credentials.x.key_file and credentials.x.token_file given, exactly one is needed"
    );
}

/// A table with no kind of credential lists the four kinds.
#[test]
fn credential_without_a_kind_is_refused() {
    let dir = ConfigDir::new();
    let error = dir.error(&with_route(
        "[credentials.x]\nissuer = \"https://my-instance.zitadel.cloud\"\n",
    ));
    assert_eq!(
        error,
        "credentials.x: no credential: give one of credentials.x.key_file, credentials.x.client_secret_file, credentials.x.client_key_file or credentials.x.token_file"
    );
}

/// A key file that does not exist is named, resolved against the config's directory.
#[test]
fn missing_key_file_is_named() {
    let dir = ConfigDir::new();
    let error = dir.error(&with_route(
        "[credentials.x]\nkey_file = \"missing.json\"\nissuer = \"https://my-instance.zitadel.cloud\"\n",
    ));
    let path = dir.path("missing.json");
    assert_eq!(
        error,
        format!(
            "credentials.x.key_file: key file {}: cannot read it: {}",
            path.display(),
            not_found(&path)
        )
    );
}

/// A secret file that does not exist is named.
#[test]
fn missing_secret_file_is_named() {
    let dir = ConfigDir::new();
    let error = dir.error(&with_route(
        "[credentials.x]\nclient_id = \"billing-svc\"\nclient_secret_file = \"secret.txt\"\nissuer = \"https://auth.example.com\"\n",
    ));
    let path = dir.path("secret.txt");
    assert_eq!(
        error,
        format!(
            "credentials.x.client_secret_file: cannot read {}: {}",
            path.display(),
            not_found(&path)
        )
    );
}

/// A token file holding only whitespace is empty, and its contents are not quoted.
#[test]
fn empty_token_file_is_refused() {
    let dir = ConfigDir::new();
    let path = dir.write("pat.txt", " \n\t\n");
    let error = dir.error(&with_route("[credentials.x]\ntoken_file = \"pat.txt\"\n"));
    assert_eq!(
        error,
        format!("credentials.x.token_file: {} is empty", path.display())
    );
}

/// A grant needs an issuer, and it must be an http(s) URL.
#[test]
fn issuer_is_required_and_must_be_http() {
    let dir = ConfigDir::new();
    dir.write("sa.json", service_key_json());
    let error = dir.error(&with_route("[credentials.x]\nkey_file = \"sa.json\"\n"));
    assert_eq!(
        error,
        "credentials.x.issuer: is required (the URL of your ZITADEL instance)"
    );
    let error = dir.error(&with_route(
        "[credentials.x]\nkey_file = \"sa.json\"\nissuer = \"ftp://my-instance.zitadel.cloud\"\n",
    ));
    assert_eq!(
        error,
        "credentials.x.issuer: \"ftp://my-instance.zitadel.cloud\" must be an http or https URL"
    );
}

/// A client secret is useless without the client it belongs to.
#[test]
fn client_secret_without_client_id_is_refused() {
    let dir = ConfigDir::new();
    dir.write("secret.txt", "s3cr3t");
    let error = dir.error(&with_route(
        "[credentials.x]\nclient_secret_file = \"secret.txt\"\nissuer = \"https://auth.example.com\"\n",
    ));
    assert_eq!(
        error,
        "credentials.x.client_id: is required with credentials.x.client_secret_file"
    );
}

/// A client id contradicting the application key's own clientId is refused, not used.
#[test]
fn client_id_differing_from_the_application_key_is_refused() {
    let dir = ConfigDir::new();
    dir.write("app.json", application_key_json());
    let error = dir.error(&with_route(
        "[credentials.x]\nclient_key_file = \"app.json\"\nclient_id = \"someone-else\"\nissuer = \"https://my-instance.zitadel.cloud\"\n",
    ));
    assert_eq!(
        error,
        format!("credentials.x.client_id: \"someone-else\" differs from the key file's clientId \"{APP_CLIENT_ID}\"")
    );
}

/// A client id with a service user's key is a mistake worth saying.
#[test]
fn client_id_with_a_service_user_key_is_refused() {
    let dir = ConfigDir::new();
    dir.write("sa.json", service_key_json());
    let error = dir.error(&with_route(
        "[credentials.x]\nkey_file = \"sa.json\"\nclient_id = \"billing-svc\"\nissuer = \"https://my-instance.zitadel.cloud\"\n",
    ));
    assert_eq!(
        error,
        "credentials.x.client_id: is not used with credentials.x.key_file"
    );
}

/// An application key given as a service user's key says where it belongs.
#[test]
fn application_key_as_key_file_is_refused() {
    let dir = ConfigDir::new();
    let path = dir.write("app.json", application_key_json());
    let error = dir.error(&with_route(
        "[credentials.x]\nkey_file = \"app.json\"\nissuer = \"https://my-instance.zitadel.cloud\"\n",
    ));
    assert_eq!(
        error,
        format!(
            "credentials.x.key_file: key file {}: field `type` is \"application\": an application's key: use it as a client key (--client-key-file, client_key_file)",
            path.display()
        )
    );
}

/// A service user's key given as an application key says where it belongs.
#[test]
fn service_user_key_as_client_key_file_is_refused() {
    let dir = ConfigDir::new();
    let path = dir.write("sa.json", service_key_json());
    let error = dir.error(&with_route(
        "[credentials.x]\nclient_key_file = \"sa.json\"\nissuer = \"https://my-instance.zitadel.cloud\"\n",
    ));
    assert_eq!(
        error,
        format!(
            "credentials.x.client_key_file: key file {}: field `type` is \"serviceaccount\": a service user's key: use it with --key-file (key_file)",
            path.display()
        )
    );
}

// ---------------------------------------------------------------------------------------
// Routes in a config file
// ---------------------------------------------------------------------------------------

/// Two routes for one prefix (a trailing slash does not make it another) are refused.
#[test]
fn duplicate_prefix_is_refused() {
    let dir = ConfigDir::new();
    let toml = format!(
        "[credentials.x]\ntoken_file = \"pat.txt\"\n\n{}{}",
        route("/api", "x"),
        route("/api/", "x")
    );
    assert_eq!(
        dir.error(&toml),
        "routes[1].prefix: duplicate prefix \"/api/\" (also routes[0])"
    );
}

/// A prefix is a path: it starts with a slash.
#[test]
fn prefix_without_leading_slash_is_refused() {
    let dir = ConfigDir::new();
    let toml = format!(
        "[credentials.x]\ntoken_file = \"pat.txt\"\n\n{}",
        route("api/", "x")
    );
    assert_eq!(dir.error(&toml), "routes[0].prefix: \"api/\" must start with /");
}

/// Only http and https upstreams.
#[test]
fn bad_upstream_scheme_is_refused() {
    let dir = ConfigDir::new();
    let toml = "[credentials.x]\ntoken_file = \"pat.txt\"\n\n[[routes]]\nprefix = \"/\"\nupstream = \"ftp://files.example\"\ncredential = \"x\"\n";
    assert_eq!(
        dir.error(toml),
        "routes[0].upstream: upstream \"ftp://files.example\": the scheme must be http or https"
    );
}

/// A method list entry that is not a method (here two methods in one string).
#[test]
fn bad_allow_methods_entry_is_refused() {
    let dir = ConfigDir::new();
    let error = dir.error(&route_with("allow_methods = [\"GET\", \"GET POST\"]"));
    assert_eq!(
        error,
        "routes[0].allow_methods: \"GET POST\" is not an HTTP method"
    );
}

/// Allow and deny paths are path prefixes: they start with a slash.
#[test]
fn allow_and_deny_paths_without_leading_slash_are_refused() {
    let dir = ConfigDir::new();
    assert_eq!(
        dir.error(&route_with("allow_paths = [\"/v1/\", \"v2/\"]")),
        "routes[0].allow_paths: \"v2/\" must start with /"
    );
    assert_eq!(
        dir.error(&route_with("deny_paths = [\"admin/\"]")),
        "routes[0].deny_paths: \"admin/\" must start with /"
    );
}

/// Requests are checked in their normal form, so rules must be written in it.
#[test]
fn paths_not_in_normal_form_are_refused() {
    let dir = ConfigDir::new();
    assert_eq!(
        dir.error(&route_with("deny_paths = [\"/%61dmin\"]")),
        "routes[0].deny_paths: \"/%61dmin\" is not in normal form (requests are checked as \"/admin\"); write it so"
    );
    assert_eq!(
        dir.error(&route_with("allow_paths = [\"/v1;x\"]")),
        "routes[0].allow_paths: \"/v1;x\" has a `;` path parameter"
    );
}

/// `Authorization` (and `Host`) are mintproxy's to set; the value is not quoted back.
#[test]
fn authorization_and_host_headers_are_refused() {
    let dir = ConfigDir::new();
    let error = dir.error(&route_with(&format!(
        "headers = {{ \"Authorization\" = \"Bearer {HEADER_SECRET}\" }}"
    )));
    assert_eq!(
        error,
        "routes[0].headers: \"Authorization\": mintproxy sets this header itself"
    );
    let error = dir.error(&route_with("headers = { \"host\" = \"elsewhere.example\" }"));
    assert_eq!(
        error,
        "routes[0].headers: \"host\": mintproxy sets this header itself"
    );
}

/// A header value may be a secret (an API key): an invalid one is reported by name only.
#[test]
fn header_value_never_appears_in_an_error() {
    let dir = ConfigDir::new();
    let error = dir.error(&route_with(&format!(
        "headers = {{ \"x-api-key\" = \"{HEADER_SECRET}\\u0007\" }}"
    )));
    assert_eq!(error, "routes[0].headers: \"x-api-key\": invalid header value");
    let error = dir.error(&route_with(&format!(
        "headers = {{ \"x api key\" = \"{HEADER_SECRET}\" }}"
    )));
    assert_eq!(error, "routes[0].headers: \"x api key\": invalid header name");
}

/// A header value of the wrong TOML type (a numeric API key) is not quoted back either.
#[test]
fn mistyped_header_value_never_appears_in_an_error() {
    let dir = ConfigDir::new();
    let error = dir.error(&route_with("headers = { \"x-api-key\" = 98765432109876 }"));
    assert_eq!(
        error,
        format!("{}: invalid type: integer, expected a string", dir.at("8:27"))
    );
}

// ---------------------------------------------------------------------------------------
// A config file and flags together
// ---------------------------------------------------------------------------------------

/// Loads a valid config file with the `serve` flags `extra` added.
fn config_and_flags(extra: &[&str]) -> Result<Config, String> {
    let dir = ConfigDir::new();
    dir.write("pat.txt", "token");
    let file = dir.config_file(&route_with(""));
    support::try_serve_config(&[&["--config", file.to_str().unwrap()], extra].concat())
}

/// The config file or the single-upstream flags, not both: a flag would be ignored.
#[test]
fn config_with_upstream_credential_or_header_flags_is_refused() {
    assert!(config_and_flags(&[]).is_ok());
    for extra in [
        ["--upstream", "http://127.0.0.1:9"],
        ["--key-file", "sa.json"],
        ["--issuer", "https://my-instance.zitadel.cloud"],
        ["--header", "x-zitadel-orgid: 1"],
    ] {
        assert_eq!(
            config_and_flags(&extra).unwrap_err(),
            CONFIG_WITH_FLAGS,
            "{extra:?}"
        );
    }
}

/// An allowlist flag next to `--config` would not restrict anything: it must be refused,
/// not silently dropped (the file's route would forward every method and path).
#[test]
fn config_with_allowlist_flags_is_refused() {
    for extra in [
        ["--allow-method", "GET"],
        ["--allow-path", "/v1/"],
        ["--deny-path", "/admin/"],
    ] {
        match config_and_flags(&extra) {
            Ok(_) => panic!("{extra:?} next to --config was silently ignored"),
            Err(error) => assert_eq!(error, CONFIG_WITH_FLAGS, "{extra:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------

/// Without `--upstream` or `--config` there is nothing to serve.
#[test]
fn flags_need_an_upstream() {
    assert_eq!(
        flag_error(&["--token-file", "pat.txt"]),
        "--upstream: is required (or --config with routes)"
    );
}

/// Credential errors in flag mode name the flags, not the file's keys.
#[test]
fn flag_credential_errors_name_flags() {
    let dir = ConfigDir::new();
    let sa = dir.write("sa.json", service_key_json());
    let sa = sa.to_str().unwrap();
    let secret = dir.write("secret.txt", "s3cr3t");
    let secret = secret.to_str().unwrap();
    let upstream = ["--upstream", "https://my-instance.zitadel.cloud"];
    let error = |flags: &[&str]| flag_error(&[&upstream[..], flags].concat());

    assert_eq!(
        error(&[]),
        "credential: no credential: give one of --key-file, --client-secret-file, --client-key-file or --token-file"
    );
    assert_eq!(
        error(&["--key-file", sa, "--token-file", secret]),
        "credential: ambiguous credential: --key-file and --token-file given, exactly one is needed"
    );
    assert_eq!(
        error(&["--client-secret-file", secret]),
        "--client-id: is required with --client-secret-file"
    );
    assert_eq!(
        error(&["--key-file", sa, "--client-id", "billing-svc"]),
        "--client-id: is not used with --key-file"
    );
    assert_eq!(
        error(&["--key-file", sa, "--issuer", "ftp://x.example"]),
        "--issuer: \"ftp://x.example\" must be an http or https URL"
    );
}

/// Key file problems in flag mode name `--key-file` / `--client-key-file` and the path.
#[test]
fn flag_key_file_errors_name_flags_and_paths() {
    let dir = ConfigDir::new();
    let app = dir.write("app.json", application_key_json());
    let sa = dir.write("sa.json", service_key_json());
    let missing = dir.path("missing.json");
    let upstream = ["--upstream", "https://my-instance.zitadel.cloud"];
    let error =
        |flag: &str, path: &Path| flag_error(&[&upstream[..], &[flag, path.to_str().unwrap()]].concat());

    assert_eq!(
        error("--key-file", &missing),
        format!(
            "--key-file: key file {}: cannot read it: {}",
            missing.display(),
            not_found(&missing)
        )
    );
    assert_eq!(
        error("--key-file", &app),
        format!(
            "--key-file: key file {}: field `type` is \"application\": an application's key: use it as a client key (--client-key-file, client_key_file)",
            app.display()
        )
    );
    assert_eq!(
        error("--client-key-file", &sa),
        format!(
            "--client-key-file: key file {}: field `type` is \"serviceaccount\": a service user's key: use it with --key-file (key_file)",
            sa.display()
        )
    );
    assert_eq!(
        flag_error(
            &[
                &upstream[..],
                &["--client-key-file", app.to_str().unwrap(), "--client-id", "other"]
            ]
            .concat()
        ),
        format!("--client-id: \"other\" differs from the key file's clientId \"{APP_CLIENT_ID}\"")
    );
}

/// Route errors in flag mode name the flags.
#[test]
fn flag_route_errors_name_flags() {
    let dir = ConfigDir::new();
    let pat = dir.write("pat.txt", "token");
    let pat = pat.to_str().unwrap();
    let base = ["--upstream", "http://127.0.0.1:9", "--token-file", pat];
    let error = |flags: &[&str]| flag_error(&[&base[..], flags].concat());

    assert_eq!(
        flag_error(&["--upstream", "ftp://files.example", "--token-file", pat]),
        "--upstream: upstream \"ftp://files.example\": the scheme must be http or https"
    );
    assert_eq!(
        error(&["--allow-method", "GET,G T"]),
        "--allow-method: \"G T\" is not an HTTP method"
    );
    assert_eq!(
        error(&["--allow-path", "v1/"]),
        "--allow-path: \"v1/\" must start with /"
    );
    assert_eq!(
        error(&["--deny-path", "admin/"]),
        "--deny-path: \"admin/\" must start with /"
    );
}

/// `--header` errors quote the header's name at most, never its value.
#[test]
fn flag_header_errors_never_quote_the_value() {
    let dir = ConfigDir::new();
    let pat = dir.write("pat.txt", "token");
    let pat = pat.to_str().unwrap();
    let base = ["--upstream", "http://127.0.0.1:9", "--token-file", pat];
    let error = |header: &str| flag_error(&[&base[..], &["--header", header]].concat());

    let cases = [
        (
            format!("Authorization: Bearer {HEADER_SECRET}"),
            "--header: \"Authorization\": mintproxy sets this header itself",
        ),
        (
            format!("x-api-key {HEADER_SECRET}"),
            "--header: expected 'Name: value'",
        ),
        (
            format!("x-api-key: {HEADER_SECRET}\u{7}"),
            "--header: \"x-api-key\": invalid header value",
        ),
    ];
    for (header, expected) in cases {
        let message = error(&header);
        assert_eq!(message, expected);
        assert!(!message.contains(HEADER_SECRET));
    }
}

// ---------------------------------------------------------------------------------------
// What a valid configuration becomes
// ---------------------------------------------------------------------------------------

/// Relative paths in a config file are relative to the file, not to the working
/// directory; absolute paths stay as given.
#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let dir = ConfigDir::new();
    dir.write("keys/sa.json", service_key_json());
    dir.write("keys/app.json", application_key_json());
    dir.write("secret.txt", "s3cr3t");
    let elsewhere = ConfigDir::new();
    let absolute = elsewhere.write("pat.txt", "token");
    let toml = format!(
        "[credentials.sa]\nkey_file = \"keys/sa.json\"\nissuer = \"https://i.example\"\n\n\
         [credentials.app]\nclient_key_file = \"keys/app.json\"\nissuer = \"https://i.example\"\n\n\
         [credentials.secret]\nclient_id = \"billing-svc\"\nclient_secret_file = \"secret.txt\"\nissuer = \"https://i.example\"\n\n\
         [credentials.pat]\ntoken_file = {:?}\n\n{}",
        absolute.to_str().unwrap(),
        route("/", "sa")
    );
    let config = dir.load(&toml).unwrap();
    let credential = |name: &str| &config.credentials[name];

    assert!(
        matches!(credential("sa"), Credential::JwtProfile { key_file, .. } if *key_file == dir.path("keys/sa.json")),
        "{:?}",
        credential("sa")
    );
    assert!(
        matches!(credential("app"), Credential::ClientKey { key_file, client_id, .. }
            if *key_file == dir.path("keys/app.json") && client_id == APP_CLIENT_ID),
        "{:?}",
        credential("app")
    );
    assert!(
        matches!(credential("secret"), Credential::ClientSecret { secret_file, client_id, .. }
            if *secret_file == dir.path("secret.txt") && client_id == "billing-svc"),
        "{:?}",
        credential("secret")
    );
    assert!(
        matches!(credential("pat"), Credential::StaticToken { token_file } if *token_file == absolute),
        "{:?}",
        credential("pat")
    );
}

/// Without `scopes`, ZITADEL's default scopes; `project_ids` add their audiences, after
/// the default scopes or after the scopes given.
#[test]
fn default_scopes_and_project_audiences() {
    let dir = ConfigDir::new();
    dir.write("sa.json", service_key_json());
    let toml = format!(
        "[credentials.plain]\nkey_file = \"sa.json\"\nissuer = \"https://i.example\"\n\n\
         [credentials.project]\nkey_file = \"sa.json\"\nissuer = \"https://i.example\"\nproject_ids = [\"111\", \"222\"]\n\n\
         [credentials.own]\nkey_file = \"sa.json\"\nissuer = \"https://i.example\"\nscopes = [\"openid\", \"profile\"]\nproject_ids = [\"333\"]\n\n{}",
        route("/", "plain")
    );
    let config = dir.load(&toml).unwrap();
    let scopes = |name: &str| endpoint(&config.credentials[name]).scopes.clone();

    assert_eq!(
        DEFAULT_SCOPES,
        ["openid", "urn:zitadel:iam:org:project:id:zitadel:aud"]
    );
    assert_eq!(scopes("plain"), default_scopes_and(&[]));
    assert_eq!(
        scopes("project"),
        default_scopes_and(&[
            "urn:zitadel:iam:org:project:id:111:aud",
            "urn:zitadel:iam:org:project:id:222:aud"
        ])
    );
    assert_eq!(
        scopes("own"),
        ["openid", "profile", "urn:zitadel:iam:org:project:id:333:aud"]
    );
}

/// In flag mode the issuer defaults to the upstream's origin, and `--project-id` (repeated
/// or space-separated) adds audiences to the default scopes.
#[test]
fn flag_defaults_issuer_and_project_ids() {
    let dir = ConfigDir::new();
    let sa = dir.write("sa.json", service_key_json());
    let config = support::serve_config(&[
        "--upstream",
        "https://my-instance.zitadel.cloud/base/",
        "--key-file",
        sa.to_str().unwrap(),
        "--project-id",
        "111 222",
        "--project-id",
        "333",
    ]);
    let endpoint = endpoint(&config.credentials["default"]);
    assert_eq!(endpoint.issuer, "https://my-instance.zitadel.cloud");
    assert_eq!(
        endpoint.scopes,
        default_scopes_and(&[
            "urn:zitadel:iam:org:project:id:111:aud",
            "urn:zitadel:iam:org:project:id:222:aud",
            "urn:zitadel:iam:org:project:id:333:aud"
        ])
    );
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.routes[0].prefix, "");
}

/// Prefixes lose their trailing slash (`/` becomes the root, `""`); routes keep their order.
#[test]
fn prefixes_are_normalised_and_routes_keep_their_order() {
    let dir = ConfigDir::new();
    dir.write("pat.txt", "token");
    let toml = format!(
        "[credentials.x]\ntoken_file = \"pat.txt\"\n\n{}{}{}",
        route("/zitadel/", "x"),
        route("/billing", "x"),
        route("/", "x")
    );
    let config = dir.load(&toml).unwrap();
    let prefixes: Vec<&str> = config.routes.iter().map(|r| r.prefix.as_str()).collect();
    assert_eq!(prefixes, ["/zitadel", "/billing", ""]);
}

/// `--listen` replaces the file's `listen` (the harness always passes `127.0.0.1:0`).
#[test]
fn listen_flag_overrides_the_file() {
    let dir = ConfigDir::new();
    dir.write("pat.txt", "token");
    let config = dir
        .load(&format!("listen = \"127.0.0.1:8181\"\n{}", route_with("")))
        .unwrap();
    assert_eq!(config.listen, "127.0.0.1:0".parse().unwrap());
}

/// Runs `mintproxy check --config <valid file with listen = 127.0.0.1:1000>` with `flags`
/// and `env` added, and returns the address it reports listening on.
async fn checked_listen(flags: &[&str], env: &[(&str, &str)]) -> String {
    let dir = ConfigDir::new();
    dir.write("pat.txt", "token");
    let file = dir.config_file(&format!("listen = \"127.0.0.1:1000\"\n{}", route_with("")));
    let args = [&["check", "--config", file.to_str().unwrap()], flags].concat();
    let run = support::run_binary(&args, env).await;
    assert!(run.status.success(), "{run:#?}");
    let line = run.stdout.lines().next().unwrap_or_default();
    line.strip_prefix("configuration is valid; listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {run:#?}"))
        .to_owned()
}

/// The file's `listen` is used, `MINTPROXY_LISTEN` overrides it, and `--listen` wins over
/// both (through the binary, where the environment is really read).
#[tokio::test]
async fn listen_precedence_flag_then_environment_then_file() {
    assert_eq!(checked_listen(&[], &[]).await, "127.0.0.1:1000");
    assert_eq!(
        checked_listen(&[], &[("MINTPROXY_LISTEN", "127.0.0.1:1111")]).await,
        "127.0.0.1:1111"
    );
    assert_eq!(
        checked_listen(
            &["--listen", "127.0.0.1:2222"],
            &[("MINTPROXY_LISTEN", "127.0.0.1:1111")]
        )
        .await,
        "127.0.0.1:2222"
    );
}
