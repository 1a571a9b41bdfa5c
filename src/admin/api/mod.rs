//! The admin API (`/api/*` on `listen.admin`): JSON in, JSON out, plain Rust (the pingora
//! adapter in `proxy::ops` only reads the request and writes the reply). Every route checks the
//! caller's current role from the [`Directory`]; every mutation goes through
//! [`super::audited`] so its audit record (actor, IP, user agent, request id) is committed with
//! it, before the answer. The CLI calls the same library functions.
//!
//! Roles: operators manage everything; in their own org an `owner` can do everything
//! (including the hard delete and managing owners), an `admin` manages keys, non-owner users
//! and the org's settings and reads the audit log, an `auditor` reads the audit log, key
//! metadata and the org, a `member` reads the org and manages their own account.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::session::{Directory, Principal, Sessions, Throttle};
use super::users::{self, Role};
use super::{Error, KeySetting, LimitsPatch, McpLists, McpPatch, Patch, Setting};
use crate::audit::{self, Record};
use crate::policy;
use crate::residency::Region;
use crate::store::{self, Store};
use crate::vault::Keyring;

mod audit_log;
mod auth;
mod bodies;
mod credentials;
mod errors;
mod keys;
mod mcp;
mod members;
mod orgs;
mod routes;
#[cfg(test)]
mod tests;
mod usage;

use bodies::*;
use errors::*;
pub use errors::{ApiError, Code};
use routes::*;
pub use routes::{matches_pattern, openapi, Access, Route, Shape, OPENAPI_PATH, ROUTES};

/// A route's path parameters.
struct Params<'a>(Vec<(&'a str, &'a str)>);

impl Params<'_> {
    /// The parameter `name` (the route table guarantees its presence; empty otherwise).
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map_or("", |(_, v)| v)
    }
}

/// An admin API request, already read (the body within `[admin] max_body_bytes`).
#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub peer: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    /// The `Cookie` header (the console's session, [`SESSION_COOKIE`]).
    pub cookie: Option<String>,
    /// `X-Sluice-CSRF`: the console's CSRF token.
    pub csrf: Option<String>,
    /// `X-Sluice-Session: cookie`: the console logs in and wants the session as a cookie.
    pub wants_cookie: bool,
    /// `Sec-Fetch-Site`, which browsers send.
    pub fetch_site: Option<String>,
    /// Reached over TLS (`X-Forwarded-Proto: https` from a proxy in front): cookies are `Secure`.
    pub tls: bool,
    pub body: Vec<u8>,
}

/// `Set-Cookie` values that remove the console's cookies.
fn clear_cookies(req: &Request) -> Vec<String> {
    let secure = if req.tls { "; Secure" } else { "" };
    [(SESSION_COOKIE, "/api"), (CSRF_COOKIE, "/")]
        .iter()
        .map(|(n, path)| format!("{n}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict{secure}"))
        .collect()
}

/// The console's session cookie: the session token, `HttpOnly`, `SameSite=Strict`.
pub const SESSION_COOKIE: &str = "sluice_session";
/// The console's CSRF cookie (readable by the console's script, which sends it back in
/// `X-Sluice-CSRF`; bound to the session, see [`Sessions::csrf`]).
pub const CSRF_COOKIE: &str = "sluice_csrf";

impl Request {
    /// The session token: `Authorization: Bearer`, else the session cookie (`Some(true)` then).
    /// Several session cookies are refused (`None`): which one a server reads is ambiguous.
    fn session_token(&self) -> Option<(&str, bool)> {
        if let Some(h) = &self.authorization {
            let (scheme, rest) = h.trim().split_once(' ')?;
            return scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| (rest.trim(), false));
        }
        let mut found = self
            .cookie
            .as_deref()?
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .filter(|(k, _)| *k == SESSION_COOKIE)
            .map(|(_, v)| v.trim());
        let token = found.next()?;
        found.next().is_none().then_some((token, true))
    }

    /// Whether the session travels in cookies (the console) rather than in the answer's body.
    fn cookie_mode(&self) -> bool {
        self.wants_cookie || matches!(self.session_token(), Some((_, true)))
    }
}

impl Drop for Request {
    /// Bodies carry passwords, codes and credentials: wipe them once handled.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.body);
        for h in [&mut self.authorization, &mut self.cookie, &mut self.csrf]
            .into_iter()
            .flatten()
        {
            zeroize::Zeroize::zeroize(h);
        }
    }
}

/// The reply: a status and a JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// Seconds, for 429.
    pub retry_after: Option<u64>,
    /// The methods the route takes, for 405 (RFC 9110: the `Allow` header).
    pub allow: Option<String>,
    /// `Set-Cookie` values (the console's session).
    pub cookies: Vec<String>,
}

type ApiResult = Result<(u16, Value), ApiError>;

/// A hook run after every successful change.
type OnChange = Box<dyn Fn(&Store) + Send + Sync>;

/// The MCP servers in force and whether each passes its health check (a reload changes them).
type McpView = Box<dyn Fn() -> Vec<(crate::config::McpServer, bool)> + Send + Sync>;

/// The overview's figures, made by the data plane (`GET /api/overview`).
type OverviewView = Box<dyn Fn() -> Value + Send + Sync>;

/// The admin API's state.
pub struct Api {
    store: Mutex<Store>,
    /// Logins use their own connection: their bcrypt work never holds up other calls.
    login_store: Mutex<Store>,
    logins: prometheus::IntCounterVec,
    ring: Arc<Keyring>,
    sessions: Option<Sessions>,
    directory: Mutex<Directory>,
    throttle: Mutex<Throttle>,
    dummy_hash: String,
    pii_default: Setting,
    /// `[tls]`: the token endpoints' TLS policy.
    tls: crate::config::Tls,
    /// Called (with the store, still locked) after every successful change.
    on_change: Option<OnChange>,
    /// The configured MCP servers (what `GET /api/mcp/servers` lists) and their health.
    mcp_servers: Vec<crate::config::McpServer>,
    mcp_view: Option<McpView>,
    /// Held while a chain check runs (one at a time: each reads the whole log).
    verifying: Mutex<()>,
    /// The console's overview figures (health, fleet, traffic), from the running data plane.
    overview_view: Option<OverviewView>,
    router: matchit::Router<Vec<usize>>,
    /// The OpenAPI document, made once from [`ROUTES`].
    openapi: Value,
    /// The admin listener (a connect's default redirect URI).
    admin_addr: std::net::SocketAddr,
    /// `sluice_oauth_connects_total{outcome}` and `sluice_oauth_revocations_total{outcome}`.
    oauth_counters: Option<(prometheus::IntCounterVec, prometheus::IntCounterVec)>,
}

/// Who made a call, for its audit record, and the call's query parameters.
struct Caller<'a> {
    principal: Option<Principal>,
    req: &'a Request,
    query: Vec<(String, String)>,
}

impl Caller<'_> {
    /// The caller as the actor of an admin operation.
    fn actor(&self) -> super::Actor {
        super::Actor {
            id: match &self.principal {
                Some(p) => format!("user:{}", p.user_id),
                None => "anonymous".into(),
            },
            source_ip: self.req.peer.map(|ip| ip.to_string()),
            user_agent: self.req.user_agent.clone(),
            request_id: Some(self.req.request_id.clone()),
        }
    }

    fn record(&self, action: &str, org: Option<&str>) -> Record {
        self.actor().record(action, org)
    }

    /// The query parameter `name` (the first one).
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn principal(&self) -> Result<&Principal, ApiError> {
        self.principal.as_ref().ok_or_else(bad_token)
    }
}

impl Api {
    /// The API over its own store connection. Without `sessions` (no `SLUICE_JWT_SECRET`)
    /// every `/api/*` call but the OpenAPI document answers 503 `admin_api_disabled`.
    pub fn new(
        (store, login_store): (Store, Store),
        ring: Arc<Keyring>,
        sessions: Option<Sessions>,
        cfg: &crate::config::Config,
        logins: prometheus::IntCounterVec,
    ) -> Api {
        Api {
            store: Mutex::new(store),
            login_store: Mutex::new(login_store),
            logins,
            ring,
            sessions,
            directory: Mutex::new(Directory::default()),
            throttle: Mutex::new(Throttle::new(
                cfg.admin.login_failures_per_ip,
                cfg.admin.login_failures_per_account,
                cfg.admin.login_window,
            )),
            dummy_hash: users::dummy_hash(),
            pii_default: if cfg.pii.default_on {
                Setting::On
            } else {
                Setting::Off
            },
            on_change: None,
            tls: cfg.tls.clone(),
            mcp_servers: cfg.mcp_servers.clone(),
            mcp_view: None,
            overview_view: None,
            verifying: Mutex::new(()),
            router: router(),
            openapi: openapi(),
            admin_addr: cfg.listen.admin,
            oauth_counters: None,
        }
    }

    /// Count connects and revocations in these (`sluice_oauth_connects_total`,
    /// `sluice_oauth_revocations_total`).
    pub fn oauth_counters(
        mut self,
        connects: prometheus::IntCounterVec,
        revocations: prometheus::IntCounterVec,
    ) -> Api {
        self.oauth_counters = Some((connects, revocations));
        self
    }

    /// List the MCP servers in force with `f`, with their health (the data plane's config
    /// and health checks, which a reload changes).
    pub fn mcp_view(
        mut self,
        f: impl Fn() -> Vec<(crate::config::McpServer, bool)> + Send + Sync + 'static,
    ) -> Api {
        self.mcp_view = Some(Box::new(f));
        self
    }

    /// Answer `GET /api/overview` with what `f` makes (health, fleet, traffic figures).
    pub fn overview_view(mut self, f: impl Fn() -> Value + Send + Sync + 'static) -> Api {
        self.overview_view = Some(Box::new(f));
        self
    }

    /// Run `f` after every successful change, before the answer goes out (serve uses it to
    /// reload the data plane's key snapshot: a key created or revoked through the API is
    /// usable or refused by the time the call returns).
    pub fn on_change(mut self, f: impl Fn(&Store) + Send + Sync + 'static) -> Api {
        self.on_change = Some(Box::new(f));
        self
    }

    /// Answer one request (blocking: bcrypt and SQLite; run it off the async executor).
    pub fn handle(&self, req: &Request) -> Reply {
        match self.route(req) {
            Ok((status, mut body)) => {
                let cookies = self.cookies(req, &mut body);
                Reply {
                    status,
                    body,
                    retry_after: None,
                    allow: None,
                    cookies,
                }
            }
            Err(e) => Reply {
                status: e.status(),
                body: crate::error::body(e.status(), e.code.as_str(), &e.message, &req.request_id),
                retry_after: e.retry_after,
                allow: (e.code == Code::MethodNotAllowed).then(|| self.methods(&req.path)),
                // A console that signs out of a session already ended still loses its cookies.
                cookies: if req.cookie_mode() && req.path.trim_end_matches('/') == LOGOUT_PATH {
                    clear_cookies(req)
                } else {
                    Vec::new()
                },
            },
        }
    }

    /// For the console (cookie mode), a session token in an answer (login, password change)
    /// becomes the `HttpOnly` session cookie and leaves the body, which gets the session's
    /// CSRF token instead; a logout clears both cookies.
    fn cookies(&self, req: &Request, body: &mut Value) -> Vec<String> {
        let Some(sessions) = self.sessions.as_ref().filter(|_| req.cookie_mode()) else {
            return Vec::new();
        };
        if req.path.trim_end_matches('/') == LOGOUT_PATH {
            return clear_cookies(req);
        }
        let secure = if req.tls { "; Secure" } else { "" };
        let Some(obj) = body.as_object_mut() else {
            return Vec::new();
        };
        let Some(Value::String(token)) = obj.remove("token") else {
            return Vec::new();
        };
        let token = zeroize::Zeroizing::new(token);
        obj.remove("token_type");
        let Some(claims) = sessions.verify(&token) else {
            return Vec::new();
        };
        let (token, claims) = sessions.console_session(&claims);
        let token = zeroize::Zeroizing::new(token);
        let csrf = sessions.csrf(&claims);
        obj.insert("csrf_token".into(), csrf.clone().into());
        let age = sessions.ttl().as_secs();
        vec![
            format!(
                "{SESSION_COOKIE}={}; Path=/api; Max-Age={age}; HttpOnly; SameSite=Strict{secure}",
                token.as_str()
            ),
            format!("{CSRF_COOKIE}={csrf}; Path=/; Max-Age={age}; SameSite=Strict{secure}"),
        ]
    }

    /// The methods the route at `path` takes (`GET, POST`).
    fn methods(&self, path: &str) -> String {
        let path = match path.trim_end_matches('/') {
            "" => "/",
            p => p,
        };
        let mut methods: Vec<&str> = self
            .router
            .at(path)
            .map(|m| m.value.iter().map(|i| ROUTES[*i].method).collect())
            .unwrap_or_default();
        methods.dedup();
        methods.join(", ")
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn authenticate(&self, store: &Store, req: &Request) -> Result<Principal, ApiError> {
        let sessions = self.sessions.as_ref().ok_or_else(disabled)?;
        let (token, cookie) = req.session_token().ok_or_else(bad_token)?;
        let claims = sessions.verify(token).ok_or_else(bad_token)?;
        // A console session is good in its cookie only.
        if claims.cm && !cookie {
            return Err(bad_token());
        }
        // The console's cookie is sent by the browser on its own: a change needs the CSRF
        // token only the console's own page can read, and must not come from another site.
        if cookie && !matches!(req.method.as_str(), "GET" | "HEAD") {
            let cross_site = req.fetch_site.as_deref().is_some_and(|s| {
                !s.eq_ignore_ascii_case("same-origin") && !s.eq_ignore_ascii_case("none")
            });
            let token_ok = req
                .csrf
                .as_deref()
                .is_some_and(|t| sessions.csrf_ok(&claims, t));
            if cross_site || !token_ok {
                return Err(err(
                    Code::CsrfFailed,
                    "A change made with the console's session cookie needs its CSRF token (X-Sluice-CSRF) and must come from the console's own page.",
                ));
            }
        }
        let mut dir = self.directory.lock().unwrap_or_else(|p| p.into_inner());
        dir.refresh(store)?;
        dir.principal(&claims).ok_or_else(bad_token)
    }

    fn changed(&self) {
        self.directory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .mark_dirty();
    }

    fn route(&self, req: &Request) -> ApiResult {
        let path = match req.path.trim_end_matches('/') {
            "" => "/",
            p => p,
        };
        let hit = self.router.at(path).ok();
        let is_doc = hit
            .as_ref()
            .is_some_and(|m| m.value.iter().any(|i| ROUTES[*i].pattern == OPENAPI_PATH));
        // The callback works without sessions too (`sluice credentials connect` waits for it).
        let is_callback = hit
            .as_ref()
            .is_some_and(|m| m.value.iter().any(|i| ROUTES[*i].pattern == CALLBACK_PATH));
        if !is_doc && !is_callback && self.sessions.is_none() {
            return Err(disabled());
        }
        let route = hit.as_ref().and_then(|m| {
            m.value
                .iter()
                .map(|i| &ROUTES[*i])
                .find(|r| r.method == req.method)
        });
        let mut c = Caller {
            principal: None,
            req,
            query: query_params(req.query.as_deref()),
        };
        if let Some(Route {
            handler: Handler::Open(f),
            ..
        }) = route
        {
            return f(self, &c);
        }
        let public_path = hit
            .as_ref()
            .is_some_and(|m| m.value.iter().all(|i| ROUTES[*i].access == Access::Public));
        if public_path {
            return Err(not_allowed());
        }
        // Everything else needs a session, unknown routes included (no route map for
        // anonymous callers).
        let store = self.store();
        c.principal = Some(self.authenticate(&store, req)?);
        let Some(hit) = hit else {
            return Err(err(Code::NotFound, "No such route."));
        };
        let route = route.ok_or_else(not_allowed)?;
        let session = match route.handler {
            Handler::Session(h) => Some(h),
            Handler::Unlocked(_) => None,
            Handler::Open(_) => return Err(not_allowed()),
        };
        let params = Params(hit.params.iter().collect());
        let org = match route.access {
            Access::QueryOrg(_) => c.param("org_id"),
            _ => Some(params.get("org_id")).filter(|o| !o.is_empty()),
        };
        route.access.check(c.principal.as_ref(), org)?;
        let (r, store) = match (session, route.handler) {
            (Some(h), _) => (h(self, &store, &c, &params), store),
            (None, Handler::Unlocked(h)) => {
                drop(store);
                let r = h(self, &c, &params);
                (r, self.store())
            }
            (None, _) => return Err(not_allowed()),
        };
        if r.is_ok() && route.method != "GET" {
            self.changed();
            if let Some(f) = &self.on_change {
                f(&store);
            }
        }
        r
    }
}
