//! Data residency: the regions a request may be served from. A region is a hard boundary, never
//! a load-balancing hint. This module is plain Rust (no pingora types).

use std::fmt;
use std::str::FromStr;

/// A data region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    Us,
    Eu,
    Apac,
}

impl Region {
    /// The lowercase name used in config, headers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Us => "us",
            Region::Eu => "eu",
            Region::Apac => "apac",
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not one of `us`, `eu`, `apac`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown region (us | eu | apac)")]
pub struct UnknownRegion;

impl FromStr for Region {
    type Err = UnknownRegion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "us" => Ok(Region::Us),
            "eu" => Ok(Region::Eu),
            "apac" => Ok(Region::Apac),
            _ => Err(UnknownRegion),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_round_trip() {
        for r in [Region::Us, Region::Eu, Region::Apac] {
            assert_eq!(r.as_str().parse::<Region>(), Ok(r));
        }
        assert!("EU".parse::<Region>().is_err());
        assert!("mars".parse::<Region>().is_err());
    }
}
