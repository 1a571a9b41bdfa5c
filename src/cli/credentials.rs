//! `sluice credentials` and `sluice secrets rotate`: upstream credentials, read from standard input or a file, never argv.

use super::*;
use crate::admin::connect;

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
            let view = admin::set_credential(
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
                    format!("no token from {} ({e}; code {}): nothing was stored. Check --token-url, --client-id and the secret, or pass --no-verify to store it anyway", crate::error::shown_url(&settings.token_url), e.code())
                })?)
            };
            let view = admin::set_oauth_credential(
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
            let revoked = store
                .credentials()
                .map_err(phrase)?
                .into_iter()
                .find(|c| c.name == name)
                .map_or(connect::Revoked::None, |c| {
                    connect::revoke(&ring, &cfg.tls, &c)
                });
            if revoked == connect::Revoked::Failed {
                eprintln!("sluice: warning: the credential's tokens could not be revoked at its authorization server (see the log line above); deleting it here anyway. Revoke the access on the provider's side.");
            }
            admin::delete_credential(&store, &ring, &Actor::cli(), &name, revoked.as_str())
                .map_err(phrase)?;
            Ok((
                serde_json::json!({"name": name, "deleted": true, "tokens": revoked.as_str()}),
                format!(
                    "deleted credential {name}{}",
                    match revoked {
                        connect::Revoked::Revoked => " (its tokens were revoked at the server)",
                        _ => "",
                    }
                ),
            ))
        }
        CredentialsCmd::Connect {
            name,
            mcp_server,
            resource,
            issuer,
            client_id,
            client_secret_file,
            scope,
            redirect_uri,
            paste,
            timeout,
        } => {
            let (resource, resource_tls) = match mcp_server {
                Some(server) => {
                    let m = cfg
                        .mcp_servers
                        .iter()
                        .find(|m| m.name == server)
                        .ok_or_else(|| {
                            format!("--mcp-server {server:?} is not an MCP server of the config ([[mcp_servers]] name)")
                        })?;
                    (Some(m.endpoint_url()), m.tls.clone())
                }
                None => (resource, None),
            };
            let client_secret = client_secret_file
                .map(|f| read_secret_file(&f))
                .transpose()?;
            let ring = keyring()?;
            let store = open_store(cfg)?;
            check_key(&store, &ring)?;
            let redirect_uri =
                redirect_uri.unwrap_or_else(|| connect::default_redirect_uri(cfg.listen.admin));
            let spec = connect::Spec {
                name: name.clone(),
                resource,
                issuer,
                client_id,
                client_secret,
                scope,
                redirect_uri,
                resource_tls,
            };
            let actor = Actor::cli();
            let prepared = connect::prepare(spec, &cfg.tls)
                .inspect_err(|e| connect::record_start_failure(&store, &ring, &actor, &name, e))
                .map_err(phrase)?;
            let started = connect::start(&store, &ring, &actor, prepared).map_err(phrase)?;
            eprintln!(
                "sluice: open this URL in a browser and approve the access (the connect expires at {}):\n\n    {}\n",
                started.expires_at, started.authorization_url
            );
            let done = if paste {
                eprintln!("sluice: then paste here the URL the browser was sent to ({}?code=...), and press Enter:", started.redirect_uri);
                let mut line = Zeroizing::new(String::new());
                std::io::BufRead::read_line(
                    &mut std::io::BufReader::new(std::io::stdin().lock().take(16 * 1024)),
                    &mut line,
                )
                .map_err(|e| format!("cannot read standard input: {e}"))?;
                let query =
                    connect::pasted_query(&line, Some(&started.redirect_uri)).map_err(phrase)?;
                let mut done = connect::complete(
                    || &store,
                    &ring,
                    &cfg.tls,
                    connect::Completer::Operator {
                        actor: &actor,
                        credential: &name,
                    },
                    &actor,
                    &query,
                )
                .map_err(phrase)?;
                if done.replaces() {
                    // A running `serve` picks the new tokens up first.
                    std::thread::sleep(connect::REVOKE_GRACE);
                }
                if done.revoke_replaced(&ring, &cfg.tls) == connect::Revoked::Failed {
                    eprintln!("sluice: warning: the replaced credential's tokens could not be revoked at the server");
                }
                done.credential
            } else {
                eprintln!(
                    "sluice: waiting up to {timeout} s for the browser to come back to {} (a running `sluice serve` answers there; without one, run again with --paste)",
                    started.redirect_uri
                );
                wait_for_connect(&store, &started.flow_id, timeout)?;
                admin::list_credentials(&store, Some(&ring.fingerprint()))
                    .map_err(phrase)?
                    .into_iter()
                    .find(|c| c.name == name)
                    .ok_or("the connect completed but the credential is gone")?
            };
            warn_unused_credential(cfg, &name);
            let text = format!(
                "connected OAuth credential {} to {}; {}",
                done.name,
                started.issuer,
                match &done.token_expires_at {
                    Some(t) => format!("token valid until {t}, refreshed by `sluice serve`"),
                    None => "no token yet".into(),
                }
            );
            Ok((to_json(&done), text))
        }
    }
}

/// Wait for connect `flow_id` to end (its callback reached the running `serve`).
fn wait_for_connect(store: &Store, flow_id: &str, timeout: u64) -> Result<(), Failure> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
    loop {
        match connect::flow_outcome(store, flow_id).map_err(phrase)? {
            Some(o) if o == "connected" => return Ok(()),
            Some(o) => {
                let why = match o.as_str() {
                    "oauth_authorization_denied" => {
                        "the authorization server refused (the access was declined)"
                    }
                    "oauth_iss_mismatch" => {
                        "the callback came from another authorization server (RFC 9207 iss)"
                    }
                    "oauth_exchange_failed" => "the token endpoint gave no token for the code",
                    "state_expired" => "it expired before the browser came back",
                    "cancelled" => "the master key was rotated meanwhile",
                    _ => "the callback was refused",
                };
                return Err(format!("the connect failed: {why} (code {o}); nothing was stored. The sluice serve log has the detail").into());
            }
            None => {}
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("no callback within {timeout} s: nothing was stored. Is `sluice serve` running with its admin listener at the redirect URI? Otherwise run again with --paste").into());
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
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
    if let Some(con) = &c.connected {
        s.push_str(&format!("  connected_to={}", con.issuer));
    }
    match c.last_error.as_deref() {
        Some(oauth::NEEDS_RECONNECT) => s.push_str(&format!(
            "  NEEDS RECONNECT (needs_reconnect: the server refused the refresh token; run `sluice credentials connect {}`)",
            c.name
        )),
        Some(e) => s.push_str(&format!(
            "  REFRESH FAILING ({e}, {} failures)",
            c.refresh_failures.unwrap_or(0)
        )),
        None => {}
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
    let r = admin::rotate(&store, &ring, &Actor::cli()).map_err(phrase)?;
    let text = format!(
        "re-encrypted {} credential(s), {} org audit key(s) and {} TOTP seed(s) under master key {}",
        r.rotated, r.org_keys_rotated, r.totp_rotated, r.key_fingerprint
    );
    Ok((to_json(&r), text))
}
