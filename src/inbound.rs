//! The data plane's gate for request heads: framing, header bounds, method and target checks.
//! Plain Rust over bytes (no pingora types), so every smuggling and traversal rule is unit
//! tested here. It decides from the *raw* header block, because a parser that silently "fixes"
//! a message (dropping Content-Length when Transfer-Encoding is present, for instance) would
//! hide exactly the ambiguity a front proxy must refuse.

/// Why a request head is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Content-Length with Transfer-Encoding, several or invalid Content-Length values, a
    /// Transfer-Encoding other than `chunked`, or an obs-fold line.
    #[error("ambiguous or invalid message framing: {reason}")]
    Framing { reason: &'static str },
    /// The header block is larger than `limits.max_header_bytes`.
    #[error("request headers exceed {limit} bytes")]
    HeadersTooLarge { limit: usize },
    /// More header lines than `limits.max_headers`.
    #[error("more than {limit} request headers")]
    TooManyHeaders { limit: usize },
    /// Absolute-form or authority-form target, dot segments, encoded separators, control bytes.
    #[error("invalid request target: {reason}")]
    BadTarget { reason: &'static str },
    /// Not under `/v1/`.
    #[error("no such route")]
    NotFound,
    /// A method the data plane does not forward.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Content-Length announces more than `limits.max_body_bytes`.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
}

/// The OpenAI API family a path belongs to; used as a bounded metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Models,
    /// `/mcp/<server>`: the MCP gateway.
    Mcp,
    Other,
}

impl Route {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::ChatCompletions => "chat_completions",
            Route::Completions => "completions",
            Route::Embeddings => "embeddings",
            Route::Responses => "responses",
            Route::Models => "models",
            Route::Mcp => "mcp",
            Route::Other => "other",
        }
    }

    fn of(path: &str) -> Route {
        if path.starts_with("/mcp/") {
            return Route::Mcp;
        }
        let rest = path.strip_prefix("/v1/").unwrap_or("");
        let first = rest.split('/').next().unwrap_or("");
        match first {
            "chat" if rest.starts_with("chat/completions") => Route::ChatCompletions,
            "completions" => Route::Completions,
            "embeddings" => Route::Embeddings,
            "responses" => Route::Responses,
            "models" => Route::Models,
            _ => Route::Other,
        }
    }
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no Content-Length, no Transfer-Encoding).
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request head that passed the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub route: Route,
    pub framing: Framing,
}

/// The bounds the gate enforces.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: usize,
}

/// Methods the data plane forwards. OPTIONS is answered by sluice itself (CORS preflight).
const METHODS: &[&str] = &["GET", "POST", "DELETE", "HEAD"];

/// Check a request head. `raw_head` is the header block as received, starting with the request
/// line; `target` is the request target as received.
pub fn check(method: &str, target: &[u8], raw_head: &[u8], bounds: &Bounds) -> Result<Head, Error> {
    let framing = check_headers(raw_head, bounds)?;
    if !METHODS.contains(&method) {
        return Err(Error::MethodNotAllowed);
    }
    let path = check_target(target)?;
    if let Framing::Length(n) = framing {
        if n > bounds.max_body_bytes as u64 {
            return Err(Error::BodyTooLarge {
                limit: bounds.max_body_bytes,
            });
        }
    }
    Ok(Head {
        route: Route::of(path),
        framing,
    })
}

fn check_headers(raw_head: &[u8], bounds: &Bounds) -> Result<Framing, Error> {
    if raw_head.len() > bounds.max_header_bytes {
        return Err(Error::HeadersTooLarge {
            limit: bounds.max_header_bytes,
        });
    }
    let mut lines = raw_head.split(|&b| b == b'\n');
    lines.next(); // request line
    let mut count = 0usize;
    let mut content_length: Option<u64> = None;
    let mut te_seen = false;
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue; // the terminating blank line
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(Error::Framing {
                reason: "obsolete line folding",
            });
        }
        count += 1;
        if count > bounds.max_headers {
            return Err(Error::TooManyHeaders {
                limit: bounds.max_headers,
            });
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(Error::Framing {
                reason: "header line without a colon",
            });
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return Err(Error::Framing {
                reason: "invalid header name",
            });
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if content_length.is_some() {
                return Err(Error::Framing {
                    reason: "more than one Content-Length",
                });
            }
            content_length = Some(parse_length(value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if te_seen {
                return Err(Error::Framing {
                    reason: "more than one Transfer-Encoding",
                });
            }
            te_seen = true;
            if !value.eq_ignore_ascii_case(b"chunked") {
                return Err(Error::Framing {
                    reason: "Transfer-Encoding other than chunked",
                });
            }
        }
    }
    match (content_length, te_seen) {
        (Some(_), true) => Err(Error::Framing {
            reason: "both Content-Length and Transfer-Encoding",
        }),
        (Some(n), false) => Ok(Framing::Length(n)),
        (None, true) => Ok(Framing::Chunked),
        (None, false) => Ok(Framing::None),
    }
}

fn parse_length(v: &[u8]) -> Result<u64, Error> {
    const BAD: Error = Error::Framing {
        reason: "invalid Content-Length",
    };
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return Err(BAD);
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(BAD)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// Check the target and return its path (without the query).
fn check_target(target: &[u8]) -> Result<&str, Error> {
    let target = std::str::from_utf8(target).map_err(|_| Error::BadTarget {
        reason: "not UTF-8",
    })?;
    if !target.starts_with('/') {
        return Err(Error::BadTarget {
            reason: "only origin-form targets (/v1/...) are accepted",
        });
    }
    if target
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'\\' || b == b'#' || b >= 0x80)
    {
        return Err(Error::BadTarget {
            reason: "forbidden character",
        });
    }
    let path = target.split('?').next().unwrap_or("");
    let lower = path.to_ascii_lowercase();
    for enc in ["%2e", "%2f", "%5c", "%00", "%25"] {
        if lower.contains(enc) {
            return Err(Error::BadTarget {
                reason: "encoded dot, slash, backslash or percent in path",
            });
        }
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    if segments
        .iter()
        .enumerate()
        .any(|(i, seg)| *seg == "." || *seg == ".." || (seg.is_empty() && i < last))
    {
        return Err(Error::BadTarget {
            reason: "dot or empty path segment",
        });
    }
    if mcp_server(path).is_some() {
        return Ok(path);
    }
    if !path.starts_with("/v1/") || path.len() == 4 {
        return Err(Error::NotFound);
    }
    Ok(path)
}

/// The MCP server named by a `/mcp/<name>` path (`[a-z0-9-]`, nothing after it).
pub fn mcp_server(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/mcp/")?;
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then_some(name)
}

/// The request id to use: a well-formed incoming `X-Request-Id` (1-128 bytes of
/// `[A-Za-z0-9._:-]`) is kept so ids propagate across services; anything else is replaced by a
/// fresh UUIDv7, so a client cannot inject log-breaking bytes.
pub fn request_id(incoming: Option<&[u8]>) -> String {
    match incoming {
        Some(v)
            if !v.is_empty()
                && v.len() <= 128
                && v.iter().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
                }) =>
        {
            // Checked ASCII above.
            String::from_utf8_lossy(v).into_owned()
        }
        _ => uuid::Uuid::now_v7().to_string(),
    }
}

/// Whether a browser `Origin` is in `cors.allow_origins` (exact, case-insensitive match).
/// With no allowed origins every browser origin is refused, which also stops web pages from
/// driving the localhost sidecar (CSRF, DNS rebinding).
pub fn is_allowed_origin(origin: &[u8], allowed: &[String]) -> bool {
    allowed
        .iter()
        .any(|a| a.as_bytes().eq_ignore_ascii_case(origin))
}

/// Longest `model` sluice keeps (for timeouts, logs and audit records), in characters; real
/// model names are far shorter, and a client must not grow a record with a 5 MB "model".
pub const MAX_MODEL_CHARS: usize = 128;

/// The `model` of a JSON request body, if the body is a JSON object with a string `model`
/// (cut to [`MAX_MODEL_CHARS`]). The whole body is validated as JSON while looking; other
/// fields are skipped, not copied.
pub fn model(body: &[u8]) -> Option<String> {
    peek(body).ok()?.model
}

/// What the request path reads of a JSON request body, in one pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Peeked {
    /// Its `model` (see [`model`]).
    pub model: Option<String>,
    /// The most output tokens it may use: the largest of `max_completion_tokens`, `max_tokens`
    /// (chat and completions) and `max_output_tokens` (Responses API) that is a positive
    /// number (or a string holding one; rounded up), times `n` (read the same way, at most
    /// [`MAX_CHOICES`]); at most [`MAX_OUTPUT_TOKENS`]. None given: `None`.
    pub max_output: Option<u64>,
    /// It asks for a stream (`"stream": true`): a client reads the answer as events.
    pub stream: bool,
    /// The answers it asks for (`n`, read as `max_output` reads it; at most [`MAX_CHOICES`]);
    /// 1 when none is given.
    pub choices: u64,
}

/// The most output tokens believed of a request (its reservation's bound).
pub const MAX_OUTPUT_TOKENS: u64 = 1_000_000;

/// The most answers (`n`) a request's reservation counts.
pub const MAX_CHOICES: u64 = 128;

/// The top-level members [`Peeked`] is read from.
const PEEKED_MEMBERS: [&str; 6] = [
    "model",
    "max_completion_tokens",
    "max_tokens",
    "max_output_tokens",
    "n",
    "stream",
];

/// Read [`Peeked`] from a JSON request body in one pass that also refuses any object naming a
/// member twice (see [`crate::json::check_unique_top`]).
pub fn peek(body: &[u8]) -> Result<Peeked, crate::json::Error> {
    crate::json::check_unique_top(body, PEEKED_MEMBERS).map(|top| Peeked::from_members(&top))
}

impl Peeked {
    /// From the values of [`PEEKED_MEMBERS`], in that order.
    fn from_members(top: &[Option<serde_json::Value>; 6]) -> Peeked {
        let [model, completion, tokens, output, choices, stream] = top;
        // A cap of 0 is "unset" to some upstreams: only positive values count. Read as the most
        // lenient upstream reads it (pydantic's lax mode takes `1e5`, `100000.0` and
        // `"100000"`): a reservation bounded by less would let the answer overshoot it.
        let n = |v: &Option<serde_json::Value>| -> Option<u64> {
            let f = match v.as_ref()? {
                serde_json::Value::Number(x) => match x.as_u64() {
                    Some(u) => return (u > 0).then_some(u),
                    None => x.as_f64()?,
                },
                serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
                _ => return None,
            };
            (f.is_finite() && f > 0.0).then(|| f.ceil().min(u64::MAX as f64) as u64)
        };
        // The largest cap (upstreams read different ones), times the answers asked for.
        let cap = [n(completion), n(tokens), n(output)]
            .into_iter()
            .flatten()
            .max();
        let choices = n(choices).unwrap_or(1).min(MAX_CHOICES);
        Peeked {
            model: model
                .as_ref()
                .and_then(serde_json::Value::as_str)
                .map(|m| crate::audit::cap(m, MAX_MODEL_CHARS).to_string()),
            max_output: cap.map(|c| c.saturating_mul(choices).min(MAX_OUTPUT_TOKENS)),
            stream: stream.as_ref().and_then(serde_json::Value::as_bool) == Some(true),
            choices,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds {
        max_header_bytes: 4096,
        max_headers: 10,
        max_body_bytes: 1000,
    };

    fn head(extra: &str) -> Vec<u8> {
        format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{extra}\r\n").into_bytes()
    }

    fn chk(extra: &str) -> Result<Head, Error> {
        check("POST", b"/v1/chat/completions", &head(extra), &B)
    }

    #[test]
    fn the_output_cap_is_read_as_the_most_lenient_upstream_reads_it() {
        let cap = |body: &str| peek(body.as_bytes()).unwrap().max_output;
        assert_eq!(cap(r#"{"max_tokens":100}"#), Some(100));
        for body in [
            r#"{"max_tokens":1e5}"#,
            r#"{"max_tokens":100000.0}"#,
            r#"{"max_tokens":" 100000"}"#,
            r#"{"max_tokens":99999.5}"#,
            r#"{"max_tokens":10,"max_completion_tokens":"100000"}"#,
        ] {
            assert_eq!(cap(body), Some(100_000), "{body}");
        }
        assert_eq!(cap(r#"{"max_tokens":100,"n":8.0}"#), Some(800));
        assert_eq!(cap(r#"{"max_tokens":100,"n":"3"}"#), Some(300));
        for none in [
            r#"{"max_tokens":0}"#,
            r#"{"max_tokens":-5}"#,
            r#"{"max_tokens":"many"}"#,
            r#"{"max_tokens":null}"#,
            r#"{"max_tokens":[100]}"#,
        ] {
            assert_eq!(cap(none), None, "{none}");
        }
        assert_eq!(cap(r#"{"max_tokens":1e300}"#), Some(MAX_OUTPUT_TOKENS));
    }

    #[test]
    fn plain_requests_pass_with_their_framing() {
        assert_eq!(chk("").unwrap().framing, Framing::None);
        assert_eq!(
            chk("Content-Length: 12\r\n").unwrap().framing,
            Framing::Length(12)
        );
        assert_eq!(
            chk("transfer-encoding:  Chunked \r\n").unwrap().framing,
            Framing::Chunked
        );
        assert_eq!(chk("").unwrap().route, Route::ChatCompletions);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for extra in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: \r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: xchunked\r\n",
            "X-A: b\r\n c\r\n",
            "Bad Name: x\r\n",
        ] {
            assert!(
                matches!(chk(extra), Err(Error::Framing { .. })),
                "{extra:?}"
            );
        }
    }

    #[test]
    fn header_bounds() {
        let many: String = (0..11).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(chk(&many), Err(Error::TooManyHeaders { limit: 10 }));
        let big = format!("X-Big: {}\r\n", "a".repeat(5000));
        assert_eq!(chk(&big), Err(Error::HeadersTooLarge { limit: 4096 }));
    }

    #[test]
    fn body_length_over_limit() {
        assert_eq!(
            chk("Content-Length: 1001\r\n"),
            Err(Error::BodyTooLarge { limit: 1000 })
        );
        assert!(chk("Content-Length: 1000\r\n").is_ok());
    }

    #[test]
    fn targets() {
        let t = |t: &str| check("GET", t.as_bytes(), &head(""), &B);
        assert_eq!(t("/v1/models").unwrap().route, Route::Models);
        assert_eq!(t("/v1/embeddings?x=1").unwrap().route, Route::Embeddings);
        assert_eq!(t("/v1/responses/abc").unwrap().route, Route::Responses);
        assert_eq!(t("/v1/files").unwrap().route, Route::Other);
        assert_eq!(t("/mcp/github-tools").unwrap().route, Route::Mcp);
        assert_eq!(t("/mcp/tools?x=1").unwrap().route, Route::Mcp);
        for nf in ["/mcp/", "/mcp/Tools", "/mcp/a/b", "/mcp", "/mcp/a_b"] {
            assert!(t(nf).is_err(), "{nf}");
        }
        for bad in [
            "http://evil/v1/models",
            "//evil/v1/models",
            "/v1/../api/orgs",
            "/v1/./models",
            "/v1/%2e%2e/api",
            "/v1/%2E%2E/api",
            "/v1%2fmodels",
            "/v1/models%5c..",
            "/v1/models%00",
            "/v1/%252e%252e/api",
            "/v1/a\\b",
            "/v1//models",
            "*",
            "/v1/m#frag",
        ] {
            assert!(matches!(t(bad), Err(Error::BadTarget { .. })), "{bad}");
        }
        for nf in [
            "/",
            "/v1",
            "/v1/",
            "/api/orgs",
            "/healthz",
            "/metrics",
            "/V1/models",
            "/v2/x",
        ] {
            let r = t(nf);
            assert!(
                matches!(r, Err(Error::NotFound) | Err(Error::BadTarget { .. })),
                "{nf}: {r:?}"
            );
            assert!(r.is_err(), "{nf}");
        }
    }

    #[test]
    fn request_ids() {
        assert_eq!(request_id(Some(b"abc-123_x.y:z")), "abc-123_x.y:z");
        for bad in [&b""[..], b"a b", b"a\r\nX: y", &[b'a'; 129][..], b"\xff"] {
            let id = request_id(Some(bad));
            assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
        }
        assert_ne!(request_id(None), request_id(None));
    }

    #[test]
    fn models_and_origins() {
        assert_eq!(
            model(br#"{"messages":[{"a":1}],"model":"o1-mini"}"#).as_deref(),
            Some("o1-mini")
        );
        assert_eq!(
            model(br#"{"model":"gpt-\u0034o"}"#).as_deref(),
            Some("gpt-4o")
        );
        assert_eq!(model(br#"{"model":5}"#), None);
        let huge = format!(r#"{{"model":"{}"}}"#, "é".repeat(100_000));
        assert_eq!(
            model(huge.as_bytes()).unwrap().chars().count(),
            MAX_MODEL_CHARS
        );
        assert_eq!(model(b"not json"), None);
        assert!(is_allowed_origin(
            b"https://App.example.com",
            &["https://app.example.com".into()]
        ));
        assert!(!is_allowed_origin(
            b"https://evil.com",
            &["https://app.example.com".into()]
        ));
        assert!(!is_allowed_origin(b"null", &[]));
    }

    #[test]
    fn methods() {
        for m in ["PUT", "PATCH", "CONNECT", "TRACE", "OPTIONS"] {
            assert_eq!(
                check(m, b"/v1/models", &head(""), &B),
                Err(Error::MethodNotAllowed),
                "{m}"
            );
        }
    }
}
