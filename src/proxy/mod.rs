//! The only code that knows pingora. [`Sluice`] implements `ProxyHttp`; each phase delegates to
//! a small function in `request`, `upstream` or `response`, which ask the request's
//! `route::Handler` (`llm::Llm` or `mcp::Mcp`) wherever an LLM call and an MCP call differ, and
//! `error` is the single place that turns a refusal into a reply. `serve` assembles the pingora server (data plane, admin and
//! metrics listeners) and runs it until SIGTERM/SIGINT, draining in-flight requests first.

mod error;
mod guard;
mod llm;
mod mcp;
mod ops;
mod rebody;
mod reload;
mod request;
mod response;
mod route;
mod serve;
mod upstream;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::auth::{Credential, KeyInfo, Watcher};
use crate::config::Config;
use crate::inbound::Route;
use crate::metrics::Metrics;

pub use error::Rejection;
pub use reload::{warn_unserved, Reloaded};
pub use serve::{catch_early_hangups, run, start_balancers, Listener, Listeners};
pub use upstream::Regions;

/// Every line of a header, joined as clients join them (`identity` then `deflate` is
/// `identity, deflate` to httpx, which decodes it), never only the first; a line that repeats
/// an earlier one (`gzip` twice, the same type twice) counted once. `None`: no such header.
/// One line (the usual case) is borrowed, not copied.
pub(crate) fn header_lines(
    headers: &http::HeaderMap,
    name: http::header::HeaderName,
) -> Option<std::borrow::Cow<'_, [u8]>> {
    let mut lines = headers
        .get_all(name)
        .iter()
        .map(|v| v.as_bytes().trim_ascii());
    let first = lines.next()?;
    // Allocates only when there is a second, different line.
    let mut distinct: Vec<&[u8]> = Vec::new();
    for v in lines {
        if !v.eq_ignore_ascii_case(first) && !distinct.iter().any(|l| l.eq_ignore_ascii_case(v)) {
            distinct.push(v);
        }
    }
    if distinct.is_empty() {
        return Some(std::borrow::Cow::Borrowed(first));
    }
    distinct.insert(0, first);
    Some(std::borrow::Cow::Owned(distinct.join(&b", "[..])))
}

/// The background services a [`State`] is built over.
pub struct Services {
    /// API keys and upstream credentials, reloaded when the store changes.
    pub auth: Arc<Watcher>,
    pub audit: crate::audit::Writer,
    pub oauth: Arc<crate::auth::oauth::Refresher>,
    pub limiter: crate::limits::Limiter,
}

/// What a config reload replaces: the config and the balancers built from it. A request keeps
/// the one it started with to its end (its upstream index means the same thing throughout).
pub struct Live {
    pub cfg: Config,
    regions: Arc<upstream::Regions>,
    /// Each upstream's and MCP server's `ca_file` certificates, parsed once for pingora.
    cas: Arc<upstream::Cas>,
}

impl Live {
    /// The config `cfg` with its balancers, whose discovery and health checks run on `health`;
    /// also the receivers that hear when each balancer's first discovery is done.
    pub fn new(
        cfg: Config,
        health: &tokio::runtime::Handle,
    ) -> (Live, Vec<tokio::sync::oneshot::Receiver<()>>) {
        let (regions, ready) = upstream::Regions::new(&cfg, health);
        (
            Live {
                cas: Arc::new(upstream::Cas::of(&cfg)),
                cfg,
                regions: Arc::new(regions),
            },
            ready,
        )
    }

    /// Whether MCP server `index` passes its health check.
    pub fn mcp_healthy(&self, index: usize) -> bool {
        self.regions.mcp_healthy(index)
    }

    /// The upstreams (config indexes) passing their health checks.
    pub fn healthy_upstreams(&self) -> Vec<usize> {
        self.regions.healthy_upstreams()
    }
}

/// State shared by every request, built once at startup.
pub struct State {
    /// The config and balancers in force (replaced by a reload).
    pub live: Arc<arc_swap::ArcSwap<Live>>,
    /// Where the config was read from (`None`: the compiled-in default), for reloads.
    config_path: Option<std::path::PathBuf>,
    /// Runs the balancers' discovery and health checks.
    health: tokio::runtime::Handle,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    pub metrics: Metrics,
    /// Set on SIGTERM/SIGINT: new connections are refused, responses close their connection,
    /// `/readyz` answers 503.
    pub draining: Arc<AtomicBool>,
    /// The data-plane service has started on its (already bound) listener: `/readyz` says
    /// `starting` until then.
    listening: Arc<AtomicBool>,
    in_flight: AtomicUsize,
    /// API keys and upstream credentials, reloaded when the store changes.
    pub auth: Arc<Watcher>,
    limiter: crate::limits::Limiter,
    redactor: crate::redact::Engine,
    /// Bounds how many large bodies are redacted at once on the blocking pool.
    redact_pool: tokio::sync::Semaphore,
    /// The background writer of per-request audit records.
    pub audit: crate::audit::Writer,
    /// Obtains and refreshes OAuth credentials' access tokens.
    pub oauth: Arc<crate::auth::oauth::Refresher>,
    /// Which key opened which MCP session.
    mcp_sessions: crate::mcp::Sessions,
}

impl State {
    /// Build the shared state over the live config and a running key/credential watcher.
    pub fn new(
        live: Arc<arc_swap::ArcSwap<Live>>,
        reloads: (Option<std::path::PathBuf>, tokio::runtime::Handle),
        metrics: Metrics,
        services: Services,
    ) -> Arc<State> {
        let Services {
            auth,
            audit,
            oauth,
            limiter,
        } = services;
        Arc::new(State {
            metrics,
            audit,
            oauth,
            draining: Arc::new(AtomicBool::new(false)),
            listening: Arc::new(AtomicBool::new(false)),
            in_flight: AtomicUsize::new(0),
            auth,
            limiter,
            redactor: crate::redact::Engine::new(),
            mcp_sessions: crate::mcp::Sessions::default(),
            redact_pool: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4)),
            ),
            live,
            config_path: reloads.0,
            health: reloads.1,
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The config and balancers in force now.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Whether the data plane serves its listener. The socket was bound before anything
    /// started, so a connection made from then on waits in its queue; a data plane that
    /// cannot start ends the process.
    fn proxy_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// Counts a request as in flight for as long as its context lives.
struct InFlight(Arc<State>);

impl InFlight {
    fn new(state: &Arc<State>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        state.metrics.in_flight.inc();
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.in_flight.dec();
    }
}

/// Per-request state.
pub struct Ctx {
    /// The config and balancers this request was started under.
    live: Arc<Live>,
    request_id: String,
    started: Instant,
    route: Route,
    /// Upstream read timeout chosen from the request's model.
    timeout: Duration,
    /// The authenticated key.
    key: Option<Arc<KeyInfo>>,
    /// The region the request must be served in.
    region: Option<crate::residency::Region>,
    /// Index into the configured upstreams.
    upstream: Option<usize>,
    /// The chosen upstream's address.
    peer_addr: Option<std::net::SocketAddr>,
    /// Upstreams that failed to connect for this request (never retried).
    tried: Vec<usize>,
    /// The chosen upstream's credential, injected by `upstream::rewrite`.
    credential: Option<Arc<Credential>>,
    upstream_sent: Option<Instant>,
    /// The CORS origin to echo, when the request's Origin is allowed.
    cors_origin: Option<http::HeaderValue>,
    /// Downstream response headers have been written.
    responded: bool,
    /// The error code sluice answered with, for logs and metrics.
    code: Option<error::Code>,
    /// Why, when the code alone does not say (e.g. which authentication check failed).
    reason: Option<error::Reason>,
    bytes_in: u64,
    bytes_out: u64,
    /// The request's `model`, when its body names one.
    model: Option<String>,
    /// PII replaced in the request body.
    redactions: crate::redact::Counts,
    /// How the response body is rewritten (response redaction on).
    rewrite: Option<response::Rewrite>,
    /// Replaced in a buffered response body.
    response_redactions: crate::redact::Counts,
    /// Set for `/mcp/<server>` requests.
    mcp: Option<mcp::McpCtx>,
    /// Token usage of an LLM answer, read as it streams by.
    usage: Option<Box<response::UsageCtx>>,
    /// sluice asked the stream for usage the app did not ask for: stripped from the answer.
    asked_usage: bool,
    /// The request asked for a stream (`"stream": true`): its client reads a successful
    /// answer as events, whatever its content type says.
    asks_stream: bool,
    /// It asked for more than one answer (`n` > 1): stream chunks' choices are told apart by
    /// their `index` (see `redact::sse::Redactor::one_choice`).
    asks_choices: bool,
    /// Token limits taken before the request (the estimate), corrected from the usage after.
    tokens_taken: Vec<crate::limits::Taken>,
    /// The input part of that estimate (a quarter of the body's bytes).
    input_tokens: u64,
    /// What is left of the key's and org's tightest `rpm` and `tpm` after this request (or at
    /// its refusal): the `x-ratelimit-*` headers.
    quotas: Quotas,
    /// The answer's end (a stream's `[DONE]`, its completion event, or the body's end) went
    /// to the client.
    answer_complete: bool,
    /// The request body, when pingora forwards it from its retry buffer (`rebody::filter`).
    body: Option<Bytes>,
    /// `body` went to the current upstream attempt.
    body_sent: bool,
    _in_flight: Option<InFlight>,
}

impl Ctx {
    /// The `[[upstreams]]` entry the request gate chose, in the config the request started under.
    fn upstream_config(&self) -> Option<&crate::config::Upstream> {
        self.upstream.and_then(|i| self.live.cfg.upstreams.get(i))
    }

    /// The `[[mcp_servers]]` entry of an MCP request, once chosen.
    fn mcp_server(&self) -> Option<&crate::config::McpServer> {
        (self.mcp.as_ref()).and_then(|m| self.live.cfg.mcp_servers.get(m.server))
    }
}

/// The tightest request and token rate limits a request met.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quotas {
    requests: Option<crate::limits::Quota>,
    tokens: Option<crate::limits::Quota>,
}

/// The pingora proxy application.
pub struct Sluice {
    state: Arc<State>,
}

impl Sluice {
    /// A proxy over `state`.
    pub fn new(state: Arc<State>) -> Sluice {
        Sluice { state }
    }
}

#[async_trait]
impl ProxyHttp for Sluice {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        let live = self.state.live();
        Ctx {
            timeout: live.cfg.limits.timeout,
            live,
            request_id: String::new(),
            started: Instant::now(),
            route: Route::Other,
            key: None,
            region: None,
            upstream: None,
            peer_addr: None,
            tried: Vec::new(),
            credential: None,
            upstream_sent: None,
            cors_origin: None,
            responded: false,
            code: None,
            reason: None,
            bytes_in: 0,
            bytes_out: 0,
            redactions: Default::default(),
            rewrite: None,
            response_redactions: Default::default(),
            mcp: None,
            model: None,
            usage: None,
            asked_usage: false,
            asks_stream: false,
            asks_choices: false,
            tokens_taken: Vec::new(),
            input_tokens: 0,
            quotas: Quotas::default(),
            answer_complete: false,
            body: None,
            body_sent: false,
            _in_flight: Some(InFlight::new(&self.state)),
        }
    }

    /// Gate the request head, read the whole body, and hand pingora a request it can forward.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        request::filter(&self.state, session, ctx).await
    }

    /// The configured upstream for this request, with the model's timeouts.
    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        route::handler(ctx).peer(ctx, session)
    }

    /// A connection failure: retry on another healthy upstream of the same region, if any.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        e: Box<Error>,
    ) -> Box<Error> {
        upstream::failover(&self.state, ctx, e)
    }

    /// An error on an established connection. One refused by the TLS policy (version, pins)
    /// carried nothing: another upstream of the region is tried, as after a failed connect.
    /// Anything else: pingora's own policy (no retry for a non-idempotent request or a
    /// truncated retry buffer; otherwise only on a reused connection).
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        if matches!(
            e.etype(),
            pingora_core::ErrorType::Custom(upstream::UPSTREAM_TLS)
        ) {
            return upstream::failover(&self.state, ctx, e);
        }
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    /// The connection's TLS meets the upstream's policy (version, pins) before a byte of the
    /// request, and so the credential, is written on it.
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream::check_tls(peer, digest, ctx)
    }

    /// Rewrite the path, Host and hop-by-hop headers for the upstream.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream::rewrite(&self.state, req, ctx)?;
        if let Some(body) = &ctx.body {
            rebody::head(req, body)?;
            ctx.body_sent = false;
        }
        Ok(())
    }

    /// The body pingora forwards from its retry buffer is replaced by the one sluice checked.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        rebody::filter(body, &ctx.body, &mut ctx.body_sent)
    }

    /// Check the upstream's response head and record its time to response headers.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream::answered(&self.state, resp, ctx)
    }

    /// Strip hop-by-hop and upstream CORS headers; add request id and security headers; plan
    /// the response's redaction.
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        response::headers(&self.state, session, resp, ctx)
    }

    /// Count the body, and redact it when the key's response redaction is on.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        response::body(&self.state, body, end, ctx)?;
        Ok(None)
    }

    /// Turn pingora's errors into sluice's JSON replies.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        response::fail(&self.state, session, e, ctx).await
    }

    /// Metrics and the one log line per request.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if let Some(g) = guard::Guarded::of_session(&session.downstream_session) {
            g.response_done();
        }
        response::log(&self.state, session, e, ctx);
        // A refusal because the audit log cannot be written has no record to write (and must
        // not grow the writer's backlog); it is in the log line and `sluice_errors_total`.
        if ctx.code != Some(error::Code::AuditUnavailable) && !skipped(Stage::Audit) {
            for record in route::handler(ctx).records(&self.state, session, ctx) {
                self.state.audit.send(record).await;
            }
        }
    }

    /// pingora's "Fail to proxy" record quotes the error, whose context can hold the raw bytes
    /// it failed to parse (an upstream's whole response head, cookies included): never written.
    /// The request's own log line has the error's type.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, _error: &Error) -> bool {
        true
    }

    /// Never log the query string: it is client-controlled and could hold a secret.
    fn request_summary(&self, session: &Session, ctx: &Ctx) -> String {
        let req = session.req_header();
        format!(
            "{} {} request_id={}",
            req.method,
            req.uri.path(),
            ctx.request_id
        )
    }
}

/// A stage of the request path that a bench build can turn off (see [`skipped`]).
#[derive(Clone, Copy)]
pub(crate) enum Stage {
    /// The request's audit record.
    Audit,
    /// The log line and the per-request metrics.
    Log,
    /// Reading the answer's token usage.
    Usage,
}

/// Whether `stage` is off: only in a bench build (`--features bench-ablation`, never shipped),
/// where `SLUICE_BENCH_SKIP` (comma-separated: `audit`, `log`, `usage`) turns stages off so
/// `bench/load.py --ladder` can measure what each costs. In every other build this is `false`
/// and the checks compile away.
#[cfg(feature = "bench-ablation")]
pub(crate) fn skipped(stage: Stage) -> bool {
    static SKIP: std::sync::OnceLock<[bool; 3]> = std::sync::OnceLock::new();
    let s = SKIP.get_or_init(|| {
        let v = std::env::var("SLUICE_BENCH_SKIP").unwrap_or_default();
        let has = |n: &str| v.split(',').any(|x| x.trim() == n);
        [has("audit"), has("log"), has("usage")]
    });
    s[stage as usize]
}

/// Whether `stage` is off: never, outside a bench build.
#[cfg(not(feature = "bench-ablation"))]
#[inline(always)]
pub(crate) fn skipped(_stage: Stage) -> bool {
    false
}
