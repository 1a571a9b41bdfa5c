//! Token usage per org, key and model per hour (`usage_hourly`): added to by the audit writer in
//! the transaction that appends the request records, read by `GET /api/usage`.

use rusqlite::params;

use super::*;

/// One hour's usage of one key and model (what the audit writer adds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageAdd {
    pub org_id: String,
    pub key_id: String,
    pub model: String,
    /// Unix seconds of the hour's start.
    pub hour: i64,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// How [`Store::usage`] groups rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    Key,
    Model,
}

/// One bucket of [`Store::usage`]: a key's or a model's use in an hour or a day.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageRow {
    /// Unix seconds of the bucket's start (UTC).
    pub bucket: i64,
    /// The key id or the model, as grouped.
    pub group: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Clamp a counter to SQLite's integer range.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Add to the hourly usage rows (inside the audit writer's transaction). Sums saturate.
    pub fn add_usage(&self, rows: &[UsageAdd]) -> Result<()> {
        let mut st = self.conn.prepare_cached(
            "INSERT INTO usage_hourly (org_id, key_id, model, hour, requests, input_tokens,
                                       output_tokens)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM orgs WHERE id = ?1)
             ON CONFLICT (org_id, hour, key_id, model) DO UPDATE SET
               requests = min(requests + excluded.requests, 9223372036854775807),
               input_tokens = min(input_tokens + excluded.input_tokens, 9223372036854775807),
               output_tokens = min(output_tokens + excluded.output_tokens, 9223372036854775807)",
        )?;
        for r in rows {
            st.execute(params![
                r.org_id,
                r.key_id,
                r.model,
                r.hour,
                int(r.requests),
                int(r.input_tokens),
                int(r.output_tokens)
            ])?;
        }
        Ok(())
    }

    /// An org's usage from `since` (unix seconds) on, grouped by key or model and by buckets of
    /// `bucket_secs` (3600 or 86400), oldest first; at most `limit` rows.
    pub fn usage(
        &self,
        org_id: &str,
        group: UsageGroup,
        bucket_secs: i64,
        since: i64,
        limit: i64,
    ) -> Result<Vec<UsageRow>> {
        let col = match group {
            UsageGroup::Key => "key_id",
            UsageGroup::Model => "model",
        };
        let sql = format!(
            "SELECT (hour / ?2) * ?2 AS b, {col}, SUM(requests), SUM(input_tokens),
                    SUM(output_tokens)
             FROM usage_hourly WHERE org_id = ?1 AND hour >= ?3
             GROUP BY b, {col} ORDER BY b, {col} LIMIT ?4"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map(params![org_id, bucket_secs, since, limit], |r| {
            Ok(UsageRow {
                bucket: r.get(0)?,
                group: r.get(1)?,
                requests: r.get::<_, i64>(2)?.max(0) as u64,
                input_tokens: r.get::<_, i64>(3)?.max(0) as u64,
                output_tokens: r.get::<_, i64>(4)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

impl Store {
    /// An org's (or one of its keys') total since `since` (unix seconds): requests, input and
    /// output tokens.
    pub fn usage_total(
        &self,
        org_id: &str,
        key_id: Option<&str>,
        since: i64,
    ) -> Result<(u64, u64, u64)> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(input_tokens), 0),
                    COALESCE(SUM(output_tokens), 0)
             FROM usage_hourly WHERE org_id = ?1 AND (?2 IS NULL OR key_id = ?2) AND hour >= ?3",
            params![org_id, key_id, since],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?.max(0) as u64,
                    r.get::<_, i64>(1)?.max(0) as u64,
                    r.get::<_, i64>(2)?.max(0) as u64,
                ))
            },
        )?)
    }
}
