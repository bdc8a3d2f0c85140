//! The `mintproxy` binary: parse the command line, set up logging, validate, dispatch,
//! choose the exit code. Everything else lives in the library.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use mintproxy::cli::{Cli, Command, TokenFormat};
use mintproxy::server::{shutdown_signal, ServerOptions};
use mintproxy::{app, demo};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Token(_) | Command::Demo(_) => "warn",
        Command::Serve(_) => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mintproxy: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Serve(args) => {
            let config = args.validate()?;
            let listener = app::bind(config.listen).await?;
            let addr = listener.local_addr()?;
            println!(
                "mintproxy listening on http://{addr}, forwarding to {}",
                args.upstream
            );
            app::run_proxy(
                listener,
                &config,
                ServerOptions::default(),
                shutdown_signal(),
            )
            .await?;
        }
        Command::Token(args) => {
            let credential = args.credential.validate(None)?;
            let token = app::mint_once(&credential).await?;
            let secret = token.access_token.expose();
            match args.format {
                TokenFormat::Raw => println!("{secret}"),
                TokenFormat::Header => println!("Authorization: Bearer {secret}"),
                TokenFormat::Json => println!(
                    "{}",
                    serde_json::json!({
                        "access_token": secret,
                        "token_type": "Bearer",
                        "expires_in": token.lifetime.as_secs(),
                        "scope": token.scope,
                    })
                ),
            }
        }
        Command::Demo(args) => demo::run(args).await?,
    }
    Ok(())
}
