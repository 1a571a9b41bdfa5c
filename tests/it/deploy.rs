//! What the deployment kit relies on: the sidecar config in the Kubernetes ConfigMap parses with
//! the real loader, `sluice bootstrap` provisions a pod's store idempotently, and
//! `sluice healthcheck` answers for container probes.

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
    // The Dockerfile ships the same file.
    let dockerfile = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/Dockerfile"),
    )
    .unwrap();
    assert!(dockerfile.contains("deploy/kubernetes/sluice.toml"));
    // The sidecar brokers an MCP server's OAuth token; the manifest stores its client.
    let mcp = &cfg.mcp_servers[0];
    assert_eq!(mcp.credential_kind, sluice::config::CredentialKind::OAuth);
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/deployment.yaml"),
    )
    .unwrap();
    assert!(manifest.contains(&format!("- {}", mcp.credential.as_deref().unwrap())));
    assert!(manifest.contains(&format!("/mcp/{}", mcp.name)));
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
