//! Which key opened which MCP session. An `Mcp-Session-Id` is the server's, and any client that
//! holds one could otherwise read that session's event stream or end it: sluice binds each id
//! to the key (and server) whose `initialize` answer carried it, and a request with an id bound
//! to another key, or to none, is answered 404 (the specification's answer for an unknown
//! session, after which a client starts a new one) without reaching the server.
//!
//! Memory is bounded: at most [`MAX_SESSIONS`] bindings, each forgotten after [`IDLE`] without
//! use; when full, the binding used longest ago goes first (its client gets a 404 and starts
//! again). Ids are held as SHA-256 digests, never as the server wrote them.

use std::collections::HashMap;
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
}

/// The session bindings of one sluice process.
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Binding>>,
    max: usize,
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
            },
        );
        true
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
}
