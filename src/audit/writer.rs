//! The background writer for proxied-request records: a bounded queue drained by one thread
//! with its own SQLite connection. After the first record of a batch it waits out the 10 ms
//! window, then writes everything queued, 500 records per transaction. A full queue makes the
//! sender wait (backpressure), it never drops a record. [`Writer::close`] flushes everything
//! queued and stops the thread.
//!
//! A batch that cannot be written (disk full, `[store] max_size_mb` reached, store broken) is
//! retried until it is; meanwhile [`Writer::is_failing`] is true and the data plane refuses new
//! requests with 503 `audit_unavailable` instead of letting them pile up behind the writer (and
//! instead of running them unaudited). The outage is logged once when it starts, then every
//! 30 s, and once more when it ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::sync::mpsc;

use super::{append_bounded, Bounded, OrgKeys};
use crate::store::{self, Store};
use crate::vault::Keyring;

/// Longest a record waits in a batch. Short, so that a batch is a short burst of work: on a
/// 2-core host a 100 ms window made bursts long enough to delay the requests sharing the core
/// (load bench: p99 at one connection 3.4 ms -> 1.5 ms, throughput unchanged), and a crash
/// loses less.
pub const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// Most records per transaction.
pub const BATCH_MAX: usize = 500;
/// Queue capacity; senders wait beyond it.
pub const QUEUE: usize = 10_000;

/// The metrics the writer keeps current.
#[derive(Clone)]
pub struct WriterStats {
    /// Records queued, not yet written.
    pub depth: IntGauge,
    /// Time per batch write (one transaction).
    pub write_seconds: Histogram,
    /// Records written.
    pub written: IntCounter,
    /// Batch writes that failed (retried until they succeed).
    pub errors: IntCounter,
    /// 1 while the writer cannot write (requests are refused), else 0.
    pub failing: IntGauge,
}

enum Msg {
    Record(Box<Bounded>),
    Close,
}

/// Handle to the writer thread.
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: WriterStats,
    failing: Arc<AtomicBool>,
}

impl Writer {
    /// Open its own connection to the store and start the thread.
    pub fn start(
        cfg: &crate::config::Store,
        ring: Arc<Keyring>,
        stats: WriterStats,
    ) -> Result<Writer, store::Error> {
        let store = Store::open_limited(&cfg.path, cfg.max_bytes)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let st = stats.clone();
        let failing = Arc::new(AtomicBool::new(false));
        let health = Health {
            failing: failing.clone(),
            since: None,
            last_logged: None,
        };
        let thread = std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || {
                below_the_data_plane();
                let (mut rx, mut health) = (rx, health);
                // Supervised: a panic is counted and the writer resumes on the same queue (the
                // batch it was writing may be lost; what is queued is not).
                crate::supervise::run(crate::supervise::Task::Audit, || {
                    run(&store, &ring, &mut rx, &st, &mut health)
                })
            })
            .map_err(|source| store::Error::Io {
                path: cfg.path.clone(),
                source,
            })?;
        Ok(Writer {
            tx,
            thread: Mutex::new(Some(thread)),
            stats,
            failing,
        })
    }

    /// Whether the writer currently cannot write its records (they are kept and retried).
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Queue a record; waits while the queue is full.
    pub async fn send(&self, r: Bounded) {
        self.stats.depth.inc();
        if self.tx.send(Msg::Record(Box::new(r))).await.is_err() {
            self.stats.depth.dec();
            tracing::error!("audit writer stopped; a request record was not written");
        }
    }

    /// Write everything queued, then stop the thread (blocking).
    pub fn close(&self) {
        let _ = self.tx.blocking_send(Msg::Close);
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

/// How far the writer thread's nice value is raised above the process's (the data plane's):
/// a batch, a burst of work every [`BATCH_WINDOW`], then does not delay the requests sharing
/// its core (at one connection it took the p99 from about 0.5 ms to 1.3 ms). With a core to
/// spare it runs at once all the same; when the CPU is saturated the batches grow, which costs
/// less per record.
pub const NICER: i32 = 10;

/// Raise the calling thread's nice value by [`NICER`] (at most 19; raising one's own needs no
/// privilege); where it cannot be, the writer runs at the process's priority.
fn below_the_data_plane() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's id, and the thread's own errno.
        let rc = unsafe {
            let tid = libc::gettid() as libc::id_t;
            // getpriority may return -1 as a value: errno tells it from a failure.
            *libc::__errno_location() = 0;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            if now == -1 && *libc::__errno_location() != 0 {
                -1
            } else {
                libc::setpriority(libc::PRIO_PROCESS, tid, (now + NICER).min(19))
            }
        };
        if rc != 0 {
            // Read before the log call, which could change errno.
            let error = std::io::Error::last_os_error();
            tracing::debug!(%error, "the audit writer keeps the process's priority");
        }
    }
}

/// The writer's view of an outage.
struct Health {
    failing: Arc<AtomicBool>,
    since: Option<Instant>,
    last_logged: Option<Instant>,
}

/// How often a continuing outage is logged again.
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(30);

impl Health {
    fn failed(&mut self, e: &store::Error, records: usize, stats: &WriterStats) {
        stats.errors.inc();
        let now = Instant::now();
        if self.since.is_none() {
            self.since = Some(now);
            self.failing.store(true, Ordering::Release);
            stats.failing.set(1);
        }
        if self
            .last_logged
            .is_some_and(|t| now.duration_since(t) < OUTAGE_LOG_EVERY)
        {
            return;
        }
        self.last_logged = Some(now);
        let since = self.since.map_or(0, |t| now.duration_since(t).as_secs());
        if e.is_full() {
            tracing::error!(records, failing_for_secs = since, "cannot write audit records: the store's disk is full (or [store] max_size_mb is reached). New requests are refused with 503 audit_unavailable until space is freed (e.g. `sluice audit export` then `sluice audit prune`); queued records are kept and retried");
        } else {
            tracing::error!(error = %e, records, failing_for_secs = since, "cannot write audit records; new requests are refused with 503 audit_unavailable; queued records are kept and retried");
        }
    }

    fn ok(&mut self, stats: &WriterStats) {
        if let Some(since) = self.since.take() {
            self.last_logged = None;
            self.failing.store(false, Ordering::Release);
            stats.failing.set(0);
            tracing::warn!(
                outage_secs = since.elapsed().as_secs(),
                "audit records are written again; requests are accepted"
            );
        }
    }
}

/// The writer's loop, until the queue closes (`Break`).
fn run(
    store: &Store,
    ring: &Keyring,
    rx: &mut mpsc::Receiver<Msg>,
    stats: &WriterStats,
    health: &mut Health,
) -> std::ops::ControlFlow<()> {
    let mut keys = OrgKeys::new(ring).withholding();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the audit writer");
            return std::ops::ControlFlow::Break(());
        }
    };
    rt.block_on(async move {
        let mut batch: Vec<Bounded> = Vec::with_capacity(BATCH_MAX);
        let mut closing = false;
        while !closing {
            match rx.recv().await {
                Some(Msg::Record(r)) => batch.push(*r),
                Some(Msg::Close) | None => closing = true,
            }
            if !closing {
                // Sleep through the window instead of waking for every record: senders then
                // find no waiting receiver to wake, so a busy proxy pays no wake-up per request.
                tokio::time::sleep(BATCH_WINDOW).await;
            }
            // Everything queued goes into this batch (written BATCH_MAX rows per transaction).
            while let Ok(msg) = rx.try_recv() {
                match msg {
                    Msg::Record(r) => batch.push(*r),
                    Msg::Close => closing = true,
                }
            }
            write(store, &mut keys, &mut batch, stats, health);
        }
    });
    std::ops::ControlFlow::Break(())
}

/// Write a batch, retrying (with a pause) until it is stored: records are never dropped.
fn write(
    store: &Store,
    keys: &mut OrgKeys,
    batch: &mut Vec<Bounded>,
    stats: &WriterStats,
    health: &mut Health,
) {
    if batch.is_empty() {
        return;
    }
    for chunk in batch.chunks(BATCH_MAX) {
        loop {
            let t = Instant::now();
            match append_bounded(store, keys, chunk) {
                Ok(()) => {
                    stats.write_seconds.observe(t.elapsed().as_secs_f64());
                    stats.written.inc_by(chunk.len() as u64);
                    stats.depth.sub(chunk.len() as i64);
                    health.ok(stats);
                    break;
                }
                Err(e) => {
                    health.failed(&e, chunk.len(), stats);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
    batch.clear();
}
