//! The GDPR hard delete: an org forgotten and its audit details shredded, through the API
//! and the CLI, while the audit chain still verifies.

use serde_json::{json, Value};

use super::admin::*;
use super::support::*;

#[test]
fn hard_delete_forgets_the_org_and_shreds_its_audit_details_while_the_chain_verifies() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let org = s.org_id.clone();
    let owner = add_user(&s, "owner@example.com", Some(&org), "owner");
    let keep = s.cli_json(&["orgs", "create", "keep"], b"")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let kept_key = s.cli_json(&["keys", "create", "--org", &keep], b"")["key"]
        .as_str()
        .unwrap()
        .to_string();
    let p = s.spawn();
    let t = login(&p, &owner, 0);
    // Personal data in the audit log: the user agents of a data-plane request and an admin call.
    let r = raw(
        p.port,
        &p.post(
            "/v1/chat/completions",
            b"{}",
            "User-Agent: shred-canary-dataplane/1.0\r\n",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let r = call(
        p.admin_port,
        "PATCH",
        &format!("/api/orgs/{org}"),
        Some(&t),
        Some(&json!({"region": "us"})),
        "User-Agent: shred-canary-admin/1.0\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let before = wait_for_audit(&p, &org, "shred-canary-dataplane");
    assert!(before.contains("shred-canary-admin"), "{before}");

    // Without ?hard=true nothing happens.
    let r = call(
        p.admin_port,
        "DELETE",
        &format!("/api/orgs/{org}"),
        Some(&t),
        None,
        "",
    );
    assert_eq!(r.code(), "hard_delete_required");
    let r = call(
        p.admin_port,
        "DELETE",
        &format!("/api/orgs/{org}?hard=true"),
        Some(&t),
        None,
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.json()["keys"], 1);
    assert_eq!(r.json()["users"], 1);

    // Gone: the key on the data plane, the owner's session, the org.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let r = raw(p.port, &p.post("/v1/chat/completions", b"{}", "")).unwrap();
        if r.status == 401 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "key still accepted");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        call(p.admin_port, "GET", "/api/auth/me", Some(&t), None, "").status,
        401
    );
    let orgs = p.cli_json(&["orgs", "list"], b"");
    assert_eq!(orgs["orgs"].as_array().unwrap().len(), 1);
    assert_eq!(
        p.cli_json(&["users", "list"], b"")["users"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // The other org is untouched.
    let r = raw(
        p.port,
        &post(
            "/v1/chat/completions",
            b"{}",
            &format!("Authorization: Bearer {kept_key}\r\n"),
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200);

    // The chain verifies; the org's records are still there but their details are shredded.
    let v = p.cli_json(&["audit", "verify"], b"");
    assert_eq!(v["ok"], true);
    let out = p.cli(&["audit", "tail", "--org", &org, "-n", "1000"], b"");
    let tail = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(tail.contains("\"shredded\""), "{tail}");
    assert!(tail.contains("org.delete"), "{tail}");
    assert!(!tail.contains("shred-canary"), "{tail}");
    let export = p.cli(&["audit", "export", "--decrypt"], b"");
    assert!(!String::from_utf8_lossy(&export.stdout).contains("shred-canary"));
    // ... and never stored in clear.
    let s = p.stop();
    assert_not_in_files(&s, &["shred-canary"]);
}

/// Poll `audit tail --org` until it contains `needle` (request records are written in batches).
fn wait_for_audit(p: &Proxy, org: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let out = p.cli(&["audit", "tail", "--org", org, "-n", "1000"], b"");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains(needle) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{needle} not in {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn the_cli_hard_delete_needs_hard_and_leaves_a_verifiable_chain() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let org = s.org_id.clone();
    let member = add_user(&s, "m@example.com", Some(&org), "member");
    // An admin record of the org with personal details (the member's email).
    let before = s.cli(&["audit", "tail", "--org", &org, "-n", "100"], b"");
    assert!(String::from_utf8_lossy(&before.stdout).contains("m@example.com"));

    let out = s.cli(&["orgs", "delete", &org], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--hard"));
    assert_eq!(
        s.cli_json(&["orgs", "list"], b"")["orgs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let d = s.cli_json(&["orgs", "delete", &org, "--hard"], b"");
    assert_eq!(
        (d["keys"].as_u64(), d["users"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(d["wal_purged"], true);
    assert_eq!(s.cli_json(&["audit", "verify"], b"")["ok"], true);
    let after = s.cli(&["audit", "tail", "--org", &org, "-n", "100"], b"");
    let after = String::from_utf8_lossy(&after.stdout).to_string();
    assert!(!after.contains("m@example.com"), "{after}");
    assert!(after.contains("shredded"), "{after}");
    // The final record says what happened, without personal data.
    let last: Value = serde_json::from_str(after.lines().last().unwrap()).unwrap();
    assert_eq!(last["action"], "org.delete");
    assert_eq!(last["details"]["hard"], true);
    assert!(last["source_ip"].is_null() && last["user_agent"].is_null());
    assert!(s.cli(&["users", "list", "--json"], b"").status.success());
    let out = s.cli(&["orgs", "delete", &org, "--hard"], b"");
    assert_eq!(out.status.code(), Some(1), "already gone");
    let _ = member;
    assert_not_in_files(&s, &["m@example.com"]);
}
