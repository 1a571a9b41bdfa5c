//! After the answer: the per-request metrics, the one log line and the audit records.

use super::*;

/// Metrics and one structured log line for the request.
pub fn log(state: &Arc<State>, session: &Session, e: Option<&Error>, ctx: &Ctx) {
    if crate::proxy::skipped(crate::proxy::Stage::Log) {
        settle_tokens(state, ctx);
        return;
    }
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let up = ctx.upstream_config();
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
        m.errors.with_label_values(&[code.as_str()]).inc();
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
        code = ctx.code.map_or("-", Code::as_str),
        reason = ctx.reason.map_or("-", Reason::as_str),
        redactions = %ctx.redactions.header_value(),
        response_redactions = %response_counts(ctx).header_value(),
        key_id = ctx.key.as_ref().map_or("-", |k| k.id.as_str()),
        org_id = ctx.key.as_ref().map_or("-", |k| k.org_id.as_str()),
        error = e.map(crate::proxy::error::log_kind).unwrap_or("-"),
        "request"
    );
}

/// The details of a `proxy.request` record, in their stored order. Every client-controlled
/// string is cut to [`crate::audit::MAX_DETAIL_CHARS`] here (the path, the model); the rest are
/// sluice's own (ids, codes, configured names).
#[derive(serde::Serialize)]
pub(super) struct RequestDetails<'a> {
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
pub(super) struct UsageDetails {
    input_tokens: u64,
    output_tokens: u64,
}

/// The audit record of a proxied (or refused) request: who, where, what happened; never a
/// body, a key or a header value. Its details are typed, serialised once per record.
pub(super) fn audit_record<'a>(
    session: &'a Session,
    ctx: &'a Ctx,
) -> (crate::audit::Entry<()>, RequestDetails<'a>) {
    use crate::audit::{cap, MAX_DETAIL_CHARS, MAX_FIELD_CHARS};
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let up = ctx.upstream_config();
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
        // A key's LLM request counts in the hourly roll-up (MCP calls have records of their
        // own: `mcp_records` takes it out).
        usage: ctx.key.as_ref().map(|k| {
            let found = ctx.usage.as_ref().and_then(|u| u.found);
            let (model, model_name) = match crate::usage::model_label(ctx.model.as_deref()) {
                "other" => ("other", String::new()),
                "unknown" => ("unknown", String::new()),
                m => ("", m.to_string()),
            };
            Box::new(crate::audit::Usage {
                key_id: k.id.clone(),
                model,
                model_name,
                input_tokens: found.map_or(0, |f| f.input),
                output_tokens: found.map_or(0, |f| f.output),
            })
        }),
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
        code: ctx.code.map(Code::as_str),
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

/// A request's one `proxy.request` audit record; `usage`: it counts in its key's hourly usage
/// roll-up (an LLM request does; an MCP request, refused before its server was chosen, does
/// not: MCP calls are not LLM usage).
pub(in crate::proxy) fn request_record(
    session: &Session,
    ctx: &Ctx,
    usage: bool,
) -> crate::audit::Bounded {
    let (mut head, details) = audit_record(session, ctx);
    if !usage {
        head.usage = None;
    }
    crate::audit::Bounded::typed(head, &details)
}

/// The audit records of an MCP gateway request: one `mcp.call` per JSON-RPC call (and one
/// `mcp.request` for a GET or DELETE), each with the server, method, tool (or resource,
/// prompt), outcome, latency and redaction counts, never arguments or results. MCP calls are
/// counted in `sluice_mcp_requests_total` here too.
pub(in crate::proxy) fn mcp_records(
    state: &State,
    session: &Session,
    ctx: &Ctx,
    m: &crate::proxy::mcp::McpCtx,
) -> Vec<crate::audit::Bounded> {
    let (mut head, details) = audit_record(session, ctx);
    head.usage = None;
    let base = head.with_details(serde_json::to_value(&details).unwrap_or_default());
    let server = ctx.mcp_server().map_or("?", |s| s.name.as_str());
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
