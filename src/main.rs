//! The `mintproxy` binary: parse the command line, set up logging, validate, dispatch,
//! choose the exit code. Everything else lives in the library.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use mintproxy::access_log::Shape;
use mintproxy::app::reload::{Hangups, Source};
use mintproxy::cli::{Cli, Command, LogFormat, TokenFormat};
use mintproxy::server::{shutdown_signals, Drained};
use mintproxy::{app, check, config, demo, exec, scripts};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// mimalloc instead of the system allocator: it makes hyper's per-message buffer and
/// header allocations several times cheaper (see bench/README.md); 4 % fewer instructions
/// per request and 2.7 KiB less per idle connection than glibc's malloc, for 0.5 MiB more
/// idle RSS (bench/results-footprint.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match cli.worker_threads() {
        // One thread: a current-thread runtime on this thread, with no cross-thread
        // scheduling at all.
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    match runtime {
        Ok(runtime) => runtime.block_on(start(cli)),
        Err(error) => {
            eprintln!("mintproxy: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up logging, then runs the command.
async fn start(cli: Cli) -> ExitCode {
    let default_level = match cli.command {
        Command::Token(_) | Command::Demo(_) | Command::Check(_) | Command::Exec(_) => tracing::Level::WARN,
        Command::Serve(_) => tracing::Level::INFO,
    };
    // `RUST_LOG` as targets and levels (`info,mintproxy::access=off`): the filter without
    // span and field directives, whose regex engine would add 0.2 MB to the binary.
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, invalid) = match rust_log.as_deref().map(str::parse::<Targets>) {
        Some(Ok(targets)) => (targets, None),
        Some(Err(error)) => (Targets::new().with_default(default_level), Some(error)),
        None => (Targets::new().with_default(default_level), None),
    };
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    let ansi = std::io::stderr().is_terminal();
    // The access log writes its own lines, in the same shape.
    let shape = match cli.log_format {
        // One object per line, the event's fields at the top level beside timestamp,
        // level and target.
        LogFormat::Json => {
            registry
                .with(logs.json().flatten_event(true).with_current_span(false))
                .init();
            Shape::Json
        }
        LogFormat::Text => {
            registry.with(logs.with_ansi(ansi)).init();
            if ansi {
                Shape::Ansi
            } else {
                Shape::Text
            }
        }
    };
    if let Some(error) = invalid {
        tracing::warn!(%error, "RUST_LOG is not a list of targets and levels; using {default_level}");
    }
    match run(cli.command, shape).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mintproxy: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, shape: Shape) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match command {
        Command::Serve(args) => {
            // First: from here on SIGHUP reloads instead of ending the process.
            let hangups = Hangups::subscribe()?;
            let file = args.config.is_some();
            // The one way the configuration is read, at start and on every reload.
            let source: Source = Arc::new(move || {
                let mut config = args.load()?;
                config.access_log.shape = shape;
                Ok(config)
            });
            let config = source()?;
            let listener = app::bind(&config.listen).await?;
            println!("mintproxy listening on {}", listener.local_addr()?.url());
            let (drain, now) = shutdown_signals()?;
            let prepared = app::prepare(listener, &config)
                .await?
                .reload_on(hangups, file.then_some(source));
            let drained = tokio::select! {
                drained = prepared.serve(drain) => drained,
                signal = now => {
                    eprintln!("mintproxy: a second signal ({signal}): stopping now, without waiting for the requests in flight");
                    return Ok(ExitCode::from(signal.exit_code()));
                }
            };
            if let Drained::Cut(cut) = drained {
                eprintln!("mintproxy: the drain deadline cut {cut} request(s) short");
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Token(args) => {
            let credential = match &args.config {
                Some(file) => config::credential_from_file(file, args.credential_name.as_deref())?,
                None => config::validate_credential_flags(&args.credential.to_raw())?,
            };
            let obtained = match scripts::token(&credential, &args.trust.to_trust(), !args.no_cache).await {
                Ok(obtained) => obtained,
                Err(error) => {
                    eprintln!("mintproxy: {error}");
                    if let Some(line) = error.likely_cause() {
                        eprintln!("  {line}");
                    }
                    return Ok(ExitCode::FAILURE);
                }
            };
            let token = &obtained.token;
            let secret = token.access_token.expose();
            match args.format {
                TokenFormat::Raw => println!("{secret}"),
                TokenFormat::Header => println!("Authorization: Bearer {secret}"),
                TokenFormat::Json => println!(
                    "{}",
                    serde_json::json!({
                        "access_token": secret,
                        "token_type": "Bearer",
                        "expires_in": token.lifetime.map(|l| l.as_secs()),
                        "scope": token.scope.as_ref().map(|scope| &scope.list),
                        "scope_source": token.scope.as_ref().map(|scope| scope.source.as_str()),
                    })
                ),
                TokenFormat::ExecCredential => println!("{}", scripts::exec_credential(&obtained)),
            }
        }
        Command::Check(args) => {
            let config = args.proxy.load()?;
            let (report, ok) = check::check(&config, args.online).await;
            print!("{report}");
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Demo(args) => demo::run(args).await?,
        Command::Exec(args) => return Ok(exec::run(args).await?),
    }
    Ok(ExitCode::SUCCESS)
}
