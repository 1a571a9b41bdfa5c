//! Response redaction: the plan made from the answer's head (buffer, stream, MCP messages,
//! refuse), and the body rewritten chunk by chunk on its way to the client.

use super::*;

/// What the key's policies look for in its responses, if response redaction is on.
pub(super) fn response_scan(ctx: &Ctx) -> Option<Scan> {
    let k = ctx.key.as_ref().filter(|k| k.on.response_redaction)?;
    let scan = Scan {
        pii: k.on.pii,
        secrets: k.on.secrets,
    };
    scan.any().then_some(scan)
}

pub(super) fn unscannable() -> Box<Error> {
    Error::new_up(ErrorType::Custom(UNSCANNABLE))
}

/// Decide how an LLM answer's body will be rewritten (response redaction on), from the
/// response head, and fix its framing: the
/// rewritten body's length is not known yet, so it goes out chunked (pingora writes the head
/// before any body filter runs). A response that cannot be scanned is refused here (502),
/// before anything was sent.
pub(in crate::proxy) fn plan(
    state: &State,
    session: &Session,
    resp: &mut ResponseHeader,
    ctx: &mut Ctx,
) -> Result<()> {
    let Some(scan) = response_scan(ctx) else {
        return Ok(());
    };
    let status = resp.status.as_u16();
    let has_body = session.req_header().method != http::Method::HEAD
        && !(100..200).contains(&status)
        && status != 204
        && status != 304;
    // Successful embeddings answer with vectors: nothing of the input is echoed. Their errors
    // are scanned as every other answer (one can quote the input, an account or a key).
    let kind = if ctx.route == crate::inbound::Route::Embeddings && (200..300).contains(&status) {
        ResponseKind::Pass
    } else {
        let (content_type, encoding) = (
            crate::proxy::header_lines(&resp.headers, http::header::CONTENT_TYPE),
            crate::proxy::header_lines(&resp.headers, http::header::CONTENT_ENCODING),
        );
        crate::redact::response_kind(has_body, content_type.as_deref(), encoding.as_deref())
    };
    // A successful answer to a request that asked for a stream is read by its client as
    // events whatever its type says (openai-python's stream reader does): redacted as events.
    let kind = match kind {
        ResponseKind::Text { encoding: None }
            if ctx.asks_stream && (200..300).contains(&status) =>
        {
            ResponseKind::Sse
        }
        k => k,
    };
    let r = &ctx.live.cfg.redaction;
    ctx.rewrite = match kind {
        ResponseKind::Pass => return Ok(()),
        ResponseKind::Unscannable => {
            ctx.reason = Some(Reason::ResponseScan);
            return Err(unscannable());
        }
        ResponseKind::Sse => {
            let redactor = sse::Redactor::new(
                &state.redactor,
                scan,
                r.stream_holdback_bytes,
                r.max_event_bytes,
            );
            let redactor = if ctx.asks_choices {
                redactor
            } else {
                redactor.one_choice()
            };
            Some(Rewrite::Sse(Box::new(redactor)))
        }
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
pub(in crate::proxy) fn plan_mcp(
    state: &State,
    session: &Session,
    resp: &mut ResponseHeader,
    ctx: &mut Ctx,
) -> Result<()> {
    // Fail closed: an answer that cannot be checked against the key's policy is not passed on.
    let (Some(m), Some(key)) = (ctx.mcp.as_ref(), ctx.key.as_ref()) else {
        return Err(Error::explain(ErrorType::InternalError, "no MCP context"));
    };
    crate::proxy::mcp::bind_session(state, resp, ctx);
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
    // Every line read (`identity` then `gzip` is gzip to a client that joins them).
    let encoded = crate::proxy::header_lines(&resp.headers, http::header::CONTENT_ENCODING)
        .is_some_and(|e| !e.eq_ignore_ascii_case(b"identity"));
    if encoded {
        ctx.reason = Some(Reason::ResponseScan);
        return Err(unscannable());
    }
    let sse = is_event_stream(resp);
    let server = ctx.mcp_server().map_or("", |s| s.name.as_str());
    let scan = Scan {
        pii: key.on.pii,
        secrets: key.on.secrets,
    };
    let mut r = crate::mcp::Responses::new(
        server,
        key.mcp.clone(),
        &m.calls,
        state.redactor.clone(),
        scan,
        ctx.live.cfg.mcp.max_message_bytes,
    );
    r.resume(crate::proxy::mcp::awaiting(state, ctx));
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
pub(super) fn offloaded<T>(len: usize, f: impl FnOnce() -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if len > crate::proxy::request::OFFLOAD_BYTES && multi {
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
                ctx.reason = Some(Reason::ResponseScan);
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
                    ctx.reason = Some(Reason::ResponseTooLarge);
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
                        ctx.reason = Some(Reason::ResponseScan);
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
            crate::proxy::mcp::answered(state, ctx, r);
        }
    }
    follow_usage(body, end, ctx);
    if let Some(b) = body {
        ctx.bytes_out += b.len() as u64;
        // The answer's own end went out: a stream's `[DONE]` or Responses API completion.
        // A client that closes after it (the SDKs stop reading there) got everything.
        if !ctx.answer_complete
            && (finder!(b"data: [DONE]").find(b).is_some()
                || finder!(b"\"response.completed\"").find(b).is_some())
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
pub(super) fn response_counts(ctx: &Ctx) -> Counts {
    let mut c = ctx.response_redactions;
    match &ctx.rewrite {
        Some(Rewrite::Sse(r)) => c.merge(&r.counts()),
        Some(Rewrite::Mcp { r, .. }) => c.merge(&r.counts()),
        _ => {}
    }
    c
}
