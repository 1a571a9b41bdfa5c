//! The vocabulary of per-org and per-key policy: on/off settings, a key's setting that may
//! inherit its org's, people's roles, and changes to them ([`Patch`], [`LimitsPatch`], the MCP
//! allow-lists). Domain code, the admin plane and the store all speak it; how each value is
//! stored is `store`'s business, how it is shown and read from a caller is here (`as_str`,
//! `Display`, the parsers, whose errors never quote the value).

mod change;
mod model;
mod switch;

pub use change::*;
pub use model::*;
pub use switch::*;

use serde::{Deserialize, Serialize};

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

/// A policy value a caller names with a word from a fixed set: a setting, a key's setting, a
/// region. One reading and one refusal for every surface that takes one (the admin API's
/// bodies, the bundle).
pub trait Choice: Copy + Sized {
    /// The value `s` names, if any.
    fn read(s: &str) -> Option<Self>;
    /// Why a word that names none is refused: names the field, never quotes the word.
    fn refusal(field: &str) -> String;
}

impl Choice for Setting {
    fn read(s: &str) -> Option<Self> {
        Setting::parse(s)
    }
    fn refusal(field: &str) -> String {
        format!("{field} must be \"on\" or \"off\".")
    }
}

impl Choice for KeySetting {
    fn read(s: &str) -> Option<Self> {
        KeySetting::parse(s)
    }
    fn refusal(field: &str) -> String {
        format!("{field} must be \"on\", \"off\" or \"inherit\".")
    }
}

impl Choice for crate::residency::Region {
    fn read(s: &str) -> Option<Self> {
        s.parse().ok()
    }
    fn refusal(_field: &str) -> String {
        "Unknown region: use us, eu or apac.".into()
    }
}

impl Setting {
    /// Every setting.
    pub const ALL: [Setting; 2] = [Setting::On, Setting::Off];

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
    /// Every key setting.
    pub const ALL: [KeySetting; 3] = [KeySetting::On, KeySetting::Off, KeySetting::Inherit];

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
mod tests;
