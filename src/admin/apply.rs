//! One declarative source of orgs, keys and users for many sidecars: `sluice apply -f
//! fleet.toml` and `[fleet] bundle`. The store is converged to the file: orgs, keys and users it
//! lists are created or changed to match, keys it owned and no longer lists are revoked, users
//! deleted. Only rows the bundle owns
//! (`managed`) are ever revoked; an org or key made by hand and then listed is adopted. Keys are
//! given by SHA-256 hash and display prefix, never in plaintext. All of it is one transaction
//! with one audit record per change (`"via": "apply"`).

use serde::{Deserialize, Serialize};

use super::{
    audit, import_key, limits_change, mcp_list, update_key, update_org, Actor, Error, KeySetting,
    KeySpec, McpLists, OrgChange, OrgSpec, Result, Setting,
};
use crate::residency::Region;
use crate::store::{self, Managed, Store};
use crate::vault::Keyring;

/// A bundle file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    #[serde(default)]
    pub orgs: Vec<BundleOrg>,
    /// Say so to apply a bundle that lists no org, or that revokes more of the keys the
    /// bundle manages than `[fleet] max_removal_ratio` allows: otherwise such a bundle (an
    /// empty file, a truncated one) is refused and nothing changes.
    #[serde(default)]
    pub allow_mass_removal: bool,
}

/// An org of the bundle; a setting left out takes its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleOrg {
    pub name: String,
    pub region: Option<String>,
    pub pii: Option<String>,
    pub secrets: Option<String>,
    pub response_redaction: Option<String>,
    pub mcp_tools: Option<String>,
    pub mcp_resources: Option<String>,
    pub mcp_prompts: Option<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub budget_tokens: Option<u64>,
    pub budget_period: Option<String>,
    #[serde(default)]
    pub keys: Vec<BundleKey>,
    #[serde(default)]
    pub users: Vec<BundleUser>,
}

/// An admin API user of the bundle's org: an auditor or a member (owners and admins need a
/// TOTP seed, which a bundle cannot carry: they are made with `sluice users create`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleUser {
    pub email: String,
    pub role: String,
    /// The password's bcrypt hash (cost 10 or more), never the password.
    pub password_bcrypt: String,
}

/// A key of the bundle, by its hash (`sluice keys create --print-hash` makes one).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleKey {
    pub name: String,
    /// SHA-256 of the full key, 64 hex digits.
    pub sha256: String,
    /// The display prefix (`sk-sluice-` and 4 characters).
    pub prefix: String,
    pub pii: Option<String>,
    pub secrets: Option<String>,
    pub response_redaction: Option<String>,
    pub mcp_tools: Option<String>,
    pub mcp_resources: Option<String>,
    pub mcp_prompts: Option<String>,
    pub region: Option<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub budget_tokens: Option<u64>,
    pub budget_period: Option<String>,
    pub expires_at: Option<String>,
}

/// One change of the plan.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    /// `org.create`, `org.update`, `key.create`, `key.update`, `key.revoke`, `user.create`,
    /// `user.update`, `user.delete`.
    pub action: &'static str,
    pub org: String,
    /// The key's name (a user's email), for key (user) changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What changes (field names), or a note.
    pub detail: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{} {}/{}: {}", self.action, self.org, k, self.detail),
            None => write!(f, "{} {}: {}", self.action, self.org, self.detail),
        }
    }
}

/// Parse a bundle (TOML). Errors never quote a value.
pub fn parse(text: &str) -> Result<Bundle> {
    toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let what = describe(e.message());
        Error::Invalid(match at {
            Some(line) => format!("the bundle is not valid (line {line}): {what}"),
            None => format!("the bundle is not valid: {what}"),
        })
    })
}

/// What is wrong with a bundle, in words that quote nothing of it: the parser's messages quote
/// the value they refused (`invalid type: string "sk-proj-...", expected u64`), and a bundle can
/// hold a secret typed into the wrong field. Kept: what was expected, and the names of missing
/// fields (both the bundle format's own words).
fn describe(message: &str) -> String {
    // The expectation comes last, after the value: the last ", expected " is the parser's.
    let expected = |rest: &str| {
        rest.rfind(", expected ")
            .map(|i| format!(" (expected {})", &rest[i + ", expected ".len()..]))
            .unwrap_or_default()
    };
    let m = message.trim();
    if let Some(rest) = m.strip_prefix("invalid type: ") {
        format!("a value has the wrong type{}", expected(rest))
    } else if let Some(rest) = m.strip_prefix("invalid value: ") {
        format!("a value is not accepted{}", expected(rest))
    } else if let Some(rest) = m.strip_prefix("invalid length ") {
        format!("a list has the wrong length{}", expected(rest))
    } else if let Some(rest) = m.strip_prefix("unknown variant ") {
        format!("a value is not one of those accepted{}", expected(rest))
    } else if let Some(rest) = m.strip_prefix("unknown field ") {
        let known = rest
            .rfind(", expected ")
            .map(|i| format!(" (known fields: {})", &rest[i + ", expected ".len()..]))
            .unwrap_or_default();
        format!("an unknown field{known}")
    } else if let Some(field) = m
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
        .filter(|f| f.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    {
        format!("missing field `{field}`")
    } else if m.starts_with("duplicate key") {
        "a key is given twice".into()
    } else {
        "not TOML (a syntax error)".into()
    }
}

fn setting(what: &str, v: Option<&str>, default: Setting) -> Result<Setting> {
    v.map_or(Some(default), Setting::parse)
        .ok_or_else(|| Error::Invalid(format!("{what} is \"on\" or \"off\"")))
}

fn key_setting(what: &str, v: Option<&str>) -> Result<KeySetting> {
    v.map_or(Some(KeySetting::Inherit), KeySetting::parse)
        .ok_or_else(|| Error::Invalid(format!("{what} is \"on\", \"off\" or \"inherit\"")))
}

fn region(what: &str, v: Option<&str>) -> Result<Option<Region>> {
    v.map(|r| {
        r.parse::<Region>()
            .map_err(|_| Error::Invalid(format!("{what}: the region is us, eu or apac")))
    })
    .transpose()
}

fn hash(what: &str, hex: &str) -> Result<[u8; 32]> {
    let bad = || Error::Invalid(format!("{what}: sha256 is 64 hexadecimal digits"));
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// What the store should hold for one org.
struct WantOrg {
    spec: OrgSpec,
    keys: Vec<WantKey>,
    users: Vec<WantUser>,
    /// Its place in the bundle (`orgs[0]`).
    at: String,
}

struct WantUser {
    email: String,
    role: super::users::Role,
    hash: String,
    /// Its place in the bundle (`orgs[0].users[1]`): what errors name, never the email.
    at: String,
}

/// A bcrypt hash as `$2a$`, `$2b$` or `$2y$`, a cost of 10 to 31, 53 more characters.
fn bcrypt_hash(at: &str, h: &str) -> Result<String> {
    let cost = h.get(4..6).and_then(|c| c.parse::<u32>().ok());
    let ok = h.len() == 60
        && ["$2a$", "$2b$", "$2y$"].iter().any(|p| h.starts_with(p))
        && h.as_bytes().get(6) == Some(&b'$')
        && cost.is_some_and(|c| (10..=31).contains(&c))
        && h[7..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    if !ok {
        return Err(Error::Invalid(format!(
            "{at}: password_bcrypt is a bcrypt hash of cost 10 or more ($2b$12$...)"
        )));
    }
    Ok(h.to_string())
}

struct WantKey {
    spec: KeySpec,
    hash: [u8; 32],
    prefix: String,
    /// Its place in the bundle (`orgs[0].keys[2]`): what errors name.
    at: String,
}

fn want(bundle: &Bundle, pii_default: Setting) -> Result<Vec<WantOrg>> {
    let mut orgs = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut hashes = std::collections::HashSet::new();
    let mut emails = std::collections::HashSet::new();
    // Errors name an entry by its place in the bundle (`orgs[1].keys[0]`), never by a value
    // it holds (a name, an email).
    for (oi, o) in bundle.orgs.iter().enumerate() {
        let at = format!("orgs[{oi}]");
        if !names.insert(o.name.clone()) {
            return Err(Error::Invalid(format!(
                "{at}: the org's name is listed twice in the bundle"
            )));
        }
        let lists =
            |t: &Option<String>, r: &Option<String>, p: &Option<String>| -> Result<McpLists> {
                Ok(McpLists {
                    tools: Some(mcp_list("mcp_tools", t.as_deref().unwrap_or(""))?),
                    resources: Some(mcp_list("mcp_resources", r.as_deref().unwrap_or(""))?),
                    prompts: Some(mcp_list("mcp_prompts", p.as_deref().unwrap_or(""))?),
                })
            };
        let limits = limits_change(
            Some(o.rpm),
            Some(o.tpm),
            Some(o.budget_tokens),
            o.budget_period.as_deref(),
        )
        .map_err(|e| Error::Invalid(format!("{at}: {e}")))?;
        let spec = OrgSpec {
            name: o.name.clone(),
            region: region(&at, o.region.as_deref())?,
            pii: Some(setting("pii", o.pii.as_deref(), pii_default)?),
            secrets: Some(setting("secrets", o.secrets.as_deref(), Setting::On)?),
            response_redaction: Some(setting(
                "response_redaction",
                o.response_redaction.as_deref(),
                Setting::Off,
            )?),
            mcp: lists(&o.mcp_tools, &o.mcp_resources, &o.mcp_prompts)
                .map_err(|e| Error::Invalid(format!("{at}: {e}")))?,
            limits,
        };
        let mut keys = Vec::new();
        for (ki, k) in o.keys.iter().enumerate() {
            let at = format!("orgs[{oi}].keys[{ki}]");
            let h = hash(&at, &k.sha256)?;
            if !hashes.insert(h) {
                return Err(Error::Invalid(format!(
                    "{at}: the same key is listed twice"
                )));
            }
            if !k.prefix.starts_with(crate::auth::KEY_PREFIX) || k.prefix.len() > 32 {
                return Err(Error::Invalid(format!(
                    "{at}: prefix is the key's first characters ({}...)",
                    crate::auth::KEY_PREFIX
                )));
            }
            let l = limits_change(
                Some(k.rpm),
                Some(k.tpm),
                Some(k.budget_tokens),
                k.budget_period.as_deref(),
            )
            .map_err(|e| Error::Invalid(format!("{at}: {e}")))?;
            let list = |v: &Option<String>, what: &str| {
                v.as_deref().map(|s| mcp_list(what, s)).transpose()
            };
            keys.push(WantKey {
                spec: KeySpec {
                    org_id: String::new(),
                    name: k.name.clone(),
                    pii: key_setting("pii", k.pii.as_deref())?,
                    secrets: key_setting("secrets", k.secrets.as_deref())?,
                    response_redaction: key_setting(
                        "response_redaction",
                        k.response_redaction.as_deref(),
                    )?,
                    mcp: McpLists {
                        tools: list(&k.mcp_tools, "mcp_tools")?,
                        resources: list(&k.mcp_resources, "mcp_resources")?,
                        prompts: list(&k.mcp_prompts, "mcp_prompts")?,
                    },
                    region: region(&at, k.region.as_deref())?,
                    rpm: l.rpm.flatten(),
                    tpm: l.tpm.flatten(),
                    budget: l.budget.flatten(),
                    expires: k.expires_at.clone(),
                },
                hash: h,
                prefix: k.prefix.clone(),
                at: at.clone(),
            });
        }
        let mut users = Vec::new();
        for (ui, u) in o.users.iter().enumerate() {
            let at = format!("orgs[{oi}].users[{ui}]");
            let role = match super::users::Role::parse(&u.role) {
                Some(r) if !r.needs_totp() => r,
                Some(_) => {
                    return Err(Error::Invalid(format!(
                        "{at}: owners and admins need TOTP, which a bundle cannot enrol; create them with `sluice users create`"
                    )))
                }
                None => {
                    return Err(Error::Invalid(format!(
                        "{at}: role is \"auditor\" or \"member\""
                    )))
                }
            };
            if !emails.insert(u.email.trim().to_ascii_lowercase()) {
                return Err(Error::Invalid(format!("{at}: listed twice")));
            }
            users.push(WantUser {
                email: super::users::check_email(&u.email)
                    .map_err(|e| Error::Invalid(format!("{at}: {e}")))?,
                role,
                hash: bcrypt_hash(&at, &u.password_bcrypt)?,
                at: at.clone(),
            });
        }
        orgs.push(WantOrg {
            spec,
            keys,
            users,
            at: at.clone(),
        });
    }
    Ok(orgs)
}

/// The changes that bring org `have` to `want` (none when it matches).
fn org_change(have: &store::Org, want: &OrgSpec) -> (OrgChange, Vec<&'static str>) {
    let mut c = OrgChange::default();
    let mut fields = Vec::new();
    if want.region.is_some() && want.region != have.region {
        c.region = want.region;
        fields.push("region");
    }
    let mut on_off = |name, w: Option<Setting>, h: Setting, slot: &mut Option<Setting>| {
        if let Some(w) = w.filter(|w| *w != h) {
            *slot = Some(w);
            fields.push(name);
        }
    };
    on_off("pii", want.pii, have.pii, &mut c.pii);
    on_off("secrets", want.secrets, have.secrets, &mut c.secrets);
    on_off(
        "response_redaction",
        want.response_redaction,
        have.response_redaction,
        &mut c.response_redaction,
    );
    let mut list = |name, w: &Option<crate::mcp::AllowList>, h: &str, slot: &mut Option<_>| {
        if let Some(w) = w.as_ref().filter(|w| w.to_string() != h) {
            *slot = Some(w.clone());
            fields.push(name);
        }
    };
    list(
        "mcp_tools",
        &want.mcp.tools,
        &have.mcp_tools,
        &mut c.mcp.tools,
    );
    list(
        "mcp_resources",
        &want.mcp.resources,
        &have.mcp_resources,
        &mut c.mcp.resources,
    );
    list(
        "mcp_prompts",
        &want.mcp.prompts,
        &have.mcp_prompts,
        &mut c.mcp.prompts,
    );
    let have_limits = crate::limits::Limits::of_org(have);
    c.limits = limit_diff(&have_limits, &want.limits, &mut fields);
    (c, fields)
}

fn limit_diff(
    have: &crate::limits::Limits,
    want: &super::LimitsChange,
    fields: &mut Vec<&'static str>,
) -> super::LimitsChange {
    let mut c = super::LimitsChange::default();
    let w_rpm = want.rpm.flatten();
    if w_rpm != have.rpm {
        c.rpm = Some(w_rpm);
        fields.push("rpm");
    }
    let w_tpm = want.tpm.flatten();
    if w_tpm != have.tpm {
        c.tpm = Some(w_tpm);
        fields.push("tpm");
    }
    let w_budget = want.budget.flatten();
    if w_budget != have.budget {
        c.budget = Some(w_budget);
        fields.push("budget");
    }
    c
}

fn key_change(have: &store::Key, want: &KeySpec) -> (super::KeyChange, Vec<&'static str>) {
    let mut c = super::KeyChange::default();
    let mut fields = Vec::new();
    let mut setting = |name, w: KeySetting, h: KeySetting, slot: &mut Option<KeySetting>| {
        if w != h {
            *slot = Some(w);
            fields.push(name);
        }
    };
    setting("pii", want.pii, have.pii, &mut c.pii);
    setting("secrets", want.secrets, have.secrets, &mut c.secrets);
    setting(
        "response_redaction",
        want.response_redaction,
        have.response_redaction,
        &mut c.response_redaction,
    );
    let mut list = |name,
                    w: &Option<crate::mcp::AllowList>,
                    h: &Option<String>,
                    slot: &mut Option<Option<crate::mcp::AllowList>>| {
        if w.as_ref().map(|l| l.to_string()) != *h {
            *slot = Some(w.clone());
            fields.push(name);
        }
    };
    list(
        "mcp_tools",
        &want.mcp.tools,
        &have.mcp_tools,
        &mut c.mcp_tools,
    );
    list(
        "mcp_resources",
        &want.mcp.resources,
        &have.mcp_resources,
        &mut c.mcp_resources,
    );
    list(
        "mcp_prompts",
        &want.mcp.prompts,
        &have.mcp_prompts,
        &mut c.mcp_prompts,
    );
    let want_limits = super::LimitsChange {
        rpm: Some(want.rpm),
        tpm: Some(want.tpm),
        budget: Some(want.budget),
    };
    c.limits = limit_diff(
        &crate::limits::Limits::of_key(have),
        &want_limits,
        &mut fields,
    );
    (c, fields)
}

/// What [`apply`] would change; nothing is written.
pub fn plan(store: &Store, bundle: &Bundle, opts: Options) -> Result<Vec<Change>> {
    converge(store, None, &Actor::default(), bundle, opts)
}

/// What applying a bundle takes from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The PII setting of orgs created without one (`[pii] default`).
    pub pii_default: Setting,
    /// `[fleet] max_removal_ratio`.
    pub max_removal_ratio: f64,
}

/// Refuse what would remove too much at once, unless the bundle says it means it: a bundle
/// that lists no org (an empty or truncated file), or one that revokes more than
/// `max_removal_ratio` of the keys the bundle manages (active ones).
fn check_removals(store: &Store, bundle: &Bundle, wanted: &[WantOrg], ratio: f64) -> Result<()> {
    if bundle.allow_mass_removal {
        return Ok(());
    }
    let hint = "nothing was changed; if this is meant, set allow_mass_removal = true in the bundle";
    if bundle.orgs.is_empty() {
        return Err(Error::Invalid(format!(
            "the bundle lists no org (an empty file?): applied, it would remove every org, key and user it manages; {hint}"
        )));
    }
    let listed: std::collections::HashSet<&[u8]> = wanted
        .iter()
        .flat_map(|w| w.keys.iter().map(|k| k.hash.as_slice()))
        .collect();
    let managed = store.managed(Managed::Key)?;
    let now = time::OffsetDateTime::now_utc();
    let keys = store.keys(None)?;
    // Active: not revoked, not expired (an expired key's removal takes nothing away).
    let active: Vec<_> = keys
        .iter()
        .filter(|k| managed.contains(&k.id) && k.revoked_at.is_none())
        .filter(|k| k.expires_at.is_none_or(|e| e.0 > now))
        .collect();
    let removed = active
        .iter()
        .filter(|k| !listed.contains(k.hash.as_slice()))
        .count();
    // What the bundle adds in their place counts against it: rotating a key (a new hash for
    // an old one) removes nothing on balance.
    let known: std::collections::HashSet<&[u8]> = keys.iter().map(|k| k.hash.as_slice()).collect();
    let added = listed.iter().filter(|h| !known.contains(*h)).count();
    let net = removed.saturating_sub(added);
    if !active.is_empty() && net as f64 > ratio * active.len() as f64 {
        return Err(Error::Invalid(format!(
            "the bundle would revoke {removed} of the {} keys it manages (adding {added}), more than fleet.max_removal_ratio ({ratio}) allows; {hint}",
            active.len()
        )));
    }
    Ok(())
}

/// Converge the store to `bundle` as `actor`, in one transaction with one audit record per
/// change; returns the changes made.
pub fn apply(
    store: &Store,
    ring: &Keyring,
    actor: &Actor,
    bundle: &Bundle,
    opts: Options,
) -> Result<Vec<Change>> {
    converge(store, Some(ring), actor, bundle, opts)
}

fn converge(
    store: &Store,
    ring: Option<&Keyring>,
    actor: &Actor,
    bundle: &Bundle,
    opts: Options,
) -> Result<Vec<Change>> {
    let wanted = want(bundle, opts.pii_default)?;
    check_removals(store, bundle, &wanted, opts.max_removal_ratio)?;
    let run = |s: &Store, write: bool| -> Result<(Vec<Change>, Vec<audit::Record>)> {
        let mut changes = Vec::new();
        let mut records = Vec::new();
        let orgs = s.orgs()?;
        let keys = s.keys(None)?;
        let managed_keys = s.managed(Managed::Key)?;
        let managed_users = s.managed(Managed::User)?;
        let managed_orgs = s.managed(Managed::Org)?;
        let mut listed = std::collections::HashSet::new();
        let mut listed_users = std::collections::HashSet::new();
        let mut note = |c: Change, mut r: audit::Record, details: serde_json::Value| {
            r.details = details;
            r.details["via"] = "apply".into();
            records.push(r);
            changes.push(c);
        };
        for w in &wanted {
            let org_id = match orgs.iter().find(|o| o.name == w.spec.name) {
                None => {
                    let id = if write {
                        let o = super::create_org(s, &w.spec, opts.pii_default)?;
                        s.set_managed(Managed::Org, &o.id)?;
                        o.id
                    } else {
                        String::new()
                    };
                    let mut r = actor.record("org.create", Some(&id));
                    r.target_id = Some(id.clone());
                    let details = if write {
                        super::org_details(&s.org(&id)?)
                    } else {
                        serde_json::json!({})
                    };
                    note(
                        Change {
                            action: "org.create",
                            org: w.spec.name.clone(),
                            key: None,
                            detail: "new".into(),
                        },
                        r,
                        details,
                    );
                    id
                }
                Some(have) => {
                    // An org made by hand is never taken over by a bundle (its settings, its
                    // keys): the apply fails whole. (`sluice bootstrap` applies a configured
                    // bundle that lists its org first, so the bundle makes it.)
                    if !managed_orgs.contains(&have.id) {
                        return Err(Error::Invalid(format!(
                            "{}: an org with this name exists in the store and was not made by a bundle; nothing was changed",
                            w.at
                        )));
                    }
                    let (change, fields) = org_change(have, &w.spec);
                    if !fields.is_empty() {
                        let details = if write {
                            super::org_details(&update_org(s, &have.id, &change)?)
                        } else {
                            serde_json::json!({})
                        };
                        let mut r = actor.record("org.update", Some(&have.id));
                        r.target_id = Some(have.id.clone());
                        note(
                            Change {
                                action: "org.update",
                                org: w.spec.name.clone(),
                                key: None,
                                detail: fields.join(", "),
                            },
                            r,
                            details,
                        );
                    }
                    have.id.clone()
                }
            };
            for k in &w.keys {
                let mut spec = k.spec.clone();
                spec.org_id = org_id.clone();
                let at = || Change {
                    action: "",
                    org: w.spec.name.clone(),
                    key: Some(k.spec.name.clone()),
                    detail: String::new(),
                };
                match keys.iter().find(|have| have.hash == k.hash) {
                    None => {
                        let id = super::imported_key_id(&k.hash);
                        listed.insert(id.clone());
                        let details = if write {
                            let row = import_key(s, &spec, &k.hash, &k.prefix)?;
                            s.set_managed(Managed::Key, &row.id)?;
                            super::key_details(&row)
                        } else {
                            super::check_key_spec(&spec)?;
                            serde_json::json!({})
                        };
                        let mut r = actor.record("key.create", Some(&org_id));
                        r.target_id = Some(id);
                        note(
                            Change {
                                action: "key.create",
                                detail: "new".into(),
                                ..at()
                            },
                            r,
                            details,
                        );
                    }
                    Some(have) => {
                        listed.insert(have.id.clone());
                        if have.org_id != org_id {
                            return Err(Error::Invalid(format!(
                                "{}: the key belongs to another org in the store",
                                k.at
                            )));
                        }
                        // Rows made by hand are never the bundle's: a collision fails the
                        // whole apply (kind and place named, not the value).
                        if !managed_keys.contains(&have.id) && !s.is_bundle_revoked(&have.id)? {
                            return Err(Error::Invalid(format!(
                                "{}: a key with this hash exists in the store and was not made by a bundle; nothing was changed",
                                k.at
                            )));
                        }
                        if have.revoked_at.is_some() {
                            // A key a bundle revoked comes back when listed again; one a
                            // person revoked stays revoked.
                            if !s.is_bundle_revoked(&have.id)? {
                                return Err(Error::Invalid(format!(
                                    "{}: the key was revoked by hand and cannot come back; make a new one",
                                    k.at
                                )));
                            }
                            if write {
                                s.restore_bundle_key(&have.id)?;
                            }
                            let mut r = actor.record("key.restore", Some(&org_id));
                            r.target_id = Some(have.id.clone());
                            note(
                                Change {
                                    action: "key.restore",
                                    detail: "listed again after the bundle revoked it".into(),
                                    ..at()
                                },
                                r,
                                serde_json::json!({"prefix": have.prefix}),
                            );
                        }
                        if write {
                            s.set_managed(Managed::Key, &have.id)?;
                        }
                        let (change, fields) = key_change(have, &spec);
                        if !fields.is_empty() {
                            let details = if write {
                                super::key_details(&update_key(s, &have.id, &change)?)
                            } else {
                                serde_json::json!({})
                            };
                            let mut r = actor.record("key.update", Some(&org_id));
                            r.target_id = Some(have.id.clone());
                            note(
                                Change {
                                    action: "key.update",
                                    detail: fields.join(", "),
                                    ..at()
                                },
                                r,
                                details,
                            );
                        }
                    }
                }
            }
            for u in &w.users {
                let at = || Change {
                    action: "",
                    org: w.spec.name.clone(),
                    key: Some(u.email.clone()),
                    detail: String::new(),
                };
                match s.user_by_email(&u.email)? {
                    None => {
                        let id = store::new_id();
                        if write {
                            let now = store::Timestamp::now();
                            s.insert_user(&store::User {
                                id: id.clone(),
                                email: u.email.clone(),
                                org_id: Some(org_id.clone()),
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
                        listed_users.insert(id.clone());
                        let mut r = actor.record("user.create", Some(&org_id));
                        r.target_id = Some(id);
                        note(
                            Change {
                                action: "user.create",
                                detail: "new".into(),
                                ..at()
                            },
                            r,
                            serde_json::json!({"email": u.email, "role": u.role.as_str(),
                                "operator": false, "totp": false}),
                        );
                    }
                    Some(have) => {
                        listed_users.insert(have.id.clone());
                        if have.operator || have.org_id.as_deref() != Some(org_id.as_str()) {
                            return Err(Error::Invalid(format!(
                                "{}: the user belongs to another org (or is an operator) in the store",
                                u.at
                            )));
                        }
                        // A user made by hand is never taken over (its role, its password).
                        if !managed_users.contains(&have.id) {
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
                                super::users::set_role(s, &have.id, u.role)?;
                            }
                            if fields.contains(&"password") {
                                // Every session of the user is revoked with it.
                                s.set_user_password(&have.id, &u.hash)?;
                            }
                        }
                        if !fields.is_empty() {
                            let mut r = actor.record("user.update", Some(&org_id));
                            r.target_id = Some(have.id.clone());
                            note(
                                Change {
                                    action: "user.update",
                                    detail: fields.join(", "),
                                    ..at()
                                },
                                r,
                                serde_json::json!({"role": u.role.as_str(),
                                    "password_changed": fields.contains(&"password")}),
                            );
                        }
                    }
                }
            }
        }
        // What the bundle owned and no longer lists.
        for u in s.users(None)? {
            if managed_users.contains(&u.id) && !listed_users.contains(&u.id) {
                if write {
                    super::users::delete_user(s, &u.id)?;
                }
                let org = orgs
                    .iter()
                    .find(|o| Some(&o.id) == u.org_id.as_ref())
                    .map_or_else(String::new, |o| o.name.clone());
                let mut r = actor.record("user.delete", u.org_id.as_deref());
                r.target_id = Some(u.id.clone());
                note(
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
        }
        for k in &keys {
            if managed_keys.contains(&k.id) && !listed.contains(&k.id) && k.revoked_at.is_none() {
                if write {
                    s.revoke_key_for_bundle(&k.id)?;
                }
                let org = orgs
                    .iter()
                    .find(|o| o.id == k.org_id)
                    .map_or_else(|| k.org_id.clone(), |o| o.name.clone());
                let mut r = actor.record("key.revoke", Some(&k.org_id));
                r.target_id = Some(k.id.clone());
                note(
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
        }
        Ok((changes, records))
    };
    let Some(ring) = ring else {
        return Ok(run(store, false)?.0);
    };
    let mut org_keys = audit::OrgKeys::new(ring);
    store.atomically(|s| {
        let (changes, records) = run(s, true)?;
        audit::append_in(s, &mut org_keys, &records)?;
        Ok(changes)
    })
}

/// Converge the store to the bundle at `path` now and whenever the file changes (polled every
/// `poll`), on a thread of its own, as actor `bundle`. A bundle that cannot be read or applied
/// changes nothing and is logged once per content; the store keeps what it has.
pub fn watch(
    path: std::path::PathBuf,
    poll: std::time::Duration,
    db: std::path::PathBuf,
    max_bytes: Option<u64>,
    ring: std::sync::Arc<Keyring>,
    opts: Options,
    metrics: (prometheus::IntCounterVec, prometheus::IntGauge),
) -> std::result::Result<(), store::Error> {
    let store = Store::open_limited(&db, max_bytes)?;
    let actor = Actor {
        id: "bundle".into(),
        ..Actor::default()
    };
    let mut last: Option<[u8; 32]> = None;
    let mut step = move || {
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) => {
                let digest = [0u8; 32];
                if last != Some(digest) {
                    tracing::warn!(bundle = %path.display(), error = %e.kind(), "cannot read [fleet] bundle; the store keeps what it has");
                    metrics.0.with_label_values(&["error"]).inc();
                    last = Some(digest);
                }
                return;
            }
        };
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&text).into();
        if last == Some(digest) {
            return;
        }
        last = Some(digest);
        let result = std::str::from_utf8(&text)
            .map_err(|_| Error::Invalid("the bundle is not UTF-8".into()))
            .and_then(parse)
            .and_then(|b| apply(&store, &ring, &actor, &b, opts));
        match result {
            Ok(changes) => {
                metrics.0.with_label_values(&["ok"]).inc();
                metrics
                    .1
                    .set(time::OffsetDateTime::now_utc().unix_timestamp());
                tracing::info!(bundle = %path.display(), changes = changes.len(), "store converged to [fleet] bundle");
            }
            Err(e) => {
                metrics.0.with_label_values(&["error"]).inc();
                tracing::warn!(bundle = %path.display(), error = %e, "[fleet] bundle not applied; the store keeps what it has");
                // A store error (busy, full) is retried at the next poll; a bad file when it
                // changes.
                if !matches!(e, Error::Invalid(_)) {
                    last = None;
                }
            }
        }
    };
    step();
    std::thread::Builder::new()
        .name("sluice-bundle".into())
        .spawn(move || {
            crate::supervise::run(crate::supervise::Task::Bundle, || {
                std::thread::sleep(poll);
                step();
                std::ops::ControlFlow::Continue(())
            })
        })
        .map_err(|e| store::Error::Io {
            path: std::path::PathBuf::from("sluice-bundle thread"),
            source: e,
        })?;
    Ok(())
}

#[cfg(test)]
mod quoting {
    use super::*;

    const SECRET: &str = "sk-proj-Zq3vN8xR2mT7pL5wK9yB4cD6fH1jG0sA";

    /// A value typed into the wrong field (a provider key as a number, say) is never quoted
    /// back; what was expected and the entry's place are.
    #[test]
    fn bundle_errors_name_the_place_and_never_the_value() {
        for text in [
            format!("[[orgs]]\nname = \"a\"\nrpm = \"{SECRET}\"\n"),
            format!("[[orgs]]\nname = \"a\"\n[[orgs.keys]]\nname = \"k\"\nsha256 = \"00\"\nprefix = \"sk-sluice-\"\ntpm = \"{SECRET}\"\n"),
            format!("[[orgs]]\nname = \"a\"\n{SECRET} = 1\n"),
            format!("[[orgs]]\nname = \"a\"\nregion = {{ x = \"{SECRET}\" }}\n"),
            format!("[[orgs]]\nname = \"{SECRET}\" = 1\n"),
            format!("[[orgs]]\nname = \"a\"\nrpm = \"x, expected {SECRET}\"\n"),
        ] {
            let Err(e) = parse(&text) else {
                panic!("accepted: {text}")
            };
            let e = e.to_string();
            assert!(!e.contains(SECRET) && !e.contains("sk-proj"), "{e}");
            assert!(e.contains("line"), "{e}");
        }
        let e = parse("[[orgs]]\nname = \"a\"\nrpm = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wrong type") && e.contains("expected"), "{e}");
        let e = parse("[[orgs]]\nrpm = 1\n").unwrap_err().to_string();
        assert!(e.contains("missing field `name`"), "{e}");
        // Validation names entries by their place, never by a name or an email.
        let b = parse(
            "[[orgs]]\nname = \"acme\"\n[[orgs.users]]\nemail = \"jane.doe@example.com\"\nrole = \"owner\"\npassword_bcrypt = \"x\"\n",
        )
        .unwrap();
        let Err(e) = want(&b, Setting::On) else {
            panic!("accepted")
        };
        let e = e.to_string();
        assert!(e.starts_with("orgs[0].users[0]:"), "{e}");
        assert!(!e.contains("jane") && !e.contains("acme"), "{e}");
    }
}
