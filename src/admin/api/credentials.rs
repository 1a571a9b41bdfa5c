//! Upstream credentials (sidecar-wide: operators only), OAuth connects and their callback.

use super::*;

impl Api {
    pub(super) fn list_credentials(&self, store: &Store) -> ApiResult {
        let fp = self.ring.fingerprint();
        Ok((
            200,
            json!({ "data": crate::admin::list_credentials(store, Some(&fp))? }),
        ))
    }

    /// Runs without the store's lock (see [`Handler::Unlocked`]): a slow or hanging token
    /// endpoint holds up this call only, not every admin call.
    pub(super) fn set_credential(&self, c: &Caller, name: &str) -> ApiResult {
        let b: CredentialBody = body(c.req)?;
        let mut secret =
            crate::admin::secret_from_input(zeroize::Zeroizing::new(b.secret.into_bytes()))?;
        let Some(settings) = b.oauth else {
            let v = crate::admin::set_credential(
                &self.store(),
                &self.ring,
                &c.actor(),
                name,
                &secret,
                b.expires_at.as_deref(),
                None,
            )?;
            return Ok((200, to_value(&v)));
        };
        if b.expires_at.is_some() {
            return Err(err(
                Code::InvalidRequest,
                "expires_at does not apply to an OAuth credential (its tokens expire on their own).",
            ));
        }
        crate::admin::check_oauth(&settings)?;
        let first = if b.verify {
            let token = crate::auth::oauth::first_token(&settings, &mut secret, &self.tls)
                .map_err(|e| {
                    err(
                        Code::OauthTokenFailed,
                        format!(
                            "The token endpoint gave no token ({e}; code {}): nothing was stored.",
                            e.code()
                        ),
                    )
                })?;
            Some(token)
        } else {
            None
        };
        // The fetch ran without the lock: the caller's session and role are checked again
        // (revoked meanwhile, no write).
        let store = self.store();
        let principal = self.authenticate(&store, c.req)?;
        Access::Operator.check(Some(&principal), None)?;
        let v = crate::admin::set_oauth_credential(
            &store,
            &self.ring,
            &c.actor(),
            name,
            &settings,
            &secret,
            first.as_ref(),
        )?;
        Ok((200, to_value(&v)))
    }

    /// Runs without the store's lock: revoking a connected credential's tokens is a call to
    /// its authorization server.
    pub(super) fn delete_credential(&self, c: &Caller, name: &str) -> ApiResult {
        let row = self
            .store()
            .credentials()?
            .into_iter()
            .find(|r| r.name == name);
        let revoked = match &row {
            Some(r) => crate::admin::connect::revoke(&self.ring, &self.tls, r),
            None => crate::admin::connect::Revoked::None,
        };
        self.count_revocation(revoked);
        let store = self.store();
        let principal = self.authenticate(&store, c.req)?;
        Access::Operator.check(Some(&principal), None)?;
        crate::admin::delete_credential(&store, &self.ring, &c.actor(), name, revoked.as_str())?;
        Ok((
            200,
            json!({"name": name, "deleted": true, "tokens": revoked.as_str()}),
        ))
    }

    pub(super) fn count_revocation(&self, r: crate::admin::connect::Revoked) {
        if let (
            Some((_, revocations)),
            crate::admin::connect::Revoked::Revoked | crate::admin::connect::Revoked::Failed,
        ) = (&self.oauth_counters, r)
        {
            revocations.with_label_values(&[r.as_str()]).inc();
        }
    }

    /// Count a connect's outcome; once connected, make the proxy use the new tokens, then
    /// revoke those it replaced (counted too).
    fn finish_connect(
        &self,
        outcome: Result<crate::admin::connect::Connected, Error>,
    ) -> ApiResult {
        if let Some((connects, _)) = &self.oauth_counters {
            let o = match &outcome {
                Ok(_) => "connected",
                Err(e) => e.code(),
            };
            connects.with_label_values(&[o]).inc();
        }
        let mut done = outcome?;
        self.changed();
        if let Some(f) = &self.on_change {
            f(&self.store());
        }
        let revoked = done.revoke_replaced(&self.ring, &self.tls);
        self.count_revocation(revoked);
        Ok((200, to_value(&done)))
    }

    /// Runs without the store's lock: discovery and registration call other servers.
    pub(super) fn connect(&self, c: &Caller, name: &str) -> ApiResult {
        let b: ConnectBody = body(c.req)?;
        let (resource, resource_tls) = match (&b.mcp_server, b.resource) {
            (Some(_), Some(_)) => {
                return Err(err(
                    Code::InvalidRequest,
                    "Give mcp_server or resource, not both.",
                ))
            }
            (Some(server), None) => {
                let (url, tls) = self.mcp_server_url(server)?;
                (Some(url), tls)
            }
            (None, r) => (r, None),
        };
        let redirect_uri = b
            .redirect_uri
            .unwrap_or_else(|| crate::admin::connect::default_redirect_uri(self.admin_addr));
        let spec = crate::admin::connect::Spec {
            name: name.to_string(),
            resource,
            issuer: b.issuer,
            client_id: b.client_id,
            client_secret: b.client_secret.map(zeroize::Zeroizing::new),
            scope: b.scope,
            redirect_uri,
            resource_tls,
        };
        let prepared = crate::admin::connect::prepare(spec, &self.tls);
        let store = self.store();
        let principal = self.authenticate(&store, c.req)?;
        Access::Operator.check(Some(&principal), None)?;
        let prepared = prepared.inspect_err(|e| {
            crate::admin::connect::record_start_failure(&store, &self.ring, &c.actor(), name, e);
        })?;
        let started = crate::admin::connect::start(&store, &self.ring, &c.actor(), prepared)?;
        Ok((201, to_value(&started)))
    }

    /// The URL and TLS policy of a configured MCP server (as a reload left them).
    pub(super) fn mcp_server_url(
        &self,
        name: &str,
    ) -> Result<(String, Option<crate::config::Tls>), ApiError> {
        let servers: Vec<crate::config::McpServer> = match &self.mcp_view {
            Some(view) => view().into_iter().map(|(m, _)| m).collect(),
            None => self.mcp_servers.clone(),
        };
        let m = servers.iter().find(|m| m.name == name).ok_or_else(|| {
            err(
                Code::InvalidRequest,
                "mcp_server is not a configured MCP server ([[mcp_servers]] name).",
            )
        })?;
        Ok((m.endpoint_url(), m.tls.clone()))
    }

    pub(super) fn complete_connect(&self, c: &Caller, name: &str) -> ApiResult {
        let b: ConnectComplete = body(c.req)?;
        let query = crate::admin::connect::pasted_query(&b.redirect_url, None)?;
        let actor = c.actor();
        let r = crate::admin::connect::complete(
            || self.store(),
            &self.ring,
            &self.tls,
            crate::admin::connect::Completer::Operator {
                actor: &actor,
                credential: name,
            },
            &actor,
            &query,
        );
        self.finish_connect(r)
    }

    /// `GET /oauth/callback`: the browser, with no session; the state selects the connect.
    pub(super) fn callback(&self, c: &Caller) -> ApiResult {
        let query = c.req.query.clone().unwrap_or_default();
        let request = crate::admin::Actor {
            id: "oauth-callback".into(),
            ..c.actor()
        };
        let r = crate::admin::connect::complete(
            || self.store(),
            &self.ring,
            &self.tls,
            crate::admin::connect::Completer::Browser,
            &request,
            &query,
        );
        self.finish_connect(r)
    }
}
