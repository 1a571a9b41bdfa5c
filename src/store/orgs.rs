//! Orgs and their API keys: rows, settings, queries.

use std::sync::LazyLock;

use rusqlite::{params, OptionalExtension, ToSql};

use super::*;
use crate::policy::{Switches, SWITCH_NAMES};

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
        static SQL: LazyLock<String> =
            LazyLock::new(|| insert_sql("orgs", &["id", "name", "region", "created_at"]));
        let id = new_id();
        let lists = p.mcp.map(AllowList::to_string);
        let now = Timestamp::now();
        let head: [&dyn ToSql; 4] = [&id, &name, &p.region, &now];
        self.write_policy(&SQL, &head, &lists, &p.limits, &p.switches)
            .map_err(|e| unique(e, "org", name))?;
        self.org(&id)
    }

    /// Every org, oldest first.
    pub fn orgs(&self) -> Result<Vec<Org>> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {} FROM orgs ORDER BY id", *ORG_COLS))?;
        let rows = st.query_map([], org_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One org.
    pub fn org(&self, id: &str) -> Result<Org> {
        self.conn
            .query_row(
                &format!("SELECT {} FROM orgs WHERE id = ?1", *ORG_COLS),
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
        static SQL: LazyLock<String> = LazyLock::new(|| update_sql("orgs", &["region"]));
        let lists = p.mcp.map(AllowList::to_string);
        self.update_policy(
            &SQL,
            ("org", id),
            &[&p.region],
            &lists,
            &p.limits,
            &p.switches,
        )?;
        self.org(id)
    }

    /// Replace the policy columns of row `id` (`sql` from [`update_sql`], `head` the values of
    /// its columns before the policy's). A row that is not there is `NotFound` (`what`).
    fn update_policy<L: ToSql, S: ToSql>(
        &self,
        sql: &str,
        (what, id): (&'static str, &str),
        head: &[&dyn ToSql],
        lists: &Mcp<L>,
        limits: &Limits,
        switches: &Switches<S>,
    ) -> Result<()> {
        let head = [&[&id as &dyn ToSql][..], head].concat();
        if self.write_policy(sql, &head, lists, limits, switches)? == 0 {
            return Err(Error::NotFound {
                what,
                id: id.to_string(),
            });
        }
        Ok(())
    }

    /// Run `sql` (from [`insert_sql`] or [`update_sql`]) with the values of `head`, then the
    /// policy's: its lists and limits ([`POLICY_COLS`]), then its switches. The rows changed.
    fn write_policy<L: ToSql, S: ToSql>(
        &self,
        sql: &str,
        head: &[&dyn ToSql],
        lists: &Mcp<L>,
        limits: &Limits,
        switches: &Switches<S>,
    ) -> rusqlite::Result<usize> {
        let (tokens, period) = budget_columns(limits);
        let mut params: Vec<&dyn ToSql> = head.to_vec();
        params.extend_from_slice(&[
            &lists.tools,
            &lists.resources,
            &lists.prompts,
            &limits.rpm,
            &limits.tpm,
            &tokens,
            &period,
        ]);
        params.extend(switches.iter().map(|(_, s)| s as &dyn ToSql));
        self.conn.execute(sql, &*params)
    }

    // ---- API keys ----

    /// Insert a key (its hash and display prefix; the key itself is never stored).
    pub fn insert_key(&self, k: &Key) -> Result<()> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            insert_sql(
                "api_keys",
                &[
                    "id",
                    "org_id",
                    "name",
                    "prefix",
                    "hash",
                    "region",
                    "expires_at",
                    "created_at",
                ],
            )
        });
        self.org(&k.org_id)?;
        let p = &k.policy;
        let lists = p.mcp.map(|l| l.as_ref().map(AllowList::to_string));
        let head: [&dyn ToSql; 8] = [
            &k.id,
            &k.org_id,
            &k.name,
            &k.prefix,
            &k.hash,
            &p.region,
            &k.expires_at,
            &k.created_at,
        ];
        self.write_policy(&SQL, &head, &lists, &p.limits, &p.switches)?;
        Ok(())
    }

    /// Keys, optionally of one org, oldest first.
    pub fn keys(&self, org: Option<&str>) -> Result<Vec<Key>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {} FROM api_keys WHERE (?1 IS NULL OR org_id = ?1) ORDER BY id",
            *KEY_COLS
        ))?;
        let rows = st.query_map([org], key_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Replace a key's policy (its region is set when it is made).
    pub fn set_key_policy(&self, id: &str, p: &KeyPolicy) -> Result<Key> {
        static SQL: LazyLock<String> = LazyLock::new(|| update_sql("api_keys", &[]));
        let lists = p.mcp.map(|l| l.as_ref().map(AllowList::to_string));
        self.update_policy(&SQL, ("key", id), &[], &lists, &p.limits, &p.switches)?;
        self.key(id)
    }

    /// One key.
    pub fn key(&self, id: &str) -> Result<Key> {
        self.conn
            .query_row(
                &format!("SELECT {} FROM api_keys WHERE id = ?1", *KEY_COLS),
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

/// The policy columns an org and a key share, in this order: the MCP lists, the limits.
const POLICY_COLS: [&str; 7] = [
    "mcp_tools",
    "mcp_resources",
    "mcp_prompts",
    "rpm",
    "tpm",
    "budget_tokens",
    "budget_period",
];

/// An org's columns: these (read by position), then one per switch (read by name).
static ORG_COLS: LazyLock<String> = LazyLock::new(|| {
    with_switch_cols(
        "id, name, region, created_at, mcp_tools, mcp_resources, mcp_prompts, rpm, tpm, \
         budget_tokens, budget_period",
    )
});

/// A key's columns: these (read by position), then one per switch (read by name).
static KEY_COLS: LazyLock<String> = LazyLock::new(|| {
    with_switch_cols(
        "id, org_id, name, prefix, hash, region, rpm, expires_at, revoked_at, created_at, \
         last_used_at, mcp_tools, mcp_resources, mcp_prompts, tpm, budget_tokens, budget_period",
    )
});

/// `cols`, then a column per switch (each named as the switch).
fn with_switch_cols(cols: &str) -> String {
    format!("{cols}, {}", SWITCH_NAMES.join(", "))
}

/// An insert of `head`, then the policy's columns ([`POLICY_COLS`], the switches'), bound in
/// that order ([`Store::write_policy`]).
fn insert_sql(table: &str, head: &[&str]) -> String {
    let cols = [head, &POLICY_COLS, SWITCH_NAMES].concat();
    let slots: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        cols.join(", "),
        slots.join(", ")
    )
}

/// An update of `head`, then the policy's columns ([`POLICY_COLS`], the switches'), of the row
/// whose id is `?1` (bound first, then the columns in that order).
fn update_sql(table: &str, head: &[&str]) -> String {
    let sets: Vec<String> = [head, &POLICY_COLS, SWITCH_NAMES]
        .concat()
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ?{}", i + 2))
        .collect();
    format!("UPDATE {table} SET {} WHERE id = ?1", sets.join(", "))
}

/// The switches of an org or key row, by their columns' names.
fn switches_of<T: rusqlite::types::FromSql>(r: &rusqlite::Row) -> rusqlite::Result<Switches<T>> {
    Switches::try_from_fn(|name| r.get(name))
}

pub(super) fn org_row(r: &rusqlite::Row) -> rusqlite::Result<Org> {
    let id: String = r.get(0)?;
    let list = |i| Ok::<_, rusqlite::Error>(stored_list(&id, &r.get::<_, String>(i)?));
    let policy = OrgPolicy {
        region: r.get(2)?,
        switches: switches_of(r)?,
        mcp: Mcp {
            tools: list(4)?,
            resources: list(5)?,
            prompts: list(6)?,
        },
        limits: stored_limits(r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?),
    };
    Ok(Org {
        name: r.get(1)?,
        policy,
        created_at: r.get(3)?,
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
        region: r.get(5)?,
        switches: switches_of(r)?,
        mcp: Mcp {
            tools: list(11)?,
            resources: list(12)?,
            prompts: list(13)?,
        },
        limits: stored_limits(r.get(6)?, r.get(14)?, r.get(15)?, r.get(16)?),
    };
    Ok(Key {
        org_id: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        hash: r.get(4)?,
        policy,
        expires_at: r.get(7)?,
        revoked_at: r.get(8)?,
        created_at: r.get(9)?,
        last_used_at: r.get(10)?,
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
