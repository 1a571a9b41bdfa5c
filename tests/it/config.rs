//! Config files: every file in conf/ parses; invalid configs list every problem and exit 64.

use std::process::Command;

use sluice::config::Config;

use crate::support::*;

#[test]
fn every_file_in_conf_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(Some(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 2, "expected the default and example configs");
}

#[test]
fn compiled_in_default_matches_the_defaults_in_code() {
    let file = Config::load(None).unwrap();
    let code = Config::default();
    assert_eq!(file.listen, code.listen);
    assert_eq!(file.store, code.store);
    assert_eq!(file.server, code.server);
    assert_eq!(file.log, code.log);
    assert_eq!(file.cors, code.cors);
    assert_eq!(file.pii, code.pii);
    assert_eq!(file.redaction, code.redaction);
    assert_eq!(file.residency, code.residency);
    assert_eq!(file.upstreams, code.upstreams);
    assert_eq!(file.limits.max_body_bytes, code.limits.max_body_bytes);
    assert_eq!(file.limits.timeout, code.limits.timeout);
    assert_eq!(file.limits.long_timeout, code.limits.long_timeout);
    assert_eq!(file.limits.connect_timeout, code.limits.connect_timeout);
    assert_eq!(file.limits.client_timeout, code.limits.client_timeout);
    assert_eq!(file.limits.max_header_bytes, code.limits.max_header_bytes);
    assert_eq!(file.limits.max_headers, code.limits.max_headers);
    assert_eq!(file.limits.linger, code.limits.linger);
    assert_eq!(file.limits.linger_max_bytes, code.limits.linger_max_bytes);
    assert_eq!(file.admin, code.admin);
    for m in [
        "o1-mini",
        "O3",
        "o4-mini",
        "qwen-reasoning-32b",
        "deepseek-r1-distill",
    ] {
        assert_eq!(
            file.limits.timeout_for(Some(m)),
            file.limits.long_timeout,
            "{m}"
        );
    }
    for m in ["gpt-4o", "gpt-4o-mini", "claude"] {
        assert_eq!(file.limits.timeout_for(Some(m)), file.limits.timeout, "{m}");
    }
}

#[test]
fn invalid_config_lists_every_problem_with_its_key_path_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[listen]
proxy = "localhost-canary1"
[limits]
timeout_secs = "thirty-canary2"
[log]
format = "yaml-canary3"
[cors]
allow_origins = ["*canary4"]
[surprise-canary5]
x = 1
[[upstreams]]
name = "a"
region = "mars"
base_url = "ftp://x"
[[upstreams]]
name = "a"
region = "eu"
base_url = "https://api.openai.com/v1"
secret = "sk-should-not-be-here"
"#,
    )
    .unwrap();
    for cmd in ["serve", "check-config"] {
        let out = Command::new(crate::support::bin())
            .args([cmd, "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        for key in [
            "listen.proxy",
            "limits.timeout_secs",
            "log.format",
            "cors.allow_origins[0]",
            "(file): an unknown section",
            "upstreams[0].region",
            "upstreams[0].base_url",
            "upstreams[1]: an unknown field (known fields: one of `name`",
        ] {
            assert!(err.contains(key), "{cmd}: missing {key} in:\n{err}");
        }
        // A problem never quotes a value, nor a key the config does not have (a secret typed
        // on the wrong line): the place and what was expected say what is wrong (a URL is
        // shown without credentials, query or fragment: error::shown_url).
        for quoted in ["canary", "secret", "sk-should-not-be-here", "mars"] {
            assert!(
                !err.to_lowercase().contains(quoted),
                "{cmd}: {quoted} in:\n{err}"
            );
        }
    }
    // --json lists the same problems, each with its key path.
    let out = Command::new(crate::support::bin())
        .args(["check-config", "--json", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let paths: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    for key in ["listen.proxy", "log.format", "upstreams[0].region"] {
        assert!(paths.contains(&key), "{key} not in {paths:?}");
    }
}

/// `--json` answers in JSON where it is promised, and a region no upstream serves is said at
/// once when an org or key is pinned to it.
#[test]
fn json_outputs_and_unserved_regions_are_said_at_once() {
    let up = Upstream::start();
    let s = Setup::new(&mock_upstream(&up, ""), "");
    // Nothing listens on the admin address: healthcheck --json says so in JSON.
    let out = s.cli(&["healthcheck", "--json"], b"");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("cannot reach"), "{v}");
    // The mock serves us only.
    let out = s.cli(&["orgs", "create", "euro", "--region", "eu"], b"");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("serves region eu"), "{err}");
    let out = s.cli(&["orgs", "create", "usa", "--region", "us"], b"");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("serves region"));
    // --org takes a name as well as an id, everywhere.
    let k = s.cli_json(
        &["keys", "create", "--org", "usa", "--name", "by-name"],
        b"",
    );
    assert!(k["key"].is_string());
    let listed = s.cli_json(&["keys", "list", "--org", "usa"], b"");
    assert_eq!(listed["keys"][0]["name"], "by-name");
    let out = s.cli(&["keys", "create", "--org", "nowhere"], b"");
    assert_eq!(out.status.code(), Some(1));
    // A bad command line is exit 2 for every command, in JSON with --json.
    let out = s.cli(&["--json", "keys", "create", "--bogus"], b"");
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "usage");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("--bogus"),
        "{v}"
    );
    let out = s.cli(&["--json", "users", "create", "--password", "hunter2"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
    let out = s.cli(&["orgs", "frobnicate"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    // A command that makes a new store says so (a forgotten --config would write elsewhere).
    let bare = Setup::bare(&mock_upstream(&up, ""), "");
    let out = bare.cli(&["orgs", "list"], b"");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("created a new, empty store"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bare.cli(&["orgs", "list"], b"");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("created a new"));
}

#[test]
fn semantic_problems_are_all_reported() {
    let errs = Config::parse(
        r#"
[limits]
timeout_secs = 60
long_timeout_secs = 10
max_body_bytes = 0
[[upstreams]]
name = "a"
region = "us"
base_url = "https://user:pw@example.com"
[[upstreams]]
name = "a"
region = "us"
base_url = "http://127.0.0.1:9"
"#,
    )
    .unwrap_err();
    let text: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
    let all = text.join("\n");
    for key in [
        "limits.long_timeout_secs",
        "limits.max_body_bytes",
        "upstreams[0].base_url",
        "upstreams[1].name: the same name as upstreams[0]",
    ] {
        assert!(all.contains(key), "missing {key} in:\n{all}");
    }
    assert!(
        !all.contains("pw"),
        "a credential in a URL must not be echoed: {all}"
    );
}

#[test]
fn no_problem_quotes_what_the_file_holds() {
    // A secret typed on the wrong line (as a value, a key, a table name, in a URL, as a
    // credential's name, as a file path) is never in a problem; the place and what was
    // expected are.
    let up =
        "[[upstreams]]\nname = \"ok\"\nregion = \"us\"\nbase_url = \"https://api.openai.com\"\n";
    let cases: &[(&str, &str)] = &[
        ("[limits]\nsk-canary-1 = 1\nsk-canary-1 = 2\n", "(file): not valid TOML (line 3)"),
        ("[limits.sk-canary-2]\nx = 1\nx = 2\n", "(file): not valid TOML (line 3)"),
        ("[sk-canary-3]\n[sk-canary-3]\n", "(file): not valid TOML"),
        ("K = 1\nK.sk-canary-4 = 2\n", "(file): not valid TOML (line 2)"),
        ("x = \"sk-canary-5\n", "(file): not valid TOML (line 1)"),
        ("[limits]\n\n[sk-canary-6]\nx = 1\n", "(file): an unknown section or top-level key at line 3"),
        ("server = [\"sk-canary-7\", 30]\n", "server: must be a table"),
        ("[admin]\nsession_ttl_hours = 987654321\n", "admin.session_ttl_hours: out of range"),
        ("[limits]\ntimeout_secs = \"sk-canary-8\"\n", "limits.timeout_secs: a value has the wrong type"),
        (
            "[[upstreams]]\nname = \"x\"\nregion = \"us\"\nbase_url = \"https://api.example.com/sk-canary-9/v1\"\n",
            "upstreams[0].base_url: the URL must not end with /v1",
        ),
        (
            "[[upstreams]]\nname = \"x\"\nregion = \"us\"\nbase_url = \"https://sk_canary_10.example.com\"\n",
            "upstreams[0].base_url: the host cannot hold `_`",
        ),
        (
            "[[upstreams]]\nname = \"x\"\nregion = \"us\"\nbase_url = \"https://a.example.com:0/sk-canary-11\"\n",
            "upstreams[0].base_url: the URL has a port outside 1..65535",
        ),
        (
            "[[upstreams]]\nname = \"x\"\nregion = \"us\"\nbase_url = \"https://a.example.com\"\ncredential = \"sk-canary-12-0123456789\"\n",
            "upstreams[0].credential: a credential name is",
        ),
        (
            // A key without a prefix (Azure OpenAI's are 32 hex digits).
            "[[upstreams]]\nname = \"x\"\nregion = \"us\"\nbase_url = \"https://a.example.com\"\ncredential = \"canary0123456789abcdef0123456789ab\"\n",
            "upstreams[0].credential: a credential name is",
        ),
        (
            "[[upstreams]]\nname = \"x\"\nregion = \"us\"\nbase_url = \"https://a.example.com\"\nca_file = \"/nonexistent/sk-canary-13.pem\"\n",
            "upstreams[0].ca_file: cannot read the file",
        ),
        (
            "[[upstreams]]\nname = \"x\"\nregion = \"us\"\nbase_url = \"http://a.example.com\"\ncredential = \"c\"\n",
            "upstreams[0].base_url: plain http:// to a host that is not loopback",
        ),
        (
            "[[upstreams]]\nname = \"ok\"\nregion = \"us\"\nbase_url = \"https://a.example.com\"\n",
            "upstreams[1].name: the same name as upstreams[0]",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    for (text, want) in cases {
        std::fs::write(&path, format!("{text}{up}")).unwrap();
        let out = Command::new(crate::support::bin())
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{text}: want {want} in:\n{err}");
        assert!(!err.contains("canary"), "{text}: quoted in:\n{err}");
    }
}

#[test]
fn a_file_without_upstreams_is_refused() {
    let errs = Config::parse("[limits]\ntimeout_secs = 5\n").unwrap_err();
    assert_eq!(errs[0].path, "upstreams");
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let out = Command::new(crate::support::bin())
        .args(["serve", "--config", "/nonexistent/sluice.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read config file /nonexistent/sluice.toml"));
}
