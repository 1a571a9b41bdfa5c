//! The admin plane: accounts, login, sessions, roles, the admin API and the GDPR hard delete.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sluice::admin::users::code_for_uri;

use super::support::*;

pub(crate) const PW: &str = "correct horse battery staple";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) email: String,
    pub(crate) otpauth: Option<String>,
    pub(crate) recovery: Vec<String>,
}

/// Create a user with the CLI (password on stdin); `org: None` makes an operator.
pub(crate) fn add_user(s: &Setup, email: &str, org: Option<&str>, role: &str) -> User {
    // The email as `--email` for operators, positional for the others: both are accepted.
    let mut args = vec!["users", "create"];
    match org {
        Some(o) => args.extend([email, "--org", o, "--role", role]),
        None => args.extend(["--email", email, "--operator"]),
    }
    let v = s.cli_json(&args, format!("{PW}\n").as_bytes());
    User {
        id: v["user"]["id"].as_str().unwrap().to_string(),
        email: email.to_string(),
        otpauth: v["totp"]["otpauth_uri"].as_str().map(String::from),
        recovery: v["totp"]["recovery_codes"]
            .as_array()
            .map(|a| a.iter().map(|c| c.as_str().unwrap().to_string()).collect())
            .unwrap_or_default(),
    }
}

/// One admin API call on a fresh connection.
pub(crate) fn call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    extra: &str,
) -> RawResponse {
    let b = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if body.is_some() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len()));
    raw(port, req.as_bytes()).unwrap()
}

pub(crate) fn login_body(u: &User, step: i64) -> Value {
    let mut b = json!({"email": u.email, "password": PW});
    if let Some(uri) = &u.otpauth {
        let at = (now() as i64 + step * 30) as u64;
        b["totp"] = code_for_uri(uri, at).unwrap().into();
    }
    b
}

/// Log in with the TOTP code of the time step `step` away from now (-1, 0 or 1: each step can
/// be used once per account).
pub(crate) fn login(p: &Proxy, u: &User, step: i64) -> String {
    let r = call(
        p.admin_port,
        "POST",
        "/api/auth/login",
        None,
        Some(&login_body(u, step)),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    r.json()["token"].as_str().unwrap().to_string()
}

fn without_request_id(mut v: Value) -> Value {
    v["error"]["request_id"] = Value::Null;
    v
}

#[test]
fn every_login_failure_is_the_same_401_and_second_factors_work_once() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let op = add_user(&s, "ops@example.com", None, "");
    assert!(op.otpauth.is_some(), "operators always get TOTP");
    assert_eq!(op.recovery.len(), 10);
    let p = s.spawn();
    let port = p.admin_port;

    // Codes are computed right before use: a 30 s boundary between computing a code and the
    // server checking it would otherwise make the test flaky.
    let good = login_body(&op, 0);
    let cases = [
        json!({"email": "nobody@example.com", "password": PW, "totp": good["totp"]}),
        json!({"email": op.email, "password": "wrong password here", "totp": good["totp"]}),
        json!({"email": op.email, "password": PW}),
        json!({"email": op.email, "password": PW, "totp": "000000"}),
        json!({"email": op.email, "password": PW, "recovery_code": "aaaa-bbbb-cccc-dddd-eeee"}),
    ];
    let mut bodies = Vec::new();
    for c in &cases {
        let r = call(port, "POST", "/api/auth/login", None, Some(c), "");
        assert_eq!(r.status, 401, "{c}: {}", r.body_text());
        assert_eq!(r.code(), "invalid_credentials");
        assert!(r.header("www-authenticate").is_some());
        assert_security_headers(&r);
        bodies.push(without_request_id(r.json()));
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");

    // A TOTP code works once (sent as a number here: leading zeros are restored).
    let mut good = login_body(&op, 0);
    good["totp"] = good["totp"]
        .as_str()
        .unwrap()
        .parse::<u32>()
        .unwrap()
        .into();
    let r = call(port, "POST", "/api/auth/login", None, Some(&good), "");
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.json()["user"]["email"], op.email);
    let r = call(port, "POST", "/api/auth/login", None, Some(&good), "");
    assert_eq!(r.code(), "invalid_credentials", "replayed TOTP code");

    // A recovery code works once, typed in any case and with or without dashes.
    let rc = json!({"email": op.email, "password": PW,
                    "recovery_code": op.recovery[0].to_uppercase().replace('-', "")});
    assert_eq!(
        call(port, "POST", "/api/auth/login", None, Some(&rc), "").status,
        200
    );
    assert_eq!(
        call(port, "POST", "/api/auth/login", None, Some(&rc), "").code(),
        "invalid_credentials"
    );
    let users = s_json(&p, &["users", "list"]);
    assert_eq!(users["users"][0]["recovery_codes_left"], 9);

    // Failures are in the audit log with their reason; the client never saw it.
    let r = call(
        port,
        "GET",
        "/api/audit?action=auth.login",
        Some(&login(&p, &op, 1)),
        None,
        "",
    );
    let reasons: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{}:{}",
                a["outcome"].as_str().unwrap(),
                a["details"]["reason"].as_str().unwrap_or("")
            )
        })
        .collect();
    for want in [
        "failure:unknown_user",
        "failure:wrong_password",
        "failure:second_factor_missing",
        "failure:wrong_second_factor",
        "success:",
    ] {
        assert!(reasons.iter().any(|r| r == want), "{want} in {reasons:?}");
    }
}

fn s_json(p: &Proxy, args: &[&str]) -> Value {
    p.cli_json(args, b"")
}

#[test]
fn failed_logins_are_throttled_per_account_and_per_ip() {
    let up = Upstream::start();
    let s = Setup::new(
        &mock_upstream(&up, ""),
        "[admin]\nlogin_failures_per_account = 3\nlogin_failures_per_ip = 5\n",
    );
    let member = add_user(&s, "m@example.com", Some(&s.org_id.clone()), "member");
    let p = s.spawn();
    let bad = json!({"email": "M@example.com", "password": "not the password"});
    for _ in 0..3 {
        let r = call(
            p.admin_port,
            "POST",
            "/api/auth/login",
            None,
            Some(&bad),
            "",
        );
        assert_eq!(r.status, 401);
    }
    // Now even the right password waits: the account is throttled, from any IP.
    let r = call(
        p.admin_port,
        "POST",
        "/api/auth/login",
        None,
        Some(&login_body(&member, 0)),
        "",
    );
    assert_eq!(r.status, 429, "{}", r.body_text());
    assert_eq!(r.code(), "rate_limited");
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    // Per IP: two more failures on other (unknown) accounts use up this source's budget.
    for e in ["x@example.com", "y@example.com"] {
        let b = json!({"email": e, "password": "not the password"});
        assert_eq!(
            call(p.admin_port, "POST", "/api/auth/login", None, Some(&b), "").status,
            401
        );
    }
    let b = json!({"email": "z@example.com", "password": "not the password"});
    assert_eq!(
        call(p.admin_port, "POST", "/api/auth/login", None, Some(&b), "").status,
        429
    );
    p.metrics_with(&[
        "sluice_admin_logins_total{outcome=\"throttled\"} 2",
        "sluice_admin_logins_total{outcome=\"wrong_password\"} 3",
        "sluice_admin_logins_total{outcome=\"unknown_user\"} 2",
        "sluice_admin_requests_total{method=\"POST\",status=\"429\"} 2",
    ]);
}

#[test]
fn parallel_bursts_and_respellings_cannot_beat_the_account_throttle() {
    let up = Upstream::start();
    let s = Setup::new(
        &mock_upstream(&up, ""),
        "[admin]\nlogin_failures_per_account = 5\nlogin_failures_per_ip = 1000\n",
    );
    add_user(&s, "victim@example.com", Some(&s.org_id.clone()), "member");
    let p = s.spawn();
    // 30 wrong-password attempts at once: the slot is taken before bcrypt, so at most the
    // limit get past the throttle.
    let port = p.admin_port;
    let burst: Vec<_> = (0..30)
        .map(|_| {
            std::thread::spawn(move || {
                let b = json!({"email": "victim@example.com", "password": "not the password"});
                call(port, "POST", "/api/auth/login", None, Some(&b), "").status
            })
        })
        .collect();
    let statuses: Vec<u16> = burst.into_iter().map(|t| t.join().unwrap()).collect();
    let passed = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        passed <= 5,
        "{passed} attempts got past a limit of 5: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 30 - passed);

    // Another spelling of the same account is the same account.
    for spelling in [
        " victim@example.com",
        "victim@example.com ",
        "\tVICTIM@Example.com\n",
        "Victim@Example.Com",
    ] {
        let b = json!({"email": spelling, "password": "not the password"});
        let r = call(port, "POST", "/api/auth/login", None, Some(&b), "");
        assert_eq!(
            r.status,
            429,
            "{spelling:?} dodged the throttle: {}",
            r.body_text()
        );
    }
}

#[test]
fn sessions_follow_membership_role_password_and_revocation_at_once() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let org = s.org_id.clone();
    let m = add_user(&s, "member@example.com", Some(&org), "member");
    assert!(m.otpauth.is_none(), "TOTP is optional for members");
    let p = s.spawn();
    let port = p.admin_port;
    let keys = format!("/api/orgs/{org}/keys");
    let token = login(&p, &m, 0);
    let get = |t: &str| call(port, "GET", &keys, Some(t), None, "");

    assert_eq!(get(&token).code(), "permission_denied");
    p.cli_json(&["users", "update", &m.id, "--role", "auditor"], b"");
    assert_eq!(
        get(&token).status,
        200,
        "promotion effective on the next request"
    );
    p.cli_json(&["users", "update", &m.id, "--role", "member"], b"");
    assert_eq!(get(&token).code(), "permission_denied", "downgrade too");

    // A new password revokes every earlier session.
    let me = call(port, "GET", "/api/auth/me", Some(&token), None, "");
    assert_eq!(me.json()["role"], "member");
    let out = p.cli(
        &["users", "set-password", &m.id],
        b"another long password\n",
    );
    assert!(out.status.success());
    let r = call(port, "GET", "/api/auth/me", Some(&token), None, "");
    assert_eq!((r.status, r.code()), (401, "invalid_token".to_string()));

    // revoke-sessions, through the API this time (the user's own logout).
    let b = json!({"email": m.email, "password": "another long password"});
    let t2 = call(port, "POST", "/api/auth/login", None, Some(&b), "").json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        call(port, "GET", "/api/auth/me", Some(&t2), None, "").status,
        200
    );
    assert_eq!(
        call(port, "POST", "/api/auth/logout", Some(&t2), None, "").status,
        200
    );
    assert_eq!(
        call(port, "GET", "/api/auth/me", Some(&t2), None, "").status,
        401
    );

    // Removing the user: the next request is refused.
    let t3 = call(port, "POST", "/api/auth/login", None, Some(&b), "").json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    p.cli_json(&["users", "delete", &m.id], b"");
    assert_eq!(
        call(port, "GET", "/api/auth/me", Some(&t3), None, "").status,
        401
    );

    // Forged and foreign tokens.
    for bad in [
        "not-a-jwt",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        &t3[..t3.len() - 2],
    ] {
        let r = call(port, "GET", "/api/auth/me", Some(bad), None, "");
        assert_eq!(r.code(), "invalid_token", "{bad}");
    }
    assert_eq!(
        call(port, "GET", "/api/auth/me", None, None, "").status,
        401
    );
}

#[test]
fn a_token_signed_with_another_secret_is_refused() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let m = add_user(&s, "m@example.com", Some(&s.org_id.clone()), "member");
    let p = s.spawn();
    let token = login(&p, &m, 0);
    let s = p.stop();
    let p = s.spawn_env(&[
        ("SLUICE_SECRETS_KEY", MASTER_KEY),
        (
            "SLUICE_JWT_SECRET",
            "a-completely-different-secret-of-enough-length",
        ),
    ]);
    let r = call(p.admin_port, "GET", "/api/auth/me", Some(&token), None, "");
    assert_eq!(r.code(), "invalid_token");
}

#[test]
fn every_endpoint_checks_the_callers_role() {
    use sluice::admin::api::{Access, ROUTES};
    use sluice::admin::users::Role;
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let org = s.org_id.clone();
    let other = s.cli_json(&["orgs", "create", "other"], b"")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let people = [
        ("operator", add_user(&s, "op@example.com", None, "")),
        (
            "owner",
            add_user(&s, "owner@example.com", Some(&org), "owner"),
        ),
        (
            "admin",
            add_user(&s, "admin@example.com", Some(&org), "admin"),
        ),
        (
            "auditor",
            add_user(&s, "aud@example.com", Some(&org), "auditor"),
        ),
        (
            "member",
            add_user(&s, "mem@example.com", Some(&org), "member"),
        ),
        (
            "stranger",
            add_user(&s, "x@example.com", Some(&other), "owner"),
        ),
    ];
    let p = s.spawn();
    let tokens: Vec<(&str, String)> = people.iter().map(|(r, u)| (*r, login(&p, u, 0))).collect();
    // The declarations that matter most, pinned: a table edit that opens them fails here.
    let access = |m: &str, pattern: &str| {
        ROUTES
            .iter()
            .find(|r| r.method == m && r.pattern == pattern)
            .unwrap_or_else(|| panic!("{m} {pattern}"))
            .access
    };
    assert_eq!(access("POST", "/api/orgs"), Access::Operator);
    assert_eq!(
        access("DELETE", "/api/orgs/{org_id}"),
        Access::Org(Role::Owner)
    );
    assert_eq!(
        access("GET", "/api/orgs/{org_id}/users"),
        Access::Org(Role::Admin)
    );
    assert_eq!(
        access("GET", "/api/orgs/{org_id}/keys"),
        Access::Org(Role::Auditor)
    );
    assert_eq!(access("GET", "/api/audit"), Access::QueryOrg(Role::Auditor));
    for m in ["GET", "PUT", "DELETE"] {
        let pattern = if m == "GET" {
            "/api/credentials"
        } else {
            "/api/credentials/{name}"
        };
        assert_eq!(access(m, pattern), Access::Operator);
    }
    // Who each declaration admits, in this test's own words.
    let rank = |r: &str| match r {
        "member" => 0,
        "auditor" => 1,
        "admin" => 2,
        "owner" => 3,
        _ => panic!("{r}"),
    };
    let admits = |a: Access, who: &str| match a {
        Access::Public | Access::User => true,
        Access::Operator => who == "operator",
        Access::Org(least) | Access::QueryOrg(least) => {
            who == "operator" || (who != "stranger" && rank(who) >= rank(least.as_str()))
        }
    };
    let nobody = "00000000-0000-0000-0000-000000000000";
    let doc = call(p.admin_port, "GET", "/api/openapi.json", None, None, "").json();
    // Every route of the table, logout last (it ends the caller's session). Bodies and ids are
    // chosen so that an allowed call fails harmlessly after the role check (400/404) or
    // succeeds without side effects that matter here.
    let mut routes: Vec<_> = ROUTES.iter().collect();
    routes.sort_by_key(|r| r.pattern == "/api/auth/logout");
    let mut calls = 0;
    for route in routes {
        let mut path = route
            .pattern
            .replace("{org_id}", &org)
            .replace("{key_id}", "nope")
            .replace("{user_id}", nobody)
            .replace("{name}", "rbac");
        if matches!(route.access, Access::QueryOrg(_)) {
            path.push_str(&format!("?org_id={org}"));
        }
        let body = route.body.map(|_| json!({}));
        if route.access != Access::Public {
            let r = call(p.admin_port, route.method, &path, None, body.as_ref(), "");
            assert_eq!(
                (r.status, r.code()),
                (401, "invalid_token".to_string()),
                "no token: {} {path}",
                route.method
            );
        }
        for (who, token) in &tokens {
            let r = call(
                p.admin_port,
                route.method,
                &path,
                Some(token),
                body.as_ref(),
                "",
            );
            calls += 1;
            if r.status < 300 {
                assert_documented(&doc, route.method, route.pattern, r.status, &r.json());
            }
            if admits(route.access, who) {
                // Past the role check: the handler answered (not the router's 404 or 405).
                assert!(
                    ![401, 403, 405].contains(&r.status)
                        && r.status < 500
                        && !r.body_text().contains("No such route"),
                    "{who} {} {path}: {} {}",
                    route.method,
                    r.status,
                    r.body_text()
                );
            } else {
                assert_eq!(
                    (r.status, r.code()),
                    (403, "permission_denied".to_string()),
                    "{who} {} {path}",
                    route.method
                );
            }
        }
    }
    assert!(calls >= 25 * tokens.len(), "{calls}");
    // Another org's audit log: its own owner, and operators.
    let tokens: Vec<(&str, String)> = people.iter().map(|(r, u)| (*r, login(&p, u, 1))).collect();
    for (who, token) in &tokens {
        let r = call(
            p.admin_port,
            "GET",
            &format!("/api/audit?org_id={other}"),
            Some(token),
            None,
            "",
        );
        let allowed = ["operator", "stranger"].contains(who);
        assert_eq!(r.status == 200, allowed, "{who}: {}", r.body_text());
        if !allowed {
            assert_eq!(r.code(), "permission_denied");
        }
    }
    let o = format!("/api/orgs/{org}");
    // Admins manage people but not owners.
    let admin = &tokens[2].1;
    let owner_id = &people[1].1.id;
    let r = call(
        p.admin_port,
        "DELETE",
        &format!("{o}/users/{owner_id}"),
        Some(admin),
        None,
        "",
    );
    assert_eq!(r.code(), "permission_denied");
    let r = call(
        p.admin_port,
        "POST",
        &format!("{o}/users"),
        Some(admin),
        Some(&json!({"email": "n@example.com", "password": PW, "role": "owner"})),
        "",
    );
    assert_eq!(r.code(), "permission_denied");
    // Every route is in the OpenAPI document, which is served.
    let doc = call(p.admin_port, "GET", "/api/openapi.json", None, None, "").json();
    assert!(doc["paths"]["/api/orgs/{org_id}/users/{user_id}"]["patch"].is_object());
}

#[test]
fn the_admin_api_is_closed_to_sources_outside_the_allowlist_and_bounded() {
    let up = Upstream::start();
    let s = Setup::new(
        &mock_upstream(&up, ""),
        "[admin]\nallow_ips = [\"10.0.0.0/8\"]\n",
    );
    let p = s.spawn();
    for path in ["/api/auth/login", "/api/openapi.json", "/api/orgs"] {
        let r = call(p.admin_port, "POST", path, None, Some(&json!({})), "");
        assert_eq!(
            (r.status, r.code()),
            (403, "ip_not_allowed".to_string()),
            "{path}"
        );
        assert_security_headers(&r);
    }
    assert_eq!(http_get(p.admin_port, "/healthz").unwrap().status, 200);
    drop(p);

    let s = Setup::new(&mock_upstream(&up, ""), "[admin]\nmax_body_bytes = 2048\n");
    let p = s.spawn();
    let big = json!({"email": "a@example.com", "password": "x".repeat(4000)});
    let r = call(
        p.admin_port,
        "POST",
        "/api/auth/login",
        None,
        Some(&big),
        "",
    );
    assert_eq!((r.status, r.code()), (413, "request_too_large".to_string()));
    let r = raw(
        p.admin_port,
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",
    )
    .unwrap();
    assert_eq!(r.code(), "unsupported_media_type");
    let r = call(
        p.admin_port,
        "GET",
        "/api/nope",
        None,
        None,
        "X-Request-Id: adm-1\r\n",
    );
    assert_eq!(r.status, 401, "unknown routes need a session too");
    assert_eq!(r.header("x-request-id"), Some("adm-1"));
}

#[test]
fn without_a_jwt_secret_the_api_is_disabled_and_a_short_one_refuses_to_start() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let p = s.spawn_env(&[("SLUICE_SECRETS_KEY", MASTER_KEY)]);
    let r = call(
        p.admin_port,
        "POST",
        "/api/auth/login",
        None,
        Some(&json!({"email": "a@example.com", "password": PW})),
        "",
    );
    assert_eq!(
        (r.status, r.code()),
        (503, "admin_api_disabled".to_string())
    );
    assert!(p.log().contains("SLUICE_JWT_SECRET"));
    let s = p.stop();
    let out = s
        .serve_command(
            &[],
            &[
                ("SLUICE_SECRETS_KEY", MASTER_KEY),
                ("SLUICE_JWT_SECRET", "too-short"),
            ],
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log = std::fs::read_to_string(s.dir.path().join("sluice.log")).unwrap();
    assert!(log.contains("at least 32 bytes"), "{log}");
    assert!(!log.contains("too-short"), "{log}");
}

#[test]
fn mutations_are_audited_with_actor_ip_user_agent_and_request_id_and_paginated() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let org = s.org_id.clone();
    let admin = add_user(&s, "admin@example.com", Some(&org), "admin");
    let p = s.spawn();
    let t = login(&p, &admin, 0);
    let mut keys = Vec::new();
    for i in 0..3 {
        let r = call(
            p.admin_port,
            "POST",
            &format!("/api/orgs/{org}/keys"),
            Some(&t),
            Some(&json!({"name": format!("k{i}"), "rpm": 60})),
            &format!("User-Agent: audit-canary-agent/{i}\r\nX-Request-Id: req-key-{i}\r\n"),
        );
        assert_eq!(r.status, 201, "{}", r.body_text());
        let key = r.json()["key"].as_str().unwrap().to_string();
        // The new key works on the data plane as soon as the API has answered.
        let dp = raw(
            p.port,
            &post(
                "/v1/chat/completions",
                b"{}",
                &format!("Authorization: Bearer {key}\r\n"),
            ),
        )
        .unwrap();
        assert_eq!(dp.status, 200, "{}", dp.body_text());
        keys.push((r.json()["id"].as_str().unwrap().to_string(), key));
    }
    // ... and a key revoked through the API is refused as soon as the API has answered.
    let (kid, key) = &keys[0];
    let r = call(
        p.admin_port,
        "DELETE",
        &format!("/api/orgs/{org}/keys/{kid}"),
        Some(&t),
        None,
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let dp = raw(
        p.port,
        &post(
            "/v1/chat/completions",
            b"{}",
            &format!("Authorization: Bearer {key}\r\n"),
        ),
    )
    .unwrap();
    assert_eq!(dp.status, 401);
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let r = call(
            p.admin_port,
            "GET",
            &format!(
                "/api/audit?action=key.create&actor=user:{}&outcome=success&limit=1&cursor={cursor}",
                admin.id
            ),
            Some(&t),
            None,
            "",
        );
        assert_eq!(r.status, 200, "{}", r.body_text());
        let v = r.json();
        seen.extend(v["data"].as_array().unwrap().clone());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    // The three API calls (not the CLI's key creation of the test setup: another actor).
    let api: Vec<&Value> = seen.iter().collect();
    assert_eq!(api.len(), 3, "{seen:?}");
    assert!(api
        .iter()
        .all(|a| a["actor"] == format!("user:{}", admin.id)));
    for (i, a) in api.iter().enumerate() {
        assert_eq!(a["source_ip"], "127.0.0.1");
        assert_eq!(a["user_agent"], format!("audit-canary-agent/{i}"));
        assert_eq!(a["request_id"], format!("req-key-{i}"));
        assert_eq!(a["org_id"], org.as_str());
        assert_eq!(a["details"]["name"], format!("k{i}"));
    }
    // Stored sealed: the user agent is nowhere in the database in clear.
    let s = p.stop();
    assert_not_in_files(&s, &["audit-canary-agent"]);
}

/// Check a successful admin API answer against the OpenAPI document the server serves: the
/// status is the documented one, and every object has exactly the documented fields (all of
/// them but those a credential or its OAuth settings leave out when they do not apply), nested objects included.
fn assert_documented(doc: &Value, method: &str, pattern: &str, status: u16, body: &Value) {
    let op = &doc["paths"][pattern][method.to_ascii_lowercase()];
    let ok = &op["responses"][status.to_string()];
    assert!(
        ok.is_object(),
        "{method} {pattern}: status {status} not documented"
    );
    let schema = &ok["content"]["application/json"]["schema"];
    check_against(doc, schema, body, &format!("{method} {pattern}"));
}

fn check_against(doc: &Value, schema: &Value, v: &Value, at: &str) {
    let (schema, name) = match schema["$ref"].as_str() {
        Some(r) => (
            doc.pointer(r.trim_start_matches('#')).unwrap(),
            r.rsplit('/').next().unwrap(),
        ),
        None => (schema, ""),
    };
    if v.is_null() {
        return;
    }
    if schema["type"] == "array" {
        for item in v
            .as_array()
            .unwrap_or_else(|| panic!("{at}: not an array: {v}"))
        {
            check_against(doc, &schema["items"], item, at);
        }
        return;
    }
    let Some(props) = schema["properties"].as_object() else {
        return; // a free-form object
    };
    let Some(obj) = v.as_object() else {
        return; // a scalar field documented loosely
    };
    for (k, x) in obj {
        let p = props
            .get(k)
            .unwrap_or_else(|| panic!("{at}: field {k} of {name} is not documented"));
        check_against(doc, p, x, &format!("{at}.{k}"));
    }
    // These two leave out the fields that do not apply (an OAuth scope not set, say).
    if !["Credential", "OAuthSettings"].contains(&name) {
        for k in props.keys() {
            assert!(
                obj.contains_key(k),
                "{at}: documented field {k} of {name} is missing"
            );
        }
    }
}

/// Whether `path` (query ignored) fits a route pattern with `{x}` segments.
fn route_matches(pattern: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap();
    let (a, b): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.starts_with('{') || x == y)
}

/// The same action through the CLI and the admin API leaves the same audit details (only the
/// names, emails and key prefixes chosen differ).
#[test]
fn the_cli_and_the_api_write_the_same_audit_details_for_each_shared_action() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let org = s.org_id.clone();
    let op = add_user(&s, "op@example.com", None, "");
    let p = s.spawn();
    let t = login(&p, &op, 0);
    let doc = call(p.admin_port, "GET", "/api/openapi.json", None, None, "").json();
    let api = |method: &str, path: &str, body: Option<Value>| {
        let r = call(p.admin_port, method, path, Some(&t), body.as_ref(), "");
        assert!(r.status < 300, "{method} {path}: {}", r.body_text());
        // Every answer is as documented.
        let pattern = sluice::admin::api::ROUTES
            .iter()
            .find(|rt| rt.method == method && route_matches(rt.pattern, path))
            .unwrap_or_else(|| panic!("no route for {method} {path}"))
            .pattern;
        assert_documented(&doc, method, pattern, r.status, &r.json());
        r.json()
    };
    let cli = |args: &[&str], stdin: &[u8]| p.cli_json(args, stdin);
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let pw = format!("{PW}\n");
    // (action, target of the CLI's record, target of the API's)
    let mut pairs: Vec<(&str, String, String)> = Vec::new();

    let c_org = id(&cli(
        &[
            "orgs", "create", "cli-org", "--region", "eu", "--pii", "on", "--rpm", "60",
        ],
        b"",
    ));
    let a_org = id(&api(
        "POST",
        "/api/orgs",
        Some(json!({"name": "api-org", "region": "eu", "pii": "on", "rpm": 60})),
    ));
    pairs.push(("org.create", c_org.clone(), a_org.clone()));
    cli(
        &[
            "orgs",
            "update",
            &c_org,
            "--secrets",
            "off",
            "--tpm",
            "1000",
        ],
        b"",
    );
    api(
        "PATCH",
        &format!("/api/orgs/{a_org}"),
        Some(json!({"secrets": "off", "tpm": 1000})),
    );
    pairs.push(("org.update", c_org.clone(), a_org.clone()));

    let expires = "2031-01-01T00:00:00Z";
    let c_key = id(&cli(
        &[
            "keys",
            "create",
            "--org",
            &org,
            "--name",
            "cli-key",
            "--pii",
            "off",
            "--region",
            "us",
            "--expires",
            expires,
        ],
        b"",
    ));
    let a_key = id(&api(
        "POST",
        &format!("/api/orgs/{org}/keys"),
        Some(json!({"name": "api-key", "pii": "off", "region": "us", "expires_at": expires})),
    ));
    pairs.push(("key.create", c_key.clone(), a_key.clone()));
    cli(
        &["keys", "update", &c_key, "--secrets", "on", "--rpm", "5"],
        b"",
    );
    api(
        "PATCH",
        &format!("/api/orgs/{org}/keys/{a_key}"),
        Some(json!({"secrets": "on", "rpm": 5})),
    );
    pairs.push(("key.update", c_key.clone(), a_key.clone()));
    cli(&["keys", "revoke", &c_key], b"");
    api("DELETE", &format!("/api/orgs/{org}/keys/{a_key}"), None);
    pairs.push(("key.revoke", c_key, a_key));

    let c_user = id(&cli(
        &[
            "users",
            "create",
            "cli@example.com",
            "--org",
            &org,
            "--role",
            "member",
        ],
        pw.as_bytes(),
    )["user"]);
    let a_user = id(&api(
        "POST",
        &format!("/api/orgs/{org}/users"),
        Some(json!({"email": "api@example.com", "password": PW, "role": "member"})),
    )["user"]);
    pairs.push(("user.create", c_user.clone(), a_user.clone()));
    cli(&["users", "update", &c_user, "--role", "auditor"], b"");
    api(
        "PATCH",
        &format!("/api/orgs/{org}/users/{a_user}"),
        Some(json!({"role": "auditor"})),
    );
    pairs.push(("user.update", c_user.clone(), a_user.clone()));
    cli(&["users", "revoke-sessions", &c_user], b"");
    api(
        "POST",
        &format!("/api/orgs/{org}/users/{a_user}/revoke-sessions"),
        None,
    );
    pairs.push(("user.revoke_sessions", c_user.clone(), a_user.clone()));
    cli(&["users", "delete", &c_user], b"");
    api("DELETE", &format!("/api/orgs/{org}/users/{a_user}"), None);
    pairs.push(("user.delete", c_user, a_user));

    cli(
        &["credentials", "set", "cli-cred", "--expires", expires],
        b"sk-parity-secret-1",
    );
    api(
        "PUT",
        "/api/credentials/api-cred",
        Some(json!({"secret": "sk-parity-secret-1", "expires_at": expires})),
    );
    pairs.push(("credential.set", "cli-cred".into(), "api-cred".into()));
    cli(
        &[
            "credentials",
            "set-oauth",
            "cli-oauth",
            "--token-url",
            "https://auth.example.com/token",
            "--client-id",
            "c1",
            "--scope",
            "read",
            "--no-verify",
        ],
        b"client-secret-1",
    );
    api(
        "PUT",
        "/api/credentials/api-oauth",
        Some(
            json!({"secret": "client-secret-1", "verify": false, "oauth": {
            "token_url": "https://auth.example.com/token", "client_id": "c1",
            "scope": "read", "grant": "client_credentials"}}),
        ),
    );
    pairs.push((
        "credential.set_oauth",
        "cli-oauth".into(),
        "api-oauth".into(),
    ));
    cli(&["credentials", "delete", "cli-cred"], b"");
    api("DELETE", "/api/credentials/api-cred", None);
    pairs.push(("credential.delete", "cli-cred".into(), "api-cred".into()));

    cli(&["orgs", "delete", &c_org, "--hard"], b"");
    api("DELETE", &format!("/api/orgs/{a_org}?hard=true"), None);
    pairs.push(("org.delete", c_org, a_org));

    let records = audit_records(&p);
    let find = |action: &str, target: &str, cli_actor: bool| {
        let found: Vec<&Value> = records
            .iter()
            .filter(|r| {
                r["action"] == action
                    && r["target_id"] == target
                    && r["actor"].as_str().unwrap().starts_with("cli:") == cli_actor
            })
            .collect();
        assert_eq!(found.len(), 1, "{action} {target}: {found:?}");
        found[0].clone()
    };
    let normalised = |mut d: Value| {
        for field in ["name", "email", "prefix"] {
            if d.get(field).is_some_and(|v| !v.is_null()) {
                d[field] = "*".into();
            }
        }
        d
    };
    let mut compared = Vec::new();
    for (action, c, a) in &pairs {
        let (rc, ra) = (find(action, c, true), find(action, a, false));
        assert_eq!(rc["outcome"], "success", "{rc}");
        assert_eq!(rc["kind"], ra["kind"], "{action}");
        assert_eq!(
            normalised(rc["details"].clone()),
            normalised(ra["details"].clone()),
            "{action}: the CLI's details differ from the API's"
        );
        compared.push(*action);
    }
    assert_eq!(compared.len(), 13);
}

#[test]
fn passwords_totp_seeds_recovery_codes_tokens_and_the_jwt_secret_never_leak() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "[log]\nlevel = \"debug\"\n");
    let op = add_user(&s, "op@example.com", None, "");
    let uri = op.otpauth.clone().unwrap();
    let seed = uri
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("secret="))
        .unwrap()
        .to_string();
    let p = s.spawn();
    let wrong = "wrong-password-canary-42";
    let r = call(
        p.admin_port,
        "POST",
        "/api/auth/login",
        None,
        Some(&json!({"email": op.email, "password": wrong})),
        "",
    );
    assert_eq!(r.status, 401);
    assert!(!r.body_text().contains(wrong));
    let token = login(&p, &op, 0);
    let new_pw = "new-password-canary-4242";
    let r = call(
        p.admin_port,
        "POST",
        "/api/auth/password",
        Some(&token),
        Some(&json!({"current_password": PW, "new_password": new_pw})),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let new_token = r.json()["token"].as_str().unwrap().to_string();
    let rc = json!({"email": op.email, "password": new_pw, "recovery_code": op.recovery[1]});
    assert_eq!(
        call(p.admin_port, "POST", "/api/auth/login", None, Some(&rc), "").status,
        200
    );
    let audit = call(
        p.admin_port,
        "GET",
        "/api/audit",
        Some(&new_token),
        None,
        "",
    )
    .body_text();
    let export =
        String::from_utf8_lossy(&p.cli(&["audit", "export", "--decrypt"], b"").stdout).to_string();
    let users = p.cli(&["users", "list", "--json"], b"");
    let s = p.stop();
    let mut needles: Vec<&str> = vec![PW, wrong, new_pw, &seed, JWT_SECRET, &token, &new_token];
    needles.extend(op.recovery.iter().map(String::as_str));
    assert_not_in_files(&s, &needles);
    for text in [
        &audit,
        &export,
        &String::from_utf8_lossy(&users.stdout).to_string(),
    ] {
        for n in &needles {
            assert!(!text.contains(n), "{n} leaked: {text}");
        }
    }
}

#[test]
fn secrets_and_response_redaction_policies_are_set_through_the_api() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let op = add_user(&s, "op@example.com", None, "");
    let p = s.spawn();
    let t = login(&p, &op, 0);
    let r = call(
        p.admin_port,
        "POST",
        "/api/orgs",
        Some(&t),
        Some(&json!({"name": "acme", "response_redaction": "on"})),
        "",
    );
    assert_eq!(r.status, 201, "{}", r.body_text());
    let org = r.json();
    assert_eq!(
        (
            org["pii"].as_str(),
            org["secrets"].as_str(),
            org["response_redaction"].as_str()
        ),
        (Some("on"), Some("on"), Some("on"))
    );
    let id = org["id"].as_str().unwrap().to_string();
    let r = call(
        p.admin_port,
        "PATCH",
        &format!("/api/orgs/{id}"),
        Some(&t),
        Some(&json!({"secrets": "off"})),
        "",
    );
    assert_eq!(r.json()["secrets"], "off");
    let r = call(
        p.admin_port,
        "POST",
        &format!("/api/orgs/{id}/keys"),
        Some(&t),
        Some(&json!({"name": "k", "secrets": "on", "response_redaction": "off"})),
        "",
    );
    assert_eq!(r.status, 201, "{}", r.body_text());
    let keys = call(
        p.admin_port,
        "GET",
        &format!("/api/orgs/{id}/keys"),
        Some(&t),
        None,
        "",
    )
    .json();
    assert_eq!(keys["data"][0]["secrets"], "on");
    assert_eq!(keys["data"][0]["response_redaction"], "off");
    for bad in [
        json!({"secrets": "maybe"}),
        json!({"response_redaction": "inherit"}),
    ] {
        let r = call(
            p.admin_port,
            "PATCH",
            &format!("/api/orgs/{id}"),
            Some(&t),
            Some(&bad),
            "",
        );
        assert_eq!((r.status, r.code().as_str()), (400, "invalid_request"));
    }
    // The CLI and the API write the same audit details for org.create.
    let cli = p.cli_json(
        &["orgs", "create", "beta", "--response-redaction", "on"],
        b"",
    );
    let audit = call(
        p.admin_port,
        "GET",
        "/api/audit?action=org.create&limit=1000",
        Some(&t),
        None,
        "",
    )
    .json();
    let details: Vec<&Value> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["target_id"] == org["id"] || r["target_id"] == cli["id"])
        .map(|r| &r["details"])
        .collect();
    assert_eq!(details.len(), 2);
    let keys_of = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys_of(details[0]), keys_of(details[1]));
    assert_eq!(details[1]["response_redaction"], "on");
}

#[test]
fn re_enrolling_totp_needs_the_current_second_factor_not_just_the_password() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let op = add_user(&s, "op@example.com", None, "");
    let member = add_user(&s, "m@example.com", Some(&s.org_id.clone()), "member");
    let p = s.spawn();
    let token = login(&p, &op, 0);
    let enrol = |body: Value| {
        call(
            p.admin_port,
            "POST",
            "/api/auth/totp",
            Some(&token),
            Some(&body),
            "",
        )
    };
    // A stolen session plus the password is not enough.
    let r = enrol(json!({"password": PW}));
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "invalid_credentials"),
        "{}",
        r.body_text()
    );
    let r = enrol(json!({"password": PW, "totp": "000000"}));
    assert_eq!(r.status, 401);
    let r = enrol(json!({"password": "wrong password!", "recovery_code": op.recovery[0]}));
    assert_eq!(r.status, 401);
    // The current code works (once), and so does a recovery code (burnt).
    let code = code_for_uri(op.otpauth.as_deref().unwrap(), now() + 30).unwrap();
    let r = enrol(json!({"password": PW, "totp": code}));
    assert_eq!(r.status, 200, "{}", r.body_text());
    let fresh = r.json();
    let new_codes: Vec<String> = fresh["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    // The old recovery codes died with the old enrolment.
    let r = enrol(json!({"password": PW, "recovery_code": op.recovery[1]}));
    assert_eq!(r.status, 401);
    let r = enrol(json!({"password": PW, "recovery_code": new_codes[0]}));
    assert_eq!(r.status, 200, "{}", r.body_text());
    let r = enrol(json!({"password": PW, "recovery_code": new_codes[0]}));
    assert_eq!(r.status, 401, "a recovery code works once");
    // Without TOTP enrolled, the first enrolment needs the password only.
    let mtoken = login(&p, &member, 0);
    let r = call(
        p.admin_port,
        "POST",
        "/api/auth/totp",
        Some(&mtoken),
        Some(&json!({"password": PW})),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
}

#[test]
fn a_secret_typed_into_the_wrong_field_is_neither_echoed_nor_audited() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let op = add_user(&s, "op@example.com", None, "");
    let org = s.org_id.clone();
    let p = s.spawn();
    let token = login(&p, &op, 0);
    let canary = "sk-proj-WRONGFIELD-canary-7f3a9c";
    let tries: [(&str, String, Value); 6] = [
        (
            "PUT",
            "/api/credentials/openai".to_string(),
            json!({"secret": "sk-real-value", "expires_at": canary}),
        ),
        (
            "POST",
            format!("/api/orgs/{org}/keys"),
            json!({"name": "k", "expires_at": canary}),
        ),
        (
            "POST",
            format!("/api/orgs/{org}/keys"),
            json!({"name": "k", "region": canary}),
        ),
        (
            "POST",
            format!("/api/orgs/{org}/keys"),
            json!({"name": "k", "pii": canary}),
        ),
        ("PATCH", format!("/api/orgs/{org}"), json!({"pii": canary})),
        (
            "POST",
            "/api/orgs".to_string(),
            json!({"name": "x", "region": canary}),
        ),
    ];
    for (method, path, body) in &tries {
        let r = call(p.admin_port, method, path, Some(&token), Some(body), "");
        assert!(
            (400..500).contains(&r.status),
            "{method} {path}: {}",
            r.body_text()
        );
        assert!(
            !r.body_text().contains("WRONGFIELD"),
            "{method} {path} echoed it: {}",
            r.body_text()
        );
    }
    // The CLI does not echo it either.
    let out = p.cli(&["keys", "create", "--org", &org, "--expires", canary], b"");
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("WRONGFIELD"));
    let audit = call(
        p.admin_port,
        "GET",
        "/api/audit?limit=1000",
        Some(&token),
        None,
        "",
    )
    .body_text();
    assert!(
        audit.contains("\"outcome\":\"failure\""),
        "failures are audited: {audit}"
    );
    assert!(!audit.contains("WRONGFIELD"), "{audit}");
    let s = p.stop();
    assert_not_in_files(&s, &["WRONGFIELD"]);
}

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

#[test]
fn a_password_on_the_command_line_is_refused_without_echo() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    for args in [
        &[
            "users",
            "create",
            "--email",
            "a@example.com",
            "--operator",
            "--password",
            "hunter2-canary-pw",
        ][..],
        &["users", "set-password", "someone", "hunter2-canary-pw"][..],
    ] {
        let out = s.cli(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("hunter2"), "{all}");
        assert!(all.contains("not echoed"), "{all}");
    }
    // A too-short password from stdin is refused, and not echoed either.
    let out = s.cli(
        &["users", "create", "--email", "a@example.com", "--operator"],
        b"shrt-canary\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("shrt-canary"));
    assert_eq!(
        s.cli_json(&["users", "list"], b"")["users"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn slow_clients_on_the_admin_listener_are_cut_and_keep_alive_still_works() {
    use std::io::Write;
    let up = Upstream::start();
    let s = Setup::new(
        &mock_upstream(&up, ""),
        "[limits]\nclient_timeout_secs = 1\n",
    );
    let p = s.spawn();
    // A request head that never ends.
    let mut slow = connect(p.admin_port).unwrap();
    slow.write_all(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 512];
    let closed = loop {
        match std::io::Read::read(&mut slow, &mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) => {
                break !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    };
    assert!(closed, "slow client not cut within 5 s");
    // A complete request, then another on the same connection after the deadline.
    let mut s2 = connect(p.admin_port).unwrap();
    for _ in 0..2 {
        s2.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut s2).unwrap().status, 200);
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
}

#[test]
fn limits_are_set_and_removed_through_the_api_and_bundle_users_can_log_in() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let op = add_user(&s, "op@example.com", None, "");
    // A member provisioned by a bundle, by bcrypt hash only.
    let hash = bcrypt::hash(PW, 10).unwrap();
    let bundle = s.dir.path().join("fleet.toml");
    std::fs::write(
        &bundle,
        // An org of the bundle's own (it never takes over `test`, made by hand).
        format!("[[orgs]]\nname = \"bundled\"\n[[orgs.users]]\nemail = \"m@example.com\"\nrole = \"member\"\npassword_bcrypt = \"{hash}\"\n"),
    )
    .unwrap();
    s.cli_json(&["apply", "-f", bundle.to_str().unwrap()], b"");
    let p = s.spawn();
    let member = User {
        id: String::new(),
        email: "m@example.com".into(),
        otpauth: None,
        recovery: Vec::new(),
    };
    login(&p, &member, 0);

    let t = login(&p, &op, 0);
    let r = call(
        p.admin_port,
        "POST",
        "/api/orgs",
        Some(&t),
        Some(&json!({"name": "acme", "rpm": 10, "budget_tokens": 5000, "budget_period": "day"})),
        "",
    );
    assert_eq!(r.status, 201, "{}", r.body_text());
    let org = r.json();
    assert_eq!(
        (org["rpm"].as_u64(), org["budget_tokens"].as_u64()),
        (Some(10), Some(5000))
    );
    assert_eq!(org["budget_period"], "day");
    let id = org["id"].as_str().unwrap().to_string();
    // null removes a limit; an absent field keeps it.
    let r = call(
        p.admin_port,
        "PATCH",
        &format!("/api/orgs/{id}"),
        Some(&t),
        Some(&json!({"rpm": null, "tpm": 900})),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let org = r.json();
    assert!(org["rpm"].is_null());
    assert_eq!(
        (org["tpm"].as_u64(), org["budget_tokens"].as_u64()),
        (Some(900), Some(5000))
    );
    for bad in [
        json!({"rpm": 0}),
        json!({"budget_period": "week", "budget_tokens": 5}),
        json!({"budget_period": "day"}),
        json!({"tpm": -3}),
    ] {
        let r = call(
            p.admin_port,
            "PATCH",
            &format!("/api/orgs/{id}"),
            Some(&t),
            Some(&bad),
            "",
        );
        assert_eq!(r.status, 400, "{bad}: {}", r.body_text());
    }
    let r = call(
        p.admin_port,
        "POST",
        &format!("/api/orgs/{id}/keys"),
        Some(&t),
        Some(&json!({"tpm": 100, "budget_tokens": 10})),
        "",
    );
    assert_eq!(r.status, 201, "{}", r.body_text());
    let kid = r.json()["id"].as_str().unwrap().to_string();
    let r = call(
        p.admin_port,
        "PATCH",
        &format!("/api/orgs/{id}/keys/{kid}"),
        Some(&t),
        Some(&json!({"budget_tokens": null, "rpm": 7})),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let k = r.json();
    assert_eq!((k["rpm"].as_u64(), k["tpm"].as_u64()), (Some(7), Some(100)));
    assert!(k["budget_tokens"].is_null() && k["budget_period"].is_null());
}

/// A token endpoint that never answers holds up only the call that verifies against it: other
/// admin calls go on (the store's lock is not held across the fetch).
#[test]
fn a_hanging_token_endpoint_holds_up_only_its_own_call() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let op = add_user(&s, "op@example.com", None, "");
    let p = s.spawn();
    let token = login(&p, &op, 0);
    // Accepts connections and never answers; says when the first one came.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hang.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in hang.incoming() {
            held.push(c);
            let _ = tx.send(());
        }
    });
    let (port, t) = (p.admin_port, token.clone());
    std::thread::spawn(move || {
        let body = json!({"secret": "client-secret-9", "verify": true, "oauth": {
            "token_url": format!("http://{addr}/token"), "client_id": "c1",
            "grant": "client_credentials"}});
        call(
            port,
            "PUT",
            "/api/credentials/slow",
            Some(&t),
            Some(&body),
            "",
        )
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("the token endpoint was called");
    // The fetch is in flight: the rest of the admin API answers (before, it waited for the
    // fetch's 15 s timeout).
    let started = std::time::Instant::now();
    let r = call(
        p.admin_port,
        "GET",
        "/api/credentials",
        Some(&token),
        None,
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "blocked behind the token fetch"
    );
}

/// The OpenAPI document is valid OpenAPI 3.1 (`openapi-spec-validator`), and the running admin
/// API keeps to it under `schemathesis` (every check but "schema-valid data is accepted":
/// some rules span fields, such as a budget period needing budget tokens): no 5xx, every
/// answer's status, content type, headers and body as documented, 405s with `Allow`, schema-
/// invalid input refused, no route reachable without a session.
#[test]
fn the_openapi_document_is_valid_and_the_running_api_keeps_to_it() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let op = add_user(&s, "ops@example.com", None, "");
    let p = s.spawn();
    let token = login(&p, &op, 0);
    let doc = call(p.admin_port, "GET", "/api/openapi.json", None, None, "");
    assert_eq!(doc.json()["openapi"], "3.1.0");
    let path = p.dir.path().join("openapi.json");
    std::fs::write(&path, &doc.body).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .output()
        .expect("python3 with openapi-spec-validator (tests/requirements.txt)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let url = format!("http://127.0.0.1:{}/api/openapi.json", p.admin_port);
    let auth = format!("Authorization: Bearer {token}");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; schemathesis()",
            "run",
            &url,
            "--header",
            &auth,
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            // Ending the session would leave the rest of the run unauthenticated.
            "--exclude-path",
            "/api/auth/logout",
            // It contacts the servers it is given (discovery): a generated URL is a network
            // wait, and an unreachable one a 502 oauth_discovery_failed by design. Its input
            // checks are tested in oauth_connect.rs.
            "--exclude-path",
            "/api/credentials/{name}/connect",
            "--max-examples",
            "15",
            "--seed",
            "20261206",
            "--request-timeout",
            "10",
            "--no-color",
        ])
        // Its cache and reports go to the test's directory, not the source tree.
        .current_dir(p.dir.path())
        .output()
        .expect("python3 with schemathesis (tests/requirements.txt)");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("passed"), "{said}");
    // The token never reached the report (schemathesis filters it; checked anyway).
    assert!(!said.contains(&token), "the session token is in the report");
    // No answer was a server error.
    assert!(!p.log().contains("status=500"), "{}", p.log());
}
