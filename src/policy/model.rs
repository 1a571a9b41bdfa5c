//! An org's and a key's policy ([`OrgPolicy`], [`KeyPolicy`]), the changes to them
//! ([`OrgPatch`], [`KeyPatch`]: apply one, or work one out between two policies), and
//! [`resolve`]: what a key may do given its org's.

use serde::Serialize;

use super::change::Diff;
use super::{KeyPii, KeySetting, LimitsPatch, Mcp, McpLists, McpPatch, Pii, Setting};
use crate::limits::Limits;
use crate::mcp::AllowList;
use crate::residency::Region;

/// An org's policy: what its keys inherit, and the limits of all its keys together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrgPolicy {
    /// The default region of its keys' requests.
    pub region: Option<Region>,
    pub pii: Pii,
    /// Secret detection.
    pub secrets: Setting,
    /// Redaction of responses.
    pub response_redaction: Setting,
    #[serde(flatten)]
    pub mcp: Mcp<AllowList>,
    #[serde(flatten)]
    pub limits: Limits,
}

impl OrgPolicy {
    /// A new org's: PII redaction as given (`[pii] default`), secret detection on, response
    /// redaction off, no region, nothing allowed on MCP, no limits.
    pub fn new(pii: Setting) -> OrgPolicy {
        OrgPolicy {
            region: None,
            pii,
            secrets: Setting::On,
            response_redaction: Setting::Off,
            mcp: Mcp::default(),
            limits: Limits::default(),
        }
    }
}

impl Default for OrgPolicy {
    fn default() -> OrgPolicy {
        OrgPolicy::new(Setting::On)
    }
}

/// A key's policy: its own settings, lists and limits, or (`inherit`, `None`) its org's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyPolicy {
    pub pii: KeyPii,
    pub secrets: KeySetting,
    pub response_redaction: KeySetting,
    #[serde(flatten)]
    pub mcp: Mcp<Option<AllowList>>,
    /// Its region pin.
    pub region: Option<Region>,
    /// The key's own limits (the org's apply too, to all its keys together).
    #[serde(flatten)]
    pub limits: Limits,
}

impl Default for KeyPolicy {
    /// Every setting and list inherited, no region pin, no limits of its own.
    fn default() -> KeyPolicy {
        KeyPolicy {
            region: None,
            pii: KeySetting::Inherit,
            secrets: KeySetting::Inherit,
            response_redaction: KeySetting::Inherit,
            mcp: Mcp::default(),
            limits: Limits::default(),
        }
    }
}

/// Changes to an org's policy (`None`: keep).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrgPatch {
    pub region: Option<Region>,
    pub pii: Option<Setting>,
    pub secrets: Option<Setting>,
    pub response_redaction: Option<Setting>,
    pub mcp: McpLists,
    pub limits: LimitsPatch,
}

impl OrgPatch {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == OrgPatch::default()
    }

    /// The policy after the change.
    pub fn apply(&self, p: &OrgPolicy) -> OrgPolicy {
        OrgPolicy {
            region: self.region.or(p.region),
            pii: self.pii.unwrap_or(p.pii),
            secrets: self.secrets.unwrap_or(p.secrets),
            response_redaction: self.response_redaction.unwrap_or(p.response_redaction),
            mcp: (self.mcp).zip(&p.mcp, |l, have| l.as_ref().unwrap_or(have).clone()),
            limits: self.limits.apply(p.limits),
        }
    }

    /// What brings `have` to `want`, and the names of the fields it changes (none: they
    /// match). A region `want` leaves unset is kept.
    pub fn between(have: &OrgPolicy, want: &OrgPolicy) -> (OrgPatch, Vec<&'static str>) {
        let mut d = Diff::default();
        let c = OrgPatch {
            region: match want.region {
                Some(_) => d.of("region", &have.region, &want.region).flatten(),
                None => None,
            },
            pii: d.of("pii", &have.pii, &want.pii),
            secrets: d.of("secrets", &have.secrets, &want.secrets),
            response_redaction: d.of(
                "response_redaction",
                &have.response_redaction,
                &want.response_redaction,
            ),
            mcp: Mcp {
                tools: d.of("mcp_tools", &have.mcp.tools, &want.mcp.tools),
                resources: d.of("mcp_resources", &have.mcp.resources, &want.mcp.resources),
                prompts: d.of("mcp_prompts", &have.mcp.prompts, &want.mcp.prompts),
            },
            limits: LimitsPatch::between(&have.limits, &want.limits, &mut d),
        };
        (c, d.0)
    }
}

/// Changes to a key's policy (`None`: keep). A key's region is set when it is made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyPatch {
    pub pii: Option<KeySetting>,
    pub secrets: Option<KeySetting>,
    pub response_redaction: Option<KeySetting>,
    pub mcp: McpPatch,
    pub limits: LimitsPatch,
}

impl KeyPatch {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == KeyPatch::default()
    }

    /// The policy after the change.
    pub fn apply(&self, p: &KeyPolicy) -> KeyPolicy {
        KeyPolicy {
            region: p.region,
            pii: self.pii.unwrap_or(p.pii),
            secrets: self.secrets.unwrap_or(p.secrets),
            response_redaction: self.response_redaction.unwrap_or(p.response_redaction),
            mcp: (self.mcp).zip(&p.mcp, |l, have| l.clone().apply(have.clone())),
            limits: self.limits.apply(p.limits),
        }
    }

    /// What brings `have` to `want` (its region aside), and the names of the fields it
    /// changes (none: they match).
    pub fn between(have: &KeyPolicy, want: &KeyPolicy) -> (KeyPatch, Vec<&'static str>) {
        let mut d = Diff::default();
        let c = KeyPatch {
            pii: d.of("pii", &have.pii, &want.pii),
            secrets: d.of("secrets", &have.secrets, &want.secrets),
            response_redaction: d.of(
                "response_redaction",
                &have.response_redaction,
                &want.response_redaction,
            ),
            mcp: Mcp {
                tools: d.patch("mcp_tools", &have.mcp.tools, &want.mcp.tools),
                resources: d.patch("mcp_resources", &have.mcp.resources, &want.mcp.resources),
                prompts: d.patch("mcp_prompts", &have.mcp.prompts, &want.mcp.prompts),
            },
            limits: LimitsPatch::between(&have.limits, &want.limits, &mut d),
        };
        (c, d.0)
    }
}

/// A key's policy in effect: its own settings, or its org's where it inherits.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Whether PII is redacted from its requests.
    pub redact_pii: bool,
    /// Whether secrets are redacted from its traffic.
    pub redact_secrets: bool,
    /// Whether what comes back to it (responses, streams) is redacted too.
    pub redact_responses: bool,
    /// The MCP tools, resources and prompts it may use.
    pub mcp: crate::mcp::Policy,
}

/// What `key` may do, given its org's policy (`None`: the org is gone). Fails closed: PII and
/// secrets are redacted unless explicitly off (the key's, or its org's for `inherit`);
/// responses are redacted when set on (off by default); a list the key does not have is its
/// org's, none at all without an org.
pub fn resolve(key: &KeyPolicy, org: Option<&OrgPolicy>) -> Resolved {
    let on_unless_off = |k: KeySetting, org: Option<Setting>| match k {
        KeySetting::Off => false,
        KeySetting::Inherit => org != Some(Setting::Off),
        KeySetting::On => true,
    };
    let list = |own: &Option<AllowList>, org: Option<&AllowList>| {
        own.as_ref().or(org).cloned().unwrap_or_default()
    };
    Resolved {
        redact_pii: on_unless_off(key.pii, org.map(|o| o.pii)),
        redact_secrets: on_unless_off(key.secrets, org.map(|o| o.secrets)),
        redact_responses: match key.response_redaction {
            KeySetting::On => true,
            KeySetting::Inherit => org.is_some_and(|o| o.response_redaction.is_on()),
            KeySetting::Off => false,
        },
        mcp: crate::mcp::Policy {
            tools: list(&key.mcp.tools, org.map(|o| &o.mcp.tools)),
            resources: list(&key.mcp.resources, org.map(|o| &o.mcp.resources)),
            prompts: list(&key.mcp.prompts, org.map(|o| &o.mcp.prompts)),
        },
    }
}
