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

/// A stable code sluice answered with: the data plane's table (the MCP gateway's own refusals
/// are [`crate::mcp::Refusal`]). Codes are API: never rename one (README "Error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The request's framing is ambiguous or invalid (400).
    InvalidFraming,
    /// Too many or too large headers (431).
    HeadersTooLarge,
    /// A request target sluice does not take (400).
    InvalidPath,
    /// No such route (404).
    NotFound,
    /// A method the route does not take (405).
    MethodNotAllowed,
    /// The body is over `limits.max_body_bytes` (413).
    RequestTooLarge,
    /// The request did not arrive within `limits.client_timeout` (408).
    RequestTimeout,
    /// The body could not be read (400).
    InvalidBody,
    /// No usable sluice API key (401).
    InvalidApiKey,
    /// A body redaction cannot read (400, 415).
    UnscannableBody,
    /// A JSON member named twice, or in another case (400).
    AmbiguousJson,
    /// A header value redaction cannot read (400).
    UnscannableHeader,
    /// An unknown `X-Sluice-Region` (400).
    InvalidRegion,
    /// A region the key or org is pinned away from (403).
    PermissionDenied,
    /// No healthy upstream in the region (503).
    RegionUnavailable,
    /// A rate limit is reached (429).
    RateLimited,
    /// A token budget is spent (429).
    BudgetExceeded,
    /// The fleet's counters cannot be reached (503).
    LimitsUnavailable,
    /// The upstream credential is unavailable (503).
    CredentialUnavailable,
    /// An origin not in `cors.allow_origins` (403).
    OriginNotAllowed,
    /// The upstream did not answer in time (504).
    UpstreamTimeout,
    /// The upstream could not be connected to (502).
    UpstreamUnreachable,
    /// The upstream's TLS does not meet its policy (502).
    UpstreamTlsFailed,
    /// The upstream's answer is not valid HTTP, or it reset (502).
    UpstreamError,
    /// Response redaction cannot read the answer (502).
    UnscannableResponse,
    /// The upstream refused sluice's credential (502).
    UpstreamAuthFailed,
    /// The MCP server fails its health check (503).
    McpServerUnavailable,
    /// The audit log cannot be written (503).
    AuditUnavailable,
    /// The key store cannot be read (503).
    StoreUnavailable,
    /// A bug or an unexpected condition (500).
    InternalError,
    /// The MCP gateway refused a JSON-RPC message.
    Mcp(crate::mcp::Refusal),
}

impl Code {
    /// The code as replies, logs, metrics and audit records spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::InvalidFraming => "invalid_framing",
            Code::HeadersTooLarge => "headers_too_large",
            Code::InvalidPath => "invalid_path",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::RequestTooLarge => "request_too_large",
            Code::RequestTimeout => "request_timeout",
            Code::InvalidBody => "invalid_body",
            Code::InvalidApiKey => "invalid_api_key",
            Code::UnscannableBody => "unscannable_body",
            Code::AmbiguousJson => "ambiguous_json",
            Code::UnscannableHeader => "unscannable_header",
            Code::InvalidRegion => "invalid_region",
            Code::PermissionDenied => "permission_denied",
            Code::RegionUnavailable => "region_unavailable",
            Code::RateLimited => "rate_limited",
            Code::BudgetExceeded => "budget_exceeded",
            Code::LimitsUnavailable => "limits_unavailable",
            Code::CredentialUnavailable => "credential_unavailable",
            Code::OriginNotAllowed => "origin_not_allowed",
            Code::UpstreamTimeout => "upstream_timeout",
            Code::UpstreamUnreachable => "upstream_unreachable",
            Code::UpstreamTlsFailed => "upstream_tls_failed",
            Code::UpstreamError => "upstream_error",
            Code::UnscannableResponse => "unscannable_response",
            Code::UpstreamAuthFailed => "upstream_auth_failed",
            Code::McpServerUnavailable => "mcp_server_unavailable",
            Code::AuditUnavailable => "audit_unavailable",
            Code::StoreUnavailable => "store_unavailable",
            Code::InternalError => "internal_error",
            Code::Mcp(r) => r.as_str(),
        }
    }
}

/// Why, when the code alone does not say: the `reason` of the log line and of some metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Which authentication check failed (`missing`, `unknown`, `revoked`, ...).
    Auth(crate::auth::Error),
    /// The request body could not be scanned for PII.
    PiiScan,
    /// The answer could not be scanned (response redaction).
    ResponseScan,
    /// The answer was too large to be scanned whole (response redaction).
    ResponseTooLarge,
    /// The upstream's TLS version is below its minimum, or it has no TLS policy.
    TlsVersion,
    /// The upstream's certificate matches none of its pins.
    TlsPin,
    /// The TLS handshake failed (a certificate that does not verify, ...).
    TlsHandshake,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Auth(e) => e.reason(),
            Reason::PiiScan => "pii_scan",
            Reason::ResponseScan => "response_scan",
            Reason::ResponseTooLarge => "response_too_large",
            Reason::TlsVersion => "tls_version",
            Reason::TlsPin => "tls_pin",
            Reason::TlsHandshake => "tls_handshake",
        }
    }
}

/// The status and stable code of a reply (its OpenAI error type follows from them:
/// [`crate::error::openai_type`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub code: Code,
    /// Whether the downstream connection must be closed after the reply (framing is in doubt or
    /// an unread body is still on the wire).
    pub close: bool,
}

impl Reply {
    const fn new(status: u16, code: Code, close: bool) -> Reply {
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
        Rejection::Inbound(In::Framing { .. }) => Reply::new(400, Code::InvalidFraming, true),
        Rejection::Inbound(In::HeadersTooLarge { .. })
        | Rejection::Inbound(In::TooManyHeaders { .. }) => {
            Reply::new(431, Code::HeadersTooLarge, true)
        }
        Rejection::Inbound(In::BadTarget { .. }) => Reply::new(400, Code::InvalidPath, true),
        Rejection::Inbound(In::NotFound) => Reply::new(404, Code::NotFound, true),
        Rejection::Inbound(In::MethodNotAllowed) => Reply::new(405, Code::MethodNotAllowed, true),
        Rejection::Inbound(In::BodyTooLarge { .. }) | Rejection::BodyTooLarge { .. } => {
            Reply::new(413, Code::RequestTooLarge, true)
        }
        Rejection::ClientTimeout => Reply::new(408, Code::RequestTimeout, true),
        Rejection::BadBody => Reply::new(400, Code::InvalidBody, true),
        // The body is still unread: close rather than parse it as the next request.
        Rejection::Unauthenticated(_) => Reply::new(401, Code::InvalidApiKey, true),
        Rejection::Unscannable(e) => {
            use crate::redact::BodyError as B;
            match e {
                B::NotJson(_) | B::Corrupt => Reply::new(400, Code::UnscannableBody, true),
                B::UnsupportedType(_) | B::UnsupportedEncoding(_) => {
                    Reply::new(415, Code::UnscannableBody, true)
                }
                B::TooLarge { .. } => Reply::new(413, Code::RequestTooLarge, true),
            }
        }
        Rejection::AmbiguousJson => Reply::new(400, Code::AmbiguousJson, true),
        Rejection::UnscannableHeader(_) => Reply::new(400, Code::UnscannableHeader, true),
        Rejection::Region(crate::residency::Error::Unknown) => {
            Reply::new(400, Code::InvalidRegion, true)
        }
        Rejection::Region(crate::residency::Error::NotAllowed { .. }) => {
            Reply::new(403, Code::PermissionDenied, true)
        }
        Rejection::RegionUnavailable(_) => Reply::new(503, Code::RegionUnavailable, true),
        Rejection::RateLimited { .. } => Reply::new(429, Code::RateLimited, true),
        Rejection::BudgetExceeded { .. } => Reply::new(429, Code::BudgetExceeded, true),
        Rejection::LimitsUnavailable => Reply::new(503, Code::LimitsUnavailable, true),
        Rejection::CredentialUnavailable => Reply::new(503, Code::CredentialUnavailable, true),
        Rejection::OriginNotAllowed => Reply::new(403, Code::OriginNotAllowed, false),
        Rejection::UpstreamTimeout => Reply::new(504, Code::UpstreamTimeout, true),
        Rejection::UpstreamUnreachable => Reply::new(502, Code::UpstreamUnreachable, true),
        Rejection::UpstreamTls => Reply::new(502, Code::UpstreamTlsFailed, true),
        Rejection::UpstreamFailed => Reply::new(502, Code::UpstreamError, true),
        Rejection::UnscannableResponse => Reply::new(502, Code::UnscannableResponse, true),
        Rejection::UpstreamAuthFailed => Reply::new(502, Code::UpstreamAuthFailed, true),
        Rejection::McpUnavailable => Reply::new(503, Code::McpServerUnavailable, true),
        Rejection::AuditUnavailable => Reply::new(503, Code::AuditUnavailable, true),
        Rejection::StoreUnavailable => Reply::new(503, Code::StoreUnavailable, true),
        Rejection::Internal => Reply::new(500, Code::InternalError, true),
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
pub const UNSCANNABLE: &str = Code::UnscannableResponse.as_str();

/// The pingora error type of an upstream's 401 to sluice's credential (see
/// [`Rejection::UpstreamAuthFailed`]).
pub const UPSTREAM_AUTH: &str = Code::UpstreamAuthFailed.as_str();

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
        reply.code.as_str(),
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
    fn every_code_is_documented_and_spelled_once() {
        use crate::mcp::Refusal;
        let all = [
            Code::InvalidFraming,
            Code::HeadersTooLarge,
            Code::InvalidPath,
            Code::NotFound,
            Code::MethodNotAllowed,
            Code::RequestTooLarge,
            Code::RequestTimeout,
            Code::InvalidBody,
            Code::InvalidApiKey,
            Code::UnscannableBody,
            Code::AmbiguousJson,
            Code::UnscannableHeader,
            Code::InvalidRegion,
            Code::PermissionDenied,
            Code::RegionUnavailable,
            Code::RateLimited,
            Code::BudgetExceeded,
            Code::LimitsUnavailable,
            Code::CredentialUnavailable,
            Code::OriginNotAllowed,
            Code::UpstreamTimeout,
            Code::UpstreamUnreachable,
            Code::UpstreamTlsFailed,
            Code::UpstreamError,
            Code::UnscannableResponse,
            Code::UpstreamAuthFailed,
            Code::McpServerUnavailable,
            Code::AuditUnavailable,
            Code::StoreUnavailable,
            Code::InternalError,
            Code::Mcp(Refusal::InvalidJsonRpc),
            Code::Mcp(Refusal::AmbiguousJson),
            Code::Mcp(Refusal::ToolNotAllowed),
            Code::Mcp(Refusal::MethodNotAllowed),
        ];
        let readme = include_str!("../../README.md");
        let mut seen = std::collections::HashMap::new();
        for c in all {
            let s = c.as_str();
            assert!(
                readme.contains(&format!("`{s}`")),
                "{s} is not in README.md"
            );
            // One spelling per meaning: only the MCP gateway's ambiguous JSON shares a code.
            if let Some(other) = seen.insert(s, c) {
                assert_eq!(
                    (other, c),
                    (Code::AmbiguousJson, Code::Mcp(Refusal::AmbiguousJson))
                );
            }
        }
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
