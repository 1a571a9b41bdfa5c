//! The schema, as the migrations that built it: applied in order, once each (`user_version`).

pub(super) const MIGRATIONS: &[&str] = &[
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
    // 13: token usage per org, key and model per hour, written with the request audit records
    // (the console's and `GET /api/usage`'s source: no scan of the audit table). An org's rows
    // go with it.
    "CREATE TABLE usage_hourly (
        org_id TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        hour INTEGER NOT NULL,
        requests INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (org_id, hour, key_id, model)
     ) WITHOUT ROWID;",
    // 14: audit records are written packed (`pack`: UUIDs, hashes and ciphertexts as tagged
    // BLOBs, details compressed), about half the bytes. Nothing in the schema changes (SQLite
    // columns hold either form and old rows stay text); the version tells an older sluice, which
    // would fail on the BLOBs, that this store is newer than it.
    "-- audit records packed",
];
