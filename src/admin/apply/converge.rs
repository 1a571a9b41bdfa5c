//! One pass of a bundle over the store, table by table: orgs, their keys and users, then what
//! the bundle owned and no longer lists. `write: false` plans (nothing is written); either way
//! every change is noted with its audit record. A row the bundle changes is brought to what
//! it wants by the policy model's patches (`OrgPatch::between`, `KeyPatch::between`).

use std::collections::HashSet;

use super::*;

/// What one pass reads once, and what it collects.
pub(super) struct Pass<'a> {
    s: &'a Store,
    actor: &'a Actor,
    write: bool,
    orgs: Vec<store::Org>,
    keys: Vec<store::Key>,
    managed_orgs: HashSet<String>,
    managed_keys: HashSet<String>,
    managed_users: HashSet<String>,
    /// The keys and users the bundle lists (by id).
    listed_keys: HashSet<String>,
    listed_users: HashSet<String>,
    changes: Vec<Change>,
    records: Vec<audit::Record>,
}

impl<'a> Pass<'a> {
    pub(super) fn new(s: &'a Store, actor: &'a Actor, write: bool) -> Result<Pass<'a>> {
        Ok(Pass {
            s,
            actor,
            write,
            orgs: s.orgs()?,
            keys: s.keys(None)?,
            managed_orgs: s.managed(Managed::Org)?,
            managed_keys: s.managed(Managed::Key)?,
            managed_users: s.managed(Managed::User)?,
            listed_keys: HashSet::new(),
            listed_users: HashSet::new(),
            changes: Vec::new(),
            records: Vec::new(),
        })
    }

    /// The changes and their audit records.
    pub(super) fn done(self) -> (Vec<Change>, Vec<audit::Record>) {
        (self.changes, self.records)
    }

    fn note(&mut self, c: Change, mut r: audit::Record, details: serde_json::Value) {
        r.details = details;
        r.details["via"] = "apply".into();
        self.records.push(r);
        self.changes.push(c);
    }

    /// Create or update the org `w`; its id (empty when planning a new one).
    pub(super) fn org(&mut self, w: &WantOrg, pii_default: Setting) -> Result<String> {
        let (s, write) = (self.s, self.write);
        let change = |action, detail: String| Change {
            action,
            org: w.spec.name.clone(),
            key: None,
            detail,
        };
        let Some(have) = self.orgs.iter().find(|o| o.name == w.spec.name).cloned() else {
            let id = if write {
                let o = super::super::orgs::create(s, &w.spec, pii_default)?;
                s.set_managed(Managed::Org, &o.id)?;
                o.id
            } else {
                String::new()
            };
            let mut r = self.actor.record("org.create", Some(&id));
            r.target_id = Some(id.clone());
            let details = if write {
                super::super::org_details(&s.org(&id)?)
            } else {
                serde_json::json!({})
            };
            self.note(change("org.create", "new".into()), r, details);
            return Ok(id);
        };
        // An org made by hand is never taken over by a bundle (its settings, its keys): the
        // apply fails whole. (`sluice bootstrap` applies a configured bundle that lists its
        // org first, so the bundle makes it.)
        if !self.managed_orgs.contains(&have.id) {
            return Err(Error::Invalid(format!(
                "{}: an org with this name exists in the store and was not made by a bundle; nothing was changed",
                w.at
            )));
        }
        let (patch, fields) = org_change(&have, &w.spec);
        if !fields.is_empty() {
            let details = if write {
                super::super::org_details(&super::super::orgs::update(s, &have.id, &patch)?)
            } else {
                serde_json::json!({})
            };
            let mut r = self.actor.record("org.update", Some(&have.id));
            r.target_id = Some(have.id.clone());
            self.note(change("org.update", fields.join(", ")), r, details);
        }
        Ok(have.id)
    }

    /// Import, restore or update the key `k` of org `w` (`org_id`).
    pub(super) fn key(&mut self, w: &WantOrg, org_id: &str, k: &WantKey) -> Result<()> {
        let (s, write) = (self.s, self.write);
        let mut spec = k.spec.clone();
        spec.org_id = org_id.to_string();
        let at = |action, detail: String| Change {
            action,
            org: w.spec.name.clone(),
            key: Some(k.spec.name.clone()),
            detail,
        };
        let Some(have) = self.keys.iter().find(|have| have.hash == k.hash).cloned() else {
            let id = super::super::imported_key_id(&k.hash);
            self.listed_keys.insert(id.clone());
            let details = if write {
                let row = import_key(s, &spec, &k.hash, &k.prefix)?;
                s.set_managed(Managed::Key, &row.id)?;
                super::super::key_details(&row)
            } else {
                super::super::check_key_spec(&spec)?;
                serde_json::json!({})
            };
            let mut r = self.actor.record("key.create", Some(org_id));
            r.target_id = Some(id);
            self.note(at("key.create", "new".into()), r, details);
            return Ok(());
        };
        self.listed_keys.insert(have.id.clone());
        if have.org_id != org_id {
            return Err(Error::Invalid(format!(
                "{}: the key belongs to another org in the store",
                k.at
            )));
        }
        // Rows made by hand are never the bundle's: a collision fails the whole apply (kind
        // and place named, not the value).
        if !self.managed_keys.contains(&have.id) && !s.is_bundle_revoked(&have.id)? {
            return Err(Error::Invalid(format!(
                "{}: a key with this hash exists in the store and was not made by a bundle; nothing was changed",
                k.at
            )));
        }
        if have.revoked_at.is_some() {
            // A key a bundle revoked comes back when listed again; one a person revoked stays
            // revoked.
            if !s.is_bundle_revoked(&have.id)? {
                return Err(Error::Invalid(format!(
                    "{}: the key was revoked by hand and cannot come back; make a new one",
                    k.at
                )));
            }
            if write {
                s.restore_bundle_key(&have.id)?;
            }
            let mut r = self.actor.record("key.restore", Some(org_id));
            r.target_id = Some(have.id.clone());
            self.note(
                at(
                    "key.restore",
                    "listed again after the bundle revoked it".into(),
                ),
                r,
                serde_json::json!({"prefix": have.prefix}),
            );
        }
        if write {
            s.set_managed(Managed::Key, &have.id)?;
        }
        let (patch, fields) = key_change(&have, &spec);
        if !fields.is_empty() {
            let details = if write {
                super::super::key_details(&super::super::keys::update(s, &have.id, &patch)?)
            } else {
                serde_json::json!({})
            };
            let mut r = self.actor.record("key.update", Some(org_id));
            r.target_id = Some(have.id.clone());
            self.note(at("key.update", fields.join(", ")), r, details);
        }
        Ok(())
    }

    /// Create or update the user `u` of org `w` (`org_id`).
    pub(super) fn user(&mut self, w: &WantOrg, org_id: &str, u: &WantUser) -> Result<()> {
        let (s, write) = (self.s, self.write);
        let at = |action, detail: String| Change {
            action,
            org: w.spec.name.clone(),
            key: Some(u.email.clone()),
            detail,
        };
        let Some(have) = s.user_by_email(&u.email)? else {
            let id = store::new_id();
            if write {
                let now = store::Timestamp::now();
                s.insert_user(&store::User {
                    id: id.clone(),
                    email: u.email.clone(),
                    org_id: Some(org_id.to_string()),
                    role: Some(u.role),
                    operator: false,
                    password_hash: u.hash.clone(),
                    totp_sealed: None,
                    totp_last_step: 0,
                    session_epoch: 0,
                    created_at: now,
                    password_changed_at: now,
                })?;
                s.set_managed(Managed::User, &id)?;
            }
            self.listed_users.insert(id.clone());
            let mut r = self.actor.record("user.create", Some(org_id));
            r.target_id = Some(id);
            self.note(
                at("user.create", "new".into()),
                r,
                serde_json::json!({"email": u.email, "role": u.role.as_str(),
                    "operator": false, "totp": false}),
            );
            return Ok(());
        };
        self.listed_users.insert(have.id.clone());
        if have.operator || have.org_id.as_deref() != Some(org_id) {
            return Err(Error::Invalid(format!(
                "{}: the user belongs to another org (or is an operator) in the store",
                u.at
            )));
        }
        // A user made by hand is never taken over (its role, its password).
        if !self.managed_users.contains(&have.id) {
            return Err(Error::Invalid(format!(
                "{}: a user with this email exists in the store and was not made by a bundle; nothing was changed",
                u.at
            )));
        }
        let mut fields = Vec::new();
        if have.role != Some(u.role) {
            fields.push("role");
        }
        if have.password_hash != u.hash {
            fields.push("password");
        }
        if write {
            s.set_managed(Managed::User, &have.id)?;
            if fields.contains(&"role") {
                super::super::users::set_role(s, &have.id, u.role)?;
            }
            if fields.contains(&"password") {
                // Every session of the user is revoked with it.
                s.set_user_password(&have.id, &u.hash)?;
            }
        }
        if !fields.is_empty() {
            let mut r = self.actor.record("user.update", Some(org_id));
            r.target_id = Some(have.id.clone());
            self.note(
                at("user.update", fields.join(", ")),
                r,
                serde_json::json!({"role": u.role.as_str(),
                    "password_changed": fields.contains(&"password")}),
            );
        }
        Ok(())
    }

    /// Delete the users and revoke the keys the bundle owned and no longer lists.
    pub(super) fn unlisted(&mut self) -> Result<()> {
        let (s, write) = (self.s, self.write);
        for u in s.users(None)? {
            if !self.managed_users.contains(&u.id) || self.listed_users.contains(&u.id) {
                continue;
            }
            if write {
                super::super::users::delete_user(s, &u.id)?;
            }
            let org = self
                .orgs
                .iter()
                .find(|o| Some(&o.id) == u.org_id.as_ref())
                .map_or_else(String::new, |o| o.name.clone());
            let mut r = self.actor.record("user.delete", u.org_id.as_deref());
            r.target_id = Some(u.id.clone());
            self.note(
                Change {
                    action: "user.delete",
                    org,
                    key: Some(u.email.clone()),
                    detail: "no longer in the bundle".into(),
                },
                r,
                serde_json::json!({"email": u.email}),
            );
        }
        let gone: Vec<store::Key> = self
            .keys
            .iter()
            .filter(|k| {
                self.managed_keys.contains(&k.id)
                    && !self.listed_keys.contains(&k.id)
                    && k.revoked_at.is_none()
            })
            .cloned()
            .collect();
        for k in gone {
            if write {
                s.revoke_key_for_bundle(&k.id)?;
            }
            let org = self
                .orgs
                .iter()
                .find(|o| o.id == k.org_id)
                .map_or_else(|| k.org_id.clone(), |o| o.name.clone());
            let mut r = self.actor.record("key.revoke", Some(&k.org_id));
            r.target_id = Some(k.id.clone());
            self.note(
                Change {
                    action: "key.revoke",
                    org,
                    key: Some(k.name.clone()),
                    detail: "no longer in the bundle".into(),
                },
                r,
                serde_json::json!({"prefix": k.prefix}),
            );
        }
        Ok(())
    }
}

/// The changes that bring org `have` to `want` (none when it matches). A region the bundle
/// leaves out is kept.
pub(super) fn org_change(have: &store::Org, want: &OrgSpec) -> (OrgPatch, Vec<&'static str>) {
    OrgPatch::between(&have.policy, &want.settings.apply(&have.policy))
}

/// The changes that bring key `have` to `want` (none when it matches; a key's region is set
/// when it is made).
pub(super) fn key_change(have: &store::Key, want: &KeySpec) -> (KeyPatch, Vec<&'static str>) {
    KeyPatch::between(&have.policy, &want.policy)
}
