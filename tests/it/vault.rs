//! The store and the credential vault from the outside: the CLI's contract (`--json`, exit
//! codes, bad input leaves the store unchanged, secrets never on argv), leak scans of the DB,
//! WAL, SHM, logs and CLI output, master-key rotation under load, and `serve --dev`.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

const PROVIDER_SECRET: &str = "sk-proj-VAULT-canary-0a9b8c7d6e5f";
/// A second master key (base64 of 32 bytes).
const NEW_MASTER_KEY: &str = "bmV3LW1hc3Rlci1rZXktZm9yLXJvdGF0aW9uLXRlc3Q=";

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, as (name, bytes).
fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn dump(s: &Setup) -> String {
    let o = s.cli(&["orgs", "list", "--json"], b"");
    let k = s.cli(&["keys", "list", "--json"], b"");
    let c = s.cli(&["credentials", "list", "--json"], b"");
    format!("{}{}{}", text(&o), text(&k), text(&c))
}

#[test]
fn cli_json_output_and_bad_input_leaves_the_store_unchanged() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let org = s.cli_json(
        &["orgs", "create", "acme", "--region", "eu", "--pii", "off"],
        b"",
    );
    let org_id = org["id"].as_str().unwrap();
    assert_eq!(org["region"], "eu");
    assert_eq!(org["pii"], "off");
    let k = s.cli_json(
        &[
            "keys", "create", "--org", org_id, "--name", "billing", "--pii", "on", "--region",
            "eu", "--rpm", "60",
        ],
        b"",
    );
    assert!(k["key"].as_str().unwrap().starts_with("sk-sluice-"));
    assert!(k["key"]
        .as_str()
        .unwrap()
        .starts_with(k["prefix"].as_str().unwrap()));
    let before = dump(&s);

    let refused: Vec<(Vec<&str>, &[u8])> = vec![
        (vec!["orgs", "create", "acme"], b""),
        (vec!["orgs", "create", "x", "--region", "mars"], b""),
        (vec!["orgs", "create", "x", "--pii", "maybe"], b""),
        (vec!["orgs", "update", "no-such-org", "--pii", "on"], b""),
        (vec!["orgs", "update", org_id], b""),
        (vec!["keys", "create", "--org", "no-such-org"], b""),
        (vec!["keys", "create", "--org", org_id, "--rpm", "0"], b""),
        (
            vec![
                "keys",
                "create",
                "--org",
                org_id,
                "--expires",
                "2001-01-01T00:00:00Z",
            ],
            b"",
        ),
        (
            vec!["keys", "create", "--org", org_id, "--expires", "next week"],
            b"",
        ),
        (
            vec!["keys", "create", "--org", org_id, "--region", "moon"],
            b"",
        ),
        (vec!["keys", "revoke", "no-such-key"], b""),
        (vec!["keys", "list", "--org", "no-such-org"], b""),
        (vec!["credentials", "set", "x"], b""),
        (vec!["credentials", "set", "x"], b"\n"),
        (vec!["credentials", "set", "bad name!"], b"sk-whatever"),
        // A key typed where the name goes (an Azure OpenAI key: 32 hex digits).
        (
            vec!["credentials", "set", "3f8a9c2e4b7d1f6a0e5c9b8d7a6f4e21"],
            b"sk-whatever",
        ),
        (vec!["credentials", "set", "x"], b"two\nlines"),
        (vec!["credentials", "delete", "no-such"], b""),
    ];
    for (args, stdin) in &refused {
        let out = s.cli(args, stdin);
        assert!(!out.status.success(), "{args:?} succeeded: {}", text(&out));
        assert!(
            !text(&out).contains("3f8a9c2e4b7d1f6a0e5c9b8d7a6f4e21"),
            "{args:?}: the key-shaped name was echoed"
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).trim().is_empty(),
            "{args:?}: no message"
        );
        // --json failures print one JSON error object.
        let mut a = args.clone();
        a.push("--json");
        let out = s.cli(&a, stdin);
        if out.status.code() == Some(1) {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{a:?}: {e}: {}", text(&out)));
            assert!(v["error"]["message"].is_string(), "{a:?}");
        }
    }
    assert_eq!(dump(&s), before, "a refused command changed the store");

    // A duplicate org name says so.
    let out = s.cli(&["orgs", "create", "acme"], b"");
    assert!(text(&out).contains("already exists"), "{}", text(&out));
    // An unknown org says so.
    let out = s.cli(&["keys", "create", "--org", "no-such-org"], b"");
    assert!(text(&out).contains("no org"), "{}", text(&out));

    // Lists are JSON objects; keys never show the key or its hash.
    let keys = s.cli_json(&["keys", "list", "--org", org_id], b"");
    let listed = keys.to_string();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    assert!(!listed.contains(k["key"].as_str().unwrap()));
    assert!(!listed.contains("hash"));
    assert_eq!(keys["keys"][0]["status"], "active");
    let orgs = s.cli_json(&["orgs", "list"], b"");
    assert_eq!(orgs["orgs"].as_array().unwrap().len(), 2);
    let updated = s.cli_json(&["orgs", "update", org_id, "--region", "apac"], b"");
    assert_eq!(updated["region"], "apac");
    assert_eq!(updated["pii"], "off");
}

#[test]
fn secrets_on_the_command_line_are_refused_and_never_echoed() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    for args in [
        vec!["credentials", "set", "openai", PROVIDER_SECRET],
        vec!["credentials", "set", "openai", "--secret", PROVIDER_SECRET],
        vec![
            "credentials",
            "set",
            &format!("--value={PROVIDER_SECRET}"),
            "openai",
        ],
        vec!["credentials", &format!("--secret={PROVIDER_SECRET}")],
    ] {
        let out = s.cli(&args, b"");
        assert!(!out.status.success(), "{args:?}");
        let t = text(&out);
        assert!(
            !t.contains("VAULT-canary"),
            "{args:?} echoed the secret: {t}"
        );
        assert!(t.contains("standard input"), "{args:?}: {t}");
    }
    assert_eq!(
        s.cli_json(&["credentials", "list"], b"")["credentials"],
        serde_json::json!([])
    );
}

#[test]
fn commands_that_need_the_master_key_refuse_without_it() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, "credential = \"c\"\n"), "");
    for key in ["", "not-base64!", "c2hvcnQ="] {
        for args in [vec!["credentials", "set", "c"], vec!["secrets", "rotate"]] {
            let out = cli(
                &s.cfg_path,
                &args,
                PROVIDER_SECRET.as_bytes(),
                &[("SLUICE_SECRETS_KEY", key)],
            );
            assert_eq!(out.status.code(), Some(1), "{args:?} with {key:?}");
            assert!(
                text(&out).contains("openssl rand -base64 32"),
                "{}",
                text(&out)
            );
        }
        let out = s
            .serve_command(&[], &[("SLUICE_SECRETS_KEY", key)])
            .status()
            .unwrap();
        assert_eq!(out.code(), Some(1));
        let log = std::fs::read_to_string(s.dir.path().join("sluice.log")).unwrap();
        assert!(log.contains("SLUICE_SECRETS_KEY"), "{log}");
        assert!(log.contains("openssl rand -base64 32"), "{log}");
    }
    // Commands that need no secret work without it.
    let out = cli(
        &s.cfg_path,
        &["keys", "list"],
        b"",
        &[("SLUICE_SECRETS_KEY", "")],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn no_plaintext_key_or_credential_in_the_db_wal_logs_or_cli_output() {
    let up = Upstream::start();
    let s = Setup::new(
        &mock_upstream(&up, "credential = \"mock-cred\"\n"),
        "[log]\nlevel = \"debug\"\n",
    );
    let mut outputs = String::new();
    let set = s.cli(
        &["credentials", "set", "mock-cred"],
        format!("{PROVIDER_SECRET}\n").as_bytes(),
    );
    assert!(set.status.success(), "{}", text(&set));
    outputs.push_str(&text(&set));
    let second = s.cli_json(
        &["keys", "create", "--org", &s.org_id, "--name", "second"],
        b"",
    );
    let second_key = second["key"].as_str().unwrap().to_string();
    let p = s.spawn();
    for key in [p.key.clone(), second_key.clone()] {
        let r = raw(
            p.port,
            &post(
                "/v1/chat/completions",
                b"{}",
                &format!("Authorization: Bearer {key}\r\n"),
            ),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body_text());
    }
    assert_eq!(
        up.requests()[0].header("authorization"),
        Some(format!("Bearer {PROVIDER_SECRET}").as_str())
    );
    for args in [
        vec!["keys", "list"],
        vec!["keys", "list", "--json"],
        vec!["credentials", "list"],
        vec!["credentials", "list", "--json"],
        vec!["orgs", "list"],
        vec!["keys", "revoke", second["id"].as_str().unwrap()],
        vec!["secrets", "rotate"],
    ] {
        let out = p.cli(&args, b"");
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        outputs.push_str(&text(&out));
    }
    // Let the batched last-used write happen (it is in the store once `keys list` shows it),
    // then scan while serve still runs (WAL present) and again after it stopped.
    eventually("the last-used write", Duration::from_secs(15), || {
        let keys = p.cli_json(&["keys", "list"], b"");
        keys["keys"]
            .as_array()
            .is_some_and(|k| !k.is_empty() && k.iter().all(|k| k["last_used_at"].is_string()))
    });
    let log = p.log();
    let db_dir = p.dir.path().join("data");
    let mut scans = vec![files(&db_dir)];
    let s = p.stop();
    scans.push(files(&db_dir));
    let master = MASTER_KEY.as_bytes();
    let needles: Vec<(&str, &[u8])> = vec![
        ("app key", s.key.as_bytes()),
        ("second app key", second_key.as_bytes()),
        ("provider secret", PROVIDER_SECRET.as_bytes()),
        ("provider secret core", b"VAULT-canary"),
        ("master key", master),
    ];
    let names: Vec<String> = scans[0].iter().map(|(n, _)| n.clone()).collect();
    assert!(names.iter().any(|n| n.ends_with("sluice.db")), "{names:?}");
    assert!(
        names.iter().any(|n| n.ends_with("sluice.db-wal")),
        "{names:?}"
    );
    for (what, needle) in &needles {
        for scan in &scans {
            for (name, bytes) in scan {
                assert!(!contains(bytes, needle), "{what} found in {name}");
            }
        }
        assert!(!contains(log.as_bytes(), needle), "{what} found in the log");
        assert!(
            !contains(outputs.as_bytes(), needle),
            "{what} found in CLI output:\n{outputs}"
        );
    }
    // Nor in the audit log as it reads decrypted and decompressed (its details are stored
    // compressed or sealed, which a scan of the files cannot see through).
    let text_needles: Vec<&str> = needles
        .iter()
        .map(|(_, n)| std::str::from_utf8(n).unwrap())
        .collect();
    assert_secrets_nowhere(&s, &text_needles);
    // last-used was recorded, off the request path.
    let keys = s.cli_json(&["keys", "list"], b"");
    assert!(keys["keys"][0]["last_used_at"].is_string(), "{keys}");
    // The DB and its directory are private.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.db()), 0o600);
    assert_eq!(mode(s.db().parent().unwrap()), 0o700);
}

#[test]
fn master_key_rotation_under_load_keeps_requests_succeeding() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, "credential = \"mock-cred\"\n"), "");
    // Sealed under the old key (MASTER_KEY).
    s.cli_json(
        &["credentials", "set", "mock-cred"],
        PROVIDER_SECRET.as_bytes(),
    );
    let both = [
        ("SLUICE_SECRETS_KEY", NEW_MASTER_KEY),
        ("SLUICE_SECRETS_KEY_OLD", MASTER_KEY),
    ];
    let p = s.spawn_env(&both);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let (port, req) = (p.port, p.post("/v1/embeddings", b"{}", ""));
    let load = {
        let (stop, served) = (stop.clone(), served.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match raw(port, &req) {
                    Ok(r) if r.status == 200 => {
                        ok += 1;
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed.push(format!("{} {}", r.status, r.body_text())),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        })
    };
    let reloads = || {
        p.metrics()
            .lines()
            .find_map(|l| l.strip_prefix("sluice_snapshot_reloads_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    eventually("requests under load", Duration::from_secs(10), || {
        served.load(Ordering::Relaxed) >= 3
    });
    let before = reloads();
    let out = cli(&p.cfg_path, &["secrets", "rotate", "--json"], b"", &both);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rotated"], 1);
    // The running sidecar reloads the resealed credential, and keeps serving with it.
    eventually("a snapshot reload", Duration::from_secs(10), || {
        reloads() > before
    });
    let after = served.load(Ordering::Relaxed);
    eventually("requests after the reload", Duration::from_secs(10), || {
        served.load(Ordering::Relaxed) >= after + 5
    });
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 5, "only {ok} requests");
    assert!(up
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some(&format!("Bearer {PROVIDER_SECRET}"))));
    let out = cli(&p.cfg_path, &["credentials", "list", "--json"], b"", &both);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["credentials"][0]["current_key"], true);

    // After rotation the old key is no longer needed...
    let s = p.stop();
    let p = s.spawn_env(&[("SLUICE_SECRETS_KEY", NEW_MASTER_KEY)]);
    let r = raw(p.port, &p.post("/v1/embeddings", b"{}", "")).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    // ...and the old key alone is no longer this store's key: serve refuses to start (exit 3,
    // both fingerprints named, what to set said), nothing is sent.
    let s = p.stop();
    let before = up.requests().len();
    let out = s
        .serve_command(&[], &[("SLUICE_SECRETS_KEY", MASTER_KEY)])
        .status()
        .unwrap();
    assert_eq!(out.code(), Some(3));
    let log = std::fs::read_to_string(s.dir.path().join("sluice.log")).unwrap();
    assert!(log.contains("is not the master key this store"), "{log}");
    assert!(log.contains("SLUICE_SECRETS_KEY_OLD"), "{log}");
    assert_eq!(up.requests().len(), before);
    // A rotation with a key that cannot open the credentials changes nothing.
    let stranger = "c3RyYW5nZXItbWFzdGVyLWtleS0zMi1ieXRlcy1sb24=";
    let out = cli(
        &s.cfg_path,
        &["secrets", "rotate"],
        b"",
        &[("SLUICE_SECRETS_KEY", stranger)],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("nothing was changed"), "{}", text(&out));
    let v = cli(
        &s.cfg_path,
        &["credentials", "list", "--json"],
        b"",
        &[("SLUICE_SECRETS_KEY", NEW_MASTER_KEY)],
    );
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v["credentials"][0]["current_key"], true);
}

#[test]
fn serve_dev_keeps_a_private_master_key_and_prints_a_key_once() {
    let up = Upstream::start();
    let s = Setup::bare(&mock_upstream(&up, "credential = \"mock-cred\"\n"), "");
    let env = [("OPENAI_API_KEY", PROVIDER_SECRET)];
    let p = s.spawn_args(&["--dev"], &env);
    let out = p.stdout();
    let key = out
        .split_whitespace()
        .find(|w| w.starts_with("sk-sluice-"))
        .unwrap_or_else(|| panic!("no key printed: {out}"))
        .to_string();
    let key_file = p.dir.path().join("data").join("sluice-dev-master.key");
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(p.log().contains("DEV MODE"), "{}", p.log());
    // The admin API is on, with a generated JWT secret kept beside the database.
    let jwt_file = p.dir.path().join("data").join("sluice-dev-jwt.key");
    assert_eq!(
        std::fs::metadata(&jwt_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let r = raw(
        p.admin_port,
        b"GET /api/auth/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.code(), "invalid_token", "enabled, and asks for a session");
    let auth = format!("Authorization: Bearer {key}\r\n");
    let r = raw(p.port, &post("/v1/chat/completions", b"{}", &auth)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(
        up.requests()[0].header("authorization"),
        Some(format!("Bearer {PROVIDER_SECRET}").as_str())
    );
    // Second run: same master key file, the key still works, nothing printed.
    let s = p.stop();
    let p = s.spawn_args(&["--dev"], &env);
    assert!(!p.stdout().contains("sk-sluice-"), "{}", p.stdout());
    let r = raw(p.port, &post("/v1/chat/completions", b"{}", &auth)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert!(!p.log().contains(PROVIDER_SECRET));
    assert!(!p.log().contains(&key));
}

/// Another store's master key is refused by every command that would write under it, and by
/// `serve`, with exit code 3 and a message naming both fingerprints: the store's files stay
/// byte for byte as they were (before this, `orgs create` sealed the new org's data key under
/// the wrong key and the right key could no longer rotate the store).
#[test]
fn a_master_key_that_is_not_the_stores_is_refused_and_the_store_left_untouched() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, "credential = \"c\"\n"), "");
    let set = s.cli(&["credentials", "set", "c"], PROVIDER_SECRET.as_bytes());
    assert!(set.status.success(), "{}", text(&set));
    // Checkpoint the WAL so the comparison sees one settled file set.
    let before = files(s.dir.path().join("data").as_path());
    let other = "b3RoZXItbWFzdGVyLWtleS0zMi1ieXRlcy1sb25nISE=";
    let wrong = [("SLUICE_SECRETS_KEY", other)];
    for args in [
        vec!["orgs", "create", "second"],
        vec!["keys", "create", "--org", &s.org_id],
        vec!["credentials", "set", "d"],
        vec!["credentials", "delete", "c"],
        vec!["secrets", "rotate"],
        vec!["users", "create", "--email", "x@example.com", "--operator"],
    ] {
        let out = cli(&s.cfg_path, &args, PROVIDER_SECRET.as_bytes(), &wrong);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out));
        let t = text(&out);
        assert!(t.contains("is not the master key this store"), "{t}");
        assert!(!t.contains(other) && !t.contains(MASTER_KEY), "{t}");
    }
    let out = s.serve_command(&[], &wrong).status().unwrap();
    assert_eq!(out.code(), Some(3));
    // Byte for byte: no file of the store changed, none appeared (a reader may leave an
    // empty -shm/-wal of its own, never a written one).
    let after = files(s.dir.path().join("data").as_path());
    for (name, bytes) in &before {
        let now = after.iter().find(|(n, _)| n == name).map(|(_, b)| b);
        assert_eq!(now, Some(bytes), "{name} changed");
    }
    // The right key still works, and rotation is possible.
    let out = s.cli(&["secrets", "rotate"], b"");
    assert!(out.status.success(), "{}", text(&out));
    // The old key in SLUICE_SECRETS_KEY_OLD (a rotation) is not refused.
    let out = cli(
        &s.cfg_path,
        &["secrets", "rotate"],
        b"",
        &[
            ("SLUICE_SECRETS_KEY", other),
            ("SLUICE_SECRETS_KEY_OLD", MASTER_KEY),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
}

/// A configured upstream whose credential the store does not hold is named at start, not
/// discovered at the first request.
#[test]
fn a_missing_credential_is_named_at_start() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, "credential = \"never-set\"\n"), "");
    let p = s.spawn();
    let log = p.log();
    assert!(
        log.contains("never-set") && log.contains("credentials set"),
        "{log}"
    );
    let r = chat_with_key(p.port, &p.key);
    assert_eq!(r.code(), "credential_unavailable");
}
