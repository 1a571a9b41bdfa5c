//! Size limits and timeouts: 413 before any upstream contact, model-based 504, mid-stream
//! stalls, slow clients.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn body_over_limit_by_content_length_is_413_and_upstream_never_contacted() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "[limits]\nmax_body_bytes = 1000\n");
    let body = vec![b'a'; 1001];
    let mut s = connect(p.port).unwrap();
    s.write_all(&p.post("/v1/chat/completions", &body, ""))
        .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), "request_too_large");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_security_headers(&r);
    assert!(
        is_closed(&mut s),
        "connection with an unread body must close"
    );
    // Exactly at the limit is fine.
    let r = raw(
        p.port,
        &p.post("/v1/chat/completions", &vec![b' '; 1000], ""),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(up.requests().len(), 1);
    assert_eq!(up.requests()[0].body.len(), 1000);
}

#[test]
fn chunked_body_over_limit_is_413_and_upstream_never_contacted() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "[limits]\nmax_body_bytes = 100000\n");
    let mut s = connect(p.port).unwrap();
    s.write_all(
        format!(
            "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n{}Transfer-Encoding: chunked\r\n\r\n",
            p.auth()
        )
        .as_bytes(),
    )
    .unwrap();
    let chunk = vec![b'b'; 30_000];
    let mut r = None;
    for _ in 0..10 {
        let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
        c.extend_from_slice(&chunk);
        c.extend_from_slice(b"\r\n");
        if s.write_all(&c).is_err() {
            break;
        }
    }
    if r.is_none() {
        r = Some(read_response(&mut s).unwrap());
    }
    let r = r.unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), "request_too_large");
    assert_eq!(up.connections(), 0);
    assert!(up.requests().is_empty());
}

#[test]
fn stalled_upstream_gives_504_with_the_timeout_chosen_by_model() {
    let up = Upstream::start();
    let p = Proxy::start(
        &up,
        "[limits]\ntimeout_secs = 1\nlong_timeout_secs = 4\nlong_timeout_models = [\"o1*\"]\n",
    );
    let t = Instant::now();
    let r = raw(
        p.port,
        &p.post(
            "/v1/chat/completions",
            br#"{"model":"gpt-4o"}"#,
            "X-Mock: stall:2500\r\n",
        ),
    )
    .unwrap();
    let took = t.elapsed();
    assert_eq!(r.status, 504, "{}", r.body_text());
    assert_eq!(r.code(), "upstream_timeout");
    assert_security_headers(&r);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2400),
        "{took:?}"
    );

    // A reasoning model gets the long timeout and its slow answer goes through.
    let r = raw(
        p.port,
        &p.post(
            "/v1/chat/completions",
            br#"{"model":"o1-mini"}"#,
            "X-Mock: stall:2500\r\n",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    p.metrics_with(&["sluice_errors_total{code=\"upstream_timeout\"} 1"]);
}

#[test]
fn a_long_stream_that_keeps_producing_is_not_cut_but_a_stalled_one_is() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "[limits]\ntimeout_secs = 1\n");
    // 5 events 600 ms apart: 2.4 s in total, longer than the 1 s timeout, never a 1 s gap.
    let r = raw(
        p.port,
        &p.post(
            "/v1/chat/completions",
            br#"{"model":"gpt-4o","stream":true}"#,
            "X-Mock: sse:5:600\r\n",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text().matches("chat.completion.chunk").count(), 5);
    assert!(r.body_text().contains("[DONE]"));

    // Headers and one event, then silence: the stream is cut and counted.
    let mut s = connect(p.port).unwrap();
    s.write_all(&p.post(
        "/v1/chat/completions",
        br#"{"model":"gpt-4o","stream":true}"#,
        "X-Mock: stall-mid\r\n",
    ))
    .unwrap();
    let t = Instant::now();
    let res = read_response(&mut s);
    assert!(res.is_err(), "a stalled stream must not end cleanly");
    assert!(t.elapsed() < Duration::from_secs(5));
    p.metrics_with(&["sluice_stream_interruptions_total{reason=\"upstream_timeout\"} 1"]);
}

#[test]
fn slow_clients_are_cut_off_without_slowing_others() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "[limits]\nclient_timeout_secs = 1\n");
    // Slow body: headers promise 100 bytes, 10 arrive.
    let mut slow_body = connect(p.port).unwrap();
    slow_body
        .write_all(
            format!(
                "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n{}Content-Length: 100\r\n\r\n0123456789",
                p.auth()
            )
            .as_bytes(),
        )
        .unwrap();
    // Slow headers: a byte at a time.
    let mut slow_head = connect(p.port).unwrap();
    slow_head.write_all(b"POST /v1/emb").unwrap();

    // Meanwhile a normal client is served at once.
    let t = Instant::now();
    let r = raw(p.port, &p.post("/v1/embeddings", b"{}", "")).unwrap();
    assert_eq!(r.status, 200);
    assert!(t.elapsed() < Duration::from_millis(800));

    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(400));
        let _ = slow_head.write_all(b"e");
    }
    let r = read_response(&mut slow_body).unwrap();
    assert_eq!(r.status, 408);
    assert_eq!(r.code(), "request_timeout");
    assert!(is_closed(&mut slow_body));
    // The slow header sender is cut off too, and told why in the same JSON shape.
    let r = read_response(&mut slow_head).expect("a slow head gets a 408 it can read");
    assert_eq!(r.status, 408);
    assert_eq!(r.code(), "request_timeout");
    assert_security_headers(&r);
    assert!(
        is_closed(&mut slow_head),
        "slow header sender must be cut off"
    );
    assert_eq!(up.requests().len(), 1);
}
