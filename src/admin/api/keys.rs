//! An org's API keys: list, create, change, revoke.

use super::*;

impl Api {
    pub(super) fn list_keys(&self, store: &Store, org: &str) -> ApiResult {
        Ok((
            200,
            json!({ "data": crate::admin::list_keys(store, Some(org))? }),
        ))
    }

    pub(super) fn create_key(&self, store: &Store, c: &Caller, org: &str) -> ApiResult {
        let spec = key_spec(body_of::<NewKey>(c.req)?, org)?;
        let k = crate::admin::create_key(store, &self.ring, &c.actor(), &spec, None)?;
        Ok((201, to_value(&k)))
    }

    pub(super) fn update_key(&self, store: &Store, c: &Caller, org: &str, kid: &str) -> ApiResult {
        if !store.keys(Some(org))?.iter().any(|k| k.id == kid) {
            return Err(err(Code::NotFound, "No such key in this org."));
        }
        let change = key_patch(&body_of::<KeyPatch>(c.req)?)?;
        let k = crate::admin::update_key(store, &self.ring, &c.actor(), kid, &change)?;
        Ok((200, to_value(&crate::admin::KeyView::of(k))))
    }

    pub(super) fn revoke_key(&self, store: &Store, c: &Caller, org: &str, kid: &str) -> ApiResult {
        if !store.keys(Some(org))?.iter().any(|k| k.id == kid) {
            return Err(err(Code::NotFound, "No such key in this org."));
        }
        crate::admin::revoke_key(store, &self.ring, &c.actor(), kid)?;
        Ok((200, json!({"id": kid, "revoked": true})))
    }
}
