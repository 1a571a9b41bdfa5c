//! Quality checks for the engine: a labelled corpus from a deterministic generator (positives of
//! every entity in every supported format, hard negatives that look like them), with recall and
//! the share of negatives kept reported per entity and required to be at least 0.99; and
//! property tests (no panics on arbitrary input, valid JSON stays valid, redaction is
//! idempotent).

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Counts, Engine, Entity, Scan};

fn luhn_digit(partial: &[u8]) -> u8 {
    // The check digit that makes partial + digit pass Luhn.
    let sum: u32 = partial
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = x as u32;
            if i % 2 == 0 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

fn card_digits(rng: &mut StdRng, prefix: &str, len: usize, valid: bool) -> String {
    let mut d: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
    while d.len() < len - 1 {
        d.push(rng.gen_range(0..10));
    }
    let check = luhn_digit(&d);
    d.push(if valid {
        check
    } else {
        (check + 1 + rng.gen_range(0..9)) % 10
    });
    d.iter().map(|x| (b'0' + x) as char).collect()
}

fn group(s: &str, sizes: &[usize], sep: &str) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    for &n in sizes {
        out.push(&s[i..i + n]);
        i += n;
    }
    out.join(sep)
}

fn card(rng: &mut StdRng, valid: bool) -> String {
    let (prefix, len) = *[
        ("4", 16),
        ("51", 16),
        ("55", 16),
        ("2221", 16),
        ("2720", 16),
        ("34", 15),
        ("37", 15),
        ("6011", 16),
        ("65", 16),
        ("3530", 16),
        ("4", 13),
    ]
    .get(rng.gen_range(0..11))
    .unwrap();
    let d = card_digits(rng, prefix, len, valid);
    match (rng.gen_range(0..3), len) {
        (0, _) => d,
        (k, 16) => group(&d, &[4, 4, 4, 4], if k == 1 { " " } else { "-" }),
        (k, 15) => group(&d, &[4, 6, 5], if k == 1 { " " } else { "-" }),
        _ => d,
    }
}

fn ssn_parts(rng: &mut StdRng) -> (u32, u32, u32) {
    let area = loop {
        let a = rng.gen_range(1..900);
        if a != 666 {
            break a;
        }
    };
    (area, rng.gen_range(1..100), rng.gen_range(1..10000))
}

fn ssn(rng: &mut StdRng) -> String {
    let (a, g, s) = ssn_parts(rng);
    match rng.gen_range(0..4) {
        0 => format!("{a:03}-{g:02}-{s:04}"),
        1 => format!("{a:03} {g:02} {s:04}"),
        2 => format!("SSN: {a:03}{g:02}{s:04}"),
        _ => format!("social security number {a:03}{g:02}{s:04}"),
    }
}

fn phone(rng: &mut StdRng) -> String {
    let area = rng.gen_range(200..1000);
    let exch = rng.gen_range(200..1000);
    let line = rng.gen_range(0..10000);
    match rng.gen_range(0..12) {
        0 => format!("({area}) {exch}-{line:04}"),
        1 => format!("{area}-{exch}-{line:04}"),
        2 => format!("{area}.{exch}.{line:04}"),
        3 => format!("{area} {exch} {line:04}"),
        4 => format!("+1 {area} {exch} {line:04}"),
        5 => format!("1-{area}-{exch}-{line:04}"),
        6 => format!("+1 ({area}) {exch}-{line:04}"),
        7 => format!("+44 20 {:04} {:04}", rng.gen_range(1000..10000), line),
        8 => format!(
            "+33 {} {:02} {:02} {:02} {:02}",
            rng.gen_range(1..10),
            rng.gen_range(0..100),
            rng.gen_range(0..100),
            rng.gen_range(0..100),
            rng.gen_range(0..100)
        ),
        9 => format!("+49 30 {}", rng.gen_range(1000000..10000000)),
        10 => format!("+81-3-{:04}-{line:04}", rng.gen_range(1000..10000)),
        _ => format!("+{}{area}{exch}{line:04}", rng.gen_range(1..10)),
    }
}

fn email(rng: &mut StdRng) -> String {
    let first = [
        "jane",
        "john",
        "a",
        "maria.garcia",
        "li_wei",
        "o.brien",
        "x9",
    ];
    let tags = ["", "+news", "+1", ".work", "_2024"];
    let domains = [
        "example.com",
        "mail.example.co.uk",
        "corp-mail.example.org",
        "x.io",
        "sub.domain.example.travel",
    ];
    format!(
        "{}{}@{}",
        first[rng.gen_range(0..first.len())],
        tags[rng.gen_range(0..tags.len())],
        domains[rng.gen_range(0..domains.len())]
    )
}

fn wrap(rng: &mut StdRng, v: &str) -> String {
    let t = [
        "Please contact {} about the order.",
        "({})",
        "<{}>",
        "value: {}.",
        "{}",
        "Customer wrote: \"my details are {}, thanks\"",
        "line one\n{}\nline three",
    ];
    t[rng.gen_range(0..t.len())].replace("{}", v)
}

fn negative(rng: &mut StdRng, kind: usize) -> (Entity, String) {
    match kind {
        0 => (Entity::Card, card(rng, false)),
        1 => (Entity::Card, card_digits(rng, "4", 16, false)),
        2 => {
            let (_, g, s) = ssn_parts(rng);
            let a = [0, 666, rng.gen_range(900..1000)][rng.gen_range(0..3)];
            (Entity::Ssn, format!("{a:03}-{g:02}-{s:04}"))
        }
        3 => {
            let (a, _, s) = ssn_parts(rng);
            (Entity::Ssn, format!("{a:03}-00-{s:04}"))
        }
        4 => (
            Entity::Ssn,
            format!("order #{}", rng.gen_range(100_000_000..1_000_000_000)),
        ),
        5 => (
            Entity::Ssn,
            format!(
                "tracking number {}",
                rng.gen_range(100_000_000..1_000_000_000)
            ),
        ),
        6 => (
            Entity::Phone,
            format!(
                "{}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                rng.gen_range(1990..2040),
                rng.gen_range(1..13),
                rng.gen_range(1..29),
                rng.gen_range(0..24),
                rng.gen_range(0..60),
                rng.gen_range(0..60)
            ),
        ),
        7 => (
            Entity::Phone,
            format!(
                "{:02}/{:02}/{}",
                rng.gen_range(1..13),
                rng.gen_range(1..29),
                rng.gen_range(1990..2040)
            ),
        ),
        8 => (
            Entity::Phone,
            format!(
                "{}.{}.{}.{}",
                rng.gen_range(1..256),
                rng.gen_range(0..256),
                rng.gen_range(0..256),
                rng.gen_range(0..256)
            ),
        ),
        9 => (Entity::Phone, uuid::Uuid::from_u128(rng.gen()).to_string()),
        10 => (
            Entity::Phone,
            format!(
                "v{}.{}.{}",
                rng.gen_range(0..30),
                rng.gen_range(0..100),
                rng.gen_range(0..1000)
            ),
        ),
        11 => (
            Entity::Card,
            format!(
                "${},{:03}.{:02}",
                rng.gen_range(1..1000),
                rng.gen_range(0..1000),
                rng.gen_range(0..100)
            ),
        ),
        12 => (
            Entity::Card,
            format!(
                "ORD-{}-{:06}",
                rng.gen_range(2000..2040),
                rng.gen_range(0..1_000_000)
            ),
        ),
        13 => (
            Entity::Phone,
            format!("{}", rng.gen_range(1_600_000_000_000u64..1_800_000_000_000)),
        ),
        14 => (
            Entity::Phone,
            format!(
                "{}:{:02}:{:02}",
                rng.gen_range(0..24),
                rng.gen_range(0..60),
                rng.gen_range(0..60)
            ),
        ),
        _ => (
            Entity::Email,
            ["@here", "a@b", "user@localhost", "see @jane", "x@y"][rng.gen_range(0..5)].to_string(),
        ),
    }
}

#[test]
fn labelled_corpus_recall_and_negatives_kept_are_at_least_99_percent() {
    let e = Engine::new();
    let mut rng = StdRng::seed_from_u64(0x0051_07CE);
    let mut pos = [(0u32, 0u32); 4]; // (found, total) per entity
    let mut neg = [(0u32, 0u32); 4]; // (kept, total)
    let mut misses = Vec::new();
    for i in 0..4000 {
        let (entity, value) = match i % 4 {
            0 => (Entity::Email, email(&mut rng)),
            1 => (Entity::Ssn, ssn(&mut rng)),
            2 => (Entity::Phone, phone(&mut rng)),
            _ => (Entity::Card, card(&mut rng, true)),
        };
        let text = wrap(&mut rng, &value);
        let mut c = Counts::default();
        let out = e
            .redact_text(&text, Scan::PII, &mut c)
            .unwrap_or_else(|| text.clone());
        // The sensitive part: the value without its context words.
        let core: String = value
            .trim_start_matches(|ch: char| ch.is_ascii_alphabetic() || ch == ':' || ch == ' ')
            .to_string();
        let ok = !out.contains(&core) && out.contains(entity.token());
        let slot = &mut pos[entity as usize];
        slot.1 += 1;
        if ok {
            slot.0 += 1;
        } else if misses.len() < 20 {
            misses.push(format!("{entity:?}: {text:?} -> {out:?}"));
        }
    }
    let mut false_pos = Vec::new();
    for i in 0..4000 {
        let (entity, value) = negative(&mut rng, i % 16);
        let text = wrap(&mut rng, &value);
        let mut c = Counts::default();
        let kept = e.redact_text(&text, Scan::PII, &mut c).is_none();
        let slot = &mut neg[entity as usize];
        slot.1 += 1;
        if kept {
            slot.0 += 1;
        } else if false_pos.len() < 20 {
            false_pos.push(format!("{entity:?}: {text:?}"));
        }
    }
    let mut report = String::new();
    let mut fail = false;
    // The PII entities: secrets have their own positive and negative tests (`secret.rs`).
    for entity in [Entity::Email, Entity::Ssn, Entity::Phone, Entity::Card] {
        let (f, t) = pos[entity as usize];
        let (k, n) = neg[entity as usize];
        let recall = f as f64 / t.max(1) as f64;
        let kept = if n == 0 { 1.0 } else { k as f64 / n as f64 };
        report.push_str(&format!(
            "{:<6} recall {recall:.4} ({f}/{t})  negatives kept {kept:.4} ({k}/{n})\n",
            entity.as_str()
        ));
        fail |= recall < 0.99 || kept < 0.99;
    }
    println!("{report}");
    assert!(
        !fail,
        "{report}\nmisses: {misses:#?}\nfalse positives: {false_pos:#?}"
    );
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        "\\PC{0,40}".prop_map(serde_json::Value::String),
        "(mail [a-z]{1,5}@[a-z]{1,5}\\.com|4111 1111 1111 1111|415-555-0123|123-45-6789| |x)+"
            .prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("\\PC{0,10}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn engine() -> &'static Engine {
    static E: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    E.get_or_init(Engine::new)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn text_redaction_never_panics_and_is_idempotent(s in "\\PC{0,200}|[0-9 +().@a-z-]{0,60}") {
        let e = engine();
        let mut c = Counts::default();
        let once = e.redact_text(&s, Scan::PII, &mut c).unwrap_or_else(|| s.clone());
        let mut c2 = Counts::default();
        prop_assert_eq!(e.redact_text(&once, Scan::PII, &mut c2), None, "not idempotent: {:?} -> {:?}", s, once);
    }

    #[test]
    fn json_stays_valid_and_redaction_is_idempotent(v in json_value()) {
        let e = engine();
        let doc = serde_json::to_string(&v).unwrap();
        let mut c = Counts::default();
        let once = e.redact_json(&doc, Scan::ALL, &mut c).unwrap().unwrap_or_else(|| doc.clone());
        prop_assert!(serde_json::from_str::<serde_json::Value>(&once).is_ok(), "{}", once);
        let mut c2 = Counts::default();
        prop_assert_eq!(e.redact_json(&once, Scan::ALL, &mut c2).unwrap(), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..300)) {
        let e = engine();
        let _ = e.redact_body(&b, None, None, 1 << 20, Scan::ALL);
        let _ = e.redact_body(&b, None, Some(b"gzip"), 1 << 20, Scan::ALL);
    }
}
