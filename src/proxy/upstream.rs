//! The upstream phase: which upstream, at which address, with which timeouts, and what the
//! request looks like when it leaves. The upstream is always one from the config: the client's
//! Host header and request target never choose it.
//!
//! Host names are resolved off the hot path. `Table` holds each upstream's addresses, filled at
//! startup and refreshed by a background task; a request only reads the current list (a short
//! read lock, never held across an await) and never waits on DNS.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::{Ctx, State};
use crate::config::Upstream;

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

/// Resolved addresses of every configured upstream, by config index.
pub struct Table {
    hosts: Vec<(String, u16)>,
    addrs: Vec<RwLock<Arc<Vec<SocketAddr>>>>,
    next: AtomicUsize,
}

impl Table {
    /// Resolve every upstream once (IP literals need no DNS). A name that does not resolve yet
    /// is left empty and retried by the refresher; requests to it get 502 meanwhile.
    pub fn new(upstreams: &[Upstream]) -> Table {
        let hosts: Vec<(String, u16)> = upstreams
            .iter()
            .map(|u| (u.base_url.host.clone(), u.base_url.port))
            .collect();
        let addrs = hosts
            .iter()
            .map(|(h, p)| RwLock::new(Arc::new(resolve_blocking(h, *p))))
            .collect();
        Table {
            hosts,
            addrs,
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self, i: usize) -> Option<SocketAddr> {
        let list = self.addrs.get(i)?.read().ok()?.clone();
        if list.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Some(list[n % list.len()])
    }

    async fn refresh(&self) {
        for (i, (host, port)) in self.hosts.iter().enumerate() {
            if host.parse::<std::net::IpAddr>().is_ok() {
                continue;
            }
            match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(found) => {
                    let found: Vec<SocketAddr> = found.collect();
                    if !found.is_empty() {
                        if let Ok(mut slot) = self.addrs[i].write() {
                            *slot = Arc::new(found);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(upstream_host = %host, error = %e, "DNS refresh failed; keeping previous addresses")
                }
            }
        }
    }
}

fn resolve_blocking(host: &str, port: u16) -> Vec<SocketAddr> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return vec![SocketAddr::new(ip, port)];
    }
    match (host, port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            tracing::warn!(upstream_host = %host, error = %e, "cannot resolve upstream yet; will retry");
            Vec::new()
        }
    }
}

/// Background task re-resolving upstream host names every 30 seconds.
pub struct Refresher(pub Arc<State>);

#[async_trait]
impl BackgroundService for Refresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(30)) => self.0.upstreams.refresh().await,
            }
        }
    }
}

/// Build the peer of the upstream the request gate chose, with this request's timeouts.
pub fn peer(state: &State, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
    let index = ctx
        .upstream
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream chosen"))?;
    let up = state
        .cfg
        .upstreams
        .get(index)
        .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no upstream configured"))?;
    let addr = state
        .upstreams
        .pick(index)
        .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "upstream not resolved"))?;
    let mut peer = HttpPeer::new(addr, up.base_url.tls, up.base_url.host.clone());
    let limits = &state.cfg.limits;
    let o = &mut peer.options;
    o.connection_timeout = Some(limits.connect_timeout);
    o.total_connection_timeout = Some(limits.connect_timeout * 2);
    o.read_timeout = Some(ctx.timeout);
    o.write_timeout = Some(ctx.timeout);
    o.idle_timeout = Some(Duration::from_secs(60));
    Ok(Box::new(peer))
}

/// Rewrite the request for the upstream: its path prefix, its Host, no hop-by-hop headers.
pub fn rewrite(state: &State, req: &mut RequestHeader, ctx: &mut Ctx) -> Result<()> {
    let Some(up) = ctx.upstream.and_then(|i| state.cfg.upstreams.get(i)) else {
        return Error::e_explain(ErrorType::InternalError, "no upstream chosen");
    };
    if !up.base_url.path_prefix.is_empty() {
        let pq = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let uri: http::Uri = format!("{}{}", up.base_url.path_prefix, pq)
            .parse()
            .map_err(|_| Error::explain(ErrorType::InternalError, "upstream path"))?;
        req.set_uri(uri);
    }
    // Headers named by Connection are hop-by-hop too.
    let named: Vec<String> = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for h in HOP_BY_HOP
        .iter()
        .copied()
        .chain(named.iter().map(String::as_str))
    {
        // Framing headers are pingora's to manage, whatever Connection says.
        if h != "content-length" && h != "transfer-encoding" {
            req.remove_header(h);
        }
    }
    let sluice_headers: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-sluice-"))
        .cloned()
        .collect();
    for h in sluice_headers {
        req.remove_header(&h);
    }
    for h in APP_CREDENTIALS {
        req.remove_header(*h);
    }
    if let Some(cred) = &ctx.credential {
        let value = cred.header_value(&up.credential_prefix).ok_or_else(|| {
            Error::explain(
                ErrorType::InternalError,
                "upstream credential is not a valid header value",
            )
        })?;
        req.insert_header(up.credential_header.clone(), value)?;
    }
    req.insert_header(http::header::HOST, up.base_url.authority.as_str())?;
    req.insert_header("x-request-id", ctx.request_id.as_str())?;
    let now = Instant::now();
    ctx.upstream_sent = Some(now);
    state
        .metrics
        .added_latency
        .observe(now.duration_since(ctx.started).as_secs_f64());
    Ok(())
}

/// The upstream's response headers arrived.
pub fn answered(state: &State, ctx: &Ctx) {
    if let (Some(sent), Some(up)) = (
        ctx.upstream_sent,
        ctx.upstream.and_then(|i| state.cfg.upstreams.get(i)),
    ) {
        state
            .metrics
            .upstream_duration
            .with_label_values(&[up.name.as_str()])
            .observe(sent.elapsed().as_secs_f64());
    }
}
