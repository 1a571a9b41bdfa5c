//! The OAuth connects under way (`oauth_flows`, `sluice credentials connect`). The `state` sent
//! to the authorization server is kept as its SHA-256 digest only; the PKCE verifier and a
//! client secret are vault ciphertexts, wiped when the flow is used. A flow is used once: the
//! claim is one conditional `UPDATE`, so two callbacks racing with one state cannot both win.

use rusqlite::{params, OptionalExtension};

use super::{Result, Store};

/// How long a finished or expired flow's row is kept (for `connect` to read its outcome).
const KEEP_SECS: i64 = 24 * 3600;

/// A connect under way (or done: `outcome`).
#[derive(Clone, PartialEq, Default)]
pub struct OAuthFlow {
    pub id: String,
    /// Hex SHA-256 of the `state` parameter.
    pub state_hash: String,
    /// The credential it connects.
    pub credential: String,
    /// Who started it (`user:<id>`, `cli:<os user>`).
    pub actor: String,
    /// What the code exchange needs, as JSON (endpoints, client id, redirect URI; no secret).
    pub plan: String,
    pub verifier_sealed: Option<Vec<u8>>,
    pub client_sealed: Option<Vec<u8>>,
    pub key_fp: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    /// `connected`, or the code of why it failed.
    pub outcome: Option<String>,
}

impl std::fmt::Debug for OAuthFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthFlow")
            .field("id", &self.id)
            .field("credential", &self.credential)
            .field("actor", &self.actor)
            .field("expires_at", &self.expires_at)
            .field("outcome", &self.outcome)
            .finish()
    }
}

/// What presenting a state gave. Every variant but `Unknown` used the flow up: a state shown
/// by the wrong operator or for the wrong credential is spent too (it has leaked).
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// The flow, now used (its row no longer holds the verifier; the value returned does).
    Claimed(Box<OAuthFlow>),
    Unknown,
    Used(Box<OAuthFlow>),
    Expired(Box<OAuthFlow>),
    /// Another operator started it.
    OtherActor(Box<OAuthFlow>),
    /// It connects another credential.
    OtherCredential(Box<OAuthFlow>),
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<OAuthFlow> {
    Ok(OAuthFlow {
        id: r.get(0)?,
        state_hash: r.get(1)?,
        credential: r.get(2)?,
        actor: r.get(3)?,
        plan: r.get(4)?,
        verifier_sealed: r.get(5)?,
        client_sealed: r.get(6)?,
        key_fp: r.get(7)?,
        created_at: r.get(8)?,
        expires_at: r.get(9)?,
        used_at: r.get(10)?,
        outcome: r.get(11)?,
    })
}

const COLUMNS: &str = "id, state_hash, credential, actor, plan, verifier_sealed, client_sealed,
    key_fp, created_at, expires_at, used_at, outcome";

impl Store {
    /// Record a new flow (and forget those that ended over a day ago).
    pub fn start_oauth_flow(&self, f: &OAuthFlow) -> Result<()> {
        self.conn.execute(
            "DELETE FROM oauth_flows WHERE expires_at < ?1",
            [f.created_at - KEEP_SECS],
        )?;
        self.conn.execute(
            &format!(
                "INSERT INTO oauth_flows ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, NULL)"
            ),
            params![
                f.id,
                f.state_hash,
                f.credential,
                f.actor,
                f.plan,
                f.verifier_sealed,
                f.client_sealed,
                f.key_fp,
                f.created_at,
                f.expires_at
            ],
        )?;
        Ok(())
    }

    /// Use the flow whose state digests to `state_hash`, at `now` (unix seconds). With `actor`,
    /// only that actor's flow is claimed, and with `credential` only a flow for that
    /// credential; a flow shown otherwise, or expired, is used up and refused.
    pub fn claim_oauth_flow(
        &self,
        state_hash: &str,
        actor: Option<&str>,
        credential: Option<&str>,
        now: i64,
    ) -> Result<Claim> {
        let Some(flow) = self.oauth_flow_by_state(state_hash)? else {
            return Ok(Claim::Unknown);
        };
        let flow = Box::new(flow);
        if flow.used_at.is_some() {
            return Ok(Claim::Used(flow));
        }
        let refusal = if now >= flow.expires_at {
            Some("state_expired")
        } else if actor.is_some_and(|a| a != flow.actor) {
            Some("state_other_operator")
        } else if credential.is_some_and(|c| c != flow.credential) {
            Some("state_other_credential")
        } else {
            None
        };
        // One conditional write: of two callbacks racing with one state, one wins.
        let n = self.conn.execute(
            "UPDATE oauth_flows SET used_at = ?2, verifier_sealed = NULL,
               outcome = COALESCE(?3, outcome),
               client_sealed = CASE WHEN ?3 IS NULL THEN client_sealed ELSE NULL END
             WHERE id = ?1 AND used_at IS NULL",
            params![flow.id, now, refusal],
        )?;
        Ok(match (n, refusal) {
            (0, _) => Claim::Used(flow),
            (_, Some("state_expired")) => Claim::Expired(flow),
            (_, Some("state_other_operator")) => Claim::OtherActor(flow),
            (_, Some(_)) => Claim::OtherCredential(flow),
            (_, None) => Claim::Claimed(flow),
        })
    }

    /// Note how a claimed flow ended (`connected` or a code) and wipe its client secret.
    pub fn finish_oauth_flow(&self, id: &str, outcome: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE oauth_flows SET outcome = ?2, client_sealed = NULL, verifier_sealed = NULL
             WHERE id = ?1",
            params![id, outcome],
        )?;
        Ok(())
    }

    /// The flow `id` (without its sealed values' meaning: they may be wiped).
    pub fn oauth_flow(&self, id: &str) -> Result<Option<OAuthFlow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM oauth_flows WHERE id = ?1"),
                [id],
                row,
            )
            .optional()?)
    }

    /// The flow whose state digests to `state_hash`.
    pub fn oauth_flow_by_state(&self, state_hash: &str) -> Result<Option<OAuthFlow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM oauth_flows WHERE state_hash = ?1"),
                [state_hash],
                row,
            )
            .optional()?)
    }

    /// End every flow not yet used (the master key changed: their sealed values would not open).
    pub fn cancel_oauth_flows(&self, now: i64) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE oauth_flows SET used_at = ?1, outcome = 'cancelled', verifier_sealed = NULL,
               client_sealed = NULL
             WHERE used_at IS NULL",
            [now],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_is_used_once_by_its_actor_before_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let flow = |id: &str, expires_at| OAuthFlow {
            id: id.into(),
            state_hash: format!("h-{id}"),
            credential: "linear".into(),
            actor: "user:a".into(),
            plan: "{}".into(),
            verifier_sealed: Some(vec![1, 2, 3]),
            client_sealed: Some(vec![4]),
            key_fp: "fp".into(),
            created_at: 100,
            expires_at,
            ..Default::default()
        };
        store.start_oauth_flow(&flow("f1", 700)).unwrap();
        store.start_oauth_flow(&flow("f2", 150)).unwrap();
        let claim = |h: &str, actor, cred| store.claim_oauth_flow(h, actor, cred, 200).unwrap();
        let outcome = |id: &str| store.oauth_flow(id).unwrap().unwrap().outcome;
        assert_eq!(claim("nope", None, None), Claim::Unknown);
        match claim("h-f1", Some("user:a"), Some("linear")) {
            Claim::Claimed(f) => assert_eq!(f.verifier_sealed, Some(vec![1, 2, 3])),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            claim("h-f1", Some("user:a"), None),
            Claim::Used(_)
        ));
        let used = store.oauth_flow("f1").unwrap().unwrap();
        assert_eq!((used.used_at, used.verifier_sealed), (Some(200), None));
        store.finish_oauth_flow("f1", "connected").unwrap();
        let done = store.oauth_flow("f1").unwrap().unwrap();
        assert_eq!(done.outcome.as_deref(), Some("connected"));
        assert_eq!(done.client_sealed, None);
        assert!(matches!(claim("h-f2", None, None), Claim::Expired(_)));
        assert!(matches!(claim("h-f2", None, None), Claim::Used(_)));
        assert_eq!(outcome("f2").as_deref(), Some("state_expired"));
        // Shown by another operator, or for another credential: spent.
        store.start_oauth_flow(&flow("f4", 700)).unwrap();
        store.start_oauth_flow(&flow("f5", 700)).unwrap();
        assert!(matches!(
            claim("h-f4", Some("user:b"), None),
            Claim::OtherActor(_)
        ));
        assert!(matches!(
            claim("h-f4", Some("user:a"), None),
            Claim::Used(_)
        ));
        assert_eq!(outcome("f4").as_deref(), Some("state_other_operator"));
        assert!(matches!(
            claim("h-f5", None, Some("github")),
            Claim::OtherCredential(_)
        ));
        let f5 = store.oauth_flow("f5").unwrap().unwrap();
        assert_eq!((f5.verifier_sealed, f5.client_sealed), (None, None));
        // A new flow a day later forgets the old ones.
        let mut late = flow("f3", 100_000);
        late.created_at = 100_000;
        store.start_oauth_flow(&late).unwrap();
        assert_eq!(store.oauth_flow("f1").unwrap(), None);
        assert_eq!(store.cancel_oauth_flows(100_001).unwrap(), 1);
        assert!(matches!(claim("h-f3", None, None), Claim::Used(_)));
    }
}
