//! Data residency: the region comes from the header, the key's pin, the org's default or the
//! config; pins are hard limits; a request is served only by an upstream of its region, with
//! failover inside the region and never outside it.

use std::time::Duration;

use crate::support::*;

fn upstreams(list: &[(&str, &str, String)]) -> String {
    list.iter()
        .map(|(name, region, url)| {
            format!(
                "[[upstreams]]\nname = \"{name}\"\nregion = \"{region}\"\nbase_url = \"{url}\"\n"
            )
        })
        .collect()
}

fn send(p: &Proxy, auth: &str, region: Option<&str>) -> RawResponse {
    let hdr = region.map_or(String::new(), |r| format!("X-Sluice-Region: {r}\r\n"));
    raw(
        p.port,
        &post("/v1/chat/completions", b"{}", &format!("{auth}{hdr}")),
    )
    .unwrap()
}

fn bearer(k: &serde_json::Value) -> String {
    format!("Authorization: Bearer {}\r\n", k["key"].as_str().unwrap())
}

#[test]
fn header_key_pin_and_org_default_choose_the_region() {
    let (us, eu1, eu2, apac) = (
        Upstream::start(),
        Upstream::start(),
        Upstream::start(),
        Upstream::start(),
    );
    let s = Setup::new(
        &upstreams(&[
            ("us-1", "us", us.base_url()),
            ("eu-1", "eu", eu1.base_url()),
            ("eu-2", "eu", eu2.base_url()),
            ("apac-1", "apac", apac.base_url()),
        ]),
        "",
    );
    let apac_key = s.cli_json(
        &["keys", "create", "--org", &s.org_id, "--region", "apac"],
        b"",
    );
    let eu_org = s.cli_json(&["orgs", "create", "eu-org", "--region", "eu"], b"");
    let eu_org_key = s.cli_json(
        &["keys", "create", "--org", eu_org["id"].as_str().unwrap()],
        b"",
    );
    let p = s.spawn();
    let plain = p.auth();

    // No header, no pin: the configured default (us).
    let r = send(&p, &plain, None);
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.header("x-sluice-region"), Some("us"));
    assert_eq!(r.header("x-sluice-upstream"), Some("us-1"));
    assert_eq!(us.requests().len(), 1);
    // The header chooses, and is not forwarded.
    let r = send(&p, &plain, Some("apac"));
    assert_eq!(r.header("x-sluice-upstream"), Some("apac-1"));
    assert_eq!(apac.requests()[0].header("x-sluice-region"), None);
    // Several upstreams in a region share its traffic.
    for _ in 0..6 {
        let r = send(&p, &plain, Some("eu"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-sluice-region"), Some("eu"));
    }
    assert!(!eu1.requests().is_empty() && !eu2.requests().is_empty());
    assert_eq!(eu1.requests().len() + eu2.requests().len(), 6);

    // A key pin: no header needed; another region is refused.
    let r = send(&p, &bearer(&apac_key), None);
    assert_eq!(r.header("x-sluice-region"), Some("apac"));
    let r = send(&p, &bearer(&apac_key), Some("apac"));
    assert_eq!(r.status, 200);
    let before = (
        us.requests().len(),
        eu1.requests().len() + eu2.requests().len(),
    );
    let r = send(&p, &bearer(&apac_key), Some("eu"));
    assert_eq!(r.status, 403, "{}", r.body_text());
    assert_eq!(r.code(), "permission_denied");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("region_not_allowed"));
    // An org default pins its keys the same way.
    let r = send(&p, &bearer(&eu_org_key), None);
    assert_eq!(r.header("x-sluice-region"), Some("eu"));
    let r = send(&p, &bearer(&eu_org_key), Some("us"));
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "permission_denied");
    assert_eq!(
        us.requests().len(),
        before.0,
        "a refused request reached us"
    );
    // Unknown or repeated region names.
    let r = send(&p, &plain, Some("mars"));
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "invalid_region");
    let r = raw(
        p.port,
        &p.post(
            "/v1/chat/completions",
            b"{}",
            "X-Sluice-Region: eu\r\nX-Sluice-Region: us\r\n",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 400);
    p.metrics_with(&["region=\"apac\",route=\"chat_completions\",status=\"200\"} 3"]);
}

#[test]
fn a_region_without_upstreams_is_503_and_no_upstream_is_contacted() {
    let us = Upstream::start();
    let s = Setup::new(&upstreams(&[("us-1", "us", us.base_url())]), "");
    let pinned = s.cli_json(
        &["keys", "create", "--org", &s.org_id, "--region", "eu"],
        b"",
    );
    let p = s.spawn();
    for (auth, header) in [(p.auth(), Some("eu")), (bearer(&pinned), None)] {
        let r = send(&p, &auth, header);
        assert_eq!(r.status, 503, "{}", r.body_text());
        assert_eq!(r.code(), "region_unavailable");
        assert_security_headers(&r);
    }
    assert!(us.requests().is_empty());
    assert_eq!(us.connections(), 0);
    // The pin to a region without upstreams was reported at start.
    assert!(
        p.log()
            .contains("pinned to a region no [[upstreams]] entry serves"),
        "{}",
        p.log()
    );
}

#[test]
fn failover_retries_inside_the_region_only() {
    let (us, eu2, apac) = (Upstream::start(), Upstream::start(), Upstream::start());
    // eu-1 accepts TCP (its health check passes) until the listener is dropped; then every
    // connection to it is refused and requests must fail over to eu-2.
    let eu1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let eu1_url = format!("http://{}", eu1.local_addr().unwrap());
    let p = Proxy::start_with(
        &upstreams(&[
            ("us-1", "us", us.base_url()),
            ("eu-1", "eu", eu1_url),
            ("eu-2", "eu", eu2.base_url()),
            ("apac-1", "apac", apac.base_url()),
        ]),
        "[residency]\nhealth_check_secs = 3600\n",
    );
    // The first health check connects to eu-1 at startup: wait for it (eu-1 then counts as
    // healthy), then refuse every later connection.
    eu1.set_nonblocking(true).unwrap();
    eventually(
        "the first health check of eu-1",
        Duration::from_secs(10),
        || eu1.accept().is_ok(),
    );
    drop(eu1);
    for _ in 0..6 {
        let r = send(&p, &p.auth(), Some("eu"));
        assert_eq!(r.status, 200, "{}", r.body_text());
        assert_eq!(r.header("x-sluice-upstream"), Some("eu-2"));
    }
    assert_eq!(eu2.requests().len(), 6);
    // The retried attempt carries the body once, with its length.
    for r in eu2.requests() {
        assert_eq!(r.body, b"{}".to_vec());
        assert_eq!(r.header("content-length"), Some("2"));
    }
    assert!(us.requests().is_empty() && apac.requests().is_empty());
    assert!(
        p.log().contains("retrying in the same region"),
        "{}",
        p.log()
    );
}

#[test]
fn a_region_that_is_entirely_down_never_spills_into_another() {
    let (us, apac) = (Upstream::start(), Upstream::start());
    let (eu1, eu2) = (refused_port(), refused_port());
    let p = Proxy::start_with(
        &upstreams(&[
            ("us-1", "us", us.base_url()),
            ("eu-1", "eu", format!("http://127.0.0.1:{}", eu1.port)),
            ("eu-2", "eu", format!("http://127.0.0.1:{}", eu2.port)),
            ("apac-1", "apac", apac.base_url()),
        ]),
        "",
    );
    for _ in 0..10 {
        let r = send(&p, &p.auth(), Some("eu"));
        assert!(
            (r.status == 502 && r.code() == "upstream_unreachable")
                || (r.status == 503 && r.code() == "region_unavailable"),
            "{} {}",
            r.status,
            r.body_text()
        );
        assert_eq!(r.header("x-sluice-region"), None);
    }
    assert!(us.requests().is_empty(), "an eu request reached us");
    assert!(apac.requests().is_empty(), "an eu request reached apac");
    assert_eq!(us.connections() + apac.connections(), 0);
    // The other regions are still served.
    assert_eq!(send(&p, &p.auth(), Some("apac")).status, 200);
}

/// An upstream that fails its health check is named in the log (not a debug dump of the
/// backend), and the request line's latency is a plain number.
#[test]
fn a_failing_upstream_is_named_in_the_log() {
    let up = Upstream::start();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let upstreams = format!(
        "{}[[upstreams]]\nname = \"eu-down\"\nregion = \"eu\"\nbase_url = \"http://127.0.0.1:{dead_port}\"\n",
        mock_upstream(&up, "")
    );
    let p = Setup::new(&upstreams, "[residency]\nhealth_check_secs = 1\n").spawn();
    eventually(
        "the failing upstream logged",
        std::time::Duration::from_secs(10),
        || p.log().contains("fails its health check"),
    );
    let log = p.log();
    let line = log
        .lines()
        .find(|l| l.contains("fails its health check"))
        .unwrap();
    assert!(line.contains("eu-down"), "{line}");
    assert!(
        !line.contains("Backend {") && !line.contains("ext:"),
        "{line}"
    );
}
