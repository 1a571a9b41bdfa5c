//! Rate limits and token budgets: requests per minute (`rpm`), tokens per minute (`tpm`) and
//! token budgets per day or month, per key and per org.
//!
//! A limit is a counter in a window. Minute windows slide: the estimate is the previous
//! minute's count weighted by how much of it still overlaps the last 60 seconds, plus the
//! current minute's (as Cloudflare's), so a client cannot get twice its limit by straddling a
//! boundary. Budget windows are calendar days or months, UTC, and do not slide.
//!
//! Counters live in this process ([`Local`]) or, with `[fleet] redis_url`, in Redis, shared by
//! every sidecar ([`fleet::Fleet`]). Refused amounts are never counted, so a client that waits
//! for `Retry-After` gets in. A request is refused when nothing is left of a limit; token
//! counters are taken from an estimate (at most what is left) before the request and settled
//! from the answer's usage after it ([`Limiter::settle`]), so one answer can overshoot a
//! limit, the next request is refused.
//!
//! Plain Rust and tokio; no pingora types.

pub mod fleet;

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use time::OffsetDateTime;

/// The window of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }
}

impl std::str::FromStr for Period {
    type Err = ();
    fn from_str(s: &str) -> Result<Period, ()> {
        match s {
            "day" => Ok(Period::Day),
            "month" => Ok(Period::Month),
            _ => Err(()),
        }
    }
}

/// A token budget: at most `tokens` (input and output) per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Budget {
    pub tokens: u64,
    pub period: Period,
}

/// The limits of a key or an org (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub budget: Option<Budget>,
}

/// Shown as `rpm`, `tpm`, `budget_tokens` and `budget_period` (`null`: none).
impl Serialize for Limits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Limits", 4)?;
        st.serialize_field("rpm", &self.rpm)?;
        st.serialize_field("tpm", &self.tpm)?;
        st.serialize_field("budget_tokens", &self.budget.map(|b| b.tokens))?;
        st.serialize_field("budget_period", &self.budget.map(|b| b.period))?;
        st.end()
    }
}

impl Limits {
    /// Whether any token limit (tpm or budget) is set.
    pub fn counts_tokens(&self) -> bool {
        self.tpm.is_some() || self.budget.is_some()
    }
}

/// Whose counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Key,
    Org,
}

/// A counter's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// Sliding 60 seconds.
    Minute,
    /// Calendar day or month, UTC.
    Calendar(Period),
}

/// Where `now` falls in a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    /// Which window (minutes, days or months since the epoch).
    pub index: i64,
    /// The weight of the previous window's count (sliding windows; 0 for calendar ones).
    pub weight: f64,
    /// Seconds until this window ends.
    pub left: f64,
}

impl Window {
    /// Where `now` is in this window.
    pub fn at(self, now: OffsetDateTime) -> Position {
        let t = now.unix_timestamp_nanos() as f64 / 1e9;
        match self {
            Window::Minute => {
                let index = (t / 60.0).floor();
                let elapsed = t - index * 60.0;
                Position {
                    index: index as i64,
                    weight: 1.0 - elapsed / 60.0,
                    left: 60.0 - elapsed,
                }
            }
            Window::Calendar(Period::Day) => {
                let index = (t / 86_400.0).floor();
                Position {
                    index: index as i64,
                    weight: 0.0,
                    left: (index + 1.0) * 86_400.0 - t,
                }
            }
            Window::Calendar(Period::Month) => {
                let d = now.date();
                let (y, m) = (d.year(), d.month() as u8);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let next = time::Date::from_calendar_date(
                    ny,
                    time::Month::try_from(nm).unwrap_or(time::Month::January),
                    1,
                )
                .map(|d| d.midnight().assume_utc().unix_timestamp() as f64)
                .unwrap_or(t + 86_400.0);
                Position {
                    index: i64::from(y) * 12 + i64::from(m) - 1,
                    weight: 0.0,
                    left: next - t,
                }
            }
        }
    }

    /// How long a window's counter must be kept (it is the previous one for a while).
    pub fn ttl_secs(self) -> u64 {
        match self {
            Window::Minute => 180,
            Window::Calendar(Period::Day) => 2 * 86_400 + 3_600,
            Window::Calendar(Period::Month) => 32 * 86_400,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Window::Minute => "m",
            Window::Calendar(Period::Day) => "d",
            Window::Calendar(Period::Month) => "mo",
        }
    }
}

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Requests,
    Tokens,
}

/// One counter to take from.
#[derive(Debug, Clone)]
pub struct Ask {
    /// `key:<id>:rpm`, `org:<id>:budget:mo`...: names the counter (ids, never a key).
    pub name: String,
    pub window: Window,
    pub limit: u64,
    /// How much to take: at most what is left (a request is refused only when nothing is).
    pub amount: u64,
    pub measure: Measure,
}

impl Ask {
    fn new(scope: Scope, id: &str, what: &str, window: Window, limit: u64, amount: u64) -> Ask {
        let scope = match scope {
            Scope::Key => "key",
            Scope::Org => "org",
        };
        Ask {
            name: format!("{scope}:{id}:{what}:{}", window.label()),
            window,
            limit,
            amount: amount.min(limit),
            measure: if what == "rpm" {
                Measure::Requests
            } else {
                Measure::Tokens
            },
        }
    }

    /// The request counters of `limits` (its rpm).
    pub fn requests(scope: Scope, id: &str, limits: &Limits) -> Option<Ask> {
        let rpm = limits.rpm?;
        Some(Ask::new(
            scope,
            id,
            "rpm",
            Window::Minute,
            u64::from(rpm),
            1,
        ))
    }

    /// The token counters of `limits` (tpm, budget), taking `tokens` from each.
    pub fn tokens(scope: Scope, id: &str, limits: &Limits, tokens: u64) -> Vec<Ask> {
        let mut out = Vec::new();
        if let Some(tpm) = limits.tpm {
            out.push(Ask::new(
                scope,
                id,
                "tpm",
                Window::Minute,
                u64::from(tpm),
                tokens,
            ));
        }
        if let Some(b) = limits.budget {
            out.push(Ask::new(
                scope,
                id,
                "budget",
                Window::Calendar(b.period),
                b.tokens,
                tokens,
            ));
        }
        out
    }

    /// The refusal when nothing is left: a budget's is `budget_exceeded`, a rate's
    /// `rate_limited`.
    /// `prev` and `curr` are the window's counts that left no room.
    pub fn refusal(&self, prev: i64, curr: i64, pos: Position) -> Refusal {
        let retry_after = retry_after(prev, curr, self, pos);
        match self.window {
            Window::Calendar(_) => Refusal::Budget { retry_after },
            Window::Minute => Refusal::Rate {
                retry_after,
                measure: self.measure,
                quota: Quota {
                    limit: self.limit,
                    remaining: 0,
                    reset_ms: until_full(prev, curr, pos, self.window),
                },
            },
        }
    }
}

/// What is left of one counter, as the `x-ratelimit-*` headers say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    /// Units left after this request's take.
    pub remaining: u64,
    /// Milliseconds until the counter is back to its whole limit (everything counted in it
    /// has left the sliding window).
    pub reset_ms: u64,
}

impl Quota {
    /// The quota of a window whose counts are `prev` and `curr` (this request's take included).
    pub fn of(prev: i64, curr: i64, pos: Position, window: Window, limit: u64) -> Quota {
        Quota {
            limit,
            remaining: room(prev, curr, pos.weight, limit),
            reset_ms: until_full(prev, curr, pos, window),
        }
    }

    /// The tightest minute limit on `measure` among `taken` (the one with the least left; the
    /// later reset between equals): what the `x-ratelimit-*-requests`/`-tokens` headers say.
    pub fn tightest(taken: &[Taken], measure: Measure) -> Option<Quota> {
        taken
            .iter()
            .filter(|t| t.measure == measure && t.window == Window::Minute)
            .map(|t| t.quota)
            .min_by_key(|q| (q.remaining, std::cmp::Reverse(q.reset_ms)))
    }
}

/// A duration as OpenAI's `x-ratelimit-reset-*` headers write it (Go's notation): `0s`,
/// `250ms`, `1.5s`, `6m0s`, `1m30.25s`.
pub fn duration_text(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (minutes, rest) = (ms / 60_000, ms % 60_000);
    let secs = if rest % 1000 == 0 {
        format!("{}", rest / 1000)
    } else {
        let frac = format!("{:03}", rest % 1000);
        format!("{}.{}", rest / 1000, frac.trim_end_matches('0'))
    };
    if minutes == 0 {
        format!("{secs}s")
    } else {
        format!("{minutes}m{secs}s")
    }
}

/// Milliseconds until counts `prev` (the previous window's) and `curr` are no longer counted:
/// a sliding minute's own count decays over the next minute, the previous one's by the end
/// of this one; a calendar window's count ends with the window.
fn until_full(prev: i64, curr: i64, pos: Position, window: Window) -> u64 {
    let secs = match window {
        Window::Minute if curr > 0 => pos.left + 60.0,
        Window::Minute if prev > 0 && pos.weight > 0.0 => pos.left,
        Window::Calendar(_) if curr > 0 => pos.left,
        _ => 0.0,
    };
    (secs * 1000.0).ceil().max(0.0) as u64
}

/// What was taken from one counter: to correct it later with [`Limiter::adjust`].
#[derive(Debug, Clone)]
pub struct Taken {
    pub name: String,
    pub window: Window,
    pub index: i64,
    pub amount: u64,
    pub measure: Measure,
    /// What is left after this take (an estimate in a fleet: as of this sidecar's last call
    /// to Redis for the counter, plus what it holds leased).
    pub quota: Quota,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A rate limit (rpm or tpm): retry after this many seconds.
    Rate {
        retry_after: u64,
        measure: Measure,
        quota: Quota,
    },
    /// A token budget is spent: it renews in this many seconds.
    Budget { retry_after: u64 },
    /// The shared counters cannot be reached and `on_redis_error = "deny"`.
    Unavailable,
}

/// What is left of `limit`: `limit - prev * weight - curr`, rounded down (never negative).
pub fn room(prev: i64, curr: i64, weight: f64, limit: u64) -> u64 {
    let left = limit as f64 - (prev.max(0) as f64) * weight - curr as f64 + 1e-9;
    if left < 1.0 {
        0
    } else {
        left.floor() as u64
    }
}

/// Seconds until one more unit fits, given the counts when none did: at least 1, and for a
/// minute window at most 60 (a retry then may meet the previous minute's decaying count and
/// get a new, shorter hint).
pub fn retry_after(prev: i64, curr: i64, ask: &Ask, pos: Position) -> u64 {
    let (prev, curr) = (prev.max(0) as f64, curr.max(0) as f64);
    let (limit, amount) = (ask.limit as f64, 1.0);
    let wait = match ask.window {
        Window::Calendar(_) => pos.left,
        Window::Minute => {
            let room = limit - amount;
            if curr <= room && prev > 0.0 {
                // The previous minute's weight decays linearly over this one.
                let w = (room - curr) / prev;
                (pos.weight - w).max(0.0) * 60.0
            } else if curr > 0.0 {
                // Not before this minute ends; then this minute's count decays.
                (pos.left + (1.0 - (room / curr).min(1.0)).max(0.0) * 60.0).min(60.0)
            } else {
                pos.left
            }
        }
    };
    (wait - 1e-6).ceil().max(1.0) as u64
}

/// One counter in this process.
#[derive(Debug, Default)]
struct Slot {
    index: i64,
    prev: i64,
    curr: i64,
}

impl Slot {
    fn roll(&mut self, index: i64) {
        if index == self.index {
            return;
        }
        self.prev = if index == self.index + 1 {
            self.curr
        } else {
            0
        };
        self.curr = 0;
        self.index = index;
    }
}

/// Counters of this process alone.
#[derive(Debug, Default)]
pub struct Local {
    slots: Mutex<HashMap<String, Slot>>,
}

/// Counters whose windows ended this long ago are dropped on the next sweep.
const SWEEP_EVERY: usize = 4096;

impl Local {
    /// Take every ask or none.
    pub fn take(&self, asks: &[Ask], now: OffsetDateTime) -> Result<Vec<Taken>, Refusal> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() > SWEEP_EVERY {
            let minute = Window::Minute.at(now).index;
            slots.retain(|name, s| !name.ends_with(":m") || s.index + 1 >= minute);
        }
        // Check all first, then count: nothing is taken from a request that is refused.
        let mut taken = Vec::with_capacity(asks.len());
        for a in asks {
            let pos = a.window.at(now);
            let slot = slots.entry(a.name.clone()).or_default();
            slot.roll(pos.index);
            let room = room(slot.prev, slot.curr, pos.weight, a.limit);
            if room == 0 {
                return Err(a.refusal(slot.prev, slot.curr, pos));
            }
            let amount = a.amount.min(room);
            taken.push(Taken {
                name: a.name.clone(),
                window: a.window,
                index: pos.index,
                amount,
                measure: a.measure,
                quota: Quota::of(slot.prev, slot.curr + amount as i64, pos, a.window, a.limit),
            });
        }
        for t in &taken {
            if let Some(slot) = slots.get_mut(&t.name) {
                slot.curr += t.amount as i64;
            }
        }
        Ok(taken)
    }

    /// Add `delta` (negative: give back) to a counter's window, if it is still counted.
    pub fn adjust(&self, t: &Taken, delta: i64) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get_mut(&t.name) {
            if slot.index == t.index {
                slot.curr = (slot.curr + delta).max(0);
            } else if slot.index == t.index + 1 {
                slot.prev = (slot.prev + delta).max(0);
            }
        }
    }
}

/// The limiter the data plane uses: shared counters when a fleet is configured, else local.
pub struct Limiter {
    local: Local,
    fleet: Option<fleet::Fleet>,
}

impl Limiter {
    /// Per-process counters only.
    pub fn local() -> Limiter {
        Limiter {
            local: Local::default(),
            fleet: None,
        }
    }

    /// Counters shared through Redis (falling back as configured).
    pub fn shared(fleet: fleet::Fleet) -> Limiter {
        Limiter {
            local: Local::default(),
            fleet: Some(fleet),
        }
    }

    /// Take every ask or none.
    pub async fn take(&self, asks: &[Ask]) -> Result<Vec<Taken>, Refusal> {
        if asks.is_empty() {
            return Ok(Vec::new());
        }
        let now = OffsetDateTime::now_utc();
        match &self.fleet {
            None => self.local.take(asks, now),
            Some(f) => match f.take(asks, now).await {
                Ok(r) => r,
                Err(fleet::Unreachable) => match f.fallback() {
                    crate::config::RedisFallback::Deny => Err(Refusal::Unavailable),
                    crate::config::RedisFallback::Local => self.local.take(asks, now),
                },
            },
        }
    }

    /// Settle what was taken: `Some(used)` replaces each estimate by the actual usage,
    /// `None` gives everything back. Never waits: shared counters are corrected in the
    /// background.
    pub fn settle(&self, taken: &[Taken], used: Option<u64>) {
        for t in taken {
            let used = used.unwrap_or(0).min(i64::MAX as u64) as i64;
            let delta = used - t.amount as i64;
            if delta == 0 {
                continue;
            }
            match &self.fleet {
                Some(f) if f.is_up() => f.adjust(t, delta),
                _ => self.local.adjust(t, delta),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    fn rpm(n: u32) -> Ask {
        Ask::requests(
            Scope::Key,
            "k1",
            &Limits {
                rpm: Some(n),
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn a_minute_limit_admits_its_count_then_refuses_with_a_retry_hint() {
        let l = Local::default();
        let t0 = at(1_800_000_000); // the start of a minute
        for _ in 0..3 {
            l.take(&[rpm(3)], t0).unwrap();
        }
        let Err(Refusal::Rate { retry_after, .. }) = l.take(&[rpm(3)], t0) else {
            panic!("not refused");
        };
        // All three in this minute: not before it ends, then the weight must decay to 2/3
        // (80 s), said as at most a minute.
        assert_eq!(retry_after, 60);
        // Straddling the boundary does not double the limit.
        assert!(l.take(&[rpm(3)], at(1_800_000_061)).is_err());
        // In once the previous minute's weight has decayed enough.
        let Err(Refusal::Rate { retry_after, .. }) = l.take(&[rpm(3)], at(1_800_000_060)) else {
            panic!("not refused");
        };
        assert_eq!(retry_after, 20);
        assert!(l.take(&[rpm(3)], at(1_800_000_080)).is_ok());
    }

    #[test]
    fn all_or_nothing_at_most_what_is_left_and_settled() {
        let l = Local::default();
        let t0 = at(1_800_000_000);
        let limits = Limits {
            tpm: Some(100),
            budget: Some(Budget {
                tokens: 150,
                period: Period::Day,
            }),
            ..Default::default()
        };
        let ask = |n| Ask::tokens(Scope::Org, "o", &limits, n);
        let taken = l.take(&ask(80), t0).unwrap();
        assert_eq!(taken[0].amount, 80);
        // The answer used 20: the 80 become 20.
        l.adjust(&taken[0], -60);
        l.adjust(&taken[1], -60);
        // At most what is left is taken: 80 of the minute's 100 remain, 130 of the day's.
        let taken = l.take(&ask(500), t0).unwrap();
        assert_eq!((taken[0].amount, taken[1].amount), (80, 130));
        // Nothing left of the minute: refused, and the budget is untouched by the refusal.
        assert!(matches!(l.take(&ask(1), t0), Err(Refusal::Rate { .. })));
        // The answer used 130: the minute's count overshoots its 100 by 50 (that answer was
        // already under way), the day's is exactly spent.
        l.adjust(&taken[0], 50);
        // 150 of the day's 150 are spent: over budget until midnight UTC.
        let budget_only = Limits {
            budget: limits.budget,
            ..Default::default()
        };
        let Err(Refusal::Budget { retry_after }) = l.take(
            &Ask::tokens(Scope::Org, "o", &budget_only, 1),
            at(1_800_000_000 + 120),
        ) else {
            panic!("not over budget");
        };
        let midnight = (1_800_000_000 / 86_400 + 1) * 86_400;
        assert_eq!(retry_after as i64, midnight - 1_800_000_120);
    }

    #[test]
    fn each_take_says_what_is_left_and_when_the_counter_is_whole_again() {
        let l = Local::default();
        let t0 = at(1_800_000_015); // 15 s into a minute
        let quota = |r: Result<Vec<Taken>, Refusal>| r.unwrap()[0].quota;
        let q = quota(l.take(&[rpm(3)], t0));
        // This minute's count decays over the next one: whole again 45 + 60 s from now.
        assert_eq!(
            q,
            Quota {
                limit: 3,
                remaining: 2,
                reset_ms: 105_000
            }
        );
        assert_eq!(quota(l.take(&[rpm(3)], t0)).remaining, 1);
        assert_eq!(quota(l.take(&[rpm(3)], t0)).remaining, 0);
        // Refused: nothing left, and the same reset.
        let Err(Refusal::Rate {
            measure, quota: q, ..
        }) = l.take(&[rpm(3)], t0)
        else {
            panic!("not refused");
        };
        assert_eq!(
            (measure, q.remaining, q.reset_ms),
            (Measure::Requests, 0, 105_000)
        );
        // 30 s into the next minute: half of the previous minute's 3 still count (1.5), so one
        // is left after this take; whole again 90 s from now (this take decays next minute).
        let q = quota(l.take(&[rpm(3)], at(1_800_000_090)));
        assert_eq!((q.remaining, q.reset_ms), (0, 90_000));
        // Among several counters on one measure the headers give the one with the least left.
        let taken = |name: &str, remaining, reset_ms| Taken {
            name: name.into(),
            window: Window::Minute,
            index: 0,
            amount: 1,
            measure: Measure::Tokens,
            quota: Quota {
                limit: 100,
                remaining,
                reset_ms,
            },
        };
        let all = [
            taken("key", 50, 1_000),
            taken("org", 7, 2_000),
            taken("org2", 7, 3_000),
        ];
        assert_eq!(
            Quota::tightest(&all, Measure::Tokens).map(|q| (q.remaining, q.reset_ms)),
            Some((7, 3_000))
        );
        assert_eq!(Quota::tightest(&all, Measure::Requests), None);
    }

    #[test]
    fn durations_are_written_as_openai_writes_them() {
        for (ms, text) in [
            (0, "0s"),
            (1, "1ms"),
            (999, "999ms"),
            (1_000, "1s"),
            (1_500, "1.5s"),
            (12_345, "12.345s"),
            (59_990, "59.99s"),
            (60_000, "1m0s"),
            (90_250, "1m30.25s"),
            (360_000, "6m0s"),
            (7_200_000, "120m0s"),
        ] {
            assert_eq!(duration_text(ms), text, "{ms}");
        }
    }

    #[test]
    fn windows() {
        // 2026-12-02T18:00:30Z
        let t = at(1_796_234_430);
        let m = Window::Minute.at(t);
        assert!((m.weight - 0.5).abs() < 1e-9 && (m.left - 30.0).abs() < 1e-9);
        let mo = Window::Calendar(Period::Month).at(t);
        assert!((mo.left - (1_798_761_600 - 1_796_234_430) as f64).abs() < 1e-6);
        assert_eq!(mo.index, 2026 * 12 + 11);
        assert_eq!(mo.weight, 0.0);
        // A request larger than the whole limit asks for the limit.
        let a = Ask::tokens(
            Scope::Key,
            "k",
            &Limits {
                tpm: Some(10),
                ..Default::default()
            },
            1_000,
        );
        assert_eq!(a[0].amount, 10);
        assert_eq!(a[0].name, "key:k:tpm:m");
    }
}
