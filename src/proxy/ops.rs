//! The operations listeners: `/healthz` and `/readyz` on the admin address, `/metrics` on the
//! metrics address. Small fixed responses; nothing here reaches the data plane.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use super::response::SECURITY_HEADERS;
use super::State;
use crate::inbound;

/// `/healthz` (the process is alive) and `/readyz` (config loaded, store open, not draining).
pub struct Admin(pub Arc<State>);

/// `GET /metrics` in the Prometheus text format.
pub struct MetricsEndpoint(pub Arc<State>);

fn reply(status: u16, content_type: &str, body: Vec<u8>, request_id: &str) -> Response<Vec<u8>> {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .header("x-request-id", request_id);
    for (k, v) in SECURITY_HEADERS {
        b = b.header(*k, *v);
    }
    b.body(body).unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_error(status: u16, code: &str, message: &str, request_id: &str) -> Response<Vec<u8>> {
    let body = serde_json::json!({"error": {
        "message": message, "type": "invalid_request_error", "param": null,
        "code": code, "request_id": request_id}});
    reply(
        status,
        "application/json",
        serde_json::to_vec(&body).unwrap_or_default(),
        request_id,
    )
}

fn request_id(session: &ServerSession) -> String {
    inbound::request_id(
        session
            .req_header()
            .headers
            .get("x-request-id")
            .map(|v| v.as_bytes()),
    )
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let id = request_id(session);
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return json_error(405, "method_not_allowed", "Method not allowed.", &id);
        }
        match req.uri.path() {
            "/healthz" => reply(200, "application/json", br#"{"status":"ok"}"#.to_vec(), &id),
            "/readyz" => {
                if self.0.draining.load(Ordering::Acquire) {
                    reply(
                        503,
                        "application/json",
                        br#"{"status":"draining"}"#.to_vec(),
                        &id,
                    )
                } else if !self.0.auth.is_healthy() {
                    reply(
                        503,
                        "application/json",
                        br#"{"status":"store_unavailable"}"#.to_vec(),
                        &id,
                    )
                } else {
                    reply(
                        200,
                        "application/json",
                        br#"{"status":"ready"}"#.to_vec(),
                        &id,
                    )
                }
            }
            _ => json_error(404, "not_found", "No such route.", &id),
        }
    }
}

#[async_trait]
impl ServeHttp for MetricsEndpoint {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let id = request_id(session);
        let req = session.req_header();
        if req.method != http::Method::GET {
            return json_error(405, "method_not_allowed", "Method not allowed.", &id);
        }
        if req.uri.path() != "/metrics" {
            return json_error(404, "not_found", "No such route.", &id);
        }
        reply(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            self.0.metrics.encode(),
            &id,
        )
    }
}
