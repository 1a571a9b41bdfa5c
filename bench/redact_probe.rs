//! Redaction under an instruction counter: `valgrind --tool=callgrind
//! target/release/examples/redact_probe N [dense|chat|clean|json]` redacts a 64 KB text with
//! PII in every sentence N times (`dense`, the default), a 2 KB JSON chat body of clean prose
//! 100 N times (`chat`), 64 KB of clean prose N times (`clean`), or a 1 MB JSON body of 400
//! messages, one in ten with PII, N times (`json`). Instruction counts do not depend on what else the machine is doing, so two builds
//! compare exactly where criterion's timings drift; subtract a run with N = 0 (the engine's
//! construction) and divide by N.

use sluice::redact::{Counts, Engine, Scan};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(10, |a| a.parse().expect("N is a count"));
    let mode = args.next().unwrap_or_else(|| "dense".to_string());
    let e = Engine::new();
    let mut total = 0usize;
    let prose = "The quarterly report for 2024 shows revenue of $1,234.56 million, up 12.5% from \
                 Q3. Please summarize the main risks in three bullet points and keep it under 200 \
                 words. Version 2.3.1 of the service handled 45,000 requests per second at p99 of \
                 120 ms. ";
    match mode.as_str() {
        "clean" => {
            let t = prose.repeat(64 * 1024 / prose.len() + 1)[..64 * 1024].to_string();
            for _ in 0..n {
                let out = e.redact_text(&t, Scan::ALL, &mut Counts::default());
                total += out.map_or(0, |o| o.len());
            }
        }
        "json" => {
            let messages: Vec<serde_json::Value> = (0..400)
                .map(|i| {
                    let content = if i % 10 == 0 {
                        "Contact jane.doe@example.com or (415) 555-0123. ".repeat(50)
                    } else {
                        prose.repeat(2500 / prose.len() + 1)[..2500].to_string()
                    };
                    serde_json::json!({"role": "user", "content": content})
                })
                .collect();
            let big = serde_json::to_string(
                &serde_json::json!({"model": "gpt-4o", "messages": messages}),
            )
            .expect("a JSON value serialises");
            for _ in 0..n {
                let out = e.redact_json(&big, Scan::ALL, &mut Counts::default());
                total += out.ok().flatten().map_or(0, |o| o.len());
            }
        }
        "chat" => {
            let s = "The quarterly report for 2024 shows revenue of $1,234.56 million, up 12.5% \
                     from Q3. Please summarize the main risks in three bullet points and keep it \
                     under 200 words. Version 2.3.1 of the service handled 45,000 requests per \
                     second at p99 of 120 ms. ";
            let clean = s.repeat(1900 / s.len() + 1)[..1900].to_string();
            let chat =
                serde_json::to_vec(&serde_json::json!({"model": "gpt-4o-mini", "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": clean}]}))
                .expect("a JSON value serialises");
            for _ in 0..n * 100 {
                let r = e.redact_body(&chat, Some(b"application/json"), None, 10 << 20, Scan::ALL);
                total += r.map_or(0, |r| r.counts.total() as usize);
            }
        }
        _ => {
            let s = "Contact jane.doe@example.com or (415) 555-0123. SSN 123-45-6789, card 4111 \
                     1111 1111 1111. Also +44 20 7946 0958 and bob_smith+x@mail.example.co.uk \
                     about order 987654321. ";
            let mut t = s.repeat(64 * 1024 / s.len() + 1);
            t.truncate(64 * 1024);
            for _ in 0..n {
                let out = e.redact_text(&t, Scan::ALL, &mut Counts::default());
                total += out.map_or(0, |o| o.len());
            }
        }
    }
    println!("{total}");
}
