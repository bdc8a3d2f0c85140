//! Reload on SIGHUP: `--config` is read and validated again, whole, exactly as at start;
//! a valid file replaces the routes, the Host names and the credentials at once, an
//! invalid one is logged (with its key path) and counted, and the running configuration
//! stays.
//!
//! A credential whose resolved definition is unchanged keeps its token cache, so a reload
//! mints nothing for it; a changed or new one gets a cache of its own; a removed one's
//! refresher stops once no request uses it. Requests under way finish on the routes they
//! started with (the proxy takes one snapshot per request). What the process has bound
//! and built its listeners with cannot change without a restart: a reload that changes it
//! says so and applies the rest.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

use super::{Assembler, Credentials, StartError};
use crate::admin::Admin;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::proxy::Proxy;

/// Reads the configuration again, as at start: the `--config` file through the same
/// flags and environment.
pub type Source = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// SIGHUP, subscribed to once. From then on SIGHUP no longer ends the process (its
/// default action): subscribe before serving.
#[derive(Debug)]
pub struct Hangups(tokio::signal::unix::Signal);

impl Hangups {
    /// Takes over SIGHUP for the rest of the process's life.
    pub fn subscribe() -> std::io::Result<Self> {
        signal(SignalKind::hangup()).map(Self)
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Reading it ended unexpectedly (a bug).
    #[error("reading the configuration failed unexpectedly: {0}")]
    Aborted(#[from] tokio::task::JoinError),
    /// It cannot be run (what validation refuses, in a configuration built in code).
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Applies reloaded configurations to a running proxy.
#[derive(Debug)]
pub(crate) struct Reloader {
    /// The configuration running now (its restart-only settings those of the start).
    pub running: Config,
    /// Its credentials.
    pub credentials: Credentials,
    /// Builds routes and credentials as the start did.
    pub assembler: Assembler,
    /// Shares its routing with every connection.
    pub proxy: Proxy,
    /// Reports on the credentials' caches.
    pub admin: Option<Arc<Admin>>,
    /// Counts reloads.
    pub metrics: Option<Arc<Metrics>>,
    /// Reloads tried so far, to number them in the log.
    pub reloads: u64,
}

/// Reloads from `source` on every SIGHUP until the proxy stops.
pub(crate) async fn on_hangups(mut reloader: Reloader, mut hangups: Hangups, source: Option<Source>) {
    let stopped = reloader.assembler.stopped().clone();
    loop {
        tokio::select! {
            Some(()) = hangups.0.recv() => reloader.reload(source.as_ref()).await,
            () = stopped.cancelled() => return,
        }
    }
}

impl Reloader {
    /// Reads `source` again and applies it, or keeps the running configuration when it is
    /// invalid; counts the outcome, then logs it (numbered: the reload field). Without a
    /// source, logs that there is nothing to reload.
    async fn reload(&mut self, source: Option<&Source>) {
        let Some(source) = source.cloned() else {
            tracing::warn!(
                "SIGHUP: nothing to reload: the configuration comes from flags and the \
                 environment, which only a restart reads again (reload needs --config)"
            );
            return;
        };
        self.reloads += 1;
        // File reads and name lookups: off the runtime's threads.
        let loaded = tokio::task::spawn_blocking(move || source())
            .await
            .map_err(ReloadError::from)
            .and_then(|loaded| Ok(loaded?));
        if let Err(error) = loaded.and_then(|config| self.apply(config)) {
            if let Some(metrics) = &self.metrics {
                metrics.reloaded(false);
            }
            tracing::error!(
                reload = self.reloads,
                error = %error,
                "configuration reload refused: the running configuration stays"
            );
        }
    }

    /// Swaps in `config`'s routes and credentials; settings only a restart applies stay
    /// as they are, and are named in a warning.
    fn apply(&mut self, mut config: Config) -> Result<(), ReloadError> {
        let restart_only = keep_restart_only(&self.running, &mut config);
        let (routing, credentials) = self.assembler.assemble(&config, &self.credentials)?;
        for setting in restart_only {
            tracing::warn!(
                setting,
                "configuration reload: {setting} changed, which takes effect only after a \
                 restart; the rest of the configuration is applied"
            );
        }
        self.proxy.replace(routing);
        if let Some(admin) = &self.admin {
            admin.replace_caches(super::caches(&credentials));
        }
        let previous = std::mem::replace(&mut self.credentials, credentials);
        let unchanged = |name: &String| match (previous.get(name), self.credentials.get(name)) {
            (Some(old), Some(new)) => old.definition == new.definition,
            _ => false,
        };
        let (kept, started): (Vec<&String>, Vec<&String>) =
            self.credentials.keys().partition(|name| unchanged(name));
        let stopped: Vec<&String> = previous.keys().filter(|name| !unchanged(name)).collect();
        if let Some(metrics) = &self.metrics {
            for name in previous
                .keys()
                .filter(|name| !self.credentials.contains_key(*name))
            {
                metrics.forget_token(name);
                if !config.credentials.contains_key(name) {
                    metrics.key_expiry(name, None);
                }
            }
            metrics.reloaded(true);
        }
        tracing::info!(
            reload = self.reloads,
            routes = config.routes.len(),
            credentials_kept = ?kept,
            credentials_started = ?started,
            credentials_stopped = ?stopped,
            "configuration reloaded"
        );
        self.running = config;
        Ok(())
    }
}

/// Names the settings of `loaded` that differ from `running` but were used only to start
/// (the listeners, their TLS and limits, the clients' trust, the access log), and sets
/// them back to the running values, so that the next reload compares with what runs.
/// Only `listen` and `otlp_endpoint` can come from the file today; the others come from flags and the
/// environment, which a reload does not read again, and are compared so that none is
/// ever changed silently.
fn keep_restart_only(running: &Config, loaded: &mut Config) -> Vec<&'static str> {
    let changed = [
        ("listen", loaded.listen != running.listen),
        ("--admin-listen", loaded.admin_listen != running.admin_listen),
        ("the listener's TLS", loaded.inbound_tls != running.inbound_tls),
        ("the limits", loaded.limits != running.limits),
        ("the outbound TLS trust", loaded.trust != running.trust),
        ("the access log", loaded.access_log != running.access_log),
        ("otlp_endpoint", loaded.otlp_endpoint != running.otlp_endpoint),
    ];
    loaded.listen = running.listen.clone();
    loaded.admin_listen = running.admin_listen;
    loaded.inbound_tls = running.inbound_tls.clone();
    loaded.limits = running.limits.clone();
    loaded.trust = running.trust.clone();
    loaded.access_log = running.access_log.clone();
    loaded.otlp_endpoint = running.otlp_endpoint.clone();
    changed
        .into_iter()
        .filter_map(|(setting, differs)| differs.then_some(setting))
        .collect()
}
