//! Test harness: the real `sluice` binary on free ports in front of a recording mock upstream.

pub mod redis;
pub mod upstream;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use redis::Redis;
pub use upstream::{mock_text, RawUpstream, Upstream};

/// A free TCP port on 127.0.0.1 (bound and released), never one this process was given
/// before: the kernel can hand a released port out again at once.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no fresh free port in 100 tries");
}

/// A loopback port nothing listens on and no other process can take while this is held: a
/// socket bound to it that never listens, so connections to it are refused. For upstreams
/// that must be down (a port picked free and released could be another test's server by the
/// time it is dialled).
pub struct RefusedPort {
    pub port: u16,
    _socket: tokio::net::TcpSocket,
}

pub fn refused_port() -> RefusedPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    RefusedPort {
        port,
        _socket: socket,
    }
}

/// Poll `f` (every 20 ms) until it holds; fail after `within` with `what`.
pub fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether sluice's log says a listener's port was taken (see [`Setup::spawn_args`]).
fn is_bind_failure(log: &str) -> bool {
    log.contains("cannot listen on") || log.contains("Address already in use")
}

/// The master key every test sluice runs with (base64 of 32 bytes).
pub const MASTER_KEY: &str = "dGVzdC1tYXN0ZXIta2V5LW5vdC1mb3ItcHJvZC11c2U=";

/// The JWT secret every test sluice runs with (48 bytes).
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789-abcdefghijklmnopqrstu";

/// A running sluice process. Killed on drop.
/// Its setup's fields (ports, key, config path, directory) are reachable through `Deref`.
pub struct Proxy {
    child: Option<Child>,
    setup: Option<Setup>,
    log: PathBuf,
}

impl std::ops::Deref for Proxy {
    type Target = Setup;
    fn deref(&self) -> &Setup {
        self.setup.as_ref().expect("setup present until stop()")
    }
}

/// A configured store and config, before `serve` starts.
pub struct Setup {
    /// The data-plane port.
    pub port: u16,
    pub admin_port: u16,
    pub metrics_port: u16,
    pub key: String,
    pub org_id: String,
    pub key_id: String,
    pub cfg_path: PathBuf,
    pub dir: tempfile::TempDir,
}

/// The sluice binary under test: `SLUICE_TEST_BIN` when set (e.g. `target/release/sluice`, to
/// run the suite against the release build users run: whole-program optimised, which the test
/// build is not), else the one cargo built with the tests.
pub fn bin() -> std::path::PathBuf {
    match std::env::var_os("SLUICE_TEST_BIN") {
        Some(p) if !p.is_empty() => std::path::PathBuf::from(p),
        _ => env!("CARGO_BIN_EXE_sluice").into(),
    }
}

/// Run the sluice CLI with `args` (plus `--config cfg`), `stdin` piped in, the test master key
/// in the environment unless `env` overrides it.
pub fn cli(
    cfg: &std::path::Path,
    args: &[&str],
    stdin: &[u8],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut c = Command::new(bin());
    c.args(args)
        .arg("--config")
        .arg(cfg)
        .env_remove("SLUICE_CONFIG")
        .env_remove("SLUICE_SECRETS_KEY_OLD")
        .env_remove("OPENAI_API_KEY")
        .env("SLUICE_SECRETS_KEY", MASTER_KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        if v.is_empty() {
            c.env_remove(k);
        } else {
            c.env(k, v);
        }
    }
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    // A command that refuses before it reads its input may have exited already: what it says
    // is in its output and status, which is what a test asserts.
    match input.write_all(stdin) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Run a CLI command with `--json` that must succeed; its JSON output.
pub fn cli_json(cfg: &std::path::Path, args: &[&str], stdin: &[u8]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = cli(cfg, &a, stdin, &[]);
    assert!(
        out.status.success(),
        "sluice {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "sluice {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The mock as the only upstream, named `mock`, in region `us`, with `extra` keys.
pub fn mock_upstream(up: &Upstream, extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"mock\"\nregion = \"us\"\nbase_url = \"{}\"\n{extra}\n",
        up.base_url()
    )
}

impl Setup {
    /// Write the config and create org `test` with one key.
    pub fn new(upstreams: &str, extra: &str) -> Setup {
        let mut s = Setup::bare(upstreams, extra);
        let org = s.cli_json(&["orgs", "create", "test"], b"");
        s.org_id = org["id"].as_str().unwrap().to_string();
        let k = s.cli_json(&["keys", "create", "--org", &s.org_id, "--name", "it"], b"");
        s.key = k["key"].as_str().unwrap().to_string();
        s.key_id = k["id"].as_str().unwrap().to_string();
        s
    }

    /// Write the config only: no org, no key.
    pub fn bare(upstreams: &str, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin_port, metrics_port) = (free_port(), free_port(), free_port());
        let cfg = format!(
            "[listen]\nproxy = \"127.0.0.1:{port}\"\nadmin = \"127.0.0.1:{admin_port}\"\nmetrics = \"127.0.0.1:{metrics_port}\"\n\
             [store]\npath = \"{}\"\n{extra}\n{upstreams}",
            dir.path().join("data").join("sluice.db").display()
        );
        let cfg_path = dir.path().join("sluice.toml");
        std::fs::write(&cfg_path, cfg).unwrap();
        Setup {
            port,
            admin_port,
            metrics_port,
            key: String::new(),
            key_id: String::new(),
            org_id: String::new(),
            cfg_path,
            dir,
        }
    }

    /// The database path.
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("data").join("sluice.db")
    }

    /// The `Authorization` header line for the setup's key.
    pub fn auth(&self) -> String {
        format!("Authorization: Bearer {}\r\n", self.key)
    }

    /// A POST with a JSON body and the setup's key, as bytes.
    pub fn post(&self, path: &str, body: &[u8], extra_headers: &str) -> Vec<u8> {
        post(path, body, &format!("{}{extra_headers}", self.auth()))
    }

    /// Run a CLI command against this setup's config.
    pub fn cli(&self, args: &[&str], stdin: &[u8]) -> std::process::Output {
        cli(&self.cfg_path, args, stdin, &[])
    }

    /// Run a `--json` CLI command that must succeed.
    pub fn cli_json(&self, args: &[&str], stdin: &[u8]) -> serde_json::Value {
        cli_json(&self.cfg_path, args, stdin)
    }

    /// Start `sluice serve` with the test master key and JWT secret.
    pub fn spawn(self) -> Proxy {
        self.spawn_env(&[
            ("SLUICE_SECRETS_KEY", MASTER_KEY),
            ("SLUICE_JWT_SECRET", JWT_SECRET),
        ])
    }

    /// Start `sluice serve` with exactly these secret-related variables.
    pub fn spawn_env(self, env: &[(&str, &str)]) -> Proxy {
        self.spawn_args(&[], env)
    }

    /// The `serve` command for this setup (extra `args`, exactly `env` for secrets), with
    /// stdout and stderr going to files in the setup's directory.
    pub fn serve_command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(bin());
        c.arg("serve")
            .args(args)
            .arg("--config")
            .arg(&self.cfg_path)
            .env_remove("SLUICE_CONFIG")
            .env_remove("SLUICE_SECRETS_KEY")
            .env_remove("SLUICE_SECRETS_KEY_OLD")
            .env_remove("SLUICE_JWT_SECRET")
            .env_remove("OPENAI_API_KEY")
            .stdout(std::fs::File::create(self.dir.path().join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(self.dir.path().join("sluice.log")).unwrap());
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// Start `sluice serve` with extra arguments and exactly these secret-related variables.
    /// A port that another test process took in the meantime (ports are picked free, then
    /// released until sluice binds them) is retried on fresh ports.
    pub fn spawn_args(mut self, args: &[&str], env: &[(&str, &str)]) -> Proxy {
        let log = self.dir.path().join("sluice.log");
        for _ in 0..5 {
            let child = self.serve_command(args, env).spawn().unwrap();
            let mut p = Proxy {
                child: Some(child),
                setup: Some(self),
                log: log.clone(),
            };
            match p.wait_ready() {
                Ok(()) => return p,
                Err(text) if is_bind_failure(&text) => {
                    self = p.stop();
                    self.move_to_fresh_ports();
                }
                Err(text) => panic!("sluice exited early:\n{text}"),
            }
        }
        panic!("sluice could not bind fresh ports in 5 tries");
    }

    /// Point the config's listeners at fresh ports.
    fn move_to_fresh_ports(&mut self) {
        let mut cfg = std::fs::read_to_string(&self.cfg_path).unwrap();
        for port in [&mut self.port, &mut self.admin_port, &mut self.metrics_port] {
            let fresh = free_port();
            cfg = cfg.replace(
                &format!("\"127.0.0.1:{port}\""),
                &format!("\"127.0.0.1:{fresh}\""),
            );
            *port = fresh;
        }
        std::fs::write(&self.cfg_path, cfg).unwrap();
    }
}

impl Proxy {
    /// Start sluice with `[[upstreams]]` pointing at `up` and `extra` TOML appended.
    pub fn start(up: &Upstream, extra: &str) -> Proxy {
        Proxy::start_with(&mock_upstream(up, ""), extra)
    }

    /// Start sluice with the given upstream section and extra TOML.
    pub fn start_with(upstreams: &str, extra: &str) -> Proxy {
        Setup::new(upstreams, extra).spawn()
    }

    /// Wait for `/readyz`; the log when sluice exited first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("({status})\n{}", self.log()));
            }
            // `/readyz` is about the data plane; the metrics listener is a service of its own
            // that can open a moment later, and tests scrape it right away.
            let ready = http_get(self.admin_port, "/readyz").is_ok_and(|r| r.status == 200);
            if ready && std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sluice not ready in time:\n{}", self.log());
    }

    /// Everything `serve` wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// Stop the process (SIGKILL) and wait for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill the process and get its setup back (same config, store and ports) to restart it.
    pub fn stop(mut self) -> Setup {
        self.kill();
        self.setup.take().expect("setup present until stop()")
    }

    /// Everything sluice wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The metrics page.
    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics").unwrap().body_text()
    }

    /// The metrics page once it contains every needle (metrics are recorded just after the
    /// response is sent, so poll with a deadline). Panics with the page otherwise.
    pub fn metrics_with(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let m = self.metrics();
            let missing: Vec<&&str> = needles.iter().filter(|n| !m.contains(**n)).collect();
            if missing.is_empty() {
                return m;
            }
            if Instant::now() > deadline {
                panic!("missing {missing:?} in\n{m}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Send SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Send a signal (`TERM`, `HUP`...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Wait (bounded) for the process to exit and return its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A parsed HTTP/1.1 response from a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body_text()))
    }
    /// The `error.code` of an OpenAI-shaped error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// A GET over a fresh connection.
pub fn http_get(port: u16, path: &str) -> std::io::Result<RawResponse> {
    let mut s = connect(port)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    read_response(&mut s)
}

/// Connect with read/write timeouts so no test can hang.
pub fn connect(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(20)))?;
    Ok(s)
}

/// Send raw bytes on a fresh connection and read one response.
pub fn raw(port: u16, request: &[u8]) -> std::io::Result<RawResponse> {
    let mut s = connect(port)?;
    s.write_all(request)?;
    read_response(&mut s)
}

/// Read one HTTP/1.1 response (Content-Length, chunked, or until close).
pub fn read_response(s: &mut TcpStream) -> std::io::Result<RawResponse> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {} header bytes", buf.len()),
            ));
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if status == 100 {
        return read_response(s);
    }
    if let Some(len) = get("content-length") {
        body.resize(len.parse().unwrap(), 0);
        s.read_exact(&mut body)?;
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                s.read_exact(&mut byte)?;
                line.push(byte[0]);
            }
            let size = usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16).unwrap();
            let mut chunk = vec![0u8; size + 2];
            s.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if status != 204 && status != 304 {
        s.read_to_end(&mut body)?;
    }
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

/// Whether the server closed the connection (read returns EOF or reset within the timeout).
pub fn is_closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// A POST request with a JSON body, as bytes.
pub fn post(path: &str, body: &[u8], extra_headers: &str) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// The security headers every response must carry.
pub fn assert_security_headers(r: &RawResponse) {
    assert!(
        r.header("x-request-id").is_some_and(|v| !v.is_empty()),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        r.header("cross-origin-resource-policy"),
        Some("same-origin")
    );
    assert_eq!(r.header("cross-origin-opener-policy"), Some("same-origin"));
    assert!(r.header("strict-transport-security").is_some());
}

/// None of `needles` in the database, its WAL, or the server log.
pub fn assert_not_in_files(s: &Setup, needles: &[&str]) {
    let db = s.db();
    let files = [
        db.clone(),
        db.with_extension("db-wal"),
        s.dir.path().join("sluice.log"),
    ];
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        for n in needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
                "{n:?} found in {}",
                f.display()
            );
        }
    }
}

/// [`assert_not_in_files`], and not in the audit log as it reads decrypted and decompressed
/// either (`sluice audit export --decrypt`): the store keeps details compressed or sealed, so a
/// scan of its bytes alone could not see a secret that reached them. For secrets only: personal
/// data the log keeps sealed reads back here by design.
pub fn assert_secrets_nowhere(s: &Setup, needles: &[&str]) {
    assert_not_in_files(s, needles);
    let out = s.cli(&["audit", "export", "--decrypt"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.lines().count() > 0, "the audit log is empty");
    for n in needles {
        assert!(!log.contains(n), "{n:?} found in the audit log");
    }
}

/// Every audit record, oldest first (`sluice audit tail`).
pub fn audit_records(s: &Setup) -> Vec<serde_json::Value> {
    let out = s.cli(&["audit", "tail", "-n", "100000"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A small chat completion to the proxy on `port` with API key `key` (connection closed).
pub fn chat_with_key(port: u16, key: &str) -> RawResponse {
    try_chat_with_key(port, key).unwrap()
}

/// [`chat_with_key`], or the error while nothing listens or the connection fails.
pub fn try_chat_with_key(port: u16, key: &str) -> std::io::Result<RawResponse> {
    let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    raw(
        port,
        &post(
            "/v1/chat/completions",
            body,
            &format!("Authorization: Bearer {key}\r\nConnection: close\r\n"),
        ),
    )
}
