//! Orgs: create, change, list, and the GDPR hard delete.

use super::*;

/// A new org. Settings it leaves unset take the defaults: PII as `[pii] default` says (the
/// caller's `pii_default`), secrets on, response redaction off, no MCP lists (nothing
/// allowed), no limits.
#[derive(Debug, Clone, Default)]
pub struct OrgSpec {
    pub name: String,
    pub settings: OrgPatch,
}

/// The audit details of an org's settings (the same for every entry point).
pub(super) fn org_details(o: &store::Org) -> serde_json::Value {
    policy_details(serde_json::json!({ "name": o.name }), &o.policy)
}

/// Audit details: `head`'s members, then the policy's, in that order (details are hashed as
/// written).
pub(super) fn policy_details(
    head: serde_json::Value,
    policy: &impl Serialize,
) -> serde_json::Value {
    let mut d = head;
    if let (Some(d), Ok(serde_json::Value::Object(p))) =
        (d.as_object_mut(), serde_json::to_value(policy))
    {
        d.extend(p);
    }
    d
}

/// Create an org (no audit record: see [`create_org`]).
pub(super) fn create(store: &Store, spec: &OrgSpec, pii_default: Setting) -> Result<store::Org> {
    check_name("org", &spec.name)?;
    spec.settings.limits.check()?;
    let policy = spec.settings.apply(&OrgPolicy::new(pii_default));
    Ok(store.insert_org(&spec.name, &policy)?)
}

/// Create an org and its `org.create` audit record, in one transaction. `via` names an entry
/// point that is not the plain command or call (e.g. `bootstrap`).
pub fn create_org(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    spec: &OrgSpec,
    pii_default: Setting,
    via: Option<&str>,
) -> Result<store::Org> {
    audited(
        store,
        ring,
        actor.record("org.create", None),
        |s| create(s, spec, pii_default),
        |o, r| {
            r.org_id = Some(o.id.clone());
            r.target_id = Some(o.id.clone());
            r.details = org_details(o);
            if let Some(v) = via {
                r.details["via"] = v.into();
            }
        },
    )
}

/// Change an org's settings (no audit record: see [`update_org`]).
pub(super) fn update(store: &Store, id: &str, change: &OrgPatch) -> Result<store::Org> {
    if change.is_empty() {
        return Err(Error::Invalid(format!(
            "nothing to change: give a region, {}, MCP or limit setting",
            crate::policy::SWITCH_NAMES.join(", ")
        )));
    }
    change.limits.check()?;
    let have = store.org(id)?;
    Ok(store.set_org_policy(id, &change.apply(&have.policy))?)
}

/// Change an org's settings with its `org.update` audit record, in one transaction.
pub fn update_org(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    id: &str,
    change: &OrgPatch,
) -> Result<store::Org> {
    let mut rec = actor.record("org.update", Some(id));
    rec.target_id = Some(id.to_string());
    audited(
        store,
        ring,
        rec,
        |s| update(s, id, change),
        |o, r| r.details = org_details(o),
    )
}

/// What a hard delete removed.
#[derive(Debug, Serialize)]
pub struct OrgDeleted {
    pub org_id: String,
    #[serde(flatten)]
    pub removed: store::Removed,
}

/// Hard-delete an org (GDPR right to be forgotten): its API keys, users, recovery codes and
/// settings, and its audit data key, so the personal fields of its audit records can never be
/// read again while the hash chain still verifies. Run it through [`audited`]: the final
/// record is appended in the same transaction and, the org being gone, holds no personal data.
/// Credentials are sidecar-wide (per upstream, not per org) and are not touched.
pub(super) fn delete_org_hard(store: &Store, org_id: &str) -> Result<OrgDeleted> {
    let removed = store.delete_org(org_id)?;
    Ok(OrgDeleted {
        org_id: org_id.to_string(),
        removed,
    })
}

/// After a hard delete: flush the WAL so no copy of the destroyed rows or key survives in it.
pub(super) fn purge_wal(store: &Store) -> bool {
    match store.checkpoint_truncate() {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(error = %e, "cannot checkpoint the WAL after a hard delete");
            false
        }
    }
}
