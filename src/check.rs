//! `mintproxy check`: validate the configuration and every credential file (an expired
//! key fails, one expiring within 30 days is warned about), and with `--online` mint each
//! credential once, explaining failures.

use std::fmt::Write as _;

use crate::config::Config;
use crate::{app, key_expiry};

/// Describes `config` (already validated) and, when `online`, mints each credential once.
/// Returns the report and whether everything passed. Tokens are never printed.
pub async fn check(config: &Config, online: bool) -> (String, bool) {
    let mut report = String::new();
    let mut ok = true;
    let _ = writeln!(report, "configuration is valid; listening on {}", config.listen);
    let _ = writeln!(report, "credentials:");
    let now = std::time::SystemTime::now();
    for (name, credential) in &config.credentials {
        let _ = writeln!(report, "  {name}: {}", credential.describe());
        ok &= key_expiry::report(credential, now, &mut report);
    }
    let _ = writeln!(report, "routes:");
    for route in &config.routes {
        let prefix = if route.prefix.is_empty() {
            "/"
        } else {
            &route.prefix
        };
        let strip = if route.strip_prefix {
            ", prefix stripped"
        } else {
            ""
        };
        let exchange = if route.exchange.is_some() {
            ", exchanging the caller's token"
        } else {
            ""
        };
        let _ = writeln!(
            report,
            "  {prefix} -> {} (credential {}{exchange}{strip})",
            route.upstream.origin(),
            route.credential
        );
    }
    if online {
        let _ = writeln!(report, "minting one token per credential:");
        for (name, credential) in &config.credentials {
            if !config.mints(name) {
                let _ = writeln!(report, "  {name}: authenticates token exchanges only; not minted");
                continue;
            }
            match app::mint_once(credential, &config.trust).await {
                Ok(token) => {
                    let expiry = token
                        .lifetime
                        .map(|l| format!("valid for {}", human(l.as_secs())))
                        .unwrap_or_else(|| "no expiry stated".to_owned());
                    let scope = token.scope.map_or_else(
                        || "(none stated: a ready token)".to_owned(),
                        |scope| scope.to_string(),
                    );
                    let _ = writeln!(report, "  {name}: ok, {expiry}, scopes: {scope}");
                }
                Err(error) => {
                    ok = false;
                    let _ = writeln!(report, "  {name}: FAILED: {error}");
                    if let Some(line) = error.likely_cause() {
                        let _ = writeln!(report, "    {line}");
                    }
                }
            }
        }
    }
    (report, ok)
}

/// `43199` -> `11h59m59s`.
fn human(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(super::human(43199), "11h59m59s");
        assert_eq!(super::human(125), "2m5s");
        assert_eq!(super::human(9), "9s");
    }
}
