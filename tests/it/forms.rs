//! Redaction of values written in other forms than plain ASCII (issue 34): Unicode separators,
//! full-width and other-script digits, percent escapes and HTML character references, in
//! requests and in answers (whole and streamed).

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

#[test]
fn values_written_in_other_forms_are_masked_in_answers_whole_and_streamed() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    s.cli_json(
        &["orgs", "update", &s.org_id, "--response-redaction", "on"],
        b"",
    );
    let p = s.spawn();
    for mode in ["json-text", "sse-text"] {
        let mock = format!("{mode}:{}", urlencoding::encode(&text()));
        let stream = mode.starts_with("sse");
        let body = serde_json::json!({"model": "gpt-4o-mini", "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
        let r = raw(
            p.port,
            &p.post(
                "/v1/chat/completions",
                body.as_bytes(),
                &format!("X-Mock: {mock}\r\nConnection: close\r\n"),
            ),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{mode}: {}", r.body_text());
        let content: String = if stream {
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
        assert_eq!(content, masked(), "{mode}");
        assert_gone(&format!("in the {mode} answer"), &r.body_text());
    }
}
