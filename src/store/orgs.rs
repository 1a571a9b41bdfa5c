//! Orgs and their API keys: rows, settings, queries.

use rusqlite::{params, OptionalExtension};

use super::*;

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
    pub limits: LimitsPatch,
}

/// Changes to a key (`None` keeps the current value; a cleared MCP list makes the key inherit
/// its org's again).
#[derive(Debug, Clone, Default)]
pub struct KeyChanges<'a> {
    pub pii: Option<KeyPii>,
    pub secrets: Option<KeySetting>,
    pub response_redaction: Option<KeySetting>,
    pub mcp_tools: Patch<&'a str>,
    pub mcp_resources: Patch<&'a str>,
    pub mcp_prompts: Patch<&'a str>,
    pub limits: LimitsPatch,
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

impl Store {
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
                    settings.limits.rpm.value(),
                    settings.limits.tpm.value(),
                    settings.limits.budget.value().map(|b| b.tokens as i64),
                    settings.limits.budget.value().map(|b| b.period.as_str()),
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
                !s.limits.rpm.is_keep(),
                s.limits.rpm.value(),
                !s.limits.tpm.is_keep(),
                s.limits.tpm.value(),
                !s.limits.budget.is_keep(),
                s.limits.budget.value().map(|b| b.tokens as i64),
                s.limits.budget.value().map(|b| b.period.as_str()),
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
        // A cleared list goes back to NULL (inherit); a kept one stays.
        let (t_set, t) = (!c.mcp_tools.is_keep(), c.mcp_tools.value());
        let (r_set, r) = (!c.mcp_resources.is_keep(), c.mcp_resources.value());
        let (p_set, pr) = (!c.mcp_prompts.is_keep(), c.mcp_prompts.value());
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
                !c.limits.rpm.is_keep(),
                c.limits.rpm.value(),
                !c.limits.tpm.is_keep(),
                c.limits.tpm.value(),
                !c.limits.budget.is_keep(),
                c.limits.budget.value().map(|b| b.tokens as i64),
                c.limits.budget.value().map(|b| b.period.as_str()),
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
}

pub(super) const ORG_COLS: &str =
    "id, name, region, pii, created_at, secrets, response_redaction, \
    mcp_tools, mcp_resources, mcp_prompts, rpm, tpm, budget_tokens, budget_period";

pub(super) fn org_row(r: &rusqlite::Row) -> rusqlite::Result<Org> {
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

pub(super) fn key_row(r: &rusqlite::Row) -> rusqlite::Result<Key> {
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
