//! Orgs and their API keys: rows, settings, queries.

use rusqlite::{params, OptionalExtension};

use super::*;

/// An org row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Org {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub policy: OrgPolicy,
    pub created_at: Timestamp,
}

/// The tables whose rows a bundle can own.
#[derive(Debug, Clone, Copy)]
pub enum Managed {
    Org,
    Key,
    User,
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
    #[serde(flatten)]
    pub policy: KeyPolicy,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

impl Store {
    /// Create an org with its policy.
    pub fn insert_org(&self, name: &str, p: &OrgPolicy) -> Result<Org> {
        let id = new_id();
        let lists = p.mcp.map(AllowList::to_string);
        let (tokens, period) = budget_columns(&p.limits);
        self.conn
            .execute(
                "INSERT INTO orgs (id, name, region, pii, secrets, response_redaction, created_at,
                   mcp_tools, mcp_resources, mcp_prompts, rpm, tpm, budget_tokens, budget_period)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    id,
                    name,
                    p.region,
                    p.pii,
                    p.secrets,
                    p.response_redaction,
                    Timestamp::now(),
                    lists.tools,
                    lists.resources,
                    lists.prompts,
                    p.limits.rpm,
                    p.limits.tpm,
                    tokens,
                    period,
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

    /// Replace an org's policy.
    pub fn set_org_policy(&self, id: &str, p: &OrgPolicy) -> Result<Org> {
        let lists = p.mcp.map(AllowList::to_string);
        let (tokens, period) = budget_columns(&p.limits);
        let n = self.conn.execute(
            "UPDATE orgs SET region = ?2, pii = ?3, secrets = ?4, response_redaction = ?5,
               mcp_tools = ?6, mcp_resources = ?7, mcp_prompts = ?8, rpm = ?9, tpm = ?10,
               budget_tokens = ?11, budget_period = ?12
             WHERE id = ?1",
            params![
                id,
                p.region,
                p.pii,
                p.secrets,
                p.response_redaction,
                lists.tools,
                lists.resources,
                lists.prompts,
                p.limits.rpm,
                p.limits.tpm,
                tokens,
                period,
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
        let p = &k.policy;
        let lists = p.mcp.map(|l| l.as_ref().map(AllowList::to_string));
        let (tokens, period) = budget_columns(&p.limits);
        self.conn.execute(
            "INSERT INTO api_keys (id, org_id, name, prefix, hash, pii, region, rpm, expires_at, created_at,
               secrets, response_redaction, mcp_tools, mcp_resources, mcp_prompts, tpm, budget_tokens,
               budget_period)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            params![k.id, k.org_id, k.name, k.prefix, k.hash, p.pii, p.region, p.limits.rpm, k.expires_at,
                k.created_at, p.secrets, p.response_redaction, lists.tools, lists.resources, lists.prompts, p.limits.tpm,
                tokens, period],
        )?;
        Ok(())
    }

    /// Keys, optionally of one org, oldest first.
    pub fn keys(&self, org: Option<&str>) -> Result<Vec<Key>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {KEY_COLS} FROM api_keys WHERE (?1 IS NULL OR org_id = ?1) ORDER BY id"
        ))?;
        let rows = st.query_map([org], key_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Replace a key's policy (its region is set when it is made).
    pub fn set_key_policy(&self, id: &str, p: &KeyPolicy) -> Result<Key> {
        let lists = p.mcp.map(|l| l.as_ref().map(AllowList::to_string));
        let (tokens, period) = budget_columns(&p.limits);
        let n = self.conn.execute(
            "UPDATE api_keys SET pii = ?2, secrets = ?3, response_redaction = ?4,
               mcp_tools = ?5, mcp_resources = ?6, mcp_prompts = ?7, rpm = ?8, tpm = ?9,
               budget_tokens = ?10, budget_period = ?11
             WHERE id = ?1",
            params![
                id,
                p.pii,
                p.secrets,
                p.response_redaction,
                lists.tools,
                lists.resources,
                lists.prompts,
                p.limits.rpm,
                p.limits.tpm,
                tokens,
                period,
            ],
        )?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "key",
                id: id.to_string(),
            });
        }
        self.key(id)
    }

    /// One key.
    pub fn key(&self, id: &str) -> Result<Key> {
        self.conn
            .query_row(
                &format!("SELECT {KEY_COLS} FROM api_keys WHERE id = ?1"),
                [id],
                key_row,
            )
            .optional()?
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
            params![id, Timestamp::now()],
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
    pub fn touch_keys(&mut self, ids: &[String], at: Timestamp) -> Result<()> {
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

const KEY_COLS: &str =
    "id, org_id, name, prefix, hash, pii, region, rpm, expires_at, revoked_at, created_at, \
    last_used_at, secrets, response_redaction, mcp_tools, mcp_resources, mcp_prompts, tpm, \
    budget_tokens, budget_period";

pub(super) fn org_row(r: &rusqlite::Row) -> rusqlite::Result<Org> {
    let id: String = r.get(0)?;
    let list = |i| Ok::<_, rusqlite::Error>(stored_list(&id, &r.get::<_, String>(i)?));
    let policy = OrgPolicy {
        region: r.get(2)?,
        pii: r.get(3)?,
        secrets: r.get(5)?,
        response_redaction: r.get(6)?,
        mcp: Mcp {
            tools: list(7)?,
            resources: list(8)?,
            prompts: list(9)?,
        },
        limits: stored_limits(r.get(10)?, r.get(11)?, r.get(12)?, r.get(13)?),
    };
    Ok(Org {
        name: r.get(1)?,
        policy,
        created_at: r.get(4)?,
        id,
    })
}

pub(super) fn key_row(r: &rusqlite::Row) -> rusqlite::Result<Key> {
    let id: String = r.get(0)?;
    // A key's list is its own (NULL: the org's); one that does not read allows nothing rather
    // than falling back to the org's.
    let list =
        |i| Ok::<_, rusqlite::Error>(r.get::<_, Option<String>>(i)?.map(|t| stored_list(&id, &t)));
    let policy = KeyPolicy {
        region: r.get(6)?,
        pii: r.get(5)?,
        secrets: r.get(12)?,
        response_redaction: r.get(13)?,
        mcp: Mcp {
            tools: list(14)?,
            resources: list(15)?,
            prompts: list(16)?,
        },
        limits: stored_limits(r.get(7)?, r.get(17)?, r.get(18)?, r.get(19)?),
    };
    Ok(Key {
        org_id: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        hash: r.get(4)?,
        policy,
        expires_at: r.get(8)?,
        revoked_at: r.get(9)?,
        created_at: r.get(10)?,
        last_used_at: r.get(11)?,
        id,
    })
}

/// A stored MCP allow-list. Only parsed lists are written, so one that does not parse was
/// edited by hand: it allows nothing (fail closed), and says so.
fn stored_list(row: &str, text: &str) -> AllowList {
    AllowList::parse(text).unwrap_or_else(|e| {
        tracing::error!(id = %row, error = %e, "unreadable MCP allow-list; nothing allowed");
        AllowList::default()
    })
}

/// Stored limits. The schema allows the periods `day` and `month` only; anything else fails
/// closed to the shorter period.
fn stored_limits(
    rpm: Option<u32>,
    tpm: Option<u32>,
    tokens: Option<i64>,
    period: Option<String>,
) -> Limits {
    Limits {
        rpm,
        tpm,
        budget: tokens.zip(period).map(|(t, p)| Budget {
            tokens: t.max(0) as u64,
            period: p.parse().unwrap_or(Period::Day),
        }),
    }
}

fn budget_columns(l: &Limits) -> (Option<i64>, Option<&'static str>) {
    (
        l.budget
            .map(|b| i64::try_from(b.tokens).unwrap_or(i64::MAX)),
        l.budget.map(|b| b.period.as_str()),
    )
}
