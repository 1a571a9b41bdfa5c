//! A real `redis-server` (Debian package) on a free loopback port, for the fleet tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server, killed on drop. Nothing is persisted.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Start redis-server on a free port and wait until it answers PING (at most 10 s). A
    /// port another test process took meanwhile is retried on a fresh one.
    pub fn start() -> Redis {
        for _ in 0..5 {
            if let Some(r) = Redis::try_start_on(super::free_port()) {
                return r;
            }
        }
        panic!("redis-server could not bind a fresh port in 5 tries");
    }

    /// Start redis-server on `port` (e.g. again, after [`Redis::kill`]).
    pub fn start_on(port: u16) -> Redis {
        Redis::try_start_on(port).unwrap_or_else(|| panic!("redis-server cannot use port {port}"))
    }

    /// Start redis-server on `port`; `None` when the port is taken (by anyone else).
    fn try_start_on(port: u16) -> Option<Redis> {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (./dev.sh setup test installs it)");
        let dir_name = dir.path().display().to_string();
        let mut r = Redis {
            port,
            child: Some(child),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.command("PING").as_deref() != Some("+PONG") {
            if r.child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some())
            {
                return None; // it could not bind
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The server answering is this one (its directory), not another test's on that port.
        if !r
            .reply("CONFIG GET dir")
            .is_some_and(|t| t.contains(&dir_name))
        {
            r.kill();
            return None;
        }
        Some(r)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Send one inline command; its first reply line (`None`: no answer).
    pub fn command(&self, cmd: &str) -> Option<String> {
        self.reply(cmd)?.lines().next().map(str::to_string)
    }

    /// The keys matching `pattern` (a short list: one read of the reply).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let reply = self.reply(&format!("KEYS {pattern}")).unwrap_or_default();
        reply
            .lines()
            .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
            .map(str::to_string)
            .collect()
    }

    /// Send one inline command; the first read of its reply (up to 512 bytes).
    fn reply(&self, cmd: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).to_string())
    }

    /// Stop it (as an outage would).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
