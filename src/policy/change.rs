//! Changes to policy values: [`Patch`] (keep, set or clear), limits ([`LimitsPatch`]) and the
//! MCP allow-lists ([`Mcp`], [`McpLists`], [`McpPatch`]), each read once from what a caller
//! gave; errors ([`Invalid`]) name the field, never quote the value.

use serde::{Deserialize, Serialize};

use super::KeySetting;
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

    /// The value it sets (`None` when it keeps or clears).
    pub fn value(&self) -> Option<&T> {
        match self {
            Patch::Set(v) => Some(v),
            _ => None,
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

    /// What brings `have` to exactly `want`, naming the limits it changes.
    pub(super) fn between(have: &Limits, want: &Limits, d: &mut Diff) -> LimitsPatch {
        LimitsPatch {
            rpm: d.patch("rpm", &have.rpm, &want.rpm),
            tpm: d.patch("tpm", &have.tpm, &want.tpm),
            budget: d.patch("budget", &have.budget, &want.budget),
        }
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
    /// Parse the lists given (`server:name,...`), each named as the caller names it.
    pub fn parse(given: [(&str, Option<&str>); 3]) -> Result<McpLists, Invalid> {
        Mcp::read(given, |what, v| v.map(|s| mcp_list(what, s)).transpose())
    }
}

impl McpPatch {
    /// Parse a key's list changes: `inherit` (back to the org's list) or a list.
    pub fn parse(given: [(&str, Option<&str>); 3]) -> Result<McpPatch, Invalid> {
        Mcp::read(given, key_list)
    }
}

impl<L> Mcp<L> {
    /// Each list through `f`.
    pub fn map<U>(&self, mut f: impl FnMut(&L) -> U) -> Mcp<U> {
        Mcp {
            tools: f(&self.tools),
            resources: f(&self.resources),
            prompts: f(&self.prompts),
        }
    }

    /// Each list with its counterpart in `other`, through `f`.
    pub fn zip<M, U>(&self, other: &Mcp<M>, mut f: impl FnMut(&L, &M) -> U) -> Mcp<U> {
        Mcp {
            tools: f(&self.tools, &other.tools),
            resources: f(&self.resources, &other.resources),
            prompts: f(&self.prompts, &other.prompts),
        }
    }

    /// The tools, resources and prompts lists as given (each with the name it was given
    /// under), read in that order; the first refusal is the one returned.
    fn read<E>(
        [(t_name, tools), (r_name, resources), (p_name, prompts)]: [(&str, Option<&str>); 3],
        mut f: impl FnMut(&str, Option<&str>) -> Result<L, E>,
    ) -> Result<Mcp<L>, E> {
        Ok(Mcp {
            tools: f(t_name, tools)?,
            resources: f(r_name, resources)?,
            prompts: f(p_name, prompts)?,
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

/// What differs between a policy as it is and as it is wanted: the names of the fields, in
/// order, for a plan.
#[derive(Default)]
pub(super) struct Diff(pub(super) Vec<&'static str>);

impl Diff {
    /// `want` when it differs from `have` (and `name` noted), else `None`.
    pub(super) fn of<T: PartialEq + Clone>(
        &mut self,
        name: &'static str,
        have: &T,
        want: &T,
    ) -> Option<T> {
        (have != want).then(|| {
            self.0.push(name);
            want.clone()
        })
    }

    /// A patch to `want` (set it, or clear it) when it differs from `have`, else keep.
    pub(super) fn patch<T: PartialEq + Clone>(
        &mut self,
        name: &'static str,
        have: &Option<T>,
        want: &Option<T>,
    ) -> Patch<T> {
        self.of(name, have, want)
            .map_or(Patch::Keep, Patch::replace)
    }
}
