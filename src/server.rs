//! The composition root: everything `sluice serve` runs, built in one place and handed to the
//! data plane (`proxy::run`, the only code that knows pingora): the store's key snapshot, the
//! audit writer, the admin API (with its views of the running data plane), the OAuth refresher,
//! the limiter (Redis for a fleet) and the bundle watcher. The data plane gets them built; it
//! builds none of the admin plane itself.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::Watcher;
use crate::config::Config;
use crate::vault::Keyring;

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot open the store {path}: {source}")]
    Store {
        path: std::path::PathBuf,
        source: crate::store::Error,
    },
    #[error("cannot start the fleet counters: {0}")]
    Fleet(String),
    #[error("cannot start the health-check thread: {0}")]
    Health(std::io::Error),
}

/// Run sluice until a shutdown signal, then drain and return.
///
/// Without `sessions` (no `SLUICE_JWT_SECRET`) the admin API answers 503 `admin_api_disabled`.
/// `config_path` is the file `cfg` was read from (`None`: the compiled-in default): SIGHUP
/// and `POST /reload` read it again.
pub fn serve(
    cfg: Config,
    config_path: Option<std::path::PathBuf>,
    ring: Keyring,
    sessions: Option<crate::admin::session::Sessions>,
) -> Result<(), ServeError> {
    crate::proxy::catch_early_hangups();
    // rustls's process-wide provider, before any TLS client is made (Redis's, pingora's).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Each listener is bound here, once, and pingora serves on that very socket. A bind that
    // fails says which key and why; and no other process can take a port between a check and
    // pingora's own bind (pingora would retry for 30 s, then its listener thread would panic
    // while the others, `/readyz` included, went on answering).
    let bind = |addr: SocketAddr, what| {
        crate::proxy::Listener::bind(addr).map_err(|source| ServeError::Bind { addr, what, source })
    };
    let listeners = crate::proxy::Listeners {
        proxy: bind(cfg.listen.proxy, "listen.proxy")?,
        admin: bind(cfg.listen.admin, "listen.admin")?,
        metrics: bind(cfg.listen.metrics, "listen.metrics")?,
    };
    let store_err = |source| ServeError::Store {
        path: cfg.store.path.clone(),
        source,
    };
    let ring = Arc::new(ring);
    let auth = Watcher::start(cfg.store.path.clone(), ring.clone()).map_err(store_err)?;
    // Said now, by name, not at the first request.
    crate::proxy::warn_unserved(&cfg, &auth);
    // The balancers' discovery and health checks run on a thread of their own; requests have
    // backends (and their health) from the first connection.
    let (health, live) = crate::proxy::start_balancers(&cfg).map_err(ServeError::Health)?;
    let view = live.clone();
    let metrics = crate::metrics::Metrics::new()?;
    let audit = crate::audit::Writer::start(&cfg.store, ring.clone(), metrics.audit.clone())
        .map_err(store_err)?;
    let open = || {
        crate::store::Store::open_limited(&cfg.store.path, cfg.store.max_bytes).map_err(store_err)
    };
    let api_stores = (open()?, open()?);
    if sessions.is_none() {
        tracing::warn!(
            "SLUICE_JWT_SECRET is not set: the admin API (/api/*) answers 503 admin_api_disabled"
        );
    }
    // SLUICE_REDIS_URL (e.g. from a Kubernetes Secret: the URL may hold a password) wins over
    // `[fleet] redis_url`.
    let redis_url = std::env::var("SLUICE_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .map(secrecy::SecretString::from)
        .or_else(|| cfg.fleet.redis_url.clone());
    let watcher = auth.clone();
    let overview = overview_view(&metrics, live.clone(), redis_url.is_some());
    let api = Arc::new(
        crate::admin::api::Api::new(
            api_stores,
            ring.clone(),
            sessions,
            &cfg,
            metrics.admin_logins.clone(),
        )
        .oauth_counters(
            metrics.oauth_connects.clone(),
            metrics.oauth_revocations.clone(),
        )
        .on_change(move |store| watcher.reload_with(store))
        .overview_view(overview)
        .mcp_view(move || {
            let live = view.load();
            (live.cfg.mcp_servers.iter().cloned().enumerate())
                .map(|(i, m)| (m, live.mcp_healthy(i)))
                .collect()
        }),
    );
    let oauth = crate::auth::oauth::Refresher::start(
        cfg.store.path.clone(),
        cfg.store.max_bytes,
        ring.clone(),
        metrics.oauth_refresh_failures.clone(),
        cfg.tls.clone(),
    )
    .map_err(store_err)?;
    let limiter = match &redis_url {
        None => crate::limits::Limiter::local(),
        Some(url) => crate::limits::Limiter::shared(
            crate::limits::fleet::Fleet::start(
                url,
                cfg.fleet.redis_timeout,
                cfg.fleet.on_redis_error,
                metrics.fleet.clone(),
                &cfg.tls,
            )
            .map_err(ServeError::Fleet)?,
        ),
    };
    if let Some(path) = &cfg.fleet.bundle {
        crate::admin::apply::watch(
            path.clone(),
            cfg.fleet.bundle_poll,
            cfg.store.path.clone(),
            cfg.store.max_bytes,
            ring.clone(),
            crate::admin::apply::Options {
                pii_default: if cfg.pii.default_on {
                    crate::admin::Setting::On
                } else {
                    crate::admin::Setting::Off
                },
                max_removal_ratio: cfg.fleet.max_removal_ratio,
            },
            (
                metrics.bundle_applies.clone(),
                metrics.bundle_last_success.clone(),
            ),
        )
        .map_err(store_err)?;
        // The bundle's keys work from the first accepted connection: the snapshot takes what
        // the first apply wrote before anything is accepted (the watcher's next poll would
        // bring it up to a poll interval later, and /readyz would already say ready).
        auth.reload_with(&open()?);
    }
    let services = crate::proxy::Services {
        auth,
        audit,
        oauth,
        limiter,
    };
    // The admin API goes to the admin listener alone: the data plane's state has no way to it.
    crate::proxy::run(
        &cfg,
        listeners,
        live,
        (config_path, health),
        metrics,
        services,
        api,
    );
    Ok(())
}

/// What `GET /api/overview` answers: each upstream's health, the fleet, and the traffic
/// figures, whose per-minute history a supervised thread keeps.
fn overview_view(
    metrics: &crate::metrics::Metrics,
    live: Arc<arc_swap::ArcSwap<crate::proxy::Live>>,
    redis: bool,
) -> impl Fn() -> serde_json::Value + Send + Sync + 'static {
    let history = Arc::new(std::sync::Mutex::new(crate::overview::History::default()));
    let traffic = metrics.traffic();
    {
        let (history, traffic) = (history.clone(), traffic.clone());
        let spawned = std::thread::Builder::new()
            .name("sluice-history".into())
            .spawn(move || {
                crate::supervise::run(crate::supervise::Task::History, || {
                    let t = traffic.totals();
                    history.lock().unwrap_or_else(|p| p.into_inner()).record(t);
                    std::thread::sleep(std::time::Duration::from_secs(60));
                    std::ops::ControlFlow::Continue(())
                })
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "the traffic history thread could not start; the overview shows totals only");
        }
    }
    let (up, bundle) = (
        metrics.fleet.up.clone(),
        metrics.bundle_last_success.clone(),
    );
    move || {
        let l = live.load();
        let healthy = l.healthy_upstreams();
        let upstreams: Vec<serde_json::Value> = (l.cfg.upstreams.iter().enumerate())
            .map(|(i, u)| {
                serde_json::json!({"name": u.name, "region": u.region.as_str(),
                                   "healthy": healthy.contains(&i)})
            })
            .collect();
        let bundle_at = (bundle.get() > 0)
            .then(|| time::OffsetDateTime::from_unix_timestamp(bundle.get()).ok())
            .flatten()
            .map(crate::store::utc_text);
        let now = traffic.totals();
        let view = history.lock().unwrap_or_else(|p| p.into_inner()).view(&now);
        serde_json::json!({
            "upstreams": upstreams,
            "fleet": {
                "redis": if !redis { "off" } else if up.get() == 1 { "up" } else { "down" },
                "bundle_last_applied": bundle_at,
            },
            "traffic": view,
        })
    }
}
