//! The only code that touches SQLite: schema, migrations and queries. WAL mode, foreign keys on,
//! a busy timeout; the file is created 0600 in a 0700 directory. Nothing stored here is a usable
//! secret: API keys are SHA-256 hashes, credentials are AES-GCM ciphertexts sealed by `vault`.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

mod oauth_flows;
mod people;
mod types;

pub use oauth_flows::{Claim, OAuthFlow};
pub use people::{Removed, User};
pub use types::{KeyPii, KeySetting, Pii, Role, Setting, Timestamp};

use crate::residency::Region;

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

const MIGRATIONS: &[&str] = &[
    // 1: orgs, API keys, credentials.
    "CREATE TABLE orgs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        region TEXT,
        pii TEXT NOT NULL DEFAULT 'on' CHECK (pii IN ('on','off')),
        created_at TEXT NOT NULL
     );
     CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        hash BLOB NOT NULL UNIQUE,
        pii TEXT NOT NULL DEFAULT 'inherit' CHECK (pii IN ('on','off','inherit')),
        region TEXT,
        rpm INTEGER,
        expires_at TEXT,
        revoked_at TEXT,
        created_at TEXT NOT NULL,
        last_used_at TEXT
     );
     CREATE INDEX api_keys_org ON api_keys(org_id);
     CREATE TABLE credentials (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        sealed BLOB NOT NULL,
        key_fp TEXT NOT NULL,
        created_at TEXT NOT NULL,
        rotated_at TEXT NOT NULL,
        expires_at TEXT
     );",
    // 2: the audit log: append-only (triggers), hash-chained (see `audit`).
    "CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        action TEXT NOT NULL,
        actor TEXT NOT NULL,
        org_id TEXT,
        target_id TEXT,
        source_ip TEXT,
        user_agent TEXT,
        request_id TEXT,
        outcome TEXT NOT NULL,
        details TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
     );
     CREATE INDEX audit_org ON audit(org_id, seq);
     CREATE INDEX audit_at ON audit(at);
     CREATE TABLE audit_prune_gate (open INTEGER NOT NULL);
     CREATE TABLE audit_exports (through_seq INTEGER NOT NULL, at TEXT NOT NULL);
     CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
       BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
     CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
       WHEN NOT EXISTS (SELECT 1 FROM audit_prune_gate)
       BEGIN SELECT RAISE(ABORT, 'audit records are append-only; use sluice audit prune'); END;",
    // 3: people (the admin plane) and per-org data keys (crypto-shredding of audit details).
    "CREATE TABLE users (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL UNIQUE COLLATE NOCASE,
        org_id TEXT REFERENCES orgs(id) ON DELETE CASCADE,
        role TEXT CHECK (role IN ('owner','admin','auditor','member')),
        operator INTEGER NOT NULL DEFAULT 0 CHECK (operator IN (0,1)),
        password_hash TEXT NOT NULL,
        totp_sealed BLOB,
        totp_last_step INTEGER NOT NULL DEFAULT 0,
        session_epoch INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        password_changed_at TEXT NOT NULL,
        CHECK ((operator = 1 AND org_id IS NULL AND role IS NULL)
            OR (operator = 0 AND org_id IS NOT NULL AND role IS NOT NULL))
     );
     CREATE INDEX users_org ON users(org_id);
     CREATE TABLE recovery_codes (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        lookup TEXT NOT NULL,
        hash TEXT NOT NULL,
        used_at TEXT,
        PRIMARY KEY (user_id, lookup)
     );
     CREATE TABLE org_keys (
        org_id TEXT PRIMARY KEY REFERENCES orgs(id) ON DELETE CASCADE,
        sealed BLOB NOT NULL,
        key_fp TEXT NOT NULL,
        created_at TEXT NOT NULL
     );",
    // 4: secrets detection and response redaction policies, per org and per key.
    "ALTER TABLE orgs ADD COLUMN secrets TEXT NOT NULL DEFAULT 'on'
        CHECK (secrets IN ('on','off'));
     ALTER TABLE orgs ADD COLUMN response_redaction TEXT NOT NULL DEFAULT 'off'
        CHECK (response_redaction IN ('on','off'));
     ALTER TABLE api_keys ADD COLUMN secrets TEXT NOT NULL DEFAULT 'inherit'
        CHECK (secrets IN ('on','off','inherit'));
     ALTER TABLE api_keys ADD COLUMN response_redaction TEXT NOT NULL DEFAULT 'inherit'
        CHECK (response_redaction IN ('on','off','inherit'));",
    // 5: a generation counter bumped by every change the in-memory snapshots depend on (keys
    // but their last-used time, orgs, credentials, users), so they reload on those only and
    // not on every audit batch (which also changes SQLite's data_version).
    "CREATE TABLE config_generation (n INTEGER NOT NULL);
     INSERT INTO config_generation (n) VALUES (0);
     CREATE TRIGGER generation_orgs_insert AFTER INSERT ON orgs
       BEGIN UPDATE config_generation SET n = n + 1; END;
     CREATE TRIGGER generation_orgs_update AFTER UPDATE ON orgs
       BEGIN UPDATE config_generation SET n = n + 1; END;
     CREATE TRIGGER generation_orgs_delete AFTER DELETE ON orgs
       BEGIN UPDATE config_generation SET n = n + 1; END;
     CREATE TRIGGER generation_credentials_insert AFTER INSERT ON credentials
       BEGIN UPDATE config_generation SET n = n + 1; END;
     CREATE TRIGGER generation_credentials_update AFTER UPDATE ON credentials
       BEGIN UPDATE config_generation SET n = n + 1; END;
     CREATE TRIGGER generation_credentials_delete AFTER DELETE ON credentials
       BEGIN UPDATE config_generation SET n = n + 1; END;
     CREATE TRIGGER generation_users_insert AFTER INSERT ON users
       BEGIN UPDATE config_generation SET n = n + 1; END;
     CREATE TRIGGER generation_users_update AFTER UPDATE ON users
       BEGIN UPDATE config_generation SET n = n + 1; END;
     CREATE TRIGGER generation_users_delete AFTER DELETE ON users
       BEGIN UPDATE config_generation SET n = n + 1; END;
     CREATE TRIGGER generation_api_keys_insert AFTER INSERT ON api_keys
       BEGIN UPDATE config_generation SET n = n + 1; END;
     CREATE TRIGGER generation_api_keys_delete AFTER DELETE ON api_keys
       BEGIN UPDATE config_generation SET n = n + 1; END;
     CREATE TRIGGER generation_api_keys_update
       AFTER UPDATE OF org_id, name, hash, pii, region, rpm, expires_at, revoked_at, secrets,
         response_redaction ON api_keys
       BEGIN UPDATE config_generation SET n = n + 1; END;",
    // 6: MCP allow-lists (tools, resources, prompts): an org's are its keys' default ('' allows
    // nothing); a key's NULL inherits the org's.
    "ALTER TABLE orgs ADD COLUMN mcp_tools TEXT NOT NULL DEFAULT '';
     ALTER TABLE orgs ADD COLUMN mcp_resources TEXT NOT NULL DEFAULT '';
     ALTER TABLE orgs ADD COLUMN mcp_prompts TEXT NOT NULL DEFAULT '';
     ALTER TABLE api_keys ADD COLUMN mcp_tools TEXT;
     ALTER TABLE api_keys ADD COLUMN mcp_resources TEXT;
     ALTER TABLE api_keys ADD COLUMN mcp_prompts TEXT;
     DROP TRIGGER generation_api_keys_update;
     CREATE TRIGGER generation_api_keys_update
       AFTER UPDATE OF org_id, name, hash, pii, region, rpm, expires_at, revoked_at, secrets,
         response_redaction, mcp_tools, mcp_resources, mcp_prompts ON api_keys
       BEGIN UPDATE config_generation SET n = n + 1; END;",
    // 7: OAuth credentials. `sealed` holds the client secret (or refresh token); the current
    // access token is `token_sealed` (sealed too) with its expiry; `oauth` holds the settings
    // (no secret); `last_error` a code; `refresh_lease_until` (unix seconds) marks a refresh under
    // way, so processes sharing the file never spend one refresh token twice.
    "ALTER TABLE credentials ADD COLUMN kind TEXT NOT NULL DEFAULT 'static'
        CHECK (kind IN ('static','oauth'));
     ALTER TABLE credentials ADD COLUMN oauth TEXT;
     ALTER TABLE credentials ADD COLUMN token_sealed BLOB;
     ALTER TABLE credentials ADD COLUMN token_expires_at TEXT;
     ALTER TABLE credentials ADD COLUMN token_obtained_at TEXT;
     ALTER TABLE credentials ADD COLUMN refresh_failures INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE credentials ADD COLUMN last_error TEXT;
     ALTER TABLE credentials ADD COLUMN refresh_lease_until INTEGER;",
    // 8: rate limits and token budgets: per org (rpm, tpm, budget) and per key (tpm, budget;
    // a key's rpm exists since 1). NULL: unlimited.
    "ALTER TABLE orgs ADD COLUMN rpm INTEGER CHECK (rpm IS NULL OR rpm > 0);
     ALTER TABLE orgs ADD COLUMN tpm INTEGER CHECK (tpm IS NULL OR tpm > 0);
     ALTER TABLE orgs ADD COLUMN budget_tokens INTEGER CHECK (budget_tokens IS NULL OR budget_tokens > 0);
     ALTER TABLE orgs ADD COLUMN budget_period TEXT
        CHECK (budget_period IS NULL OR budget_period IN ('day','month'));
     ALTER TABLE api_keys ADD COLUMN tpm INTEGER CHECK (tpm IS NULL OR tpm > 0);
     ALTER TABLE api_keys ADD COLUMN budget_tokens INTEGER
        CHECK (budget_tokens IS NULL OR budget_tokens > 0);
     ALTER TABLE api_keys ADD COLUMN budget_period TEXT
        CHECK (budget_period IS NULL OR budget_period IN ('day','month'));
     DROP TRIGGER generation_api_keys_update;
     CREATE TRIGGER generation_api_keys_update
       AFTER UPDATE OF org_id, name, hash, pii, region, rpm, expires_at, revoked_at, secrets,
         response_redaction, mcp_tools, mcp_resources, mcp_prompts, tpm, budget_tokens,
         budget_period ON api_keys
       BEGIN UPDATE config_generation SET n = n + 1; END;",
    // 9: rows owned by a declarative bundle (`sluice apply`, `[fleet] bundle`): only those are
    // changed or revoked when the bundle no longer has them.
    "ALTER TABLE orgs ADD COLUMN managed INTEGER NOT NULL DEFAULT 0 CHECK (managed IN (0,1));
     ALTER TABLE api_keys ADD COLUMN managed INTEGER NOT NULL DEFAULT 0 CHECK (managed IN (0,1));",
    // 10: users a bundle owns.
    "ALTER TABLE users ADD COLUMN managed INTEGER NOT NULL DEFAULT 0 CHECK (managed IN (0,1));",
    // Keys a bundle revoked (not a person): listed again, they come back.
    "CREATE TABLE bundle_revoked (key_id TEXT PRIMARY KEY REFERENCES api_keys(id) ON DELETE CASCADE);",
    // 12: OAuth credentials connected with the authorization code grant (`sluice credentials
    // connect`): `connect` holds how (issuer, client authentication, revocation endpoint; no
    // secret), `client_sealed` the client secret (sealed); `oauth_flows` the connects under way:
    // the state as a SHA-256 digest, the PKCE verifier and client secret sealed, who started it,
    // when it expires, and its outcome once used (rows are kept a day for `connect` to read).
    "ALTER TABLE credentials ADD COLUMN connect TEXT;
     ALTER TABLE credentials ADD COLUMN client_sealed BLOB;
     CREATE TABLE oauth_flows (
        id TEXT PRIMARY KEY,
        state_hash TEXT NOT NULL UNIQUE,
        credential TEXT NOT NULL,
        actor TEXT NOT NULL,
        plan TEXT NOT NULL,
        verifier_sealed BLOB,
        client_sealed BLOB,
        key_fp TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER,
        outcome TEXT
     );",
];

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// An org row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub region: Option<Region>,
    pub pii: Pii,
    /// Secret detection.
    pub secrets: Setting,
    /// Redaction of responses.
    pub response_redaction: Setting,
    pub created_at: Timestamp,
    /// MCP allow-lists, the default of the org's keys (`server:name,...`; empty: nothing).
    pub mcp_tools: String,
    pub mcp_resources: String,
    pub mcp_prompts: String,
    /// Requests per minute of all the org's keys together (`None`: unlimited).
    pub rpm: Option<u32>,
    /// Tokens per minute of all the org's keys together.
    pub tpm: Option<u32>,
    /// A token budget per `budget_period` (`day` or `month`).
    pub budget_tokens: Option<u64>,
    pub budget_period: Option<String>,
}

/// The tables whose rows a bundle can own.
#[derive(Debug, Clone, Copy)]
pub enum Managed {
    Org,
    Key,
    User,
}

/// A change to a limit: `None` keeps it, `Some(None)` removes it.
pub type LimitChange<T> = Option<Option<T>>;

/// The settings of a new org (or the changes to one: `None` keeps the current value).
#[derive(Debug, Clone, Default)]
pub struct OrgSettings<'a> {
    pub region: Option<Region>,
    pub pii: Option<Pii>,
    pub secrets: Option<Setting>,
    pub response_redaction: Option<Setting>,
    pub mcp_tools: Option<&'a str>,
    pub mcp_resources: Option<&'a str>,
    pub mcp_prompts: Option<&'a str>,
    pub rpm: LimitChange<u32>,
    pub tpm: LimitChange<u32>,
    /// Tokens and period (`day` or `month`).
    pub budget: LimitChange<(u64, &'a str)>,
}

/// Changes to a key (`None` keeps the current value; for the MCP lists `Some(None)` makes the
/// key inherit its org's again).
#[derive(Debug, Clone, Default)]
pub struct KeyChanges<'a> {
    pub pii: Option<KeyPii>,
    pub secrets: Option<KeySetting>,
    pub response_redaction: Option<KeySetting>,
    pub mcp_tools: Option<Option<&'a str>>,
    pub mcp_resources: Option<Option<&'a str>>,
    pub mcp_prompts: Option<Option<&'a str>>,
    pub rpm: LimitChange<u32>,
    pub tpm: LimitChange<u32>,
    pub budget: LimitChange<(u64, &'a str)>,
}

/// An API key row (the hash is never returned to callers outside the snapshot loader).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Key {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub prefix: String,
    #[serde(skip)]
    pub hash: Vec<u8>,
    pub pii: KeyPii,
    pub secrets: KeySetting,
    pub response_redaction: KeySetting,
    /// MCP allow-lists; `None` inherits the org's.
    pub mcp_tools: Option<String>,
    pub mcp_resources: Option<String>,
    pub mcp_prompts: Option<String>,
    pub region: Option<Region>,
    pub rpm: Option<u32>,
    /// Tokens per minute (`None`: unlimited).
    pub tpm: Option<u32>,
    /// A token budget per `budget_period` (`day` or `month`).
    pub budget_tokens: Option<u64>,
    pub budget_period: Option<String>,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

/// A credential re-sealed by `secrets rotate`.
pub struct Resealed {
    pub sealed: Vec<u8>,
    pub key_fp: String,
    /// An OAuth credential's current access token, re-sealed (`None`: none yet).
    pub token_sealed: Option<Vec<u8>>,
    /// A connected credential's client secret, re-sealed (`None`: none).
    pub client_sealed: Option<Vec<u8>>,
}

/// A credential row; `sealed` is the vault ciphertext.
#[derive(Clone, PartialEq, serde::Serialize, Default)]
pub struct Credential {
    pub id: String,
    pub name: String,
    #[serde(skip)]
    pub sealed: Vec<u8>,
    pub key_fp: String,
    pub created_at: Timestamp,
    pub rotated_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// `static` (the secret is the credential) or `oauth` (the secret obtains tokens).
    pub kind: String,
    /// OAuth: the settings (token URL, client id, scope, resource, grant) as JSON; no secret.
    pub oauth: Option<String>,
    /// OAuth: the current access token, sealed.
    #[serde(skip)]
    pub token_sealed: Option<Vec<u8>>,
    pub token_expires_at: Option<Timestamp>,
    pub token_obtained_at: Option<Timestamp>,
    pub refresh_failures: i64,
    /// OAuth: the code of the last failed refresh (cleared by a good one).
    pub last_error: Option<String>,
    /// OAuth, connected with the authorization code grant: how (JSON, no secret).
    pub connect: Option<String>,
    /// OAuth, connected: the client secret, sealed (`None`: a public client).
    #[serde(skip)]
    pub client_sealed: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("sealed", &"<ciphertext>")
            .field("key_fp", &self.key_fp)
            .finish()
    }
}

/// The current time, RFC 3339 UTC.
pub fn now() -> String {
    utc_text(time::OffsetDateTime::now_utc())
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

    // ---- orgs ----

    /// Create an org; unset settings take the schema's defaults (PII on, secrets on, response
    /// redaction off).
    pub fn insert_org(&self, name: &str, settings: &OrgSettings) -> Result<Org> {
        let id = new_id();
        self.conn
            .execute(
                "INSERT INTO orgs (id, name, region, pii, secrets, response_redaction, created_at,
                   mcp_tools, mcp_resources, mcp_prompts, rpm, tpm, budget_tokens, budget_period)
                 VALUES (?1, ?2, ?3, COALESCE(?4, 'on'), COALESCE(?5, 'on'), COALESCE(?6, 'off'), ?7,
                   COALESCE(?8, ''), COALESCE(?9, ''), COALESCE(?10, ''), ?11, ?12, ?13, ?14)",
                params![
                    id,
                    name,
                    settings.region,
                    settings.pii,
                    settings.secrets,
                    settings.response_redaction,
                    now(),
                    settings.mcp_tools,
                    settings.mcp_resources,
                    settings.mcp_prompts,
                    settings.rpm.flatten(),
                    settings.tpm.flatten(),
                    settings.budget.flatten().map(|b| b.0 as i64),
                    settings.budget.flatten().map(|b| b.1),
                ],
            )
            .map_err(|e| unique(e, "org", name))?;
        self.org(&id)
    }

    /// Every org, oldest first.
    pub fn orgs(&self) -> Result<Vec<Org>> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {ORG_COLS} FROM orgs ORDER BY id"))?;
        let rows = st.query_map([], org_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One org.
    pub fn org(&self, id: &str) -> Result<Org> {
        self.conn
            .query_row(
                &format!("SELECT {ORG_COLS} FROM orgs WHERE id = ?1"),
                [id],
                org_row,
            )
            .optional()?
            .ok_or_else(|| Error::NotFound {
                what: "org",
                id: id.to_string(),
            })
    }

    /// Change an org's settings (those given).
    pub fn update_org(&self, id: &str, s: &OrgSettings) -> Result<Org> {
        let n = self.conn.execute(
            "UPDATE orgs SET region = COALESCE(?2, region), pii = COALESCE(?3, pii),
               secrets = COALESCE(?4, secrets), response_redaction = COALESCE(?5, response_redaction),
               mcp_tools = COALESCE(?6, mcp_tools), mcp_resources = COALESCE(?7, mcp_resources),
               mcp_prompts = COALESCE(?8, mcp_prompts),
               rpm = CASE WHEN ?9 THEN ?10 ELSE rpm END,
               tpm = CASE WHEN ?11 THEN ?12 ELSE tpm END,
               budget_tokens = CASE WHEN ?13 THEN ?14 ELSE budget_tokens END,
               budget_period = CASE WHEN ?13 THEN ?15 ELSE budget_period END
             WHERE id = ?1",
            params![
                id,
                s.region,
                s.pii,
                s.secrets,
                s.response_redaction,
                s.mcp_tools,
                s.mcp_resources,
                s.mcp_prompts,
                s.rpm.is_some(),
                s.rpm.flatten(),
                s.tpm.is_some(),
                s.tpm.flatten(),
                s.budget.is_some(),
                s.budget.flatten().map(|b| b.0 as i64),
                s.budget.flatten().map(|b| b.1),
            ],
        )?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "org",
                id: id.to_string(),
            });
        }
        self.org(id)
    }

    // ---- API keys ----

    /// Insert a key (its hash and display prefix; the key itself is never stored).
    pub fn insert_key(&self, k: &Key) -> Result<()> {
        self.org(&k.org_id)?;
        self.conn.execute(
            "INSERT INTO api_keys (id, org_id, name, prefix, hash, pii, region, rpm, expires_at, created_at,
               secrets, response_redaction, mcp_tools, mcp_resources, mcp_prompts, tpm, budget_tokens,
               budget_period)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            params![k.id, k.org_id, k.name, k.prefix, k.hash, k.pii, k.region, k.rpm, k.expires_at, k.created_at,
                k.secrets, k.response_redaction, k.mcp_tools, k.mcp_resources, k.mcp_prompts, k.tpm,
                k.budget_tokens.map(|b| b as i64), k.budget_period],
        )?;
        Ok(())
    }

    /// Keys, optionally of one org, oldest first.
    pub fn keys(&self, org: Option<&str>) -> Result<Vec<Key>> {
        let mut st = self.conn.prepare(
            "SELECT id, org_id, name, prefix, hash, pii, region, rpm, expires_at, revoked_at, created_at, last_used_at,
               secrets, response_redaction, mcp_tools, mcp_resources, mcp_prompts, tpm, budget_tokens,
               budget_period
             FROM api_keys WHERE (?1 IS NULL OR org_id = ?1) ORDER BY id",
        )?;
        let rows = st.query_map([org], key_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Change a key's settings (those given).
    pub fn update_key(&self, id: &str, c: &KeyChanges) -> Result<Key> {
        // A list given as Some(None) goes back to NULL (inherit); not given keeps it.
        let (t_set, t) = (c.mcp_tools.is_some(), c.mcp_tools.flatten());
        let (r_set, r) = (c.mcp_resources.is_some(), c.mcp_resources.flatten());
        let (p_set, pr) = (c.mcp_prompts.is_some(), c.mcp_prompts.flatten());
        let n = self.conn.execute(
            "UPDATE api_keys SET pii = COALESCE(?2, pii), secrets = COALESCE(?3, secrets),
               response_redaction = COALESCE(?4, response_redaction),
               mcp_tools = CASE WHEN ?5 THEN ?6 ELSE mcp_tools END,
               mcp_resources = CASE WHEN ?7 THEN ?8 ELSE mcp_resources END,
               mcp_prompts = CASE WHEN ?9 THEN ?10 ELSE mcp_prompts END,
               rpm = CASE WHEN ?11 THEN ?12 ELSE rpm END,
               tpm = CASE WHEN ?13 THEN ?14 ELSE tpm END,
               budget_tokens = CASE WHEN ?15 THEN ?16 ELSE budget_tokens END,
               budget_period = CASE WHEN ?15 THEN ?17 ELSE budget_period END
             WHERE id = ?1",
            params![
                id,
                c.pii,
                c.secrets,
                c.response_redaction,
                t_set,
                t,
                r_set,
                r,
                p_set,
                pr,
                c.rpm.is_some(),
                c.rpm.flatten(),
                c.tpm.is_some(),
                c.tpm.flatten(),
                c.budget.is_some(),
                c.budget.flatten().map(|b| b.0 as i64),
                c.budget.flatten().map(|b| b.1),
            ],
        )?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "key",
                id: id.to_string(),
            });
        }
        self.keys(None)?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or_else(|| Error::NotFound {
                what: "key",
                id: id.to_string(),
            })
    }

    /// Revoke a key (idempotent on an already revoked key).
    pub fn revoke_key(&self, id: &str) -> Result<()> {
        // A person's revocation stands, even of a key a bundle had revoked before.
        self.conn
            .execute("DELETE FROM bundle_revoked WHERE key_id = ?1", [id])?;
        let n = self.conn.execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
            params![id, now()],
        )?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "key",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    /// Mark a row as owned by the bundle (`sluice apply`).
    /// Revoke a key the bundle no longer lists: listed again, it can come back.
    pub fn revoke_key_for_bundle(&self, id: &str) -> Result<()> {
        self.revoke_key(id)?;
        self.conn.execute(
            "INSERT OR IGNORE INTO bundle_revoked (key_id) VALUES (?1)",
            [id],
        )?;
        Ok(())
    }

    /// Whether a key is revoked because a bundle stopped listing it (not by a person).
    pub fn is_bundle_revoked(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM bundle_revoked WHERE key_id = ?1",
                [id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Bring back a key a bundle revoked and lists again. `false`: it was not revoked by a
    /// bundle (a person's revocation stands).
    pub fn restore_bundle_key(&self, id: &str) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE api_keys SET revoked_at = NULL
             WHERE id = ?1 AND id IN (SELECT key_id FROM bundle_revoked)",
            [id],
        )?;
        self.conn
            .execute("DELETE FROM bundle_revoked WHERE key_id = ?1", [id])?;
        Ok(n == 1)
    }

    pub fn set_managed(&self, table: Managed, id: &str) -> Result<()> {
        let sql = match table {
            Managed::Org => "UPDATE orgs SET managed = 1 WHERE id = ?1 AND managed = 0",
            Managed::Key => "UPDATE api_keys SET managed = 1 WHERE id = ?1 AND managed = 0",
            Managed::User => "UPDATE users SET managed = 1 WHERE id = ?1 AND managed = 0",
        };
        self.conn.execute(sql, [id])?;
        Ok(())
    }

    /// The ids of the rows the bundle owns.
    pub fn managed(&self, table: Managed) -> Result<std::collections::HashSet<String>> {
        let sql = match table {
            Managed::Org => "SELECT id FROM orgs WHERE managed = 1",
            Managed::Key => "SELECT id FROM api_keys WHERE managed = 1",
            Managed::User => "SELECT id FROM users WHERE managed = 1",
        };
        let mut st = self.conn.prepare(sql)?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Record last-used times, in one transaction.
    pub fn touch_keys(&mut self, ids: &[String], at: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare("UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1")?;
            for id in ids {
                st.execute(params![id, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    // ---- credentials ----

    /// Every credential row.
    pub fn credentials(&self) -> Result<Vec<Credential>> {
        let mut st = self.conn.prepare(
            "SELECT id, name, sealed, key_fp, created_at, rotated_at, expires_at, kind, oauth,
               token_sealed, token_expires_at, token_obtained_at, refresh_failures, last_error,
               connect, client_sealed
             FROM credentials ORDER BY name",
        )?;
        let rows = st.query_map([], cred_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The id a credential named `name` has, or will have if created now.
    pub fn credential_id(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT id FROM credentials WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Insert or replace a credential's ciphertext.
    pub fn put_credential(&self, c: &Credential) -> Result<()> {
        self.conn.execute(
            "INSERT INTO credentials (id, name, sealed, key_fp, created_at, rotated_at, expires_at,
               kind, oauth, connect, client_sealed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, COALESCE(NULLIF(?8, ''), 'static'), ?9, ?10, ?11)
             ON CONFLICT(name) DO UPDATE SET sealed = excluded.sealed, key_fp = excluded.key_fp,
               rotated_at = excluded.rotated_at, expires_at = excluded.expires_at,
               kind = excluded.kind, oauth = excluded.oauth, token_sealed = NULL,
               token_expires_at = NULL, token_obtained_at = NULL, refresh_failures = 0,
               last_error = NULL, connect = excluded.connect,
               client_sealed = excluded.client_sealed",
            params![
                c.id,
                c.name,
                c.sealed,
                c.key_fp,
                c.created_at,
                c.rotated_at,
                c.expires_at,
                c.kind,
                c.oauth,
                c.connect,
                c.client_sealed
            ],
        )?;
        Ok(())
    }

    /// Store a new access token for OAuth credential `id` (sealed), and the new sealed secret
    /// when the token endpoint rotated the refresh token, in one statement: a rotated refresh
    /// token is never lost.
    pub fn set_oauth_token(
        &self,
        id: &str,
        token_sealed: &[u8],
        expires_at: &str,
        rotated_secret: Option<(&[u8], &str)>,
    ) -> Result<()> {
        let (secret, fp) = rotated_secret.unzip();
        self.conn.execute(
            "UPDATE credentials SET token_sealed = ?2, token_expires_at = ?3,
               token_obtained_at = ?4, refresh_failures = 0, last_error = NULL,
               sealed = COALESCE(?5, sealed), key_fp = COALESCE(?6, key_fp),
               refresh_lease_until = NULL
             WHERE id = ?1 AND kind = 'oauth'",
            params![id, token_sealed, expires_at, now(), secret, fp],
        )?;
        Ok(())
    }

    /// Note a failed refresh of OAuth credential `id` (`code` is a short stable code).
    pub fn oauth_failed(&self, id: &str, code: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE credentials SET refresh_failures = refresh_failures + 1, last_error = ?2,
               refresh_lease_until = NULL
             WHERE id = ?1",
            params![id, code],
        )?;
        Ok(())
    }

    /// Claim the refresh of OAuth credential `id` for `secs` seconds, if nobody holds the claim
    /// and its token is still the one obtained at `obtained` (`None`: none yet). `false`:
    /// another process refreshes it, or already did.
    pub fn lease_oauth_refresh(
        &self,
        id: &str,
        obtained: Option<Timestamp>,
        secs: u64,
    ) -> Result<bool> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let n = self.conn.execute(
            "UPDATE credentials SET refresh_lease_until = ?2
             WHERE id = ?1 AND kind = 'oauth' AND token_obtained_at IS ?3
               AND (refresh_lease_until IS NULL OR refresh_lease_until < ?4)",
            params![id, now + secs as i64, obtained, now],
        )?;
        Ok(n == 1)
    }

    /// Delete a credential.
    pub fn delete_credential(&self, name: &str) -> Result<()> {
        let n = self
            .conn
            .execute("DELETE FROM credentials WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "credential",
                id: name.to_string(),
            });
        }
        Ok(())
    }

    /// Run `f` over every credential; each result replaces that row's ciphertext and key
    /// fingerprint. Call inside [`Store::atomically`] so that it is all or nothing.
    pub fn reseal_credentials<E>(
        &self,
        mut f: impl FnMut(&Credential) -> std::result::Result<Resealed, E>,
    ) -> std::result::Result<usize, ResealError<E>> {
        let rows = self.credentials().map_err(ResealError::Store)?;
        for c in &rows {
            let r = f(c).map_err(ResealError::Seal)?;
            self.conn
                .execute(
                    "UPDATE credentials SET sealed = ?2, key_fp = ?3, token_sealed = ?4,
                       client_sealed = ?5 WHERE id = ?1",
                    params![c.id, r.sealed, r.key_fp, r.token_sealed, r.client_sealed],
                )
                .map_err(|e| ResealError::Store(e.into()))?;
        }
        Ok(rows.len())
    }

    /// Run `f` in one write transaction (`BEGIN IMMEDIATE`: concurrent writers, including other
    /// processes, wait their turn). Committed when `f` returns `Ok`, rolled back otherwise.
    /// Not reentrant.
    pub fn atomically<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Store) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| E::from(e.into()))?;
        match f(self) {
            Ok(v) => {
                if let Err(e) = self.conn.execute_batch("COMMIT") {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(E::from(e.into()));
                }
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    // ---- audit ----

    /// The last record's sequence number and hash (`None` for an empty log).
    pub fn audit_tail(&self) -> Result<Option<(i64, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Insert a complete (already hashed) record. Call inside [`Store::atomically`], after
    /// reading [`Store::audit_tail`] in the same transaction.
    pub fn insert_audit(&self, a: &AuditRow) -> Result<()> {
        // Cached: the writer inserts thousands of rows a second under load.
        self.conn
            .prepare_cached(
                "INSERT INTO audit (seq, id, at, kind, action, actor, org_id, target_id, source_ip,
                   user_agent, request_id, outcome, details, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?
            .execute(params![
                a.seq,
                a.id,
                a.at,
                a.kind,
                a.action,
                a.actor,
                a.org_id,
                a.target_id,
                a.source_ip,
                a.user_agent,
                a.request_id,
                a.outcome,
                a.details,
                a.prev_hash,
                a.hash
            ])?;
        Ok(())
    }

    /// Records after `after_seq`, oldest first, optionally of one org and since a time.
    pub fn audit_rows(
        &self,
        after_seq: i64,
        org: Option<&str>,
        since: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRow>> {
        let f = AuditFilter {
            org,
            since,
            ..AuditFilter::default()
        };
        self.audit_page(after_seq, &f, limit)
    }

    /// Records after `after_seq`, oldest first, matching every filter that is set.
    pub fn audit_page(&self, after_seq: i64, f: &AuditFilter, limit: i64) -> Result<Vec<AuditRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, id, at, kind, action, actor, org_id, target_id, source_ip, user_agent,
                    request_id, outcome, details, prev_hash, hash
             FROM audit WHERE seq > ?1 AND (?2 IS NULL OR org_id = ?2) AND (?3 IS NULL OR at >= ?3)
               AND (?4 IS NULL OR action = ?4) AND (?5 IS NULL OR actor = ?5)
               AND (?6 IS NULL OR outcome = ?6)
             ORDER BY seq LIMIT ?7",
        )?;
        let rows = st.query_map(
            params![after_seq, f.org, f.since, f.action, f.actor, f.outcome, limit],
            audit_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The seq after which the last `n` records (optionally of one org) start.
    pub fn audit_seq_before_last(&self, n: i64, org: Option<&str>) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(MIN(seq) - 1, 0) FROM (SELECT seq FROM audit
               WHERE (?1 IS NULL OR org_id = ?1) ORDER BY seq DESC LIMIT ?2)",
            params![org, n],
            |r| r.get(0),
        )?)
    }

    /// The last record strictly before `before` (RFC 3339): its seq and hash.
    pub fn audit_last_before(&self, before: &str) -> Result<Option<(i64, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq, hash FROM audit WHERE at < ?1 AND kind != 'checkpoint' ORDER BY seq DESC LIMIT 1",
                [before],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Delete records up to `through_seq` (inside [`Store::atomically`]); the triggers allow it
    /// only while the prune gate is open, which this does for its own statement only.
    pub fn delete_audit_through(&self, through_seq: i64) -> Result<usize> {
        self.conn
            .execute("INSERT INTO audit_prune_gate (open) VALUES (1)", [])?;
        let n = self
            .conn
            .execute("DELETE FROM audit WHERE seq <= ?1", [through_seq])?;
        self.conn.execute("DELETE FROM audit_prune_gate", [])?;
        Ok(n)
    }

    /// Note that records through `seq` were exported.
    pub fn mark_audit_exported(&self, seq: i64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO audit_exports (through_seq, at) VALUES (?1, ?2)",
            params![seq, now()],
        )?;
        Ok(())
    }

    /// The highest exported seq (0 when nothing was exported).
    pub fn audit_exported_through(&self) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(MAX(through_seq), 0) FROM audit_exports",
            [],
            |r| r.get(0),
        )?)
    }
}

/// Filters for [`Store::audit_page`]; `None` matches everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct AuditFilter<'a> {
    pub org: Option<&'a str>,
    /// RFC 3339 UTC: records at or after it.
    pub since: Option<&'a str>,
    pub action: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub outcome: Option<&'a str>,
}

/// One stored audit record. `details` is a JSON object; `hash` chains it to `prev_hash`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditRow {
    pub seq: i64,
    pub id: String,
    pub at: String,
    pub kind: String,
    pub action: String,
    pub actor: String,
    pub org_id: Option<String>,
    pub target_id: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub outcome: String,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Why resealing failed (nothing was changed).
#[derive(Debug)]
pub enum ResealError<E> {
    Store(Error),
    Seal(E),
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

fn audit_row(r: &rusqlite::Row) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        at: r.get(2)?,
        kind: r.get(3)?,
        action: r.get(4)?,
        actor: r.get(5)?,
        org_id: r.get(6)?,
        target_id: r.get(7)?,
        source_ip: r.get(8)?,
        user_agent: r.get(9)?,
        request_id: r.get(10)?,
        outcome: r.get(11)?,
        details: r.get(12)?,
        prev_hash: r.get(13)?,
        hash: r.get(14)?,
    })
}

const ORG_COLS: &str = "id, name, region, pii, created_at, secrets, response_redaction, \
    mcp_tools, mcp_resources, mcp_prompts, rpm, tpm, budget_tokens, budget_period";

fn org_row(r: &rusqlite::Row) -> rusqlite::Result<Org> {
    Ok(Org {
        id: r.get(0)?,
        name: r.get(1)?,
        region: r.get(2)?,
        pii: r.get(3)?,
        created_at: r.get(4)?,
        secrets: r.get(5)?,
        response_redaction: r.get(6)?,
        mcp_tools: r.get(7)?,
        mcp_resources: r.get(8)?,
        mcp_prompts: r.get(9)?,
        rpm: r.get(10)?,
        tpm: r.get(11)?,
        budget_tokens: r.get::<_, Option<i64>>(12)?.map(|b| b as u64),
        budget_period: r.get(13)?,
    })
}

fn key_row(r: &rusqlite::Row) -> rusqlite::Result<Key> {
    Ok(Key {
        id: r.get(0)?,
        org_id: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        hash: r.get(4)?,
        pii: r.get(5)?,
        region: r.get(6)?,
        rpm: r.get(7)?,
        expires_at: r.get(8)?,
        revoked_at: r.get(9)?,
        created_at: r.get(10)?,
        last_used_at: r.get(11)?,
        secrets: r.get(12)?,
        response_redaction: r.get(13)?,
        mcp_tools: r.get(14)?,
        mcp_resources: r.get(15)?,
        mcp_prompts: r.get(16)?,
        tpm: r.get(17)?,
        budget_tokens: r.get::<_, Option<i64>>(18)?.map(|b| b as u64),
        budget_period: r.get(19)?,
    })
}

fn cred_row(r: &rusqlite::Row) -> rusqlite::Result<Credential> {
    Ok(Credential {
        id: r.get(0)?,
        name: r.get(1)?,
        sealed: r.get(2)?,
        key_fp: r.get(3)?,
        created_at: r.get(4)?,
        rotated_at: r.get(5)?,
        expires_at: r.get(6)?,
        kind: r.get(7)?,
        oauth: r.get(8)?,
        token_sealed: r.get(9)?,
        token_expires_at: r.get(10)?,
        token_obtained_at: r.get(11)?,
        refresh_failures: r.get(12)?,
        last_error: r.get(13)?,
        connect: r.get(14)?,
        client_sealed: r.get(15)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_private_files_and_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("s.db");
        let s = Store::open(&path).unwrap();
        let eu = OrgSettings {
            region: Some(Region::Eu),
            ..Default::default()
        };
        let org = s.insert_org("acme", &eu).unwrap();
        assert_eq!(
            (
                org.pii.as_str(),
                org.secrets.as_str(),
                org.response_redaction.as_str()
            ),
            ("on", "on", "off")
        );
        assert!(matches!(
            s.insert_org("acme", &OrgSettings::default()),
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
        let org = s.insert_org("acme", &OrgSettings::default()).unwrap();
        drop(s);
        assert_eq!(page_size(&old), 4096);
        assert_eq!(Store::open(&old).unwrap().orgs().unwrap(), vec![org]);
    }

    #[test]
    fn the_generation_moves_with_configuration_changes_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.db")).unwrap();
        let g0 = s.generation().unwrap();
        let org = s.insert_org("acme", &OrgSettings::default()).unwrap();
        let g1 = s.generation().unwrap();
        assert!(g1 > g0);
        let k = Key {
            id: new_id(),
            org_id: org.id.clone(),
            name: "k".into(),
            prefix: "sk-sluice-abcd".into(),
            hash: vec![1; 32],
            pii: KeySetting::Inherit,
            secrets: KeySetting::Inherit,
            response_redaction: KeySetting::Inherit,
            mcp_tools: None,
            mcp_resources: None,
            mcp_prompts: None,
            region: None,
            rpm: None,
            tpm: None,
            budget_tokens: None,
            budget_period: None,
            expires_at: None,
            revoked_at: None,
            created_at: Timestamp::now(),
            last_used_at: None,
        };
        s.insert_key(&k).unwrap();
        let g2 = s.generation().unwrap();
        assert!(g2 > g1);
        let mut s = s;
        s.touch_keys(std::slice::from_ref(&k.id), &now()).unwrap();
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
