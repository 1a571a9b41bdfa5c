//! Failures: sluice's own JSON error replies, the CORS preflight, and pingora's errors mapped to
//! them (upstream TLS refusals counted and logged).

use super::*;

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
            (Some(r @ (Reason::ResponseScan | Reason::ResponseTooLarge)), _) => r.as_str(),
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
        tracing::warn!(request_id = %ctx.request_id, error = crate::proxy::error::log_kind(e), source = e.esource().as_str(), "internal error while proxying");
    }
    if let Rejection::UpstreamTls = r {
        let reason = ctx.reason.get_or_insert(Reason::TlsHandshake).as_str();
        let target = crate::proxy::route::handler(ctx).target(&ctx.live, ctx);
        let (kind, name) = (target.kind, target.name);
        let name = name.unwrap_or("-");
        state
            .metrics
            .upstream_tls_failures
            .with_label_values(&[name, reason])
            .inc();
        tracing::warn!(request_id = %ctx.request_id, kind, name, reason, error = crate::proxy::error::log_kind(e),
            "TLS connection refused: it does not meet the policy (certificate, [tls] min_version, pins); nothing was sent on it");
    }
    let reply = reply_for(&r);
    // An MCP request the server could not be used for at all gets its JSON-RPC error (the
    // client's SDK reads it as the call's failure); the reason is the stable code.
    if let Rejection::UpstreamTls = r {
        if let Some(body) = crate::proxy::route::handler(ctx).unreachable_answer(ctx, reply.code) {
            ctx.code = Some(reply.code);
            let sent = crate::proxy::mcp::answer(state, session, ctx, 200, body).await;
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
        error_code: reply.status,
        can_reuse_downstream: false,
    }
}

pub(super) fn classify(session: &Session, e: &Error) -> Option<Rejection> {
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
        _ if *e.etype() == Custom(crate::proxy::upstream::UPSTREAM_TLS) => {
            Some(Rejection::UpstreamTls)
        }
        ErrorSource::Upstream => Some(match e.etype() {
            t if crate::proxy::upstream::is_tls_refusal(t) => Rejection::UpstreamTls,
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
