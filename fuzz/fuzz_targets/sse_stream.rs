//! A streamed chat answer carrying planted PII, framed every way the event-stream format allows
//! (CRLF, LF or lone CR line ends, a BOM, comments, `id`/`event`/unknown fields, several `data`
//! lines for one event) and cut anywhere: no fragment of a planted value reaches the client, and
//! the text the client reads is the redaction of the whole answer. Arbitrary bytes fed to the
//! same redactor never panic, and whatever it writes holds no CR (it writes back what it read).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::redact::sse::Redactor;
use sluice::redact::{Counts, Engine, Scan};
use std::sync::OnceLock;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(Engine::new)
}

const ANSWER: &str =
    "Write to jane.doe@example.com or call (415) 555-0123, card 4111 1111 1111 1111, done.";
const PLANTED: [&str; 4] = ["jane.doe", "example.com", "555-0123", "4111 1111"];

/// The client's reading: the `data` of each event, by the WHATWG rules (sluice's own reader).
fn client_content(out: &[u8]) -> String {
    let mut d = sluice::sse::Decoder::new();
    let mut events = d.push(out);
    events.extend(d.finish());
    events
        .iter()
        .filter_map(|e| e.data.as_deref())
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let e = engine();
    if mode & 1 == 0 {
        // Arbitrary bytes: no panic, LF only out.
        let mut r = Redactor::new(e, Scan::ALL, 256, 4096);
        let mut out = Vec::new();
        for piece in rest.chunks(1 + (mode as usize >> 1)) {
            out.extend(r.push(piece));
        }
        out.extend(r.finish());
        assert!(!out.contains(&b'\r'));
        return;
    }
    // A structured stream: the fuzz bytes choose piece sizes, line ends, noise and cuts.
    let mut bytes = rest.iter().copied().cycle();
    let mut next = || bytes.next().unwrap_or(0);
    let mut stream = Vec::new();
    if mode & 2 != 0 {
        stream.extend_from_slice("\u{feff}".as_bytes());
    }
    let chars: Vec<char> = ANSWER.chars().collect();
    let mut at = 0;
    let mut n = 0;
    while at < chars.len() {
        let len = 1 + (next() as usize % 6);
        let piece: String = chars[at..(at + len).min(chars.len())].iter().collect();
        at += len;
        let eol: &str = match next() % 3 {
            0 => "\n",
            1 => "\r",
            _ => "\r\n",
        };
        let noise = next();
        if noise & 1 != 0 {
            stream.extend_from_slice(format!(": keep{n}{eol}").as_bytes());
        }
        if noise & 2 != 0 {
            stream.extend_from_slice(format!("id: {n}{eol}").as_bytes());
        }
        if noise & 4 != 0 {
            stream.extend_from_slice(format!("event: message{eol}").as_bytes());
        }
        if noise & 8 != 0 {
            stream.extend_from_slice(format!("Data: {piece}{eol}").as_bytes());
        }
        let v = serde_json::json!({"id": "c", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]})
        .to_string();
        if noise & 16 != 0 {
            // The JSON over two data lines (joined with LF, still one document).
            let cut = v.find(',').unwrap_or(0) + 1;
            stream.extend_from_slice(format!("data: {}{eol}data:{}{eol}", &v[..cut], &v[cut..]).as_bytes());
        } else {
            stream.extend_from_slice(format!("data: {v}{eol}").as_bytes());
        }
        stream.extend_from_slice(eol.as_bytes());
        n += 1;
    }
    stream.extend_from_slice(b"data: [DONE]\n\n");
    let mut r = Redactor::new(e, Scan::ALL, 256, 1 << 20);
    let mut out = Vec::new();
    let mut i = 0;
    while i < stream.len() {
        let step = 1 + (next() as usize % 40);
        let end = (i + step).min(stream.len());
        out.extend(r.push(&stream[i..end]));
        i = end;
    }
    out.extend(r.finish());
    let text = String::from_utf8_lossy(&out);
    for p in PLANTED {
        assert!(!text.contains(p), "{p} survived: {text:?}");
    }
    let mut c = Counts::default();
    let want = e.redact_text(ANSWER, Scan::ALL, &mut c).unwrap();
    assert_eq!(client_content(&out), want);
});
