//! `sluice redact`, `sluice check-config` and `sluice apply`.

use super::*;

pub(super) fn apply(cfg: &Config, file: &Path, dry_run: bool) -> Outcome {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {}", file.display(), e.kind()))?;
    let bundle = admin::apply::parse(&text).map_err(phrase)?;
    let store = open_store(cfg)?;
    let actor = Actor::cli();
    let opts = admin::apply::Options {
        pii_default: pii_default(cfg),
        max_removal_ratio: cfg.fleet.max_removal_ratio,
    };
    let changes = if dry_run {
        admin::apply::plan(&store, &bundle, opts)
    } else {
        admin::apply::apply(&store, &keyring_for(&store)?, &actor, &bundle, opts)
    }
    .map_err(phrase)?;
    let mut text: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
    text.push(match (dry_run, changes.len()) {
        (_, 0) => "nothing to change: the store matches the bundle".into(),
        (true, n) => format!("{n} change(s) planned; nothing was changed (--dry-run)"),
        (false, n) => format!("{n} change(s) applied"),
    });
    Ok((
        serde_json::json!({"changes": changes, "dry_run": dry_run}),
        text.join("\n"),
    ))
}

/// `sluice redact`: JSON when stdin is a JSON document, text otherwise.
pub(super) fn redact(json: bool) -> i32 {
    let mut input = Vec::new();
    let limit = 64 << 20;
    if let Err(e) = std::io::stdin()
        .lock()
        .take(limit as u64 + 1)
        .read_to_end(&mut input)
    {
        eprintln!("sluice: cannot read standard input: {e}");
        return EXIT_FAILED;
    }
    if input.len() > limit {
        eprintln!("sluice: input larger than {limit} bytes");
        return EXIT_FAILED;
    }
    let Ok(text) = String::from_utf8(input) else {
        eprintln!("sluice: input is not UTF-8");
        return EXIT_FAILED;
    };
    let engine = crate::redact::Engine::new();
    let mut counts = crate::redact::Counts::default();
    let scan = crate::redact::Scan::ALL;
    let (format, output) = match engine.redact_json(&text, scan, &mut counts) {
        Ok(r) => ("json", r.unwrap_or(text)),
        Err(_) => {
            counts = Default::default();
            let r = engine.redact_text(&text, scan, &mut counts);
            ("text", r.unwrap_or(text))
        }
    };
    if json {
        print_json(&serde_json::json!({"format": format, "output": output, "counts": counts}));
    } else {
        print!("{output}");
        let _ = std::io::stdout().flush();
        let summary = counts.header_value();
        eprintln!(
            "sluice: {format}: {}",
            if summary.is_empty() {
                "nothing redacted"
            } else {
                &summary
            }
        );
    }
    0
}

pub(super) fn check_config(config: Option<PathBuf>, json: bool) -> i32 {
    match Config::load(config.as_deref()) {
        Ok(_) => {
            if json {
                print_json(&serde_json::json!({"ok": true}));
            } else {
                println!("config ok");
            }
            0
        }
        Err(e) => {
            eprintln!("sluice: {e}");
            let code = match &e {
                LoadError::Read { .. } => EXIT_FAILED,
                LoadError::Invalid { .. } => EXIT_CONFIG,
            };
            if json {
                // Every problem with its key path, as the text lists them.
                let v = match &e {
                    LoadError::Invalid { problems, .. } => serde_json::json!({"ok": false,
                        "problems": problems.iter().map(|p| serde_json::json!({
                            "path": p.path, "message": p.message})).collect::<Vec<_>>()}),
                    LoadError::Read { .. } => {
                        serde_json::json!({"ok": false, "error": e.to_string()})
                    }
                };
                print_json(&v);
            }
            code
        }
    }
}

/// `sluice tls pin`: the pin of the leaf certificate an https:// server presents, once its
/// chain and name verify (a pin of something unverified would pin an interceptor as readily).
pub(super) fn tls_pin(cfg: &Config, url: &str, ca_file: Option<&Path>) -> Outcome {
    use base64::Engine;
    use sha2::Digest;
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| Failure::from("--url must be https://host[:port]".to_string()))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // host, [v6], host:port, [v6]:port
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => (h, Some(p.strip_prefix(':').unwrap_or(p))),
            None => return Err(format!("--url has an unclosed [: {authority}").into()),
        },
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match port {
        None => 443,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("--url has no valid port: {authority}").into()),
        },
    };
    if host.is_empty() {
        return Err(Failure::from("--url has no host".to_string()));
    }
    let mut roots = rustls::RootCertStore::empty();
    let from = match (ca_file, &cfg.tls.ca) {
        (Some(path), _) => {
            let text = std::fs::read(path)
                .map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))?;
            for der in rustls_pemfile::certs(&mut text.as_slice()) {
                let der = der.map_err(|_| format!("{}: unreadable PEM", path.display()))?;
                roots
                    .add(der)
                    .map_err(|_| format!("{}: not a CA certificate", path.display()))?;
            }
            path.display().to_string()
        }
        (None, Some(ca)) => {
            for der in ca.certs.iter() {
                let _ = roots.add(rustls::pki_types::CertificateDer::from(der.clone()));
            }
            ca.path.display().to_string()
        }
        (None, None) => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            "the bundled Mozilla roots".into()
        }
    };
    if roots.is_empty() {
        return Err(format!("no CA certificate in {from}").into());
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is not a host name or address"))?;
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| format!("TLS setup: {e}"))?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| format!("cannot resolve {host}: {}", e.kind()))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    let timeout = std::time::Duration::from_secs(10);
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {host}:{port}: {}", e.kind()))?;
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| {
            format!("the TLS handshake with {host}:{port} failed (verified against {from}): {e}")
        })?;
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| format!("{host}:{port} presented no certificate"))?;
    let pin = format!(
        "sha256/{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(leaf.as_ref()))
    );
    let (subject, not_after) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map(|(_, c)| (c.subject().to_string(), c.validity().not_after.to_string()))
        .unwrap_or_default();
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        _ => "?",
    };
    Ok((
        serde_json::json!({"pin": pin, "host": host, "port": port, "subject": subject,
            "not_after": not_after, "tls_version": version, "verified_against": from}),
        format!(
            "{pin}\n  leaf certificate of {host}:{port} ({subject}; expires {not_after}); TLS {version}; verified against {from}\n  pins = [\"{pin}\"]   # add the next one before the certificate is renewed"
        ),
    ))
}
