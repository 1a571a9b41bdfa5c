//! The traffic figures of the console's overview (`GET /api/overview`): the counters since
//! start, and snapshots of them each minute for the last hour and each quarter hour for the
//! last day, from which the charts' per-interval figures are the differences. Plain Rust: the
//! data plane reads its counters into a [`Totals`] and calls [`History::record`].

use std::collections::{BTreeMap, VecDeque};

use serde_json::{json, Value};

/// The cumulative traffic counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Unix seconds.
    pub at: i64,
    pub requests: u64,
    /// Refusals and errors sluice answered, by stable error code.
    pub refusals: BTreeMap<String, u64>,
    /// Values redacted (requests and answers), by entity.
    pub redactions: BTreeMap<String, u64>,
    pub tokens: u64,
}

impl Totals {
    fn refusal_sum(&self) -> u64 {
        self.refusals.values().fold(0, |a, n| a.saturating_add(*n))
    }

    fn redaction_sum(&self) -> u64 {
        self.redactions
            .values()
            .fold(0, |a, n| a.saturating_add(*n))
    }
}

/// A snapshot without the breakdowns (the day's quarter hours).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Point {
    at: i64,
    requests: u64,
    refusals: u64,
    redactions: u64,
    tokens: u64,
}

impl From<&Totals> for Point {
    fn from(t: &Totals) -> Point {
        Point {
            at: t.at,
            requests: t.requests,
            refusals: t.refusal_sum(),
            redactions: t.redaction_sum(),
            tokens: t.tokens,
        }
    }
}

const MINUTES: usize = 61;
const QUARTERS: usize = 97;
const QUARTER_SECS: i64 = 900;

/// Snapshots of the counters: each minute for an hour, each quarter hour for a day.
#[derive(Debug, Default)]
pub struct History {
    minutes: VecDeque<Totals>,
    quarters: VecDeque<Point>,
}

fn time_text(at: i64) -> String {
    crate::store::utc_text(
        time::OffsetDateTime::from_unix_timestamp(at).unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
    )
}

/// Per-interval figures between consecutive points (a counter that went down, after a restart
/// of the process that cannot happen here, counts as 0).
fn series(points: &[Point]) -> Vec<Value> {
    points
        .windows(2)
        .map(|w| {
            let (a, b) = (w[0], w[1]);
            json!({
                "at": time_text(b.at),
                "requests": b.requests.saturating_sub(a.requests),
                "refusals": b.refusals.saturating_sub(a.refusals),
                "redactions": b.redactions.saturating_sub(a.redactions),
                "tokens": b.tokens.saturating_sub(a.tokens),
            })
        })
        .collect()
}

fn difference(now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    now.iter()
        .map(|(k, n)| {
            (
                k.clone(),
                n.saturating_sub(then.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

impl History {
    /// Keep `t` (called once a minute).
    pub fn record(&mut self, t: Totals) {
        let new_quarter = self
            .quarters
            .back()
            .is_none_or(|q| t.at.div_euclid(QUARTER_SECS) != q.at.div_euclid(QUARTER_SECS));
        if new_quarter {
            self.quarters.push_back(Point::from(&t));
            if self.quarters.len() > QUARTERS {
                self.quarters.pop_front();
            }
        }
        self.minutes.push_back(t);
        if self.minutes.len() > MINUTES {
            self.minutes.pop_front();
        }
    }

    /// The overview's `traffic`: totals since start and over the last hour, the request rate
    /// over the last minute, and the per-minute and per-quarter-hour series ending at `now`.
    pub fn view(&self, now: &Totals) -> Value {
        let oldest = self.minutes.front().cloned().unwrap_or_default();
        let last_minute = self
            .minutes
            .iter()
            .rev()
            .find(|m| now.at - m.at >= 60)
            .or(self.minutes.front());
        // Over the last full minute; before a minute of history, what came so far (never
        // extrapolated from a few seconds).
        let rpm = match last_minute {
            Some(m) if now.at - m.at >= 60 => {
                now.requests.saturating_sub(m.requests) as f64 * 60.0 / (now.at - m.at) as f64
            }
            Some(m) => now.requests.saturating_sub(m.requests) as f64,
            None => 0.0,
        };
        let mut minutes: Vec<Point> = self.minutes.iter().map(Point::from).collect();
        minutes.push(Point::from(now));
        let mut quarters: Vec<Point> = self.quarters.iter().copied().collect();
        quarters.push(Point::from(now));
        json!({
            "since_start": {
                "requests": now.requests,
                "refusals_by_code": now.refusals,
                "redactions_by_entity": now.redactions,
                "tokens": now.tokens,
            },
            "last_hour": {
                "requests": now.requests.saturating_sub(oldest.requests),
                "refusals_by_code": difference(&now.refusals, &oldest.refusals),
                "redactions_by_entity": difference(&now.redactions, &oldest.redactions),
                "tokens": now.tokens.saturating_sub(oldest.tokens),
            },
            "requests_per_minute": (rpm * 10.0).round() / 10.0,
            "per_minute": series(&minutes),
            "per_quarter_hour": series(&quarters),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(at: i64, requests: u64, refused: u64) -> Totals {
        Totals {
            at,
            requests,
            refusals: [("rate_limited".to_string(), refused)]
                .into_iter()
                .collect(),
            redactions: BTreeMap::new(),
            tokens: requests * 10,
        }
    }

    #[test]
    fn the_charts_are_differences_and_the_last_hour_forgets_older_minutes() {
        let mut h = History::default();
        for m in 0..100 {
            h.record(totals(m * 60, m as u64 * 2, m as u64));
        }
        let v = h.view(&totals(100 * 60, 205, 100));
        let per_minute = v["per_minute"].as_array().unwrap();
        assert_eq!(per_minute.len(), MINUTES);
        assert_eq!(per_minute[0]["requests"], 2);
        assert_eq!(per_minute.last().unwrap()["requests"], 7);
        // The hour window starts at minute 39: 205 - 78.
        assert_eq!(v["last_hour"]["requests"], 127);
        assert_eq!(v["last_hour"]["refusals_by_code"]["rate_limited"], 61);
        assert_eq!(v["since_start"]["requests"], 205);
        assert_eq!(v["requests_per_minute"], 7.0);
        // Quarter hours: minutes 0, 15, ..., 90, then now.
        let q = v["per_quarter_hour"].as_array().unwrap();
        assert_eq!(q.len(), 7);
        assert_eq!(q[0]["requests"], 30);
    }

    #[test]
    fn with_no_history_the_figures_are_since_start() {
        let v = History::default().view(&totals(60, 4, 1));
        assert_eq!(v["last_hour"]["requests"], 4);
        assert_eq!(v["per_minute"].as_array().unwrap().len(), 0);
        assert_eq!(v["requests_per_minute"], 0.0);
    }
}
