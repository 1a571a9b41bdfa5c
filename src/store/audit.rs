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

    /// The details of every pruning checkpoint record (few: one per prune).
    pub fn audit_checkpoints(&self) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT details FROM audit WHERE kind = 'checkpoint' ORDER BY seq")?;
        let rows = st.query_map([], |r| r.get(0))?;
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

pub(super) fn audit_row(r: &rusqlite::Row) -> rusqlite::Result<AuditRow> {
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
