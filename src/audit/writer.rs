//! The background writer for proxied-request records: a bounded queue drained by one thread
//! with its own SQLite connection. After the first record of a batch it waits out the 100 ms
//! window, then writes everything queued, 500 records per transaction. A full queue makes the
//! sender wait (backpressure), it never drops a record. [`Writer::close`] flushes everything
//! queued and stops the thread.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::sync::mpsc;

use super::{append, OrgKeys, Record};
use crate::store::{self, Store};
use crate::vault::Keyring;

/// Longest a record waits in a batch.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);
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
}

enum Msg {
    Record(Box<Record>),
    Close,
}

/// Handle to the writer thread.
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: WriterStats,
}

impl Writer {
    /// Open its own connection to the store at `path` and start the thread.
    pub fn start(
        path: &Path,
        ring: Arc<Keyring>,
        stats: WriterStats,
    ) -> Result<Writer, store::Error> {
        let store = Store::open(path)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || run(store, &ring, rx, st))
            .map_err(|source| store::Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Writer {
            tx,
            thread: Mutex::new(Some(thread)),
            stats,
        })
    }

    /// Queue a record; waits while the queue is full.
    pub async fn send(&self, r: Record) {
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

fn run(store: Store, ring: &Keyring, mut rx: mpsc::Receiver<Msg>, stats: WriterStats) {
    let mut keys = OrgKeys::new(ring).withholding();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the audit writer");
            return;
        }
    };
    rt.block_on(async move {
        let mut batch: Vec<Record> = Vec::with_capacity(BATCH_MAX);
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
            write(&store, &mut keys, &mut batch, &stats);
        }
    });
}

/// Write a batch, retrying (with a pause) until it is stored: records are never dropped.
fn write(store: &Store, keys: &mut OrgKeys, batch: &mut Vec<Record>, stats: &WriterStats) {
    if batch.is_empty() {
        return;
    }
    for chunk in batch.chunks(BATCH_MAX) {
        loop {
            let t = Instant::now();
            match append(store, keys, chunk) {
                Ok(()) => {
                    stats.write_seconds.observe(t.elapsed().as_secs_f64());
                    stats.written.inc_by(chunk.len() as u64);
                    stats.depth.sub(chunk.len() as i64);
                    break;
                }
                Err(e) => {
                    stats.errors.inc();
                    tracing::error!(error = %e, records = chunk.len(), "cannot write audit records; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
    batch.clear();
}
