//! The in-memory view of keys and credentials the data plane reads. A background thread polls
//! SQLite's `data_version` and rebuilds the snapshot when another process (the CLI) commits, so
//! a revoked key is refused within a second; requests only clone an `Arc`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use time::OffsetDateTime;

use super::{hash, same_hash, Error};
use crate::store::{self, Store};
use crate::vault::{self, Keyring};

/// What the data plane knows about a key.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: String,
    pub org_id: String,
    pub hash: [u8; 32],
    pub rpm: Option<u32>,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked: bool,
}

/// A decrypted upstream credential. `SecretString` prints as redacted.
#[derive(Debug)]
pub struct Credential {
    pub secret: SecretString,
    pub expires_at: Option<OffsetDateTime>,
}

/// Keys by hash and credentials by name.
#[derive(Debug, Default)]
pub struct Snapshot {
    keys: HashMap<[u8; 32], Arc<KeyInfo>>,
    credentials: HashMap<String, Arc<Credential>>,
}

fn parse_time(s: &Option<String>) -> Option<OffsetDateTime> {
    s.as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
}

impl Snapshot {
    /// Read every key and credential. A credential that cannot be decrypted is left out (and
    /// logged by name): requests needing it are refused, never sent without it.
    pub fn load(store: &Store, ring: &Keyring) -> Result<Snapshot, store::Error> {
        let mut keys = HashMap::new();
        for k in store.keys(None)? {
            let Ok(h) = <[u8; 32]>::try_from(k.hash.as_slice()) else {
                continue;
            };
            keys.insert(
                h,
                Arc::new(KeyInfo {
                    expires_at: parse_time(&k.expires_at),
                    revoked: k.revoked_at.is_some(),
                    id: k.id,
                    org_id: k.org_id,
                    hash: h,
                    rpm: k.rpm,
                }),
            );
        }
        let mut credentials = HashMap::new();
        for c in store.credentials()? {
            match ring.open(&c.sealed, &vault::aad("credentials", &c.id, &c.name)) {
                Ok(plain) => match String::from_utf8(plain.to_vec()) {
                    Ok(s) => {
                        credentials.insert(
                            c.name.clone(),
                            Arc::new(Credential {
                                secret: SecretString::from(s),
                                expires_at: parse_time(&c.expires_at),
                            }),
                        );
                    }
                    Err(_) => {
                        tracing::error!(credential = %c.name, "credential is not UTF-8; left out")
                    }
                },
                Err(e) => {
                    tracing::error!(credential = %c.name, error = %e, "cannot decrypt credential; left out")
                }
            }
        }
        Ok(Snapshot { keys, credentials })
    }

    /// Authenticate a well-formed key at `now`.
    pub fn authenticate(&self, key: &str, now: OffsetDateTime) -> Result<Arc<KeyInfo>, Error> {
        let h = hash(key);
        let info = self.keys.get(&h).ok_or(Error::Unknown)?;
        if !same_hash(&info.hash, &h) {
            return Err(Error::Unknown);
        }
        if info.revoked {
            return Err(Error::Revoked);
        }
        if info.expires_at.is_some_and(|e| e <= now) {
            return Err(Error::Expired);
        }
        Ok(info.clone())
    }

    /// A credential by name, unless missing or expired at `now`.
    pub fn credential(&self, name: &str, now: OffsetDateTime) -> Option<Arc<Credential>> {
        self.credentials
            .get(name)
            .filter(|c| c.expires_at.is_none_or(|e| e > now))
            .cloned()
    }
}

/// Keeps the current snapshot fresh and batches last-used updates.
pub struct Watcher {
    current: RwLock<Arc<Snapshot>>,
    used: Mutex<HashSet<String>>,
}

impl Watcher {
    /// Load once, then poll every 200 ms on a background thread.
    pub fn start(path: PathBuf, ring: Arc<Keyring>) -> Result<Arc<Watcher>, store::Error> {
        let mut store = Store::open(&path)?;
        let first = Snapshot::load(&store, &ring)?;
        let w = Arc::new(Watcher {
            current: RwLock::new(Arc::new(first)),
            used: Mutex::new(HashSet::new()),
        });
        let weak = Arc::downgrade(&w);
        std::thread::Builder::new()
            .name("sluice-snapshot".into())
            .spawn(move || {
                let mut version = store.data_version().unwrap_or(0);
                let mut last_flush = Instant::now();
                while let Some(w) = weak.upgrade() {
                    std::thread::sleep(Duration::from_millis(200));
                    match store.data_version() {
                        Ok(v) if v != version => match Snapshot::load(&store, &ring) {
                            Ok(s) => {
                                version = v;
                                if let Ok(mut cur) = w.current.write() {
                                    *cur = Arc::new(s);
                                }
                                tracing::info!("key snapshot reloaded");
                            }
                            Err(e) => tracing::error!(error = %e, "cannot reload key snapshot; keeping the previous one"),
                        },
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "cannot poll the store"),
                    }
                    if last_flush.elapsed() >= Duration::from_secs(5) {
                        last_flush = Instant::now();
                        let ids: Vec<String> = w.used.lock().map(|mut u| u.drain().collect()).unwrap_or_default();
                        if !ids.is_empty() {
                            if let Err(e) = store.touch_keys(&ids, &store::now()) {
                                tracing::warn!(error = %e, "cannot record key last-used times");
                            }
                        }
                    }
                }
            })
            .map_err(|source| store::Error::Io {
                path: path.clone(),
                source,
            })?;
        Ok(w)
    }

    /// The current snapshot.
    pub fn get(&self) -> Arc<Snapshot> {
        self.current.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Note that a key was used (written to the store in batches, off the request path).
    pub fn mark_used(&self, id: &str) {
        if let Ok(mut u) = self.used.lock() {
            if !u.contains(id) {
                u.insert(id.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth;
    use secrecy::ExposeSecret;

    fn key_row(org: &str, k: &auth::NewKey) -> store::Key {
        store::Key {
            id: store::new_id(),
            org_id: org.into(),
            name: "app".into(),
            prefix: k.prefix.clone(),
            hash: k.hash.to_vec(),
            pii: "inherit".into(),
            region: None,
            rpm: None,
            expires_at: None,
            revoked_at: None,
            created_at: store::now(),
            last_used_at: None,
        }
    }

    fn seal(s: &Store, ring: &Keyring, name: &str, secret: &str) {
        let id = s.credential_id(name).unwrap().unwrap_or_else(store::new_id);
        let now = store::now();
        s.put_credential(&store::Credential {
            sealed: ring.seal(secret.as_bytes(), &vault::aad("credentials", &id, name)),
            key_fp: ring.fingerprint(),
            id,
            name: name.into(),
            created_at: now.clone(),
            rotated_at: now,
            expires_at: None,
        })
        .unwrap();
    }

    #[test]
    fn keys_and_credentials_round_trip_and_nothing_usable_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let ring = Keyring::new(&Keyring::generate(), &[]).unwrap();
        let s = Store::open(&path).unwrap();
        let org = s.insert_org("acme", None, "on").unwrap();
        let k = auth::generate();
        let row = key_row(&org.id, &k);
        s.insert_key(&row).unwrap();
        seal(&s, &ring, "openai", "sk-proj-PROVIDER-canary-123456");
        seal(&s, &ring, "other", "sk-other-canary-654321");

        let snap = Snapshot::load(&s, &ring).unwrap();
        let now = OffsetDateTime::now_utc();
        assert_eq!(snap.authenticate(&k.secret, now).unwrap().id, row.id);
        assert_eq!(
            snap.authenticate(&auth::generate().secret, now)
                .unwrap_err(),
            Error::Unknown
        );
        assert_eq!(
            snap.credential("openai", now)
                .unwrap()
                .secret
                .expose_secret(),
            "sk-proj-PROVIDER-canary-123456"
        );

        // A ciphertext copied onto another row does not open.
        let creds = s.credentials().unwrap();
        let (a, b) = (&creds[0], &creds[1]);
        s.put_credential(&store::Credential {
            sealed: a.sealed.clone(),
            ..b.clone()
        })
        .unwrap();
        let snap = Snapshot::load(&s, &ring).unwrap();
        assert!(snap.credential(&b.name, now).is_none());
        assert!(snap.credential(&a.name, now).is_some());

        s.revoke_key(&row.id).unwrap();
        let snap = Snapshot::load(&s, &ring).unwrap();
        assert_eq!(
            snap.authenticate(&k.secret, now).unwrap_err(),
            Error::Revoked
        );

        drop(s);
        for f in ["s.db", "s.db-wal", "s.db-shm"] {
            let bytes = std::fs::read(dir.path().join(f)).unwrap_or_default();
            for canary in [k.secret.as_bytes(), b"PROVIDER-canary", b"other-canary"] {
                assert!(
                    !bytes.windows(canary.len()).any(|w| w == canary),
                    "{f} leaks"
                );
            }
        }
    }

    #[test]
    fn watcher_sees_a_revocation_from_another_connection_within_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let ring = Arc::new(Keyring::new(&Keyring::generate(), &[]).unwrap());
        let s = Store::open(&path).unwrap();
        let org = s.insert_org("acme", None, "on").unwrap();
        let k = auth::generate();
        let row = key_row(&org.id, &k);
        s.insert_key(&row).unwrap();
        let w = Watcher::start(path.clone(), ring).unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(w.get().authenticate(&k.secret, now).is_ok());
        s.revoke_key(&row.id).unwrap();
        let t = Instant::now();
        while w.get().authenticate(&k.secret, now).is_ok() {
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "revocation not seen within 1 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
