//! The audit log from the outside: one record per admin action (and a failure record with no
//! partial state), one per proxied request, the chain verified by `sluice audit verify` and
//! broken by tampering, export / prune, and what survives SIGKILL.

use std::time::Duration;

use crate::support::*;

#[test]
fn every_admin_command_leaves_exactly_one_record_and_failures_change_nothing() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, "credential = \"c\"\n"), "");
    let base = audit_records(&s).len(); // Setup created an org and a key
    assert_eq!(base, 2);
    let org = s.cli_json(&["orgs", "create", "acme"], b"");
    let org_id = org["id"].as_str().unwrap();
    s.cli_json(&["orgs", "update", org_id, "--pii", "off"], b"");
    let k = s.cli_json(&["keys", "create", "--org", org_id, "--rpm", "5"], b"");
    s.cli_json(&["keys", "revoke", k["id"].as_str().unwrap()], b"");
    s.cli_json(&["credentials", "set", "c"], b"sk-audit-canary-secret");
    s.cli_json(&["secrets", "rotate"], b"");
    s.cli_json(&["credentials", "delete", "c"], b"");
    let all = audit_records(&s);
    let actions: Vec<&str> = all[base..]
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "org.create",
            "org.update",
            "key.create",
            "key.revoke",
            "credential.set",
            "secrets.rotate",
            "credential.delete"
        ]
    );
    for r in &all[base..] {
        assert_eq!(r["kind"], "admin");
        assert_eq!(r["outcome"], "success");
        assert!(r["actor"].as_str().unwrap().starts_with("cli:"), "{r}");
        assert!(r["at"].is_string() && r["hash"].is_string());
    }
    assert_eq!(all[base]["target_id"], org_id);
    assert_eq!(all[base + 2]["target_id"], k["id"]);
    assert_eq!(all[base + 2]["org_id"], org_id);
    assert_eq!(all[base + 2]["details"]["prefix"], k["prefix"]);
    let text = serde_json::to_string(&all).unwrap();
    assert!(
        !text.contains(k["key"].as_str().unwrap()),
        "a key in the audit log"
    );
    assert!(
        !text.contains("audit-canary"),
        "a credential in the audit log"
    );

    // A refused command: one failure record, nothing else changed.
    let keys_before = s.cli_json(&["keys", "list"], b"");
    let out = s.cli(&["keys", "create", "--org", "no-such-org"], b"");
    assert!(!out.status.success());
    let after = audit_records(&s);
    assert_eq!(after.len(), all.len() + 1);
    let last = after.last().unwrap();
    assert_eq!(last["action"], "key.create");
    assert_eq!(last["outcome"], "failure");
    // A stable code, never the message (which can describe what was submitted).
    assert_eq!(last["details"]["error"], "not_found");
    assert_eq!(s.cli_json(&["keys", "list"], b""), keys_before);

    let v = s.cli_json(&["audit", "verify"], b"");
    assert_eq!(v["ok"], true);
    assert_eq!(v["records"], after.len());
}

#[test]
fn proxied_requests_are_recorded_without_bodies_or_keys() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let body = br#"{"model":"gpt-4o","input":"mail jane@example.com"}"#;
    let r = raw(
        p.port,
        &p.post(
            "/v1/embeddings",
            body,
            "User-Agent: audit-test/1.0\r\nX-Request-Id: audit-rid-1\r\n",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let r = raw(p.port, &post("/v1/embeddings", b"{}", "")).unwrap();
    assert_eq!(r.status, 401);
    eventually(
        "both requests in the audit log",
        Duration::from_secs(5),
        || {
            audit_records(&p)
                .iter()
                .filter(|r| r["kind"] == "request")
                .count()
                >= 2
        },
    );
    let all = audit_records(&p);
    let reqs: Vec<&serde_json::Value> = all.iter().filter(|r| r["kind"] == "request").collect();
    assert_eq!(reqs.len(), 2, "{all:#?}");
    let ok = reqs[0];
    assert_eq!(ok["action"], "proxy.request");
    assert_eq!(ok["request_id"], "audit-rid-1");
    assert_eq!(ok["actor"], format!("key:{}", p.key_id));
    assert_eq!(ok["org_id"], p.org_id.as_str());
    assert_eq!(ok["user_agent"], "audit-test/1.0");
    assert_eq!(ok["source_ip"], "127.0.0.1");
    assert_eq!(ok["outcome"], "success");
    let d = &ok["details"];
    assert_eq!(d["status"], 200);
    assert_eq!(d["model"], "gpt-4o");
    assert_eq!(d["region"], "us");
    assert_eq!(d["upstream"], "mock");
    assert_eq!(d["redactions"]["email"], 1);
    assert!(d["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(reqs[1]["actor"], "unauthenticated");
    assert_eq!(reqs[1]["details"]["code"], "invalid_api_key");
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains("jane@example.com") && !text.contains(&p.key));
    p.metrics_with(&["sluice_audit_records_total 2", "sluice_audit_queue_depth 0"]);
}

/// The nice value of each of `pid`'s threads, by thread name.
#[cfg(target_os = "linux")]
fn thread_nice(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(t.join("comm")),
            std::fs::read_to_string(t.join("stat")),
        ) else {
            continue; // a thread that has ended
        };
        // After the name in parentheses: the state is field 3, the nice value field 19.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        out.push((comm.trim().to_string(), fields[16].parse().unwrap()));
    }
    out
}

#[cfg(target_os = "linux")]
#[test]
fn the_audit_writer_runs_below_the_data_plane() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let threads = thread_nice(p.pid());
    // Its batches yield to the requests sharing its core (10 above the process's nice value,
    // whatever the test runs at); the data plane keeps the process's priority.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", p.pid())).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let base: i64 = fields[16].parse().unwrap();
    assert!(
        threads
            .iter()
            .any(|(n, nice)| n == "sluice-audit" && *nice == (base + 10).min(19)),
        "{threads:?}"
    );
    let data_plane: Vec<_> = threads
        .iter()
        .filter(|(n, _)| n.starts_with("sluice data"))
        .collect();
    assert!(!data_plane.is_empty(), "{threads:?}");
    assert!(
        data_plane.iter().all(|(_, nice)| *nice == base),
        "{threads:?}"
    );
}

#[test]
fn verify_names_the_first_tampered_record() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    for i in 0..4 {
        s.cli_json(&["orgs", "create", &format!("o{i}")], b"");
    }
    let out = s.cli(&["audit", "verify"], b"");
    assert!(out.status.success());
    let db = s.db();
    // Edit a row the way an attacker with the file would: drop the trigger first.
    let c = rusqlite::Connection::open(&db).unwrap();
    assert!(c
        .execute("UPDATE audit SET actor = 'cli:mallory' WHERE seq = 4", [])
        .is_err());
    c.execute_batch(
        "DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'cli:mallory' WHERE seq = 4;",
    )
    .unwrap();
    drop(c);
    let out = s.cli(&["audit", "verify"], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("seq=4") && err.contains("edited"), "{err}");
    let v: serde_json::Value =
        serde_json::from_slice(&s.cli(&["audit", "verify", "--json"], b"").stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["broken"]["seq"], 4);
}

#[test]
fn export_then_prune_keeps_the_rest_verifiable() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    s.cli_json(&["orgs", "create", "x"], b"");
    let out = s.cli(&["audit", "prune", "--before", "2999-01-01"], b"");
    assert!(!out.status.success(), "pruned without an export");
    assert!(String::from_utf8_lossy(&out.stderr).contains("export"));
    let out = s.cli(&["audit", "export"], b"");
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0]["details"].is_object(),
        "details exported as an object"
    );
    let p = s.cli_json(&["audit", "prune", "--before", "2999-01-01"], b"");
    assert_eq!(p["pruned"], 3);
    s.cli_json(&["orgs", "create", "y"], b"");
    let left = audit_records(&s);
    assert_eq!(left.len(), 2);
    assert_eq!(left[0]["kind"], "checkpoint");
    assert_eq!(left[0]["action"], "audit.prune");
    assert_eq!(s.cli_json(&["audit", "verify"], b"")["ok"], true);
    // Export by org and since.
    let out = s.cli(&["audit", "export", "--since", "2000-01-01T00:00:00Z"], b"");
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 2);
}

#[test]
fn after_sigkill_every_answered_request_older_than_the_batch_window_has_its_record() {
    let up = Upstream::start();
    let mut p = Proxy::start(&up, "");
    let n = 40;
    for _ in 0..n {
        let r = raw(p.port, &p.post("/v1/embeddings", b"{}", "")).unwrap();
        assert_eq!(r.status, 200);
    }
    // Once counted as written, records survive a kill.
    p.metrics_with(&[&format!("sluice_audit_records_total {n}")]);
    p.kill();
    let s = p.stop();
    let all = audit_records(&s);
    assert_eq!(all.iter().filter(|r| r["kind"] == "request").count(), n);
    assert_eq!(s.cli_json(&["audit", "verify"], b"")["ok"], true);
}

#[test]
fn sigterm_flushes_queued_records_before_exit() {
    let up = Upstream::start();
    let mut p = Proxy::start(&up, "");
    for _ in 0..10 {
        raw(p.port, &p.post("/v1/embeddings", b"{}", "")).unwrap();
    }
    p.terminate();
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0), "{}", p.log());
    let s = p.stop();
    let all = audit_records(&s);
    assert_eq!(all.iter().filter(|r| r["kind"] == "request").count(), 10);
}

#[test]
fn a_huge_model_or_user_agent_cannot_grow_the_audit_log() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let model = "m".repeat(5 * 1024 * 1024);
    let body = format!(r#"{{"model":"{model}","input":"x"}}"#);
    let ua = format!("User-Agent: {}\r\n", "u".repeat(20_000));
    let mut s = connect(p.port).unwrap();
    for _ in 0..3 {
        std::io::Write::write_all(&mut s, &p.post("/v1/embeddings", body.as_bytes(), &ua)).unwrap();
        assert_eq!(read_response(&mut s).unwrap().status, 200);
    }
    p.metrics_with(&["sluice_audit_records_total 3"]);
    let size =
        |f: &str| std::fs::metadata(p.dir.path().join("data").join(f)).map_or(0, |m| m.len());
    let total = size("sluice.db") + size("sluice.db-wal");
    assert!(
        total < 4 * 1024 * 1024,
        "3 requests grew the store to {total} bytes"
    );
    let reqs: Vec<serde_json::Value> = audit_records(&p)
        .into_iter()
        .filter(|r| r["kind"] == "request")
        .collect();
    assert_eq!(reqs.len(), 3);
    assert!(reqs[0]["details"]["model"].as_str().unwrap().len() <= 256);
    assert!(reqs[0]["user_agent"].as_str().unwrap().len() <= 256);
    assert!(!p.log().contains(&"m".repeat(1000)));
}

#[test]
fn a_full_store_refuses_requests_with_503_instead_of_hanging_and_recovers() {
    let up = Upstream::start();
    // The harness writes `[store]` last before `extra`: this key lands in it.
    let p = Proxy::start(&up, "max_size_mb = 1\n");
    let mut s = connect(p.port).unwrap();
    let body = br#"{"model":"gpt-4o-mini","input":"x"}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let refused = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the store never filled up"
        );
        std::io::Write::write_all(&mut s, &p.post("/v1/embeddings", body, "")).unwrap();
        let r = match read_response(&mut s) {
            Ok(r) => r,
            Err(_) => {
                s = connect(p.port).unwrap();
                continue;
            }
        };
        match r.status {
            200 => {}
            503 => break r,
            other => panic!("{other}: {}", r.body_text()),
        }
    };
    assert_eq!(refused.code(), "audit_unavailable");
    let forwarded = up.requests().len();
    // Later requests are answered at once (no hang behind the writer) and never forwarded.
    for _ in 0..20 {
        let t = std::time::Instant::now();
        let r = raw(p.port, &p.post("/v1/embeddings", body, "")).unwrap();
        assert_eq!((r.status, r.code().as_str()), (503, "audit_unavailable"));
        assert!(t.elapsed() < Duration::from_secs(2));
    }
    assert_eq!(up.requests().len(), forwarded);
    assert_eq!(http_get(p.admin_port, "/readyz").unwrap().status, 503);
    p.metrics_with(&[
        "sluice_audit_writer_failing 1",
        "code=\"audit_unavailable\"",
    ]);
    let log = p.log();
    assert!(log.contains("disk is full"), "{log}");
    assert!(
        log.matches("cannot write audit records").count() <= 3,
        "the outage is logged once (and every 30 s), not per retry"
    );

    // Freeing space (export, then prune) lets the queued records in and requests through.
    let out = p.cli(&["audit", "export"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = p.cli(&["audit", "prune", "--before", "2999-01-01"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = raw(p.port, &p.post("/v1/embeddings", body, "")).unwrap();
        if r.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recovered: {}",
            r.body_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    p.metrics_with(&["sluice_audit_writer_failing 0"]);
    let out = p.cli(&["audit", "verify"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A default install bounds its store (10 GiB) and reports how full it is, so the alert can
/// fire before requests are refused.
#[test]
fn a_default_config_bounds_the_store_and_reports_its_size() {
    let cfg = sluice::config::Config::load(None).unwrap();
    assert_eq!(cfg.store.max_bytes, Some(10240 << 20));
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let m = p.metrics_with(&["sluice_store_max_bytes 10737418240"]);
    let size: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("sluice_store_size_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(size > 0, "{m}");
}

#[test]
fn a_follow_stopped_by_sigterm_prints_every_record_written_until_then_and_after_resumes() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    // From the last record there is now (`-n 0` would race with the first write below).
    let out = s.cli(&["audit", "tail", "-n", "1"], b"");
    let last: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let last = last["seq"].as_i64().unwrap().to_string();
    let mut tail = std::process::Command::new(crate::support::bin())
        .args(["audit", "tail", "--follow", "--after", &last, "--config"])
        .arg(&s.cfg_path)
        .env_remove("SLUICE_CONFIG")
        .env("SLUICE_SECRETS_KEY", MASTER_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Started (it polls): the first record shows.
    s.cli_json(&["orgs", "create", "first"], b"");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(tail.stdout.take().unwrap()));
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["action"], "org.create", "{first}");
    // Three more, then SIGTERM at once (within its polling interval).
    for name in ["a", "b", "c"] {
        s.cli_json(&["orgs", "create", name], b"");
    }
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &tail.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let rest: Vec<serde_json::Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(rest.len(), 3, "{rest:?}");
    assert_eq!(
        tail.wait().unwrap().code(),
        Some(0),
        "a stop is a clean end"
    );
    // Resuming after the last seq shipped: nothing again, nothing missed.
    let last = rest[2]["seq"].as_i64().unwrap();
    s.cli_json(&["orgs", "create", "d"], b"");
    let out = s.cli(&["audit", "tail", "--after", &last.to_string()], b"");
    let resumed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!(resumed[0]["seq"].as_i64(), Some(last + 1));
    let out = s.cli(&["audit", "tail", "--after", "-1"], b"");
    assert!(!out.status.success());
}
