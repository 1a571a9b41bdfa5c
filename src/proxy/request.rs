//! The request phase: request id, CORS origin, the inbound gate, reading the whole body (within
//! `max_body_bytes` and the client deadline), and handing the body back to pingora. Nothing
//! here contacts the upstream: every refusal is answered before a connection is made.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pingora_core::apps::HttpPersistentSettings;
use pingora_error::Result;
use pingora_proxy::Session;

use super::error::Rejection;
use super::guard::Guarded;
use super::route::Gate;
use super::{rebody, response, Ctx, State};
use crate::auth;
use crate::inbound::{self, Bounds, Framing};
use crate::redact::Scan;
use crate::residency;

/// Returns `Ok(true)` when the request was answered here (refused or a CORS preflight).
pub async fn filter(state: &Arc<State>, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
    ctx.started = std::time::Instant::now();
    if let Some(g) = Guarded::of_session(&session.downstream_session) {
        g.head_received();
    }
    ctx.request_id = inbound::request_id(
        session
            .req_header()
            .headers
            .get("x-request-id")
            .map(|v| v.as_bytes()),
    );
    if state.draining.load(Ordering::Acquire) {
        session.set_keepalive(None);
    }
    // HTTP/1.1 pipelining (RFC 9112 9.3.2): bytes the client sends after this request are kept
    // for the next request on the connection, which goes through this gate on its own (its own
    // key, its own body), after this response. Without this pingora drops the connection
    // ("Sent data after end of body") and the first request goes unanswered.
    session.downstream_session.set_pipelining_enabled(true);
    let answered = gate(state, session, ctx).await;
    disarm(session);
    match answered {
        Ok(done) => Ok(done),
        Err(r) => {
            response::send_error(state, session, ctx, &r).await?;
            Ok(true)
        }
    }
}

async fn gate(state: &Arc<State>, session: &mut Session, ctx: &mut Ctx) -> Result<bool, Rejection> {
    let live = ctx.live.clone();
    let cfg = &live.cfg;
    // Fail closed: nothing runs unaudited. First, so that no request of any kind adds to the
    // writer's backlog while it cannot write.
    if state.audit.is_failing() {
        return Err(Rejection::AuditUnavailable);
    }
    // Nor on a snapshot that has not been confirmed current for a while (a revocation made
    // since would be missed).
    if state.auth.age() > cfg.store.max_stale {
        return Err(Rejection::StoreUnavailable);
    }
    let origin = session
        .req_header()
        .headers
        .get(http::header::ORIGIN)
        .cloned();
    if let Some(origin) = origin {
        if !inbound::is_allowed_origin(origin.as_bytes(), &cfg.cors.allow_origins) {
            return Err(Rejection::OriginNotAllowed);
        }
        ctx.cors_origin = Some(origin);
        if session.req_header().method == http::Method::OPTIONS {
            response::send_preflight(state, session, ctx)
                .await
                .map_err(|_| Rejection::Internal)?;
            return Ok(true);
        }
    }

    let raw_head = match session.downstream_session.as_http1() {
        Some(h1) => h1.get_headers_raw_bytes(),
        None => return Err(Rejection::Internal),
    };
    let bounds = Bounds {
        max_header_bytes: cfg.limits.max_header_bytes,
        max_headers: cfg.limits.max_headers,
        max_body_bytes: cfg.limits.max_body_bytes,
    };
    let req = session.req_header();
    let head = inbound::check(req.method.as_str(), req.raw_path(), &raw_head, &bounds)?;
    ctx.route = head.route;
    authenticate(state, session, ctx)?;
    limit_requests(state, ctx).await?;
    let handler = super::route::handler(ctx);
    handler.choose(state, session, ctx)?;
    redact_head(state, session, ctx)?;
    if head.framing == Framing::None {
        return Ok(false);
    }

    if session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        // pingora turns keep-alive off when any response head goes out before the body is
        // read, the 100 Continue included; the body is read in full right after, so the
        // connection's keep-alive is restored (a failed read turns it off again).
        let settings = HttpPersistentSettings::for_session(&session.downstream_session);
        session
            .downstream_session
            .write_continue_response()
            .await
            .map_err(|_| Rejection::BadBody)?;
        settings.apply_to_session(&mut session.downstream_session);
    }
    rebody::prepare(session, head.framing);
    let body = read_body(session, head.framing, cfg.limits.max_body_bytes).await?;
    ctx.bytes_in = body.len() as u64;
    state.metrics.bytes_in.inc_by(ctx.bytes_in);
    let redacted = redact(state, session, ctx, body.clone()).await;
    let body = match handler.gate_body(state, ctx, &body, redacted).await? {
        Gate::Forward(body) => body,
        Gate::Answer(status, answer) => {
            super::mcp::answer(state, session, ctx, status, answer)
                .await
                .map_err(|_| Rejection::Internal)?;
            return Ok(true);
        }
    };
    rebody::hand_back(session, &mut ctx.body, body).await.map_err(|e| {
        // Only the error type: pingora's parse errors quote the raw head (headers included).
        tracing::warn!(request_id = %ctx.request_id, error = super::error::log_kind(&e), "cannot hand the body back to pingora");
        Rejection::Internal
    })?;
    Ok(false)
}

/// An LLM API call's body gate, on the body as redacted: decided on exactly what is forwarded,
/// so a JSON body whose members a parser upstream could read otherwise (a second `model`, a
/// second `messages`) is refused; the model's timeout and the tokens it may use are taken;
/// a stream is made to report its usage.
pub(super) async fn llm_body(
    state: &State,
    ctx: &mut Ctx,
    redacted: Result<Bytes, Rejection>,
) -> Result<Bytes, Rejection> {
    let live = ctx.live.clone();
    let cfg = &live.cfg;
    let mut body = redacted?;
    // One pass: duplicates checked, the members the request path reads taken. What is not
    // JSON (a compressed body sluice did not decode) was left to the redaction's checks.
    let peeked = match inbound::peek(&body) {
        Ok(p) => p,
        Err(crate::json::Error::Duplicate) => return Err(Rejection::AmbiguousJson),
        // JSON that cannot be read one way (a number out of range, nesting past 128
        // levels): its members were not checked, so it is not forwarded either.
        Err(crate::json::Error::Invalid) if looks_like_json(&body) => {
            ctx.reason = Some(super::error::Reason::PiiScan);
            return Err(Rejection::Unscannable(crate::redact::BodyError::NotJson(
                "the JSON body cannot be read one way (a number out of range, or nested deeper than 128 levels)".into(),
            )));
        }
        Err(crate::json::Error::Invalid) => inbound::Peeked::default(),
    };
    ctx.model = peeked.model;
    ctx.asks_stream = peeked.stream;
    ctx.asks_choices = peeked.choices > 1;
    ctx.timeout = cfg.limits.timeout_for(ctx.model.as_deref());
    limit_tokens(state, ctx, body.len(), peeked.max_output).await?;
    // Usage is always known: a stream that does not ask for it is made to, and the
    // usage chunk is taken out of the answer again.
    let streams_usage = ctx.upstream_config().is_some_and(|u| u.stream_usage);
    if streams_usage
        && matches!(
            ctx.route,
            inbound::Route::ChatCompletions | inbound::Route::Completions
        )
    {
        if let Some(b) = crate::usage::ask_stream_usage(&body) {
            body = Bytes::from(b);
            ctx.asked_usage = true;
        }
    }
    Ok(body)
}

/// The refusal for a limit that is reached (the rate limit's quota noted for the headers).
fn refusal(ctx: &mut Ctx, r: crate::limits::Refusal) -> Rejection {
    use crate::limits::{Measure, Refusal as R};
    match r {
        R::Rate {
            retry_after,
            measure,
            quota,
        } => {
            match measure {
                Measure::Requests => ctx.quotas.requests = Some(quota),
                Measure::Tokens => ctx.quotas.tokens = Some(quota),
            }
            Rejection::RateLimited { retry_after }
        }
        R::Budget { retry_after } => Rejection::BudgetExceeded { retry_after },
        R::Unavailable => Rejection::LimitsUnavailable,
    }
}

/// Count the request against the key's and its org's `rpm`, before the body is read.
async fn limit_requests(state: &State, ctx: &mut Ctx) -> Result<(), Rejection> {
    use crate::limits::{Ask, Measure, Quota, Scope};
    let Some(key) = ctx.key.as_ref() else {
        return Ok(());
    };
    if key.limits.rpm.is_none() && key.org_limits.rpm.is_none() {
        return Ok(());
    }
    let asks: Vec<Ask> = [
        Ask::requests(Scope::Key, &key.counter_names.0, &key.limits),
        Ask::requests(Scope::Org, &key.counter_names.1, &key.org_limits),
    ]
    .into_iter()
    .flatten()
    .collect();
    match state.limiter.take(&asks).await {
        Ok(taken) => {
            ctx.quotas.requests = Quota::tightest(&taken, Measure::Requests);
            Ok(())
        }
        Err(r) => Err(refusal(ctx, r)),
    }
}

/// Take the request's estimated tokens (a quarter of its body's bytes) from the key's and its
/// org's token limits; the answer's usage corrects them afterwards (`response::log`).
/// Output tokens reserved for a request that does not say how many it may use (no
/// `max_tokens`, `max_completion_tokens` or `max_output_tokens`).
pub const DEFAULT_OUTPUT_RESERVATION: u64 = 4096;

/// Take the request's tokens from its key's and org's `tpm` and budget before it is sent: its
/// input (a quarter of its body's bytes) plus the output it may use (what it asks for at most,
/// else [`DEFAULT_OUTPUT_RESERVATION`]; none for embeddings), at most what is left. Settled to
/// the real usage after the answer, so concurrent requests overshoot by at most what the
/// answers in flight use beyond their reservations.
async fn limit_tokens(
    state: &State,
    ctx: &mut Ctx,
    body_len: usize,
    max_output: Option<u64>,
) -> Result<(), Rejection> {
    use crate::limits::{Ask, Measure, Quota, Scope};
    let Some(key) = ctx.key.as_ref() else {
        return Ok(());
    };
    if !key.limits.counts_tokens() && !key.org_limits.counts_tokens() {
        return Ok(());
    }
    let input = (body_len as u64 / 4).max(1);
    ctx.input_tokens = input;
    let output = match ctx.route {
        inbound::Route::ChatCompletions
        | inbound::Route::Completions
        | inbound::Route::Responses => max_output.unwrap_or(DEFAULT_OUTPUT_RESERVATION),
        _ => 0,
    };
    let estimate = input.saturating_add(output);
    let mut asks = Ask::tokens(Scope::Key, &key.counter_names.0, &key.limits, estimate);
    asks.extend(Ask::tokens(
        Scope::Org,
        &key.counter_names.1,
        &key.org_limits,
        estimate,
    ));
    match state.limiter.take(&asks).await {
        Ok(taken) => {
            ctx.quotas.tokens = Quota::tightest(&taken, Measure::Tokens);
            ctx.tokens_taken = taken;
            Ok(())
        }
        Err(r) => Err(refusal(ctx, r)),
    }
}

/// Authenticate the sluice API key against the in-memory snapshot and apply its rate limit.
/// Runs before the body is read: an unauthenticated client cannot make sluice buffer anything.
fn authenticate(state: &State, session: &Session, ctx: &mut Ctx) -> Result<(), Rejection> {
    let req = session.req_header();
    let mut values = req.headers.get_all(http::header::AUTHORIZATION).iter();
    let (first, second) = (values.next(), values.next());
    let authz: &[&[u8]] = match (first, second) {
        (None, _) => &[],
        (Some(a), None) => &[a.as_bytes()],
        (Some(a), Some(b)) => &[a.as_bytes(), b.as_bytes()],
    };
    let other = req.headers.contains_key("api-key") || req.headers.contains_key("x-api-key");
    let now = time::OffsetDateTime::now_utc();
    let key = auth::bearer(authz, other, req.uri.query())
        .and_then(|k| state.auth.get().authenticate(k, now))
        .map_err(|e| {
            ctx.reason = Some(super::error::Reason::Auth(e));
            state
                .metrics
                .auth_failures
                .with_label_values(&[e.reason()])
                .inc();
            Rejection::Unauthenticated(e)
        })?;
    key.mark_used();
    ctx.key = Some(key);
    Ok(())
}

/// Resolve the request's region and pick a healthy upstream in it, with its credential. A
/// credential that is configured but missing, undecryptable or expired refuses the request:
/// sluice never forwards without it. Nothing here ever looks outside the region.
pub(super) fn choose_upstream(
    state: &State,
    session: &Session,
    ctx: &mut Ctx,
) -> Result<(), Rejection> {
    let key = ctx.key.as_ref().ok_or(Rejection::Internal)?;
    let header: Vec<&[u8]> = session
        .req_header()
        .headers
        .get_all("x-sluice-region")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let (region, _source) = residency::resolve(
        &header,
        key.region,
        key.org_region,
        ctx.live.cfg.residency.default_region,
    )
    .map_err(Rejection::Region)?;
    ctx.region = Some(region);
    let (index, addr) = ctx
        .live
        .regions
        .pick(region, &ctx.tried)
        .ok_or(Rejection::RegionUnavailable(region))?;
    take_upstream(state, ctx, index, addr)
}

/// Make `index` (at `addr`) the request's upstream, with its credential.
pub(super) fn take_upstream(
    state: &State,
    ctx: &mut Ctx,
    index: usize,
    addr: std::net::SocketAddr,
) -> Result<(), Rejection> {
    let up = ctx
        .live
        .cfg
        .upstreams
        .get(index)
        .ok_or(Rejection::Internal)?;
    ctx.upstream = Some(index);
    ctx.peer_addr = Some(addr);
    ctx.credential = None;
    if let Some(name) = &up.credential {
        let cred = state
            .auth
            .get()
            .credential(name, time::OffsetDateTime::now_utc());
        match cred {
            Some(c) => ctx.credential = Some(c),
            None => {
                tracing::error!(request_id = %ctx.request_id, upstream = %up.name, credential = %name, "upstream credential missing, undecryptable or expired");
                return Err(Rejection::CredentialUnavailable);
            }
        }
    }
    Ok(())
}

/// Bodies larger than this (or compressed ones, which can decode to `max_body_bytes`) are
/// redacted on the blocking pool: a digit-dense 10 MB body costs a second or more of CPU,
/// which on a pingora worker would stall every other connection it serves.
pub(super) const OFFLOAD_BYTES: usize = 256 * 1024;

/// Redact PII from the body when the key's policy says so. Fail closed: a body that cannot be
/// scanned is refused, never forwarded.
/// Whether a body is meant as JSON: an object or an array, after leading whitespace (and a
/// UTF-8 byte order mark, which some parsers skip).
fn looks_like_json(body: &[u8]) -> bool {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    matches!(
        body.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

async fn redact(
    state: &Arc<State>,
    session: &mut Session,
    ctx: &mut Ctx,
    body: Bytes,
) -> Result<Bytes, Rejection> {
    let scan = ctx.key.as_ref().map_or(Scan::ALL, |k| Scan {
        pii: k.on.pii,
        secrets: k.on.secrets,
    });
    let headers = &session.req_header().headers;
    let content_type = super::header_lines(headers, http::header::CONTENT_TYPE);
    let encoding = super::header_lines(headers, http::header::CONTENT_ENCODING);
    // Redaction off: the body goes as it came, unless it is compressed. What is decided on it
    // (one reading of its members, its model's timeout, the tokens it may use) needs it read
    // as the upstream will: decoded as with redaction on (and forwarded decoded), or refused.
    let encoded = encoding
        .as_deref()
        .is_some_and(|e| !e.is_empty() && !e.eq_ignore_ascii_case(b"identity"));
    if !scan.any() && !encoded {
        return Ok(body);
    }
    let limit = ctx.live.cfg.limits.max_body_bytes;
    let r = if body.len() <= OFFLOAD_BYTES && encoding.is_none() {
        state
            .redactor
            .redact_body(&body, content_type.as_deref(), None, limit, scan)
    } else {
        // At most `redact_pool` bodies at once, so a burst of large bodies queues here
        // instead of starting a thread each.
        let _permit = state
            .redact_pool
            .acquire()
            .await
            .map_err(|_| Rejection::Internal)?;
        let (st, b) = (state.clone(), body.clone());
        let (ct, ce) = (
            content_type.map(|c| c.into_owned()),
            encoding.map(|e| e.into_owned()),
        );
        tokio::task::spawn_blocking(move || {
            st.redactor
                .redact_body(&b, ct.as_deref(), ce.as_deref(), limit, scan)
        })
        .await
        .map_err(|_| Rejection::Internal)?
    };
    let r = r.map_err(|e| {
        ctx.reason = Some(super::error::Reason::PiiScan);
        Rejection::Unscannable(e)
    })?;
    if r.decoded {
        session
            .req_header_mut()
            .remove_header(&http::header::CONTENT_ENCODING);
    }
    count_redactions(state, &r.counts);
    ctx.redactions.merge(&r.counts);
    Ok(r.body.map_or(body, Bytes::from))
}

/// Request headers whose values are not scanned for PII: sluice's own and those it handles
/// (framing, credentials it drops or replaces, negotiation), and those whose values are
/// opaque identifiers or SDK metadata (tracing, idempotency and session ids, the OpenAI SDKs'
/// `X-Stainless-*`). Every other header's value is scanned like the body.
const UNSCANNED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "accept",
    "accept-encoding",
    "accept-language",
    "accept-charset",
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "openai-organization",
    "openai-project",
    "openai-beta",
    "anthropic-version",
    "anthropic-beta",
    "traceparent",
    "tracestate",
    "x-request-id",
    "idempotency-key",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "cache-control",
    "pragma",
    "origin",
];

fn scanned_header(name: &str) -> bool {
    !(UNSCANNED_HEADERS.contains(&name)
        || name.starts_with("x-sluice-")
        || name.starts_with("x-stainless-")
        || name.starts_with("sec-"))
}

/// With redaction on, the query string and the values of headers sluice does not own or know
/// to be opaque ([`UNSCANNED_HEADERS`]) are redacted as the body is: what is found is
/// replaced by its token before the request goes on. A scanned header whose value is not
/// text is refused (400 `unscannable_header`), never forwarded unscanned.
fn redact_head(state: &State, session: &mut Session, ctx: &mut Ctx) -> Result<(), Rejection> {
    let scan = ctx.key.as_ref().map_or(Scan::ALL, |k| Scan {
        pii: k.on.pii,
        secrets: k.on.secrets,
    });
    if !scan.any() {
        return Ok(());
    }
    let mut counts = crate::redact::Counts::default();
    let req = session.req_header();
    let query = req
        .uri
        .query()
        .and_then(|q| state.redactor.redact_query(q, scan, &mut counts));
    let mut changed: Vec<(http::HeaderName, Vec<http::HeaderValue>)> = Vec::new();
    for name in req.headers.keys() {
        if !scanned_header(name.as_str()) {
            continue;
        }
        let mut values = Vec::new();
        let mut any = false;
        for v in req.headers.get_all(name) {
            let text = std::str::from_utf8(v.as_bytes())
                .map_err(|_| Rejection::UnscannableHeader(name.as_str().to_string()))?;
            // A value under a secret's name (`X-Auth-Token`) is judged whole, else read after
            // the name.
            let redacted = if scan.secrets && state.redactor.is_named_secret(name.as_str(), text) {
                counts.add(crate::redact::Entity::Secret);
                Some(crate::redact::Entity::Secret.token().to_string())
            } else if scan.secrets && state.redactor.names_a_secret(name.as_str()) {
                let context = format!("{}: ", name.as_str());
                state
                    .redactor
                    .redact_text_after(&context, text, scan, &mut counts)
            } else {
                state.redactor.redact_text(text, scan, &mut counts)
            };
            match redacted {
                Some(r) => {
                    any = true;
                    values
                        .push(http::HeaderValue::from_str(&r).map_err(|_| {
                            Rejection::UnscannableHeader(name.as_str().to_string())
                        })?);
                }
                None => values.push(v.clone()),
            }
        }
        if any {
            changed.push((name.clone(), values));
        }
    }
    if counts.total() == 0 {
        return Ok(());
    }
    let req = session.req_header_mut();
    if let Some(q) = query {
        let uri: http::Uri = format!("{}?{q}", req.uri.path())
            .parse()
            .map_err(|_| Rejection::Internal)?;
        req.set_uri(uri);
    }
    for (name, values) in changed {
        req.remove_header(&name);
        for v in values {
            req.append_header(name.clone(), v)
                .map_err(|_| Rejection::Internal)?;
        }
    }
    count_redactions(state, &counts);
    ctx.redactions.merge(&counts);
    Ok(())
}

/// Add redactions made in a request to `sluice_redactions_total`.
fn count_redactions(state: &State, counts: &crate::redact::Counts) {
    for e in crate::redact::Entity::ALL {
        let n = counts.get(e);
        if n > 0 {
            state
                .metrics
                .redactions
                .with_label_values(&[e.as_str()])
                .inc_by(n as u64);
        }
    }
}

/// Read the whole body, refusing it as soon as it exceeds `limit`.
async fn read_body(
    session: &mut Session,
    framing: Framing,
    limit: usize,
) -> Result<Bytes, Rejection> {
    let mut buf = BytesMut::with_capacity(match framing {
        Framing::Length(n) => n as usize,
        _ => 16 * 1024,
    });
    loop {
        match session.downstream_session.read_request_body().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    session.set_keepalive(None);
                    return Err(Rejection::BodyTooLarge { limit });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(_) => {
                session.set_keepalive(None);
                let expired = Guarded::of_session(&session.downstream_session)
                    .is_some_and(Guarded::is_expired);
                return Err(if expired {
                    Rejection::ClientTimeout
                } else {
                    Rejection::BadBody
                });
            }
        }
    }
}

/// The request is fully read: stop the client deadline for this connection.
fn disarm(session: &Session) {
    if let Some(g) = Guarded::of_session(&session.downstream_session) {
        g.disarm();
    }
}
