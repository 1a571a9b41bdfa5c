//! Outbound TLS on sluice's terms: against local TLS servers with generated certificates, an
//! upstream or MCP server is used only when its certificate verifies (the system's roots or its
//! `ca_file`), the version is at least its `min_version` (1.3 by default) and, with `pins`, the
//! leaf certificate is one of them; otherwise 502 `upstream_tls_failed` and not a byte of the
//! request (so not the credential) reaches the server.

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use sha2::Digest as _;

use crate::support::*;

/// A test CA and leaf certificates it signs.
struct Pki {
    ca_pem: String,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

/// A leaf certificate and its key, as a server uses them.
struct Leaf {
    der: Vec<u8>,
    key: Vec<u8>,
}

impl Leaf {
    /// Its pin as sluice takes it: `sha256/<base64 of the certificate's SHA-256>`.
    fn pin(&self) -> String {
        let d = sha2::Sha256::digest(&self.der);
        format!(
            "sha256/{}",
            base64::engine::general_purpose::STANDARD.encode(d)
        )
    }
}

impl Pki {
    /// The CA certificate in a PEM file of a new temporary directory (kept while it lives).
    fn ca_file(&self) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, &self.ca_pem).unwrap();
        (dir, path)
    }

    fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "sluice test CA");
        let ca = p.self_signed(&ca_key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            ca,
            ca_key,
        }
    }

    /// A leaf for `names`, valid now unless `expired`.
    fn leaf(&self, names: &[&str], expired: bool) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Leaf {
            der: cert.der().to_vec(),
            key: key.serialize_der(),
        }
    }
}

/// A TLS server on 127.0.0.1 that answers every HTTP request with a chat completion and
/// counts the requests it read (a refused connection reads none).
struct TlsServer {
    port: u16,
    requests: Arc<AtomicUsize>,
}

impl TlsServer {
    fn start(leaf: &Leaf, versions: &[&'static rustls::SupportedProtocolVersion]) -> TlsServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(leaf.der.clone())],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf.key.clone().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, counted) = (acceptor.clone(), counted.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        // Kept alive, as providers do: sluice may pool the connection.
                        while serve_one(&mut tls, &counted).await {}
                    });
                }
            });
        });
        TlsServer { port, requests }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Read one request (head and Content-Length body) and answer it; whether the connection
/// can take another.
async fn serve_one<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    counted: &AtomicUsize,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let Ok(n) = s.read(&mut chunk).await else {
            return false;
        };
        if n == 0 {
            return false;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    counted.fetch_add(1, Ordering::SeqCst);
    let body = br#"{"id":"chatcmpl-tls","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello over tls"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":3,"total_tokens":4}}"#;
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    s.write_all(&out).await.is_ok() && s.flush().await.is_ok()
}

/// An `[[upstreams]]` entry for `url` with a credential and `extra` settings.
fn upstream(url: &str, extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"tls\"\nregion = \"us\"\nbase_url = \"{url}\"\ncredential = \"tls-cred\"\n{extra}\n"
    )
}

/// Start sluice in front of `upstreams` (and `extra` sections) with the credential stored.
fn proxy(upstreams: &str, extra: &str) -> Proxy {
    let s = Setup::new(upstreams, extra);
    s.cli_json(
        &["credentials", "set", "tls-cred"],
        b"sk-provider-over-tls\n",
    );
    s.spawn()
}

#[test]
fn an_https_upstream_is_used_only_under_its_tls_policy() {
    let pki = Pki::new();
    let (_dir, ca_file) = pki.ca_file();
    let ca = format!("ca_file = \"{}\"", ca_file.display());
    let leaf = pki.leaf(&["127.0.0.1"], false);
    let tls13 = TlsServer::start(&leaf, &[&rustls::version::TLS13]);
    let tls12 = TlsServer::start(&leaf, &[&rustls::version::TLS12]);
    let expired = TlsServer::start(&pki.leaf(&["127.0.0.1"], true), &[&rustls::version::TLS13]);
    let other_name = TlsServer::start(
        &pki.leaf(&["api.example.com"], false),
        &[&rustls::version::TLS13],
    );
    let wrong_pin = pki.leaf(&["127.0.0.1"], false).pin();

    // (server, the upstream's settings, the [tls] section, the reason of a refusal)
    let cases: Vec<(&TlsServer, String, String, Option<&str>)> = vec![
        (&tls13, ca.clone(), String::new(), None),
        // The system's roots do not know the test CA.
        (&tls13, String::new(), String::new(), Some("tls_handshake")),
        // [tls] gives every upstream its CA file.
        (&tls13, String::new(), format!("[tls]\n{ca}\n"), None),
        // TLS 1.2 only: below the default minimum; accepted when the upstream allows it.
        (&tls12, ca.clone(), String::new(), Some("tls_version")),
        (
            &tls12,
            format!("{ca}\nmin_version = \"1.2\""),
            String::new(),
            None,
        ),
        (
            &tls12,
            ca.clone(),
            "[tls]\nmin_version = \"1.2\"\n".into(),
            None,
        ),
        // Pins: none of them, then one of two.
        (
            &tls13,
            format!("{ca}\npins = [\"{wrong_pin}\"]"),
            String::new(),
            Some("tls_pin"),
        ),
        (
            &tls13,
            format!("{ca}\npins = [\"{wrong_pin}\", \"{}\"]", leaf.pin()),
            String::new(),
            None,
        ),
        // A certificate that does not verify, whatever the pins say.
        (
            &expired,
            format!("{ca}\npins = [\"{}\"]", leaf.pin()),
            String::new(),
            Some("tls_handshake"),
        ),
        (
            &other_name,
            ca.clone(),
            String::new(),
            Some("tls_handshake"),
        ),
    ];
    for (server, settings, section, refused) in cases {
        let before = server.requests();
        let p = proxy(&upstream(&server.url(), &settings), &section);
        let r = chat_with_key(p.port, &p.key);
        let what = format!("{settings} {section}");
        match refused {
            None => {
                assert_eq!(r.status, 200, "{what}: {}\n{}", r.body_text(), p.log());
                assert!(r.body_text().contains("hello over tls"), "{what}");
                assert_eq!(server.requests(), before + 1, "{what}");
            }
            Some(reason) => {
                assert_eq!(
                    (r.status, r.code()),
                    (502, "upstream_tls_failed".to_string()),
                    "{what}: {}",
                    r.body_text()
                );
                // Not a byte of the request, so not the credential, reached the server.
                assert_eq!(server.requests(), before, "{what}");
                p.metrics_with(&[&format!(
                    "sluice_upstream_tls_failures_total{{reason=\"{reason}\",upstream=\"tls\"}} 1"
                )]);
                let log = p.log();
                assert!(
                    log.contains("TLS connection refused") && log.contains(reason),
                    "{log}"
                );
                assert!(!log.contains("sk-provider-over-tls"), "{log}");
            }
        }
    }
}

#[test]
fn an_mcp_server_gets_the_same_tls_policy() {
    let pki = Pki::new();
    let (_dir, ca_file) = pki.ca_file();
    let leaf = pki.leaf(&["127.0.0.1"], false);
    let server = TlsServer::start(&leaf, &[&rustls::version::TLS13]);
    let wrong_pin = pki.leaf(&["127.0.0.1"], false).pin();
    let up = Upstream::start();
    for (pins, refused) in [(wrong_pin.clone(), true), (leaf.pin(), false)] {
        let mcp = format!(
            "[[mcp_servers]]\nname = \"tools\"\nurl = \"{}/mcp\"\nregion = \"us\"\ncredential = \"tls-cred\"\nca_file = \"{}\"\npins = [\"{pins}\"]\n",
            server.url(),
            ca_file.display()
        );
        let p = proxy(&mock_upstream(&up, ""), &mcp);
        let key = crate::mcp::key_with_tools(&p, "tools:*");
        let before = server.requests();
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
        let r = crate::mcp::rpc(&p, "tools", &key, body);
        if refused {
            // The request's JSON-RPC error, as the MCP SDKs read a call's failure.
            assert_eq!(r.status, 200, "{}", r.body_text());
            let v = r.json();
            assert_eq!(v["id"], 1, "{v}");
            assert_eq!(v["error"]["message"], "upstream_tls_failed", "{v}");
            assert_eq!(v["error"]["data"]["server"], "tools", "{v}");
            assert_eq!(server.requests(), before);
            p.metrics_with(&[
                "sluice_upstream_tls_failures_total{reason=\"tls_pin\",upstream=\"tools\"} 1",
            ]);
        } else {
            // Through to the server (which is no MCP server: what it answers is not the point).
            assert_ne!(r.status, 502, "{}", r.body_text());
            assert_eq!(server.requests(), before + 1);
        }
    }
}

#[test]
fn tls_settings_are_checked_and_a_credential_never_goes_in_clear_to_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let check = |toml: &str| {
        let path = dir.path().join("check.toml");
        std::fs::write(&path, toml).unwrap();
        let out = std::process::Command::new(crate::support::bin())
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let bad = dir.path().join("not-a-ca.pem");
    let mut f = std::fs::File::create(&bad).unwrap();
    writeln!(
        f,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----"
    )
    .unwrap();
    // A leaf another CA signed cannot anchor trust.
    let pki = Pki::new();
    let leaf_pem = dir.path().join("leaf.pem");
    std::fs::write(
        &leaf_pem,
        pem("CERTIFICATE", &pki.leaf(&["127.0.0.1"], false).der),
    )
    .unwrap();
    for (toml, expect) in [
        (
            upstream(
                "https://api.example.com",
                &format!("ca_file = \"{}\"", leaf_pem.display()),
            ),
            "is not a CA certificate",
        ),
        (
            upstream("https://my_api.example.com", ""),
            "cannot hold `_`",
        ),
        (upstream("http://api.example.com", ""), "allow_plaintext"),
        (
            upstream("https://api.example.com", "min_version = \"1.1\""),
            "min_version",
        ),
        (
            upstream("https://api.example.com", "pins = [\"sha256/short\"]"),
            "pins[0]",
        ),
        (
            upstream(
                "https://api.example.com",
                "ca_file = \"/nonexistent/ca.pem\"",
            ),
            "ca_file",
        ),
        (
            upstream(
                "https://api.example.com",
                &format!("ca_file = \"{}\"", bad.display()),
            ),
            "not valid X.509",
        ),
        (
            upstream("http://127.0.0.1:8080", "pins = [\"sha256/AAAA\"]"),
            "the URL is plain http://",
        ),
        (
            format!(
                "{}[tls]\nmin_version = \"1.0\"\n",
                upstream("https://api.example.com", "")
            ),
            "tls.min_version",
        ),
    ] {
        let (code, said) = check(&toml);
        assert_eq!(code, Some(64), "{toml}\n{said}");
        assert!(said.contains(expect), "{toml}\n{said}");
    }
    // Loopback, no credential, or said explicitly: accepted.
    for toml in [
        upstream("http://127.0.0.1:8080", ""),
        upstream("http://localhost:8080", ""),
        "[[upstreams]]\nname = \"x\"\nregion = \"us\"\nbase_url = \"http://models.internal:8080\"\n".to_string(),
        upstream("http://api.example.com", "allow_plaintext = true"),
    ] {
        let (code, said) = check(&toml);
        assert_eq!(code, Some(0), "{toml}\n{said}");
    }
    // Allowed in clear: said at every start.
    let up = Upstream::start();
    // 0.0.0.0 reaches this machine but is no loopback address.
    let url = up.base_url().replace("127.0.0.1", "0.0.0.0");
    let p = proxy(&upstream(&url, "allow_plaintext = true"), "");
    assert!(p.log().contains("allow_plaintext"), "{}", p.log());
}

#[test]
fn token_endpoints_are_held_to_the_tls_defaults() {
    let pki = Pki::new();
    let (_dir, ca_file) = pki.ca_file();
    let ca = format!("[tls]\nca_file = \"{}\"\n", ca_file.display());
    let leaf = pki.leaf(&["127.0.0.1"], false);
    let tls13 = TlsServer::start(&leaf, &[&rustls::version::TLS13]);
    let tls12 = TlsServer::start(&leaf, &[&rustls::version::TLS12]);
    let up = Upstream::start();
    let wrong_pin = pki.leaf(&["127.0.0.1"], false).pin();
    // (endpoint, [tls], the credential's pins, whether the client secret may reach it)
    for (server, section, pins, reached) in [
        (&tls13, ca.clone(), vec![], true),
        // Not the test CA: the bundled roots do not know it.
        (&tls13, String::new(), vec![], false),
        // TLS 1.2 only: below the default minimum, then allowed.
        (&tls12, ca.clone(), vec![], false),
        (&tls12, format!("{ca}min_version = \"1.2\"\n"), vec![], true),
        // Pinned: none of the pins, then one of two.
        (&tls13, ca.clone(), vec![wrong_pin.clone()], false),
        (
            &tls13,
            ca.clone(),
            vec![wrong_pin.clone(), leaf.pin()],
            true,
        ),
    ] {
        let s = Setup::new(&mock_upstream(&up, ""), &section);
        let before = server.requests();
        let url = format!("{}/oauth/token", server.url());
        let mut args = vec![
            "credentials",
            "set-oauth",
            "partner",
            "--token-url",
            &url,
            "--client-id",
            "sluice",
        ];
        for p in &pins {
            args.extend(["--pin", p.as_str()]);
        }
        let out = s.cli(&args, b"client-secret-over-tls\n");
        let err = String::from_utf8_lossy(&out.stderr);
        let section = format!("{section} {pins:?}");
        // Nothing is stored either way: the test server answers no token.
        assert!(!out.status.success(), "{section}: {err}");
        if reached {
            assert_eq!(server.requests(), before + 1, "{section}: {err}");
            assert!(err.contains("invalid_response"), "{section}: {err}");
        } else {
            assert_eq!(server.requests(), before, "{section}: {err}");
            assert!(err.contains("unreachable"), "{section}: {err}");
        }
        assert!(!err.contains("client-secret-over-tls"));
    }
}

/// A redis-server that speaks only TLS, with `leaf` (PEM files in `dir`); killed on drop.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

impl TlsRedis {
    /// Start redis-server with TLS on a free port, once its log says it accepts connections.
    /// A port another test process took meanwhile (redis-server exits) is retried on a fresh
    /// one; its own log, not a connect that another server could answer, says it is up.
    fn start(leaf: &Leaf, dir: &std::path::Path) -> TlsRedis {
        let (cert, key) = (dir.join("redis.pem"), dir.join("redis.key"));
        std::fs::write(&cert, pem("CERTIFICATE", &leaf.der)).unwrap();
        std::fs::write(&key, pem("PRIVATE KEY", &leaf.key)).unwrap();
        for attempt in 0..5 {
            let port = free_port();
            let log = dir.join(format!("redis-{attempt}.log"));
            let mut child = std::process::Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(&cert)
                .arg("--tls-key-file")
                .arg(&key)
                .args([
                    "--tls-auth-clients",
                    "no",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--logfile")
                .arg(&log)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (./dev.sh setup test installs it)");
            let mut exited = false;
            eventually(
                "the TLS redis listens or exits",
                std::time::Duration::from_secs(10),
                || {
                    exited = child.try_wait().ok().flatten().is_some();
                    exited
                        || std::fs::read_to_string(&log)
                            .is_ok_and(|t| t.contains("Ready to accept connections"))
                },
            );
            if !exited {
                return TlsRedis { child, port };
            }
        }
        panic!("the TLS redis-server could not bind a fresh port in 5 tries");
    }
}

#[test]
fn a_rediss_fleet_verifies_the_servers_certificate() {
    let pki = Pki::new();
    let (dir, ca_file) = pki.ca_file();
    let redis = TlsRedis::start(&pki.leaf(&["127.0.0.1"], false), dir.path());
    let up = Upstream::start();
    let fleet = format!(
        "[fleet]\nredis_url = \"rediss://127.0.0.1:{}/0\"\n",
        redis.port
    );
    // With the CA: the limit is counted in Redis.
    let p = Proxy::start(
        &up,
        &format!("{fleet}[tls]\nca_file = \"{}\"\n", ca_file.display()),
    );
    p.cli_json(&["orgs", "update", &p.org_id, "--rpm", "2"], b"");
    p.metrics_with(&["sluice_fleet_redis_up 1"]);
    eventually(
        "the limit applies",
        std::time::Duration::from_secs(5),
        || chat_with_key(p.port, &p.key).status == 429,
    );
    p.metrics_with(&["sluice_fleet_local_fallback_total 0"]);
    drop(p);
    // Without it the server's certificate does not verify: never used, the fallback counts.
    let p = Proxy::start(&up, &fleet);
    p.cli_json(&["orgs", "update", &p.org_id, "--rpm", "2"], b"");
    eventually(
        "a limited request",
        std::time::Duration::from_secs(5),
        || {
            chat_with_key(p.port, &p.key).status == 200
                && p.metrics().contains("sluice_fleet_redis_up 0")
                && !p.metrics().contains("sluice_fleet_local_fallback_total 0")
        },
    );
}

#[test]
fn tls_pin_prints_the_pin_of_a_verified_certificate_only() {
    let pki = Pki::new();
    let (_dir, ca_file) = pki.ca_file();
    let leaf = pki.leaf(&["127.0.0.1"], false);
    let server = TlsServer::start(&leaf, &[&rustls::version::TLS13]);
    let s = Setup::bare(&upstream("https://api.example.com", ""), "");
    let url = format!("{}/v1", server.url());
    let v = s.cli_json(
        &[
            "tls",
            "pin",
            "--url",
            &url,
            "--ca-file",
            ca_file.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(v["pin"], leaf.pin(), "{v}");
    assert_eq!(v["tls_version"], "1.3");
    // The pin it prints is one sluice takes.
    let p = proxy(
        &upstream(
            &server.url(),
            &format!(
                "ca_file = \"{}\"\npins = [\"{}\"]",
                ca_file.display(),
                v["pin"].as_str().unwrap()
            ),
        ),
        "",
    );
    assert_eq!(chat_with_key(p.port, &p.key).status, 200);
    // Unverified (the bundled roots do not know the test CA): no pin.
    let out = s.cli(&["tls", "pin", "--url", &url], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("handshake") && !String::from_utf8_lossy(&out.stdout).contains("sha256/"),
        "{err}"
    );
    // Not https: refused before connecting.
    let out = s.cli(&["tls", "pin", "--url", "http://127.0.0.1:1"], b"");
    assert!(!out.status.success());
}

#[test]
fn a_pooled_connection_is_reused_only_under_the_policy_it_was_verified_with() {
    let (pki, other) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let (ca, other_ca) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&other_ca, &other.ca_pem).unwrap();
    let server = TlsServer::start(&pki.leaf(&["127.0.0.1"], false), &[&rustls::version::TLS13]);
    let p = proxy(
        &upstream(&server.url(), &format!("ca_file = \"{}\"", ca.display())),
        "",
    );
    // Verified under the right CA; the connection stays in sluice's pool.
    assert_eq!(chat_with_key(p.port, &p.key).status, 200);
    assert_eq!(server.requests(), 1);
    // The operator trusts another CA now: the pooled connection must not carry the next request.
    let text = std::fs::read_to_string(&p.cfg_path).unwrap();
    std::fs::write(
        &p.cfg_path,
        text.replace(ca.to_str().unwrap(), other_ca.to_str().unwrap()),
    )
    .unwrap();
    assert_eq!(p.cli_json(&["reload"], b"")["outcome"], "applied");
    let r = chat_with_key(p.port, &p.key);
    assert_eq!(
        (r.status, r.code()),
        (502, "upstream_tls_failed".to_string()),
        "{}",
        r.body_text()
    );
    assert_eq!(server.requests(), 1);
}

#[test]
fn a_certificate_that_fails_is_counted_even_when_another_upstream_answers() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let good = TlsServer::start(&pki.leaf(&["127.0.0.1"], false), &[&rustls::version::TLS13]);
    let bad = TlsServer::start(&pki.leaf(&["127.0.0.1"], true), &[&rustls::version::TLS13]);
    let both = format!(
        "{}[[upstreams]]\nname = \"expired\"\nregion = \"us\"\nbase_url = \"{}\"\ncredential = \"tls-cred\"\nca_file = \"{}\"\n",
        upstream(&good.url(), &format!("ca_file = \"{}\"", ca.display())),
        bad.url(),
        ca.display()
    );
    let p = proxy(&both, "");
    // Round robin over the two: every request is answered by the good one.
    for _ in 0..4 {
        let r = chat_with_key(p.port, &p.key);
        assert_eq!(r.status, 200, "{}", r.body_text());
    }
    assert_eq!((good.requests(), bad.requests()), (4, 0));
    p.metrics_with(&[
        "sluice_upstream_tls_failures_total{reason=\"tls_handshake\",upstream=\"expired\"}",
    ]);
    assert!(p.log().contains("TLS connection refused"), "{}", p.log());
}

#[test]
fn a_connection_below_the_policy_fails_over_to_another_upstream_of_the_region() {
    let pki = Pki::new();
    let (_dir, ca) = pki.ca_file();
    let good_leaf = pki.leaf(&["127.0.0.1"], false);
    // One whose certificate verifies but is not the pinned one; one that speaks only TLS 1.2.
    let unpinned = TlsServer::start(&pki.leaf(&["127.0.0.1"], false), &[&rustls::version::TLS13]);
    let old = TlsServer::start(&pki.leaf(&["127.0.0.1"], false), &[&rustls::version::TLS12]);
    for (bad, name, extra, reason) in [
        (
            &unpinned,
            "unpinned",
            format!("pins = [\"{}\"]", good_leaf.pin()),
            "tls_pin",
        ),
        (&old, "old", String::new(), "tls_version"),
    ] {
        let good = TlsServer::start(&good_leaf, &[&rustls::version::TLS13]);
        let both = format!(
            "{}[[upstreams]]\nname = \"{name}\"\nregion = \"us\"\nbase_url = \"{}\"\ncredential = \"tls-cred\"\nca_file = \"{}\"\n{extra}\n",
            upstream(&good.url(), &format!("ca_file = \"{}\"", ca.display())),
            bad.url(),
            ca.display()
        );
        let p = proxy(&both, "");
        // Round robin over the two: every request (a POST) is answered by the good one, and
        // nothing was sent to the other.
        for _ in 0..4 {
            let r = chat_with_key(p.port, &p.key);
            assert_eq!(r.status, 200, "{name}: {}", r.body_text());
        }
        assert_eq!(good.requests(), 4, "{name}");
        p.metrics_with(&[&format!(
            "sluice_upstream_tls_failures_total{{reason=\"{reason}\",upstream=\"{name}\"}}"
        )]);
    }
    assert_eq!((unpinned.requests(), old.requests()), (0, 0));
}
