//! Assemble and run the pingora server: the data plane (wrapped in the slow-client guard), the
//! admin and metrics listeners, and the upstream DNS refresher. On SIGTERM or SIGINT sluice
//! stops accepting connections, lets in-flight requests finish (bounded by
//! `server.shutdown_timeout_secs`), then stops and returns.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};

use super::{guard, ops, upstream, Sluice, State};
use crate::auth::Watcher;
use crate::config::Config;

/// Start the balancers' discovery and health checks (on a thread of their own) for `cfg`, and
/// wait a moment for the first round: requests have backends, and their health, from the first
/// connection.
pub fn start_balancers(
    cfg: &Config,
) -> std::io::Result<(tokio::runtime::Handle, Arc<arc_swap::ArcSwap<super::Live>>)> {
    let health = upstream::health_runtime()?;
    let (live, ready) = super::Live::new(cfg.clone(), &health);
    if !health.block_on(upstream::discovered(
        ready,
        cfg.limits.connect_timeout + Duration::from_secs(2),
    )) {
        tracing::warn!("the upstreams' first discovery or health check is not done; it goes on in the background");
    }
    Ok((health, Arc::new(arc_swap::ArcSwap::from_pointee(live))))
}

/// Run the data plane, the admin and the metrics listeners on what the composition root
/// (`crate::server`) built, until a shutdown signal; then drain, write every queued audit
/// record and return. `reload`: the config file (`None`: the compiled-in default) and the
/// balancers' runtime, for SIGHUP and `POST /reload`. `api`: the admin API, held by the admin
/// listener only.
pub fn run(
    cfg: &Config,
    live: Arc<arc_swap::ArcSwap<super::Live>>,
    reload: (Option<std::path::PathBuf>, tokio::runtime::Handle),
    metrics: crate::metrics::Metrics,
    auth: Arc<Watcher>,
    services: super::Services,
    api: Arc<crate::admin::api::Api>,
) {
    let state = State::new(live, reload, metrics, auth, services);

    let mut conf = ServerConf {
        threads: cfg.server.threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    conf.max_retries = 2;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let policy = guard::Policy {
        client_timeout: cfg.limits.client_timeout,
        linger: cfg.limits.linger,
        linger_max_bytes: cfg.limits.linger_max_bytes,
    };
    let proxy = pingora_proxy::http_proxy(&server.configuration, Sluice::new(state.clone()));
    let app = guard::App::new(proxy, policy, state.draining.clone());
    let mut data = Service::new("sluice data plane".to_string(), app);
    data.add_tcp(&cfg.listen.proxy.to_string());

    // The admin listener gets the same slow-client deadline; it keeps answering while the
    // process drains (so /readyz can say 503).
    let admin_app = guard::App::new(
        ops::Admin(state.clone(), api),
        policy,
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let mut admin = Service::new("sluice admin".to_string(), admin_app);
    admin.add_tcp(&cfg.listen.admin.to_string());
    admin.threads = Some(1);

    let mut metrics = Service::new(
        "sluice metrics".to_string(),
        guard::App::new(
            ops::MetricsEndpoint(state.clone()),
            policy,
            Arc::new(std::sync::atomic::AtomicBool::new(false)),
        ),
    );
    metrics.add_tcp(&cfg.listen.metrics.to_string());
    metrics.threads = Some(1);

    server.add_service(data);
    server.add_service(admin);
    server.add_service(metrics);
    tracing::info!(
        proxy = %cfg.listen.proxy,
        admin = %cfg.listen.admin,
        metrics = %cfg.listen.metrics,
        upstreams = cfg.upstreams.len(),
        "sluice serving"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Drain {
            state: state.clone(),
            timeout: cfg.server.shutdown_timeout,
        }),
    });
    // Every queued request record is written before the process exits.
    state.audit.close();
    tracing::info!("sluice stopped");
}

/// A SIGHUP came before the reload handler was installed.
static EARLY_HUP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// The action that notes it, until then.
static EARLY_HUP_ACTION: std::sync::Mutex<Option<signal_hook_registry::SigId>> =
    std::sync::Mutex::new(None);

/// From now until `serve` runs: a SIGHUP (whose default action ends the process) is noted and
/// the config reloaded once the server runs. `sluice serve` calls it first thing.
pub fn catch_early_hangups() {
    let mut action = EARLY_HUP_ACTION.lock().unwrap_or_else(|p| p.into_inner());
    if action.is_none() {
        // SAFETY: the action only stores to an atomic, which is async-signal-safe.
        *action = unsafe {
            signal_hook_registry::register(libc::SIGHUP, || {
                EARLY_HUP.store(true, Ordering::Release)
            })
        }
        .ok();
    }
}

/// Waits for SIGTERM/SIGINT, then drains before letting pingora stop its services; reloads
/// the config on each SIGHUP meanwhile.
struct Drain {
    state: Arc<State>,
    timeout: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Drain {
    async fn recv(&self) -> ShutdownSignal {
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut int), Ok(mut hup)) => loop {
                let early = EARLY_HUP_ACTION
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                if let Some(id) = early {
                    signal_hook_registry::unregister(id);
                }
                if EARLY_HUP.swap(false, Ordering::AcqRel) {
                    tracing::info!("SIGHUP during start: reloading the config");
                    let state = self.state.clone();
                    tokio::spawn(async move { state.reload().await });
                }
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading the config");
                        // On its own task: a slow reload does not hold up a shutdown signal.
                        let state = self.state.clone();
                        tokio::spawn(async move { state.reload().await });
                    },
                }
            },
            _ => {
                tracing::error!("cannot install signal handlers; shutdown only by kill -9");
                std::future::pending::<()>().await;
            }
        }
        self.state.draining.store(true, Ordering::Release);
        let deadline = Instant::now() + self.timeout;
        tracing::info!(
            in_flight = self.state.in_flight(),
            "shutdown signal: draining"
        );
        while self.state.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.state.in_flight();
        if left > 0 {
            tracing::warn!(
                in_flight = left,
                "shutdown timeout reached; cutting remaining requests"
            );
        }
        ShutdownSignal::GracefulTerminate
    }
}
