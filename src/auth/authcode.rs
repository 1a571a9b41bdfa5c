//! The OAuth 2.1 authorization code grant with PKCE, as hosted MCP servers require (the MCP
//! authorization specification): the protected resource's metadata (RFC 9728), its
//! authorization server's (RFC 8414, with the OpenID Connect discovery fallback), dynamic
//! client registration (RFC 7591), the authorization URL with PKCE S256 (RFC 7636), `state`
//! and the `resource` indicator (RFC 8707), the code exchange, and revocation (RFC 7009).
//!
//! Plain Rust over blocking `ureq` (run it off the async executor), with the token endpoints'
//! client ([`super::oauth::agent`]: `[tls]`, no redirects, bounded time). Every answer is read
//! bounded and strictly (a duplicate JSON member is refused). No token, code, verifier or
//! secret is ever logged or put in an error.

use base64::Engine;
use sha2::{Digest, Sha256};
use url::Url;
use zeroize::Zeroizing;

use super::oauth::{self, Client, ClientAuth, FetchError, Token};
use crate::error::shown;

/// Why a connect cannot go on. [`ConnectError::code`] is stable (API errors, audit, metrics).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// Metadata that cannot be found, fetched or read.
    #[error("{0}")]
    Discovery(String),
    /// A server sluice refuses to use: no PKCE S256, a plaintext endpoint, an issuer or
    /// resource that is not the one discovered.
    #[error("{0}")]
    Unsupported(String),
    #[error("dynamic client registration failed: {0}")]
    Registration(String),
}

impl ConnectError {
    /// A short stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectError::Discovery(_) => "oauth_discovery_failed",
            ConnectError::Unsupported(_) => "oauth_server_refused",
            ConnectError::Registration(_) => "oauth_registration_failed",
        }
    }
}

/// Whether endpoints may be plain `http://`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plaintext {
    /// https only (a real deployment).
    Refused,
    /// http to a loopback address too: only when the resource itself is loopback http (a local
    /// test server).
    Loopback,
}

fn is_loopback(u: &Url) -> bool {
    u.host_str().is_some_and(crate::config::is_loopback_host)
}

/// A list from outside as it may appear in an error: the first few, each [`shown`].
pub fn shown_list(v: &[String]) -> String {
    let mut out: Vec<String> = v.iter().take(8).map(|s| shown(s)).collect();
    if v.len() > 8 {
        out.push(format!("and {} more", v.len() - 8));
    }
    out.join(", ")
}

/// Check an endpoint `what` at `url`: https with a host, no credentials, no fragment; plain
/// http only to a loopback address and only when `plaintext` allows it.
pub fn check_endpoint(what: &str, url: &str, plaintext: Plaintext) -> Result<Url, ConnectError> {
    // Shown without credentials, query or fragment, whichever check refuses it.
    let shown = crate::error::shown_url(url);
    let u = Url::parse(url)
        .map_err(|_| ConnectError::Discovery(format!("the {what} {shown} is not a URL")))?;
    if u.host().is_none() || !u.username().is_empty() || u.password().is_some() {
        return Err(ConnectError::Unsupported(format!(
            "the {what} {shown} must have a host and no credentials"
        )));
    }
    if u.fragment().is_some() {
        return Err(ConnectError::Unsupported(format!(
            "the {what} {shown} must not have a fragment"
        )));
    }
    match u.scheme() {
        "https" => Ok(u),
        "http" if plaintext == Plaintext::Loopback && is_loopback(&u) => Ok(u),
        _ => Err(ConnectError::Unsupported(format!(
            "the {what} {shown} is not https:// (plain http:// only to a loopback address, for a local test MCP server)"
        ))),
    }
}

/// The plaintext policy for a resource at `resource`: loopback http only when the resource is
/// itself loopback http (a local test server: nothing crosses the network).
pub fn plaintext_for(resource: Option<&Url>) -> Plaintext {
    if resource.is_some_and(|r| r.scheme() == "http" && is_loopback(r)) {
        Plaintext::Loopback
    } else {
        Plaintext::Refused
    }
}

/// GET `url` as JSON: the object, or why not (`None` with a 404-like answer the caller may
/// skip).
fn get_json(
    agent: &ureq::Agent,
    what: &str,
    url: &Url,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ConnectError> {
    let resp = match agent
        .get(url.as_str())
        .set("accept", "application/json")
        .call()
    {
        Ok(r) => r,
        Err(ureq::Error::Status(404 | 400 | 401 | 403 | 405, _)) => return Ok(None),
        Err(ureq::Error::Status(s, _)) => {
            return Err(ConnectError::Discovery(format!(
                "the {what} at {} answered HTTP {s}",
                crate::error::shown_url(url.as_str())
            )))
        }
        Err(ureq::Error::Transport(_)) => {
            return Err(ConnectError::Discovery(format!(
                "the {what} at {} cannot be reached",
                crate::error::shown_url(url.as_str())
            )))
        }
    };
    if (300..400).contains(&resp.status()) {
        // Redirects are not followed (the agent's rule): a moved document is not trusted.
        return Err(ConnectError::Discovery(format!(
            "the {what} at {} redirects (not followed)",
            crate::error::shown_url(url.as_str())
        )));
    }
    let body = read(resp, what)?;
    object(&body, what).map(Some)
}

fn read(resp: ureq::Response, what: &str) -> Result<Vec<u8>, ConnectError> {
    oauth::read_bounded(resp).map_err(|e| {
        ConnectError::Discovery(match e {
            FetchError::Invalid => format!("the {what} is over {} bytes", oauth::MAX_ANSWER_BYTES),
            _ => format!("the {what} could not be read"),
        })
    })
}

/// A JSON object read strictly (a duplicate member is refused: two readers could differ).
fn object(
    body: &[u8],
    what: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, ConnectError> {
    match crate::json::parse(body) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(ConnectError::Discovery(format!(
            "the {what} is not one JSON object (or repeats a member)"
        ))),
    }
}

fn string(
    m: &serde_json::Map<String, serde_json::Value>,
    field: &str,
    what: &str,
) -> Result<Option<String>, ConnectError> {
    match m.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= 2048 => {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(ConnectError::Discovery(format!(
            "the {what}'s {field} is not a string"
        ))),
    }
}

fn strings(
    m: &serde_json::Map<String, serde_json::Value>,
    field: &str,
    what: &str,
) -> Result<Option<Vec<String>>, ConnectError> {
    match m.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Array(a)) if a.len() <= 256 => a
            .iter()
            .map(|v| match v {
                serde_json::Value::String(s) if s.len() <= 2048 => Ok(s.clone()),
                _ => Err(ConnectError::Discovery(format!(
                    "the {what}'s {field} is not a list of strings"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ConnectError::Discovery(format!(
            "the {what}'s {field} is not a list of strings"
        ))),
    }
}

/// Two identifiers that RFC 8414 and 9728 want identical, allowing only a trailing `/` of
/// difference (`https://as.example.com` and `https://as.example.com/` are written both ways).
pub fn same_id(a: &str, b: &str) -> bool {
    a.strip_suffix('/').unwrap_or(a) == b.strip_suffix('/').unwrap_or(b)
}

/// The `resource_metadata` parameter of a `WWW-Authenticate: Bearer ...` challenge.
pub fn resource_metadata_param(header: &str) -> Option<String> {
    let lower = header.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("resource_metadata") {
        let at = from + i;
        from = at + 1;
        // A parameter name starts the header or follows a separator.
        if at > 0 && !matches!(lower.as_bytes()[at - 1], b' ' | b',' | b'\t') {
            continue;
        }
        let rest = header[at + "resource_metadata".len()..].trim_start();
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => return Some(out),
                    '\\' => out.push(chars.next()?),
                    c => out.push(c),
                }
            }
            return None;
        }
        let token: String = rest
            .chars()
            .take_while(|c| !matches!(c, ',' | ' ' | '\t'))
            .collect();
        return (!token.is_empty()).then_some(token);
    }
    None
}

/// What the protected resource says of itself (RFC 9728).
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Its identifier (the RFC 8707 `resource` sent with every token request).
    pub resource: String,
    pub authorization_servers: Vec<String>,
    pub scopes: Vec<String>,
}

/// Discover the protected resource metadata of `resource` (an MCP server's endpoint): from
/// the `resource_metadata` of the `WWW-Authenticate` header it answers an unauthenticated
/// request with, else at the well-known URLs (path-inserted, then the root). Its `resource`
/// must be `resource` itself.
pub fn protected_resource(
    agent: &ureq::Agent,
    resource: &Url,
    plaintext: Plaintext,
) -> Result<Resource, ConnectError> {
    let what = "protected resource metadata";
    let hinted = match agent
        .get(resource.as_str())
        .set("accept", "application/json, text/event-stream")
        .call()
    {
        Err(ureq::Error::Status(_, resp)) => resp
            .header("www-authenticate")
            .and_then(resource_metadata_param),
        Ok(resp) => resp
            .header("www-authenticate")
            .and_then(resource_metadata_param),
        Err(ureq::Error::Transport(_)) => {
            return Err(ConnectError::Discovery(format!(
                "the MCP server {} cannot be reached",
                crate::error::shown_url(resource.as_str())
            )))
        }
    };
    let mut candidates = Vec::new();
    if let Some(h) = hinted {
        // On the resource's own origin: a server's 401 does not send sluice to another host
        // (and so to a private address it chose).
        let hint = check_endpoint(what, &h, plaintext)?;
        if hint.origin() != resource.origin() {
            return Err(ConnectError::Unsupported(format!(
                "the MCP server's 401 points its metadata at another origin ({}): refused",
                crate::error::shown_url(&h)
            )));
        }
        candidates.push(hint);
    } else {
        let path = resource.path().trim_end_matches('/');
        let mut base = resource.clone();
        base.set_query(None);
        if !path.is_empty() {
            base.set_path(&format!("/.well-known/oauth-protected-resource{path}"));
            candidates.push(base.clone());
        }
        base.set_path("/.well-known/oauth-protected-resource");
        candidates.push(base);
    }
    for url in &candidates {
        let Some(m) = get_json(agent, what, url)? else {
            continue;
        };
        let id = string(&m, "resource", what)?
            .ok_or_else(|| ConnectError::Discovery(format!("the {what} has no resource")))?;
        if !same_id(&id, resource.as_str()) {
            return Err(ConnectError::Unsupported(format!(
                "the {what} is for {}, not {} (RFC 9728 3.3)",
                crate::error::shown_url(&id),
                crate::error::shown_url(resource.as_str())
            )));
        }
        let servers = strings(&m, "authorization_servers", what)?.unwrap_or_default();
        if servers.is_empty() {
            return Err(ConnectError::Discovery(format!(
                "the {what} names no authorization server"
            )));
        }
        return Ok(Resource {
            resource: id,
            authorization_servers: servers,
            scopes: strings(&m, "scopes_supported", what)?.unwrap_or_default(),
        });
    }
    Err(ConnectError::Discovery(format!(
        "no {what} for {} (its 401 names none, and none at {})",
        crate::error::shown_url(resource.as_str()),
        candidates
            .iter()
            .map(|u| crate::error::shown_url(u.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// An authorization server's metadata (RFC 8414), checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub registration_endpoint: Option<Url>,
    pub revocation_endpoint: Option<Url>,
    /// `token_endpoint_auth_methods_supported` (RFC 8414's default: `client_secret_basic`).
    pub auth_methods: Vec<String>,
    pub scopes: Vec<String>,
    /// RFC 9207: the server sends `iss` with the authorization response.
    pub iss_parameter: bool,
}

/// Discover and check the metadata of the authorization server `issuer`: the RFC 8414
/// well-known URL, then OpenID Connect discovery (path-inserted, then path-appended). The
/// metadata's `issuer` must be `issuer`; `S256` must be among its PKCE methods; every endpoint
/// must pass [`check_endpoint`].
pub fn authorization_server(
    agent: &ureq::Agent,
    issuer: &str,
    plaintext: Plaintext,
) -> Result<Server, ConnectError> {
    let what = "authorization server metadata";
    let base = check_endpoint("issuer", issuer, plaintext)?;
    if base.query().is_some() {
        return Err(ConnectError::Unsupported(format!(
            "the issuer {} has a query (RFC 8414 2)",
            crate::error::shown_url(issuer)
        )));
    }
    let path = base.path().trim_end_matches('/').to_string();
    let at = |p: String| {
        let mut u = base.clone();
        u.set_path(&p);
        u
    };
    let candidates = if path.is_empty() {
        vec![
            at("/.well-known/oauth-authorization-server".into()),
            at("/.well-known/openid-configuration".into()),
        ]
    } else {
        vec![
            at(format!("/.well-known/oauth-authorization-server{path}")),
            at(format!("/.well-known/openid-configuration{path}")),
            at(format!("{path}/.well-known/openid-configuration")),
        ]
    };
    for url in &candidates {
        let Some(m) = get_json(agent, what, url)? else {
            continue;
        };
        let stated = string(&m, "issuer", what)?.unwrap_or_default();
        if !same_id(&stated, issuer) {
            return Err(ConnectError::Unsupported(format!(
                "the {what} at {} names the issuer {}, not {} (RFC 8414 3.3: a server must not speak for another)",
                crate::error::shown_url(url.as_str()),
                crate::error::shown_url(&stated),
                crate::error::shown_url(issuer)
            )));
        }
        let methods = strings(&m, "code_challenge_methods_supported", what)?.unwrap_or_default();
        if !methods.iter().any(|m| m == "S256") {
            return Err(ConnectError::Unsupported(format!(
                "the authorization server {} does not list S256 in code_challenge_methods_supported: PKCE is required",
                crate::error::shown_url(issuer)
            )));
        }
        if let Some(types) = strings(&m, "response_types_supported", what)? {
            if !types.iter().any(|t| t == "code") {
                return Err(ConnectError::Unsupported(format!(
                    "the authorization server {} does not support the code response type",
                    crate::error::shown_url(issuer)
                )));
            }
        }
        if let Some(grants) = strings(&m, "grant_types_supported", what)? {
            if !grants.iter().any(|g| g == "authorization_code") {
                return Err(ConnectError::Unsupported(format!(
                    "the authorization server {} does not support the authorization_code grant",
                    crate::error::shown_url(issuer)
                )));
            }
        }
        let endpoint = |field: &str, required: bool| -> Result<Option<Url>, ConnectError> {
            match string(&m, field, what)? {
                Some(u) => check_endpoint(field, &u, plaintext).map(Some),
                None if required => Err(ConnectError::Discovery(format!(
                    "the {what} has no {field}"
                ))),
                None => Ok(None),
            }
        };
        let authorization_endpoint = endpoint("authorization_endpoint", true)?
            .ok_or_else(|| ConnectError::Discovery("no authorization_endpoint".into()))?;
        let token_endpoint = endpoint("token_endpoint", true)?
            .ok_or_else(|| ConnectError::Discovery("no token_endpoint".into()))?;
        let iss_parameter = matches!(
            m.get("authorization_response_iss_parameter_supported"),
            Some(serde_json::Value::Bool(true))
        );
        return Ok(Server {
            issuer: issuer.to_string(),
            authorization_endpoint,
            token_endpoint,
            registration_endpoint: endpoint("registration_endpoint", false)?,
            revocation_endpoint: endpoint("revocation_endpoint", false)?,
            auth_methods: strings(&m, "token_endpoint_auth_methods_supported", what)?
                .unwrap_or_else(|| vec!["client_secret_basic".into()]),
            scopes: strings(&m, "scopes_supported", what)?.unwrap_or_default(),
            iss_parameter,
        });
    }
    Err(ConnectError::Discovery(format!(
        "no {what} for {} (tried {})",
        crate::error::shown_url(issuer),
        candidates
            .iter()
            .map(|u| crate::error::shown_url(u.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// A client sluice signs in as.
pub struct ClientInfo {
    pub id: String,
    pub secret: Option<Zeroizing<String>>,
    pub auth: ClientAuth,
    /// Registered dynamically (RFC 7591).
    pub registered: bool,
}

/// The first of the server's client authentication methods that is one of `usable` (the
/// server's order is its preference; RFC 8414's default is `client_secret_basic`).
fn preferred(server: &Server, usable: &[ClientAuth]) -> Option<ClientAuth> {
    server
        .auth_methods
        .iter()
        .filter_map(|m| ClientAuth::parse(m))
        .find(|m| usable.contains(m))
}

/// A configured client: how it authenticates, from what the server supports (a client
/// without a secret is public).
pub fn configured_client(
    server: &Server,
    id: String,
    secret: Option<Zeroizing<String>>,
) -> Result<ClientInfo, ConnectError> {
    let auth = match &secret {
        None => ClientAuth::None,
        Some(_) => preferred(
            server,
            &[ClientAuth::ClientSecretBasic, ClientAuth::ClientSecretPost],
        )
        .ok_or_else(|| {
            ConnectError::Unsupported(format!(
                "the authorization server supports neither client_secret_basic nor client_secret_post (it lists {})",
                shown_list(&server.auth_methods)
            ))
        })?,
    };
    Ok(ClientInfo {
        id,
        secret,
        auth,
        registered: false,
    })
}

fn printable(s: &str) -> bool {
    !s.is_empty() && s.len() <= 1024 && !s.bytes().any(|b| b < 0x20 || b == 0x7f)
}

/// Register sluice as a client of `server` (RFC 7591) for `redirect_uri`.
pub fn register(
    agent: &ureq::Agent,
    server: &Server,
    redirect_uri: &str,
    scope: Option<&str>,
) -> Result<ClientInfo, ConnectError> {
    let endpoint = server.registration_endpoint.as_ref().ok_or_else(|| {
        ConnectError::Registration(format!(
            "the authorization server {} offers no dynamic registration: pass a client id registered there (--client-id)",
            crate::error::shown_url(&server.issuer)
        ))
    })?;
    let asked = preferred(
        server,
        &[
            ClientAuth::ClientSecretBasic,
            ClientAuth::ClientSecretPost,
            ClientAuth::None,
        ],
    )
    .ok_or_else(|| {
        ConnectError::Registration(format!(
            "the authorization server lists no client authentication sluice does (client_secret_basic, client_secret_post, none): {}",
            shown_list(&server.auth_methods)
        ))
    })?;
    let mut meta = serde_json::json!({
        "client_name": "sluice",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": asked.as_str(),
    });
    if let Some(scope) = scope {
        meta["scope"] = scope.into();
    }
    let resp = match agent
        .post(endpoint.as_str())
        .set("accept", "application/json")
        .send_json(meta)
    {
        Ok(r) => r,
        Err(ureq::Error::Status(s, _)) => {
            return Err(ConnectError::Registration(format!(
                "{} answered HTTP {s}",
                crate::error::shown_url(endpoint.as_str())
            )))
        }
        Err(ureq::Error::Transport(_)) => {
            return Err(ConnectError::Registration(format!(
                "{} cannot be reached",
                crate::error::shown_url(endpoint.as_str())
            )))
        }
    };
    let what = "registration answer";
    let body =
        Zeroizing::new(read(resp, what).map_err(|e| ConnectError::Registration(e.to_string()))?);
    let m = object(&body, what).map_err(|e| ConnectError::Registration(e.to_string()))?;
    let bad = |why: &str| ConnectError::Registration(format!("the {what} {why}"));
    let id = match m.get("client_id") {
        Some(serde_json::Value::String(s)) if printable(s) => s.clone(),
        _ => return Err(bad("has no usable client_id")),
    };
    let secret = match m.get("client_secret") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if printable(s) => Some(Zeroizing::new(s.clone())),
        Some(_) => return Err(bad("has a client_secret that is not a printable string")),
    };
    let auth = match m.get("token_endpoint_auth_method") {
        None | Some(serde_json::Value::Null) => asked,
        Some(serde_json::Value::String(s)) => ClientAuth::parse(s)
            .ok_or_else(|| bad("gives a client authentication sluice does not do"))?,
        Some(_) => return Err(bad("has a token_endpoint_auth_method that is not a string")),
    };
    if auth != ClientAuth::None && secret.is_none() {
        return Err(bad("gives no client_secret for a confidential client"));
    }
    // RFC 7591 3.2.1: 0 means it does not expire.
    if let Some(exp) = m.get("client_secret_expires_at").and_then(|v| v.as_i64()) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if exp != 0 && exp <= now {
            return Err(bad("gives a client secret that has already expired"));
        }
    }
    Ok(ClientInfo {
        id,
        secret,
        auth,
        registered: true,
    })
}

/// 32 random bytes, base64url without padding (43 characters): a PKCE verifier or a state.
pub fn random_token() -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut *raw);
    Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*raw))
}

/// The S256 challenge of a PKCE verifier (RFC 7636 4.2).
pub fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// How a state is kept: its SHA-256, hex.
pub fn state_hash(state: &str) -> String {
    Sha256::digest(state.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What an authorization request carries.
pub struct Authorize<'a> {
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub challenge: &'a str,
    pub state: &'a str,
    pub resource: Option<&'a str>,
    pub scope: Option<&'a str>,
}

/// The URL the operator opens: the authorization endpoint with the request in its query.
pub fn authorization_url(endpoint: &Url, a: &Authorize<'_>) -> String {
    let mut u = endpoint.clone();
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", a.client_id)
            .append_pair("redirect_uri", a.redirect_uri)
            .append_pair("code_challenge", a.challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", a.state);
        if let Some(r) = a.resource {
            q.append_pair("resource", r);
        }
        if let Some(s) = a.scope {
            q.append_pair("scope", s);
        }
    }
    u.into()
}

/// Exchange an authorization code (with its PKCE verifier) for tokens.
pub fn exchange(
    agent: &ureq::Agent,
    token_url: &str,
    client: &Client<'_>,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
    resource: Option<&str>,
) -> Result<Token, FetchError> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("code_verifier", verifier),
        ("redirect_uri", redirect_uri),
    ];
    if let Some(r) = resource {
        form.push(("resource", r));
    }
    oauth::post_token(agent, token_url, form, client)
}

/// Where an authorization response sent the browser, read strictly: each parameter at most
/// once (a repeated `state` or `code` could be read two ways).
#[derive(Default)]
pub struct Callback {
    pub code: Option<Zeroizing<String>>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
}

/// Read the query of a callback. `Err` names a parameter given twice.
pub fn callback_query(query: &str) -> Result<Callback, String> {
    let mut cb = Callback::default();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let slot: &mut Option<String> = match k.as_ref() {
            "state" => &mut cb.state,
            "iss" => &mut cb.iss,
            "error" => &mut cb.error,
            "code" => {
                if cb.code.is_some() {
                    return Err("code".into());
                }
                cb.code = Some(Zeroizing::new(v.into_owned()));
                continue;
            }
            _ => continue,
        };
        if slot.is_some() {
            return Err(k.into_owned());
        }
        *slot = Some(v.into_owned());
    }
    Ok(cb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_https_or_loopback_http_when_allowed() {
        let ok = |u: &str, p| check_endpoint("x", u, p).is_ok();
        assert!(ok("https://as.example.com/token", Plaintext::Refused));
        assert!(!ok("http://127.0.0.1:9/token", Plaintext::Refused));
        assert!(ok("http://127.0.0.1:9/token", Plaintext::Loopback));
        assert!(ok("http://localhost:9/token", Plaintext::Loopback));
        assert!(ok("http://[::1]:9/token", Plaintext::Loopback));
        assert!(!ok("http://192.0.2.1/token", Plaintext::Loopback));
        assert!(!ok("http://127.0.0.1.example.com/t", Plaintext::Loopback));
        assert!(!ok("https://u:p@as.example.com/t", Plaintext::Refused));
        assert!(!ok("https://as.example.com/t#f", Plaintext::Refused));
        assert!(!ok("ftp://as.example.com/t", Plaintext::Loopback));
        assert!(!ok("nonsense", Plaintext::Loopback));
        let loopback = Url::parse("http://127.0.0.1:8/mcp").unwrap();
        let remote = Url::parse("https://mcp.example.com/mcp").unwrap();
        assert_eq!(plaintext_for(Some(&loopback)), Plaintext::Loopback);
        assert_eq!(plaintext_for(Some(&remote)), Plaintext::Refused);
        assert_eq!(plaintext_for(None), Plaintext::Refused);
        assert_eq!(shown("a\u{1b}[31m"), "a\\u{1b}[31m");
        assert_eq!(shown(&"x".repeat(300)).len(), 203);
        // Whichever check refuses an endpoint, its refusal shows no credentials, query or
        // fragment (an operator's --issuer may carry them).
        for u in [
            "https://u:CANARY@as.example.com/t",
            "http://u:CANARY@192.0.2.1/t",
            "https://as.example.com/t#CANARY",
            "ftp://as.example.com/t?token=CANARY",
            "CANARY",
        ] {
            let Err(e) = check_endpoint("issuer", u, Plaintext::Refused) else {
                panic!("{u} accepted")
            };
            assert!(!e.to_string().contains("CANARY"), "{u}: {e}");
        }
    }

    #[test]
    fn the_resource_metadata_parameter_is_read_from_a_challenge() {
        let p = resource_metadata_param;
        assert_eq!(
            p(r#"Bearer error="invalid_token", resource_metadata="https://x/.well-known/oauth-protected-resource/mcp""#)
                .as_deref(),
            Some("https://x/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(
            p("Bearer Resource_Metadata=https://x/m, scope=a").as_deref(),
            Some("https://x/m")
        );
        assert_eq!(p(r#"Bearer x_resource_metadata="https://evil""#), None);
        assert_eq!(p(r#"Bearer resource_metadata="unterminated"#), None);
        assert_eq!(p("Bearer realm=x"), None);
        assert_eq!(
            p(r#"Bearer resource_metadata="a\"b""#).as_deref(),
            Some("a\"b")
        );
    }

    #[test]
    fn pkce_state_and_the_authorization_url() {
        let v = random_token();
        assert_eq!(v.len(), 43);
        assert_ne!(*v, *random_token());
        // RFC 7636 appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(state_hash("x").len(), 64);
        let endpoint = Url::parse("https://as.example.com/authorize?tenant=a").unwrap();
        let url = authorization_url(
            &endpoint,
            &Authorize {
                client_id: "c 1",
                redirect_uri: "http://127.0.0.1:9091/oauth/callback",
                challenge: "ch",
                state: "st",
                resource: Some("https://mcp.example.com/mcp"),
                scope: Some("read write"),
            },
        );
        assert_eq!(
            url,
            "https://as.example.com/authorize?tenant=a&response_type=code&client_id=c+1&redirect_uri=http%3A%2F%2F127.0.0.1%3A9091%2Foauth%2Fcallback&code_challenge=ch&code_challenge_method=S256&state=st&resource=https%3A%2F%2Fmcp.example.com%2Fmcp&scope=read+write"
        );
    }

    #[test]
    fn a_callback_names_each_parameter_once() {
        let cb = callback_query("code=abc&state=s1&iss=https%3A%2F%2Fas&x=1").unwrap();
        assert_eq!(cb.code.as_deref().map(String::as_str), Some("abc"));
        assert_eq!(cb.state.as_deref(), Some("s1"));
        assert_eq!(cb.iss.as_deref(), Some("https://as"));
        assert_eq!(
            callback_query("code=a&code=b&state=s").err().as_deref(),
            Some("code")
        );
        assert_eq!(
            callback_query("state=a&code=b&state=s").err().as_deref(),
            Some("state")
        );
        assert!(callback_query("error=access_denied&state=s")
            .unwrap()
            .error
            .is_some());
        assert!(same_id("https://as.example.com/", "https://as.example.com"));
        assert!(!same_id(
            "https://as.example.com/a",
            "https://as.example.com/b"
        ));
    }
}
