//! The web console: its pages and their headers, the cookie session and its CSRF token, and
//! the API the console reads (usage roll-ups, the overview, the chain check). The browser
//! tests (Playwright driving Debian's Chromium) are in `console_browser`.

use std::time::Duration;

use serde_json::{json, Value};

use super::admin::{add_user, call, login, login_body, PW};
use super::support::*;

/// The values of every `Set-Cookie` header.
fn set_cookies(r: &RawResponse) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.clone())
        .collect()
}

/// The value of cookie `name` among `Set-Cookie` headers.
fn cookie_value(cookies: &[String], name: &str) -> Option<String> {
    cookies.iter().find_map(|c| {
        let first = c.split(';').next()?;
        let (k, v) = first.split_once('=')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

#[test]
fn the_console_is_served_with_a_strict_csp_and_only_to_allowed_sources() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    for path in [
        "/dashboard",
        "/dashboard/settings",
        "/dashboard/audit",
        "/dashboard/login",
    ] {
        let r = http_get(p.admin_port, path).unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
        let csp = r
            .header("content-security-policy")
            .expect("CSP on every page");
        for part in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
        assert!(r.body_text().contains("/dashboard/assets/app.js"));
    }
    for (asset, kind) in [
        ("app.js", "text/javascript"),
        ("chart.js", "text/javascript"),
        ("style.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let r = http_get(p.admin_port, &format!("/dashboard/assets/{asset}")).unwrap();
        assert_eq!(r.status, 200, "{asset}");
        assert!(r.header("content-type").unwrap().starts_with(kind));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(r.header("content-security-policy").is_some());
    }
    for path in [
        "/dashboard/assets/nope.js",
        "/dashboard/assets/%2e%2e/app.js",
        "/dashboard/a.b",
    ] {
        let r = http_get(p.admin_port, path).unwrap();
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.code(), "not_found");
    }
    let r = raw(
        p.admin_port,
        b"POST /dashboard HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 405);
    let r = http_get(p.admin_port, "/").unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/dashboard"));
    // Not on the data plane.
    let r = http_get(p.port, "/dashboard").unwrap();
    assert_ne!(r.status, 200);

    // Outside [admin] allow_ips: refused as the API is.
    let closed = Proxy::start(&up, "[admin]\nallow_ips = [\"10.0.0.0/8\"]\n");
    for path in ["/dashboard", "/dashboard/assets/app.js"] {
        let r = http_get(closed.admin_port, path).unwrap();
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.code(), "ip_not_allowed");
    }
}

/// A console request: the session cookie, and the CSRF header when given.
fn with_cookie(
    port: u16,
    method: &str,
    path: &str,
    session: &str,
    csrf: Option<&str>,
    body: Option<&Value>,
    extra: &str,
) -> RawResponse {
    let mut headers = format!("Cookie: theme=dark; sluice_session={session}\r\n{extra}");
    if let Some(c) = csrf {
        headers.push_str(&format!("X-Sluice-CSRF: {c}\r\n"));
    }
    call(port, method, path, None, body, &headers)
}

#[test]
fn the_cookie_session_is_httponly_and_every_change_needs_its_csrf_token() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let op = add_user(&s, "ops@example.com", None, "");
    let p = s.spawn();
    let port = p.admin_port;

    let r = call(
        port,
        "POST",
        "/api/auth/login",
        None,
        Some(&login_body(&op, 0)),
        "X-Sluice-Session: cookie\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let body = r.json();
    assert!(
        body.get("token").is_none(),
        "the token stays out of the page: {body}"
    );
    let csrf = body["csrf_token"].as_str().unwrap().to_string();
    let cookies = set_cookies(&r);
    let session_cookie = cookies
        .iter()
        .find(|c| c.starts_with("sluice_session="))
        .unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/api;", "Max-Age="] {
        assert!(session_cookie.contains(attr), "{session_cookie}");
    }
    assert!(!session_cookie.contains("Secure"), "plain HTTP here");
    let session = cookie_value(&cookies, "sluice_session").unwrap();
    assert_eq!(
        cookie_value(&cookies, "sluice_csrf").as_deref(),
        Some(csrf.as_str())
    );
    let csrf_cookie = cookies
        .iter()
        .find(|c| c.starts_with("sluice_csrf="))
        .unwrap();
    assert!(!csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict"));

    // The cookie's session is no bearer token (a leaked cookie is no API token).
    let r = call(port, "GET", "/api/auth/me", Some(&session), None, "");
    assert_eq!(r.status, 401, "{}", r.body_text());
    // Reads need the cookie only.
    let r = with_cookie(port, "GET", "/api/auth/me", &session, None, None, "");
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.json()["email"], "ops@example.com");

    // A change without the token, with another's, from another site, or as a cross-site form:
    // refused before anything happens.
    let org = json!({"name": "acme"});
    let refused = [
        with_cookie(port, "POST", "/api/orgs", &session, None, Some(&org), ""),
        with_cookie(
            port,
            "POST",
            "/api/orgs",
            &session,
            Some("forged"),
            Some(&org),
            "",
        ),
        with_cookie(
            port,
            "POST",
            "/api/orgs",
            &session,
            Some(&csrf),
            Some(&org),
            "Sec-Fetch-Site: cross-site\r\n",
        ),
        with_cookie(
            port,
            "POST",
            "/api/orgs",
            &session,
            Some(&csrf),
            Some(&org),
            "Sec-Fetch-Site: same-site\r\n",
        ),
        raw(
            port,
            format!(
                "POST /api/orgs HTTP/1.1\r\nHost: x\r\nCookie: sluice_session={session}\r\n\
                 Origin: https://evil.example\r\nSec-Fetch-Site: cross-site\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 9\r\n\
                 Connection: close\r\n\r\nname=evil"
            )
            .as_bytes(),
        )
        .unwrap(),
    ];
    for r in &refused {
        assert_eq!(r.status, 403, "{}", r.body_text());
        assert_eq!(r.code(), "csrf_failed");
        assert!(r.json()["error"]["request_id"].as_str().is_some());
    }
    // Another session's token does not pass either.
    let other = call(
        port,
        "POST",
        "/api/auth/login",
        None,
        Some(&login_body(&op, 1)),
        "X-Sluice-Session: cookie\r\n",
    );
    assert_eq!(other.status, 200, "{}", other.body_text());
    let other_csrf = other.json()["csrf_token"].as_str().unwrap().to_string();
    assert_ne!(other_csrf, csrf);
    let r = with_cookie(
        port,
        "POST",
        "/api/orgs",
        &session,
        Some(&other_csrf),
        Some(&org),
        "",
    );
    assert_eq!(r.code(), "csrf_failed");
    let r = call(
        port,
        "POST",
        "/api/auth/login",
        None,
        Some(&json!({"email": op.email, "password": PW, "recovery_code": op.recovery[1]})),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let bearer = r.json()["token"].as_str().unwrap().to_string();
    let orgs = call(port, "GET", "/api/orgs", Some(&bearer), None, "").json();
    assert!(
        orgs["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["name"] != "acme"),
        "nothing was created: {orgs}"
    );

    // With it, from the console's own page: done (and audited as the user).
    let r = with_cookie(
        port,
        "POST",
        "/api/orgs",
        &session,
        Some(&csrf),
        Some(&org),
        "Sec-Fetch-Site: same-origin\r\n",
    );
    assert_eq!(r.status, 201, "{}", r.body_text());

    // Two session cookies: which one counts would be ambiguous, so neither does.
    let r = call(
        port,
        "GET",
        "/api/auth/me",
        None,
        None,
        &format!("Cookie: sluice_session={session}; sluice_session={session}\r\n"),
    );
    assert_eq!(r.status, 401);
    // Bearer tokens are unaffected by the CSRF rule (no browser sends them on its own).
    let r = call(
        port,
        "POST",
        "/api/orgs",
        Some(&bearer),
        Some(&json!({"name": "beta"})),
        "",
    );
    assert_eq!(r.status, 201, "{}", r.body_text());

    // Sign-out clears both cookies and ends the session.
    let r = with_cookie(
        port,
        "POST",
        "/api/auth/logout",
        &session,
        Some(&csrf),
        None,
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let cleared = set_cookies(&r);
    assert_eq!(cleared.len(), 2, "{cleared:?}");
    assert!(cleared.iter().all(|c| c.contains("Max-Age=0")));
    assert!(cleared
        .iter()
        .any(|c| c.starts_with("sluice_session=;") && c.contains("Path=/api;")));
    let r = with_cookie(port, "GET", "/api/auth/me", &session, None, None, "");
    assert_eq!(r.status, 401);
    // Signing out of a session that already ended still clears the cookies.
    let r = with_cookie(
        port,
        "POST",
        "/api/auth/logout",
        &session,
        Some(&csrf),
        None,
        "",
    );
    assert_eq!(r.status, 401);
    assert_eq!(set_cookies(&r).len(), 2);

    // Behind a TLS proxy the cookies are Secure (a recovery code: each TOTP step works once).
    let r = call(
        port,
        "POST",
        "/api/auth/login",
        None,
        Some(&json!({"email": op.email, "password": PW, "recovery_code": op.recovery[0]})),
        "X-Sluice-Session: cookie\r\nX-Forwarded-Proto: https\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let secure = set_cookies(&r);
    assert_eq!(secure.len(), 2);
    assert!(secure.iter().all(|c| c.contains("; Secure")), "{secure:?}");
    assert_secrets_nowhere(&p.stop(), &[&session, &csrf]);
}

#[test]
fn usage_is_rolled_up_per_key_and_model_and_the_overview_and_chain_check_answer() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let op = add_user(&s, "ops@example.com", None, "");
    let org = s.cli_json(&["orgs", "create", "acme", "--budget-tokens", "1000"], b"");
    let org_id = org["id"].as_str().unwrap().to_string();
    let key = s.cli_json(
        &[
            "keys",
            "create",
            "--org",
            &org_id,
            "--name",
            "app",
            "--budget-tokens",
            "500",
            "--budget-period",
            "day",
        ],
        b"",
    );
    let key_id = key["id"].as_str().unwrap().to_string();
    let other = s.cli_json(
        &["keys", "create", "--org", &org_id, "--name", "batch"],
        b"",
    );
    let member = add_user(&s, "dev@example.com", Some(&org_id), "member");
    let auditor = add_user(&s, "audit@example.com", Some(&org_id), "auditor");
    let p = s.spawn();
    let port = p.admin_port;
    for k in [&key, &key, &key, &other] {
        let r = chat_with_key(p.port, k["key"].as_str().unwrap());
        assert_eq!(r.status, 200, "{}", r.body_text());
    }
    let bad = chat_with_key(p.port, "sk-sluice-nope");
    assert_eq!(bad.status, 401);

    let token = login(&p, &op, 0);
    let usage = |q: &str, t: &str| call(port, "GET", &format!("/api/usage?{q}"), Some(t), None, "");
    let mut last = Value::Null;
    eventually("the usage roll-up", Duration::from_secs(10), || {
        last = usage(&format!("org_id={org_id}"), &token).json();
        last["data"].as_array().is_some_and(|d| {
            d.iter()
                .map(|r| r["requests"].as_u64().unwrap())
                .sum::<u64>()
                == 4
        })
    });
    let rows = last["data"].as_array().unwrap();
    let mine = rows
        .iter()
        .find(|r| r["key_id"] == key_id.as_str())
        .unwrap();
    // The mock answers 1 prompt and 3 completion tokens each.
    assert_eq!(mine["requests"], 3);
    assert_eq!(mine["input_tokens"], 3);
    assert_eq!(mine["output_tokens"], 9);
    assert_eq!(mine["total_tokens"], 12);
    assert_eq!(last["budgets"]["org"]["tokens"], 1000);
    assert_eq!(last["budgets"]["org"]["used_tokens"], 16);
    let kb = &last["budgets"]["keys"][0];
    assert_eq!(kb["key_id"], key_id.as_str());
    assert_eq!(kb["budget"]["used_tokens"], 12);
    assert_eq!(kb["budget"]["period"], "day");

    let by_model = usage(
        &format!("org_id={org_id}&group_by=model&bucket=day"),
        &token,
    )
    .json();
    let d = by_model["data"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{by_model}");
    assert_eq!(d[0]["model"], "gpt-4o-mini");
    assert_eq!(d[0]["requests"], 4);
    assert!(d[0]["bucket_start"]
        .as_str()
        .unwrap()
        .ends_with("T00:00:00Z"));

    // Bad parameters are clear 400s; operators must name the org; others see their own only.
    for q in [
        "group_by=user",
        "bucket=week",
        "since=yesterday",
        "since=2000-01-01T00:00:00Z",
    ] {
        let r = usage(&format!("org_id={org_id}&{q}"), &token);
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.code(), "invalid_request");
    }
    assert_eq!(usage("", &token).code(), "invalid_request");
    let t_aud = login(&p, &auditor, 0);
    let r = usage("", &t_aud);
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.json()["org_id"], org_id.as_str());
    assert_eq!(usage("org_id=someone-else", &t_aud).status, 403);
    let t_member = login(&p, &member, 0);
    assert_eq!(usage("", &t_member).status, 403);

    // The overview: health for everyone, traffic and credentials for operators only.
    let o = call(port, "GET", "/api/overview", Some(&token), None, "").json();
    assert_eq!(o["upstreams"][0]["healthy"], true, "{o}");
    assert_eq!(o["fleet"]["redis"], "off");
    assert!(
        o["traffic"]["since_start"]["requests"].as_u64().unwrap() >= 5,
        "{o}"
    );
    assert_eq!(
        o["traffic"]["since_start"]["refusals_by_code"]["invalid_api_key"],
        1
    );
    assert_eq!(o["traffic"]["since_start"]["tokens"], 16);
    assert!(o["credentials"].is_array());
    let o = call(port, "GET", "/api/overview", Some(&t_member), None, "").json();
    assert!(o["traffic"].is_null() && o["credentials"].is_null(), "{o}");
    assert!(o["upstreams"].is_array());

    // The chain check: intact, then broken at the first altered record.
    let v = call(port, "GET", "/api/audit/verify", Some(&t_aud), None, "");
    assert_eq!(v.status, 200, "{}", v.body_text());
    assert_eq!(v.json()["valid"], true);
    // The count spans every org: operators only.
    assert!(v.json()["records"].is_null(), "{}", v.body_text());
    let v = call(port, "GET", "/api/audit/verify", Some(&token), None, "").json();
    assert!(v["records"].as_u64().unwrap() >= 5, "{v}");
    assert_eq!(
        call(port, "GET", "/api/audit/verify", Some(&t_member), None, "").status,
        403
    );
    let s = p.stop();
    let db = rusqlite::Connection::open(s.db()).unwrap();
    db.execute_batch(
        "DROP TRIGGER IF EXISTS audit_no_update;
         UPDATE audit SET outcome = 'failure' WHERE seq = 3;",
    )
    .unwrap();
    drop(db);
    let p = s.spawn();
    let token = login(&p, &op, 1);
    let v = call(
        p.admin_port,
        "GET",
        "/api/audit/verify",
        Some(&token),
        None,
        "",
    )
    .json();
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["first_bad"]["seq"], 3);
}

/// Where the browser test saves a screenshot of each page (the README's are copies).
const SCREENSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/console-screenshots");

/// Debian's Chromium (`.ci/run` and `./dev.sh test` install it); `SLUICE_CHROMIUM` overrides.
fn chromium() -> String {
    let path = std::env::var("SLUICE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&path).exists(),
        "no Chromium at {path}: install Debian's `chromium` (./dev.sh setup test does) or set SLUICE_CHROMIUM"
    );
    path
}

#[test]
fn in_a_real_browser_the_console_signs_in_changes_settings_keys_and_audits_and_auditors_only_read()
{
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let op = add_user(&s, "security-lead@example.com", None, "");
    let org = s.cli_json(&["orgs", "create", "acme", "--pii", "off"], b"");
    let org_id = org["id"].as_str().unwrap().to_string();
    let auditor = s.cli_json(
        &[
            "users",
            "create",
            "auditor@example.com",
            "--org",
            &org_id,
            "--role",
            "auditor",
            "--totp",
        ],
        format!("{PW}\n").as_bytes(),
    );
    let p = s.spawn();
    let email = "jane.doe@example.com";
    let secret = "sk-live-console-secret-0123456789abcdef";
    let input = json!({
        "admin_url": format!("http://127.0.0.1:{}", p.admin_port),
        "proxy_url": format!("http://127.0.0.1:{}", p.port),
        "chromium": chromium(),
        "screenshots": SCREENSHOTS,
        "org_id": org_id,
        "pii_email": email,
        "credential_secret": secret,
        "operator": {"email": op.email, "password": PW, "otpauth": op.otpauth,
                     "recovery_code": op.recovery[0]},
        "auditor": {"email": "auditor@example.com", "password": PW,
                    "otpauth": auditor["totp"]["otpauth_uri"]},
    });
    let run = std::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/sdk/console.mjs"
        ))
        .env("CONSOLE_TEST", input.to_string())
        .output()
        .expect("node (install Node 20 and `npm ci --prefix tests/sdk`, as ./dev.sh test does)");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let v: Value = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&run.stdout)));
    assert!(run.status.success() && v["ok"] == true, "{v}\n{stderr}");

    // No console error (a CSP violation is one) on any page, and the CSP header on each.
    assert_eq!(v["console_errors"], json!([]), "{v}");
    assert_eq!(v["pages_without_csp"], json!([]), "{v}");
    // The org's PII setting, switched on in the console, applied to the SDK's request.
    let sent: Vec<String> = up
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(
        sent.len(),
        1,
        "the revoked key's call never reached the upstream: {sent:?}"
    );
    assert!(
        !sent[0].contains(email) && sent[0].contains("[REDACTED_EMAIL]"),
        "{}",
        sent[0]
    );
    assert_eq!(v["sdk_before_revoke"]["ok"], "hello from mock");
    assert_eq!(v["sdk_after_revoke"]["status"], 401);
    // A cross-site form post carried no session (SameSite=Strict) and changed nothing.
    assert!(
        [401, 403].contains(&v["cross_site_status"].as_u64().unwrap()),
        "{v}"
    );
    assert_eq!(v["auditor_forged_post"]["code"], "permission_denied");
    let actions = v["export_actions"].as_array().unwrap();
    for a in ["key.create", "key.revoke", "org.update"] {
        assert!(actions.contains(&json!(a)), "{a} not exported: {v}");
    }
    for page in [
        "overview",
        "settings",
        "audit",
        "usage",
        "credentials",
        "mcp",
        "account",
        "login",
        "auditor-settings",
    ] {
        assert!(
            std::path::Path::new(&format!("{SCREENSHOTS}/{page}.png")).exists(),
            "no screenshot of {page}"
        );
    }
    // The console's audit records name the person, from the browser.
    let s = p.stop();
    let records = audit_records(&s);
    let by_console: Vec<&Value> = records
        .iter()
        .filter(|r| r["actor"] == format!("user:{}", op.id).as_str())
        .collect();
    for action in [
        "org.update",
        "key.create",
        "key.update",
        "key.revoke",
        "credential.set",
    ] {
        let r = by_console
            .iter()
            .find(|r| r["action"] == action)
            .unwrap_or_else(|| panic!("{action} not audited as the operator: {by_console:?}"));
        assert!(r["user_agent"].as_str().unwrap().contains("Chrome"), "{r}");
        assert_eq!(r["outcome"], "success");
    }
    // The credential's secret, typed into the console, is nowhere in clear.
    assert_secrets_nowhere(&s, &[secret]);
}
