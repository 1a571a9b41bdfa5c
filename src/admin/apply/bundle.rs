//! The bundle file: its TOML shapes, strict reading, and what it wants of the store (orgs,
//! keys and users checked and resolved).

use serde::{Deserialize, Serialize};

use super::*;
use crate::policy::{Choice, Switches};

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

// The org's and key's shapes, with a field per switch: plain fields, so that the TOML reader
// refuses an unknown one and names the line of what it refuses.
macro_rules! bundle_shapes {
    ($($switch:ident),+) => {

/// An org of the bundle; a setting left out takes its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleOrg {
    pub name: String,
    pub region: Option<String>,
    $(pub $switch: Option<String>,)+
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
    $(pub $switch: Option<String>,)+
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

impl BundleOrg {
    /// Its switches as given.
    pub fn switches(&self) -> Switches<Option<&str>> {
        Switches { $($switch: self.$switch.as_deref(),)+ }
    }
}

impl BundleKey {
    /// Its switches as given.
    pub fn switches(&self) -> Switches<Option<&str>> {
        Switches { $($switch: self.$switch.as_deref(),)+ }
    }
}

    };
}

crate::with_switches!(bundle_shapes);

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
        let at = e.span().and_then(|s| crate::error::line_of(text, s.start));
        let what = crate::error::described(e.message())
            .unwrap_or_else(|| "not TOML (a syntax error)".into());
        Error::Invalid(match at {
            Some(line) => format!("the bundle is not valid (line {line}): {what}"),
            None => format!("the bundle is not valid: {what}"),
        })
    })
}

/// A setting or region the bundle names at `at` (`orgs[0]`) as `field`: `None` when left out.
pub(super) fn choice<T: Choice>(at: &str, field: &str, v: Option<&str>) -> Result<Option<T>> {
    v.map(|s| T::read(s).ok_or_else(|| Error::Invalid(format!("{at}: {}", T::refusal(field)))))
        .transpose()
}

pub(super) fn hash(what: &str, digits: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(digits, &mut out)
        .map_err(|_| Error::Invalid(format!("{what}: sha256 is 64 hexadecimal digits")))?;
    Ok(out)
}

/// What the store should hold for one org.
pub(super) struct WantOrg {
    pub(super) spec: OrgSpec,
    pub(super) keys: Vec<WantKey>,
    pub(super) users: Vec<WantUser>,
    /// Its place in the bundle (`orgs[0]`).
    pub(super) at: String,
}

pub(super) struct WantUser {
    pub(super) email: String,
    pub(super) role: crate::admin::users::Role,
    pub(super) hash: String,
    /// Its place in the bundle (`orgs[0].users[1]`): what errors name, never the email.
    pub(super) at: String,
}

/// A bcrypt hash as `$2a$`, `$2b$` or `$2y$`, a cost of 10 to 31, 53 more characters.
pub(super) fn bcrypt_hash(at: &str, h: &str) -> Result<String> {
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

pub(super) struct WantKey {
    pub(super) spec: KeySpec,
    pub(super) hash: [u8; 32],
    pub(super) prefix: String,
    /// Its place in the bundle (`orgs[0].keys[2]`): what errors name.
    pub(super) at: String,
}

pub(super) fn want(bundle: &Bundle, pii_default: Setting) -> Result<Vec<WantOrg>> {
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
        let limits = LimitsPatch::parse(
            Patch::replace(o.rpm),
            Patch::replace(o.tpm),
            Patch::replace(o.budget_tokens),
            o.budget_period.as_deref(),
        )
        .map_err(Error::from)
        .map_err(|e| Error::Invalid(format!("{at}: {e}")))?;
        // Every setting the bundle leaves out takes its default, except the region (kept).
        let spec = OrgSpec {
            name: o.name.clone(),
            settings: OrgPatch {
                region: choice(&at, "region", o.region.as_deref())?,
                switches: o
                    .switches()
                    .zip(
                        &crate::policy::OrgPolicy::new(pii_default).switches,
                        |v, d| (*v, *d),
                    )
                    .try_map_named(|n, (v, d)| {
                        Ok::<_, Error>(Some(choice(&at, n, *v)?.unwrap_or(*d)))
                    })?,
                mcp: lists(&o.mcp_tools, &o.mcp_resources, &o.mcp_prompts)
                    .map_err(|e| Error::Invalid(format!("{at}: {e}")))?,
                limits,
            },
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
            let l = LimitsPatch::parse(
                Patch::replace(k.rpm),
                Patch::replace(k.tpm),
                Patch::replace(k.budget_tokens),
                k.budget_period.as_deref(),
            )
            .map_err(Error::from)
            .map_err(|e| Error::Invalid(format!("{at}: {e}")))?;
            let list = |v: &Option<String>, what: &str| {
                v.as_deref()
                    .map(|s| mcp_list(what, s))
                    .transpose()
                    .map_err(|e| Error::Invalid(format!("{at}: {e}")))
            };
            let inherit = |s: Option<KeySetting>| s.unwrap_or(KeySetting::Inherit);
            keys.push(WantKey {
                spec: KeySpec {
                    org_id: String::new(),
                    name: k.name.clone(),
                    policy: KeyPolicy {
                        switches: k
                            .switches()
                            .try_map_named(|n, v| Ok::<_, Error>(inherit(choice(&at, n, *v)?)))?,
                        mcp: McpLists {
                            tools: list(&k.mcp_tools, "mcp_tools")?,
                            resources: list(&k.mcp_resources, "mcp_resources")?,
                            prompts: list(&k.mcp_prompts, "mcp_prompts")?,
                        },
                        region: choice(&at, "region", k.region.as_deref())?,
                        limits: l.apply(crate::limits::Limits::default()),
                    },
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
            let role = match crate::admin::users::Role::parse(&u.role) {
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
                email: crate::admin::users::check_email(&u.email)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_hash_is_exactly_64_hexadecimal_digits() {
        let lower = "00ff".repeat(16);
        assert_eq!(hash("k", &lower).unwrap()[..2], [0x00, 0xff]);
        assert_eq!(hash("k", &lower.to_uppercase()).unwrap()[..2], [0x00, 0xff]);
        for bad in [
            "0".repeat(63),
            "0".repeat(65),
            String::new(),
            format!("{}g", "0".repeat(63)),
            format!("{}é", "0".repeat(62)),
            format!(" {}", "0".repeat(63)),
        ] {
            let e = hash("orgs[0].keys[1]", &bad).unwrap_err().to_string();
            assert!(
                e.contains("orgs[0].keys[1]: sha256 is 64 hexadecimal digits"),
                "{e}"
            );
            assert!(bad.is_empty() || !e.contains(&bad), "{e}");
        }
    }
}
