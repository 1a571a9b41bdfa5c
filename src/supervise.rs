//! Background work that keeps going. Each background thread runs its loop one iteration at a
//! time under `catch_unwind`: a panic (one credential's bad token answer, say) is logged with
//! the task's name only (never the payload: it may quote a value), counted
//! (`sluice_background_restarts_total{task}`), and the task resumes after a backoff of 1 s
//! doubling to 30 s (reset by an iteration that completes). While a task the data plane needs
//! (the key snapshot watcher, the audit writer) backs off after a panic, `/readyz` answers 503.

use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A supervised background task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Reloads the key and credential snapshot (the data plane needs it).
    Snapshot,
    /// Obtains and refreshes OAuth credentials' tokens.
    OAuth,
    /// Converges the store to `[fleet] bundle`.
    Bundle,
    /// Writes the per-request audit records (the data plane needs it).
    Audit,
    /// Reconnects to the fleet's Redis (a tokio task: see [`restarted`]).
    Fleet,
    /// Resolves and health-checks the upstreams and MCP servers (tokio tasks).
    Health,
    /// Samples the traffic counters each minute for the console's charts.
    History,
}

impl Task {
    /// Every task, in the order of the counters.
    pub const ALL: [Task; 7] = [
        Task::Snapshot,
        Task::OAuth,
        Task::Bundle,
        Task::Audit,
        Task::Fleet,
        Task::Health,
        Task::History,
    ];

    /// The `task` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Snapshot => "snapshot",
            Task::OAuth => "oauth",
            Task::Bundle => "bundle",
            Task::Audit => "audit",
            Task::Fleet => "fleet",
            Task::Health => "health",
            Task::History => "history",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether requests cannot be served right while it is down.
    fn is_needed(self) -> bool {
        matches!(self, Task::Snapshot | Task::Audit)
    }
}

static RESTARTS: [AtomicU64; 7] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];
static DOWN: [AtomicBool; 7] = [
    AtomicBool::new(false),
    AtomicBool::new(false),
    AtomicBool::new(false),
    AtomicBool::new(false),
    AtomicBool::new(false),
    AtomicBool::new(false),
    AtomicBool::new(false),
];

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How many times each task was restarted after a panic, since start.
pub fn restarts() -> impl Iterator<Item = (&'static str, u64)> {
    Task::ALL
        .into_iter()
        .map(|t| (t.as_str(), RESTARTS[t.index()].load(Ordering::Relaxed)))
}

/// A task the data plane needs that is backing off after a panic, if any.
pub fn needed_down() -> Option<&'static str> {
    Task::ALL
        .into_iter()
        .find(|t| t.is_needed() && DOWN[t.index()].load(Ordering::Relaxed))
        .map(Task::as_str)
}

/// A task supervised elsewhere (a tokio task whose panic its `JoinHandle` reports) panicked
/// and is being restarted: logged and counted as [`run`] does.
pub fn restarted(task: Task) {
    RESTARTS[task.index()].fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        task = task.as_str(),
        "a background task panicked; it is restarted"
    );
}

/// Run `iteration` until it says `Break`, restarting it after a panic (see the module doc).
/// Call on the task's own thread.
pub fn run(task: Task, iteration: impl FnMut() -> ControlFlow<()>) {
    run_with(task, iteration, FIRST_BACKOFF)
}

fn run_with(task: Task, mut iteration: impl FnMut() -> ControlFlow<()>, first: Duration) {
    let mut backoff = first;
    loop {
        match std::panic::catch_unwind(AssertUnwindSafe(&mut iteration)) {
            Ok(ControlFlow::Continue(())) => {
                DOWN[task.index()].store(false, Ordering::Relaxed);
                backoff = first;
            }
            Ok(ControlFlow::Break(())) => return,
            Err(_) => {
                DOWN[task.index()].store(true, Ordering::Relaxed);
                RESTARTS[task.index()].fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    task = task.as_str(),
                    restart_in_ms = backoff.as_millis() as u64,
                    "a background task panicked; it is restarted"
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_iteration_is_counted_and_the_task_goes_on() {
        // Quiet the default hook's report of the planted panics for this test's thread only
        // would need a global hook; the panics print, the test checks what happens after.
        let before = RESTARTS[Task::Bundle.index()].load(Ordering::Relaxed);
        let mut n = 0;
        let mut seen_down = false;
        run_with(
            Task::Bundle,
            || {
                n += 1;
                if n <= 2 {
                    panic!("planted");
                }
                seen_down |= DOWN[Task::Bundle.index()].load(Ordering::Relaxed);
                if n < 4 {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            },
            Duration::from_millis(1),
        );
        assert_eq!(n, 4);
        assert!(seen_down, "down while restarting");
        assert!(!DOWN[Task::Bundle.index()].load(Ordering::Relaxed));
        assert_eq!(
            RESTARTS[Task::Bundle.index()].load(Ordering::Relaxed) - before,
            2
        );
        assert_eq!(
            needed_down(),
            None,
            "the bundle watcher is not needed to serve"
        );
    }
}
