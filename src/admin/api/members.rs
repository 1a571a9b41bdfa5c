//! An org's users (members) and their sessions.

use super::*;

impl Api {
    pub(super) fn member(
        &self,
        store: &Store,
        org: &str,
        uid: &str,
    ) -> Result<store::User, ApiError> {
        match store.user(uid) {
            Ok(u) if u.org_id.as_deref() == Some(org) => Ok(u),
            _ => Err(err(Code::NotFound, "No such user in this org.")),
        }
    }

    /// Admins manage members, auditors and admins; only owners (and operators) touch owners.
    pub(super) fn may_manage(
        p: &Principal,
        target_role: Option<Role>,
        new_role: Option<Role>,
    ) -> Result<(), ApiError> {
        if p.operator || p.role == Some(Role::Owner) {
            return Ok(());
        }
        if target_role == Some(Role::Owner) || new_role == Some(Role::Owner) {
            return Err(denied());
        }
        Ok(())
    }

    pub(super) fn list_users(&self, store: &Store, org: &str) -> ApiResult {
        Ok((200, json!({ "data": users::list(store, Some(org))? })))
    }

    pub(super) fn create_member(&self, store: &Store, c: &Caller, org: &str) -> ApiResult {
        let p = c.principal()?;
        let b: NewMember = body(c.req)?;
        Self::may_manage(p, None, Some(b.role))?;
        let new = users::NewUser {
            email: b.email,
            org_id: Some(org.to_string()),
            role: Some(b.role),
            operator: false,
            totp: b.totp,
        };
        let created = crate::admin::create_user(store, &self.ring, &c.actor(), &new, &b.password)?;
        let mut v = to_value(&created);
        if let Some(svg) = created
            .totp
            .as_ref()
            .and_then(|e| auth::qr_svg(&e.otpauth_uri))
        {
            v["totp"]["qr_svg"] = svg.into();
        }
        Ok((201, v))
    }

    /// The checks before every change to one member: the caller's role, the target in this
    /// org, owners only by owners.
    pub(super) fn check_member(
        &self,
        store: &Store,
        c: &Caller,
        org: &str,
        uid: &str,
        new_role: Option<Role>,
    ) -> Result<(), ApiError> {
        let p = c.principal()?;
        let target = self.member(store, org, uid)?;
        Self::may_manage(p, target.role, new_role)
    }

    pub(super) fn update_member(
        &self,
        store: &Store,
        c: &Caller,
        org: &str,
        uid: &str,
    ) -> ApiResult {
        let b: MemberPatch = body(c.req)?;
        self.check_member(store, c, org, uid, Some(b.role))?;
        let v = crate::admin::set_role(store, &self.ring, &c.actor(), uid, b.role)?;
        Ok((200, to_value(&v)))
    }

    pub(super) fn delete_member(
        &self,
        store: &Store,
        c: &Caller,
        org: &str,
        uid: &str,
    ) -> ApiResult {
        self.check_member(store, c, org, uid, None)?;
        crate::admin::delete_user(store, &self.ring, &c.actor(), uid)?;
        Ok((200, json!({"id": uid, "deleted": true})))
    }

    pub(super) fn revoke_member(
        &self,
        store: &Store,
        c: &Caller,
        org: &str,
        uid: &str,
    ) -> ApiResult {
        self.check_member(store, c, org, uid, None)?;
        crate::admin::revoke_sessions(store, &self.ring, &c.actor(), uid)?;
        Ok((200, json!({"id": uid, "sessions_revoked": true})))
    }
}
