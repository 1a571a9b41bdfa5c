//! The audited admin operations that are not org or key settings (those are next to their
//! specs in the parent module): people, key revocation, credentials, the master key rotation,
//! the GDPR hard delete, `serve --dev`'s first run and audit pruning. Each one takes the
//! [`Actor`] and writes its audit record in the same transaction as its change, with the same
//! details whichever entry point (CLI, `bootstrap`, `serve --dev`, admin API) called it: the
//! callers only parse their input and render the result.

use serde_json::json;

use super::users::{self, CreatedUser, Enrollment, NewUser, Role, UserView};
use super::{audited, Actor, CredentialView, DevSetup, OrgDeleted, Result, Rotation, Setting};
use crate::audit;
use crate::auth::oauth;
use crate::store::Store;
use crate::vault::Keyring;

// ---- people ----

/// Create an account (`user.create`).
pub fn create_user(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    new: &NewUser,
    password: &str,
) -> Result<CreatedUser> {
    audited(
        store,
        ring,
        actor.record("user.create", new.org_id.as_deref()),
        |s| users::create_user(s, ring, new, password),
        |c, r| {
            let u = &c.user.user;
            r.target_id = Some(u.id.clone());
            r.details = json!({"email": u.email, "role": u.role, "operator": u.operator,
                               "totp": c.totp.is_some()});
        },
    )
}

/// An audited change to one account; the record names the account's org.
fn on_user<T>(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    action: &str,
    user_id: &str,
    op: impl FnOnce(&Store) -> Result<T>,
    describe: impl FnOnce(&T, &mut audit::Record),
) -> Result<T> {
    let org = store.user(user_id).ok().and_then(|u| u.org_id);
    let mut rec = actor.record(action, org.as_deref());
    rec.target_id = Some(user_id.to_string());
    audited(store, ring, rec, op, describe)
}

/// Change an account's role in its org (`user.update`).
pub fn set_role(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    user_id: &str,
    role: Role,
) -> Result<UserView> {
    on_user(
        store,
        ring,
        actor,
        "user.update",
        user_id,
        |s| users::set_role(s, user_id, role),
        |v, r| r.details = json!({"role": v.user.role}),
    )
}

/// Delete an account (`user.delete`).
pub fn delete_user(store: &Store, ring: &Keyring, actor: &Actor, user_id: &str) -> Result<()> {
    on_user(
        store,
        ring,
        actor,
        "user.delete",
        user_id,
        |s| users::delete_user(s, user_id).map(drop),
        |_, _| {},
    )
}

/// Set an account's password, which revokes its sessions (`user.password`).
pub fn set_password(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    user_id: &str,
    password: &str,
) -> Result<()> {
    on_user(
        store,
        ring,
        actor,
        "user.password",
        user_id,
        |s| users::set_password(s, user_id, password),
        |_, _| {},
    )
}

/// Enrol (or re-enrol) TOTP for an account, with new recovery codes (`user.totp_enroll`).
pub fn enroll_totp(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    user_id: &str,
) -> Result<Enrollment> {
    on_user(
        store,
        ring,
        actor,
        "user.totp_enroll",
        user_id,
        |s| users::enroll_totp(s, ring, &s.user(user_id)?),
        |_, _| {},
    )
}

/// Revoke every session of an account (`user.revoke_sessions`).
pub fn revoke_sessions(store: &Store, ring: &Keyring, actor: &Actor, user_id: &str) -> Result<()> {
    on_user(
        store,
        ring,
        actor,
        "user.revoke_sessions",
        user_id,
        |s| users::revoke_sessions(s, user_id),
        |_, _| {},
    )
}

// ---- keys ----

/// Revoke an API key (`key.revoke`); the record names the key's org.
pub fn revoke_key(store: &Store, ring: &Keyring, actor: &Actor, key_id: &str) -> Result<()> {
    let org = store
        .keys(None)?
        .into_iter()
        .find(|k| k.id == key_id)
        .map(|k| k.org_id);
    let mut rec = actor.record("key.revoke", org.as_deref());
    rec.target_id = Some(key_id.to_string());
    audited(
        store,
        ring,
        rec,
        |s| super::keys::revoke(s, key_id),
        |_, _| {},
    )
}

// ---- credentials ----

/// Store a static upstream credential (`credential.set`). `via` names an entry point that is
/// not the plain command or call (e.g. `bootstrap`).
pub fn set_credential(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    name: &str,
    secret: &str,
    expires: Option<&str>,
    via: Option<&str>,
) -> Result<CredentialView> {
    let mut rec = actor.record("credential.set", None);
    rec.target_id = Some(name.to_string());
    audited(
        store,
        ring,
        rec,
        |s| super::credentials::set(s, ring, name, secret, expires),
        |v, r| {
            r.details = json!({"name": v.name, "key_fingerprint": v.key_fingerprint,
                               "expires_at": v.expires_at});
            if let Some(via) = via {
                r.details["via"] = via.into();
            }
        },
    )
}

/// Store an OAuth client credential, with its first token when one was obtained
/// (`credential.set_oauth`).
pub fn set_oauth_credential(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    name: &str,
    settings: &oauth::Settings,
    secret: &str,
    first: Option<&oauth::Token>,
) -> Result<CredentialView> {
    let mut rec = actor.record("credential.set_oauth", None);
    rec.target_id = Some(name.to_string());
    audited(
        store,
        ring,
        rec,
        |s| super::credentials::set_oauth(s, ring, name, settings, secret, first),
        |v, r| {
            r.details = json!({"name": v.name, "key_fingerprint": v.key_fingerprint,
                               "oauth": v.oauth, "token_expires_at": v.token_expires_at});
        },
    )
}

/// Delete an upstream credential (`credential.delete`).
/// `tokens` says what became of a connected credential's tokens at its server (`none`,
/// `revoked`, `failed`: see [`super::connect::revoke`], run before).
pub fn delete_credential(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    name: &str,
    tokens: &str,
) -> Result<()> {
    let mut rec = actor.record("credential.delete", None);
    rec.target_id = Some(name.to_string());
    audited(
        store,
        ring,
        rec,
        |s| super::credentials::delete(s, name),
        |_, r| r.details = json!({"name": name, "tokens": tokens}),
    )
}

/// Re-seal every secret under the current master key (`secrets.rotate`).
pub fn rotate(store: &Store, ring: &Keyring, actor: &Actor) -> Result<Rotation> {
    audited(
        store,
        ring,
        actor.record("secrets.rotate", None),
        |s| super::credentials::reseal(s, ring),
        |v, r| r.details = json!({"rotated": v.rotated, "key_fingerprint": v.key_fingerprint}),
    )
}

// ---- the GDPR hard delete ----

/// Hard-delete an org ([`super::delete_org_hard`], `org.delete`), then empty the WAL
/// ([`super::purge_wal`]). The final record of a forgotten org carries counts only: no IP, no
/// user agent, no names. Returns what was removed and whether the WAL was emptied.
pub fn delete_org(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    org_id: &str,
) -> Result<(OrgDeleted, bool)> {
    let mut rec = actor.record("org.delete", Some(org_id));
    rec.target_id = Some(org_id.to_string());
    rec.source_ip = None;
    rec.user_agent = None;
    let d = audited(
        store,
        ring,
        rec,
        |s| super::delete_org_hard(s, org_id),
        |d, r| {
            r.details = json!({"hard": true, "keys": d.removed.keys, "users": d.removed.users});
        },
    )?;
    Ok((d, super::purge_wal(store)))
}

// ---- serve --dev ----

/// `serve --dev`'s first run (`dev::bootstrap`, recorded as `dev.bootstrap`).
pub fn dev_bootstrap(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    credential_names: &[String],
    openai_key: Option<&str>,
    pii_default: Setting,
) -> Result<DevSetup> {
    audited(
        store,
        ring,
        actor.record("dev.bootstrap", None),
        |s| super::dev::bootstrap(s, ring, credential_names, openai_key, pii_default),
        |d, r| {
            r.org_id = d.created.as_ref().map(|(o, _)| o.id.clone());
            r.target_id = d.created.as_ref().map(|(_, k)| k.id.clone());
            r.details = json!({
                "created_org_and_key": d.created.is_some(),
                "credentials_set": d.credentials_set,
            });
        },
    )
}

// ---- the audit log ----

/// Prune audit records older than `before` (RFC 3339 UTC) that an export covered, or all of
/// them with `force`; an `audit.prune` checkpoint record by `actor` keeps the chain verifiable.
pub fn prune_audit(
    store: &Store,
    actor: &Actor,
    before: &str,
    force: bool,
) -> std::result::Result<audit::Pruned, audit::PruneError> {
    audit::prune(store, before, force, &actor.id)
}
