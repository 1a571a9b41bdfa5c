//! A fleet: many sidecars sharing their limits through a real redis-server, and what happens
//! when Redis goes away.

use crate::support::*;
use std::time::{Duration, Instant};

fn fleet_toml(redis: &Redis, extra: &str) -> String {
    format!(
        "[fleet]\nredis_url = \"{}\"\nredis_timeout_ms = 500\n{extra}\n",
        redis.url()
    )
}

/// `n` sidecars with copies of one store (org `test`, its key, as `setup` made them).
fn sidecars(up: &Upstream, fleet: &str, n: usize, setup: impl Fn(&Setup)) -> (Vec<Proxy>, String) {
    let first = Setup::new(&mock_upstream(up, ""), fleet);
    setup(&first);
    let key = first.key.clone();
    let mut all = Vec::new();
    for _ in 1..n {
        let s = Setup::bare(&mock_upstream(up, ""), fleet);
        std::fs::create_dir_all(s.db().parent().unwrap()).unwrap();
        std::fs::copy(first.db(), s.db()).unwrap();
        all.push(s.spawn());
    }
    all.insert(0, first.spawn());
    (all, key)
}

#[test]
fn an_rpm_limit_holds_for_the_fleet_and_redis_outages_fall_back_as_configured() {
    let up = Upstream::start();
    let mut redis = Redis::start();
    let (fleet, key) = sidecars(&up, &fleet_toml(&redis, ""), 3, |s| {
        s.cli_json(&["orgs", "update", &s.org_id, "--rpm", "5"], b"");
    });
    // 12 requests spread over 3 sidecars: 5 in, 7 refused (not 5 per sidecar).
    let mut ok = 0;
    for i in 0..12 {
        let r = chat_with_key(fleet[i % 3].port, &key);
        match r.status {
            200 => ok += 1,
            429 => assert_eq!(r.code(), "rate_limited"),
            s => panic!("status {s}: {}", r.body_text()),
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(up.requests().len(), 5);
    for p in &fleet {
        p.metrics_with(&["sluice_fleet_redis_up 1"]);
    }

    // Redis goes away: `local` (the default) counts per process, says so once.
    redis.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = chat_with_key(fleet[0].port, &key);
        if r.status == 200 {
            break;
        }
        // Each sidecar's own counter starts empty: the first request it sees gets in, unless
        // Redis was still believed up (then the call fails and falls back at once).
        assert!(Instant::now() < deadline, "{}", r.body_text());
    }
    fleet[0].metrics_with(&["sluice_fleet_redis_up 0"]);
    let log = fleet[0].log();
    assert_eq!(
        log.matches("redis unreachable").count(),
        1,
        "said once per outage:\n{log}"
    );
}

#[test]
fn with_on_redis_error_deny_limited_requests_are_refused_while_redis_is_down() {
    let up = Upstream::start();
    let mut redis = Redis::start();
    let (fleet, key) = sidecars(
        &up,
        &fleet_toml(&redis, "on_redis_error = \"deny\""),
        1,
        |s| {
            s.cli_json(&["orgs", "update", &s.org_id, "--rpm", "50"], b"");
        },
    );
    let p = &fleet[0];
    assert_eq!(chat_with_key(p.port, &key).status, 200);
    redis.kill();
    let started = Instant::now();
    let r = chat_with_key(p.port, &key);
    assert_eq!(r.status, 503, "{}", r.body_text());
    assert_eq!(r.code(), "limits_unavailable");
    assert_eq!(r.header("retry-after"), Some("1"));
    // Bounded: a dead Redis never hangs a request.
    assert!(started.elapsed() < Duration::from_secs(3));
    let r = chat_with_key(p.port, &key);
    assert_eq!(r.code(), "limits_unavailable");
    p.metrics_with(&["sluice_fleet_redis_up 0"]);
    // A key without limits does not need Redis.
    let other = p.cli_json(&["orgs", "create", "unlimited"], b"");
    let free = p.cli_json(
        &["keys", "create", "--org", other["id"].as_str().unwrap()],
        b"",
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while chat_with_key(p.port, free["key"].as_str().unwrap()).status != 200 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    // Redis back on its address: limited requests pass again, and the log says so.
    let _redis = Redis::start_on(redis.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while chat_with_key(p.port, &key).status != 200 {
        assert!(Instant::now() < deadline, "not reconnected");
        std::thread::sleep(Duration::from_millis(100));
    }
    p.metrics_with(&["sluice_fleet_redis_up 1"]);
    assert!(p.log().contains("redis reachable again"));
}
