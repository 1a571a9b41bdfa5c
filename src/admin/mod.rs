//! Administrative operations on orgs, API keys, people and credentials: validation, then the
//! store and the vault. The CLI, the admin API, `bootstrap` and `serve --dev` call the same
//! functions, so the rules are the same whatever the entry point. Each operation is one public
//! function taking the [`Actor`], which writes its audit record in the same transaction as its
//! change; the change alone (e.g. `orgs::create`, `keys::update`) is private to this module,
//! for [`audited`] and for `apply`, which writes a bundle's records itself. Nothing here
//! prints; errors never carry a secret.

pub mod api;
pub mod apply;
pub mod connect;
pub mod console;
mod credentials;
mod dev;
mod keys;
pub mod ops;
mod orgs;
pub mod session;
pub mod users;

pub use credentials::*;
pub use dev::*;
pub use keys::*;
pub use ops::*;
pub use orgs::*;

use serde::Serialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::audit;
use crate::auth;
use crate::auth::oauth;
use crate::store::{self, Store};
use crate::vault::{self, Keyring};

/// Longest secret accepted by `credentials set` (provider keys are far shorter).
pub const MAX_SECRET_BYTES: usize = 16 * 1024;

/// Why an operation was refused or failed. Nothing was changed when it returns one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value is refused; the message names fields as the API does (`token_url`), never a
    /// command-line flag: entry points add their own words ([`Error::Field`],
    /// [`Error::TotpRequired`], [`Error::EmptySecret`]).
    #[error("{0}")]
    Invalid(String),
    /// The value of `field` (as the API names it; the CLI shows its flag) is refused.
    #[error("{field} {reason}")]
    Field { field: &'static str, reason: String },
    /// Role `role` needs TOTP enrolled first by user `user_id`.
    #[error("role {role} requires TOTP: it must be enrolled first")]
    TotpRequired {
        role: crate::policy::Role,
        user_id: String,
    },
    /// No secret was given.
    #[error("the secret is empty")]
    EmptySecret,
    /// The master key opens none of the secrets the store holds: it is not this store's key.
    /// Writing under it would seal new secrets that the right key cannot open.
    #[error("SLUICE_SECRETS_KEY (fingerprint {given}) is not the master key this store's secrets are sealed under (fingerprints {sealed}); nothing was changed. Set the store's key (and, while rotating, the old one in SLUICE_SECRETS_KEY_OLD)")]
    WrongMasterKey { given: String, sealed: String },
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Vault(#[from] vault::Error),
    /// An OAuth connect refused or failed (`code`: `oauth_*`, see [`connect`]).
    #[error("{message}")]
    OAuth { code: &'static str, message: String },
}

impl Error {
    /// A stable code for the failure: what its audit record keeps (never the message, which
    /// may describe what was submitted).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid(_)
            | Error::Field { .. }
            | Error::TotpRequired { .. }
            | Error::EmptySecret => "invalid_request",
            Error::Store(store::Error::NotFound { .. }) => "not_found",
            Error::Store(store::Error::Duplicate { .. }) => "conflict",
            Error::Store(e) if e.is_full() => "store_full",
            Error::Store(_) => "store_error",
            Error::Vault(_) => "vault_error",
            Error::WrongMasterKey { .. } => "wrong_master_key",
            Error::OAuth { code, .. } => code,
        }
    }
}

/// Check that `ring` is this store's master key before anything is written under it: when the
/// store holds sealed secrets (credentials, OAuth tokens, org data keys, TOTP seeds), at least
/// one must be sealed under a key of the ring (current or old). An empty store takes any key.
pub fn check_master_key(store: &Store, ring: &Keyring) -> Result<()> {
    let mut sealed: Vec<String> = Vec::new();
    let mut note = |blob: &[u8]| {
        if let Some(fp) = Keyring::fingerprint_of(blob) {
            if !sealed.contains(&fp) {
                sealed.push(fp);
            }
        }
    };
    for c in store.credentials()? {
        note(&c.sealed);
        if let Some(t) = &c.token_sealed {
            note(t);
        }
    }
    for (_, blob) in store.org_keys()? {
        note(&blob);
    }
    for u in store.users(None)? {
        if let Some(t) = &u.totp_sealed {
            note(t);
        }
    }
    if sealed.is_empty() || sealed.iter().any(|fp| ring.knows(fp)) {
        return Ok(());
    }
    sealed.sort();
    Err(Error::WrongMasterKey {
        given: ring.fingerprint(),
        sealed: sealed.join(", "),
    })
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;

pub use crate::policy::{
    mcp_list, KeyPatch, KeyPolicy, KeySetting, LimitsPatch, McpLists, McpPatch, OrgPatch,
    OrgPolicy, Patch, Setting,
};

impl From<crate::policy::Invalid> for Error {
    fn from(e: crate::policy::Invalid) -> Error {
        Error::Invalid(e.0)
    }
}

/// Who performs an admin operation, for its audit record: the CLI's OS user or an admin API
/// user, with the request's source address, user agent and id when there is one.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// `cli:<os user>` or `user:<id>`.
    pub id: String,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl Actor {
    /// The operator at the command line.
    pub fn cli() -> Actor {
        Actor {
            id: audit::cli_actor(),
            ..Actor::default()
        }
    }

    /// A new audit record of `action` in `org` by this actor.
    pub fn record(&self, action: &str, org: Option<&str>) -> audit::Record {
        audit::Record {
            kind: "admin",
            action: action.into(),
            actor: self.id.clone(),
            org_id: org.map(String::from),
            source_ip: self.source_ip.clone(),
            user_agent: self.user_agent.clone(),
            request_id: self.request_id.clone(),
            outcome: "success",
            details: serde_json::json!({}),
            ..Default::default()
        }
    }
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "{what} name must be 1 to 100 printable characters"
        )));
    }
    Ok(())
}

/// Parse an RFC 3339 time that must lie in the future. The error never quotes the input (a
/// secret pasted into the wrong field must not come back).
pub fn future_time(s: &str) -> Result<store::Timestamp> {
    let t = store::Timestamp::parse(s).ok_or_else(|| {
        Error::Invalid("the expiry is not an RFC 3339 time (e.g. 2027-01-31T00:00:00Z)".into())
    })?;
    if t.is_past() {
        return Err(Error::Invalid("the expiry is in the past".into()));
    }
    Ok(t)
}

// ---- the audit trail of admin actions ----

/// Run the admin operation `f` and append its audit record in the same transaction, so an
/// acknowledged action always has its record and a failed one changes nothing. `describe`
/// fills in the record from the result (target, details: never secrets). A failure is recorded
/// too, in its own transaction, with the error message.
///
/// Records of an org have their personal fields sealed under the org's data key, which is why
/// this needs the master key (`ring`).
pub fn audited<T>(
    store: &Store,
    ring: &Keyring,
    record: audit::Record,
    f: impl FnOnce(&Store) -> Result<T>,
    describe: impl FnOnce(&T, &mut audit::Record),
) -> Result<T> {
    let mut keys = audit::OrgKeys::new(ring);
    let result: Result<T> = store.atomically(|s| {
        let v = f(s)?;
        let mut r = record.clone();
        describe(&v, &mut r);
        audit::append_in(s, &mut keys, &[r])?;
        Ok(v)
    });
    if let Err(e) = &result {
        // The code only: a message can describe what was submitted (a secret typed into the
        // wrong field), and the audit log is append-only.
        record_failure(
            store,
            ring,
            record,
            serde_json::json!({ "error": e.code() }),
        );
    }
    result
}

/// Append `record` as a failure with `details` (codes and ids, never a message): what a
/// failed audited operation or a refused OAuth connect leaves. One that cannot be written is
/// logged.
pub(crate) fn record_failure(
    store: &Store,
    ring: &Keyring,
    mut record: audit::Record,
    details: serde_json::Value,
) {
    record.outcome = "failure";
    record.details = details;
    if let Err(e) = audit::append(store, &mut audit::OrgKeys::new(ring), &[record]) {
        tracing::error!(error = %e, "cannot record the failed admin action in the audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn secrets_from_stdin_lose_one_newline_and_bad_input_is_refused_without_echo() {
        let ok = |b: &[u8]| secret_from_input(Zeroizing::new(b.to_vec())).map(|s| s.to_string());
        assert_eq!(ok(b"sk-abc\n").unwrap(), "sk-abc");
        assert_eq!(ok(b"sk-abc\r\n").unwrap(), "sk-abc");
        assert_eq!(ok(b"sk-abc").unwrap(), "sk-abc");
        for bad in [
            &b""[..],
            b"\n",
            b"sk-canary\n\n",
            b"sk-canary\nsecond",
            b"sk-\x00canary",
        ] {
            let e = ok(bad).unwrap_err().to_string();
            assert!(!e.contains("canary"), "{e}");
        }
        assert!(ok(&vec![b'a'; MAX_SECRET_BYTES + 1]).is_err());
    }

    #[test]
    fn keys_validate_their_input_and_leave_the_store_unchanged_on_error() {
        let (_d, s) = store();
        let acme = OrgSpec {
            name: "acme".into(),
            settings: OrgPatch {
                region: Some(crate::residency::Region::Eu),
                ..OrgPatch::default()
            },
        };
        let org = orgs::create(&s, &acme, Setting::On).unwrap();
        assert_eq!(org.policy.switches.pii, Setting::On);
        assert_eq!(org.policy.switches.secrets, Setting::On);
        assert_eq!(org.policy.switches.response_redaction, Setting::Off);
        assert!(matches!(
            orgs::create(&s, &acme, Setting::On),
            Err(Error::Store(store::Error::Duplicate { .. }))
        ));
        let mut spec = KeySpec::inheriting(&org.id, "app");
        spec.policy.limits.rpm = Some(10);
        let k = keys::create(&s, &spec).unwrap();
        assert!(auth::is_key_shaped(&k.key));
        for bad in [
            KeySpec {
                org_id: "nope".into(),
                ..spec.clone()
            },
            KeySpec {
                policy: KeyPolicy {
                    limits: crate::limits::Limits {
                        rpm: Some(0),
                        ..Default::default()
                    },
                    ..KeyPolicy::default()
                },
                ..spec.clone()
            },
            KeySpec {
                expires: Some("2001-01-01T00:00:00Z".into()),
                ..spec.clone()
            },
            KeySpec {
                expires: Some("tomorrow".into()),
                ..spec.clone()
            },
            KeySpec {
                name: "".into(),
                ..spec.clone()
            },
        ] {
            assert!(keys::create(&s, &bad).is_err(), "{bad:?}");
        }
        let keys = list_keys(&s, Some(&org.id)).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].status, "active");
        let listed = serde_json::to_string(&keys[0]).unwrap();
        assert!(!listed.contains(k.key.as_str()));
        assert!(!listed.contains("hash"));
        keys::revoke(&s, &k.id).unwrap();
        assert_eq!(list_keys(&s, None).unwrap()[0].status, "revoked");
        assert!(keys::revoke(&s, "nope").is_err());
        assert!(list_keys(&s, Some("nope")).is_err());
    }

    #[test]
    fn rotation_reseals_everything_or_nothing() {
        let (_d, s) = store();
        let old_b64 = Keyring::generate();
        let old = Keyring::new(&old_b64, &[]).unwrap();
        credentials::set(&s, &old, "a", "sk-secret-a", None).unwrap();
        credentials::set(&s, &old, "b", "sk-secret-b", None).unwrap();
        // An OAuth credential with a current access token.
        let settings = oauth::Settings {
            token_url: "https://login.example.com/token".into(),
            client_id: "sluice".into(),
            scope: None,
            resource: None,
            grant: oauth::Grant::ClientCredentials,
            pins: Vec::new(),
        };
        let token = oauth::Token {
            access: Zeroizing::new("access-token-c".into()),
            expires_in: 3600,
            refresh: None,
        };
        let v = credentials::set_oauth(&s, &old, "c", &settings, "client-secret-c", Some(&token))
            .unwrap();
        assert_eq!(
            (v.kind, v.oauth.as_ref()),
            (store::CredentialType::OAuth, Some(&settings))
        );
        assert!(v.token_expires_at.is_some());
        // An org with an audit data key, and a user with a TOTP seed.
        let org = audited(
            &s,
            &old,
            Actor {
                id: "cli:t".into(),
                ..Actor::default()
            }
            .record("org.create", None),
            |s| {
                orgs::create(
                    s,
                    &OrgSpec {
                        name: "acme".into(),
                        ..OrgSpec::default()
                    },
                    Setting::On,
                )
            },
            |o, r| r.org_id = Some(o.id.clone()),
        )
        .unwrap();
        users::create_user(
            &s,
            &old,
            &users::NewUser {
                email: "a@example.com".into(),
                org_id: Some(org.id.clone()),
                role: Some(users::Role::Admin),
                operator: false,
                totp: true,
            },
            "a long enough password",
        )
        .unwrap();

        // Without the old key nothing can be re-sealed, and nothing changes.
        let stranger = Keyring::new(&Keyring::generate(), &[]).unwrap();
        let before = s.credentials().unwrap();
        assert!(s.atomically(|s| credentials::reseal(s, &stranger)).is_err());
        assert_eq!(s.credentials().unwrap(), before);

        let new = Keyring::new(&Keyring::generate(), &[&old_b64]).unwrap();
        let r = s.atomically(|s| credentials::reseal(s, &new)).unwrap();
        assert_eq!((r.rotated, r.org_keys_rotated, r.totp_rotated), (3, 1, 1));
        let fp = Some(new.fingerprint());
        for (_, sealed) in s.org_keys().unwrap() {
            assert_eq!(Keyring::fingerprint_of(&sealed), fp);
        }
        for u in s.users(None).unwrap() {
            assert_eq!(
                Keyring::fingerprint_of(u.totp_sealed.as_deref().unwrap()),
                fp
            );
        }
        let after = list_credentials(&s, Some(&new.fingerprint())).unwrap();
        assert!(after.iter().all(|c| c.current_key == Some(true)));
        let only_new = Keyring::new(&Keyring::generate(), &[]).unwrap();
        assert!(s.credentials().unwrap().iter().all(|c| only_new
            .open(&c.sealed, &vault::aad("credentials", &c.id, &c.name))
            .is_err()));
        let c = &s.credentials().unwrap()[0];
        assert_eq!(
            &*new
                .open(&c.sealed, &vault::aad("credentials", &c.id, &c.name))
                .unwrap(),
            b"sk-secret-a"
        );
        // The access token moved to the new key with its secret.
        let c = &s.credentials().unwrap()[2];
        let t = c.token_sealed.as_deref().unwrap();
        assert_eq!(Keyring::fingerprint_of(t), fp);
        assert_eq!(
            &*new
                .open(t, &vault::aad(vault::TOKEN_TABLE, &c.id, &c.name))
                .unwrap(),
            b"access-token-c"
        );
    }

    #[test]
    fn oauth_settings_are_checked_without_quoting_secrets() {
        let ok = oauth::Settings {
            token_url: "https://login.example.com/token".into(),
            client_id: "sluice".into(),
            scope: Some("a b".into()),
            resource: Some("https://mcp.example.com/mcp".into()),
            grant: oauth::Grant::RefreshToken,
            pins: vec![format!("sha256/{}=", "A".repeat(43))],
        };
        assert!(check_oauth(&ok).is_ok());
        let bad = [
            oauth::Settings {
                token_url: "http://login.example.com/token".into(),
                ..ok.clone()
            },
            oauth::Settings {
                client_id: String::new(),
                ..ok.clone()
            },
            oauth::Settings {
                scope: Some("a\nb".into()),
                ..ok.clone()
            },
            oauth::Settings {
                resource: Some("https://mcp.example.com/mcp#x".into()),
                ..ok.clone()
            },
            oauth::Settings {
                resource: Some("/relative".into()),
                ..ok.clone()
            },
            oauth::Settings {
                pins: vec!["sha256/short".into()],
                ..ok.clone()
            },
            oauth::Settings {
                pins: vec![ok.pins[0].clone(); 17],
                ..ok.clone()
            },
        ];
        for b in bad {
            assert!(matches!(check_oauth(&b), Err(Error::Field { .. })), "{b:?}");
        }
    }
}
