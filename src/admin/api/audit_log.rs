//! The audit log, read with cursor pagination.

use super::*;

impl Api {
    pub(super) fn audit(&self, store: &Store, c: &Caller) -> ApiResult {
        let p = c.principal()?;
        // The router checked the caller may read this org (their own when none is given).
        let org = match c.param("org_id") {
            Some(o) => Some(o.to_string()),
            None if p.operator => None,
            None => Some(p.org_id.clone().ok_or_else(denied)?),
        };
        let limit = match c.param("limit") {
            None => 100,
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=1000).contains(l))
                .ok_or_else(|| err(Code::InvalidRequest, "limit must be 1 to 1000."))?,
        };
        let after = match c.param("cursor") {
            None | Some("") => 0,
            Some(a) => a
                .parse::<i64>()
                .ok()
                .filter(|a| *a >= 0)
                .ok_or_else(|| err(Code::InvalidRequest, "Invalid cursor."))?,
        };
        let since = c
            .param("since")
            .map(|s| {
                store::parse_time(s)
                    .map(store::utc_text)
                    .ok_or_else(|| err(Code::InvalidRequest, "since must be an RFC 3339 time."))
            })
            .transpose()?;
        let filter = store::AuditFilter {
            org: org.as_deref(),
            since: since.as_deref(),
            action: c.param("action"),
            actor: c.param("actor"),
            outcome: match c.param("outcome") {
                None => None,
                Some(o @ ("success" | "failure")) => Some(o),
                Some(_) => {
                    return Err(err(
                        Code::InvalidRequest,
                        "outcome must be success or failure.",
                    ))
                }
            },
        };
        let rows = store.audit_page(after, &filter, limit)?;
        let next = (rows.len() as i64 == limit)
            .then(|| rows.last().map(|r| r.seq.to_string()))
            .flatten();
        let mut keys = audit::OrgKeys::new(&self.ring);
        let data: Vec<Value> = rows
            .into_iter()
            .map(|r| audit::row_json(&keys.open_row(store, r)))
            .collect();
        Ok((200, json!({"data": data, "next_cursor": next})))
    }
}
