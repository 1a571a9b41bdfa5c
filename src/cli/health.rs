//! `sluice healthcheck`: the container health probe (a plain HTTP client of the admin listener).

use super::*;

/// The admin listener's address as a local client reaches it.
fn admin_address(cfg: &Config) -> std::net::SocketAddr {
    let mut addr = cfg.listen.admin;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

pub(super) fn healthcheck(config: Option<PathBuf>, ready: bool, json: bool) -> i32 {
    let cfg = match load(config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let path = if ready { "/readyz" } else { "/healthz" };
    let addr = admin_address(&cfg);
    let check = || -> std::io::Result<bool> {
        let t = std::time::Duration::from_secs(2);
        let mut s = std::net::TcpStream::connect_timeout(&addr, t)?;
        s.set_read_timeout(Some(t))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.1 200"))
    };
    let (code, error) = match check() {
        Ok(true) => (0, None),
        Ok(false) => (EXIT_FAILED, Some(format!("{path} on {addr} is not 200"))),
        Err(e) => (
            EXIT_FAILED,
            Some(format!("cannot reach {path} on {addr}: {e}")),
        ),
    };
    if let Some(e) = &error {
        eprintln!("sluice: {e}");
    }
    if json {
        print_json(&serde_json::json!({"ok": code == 0, "path": path,
            "address": addr.to_string(), "error": error}));
    }
    code
}

/// `sluice reload`: `POST /reload` on the admin listener of the sluice this config describes.
/// The file is read by the running process (its own `--config`), not by this command.
pub(super) fn reload(config: Option<PathBuf>, json: bool) -> i32 {
    // The file names the admin address; an invalid one would be refused by sluice too.
    let cfg = match Config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            let code = match e {
                LoadError::Read { .. } => EXIT_FAILED,
                LoadError::Invalid { .. } => EXIT_CONFIG,
            };
            let message = format!("{e}\nnot reloaded: the running sluice keeps its config");
            return fail(json, &message, code);
        }
    };
    let addr = admin_address(&cfg);
    let call = || -> std::io::Result<(u16, Vec<u8>)> {
        // A reload waits for new upstreams' first health check (connect timeout + 2 s).
        let t = cfg.limits.connect_timeout + std::time::Duration::from_secs(10);
        let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))?;
        s.set_read_timeout(Some(t))?;
        write!(
            s,
            "POST /reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.take(1 << 20).read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no HTTP answer"))?;
        let status = std::str::from_utf8(&raw[..split])
            .ok()
            .and_then(|h| h.split(' ').nth(1))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
        Ok((status, raw[split + 4..].to_vec()))
    };
    let (status, body) = match call() {
        Ok(r) => r,
        Err(e) => {
            let message = format!("cannot reach the admin listener on {addr}: {e}");
            return fail(json, &message, EXIT_FAILED);
        }
    };
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    match status {
        200 => {
            if json {
                print_json(&answer);
            } else {
                let list = |k: &str| {
                    answer[k]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default()
                };
                let file = answer["config"].as_str().unwrap_or("(compiled-in default)");
                match answer["outcome"].as_str() {
                    Some("applied") => println!("reloaded {file}: applied {}", list("applied")),
                    _ => println!("reloaded {file}: nothing to apply"),
                }
                let waiting = list("restart_needed");
                if !waiting.is_empty() {
                    println!("changed, applied at the next start: {waiting}");
                }
            }
            0
        }
        503 if answer["error"]["code"] == "reload_failed" => {
            let message = answer["error"]["message"]
                .as_str()
                .unwrap_or("the reload failed; the running config is kept");
            fail(json, message, EXIT_FAILED)
        }
        422 => {
            let message = answer["error"]["message"]
                .as_str()
                .unwrap_or("the config file is invalid");
            fail(json, message, EXIT_CONFIG)
        }
        s => {
            let message = answer["error"]["message"]
                .as_str()
                .map_or_else(|| format!("the admin listener answered {s}"), String::from);
            fail(json, &message, EXIT_FAILED)
        }
    }
}

/// Say why a command failed (on stderr, and with --json the error object on stdout, as every
/// command does) and return `code`.
fn fail(json: bool, message: &str, code: i32) -> i32 {
    eprintln!("sluice: {message}");
    if json {
        print_json(&serde_json::json!({"error": {"message": message}}));
    }
    code
}
