//! Data residency: the regions a request may be served from. A region is a hard boundary, never
//! a load-balancing hint. This module is plain Rust (no pingora types).

use std::fmt;
use std::str::FromStr;

/// A data region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

impl serde::Serialize for Region {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
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
    /// Case-insensitive, as the `X-Sluice-Region` header is (`US` is `us`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Region::Us, Region::Eu, Region::Apac]
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or(UnknownRegion)
    }
}

/// Where the request's region came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `X-Sluice-Region` header.
    Header,
    /// The API key's pin.
    Key,
    /// The org's default (a pin as well).
    Org,
    /// `[residency] default_region`.
    Default,
}

/// Why no region could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The header names no known region, or appears more than once.
    #[error("X-Sluice-Region must be one of us, eu, apac")]
    Unknown,
    /// The header asks for a region the key or org is pinned away from.
    #[error(
        "region not allowed (region_not_allowed): this key is pinned to region {pin}, X-Sluice-Region asked for {asked}"
    )]
    NotAllowed { pin: Region, asked: Region },
}

/// The region a request must be served in. Precedence: the `X-Sluice-Region` header (all its
/// values), the key's pin, the org's default, the configured default. A key or org region is
/// a pin, a hard limit: a header asking for another region is refused, never honoured.
pub fn resolve(
    header: &[&[u8]],
    key_pin: Option<Region>,
    org_pin: Option<Region>,
    default: Region,
) -> Result<(Region, Source), Error> {
    let asked = match header {
        [] => None,
        [one] => Some(
            std::str::from_utf8(one)
                .ok()
                .map(|s| s.trim().to_ascii_lowercase())
                .and_then(|s| s.parse::<Region>().ok())
                .ok_or(Error::Unknown)?,
        ),
        _ => return Err(Error::Unknown),
    };
    let pin = key_pin
        .map(|r| (r, Source::Key))
        .or(org_pin.map(|r| (r, Source::Org)));
    match (asked, pin) {
        (Some(asked), Some((pin, _))) if asked != pin => Err(Error::NotAllowed { pin, asked }),
        (Some(asked), _) => Ok((asked, Source::Header)),
        (None, Some(pinned)) => Ok(pinned),
        (None, None) => Ok((default, Source::Default)),
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
        // Case-insensitive, as the header is.
        assert_eq!("EU".parse::<Region>(), Ok(Region::Eu));
        assert!("mars".parse::<Region>().is_err());
    }

    #[test]
    fn precedence_and_pins() {
        use Region::*;
        let r = |h: &[&[u8]], k, o| resolve(h, k, o, Us);
        assert_eq!(r(&[], None, None), Ok((Us, Source::Default)));
        assert_eq!(resolve(&[], None, None, Eu), Ok((Eu, Source::Default)));
        assert_eq!(r(&[], None, Some(Eu)), Ok((Eu, Source::Org)));
        assert_eq!(r(&[], Some(Apac), Some(Eu)), Ok((Apac, Source::Key)));
        assert_eq!(r(&[b"eu"], None, None), Ok((Eu, Source::Header)));
        assert_eq!(r(&[b" EU "], None, None), Ok((Eu, Source::Header)));
        assert_eq!(r(&[b"eu"], None, Some(Eu)), Ok((Eu, Source::Header)));
        assert_eq!(
            r(&[b"apac"], Some(Apac), Some(Eu)),
            Ok((Apac, Source::Header))
        );
        assert_eq!(
            r(&[b"us"], None, Some(Eu)),
            Err(Error::NotAllowed { pin: Eu, asked: Us })
        );
        assert_eq!(
            r(&[b"eu"], Some(Apac), Some(Eu)),
            Err(Error::NotAllowed {
                pin: Apac,
                asked: Eu
            })
        );
        assert_eq!(r(&[b"mars"], None, None), Err(Error::Unknown));
        assert_eq!(r(&[b""], None, None), Err(Error::Unknown));
        assert_eq!(r(&[b"eu", b"eu"], None, None), Err(Error::Unknown));
        assert_eq!(r(&[b"\xff"], None, Some(Eu)), Err(Error::Unknown));
        assert!(Error::NotAllowed { pin: Eu, asked: Us }
            .to_string()
            .contains("region_not_allowed"));
    }
}
