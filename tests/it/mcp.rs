//! The MCP gateway from the outside: the official MCP Python SDK (server and client, pinned in
//! tests/requirements.txt) through sluice, with only a sluice key on the client side.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::support::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp");
const HINT: &str =
    "install the test packages with `pip install -r tests/requirements.txt` (./dev.sh test does)";

/// The Python MCP server and OAuth mock (tests/mcp/server.py); killed on drop.
struct McpServer {
    child: Child,
    port: u16,
}

impl McpServer {
    fn start() -> McpServer {
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(format!("{DIR}/server.py"))
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("python3: {e} ({HINT})"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "the MCP test server did not start ({HINT})"
        );
        McpServer { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stats(&self) -> Value {
        http_get(self.port, "/stats").unwrap().json()
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the official client with `steps` against `/mcp/<server>` with `key`.
fn client(p: &Proxy, server: &str, key: &str, steps: Value) -> Value {
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
fn key_with_tools(p: &Proxy, tools: &str) -> String {
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
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = p.cli(&["audit", "tail", "-n", "1000"], b"");
    let audit = String::from_utf8_lossy(&out.stdout).to_string();
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

fn rpc(p: &Proxy, server: &str, key: &str, body: &str) -> RawResponse {
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
    let pinned = pinned["key"].as_str().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(300));
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
}
