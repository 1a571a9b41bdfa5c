//! Hostile clients: request smuggling, header floods, traversal, absolute-form targets, admin
//! paths on the data plane. Every case is refused and the upstream never sees it.

use std::io::Write;

use crate::support::*;

fn assert_refused_and_closed(port: u16, req: &[u8], status: u16) -> RawResponse {
    let mut s = connect(port).unwrap();
    s.write_all(req).unwrap();
    let r = read_response(&mut s)
        .unwrap_or_else(|e| panic!("{e} for {}", String::from_utf8_lossy(req)));
    assert_eq!(
        r.status,
        status,
        "{}: {}",
        String::from_utf8_lossy(req),
        r.body_text()
    );
    assert!(
        is_closed(&mut s),
        "connection must close after {}",
        String::from_utf8_lossy(req)
    );
    r
}

#[test]
fn ambiguous_framing_is_400_and_never_forwarded() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let smuggled = "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases = [
        format!("POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{smuggled}"),
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}".to_string(),
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}".to_string(),
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\n{}".to_string(),
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".to_string(),
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n".to_string(),
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked, identity\r\n\r\n0\r\n\r\n".to_string(),
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\n{}".to_string(),
    ];
    for c in &cases {
        // Authenticated, so the refusal is about framing and not about the key.
        let c = c.replacen("Host: x\r\n", &format!("Host: x\r\n{}", p.auth()), 1);
        let r = assert_refused_and_closed(p.port, c.as_bytes(), 400);
        // sluice's own gate answers in JSON; the few shapes pingora's parser refuses first get
        // its plain 400. Either way: 400, closed, not forwarded.
        if r.header("content-type") == Some("application/json") {
            assert_eq!(r.code(), "invalid_framing");
        }
    }
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    assert_eq!(up.connections(), 0);
}

#[test]
fn too_many_or_too_large_headers_get_431() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "[limits]\nmax_headers = 20\nmax_header_bytes = 4096\n");
    let many: String = (0..25).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = assert_refused_and_closed(
        p.port,
        format!("GET /v1/models HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
        431,
    );
    assert_eq!(r.code(), "headers_too_large");
    let big = "a".repeat(5000);
    let r = assert_refused_and_closed(
        p.port,
        format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        431,
    );
    assert_eq!(r.code(), "headers_too_large");
    assert_security_headers(&r);
    assert!(up.requests().is_empty());
}

#[test]
fn only_v1_is_proxied_and_traversal_is_refused() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    for (target, status, code) in [
        ("/v1/../api/orgs", 400, "invalid_path"),
        ("/v1/%2e%2e/api/orgs", 400, "invalid_path"),
        ("/v1/%2E%2E%2Fapi", 400, "invalid_path"),
        ("/v1/..%2fapi", 400, "invalid_path"),
        ("/v1/%252e%252e/api", 400, "invalid_path"),
        ("/v1//models", 400, "invalid_path"),
        ("/api/orgs", 404, "not_found"),
        ("/healthz", 404, "not_found"),
        ("/metrics", 404, "not_found"),
        ("/", 404, "not_found"),
        ("/v2/models", 404, "not_found"),
    ] {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
            p.auth()
        );
        let r = assert_refused_and_closed(p.port, req.as_bytes(), status);
        assert_eq!(r.code(), code, "{target}");
        assert_security_headers(&r);
    }
    // Absolute-form targets, whatever the Host says. pingora's parser refuses some shapes
    // first (plain 400); the rest reach sluice's gate (JSON invalid_path).
    for (target, host) in [
        ("http://169.254.169.254/v1/models", "x"),
        ("http://169.254.169.254/v1/models", "169.254.169.254"),
        ("http://127.0.0.1:1/v1/models", "127.0.0.1:1"),
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let r = assert_refused_and_closed(p.port, req.as_bytes(), 400);
        if r.header("content-type") == Some("application/json") {
            assert_eq!(r.code(), "invalid_path");
        }
    }
    let r = assert_refused_and_closed(
        p.port,
        b"PUT /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        405,
    );
    assert_eq!(r.code(), "method_not_allowed");
    assert!(up.requests().is_empty(), "{:?}", up.requests());

    // A good request still works and goes to the configured upstream.
    let r = raw(
        p.port,
        format!(
            "GET /v1/models HTTP/1.1\r\nHost: 169.254.169.254\r\n{}\r\n",
            p.auth()
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(up.requests()[0].path, "/v1/models");
}

#[test]
fn admin_plane_is_not_reachable_through_the_data_port_and_vice_versa() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let r = http_get(p.admin_port, "/v1/models").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "not_found");
    let r = http_get(p.metrics_port, "/healthz").unwrap();
    assert_eq!(r.status, 404);
    let r = http_get(p.port, "/readyz").unwrap();
    assert_eq!(r.status, 404);
    assert!(up.requests().is_empty());
}

/// A chunked POST of `body`, with the setup's key unless `auth` is empty.
fn chunked(path: &str, body: &[u8], auth: &str) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n{auth}\r\n"
    )
    .into_bytes();
    // Two chunks, so the body really is split.
    let (a, b) = body.split_at(body.len() / 2);
    for part in [a, b] {
        r.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        r.extend_from_slice(part);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}

/// Write `first` and `second` in one write (pipelined) and read two responses in order.
fn pipelined(port: u16, first: &[u8], second: &[u8]) -> (RawResponse, Option<RawResponse>) {
    let mut s = connect(port).unwrap();
    let mut both = first.to_vec();
    both.extend_from_slice(second);
    s.write_all(&both).unwrap();
    let a = read_response(&mut s).unwrap_or_else(|e| panic!("no answer to the first request: {e}"));
    let b = read_response(&mut s).ok();
    (a, b)
}

#[test]
fn pipelined_requests_are_each_answered_and_authenticated_on_their_own() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let clean = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;
    let pii =
        br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"mail bob@example.com"}]}"#;
    let second = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"second"}]}"#;
    let path = "/v1/chat/completions";
    let auth = p.auth();
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        (
            "content-length, then content-length",
            p.post(path, clean, ""),
            p.post(path, second, ""),
        ),
        (
            "chunked, then content-length",
            chunked(path, clean, &auth),
            p.post(path, second, ""),
        ),
        (
            "redacted content-length, then chunked",
            p.post(path, pii, ""),
            chunked(path, second, &auth),
        ),
        (
            "redacted chunked, then chunked",
            chunked(path, pii, &auth),
            chunked(path, second, &auth),
        ),
        (
            "content-length, then a GET",
            p.post(path, clean, ""),
            format!("GET /v1/models HTTP/1.1\r\nHost: x\r\n{auth}\r\n").into_bytes(),
        ),
    ];
    for (name, first, second_req) in &cases {
        let before = up.requests().len();
        let (a, b) = pipelined(p.port, first, second_req);
        assert_eq!(a.status, 200, "{name}: {}", a.body_text());
        let b = b.unwrap_or_else(|| panic!("{name}: the pipelined request got no answer"));
        assert_eq!(b.status, 200, "{name}: {}", b.body_text());
        let got = up.requests();
        assert_eq!(got.len(), before + 2, "{name}");
        let (r1, r2) = (&got[before], &got[before + 1]);
        // Forwarded once each, exact, never glued together.
        if first.windows(9).any(|w| w == b"bob@examp") {
            assert!(
                !String::from_utf8_lossy(&r1.body).contains("bob@example.com"),
                "{name}"
            );
            assert!(
                String::from_utf8_lossy(&r1.body).contains("[REDACTED_EMAIL]"),
                "{name}"
            );
        } else {
            assert_eq!(r1.body, clean.to_vec(), "{name}");
        }
        if r2.method == "POST" {
            assert_eq!(r2.body, second.to_vec(), "{name}");
        } else {
            assert_eq!(r2.path, "/v1/models", "{name}");
        }
    }
}

#[test]
fn a_pipelined_request_without_a_key_is_refused_and_never_forwarded() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;
    let path = "/v1/chat/completions";
    let no_key = post(path, br#"{"model":"x","messages":[]}"#, "");
    for first in [p.post(path, body, ""), chunked(path, body, &p.auth())] {
        let before = up.requests().len();
        let (a, b) = pipelined(p.port, &first, &no_key);
        assert_eq!(a.status, 200, "{}", a.body_text());
        let b = b.expect("the keyless request is answered");
        assert_eq!(b.status, 401);
        assert_eq!(b.code(), "invalid_api_key");
        let got = up.requests();
        assert_eq!(got.len(), before + 1, "only the first request is forwarded");
        assert_eq!(got[before].body, body.to_vec());
    }
    // The keyless one is not sent with the first one's credential either: nothing reached
    // the upstream carrying its body.
    assert!(up
        .requests()
        .iter()
        .all(|r| !String::from_utf8_lossy(&r.body).contains(r#""model":"x""#)));
}

/// Send `head` and then `body_len` bytes of body as fast as the socket takes them, while reading
/// the reply; returns the reply and whether the upload finished without a reset/EPIPE.
fn upload_against_refusal(
    port: u16,
    head: &[u8],
    body_len: usize,
) -> (std::io::Result<RawResponse>, bool) {
    let mut s = connect(port).unwrap();
    s.write_all(head).unwrap();
    let mut writer = s.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        let chunk = vec![b'a'; 64 * 1024];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len());
            if writer.write_all(&chunk[..n]).is_err() {
                return false;
            }
            left -= n;
        }
        true
    });
    let r = read_response(&mut s);
    let uploaded = t.join().unwrap();
    (r, uploaded)
}

#[test]
fn early_refusals_linger_so_an_uploading_client_reads_them() {
    // Uploads far larger than the kernel's socket buffers: without a lingering close the
    // client's writes fail with a reset and it never reads the refusal.
    let big = 24 * 1024 * 1024;
    let up = Upstream::start();
    let p = Proxy::start(&up, "[limits]\nmax_body_bytes = 1048576\n");
    // 413 from the Content-Length, before any body byte was read.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {big}\r\n{}\r\n",
        p.auth()
    );
    let (r, uploaded) = upload_against_refusal(p.port, head.as_bytes(), big);
    let r = r.expect("the refusal is readable");
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), "request_too_large");
    assert!(uploaded, "the upload was reset instead of drained");
    // 413 in the middle of a chunked upload: the rest is one more huge chunk.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n{}\r\n{:x}\r\n",
        p.auth(),
        big
    );
    let (r, uploaded) = upload_against_refusal(p.port, head.as_bytes(), big);
    assert_eq!(r.expect("the refusal is readable").status, 413);
    assert!(uploaded, "the upload was reset instead of drained");

    // 401 and 429 are answered before the body is read, whatever its size.
    let roomy = Proxy::start(&up, "[limits]\nmax_body_bytes = 67108864\n");
    let limited = roomy.cli_json(
        &[
            "keys",
            "create",
            "--org",
            &roomy.org_id,
            "--name",
            "one-rpm",
            "--rpm",
            "1",
        ],
        b"",
    );
    let limited = limited["key"].as_str().unwrap().to_string();
    // The running sluice picks the new key up within a second; the first accepted request
    // uses the key's one request per minute.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = raw(
            roomy.port,
            format!(
                "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {limited}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 401, "{}", r.body_text());
        assert!(
            std::time::Instant::now() < deadline,
            "the new key was never accepted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for (authz, status) in [
        ("Bearer sk-sluice-wrong".to_string(), 401),
        (format!("Bearer {limited}"), 429),
    ] {
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {big}\r\nAuthorization: {authz}\r\n\r\n"
        );
        let (r, uploaded) = upload_against_refusal(roomy.port, head.as_bytes(), big);
        assert_eq!(r.expect("the refusal is readable").status, status);
        assert!(
            uploaded,
            "{status}: the upload was reset instead of drained"
        );
    }
    assert_eq!(up.requests().len(), 1, "only the one allowed request");
}

#[test]
fn lingering_is_bounded_by_bytes() {
    let up = Upstream::start();
    let p = Proxy::start(
        &up,
        "[limits]\nmax_body_bytes = 1024\nlinger_max_bytes = 65536\nlinger_secs = 30\n",
    );
    let big = 64 * 1024 * 1024;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {big}\r\n{}\r\n",
        p.auth()
    );
    let t = std::time::Instant::now();
    let (_, uploaded) = upload_against_refusal(p.port, head.as_bytes(), big);
    assert!(
        !uploaded,
        "64 MiB were discarded although the cap is 64 KiB"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
}

/// Start sluice in front of an upstream that answers `response`, send one authenticated chat
/// request, and return what the client got (or why it got nothing).
fn against_upstream(response: &str) -> (std::io::Result<RawResponse>, RawUpstream, Proxy) {
    let raw_up = RawUpstream::start(response.as_bytes().to_vec());
    let ups = format!(
        "[[upstreams]]\nname = \"hostile\"\nregion = \"us\"\nbase_url = \"{}\"\n",
        raw_up.base_url()
    );
    let p = Proxy::start_with(&ups, "[limits]\ntimeout_secs = 2\n");
    let mut s = connect(p.port).unwrap();
    s.write_all(&p.post(
        "/v1/chat/completions",
        br#"{"model":"gpt-4o-mini","messages":[]}"#,
        "",
    ))
    .unwrap();
    let r = read_response(&mut s);
    (r, raw_up, p)
}

#[test]
fn hostile_upstream_answers_never_reach_the_client_as_they_are() {
    // Not HTTP at all: 502 in sluice's JSON.
    let (r, up, _p) = against_upstream("SSH-2.0-OpenSSH_9.6\r\n\r\n");
    let r = r.unwrap();
    assert_eq!((r.status, r.code().as_str()), (502, "upstream_error"));
    assert_security_headers(&r);
    assert_eq!(up.requests(), 1, "a bad answer is not retried");

    // Response smuggling: Content-Length and Transfer-Encoding together. The client never
    // gets both (two parsers could split the stream differently): Transfer-Encoding wins and
    // Content-Length is dropped (RFC 9112 6.3), and the bytes after the chunked body are not
    // read as a second response.
    let (r, _up, _p) = against_upstream(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    let r = r.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), None, "{:?}", r.headers);
    assert_eq!(r.body, b"{}");

    // Headers sluice alone decides: its own X-Sluice-*, CORS, hop-by-hop; the provider's
    // request id is kept under another name.
    let (r, _up, _p) = against_upstream(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nX-Sluice-Region: eu\r\nX-Sluice-Redactions: email=0\r\nAccess-Control-Allow-Origin: *\r\nAccess-Control-Allow-Credentials: true\r\nKeep-Alive: timeout=1\r\nUpgrade: h2c\r\nX-Request-Id: evil\r\n\r\n{}",
    );
    let r = r.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-sluice-region"), Some("us"));
    assert_eq!(r.header("x-sluice-redactions"), None);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("upgrade"), None);
    assert_eq!(r.header("x-upstream-request-id"), Some("evil"));
    assert_ne!(r.header("x-request-id"), Some("evil"));

    // A switch of protocols nobody asked for does not turn the connection into a tunnel.
    let (r, _up, _p) = against_upstream(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw tunnel bytes",
    );
    let r = r.unwrap();
    assert_eq!((r.status, r.code().as_str()), (502, "upstream_error"));

    // A body cut short (Content-Length larger than what came): the client sees a truncated
    // body and a closed connection, never a reused connection with bytes in doubt.
    let (r, _up, p) = against_upstream(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"partial\":",
    );
    assert!(
        r.is_err(),
        "a truncated body must not read as complete: {r:?}"
    );
    p.metrics_with(&["sluice_stream_interruptions_total"]);
}
#[test]
fn a_body_with_connection_close_is_answered_then_the_connection_closed() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let b = br#"{"model":"m","input":"mail bob@example.com"}"#;
    for first in [
        p.post("/v1/embeddings", b, "Connection: close\r\n"),
        chunked(
            "/v1/embeddings",
            b,
            &format!("{}Connection: close\r\n", p.auth()),
        ),
    ] {
        let mut s = connect(p.port).unwrap();
        s.write_all(&first).unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!(r.status, 200, "{}", r.body_text());
        assert_eq!(r.header("connection"), Some("close"));
        assert!(is_closed(&mut s));
    }
    assert_eq!(up.requests().len(), 2);
    assert!(up
        .requests()
        .iter()
        .all(|r| !String::from_utf8_lossy(&r.body).contains("bob@")));
}

/// A JSON body that names a member twice (or writes the second with escapes) is refused with
/// `ambiguous_json`, whether redaction runs on it or not: parsers upstream keep the first or
/// the last, and sluice decides (model, limits, redaction) on one reading only.
#[test]
fn json_bodies_with_a_member_named_twice_are_refused_never_forwarded() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let k = s.cli_json(&["keys", "create", "--org", &s.org_id], b"");
    let id = k["id"].as_str().unwrap();
    s.cli_json(
        &["keys", "update", id, "--pii", "off", "--secrets", "off"],
        b"",
    );
    let off = k["key"].as_str().unwrap().to_string();
    let p = s.spawn();
    let bodies = [
        r#"{"model":"gpt-4o-mini","model":"o1","messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi","content":"jane@example.com"}]}"#,
        r#"{"model":"gpt-4o-mini","messages":[],"\u006dessages":[{"role":"user","content":"x"}]}"#,
    ];
    for body in bodies {
        for auth in [p.auth(), format!("Authorization: Bearer {off}\r\n")] {
            let req = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let r = raw(p.port, req.as_bytes()).unwrap();
            assert_eq!(
                (r.status, r.code().as_str()),
                (400, "ambiguous_json"),
                "{body}"
            );
            assert!(r.header("x-request-id").is_some());
        }
    }
    assert!(
        up.requests().is_empty(),
        "an ambiguous body reached the upstream"
    );
    // JSON that cannot be read one way (a number out of range hides a second `model`).
    let body = r#"{"model":"gpt-4o-mini","x":1e400,"model":"o1","messages":[]}"#;
    for auth in [p.auth(), format!("Authorization: Bearer {off}\r\n")] {
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let r = raw(p.port, req.as_bytes()).unwrap();
        assert_eq!((r.status, r.code().as_str()), (400, "unscannable_body"));
    }
    assert!(
        up.requests().is_empty(),
        "an unreadable body reached the upstream"
    );
    // With redaction on or off, a body behind a byte order mark or a Content-Encoding is read
    // as the upstream reads it (decoded), never passed unchecked.
    let gzip = |b: &[u8]| {
        use std::io::Write;
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b).unwrap();
        z.finish().unwrap()
    };
    let dup = bodies[0].as_bytes();
    let bom = [b"\xEF\xBB\xBF".as_slice(), dup].concat();
    for (body, encoding, code) in [
        (bom, "", "unscannable_body"),
        (gzip(dup), "Content-Encoding: gzip\r\n", "ambiguous_json"),
    ] {
        for auth in [p.auth(), format!("Authorization: Bearer {off}\r\n")] {
            let mut req = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}{encoding}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            req.extend_from_slice(&body);
            let r = raw(p.port, &req).unwrap();
            assert_eq!(
                (r.status, r.code().as_str()),
                (400, code),
                "{encoding}{auth}"
            );
        }
    }
    assert!(
        up.requests().is_empty(),
        "an unchecked body reached the upstream"
    );
    // A compressed body of a key with redaction off goes decoded, as with redaction on.
    let body = gzip(br#"{"model":"gpt-4o-mini","messages":[]}"#);
    let mut req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {off}\r\nContent-Encoding: gzip\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let r = raw(p.port, &req).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    let sent = up.requests().pop().unwrap();
    assert_eq!(sent.body, br#"{"model":"gpt-4o-mini","messages":[]}"#);
    assert_eq!(sent.header("content-encoding"), None);
    let before = up.requests().len();
    // Names that redaction makes equal are not ambiguous: the body goes, masked.
    let r = raw(
        p.port,
        &p.post(
            "/v1/chat/completions",
            br#"{"model":"gpt-4o-mini","messages":[],"metadata":{"a@example.com":"1","b@example.org":"2"}}"#,
            "",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    let sent = String::from_utf8_lossy(&up.requests()[before].body).to_string();
    assert!(!sent.contains("@example"), "{sent}");
    // The same members once each pass.
    let r = raw(
        p.port,
        &p.post(
            "/v1/chat/completions",
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
            "",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200);
}

/// An upstream whose response head cannot be parsed makes pingora build an error that quotes
/// the whole head: its cookie and the PII after it reach no log line at any level sluice
/// prints, and the app gets 502.
#[test]
fn a_malformed_upstream_answer_is_never_quoted_in_the_log() {
    let bad = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: session=canary-cookie-7f3a\r\nX-Email: jane.canary@example.com\r\nthis is not a header\r\n\r\n{\"email\":\"jane.canary@example.com\"}".to_vec(),
    );
    for level in ["warn", "debug"] {
        let up = format!(
            "[[upstreams]]\nname = \"bad\"\nregion = \"us\"\nbase_url = \"{}\"\n",
            bad.base_url()
        );
        let p = Setup::new(&up, &format!("[log]\nlevel = \"{level}\"\n")).spawn();
        let r = raw(
            p.port,
            &p.post(
                "/v1/chat/completions",
                br#"{"model":"gpt-4o-mini","messages":[]}"#,
                "",
            ),
        )
        .unwrap();
        assert_eq!(r.status, 502, "{}", r.body_text());
        if level == "debug" {
            // The request's line is written after the answer went out: wait for it.
            eventually(
                "the failure logged",
                std::time::Duration::from_secs(5),
                || {
                    let log = p.log();
                    log.contains("upstream_error") || log.contains("InvalidHTTPHeader")
                },
            );
        }
        let log = p.log();
        for canary in ["canary-cookie", "jane.canary", "not a header"] {
            assert!(!log.contains(canary), "{level}: {canary} in the log: {log}");
        }
    }
}
