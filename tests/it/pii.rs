//! PII redaction on the data plane: what the upstream receives, per-org and per-key policy
//! (changed while serving), fail-closed refusals, compressed bodies, the response header, the
//! metric, and logs that never see the values.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::*;

const CHAT: &str = r#"{"model":"gpt-4o","stream":false,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"I am jane.doe@example.com, SSN 123-45-6789, call (415) 555-0123, card 4111 1111 1111 1111. Order 123456789 on 2024-01-15."}]}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"temperature":0.2}"#;
const VALUES: &[&str] = &[
    "jane.doe@example.com",
    "123-45-6789",
    "(415) 555-0123",
    "4111 1111 1111 1111",
];

fn redacted_body() -> serde_json::Value {
    serde_json::json!("I am [REDACTED_EMAIL], SSN [REDACTED_SSN], call [REDACTED_PHONE], card [REDACTED_CARD]. Order 123456789 on 2024-01-15.")
}

#[test]
fn pii_is_redacted_before_the_upstream_and_counted() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "[log]\nlevel = \"debug\"\n");
    let r = raw(p.port, &p.post("/v1/chat/completions", CHAT.as_bytes(), "")).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(
        r.header("x-sluice-redactions"),
        Some("email=1,ssn=1,phone=1,card=1")
    );
    let got = &up.requests()[0];
    let sent: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(sent["messages"][1]["content"][0]["text"], redacted_body());
    assert_eq!(sent["messages"][0]["content"], "be brief");
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(
        got.header("content-length"),
        Some(got.body.len().to_string().as_str())
    );
    let body = String::from_utf8_lossy(&got.body);
    for v in VALUES {
        assert!(!body.contains(v), "{v} reached the upstream");
    }
    p.metrics_with(&[
        "sluice_redactions_total{entity=\"email\"} 1",
        "sluice_redactions_total{entity=\"card\"} 1",
    ]);
    let log = p.log();
    for v in VALUES {
        assert!(!log.contains(v), "{v} in the log");
    }
    // A body with no PII carries no header and is forwarded byte for byte.
    let clean = br#"{"model":"gpt-4o","input":"nothing here","n":1.50}"#;
    let r = raw(p.port, &p.post("/v1/embeddings", clean, "")).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-sluice-redactions"), None);
    assert_eq!(up.requests()[1].body, clean.to_vec());
}

#[test]
fn escaped_and_streaming_requests_are_redacted_too() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let body = br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"mail jane\u0040example.com"}],"tool_calls":[{"function":{"arguments":"{\"card\":\"4111111111111111\"}"}}]}"#;
    let r = raw(p.port, &p.post("/v1/chat/completions", body, "")).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-sluice-redactions"), Some("email=1,card=1"));
    let sent = String::from_utf8_lossy(&up.requests()[0].body).into_owned();
    assert!(
        !sent.contains("jane") && !sent.contains("4111111111111111"),
        "{sent}"
    );
    assert!(
        r.body_text().contains("data:"),
        "not streamed: {}",
        r.body_text()
    );
}

#[test]
fn unscannable_bodies_are_refused_never_forwarded() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "[limits]\nmax_body_bytes = 100000\n");
    let form = "--x\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc\r\n--x--\r\n";
    let multipart = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n{}Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {}\r\n\r\n{form}",
        p.auth(),
        form.len()
    );
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            p.post("/v1/chat/completions", b"{\"a\": jane@example.com}", ""),
            400,
        ),
        (
            p.post("/v1/chat/completions", b"{\"a\":\"x\"} trailing", ""),
            400,
        ),
        (multipart.into_bytes(), 415),
        (
            p.post(
                "/v1/embeddings",
                b"\x1f\x8b garbage",
                "Content-Encoding: br\r\n",
            ),
            415,
        ),
        (
            p.post("/v1/embeddings", b"not gzip", "Content-Encoding: gzip\r\n"),
            400,
        ),
    ];
    for (req, status) in cases {
        let r = raw(p.port, &req).unwrap();
        assert_eq!(r.status, status, "{}", r.body_text());
        assert_eq!(r.code(), "unscannable_body");
        assert_security_headers(&r);
    }
    // A decompression bomb: small on the wire, over max_body_bytes decoded.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 5_000_000]).unwrap();
    let bomb = gz.finish().unwrap();
    let r = raw(
        p.port,
        &p.post("/v1/embeddings", &bomb, "Content-Encoding: gzip\r\n"),
    )
    .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), "request_too_large");
    assert_eq!(
        up.connections(),
        0,
        "an unscannable body reached the upstream"
    );

    // gzip that decodes fine: redacted, forwarded decoded, without Content-Encoding.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"input":"jane@example.com"}"#).unwrap();
    let r = raw(
        p.port,
        &p.post(
            "/v1/embeddings",
            &gz.finish().unwrap(),
            "Content-Encoding: gzip\r\n",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    let got = &up.requests()[0];
    assert_eq!(got.body, br#"{"input":"[REDACTED_EMAIL]"}"#.to_vec());
    assert_eq!(got.header("content-encoding"), None);
}

fn wait_for(p: &Proxy, body: &[u8], want_redacted: bool, up: &Upstream, auth: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let before = up.requests().len();
        let r = raw(p.port, &post("/v1/embeddings", body, auth)).unwrap();
        assert_eq!(r.status, 200, "{}", r.body_text());
        let sent = up.requests()[before].body.clone();
        let redacted = !contains(&sent, b"jane@example.com");
        if redacted == want_redacted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "policy change not applied within 2 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn org_and_key_policies_apply_and_change_while_serving() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "[pii]\ndefault = \"off\"\n");
    // The config default applies to orgs created without --pii.
    let off_org = s.cli_json(&["orgs", "create", "quiet"], b"");
    assert_eq!(off_org["pii"], "off");
    let org = off_org["id"].as_str().unwrap().to_string();
    let inherit = s.cli_json(&["keys", "create", "--org", &org], b"");
    let forced = s.cli_json(&["keys", "create", "--org", &org, "--pii", "on"], b"");
    let p = s.spawn();
    let body = br#"{"input":"jane@example.com"}"#;
    let a_inherit = format!(
        "Authorization: Bearer {}\r\n",
        inherit["key"].as_str().unwrap()
    );
    let a_forced = format!(
        "Authorization: Bearer {}\r\n",
        forced["key"].as_str().unwrap()
    );
    wait_for(&p, body, false, &up, &a_inherit);
    wait_for(&p, body, true, &up, &a_forced);
    // Turning the org on applies to its inheriting keys within a second or two.
    p.cli_json(&["orgs", "update", &org, "--pii", "on"], b"");
    wait_for(&p, body, true, &up, &a_inherit);
    // The harness's own org was created under the same config: off as well.
    wait_for(&p, body, false, &up, &p.auth());
}

#[test]
fn a_huge_dense_body_does_not_stall_other_requests_on_the_same_worker() {
    let up = Upstream::start();
    // One worker thread: without offloading, redacting the big body blocks every connection.
    let p = Proxy::start(&up, "[server]\nthreads = 1\n");
    // About 2 MB of digit clusters: seconds of redaction in a debug build.
    let mut dense = String::new();
    let mut x: u64 = 12345;
    while dense.len() < 2_000_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        dense.push_str(&format!("{:05}-{:04} ", x % 100_000, (x >> 20) % 10_000));
    }
    let big = serde_json::json!({"model": "gpt-4o-mini", "input": dense}).to_string();
    let mut big_conn = connect(p.port).unwrap();
    big_conn
        .write_all(&p.post("/v1/embeddings", big.as_bytes(), ""))
        .unwrap();
    // Once sluice has counted the big body in, its redaction is under way (the metrics have
    // their own listener and thread); then the small one goes.
    let read_in = || {
        p.metrics()
            .lines()
            .find_map(|l| l.strip_prefix("sluice_request_bytes_total "))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    eventually("the big body is read", Duration::from_secs(30), || {
        read_in() >= big.len()
    });
    let sent = Instant::now();
    let small = raw(
        p.port,
        &p.post("/v1/embeddings", br#"{"model":"m","input":"small"}"#, ""),
    )
    .unwrap();
    assert_eq!(small.status, 200);
    assert_eq!(read_response(&mut big_conn).unwrap().status, 200);
    let got = up.requests();
    let small_at = got
        .iter()
        .find(|r| r.body.ends_with(br#""small"}"#))
        .unwrap()
        .at;
    let big_at = got.iter().find(|r| r.body.len() > 1_000_000).unwrap().at;
    // Stalled behind the big one's redaction, the small one would reach the upstream about
    // when the big one does; beside it, in the first half of what was left of the big one's
    // redaction when it was sent (whatever the build: seconds of redaction in a debug build,
    // a fraction of one in a release build).
    let half = big_at.saturating_duration_since(sent) / 2;
    assert!(
        small_at + half < big_at,
        "the small request waited for the big one's redaction (forwarded {:?} before it, \
         {:?} after the big one was read)",
        big_at.saturating_duration_since(small_at),
        small_at.saturating_duration_since(sent)
    );
}
