//! API keys on the data plane and upstream credential injection: every unauthenticated request
//! gets the same 401 and never reaches the upstream; the upstream sees sluice's credential and
//! never the app's key; revocation, rate limits and missing credentials while serving.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::*;

const PROVIDER_SECRET: &str = "sk-proj-PROVIDER-canary-7d1e2f3a4b5c";

/// The mock with credential `mock-cred` and that credential stored.
fn with_credential(up: &Upstream, upstream_extra: &str) -> Proxy {
    let s = Setup::new(
        &mock_upstream(up, &format!("credential = \"mock-cred\"\n{upstream_extra}")),
        "",
    );
    s.cli_json(
        &["credentials", "set", "mock-cred"],
        format!("{PROVIDER_SECRET}\n").as_bytes(),
    );
    s.spawn()
}

#[test]
fn unauthenticated_requests_get_one_401_and_never_reach_the_upstream() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let other = generate_like_key();
    // Made before sluice starts, so its first snapshot has them.
    let revoked = s.cli_json(&["keys", "create", "--org", &s.org_id], b"");
    let revoked_key = revoked["key"].as_str().unwrap().to_string();
    s.cli_json(&["keys", "revoke", revoked["id"].as_str().unwrap()], b"");
    let expires = in_seconds(1);
    let expiring = s.cli_json(
        &["keys", "create", "--org", &s.org_id, "--expires", &expires],
        b"",
    );
    let p = s.spawn();
    let expiring_key = expiring["key"].as_str().unwrap().to_string();
    let good = p.auth();
    let cases: Vec<(&str, String, String)> = vec![
        ("missing", String::new(), String::new()),
        (
            "empty bearer",
            "Authorization: Bearer \r\n".into(),
            String::new(),
        ),
        (
            "basic",
            format!("Authorization: Basic {}\r\n", p.key),
            String::new(),
        ),
        (
            "no scheme",
            format!("Authorization: {}\r\n", p.key),
            String::new(),
        ),
        (
            "unknown",
            format!("Authorization: Bearer {other}\r\n"),
            String::new(),
        ),
        (
            "not a sluice key",
            "Authorization: Bearer sk-proj-abc\r\n".into(),
            String::new(),
        ),
        (
            "revoked",
            format!("Authorization: Bearer {revoked_key}\r\n"),
            String::new(),
        ),
        ("two headers", format!("{good}{good}"), String::new()),
        (
            "x-api-key too",
            format!("{good}X-Api-Key: {}\r\n", p.key),
            String::new(),
        ),
        (
            "api-key only",
            format!("Api-Key: {}\r\n", p.key),
            String::new(),
        ),
        ("key in query", good.clone(), format!("?key={}", p.key)),
        (
            "api_key in query",
            String::new(),
            format!("?api_key={}", p.key),
        ),
        (
            "key in query, percent-encoded",
            good.clone(),
            format!("?x=%73{}", &p.key[1..]),
        ),
        (
            "key in query, encoded twice, after ;",
            good.clone(),
            format!("?a=1;x=%2573{}", &p.key[1..]),
        ),
        (
            "api_key written api%5Fkey",
            good.clone(),
            "?api%5Fkey=x".to_string(),
        ),
    ];
    // The expiring key has expired (a wait on the clock: the key is valid until then).
    let expires =
        time::OffsetDateTime::parse(&expires, &time::format_description::well_known::Rfc3339)
            .unwrap();
    eventually("the key's expiry", Duration::from_secs(3), || {
        time::OffsetDateTime::now_utc() > expires
    });
    let mut message = None;
    for (what, headers, query) in cases
        .iter()
        .map(|(w, h, q)| (*w, h.clone(), q.clone()))
        .chain([(
            "expired",
            format!("Authorization: Bearer {expiring_key}\r\n"),
            String::new(),
        )])
    {
        let r = raw(
            p.port,
            &post(&format!("/v1/chat/completions{query}"), b"{}", &headers),
        )
        .unwrap();
        assert_eq!(r.status, 401, "{what}: {}", r.body_text());
        assert_eq!(r.code(), "invalid_api_key", "{what}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"sluice\"")
        );
        assert_security_headers(&r);
        let m = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(!m.contains(&p.key) && !m.contains(&other), "{what}: {m}");
        // The same message whatever the reason: no enumeration of keys.
        assert_eq!(message.get_or_insert(m.clone()), &m, "{what}");
    }
    // GET routes are authenticated too.
    let r = http_get(p.port, "/v1/models").unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(up.connections(), 0, "the upstream was contacted");
    assert!(up.requests().is_empty());

    // The scheme is case-insensitive (RFC 9110), and a good key works.
    let r = raw(
        p.port,
        &post(
            "/v1/chat/completions",
            b"{}",
            &format!("authorization: bEaReR {}\r\n", p.key),
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    p.metrics_with(&[
        "sluice_auth_failures_total{reason=\"revoked\"} 1",
        "sluice_auth_failures_total{reason=\"expired\"} 1",
        "sluice_auth_failures_total{reason=\"ambiguous\"} 1",
        // Every case above: the three key-in-query spellings are misplaced keys too.
        "sluice_auth_failures_total{reason=\"misplaced\"} 7",
        "sluice_errors_total{code=\"invalid_api_key\"} 17",
    ]);
}

/// A key-shaped string no store knows.
fn generate_like_key() -> String {
    format!("sk-sluice-{}", "Q".repeat(43))
}

fn in_seconds(s: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(s))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[test]
fn the_upstream_gets_sluices_credential_and_never_the_apps_key_or_cookies() {
    let up = Upstream::start();
    let p = with_credential(&up, "");
    let r = raw(
        p.port,
        &p.post(
            "/v1/chat/completions",
            br#"{"model":"gpt-4o"}"#,
            "Cookie: session=app-cookie\r\nOpenAI-Organization: org-app\r\nX-Custom: kept\r\n",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    let got = &up.requests()[0];
    assert_eq!(
        got.header("authorization"),
        Some(format!("Bearer {PROVIDER_SECRET}").as_str())
    );
    assert_eq!(got.header("x-custom"), Some("kept"));
    for h in ["cookie", "openai-organization", "api-key", "x-api-key"] {
        assert_eq!(got.header(h), None, "{h} was forwarded");
    }
    let all: String = got
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect();
    assert!(!all.contains(&p.key), "the app's key reached the upstream");
    // The provider's secret never comes back to the client.
    assert!(!r.body_text().contains(PROVIDER_SECRET));
    assert!(!format!("{:?}", r.headers).contains(PROVIDER_SECRET));
}

#[test]
fn credential_header_and_prefix_are_configurable_per_upstream() {
    let up = Upstream::start();
    let p = with_credential(&up, "credential_header = \"api-key\"\n");
    let r = raw(p.port, &p.post("/v1/embeddings", b"{}", "")).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    let got = &up.requests()[0];
    assert_eq!(got.header("api-key"), Some(PROVIDER_SECRET));
    assert_eq!(got.header("authorization"), None);
}

#[test]
fn a_missing_credential_is_503_until_it_is_set_while_serving() {
    let up = Upstream::start();
    let p = Proxy::start_with(&mock_upstream(&up, "credential = \"mock-cred\"\n"), "");
    let r = raw(p.port, &p.post("/v1/chat/completions", b"{}", "")).unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.code(), "credential_unavailable");
    assert_eq!(up.connections(), 0);

    p.cli_json(
        &["credentials", "set", "mock-cred"],
        PROVIDER_SECRET.as_bytes(),
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = raw(p.port, &p.post("/v1/chat/completions", b"{}", "")).unwrap();
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "credential not picked up: {}",
            r.body_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        up.requests()[0].header("authorization"),
        Some(format!("Bearer {PROVIDER_SECRET}").as_str())
    );

    // Deleted: refused again, never sent without it.
    p.cli_json(&["credentials", "delete", "mock-cred"], b"");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = raw(p.port, &p.post("/v1/chat/completions", b"{}", "")).unwrap();
        if r.status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "deletion not picked up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_expired_credential_is_refused_rather_than_sent() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, "credential = \"mock-cred\"\n"), "");
    s.cli_json(
        &[
            "credentials",
            "set",
            "mock-cred",
            "--expires",
            &in_seconds(1),
        ],
        PROVIDER_SECRET.as_bytes(),
    );
    let p = s.spawn();
    eventually("the credential expired", Duration::from_secs(5), || {
        p.cli_json(&["credentials", "list"], b"")["credentials"][0]["expired"] == true
    });
    let r = raw(p.port, &p.post("/v1/chat/completions", b"{}", "")).unwrap();
    assert_eq!(r.status, 503, "{}", r.body_text());
    assert_eq!(r.code(), "credential_unavailable");
    assert!(up.requests().is_empty());
    let list = p.cli_json(&["credentials", "list"], b"");
    assert_eq!(list["credentials"][0]["expired"], true);
}

#[test]
fn a_key_revoked_with_the_cli_is_refused_within_a_second() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let r = raw(p.port, &p.post("/v1/embeddings", b"{}", "")).unwrap();
    assert_eq!(r.status, 200);
    let out = p.cli(&["keys", "revoke", &p.key_id], b"");
    assert!(out.status.success());
    let revoked_at = Instant::now();
    loop {
        let r = raw(p.port, &p.post("/v1/embeddings", b"{}", "")).unwrap();
        if r.status == 401 {
            break;
        }
        assert_eq!(r.status, 200);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "revoked key still accepted after 1 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = up.requests().len();
    let r = raw(p.port, &p.post("/v1/embeddings", b"{}", "")).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(up.requests().len(), before);
}

#[test]
fn rpm_limits_answer_429_with_retry_after() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let k = s.cli_json(&["keys", "create", "--org", &s.org_id, "--rpm", "3"], b"");
    let p = s.spawn();
    let hdr = format!("Authorization: Bearer {}\r\n", k["key"].as_str().unwrap());
    // Keep-alive: the 429 closes the connection, the others do not.
    let mut s = connect(p.port).unwrap();
    for _ in 0..3 {
        s.write_all(&post("/v1/embeddings", b"{}", &hdr)).unwrap();
        assert_eq!(read_response(&mut s).unwrap().status, 200);
    }
    s.write_all(&post("/v1/embeddings", b"{}", &hdr)).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 429, "{}", r.body_text());
    assert_eq!(r.code(), "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(up.requests().len(), 3);
    // Other keys are not affected.
    let r = raw(p.port, &p.post("/v1/embeddings", b"{}", "")).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn a_key_snapshot_that_cannot_be_refreshed_fails_closed_then_recovers() {
    let up = Upstream::start();
    // `[store]` is the last section the harness writes before `extra`.
    let p = Proxy::start(&up, "max_stale_secs = 2\n");
    let ok = || raw(p.port, &p.post("/v1/embeddings", b"{}", "")).unwrap();
    assert_eq!(ok().status, 200);
    // Break the store under the running sluice: every reload now fails.
    let db = rusqlite::Connection::open(p.db()).unwrap();
    db.execute_batch(
        "ALTER TABLE api_keys RENAME TO api_keys_gone;
         ALTER TABLE config_generation RENAME TO config_generation_gone;",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refused = loop {
        let r = ok();
        if r.status == 503 {
            break r;
        }
        assert_eq!(r.status, 200, "{}", r.body_text());
        assert!(
            std::time::Instant::now() < deadline,
            "a stale snapshot kept serving"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(refused.code(), "store_unavailable");
    let m = p.metrics();
    let age: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("sluice_snapshot_age_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(age >= 2.0, "{m}");
    assert_eq!(http_get(p.admin_port, "/readyz").unwrap().status, 503);
    let log = p.log();
    assert!(log.contains("cannot reload the key snapshot"), "{log}");
    assert!(
        log.matches("cannot reload the key snapshot").count() <= 2,
        "logged per poll: {log}"
    );
    let upstream_before = up.requests().len();
    assert_eq!(ok().status, 503);
    assert_eq!(
        up.requests().len(),
        upstream_before,
        "nothing forwarded while stale"
    );
    // Repaired: requests are served again.
    db.execute_batch(
        "ALTER TABLE api_keys_gone RENAME TO api_keys;
         ALTER TABLE config_generation_gone RENAME TO config_generation;",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ok().status != 200 {
        assert!(std::time::Instant::now() < deadline, "never recovered");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn request_traffic_does_not_rebuild_the_key_snapshot_but_a_key_change_does() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let reloads = |p: &Proxy| -> u64 {
        p.metrics()
            .lines()
            .find_map(|l| l.strip_prefix("sluice_snapshot_reloads_total "))
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = reloads(&p);
    // Requests are audited in batches every 100 ms: each batch commits to the store.
    let mut s = connect(p.port).unwrap();
    for _ in 0..30 {
        std::io::Write::write_all(&mut s, &p.post("/v1/embeddings", b"{}", "")).unwrap();
        assert_eq!(read_response(&mut s).unwrap().status, 200);
        std::thread::sleep(std::time::Duration::from_millis(15));
    }
    p.metrics_with(&["sluice_audit_records_total 30"]);
    // The watcher sees changes in commit order: once the key created after the batches has
    // reloaded the snapshot, any reload the batches caused would have happened too.
    p.cli_json(&["keys", "create", "--org", &p.org_id], b"");
    eventually(
        "a new key reloads the snapshot",
        std::time::Duration::from_secs(2),
        || reloads(&p) > before,
    );
    assert_eq!(
        reloads(&p),
        before + 1,
        "audit batches rebuilt the snapshot"
    );
}
