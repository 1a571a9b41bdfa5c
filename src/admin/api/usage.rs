//! Token usage (`GET /api/usage`, from the hourly roll-ups the audit writer keeps), the
//! overview the console shows (`GET /api/overview`) and the audit chain check
//! (`GET /api/audit/verify`).

use super::*;

/// A budget window in use: its period, its start, and the tokens each key used in it.
type Window = (String, i64, Vec<(String, u64)>);

/// The longest look back `GET /api/usage` takes.
const MAX_LOOKBACK_SECS: i64 = 400 * 86_400;
/// The most rows `GET /api/usage` answers.
const MAX_ROWS: i64 = 10_000;

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The start (unix seconds, UTC) of the budget window `period` (`day` or `month`) holding `now`.
fn period_start(period: &str, now: i64) -> i64 {
    let day = now - now.rem_euclid(86_400);
    if period != "month" {
        return day;
    }
    time::OffsetDateTime::from_unix_timestamp(day)
        .ok()
        .and_then(|d| d.replace_day(1).ok())
        .map_or(day, |d| d.unix_timestamp())
}

impl Api {
    /// The org the caller asked about: the `org_id` parameter (the router checked the caller
    /// may read it), or the caller's own org; operators must name one.
    fn query_org(&self, c: &Caller) -> Result<String, ApiError> {
        let p = c.principal()?;
        match c.param("org_id") {
            Some(o) if !o.is_empty() => Ok(o.to_string()),
            _ => p
                .org_id
                .clone()
                .ok_or_else(|| err(Code::InvalidRequest, "org_id is required for operators.")),
        }
    }

    pub(super) fn usage(&self, store: &Store, c: &Caller) -> ApiResult {
        let org_id = self.query_org(c)?;
        let org = store.org(&org_id)?;
        let group = match c.param("group_by").unwrap_or("key") {
            "key" => store::UsageGroup::Key,
            "model" => store::UsageGroup::Model,
            _ => return Err(err(Code::InvalidRequest, "group_by must be key or model.")),
        };
        // (name, seconds, default look-back, longest look-back)
        let (bucket, secs, lookback, longest) = match c.param("bucket").unwrap_or("hour") {
            "hour" => ("hour", 3_600, 86_400, 31 * 86_400),
            "day" => ("day", 86_400, 30 * 86_400, MAX_LOOKBACK_SECS),
            _ => return Err(err(Code::InvalidRequest, "bucket must be hour or day.")),
        };
        let now = unix_now();
        let since = match c.param("since") {
            None | Some("") => now - lookback,
            Some(s) => store::parse_time(s)
                .map(|t| t.unix_timestamp())
                .filter(|t| *t >= now - longest)
                .ok_or_else(|| {
                    err(
                        Code::InvalidRequest,
                        "since must be an RFC 3339 time within the last 31 days (bucket=hour) or 400 days (bucket=day).",
                    )
                })?,
        };
        // Whole buckets: a day bucket starts at midnight UTC.
        let since = since - since.rem_euclid(secs);
        let rows = store.usage(&org_id, group, secs, since, MAX_ROWS)?;
        let name = match group {
            store::UsageGroup::Key => "key_id",
            store::UsageGroup::Model => "model",
        };
        let data: Vec<Value> = rows
            .iter()
            .map(|r| {
                let mut v = json!({
                    "bucket_start": store::utc_text(
                        time::OffsetDateTime::from_unix_timestamp(r.bucket)
                            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)),
                    "requests": r.requests,
                    "input_tokens": r.input_tokens,
                    "output_tokens": r.output_tokens,
                    "total_tokens": r.input_tokens.saturating_add(r.output_tokens),
                });
                // Both keys are always there: the one not grouped by is null.
                v["key_id"] = Value::Null;
                v["model"] = Value::Null;
                v[name] = r.group.clone().into();
                v
            })
            .collect();
        // Tokens per key in each budget window in use (one query per window).
        let mut windows: Vec<Window> = Vec::new();
        let mut used = |period: &str, key: Option<&str>| -> Result<(i64, u64), ApiError> {
            let start = period_start(period, now);
            if !windows.iter().any(|w| w.0 == period) {
                windows.push((
                    period.to_string(),
                    start,
                    store.usage_by_key(&org_id, start)?,
                ));
            }
            let per_key = &windows
                .iter()
                .find(|w| w.0 == period)
                .map_or(&[][..], |w| &w.2[..]);
            let n = per_key
                .iter()
                .filter(|(k, _)| key.is_none_or(|key| key == k))
                .fold(0u64, |a, (_, n)| a.saturating_add(*n));
            Ok((start, n))
        };
        let mut budget = |b: Option<crate::limits::Budget>, key: Option<&str>| {
            let Some(b) = b else {
                return Ok::<_, ApiError>(Value::Null);
            };
            let (start, n) = used(b.period.as_str(), key)?;
            Ok(json!({"tokens": b.tokens, "period": b.period,
                      "period_start": store::utc_text(
                          time::OffsetDateTime::from_unix_timestamp(start)
                              .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)),
                      "used_tokens": n}))
        };
        let mut keys = Vec::new();
        for k in store.keys(Some(&org_id))? {
            let b = budget(k.policy.limits.budget, Some(&k.id))?;
            if !b.is_null() {
                keys.push(json!({"key_id": k.id, "name": k.name, "budget": b}));
            }
        }
        let org_budget = budget(org.policy.limits.budget, None)?;
        Ok((
            200,
            json!({
                "org_id": org_id,
                "group_by": name,
                "bucket": bucket,
                "since": store::utc_text(time::OffsetDateTime::from_unix_timestamp(since)
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)),
                "data": data,
                "truncated": rows.len() as i64 == MAX_ROWS,
                "budgets": {
                    "org": org_budget,
                    "keys": keys,
                },
            }),
        ))
    }

    /// What the console's overview shows: health of upstreams and MCP servers, the fleet and,
    /// for operators, the traffic figures (they span every org).
    pub(super) fn overview(&self, store: &Store, c: &Caller) -> ApiResult {
        let p = c.principal()?;
        let mut v = match &self.overview_view {
            Some(view) => view(),
            None => json!({}),
        };
        if p.operator {
            let creds: Vec<Value> = crate::admin::list_credentials(store, None)?
                .into_iter()
                .map(|c| {
                    let expires = c.token_expires_at.or(c.expires_at);
                    json!({"name": c.name, "kind": c.kind, "expires_at": expires,
                           "expired": c.expired,
                           "needs_reconnect": c.last_error.as_deref() == Some("needs_reconnect")})
                })
                .collect();
            v["credentials"] = creds.into();
        } else {
            v["traffic"] = Value::Null;
            v["credentials"] = Value::Null;
        }
        let (_, servers) = self.mcp_servers()?;
        v["mcp_servers"] = servers["data"].clone();
        Ok((200, v))
    }

    /// Check the whole audit chain, a page at a time (the store's lock is taken per page, so
    /// other admin calls go on), one check at a time; name the first record that breaks it.
    /// The count of records spans every org: operators only.
    pub(super) fn audit_verify(&self, c: &Caller) -> ApiResult {
        let operator = c.principal()?.operator;
        let _one = self.verifying.try_lock().map_err(|_| ApiError {
            retry_after: Some(5),
            ..err(
                Code::RateLimited,
                "A chain check is already running; retry when it is done.",
            )
        })?;
        let (checkpoints, end) = {
            let store = self.store();
            (
                store.audit_checkpoints()?,
                store.audit_tail()?.map_or(0, |t| t.0),
            )
        };
        // Up to the record that was last when the check began (the log keeps growing).
        let checked = audit::verify_pages(&checkpoints, |after| {
            if after >= end {
                return Ok(Vec::new());
            }
            self.store().audit_rows(after, None, None, 2_000)
        })?;
        match checked {
            Ok(n) => Ok((
                200,
                json!({"valid": true, "records": operator.then_some(n), "first_bad": null}),
            )),
            Err(b) => Ok((
                200,
                json!({"valid": false, "records": null,
                       "first_bad": {"seq": b.seq, "id": b.id, "reason": b.reason}}),
            )),
        }
    }
}

#[cfg(test)]
mod period_tests {
    use super::period_start;

    #[test]
    fn budget_windows_start_at_utc_midnight_and_the_first_of_the_month() {
        // 2026-12-06T18:00:00Z
        let t = 1_796_580_000;
        assert_eq!(period_start("day", t), 1_796_515_200);
        // 2026-12-01T00:00:00Z
        assert_eq!(period_start("month", t), 1_796_083_200);
    }
}
