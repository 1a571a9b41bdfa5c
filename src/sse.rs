//! Server-Sent Events, read one way for every stream sluice reads: LLM answers (`stream: true`),
//! MCP servers' POST answers and their GET streams, and the usage chunk sluice takes out.
//!
//! The rules are the WHATWG HTML "event stream interpretation" (section 9.2.6), the ones every
//! client follows: the stream is UTF-8 (invalid sequences read as U+FFFD), one leading BOM is
//! dropped, a line ends with CRLF, LF or a lone CR, a blank line ends an event, a line starting
//! with `:` is a comment, a line without a colon is a field with an empty value, one space after
//! the colon is dropped, `data` lines are joined with LF, an `id` holding NUL is ignored, a
//! `retry` that is not all ASCII digits is ignored, and other field names (case matters: `Data`
//! is not `data`) are ignored.
//!
//! What sluice passes on is written back from what it read, never copied from the input: every
//! line ends with LF, comments go out as a bare `:` (a keep-alive; their text is never read by
//! a client), fields a client ignores are dropped. So the decision (redaction, validation) is
//! made on exactly what the client will read. Plain Rust, no I/O.

/// The byte-order mark a stream may start with.
const BOM: &[u8] = "\u{feff}".as_bytes();

/// One block of an event stream: the lines up to a blank line, as a client reads them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The lines other than `data`, in order, as they are written back.
    lines: Vec<Line>,
    /// Where among `lines` the data lines stood (before `lines[data_at]`).
    data_at: usize,
    /// The `data` lines' values joined with LF; `None` when there was no `data` line (the
    /// block dispatches no event: a comment, a keep-alive, an `id` or `retry` alone).
    pub data: Option<String>,
}

/// A line of a block that is not `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Comment,
    Event(String),
    Id(String),
    Retry(String),
}

impl Event {
    /// Read one block's lines (without the blank line that ends it).
    fn from_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Event {
        let mut ev = Event::default();
        let mut data: Option<String> = None;
        for line in lines {
            if line.starts_with(':') {
                ev.lines.push(Line::Comment);
                continue;
            }
            let (name, value) = match line.split_once(':') {
                Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match name {
                "data" => {
                    match data.as_mut() {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(value);
                        }
                        None => {
                            ev.data_at = ev.lines.len();
                            data = Some(value.to_string());
                        }
                    }
                    continue;
                }
                "event" if is_plain(value) => ev.lines.push(Line::Event(value.to_string())),
                "id" if !value.contains('\0') && is_plain(value) => {
                    ev.lines.push(Line::Id(value.to_string()))
                }
                "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    ev.lines.push(Line::Retry(value.to_string()))
                }
                // Unknown fields, an `id` with NUL, a bad `retry`: a client ignores them. An
                // `event` or `id` holding what some clients split lines at is dropped too.
                _ => {}
            }
        }
        if data.is_none() {
            ev.data_at = ev.lines.len();
        }
        ev.data = data;
        ev
    }

    /// The event's type (`event:`), if it names one.
    pub fn kind(&self) -> Option<&str> {
        self.lines.iter().rev().find_map(|l| match l {
            Line::Event(t) => Some(t.as_str()),
            _ => None,
        })
    }

    /// The block with its `event` and `id` values through `redact` (`Some`: the value's
    /// replacement, such as one with `[REDACTED_EMAIL]`), and a `retry` that `redact` would
    /// change (a card number's digits) dropped: a client hands those values to the app too.
    /// `None` when `redact` changes nothing (nothing is copied then).
    pub fn redacted_fields(&self, mut redact: impl FnMut(&str) -> Option<String>) -> Option<Event> {
        // (line, its replacement; `None`: dropped)
        let mut changes: Vec<(usize, Option<Line>)> = Vec::new();
        for (i, line) in self.lines.iter().enumerate() {
            match line {
                Line::Event(v) => {
                    if let Some(new) = redact(v) {
                        changes.push((i, Some(Line::Event(new))));
                    }
                }
                Line::Id(v) => {
                    if let Some(new) = redact(v) {
                        changes.push((i, Some(Line::Id(new))));
                    }
                }
                Line::Retry(v) => {
                    if redact(v).is_some() {
                        changes.push((i, None));
                    }
                }
                Line::Comment => {}
            }
        }
        if changes.is_empty() {
            return None;
        }
        let mut ev = Event {
            lines: Vec::with_capacity(self.lines.len()),
            data_at: self.data_at,
            data: self.data.clone(),
        };
        let mut changes = changes.into_iter().peekable();
        for (i, line) in self.lines.iter().enumerate() {
            match changes.next_if(|(k, _)| *k == i) {
                Some((_, Some(new))) => ev.lines.push(new),
                Some((_, None)) => {
                    if i < self.data_at {
                        ev.data_at -= 1;
                    }
                }
                None => ev.lines.push(line.clone()),
            }
        }
        Some(ev)
    }

    /// Whether the block holds nothing a client reads (no data, no field, no comment).
    pub fn is_empty(&self) -> bool {
        self.data.is_none() && self.lines.is_empty()
    }

    /// An event of `data` alone, named `kind` when given.
    pub fn new(kind: Option<&str>, data: &str) -> Event {
        Event {
            lines: kind
                .map(|k| Line::Event(k.to_string()))
                .into_iter()
                .collect(),
            data_at: usize::from(kind.is_some()),
            data: Some(data.to_string()),
        }
    }

    /// Write the block back, with `data` in place of its data when given (`None`: as read).
    /// Every line ends with LF; a data value's line breaks become several `data` lines.
    pub fn write(&self, data: Option<&str>, out: &mut Vec<u8>) {
        if self.is_empty() {
            return;
        }
        let data = data.or(self.data.as_deref());
        for (i, line) in self.lines.iter().enumerate() {
            if i == self.data_at {
                push_data(out, data);
            }
            match line {
                Line::Comment => out.extend_from_slice(b":\n"),
                Line::Event(v) => push_field(out, "event", v),
                Line::Id(v) => push_field(out, "id", v),
                Line::Retry(v) => push_field(out, "retry", v),
            }
        }
        if self.data_at >= self.lines.len() {
            push_data(out, data);
        }
        out.push(b'\n');
    }
}

/// Whether a field value holds nothing that any client reads as a line break: the WHATWG rules
/// split at CR and LF only, but readers built on Python's `str.splitlines` (httpx's
/// `aiter_lines`, under the MCP Python SDK's SSE client) also split at VT, FF, FS, GS, RS, NEL,
/// and U+2028/U+2029. Such a value in `event` or `id` could carry a line of its own past sluice.
fn is_plain(value: &str) -> bool {
    !value.chars().any(is_other_break)
}

/// A character some line readers break lines at, besides CR and LF.
fn is_other_break(c: char) -> bool {
    matches!(
        c,
        '\u{0b}' | '\u{0c}' | '\u{1c}' | '\u{1d}' | '\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

fn push_data(out: &mut Vec<u8>, data: Option<&str>) {
    let Some(data) = data else {
        return;
    };
    for line in split_lines(data) {
        if line.contains(is_other_break) {
            // Data sluice writes is JSON: inside a string these characters can be written as
            // escapes, so no reader splits the line (outside one they are not valid JSON).
            let mut escaped = String::with_capacity(line.len() + 12);
            for c in line.chars() {
                if is_other_break(c) {
                    escaped.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    escaped.push(c);
                }
            }
            push_field(out, "data", &escaped);
        } else {
            push_field(out, "data", line);
        }
    }
}

/// Split text at CRLF, LF and lone CR, as the event stream does.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        match t.find(['\r', '\n']) {
            Some(i) => {
                let skip = if t[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&t[i + skip..]);
                Some(&t[..i])
            }
            None => {
                rest = None;
                Some(t)
            }
        }
    })
}

/// Reads an event stream in chunks, cut anywhere, into [`Event`]s.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Whether the stream's first bytes were looked at for a BOM.
    started: bool,
    /// Where in `buf` the search for the end of the current block goes on (bytes before it
    /// were looked at already: a stream trickled in small pieces is read once, not again at
    /// every piece), and where the current line starts.
    scan: usize,
    line_start: usize,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Bytes read but not yet part of a whole block (what a caller bounds).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The bytes not yet part of a whole block, as they came (the decoder is spent).
    pub fn into_pending(self) -> Vec<u8> {
        self.buf
    }

    /// Take the next bytes; the blocks they complete, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(chunk);
        if !self.started {
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return Vec::new();
            }
            self.started = true;
            if self.buf.starts_with(BOM) {
                self.buf.drain(..BOM.len());
            }
        }
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(end) = self.block_end(start) {
            events.push(parse_block(&self.buf[start..end]));
            start = end;
        }
        self.buf.drain(..start);
        self.scan -= start;
        self.line_start -= start;
        events
    }

    /// The end (exclusive, through its blank line) of the block that starts at `start`, if
    /// `buf` holds all of it. A CR as the last byte may be half of a CRLF: wait for more.
    fn block_end(&mut self, start: usize) -> Option<usize> {
        let b = &self.buf;
        let mut i = self.scan.max(start);
        if self.line_start < start {
            self.line_start = start;
        }
        while let Some(off) = memchr::memchr2(b'\n', b'\r', &b[i..]) {
            i += off;
            let eol = match b[i] {
                b'\n' => 1,
                _ if b.get(i + 1) == Some(&b'\n') => 2,
                _ if i + 1 < b.len() => 1,
                _ => {
                    self.scan = i;
                    return None;
                }
            };
            let blank = i == self.line_start;
            i += eol;
            self.line_start = i;
            if blank {
                self.scan = i;
                return Some(i);
            }
        }
        self.scan = b.len();
        None
    }

    /// The stream ended: a last block that was not ended by a blank line, if any. (A client
    /// drops it; sluice hands it over so that a caller may still scan and pass it on.)
    pub fn finish(&mut self) -> Option<Event> {
        // Its lines, whatever ends them (a lone CR at the very end included). Bytes that were
        // waiting to be told from a BOM are not one: they are read as text.
        self.scan = 0;
        self.line_start = 0;
        let ev = parse_block(&std::mem::take(&mut self.buf));
        (!ev.is_empty()).then_some(ev)
    }
}

/// Parse one block's bytes (its lines, with or without the blank line that ends it).
fn parse_block(raw: &[u8]) -> Event {
    let text = String::from_utf8_lossy(raw);
    Event::from_lines(split_lines(&text).filter(|l| !l.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a client dispatches: (type, data, last event id), by the spec's algorithm, written
    /// independently of the decoder: one character at a time over the whole stream.
    fn reference(stream: &[u8]) -> Vec<(String, String, String)> {
        let text = String::from_utf8_lossy(stream);
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let (mut out, mut data, mut kind, mut last_id) =
            (Vec::new(), String::new(), String::new(), String::new());
        let mut lines = Vec::new();
        let mut line = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\r' => {
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    lines.push(std::mem::take(&mut line));
                }
                '\n' => lines.push(std::mem::take(&mut line)),
                c => line.push(c),
            }
        }
        // An unterminated last line (and block) is dropped by a client.
        for l in lines {
            if l.is_empty() {
                if !data.is_empty() {
                    data.pop();
                    out.push((
                        if kind.is_empty() {
                            "message".to_string()
                        } else {
                            kind.clone()
                        },
                        std::mem::take(&mut data),
                        last_id.clone(),
                    ));
                }
                data.clear();
                kind.clear();
                continue;
            }
            if l.starts_with(':') {
                continue;
            }
            let (f, v) = match l.find(':') {
                Some(i) => {
                    let v = &l[i + 1..];
                    (&l[..i], v.strip_prefix(' ').unwrap_or(v))
                }
                None => (l.as_str(), ""),
            };
            match f {
                "event" => kind = v.to_string(),
                "data" => {
                    data.push_str(v);
                    data.push('\n');
                }
                "id" if !v.contains('\0') => last_id = v.to_string(),
                _ => {}
            }
        }
        out
    }

    /// Decode `stream` cut at `cuts`, write every block back, as sluice passes it on.
    fn roundtrip(stream: &[u8], cuts: &[usize]) -> (Vec<Event>, Vec<u8>) {
        let mut d = Decoder::new();
        let mut events = Vec::new();
        let mut at = 0;
        for &c in cuts.iter().chain([stream.len()].iter()) {
            let c = c.clamp(at, stream.len());
            events.extend(d.push(&stream[at..c]));
            at = c;
        }
        let mut out = Vec::new();
        for e in &events {
            e.write(None, &mut out);
        }
        (events, out)
    }

    #[test]
    fn every_line_ending_bom_comments_and_fields() {
        let s = "\u{feff}: hi\r\rdata: a\rdata:b\r\n\r\nevent: x\nid: 1\0\nretry: 5s\nData: no\ndata\n\n";
        let (events, out) = roundtrip(s.as_bytes(), &[]);
        assert_eq!(events[0].data.as_deref(), None, "a comment alone");
        assert_eq!(events[1].data.as_deref(), Some("a\nb"));
        assert_eq!(events[2].data.as_deref(), Some(""));
        assert_eq!(events[2].kind(), Some("x"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            ":\n\ndata: a\ndata: b\n\nevent: x\ndata: \n\n"
        );
        assert_eq!(reference(s.as_bytes()).len(), 2);
    }

    #[test]
    fn what_other_readers_split_lines_at_never_goes_out_raw() {
        let s = "event: message\u{2028}data: {\"x\":1}\nid: 1\u{85}data: 2\ndata: {\"t\":\"a\u{2029}b\u{0b}\"}\n\n";
        let (events, out) = roundtrip(s.as_bytes(), &[]);
        assert_eq!(events[0].kind(), None, "the event name is dropped");
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, "data: {\"t\":\"a\\u2029b\\u000b\"}\n\n");
        let v: serde_json::Value =
            serde_json::from_str(out.strip_prefix("data: ").unwrap().trim()).unwrap();
        assert_eq!(v["t"], "a\u{2029}b\u{0b}");
    }

    #[test]
    fn a_stream_trickled_a_byte_at_a_time_is_read_in_linear_time() {
        let mut d = Decoder::new();
        let mut n = 0;
        // 200,000 one-byte pieces: quadratic rescanning would take minutes.
        for _ in 0..50_000 {
            for b in b"a\n" {
                n += d.push(&[*b]).len();
            }
        }
        for b in b"data: x\r\n\r\n" {
            n += d.push(&[*b]).len();
        }
        assert_eq!(n, 1);
    }

    #[test]
    fn a_cr_at_the_end_of_a_chunk_waits_for_what_follows() {
        let mut d = Decoder::new();
        assert!(d.push(b"data: a\r\n\r").is_empty());
        let e = d.push(b"\ndata: b\n\n");
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].data.as_deref(), Some("b"));
        // A BOM cut in two is still a BOM.
        let mut d = Decoder::new();
        assert!(d.push(&BOM[..1]).is_empty());
        let e = d.push(&[&BOM[1..], b"data: x\n\n".as_slice()].concat());
        assert_eq!(e[0].data.as_deref(), Some("x"));
        // The unterminated end.
        let mut d = Decoder::new();
        assert!(d.push(b"data: tail\r").is_empty());
        assert_eq!(d.finish().unwrap().data.as_deref(), Some("tail"));
    }

    fn arb_stream() -> impl Strategy<Value = Vec<u8>> {
        let eol = prop_oneof![Just("\n"), Just("\r"), Just("\r\n")];
        let line = prop_oneof![
            "data:[ a-z@.\u{e9}]{0,12}",
            "data [a-z]{0,3}",
            "data",
            "event:[ a-z]{0,6}",
            "id:[ a-z0-9\0]{0,4}",
            "retry:[ 0-9a]{0,3}",
            ":[ a-z]{0,6}",
            "[A-Za-z]{1,5}:[ a-z]{0,4}",
            Just(String::new()),
        ];
        (
            any::<bool>(),
            proptest::collection::vec((line, eol), 0..24),
            proptest::collection::vec(any::<u8>(), 0..3),
        )
            .prop_map(|(bom, lines, junk)| {
                let mut s = Vec::new();
                if bom {
                    s.extend_from_slice(BOM);
                }
                for (l, e) in lines {
                    s.extend_from_slice(l.as_bytes());
                    s.extend_from_slice(e.as_bytes());
                }
                // Invalid UTF-8 now and then.
                if junk.first().is_some_and(|b| *b > 0xf0) {
                    s.extend_from_slice(&junk);
                }
                s.extend_from_slice(b"\n\n");
                s
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Whatever the line endings and the cut points, the decoder reads what a client reads,
        /// and what sluice writes back reads, to a client, as the original did.
        #[test]
        fn the_decoder_reads_what_a_client_reads(
            stream in arb_stream(),
            cuts in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let (events, out) = roundtrip(&stream, &cuts);
            let want = reference(&stream);
            let got: Vec<String> = events.iter().filter_map(|e| e.data.clone()).collect();
            let want_data: Vec<String> = want.iter().map(|w| w.1.clone()).collect();
            prop_assert_eq!(got, want_data);
            prop_assert_eq!(reference(&out), want);
            // Written back: LF line ends only, no BOM, no comment text.
            prop_assert!(!out.contains(&b'\r'));
        }
    }
}
