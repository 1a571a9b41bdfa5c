//! Upstream credentials: vault ciphertexts, OAuth settings and tokens, and re-sealing.

use rusqlite::{params, OptionalExtension};

use super::*;

/// A credential re-sealed by `secrets rotate`.
pub struct Resealed {
    pub sealed: Vec<u8>,
    pub key_fp: String,
    /// An OAuth credential's current access token, re-sealed (`None`: none yet).
    pub token_sealed: Option<Vec<u8>>,
    /// A connected credential's client secret, re-sealed (`None`: none).
    pub client_sealed: Option<Vec<u8>>,
}

/// A credential row; `sealed` is the vault ciphertext.
#[derive(Clone, PartialEq, serde::Serialize, Default)]
pub struct Credential {
    pub id: String,
    pub name: String,
    #[serde(skip)]
    pub sealed: Vec<u8>,
    pub key_fp: String,
    pub created_at: Timestamp,
    pub rotated_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// `static` (the secret is the credential) or `oauth` (the secret obtains tokens).
    pub kind: CredentialType,
    /// OAuth: the settings (token URL, client id, scope, resource, grant) as JSON; no secret.
    pub oauth: Option<String>,
    /// OAuth: the current access token, sealed.
    #[serde(skip)]
    pub token_sealed: Option<Vec<u8>>,
    pub token_expires_at: Option<Timestamp>,
    pub token_obtained_at: Option<Timestamp>,
    pub refresh_failures: i64,
    /// OAuth: the code of the last failed refresh (cleared by a good one).
    pub last_error: Option<String>,
    /// OAuth, connected with the authorization code grant: how (JSON, no secret).
    pub connect: Option<String>,
    /// OAuth, connected: the client secret, sealed (`None`: a public client).
    #[serde(skip)]
    pub client_sealed: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("sealed", &"<ciphertext>")
            .field("key_fp", &self.key_fp)
            .finish()
    }
}

impl Store {
    /// Every credential row.
    pub fn credentials(&self) -> Result<Vec<Credential>> {
        let mut st = self.conn.prepare(
            "SELECT id, name, sealed, key_fp, created_at, rotated_at, expires_at, kind, oauth,
               token_sealed, token_expires_at, token_obtained_at, refresh_failures, last_error,
               connect, client_sealed
             FROM credentials ORDER BY name",
        )?;
        let rows = st.query_map([], cred_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The id a credential named `name` has, or will have if created now.
    pub fn credential_id(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT id FROM credentials WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Insert or replace a credential's ciphertext.
    pub fn put_credential(&self, c: &Credential) -> Result<()> {
        self.conn.execute(
            "INSERT INTO credentials (id, name, sealed, key_fp, created_at, rotated_at, expires_at,
               kind, oauth, connect, client_sealed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, COALESCE(NULLIF(?8, ''), 'static'), ?9, ?10, ?11)
             ON CONFLICT(name) DO UPDATE SET sealed = excluded.sealed, key_fp = excluded.key_fp,
               rotated_at = excluded.rotated_at, expires_at = excluded.expires_at,
               kind = excluded.kind, oauth = excluded.oauth, token_sealed = NULL,
               token_expires_at = NULL, token_obtained_at = NULL, refresh_failures = 0,
               last_error = NULL, connect = excluded.connect,
               client_sealed = excluded.client_sealed",
            params![
                c.id,
                c.name,
                c.sealed,
                c.key_fp,
                c.created_at,
                c.rotated_at,
                c.expires_at,
                c.kind,
                c.oauth,
                c.connect,
                c.client_sealed
            ],
        )?;
        Ok(())
    }

    /// Store a new access token for OAuth credential `id` (sealed), and the new sealed secret
    /// when the token endpoint rotated the refresh token, in one statement: a rotated refresh
    /// token is never lost.
    pub fn set_oauth_token(
        &self,
        id: &str,
        token_sealed: &[u8],
        expires_at: &str,
        rotated_secret: Option<(&[u8], &str)>,
    ) -> Result<()> {
        let (secret, fp) = rotated_secret.unzip();
        self.conn.execute(
            "UPDATE credentials SET token_sealed = ?2, token_expires_at = ?3,
               token_obtained_at = ?4, refresh_failures = 0, last_error = NULL,
               sealed = COALESCE(?5, sealed), key_fp = COALESCE(?6, key_fp),
               refresh_lease_until = NULL
             WHERE id = ?1 AND kind = 'oauth'",
            params![id, token_sealed, expires_at, Timestamp::now(), secret, fp],
        )?;
        Ok(())
    }

    /// Note a failed refresh of OAuth credential `id` (`code` is a short stable code).
    pub fn oauth_failed(&self, id: &str, code: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE credentials SET refresh_failures = refresh_failures + 1, last_error = ?2,
               refresh_lease_until = NULL
             WHERE id = ?1",
            params![id, code],
        )?;
        Ok(())
    }

    /// Claim the refresh of OAuth credential `id` for `secs` seconds, if nobody holds the claim
    /// and its token is still the one obtained at `obtained` (`None`: none yet). `false`:
    /// another process refreshes it, or already did.
    pub fn lease_oauth_refresh(
        &self,
        id: &str,
        obtained: Option<Timestamp>,
        secs: u64,
    ) -> Result<bool> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let n = self.conn.execute(
            "UPDATE credentials SET refresh_lease_until = ?2
             WHERE id = ?1 AND kind = 'oauth' AND token_obtained_at IS ?3
               AND (refresh_lease_until IS NULL OR refresh_lease_until < ?4)",
            params![id, now + secs as i64, obtained, now],
        )?;
        Ok(n == 1)
    }

    /// Delete a credential.
    pub fn delete_credential(&self, name: &str) -> Result<()> {
        let n = self
            .conn
            .execute("DELETE FROM credentials WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "credential",
                id: name.to_string(),
            });
        }
        Ok(())
    }

    /// Run `f` over every credential; each result replaces that row's ciphertext and key
    /// fingerprint. Call inside [`Store::atomically`] so that it is all or nothing.
    pub fn reseal_credentials<E>(
        &self,
        mut f: impl FnMut(&Credential) -> std::result::Result<Resealed, E>,
    ) -> std::result::Result<usize, ResealError<E>> {
        let rows = self.credentials().map_err(ResealError::Store)?;
        for c in &rows {
            let r = f(c).map_err(ResealError::Seal)?;
            self.conn
                .execute(
                    "UPDATE credentials SET sealed = ?2, key_fp = ?3, token_sealed = ?4,
                       client_sealed = ?5 WHERE id = ?1",
                    params![c.id, r.sealed, r.key_fp, r.token_sealed, r.client_sealed],
                )
                .map_err(|e| ResealError::Store(e.into()))?;
        }
        Ok(rows.len())
    }

    /// Run `f` in one write transaction (`BEGIN IMMEDIATE`: concurrent writers, including other
    /// processes, wait their turn). Committed when `f` returns `Ok`, rolled back otherwise.
    /// Not reentrant.
    pub fn atomically<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Store) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| E::from(e.into()))?;
        match f(self) {
            Ok(v) => {
                if let Err(e) = self.conn.execute_batch("COMMIT") {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(E::from(e.into()));
                }
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// Why resealing failed (nothing was changed).
#[derive(Debug)]
pub enum ResealError<E> {
    Store(Error),
    Seal(E),
}

pub(super) fn cred_row(r: &rusqlite::Row) -> rusqlite::Result<Credential> {
    Ok(Credential {
        id: r.get(0)?,
        name: r.get(1)?,
        sealed: r.get(2)?,
        key_fp: r.get(3)?,
        created_at: r.get(4)?,
        rotated_at: r.get(5)?,
        expires_at: r.get(6)?,
        kind: r.get(7)?,
        oauth: r.get(8)?,
        token_sealed: r.get(9)?,
        token_expires_at: r.get(10)?,
        token_obtained_at: r.get(11)?,
        refresh_failures: r.get(12)?,
        last_error: r.get(13)?,
        connect: r.get(14)?,
        client_sealed: r.get(15)?,
    })
}
