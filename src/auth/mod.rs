//! App authentication: sluice API keys (`sk-sluice-` + 43 base62 characters from 32 bytes of OS
//! randomness), stored as SHA-256 hashes; the parsing of the `Authorization` header; and the
//! in-memory snapshot that the data plane looks keys up in (never a SQLite query per request).
//! Plain Rust, no pingora types.

pub mod authcode;
pub mod oauth;
mod snapshot;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub use snapshot::{Credential, KeyInfo, Snapshot, Watcher};

/// Every sluice key starts with this.
pub const KEY_PREFIX: &str = "sk-sluice-";
const BODY_LEN: usize = 43; // ceil(256 / log2(62))

/// Why a request is not authenticated. All map to the same 401 `invalid_api_key` reply, so a
/// client cannot tell a revoked key from an unknown one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("missing API key")]
    Missing,
    #[error("malformed Authorization header")]
    Malformed,
    #[error("more than one credential presented")]
    Ambiguous,
    #[error("API key in a place other than the Authorization header")]
    Misplaced,
    #[error("unknown API key")]
    Unknown,
    #[error("revoked API key")]
    Revoked,
    #[error("expired API key")]
    Expired,
}

impl Error {
    /// A short stable label (metrics, logs).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Missing => "missing",
            Error::Malformed => "malformed",
            Error::Ambiguous => "ambiguous",
            Error::Misplaced => "misplaced",
            Error::Unknown => "unknown",
            Error::Revoked => "revoked",
            Error::Expired => "expired",
        }
    }
}

/// A newly generated key: the secret (shown once), its hash and display prefix.
pub struct NewKey {
    pub secret: Zeroizing<String>,
    pub hash: [u8; 32],
    pub prefix: String,
}

/// Generate a key from 32 bytes of OS randomness, encoded base62.
pub fn generate() -> NewKey {
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut *raw);
    let body = base62(&raw);
    let secret = Zeroizing::new(format!("{KEY_PREFIX}{body}"));
    let prefix = format!("{KEY_PREFIX}{}", &body[..4]);
    NewKey {
        hash: hash(&secret),
        secret,
        prefix,
    }
}

/// SHA-256 of the full key text.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Constant-time equality of two key hashes.
pub fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

fn base62(bytes: &[u8; 32]) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    // Big-number division by 62; 32 bytes fit in 43 base62 digits.
    let mut num: Vec<u8> = bytes.to_vec();
    let mut out = Vec::with_capacity(BODY_LEN);
    while out.len() < BODY_LEN {
        let mut rem = 0u32;
        for d in num.iter_mut() {
            let acc = (rem << 8) | *d as u32;
            *d = (acc / 62) as u8;
            rem = acc % 62;
        }
        out.push(ALPHABET[rem as usize]);
    }
    num.iter_mut().for_each(|d| *d = 0);
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Whether `s` has the shape of a sluice key.
pub fn is_key_shaped(s: &str) -> bool {
    s.len() == KEY_PREFIX.len() + BODY_LEN
        && s.starts_with(KEY_PREFIX)
        && s[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
}

/// Whether a query string holds a sluice key or a key-like parameter, read as a server reads
/// it: split into pairs at `&` or `;`, then each name and the whole percent-decoded
/// (`%73k-sluice-...`, `api%5Fkey=`), again while that changes anything (a server that decodes
/// twice), `+` as a space.
fn misplaced_in_query(q: &str) -> bool {
    let decoded = |s: &str| -> Vec<String> {
        let mut texts = vec![s.to_ascii_lowercase()];
        for _ in 0..3 {
            let last = texts.last().map(String::as_str).unwrap_or_default();
            let next = percent_encoding::percent_decode_str(last)
                .decode_utf8_lossy()
                .to_ascii_lowercase();
            if next == last {
                break;
            }
            texts.push(next);
        }
        texts
    };
    decoded(q).iter().any(|t| t.contains(KEY_PREFIX))
        || q.split(['&', ';']).any(|pair| {
            let Some((name, _)) = pair.split_once('=') else {
                return false;
            };
            decoded(name).iter().any(|n| {
                let n = n.replace('+', " ");
                let n = n.trim();
                n == "key" || n.ends_with("api-key") || n.ends_with("api_key")
            })
        })
}

/// Extract the bearer key from the request's `Authorization` values (all of them), refusing
/// credentials anywhere else: `api-key`/`x-api-key` headers or a key-like query parameter.
pub fn bearer<'a>(
    authorization: &[&'a [u8]],
    has_other_key_header: bool,
    query: Option<&str>,
) -> Result<&'a str, Error> {
    if has_other_key_header || query.is_some_and(misplaced_in_query) {
        return Err(Error::Misplaced);
    }
    let value = match authorization {
        [] => return Err(Error::Missing),
        [one] => *one,
        _ => return Err(Error::Ambiguous),
    };
    let value = std::str::from_utf8(value).map_err(|_| Error::Malformed)?;
    let (scheme, rest) = value.split_once(' ').ok_or(Error::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Error::Malformed);
    }
    let key = rest.trim_matches(|c| c == ' ' || c == '\t');
    if !is_key_shaped(key) {
        return Err(if key.is_empty() {
            Error::Missing
        } else {
            Error::Unknown
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_base62_with_a_short_prefix() {
        let a = generate();
        let b = generate();
        assert!(is_key_shaped(&a.secret), "{}", a.prefix);
        assert_ne!(*a.secret, *b.secret);
        assert_eq!(a.prefix.len(), KEY_PREFIX.len() + 4);
        assert!(a.secret.starts_with(&a.prefix));
        assert_eq!(a.hash, hash(&a.secret));
        assert!(same_hash(&a.hash, &hash(&a.secret)));
        assert!(!same_hash(&a.hash, &b.hash));
    }

    #[test]
    fn bearer_parsing() {
        let k = generate();
        let good = format!("Bearer {}", &*k.secret);
        assert_eq!(
            bearer(&[good.as_bytes()], false, None),
            Ok(k.secret.as_str())
        );
        let lower = format!("bEaReR  {}", &*k.secret);
        assert!(bearer(&[lower.as_bytes()], false, None).is_ok());
        assert_eq!(bearer(&[], false, None), Err(Error::Missing));
        assert_eq!(
            bearer(&[good.as_bytes(), good.as_bytes()], false, None),
            Err(Error::Ambiguous)
        );
        assert_eq!(bearer(&[b"Basic abc"], false, None), Err(Error::Malformed));
        assert_eq!(
            bearer(&[b"Bearer sk-other"], false, None),
            Err(Error::Unknown)
        );
        assert_eq!(
            bearer(&[good.as_bytes()], true, None),
            Err(Error::Misplaced)
        );
        let q = format!("x=1&key={}", &*k.secret);
        assert_eq!(
            bearer(&[good.as_bytes()], false, Some(&q)),
            Err(Error::Misplaced)
        );
        assert_eq!(
            bearer(&[good.as_bytes()], false, Some("api-version=2024")),
            Ok(k.secret.as_str())
        );
        // However the query writes it: escaped once or twice, after `;`, as a name.
        let body = &k.secret["sk-".len()..];
        for q in [
            format!("x=%73k-{body}"),
            format!("x=%2573%256B-{body}"),
            "a=1;key=abc".to_string(),
            "api%5Fkey=abc".to_string(),
            "API%2DKEY=abc".to_string(),
            "%6Bey=abc".to_string(),
        ] {
            assert_eq!(
                bearer(&[good.as_bytes()], false, Some(&q)),
                Err(Error::Misplaced),
                "{q}"
            );
        }
        for q in [
            "monkey=1",
            "keys=2&x=%zz",
            "q=a+key",
            "turkey%3D1",
            "q=a%26key%3Db",
        ] {
            assert!(bearer(&[good.as_bytes()], false, Some(q)).is_ok(), "{q}");
        }
    }
}
