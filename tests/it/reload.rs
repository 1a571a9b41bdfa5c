//! Reloading the config while serving: SIGHUP, `sluice reload` and `POST /reload` apply what
//! can change live, keep the running config when the file is invalid, and say what waits for
//! a restart; requests in flight never fail because of it.

use crate::support::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Replace the config file whole (a reader never sees half of it).
fn rewrite(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn sighup_moves_traffic_to_the_new_upstream_without_failing_a_request() {
    let (a, b) = (Upstream::start(), Upstream::start());
    let s = Setup::new(&mock_upstream(&a, ""), "");
    let text = std::fs::read_to_string(&s.cfg_path).unwrap();
    let p = s.spawn();
    // Load from two clients, new connections and kept-alive ones, all through the reload.
    let stop = Arc::new(AtomicBool::new(false));
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..2)
        .map(|i| {
            let (stop, statuses, port, key) =
                (stop.clone(), statuses.clone(), p.port, p.key.clone());
            std::thread::spawn(move || {
                let body =
                    br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
                let mut conn = connect(port).unwrap();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 5_000 {
                    n += 1;
                    let status = if i == 0 {
                        chat_with_key(port, &key).status
                    } else {
                        let req = post(
                            "/v1/chat/completions",
                            body,
                            &format!("Authorization: Bearer {key}\r\n"),
                        );
                        std::io::Write::write_all(&mut conn, &req).unwrap();
                        read_response(&mut conn).map_or(0, |r| r.status)
                    };
                    statuses.lock().unwrap().push(status);
                }
            })
        })
        .collect();
    eventually(
        "load reaches the first upstream",
        Duration::from_secs(10),
        || a.requests().len() >= 10,
    );
    rewrite(
        &p.cfg_path,
        &text
            .replace(&a.base_url(), &b.base_url())
            .replace("name = \"mock\"", "name = \"mock-b\""),
    );
    p.signal("HUP");
    eventually(
        "traffic moves to the new upstream",
        Duration::from_secs(10),
        || b.requests().len() >= 10,
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let statuses = statuses.lock().unwrap();
    assert!(statuses.len() >= 20, "{}", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "a request failed during the reload: {:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    // Everything after the reload goes to the new upstream, named as configured now.
    let before = a.requests().len();
    let r = chat_with_key(p.port, &p.key);
    assert_eq!(r.header("x-sluice-upstream"), Some("mock-b"));
    assert_eq!(a.requests().len(), before);
    p.metrics_with(&["sluice_config_reloads_total{outcome=\"applied\"} 1"]);
    let log = p.log();
    assert!(log.contains("SIGHUP"), "{log}");
    assert!(log.contains("config reloaded"), "{log}");
}

#[test]
fn an_invalid_file_is_refused_whole_and_the_running_config_kept() {
    let (a, b) = (Upstream::start(), Upstream::start());
    let s = Setup::new(&mock_upstream(&a, ""), "");
    let text = std::fs::read_to_string(&s.cfg_path).unwrap();
    let p = s.spawn();
    // Two problems in one file, one of them beside a valid change: nothing of it applies.
    rewrite(
        &p.cfg_path,
        &(text.replace(&a.base_url(), &b.base_url())
            + "[log]\nlevel = \"verbose\"\n[limits]\ntimeout_secs = \"soon\"\n"),
    );
    // SIGHUP: refused, said in the log with every problem, counted.
    p.signal("HUP");
    p.metrics_with(&["sluice_config_reloads_total{outcome=\"invalid\"} 1"]);
    eventually("the refusal is logged", Duration::from_secs(5), || {
        p.log().contains("config reload refused")
    });
    let log = p.log();
    assert!(
        log.contains("level") && log.contains("timeout_secs"),
        "{log}"
    );
    // The endpoint: 422 invalid_config, every problem in the message.
    let r = raw(
        p.admin_port,
        b"POST /reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!((r.status, r.code()), (422, "invalid_config".to_string()));
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("running config is kept"), "{message}");
    // Every problem by its place; never the value refused (a secret on the wrong line).
    assert!(
        message.contains("log.level") && message.contains("limits.timeout_secs"),
        "{message}"
    );
    assert!(
        !message.contains("verbose") && !message.contains("soon"),
        "{message}"
    );
    assert!(!log.contains("verbose") && !log.contains("soon"), "{log}");
    p.metrics_with(&["sluice_config_reloads_total{outcome=\"invalid\"} 2"]);
    // `sluice reload` reads the same file first: it says so and exits 64 without asking.
    let out = p.cli(&["reload"], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("timeout_secs") && err.contains("not reloaded"),
        "{err}"
    );
    let out = p.cli(&["reload", "--json"], b"");
    assert_eq!(out.status.code(), Some(64));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("level"),
        "{v}"
    );
    // Still served as before.
    assert_eq!(chat_with_key(p.port, &p.key).status, 200);
    assert_eq!((a.requests().len(), b.requests().len()), (1, 0));
    p.metrics_with(&["sluice_config_reloads_total{outcome=\"invalid\"} 2"]);
}

#[test]
fn a_reload_says_what_it_applied_and_what_waits_for_a_restart() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let text = std::fs::read_to_string(&s.cfg_path).unwrap();
    let p = s.spawn();
    // Nothing changed.
    let v = p.cli_json(&["reload"], b"");
    assert_eq!(v["outcome"], "unchanged");
    p.metrics_with(&["sluice_config_reloads_total{outcome=\"unchanged\"} 1"]);

    // A new proxy port waits for a restart; the log level applies now: with `warn`, the
    // per-request info line is no longer written.
    let new_port = free_port();
    rewrite(
        &p.cfg_path,
        &(text.replace(
            &format!("127.0.0.1:{}", p.port),
            &format!("127.0.0.1:{new_port}"),
        ) + "[log]\nlevel = \"warn\"\n"),
    );
    let v = p.cli_json(&["reload"], b"");
    assert_eq!(v["outcome"], "applied", "{v}");
    assert_eq!(v["applied"], serde_json::json!(["log.level"]));
    assert_eq!(v["restart_needed"], serde_json::json!(["listen"]));
    assert_eq!(
        v["config"].as_str(),
        Some(p.cfg_path.to_str().unwrap()),
        "{v}"
    );
    let out = p.cli(&["reload"], b"");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(said.contains("applied at the next start: listen"), "{said}");
    // Still on the port it was started with.
    let lines = |log: &str| log.matches("\"request\"").count() + log.matches(" request ").count();
    let before = lines(&p.log());
    let r = chat_with_key(p.port, &p.key);
    assert_eq!(r.status, 200);
    assert!(connect(new_port).is_err());
    // The request's info line is not written: once the request is counted and a later warning
    // (a browser asking for a reload) is in the log, it would be there.
    p.metrics_with(&[
        "sluice_requests_total{region=\"us\",route=\"chat_completions\",status=\"200\"} 1",
    ]);
    let r = raw(
        p.admin_port,
        b"POST /reload HTTP/1.1\r\nHost: localhost\r\nOrigin: http://a.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 403);
    eventually("the warning is logged", Duration::from_secs(5), || {
        p.log().contains("by a browser")
    });
    assert_eq!(lines(&p.log()), before, "{}", p.log());
}

#[test]
fn the_reload_endpoint_takes_a_post_from_an_allowed_source_and_never_from_a_browser() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let ask = |head: &str| {
        raw(
            p.admin_port,
            format!("{head}Host: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap()
    };
    let r = ask("GET /reload HTTP/1.1\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = ask("POST /reload HTTP/1.1\r\nOrigin: http://evil.example\r\n");
    assert_eq!(r.status, 403, "{}", r.body_text());
    assert!(r.json()["error"]["request_id"].is_string());
    let r = ask("POST /reload HTTP/1.1\r\n");
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.json()["outcome"], "unchanged");
    // The data plane has no such route.
    let r = ask_data(&p);
    assert_eq!(r.status, 404, "{}", r.body_text());
}

fn ask_data(p: &Proxy) -> RawResponse {
    raw(
        p.port,
        format!(
            "POST /reload HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            p.key
        )
        .as_bytes(),
    )
    .unwrap()
}

#[test]
fn a_sighup_while_starting_is_a_reload_once_serving_never_the_end_of_the_process() {
    let (a, b) = (Upstream::start(), Upstream::start());
    let s = Setup::new(&mock_upstream(&a, ""), "");
    let text = std::fs::read_to_string(&s.cfg_path).unwrap();
    // The file changes right after sluice read it, and the SIGHUP comes while it starts.
    let mut child = s
        .serve_command(
            &[],
            &[
                ("SLUICE_SECRETS_KEY", MASTER_KEY),
                ("SLUICE_JWT_SECRET", JWT_SECRET),
            ],
        )
        .spawn()
        .unwrap();
    let log = s.dir.path().join("sluice.log");
    eventually("the config is read", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("config loaded"))
    });
    rewrite(&s.cfg_path, &text.replace(&a.base_url(), &b.base_url()));
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    eventually("the new upstream serves", Duration::from_secs(15), || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "sluice ended on SIGHUP:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        try_chat_with_key(s.port, &s.key).is_ok_and(|r| r.status == 200) && !b.requests().is_empty()
    });
    let _ = child.kill();
    let _ = child.wait();
}
