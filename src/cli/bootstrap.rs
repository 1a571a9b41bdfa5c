//! `sluice bootstrap`: idempotent first-run setup for a deployment (an org, a key file, credentials from files).

use super::*;

pub(super) fn bootstrap(
    cfg: &Config,
    org_name: &str,
    region: Option<Region>,
    key_file: &Path,
    credentials: &[String],
) -> Outcome {
    // Validate everything before changing anything.
    let mut creds = Vec::new();
    for c in credentials {
        let (name, file) = c
            .split_once('=')
            .ok_or_else(|| format!("--credential {c:?} must be NAME=FILE"))?;
        creds.push((name.to_string(), read_secret_file(Path::new(file))?));
    }
    let ring = keyring()?;
    let store = open_store(cfg)?;
    check_key(&store, &ring)?;
    let actor = Actor::cli();
    // A configured bundle that lists the org makes it (the bundle owns what it lists: an org
    // made here by hand would be refused by the bundle later).
    if let Some(path) = &cfg.fleet.bundle {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read [fleet] bundle {}: {} (bootstrap applies it first)",
                path.display(),
                e.kind()
            )
        })?;
        let bundle = admin::apply::parse(&text).map_err(phrase)?;
        if bundle.orgs.iter().any(|o| o.name == org_name) {
            let opts = admin::apply::Options {
                pii_default: pii_default(cfg),
                max_removal_ratio: cfg.fleet.max_removal_ratio,
            };
            admin::apply::apply(&store, &ring, &actor, &bundle, opts).map_err(phrase)?;
        }
    }
    let org = match store
        .orgs()
        .map_err(phrase)?
        .into_iter()
        .find(|o| o.name == org_name)
    {
        Some(o) => o,
        None => {
            let spec = admin::OrgSpec {
                name: org_name.to_string(),
                settings: admin::OrgPatch {
                    region,
                    ..admin::OrgPatch::default()
                },
            };
            admin::create_org(
                &store,
                &ring,
                &actor,
                &spec,
                pii_default(cfg),
                Some("bootstrap"),
            )
            .map_err(phrase)?
        }
    };
    let mut key_created = false;
    if !key_file.exists() {
        // Create the file first (0600, must not exist), then the key, so a key is never
        // created without a place to put it.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(key_file)
            .map_err(|e| format!("cannot create {}: {e}", key_file.display()))?;
        let spec = admin::KeySpec::inheriting(&org.id, "bootstrap");
        let k = match admin::create_key(&store, &ring, &actor, &spec, Some("bootstrap")) {
            Ok(k) => k,
            Err(e) => {
                let _ = std::fs::remove_file(key_file);
                return Err(e.to_string().into());
            }
        };
        f.write_all(k.key.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", key_file.display()))?;
        key_created = true;
    }
    let mut set = Vec::new();
    {
        let stored = store.credentials().map_err(phrase)?;
        for (name, secret) in &creds {
            let same = stored.iter().find(|c| &c.name == name).is_some_and(|c| {
                ring.open(&c.sealed, &vault::aad("credentials", &c.id, &c.name))
                    .is_ok_and(|p| p.as_slice() == secret.as_bytes())
            });
            if same {
                continue;
            }
            admin::set_credential(&store, &ring, &actor, name, secret, None, Some("bootstrap"))
                .map_err(phrase)?;
            set.push(name.clone());
        }
    }
    let text = format!(
        "org {} ({}); key file {}{}; credentials set: {}",
        org.name,
        org.id,
        key_file.display(),
        if key_created { " created" } else { " kept" },
        if set.is_empty() {
            "none".to_string()
        } else {
            set.join(", ")
        }
    );
    Ok((
        serde_json::json!({"org_id": org.id, "key_created": key_created, "credentials_set": set}),
        text,
    ))
}
