//! `mintproxy exec [flags] -- COMMAND ARGS...`: runs a command with the proxy beside it,
//! as Vault Agent and aws-vault run a child with credentials. The proxy listens on
//! 127.0.0.1 with a free port, the command finds it in `MINTPROXY_URL`, SIGINT and SIGTERM
//! are passed on to it, and its exit status becomes mintproxy's (128 + the signal when a
//! signal killed it); then the proxy stops.
//!
//! Everything that can fail does so before the command starts: flags, configuration,
//! binding, and the first token of every credential (so a wrong key shows as the issuer's
//! error, not as a 503 inside the command).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus};

use rustix::process::{Pid, Signal};
use tokio::process::Child;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::app::{self, StartError};
use crate::cli::ExecArgs;
use crate::config::ConfigError;
use crate::server::ListenAddr;
use crate::token::NoToken;

/// Why the command was not run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The proxy cannot start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// `--export-token` with several credentials: which token is meant?
    #[error("--export-token needs exactly one credential; the configuration has {0}")]
    ExportWhich(usize),
    /// A credential has no token.
    #[error("credential {credential}: {error}{}", diagnosis(error))]
    NoToken {
        /// The credential's name.
        credential: String,
        /// Why.
        error: NoToken,
    },
    /// Signals cannot be watched, so they could not be passed on.
    #[error("cannot watch for signals: {0}")]
    Signals(#[source] std::io::Error),
}

fn diagnosis(error: &NoToken) -> String {
    error
        .cause()
        .and_then(|cause| cause.diagnosis())
        .map(|diagnosis| format!("\n  likely cause: {diagnosis}"))
        .unwrap_or_default()
}

/// Runs `mintproxy exec`; the exit code is the command's.
pub async fn run(args: ExecArgs) -> Result<ExitCode, ExecError> {
    let mut config = args.proxy.load()?;
    config.listen = args
        .proxy
        .listen
        .clone()
        .unwrap_or(ListenAddr::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))));
    if args.export_token && config.credentials.len() != 1 {
        return Err(ExecError::ExportWhich(config.credentials.len()));
    }
    let listener = app::bind(&config.listen).await?;
    let url = listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: config.listen.clone(),
            source,
        })?
        .url();
    let prepared = app::prepare(listener, &config).await?;
    let mut tokens = Vec::with_capacity(prepared.caches().len());
    for cache in prepared.caches() {
        tokens.push(cache.token().await.map_err(|error| ExecError::NoToken {
            credential: cache.name().to_owned(),
            error,
        })?);
    }

    let (program, arguments) = args.command.split_first().expect("clap requires a command");
    let mut command = tokio::process::Command::new(program);
    command.args(arguments).env("MINTPROXY_URL", &url);
    if let (true, [token]) = (args.export_token, &tokens[..]) {
        let header = token.header().to_str().unwrap_or_default();
        command.env(
            "MINTPROXY_TOKEN",
            header.strip_prefix("Bearer ").unwrap_or(header),
        );
    }
    // Watching from before the spawn on, so no signal meant for the command is lost.
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ExecError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(ExecError::Signals)?;
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            eprintln!("mintproxy: cannot run {program:?}: {error}");
            // What a shell answers for a command it cannot find or cannot execute.
            let code = if error.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return Ok(ExitCode::from(code));
        }
    };
    let stop = CancellationToken::new();
    let serving = tokio::spawn(prepared.serve(stop.clone().cancelled_owned()));
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = interrupt.recv() => pass_on(&child, Signal::INT),
            _ = terminate.recv() => pass_on(&child, Signal::TERM),
        }
    };
    stop.cancel();
    let _ = serving.await;
    match status {
        Ok(status) => Ok(ExitCode::from(exit_code(status))),
        Err(error) => {
            eprintln!("mintproxy: lost track of {program:?}: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Sends `signal` to the command. Ctrl-C in a terminal reaches the command directly as
/// well (it is in the same process group); a `kill` aimed at mintproxy only through here.
fn pass_on(child: &Child, signal: Signal) {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    if let Some(pid) = pid {
        if let Err(error) = rustix::process::kill_process(pid, signal) {
            tracing::warn!(%error, "cannot pass the signal on to the command");
        }
    }
}

/// The command's exit code, or 128 + the signal that killed it, as shells report it.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(255 << 8)), 255);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143, "killed by SIGTERM");
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137, "killed by SIGKILL");
    }
}
