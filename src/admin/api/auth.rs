//! Logins, the caller's own account (password, TOTP) and logout.

use super::*;

impl Api {
    pub(super) fn login(&self, c: &Caller) -> ApiResult {
        let req = c.req;
        let sessions = self.sessions.as_ref().ok_or_else(disabled)?;
        let l: Login = body(req)?;
        let ip = req.peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        // The slot is taken before bcrypt and stays a failure unless the login succeeds, so
        // parallel attempts cannot outrun the limit.
        let reservation = self
            .throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reserve(ip, &l.email);
        let reservation = match reservation {
            Ok(r) => r,
            Err(wait) => {
                self.logins.with_label_values(&["throttled"]).inc();
                return Err(ApiError {
                    retry_after: Some(wait),
                    ..err(
                        Code::RateLimited,
                        format!("Too many failed logins; retry in {wait} s."),
                    )
                });
            }
        };
        let store = self.login_store.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = users::login(
            &store,
            &self.ring,
            &self.dummy_hash,
            &users::Attempt {
                email: &l.email,
                password: &l.password,
                totp: l.totp.as_deref(),
                recovery_code: l.recovery_code.as_deref(),
            },
        );
        match outcome {
            Ok(user) => {
                self.logins.with_label_values(&["success"]).inc();
                self.throttle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .succeed(reservation);
                let mut r = c.record("auth.login", user.org_id.as_deref());
                r.actor = format!("user:{}", user.id);
                r.target_id = Some(user.id.clone());
                r.details = json!({"second_factor": if user.totp_sealed.is_none() { "none" } else if l.recovery_code.as_deref().is_some_and(|c| !c.trim().is_empty()) { "recovery_code" } else { "totp" }});
                audit::append(&store, &mut audit::OrgKeys::new(&self.ring), &[r])?;
                let token = sessions.issue(&user);
                Ok((
                    200,
                    json!({"token": token, "token_type": "Bearer",
                           "expires_in": sessions.ttl().as_secs(),
                           "user": to_value(&users::view(&store, user)?)}),
                ))
            }
            Err(refused) => {
                self.logins
                    .with_label_values(&[refused.reason.as_str()])
                    .inc();
                // The reservation already counts as this failure.
                drop(reservation);
                let mut r = c.record("auth.login", refused.org_id.as_deref());
                r.outcome = "failure";
                r.target_id = refused.user_id.clone();
                r.details = json!({"reason": refused.reason.as_str()});
                // Fail closed: a login attempt that cannot be recorded is not answered as such.
                audit::append(&store, &mut audit::OrgKeys::new(&self.ring), &[r])?;
                if refused.reason == users::Failure::Internal {
                    return Err(err(
                        Code::InternalError,
                        "Internal error; see the sluice log.",
                    ));
                }
                Err(err(Code::InvalidCredentials, INVALID_CREDENTIALS))
            }
        }
    }

    pub(super) fn me(&self, store: &Store, c: &Caller) -> ApiResult {
        let p = c.principal()?;
        Ok((200, to_value(&users::view(store, store.user(&p.user_id)?)?)))
    }

    /// Re-check the caller's password before a sensitive change; failures count towards the
    /// same throttle as logins (a stolen token must not become a password oracle).
    pub(super) fn check_own_password(
        &self,
        store: &Store,
        c: &Caller,
        password: &str,
    ) -> Result<(), ApiError> {
        self.check_own(store, c, password, None)
    }

    /// [`Self::check_own_password`], plus the second factor (`(totp, recovery_code)`) when
    /// `second` is given: a current TOTP code or an unused recovery code (burnt), exactly as
    /// a login checks them. An account without TOTP needs the password only.
    pub(super) fn check_own(
        &self,
        store: &Store,
        c: &Caller,
        password: &str,
        second: Option<(Option<&str>, Option<&str>)>,
    ) -> Result<(), ApiError> {
        let p = c.principal()?;
        let u = store.user(&p.user_id)?;
        let ip = c.req.peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let reservation = self
            .throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reserve(ip, &u.email)
            .map_err(|wait| ApiError {
                retry_after: Some(wait),
                ..err(
                    Code::RateLimited,
                    format!("Too many failed attempts; retry in {wait} s."),
                )
            })?;
        let ok = match second {
            None => {
                password.len() <= users::MAX_PASSWORD_BYTES
                    && bcrypt::verify(password, &u.password_hash).unwrap_or(false)
            }
            Some((totp, recovery_code)) => users::login(
                store,
                &self.ring,
                &self.dummy_hash,
                &users::Attempt {
                    email: &u.email,
                    password,
                    totp,
                    recovery_code,
                },
            )
            .is_ok_and(|v| v.id == u.id),
        };
        if ok {
            self.throttle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .succeed(reservation);
            Ok(())
        } else {
            Err(err(Code::InvalidCredentials, INVALID_CREDENTIALS))
        }
    }

    pub(super) fn change_password(&self, store: &Store, c: &Caller) -> ApiResult {
        let p = c.principal()?.clone();
        let b: PasswordChange = body(c.req)?;
        self.check_own_password(store, c, &b.current_password)?;
        crate::admin::set_password(store, &self.ring, &c.actor(), &p.user_id, &b.new_password)?;
        let user = store.user(&p.user_id)?;
        let sessions = self.sessions.as_ref().ok_or_else(disabled)?;
        Ok((
            200,
            json!({"password_changed": true, "sessions_revoked": true,
                   "token": sessions.issue(&user), "token_type": "Bearer",
                   "expires_in": sessions.ttl().as_secs()}),
        ))
    }

    pub(super) fn reenroll(&self, store: &Store, c: &Caller) -> ApiResult {
        let p = c.principal()?.clone();
        let b: Reauth = body(c.req)?;
        self.check_own(
            store,
            c,
            &b.password,
            Some((b.totp.as_deref(), b.recovery_code.as_deref())),
        )?;
        let e = crate::admin::enroll_totp(store, &self.ring, &c.actor(), &p.user_id)?;
        let mut v = to_value(&e);
        // The console shows it as a QR code to scan.
        if let Some(svg) = qr_svg(&e.otpauth_uri) {
            v["qr_svg"] = svg.into();
        }
        Ok((200, v))
    }

    pub(super) fn logout(&self, store: &Store, c: &Caller) -> ApiResult {
        let p = c.principal()?.clone();
        crate::admin::revoke_sessions(store, &self.ring, &c.actor(), &p.user_id)?;
        Ok((200, json!({"sessions_revoked": true})))
    }
}

/// `text` as a QR code, an SVG document (for the console to show as an image).
pub(super) fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color>()
            .min_dimensions(220, 220)
            .quiet_zone(true)
            .build(),
    )
}
