//! API keys: create, change, list, revoke.

use super::*;

/// What a new key is created with.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub org_id: String,
    pub name: String,
    pub policy: KeyPolicy,
    /// RFC 3339, in the future.
    pub expires: Option<String>,
}

impl KeySpec {
    /// A key named `name` of `org_id` with every setting inherited and no limits.
    pub fn inheriting(org_id: &str, name: &str) -> KeySpec {
        KeySpec {
            org_id: org_id.to_string(),
            name: name.to_string(),
            policy: KeyPolicy::default(),
            expires: None,
        }
    }
}

/// The audit details of a key's settings (the same for every entry point).
pub(super) fn key_details(k: &store::Key) -> serde_json::Value {
    details_of(&k.name, &k.prefix, &k.policy)
}

fn details_of(name: &str, prefix: &str, p: &KeyPolicy) -> serde_json::Value {
    policy_details(serde_json::json!({ "name": name, "prefix": prefix }), p)
}

/// Change a key's settings with its `key.update` audit record, in one transaction.
pub fn update_key(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    id: &str,
    change: &KeyPatch,
) -> Result<store::Key> {
    let org = store.key(id).ok().map(|k| k.org_id);
    let mut rec = actor.record("key.update", org.as_deref());
    rec.target_id = Some(id.to_string());
    audited(
        store,
        ring,
        rec,
        |s| update(s, id, change),
        |k, r| r.details = key_details(k),
    )
}

/// Change a key's settings (no audit record: see [`update_key`]).
pub(super) fn update(store: &Store, id: &str, change: &KeyPatch) -> Result<store::Key> {
    if change.is_empty() {
        return Err(Error::Invalid("nothing to change".into()));
    }
    change.limits.check()?;
    let have = store.key(id)?;
    Ok(store.set_key_policy(id, &change.apply(&have.policy))?)
}

/// Create a key with its `key.create` audit record, in one transaction.
pub fn create_key(
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
        |s| create(s, spec),
        |k, r| {
            r.target_id = Some(k.id.clone());
            r.details = details_of(&k.name, &k.prefix, &spec.policy);
            r.details["expires"] = serde_json::to_value(k.expires_at).unwrap_or_default();
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
pub(super) fn create(store: &Store, spec: &KeySpec) -> Result<CreatedKey> {
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
        policy: spec.policy.clone(),
        expires_at: expires,
        revoked_at: None,
        created_at: store::Timestamp::now(),
        last_used_at: None,
    }
}

/// Check a key spec's name, limits and expiry (the expiry normalised).
pub(super) fn check_key_spec(spec: &KeySpec) -> Result<Option<store::Timestamp>> {
    check_name("key", &spec.name)?;
    LimitsPatch::set(spec.policy.limits).check()?;
    spec.expires.as_deref().map(future_time).transpose()
}

/// Store a key made elsewhere, given by its SHA-256 hash and display prefix (never the key):
/// `sluice apply`. Its id is derived from the hash, so it is the same in every store.
pub(super) fn import_key(
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
pub(super) fn revoke(store: &Store, id: &str) -> Result<()> {
    Ok(store.revoke_key(id)?)
}
