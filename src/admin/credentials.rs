//! Upstream credentials (static and OAuth) and the master key's rotation.

use super::*;

pub(super) fn check_credential_name(name: &str) -> Result<()> {
    match crate::config::is_credential_name(name) {
        true => Ok(()),
        false => Err(Error::Invalid(crate::config::CREDENTIAL_NAME_RULE.into())),
    }
}

/// Turn what was read from stdin into a secret: one trailing newline (`\n` or `\r\n`) is
/// stripped; empty, oversized, non-UTF-8 or control-character-bearing input is refused (a
/// secret goes into an HTTP header). Error messages never include the input.
pub fn secret_from_input(mut raw: Zeroizing<Vec<u8>>) -> Result<Zeroizing<String>> {
    if raw.ends_with(b"\n") {
        raw.pop();
        if raw.ends_with(b"\r") {
            raw.pop();
        }
    }
    if raw.is_empty() {
        return Err(Error::EmptySecret);
    }
    if raw.len() > MAX_SECRET_BYTES {
        return Err(Error::Invalid(format!(
            "the secret is longer than {MAX_SECRET_BYTES} bytes"
        )));
    }
    if raw.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(Error::Invalid(
            "the secret contains control characters or more than one line".into(),
        ));
    }
    let s = std::str::from_utf8(&raw)
        .map_err(|_| Error::Invalid("the secret is not valid UTF-8".into()))?;
    Ok(Zeroizing::new(s.to_string()))
}

/// A credential as listed: never the secret.
#[derive(Debug, Serialize)]
pub struct CredentialView {
    pub id: String,
    pub name: String,
    /// Fingerprint of the master key that sealed it.
    pub key_fingerprint: String,
    /// Whether that is the current master key (`null` when the current key is not known).
    pub current_key: Option<bool>,
    pub created_at: store::Timestamp,
    pub rotated_at: store::Timestamp,
    pub expires_at: Option<store::Timestamp>,
    /// Whole days since the secret was last set.
    pub age_days: i64,
    pub expired: bool,
    /// `static` (the stored secret is sent) or `oauth` (it obtains access tokens).
    pub kind: store::CredentialType,
    /// OAuth: token endpoint, client id, scope, resource and grant (no secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth: Option<crate::auth::oauth::Settings>,
    /// OAuth: when the current access token expires (`null`: none obtained yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<store::Timestamp>,
    /// OAuth: when the current access token was obtained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_obtained_at: Option<store::Timestamp>,
    /// OAuth: failed refreshes since the last good one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_failures: Option<i64>,
    /// OAuth: why the last refresh failed (`unreachable`, `http_401`, `invalid_response`,
    /// `needs_reconnect`: the server refused the refresh token, connect again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// OAuth, connected with the authorization code grant: issuer, client authentication,
    /// revocation endpoint, whether the client was registered dynamically.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected: Option<crate::auth::oauth::Connected>,
}

pub(super) fn view(c: store::Credential, current_fp: Option<&str>) -> CredentialView {
    let now = OffsetDateTime::now_utc();
    CredentialView {
        age_days: (now - c.rotated_at.0).whole_days(),
        expired: c.expires_at.is_some_and(|t| t.0 <= now),
        current_key: current_fp.map(|fp| fp == c.key_fp),
        oauth: c
            .oauth
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok()),
        refresh_failures: c.kind.is_oauth().then_some(c.refresh_failures),
        token_expires_at: c.token_expires_at,
        token_obtained_at: c.token_obtained_at,
        last_error: c.last_error,
        connected: c
            .connect
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok()),
        kind: c.kind,
        key_fingerprint: c.key_fp,
        id: c.id,
        name: c.name,
        created_at: c.created_at,
        rotated_at: c.rotated_at,
        expires_at: c.expires_at,
    }
}

/// Store (or replace) a credential, sealed under the current master key and bound to its row.
pub(super) fn set(
    store: &Store,
    ring: &Keyring,
    name: &str,
    secret: &str,
    expires: Option<&str>,
) -> Result<CredentialView> {
    check_credential_name(name)?;
    let expires = expires.map(future_time).transpose()?;
    let id = store.credential_id(name)?.unwrap_or_else(store::new_id);
    let now = store::Timestamp::now();
    let row = store::Credential {
        sealed: ring.seal(secret.as_bytes(), &vault::aad("credentials", &id, name)),
        key_fp: ring.fingerprint(),
        id,
        name: name.to_string(),
        created_at: now,
        rotated_at: now,
        expires_at: expires,
        kind: store::CredentialType::Static,
        ..Default::default()
    };
    store.put_credential(&row)?;
    stored_view(store, ring, name)
}

/// Check an OAuth credential's settings: a token URL that is https (or http to a loopback
/// address), a client id, and a scope and resource fit for a form field.
pub fn check_oauth(s: &oauth::Settings) -> Result<()> {
    let field = |field, reason: &str| Error::Field {
        field,
        reason: reason.into(),
    };
    oauth::check_url(&s.token_url).map_err(|why| field("token_url", why))?;
    if s.pins.len() > 16 || s.pins.iter().any(|p| crate::config::parse_pin(p).is_none()) {
        return Err(field(
            "pins",
            "at most 16, each sha256/ and the base64 of a certificate's SHA-256 digest (sluice tls pin --url ...)",
        ));
    }
    let printable =
        |v: &str| !v.is_empty() && v.len() <= 1024 && !v.bytes().any(|b| b < 0x20 || b == 0x7f);
    if !printable(&s.client_id) {
        return Err(field("client_id", "must be 1 to 1024 printable characters"));
    }
    if s.scope.as_deref().is_some_and(|v| !printable(v)) {
        return Err(field("scope", "must be 1 to 1024 printable characters"));
    }
    if let Some(r) = &s.resource {
        // RFC 8707: an absolute URI without a fragment.
        let ok = printable(r)
            && !r.contains('#')
            && r.parse::<http::Uri>()
                .is_ok_and(|u| u.scheme().is_some() && u.authority().is_some());
        if !ok {
            return Err(field(
                "resource",
                "must be an absolute URI without a fragment (RFC 8707), e.g. https://mcp.example.com/mcp",
            ));
        }
    }
    Ok(())
}

/// Store (or replace) an OAuth credential: its settings, and its client secret (or refresh
/// token) sealed like any secret. `first` is a token already obtained with it (stored in the
/// same statement, with the rotated refresh token in `secret` already); without one, the
/// running `serve` obtains it within a second.
pub(super) fn set_oauth(
    store: &Store,
    ring: &Keyring,
    name: &str,
    settings: &oauth::Settings,
    secret: &str,
    first: Option<&oauth::Token>,
) -> Result<CredentialView> {
    put_oauth_credential(store, ring, name, settings, secret, None, first)
}

/// A connected credential's client: how it was connected and its secret (if confidential).
pub type ConnectedClient<'a> = (&'a oauth::Connected, Option<&'a str>);

/// [`set_oauth_credential`], for a connected credential too (its client secret sealed apart).
pub(super) fn put_oauth_credential(
    store: &Store,
    ring: &Keyring,
    name: &str,
    settings: &oauth::Settings,
    secret: &str,
    client: Option<ConnectedClient<'_>>,
    first: Option<&oauth::Token>,
) -> Result<CredentialView> {
    check_credential_name(name)?;
    check_oauth(settings)?;
    let id = store.credential_id(name)?.unwrap_or_else(store::new_id);
    let now = store::Timestamp::now();
    let row = store::Credential {
        sealed: ring.seal(secret.as_bytes(), &vault::aad("credentials", &id, name)),
        key_fp: ring.fingerprint(),
        name: name.to_string(),
        created_at: now,
        rotated_at: now,
        kind: store::CredentialType::OAuth,
        oauth: Some(serde_json::to_string(settings).map_err(|e| Error::Invalid(e.to_string()))?),
        connect: client
            .map(|(c, _)| serde_json::to_string(c))
            .transpose()
            .map_err(|e| Error::Invalid(e.to_string()))?,
        client_sealed: client
            .and_then(|(_, s)| s)
            .map(|s| ring.seal(s.as_bytes(), &vault::aad(vault::CLIENT_TABLE, &id, name))),
        id: id.clone(),
        ..Default::default()
    };
    store.put_credential(&row)?;
    if let Some(token) = first {
        // The secret passed in is already the rotated one: only the token is stored here.
        let sealed = oauth::seal(ring, &id, name, oauth::Grant::ClientCredentials, token);
        store.set_oauth_token(&id, &sealed.token, &sealed.expires_at, None)?;
    }
    stored_view(store, ring, name)
}

/// The view of credential `name` as stored.
pub(super) fn stored_view(store: &Store, ring: &Keyring, name: &str) -> Result<CredentialView> {
    let stored = store
        .credentials()?
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| {
            Error::Store(store::Error::NotFound {
                what: "credential",
                id: name.to_string(),
            })
        })?;
    Ok(view(stored, Some(&ring.fingerprint())))
}

/// Every credential's metadata.
pub fn list_credentials(store: &Store, current_fp: Option<&str>) -> Result<Vec<CredentialView>> {
    Ok(store
        .credentials()?
        .into_iter()
        .map(|c| view(c, current_fp))
        .collect())
}

/// Delete a credential; requests to upstreams that use it are refused from then on.
pub(super) fn delete(store: &Store, name: &str) -> Result<()> {
    Ok(store.delete_credential(name)?)
}

/// What `secrets rotate` did.
#[derive(Debug, Serialize)]
pub struct Rotation {
    /// Credentials re-sealed.
    pub rotated: usize,
    /// Org data keys (audit crypto-shredding) re-sealed.
    pub org_keys_rotated: usize,
    /// Users' TOTP seeds re-sealed.
    pub totp_rotated: usize,
    pub key_fingerprint: String,
}

/// Re-seal every credential, org data key and TOTP seed under the current master key. Run it inside
/// [`Store::atomically`] (as [`audited`] does): either all are re-sealed or none is (e.g. when
/// one was sealed by a key in neither `SLUICE_SECRETS_KEY` nor `SLUICE_SECRETS_KEY_OLD`).
pub(super) fn reseal(store: &Store, ring: &Keyring) -> Result<Rotation> {
    let rotated = store
        .reseal_credentials(|c| {
            let aad = vault::aad("credentials", &c.id, &c.name);
            let plain = ring
                .open(&c.sealed, &aad)
                .map_err(|e| (c.name.clone(), e))?;
            // An OAuth credential's current access token moves to the new key too.
            let token_aad = vault::aad(vault::TOKEN_TABLE, &c.id, &c.name);
            let token_sealed = match &c.token_sealed {
                Some(t) => {
                    let plain = ring.open(t, &token_aad).map_err(|e| (c.name.clone(), e))?;
                    Some(ring.seal(&plain, &token_aad))
                }
                None => None,
            };
            // A connected credential's client secret too.
            let client_aad = vault::aad(vault::CLIENT_TABLE, &c.id, &c.name);
            let client_sealed = match &c.client_sealed {
                Some(t) => {
                    let plain = ring.open(t, &client_aad).map_err(|e| (c.name.clone(), e))?;
                    Some(ring.seal(&plain, &client_aad))
                }
                None => None,
            };
            Ok::<_, (String, vault::Error)>(store::Resealed {
                sealed: ring.seal(&plain, &aad),
                key_fp: ring.fingerprint(),
                token_sealed,
                client_sealed,
            })
        })
        .map_err(|e| match e {
            store::ResealError::Store(e) => Error::Store(e),
            store::ResealError::Seal((name, e)) => {
                Error::Invalid(format!("credential {name:?}: {e}; nothing was changed"))
            }
        })?;
    let mut org_keys_rotated = 0;
    for (org, sealed) in store.org_keys()? {
        let aad = vault::aad("org_keys", &org, "audit");
        let plain = ring.open(&sealed, &aad).map_err(|e| {
            Error::Invalid(format!(
                "the audit data key of org {org}: {e}; nothing was changed"
            ))
        })?;
        store.reseal_org_key(&org, &ring.seal(&plain, &aad), &ring.fingerprint())?;
        org_keys_rotated += 1;
    }
    let totp_rotated = users::reseal_totp(store, ring)?;
    // A connect under way holds values sealed under the old key: it is started again.
    store.cancel_oauth_flows(OffsetDateTime::now_utc().unix_timestamp())?;
    Ok(Rotation {
        rotated,
        org_keys_rotated,
        totp_rotated,
        key_fingerprint: ring.fingerprint(),
    })
}
