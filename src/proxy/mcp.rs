//! The MCP gateway's pingora glue: `/mcp/<server>` on the data plane. The request gate picks
//! the server (residency pins hold: a key pinned to a region reaches only that region's
//! servers) and its credential, then the JSON-RPC body is checked against the key's tool,
//! resource and prompt policy (`mcp::inspect`): what is refused is answered here, as JSON-RPC,
//! and never reaches the server. What comes back is validated and rewritten by
//! `mcp::Responses` (see `response::plan`).

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use super::error::{Code, Rejection};
use super::route::{Gate, Handler, Target};
use super::{response, Ctx, Live, State};
use crate::config::CredentialKind;

/// The Streamable HTTP transport's session header.
const SESSION_HEADER: &str = "mcp-session-id";

/// An MCP call.
pub(super) struct Mcp;

#[async_trait]
impl Handler for Mcp {
    fn choose(&self, state: &State, session: &Session, ctx: &mut Ctx) -> Result<(), Rejection> {
        choose(state, session, ctx)
    }

    /// The key's tool, resource and prompt policy: what it may not use is answered here, as
    /// JSON-RPC, and never forwarded; a body that is not JSON gets a JSON-RPC parse error.
    async fn gate_body(
        &self,
        state: &State,
        ctx: &mut Ctx,
        read: &Bytes,
        redacted: Result<Bytes, Rejection>,
    ) -> Result<Gate, Rejection> {
        // Fail closed: without the chosen server and the key, no policy can be checked.
        if ctx.mcp.is_none() || ctx.key.is_none() {
            return Err(Rejection::Internal);
        }
        match redacted {
            Err(Rejection::Unscannable(_)) => {
                let (status, answer) = inspect(state, ctx, read).unwrap_or((400, Vec::new()));
                Ok(Gate::Answer(status, answer))
            }
            Err(r) => Err(r),
            Ok(body) => Ok(match inspect(state, ctx, &body) {
                Some((status, answer)) => Gate::Answer(status, answer),
                None => Gate::Forward(body),
            }),
        }
    }

    fn peer(&self, ctx: &mut Ctx, session: &Session) -> Result<Box<HttpPeer>> {
        peer(ctx, session.req_header().method == http::Method::GET)
    }

    fn target<'a>(&self, live: &'a Live, ctx: &Ctx) -> Target<'a> {
        let server = ctx
            .mcp
            .as_ref()
            .and_then(|m| live.cfg.mcp_servers.get(m.server));
        Target {
            kind: "mcp_server",
            name: server.map(|s| s.name.as_str()),
            tls: server.and_then(|s| s.tls.as_ref()),
            credential: server.and_then(|s| s.credential.as_deref()),
        }
    }

    fn rewrite(&self, req: &mut RequestHeader, ctx: &Ctx) -> Result<()> {
        rewrite(req, ctx)
    }

    /// Every answer of an MCP server is validated and rewritten, whatever the key's response
    /// redaction.
    fn plan_answer(
        &self,
        state: &State,
        session: &Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        response::plan_mcp(state, session, resp, ctx)
    }

    /// One record per JSON-RPC call (a request refused before its server was chosen has the
    /// one record any request has, outside the key's LLM usage).
    fn records(&self, state: &State, session: &Session, ctx: &Ctx) -> Vec<crate::audit::Bounded> {
        match &ctx.mcp {
            Some(m) => response::mcp_records(state, session, ctx, m),
            None => vec![response::request_record(session, ctx, false)],
        }
    }

    /// Each call of the request gets its JSON-RPC error (the client's SDK reads it as the
    /// call's failure); the reason is the stable code.
    fn unreachable_answer(&self, ctx: &Ctx, code: Code) -> Option<Vec<u8>> {
        let m = ctx.mcp.as_ref()?;
        let server = ctx.mcp_server().map_or("-", |s| s.name.as_str());
        crate::mcp::unreachable_answer(&m.calls, server, code.as_str())
    }
}

/// A resumed stream may carry the answers its session awaits: the ids of those.
pub fn awaiting(state: &State, ctx: &Ctx) -> Vec<String> {
    let (Some(m), Some(key)) = (ctx.mcp.as_ref(), ctx.key.as_ref()) else {
        return Vec::new();
    };
    match (&m.session, ctx.mcp_server()) {
        (Some(sid), Some(server)) if m.resume => {
            state.mcp_sessions.awaiting(&server.name, sid, &key.id)
        }
        _ => Vec::new(),
    }
}

/// The answers that came (on a POST or a resumed stream) are no longer awaited.
pub fn answered(state: &State, ctx: &Ctx, r: &crate::mcp::Responses) {
    let Some(m) = ctx.mcp.as_ref() else {
        return;
    };
    if let (Some(sid), Some(server)) = (&m.session, ctx.mcp_server()) {
        state.mcp_sessions.answered(&server.name, sid, r.answered());
    }
}

/// A session id in a server's answer: bound to the key whose request it answers.
pub fn bind_session(state: &State, resp: &ResponseHeader, ctx: &Ctx) {
    let (Some(m), Some(key)) = (ctx.mcp.as_ref(), ctx.key.as_ref()) else {
        return;
    };
    let Some(sid) = resp.headers.get(SESSION_HEADER) else {
        return;
    };
    if m.ended_session {
        // The answer to the DELETE that ended it: the id is not bound again.
        return;
    }
    let Some(server) = ctx.mcp_server() else {
        return;
    };
    let now = std::time::Instant::now();
    if !state
        .mcp_sessions
        .bind(&server.name, sid.as_bytes(), &key.id, now)
    {
        tracing::warn!(request_id = %ctx.request_id, mcp_server = %server.name,
            "the MCP server answered with a session id that is not usable by this key (bound to another key, or not visible ASCII)");
    }
}

/// The MCP part of a request's context.
pub struct McpCtx {
    /// Index into `[[mcp_servers]]`.
    pub server: usize,
    /// The JSON-RPC messages of the body (empty for GET and DELETE).
    pub calls: Vec<crate::mcp::Call>,
    /// The whole body was refused by the policy and answered by sluice.
    pub refused: bool,
    /// A DELETE that ends its session (its binding is gone).
    pub ended_session: bool,
    /// The session id the request carried (bound to its key).
    pub session: Option<Vec<u8>>,
    /// A GET that resumes a stream (`Last-Event-ID`): it may carry answers its session awaits.
    pub resume: bool,
}

/// Pick the MCP server named by the path, with its address and credential.
pub fn choose(state: &State, session: &Session, ctx: &mut Ctx) -> Result<(), Rejection> {
    let name = crate::inbound::mcp_server(session.req_header().uri.path())
        .ok_or(Rejection::Inbound(crate::inbound::Error::NotFound))?;
    let (index, server) = ctx
        .live
        .cfg
        .mcp_server(name)
        .ok_or(Rejection::Inbound(crate::inbound::Error::NotFound))?;
    let key = ctx.key.as_ref().ok_or(Rejection::Internal)?;
    // The region asked for (`X-Sluice-Region`, read as on `/v1`: one known region) or pinned
    // (a key or org pinned to a region reaches only MCP servers of that region). A server of
    // another region is never used in its place: as an LLM region with no upstream, 503.
    let header: Vec<&[u8]> = (session.req_header().headers.get_all("x-sluice-region"))
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let (region, source) =
        crate::residency::resolve(&header, key.region, key.org_region, server.region)
            .map_err(Rejection::Region)?;
    if region != server.region {
        return Err(match source {
            crate::residency::Source::Header => Rejection::RegionUnavailable(region),
            _ => Rejection::Region(crate::residency::Error::NotAllowed {
                pin: region,
                asked: server.region,
            }),
        });
    }
    ctx.region = Some(server.region);
    let addr = ctx
        .live
        .regions
        .pick_mcp(index)
        .ok_or(Rejection::McpUnavailable)?;
    ctx.peer_addr = Some(addr);
    ctx.credential = None;
    if let Some(cred) = &server.credential {
        match state
            .auth
            .get()
            .credential(cred, time::OffsetDateTime::now_utc())
        {
            Some(c)
                if server.credential_kind == CredentialKind::OAuth
                    && c.oauth_obtained.is_none() =>
            {
                tracing::error!(request_id = %ctx.request_id, mcp_server = %server.name, credential = %cred,
                    "the MCP server's credential_kind is oauth but its credential is static; set it with `sluice credentials set-oauth`");
                return Err(Rejection::CredentialUnavailable);
            }
            Some(c) => ctx.credential = Some(c),
            None => {
                tracing::error!(request_id = %ctx.request_id, mcp_server = %server.name, credential = %cred,
                    oauth = server.credential_kind == CredentialKind::OAuth,
                    "MCP server credential missing, undecryptable, expired or not obtained yet");
                return Err(Rejection::CredentialUnavailable);
            }
        }
    }
    // A session is its key's alone: an id another key opened (or none did) is unknown here,
    // and the server never hears of the request.
    let mut ended_session = false;
    let mut bound = None;
    // One session id: servers and balancers that read another of several would serve a
    // session sluice did not check.
    if session
        .req_header()
        .headers
        .get_all(SESSION_HEADER)
        .iter()
        .count()
        > 1
    {
        return Err(Rejection::Inbound(crate::inbound::Error::NotFound));
    }
    if let Some(sid) = session.req_header().headers.get(SESSION_HEADER) {
        let now = std::time::Instant::now();
        if !state
            .mcp_sessions
            .allows(&server.name, sid.as_bytes(), &key.id, now)
        {
            return Err(Rejection::Inbound(crate::inbound::Error::NotFound));
        }
        if session.req_header().method == http::Method::DELETE {
            state.mcp_sessions.end(&server.name, sid.as_bytes());
            ended_session = true;
        } else {
            bound = Some(sid.as_bytes().to_vec());
        }
    }
    let resume = bound.is_some()
        && session.req_header().method == http::Method::GET
        && session.req_header().headers.contains_key("last-event-id");
    // A GET is the server's event stream, which may be idle for long: no read timeout; tool
    // calls get the long timeout.
    ctx.timeout = ctx.live.cfg.limits.long_timeout;
    ctx.mcp = Some(McpCtx {
        server: index,
        calls: Vec::new(),
        refused: false,
        ended_session,
        session: bound,
        resume,
    });
    Ok(())
}

/// Check a (redacted) JSON-RPC body against the key's policy. `Some((status, body))`: sluice
/// answers it itself (a refusal, or a body that is not JSON-RPC).
pub fn inspect(state: &State, ctx: &mut Ctx, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    let (mcp, key) = (ctx.mcp.as_mut()?, ctx.key.as_ref()?);
    let server = &ctx.live.cfg.mcp_servers.get(mcp.server)?.name;
    match crate::mcp::inspect(body, server, &key.mcp) {
        Err(invalid) => {
            ctx.code = Some(Code::Mcp(invalid.code));
            Some((400, invalid.body))
        }
        Ok(i) => {
            mcp.calls = i.calls;
            if let (None, Some(sid)) = (&i.refusal, &mcp.session) {
                // Answers to these may come on a stream the client resumes.
                let ids = mcp.calls.iter().filter_map(crate::mcp::Call::id_key);
                state.mcp_sessions.expect(server, sid, ids);
            }
            let (code, answer) = i.refusal?;
            mcp.refused = true;
            ctx.code = Some(Code::Mcp(code));
            Some((200, answer))
        }
    }
}

/// Send sluice's own JSON-RPC answer.
pub async fn answer(
    state: &State,
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    body: Vec<u8>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(8))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len())?;
    resp.insert_header("cache-control", "no-store")?;
    super::response::common_headers(state, &mut resp, ctx)?;
    ctx.responded = true;
    ctx.bytes_out += body.len() as u64;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(())
}

/// The upstream peer of the chosen MCP server.
pub fn peer(ctx: &Ctx, is_get: bool) -> Result<Box<pingora_core::upstreams::peer::HttpPeer>> {
    use pingora_error::{Error, ErrorType};
    let (Some(mcp), Some(m)) = (ctx.mcp.as_ref(), ctx.mcp_server()) else {
        return Error::e_explain(ErrorType::InternalError, "no MCP server");
    };
    let addr = ctx
        .peer_addr
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "no MCP server address"))?;
    let mut peer =
        pingora_core::upstreams::peer::HttpPeer::new(addr, m.url.tls, m.url.host.clone());
    peer.options.ca = ctx.live.cas.mcp(mcp.server);
    peer.group_key = ctx.live.cas.mcp_key(mcp.server);
    let limits = &ctx.live.cfg.limits;
    let o = &mut peer.options;
    o.connection_timeout = Some(limits.connect_timeout);
    o.total_connection_timeout = Some(limits.connect_timeout * 2);
    o.read_timeout = (!is_get).then_some(ctx.timeout);
    o.write_timeout = Some(ctx.timeout);
    o.idle_timeout = Some(std::time::Duration::from_secs(60));
    Ok(Box::new(peer))
}

/// The request as the MCP server gets it: its endpoint's path, its Host, its credential.
pub fn rewrite(req: &mut pingora_http::RequestHeader, ctx: &Ctx) -> Result<()> {
    use pingora_error::{Error, ErrorType};
    let m = ctx
        .mcp_server()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "no MCP server"))?;
    let path = if m.url.path_prefix.is_empty() {
        "/"
    } else {
        &m.url.path_prefix
    };
    let target = match &m.query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let uri: http::Uri = target
        .parse()
        .map_err(|_| Error::explain(ErrorType::InternalError, "MCP server path"))?;
    req.set_uri(uri);
    if let Some(cred) = &ctx.credential {
        let value = cred.header_value("Bearer ").ok_or_else(|| {
            Error::explain(
                ErrorType::InternalError,
                "MCP credential is not a valid header value",
            )
        })?;
        req.insert_header(http::header::AUTHORIZATION, value)?;
    }
    req.insert_header(http::header::HOST, m.url.authority.as_str())?;
    Ok(())
}
