//! Which key opened which MCP session. An `Mcp-Session-Id` is the server's, and any client that
//! holds one could otherwise read that session's event stream or end it: sluice binds each id
//! to the key (and server) whose `initialize` answer carried it, and a request with an id bound
//! to another key, or to none, is answered 404 (the specification's answer for an unknown
//! session, after which a client starts a new one) without reaching the server.
//!
//! Memory is bounded: at most [`MAX_SESSIONS`] bindings ([`MAX_PER_KEY`] per key), each
//! forgotten after [`IDLE`] without use; when full, the binding used longest ago goes first (its
//! client gets a 404 and starts again). Ids are held as SHA-256 digests, never as the server
//! wrote them. Each binding also remembers which of its requests await an answer, so that a
//! stream the client resumes may carry those answers and no others.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The most bindings held at once.
pub const MAX_SESSIONS: usize = 100_000;
/// A binding not used for this long is forgotten.
pub const IDLE: Duration = Duration::from_secs(24 * 3600);
/// The longest session id accepted (the specification asks for visible ASCII, no length).
const MAX_ID_BYTES: usize = 1024;

struct Binding {
    key_id: String,
    used: Instant,
    /// Ids (as JSON text) of requests sent in this session and not answered yet: a stream the
    /// client resumes (a GET with `Last-Event-ID`) may carry their answers.
    awaiting: HashSet<String>,
}

/// The most requests a session awaits answers for; past it, the oldest are forgotten (their
/// answers can then only come on the POST that sent them).
const MAX_AWAITING: usize = 1024;
/// The most sessions one key holds; past it, that key's least recently used goes.
pub const MAX_PER_KEY: usize = 1000;

/// The session bindings of one sluice process.
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Binding>>,
    max: usize,
    per_key: usize,
    idle: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(MAX_SESSIONS, IDLE)
    }
}

/// Whether a session id is one the specification allows: visible ASCII (0x21 to 0x7E).
fn is_valid(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_BYTES && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

fn digest(server: &str, id: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(server.as_bytes());
    h.update([0]);
    h.update(id);
    h.finalize().into()
}

impl Sessions {
    /// At most `max` bindings, each forgotten after `idle` unused.
    pub fn new(max: usize, idle: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            max: max.max(1),
            per_key: MAX_PER_KEY.min(max).max(1),
            idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Binding>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key_id` may use session `id` on `server` (bound to it and not expired); a use
    /// keeps the binding alive.
    pub fn allows(&self, server: &str, id: &[u8], key_id: &str, now: Instant) -> bool {
        if !is_valid(id) {
            return false;
        }
        let mut map = self.lock();
        let d = digest(server, id);
        match map.get_mut(&d) {
            Some(b) if now.saturating_duration_since(b.used) > self.idle => {
                map.remove(&d);
                false
            }
            Some(b) if b.key_id == key_id => {
                b.used = now;
                true
            }
            _ => false,
        }
    }

    /// Bind session `id` on `server`, which a server's answer to `key_id` carried. An id bound
    /// to another key already stays that key's. `false`: not bound to `key_id`.
    pub fn bind(&self, server: &str, id: &[u8], key_id: &str, now: Instant) -> bool {
        if !is_valid(id) {
            return false;
        }
        let mut map = self.lock();
        let d = digest(server, id);
        if let Some(b) = map.get_mut(&d) {
            if now.saturating_duration_since(b.used) <= self.idle {
                if b.key_id == key_id {
                    b.used = now;
                }
                return b.key_id == key_id;
            }
        }
        // One key cannot push every other key's sessions out: past its own share, its own
        // least recently used binding goes.
        let mine: Vec<([u8; 32], Instant)> = map
            .iter()
            .filter(|(_, b)| b.key_id == key_id)
            .map(|(k, b)| (*k, b.used))
            .collect();
        if mine.len() >= self.per_key {
            if let Some((oldest, _)) = mine.iter().min_by_key(|(_, used)| *used) {
                map.remove(oldest);
            }
        }
        if map.len() >= self.max && !map.contains_key(&d) {
            let idle = self.idle;
            map.retain(|_, b| now.saturating_duration_since(b.used) <= idle);
            if map.len() >= self.max {
                if let Some(oldest) = map.iter().min_by_key(|(_, b)| b.used).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        map.insert(
            d,
            Binding {
                key_id: key_id.to_string(),
                used: now,
                awaiting: HashSet::new(),
            },
        );
        true
    }

    /// Requests with these ids were sent in session `id`: their answers may come on a stream
    /// the client resumes.
    pub fn expect(&self, server: &str, id: &[u8], ids: impl IntoIterator<Item = String>) {
        let mut map = self.lock();
        if let Some(b) = map.get_mut(&digest(server, id)) {
            for k in ids {
                if b.awaiting.len() >= MAX_AWAITING {
                    // Arbitrary but bounded: one id goes to make room.
                    if let Some(old) = b.awaiting.iter().next().cloned() {
                        b.awaiting.remove(&old);
                    }
                }
                b.awaiting.insert(k);
            }
        }
    }

    /// These requests of session `id` were answered.
    pub fn answered<'a>(&self, server: &str, id: &[u8], ids: impl IntoIterator<Item = &'a str>) {
        let mut map = self.lock();
        if let Some(b) = map.get_mut(&digest(server, id)) {
            for k in ids {
                b.awaiting.remove(k);
            }
        }
    }

    /// The requests of session `id` still awaiting an answer (for `key_id`'s resumed stream).
    pub fn awaiting(&self, server: &str, id: &[u8], key_id: &str) -> Vec<String> {
        let map = self.lock();
        match map.get(&digest(server, id)) {
            Some(b) if b.key_id == key_id => b.awaiting.iter().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Forget session `id` on `server` (ended by its key with DELETE).
    pub fn end(&self, server: &str, id: &[u8]) {
        self.lock().remove(&digest(server, id));
    }

    /// How many bindings are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no binding is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_its_keys_alone_bounded_and_expiring() {
        let s = Sessions::new(2, Duration::from_secs(60));
        let t = Instant::now();
        assert!(!s.allows("tools", b"abc", "k1", t), "unknown");
        assert!(s.bind("tools", b"abc", "k1", t));
        assert!(s.allows("tools", b"abc", "k1", t));
        assert!(!s.allows("tools", b"abc", "k2", t), "another key");
        assert!(!s.allows("other", b"abc", "k1", t), "another server");
        assert!(!s.bind("tools", b"abc", "k2", t), "not taken over");
        assert!(s.allows("tools", b"abc", "k1", t));
        assert!(!s.bind("tools", b"a b", "k1", t), "not visible ASCII");
        assert!(!s.allows("tools", b"", "k1", t));
        // Full: the binding used longest ago goes.
        assert!(s.bind("tools", b"def", "k2", t + Duration::from_secs(1)));
        assert!(s.allows("tools", b"abc", "k1", t + Duration::from_secs(2)));
        assert!(s.bind("tools", b"ghi", "k3", t + Duration::from_secs(3)));
        assert_eq!(s.len(), 2);
        assert!(!s.allows("tools", b"def", "k2", t + Duration::from_secs(3)));
        // Idle too long: forgotten.
        assert!(!s.allows("tools", b"abc", "k1", t + Duration::from_secs(120)));
        s.end("tools", b"ghi");
        assert!(s.is_empty());
    }

    #[test]
    fn answers_awaited_in_a_session_are_its_keys_and_a_key_has_a_share() {
        let s = Sessions::new(10_000, Duration::from_secs(60));
        let t = Instant::now();
        assert!(s.bind("tools", b"abc", "k1", t));
        s.expect("tools", b"abc", ["7".to_string(), "\"x\"".to_string()]);
        s.answered("tools", b"abc", ["7"]);
        assert_eq!(s.awaiting("tools", b"abc", "k1"), vec!["\"x\"".to_string()]);
        assert!(s.awaiting("tools", b"abc", "k2").is_empty());
        for i in 0..MAX_PER_KEY + 5 {
            let id = format!("s{i}");
            assert!(s.bind(
                "tools",
                id.as_bytes(),
                "greedy",
                t + Duration::from_millis(i as u64)
            ));
        }
        assert!(
            s.allows("tools", b"abc", "k1", t),
            "another key's session stays"
        );
        assert_eq!(s.len(), MAX_PER_KEY + 1);
    }
}
