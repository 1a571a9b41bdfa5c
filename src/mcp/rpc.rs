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

/// The requests a client may send an MCP server through sluice: the methods of the MCP
/// specification sluice understands. Anything else is refused (deny by default).
pub const REQUESTS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
];

/// The notifications a client may send an MCP server through sluice.
pub const NOTIFICATIONS: &[&str] = &[
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// The members of a JSON-RPC message sluice reads: one written in another ASCII case
/// (`Method`, `ID`) is refused, since case-blind decoders read it where sluice would not.
const MESSAGE_MEMBERS: &[&str] = &["jsonrpc", "method", "params", "id", "result", "error"];
/// The members of `params` (and of a completion's `ref`) sluice reads.
const PARAMS_MEMBERS: &[&str] = &["name", "uri", "ref", "type"];

/// One request or notification of an incoming body.
#[derive(Debug, Clone)]
pub struct Call {
    /// `None` for a notification.
    pub id: Option<Value>,
    pub method: String,
    /// The tool, resource URI or prompt a call names.
    pub name: Option<String>,
    /// Refused (by the key's policy, or a method sluice does not forward).
    pub refused: bool,
    /// Why, when refused: the JSON-RPC error's code, message and what it names.
    denial: Option<Denial>,
}

#[derive(Debug, Clone, Copy)]
struct Denial {
    code: i64,
    message: &'static str,
    /// The kind of thing named (`tool`, `resource`, `prompt`), if any.
    what: Option<&'static str>,
    /// Why a resource URI was refused before its policy was looked at.
    reason: Option<&'static str>,
}

/// Why the MCP gateway answered a body itself: a stable code (README "Error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The body is not one JSON-RPC message or batch.
    InvalidJsonRpc,
    /// A member named twice, or in another case.
    AmbiguousJson,
    /// A tool, resource or prompt the key may not use.
    ToolNotAllowed,
    /// A method sluice does not forward.
    MethodNotAllowed,
}

impl Refusal {
    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::InvalidJsonRpc => "invalid_json_rpc",
            Refusal::AmbiguousJson => "ambiguous_json",
            Refusal::ToolNotAllowed => "tool_not_allowed",
            Refusal::MethodNotAllowed => "mcp_method_not_allowed",
        }
    }
}

/// What an incoming body asks for.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub calls: Vec<Call>,
    /// Set when something was refused: why, and the JSON-RPC answer to send instead of
    /// forwarding. [`Refusal::ToolNotAllowed`] when a tool, resource or prompt was refused,
    /// else [`Refusal::MethodNotAllowed`].
    pub refusal: Option<(Refusal, Vec<u8>)>,
}

/// A body that is not one unambiguous JSON-RPC message or batch: the answer (status 400).
#[derive(Debug, Clone)]
pub struct Invalid {
    /// [`Refusal::InvalidJsonRpc`], [`Refusal::AmbiguousJson`], or for refused
    /// notifications the refusal's own code.
    pub code: Refusal,
    pub body: Vec<u8>,
}

fn error(id: &Value, code: i64, message: &str, data: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message, "data": data}})
}

/// The answer sluice gives an app's requests when the server could not be used at all (`reason`:
/// a stable code such as `upstream_tls_failed`): one JSON-RPC error per request (a single
/// object for one, an array for several), `None` when the body held no request (notifications
/// only, or a GET/DELETE: the HTTP error stands).
pub fn unreachable_answer(calls: &[Call], server: &str, reason: &str) -> Option<Vec<u8>> {
    let errors: Vec<Value> = calls
        .iter()
        .filter(|c| c.method != "response")
        .filter_map(|c| c.id.as_ref())
        .map(|id| {
            error(
                id,
                BAD_UPSTREAM,
                reason,
                json!({"server": server, "reason": reason}),
            )
        })
        .collect();
    match errors.len() {
        0 => None,
        1 => serde_json::to_vec(&errors[0]).ok(),
        _ => serde_json::to_vec(&errors).ok(),
    }
}

/// Whether a JSON-RPC id is one MCP allows: a string or an integer.
fn is_valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

/// Read a JSON-RPC body sent to `server`. `Err` is the answer to a body that is not JSON-RPC
/// (parse error -32700, invalid request -32600), or whose refused messages await no answer
/// (notifications), to be sent with status 400.
pub fn inspect(body: &[u8], server: &str, policy: &Policy) -> Result<Inspection, Invalid> {
    let invalid = |code: Refusal, rpc: i64, msg: &str| Invalid {
        code,
        body: serde_json::to_vec(&error(&Value::Null, rpc, msg, Value::Null)).unwrap_or_default(),
    };
    let v = crate::json::parse(body).map_err(|e| match e {
        crate::json::Error::Invalid => invalid(Refusal::InvalidJsonRpc, -32700, "parse_error"),
        crate::json::Error::Duplicate => invalid(Refusal::AmbiguousJson, -32600, "ambiguous_json"),
    })?;
    let (messages, batch) = match v {
        Value::Array(a) if !a.is_empty() => (a, true),
        Value::Object(_) => (vec![v], false),
        _ => return Err(invalid(Refusal::InvalidJsonRpc, -32600, "invalid_request")),
    };
    let mut calls: Vec<Call> = Vec::with_capacity(messages.len());
    let mut ids = std::collections::HashSet::new();
    for m in &messages {
        let Some(obj) = m.as_object() else {
            return Err(invalid(Refusal::InvalidJsonRpc, -32600, "invalid_request"));
        };
        let params = obj.get("params");
        let params_obj = params.and_then(Value::as_object);
        let ref_obj = params_obj
            .and_then(|p| p.get("ref"))
            .and_then(Value::as_object);
        if crate::json::case_variant(obj, MESSAGE_MEMBERS).is_some()
            || params_obj.is_some_and(|p| crate::json::case_variant(p, PARAMS_MEMBERS).is_some())
            || ref_obj.is_some_and(|r| crate::json::case_variant(r, PARAMS_MEMBERS).is_some())
        {
            return Err(invalid(Refusal::AmbiguousJson, -32600, "ambiguous_json"));
        }
        if obj.get("jsonrpc") != Some(&json!("2.0")) {
            return Err(invalid(Refusal::InvalidJsonRpc, -32600, "invalid_request"));
        }
        let id = obj.get("id").cloned();
        if id.as_ref().is_some_and(|id| !is_valid_id(id)) || params.is_some_and(|p| !p.is_object())
        {
            return Err(invalid(Refusal::InvalidJsonRpc, -32600, "invalid_request"));
        }
        // One id per message of a batch: two answers to one id could not be told apart.
        if let Some(id) = &id {
            if !ids.insert(id_key(id)) {
                return Err(invalid(Refusal::InvalidJsonRpc, -32600, "duplicate_id"));
            }
        }
        let Some(method) = obj.get("method") else {
            // A response (to a server's request, e.g. sampling): an id, a result or an error.
            if id.is_none() || obj.contains_key("result") == obj.contains_key("error") {
                return Err(invalid(Refusal::InvalidJsonRpc, -32600, "invalid_request"));
            }
            calls.push(Call {
                id,
                method: "response".into(),
                name: None,
                refused: false,
                denial: None,
            });
            continue;
        };
        let Some(method) = method.as_str() else {
            return Err(invalid(Refusal::InvalidJsonRpc, -32600, "invalid_request"));
        };
        if obj.contains_key("result") || obj.contains_key("error") {
            // A request and an answer at once: servers would take it either way.
            return Err(invalid(Refusal::InvalidJsonRpc, -32600, "invalid_request"));
        }
        let (name, denial) = check(method, id.is_some(), params_obj, ref_obj, server, policy);
        calls.push(Call {
            id,
            method: method.to_string(),
            name,
            refused: denial.is_some(),
            denial,
        });
    }
    let refused: Vec<&Denial> = calls.iter().filter_map(|c| c.denial.as_ref()).collect();
    if refused.is_empty() {
        return Ok(Inspection {
            calls,
            refusal: None,
        });
    }
    let code = if refused.iter().any(|d| d.what.is_some()) {
        Refusal::ToolNotAllowed
    } else {
        Refusal::MethodNotAllowed
    };
    // Something is refused: nothing of the body goes to the server.
    let answers: Vec<Value> = calls
        .iter()
        .filter_map(|c| {
            let id = c.id.as_ref()?;
            Some(match &c.denial {
                Some(d) => {
                    let mut data = json!({"server": server});
                    if let Some(what) = d.what {
                        data[what] = json!(c.name);
                    } else {
                        data["method"] = json!(c.method);
                    }
                    if let Some(reason) = d.reason {
                        data["reason"] = json!(reason);
                    }
                    error(id, d.code, d.message, data)
                }
                None => error(id, NOT_ALLOWED, "batch_refused", json!({"server": server})),
            })
        })
        .collect();
    if answers.is_empty() {
        // Only notifications (or a client's own answers) were refused: nothing awaits an
        // answer, so the body is refused as HTTP (400) with an error that has no id.
        let d = calls.iter().find_map(|c| c.denial).unwrap_or(Denial {
            code: NOT_ALLOWED,
            message: "batch_refused",
            what: None,
            reason: None,
        });
        let body = error(&Value::Null, d.code, d.message, json!({"server": server}));
        return Err(Invalid {
            code,
            body: serde_json::to_vec(&body).unwrap_or_default(),
        });
    }
    let body = if batch {
        serde_json::to_vec(&answers)
    } else {
        serde_json::to_vec(answers.first().unwrap_or(&Value::Null))
    }
    .unwrap_or_default();
    Ok(Inspection {
        calls,
        refusal: Some((code, body)),
    })
}

/// Check one request or notification against the methods sluice forwards and the key's
/// policy: what it names, and why it is refused if it is.
fn check(
    method: &str,
    is_request: bool,
    params: Option<&serde_json::Map<String, Value>>,
    reference: Option<&serde_json::Map<String, Value>>,
    server: &str,
    policy: &Policy,
) -> (Option<String>, Option<Denial>) {
    let known = if is_request {
        REQUESTS.contains(&method)
    } else {
        NOTIFICATIONS.contains(&method)
    };
    if !known {
        let d = Denial {
            code: -32601,
            message: "method_not_allowed",
            what: None,
            reason: None,
        };
        return (None, Some(d));
    }
    let named = |obj: Option<&serde_json::Map<String, Value>>, key: &str| {
        obj.and_then(|p| p.get(key))
            .and_then(Value::as_str)
            .map(String::from)
    };
    let deny = |message: &'static str, what: &'static str, reason: Option<&'static str>| Denial {
        code: NOT_ALLOWED,
        message,
        what: Some(what),
        reason,
    };
    let tool = |n: &Option<String>| {
        (!n.as_deref().is_some_and(|t| policy.tools.allows(server, t)))
            .then(|| deny("tool_not_allowed", "tool", None))
    };
    let prompt = |n: &Option<String>| {
        (!n.as_deref()
            .is_some_and(|t| policy.prompts.allows(server, t)))
        .then(|| deny("prompt_not_allowed", "prompt", None))
    };
    let resource = |n: &Option<String>| {
        let reason = match n.as_deref().map(super::policy::check_uri) {
            Some(Err(e)) => Some(uri_reason(e)),
            _ => None,
        };
        (!n.as_deref()
            .is_some_and(|u| policy.resources.allows_uri(server, u)))
        .then(|| deny("resource_not_allowed", "resource", reason))
    };
    match method {
        "tools/call" => {
            let n = named(params, "name");
            let d = tool(&n);
            (n, d)
        }
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            let n = named(params, "uri");
            let d = resource(&n);
            (n, d)
        }
        "prompts/get" => {
            let n = named(params, "name");
            let d = prompt(&n);
            (n, d)
        }
        // A completion names the prompt or resource template whose argument it completes.
        "completion/complete" => match named(reference, "type").as_deref() {
            Some("ref/prompt") => {
                let n = named(reference, "name");
                let d = prompt(&n);
                (n, d)
            }
            Some("ref/resource") => {
                let n = named(reference, "uri");
                let d = resource(&n);
                (n, d)
            }
            _ => (None, Some(deny("completion_not_allowed", "ref", None))),
        },
        _ => (None, None),
    }
}

/// The `reason` of a resource refused for its URI's form.
fn uri_reason(e: super::policy::UriError) -> &'static str {
    use super::policy::UriError;
    match e {
        UriError::DotSegment => "dot_segment",
        UriError::EncodedSeparator => "encoded_separator",
        UriError::NotNormal => "not_normalized",
        UriError::Forbidden => "forbidden_character",
    }
}

/// The key of an id in the table of pending calls: its JSON text, so `7` and `"7"` differ.
fn id_key(id: &Value) -> String {
    id.to_string()
}

impl Call {
    /// For a request (not a notification, not the client's own answer): its id as JSON text.
    pub fn id_key(&self) -> Option<String> {
        (self.method != "response")
            .then_some(self.id.as_ref())
            .flatten()
            .map(id_key)
    }
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
    dropped: u32,
    /// The SSE answer's reader.
    decoder: crate::sse::Decoder,
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
        // Requests await an answer; a client's own answers (to a server's request) do not.
        let pending = calls
            .iter()
            .filter_map(|c| Some((c.id_key()?, c.method.clone())))
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
            dropped: 0,
            decoder: crate::sse::Decoder::new(),
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
        for ev in self.decoder.push(chunk) {
            self.sse_event(&ev, &mut out);
        }
        if self.decoder.pending() > self.max + 1024 {
            self.decoder = crate::sse::Decoder::new();
            self.failed = true;
            let e = self.replace(None, "upstream_message_too_large", "too_large");
            crate::sse::Event::new(None, &e.to_string()).write(None, &mut out);
        }
        out
    }

    /// The end of an SSE answer: an unterminated last event is handled as one.
    pub fn finish_sse(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.failed {
            if let Some(ev) = self.decoder.finish() {
                self.sse_event(&ev, &mut out);
            }
        }
        out
    }

    /// One event, as a client reads it: its message checked and rewritten, written back.
    fn sse_event(&mut self, ev: &crate::sse::Event, out: &mut Vec<u8>) {
        let (engine, scan, counts) = (&self.engine, self.scan, &mut self.counts);
        let redacted = ev.redacted_fields(|v| engine.redact_text(v, scan, counts));
        let ev = redacted.as_ref().unwrap_or(ev);
        match ev.data.as_deref() {
            // No message: a keep-alive, or an event that only primes reconnection (an id and an
            // empty data field, as servers that poll send first).
            None | Some("") => ev.write(None, out),
            // A dropped answer drops its event.
            Some(data) => {
                if let Some(new) = self.read(data.as_bytes()) {
                    ev.write(Some(&new.to_string()), out);
                }
            }
        }
    }

    /// A resumed stream (a GET with `Last-Event-ID`) may carry the answers to these requests of
    /// its session, sent by earlier POSTs (ids as JSON text, see [`Call::id_key`]).
    pub fn resume(&mut self, ids: Vec<String>) {
        for k in ids {
            self.pending.entry(k).or_insert_with(|| "resumed".into());
        }
    }

    /// The ids (as JSON text) of the requests answered so far.
    pub fn answered(&self) -> impl Iterator<Item = &str> {
        self.outcomes.keys().map(String::as_str)
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

    /// Answers dropped because no request in flight had their id (another id, another JSON
    /// type, or answered already).
    pub fn dropped(&self) -> u32 {
        self.dropped
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

    /// An error in place of a message, for the request in flight it answers: `id` if it is
    /// one (answered now), else the only one unanswered, else none (`null`).
    fn replace(&mut self, id: Option<&Value>, why: &str, reason: &str) -> Value {
        self.replaced += 1;
        let id = match id.map(id_key) {
            Some(k) if self.pending.contains_key(&k) && !self.outcomes.contains_key(&k) => {
                serde_json::from_str(&k).unwrap_or(Value::Null)
            }
            _ => self.fallback_id(),
        };
        if !id.is_null() {
            self.outcomes.insert(id_key(&id), "error");
        }
        error(
            &id,
            BAD_UPSTREAM,
            why,
            json!({"server": self.server, "reason": reason}),
        )
    }

    /// One message (a JSON body) from the server: what to pass on. An answer that matches no
    /// request in flight becomes an error for the request that is.
    pub fn message(&mut self, raw: &[u8]) -> Vec<u8> {
        let out = match self.read(raw) {
            Some(v) => v,
            None => self.replace(None, "invalid_upstream_message", "unexpected_id"),
        };
        serde_json::to_vec(&out).unwrap_or_default()
    }

    /// One message (or batch) from the server, parsed strictly: what to pass on, `None` when
    /// nothing is (every answer in it was dropped).
    fn read(&mut self, raw: &[u8]) -> Option<Value> {
        if raw.len() > self.max {
            return Some(self.replace(None, "upstream_message_too_large", "too_large"));
        }
        match crate::json::parse(raw) {
            Ok(Value::Array(items)) if !items.is_empty() => {
                let kept: Vec<Value> = items.into_iter().filter_map(|m| self.one(m)).collect();
                (!kept.is_empty()).then_some(Value::Array(kept))
            }
            Ok(m @ Value::Object(_)) => self.one(m),
            Ok(_) | Err(crate::json::Error::Invalid) => {
                Some(self.replace(None, "invalid_upstream_message", "not_json_rpc"))
            }
            Err(crate::json::Error::Duplicate) => {
                Some(self.replace(None, "invalid_upstream_message", "ambiguous_json"))
            }
        }
    }

    fn one(&mut self, mut m: Value) -> Option<Value> {
        let Some(obj) = m.as_object() else {
            return Some(self.replace(None, "invalid_upstream_message", "not_json_rpc"));
        };
        let id = obj.get("id").cloned();
        if crate::json::case_variant(obj, MESSAGE_MEMBERS).is_some() {
            return Some(self.replace(id.as_ref(), "invalid_upstream_message", "ambiguous_json"));
        }
        // A request or notification (a method, no result or error), or an answer (an id, a
        // result or an error, no method): never both, which readers would take either way.
        let is_call = obj.get("method").is_some_and(Value::is_string)
            && !obj.contains_key("result")
            && !obj.contains_key("error");
        let valid = obj.get("jsonrpc") == Some(&json!("2.0"))
            && (is_call
                || (id.is_some()
                    && !obj.contains_key("method")
                    && (obj.contains_key("result") != obj.contains_key("error"))));
        if !valid {
            return Some(self.replace(id.as_ref(), "invalid_upstream_message", "not_json_rpc"));
        }
        if let (false, Some(id)) = (is_call, &id) {
            // An answer: to a request in flight, same id of the same JSON type, once.
            let key = id_key(id);
            if !self.pending.contains_key(&key) || self.outcomes.contains_key(&key) {
                self.dropped += 1;
                return None;
            }
            let outcome = if obj.contains_key("error") {
                "error"
            } else {
                "success"
            };
            if !self.filter(&mut m) {
                return Some(self.replace(Some(id), "invalid_upstream_message", "ambiguous_json"));
            }
            self.outcomes.insert(key, outcome);
        }
        let text = m.to_string();
        match self.engine.redact_json(&text, self.scan, &mut self.counts) {
            Ok(None) => Some(m),
            Ok(Some(new)) => match serde_json::from_str(&new) {
                Ok(v) => Some(v),
                Err(_) => Some(self.unscannable(id.as_ref())),
            },
            // Fail closed: never the message as it came.
            Err(_) => Some(self.unscannable(id.as_ref())),
        }
    }

    fn unscannable(&mut self, id: Option<&Value>) -> Value {
        if let Some(k) = id.map(id_key) {
            // An answer whose outcome was set above becomes the error it is replaced by.
            self.outcomes.remove(&k);
        }
        self.replace(id, "unscannable_upstream_message", "redaction_failed")
    }

    /// Keep only what the key may use in any list result (tools, resources, resource
    /// templates, prompts), whatever the request it answers. `false`: the result names a list
    /// in another ASCII case, which case-blind clients would read unfiltered.
    fn filter(&self, m: &mut Value) -> bool {
        const LISTS: [&str; 4] = ["tools", "resources", "resourceTemplates", "prompts"];
        let Some(result) = m.get_mut("result").and_then(Value::as_object_mut) else {
            return true;
        };
        if crate::json::case_variant(result, &LISTS).is_some() {
            return false;
        }
        let server = self.server.as_str();
        for field in LISTS {
            let Some(list) = result.get_mut(field) else {
                continue;
            };
            let Some(items) = list.as_array_mut() else {
                // Not a list: nothing a client could be shown safely.
                *list = Value::Array(Vec::new());
                continue;
            };
            let key = match field {
                "resources" => "uri",
                "resourceTemplates" => "uriTemplate",
                _ => "name",
            };
            items.retain(|it| {
                let Some(obj) = it.as_object() else {
                    return false;
                };
                if crate::json::case_variant(obj, &[key]).is_some() {
                    return false;
                }
                let Some(n) = obj.get(key).and_then(Value::as_str) else {
                    return false;
                };
                match field {
                    "tools" => self.policy.tools.allows(server, n),
                    "prompts" => self.policy.prompts.allows(server, n),
                    _ => self.policy.resources.allows_uri(server, n),
                }
            });
        }
        true
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
        let v: Value = serde_json::from_slice(&i.refusal.unwrap().1).unwrap();
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
        let v: Value = serde_json::from_slice(&i.refusal.unwrap().1).unwrap();
        assert_eq!(v[0]["error"]["message"], "batch_refused");
        assert_eq!(v[1]["error"]["message"], "tool_not_allowed");
        // Not JSON-RPC at all.
        assert!(inspect(b"{nope", "tools", &p).is_err());
        assert!(inspect(br#"{"id":1,"method":"x"}"#, "tools", &p).is_err());
    }

    #[test]
    fn a_server_that_cannot_be_used_fails_each_request_as_json_rpc() {
        let p = Policy::default();
        let calls = |body: &[u8]| inspect(body, "tools", &p).unwrap().calls;
        let one = calls(br#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#);
        let v: Value = serde_json::from_slice(
            &unreachable_answer(&one, "tools", "upstream_tls_failed").unwrap(),
        )
        .unwrap();
        assert_eq!(v["id"], "a");
        assert_eq!(v["error"]["code"], BAD_UPSTREAM);
        assert_eq!(v["error"]["data"]["reason"], "upstream_tls_failed");
        // A batch: one error per request, none for its notification.
        let batch = calls(
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#,
        );
        let v: Value = serde_json::from_slice(
            &unreachable_answer(&batch, "tools", "upstream_tls_failed").unwrap(),
        )
        .unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(
            (v[0]["id"].clone(), v[1]["id"].clone()),
            (json!(1), json!(2))
        );
        // Notifications only: no JSON-RPC answer (the HTTP error stands).
        let n = calls(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert!(unreachable_answer(&n, "tools", "upstream_tls_failed").is_none());
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
        let out = r.message(br#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"mail jane@example.com, key AKIAWBOBYXE3TVGJGRWA"}],"structuredContent":{"email":"jane@example.com"}}}"#);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("jane@") && !text.contains("AKIA"), "{text}");
        assert_eq!(r.counts().total(), 3);
        // In an event stream, the event's id and name are redacted too.
        let mut r = Responses::new("tools", p.clone(), &calls, Engine::new(), Scan::ALL, 4096);
        let mut out = r.push_sse(b"id: jane@example.com\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\n\n");
        out.extend(r.finish_sse());
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("id: [REDACTED_EMAIL]\nevent: message\n"),
            "{text}"
        );
        assert_eq!(r.counts().total(), 1);
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

    #[test]
    fn a_server_message_that_is_a_request_and_an_answer_at_once_is_replaced() {
        let p = policy();
        let list = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let calls = inspect(list, "tools", &p).unwrap().calls;
        let mut r = Responses::new("tools", p, &calls, Engine::new(), Scan::ALL, 4096);
        let out = r.message(
            br#"{"jsonrpc":"2.0","id":1,"method":"x","result":{"tools":[{"name":"delete_all"}]}}"#,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("delete_all"), "{text}");
        assert!(text.contains("invalid_upstream_message"), "{text}");
    }
}
