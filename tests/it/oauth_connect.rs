//! Connecting hosted MCP servers with the OAuth 2.1 authorization code grant and PKCE, from
//! the outside: the official MCP Python SDK as the MCP server and its authorization server
//! (tests/mcp/auth_server.py: discovery, dynamic registration, revocation), an operator through
//! the admin API and the CLI, and no human: the test follows the authorization URL itself and
//! the SDK's provider approves.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::admin::{add_user, call, login};
use crate::mcp::{client, key_with_tools, post_control, start_python};
use crate::support::*;

/// The SDK's MCP server and authorization server (tests/mcp/auth_server.py); killed on drop.
struct AuthServer {
    child: Child,
    port: u16,
}

impl AuthServer {
    fn start() -> AuthServer {
        let (child, port) = start_python("auth_server.py");
        AuthServer { child, port }
    }

    fn resource(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    fn stats(&self) -> Value {
        http_get(self.port, "/stats").unwrap().json()
    }

    fn list(&self, what: &str) -> Vec<String> {
        self.stats()[what]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    }

    fn control(&self, change: Value) {
        post_control(self.port, change);
    }

    /// Open the authorization URL as a browser would: the provider approves at once and
    /// redirects to the callback. The `Location` it sends.
    fn approve(&self, authorization_url: &str) -> String {
        let prefix = format!("http://127.0.0.1:{}", self.port);
        let path = authorization_url
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{authorization_url} is not on {prefix}"));
        let r = raw(
            self.port,
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                self.port
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 302, "{}", r.body_text());
        r.header("location").unwrap().to_string()
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The query parameter `name` of `url`.
fn param(url: &str, name: &str) -> String {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// GET a callback URL (as the browser sent it) on the admin listener.
fn callback(p: &Proxy, location: &str) -> RawResponse {
    let prefix = format!("http://127.0.0.1:{}", p.admin_port);
    let path = location.strip_prefix(&prefix).unwrap_or(location);
    raw(
        p.admin_port,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap()
}

fn setup(srv: &AuthServer) -> Setup {
    let up = Upstream::start();
    let s = Setup::new(
        &mock_upstream(&up, ""),
        &format!(
            "[log]\nlevel = \"debug\"\n[[mcp_servers]]\nname = \"linear\"\nurl = \"{}\"\nregion = \"us\"\ncredential = \"linear\"\ncredential_kind = \"oauth\"\n",
            srv.resource()
        ),
    );
    // The upstream mock lives as long as the process: leak it with the setup.
    std::mem::forget(up);
    s
}

fn start_connect(p: &Proxy, token: &str, body: Value) -> RawResponse {
    call(
        p.admin_port,
        "POST",
        "/api/credentials/linear/connect",
        Some(token),
        Some(&body),
        "",
    )
}

/// Call the MCP server's tool through sluice with the official client.
fn whoami(p: &Proxy, key: &str) -> Value {
    client(p, "linear", key, json!([["call", "whoami", {}]]))
}

fn credential(p: &Proxy) -> Value {
    p.cli_json(&["credentials", "list"], b"")["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "linear")
        .cloned()
        .unwrap_or(Value::Null)
}

/// Run `sluice credentials connect linear --mcp-server linear` with `extra`, approve the URL it
/// prints, and hand back the callback: pasted on its stdin (`paste`) or sent to the admin
/// listener as a browser would. Its exit status and stdout.
fn cli_connect(p: &Proxy, srv: &AuthServer, paste: bool) -> (bool, String, String) {
    let mut args = vec![
        "credentials",
        "connect",
        "linear",
        "--mcp-server",
        "linear",
        "--json",
        "--timeout",
        "60",
    ];
    if paste {
        args.push("--paste");
    }
    let mut child = Command::new(crate::support::bin())
        .args(&args)
        .arg("--config")
        .arg(&p.cfg_path)
        .env("SLUICE_SECRETS_KEY", MASTER_KEY)
        .env_remove("SLUICE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let url = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no URL printed:\n{seen}"
        );
        seen.push_str(&line);
        if let Some(u) = line.trim().strip_prefix("http://") {
            break format!("http://{u}");
        }
    };
    let location = srv.approve(&url);
    let mut stdin = child.stdin.take().unwrap();
    if paste {
        writeln!(stdin, "{location}").unwrap();
    } else {
        let r = callback(p, &location);
        assert_eq!(r.status, 200, "{}", r.body_text());
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        seen + &rest,
    )
}

#[test]
fn a_hosted_mcp_server_is_connected_with_pkce_refreshed_reconnected_revoked_and_nothing_leaks() {
    let srv = AuthServer::start();
    let s = setup(&srv);
    let op = add_user(&s, "ops@example.com", None, "");
    let p = s.spawn();
    let token = login(&p, &op, 0);
    let key = key_with_tools(&p, "linear:*");

    // 1. Through the admin API: discovery from the MCP server, dynamic registration, PKCE.
    let r = start_connect(&p, &token, json!({"mcp_server": "linear"}));
    assert_eq!(r.status, 201, "{}", r.body_text());
    let started = r.json();
    assert_eq!(started["registered"], true, "{started}");
    assert_eq!(started["resource"], srv.resource());
    assert_eq!(
        started["redirect_uri"],
        format!("http://127.0.0.1:{}/oauth/callback", p.admin_port)
    );
    let url = started["authorization_url"].as_str().unwrap();
    assert_eq!(param(url, "code_challenge_method"), "S256");
    assert_eq!(param(url, "code_challenge").len(), 43);
    assert_eq!(param(url, "resource"), srv.resource());
    assert_eq!(param(url, "scope"), "tools");
    let states = vec![param(url, "state")];
    assert_eq!(srv.stats()["registrations"], 1);
    // Nothing stored before the callback.
    assert_eq!(credential(&p), Value::Null);
    let location = srv.approve(url);
    let r = callback(&p, &location);
    assert_eq!(r.status, 200, "{}", r.body_text());
    let done = r.json();
    assert_eq!(done["credential"]["kind"], "oauth");
    assert_eq!(done["credential"]["connected"]["registered"], true);
    assert_eq!(
        done["credential"]["connected"]["client_auth"],
        "client_secret_post"
    );
    assert_eq!(done["previous_tokens"], "none");
    // The SDK's server took the token: issued for this resource (RFC 8707), scope tools.
    let v = whoami(&p, &key);
    assert_eq!(v["steps"][0]["text"], "test-user", "{v}");
    assert_eq!(srv.stats()["calls"], 1);
    // The callback replayed: refused, nothing changes.
    let obtained = credential(&p)["token_obtained_at"].clone();
    let replay = callback(&p, &location);
    assert_eq!(
        (replay.status, replay.code()),
        (400, "oauth_state_invalid".into())
    );
    assert!(
        replay.body_text().contains("already used"),
        "{}",
        replay.body_text()
    );
    assert_eq!(credential(&p)["token_obtained_at"], obtained);

    // 2. Again from the CLI with a pasted URL: the tokens it replaces are revoked at the server.
    let first_tokens = (srv.list("access_tokens"), srv.list("refresh_tokens"));
    let (ok, out, err) = cli_connect(&p, &srv, true);
    assert!(ok, "{err}\n{}", p.log());
    let view: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["name"], "linear", "{view}");
    let revoked = srv.list("revoked");
    assert!(
        revoked.contains(&first_tokens.1[0]) && revoked.contains(&first_tokens.0[0]),
        "{revoked:?}\n{err}"
    );
    assert_eq!(srv.stats()["registrations"], 2);
    let v = whoami(&p, &key);
    assert_eq!(v["steps"][0]["text"], "test-user", "{v}");

    // 3. Short-lived tokens are refreshed (with the client's authentication); then the user
    // revokes the access on the provider's side: the credential needs a reconnect, counted and
    // listed, and the refresher does not retry in a loop.
    // 4 s: refreshed at 80% (3.2 s, on a 250 ms tick), with room for a loaded machine.
    srv.control(json!({"ttl": 4}));
    let (ok, _, err) = cli_connect(&p, &srv, false);
    assert!(ok, "{err}\n{}", p.log());
    eventually("a refresh", Duration::from_secs(10), || {
        srv.stats()["refreshes"].as_u64().unwrap() >= 1
    });
    let v = whoami(&p, &key);
    assert_eq!(v["steps"][0]["text"], "test-user", "{v}");
    srv.control(json!({"forget_refresh": true}));
    eventually("needs_reconnect", Duration::from_secs(10), || {
        credential(&p)["last_error"] == "needs_reconnect"
    });
    p.metrics_with(&["sluice_oauth_needs_reconnect{credential=\"linear\"} 1"]);
    let text = String::from_utf8_lossy(&p.cli(&["credentials", "list"], b"").stdout).to_string();
    assert!(text.contains("needs_reconnect"), "{text}");
    let refreshes = srv.stats()["refreshes"].clone();
    let tokens_asked = srv.list("access_tokens").len();
    eventually("the token to expire", Duration::from_secs(10), || {
        rpc_status(&p, &key) == 503
    });
    assert_eq!(srv.stats()["refreshes"], refreshes);
    assert_eq!(srv.list("access_tokens").len(), tokens_asked);
    assert!(p.log().contains("needs `sluice credentials connect` again"));

    // 4. Reconnected: works again, and `needs_reconnect` is gone.
    srv.control(json!({"ttl": 3600}));
    let (ok, _, err) = cli_connect(&p, &srv, false);
    assert!(ok, "{err}\n{}", p.log());
    assert!(credential(&p)["last_error"].is_null());
    eventually("the new token in use", Duration::from_secs(10), || {
        rpc_status(&p, &key) != 503
    });
    let v = whoami(&p, &key);
    assert_eq!(v["steps"][0]["text"], "test-user", "{v}");

    // 5. Deleted through the API: its tokens are revoked at the server first.
    let current = (srv.list("access_tokens"), srv.list("refresh_tokens"));
    let r = call(
        p.admin_port,
        "DELETE",
        "/api/credentials/linear",
        Some(&token),
        None,
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.json()["tokens"], "revoked");
    let revoked = srv.list("revoked");
    assert!(
        revoked.contains(current.1.last().unwrap()) && revoked.contains(current.0.last().unwrap()),
        "{revoked:?}"
    );
    p.metrics_with(&[
        "sluice_oauth_revocations_total{outcome=\"revoked\"} 3",
        "sluice_oauth_connects_total{outcome=\"connected\"} 3",
        "sluice_oauth_connects_total{outcome=\"oauth_state_invalid\"} 1",
    ]);

    // The audit log tells the story, without a secret.
    let s = p.stop();
    let records = audit_records(&s);
    let actions: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["action"].as_str().unwrap().starts_with("credential."))
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let count = |a: &str, o: &str| actions.iter().filter(|x| x.0 == a && x.1 == o).count();
    assert_eq!(
        count("credential.connect_start", "success"),
        4,
        "{actions:?}"
    );
    assert_eq!(count("credential.connect", "success"), 4, "{actions:?}");
    assert_eq!(count("credential.connect", "failure"), 1, "{actions:?}");
    assert_eq!(count("credential.delete", "success"), 1, "{actions:?}");
    let st = srv.stats();
    let mut secrets: Vec<String> = Vec::new();
    for what in ["codes", "verifiers", "access_tokens", "refresh_tokens"] {
        secrets.extend(srv.list(what));
    }
    for c in st["clients"].as_array().unwrap() {
        secrets.push(c["secret"].as_str().unwrap().to_string());
    }
    assert!(secrets.len() > 12, "{secrets:?}");
    secrets.extend(states);
    let needles: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_secrets_nowhere(&s, &needles);
}

/// The status of a raw `tools/call` through sluice (503: no usable credential).
fn rpc_status(p: &Proxy, key: &str) -> u16 {
    crate::mcp::rpc(
        p,
        "linear",
        key,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#,
    )
    .status
}

#[test]
fn forged_replayed_expired_foreign_and_mixed_up_callbacks_and_unsafe_servers_store_nothing() {
    let srv = AuthServer::start();
    let s = setup(&srv);
    let a = add_user(&s, "a@example.com", None, "");
    let b = add_user(&s, "b@example.com", None, "");
    let p = s.spawn();
    let ta = login(&p, &a, 0);
    let tb = login(&p, &b, 0);
    let refused = |r: &RawResponse, status: u16, code: &str| {
        assert_eq!(
            (r.status, r.code()),
            (status, code.to_string()),
            "{}",
            r.body_text()
        );
    };
    let start = |token: &str, body: Value| {
        let r = start_connect(&p, token, body);
        assert_eq!(r.status, 201, "{}", r.body_text());
        r.json()["authorization_url"].as_str().unwrap().to_string()
    };
    let cb = |q: &str| callback(&p, &format!("/oauth/callback?{q}"));

    // Forged and malformed callbacks.
    refused(&cb("code=x&state=forged"), 400, "oauth_state_invalid");
    refused(&cb("code=x"), 400, "oauth_state_invalid");
    let url = start(&ta, json!({"mcp_server": "linear"}));
    let location = srv.approve(&url);
    let state = param(&location, "state");
    let code = param(&location, "code");
    refused(
        &cb(&format!("code={code}&state={state}&state=forged")),
        400,
        "oauth_state_invalid",
    );

    // Another operator cannot complete A's connect, nor can A complete it for another
    // credential: the state is spent by the attempt (it leaked), so neither the browser's
    // callback nor anyone else can use it afterwards.
    let complete = |token: &str, name: &str, location: &str| {
        call(
            p.admin_port,
            "POST",
            &format!("/api/credentials/{name}/connect/complete"),
            Some(token),
            Some(&json!({"redirect_url": location})),
            "",
        )
    };
    let r = complete(&tb, "linear", &location);
    refused(&r, 400, "oauth_state_invalid");
    assert!(
        r.body_text().contains("another operator"),
        "{}",
        r.body_text()
    );
    let r = callback(&p, &location);
    refused(&r, 400, "oauth_state_invalid");
    assert!(r.body_text().contains("already used"), "{}", r.body_text());
    let other = srv.approve(&start(&ta, json!({"mcp_server": "linear"})));
    let r = complete(&ta, "other", &other);
    refused(&r, 400, "oauth_state_invalid");
    assert!(
        r.body_text().contains("another credential"),
        "{}",
        r.body_text()
    );
    refused(&complete(&ta, "linear", &other), 400, "oauth_state_invalid");
    assert_eq!(credential(&p), Value::Null);

    // RFC 9207: an `iss` that is not the connect's server is a mix-up: refused (and the state
    // is spent).
    let location = srv.approve(&start(&ta, json!({"mcp_server": "linear"})));
    refused(
        &callback(&p, &format!("{location}&iss=https%3A%2F%2Fevil.example")),
        400,
        "oauth_iss_mismatch",
    );
    refused(&callback(&p, &location), 400, "oauth_state_invalid");

    // A code obtained with another verifier: the server refuses the exchange.
    let url1 = start(&ta, json!({"mcp_server": "linear"}));
    let url2 = start(&ta, json!({"mcp_server": "linear"}));
    let (l1, l2) = (srv.approve(&url1), srv.approve(&url2));
    let r = cb(&format!(
        "code={}&state={}",
        param(&l2, "code"),
        param(&l1, "state")
    ));
    refused(&r, 502, "oauth_exchange_failed");
    assert!(r.body_text().contains("invalid_grant"), "{}", r.body_text());
    // The user declined.
    let url3 = start(&ta, json!({"mcp_server": "linear"}));
    refused(
        &cb(&format!(
            "error=access_denied&state={}",
            param(&url3, "state")
        )),
        400,
        "oauth_authorization_denied",
    );

    // An expired state (10 minutes), aged in the store.
    let url4 = start(&ta, json!({"mcp_server": "linear"}));
    let l4 = srv.approve(&url4);
    {
        let db = rusqlite::Connection::open(p.db()).unwrap();
        db.busy_timeout(Duration::from_secs(5)).unwrap();
        db.execute(
            "UPDATE oauth_flows SET expires_at = 0 WHERE used_at IS NULL",
            [],
        )
        .unwrap();
    }
    let r = callback(&p, &l4);
    refused(&r, 400, "oauth_state_invalid");
    assert!(r.body_text().contains("expired"), "{}", r.body_text());

    // A server that advertises RFC 9207 must send `iss`.
    srv.control(json!({"metadata": {"authorization_response_iss_parameter_supported": true}}));
    let url5 = start(&ta, json!({"mcp_server": "linear"}));
    refused(
        &callback(&p, &srv.approve(&url5)),
        400,
        "oauth_iss_mismatch",
    );

    // Servers sluice will not use: no PKCE S256, metadata for another issuer, plain http to
    // another host.
    let registrations = srv.stats()["registrations"].clone();
    for (meta, why) in [
        (json!({"code_challenge_methods_supported": null}), "S256"),
        (
            json!({"code_challenge_methods_supported": ["plain"]}),
            "S256",
        ),
        (json!({"issuer": "http://127.0.0.1:1/"}), "issuer"),
        (json!({"token_endpoint": "http://192.0.2.1/token"}), "https"),
        (
            json!({"authorization_endpoint": "http://192.0.2.1/authorize"}),
            "https",
        ),
        (
            json!({"registration_endpoint": "http://192.0.2.1/register"}),
            "https",
        ),
    ] {
        srv.control(json!({"plain_metadata": true}));
        srv.control(json!({ "metadata": meta }));
        let r = start_connect(&p, &ta, json!({"mcp_server": "linear"}));
        refused(&r, 422, "oauth_server_refused");
        assert!(r.body_text().contains(why), "{meta}: {}", r.body_text());
    }
    assert_eq!(srv.stats()["registrations"], registrations);
    srv.control(json!({"plain_metadata": true}));
    // A hostile MCP server: metadata for another resource, or on another origin.
    let base = format!("http://127.0.0.1:{}", srv.port);
    srv.control(json!({"prm": {"resource": "http://127.0.0.1:1/mcp"}}));
    let r = start_connect(&p, &ta, json!({"mcp_server": "linear"}));
    refused(&r, 422, "oauth_server_refused");
    assert!(r.body_text().contains("RFC 9728"), "{}", r.body_text());
    srv.control(json!({"plain_metadata": true, "hint": format!(
        "http://localhost:{}/.well-known/oauth-protected-resource/mcp", srv.port)}));
    let r = start_connect(&p, &ta, json!({"mcp_server": "linear"}));
    refused(&r, 422, "oauth_server_refused");
    assert!(
        r.body_text().contains("another origin"),
        "{}",
        r.body_text()
    );
    // Several authorization servers: the operator names one (a listed one).
    srv.control(json!({"plain_metadata": true}));
    srv.control(
        json!({"prm": {"authorization_servers": [format!("{base}/"), "http://127.0.0.1:1/"]}}),
    );
    let r = start_connect(&p, &ta, json!({"mcp_server": "linear"}));
    refused(&r, 400, "invalid_request");
    assert!(
        r.body_text().contains("several authorization servers"),
        "{}",
        r.body_text()
    );
    refused(
        &start_connect(
            &p,
            &ta,
            json!({"mcp_server": "linear", "issuer": "http://127.0.0.1:2/"}),
        ),
        422,
        "oauth_server_refused",
    );
    let r = start_connect(&p, &ta, json!({"mcp_server": "linear", "issuer": base}));
    assert_eq!(r.status, 201, "{}", r.body_text());
    srv.control(json!({"plain_metadata": true}));
    // A client secret only goes to a server the operator names.
    let r = start_connect(
        &p,
        &ta,
        json!({"mcp_server": "linear", "client_id": "c", "client_secret": "client-secret-canary"}),
    );
    refused(&r, 400, "invalid_request");
    assert!(r.body_text().contains("issuer"), "{}", r.body_text());
    // The operator who started a connect is removed before the browser comes back: refused.
    let c = add_user(&p, "c@example.com", None, "");
    let tc = login(&p, &c, 0);
    let url6 = start(&tc, json!({"mcp_server": "linear"}));
    let l6 = srv.approve(&url6);
    let out = p.cli(&["users", "delete", &c.id], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = callback(&p, &l6);
    refused(&r, 400, "oauth_state_invalid");
    assert!(r.body_text().contains("no longer"), "{}", r.body_text());
    // The redirect must come back to this machine.
    for redirect in [
        "http://192.0.2.1:9091/oauth/callback",
        "https://evil.example/oauth/callback",
        "http://127.0.0.1:9091/oauth/callback?x=1",
        "http://127.0.0.1:9091\\@evil.example/oauth/callback",
        "http://:pw@127.0.0.1:9091/oauth/callback",
        "http://localhost:9091/oauth/callback",
        "http://127.0.0.1:9091/elsewhere",
    ] {
        let r = start_connect(
            &p,
            &ta,
            json!({"mcp_server": "linear", "redirect_uri": redirect}),
        );
        refused(&r, 400, "invalid_request");
    }
    // Unknown servers and bodies.
    refused(
        &start_connect(&p, &ta, json!({"mcp_server": "nope"})),
        400,
        "invalid_request",
    );
    refused(
        &start_connect(
            &p,
            &ta,
            json!({"mcp_server": "linear", "resource": "https://x"}),
        ),
        400,
        "invalid_request",
    );
    refused(
        &start_connect(&p, &ta, json!({"client_secret": "s"})),
        400,
        "invalid_request",
    );

    // Nothing was stored by any of it; the failures are audited; no code or verifier leaks.
    assert_eq!(credential(&p), Value::Null);
    let s = p.stop();
    let failures = audit_records(&s)
        .iter()
        .filter(|r| r["action"] == "credential.connect" && r["outcome"] == "failure")
        .count();
    // Each refusal of a real connect (not the forged ones: anyone reaching the listener can
    // send those, and they are only logged).
    assert_eq!(failures, 11, "{failures}");
    let mut needles: Vec<String> = Vec::new();
    for what in ["codes", "verifiers"] {
        needles.extend(srv.list(what));
    }
    for c in srv.stats()["clients"].as_array().unwrap() {
        needles.push(c["secret"].as_str().unwrap().to_string());
    }
    needles.push(state);
    needles.push("client-secret-canary".into());
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    assert_secrets_nowhere(&s, &needles);
}

/// Without an admin API (no `SLUICE_JWT_SECRET`) the CLI still connects: the callback answers
/// on the admin listener, and the connected credential is used.
#[test]
fn the_cli_connects_through_the_callback_of_a_sidecar_without_an_admin_api() {
    let srv = AuthServer::start();
    let s = setup(&srv);
    let p = s.spawn_env(&[("SLUICE_SECRETS_KEY", MASTER_KEY)]);
    let r = call(p.admin_port, "GET", "/api/orgs", None, None, "");
    assert_eq!(r.code(), "admin_api_disabled");
    let (ok, out, err) = cli_connect(&p, &srv, false);
    assert!(ok, "{err}\n{}", p.log());
    let view: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["connected"]["registered"], true, "{view}");
    let key = key_with_tools(&p, "linear:*");
    let v = whoami(&p, &key);
    assert_eq!(v["steps"][0]["text"], "test-user", "{v}");
}
