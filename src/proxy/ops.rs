//! The operations listeners: `/healthz`, `/readyz`, `/reload`, the admin API (`/api/*`, see
//! `admin::api`) and the OAuth connect callback (`/oauth/callback`) on the admin address,
//! `/metrics` on the metrics address. Nothing here reaches the data plane. The admin API is checked against `[admin] allow_ips` before anything else
//! (the health endpoints are not: they carry no data and orchestrators probe them), its body
//! is bounded by `[admin] max_body_bytes`, and its handler runs on a blocking thread (bcrypt,
//! SQLite).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use super::response::SECURITY_HEADERS;
use super::State;
use crate::admin::api::Code;
use crate::inbound;

/// The admin listener: `/healthz` (the process is alive), `/readyz` (config loaded, store
/// open, not draining), `/reload`, the console, and the admin API it alone holds (the data
/// plane's [`State`] does not).
pub struct Admin(pub Arc<State>, pub Arc<crate::admin::api::Api>);

/// `GET /metrics` in the Prometheus text format.
pub struct MetricsEndpoint(pub Arc<State>);

fn reply(status: u16, content_type: &str, body: Vec<u8>, request_id: &str) -> Response<Vec<u8>> {
    reply_with(status, content_type, body, request_id, None)
}

fn reply_with(
    status: u16,
    content_type: &str,
    body: Vec<u8>,
    request_id: &str,
    retry_after: Option<u64>,
) -> Response<Vec<u8>> {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .header("x-request-id", request_id);
    for (k, v) in SECURITY_HEADERS {
        b = b.header(*k, *v);
    }
    if let Some(s) = retry_after {
        b = b.header("retry-after", s);
    }
    b.body(body).unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_error(status: u16, code: &str, message: &str, request_id: &str) -> Response<Vec<u8>> {
    reply(
        status,
        "application/json",
        crate::error::body_bytes(status, code, message, request_id),
        request_id,
    )
}

/// 405 with the methods the route takes (RFC 9110: `Allow`).
fn not_allowed(allow: &'static str, request_id: &str) -> Response<Vec<u8>> {
    let mut r = json_error(405, "method_not_allowed", "Method not allowed.", request_id);
    r.headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    r
}

/// An admin API refusal made before the API itself runs (source address, body size).
fn api_error(code: Code, message: &str, request_id: &str) -> Response<Vec<u8>> {
    json_error(code.status(), code.as_str(), message, request_id)
}

fn request_id(session: &ServerSession) -> String {
    inbound::request_id(
        session
            .req_header()
            .headers
            .get("x-request-id")
            .map(|v| v.as_bytes()),
    )
}

/// The request head was parsed: a missed deadline is answered by these handlers from now on.
fn head_received(session: &ServerSession) {
    if let Some(g) = super::guard::Guarded::of_session(session) {
        g.head_received();
    }
}

/// The request is fully read: stop the slow-client deadline of this connection.
fn disarm(session: &ServerSession) {
    if let Some(g) = super::guard::Guarded::of_session(session) {
        g.disarm();
    }
}

/// Read the admin API request body, refusing more than `limit` bytes.
async fn read_body(session: &mut ServerSession, limit: usize) -> Result<Vec<u8>, u16> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(413);
    }
    session.set_read_timeout(Some(Duration::from_secs(10)));
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(413);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => {
                disarm(session);
                return Ok(body);
            }
            Err(_) => return Err(400),
        }
    }
}

impl Admin {
    async fn api(&self, session: &mut ServerSession, id: String) -> Response<Vec<u8>> {
        let started = std::time::Instant::now();
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let resp = self.api_inner(session, id.clone()).await;
        let status = resp.status().as_u16();
        let m = match method.as_str() {
            m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
            _ => "other",
        };
        self.0
            .metrics
            .admin_requests
            .with_label_values(&[m, &status.to_string()])
            .inc();
        // Ids in the path are not secrets; query strings and bodies are never logged.
        tracing::info!(
            request_id = %id,
            method = %method,
            path = %path.chars().take(200).collect::<String>(),
            status,
            duration_ms = started.elapsed().as_millis() as u64,
            "admin api"
        );
        resp
    }

    /// The peer's address when `[admin] allow_ips` admits it; else the 403 `ip_not_allowed`
    /// answer (`what`: what was asked for, for the log and the message).
    fn admitted(
        &self,
        session: &ServerSession,
        what: &str,
        id: &str,
    ) -> Result<std::net::IpAddr, Box<Response<Vec<u8>>>> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        match peer {
            Some(ip) if self.0.live().cfg.admin.allows(ip) => Ok(ip),
            _ => {
                tracing::warn!(peer = ?peer, "a request for {what} from a source outside [admin] allow_ips");
                Err(Box::new(api_error(
                    Code::IpNotAllowed,
                    &format!("This source address may not use {what} ([admin] allow_ips)."),
                    id,
                )))
            }
        }
    }

    /// The web console's pages and assets (`/dashboard/*`, see `admin::console`), from
    /// `[admin] allow_ips` only, as the API.
    fn console(&self, session: &ServerSession, id: &str) -> Response<Vec<u8>> {
        if let Err(refused) = self.admitted(session, "the console", id) {
            return *refused;
        }
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return not_allowed("GET, HEAD", id);
        }
        let Some(asset) = crate::admin::console::asset(req.uri.path()) else {
            return json_error(404, "not_found", "No such console asset.", id);
        };
        let mut resp = reply(200, asset.content_type, asset.body.to_vec(), id);
        for (k, v) in crate::admin::console::HEADERS {
            resp.headers_mut()
                .insert(*k, http::HeaderValue::from_static(v));
        }
        resp
    }

    /// `POST /reload`: read the config file again (as SIGHUP does) and say what changed.
    /// From `[admin] allow_ips` only, never from a browser (a request with an `Origin`: a page
    /// could otherwise post a form to the loopback listener).
    async fn reload(&self, session: &mut ServerSession, id: &str) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::POST {
            return not_allowed("POST", id);
        }
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if !peer.is_some_and(|ip| self.0.live().cfg.admin.allows(ip))
            || req.headers.contains_key(http::header::ORIGIN)
        {
            tracing::warn!(peer = ?peer, "config reload asked from a source outside [admin] allow_ips, or by a browser");
            return api_error(
                Code::IpNotAllowed,
                "This source may not reload the config ([admin] allow_ips; not from a browser).",
                id,
            );
        }
        let done = self.0.reload().await;
        match (done.outcome, &done.error) {
            ("failed", Some(e)) => return json_error(503, "reload_failed", e, id),
            (_, Some(e)) => {
                return json_error(
                    422,
                    "invalid_config",
                    &format!("The config file is invalid; the running config is kept.\n{e}"),
                    id,
                )
            }
            _ => {}
        }
        reply(
            200,
            "application/json",
            serde_json::to_vec(&done).unwrap_or_default(),
            id,
        )
    }

    async fn api_inner(&self, session: &mut ServerSession, id: String) -> Response<Vec<u8>> {
        let peer = match self.admitted(session, "the admin API", &id) {
            Ok(ip) => Some(ip),
            Err(refused) => return *refused,
        };
        let limit = self.0.live().cfg.admin.max_body_bytes;
        let body = match read_body(session, limit).await {
            Ok(b) => b,
            Err(413) => {
                return api_error(
                    Code::RequestTooLarge,
                    &format!("Request body exceeds {limit} bytes."),
                    &id,
                )
            }
            Err(_) => {
                return api_error(
                    Code::InvalidBody,
                    "The request body could not be read.",
                    &id,
                )
            }
        };
        let h = &session.req_header().headers;
        let text = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(512).collect::<String>())
        };
        let req = crate::admin::api::Request {
            method: session.req_header().method.as_str().to_string(),
            path: session.req_header().uri.path().to_string(),
            query: session.req_header().uri.query().map(String::from),
            peer,
            user_agent: text("user-agent"),
            authorization: h
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(String::from),
            content_type: text("content-type"),
            // Not cut: the session cookie is longer than other headers.
            cookie: {
                let all: Vec<&str> = h
                    .get_all(http::header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                (!all.is_empty()).then(|| all.join("; "))
            },
            csrf: text("x-sluice-csrf"),
            wants_cookie: text("x-sluice-session")
                .is_some_and(|v| v.eq_ignore_ascii_case("cookie")),
            fetch_site: text("sec-fetch-site"),
            tls: text("x-forwarded-proto").is_some_and(|v| v.eq_ignore_ascii_case("https")),
            request_id: id.clone(),
            body,
        };
        let api = self.1.clone();
        let reply = match tokio::task::spawn_blocking(move || api.handle(&req)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "admin API handler panicked");
                return json_error(500, "internal_error", "Internal error.", &id);
            }
        };
        let mut resp = reply_with(
            reply.status,
            "application/json",
            serde_json::to_vec(&reply.body).unwrap_or_default(),
            &id,
            reply.retry_after,
        );
        if let Some(allow) = reply
            .allow
            .as_deref()
            .and_then(|a| http::HeaderValue::from_str(a).ok())
        {
            resp.headers_mut().insert(http::header::ALLOW, allow);
        }
        for c in &reply.cookies {
            if let Ok(v) = http::HeaderValue::from_str(c) {
                resp.headers_mut().append(http::header::SET_COOKIE, v);
            }
        }
        if reply.status == 401 {
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"sluice-admin\""),
            );
        }
        resp
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        head_received(session);
        let id = request_id(session);
        let path = session.req_header().uri.path();
        // The admin API, and the OAuth callback a connect's browser comes back to.
        let api = path.starts_with("/api/")
            || path == "/api"
            || path == crate::admin::connect::CALLBACK_PATH;
        if !api {
            disarm(session);
        }
        if api {
            let resp = self.api(session, id).await;
            return resp;
        }
        if session.req_header().uri.path() == "/reload" {
            return self.reload(session, &id).await;
        }
        if crate::admin::console::is_console(session.req_header().uri.path()) {
            return self.console(session, &id);
        }
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return not_allowed("GET, HEAD", &id);
        }
        match req.uri.path() {
            // The console is the admin listener's page.
            "/" => {
                let mut r = reply(302, "text/plain", Vec::new(), &id);
                r.headers_mut().insert(
                    http::header::LOCATION,
                    http::HeaderValue::from_static(crate::admin::console::HOME),
                );
                r
            }
            "/healthz" => reply(200, "application/json", br#"{"status":"ok"}"#.to_vec(), &id),
            "/readyz" => {
                if self.0.draining.load(Ordering::Acquire) {
                    reply(
                        503,
                        "application/json",
                        br#"{"status":"draining"}"#.to_vec(),
                        &id,
                    )
                } else if self.0.audit.is_failing() {
                    reply(
                        503,
                        "application/json",
                        br#"{"status":"audit_unavailable"}"#.to_vec(),
                        &id,
                    )
                } else if crate::supervise::needed_down().is_some() {
                    // The key snapshot watcher is backing off after a panic.
                    reply(
                        503,
                        "application/json",
                        br#"{"status":"background_task_down"}"#.to_vec(),
                        &id,
                    )
                } else if !self.0.auth.is_healthy() {
                    reply(
                        503,
                        "application/json",
                        br#"{"status":"store_unavailable"}"#.to_vec(),
                        &id,
                    )
                } else if !self.0.proxy_listening() {
                    // pingora starts each service on its own: the admin one can answer
                    // before the data plane's has started.
                    reply(
                        503,
                        "application/json",
                        br#"{"status":"starting"}"#.to_vec(),
                        &id,
                    )
                } else {
                    reply(
                        200,
                        "application/json",
                        br#"{"status":"ready"}"#.to_vec(),
                        &id,
                    )
                }
            }
            _ => json_error(404, "not_found", "No such route.", &id),
        }
    }
}

#[async_trait]
impl ServeHttp for MetricsEndpoint {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        head_received(session);
        disarm(session);
        let id = request_id(session);
        let req = session.req_header();
        if req.method != http::Method::GET {
            return not_allowed("GET", &id);
        }
        if req.uri.path() != "/metrics" {
            return json_error(404, "not_found", "No such route.", &id);
        }
        let m = &self.0.metrics;
        m.snapshot_age.set(self.0.auth.age().as_secs_f64());
        m.credential_expiry.reset();
        for (name, expiry) in self.0.auth.get().credential_expiries() {
            if let Some(t) = expiry {
                // Exact, not truncated to the second: a token refreshed every few seconds
                // would otherwise read as expired up to a second early.
                m.credential_expiry
                    .with_label_values(&[name])
                    .set(t.unix_timestamp_nanos() as f64 / 1e9);
            }
        }
        m.oauth_needs_reconnect.reset();
        for name in self.0.auth.get().needs_reconnect() {
            m.oauth_needs_reconnect.with_label_values(&[name]).set(1);
        }
        let store = &self.0.live().cfg.store;
        let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = store.path.clone().into_os_string();
        wal.push("-wal");
        let bytes = size(&store.path).saturating_add(size(std::path::Path::new(&wal)));
        m.store_size.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        m.store_max.set(
            store
                .max_bytes
                .map_or(0, |b| i64::try_from(b).unwrap_or(i64::MAX)),
        );
        // A revoked or expired key's series go: the page does not grow with key turnover.
        // With per-key labels off (a reload may turn them off), every key's series go.
        let snapshot = self.0.auth.get();
        let usable = if self.0.live().cfg.metrics.per_key {
            snapshot.usable_key_ids(time::OffsetDateTime::now_utc())
        } else {
            Default::default()
        };
        drop_keys(&m.token_usage, &usable);
        drop_keys(&m.time_to_first_token, &usable);
        for (task, n) in crate::supervise::restarts() {
            let c = m.background_restarts.with_label_values(&[task]);
            c.inc_by(n.saturating_sub(c.get()));
        }
        let reloads = self.0.auth.reloads();
        m.snapshot_reloads
            .inc_by(reloads.saturating_sub(m.snapshot_reloads.get()));
        reply(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            self.0.metrics.encode(),
            &id,
        )
    }
}

/// Remove the series of `h` whose `key` label is not one of `usable` (nor `-`).
fn drop_keys(h: &prometheus::HistogramVec, usable: &std::collections::HashSet<&str>) {
    use prometheus::core::Collector;
    let mut gone: Vec<std::collections::HashMap<String, String>> = Vec::new();
    for family in h.collect() {
        for metric in family.get_metric() {
            let labels: std::collections::HashMap<String, String> = metric
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            if labels
                .get("key")
                .is_some_and(|k| k != "-" && !usable.contains(k.as_str()))
            {
                gone.push(labels);
            }
        }
    }
    for labels in &gone {
        let refs: std::collections::HashMap<&str, &str> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let _ = h.remove(&refs);
    }
}
