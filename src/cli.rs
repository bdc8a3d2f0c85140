//! The command line: commands and flags. Every flag also reads `MINTPROXY_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Authenticating reverse proxy: send plain HTTP, it forwards with
/// `Authorization: Bearer <token>` minted from a ZITADEL service user's key.
#[derive(Debug, Parser)]
#[command(name = "mintproxy", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy in front of one upstream.
    ///
    /// Example: mintproxy serve --upstream https://my-instance.zitadel.cloud --key-file sa.json
    Serve(ServeArgs),
    /// Mint one token and print it, for scripts: export TOKEN=$(mintproxy token ...)
    Token(TokenArgs),
    /// Run everything on this machine (stand-in issuer, echo upstream, proxy) and show a
    /// request going through. No ZITADEL needed.
    Demo(DemoArgs),
}

/// Which service user, at which issuer, with which scopes.
#[derive(Debug, Clone, Args)]
pub struct CredentialArgs {
    /// The service user's key file, as ZITADEL downloads it (JSON with keyId, key, userId).
    #[arg(long, env = "MINTPROXY_KEY_FILE", value_name = "PATH")]
    pub key_file: PathBuf,

    /// The issuer (your ZITADEL instance), e.g. https://my-instance.zitadel.cloud.
    /// Default for `serve`: the upstream's origin.
    #[arg(long, env = "MINTPROXY_ISSUER", value_name = "URL")]
    pub issuer: Option<String>,

    /// Scopes to request, replacing the default
    /// "openid urn:zitadel:iam:org:project:id:zitadel:aud". Repeat or separate by spaces.
    #[arg(
        long = "scope",
        env = "MINTPROXY_SCOPE",
        value_name = "SCOPE",
        value_delimiter = ' '
    )]
    pub scopes: Vec<String>,

    /// Adds the audience of your own project: urn:zitadel:iam:org:project:id:ID:aud.
    #[arg(
        long = "project-id",
        env = "MINTPROXY_PROJECT_ID",
        value_name = "ID",
        value_delimiter = ' '
    )]
    pub project_ids: Vec<String>,

    /// Token endpoint URL, skipping OIDC discovery, e.g. https://my-instance.zitadel.cloud/oauth/v2/token.
    #[arg(long, env = "MINTPROXY_TOKEN_ENDPOINT", value_name = "URL")]
    pub token_endpoint: Option<String>,
}

/// Flags of `mintproxy serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port and prints it.
    #[arg(
        long,
        env = "MINTPROXY_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,

    /// Where every request goes, e.g. https://my-instance.zitadel.cloud.
    #[arg(long, env = "MINTPROXY_UPSTREAM", value_name = "URL")]
    pub upstream: String,

    /// The credential.
    #[command(flatten)]
    pub credential: CredentialArgs,

    /// Extra header on every upstream request, e.g. --header 'x-zitadel-orgid: 1234'.
    /// Repeatable; in the environment, one per line.
    #[arg(
        long = "header",
        env = "MINTPROXY_HEADER",
        value_name = "'NAME: VALUE'",
        value_delimiter = '\n'
    )]
    pub headers: Vec<String>,
}

/// Flags of `mintproxy token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The credential (`--issuer` is required here).
    #[command(flatten)]
    pub credential: CredentialArgs,

    /// raw: the token alone; header: "Authorization: Bearer ..."; json: token, type, expiry, scopes.
    #[arg(long, env = "MINTPROXY_FORMAT", value_enum, default_value_t = TokenFormat::Raw)]
    pub format: TokenFormat,
}

/// How `mintproxy token` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenFormat {
    /// The bare access token and a newline.
    Raw,
    /// An `Authorization: Bearer ...` header line.
    Header,
    /// A JSON object with access_token, token_type, expires_in and scope.
    Json,
}

/// Flags of `mintproxy demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Send one request, print what happened, and exit.
    #[arg(long, env = "MINTPROXY_ONCE")]
    pub once: bool,

    /// Where the demo proxy listens (default 127.0.0.1:8080, or any free port with --once
    /// or when 8080 is taken).
    #[arg(long, env = "MINTPROXY_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}
