//! `serve --dev`'s first run.

use super::*;

/// What `serve --dev` set up.
pub struct DevSetup {
    /// The default org and its first key, when the store had no org yet.
    pub created: Option<(store::Org, CreatedKey)>,
    /// Credentials (re)set from `OPENAI_API_KEY`.
    pub credentials_set: Vec<String>,
}

/// First-run setup for `serve --dev`: a `default` org with one key when the store has no org,
/// and `openai_key` stored under each of `credential_names` whose stored value differs.
pub(super) fn bootstrap(
    store: &Store,
    ring: &Keyring,
    credential_names: &[String],
    openai_key: Option<&str>,
    pii_default: Setting,
) -> Result<DevSetup> {
    let created = if store.orgs()?.is_empty() {
        let org = orgs::create(
            store,
            &OrgSpec {
                name: "default".into(),
                ..OrgSpec::default()
            },
            pii_default,
        )?;
        let key = keys::create(store, &KeySpec::inheriting(&org.id, "dev"))?;
        Some((org, key))
    } else {
        None
    };
    let mut credentials_set = Vec::new();
    if let Some(secret) = openai_key {
        let secret = secret_from_input(Zeroizing::new(secret.as_bytes().to_vec()))?;
        let stored = store.credentials()?;
        for name in credential_names {
            let same = stored.iter().find(|c| &c.name == name).is_some_and(|c| {
                ring.open(&c.sealed, &vault::aad("credentials", &c.id, &c.name))
                    .is_ok_and(|p| p.as_slice() == secret.as_bytes())
            });
            if !same {
                credentials::set(store, ring, name, &secret, None)?;
                credentials_set.push(name.clone());
            }
        }
    }
    Ok(DevSetup {
        created,
        credentials_set,
    })
}
