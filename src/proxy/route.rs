//! The two kinds of traffic the data plane carries, each behind the one [`Handler`] trait: an
//! LLM API call (`/v1/*`, to an upstream: `llm::Llm`) and an MCP call (`/mcp/<server>`, to an
//! MCP server: `mcp::Mcp`). The phases in `request`, `upstream` and `response` do what both
//! share and ask the request's handler wherever the protocols differ, so each protocol's rules
//! are in its own impl.

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use super::error::{Code, Rejection};
use super::{Ctx, Live, State};
use crate::inbound::Route;

/// What a request's body gate decided.
pub(super) enum Gate {
    /// Forward this body: what was checked is what is sent.
    Forward(Bytes),
    /// sluice answers the request itself (status, JSON body); nothing is forwarded.
    Answer(u16, Vec<u8>),
}

/// Where a request goes, as checks, logs and metrics name it.
pub(super) struct Target<'a> {
    /// `upstream` or `mcp_server`.
    pub kind: &'static str,
    pub name: Option<&'a str>,
    /// Its TLS policy (every https:// entry has one).
    pub tls: Option<&'a crate::config::Tls>,
    /// The name of the credential sluice sends it.
    pub credential: Option<&'a str>,
}

/// What differs between the protocols, phase by phase.
#[async_trait]
pub(super) trait Handler: Sync {
    /// Pick where the request goes (residency pins hold), its address and its credential.
    fn choose(&self, state: &State, session: &Session, ctx: &mut Ctx) -> Result<(), Rejection>;

    /// Decide on the body, given as read (`read`) and as the redaction left it (`redacted`:
    /// the redaction's own result, a refusal included).
    async fn gate_body(
        &self,
        state: &State,
        ctx: &mut Ctx,
        read: &Bytes,
        redacted: Result<Bytes, Rejection>,
    ) -> Result<Gate, Rejection>;

    /// The chosen peer, with this request's timeouts.
    fn peer(&self, ctx: &mut Ctx, session: &Session) -> Result<Box<HttpPeer>>;

    /// What `choose` picked, as `live` configures it.
    fn target<'a>(&self, live: &'a Live, ctx: &Ctx) -> Target<'a>;

    /// The request as the peer gets it: its path, Host and credential.
    fn rewrite(&self, req: &mut RequestHeader, ctx: &Ctx) -> Result<()>;

    /// How the answer is read and rewritten, planned from its head (which this may change:
    /// framing, encoding).
    fn plan_answer(
        &self,
        state: &State,
        session: &Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()>;

    /// The request's audit records.
    fn records(&self, state: &State, session: &Session, ctx: &Ctx) -> Vec<crate::audit::Bounded>;

    /// sluice's own answer (200, JSON) to a request its peer could not be used for at all
    /// (`code`), where the protocol has one; otherwise the JSON error reply is sent.
    fn unreachable_answer(&self, ctx: &Ctx, code: Code) -> Option<Vec<u8>>;
}

/// The handler of the request's route.
pub(super) fn handler(ctx: &Ctx) -> &'static dyn Handler {
    match ctx.route {
        Route::Mcp => &super::mcp::Mcp,
        _ => &super::llm::Llm,
    }
}
