//! The MCP gateway's JSON-RPC reading, both ways, on arbitrary bytes. A client body sluice
//! forwards is read the same by every parser: serde_json's (the last of a repeated member),
//! a reader that keeps the first, and a case-blind one all see only allowed methods and tools.
//! A server's answer, as a JSON body or an event stream cut anywhere, never shows the client a
//! tool outside the key's list, under any member case. Nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sluice::mcp::{inspect, AllowList, Policy, Responses, NOTIFICATIONS, REQUESTS};
use sluice::redact::{Engine, Scan};
use std::sync::OnceLock;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(Engine::new)
}

fn policy() -> Policy {
    Policy {
        tools: AllowList::parse("s:echo").unwrap(),
        resources: AllowList::parse("s:file:///srv/docs/*").unwrap(),
        prompts: AllowList::parse("s:summary").unwrap(),
    }
}

/// Every member of `v`'s objects read case-blind: a value for `name` under any case.
fn case_blind<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Vec<&'a Value> {
    obj.iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

/// What a client is shown of tools, under any case of `result` and `tools`.
fn shown_tools(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => items.iter().for_each(|m| shown_tools(m, out)),
        Value::Object(m) => {
            for r in case_blind(m, "result") {
                let Some(r) = r.as_object() else { continue };
                for t in case_blind(r, "tools") {
                    for item in t.as_array().into_iter().flatten() {
                        let Some(item) = item.as_object() else { continue };
                        for n in case_blind(item, "name") {
                            out.push(n.as_str().unwrap_or("?").to_string());
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let cut = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    let (body, answer) = (&data[..cut], data.get(cut + 1..).unwrap_or(&[]));
    let p = policy();
    let Ok(i) = inspect(body, "s", &p) else {
        return;
    };
    if i.refusal.is_none() {
        // Forwarded: every reading agrees it is allowed.
        let v: Value = serde_json::from_slice(body).expect("forwarded bodies are JSON");
        let messages = match &v {
            Value::Array(a) => a.clone(),
            m => vec![m.clone()],
        };
        for m in &messages {
            let m = m.as_object().expect("messages are objects");
            for method in case_blind(m, "method") {
                let method = method.as_str().expect("a method is a string");
                let has_id = !case_blind(m, "id").is_empty();
                assert!(
                    (has_id && REQUESTS.contains(&method)) || (!has_id && NOTIFICATIONS.contains(&method)),
                    "{method} forwarded"
                );
                if method == "tools/call" {
                    for params in case_blind(m, "params") {
                        for n in case_blind(params.as_object().unwrap(), "name") {
                            assert_eq!(n.as_str(), Some("echo"), "a denied tool forwarded");
                        }
                    }
                }
            }
        }
        // The server's answer, as a JSON body and as an event stream cut in two places.
        let check = |out: &[u8]| {
            let mut d = sluice::sse::Decoder::new();
            let mut evs = d.push(out);
            evs.extend(d.finish());
            let mut docs: Vec<Value> = evs
                .iter()
                .filter_map(|e| e.data.as_deref())
                .filter_map(|d| serde_json::from_str(d).ok())
                .collect();
            docs.extend(serde_json::from_slice::<Value>(out).ok());
            let mut shown = Vec::new();
            docs.iter().for_each(|d| shown_tools(d, &mut shown));
            assert!(shown.iter().all(|n| n == "echo"), "shown: {shown:?}");
        };
        let mut r = Responses::new("s", p.clone(), &i.calls, engine().clone(), Scan::ALL, 4096);
        check(&r.message(answer));
        let mut r = Responses::new("s", p, &i.calls, engine().clone(), Scan::ALL, 4096);
        let a = answer.len() / 3;
        let mut out = r.push_sse(&answer[..a]);
        out.extend(r.push_sse(&answer[a..2 * a]));
        out.extend(r.push_sse(&answer[2 * a..]));
        out.extend(r.finish_sse());
        check(&out);
    }
});
