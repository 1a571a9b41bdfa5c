//! The TOML file format, as serde structs. Nothing here is trusted: `validate` turns these into
//! the typed [`super::Config`]. Every struct denies unknown keys, so a typo in a security
//! setting stops startup instead of being ignored. Defaults live here, in code; the shipped
//! `conf/sluice.toml` spells out the same values and a test keeps the two equal.

use serde::Deserialize;

/// `[listen]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    pub proxy: String,
    pub admin: String,
    pub metrics: String,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            proxy: "127.0.0.1:8480".into(),
            admin: "127.0.0.1:8481".into(),
            metrics: "127.0.0.1:9480".into(),
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Store {
    pub path: String,
    /// Largest size of the database file in MiB (0: no limit besides the disk). When reached,
    /// writes fail as on a full disk: requests are refused (503) rather than run unaudited.
    /// Default 10240 (10 GiB): a default install stops, with a clear 503 and an alert before,
    /// rather than fill its disk.
    pub max_size_mb: u64,
    /// When the in-memory snapshot of keys and credentials could not be refreshed from the
    /// store for this long, requests are refused (503) rather than served with revocations
    /// possibly missed.
    pub max_stale_secs: u64,
}

/// `[store] max_size_mb` when the config does not say.
pub const DEFAULT_MAX_SIZE_MB: u64 = 10 * 1024;

impl Default for Store {
    fn default() -> Self {
        Store {
            path: "data/sluice.db".into(),
            max_size_mb: DEFAULT_MAX_SIZE_MB,
            max_stale_secs: 10,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_body_bytes: u64,
    pub timeout_secs: u64,
    pub long_timeout_secs: u64,
    pub long_timeout_models: Vec<String>,
    pub connect_timeout_secs: u64,
    pub client_timeout_secs: u64,
    pub max_header_bytes: u64,
    pub max_headers: u64,
    /// Lingering close: seconds to keep reading (and discarding) what a client still sends
    /// after its connection's last reply, so it can read a refusal; 0 closes at once.
    pub linger_secs: u64,
    /// Lingering close: the most bytes discarded before the connection is closed anyway.
    pub linger_max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 10 * 1024 * 1024,
            timeout_secs: 30,
            long_timeout_secs: 120,
            long_timeout_models: ["o1*", "o3*", "o4*", "*-reasoning*", "deepseek-r1*"]
                .map(String::from)
                .to_vec(),
            connect_timeout_secs: 5,
            client_timeout_secs: 30,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            linger_secs: 10,
            linger_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    pub threads: u64,
    pub shutdown_timeout_secs: u64,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            threads: 2,
            shutdown_timeout_secs: 30,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    pub format: String,
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// `[cors]`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Cors {
    pub allow_origins: Vec<String>,
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// Sources (CIDRs) allowed to reach the admin API; others get 403 before auth.
    pub allow_ips: Vec<String>,
    /// Lifetime of a login session (JWT).
    pub session_ttl_hours: u64,
    /// Largest admin API request body.
    pub max_body_bytes: u64,
    /// Failed logins allowed per source IP in `login_window_secs`.
    pub login_failures_per_ip: u64,
    /// Failed logins allowed per account (email) in `login_window_secs`.
    pub login_failures_per_account: u64,
    pub login_window_secs: u64,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            allow_ips: vec!["127.0.0.1/32".into(), "::1/128".into()],
            session_ttl_hours: 720,
            max_body_bytes: 64 * 1024,
            login_failures_per_ip: 20,
            login_failures_per_account: 5,
            login_window_secs: 900,
        }
    }
}

/// `[pii]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Pii {
    /// The PII setting of orgs created without `--pii`: "on" or "off".
    pub default: String,
}

impl Default for Pii {
    fn default() -> Self {
        Pii {
            default: "on".into(),
        }
    }
}

/// `[redaction]`: how responses are redacted when a key's response redaction is on.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Redaction {
    /// Most bytes of a streamed text field held back (the tail that could still be the start
    /// of an entity).
    pub stream_holdback_bytes: u64,
    /// Largest non-streamed response body buffered for redaction; larger ones are cut.
    pub max_response_bytes: u64,
    /// Largest single SSE event of a streamed response.
    pub max_event_bytes: u64,
}

impl Default for Redaction {
    fn default() -> Self {
        Redaction {
            stream_holdback_bytes: 256,
            max_response_bytes: 8 * 1024 * 1024,
            max_event_bytes: 1024 * 1024,
        }
    }
}

/// `[residency]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Residency {
    /// The region of requests with no header, key pin or org default.
    pub default_region: String,
    /// How often every upstream is health-checked (TCP connect).
    pub health_check_secs: u64,
}

impl Default for Residency {
    fn default() -> Self {
        Residency {
            default_region: "us".into(),
            health_check_secs: 5,
        }
    }
}

/// One `[[upstreams]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: String,
    pub region: String,
    pub base_url: String,
    #[serde(default)]
    pub credential: Option<String>,
    #[serde(default)]
    pub credential_header: Option<String>,
    #[serde(default)]
    pub credential_prefix: Option<String>,
    /// Ask for usage in streams the app did not ask it for (`stream_options.include_usage`),
    /// and strip it from what the app sees. Off for providers that refuse the option.
    #[serde(default = "yes")]
    pub stream_usage: bool,
    /// Outbound TLS: lowest version (`"1.2"`, `"1.3"`; default `[tls] min_version`).
    #[serde(default)]
    pub min_version: Option<String>,
    /// PEM bundle of the CAs this upstream's certificate must chain to (default `[tls]
    /// ca_file`, else the system's roots).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// `sha256/<base64>` of the leaf certificates accepted (any one of them).
    #[serde(default)]
    pub pins: Vec<String>,
    /// Let a credential go over plain `http://` to a host that is not loopback.
    #[serde(default)]
    pub allow_plaintext: bool,
}

fn yes() -> bool {
    true
}

/// The default upstream list: OpenAI in the US, as in `conf/sluice.toml`.
pub fn default_upstreams() -> Vec<Upstream> {
    vec![Upstream {
        name: "openai-us".into(),
        region: "us".into(),
        base_url: "https://api.openai.com".into(),
        credential: Some("openai-us".into()),
        credential_header: None,
        credential_prefix: None,
        stream_usage: true,
        min_version: None,
        ca_file: None,
        pins: Vec::new(),
        allow_plaintext: false,
    }]
}

/// `[tls]`: the outbound TLS policy's defaults (each upstream and MCP server may set its own).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// `"1.3"` (default) or `"1.2"`.
    pub min_version: String,
    /// PEM bundle of CAs that replaces the system's roots.
    pub ca_file: Option<String>,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            min_version: "1.3".into(),
            ca_file: None,
        }
    }
}

/// `[metrics]`: what `/metrics` shows.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    /// Label the per-answer histograms (token usage, time to first token) by key as well as
    /// by org. Off by default: every key ever used would add about 34 series.
    pub per_key: bool,
}

/// `[fleet]`: what many sidecars share.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Fleet {
    /// Redis holding the fleet's rate limit and budget counters (`redis://` or `rediss://`);
    /// absent: every process counts on its own.
    pub redis_url: Option<String>,
    /// `deny` or `local`: what a limited request gets while Redis cannot be reached.
    pub on_redis_error: String,
    /// Bound on each Redis call on the request path, in milliseconds.
    pub redis_timeout_ms: u64,
    /// A declarative bundle (`sluice apply` format) `serve` converges the store to.
    pub bundle: Option<String>,
    /// How often the bundle file is checked for changes, in seconds.
    pub bundle_poll_secs: u64,
    /// The largest share of the keys a bundle manages that one apply may revoke, unless the
    /// bundle says `allow_mass_removal = true`.
    pub max_removal_ratio: f64,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            redis_url: None,
            on_redis_error: "local".into(),
            redis_timeout_ms: 50,
            bundle: None,
            bundle_poll_secs: 2,
            max_removal_ratio: 0.5,
        }
    }
}

/// `[mcp]`: the MCP gateway's bounds.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Mcp {
    /// Largest JSON-RPC message (a tool result, an SSE event) taken from an MCP server;
    /// larger ones are replaced by a JSON-RPC error.
    pub max_message_bytes: u64,
}

impl Default for Mcp {
    fn default() -> Self {
        Mcp {
            max_message_bytes: 1024 * 1024,
        }
    }
}

/// One `[[mcp_servers]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    pub name: String,
    pub url: String,
    pub region: String,
    #[serde(default)]
    pub credential: Option<String>,
    #[serde(default)]
    pub credential_kind: Option<String>,
    /// Outbound TLS, as for upstreams.
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub pins: Vec<String>,
    #[serde(default)]
    pub allow_plaintext: bool,
}
