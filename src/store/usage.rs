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

/// Distinct models kept per org and hour; the rest are counted as `other` (the model is the
/// client's word: a client must not grow the table without bound).
pub const MAX_MODELS_PER_HOUR: i64 = 100;
/// How long hourly rows are kept (what `GET /api/usage` can look back over).
pub const USAGE_RETENTION_SECS: i64 = 400 * 86_400;

impl Store {
    /// Add to the hourly usage rows (inside the audit writer's transaction, in a savepoint of
    /// its own: when it fails, the roll-up is undone and the error returned, the records stay).
    /// Sums saturate; rows of an org that no longer exists are skipped; past
    /// [`MAX_MODELS_PER_HOUR`] models in an org's hour, a new model counts as `other`. The
    /// first roll-up of each hour drops rows older than [`USAGE_RETENTION_SECS`].
    pub fn add_usage(&self, rows: &[UsageAdd]) -> Result<()> {
        self.conn.execute_batch("SAVEPOINT usage_rollup")?;
        let done = self.add_usage_rows(rows);
        let end = match &done {
            Ok(()) => "RELEASE usage_rollup",
            Err(_) => "ROLLBACK TO usage_rollup; RELEASE usage_rollup",
        };
        self.conn.execute_batch(end)?;
        done
    }

    fn add_usage_rows(&self, rows: &[UsageAdd]) -> Result<()> {
        static PRUNED_HOUR: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
        if let Some(hour) = rows.first().map(|r| r.hour) {
            if PRUNED_HOUR.swap(hour, std::sync::atomic::Ordering::Relaxed) != hour {
                self.conn.execute(
                    "DELETE FROM usage_hourly WHERE hour < ?1",
                    [hour.saturating_sub(USAGE_RETENTION_SECS)],
                )?;
            }
        }
        let mut known = self.conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM usage_hourly WHERE org_id = ?1 AND hour = ?2 AND model = ?3),
                    (SELECT COUNT(DISTINCT model) FROM usage_hourly WHERE org_id = ?1 AND hour = ?2)",
        )?;
        let mut add = self.conn.prepare_cached(
            "INSERT INTO usage_hourly (org_id, key_id, model, hour, requests, input_tokens,
                                       output_tokens)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM orgs WHERE id = ?1)
             ON CONFLICT (org_id, hour, key_id, model) DO UPDATE SET
               requests = min(requests + excluded.requests, 9223372036854775807),
               input_tokens = min(input_tokens + excluded.input_tokens, 9223372036854775807),
               output_tokens = min(output_tokens + excluded.output_tokens, 9223372036854775807)",
        )?;
        for r in rows {
            let (exists, models): (bool, i64) = known
                .query_row(params![r.org_id, r.hour, r.model], |x| {
                    Ok((x.get(0)?, x.get(1)?))
                })?;
            let model = if exists || models < MAX_MODELS_PER_HOUR {
                r.model.as_str()
            } else {
                "other"
            };
            add.execute(params![
                r.org_id,
                r.key_id,
                model,
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
            "SELECT (hour / ?2) * ?2 AS b, {col}, TOTAL(requests), TOTAL(input_tokens),
                    TOTAL(output_tokens)
             FROM usage_hourly WHERE org_id = ?1 AND hour >= ?3
             GROUP BY b, {col} ORDER BY b DESC, {col} DESC LIMIT ?4"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map(params![org_id, bucket_secs, since, limit], |r| {
            Ok(UsageRow {
                bucket: r.get(0)?,
                group: r.get(1)?,
                requests: count(r.get(2)?),
                input_tokens: count(r.get(3)?),
                output_tokens: count(r.get(4)?),
            })
        })?;
        // The newest `limit` rows, oldest first.
        let mut rows: Vec<UsageRow> = rows.collect::<rusqlite::Result<_>>()?;
        rows.reverse();
        Ok(rows)
    }
}

impl Store {
    /// Tokens (input and output) each of an org's keys used since `since` (unix seconds).
    pub fn usage_by_key(&self, org_id: &str, since: i64) -> Result<Vec<(String, u64)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT key_id, TOTAL(input_tokens) + TOTAL(output_tokens) FROM usage_hourly
             WHERE org_id = ?1 AND hour >= ?2 GROUP BY key_id",
        )?;
        let rows = st.query_map(params![org_id, since], |r| {
            Ok((r.get(0)?, count(r.get(1)?)))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// A `TOTAL()` (a float, which cannot overflow as `SUM()` can) as a count.
fn count(total: f64) -> u64 {
    if total.is_finite() && total > 0.0 {
        total.min(u64::MAX as f64) as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(org: &str, model: &str, hour: i64, tokens: u64) -> UsageAdd {
        UsageAdd {
            org_id: org.into(),
            key_id: "k1".into(),
            model: model.into(),
            hour,
            requests: 1,
            input_tokens: tokens,
            output_tokens: tokens,
        }
    }

    #[test]
    fn models_past_the_cap_count_as_other_sums_saturate_and_old_rows_go() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db")).unwrap();
        let org = s.insert_org("acme", &OrgPolicy::default()).unwrap().id;
        let hour = 1_796_580_000;
        let rows: Vec<UsageAdd> = (0..MAX_MODELS_PER_HOUR + 5)
            .map(|i| row(&org, &format!("m{i}"), hour, 1))
            .collect();
        s.add_usage(&rows).unwrap();
        let by_model = s.usage(&org, UsageGroup::Model, 3_600, 0, 1_000).unwrap();
        assert_eq!(by_model.len() as i64, MAX_MODELS_PER_HOUR + 1);
        let other = by_model.iter().find(|r| r.group == "other").unwrap();
        assert_eq!(other.requests, 5);
        // A known model still counts as itself.
        s.add_usage(&[row(&org, "m0", hour, 1)]).unwrap();
        let m0 = s.usage(&org, UsageGroup::Model, 3_600, 0, 1_000).unwrap();
        assert_eq!(m0.iter().find(|r| r.group == "m0").unwrap().requests, 2);
        // Huge counts saturate and still sum.
        s.add_usage(&[
            row(&org, "m1", hour, u64::MAX),
            row(&org, "m2", hour, u64::MAX),
        ])
        .unwrap();
        let keys = s.usage_by_key(&org, 0).unwrap();
        assert!(keys[0].1 > 1 << 62, "{keys:?}");
        // An org that is gone: skipped, the batch goes on.
        s.add_usage(&[row("no-such-org", "m0", hour, 1)]).unwrap();
        // A later hour's first roll-up drops rows past the retention.
        let later = hour + USAGE_RETENTION_SECS + 3_600;
        s.add_usage(&[row(&org, "m0", later, 1)]).unwrap();
        let left = s.usage(&org, UsageGroup::Key, 3_600, 0, 1_000).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].bucket, later);
    }

    #[test]
    fn the_newest_rows_are_kept_when_there_are_too_many() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db")).unwrap();
        let org = s.insert_org("acme", &OrgPolicy::default()).unwrap().id;
        for h in 0..5 {
            s.add_usage(&[row(&org, "m", 1_796_580_000 + h * 3_600, 1)])
                .unwrap();
        }
        let r = s.usage(&org, UsageGroup::Key, 3_600, 0, 2).unwrap();
        assert_eq!(
            r.iter().map(|r| r.bucket).collect::<Vec<_>>(),
            [1_796_580_000 + 3 * 3_600, 1_796_580_000 + 4 * 3_600]
        );
    }
}
