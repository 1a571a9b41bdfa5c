//! Passthrough: JSON, SSE, big bodies over keep-alive, headers, request ids, upstream errors.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn json_passthrough_forwards_path_query_body_and_sets_headers() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let mut req = format!(
        "POST /v1/chat/completions?api-version=2024 HTTP/1.1\r\nHost: evil.example\r\n{}Content-Length: {}\r\n\r\n",
        p.auth(),
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let r = raw(p.port, &req).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "hello from mock"
    );
    assert_security_headers(&r);
    assert_eq!(r.header("x-sluice-upstream"), Some("mock"));
    assert_eq!(r.header("x-sluice-region"), Some("us"));
    assert_eq!(r.header("x-upstream-request-id"), Some("req_upstream_123"));
    assert!(r.header("access-control-allow-origin").is_none());

    let got = up.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/v1/chat/completions?api-version=2024");
    assert_eq!(got[0].body, body);
    // The upstream is the configured one whatever Host said.
    assert_eq!(got[0].header("host"), Some(up.addr.to_string().as_str()));
    assert_eq!(
        got[0].header("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(got[0].header("x-request-id"), r.header("x-request-id"));
}

#[test]
fn bodies_of_1kb_1mb_and_9mb_arrive_intact_over_one_keepalive_connection() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let mut s = connect(p.port).unwrap();
    let mut sent = Vec::new();
    for (i, size) in [1_000usize, 1_000_000, 9_000_000].into_iter().enumerate() {
        let filler: String = (0..size)
            .map(|j| (b'a' + ((i + j) % 26) as u8) as char)
            .collect();
        let body = format!(r#"{{"model":"gpt-4o","input":"{filler}"}}"#).into_bytes();
        s.write_all(&p.post("/v1/embeddings", &body, "")).unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!(r.status, 200, "{}", r.body_text());
        sent.push(body);
    }
    // A chunked body on the same connection arrives with an exact Content-Length.
    let body = format!(r#"{{"model":"gpt-4o","input":"{}"}}"#, "z".repeat(300_000)).into_bytes();
    let mut req = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n{}Transfer-Encoding: chunked\r\n\r\n",
        p.auth()
    )
    .into_bytes();
    req.extend_from_slice(&chunked(&body, 70_000));
    s.write_all(&req).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 200);
    sent.push(body);

    let got = up.requests();
    assert_eq!(got.len(), 4);
    for (g, b) in got.iter().zip(&sent) {
        assert_eq!(g.body.len(), b.len());
        assert!(g.body == *b, "body changed in transit");
        assert_eq!(
            g.header("content-length"),
            Some(b.len().to_string().as_str())
        );
        assert_eq!(g.header("transfer-encoding"), None);
    }
    assert_eq!(up.connections(), 1, "upstream connection should be reused");
}

/// `body` in chunked encoding, `size` bytes per chunk.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Small bodies are forwarded from pingora's retry buffer (no second parse): what the
/// upstream receives is still the checked body with its exact framing, whatever the client's
/// framing was, and the client sees one 100 Continue.
#[test]
fn small_bodies_arrive_rewritten_with_exact_framing_after_100_continue_and_chunks() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let mut s = connect(p.port).unwrap();
    // Chunked, with Expect: 100-continue, and an email to redact.
    let body = br#"{"model":"gpt-4o","input":"write to jane.doe@example.com today"}"#;
    let head = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n{}Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
        p.auth()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A 1xx answer is a head alone.
    let mut cont = Vec::new();
    let mut byte = [0u8; 1];
    while !cont.ends_with(b"\r\n\r\n") && cont.len() < 4096 {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed before 100 Continue");
        cont.push(byte[0]);
    }
    assert!(
        cont.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&cont)
    );
    s.write_all(&chunked(body, 20)).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    // Then a plain small body on the same connection, unchanged.
    let plain = br#"{"model":"gpt-4o","input":"nothing personal"}"#;
    s.write_all(&p.post("/v1/embeddings", plain, "")).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());

    let got = up.requests();
    assert_eq!(got.len(), 2);
    let want = br#"{"model":"gpt-4o","input":"write to [REDACTED_EMAIL] today"}"#;
    assert_eq!(
        got[0].body,
        want.to_vec(),
        "{}",
        String::from_utf8_lossy(&got[0].body)
    );
    assert_eq!(
        got[0].header("content-length"),
        Some(want.len().to_string().as_str())
    );
    assert_eq!(got[0].header("transfer-encoding"), None);
    assert_eq!(got[0].header("expect"), None);
    assert_eq!(got[1].body, plain.to_vec());
    assert_eq!(
        got[1].header("content-length"),
        Some(plain.len().to_string().as_str())
    );
    assert_eq!(up.connections(), 1, "upstream connection should be reused");
}

#[test]
fn sse_events_arrive_incrementally() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let body = br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
    let mut s = connect(p.port).unwrap();
    let start = Instant::now();
    s.write_all(&p.post("/v1/chat/completions", body, "X-Mock: sse:4:400\r\n"))
        .unwrap();
    // Read raw bytes and note when each event arrives.
    let mut seen = Vec::new();
    let mut acc = Vec::new();
    let mut buf = [0u8; 4096];
    while seen.len() < 4 && start.elapsed() < Duration::from_secs(10) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        acc.extend_from_slice(&buf[..n]);
        let count = String::from_utf8_lossy(&acc)
            .matches("chat.completion.chunk")
            .count();
        while seen.len() < count {
            seen.push(start.elapsed());
        }
    }
    assert_eq!(seen.len(), 4);
    let head = String::from_utf8_lossy(&acc).to_ascii_lowercase();
    assert!(head.contains("content-type: text/event-stream"));
    assert!(
        seen[0] < Duration::from_millis(350),
        "first event late: {seen:?}"
    );
    for w in seen.windows(2) {
        assert!(
            w[1] - w[0] > Duration::from_millis(250),
            "events bunched: {seen:?}"
        );
    }
}

#[test]
fn request_id_is_kept_when_valid_and_replaced_when_not() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let r = raw(
        p.port,
        &p.post("/v1/embeddings", b"{}", "X-Request-Id: trace-abc.123\r\n"),
    )
    .unwrap();
    assert_eq!(r.header("x-request-id"), Some("trace-abc.123"));
    assert_eq!(
        up.requests()[0].header("x-request-id"),
        Some("trace-abc.123")
    );

    let r = raw(
        p.port,
        &p.post("/v1/embeddings", b"{}", "X-Request-Id: bad id <script>\r\n"),
    )
    .unwrap();
    let id = r.header("x-request-id").unwrap().to_string();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(up.requests()[1].header("x-request-id"), Some(id.as_str()));

    // Errors carry the id too, in the header and the body.
    let r = raw(
        p.port,
        b"GET /nope HTTP/1.1\r\nHost: x\r\nX-Request-Id: err-1\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-request-id"), Some("err-1"));
    assert_eq!(r.json()["error"]["request_id"], "err-1");
    assert_security_headers(&r);
}

#[test]
fn upstream_errors_pass_through_and_unreachable_upstream_is_502() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let r = raw(
        p.port,
        &p.post("/v1/chat/completions", b"{}", "X-Mock: status:429\r\n"),
    )
    .unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["message"], "mock error");
    assert_security_headers(&r);

    let dead = refused_port();
    let p = Proxy::start_with(
        &format!(
            "[[upstreams]]\nname = \"dead\"\nregion = \"us\"\nbase_url = \"http://127.0.0.1:{}\"\n",
            dead.port
        ),
        "",
    );
    // Until the health check has marked it down, a connection attempt fails: 502. Once it has,
    // the region has no healthy upstream: 503, without trying.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = raw(p.port, &p.post("/v1/chat/completions", b"{}", "")).unwrap();
        assert_eq!(r.json()["error"]["type"], "server_error");
        assert_security_headers(&r);
        if r.status == 503 {
            assert_eq!(r.code(), "region_unavailable");
            break;
        }
        assert_eq!(r.status, 502);
        assert_eq!(r.code(), "upstream_unreachable");
        assert!(std::time::Instant::now() < deadline, "never marked down");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cors_only_when_configured_and_foreign_origins_are_refused() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let r = raw(
        p.port,
        &p.post("/v1/embeddings", b"{}", "Origin: https://evil.example\r\n"),
    )
    .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "origin_not_allowed");
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(up.requests().is_empty());

    let p = Proxy::start(
        &up,
        "[cors]\nallow_origins = [\"https://app.example.com\"]\n",
    );
    let r = raw(
        p.port,
        b"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example.com\r\nAccess-Control-Request-Method: POST\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(
        up.requests().is_empty(),
        "preflight must not reach the upstream"
    );
    let r = raw(
        p.port,
        &p.post(
            "/v1/embeddings",
            b"{}",
            "Origin: https://app.example.com\r\n",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_security_headers(&r);
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let r = raw(
        p.port,
        &p.post(
            "/v1/embeddings",
            b"{}",
            "Connection: keep-alive, X-Secret-Hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nX-Sluice-Debug: 1\r\nTE: trailers\r\n",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let got = &up.requests()[0];
    for h in [
        "x-secret-hop",
        "keep-alive",
        "proxy-authorization",
        "x-sluice-debug",
        "te",
    ] {
        assert_eq!(got.header(h), None, "{h} forwarded");
    }
}

#[test]
fn logs_never_contain_authorization_values_bodies_or_query_strings() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "[log]\nlevel = \"debug\"\n");
    let canary_key = "sk-sluice-canaryKEY4f9a8b7c6d5e0000000000000000000";
    let canary_body = "canary-BODY-1a2b3c4d";
    let canary_query = "canary-QUERY-9z8y7x";
    let body = format!(r#"{{"model":"gpt-4o","input":"{canary_body}"}}"#);
    let r = raw(
        p.port,
        &p.post(
            &format!("/v1/embeddings?q={canary_query}"),
            body.as_bytes(),
            "",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    // Error paths too: an unknown key, refused framing, a missing route.
    let hdr = format!("Authorization: Bearer {canary_key}\r\n");
    let r = raw(p.port, &post("/v1/embeddings", body.as_bytes(), &hdr)).unwrap();
    assert_eq!(r.status, 401);
    let _ = raw(
        p.port,
        format!("GET /v1/../x?q={canary_query} HTTP/1.1\r\nHost: x\r\n{hdr}\r\n").as_bytes(),
    );
    let _ = raw(p.port, format!("POST /v1/x HTTP/1.1\r\nHost: x\r\n{hdr}Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").as_bytes());
    p.metrics_with(&["sluice_errors_total{code=\"invalid_framing\"} 1"]);
    let log = p.log();
    assert!(
        log.contains("request"),
        "the request log line is missing:\n{log}"
    );
    for canary in [canary_key, canary_body, canary_query, p.key.as_str()] {
        assert!(
            !log.contains(canary),
            "{canary} leaked into the log:\n{log}"
        );
    }
}

/// A client that reads a stream to `data: [DONE]` and closes before the final chunk marker (the
/// official SDKs stop there) got the whole answer: it is not an interruption, and nothing is
/// logged as an error.
#[test]
fn a_stream_closed_after_done_is_complete_not_interrupted() {
    use std::io::{Read, Write};
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    for _ in 0..3 {
        let body =
            br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let mut c = connect(p.port).unwrap();
        c.write_all(&p.post("/v1/chat/completions", body, "X-Mock: sse-linger\r\n"))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("[DONE]") {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "ended before [DONE]");
            got.extend_from_slice(&buf[..n]);
        }
        drop(c);
    }
    // All three logged as answered, none counted as interrupted.
    eventually(
        "three requests logged",
        std::time::Duration::from_secs(5),
        || {
            p.metrics()
                .lines()
                .filter(|l| l.starts_with("sluice_requests_total{") && l.contains("status=\"200\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum::<u64>()
                >= 3
        },
    );
    let m = p.metrics();
    assert!(
        !m.lines()
            .any(|l| l.starts_with("sluice_stream_interruptions_total{")
                && l.contains("client_gone")
                && !l.ends_with(" 0")),
        "{m}"
    );
    assert!(!p.log().contains("ERROR"), "{}", p.log());
}
