//! Crypto-shredding of the audit log. A record that belongs to an org has its personal fields
//! (source IP, user agent, details) encrypted under that org's data key before it is hashed
//! and stored; the hash chain covers the ciphertext. Hard-deleting the org destroys the data
//! key: the ciphertexts stay, `audit verify` still passes, and nobody can read them again.
//! Records of no org (operator actions, logins of unknown accounts) carry no org personal
//! data and are stored as written.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use base64::Engine;

use crate::store::{self, AuditRow, Store};
use crate::vault::{self, DataKey, Keyring};

/// How a sealed IP or user agent starts.
pub const SEALED: &str = "sealed:v1:";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn key_aad(org_id: &str) -> Vec<u8> {
    vault::aad("org_keys", org_id, "audit")
}

fn field_aad(record_id: &str, field: &str) -> Vec<u8> {
    vault::aad("audit", record_id, field)
}

/// Why a record could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("cannot open the data key of org {org}: {source}")]
    Vault { org: String, source: vault::Error },
}

impl From<SealError> for store::Error {
    fn from(e: SealError) -> store::Error {
        match e {
            SealError::Store(e) => e,
            // Surfaces as a failed write; the message names the org, never key material.
            other => store::Error::Io {
                path: "org data key".into(),
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}

/// Org data keys, opened on first use and cached. The cache is checked against the stored
/// ciphertext on every use, so a key destroyed by another process is never used again.
pub struct OrgKeys<'a> {
    ring: &'a Keyring,
    cache: HashMap<String, (Vec<u8>, Arc<DataKey>)>,
    /// Orgs whose cached key was checked against the store in the current transaction.
    checked: HashSet<String>,
    /// Drop (rather than fail on) personal fields whose data key cannot be opened.
    withhold_unreadable: bool,
}

impl<'a> OrgKeys<'a> {
    /// Data keys sealed under `ring`.
    pub fn new(ring: &'a Keyring) -> OrgKeys<'a> {
        OrgKeys {
            ring,
            cache: HashMap::new(),
            checked: HashSet::new(),
            withhold_unreadable: false,
        }
    }

    /// For the request-record writer, which must never stall the proxy: a record whose org data
    /// key cannot be opened (sealed under a master key this process lacks) is stored without
    /// its personal fields instead of failing. Admin actions fail closed instead.
    pub fn withholding(mut self) -> Self {
        self.withhold_unreadable = true;
        self
    }

    /// A new transaction starts: cached keys are checked against the store again (another
    /// process may have destroyed one since), once per org per transaction.
    pub fn begin(&mut self) {
        self.checked.clear();
    }

    /// The org's data key; with `create`, made (and stored, inside the caller's transaction)
    /// when the org exists but has none yet. `None`: the org does not exist (any more).
    pub fn key(
        &mut self,
        store: &Store,
        org_id: &str,
        create: bool,
    ) -> Result<Option<Arc<DataKey>>, SealError> {
        if self.checked.contains(org_id) {
            if let Some((_, key)) = self.cache.get(org_id) {
                return Ok(Some(key.clone()));
            }
        }
        let key = self.lookup(store, org_id, create)?;
        if key.is_some() {
            self.checked.insert(org_id.to_string());
        }
        Ok(key)
    }

    fn lookup(
        &mut self,
        store: &Store,
        org_id: &str,
        create: bool,
    ) -> Result<Option<Arc<DataKey>>, SealError> {
        match store.org_key(org_id)? {
            Some((sealed, _fp)) => {
                if let Some((cached, key)) = self.cache.get(org_id) {
                    if *cached == sealed {
                        return Ok(Some(key.clone()));
                    }
                }
                match self.ring.open(&sealed, &key_aad(org_id)) {
                    Ok(raw) => {
                        let key = Arc::new(DataKey::from_bytes(&raw).map_err(|source| {
                            SealError::Vault {
                                org: org_id.into(),
                                source,
                            }
                        })?);
                        self.cache.insert(org_id.into(), (sealed, key.clone()));
                        Ok(Some(key))
                    }
                    // Re-sealed under a master key this process does not have yet (rotation
                    // while serving): the data key itself is unchanged.
                    Err(vault::Error::UnknownKey { .. }) if self.cache.contains_key(org_id) => {
                        Ok(self.cache.get(org_id).map(|(_, k)| k.clone()))
                    }
                    Err(source) => Err(SealError::Vault {
                        org: org_id.into(),
                        source,
                    }),
                }
            }
            None => {
                self.cache.remove(org_id);
                if !create || !store.org_exists(org_id)? {
                    return Ok(None);
                }
                let (key, raw) = DataKey::generate();
                let sealed = self.ring.seal(&raw, &key_aad(org_id));
                if !store.insert_org_key(org_id, &sealed, &self.ring.fingerprint())? {
                    // Another writer stored one first (not possible inside a write transaction,
                    // which is where this runs, but never seal under a key that is not stored).
                    return self.lookup(store, org_id, false);
                }
                let key = Arc::new(key);
                self.cache.insert(org_id.into(), (sealed, key.clone()));
                Ok(Some(key))
            }
        }
    }

    /// Encrypt a row's personal fields under its org's data key (the row's `id` must be set).
    /// For an org that no longer exists the personal fields are dropped instead: there is
    /// nobody left whose data could be kept, and no key left to protect it.
    pub fn seal_row(&mut self, store: &Store, row: &mut AuditRow) -> Result<(), SealError> {
        let Some(org) = row.org_id.clone() else {
            return Ok(());
        };
        let key = match self.key(store, &org, true) {
            Err(SealError::Vault { source, .. }) if self.withhold_unreadable => {
                tracing::error!(org = %org, error = %source, "cannot open the org's audit data key; personal fields of its request records are withheld");
                None
            }
            other => other?,
        };
        match key {
            Some(key) => {
                let seal = |field: &str, plain: &[u8]| {
                    b64().encode(key.seal(plain, &field_aad(&row.id, field)))
                };
                row.source_ip = row
                    .source_ip
                    .as_deref()
                    .map(|v| format!("{SEALED}{}", seal("source_ip", v.as_bytes())));
                row.user_agent = row
                    .user_agent
                    .as_deref()
                    .map(|v| format!("{SEALED}{}", seal("user_agent", v.as_bytes())));
                // Details are compressed before they are sealed (a request record's to about a
                // quarter); what does not shrink is sealed as it is.
                let compressed = store::pack::compress_text(&row.details);
                let plain = compressed.as_deref().unwrap_or(row.details.as_bytes());
                // Base64 needs no JSON escaping: the same text as serialising {"sealed": ..}.
                row.details = format!(r#"{{"sealed":"{}"}}"#, seal("details", plain));
            }
            None => {
                row.source_ip = None;
                row.user_agent = None;
                let mut d =
                    serde_json::json!({"personal_data": "withheld: the org does not exist"});
                // A failure's error message names what was refused; keep it.
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&row.details) {
                    if let Some(e) = v.get("error") {
                        d["error"] = e.clone();
                    }
                    for k in ["hard", "keys", "users"] {
                        if let Some(x) = v.get(k) {
                            d[k] = x.clone();
                        }
                    }
                }
                row.details = d.to_string();
            }
        }
        Ok(())
    }

    /// A stored row made readable: sealed fields decrypted, or, when the org's data key was
    /// destroyed, replaced by `null` and `{"personal_data": "shredded"}`. The hashes are those of
    /// the stored row (verify the stored form, not this one).
    pub fn open_row(&mut self, store: &Store, mut row: AuditRow) -> AuditRow {
        let sealed_details = serde_json::from_str::<serde_json::Value>(&row.details)
            .ok()
            .and_then(|v| v.get("sealed").and_then(|s| s.as_str()).map(String::from));
        let any_sealed = sealed_details.is_some()
            || [&row.source_ip, &row.user_agent]
                .iter()
                .any(|f| f.as_deref().is_some_and(|v| v.starts_with(SEALED)));
        let (Some(org), true) = (row.org_id.clone(), any_sealed) else {
            return row;
        };
        let key = match self.lookup(store, &org, false) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open an org data key; audit fields left sealed");
                row.details = serde_json::json!({"personal_data": "sealed: the master key that protects it is not available"}).to_string();
                return row;
            }
        };
        let Some(key) = key else {
            row.source_ip = None;
            row.user_agent = None;
            row.details = serde_json::json!({"personal_data": "shredded"}).to_string();
            return row;
        };
        let open = |field: &str, v: &str| -> Option<String> {
            let raw = b64().decode(v).ok()?;
            let plain = key.open(&raw, &field_aad(&row.id, field)).ok()?;
            if field == "details" {
                return store::pack::decompress_text(&plain);
            }
            String::from_utf8(plain.to_vec()).ok()
        };
        let ip = row
            .source_ip
            .as_deref()
            .and_then(|v| v.strip_prefix(SEALED))
            .map(|v| open("source_ip", v));
        let ua = row
            .user_agent
            .as_deref()
            .and_then(|v| v.strip_prefix(SEALED))
            .map(|v| open("user_agent", v));
        let details = sealed_details.map(|v| open("details", &v));
        if let Some(ip) = ip {
            row.source_ip = ip;
        }
        if let Some(ua) = ua {
            row.user_agent = ua;
        }
        if let Some(d) = details {
            row.details =
                d.unwrap_or_else(|| r#"{"personal_data":"unreadable: altered"}"#.to_string());
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::append;

    #[test]
    fn sealed_fields_open_until_the_org_is_deleted_then_stay_shredded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let s = Store::open(&path).unwrap();
        let ring = Keyring::new(&Keyring::generate(), &[]).unwrap();
        let org = s
            .insert_org("acme", &crate::policy::OrgPolicy::default())
            .unwrap();
        let mut keys = OrgKeys::new(&ring);
        let rec = |ua: &str| {
            let actor = crate::admin::Actor {
                id: "user:u1".into(),
                ..Default::default()
            };
            let mut r = actor.record("key.create", Some(&org.id));
            r.source_ip = Some("203.0.113.7".into());
            r.user_agent = Some(ua.into());
            r.details = serde_json::json!({"name": "canary-name"});
            r
        };
        append(&s, &mut keys, &[rec("ua-one")]).unwrap();
        let stored = s.audit_rows(0, None, None, 10).unwrap();
        assert!(stored[0].user_agent.as_deref().unwrap().starts_with(SEALED));
        assert!(!stored[0].details.contains("canary-name"));
        let open = keys.open_row(&s, stored[0].clone());
        assert_eq!(open.user_agent.as_deref(), Some("ua-one"));
        assert_eq!(open.source_ip.as_deref(), Some("203.0.113.7"));
        assert!(open.details.contains("canary-name"));

        // Another connection hard-deletes the org; this writer's cached key must not be used
        // for the next transaction, and what was written can no longer be read.
        let other = Store::open(&path).unwrap();
        other.atomically(|st| st.delete_org(&org.id)).unwrap();
        append(&s, &mut keys, &[rec("ua-two")]).unwrap();
        let rows = s.audit_rows(0, None, None, 10).unwrap();
        assert_eq!(crate::audit::verify(&rows), Ok(2));
        assert!(rows[1].user_agent.is_none() && rows[1].source_ip.is_none());
        assert!(!rows[1].details.contains("canary-name"));
        let mut fresh = OrgKeys::new(&ring);
        for r in rows {
            let o = fresh.open_row(&s, r);
            assert!(o.user_agent.is_none());
            assert!(!o.details.contains("canary-name"), "{}", o.details);
        }
    }
}
