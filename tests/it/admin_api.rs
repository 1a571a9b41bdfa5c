//! The admin API as a contract: every mutation audited (and the same through the CLI), the
//! answers as the OpenAPI document says, policies and limits set through it, a secret typed
//! into the wrong field never echoed.

use serde_json::{json, Value};

use super::admin::*;
use super::support::*;

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
pub(crate) fn assert_documented(
    doc: &Value,
    method: &str,
    pattern: &str,
    status: u16,
    body: &Value,
) {
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
