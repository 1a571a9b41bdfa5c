//! Administrative operations on orgs, API keys and credentials: validation, then the store and
//! the vault. The CLI calls these (and the admin API will call the same functions), so the
//! rules are the same whatever the entry point. Nothing here prints; errors never carry a
//! secret.

pub mod api;
pub mod apply;
pub mod connect;
pub mod ops;
pub mod session;
pub mod users;

pub use ops::*;

use serde::Serialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::audit;
use crate::auth;
use crate::auth::oauth;
use crate::residency::Region;
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
        role: crate::store::Role,
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

pub use crate::store::{KeyPii, KeySetting, Pii, Setting};

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
        let mut r = record;
        r.outcome = "failure";
        // The code only: a message can describe what was submitted (a secret typed into the
        // wrong field), and the audit log is append-only.
        r.details = serde_json::json!({ "error": e.code() });
        if let Err(ae) = audit::append(store, &mut keys, &[r]) {
            tracing::error!(error = %ae, "cannot record the failed admin action in the audit log");
        }
    }
    result
}

// ---- orgs ----

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
    pub limits: LimitsChange,
}

/// Changes to an org: `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct OrgChange {
    pub region: Option<Region>,
    pub pii: Option<Setting>,
    pub secrets: Option<Setting>,
    pub response_redaction: Option<Setting>,
    pub mcp: McpLists,
    pub limits: LimitsChange,
}

impl OrgChange {
    fn is_empty(&self) -> bool {
        self.region.is_none()
            && self.pii.is_none()
            && self.secrets.is_none()
            && self.response_redaction.is_none()
            && self.mcp.is_empty()
            && self.limits.is_empty()
    }
}

/// Changes to rate limits and budgets: `None` keeps one, `Some(None)` removes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitsChange {
    pub rpm: Option<Option<u32>>,
    pub tpm: Option<Option<u32>>,
    pub budget: Option<Option<crate::limits::Budget>>,
}

impl LimitsChange {
    /// Set every limit of `l` (for a new org or key).
    pub fn set(l: crate::limits::Limits) -> LimitsChange {
        LimitsChange {
            rpm: l.rpm.map(Some),
            tpm: l.tpm.map(Some),
            budget: l.budget.map(Some),
        }
    }

    fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.budget.is_none()
    }

    /// Limits are at least 1 (none at all is written by removing the limit).
    fn check(&self) -> Result<()> {
        if self.rpm == Some(Some(0)) {
            return Err(Error::Invalid("rpm must be at least 1".into()));
        }
        if self.tpm == Some(Some(0)) {
            return Err(Error::Invalid("tpm must be at least 1".into()));
        }
        if matches!(self.budget, Some(Some(b)) if b.tokens == 0 || b.tokens > i64::MAX as u64) {
            return Err(Error::Invalid(
                "the token budget must be at least 1 (and fit in 63 bits)".into(),
            ));
        }
        Ok(())
    }

    fn store_budget(&self) -> store::LimitChange<(u64, &'static str)> {
        self.budget
            .map(|b| b.map(|b| (b.tokens, b.period.as_str())))
    }
}

/// Limits as given by a caller (`None`: not given, `Some(None)`: remove). A budget period
/// without tokens is refused; tokens without a period are per month.
pub fn limits_change(
    rpm: Option<Option<u64>>,
    tpm: Option<Option<u64>>,
    budget_tokens: Option<Option<u64>>,
    budget_period: Option<&str>,
) -> Result<LimitsChange> {
    let small = |what: &str, v: Option<Option<u64>>| -> Result<Option<Option<u32>>> {
        v.map(|o| {
            o.map(|n| {
                u32::try_from(n)
                    .map_err(|_| Error::Invalid(format!("{what} is at most {}", u32::MAX)))
            })
            .transpose()
        })
        .transpose()
    };
    let period = match budget_period {
        None | Some("month") => crate::limits::Period::Month,
        Some("day") => crate::limits::Period::Day,
        Some(_) => {
            return Err(Error::Invalid(
                "the budget period is \"day\" or \"month\"".into(),
            ))
        }
    };
    if budget_period.is_some() && !matches!(budget_tokens, Some(Some(_))) {
        return Err(Error::Invalid(
            "a budget period needs a number of budget tokens".into(),
        ));
    }
    let change = LimitsChange {
        rpm: small("rpm", rpm)?,
        tpm: small("tpm", tpm)?,
        budget: budget_tokens.map(|o| o.map(|tokens| crate::limits::Budget { tokens, period })),
    };
    change.check()?;
    Ok(change)
}

/// MCP allow-lists given on the command line or in a call (`None`: not given).
#[derive(Debug, Clone, Default)]
pub struct McpLists {
    pub tools: Option<crate::mcp::AllowList>,
    pub resources: Option<crate::mcp::AllowList>,
    pub prompts: Option<crate::mcp::AllowList>,
}

impl McpLists {
    fn is_empty(&self) -> bool {
        self.tools.is_none() && self.resources.is_none() && self.prompts.is_none()
    }
}

/// A key's MCP allow-list change: `inherit` (back to the org's list) or a list; `None` keeps it.
pub fn key_list_change(
    what: &str,
    v: Option<&str>,
) -> Result<Option<Option<crate::mcp::AllowList>>> {
    v.map(|s| match KeySetting::parse(s) {
        Some(KeySetting::Inherit) => Ok(None),
        _ => mcp_list(what, s).map(Some),
    })
    .transpose()
}

/// Parse an MCP allow-list argument (`server:name,...`); errors never quote it.
pub fn mcp_list(what: &str, s: &str) -> Result<crate::mcp::AllowList> {
    crate::mcp::AllowList::parse(s).map_err(|e| Error::Invalid(format!("{what}: {e}")))
}

/// The audit details of an org's settings (the same for every entry point).
fn org_details(o: &store::Org) -> serde_json::Value {
    serde_json::json!({
        "name": o.name, "region": o.region, "pii": o.pii, "secrets": o.secrets,
        "response_redaction": o.response_redaction, "mcp_tools": o.mcp_tools,
        "mcp_resources": o.mcp_resources, "mcp_prompts": o.mcp_prompts,
        "rpm": o.rpm, "tpm": o.tpm, "budget_tokens": o.budget_tokens,
        "budget_period": o.budget_period,
    })
}

/// Create an org (no audit record: see [`create_org_as`]).
pub fn create_org(store: &Store, spec: &OrgSpec, pii_default: Setting) -> Result<store::Org> {
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
            rpm: spec.limits.rpm,
            tpm: spec.limits.tpm,
            budget: spec.limits.store_budget(),
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
pub fn update_org(store: &Store, id: &str, change: &OrgChange) -> Result<store::Org> {
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
            rpm: change.limits.rpm,
            tpm: change.limits.tpm,
            budget: change.limits.store_budget(),
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

// ---- API keys ----

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

/// Changes to a key: `None` keeps the current value. For the MCP lists, `Some(None)` makes the
/// key inherit its org's again.
#[derive(Debug, Clone, Default)]
pub struct KeyChange {
    pub pii: Option<KeySetting>,
    pub secrets: Option<KeySetting>,
    pub response_redaction: Option<KeySetting>,
    pub mcp_tools: Option<Option<crate::mcp::AllowList>>,
    pub mcp_resources: Option<Option<crate::mcp::AllowList>>,
    pub mcp_prompts: Option<Option<crate::mcp::AllowList>>,
    pub limits: LimitsChange,
}

fn key_details(k: &store::Key) -> serde_json::Value {
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
pub fn update_key(store: &Store, id: &str, change: &KeyChange) -> Result<store::Key> {
    let nothing = change.pii.is_none()
        && change.secrets.is_none()
        && change.response_redaction.is_none()
        && change.mcp_tools.is_none()
        && change.mcp_resources.is_none()
        && change.mcp_prompts.is_none()
        && change.limits.is_empty();
    if nothing {
        return Err(Error::Invalid("nothing to change".into()));
    }
    change.limits.check()?;
    let list = |l: &Option<Option<crate::mcp::AllowList>>| {
        l.as_ref().map(|o| o.as_ref().map(|a| a.to_string()))
    };
    let (t, r, p) = (
        list(&change.mcp_tools),
        list(&change.mcp_resources),
        list(&change.mcp_prompts),
    );
    Ok(store.update_key(
        id,
        &store::KeyChanges {
            pii: change.pii,
            secrets: change.secrets,
            response_redaction: change.response_redaction,
            mcp_tools: t.as_ref().map(|o| o.as_deref()),
            mcp_resources: r.as_ref().map(|o| o.as_deref()),
            mcp_prompts: p.as_ref().map(|o| o.as_deref()),
            rpm: change.limits.rpm,
            tpm: change.limits.tpm,
            budget: change.limits.store_budget(),
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
pub fn create_key(store: &Store, spec: &KeySpec) -> Result<CreatedKey> {
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
fn key_row(
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
fn check_key_spec(spec: &KeySpec) -> Result<Option<store::Timestamp>> {
    check_name("key", &spec.name)?;
    LimitsChange {
        rpm: spec.rpm.map(Some),
        tpm: spec.tpm.map(Some),
        budget: spec.budget.map(Some),
    }
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
pub fn revoke_key(store: &Store, id: &str) -> Result<()> {
    Ok(store.revoke_key(id)?)
}

// ---- credentials ----

fn check_credential_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(Error::Invalid(
            "credential name must be 1 to 64 characters of [A-Za-z0-9._-]".into(),
        ));
    }
    Ok(())
}

/// Turn what was read from stdin into a secret: one trailing newline (`\n` or `\r\n`) is
/// stripped; empty, oversized, non-UTF-8 or control-character-bearing input is refused (a
/// secret goes into an HTTP header). Error messages never include the input.
pub fn secret_from_input(mut raw: Zeroizing<Vec<u8>>) -> Result<Zeroizing<String>> {
    if raw.ends_with(b"\n") {
        raw.pop();
        if raw.ends_with(b"\r") {
            raw.pop();
        }
    }
    if raw.is_empty() {
        return Err(Error::EmptySecret);
    }
    if raw.len() > MAX_SECRET_BYTES {
        return Err(Error::Invalid(format!(
            "the secret is longer than {MAX_SECRET_BYTES} bytes"
        )));
    }
    if raw.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(Error::Invalid(
            "the secret contains control characters or more than one line".into(),
        ));
    }
    let s = std::str::from_utf8(&raw)
        .map_err(|_| Error::Invalid("the secret is not valid UTF-8".into()))?;
    Ok(Zeroizing::new(s.to_string()))
}

/// A credential as listed: never the secret.
#[derive(Debug, Serialize)]
pub struct CredentialView {
    pub id: String,
    pub name: String,
    /// Fingerprint of the master key that sealed it.
    pub key_fingerprint: String,
    /// Whether that is the current master key (`null` when the current key is not known).
    pub current_key: Option<bool>,
    pub created_at: store::Timestamp,
    pub rotated_at: store::Timestamp,
    pub expires_at: Option<store::Timestamp>,
    /// Whole days since the secret was last set.
    pub age_days: i64,
    pub expired: bool,
    /// `static` (the stored secret is sent) or `oauth` (it obtains access tokens).
    pub kind: String,
    /// OAuth: token endpoint, client id, scope, resource and grant (no secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth: Option<crate::auth::oauth::Settings>,
    /// OAuth: when the current access token expires (`null`: none obtained yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<store::Timestamp>,
    /// OAuth: when the current access token was obtained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_obtained_at: Option<store::Timestamp>,
    /// OAuth: failed refreshes since the last good one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_failures: Option<i64>,
    /// OAuth: why the last refresh failed (`unreachable`, `http_401`, `invalid_response`,
    /// `needs_reconnect`: the server refused the refresh token, connect again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// OAuth, connected with the authorization code grant: issuer, client authentication,
    /// revocation endpoint, whether the client was registered dynamically.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected: Option<crate::auth::oauth::Connected>,
}

fn view(c: store::Credential, current_fp: Option<&str>) -> CredentialView {
    let now = OffsetDateTime::now_utc();
    CredentialView {
        age_days: (now - c.rotated_at.0).whole_days(),
        expired: c.expires_at.is_some_and(|t| t.0 <= now),
        current_key: current_fp.map(|fp| fp == c.key_fp),
        oauth: c
            .oauth
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok()),
        refresh_failures: (c.kind == "oauth").then_some(c.refresh_failures),
        token_expires_at: c.token_expires_at,
        token_obtained_at: c.token_obtained_at,
        last_error: c.last_error,
        connected: c
            .connect
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok()),
        kind: c.kind,
        key_fingerprint: c.key_fp,
        id: c.id,
        name: c.name,
        created_at: c.created_at,
        rotated_at: c.rotated_at,
        expires_at: c.expires_at,
    }
}

/// Store (or replace) a credential, sealed under the current master key and bound to its row.
pub fn set_credential(
    store: &Store,
    ring: &Keyring,
    name: &str,
    secret: &str,
    expires: Option<&str>,
) -> Result<CredentialView> {
    check_credential_name(name)?;
    let expires = expires.map(future_time).transpose()?;
    let id = store.credential_id(name)?.unwrap_or_else(store::new_id);
    let now = store::Timestamp::now();
    let row = store::Credential {
        sealed: ring.seal(secret.as_bytes(), &vault::aad("credentials", &id, name)),
        key_fp: ring.fingerprint(),
        id,
        name: name.to_string(),
        created_at: now,
        rotated_at: now,
        expires_at: expires,
        kind: "static".into(),
        ..Default::default()
    };
    store.put_credential(&row)?;
    stored_view(store, ring, name)
}

/// Check an OAuth credential's settings: a token URL that is https (or http to a loopback
/// address), a client id, and a scope and resource fit for a form field.
pub fn check_oauth(s: &oauth::Settings) -> Result<()> {
    let field = |field, reason: &str| Error::Field {
        field,
        reason: reason.into(),
    };
    oauth::check_url(&s.token_url).map_err(|why| field("token_url", why))?;
    if s.pins.len() > 16 || s.pins.iter().any(|p| crate::config::parse_pin(p).is_none()) {
        return Err(field(
            "pins",
            "at most 16, each sha256/ and the base64 of a certificate's SHA-256 digest (sluice tls pin --url ...)",
        ));
    }
    let printable =
        |v: &str| !v.is_empty() && v.len() <= 1024 && !v.bytes().any(|b| b < 0x20 || b == 0x7f);
    if !printable(&s.client_id) {
        return Err(field("client_id", "must be 1 to 1024 printable characters"));
    }
    if s.scope.as_deref().is_some_and(|v| !printable(v)) {
        return Err(field("scope", "must be 1 to 1024 printable characters"));
    }
    if let Some(r) = &s.resource {
        // RFC 8707: an absolute URI without a fragment.
        let ok = printable(r)
            && !r.contains('#')
            && r.parse::<http::Uri>()
                .is_ok_and(|u| u.scheme().is_some() && u.authority().is_some());
        if !ok {
            return Err(field(
                "resource",
                "must be an absolute URI without a fragment (RFC 8707), e.g. https://mcp.example.com/mcp",
            ));
        }
    }
    Ok(())
}

/// Store (or replace) an OAuth credential: its settings, and its client secret (or refresh
/// token) sealed like any secret. `first` is a token already obtained with it (stored in the
/// same statement, with the rotated refresh token in `secret` already); without one, the
/// running `serve` obtains it within a second.
pub fn set_oauth_credential(
    store: &Store,
    ring: &Keyring,
    name: &str,
    settings: &oauth::Settings,
    secret: &str,
    first: Option<&oauth::Token>,
) -> Result<CredentialView> {
    put_oauth_credential(store, ring, name, settings, secret, None, first)
}

/// A connected credential's client: how it was connected and its secret (if confidential).
pub type ConnectedClient<'a> = (&'a oauth::Connected, Option<&'a str>);

/// [`set_oauth_credential`], for a connected credential too (its client secret sealed apart).
pub fn put_oauth_credential(
    store: &Store,
    ring: &Keyring,
    name: &str,
    settings: &oauth::Settings,
    secret: &str,
    client: Option<ConnectedClient<'_>>,
    first: Option<&oauth::Token>,
) -> Result<CredentialView> {
    check_credential_name(name)?;
    check_oauth(settings)?;
    let id = store.credential_id(name)?.unwrap_or_else(store::new_id);
    let now = store::Timestamp::now();
    let row = store::Credential {
        sealed: ring.seal(secret.as_bytes(), &vault::aad("credentials", &id, name)),
        key_fp: ring.fingerprint(),
        name: name.to_string(),
        created_at: now,
        rotated_at: now,
        kind: "oauth".into(),
        oauth: Some(serde_json::to_string(settings).map_err(|e| Error::Invalid(e.to_string()))?),
        connect: client
            .map(|(c, _)| serde_json::to_string(c))
            .transpose()
            .map_err(|e| Error::Invalid(e.to_string()))?,
        client_sealed: client
            .and_then(|(_, s)| s)
            .map(|s| ring.seal(s.as_bytes(), &vault::aad(vault::CLIENT_TABLE, &id, name))),
        id: id.clone(),
        ..Default::default()
    };
    store.put_credential(&row)?;
    if let Some(token) = first {
        // The secret passed in is already the rotated one: only the token is stored here.
        let sealed = oauth::seal(ring, &id, name, oauth::Grant::ClientCredentials, token);
        store.set_oauth_token(&id, &sealed.token, &sealed.expires_at, None)?;
    }
    stored_view(store, ring, name)
}

/// The view of credential `name` as stored.
fn stored_view(store: &Store, ring: &Keyring, name: &str) -> Result<CredentialView> {
    let stored = store
        .credentials()?
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| {
            Error::Store(store::Error::NotFound {
                what: "credential",
                id: name.to_string(),
            })
        })?;
    Ok(view(stored, Some(&ring.fingerprint())))
}

/// Every credential's metadata.
pub fn list_credentials(store: &Store, current_fp: Option<&str>) -> Result<Vec<CredentialView>> {
    Ok(store
        .credentials()?
        .into_iter()
        .map(|c| view(c, current_fp))
        .collect())
}

/// Delete a credential; requests to upstreams that use it are refused from then on.
pub fn delete_credential(store: &Store, name: &str) -> Result<()> {
    Ok(store.delete_credential(name)?)
}

/// What `secrets rotate` did.
#[derive(Debug, Serialize)]
pub struct Rotation {
    /// Credentials re-sealed.
    pub rotated: usize,
    /// Org data keys (audit crypto-shredding) re-sealed.
    pub org_keys_rotated: usize,
    /// Users' TOTP seeds re-sealed.
    pub totp_rotated: usize,
    pub key_fingerprint: String,
}

/// Re-seal every credential, org data key and TOTP seed under the current master key. Run it inside
/// [`Store::atomically`] (as [`audited`] does): either all are re-sealed or none is (e.g. when
/// one was sealed by a key in neither `SLUICE_SECRETS_KEY` nor `SLUICE_SECRETS_KEY_OLD`).
pub fn rotate(store: &Store, ring: &Keyring) -> Result<Rotation> {
    let rotated = store
        .reseal_credentials(|c| {
            let aad = vault::aad("credentials", &c.id, &c.name);
            let plain = ring
                .open(&c.sealed, &aad)
                .map_err(|e| (c.name.clone(), e))?;
            // An OAuth credential's current access token moves to the new key too.
            let token_aad = vault::aad(vault::TOKEN_TABLE, &c.id, &c.name);
            let token_sealed = match &c.token_sealed {
                Some(t) => {
                    let plain = ring.open(t, &token_aad).map_err(|e| (c.name.clone(), e))?;
                    Some(ring.seal(&plain, &token_aad))
                }
                None => None,
            };
            // A connected credential's client secret too.
            let client_aad = vault::aad(vault::CLIENT_TABLE, &c.id, &c.name);
            let client_sealed = match &c.client_sealed {
                Some(t) => {
                    let plain = ring.open(t, &client_aad).map_err(|e| (c.name.clone(), e))?;
                    Some(ring.seal(&plain, &client_aad))
                }
                None => None,
            };
            Ok::<_, (String, vault::Error)>(store::Resealed {
                sealed: ring.seal(&plain, &aad),
                key_fp: ring.fingerprint(),
                token_sealed,
                client_sealed,
            })
        })
        .map_err(|e| match e {
            store::ResealError::Store(e) => Error::Store(e),
            store::ResealError::Seal((name, e)) => {
                Error::Invalid(format!("credential {name:?}: {e}; nothing was changed"))
            }
        })?;
    let mut org_keys_rotated = 0;
    for (org, sealed) in store.org_keys()? {
        let aad = vault::aad("org_keys", &org, "audit");
        let plain = ring.open(&sealed, &aad).map_err(|e| {
            Error::Invalid(format!(
                "the audit data key of org {org}: {e}; nothing was changed"
            ))
        })?;
        store.reseal_org_key(&org, &ring.seal(&plain, &aad), &ring.fingerprint())?;
        org_keys_rotated += 1;
    }
    let totp_rotated = users::reseal_totp(store, ring)?;
    // A connect under way holds values sealed under the old key: it is started again.
    store.cancel_oauth_flows(OffsetDateTime::now_utc().unix_timestamp())?;
    Ok(Rotation {
        rotated,
        org_keys_rotated,
        totp_rotated,
        key_fingerprint: ring.fingerprint(),
    })
}

// ---- GDPR hard delete ----

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

// ---- serve --dev ----

/// What `serve --dev` set up.
pub struct DevSetup {
    /// The default org and its first key, when the store had no org yet.
    pub created: Option<(store::Org, CreatedKey)>,
    /// Credentials (re)set from `OPENAI_API_KEY`.
    pub credentials_set: Vec<String>,
}

/// First-run setup for `serve --dev`: a `default` org with one key when the store has no org,
/// and `openai_key` stored under each of `credential_names` whose stored value differs.
pub fn dev_bootstrap(
    store: &Store,
    ring: &Keyring,
    credential_names: &[String],
    openai_key: Option<&str>,
    pii_default: Setting,
) -> Result<DevSetup> {
    let created = if store.orgs()?.is_empty() {
        let org = create_org(
            store,
            &OrgSpec {
                name: "default".into(),
                ..OrgSpec::default()
            },
            pii_default,
        )?;
        let key = create_key(store, &KeySpec::inheriting(&org.id, "dev"))?;
        Some((org, key))
    } else {
        None
    };
    let mut credentials_set = Vec::new();
    if let Some(secret) = openai_key {
        let secret = secret_from_input(Zeroizing::new(secret.as_bytes().to_vec()))?;
        let stored = store.credentials()?;
        for name in credential_names {
            let same = stored.iter().find(|c| &c.name == name).is_some_and(|c| {
                ring.open(&c.sealed, &vault::aad("credentials", &c.id, &c.name))
                    .is_ok_and(|p| p.as_slice() == secret.as_bytes())
            });
            if !same {
                set_credential(store, ring, name, &secret, None)?;
                credentials_set.push(name.clone());
            }
        }
    }
    Ok(DevSetup {
        created,
        credentials_set,
    })
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
            region: Some(Region::Eu),
            ..OrgSpec::default()
        };
        let org = create_org(&s, &acme, Setting::On).unwrap();
        assert_eq!(org.pii, Setting::On);
        assert_eq!(org.secrets, Setting::On);
        assert_eq!(org.response_redaction, Setting::Off);
        assert!(matches!(
            create_org(&s, &acme, Setting::On),
            Err(Error::Store(store::Error::Duplicate { .. }))
        ));
        let spec = KeySpec {
            rpm: Some(10),
            ..KeySpec::inheriting(&org.id, "app")
        };
        let k = create_key(&s, &spec).unwrap();
        assert!(auth::is_key_shaped(&k.key));
        for bad in [
            KeySpec {
                org_id: "nope".into(),
                ..spec.clone()
            },
            KeySpec {
                rpm: Some(0),
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
            assert!(create_key(&s, &bad).is_err(), "{bad:?}");
        }
        let keys = list_keys(&s, Some(&org.id)).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].status, "active");
        let listed = serde_json::to_string(&keys[0]).unwrap();
        assert!(!listed.contains(k.key.as_str()));
        assert!(!listed.contains("hash"));
        revoke_key(&s, &k.id).unwrap();
        assert_eq!(list_keys(&s, None).unwrap()[0].status, "revoked");
        assert!(revoke_key(&s, "nope").is_err());
        assert!(list_keys(&s, Some("nope")).is_err());
    }

    #[test]
    fn rotation_reseals_everything_or_nothing() {
        let (_d, s) = store();
        let old_b64 = Keyring::generate();
        let old = Keyring::new(&old_b64, &[]).unwrap();
        set_credential(&s, &old, "a", "sk-secret-a", None).unwrap();
        set_credential(&s, &old, "b", "sk-secret-b", None).unwrap();
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
        let v = set_oauth_credential(&s, &old, "c", &settings, "client-secret-c", Some(&token))
            .unwrap();
        assert_eq!(
            (v.kind.as_str(), v.oauth.as_ref()),
            ("oauth", Some(&settings))
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
                create_org(
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
        assert!(s.atomically(|s| rotate(s, &stranger)).is_err());
        assert_eq!(s.credentials().unwrap(), before);

        let new = Keyring::new(&Keyring::generate(), &[&old_b64]).unwrap();
        let r = s.atomically(|s| rotate(s, &new)).unwrap();
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
