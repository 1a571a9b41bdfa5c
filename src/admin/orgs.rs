//! Orgs: create, change, list, and the GDPR hard delete.

use super::*;

/// A new org. Settings left `None` take the defaults: PII as `[pii] default` says (the
/// caller's `pii_default`), secrets on, response redaction off.
#[derive(Debug, Clone, Default)]
pub struct OrgSpec {
    pub name: String,
    pub region: Option<Region>,
    pub pii: Option<Setting>,
    pub secrets: Option<Setting>,
    pub response_redaction: Option<Setting>,
    /// The MCP allow-lists of the org's keys (none: nothing allowed).
    pub mcp: McpLists,
    /// Limits of all the org's keys together (only those set are used).
    pub limits: LimitsPatch,
}

/// Changes to an org: `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct OrgChange {
    pub region: Option<Region>,
    pub pii: Option<Setting>,
    pub secrets: Option<Setting>,
    pub response_redaction: Option<Setting>,
    pub mcp: McpLists,
    pub limits: LimitsPatch,
}

impl OrgChange {
    pub(super) fn is_empty(&self) -> bool {
        self.region.is_none()
            && self.pii.is_none()
            && self.secrets.is_none()
            && self.response_redaction.is_none()
            && self.mcp.is_empty()
            && self.limits.is_empty()
    }
}

/// The audit details of an org's settings (the same for every entry point).
pub(super) fn org_details(o: &store::Org) -> serde_json::Value {
    serde_json::json!({
        "name": o.name, "region": o.region, "pii": o.pii, "secrets": o.secrets,
        "response_redaction": o.response_redaction, "mcp_tools": o.mcp_tools,
        "mcp_resources": o.mcp_resources, "mcp_prompts": o.mcp_prompts,
        "rpm": o.rpm, "tpm": o.tpm, "budget_tokens": o.budget_tokens,
        "budget_period": o.budget_period,
    })
}

/// Create an org (no audit record: see [`create_org_as`]).
pub(crate) fn create_org(
    store: &Store,
    spec: &OrgSpec,
    pii_default: Setting,
) -> Result<store::Org> {
    check_name("org", &spec.name)?;
    spec.limits.check()?;
    Ok(store.insert_org(
        &spec.name,
        &store::OrgSettings {
            region: spec.region,
            pii: Some(spec.pii.unwrap_or(pii_default)),
            secrets: Some(spec.secrets.unwrap_or(Setting::On)),
            response_redaction: Some(spec.response_redaction.unwrap_or(Setting::Off)),
            mcp_tools: spec.mcp.tools.as_ref().map(|l| l.to_string()).as_deref(),
            mcp_resources: spec
                .mcp
                .resources
                .as_ref()
                .map(|l| l.to_string())
                .as_deref(),
            mcp_prompts: spec.mcp.prompts.as_ref().map(|l| l.to_string()).as_deref(),
            limits: spec.limits,
        },
    )?)
}

/// Create an org and its `org.create` audit record, in one transaction. `via` names an entry
/// point that is not the plain command or call (e.g. `bootstrap`).
pub fn create_org_as(
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
        |s| create_org(s, spec, pii_default),
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

/// Change an org's settings (no audit record: see [`update_org_as`]).
pub(crate) fn update_org(store: &Store, id: &str, change: &OrgChange) -> Result<store::Org> {
    if change.is_empty() {
        return Err(Error::Invalid(
            "nothing to change: give a region, pii, secrets, response_redaction, MCP or limit setting"
                .into(),
        ));
    }
    change.limits.check()?;
    Ok(store.update_org(
        id,
        &store::OrgSettings {
            region: change.region,
            pii: change.pii,
            secrets: change.secrets,
            response_redaction: change.response_redaction,
            mcp_tools: change.mcp.tools.as_ref().map(|l| l.to_string()).as_deref(),
            mcp_resources: change
                .mcp
                .resources
                .as_ref()
                .map(|l| l.to_string())
                .as_deref(),
            mcp_prompts: change
                .mcp
                .prompts
                .as_ref()
                .map(|l| l.to_string())
                .as_deref(),
            limits: change.limits,
        },
    )?)
}

/// Change an org's settings with its `org.update` audit record, in one transaction.
pub fn update_org_as(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    id: &str,
    change: &OrgChange,
) -> Result<store::Org> {
    let mut rec = actor.record("org.update", Some(id));
    rec.target_id = Some(id.to_string());
    audited(
        store,
        ring,
        rec,
        |s| update_org(s, id, change),
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
pub fn delete_org_hard(store: &Store, org_id: &str) -> Result<OrgDeleted> {
    let removed = store.delete_org(org_id)?;
    Ok(OrgDeleted {
        org_id: org_id.to_string(),
        removed,
    })
}

/// After a hard delete: flush the WAL so no copy of the destroyed rows or key survives in it.
pub fn purge_wal(store: &Store) -> bool {
    match store.checkpoint_truncate() {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(error = %e, "cannot checkpoint the WAL after a hard delete");
            false
        }
    }
}
