//! The official OpenAI Python SDK (PyPI `openai`, pinned in `tests/requirements.txt`) against
//! the real sluice: answers, streams, and refusals it must read as status errors (never as
//! connection errors, which it would retry, uploading the body again).

use std::process::Command;

use crate::support::*;

/// Sum of `sluice_requests_total` samples with `status="CODE"`, other than the test's own
/// `/v1/models` probes.
fn requests_with_status(metrics: &str, code: u16) -> u64 {
    let needle = format!("status=\"{code}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("sluice_requests_total{") && l.contains(&needle))
        .filter(|l| !l.contains("route=\"models\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Start sluice, make a key limited to one request per minute and use that request up, then
/// run `program args... BASE_URL KEY LIMITED_KEY` and check what the SDK saw.
fn check_sdk(program: &str, args: &[&str], install_hint: &str) {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let limited = p.cli_json(
        &[
            "keys", "create", "--org", &p.org_id, "--name", "one-rpm", "--rpm", "1",
        ],
        b"",
    );
    let limited = limited["key"].as_str().unwrap().to_string();
    // Use up the limited key's one request per minute (once the running sluice has it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while raw(
        p.port,
        format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {limited}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap()
    .status
        != 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the new key was never accepted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = Command::new(program)
        .args(args)
        .arg(format!("http://127.0.0.1:{}/v1", p.port))
        .arg(&p.key)
        .arg(&limited)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} ({install_hint})"));
    assert!(
        out.status.success(),
        "the SDK script failed ({install_hint}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(v["chat"]["ok"], "hello from mock", "{v}");
    assert_eq!(v["stream"]["ok"], "tok0 tok1 tok2 ", "{v}");
    for (case, status, code) in [
        ("too_large", 413, "request_too_large"),
        ("bad_key", 401, "invalid_api_key"),
        ("rate_limited", 429, "rate_limited"),
    ] {
        assert_eq!(v[case]["status"], status, "{case}: {v}");
        assert_eq!(v[case]["code"], code, "{case}: {v}");
    }
    // Each refusal reached sluice once: the SDK did not retry it as a connection error.
    let m = p.metrics_with(&["status=\"413\"", "status=\"401\"", "status=\"429\""]);
    assert_eq!(requests_with_status(&m, 413), 1, "{m}");
    assert_eq!(requests_with_status(&m, 401), 1, "{m}");
    assert_eq!(requests_with_status(&m, 429), 1, "{m}");
    // Nothing refused reached the upstream: the models call, the chat and the stream only.
    assert_eq!(up.requests().len(), 3);
}

const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk");

#[test]
fn the_python_sdk_reads_answers_streams_and_early_refusals() {
    check_sdk(
        "python3",
        &[&format!("{SDK_DIR}/openai_client.py")],
        "install its packages with `pip install -r tests/requirements.txt`, as ./dev.sh test does",
    );
}

#[test]
fn the_node_sdk_reads_answers_streams_and_early_refusals() {
    check_sdk(
        "node",
        &[&format!("{SDK_DIR}/openai_client.mjs")],
        "install its packages with `npm ci --prefix tests/sdk`, as ./dev.sh test does",
    );
}
