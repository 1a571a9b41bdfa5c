//! Criterion benches for sluice's per-request work, each next to a baseline measured in the
//! same run: the inbound gate against merely splitting the header block into lines, the model
//! lookup against a full `serde_json::Value` parse of the same body, and key authentication
//! plus credential injection against a bare SHA-256 of the key.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sluice::admin::{self, KeyPii, KeySpec};
use sluice::auth::{self, Snapshot};
use sluice::inbound::{self, Bounds};
use sluice::store::Store;
use sluice::vault::Keyring;

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

fn auth_and_credential(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("bench.db")).unwrap();
    let ring = Keyring::new(&Keyring::generate(), &[]).unwrap();
    let org = admin::create_org(&store, "bench", None, None).unwrap();
    let mut last = None;
    for i in 0..200 {
        let spec = KeySpec {
            org_id: org.id.clone(),
            name: format!("k{i}"),
            pii: KeyPii::Inherit,
            region: None,
            rpm: None,
            expires: None,
        };
        last = Some(admin::create_key(&store, &spec).unwrap());
    }
    admin::set_credential(&store, &ring, "openai", "sk-proj-0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789abcdefghijklmnopqrstuvwxyz", None).unwrap();
    let snap = Snapshot::load(&store, &ring, None).unwrap();
    let key = last.unwrap().key;
    let authz = format!("Bearer {}", key.as_str());
    let now = time::OffsetDateTime::now_utc();
    let cred = snap.credential("openai", now).unwrap();

    let mut g = c.benchmark_group("auth");
    g.bench_function("baseline_sha256_of_key", |b| {
        b.iter(|| auth::hash(black_box(key.as_str())))
    });
    g.bench_function("bearer_parse_and_authenticate_200_keys", |b| {
        b.iter(|| {
            let k = auth::bearer(&[black_box(authz.as_bytes())], false, None).unwrap();
            snap.authenticate(k, now).unwrap()
        })
    });
    g.bench_function("credential_lookup_and_header_value", |b| {
        b.iter(|| {
            snap.credential(black_box("openai"), now)
                .unwrap()
                .header_value("Bearer ")
                .unwrap()
        })
    });
    g.bench_function("baseline_header_value_copy", |b| {
        let plain = format!("Bearer {}", "x".repeat(110));
        b.iter(|| http::HeaderValue::from_str(black_box(&plain)).unwrap())
    });
    drop(cred);
    g.finish();
}

criterion_group!(benches, gate, model, auth_and_credential);
criterion_main!(benches);
