//! Orgs: list, create, read, change, hard delete.

use super::*;

impl Api {
    pub(super) fn list_orgs(&self, store: &Store, c: &Caller) -> ApiResult {
        let p = c.principal()?;
        let orgs: Vec<store::Org> = if p.operator {
            store.orgs()?
        } else {
            p.org_id
                .as_deref()
                .map(|o| store.org(o))
                .transpose()?
                .into_iter()
                .collect()
        };
        Ok((200, json!({ "data": orgs })))
    }

    pub(super) fn create_org(&self, store: &Store, c: &Caller) -> ApiResult {
        let (named, region, switches, fields) = body_of::<NewOrg>(c.req)?;
        let spec = crate::admin::OrgSpec {
            settings: org_patch(&region, &switches, &fields)?,
            name: named.name,
        };
        let org =
            crate::admin::create_org(store, &self.ring, &c.actor(), &spec, self.pii_default, None)?;
        Ok((201, to_value(&org)))
    }

    pub(super) fn get_org(&self, store: &Store, id: &str) -> ApiResult {
        Ok((200, to_value(&store.org(id)?)))
    }

    pub(super) fn update_org(&self, store: &Store, c: &Caller, id: &str) -> ApiResult {
        let (region, switches, fields) = body_of::<OrgPatch>(c.req)?;
        let change = org_patch(&region, &switches, &fields)?;
        let org = crate::admin::update_org(store, &self.ring, &c.actor(), id, &change)?;
        Ok((200, to_value(&org)))
    }

    pub(super) fn delete_org(&self, store: &Store, c: &Caller, id: &str) -> ApiResult {
        if c.param("hard") != Some("true") {
            return Err(err(
                Code::HardDeleteRequired,
                "Deleting an org removes its keys and users and shreds its audit details; it cannot be undone. Repeat with ?hard=true.",
            ));
        }
        let (d, purged) = crate::admin::delete_org(store, &self.ring, &c.actor(), id)?;
        let mut v = to_value(&d);
        v["wal_purged"] = purged.into();
        Ok((200, v))
    }
}
