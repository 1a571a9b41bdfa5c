//! Reloading the config file while serving (SIGHUP, `POST /reload` on the admin listener,
//! `sluice reload`). What can change live is swapped in whole: a request keeps the config and
//! balancers it started with to its end, the next one gets the new ones; an invalid file
//! changes nothing.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{upstream, Live, State};
use crate::config::Config;

/// What a reload did.
#[derive(Debug, Serialize)]
pub struct Reloaded {
    /// `applied` (something changed), `unchanged`, `invalid` (the file was refused) or `failed`
    /// (valid, but its upstreams could not be made ready); the last two keep the running config.
    pub outcome: &'static str,
    /// The file read (`None`: the compiled-in default, which cannot change).
    pub config: Option<String>,
    /// Settings now in force.
    pub applied: Vec<&'static str>,
    /// Settings that changed in the file but wait for a restart.
    pub restart_needed: Vec<&'static str>,
    /// Why the file was refused (`invalid`): every problem, one per line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The settings whose change needs new balancers (the others keep the running ones, and their
/// health).
fn rebuilds_balancers(applied: &[&str], old: &Config, new: &Config) -> bool {
    applied
        .iter()
        .any(|s| matches!(*s, "upstreams" | "mcp_servers" | "residency"))
        || old.limits.connect_timeout != new.limits.connect_timeout
}

/// How long a reload waits for new balancers' first discovery (each name resolved within
/// [`upstream::RESOLVE_TIMEOUT`], all at once) and health check (a connect timeout).
fn discovery_wait(cfg: &Config) -> Duration {
    upstream::RESOLVE_TIMEOUT + cfg.limits.connect_timeout + Duration::from_secs(2)
}

impl State {
    /// Read the config file again and apply what can change live (see
    /// [`Config::reload`]). One reload at a time.
    pub async fn reload(&self) -> Reloaded {
        let _one = self.reloading.lock().await;
        let current = self.live();
        let config = self.config_path.as_ref().map(|p| p.display().to_string());
        let Some(path) = self.config_path.clone() else {
            self.metrics
                .config_reloads
                .with_label_values(&["unchanged"])
                .inc();
            return Reloaded {
                outcome: "unchanged",
                config,
                applied: Vec::new(),
                restart_needed: Vec::new(),
                error: None,
            };
        };
        let loaded = tokio::task::spawn_blocking(move || Config::load(Some(&path))).await;
        let new = match loaded {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return self.refused(config, e.to_string()),
            Err(_) => return self.refused(config, "the config could not be read".into()),
        };
        let plan = current.cfg.reload(new);
        if plan.applied.is_empty() {
            self.metrics
                .config_reloads
                .with_label_values(&["unchanged"])
                .inc();
            self.metrics
                .config_last_reload
                .set(time::OffsetDateTime::now_utc().unix_timestamp());
            if !plan.restart_needed.is_empty() {
                tracing::warn!(restart_needed = ?plan.restart_needed, "config reloaded: nothing to apply live; these settings change at the next start");
            } else {
                tracing::info!("config reloaded: unchanged");
            }
            return Reloaded {
                outcome: "unchanged",
                config,
                applied: plan.applied,
                restart_needed: plan.restart_needed,
                error: None,
            };
        }
        if plan.applied.contains(&"log.level") {
            if let Err(e) = crate::log_filter::set(&plan.cfg.log.level) {
                return self.refused(config, format!("[log] level: {e}"));
            }
        }
        let rebuilt = rebuilds_balancers(&plan.applied, &current.cfg, &plan.cfg);
        let live = if rebuilt {
            let wait = discovery_wait(&plan.cfg);
            let (live, ready) = Live::new(plan.cfg, &self.health);
            if !upstream::discovered(ready, wait).await {
                // Balancers without backends would answer 503 region_unavailable: the
                // running ones stay.
                live.regions.retire();
                return self.failed(
                    config,
                    format!(
                        "the new upstreams and MCP servers were not resolved and health-checked within {} s; the running config is kept (retry the reload)",
                        wait.as_secs()
                    ),
                );
            }
            live
        } else {
            Live {
                cas: Arc::new(upstream::Cas::of(&plan.cfg)),
                cfg: plan.cfg,
                regions: current.regions.clone(),
            }
        };
        warn_unserved(&live.cfg, &self.auth);
        self.live.store(Arc::new(live));
        if rebuilt {
            // Requests still under way keep the old selection; its checks stop.
            current.regions.retire();
        }
        self.metrics
            .config_reloads
            .with_label_values(&["applied"])
            .inc();
        self.metrics
            .config_last_reload
            .set(time::OffsetDateTime::now_utc().unix_timestamp());
        if plan.restart_needed.is_empty() {
            tracing::info!(applied = ?plan.applied, "config reloaded");
        } else {
            tracing::warn!(applied = ?plan.applied, restart_needed = ?plan.restart_needed,
                "config reloaded; some changed settings wait for a restart");
        }
        Reloaded {
            outcome: "applied",
            config,
            applied: plan.applied,
            restart_needed: plan.restart_needed,
            error: None,
        }
    }

    /// The file is valid but its balancers could not be made ready: nothing changed.
    fn failed(&self, config: Option<String>, error: String) -> Reloaded {
        tracing::error!(error = %error, "config reload not applied");
        self.kept("failed", config, error)
    }

    /// The file is invalid: nothing changed.
    fn refused(&self, config: Option<String>, error: String) -> Reloaded {
        tracing::error!(error = %error, "config reload refused; the running config is kept");
        self.kept("invalid", config, error)
    }

    /// A reload that left the running config in place, counted under `outcome`.
    fn kept(&self, outcome: &'static str, config: Option<String>, error: String) -> Reloaded {
        self.metrics
            .config_reloads
            .with_label_values(&[outcome])
            .inc();
        Reloaded {
            outcome,
            config,
            applied: Vec::new(),
            restart_needed: Vec::new(),
            error: Some(error),
        }
    }
}

/// Say, by name, what `cfg` routes to that cannot be served: regions keys or orgs are pinned
/// to that no upstream serves, and upstreams or MCP servers whose credential the store does not
/// hold (or cannot open, or that expired). Their requests get 503 until fixed.
pub fn warn_unserved(cfg: &Config, auth: &crate::auth::Watcher) {
    let snapshot = auth.get();
    for pinned in snapshot.pinned_regions() {
        if !cfg.serves(pinned) {
            tracing::warn!(region = %pinned, "keys or orgs are pinned to a region no [[upstreams]] entry serves; their requests get 503 region_unavailable");
        }
    }
    let now = time::OffsetDateTime::now_utc();
    let needs = (cfg.upstreams.iter())
        .filter_map(|u| Some(("upstream", u.name.as_str(), u.credential.as_deref()?)))
        .chain(
            (cfg.mcp_servers.iter())
                .filter_map(|m| Some(("mcp_server", m.name.as_str(), m.credential.as_deref()?))),
        );
    for (kind, name, credential) in needs {
        if snapshot.credential(credential, now).is_none() {
            tracing::warn!(kind, name, credential, "the credential of this upstream is missing from the store, cannot be opened with the master key, or has expired: its requests get 503 credential_unavailable until `sluice credentials set` stores it");
        }
    }
    // Said at every start and reload: the operator chose it (allow_plaintext = true).
    let plaintext = (cfg.upstreams.iter())
        .filter(|u| u.credential.is_some() && u.base_url.is_plaintext_remote())
        .map(|u| ("upstream", u.name.as_str(), u.base_url.host.as_str()))
        .chain(
            (cfg.mcp_servers.iter())
                .filter(|m| m.credential.is_some() && m.url.is_plaintext_remote())
                .map(|m| ("mcp_server", m.name.as_str(), m.url.host.as_str())),
        );
    for (kind, name, host) in plaintext {
        tracing::warn!(kind, name, host, "allow_plaintext: this credential goes over plain http:// to a host that is not loopback, readable on the network");
    }
}
