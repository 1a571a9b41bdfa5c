//! JSON-RPC 2.0 as MCP carries it over Streamable HTTP: one message (or a batch) per POST, and
//! answers as one JSON body or as SSE events, each one message.
//!
//! On the way in ([`inspect`]): every request is read for its method and, for `tools/call`,
//! `resources/read` and `prompts/get`, the tool, URI or prompt it names; one the key may not
//! use refuses the whole body, answered by sluice with a JSON-RPC error (code -32001,
//! `tool_not_allowed` ...): it never reaches the server.
//!
//! On the way back ([`Responses`]): every message must be valid JSON-RPC 2.0 and at most the
//! configured size, else it is replaced by a JSON-RPC error (-32002, `invalid_upstream_message`)
//! for the request it answers; `tools/list`, `resources/list`, `resources/templates/list` and
//! `prompts/list` results are filtered to what the key may use; every string of every message
//! (tool results' `content[].text`, `structuredContent`, ...) is redacted by the key's policy.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{Policy, BAD_UPSTREAM, NOT_ALLOWED};
use crate::redact::{Counts, Engine, Scan};

/// One request or notification of an incoming body.
#[derive(Debug, Clone)]
pub struct Call {
    /// `None` for a notification.
    pub id: Option<Value>,
    pub method: String,
    /// The tool, resource URI or prompt a call names.
    pub name: Option<String>,
    /// Refused by the key's policy.
    pub refused: bool,
}

/// What an incoming body asks for.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub calls: Vec<Call>,
    /// Set when something was refused: the JSON-RPC answer to send instead of forwarding.
    pub refusal: Option<Vec<u8>>,
}

fn error(id: &Value, code: i64, message: &str, data: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message, "data": data}})
}

/// Read a JSON-RPC body sent to `server`. `Err` is the answer to a body that is not JSON-RPC
/// (parse error -32700 or invalid request -32600), to be sent with status 400.
pub fn inspect(body: &[u8], server: &str, policy: &Policy) -> Result<Inspection, Vec<u8>> {
    let invalid = |code: i64, msg: &str| {
        serde_json::to_vec(&error(&Value::Null, code, msg, Value::Null)).unwrap_or_default()
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| invalid(-32700, "parse_error"))?;
    let (messages, batch) = match v {
        Value::Array(a) if !a.is_empty() => (a, true),
        Value::Object(_) => (vec![v], false),
        _ => return Err(invalid(-32600, "invalid_request")),
    };
    let mut calls = Vec::with_capacity(messages.len());
    for m in &messages {
        let Some(obj) = m.as_object() else {
            return Err(invalid(-32600, "invalid_request"));
        };
        if obj.get("jsonrpc") != Some(&json!("2.0")) {
            return Err(invalid(-32600, "invalid_request"));
        }
        let Some(method) = obj.get("method").and_then(Value::as_str) else {
            // A response (to a server's request, e.g. sampling): nothing to check.
            calls.push(Call {
                id: obj.get("id").cloned(),
                method: "response".into(),
                name: None,
                refused: false,
            });
            continue;
        };
        let params = obj.get("params");
        let named = |key: &str| {
            params
                .and_then(|p| p.get(key))
                .and_then(Value::as_str)
                .map(String::from)
        };
        let (name, allowed) = match method {
            "tools/call" => {
                let n = named("name");
                let ok = n.as_deref().is_some_and(|t| policy.tools.allows(server, t));
                (n, ok)
            }
            "resources/read" | "resources/subscribe" => {
                let n = named("uri");
                let ok = n
                    .as_deref()
                    .is_some_and(|u| policy.resources.allows(server, u));
                (n, ok)
            }
            "prompts/get" => {
                let n = named("name");
                let ok = n
                    .as_deref()
                    .is_some_and(|p| policy.prompts.allows(server, p));
                (n, ok)
            }
            _ => (None, true),
        };
        calls.push(Call {
            id: obj.get("id").cloned(),
            method: method.to_string(),
            name,
            refused: !allowed,
        });
    }
    if !calls.iter().any(|c| c.refused) {
        return Ok(Inspection {
            calls,
            refusal: None,
        });
    }
    // Something is refused: nothing of the body goes to the server.
    let answers: Vec<Value> = calls
        .iter()
        .filter_map(|c| {
            let id = c.id.as_ref()?;
            let (message, what) = match c.method.as_str() {
                "tools/call" => ("tool_not_allowed", "tool"),
                "resources/read" | "resources/subscribe" => ("resource_not_allowed", "resource"),
                "prompts/get" => ("prompt_not_allowed", "prompt"),
                _ => ("batch_refused", "batch"),
            };
            let message = if c.refused { message } else { "batch_refused" };
            let data = if c.refused {
                json!({"server": server, what: c.name})
            } else {
                json!({"server": server})
            };
            Some(error(id, NOT_ALLOWED, message, data))
        })
        .collect();
    let body = if batch {
        serde_json::to_vec(&answers)
    } else {
        serde_json::to_vec(answers.first().unwrap_or(&Value::Null))
    }
    .unwrap_or_default();
    Ok(Inspection {
        calls,
        refusal: Some(body),
    })
}

/// The key of an id in the table of pending calls.
fn id_key(id: &Value) -> String {
    id.to_string()
}

/// Validates and rewrites what one MCP server sends back to one request (or on its stream).
pub struct Responses {
    server: String,
    policy: Policy,
    engine: Engine,
    scan: Scan,
    max: usize,
    /// The method of each request in flight, by id.
    pending: HashMap<String, String>,
    /// `success` or `error` per answered id.
    outcomes: HashMap<String, &'static str>,
    counts: Counts,
    replaced: u32,
    /// SSE bytes not yet a complete event.
    buf: Vec<u8>,
    /// The stream was ended by an error event.
    failed: bool,
}

impl Responses {
    /// For the requests `calls` (already inspected) to `server`.
    pub fn new(
        server: &str,
        policy: Policy,
        calls: &[Call],
        engine: Engine,
        scan: Scan,
        max: usize,
    ) -> Responses {
        let pending = calls
            .iter()
            .filter_map(|c| Some((id_key(c.id.as_ref()?), c.method.clone())))
            .collect();
        Responses {
            server: server.to_string(),
            policy,
            engine,
            scan,
            max,
            pending,
            outcomes: HashMap::new(),
            counts: Counts::default(),
            replaced: 0,
            buf: Vec::new(),
            failed: false,
        }
    }

    /// The next bytes of an SSE answer: the complete events among them, each message
    /// validated and rewritten (ids and event names kept). An event that outgrows the bound
    /// ends the stream with an error message.
    pub fn push_sse(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.failed {
            return out;
        }
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(end) = crate::redact::sse::event_end(&self.buf[start..]) {
            let raw = self.buf[start..start + end].to_vec();
            start += end;
            self.sse_event(&raw, &mut out);
        }
        self.buf.drain(..start);
        if self.buf.len() > self.max + 1024 {
            self.buf.clear();
            self.failed = true;
            let id = self.fallback_id();
            let e = self.replace(id, "upstream_message_too_large");
            out.extend_from_slice(format!("data: {e}\n\n").as_bytes());
        }
        out
    }

    /// The end of an SSE answer: an unterminated last event is handled as one.
    pub fn finish_sse(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.failed && !self.buf.is_empty() {
            let mut raw = std::mem::take(&mut self.buf);
            raw.extend_from_slice(b"\n\n");
            self.sse_event(&raw, &mut out);
        }
        out
    }

    fn sse_event(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(raw);
        match crate::redact::sse::Event::parse(&text) {
            None => out.extend_from_slice(raw),
            Some(ev) => {
                let new = self.message(ev.data.as_bytes());
                ev.write(&String::from_utf8_lossy(&new), out);
            }
        }
    }

    /// Values redacted so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Messages replaced by an error because they were invalid or too large.
    pub fn replaced(&self) -> u32 {
        self.replaced
    }

    /// How the request with `id` ended: `success`, `error`, or `None` if unanswered.
    pub fn outcome(&self, id: &Value) -> Option<&'static str> {
        self.outcomes.get(&id_key(id)).copied()
    }

    /// The id a message that cannot be read most likely answers: the only request in flight.
    fn fallback_id(&self) -> Value {
        let mut open = self
            .pending
            .keys()
            .filter(|k| !self.outcomes.contains_key(*k));
        match (open.next(), open.next()) {
            (Some(k), None) => serde_json::from_str(k).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    fn replace(&mut self, id: Value, why: &str) -> Value {
        self.replaced += 1;
        if !id.is_null() {
            self.outcomes.insert(id_key(&id), "error");
        }
        error(&id, BAD_UPSTREAM, why, json!({"server": self.server}))
    }

    /// One message (a JSON body, or one SSE event's data) from the server: what to pass on.
    pub fn message(&mut self, raw: &[u8]) -> Vec<u8> {
        let out = if raw.len() > self.max {
            let id = self.fallback_id();
            self.replace(id, "upstream_message_too_large")
        } else {
            match serde_json::from_slice::<Value>(raw) {
                Ok(Value::Array(items)) if !items.is_empty() => {
                    Value::Array(items.into_iter().map(|m| self.one(m)).collect())
                }
                Ok(m @ Value::Object(_)) => self.one(m),
                _ => {
                    let id = self.fallback_id();
                    self.replace(id, "invalid_upstream_message")
                }
            }
        };
        serde_json::to_vec(&out).unwrap_or_default()
    }

    fn one(&mut self, mut m: Value) -> Value {
        let valid = m.get("jsonrpc") == Some(&json!("2.0"))
            && (m.get("method").is_some_and(Value::is_string)
                || (m.get("id").is_some()
                    && (m.get("result").is_some() != m.get("error").is_some())));
        if !valid {
            let id = m.get("id").cloned().unwrap_or_else(|| self.fallback_id());
            return self.replace(id, "invalid_upstream_message");
        }
        if let Some(id) = m.get("id").cloned().filter(|_| m.get("method").is_none()) {
            let key = id_key(&id);
            let outcome = if m.get("error").is_some() {
                "error"
            } else {
                "success"
            };
            self.outcomes.insert(key.clone(), outcome);
            if let Some(method) = self.pending.get(&key).cloned() {
                self.filter(&method, &mut m);
            }
        }
        let text = m.to_string();
        match self.engine.redact_json(&text, self.scan, &mut self.counts) {
            Ok(Some(new)) => serde_json::from_str(&new).unwrap_or(m),
            _ => m,
        }
    }

    /// Keep only what the key may use in a list result.
    fn filter(&self, method: &str, m: &mut Value) {
        let (field, key, list) = match method {
            "tools/list" => ("tools", "name", &self.policy.tools),
            "resources/list" => ("resources", "uri", &self.policy.resources),
            "resources/templates/list" => {
                ("resourceTemplates", "uriTemplate", &self.policy.resources)
            }
            "prompts/list" => ("prompts", "name", &self.policy.prompts),
            _ => return,
        };
        if let Some(items) = m
            .get_mut("result")
            .and_then(|r| r.get_mut(field))
            .and_then(Value::as_array_mut)
        {
            items.retain(|it| {
                it.get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|n| list.allows(&self.server, n))
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::AllowList;

    fn policy() -> Policy {
        Policy {
            tools: AllowList::parse("tools:lookup,tools:slow").unwrap(),
            resources: AllowList::parse("tools:file:///docs/*,tools:file:///a.md").unwrap(),
            prompts: AllowList::default(),
        }
    }

    #[test]
    fn a_call_outside_the_policy_is_answered_here_with_a_json_rpc_error() {
        let p = policy();
        let ok = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup","arguments":{}}}"#;
        let i = inspect(ok, "tools", &p).unwrap();
        assert!(i.refusal.is_none());
        assert_eq!(i.calls[0].name.as_deref(), Some("lookup"));
        let bad =
            br#"{"jsonrpc":"2.0","id":"x7","method":"tools/call","params":{"name":"delete_all"}}"#;
        let i = inspect(bad, "tools", &p).unwrap();
        let v: Value = serde_json::from_slice(&i.refusal.unwrap()).unwrap();
        assert_eq!(v["id"], "x7");
        assert_eq!(v["error"]["code"], NOT_ALLOWED);
        assert_eq!(v["error"]["message"], "tool_not_allowed");
        // The same tool on another server is another grant.
        assert!(inspect(ok, "other", &p).unwrap().refusal.is_some());
        // Prompts: none granted.
        let pr = br#"{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"p"}}"#;
        assert!(inspect(pr, "tools", &p).unwrap().refusal.is_some());
        // A batch with one refused call is refused whole.
        let batch = format!(
            "[{},{}]",
            std::str::from_utf8(ok).unwrap(),
            std::str::from_utf8(bad).unwrap()
        );
        let i = inspect(batch.as_bytes(), "tools", &p).unwrap();
        let v: Value = serde_json::from_slice(&i.refusal.unwrap()).unwrap();
        assert_eq!(v[0]["error"]["message"], "batch_refused");
        assert_eq!(v[1]["error"]["message"], "tool_not_allowed");
        // Not JSON-RPC at all.
        assert!(inspect(b"{nope", "tools", &p).is_err());
        assert!(inspect(br#"{"id":1,"method":"x"}"#, "tools", &p).is_err());
    }

    #[test]
    fn answers_are_validated_filtered_and_redacted() {
        let p = policy();
        let list = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let calls = inspect(list, "tools", &p).unwrap().calls;
        let mut r = Responses::new("tools", p.clone(), &calls, Engine::new(), Scan::ALL, 4096);
        let out = r.message(br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"lookup"},{"name":"delete_all"},{"name":"slow"}]}}"#);
        let v: Value = serde_json::from_slice(&out).unwrap();
        let names: Vec<&str> = v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["lookup", "slow"]);
        assert_eq!(r.outcome(&json!(1)), Some("success"));

        let call = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"lookup"}}"#;
        let calls = inspect(call, "tools", &p).unwrap().calls;
        let mut r = Responses::new("tools", p.clone(), &calls, Engine::new(), Scan::ALL, 4096);
        let out = r.message(br#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"mail jane@example.com, key AKIAIOSFODNN7EXAMPLE"}],"structuredContent":{"email":"jane@example.com"}}}"#);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("jane@") && !text.contains("AKIA"), "{text}");
        assert_eq!(r.counts().total(), 3);
        // Garbage and oversized answers become errors for the request they answer.
        let mut r = Responses::new("tools", p.clone(), &calls, Engine::new(), Scan::ALL, 4096);
        let out: Value = serde_json::from_slice(&r.message(b"<html>oops</html>")).unwrap();
        assert_eq!(out["error"]["code"], BAD_UPSTREAM);
        assert_eq!(out["id"], 2);
        let out: Value = serde_json::from_slice(
            &r.message(br#"{"jsonrpc":"2.0","id":2,"result":1,"error":{}}"#),
        )
        .unwrap();
        assert_eq!(out["error"]["message"], "invalid_upstream_message");
        let big = format!(
            r#"{{"jsonrpc":"2.0","id":2,"result":{{"t":"{}"}}}}"#,
            "a".repeat(5000)
        );
        let out: Value = serde_json::from_slice(&r.message(big.as_bytes())).unwrap();
        assert_eq!(out["error"]["message"], "upstream_message_too_large");
        assert_eq!(r.replaced(), 3);
    }
}
