//! The vocabulary of per-org and per-key policy: on/off settings, a key's setting that may
//! inherit its org's, people's roles, and changes to them ([`Patch`], [`LimitsPatch`], the MCP
//! allow-lists). Domain code, the admin plane and the store all speak it; how each value is
//! stored is `store`'s business, how it is shown and read from a caller is here (`as_str`,
//! `Display`, the parsers, whose errors never quote the value).

use serde::{Deserialize, Serialize};

use crate::limits::{Budget, Limits, Period};
use crate::mcp::AllowList;

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

    /// The limits after the change.
    pub fn apply(&self, l: Limits) -> Limits {
        Limits {
            rpm: self.rpm.apply(l.rpm),
            tpm: self.tpm.apply(l.tpm),
            budget: self.budget.apply(l.budget),
        }
    }
}

/// MCP allow-lists as given (`None`: not given). For an org, not given keeps its list (a new
/// org's is empty: nothing allowed); for a new key, not given inherits the org's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct McpLists {
    pub tools: Option<AllowList>,
    pub resources: Option<AllowList>,
    pub prompts: Option<AllowList>,
}

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

/// Changes to a key's MCP allow-lists: set a list, or clear it (inherit the org's again).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct McpPatch {
    pub tools: Patch<AllowList>,
    pub resources: Patch<AllowList>,
    pub prompts: Patch<AllowList>,
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
}
