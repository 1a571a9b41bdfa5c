//! API keys: create, change, list, revoke.

use super::*;

/// What a new key is created with.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub org_id: String,
    pub name: String,
    pub pii: KeySetting,
    pub secrets: KeySetting,
    pub response_redaction: KeySetting,
    /// The key's own MCP allow-lists; `None` inherits the org's.
    pub mcp: McpLists,
    pub region: Option<Region>,
    pub rpm: Option<u32>,
    /// Tokens per minute.
    pub tpm: Option<u32>,
    pub budget: Option<crate::limits::Budget>,
    /// RFC 3339, in the future.
    pub expires: Option<String>,
}

impl KeySpec {
    /// A key named `name` of `org_id` with every setting inherited and no limits.
    pub fn inheriting(org_id: &str, name: &str) -> KeySpec {
        KeySpec {
            org_id: org_id.to_string(),
            name: name.to_string(),
            pii: KeySetting::Inherit,
            secrets: KeySetting::Inherit,
            response_redaction: KeySetting::Inherit,
            mcp: McpLists::default(),
            region: None,
            rpm: None,
            tpm: None,
            budget: None,
            expires: None,
        }
    }
}

/// Changes to a key: `None` keeps the current value. A cleared MCP list makes the key inherit
/// its org's again.
#[derive(Debug, Clone, Default)]
pub struct KeyChange {
    pub pii: Option<KeySetting>,
    pub secrets: Option<KeySetting>,
    pub response_redaction: Option<KeySetting>,
    pub mcp: McpPatch,
    pub limits: LimitsPatch,
}

pub(super) fn key_details(k: &store::Key) -> serde_json::Value {
    serde_json::json!({
        "name": k.name, "prefix": k.prefix, "pii": k.pii, "secrets": k.secrets,
        "response_redaction": k.response_redaction, "mcp_tools": k.mcp_tools,
        "mcp_resources": k.mcp_resources, "mcp_prompts": k.mcp_prompts,
        "rpm": k.rpm, "tpm": k.tpm, "budget_tokens": k.budget_tokens,
        "budget_period": k.budget_period,
    })
}

/// Change a key's settings with its `key.update` audit record, in one transaction.
pub fn update_key_as(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    id: &str,
    change: &KeyChange,
) -> Result<store::Key> {
    let org = store
        .keys(None)?
        .into_iter()
        .find(|k| k.id == id)
        .map(|k| k.org_id);
    let mut rec = actor.record("key.update", org.as_deref());
    rec.target_id = Some(id.to_string());
    audited(
        store,
        ring,
        rec,
        |s| update_key(s, id, change),
        |k, r| r.details = key_details(k),
    )
}

/// Change a key's settings (no audit record: see [`update_key_as`]).
pub(crate) fn update_key(store: &Store, id: &str, change: &KeyChange) -> Result<store::Key> {
    let nothing = change.pii.is_none()
        && change.secrets.is_none()
        && change.response_redaction.is_none()
        && change.mcp.is_empty()
        && change.limits.is_empty();
    if nothing {
        return Err(Error::Invalid("nothing to change".into()));
    }
    change.limits.check()?;
    let list = |l: &Patch<crate::mcp::AllowList>| l.as_ref().map(|a| a.to_string());
    let (t, r, p) = (
        list(&change.mcp.tools),
        list(&change.mcp.resources),
        list(&change.mcp.prompts),
    );
    Ok(store.update_key(
        id,
        &store::KeyChanges {
            pii: change.pii,
            secrets: change.secrets,
            response_redaction: change.response_redaction,
            mcp_tools: t.as_ref().map(|s| s.as_str()),
            mcp_resources: r.as_ref().map(|s| s.as_str()),
            mcp_prompts: p.as_ref().map(|s| s.as_str()),
            limits: change.limits,
        },
    )?)
}

/// Create a key with its `key.create` audit record, in one transaction.
pub fn create_key_as(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    spec: &KeySpec,
    via: Option<&str>,
) -> Result<CreatedKey> {
    audited(
        store,
        ring,
        actor.record("key.create", Some(&spec.org_id)),
        |s| create_key(s, spec),
        |k, r| {
            r.target_id = Some(k.id.clone());
            r.details = serde_json::json!({
                "name": k.name, "prefix": k.prefix, "pii": spec.pii.as_str(),
                "secrets": spec.secrets.as_str(),
                "response_redaction": spec.response_redaction.as_str(),
                "mcp_tools": spec.mcp.tools.as_ref().map(|l| l.to_string()),
                "mcp_resources": spec.mcp.resources.as_ref().map(|l| l.to_string()),
                "mcp_prompts": spec.mcp.prompts.as_ref().map(|l| l.to_string()),
                "region": spec.region.map(|r| r.as_str()), "rpm": spec.rpm,
                "tpm": spec.tpm, "budget_tokens": spec.budget.map(|b| b.tokens),
                "budget_period": spec.budget.map(|b| b.period.as_str()),
                "expires": k.expires_at,
            });
            if let Some(v) = via {
                r.details["via"] = v.into();
            }
        },
    )
}

/// A created key: the only time the key itself exists outside the client.
#[derive(Serialize)]
pub struct CreatedKey {
    pub id: String,
    #[serde(serialize_with = "expose")]
    pub key: Zeroizing<String>,
    pub prefix: String,
    pub org_id: String,
    pub name: String,
    /// The expiry as stored (RFC 3339 UTC).
    #[serde(skip)]
    pub expires_at: Option<store::Timestamp>,
}

pub(crate) fn expose<S: serde::Serializer>(
    k: &Zeroizing<String>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(k)
}

/// Create a key; the returned secret is shown once and stored only as its SHA-256 hash.
pub(crate) fn create_key(store: &Store, spec: &KeySpec) -> Result<CreatedKey> {
    let expires = check_key_spec(spec)?;
    let new = auth::generate();
    let row = key_row(spec, store::new_id(), &new.prefix, &new.hash, expires);
    store.insert_key(&row)?;
    Ok(CreatedKey {
        id: row.id,
        key: new.secret,
        prefix: new.prefix,
        org_id: row.org_id,
        name: row.name,
        expires_at: row.expires_at,
    })
}

/// The stored row of a key made to `spec` (its expiry already checked).
pub(super) fn key_row(
    spec: &KeySpec,
    id: String,
    prefix: &str,
    hash: &[u8; 32],
    expires: Option<store::Timestamp>,
) -> store::Key {
    store::Key {
        id,
        org_id: spec.org_id.clone(),
        name: spec.name.clone(),
        prefix: prefix.to_string(),
        hash: hash.to_vec(),
        pii: spec.pii,
        secrets: spec.secrets,
        response_redaction: spec.response_redaction,
        mcp_tools: spec.mcp.tools.as_ref().map(|l| l.to_string()),
        mcp_resources: spec.mcp.resources.as_ref().map(|l| l.to_string()),
        mcp_prompts: spec.mcp.prompts.as_ref().map(|l| l.to_string()),
        region: spec.region,
        rpm: spec.rpm,
        tpm: spec.tpm,
        budget_tokens: spec.budget.map(|b| b.tokens),
        budget_period: spec.budget.map(|b| b.period.as_str().to_string()),
        expires_at: expires,
        revoked_at: None,
        created_at: store::Timestamp::now(),
        last_used_at: None,
    }
}

/// Check a key spec's name, limits and expiry (the expiry normalised).
pub(super) fn check_key_spec(spec: &KeySpec) -> Result<Option<store::Timestamp>> {
    check_name("key", &spec.name)?;
    LimitsPatch::set(crate::limits::Limits {
        rpm: spec.rpm,
        tpm: spec.tpm,
        budget: spec.budget,
    })
    .check()?;
    spec.expires.as_deref().map(future_time).transpose()
}

/// Store a key made elsewhere, given by its SHA-256 hash and display prefix (never the key):
/// `sluice apply`. Its id is derived from the hash, so it is the same in every store.
pub fn import_key(
    store: &Store,
    spec: &KeySpec,
    hash: &[u8; 32],
    prefix: &str,
) -> Result<store::Key> {
    let expires = check_key_spec(spec)?;
    let row = key_row(spec, imported_key_id(hash), prefix, hash, expires);
    store.insert_key(&row)?;
    Ok(row)
}

/// The id of a key imported by hash: a UUID made of the hash's first 16 bytes.
pub fn imported_key_id(hash: &[u8; 32]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&hash[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

/// A key as listed: metadata and status, never the key or its hash.
#[derive(Debug, Serialize)]
pub struct KeyView {
    #[serde(flatten)]
    pub key: store::Key,
    /// `active`, `revoked` or `expired`.
    pub status: &'static str,
}

/// Keys, optionally of one org (which must exist).
pub fn list_keys(store: &Store, org: Option<&str>) -> Result<Vec<KeyView>> {
    if let Some(o) = org {
        store.org(o)?;
    }
    Ok(store.keys(org)?.into_iter().map(KeyView::of).collect())
}

impl KeyView {
    /// A key with its status as of now.
    pub fn of(key: store::Key) -> KeyView {
        let status = if key.revoked_at.is_some() {
            "revoked"
        } else if key.expires_at.is_some_and(|t| t.is_past()) {
            "expired"
        } else {
            "active"
        };
        KeyView { key, status }
    }
}

/// Revoke a key. A running `serve` refuses it within a second.
pub(crate) fn revoke_key(store: &Store, id: &str) -> Result<()> {
    Ok(store.revoke_key(id)?)
}
