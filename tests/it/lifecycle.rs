//! Health, readiness, metrics, and graceful shutdown with a request in flight.

use std::io::Write;
use std::time::Duration;

use crate::support::*;

#[test]
fn health_readiness_and_metrics() {
    let up = Upstream::start();
    let p = Proxy::start(&up, "");
    let r = http_get(p.admin_port, "/healthz").unwrap();
    assert_eq!(r.status, 200);
    assert_security_headers(&r);
    assert_eq!(http_get(p.admin_port, "/readyz").unwrap().status, 200);

    let r = raw(
        p.port,
        &p.post("/v1/chat/completions", br#"{"model":"gpt-4o"}"#, ""),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let _ = raw(p.port, b"GET /v1/../x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    p.metrics_with(&[
        "sluice_requests_total{region=\"us\",route=\"chat_completions\",status=\"200\"} 1",
        "sluice_errors_total{code=\"invalid_path\"} 1",
        "sluice_request_duration_seconds_bucket",
        "sluice_upstream_duration_seconds_bucket{upstream=\"mock\"",
        "sluice_request_bytes_total 18",
        "sluice_in_flight_requests 0",
        "sluice_added_latency_seconds_count 1",
        "sluice_response_bytes_total",
        // The process and the build.
        &format!(
            "sluice_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_cpu_seconds_total ",
        "process_start_time_seconds ",
    ]);
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let up = Upstream::start();
    let mut p = Proxy::start(&up, "");
    let port = p.port;
    let req = p.post("/v1/chat/completions", b"{}", "X-Mock: stall:1500\r\n");
    let inflight = std::thread::spawn(move || raw(port, &req).unwrap());
    // Wait until the upstream has the request, then ask sluice to stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while up.requests().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    p.terminate();
    eventually("draining fails readiness", Duration::from_secs(2), || {
        http_get(p.admin_port, "/readyz").is_ok_and(|r| r.status == 503)
    });
    // New connections are not served while draining.
    if let Ok(mut s) = connect(port) {
        let _ = s.write_all(&p.post("/v1/embeddings", b"{}", ""));
        assert!(
            read_response(&mut s).is_err(),
            "a new connection was served during drain"
        );
    }
    let r = inflight.join().unwrap();
    assert_eq!(r.status, 200, "in-flight request must complete");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0), "{}", p.log());
    assert_eq!(up.requests().len(), 1);
}
