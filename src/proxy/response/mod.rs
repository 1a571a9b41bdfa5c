//! The response phase: headers on every reply (request id, security headers, CORS only when
//! configured), sluice's own JSON error replies, the mapping of pingora's failures to them,
//! and the per-request metrics and log line. Bodies and Authorization values are never logged.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::{FailToProxy, Session};

use super::error::{body_for, reply_for, Code, Reason, Rejection, UNSCANNABLE, UPSTREAM_AUTH};
use super::guard::Guarded;
use super::{Ctx, State};
use crate::redact::{sse, Counts, ResponseKind, Scan};

mod fail;
mod record;
mod rewrite;
mod usage;
pub use fail::*;
pub use record::*;
pub use rewrite::*;
pub(in crate::proxy) use usage::track_usage;
use usage::*;

/// How a response body is being rewritten (response redaction on).
pub enum Rewrite {
    /// JSON or text, buffered (up to `[redaction] max_response_bytes`) and redacted whole.
    Buffer { kind: ResponseKind, buf: Vec<u8> },
    /// Server-Sent Events, redacted as they stream.
    Sse(Box<sse::Redactor>),
    /// An MCP server's answer: every JSON-RPC message validated, filtered and redacted; a JSON
    /// body is buffered (up to `[mcp] max_message_bytes`), an SSE stream taken event by event.
    Mcp {
        sse: bool,
        buf: Vec<u8>,
        oversized: bool,
        r: Box<crate::mcp::Responses>,
    },
    /// A body that must not reach the client (an MCP server's 202 Accepted has none).
    Drop,
}

/// Token usage tracking of one LLM answer.
pub struct UsageCtx {
    tail: crate::usage::Tail,
    /// Takes the usage chunk sluice asked for out of the stream.
    strip: Option<crate::usage::Stripper>,
    /// The answer is a stream (time to first token is measured).
    sse: bool,
    first_byte: Option<std::time::Instant>,
    /// What the answer reported, once it ended.
    pub found: Option<crate::usage::Usage>,
}

/// The OpenTelemetry GenAI operation of a route (`gen_ai.operation.name`).
fn operation(route: crate::inbound::Route) -> Option<&'static str> {
    use crate::inbound::Route;
    match route {
        Route::ChatCompletions | Route::Responses => Some("chat"),
        Route::Completions => Some("text_completion"),
        Route::Embeddings => Some("embeddings"),
        Route::Models | Route::Mcp | Route::Other => None,
    }
}

/// Security headers on every response, data plane and admin plane alike.
pub(super) const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("cross-origin-resource-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// Response headers never passed downstream: hop-by-hop ones (pingora sets its own framing and
/// Connection) and any CORS headers the upstream chose, since only sluice's config decides CORS.
const STRIP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
];

/// Headers on a proxied response.
pub fn headers(
    state: &State,
    session: &Session,
    resp: &mut ResponseHeader,
    ctx: &mut Ctx,
) -> Result<()> {
    super::route::handler(ctx).plan_answer(state, session, resp, ctx)?;
    // One pass over the answer's headers: what is never passed on, X-Sluice-* (only sluice
    // sets those: the upstream cannot claim a region or a redaction), and the provider's rate
    // limit figures (they describe sluice's upstream account, which every org shares: one
    // tenant would read the others' use from them; sluice sets its own).
    let dropped: Vec<http::HeaderName> = resp
        .headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            STRIP.contains(&k)
                || k.starts_with("x-sluice-")
                || k.starts_with("x-ratelimit-")
                || k.starts_with("anthropic-ratelimit-")
        })
        .cloned()
        .collect();
    for h in &dropped {
        resp.remove_header(h);
    }
    // Keep the provider's own id (needed for its support) under another name.
    if let Some(theirs) = resp.remove_header("x-request-id") {
        resp.insert_header("x-upstream-request-id", theirs)?;
    }
    if let Some(up) = ctx.upstream_config() {
        resp.insert_header("x-sluice-upstream", up.name.as_str())?;
        resp.insert_header(
            "x-sluice-region",
            http::HeaderValue::from_static(up.region.as_str()),
        )?;
    }

    if ctx.redactions.total() > 0 {
        resp.insert_header("x-sluice-redactions", ctx.redactions.header_value())?;
    }
    common(state, resp, ctx)?;
    ctx.responded = true;
    Ok(())
}

/// [`common`], for sluice's own replies written elsewhere in the proxy.
pub(super) fn common_headers(state: &State, resp: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
    common(state, resp, ctx)
}

/// Request id, security headers, CORS, and `Connection: close` while draining.
fn common(state: &State, resp: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    for (k, v) in SECURITY_HEADERS {
        // Static values: no copy, no validation per response.
        resp.insert_header(*k, http::HeaderValue::from_static(v))?;
    }
    if let Some(origin) = &ctx.cors_origin {
        resp.insert_header("access-control-allow-origin", origin.clone())?;
        resp.insert_header(
            "access-control-expose-headers",
            "x-request-id, x-sluice-region, x-sluice-upstream, x-sluice-redactions, x-upstream-request-id, \
             retry-after, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, \
             x-ratelimit-reset-requests, x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, \
             x-ratelimit-reset-tokens",
        )?;
        resp.append_header("vary", "Origin")?;
    }
    // sluice's own limits (the provider's figures were dropped from proxied answers).
    for (quota, [limit, remaining, reset]) in [
        (
            ctx.quotas.requests,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
        ),
        (
            ctx.quotas.tokens,
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        ),
    ] {
        if let Some(q) = quota {
            resp.insert_header(limit, q.limit)?;
            resp.insert_header(remaining, q.remaining)?;
            resp.insert_header(reset, crate::limits::duration_text(q.reset_ms))?;
        }
    }
    if state.draining.load(Ordering::Acquire) {
        resp.insert_header("connection", "close")?;
    }
    Ok(())
}
