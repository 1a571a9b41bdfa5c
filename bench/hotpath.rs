//! Criterion benches for sluice's per-request work, each next to a baseline measured in the
//! same run: the inbound gate against merely splitting the header block into lines, and the
//! model lookup against a full `serde_json::Value` parse of the same body.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sluice::inbound::{self, Bounds};

fn head() -> Vec<u8> {
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8480\r\nAuthorization: Bearer sk-sluice-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\nContent-Type: application/json\r\nContent-Length: 1024\r\nUser-Agent: OpenAI/Python 1.50.0\r\nX-Stainless-Lang: python\r\nX-Stainless-Package-Version: 1.50.0\r\nX-Stainless-OS: Linux\r\nX-Stainless-Arch: x64\r\nX-Stainless-Runtime: CPython\r\nAccept: application/json\r\n\r\n".to_vec()
}

fn body(size: usize) -> Vec<u8> {
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(size / 45 + 1);
    format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"be brief"}},{{"role":"user","content":"{}"}}],"temperature":0.2}}"#,
        &text[..size]
    )
    .into_bytes()
}

fn gate(c: &mut Criterion) {
    let h = head();
    let bounds = Bounds {
        max_header_bytes: 32 * 1024,
        max_headers: 100,
        max_body_bytes: 10 << 20,
    };
    let mut g = c.benchmark_group("gate");
    g.bench_function("baseline_split_lines", |b| {
        b.iter(|| black_box(&h).split(|&x| x == b'\n').count())
    });
    g.bench_function("inbound_check", |b| {
        b.iter(|| inbound::check("POST", b"/v1/chat/completions", black_box(&h), &bounds).unwrap())
    });
    g.finish();
}

fn model(c: &mut Criterion) {
    let mut g = c.benchmark_group("model");
    for size in [1024usize, 32 * 1024, 256 * 1024] {
        let b = body(size);
        g.bench_function(format!("baseline_serde_value_{size}"), |bn| {
            bn.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&b)).unwrap())
        });
        g.bench_function(format!("inbound_model_{size}"), |bn| {
            bn.iter(|| inbound::model(black_box(&b)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, gate, model);
criterion_main!(benches);
