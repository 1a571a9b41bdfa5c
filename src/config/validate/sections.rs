//! One function per config section: its raw values checked (every problem noted with its
//! path, none hiding another) and turned into the typed section.

use std::collections::HashMap;
use std::time::Duration;

use super::*;

/// `[tls]`: the lowest version and the CAs (the defaults of every upstream and MCP server).
pub(super) fn tls_section(tls: raw::Tls, p: &mut Problems) -> (TlsVersion, Option<CaBundle>) {
    let raw::Tls {
        min_version,
        ca_file,
    } = tls;
    let min = tls_version(&min_version).unwrap_or_else(|| {
        p.push("tls.min_version", "must be \"1.2\" or \"1.3\"");
        TlsVersion::V1_3
    });
    let ca = ca_file.and_then(|f| load_ca(&f).map_err(|msg| p.push("tls.ca_file", msg)).ok());
    (min, ca)
}

/// `[[upstreams]]`: each checked, names unique; `tls_defaults` from `[tls]`.
pub(super) fn upstreams_section(
    upstreams: Vec<raw::Upstream>,
    tls_defaults: &(TlsVersion, Option<CaBundle>),
    p: &mut Problems,
) -> Vec<Upstream> {
    let mut names = HashMap::new();
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
            p.push(at("name"), "must be non-empty [A-Za-z0-9._-]");
        } else if let Some(j) = names.insert(name.clone(), i) {
            p.push(at("name"), format!("the same name as upstreams[{j}]"));
        }
        let region = match region.parse::<Region>() {
            Ok(r) => Some(r),
            Err(_) => {
                p.push(at("region"), "unknown region (us | eu | apac)");
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
        if credential
            .as_deref()
            .is_some_and(|c| !crate::config::is_credential_name(c))
        {
            p.push(at("credential"), crate::config::CREDENTIAL_NAME_RULE);
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
                "not a usable header name (a token, not host, content-length, transfer-encoding, connection or a hop-by-hop header)",
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
                tls_defaults,
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
    ups
}

/// `[[mcp_servers]]`: each checked, names unique; `tls_defaults` from `[tls]`.
pub(super) fn mcp_servers_section(
    mcp_servers: Vec<raw::McpServer>,
    tls_defaults: &(TlsVersion, Option<CaBundle>),
    p: &mut Problems,
) -> Vec<McpServer> {
    let mut mcp_names = HashMap::new();
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
            p.push(at("name"), "must be 1 to 64 characters of [a-z0-9-]");
        } else if let Some(j) = mcp_names.insert(name.clone(), i) {
            p.push(at("name"), format!("the same name as mcp_servers[{j}]"));
        }
        let region = region.parse::<Region>().map_err(|_| {
            p.push(at("region"), "unknown region (us | eu | apac)");
        });
        let (base, query) = match url.split_once('?') {
            Some((u, q)) => (u.to_string(), Some(q.to_string())),
            None => (url.clone(), None),
        };
        let parsed = parse_url(&base, false).map_err(|msg| p.push(at("url"), msg));
        if credential
            .as_deref()
            .is_some_and(|c| !crate::config::is_credential_name(c))
        {
            p.push(at("credential"), crate::config::CREDENTIAL_NAME_RULE);
        }
        let kind = match credential_kind.as_deref() {
            None | Some("bearer") => Some(CredentialKind::Bearer),
            Some("oauth") => Some(CredentialKind::OAuth),
            Some(_) => {
                p.push(at("credential_kind"), "must be \"bearer\" or \"oauth\"");
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
                tls_defaults,
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
    servers
}

/// `[admin]`.
pub(super) fn admin_section(admin: raw::Admin, p: &mut Problems) -> Admin {
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
                "not a CIDR such as 10.0.0.0/8 or an IP address",
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
}

/// `[pii]`.
pub(super) fn pii_section(pii: raw::Pii, p: &mut Problems) -> Pii {
    let raw::Pii { default } = pii;
    match default.as_str() {
        "on" => Pii { default_on: true },
        "off" => Pii { default_on: false },
        _ => {
            p.push("pii.default", "must be \"on\" or \"off\"");
            Pii { default_on: true }
        }
    }
}

/// `[redaction]`.
pub(super) fn redaction_section(redaction: raw::Redaction, p: &mut Problems) -> Redaction {
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
}

/// `[listen]`.
pub(super) fn listen_section(listen: raw::Listen, p: &mut Problems) -> Option<Listen> {
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
}

/// `[store]`.
pub(super) fn store_section(store: raw::Store, p: &mut Problems) -> Store {
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
}

/// `[limits]`.
pub(super) fn limits_section(limits: raw::Limits, p: &mut Problems) -> Limits {
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
            "must be at least limits.timeout_secs",
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
}

/// `[server]`.
pub(super) fn server_section(server: raw::Server, p: &mut Problems) -> Server {
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
}

/// `[log]`.
pub(super) fn log_section(log: raw::Log, p: &mut Problems) -> Log {
    let raw::Log { format, level } = log;
    let format = match format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        _ => {
            p.push("log.format", "unknown format (text | json)");
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
            "not a level or filter (e.g. info, sluice=debug)",
        );
    }
    Log { format, level }
}

/// `[cors]`.
pub(super) fn cors_section(cors: raw::Cors, p: &mut Problems) -> Cors {
    let raw::Cors { allow_origins } = cors;
    for (i, o) in allow_origins.iter().enumerate() {
        if !is_origin(o) {
            p.push(
                format!("cors.allow_origins[{i}]"),
                "not an origin like https://app.example.com (no path, no wildcard)",
            );
        }
    }
    Cors { allow_origins }
}

/// `[fleet]`.
pub(super) fn fleet_section(fleet: raw::Fleet, p: &mut Problems) -> Fleet {
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
}

/// `[mcp]`.
pub(super) fn mcp_section(mcp: raw::Mcp, p: &mut Problems) -> Mcp {
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
}

/// `[residency]`.
/// `ups`: the upstreams already read (a default region must have one).
pub(super) fn residency_section(
    residency: raw::Residency,
    ups: &[Upstream],
    p: &mut Problems,
) -> Residency {
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
                "unknown region (us | eu | apac)",
            );
            Region::Us
        }
    };
    Residency {
        default_region,
        health_check: Duration::from_secs(health_check_secs),
    }
}
