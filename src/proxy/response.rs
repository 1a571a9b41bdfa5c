//! The response phase: headers on every reply (request id, security headers, CORS only when
//! configured), sluice's own JSON error replies, the mapping of pingora's failures to them,
//! and the per-request metrics and log line. Bodies and Authorization values are never logged.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::{FailToProxy, Session};

use super::error::{body_for, reply_for, Rejection, UNSCANNABLE, UPSTREAM_AUTH};
use super::guard::Guarded;
use super::{Ctx, State};
use crate::redact::{sse, Counts, ResponseKind, Scan};

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

/// Correct the token limits taken before the request (input estimate plus output
/// reservation): to the usage the answer reported; for a successful answer whose usage never
/// came (the client reset the stream, or left before the first byte; the answer was too large
/// or unscannable), to the input estimate plus a quarter of the answer's bytes delivered (its
/// JSON framing included: it errs high); for a request that reached the provider without a
/// successful answer, to the input estimate (the provider may have processed it); and give
/// everything back only when the request never reached the provider (refused, no connection).
fn settle_tokens(state: &State, ctx: &Ctx) {
    if ctx.tokens_taken.is_empty() {
        return;
    }
    let usage = ctx.usage.as_ref();
    let used = match usage.and_then(|u| u.found) {
        Some(u) => Some(u.total()),
        // A successful answer's head came: the provider did the work, whatever happened next.
        None if usage.is_some() => Some(ctx.input_tokens.saturating_add(ctx.bytes_out / 4)),
        None if ctx.upstream_sent.is_some() => Some(ctx.input_tokens),
        None => None,
    };
    state.limiter.settle(&ctx.tokens_taken, used);
}

/// Whether an answer is a server-sent event stream.
fn is_event_stream(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|c| {
            c.as_bytes()
                .to_ascii_lowercase()
                .starts_with(b"text/event-stream")
        })
}

/// Start reading the usage of a successful LLM answer. A stream whose usage sluice asked
/// for loses its usage chunk on the way, so its length changes: it goes out chunked.
fn track_usage(resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
    if ctx.mcp.is_some() || operation(ctx.route).is_none() || !resp.status.is_success() {
        return Ok(());
    }
    let sse = is_event_stream(resp);
    let strip = (ctx.asked_usage && sse).then(crate::usage::Stripper::default);
    if strip.is_some() && ctx.rewrite.is_none() {
        resp.remove_header(&http::header::CONTENT_LENGTH);
        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    ctx.usage = Some(Box::new(UsageCtx {
        tail: Default::default(),
        strip,
        sse,
        first_byte: None,
        found: None,
    }));
    Ok(())
}

/// Follow the usage of the answer through one chunk on its way out (after any redaction):
/// the tail keeps the end of what the provider sent, the stripper takes out the usage chunk.
fn follow_usage(body: &mut Option<Bytes>, end: bool, ctx: &mut Ctx) {
    let Some(u) = ctx.usage.as_mut() else {
        return;
    };
    if let Some(b) = body.as_ref().filter(|b| !b.is_empty()) {
        u.first_byte.get_or_insert_with(std::time::Instant::now);
        u.tail.push(b);
    }
    if let Some(s) = u.strip.as_mut() {
        let mut out = body.take().map(|b| s.push(&b)).unwrap_or_default();
        if end {
            out.extend(s.finish());
        }
        *body = (!out.is_empty()).then(|| Bytes::from(out));
    }
    if end {
        u.found = u.tail.usage();
    }
}

/// What the key's policies look for in its responses, if response redaction is on.
fn response_scan(ctx: &Ctx) -> Option<Scan> {
    let k = ctx.key.as_ref().filter(|k| k.redact_responses)?;
    let scan = Scan {
        pii: k.redact_pii,
        secrets: k.redact_secrets,
    };
    scan.any().then_some(scan)
}

fn unscannable() -> Box<Error> {
    Error::new_up(ErrorType::Custom(UNSCANNABLE))
}

/// Decide how the body will be rewritten, from the response head, and fix its framing: the
/// rewritten body's length is not known yet, so it goes out chunked (pingora writes the head
/// before any body filter runs). A response that cannot be scanned is refused here (502),
/// before anything was sent.
fn plan(state: &State, session: &Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
    if ctx.mcp.is_some() {
        return plan_mcp(state, session, resp, ctx);
    }
    let Some(scan) = response_scan(ctx) else {
        return Ok(());
    };
    let status = resp.status.as_u16();
    let has_body = session.req_header().method != http::Method::HEAD
        && !(100..200).contains(&status)
        && status != 204
        && status != 304;
    // Embeddings answer with vectors: nothing of the input is echoed.
    let kind = if ctx.route == crate::inbound::Route::Embeddings {
        ResponseKind::Pass
    } else {
        crate::redact::response_kind(
            has_body,
            resp.headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            resp.headers
                .get(http::header::CONTENT_ENCODING)
                .map(|v| v.as_bytes()),
        )
    };
    let r = &ctx.live.cfg.redaction;
    ctx.rewrite = match kind {
        ResponseKind::Pass => return Ok(()),
        ResponseKind::Unscannable => {
            ctx.reason = Some("response_scan");
            return Err(unscannable());
        }
        ResponseKind::Sse => Some(Rewrite::Sse(Box::new(sse::Redactor::new(
            &state.redactor,
            scan,
            r.stream_holdback_bytes,
            r.max_event_bytes,
        )))),
        ResponseKind::Json { ref encoding } | ResponseKind::Text { ref encoding } => {
            if encoding.is_some() {
                // Decoded before redaction, sent decoded.
                resp.remove_header(&http::header::CONTENT_ENCODING);
            }
            Some(Rewrite::Buffer {
                kind,
                buf: Vec::new(),
            })
        }
    };
    resp.remove_header(&http::header::CONTENT_LENGTH);
    resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    Ok(())
}

/// Every answer of an MCP server is validated and rewritten, whatever the key's response
/// redaction (its PII and secrets policies decide what is redacted).
fn plan_mcp(
    state: &State,
    session: &Session,
    resp: &mut ResponseHeader,
    ctx: &mut Ctx,
) -> Result<()> {
    let (Some(m), Some(key)) = (ctx.mcp.as_ref(), ctx.key.as_ref()) else {
        return Ok(());
    };
    super::mcp::bind_session(state, resp, ctx);
    let status = resp.status.as_u16();
    if session.req_header().method == http::Method::HEAD
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        return Ok(());
    }
    if status == 202 {
        // The specification gives 202 Accepted no body: whatever the server put there is
        // dropped, never passed on unscanned.
        ctx.rewrite = Some(Rewrite::Drop);
        resp.remove_header(&http::header::TRANSFER_ENCODING);
        resp.remove_header(&http::header::CONTENT_TYPE);
        resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
        return Ok(());
    }
    let encoded = resp
        .headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        ctx.reason = Some("response_scan");
        return Err(unscannable());
    }
    let sse = is_event_stream(resp);
    let server = ctx
        .live
        .cfg
        .mcp_servers
        .get(m.server)
        .map_or("", |s| s.name.as_str());
    let scan = Scan {
        pii: key.redact_pii,
        secrets: key.redact_secrets,
    };
    let mut r = crate::mcp::Responses::new(
        server,
        key.mcp.clone(),
        &m.calls,
        state.redactor.clone(),
        scan,
        ctx.live.cfg.mcp.max_message_bytes,
    );
    r.resume(super::mcp::awaiting(state, ctx));
    ctx.rewrite = Some(Rewrite::Mcp {
        sse,
        buf: Vec::new(),
        oversized: false,
        r: Box::new(r),
    });
    if !sse {
        // Whatever came (an HTML error page, say), a JSON-RPC message goes out.
        resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    }
    resp.remove_header(&http::header::CONTENT_LENGTH);
    resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    Ok(())
}

/// Run `f` (the redaction of a whole buffered answer) so that a large one does not stall the
/// worker: `response_body_filter` is synchronous, so on pingora's multi-thread runtime (work
/// stealing, the default) the worker hands its other connections on while this blocks
/// (`block_in_place`), as the request side moves large bodies to the blocking pool. Small
/// answers, and any other runtime, run inline.
fn offloaded<T>(len: usize, f: impl FnOnce() -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if len > super::request::OFFLOAD_BYTES && multi {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// A chunk of the response body on its way to the client: rewritten when response redaction
/// is on. An error cuts the response (its head is already out): the client gets an
/// incomplete body, never unscanned bytes.
pub fn body(state: &State, body: &mut Option<Bytes>, end: bool, ctx: &mut Ctx) -> Result<()> {
    let scan = response_scan(ctx);
    match (ctx.rewrite.as_mut(), scan) {
        (Some(Rewrite::Drop), _) => *body = None,
        (Some(Rewrite::Sse(r)), _) => {
            let mut out = body.take().map(|b| r.push(&b)).unwrap_or_default();
            if end {
                out.extend(r.finish());
            }
            if r.failed() {
                ctx.reason = Some("response_scan");
            }
            *body = (!out.is_empty()).then(|| Bytes::from(out));
        }
        (
            Some(Rewrite::Mcp {
                sse,
                buf,
                oversized,
                r,
            }),
            _,
        ) => {
            if *sse {
                let mut out = body.take().map(|b| r.push_sse(&b)).unwrap_or_default();
                if end {
                    out.extend(r.finish_sse());
                }
                *body = (!out.is_empty()).then(|| Bytes::from(out));
            } else {
                if let Some(b) = body.take() {
                    // Past the bound the rest is dropped; the answer becomes an error.
                    if !*oversized && buf.len() + b.len() > ctx.live.cfg.mcp.max_message_bytes {
                        *oversized = true;
                        buf.clear();
                    }
                    if !*oversized {
                        buf.extend_from_slice(&b);
                    }
                }
                if end {
                    let out = if *oversized {
                        r.message(&vec![b' '; ctx.live.cfg.mcp.max_message_bytes + 1])
                    } else if buf.is_empty() {
                        Vec::new()
                    } else {
                        let len = buf.len();
                        offloaded(len, || r.message(buf))
                    };
                    *body = (!out.is_empty()).then(|| Bytes::from(out));
                }
            }
        }
        (Some(Rewrite::Buffer { kind, buf }), Some(scan)) => {
            let limit = ctx.live.cfg.redaction.max_response_bytes;
            if let Some(b) = body.take() {
                if buf.len() + b.len() > limit {
                    ctx.reason = Some("response_too_large");
                    return Err(unscannable());
                }
                buf.extend_from_slice(&b);
            }
            if end {
                let mut counts = Counts::default();
                let len = buf.len();
                let redacted = offloaded(len, || {
                    state
                        .redactor
                        .redact_response(buf, kind, limit, scan, &mut counts)
                });
                match redacted {
                    Ok(Some(new)) => *body = Some(Bytes::from(new)),
                    Ok(None) => *body = Some(Bytes::from(std::mem::take(buf))),
                    Err(_) => {
                        ctx.reason = Some("response_scan");
                        return Err(unscannable());
                    }
                }
                ctx.response_redactions.merge(&counts);
            }
        }
        _ => {}
    }
    if end {
        if let Some(Rewrite::Mcp { r, .. }) = &ctx.rewrite {
            super::mcp::answered(state, ctx, r);
        }
    }
    follow_usage(body, end, ctx);
    if let Some(b) = body {
        ctx.bytes_out += b.len() as u64;
        // The answer's own end went out: a stream's `[DONE]` or Responses API completion.
        // A client that closes after it (the SDKs stop reading there) got everything.
        if !ctx.answer_complete
            && (memchr::memmem::find(b, b"data: [DONE]").is_some()
                || memchr::memmem::find(b, b"\"response.completed\"").is_some())
        {
            ctx.answer_complete = true;
        }
    }
    if end {
        ctx.answer_complete = true;
    }
    Ok(())
}

/// Everything replaced in the response so far.
fn response_counts(ctx: &Ctx) -> Counts {
    let mut c = ctx.response_redactions;
    match &ctx.rewrite {
        Some(Rewrite::Sse(r)) => c.merge(&r.counts()),
        Some(Rewrite::Mcp { r, .. }) => c.merge(&r.counts()),
        _ => {}
    }
    c
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
    plan(state, session, resp, ctx)?;
    track_usage(resp, ctx)?;
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
    if let Some(up) = ctx.upstream.and_then(|i| ctx.live.cfg.upstreams.get(i)) {
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

/// Answer with sluice's JSON error for `r`.
pub async fn send_error(
    state: &State,
    session: &mut Session,
    ctx: &mut Ctx,
    r: &Rejection,
) -> Result<()> {
    let reply = reply_for(r);
    ctx.code = Some(reply.code);
    let body = body_for(r, &ctx.request_id);
    let mut resp = ResponseHeader::build(reply.status, Some(12))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len())?;
    resp.insert_header("cache-control", "no-store")?;
    match r {
        Rejection::Unauthenticated(_) => {
            resp.insert_header("www-authenticate", "Bearer realm=\"sluice\"")?;
        }
        Rejection::RateLimited { retry_after } | Rejection::BudgetExceeded { retry_after } => {
            resp.insert_header("retry-after", retry_after.to_string())?;
        }
        Rejection::LimitsUnavailable => {
            resp.insert_header("retry-after", "1")?;
        }
        _ => {}
    }
    common(state, &mut resp, ctx)?;
    if reply.close {
        session.set_keepalive(None);
        resp.insert_header("connection", "close")?;
    }
    ctx.responded = true;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(())
}

/// Answer a CORS preflight from an allowed origin.
pub async fn send_preflight(state: &State, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
    let mut resp = ResponseHeader::build(204, Some(12))?;
    resp.insert_header("access-control-allow-methods", "GET, POST, DELETE")?;
    resp.insert_header(
        "access-control-allow-headers",
        "authorization, content-type, x-request-id, x-sluice-region, openai-organization, openai-project, openai-beta, x-stainless-arch, x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, x-stainless-timeout",
    )?;
    resp.insert_header("access-control-max-age", "600")?;
    resp.insert_header("content-length", "0")?;
    common(state, &mut resp, ctx)?;
    ctx.responded = true;
    session.write_response_header(Box::new(resp), true).await?;
    Ok(())
}

/// Map a pingora failure to a reply. Once response headers went downstream nothing can be
/// sent any more: the stream is cut (the client sees a truncated body) and counted.
pub async fn fail(state: &State, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
    let rejection = classify(session, e);
    if ctx.responded {
        let reason = match (ctx.reason, rejection) {
            (Some(r @ ("response_scan" | "response_too_large")), _) => r,
            (_, Some(Rejection::UpstreamTimeout)) => "upstream_timeout",
            (_, Some(_)) => "upstream_error",
            // The client left after the answer's end went out: a normal end, not counted.
            (_, None) if ctx.answer_complete => "",
            (_, None) => "client_gone",
        };
        if !reason.is_empty() {
            state
                .metrics
                .stream_interruptions
                .with_label_values(&[reason])
                .inc();
        }
        return FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
    }
    let Some(r) = rejection else {
        // The client went away; there is nobody to answer.
        return FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
    };
    if let Rejection::Internal = r {
        // The type only: pingora's messages can quote raw request bytes (headers included).
        tracing::warn!(request_id = %ctx.request_id, error = super::error::log_kind(e), source = e.esource().as_str(), "internal error while proxying");
    }
    if let Rejection::UpstreamTls = r {
        let reason = *ctx.reason.get_or_insert(super::upstream::TLS_HANDSHAKE);
        let (kind, name) = match &ctx.mcp {
            Some(m) => (
                "mcp_server",
                ctx.live
                    .cfg
                    .mcp_servers
                    .get(m.server)
                    .map(|s| s.name.as_str()),
            ),
            None => (
                "upstream",
                ctx.upstream
                    .and_then(|i| ctx.live.cfg.upstreams.get(i))
                    .map(|u| u.name.as_str()),
            ),
        };
        let name = name.unwrap_or("-");
        state
            .metrics
            .upstream_tls_failures
            .with_label_values(&[name, reason])
            .inc();
        tracing::warn!(request_id = %ctx.request_id, kind, name, reason, error = super::error::log_kind(e),
            "TLS connection refused: it does not meet the policy (certificate, [tls] min_version, pins); nothing was sent on it");
    }
    let status = reply_for(&r).status;
    // An MCP request the server could not be used for at all gets its JSON-RPC error (the
    // client's SDK reads it as the call's failure); the reason is the stable code.
    if let (Rejection::UpstreamTls, Some(m)) = (&r, &ctx.mcp) {
        let server = (ctx.live.cfg.mcp_servers.get(m.server)).map_or("-", |s| s.name.as_str());
        if let Some(body) = crate::mcp::unreachable_answer(&m.calls, server, reply_for(&r).code) {
            ctx.code = Some(reply_for(&r).code);
            let sent = super::mcp::answer(state, session, ctx, 200, body).await;
            return FailToProxy {
                error_code: if sent.is_ok() { 200 } else { 0 },
                can_reuse_downstream: false,
            };
        }
    }
    if send_error(state, session, ctx, &r).await.is_err() {
        return FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
    }
    FailToProxy {
        error_code: status,
        can_reuse_downstream: false,
    }
}

fn classify(session: &Session, e: &Error) -> Option<Rejection> {
    use ErrorType::*;
    match e.esource() {
        ErrorSource::Downstream => {
            let expired =
                Guarded::of_session(&session.downstream_session).is_some_and(Guarded::is_expired);
            expired.then_some(Rejection::ClientTimeout)
        }
        ErrorSource::Upstream if *e.etype() == Custom(UNSCANNABLE) => {
            Some(Rejection::UnscannableResponse)
        }
        ErrorSource::Upstream if *e.etype() == Custom(UPSTREAM_AUTH) => {
            Some(Rejection::UpstreamAuthFailed)
        }
        _ if *e.etype() == Custom(super::upstream::UPSTREAM_TLS) => Some(Rejection::UpstreamTls),
        ErrorSource::Upstream => Some(match e.etype() {
            t if super::upstream::is_tls_refusal(t) => Rejection::UpstreamTls,
            ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | BindError
            | ConnectProxyFailure | TLSHandshakeTimedout | SocketError => {
                Rejection::UpstreamUnreachable
            }
            ReadTimedout | WriteTimedout => Rejection::UpstreamTimeout,
            _ => Rejection::UpstreamFailed,
        }),
        ErrorSource::Internal | ErrorSource::Unset => Some(match e.etype() {
            // Connection setup errors can surface without a source.
            ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError => {
                Rejection::UpstreamUnreachable
            }
            _ => Rejection::Internal,
        }),
    }
}

/// Metrics and one structured log line for the request.
pub fn log(state: &Arc<State>, session: &Session, e: Option<&Error>, ctx: &Ctx) {
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let up = ctx.upstream.and_then(|i| ctx.live.cfg.upstreams.get(i));
    let region = up
        .map(|u| u.region)
        .or(ctx.region)
        .map_or("none", |r| r.as_str());
    let m = &state.metrics;
    m.requests
        .with_label_values(&[ctx.route.as_str(), status.to_string().as_str(), region])
        .inc();
    let elapsed = ctx.started.elapsed();
    m.request_duration
        .with_label_values(&[ctx.route.as_str()])
        .observe(elapsed.as_secs_f64());
    m.bytes_out.inc_by(ctx.bytes_out);
    let rc = response_counts(ctx);
    for e in crate::redact::Entity::ALL {
        let n = rc.get(e);
        if n > 0 {
            m.response_redactions
                .with_label_values(&[e.as_str()])
                .inc_by(n as u64);
        }
    }
    if let Some(code) = ctx.code {
        m.errors.with_label_values(&[code]).inc();
    }
    settle_tokens(state, ctx);
    if let (Some(u), Some(op)) = (&ctx.usage, operation(ctx.route)) {
        let model = m.model_label(ctx.model.as_deref());
        let (org, key) = ctx
            .key
            .as_ref()
            .map_or(("-", "-"), |k| (k.org_id.as_str(), k.id.as_str()));
        // Per-key series are opt-in ([metrics] per_key): every key ever used adds ~34.
        let key = if ctx.live.cfg.metrics.per_key {
            key
        } else {
            "-"
        };
        match u.found {
            Some(found) => {
                for (kind, n) in [("input", found.input), ("output", found.output)] {
                    if kind == "output" && op == "embeddings" {
                        continue;
                    }
                    m.token_usage
                        .with_label_values(&[op, &model, kind, org, key])
                        .observe(n as f64);
                }
            }
            // Completed but unreadable (an encoded body, a provider that reports none); a client
            // that closed after the answer's end went out got it whole too.
            None if e.is_none() || ctx.answer_complete => {
                m.usage_unknown.with_label_values(&[op]).inc()
            }
            None => {}
        }
        if let (true, Some(first)) = (u.sse, u.first_byte) {
            m.time_to_first_token
                .with_label_values(&[op, &model, org, key])
                .observe(first.duration_since(ctx.started).as_secs_f64());
        }
    }
    let req = session.req_header();
    tracing::info!(
        request_id = %ctx.request_id,
        method = %req.method,
        route = ctx.route.as_str(),
        path = crate::audit::cap(req.uri.path(), 256),
        status,
        upstream = up.map_or("-", |u| u.name.as_str()),
        region,
        // Microsecond precision, not float noise (0.30000000000000004).
        latency_ms = (elapsed.as_micros() as f64 / 1000.0),
        bytes_in = ctx.bytes_in,
        bytes_out = ctx.bytes_out,
        code = ctx.code.unwrap_or("-"),
        reason = ctx.reason.unwrap_or("-"),
        redactions = %ctx.redactions.header_value(),
        response_redactions = %response_counts(ctx).header_value(),
        key_id = ctx.key.as_ref().map_or("-", |k| k.id.as_str()),
        org_id = ctx.key.as_ref().map_or("-", |k| k.org_id.as_str()),
        error = e.map(super::error::log_kind).unwrap_or("-"),
        "request"
    );
}

/// The details of a `proxy.request` record, in their stored order. Every client-controlled
/// string is cut to [`crate::audit::MAX_DETAIL_CHARS`] here (the path, the model); the rest are
/// sluice's own (ids, codes, configured names).
#[derive(serde::Serialize)]
struct RequestDetails<'a> {
    method: &'a str,
    path: &'a str,
    route: &'static str,
    key_id: Option<&'a str>,
    model: Option<&'a str>,
    region: Option<&'static str>,
    upstream: Option<&'a str>,
    status: u16,
    code: Option<&'static str>,
    latency_ms: f64,
    bytes_in: u64,
    bytes_out: u64,
    redactions: crate::redact::Counts,
    response_redactions: crate::redact::Counts,
    usage: Option<UsageDetails>,
}

#[derive(serde::Serialize)]
struct UsageDetails {
    input_tokens: u64,
    output_tokens: u64,
}

/// The audit record of a proxied (or refused) request: who, where, what happened; never a
/// body, a key or a header value. Its details are typed, serialised once per record.
fn audit_record<'a>(
    session: &'a Session,
    ctx: &'a Ctx,
) -> (crate::audit::Entry<()>, RequestDetails<'a>) {
    use crate::audit::{cap, MAX_DETAIL_CHARS, MAX_FIELD_CHARS};
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let up = ctx.upstream.and_then(|i| ctx.live.cfg.upstreams.get(i));
    let req = session.req_header();
    let ua = req
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| cap(s, MAX_FIELD_CHARS).to_string());
    let head = crate::audit::Entry {
        kind: "request",
        action: "proxy.request".into(),
        actor: ctx.key.as_ref().map_or_else(
            || "unauthenticated".to_string(),
            |k| format!("key:{}", k.id),
        ),
        org_id: ctx.key.as_ref().map(|k| k.org_id.clone()),
        target_id: up.map(|u| u.name.clone()),
        source_ip: session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string()),
        user_agent: ua,
        request_id: Some(ctx.request_id.clone()),
        outcome: if (200..400).contains(&status) {
            "success"
        } else {
            "failure"
        },
        details: (),
    };
    let details = RequestDetails {
        method: req.method.as_str(),
        path: cap(req.uri.path(), MAX_DETAIL_CHARS),
        route: ctx.route.as_str(),
        key_id: ctx.key.as_ref().map(|k| k.id.as_str()),
        model: ctx.model.as_deref().map(|m| cap(m, MAX_DETAIL_CHARS)),
        region: up.map(|u| u.region).or(ctx.region).map(|r| r.as_str()),
        upstream: up.map(|u| u.name.as_str()),
        status,
        code: ctx.code,
        latency_ms: (ctx.started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        bytes_in: ctx.bytes_in,
        bytes_out: ctx.bytes_out,
        redactions: ctx.redactions,
        response_redactions: response_counts(ctx),
        usage: ctx
            .usage
            .as_ref()
            .and_then(|u| u.found)
            .map(|u| UsageDetails {
                input_tokens: u.input,
                output_tokens: u.output,
            }),
    };
    (head, details)
}

/// The audit records of a request: one `proxy.request`, or for the MCP gateway one `mcp.call`
/// per JSON-RPC call (and one `mcp.request` for a GET or DELETE), each with the server, method,
/// tool (or resource, prompt), outcome, latency and redaction counts, never arguments or
/// results. MCP calls are counted in `sluice_mcp_requests_total` here too.
pub fn audit_records(state: &State, session: &Session, ctx: &Ctx) -> Vec<crate::audit::Bounded> {
    let (head, details) = audit_record(session, ctx);
    let Some(m) = &ctx.mcp else {
        return vec![crate::audit::Bounded::typed(head, &details)];
    };
    let base = head.with_details(serde_json::to_value(&details).unwrap_or_default());
    let server = ctx
        .live
        .cfg
        .mcp_servers
        .get(m.server)
        .map_or("?", |s| s.name.as_str());
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let answers = match &ctx.rewrite {
        Some(Rewrite::Mcp { r, .. }) => Some(r.as_ref()),
        _ => None,
    };
    // What the server sent that was not passed on: counted, and in every record of the request.
    let (replaced, dropped) = answers.map_or((0, 0), |a| (a.replaced(), a.dropped()));
    for (action, n) in [("replaced", replaced), ("dropped", dropped)] {
        if n > 0 {
            (state.metrics.mcp_rejected)
                .with_label_values(&[server, action])
                .inc_by(u64::from(n));
        }
    }
    let outcome_of = |c: &crate::mcp::Call| -> &'static str {
        if m.refused {
            return if c.refused {
                "refused"
            } else {
                "batch_refused"
            };
        }
        if !(200..300).contains(&status) {
            return "failure";
        }
        match (&c.id, answers) {
            (None, _) => "sent",
            (Some(id), Some(a)) => a.outcome(id).unwrap_or("no_response"),
            (Some(_), None) => "no_response",
        }
    };
    let mut out = Vec::new();
    let record = |action: &str, details: serde_json::Value, ok: bool| {
        let mut r = base.clone();
        r.action = action.into();
        r.target_id = Some(server.to_string());
        r.outcome = if ok { "success" } else { "failure" };
        if let (Some(d), Some(extra)) = (r.details.as_object_mut(), details.as_object()) {
            d.remove("upstream");
            d.remove("model");
            for (k, v) in extra {
                d.insert(k.clone(), v.clone());
            }
            if replaced > 0 {
                d.insert("upstream_messages_replaced".into(), replaced.into());
            }
            if dropped > 0 {
                d.insert("upstream_messages_dropped".into(), dropped.into());
            }
        }
        r.bounded()
    };
    if m.calls.is_empty() {
        let method = session.req_header().method.as_str().to_string();
        let ok = (200..400).contains(&status);
        state
            .metrics
            .mcp_requests
            .with_label_values(&[server, "stream", if ok { "success" } else { "failure" }])
            .inc();
        out.push(record(
            "mcp.request",
            serde_json::json!({"server": server, "http_method": method}),
            ok,
        ));
        return out;
    }
    for c in &m.calls {
        let outcome = outcome_of(c);
        state
            .metrics
            .mcp_requests
            .with_label_values(&[server, crate::mcp::method_label(&c.method), outcome])
            .inc();
        out.push(record(
            "mcp.call",
            serde_json::json!({"server": server, "method": c.method, "name": c.name,
                "outcome": outcome}),
            matches!(outcome, "success" | "sent"),
        ));
    }
    out
}
