//! The text engine on arbitrary UTF-8: never panics, and redaction is idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::redact::{Counts, Engine, Scan};
use std::sync::OnceLock;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(Engine::new)
}

fuzz_target!(|text: &str| {
    let e = engine();
    let mut c = Counts::default();
    let once = e
        .redact_text(text, Scan::ALL, &mut c)
        .unwrap_or_else(|| text.to_string());
    let mut c2 = Counts::default();
    assert_eq!(e.redact_text(&once, Scan::ALL, &mut c2), None);
});
