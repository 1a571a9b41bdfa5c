//! The only code that touches SQLite: schema, migrations and queries. WAL mode, foreign keys on,
//! a busy timeout; the file is created 0600 in a 0700 directory. Nothing stored here is a usable
//! secret: API keys are SHA-256 hashes, credentials are AES-GCM ciphertexts sealed by `vault`.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

mod audit;
mod credentials;
mod migrations;
mod oauth_flows;
mod orgs;
pub mod pack;
mod people;
mod types;
mod usage;

pub use audit::{AuditFilter, AuditRow};
pub use credentials::{Credential, ResealError, Resealed};
use migrations::MIGRATIONS;
pub use oauth_flows::{Claim, OAuthFlow};
pub use orgs::{Key, Managed, Org};
pub use people::{Removed, User};
pub use types::{CredentialType, Timestamp};
pub use usage::{UsageAdd, UsageGroup, UsageRow};

use crate::limits::{Budget, Limits, Period};
use crate::mcp::AllowList;
use crate::policy::{KeyPolicy, Mcp, OrgPolicy};

/// Store errors. Messages never contain secret material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the database schema (version {found}) is newer than this sluice knows ({known}); upgrade sluice")]
    TooNew { found: i64, known: i64 },
    #[error("{what} {name:?} already exists")]
    Duplicate { what: &'static str, name: String },
    #[error("no {what} {id:?}")]
    NotFound { what: &'static str, id: String },
}

impl Error {
    /// The disk (or `[store] max_size_mb`) is full.
    pub fn is_full(&self) -> bool {
        matches!(self, Error::Sqlite(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull))
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// A time as stored: RFC 3339 in UTC (so stored times compare as text).
pub fn utc_text(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Parse an RFC 3339 time (any offset); `None` when it is not one.
pub fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// A new UUIDv7 id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Page size of a new store. Nearly every write is the audit writer's: a batch of request
/// records of about 1 KB each, appended once per commit to the audit table and its indexes,
/// then copied from the WAL into the database by the checkpoint. 16 KB pages take that in a
/// quarter of the WAL frames and page copies (each frame is two `pwrite`s, each copied page a
/// `pread` and a `pwrite`) and pack rows with less slack than 4 KB ones: the audit writer's
/// system time per record fell by about a third and the file by a sixth (README, benchmarks).
pub const PAGE_SIZE: i64 = 16 * 1024;

impl Store {
    /// Open (creating if needed, 0700 dir / 0600 file) and migrate.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|source| Error::Io {
                        path: dir.to_path_buf(),
                        source,
                    })?;
            }
        }
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        // Create the file 0600 before SQLite does (it would follow the umask). Only when it does
        // not exist: closing any descriptor of an open database releases every POSIX lock this
        // process holds on it, including those of other connections (a second `Store` in
        // `serve`), and another process could then delete the live WAL.
        if !path.exists() {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // Before anything is written: a new store gets `PAGE_SIZE` pages. An existing store
        // keeps the page size it was created with (in WAL mode SQLite ignores this).
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Open like [`Store::open`] and cap the database at `max_bytes` (writes past it fail as
    /// on a full disk, [`Error::is_full`]).
    pub fn open_limited(path: &Path, max_bytes: Option<u64>) -> Result<Store> {
        let store = Store::open(path)?;
        if let Some(max) = max_bytes {
            let page: i64 = store
                .conn
                .pragma_query_value(None, "page_size", |r| r.get(0))?;
            let pages = (max as i64 / page.max(1)).max(1);
            store.conn.pragma_update(None, "max_page_count", pages)?;
        }
        Ok(store)
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self) -> Result<()> {
        let known = MIGRATIONS.len() as i64;
        let found: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > known {
            return Err(Error::TooNew { found, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// SQLite's `data_version`: changes whenever another connection commits.
    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .pragma_query_value(None, "data_version", |r| r.get(0))?)
    }

    /// The configuration generation: changes with every committed change to keys (but their
    /// last-used times), orgs, credentials or users. Reading it fails when the store is broken.
    pub fn generation(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT n FROM config_generation", [], |r| r.get(0))?)
    }
}

fn unique(e: rusqlite::Error, what: &'static str, name: &str) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            Error::Duplicate {
                what,
                name: name.to_string(),
            }
        }
        _ => Error::Sqlite(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn every_column_of_a_keys_policy_reloads_the_snapshot_when_changed() {
        // A key's change reaches the proxy through the generation trigger, which names the
        // columns it watches (a last-used time must not reload it): a policy column it does
        // not name (a new switch's) would be stored and never applied.
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.db")).unwrap();
        let trigger: String = s
            .conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'generation_api_keys_update'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let watched = trigger
            .split(" OF ")
            .nth(1)
            .and_then(|t| t.split(" ON ").next())
            .unwrap();
        let watched: Vec<&str> = watched.split(',').map(str::trim).collect();
        let mut st = s
            .conn
            .prepare("SELECT name FROM pragma_table_info('api_keys')")
            .unwrap();
        let columns: Vec<String> = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        // Never changed once written, or not read by the proxy.
        let unwatched = ["id", "prefix", "created_at", "last_used_at", "managed"];
        for c in &columns {
            assert_eq!(
                watched.contains(&c.as_str()),
                !unwatched.contains(&c.as_str()),
                "api_keys.{c}: {watched:?}"
            );
        }
        for name in crate::policy::SWITCH_NAMES {
            assert!(columns.iter().any(|c| c == name), "no column for {name}");
        }
    }

    #[test]
    fn creates_private_files_and_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("s.db");
        let s = Store::open(&path).unwrap();
        let eu = OrgPolicy {
            region: Some(crate::residency::Region::Eu),
            mcp: Mcp {
                tools: AllowList::parse("github:*").unwrap(),
                ..Mcp::default()
            },
            limits: Limits {
                rpm: Some(5),
                tpm: None,
                budget: Some(Budget {
                    tokens: 9,
                    period: Period::Day,
                }),
            },
            ..OrgPolicy::default()
        };
        let org = s.insert_org("acme", &eu).unwrap();
        assert_eq!(org.policy, eu, "what is stored reads back the same");
        assert!(matches!(
            s.insert_org("acme", &OrgPolicy::default()),
            Err(Error::Duplicate { .. })
        ));
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.orgs().unwrap(), vec![org]);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    fn page_size(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_store_has_large_pages_and_an_old_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.db");
        drop(Store::open(&new).unwrap());
        assert_eq!(page_size(&new), PAGE_SIZE);

        // A store created by an earlier build (4 KB pages, WAL) opens, keeps its page size,
        // and takes writes.
        let old = dir.path().join("old.db");
        {
            let c = Connection::open(&old).unwrap();
            c.pragma_update(None, "page_size", 4096).unwrap();
            c.pragma_update(None, "journal_mode", "WAL").unwrap();
            c.execute_batch("CREATE TABLE t (x); DROP TABLE t;")
                .unwrap();
        }
        assert_eq!(page_size(&old), 4096);
        let s = Store::open(&old).unwrap();
        let org = s.insert_org("acme", &OrgPolicy::default()).unwrap();
        drop(s);
        assert_eq!(page_size(&old), 4096);
        assert_eq!(Store::open(&old).unwrap().orgs().unwrap(), vec![org]);
    }

    /// A key of `org` that inherits everything.
    fn key_of(org: &str) -> Key {
        Key {
            id: new_id(),
            org_id: org.to_string(),
            name: "k".into(),
            prefix: "sk-sluice-abcd".into(),
            hash: vec![1; 32],
            policy: KeyPolicy::default(),
            expires_at: None,
            revoked_at: None,
            created_at: Timestamp::now(),
            last_used_at: None,
        }
    }

    #[test]
    fn a_policy_written_whole_reads_back_the_same() {
        // Every column the policy has, on insert and on replace, for an org and a key.
        use crate::policy::{KeySetting, Setting, Switches};
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.db")).unwrap();
        let org = s.insert_org("acme", &OrgPolicy::default()).unwrap();
        let limits = Limits {
            rpm: Some(7),
            tpm: Some(8),
            budget: Some(Budget {
                tokens: 9,
                period: Period::Month,
            }),
        };
        let want = OrgPolicy {
            region: Some(crate::residency::Region::Apac),
            switches: Switches::from_table(|_, s| match s.new_org {
                Setting::On => Setting::Off,
                Setting::Off => Setting::On,
            }),
            mcp: Mcp {
                tools: AllowList::parse("a:b").unwrap(),
                resources: AllowList::parse("r:file:///x").unwrap(),
                prompts: AllowList::parse("p:q").unwrap(),
            },
            limits,
        };
        assert_eq!(s.set_org_policy(&org.id, &want).unwrap().policy, want);
        assert_eq!(s.org(&org.id).unwrap().policy, want);
        assert!(matches!(
            s.set_org_policy("nope", &want),
            Err(Error::NotFound { what: "org", .. })
        ));
        let mut k = key_of(&org.id);
        k.policy = KeyPolicy {
            switches: Switches::from_table(|_, _| KeySetting::Off),
            mcp: Mcp {
                tools: Some(AllowList::parse("a:*").unwrap()),
                ..Mcp::default()
            },
            region: Some(crate::residency::Region::Eu),
            limits,
        };
        s.insert_key(&k).unwrap();
        assert_eq!(s.key(&k.id).unwrap().policy, k.policy);
        let want = KeyPolicy {
            switches: Switches::from_table(|_, _| KeySetting::On),
            ..KeyPolicy::default()
        };
        let got = s.set_key_policy(&k.id, &want).unwrap().policy;
        // A key's region is set when it is made.
        assert_eq!(
            got,
            KeyPolicy {
                region: k.policy.region,
                ..want.clone()
            }
        );
        assert!(matches!(
            s.set_key_policy("nope", &want),
            Err(Error::NotFound { what: "key", .. })
        ));
    }

    #[test]
    fn a_stored_policy_that_does_not_read_allows_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let s = Store::open(&path).unwrap();
        let org_policy = OrgPolicy {
            mcp: Mcp {
                tools: AllowList::parse("github:*").unwrap(),
                ..Mcp::default()
            },
            ..OrgPolicy::default()
        };
        let org = s.insert_org("acme", &org_policy).unwrap();
        let k = key_of(&org.id);
        s.insert_key(&k).unwrap();
        // Edited by hand: lists that are not lists (the schema's CHECKs keep settings and
        // periods to what sluice writes).
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "UPDATE api_keys SET mcp_tools = 'not a list';
             UPDATE orgs SET mcp_resources = 'x';",
        )
        .unwrap();
        let key = s.key(&k.id).unwrap();
        // The key's own unreadable list is an empty one, not "inherit the org's".
        assert_eq!(key.policy.mcp.tools, Some(AllowList::default()));
        let org = s.org(&org.id).unwrap();
        assert_eq!(org.policy.mcp.resources, AllowList::default());
        let r = crate::policy::resolve(&key.policy, Some(&org.policy));
        assert_eq!(r.mcp, crate::mcp::Policy::default());
    }

    #[test]
    fn the_generation_moves_with_configuration_changes_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.db")).unwrap();
        let g0 = s.generation().unwrap();
        let org = s.insert_org("acme", &OrgPolicy::default()).unwrap();
        let g1 = s.generation().unwrap();
        assert!(g1 > g0);
        let k = key_of(&org.id);
        s.insert_key(&k).unwrap();
        let g2 = s.generation().unwrap();
        assert!(g2 > g1);
        let mut s = s;
        s.touch_keys(std::slice::from_ref(&k.id), Timestamp::now())
            .unwrap();
        assert_eq!(
            s.generation().unwrap(),
            g2,
            "a last-used time is not a change"
        );
        s.revoke_key(&k.id).unwrap();
        assert!(s.generation().unwrap() > g2);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(Error::TooNew { found: 99, .. })
        ));
    }
}
