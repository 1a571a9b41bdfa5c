//! The upstream phase: which upstream, at which address, with which timeouts, and what the
//! request looks like when it leaves. The upstream is always one from the config: the client's
//! Host header and request target never choose it.
//!
//! Each region's upstreams sit behind a pingora `LoadBalancer` (round robin over the healthy
//! ones, TCP health checks, host names re-resolved in the background): a request only reads
//! the current selection and never waits on DNS. A request never leaves its region: selection,
//! retries and failover only ever look at the balancer of the request's region.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::health_check::{HealthObserve, TcpHealthCheck};
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, Backends, LoadBalancer};

use super::error::Reason;
use super::{Ctx, State};
use crate::config::Config;
use crate::residency::Region;

/// Request headers never forwarded upstream: hop-by-hop (RFC 9110 7.6.1) and sluice's own
/// control headers.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Request headers that carry the app's credentials or pick the provider account. The app's
/// key is for sluice only; the upstream gets sluice's credential instead.
const APP_CREDENTIALS: &[&str] = &[
    "authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "openai-organization",
    "openai-project",
];

/// One region's upstreams behind a pingora `LoadBalancer`: round robin over the healthy ones.
/// Discovery re-resolves host names (off the request path, every 30 s); a TCP health check runs
/// every `residency.health_check_secs`. Each backend carries its upstream's config index.
pub type Balancer = LoadBalancer<RoundRobin>;

/// How long one host name may take to resolve.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The load balancers by region; a region without upstreams has none.
pub struct Regions {
    by_region: [Option<Arc<Balancer>>; 3],
    /// One balancer per `[[mcp_servers]]` entry, in config order.
    mcp: Vec<Arc<Balancer>>,
    /// Set when a reload replaced these balancers: their discovery and health checks stop
    /// (requests still under way keep the last selection).
    retired: Arc<std::sync::atomic::AtomicBool>,
}

fn slot(r: Region) -> usize {
    match r {
        Region::Us => 0,
        Region::Eu => 1,
        Region::Apac => 2,
    }
}

/// Discovery for one region: resolve each upstream's host and tag the address with its index.
struct RegionDiscovery {
    upstreams: Vec<(usize, String, u16)>,
}

#[async_trait]
impl ServiceDiscovery for RegionDiscovery {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut set = BTreeSet::new();
        // All at once, each bounded: a slow resolver holds up neither the others nor a reload
        // waiting for this discovery beyond [`RESOLVE_TIMEOUT`].
        let resolved = futures_util::future::join_all(self.upstreams.iter().map(
            |(index, host, port)| async move {
                let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
                    Ok(ip) => vec![SocketAddr::new(ip, *port)],
                    Err(_) => {
                        let lookup = tokio::net::lookup_host((host.as_str(), *port));
                        match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                            Ok(Ok(a)) => a.collect(),
                            Ok(Err(e)) => {
                                tracing::warn!(upstream_host = %host, error = %e, "cannot resolve upstream; it gets no traffic until it does");
                                Vec::new()
                            }
                            Err(_) => {
                                tracing::warn!(upstream_host = %host, timeout_secs = RESOLVE_TIMEOUT.as_secs(), "resolving the upstream timed out; it gets no traffic until it resolves");
                                Vec::new()
                            }
                        }
                    }
                };
                (*index, addrs)
            },
        ))
        .await;
        for (index, addrs) in resolved {
            // One address per upstream: a second address of the same upstream would count as
            // a separate backend in the round robin.
            if let Some(addr) = addrs.into_iter().next() {
                let mut b = Backend {
                    addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(addr),
                    weight: 1,
                    ext: http::Extensions::new(),
                };
                b.ext.insert(UpstreamIndex(index));
                set.insert(b);
            }
        }
        Ok((set, HashMap::new()))
    }
}

/// Says when an upstream or MCP server fails or passes its health check again, by its name (the
/// health checker's own record is withheld: it is a debug dump of the backend).
struct HealthLog {
    /// `upstream` or `mcp_server`.
    kind: &'static str,
    /// Names by config index.
    names: Vec<String>,
}

#[async_trait]
impl HealthObserve for HealthLog {
    async fn observe(&self, target: &Backend, healthy: bool) {
        let name = (target.ext.get::<UpstreamIndex>())
            .and_then(|i| self.names.get(i.0))
            .map_or("?", String::as_str);
        let (kind, addr) = (self.kind, target.addr.to_string());
        if healthy {
            tracing::info!(kind, name, addr, "passes its health check again");
        } else {
            tracing::warn!(
                kind,
                name,
                addr,
                "fails its health check (TCP connect): it gets no traffic until it passes"
            );
        }
    }
}

/// The config index of the upstream a backend belongs to.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamIndex(pub usize);

/// A balancer over `hosts` (config index, host, port) with discovery and TCP health checks,
/// kept current by a task on `health` for as long as the balancer is in use (the task holds it
/// weakly: a reload that replaces it ends the task). `ready` hears when its first discovery is
/// done.
fn balancer(
    cfg: &Config,
    what: String,
    hosts: Vec<(usize, String, u16)>,
    (health, retired): (&tokio::runtime::Handle, &Arc<std::sync::atomic::AtomicBool>),
    names: HealthLog,
    ready: &mut Vec<tokio::sync::oneshot::Receiver<()>>,
) -> Arc<Balancer> {
    let backends = Backends::new(Box::new(RegionDiscovery { upstreams: hosts }));
    let mut lb = Balancer::from_backends(backends);
    let mut hc = TcpHealthCheck::new();
    hc.peer_template.options.connection_timeout = Some(cfg.limits.connect_timeout);
    hc.health_changed_callback = Some(Box::new(names));
    lb.set_health_check(hc);
    lb.health_check_frequency = Some(cfg.residency.health_check);
    lb.update_frequency = Some(Duration::from_secs(30));
    lb.parallel_health_check = true;
    let lb = Arc::new(lb);
    let (tx, rx) = tokio::sync::oneshot::channel();
    ready.push(rx);
    let weak = Arc::downgrade(&lb);
    let retired = retired.clone();
    // Supervised: a panic is counted and the task starts again after a second (the balancer
    // keeps its last backends and health meanwhile).
    health.spawn(async move {
        let mut tx = Some(tx);
        loop {
            let task = tokio::spawn(keep_current(
                weak.clone(),
                retired.clone(),
                what.clone(),
                tx.take(),
            ));
            if !task.await.is_err_and(|e| e.is_panic()) {
                return;
            }
            crate::supervise::restarted(crate::supervise::Task::Health);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    lb
}

/// Discovery every `update_frequency` and health checks every `health_check_frequency`, as
/// pingora's own background service does, until the balancer is no longer in use.
async fn keep_current(
    lb: std::sync::Weak<Balancer>,
    retired: Arc<std::sync::atomic::AtomicBool>,
    what: String,
    mut ready: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let mut next_update = Instant::now();
    let mut next_check = Instant::now();
    loop {
        if retired.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let Some(balancer) = lb.upgrade() else {
            return;
        };
        let now = Instant::now();
        if now >= next_update {
            if let Err(e) = balancer.update().await {
                tracing::warn!(what, error = %e, "discovery failed; the previous backends stay");
            }
            next_update = now + balancer.update_frequency.unwrap_or(Duration::from_secs(30));
        }
        if now >= next_check {
            balancer
                .backends()
                .run_health_check(balancer.parallel_health_check)
                .await;
            next_check = now
                + balancer
                    .health_check_frequency
                    .unwrap_or(Duration::from_secs(5));
        }
        // Discovered and checked once: requests get an accurate choice from now on.
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        drop(balancer);
        tokio::time::sleep_until(next_update.min(next_check).into()).await;
    }
}

/// Start the runtime the balancers' discovery and health checks run on (a thread of its own,
/// so that they run before the server does and outlive any reload).
pub fn health_runtime() -> std::io::Result<tokio::runtime::Handle> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("sluice-health".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(std::future::pending::<()>());
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the health-check thread did not start"))?
}

/// Wait (up to `within`) for the first discovery and health check of every balancer `ready`
/// was given for.
/// Says whether all finished in time.
pub async fn discovered(ready: Vec<tokio::sync::oneshot::Receiver<()>>, within: Duration) -> bool {
    let all = async {
        for r in ready {
            let _ = r.await;
        }
    };
    tokio::time::timeout(within, all).await.is_ok()
}

impl Regions {
    /// Build one balancer per region that has upstreams and one per MCP server; their
    /// discovery and health checks run on `health`. Also returns, for each, a receiver that
    /// hears when its first discovery is done (requests have backends from then on).
    pub fn new(
        cfg: &Config,
        health: &tokio::runtime::Handle,
    ) -> (Regions, Vec<tokio::sync::oneshot::Receiver<()>>) {
        let mut by_region: [Option<Arc<Balancer>>; 3] = [None, None, None];
        let mut ready = Vec::new();
        let retired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for region in [Region::Us, Region::Eu, Region::Apac] {
            let upstreams: Vec<(usize, String, u16)> = cfg
                .upstreams
                .iter()
                .enumerate()
                .filter(|(_, u)| u.region == region)
                .map(|(i, u)| (i, u.base_url.host.clone(), u.base_url.port))
                .collect();
            if upstreams.is_empty() {
                continue;
            }
            let names = HealthLog {
                kind: "upstream",
                names: cfg.upstreams.iter().map(|u| u.name.clone()).collect(),
            };
            by_region[slot(region)] = Some(balancer(
                cfg,
                format!("upstreams {region}"),
                upstreams,
                (health, &retired),
                names,
                &mut ready,
            ));
        }
        let mut mcp = Vec::new();
        for (i, m) in cfg.mcp_servers.iter().enumerate() {
            let hosts = vec![(i, m.url.host.clone(), m.url.port)];
            let names = HealthLog {
                kind: "mcp_server",
                names: cfg.mcp_servers.iter().map(|m| m.name.clone()).collect(),
            };
            mcp.push(balancer(
                cfg,
                format!("mcp server {}", m.name),
                hosts,
                (health, &retired),
                names,
                &mut ready,
            ));
        }
        (
            Regions {
                by_region,
                mcp,
                retired,
            },
            ready,
        )
    }

    /// Stop these balancers' discovery and health checks (a reload replaced them).
    pub fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The address of MCP server `index`, when it is up.
    pub fn pick_mcp(&self, index: usize) -> Option<SocketAddr> {
        let lb = self.mcp.get(index)?;
        let b = lb.select_with(b"", 4, |_, healthy| healthy)?;
        b.addr.as_inet().copied()
    }

    /// Whether MCP server `index` passes its health check.
    pub fn mcp_healthy(&self, index: usize) -> bool {
        self.pick_mcp(index).is_some()
    }

    /// Each upstream (config index) that passes its health check now.
    pub fn healthy_upstreams(&self) -> Vec<usize> {
        let mut up = Vec::new();
        for lb in self.by_region.iter().flatten() {
            let backends = lb.backends();
            for b in backends.get_backend().iter() {
                if let (true, Some(i)) = (backends.ready(b), b.ext.get::<UpstreamIndex>()) {
                    up.push(i.0);
                }
            }
        }
        up
    }

    /// Whether `region` has upstreams configured at all.
    pub fn has(&self, region: Region) -> bool {
        self.by_region[slot(region)].is_some()
    }

    /// A healthy upstream of `region` not in `tried`: its config index and address.
    pub fn pick(&self, region: Region, tried: &[usize]) -> Option<(usize, SocketAddr)> {
        let lb = self.by_region[slot(region)].as_ref()?;
        let b = lb.select_with(b"", 16, |b, healthy| {
            healthy
                && b.ext
                    .get::<UpstreamIndex>()
                    .is_some_and(|i| !tried.contains(&i.0))
        })?;
        let index = b.ext.get::<UpstreamIndex>()?.0;
        let addr = b.addr.as_inet().copied()?;
        Some((index, addr))
    }
}

/// The CA certificates of each upstream and MCP server with a `ca_file`, as pingora takes
/// them (parsed once per config).
#[derive(Default)]
pub struct Cas {
    upstreams: Vec<Option<Arc<pingora_core::protocols::tls::CaType>>>,
    mcp: Vec<Option<Arc<pingora_core::protocols::tls::CaType>>>,
    /// Each entry's policy as a connection pool key: pingora keys pooled connections by
    /// address, SNI and verification flags but not by CA, so a connection verified under one
    /// CA bundle (another entry's, or this one's before a reload) is never reused under another.
    upstream_keys: Vec<u64>,
    mcp_keys: Vec<u64>,
}

impl Cas {
    pub fn of(cfg: &Config) -> Cas {
        use pingora_core::utils::tls::{parse_x509, WrappedX509};
        let ca = |tls: &Option<crate::config::Tls>| {
            let bundle = tls.as_ref()?.ca.as_ref()?;
            // Each was parsed as X.509 when the config was read (parse_x509 panics otherwise).
            let certs: Vec<WrappedX509> = (bundle.certs.iter())
                .map(|der| WrappedX509::new(der.clone(), parse_x509))
                .collect();
            Some(Arc::<pingora_core::protocols::tls::CaType>::from(certs))
        };
        let key = |tls: &Option<crate::config::Tls>| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            if let Some(t) = tls {
                t.min_version.hash(&mut h);
                t.pins.hash(&mut h);
                if let Some(ca) = &t.ca {
                    ca.certs.hash(&mut h);
                }
            }
            h.finish()
        };
        Cas {
            upstreams: cfg.upstreams.iter().map(|u| ca(&u.tls)).collect(),
            mcp: cfg.mcp_servers.iter().map(|m| ca(&m.tls)).collect(),
            upstream_keys: cfg.upstreams.iter().map(|u| key(&u.tls)).collect(),
            mcp_keys: cfg.mcp_servers.iter().map(|m| key(&m.tls)).collect(),
        }
    }

    /// The pool key of upstream `index`'s TLS policy.
    pub fn upstream_key(&self, index: usize) -> u64 {
        self.upstream_keys.get(index).copied().unwrap_or(0)
    }

    /// The pool key of MCP server `index`'s TLS policy.
    pub fn mcp_key(&self, index: usize) -> u64 {
        self.mcp_keys.get(index).copied().unwrap_or(0)
    }

    pub fn upstream(&self, index: usize) -> Option<Arc<pingora_core::protocols::tls::CaType>> {
        self.upstreams.get(index).cloned().flatten()
    }

    pub fn mcp(&self, index: usize) -> Option<Arc<pingora_core::protocols::tls::CaType>> {
        self.mcp.get(index).cloned().flatten()
    }
}

/// The error a TLS policy refusal is: `upstream_tls_failed`.
pub const UPSTREAM_TLS: &str = super::error::Code::UpstreamTlsFailed.as_str();

/// Refuse a TLS connection below the peer's minimum version or whose leaf certificate matches
/// none of its pins, before anything is written on it.
pub fn check_tls(
    peer: &HttpPeer,
    digest: Option<&pingora_core::protocols::Digest>,
    ctx: &mut Ctx,
) -> Result<()> {
    if !peer.is_tls() {
        return Ok(());
    }
    let live = ctx.live.clone();
    let tls = super::route::handler(ctx).target(&live, ctx).tls;
    let Some(tls) = tls else {
        // Every https:// entry has a policy: a TLS peer without one is refused, not waved on.
        ctx.reason = Some(Reason::TlsVersion);
        let mut e = Error::explain(
            ErrorType::Custom(UPSTREAM_TLS),
            "no TLS policy for this peer",
        );
        e.as_up();
        return Err(e);
    };
    let ssl = digest.and_then(|d| d.ssl_digest.as_ref());
    let version = ssl.and_then(|s| crate::config::TlsVersion::negotiated(&s.version));
    let refusal = if version.is_none_or(|v| v < tls.min_version) {
        Some((
            Reason::TlsVersion,
            "the connection's TLS version is below the minimum",
        ))
    } else if !tls.pins.is_empty()
        && !ssl.is_some_and(|s| {
            tls.pins
                .iter()
                .any(|p| s.cert_digest.as_slice() == p.as_slice())
        })
    {
        Some((Reason::TlsPin, "the certificate matches none of the pins"))
    } else {
        None
    };
    match refusal {
        None => Ok(()),
        Some((reason, why)) => {
            ctx.reason = Some(reason);
            let mut e = Error::explain(ErrorType::Custom(UPSTREAM_TLS), why);
            e.as_up();
            Err(e)
        }
    }
}

/// Build the peer of the upstream the request gate chose, with this request's timeouts.
pub fn peer(ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
    let index = ctx
        .upstream
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream chosen"))?;
    let up = ctx
        .live
        .cfg
        .upstreams
        .get(index)
        .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no upstream configured"))?;
    let addr = ctx
        .peer_addr
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream address chosen"))?;
    let mut peer = HttpPeer::new(addr, up.base_url.tls, up.base_url.host.clone());
    peer.options.ca = ctx.live.cas.upstream(index);
    peer.group_key = ctx.live.cas.upstream_key(index);
    let limits = &ctx.live.cfg.limits;
    let o = &mut peer.options;
    o.connection_timeout = Some(limits.connect_timeout);
    o.total_connection_timeout = Some(limits.connect_timeout * 2);
    o.read_timeout = Some(ctx.timeout);
    o.write_timeout = Some(ctx.timeout);
    o.idle_timeout = Some(Duration::from_secs(60));
    Ok(Box::new(peer))
}

/// Rewrite the request for its peer: no hop-by-hop headers, the app's credentials or
/// X-Sluice-*; then the path, Host and credential its handler gives it.
pub fn rewrite(state: &State, req: &mut RequestHeader, ctx: &mut Ctx) -> Result<()> {
    // One pass over the request's headers (a handful) instead of a lookup per name dropped:
    // hop-by-hop ones, those Connection names (hop-by-hop too), sluice's own X-Sluice-*, and
    // the app's credentials. Framing headers are pingora's to manage, whatever Connection says.
    let named: Vec<String> = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "content-length" && t != "transfer-encoding")
        .collect();
    let dropped: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            HOP_BY_HOP.contains(&k)
                || APP_CREDENTIALS.contains(&k)
                || k.starts_with("x-sluice-")
                || named.iter().any(|n| n == k)
        })
        .cloned()
        .collect();
    for h in &dropped {
        req.remove_header(h);
    }
    // The answer must be readable: for its token usage, and to be redacted (MCP answers always
    // are). Ask for it unencoded (with response redaction, gzip and deflate are still decoded if
    // sent; anything else is refused as unscannable). The hop to the app is local.
    req.insert_header(http::header::ACCEPT_ENCODING, "identity")?;
    // The peer's path, Host and credential.
    super::route::handler(ctx).rewrite(req, ctx)?;
    req.insert_header("x-request-id", ctx.request_id.as_str())?;
    let now = Instant::now();
    ctx.upstream_sent = Some(now);
    state
        .metrics
        .added_latency
        .observe(now.duration_since(ctx.started).as_secs_f64());
    Ok(())
}

/// Retries after a failed connection, or one refused by the TLS policy once connected (version,
/// pins: checked before anything is written): at most one per other upstream of the same
/// region (and never more than pingora's `max_retries`). Nothing was sent, so the request is
/// safe to repeat. The region never changes.
pub fn failover(state: &State, ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
    let (Some(region), Some(failed)) = (ctx.region, ctx.upstream) else {
        return e;
    };
    if !ctx.tried.contains(&failed) {
        ctx.tried.push(failed);
    }
    let live = ctx.live.clone();
    let Some((index, addr)) = live.regions.pick(region, &ctx.tried) else {
        return e;
    };
    let failed_name = live
        .cfg
        .upstreams
        .get(failed)
        .map_or("?", |u| u.name.as_str());
    // A refusal by the policy after the handshake (version, pins) names its reason in the ctx.
    let policy = matches!(e.etype(), ErrorType::Custom(UPSTREAM_TLS));
    if super::request::take_upstream(state, ctx, index, addr).is_ok() {
        // A certificate that does not verify, or a connection below the policy, is refused and
        // counted even when another upstream then answers (the request's own refusal would be
        // counted in `response::fail`).
        if policy || is_tls_refusal(e.etype()) {
            let reason = if policy {
                ctx.reason.take().unwrap_or(Reason::TlsVersion)
            } else {
                Reason::TlsHandshake
            }
            .as_str();
            state
                .metrics
                .upstream_tls_failures
                .with_label_values(&[failed_name, reason])
                .inc();
            tracing::warn!(request_id = %ctx.request_id, kind = "upstream", name = failed_name, reason, error = super::error::log_kind(&e),
                "TLS connection refused: it does not meet the policy (certificate, [tls] min_version, pins); nothing was sent on it; retrying in the same region");
        } else {
            tracing::warn!(request_id = %ctx.request_id, region = %region, failed = %failed_name, error = %e, "upstream connection failed; retrying in the same region");
        }
        e.set_retry(true);
    }
    e
}

/// The connect errors that are a TLS refusal (`upstream_tls_failed`), not an unreachable peer.
pub fn is_tls_refusal(t: &ErrorType) -> bool {
    use ErrorType::*;
    matches!(
        t,
        TLSHandshakeFailure | InvalidCert | HandshakeError | TLSWantX509Lookup
    )
}

/// The upstream's response headers arrived. A `101 Switching Protocols` is refused (502): sluice
/// never forwards `Upgrade`, so nobody asked for it, and passing it on would turn the client's
/// connection into an unchecked tunnel.
pub fn answered(state: &State, resp: &pingora_http::ResponseHeader, ctx: &Ctx) -> Result<()> {
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
        tracing::warn!(request_id = %ctx.request_id, "upstream switched protocols unasked; refused");
        return Err(Error::new_up(ErrorType::InvalidHTTPHeader));
    }
    observe_answer(state, ctx);
    if resp.status == http::StatusCode::UNAUTHORIZED {
        if let Some(cred) = &ctx.credential {
            let name = super::route::handler(ctx).target(&ctx.live, ctx).credential;
            let name = name.unwrap_or_default();
            tracing::warn!(request_id = %ctx.request_id, credential = %name, oauth = cred.oauth_obtained.is_some(),
                "the upstream refused sluice's credential (401); answered 502 upstream_auth_failed");
            if let Some(obtained) = &cred.oauth_obtained {
                state.oauth.force(name, obtained);
            }
            return Err(Error::new_up(ErrorType::Custom(
                super::error::UPSTREAM_AUTH,
            )));
        }
    }
    Ok(())
}

fn observe_answer(state: &State, ctx: &Ctx) {
    if let (Some(sent), Some(up)) = (ctx.upstream_sent, ctx.upstream_config()) {
        state
            .metrics
            .upstream_duration
            .with_label_values(&[up.name.as_str()])
            .observe(sent.elapsed().as_secs_f64());
    }
}
