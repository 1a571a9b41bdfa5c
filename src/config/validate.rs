//! TOML text -> raw sections -> typed [`Config`], collecting every problem with its key path
//! before failing (as linkerd's `parse_config` does). Each section and each `[[upstreams]]`
//! entry is deserialized on its own so that one bad section does not hide the others.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{
    raw, Admin, BaseUrl, CaBundle, Config, Cors, CredentialKind, Fleet, Limits, Listen, Log,
    LogFormat, Mcp, McpServer, Pii, Redaction, RedisFallback, Residency, Server, Store, Tls,
    TlsVersion, Upstream,
};
use crate::residency::Region;

/// Headers a credential must never be written into: framing, routing and hop-by-hop ones.
const FORBIDDEN_CREDENTIAL_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "proxy-authorization",
    "cookie",
];

/// One configuration problem: the key path (`limits.timeout_secs`, `upstreams[1].region`) and
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// All raw sections, each already defaulted.
#[derive(Debug, Clone)]
pub(super) struct RawConfig {
    listen: raw::Listen,
    store: raw::Store,
    limits: raw::Limits,
    server: raw::Server,
    log: raw::Log,
    cors: raw::Cors,
    admin: raw::Admin,
    pii: raw::Pii,
    redaction: raw::Redaction,
    residency: raw::Residency,
    upstreams: Vec<raw::Upstream>,
    mcp: raw::Mcp,
    mcp_servers: Vec<raw::McpServer>,
    fleet: raw::Fleet,
    metrics: raw::Metrics,
    tls: raw::Tls,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            listen: Default::default(),
            store: Default::default(),
            limits: Default::default(),
            server: Default::default(),
            log: Default::default(),
            cors: Default::default(),
            admin: Default::default(),
            pii: Default::default(),
            redaction: Default::default(),
            residency: Default::default(),
            upstreams: raw::default_upstreams(),
            mcp: Default::default(),
            mcp_servers: Vec::new(),
            fleet: Default::default(),
            metrics: Default::default(),
            tls: Default::default(),
        }
    }
}

struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

pub(super) fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        vec![Problem {
            path: "(file)".into(),
            message: format!("not valid TOML: {}", e.message()),
        }]
    })?;
    let mut problems = Problems(Vec::new());
    let mut cfg = RawConfig {
        upstreams: Vec::new(),
        ..RawConfig::default()
    };
    let mut saw_upstreams = false;
    for (key, value) in table {
        match key.as_str() {
            "listen" => section(value, &key, &mut problems).map(|s| cfg.listen = s),
            "store" => section(value, &key, &mut problems).map(|s| cfg.store = s),
            "limits" => section(value, &key, &mut problems).map(|s| cfg.limits = s),
            "server" => section(value, &key, &mut problems).map(|s| cfg.server = s),
            "log" => section(value, &key, &mut problems).map(|s| cfg.log = s),
            "cors" => section(value, &key, &mut problems).map(|s| cfg.cors = s),
            "admin" => section(value, &key, &mut problems).map(|s| cfg.admin = s),
            "pii" => section(value, &key, &mut problems).map(|s| cfg.pii = s),
            "redaction" => section(value, &key, &mut problems).map(|s| cfg.redaction = s),
            "residency" => section(value, &key, &mut problems).map(|s| cfg.residency = s),
            "mcp" => section(value, &key, &mut problems).map(|s| cfg.mcp = s),
            "fleet" => section(value, &key, &mut problems).map(|s| cfg.fleet = s),
            "metrics" => section(value, &key, &mut problems).map(|s| cfg.metrics = s),
            "tls" => section(value, &key, &mut problems).map(|s| cfg.tls = s),
            "mcp_servers" => {
                match value {
                    toml::Value::Array(items) => {
                        for (i, item) in items.into_iter().enumerate() {
                            if let Some(m) =
                                section(item, &format!("mcp_servers[{i}]"), &mut problems)
                            {
                                cfg.mcp_servers.push(m);
                            }
                        }
                    }
                    _ => problems.push(
                        "mcp_servers",
                        "must be an array of tables ([[mcp_servers]])",
                    ),
                }
                Some(())
            }
            "upstreams" => {
                saw_upstreams = true;
                match value {
                    toml::Value::Array(items) => {
                        for (i, item) in items.into_iter().enumerate() {
                            if let Some(u) =
                                section(item, &format!("upstreams[{i}]"), &mut problems)
                            {
                                cfg.upstreams.push(u);
                            }
                        }
                    }
                    _ => problems.push("upstreams", "must be an array of tables ([[upstreams]])"),
                }
                Some(())
            }
            other => {
                problems.push(
                    other,
                    "unknown section (known: listen, store, limits, server, log, cors, admin, pii, redaction, residency, upstreams, mcp, mcp_servers, fleet, metrics, tls)",
                );
                None
            }
        };
    }
    if !saw_upstreams {
        problems.push(
            "upstreams",
            "at least one [[upstreams]] entry is required (name, region, base_url)",
        );
    }
    match from_raw_collect(cfg, &mut problems) {
        Some(c) if problems.0.is_empty() => Ok(c),
        _ => Err(problems.0),
    }
}

fn section<T: DeserializeOwned>(
    value: toml::Value,
    path: &str,
    problems: &mut Problems,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let full = if inner.is_empty() || inner == "." {
                path.to_string()
            } else {
                format!("{path}.{inner}")
            };
            problems.push(full, e.into_inner().to_string());
            None
        }
    }
}

pub(super) fn from_raw(raw: RawConfig) -> Result<Config, Vec<Problem>> {
    let mut problems = Problems(Vec::new());
    match from_raw_collect(raw, &mut problems) {
        Some(c) if problems.0.is_empty() => Ok(c),
        _ => Err(problems.0),
    }
}

fn from_raw_collect(raw: RawConfig, p: &mut Problems) -> Option<Config> {
    // Destructure everything so that a new raw field does not compile until it is validated.
    let RawConfig {
        listen,
        store,
        limits,
        server,
        log,
        cors,
        admin,
        pii,
        redaction,
        residency,
        upstreams,
        mcp,
        mcp_servers,
        fleet,
        metrics,
        tls,
    } = raw;
    let tls_defaults = {
        let raw::Tls {
            min_version,
            ca_file,
        } = tls;
        let min = tls_version(&min_version).unwrap_or_else(|| {
            p.push(
                "tls.min_version",
                format!("{min_version:?} must be \"1.2\" or \"1.3\""),
            );
            TlsVersion::V1_3
        });
        let ca = ca_file.and_then(|f| load_ca(&f).map_err(|msg| p.push("tls.ca_file", msg)).ok());
        (min, ca)
    };
    let raw::Metrics { per_key } = metrics;
    let metrics = super::Metrics { per_key };
    let admin = {
        let raw::Admin {
            allow_ips,
            session_ttl_hours,
            max_body_bytes,
            login_failures_per_ip,
            login_failures_per_account,
            login_window_secs,
        } = admin;
        let mut nets = Vec::new();
        for (i, c) in allow_ips.iter().enumerate() {
            match c
                .parse::<ipnet::IpNet>()
                .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            {
                Ok(n) => nets.push(n.trunc()),
                Err(_) => p.push(
                    format!("admin.allow_ips[{i}]"),
                    format!("{c:?} is not a CIDR such as 10.0.0.0/8 or an IP address"),
                ),
            }
        }
        range(session_ttl_hours, 1, 24 * 365, "admin.session_ttl_hours", p);
        range(max_body_bytes, 1024, 16 << 20, "admin.max_body_bytes", p);
        range(
            login_failures_per_ip,
            1,
            1_000_000,
            "admin.login_failures_per_ip",
            p,
        );
        range(
            login_failures_per_account,
            1,
            1_000_000,
            "admin.login_failures_per_account",
            p,
        );
        range(login_window_secs, 1, 86_400, "admin.login_window_secs", p);
        Admin {
            allow_ips: nets,
            session_ttl: Duration::from_secs(session_ttl_hours * 3600),
            max_body_bytes: max_body_bytes as usize,
            login_failures_per_ip: login_failures_per_ip as u32,
            login_failures_per_account: login_failures_per_account as u32,
            login_window: Duration::from_secs(login_window_secs),
        }
    };
    let pii = {
        let raw::Pii { default } = pii;
        match default.as_str() {
            "on" => Pii { default_on: true },
            "off" => Pii { default_on: false },
            other => {
                p.push(
                    "pii.default",
                    format!("{other:?} must be \"on\" or \"off\""),
                );
                Pii { default_on: true }
            }
        }
    };

    let redaction = {
        let raw::Redaction {
            stream_holdback_bytes,
            max_response_bytes,
            max_event_bytes,
        } = redaction;
        range(
            stream_holdback_bytes,
            crate::redact::stream::MIN_HOLDBACK as u64,
            64 * 1024,
            "redaction.stream_holdback_bytes",
            p,
        );
        range(
            max_response_bytes,
            1024,
            1 << 30,
            "redaction.max_response_bytes",
            p,
        );
        range(
            max_event_bytes,
            1024,
            64 << 20,
            "redaction.max_event_bytes",
            p,
        );
        Redaction {
            stream_holdback_bytes: stream_holdback_bytes as usize,
            max_response_bytes: max_response_bytes as usize,
            max_event_bytes: max_event_bytes as usize,
        }
    };

    let listen = {
        let raw::Listen {
            proxy,
            admin,
            metrics,
        } = listen;
        let proxy = addr(&proxy, "listen.proxy", p);
        let admin = addr(&admin, "listen.admin", p);
        let metrics = addr(&metrics, "listen.metrics", p);
        match (proxy, admin, metrics) {
            (Some(proxy), Some(admin), Some(metrics)) => {
                if proxy == admin || proxy == metrics || admin == metrics {
                    p.push(
                        "listen",
                        "proxy, admin and metrics must use three different addresses",
                    );
                }
                Some(Listen {
                    proxy,
                    admin,
                    metrics,
                })
            }
            _ => None,
        }
    };

    let store = {
        let raw::Store {
            path,
            max_size_mb,
            max_stale_secs,
        } = store;
        if path.trim().is_empty() {
            p.push("store.path", "must not be empty");
        }
        range(max_size_mb, 0, 1 << 24, "store.max_size_mb", p);
        range(max_stale_secs, 2, 3600, "store.max_stale_secs", p);
        Store {
            path: PathBuf::from(path),
            max_bytes: (max_size_mb > 0).then_some(max_size_mb << 20),
            max_stale: Duration::from_secs(max_stale_secs),
        }
    };

    let limits = {
        let raw::Limits {
            max_body_bytes,
            timeout_secs,
            long_timeout_secs,
            long_timeout_models,
            connect_timeout_secs,
            client_timeout_secs,
            max_header_bytes,
            max_headers,
            linger_secs,
            linger_max_bytes,
        } = limits;
        range(max_body_bytes, 1, 1 << 30, "limits.max_body_bytes", p);
        range(timeout_secs, 1, 3600, "limits.timeout_secs", p);
        range(long_timeout_secs, 1, 3600, "limits.long_timeout_secs", p);
        if long_timeout_secs < timeout_secs {
            p.push(
                "limits.long_timeout_secs",
                format!("must be at least limits.timeout_secs ({timeout_secs})"),
            );
        }
        range(
            connect_timeout_secs,
            1,
            60,
            "limits.connect_timeout_secs",
            p,
        );
        range(client_timeout_secs, 1, 600, "limits.client_timeout_secs", p);
        // pingora itself refuses headers over 1 MiB and more than 256 header lines.
        range(
            max_header_bytes,
            1024,
            1 << 20,
            "limits.max_header_bytes",
            p,
        );
        range(max_headers, 8, 256, "limits.max_headers", p);
        range(linger_secs, 0, 120, "limits.linger_secs", p);
        range(linger_max_bytes, 0, 1 << 34, "limits.linger_max_bytes", p);
        let mut globs = Vec::new();
        for (i, g) in long_timeout_models.iter().enumerate() {
            if g.trim().is_empty() {
                p.push(
                    format!("limits.long_timeout_models[{i}]"),
                    "must not be empty",
                );
            } else {
                globs.push(wildmatch::WildMatch::new(&g.to_ascii_lowercase()));
            }
        }
        Limits {
            max_body_bytes: max_body_bytes as usize,
            timeout: Duration::from_secs(timeout_secs),
            long_timeout: Duration::from_secs(long_timeout_secs),
            long_timeout_models: globs,
            connect_timeout: Duration::from_secs(connect_timeout_secs),
            client_timeout: Duration::from_secs(client_timeout_secs),
            max_header_bytes: max_header_bytes as usize,
            max_headers: max_headers as usize,
            linger: Duration::from_secs(linger_secs),
            linger_max_bytes,
        }
    };

    let server = {
        let raw::Server {
            threads,
            shutdown_timeout_secs,
        } = server;
        range(threads, 1, 64, "server.threads", p);
        range(
            shutdown_timeout_secs,
            0,
            600,
            "server.shutdown_timeout_secs",
            p,
        );
        Server {
            threads: threads as usize,
            shutdown_timeout: Duration::from_secs(shutdown_timeout_secs),
        }
    };

    let log = {
        let raw::Log { format, level } = log;
        let format = match format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                p.push(
                    "log.format",
                    format!("unknown format {other:?} (text | json)"),
                );
                LogFormat::Text
            }
        };
        // Every directive is a level (`info`) or `target=level`: a bare word that is not a
        // level (`verbose`) would be read as a target and silence everything else.
        const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
        let directives_ok = level
            .split(',')
            .map(str::trim)
            .all(|d| d.contains('=') || LEVELS.iter().any(|l| l.eq_ignore_ascii_case(d)));
        if !directives_ok || tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            p.push(
                "log.level",
                format!("{level:?} is not a level or filter (e.g. info, sluice=debug)"),
            );
        }
        Log { format, level }
    };

    let cors = {
        let raw::Cors { allow_origins } = cors;
        for (i, o) in allow_origins.iter().enumerate() {
            if !is_origin(o) {
                p.push(
                    format!("cors.allow_origins[{i}]"),
                    format!("{o:?} is not an origin like https://app.example.com (no path, no wildcard)"),
                );
            }
        }
        Cors { allow_origins }
    };

    let mut names = HashSet::new();
    let mut ups = Vec::new();
    for (i, u) in upstreams.into_iter().enumerate() {
        let raw::Upstream {
            name,
            region,
            base_url,
            credential,
            credential_header,
            credential_prefix,
            stream_usage,
            min_version,
            ca_file,
            pins,
            allow_plaintext,
        } = u;
        let at = |k: &str| format!("upstreams[{i}].{k}");
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            p.push(
                at("name"),
                format!("{name:?} must be non-empty [A-Za-z0-9._-]"),
            );
        } else if !names.insert(name.clone()) {
            p.push(at("name"), format!("duplicate upstream name {name:?}"));
        }
        let region = match region.parse::<Region>() {
            Ok(r) => Some(r),
            Err(_) => {
                p.push(
                    at("region"),
                    format!("unknown region {region:?} (us | eu | apac)"),
                );
                None
            }
        };
        let base = match parse_base_url(&base_url) {
            Ok(b) => Some(b),
            Err(msg) => {
                p.push(at("base_url"), msg);
                None
            }
        };
        if let Some(c) = &credential {
            if c.trim().is_empty() {
                p.push(at("credential"), "must not be empty when set");
            }
        }
        let header = credential_header
            .as_deref()
            .unwrap_or("authorization")
            .to_ascii_lowercase();
        let header = match http::HeaderName::from_bytes(header.as_bytes()) {
            Ok(h) if !FORBIDDEN_CREDENTIAL_HEADERS.contains(&h.as_str()) => Some(h),
            _ => {
                p.push(
                    at("credential_header"),
                    format!("{header:?} is not a usable header name (a token, not host, content-length, transfer-encoding, connection or a hop-by-hop header)"),
                );
                None
            }
        };
        let prefix = credential_prefix.unwrap_or_else(|| {
            if header
                .as_ref()
                .is_some_and(|h| h == http::header::AUTHORIZATION)
            {
                "Bearer ".into()
            } else {
                String::new()
            }
        });
        if !prefix.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            p.push(
                at("credential_prefix"),
                "must be printable ASCII (no control characters)",
            );
        }
        let tls = base.as_ref().and_then(|b| {
            outbound_tls(
                OutboundTls {
                    url: b,
                    url_key: "base_url",
                    has_credential: credential.is_some(),
                    min_version,
                    ca_file,
                    pins,
                    allow_plaintext,
                },
                &tls_defaults,
                &at,
                p,
            )
        });
        if let (Some(region), Some(base_url), Some(credential_header), Some(tls)) =
            (region, base, header, tls)
        {
            ups.push(Upstream {
                name,
                region,
                base_url,
                credential,
                credential_header,
                credential_prefix: prefix,
                stream_usage,
                tls,
                allow_plaintext,
            });
        }
    }

    let residency = {
        let raw::Residency {
            default_region,
            health_check_secs,
        } = residency;
        range(health_check_secs, 1, 3600, "residency.health_check_secs", p);
        let default_region = match default_region.parse::<Region>() {
            Ok(r) => {
                if !ups.is_empty() && !ups.iter().any(|u| u.region == r) {
                    p.push(
                        "residency.default_region",
                        format!("no [[upstreams]] entry serves region {r:?}: requests without a pin or header would have nowhere to go"),
                    );
                }
                r
            }
            Err(_) => {
                p.push(
                    "residency.default_region",
                    format!("unknown region {default_region:?} (us | eu | apac)"),
                );
                Region::Us
            }
        };
        Residency {
            default_region,
            health_check: Duration::from_secs(health_check_secs),
        }
    };

    let fleet = {
        let raw::Fleet {
            redis_url,
            on_redis_error,
            redis_timeout_ms,
            bundle,
            bundle_poll_secs,
            max_removal_ratio,
        } = fleet;
        // The URL may hold a password: problems never quote it.
        if let Some(u) = &redis_url {
            let scheme_ok = ["redis://", "rediss://"].iter().any(|s| u.starts_with(s));
            if !scheme_ok || redis::Client::open(u.as_str()).is_err() {
                p.push(
                    "fleet.redis_url",
                    "must be a redis:// or rediss:// URL (redis://[:password@]host[:port][/db])",
                );
            }
        }
        let on_redis_error = match on_redis_error.as_str() {
            "deny" => RedisFallback::Deny,
            "local" => RedisFallback::Local,
            _ => {
                p.push("fleet.on_redis_error", "must be \"deny\" or \"local\"");
                RedisFallback::Local
            }
        };
        range(redis_timeout_ms, 1, 1000, "fleet.redis_timeout_ms", p);
        range(bundle_poll_secs, 1, 3600, "fleet.bundle_poll_secs", p);
        if bundle.as_deref() == Some("") {
            p.push("fleet.bundle", "must be a file path");
        }
        if !(0.0..=1.0).contains(&max_removal_ratio) {
            p.push("fleet.max_removal_ratio", "must be between 0 and 1");
        }
        Fleet {
            redis_url: redis_url.map(secrecy::SecretString::from),
            on_redis_error,
            redis_timeout: Duration::from_millis(redis_timeout_ms),
            bundle: bundle.filter(|b| !b.is_empty()).map(PathBuf::from),
            bundle_poll: Duration::from_secs(bundle_poll_secs),
            max_removal_ratio: max_removal_ratio.clamp(0.0, 1.0),
        }
    };

    let mcp = {
        let raw::Mcp { max_message_bytes } = mcp;
        range(
            max_message_bytes,
            1024,
            64 << 20,
            "mcp.max_message_bytes",
            p,
        );
        Mcp {
            max_message_bytes: max_message_bytes as usize,
        }
    };
    let mut mcp_names = HashSet::new();
    let mut servers = Vec::new();
    for (i, m) in mcp_servers.into_iter().enumerate() {
        let raw::McpServer {
            name,
            url,
            region,
            credential,
            credential_kind,
            min_version,
            ca_file,
            pins,
            allow_plaintext,
        } = m;
        let at = |k: &str| format!("mcp_servers[{i}].{k}");
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            p.push(
                at("name"),
                format!("{name:?} must be 1 to 64 characters of [a-z0-9-]"),
            );
        } else if !mcp_names.insert(name.clone()) {
            p.push(at("name"), format!("duplicate MCP server name {name:?}"));
        }
        let region = region.parse::<Region>().map_err(|_| {
            p.push(
                at("region"),
                format!("unknown region {region:?} (us | eu | apac)"),
            );
        });
        let (base, query) = match url.split_once('?') {
            Some((u, q)) => (u.to_string(), Some(q.to_string())),
            None => (url.clone(), None),
        };
        let parsed = parse_url(&base, false).map_err(|msg| p.push(at("url"), msg));
        if let Some(c) = &credential {
            if c.trim().is_empty() {
                p.push(at("credential"), "must not be empty when set");
            }
        }
        let kind = match credential_kind.as_deref() {
            None | Some("bearer") => Some(CredentialKind::Bearer),
            Some("oauth") => Some(CredentialKind::OAuth),
            Some(other) => {
                p.push(
                    at("credential_kind"),
                    format!("{other:?} must be \"bearer\" or \"oauth\""),
                );
                None
            }
        };
        if credential.is_none() && credential_kind.is_some() {
            p.push(
                at("credential_kind"),
                "needs `credential` (the vault credential's name)",
            );
        }
        let tls = parsed.as_ref().ok().and_then(|u| {
            outbound_tls(
                OutboundTls {
                    url: u,
                    url_key: "url",
                    has_credential: credential.is_some(),
                    min_version,
                    ca_file,
                    pins,
                    allow_plaintext,
                },
                &tls_defaults,
                &at,
                p,
            )
        });
        if let (Ok(region), Ok(url), Some(credential_kind), Some(tls)) = (region, parsed, kind, tls)
        {
            servers.push(McpServer {
                name,
                url,
                query,
                region,
                credential,
                credential_kind,
                tls,
                allow_plaintext,
            });
        }
    }

    Some(Config {
        listen: listen?,
        store,
        limits,
        server,
        log,
        cors,
        admin,
        pii,
        redaction,
        residency,
        upstreams: ups,
        mcp,
        mcp_servers: servers,
        fleet,
        metrics,
        tls: Tls {
            min_version: tls_defaults.0,
            ca: tls_defaults.1,
            pins: Vec::new(),
        },
    })
}

/// `"1.2"` or `"1.3"`.
fn tls_version(s: &str) -> Option<TlsVersion> {
    match s {
        "1.2" => Some(TlsVersion::V1_2),
        "1.3" => Some(TlsVersion::V1_3),
        _ => None,
    }
}

/// Whether `host` is this machine (a name that resolves elsewhere is not).
pub(super) fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Read a PEM bundle of CA certificates: at least one, each valid X.509.
fn load_ca(path: &str) -> Result<CaBundle, String> {
    use std::io::Read;
    // A CA bundle is a few hundred KB at most (the whole Mozilla store is about 220 KB).
    const MAX_BYTES: u64 = 4 << 20;
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_BYTES + 1).read_to_end(&mut text))
        .map_err(|e| format!("cannot read {path:?}: {e}"))?;
    if text.len() as u64 > MAX_BYTES {
        return Err(format!("{path:?} is larger than {} MiB", MAX_BYTES >> 20));
    }
    let mut certs = Vec::new();
    // Checked as the TLS client will use them: a certificate its store refuses would fail
    // every connection, not the config.
    let mut store = rustls::RootCertStore::empty();
    for (n, item) in rustls_pemfile::certs(&mut text.as_slice()).enumerate() {
        let der = item.map_err(|_| format!("{path:?}: PEM block {} is not readable", n + 1))?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|_| format!("{path:?}: certificate {} is not valid X.509", n + 1))?;
        // A leaf another CA signed would vouch for any name with its own key: only a CA, or a
        // self-signed certificate trusted as itself, anchors trust.
        if !cert.is_ca() && cert.subject() != cert.issuer() {
            return Err(format!(
                "{path:?}: certificate {} ({}) is not a CA certificate",
                n + 1,
                cert.subject()
            ));
        }
        store.add(der.clone()).map_err(|e| {
            format!(
                "{path:?}: certificate {} cannot be a trust anchor: {e}",
                n + 1
            )
        })?;
        certs.push(der.as_ref().to_vec());
    }
    if certs.is_empty() {
        return Err(format!("{path:?} holds no PEM certificate"));
    }
    Ok(CaBundle {
        path: PathBuf::from(path),
        certs: std::sync::Arc::new(certs),
    })
}

/// A pin as written: `sha256/` and the base64 of 32 bytes.
pub(super) fn parse_pin(s: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let b64 = s.strip_prefix("sha256/")?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    bytes.try_into().ok()
}

/// The TLS settings of one upstream or MCP server, as written.
struct OutboundTls<'a> {
    url: &'a BaseUrl,
    /// The URL's key: `base_url` for an upstream, `url` for an MCP server.
    url_key: &'static str,
    has_credential: bool,
    min_version: Option<String>,
    ca_file: Option<String>,
    pins: Vec<String>,
    allow_plaintext: bool,
}

/// The TLS policy of one upstream or MCP server (`None` inside: plain http), or `None` with a
/// problem pushed.
fn outbound_tls(
    o: OutboundTls<'_>,
    defaults: &(TlsVersion, Option<CaBundle>),
    at: &dyn Fn(&str) -> String,
    p: &mut Problems,
) -> Option<Option<Tls>> {
    let mut ok = true;
    if !o.url.tls {
        for (set, key) in [
            (o.min_version.is_some(), "min_version"),
            (o.ca_file.is_some(), "ca_file"),
            (!o.pins.is_empty(), "pins"),
        ] {
            if set {
                p.push(at(key), "is a TLS setting: the URL is plain http://");
                ok = false;
            }
        }
        if o.has_credential && !o.allow_plaintext && !is_loopback_host(&o.url.host) {
            p.push(
                at(o.url_key),
                format!(
                    "plain http:// to {} (not loopback) would send the credential in clear text: use https://, or set allow_plaintext = true",
                    o.url.host
                ),
            );
            ok = false;
        }
        return ok.then_some(None);
    }
    if o.url.host.contains('_') {
        // The TLS client would check the certificate for the name with `-` in its place.
        p.push(
            at(o.url_key),
            format!("{:?}: a TLS host name cannot hold `_`", o.url.host),
        );
        ok = false;
    }
    let min_version = match o.min_version.as_deref() {
        None => defaults.0,
        Some(v) => tls_version(v).unwrap_or_else(|| {
            p.push(
                at("min_version"),
                format!("{v:?} must be \"1.2\" or \"1.3\""),
            );
            ok = false;
            TlsVersion::V1_3
        }),
    };
    let ca = match o.ca_file {
        None => defaults.1.clone(),
        Some(f) => match load_ca(&f) {
            Ok(c) => Some(c),
            Err(msg) => {
                p.push(at("ca_file"), msg);
                ok = false;
                None
            }
        },
    };
    let mut pins = Vec::new();
    for (j, pin) in o.pins.iter().enumerate() {
        match parse_pin(pin) {
            Some(d) => pins.push(d),
            None => {
                p.push(
                    format!("{}[{j}]", at("pins")),
                    "must be sha256/ and the base64 of a certificate's SHA-256 digest (sluice tls pin --url ...)",
                );
                ok = false;
            }
        }
    }
    ok.then_some(Some(Tls {
        min_version,
        ca,
        pins,
    }))
}

fn addr(s: &str, path: &str, p: &mut Problems) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.push(
                path,
                format!("{s:?} is not an IP:port address such as 127.0.0.1:8480"),
            );
            None
        }
    }
}

fn range(v: u64, min: u64, max: u64, path: &str, p: &mut Problems) {
    if v < min || v > max {
        p.push(path, format!("{v} is out of range ({min}..={max})"));
    }
}

fn is_origin(o: &str) -> bool {
    match o.parse::<http::Uri>() {
        Ok(u) => {
            matches!(u.scheme_str(), Some("http") | Some("https"))
                && u.host().is_some_and(|h| !h.contains('*'))
                && u.path_and_query()
                    .is_none_or(|pq| pq.as_str().is_empty() || pq.as_str() == "/")
                && !o.ends_with('/')
                && !o.contains('@')
        }
        Err(_) => false,
    }
}

/// Parse an upstream base URL. Refuses credentials, queries and fragments in the URL (secrets
/// belong in the vault), and a trailing `/v1` (sluice forwards the client's `/v1/...` path).
pub(crate) fn parse_base_url(s: &str) -> Result<BaseUrl, String> {
    parse_url(s, true)
}

/// Parse an `http(s)://host[:port][/path]` URL (no credentials, query or fragment); with
/// `upstream`, a trailing `/v1` is refused as well (see [`parse_base_url`]).
fn parse_url(s: &str, upstream: bool) -> Result<BaseUrl, String> {
    let uri: http::Uri = s
        .parse()
        .map_err(|_| format!("{s:?} is not a URL such as https://api.openai.com"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{s:?} must start with http:// or https://")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{s:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(
            "must not contain credentials; store them with `sluice credentials set`".into(),
        );
    }
    if s.contains('#') || uri.query().is_some() {
        return Err(format!("{s:?} must not have a query or fragment"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    // A port that is not 1..65535 is an error, not the scheme's default (`:99999` read as no
    // port would connect to 80).
    // (`http` reads a port it cannot parse as none: look at the text after the host.)
    let has_port = authority
        .as_str()
        .rsplit(']')
        .next()
        .is_some_and(|rest| rest.contains(':'));
    let port = match (has_port.then_some(()), authority.port_u16()) {
        (None, _) => {
            if tls {
                443
            } else {
                80
            }
        }
        (Some(_), Some(p)) if p > 0 => p,
        (Some(_), _) => return Err(format!("{s:?} has a port outside 1..65535")),
    };
    let path_prefix = uri.path().trim_end_matches('/').to_string();
    if upstream && (path_prefix == "/v1" || path_prefix.ends_with("/v1")) {
        return Err(format!(
            "{s:?} must not end with /v1: sluice forwards the client's /v1/... path as is"
        ));
    }
    Ok(BaseUrl {
        tls,
        host: host.to_string(),
        port,
        path_prefix,
        authority: authority.as_str().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_defaults_are_valid() {
        from_raw(RawConfig::default()).unwrap();
    }

    #[test]
    fn base_url_rules() {
        let b = parse_base_url("https://api.openai.com").unwrap();
        assert_eq!((b.tls, b.port, b.path_prefix.as_str()), (true, 443, ""));
        let b = parse_base_url("http://127.0.0.1:9000/openai/").unwrap();
        assert_eq!(
            (b.tls, b.port, b.path_prefix.as_str()),
            (false, 9000, "/openai")
        );
        assert_eq!(b.authority, "127.0.0.1:9000");
        for bad in [
            "ftp://x",
            "api.openai.com",
            "https://user:pw@x.com",
            "https://x.com/v1",
            "https://x.com?a=b",
            "",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:0",
            "https://x.com:65536/",
        ] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_base_url("http://x:65535").unwrap().port, 65535);
    }

    /// What would then misbehave is refused at load: a port out of range, a log level that is
    /// a target name; regions are read whatever their case, as the header is.
    #[test]
    fn values_that_would_misbehave_are_refused_and_regions_ignore_case() {
        let base =
            "[[upstreams]]\nname = \"a\"\nregion = \"US\"\nbase_url = \"http://127.0.0.1:9000\"\n";
        let cfg = parse(base).unwrap();
        assert_eq!(cfg.upstreams[0].region, crate::residency::Region::Us);
        for (extra, path) in [
            ("[log]\nlevel = \"verbose\"\n", "log.level"),
            ("[log]\nlevel = \"info,verbose\"\n", "log.level"),
        ] {
            let e = parse(&format!("{extra}{base}")).unwrap_err();
            assert!(e.iter().any(|p| p.path == path), "{extra}: {e:?}");
        }
        for ok in ["info", "WARN", "info,sluice=debug", "off"] {
            assert!(
                parse(&format!("[log]\nlevel = \"{ok}\"\n{base}")).is_ok(),
                "{ok}"
            );
        }
        let e = parse(&base.replace("9000", "99999")).unwrap_err();
        assert!(e.iter().any(|p| p.path.ends_with("base_url")), "{e:?}");
    }

    #[test]
    fn origins() {
        assert!(is_origin("https://app.example.com"));
        assert!(is_origin("http://localhost:3000"));
        assert!(!is_origin("*"));
        assert!(!is_origin("https://app.example.com/"));
        assert!(!is_origin("https://*.example.com"));
        assert!(!is_origin("https://x.com/path"));
    }
}
