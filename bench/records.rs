//! Shared by the benches and probes: records shaped like the data plane's.

/// A proxied request's audit record as the data plane builds it (`proxy.request`, org set).
pub fn request_record(org: &str, i: usize) -> sluice::audit::Record {
    sluice::audit::Record {
        kind: "request",
        action: "proxy.request".into(),
        actor: "key:0190f3a2-7c1e-7d3a-9b1c-2f5e8a9d4c71".into(),
        org_id: Some(org.into()),
        target_id: Some("openai-us".into()),
        source_ip: Some("127.0.0.1".into()),
        user_agent: Some("OpenAI/Python 1.50.0".into()),
        request_id: Some(format!("0190f3a2-7c1e-7d3a-9b1c-{i:012}")),
        outcome: "success",
        details: serde_json::json!({
            "method": "POST", "path": "/v1/chat/completions", "route": "chat_completions",
            "key_id": "0190f3a2-7c1e-7d3a-9b1c-2f5e8a9d4c71", "model": "gpt-4o-mini",
            "region": "us", "upstream": "openai-us", "status": 200, "code": null,
            "latency_ms": 1.234, "bytes_in": 2048, "bytes_out": 512,
            "redactions": {"email": 0}, "response_redactions": null,
            "usage": {"input_tokens": 512, "output_tokens": 64},
        }),
        // What the hourly usage roll-up gets from it.
        usage: Some(Box::new(sluice::audit::Usage {
            key_id: "0190f3a2-7c1e-7d3a-9b1c-2f5e8a9d4c71".into(),
            model: "",
            model_name: "gpt-4o-mini".into(),
            input_tokens: 512,
            output_tokens: 64,
        })),
    }
}
