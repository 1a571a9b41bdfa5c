//! Users, recovery codes, per-org data keys and the hard delete of an org. Password and
//! recovery-code hashes are bcrypt strings; TOTP seeds and data keys are vault ciphertexts.

use rusqlite::{params, OptionalExtension};

use super::{Error, Result, Store, Timestamp};
use crate::policy::Role;

/// A user row. The password hash and sealed TOTP seed never leave the store's callers in
/// `admin` (they are skipped when serialised).
#[derive(Clone, PartialEq, serde::Serialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub org_id: Option<String>,
    pub role: Option<Role>,
    pub operator: bool,
    #[serde(skip)]
    pub password_hash: String,
    #[serde(skip)]
    pub totp_sealed: Option<Vec<u8>>,
    #[serde(skip)]
    pub totp_last_step: i64,
    #[serde(skip)]
    pub session_epoch: i64,
    pub created_at: Timestamp,
    pub password_changed_at: Timestamp,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("org_id", &self.org_id)
            .field("role", &self.role)
            .field("operator", &self.operator)
            .finish_non_exhaustive()
    }
}

/// How many rows a hard delete removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    pub keys: usize,
    pub users: usize,
    pub data_keys: usize,
}

const USER_COLS: &str = "id, email, org_id, role, operator, password_hash, totp_sealed,
    totp_last_step, session_epoch, created_at, password_changed_at";

fn user_row(r: &rusqlite::Row) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        email: r.get(1)?,
        org_id: r.get(2)?,
        role: r.get(3)?,
        operator: r.get::<_, i64>(4)? == 1,
        password_hash: r.get(5)?,
        totp_sealed: r.get(6)?,
        totp_last_step: r.get(7)?,
        session_epoch: r.get(8)?,
        created_at: r.get(9)?,
        password_changed_at: r.get(10)?,
    })
}

impl Store {
    // ---- users ----

    /// Insert a user (the org, if any, must exist).
    pub fn insert_user(&self, u: &User) -> Result<()> {
        if let Some(org) = &u.org_id {
            self.org(org)?;
        }
        self.conn
            .execute(
                &format!("INSERT INTO users ({USER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                params![
                    u.id,
                    u.email,
                    u.org_id,
                    u.role,
                    u.operator as i64,
                    u.password_hash,
                    u.totp_sealed,
                    u.totp_last_step,
                    u.session_epoch,
                    u.created_at,
                    u.password_changed_at
                ],
            )
            .map_err(|e| super::unique(e, "user", &u.email))?;
        Ok(())
    }

    /// Users, optionally of one org, oldest first.
    pub fn users(&self, org: Option<&str>) -> Result<Vec<User>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {USER_COLS} FROM users WHERE (?1 IS NULL OR org_id = ?1) ORDER BY id"
        ))?;
        let rows = st.query_map([org], user_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One user by id.
    pub fn user(&self, id: &str) -> Result<User> {
        self.conn
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                [id],
                user_row,
            )
            .optional()?
            .ok_or_else(|| Error::NotFound {
                what: "user",
                id: id.to_string(),
            })
    }

    /// One user by email (case-insensitive), if any.
    pub fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE email = ?1"),
                [email],
                user_row,
            )
            .optional()?)
    }

    fn update_user(&self, id: &str, sql: &str, p: &[&dyn rusqlite::ToSql]) -> Result<()> {
        let mut all: Vec<&dyn rusqlite::ToSql> = vec![&id];
        all.extend_from_slice(p);
        let n = self.conn.execute(sql, all.as_slice())?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "user",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    /// Change a user's role.
    pub fn set_user_role(&self, id: &str, role: Role) -> Result<()> {
        self.update_user(
            id,
            "UPDATE users SET role = ?2 WHERE id = ?1 AND operator = 0",
            &[&role],
        )
    }

    /// Replace a user's password hash; every session issued before is invalidated.
    pub fn set_user_password(&self, id: &str, hash: &str) -> Result<()> {
        self.update_user(
            id,
            "UPDATE users SET password_hash = ?2, password_changed_at = ?3,
               session_epoch = session_epoch + 1 WHERE id = ?1",
            &[&hash, &Timestamp::now()],
        )
    }

    /// Invalidate every session of a user.
    pub fn bump_session_epoch(&self, id: &str) -> Result<()> {
        self.update_user(
            id,
            "UPDATE users SET session_epoch = session_epoch + 1 WHERE id = ?1",
            &[],
        )
    }

    /// Replace a user's sealed TOTP seed (or remove it) and reset the replay guard.
    pub fn set_user_totp(&self, id: &str, sealed: Option<&[u8]>) -> Result<()> {
        self.update_user(
            id,
            "UPDATE users SET totp_sealed = ?2, totp_last_step = 0 WHERE id = ?1",
            &[&sealed],
        )
    }

    /// Replace a TOTP seed's ciphertext only (master-key rotation).
    pub fn set_user_totp_sealed(&self, id: &str, sealed: &[u8]) -> Result<()> {
        self.update_user(
            id,
            "UPDATE users SET totp_sealed = ?2 WHERE id = ?1",
            &[&sealed],
        )
    }

    /// Record that TOTP time step `step` was used; `false` when it (or a later one) already
    /// was, which is how a replayed code is refused even by concurrent logins.
    pub fn claim_totp_step(&self, id: &str, step: i64) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE users SET totp_last_step = ?2 WHERE id = ?1 AND totp_last_step < ?2",
            params![id, step],
        )?;
        Ok(n == 1)
    }

    /// Delete a user (their recovery codes go with them).
    pub fn delete_user(&self, id: &str) -> Result<()> {
        let n = self.conn.execute("DELETE FROM users WHERE id = ?1", [id])?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "user",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    // ---- recovery codes ----

    /// Replace a user's recovery codes with `(lookup, bcrypt hash)` pairs.
    pub fn set_recovery_codes(&self, user_id: &str, codes: &[(String, String)]) -> Result<()> {
        self.conn
            .execute("DELETE FROM recovery_codes WHERE user_id = ?1", [user_id])?;
        let mut st = self.conn.prepare(
            "INSERT INTO recovery_codes (user_id, lookup, hash, used_at) VALUES (?1, ?2, ?3, NULL)",
        )?;
        for (lookup, hash) in codes {
            st.execute(params![user_id, lookup, hash])?;
        }
        Ok(())
    }

    /// The bcrypt hash of a user's unused recovery code with this lookup id.
    pub fn recovery_code(&self, user_id: &str, lookup: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT hash FROM recovery_codes WHERE user_id = ?1 AND lookup = ?2 AND used_at IS NULL",
                params![user_id, lookup],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Mark a recovery code used; `false` when it already was (a concurrent login won).
    pub fn use_recovery_code(&self, user_id: &str, lookup: &str) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE recovery_codes SET used_at = ?3 WHERE user_id = ?1 AND lookup = ?2 AND used_at IS NULL",
            params![user_id, lookup, Timestamp::now()],
        )?;
        Ok(n == 1)
    }

    /// How many unused recovery codes a user has left.
    pub fn recovery_codes_left(&self, user_id: &str) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM recovery_codes WHERE user_id = ?1 AND used_at IS NULL",
            [user_id],
            |r| r.get(0),
        )?)
    }

    // ---- per-org data keys ----

    /// An org's sealed data key and the master-key fingerprint that sealed it.
    pub fn org_key(&self, org_id: &str) -> Result<Option<(Vec<u8>, String)>> {
        Ok(self
            .conn
            .prepare_cached("SELECT sealed, key_fp FROM org_keys WHERE org_id = ?1")?
            .query_row([org_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// Whether an org exists.
    pub fn org_exists(&self, org_id: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM orgs WHERE id = ?1")?
            .query_row([org_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Store an org's sealed data key (first writer wins; returns whether this one was stored).
    pub fn insert_org_key(&self, org_id: &str, sealed: &[u8], key_fp: &str) -> Result<bool> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO org_keys (org_id, sealed, key_fp, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![org_id, sealed, key_fp, Timestamp::now()],
        )?;
        Ok(n == 1)
    }

    /// Every sealed org data key, for master-key rotation.
    pub fn org_keys(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut st = self
            .conn
            .prepare("SELECT org_id, sealed FROM org_keys ORDER BY org_id")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Replace an org data key's ciphertext (master-key rotation).
    pub fn reseal_org_key(&self, org_id: &str, sealed: &[u8], key_fp: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE org_keys SET sealed = ?2, key_fp = ?3 WHERE org_id = ?1",
            params![org_id, sealed, key_fp],
        )?;
        Ok(())
    }

    /// Remove an org and everything that belongs to it: its data key first (which makes its
    /// sealed audit fields unreadable), then the org row, whose foreign keys cascade to its API
    /// keys, users and their recovery codes. Call inside [`Store::atomically`].
    pub fn delete_org(&self, org_id: &str) -> Result<Removed> {
        self.org(org_id)?;
        let count = |sql: &str| -> Result<usize> {
            Ok(self.conn.query_row(sql, [org_id], |r| r.get::<_, i64>(0))? as usize)
        };
        let keys = count("SELECT COUNT(*) FROM api_keys WHERE org_id = ?1")?;
        let users = count("SELECT COUNT(*) FROM users WHERE org_id = ?1")?;
        let data_keys = self
            .conn
            .execute("DELETE FROM org_keys WHERE org_id = ?1", [org_id])?;
        self.conn
            .execute("DELETE FROM orgs WHERE id = ?1", [org_id])?;
        Ok(Removed {
            keys,
            users,
            data_keys,
        })
    }

    /// Copy every committed page back into the database file and empty the WAL, so deleted
    /// rows (already zeroed by `secure_delete`) leave no copy behind in the WAL. `true` when the
    /// checkpoint completed (a long reader in another process can hold it back).
    pub fn checkpoint_truncate(&self) -> Result<bool> {
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        Ok(busy == 0)
    }
}
