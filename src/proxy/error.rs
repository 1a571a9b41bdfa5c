//! The one place that turns a refusal into a reply. Every variant maps to a status and a stable
//! `code` in an exhaustive match (no `_` arm), so a new variant does not compile until someone
//! picks its status. Codes are API: never rename one. 5xx messages are generic; the detail goes
//! to the log with the request id.

use crate::{auth, inbound};

/// Everything the data plane can refuse or fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(transparent)]
    Inbound(#[from] inbound::Error),
    /// A chunked body grew past `limits.max_body_bytes` while being read.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The client did not send its request (head and body) within `limits.client_timeout`.
    #[error("the request was not received in time")]
    ClientTimeout,
    /// The body could not be read (bad chunk encoding, connection closed mid-body).
    #[error("the request body could not be read")]
    BadBody,
    /// No usable sluice API key: missing, malformed, unknown, revoked, expired, duplicated or
    /// sent somewhere other than `Authorization: Bearer`. One reply for all, so a client cannot
    /// tell which; the reason goes to the log and the `sluice_auth_failures_total` metric.
    #[error("invalid API key")]
    Unauthenticated(auth::Error),
    /// A rate limit of the key or its org (`rpm`, `tpm`) is reached; retry after the given
    /// number of seconds.
    #[error("rate limit reached for this API key or its org; retry after {retry_after} seconds")]
    RateLimited { retry_after: u64 },
    /// A token budget of the key or its org is spent until the period renews.
    #[error(
        "the token budget of this API key or its org is spent; it renews in {retry_after} seconds"
    )]
    BudgetExceeded { retry_after: u64 },
    /// The fleet's shared counters (Redis) cannot be reached and `on_redis_error = "deny"`.
    #[error("the shared rate limit counters cannot be reached")]
    LimitsUnavailable,
    /// PII redaction is on and the body cannot be scanned: not JSON (400), or a content type
    /// or encoding sluice cannot read (415). Never forwarded unscanned.
    #[error("{0}")]
    Unscannable(crate::redact::BodyError),
    /// PII redaction is on and a header sluice would scan holds bytes that are not text.
    #[error("the value of header {0} is not text, so it cannot be scanned for PII; send visible ASCII or UTF-8")]
    UnscannableHeader(String),
    /// A JSON body names a member of one object twice: parsers disagree on which one counts,
    /// so it is refused rather than checked one way and read another way upstream.
    #[error("the JSON body names a member of one object twice; send each member once")]
    AmbiguousJson,
    /// The region could not be chosen: an unknown `X-Sluice-Region` (400), or one the key or
    /// org is pinned away from (403).
    #[error("{0}")]
    Region(crate::residency::Error),
    /// No healthy upstream in the request's region. Never served from another region.
    #[error("no healthy upstream in region {0}")]
    RegionUnavailable(crate::residency::Region),
    /// The upstream's credential is missing from the vault, cannot be decrypted, or expired.
    #[error("the upstream credential is unavailable")]
    CredentialUnavailable,
    /// A browser preflight or request from an origin not in `cors.allow_origins`.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// The upstream sent no response headers (or stalled between body chunks before anything
    /// was sent downstream) within the model's timeout.
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    /// The upstream could not be connected to (refused, DNS, connect timeout).
    #[error("the upstream could not be reached")]
    UpstreamUnreachable,
    /// The upstream's TLS connection does not meet its policy: a certificate that does not
    /// verify, a version below the minimum, no pin matched. Nothing was sent on it.
    #[error("the upstream's TLS connection was refused")]
    UpstreamTls,
    /// The upstream answered with something that is not a valid HTTP response, or reset.
    #[error("the upstream failed")]
    UpstreamFailed,
    /// Audit records cannot be written (disk full, `[store] max_size_mb` reached, store
    /// broken): requests are refused rather than run unaudited or queued without bound.
    #[error("the audit log cannot be written")]
    AuditUnavailable,
    /// The upstream (LLM provider or MCP server) answered 401 to the credential sluice
    /// injected. The app cannot fix that, and the provider's answer can quote part of the
    /// credential, so it is not passed on; an OAuth credential gets a new token at once.
    #[error("the upstream refused sluice's credential")]
    UpstreamAuthFailed,
    /// The MCP server named by the path is down (its health check fails).
    #[error("the MCP server is unavailable")]
    McpUnavailable,
    /// Response redaction is on and the upstream's response cannot be scanned (a content type
    /// or encoding sluice cannot read, a body too large or not the JSON it claims to be).
    #[error("the upstream's response cannot be scanned")]
    UnscannableResponse,
    /// The in-memory snapshot of keys and credentials could not be refreshed from the store
    /// for `[store] max_stale_secs`: a key revoked since might still pass, so nothing does.
    #[error("the key store cannot be read")]
    StoreUnavailable,
    /// A bug or an unexpected condition inside sluice.
    #[error("internal error")]
    Internal,
}

/// The status and stable code of a reply (its OpenAI error type follows from them:
/// [`crate::error::openai_type`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub code: &'static str,
    /// Whether the downstream connection must be closed after the reply (framing is in doubt or
    /// an unread body is still on the wire).
    pub close: bool,
}

impl Reply {
    const fn new(status: u16, code: &'static str, close: bool) -> Reply {
        Reply {
            status,
            code,
            close,
        }
    }
}

/// The reply for a rejection.
pub fn reply_for(r: &Rejection) -> Reply {
    use inbound::Error as In;
    match r {
        Rejection::Inbound(In::Framing { .. }) => Reply::new(400, "invalid_framing", true),
        Rejection::Inbound(In::HeadersTooLarge { .. })
        | Rejection::Inbound(In::TooManyHeaders { .. }) => {
            Reply::new(431, "headers_too_large", true)
        }
        Rejection::Inbound(In::BadTarget { .. }) => Reply::new(400, "invalid_path", true),
        Rejection::Inbound(In::NotFound) => Reply::new(404, "not_found", true),
        Rejection::Inbound(In::MethodNotAllowed) => Reply::new(405, "method_not_allowed", true),
        Rejection::Inbound(In::BodyTooLarge { .. }) | Rejection::BodyTooLarge { .. } => {
            Reply::new(413, "request_too_large", true)
        }
        Rejection::ClientTimeout => Reply::new(408, "request_timeout", true),
        Rejection::BadBody => Reply::new(400, "invalid_body", true),
        // The body is still unread: close rather than parse it as the next request.
        Rejection::Unauthenticated(_) => Reply::new(401, "invalid_api_key", true),
        Rejection::Unscannable(e) => {
            use crate::redact::BodyError as B;
            match e {
                B::NotJson(_) | B::Corrupt => Reply::new(400, "unscannable_body", true),
                B::UnsupportedType(_) | B::UnsupportedEncoding(_) => {
                    Reply::new(415, "unscannable_body", true)
                }
                B::TooLarge { .. } => Reply::new(413, "request_too_large", true),
            }
        }
        Rejection::AmbiguousJson => Reply::new(400, "ambiguous_json", true),
        Rejection::UnscannableHeader(_) => Reply::new(400, "unscannable_header", true),
        Rejection::Region(crate::residency::Error::Unknown) => {
            Reply::new(400, "invalid_region", true)
        }
        Rejection::Region(crate::residency::Error::NotAllowed { .. }) => {
            Reply::new(403, "permission_denied", true)
        }
        Rejection::RegionUnavailable(_) => Reply::new(503, "region_unavailable", true),
        Rejection::RateLimited { .. } => Reply::new(429, "rate_limited", true),
        Rejection::BudgetExceeded { .. } => Reply::new(429, "budget_exceeded", true),
        Rejection::LimitsUnavailable => Reply::new(503, "limits_unavailable", true),
        Rejection::CredentialUnavailable => Reply::new(503, "credential_unavailable", true),
        Rejection::OriginNotAllowed => Reply::new(403, "origin_not_allowed", false),
        Rejection::UpstreamTimeout => Reply::new(504, "upstream_timeout", true),
        Rejection::UpstreamUnreachable => Reply::new(502, "upstream_unreachable", true),
        Rejection::UpstreamTls => Reply::new(502, "upstream_tls_failed", true),
        Rejection::UpstreamFailed => Reply::new(502, "upstream_error", true),
        Rejection::UnscannableResponse => Reply::new(502, "unscannable_response", true),
        Rejection::UpstreamAuthFailed => Reply::new(502, "upstream_auth_failed", true),
        Rejection::McpUnavailable => Reply::new(503, "mcp_server_unavailable", true),
        Rejection::AuditUnavailable => Reply::new(503, "audit_unavailable", true),
        Rejection::StoreUnavailable => Reply::new(503, "store_unavailable", true),
        Rejection::Internal => Reply::new(500, "internal_error", true),
    }
}

/// The client-facing message: the rejection's own text for 4xx (they carry no internal detail
/// or secret), a generic one for 5xx.
pub fn message_for(r: &Rejection, reply: &Reply) -> String {
    if reply.status >= 500 {
        match r {
            Rejection::UpstreamTimeout => "The upstream did not answer in time.".into(),
            Rejection::UpstreamUnreachable => "The upstream could not be reached.".into(),
            Rejection::UpstreamTls => {
                "The upstream's TLS connection does not meet sluice's policy for it (certificate, version or pin); nothing was sent. See the sluice log.".into()
            }
            Rejection::UpstreamFailed => "The upstream returned an invalid response.".into(),
            Rejection::RegionUnavailable(r) => format!(
                "No healthy upstream in region {r}; the request was not sent to any other region."
            ),
            Rejection::McpUnavailable => {
                "The MCP server is unavailable (it fails its health check).".into()
            }
            Rejection::UnscannableResponse => {
                "Response redaction is on and the upstream's response cannot be scanned (its content type or encoding); it was not passed on.".into()
            }
            Rejection::LimitsUnavailable => {
                "The shared rate limit counters (Redis) cannot be reached and sluice is set to refuse limited requests meanwhile (fleet.on_redis_error = \"deny\"); retry shortly.".into()
            }
            Rejection::StoreUnavailable => {
                "The key store cannot be read, so revocations may be missed; requests are refused until it can. See the sluice log.".into()
            }
            Rejection::AuditUnavailable => {
                "The audit log cannot be written (disk full?); requests are refused until it can. See the sluice log.".into()
            }
            Rejection::UpstreamAuthFailed => {
                "The upstream refused sluice's credential for it. An OAuth credential is getting a new token: retry shortly. Otherwise an operator must set the credential again.".into()
            }
            Rejection::CredentialUnavailable => {
                "The credential for the upstream is missing, unreadable or expired (or, for an OAuth credential, no valid token could be obtained); an operator must set it with `sluice credentials set` or `sluice credentials set-oauth`. See the sluice log.".into()
            }
            _ => "Internal error.".into(),
        }
    } else if let Rejection::Unauthenticated(_) = r {
        "Invalid API key. Send your sluice API key as `Authorization: Bearer <key>`.".into()
    } else {
        let mut m = r.to_string();
        if let Some(first) = m.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        m.push('.');
        m
    }
}

/// The pingora error type of a response that cannot be scanned (see
/// [`Rejection::UnscannableResponse`]).
pub const UNSCANNABLE: &str = "unscannable_response";

/// The pingora error type of an upstream's 401 to sluice's credential (see
/// [`Rejection::UpstreamAuthFailed`]).
pub const UPSTREAM_AUTH: &str = "upstream_auth_failed";

/// What sluice logs of a pingora error: its type only. pingora's messages and contexts can
/// quote raw request bytes (a header block that failed to parse, with its `Authorization`).
pub fn log_kind(e: &pingora_error::Error) -> &'static str {
    e.etype().as_str()
}

/// The OpenAI-shaped JSON body.
pub fn body_for(r: &Rejection, request_id: &str) -> Vec<u8> {
    let reply = reply_for(r);
    crate::error::body_bytes(
        reply.status,
        reply.code,
        &message_for(r, &reply),
        request_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_openai_shaped_and_5xx_are_generic() {
        let b = body_for(&Rejection::UpstreamTimeout, "rid-1");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["code"], "upstream_timeout");
        assert_eq!(v["error"]["type"], "server_error");
        assert_eq!(v["error"]["request_id"], "rid-1");
        assert!(v["error"]["param"].is_null());
        let b = body_for(&Rejection::BodyTooLarge { limit: 10 }, "r");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["message"], "Request body exceeds 10 bytes.");
        assert_eq!(
            reply_for(&Rejection::BodyTooLarge { limit: 10 }).status,
            413
        );
    }

    #[test]
    fn pingora_errors_are_logged_without_their_message() {
        let e = pingora_error::Error::explain(
            pingora_error::ErrorType::InvalidHTTPHeader,
            "buf: POST / HTTP/1.1\r\nAuthorization: Bearer sk-sluice-canary\r\n",
        );
        assert!(
            e.to_string().contains("canary"),
            "the premise: pingora quotes the head"
        );
        assert!(!log_kind(&e).contains("canary"));
        assert_eq!(log_kind(&e), "InvalidHTTPHeader");
    }

    #[test]
    fn every_authentication_failure_reads_the_same() {
        use crate::auth::Error as A;
        let bodies: Vec<Vec<u8>> = [
            A::Missing,
            A::Malformed,
            A::Ambiguous,
            A::Misplaced,
            A::Unknown,
            A::Revoked,
            A::Expired,
        ]
        .into_iter()
        .map(|e| body_for(&Rejection::Unauthenticated(e), "r"))
        .collect();
        assert!(bodies.windows(2).all(|w| w[0] == w[1]));
        let v: serde_json::Value = serde_json::from_slice(&bodies[0]).unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert_eq!(
            reply_for(&Rejection::Unauthenticated(A::Missing)).status,
            401
        );
    }
}
