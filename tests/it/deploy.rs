//! What the deployment kit relies on: the sidecar config in the Kubernetes ConfigMap and the
//! container image's built-in config parse with the real loader, `sluice bootstrap` provisions a
//! pod's store idempotently, and `sluice healthcheck` answers for container probes.

use std::os::unix::fs::PermissionsExt;

use sluice::config::Config;

use crate::support::*;

#[test]
fn the_kubernetes_configmap_config_parses() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/sluice.toml");
    let cfg = Config::load(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.listen.proxy.ip().is_loopback());
    assert!(cfg.listen.admin.ip().is_loopback());
    assert_eq!(
        cfg.store.path,
        std::path::Path::new("/var/lib/sluice/sluice.db")
    );
    // The sidecar brokers an MCP server's OAuth token; the manifest stores its client.
    let mcp = &cfg.mcp_servers[0];
    assert_eq!(mcp.credential_kind, sluice::config::CredentialKind::OAuth);
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/deployment.yaml"),
    )
    .unwrap();
    // This file, from the ConfigMap, replaces the image's built-in config (which listens on
    // every interface) in each container of the pod.
    assert!(manifest.contains("{ name: sluice-config, mountPath: /etc/sluice, readOnly: true }"));
    assert!(!manifest.contains("mountPath: /etc/sluice/"));
    assert!(!manifest.contains("subPath"));
    assert!(manifest.contains(&format!("- {}", mcp.credential.as_deref().unwrap())));
    assert!(manifest.contains(&format!("/mcp/{}", mcp.name)));
}

/// `docker run -p` reaches the image's listeners: its built-in config binds every interface of
/// the container, while the admin API (`/api/*`) stays limited to the container's loopback.
#[test]
fn the_container_image_config_parses_and_listens_on_all_interfaces() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg =
        Config::load(Some(&root.join("deploy/container.toml"))).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.listen.proxy.ip().is_unspecified());
    assert!(cfg.listen.admin.ip().is_unspecified());
    assert!(cfg.listen.metrics.ip().is_unspecified());
    assert!(cfg.admin.allow_ips.iter().all(|n| n.addr().is_loopback()));
    assert!(cfg.admin.allows("127.0.0.1".parse().unwrap()));
    assert!(!cfg.admin.allows("172.17.0.1".parse().unwrap()));
    assert_eq!(
        cfg.store.path,
        std::path::Path::new("/var/lib/sluice/sluice.db")
    );
    // `docker stop` kills after 10 s: the drain ends before that.
    assert!(cfg.server.shutdown_timeout < std::time::Duration::from_secs(10));
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains("COPY deploy/container.toml /etc/sluice/sluice.toml\n"));
    assert!(dockerfile.contains("ENV SLUICE_CONFIG=/etc/sluice/sluice.toml\n"));
    assert!(dockerfile.contains("VOLUME [\"/var/lib/sluice\"]\n"));
    let expose = dockerfile
        .lines()
        .find(|l| l.starts_with("EXPOSE "))
        .expect("EXPOSE");
    for addr in [cfg.listen.proxy, cfg.listen.admin, cfg.listen.metrics] {
        assert!(
            expose
                .split_whitespace()
                .any(|p| p == addr.port().to_string()),
            "{expose}"
        );
    }
}

/// The pod's audit shipper (the `sluice-audit` native sidecar) starts after the bootstrap steps
/// and before `sluice` (so it stops after it), holds no master key, and its command prints every
/// record the bootstrap steps wrote before it started, in the sealed form the hashes cover.
#[test]
fn the_kubernetes_audit_shipper_starts_with_what_bootstrap_wrote() {
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/deployment.yaml"),
    )
    .unwrap();
    let at = |needle: &str| {
        manifest
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in the manifest"))
    };
    let (oauth, shipper, sidecar) = (
        at("- name: sluice-oauth\n"),
        at("- name: sluice-audit\n"),
        at("- name: sluice\n"),
    );
    assert!(oauth < shipper && shipper < sidecar);
    let block = &manifest[shipper..sidecar];
    assert!(block.contains("restartPolicy: Always"));
    assert!(!block.contains("SLUICE_SECRETS_KEY"));
    let args: Vec<String> = serde_json::from_str(
        block
            .lines()
            .find_map(|l| l.trim().strip_prefix("args: "))
            .expect("the shipper's args"),
    )
    .unwrap();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(args[..3], ["audit", "tail", "--follow"]);

    let s = Setup::bare(
        "[[upstreams]]\nname = \"x\"\nregion = \"us\"\nbase_url = \"http://127.0.0.1:9\"\ncredential = \"openai\"\n",
        "",
    );
    let secret_file = s.dir.path().join("openai");
    std::fs::write(&secret_file, "sk-bootstrap-provider-secret\n").unwrap();
    let key_file = s.dir.path().join("app-key");
    let boot = [
        "bootstrap".to_string(),
        "--org=checkout".into(),
        format!("--key-file={}", key_file.display()),
        format!("--credential=openai={}", secret_file.display()),
    ];
    let boot: Vec<&str> = boot.iter().map(String::as_str).collect();
    s.cli_json(&boot, b"");
    // The shipper's command without --follow (which never returns) and without the master key.
    let once: Vec<&str> = args.iter().copied().filter(|a| *a != "--follow").collect();
    let out = cli(&s.cfg_path, &once, b"", &[("SLUICE_SECRETS_KEY", "")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["org.create", "key.create", "credential.set"]);
    assert_eq!(records[0]["seq"], 1);
    assert!(
        records[0]["details"]["sealed"].is_string(),
        "{}",
        records[0]
    );
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert!(!text.contains(key.trim()) && !text.contains("bootstrap-provider"));
}

#[test]
fn bootstrap_is_idempotent_and_the_key_it_writes_works() {
    let up = Upstream::start();
    let s = Setup::bare(&mock_upstream(&up, "credential = \"openai\"\n"), "");
    let secret_file = s.dir.path().join("openai");
    std::fs::write(&secret_file, "sk-bootstrap-provider-secret\n").unwrap();
    let key_file = s.dir.path().join("run").join("app-key");
    std::fs::create_dir_all(key_file.parent().unwrap()).unwrap();
    let args = [
        "bootstrap".to_string(),
        "--org=checkout".into(),
        format!("--key-file={}", key_file.display()),
        format!("--credential=openai={}", secret_file.display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = s.cli_json(&args, b"");
    assert_eq!(first["key_created"], true);
    assert_eq!(first["credentials_set"], serde_json::json!(["openai"]));
    let second = s.cli_json(&args, b"");
    assert_eq!(second["key_created"], false);
    assert_eq!(second["credentials_set"], serde_json::json!([]));
    assert_eq!(first["org_id"], second["org_id"]);
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert!(key.starts_with("sk-sluice-"));
    // Nothing secret on stdout.
    let out = s.cli(&args, b"");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(!printed.contains(&key) && !printed.contains("bootstrap-provider"));

    let p = s.spawn();
    let r = raw(
        p.port,
        &post(
            "/v1/embeddings",
            b"{}",
            &format!("Authorization: Bearer {key}\r\n"),
        ),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(
        up.requests()[0].header("authorization"),
        Some("Bearer sk-bootstrap-provider-secret")
    );
    // healthcheck: 0 while serving (live and ready), 1 once stopped.
    assert!(p.cli(&["healthcheck"], b"").status.success());
    assert!(p.cli(&["healthcheck", "--ready"], b"").status.success());
    let s = p.stop();
    let out = s.cli(&["healthcheck"], b"");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn the_kubernetes_fleet_bundle_is_valid_and_mounted_where_the_config_says() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let cfg = sluice::config::Config::load(Some(&dir.join("sluice.toml"))).unwrap();
    let bundle = cfg
        .fleet
        .bundle
        .expect("the example config watches a bundle");
    let manifest = std::fs::read_to_string(dir.join("deployment.yaml")).unwrap();
    let mount = bundle.parent().unwrap().to_str().unwrap();
    assert!(manifest.contains(&format!("mountPath: {mount}")), "{mount}");
    assert!(manifest.contains("SLUICE_REDIS_URL"));
    assert!(std::fs::read_to_string(dir.join("kustomization.yaml"))
        .unwrap()
        .contains("redis.yaml"));
    // The example bundle applies to an empty store.
    let text = std::fs::read_to_string(dir.join("fleet.toml")).unwrap();
    let b = sluice::admin::apply::parse(&text).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = sluice::store::Store::open(&tmp.path().join("s.db")).unwrap();
    let opts = sluice::admin::apply::Options {
        pii_default: sluice::admin::Setting::On,
        max_removal_ratio: 0.5,
    };
    let plan = sluice::admin::apply::plan(&store, &b, opts).unwrap();
    let actions: Vec<&str> = plan.iter().map(|c| c.action).collect();
    assert_eq!(actions, ["org.create", "key.create"]);
}

/// With `[fleet] bundle` configured and listing the org, `bootstrap` applies the bundle first,
/// so the bundle makes the org (a bundle never takes over an org made by hand); its key, made
/// by hand in that org, works, and serve's own apply of the same bundle changes nothing.
#[test]
fn bootstrap_lets_a_configured_bundle_make_its_org() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("fleet.toml");
    std::fs::write(
        &bundle,
        "[[orgs]]\nname = \"checkout\"\nregion = \"us\"\nrpm = 600\n",
    )
    .unwrap();
    let s = Setup::bare(
        &mock_upstream(&up, ""),
        &format!("[fleet]\nbundle = \"{}\"\n", bundle.display()),
    );
    let key_file = s.dir.path().join("app-key");
    let args = [
        "bootstrap".to_string(),
        "--org=checkout".into(),
        format!("--key-file={}", key_file.display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    s.cli_json(&args, b"");
    let orgs = s.cli_json(&["orgs", "list"], b"");
    let org = &orgs["orgs"][0];
    assert_eq!(
        (org["name"].as_str(), org["rpm"].as_u64()),
        (Some("checkout"), Some(600))
    );
    let again = s.cli_json(&["apply", "-f", bundle.to_str().unwrap()], b"");
    assert_eq!(again["changes"], serde_json::json!([]), "{again}");
    let key = std::fs::read_to_string(&key_file).unwrap();
    let p = s.spawn();
    let r = chat_with_key(p.port, &key);
    assert_eq!(r.status, 200, "{}", r.body_text());
}
