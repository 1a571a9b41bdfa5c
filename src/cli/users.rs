//! `sluice users`: accounts, roles, passwords, TOTP and sessions.

use super::*;

pub(super) fn show_enrollment(e: &admin::users::Enrollment) -> String {
    format!(
        "\nTOTP (shown only this once): scan this QR code with an authenticator app, or add the URI:\n\n{}\n    {}\n\nRecovery codes (each works once in place of a TOTP code; store them safely):\n\n    {}\n",
        terminal_qr(e.otpauth_uri.as_str()),
        e.otpauth_uri.as_str(),
        e.recovery_codes.iter().map(|c| c.as_str()).collect::<Vec<_>>().join("\n    ")
    )
}

/// `text` as a QR code drawn with Unicode half blocks (two rows per line), dark on light.
fn terminal_qr(text: &str) -> String {
    match qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(_) => String::new(),
    }
}

/// A password from standard input (one line), or prompted for twice on a terminal.
pub(super) fn read_password() -> Result<Zeroizing<String>, String> {
    if std::io::stdin().is_terminal() {
        let a = Zeroizing::new(
            rpassword::prompt_password("Password: ")
                .map_err(|e| format!("cannot read the password: {e}"))?,
        );
        let b = Zeroizing::new(
            rpassword::prompt_password("Again: ")
                .map_err(|e| format!("cannot read the password: {e}"))?,
        );
        if !bool::from(subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes())) {
            return Err("the passwords differ".into());
        }
        return Ok(a);
    }
    let mut raw = Zeroizing::new(Vec::with_capacity(128));
    std::io::stdin()
        .lock()
        .take(4096)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    if raw.ends_with(b"\n") {
        raw.pop();
        if raw.ends_with(b"\r") {
            raw.pop();
        }
    }
    if raw.contains(&b'\n') {
        return Err("the password must be a single line".into());
    }
    let s = std::str::from_utf8(&raw).map_err(|_| "the password is not valid UTF-8".to_string())?;
    admin::users::check_password(s).map_err(phrase)?;
    Ok(Zeroizing::new(s.to_string()))
}

pub(super) fn user_line(v: &admin::users::UserView) -> String {
    let u = &v.user;
    format!(
        "{}  {}  {}  org={}  totp={}  recovery_codes_left={}  created={}",
        u.id,
        u.email,
        if u.operator {
            "operator"
        } else {
            u.role.map_or("-", admin::users::Role::as_str)
        },
        or_none(&u.org_id),
        if v.totp_enrolled { "on" } else { "off" },
        v.recovery_codes_left,
        u.created_at
    )
}

pub(super) fn users(cfg: &Config, c: UsersCmd) -> Outcome {
    use admin::users;
    let store = open_store(cfg)?;
    let ring = || keyring_for(&store);
    match c {
        UsersCmd::Create {
            email_arg,
            email,
            org,
            role,
            operator,
            totp,
        } => {
            let ring = ring()?;
            let password = read_password()?;
            let new = users::NewUser {
                email: email.or(email_arg).unwrap_or_default(),
                org_id: org.as_deref().map(|o| org_id(&store, o)).transpose()?,
                role,
                operator,
                totp,
            };
            let created = admin::create_user(&store, &ring, &Actor::cli(), &new, &password)
                .map_err(phrase)?;
            let mut text = format!("created user {}", user_line(&created.user));
            if let Some(e) = &created.totp {
                text.push_str(&show_enrollment(e));
            }
            Ok((to_json(&created), text))
        }
        UsersCmd::List { org } => {
            let org = org.map(|o| org_id(&store, &o)).transpose()?;
            let list = users::list(&store, org.as_deref()).map_err(phrase)?;
            let text = list.iter().map(user_line).collect::<Vec<_>>().join("\n");
            Ok((serde_json::json!({ "users": list }), text))
        }
        UsersCmd::Update { user_id, role } => {
            let v =
                admin::set_role(&store, &ring()?, &Actor::cli(), &user_id, role).map_err(phrase)?;
            Ok((to_json(&v), format!("updated user {}", user_line(&v))))
        }
        UsersCmd::Delete { user_id } => {
            admin::delete_user(&store, &ring()?, &Actor::cli(), &user_id).map_err(phrase)?;
            Ok((
                serde_json::json!({"id": user_id, "deleted": true}),
                format!("deleted user {user_id}"),
            ))
        }
        UsersCmd::SetPassword { user_id } => {
            let ring = ring()?;
            let password = read_password()?;
            admin::set_password(&store, &ring, &Actor::cli(), &user_id, &password)
                .map_err(phrase)?;
            Ok((
                serde_json::json!({"id": user_id, "password_changed": true, "sessions_revoked": true}),
                format!("set the password of user {user_id}; their sessions are revoked"),
            ))
        }
        UsersCmd::EnrollTotp { user_id } => {
            let ring = ring()?;
            let e = admin::enroll_totp(&store, &ring, &Actor::cli(), &user_id).map_err(phrase)?;
            Ok((
                to_json(&e),
                format!("enrolled TOTP for user {user_id}{}", show_enrollment(&e)),
            ))
        }
        UsersCmd::RevokeSessions { user_id } => {
            admin::revoke_sessions(&store, &ring()?, &Actor::cli(), &user_id).map_err(phrase)?;
            Ok((
                serde_json::json!({"id": user_id, "sessions_revoked": true}),
                format!("revoked every session of user {user_id}"),
            ))
        }
    }
}
