//! Redacting a Server-Sent Events answer as it streams (`stream: true`), event by event, with
//! no buffering beyond one event and a small holdback per text field.
//!
//! Every `data:` event is parsed as JSON. The text that a model streams in pieces goes through
//! one [`TextStream`] per field, so a value split across any number of events is masked whole:
//! chat completions' `choices[i].delta.content`, `.refusal`, `.reasoning_content`/`.reasoning`,
//! `.tool_calls[j].function.arguments` and `.function_call.arguments`; legacy completions'
//! `choices[i].text`; and the Responses API's `*.delta` events (`response.output_text.delta`,
//! `response.function_call_arguments.delta`, ...), keyed by item, output and content index.
//! What a field holds back is released at its end: into the chunk that carries the choice's
//! `finish_reason`, before the Responses API's matching `*.done` event (whose full text is
//! redacted as a whole), or in a chunk of its own before `[DONE]` or the end of the stream.
//! Ids, roles, `finish_reason` and `usage` are left as they are. Any other JSON event (the
//! `response.completed` object, an error) has all its strings redacted at once.
//!
//! Events are read by [`crate::sse`] (the WHATWG rules: CRLF, LF or CR line ends, ...) and
//! written back from what was read, so what was scanned is what the client reads. The Responses
//! API numbers its events: the events sluice adds take the next `sequence_number` and the
//! upstream's later events are renumbered after them.
//!
//! Fail closed: an event that is not JSON (other than `[DONE]`) or cannot be redacted, or that
//! grows past
//! `max_event_bytes` without ending, ends the stream with an SSE error event
//! (`{"error": {"code": "unscannable_response", ...}}`) and nothing after it is passed on.

use serde_json::{json, Map, Value};

use super::stream::TextStream;
use super::{Counts, Engine, Scan};

/// Which streamed text a piece belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    /// `choices[choice].delta.<key>` of a chat completion chunk.
    Chat { choice: u64, key: &'static str },
    /// `choices[choice].delta.tool_calls[index].function.arguments`.
    ToolArgs { choice: u64, index: u64 },
    /// `choices[choice].delta.function_call.arguments` (legacy function calling).
    FunctionArgs { choice: u64 },
    /// `choices[choice].text` of a legacy completion chunk.
    Completion { choice: u64 },
    /// `choices[choice].delta.audio.transcript` (an audio answer's text).
    Transcript { choice: u64 },
    /// A Responses API `*.delta` event's `delta`, by event family and position.
    Responses {
        family: String,
        item: String,
        output: u64,
        content: u64,
    },
}

/// The most fields streamed at once (choices times text fields, Responses API items): a stream
/// that opens more is refused, not held in memory without bound.
const MAX_OPEN: usize = 64;

/// The text keys of a chat delta that are streamed in pieces.
const CHAT_TEXT_KEYS: [&str; 4] = ["content", "refusal", "reasoning_content", "reasoning"];

struct Open {
    field: Field,
    text: TextStream,
    /// For a Responses API field: its last delta event, the template of a flush event.
    template: Option<Value>,
}

/// One streamed answer's redactor.
pub struct Redactor {
    engine: Engine,
    scan: Scan,
    holdback: usize,
    max_event: usize,
    decoder: crate::sse::Decoder,
    open: Vec<Open>,
    /// The last chat or completion chunk's envelope (`id`, `object`, `created`, `model`, ...),
    /// for chunks sluice adds to release held-back text.
    envelope: Option<Map<String, Value>>,
    counts: Counts,
    failed: bool,
    /// Responses API events carry a `sequence_number`: each event sluice adds takes the next
    /// number, and every later event's number moves up by as many (`shift`), so numbers stay
    /// unique and increasing as the client sees them.
    last_seq: Option<u64>,
    shift: u64,
    /// Chunks' choices are grouped by their place in `choices`, not by their `index`: see
    /// [`Redactor::one_choice`].
    by_position: bool,
    /// The choices that finished (a `finish_reason` came): what they held was released then,
    /// so text for one of them afterwards (which a client would print right after it) fails the
    /// stream rather than be scanned apart from what it continues.
    finished: Vec<u64>,
}

/// The SSE error event that ends a stream sluice cannot scan.
pub fn error_event(message: &str) -> Vec<u8> {
    let v = json!({"error": {"message": message, "type": "server_error", "param": null,
        "code": "unscannable_response"}});
    format!("data: {v}\n\n").into_bytes()
}

impl Redactor {
    /// A redactor over `engine`, looking for `scan`, holding back at most `holdback` bytes per
    /// field, refusing events larger than `max_event` bytes.
    pub fn new(engine: &Engine, scan: Scan, holdback: usize, max_event: usize) -> Redactor {
        Redactor {
            engine: engine.clone(),
            scan,
            holdback,
            max_event,
            decoder: crate::sse::Decoder::new(),
            open: Vec::new(),
            envelope: None,
            counts: Counts::default(),
            failed: false,
            last_seq: None,
            shift: 0,
            by_position: false,
            finished: Vec::new(),
        }
    }

    /// The request asked for one answer (no `n`, or 1): its client reads `choices[0]` of each
    /// chunk whatever that choice's `index` says, so a chunk's pieces are grouped by their place
    /// in `choices`. An answer that spreads a value over chunks of different `index` is then
    /// masked as that client reads it. (With `n` > 1 a client tells the answers apart by
    /// `index`, and so does the grouping.)
    pub fn one_choice(mut self) -> Redactor {
        self.by_position = true;
        self
    }

    /// Everything replaced so far.
    pub fn counts(&self) -> Counts {
        let mut c = self.counts;
        for o in &self.open {
            c.merge(&o.text.counts());
        }
        c
    }

    /// Whether the stream was ended with an error event.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Take the next bytes of the stream; return what can be sent on now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.failed {
            return out;
        }
        for ev in self.decoder.push(chunk) {
            if !self.event(&ev, &mut out) {
                return out;
            }
        }
        if self.decoder.pending() > self.max_event {
            self.fail(
                &mut out,
                "An event of the upstream's stream is too large to scan.",
            );
        }
        out
    }

    /// The stream ended: release every held-back field (and a last, unterminated event).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.failed {
            return out;
        }
        if let Some(ev) = self.decoder.finish() {
            if !self.event(&ev, &mut out) {
                return out;
            }
        }
        self.flush_all(&mut out);
        out
    }

    fn fail(&mut self, out: &mut Vec<u8>, message: &str) {
        self.failed = true;
        self.decoder = crate::sse::Decoder::new();
        self.open.clear();
        out.extend_from_slice(&error_event(message));
    }

    /// Handle one event, as a client reads it. `false`: the stream failed.
    fn event(&mut self, ev: &crate::sse::Event, out: &mut Vec<u8>) -> bool {
        let (engine, scan, counts) = (&self.engine, self.scan, &mut self.counts);
        let redacted = ev.redacted_fields(|v| engine.redact_text(v, scan, counts));
        let ev = redacted.as_ref().unwrap_or(ev);
        let Some(data) = ev.data.as_deref().filter(|d| !d.is_empty()) else {
            // Comments (keep-alives), blocks without data and empty data (nothing to scan)
            // go out as read.
            ev.write(None, out);
            return true;
        };
        let mut before = Vec::new();
        let new = if data.trim() == "[DONE]" {
            self.flush_all(&mut before);
            data.to_string()
        } else {
            let v = match crate::json::parse_str(data) {
                Ok(v) => self.transform(v, &mut before),
                Err(_) => None,
            };
            match v {
                Some(mut v) => {
                    self.renumber(&mut v);
                    v.to_string()
                }
                None => {
                    self.fail(
                        out,
                        "An event of the upstream's stream is not JSON or cannot be scanned.",
                    );
                    return false;
                }
            }
        };
        out.extend_from_slice(&before);
        ev.write(Some(&new), out);
        true
    }

    /// Move an upstream event's `sequence_number` past the events sluice added.
    fn renumber(&mut self, v: &mut Value) {
        if let Some(n) = v.get("sequence_number").and_then(Value::as_u64) {
            let n = n.saturating_add(self.shift);
            v["sequence_number"] = n.into();
            self.last_seq = Some(n);
        }
    }

    /// An event sluice adds (held-back text released), numbered next when the stream numbers
    /// its events.
    fn push_added(&mut self, out: &mut Vec<u8>, v: &mut Value) {
        if v.get("sequence_number").is_some() {
            let n = self.last_seq.map_or(0, |n| n.saturating_add(1));
            v["sequence_number"] = n.into();
            self.last_seq = Some(n);
            self.shift = self.shift.saturating_add(1);
        }
        push_event(out, v);
    }

    /// Redact one JSON event; synthetic events that must come before it go to `before`.
    /// `None`: the event could not be scanned.
    fn transform(&mut self, mut v: Value, before: &mut Vec<u8>) -> Option<Value> {
        let object = v.get("object").and_then(Value::as_str).unwrap_or("");
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        // A chunk is known by its shape: clients read `choices` whatever `object` says, and
        // compatible servers leave it out or empty (Azure's first chunk).
        let choices = v.get("choices").is_some_and(Value::is_array);
        if object == "chat.completion.chunk" || object == "text_completion" || choices {
            return self.chunk(v);
        }
        if let Some(family) = kind.strip_prefix("response.") {
            if let Some(family) = family.strip_suffix(".delta") {
                if v.get("delta").is_some_and(Value::is_string) {
                    return self.responses_delta(v, family.to_string());
                }
            }
            if let Some(family) = family.strip_suffix(".done") {
                self.responses_done(&v, family, before);
            }
        }
        // Anything else: no log probabilities, every string at once.
        super::strip_logprobs(&mut v);
        self.whole(v)
    }

    /// Every string of an event redacted; `None` when it cannot be (fail closed: the event
    /// is never passed on as it came).
    fn whole(&mut self, v: Value) -> Option<Value> {
        let text = v.to_string();
        match self.engine.redact_json(&text, self.scan, &mut self.counts) {
            Ok(Some(new)) => serde_json::from_str(&new).ok(),
            Ok(None) => Some(v),
            Err(_) => None,
        }
    }

    /// `None`: a field past [`MAX_OPEN`] (the stream is failed).
    fn stream(&mut self, field: Field, piece: &str, template: Option<&Value>) -> Option<String> {
        let i = match self.open.iter().position(|o| o.field == field) {
            Some(i) => i,
            None if self.open.len() >= MAX_OPEN => return None,
            None => {
                self.open.push(Open {
                    field,
                    text: self.engine.text_stream(self.scan, self.holdback),
                    template: None,
                });
                self.open.len() - 1
            }
        };
        if let Some(t) = template {
            // What an added event needs of the last one: its type, ids and indexes.
            let keep = [
                "type",
                "item_id",
                "output_index",
                "content_index",
                "sequence_number",
            ];
            let t: Map<String, Value> = keep
                .iter()
                .filter_map(|k| Some((k.to_string(), t.get(*k)?.clone())))
                .collect();
            self.open[i].template = Some(Value::Object(t));
        }
        Some(self.open[i].text.push(piece))
    }

    /// Finish the open fields `which` picks: their held-back text, in the order opened.
    fn close(&mut self, which: impl Fn(&Field) -> bool) -> Vec<(Field, String, Option<Value>)> {
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.open.len() {
            if which(&self.open[i].field) {
                let mut o = self.open.remove(i);
                let rest = o.text.finish();
                self.counts.merge(&o.text.counts());
                done.push((o.field, rest, o.template));
            } else {
                i += 1;
            }
        }
        done
    }

    /// A chat completion or legacy completion chunk: the text streamed in pieces goes through
    /// its field's stream; `logprobs` are dropped; every other string is redacted at once.
    /// `None`: it cannot be scanned.
    fn chunk(&mut self, mut v: Value) -> Option<Value> {
        let by_position = self.by_position;
        // 1. The streamed pieces out of the chunk, an empty string in their place.
        let mut pieces: Vec<(usize, String, Field, String)> = Vec::new();
        if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
            for (pos, choice) in choices.iter_mut().enumerate() {
                let index = choice_index(choice, pos, by_position);
                let calls = choice
                    .pointer("/delta/tool_calls")
                    .and_then(Value::as_array)
                    .map(|calls| {
                        (calls.iter().enumerate())
                            .map(|(j, c)| (j, c.get("index").and_then(Value::as_u64)))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                let mut take = |ptr: String, field: Field| {
                    if let Some(slot) = choice.pointer_mut(&ptr) {
                        if let Some(t) = slot.as_str() {
                            let t = t.to_string();
                            *slot = Value::String(String::new());
                            pieces.push((pos, ptr, field, t));
                        }
                    }
                };
                take("/text".into(), Field::Completion { choice: index });
                for key in CHAT_TEXT_KEYS {
                    take(format!("/delta/{key}"), Field::Chat { choice: index, key });
                }
                take(
                    "/delta/audio/transcript".into(),
                    Field::Transcript { choice: index },
                );
                take(
                    "/delta/function_call/arguments".into(),
                    Field::FunctionArgs { choice: index },
                );
                for (j, tool) in calls {
                    let field = Field::ToolArgs {
                        choice: index,
                        index: tool.unwrap_or(j as u64),
                    };
                    take(format!("/delta/tool_calls/{j}/function/arguments"), field);
                }
            }
        }
        // 2. Token log probabilities rebuild masked text a token at a time: dropped. Every
        // other string (a transcript's siblings, refusals in new places, ids) redacted whole.
        super::strip_logprobs(&mut v);
        let mut v = self.whole(v)?;
        if let Some(obj) = v.as_object() {
            let mut env = Map::new();
            for k in ["id", "object", "created", "model", "system_fingerprint"] {
                if let Some(x) = obj.get(k) {
                    env.insert(k.to_string(), x.clone());
                }
            }
            self.envelope = Some(env);
        }
        // 3. The pieces through their streams, back in place.
        for (pos, ptr, field, text) in pieces {
            if !text.is_empty() && field_choice(&field).is_some_and(|c| self.finished.contains(&c))
            {
                return None;
            }
            let released = self.stream(field, &text, None)?;
            let slot = (v.get_mut("choices"))
                .and_then(|c| c.get_mut(pos))
                .and_then(|c| c.pointer_mut(&ptr));
            if let Some(slot) = slot {
                *slot = released.into();
            }
        }
        // 4. A finished choice releases what its fields hold back.
        if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
            for (pos, choice) in choices.iter_mut().enumerate() {
                let index = choice_index(choice, pos, by_position);
                if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                    // A reason that names one: some servers send `""` in every chunk.
                    let named = choice["finish_reason"]
                        .as_str()
                        .is_some_and(|r| !r.is_empty());
                    if named && !self.finished.contains(&index) {
                        // Bounded as the open fields are: more finished choices than that
                        // cannot be told apart, so the stream is failed.
                        if self.finished.len() >= MAX_OPEN {
                            return None;
                        }
                        self.finished.push(index);
                    }
                    let held = self.close(|f| field_choice(f) == Some(index));
                    for (field, rest, _) in held {
                        if !rest.is_empty() && !append(choice, &field, &rest) {
                            return None;
                        }
                    }
                }
            }
        }
        Some(v)
    }

    fn responses_key(v: &Value, family: String) -> Field {
        Field::Responses {
            family,
            item: v
                .get("item_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            output: v.get("output_index").and_then(Value::as_u64).unwrap_or(0),
            content: v.get("content_index").and_then(Value::as_u64).unwrap_or(0),
        }
    }

    /// A Responses API `*.delta` event: its `delta` through its field's stream, every other
    /// string redacted at once (the event, so redacted, is the template of events sluice adds).
    fn responses_delta(&mut self, mut v: Value, family: String) -> Option<Value> {
        let field = Self::responses_key(&v, family);
        let piece = v["delta"].as_str().unwrap_or("").to_string();
        v["delta"] = Value::String(String::new());
        super::strip_logprobs(&mut v);
        let mut v = self.whole(v)?;
        let released = self.stream(field, &piece, Some(&v))?;
        v["delta"] = released.into();
        Some(v)
    }

    /// A `*.done` event: release its field's held-back text in a delta event before it.
    fn responses_done(&mut self, v: &Value, family: &str, before: &mut Vec<u8>) {
        let key = Self::responses_key(v, family.to_string());
        for (_, rest, template) in self.close(|f| *f == key) {
            if let (false, Some(mut t)) = (rest.is_empty(), template) {
                t["delta"] = rest.into();
                self.push_added(before, &mut t);
            }
        }
    }

    /// Release every open field, in events of their own.
    fn flush_all(&mut self, out: &mut Vec<u8>) {
        for (field, rest, template) in self.close(|_| true) {
            if rest.is_empty() {
                continue;
            }
            match (field, template) {
                (Field::Responses { .. }, Some(mut t)) => {
                    t["delta"] = rest.into();
                    self.push_added(out, &mut t);
                }
                (field, _) => {
                    let mut choice = json!({"index": field_choice(&field).unwrap_or(0),
                        "finish_reason": null});
                    if !matches!(field, Field::Completion { .. }) {
                        choice["delta"] = json!({});
                    }
                    // A choice made here has the shape `append` needs.
                    append(&mut choice, &field, &rest);
                    let mut chunk = Value::Object(self.envelope.clone().unwrap_or_default());
                    chunk["choices"] = json!([choice]);
                    push_event(out, &chunk);
                }
            }
        }
    }
}

/// Which choice a chunk's `choices[pos]` is: its place, or (`by_position` false, see
/// [`Redactor::one_choice`]) its `index`, its place when it has none.
fn choice_index(choice: &Value, pos: usize, by_position: bool) -> u64 {
    match choice.get("index").and_then(Value::as_u64) {
        Some(i) if !by_position => i,
        _ => pos as u64,
    }
}

fn field_choice(f: &Field) -> Option<u64> {
    match f {
        Field::Chat { choice, .. }
        | Field::ToolArgs { choice, .. }
        | Field::FunctionArgs { choice }
        | Field::Transcript { choice }
        | Field::Completion { choice } => Some(*choice),
        Field::Responses { .. } => None,
    }
}

/// Add released text to a choice, at the field's place.
/// The slot at `path` under `v`, objects made on the way where a member is missing or null;
/// `None` when something else (a string, a list) is in the way.
fn slot<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    let mut cur = v;
    for k in path {
        if cur.is_null() {
            *cur = Value::Object(Map::new());
        }
        cur = cur
            .as_object_mut()?
            .entry(k.to_string())
            .or_insert(Value::Null);
    }
    Some(cur)
}

/// Add released text to a choice, at the field's place. `false`: the choice is not shaped so
/// that it can hold it (a `delta` that is a string, say).
fn append(choice: &mut Value, field: &Field, rest: &str) -> bool {
    let cat = |slot: Option<&mut Value>| match slot {
        Some(s) if s.is_null() || s.is_string() => {
            let mut t = s.as_str().unwrap_or("").to_string();
            t.push_str(rest);
            *s = t.into();
            true
        }
        _ => false,
    };
    match field {
        Field::Completion { .. } => cat(slot(choice, &["text"])),
        Field::Chat { key, .. } => cat(slot(choice, &["delta", key])),
        Field::Transcript { .. } => cat(slot(choice, &["delta", "audio", "transcript"])),
        Field::FunctionArgs { .. } => cat(slot(choice, &["delta", "function_call", "arguments"])),
        Field::ToolArgs { index, .. } => {
            let Some(calls) = slot(choice, &["delta", "tool_calls"]) else {
                return false;
            };
            if calls.is_null() {
                *calls = json!([]);
            }
            let Some(calls) = calls.as_array_mut() else {
                return false;
            };
            let pos = calls
                .iter()
                .position(|c| c.get("index").and_then(Value::as_u64) == Some(*index));
            match pos {
                Some(p) => cat(slot(&mut calls[p], &["function", "arguments"])),
                None => {
                    calls.push(json!({"index": index, "function": {"arguments": rest}}));
                    true
                }
            }
        }
        Field::Responses { .. } => true,
    }
}

fn push_event(out: &mut Vec<u8>, v: &Value) {
    // Responses API events carry their type as the SSE event name too.
    let kind = v.get("type").and_then(Value::as_str);
    crate::sse::Event::new(kind, &v.to_string()).write(None, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(content: &str) -> String {
        let v = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": content},
            "finish_reason": null}]});
        format!("data: {v}\n\n")
    }

    /// Feed `input` in pieces of `size` bytes; the events out, parsed.
    fn run(input: &str, size: usize) -> (Vec<Value>, Vec<u8>, Counts) {
        let e = Engine::new();
        let mut r = Redactor::new(&e, Scan::ALL, 256, 1 << 20);
        let mut out = Vec::new();
        for piece in input.as_bytes().chunks(size) {
            out.extend(r.push(piece));
        }
        out.extend(r.finish());
        let text = String::from_utf8(out.clone()).unwrap();
        let events = text
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        (events, out, r.counts())
    }

    #[test]
    fn one_answer_is_masked_as_its_client_reads_choices_0_whatever_its_index() {
        let chunk = |index: u64, s: &str| {
            let v = json!({"object": "chat.completion.chunk",
                "choices": [{"index": index, "delta": {"content": s}}]});
            format!("data: {v}\n\n")
        };
        let input = format!(
            "{}{}data: [DONE]\n\n",
            chunk(0, "mail alice@exa"),
            chunk(1, "mple.com")
        );
        let read = |r: &mut Redactor| {
            let mut out = r.push(input.as_bytes());
            out.extend(r.finish());
            let text = String::from_utf8(out).unwrap();
            // What `print(chunk.choices[0].delta.content)` prints.
            text.split("\n\n")
                .filter_map(|e| e.strip_prefix("data: "))
                .filter(|d| *d != "[DONE]")
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter_map(|v| {
                    v["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(String::from)
                })
                .collect::<String>()
        };
        let e = Engine::new();
        let one = read(&mut Redactor::new(&e, Scan::ALL, 256, 1 << 20).one_choice());
        assert_eq!(one, "mail [REDACTED_EMAIL]");
        // Asked for several answers: each index is an answer of its own, each half alone.
        let several = read(&mut Redactor::new(&e, Scan::ALL, 256, 1 << 20));
        assert!(several.contains("alice@exa"), "{several}");
    }

    #[test]
    fn text_for_a_choice_after_it_finished_fails_the_stream() {
        let chunk = |s: &str, finish: Option<&str>| {
            let v = json!({"object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": s}, "finish_reason": finish}]});
            format!("data: {v}\n\n")
        };
        // What was held is released at the finish; a continuation after it would be printed
        // right after it, unscanned with it.
        let input = format!(
            "{}{}data: [DONE]\n\n",
            chunk("mail alice@exa", Some("stop")),
            chunk("mple.com", None)
        );
        for size in [1, 4096] {
            let (_, raw, _) = run(&input, size);
            let text = String::from_utf8(raw).unwrap();
            assert!(!text.contains("mple.com"), "{text}");
            assert!(text.contains("unscannable_response"), "{text}");
        }
        // An empty delta after the finish (a content filter's chunk) is fine.
        let input = format!(
            "{}{}data: [DONE]\n\n",
            chunk("hello", Some("stop")),
            chunk("", None)
        );
        let (events, raw, _) = run(&input, 4096);
        assert!(!String::from_utf8(raw).unwrap().contains("unscannable"));
        assert_eq!(content(&events), "hello");
        // More finished choices than can be remembered: failed, not let through unchecked.
        let many: String = (0..=MAX_OPEN as u64)
            .map(|i| {
                let v = json!({"object": "chat.completion.chunk",
                    "choices": [{"index": i, "delta": {"content": "x"}, "finish_reason": "stop"}]});
                format!("data: {v}\n\n")
            })
            .collect();
        let (_, raw, _) = run(&many, 4096);
        assert!(String::from_utf8(raw)
            .unwrap()
            .contains("unscannable_response"));
        // A server that sends an empty reason in every chunk has not finished.
        let input = format!(
            "{}{}{}data: [DONE]\n\n",
            chunk("hello ", Some("")),
            chunk("world", Some("")),
            chunk("", Some("stop"))
        );
        let (events, raw, _) = run(&input, 4096);
        assert!(!String::from_utf8(raw).unwrap().contains("unscannable"));
        assert_eq!(content(&events), "hello world");
    }

    #[test]
    fn event_names_ids_and_retries_are_redacted_too() {
        let input = "id: alice@example.com\nevent: thread.bob@example.com\nretry: 4111111111111111\n\
                     retry: 3000\ndata: {\"choices\":[]}\n\n: keep-alive\nid: carol@example.com\n\n";
        for size in [1, 4096] {
            let (_, raw, counts) = run(input, size);
            let text = String::from_utf8(raw).unwrap();
            assert!(
                !text.contains("alice") && !text.contains("bob") && !text.contains("carol"),
                "{text}"
            );
            assert!(!text.contains("4111"), "{text}");
            assert!(text.contains("id: [REDACTED_EMAIL]\n"), "{text}");
            assert!(text.contains("event: [REDACTED_EMAIL]\n"), "{text}");
            assert!(text.contains("retry: 3000\n"), "{text}");
            assert_eq!(counts.total(), 4, "{text}");
        }
    }

    #[test]
    fn chunks_are_known_by_their_choices_whatever_their_object_says() {
        for object in [None, Some(""), Some("chat.completion"), Some("x")] {
            let mut input = String::new();
            for piece in [
                "mail alice@exa",
                "mple.com or ",
                r"bob\u0040example.com",
                " ok",
            ] {
                let mut v = json!({"choices": [{"index": 0, "delta": {"content": piece}}]});
                if let Some(o) = object {
                    v["object"] = o.into();
                }
                input.push_str(&format!("data: {v}\n\n"));
            }
            input.push_str("data: [DONE]\n\n");
            for size in [1, 5, 4096] {
                let (events, raw, counts) = run(&input, size);
                assert_eq!(
                    content(&events),
                    "mail [REDACTED_EMAIL] or [REDACTED_EMAIL] ok",
                    "{object:?}, pieces of {size}"
                );
                assert_eq!(counts.total(), 2);
                let text = String::from_utf8(raw).unwrap();
                assert!(!text.contains("alice") && !text.contains("bob"), "{text}");
            }
        }
    }

    #[test]
    fn streamed_tool_arguments_are_read_with_their_json_escapes() {
        let args = [
            r#"{"to":"jane"#,
            r"\u00",
            r#"40example.com","cc":"bob\u0040ex"#,
            r#"ample.com"}"#,
        ];
        let mut input = String::new();
        for a in args {
            let v = json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta":
                {"tool_calls": [{"index": 0, "function": {"arguments": a}}]}}]});
            input.push_str(&format!("data: {v}\n\n"));
        }
        input.push_str("data: [DONE]\n\n");
        for size in [1, 3, 4096] {
            let (events, _, counts) = run(&input, size);
            let joined: String = events
                .iter()
                .filter_map(|e| {
                    e.pointer("/choices/0/delta/tool_calls/0/function/arguments")
                        .and_then(Value::as_str)
                })
                .collect();
            assert_eq!(
                joined, r#"{"to":"[REDACTED_EMAIL]","cc":"[REDACTED_EMAIL]"}"#,
                "pieces of {size}"
            );
            assert_eq!(counts.total(), 2);
        }
    }

    fn content(events: &[Value]) -> String {
        events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect()
    }

    #[test]
    fn an_email_streamed_one_character_per_event_arrives_as_its_token() {
        let answer =
            "Sure: mail bob.smith@example.com, card 4111 1111 1111 1111, key AKIAWBOBYXE3TVGJGRWA.";
        let mut input: String = answer.chars().map(|c| chunk(&c.to_string())).collect();
        input.push_str(&format!("data: {}\n\n", json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
            "created": 1, "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}})));
        input.push_str("data: [DONE]\n\n");
        for size in [1, 7, 64, 4096] {
            let (events, raw, counts) = run(&input, size);
            assert_eq!(
                content(&events),
                "Sure: mail [REDACTED_EMAIL], card [REDACTED_CARD], key [REDACTED_SECRET].",
                "pieces of {size}"
            );
            assert_eq!(counts.total(), 3);
            let text = String::from_utf8(raw).unwrap();
            assert!(
                !text.contains("bob.smith") && !text.contains("4111") && !text.contains("AKIA")
            );
            assert!(text.ends_with("data: [DONE]\n\n"));
            let last = &events[events.len() - 1];
            assert_eq!(last["choices"][0]["finish_reason"], "stop");
            assert_eq!(last["usage"]["total_tokens"], 12, "usage untouched");
            assert_eq!(
                events.len(),
                answer.chars().count() + 1,
                "one event out per event in"
            );
        }
    }

    /// A chat stream calling tool `name` with `pieces` as its streamed arguments, read
    /// through the redactor: the arguments the client gets, and the events.
    fn streamed_arguments(name: &str, pieces: &[String]) -> (String, Vec<Value>) {
        let mut input = String::new();
        for (i, piece) in pieces.iter().enumerate() {
            let call = if i == 0 {
                json!({"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": piece}})
            } else {
                json!({"index": 0, "function": {"arguments": piece}})
            };
            input.push_str(&format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null}]})
            ));
        }
        input.push_str(&format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        ));
        let (events, _, _) = run(&input, 5);
        let got = events
            .iter()
            .filter_map(|e| {
                e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        (got, events)
    }

    #[test]
    fn tool_call_arguments_and_the_responses_api_are_streamed_too() {
        let args = r#"{"to":"jane@example.org","note":"hi"}"#;
        let pieces: Vec<String> = args.chars().map(String::from).collect();
        let (got, events) = streamed_arguments("send", &pieces);
        assert_eq!(got, r#"{"to":"[REDACTED_EMAIL]","note":"hi"}"#);
        assert_eq!(
            events[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "send"
        );

        // Arguments assigning a secret to its name, streamed a few characters at a time: the
        // name gives the context, whatever the value holds and wherever it is cut.
        let args = r#"{"aws_secret_access_key": "q8Xv2LmN4pR7tY1wZ3bC5dF9gH0jK6sU/eW+aQoI", "password": "Zx9;mQ2#v€L", "n": 2}"#;
        let chars: Vec<char> = args.chars().collect();
        let pieces: Vec<String> = chars.chunks(3).map(|p| p.iter().collect()).collect();
        let (got, _) = streamed_arguments("login", &pieces);
        assert_eq!(
            got,
            r#"{"aws_secret_access_key": "[REDACTED_SECRET]", "password": "[REDACTED_SECRET]", "n": 2}"#
        );

        // Responses API: deltas, then the done event with the whole text.
        let text = "Call me at (415) 555-0123 today";
        let mut input = String::new();
        for (n, c) in text.chars().enumerate() {
            input.push_str(&format!(
                "event: response.output_text.delta\ndata: {}\n\n",
                json!({
                "type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
                "content_index": 0, "delta": c.to_string(), "sequence_number": n})
            ));
        }
        input.push_str(&format!(
            "event: response.output_text.done\ndata: {}\n\n",
            json!({
            "type": "response.output_text.done", "item_id": "msg_1", "output_index": 0,
            "content_index": 0, "text": text, "sequence_number": 99})
        ));
        input.push_str(&format!("event: response.completed\ndata: {}\n\n", json!({
            "type": "response.completed", "response": {"output": [{"content": [{"type": "output_text", "text": text}]}]}})));
        let (events, raw, _) = run(&input, 3);
        let deltas: String = events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .filter_map(|e| e["delta"].as_str())
            .collect();
        assert_eq!(deltas, "Call me at [REDACTED_PHONE] today");
        let done = events
            .iter()
            .find(|e| e["type"] == "response.output_text.done")
            .unwrap();
        assert_eq!(done["text"], "Call me at [REDACTED_PHONE] today");
        let completed = events
            .iter()
            .find(|e| e["type"] == "response.completed")
            .unwrap();
        assert_eq!(
            completed["response"]["output"][0]["content"][0]["text"],
            "Call me at [REDACTED_PHONE] today"
        );
        let raw = String::from_utf8(raw).unwrap();
        assert!(
            raw.contains("event: response.output_text.delta\n"),
            "event names kept"
        );
        assert!(!raw.contains("555-0123"));
    }

    /// Token log probabilities rebuild a masked value a token at a time: they are dropped.
    /// Strings outside the streamed fields (a transcript, a new field) are scanned too.
    #[test]
    fn logprobs_are_dropped_and_every_string_is_scanned() {
        let email = "bob.smith@example.com";
        let mut input = String::new();
        for (i, c) in email.chars().enumerate() {
            let lp = json!({"content": [{"token": c.to_string(), "logprob": -0.1,
                "bytes": [c as u32], "top_logprobs": [{"token": c.to_string(), "logprob": -0.1,
                "bytes": [c as u32]}]}]});
            let v = json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0,
                "delta": {"content": c.to_string(), "audio": {"transcript": c.to_string()}},
                "logprobs": lp, "finish_reason": null}],
                "extra": format!("note {i} for jane@example.org")});
            input.push_str(&format!("data: {v}\n\n"));
        }
        input.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
        for size in [1, 9, 4096] {
            let (events, raw, _) = run(&input, size);
            let text = String::from_utf8(raw).unwrap();
            assert!(!text.contains("jane@"), "{text}");
            assert!(events.iter().all(|e| e["choices"][0]["logprobs"].is_null()));
            assert_eq!(content(&events), "[REDACTED_EMAIL]");
            let transcript: String = events
                .iter()
                .filter_map(|e| e["choices"][0]["delta"]["audio"]["transcript"].as_str())
                .collect();
            assert_eq!(transcript, "[REDACTED_EMAIL]", "pieces of {size}");
        }
        // The Responses API: `logprobs` lists emptied, other strings scanned, the events
        // sluice adds carry nothing of the original.
        let text = "mail bob.smith@example.com";
        let mut input = String::new();
        for (n, c) in text.chars().enumerate() {
            input.push_str(&format!(
                "data: {}\n\n",
                json!({"type": "response.output_text.delta",
                "item_id": "m", "output_index": 0, "content_index": 0, "delta": c.to_string(),
                "logprobs": [{"token": c.to_string(), "logprob": -0.5}],
                "obfuscation": "jane@example.org", "sequence_number": n})
            ));
        }
        input.push_str(&format!(
            "data: {}\n\n",
            json!({"type": "response.output_text.done",
            "item_id": "m", "output_index": 0, "content_index": 0, "text": text,
            "logprobs": [{"token": "bob", "logprob": -0.5}], "sequence_number": 99})
        ));
        let (events, raw, _) = run(&input, 5);
        let raw = String::from_utf8(raw).unwrap();
        assert!(!raw.contains("bob") && !raw.contains("jane@"), "{raw}");
        // Emptied; an event sluice adds carries none.
        assert!(events
            .iter()
            .all(|e| e.get("logprobs").is_none_or(|l| *l == json!([]))));
        assert!(events.iter().any(|e| e.get("logprobs").is_some()));
    }

    /// A hostile upstream shapes a finishing choice so that held-back text has nowhere to go
    /// (a `delta` that is a string): the stream fails, nothing panics, nothing leaks.
    #[test]
    fn a_choice_that_cannot_hold_released_text_fails_the_stream() {
        for last in [
            json!({"delta": "x", "finish_reason": "stop"}),
            json!({"delta": ["x"], "finish_reason": "stop"}),
            json!({"delta": {"content": 5}, "finish_reason": "stop"}),
        ] {
            let mut last = last;
            last["index"] = json!(0);
            let input = format!(
                "{}data: {}\n\n",
                chunk("mail bob.smith@exa"),
                json!({"object": "chat.completion.chunk", "choices": [last]})
            );
            let e = Engine::new();
            let mut r = Redactor::new(&e, Scan::ALL, 256, 1 << 20);
            let mut out = r.push(input.as_bytes());
            out.extend(r.finish());
            let text = String::from_utf8(out).unwrap();
            assert!(r.failed(), "{text}");
            assert!(!text.contains("bob.smith"), "{text}");
        }
    }

    #[test]
    fn framing_edge_cases() {
        // CRLF line ends, comments, multi-line data, an event split mid-line, no [DONE].
        let input = ": keep-alive\r\n\r\ndata: {\"object\":\"chat.completion.chunk\",\"choices\":\r\ndata: [{\"index\":0,\"delta\":{\"content\":\"x@y.com \"}}]}\r\n\r\nid: 7\r\ndata: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}\r\n\r\n";
        for size in [1, 2, 3, 1000] {
            let e = Engine::new();
            let mut r = Redactor::new(&e, Scan::ALL, 256, 1 << 20);
            let mut out = Vec::new();
            for piece in input.as_bytes().chunks(size) {
                out.extend(r.push(piece));
            }
            out.extend(r.finish());
            let text = String::from_utf8(out).unwrap();
            // Written back as read, LF line ends: the comment a bare keep-alive.
            assert!(text.starts_with(":\n\n"), "{text:?}");
            assert!(text.contains("id: 7\n"), "{text:?}");
            assert!(!text.contains('\r'), "{text:?}");
            assert!(!text.contains("x@y.com"), "{text:?}");
            assert!(text.contains("[REDACTED_EMAIL] "), "{text:?}");
            // The held-back "ok" comes out at the end, in a chunk of its own.
            assert!(text.trim_end().ends_with("}"), "{text:?}");
            assert!(text.contains("\"ok\""), "{text:?}");
        }
    }

    #[test]
    fn an_event_that_cannot_be_scanned_ends_the_stream_with_an_error_event() {
        let e = Engine::new();
        let mut r = Redactor::new(&e, Scan::ALL, 256, 1024);
        let mut out = r.push(chunk("hello ").as_bytes());
        out.extend(r.push(b"data: {not json bob@example.com}\n\n"));
        out.extend(r.push(chunk("more").as_bytes()));
        out.extend(r.finish());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"code\":\"unscannable_response\""), "{text}");
        assert!(
            !text.contains("bob@example.com") && !text.contains("more"),
            "{text}"
        );
        assert!(r.failed());
        // An event that never ends is refused past the bound.
        let mut r = Redactor::new(&e, Scan::ALL, 256, 1024);
        let out = r.push(format!("data: \"{}", "a".repeat(2000)).as_bytes());
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("unscannable_response"));
    }
}
