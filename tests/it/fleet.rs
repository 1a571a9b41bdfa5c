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
    // 12 requests spread over 3 sidecars: 5 in, 7 refused (not 5 per sidecar), and each
    // answer says what is left of the fleet's limit, whichever sidecar gave it.
    let mut ok = 0;
    for i in 0..12 {
        let r = chat_with_key(fleet[i % 3].port, &key);
        let left = r
            .header("x-ratelimit-remaining-requests")
            .map(|v| v.parse::<u64>().unwrap());
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("5"));
        match r.status {
            200 => {
                ok += 1;
                assert_eq!(left, Some(5 - ok));
            }
            429 => {
                assert_eq!(r.code(), "rate_limited");
                assert_eq!(left, Some(0));
            }
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
fn a_counter_given_back_below_zero_does_not_raise_the_limit() {
    // Redis restarted or failed over under requests in flight: their give-backs land on an
    // empty counter and leave it negative. The window starts again from nothing.
    let up = Upstream::start();
    let redis = Redis::start();
    let (fleet, key) = sidecars(&up, &fleet_toml(&redis, ""), 1, |s| {
        s.cli_json(&["orgs", "update", &s.org_id, "--rpm", "3"], b"");
    });
    assert_eq!(chat_with_key(fleet[0].port, &key).status, 200);
    let counters = redis.keys("sluice:*rpm*");
    assert!(!counters.is_empty(), "no counter in Redis");
    for c in &counters {
        assert_eq!(
            redis.command(&format!("SET {c} -50")).as_deref(),
            Some("+OK")
        );
    }
    let admitted = (0..6)
        .filter(|_| chat_with_key(fleet[0].port, &key).status == 200)
        .count();
    assert!(admitted <= 3, "{admitted} admitted on an rpm of 3");
    assert!(admitted >= 1);
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

/// A key for a bundle: (key, sha256, prefix), from `keys create --print-hash`.
fn bundle_key(s: &Setup) -> (String, String, String) {
    let k = s.cli_json(&["keys", "create", "--print-hash"], b"");
    let field = |n: &str| k[n].as_str().unwrap().to_string();
    (field("key"), field("sha256"), field("prefix"))
}

fn key_toml(name: &str, k: &(String, String, String), extra: &str) -> String {
    format!(
        "[[orgs.keys]]\nname = \"{name}\"\nsha256 = \"{}\"\nprefix = \"{}\"\n{extra}\n",
        k.1, k.2
    )
}

/// Write `text` to `path` as a mounted Secret changes: a new file renamed over the old.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn apply_converges_the_store_to_the_bundle_idempotently_and_audited() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let (a, b) = (bundle_key(&s), bundle_key(&s));
    let file = s.dir.path().join("fleet.toml");
    let hash = bcrypt::hash("a long enough password", 10).unwrap();
    let user = format!(
        "[[orgs.users]]\nemail = \"Auditor@Example.com\"\nrole = \"auditor\"\npassword_bcrypt = \"{hash}\"\n"
    );
    let v1 = format!(
        "[[orgs]]\nname = \"shop\"\nregion = \"eu\"\nrpm = 100\n{}{}{user}",
        key_toml("checkout", &a, "tpm = 5000"),
        key_toml("search", &b, "")
    );
    std::fs::write(&file, &v1).unwrap();
    let f = file.to_str().unwrap();

    let plan = s.cli_json(&["apply", "-f", f, "--dry-run"], b"");
    let actions: Vec<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["org.create", "key.create", "key.create", "user.create"]
    );
    assert_eq!(plan["dry_run"], true);
    let orgs = s.cli_json(&["orgs", "list"], b"");
    assert_eq!(
        orgs["orgs"].as_array().unwrap().len(),
        1,
        "dry run changed the store"
    );

    let done = s.cli_json(&["apply", "-f", f], b"");
    assert_eq!(done["changes"].as_array().unwrap().len(), 4);
    let users = s.cli_json(&["users", "list"], b"");
    let u = &users["users"].as_array().unwrap()[0];
    assert_eq!(
        (u["email"].as_str(), u["role"].as_str()),
        (Some("Auditor@Example.com"), Some("auditor"))
    );
    // Idempotent: a second run changes nothing.
    let again = s.cli_json(&["apply", "-f", f], b"");
    assert_eq!(again["changes"], serde_json::json!([]), "{again}");

    let orgs = s.cli_json(&["orgs", "list"], b"");
    let shop = orgs["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "shop")
        .unwrap()
        .clone();
    assert_eq!(
        (shop["region"].as_str(), shop["rpm"].as_u64()),
        (Some("eu"), Some(100))
    );
    let shop_id = shop["id"].as_str().unwrap().to_string();
    // A key made by hand in the same org is not the bundle's: never revoked by it.
    let manual = s.cli_json(
        &["keys", "create", "--org", &shop_id, "--name", "manual"],
        b"",
    );

    // v2: `search` is gone, `checkout` loses its tpm, the org gets a budget.
    let v2 = format!(
        "[[orgs]]\nname = \"shop\"\nregion = \"eu\"\nrpm = 100\nbudget_tokens = 1000000\n{}",
        key_toml("checkout", &a, "")
    );
    std::fs::write(&file, &v2).unwrap();
    let done = s.cli_json(&["apply", "-f", f], b"");
    let mut got: Vec<String> = done["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["action"].as_str().unwrap(),
                c["detail"].as_str().unwrap()
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "key.revoke no longer in the bundle",
            "key.update tpm",
            "org.update budget",
            "user.delete no longer in the bundle"
        ]
    );
    assert_eq!(
        s.cli_json(&["users", "list"], b"")["users"],
        serde_json::json!([])
    );
    let keys = s.cli_json(&["keys", "list", "--org", &shop_id], b"");
    let status = |name: &str| {
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .map(|k| k["status"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(status("search"), "revoked");
    assert_eq!(status("checkout"), "active");
    assert_eq!(status("manual"), "active");
    assert!(manual["id"].is_string());

    // Every change is audited, by the CLI user, marked as an apply.
    let via: Vec<serde_json::Value> = audit_records(&s)
        .into_iter()
        .filter(|r| r["details"]["via"] == "apply")
        .collect();
    assert_eq!(via.len(), 8, "{via:#?}");
    assert!(via
        .iter()
        .all(|r| r["actor"].as_str().unwrap().starts_with("cli:")));
    assert_eq!(s.cli_json(&["audit", "verify"], b"")["ok"], true);
    // Keys appear only as hash and prefix: the plaintext is nowhere in the store.
    assert_secrets_nowhere(&s, &[&a.0, &b.0, "a long enough password"]);

    // Refused bundles change nothing and say why without quoting values.
    for bad in [
        "[[orgs]]\nname = \"x\"\nregion = \"mars\"\n".to_string(),
        format!(
            "[[orgs]]\nname = \"x\"\n{}",
            key_toml("k", &(String::new(), "abc".into(), a.2.clone()), "")
        ),
        format!(
            "[[orgs]]\nname = \"x\"\n{}{}",
            key_toml("k1", &a, ""),
            key_toml("k2", &a, "")
        ),
        "[[orgs]]\nname = \"x\"\nunknown = 1\n".to_string(),
        // Owners and admins need TOTP; passwords only as bcrypt hashes.
        format!(
            "[[orgs]]\nname = \"x\"\n{}",
            user.replace("auditor", "owner")
        ),
        format!(
            "[[orgs]]\nname = \"x\"\n{}",
            user.replace(&hash, "mars-plaintext-password")
        ),
    ] {
        std::fs::write(&file, &bad).unwrap();
        let out = s.cli(&["apply", "-f", f], b"");
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("mars"), "{err}");
    }
    assert_eq!(
        s.cli_json(&["orgs", "list"], b"")["orgs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // An org made by hand (`test`, by Setup) is not taken over either.
    std::fs::write(&file, format!("{v2}[[orgs]]\nname = \"test\"\nrpm = 1\n")).unwrap();
    let out = s.cli(&["apply", "-f", f], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("orgs[1]: an org with this name exists"),
        "{err}"
    );
    // Rows made by hand are never taken over: a user with the same email (made by hand in the
    // bundle's org), a key with the same hash. The apply fails whole, naming kind and place.
    s.cli_json(
        &[
            "users",
            "create",
            "--email",
            "hand@example.com",
            "--org",
            &shop_id,
            "--role",
            "auditor",
        ],
        b"a long enough password\n",
    );
    let manual_key = manual["key"].as_str().unwrap();
    let manual_hash: String = {
        use sha2::Digest;
        sha2::Sha256::digest(manual_key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let hand_user = user
        .replace("Auditor@Example.com", "hand@example.com")
        .replace(&hash, &bcrypt::hash("another password here", 10).unwrap());
    let manual_toml = key_toml(
        "manual",
        &(String::new(), manual_hash, manual_key[..14].to_string()),
        "",
    );
    for (extra, what) in [(hand_user.as_str(), "user"), (manual_toml.as_str(), "key")] {
        std::fs::write(&file, format!("{v2}{extra}")).unwrap();
        let out = s.cli(&["apply", "-f", f], b"");
        assert_eq!(out.status.code(), Some(1), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("was not made by a bundle"), "{what}: {err}");
        assert!(!err.contains("hand@") && !err.contains(manual_key), "{err}");
    }
    let users = s.cli_json(&["users", "list"], b"");
    let hand = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "hand@example.com")
        .unwrap()
        .clone();
    assert_eq!(hand["role"], "auditor", "untouched");

    // A key the bundle revoked comes back when a bundle lists it again...
    std::fs::write(&file, &v1).unwrap();
    let done = s.cli_json(&["apply", "-f", f], b"");
    assert!(
        done["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["action"] == "key.restore"),
        "{done}"
    );
    let keys = s.cli_json(&["keys", "list", "--org", &shop_id], b"");
    let row = |name: &str| {
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(row("search")["status"], "active");
    // ...one a person revoked stays revoked.
    let checkout = row("checkout")["id"].as_str().unwrap().to_string();
    s.cli_json(&["keys", "revoke", &checkout], b"");
    let out = s.cli(&["apply", "-f", f], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("revoked by hand"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An empty bundle (a 0-byte file) or one revoking more than max_removal_ratio (0.5) of
    // the keys the bundle manages is refused, nothing changed, unless it says it means it.
    for text in ["", "[[orgs]]\nname = \"shop\"\n"] {
        replace_file(&file, text);
        let out = s.cli(&["apply", "-f", f], b"");
        assert_eq!(out.status.code(), Some(1), "{text:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("allow_mass_removal"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = |name: &str| {
        let keys = s.cli_json(&["keys", "list", "--org", &shop_id], b"");
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .map(|k| k["status"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(status("search"), "active");
    replace_file(
        &file,
        "allow_mass_removal = true\n[[orgs]]\nname = \"shop\"\n",
    );
    s.cli_json(&["apply", "-f", f], b"");
    assert_eq!(status("search"), "revoked");
}

/// The fleet test of issue 19: one Redis, 20 sidecars, one bundle they all watch.
#[test]
fn twenty_sidecars_share_one_bundle_and_one_rpm_limit() {
    const SIDECARS: usize = 20;
    const RPM: usize = 30;
    let up = Upstream::start();
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("fleet.toml");
    let tool = Setup::bare(&mock_upstream(&up, ""), "");
    let (limited, open, newer) = (bundle_key(&tool), bundle_key(&tool), bundle_key(&tool));
    let org = "[[orgs]]\nname = \"fleet\"\n";
    std::fs::write(
        &bundle,
        format!(
            "{org}{}{}",
            key_toml("limited", &limited, &format!("rpm = {RPM}")),
            key_toml("open", &open, "")
        ),
    )
    .unwrap();
    let fleet_cfg = format!(
        "[fleet]\nredis_url = \"{}\"\nredis_timeout_ms = 500\nbundle = \"{}\"\nbundle_poll_secs = 1\n",
        redis.url(),
        bundle.display()
    );
    let sidecars: Vec<Proxy> = (0..SIDECARS)
        .map(|_| Setup::bare(&mock_upstream(&up, ""), &fleet_cfg).spawn())
        .collect();
    // Every sidecar converged to the bundle at start: the key works everywhere.
    for p in &sidecars {
        assert_eq!(chat_with_key(p.port, &open.0).status, 200);
    }

    // The rpm limit holds for the fleet. Start early in a minute so the burst stays in it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60
        > 40
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = up.requests().len();
    let mut admitted = 0;
    for i in 0..RPM * 2 {
        let r = chat_with_key(sidecars[i % SIDECARS].port, &limited.0);
        match r.status {
            200 => admitted += 1,
            429 => assert_eq!(r.code(), "rate_limited"),
            s => panic!("status {s}: {}", r.body_text()),
        }
    }
    assert_eq!(
        admitted, RPM,
        "an rpm of {RPM} admits {RPM} across {SIDECARS} sidecars"
    );
    assert_eq!(up.requests().len() - before, RPM);

    // One bundle change: `open` revoked, `newer` added; every sidecar follows within seconds.
    replace_file(
        &bundle,
        &format!(
            "{org}{}{}",
            key_toml("limited", &limited, &format!("rpm = {RPM}")),
            key_toml("newer", &newer, "")
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    for p in &sidecars {
        loop {
            let (old, new) = (
                chat_with_key(p.port, &open.0),
                chat_with_key(p.port, &newer.0),
            );
            if old.status == 401 && new.status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sidecar {} did not follow the bundle",
                p.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    sidecars[0].metrics_with(&["sluice_bundle_applies_total{outcome=\"ok\"} 2"]);

    // An empty bundle (0 bytes, written atomically, as a broken pipeline would) is refused by
    // every sidecar: nothing is revoked anywhere, and each says so.
    replace_file(&bundle, "");
    for p in &sidecars {
        eventually("the empty bundle refused", Duration::from_secs(15), || {
            p.metrics()
                .contains("sluice_bundle_applies_total{outcome=\"error\"} 1")
        });
        assert_eq!(
            chat_with_key(p.port, &newer.0).status,
            200,
            "revoked by an empty bundle"
        );
    }

    // Redis dies: the default fallback counts per process, so the limited key gets in again
    // (each sidecar's own counter is empty), and each sidecar says so.
    redis.kill();
    let mut back_in = 0;
    for p in &sidecars[..5] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = chat_with_key(p.port, &limited.0);
            if r.status == 200 {
                back_in += 1;
                break;
            }
            assert!(Instant::now() < deadline, "{}", r.body_text());
        }
        p.metrics_with(&[
            "sluice_fleet_redis_up 0",
            "sluice_fleet_local_fallback_total",
        ]);
    }
    assert_eq!(back_in, 5);
}

/// A fresh sidecar with `[fleet] bundle` accepts the bundle's keys from its first connection:
/// once `/readyz` says ready (which the harness waits for), the first request with a bundle key
/// is never a 401.
#[test]
fn bundle_keys_work_from_the_first_accepted_connection() {
    let up = Upstream::start();
    let probe = Setup::new(&mock_upstream(&up, ""), "");
    let k = bundle_key(&probe);
    for i in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fleet.toml");
        std::fs::write(
            &file,
            format!("[[orgs]]\nname = \"fresh\"\n{}", key_toml("app", &k, "")),
        )
        .unwrap();
        let s = Setup::bare(
            &mock_upstream(&up, ""),
            &format!("[fleet]\nbundle = \"{}\"\n", file.display()),
        );
        let p = s.spawn();
        let r = chat_with_key(p.port, &k.0);
        assert_eq!(r.status, 200, "start {i}: {}", r.body_text());
    }
}

/// Rotating a key (a new hash in place of the old one) is not a mass removal: the bundle that
/// swaps the only key it manages applies.
#[test]
fn rotating_the_only_key_is_not_a_mass_removal() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    let (a, b) = (bundle_key(&s), bundle_key(&s));
    let file = s.dir.path().join("fleet.toml");
    let f = file.to_str().unwrap();
    std::fs::write(
        &file,
        format!("[[orgs]]\nname = \"shop\"\n{}", key_toml("app", &a, "")),
    )
    .unwrap();
    s.cli_json(&["apply", "-f", f], b"");
    std::fs::write(
        &file,
        format!("[[orgs]]\nname = \"shop\"\n{}", key_toml("app2", &b, "")),
    )
    .unwrap();
    let done = s.cli_json(&["apply", "-f", f], b"");
    let actions: Vec<&str> = done["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"key.create") && actions.contains(&"key.revoke"),
        "{done}"
    );
}
