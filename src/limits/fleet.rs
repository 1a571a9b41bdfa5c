//! Counters shared by every sidecar of a fleet, in Redis.
//!
//! Each take runs one Lua script that reads the window's counts and adds what fits, atomically,
//! so N sidecars together admit a limit once, not N times. To keep Redis off most requests, a
//! take of a large limit leases a little more than it needs (1% of the limit) and serves the
//! next requests from the lease; a lease unused after a second goes back. Small limits are
//! counted in Redis request by request, exactly.
//!
//! Every call is bounded (`[fleet] redis_timeout_ms`) and runs on a runtime of its own. When a
//! call fails, Redis is marked down (once: a log line and `sluice_fleet_redis_up 0`), requests
//! stop waiting for it and get the configured fallback, and a background task reconnects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};
use redis::aio::MultiplexedConnection;
use secrecy::ExposeSecret;
use time::OffsetDateTime;

use super::{Ask, Quota, Refusal, Taken};
use crate::config::RedisFallback;

/// Redis could not be asked (down, slow, or not connected yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreachable;

/// The fleet's metrics.
#[derive(Clone)]
pub struct FleetMetrics {
    /// `sluice_fleet_redis_up`: 1 while Redis answers.
    pub up: IntGauge,
    /// `sluice_fleet_redis_errors_total`: failed or timed-out Redis calls.
    pub errors: IntCounter,
    /// `sluice_fleet_local_fallback_total`: limit checks made without Redis.
    pub fallbacks: IntCounter,
}

/// How long a lease is served from before what is left goes back.
const LEASE_FOR: Duration = Duration::from_secs(1);
/// How long the first connection is waited for at start.
const FIRST_CONNECT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The take script: KEYS = this window's counter, the previous window's; ARGV = limit, want,
/// weight of the previous window, ttl. Adds min(want, room) when anything is left (room >= 1).
/// Returns {granted, prev, curr before}.
const TAKE: &str = r"
local limit = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local weight = tonumber(ARGV[3])
local curr = tonumber(redis.call('GET', KEYS[1]) or '0')
-- Given back more than it held (Redis restarted or failed over under requests in flight): the
-- window starts again from nothing, not from below it.
if curr < 0 then redis.call('SET', KEYS[1], 0) curr = 0 end
local prev = 0
if weight > 0 then prev = tonumber(redis.call('GET', KEYS[2]) or '0') end
if prev < 0 then prev = 0 end
local room = math.floor(limit - prev * weight - curr + 0.000001)
if room < 1 then return {0, prev, curr} end
local grant = math.min(want, room)
redis.call('INCRBY', KEYS[1], grant)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return {grant, prev, curr}
";

struct Lease {
    units: u64,
    /// Last used plus [`LEASE_FOR`]: an idle lease goes back to Redis.
    until: Instant,
    /// A take is fetching more for this lease: others take only what they need meanwhile
    /// (no herd of concurrent batch leases when it runs out).
    refilling: bool,
    /// What Redis had left beyond this lease at the last call for the counter, and when the
    /// counter is whole again: what a take served from the lease reports.
    left: u64,
    whole_at: Instant,
}

impl Lease {
    fn new() -> Lease {
        let now = Instant::now();
        Lease {
            units: 0,
            until: now + LEASE_FOR,
            refilling: false,
            left: 0,
            whole_at: now,
        }
    }
}

/// What a lease can do for a take.
enum FromLease {
    /// Taken from the lease: what is left (Redis's last word plus the rest of the lease).
    Served(Quota),
    /// Ask Redis for the amount and this much more for the lease.
    Refill(u64),
}

struct Inner {
    handle: tokio::runtime::Handle,
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    connecting: AtomicBool,
    up: AtomicBool,
    timeout: Duration,
    fallback: RedisFallback,
    script: redis::Script,
    leases: Mutex<HashMap<(String, i64), Lease>>,
    metrics: FleetMetrics,
}

/// Shared counters in Redis.
pub struct Fleet {
    inner: Arc<Inner>,
}

/// A counter's Redis key for window `index`. The braces are a hash tag: both windows of one
/// counter are in the same Redis Cluster slot.
fn redis_key(name: &str, index: i64) -> String {
    format!("sluice:{{{name}}}:{index}")
}

impl Fleet {
    /// Connect to Redis at `url` (waiting up to 2 s for the first connection; later ones are
    /// made in the background). Errors never quote the URL (it may hold a password).
    /// A `rediss://` URL is verified against `tls`'s CAs (`[tls] ca_file`) or, without them,
    /// the system's roots.
    pub fn start(
        url: &secrecy::SecretString,
        timeout: Duration,
        fallback: RedisFallback,
        metrics: FleetMetrics,
        tls: &crate::config::Tls,
    ) -> Result<Fleet, String> {
        let invalid = |_| "fleet.redis_url is not a valid Redis URL".to_string();
        let client = if url.expose_secret().starts_with("rediss://") {
            let root_cert = tls.ca.as_ref().map(|ca| ca.pem().into_bytes());
            redis::Client::build_with_tls(
                url.expose_secret(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert,
                },
            )
            .map_err(invalid)?
        } else {
            redis::Client::open(url.expose_secret()).map_err(invalid)?
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("sluice-fleet".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(std::future::pending::<()>());
            })
            .map_err(|e| format!("cannot start the fleet thread: {e}"))?;
        let handle = rx
            .recv()
            .map_err(|_| "the fleet thread did not start".to_string())??;
        metrics.up.set(0);
        let inner = Arc::new(Inner {
            handle,
            client,
            conn: Mutex::new(None),
            connecting: AtomicBool::new(false),
            up: AtomicBool::new(false),
            timeout,
            fallback,
            script: redis::Script::new(TAKE),
            leases: Mutex::new(HashMap::new()),
            metrics,
        });
        let f = Fleet { inner };
        f.inner.reconnect(false);
        let deadline = Instant::now() + FIRST_CONNECT;
        while !f.is_up() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !f.is_up() {
            tracing::warn!(
                fallback = ?fallback,
                "redis (fleet.redis_url) not reachable at start; limits use the fallback until it is"
            );
        }
        let sweeper = Arc::downgrade(&f.inner);
        f.inner.handle.spawn(async move {
            loop {
                tokio::time::sleep(LEASE_FOR / 2).await;
                let Some(inner) = sweeper.upgrade() else {
                    return;
                };
                inner.return_expired_leases();
            }
        });
        Ok(f)
    }

    /// What limited requests get while Redis is down.
    pub fn fallback(&self) -> RedisFallback {
        self.inner.fallback
    }

    /// Whether Redis answered the last call.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// Take every ask or none, in Redis (or from this process's leases).
    pub async fn take(
        &self,
        asks: &[Ask],
        now: OffsetDateTime,
    ) -> Result<Result<Vec<Taken>, Refusal>, Unreachable> {
        let inner = &self.inner;
        if !self.is_up() {
            inner.metrics.fallbacks.inc();
            inner.reconnect(true);
            return Err(Unreachable);
        }
        let mut taken: Vec<Taken> = Vec::with_capacity(asks.len());
        for a in asks {
            let pos = a.window.at(now);
            let mut t = Taken {
                name: a.name.clone(),
                window: a.window,
                index: pos.index,
                amount: a.amount,
                measure: a.measure,
                quota: Quota {
                    limit: a.limit,
                    remaining: 0,
                    reset_ms: 0,
                },
            };
            let batch = match inner.take_from_lease(&t, a.limit / 100) {
                FromLease::Served(quota) => {
                    t.quota = quota;
                    taken.push(t);
                    continue;
                }
                FromLease::Refill(batch) => batch,
            };
            let result = inner.eval(a, pos.index, pos.weight, a.amount + batch).await;
            if batch > 0 {
                inner.refilled(&t);
            }
            match result {
                Ok((granted, prev, curr)) if granted >= 1 => {
                    let granted = granted as u64;
                    t.amount = a.amount.min(granted);
                    let global = Quota::of(prev, curr + granted as i64, pos, a.window, a.limit);
                    t.quota = inner.lease(&t, granted - t.amount, global);
                    taken.push(t);
                }
                Ok((_, prev, curr)) => {
                    for t in &taken {
                        inner.give_back(t, t.amount);
                    }
                    return Ok(Err(a.refusal(prev, curr, pos)));
                }
                Err(Unreachable) => {
                    for t in &taken {
                        inner.give_back(t, t.amount);
                    }
                    inner.metrics.fallbacks.inc();
                    return Err(Unreachable);
                }
            }
        }
        Ok(Ok(taken))
    }

    /// Correct a taken counter by `delta` in the background (a lease absorbs what it can).
    pub fn adjust(&self, t: &Taken, delta: i64) {
        let inner = &self.inner;
        if delta < 0 {
            inner.give_back(t, delta.unsigned_abs());
            return;
        }
        let mut need = delta as u64;
        {
            let mut leases = inner.leases.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(l) = leases.get_mut(&(t.name.clone(), t.index)) {
                let from_lease = l.units.min(need);
                l.units -= from_lease;
                need -= from_lease;
            }
        }
        if need > 0 {
            inner.incr(t, need as i64);
        }
    }
}

impl Inner {
    /// Serve `t` from a live lease of its window, if it holds enough.
    /// Serve `t` from its window's lease when that holds enough; else say how much more to
    /// lease (`batch`, or nothing while another take is refilling it).
    fn take_from_lease(&self, t: &Taken, batch: u64) -> FromLease {
        if batch == 0 {
            return FromLease::Refill(0);
        }
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let l = leases
            .entry((t.name.clone(), t.index))
            .or_insert_with(Lease::new);
        if l.units >= t.amount {
            l.units -= t.amount;
            let now = Instant::now();
            l.until = now + LEASE_FOR;
            return FromLease::Served(Quota {
                limit: t.quota.limit,
                remaining: l.left.saturating_add(l.units),
                reset_ms: l.whole_at.saturating_duration_since(now).as_millis() as u64,
            });
        }
        if l.refilling {
            return FromLease::Refill(0);
        }
        l.refilling = true;
        FromLease::Refill(batch)
    }

    /// The refill of `t`'s lease is over (whatever it got).
    fn refilled(&self, t: &Taken) {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = leases.get_mut(&(t.name.clone(), t.index)) {
            l.refilling = false;
        }
    }

    /// Keep `units` more of `t`'s window leased, and Redis's word on the counter (`global`,
    /// after this take): returns what is left for this take to report, the lease included.
    fn lease(&self, t: &Taken, units: u64, global: Quota) -> Quota {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let key = (t.name.clone(), t.index);
        if units == 0 && !leases.contains_key(&key) {
            return global;
        }
        let l = leases.entry(key).or_insert_with(Lease::new);
        let now = Instant::now();
        l.units += units;
        l.until = now + LEASE_FOR;
        l.left = global.remaining;
        l.whole_at = now + Duration::from_millis(global.reset_ms);
        Quota {
            remaining: global.remaining.saturating_add(l.units),
            ..global
        }
    }

    /// Give `units` of `t` back: into its lease when one is live, else to Redis.
    fn give_back(&self, t: &Taken, units: u64) {
        {
            let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(l) = leases.get_mut(&(t.name.clone(), t.index)) {
                if l.until > Instant::now() {
                    l.units += units;
                    return;
                }
            }
        }
        self.incr(t, -(units as i64));
    }

    /// Give back what expired leases still hold.
    fn return_expired_leases(self: &Arc<Self>) {
        let now = Instant::now();
        let expired: Vec<((String, i64), u64)> = {
            let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<(String, i64)> = leases
                .iter()
                .filter(|(_, l)| l.until <= now)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| leases.remove(&k).map(|l| (k, l.units)))
                .filter(|(_, units)| *units > 0)
                .collect()
        };
        for ((name, index), units) in expired {
            let key = redis_key(&name, index);
            self.spawn_incr(key, -(units as i64), 0);
        }
    }

    /// Add `delta` to a counter in the background (bounded; failures are counted).
    fn incr(&self, t: &Taken, delta: i64) {
        self.spawn_incr(
            redis_key(&t.name, t.index),
            delta,
            t.window.ttl_secs() as i64,
        );
    }

    fn spawn_incr(&self, key: String, delta: i64, ttl: i64) {
        let Some(mut conn) = self.connection() else {
            return;
        };
        let timeout = self.timeout * 10;
        let errors = self.metrics.errors.clone();
        self.handle.spawn(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("INCRBY").arg(&key).arg(delta).ignore();
            if ttl > 0 {
                pipe.cmd("EXPIRE").arg(&key).arg(ttl).arg("NX").ignore();
            }
            let done = tokio::time::timeout(timeout, pipe.query_async::<()>(&mut conn)).await;
            if !matches!(done, Ok(Ok(()))) {
                errors.inc();
            }
        });
    }

    fn connection(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Run the take script for `a` in window `index`: {granted, prev, curr}.
    async fn eval(
        self: &Arc<Self>,
        a: &Ask,
        index: i64,
        weight: f64,
        want: u64,
    ) -> Result<(i64, i64, i64), Unreachable> {
        let Some(mut conn) = self.connection() else {
            self.down();
            return Err(Unreachable);
        };
        let (curr, prev) = (redis_key(&a.name, index), redis_key(&a.name, index - 1));
        let script = self.script.clone();
        let (limit, ttl) = (a.limit, a.window.ttl_secs());
        let timeout = self.timeout;
        let call = self.handle.spawn(async move {
            let mut inv = script.prepare_invoke();
            inv.key(curr)
                .key(prev)
                .arg(limit)
                .arg(want)
                .arg(format!("{weight:.6}"))
                .arg(ttl);
            tokio::time::timeout(timeout, inv.invoke_async::<(i64, i64, i64)>(&mut conn)).await
        });
        match call.await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => {
                tracing::debug!(kind = ?e.kind(), "redis call failed");
                self.metrics.errors.inc();
                self.down();
                Err(Unreachable)
            }
            _ => {
                self.metrics.errors.inc();
                self.down();
                Err(Unreachable)
            }
        }
    }

    /// Mark Redis down (said once per outage) and reconnect in the background.
    fn down(self: &Arc<Self>) {
        if self.up.swap(false, Ordering::Relaxed) {
            self.metrics.up.set(0);
            tracing::warn!(
                fallback = ?self.fallback,
                "redis unreachable: limits use the fallback (fleet.on_redis_error) until it is back"
            );
        }
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.reconnect(true);
    }

    /// Connect in the background (one attempt loop at a time), with backoff.
    fn reconnect(self: &Arc<Self>, after_outage: bool) {
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::clone(self);
        let again = Arc::clone(self);
        let task = self.handle.spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(me.timeout.max(Duration::from_millis(50))));
                let attempt = tokio::time::timeout(
                    CONNECT_TIMEOUT * 2,
                    me.client.get_multiplexed_async_connection_with_config(&cfg),
                )
                .await;
                if let Ok(Ok(conn)) = attempt {
                    *me.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
                    me.up.store(true, Ordering::Relaxed);
                    me.metrics.up.set(1);
                    if after_outage {
                        tracing::info!("redis reachable again: limits are shared by the fleet");
                    }
                    me.connecting.store(false, Ordering::Release);
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        });
        // Supervised: a panic in the loop (tokio reports it to the handle) is counted, and a
        // new loop starts after a second; Redis is never left unreconnected.
        self.handle.spawn(async move {
            if task.await.is_err_and(|e| e.is_panic()) {
                crate::supervise::restarted(crate::supervise::Task::Fleet);
                again.connecting.store(false, Ordering::Release);
                tokio::time::sleep(Duration::from_secs(1)).await;
                again.reconnect(after_outage);
            }
        });
    }
}
