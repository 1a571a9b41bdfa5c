//! The JSON walker and the engine on arbitrary bytes: never panics; when the input is valid JSON
//! the output is valid JSON, and redacting the output again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::redact::{Counts, Engine, Scan};
use std::sync::OnceLock;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(Engine::new)
}

fuzz_target!(|data: &[u8]| {
    let e = engine();
    let _ = e.redact_body(data, None, None, 1 << 20, Scan::ALL);
    let _ = e.redact_body(data, None, Some(b"gzip"), 1 << 20, Scan::ALL);
    if let Ok(text) = std::str::from_utf8(data) {
        let mut c = Counts::default();
        if let Ok(out) = e.redact_json(text, Scan::ALL, &mut c) {
            let out = out.unwrap_or_else(|| text.to_string());
            if serde_json::from_str::<serde_json::Value>(text).is_ok() {
                assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok());
            }
            let mut c2 = Counts::default();
            assert_eq!(e.redact_json(&out, Scan::ALL, &mut c2).ok(), Some(None));
        }
    }
});
