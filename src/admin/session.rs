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
}

/// Issues and checks session tokens.
pub struct Sessions {
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
        Ok(Sessions {
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
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc).unwrap_or_default()
    }

    /// Check signature, algorithm (HS256 only), issuer, audience and expiry.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.dec, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
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
        let v = store.data_version()?;
        if !self.dirty && self.version == Some(v) {
            return Ok(());
        }
        let mut users = HashMap::new();
        for u in store.users(None)? {
            let principal = Principal {
                role: u.role.as_deref().and_then(Role::parse),
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

/// Failed-login counters: a sliding window per source IP and per account (lower-cased email,
/// known or not, so the throttle reveals nothing about which accounts exist).
pub struct Throttle {
    per_ip: HashMap<IpAddr, Vec<Instant>>,
    per_account: HashMap<String, Vec<Instant>>,
    ip_limit: usize,
    account_limit: usize,
    window: Duration,
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

    /// Seconds to wait when this IP or account has used up its failures.
    pub fn check(&self, ip: IpAddr, account: &str) -> Option<u64> {
        let now = Instant::now();
        let a = self.retry_after(self.per_ip.get(&ip), self.ip_limit, now);
        let b = self.retry_after(
            self.per_account.get(&account.to_lowercase()),
            self.account_limit,
            now,
        );
        a.max(b)
    }

    /// Count a failure.
    pub fn fail(&mut self, ip: IpAddr, account: &str) {
        let now = Instant::now();
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
        keep(
            self.per_account
                .entry(account.trim().to_lowercase())
                .or_default(),
        );
    }

    /// A successful login clears the account's failures (not the IP's).
    pub fn succeed(&mut self, account: &str) {
        self.per_account.remove(&account.trim().to_lowercase());
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
            role: Some("admin".into()),
            operator: false,
            password_hash: String::new(),
            totp_sealed: None,
            totp_last_step: 0,
            session_epoch: epoch,
            created_at: String::new(),
            password_changed_at: String::new(),
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
        assert!(t.check(ip, "a@x.io").is_none());
        t.fail(ip, "a@x.io");
        t.fail(ip, "A@x.io");
        assert!(t.check(ip2, "a@x.io").is_some(), "per account, any IP");
        assert!(t.check(ip, "b@x.io").is_none());
        t.fail(ip, "b@x.io");
        assert!(t.check(ip, "c@x.io").is_some(), "per IP, any account");
        assert!(t.check(ip2, "c@x.io").is_none());
        t.succeed("a@x.io");
        assert!(t.check(ip2, "a@x.io").is_none());
    }
}
