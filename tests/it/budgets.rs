//! Rate limits and token budgets of one sidecar: per org (all its keys together) and per key,
//! requests and tokens per minute, token budgets per day or month, settled from usage.

use crate::support::*;
use std::time::{Duration, Instant};

/// Wait until the proxy has finished (logged, settled) `n` answers with usage.
fn settled(p: &Proxy, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = p.metrics();
        let done: f64 = m
            .lines()
            .filter(|l| {
                l.starts_with("gen_ai_client_token_usage_count")
                    && l.contains("gen_ai_token_type=\"input\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if done as usize >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{n} answers not settled:\n{m}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_org_rpm_holds_for_all_its_keys_together() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let org = s.cli_json(&["orgs", "update", &s.org_id, "--rpm", "3"], b"");
    assert_eq!(org["rpm"], 3);
    let other = s.cli_json(&["keys", "create", "--org", &s.org_id, "--name", "b"], b"");
    let other = other["key"].as_str().unwrap().to_string();
    let p = s.spawn();
    for key in [&p.key, &p.key, &other] {
        assert_eq!(chat_with_key(p.port, key).status, 200);
    }
    let r = chat_with_key(p.port, &other);
    assert_eq!(r.status, 429, "{}", r.body_text());
    assert_eq!(r.code(), "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    assert_eq!(up.requests().len(), 3);
    // Removed (`none`): the org is unlimited again within a second.
    let org = p.cli_json(&["orgs", "update", &p.org_id, "--rpm", "none"], b"");
    assert!(org["rpm"].is_null());
    let deadline = Instant::now() + Duration::from_secs(3);
    while chat_with_key(p.port, &p.key).status != 200 {
        assert!(Instant::now() < deadline, "the removed limit still refuses");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_token_budget_is_settled_from_usage_and_refuses_when_spent() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    // Every mock answer uses 4 tokens (1 in, 3 out); the estimate of a request (a quarter of
    // its 70-byte body) is larger, and the usage replaces it.
    let k = s.cli_json(
        &[
            "keys",
            "create",
            "--org",
            &s.org_id,
            "--budget-tokens",
            "10",
            "--budget-period",
            "day",
        ],
        b"",
    );
    let listed = s.cli_json(&["keys", "list", "--org", &s.org_id], b"");
    let row = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == k["id"])
        .unwrap()
        .clone();
    assert_eq!(row["budget_tokens"], 10, "{row}");
    assert_eq!(row["budget_period"], "day");
    let key = k["key"].as_str().unwrap().to_string();
    let p = s.spawn();
    // 4, 8, then 12 (the third answer was under way when it overshot): spent.
    for i in 1..=3 {
        let r = chat_with_key(p.port, &key);
        assert_eq!(r.status, 200, "request {i}: {}", r.body_text());
        settled(&p, i);
    }
    let r = chat_with_key(p.port, &key);
    assert_eq!(r.status, 429, "{}", r.body_text());
    assert_eq!(r.code(), "budget_exceeded");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let midnight = (now / 86_400 + 1) * 86_400;
    assert!(
        retry <= midnight - now + 1 && retry + 5 >= midnight - now,
        "{retry}"
    );
    assert_eq!(up.requests().len(), 3);
    // The org's other keys are not affected.
    assert_eq!(chat_with_key(p.port, &p.key).status, 200);
    // The audit record of the key's creation has its budget.
    let created = audit_records(&p)
        .into_iter()
        .find(|r| r["action"] == "key.create" && r["target_id"] == k["id"])
        .unwrap();
    assert_eq!(created["details"]["budget_tokens"], 10);
    assert_eq!(created["details"]["budget_period"], "day");
}

#[test]
fn tokens_per_minute_refuse_once_spent() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let k = s.cli_json(&["keys", "create", "--org", &s.org_id, "--tpm", "6"], b"");
    let key = k["key"].as_str().unwrap().to_string();
    let p = s.spawn();
    for i in 1..=2 {
        assert_eq!(chat_with_key(p.port, &key).status, 200);
        settled(&p, i);
    }
    let r = chat_with_key(p.port, &key);
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "rate_limited");
    assert_eq!(up.requests().len(), 2);
}

/// The `x-ratelimit-*` headers of `r` for `measure` (`requests`, `tokens`): limit,
/// remaining, and the reset in milliseconds (read from OpenAI's `1m30.5s` notation).
fn ratelimit(r: &RawResponse, measure: &str) -> Option<(u64, u64, u64)> {
    let get = |what: &str| r.header(&format!("x-ratelimit-{what}-{measure}"));
    let reset = get("reset")?;
    let (minutes, secs) = match reset.split_once('m') {
        Some((m, s)) if !s.is_empty() => (m.parse::<u64>().unwrap(), s),
        _ => (0, reset),
    };
    let ms = match secs.strip_suffix("ms") {
        Some(ms) => ms.parse::<u64>().unwrap(),
        None => (secs.strip_suffix('s').unwrap().parse::<f64>().unwrap() * 1000.0).round() as u64,
    };
    Some((
        get("limit")?.parse().unwrap(),
        get("remaining")?.parse().unwrap(),
        minutes * 60_000 + ms,
    ))
}

#[test]
fn answers_say_what_is_left_of_the_keys_rate_limits_as_openai_does() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    // The org allows 5 a minute, the key 3: the key's is the tighter one.
    s.cli_json(&["orgs", "update", &s.org_id, "--rpm", "5"], b"");
    let k = s.cli_json(
        &[
            "keys", "create", "--org", &s.org_id, "--rpm", "3", "--tpm", "100000",
        ],
        b"",
    );
    let key = k["key"].as_str().unwrap().to_string();
    let p = s.spawn();
    for left in [2, 1, 0] {
        let r = chat_with_key(p.port, &key);
        assert_eq!(r.status, 200, "{}", r.body_text());
        let (limit, remaining, reset) = ratelimit(&r, "requests").expect("no request headers");
        assert_eq!((limit, remaining), (3, left));
        // Whole again once this minute's requests have left the sliding window: between one
        // and two minutes from now.
        assert!((60_000..=120_000).contains(&reset), "{reset}");
        // Tokens: the estimate of this request is taken from the key's 100000 a minute.
        let (limit, remaining, reset) = ratelimit(&r, "tokens").expect("no token headers");
        assert_eq!(limit, 100_000);
        assert!(remaining < 100_000 && remaining > 90_000, "{remaining}");
        assert!(reset > 0, "{reset}");
        settled(&p, (3 - left) as usize);
    }
    // Refused: nothing left, and the headers still say so beside Retry-After.
    let r = chat_with_key(p.port, &key);
    assert_eq!(r.status, 429, "{}", r.body_text());
    let (limit, remaining, _) = ratelimit(&r, "requests").unwrap();
    assert_eq!((limit, remaining), (3, 0));
    assert!(r.header("retry-after").is_some());

    // A key limited by its org alone: the org's counter (5, three taken above).
    let other = p.cli_json(&["keys", "create", "--org", &p.org_id, "--name", "b"], b"");
    let other = other["key"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(3);
    let r = loop {
        let r = chat_with_key(p.port, &other);
        if r.status != 401 {
            break r;
        }
        assert!(Instant::now() < deadline, "the new key is not accepted");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(ratelimit(&r, "requests").map(|q| (q.0, q.1)), Some((5, 1)));
    // No token limit on this key or its org: no token figures at all. The provider's describe
    // sluice's upstream account, shared by every org: never passed on.
    assert_eq!(r.header("x-ratelimit-limit-tokens"), None);
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), None);

    // An org and key without limits: no rate limit figures, the provider's included.
    p.cli_json(&["orgs", "update", &p.org_id, "--rpm", "none"], b"");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = chat_with_key(p.port, &other);
        if r.status == 200 && r.header("x-ratelimit-limit-requests").is_none() {
            assert!(
                !r.headers
                    .iter()
                    .any(|(k, _)| k.starts_with("x-ratelimit-")
                        || k.starts_with("anthropic-ratelimit-")),
                "{:?}",
                r.headers
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the org's limit is still applied"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn limits_are_checked_on_input() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    for args in [
        vec!["keys", "create", "--org", &s.org_id, "--tpm", "0"],
        vec![
            "keys",
            "create",
            "--org",
            &s.org_id,
            "--budget-period",
            "day",
        ],
        vec![
            "keys",
            "create",
            "--org",
            &s.org_id,
            "--budget-tokens",
            "5",
            "--budget-period",
            "week",
        ],
        vec!["orgs", "update", &s.org_id, "--rpm", "-1"],
        vec!["orgs", "update", &s.org_id, "--tpm", "99999999999"],
    ] {
        let out = s.cli(&args, b"");
        assert!(!out.status.success(), "{args:?} accepted");
    }
}

/// A key with a token budget of `tokens` for the day, usable once the running sluice has it.
fn budget_key(s: &Setup, tokens: &str) -> String {
    let k = s.cli_json(
        &[
            "keys",
            "create",
            "--org",
            &s.org_id,
            "--budget-tokens",
            tokens,
            "--budget-period",
            "day",
        ],
        b"",
    );
    k["key"].as_str().unwrap().to_string()
}

/// Concurrent requests reserve the output they may use, not only their input: twelve at once
/// on a 1000-token budget, each answer using 900, spend at most one answer past the budget.
#[test]
fn concurrent_requests_reserve_their_output_and_overshoot_by_one_answer_at_most() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let key = budget_key(&s, "1000");
    let p = s.spawn();
    let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let statuses: Vec<u16> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..12)
            .map(|_| {
                sc.spawn(|| {
                    raw(
                        p.port,
                        &post(
                            "/v1/chat/completions",
                            body,
                            &format!("Authorization: Bearer {key}\r\nX-Mock: big-usage:300\r\nConnection: close\r\n"),
                        ),
                    )
                    .unwrap()
                    .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(ok >= 1, "{statuses:?}");
    assert!(
        ok * 900 <= 1000 + 900,
        "{ok} answers of 900 tokens on a budget of 1000: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
}

/// A client that reads part of a streamed answer and resets the connection before the usage
/// chunk still pays for its input and what it was sent: nothing is given back.
#[test]
fn a_stream_reset_before_its_usage_still_counts() {
    use std::io::{Read, Write};
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let key = budget_key(&s, "40");
    let p = s.spawn();
    let body =
        br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut c = connect(p.port).unwrap();
    c.write_all(&post(
        "/v1/chat/completions",
        body,
        &format!("Authorization: Bearer {key}\r\nX-Mock: sse:50:20\r\n"),
    ))
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("tok1") {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        got.extend_from_slice(&buf[..n]);
    }
    drop(c);
    // Input (a quarter of the body) plus what was sent counts: the budget of 40 is spent.
    eventually(
        "the reset stream's tokens counted",
        Duration::from_secs(10),
        || chat_with_key(p.port, &key).status == 429,
    );
}

/// A successful answer that never reaches the client (too large to scan with response
/// redaction on) was still produced by the provider: its input counts, nothing is given back.
#[test]
fn an_answer_cut_by_sluice_still_counts_its_input() {
    let up = Upstream::start();
    let s = Setup::new(
        &mock_upstream(&up, ""),
        "[redaction]\nmax_response_bytes = 1024\n",
    );
    let k = s.cli_json(
        &[
            "keys",
            "create",
            "--org",
            &s.org_id,
            "--budget-tokens",
            "10",
            "--budget-period",
            "day",
        ],
        b"",
    );
    let id = k["id"].as_str().unwrap();
    s.cli_json(&["keys", "update", id, "--response-redaction", "on"], b"");
    let key = k["key"].as_str().unwrap().to_string();
    let p = s.spawn();
    // The answer (about 2 KB) is over max_response_bytes: cut, never delivered.
    let big = format!("json-text:{}", "a".repeat(2000));
    let r = raw(
        p.port,
        &post(
            "/v1/chat/completions",
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
            &format!("Authorization: Bearer {key}\r\nX-Mock: {big}\r\nConnection: close\r\n"),
        ),
    );
    assert!(
        r.map_or(true, |r| r.status != 429),
        "refused before it was sent"
    );
    // Its input estimate (a quarter of a 70-byte body) spent the budget of 10: once the cut
    // request is logged (and settled in the same step), the next one is refused.
    eventually("the cut request logged", Duration::from_secs(5), || {
        p.metrics()
            .lines()
            .any(|l| l.starts_with("sluice_requests_total{") && l.ends_with(" 1"))
    });
    let r = chat_with_key(p.port, &key);
    assert_eq!(r.status, 429, "{}", r.body_text());
}
