//! OAuth 2.0 access tokens for credentials of kind `oauth` (`sluice credentials set-oauth`):
//! the client credentials grant, or the refresh token grant (RFC 6749 4.4, 6), with the RFC
//! 8707 `resource` when configured. A background thread ([`Refresher`]) obtains a token as
//! soon as a credential is set, refreshes it at 80% of its lifetime (and at once after the
//! server answered 401), stores it sealed with the master key, and stores a rotated refresh
//! token in the same statement. Failures back off (1 s doubling to 30 s), are counted and
//! logged by code only: no token, secret or response body is ever logged.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::store::{self, Store};
use crate::vault::{self, Keyring};

/// Which grant obtains tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// The stored secret is the client secret.
    ClientCredentials,
    /// The stored secret is a refresh token (rotated when the server sends a new one).
    RefreshToken,
}

/// An OAuth credential's settings (stored as JSON beside the sealed secret; no secret here).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub token_url: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// RFC 8707 resource indicator (the API the token is for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub grant: Grant,
    /// `sha256/<base64>` of the token endpoint's leaf certificates accepted (any one); empty:
    /// any certificate the `[tls]` CAs vouch for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<String>,
}

impl Settings {
    /// The pins as digests (each was checked when the settings were stored).
    pub fn pin_digests(&self) -> Vec<[u8; 32]> {
        self.pins
            .iter()
            .filter_map(|p| crate::config::parse_pin(p))
            .collect()
    }
}

/// How the client authenticates at the token and revocation endpoints (RFC 7591
/// `token_endpoint_auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded client id and secret (RFC 6749 2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form.
    ClientSecretPost,
    /// A public client: `client_id` only.
    None,
}

impl ClientAuth {
    /// As RFC 7591 writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::ClientSecretBasic => "client_secret_basic",
            ClientAuth::ClientSecretPost => "client_secret_post",
            ClientAuth::None => "none",
        }
    }

    /// From RFC 7591's name; `None` for a method sluice does not do (e.g. `private_key_jwt`).
    pub fn parse(s: &str) -> Option<ClientAuth> {
        match s {
            "client_secret_basic" => Some(ClientAuth::ClientSecretBasic),
            "client_secret_post" => Some(ClientAuth::ClientSecretPost),
            "none" => Some(ClientAuth::None),
            _ => None,
        }
    }
}

/// How a credential was connected with the authorization code grant (`sluice credentials
/// connect`); stored as JSON beside the settings, no secret here. Its refresh token is the
/// credential's sealed secret, its client secret (if any) is sealed apart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connected {
    /// The authorization server (RFC 8414 `issuer`).
    pub issuer: String,
    pub client_auth: ClientAuth,
    /// RFC 7009, when the server has one: delete and reconnect revoke the old tokens there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_url: Option<String>,
    /// The client was registered dynamically (RFC 7591) rather than configured.
    pub registered: bool,
}

/// A client as it authenticates: its id, method and secret.
#[derive(Clone, Copy)]
pub struct Client<'a> {
    pub id: &'a str,
    pub auth: ClientAuth,
    pub secret: Option<&'a str>,
}

impl<'a> Client<'a> {
    /// Add the client's authentication to a token or revocation request; the `Authorization`
    /// header's value for HTTP Basic.
    fn apply<'f>(&self, form: &mut Vec<(&'f str, &'f str)>) -> Option<Zeroizing<String>>
    where
        'a: 'f,
    {
        form.push(("client_id", self.id));
        match (self.auth, self.secret) {
            (ClientAuth::ClientSecretPost, Some(secret)) => {
                form.push(("client_secret", secret));
                None
            }
            (ClientAuth::ClientSecretBasic, Some(secret)) => {
                use base64::Engine;
                let enc =
                    |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
                let pair = Zeroizing::new(format!("{}:{}", enc(self.id), enc(secret)));
                Some(Zeroizing::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
                )))
            }
            _ => None,
        }
    }
}

/// A token from the endpoint.
pub struct Token {
    pub access: Zeroizing<String>,
    pub expires_in: u64,
    /// A new refresh token (rotation).
    pub refresh: Option<Zeroizing<String>>,
}

/// Why no token was obtained. `code` is what is stored, counted and logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("the token endpoint cannot be reached")]
    Unreachable,
    #[error("the token endpoint answered {0}")]
    Status(u16),
    #[error("the token endpoint's answer is not a token")]
    Invalid,
    #[error("the credential's secret cannot be decrypted")]
    Sealed,
    #[error("the token cannot be stored")]
    Store,
    /// The server refused the refresh token or code (`invalid_grant`, RFC 6749 5.2): revoked,
    /// expired or used. Retrying is pointless; the credential needs a new connect.
    #[error("the authorization server refused the grant (invalid_grant)")]
    InvalidGrant,
    /// A connected credential holds no refresh token (the server gave none) and its access
    /// token expired: only a new connect helps.
    #[error("no refresh token: the credential must be connected again")]
    NeedsReconnect,
}

impl FetchError {
    /// A short stable code.
    pub fn code(&self) -> String {
        match self {
            FetchError::Unreachable => "unreachable".into(),
            FetchError::Status(s) => format!("http_{s}"),
            FetchError::Invalid => "invalid_response".into(),
            FetchError::Sealed => "undecryptable".into(),
            FetchError::Store => "store_unavailable".into(),
            FetchError::InvalidGrant => "invalid_grant".into(),
            FetchError::NeedsReconnect => NEEDS_RECONNECT.into(),
        }
    }
}

/// Validate a token endpoint URL: https (http only to a loopback address: the client secret
/// travels in the body), a host, no credentials or fragment.
pub fn check_url(url: &str) -> Result<(), &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "is not a URL")?;
    let auth = uri.authority().ok_or("has no host")?;
    if auth.as_str().contains('@') || url.contains('#') {
        return Err("must not hold credentials or a fragment");
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            if crate::config::is_loopback_host(auth.host()) {
                Ok(())
            } else {
                Err("must be https:// (http:// only to a loopback address)")
            }
        }
        _ => Err("must be https:// (http:// only to a loopback address)"),
    }
}

/// What `last_error` says of a credential whose refresh token the server refused: the refresher
/// leaves it alone until it is connected (or set) again.
pub const NEEDS_RECONNECT: &str = "needs_reconnect";

/// Ask the token endpoint for an access token. A connected credential (`connected`) signs in
/// as its client (`client_secret`: the sealed client secret, opened); the others as before:
/// the client credentials grant's secret in the form, the refresh grant with the client id.
pub fn fetch(
    agent: &ureq::Agent,
    s: &Settings,
    secret: &str,
    connected: Option<(&Connected, Option<&str>)>,
) -> Result<Token, FetchError> {
    let client = match connected {
        Some((c, client_secret)) => Client {
            id: &s.client_id,
            auth: c.client_auth,
            secret: client_secret,
        },
        None => match s.grant {
            Grant::ClientCredentials => Client {
                id: &s.client_id,
                auth: ClientAuth::ClientSecretPost,
                secret: Some(secret),
            },
            Grant::RefreshToken => Client {
                id: &s.client_id,
                auth: ClientAuth::None,
                secret: None,
            },
        },
    };
    let mut form: Vec<(&str, &str)> = Vec::new();
    match s.grant {
        Grant::ClientCredentials => form.push(("grant_type", "client_credentials")),
        Grant::RefreshToken => {
            if secret.is_empty() {
                return Err(FetchError::NeedsReconnect);
            }
            form.push(("grant_type", "refresh_token"));
            form.push(("refresh_token", secret));
        }
    }
    if let Some(scope) = &s.scope {
        form.push(("scope", scope));
    }
    if let Some(resource) = &s.resource {
        form.push(("resource", resource));
    }
    post_token(agent, &s.token_url, form, &client)
}

/// POST `form` to `url` as `client` (its authentication added to the form or as HTTP Basic).
// ureq's own error, as `send_form` returns it: its callers match on it at once.
#[allow(clippy::result_large_err)]
fn send_form<'a>(
    agent: &ureq::Agent,
    url: &str,
    mut form: Vec<(&'a str, &'a str)>,
    client: &Client<'a>,
) -> Result<ureq::Response, ureq::Error> {
    let basic = client.apply(&mut form);
    let mut req = agent.post(url).set("accept", "application/json");
    if let Some(b) = &basic {
        req = req.set("authorization", b.as_str());
    }
    req.send_form(&form)
}

/// POST a token request (`form` plus the client's authentication) and read the token.
pub fn post_token<'a>(
    agent: &ureq::Agent,
    url: &str,
    form: Vec<(&'a str, &'a str)>,
    client: &Client<'a>,
) -> Result<Token, FetchError> {
    let resp = match send_form(agent, url, form, client) {
        Ok(r) => r,
        Err(ureq::Error::Status(code, resp)) => {
            // RFC 6749 5.2: `{"error": "invalid_grant"}` (400) means the grant is dead.
            let grant_refused = code == 400
                && read_bounded(resp).is_ok_and(|b| {
                    serde_json::from_slice::<serde_json::Value>(&b)
                        .is_ok_and(|v| v["error"] == "invalid_grant")
                });
            return Err(if grant_refused {
                FetchError::InvalidGrant
            } else {
                FetchError::Status(code)
            });
        }
        Err(ureq::Error::Transport(_)) => return Err(FetchError::Unreachable),
    };
    token_answer(&read_bounded(resp)?)
}

/// POST a revocation request (RFC 7009) for `token` with the client's authentication.
pub fn post_revocation<'a>(
    agent: &ureq::Agent,
    url: &str,
    token: &'a str,
    hint: &'a str,
    client: &Client<'a>,
) -> Result<(), FetchError> {
    let form = vec![("token", token), ("token_type_hint", hint)];
    match send_form(agent, url, form, client) {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, _)) => Err(FetchError::Status(code)),
        Err(ureq::Error::Transport(_)) => Err(FetchError::Unreachable),
    }
}

/// An answer's body, at most [`MAX_ANSWER_BYTES`] (a token answer is a few KB).
pub fn read_bounded(resp: ureq::Response) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(resp.into_reader(), MAX_ANSWER_BYTES + 1),
        &mut body,
    )
    .map_err(|_| FetchError::Unreachable)?;
    if body.len() as u64 > MAX_ANSWER_BYTES {
        return Err(FetchError::Invalid);
    }
    Ok(body)
}

/// The largest token endpoint (or metadata, registration) answer read.
pub const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// A token endpoint's JSON answer (RFC 6749 section 5.1), every number bounded.
pub(crate) fn token_answer(body: &[u8]) -> Result<Token, FetchError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        access_token: String,
        #[serde(default)]
        expires_in: Option<serde_json::Value>,
        #[serde(default)]
        refresh_token: Option<String>,
    }
    let a: Answer = serde_json::from_slice(body).map_err(|_| FetchError::Invalid)?;
    if a.access_token.is_empty() || a.access_token.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(FetchError::Invalid);
    }
    // A number, or (as some endpoints send it) a string holding one; anything else is refused.
    let expires_in = match a.expires_in {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => return Err(FetchError::Invalid),
    };
    let expires_in = match expires_in {
        Some(e) if e.is_nan() => return Err(FetchError::Invalid),
        other => other,
    };
    Ok(Token {
        access: Zeroizing::new(a.access_token),
        // Without expires_in, assume an hour (RFC 6749 leaves it to the server's docs); a
        // lifetime from outside is bounded (1 s to a year): `1e13` must not overflow a date.
        expires_in: expires_in.map_or(3600, |e| e.clamp(1.0, MAX_EXPIRES_IN as f64) as u64),
        refresh: a
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(Zeroizing::new),
    })
}

/// Obtain a credential's first token with `secret` (when it is being set, so a wrong setting
/// fails at once). A refresh token rotated by the endpoint replaces `secret`: the one given is
/// spent.
pub fn first_token(
    s: &Settings,
    secret: &mut Zeroizing<String>,
    tls: &crate::config::Tls,
) -> Result<Token, FetchError> {
    let token = fetch(&agent(tls, &s.pin_digests())?, s, secret, None)?;
    if let (Grant::RefreshToken, Some(rotated)) = (s.grant, &token.refresh) {
        *secret = rotated.clone();
    }
    Ok(token)
}

fn parse(t: &Option<store::Timestamp>) -> Option<OffsetDateTime> {
    t.map(|t| t.0)
}

/// Whether the token of `c` is due for a refresh at `now`: none yet, or 80% of its lifetime
/// gone.
pub fn due(c: &store::Credential, now: OffsetDateTime) -> bool {
    match (parse(&c.token_obtained_at), parse(&c.token_expires_at)) {
        (Some(got), Some(exp)) if c.token_sealed.is_some() => {
            let life = exp - got;
            now >= got + life * 0.8
        }
        _ => true,
    }
}

/// Counted per credential: failed refreshes.
pub type FailureCounter = prometheus::IntCounterVec;

/// The background refresher.
pub struct Refresher {
    /// Credential name → the `token_obtained_at` of the token its server refused.
    forced: Mutex<HashMap<String, String>>,
}

const TICK: Duration = Duration::from_millis(250);
/// The longest token lifetime believed (a year), whatever `expires_in` says.
const MAX_EXPIRES_IN: u64 = 365 * 24 * 3600;
/// How long one process holds the claim on a refresh (longer than the HTTP timeout).
const LEASE_SECS: u64 = 30;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The HTTP client for token endpoints: bounded, no redirects (a redirect could carry the
/// client secret elsewhere), TLS under `tls` (`[tls]`: the lowest version, the CAs instead of
/// the bundled Mozilla roots).
pub fn agent(tls: &crate::config::Tls, pins: &[[u8; 32]]) -> Result<ureq::Agent, FetchError> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca {
        Some(ca) => {
            for der in ca.certs.iter() {
                // Each was checked as X.509 when the config was read.
                let _ = roots.add(rustls::pki_types::CertificateDer::from(der.clone()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        crate::config::TlsVersion::V1_3 => &[&rustls::version::TLS13],
        crate::config::TlsVersion::V1_2 => &[&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Fails only for versions the provider lacks (ring has both): no client then, not a
    // weaker one.
    let roots = Arc::new(roots);
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|_| FetchError::Unreachable)?;
    let config = if pins.is_empty() {
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|_| FetchError::Unreachable)?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                inner,
                pins: pins.to_vec(),
            }))
            .with_no_client_auth()
    };
    Ok(ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .redirects(0)
        .tls_config(Arc::new(config))
        .build())
}

/// The usual verification (chain, expiry, name), then the leaf certificate must be one of the
/// pins: checked in the handshake, before the client secret is sent.
#[derive(Debug)]
struct Pinned {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    pins: Vec<[u8; 32]>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use sha2::Digest;
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        let digest: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
        if self.pins.contains(&digest) {
            Ok(verified)
        } else {
            Err(rustls::Error::General(
                "the certificate matches none of the pins".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The refresher's per-credential memory.
#[derive(Default)]
struct Tracked {
    /// After a failure: not before this instant, and the delay that was used.
    backoff: Option<(Instant, Duration)>,
    /// The last forced refresh (at most one a second).
    last_forced: Option<Instant>,
    /// Its grant was refused for the token obtained at this time: left alone until the row
    /// has another token (a connect).
    parked: Option<Option<store::Timestamp>>,
}

impl Refresher {
    /// Start the thread over its own store connection.
    pub fn start(
        path: PathBuf,
        max_bytes: Option<u64>,
        ring: Arc<Keyring>,
        failures: FailureCounter,
        tls: crate::config::Tls,
    ) -> Result<Arc<Refresher>, store::Error> {
        let store = Store::open_limited(&path, max_bytes)?;
        let r = Arc::new(Refresher {
            forced: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&r);
        std::thread::Builder::new()
            .name("sluice-oauth".into())
            .spawn(move || {
                let agent = agent(&tls, &[]);
                let mut tracked: HashMap<String, Tracked> = HashMap::new();
                let mut rows: Vec<store::Credential> = Vec::new();
                let mut generation = None;
                // Supervised: a panic is counted and the loop resumes after a backoff.
                crate::supervise::run(crate::supervise::Task::OAuth, || {
                    let Some(r) = weak.upgrade() else {
                        return ControlFlow::Break(());
                    };
                    std::thread::sleep(TICK);
                    // Re-read the rows only when the configuration changed.
                    match store.generation() {
                        Ok(g) if Some(g) == generation => {}
                        Ok(g) => match store.credentials() {
                            Ok(c) => {
                                rows = c.into_iter().filter(|c| c.kind.is_oauth()).collect();
                                generation = Some(g);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "OAuth refresher cannot read the store");
                                return ControlFlow::Continue(());
                            }
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "OAuth refresher cannot read the store");
                            return ControlFlow::Continue(());
                        }
                    }
                    let forced = std::mem::take(&mut *r.forced.lock().unwrap_or_else(|p| p.into_inner()));
                    drop(r);
                    let now = OffsetDateTime::now_utc();
                    tracked.retain(|id, _| rows.iter().any(|c| &c.id == id));
                    for c in &rows {
                        let t = tracked.entry(c.id.clone()).or_default();
                        // A 401 refreshes the refused token once (not a newer one), at most
                        // once a second.
                        let force = forced.get(&c.name).is_some_and(|obtained| {
                            c.token_obtained_at.map(|t| t.to_string()).unwrap_or_default() == *obtained
                        }) && t.last_forced.is_none_or(|at| at.elapsed() >= FIRST_BACKOFF);
                        if !force && !due(c, now) {
                            continue;
                        }
                        // Its refresh token was refused: only a new connect (or set-oauth)
                        // helps, which clears `last_error`. No retry loop against the server.
                        if c.last_error.as_deref() == Some(NEEDS_RECONNECT)
                            || t.parked == Some(c.token_obtained_at)
                        {
                            continue;
                        }
                        if t.backoff.is_some_and(|(at, _)| Instant::now() < at) {
                            continue;
                        }
                        match store.lease_oauth_refresh(&c.id, c.token_obtained_at, LEASE_SECS) {
                            Ok(true) => {}
                            // Another process is on it (or did it): its write reloads us.
                            Ok(false) => continue,
                            Err(e) => {
                                tracing::warn!(error = %e, "OAuth refresher cannot write the store");
                                continue;
                            }
                        }
                        if force {
                            t.last_forced = Some(Instant::now());
                        }
                        // One credential's panic is that credential's failure (backoff), not
                        // every credential's.
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            let shared = agent.as_ref().map_err(|_| FetchError::Unreachable)?;
                            refresh(shared, &tls, &store, &ring, c)
                        }))
                        .unwrap_or(Err(FetchError::Invalid));
                        match result {
                            Ok(expires_in) => {
                                if t.backoff.take().is_some() || c.last_error.is_some() {
                                    tracing::warn!(credential = %c.name, expires_in, "OAuth token obtained again");
                                } else {
                                    tracing::debug!(credential = %c.name, expires_in, forced = force, "OAuth token refreshed");
                                }
                            }
                            Err(e @ (FetchError::InvalidGrant | FetchError::NeedsReconnect))
                                if refresh_grant(c) =>
                            {
                                // Not a failure to retry (not counted as one): the gauge
                                // sluice_oauth_needs_reconnect says it. Parked: even if the
                                // mark below cannot be written, no loop against the server.
                                t.parked = Some(c.token_obtained_at);
                                if e == FetchError::InvalidGrant {
                                    tracing::error!(credential = %c.name, error = %e.code(), "the authorization server refused the refresh token (revoked on its side, or expired): the credential needs `sluice credentials connect` again; requests needing it get 503 credential_unavailable once the current token expires");
                                } else {
                                    tracing::error!(credential = %c.name, error = %e.code(), "the authorization server gave no refresh token: the credential needs `sluice credentials connect` again before its access token expires");
                                }
                                if let Err(e) = store.oauth_failed(&c.id, NEEDS_RECONNECT) {
                                    tracing::warn!(error = %e, "cannot record an OAuth failure");
                                }
                            }
                            Err(e) => {
                                failures.with_label_values(&[&c.name]).inc();
                                let delay = t.backoff.map_or(FIRST_BACKOFF, |(_, d)| (d * 2).min(MAX_BACKOFF));
                                t.backoff = Some((Instant::now() + delay, delay));
                                let code = e.code();
                                if c.last_error.as_deref() != Some(code.as_str()) {
                                    tracing::error!(credential = %c.name, error = %code, retry_in_secs = delay.as_secs(), "cannot obtain an OAuth token; requests needing it get 503 credential_unavailable once the current one expires");
                                }
                                if let Err(e) = store.oauth_failed(&c.id, &code) {
                                    tracing::warn!(error = %e, "cannot record an OAuth failure");
                                }
                            }
                        }
                    }
                    ControlFlow::Continue(())
                });
            })
            .map_err(|source| store::Error::Io { path, source })?;
        Ok(r)
    }

    /// The server refused `credential`'s token obtained at `obtained`: get a new one at the
    /// next tick (if that is still the current token).
    pub fn force(&self, credential: &str, obtained: &str) {
        self.forced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(credential.to_string(), obtained.to_string());
    }
}

/// The settings of OAuth credential `c`.
pub fn settings(c: &store::Credential) -> Option<Settings> {
    c.oauth
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
}

/// Whether OAuth credential `c`'s secret is a refresh token.
fn refresh_grant(c: &store::Credential) -> bool {
    settings(c).is_some_and(|s| s.grant == Grant::RefreshToken)
}

/// How OAuth credential `c` was connected (`None`: set with `set-oauth`).
pub fn connected(c: &store::Credential) -> Option<Connected> {
    c.connect
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
}

/// What to store after a token was obtained: the sealed token, its expiry (RFC 3339), and the
/// newly sealed secret when the endpoint rotated the refresh token.
pub struct Sealed {
    pub token: Vec<u8>,
    pub expires_at: String,
    pub rotated_secret: Option<Vec<u8>>,
}

/// Seal `token` (and a rotated refresh token) for credential row (`id`, `name`).
pub fn seal(ring: &Keyring, id: &str, name: &str, grant: Grant, token: &Token) -> Sealed {
    let now = OffsetDateTime::now_utc();
    // Checked: a lifetime that does not fit a date is the longest one believed.
    let expires = now
        .checked_add(time::Duration::seconds(
            token.expires_in.min(MAX_EXPIRES_IN) as i64,
        ))
        .unwrap_or(now);
    Sealed {
        token: ring.seal(
            token.access.as_bytes(),
            &vault::aad(vault::TOKEN_TABLE, id, name),
        ),
        expires_at: crate::store::utc_text(expires),
        rotated_secret: token
            .refresh
            .as_ref()
            .filter(|_| grant == Grant::RefreshToken)
            .map(|rt| ring.seal(rt.as_bytes(), &vault::aad("credentials", id, name))),
    }
}

/// Obtain and store a token for `c`; its lifetime in seconds.
fn refresh(
    shared: &ureq::Agent,
    tls: &crate::config::Tls,
    store: &Store,
    ring: &Keyring,
    c: &store::Credential,
) -> Result<u64, FetchError> {
    let settings = settings(c).ok_or(FetchError::Invalid)?;
    // A pinned endpoint gets a client of its own (rare: built per refresh).
    let pinned;
    let agent = if settings.pins.is_empty() {
        shared
    } else {
        pinned = agent(tls, &settings.pin_digests())?;
        &pinned
    };
    let secret = ring
        .open(&c.sealed, &vault::aad("credentials", &c.id, &c.name))
        .map_err(|_| FetchError::Sealed)?;
    let secret = std::str::from_utf8(&secret).map_err(|_| FetchError::Sealed)?;
    let connected = connected(c);
    let client_secret = match &c.client_sealed {
        Some(sealed) => Some(
            ring.open(sealed, &vault::aad(vault::CLIENT_TABLE, &c.id, &c.name))
                .map_err(|_| FetchError::Sealed)?,
        ),
        None => None,
    };
    let client_secret = client_secret
        .as_deref()
        .map(|s| std::str::from_utf8(s).map_err(|_| FetchError::Sealed))
        .transpose()?;
    let token = fetch(
        agent,
        &settings,
        secret,
        connected.as_ref().map(|c| (c, client_secret)),
    )?;
    let sealed = seal(ring, &c.id, &c.name, settings.grant, &token);
    let fp = ring.fingerprint();
    store
        .set_oauth_token(
            &c.id,
            &sealed.token,
            &sealed.expires_at,
            sealed.rotated_secret.as_deref().map(|s| (s, fp.as_str())),
        )
        .map_err(|_| FetchError::Store)?;
    Ok(token.expires_in)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers_are_read_with_every_number_bounded() {
        let t = |b: &str| token_answer(b.as_bytes()).map(|t| t.expires_in);
        assert_eq!(
            t(r#"{"access_token":"a","expires_in":1e13}"#),
            Ok(MAX_EXPIRES_IN)
        );
        assert_eq!(t(r#"{"access_token":"a","expires_in":-5}"#), Ok(1));
        assert_eq!(t(r#"{"access_token":"a","expires_in":"120"}"#), Ok(120));
        assert_eq!(t(r#"{"access_token":"a","expires_in":null}"#), Ok(3600));
        assert_eq!(t(r#"{"access_token":"a"}"#), Ok(3600));
        assert_eq!(t(r#"{"access_token":"a","expires_in":1e400}"#).ok(), None);
        assert!(t(r#"{"access_token":"a","expires_in":[1]}"#).is_err());
        assert!(t(r#"{"access_token":""}"#).is_err());
        assert!(t(r#"{"access_token":"a\nb"}"#).is_err());
        // Sealing with the longest lifetime does not overflow a date.
        let ring = Keyring::new(&Keyring::generate(), &[]).unwrap();
        let token = token_answer(br#"{"access_token":"a","expires_in":1e300}"#).unwrap();
        let sealed = seal(&ring, "id", "name", Grant::ClientCredentials, &token);
        assert!(sealed
            .expires_at
            .starts_with(&(OffsetDateTime::now_utc().year() + 1).to_string()));
    }

    proptest::proptest! {
        /// Whatever JSON a token endpoint answers, reading it never panics and a token's
        /// lifetime is within bounds.
        #[test]
        fn any_token_answer_is_read_without_panic(
            e in proptest::prelude::any::<f64>(),
            s in ".{0,12}",
            pick in 0u8..4,
        ) {
            let expires = match pick {
                0 => serde_json::json!(e),
                1 => serde_json::json!(s),
                2 => serde_json::json!({"x": e}),
                _ => serde_json::Value::Null,
            };
            let body = serde_json::json!({"access_token": "tok", "expires_in": expires}).to_string();
            if let Ok(t) = token_answer(body.as_bytes()) {
                proptest::prop_assert!((1..=MAX_EXPIRES_IN).contains(&t.expires_in));
            }
        }
    }

    #[test]
    fn tokens_are_due_at_80_percent_of_their_lifetime() {
        let got = OffsetDateTime::now_utc() - Duration::from_secs(70);
        let fmt = |t: OffsetDateTime| Some(store::Timestamp(t));
        let mut c = store::Credential {
            kind: crate::store::CredentialType::OAuth,
            token_sealed: Some(vec![1]),
            token_obtained_at: fmt(got),
            token_expires_at: fmt(got + Duration::from_secs(100)),
            ..Default::default()
        };
        assert!(!due(&c, OffsetDateTime::now_utc()));
        assert!(due(&c, got + Duration::from_secs(81)));
        c.token_sealed = None;
        assert!(due(&c, OffsetDateTime::now_utc()), "no token yet");
        assert!(check_url("https://login.example.com/oauth2/token").is_ok());
        assert!(check_url("http://127.0.0.1:9000/token").is_ok());
        assert!(check_url("http://[::1]:9000/token").is_ok());
        for bad in [
            "ftp://x",
            "https://u:p@x/t",
            "nonsense",
            "http://login.example.com/token",
            "https://x/t#frag",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert_eq!(FetchError::Status(503).code(), "http_503");
    }
}
