//! `sluice keys`: create (or print a hash for a bundle), list, update and revoke API keys.

use super::*;

pub(super) fn keys(cfg: &Config, c: KeysCmd) -> Outcome {
    let store = open_store(cfg)?;
    let ring = || keyring_for(&store);
    match c {
        KeysCmd::Create(a) if a.print_hash => {
            let new = crate::auth::generate();
            let sha256: String = new.hash.iter().map(|b| format!("{b:02x}")).collect();
            let text = format!(
                "{}\n\nsha256 = \"{sha256}\"\nprefix = \"{}\"\n\nNothing was stored. Put sha256 and prefix in the bundle; the key is shown only this once.",
                new.secret.as_str(),
                new.prefix
            );
            Ok((
                serde_json::json!({"key": new.secret.as_str(), "prefix": new.prefix, "sha256": sha256}),
                text,
            ))
        }
        KeysCmd::Create(a) => {
            let policy = a.policy()?;
            let spec = admin::KeySpec {
                org_id: match a.org.as_deref() {
                    Some(o) => org_id(&store, o)?,
                    None => String::new(),
                },
                policy,
                name: a.name,
                expires: a.expires,
            };
            warn_unserved(cfg, spec.policy.region, "key");
            let k =
                admin::create_key(&store, &ring()?, &Actor::cli(), &spec, None).map_err(phrase)?;
            let text = format!(
                "created key {} ({}) for org {}\n\n    {}\n\nStore it now: it is shown only this once.",
                k.id,
                k.name,
                k.org_id,
                k.key.as_str()
            );
            Ok((to_json(&k), text))
        }
        KeysCmd::List { org } => {
            let org = org.map(|o| org_id(&store, &o)).transpose()?;
            let keys = admin::list_keys(&store, org.as_deref()).map_err(phrase)?;
            let text = keys
                .iter()
                .map(|v| {
                    let k = &v.key;
                    format!(
                        "{}  {}...  {}  org={}  status={}  {}  region={}  rpm={}  tpm={}  budget={}  expires={}  last_used={}",
                        k.id,
                        k.prefix,
                        k.name,
                        k.org_id,
                        v.status,
                        switches_text(&k.policy.switches),
                        region_or_none(k.policy.region),
                        k.policy.limits.rpm.map_or("-".to_string(), |r| r.to_string()),
                        k.policy.limits.tpm.map_or("-".to_string(), |r| r.to_string()),
                        budget_text(k.policy.limits.budget),
                        or_none(&k.expires_at),
                        or_none(&k.last_used_at)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            Ok((serde_json::json!({ "keys": keys }), text))
        }
        KeysCmd::Update { key_id, change } => {
            let change = change.patch()?;
            let k = admin::update_key(&store, &ring()?, &Actor::cli(), &key_id, &change)
                .map_err(phrase)?;
            Ok((to_json(&k), format!("updated key {}", k.id)))
        }
        KeysCmd::Revoke { key_id } => {
            admin::revoke_key(&store, &ring()?, &Actor::cli(), &key_id).map_err(phrase)?;
            Ok((
                serde_json::json!({"id": key_id, "revoked": true}),
                format!("revoked key {key_id}"),
            ))
        }
    }
}
