//! `sluice credentials` and `sluice secrets rotate`: upstream credentials, read from standard input or a file, never argv.

use super::*;

pub(super) fn credentials(cfg: &Config, c: CredentialsCmd) -> Outcome {
    match c {
        CredentialsCmd::Set {
            name,
            expires,
            mut input,
        } => {
            input.refuse_argv()?;
            let ring = keyring()?;
            let secret = input.read()?;
            let store = open_store(cfg)?;
            check_key(&store, &ring)?;
            let view = admin::set_credential_as(
                &store,
                &ring,
                &Actor::cli(),
                &name,
                &secret,
                expires.as_deref(),
                None,
            )
            .map_err(phrase)?;
            warn_unused_credential(cfg, &name);
            let text = format!(
                "stored credential {} (sealed with master key {})",
                view.name, view.key_fingerprint
            );
            Ok((to_json(&view), text))
        }
        CredentialsCmd::SetOauth {
            name,
            token_url,
            client_id,
            scope,
            resource,
            grant,
            pins,
            no_verify,
            mut input,
        } => {
            input.refuse_argv()?;

            let settings = oauth::Settings {
                token_url,
                client_id,
                scope,
                resource,
                grant: match grant {
                    GrantArg::ClientCredentials => oauth::Grant::ClientCredentials,
                    GrantArg::RefreshToken => oauth::Grant::RefreshToken,
                },
                pins,
            };
            admin::check_oauth(&settings).map_err(phrase)?;
            let ring = keyring()?;
            let mut secret = input.read()?;
            let store = open_store(cfg)?;
            check_key(&store, &ring)?;
            let first = if no_verify {
                None
            } else {
                Some(oauth::first_token(&settings, &mut secret, &cfg.tls).map_err(|e| {
                    format!("no token from {} ({e}; code {}): nothing was stored. Check --token-url, --client-id and the secret, or pass --no-verify to store it anyway", settings.token_url, e.code())
                })?)
            };
            let view = admin::set_oauth_credential_as(
                &store,
                &ring,
                &Actor::cli(),
                &name,
                &settings,
                &secret,
                first.as_ref(),
            )
            .map_err(phrase)?;
            warn_unused_credential(cfg, &name);
            let text = format!(
                "stored OAuth credential {} (sealed with master key {}); {}",
                view.name,
                view.key_fingerprint,
                match &view.token_expires_at {
                    Some(t) => format!("first token obtained, valid until {t}"),
                    None => "no token obtained yet: `sluice serve` obtains it".into(),
                }
            );
            Ok((to_json(&view), text))
        }
        CredentialsCmd::List => {
            let store = open_store(cfg)?;
            let ring = keyring().ok();
            let fp = ring.as_ref().map(Keyring::fingerprint);
            let list = admin::list_credentials(&store, fp.as_deref()).map_err(phrase)?;
            let text = list
                .iter()
                .map(|c| {
                    format!(
                        "{}  master_key={}{}  created={}  rotated={}  age_days={}  expires={}{}",
                        c.name,
                        c.key_fingerprint,
                        match (c.current_key, &ring) {
                            (Some(true), _) => " (current)",
                            // An old key given in SLUICE_SECRETS_KEY_OLD: rotation moves it.
                            (Some(false), Some(r)) if r.knows(&c.key_fingerprint) => {
                                " (old: run `sluice secrets rotate`)"
                            }
                            (Some(false), _) => {
                                " (neither SLUICE_SECRETS_KEY nor a key in SLUICE_SECRETS_KEY_OLD: is this the store's master key?)"
                            }
                            (None, _) => "",
                        },
                        c.created_at,
                        c.rotated_at,
                        c.age_days,
                        or_none(&c.expires_at),
                        if c.expired { "  EXPIRED" } else { "" }
                    ) + &oauth_state(c)
                })
                .collect::<Vec<_>>()
                .join("\n");
            Ok((serde_json::json!({ "credentials": list }), text))
        }
        CredentialsCmd::Delete { name } => {
            let store = open_store(cfg)?;
            let ring = keyring_for(&store)?;
            admin::delete_credential_as(&store, &ring, &Actor::cli(), &name).map_err(phrase)?;
            Ok((
                serde_json::json!({"name": name, "deleted": true}),
                format!("deleted credential {name}"),
            ))
        }
    }
}

/// The OAuth part of a `credentials list` line (empty for a static credential).
pub(super) fn oauth_state(c: &admin::CredentialView) -> String {
    let Some(o) = &c.oauth else {
        return String::new();
    };
    let mut s = format!(
        "  kind=oauth grant={} token_url={} token_expires={}",
        match o.grant {
            oauth::Grant::ClientCredentials => "client_credentials",
            oauth::Grant::RefreshToken => "refresh_token",
        },
        o.token_url,
        or_none(&c.token_expires_at)
    );
    if let Some(e) = &c.last_error {
        s.push_str(&format!(
            "  REFRESH FAILING ({e}, {} failures)",
            c.refresh_failures.unwrap_or(0)
        ));
    }
    s
}

/// Refuse extra arguments after a credential's name: they are likely a secret.
pub(super) fn refuse_argv_secret(rest: Vec<String>) -> Result<(), String> {
    if rest.is_empty() {
        return Ok(());
    }
    // Drop (and wipe) whatever was typed without looking at it.
    let rest: Vec<Zeroizing<String>> = rest.into_iter().map(Zeroizing::new).collect();
    drop(rest);
    Err("refusing extra command-line arguments: a secret on the command line is visible in `ps` and shell history. Pipe it on standard input: `printf %s \"$KEY\" | sluice credentials set NAME`".into())
}

/// Warn when neither an upstream nor an MCP server of the config uses credential `name`.
pub(super) fn warn_unused_credential(cfg: &Config, name: &str) {
    let used = cfg
        .upstreams
        .iter()
        .any(|u| u.credential.as_deref() == Some(name))
        || cfg
            .mcp_servers
            .iter()
            .any(|m| m.credential.as_deref() == Some(name));
    if !used {
        eprintln!(
            "sluice: warning: no upstream or MCP server in the config uses credential {name:?}"
        );
    }
}

/// Read a secret from a file (a mounted Kubernetes Secret, say), bounded; one trailing newline
/// stripped.
pub(super) fn read_secret_file(file: &Path) -> Result<Zeroizing<String>, String> {
    let mut raw = Zeroizing::new(Vec::new());
    std::fs::File::open(file)
        .and_then(|f| {
            f.take(admin::MAX_SECRET_BYTES as u64 + 3)
                .read_to_end(&mut raw)
        })
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    admin::secret_from_input(raw).map_err(|e| format!("{}: {e}", file.display()))
}

/// Read the secret from standard input, bounded.
pub(super) fn read_secret() -> Result<Zeroizing<String>, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("sluice: reading the secret from standard input; end with Ctrl-D");
    }
    let mut raw = Zeroizing::new(Vec::with_capacity(256));
    stdin
        .lock()
        .take(admin::MAX_SECRET_BYTES as u64 + 3)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    admin::secret_from_input(raw).map_err(phrase)
}

pub(super) fn rotate(cfg: &Config) -> Outcome {
    let ring = keyring()?;
    let store = open_store(cfg)?;
    check_key(&store, &ring)?;
    let r = admin::rotate_as(&store, &ring, &Actor::cli()).map_err(phrase)?;
    let text = format!(
        "re-encrypted {} credential(s), {} org audit key(s) and {} TOTP seed(s) under master key {}",
        r.rotated, r.org_keys_rotated, r.totp_rotated, r.key_fingerprint
    );
    Ok((to_json(&r), text))
}
