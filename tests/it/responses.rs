//! What comes back: responses and streams redacted when the key's response redaction is on
//! (byte-for-byte passthrough when off, the default), and secrets found in prompts.

use crate::support::*;

/// Sluice in front of the mock, its org's response redaction on (or not).
fn proxy(up: &Upstream, response_redaction: bool) -> Proxy {
    let s = Setup::new(&mock_upstream(up, ""), "");
    if response_redaction {
        s.cli_json(
            &["orgs", "update", &s.org_id, "--response-redaction", "on"],
            b"",
        );
    }
    s.spawn()
}

fn chat(p: &Proxy, stream: bool, mock: &str) -> RawResponse {
    let body = serde_json::json!({"model": "gpt-4o-mini", "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    raw(
        p.port,
        &p.post(
            "/v1/chat/completions",
            body.as_bytes(),
            &format!("X-Mock: {mock}\r\nConnection: close\r\n"),
        ),
    )
    .unwrap()
}

/// The official Python SDK's reading of a stream through sluice (tests/sdk/openai_stream.py):
/// `{"content", "finish_reason"}`.
fn sdk_stream(p: &Proxy, mode: &str) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_stream.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(format!("http://127.0.0.1:{}/v1", p.port))
        .arg(&p.key)
        .arg(mock_text(mode, ANSWER))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `data:` payloads of an SSE body, `[DONE]` excepted, parsed.
fn events(body: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect()
}

const ANSWER: &str = "Sure! Write to jane.doe@example.com, pay with 4111 1111 1111 1111 and use key AKIAWBOBYXE3TVGJGRWA.";
const MASKED: &str =
    "Sure! Write to [REDACTED_EMAIL], pay with [REDACTED_CARD] and use key [REDACTED_SECRET].";

#[test]
fn a_streamed_answer_is_masked_whole_however_many_events_split_it() {
    let up = Upstream::start();
    let p = proxy(&up, true);
    let r = chat(&p, true, &mock_text("sse-text", ANSWER));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let text = r.body_text();
    for leak in ["jane.doe", "example.com", "4111", "AKIA"] {
        assert!(!text.contains(leak), "{leak} leaked: {text}");
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let ev = events(&r.body);
    let content: String = ev
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, MASKED);
    // The same structure: an event out per event in, ids, roles, finish and usage as sent.
    assert_eq!(ev.len(), ANSWER.chars().count() + 2);
    assert!(ev.iter().all(|e| e["id"] == "chatcmpl-mock"));
    assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
    let last = ev.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["usage"]["total_tokens"], 12);
    // The upstream was asked for an unencoded answer; counts are in metrics and the audit log.
    assert_eq!(up.requests()[0].header("accept-encoding"), Some("identity"));
    p.metrics_with(&[
        "sluice_response_redactions_total{entity=\"email\"} 1",
        "sluice_response_redactions_total{entity=\"card\"} 1",
        "sluice_response_redactions_total{entity=\"secret\"} 1",
    ]);
}

#[test]
fn without_response_redaction_answers_pass_byte_for_byte() {
    let up = Upstream::start();
    let p = proxy(&up, false);
    let r = chat(&p, true, &mock_text("sse-text", ANSWER));
    let content: String = events(&r.body)
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, ANSWER);
    let r = chat(&p, false, "type:audio/mpeg");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"raw bytes bob@example.com");
    // Answers are always asked for unencoded: their token usage is read on the way.
    assert_eq!(up.requests()[0].header("accept-encoding"), Some("identity"));
}

#[test]
fn json_answers_are_redacted_and_unscannable_ones_refused() {
    let up = Upstream::start();
    let p = proxy(&up, true);
    for mode in ["json-text", "gzip-json"] {
        let r = chat(&p, false, &mock_text(mode, ANSWER));
        assert_eq!(r.status, 200, "{mode}: {}", r.body_text());
        assert_eq!(r.header("content-encoding"), None, "{mode}");
        assert_eq!(
            r.json()["choices"][0]["message"]["content"],
            MASKED,
            "{mode}"
        );
        assert_eq!(r.json()["usage"]["total_tokens"], 4);
    }
    // A large answer (redacted off the async worker) is masked the same, whole, and two at
    // once as well as one.
    let filler = "All is well. ".repeat(40_000);
    let big = format!("{filler}{ANSWER} {filler}");
    let big_masked = format!("{filler}{MASKED} {filler}");
    let mock = mock_text("json-text", &big);
    std::thread::scope(|sc| {
        let runs: Vec<_> = (0..2)
            .map(|_| sc.spawn(|| chat(&p, false, &mock)))
            .collect();
        for run in runs {
            let r = run.join().unwrap();
            assert_eq!(r.status, 200);
            let content = r.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(content == big_masked, "{} bytes", content.len());
        }
    });
    // A body sluice cannot read is refused before anything reaches the client.
    let r = chat(&p, false, "type:audio/mpeg");
    assert_eq!(r.status, 502);
    assert_eq!(r.code(), "unscannable_response");
    assert!(!r.body_text().contains("bob@example.com"));
    // Embeddings echo nothing: passed as they are.
    let r = raw(
        p.port,
        &p.post(
            "/v1/embeddings",
            br#"{"model":"m","input":"x"}"#,
            "X-Mock: type:audio/mpeg\r\n",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn a_responses_api_stream_is_masked_too() {
    let up = Upstream::start();
    let p = proxy(&up, true);
    let body = br#"{"model":"gpt-4o-mini","input":"hi","stream":true}"#;
    let r = raw(
        p.port,
        &p.post(
            "/v1/responses",
            body,
            &format!("X-Mock: {}\r\n", mock_text("responses-text", ANSWER)),
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let ev = events(&r.body);
    let deltas: String = ev
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(deltas, MASKED);
    let done = ev
        .iter()
        .find(|e| e["type"] == "response.output_text.done")
        .unwrap();
    assert_eq!(done["text"], MASKED);
    let completed = ev
        .iter()
        .find(|e| e["type"] == "response.completed")
        .unwrap();
    assert_eq!(
        completed["response"]["output"][0]["content"][0]["text"],
        MASKED
    );
    assert!(!r.body_text().contains("jane.doe"));
    // The held-back text went out in an event sluice added: numbers stay unique and
    // increasing as the client sees them; ids and indexes as the upstream sent them.
    let seq: Vec<u64> = ev
        .iter()
        .map(|e| e["sequence_number"].as_u64().expect("every event numbered"))
        .collect();
    assert!(
        seq.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers not increasing: {seq:?}"
    );
    assert!(ev.len() > ANSWER.chars().count() + 3, "an event was added");
    assert!(ev
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .all(|e| e["item_id"] == "msg_1" && e["output_index"] == 0 && e["content_index"] == 0));
}

/// Every line ending the event-stream format allows (LF, CRLF, a lone CR) is read as a client
/// reads it: none lets an answer through unmasked, chat or Responses API.
#[test]
fn streams_with_any_line_ending_are_masked() {
    let up = Upstream::start();
    let p = proxy(&up, true);
    for mode in ["sse-text-cr", "sse-text-crlf", "sse-text", "sse-as-plain"] {
        let r = chat(&p, true, &mock_text(mode, ANSWER));
        assert_eq!(r.status, 200);
        let text = r.body_text();
        for leak in ["jane.doe", "4111", "AKIA"] {
            assert!(!text.contains(leak), "{mode}: {leak} leaked: {text:?}");
        }
        assert!(
            !text.contains('\r'),
            "{mode}: written back with LF: {text:?}"
        );
        let content: String = events(&r.body)
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, MASKED, "{mode}");
    }
    let body = br#"{"model":"gpt-4o-mini","input":"hi","stream":true}"#;
    let r = raw(
        p.port,
        &p.post(
            "/v1/responses",
            body,
            &format!("X-Mock: {}\r\n", mock_text("responses-text-cr", ANSWER)),
        ),
    )
    .unwrap();
    let text = r.body_text();
    assert!(
        !text.contains("jane.doe") && !text.contains("AKIA"),
        "{text:?}"
    );
    let deltas: String = events(&r.body)
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(deltas, MASKED);
}

/// The official SDK splits events at a lone CR too: what it reads from such a stream is masked.
#[test]
fn the_python_sdk_reads_a_cr_stream_masked() {
    let up = Upstream::start();
    let p = proxy(&up, true);
    let v = sdk_stream(&p, "sse-text-cr");
    assert_eq!(v["content"], MASKED, "{v}");
}

#[test]
fn secrets_in_prompts_are_redacted_unless_the_key_turns_them_off() {
    let up = Upstream::start();
    let p = proxy(&up, false);
    let body = br#"{"model":"m","input":"my key is AKIAWBOBYXE3TVGJGRWA and sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh"}"#;
    let r = raw(p.port, &p.post("/v1/embeddings", body, "")).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-sluice-redactions"), Some("secret=2"));
    let got = String::from_utf8_lossy(&up.requests()[0].body).to_string();
    assert!(
        got.contains("my key is [REDACTED_SECRET] and [REDACTED_SECRET]"),
        "{got}"
    );
    p.metrics_with(&["sluice_redactions_total{entity=\"secret\"} 2"]);
    // A key with secrets off (and PII on) passes them.
    let k = p.cli_json(
        &["keys", "create", "--org", &p.org_id, "--secrets", "off"],
        b"",
    );
    let key = k["key"].as_str().unwrap().to_string();
    let auth = format!("Authorization: Bearer {key}\r\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = raw(p.port, &post("/v1/embeddings", body, &auth)).unwrap();
        if r.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let last = up.requests().last().unwrap().body.clone();
    assert_eq!(last, body.to_vec());
    let listed = p.cli_json(&["keys", "list", "--org", &p.org_id], b"");
    let ours = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == k["id"])
        .unwrap();
    assert_eq!(ours["secrets"], "off");
    assert_eq!(ours["response_redaction"], "inherit");
}

#[test]
fn the_python_sdk_reads_a_rewritten_stream() {
    let up = Upstream::start();
    let p = proxy(&up, true);
    let v = sdk_stream(&p, "sse-text");
    assert_eq!(v["content"], MASKED, "{v}");
    assert_eq!(v["finish_reason"], "stop");
}

/// Token log probabilities would rebuild a masked value a token at a time (`token`, its
/// `bytes`, `top_logprobs`): with response redaction on they are dropped from answers, streamed
/// or not, and a streamed audio transcript is masked like the text.
#[test]
fn logprobs_are_dropped_and_transcripts_masked() {
    let up = Upstream::start();
    let p = proxy(&up, true);
    let r = chat(&p, true, &mock_text("sse-logprobs", ANSWER));
    assert_eq!(r.status, 200);
    let text = r.body_text();
    for leak in ["jane.doe", "4111", "AKIA", "[106,"] {
        assert!(!text.contains(leak), "{leak} leaked: {text}");
    }
    let ev = events(&r.body);
    assert!(ev.iter().all(|e| e["choices"][0]["logprobs"].is_null()));
    let transcript: String = ev
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["audio"]["transcript"].as_str())
        .collect();
    assert_eq!(transcript, MASKED);
    let content: String = ev
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, MASKED);
    let r = chat(&p, false, &mock_text("json-logprobs", ANSWER));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], MASKED);
    assert!(v["choices"][0]["logprobs"].is_null(), "{v}");
    // Without response redaction, answers are the provider's, log probabilities included.
    let up = Upstream::start();
    let p = proxy(&up, false);
    let v = chat(&p, false, &mock_text("json-logprobs", ANSWER)).json();
    assert!(v["choices"][0]["logprobs"]["content"].is_array());
}

/// Answers a client reads differently from how a first look at them would: each is masked as
/// the client reads it, or refused.
#[test]
fn answers_are_read_as_their_clients_read_them() {
    use std::io::Write;
    let against_on = |path: &str, request: &[u8], status: &str, head: &str, body: &[u8]| {
        let mut answer = format!(
            "HTTP/1.1 {status}\r\n{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(body);
        let up = RawUpstream::start(answer);
        let s = Setup::new(
            &format!(
                "[[upstreams]]\nname = \"raw\"\nregion = \"us\"\nbase_url = \"{}\"\n",
                up.base_url()
            ),
            "",
        );
        s.cli_json(
            &["orgs", "update", &s.org_id, "--response-redaction", "on"],
            b"",
        );
        let p = s.spawn();
        raw(p.port, &p.post(path, request, "")).unwrap()
    };
    let against_for = |request: &[u8], head: &str, body: &[u8]| {
        against_on("/v1/chat/completions", request, "200 OK", head, body)
    };
    let against = |head: &str, body: &[u8]| {
        against_for(br#"{"model":"gpt-4o-mini","messages":[]}"#, head, body)
    };
    let streamed = |head: &str, body: &[u8]| {
        against_for(
            br#"{"model":"gpt-4o-mini","messages":[],"stream":true}"#,
            head,
            body,
        )
    };
    let chunk = |s: &str, object: bool| {
        let mut v = serde_json::json!({"choices": [{"index": 0, "delta": {"content": s}}]});
        if object {
            v["object"] = "chat.completion.chunk".into();
        }
        format!("data: {v}\n\n")
    };
    // An email split over two chunks that do not say they are chunks.
    let split = format!(
        "{}{}data: [DONE]\n\n",
        chunk("mail alice@exa", false),
        chunk("mple.com", false)
    );
    let r = against("Content-Type: text/event-stream\r\n", split.as_bytes());
    assert_eq!(r.status, 200);
    assert!(!r.body_text().contains("alice"), "{}", r.body_text());
    // The same events as text/plain, after a line a client's event parser ignores, to a
    // request that asked for a stream (the client reads events whatever the type says).
    let text = format!(
        "x\n{}{}data: [DONE]\n\n",
        chunk("mail alice@exa", true),
        chunk("mple.com", true)
    );
    for head in ["Content-Type: text/plain\r\n", ""] {
        let r = streamed(head, text.as_bytes());
        assert_eq!(r.status, 200);
        assert!(!r.body_text().contains("alice"), "{}", r.body_text());
    }
    // A text answer to a request that did not ask for a stream is text, kept whole.
    let doc = "Config:\napiVersion: v1\ndata:\n  k: v\n";
    let r = against("Content-Type: text/plain\r\n", doc.as_bytes());
    assert_eq!((r.status, r.body_text().as_str()), (200, doc));
    // JSON as text/plain (openai-python parses it as JSON) with the email's `@` escaped.
    let json = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"mail alice\u0040example.com"}}]}"#;
    let r = against("Content-Type: text/plain\r\n", json.as_bytes());
    assert_eq!(r.status, 200);
    assert!(!r.body_text().contains("alice"), "{}", r.body_text());
    // Two Content-Encoding lines (a client joins them: `identity, deflate`, and decodes
    // deflate): refused, never passed as it came.
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(json.replace(r"\u0040", "@").as_bytes())
        .unwrap();
    let deflated = z.finish().unwrap();
    let r = against(
        "Content-Type: text/plain\r\nContent-Encoding: identity\r\nContent-Encoding: deflate\r\n",
        &deflated,
    );
    assert_eq!((r.status, r.code().as_str()), (502, "unscannable_response"));
    // An embeddings error is an answer like any other; its vectors pass as they are.
    let request = br#"{"model":"text-embedding-3-small","input":"x"}"#;
    let error = r#"{"error":{"message":"account alice@example.com is over its quota"}}"#;
    let r = against_on(
        "/v1/embeddings",
        request,
        "429 Too Many Requests",
        "Content-Type: application/json\r\n",
        error.as_bytes(),
    );
    assert_eq!(r.status, 429);
    assert!(!r.body_text().contains("alice"), "{}", r.body_text());
    let vectors = r#"{"data":[{"embedding":[0.1,-4111111111111111]}]}"#;
    let r = against_on(
        "/v1/embeddings",
        request,
        "200 OK",
        "Content-Type: application/json\r\n",
        vectors.as_bytes(),
    );
    assert_eq!((r.status, r.body_text().as_str()), (200, vectors));
}
