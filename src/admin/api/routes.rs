//! The route table ([`ROUTES`]): each route's method, path, access, summary, body and
//! answer, from which the router, the 405 answers, the RBAC check and the OpenAPI document
//! ([`openapi`]) are all made.

use serde_json::{json, Value};

use super::*;

/// The hand-written part of the OpenAPI document: info and the component schemas. The paths,
/// who may call each and the error codes are added from [`ROUTES`] and [`Code`] ([`openapi`]).
pub(super) const OPENAPI_BASE: &str = include_str!("../openapi_base.json");

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

pub(super) fn rank(role: Role) -> u8 {
    match role {
        Role::Member => 0,
        Role::Auditor => 1,
        Role::Admin => 2,
        Role::Owner => 3,
    }
}

impl Access {
    /// Whether `p` may call the route for org `org` (the path's or the query's).
    pub(super) fn check(self, p: Option<&Principal>, org: Option<&str>) -> Result<(), ApiError> {
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
pub(super) enum Handler {
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
    pub(super) handler: Handler,
}

/// The path of the OpenAPI document (served even when the API is disabled).
pub const OPENAPI_PATH: &str = "/api/openapi.json";
pub(super) const LOGIN_PATH: &str = "/api/auth/login";
pub(super) const LOGOUT_PATH: &str = "/api/auth/logout";

pub(super) const CALLBACK_PATH: &str = crate::admin::connect::CALLBACK_PATH;

pub(super) const CALLBACK_QUERY: &[QueryParam] = &[
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

pub(super) const USAGE_QUERY: &[QueryParam] = &[
    (
        "org_id",
        r#"{"type":"string"}"#,
        false,
        "The org (required for operators; yours otherwise).",
    ),
    (
        "group_by",
        r#"{"type":"string","enum":["key","model"]}"#,
        false,
        "Per key (default) or per model.",
    ),
    (
        "bucket",
        r#"{"type":"string","enum":["hour","day"]}"#,
        false,
        "Hourly (default) or daily buckets, UTC.",
    ),
    (
        "since",
        r#"{"type":"string","format":"date-time"}"#,
        false,
        "From this time (RFC 3339, at most 400 days back; default the last day for hour, 30 days for day).",
    ),
];

pub(super) const AUDIT_QUERY: &[QueryParam] = &[
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
    route!("GET" "/api/audit/verify", Access::QueryOrg(Role::Auditor),
        "Check the whole audit chain (every org's records: it is one chain); names the first record that breaks it. One check runs at a time (429 otherwise)",
        (200, Shape::Schema("ChainCheck")), unlocked |a, c, _| a.audit_verify(c)),
    route!("GET" "/api/usage", Access::QueryOrg(Role::Auditor),
        "Token usage of an org per key or model per hour or day (from hourly roll-ups written with the audit records), and its budgets' consumption",
        (200, Shape::Schema("Usage")), |a, s, c, _| a.usage(s, c), query = USAGE_QUERY),
    route!("GET" "/api/overview", Access::User,
        "Health of upstreams, MCP servers and the fleet; traffic figures (operators only: they span every org) now and per minute over the last hour and day",
        (200, Shape::Schema("Overview")), |a, s, c, _| a.overview(s, c)),
    route!("GET" "/api/mcp/servers", Access::User, "The configured MCP servers and their health",
        (200, Shape::List("McpServer")), |a, _, _, _| a.mcp_servers()),
];

/// The policy's switches as properties of a schema that asks for them: a property
/// `"x-switches": "org"` (or `"key"`) is replaced, in its place, by one per switch, made from
/// their one table ([`policy::SWITCHES`]): the values it takes (a key's may also be
/// `inherit`), its title and description, and `"x-switch": true` (the console lists them so).
fn switch_properties(schema: &mut Value) {
    let Some(Value::Object(props)) = schema.get_mut("properties") else {
        return;
    };
    let Some(at) = props.keys().position(|k| k == "x-switches") else {
        return;
    };
    let key = props
        .shift_remove("x-switches")
        .as_ref()
        .and_then(Value::as_str)
        == Some("key");
    let values: Vec<&str> = if key {
        policy::KeySetting::ALL.iter().map(|s| s.as_str()).collect()
    } else {
        policy::Setting::ALL.iter().map(|s| s.as_str()).collect()
    };
    let switches = policy::SWITCHES.iter().map(|(name, s)| {
        let description = if key { s.key_help } else { s.help };
        let p = json!({"type": "string", "enum": values, "title": s.title,
            "description": description, "x-switch": true});
        (name.to_string(), p)
    });
    let mut all: Vec<(String, Value)> = std::mem::take(props).into_iter().collect();
    all.splice(at..at, switches);
    props.extend(all);
}

/// The OpenAPI document served at [`OPENAPI_PATH`]: [`OPENAPI_BASE`] with the paths made from
/// [`ROUTES`] (methods, parameters, access, bodies, answers) and the error codes from
/// [`Code::ALL`], so it cannot drift from what the server does.
pub fn openapi() -> Value {
    let mut doc: Value = serde_json::from_str(OPENAPI_BASE).unwrap_or_else(|_| json!({}));
    let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"] =
        json!(codes);
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.values_mut().for_each(switch_properties);
    }
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

/// The router over [`ROUTES`]: a path pattern to the indexes of its routes (one per method).
pub(super) fn router() -> matchit::Router<Vec<usize>> {
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

/// Whether `path` matches a route pattern.
pub fn matches_pattern(pattern: &str, path: &str) -> bool {
    let a: Vec<&str> = pattern.split('/').collect();
    let b: Vec<&str> = path.split('/').collect();
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(p, s)| (p.starts_with('{') && !s.is_empty()) || p == s)
}
