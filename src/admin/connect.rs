//! Connecting an OAuth credential with the authorization code grant and PKCE (`sluice
//! credentials connect`, `POST /api/credentials/{name}/connect`, `GET /oauth/callback`), and
//! revoking a connected credential's tokens (RFC 7009) when it is deleted or connected again.
//!
//! A connect is two steps. [`prepare`] discovers the servers and registers a client (network,
//! no store), then [`start_as`] records the flow: the `state` as its SHA-256 only, the PKCE
//! verifier and any client secret sealed, who started it, and an expiry 10 minutes out. The
//! browser comes back to the callback with `code` and `state`; [`complete_as`] uses the flow
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
    /// `serve --dev` / `--dev`: loopback http endpoints are accepted for any resource.
    pub dev: bool,
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

/// A started connect: the URL to open, and how to follow it.
#[derive(Debug, Serialize)]
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
    /// RFC 3339: the state is refused after this.
    pub expires_at: String,
}

/// Check a redirect URI: the admin listener's callback on a loopback address (http or https),
/// no query, no fragment. A code sent anywhere else could be caught there.
pub fn check_redirect_uri(uri: &str) -> Result<Url> {
    let bad = |why: &str| Error::Field {
        field: "redirect_uri",
        reason: why.into(),
    };
    let u = Url::parse(uri).map_err(|_| bad("is not a URL"))?;
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if !matches!(u.scheme(), "http" | "https") || !loopback {
        return Err(bad(
            "must be http(s) to a loopback address (the admin listener, e.g. http://127.0.0.1:9091/oauth/callback; reach it over an SSH tunnel, or paste the URL the browser was sent to)",
        ));
    }
    if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
        return Err(bad("must have no query, fragment or credentials"));
    }
    Ok(u)
}

/// The default redirect URI: the admin listener's callback (a wildcard address as 127.0.0.1).
pub fn default_redirect_uri(admin: std::net::SocketAddr) -> String {
    let ip = match admin.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    };
    format!("http://{ip}:{}{CALLBACK_PATH}", admin.port())
}

/// Discover the servers and the client (network; no store). Runs without the store's lock.
pub fn prepare(spec: Spec, tls: &crate::config::Tls) -> Result<Prepared> {
    super::check_credential_name(&spec.name)?;
    check_redirect_uri(&spec.redirect_uri)?;
    let agent = oauth::agent(tls, &[])
        .map_err(|_| oauth_error("oauth_discovery_failed", "no TLS client could be built"))?;
    let resource_url = spec
        .resource
        .as_deref()
        .map(|r| {
            Url::parse(r).map_err(|_| Error::Field {
                field: "resource",
                reason: "is not a URL".into(),
            })
        })
        .transpose()?;
    let plaintext = authcode::plaintext_for(resource_url.as_ref(), spec.dev);
    if let Some(r) = &resource_url {
        authcode::check_endpoint("resource", r.as_str(), plaintext)?;
    }
    let discovered = resource_url
        .as_ref()
        .map(|r| authcode::protected_resource(&agent, r, plaintext))
        .transpose()?;
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
                        "the resource names the authorization servers {}, not {i}",
                        d.authorization_servers.join(", ")
                    ),
                )
            })?,
        (Some(d), None) => d.authorization_servers[0].clone(),
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
    if scope
        .as_deref()
        .is_some_and(|s| s.len() > 1024 || s.bytes().any(|b| b < 0x20 || b == 0x7f))
    {
        return Err(Error::Field {
            field: "scope",
            reason: "must be at most 1024 printable characters".into(),
        });
    }
    let client = match spec.client_id {
        Some(id) => {
            if id.is_empty() || id.len() > 1024 || id.bytes().any(|b| b < 0x20 || b == 0x7f) {
                return Err(Error::Field {
                    field: "client_id",
                    reason: "must be 1 to 1024 printable characters".into(),
                });
            }
            authcode::configured_client(&server, id, spec.client_secret)?
        }
        None if spec.client_secret.is_some() => {
            return Err(Error::Field {
                field: "client_secret",
                reason: "needs a client_id".into(),
            })
        }
        None => authcode::register(&agent, &server, &spec.redirect_uri, scope.as_deref())?,
    };
    let resource = discovered.map(|d| d.resource).or(spec.resource);
    Ok(Prepared {
        name: spec.name,
        plan: Plan {
            issuer: server.issuer.clone(),
            iss_parameter: server.iss_parameter,
            token_url: server.token_endpoint.to_string(),
            revocation_url: server.revocation_endpoint.as_ref().map(Url::to_string),
            client_id: client.id,
            client_auth: client.auth,
            registered: client.registered,
            redirect_uri: spec.redirect_uri,
            resource,
            scope,
        },
        authorization_endpoint: server.authorization_endpoint,
        client_secret: client.secret,
    })
}

/// Record a prepared connect (`credential.connect_start`) and make its authorization URL.
pub fn start_as(store: &Store, ring: &Keyring, actor: &Actor, p: Prepared) -> Result<Started> {
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
                "expires_at": started.expires_at,
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
#[derive(Debug, Serialize)]
pub struct Connected {
    pub credential: CredentialView,
    /// The tokens of the credential it replaced were revoked at the server (`revoked`), could
    /// not be (`failed`), or there were none to revoke (`none`).
    pub previous_tokens: &'static str,
}

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

/// The redirect URI of the flow whose state is in `query` (to check a pasted URL against).
pub fn flow_redirect_uri(store: &Store, query: &str) -> Option<String> {
    let cb = authcode::callback_query(query).ok()?;
    let hash = authcode::state_hash(cb.state.as_deref()?);
    let flow = store.oauth_flow_by_state(&hash).ok()??;
    serde_json::from_str::<Plan>(&flow.plan)
        .ok()
        .map(|p| p.redirect_uri)
}

/// Complete a connect from the callback's `query` (`credential.connect`). `lock` gives the
/// store (the exchange runs between two uses, without it). `actor` is who the record names
/// (the browser: the flow's starter).
pub fn complete_as<S: std::ops::Deref<Target = Store>>(
    lock: impl Fn() -> S,
    ring: &Keyring,
    tls: &crate::config::Tls,
    completer: Completer<'_>,
    request: &Actor,
    query: &str,
) -> Result<Connected> {
    let refuse = |code: &'static str, message: String, flow: Option<&store::OAuthFlow>| {
        let store = lock();
        let actor = Actor {
            id: flow.map_or_else(|| request.id.clone(), |f| f.actor.clone()),
            ..request.clone()
        };
        let mut rec = actor.record("credential.connect", None);
        rec.target_id = flow.map(|f| f.credential.clone());
        rec.outcome = "failure";
        rec.details = json!({"error": code, "flow_id": flow.map(|f| f.id.clone())});
        if let Some(f) = flow {
            if let Err(e) = store.finish_oauth_flow(&f.id, code) {
                tracing::warn!(error = %e, "cannot record how an OAuth connect ended");
            }
        }
        let mut keys = crate::audit::OrgKeys::new(ring);
        if let Err(e) = crate::audit::append(&store, &mut keys, &[rec]) {
            tracing::error!(error = %e, "cannot record the failed OAuth connect in the audit log");
        }
        tracing::warn!(
            code,
            flow_id = flow.map(|f| f.id.as_str()),
            "OAuth connect refused"
        );
        oauth_error(code, message)
    };
    let cb = match authcode::callback_query(query) {
        Ok(cb) => cb,
        Err(p) => {
            return Err(refuse(
                "oauth_state_invalid",
                format!("the callback repeats the parameter {p}"),
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
    let flow = match claim {
        Claim::Claimed(f) => f,
        other => {
            let why = match other {
                Claim::Unknown => "is unknown",
                Claim::Used => "was already used",
                Claim::Expired => "expired (a connect waits 10 minutes): start it again",
                Claim::OtherActor => "belongs to a connect another operator started",
                _ => "belongs to a connect of another credential",
            };
            return Err(refuse(
                "oauth_state_invalid",
                format!("the state {why}; nothing was stored"),
                None,
            ));
        }
    };
    let plan: Plan = serde_json::from_str(&flow.plan).map_err(|_| {
        refuse(
            "oauth_state_invalid",
            "the connect's record is unreadable".into(),
            Some(&flow),
        )
    })?;
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
            "the callback has no code".into(),
            Some(&flow),
        ));
    };
    let open = |sealed: &Option<Vec<u8>>, name: &str| -> Option<Zeroizing<String>> {
        let plain = ring
            .open(
                sealed.as_ref()?,
                &vault::aad(vault::FLOW_TABLE, &flow.id, name),
            )
            .ok()?;
        String::from_utf8(plain.to_vec()).ok().map(Zeroizing::new)
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
    let settings = oauth::Settings {
        token_url: plan.token_url.clone(),
        client_id: plan.client_id.clone(),
        scope: plan.scope.clone(),
        resource: plan.resource.clone(),
        grant: oauth::Grant::RefreshToken,
        pins: Vec::new(),
    };
    let connected = oauth::Connected {
        issuer: plan.issuer.clone(),
        client_auth: plan.client_auth,
        revocation_url: plan.revocation_url.clone(),
        registered: plan.registered,
    };
    // Without a refresh token the credential works until the access token expires, then
    // needs a new connect (an empty secret says so to the refresher).
    let refresh = token.refresh.clone().unwrap_or_default();
    let store = lock();
    let previous = store
        .credentials()?
        .into_iter()
        .find(|c| c.name == flow.credential);
    let actor = Actor {
        id: flow.actor.clone(),
        ..request.clone()
    };
    let mut rec = actor.record("credential.connect", None);
    rec.target_id = Some(flow.credential.clone());
    let view = super::audited(
        &store,
        ring,
        rec,
        |s| {
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
                "replaced": previous.is_some(),
            });
        },
    );
    let view = match view {
        Ok(v) => v,
        Err(e) => {
            drop(store);
            let _ = lock().finish_oauth_flow(&flow.id, "store_error");
            return Err(e);
        }
    };
    drop(store);
    // The tokens it replaced are revoked at their server (after the new ones are stored: a
    // failed revocation never loses the connect).
    let previous_tokens = match previous {
        Some(old) => revoke(ring, tls, &old),
        None => Revoked::None,
    };
    Ok(Connected {
        credential: view,
        previous_tokens: previous_tokens.as_str(),
    })
}

/// What revoking a credential's tokens did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Nothing to revoke: not connected, or its server has no revocation endpoint.
    None,
    Revoked,
    /// The server could not be reached or refused (logged; the local change still happens).
    Failed,
}

impl Revoked {
    pub fn as_str(self) -> &'static str {
        match self {
            Revoked::None => "none",
            Revoked::Revoked => "revoked",
            Revoked::Failed => "failed",
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
        ring.open(sealed, &vault::aad(table, &c.id, &c.name))
            .ok()
            .and_then(|p| String::from_utf8(p.to_vec()).ok())
            .map(Zeroizing::new)
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
    let refresh = open(&c.sealed, "credentials").filter(|t| !t.is_empty());
    let access = c
        .token_sealed
        .as_deref()
        .and_then(|s| open(s, vault::TOKEN_TABLE));
    let agent = match oauth::agent(tls, &settings.pin_digests()) {
        Ok(a) => a,
        Err(_) => return Revoked::Failed,
    };
    let mut outcome = Revoked::None;
    // The refresh token first: revoking it usually revokes its access tokens too (RFC 7009 2.1).
    for (token, hint) in [(refresh, "refresh_token"), (access, "access_token")] {
        let Some(token) = token else { continue };
        match oauth::post_revocation(&agent, url, &token, hint, &client) {
            Ok(()) if outcome != Revoked::Failed => outcome = Revoked::Revoked,
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(credential = %c.name, hint, error = %e.code(), "cannot revoke an OAuth token at its server; the local change goes on");
                outcome = Revoked::Failed;
            }
        }
    }
    outcome
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
