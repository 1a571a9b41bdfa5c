//! Connecting an OAuth credential with the authorization code grant and PKCE (`sluice
//! credentials connect`, `POST /api/credentials/{name}/connect`, `GET /oauth/callback`), and
//! revoking a connected credential's tokens (RFC 7009) when it is deleted or connected again.
//!
//! A connect is two steps. [`prepare`] discovers the servers and registers a client (network,
//! no store), then [`start`] records the flow: the `state` as its SHA-256 only, the PKCE
//! verifier and any client secret sealed, who started it, and an expiry 10 minutes out. The
//! browser comes back to the callback with `code` and `state`; [`complete`] uses the flow
//! once (unknown, used, expired, another operator's or another credential's: refused, nothing
//! stored), checks RFC 9207's `iss`, exchanges the code with the verifier, and stores the tokens
//! sealed as `set-oauth` does. Every outcome has an audit record; none holds a token, code,
//! verifier, state or secret.

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use url::Url;
use zeroize::Zeroizing;

use super::{Actor, CredentialView, Error, Result};
use crate::auth::authcode::{self, ConnectError};
use crate::auth::oauth::{self, Client, ClientAuth};
use crate::store::{self, Claim, Store};
use crate::vault::{self, Keyring};

/// How long a started connect waits for its callback.
pub const FLOW_SECS: i64 = 600;
/// The callback path on the admin listener.
pub const CALLBACK_PATH: &str = "/oauth/callback";

fn oauth_error(code: &'static str, message: impl Into<String>) -> Error {
    Error::OAuth {
        code,
        message: message.into(),
    }
}

impl From<ConnectError> for Error {
    fn from(e: ConnectError) -> Error {
        oauth_error(e.code(), e.to_string())
    }
}

/// What a connect is asked for.
#[derive(Default)]
pub struct Spec {
    /// The credential to connect (created, or replaced once connected).
    pub name: String,
    /// The protected resource: an MCP server's URL (or `--resource`). Its metadata names the
    /// authorization server; it is the RFC 8707 `resource` of every token request.
    pub resource: Option<String>,
    /// The authorization server, when the resource names none (or to pick one of several).
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Zeroizing<String>>,
    /// Space-separated scopes (default: those the resource, else the server, lists).
    pub scope: Option<String>,
    /// Where the browser comes back: the admin listener's [`CALLBACK_PATH`] (loopback only).
    pub redirect_uri: String,
    /// The TLS policy of the resource (its `[[mcp_servers]]` entry's, pins included), for the
    /// requests to it; `None`: `[tls]`.
    pub resource_tls: Option<crate::config::Tls>,
}

/// What the code exchange needs (stored with the flow as JSON; no secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Plan {
    issuer: String,
    iss_parameter: bool,
    token_url: String,
    revocation_url: Option<String>,
    client_id: String,
    client_auth: ClientAuth,
    registered: bool,
    redirect_uri: String,
    resource: Option<String>,
    scope: Option<String>,
}

/// A connect ready to start: servers discovered, client known.
pub struct Prepared {
    name: String,
    plan: Plan,
    authorization_endpoint: Url,
    client_secret: Option<Zeroizing<String>>,
}

/// A started connect: the URL to open (it holds the state: no `Debug`), and how to follow it.
#[derive(Serialize)]
pub struct Started {
    pub flow_id: String,
    pub credential: String,
    pub authorization_url: String,
    pub redirect_uri: String,
    pub issuer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub client_id: String,
    /// The client was registered dynamically (RFC 7591) for this connect.
    pub registered: bool,
    /// The scopes asked for (space-separated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// RFC 3339: the state is refused after this.
    pub expires_at: String,
}

/// Check a redirect URI and return it as it is sent: the admin listener's [`CALLBACK_PATH`]
/// on a loopback IP address (RFC 8252 8.3: not `localhost`), http or https, no credentials,
/// query or fragment. A code sent anywhere else could be caught there. What is checked is the
/// parsed URL, and that (re-serialised) is what goes out: a `\` or a tab that one parser
/// reads differently from another never reaches the authorization server.
pub fn check_redirect_uri(uri: &str) -> Result<String> {
    let bad = |why: &str| Error::Field {
        field: "redirect_uri",
        reason: why.into(),
    };
    let u = Url::parse(uri).map_err(|_| bad("is not a URL"))?;
    let loopback = match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    };
    if !matches!(u.scheme(), "http" | "https") || !loopback {
        return Err(bad(
            "must be http(s) to a loopback IP address (the admin listener, e.g. http://127.0.0.1:8481/oauth/callback; reach it over an SSH tunnel, or paste the URL the browser was sent to)",
        ));
    }
    if u.query().is_some()
        || u.fragment().is_some()
        || !u.username().is_empty()
        || u.password().is_some()
    {
        return Err(bad("must have no query, fragment or credentials"));
    }
    if u.path() != CALLBACK_PATH {
        return Err(bad(
            "must have the path /oauth/callback (the admin listener's)",
        ));
    }
    Ok(u.to_string())
}

/// The default redirect URI: the admin listener's callback on its loopback address (a
/// wildcard or other address as 127.0.0.1 or [::1]: reached over a tunnel, or pasted).
pub fn default_redirect_uri(admin: std::net::SocketAddr) -> String {
    let ip = match admin.ip() {
        std::net::IpAddr::V4(v4) if v4.is_loopback() => v4.to_string(),
        std::net::IpAddr::V6(v6) if v6.is_loopback() => format!("[{v6}]"),
        std::net::IpAddr::V4(_) => "127.0.0.1".into(),
        std::net::IpAddr::V6(_) => "[::1]".into(),
    };
    format!("http://{ip}:{}{CALLBACK_PATH}", admin.port())
}

fn url_field(field: &'static str, value: &str) -> Result<Url> {
    let u = Url::parse(value).map_err(|_| Error::Field {
        field,
        reason: "is not a URL".into(),
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() || u.fragment().is_some() {
        return Err(Error::Field {
            field,
            reason: "must be an http(s) URL with a host and no fragment".into(),
        });
    }
    Ok(u)
}

/// Discover the servers and the client (network; no store). Runs without the store's lock.
pub fn prepare(spec: Spec, tls: &crate::config::Tls) -> Result<Prepared> {
    super::check_credential_name(&spec.name)?;
    let redirect_uri = check_redirect_uri(&spec.redirect_uri)?;
    // What the operator gave is checked as their input (400), before any request.
    let resource_url = spec
        .resource
        .as_deref()
        .map(|r| url_field("resource", r))
        .transpose()?;
    let plaintext = authcode::plaintext_for(resource_url.as_ref());
    if let Some(r) = &resource_url {
        authcode::check_endpoint("resource", r.as_str(), plaintext).map_err(|e| Error::Field {
            field: "resource",
            reason: format!("refused: {e}"),
        })?;
    }
    if let Some(i) = &spec.issuer {
        authcode::check_endpoint("issuer", url_field("issuer", i)?.as_str(), plaintext).map_err(
            |e| Error::Field {
                field: "issuer",
                reason: format!("refused: {e}"),
            },
        )?;
    }
    if spec.client_secret.is_some() && spec.issuer.is_none() {
        // A secret goes only to the server the operator named, never to one a resource's
        // metadata picks.
        return Err(Error::Field {
            field: "client_secret",
            reason: "needs issuer: the authorization server the client is registered at".into(),
        });
    }
    let agent = oauth::agent(tls, &[])
        .map_err(|_| oauth_error("oauth_discovery_failed", "no TLS client could be built"))?;
    let discovered = match &resource_url {
        Some(r) => {
            let rtls = spec.resource_tls.as_ref().unwrap_or(tls);
            let ragent = oauth::agent(rtls, &rtls.pins).map_err(|_| {
                oauth_error("oauth_discovery_failed", "no TLS client could be built")
            })?;
            Some(authcode::protected_resource(&ragent, r, plaintext)?)
        }
        None => None,
    };
    let issuer = match (&discovered, &spec.issuer) {
        (Some(d), Some(i)) => d
            .authorization_servers
            .iter()
            .find(|s| authcode::same_id(s, i))
            .cloned()
            .ok_or_else(|| {
                oauth_error(
                    "oauth_server_refused",
                    format!(
                        "the resource names the authorization servers {}, not the issuer given",
                        authcode::shown_list(&d.authorization_servers)
                    ),
                )
            })?,
        (Some(d), None) if d.authorization_servers.len() == 1 => {
            d.authorization_servers[0].clone()
        }
        (Some(d), None) => {
            return Err(Error::Field {
                field: "issuer",
                reason: format!(
                    "is needed: the resource names several authorization servers ({})",
                    authcode::shown_list(&d.authorization_servers)
                ),
            })
        }
        (None, Some(i)) => i.clone(),
        (None, None) => {
            return Err(Error::Invalid(
                "give an MCP server or resource (its metadata names the authorization server), or an issuer".into(),
            ))
        }
    };
    let server = authcode::authorization_server(&agent, &issuer, plaintext)?;
    let scope = spec.scope.clone().or_else(|| {
        let listed = discovered
            .as_ref()
            .map(|d| d.scopes.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| server.scopes.clone());
        (!listed.is_empty()).then(|| listed.join(" "))
    });
    let client = match spec.client_id {
        Some(id) => authcode::configured_client(&server, id, spec.client_secret)?,
        None => authcode::register(&agent, &server, &redirect_uri, scope.as_deref())?,
    };
    let resource = discovered.map(|d| d.resource).or(spec.resource);
    let plan = Plan {
        issuer: server.issuer.clone(),
        iss_parameter: server.iss_parameter,
        token_url: server.token_endpoint.to_string(),
        revocation_url: server.revocation_endpoint.as_ref().map(Url::to_string),
        client_id: client.id,
        client_auth: client.auth,
        registered: client.registered,
        redirect_uri,
        resource,
        scope,
    };
    // What will be stored is checked now, not after the code is spent.
    super::check_oauth(&plan.settings())?;
    Ok(Prepared {
        name: spec.name,
        plan,
        authorization_endpoint: server.authorization_endpoint,
        client_secret: client.secret,
    })
}

impl Plan {
    /// The credential's settings once connected.
    fn settings(&self) -> oauth::Settings {
        oauth::Settings {
            token_url: self.token_url.clone(),
            client_id: self.client_id.clone(),
            scope: self.scope.clone(),
            resource: self.resource.clone(),
            grant: oauth::Grant::RefreshToken,
            pins: Vec::new(),
        }
    }
}

/// Record a connect that could not start (`credential.connect_start`, outcome failure): the
/// error's code only.
pub fn record_start_failure(store: &Store, ring: &Keyring, actor: &Actor, name: &str, e: &Error) {
    let mut rec = actor.record("credential.connect_start", None);
    rec.target_id = Some(name.chars().take(64).collect());
    super::record_failure(store, ring, rec, json!({ "error": e.code() }));
}

/// Record a prepared connect (`credential.connect_start`) and make its authorization URL.
pub fn start(store: &Store, ring: &Keyring, actor: &Actor, p: Prepared) -> Result<Started> {
    let state = authcode::random_token();
    let verifier = authcode::random_token();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let id = store::new_id();
    let flow = store::OAuthFlow {
        state_hash: authcode::state_hash(&state),
        credential: p.name.clone(),
        actor: actor.id.clone(),
        plan: serde_json::to_string(&p.plan).map_err(|e| Error::Invalid(e.to_string()))?,
        verifier_sealed: Some(ring.seal(
            verifier.as_bytes(),
            &vault::aad(vault::FLOW_TABLE, &id, &p.name),
        )),
        client_sealed: p.client_secret.as_ref().map(|s| {
            ring.seal(
                s.as_bytes(),
                &vault::aad(vault::FLOW_TABLE, &id, &format!("{}/client", p.name)),
            )
        }),
        key_fp: ring.fingerprint(),
        created_at: now,
        expires_at: now + FLOW_SECS,
        id: id.clone(),
        ..Default::default()
    };
    let url = authcode::authorization_url(
        &p.authorization_endpoint,
        &authcode::Authorize {
            client_id: &p.plan.client_id,
            redirect_uri: &p.plan.redirect_uri,
            challenge: &authcode::challenge(&verifier),
            state: &state,
            resource: p.plan.resource.as_deref(),
            scope: p.plan.scope.as_deref(),
        },
    );
    let started = Started {
        flow_id: id,
        credential: p.name.clone(),
        authorization_url: url,
        redirect_uri: p.plan.redirect_uri.clone(),
        issuer: p.plan.issuer.clone(),
        resource: p.plan.resource.clone(),
        client_id: p.plan.client_id.clone(),
        registered: p.plan.registered,
        scope: p.plan.scope.clone(),
        expires_at: store::utc_text(
            OffsetDateTime::from_unix_timestamp(flow.expires_at)
                .unwrap_or_else(|_| OffsetDateTime::now_utc()),
        ),
    };
    let mut rec = actor.record("credential.connect_start", None);
    rec.target_id = Some(p.name.clone());
    super::audited(
        store,
        ring,
        rec,
        |s| Ok(s.start_oauth_flow(&flow)?),
        |_, r| {
            r.details = json!({
                "name": started.credential, "flow_id": started.flow_id,
                "issuer": started.issuer, "resource": started.resource,
                "client_id": started.client_id, "registered": started.registered,
                "scope": started.scope, "expires_at": started.expires_at,
            });
        },
    )?;
    Ok(started)
}

/// Who may complete a flow.
pub enum Completer<'a> {
    /// The browser at the callback: the state is the capability.
    Browser,
    /// An operator with the URL the browser was sent to: only their own flow, for `credential`.
    Operator {
        actor: &'a Actor,
        credential: &'a str,
    },
}

/// What a completed connect did.
#[derive(Serialize)]
pub struct Connected {
    pub credential: CredentialView,
    /// The tokens of the credential it replaced were revoked at the server (`revoked`), could
    /// not be (`failed`), were kept (`kept`: the same client at the same server), or there
    /// were none (`none`).
    pub previous_tokens: &'static str,
    /// The credential it replaced, until [`Connected::revoke_replaced`] revokes its tokens.
    #[serde(skip)]
    replaced: Option<store::Credential>,
}

impl Connected {
    /// Whether it replaced a credential whose tokens are still to be revoked.
    pub fn replaces(&self) -> bool {
        self.replaced.is_some()
    }

    /// Revoke the tokens of the credential it replaced (RFC 7009). Call it once the running
    /// proxy uses the new ones (after reloading its snapshot; another process's within a
    /// second, [`REVOKE_GRACE`]): a request in between would otherwise carry a revoked token.
    pub fn revoke_replaced(&mut self, ring: &Keyring, tls: &crate::config::Tls) -> Revoked {
        let Some(old) = self.replaced.take() else {
            return Revoked::None;
        };
        let r = revoke(ring, tls, &old);
        self.previous_tokens = r.as_str();
        r
    }
}

/// How long a process other than the running proxy (the CLI) waits before revoking replaced
/// tokens: the proxy reloads its credentials every 100 ms.
pub const REVOKE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Read what the browser was sent to (a pasted URL): its query, if it is `redirect_uri`'s.
pub fn pasted_query(pasted: &str, redirect_uri: Option<&str>) -> Result<String> {
    let bad = |why: &str| Error::Field {
        field: "redirect_url",
        reason: why.into(),
    };
    let u = Url::parse(pasted.trim()).map_err(|_| bad("is not a URL"))?;
    if let Some(expected) = redirect_uri {
        let mut base = u.clone();
        base.set_query(None);
        base.set_fragment(None);
        if base.as_str()
            != Url::parse(expected)
                .map_err(|_| bad("is not a URL"))?
                .as_str()
        {
            return Err(bad("is not the connect's redirect URI"));
        }
    }
    u.query()
        .map(String::from)
        .ok_or_else(|| bad("has no query (code and state)"))
}

/// Complete a connect from the callback's `query` (`credential.connect`). `lock` gives the
/// store (the exchange runs between two uses, without it). The record names the flow's
/// starter as actor and `request` (who completed it: the browser's callback or an operator)
/// in its details.
pub fn complete<S: std::ops::Deref<Target = Store>>(
    lock: impl Fn() -> S,
    ring: &Keyring,
    tls: &crate::config::Tls,
    completer: Completer<'_>,
    request: &Actor,
    query: &str,
) -> Result<Connected> {
    let via = match completer {
        Completer::Browser => "callback",
        Completer::Operator { .. } => "pasted_url",
    };
    // A refusal of a known flow is audited (and ends it); one with no flow (a forged or
    // malformed callback, which anyone reaching the listener can send) is only logged.
    let refuse = |code: &'static str, message: String, flow: Option<&store::OAuthFlow>| {
        let Some(f) = flow else {
            tracing::debug!(code, "OAuth callback refused: no such connect");
            return oauth_error(code, message);
        };
        let store = lock();
        let actor = Actor {
            id: f.actor.clone(),
            ..request.clone()
        };
        let mut rec = actor.record("credential.connect", None);
        rec.target_id = Some(f.credential.clone());
        if f.outcome.is_none() {
            if let Err(e) = store.finish_oauth_flow(&f.id, code) {
                tracing::warn!(error = %e, "cannot record how an OAuth connect ended");
            }
        }
        super::record_failure(
            &store,
            ring,
            rec,
            json!({"error": code, "flow_id": f.id, "completed_by": request.id, "via": via}),
        );
        tracing::warn!(code, flow_id = %f.id, credential = %f.credential, "OAuth connect refused");
        oauth_error(code, message)
    };
    let cb = match authcode::callback_query(query) {
        Ok(cb) => cb,
        Err(p) => {
            return Err(refuse(
                "oauth_state_invalid",
                format!("the callback repeats the parameter {}", p.escape_debug()),
                None,
            ))
        }
    };
    let Some(state) = cb.state.as_deref() else {
        return Err(refuse(
            "oauth_state_invalid",
            "the callback has no state".into(),
            None,
        ));
    };
    let (actor, credential) = match &completer {
        Completer::Browser => (None, None),
        Completer::Operator { actor, credential } => (Some(actor.id.as_str()), Some(*credential)),
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claim = lock().claim_oauth_flow(&authcode::state_hash(state), actor, credential, now)?;
    let (flow, why) = match claim {
        Claim::Claimed(f) => (f, None),
        Claim::Unknown => {
            return Err(refuse(
                "oauth_state_invalid",
                "the state is unknown; nothing was stored".into(),
                None,
            ))
        }
        Claim::Used(f) => (f, Some("was already used")),
        Claim::Expired(f) => (
            f,
            Some("expired (a connect waits 10 minutes): start it again"),
        ),
        Claim::OtherActor(f) => (
            f,
            Some(
                "belongs to a connect another operator started (it is spent now: they start again)",
            ),
        ),
        Claim::OtherCredential(f) => (
            f,
            Some("belongs to a connect of another credential (it is spent now: start again)"),
        ),
    };
    if let Some(why) = why {
        return Err(refuse(
            "oauth_state_invalid",
            format!("the state {why}; nothing was stored"),
            Some(&flow),
        ));
    }
    // The operator who started it must still be one (removed or demoted meanwhile: refused).
    if let Some(user_id) = flow.actor.strip_prefix("user:") {
        let still = lock().user(user_id).is_ok_and(|u| u.operator);
        if !still {
            return Err(refuse(
                "oauth_state_invalid",
                "the operator who started this connect is no longer one; nothing was stored".into(),
                Some(&flow),
            ));
        }
    }
    let Ok(plan) = serde_json::from_str::<Plan>(&flow.plan) else {
        return Err(refuse(
            "oauth_state_invalid",
            "the connect's record is unreadable; nothing was stored".into(),
            Some(&flow),
        ));
    };
    if let Some(e) = &cb.error {
        // RFC 6749 4.1.2.1: an ASCII code; anything else is not repeated.
        let code: String =
            if e.len() <= 64 && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                e.clone()
            } else {
                "unknown".into()
            };
        return Err(refuse(
            "oauth_authorization_denied",
            format!("the authorization server answered {code} (the user declined, or the request was refused); nothing was stored"),
            Some(&flow),
        ));
    }
    // RFC 9207: the response names its issuer (a mix-up attack sends another server's code).
    match (&cb.iss, plan.iss_parameter) {
        (Some(iss), _) if !authcode::same_id(iss, &plan.issuer) => {
            return Err(refuse(
                "oauth_iss_mismatch",
                format!("the callback's iss is not {} (RFC 9207); nothing was stored", plan.issuer),
                Some(&flow),
            ))
        }
        (None, true) => {
            return Err(refuse(
                "oauth_iss_mismatch",
                "the callback has no iss, which this authorization server sends (RFC 9207); nothing was stored".into(),
                Some(&flow),
            ))
        }
        _ => {}
    }
    let Some(code) = cb.code.as_deref() else {
        return Err(refuse(
            "oauth_state_invalid",
            "the callback has no code; nothing was stored".into(),
            Some(&flow),
        ));
    };
    let open = |sealed: &Option<Vec<u8>>, name: &str| -> Option<Zeroizing<String>> {
        ring.open_text(
            sealed.as_ref()?,
            &vault::aad(vault::FLOW_TABLE, &flow.id, name),
        )
        .ok()
    };
    let Some(verifier) = open(&flow.verifier_sealed, &flow.credential) else {
        return Err(refuse(
            "oauth_state_invalid",
            "the connect's verifier cannot be opened (the master key changed?): start it again"
                .into(),
            Some(&flow),
        ));
    };
    let client_secret = open(&flow.client_sealed, &format!("{}/client", flow.credential));
    if flow.client_sealed.is_some() && client_secret.is_none() {
        return Err(refuse(
            "oauth_state_invalid",
            "the connect's client secret cannot be opened (the master key changed?): start it again".into(),
            Some(&flow),
        ));
    }
    let client = Client {
        id: &plan.client_id,
        auth: plan.client_auth,
        secret: client_secret.as_deref().map(String::as_str),
    };
    let token = oauth::agent(tls, &[]).and_then(|agent| {
        authcode::exchange(
            &agent,
            &plan.token_url,
            &client,
            code,
            &verifier,
            &plan.redirect_uri,
            plan.resource.as_deref(),
        )
    });
    let token = match token {
        Ok(t) => t,
        Err(e) => {
            return Err(refuse(
                "oauth_exchange_failed",
                format!(
                "the token endpoint gave no token for the code ({e}; code {}); nothing was stored",
                e.code()
            ),
                Some(&flow),
            ))
        }
    };
    let settings = plan.settings();
    let connected = oauth::Connected {
        issuer: plan.issuer.clone(),
        client_auth: plan.client_auth,
        revocation_url: plan.revocation_url.clone(),
        registered: plan.registered,
    };
    // Without a refresh token the credential works until the access token expires, then
    // needs a new connect (an empty secret says so to the refresher).
    let refresh = token.refresh.clone().unwrap_or_default();
    let actor = Actor {
        id: flow.actor.clone(),
        ..request.clone()
    };
    let mut rec = actor.record("credential.connect", None);
    rec.target_id = Some(flow.credential.clone());
    let previous = std::cell::RefCell::new(None);
    let stored = {
        let store = lock();
        super::audited(
            &store,
            ring,
            rec,
            |s| {
                *previous.borrow_mut() = s
                    .credentials()?
                    .into_iter()
                    .find(|c| c.name == flow.credential);
                let v = super::put_oauth_credential(
                    s,
                    ring,
                    &flow.credential,
                    &settings,
                    &refresh,
                    Some((&connected, client_secret.as_deref().map(String::as_str))),
                    Some(&token),
                )?;
                s.finish_oauth_flow(&flow.id, "connected")?;
                Ok(v)
            },
            |v, r| {
                r.details = json!({
                    "name": v.name, "flow_id": flow.id, "issuer": plan.issuer,
                    "resource": plan.resource, "client_id": plan.client_id,
                    "client_auth": plan.client_auth.as_str(), "registered": plan.registered,
                    "refresh_token": token.refresh.is_some(),
                    "token_expires_at": v.token_expires_at,
                    "replaced": previous.borrow().is_some(),
                    "completed_by": request.id, "via": via,
                });
            },
        )
    };
    let view = match stored {
        Ok(v) => v,
        Err(e) => {
            let _ = lock().finish_oauth_flow(&flow.id, "store_error");
            // The tokens obtained are not kept: given back to the server.
            if let Some(url) = &plan.revocation_url {
                revoke_tokens(
                    tls,
                    url,
                    &client,
                    token.refresh.as_deref().map(|t| t.as_str()),
                    Some(&token.access),
                    "new",
                );
            }
            return Err(e);
        }
    };
    // The tokens it replaced are revoked at their server by the caller, after the new ones
    // are stored and in use (a failed revocation never loses the connect). Not when the new
    // grant is the same client's at the same server: servers such as Google revoke every token
    // of a client and user when one is, which would take the new grant with it.
    let (previous_tokens, replaced) = match previous.into_inner() {
        Some(old) => {
            let same_client = oauth::connected(&old).is_some_and(|c| c.issuer == plan.issuer)
                && oauth::settings(&old).is_some_and(|s| s.client_id == plan.client_id);
            if same_client {
                (Revoked::Kept, None)
            } else {
                (Revoked::None, Some(old))
            }
        }
        None => (Revoked::None, None),
    };
    Ok(Connected {
        credential: view,
        previous_tokens: previous_tokens.as_str(),
        replaced,
    })
}

/// Revoke `refresh` and `access` at `url` (RFC 7009) as `client`; what happened.
fn revoke_tokens(
    tls: &crate::config::Tls,
    url: &str,
    client: &Client<'_>,
    refresh: Option<&str>,
    access: Option<&str>,
    which: &str,
) -> Revoked {
    let Ok(agent) = oauth::agent(tls, &tls.pins) else {
        return Revoked::Failed;
    };
    let mut outcome = Revoked::None;
    // The refresh token first: revoking it usually revokes its access tokens too (RFC 7009 2.1).
    for (token, hint) in [(refresh, "refresh_token"), (access, "access_token")] {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            continue;
        };
        match oauth::post_revocation(&agent, url, token, hint, client) {
            Ok(()) if outcome != Revoked::Failed => outcome = Revoked::Revoked,
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(which, hint, error = %e.code(), "cannot revoke an OAuth token at its server; the local change goes on");
                outcome = Revoked::Failed;
            }
        }
    }
    outcome
}

/// What revoking a credential's tokens did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Nothing to revoke: not connected, or its server has no revocation endpoint.
    None,
    Revoked,
    /// The server could not be reached or refused (logged; the local change still happens).
    Failed,
    /// Not revoked: a reconnect with the same client at the same server (see [`complete`]).
    Kept,
}

impl Revoked {
    pub fn as_str(self) -> &'static str {
        match self {
            Revoked::None => "none",
            Revoked::Revoked => "revoked",
            Revoked::Failed => "failed",
            Revoked::Kept => "kept",
        }
    }
}

/// Revoke a connected credential's refresh and access tokens at its server (RFC 7009), when
/// it has a revocation endpoint. Bounded by the token client's timeouts; never fails the
/// caller: the outcome is logged (by code) and returned.
pub fn revoke(ring: &Keyring, tls: &crate::config::Tls, c: &store::Credential) -> Revoked {
    let (Some(settings), Some(connected)) = (oauth::settings(c), oauth::connected(c)) else {
        return Revoked::None;
    };
    let Some(url) = &connected.revocation_url else {
        return Revoked::None;
    };
    let open = |sealed: &[u8], table: &str| {
        ring.open_text(sealed, &vault::aad(table, &c.id, &c.name))
            .ok()
    };
    let client_secret = c
        .client_sealed
        .as_deref()
        .and_then(|s| open(s, vault::CLIENT_TABLE));
    let client = Client {
        id: &settings.client_id,
        auth: connected.client_auth,
        secret: client_secret.as_deref().map(String::as_str),
    };
    let refresh = open(&c.sealed, "credentials");
    let access = c
        .token_sealed
        .as_deref()
        .and_then(|s| open(s, vault::TOKEN_TABLE));
    let tls = crate::config::Tls {
        pins: settings.pin_digests(),
        ..tls.clone()
    };
    revoke_tokens(
        &tls,
        url,
        &client,
        refresh.as_deref().map(String::as_str),
        access.as_deref().map(String::as_str),
        "stored",
    )
}

/// Why a pending connect did not complete, as its flow says (`None`: still waiting).
pub fn flow_outcome(store: &Store, flow_id: &str) -> Result<Option<String>> {
    let flow = store.oauth_flow(flow_id)?.ok_or_else(|| {
        Error::Store(store::Error::NotFound {
            what: "connect",
            id: flow_id.to_string(),
        })
    })?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    Ok(match flow.outcome {
        Some(o) => Some(o),
        None if flow.used_at.is_none() && now >= flow.expires_at => Some("state_expired".into()),
        None => None,
    })
}
