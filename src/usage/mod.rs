//! Token usage of LLM answers, read as they stream by: never a buffered body.
//!
//! Providers report usage in a `usage` object near the end of what they send: last in a chat
//! completion, completion or embeddings body; in the final chunk of a chat stream asked with
//! `stream_options.include_usage`; inside the closing `response.completed` event of a
//! Responses API stream. So [`Tail`] keeps only the last bytes of a body and [`find`] reads the
//! last `usage` object in them.
//!
//! For a chat or completion stream the app did not ask usage for, sluice asks for it
//! ([`ask_stream_usage`]) and [`Stripper`] removes the usage-only chunk from what the app
//! sees, so the stream is the one it asked for and usage is still known.
//!
//! Plain Rust, no pingora types.

use serde_json::Value;

/// Tokens an answer used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub input: u64,
    /// Completion (output) tokens; 0 for embeddings.
    pub output: u64,
}

impl Usage {
    /// Input and output together.
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// How many trailing bytes of a body are kept: the usage object and what may follow it.
pub const TAIL_BYTES: usize = 16 * 1024;

/// The last [`TAIL_BYTES`] of a body (at most twice that in memory between compactions).
#[derive(Debug, Default)]
pub struct Tail {
    buf: Vec<u8>,
}

impl Tail {
    /// Add a chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        if chunk.len() >= TAIL_BYTES {
            self.buf.clear();
            self.buf
                .extend_from_slice(&chunk[chunk.len() - TAIL_BYTES..]);
            return;
        }
        if self.buf.len() + chunk.len() > 2 * TAIL_BYTES {
            let keep = TAIL_BYTES - chunk.len();
            let from = self.buf.len() - keep;
            self.buf.drain(..from);
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The usage the body reported, if any.
    pub fn usage(&self) -> Option<Usage> {
        find(&self.buf)
    }
}

/// The last non-null `"usage": {...}` object in `bytes` (a JSON body, or SSE events).
pub fn find(bytes: &[u8]) -> Option<Usage> {
    const NEEDLE: &[u8] = b"\"usage\"";
    let finder = finder!(rev NEEDLE);
    let mut end = bytes.len();
    while let Some(at) = finder.rfind(&bytes[..end]) {
        end = at;
        // Inside a JSON string a quote is escaped: `\"usage\"` is text, not a key.
        if at > 0 && bytes[at - 1] == b'\\' {
            continue;
        }
        let rest = &bytes[at + NEEDLE.len()..];
        let rest = trim_start(rest);
        let Some(rest) = rest.strip_prefix(b":") else {
            continue;
        };
        let rest = trim_start(rest);
        if !rest.starts_with(b"{") {
            continue;
        }
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
        if let Some(Ok(v)) = values.next() {
            if let Some(u) = from_value(&v) {
                return Some(u);
            }
        }
    }
    None
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .take_while(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .count();
    &b[n..]
}

/// Usage from a `usage` object: chat completions and completions (`prompt_tokens`,
/// `completion_tokens`), the Responses API (`input_tokens`, `output_tokens`), embeddings
/// (`prompt_tokens` only).
pub fn from_value(v: &Value) -> Option<Usage> {
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    let input = n("prompt_tokens").or_else(|| n("input_tokens"));
    let output = n("completion_tokens").or_else(|| n("output_tokens"));
    match (input, output) {
        (None, None) => None,
        (i, o) => Some(Usage {
            input: i.unwrap_or(0),
            output: o.unwrap_or(0),
        }),
    }
}

/// For a streamed chat completion or completion that does not ask for usage: the body with
/// `stream_options.include_usage` set, so the provider reports it. `None`: nothing to change
/// (not a stream, not JSON, or usage already asked for).
pub fn ask_stream_usage(body: &[u8]) -> Option<Vec<u8>> {
    // Cheap first: most bodies are not streams.
    finder!(b"\"stream\"").find(body)?;
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object_mut()?;
    if obj.get("stream") != Some(&Value::Bool(true)) {
        return None;
    }
    let opts = obj
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Default::default()));
    if opts.is_null() {
        *opts = Value::Object(Default::default());
    }
    let opts = opts.as_object_mut()?;
    if opts.get("include_usage") == Some(&Value::Bool(true)) {
        return None;
    }
    opts.insert("include_usage".into(), Value::Bool(true));
    serde_json::to_vec(&v).ok()
}

/// Largest SSE event held while looking for the usage-only chunk; a longer one passes as is.
const MAX_HELD_EVENT: usize = 64 * 1024;

/// Removes the usage-only chunk (`"choices": []` with a `usage` object) from a chat or
/// completion stream whose usage sluice asked for. Events pass as soon as they are whole;
/// only an incomplete event is held (at most [`MAX_HELD_EVENT`] bytes).
#[derive(Debug, Default)]
pub struct Stripper {
    decoder: crate::sse::Decoder,
    /// Once an event was too long to hold, the rest passes unexamined.
    gave_up: bool,
}

impl Stripper {
    /// What of `chunk` goes to the app now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.gave_up {
            return chunk.to_vec();
        }
        let mut out = Vec::with_capacity(chunk.len());
        for ev in self.decoder.push(chunk) {
            if !is_usage_only(&ev) {
                ev.write(None, &mut out);
            }
        }
        if self.decoder.pending() > MAX_HELD_EVENT {
            // Not the usage chunk (that one is small): what was held goes out as it came.
            self.gave_up = true;
            let held = std::mem::take(&mut self.decoder).into_pending();
            out.extend_from_slice(&held);
        }
        out
    }

    /// What is left at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(ev) = self.decoder.finish().filter(|ev| !is_usage_only(ev)) {
            ev.write(None, &mut out);
        }
        out
    }
}

/// Whether an SSE event is the usage-only chunk of a chat or completion stream.
fn is_usage_only(event: &crate::sse::Event) -> bool {
    let Some(data) = event.data.as_deref() else {
        return false;
    };
    if !data.contains("\"usage\"") {
        return false;
    }
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return false;
    };
    v.get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
        && v.get("usage").is_some_and(Value::is_object)
}

/// A bounded metric label for a model named by a client: at most 64 characters of
/// `[A-Za-z0-9._:/-]`, else `other` (a client must not be able to mint label values freely;
/// the caller also caps how many distinct ones it keeps).
pub fn model_label(model: Option<&str>) -> &str {
    match model {
        Some(m)
            if !m.is_empty()
                && m.len() <= 64
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b)) =>
        {
            m
        }
        Some(_) => "other",
        None => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_bodies_and_streams_of_every_api() {
        let chat = br#"{"id":"x","choices":[{"message":{"content":"the \"usage\": {\"prompt_tokens\": 999} is text"}}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;
        assert_eq!(
            find(chat),
            Some(Usage {
                input: 12,
                output: 7
            })
        );
        let embeddings =
            br#"{"data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":5,"total_tokens":5}}"#;
        assert_eq!(
            find(embeddings),
            Some(Usage {
                input: 5,
                output: 0
            })
        );
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
            data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        assert_eq!(
            find(stream),
            Some(Usage {
                input: 3,
                output: 2
            })
        );
        let responses = b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[],\"usage\":{\"input_tokens\":40,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":9,\"total_tokens\":49},\"user\":null,\"metadata\":{}}}\n\n";
        assert_eq!(
            find(responses),
            Some(Usage {
                input: 40,
                output: 9
            })
        );
        // Only nulls, or nothing: unknown.
        assert_eq!(find(b"data: {\"usage\":null}\n\n"), None);
        assert_eq!(find(b"{\"usage\": 3}"), None);
        assert_eq!(find(b""), None);
    }

    #[test]
    fn the_tail_keeps_the_end_of_a_long_body_whatever_the_chunking() {
        let mut body = vec![b' '; 100_000];
        body.extend_from_slice(br#"{"usage":{"prompt_tokens":1,"completion_tokens":2}}"#);
        for chunk in [1usize, 7, 1000, 20_000, 200_000] {
            let mut t = Tail::default();
            for c in body.chunks(chunk) {
                t.push(c);
            }
            assert_eq!(
                t.usage(),
                Some(Usage {
                    input: 1,
                    output: 2
                }),
                "{chunk}"
            );
            assert!(t.buf.len() <= 2 * TAIL_BYTES);
        }
    }

    #[test]
    fn stream_usage_is_asked_for_only_when_missing() {
        let b = ask_stream_usage(br#"{"model":"m","stream":true,"messages":[]}"#).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "m");
        let b = ask_stream_usage(br#"{"stream":true,"stream_options":{"include_usage":false}}"#)
            .unwrap();
        assert!(String::from_utf8(b)
            .unwrap()
            .contains(r#""include_usage":true"#));
        assert!(
            ask_stream_usage(br#"{"stream":true,"stream_options":{"include_usage":true}}"#)
                .is_none()
        );
        assert!(ask_stream_usage(br#"{"stream":false}"#).is_none());
        assert!(ask_stream_usage(br#"{"messages":[]}"#).is_none());
        assert!(ask_stream_usage(b"not json \"stream\"").is_none());
    }

    #[test]
    fn the_stripper_removes_only_the_usage_chunk_whatever_the_chunking() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
            data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n\
            data: [DONE]\n\n";
        let want = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
            data: [DONE]\n\n";
        for chunk in [1usize, 5, 17, 64, 1000] {
            let mut s = Stripper::default();
            let mut out = Vec::new();
            for c in stream.chunks(chunk) {
                out.extend(s.push(c));
            }
            out.extend(s.finish());
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(want),
                "{chunk}"
            );
        }
        // Whole events are passed at once: nothing complete is held back.
        let mut s = Stripper::default();
        assert_eq!(
            s.push(b"data: {\"x\":1}\n\ndata: {\"y\""),
            b"data: {\"x\":1}\n\n"
        );
    }

    #[test]
    fn model_labels_are_bounded() {
        assert_eq!(model_label(Some("gpt-4o-mini")), "gpt-4o-mini");
        assert_eq!(model_label(Some("ft:gpt-4o:org/x.1")), "ft:gpt-4o:org/x.1");
        assert_eq!(model_label(Some("a b")), "other");
        assert_eq!(model_label(Some(&"m".repeat(65))), "other");
        assert_eq!(model_label(None), "unknown");
    }
}
