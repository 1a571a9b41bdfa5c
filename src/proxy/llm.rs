//! The LLM API's rules on the data plane (`/v1/*`): the upstream of the request's region, the
//! body checked for members another parser could read otherwise, the model's timeout, tokens
//! taken before and settled after, usage read from the answer, response redaction as the key
//! says, one `proxy.request` audit record.

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use super::error::{Code, Rejection};
use super::route::{Gate, Handler, Target};
use super::{request, response, upstream, Ctx, Live, State};

/// An LLM API call.
pub(super) struct Llm;

#[async_trait]
impl Handler for Llm {
    fn choose(&self, state: &State, session: &Session, ctx: &mut Ctx) -> Result<(), Rejection> {
        request::choose_upstream(state, session, ctx)
    }

    async fn gate_body(
        &self,
        state: &State,
        ctx: &mut Ctx,
        _read: &Bytes,
        redacted: Result<Bytes, Rejection>,
    ) -> Result<Gate, Rejection> {
        request::llm_body(state, ctx, redacted)
            .await
            .map(Gate::Forward)
    }

    fn peer(&self, ctx: &mut Ctx, _session: &Session) -> Result<Box<HttpPeer>> {
        upstream::peer(ctx)
    }

    fn target<'a>(&self, live: &'a Live, ctx: &Ctx) -> Target<'a> {
        let up = ctx.upstream.and_then(|i| live.cfg.upstreams.get(i));
        Target {
            kind: "upstream",
            name: up.map(|u| u.name.as_str()),
            tls: up.and_then(|u| u.tls.as_ref()),
            credential: up.and_then(|u| u.credential.as_deref()),
        }
    }

    /// The upstream's path prefix, its credential in its header, its Host.
    fn rewrite(&self, req: &mut RequestHeader, ctx: &Ctx) -> Result<()> {
        let Some(up) = ctx.upstream_config() else {
            return Error::e_explain(ErrorType::InternalError, "no upstream chosen");
        };
        if !up.base_url.path_prefix.is_empty() {
            let pq = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let uri: http::Uri = format!("{}{}", up.base_url.path_prefix, pq)
                .parse()
                .map_err(|_| Error::explain(ErrorType::InternalError, "upstream path"))?;
            req.set_uri(uri);
        }
        if let Some(cred) = &ctx.credential {
            let value = cred.header_value(&up.credential_prefix).ok_or_else(|| {
                Error::explain(
                    ErrorType::InternalError,
                    "upstream credential is not a valid header value",
                )
            })?;
            req.insert_header(up.credential_header.clone(), value)?;
        }
        req.insert_header(http::header::HOST, up.base_url.authority.as_str())?;
        Ok(())
    }

    /// Response redaction as the key says, and the answer's token usage.
    fn plan_answer(
        &self,
        state: &State,
        session: &Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        response::plan(state, session, resp, ctx)?;
        if !super::skipped(super::Stage::Usage) {
            response::track_usage(resp, ctx)?;
        }
        Ok(())
    }

    fn records(&self, _state: &State, session: &Session, ctx: &Ctx) -> Vec<crate::audit::Bounded> {
        vec![response::request_record(session, ctx, true)]
    }

    fn unreachable_answer(&self, _ctx: &Ctx, _code: Code) -> Option<Vec<u8>> {
        None
    }
}
