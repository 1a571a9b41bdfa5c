//! `sluice healthcheck`: the container health probe (a plain HTTP client of the admin listener).

use super::*;

pub(super) fn healthcheck(config: Option<PathBuf>, ready: bool, json: bool) -> i32 {
    let cfg = match load(config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let path = if ready { "/readyz" } else { "/healthz" };
    let mut addr = cfg.listen.admin;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
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
