//! The in-memory view of keys and credentials the data plane reads. A background thread polls
//! SQLite's `data_version` and, when another connection committed, the store's configuration
//! generation: the snapshot is rebuilt only when keys, orgs, credentials or users changed (not
//! on every audit batch), so
//! a revoked key is refused within a second; requests only clone an `Arc` and never touch
//! SQLite. Last-used times are flagged with an atomic per key and written in batches by the same
//! thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{hash, same_hash, Error};
use crate::residency::Region;
use crate::store::{self, Store};
use crate::vault::{self, Keyring};

const POLL: Duration = Duration::from_millis(100);
const FLUSH: Duration = Duration::from_secs(5);

/// What the data plane knows about a key.
#[derive(Debug)]
pub struct KeyInfo {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub hash: [u8; 32],
    /// The key's own rate limits and budget.
    pub limits: crate::limits::Limits,
    /// Its org's (all the org's keys together).
    pub org_limits: crate::limits::Limits,
    /// The names of its limit counters: the same on every sidecar of a fleet (ids are per
    /// store): `key:` and the first 12 bytes of the key's hash in hex, `org:` and the org's name.
    pub counter_names: (String, String),
    /// Which switches are on for this key: PII redacted from its requests, secrets from its
    /// traffic, what comes back to it (responses, streams) too. Each the key's own `on`/`off`,
    /// or its org's for `inherit` (resolved at load; an org change reloads the snapshot).
    pub on: crate::policy::Switches<bool>,
    /// The MCP tools, resources and prompts it may use (its own lists, or its org's).
    pub mcp: crate::mcp::Policy,
    /// The key's region pin.
    pub region: Option<Region>,
    /// The org's default region.
    pub org_region: Option<Region>,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked: bool,
    /// Used since the last flush of last-used times.
    used: AtomicBool,
}

impl KeyInfo {
    /// Note that the key was used; written to the store in batches, off the request path.
    pub fn mark_used(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }
}

/// A decrypted upstream credential. `SecretString` prints as redacted and zeroizes on drop.
#[derive(Debug)]
pub struct Credential {
    pub secret: SecretString,
    pub expires_at: Option<OffsetDateTime>,
    /// For an OAuth credential: when its current access token was obtained (it names the
    /// token, so a 401 forces one refresh of that token and not of a newer one).
    pub oauth_obtained: Option<String>,
}

impl Credential {
    /// The outbound header value: `prefix` followed by the secret, marked sensitive (HPACK
    /// never indexes it, `Debug` hides it). `None` if the secret cannot be a header value. The
    /// intermediate buffer is wiped; the `HeaderValue` itself lives only as long as the
    /// outbound request header.
    pub fn header_value(&self, prefix: &str) -> Option<http::HeaderValue> {
        let secret = self.secret.expose_secret();
        let mut value = Zeroizing::new(Vec::with_capacity(prefix.len() + secret.len()));
        value.extend_from_slice(prefix.as_bytes());
        value.extend_from_slice(secret.as_bytes());
        let mut v = http::HeaderValue::from_bytes(&value).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

/// Keys by hash and credentials by name.
#[derive(Debug, Default)]
pub struct Snapshot {
    keys: HashMap<[u8; 32], Arc<KeyInfo>>,
    credentials: HashMap<String, Arc<Credential>>,
    /// OAuth credentials whose refresh token the server refused (`needs_reconnect`).
    needs_reconnect: Vec<String>,
}

fn parse_time(s: &Option<store::Timestamp>) -> Option<OffsetDateTime> {
    s.map(|t| t.0)
}

impl Snapshot {
    /// Read every key and credential. A credential that cannot be decrypted is left out (and
    /// logged by name): requests needing it are refused, never sent without it. One exception
    /// keeps a master-key rotation from cutting traffic: when a credential was re-sealed under a
    /// master key this process does not have yet, the value from `previous` stays in use (and
    /// an error is logged on every reload) until the process is restarted with the new key.
    pub fn load(
        store: &Store,
        ring: &Keyring,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, store::Error> {
        let orgs: HashMap<String, store::Org> = store
            .orgs()?
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect();
        let mut keys = HashMap::new();
        for k in store.keys(None)? {
            let Ok(h) = <[u8; 32]>::try_from(k.hash.as_slice()) else {
                continue;
            };
            let used = previous
                .and_then(|p| p.keys.get(&h))
                .is_some_and(|p| p.used.load(Ordering::Relaxed));
            let org = orgs.get(&k.org_id);
            let r = crate::policy::resolve(&k.policy, org.map(|o| &o.policy));
            let limits = k.policy.limits;
            let counter_names = (
                h[..12].iter().map(|b| format!("{b:02x}")).collect(),
                org.map_or_else(|| k.org_id.clone(), |o| o.name.clone()),
            );
            keys.insert(
                h,
                Arc::new(KeyInfo {
                    expires_at: parse_time(&k.expires_at),
                    revoked: k.revoked_at.is_some(),
                    id: k.id,
                    org_id: k.org_id,
                    name: k.name,
                    hash: h,
                    limits,
                    org_limits: org.map(|o| o.policy.limits).unwrap_or_default(),
                    counter_names,
                    on: r.on,
                    mcp: r.mcp,
                    region: k.policy.region,
                    org_region: org.and_then(|o| o.policy.region),
                    used: AtomicBool::new(used),
                }),
            );
        }
        let mut credentials = HashMap::new();
        let mut needs_reconnect = Vec::new();
        for c in store.credentials()? {
            if c.last_error.as_deref() == Some(super::oauth::NEEDS_RECONNECT) {
                needs_reconnect.push(c.name.clone());
            }
            // An OAuth credential's secret obtains tokens: what is sent is its current access
            // token, until that expires (none yet: left out, requests wait for the refresher).
            let (sealed, aad, expires_at, oauth_obtained) = if c.kind.is_oauth() {
                let Some(token) = &c.token_sealed else {
                    continue;
                };
                let expiry = parse_time(&c.token_expires_at);
                let sooner = match (expiry, parse_time(&c.expires_at)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                (
                    token,
                    vault::aad(vault::TOKEN_TABLE, &c.id, &c.name),
                    sooner,
                    Some(
                        c.token_obtained_at
                            .map(|t| t.to_string())
                            .unwrap_or_default(),
                    ),
                )
            } else {
                (
                    &c.sealed,
                    vault::aad("credentials", &c.id, &c.name),
                    parse_time(&c.expires_at),
                    None,
                )
            };
            let opened = ring.open(sealed, &aad).and_then(|plain| {
                String::from_utf8(plain.to_vec()).map_err(|_| vault::Error::Malformed)
            });
            match opened {
                Ok(s) => {
                    credentials.insert(
                        c.name.clone(),
                        Arc::new(Credential {
                            secret: SecretString::from(s),
                            expires_at,
                            oauth_obtained,
                        }),
                    );
                }
                Err(e @ vault::Error::UnknownKey { .. }) => {
                    match previous.and_then(|p| p.credentials.get(&c.name)) {
                        Some(prev) => {
                            tracing::error!(credential = %c.name, error = %e, "credential re-sealed under a master key this process lacks; still using the value loaded before. Restart with the new key in SLUICE_SECRETS_KEY");
                            credentials.insert(c.name.clone(), prev.clone());
                        }
                        None => {
                            tracing::error!(credential = %c.name, error = %e, "cannot decrypt credential; left out")
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(credential = %c.name, error = %e, "cannot decrypt credential; left out")
                }
            }
        }
        Ok(Snapshot {
            keys,
            credentials,
            needs_reconnect,
        })
    }

    /// The ids of the keys that can be used at `now` (not revoked, not expired).
    pub fn usable_key_ids(&self, now: OffsetDateTime) -> std::collections::HashSet<&str> {
        self.keys
            .values()
            .filter(|k| !k.revoked && k.expires_at.is_none_or(|e| e > now))
            .map(|k| k.id.as_str())
            .collect()
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

    /// Every credential's name and expiry (for the expiry metric).
    pub fn credential_expiries(&self) -> Vec<(&str, Option<OffsetDateTime>)> {
        self.credentials
            .iter()
            .map(|(n, c)| (n.as_str(), c.expires_at))
            .collect()
    }

    /// The OAuth credentials that need `sluice credentials connect` again (for the metric).
    pub fn needs_reconnect(&self) -> &[String] {
        &self.needs_reconnect
    }

    /// Every region a key or org is pinned to (for the start-up check that each has upstreams).
    pub fn pinned_regions(&self) -> std::collections::BTreeSet<Region> {
        self.keys
            .values()
            .filter(|k| !k.revoked)
            .flat_map(|k| k.region.iter().chain(k.org_region.iter()))
            .cloned()
            .collect()
    }

    /// Ids of keys used since the last call (the flags are cleared).
    fn take_used(&self) -> Vec<String> {
        self.keys
            .values()
            .filter(|k| k.used.swap(false, Ordering::Relaxed))
            .map(|k| k.id.clone())
            .collect()
    }
}

/// A store that cannot be read is logged when it starts failing and then every 30 s, not on
/// every 100 ms poll.
#[derive(Default)]
struct Outage {
    last_logged: Option<Instant>,
}

impl Outage {
    /// A poll or reload failed: whether to log it.
    fn failed(&mut self) -> bool {
        let due = self
            .last_logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(30));
        if due {
            self.last_logged = Some(Instant::now());
        }
        due
    }

    fn ended(&mut self) {
        if self.last_logged.take().is_some() {
            tracing::warn!("the key snapshot is refreshed from the store again");
        }
    }
}

/// Keeps the current snapshot fresh and writes last-used times in batches.
pub struct Watcher {
    /// The snapshot in use, and the store generation it was loaded at (read before the load:
    /// its data is at least that new).
    current: RwLock<(i64, Arc<Snapshot>)>,
    ring: Arc<Keyring>,
    started: Instant,
    /// Milliseconds since `started` of the last successful poll of the store.
    last_ok_ms: AtomicU64,
    /// Snapshots rebuilt since start (the first load not counted).
    reloads: AtomicU64,
}

impl Watcher {
    /// Load once (an error here stops startup), then poll every 100 ms on a background thread.
    pub fn start(path: PathBuf, ring: Arc<Keyring>) -> Result<Arc<Watcher>, store::Error> {
        let mut store = Store::open(&path)?;
        // Read where the store stands before loading: a change committed during the load is
        // then seen as a change by the first poll (read after, it could be missed).
        let version0 = store.data_version()?;
        let generation0 = store.generation()?;
        let first = Snapshot::load(&store, &ring, None)?;
        let w = Arc::new(Watcher {
            current: RwLock::new((generation0, Arc::new(first))),
            ring: ring.clone(),
            started: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&w);
        std::thread::Builder::new()
            .name("sluice-snapshot".into())
            .spawn(move || {
                let mut version = version0;
                let mut generation = generation0;
                let mut last_flush = Instant::now();
                let mut outage = Outage::default();
                // Supervised: a panic is counted, /readyz is not ready meanwhile, and the
                // loop resumes after a backoff.
                crate::supervise::run(crate::supervise::Task::Snapshot, || {
                    let Some(w) = weak.upgrade() else {
                        return std::ops::ControlFlow::Break(());
                    };
                    std::thread::sleep(POLL);
                    match store.data_version() {
                        Err(e) => {
                            if outage.failed() {
                                tracing::error!(error = %e, stale_for_secs = w.age().as_secs(), "cannot poll the store; requests are refused with 503 store_unavailable once the key snapshot is older than [store] max_stale_secs");
                            }
                        }
                        Ok(v) if v == version => w.confirm(&mut outage),
                        // Another connection committed; reload only if it changed something
                        // the snapshot holds (most commits are audit batches).
                        Ok(v) => match store.generation().and_then(|g| {
                            if g == generation {
                                return Ok(None);
                            }
                            Snapshot::load(&store, &ring, Some(&w.get())).map(|s| Some((g, s)))
                        }) {
                            Ok(None) => {
                                version = v;
                                w.confirm(&mut outage);
                            }
                            Ok(Some((g, s))) => {
                                version = v;
                                generation = g;
                                if !w.install(g, s) {
                                    // Older than the snapshot in use: a load through the
                                    // admin API overtook this one, unless the store's
                                    // generation itself went back (a restored database):
                                    // then what the store holds now is what counts.
                                    let now = store.generation().unwrap_or(i64::MAX);
                                    if now < w.generation() {
                                        tracing::warn!(generation = now, "the store's change counter went back (a restored database?); reloading the key snapshot from it");
                                        match Snapshot::load(&store, &ring, Some(&w.get())) {
                                            Ok(s) => w.force(now, s),
                                            Err(e) => tracing::error!(error = %e, "cannot reload the key snapshot"),
                                        }
                                    }
                                }
                                tracing::debug!("key snapshot reloaded");
                                w.confirm(&mut outage);
                            }
                            Err(e) => {
                                if outage.failed() {
                                    tracing::error!(error = %e, stale_for_secs = w.age().as_secs(), "cannot reload the key snapshot; keeping the previous one, and refusing requests with 503 store_unavailable once it is older than [store] max_stale_secs");
                                }
                            }
                        },
                    }
                    if last_flush.elapsed() >= FLUSH {
                        last_flush = Instant::now();
                        let ids = w.get().take_used();
                        if !ids.is_empty() {
                            if let Err(e) = store.touch_keys(&ids, store::Timestamp::now()) {
                                tracing::warn!(error = %e, "cannot record key last-used times");
                            }
                        }
                    }
                    std::ops::ControlFlow::Continue(())
                });
            })
            .map_err(|source| store::Error::Io {
                path: path.clone(),
                source,
            })?;
        Ok(w)
    }

    /// How many times the snapshot was rebuilt since start.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// The snapshot is current as of now.
    fn confirm(&self, outage: &mut Outage) {
        outage.ended();
        self.last_ok_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Release);
    }

    /// Reload now through `store` (another connection of this process that just committed a
    /// change, e.g. the admin API), so the change applies before the caller answers instead of
    /// at the next poll.
    pub fn reload_with(&self, store: &Store) {
        let prev = self.get();
        match store
            .generation()
            .and_then(|g| Snapshot::load(store, &self.ring, Some(&prev)).map(|s| (g, s)))
        {
            Ok((g, s)) => {
                self.install(g, s);
            }
            Err(e) => tracing::error!(error = %e, "cannot reload key snapshot; the next poll will"),
        }
    }

    /// Put a snapshot loaded at generation `g` in use, unless the one in use is newer: the
    /// poller's load can finish after a change made through the admin API was loaded and put
    /// in use, and must not bring a revoked key back.
    fn install(&self, g: i64, s: Snapshot) -> bool {
        if let Ok(mut cur) = self.current.write() {
            if g >= cur.0 {
                *cur = (g, Arc::new(s));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Put a snapshot in use whatever the generation of the one in use.
    fn force(&self, g: i64, s: Snapshot) {
        if let Ok(mut cur) = self.current.write() {
            *cur = (g, Arc::new(s));
            self.reloads.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The store generation the snapshot in use was loaded at.
    fn generation(&self) -> i64 {
        self.current.read().map(|c| c.0).unwrap_or(i64::MAX)
    }

    /// The current snapshot.
    pub fn get(&self) -> Arc<Snapshot> {
        self.current.read().map(|s| s.1.clone()).unwrap_or_default()
    }

    /// Whether the store was polled successfully within the last two seconds (or the watcher
    /// has just started with a fresh load).
    pub fn is_healthy(&self) -> bool {
        self.age() < Duration::from_secs(2)
    }

    /// How long ago the snapshot was last confirmed current (the store polled, and reloaded
    /// if it had changed). While reloads keep failing this grows: the snapshot in use may
    /// miss revocations made since.
    pub fn age(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ok_ms.load(Ordering::Acquire)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth;

    fn key_row(org: &str, k: &auth::NewKey) -> store::Key {
        store::Key {
            id: store::new_id(),
            org_id: org.into(),
            name: "app".into(),
            prefix: k.prefix.clone(),
            hash: k.hash.to_vec(),
            policy: crate::policy::KeyPolicy::default(),
            expires_at: None,
            revoked_at: None,
            created_at: store::Timestamp::now(),
            last_used_at: None,
        }
    }

    fn seal(s: &Store, ring: &Keyring, name: &str, secret: &str) {
        let id = s.credential_id(name).unwrap().unwrap_or_else(store::new_id);
        let now = store::Timestamp::now();
        s.put_credential(&store::Credential {
            sealed: ring.seal(secret.as_bytes(), &vault::aad("credentials", &id, name)),
            key_fp: ring.fingerprint(),
            id,
            name: name.into(),
            created_at: now,
            rotated_at: now,
            expires_at: None,
            ..Default::default()
        })
        .unwrap();
    }

    #[test]
    fn keys_and_credentials_round_trip_and_nothing_usable_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let ring = Keyring::new(&Keyring::generate(), &[]).unwrap();
        let s = Store::open(&path).unwrap();
        let org = s
            .insert_org("acme", &crate::policy::OrgPolicy::default())
            .unwrap();
        let k = auth::generate();
        let row = key_row(&org.id, &k);
        s.insert_key(&row).unwrap();
        seal(&s, &ring, "openai", "sk-proj-PROVIDER-canary-123456");
        seal(&s, &ring, "other", "sk-other-canary-654321");

        let snap = Snapshot::load(&s, &ring, None).unwrap();
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
        let snap = Snapshot::load(&s, &ring, None).unwrap();
        assert!(snap.credential(&b.name, now).is_none());
        assert!(snap.credential(&a.name, now).is_some());

        s.revoke_key(&row.id).unwrap();
        let snap = Snapshot::load(&s, &ring, None).unwrap();
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
        let org = s
            .insert_org("acme", &crate::policy::OrgPolicy::default())
            .unwrap();
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
