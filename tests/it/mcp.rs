//! The MCP gateway from the outside: the official MCP Python SDK (server and client, pinned in
//! tests/requirements.txt) through sluice, with only a sluice key on the client side.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::support::*;

pub(crate) const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp");
pub(crate) const HINT: &str =
    "install the test packages with `pip install -r tests/requirements.txt` (./dev.sh test does)";

/// The Python MCP server and OAuth mock (tests/mcp/server.py); killed on drop.
struct McpServer {
    child: Child,
    port: u16,
}

impl McpServer {
    /// Start it on a free port (see [`start_python`]).
    fn start() -> McpServer {
        let (child, port) = start_python("server.py");
        McpServer { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stats(&self) -> Value {
        http_get(self.port, "/stats").unwrap().json()
    }
}

/// Start the Python test server `script` (in tests/mcp) on a free port: the child and the port
/// once it printed "ready". A port another test process took meanwhile (the server exits
/// without "ready") is retried on a fresh one.
pub(crate) fn start_python(script: &str) -> (Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(format!("{DIR}/{script}"))
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("python3: {e} ({HINT})"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() == "ready" {
            return (child, port);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("the MCP test server {script} did not start ({HINT})");
}

/// POST `change` to a Python test server's `/control`.
pub(crate) fn post_control(port: u16, change: Value) {
    let body = change.to_string();
    let r = raw(
        port,
        format!(
            "POST /control HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200);
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the official client with `steps` against `/mcp/<server>` with `key`.
pub(crate) fn client(p: &Proxy, server: &str, key: &str, steps: Value) -> Value {
    let out = Command::new("python3")
        .arg(format!("{DIR}/client.py"))
        .arg(format!("http://127.0.0.1:{}/mcp/{server}", p.port))
        .arg(key)
        .arg(steps.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "MCP client failed ({HINT}):\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        p.log()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn mcp_config(s: &McpServer, credential: &str, kind: &str) -> String {
    format!(
        "[[mcp_servers]]\nname = \"tools\"\nurl = \"{}/mcp\"\nregion = \"us\"\ncredential = \"{credential}\"\ncredential_kind = \"{kind}\"\n",
        s.url()
    )
}

/// A key of the setup's org with these MCP tools, usable once the running sluice has it.
pub(crate) fn key_with_tools(p: &Proxy, tools: &str) -> String {
    let k = p.cli_json(
        &["keys", "create", "--org", &p.org_id, "--mcp-tools", tools],
        b"",
    );
    let key = k["key"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = raw(
            p.port,
            &post(
                "/v1/models",
                b"",
                &format!("Authorization: Bearer {key}\r\n"),
            ),
        )
        .unwrap();
        if r.status != 401 {
            return key;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the key never became usable"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn the_official_client_lists_and_calls_allowed_tools_with_only_a_sluice_key() {
    let up = Upstream::start();
    let srv = McpServer::start();
    let s = Setup::new(
        &mock_upstream(&up, ""),
        &mcp_config(&srv, "tools-token", "bearer"),
    );
    s.cli_json(
        &["credentials", "set", "tools-token"],
        b"static-token-for-tests\n",
    );
    let p = s.spawn();
    let key = key_with_tools(&p, "tools:lookup_customer,tools:slow");
    let v = client(
        &p,
        "tools",
        &key,
        json!([
            ["list"],
            ["call", "lookup_customer", {"customer_id": "c-42"}],
            ["call", "delete_everything", {}],
            ["call", "slow", {"seconds": 0.2}],
        ]),
    );
    assert_eq!(v["server"], "tools");
    assert!(
        v["session_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    let steps = v["steps"].as_array().unwrap();
    // Only the allowed tools are listed.
    assert_eq!(steps[0]["tools"], json!(["lookup_customer", "slow"]), "{v}");
    // The result is redacted: PII and the secret never reach the client.
    let text = steps[1]["text"].as_str().unwrap();
    assert!(
        text.contains("Customer c-42: Jane Doe, [REDACTED_EMAIL], card [REDACTED_CARD]"),
        "{text}"
    );
    assert!(
        text.contains("[REDACTED_SECRET]") && !text.contains("AKIA"),
        "{text}"
    );
    // A tool outside the policy is refused with -32001 tool_not_allowed.
    assert_eq!(steps[2]["code"], -32001, "{v}");
    assert_eq!(steps[2]["message"], "tool_not_allowed");
    assert_eq!(steps[3]["text"], "done");
    // The server saw sluice's credential only: never the app's sluice key, never the refused call.
    let st = srv.stats();
    let auths = st["authorizations"].as_array().unwrap();
    assert!(!auths.is_empty());
    assert!(
        auths.iter().all(|a| a == "Bearer static-token-for-tests"),
        "{st}"
    );
    // Audited per call, never with arguments or results.
    let m = p.metrics_with(&[
        "sluice_mcp_requests_total{method=\"tools/call\",outcome=\"refused\",server=\"tools\"} 1",
        "sluice_mcp_requests_total{method=\"tools/call\",outcome=\"success\",server=\"tools\"} 2",
        "sluice_mcp_requests_total{method=\"tools/list\",outcome=\"success\",server=\"tools\"} 1",
    ]);
    assert!(
        m.contains("sluice_response_redactions_total{entity=\"email\"}"),
        "{m}"
    );
    let tail = || {
        let out = p.cli(&["audit", "tail", "-n", "1000"], b"");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    eventually(
        "the refused call in the audit log",
        std::time::Duration::from_secs(5),
        || tail().contains("\"outcome\":\"refused\""),
    );
    let audit = tail();
    assert!(audit.contains("\"action\":\"mcp.call\""), "{audit}");
    assert!(
        audit.contains("\"name\":\"delete_everything\"")
            && audit.contains("\"outcome\":\"refused\"")
    );
    assert!(
        !audit.contains("c-42") && !audit.contains("Jane"),
        "arguments or results in the audit log"
    );
}

pub(crate) fn rpc(p: &Proxy, server: &str, key: &str, body: &str) -> RawResponse {
    raw(
        p.port,
        format!(
            "POST /mcp/{server} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap()
}

#[test]
fn unknown_servers_pins_bad_json_rpc_and_garbage_answers_are_handled_without_leaks() {
    // An "MCP server" that answers garbage with PII in it.
    let garbage = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n<html>oops bob@example.com leaked</html>"
            .to_vec(),
    );
    let up = Upstream::start();
    let extra = format!(
        "[[mcp_servers]]\nname = \"junk\"\nurl = \"{}/mcp\"\nregion = \"us\"\n[[mcp_servers]]\nname = \"eu-tools\"\nurl = \"{}/mcp\"\nregion = \"eu\"\n",
        garbage.base_url(),
        garbage.base_url()
    );
    let p = Setup::new(&mock_upstream(&up, ""), &extra).spawn();
    let key = key_with_tools(&p, "*:*");
    let call =
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{}}}"#;
    // A garbage answer becomes a JSON-RPC error for the call; nothing of it passes.
    let r = rpc(&p, "junk", &key, call);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["id"], 7);
    assert_eq!(v["error"]["code"], -32002);
    assert_eq!(v["error"]["message"], "invalid_upstream_message");
    assert!(!r.body_text().contains("bob@"));
    // Not JSON-RPC from the client: 400 with a JSON-RPC parse error, not forwarded.
    let before = garbage.requests();
    let r = rpc(&p, "junk", &key, "{not json");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32700);
    assert_eq!(garbage.requests(), before);
    // A region asked for with X-Sluice-Region is the server's or nothing: a server of
    // another region is never used in its place; an unknown region is 400.
    for (region, server, status, code) in [
        ("eu", "junk", 503, "region_unavailable"),
        ("US", "eu-tools", 503, "region_unavailable"),
        ("mars", "junk", 400, "invalid_region"),
    ] {
        let r = raw(
            p.port,
            format!(
                "POST /mcp/{server} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nX-Sluice-Region: {region}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{call}",
                call.len()
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{region} {server}"
        );
        assert_eq!(garbage.requests(), before, "{region} {server}");
    }
    // Unknown server: 404; no key: 401.
    assert_eq!(rpc(&p, "nope", &key, call).status, 404);
    assert_eq!(rpc(&p, "junk", "sk-sluice-wrong", call).status, 401);
    // A key pinned to us reaches only us servers.
    let pinned = p.cli_json(
        &[
            "keys",
            "create",
            "--org",
            &p.org_id,
            "--region",
            "us",
            "--mcp-tools",
            "*:*",
        ],
        b"",
    );
    let pinned_id = pinned["id"].as_str().unwrap().to_string();
    let pinned = pinned["key"].as_str().unwrap().to_string();
    eventually(
        "the new key in the snapshot",
        std::time::Duration::from_secs(5),
        || rpc(&p, "eu-tools", &pinned, call).status != 401,
    );
    let r = rpc(&p, "eu-tools", &pinned, call);
    assert_eq!((r.status, r.code().as_str()), (403, "permission_denied"));
    assert_eq!(garbage.requests(), before);
    // The admin API lists both servers with their health.
    let op = p.cli_json(
        &["users", "create", "--email", "op@example.com", "--operator"],
        b"a long admin password\n",
    );
    let uri = op["totp"]["otpauth_uri"].as_str().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let login = json!({"email": "op@example.com", "password": "a long admin password",
        "totp": sluice::admin::users::code_for_uri(uri, now).unwrap()})
    .to_string();
    let r = raw(
        p.admin_port,
        format!(
            "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{login}",
            login.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let token = r.json()["token"].as_str().unwrap().to_string();
    let r = raw(
        p.admin_port,
        format!("GET /api/mcp/servers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let servers = r.json();
    assert_eq!(servers["data"][0]["name"], "junk");
    assert_eq!(servers["data"][0]["path"], "/mcp/junk");
    assert_eq!(servers["data"][1]["region"], "eu");
    assert_eq!(servers["data"][0]["healthy"], true);
    // The pinned key's calls, refused before a server was chosen, are audited, and are not
    // LLM usage: its hourly usage roll-up (written with the records) has no row for them.
    let get = |path: &str| {
        raw(
            p.admin_port,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap()
        .json()
    };
    let org = &p.org_id;
    eventually(
        "the refused calls in the audit log",
        std::time::Duration::from_secs(10),
        || {
            get(&format!(
                "/api/audit?org_id={org}&action=proxy.request&limit=100"
            ))["data"]
                .as_array()
                .is_some_and(|d| {
                    d.iter()
                        .filter(|r| r["actor"] == format!("key:{pinned_id}"))
                        .count()
                        >= 2
                })
        },
    );
    let usage = get(&format!("/api/usage?org_id={org}&group_by=key"));
    let rows = usage["data"].as_array().unwrap();
    assert!(
        !rows.is_empty(),
        "the LLM calls that wait for a key count: {usage}"
    );
    assert!(
        rows.iter().all(|r| r["key_id"] != pinned_id.as_str()),
        "{usage}"
    );
}

impl McpServer {
    /// Change the OAuth mock's behaviour (see tests/mcp/server.py).
    fn control(&self, change: Value) {
        post_control(self.port, change);
    }

    fn count(&self, what: &str) -> u64 {
        self.stats()[what].as_u64().unwrap()
    }
}

const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow","arguments":{"seconds":0}}}"#;

/// Call `slow` over raw HTTP (no MCP session: the test server is stateful, so this checks
/// what sluice answers before the server's own session checks matter).
fn call_status(p: &Proxy, key: &str) -> (u16, String) {
    let r = rpc(p, "tools", key, CALL);
    (r.status, r.code())
}

/// Wait (bounded) until `f` holds.
fn set_oauth(s: &Setup, name: &str, srv: &McpServer, extra: &[&str], secret: &[u8]) -> Output {
    let url = format!("{}/oauth/token", srv.url());
    let mut args = vec![
        "credentials",
        "set-oauth",
        name,
        "--token-url",
        &url,
        "--client-id",
        "sluice",
    ];
    args.extend_from_slice(extra);
    s.cli(&args, secret)
}

use std::process::Output;

#[test]
fn oauth_tokens_are_refreshed_before_expiry_failures_are_clear_and_nothing_leaks() {
    let up = Upstream::start();
    let srv = McpServer::start();
    let resource = format!("{}/mcp", srv.url());
    let s = Setup::new(
        &mock_upstream(&up, ""),
        &format!(
            "[log]\nlevel = \"debug\"\n{}",
            mcp_config(&srv, "tools-oauth", "oauth")
        ),
    );
    // A wrong secret fails at once, naming the endpoint's answer; nothing is stored.
    let bad = set_oauth(&s, "tools-oauth", &srv, &[], b"wrong-secret\n");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("http_401") && err.contains("nothing was stored"),
        "{err}"
    );
    assert!(!err.contains("wrong-secret"), "{err}");
    assert_eq!(
        s.cli_json(&["credentials", "list"], b"")["credentials"],
        json!([])
    );
    // A secret on the command line is refused.
    let argv = set_oauth(&s, "tools-oauth", &srv, &["client-secret-canary"], b"");
    assert!(!argv.status.success());
    // The right one: a first token is obtained now (with the RFC 8707 resource).
    let out = set_oauth(
        &s,
        "tools-oauth",
        &srv,
        &["--resource", &resource, "--scope", "tools"],
        b"client-secret-canary\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(srv.count("grants"), 1);
    let list = s.cli_json(&["credentials", "list"], b"");
    let c = &list["credentials"][0];
    assert_eq!(c["kind"], "oauth");
    assert_eq!(c["oauth"]["resource"], resource.as_str());
    assert_eq!(c["oauth"]["grant"], "client_credentials");
    assert!(c["token_expires_at"].is_string(), "{c}");
    let p = s.spawn();
    let key = key_with_tools(&p, "tools:*");

    // Calls over 7 s, with tokens living 3 s: refreshed at 80%, so no call ever fails.
    let mut steps = Vec::new();
    for _ in 0..10 {
        steps.push(json!(["call", "slow", {"seconds": 0}]));
        steps.push(json!(["sleep", 0.7]));
    }
    let v = client(&p, "tools", &key, Value::Array(steps));
    for step in v["steps"].as_array().unwrap() {
        assert!(
            step.get("error").is_none() && step["is_error"] != true,
            "{v}"
        );
    }
    let st = srv.stats();
    assert_eq!(
        st["rejected"], 0,
        "a call went out with an expired token: {st}"
    );
    assert!(st["grants"].as_u64().unwrap() >= 3, "{st}");
    assert!(
        st["authorizations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a.as_str().unwrap().starts_with("Bearer tok-")),
        "{st}"
    );
    // The expiry gauge shows the current token's (exact) expiry: ahead of now, within its 3 s
    // life. Polled: a scrape may fall between a refresh and the snapshot that carries it.
    let series = "sluice_credential_expiry_timestamp_seconds{credential=\"tools-oauth\"}";
    eventually(
        "the expiry gauge to show the current token",
        std::time::Duration::from_secs(10),
        || {
            let m = p.metrics_with(&[series]);
            let expiry: f64 = m
                .lines()
                .find(|l| l.starts_with(series))
                .and_then(|l| l.rsplit(' ').next())
                .unwrap()
                .parse()
                .unwrap();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            assert!(expiry < now + 4.0, "{expiry} vs {now}");
            // Exact, not cut to the second: a token obtained at a random instant expires
            // at one with a fraction.
            assert!(expiry.fract() != 0.0, "{expiry}");
            expiry > now
        },
    );

    // The token endpoint fails: once the token expired, calls get 503 credential_unavailable
    // (never a call with an expired token), and the failures are counted.
    srv.control(json!({"fail": true}));
    eventually(
        "the token to expire",
        std::time::Duration::from_secs(10),
        || call_status(&p, &key) == (503, "credential_unavailable".into()),
    );
    let rejected = srv.count("rejected");
    p.metrics_with(&["sluice_oauth_refresh_failures_total{credential=\"tools-oauth\"}"]);
    let list = p.cli_json(&["credentials", "list"], b"");
    assert_eq!(list["credentials"][0]["last_error"], "http_503", "{list}");
    let text = String::from_utf8_lossy(&p.cli(&["credentials", "list"], b"").stdout).to_string();
    assert!(text.contains("REFRESH FAILING (http_503"), "{text}");
    // It recovers by itself once the endpoint is back.
    srv.control(json!({"fail": false}));
    eventually("a new token", std::time::Duration::from_secs(40), || {
        call_status(&p, &key).0 != 503
    });
    assert_eq!(srv.count("rejected"), rejected);
    let log = p.log();
    assert!(log.contains("cannot obtain an OAuth token"), "{log}");
    let s = p.stop();
    assert_secrets_nowhere(&s, &["client-secret-canary", "tok-", "wrong-secret"]);
}

#[test]
fn refresh_tokens_rotate_a_401_forces_one_refresh_and_llm_upstreams_use_oauth_too() {
    let up = Upstream::start();
    let srv = McpServer::start();
    let s = Setup::new(
        &mock_upstream(&up, "credential = \"llm-oauth\"\n"),
        &format!(
            "[log]\nlevel = \"debug\"\n{}",
            mcp_config(&srv, "tools-rt", "oauth")
        ),
    );
    srv.control(json!({"ttl": 2}));
    let out = set_oauth(
        &s,
        "tools-rt",
        &srv,
        &["--grant", "refresh_token"],
        b"refresh-canary-0\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same kind of credential for an LLM upstream (client credentials), its secret read
    // from a file (a mounted Secret).
    let file = s.dir.path().join("client-secret");
    std::fs::write(&file, "client-secret-canary\n").unwrap();
    let arg = format!("--secret-file={}", file.display());
    let out = set_oauth(&s, "llm-oauth", &srv, &[&arg], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = s.spawn();
    let key = key_with_tools(&p, "tools:*");
    // Rotation: each refresh spends the stored refresh token and stores the new one; a lost
    // one would make the next refresh fail with invalid_grant.
    let before = srv.count("refresh_grants");
    eventually(
        "three rotations",
        std::time::Duration::from_secs(15),
        || srv.count("refresh_grants") >= before + 3,
    );
    assert_ne!(call_status(&p, &key).0, 503);
    let list = p.cli_json(&["credentials", "list"], b"");
    let rt = list["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tools-rt")
        .unwrap()
        .clone();
    assert_eq!(rt["refresh_failures"], 0, "{list}");
    assert!(rt["last_error"].is_null(), "{list}");

    // The LLM upstream gets the OAuth access token, never the app's key.
    let r = raw(
        p.port,
        &p.post(
            "/v1/chat/completions",
            br#"{"model":"gpt-4o-mini","messages":[]}"#,
            "",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    let sent = up
        .requests()
        .last()
        .unwrap()
        .header("authorization")
        .unwrap()
        .to_string();
    assert!(sent.starts_with("Bearer tok-"), "{sent}");
    // A 401 from the provider is not passed on (it can quote the credential): 502.
    let r = raw(
        p.port,
        &p.post("/v1/chat/completions", b"{}", "X-Mock: status:401\r\n"),
    )
    .unwrap();
    assert_eq!((r.status, r.code().as_str()), (502, "upstream_auth_failed"));

    // Long-lived tokens now; then the server revokes them all. The next call gets a clear
    // 502 (not the server's 401, which would send the app's MCP client into its own OAuth
    // flow), sluice refreshes at once, and the call after that works.
    srv.control(json!({"ttl": 600}));
    let grants = srv.count("refresh_grants");
    eventually(
        "a long-lived token",
        std::time::Duration::from_secs(10),
        || srv.count("refresh_grants") > grants,
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let grants = srv.count("refresh_grants");
    srv.control(json!({"revoke": true}));
    let r = rpc(&p, "tools", &key, CALL);
    assert_eq!((r.status, r.code().as_str()), (502, "upstream_auth_failed"));
    assert!(r.header("www-authenticate").is_none());
    eventually(
        "the forced refresh",
        std::time::Duration::from_secs(5),
        || srv.count("refresh_grants") == grants + 1,
    );
    eventually(
        "the new token in use",
        std::time::Duration::from_secs(5),
        || call_status(&p, &key).0 != 502,
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        srv.count("refresh_grants"),
        grants + 1,
        "one 401, one refresh"
    );
    let s = p.stop();
    assert_secrets_nowhere(&s, &["refresh-canary", "client-secret-canary", "tok-"]);
}

/// The README's MCP examples (the 2.x and the 1.x one), extracted from README.md and run as
/// written (only the port and the key filled in) with the newest official SDK of each line:
/// a key allowed `github:create_issue` lists that tool alone and calls it.
#[test]
fn the_readme_mcp_examples_work_with_the_newest_1x_and_2x_sdks() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("## MCP gateway").unwrap()..];
    let blocks: Vec<&str> = section
        .split("```python\n")
        .skip(1)
        .take(2)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(
        blocks[0].contains("streamable_http_client(")
            && blocks[1].contains("streamablehttp_client("),
        "the README's MCP examples moved: {blocks:?}"
    );
    let sdk2 = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/sdk2");
    assert!(
        std::path::Path::new(sdk2).join("mcp").is_dir(),
        "the MCP SDK 2.x is not in tests/mcp/sdk2: ./dev.sh setup test installs it"
    );

    let up = Upstream::start();
    let srv = McpServer::start();
    let github = format!(
        "[[mcp_servers]]\nname = \"github\"\nurl = \"{}/mcp\"\nregion = \"us\"\ncredential = \"gh\"\n",
        srv.url()
    );
    let s = Setup::new(&mock_upstream(&up, ""), &github);
    s.cli_json(&["credentials", "set", "gh"], b"static-token-for-tests\n");
    let p = s.spawn();
    let key = key_with_tools(&p, "github:create_issue");
    for (block, pythonpath) in [(blocks[0], Some(sdk2)), (blocks[1], None)] {
        let code = block.replace("127.0.0.1:8480", &format!("127.0.0.1:{}", p.port));
        let indented: String = code.lines().map(|l| format!("    {l}\n")).collect();
        let script = format!(
            "import asyncio, json, sys, mcp\nSLUICE_KEY = sys.argv[1]\n\nasync def main():\n{indented}    print(json.dumps({{\"sdk\": mcp.__file__, \"tools\": [t.name for t in tools.tools]}}))\n\nasyncio.run(main())\n"
        );
        let mut cmd = Command::new("python3");
        cmd.arg("-c").arg(&script).arg(&key);
        if let Some(path) = pythonpath {
            cmd.env("PYTHONPATH", path);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "the README example failed:\n{script}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            p.log()
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["tools"], json!(["create_issue"]), "{v}");
        // The SDK the example ran with is the one meant.
        assert_eq!(
            v["sdk"].as_str().unwrap().starts_with(sdk2),
            pythonpath.is_some(),
            "{v}"
        );
    }
    assert_eq!(srv.stats()["issues"], 2);
}
