//! Redaction of PII and secrets: emails, US SSNs, phone numbers and payment cards are replaced
//! by `[REDACTED_EMAIL]`, `[REDACTED_SSN]`, `[REDACTED_PHONE]` and `[REDACTED_CARD]`, API keys,
//! tokens and private keys (see `secret`) by `[REDACTED_SECRET]`; what is looked for is the
//! caller's [`Scan`] (a key's PII and secrets policies). Plain Rust, no pingora. [`Engine::redact_text`] works on text, [`Engine::redact_json`] on a JSON
//! document (every string, escapes decoded), and [`Engine::redact_body`] on a request body as
//! received (content type and encoding checked, compressed bodies decoded within a bound).
//! Results carry counts per entity, never the values found. Anything that cannot be scanned is
//! an error: callers refuse the request rather than forward it unscanned.

#[cfg(test)]
mod corpus;
mod fold;
mod json;
mod secret;
pub mod sse;
pub mod stream;
mod text;

use std::io::Read;

pub use json::{Invalid, MAX_DEPTH};

/// A kind of PII.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    Email,
    Ssn,
    Phone,
    Card,
    Secret,
}

impl Entity {
    /// Every entity, in reporting order.
    pub const ALL: [Entity; 5] = [
        Entity::Email,
        Entity::Ssn,
        Entity::Phone,
        Entity::Card,
        Entity::Secret,
    ];

    /// The label in metrics and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Email => "email",
            Entity::Ssn => "ssn",
            Entity::Phone => "phone",
            Entity::Card => "card",
            Entity::Secret => "secret",
        }
    }

    /// The replacement text.
    pub fn token(self) -> &'static str {
        match self {
            Entity::Email => "[REDACTED_EMAIL]",
            Entity::Ssn => "[REDACTED_SSN]",
            Entity::Phone => "[REDACTED_PHONE]",
            Entity::Card => "[REDACTED_CARD]",
            Entity::Secret => "[REDACTED_SECRET]",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How many of each entity were replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts([u32; 5]);

impl Counts {
    pub fn add(&mut self, e: Entity) {
        self.0[e.index()] += 1;
    }
    pub fn get(&self, e: Entity) -> u32 {
        self.0[e.index()]
    }
    pub fn merge(&mut self, other: &Counts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
    pub fn total(&self) -> u32 {
        self.0.iter().sum()
    }
    /// `email=1,card=2` (entities with a non-zero count, in reporting order); "" when none.
    pub fn header_value(&self) -> String {
        Entity::ALL
            .iter()
            .filter(|e| self.get(**e) > 0)
            .map(|e| format!("{}={}", e.as_str(), self.get(*e)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl serde::Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(Entity::ALL.len()))?;
        for e in Entity::ALL {
            m.serialize_entry(e.as_str(), &self.get(e))?;
        }
        m.end()
    }
}

/// `text` with the tokens' brackets percent-escaped, as a query string needs them.
fn escape_tokens(text: &str) -> String {
    let mut out = text.to_string();
    for e in Entity::ALL {
        let t = e.token();
        if out.contains(t) {
            out = out.replace(t, &format!("%5B{}%5D", &t[1..t.len() - 1]));
        }
    }
    out
}

/// Whether `text` holds a secret by the secret rules alone (a provider's key or token, a JWT,
/// a private key, a URL's password): for values that must never be one, such as a
/// credential's name. The rules are compiled on first use.
pub fn holds_a_secret(text: &str) -> bool {
    static RULES: std::sync::OnceLock<secret::Rules> = std::sync::OnceLock::new();
    let mut found = Vec::new();
    RULES.get_or_init(secret::Rules::new).find(text, &mut found);
    !found.is_empty()
}

/// What to look for: PII (emails, SSNs, phones, cards), secrets, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    pub pii: bool,
    pub secrets: bool,
}

impl Scan {
    /// Everything.
    pub const ALL: Scan = Scan {
        pii: true,
        secrets: true,
    };
    /// PII only (no secrets).
    pub const PII: Scan = Scan {
        pii: true,
        secrets: false,
    };
    /// Whether anything is looked for at all.
    pub fn any(self) -> bool {
        self.pii || self.secrets
    }
}

/// Why a body cannot be scanned. Messages carry no body content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not valid JSON (or not UTF-8) on a JSON endpoint.
    #[error("the body is not valid JSON, so it cannot be scanned for PII ({0})")]
    NotJson(String),
    /// A content type sluice cannot scan.
    #[error("content type {0:?} cannot be scanned for PII; send application/json")]
    UnsupportedType(String),
    /// A content encoding sluice cannot decode.
    #[error("content encoding {0:?} cannot be scanned for PII; send identity, gzip or deflate")]
    UnsupportedEncoding(String),
    /// The compressed body decodes to more than the limit.
    #[error("the body decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    /// The compressed body is corrupt.
    #[error("the body could not be decompressed")]
    Corrupt,
}

/// The outcome of redacting a body.
#[derive(Debug)]
pub struct Redacted {
    /// The body to forward when it differs from the one received (rewritten, or decoded from a
    /// content encoding); `None` to forward the original bytes.
    pub body: Option<Vec<u8>>,
    /// The body was decoded: the `Content-Encoding` header must be dropped.
    pub decoded: bool,
    pub counts: Counts,
}

/// The compiled patterns. Build once at startup and share; clones share the patterns.
#[derive(Default, Clone)]
pub struct Engine {
    patterns: std::sync::Arc<text::Patterns>,
}

impl Engine {
    pub fn new() -> Engine {
        Engine {
            patterns: std::sync::Arc::new(text::Patterns::new()),
        }
    }

    /// Redact text. `None` when nothing was found (nothing allocated).
    pub fn redact_text(&self, text: &str, scan: Scan, counts: &mut Counts) -> Option<String> {
        text::redact(&self.patterns, text, scan, counts)
    }

    /// Redact every string of a JSON document. `Ok(None)`: valid and unchanged.
    pub fn redact_json(
        &self,
        doc: &str,
        scan: Scan,
        counts: &mut Counts,
    ) -> Result<Option<String>, Invalid> {
        json::redact(&self.patterns, doc, scan, counts)
    }

    /// A streaming redactor over this engine (see [`stream`]).
    pub fn text_stream(&self, scan: Scan, holdback: usize) -> stream::TextStream {
        stream::TextStream::new(self.patterns.clone(), scan, holdback)
    }

    /// Whether a name (a header's, a JSON member's) names a secret, so its value is read
    /// after it ([`Engine::redact_text_after`]).
    pub fn names_a_secret(&self, name: &str) -> bool {
        text::names_a_secret(&self.patterns, name)
    }

    /// Whether `value`, assigned to `name` (a header's, a query parameter's), is a secret as
    /// a whole, as a JSON member's value is judged (an `Authorization`-style scheme aside):
    /// then it is replaced whole, whatever it holds (`X-Db-Password: Zx9;mQ2#vL`).
    pub fn is_named_secret(&self, name: &str, value: &str) -> bool {
        let v = value.trim();
        let v = ["Bearer ", "Basic ", "Token "]
            .iter()
            .find_map(|p| {
                v.get(..p.len())
                    .filter(|h| h.eq_ignore_ascii_case(p))
                    .map(|_| &v[p.len()..])
            })
            .unwrap_or(v);
        self.names_a_secret(name) && secret::looks_assigned_secret(v.trim().as_bytes())
    }

    /// Redact text read after `context` (never replaced): a header's value after its name
    /// (`X-Auth-Token: `), so rules that need the name see it.
    pub fn redact_text_after(
        &self,
        context: &str,
        text: &str,
        scan: Scan,
        counts: &mut Counts,
    ) -> Option<String> {
        text::redact_after(&self.patterns, context, text, scan, counts)
    }

    /// Redact a URL query string, pair by pair (`name=value` read as one text, so a value is
    /// read after its name): first as sent (percent escapes are decoded for matching, the
    /// whole escaped span replaced, the token written escaped), then as a form decoder reads
    /// it (`+` as a space): a pair with a match there is written back encoded. Pairs without
    /// a match stay exactly as they came. `None` when nothing was found.
    pub fn redact_query(&self, query: &str, scan: Scan, counts: &mut Counts) -> Option<String> {
        if !scan.any() {
            return None;
        }
        let mut out: Option<String> = None;
        for (i, pair) in query.split('&').enumerate() {
            let mut written = self
                .redact_text(pair, scan, counts)
                .map(|r| escape_tokens(&r));
            let current = written.as_deref().unwrap_or(pair);
            let (name, value) = form_urlencoded::parse(current.as_bytes())
                .next()
                .unwrap_or_default();
            let decoded = if value.is_empty() && !current.contains('=') {
                name.to_string()
            } else {
                format!("{name}={value}")
            };
            if scan.secrets && written.is_none() && self.is_named_secret(&name, &value) {
                // The whole value under a secret's name (`?password=Zx9;mQ2`).
                counts.add(Entity::Secret);
                let mut ser = form_urlencoded::Serializer::new(String::new());
                ser.append_pair(&name, Entity::Secret.token());
                written = Some(ser.finish());
            } else if let Some(r) = self.redact_text(&decoded, scan, counts) {
                let (n, v) = r.split_once('=').unwrap_or((&r, ""));
                let mut ser = form_urlencoded::Serializer::new(String::new());
                ser.append_pair(n, v);
                written = Some(ser.finish());
            }
            if written.is_some() && out.is_none() {
                out = Some(query.split('&').take(i).collect::<Vec<_>>().join("&"));
            }
            if let Some(o) = out.as_mut() {
                if i > 0 {
                    o.push('&');
                }
                o.push_str(written.as_deref().unwrap_or(pair));
            }
        }
        out
    }

    /// Redact a body as received. `content_type` and `content_encoding` are the header
    /// values; `limit` bounds the decoded size of compressed bodies.
    pub fn redact_body(
        &self,
        body: &[u8],
        content_type: Option<&[u8]>,
        content_encoding: Option<&[u8]>,
        limit: usize,
        scan: Scan,
    ) -> Result<Redacted, BodyError> {
        if let Some(ct) = content_type {
            let ct = String::from_utf8_lossy(ct).to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or("").trim();
            let json = essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"));
            if !json {
                return Err(BodyError::UnsupportedType(truncate(essence)));
            }
        }
        let decoded = decode(body, content_encoding, limit)?;
        let (bytes, was_decoded): (&[u8], bool) = match &decoded {
            Some(d) => (d, true),
            None => (body, false),
        };
        let mut counts = Counts::default();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            // An empty body has nothing to leak (the upstream will refuse it).
            return Ok(Redacted {
                body: decoded,
                decoded: was_decoded,
                counts,
            });
        }
        let doc = std::str::from_utf8(bytes)
            .map_err(|e| BodyError::NotJson(format!("not UTF-8 at byte {}", e.valid_up_to())))?;
        let rewritten = self
            .redact_json(doc, scan, &mut counts)
            .map_err(|e| BodyError::NotJson(e.to_string()))?;
        Ok(Redacted {
            body: rewritten.map(String::into_bytes).or(decoded),
            decoded: was_decoded,
            counts,
        })
    }
}

/// How a response body is redacted (when response redaction is on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseKind {
    /// Nothing to scan: no body (HEAD, 204, 304, 1xx) or a route that echoes nothing.
    Pass,
    /// A JSON body, buffered and walked whole (decoded first when `encoding` is set).
    Json { encoding: Option<String> },
    /// A text body, buffered and scanned whole.
    Text { encoding: Option<String> },
    /// Server-Sent Events, redacted as they stream (see [`sse`]).
    Sse,
    /// A body sluice cannot scan (its type or encoding): refused, never passed unscanned.
    Unscannable,
}

/// Decide how to redact a response from its status and headers. `has_body` is false for
/// HEAD requests and bodiless statuses.
pub fn response_kind(
    has_body: bool,
    content_type: Option<&[u8]>,
    content_encoding: Option<&[u8]>,
) -> ResponseKind {
    if !has_body {
        return ResponseKind::Pass;
    }
    let encoding = content_encoding
        .map(|e| String::from_utf8_lossy(e).trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e != "identity");
    let decodable = encoding
        .as_deref()
        .is_none_or(|e| matches!(e, "gzip" | "x-gzip" | "deflate"));
    let ct = content_type
        .map(|c| String::from_utf8_lossy(c).to_ascii_lowercase())
        .unwrap_or_default();
    let essence = ct.split(';').next().unwrap_or("").trim();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    match essence {
        "text/event-stream" if encoding.is_none() => ResponseKind::Sse,
        _ if !decodable => ResponseKind::Unscannable,
        _ if json => ResponseKind::Json { encoding },
        // No type at all is scanned as text: a superset of what it could be.
        "" => ResponseKind::Text { encoding },
        e if e.starts_with("text/") && e != "text/event-stream" => ResponseKind::Text { encoding },
        _ => ResponseKind::Unscannable,
    }
}

impl Engine {
    /// Redact a buffered response body of `kind` (JSON or text). `Ok(None)`: send it as it
    /// came. A JSON body that is not valid JSON is an error: never passed unscanned.
    pub fn redact_response(
        &self,
        body: &[u8],
        kind: &ResponseKind,
        limit: usize,
        scan: Scan,
        counts: &mut Counts,
    ) -> Result<Option<Vec<u8>>, BodyError> {
        let (encoding, is_json) = match kind {
            ResponseKind::Json { encoding } => (encoding, true),
            ResponseKind::Text { encoding } => (encoding, false),
            _ => return Ok(None),
        };
        let decoded = decode(body, encoding.as_deref().map(str::as_bytes), limit)?;
        let bytes: &[u8] = decoded.as_deref().unwrap_or(body);
        let text = std::str::from_utf8(bytes)
            .map_err(|e| BodyError::NotJson(format!("not UTF-8 at byte {}", e.valid_up_to())))?;
        let out = if is_json {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                // Read one way: an object naming a member twice is refused.
                let ambiguous = || BodyError::NotJson("an object names a member twice".into());
                // A member can be named `logprobs` only literally or with a \u escape.
                let stripped = if finder!(b"logprobs").find(bytes).is_some()
                    || finder!(b"\\u").find(bytes).is_some()
                {
                    let mut v = crate::json::parse(bytes).map_err(|e| match e {
                        crate::json::Error::Duplicate => ambiguous(),
                        crate::json::Error::Invalid => BodyError::NotJson("invalid JSON".into()),
                    })?;
                    strip_logprobs(&mut v).then(|| v.to_string())
                } else {
                    match crate::json::check_unique(bytes) {
                        Ok(()) => None,
                        Err(crate::json::Error::Duplicate) => return Err(ambiguous()),
                        Err(crate::json::Error::Invalid) => {
                            return Err(BodyError::NotJson("invalid JSON".into()))
                        }
                    }
                };
                match stripped {
                    Some(doc) => Some(
                        self.redact_json(&doc, scan, counts)
                            .map_err(|e| BodyError::NotJson(e.to_string()))?
                            .unwrap_or(doc),
                    ),
                    None => self
                        .redact_json(text, scan, counts)
                        .map_err(|e| BodyError::NotJson(e.to_string()))?,
                }
            }
        } else if looks_like_event_stream(text) {
            // An event stream under another content type (some servers send `text/plain`, or
            // none): clients read it as events, so it is redacted as events (a value split over
            // several is masked whole), not as text.
            let mut r = sse::Redactor::new(self, scan, 256, limit);
            let mut out = r.push(text.as_bytes());
            out.extend(r.finish());
            counts.merge(&r.counts());
            return Ok(Some(out));
        } else {
            self.redact_text(text, scan, counts)
        };
        Ok(out.map(String::into_bytes).or(decoded))
    }
}

/// Drop token log probabilities from an answer (response redaction on): each token is a
/// fragment no scan can judge alone, and together they rebuild a masked value. Every member
/// named `logprobs`, at any depth, becomes `null` (chat and legacy completions' object) or `[]`
/// (the Responses API's list). `true`: something was dropped.
pub(crate) fn strip_logprobs(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut changed = false;
            for (k, x) in map.iter_mut() {
                if k == "logprobs" {
                    let empty = match x {
                        Value::Array(a) if !a.is_empty() => Some(Value::Array(Vec::new())),
                        Value::Object(_) => Some(Value::Null),
                        _ => None,
                    };
                    if let Some(e) = empty {
                        *x = e;
                        changed = true;
                    }
                } else {
                    changed |= strip_logprobs(x);
                }
            }
            changed
        }
        Value::Array(items) => items.iter_mut().fold(false, |c, x| strip_logprobs(x) | c),
        _ => false,
    }
}

/// Whether a text body reads as an event stream: its first line (after a BOM and blank lines)
/// is a `data`, `event`, `id` or `retry` field or a comment. (An answer to a request that asked
/// for a stream is redacted as events whatever it holds: see `proxy::response::rewrite`.)
fn looks_like_event_stream(text: &str) -> bool {
    let t = text
        .strip_prefix('\u{feff}')
        .unwrap_or(text)
        .trim_start_matches(['\r', '\n']);
    t.starts_with(':')
        || ["data", "event", "id", "retry"].iter().any(|f| {
            t.strip_prefix(f)
                .is_some_and(|r| r.starts_with([':', '\r', '\n']) || r.is_empty())
        })
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Decode a `Content-Encoding`; `None` for identity.
fn decode(
    body: &[u8],
    encoding: Option<&[u8]>,
    limit: usize,
) -> Result<Option<Vec<u8>>, BodyError> {
    let Some(enc) = encoding else {
        return Ok(None);
    };
    let enc = String::from_utf8_lossy(enc).trim().to_ascii_lowercase();
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let read = |r: &mut dyn Read, out: &mut Vec<u8>| -> Result<(), BodyError> {
        r.take(limit as u64 + 1)
            .read_to_end(out)
            .map_err(|_| BodyError::Corrupt)?;
        if out.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        Ok(())
    };
    match enc.as_str() {
        "" | "identity" => return Ok(None),
        "gzip" | "x-gzip" => read(&mut flate2::read::GzDecoder::new(body), &mut out)?,
        "deflate" => {
            // RFC 9110 deflate is zlib-wrapped; some clients send raw deflate.
            if read(&mut flate2::read::ZlibDecoder::new(body), &mut out).is_err() {
                out.clear();
                read(&mut flate2::read::DeflateDecoder::new(body), &mut out)?;
            }
        }
        other => return Err(BodyError::UnsupportedEncoding(truncate(other))),
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_query_is_redacted_as_sent_and_as_a_form_decoder_reads_it() {
        let e = Engine::new();
        let mut c = Counts::default();
        let q = "email=jane+tag@example.com&page=2&access_token=f3a9c2e7b1d44e0a9c7b2d1e8f6a5b4c&n=call+415-555-0123&x=a%40b.co";
        let out = e.redact_query(q, Scan::ALL, &mut c).unwrap();
        // `+415-555-0123` as sent is an E.164 number: its `+` goes with it.
        assert_eq!(
            out,
            "email=%5BREDACTED_EMAIL%5D&page=2&access_token=%5BREDACTED_SECRET%5D&n=call%5BREDACTED_PHONE%5D&x=%5BREDACTED_EMAIL%5D"
        );
        assert_eq!(c.get(Entity::Email), 2);
        assert_eq!(
            e.redact_query("page=2&q=hello+world", Scan::ALL, &mut c),
            None
        );
        // A value under a secret's name is judged whole, `;` and all.
        assert_eq!(
            e.redact_query("password=Zx9;mQ2vL&x=1", Scan::ALL, &mut c)
                .as_deref(),
            Some("password=%5BREDACTED_SECRET%5D&x=1")
        );
        assert!(e.is_named_secret("x-db-password", "Zx9;mQ2#vL"));
        assert!(e.is_named_secret("authorization", "Bearer ab,cd1234efgh5678"));
        assert!(!e.is_named_secret("x-request-id", "Zx9;mQ2#vL"));
    }

    use super::*;
    use std::io::Write;

    #[test]
    fn json_answers_lose_their_logprobs_and_ambiguous_ones_are_refused() {
        let e = Engine::new();
        let kind = ResponseKind::Json { encoding: None };
        let mut c = Counts::default();
        let body = br#"{"choices":[{"message":{"content":"[masked]"},"logprobs":{"content":[{"token":"bob","bytes":[98,111,98]},{"token":"@example.com"}]}}]}"#;
        let out = e
            .redact_response(body, &kind, 1 << 20, Scan::ALL, &mut c)
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["choices"][0]["logprobs"].is_null(), "{v}");
        // Written with an escape, the same member.
        let body = br#"{"choices":[{"\u006cogprobs":{"content":[{"token":"bob"}]}}]}"#;
        let out = e
            .redact_response(body, &kind, 1 << 20, Scan::ALL, &mut c)
            .unwrap()
            .unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("bob"));
        for body in [
            br#"{"a":1,"a":2}"#.as_slice(),
            br#"{"logprobs":null,"logprobs":{"content":[]}}"#.as_slice(),
        ] {
            assert!(matches!(
                e.redact_response(body, &kind, 1 << 20, Scan::ALL, &mut c),
                Err(BodyError::NotJson(_))
            ));
        }
    }

    #[test]
    fn responses_are_classified_by_type_and_encoding() {
        use ResponseKind as K;
        let k = |ct: Option<&str>, ce: Option<&str>| {
            response_kind(true, ct.map(str::as_bytes), ce.map(str::as_bytes))
        };
        assert_eq!(k(Some("text/event-stream; charset=utf-8"), None), K::Sse);
        assert_eq!(k(Some("text/event-stream"), Some("gzip")), K::Unscannable);
        assert_eq!(
            k(Some("application/json"), None),
            K::Json { encoding: None }
        );
        assert_eq!(
            k(Some("application/problem+json"), Some("gzip")),
            K::Json {
                encoding: Some("gzip".into())
            }
        );
        assert_eq!(k(Some("application/json"), Some("br")), K::Unscannable);
        assert_eq!(
            k(Some("text/plain"), Some("identity")),
            K::Text { encoding: None }
        );
        assert_eq!(k(None, None), K::Text { encoding: None });
        assert_eq!(k(Some("audio/mpeg"), None), K::Unscannable);
        assert_eq!(response_kind(false, Some(b"audio/mpeg"), None), K::Pass);
        let e = Engine::new();
        let mut c = Counts::default();
        let out = e
            .redact_response(
                br#"{"a":"x@y.com"}"#,
                &K::Json { encoding: None },
                1000,
                Scan::ALL,
                &mut c,
            )
            .unwrap()
            .unwrap();
        assert_eq!(out, br#"{"a":"[REDACTED_EMAIL]"}"#.to_vec());
        assert!(e
            .redact_response(
                b"{oops x@y.com",
                &K::Json { encoding: None },
                1000,
                Scan::ALL,
                &mut c
            )
            .is_err());
    }

    #[test]
    fn a_text_answer_that_starts_as_events_is_redacted_as_the_events_a_client_reads() {
        let e = Engine::new();
        let ev = |s: &str| {
            format!(
                "data: {}\n\n",
                serde_json::json!({"choices": [{"index": 0, "delta": {"content": s}}]})
            )
        };
        for head in ["", "\u{feff}: c\n", "\n\r\n"] {
            let body = format!(
                "{head}{}{}data: [DONE]\n\n",
                ev("mail alice@exa"),
                ev("mple.com")
            );
            let mut c = Counts::default();
            let kind = ResponseKind::Text { encoding: None };
            let out = e
                .redact_response(body.as_bytes(), &kind, 1 << 20, Scan::ALL, &mut c)
                .unwrap()
                .unwrap();
            let out = String::from_utf8(out).unwrap();
            assert!(
                !out.contains("alice") && !out.contains("mple.com"),
                "{head:?}: {out}"
            );
            assert_eq!(c.get(Entity::Email), 1, "{head:?}");
        }
    }

    #[test]
    fn bodies_by_content_type_and_encoding() {
        let e = Engine::new();
        let body = br#"{"input":"mail x@y.com"}"#;
        let r = e
            .redact_body(
                body,
                Some(b"application/json; charset=utf-8"),
                None,
                1000,
                Scan::ALL,
            )
            .unwrap();
        assert_eq!(r.counts.get(Entity::Email), 1);
        assert_eq!(r.counts.header_value(), "email=1");
        assert!(!r.decoded);
        assert!(matches!(
            e.redact_body(
                body,
                Some(b"multipart/form-data; boundary=x"),
                None,
                1000,
                Scan::ALL
            ),
            Err(BodyError::UnsupportedType(_))
        ));
        assert!(matches!(
            e.redact_body(b"{not json", None, None, 1000, Scan::ALL),
            Err(BodyError::NotJson(_))
        ));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(body).unwrap();
        let gz = gz.finish().unwrap();
        let r = e
            .redact_body(&gz, None, Some(b"gzip"), 1000, Scan::ALL)
            .unwrap();
        assert!(r.decoded);
        assert_eq!(
            r.body.unwrap(),
            br#"{"input":"mail [REDACTED_EMAIL]"}"#.to_vec()
        );
        assert!(matches!(
            e.redact_body(&gz, None, Some(b"br"), 1000, Scan::ALL),
            Err(BodyError::UnsupportedEncoding(_))
        ));
        assert!(matches!(
            e.redact_body(&gz, None, Some(b"gzip, gzip"), 1000, Scan::ALL),
            Err(BodyError::UnsupportedEncoding(_))
        ));
        // A decompression bomb stops at the limit.
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        bomb.write_all(&vec![b' '; 5_000_000]).unwrap();
        let bomb = bomb.finish().unwrap();
        assert!(bomb.len() < 20_000);
        assert_eq!(
            e.redact_body(&bomb, None, Some(b"gzip"), 1_000_000, Scan::ALL)
                .unwrap_err(),
            BodyError::TooLarge { limit: 1_000_000 }
        );
        assert!(matches!(
            e.redact_body(b"garbage", None, Some(b"gzip"), 1000, Scan::ALL),
            Err(BodyError::Corrupt)
        ));
    }
}
