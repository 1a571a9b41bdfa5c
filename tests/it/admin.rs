//! The admin plane's accounts: login, second factors, throttling, sessions, roles, the
//! allowlist and the JWT secret; passwords and tokens never leak.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sluice::admin::users::code_for_uri;

use super::admin_api::assert_documented;
use super::support::*;

pub(crate) const PW: &str = "correct horse battery staple";

pub(crate) fn now() -> u64 {
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

pub(crate) fn without_request_id(mut v: Value) -> Value {
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
