//! The vocabulary of per-org and per-key policy: on/off settings, a key's setting that may
//! inherit its org's, people's roles, and changes to them ([`Patch`], [`LimitsPatch`], the MCP
//! allow-lists). Domain code, the admin plane and the store all speak it; how each value is
//! stored is `store`'s business, how it is shown and read from a caller is here (`as_str`,
//! `Display`, the parsers, whose errors never quote the value).

use serde::{Deserialize, Serialize};

use crate::limits::{Budget, Limits, Period};
use crate::mcp::AllowList;
use crate::residency::Region;

/// A value a caller gave that is refused; the message names the field, never quotes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A change to one value: keep what is there, set it, or clear it (no limit; for a key's MCP
/// list, back to its org's). In a request body (with `#[serde(default)]`) an absent member
/// keeps, `null` clears and a value sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Patch<T> {
    #[default]
    Keep,
    Set(T),
    Clear,
}

impl<T> Patch<T> {
    /// Replace whatever is there: `Some` sets, `None` clears.
    pub fn replace(v: Option<T>) -> Patch<T> {
        v.map_or(Patch::Clear, Patch::Set)
    }

    /// Set when `Some`, else keep.
    pub fn set_if(v: Option<T>) -> Patch<T> {
        v.map_or(Patch::Keep, Patch::Set)
    }

    /// Whether it changes anything.
    pub fn is_keep(&self) -> bool {
        matches!(self, Patch::Keep)
    }

    /// The value it sets (`None` when it keeps or clears).
    pub fn value(&self) -> Option<&T> {
        match self {
            Patch::Set(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_ref(&self) -> Patch<&T> {
        match self {
            Patch::Keep => Patch::Keep,
            Patch::Set(v) => Patch::Set(v),
            Patch::Clear => Patch::Clear,
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Patch<U> {
        match self {
            Patch::Keep => Patch::Keep,
            Patch::Set(v) => Patch::Set(f(v)),
            Patch::Clear => Patch::Clear,
        }
    }

    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Patch<U>, E> {
        Ok(match self {
            Patch::Keep => Patch::Keep,
            Patch::Set(v) => Patch::Set(f(v)?),
            Patch::Clear => Patch::Clear,
        })
    }

    /// The value after the change, given the current one.
    pub fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Patch::Keep => current,
            Patch::Set(v) => Some(v),
            Patch::Clear => None,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Patch<T>, D::Error> {
        Option::<T>::deserialize(d).map(Patch::replace)
    }
}

/// Changes to rate limits and a token budget (every limit at least 1; none at all is written
/// by clearing it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitsPatch {
    pub rpm: Patch<u32>,
    pub tpm: Patch<u32>,
    pub budget: Patch<Budget>,
}

impl LimitsPatch {
    /// Set every limit `l` has (for a new org or key).
    pub fn set(l: Limits) -> LimitsPatch {
        LimitsPatch {
            rpm: Patch::set_if(l.rpm),
            tpm: Patch::set_if(l.tpm),
            budget: Patch::set_if(l.budget),
        }
    }

    /// Limits as a caller gave them. A budget period without tokens is refused; tokens
    /// without a period are per month.
    pub fn parse(
        rpm: Patch<u64>,
        tpm: Patch<u64>,
        budget_tokens: Patch<u64>,
        budget_period: Option<&str>,
    ) -> Result<LimitsPatch, Invalid> {
        let small = |what: &str, v: Patch<u64>| {
            v.try_map(|n| {
                u32::try_from(n).map_err(|_| Invalid(format!("{what} is at most {}", u32::MAX)))
            })
        };
        let period = match budget_period {
            None | Some("month") => Period::Month,
            Some("day") => Period::Day,
            Some(_) => {
                return Err(Invalid("the budget period is \"day\" or \"month\"".into()));
            }
        };
        if budget_period.is_some() && budget_tokens.value().is_none() {
            return Err(Invalid(
                "a budget period needs a number of budget tokens".into(),
            ));
        }
        let patch = LimitsPatch {
            rpm: small("rpm", rpm)?,
            tpm: small("tpm", tpm)?,
            budget: budget_tokens.map(|tokens| Budget { tokens, period }),
        };
        patch.check()?;
        Ok(patch)
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.rpm.is_keep() && self.tpm.is_keep() && self.budget.is_keep()
    }

    /// Limits are at least 1; a budget fits in 63 bits (SQLite's integer).
    pub fn check(&self) -> Result<(), Invalid> {
        if self.rpm == Patch::Set(0) {
            return Err(Invalid("rpm must be at least 1".into()));
        }
        if self.tpm == Patch::Set(0) {
            return Err(Invalid("tpm must be at least 1".into()));
        }
        if matches!(self.budget, Patch::Set(b) if b.tokens == 0 || b.tokens > i64::MAX as u64) {
            return Err(Invalid(
                "the token budget must be at least 1 (and fit in 63 bits)".into(),
            ));
        }
        Ok(())
    }

    /// What brings `have` to exactly `want`, naming the limits it changes in `fields`.
    pub fn between(have: &Limits, want: &Limits, fields: &mut Vec<&'static str>) -> LimitsPatch {
        let mut c = LimitsPatch::default();
        if want.rpm != have.rpm {
            c.rpm = Patch::replace(want.rpm);
            fields.push("rpm");
        }
        if want.tpm != have.tpm {
            c.tpm = Patch::replace(want.tpm);
            fields.push("tpm");
        }
        if want.budget != have.budget {
            c.budget = Patch::replace(want.budget);
            fields.push("budget");
        }
        c
    }

    /// The limits after the change.
    pub fn apply(&self, l: Limits) -> Limits {
        Limits {
            rpm: self.rpm.apply(l.rpm),
            tpm: self.tpm.apply(l.tpm),
            budget: self.budget.apply(l.budget),
        }
    }
}

/// The three MCP allow-lists (tools for `tools/call`, resources by URI for `resources/read`,
/// prompts for `prompts/get`): an org's ([`AllowList`]s; empty allows nothing), a key's
/// (`Option`: `None` inherits the org's), or changes to them ([`McpLists`], [`McpPatch`]).
/// Shown as `mcp_tools`, `mcp_resources` and `mcp_prompts`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mcp<L> {
    pub tools: L,
    pub resources: L,
    pub prompts: L,
}

impl<L: Serialize> Serialize for Mcp<L> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Mcp", 3)?;
        st.serialize_field("mcp_tools", &self.tools)?;
        st.serialize_field("mcp_resources", &self.resources)?;
        st.serialize_field("mcp_prompts", &self.prompts)?;
        st.end()
    }
}

/// MCP allow-lists as given (`None`: not given). For an org, not given keeps its list (a new
/// org's is empty: nothing allowed); for a new key, not given inherits the org's.
pub type McpLists = Mcp<Option<AllowList>>;

/// Changes to a key's MCP allow-lists: set a list, or clear it (inherit the org's again).
pub type McpPatch = Mcp<Patch<AllowList>>;

impl McpLists {
    pub fn is_empty(&self) -> bool {
        self.tools.is_none() && self.resources.is_none() && self.prompts.is_none()
    }

    /// Parse the lists given (`server:name,...`), each named as the caller names it.
    pub fn parse(
        [(t_name, tools), (r_name, resources), (p_name, prompts)]: [(&str, Option<&str>); 3],
    ) -> Result<McpLists, Invalid> {
        let parse = |what: &str, v: Option<&str>| v.map(|s| mcp_list(what, s)).transpose();
        Ok(McpLists {
            tools: parse(t_name, tools)?,
            resources: parse(r_name, resources)?,
            prompts: parse(p_name, prompts)?,
        })
    }
}

impl McpPatch {
    pub fn is_empty(&self) -> bool {
        self.tools.is_keep() && self.resources.is_keep() && self.prompts.is_keep()
    }

    /// Parse a key's list changes: `inherit` (back to the org's list) or a list.
    pub fn parse(
        [(t_name, tools), (r_name, resources), (p_name, prompts)]: [(&str, Option<&str>); 3],
    ) -> Result<McpPatch, Invalid> {
        Ok(McpPatch {
            tools: key_list(t_name, tools)?,
            resources: key_list(r_name, resources)?,
            prompts: key_list(p_name, prompts)?,
        })
    }
}

impl<L> Mcp<L> {
    /// The three lists with their names, in order.
    pub fn named(&self) -> [(&'static str, &L); 3] {
        [
            ("mcp_tools", &self.tools),
            ("mcp_resources", &self.resources),
            ("mcp_prompts", &self.prompts),
        ]
    }
}

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
    /// Its region pin.
    pub region: Option<Region>,
    pub pii: KeyPii,
    pub secrets: KeySetting,
    pub response_redaction: KeySetting,
    #[serde(flatten)]
    pub mcp: Mcp<Option<AllowList>>,
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
        let list = |l: &Option<AllowList>, have: &AllowList| l.as_ref().unwrap_or(have).clone();
        OrgPolicy {
            region: self.region.or(p.region),
            pii: self.pii.unwrap_or(p.pii),
            secrets: self.secrets.unwrap_or(p.secrets),
            response_redaction: self.response_redaction.unwrap_or(p.response_redaction),
            mcp: Mcp {
                tools: list(&self.mcp.tools, &p.mcp.tools),
                resources: list(&self.mcp.resources, &p.mcp.resources),
                prompts: list(&self.mcp.prompts, &p.mcp.prompts),
            },
            limits: self.limits.apply(p.limits),
        }
    }

    /// What brings `have` to `want`, and the names of the fields it changes (none: they
    /// match). A region `want` leaves unset is kept.
    pub fn between(have: &OrgPolicy, want: &OrgPolicy) -> (OrgPatch, Vec<&'static str>) {
        let mut c = OrgPatch::default();
        let mut fields = Vec::new();
        if want.region.is_some() && want.region != have.region {
            c.region = want.region;
            fields.push("region");
        }
        let mut setting = |name, w: Setting, h: Setting, slot: &mut Option<Setting>| {
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
        let slots = [&mut c.mcp.tools, &mut c.mcp.resources, &mut c.mcp.prompts];
        for (((name, w), (_, h)), slot) in want
            .mcp
            .named()
            .into_iter()
            .zip(have.mcp.named())
            .zip(slots)
        {
            if w != h {
                *slot = Some(w.clone());
                fields.push(name);
            }
        }
        c.limits = LimitsPatch::between(&have.limits, &want.limits, &mut fields);
        (c, fields)
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
        let list = |l: &Patch<AllowList>, have: &Option<AllowList>| l.clone().apply(have.clone());
        KeyPolicy {
            region: p.region,
            pii: self.pii.unwrap_or(p.pii),
            secrets: self.secrets.unwrap_or(p.secrets),
            response_redaction: self.response_redaction.unwrap_or(p.response_redaction),
            mcp: Mcp {
                tools: list(&self.mcp.tools, &p.mcp.tools),
                resources: list(&self.mcp.resources, &p.mcp.resources),
                prompts: list(&self.mcp.prompts, &p.mcp.prompts),
            },
            limits: self.limits.apply(p.limits),
        }
    }

    /// What brings `have` to `want` (its region aside), and the names of the fields it
    /// changes (none: they match).
    pub fn between(have: &KeyPolicy, want: &KeyPolicy) -> (KeyPatch, Vec<&'static str>) {
        let mut c = KeyPatch::default();
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
        let slots = [&mut c.mcp.tools, &mut c.mcp.resources, &mut c.mcp.prompts];
        for (((name, w), (_, h)), slot) in want
            .mcp
            .named()
            .into_iter()
            .zip(have.mcp.named())
            .zip(slots)
        {
            if w != h {
                *slot = Patch::replace(w.clone());
                fields.push(name);
            }
        }
        c.limits = LimitsPatch::between(&have.limits, &want.limits, &mut fields);
        (c, fields)
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

/// A key's MCP allow-list change: `inherit` clears it (back to the org's list), anything else
/// is a list; `None` keeps it.
fn key_list(what: &str, v: Option<&str>) -> Result<Patch<AllowList>, Invalid> {
    match v {
        None => Ok(Patch::Keep),
        Some(s) if KeySetting::parse(s) == Some(KeySetting::Inherit) => Ok(Patch::Clear),
        Some(s) => mcp_list(what, s).map(Patch::Set),
    }
}

/// Parse an MCP allow-list (`server:name,...`); errors never quote it.
pub fn mcp_list(what: &str, s: &str) -> Result<AllowList, Invalid> {
    AllowList::parse(s).map_err(|e| Invalid(format!("{what}: {e}")))
}

/// An org's on/off setting (PII redaction, secret detection, response redaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Setting {
    On,
    Off,
}

/// A key's setting: its own, or the org's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySetting {
    On,
    Off,
    Inherit,
}

/// An org's PII redaction setting.
pub type Pii = Setting;
/// A key's PII setting.
pub type KeyPii = KeySetting;

/// A user's role in their org (operators have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only: audit log and key metadata.
    Auditor,
    /// Their own account only.
    Member,
    /// Keys, users (not owners), org settings, audit log.
    Admin,
    /// Everything in the org, including owners and the hard delete.
    Owner,
}

impl Setting {
    /// As stored and shown: `on` or `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            Setting::On => "on",
            Setting::Off => "off",
        }
    }

    /// Parse `on` or `off`.
    pub fn parse(s: &str) -> Option<Setting> {
        match s {
            "on" => Some(Setting::On),
            "off" => Some(Setting::Off),
            _ => None,
        }
    }

    /// Whether it is on.
    pub fn is_on(self) -> bool {
        self == Setting::On
    }
}

impl KeySetting {
    /// As stored and shown: `on`, `off` or `inherit`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySetting::On => "on",
            KeySetting::Off => "off",
            KeySetting::Inherit => "inherit",
        }
    }

    /// Parse `on`, `off` or `inherit`.
    pub fn parse(s: &str) -> Option<KeySetting> {
        match s {
            "on" => Some(KeySetting::On),
            "off" => Some(KeySetting::Off),
            "inherit" => Some(KeySetting::Inherit),
            _ => None,
        }
    }

    /// The effective setting: the key's own, or `org`'s when it inherits.
    pub fn resolve(self, org: Setting) -> Setting {
        match self {
            KeySetting::On => Setting::On,
            KeySetting::Off => Setting::Off,
            KeySetting::Inherit => org,
        }
    }
}

impl Role {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Member => "member",
        }
    }

    /// Parse a stored role.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "owner" => Role::Owner,
            "admin" => Role::Admin,
            "auditor" => Role::Auditor,
            "member" => Role::Member,
            _ => return None,
        })
    }

    /// Whether the role must have TOTP enrolled.
    pub fn needs_totp(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

display_as_str!(Setting, KeySetting, Role);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_keeps_sets_or_clears() {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            n: Patch<u32>,
        }
        let read = |j: &str| serde_json::from_str::<Body>(j).unwrap().n;
        assert_eq!(read("{}"), Patch::Keep);
        assert_eq!(read(r#"{"n": null}"#), Patch::Clear);
        assert_eq!(read(r#"{"n": 3}"#), Patch::Set(3));
        assert!(serde_json::from_str::<Body>(r#"{"n": "3"}"#).is_err());
        assert_eq!(Patch::Keep.apply(Some(1)), Some(1));
        assert_eq!(Patch::Set(2).apply(Some(1)), Some(2));
        assert_eq!(Patch::<u32>::Clear.apply(Some(1)), None);
    }

    #[test]
    fn limits_are_read_checked_and_applied() {
        let budget = |tokens, period| Budget { tokens, period };
        let p = LimitsPatch::parse(Patch::Set(5), Patch::Clear, Patch::Set(100), None).unwrap();
        assert_eq!(p.rpm, Patch::Set(5));
        assert_eq!(p.budget, Patch::Set(budget(100, Period::Month)));
        let before = Limits {
            rpm: Some(1),
            tpm: Some(2),
            budget: None,
        };
        assert_eq!(
            p.apply(before),
            Limits {
                rpm: Some(5),
                tpm: None,
                budget: Some(budget(100, Period::Month)),
            }
        );
        assert_eq!(LimitsPatch::default().apply(before), before);
        let day = LimitsPatch::parse(Patch::Keep, Patch::Keep, Patch::Set(9), Some("day"));
        assert_eq!(day.unwrap().budget, Patch::Set(budget(9, Period::Day)));
        for (rpm, tokens, period) in [
            (Patch::Set(0), Patch::Keep, None),
            (Patch::Set(u64::from(u32::MAX) + 1), Patch::Keep, None),
            (Patch::Keep, Patch::Set(0), None),
            (Patch::Keep, Patch::Set(u64::MAX), None),
            (Patch::Keep, Patch::Keep, Some("day")),
            (Patch::Keep, Patch::Clear, Some("month")),
            (Patch::Keep, Patch::Set(1), Some("week")),
        ] {
            let e = LimitsPatch::parse(rpm, Patch::Keep, tokens, period).unwrap_err();
            assert!(!e.0.contains("week"), "{e}");
        }
    }

    #[test]
    fn a_keys_list_inherits_or_is_a_list_and_errors_never_quote_it() {
        let p = McpPatch::parse([
            ("mcp_tools", Some("inherit")),
            ("mcp_resources", Some("docs:*")),
            ("mcp_prompts", None),
        ])
        .unwrap();
        assert_eq!(p.tools, Patch::Clear);
        assert_eq!(p.resources, Patch::Set(AllowList::parse("docs:*").unwrap()));
        assert_eq!(p.prompts, Patch::Keep);
        let e = McpLists::parse([
            ("--mcp-tools", Some("sk-secret-looking value")),
            ("--mcp-resources", None),
            ("--mcp-prompts", None),
        ])
        .unwrap_err();
        assert!(e.0.starts_with("--mcp-tools: "), "{e}");
        assert!(!e.0.contains("sk-secret"), "{e}");
    }

    fn list(s: &str) -> AllowList {
        AllowList::parse(s).unwrap()
    }

    #[test]
    fn a_key_inherits_what_it_does_not_set_and_fails_closed_without_an_org() {
        let org = OrgPolicy {
            pii: Setting::Off,
            secrets: Setting::Off,
            response_redaction: Setting::On,
            mcp: Mcp {
                tools: list("github:*"),
                resources: list("docs:file:///a"),
                prompts: list("p:x"),
            },
            ..OrgPolicy::default()
        };
        let inheriting = KeyPolicy::default();
        let r = resolve(&inheriting, Some(&org));
        assert!(!r.redact_pii && !r.redact_secrets && r.redact_responses);
        assert_eq!(r.mcp.tools, org.mcp.tools);
        // Gone org: PII and secrets redacted, responses as off by default, nothing allowed.
        let r = resolve(&inheriting, None);
        assert!(r.redact_pii && r.redact_secrets && !r.redact_responses);
        assert_eq!(r.mcp, crate::mcp::Policy::default());
        // A key's own settings win, and its own empty list allows nothing (no fallback).
        let own = KeyPolicy {
            pii: KeySetting::On,
            secrets: KeySetting::On,
            response_redaction: KeySetting::Off,
            mcp: Mcp {
                tools: Some(AllowList::default()),
                ..Mcp::default()
            },
            ..KeyPolicy::default()
        };
        let r = resolve(&own, Some(&org));
        assert!(r.redact_pii && r.redact_secrets && !r.redact_responses);
        assert_eq!(r.mcp.tools, AllowList::default());
        assert_eq!(r.mcp.resources, org.mcp.resources);
    }

    #[test]
    fn between_then_apply_reaches_what_was_wanted() {
        let orgs = [
            OrgPolicy::default(),
            OrgPolicy {
                region: Some(Region::Eu),
                pii: Setting::Off,
                response_redaction: Setting::On,
                mcp: Mcp {
                    tools: list("a:b"),
                    ..Mcp::default()
                },
                limits: Limits {
                    rpm: Some(3),
                    tpm: Some(4),
                    budget: Some(Budget {
                        tokens: 5,
                        period: Period::Day,
                    }),
                },
                ..OrgPolicy::default()
            },
        ];
        for have in &orgs {
            for want in &orgs {
                let (patch, fields) = OrgPatch::between(have, want);
                let mut reached = patch.apply(have);
                if want.region.is_none() {
                    // A region the want leaves unset is kept.
                    assert_eq!(reached.region, have.region);
                    reached.region = None;
                }
                assert_eq!(&reached, want);
                assert_eq!(fields.is_empty(), patch.is_empty());
                assert_eq!(fields.is_empty(), have == want);
            }
        }
        let keys = [
            KeyPolicy::default(),
            KeyPolicy {
                pii: KeySetting::Off,
                mcp: Mcp {
                    prompts: Some(list("x:y")),
                    resources: Some(AllowList::default()),
                    ..Mcp::default()
                },
                limits: orgs[1].limits,
                ..KeyPolicy::default()
            },
        ];
        for have in &keys {
            for want in &keys {
                let (patch, fields) = KeyPatch::between(have, want);
                assert_eq!(&patch.apply(have), want);
                assert_eq!(fields.is_empty(), have == want);
            }
        }
    }

    #[test]
    fn policies_are_shown_flat_as_the_api_always_showed_them() {
        let v = serde_json::to_value(OrgPolicy::default()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "region": null, "pii": "on", "secrets": "on", "response_redaction": "off",
                "mcp_tools": "", "mcp_resources": "", "mcp_prompts": "",
                "rpm": null, "tpm": null, "budget_tokens": null, "budget_period": null,
            })
        );
        let k = KeyPolicy {
            mcp: Mcp {
                tools: Some(list("a:b,c:*")),
                ..Mcp::default()
            },
            limits: Limits {
                rpm: None,
                tpm: Some(7),
                budget: Some(Budget {
                    tokens: 10,
                    period: Period::Month,
                }),
            },
            ..KeyPolicy::default()
        };
        assert_eq!(
            serde_json::to_value(k).unwrap(),
            serde_json::json!({
                "region": null, "pii": "inherit", "secrets": "inherit",
                "response_redaction": "inherit", "mcp_tools": "a:b,c:*", "mcp_resources": null,
                "mcp_prompts": null, "rpm": null, "tpm": 7, "budget_tokens": 10,
                "budget_period": "month",
            })
        );
    }
}
