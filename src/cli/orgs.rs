//! `sluice orgs`: create, list, update and hard-delete orgs.

use super::*;

pub(super) fn orgs(cfg: &Config, c: OrgsCmd) -> Outcome {
    let store = open_store(cfg)?;
    // Changes are audited, and an org's audit record is sealed under its data key.
    let ring = || keyring_for(&store);
    match c {
        OrgsCmd::Create { name, settings } => {
            let spec = admin::OrgSpec {
                name,
                settings: settings.patch()?,
            };
            warn_unserved(cfg, spec.settings.region, "org");
            let org = admin::create_org(
                &store,
                &ring()?,
                &Actor::cli(),
                &spec,
                pii_default(cfg),
                None,
            )
            .map_err(phrase)?;
            let text = format!("created org {} ({})", org.id, org.name);
            Ok((to_json(&org), text))
        }
        OrgsCmd::List => {
            let orgs = store.orgs().map_err(phrase)?;
            let text = orgs
                .iter()
                .map(|o| {
                    format!(
                        "{}  {}  {}  created={}",
                        o.id,
                        o.name,
                        org_settings(o),
                        o.created_at
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            Ok((serde_json::json!({ "orgs": orgs }), text))
        }
        OrgsCmd::Update { org_id, settings } => {
            warn_unserved(cfg, settings.region, "org");
            let change = settings.patch()?;
            let org_id = super::org_id(&store, &org_id)?;
            let org = admin::update_org(&store, &ring()?, &Actor::cli(), &org_id, &change)
                .map_err(phrase)?;
            let text = format!("updated org {}: {}", org.id, org_settings(&org));
            Ok((to_json(&org), text))
        }
        OrgsCmd::Delete { org_id, hard } => {
            if !hard {
                return Err(format!(
                    "deleting an org removes its keys and users and shreds its audit details; this cannot be undone. Run `sluice orgs delete {org_id} --hard`"
                ).into());
            }
            let (d, purged) =
                admin::delete_org(&store, &ring()?, &Actor::cli(), &org_id).map_err(phrase)?;
            let mut d = to_json(&d);
            d["wal_purged"] = purged.into();
            let text = format!(
                "hard-deleted org {}: {} key(s), {} user(s) removed; its audit details are unreadable from now on{}",
                d["org_id"].as_str().unwrap_or_default(),
                d["keys"],
                d["users"],
                if d["wal_purged"] == true { "" } else { " (the WAL could not be checkpointed yet: a reader held it; it will be on the next checkpoint)" }
            );
            Ok((d, text))
        }
    }
}

pub(super) fn org_settings(o: &crate::store::Org) -> String {
    let o = &o.policy;
    format!(
        "region={}  {}  rpm={}  tpm={}  budget={}",
        region_or_none(o.region),
        switches_text(&o.switches),
        o.limits.rpm.map_or("-".to_string(), |r| r.to_string()),
        o.limits.tpm.map_or("-".to_string(), |r| r.to_string()),
        budget_text(o.limits.budget),
    )
}

/// Each switch as `name=value`, two spaces apart (`pii=on  secrets=on  ...`).
pub(super) fn switches_text<T: std::fmt::Display>(s: &crate::policy::Switches<T>) -> String {
    let each: Vec<String> = s.iter().map(|(n, v)| format!("{n}={v}")).collect();
    each.join("  ")
}

/// `1000000/month`, or `-` without a budget.
pub(super) fn budget_text(b: Option<crate::limits::Budget>) -> String {
    b.map_or("-".into(), |b| {
        format!("{}/{}", b.tokens, b.period.as_str())
    })
}
