//! The README's quick start and production setup, run as written: each shell and SDK block is
//! extracted from README.md and run with only the ports, the upstream URL, the binary and the
//! secrets an operator would paste filled in, so the document cannot drift from the program.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const README: &str = include_str!("../../README.md");
const DEFAULT_CONFIG: &str = include_str!("../../conf/sluice.toml");

/// The `n`th fenced block of `lang` after `heading`.
fn block(heading: &str, lang: &str, n: usize) -> String {
    let at = README
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"));
    let fence = format!("```{lang}\n");
    README[at..]
        .split(&fence)
        .nth(n + 1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("no {lang} block {n} after {heading:?}"))
        .to_string()
}

/// conf/sluice.toml (what the README's commands use) with free ports and the mock upstream.
fn config(up: &Upstream) -> (String, [u16; 3]) {
    let ports = [free_port(), free_port(), free_port()];
    let text = DEFAULT_CONFIG
        .replace("127.0.0.1:8480", &format!("127.0.0.1:{}", ports[0]))
        .replace("127.0.0.1:8481", &format!("127.0.0.1:{}", ports[1]))
        .replace("127.0.0.1:9480", &format!("127.0.0.1:{}", ports[2]))
        .replace("https://api.openai.com", &up.base_url());
    assert!(
        text.contains(&up.base_url()),
        "conf/sluice.toml has no OpenAI upstream"
    );
    (text, ports)
}

/// Run the README's Python SDK example against `port` with `key`: what it printed.
fn python_example(port: u16, key: &str) -> String {
    let code = block("## Quick start", "python", 0)
        .replace("127.0.0.1:8480", &format!("127.0.0.1:{port}"))
        .replace("sk-sluice-...", key);
    let out = Command::new("python3")
        .arg("-c")
        .arg(&code)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{code}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Wait for `serve` at this config to be ready.
fn ready(cfg: &Path, dir: &Path) {
    eventually("sluice is ready", Duration::from_secs(30), || {
        Command::new(bin())
            .args(["healthcheck", "--ready"])
            .env("SLUICE_CONFIG", cfg)
            .current_dir(dir)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    });
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
}

/// A killed-on-drop child.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_quick_start_works_as_written() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let (text, ports) = config(&up);
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(&cfg, text).unwrap();

    // `OPENAI_API_KEY=... ./dev.sh run`: `./dev.sh run` is `cargo run --release --locked --
    // serve --dev` (README), here the binary under test.
    let start = block("## Quick start", "sh", 0);
    let line = start
        .lines()
        .find(|l| l.contains("./dev.sh run"))
        .expect("the quick start runs ./dev.sh run");
    let (name, value) = line
        .split_whitespace()
        .next()
        .and_then(|a| a.split_once('='))
        .expect("the quick start sets OPENAI_API_KEY");
    assert_eq!(name, "OPENAI_API_KEY");
    let mut serve = Killed(
        Command::new(bin())
            .args(["serve", "--dev"])
            .env(name, value)
            .env("SLUICE_CONFIG", &cfg)
            .env_remove("SLUICE_SECRETS_KEY")
            .env_remove("SLUICE_JWT_SECRET")
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    // The key it prints once (the rest of its output read on, so that it never blocks).
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = serve.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(k) = l.trim().strip_prefix("sk-sluice-") {
                let _ = tx.send(format!("sk-sluice-{k}"));
            }
        }
    });
    let key = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("serve --dev printed no key: {}", log(dir.path())));
    ready(&cfg, dir.path());

    // The Python SDK example, with that key: the answer comes from the upstream, which got the
    // provider key, never the sluice one.
    assert_eq!(python_example(ports[0], &key), "hello from mock");
    let seen = up.requests();
    assert_eq!(
        seen.last().unwrap().header("authorization"),
        Some(format!("Bearer {value}").as_str())
    );

    // The Node SDK example, with a call added.
    let js = block("## Quick start", "js", 0)
        .replace("127.0.0.1:8480", &format!("127.0.0.1:{}", ports[0]))
        .replace("sk-sluice-...", &key)
        + "const r = await client.chat.completions.create({ model: \"gpt-4o-mini\", messages: [{ role: \"user\", content: \"hi\" }] });\nconsole.log(r.choices[0].message.content);\n";
    let sdk = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk");
    let script = Path::new(sdk).join(format!("readme-{}.mjs", ports[0]));
    std::fs::write(&script, js).unwrap();
    let out = Command::new("node").arg(&script).output().unwrap();
    let _ = std::fs::remove_file(&script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from mock"
    );

    // The admin block: an operator created with the dev master key, then a login with the code
    // of the TOTP it printed (the README's `123456` stands for it).
    let admin = block("## Quick start", "sh", 1);
    let script = admin
        .replace(
            "cargo run --release --locked --",
            &format!("\"{}\"", bin().display()),
        )
        .replace("localhost:8481", &format!("localhost:{}", ports[1]));
    let (create, login) = script
        .split_once("\ncurl")
        .map(|(a, b)| (a.to_string(), format!("curl{b}")))
        .expect("the admin block creates a user, then logs in with curl");
    let out = Command::new("bash")
        .args(["-c", &format!("set -euo pipefail\n{create}")])
        .env("SLUICE_CONFIG", &cfg)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{create}\n{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uri = said
        .split_whitespace()
        .find(|w| w.starts_with("otpauth://"))
        .unwrap_or_else(|| panic!("no TOTP URI printed: {said}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = sluice::admin::users::code_for_uri(uri, now).unwrap();
    let out = Command::new("bash")
        .args(["-c", &login.replace("123456", &code)])
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(answer["token_type"], "Bearer", "{answer}");
}

#[test]
fn the_production_setup_works_as_written() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let (text, ports) = config(&up);
    // The operator's config file, with its store where the operator would put it.
    let text = text.replace(
        "path           = \"data/sluice.db\"",
        &format!("path = \"{}\"", dir.path().join("var/sluice.db").display()),
    );
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(&cfg, text).unwrap();
    let setup = block("### Production setup", "sh", 0);
    assert!(setup.trim_end().ends_with("sluice serve"), "{setup}");
    let (commands, _) = setup.trim_end().rsplit_once('\n').unwrap();
    let script = format!(
        "set -euo pipefail\nsluice() {{ \"{}\" \"$@\"; }}\n{}\nenv | grep '^SLUICE_' > env.txt\n",
        bin().display(),
        commands.replace("/etc/sluice/sluice.toml", cfg.to_str().unwrap())
    );
    let mut run = Command::new("bash")
        .args(["-c", &script])
        .env("OPENAI_KEY", "sk-provider-for-the-readme")
        .env_remove("SLUICE_CONFIG")
        .env_remove("SLUICE_SECRETS_KEY")
        .env_remove("SLUICE_JWT_SECRET")
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `users create` reads the password from stdin.
    std::io::Write::write_all(
        run.stdin.as_mut().unwrap(),
        b"a long admin password for the readme\n",
    )
    .unwrap();
    let out = run.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{script}\n{said}\n{err}");
    // Every command used the operator's store, none the compiled-in default's.
    assert!(
        !dir.path().join("data").exists(),
        "a command wrote ./data: {err}"
    );
    assert!(!err.contains("warning"), "{err}");
    let key = said
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["key"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no key printed: {said}"));

    // `sluice serve` with the environment the block exported.
    let env = std::fs::read_to_string(dir.path().join("env.txt")).unwrap();
    let mut serve = Command::new(bin());
    serve
        .arg("serve")
        .env_remove("SLUICE_CONFIG")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for l in env.lines() {
        let (k, v) = l.split_once('=').unwrap();
        serve.env(k, v);
    }
    let _serve = Killed(serve.spawn().unwrap());
    ready(&cfg, dir.path());
    assert_eq!(python_example(ports[0], &key), "hello from mock");
    assert_eq!(
        up.requests().last().unwrap().header("authorization"),
        Some("Bearer sk-provider-for-the-readme")
    );
}

#[test]
fn serve_dev_keeps_serving_when_whoever_read_its_key_has_gone() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let (text, ports) = config(&up);
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut serve = Killed(
        Command::new(bin())
            .args(["serve", "--dev"])
            .env("OPENAI_API_KEY", "sk-provider-for-dev")
            .env("SLUICE_CONFIG", &cfg)
            .env_remove("SLUICE_SECRETS_KEY")
            .env_remove("SLUICE_JWT_SECRET")
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Read up to the key, then close the pipe (as `| head` would).
    let key = {
        let stdout = serve.0.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let l = lines.next().expect("serve --dev printed no key").unwrap();
            if let Some(k) = l.trim().strip_prefix("sk-sluice-") {
                break format!("sk-sluice-{k}");
            }
        }
    };
    ready(&cfg, dir.path());
    assert!(serve.0.try_wait().unwrap().is_none(), "serve --dev ended");
    assert_eq!(python_example(ports[0], &key), "hello from mock");
}
