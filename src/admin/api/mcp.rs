//! The configured MCP servers and their health.

use super::*;

impl Api {
    /// The configured MCP servers and whether each passes its health check (any user: it is
    /// the sidecar's configuration, with no secret in it).
    pub(super) fn mcp_servers(&self) -> ApiResult {
        // Without a view of the running data plane (tests), the configured list, health unknown.
        let servers: Vec<(crate::config::McpServer, Option<bool>)> = match &self.mcp_view {
            Some(view) => view().into_iter().map(|(m, h)| (m, Some(h))).collect(),
            None => self.mcp_servers.iter().map(|m| (m.clone(), None)).collect(),
        };
        let data: Vec<Value> = servers
            .iter()
            .map(|(m, healthy)| {
                json!({
                    "name": m.name,
                    "path": format!("/mcp/{}", m.name),
                    "url": m.url.to_string(),
                    "region": m.region.as_str(),
                    "credential": m.credential,
                    "credential_kind": match m.credential_kind {
                        crate::config::CredentialKind::Bearer => "bearer",
                        crate::config::CredentialKind::OAuth => "oauth",
                    },
                    "healthy": healthy,
                })
            })
            .collect();
        Ok((200, json!({ "data": data })))
    }
}
