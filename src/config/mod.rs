//! Configuration: the TOML schema (`raw`), its validation (`validate`) and the typed model the
//! rest of sluice uses. After startup no code sees a string that still needs parsing.
//!
//! Precedence: `--config PATH` > `SLUICE_CONFIG` (both handled by the CLI) > the compiled-in
//! `conf/sluice.toml`. A file replaces the defaults section by section: a section that is absent
//! takes its defaults from code, except `[[upstreams]]`, which a file must list explicitly so
//! that traffic never goes somewhere the operator did not write down.

pub mod raw;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::residency::Region;

pub use validate::Problem;

/// The compiled-in default configuration file.
pub const DEFAULT_TOML: &str = include_str!("../../conf/sluice.toml");

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub store: Store,
    pub limits: Limits,
    pub server: Server,
    pub log: Log,
    pub cors: Cors,
    pub admin: Admin,
    pub pii: Pii,
    pub redaction: Redaction,
    pub residency: Residency,
    pub upstreams: Vec<Upstream>,
    pub mcp: Mcp,
    pub mcp_servers: Vec<McpServer>,
    pub fleet: Fleet,
    pub metrics: Metrics,
    /// `[tls]`: the outbound TLS defaults (no pins); upstreams and MCP servers have theirs
    /// resolved, OAuth token endpoints use these.
    pub tls: Tls,
}

/// `[metrics]`: what `/metrics` shows.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Label the per-answer histograms by key too (else `key="-"`): see README.
    pub per_key: bool,
}

/// `[fleet]`: what many sidecars share.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Redis for the shared limit and budget counters (may hold a password: never printed).
    pub redis_url: Option<secrecy::SecretString>,
    pub on_redis_error: RedisFallback,
    /// Bound on each Redis call on the request path.
    pub redis_timeout: std::time::Duration,
    /// A bundle file `serve` converges the store to.
    pub bundle: Option<std::path::PathBuf>,
    pub bundle_poll: std::time::Duration,
    /// See `raw::Fleet::max_removal_ratio` (0 to 1).
    pub max_removal_ratio: f64,
}

/// What a limited request gets while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFallback {
    /// 503 `limits_unavailable`.
    Deny,
    /// Counted by this process alone until Redis is back.
    Local,
}

/// `[mcp]`: the MCP gateway's bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Mcp {
    pub max_message_bytes: usize,
}

/// How an MCP server's credential is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A static token from the vault (`sluice credentials set`).
    Bearer,
    /// An access token sluice obtains and refreshes (`sluice credentials set-oauth`).
    OAuth,
}

/// One MCP server behind `/mcp/<name>` on the data plane.
#[derive(Debug, Clone, PartialEq)]
pub struct McpServer {
    /// `[a-z0-9-]`, the path segment apps use.
    pub name: String,
    /// The server's Streamable HTTP endpoint: scheme, host, port; `path_prefix` is its path.
    pub url: BaseUrl,
    /// The endpoint's query string, if any (kept as configured).
    pub query: Option<String>,
    pub region: Region,
    pub credential: Option<String>,
    pub credential_kind: CredentialKind,
    /// The TLS policy (`https://` only).
    pub tls: Option<Tls>,
    /// A credential may go over plain `http://` to a host that is not loopback.
    pub allow_plaintext: bool,
}

impl McpServer {
    /// The server's endpoint as a URL (the RFC 9728 resource it is, for an OAuth connect).
    pub fn endpoint_url(&self) -> String {
        format!(
            "{}://{}{}{}",
            if self.url.tls { "https" } else { "http" },
            self.url.authority,
            if self.url.path_prefix.is_empty() {
                "/"
            } else {
                &self.url.path_prefix
            },
            self.query
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default()
        )
    }
}

/// The lowest TLS version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

impl TlsVersion {
    /// As configured: `1.2`, `1.3`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }

    /// From rustls's name of a negotiated version (`TLSv1_3`); `None` for anything older or
    /// unknown.
    pub fn negotiated(name: &str) -> Option<TlsVersion> {
        match name {
            "TLSv1_2" => Some(TlsVersion::V1_2),
            "TLSv1_3" => Some(TlsVersion::V1_3),
            _ => None,
        }
    }
}

/// CA certificates (DER) read from a `ca_file`.
#[derive(Clone, PartialEq)]
pub struct CaBundle {
    pub path: PathBuf,
    pub certs: std::sync::Arc<Vec<Vec<u8>>>,
}

impl CaBundle {
    /// The certificates as PEM text.
    pub fn pem(&self) -> String {
        use base64::Engine;
        let mut out = String::new();
        for der in self.certs.iter() {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            out.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                out.push_str(&String::from_utf8_lossy(line));
                out.push('\n');
            }
            out.push_str("-----END CERTIFICATE-----\n");
        }
        out
    }
}

impl fmt::Debug for CaBundle {
    /// The path and a digest of the certificates (a reload sees a changed file).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for c in self.certs.iter() {
            h.update(c);
        }
        let d = h.finalize();
        write!(
            f,
            "CaBundle({}, {} certificates, sha256 {:02x}{:02x}{:02x}{:02x})",
            self.path.display(),
            self.certs.len(),
            d[0],
            d[1],
            d[2],
            d[3]
        )
    }
}

/// The outbound TLS policy of an upstream or MCP server.
#[derive(Clone, PartialEq)]
pub struct Tls {
    pub min_version: TlsVersion,
    /// The CAs its certificate must chain to, instead of the system's roots.
    pub ca: Option<CaBundle>,
    /// SHA-256 digests of the leaf certificates accepted (any one); empty: any certificate the
    /// CAs vouch for.
    pub pins: Vec<[u8; 32]>,
}

impl Tls {
    /// A pin as written: `sha256/<base64>`.
    pub fn pin_text(pin: &[u8; 32]) -> String {
        use base64::Engine;
        format!(
            "sha256/{}",
            base64::engine::general_purpose::STANDARD.encode(pin)
        )
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("min_version", &self.min_version)
            .field("ca", &self.ca)
            .field(
                "pins",
                &self.pins.iter().map(Tls::pin_text).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// `[redaction]`: response redaction bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Redaction {
    pub stream_holdback_bytes: usize,
    pub max_response_bytes: usize,
    pub max_event_bytes: usize,
}

/// Data residency settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Residency {
    /// The region of requests with no `X-Sluice-Region`, key pin or org default.
    pub default_region: Region,
    /// Interval of the TCP health checks of every upstream.
    pub health_check: Duration,
}

/// `[admin]`: the admin API's network allowlist, sessions and login throttling.
#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub allow_ips: Vec<ipnet::IpNet>,
    pub session_ttl: Duration,
    pub max_body_bytes: usize,
    pub login_failures_per_ip: u32,
    pub login_failures_per_account: u32,
    pub login_window: Duration,
}

impl Admin {
    /// Whether `ip` may reach the admin API (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        self.allow_ips.iter().any(|n| n.contains(&ip))
    }
}

/// PII redaction defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Pii {
    /// Orgs created without `--pii` get redaction on (`[pii] default = "on"`, the default).
    pub default_on: bool,
}

/// Listening addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
}

/// Where the SQLite store lives.
#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    pub path: PathBuf,
    /// Largest database size in bytes (`[store] max_size_mb`); `None`: only the disk limits it.
    pub max_bytes: Option<u64>,
    /// Refuse requests once the key snapshot is older than this (`[store] max_stale_secs`).
    pub max_stale: std::time::Duration,
}

/// Size limits and timeouts on the data plane.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub timeout: Duration,
    pub long_timeout: Duration,
    pub long_timeout_models: Vec<wildmatch::WildMatch>,
    pub connect_timeout: Duration,
    pub client_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Lingering close: how long a closing connection keeps discarding client bytes.
    pub linger: Duration,
    /// Lingering close: the most bytes discarded.
    pub linger_max_bytes: u64,
}

impl Limits {
    /// The upstream read timeout for a request naming `model`: `long_timeout` when the model
    /// matches one of `long_timeout_models` (case-insensitive), else `timeout`.
    pub fn timeout_for(&self, model: Option<&str>) -> Duration {
        match model {
            Some(m) if self.is_long_model(m) => self.long_timeout,
            _ => self.timeout,
        }
    }

    fn is_long_model(&self, model: &str) -> bool {
        let lower = model.to_ascii_lowercase();
        self.long_timeout_models.iter().any(|g| g.matches(&lower))
    }
}

/// Process-level settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub threads: usize,
    pub shutdown_timeout: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `sluice=debug`.
    pub level: String,
}

/// CORS: origins allowed to call the data plane from a browser. Empty means no CORS headers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cors {
    pub allow_origins: Vec<String>,
}

/// One upstream API.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub region: Region,
    pub base_url: BaseUrl,
    /// Name of the vault credential injected into requests to this upstream. `None`: the
    /// upstream gets no credential (e.g. a model server inside the same trust boundary).
    pub credential: Option<String>,
    /// The header the credential is sent in (`authorization` unless configured, e.g. Azure's
    /// `api-key`).
    pub credential_header: http::HeaderName,
    /// Text put before the secret in that header (`"Bearer "` for `authorization`, else "").
    pub credential_prefix: String,
    /// Ask streams for usage when the app did not (and strip it from what the app sees).
    pub stream_usage: bool,
    /// The TLS policy (`https://` only).
    pub tls: Option<Tls>,
    /// A credential may go over plain `http://` to a host that is not loopback.
    pub allow_plaintext: bool,
}

/// A parsed upstream base URL: `http(s)://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for none), prepended to `/v1/...`.
    pub path_prefix: String,
    /// The value for the upstream `Host` header.
    pub authority: String,
}

/// Whether `host` (a name, an IP address, a bracketed IPv6 address) is this machine:
/// `localhost` or a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    validate::is_loopback_host(host)
}

/// Whether `name` can name a vault credential: 1 to 64 characters of `[A-Za-z0-9._-]`, and
/// not shaped like a key or token (one typed where its name goes would be logged, as a
/// credential's name is, with every request that uses it):
/// - 20 characters or more after one of the providers' prefixes below (a short name with one,
///   `sk-prod`, is a name);
/// - a token the redaction's secret rules recognise (Twilio's `SK` + 32 hex, npm's, GitHub's
///   `ghu_`, AWS's `ASIA`, ...);
/// - a run of 32 or more letters and digits, with both: a key without a prefix (Azure
///   OpenAI's 32 hex digits, Mistral's, Cohere's, Together's) or the body of one.
pub fn is_credential_name(name: &str) -> bool {
    const KEY_PREFIXES: [&str; 11] = [
        "sk-",
        "sk_",
        "rk_",
        "ghp_",
        "gho_",
        "ghs_",
        "github_pat_",
        "xox",
        "glpat-",
        "AKIA",
        "AIza",
    ];
    let well_formed = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    let prefixed = name.len() >= 20 && KEY_PREFIXES.iter().any(|p| name.starts_with(p));
    let random_run = name.split(|c: char| !c.is_ascii_alphanumeric()).any(|run| {
        run.len() >= 32
            && run.bytes().any(|b| b.is_ascii_digit())
            && run.bytes().any(|b| b.is_ascii_alphabetic())
    });
    well_formed && !prefixed && !random_run && !crate::redact::holds_a_secret(name)
}

/// What a credential name must be ([`is_credential_name`]).
pub const CREDENTIAL_NAME_RULE: &str = "a credential name is 1 to 64 characters of \
    [A-Za-z0-9._-], not a key itself (20 characters or more starting sk-, sk_, rk_, ghp_, \
    gho_, ghs_, github_pat_, xox, glpat-, AKIA or AIza; a token sluice's secret rules \
    recognise; or a run of 32 or more letters and digits with both); the secret is stored \
    with `sluice credentials set`";

/// A pin as written (`sha256/<base64 of 32 bytes>`), as a digest.
pub fn parse_pin(s: &str) -> Option<[u8; 32]> {
    validate::parse_pin(s)
}

impl BaseUrl {
    /// Whether the host is this machine (`localhost`, a loopback address).
    pub fn is_loopback(&self) -> bool {
        validate::is_loopback_host(&self.host)
    }

    /// A credential sent here would cross the network in clear text.
    pub fn is_plaintext_remote(&self) -> bool {
        !self.tls && !self.is_loopback()
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.path_prefix)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {origin}:\n{}", list(.problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Load from `path`, or the compiled-in default when `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, LoadError> {
        match path {
            None => Config::parse(DEFAULT_TOML).map_err(|problems| LoadError::Invalid {
                origin: "(compiled-in default)".into(),
                problems,
            }),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| LoadError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Config::parse(&text).map_err(|problems| LoadError::Invalid {
                    origin: p.display().to_string(),
                    problems,
                })
            }
        }
    }

    /// Parse and validate TOML text, collecting every problem.
    pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        validate::parse(text)
    }

    /// Whether any upstream serves `region`.
    pub fn serves(&self, region: Region) -> bool {
        self.upstreams.iter().any(|u| u.region == region)
    }

    /// The MCP server named `name`.
    pub fn mcp_server(&self, name: &str) -> Option<(usize, &McpServer)> {
        self.mcp_servers
            .iter()
            .enumerate()
            .find(|(_, m)| m.name == name)
    }

    /// The upstream named `name`.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

/// What a reload would change: the config to run and the settings that differ.
#[derive(Debug)]
pub struct Reload {
    /// The new config, with the settings that need a restart kept as they run.
    pub cfg: Config,
    /// Settings applied live (sections, or `section.key`), in config order.
    pub applied: Vec<&'static str>,
    /// Settings that changed in the file but take effect only at the next start.
    pub restart_needed: Vec<&'static str>,
}

/// Whether two values differ (compared by their debug form: every config type has one, and
/// none prints a secret).
fn differs<T: fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

impl Config {
    /// Reload to `new`: what changes live (upstreams, MCP servers, residency, request limits,
    /// redaction, the MCP bound, CORS, the log level, metrics labels) is taken from `new`; what
    /// the running process was built with (listeners, store, threads, admin, PII default, fleet,
    /// log format, and the connection-level limits the listener enforces) is kept and listed.
    pub fn reload(&self, new: Config) -> Reload {
        let mut cfg = new;
        let mut applied = Vec::new();
        let mut restart_needed = Vec::new();
        macro_rules! keep {
            ($name:literal, $($field:ident).+) => {
                if differs(&self.$($field).+, &cfg.$($field).+) {
                    restart_needed.push($name);
                    cfg.$($field).+ = self.$($field).+.clone();
                }
            };
        }
        macro_rules! live {
            ($name:literal, $($field:ident).+) => {
                if differs(&self.$($field).+, &cfg.$($field).+) {
                    applied.push($name);
                }
            };
        }
        keep!("listen", listen);
        keep!("store", store);
        keep!("server", server);
        keep!("log.format", log.format);
        live!("log.level", log.level);
        keep!("limits.client_timeout_secs", limits.client_timeout);
        keep!("limits.linger_secs", limits.linger);
        keep!("limits.linger_max_bytes", limits.linger_max_bytes);
        live!("limits", limits);
        live!("cors", cors);
        keep!("admin", admin);
        keep!("pii", pii);
        live!("redaction", redaction);
        live!("residency", residency);
        live!("upstreams", upstreams);
        live!("mcp", mcp);
        live!("mcp_servers", mcp_servers);
        use secrecy::ExposeSecret;
        let same_url = match (&self.fleet.redis_url, &cfg.fleet.redis_url) {
            (None, None) => true,
            (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
            _ => false,
        };
        if !same_url || differs(&self.fleet, &cfg.fleet) {
            restart_needed.push("fleet");
            cfg.fleet = self.fleet.clone();
        }
        live!("metrics", metrics);
        // Upstreams and MCP servers took [tls] into their own policy (live, above); the token
        // endpoints' client is made at start.
        keep!("tls", tls);
        Reload {
            cfg,
            applied,
            restart_needed,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        validate::from_raw(validate::RawConfig::default())
            .expect("the built-in defaults are valid (checked by a unit test)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[listen]
proxy = "127.0.0.1:8480"
[[upstreams]]
name = "a"
region = "us"
base_url = "http://127.0.0.1:9001"
"#;

    #[test]
    fn a_reload_applies_what_can_change_live_and_keeps_the_rest_as_it_runs() {
        let running = Config::parse(BASE).unwrap();
        // Nothing changed: nothing to say.
        let r = running.reload(Config::parse(BASE).unwrap());
        assert!(r.applied.is_empty() && r.restart_needed.is_empty(), "{r:?}");

        let new = BASE.replace("127.0.0.1:8480", "127.0.0.1:8490").replace("9001", "9002")
            + "[log]\nlevel = \"debug\"\nformat = \"json\"\n[limits]\ntimeout_secs = 7\nclient_timeout_secs = 3\n[fleet]\nredis_url = \"redis://:pw@127.0.0.1:1/0\"\n";
        let r = running.reload(Config::parse(&new).unwrap());
        assert_eq!(r.applied, ["log.level", "limits", "upstreams"]);
        assert_eq!(
            r.restart_needed,
            [
                "listen",
                "log.format",
                "limits.client_timeout_secs",
                "fleet"
            ]
        );
        // Live: taken from the new file.
        assert_eq!(r.cfg.upstreams[0].base_url.port, 9002);
        assert_eq!(r.cfg.limits.timeout, Duration::from_secs(7));
        assert_eq!(r.cfg.log.level, "debug");
        // Kept as running until a restart.
        assert_eq!(r.cfg.listen.proxy, running.listen.proxy);
        assert_eq!(r.cfg.log.format, running.log.format);
        assert_eq!(r.cfg.limits.client_timeout, running.limits.client_timeout);
        assert!(r.cfg.fleet.redis_url.is_none());
        // A secret never shows in what a reload says.
        assert!(!format!("{r:?}").contains(":pw@"));
    }
}
