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

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::session::{Directory, Principal, Sessions, Throttle};
use super::users::{self, Role};
use super::{Error, KeySetting, Setting};
use crate::audit::{self, Record};
use crate::residency::Region;
use crate::store::{self, Store};
use crate::vault::Keyring;

/// The OpenAPI document served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route: method and path pattern (`{x}` is a path parameter), as in the OpenAPI document.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/openapi.json"),
    ("POST", "/api/auth/login"),
    ("GET", "/api/auth/me"),
    ("POST", "/api/auth/password"),
    ("POST", "/api/auth/totp"),
    ("POST", "/api/auth/logout"),
    ("GET", "/api/orgs"),
    ("POST", "/api/orgs"),
    ("GET", "/api/orgs/{org_id}"),
    ("PATCH", "/api/orgs/{org_id}"),
    ("DELETE", "/api/orgs/{org_id}"),
    ("GET", "/api/orgs/{org_id}/keys"),
    ("POST", "/api/orgs/{org_id}/keys"),
    ("PATCH", "/api/orgs/{org_id}/keys/{key_id}"),
    ("DELETE", "/api/orgs/{org_id}/keys/{key_id}"),
    ("GET", "/api/orgs/{org_id}/users"),
    ("POST", "/api/orgs/{org_id}/users"),
    ("PATCH", "/api/orgs/{org_id}/users/{user_id}"),
    ("DELETE", "/api/orgs/{org_id}/users/{user_id}"),
    ("POST", "/api/orgs/{org_id}/users/{user_id}/revoke-sessions"),
    ("GET", "/api/credentials"),
    ("PUT", "/api/credentials/{name}"),
    ("DELETE", "/api/credentials/{name}"),
    ("GET", "/api/audit"),
    ("GET", "/api/mcp/servers"),
];

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
    pub body: Vec<u8>,
}

impl Drop for Request {
    /// Bodies carry passwords, codes and credentials: wipe them once handled.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.body);
        if let Some(a) = self.authorization.as_mut() {
            zeroize::Zeroize::zeroize(a);
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
}

/// A refusal with a stable code.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

fn err(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        code,
        message: message.into(),
        retry_after: None,
    }
}

fn denied() -> ApiError {
    err(
        403,
        "permission_denied",
        "Your role does not allow this action.",
    )
}

fn bad_token() -> ApiError {
    err(
        401,
        "invalid_token",
        "Missing, invalid, expired or revoked session token. Log in again at POST /api/auth/login.",
    )
}

const INVALID_CREDENTIALS: &str = "Invalid email, password or second factor.";

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match e {
            Error::Invalid(m) => err(400, "invalid_request", m),
            Error::Store(store::Error::NotFound { what, .. }) => {
                err(404, "not_found", format!("No such {what}."))
            }
            Error::Store(store::Error::Duplicate { what, .. }) => {
                err(409, "conflict", format!("That {what} already exists."))
            }
            other => {
                tracing::error!(error = %other, "admin API operation failed");
                err(500, "internal_error", "Internal error; see the sluice log.")
            }
        }
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> ApiError {
        ApiError::from(Error::Store(e))
    }
}

type ApiResult = Result<(u16, Value), ApiError>;

/// A hook run after every successful change.
type OnChange = Box<dyn Fn(&Store) + Send + Sync>;

/// Whether the MCP server at a config index passes its health check.
type McpHealth = Box<dyn Fn(usize) -> bool + Send + Sync>;

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
    /// Called (with the store, still locked) after every successful change.
    on_change: Option<OnChange>,
    /// The configured MCP servers (what `GET /api/mcp/servers` lists) and their health.
    mcp_servers: Vec<crate::config::McpServer>,
    mcp_health: Option<McpHealth>,
}

/// Who made a call, for its audit record.
struct Caller<'a> {
    principal: Option<Principal>,
    req: &'a Request,
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

    fn principal(&self) -> Result<&Principal, ApiError> {
        self.principal.as_ref().ok_or_else(bad_token)
    }
}

/// What a role may do in an org.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Access {
    /// Any member.
    View,
    /// Auditor and above.
    Read,
    /// Admin and above.
    Manage,
    /// Owner.
    Own,
}

fn level(role: Role) -> Access {
    match role {
        Role::Member => Access::View,
        Role::Auditor => Access::Read,
        Role::Admin => Access::Manage,
        Role::Owner => Access::Own,
    }
}

fn allow(p: &Principal, org_id: &str, need: Access) -> Result<(), ApiError> {
    if p.operator {
        return Ok(());
    }
    match (&p.org_id, p.role) {
        (Some(o), Some(r)) if o == org_id && level(r) >= need => Ok(()),
        _ => Err(denied()),
    }
}

fn operator_only(p: &Principal) -> Result<(), ApiError> {
    if p.operator {
        Ok(())
    } else {
        Err(denied())
    }
}

fn body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let json_type = req.content_type.as_deref().is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json_type {
        return Err(err(
            415,
            "unsupported_media_type",
            "Send a JSON body with Content-Type: application/json.",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(&req.body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        // serde's messages can quote the offending value (a password); only field names are
        // echoed.
        let inner = e.inner().to_string();
        let path = e.path().to_string();
        let message = if inner.starts_with("missing field") || inner.starts_with("unknown field") {
            inner
                .split(" at line")
                .next()
                .unwrap_or_default()
                .to_string()
        } else if path == "." {
            "the body must be a JSON object".to_string()
        } else {
            format!("invalid value for `{path}`")
        };
        err(
            400,
            "invalid_body",
            format!("Invalid JSON body: {message}."),
        )
    })
}

fn query_params(q: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = q else { return Vec::new() };
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| {
                urlencoding::decode(&s.replace('+', " "))
                    .map(|c| c.into_owned())
                    .unwrap_or_default()
            };
            (dec(k), dec(v))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn region(s: Option<&str>) -> Result<Option<Region>, ApiError> {
    s.map(|r| {
        r.parse::<Region>().map_err(|_| {
            err(
                400,
                "invalid_request",
                "Unknown region: use us, eu or apac.",
            )
        })
    })
    .transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
    /// A string, or a number (leading zeros restored: `12345` is `"012345"`).
    #[serde(default, deserialize_with = "code_string")]
    totp: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
}

fn code_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Code {
        Text(String),
        Number(u32),
    }
    Ok(match Option::<Code>::deserialize(d)? {
        None => None,
        Some(Code::Text(s)) => Some(s),
        Some(Code::Number(n)) => Some(format!("{n:06}")),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Re-enrolling TOTP: the password and, when a TOTP is enrolled, a current code or a
/// recovery code (a stolen session plus the password must not be enough to move the second
/// factor to the attacker's device).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reauth {
    password: String,
    #[serde(default, deserialize_with = "code_string")]
    totp: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrg {
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    rpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    tpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_tokens: Option<Option<u64>>,
    #[serde(default)]
    budget_period: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    pii: Option<String>,
    #[serde(default)]
    secrets: Option<String>,
    #[serde(default)]
    response_redaction: Option<String>,
    #[serde(default)]
    mcp_tools: Option<String>,
    #[serde(default)]
    mcp_resources: Option<String>,
    #[serde(default)]
    mcp_prompts: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgPatch {
    #[serde(default, deserialize_with = "nullable")]
    rpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    tpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_tokens: Option<Option<u64>>,
    #[serde(default)]
    budget_period: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    pii: Option<String>,
    #[serde(default)]
    secrets: Option<String>,
    #[serde(default)]
    response_redaction: Option<String>,
    #[serde(default)]
    mcp_tools: Option<String>,
    #[serde(default)]
    mcp_resources: Option<String>,
    #[serde(default)]
    mcp_prompts: Option<String>,
}

/// Changes to a key; a list `"inherit"` goes back to the org's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyPatch {
    #[serde(default, deserialize_with = "nullable")]
    rpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    tpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_tokens: Option<Option<u64>>,
    #[serde(default)]
    budget_period: Option<String>,
    #[serde(default)]
    pii: Option<String>,
    #[serde(default)]
    secrets: Option<String>,
    #[serde(default)]
    response_redaction: Option<String>,
    #[serde(default)]
    mcp_tools: Option<String>,
    #[serde(default)]
    mcp_resources: Option<String>,
    #[serde(default)]
    mcp_prompts: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default = "default_key_name")]
    name: String,
    #[serde(default)]
    pii: Option<String>,
    #[serde(default)]
    secrets: Option<String>,
    #[serde(default)]
    response_redaction: Option<String>,
    #[serde(default)]
    mcp_tools: Option<String>,
    #[serde(default)]
    mcp_resources: Option<String>,
    #[serde(default)]
    mcp_prompts: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    rpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    tpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_tokens: Option<Option<u64>>,
    #[serde(default)]
    budget_period: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// A field that may be absent (`None`), `null` (`Some(None)`: remove) or a value.
fn nullable<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn default_key_name() -> String {
    "default".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    email: String,
    password: String,
    role: Role,
    #[serde(default)]
    totp: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberPatch {
    role: Role,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialBody {
    secret: String,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    oauth: Option<crate::auth::oauth::Settings>,
    #[serde(default = "yes")]
    verify: bool,
}

fn yes() -> bool {
    true
}

/// An org setting field: `"on"` or `"off"`.
fn setting(field: &str, s: Option<&str>) -> Result<Option<Setting>, ApiError> {
    s.map(|v| {
        Setting::parse(v).ok_or_else(|| {
            err(
                400,
                "invalid_request",
                format!("{field} must be \"on\" or \"off\"."),
            )
        })
    })
    .transpose()
}

/// MCP allow-list fields.
fn mcp_lists(
    tools: Option<&str>,
    resources: Option<&str>,
    prompts: Option<&str>,
) -> Result<super::McpLists, ApiError> {
    let parse = |what: &str, v: Option<&str>| v.map(|s| super::mcp_list(what, s)).transpose();
    Ok(super::McpLists {
        tools: parse("mcp_tools", tools)?,
        resources: parse("mcp_resources", resources)?,
        prompts: parse("mcp_prompts", prompts)?,
    })
}

/// A key's MCP list change: `"inherit"` (back to the org's) or a list.
fn key_list(
    what: &str,
    v: Option<&str>,
) -> Result<Option<Option<crate::mcp::AllowList>>, ApiError> {
    Ok(match v {
        None => None,
        Some("inherit") => Some(None),
        Some(s) => Some(Some(super::mcp_list(what, s)?)),
    })
}

/// A key setting field: `"on"`, `"off"` or `"inherit"` (the default).
fn key_setting(field: &str, s: Option<&str>) -> Result<KeySetting, ApiError> {
    s.map_or(Ok(KeySetting::Inherit), |v| {
        KeySetting::parse(v).ok_or_else(|| {
            err(
                400,
                "invalid_request",
                format!("{field} must be \"on\", \"off\" or \"inherit\"."),
            )
        })
    })
}

fn to_value(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
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
            mcp_servers: cfg.mcp_servers.clone(),
            mcp_health: None,
        }
    }

    /// Run `f` after every successful change, before the answer goes out (serve uses it to
    /// reload the data plane's key snapshot: a key created or revoked through the API is
    /// usable or refused by the time the call returns).
    /// Report MCP servers' health with `f` (the data plane's health checks).
    pub fn mcp_health(mut self, f: impl Fn(usize) -> bool + Send + Sync + 'static) -> Api {
        self.mcp_health = Some(Box::new(f));
        self
    }

    pub fn on_change(mut self, f: impl Fn(&Store) + Send + Sync + 'static) -> Api {
        self.on_change = Some(Box::new(f));
        self
    }

    /// Answer one request (blocking: bcrypt and SQLite; run it off the async executor).
    pub fn handle(&self, req: &Request) -> Reply {
        match self.route(req) {
            Ok((status, body)) => Reply {
                status,
                body,
                retry_after: None,
            },
            Err(e) => Reply {
                status: e.status,
                body: json!({"error": {
                    "message": e.message,
                    "type": match e.status {
                        401 => "authentication_error",
                        403 => "permission_error",
                        429 => "rate_limit_error",
                        s if s >= 500 => "server_error",
                        _ => "invalid_request_error",
                    },
                    "param": null,
                    "code": e.code,
                    "request_id": req.request_id,
                }}),
                retry_after: e.retry_after,
            },
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn authenticate(&self, store: &Store, req: &Request) -> Result<Principal, ApiError> {
        let sessions = self.sessions.as_ref().ok_or_else(disabled)?;
        let token = req
            .authorization
            .as_deref()
            .and_then(|h| {
                let (scheme, rest) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .ok_or_else(bad_token)?;
        let claims = sessions.verify(token).ok_or_else(bad_token)?;
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
        let path = req.path.trim_end_matches('/');
        let segs: Vec<&str> = path.split('/').skip(1).collect();
        let m = req.method.as_str();
        if segs.first() != Some(&"api") {
            return Err(err(404, "not_found", "No such route."));
        }
        let rest = &segs[1..];
        if rest == ["openapi.json"] {
            return if m == "GET" {
                Ok((200, serde_json::from_str(OPENAPI).unwrap_or(Value::Null)))
            } else {
                Err(not_allowed())
            };
        }
        if self.sessions.is_none() {
            return Err(disabled());
        }
        if rest == ["auth", "login"] {
            return if m == "POST" {
                self.login(req)
            } else {
                Err(not_allowed())
            };
        }
        // Everything else needs a session.
        let store = self.store();
        let principal = self.authenticate(&store, req)?;
        let c = Caller {
            principal: Some(principal),
            req,
        };
        let r = match (m, rest) {
            ("GET", ["auth", "me"]) => self.me(&store, &c),
            ("POST", ["auth", "password"]) => self.change_password(&store, &c),
            ("POST", ["auth", "totp"]) => self.reenroll(&store, &c),
            ("POST", ["auth", "logout"]) => self.logout(&store, &c),
            ("GET", ["orgs"]) => self.list_orgs(&store, &c),
            ("POST", ["orgs"]) => self.create_org(&store, &c),
            ("GET", ["orgs", id]) => self.get_org(&store, &c, id),
            ("PATCH", ["orgs", id]) => self.update_org(&store, &c, id),
            ("DELETE", ["orgs", id]) => self.delete_org(&store, &c, id),
            ("GET", ["orgs", id, "keys"]) => self.list_keys(&store, &c, id),
            ("POST", ["orgs", id, "keys"]) => self.create_key(&store, &c, id),
            ("PATCH", ["orgs", id, "keys", kid]) => self.update_key(&store, &c, id, kid),
            ("DELETE", ["orgs", id, "keys", kid]) => self.revoke_key(&store, &c, id, kid),
            ("GET", ["orgs", id, "users"]) => self.list_users(&store, &c, id),
            ("POST", ["orgs", id, "users"]) => self.create_member(&store, &c, id),
            ("PATCH", ["orgs", id, "users", uid]) => self.update_member(&store, &c, id, uid),
            ("DELETE", ["orgs", id, "users", uid]) => self.delete_member(&store, &c, id, uid),
            ("POST", ["orgs", id, "users", uid, "revoke-sessions"]) => {
                self.revoke_member(&store, &c, id, uid)
            }
            ("GET", ["credentials"]) => self.list_credentials(&store, &c),
            ("PUT", ["credentials", name]) => self.set_credential(&store, &c, name),
            ("DELETE", ["credentials", name]) => self.delete_credential(&store, &c, name),
            ("GET", ["audit"]) => self.audit(&store, &c),
            ("GET", ["mcp", "servers"]) => self.mcp_servers(&c),
            _ => {
                let known = ROUTES.iter().any(|(_, p)| matches_pattern(p, path));
                Err(if known {
                    not_allowed()
                } else {
                    err(404, "not_found", "No such route.")
                })
            }
        };
        if r.is_ok() && m != "GET" {
            self.changed();
            if let Some(f) = &self.on_change {
                f(&store);
            }
        }
        r
    }

    // ---- auth ----

    fn login(&self, req: &Request) -> ApiResult {
        let sessions = self.sessions.as_ref().ok_or_else(disabled)?;
        let l: Login = body(req)?;
        let ip = req.peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        // The slot is taken before bcrypt and stays a failure unless the login succeeds, so
        // parallel attempts cannot outrun the limit.
        let reservation = self
            .throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reserve(ip, &l.email);
        let reservation = match reservation {
            Ok(r) => r,
            Err(wait) => {
                self.logins.with_label_values(&["throttled"]).inc();
                return Err(ApiError {
                    retry_after: Some(wait),
                    ..err(
                        429,
                        "rate_limited",
                        format!("Too many failed logins; retry in {wait} s."),
                    )
                });
            }
        };
        let store = self.login_store.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = users::login(
            &store,
            &self.ring,
            &self.dummy_hash,
            &users::Attempt {
                email: &l.email,
                password: &l.password,
                totp: l.totp.as_deref(),
                recovery_code: l.recovery_code.as_deref(),
            },
        );
        let caller = Caller {
            principal: None,
            req,
        };
        match outcome {
            Ok(user) => {
                self.logins.with_label_values(&["success"]).inc();
                self.throttle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .succeed(reservation);
                let mut r = caller.record("auth.login", user.org_id.as_deref());
                r.actor = format!("user:{}", user.id);
                r.target_id = Some(user.id.clone());
                r.details = json!({"second_factor": if user.totp_sealed.is_none() { "none" } else if l.recovery_code.as_deref().is_some_and(|c| !c.trim().is_empty()) { "recovery_code" } else { "totp" }});
                audit::append(&store, &mut audit::OrgKeys::new(&self.ring), &[r])?;
                let token = sessions.issue(&user);
                Ok((
                    200,
                    json!({"token": token, "token_type": "Bearer",
                           "expires_in": sessions.ttl().as_secs(),
                           "user": to_value(&users::view(&store, user)?)}),
                ))
            }
            Err(refused) => {
                self.logins
                    .with_label_values(&[refused.reason.as_str()])
                    .inc();
                // The reservation already counts as this failure.
                drop(reservation);
                let mut r = caller.record("auth.login", refused.org_id.as_deref());
                r.outcome = "failure";
                r.target_id = refused.user_id.clone();
                r.details = json!({"reason": refused.reason.as_str()});
                // Fail closed: a login attempt that cannot be recorded is not answered as such.
                audit::append(&store, &mut audit::OrgKeys::new(&self.ring), &[r])?;
                if refused.reason == users::Failure::Internal {
                    return Err(err(
                        500,
                        "internal_error",
                        "Internal error; see the sluice log.",
                    ));
                }
                Err(err(401, "invalid_credentials", INVALID_CREDENTIALS))
            }
        }
    }

    fn me(&self, store: &Store, c: &Caller) -> ApiResult {
        let p = c.principal()?;
        Ok((200, to_value(&users::view(store, store.user(&p.user_id)?)?)))
    }

    /// Re-check the caller's password before a sensitive change; failures count towards the
    /// same throttle as logins (a stolen token must not become a password oracle).
    fn check_own_password(
        &self,
        store: &Store,
        c: &Caller,
        password: &str,
    ) -> Result<(), ApiError> {
        self.check_own(store, c, password, None)
    }

    /// [`Self::check_own_password`], plus the second factor (`(totp, recovery_code)`) when
    /// `second` is given: a current TOTP code or an unused recovery code (burnt), exactly as
    /// a login checks them. An account without TOTP needs the password only.
    fn check_own(
        &self,
        store: &Store,
        c: &Caller,
        password: &str,
        second: Option<(Option<&str>, Option<&str>)>,
    ) -> Result<(), ApiError> {
        let p = c.principal()?;
        let u = store.user(&p.user_id)?;
        let ip = c.req.peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let reservation = self
            .throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reserve(ip, &u.email)
            .map_err(|wait| ApiError {
                retry_after: Some(wait),
                ..err(
                    429,
                    "rate_limited",
                    format!("Too many failed attempts; retry in {wait} s."),
                )
            })?;
        let ok = match second {
            None => {
                password.len() <= users::MAX_PASSWORD_BYTES
                    && bcrypt::verify(password, &u.password_hash).unwrap_or(false)
            }
            Some((totp, recovery_code)) => users::login(
                store,
                &self.ring,
                &self.dummy_hash,
                &users::Attempt {
                    email: &u.email,
                    password,
                    totp,
                    recovery_code,
                },
            )
            .is_ok_and(|v| v.id == u.id),
        };
        if ok {
            self.throttle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .succeed(reservation);
            Ok(())
        } else {
            Err(err(401, "invalid_credentials", INVALID_CREDENTIALS))
        }
    }

    fn change_password(&self, store: &Store, c: &Caller) -> ApiResult {
        let p = c.principal()?.clone();
        let b: PasswordChange = body(c.req)?;
        self.check_own_password(store, c, &b.current_password)?;
        let mut rec = c.record("user.password", p.org_id.as_deref());
        rec.target_id = Some(p.user_id.clone());
        super::audited(
            store,
            &self.ring,
            rec,
            |s| users::set_password(s, &p.user_id, &b.new_password),
            |_, _| {},
        )?;
        let user = store.user(&p.user_id)?;
        let sessions = self.sessions.as_ref().ok_or_else(disabled)?;
        Ok((
            200,
            json!({"password_changed": true, "sessions_revoked": true,
                   "token": sessions.issue(&user), "token_type": "Bearer",
                   "expires_in": sessions.ttl().as_secs()}),
        ))
    }

    fn reenroll(&self, store: &Store, c: &Caller) -> ApiResult {
        let p = c.principal()?.clone();
        let b: Reauth = body(c.req)?;
        self.check_own(
            store,
            c,
            &b.password,
            Some((b.totp.as_deref(), b.recovery_code.as_deref())),
        )?;
        let mut rec = c.record("user.totp_enroll", p.org_id.as_deref());
        rec.target_id = Some(p.user_id.clone());
        let e = super::audited(
            store,
            &self.ring,
            rec,
            |s| {
                let u = s.user(&p.user_id)?;
                users::enroll_totp(s, &self.ring, &u)
            },
            |_, _| {},
        )?;
        Ok((200, to_value(&e)))
    }

    fn logout(&self, store: &Store, c: &Caller) -> ApiResult {
        let p = c.principal()?.clone();
        let mut rec = c.record("user.revoke_sessions", p.org_id.as_deref());
        rec.target_id = Some(p.user_id.clone());
        super::audited(
            store,
            &self.ring,
            rec,
            |s| users::revoke_sessions(s, &p.user_id),
            |_, _| {},
        )?;
        Ok((200, json!({"sessions_revoked": true})))
    }

    // ---- orgs ----

    fn list_orgs(&self, store: &Store, c: &Caller) -> ApiResult {
        let p = c.principal()?;
        let orgs: Vec<store::Org> = if p.operator {
            store.orgs()?
        } else {
            p.org_id
                .as_deref()
                .map(|o| store.org(o))
                .transpose()?
                .into_iter()
                .collect()
        };
        Ok((200, json!({ "data": orgs })))
    }

    fn create_org(&self, store: &Store, c: &Caller) -> ApiResult {
        operator_only(c.principal()?)?;
        let b: NewOrg = body(c.req)?;
        let spec = super::OrgSpec {
            name: b.name,
            region: region(b.region.as_deref())?,
            pii: setting("pii", b.pii.as_deref())?,
            secrets: setting("secrets", b.secrets.as_deref())?,
            response_redaction: setting("response_redaction", b.response_redaction.as_deref())?,
            mcp: mcp_lists(
                b.mcp_tools.as_deref(),
                b.mcp_resources.as_deref(),
                b.mcp_prompts.as_deref(),
            )?,
            limits: super::limits_change(
                b.rpm,
                b.tpm,
                b.budget_tokens,
                b.budget_period.as_deref(),
            )?,
        };
        let org =
            super::create_org_as(store, &self.ring, &c.actor(), &spec, self.pii_default, None)?;
        Ok((201, to_value(&org)))
    }

    fn get_org(&self, store: &Store, c: &Caller, id: &str) -> ApiResult {
        allow(c.principal()?, id, Access::View)?;
        Ok((200, to_value(&store.org(id)?)))
    }

    fn update_org(&self, store: &Store, c: &Caller, id: &str) -> ApiResult {
        allow(c.principal()?, id, Access::Manage)?;
        let b: OrgPatch = body(c.req)?;
        let change = super::OrgChange {
            region: region(b.region.as_deref())?,
            pii: setting("pii", b.pii.as_deref())?,
            secrets: setting("secrets", b.secrets.as_deref())?,
            response_redaction: setting("response_redaction", b.response_redaction.as_deref())?,
            mcp: mcp_lists(
                b.mcp_tools.as_deref(),
                b.mcp_resources.as_deref(),
                b.mcp_prompts.as_deref(),
            )?,
            limits: super::limits_change(
                b.rpm,
                b.tpm,
                b.budget_tokens,
                b.budget_period.as_deref(),
            )?,
        };
        let org = super::update_org_as(store, &self.ring, &c.actor(), id, &change)?;
        Ok((200, to_value(&org)))
    }

    fn delete_org(&self, store: &Store, c: &Caller, id: &str) -> ApiResult {
        allow(c.principal()?, id, Access::Own)?;
        let params = query_params(c.req.query.as_deref());
        if param(&params, "hard") != Some("true") {
            return Err(err(
                400,
                "hard_delete_required",
                "Deleting an org removes its keys and users and shreds its audit details; it cannot be undone. Repeat with ?hard=true.",
            ));
        }
        let mut rec = c.record("org.delete", Some(id));
        // The final record of a forgotten org holds no personal data.
        rec.source_ip = None;
        rec.user_agent = None;
        let (d, purged) = super::hard_delete(store, &self.ring, id, rec)?;
        let mut v = to_value(&d);
        v["wal_purged"] = purged.into();
        Ok((200, v))
    }

    // ---- keys ----

    fn list_keys(&self, store: &Store, c: &Caller, org: &str) -> ApiResult {
        allow(c.principal()?, org, Access::Read)?;
        Ok((200, json!({ "data": super::list_keys(store, Some(org))? })))
    }

    fn create_key(&self, store: &Store, c: &Caller, org: &str) -> ApiResult {
        allow(c.principal()?, org, Access::Manage)?;
        let b: NewKey = body(c.req)?;
        let limits =
            super::limits_change(b.rpm, b.tpm, b.budget_tokens, b.budget_period.as_deref())?;
        let spec = super::KeySpec {
            org_id: org.to_string(),
            name: b.name,
            pii: key_setting("pii", b.pii.as_deref())?,
            secrets: key_setting("secrets", b.secrets.as_deref())?,
            response_redaction: key_setting("response_redaction", b.response_redaction.as_deref())?,
            mcp: mcp_lists(
                b.mcp_tools.as_deref(),
                b.mcp_resources.as_deref(),
                b.mcp_prompts.as_deref(),
            )?,
            region: region(b.region.as_deref())?,
            rpm: limits.rpm.flatten(),
            tpm: limits.tpm.flatten(),
            budget: limits.budget.flatten(),
            expires: b.expires_at,
        };
        let k = super::create_key_as(store, &self.ring, &c.actor(), &spec, None)?;
        Ok((201, to_value(&k)))
    }

    fn update_key(&self, store: &Store, c: &Caller, org: &str, kid: &str) -> ApiResult {
        allow(c.principal()?, org, Access::Manage)?;
        if !store.keys(Some(org))?.iter().any(|k| k.id == kid) {
            return Err(err(404, "not_found", "No such key in this org."));
        }
        let b: KeyPatch = body(c.req)?;
        let opt = |field: &str, v: Option<&str>| v.map(|x| key_setting(field, Some(x))).transpose();
        let change = super::KeyChange {
            pii: opt("pii", b.pii.as_deref())?,
            secrets: opt("secrets", b.secrets.as_deref())?,
            response_redaction: opt("response_redaction", b.response_redaction.as_deref())?,
            mcp_tools: key_list("mcp_tools", b.mcp_tools.as_deref())?,
            mcp_resources: key_list("mcp_resources", b.mcp_resources.as_deref())?,
            mcp_prompts: key_list("mcp_prompts", b.mcp_prompts.as_deref())?,
            limits: super::limits_change(
                b.rpm,
                b.tpm,
                b.budget_tokens,
                b.budget_period.as_deref(),
            )?,
        };
        let k = super::update_key_as(store, &self.ring, &c.actor(), kid, &change)?;
        Ok((200, to_value(&k)))
    }

    fn revoke_key(&self, store: &Store, c: &Caller, org: &str, kid: &str) -> ApiResult {
        allow(c.principal()?, org, Access::Manage)?;
        if !store.keys(Some(org))?.iter().any(|k| k.id == kid) {
            return Err(err(404, "not_found", "No such key in this org."));
        }
        let mut rec = c.record("key.revoke", Some(org));
        rec.target_id = Some(kid.to_string());
        super::audited(
            store,
            &self.ring,
            rec,
            |s| super::revoke_key(s, kid),
            |_, _| {},
        )?;
        Ok((200, json!({"id": kid, "revoked": true})))
    }

    // ---- users ----

    fn member(&self, store: &Store, org: &str, uid: &str) -> Result<store::User, ApiError> {
        match store.user(uid) {
            Ok(u) if u.org_id.as_deref() == Some(org) => Ok(u),
            _ => Err(err(404, "not_found", "No such user in this org.")),
        }
    }

    /// Admins manage members, auditors and admins; only owners (and operators) touch owners.
    fn may_manage(
        p: &Principal,
        target_role: Option<&str>,
        new_role: Option<Role>,
    ) -> Result<(), ApiError> {
        if p.operator || p.role == Some(Role::Owner) {
            return Ok(());
        }
        if target_role == Some("owner") || new_role == Some(Role::Owner) {
            return Err(denied());
        }
        Ok(())
    }

    fn list_users(&self, store: &Store, c: &Caller, org: &str) -> ApiResult {
        allow(c.principal()?, org, Access::Manage)?;
        Ok((200, json!({ "data": users::list(store, Some(org))? })))
    }

    fn create_member(&self, store: &Store, c: &Caller, org: &str) -> ApiResult {
        let p = c.principal()?;
        allow(p, org, Access::Manage)?;
        let b: NewMember = body(c.req)?;
        Self::may_manage(p, None, Some(b.role))?;
        let new = users::NewUser {
            email: b.email,
            org_id: Some(org.to_string()),
            role: Some(b.role),
            operator: false,
            totp: b.totp,
        };
        let created = super::audited(
            store,
            &self.ring,
            c.record("user.create", Some(org)),
            |s| users::create_user(s, &self.ring, &new, &b.password),
            |u, r| {
                r.target_id = Some(u.user.user.id.clone());
                r.details = json!({"email": u.user.user.email, "role": u.user.user.role, "totp": u.totp.is_some()});
            },
        )?;
        Ok((201, to_value(&created)))
    }

    /// The shared path of every change to one member: the caller's role, the target in this
    /// org, owners only by owners, then the audited operation.
    #[allow(clippy::too_many_arguments)]
    fn on_member<T>(
        &self,
        store: &Store,
        c: &Caller,
        org: &str,
        uid: &str,
        new_role: Option<Role>,
        action: &str,
        op: impl FnOnce(&Store) -> super::Result<T>,
        describe: impl FnOnce(&T, &mut Record),
    ) -> Result<T, ApiError> {
        let p = c.principal()?;
        allow(p, org, Access::Manage)?;
        let target = self.member(store, org, uid)?;
        Self::may_manage(p, target.role.as_deref(), new_role)?;
        let mut rec = c.record(action, Some(org));
        rec.target_id = Some(uid.to_string());
        Ok(super::audited(store, &self.ring, rec, op, describe)?)
    }

    fn update_member(&self, store: &Store, c: &Caller, org: &str, uid: &str) -> ApiResult {
        allow(c.principal()?, org, Access::Manage)?;
        let b: MemberPatch = body(c.req)?;
        let v = self.on_member(
            store,
            c,
            org,
            uid,
            Some(b.role),
            "user.update",
            |s| users::set_role(s, uid, b.role),
            |v, r| r.details = json!({"role": v.user.role}),
        )?;
        Ok((200, to_value(&v)))
    }

    fn delete_member(&self, store: &Store, c: &Caller, org: &str, uid: &str) -> ApiResult {
        self.on_member(
            store,
            c,
            org,
            uid,
            None,
            "user.delete",
            |s| users::delete_user(s, uid),
            |_, _| {},
        )?;
        Ok((200, json!({"id": uid, "deleted": true})))
    }

    fn revoke_member(&self, store: &Store, c: &Caller, org: &str, uid: &str) -> ApiResult {
        self.on_member(
            store,
            c,
            org,
            uid,
            None,
            "user.revoke_sessions",
            |s| users::revoke_sessions(s, uid),
            |_, _| {},
        )?;
        Ok((200, json!({"id": uid, "sessions_revoked": true})))
    }

    // ---- credentials (sidecar-wide: operators only) ----

    fn list_credentials(&self, store: &Store, c: &Caller) -> ApiResult {
        operator_only(c.principal()?)?;
        let fp = self.ring.fingerprint();
        Ok((
            200,
            json!({ "data": super::list_credentials(store, Some(&fp))? }),
        ))
    }

    fn set_credential(&self, store: &Store, c: &Caller, name: &str) -> ApiResult {
        operator_only(c.principal()?)?;
        let b: CredentialBody = body(c.req)?;
        let mut secret = super::secret_from_input(zeroize::Zeroizing::new(b.secret.into_bytes()))?;
        let Some(settings) = b.oauth else {
            let mut rec = c.record("credential.set", None);
            rec.target_id = Some(name.to_string());
            let v = super::audited(
                store,
                &self.ring,
                rec,
                |s| super::set_credential(s, &self.ring, name, &secret, b.expires_at.as_deref()),
                |v, r| r.details = json!({"name": v.name, "key_fingerprint": v.key_fingerprint, "expires_at": v.expires_at}),
            )?;
            return Ok((200, to_value(&v)));
        };
        if b.expires_at.is_some() {
            return Err(err(
                400,
                "invalid_request",
                "expires_at does not apply to an OAuth credential (its tokens expire on their own).",
            ));
        }
        super::check_oauth(&settings)?;
        let first = if b.verify {
            let token = crate::auth::oauth::first_token(&settings, &mut secret).map_err(|e| {
                err(
                    400,
                    "oauth_token_failed",
                    format!(
                        "The token endpoint gave no token ({e}; code {}): nothing was stored.",
                        e.code()
                    ),
                )
            })?;
            Some(token)
        } else {
            None
        };
        let mut rec = c.record("credential.set_oauth", None);
        rec.target_id = Some(name.to_string());
        let v = super::audited(
            store,
            &self.ring,
            rec,
            |s| {
                super::set_oauth_credential(s, &self.ring, name, &settings, &secret, first.as_ref())
            },
            |v, r| r.details = json!({"name": v.name, "key_fingerprint": v.key_fingerprint, "oauth": v.oauth, "token_expires_at": v.token_expires_at}),
        )?;
        Ok((200, to_value(&v)))
    }

    fn delete_credential(&self, store: &Store, c: &Caller, name: &str) -> ApiResult {
        operator_only(c.principal()?)?;
        let mut rec = c.record("credential.delete", None);
        rec.target_id = Some(name.to_string());
        super::audited(
            store,
            &self.ring,
            rec,
            |s| super::delete_credential(s, name),
            |_, _| {},
        )?;
        Ok((200, json!({"name": name, "deleted": true})))
    }

    // ---- MCP servers ----

    /// The configured MCP servers and whether each passes its health check (any user: it is
    /// the sidecar's configuration, with no secret in it).
    fn mcp_servers(&self, c: &Caller) -> ApiResult {
        c.principal()?;
        let data: Vec<Value> = self
            .mcp_servers
            .iter()
            .enumerate()
            .map(|(i, m)| {
                json!({
                    "name": m.name,
                    "path": format!("/mcp/{}", m.name),
                    "url": m.url.to_string(),
                    "region": m.region.as_str(),
                    "credential": m.credential,
                    "credential_kind": match m.credential_kind {
                        crate::config::CredentialKind::Bearer => "bearer",
                        crate::config::CredentialKind::OAuth => "oauth",
                    },
                    "healthy": self.mcp_health.as_ref().map(|h| h(i)),
                })
            })
            .collect();
        Ok((200, json!({ "data": data })))
    }

    // ---- audit ----

    fn audit(&self, store: &Store, c: &Caller) -> ApiResult {
        let p = c.principal()?;
        let params = query_params(c.req.query.as_deref());
        let org = match (param(&params, "org_id"), p.operator) {
            (o, true) => o.map(String::from),
            (Some(o), false) => {
                allow(p, o, Access::Read)?;
                Some(o.to_string())
            }
            (None, false) => {
                let o = p.org_id.clone().ok_or_else(denied)?;
                allow(p, &o, Access::Read)?;
                Some(o)
            }
        };
        let limit = match param(&params, "limit") {
            None => 100,
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=1000).contains(l))
                .ok_or_else(|| err(400, "invalid_request", "limit must be 1 to 1000."))?,
        };
        let after = match param(&params, "cursor") {
            None | Some("") => 0,
            Some(a) => a
                .parse::<i64>()
                .ok()
                .filter(|a| *a >= 0)
                .ok_or_else(|| err(400, "invalid_request", "Invalid cursor."))?,
        };
        let since = param(&params, "since")
            .map(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .ok()
                    .and_then(|t| {
                        t.to_offset(time::UtcOffset::UTC)
                            .format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .ok_or_else(|| err(400, "invalid_request", "since must be an RFC 3339 time."))
            })
            .transpose()?;
        let filter = store::AuditFilter {
            org: org.as_deref(),
            since: since.as_deref(),
            action: param(&params, "action"),
            actor: param(&params, "actor"),
            outcome: param(&params, "outcome"),
        };
        let rows = store.audit_page(after, &filter, limit)?;
        let next = (rows.len() as i64 == limit)
            .then(|| rows.last().map(|r| r.seq.to_string()))
            .flatten();
        let mut keys = audit::OrgKeys::new(&self.ring);
        let data: Vec<Value> = rows
            .into_iter()
            .map(|r| {
                let r = keys.open_row(store, r);
                let mut v = to_value(&r);
                if let Some(d) = v.get_mut("details") {
                    if let Some(parsed) = d.as_str().and_then(|s| serde_json::from_str(s).ok()) {
                        *d = parsed;
                    }
                }
                v
            })
            .collect();
        Ok((200, json!({"data": data, "next_cursor": next})))
    }
}

fn not_allowed() -> ApiError {
    err(
        405,
        "method_not_allowed",
        "Method not allowed on this route.",
    )
}

fn disabled() -> ApiError {
    err(
        503,
        "admin_api_disabled",
        "The admin API is disabled: start sluice with SLUICE_JWT_SECRET (at least 32 bytes, e.g. `openssl rand -base64 48`).",
    )
}

/// Whether `path` matches a route pattern.
pub fn matches_pattern(pattern: &str, path: &str) -> bool {
    let a: Vec<&str> = pattern.split('/').collect();
    let b: Vec<&str> = path.split('/').collect();
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(p, s)| (p.starts_with('{') && !s.is_empty()) || p == s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"].as_str().unwrap().get(..2), Some("3."));
        let mut documented = Vec::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                if method != "parameters" {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        documented.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        assert_eq!(documented, routes);
    }

    #[test]
    fn body_errors_never_echo_values() {
        let req = |b: &str| {
            let mut r = Request::default();
            r.content_type = Some("application/json".into());
            r.body = b.as_bytes().to_vec();
            r
        };
        for b in [
            r#"{"email": "a@b.c", "password": 12345678901234}"#,
            r#"{"email": "a@b.c", "password": ["hunter2-canary"]}"#,
            r#"{"email": "a@b.c", "password": "x", "totp": {"hunter2-canary": 1}}"#,
            r#"["hunter2-canary"]"#,
        ] {
            let e = body::<Login>(&req(b)).err().unwrap();
            assert_eq!(e.code, "invalid_body");
            assert!(
                !e.message.contains("hunter2") && !e.message.contains("12345678"),
                "{}",
                e.message
            );
        }
        let e = body::<Login>(&req(r#"{"email": "a@b.c"}"#)).err().unwrap();
        assert!(
            e.message.contains("missing field `password`"),
            "{}",
            e.message
        );
        let mut r = req("{}");
        r.content_type = Some("text/plain".into());
        assert_eq!(body::<Login>(&r).err().unwrap().status, 415);
    }
}
