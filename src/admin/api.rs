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

/// The hand-written part of the OpenAPI document: info and the component schemas. The paths,
/// who may call each and the error codes are added from [`ROUTES`] and [`Code`] ([`openapi`]).
const OPENAPI_BASE: &str = include_str!("openapi_base.json");

/// Who may call a route. The router checks it before the handler runs; the OpenAPI
/// document's "Allowed:" line and security are made from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone the IP allowlist admits, without a session.
    Public,
    /// Any logged-in user.
    User,
    /// Operators only.
    Operator,
    /// Operators, and users of the path's `{org_id}` with this role or a higher one
    /// (member < auditor < admin < owner).
    Org(Role),
    /// Operators (any org, or records of no org), and users with this role or a higher one in
    /// the org of the `org_id` query parameter (their own org without one).
    QueryOrg(Role),
}

fn rank(role: Role) -> u8 {
    match role {
        Role::Member => 0,
        Role::Auditor => 1,
        Role::Admin => 2,
        Role::Owner => 3,
    }
}

impl Access {
    /// Whether `p` may call the route for org `org` (the path's or the query's).
    fn check(self, p: Option<&Principal>, org: Option<&str>) -> Result<(), ApiError> {
        let p = match (self, p) {
            (Access::Public, _) => return Ok(()),
            (_, None) => return Err(bad_token()),
            (_, Some(p)) => p,
        };
        if p.operator || self == Access::User {
            return Ok(());
        }
        let least = match self {
            Access::Org(r) | Access::QueryOrg(r) => r,
            _ => return Err(denied()),
        };
        let org = match (self, org) {
            (Access::QueryOrg(_), None) => p.org_id.as_deref(),
            (_, o) => o,
        };
        match (org, &p.org_id, p.role) {
            (Some(o), Some(mine), Some(r)) if o == mine && rank(r) >= rank(least) => Ok(()),
            _ => Err(denied()),
        }
    }

    /// Who may call, in words (the OpenAPI document).
    pub fn describe(self) -> String {
        let above = |least: Role| {
            [Role::Owner, Role::Admin, Role::Auditor, Role::Member]
                .into_iter()
                .filter(|r| rank(*r) >= rank(least))
                .map(Role::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Access::Public => "anyone the IP allowlist admits".into(),
            Access::User => "any user".into(),
            Access::Operator => "operator".into(),
            Access::Org(Role::Member) => "operator; any member of the org".into(),
            Access::Org(r) => format!("operator, {}", above(r)),
            Access::QueryOrg(r) => format!(
                "operator (any org, or records of no org); {} (their org)",
                above(r)
            ),
        }
    }
}

/// The success answer's body, for the OpenAPI document.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// A schema of `components.schemas`.
    Schema(&'static str),
    /// `{"data": [<schema>]}`.
    List(&'static str),
    /// `{"data": [<schema>], "next_cursor": <string or null>}`.
    Page(&'static str),
    /// A small object described in the summary.
    Object,
}

/// A query parameter: name, JSON schema, required, description.
pub type QueryParam = (&'static str, &'static str, bool, &'static str);

/// What answers a route: without a session ([`Access::Public`] routes), or with the caller
/// authenticated and the store locked.
#[derive(Clone, Copy)]
enum Handler {
    Open(fn(&Api, &Caller) -> ApiResult),
    Session(fn(&Api, &Store, &Caller, &Params) -> ApiResult),
    /// A session route whose work waits on something outside (a token endpoint): it runs
    /// without the store's lock and takes it only to write, so other admin calls go on.
    Unlocked(fn(&Api, &Caller, &Params) -> ApiResult),
}

/// One admin API route: the router, the 405 answer, the RBAC declaration and the OpenAPI
/// document all come from [`ROUTES`].
pub struct Route {
    pub method: &'static str,
    /// The path, `{x}` being a path parameter.
    pub pattern: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// Said after the "Allowed:" line (extra conditions).
    pub note: &'static str,
    /// The request body's schema (in `components.schemas`), when it takes one.
    pub body: Option<&'static str>,
    pub query: &'static [QueryParam],
    /// The success status and body.
    pub ok: (u16, Shape),
    handler: Handler,
}

/// The path of the OpenAPI document (served even when the API is disabled).
pub const OPENAPI_PATH: &str = "/api/openapi.json";
const LOGIN_PATH: &str = "/api/auth/login";

const CALLBACK_PATH: &str = super::connect::CALLBACK_PATH;

const CALLBACK_QUERY: &[QueryParam] = &[
    (
        "code",
        r#"{"type":"string"}"#,
        false,
        "The authorization code",
    ),
    ("state", r#"{"type":"string"}"#, true, "The connect's state"),
    ("iss", r#"{"type":"string"}"#, false, "RFC 9207: the issuer"),
    (
        "error",
        r#"{"type":"string"}"#,
        false,
        "The authorization server's refusal",
    ),
];

const AUDIT_QUERY: &[QueryParam] = &[
    (
        "org_id",
        r#"{"type":"string"}"#,
        false,
        "Only this org (forced to yours unless operator).",
    ),
    (
        "action",
        r#"{"type":"string"}"#,
        false,
        "e.g. auth.login, key.create, proxy.request",
    ),
    (
        "actor",
        r#"{"type":"string"}"#,
        false,
        "e.g. user:<id>, cli:root, key:<key id>, anonymous",
    ),
    (
        "outcome",
        r#"{"type":"string","enum":["success","failure"]}"#,
        false,
        "",
    ),
    ("since", r#"{"type":"string"}"#, false, "RFC 3339 time"),
    (
        "cursor",
        r#"{"type":"string"}"#,
        false,
        "next_cursor of the previous page",
    ),
    (
        "limit",
        r#"{"type":"integer","minimum":1,"maximum":1000}"#,
        false,
        "1 to 1000, default 100",
    ),
];

macro_rules! opt {
    ($default:expr;) => {
        $default
    };
    ($default:expr; $e:expr) => {
        $e
    };
}

macro_rules! route {
    (@ $handler:expr; $method:literal $pattern:expr, $access:expr, $summary:literal, $ok:expr
     $(, body = $body:literal)? $(, query = $query:expr)? $(, note = $note:literal)?) => {
        Route {
            method: $method,
            pattern: $pattern,
            access: $access,
            summary: $summary,
            note: opt!(""; $($note)?),
            body: opt!(None; $(Some($body))?),
            query: opt!(&[]; $($query)?),
            ok: $ok,
            handler: $handler,
        }
    };
    ($method:literal $pattern:expr, $access:expr, $summary:literal, $ok:expr, open $h:expr
     $(, $($rest:tt)*)?) => {
        route!(@ Handler::Open($h); $method $pattern, $access, $summary, $ok $(, $($rest)*)?)
    };
    ($method:literal $pattern:expr, $access:expr, $summary:literal, $ok:expr, unlocked $h:expr
     $(, $($rest:tt)*)?) => {
        route!(@ Handler::Unlocked($h); $method $pattern, $access, $summary, $ok $(, $($rest)*)?)
    };
    ($method:literal $pattern:expr, $access:expr, $summary:literal, $ok:expr, $h:expr
     $(, $($rest:tt)*)?) => {
        route!(@ Handler::Session($h); $method $pattern, $access, $summary, $ok $(, $($rest)*)?)
    };
}

/// Every route of the admin API.
pub static ROUTES: &[Route] = &[
    route!("GET" OPENAPI_PATH, Access::Public, "This document", (200, Shape::Object),
        open |a, _| Ok((200, a.openapi.clone()))),
    route!("POST" LOGIN_PATH, Access::Public,
        "Log in: email, password and a TOTP or recovery code (when enrolled). Every failure is the same 401 invalid_credentials; failures are throttled per IP and per account (429 rate_limited + Retry-After).",
        (200, Shape::Schema("Session")), open |a, c| a.login(c), body = "Login"),
    route!("GET" "/api/auth/me", Access::User, "The calling user", (200, Shape::Schema("User")),
        |a, s, c, _| a.me(s, c)),
    route!("POST" "/api/auth/password", Access::User,
        "Change your password; revokes every session and returns a new token",
        (200, Shape::Schema("Session")), |a, s, c, _| a.change_password(s, c),
        body = "PasswordChange"),
    route!("POST" "/api/auth/totp", Access::User,
        "(Re-)enrol TOTP: a new seed and 10 new recovery codes, shown once",
        (200, Shape::Schema("Enrollment")), |a, s, c, _| a.reenroll(s, c), body = "Reauth",
        note = "Needs the password and, when TOTP is enrolled, a current TOTP code or a recovery code."),
    route!("POST" "/api/auth/logout", Access::User, "Revoke every session of the calling user",
        (200, Shape::Object), |a, s, c, _| a.logout(s, c)),
    route!("GET" "/api/orgs", Access::User, "Orgs: all for operators, your own otherwise",
        (200, Shape::List("Org")), |a, s, c, _| a.list_orgs(s, c)),
    route!("POST" "/api/orgs", Access::Operator, "Create an org", (201, Shape::Schema("Org")),
        |a, s, c, _| a.create_org(s, c), body = "NewOrg"),
    route!("GET" "/api/orgs/{org_id}", Access::Org(Role::Member), "One org",
        (200, Shape::Schema("Org")), |a, s, _, p| a.get_org(s, p.get("org_id"))),
    route!("PATCH" "/api/orgs/{org_id}", Access::Org(Role::Admin),
        "Change the org's settings (region, PII, secrets, response redaction, MCP allow-lists, limits)",
        (200, Shape::Schema("Org")), |a, s, c, p| a.update_org(s, c, p.get("org_id")),
        body = "OrgPatch"),
    route!("DELETE" "/api/orgs/{org_id}", Access::Org(Role::Owner),
        "GDPR hard delete (requires ?hard=true): keys, users and settings removed in one transaction; the org's audit data key destroyed, so its audit details are unreadable while the chain still verifies",
        (200, Shape::Schema("Deleted")), |a, s, c, p| a.delete_org(s, c, p.get("org_id")),
        query = &[("hard", r#"{"type":"boolean"}"#, true, "")]),
    route!("GET" "/api/orgs/{org_id}/keys", Access::Org(Role::Auditor),
        "API key metadata (never the key)", (200, Shape::List("Key")),
        |a, s, _, p| a.list_keys(s, p.get("org_id"))),
    route!("POST" "/api/orgs/{org_id}/keys", Access::Org(Role::Admin),
        "Create an API key; the key is in this response only", (201, Shape::Schema("CreatedKey")),
        |a, s, c, p| a.create_key(s, c, p.get("org_id")), body = "NewKey"),
    route!("PATCH" "/api/orgs/{org_id}/keys/{key_id}", Access::Org(Role::Admin),
        "Change a key's settings (PII, secrets, response redaction, MCP allow-lists, limits)",
        (200, Shape::Schema("Key")),
        |a, s, c, p| a.update_key(s, c, p.get("org_id"), p.get("key_id")), body = "KeyPatch"),
    route!("DELETE" "/api/orgs/{org_id}/keys/{key_id}", Access::Org(Role::Admin),
        "Revoke a key (refused by the data plane within a second)", (200, Shape::Object),
        |a, s, c, p| a.revoke_key(s, c, p.get("org_id"), p.get("key_id"))),
    route!("GET" "/api/orgs/{org_id}/users", Access::Org(Role::Admin), "The org's users",
        (200, Shape::List("User")), |a, s, _, p| a.list_users(s, p.get("org_id"))),
    route!("POST" "/api/orgs/{org_id}/users", Access::Org(Role::Admin),
        "Add a user; owner/admin get TOTP (enrolment shown once). Only owners and operators add owners",
        (201, Shape::Schema("CreatedUser")), |a, s, c, p| a.create_member(s, c, p.get("org_id")),
        body = "NewMember"),
    route!("PATCH" "/api/orgs/{org_id}/users/{user_id}", Access::Org(Role::Admin),
        "Change a user's role (effective on their next request); owner/admin need TOTP enrolled; the last owner cannot be downgraded",
        (200, Shape::Schema("User")),
        |a, s, c, p| a.update_member(s, c, p.get("org_id"), p.get("user_id")),
        body = "MemberPatch", note = "Admins do not manage owners."),
    route!("DELETE" "/api/orgs/{org_id}/users/{user_id}", Access::Org(Role::Admin),
        "Remove a user (their sessions stop at once); not the last owner", (200, Shape::Object),
        |a, s, c, p| a.delete_member(s, c, p.get("org_id"), p.get("user_id")),
        note = "Admins do not manage owners."),
    route!("POST" "/api/orgs/{org_id}/users/{user_id}/revoke-sessions", Access::Org(Role::Admin),
        "Revoke every session of a user", (200, Shape::Object),
        |a, s, c, p| a.revoke_member(s, c, p.get("org_id"), p.get("user_id")),
        note = "Admins do not manage owners."),
    route!("GET" "/api/credentials", Access::Operator,
        "Upstream credentials' metadata (never the secret)", (200, Shape::List("Credential")),
        |a, s, _, _| a.list_credentials(s)),
    route!("PUT" "/api/credentials/{name}", Access::Operator,
        "Store or replace an upstream credential (write-only)", (200, Shape::Schema("Credential")),
        unlocked |a, c, p| a.set_credential(c, p.get("name")), body = "CredentialBody"),
    route!("DELETE" "/api/credentials/{name}", Access::Operator,
        "Delete an upstream credential (a connected one's tokens are revoked at its server first, when it has a revocation endpoint)",
        (200, Shape::Object), unlocked |a, c, p| a.delete_credential(c, p.get("name"))),
    route!("POST" "/api/credentials/{name}/connect", Access::Operator,
        "Start connecting an OAuth credential with the authorization code grant and PKCE: discovery (RFC 9728, RFC 8414), dynamic registration (RFC 7591) when no client_id is given, and the authorization URL to open. The browser comes back to GET /oauth/callback on the admin listener within 10 minutes.",
        (201, Shape::Schema("ConnectStarted")),
        unlocked |a, c, p| a.connect(c, p.get("name")), body = "ConnectBody"),
    route!("POST" "/api/credentials/{name}/connect/complete", Access::Operator,
        "Complete a connect with the URL the browser was sent to (when the browser cannot reach the admin listener)",
        (200, Shape::Schema("Connected")),
        unlocked |a, c, p| a.complete_connect(c, p.get("name")), body = "ConnectComplete",
        note = "Only the operator who started the connect."),
    route!("GET" CALLBACK_PATH, Access::Public,
        "Where the authorization server sends the browser back (code, state, iss): the state (single use, 10 minutes) selects the connect; the code is exchanged with its PKCE verifier and the tokens stored sealed.",
        (200, Shape::Schema("Connected")), open |a, c| a.callback(c), query = CALLBACK_QUERY),
    route!("GET" "/api/audit", Access::QueryOrg(Role::Auditor),
        "Audit records, oldest first, with cursor pagination (pass next_cursor as cursor). Personal fields are decrypted; a hard-deleted org's read {\"personal_data\": \"shredded\"}",
        (200, Shape::Page("AuditRecord")), |a, s, c, _| a.audit(s, c), query = AUDIT_QUERY),
    route!("GET" "/api/mcp/servers", Access::User, "The configured MCP servers and their health",
        (200, Shape::List("McpServer")), |a, _, _, _| a.mcp_servers()),
];

/// The OpenAPI document served at [`OPENAPI_PATH`]: [`OPENAPI_BASE`] with the paths made from
/// [`ROUTES`] (methods, parameters, access, bodies, answers) and the error codes from
/// [`Code::ALL`], so it cannot drift from what the server does.
pub fn openapi() -> Value {
    let mut doc: Value = serde_json::from_str(OPENAPI_BASE).unwrap_or_else(|_| json!({}));
    let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"] =
        json!(codes);
    let statuses: std::collections::BTreeSet<u16> = Code::ALL.iter().map(|c| c.status()).collect();
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let entry = paths.entry(r.pattern).or_insert_with(|| json!({}));
        let path_params: Vec<Value> = r
            .pattern
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|n| json!({"name": n, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !path_params.is_empty() {
            entry["parameters"] = path_params.into();
        }
        let ok = match r.ok.1 {
            Shape::Schema(n) => schema(n),
            Shape::List(n) => json!({"type": "object", "properties": {
                "data": {"type": "array", "items": schema(n)}}}),
            Shape::Page(n) => json!({"type": "object", "properties": {
                "data": {"type": "array", "items": schema(n)},
                "next_cursor": {"type": ["string", "null"]}}}),
            Shape::Object => json!({"type": "object"}),
        };
        let mut responses = serde_json::Map::new();
        responses.insert(
            r.ok.0.to_string(),
            json!({"description": "OK", "content": {"application/json": {"schema": ok}}}),
        );
        for st in &statuses {
            responses.insert(
                st.to_string(),
                json!({"$ref": "#/components/responses/Error"}),
            );
        }
        let mut description = format!("Allowed: {}.", r.access.describe());
        if !r.note.is_empty() {
            description = format!("{description} {}", r.note);
        }
        let mut op = json!({"summary": r.summary, "description": description,
                            "responses": responses});
        if r.access == Access::Public {
            op["security"] = json!([]);
        }
        if let Some(b) = r.body {
            op["requestBody"] = json!({"required": true,
                "content": {"application/json": {"schema": schema(b)}}});
        }
        if !r.query.is_empty() {
            let q: Vec<Value> = r
                .query
                .iter()
                .map(|(name, sch, required, desc)| {
                    let mut v = json!({"name": name, "in": "query", "required": required,
                        "schema": serde_json::from_str::<Value>(sch).unwrap_or_default()});
                    if !desc.is_empty() {
                        v["description"] = (*desc).into();
                    }
                    v
                })
                .collect();
            op["parameters"] = q.into();
        }
        entry[r.method.to_ascii_lowercase()] = op;
    }
    doc["paths"] = paths.into();
    doc
}

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

/// The router over [`ROUTES`]: a path pattern to the indexes of its routes (one per method).
fn router() -> matchit::Router<Vec<usize>> {
    let mut r = matchit::Router::new();
    let mut patterns: Vec<&str> = ROUTES.iter().map(|r| r.pattern).collect();
    patterns.dedup();
    for pattern in patterns {
        let routes = (0..ROUTES.len())
            .filter(|i| ROUTES[*i].pattern == pattern)
            .collect();
        // The table is fixed: a pattern matchit refuses is a bug caught by every test.
        r.insert(pattern, routes)
            .unwrap_or_else(|e| panic!("admin route {pattern}: {e}"));
    }
    r
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
    /// The methods the route takes, for 405 (RFC 9110: the `Allow` header).
    pub allow: Option<String>,
}

macro_rules! codes {
    ($($(#[doc = $doc:literal])* $v:ident = ($status:literal, $code:literal),)*) => {
        /// The admin API's error codes, each with its one HTTP status: the whole vocabulary
        /// (the OpenAPI document's `Error.code` enum is made from [`Code::ALL`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($(#[doc = $doc])* $v,)*
        }

        impl Code {
            /// Every code.
            pub const ALL: &'static [Code] = &[$(Code::$v,)*];

            /// The HTTP status it is sent with.
            pub fn status(self) -> u16 {
                match self {
                    $(Code::$v => $status,)*
                }
            }

            /// The stable code, as in the body's `error.code`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$v => $code,)*
                }
            }
        }
    };
}

codes! {
    /// A value is refused (bad email, short password, unknown region, last owner, ...).
    InvalidRequest = (400, "invalid_request"),
    /// Not a JSON object, a missing or unknown field, a value of the wrong type.
    InvalidBody = (400, "invalid_body"),
    /// `DELETE /api/orgs/{id}` without `?hard=true`.
    HardDeleteRequired = (400, "hard_delete_required"),
    /// The OAuth token endpoint gave no token (nothing stored).
    OauthTokenFailed = (400, "oauth_token_failed"),
    /// An OAuth connect's callback: the state is unknown, used, expired, another operator's or
    /// another credential's, or missing with the code (nothing stored).
    OauthStateInvalid = (400, "oauth_state_invalid"),
    /// The authorization server answered the authorization request with an error (the user
    /// declined).
    OauthAuthorizationDenied = (400, "oauth_authorization_denied"),
    /// The callback's `iss` is not the connect's authorization server (RFC 9207).
    OauthIssMismatch = (400, "oauth_iss_mismatch"),
    /// Any login failure.
    InvalidCredentials = (401, "invalid_credentials"),
    /// No, malformed, expired, foreign or revoked session token.
    InvalidToken = (401, "invalid_token"),
    /// The source address is outside `[admin] allow_ips`.
    IpNotAllowed = (403, "ip_not_allowed"),
    /// The caller's role does not allow the call.
    PermissionDenied = (403, "permission_denied"),
    /// Unknown route, or no such org, key, user or credential.
    NotFound = (404, "not_found"),
    /// A known route with another method.
    MethodNotAllowed = (405, "method_not_allowed"),
    /// The org, user (email) or credential already exists.
    Conflict = (409, "conflict"),
    /// The body is over `[admin] max_body_bytes`.
    RequestTooLarge = (413, "request_too_large"),
    /// A body without `Content-Type: application/json`.
    UnsupportedMediaType = (415, "unsupported_media_type"),
    /// Too many failed logins or password checks; `Retry-After` says when to retry.
    RateLimited = (429, "rate_limited"),
    /// The authorization server is not one sluice connects to: no PKCE S256, a plain http
    /// endpoint, metadata for another issuer or resource.
    OauthServerRefused = (422, "oauth_server_refused"),
    /// A bug or a store failure; the log has the detail.
    InternalError = (500, "internal_error"),
    /// The protected resource or authorization server metadata cannot be found or read.
    OauthDiscoveryFailed = (502, "oauth_discovery_failed"),
    /// Dynamic client registration (RFC 7591) failed, or the server offers none.
    OauthRegistrationFailed = (502, "oauth_registration_failed"),
    /// The token endpoint gave no token for the authorization code (nothing stored).
    OauthExchangeFailed = (502, "oauth_exchange_failed"),
    /// `SLUICE_JWT_SECRET` is not set.
    AdminApiDisabled = (503, "admin_api_disabled"),
}

/// A refusal: a code (which decides the status) and a message that never quotes a value.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.code.status()
    }
}

fn err(code: Code, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        message: message.into(),
        retry_after: None,
    }
}

fn denied() -> ApiError {
    err(
        Code::PermissionDenied,
        "Your role does not allow this action.",
    )
}

fn bad_token() -> ApiError {
    err(
        Code::InvalidToken,
        "Missing, invalid, expired or revoked session token. Log in again at POST /api/auth/login.",
    )
}

const INVALID_CREDENTIALS: &str = "Invalid email, password or second factor.";

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match e {
            Error::Invalid(m) => err(Code::InvalidRequest, m),
            e @ Error::Field { .. } => err(Code::InvalidRequest, e.to_string()),
            Error::TotpRequired { role, .. } => err(
                Code::InvalidRequest,
                format!("Role {role} requires TOTP: the user must enrol it first (POST /api/auth/totp, or `sluice users enroll-totp` on the host)."),
            ),
            Error::EmptySecret => err(Code::InvalidRequest, "secret is empty."),
            Error::Store(store::Error::NotFound { what, .. }) => {
                err(Code::NotFound, format!("No such {what}."))
            }
            Error::Store(store::Error::Duplicate { what, .. }) => {
                err(Code::Conflict, format!("That {what} already exists."))
            }
            Error::Store(e) => internal(&e),
            Error::Vault(e) => internal(&e),
            // serve checks its key at start: this is the store changing under it.
            e @ Error::WrongMasterKey { .. } => internal(&e),
            Error::OAuth { code, message } => {
                let c = Code::ALL
                    .iter()
                    .copied()
                    .find(|c| c.as_str() == code)
                    .unwrap_or(Code::InternalError);
                // A sentence: its first letter capitalised (whatever the letter), a full stop.
                let mut chars = message.chars();
                let mut m: String = chars
                    .next()
                    .map(|f| f.to_uppercase().chain(chars).collect())
                    .unwrap_or_default();
                if !m.ends_with(['.', ')', ':']) {
                    m.push('.');
                }
                err(c, m)
            }
        }
    }
}

/// A failure that is not the caller's: logged, answered with a generic message.
fn internal(e: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "admin API operation failed");
    err(Code::InternalError, "Internal error; see the sluice log.")
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
/// The MCP servers in force and whether each passes its health check (a reload changes them).
type McpView = Box<dyn Fn() -> Vec<(crate::config::McpServer, bool)> + Send + Sync>;

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

fn body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let json_type = req.content_type.as_deref().is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json_type {
        return Err(err(
            Code::UnsupportedMediaType,
            "Send a JSON body with Content-Type: application/json.",
        ));
    }
    // An object and nothing else: serde would also read a struct from an array (`[null]`
    // setting its first field) and ignore what follows the value.
    if req.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(err(
            Code::InvalidBody,
            "Invalid JSON body: the body must be a JSON object.",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(&req.body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
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
        err(Code::InvalidBody, format!("Invalid JSON body: {message}."))
    })?;
    de.end().map_err(|_| {
        err(
            Code::InvalidBody,
            "Invalid JSON body: something follows the object.",
        )
    })?;
    Ok(value)
}

fn query_params(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn region(s: Option<&str>) -> Result<Option<Region>, ApiError> {
    s.map(|r| {
        r.parse::<Region>()
            .map_err(|_| err(Code::InvalidRequest, "Unknown region: use us, eu or apac."))
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
    #[serde(default, deserialize_with = "present")]
    budget_period: Option<String>,
    #[serde(default, deserialize_with = "present")]
    region: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pii: Option<String>,
    #[serde(default, deserialize_with = "present")]
    secrets: Option<String>,
    #[serde(default, deserialize_with = "present")]
    response_redaction: Option<String>,
    #[serde(default, deserialize_with = "present")]
    mcp_tools: Option<String>,
    #[serde(default, deserialize_with = "present")]
    mcp_resources: Option<String>,
    #[serde(default, deserialize_with = "present")]
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
    #[serde(default, deserialize_with = "present")]
    budget_period: Option<String>,
    #[serde(default, deserialize_with = "present")]
    region: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pii: Option<String>,
    #[serde(default, deserialize_with = "present")]
    secrets: Option<String>,
    #[serde(default, deserialize_with = "present")]
    response_redaction: Option<String>,
    #[serde(default, deserialize_with = "present")]
    mcp_tools: Option<String>,
    #[serde(default, deserialize_with = "present")]
    mcp_resources: Option<String>,
    #[serde(default, deserialize_with = "present")]
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
    #[serde(default, deserialize_with = "present")]
    budget_period: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pii: Option<String>,
    #[serde(default, deserialize_with = "present")]
    secrets: Option<String>,
    #[serde(default, deserialize_with = "present")]
    response_redaction: Option<String>,
    #[serde(default, deserialize_with = "present")]
    mcp_tools: Option<String>,
    #[serde(default, deserialize_with = "present")]
    mcp_resources: Option<String>,
    #[serde(default, deserialize_with = "present")]
    mcp_prompts: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default = "default_key_name")]
    name: String,
    #[serde(default, deserialize_with = "present")]
    pii: Option<String>,
    #[serde(default, deserialize_with = "present")]
    secrets: Option<String>,
    #[serde(default, deserialize_with = "present")]
    response_redaction: Option<String>,
    #[serde(default)]
    mcp_tools: Option<String>,
    #[serde(default)]
    mcp_resources: Option<String>,
    #[serde(default)]
    mcp_prompts: Option<String>,
    #[serde(default, deserialize_with = "present")]
    region: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    rpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    tpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_tokens: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    budget_period: Option<String>,
    #[serde(default, deserialize_with = "present")]
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

/// A field that may be absent (`None`) but not `null`: a client's `null` is refused rather
/// than read as "absent" (unchanged, or the default), which it may not have meant.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectBody {
    #[serde(default)]
    mcp_server: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectComplete {
    redirect_url: String,
}

/// An org setting field: `"on"` or `"off"`.
fn setting(field: &str, s: Option<&str>) -> Result<Option<Setting>, ApiError> {
    s.map(|v| {
        Setting::parse(v).ok_or_else(|| {
            err(
                Code::InvalidRequest,
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
    Ok(super::key_list_change(what, v)?)
}

/// A key setting field: `"on"`, `"off"` or `"inherit"` (the default).
fn key_setting(field: &str, s: Option<&str>) -> Result<KeySetting, ApiError> {
    s.map_or(Ok(KeySetting::Inherit), |v| {
        KeySetting::parse(v).ok_or_else(|| {
            err(
                Code::InvalidRequest,
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
            tls: cfg.tls.clone(),
            mcp_servers: cfg.mcp_servers.clone(),
            mcp_view: None,
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
            Ok((status, body)) => Reply {
                status,
                body,
                retry_after: None,
                allow: None,
            },
            Err(e) => Reply {
                status: e.status(),
                body: crate::error::body(e.status(), e.code.as_str(), &e.message, &req.request_id),
                retry_after: e.retry_after,
                allow: (e.code == Code::MethodNotAllowed).then(|| self.methods(&req.path)),
            },
        }
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

    // ---- auth ----

    fn login(&self, c: &Caller) -> ApiResult {
        let req = c.req;
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
                        Code::RateLimited,
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
        match outcome {
            Ok(user) => {
                self.logins.with_label_values(&["success"]).inc();
                self.throttle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .succeed(reservation);
                let mut r = c.record("auth.login", user.org_id.as_deref());
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
                let mut r = c.record("auth.login", refused.org_id.as_deref());
                r.outcome = "failure";
                r.target_id = refused.user_id.clone();
                r.details = json!({"reason": refused.reason.as_str()});
                // Fail closed: a login attempt that cannot be recorded is not answered as such.
                audit::append(&store, &mut audit::OrgKeys::new(&self.ring), &[r])?;
                if refused.reason == users::Failure::Internal {
                    return Err(err(
                        Code::InternalError,
                        "Internal error; see the sluice log.",
                    ));
                }
                Err(err(Code::InvalidCredentials, INVALID_CREDENTIALS))
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
                    Code::RateLimited,
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
            Err(err(Code::InvalidCredentials, INVALID_CREDENTIALS))
        }
    }

    fn change_password(&self, store: &Store, c: &Caller) -> ApiResult {
        let p = c.principal()?.clone();
        let b: PasswordChange = body(c.req)?;
        self.check_own_password(store, c, &b.current_password)?;
        super::set_password_as(store, &self.ring, &c.actor(), &p.user_id, &b.new_password)?;
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
        let e = super::enroll_totp_as(store, &self.ring, &c.actor(), &p.user_id)?;
        Ok((200, to_value(&e)))
    }

    fn logout(&self, store: &Store, c: &Caller) -> ApiResult {
        let p = c.principal()?.clone();
        super::revoke_sessions_as(store, &self.ring, &c.actor(), &p.user_id)?;
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

    fn get_org(&self, store: &Store, id: &str) -> ApiResult {
        Ok((200, to_value(&store.org(id)?)))
    }

    fn update_org(&self, store: &Store, c: &Caller, id: &str) -> ApiResult {
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
        if c.param("hard") != Some("true") {
            return Err(err(
                Code::HardDeleteRequired,
                "Deleting an org removes its keys and users and shreds its audit details; it cannot be undone. Repeat with ?hard=true.",
            ));
        }
        let (d, purged) = super::delete_org_as(store, &self.ring, &c.actor(), id)?;
        let mut v = to_value(&d);
        v["wal_purged"] = purged.into();
        Ok((200, v))
    }

    // ---- keys ----

    fn list_keys(&self, store: &Store, org: &str) -> ApiResult {
        Ok((200, json!({ "data": super::list_keys(store, Some(org))? })))
    }

    fn create_key(&self, store: &Store, c: &Caller, org: &str) -> ApiResult {
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
        if !store.keys(Some(org))?.iter().any(|k| k.id == kid) {
            return Err(err(Code::NotFound, "No such key in this org."));
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
        Ok((200, to_value(&super::KeyView::of(k))))
    }

    fn revoke_key(&self, store: &Store, c: &Caller, org: &str, kid: &str) -> ApiResult {
        if !store.keys(Some(org))?.iter().any(|k| k.id == kid) {
            return Err(err(Code::NotFound, "No such key in this org."));
        }
        super::revoke_key_as(store, &self.ring, &c.actor(), kid)?;
        Ok((200, json!({"id": kid, "revoked": true})))
    }

    // ---- users ----

    fn member(&self, store: &Store, org: &str, uid: &str) -> Result<store::User, ApiError> {
        match store.user(uid) {
            Ok(u) if u.org_id.as_deref() == Some(org) => Ok(u),
            _ => Err(err(Code::NotFound, "No such user in this org.")),
        }
    }

    /// Admins manage members, auditors and admins; only owners (and operators) touch owners.
    fn may_manage(
        p: &Principal,
        target_role: Option<Role>,
        new_role: Option<Role>,
    ) -> Result<(), ApiError> {
        if p.operator || p.role == Some(Role::Owner) {
            return Ok(());
        }
        if target_role == Some(Role::Owner) || new_role == Some(Role::Owner) {
            return Err(denied());
        }
        Ok(())
    }

    fn list_users(&self, store: &Store, org: &str) -> ApiResult {
        Ok((200, json!({ "data": users::list(store, Some(org))? })))
    }

    fn create_member(&self, store: &Store, c: &Caller, org: &str) -> ApiResult {
        let p = c.principal()?;
        let b: NewMember = body(c.req)?;
        Self::may_manage(p, None, Some(b.role))?;
        let new = users::NewUser {
            email: b.email,
            org_id: Some(org.to_string()),
            role: Some(b.role),
            operator: false,
            totp: b.totp,
        };
        let created = super::create_user_as(store, &self.ring, &c.actor(), &new, &b.password)?;
        Ok((201, to_value(&created)))
    }

    /// The checks before every change to one member: the caller's role, the target in this
    /// org, owners only by owners.
    fn check_member(
        &self,
        store: &Store,
        c: &Caller,
        org: &str,
        uid: &str,
        new_role: Option<Role>,
    ) -> Result<(), ApiError> {
        let p = c.principal()?;
        let target = self.member(store, org, uid)?;
        Self::may_manage(p, target.role, new_role)
    }

    fn update_member(&self, store: &Store, c: &Caller, org: &str, uid: &str) -> ApiResult {
        let b: MemberPatch = body(c.req)?;
        self.check_member(store, c, org, uid, Some(b.role))?;
        let v = super::set_role_as(store, &self.ring, &c.actor(), uid, b.role)?;
        Ok((200, to_value(&v)))
    }

    fn delete_member(&self, store: &Store, c: &Caller, org: &str, uid: &str) -> ApiResult {
        self.check_member(store, c, org, uid, None)?;
        super::delete_user_as(store, &self.ring, &c.actor(), uid)?;
        Ok((200, json!({"id": uid, "deleted": true})))
    }

    fn revoke_member(&self, store: &Store, c: &Caller, org: &str, uid: &str) -> ApiResult {
        self.check_member(store, c, org, uid, None)?;
        super::revoke_sessions_as(store, &self.ring, &c.actor(), uid)?;
        Ok((200, json!({"id": uid, "sessions_revoked": true})))
    }

    // ---- credentials (sidecar-wide: operators only) ----

    fn list_credentials(&self, store: &Store) -> ApiResult {
        let fp = self.ring.fingerprint();
        Ok((
            200,
            json!({ "data": super::list_credentials(store, Some(&fp))? }),
        ))
    }

    /// Runs without the store's lock (see [`Handler::Unlocked`]): a slow or hanging token
    /// endpoint holds up this call only, not every admin call.
    fn set_credential(&self, c: &Caller, name: &str) -> ApiResult {
        let b: CredentialBody = body(c.req)?;
        let mut secret = super::secret_from_input(zeroize::Zeroizing::new(b.secret.into_bytes()))?;
        let Some(settings) = b.oauth else {
            let v = super::set_credential_as(
                &self.store(),
                &self.ring,
                &c.actor(),
                name,
                &secret,
                b.expires_at.as_deref(),
                None,
            )?;
            return Ok((200, to_value(&v)));
        };
        if b.expires_at.is_some() {
            return Err(err(
                Code::InvalidRequest,
                "expires_at does not apply to an OAuth credential (its tokens expire on their own).",
            ));
        }
        super::check_oauth(&settings)?;
        let first = if b.verify {
            let token = crate::auth::oauth::first_token(&settings, &mut secret, &self.tls)
                .map_err(|e| {
                    err(
                        Code::OauthTokenFailed,
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
        // The fetch ran without the lock: the caller's session and role are checked again
        // (revoked meanwhile, no write).
        let store = self.store();
        let principal = self.authenticate(&store, c.req)?;
        Access::Operator.check(Some(&principal), None)?;
        let v = super::set_oauth_credential_as(
            &store,
            &self.ring,
            &c.actor(),
            name,
            &settings,
            &secret,
            first.as_ref(),
        )?;
        Ok((200, to_value(&v)))
    }

    /// Runs without the store's lock: revoking a connected credential's tokens is a call to
    /// its authorization server.
    fn delete_credential(&self, c: &Caller, name: &str) -> ApiResult {
        let row = self
            .store()
            .credentials()?
            .into_iter()
            .find(|r| r.name == name);
        let revoked = match &row {
            Some(r) => super::connect::revoke(&self.ring, &self.tls, r),
            None => super::connect::Revoked::None,
        };
        self.count_revocation(revoked);
        let store = self.store();
        let principal = self.authenticate(&store, c.req)?;
        Access::Operator.check(Some(&principal), None)?;
        super::delete_credential_as(&store, &self.ring, &c.actor(), name, revoked.as_str())?;
        Ok((
            200,
            json!({"name": name, "deleted": true, "tokens": revoked.as_str()}),
        ))
    }

    fn count_revocation(&self, r: super::connect::Revoked) {
        if let (
            Some((_, revocations)),
            super::connect::Revoked::Revoked | super::connect::Revoked::Failed,
        ) = (&self.oauth_counters, r)
        {
            revocations.with_label_values(&[r.as_str()]).inc();
        }
    }

    fn count_connect(&self, outcome: &Result<super::connect::Connected, Error>) {
        if let Some((connects, _)) = &self.oauth_counters {
            let o = match outcome {
                Ok(_) => "connected",
                Err(e) => e.code(),
            };
            connects.with_label_values(&[o]).inc();
        }
        if let Ok(c) = outcome {
            self.count_revocation(match c.previous_tokens {
                "revoked" => super::connect::Revoked::Revoked,
                "failed" => super::connect::Revoked::Failed,
                _ => super::connect::Revoked::None,
            });
        }
    }

    /// Runs without the store's lock: discovery and registration call other servers.
    fn connect(&self, c: &Caller, name: &str) -> ApiResult {
        let b: ConnectBody = body(c.req)?;
        let (resource, resource_tls) = match (&b.mcp_server, b.resource) {
            (Some(_), Some(_)) => {
                return Err(err(
                    Code::InvalidRequest,
                    "Give mcp_server or resource, not both.",
                ))
            }
            (Some(server), None) => {
                let (url, tls) = self.mcp_server_url(server)?;
                (Some(url), tls)
            }
            (None, r) => (r, None),
        };
        let redirect_uri = b
            .redirect_uri
            .unwrap_or_else(|| super::connect::default_redirect_uri(self.admin_addr));
        let spec = super::connect::Spec {
            name: name.to_string(),
            resource,
            issuer: b.issuer,
            client_id: b.client_id,
            client_secret: b.client_secret.map(zeroize::Zeroizing::new),
            scope: b.scope,
            redirect_uri,
            resource_tls,
        };
        let prepared = super::connect::prepare(spec, &self.tls);
        let store = self.store();
        let principal = self.authenticate(&store, c.req)?;
        Access::Operator.check(Some(&principal), None)?;
        let prepared = prepared.inspect_err(|e| {
            super::connect::record_start_failure(&store, &self.ring, &c.actor(), name, e);
        })?;
        let started = super::connect::start_as(&store, &self.ring, &c.actor(), prepared)?;
        Ok((201, to_value(&started)))
    }

    /// The URL and TLS policy of a configured MCP server (as a reload left them).
    fn mcp_server_url(&self, name: &str) -> Result<(String, Option<crate::config::Tls>), ApiError> {
        let servers: Vec<crate::config::McpServer> = match &self.mcp_view {
            Some(view) => view().into_iter().map(|(m, _)| m).collect(),
            None => self.mcp_servers.clone(),
        };
        let m = servers.iter().find(|m| m.name == name).ok_or_else(|| {
            err(
                Code::InvalidRequest,
                "mcp_server is not a configured MCP server ([[mcp_servers]] name).",
            )
        })?;
        Ok((m.endpoint_url(), m.tls.clone()))
    }

    fn complete_connect(&self, c: &Caller, name: &str) -> ApiResult {
        let b: ConnectComplete = body(c.req)?;
        let query = super::connect::pasted_query(&b.redirect_url, None)?;
        let actor = c.actor();
        let r = super::connect::complete_as(
            || self.store(),
            &self.ring,
            &self.tls,
            super::connect::Completer::Operator {
                actor: &actor,
                credential: name,
            },
            &actor,
            &query,
        );
        self.count_connect(&r);
        Ok((200, to_value(&r?)))
    }

    /// `GET /oauth/callback`: the browser, with no session; the state selects the connect.
    fn callback(&self, c: &Caller) -> ApiResult {
        let query = c.req.query.clone().unwrap_or_default();
        let request = super::Actor {
            id: "oauth-callback".into(),
            ..c.actor()
        };
        let r = super::connect::complete_as(
            || self.store(),
            &self.ring,
            &self.tls,
            super::connect::Completer::Browser,
            &request,
            &query,
        );
        self.count_connect(&r);
        if r.is_ok() {
            self.changed();
            if let Some(f) = &self.on_change {
                f(&self.store());
            }
        }
        Ok((200, to_value(&r?)))
    }

    // ---- MCP servers ----

    /// The configured MCP servers and whether each passes its health check (any user: it is
    /// the sidecar's configuration, with no secret in it).
    fn mcp_servers(&self) -> ApiResult {
        // Without a view of the running data plane (tests), the configured list, health unknown.
        let servers: Vec<(crate::config::McpServer, Option<bool>)> = match &self.mcp_view {
            Some(view) => view().into_iter().map(|(m, h)| (m, Some(h))).collect(),
            None => self.mcp_servers.iter().map(|m| (m.clone(), None)).collect(),
        };
        let data: Vec<Value> = servers
            .iter()
            .map(|(m, healthy)| {
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
                    "healthy": healthy,
                })
            })
            .collect();
        Ok((200, json!({ "data": data })))
    }

    // ---- audit ----

    fn audit(&self, store: &Store, c: &Caller) -> ApiResult {
        let p = c.principal()?;
        // The router checked the caller may read this org (their own when none is given).
        let org = match c.param("org_id") {
            Some(o) => Some(o.to_string()),
            None if p.operator => None,
            None => Some(p.org_id.clone().ok_or_else(denied)?),
        };
        let limit = match c.param("limit") {
            None => 100,
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=1000).contains(l))
                .ok_or_else(|| err(Code::InvalidRequest, "limit must be 1 to 1000."))?,
        };
        let after = match c.param("cursor") {
            None | Some("") => 0,
            Some(a) => a
                .parse::<i64>()
                .ok()
                .filter(|a| *a >= 0)
                .ok_or_else(|| err(Code::InvalidRequest, "Invalid cursor."))?,
        };
        let since = c
            .param("since")
            .map(|s| {
                store::parse_time(s)
                    .map(store::utc_text)
                    .ok_or_else(|| err(Code::InvalidRequest, "since must be an RFC 3339 time."))
            })
            .transpose()?;
        let filter = store::AuditFilter {
            org: org.as_deref(),
            since: since.as_deref(),
            action: c.param("action"),
            actor: c.param("actor"),
            outcome: match c.param("outcome") {
                None => None,
                Some(o @ ("success" | "failure")) => Some(o),
                Some(_) => {
                    return Err(err(
                        Code::InvalidRequest,
                        "outcome must be success or failure.",
                    ))
                }
            },
        };
        let rows = store.audit_page(after, &filter, limit)?;
        let next = (rows.len() as i64 == limit)
            .then(|| rows.last().map(|r| r.seq.to_string()))
            .flatten();
        let mut keys = audit::OrgKeys::new(&self.ring);
        let data: Vec<Value> = rows
            .into_iter()
            .map(|r| audit::row_json(&keys.open_row(store, r)))
            .collect();
        Ok((200, json!({"data": data, "next_cursor": next})))
    }
}

fn not_allowed() -> ApiError {
    err(Code::MethodNotAllowed, "Method not allowed on this route.")
}

fn disabled() -> ApiError {
    err(
        Code::AdminApiDisabled,
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

    /// The fields a request type accepts, read from serde's refusal of an unknown one (every
    /// request type denies unknown fields).
    fn fields<T: DeserializeOwned>() -> Vec<String> {
        let e = serde_json::from_str::<T>(r#"{"\u0001": 0}"#)
            .err()
            .expect("unknown fields are refused")
            .to_string();
        let expected = e.split(", expected ").nth(1).unwrap_or_default();
        let mut f: Vec<String> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect();
        f.sort();
        f
    }

    fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
        match v["$ref"].as_str() {
            Some(r) => doc.pointer(r.trim_start_matches('#')).expect(r),
            None => v,
        }
    }

    #[test]
    fn the_openapi_document_is_made_from_the_routes_codes_and_request_types() {
        let doc = openapi();
        assert_eq!(doc["openapi"].as_str().unwrap().get(..2), Some("3."));
        // Exactly the routes, each once.
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
            .map(|r| (r.method.to_string(), r.pattern.to_string()))
            .collect();
        routes.sort();
        let n = routes.len();
        routes.dedup();
        assert_eq!(routes.len(), n, "a route is listed twice");
        assert_eq!(documented, routes);
        // Every reference resolves.
        fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r);
                    }
                    m.values().for_each(|x| refs(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in all {
            assert!(doc.pointer(r.trim_start_matches('#')).is_some(), "{r}");
        }
        // The error codes are the server's, with their statuses documented on every route.
        let codes = &doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
            ["code"]["enum"];
        assert_eq!(codes.as_array().unwrap().len(), Code::ALL.len());
        for r in ROUTES {
            let op = &doc["paths"][r.pattern][r.method.to_ascii_lowercase()];
            for c in Code::ALL {
                assert!(
                    op["responses"][c.status().to_string()].is_object(),
                    "{} {}: {}",
                    r.method,
                    r.pattern,
                    c.as_str()
                );
            }
            // Public routes need no token; the others do (the document's default).
            assert_eq!(op["security"] == json!([]), r.access == Access::Public);
            assert_eq!(
                matches!(r.handler, Handler::Open(_)),
                r.access == Access::Public,
                "{}",
                r.pattern
            );
        }
        // Each request body schema has exactly the fields its Rust type accepts.
        let mut checked = 0;
        for r in ROUTES.iter().filter(|r| r.body.is_some()) {
            let name = r.body.unwrap();
            let rust = match name {
                "Login" => fields::<Login>(),
                "PasswordChange" => fields::<PasswordChange>(),
                "Reauth" => fields::<Reauth>(),
                "NewOrg" => fields::<NewOrg>(),
                "OrgPatch" => fields::<OrgPatch>(),
                "NewKey" => fields::<NewKey>(),
                "KeyPatch" => fields::<KeyPatch>(),
                "NewMember" => fields::<NewMember>(),
                "MemberPatch" => fields::<MemberPatch>(),
                "CredentialBody" => fields::<CredentialBody>(),
                "ConnectBody" => fields::<ConnectBody>(),
                "ConnectComplete" => fields::<ConnectComplete>(),
                other => panic!("no Rust type for request schema {other}"),
            };
            let s = resolve(&doc, &doc["components"]["schemas"][name]);
            let mut documented: Vec<String> = s["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            documented.sort();
            assert_eq!(documented, rust, "schema {name}");
            for req in s["required"].as_array().into_iter().flatten() {
                assert!(
                    rust.contains(&req.as_str().unwrap().to_string()),
                    "{name}: {req}"
                );
            }
            checked += 1;
        }
        assert!(checked >= 10, "{checked}");
        // The OAuth settings nested in a credential body too.
        let s = &doc["components"]["schemas"]["OAuthSettings"];
        let mut documented: Vec<String> = s["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        documented.sort();
        assert_eq!(documented, fields::<crate::auth::oauth::Settings>());
    }

    #[test]
    fn access_follows_the_role_order() {
        let p = |operator: bool, org: Option<&str>, role: Option<Role>| Principal {
            user_id: "u".into(),
            org_id: org.map(String::from),
            role,
            operator,
        };
        let op = p(true, None, None);
        let admin = p(false, Some("o1"), Some(Role::Admin));
        let auditor = p(false, Some("o1"), Some(Role::Auditor));
        let a = Access::Org(Role::Admin);
        assert!(a.check(Some(&op), Some("o2")).is_ok());
        assert!(a.check(Some(&admin), Some("o1")).is_ok());
        assert!(a.check(Some(&admin), Some("o2")).is_err());
        assert!(a.check(Some(&auditor), Some("o1")).is_err());
        assert!(a.check(None, Some("o1")).is_err());
        assert!(Access::Operator.check(Some(&admin), None).is_err());
        assert!(Access::Operator.check(Some(&op), None).is_ok());
        assert!(Access::User.check(Some(&auditor), None).is_ok());
        assert!(Access::Public.check(None, None).is_ok());
        let q = Access::QueryOrg(Role::Auditor);
        assert!(q.check(Some(&auditor), None).is_ok());
        assert!(q.check(Some(&auditor), Some("o2")).is_err());
        assert!(q.check(Some(&op), None).is_ok());
        assert_eq!(
            Access::Org(Role::Auditor).describe(),
            "operator, owner, admin, auditor"
        );
    }

    #[test]
    fn library_errors_are_worded_for_api_clients() {
        let e = ApiError::from(Error::Field {
            field: "client_id",
            reason: "must be 1 to 1024 printable characters".into(),
        });
        assert_eq!(e.code, Code::InvalidRequest);
        assert!(e.message.starts_with("client_id "), "{}", e.message);
        let e = ApiError::from(Error::TotpRequired {
            role: Role::Owner,
            user_id: "u1".into(),
        });
        assert!(e.message.contains("POST /api/auth/totp"), "{}", e.message);
        assert!(!e.message.contains("u1"));
        let e = ApiError::from(Error::EmptySecret);
        assert!(!e.message.contains("standard input"), "{}", e.message);
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
            assert_eq!(e.code, Code::InvalidBody);
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
        assert_eq!(body::<Login>(&r).err().unwrap().status(), 415);
    }

    #[test]
    fn a_body_is_one_json_object_and_null_is_not_absent() {
        let req = |b: &str| {
            let mut r = Request::default();
            r.content_type = Some("application/json".into());
            r.body = b.as_bytes().to_vec();
            r
        };
        // serde reads a struct from an array too (`[null]` would remove the first limit).
        for b in [
            "[null, null]",
            " [1]",
            "\"x\"",
            "null",
            r#"{"rpm": 5} {"rpm": 6}"#,
            r#"{"rpm": 5}x"#,
        ] {
            let e = body::<KeyPatch>(&req(b))
                .err()
                .unwrap_or_else(|| panic!("{b} accepted"));
            assert_eq!(e.code, Code::InvalidBody, "{b}");
        }
        // A limit's null removes it; a setting's null is refused (it is not "unchanged").
        let p = body::<KeyPatch>(&req(r#" {"rpm": null} "#)).unwrap();
        assert_eq!(p.rpm, Some(None));
        for field in ["pii", "budget_period", "mcp_tools"] {
            let b = format!(r#"{{"{field}": null}}"#);
            let e = body::<KeyPatch>(&req(&b))
                .err()
                .unwrap_or_else(|| panic!("{b} accepted"));
            assert_eq!(e.code, Code::InvalidBody, "{b}");
        }
    }
}
