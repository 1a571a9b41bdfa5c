//! The typed values of stored rows: each is parsed once, when a row is read (an unknown value
//! is a store error, never a silent default), and written back as the same lowercase text.
//! Policy code compares these, never strings. The policy vocabulary itself (settings, roles)
//! is `crate::policy`'s; only how it is stored is here.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

use crate::policy::{KeySetting, Role, Setting};
use crate::residency::Region;

/// How a stored credential is used: its secret is the credential (`static`), or it obtains
/// access tokens (`oauth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialType {
    #[default]
    Static,
    #[serde(rename = "oauth")]
    OAuth,
}

impl CredentialType {
    /// As stored and shown: `static` or `oauth`.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialType::Static => "static",
            CredentialType::OAuth => "oauth",
        }
    }

    /// Parse `static` or `oauth`.
    pub fn parse(s: &str) -> Option<CredentialType> {
        match s {
            "static" => Some(CredentialType::Static),
            "oauth" => Some(CredentialType::OAuth),
            _ => None,
        }
    }

    pub fn is_oauth(self) -> bool {
        self == CredentialType::OAuth
    }
}

/// A stored time: RFC 3339 text in UTC in the database and in JSON (so stored times compare as
/// text), a `time::OffsetDateTime` in Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub time::OffsetDateTime);

impl Default for Timestamp {
    /// The Unix epoch (a placeholder: rows are written with real times).
    fn default() -> Timestamp {
        Timestamp(time::OffsetDateTime::UNIX_EPOCH)
    }
}

impl Timestamp {
    /// Now.
    pub fn now() -> Timestamp {
        Timestamp(time::OffsetDateTime::now_utc())
    }

    /// Parse an RFC 3339 time (any offset).
    pub fn parse(s: &str) -> Option<Timestamp> {
        super::parse_time(s).map(Timestamp)
    }

    /// Whether it is now or earlier.
    pub fn is_past(self) -> bool {
        self.0 <= time::OffsetDateTime::now_utc()
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&super::utc_text(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::utc_text(self.0))
    }
}

impl ToSql for Timestamp {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(super::utc_text(self.0)))
    }
}

impl FromSql for Timestamp {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        Timestamp::parse(v.as_str()?)
            .ok_or_else(|| FromSqlError::Other("a stored time is not RFC 3339".into()))
    }
}

/// `FromSql` and `ToSql` for a type stored as its `as_str` text (and `Display` as it).
macro_rules! stored_as_text {
    ($t:ty, $parse:expr) => {
        stored_as_text!(@sql $t, $parse);

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
    (@sql $t:ty, $parse:expr) => {
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $t {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = v.as_str()?;
                $parse(s).ok_or_else(|| {
                    FromSqlError::Other(
                        format!(
                            "unknown stored {} {:?}",
                            stringify!($t),
                            $crate::audit::cap(s, 16)
                        )
                        .into(),
                    )
                })
            }
        }
    };
}

stored_as_text!(@sql Setting, Setting::parse);
stored_as_text!(@sql KeySetting, KeySetting::parse);
stored_as_text!(@sql Role, Role::parse);
stored_as_text!(CredentialType, CredentialType::parse);
stored_as_text!(@sql Region, |s: &str| s.parse::<Region>().ok());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_unknown_ones_are_errors() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        for s in [KeySetting::On, KeySetting::Off, KeySetting::Inherit] {
            let back: KeySetting = c.query_row("SELECT ?1", [s], |r| r.get(0)).unwrap();
            assert_eq!(back, s);
        }
        let r: Region = c.query_row("SELECT 'eu'", [], |r| r.get(0)).unwrap();
        assert_eq!(r, Region::Eu);
        assert!(c
            .query_row("SELECT 'sometimes'", [], |r| r.get::<_, Setting>(0))
            .is_err());
        assert!(c
            .query_row("SELECT 'mars'", [], |r| r.get::<_, Region>(0))
            .is_err());
        assert_eq!(KeySetting::Inherit.resolve(Setting::Off), Setting::Off);
        assert_eq!(KeySetting::On.resolve(Setting::Off), Setting::On);
        assert_eq!(serde_json::to_value(Role::Owner).unwrap(), "owner");
        for k in [CredentialType::Static, CredentialType::OAuth] {
            let back: CredentialType = c.query_row("SELECT ?1", [k], |r| r.get(0)).unwrap();
            assert_eq!(back, k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert!(c
            .query_row("SELECT 'OAuth'", [], |r| r.get::<_, CredentialType>(0))
            .is_err());
        // Times read back as they were written, to the nanosecond.
        let t = "2026-12-03T09:27:16.556273463Z";
        let back: Timestamp = c.query_row("SELECT ?1", [t], |r| r.get(0)).unwrap();
        assert_eq!(back.to_string(), t);
        assert_eq!(serde_json::to_value(back).unwrap(), t);
        let text: String = c.query_row("SELECT ?1", [back], |r| r.get(0)).unwrap();
        assert_eq!(text, t);
        assert!(c
            .query_row("SELECT 'yesterday'", [], |r| r.get::<_, Timestamp>(0))
            .is_err());
    }
}
