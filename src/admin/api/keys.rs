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
        let b: NewKey = body(c.req)?;
        let limits = LimitsPatch::parse(b.rpm, b.tpm, b.budget_tokens, b.budget_period.as_deref())?;
        let spec = crate::admin::KeySpec {
            org_id: org.to_string(),
            name: b.name,
            pii: key_setting("pii", b.pii.as_deref())?,
            secrets: key_setting("secrets", b.secrets.as_deref())?,
            response_redaction: key_setting("response_redaction", b.response_redaction.as_deref())?,
            mcp: McpLists::parse([
                ("mcp_tools", b.mcp_tools.as_deref()),
                ("mcp_resources", b.mcp_resources.as_deref()),
                ("mcp_prompts", b.mcp_prompts.as_deref()),
            ])?,
            region: region(b.region.as_deref())?,
            rpm: limits.rpm.value().copied(),
            tpm: limits.tpm.value().copied(),
            budget: limits.budget.value().copied(),
            expires: b.expires_at,
        };
        let k = crate::admin::create_key_as(store, &self.ring, &c.actor(), &spec, None)?;
        Ok((201, to_value(&k)))
    }

    pub(super) fn update_key(&self, store: &Store, c: &Caller, org: &str, kid: &str) -> ApiResult {
        if !store.keys(Some(org))?.iter().any(|k| k.id == kid) {
            return Err(err(Code::NotFound, "No such key in this org."));
        }
        let b: KeyPatch = body(c.req)?;
        let opt = |field: &str, v: Option<&str>| v.map(|x| key_setting(field, Some(x))).transpose();
        let change = crate::admin::KeyChange {
            pii: opt("pii", b.pii.as_deref())?,
            secrets: opt("secrets", b.secrets.as_deref())?,
            response_redaction: opt("response_redaction", b.response_redaction.as_deref())?,
            mcp: McpPatch::parse([
                ("mcp_tools", b.mcp_tools.as_deref()),
                ("mcp_resources", b.mcp_resources.as_deref()),
                ("mcp_prompts", b.mcp_prompts.as_deref()),
            ])?,
            limits: LimitsPatch::parse(b.rpm, b.tpm, b.budget_tokens, b.budget_period.as_deref())?,
        };
        let k = crate::admin::update_key_as(store, &self.ring, &c.actor(), kid, &change)?;
        Ok((200, to_value(&crate::admin::KeyView::of(k))))
    }

    pub(super) fn revoke_key(&self, store: &Store, c: &Caller, org: &str, kid: &str) -> ApiResult {
        if !store.keys(Some(org))?.iter().any(|k| k.id == kid) {
            return Err(err(Code::NotFound, "No such key in this org."));
        }
        crate::admin::revoke_key_as(store, &self.ring, &c.actor(), kid)?;
        Ok((200, json!({"id": kid, "revoked": true})))
    }
}
