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
        let b: NewOrg = body(c.req)?;
        let spec = crate::admin::OrgSpec {
            name: b.name,
            region: region(b.region.as_deref())?,
            pii: setting("pii", b.pii.as_deref())?,
            secrets: setting("secrets", b.secrets.as_deref())?,
            response_redaction: setting("response_redaction", b.response_redaction.as_deref())?,
            mcp: McpLists::parse([
                ("mcp_tools", b.mcp_tools.as_deref()),
                ("mcp_resources", b.mcp_resources.as_deref()),
                ("mcp_prompts", b.mcp_prompts.as_deref()),
            ])?,
            limits: LimitsPatch::parse(b.rpm, b.tpm, b.budget_tokens, b.budget_period.as_deref())?,
        };
        let org = crate::admin::create_org_as(
            store,
            &self.ring,
            &c.actor(),
            &spec,
            self.pii_default,
            None,
        )?;
        Ok((201, to_value(&org)))
    }

    pub(super) fn get_org(&self, store: &Store, id: &str) -> ApiResult {
        Ok((200, to_value(&store.org(id)?)))
    }

    pub(super) fn update_org(&self, store: &Store, c: &Caller, id: &str) -> ApiResult {
        let b: OrgPatch = body(c.req)?;
        let change = crate::admin::OrgChange {
            region: region(b.region.as_deref())?,
            pii: setting("pii", b.pii.as_deref())?,
            secrets: setting("secrets", b.secrets.as_deref())?,
            response_redaction: setting("response_redaction", b.response_redaction.as_deref())?,
            mcp: McpLists::parse([
                ("mcp_tools", b.mcp_tools.as_deref()),
                ("mcp_resources", b.mcp_resources.as_deref()),
                ("mcp_prompts", b.mcp_prompts.as_deref()),
            ])?,
            limits: LimitsPatch::parse(b.rpm, b.tpm, b.budget_tokens, b.budget_period.as_deref())?,
        };
        let org = crate::admin::update_org_as(store, &self.ring, &c.actor(), id, &change)?;
        Ok((200, to_value(&org)))
    }

    pub(super) fn delete_org(&self, store: &Store, c: &Caller, id: &str) -> ApiResult {
        if c.param("hard") != Some("true") {
            return Err(err(
                Code::HardDeleteRequired,
                "Deleting an org removes its keys and users and shreds its audit details; it cannot be undone. Repeat with ?hard=true.",
            ));
        }
        let (d, purged) = crate::admin::delete_org_as(store, &self.ring, &c.actor(), id)?;
        let mut v = to_value(&d);
        v["wal_purged"] = purged.into();
        Ok((200, v))
    }
}
