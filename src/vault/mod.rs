//! The credential vault: AES-256-GCM under a master key from the environment. Each ciphertext
//! carries a format version, the fingerprint of the key that sealed it (first 8 bytes of
//! SHA-256 of the key, never the key), a fresh random 96-bit nonce, and is bound by AAD to its
//! row, so a ciphertext copied to another row fails to open. Old keys in
//! `SLUICE_SECRETS_KEY_OLD` open but never seal, which is what makes rotation possible while
//! `serve` runs. Key material lives in `Zeroizing` buffers and has no `Debug` output.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The master key's environment variable.
pub const KEY_ENV: &str = "SLUICE_SECRETS_KEY";
/// Old master keys (comma-separated), for decryption only.
pub const OLD_KEYS_ENV: &str = "SLUICE_SECRETS_KEY_OLD";

const VERSION: u8 = 1;
const FP_LEN: usize = 8;
const NONCE_LEN: usize = 12;

/// Vault errors. They never contain key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{KEY_ENV} is not set. Generate a master key with `openssl rand -base64 32` (or `head -c 32 /dev/urandom | base64`) and pass it in the environment")]
    MissingKey,
    #[error("{var} is malformed: it must be the base64 encoding of exactly 32 bytes (generate one with `openssl rand -base64 32`)")]
    MalformedKey { var: &'static str },
    #[error("sealed by a master key this process does not have (fingerprint {fingerprint}); set it in {KEY_ENV} or {OLD_KEYS_ENV}")]
    UnknownKey { fingerprint: String },
    #[error("cannot decrypt: the ciphertext was altered, moved to another row, or sealed under a different key")]
    Decrypt,
    #[error("ciphertext is malformed")]
    Malformed,
}

struct Key {
    cipher: Aes256Gcm,
    fp: [u8; FP_LEN],
}

/// The current master key plus old ones.
pub struct Keyring {
    current: Key,
    old: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keyring(<redacted>, current fingerprint {})",
            self.fingerprint()
        )
    }
}

fn parse_key(b64: &str, var: &'static str) -> Result<Key, Error> {
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| Error::MalformedKey { var })?,
    );
    if bytes.len() != 32 {
        return Err(Error::MalformedKey { var });
    }
    let digest = Sha256::digest(&*bytes);
    let mut fp = [0u8; FP_LEN];
    fp.copy_from_slice(&digest[..FP_LEN]);
    let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| Error::MalformedKey { var })?;
    Ok(Key { cipher, fp })
}

impl Keyring {
    /// Build from base64 strings.
    pub fn new(current: &str, old: &[&str]) -> Result<Keyring, Error> {
        Ok(Keyring {
            current: parse_key(current, KEY_ENV)?,
            old: old
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| parse_key(s, OLD_KEYS_ENV))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Read `SLUICE_SECRETS_KEY` and `SLUICE_SECRETS_KEY_OLD`.
    pub fn from_env() -> Result<Keyring, Error> {
        let current = Zeroizing::new(std::env::var(KEY_ENV).map_err(|_| Error::MissingKey)?);
        if current.trim().is_empty() {
            return Err(Error::MissingKey);
        }
        let old = Zeroizing::new(std::env::var(OLD_KEYS_ENV).unwrap_or_default());
        let olds: Vec<&str> = old.split(',').collect();
        Keyring::new(&current, &olds)
    }

    /// A fresh random key, base64 (for `serve --dev`).
    pub fn generate() -> Zeroizing<String> {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut *k);
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(*k))
    }

    /// Hex fingerprint of the current key.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.current.fp)
    }

    /// Whether a key of this ring (current or old) has fingerprint `fp` (hex).
    pub fn knows(&self, fp: &str) -> bool {
        std::iter::once(&self.current)
            .chain(self.old.iter())
            .any(|k| hex::encode(k.fp) == fp)
    }

    /// Seal `plaintext` bound to `aad` under the current key.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let (nonce, ct) = encrypt(&self.current.cipher, plaintext, aad);
        let mut out = Vec::with_capacity(1 + FP_LEN + NONCE_LEN + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&self.current.fp);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// [`Keyring::open`], for a secret that is text (a token, a client secret), wiped on
    /// drop; `Malformed` when it is not UTF-8.
    pub fn open_text(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<String>, Error> {
        let plain = self.open(sealed, aad)?;
        String::from_utf8(plain.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| Error::Malformed)
    }

    /// Open a ciphertext sealed with `aad` by the current or an old key.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        if sealed.len() < 1 + FP_LEN + NONCE_LEN + 16 || sealed[0] != VERSION {
            return Err(Error::Malformed);
        }
        let fp = &sealed[1..1 + FP_LEN];
        let nonce = &sealed[1 + FP_LEN..1 + FP_LEN + NONCE_LEN];
        let ct = &sealed[1 + FP_LEN + NONCE_LEN..];
        let key = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.fp == fp)
            .ok_or_else(|| Error::UnknownKey {
                fingerprint: hex::encode(fp),
            })?;
        key.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| Error::Decrypt)
    }

    /// The fingerprint (hex) a ciphertext names.
    pub fn fingerprint_of(sealed: &[u8]) -> Option<String> {
        (sealed.len() > FP_LEN).then(|| hex::encode(&sealed[1..1 + FP_LEN]))
    }
}

/// A per-org data key: 32 random bytes, stored only sealed under the master key. Audit fields
/// with personal data are encrypted under it; destroying it (hard delete) makes them
/// unreadable for good while the ciphertexts, and so the audit hash chain, stay in place.
pub struct DataKey {
    cipher: Aes256Gcm,
}

impl DataKey {
    /// A fresh key and its raw bytes (to be sealed by the caller).
    pub fn generate() -> (DataKey, Zeroizing<Vec<u8>>) {
        let mut raw = Zeroizing::new(vec![0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let key = DataKey::from_bytes(&raw).expect("32 bytes");
        (key, raw)
    }

    /// From raw bytes (an opened ciphertext).
    pub fn from_bytes(raw: &[u8]) -> Result<DataKey, Error> {
        Ok(DataKey {
            cipher: Aes256Gcm::new_from_slice(raw).map_err(|_| Error::Malformed)?,
        })
    }

    /// Encrypt `plaintext` bound to `aad`: nonce followed by ciphertext.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let (nonce, ct) = encrypt(&self.cipher, plaintext, aad);
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypt what [`DataKey::seal`] produced with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(Error::Malformed);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| Error::Decrypt)
    }
}

/// AES-256-GCM under a fresh random nonce: `(nonce, ciphertext)`.
fn encrypt(cipher: &Aes256Gcm, plaintext: &[u8], aad: &[u8]) -> ([u8; NONCE_LEN], Vec<u8>) {
    let mut nonce = [0u8; NONCE_LEN];
    // ThreadRng: a CSPRNG (ChaCha12) seeded and reseeded from the OS, without a syscall per nonce.
    rand::thread_rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .unwrap_or_default(); // AES-GCM encryption only fails for >64 GiB inputs
    (nonce, ct)
}

/// The AAD table name of an OAuth credential's access token (its row is the credential's).
pub const TOKEN_TABLE: &str = "credentials-token";

/// The AAD table name of a connected OAuth credential's client secret (its row is the
/// credential's).
pub const CLIENT_TABLE: &str = "credentials-client";

/// The AAD table name of a connect's PKCE verifier and client secret (the row is the flow's).
pub const FLOW_TABLE: &str = "oauth_flows";

/// The AAD binding a ciphertext to its row.
pub fn aad(table: &str, id: &str, name: &str) -> Vec<u8> {
    format!("sluice:v1\u{0}{table}\u{0}{id}\u{0}{name}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles only when the type wipes itself on drop.
    fn wipes_on_drop<T: zeroize::ZeroizeOnDrop>() {}

    #[test]
    fn the_expanded_aes_key_is_wiped_on_drop() {
        // AES-256-GCM's round keys: the `aes/zeroize` feature in Cargo.toml makes them wipe
        // themselves when dropped (GHASH/POLYVAL do the same under their `zeroize` features,
        // with a plain `Drop`, so there is no marker trait to check for them).
        wipes_on_drop::<aes::Aes256>();
        wipes_on_drop::<aes::Aes256Enc>();
        wipes_on_drop::<aes::Aes256Dec>();
    }

    fn ring() -> Keyring {
        Keyring::new(&Keyring::generate(), &[]).unwrap()
    }

    #[test]
    fn round_trip_and_any_change_fails() {
        let k = ring();
        let a = aad("credentials", "id1", "openai");
        let s = k.seal(b"sk-provider-secret", &a);
        assert_eq!(&*k.open(&s, &a).unwrap(), b"sk-provider-secret");
        assert!(!s.windows(9).any(|w| w == b"sk-provide"));
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 1;
            assert!(k.open(&t, &a).is_err(), "byte {i}");
        }
        assert_eq!(
            k.open(&s, &aad("credentials", "id2", "openai")),
            Err(Error::Decrypt)
        );
        assert_eq!(
            k.open(&s, &aad("credentials", "id1", "other")),
            Err(Error::Decrypt)
        );
        assert_ne!(k.seal(b"x", &a), k.seal(b"x", &a), "nonces must differ");
    }

    #[test]
    fn old_keys_open_but_never_seal() {
        let old_b64 = Keyring::generate();
        let old = Keyring::new(&old_b64, &[]).unwrap();
        let s = old.seal(b"v", b"aad");
        let new = Keyring::new(&Keyring::generate(), &[&old_b64]).unwrap();
        assert_eq!(&*new.open(&s, b"aad").unwrap(), b"v");
        let s2 = new.seal(b"v", b"aad");
        assert_eq!(Keyring::fingerprint_of(&s2).unwrap(), new.fingerprint());
        let other = ring();
        assert!(matches!(
            other.open(&s, b"aad"),
            Err(Error::UnknownKey { .. })
        ));
    }

    #[test]
    fn data_keys_round_trip_bound_to_their_aad() {
        let (k, raw) = DataKey::generate();
        let s = k.seal(b"203.0.113.9", b"a");
        assert_eq!(&*k.open(&s, b"a").unwrap(), b"203.0.113.9");
        assert!(k.open(&s, b"b").is_err());
        assert!(DataKey::generate().0.open(&s, b"a").is_err());
        assert_eq!(
            &*DataKey::from_bytes(&raw).unwrap().open(&s, b"a").unwrap(),
            b"203.0.113.9"
        );
    }

    #[test]
    fn malformed_keys_are_refused_with_guidance() {
        for bad in ["", "not base64!", "c2hvcnQ="] {
            let e = Keyring::new(bad, &[]).unwrap_err();
            assert!(e.to_string().contains("openssl rand -base64 32"), "{e}");
        }
    }
}
