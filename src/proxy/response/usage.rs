//! Token usage of an LLM answer: followed through the body (the usage chunk sluice asked for taken
//! out of a stream), settled against the limits and budgets once it ends.

use super::*;

/// Correct the token limits taken before the request (input estimate plus output
/// reservation): to the usage the answer reported; for a successful answer whose usage never
/// came (the client reset the stream, or left before the first byte; the answer was too large
/// or unscannable), to the input estimate plus a quarter of the answer's bytes delivered (its
/// JSON framing included: it errs high); for a request that reached the provider without a
/// successful answer, to the input estimate (the provider may have processed it); and give
/// everything back only when the request never reached the provider (refused, no connection).
pub(super) fn settle_tokens(state: &State, ctx: &Ctx) {
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
pub(super) fn is_event_stream(resp: &ResponseHeader) -> bool {
    // Every line read, as the answer's redaction reads them (`crate::proxy::header_lines`).
    crate::proxy::header_lines(&resp.headers, http::header::CONTENT_TYPE)
        .is_some_and(|c| c.to_ascii_lowercase().starts_with(b"text/event-stream"))
}

/// Start reading the usage of a successful LLM answer. A stream whose usage sluice asked
/// for loses its usage chunk on the way, so its length changes: it goes out chunked.
pub(in crate::proxy) fn track_usage(resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
    if operation(ctx.route).is_none() || !resp.status.is_success() {
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
pub(super) fn follow_usage(body: &mut Option<Bytes>, end: bool, ctx: &mut Ctx) {
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
