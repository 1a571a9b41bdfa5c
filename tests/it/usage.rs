//! Token usage: read from every answer (JSON bodies and streams, asked for upstream when the
//! app did not), exported as OpenTelemetry GenAI metrics and kept in the audit record.

use crate::support::*;
use std::time::{Duration, Instant};

fn chat(p: &Proxy, body: serde_json::Value) -> RawResponse {
    raw(
        p.port,
        &p.post(
            "/v1/chat/completions",
            body.to_string().as_bytes(),
            "Connection: close\r\n",
        ),
    )
    .unwrap()
}

/// The value of the metric line that has every one of `parts`, waiting for it a little.
fn metric(p: &Proxy, name: &str, parts: &[&str]) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let m = p.metrics();
        let line = m.lines().find(|l| {
            l.split(['{', ' ']).next() == Some(name) && parts.iter().all(|x| l.contains(x))
        });
        if let Some(l) = line {
            return l.rsplit(' ').next().unwrap().parse().unwrap();
        }
        if Instant::now() > deadline {
            panic!("no {name} with {parts:?} in\n{m}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait (bounded) for the metric to read `want`: it is recorded when the request is logged,
/// which can be just after the client has read the answer.
fn metric_is(p: &Proxy, name: &str, parts: &[&str], want: f64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let got = metric(p, name, parts);
        if got == want || Instant::now() > deadline {
            assert_eq!(got, want, "{name} {parts:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn usage_of_json_answers_and_streams_is_measured_and_audited() {
    let up = Upstream::start();
    // Series by key too (opt-in): this test follows one key's.
    let p = Proxy::start(&up, "[metrics]\nper_key = true\n");
    let key = format!("key=\"{}\"", p.key_id);
    let org = format!("org=\"{}\"", p.org_id);

    // A JSON answer: its usage object (1 in, 3 out).
    let r = chat(
        &p,
        serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 200);
    let sum = "gen_ai_client_token_usage_sum";
    let input = "gen_ai_token_type=\"input\"";
    let output = "gen_ai_token_type=\"output\"";
    let model = "gen_ai_request_model=\"gpt-4o-mini\"";
    let chat_op = "gen_ai_operation_name=\"chat\"";
    metric_is(&p, sum, &[input, model, chat_op, &key, &org], 1.0);
    metric_is(&p, sum, &[output, model, chat_op, &key, &org], 3.0);

    // A stream that did not ask for usage: sluice asks for it, and takes the usage chunk out
    // of what the app sees (the stream is the one it asked for).
    let r = chat(
        &p,
        serde_json::json!({"model": "gpt-4o-mini", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 200);
    let sent: serde_json::Value = serde_json::from_slice(&up.requests()[1].body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");
    let text = r.body_text();
    assert!(text.contains("tok2"), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(
        !text.contains("prompt_tokens"),
        "usage chunk reached the app: {text}"
    );
    assert!(!text.contains("\"choices\":[]"), "{text}");
    metric_is(&p, sum, &[input, model, &key], 12.0);
    metric_is(&p, sum, &[output, model, &key], 6.0);
    metric_is(
        &p,
        "gen_ai_server_time_to_first_token_seconds_count",
        &[model, chat_op, &key],
        1.0,
    );

    // A stream that asked for usage gets it, as sent.
    let r = chat(
        &p,
        serde_json::json!({"model": "gpt-4o-mini", "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 200);
    assert!(r.body_text().contains("\"prompt_tokens\":11"));
    metric_is(&p, sum, &[input, model, &key], 23.0);

    // Embeddings: input tokens only.
    let r = raw(
        p.port,
        &p.post(
            "/v1/embeddings",
            br#"{"model":"text-embedding-3-small","input":"hi"}"#,
            "Connection: close\r\n",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let emb = "gen_ai_operation_name=\"embeddings\"";
    metric_is(&p, sum, &[emb, input], 1.0);
    assert!(!p
        .metrics()
        .lines()
        .any(|l| l.starts_with(sum) && l.contains(emb) && l.contains(output)));

    // The audit record of each request carries its usage.
    let deadline = Instant::now() + Duration::from_secs(3);
    let usages = loop {
        let usages: Vec<serde_json::Value> = audit_records(&p)
            .into_iter()
            .filter(|r| r["kind"] == "request")
            .map(|r| r["details"]["usage"].clone())
            .collect();
        if usages.len() == 4 || Instant::now() > deadline {
            break usages;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        usages,
        vec![
            serde_json::json!({"input_tokens": 1, "output_tokens": 3}),
            serde_json::json!({"input_tokens": 11, "output_tokens": 3}),
            serde_json::json!({"input_tokens": 11, "output_tokens": 3}),
            serde_json::json!({"input_tokens": 1, "output_tokens": 3}),
        ]
    );
}

#[test]
fn stream_usage_off_leaves_the_request_alone() {
    let up = Upstream::start();
    let upstreams = mock_upstream(&up, "stream_usage = false\n");
    let p = Proxy::start_with(&upstreams, "");
    let r = chat(
        &p,
        serde_json::json!({"model": "gpt-4o-mini", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 200);
    let sent: serde_json::Value = serde_json::from_slice(&up.requests()[0].body).unwrap();
    assert!(sent.get("stream_options").is_none(), "{sent}");
    // Unknown usage is counted, not guessed.
    metric_is(
        &p,
        "sluice_usage_unknown_total",
        &["gen_ai_operation_name=\"chat\""],
        1.0,
    );
}

#[test]
fn model_labels_cannot_be_minted_by_clients() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let r = chat(
        &p,
        serde_json::json!({"model": "gpt-4o\"} evil{x=\"1", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 200);
    metric_is(
        &p,
        "gen_ai_client_token_usage_count",
        &[
            "gen_ai_request_model=\"other\"",
            "gen_ai_token_type=\"input\"",
        ],
        1.0,
    );
    assert!(!p.metrics().contains("evil"));
}

/// `/metrics` does not grow with key turnover: per-key series are opt-in (`key="-"` by
/// default), and with them on a revoked key's series disappear.
#[test]
fn per_key_series_are_opt_in_and_a_revoked_keys_go() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    assert_eq!(chat_with_key(p.port, &p.key).status, 200);
    let m = p.metrics_with(&["gen_ai_client_token_usage_count{"]);
    assert!(m.contains("key=\"-\""), "{m}");
    assert!(!m.contains(&p.key_id), "{m}");

    let up = Upstream::start();
    let p = Proxy::start(&up, "[metrics]\nper_key = true\n");
    assert_eq!(chat_with_key(p.port, &p.key).status, 200);
    let id = p.key_id.clone();
    eventually("the key's series", Duration::from_secs(5), || {
        p.metrics().contains(&format!("key=\"{id}\""))
    });
    p.cli_json(&["keys", "revoke", &id], b"");
    eventually(
        "the revoked key's series gone",
        Duration::from_secs(5),
        || !p.metrics().contains(&format!("key=\"{id}\"")),
    );

    // Turned off by a reload: the keys' series go at the next scrape.
    let other = p.cli_json(&["keys", "create", "--org", &p.org_id], b"");
    let (other_id, other) = (
        other["id"].as_str().unwrap().to_string(),
        other["key"].as_str().unwrap().to_string(),
    );
    eventually("the new key's series", Duration::from_secs(5), || {
        chat_with_key(p.port, &other).status == 200
            && p.metrics().contains(&format!("key=\"{other_id}\""))
    });
    let cfg = std::fs::read_to_string(&p.cfg_path).unwrap();
    std::fs::write(
        &p.cfg_path,
        cfg.replace("per_key = true", "per_key = false"),
    )
    .unwrap();
    assert_eq!(
        p.cli_json(&["reload"], b"")["applied"],
        serde_json::json!(["metrics"])
    );
    let m = p.metrics();
    assert!(!m.contains(&format!("key=\"{other_id}\"")), "{m}");
}
