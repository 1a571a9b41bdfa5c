//! The files `serve --dev` keeps its generated master key and JWT secret in.

use super::*;

/// `serve --dev`: the master key from the environment if set, else from (or into) a 0600 file
/// beside the database.
pub(super) fn dev_keyring(cfg: &Config) -> Result<Keyring, String> {
    if std::env::var_os(vault::KEY_ENV).is_some() {
        return keyring();
    }
    let dir = cfg
        .store
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(DEV_KEY_FILE);
    let b64 = dev_secret_file(&path)?;
    let warning = format!(
        "DEV MODE: the master key is stored in plain text in {} next to the database; anyone who can read both can decrypt every credential. Never use --dev in production: pass SLUICE_SECRETS_KEY from a secret store instead.",
        path.display()
    );
    eprintln!("sluice: WARNING: {warning}");
    tracing::warn!("{warning}");
    Keyring::new(&b64, &[]).map_err(|e| format!("{}: {e}", path.display()))
}

/// A `--dev` secret kept in a 0600 file: read it, or create it with a fresh random 32-byte
/// value (base64) when it does not exist.
pub(super) fn dev_secret_file(path: &Path) -> Result<Zeroizing<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            Ok(Zeroizing::new(s))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keyring::generate();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            f.write_all(key.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// `serve --dev`: the JWT secret from the environment if set, else from (or into) a 0600 file
/// beside the database.
pub(super) fn dev_jwt(cfg: &Config) -> Result<Option<admin::session::Sessions>, String> {
    use admin::session::{Sessions, JWT_ENV};
    if std::env::var_os(JWT_ENV).is_some() {
        return Sessions::from_env(cfg.admin.session_ttl).map_err(phrase);
    }
    let dir = cfg
        .store
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let path = dir.join(DEV_JWT_FILE);
    let secret = dev_secret_file(&path)?;
    Sessions::new(secret.trim().as_bytes(), cfg.admin.session_ttl)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}
