//! Assemble and run the pingora server: the data plane (wrapped in the slow-client guard), the
//! admin and metrics listeners, and the upstream DNS refresher. On SIGTERM or SIGINT sluice
//! stops accepting connections, lets in-flight requests finish (bounded by
//! `server.shutdown_timeout_secs`), then stops and returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::FutureExt;
use pingora_core::apps::ServerApp;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{
    Fds, ListenFds, RunArgs, RuntimeOpts, Server, ShutdownSignal, ShutdownSignalWatch,
    ShutdownWatch,
};
use pingora_core::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};

use super::{guard, ops, upstream, Sluice, State};
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

/// The three listening sockets, bound by the composition root before anything starts:
/// pingora serves on exactly these and never binds a port of its own.
pub struct Listeners {
    pub proxy: Listener,
    pub admin: Listener,
    pub metrics: Listener,
}

/// A bound, listening, non-blocking socket and the address it is bound to.
pub struct Listener {
    socket: std::net::TcpListener,
    addr: String,
}

impl Listener {
    pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<Listener> {
        let socket = std::net::TcpListener::bind(addr)?;
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?.to_string();
        Ok(Listener { socket, addr })
    }
}

/// A pingora listening service that serves on a socket bound beforehand.
///
/// pingora's listener builder takes a socket from a table of already bound addresses when the
/// table has one (its graceful upgrade hands sockets over that way), and binds anew otherwise.
/// This service hands it a table holding its own socket under the address it listens on, so
/// there is no second bind another process could win. Should a listener still fail to start
/// (pingora panics then, and only that service's thread would end while the others, `/readyz`
/// included, went on answering), the process exits 1 instead.
struct Bound<A> {
    inner: Service<A>,
    fds: ListenFds,
    /// Set when the service starts on its socket.
    started: Arc<AtomicBool>,
}

impl<A: ServerApp + Send + Sync + 'static> Bound<A> {
    fn new(name: &str, app: A, listener: Listener, started: Arc<AtomicBool>) -> Self {
        use std::os::fd::IntoRawFd;
        let mut inner = Service::new(name.to_string(), app);
        inner.add_tcp(&listener.addr);
        let mut fds = Fds::new();
        // pingora's listener owns the socket from here on.
        fds.add(listener.addr, listener.socket.into_raw_fd());
        Bound {
            inner,
            fds: Arc::new(fds.into()),
            started,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> pingora_core::services::Service for Bound<A> {
    async fn start_service(
        &mut self,
        _server_fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let fds = Some(self.fds.clone());
        let name = self.inner.name().to_string();
        let stopping = shutdown.clone();
        self.started.store(true, Ordering::Release);
        let served = pingora_core::services::Service::start_service(
            &mut self.inner,
            fds,
            shutdown,
            listeners_per_fd,
        );
        if std::panic::AssertUnwindSafe(served)
            .catch_unwind()
            .await
            .is_err()
        {
            tracing::error!(service = %name, "a listener could not start (the panic above says where): sluice exits");
            std::process::exit(1);
        }
        // The service returns once its accept loops end, which only a shutdown should do.
        if !*stopping.borrow() {
            tracing::error!(service = %name, "a listener stopped serving: sluice exits");
            std::process::exit(1);
        }
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn on_startup_delay(&self, time_waited: Duration) {
        self.inner.on_startup_delay(time_waited)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

/// Run the data plane, the admin and the metrics listeners on what the composition root
/// (`crate::server`) built, on the sockets it bound, until a shutdown signal; then drain,
/// write every queued audit record and return. `reload`: the config file (`None`: the
/// compiled-in default) and the balancers' runtime, for SIGHUP and `POST /reload`. `api`: the
/// admin API, held by the admin listener only.
pub fn run(
    cfg: &Config,
    listeners: Listeners,
    live: Arc<arc_swap::ArcSwap<super::Live>>,
    reload: (Option<std::path::PathBuf>, tokio::runtime::Handle),
    metrics: crate::metrics::Metrics,
    services: super::Services,
    api: Arc<crate::admin::api::Api>,
) {
    let state = State::new(live, reload, metrics, services);

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
    let (proxy_addr, admin_addr, metrics_addr) = (
        listeners.proxy.addr.clone(),
        listeners.admin.addr.clone(),
        listeners.metrics.addr.clone(),
    );
    let data = Bound::new(
        "sluice data plane",
        app,
        listeners.proxy,
        state.listening.clone(),
    );

    // The admin listener gets the same slow-client deadline; it keeps answering while the
    // process drains (so /readyz can say 503).
    let admin_app = guard::App::new(
        ops::Admin(state.clone(), api),
        policy,
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let mut admin = Bound::new("sluice admin", admin_app, listeners.admin, Arc::default());
    admin.inner.threads = Some(1);

    let mut metrics = Bound::new(
        "sluice metrics",
        guard::App::new(
            ops::MetricsEndpoint(state.clone()),
            policy,
            Arc::new(std::sync::atomic::AtomicBool::new(false)),
        ),
        listeners.metrics,
        Arc::default(),
    );
    metrics.inner.threads = Some(1);

    server.add_service(data);
    server.add_service(admin);
    server.add_service(metrics);
    tracing::info!(
        proxy = %proxy_addr,
        admin = %admin_addr,
        metrics = %metrics_addr,
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

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_core::protocols::Stream;
    use std::io::Read;

    /// Writes `hello` on each connection.
    struct Hello;

    #[async_trait]
    impl ServerApp for Hello {
        async fn process_new(
            self: &Arc<Self>,
            mut io: Stream,
            _: &ShutdownWatch,
        ) -> Option<Stream> {
            use tokio::io::AsyncWriteExt;
            io.write_all(b"hello").await.ok()?;
            None
        }
    }

    #[test]
    fn a_bound_service_serves_on_the_socket_it_was_given_and_never_binds_anew() {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.addr.clone();
        // The socket stays open in the service's table: a service that bound the address
        // anew would find it taken (pingora then retries for 30 s) and the client below,
        // queued on a socket nobody accepts on, would read nothing.
        let mut service = Bound::new("test", Hello, listener, Arc::default());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        // The server's own table (empty, as sluice's is) is not the one the service uses.
        let server_fds: ListenFds = Arc::new(Fds::new().into());
        let running = rt.spawn(async move {
            pingora_core::services::Service::start_service(
                &mut service,
                Some(server_fds),
                shutdown,
                1,
            )
            .await
        });
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = String::new();
        conn.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello");
        stop.send(true).unwrap();
        rt.block_on(running).unwrap();
    }
}
