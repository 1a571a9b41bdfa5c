//! Redaction of values as people and machines write them (issue 34), in requests and in
//! answers (whole and streamed): Unicode separators, full-width and other-script digits,
//! percent escapes and HTML character references; encoded credentials, values assigned to a
//! secret's name, the newer secret families and placeholders; the query string and headers.

use crate::support::*;

/// Each value, as written, and its entity's token.
const WRITTEN: &[(&str, &str)] = &[
    ("4111\u{A0}1111\u{A0}1111\u{A0}1111", "[REDACTED_CARD]"),
    (
        "4111\u{200B}1111\u{200B}1111\u{200B}1111",
        "[REDACTED_CARD]",
    ),
    ("５５５５ ５５５５ ５５５５ ４４４４", "[REDACTED_CARD]"),
    ("4111%201111%201111%201111", "[REDACTED_CARD]"),
    ("jane＠example．com", "[REDACTED_EMAIL]"),
    ("jane%40example.com", "[REDACTED_EMAIL]"),
    ("bob&#64;example.org", "[REDACTED_EMAIL]"),
    ("ann&#x40;example.org", "[REDACTED_EMAIL]"),
    ("li&commat;example.net", "[REDACTED_EMAIL]"),
    ("123\u{2013}45\u{2013}6789", "[REDACTED_SSN]"),
    ("415\u{2011}555\u{2011}0123", "[REDACTED_PHONE]"),
    ("(415)\u{202F}555\u{AD}0123", "[REDACTED_PHONE]"),
    ("٤١٥-٥٥٥-٠١٢٣", "[REDACTED_PHONE]"),
];

fn text() -> String {
    WRITTEN
        .iter()
        .map(|(v, _)| format!("value {v} ok"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn masked() -> String {
    WRITTEN
        .iter()
        .map(|(_, t)| format!("value {t} ok"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What is left of the values' digits and local parts: none may reach the other side.
fn assert_gone(what: &str, got: &str) {
    for (v, _) in WRITTEN {
        assert!(!got.contains(v), "{v:?} {what}: {got}");
    }
    for leak in [
        "jane",
        "bob",
        "ann",
        "li&",
        "4111",
        "0123",
        "٠١٢٣",
        "４４４４",
    ] {
        assert!(!got.contains(leak), "{leak:?} {what}: {got}");
    }
}

#[test]
fn values_written_in_other_forms_are_redacted_before_the_upstream() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    // Raw UTF-8 in one message, the same text with JSON escapes in the other.
    let escaped = serde_json::to_string(&text())
        .unwrap()
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                format!("\\u{:04x}", c as u32)
            }
        })
        .collect::<String>();
    let body = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":{}}},{{"role":"user","content":{escaped}}}]}}"#,
        serde_json::to_string(&text()).unwrap()
    );
    let r = raw(p.port, &p.post("/v1/chat/completions", body.as_bytes(), "")).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    let sent: serde_json::Value = serde_json::from_slice(&up.requests()[0].body).unwrap();
    for m in 0..2 {
        assert_eq!(sent["messages"][m]["content"], masked().as_str());
    }
    assert_gone(
        "reached the upstream",
        &String::from_utf8_lossy(&up.requests()[0].body),
    );
    assert_eq!(
        r.header("x-sluice-redactions"),
        Some("email=10,ssn=2,phone=6,card=8")
    );
}

/// Sluice in front of `up` with response redaction on for its org.
fn masking_proxy(up: &Upstream) -> Proxy {
    let s = Setup::new(&mock_upstream(up, ""), "");
    s.cli_json(
        &["orgs", "update", &s.org_id, "--response-redaction", "on"],
        b"",
    );
    s.spawn()
}

/// The mock answers `text` in `mode` (`json-text` or `sse-text`) through sluice: the response,
/// and the answer's content as the client reads it (JSON strings decoded, stream pieces joined).
fn answered(p: &Proxy, mode: &str, text: &str) -> (RawResponse, String) {
    let stream = mode == "sse-text";
    let body = serde_json::json!({"model": "gpt-4o-mini", "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let r = raw(
        p.port,
        &p.post(
            "/v1/chat/completions",
            body.as_bytes(),
            &format!("X-Mock: {}\r\nConnection: close\r\n", mock_text(mode, text)),
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{mode}: {}", r.body_text());
    let content = if stream {
        String::from_utf8_lossy(&r.body)
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| {
                let v: serde_json::Value = serde_json::from_str(d).ok()?;
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect()
    } else {
        r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    (r, content)
}

#[test]
fn values_written_in_other_forms_are_masked_in_answers_whole_and_streamed() {
    let up = Upstream::start();
    let p = masking_proxy(&up);
    for mode in ["json-text", "sse-text"] {
        let (r, content) = answered(&p, mode, &text());
        assert_eq!(content, masked(), "{mode}");
        assert_gone(&format!("in the {mode} answer"), &r.body_text());
    }
}

/// Secrets in the forms issue 34 lists, each with a part that must never get through.
fn secret_forms() -> Vec<(String, String)> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let key = "sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh";
    let env = b64(&format!("OPENAI_API_KEY={key}\nDEBUG=1\n"));
    let basic = b64("deploy:Zq7Rt2Wm9Kx4");
    vec![
        (format!("secret.yaml data: {env}"), env[10..30].to_string()),
        (format!("Authorization: Basic {basic}"), basic.clone()),
        (
            format!(r#"{{"auths":{{"ghcr.io":{{"auth":"{basic}"}}}}}}"#),
            basic.clone(),
        ),
        (
            "redis://:p~ss!w*rd%40x9@cache:6379/0".to_string(),
            "p~ss!w*rd%40x9".to_string(),
        ),
        (
            r#""aws_secret_access_key": "q8Xv2LmN4pR7tY1wZ3bC5dF9gH0jK6sU/eW+aQoI""#.to_string(),
            "q8Xv2LmN4pR7tY1wZ3bC5dF9gH0jK6sU".to_string(),
        ),
        (
            "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh".to_string(),
            "MnOpQrStUvWxYz".to_string(),
        ),
        (
            "dapi0123456789abcdef0123456789abcdef-2".to_string(),
            "0123456789abcdef0123456789abcdef".to_string(),
        ),
        (
            "client 1XD8Q~buEe1IYZeoRXwd8zEsmclGwipiG5jd96Da".to_string(),
            "buEe1IYZeoRXwd8zEsm".to_string(),
        ),
        (
            "AccountName=acct;AccountKey=K3yK3yAbCdEfGh1JkLmNoPqRsTuVwXyZ0123456789aBcDeFgHiJkLmNoPqRsTuVwXyZ+/AbCdEfGhIjKlMnOpQrSt==;".to_string(),
            "K3yK3yAbCdEfGh1JkLmNoPqRsTuVwXyZ".to_string(),
        ),
    ]
}

/// Placeholders and documented examples: they reach the other side as written.
const PLACEHOLDERS: &[&str] = &[
    "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "AKIAIOSFODNN7EXAMPLE",
    "xoxb-your-bot-token",
    "glpat-xxxxxxxxxxxxxxxxxxxx",
];

fn secrets_text() -> String {
    let mut t: Vec<String> = secret_forms()
        .into_iter()
        .map(|(s, _)| format!("see {s} ok"))
        .collect();
    t.extend(PLACEHOLDERS.iter().map(|p| format!("like {p} ok")));
    t.join("\n")
}

fn assert_secrets_gone(what: &str, got: &str) {
    for (_, core) in secret_forms() {
        assert!(!got.contains(&core), "{core:?} {what}: {got}");
    }
    for p in PLACEHOLDERS {
        assert!(got.contains(p), "placeholder {p} was masked {what}: {got}");
    }
}

#[test]
fn encoded_assigned_and_new_family_secrets_are_redacted_before_the_upstream() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    // In a message, and as a tool call's JSON arguments (the member name gives the context).
    let args =
        serde_json::json!({"aws_secret_access_key": "q8Xv2LmN4pR7tY1wZ3bC5dF9gH0jK6sU/eW+aQoI",
        "password": "Tr0ub4dor&3x", "max_tokens": 4096})
        .to_string();
    let body = serde_json::json!({"model": "gpt-4o", "messages": [
        {"role": "user", "content": secrets_text()},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "f", "arguments": args}}]}]})
    .to_string();
    let r = raw(p.port, &p.post("/v1/chat/completions", body.as_bytes(), "")).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    let sent = String::from_utf8_lossy(&up.requests()[0].body).into_owned();
    assert_secrets_gone("reached the upstream", &sent);
    assert!(!sent.contains("Tr0ub4dor"), "{sent}");
    assert!(sent.contains("4096"), "{sent}");
    assert_eq!(r.header("x-sluice-redactions"), Some("secret=11"));
}

#[test]
fn encoded_assigned_and_new_family_secrets_are_masked_in_answers() {
    let up = Upstream::start();
    let p = masking_proxy(&up);
    for mode in ["json-text", "sse-text"] {
        let (_, text) = answered(&p, mode, &secrets_text());
        assert_secrets_gone(&format!("in the {mode} answer"), &text);
        assert_eq!(
            text.matches("[REDACTED_SECRET]").count(),
            9,
            "{mode}: {text}"
        );
    }
}

#[test]
fn the_query_string_and_custom_headers_are_redacted_too() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let body = br#"{"model":"gpt-4o","input":"nothing here"}"#;
    let req = format!(
        "POST /v1/embeddings?customer=jane%40example.com&page=2&note=call+415-555-0123 HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\nX-Customer-Email: jane.doe@example.com\r\nX-Note: card 4111 1111 1111 1111, ok\r\nX-Auth-Token: f3a9c2e7b1d44e0a9c7b2d1e8f6a5b4c\r\nX-Stainless-Lang: python\r\nIdempotency-Key: 4111111111111111\r\n\r\n",
        p.auth(),
        body.len()
    );
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let r = raw(p.port, &bytes).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(
        r.header("x-sluice-redactions"),
        Some("email=2,phone=1,card=1,secret=1")
    );
    let got = &up.requests()[0];
    assert_eq!(
        got.path,
        "/v1/embeddings?customer=%5BREDACTED_EMAIL%5D&page=2&note=call%5BREDACTED_PHONE%5D"
    );
    assert_eq!(got.header("x-customer-email"), Some("[REDACTED_EMAIL]"));
    assert_eq!(got.header("x-note"), Some("card [REDACTED_CARD], ok"));
    // A header named for a secret: its value is read after the name.
    assert_eq!(got.header("x-auth-token"), Some("[REDACTED_SECRET]"));
    // Opaque and SDK headers go on as sent.
    assert_eq!(got.header("x-stainless-lang"), Some("python"));
    assert_eq!(got.header("idempotency-key"), Some("4111111111111111"));
    // A scanned header that is not text is refused, never forwarded unscanned.
    let mut bad = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\nX-Customer: ",
        p.auth(),
        body.len()
    )
    .into_bytes();
    bad.extend_from_slice(b"jane\xff@example.com\r\n\r\n");
    bad.extend_from_slice(body);
    let r = raw(p.port, &bad).unwrap();
    assert_eq!(r.status, 400, "{}", r.body_text());
    assert_eq!(r.code(), "unscannable_header");
    assert!(!r.body_text().contains("jane"), "{}", r.body_text());
    assert_eq!(up.requests().len(), 1);
    let log = p.log();
    assert!(!log.contains("jane"), "the value reached the log");
}
