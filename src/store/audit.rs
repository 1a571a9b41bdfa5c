//! The audit table: append, read by page, prune (the chain itself is `crate::audit`'s).

use rusqlite::{params, OptionalExtension};

use super::*;

impl Store {
    /// The last record's sequence number and hash (`None` for an empty log).
    pub fn audit_tail(&self) -> Result<Option<(i64, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, text(r, 1)?)),
            )
            .optional()?)
    }

    /// Insert a complete (already hashed) record, stored packed ([`pack`]). Call inside
    /// [`Store::atomically`], after reading [`Store::audit_tail`] in the same transaction.
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
                pack::pack(&a.id),
                a.at,
                a.kind,
                a.action,
                pack::pack(&a.actor),
                a.org_id.as_deref().map(pack::pack),
                a.target_id,
                a.source_ip.as_deref().map(pack::pack),
                a.user_agent.as_deref().map(pack::pack),
                a.request_id.as_deref().map(pack::pack),
                a.outcome,
                pack::pack_details(&a.details),
                pack::pack(&a.prev_hash),
                pack::pack(&a.hash)
            ])?;
        Ok(())
    }

    /// The details of every pruning checkpoint record (few: one per prune).
    pub fn audit_checkpoints(&self) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT details FROM audit WHERE kind = 'checkpoint' ORDER BY seq")?;
        let rows = st.query_map([], |r| details(r, 0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
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
             FROM audit WHERE seq > ?1 AND (?2 IS NULL OR org_id IN (?2, ?8))
               AND (?3 IS NULL OR at >= ?3)
               AND (?4 IS NULL OR action = ?4) AND (?5 IS NULL OR actor IN (?5, ?9))
               AND (?6 IS NULL OR outcome = ?6)
             ORDER BY seq LIMIT ?7",
        )?;
        // A value is matched in both of its stored forms: old records hold the text.
        let rows = st.query_map(
            params![
                after_seq,
                f.org,
                f.since,
                f.action,
                f.actor,
                f.outcome,
                limit,
                f.org.map(pack::pack),
                f.actor.map(pack::pack)
            ],
            audit_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The seq after which the last `n` records (optionally of one org) start.
    pub fn audit_seq_before_last(&self, n: i64, org: Option<&str>) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(MIN(seq) - 1, 0) FROM (SELECT seq FROM audit
               WHERE (?1 IS NULL OR org_id IN (?1, ?3)) ORDER BY seq DESC LIMIT ?2)",
            params![org, n, org.map(pack::pack)],
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
                |r| Ok((r.get(0)?, text(r, 1)?)),
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
            params![seq, Timestamp::now()],
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

/// Column `i`, stored packed or as text, as its text.
fn text(r: &rusqlite::Row, i: usize) -> rusqlite::Result<String> {
    pack::unpack(r.get_ref(i)?).map_err(|e| from_sql(i, e))
}

/// The `details` column, stored packed or as text, as its text.
fn details(r: &rusqlite::Row, i: usize) -> rusqlite::Result<String> {
    pack::unpack_details(r.get_ref(i)?).map_err(|e| from_sql(i, e))
}

fn opt(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Option<String>> {
    pack::unpack_opt(r.get_ref(i)?).map_err(|e| from_sql(i, e))
}

fn from_sql(i: usize, e: rusqlite::types::FromSqlError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
}

pub(super) fn audit_row(r: &rusqlite::Row) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        seq: r.get(0)?,
        id: text(r, 1)?,
        at: r.get(2)?,
        kind: r.get(3)?,
        action: r.get(4)?,
        actor: text(r, 5)?,
        org_id: opt(r, 6)?,
        target_id: r.get(7)?,
        source_ip: opt(r, 8)?,
        user_agent: opt(r, 9)?,
        request_id: opt(r, 10)?,
        outcome: r.get(11)?,
        details: details(r, 12)?,
        prev_hash: text(r, 13)?,
        hash: text(r, 14)?,
    })
}
