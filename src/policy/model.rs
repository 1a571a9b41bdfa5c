//! An org's and a key's policy ([`OrgPolicy`], [`KeyPolicy`]), the changes to them
//! ([`OrgPatch`], [`KeyPatch`]: apply one, or work one out between two policies), and
//! [`resolve`]: what a key may do given its org's.

use serde::Serialize;

use super::change::Diff;
use super::{KeySetting, LimitsPatch, Mcp, McpLists, McpPatch, Setting, Switches};
use crate::limits::Limits;
use crate::mcp::AllowList;
use crate::residency::Region;

/// An org's policy: what its keys inherit, and the limits of all its keys together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrgPolicy {
    /// The default region of its keys' requests.
    pub region: Option<Region>,
    /// PII redaction, secret detection, response redaction.
    #[serde(flatten)]
    pub switches: Switches<Setting>,
    #[serde(flatten)]
    pub mcp: Mcp<AllowList>,
    #[serde(flatten)]
    pub limits: Limits,
}

impl OrgPolicy {
    /// A new org's: PII redaction as given (`[pii] default`), every other switch as
    /// [`SWITCHES`](super::SWITCHES) says, no region, nothing allowed on MCP, no limits.
    pub fn new(pii: Setting) -> OrgPolicy {
        OrgPolicy {
            region: None,
            switches: Switches {
                pii,
                ..Switches::from_table(|_, s| s.new_org)
            },
            mcp: Mcp::default(),
            limits: Limits::default(),
        }
    }
}

impl Default for OrgPolicy {
    /// A new org's, every switch as the table says.
    fn default() -> OrgPolicy {
        OrgPolicy::new(super::SWITCHES.pii.new_org)
    }
}

/// A key's policy: its own settings, lists and limits, or (`inherit`, `None`) its org's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyPolicy {
    #[serde(flatten)]
    pub switches: Switches<KeySetting>,
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
            switches: Switches::from_table(|_, _| KeySetting::Inherit),
            mcp: Mcp::default(),
            limits: Limits::default(),
        }
    }
}

/// Changes to an org's policy (`None`: keep).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrgPatch {
    pub region: Option<Region>,
    pub switches: Switches<Option<Setting>>,
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
            switches: (self.switches).zip(&p.switches, |c, have| c.unwrap_or(*have)),
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
            switches: (have.switches).zip_named(&want.switches, |n, h, w| d.of(n, h, w)),
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
    pub switches: Switches<Option<KeySetting>>,
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
            switches: (self.switches).zip(&p.switches, |c, have| c.unwrap_or(*have)),
            mcp: (self.mcp).zip(&p.mcp, |l, have| l.clone().apply(have.clone())),
            limits: self.limits.apply(p.limits),
        }
    }

    /// What brings `have` to `want` (its region aside), and the names of the fields it
    /// changes (none: they match).
    pub fn between(have: &KeyPolicy, want: &KeyPolicy) -> (KeyPatch, Vec<&'static str>) {
        let mut d = Diff::default();
        let c = KeyPatch {
            switches: (have.switches).zip_named(&want.switches, |n, h, w| d.of(n, h, w)),
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
    /// Which switches are on: whether PII is redacted from its requests, secrets from its
    /// traffic, and what comes back to it (responses, streams) too.
    pub on: Switches<bool>,
    /// The MCP tools, resources and prompts it may use.
    pub mcp: crate::mcp::Policy,
}

/// What `key` may do, given its org's policy (`None`: the org is gone). A switch is the key's
/// own, or its org's for `inherit`; without an org, what the switch's
/// [`without_org`](super::Switch::without_org) says (PII and secrets redacted: fails closed;
/// responses as off by default). A list the key does not have is its org's, none at all
/// without an org.
pub fn resolve(key: &KeyPolicy, org: Option<&OrgPolicy>) -> Resolved {
    let orgs = match org {
        Some(o) => o.switches.map(|s| Some(*s)),
        None => Switches::default(),
    };
    let list = |own: &Option<AllowList>, org: Option<&AllowList>| {
        own.as_ref().or(org).cloned().unwrap_or_default()
    };
    Resolved {
        on: Switches::from_table(|_, s| s.without_org)
            .zip(&orgs, |without, org| org.map_or(*without, Setting::is_on))
            .zip(&key.switches, |inherited, k| match k {
                KeySetting::On => true,
                KeySetting::Off => false,
                KeySetting::Inherit => *inherited,
            }),
        mcp: crate::mcp::Policy {
            tools: list(&key.mcp.tools, org.map(|o| &o.mcp.tools)),
            resources: list(&key.mcp.resources, org.map(|o| &o.mcp.resources)),
            prompts: list(&key.mcp.prompts, org.map(|o| &o.mcp.prompts)),
        },
    }
}
