//! TOML text -> raw sections -> typed [`Config`], collecting every problem with its key path
//! before failing (as linkerd's `parse_config` does). Each section and each `[[upstreams]]`
//! entry is deserialized on its own so that one bad section does not hide the others.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::DeserializeOwned;

use super::{
    raw, Admin, BaseUrl, CaBundle, Config, Cors, CredentialKind, Fleet, Limits, Listen, Log,
    LogFormat, Mcp, McpServer, Pii, Redaction, RedisFallback, Residency, Server, Store, Tls,
    TlsVersion, Upstream,
};
use crate::residency::Region;

mod sections;
use sections::*;

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
    // Keys with their place in the file: an unknown one is said by its line, not its name.
    let table: std::collections::BTreeMap<toml::Spanned<String>, toml::Value> =
        toml::from_str(text).map_err(|e| {
            vec![Problem {
                path: "(file)".into(),
                message: syntax_error(&e, text),
            }]
        })?;
    let mut problems = Problems(Vec::new());
    let mut cfg = RawConfig {
        upstreams: Vec::new(),
        ..RawConfig::default()
    };
    let mut saw_upstreams = false;
    for (spanned, value) in table {
        let line = crate::error::line_of(text, spanned.span().start).unwrap_or(1);
        let key = spanned.into_inner();
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
            // Not named (a secret pasted on the wrong line): the known ones are.
            _ => {
                problems.push(
                    "(file)",
                    format!("an unknown section or top-level key at line {line} (known: listen, store, limits, server, log, cors, admin, pii, redaction, residency, upstreams, mcp, mcp_servers, fleet, metrics, tls)"),
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

/// A TOML syntax error as a problem shows it: its line, and the parser's words without a key
/// or table name they quote (a key given twice, a dotted key over a value: the key could be a
/// secret typed on the wrong line). The parser's own tokens (`=`, `#`, `\n`) are kept.
fn syntax_error(e: &toml::de::Error, text: &str) -> String {
    let line = e.span().and_then(|s| crate::error::line_of(text, s.start));
    // Quoted only what is the parser's: a backquoted run of a few characters.
    let tokens_only = |l: &str| {
        l.split('`')
            .skip(1)
            .step_by(2)
            .all(|q| q.chars().count() <= 4)
    };
    let words: Vec<String> = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            if l.starts_with("duplicate key") {
                "a key or table is given twice".to_string()
            } else if l.starts_with("dotted key") {
                "a dotted key extends a value that is not a table".to_string()
            } else if tokens_only(l) {
                l.to_string()
            } else {
                "a syntax error".to_string()
            }
        })
        .collect();
    let words = match words.is_empty() {
        true => "a syntax error".to_string(),
        false => words.join("; "),
    };
    match line {
        Some(n) => format!("not valid TOML (line {n}): {words}"),
        None => format!("not valid TOML: {words}"),
    }
}

/// Section `T` at `path`. A problem names where it is and what was expected, never the value
/// (a secret typed into the wrong field) nor an unknown key (named by the table it is in).
fn section<T: DeserializeOwned>(
    value: toml::Value,
    path: &str,
    problems: &mut Problems,
) -> Option<T> {
    // A struct reads from an array too, field by field: `server = [4, 30]`.
    if !value.is_table() {
        problems.push(path, "must be a table");
        return None;
    }
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let message = e.inner().message();
            // Inside a table: the place starts with a key.
            let inner = crate::error::place(e.path(), message.starts_with("unknown field"));
            let full = match inner.is_empty() {
                true => path.to_string(),
                false => format!("{path}.{inner}"),
            };
            let what = crate::error::described(message)
                .unwrap_or_else(|| "a value is not accepted".to_string());
            problems.push(full, what);
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
    let tls_defaults = tls_section(tls, p);
    let raw::Metrics { per_key } = metrics;
    let metrics = super::Metrics { per_key };
    let admin = admin_section(admin, p);
    let pii = pii_section(pii, p);
    let redaction = redaction_section(redaction, p);
    let listen = listen_section(listen, p);
    let store = store_section(store, p);
    let limits = limits_section(limits, p);
    let server = server_section(server, p);
    let log = log_section(log, p);
    let cors = cors_section(cors, p);
    let ups = upstreams_section(upstreams, &tls_defaults, p);
    let residency = residency_section(residency, &ups, p);
    let fleet = fleet_section(fleet, p);
    let mcp = mcp_section(mcp, p);
    let servers = mcp_servers_section(mcp_servers, &tls_defaults, p);

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
        .map_err(|e| format!("cannot read the file: {}", e.kind()))?;
    if text.len() as u64 > MAX_BYTES {
        return Err(format!("the file is larger than {} MiB", MAX_BYTES >> 20));
    }
    let mut certs = Vec::new();
    // Checked as the TLS client will use them: a certificate its store refuses would fail
    // every connection, not the config.
    let mut store = rustls::RootCertStore::empty();
    for (n, item) in rustls_pemfile::certs(&mut text.as_slice()).enumerate() {
        let der = item.map_err(|_| format!("PEM block {} of the file is not readable", n + 1))?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|_| format!("certificate {} of the file is not valid X.509", n + 1))?;
        // A leaf another CA signed would vouch for any name with its own key: only a CA, or a
        // self-signed certificate trusted as itself, anchors trust.
        if !cert.is_ca() && cert.subject() != cert.issuer() {
            return Err(format!(
                "certificate {} of the file ({}) is not a CA certificate",
                n + 1,
                cert.subject()
            ));
        }
        store.add(der.clone()).map_err(|e| {
            format!(
                "certificate {} of the file cannot be a trust anchor: {e}",
                n + 1
            )
        })?;
        certs.push(der.as_ref().to_vec());
    }
    if certs.is_empty() {
        return Err("the file holds no PEM certificate".into());
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
                "plain http:// to a host that is not loopback would send the credential in clear text: use https://, or set allow_plaintext = true",
            );
            ok = false;
        }
        return ok.then_some(None);
    }
    if o.url.host.contains('_') {
        // The TLS client would check the certificate for the name with `-` in its place.
        p.push(at(o.url_key), "the host cannot hold `_` (a TLS host name)");
        ok = false;
    }
    let min_version = match o.min_version.as_deref() {
        None => defaults.0,
        Some(v) => tls_version(v).unwrap_or_else(|| {
            p.push(at("min_version"), "must be \"1.2\" or \"1.3\"".to_string());
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
            p.push(path, "not an IP:port address such as 127.0.0.1:8480");
            None
        }
    }
}

fn range(v: u64, min: u64, max: u64, path: &str, p: &mut Problems) {
    if v < min || v > max {
        p.push(path, format!("out of range ({min}..={max})"));
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
    // Errors never quote the URL: a path or host can hold a token too (the problem's place
    // names the key).
    let shown = "the URL";
    let uri: http::Uri = s
        .parse()
        .map_err(|_| format!("{shown} is not a URL such as https://api.openai.com"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{shown} must start with http:// or https://")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{shown} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(
            "must not contain credentials; store them with `sluice credentials set`".into(),
        );
    }
    if s.contains('#') || uri.query().is_some() {
        return Err(format!("{shown} must not have a query or fragment"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{shown} has no host"));
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
        (Some(_), _) => return Err(format!("{shown} has a port outside 1..65535")),
    };
    let path_prefix = uri.path().trim_end_matches('/').to_string();
    if upstream && (path_prefix == "/v1" || path_prefix.ends_with("/v1")) {
        return Err(format!(
            "{shown} must not end with /v1: sluice forwards the client's /v1/... path as is"
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
    fn a_syntax_error_says_its_line_and_something() {
        // A bare carriage return: the parser has no words for it.
        for (text, line) in [("a = 1\rb = 2\n", 1), ("a = 1\r\n\nb = \"x\n", 3)] {
            let e = parse(text).unwrap_err();
            let m = &e[0].message;
            assert!(
                m.starts_with(&format!("not valid TOML (line {line}): ")),
                "{m}"
            );
            assert!(!m.trim_end().ends_with(':'), "{m}");
        }
    }

    #[test]
    fn a_credential_name_is_a_name_not_a_key() {
        for ok in [
            "openai-us",
            "sk-prod",
            "pk_live",
            "AKIA-test",
            "a.b_c-1",
            &"x".repeat(64),
            "azure-openai-eastus2-prod-2024",
            "team42_openai_gpt4o_production_eu_west_1",
            "abcdefghijklmnopqrstuvwxyzabcdefgh",
            "0123456789012345678901234567890123",
        ] {
            assert!(crate::config::is_credential_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            &"x".repeat(65),
            "sk-proj-abcdefghijklmnop",
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_0123456789abcdefABCDEF",
            "xoxb-1234567890-abcdefgh",
            // Found by the secret rules: Twilio, npm, GitHub user-to-server, AWS session.
            "SK0123456789abcdef0123456789abcdef",
            "npm_abcdefghijklmnopqrstuvwxyz0123456789",
            "ghu_abcdefghijklmnopqrstuvwxyz0123456789",
            "ASIAY34FZKBOKMUTVV7A",
            // Keys without a prefix, and prefixes the list does not have.
            "3f8a9c2e4b7d1f6a0e5c9b8d7a6f4e21",
            "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE",
            "gsk_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dEf3hJ5",
            "prod.aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE",
        ] {
            assert!(!crate::config::is_credential_name(bad), "{bad}");
        }
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
        // A refused URL is never quoted with what could be a secret: credentials, a query, a
        // fragment, or a value that is not a URL at all, whichever check refuses it.
        for url in [
            "htp://user:CANARY@127.0.0.1:9000",
            "http://user:CANARY@127.0.0.1:99999",
            "http://127.0.0.1:9000/?key=CANARY",
            "http://127.0.0.1:99999/#CANARY",
            "ftp://127.0.0.1/v1?token=CANARY",
            "sk-live-CANARY",
            "http://u:CANARY@/v1",
        ] {
            let e = parse(&base.replace("http://127.0.0.1:9000", url)).unwrap_err();
            let p = e.iter().find(|p| p.path.ends_with("base_url")).unwrap();
            assert!(!p.message.contains("CANARY"), "{url}: {}", p.message);
        }
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
