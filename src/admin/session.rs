//! Login sessions and their guards: HS256 JWTs signed with `SLUICE_JWT_SECRET`, the in-memory
//! directory every token is re-validated against (so a removed user, a changed role, a new
//! password or a `revoke-sessions` takes effect on the next request, not at expiry), and the
//! failed-login throttle (per source IP and per account).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::users::Role;
use crate::store::{self, Store};

/// The JWT secret's environment variable.
pub const JWT_ENV: &str = "SLUICE_JWT_SECRET";
/// Shortest accepted secret, in bytes (256 bits).
pub const MIN_SECRET_BYTES: usize = 32;
const ISSUER: &str = "sluice";
const AUDIENCE: &str = "sluice-admin";

/// Why the JWT secret is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{JWT_ENV} must be at least {MIN_SECRET_BYTES} bytes (generate one with `openssl rand -base64 48`)")]
    TooShort,
}

/// What a session token carries. Authorisation never trusts the role in it: the directory's
/// current role is used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub org: Option<String>,
    /// The user's session epoch when issued; a password change or revoke-sessions bumps it.
    pub sv: i64,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
    pub aud: String,
    pub jti: String,
    /// A console session: valid in the session cookie only, never as a bearer token (a cookie
    /// that leaks, e.g. to another service on the host, is then no API token).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cm: bool,
}

/// Issues and checks session tokens.
pub struct Sessions {
    /// Derived from the JWT secret: the console's CSRF tokens ([`Sessions::csrf`]).
    csrf_key: Zeroizing<[u8; 32]>,
    enc: EncodingKey,
    dec: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions(<redacted>)")
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Sessions {
    /// From a secret of at least 32 bytes.
    pub fn new(secret: &[u8], ttl: Duration) -> Result<Sessions, SecretError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let csrf_key = Zeroizing::new(mac(secret, b"sluice console csrf v1"));
        Ok(Sessions {
            csrf_key,
            enc: EncodingKey::from_secret(secret),
            dec: DecodingKey::from_secret(secret),
            validation,
            ttl,
        })
    }

    /// From `SLUICE_JWT_SECRET`: `Ok(None)` when unset (the admin API then answers 503).
    pub fn from_env(ttl: Duration) -> Result<Option<Sessions>, SecretError> {
        match std::env::var(JWT_ENV) {
            Ok(s) if !s.is_empty() => {
                let s = Zeroizing::new(s);
                Sessions::new(s.as_bytes(), ttl).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Session lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `user`.
    pub fn issue(&self, user: &store::User) -> String {
        let now = unix_now();
        let claims = Claims {
            sub: user.id.clone(),
            org: user.org_id.clone(),
            sv: user.session_epoch,
            iat: now,
            exp: now + self.ttl.as_secs(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            jti: store::new_id(),
            cm: false,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc).unwrap_or_default()
    }

    /// The console's session for the session `claims` were just issued with: the same user,
    /// epoch and expiry, a new id, marked as a console session.
    pub fn console_session(&self, claims: &Claims) -> (String, Claims) {
        let claims = Claims {
            jti: store::new_id(),
            cm: true,
            ..claims.clone()
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc)
            .unwrap_or_default();
        (token, claims)
    }

    /// The console's CSRF token for the session `claims` (sent back in `X-Sluice-CSRF` on each
    /// state-changing call made with the session cookie): bound to the session, so a token of
    /// another session (or made up) does not pass.
    pub fn csrf(&self, claims: &Claims) -> String {
        use base64::Engine as _;
        let tag = mac(
            &self.csrf_key[..],
            format!("{}\0{}", claims.sub, claims.jti).as_bytes(),
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag)
    }

    /// Whether `given` is the CSRF token of `claims` (constant time).
    pub fn csrf_ok(&self, claims: &Claims, given: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        self.csrf(claims)
            .as_bytes()
            .ct_eq(given.trim().as_bytes())
            .into()
    }

    /// Check signature, algorithm (HS256 only), issuer, audience and expiry.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.dec, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

/// HMAC-SHA256 of `msg` under `key`.
fn mac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    // HMAC takes a key of any length.
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// Who is calling, as of now.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub user_id: String,
    pub org_id: Option<String>,
    pub role: Option<Role>,
    pub operator: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    principal: Principal,
    epoch: i64,
}

/// Every user's org, role and session epoch, in memory. Refreshed when the store changed: by
/// another connection (`data_version`) or by this process's own admin API (`mark_dirty`).
#[derive(Default)]
pub struct Directory {
    users: HashMap<String, Entry>,
    version: Option<i64>,
    dirty: bool,
}

impl Directory {
    /// Reload if anything may have changed. Cheap when nothing did (one pragma).
    pub fn refresh(&mut self, store: &Store) -> store::Result<()> {
        // The configuration generation, not `data_version`: audit batches commit all the time
        // and change nothing here.
        let v = store.generation()?;
        if !self.dirty && self.version == Some(v) {
            return Ok(());
        }
        let mut users = HashMap::new();
        for u in store.users(None)? {
            let principal = Principal {
                role: u.role,
                user_id: u.id.clone(),
                org_id: u.org_id,
                operator: u.operator,
            };
            users.insert(
                u.id,
                Entry {
                    principal,
                    epoch: u.session_epoch,
                },
            );
        }
        self.users = users;
        self.version = Some(v);
        self.dirty = false;
        Ok(())
    }

    /// Note a change made through this process's own connection.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// The principal behind valid claims: the user still exists, in the same org, and the
    /// token was issued in the current session epoch.
    pub fn principal(&self, c: &Claims) -> Option<Principal> {
        let e = self.users.get(&c.sub)?;
        (e.epoch == c.sv && e.principal.org_id == c.org).then(|| e.principal.clone())
    }
}

/// The one normal form of an account name (an email) for lookups and throttling: surrounding
/// whitespace removed, ASCII lower-cased (the store compares emails with SQLite's ASCII
/// `NOCASE`). Every use of an account name goes through this, so `" Victim@Example.com"` is
/// the same account everywhere and cannot dodge its throttle.
pub fn account_key(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// Failed-login counters: a sliding window per source IP and per account ([`account_key`],
/// known or not, so the throttle reveals nothing about which accounts exist).
///
/// An attempt takes its slot before the password is checked ([`Throttle::reserve`]) and keeps
/// it as a failure unless it succeeds, so N parallel attempts cannot all pass a check that
/// only counts failures after bcrypt: at most the limit get through.
pub struct Throttle {
    per_ip: HashMap<IpAddr, Vec<Instant>>,
    per_account: HashMap<String, Vec<Instant>>,
    ip_limit: usize,
    account_limit: usize,
    window: Duration,
}

/// A slot taken by [`Throttle::reserve`]: counted as a failure unless handed to
/// [`Throttle::succeed`].
#[derive(Debug)]
pub struct Reservation {
    ip: IpAddr,
    account: String,
    at: Instant,
}

const MAX_TRACKED: usize = 100_000;

impl Throttle {
    /// Limits per window.
    pub fn new(ip_limit: u32, account_limit: u32, window: Duration) -> Throttle {
        Throttle {
            per_ip: HashMap::new(),
            per_account: HashMap::new(),
            ip_limit: ip_limit as usize,
            account_limit: account_limit as usize,
            window,
        }
    }

    fn retry_after(&self, hits: Option<&Vec<Instant>>, limit: usize, now: Instant) -> Option<u64> {
        let live: Vec<&Instant> = hits?
            .iter()
            .filter(|t| now.duration_since(**t) < self.window)
            .collect();
        if live.len() < limit {
            return None;
        }
        let oldest = live.iter().min()?;
        Some(
            self.window
                .saturating_sub(now.duration_since(**oldest))
                .as_secs()
                .max(1),
        )
    }

    /// Take a slot for one attempt, or the seconds to wait when this IP or account has used
    /// up its failures. The slot counts as a failure from now on, unless the attempt succeeds.
    pub fn reserve(&mut self, ip: IpAddr, account: &str) -> Result<Reservation, u64> {
        let now = Instant::now();
        let account = account_key(account);
        let a = self.retry_after(self.per_ip.get(&ip), self.ip_limit, now);
        let b = self.retry_after(self.per_account.get(&account), self.account_limit, now);
        if let Some(wait) = a.max(b) {
            return Err(wait);
        }
        let window = self.window;
        if self.per_ip.len() + self.per_account.len() > MAX_TRACKED {
            self.per_ip.retain(|_, v| {
                v.retain(|t| now.duration_since(*t) < window);
                !v.is_empty()
            });
            self.per_account.retain(|_, v| {
                v.retain(|t| now.duration_since(*t) < window);
                !v.is_empty()
            });
        }
        let keep = |v: &mut Vec<Instant>| {
            v.retain(|t| now.duration_since(*t) < window);
            v.push(now);
        };
        keep(self.per_ip.entry(ip).or_default());
        keep(self.per_account.entry(account.clone()).or_default());
        Ok(Reservation {
            ip,
            account,
            at: now,
        })
    }

    /// The attempt behind `r` succeeded: its slot is given back and the account's failures
    /// are cleared (the IP's other failures stay).
    pub fn succeed(&mut self, r: Reservation) {
        self.per_account.remove(&r.account);
        if let Some(v) = self.per_ip.get_mut(&r.ip) {
            if let Some(i) = v.iter().position(|t| *t == r.at) {
                v.remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(epoch: i64) -> store::User {
        store::User {
            id: "u1".into(),
            email: "a@example.com".into(),
            org_id: Some("o1".into()),
            role: Some(Role::Admin),
            operator: false,
            password_hash: String::new(),
            totp_sealed: None,
            totp_last_step: 0,
            session_epoch: epoch,
            created_at: store::Timestamp::default(),
            password_changed_at: store::Timestamp::default(),
        }
    }

    #[test]
    fn tokens_are_checked_for_signature_algorithm_and_expiry() {
        assert!(Sessions::new(b"short", Duration::from_secs(60)).is_err());
        let s = Sessions::new(&[7u8; 32], Duration::from_secs(60)).unwrap();
        let t = s.issue(&user(0));
        assert_eq!(s.verify(&t).unwrap().sub, "u1");
        let other = Sessions::new(&[8u8; 32], Duration::from_secs(60)).unwrap();
        assert!(other.verify(&t).is_none());
        // alg=none and a tampered payload are refused.
        let parts: Vec<&str> = t.split('.').collect();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
        assert!(s.verify(&none).is_none());
        let mut tampered = parts[1].to_string();
        tampered.replace_range(3..4, if &tampered[3..4] == "A" { "B" } else { "A" });
        assert!(s
            .verify(&format!("{}.{}.{}", parts[0], tampered, parts[2]))
            .is_none());
        let expired = Sessions::new(&[7u8; 32], Duration::from_secs(0)).unwrap();
        let t = expired.issue(&user(0));
        std::thread::sleep(Duration::from_millis(1100));
        assert!(s.verify(&t).is_none());
    }

    #[test]
    fn throttle_counts_per_ip_and_per_account() {
        let mut t = Throttle::new(3, 2, Duration::from_secs(60));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let ip2: IpAddr = "127.0.0.2".parse().unwrap();
        t.reserve(ip, "a@x.io").unwrap();
        t.reserve(ip, "A@x.io").unwrap();
        assert!(t.reserve(ip2, "a@x.io").is_err(), "per account, any IP");
        t.reserve(ip, "b@x.io").unwrap();
        assert!(t.reserve(ip, "c@x.io").is_err(), "per IP, any account");
        let ok = t.reserve(ip2, "c@x.io").unwrap();
        t.succeed(ok);
        // A success gives its slot back: ip2 still has all of its 3 attempts.
        for i in 0..3 {
            t.reserve(ip2, &format!("d{i}@x.io")).unwrap();
        }
        assert!(t.reserve(ip2, "e@x.io").is_err());
    }

    #[test]
    fn every_spelling_of_an_account_shares_one_throttle() {
        let mut t = Throttle::new(1000, 2, Duration::from_secs(60));
        let ip = |i: u8| IpAddr::from([10, 0, 0, i]);
        t.reserve(ip(1), "victim@example.com").unwrap();
        t.reserve(ip(2), " Victim@Example.COM\t").unwrap();
        for (i, spelling) in [
            "victim@example.com",
            " victim@example.com",
            "victim@example.com ",
            "\tVICTIM@EXAMPLE.COM\n",
            "\u{2003}victim@example.com",
        ]
        .into_iter()
        .enumerate()
        {
            assert!(
                t.reserve(ip(10 + i as u8), spelling).is_err(),
                "{spelling:?} dodged the account's throttle"
            );
        }
        assert_eq!(
            account_key("\u{2003} Victim@Example.COM\n"),
            "victim@example.com"
        );
    }
}
