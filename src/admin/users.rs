//! People who administer sluice: accounts, roles, passwords (bcrypt, cost 12), TOTP (RFC 6238,
//! seeds sealed by the vault and bound to the user), single-use recovery codes, and login.
//!
//! Passwords are 12 to 72 bytes: bcrypt only reads the first 72 bytes, so longer ones are
//! refused rather than silently truncated. Recovery codes are 80 random bits behind a 4-character
//! lookup id (so a login checks one bcrypt hash, not ten); being random they are hashed at a
//! lower bcrypt cost (10) than passwords.

use serde::Serialize;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Secret, TOTP};
use zeroize::Zeroizing;

use super::{Error, Result};
use crate::store::{self, Store};
use crate::vault::{self, Keyring};

/// bcrypt cost for passwords.
pub const PASSWORD_COST: u32 = 12;
/// bcrypt cost for recovery codes (80 random bits each).
pub const RECOVERY_COST: u32 = 10;
/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted, in bytes (bcrypt's limit).
pub const MAX_PASSWORD_BYTES: usize = 72;
/// Recovery codes generated at each TOTP enrolment.
pub const RECOVERY_CODES: usize = 10;
const TOTP_ISSUER: &str = "sluice";
const TOTP_STEP: u64 = 30;

pub use crate::policy::Role;

pub(crate) fn check_email(email: &str) -> Result<String> {
    let e = email.trim();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        })
        && !e
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':');
    if !ok {
        return Err(Error::Invalid(
            "email must look like name@example.com".into(),
        ));
    }
    Ok(e.to_string())
}

/// Check a new password against the policy. The message never contains the password.
pub fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::Invalid(format!(
            "the password must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::Invalid(format!(
            "the password must be at most {MAX_PASSWORD_BYTES} bytes (bcrypt ignores the rest)"
        )));
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String> {
    check_password(password)?;
    bcrypt::non_truncating_hash(password, PASSWORD_COST)
        .map_err(|_| Error::Invalid("cannot hash the password".into()))
}

fn totp_for(seed: Vec<u8>, email: &str) -> Result<TOTP> {
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        TOTP_STEP,
        seed,
        Some(TOTP_ISSUER.into()),
        email.to_string(),
    )
    .map_err(|e| Error::Invalid(format!("cannot set up TOTP: {e}")))
}

fn totp_aad(user_id: &str) -> Vec<u8> {
    vault::aad("users", user_id, "totp")
}

/// What a user needs to finish TOTP enrolment, shown once.
#[derive(Serialize)]
pub struct Enrollment {
    /// `otpauth://totp/...`: scan it (or paste it) into an authenticator app.
    #[serde(serialize_with = "super::expose")]
    pub otpauth_uri: Zeroizing<String>,
    /// Each works once, in place of a TOTP code.
    #[serde(serialize_with = "expose_all")]
    pub recovery_codes: Vec<Zeroizing<String>>,
}

fn expose_all<S: serde::Serializer>(
    v: &[Zeroizing<String>],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|c| c.as_str()))
}

fn recovery_code() -> (String, Zeroizing<String>) {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::rngs::OsRng;
    let raw: Zeroizing<String> = Zeroizing::new(
        (0..20)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect(),
    );
    let lookup = raw[..4].to_string();
    let shown = Zeroizing::new(
        raw.as_bytes()
            .chunks(5)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("-"),
    );
    (lookup, shown)
}

/// Normalise a typed recovery code: dashes and spaces dropped, lower case.
fn normalise_code(code: &str) -> Zeroizing<String> {
    Zeroizing::new(
        code.chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .flat_map(char::to_lowercase)
            .collect(),
    )
}

/// Generate a TOTP seed and recovery codes for `user`, store them (sealed / hashed) and return
/// what the user must see once. Replaces any previous enrolment.
pub(super) fn enroll_totp(store: &Store, ring: &Keyring, user: &store::User) -> Result<Enrollment> {
    let seed = Zeroizing::new(
        Secret::generate_secret()
            .to_bytes()
            .map_err(|_| Error::Invalid("cannot generate a TOTP seed".into()))?,
    );
    let totp = totp_for(seed.to_vec(), &user.email)?;
    store.set_user_totp(&user.id, Some(&ring.seal(&seed, &totp_aad(&user.id))))?;
    let mut shown = Vec::with_capacity(RECOVERY_CODES);
    let mut stored = Vec::with_capacity(RECOVERY_CODES);
    while shown.len() < RECOVERY_CODES {
        let (lookup, code) = recovery_code();
        if stored.iter().any(|(l, _)| *l == lookup) {
            continue;
        }
        let hash = bcrypt::hash(normalise_code(&code).as_bytes(), RECOVERY_COST)
            .map_err(|_| Error::Invalid("cannot hash a recovery code".into()))?;
        stored.push((lookup, hash));
        shown.push(code);
    }
    store.set_recovery_codes(&user.id, &stored)?;
    Ok(Enrollment {
        otpauth_uri: Zeroizing::new(totp.get_url()),
        recovery_codes: shown,
    })
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    /// `None` for an operator.
    pub org_id: Option<String>,
    pub role: Option<Role>,
    pub operator: bool,
    /// Enrol TOTP even where it is optional.
    pub totp: bool,
}

/// A user as listed: never a hash or a seed.
#[derive(Debug, Serialize)]
pub struct UserView {
    #[serde(flatten)]
    pub user: store::User,
    pub totp_enrolled: bool,
    pub recovery_codes_left: i64,
}

/// A user's listing view.
pub fn view(store: &Store, user: store::User) -> Result<UserView> {
    Ok(UserView {
        totp_enrolled: user.totp_sealed.is_some(),
        recovery_codes_left: store.recovery_codes_left(&user.id)?,
        user,
    })
}

/// Users (optionally of one org, which must exist), oldest first.
pub fn list(store: &Store, org: Option<&str>) -> Result<Vec<UserView>> {
    if let Some(o) = org {
        store.org(o)?;
    }
    store
        .users(org)?
        .into_iter()
        .map(|u| view(store, u))
        .collect()
}

/// A created user, with the TOTP enrolment to hand over once.
#[derive(Serialize)]
pub struct CreatedUser {
    pub user: UserView,
    pub totp: Option<Enrollment>,
}

/// Create an account. Operators, owners and admins always get TOTP (mandatory for them).
pub(super) fn create_user(
    store: &Store,
    ring: &Keyring,
    new: &NewUser,
    password: &str,
) -> Result<CreatedUser> {
    let email = check_email(&new.email)?;
    let (org_id, role) = match (new.operator, &new.org_id, new.role) {
        (true, None, None) => (None, None),
        (false, Some(o), Some(r)) => (Some(o.clone()), Some(r)),
        (true, _, _) => {
            return Err(Error::Invalid(
                "an operator manages every org: give no org and no role".into(),
            ))
        }
        _ => return Err(Error::Invalid("a user needs an org and a role".into())),
    };
    let hash = hash_password(password)?;
    let now = store::Timestamp::now();
    let user = store::User {
        id: store::new_id(),
        email,
        org_id,
        role,
        operator: new.operator,
        password_hash: hash,
        totp_sealed: None,
        totp_last_step: 0,
        session_epoch: 0,
        created_at: now,
        password_changed_at: now,
    };
    store.insert_user(&user)?;
    let totp = if new.operator || role.is_some_and(Role::needs_totp) || new.totp {
        Some(enroll_totp(store, ring, &user)?)
    } else {
        None
    };
    let user = view(store, store.user(&user.id)?)?;
    Ok(CreatedUser { user, totp })
}

fn owners_left(store: &Store, org: &str, except: &str) -> Result<usize> {
    Ok(store
        .users(Some(org))?
        .iter()
        .filter(|u| u.id != except && u.role == Some(Role::Owner))
        .count())
}

/// Change a member's role. Owner and admin need TOTP enrolled first; an org's last owner
/// cannot be downgraded.
pub(super) fn set_role(store: &Store, user_id: &str, role: Role) -> Result<UserView> {
    let u = store.user(user_id)?;
    let Some(org) = u.org_id.as_deref() else {
        return Err(Error::Invalid("operators have no org role".into()));
    };
    if role.needs_totp() && u.totp_sealed.is_none() {
        return Err(Error::TotpRequired {
            role,
            user_id: user_id.to_string(),
        });
    }
    if u.role == Some(Role::Owner) && role != Role::Owner && owners_left(store, org, user_id)? == 0
    {
        return Err(Error::Invalid(
            "this is the org's last owner: make someone else owner first".into(),
        ));
    }
    store.set_user_role(user_id, role)?;
    view(store, store.user(user_id)?)
}

/// Delete an account (sessions die with it). An org's last owner cannot be deleted (delete
/// the org instead).
pub(super) fn delete_user(store: &Store, user_id: &str) -> Result<store::User> {
    let u = store.user(user_id)?;
    if let Some(org) = u.org_id.as_deref() {
        if u.role == Some(Role::Owner) && owners_left(store, org, user_id)? == 0 {
            return Err(Error::Invalid(
                "this is the org's last owner: make someone else owner first, or delete the org"
                    .into(),
            ));
        }
    }
    store.delete_user(user_id)?;
    Ok(u)
}

/// Set a new password; every existing session is revoked.
pub(super) fn set_password(store: &Store, user_id: &str, password: &str) -> Result<()> {
    let hash = hash_password(password)?;
    Ok(store.set_user_password(user_id, &hash)?)
}

/// Revoke every session of a user.
pub(super) fn revoke_sessions(store: &Store, user_id: &str) -> Result<()> {
    Ok(store.bump_session_epoch(user_id)?)
}

/// Re-seal every TOTP seed under the current master key (inside the rotation transaction).
pub fn reseal_totp(store: &Store, ring: &Keyring) -> Result<usize> {
    let mut n = 0;
    for u in store.users(None)? {
        let Some(sealed) = &u.totp_sealed else {
            continue;
        };
        let aad = totp_aad(&u.id);
        let seed = ring.open(sealed, &aad).map_err(|e| {
            Error::Invalid(format!(
                "the TOTP seed of user {}: {e}; nothing was changed",
                u.id
            ))
        })?;
        store.set_user_totp_sealed(&u.id, &ring.seal(&seed, &aad))?;
        n += 1;
    }
    Ok(n)
}

// ---- login ----

/// What a login presents.
pub struct Attempt<'a> {
    pub email: &'a str,
    pub password: &'a str,
    pub totp: Option<&'a str>,
    pub recovery_code: Option<&'a str>,
}

/// Why a login failed: for the audit log and metrics only. The client always gets the same
/// answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    UnknownUser,
    WrongPassword,
    CodeMissing,
    WrongCode,
    ReplayedCode,
    Internal,
}

impl Failure {
    /// A stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::UnknownUser => "unknown_user",
            Failure::WrongPassword => "wrong_password",
            Failure::CodeMissing => "second_factor_missing",
            Failure::WrongCode => "wrong_second_factor",
            Failure::ReplayedCode => "replayed_totp_code",
            Failure::Internal => "internal",
        }
    }
}

/// A login refused, with the account when it was known.
#[derive(Debug)]
pub struct Refused {
    pub reason: Failure,
    /// The account's id and org, when the email was known.
    pub user_id: Option<String>,
    pub org_id: Option<String>,
}

/// A bcrypt hash no password matches, verified against for unknown accounts so that they take
/// as long as known ones.
pub fn dummy_hash() -> String {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut *seed);
    bcrypt::hash(*seed, PASSWORD_COST).unwrap_or_default()
}

fn dummy_recovery_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| bcrypt::hash(b"sluice-dummy-recovery", RECOVERY_COST).unwrap_or_default())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Check an attempt. The work done is the same whether or not the account exists (a bcrypt
/// comparison against `dummy` for unknown accounts). A TOTP code is accepted once: its time
/// step must be later than the last one used, claimed atomically in the store. A recovery
/// code is burnt on use.
pub fn login(
    store: &Store,
    ring: &Keyring,
    dummy: &str,
    a: &Attempt,
) -> std::result::Result<store::User, Refused> {
    let refuse = |reason, user: Option<store::User>| Refused {
        reason,
        user_id: user.as_ref().map(|u| u.id.clone()),
        org_id: user.and_then(|u| u.org_id),
    };
    let user = match store.user_by_email(&super::session::account_key(a.email)) {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "login: cannot read the store");
            return Err(refuse(Failure::Internal, None));
        }
    };
    let pw_ok = a.password.len() <= MAX_PASSWORD_BYTES
        && bcrypt::verify(
            a.password,
            user.as_ref().map_or(dummy, |u| u.password_hash.as_str()),
        )
        .unwrap_or(false);
    // A recovery code costs one bcrypt comparison whatever else is wrong with the attempt, so
    // its timing says nothing about the account either.
    let recovery = a
        .recovery_code
        .map(normalise_code)
        .filter(|c| !c.is_empty())
        .map(|code| {
            let lookup = code.get(..4).unwrap_or("").to_string();
            let hash = user
                .as_ref()
                .and_then(|u| store.recovery_code(&u.id, &lookup).ok().flatten());
            let ok = bcrypt::verify(
                code.as_bytes(),
                hash.as_deref().unwrap_or(dummy_recovery_hash()),
            )
            .unwrap_or(false)
                && hash.is_some();
            (lookup, ok)
        });
    let Some(user) = user else {
        return Err(refuse(Failure::UnknownUser, None));
    };
    if !pw_ok {
        return Err(refuse(Failure::WrongPassword, Some(user)));
    }
    let Some(sealed) = user.totp_sealed.clone() else {
        // TOTP is optional for this account and not enrolled.
        return Ok(user);
    };
    if let Some((lookup, ok)) = recovery {
        if !ok {
            return Err(refuse(Failure::WrongCode, Some(user)));
        }
        return match store.use_recovery_code(&user.id, &lookup) {
            Ok(true) => Ok(user),
            Ok(false) => Err(refuse(Failure::ReplayedCode, Some(user))),
            Err(_) => Err(refuse(Failure::Internal, Some(user))),
        };
    }
    let Some(code) = a.totp.map(str::trim).filter(|c| !c.is_empty()) else {
        return Err(refuse(Failure::CodeMissing, Some(user)));
    };
    let seed = match ring.open(&sealed, &totp_aad(&user.id)) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(user = %user.id, error = %e, "login: cannot open the TOTP seed");
            return Err(refuse(Failure::Internal, Some(user)));
        }
    };
    let Ok(totp) = totp_for(seed.to_vec(), &user.email) else {
        return Err(refuse(Failure::Internal, Some(user)));
    };
    let now = now_secs();
    let step_now = now / TOTP_STEP;
    let matched = [step_now.saturating_sub(1), step_now, step_now + 1]
        .into_iter()
        .find(|step| {
            bool::from(
                totp.generate(step * TOTP_STEP)
                    .as_bytes()
                    .ct_eq(code.as_bytes()),
            )
        });
    let Some(step) = matched else {
        return Err(refuse(Failure::WrongCode, Some(user)));
    };
    match store.claim_totp_step(&user.id, step as i64) {
        Ok(true) => Ok(user),
        Ok(false) => Err(refuse(Failure::ReplayedCode, Some(user))),
        Err(_) => Err(refuse(Failure::Internal, Some(user))),
    }
}

/// The current TOTP code for an otpauth URI (for tests and tooling).
pub fn code_for_uri(uri: &str, at_secs: u64) -> Option<String> {
    TOTP::from_url(uri).ok().map(|t| t.generate(at_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Store, Keyring, String) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.db")).unwrap();
        let ring = Keyring::new(&Keyring::generate(), &[]).unwrap();
        let org = s
            .insert_org("acme", &crate::policy::OrgPolicy::default())
            .unwrap();
        (dir, s, ring, org.id)
    }

    const PW: &str = "correct horse battery";

    #[test]
    fn totp_matches_the_rfc_6238_test_vectors() {
        // RFC 6238 appendix B, SHA-1 seed "12345678901234567890"; 6-digit truncation of the
        // published 8-digit values.
        let t = totp_for(b"12345678901234567890".to_vec(), "a@example.com").unwrap();
        for (at, want) in [
            (59, "287082"),
            (1111111109, "081804"),
            (1234567890, "005924"),
            (2000000000, "279037"),
        ] {
            assert_eq!(t.generate(at), want, "T={at}");
        }
    }

    #[test]
    fn password_policy_and_no_truncation() {
        assert!(check_password("short").is_err());
        assert!(check_password(&"a".repeat(73)).is_err());
        assert!(check_password(&"a".repeat(72)).is_ok());
        let e = check_password("hunter2-canary").map(|_| ()).err();
        assert!(e.is_none());
        let e = check_password("canary").unwrap_err().to_string();
        assert!(!e.contains("canary"));
    }

    #[test]
    fn totp_codes_are_single_use_and_recovery_codes_burn() {
        let (_d, s, ring, org) = setup();
        let dummy = dummy_hash();
        let created = create_user(
            &s,
            &ring,
            &NewUser {
                email: "Ada@Example.com".into(),
                org_id: Some(org),
                role: Some(Role::Admin),
                operator: false,
                totp: false,
            },
            PW,
        )
        .unwrap();
        let e = created.totp.expect("admins get TOTP");
        assert_eq!(e.recovery_codes.len(), RECOVERY_CODES);
        let attempt = |totp: Option<&str>, rc: Option<&str>| {
            login(
                &s,
                &ring,
                &dummy,
                &Attempt {
                    email: "ada@example.com",
                    password: PW,
                    totp,
                    recovery_code: rc,
                },
            )
            .map(|u| u.id)
            .map_err(|r| r.reason)
        };
        assert_eq!(attempt(None, None), Err(Failure::CodeMissing));
        assert_eq!(attempt(Some("000000x"), None), Err(Failure::WrongCode));
        let code = code_for_uri(&e.otpauth_uri, now_secs()).unwrap();
        assert!(attempt(Some(&code), None).is_ok());
        assert_eq!(attempt(Some(&code), None), Err(Failure::ReplayedCode));
        let rc = e.recovery_codes[3].to_uppercase();
        assert!(attempt(None, Some(&rc)).is_ok());
        assert_eq!(attempt(None, Some(&rc)), Err(Failure::WrongCode), "burnt");
        assert_eq!(s.recovery_codes_left(&created.user.user.id).unwrap(), 9);
        assert_eq!(
            attempt(None, Some("aaaa-bbbb-cccc-dddd-eeee")),
            Err(Failure::WrongCode)
        );
        // Nothing secret is stored in clear.
        drop(s);
        for f in ["s.db", "s.db-wal"] {
            let bytes = std::fs::read(_d.path().join(f)).unwrap_or_default();
            for secret in [PW.as_bytes(), e.recovery_codes[0].as_bytes()] {
                assert!(!bytes.windows(secret.len()).any(|w| w == secret), "{f}");
            }
        }
    }

    #[test]
    fn roles_guard_the_last_owner_and_require_totp() {
        let (_d, s, ring, org) = setup();
        let mk = |email: &str, role| {
            create_user(
                &s,
                &ring,
                &NewUser {
                    email: email.into(),
                    org_id: Some(org.clone()),
                    role: Some(role),
                    operator: false,
                    totp: false,
                },
                PW,
            )
            .unwrap()
            .user
            .user
            .id
        };
        let owner = mk("o@example.com", Role::Owner);
        let member = mk("m@example.com", Role::Member);
        assert!(set_role(&s, &member, Role::Admin).is_err(), "no TOTP yet");
        assert!(set_role(&s, &member, Role::Auditor).is_ok());
        assert!(set_role(&s, &owner, Role::Member).is_err());
        assert!(delete_user(&s, &owner).is_err());
        assert!(delete_user(&s, &member).is_ok());
        assert!(matches!(
            create_user(
                &s,
                &ring,
                &NewUser {
                    email: "O@example.com".into(),
                    org_id: Some(org.clone()),
                    role: Some(Role::Member),
                    operator: false,
                    totp: false
                },
                PW
            ),
            Err(Error::Store(store::Error::Duplicate { .. }))
        ));
    }
}
