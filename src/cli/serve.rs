//! `sluice serve`: logging, the proxy, and `--dev`'s first-run setup.

use super::*;

pub(super) fn serve(config: Option<PathBuf>, dev: bool) -> i32 {
    let cfg = match load(config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&cfg);
    match &config {
        Some(p) => tracing::info!(config = %p.display(), "config loaded"),
        None => tracing::info!("config: compiled-in default (conf/sluice.toml)"),
    }
    if !cfg.listen.proxy.ip().is_loopback() {
        tracing::warn!(addr = %cfg.listen.proxy, "data plane listens on a non-loopback address");
    }
    let ring = match if dev { dev_keyring(&cfg) } else { keyring() } {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: {e}");
            return EXIT_FAILED;
        }
    };
    if dev {
        if let Err(e) = dev_setup(&cfg, &ring) {
            eprintln!("sluice: {e}");
            return EXIT_FAILED;
        }
    }
    let sessions = match if dev {
        dev_jwt(&cfg)
    } else {
        admin::session::Sessions::from_env(cfg.admin.session_ttl).map_err(phrase)
    } {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: {e}");
            return EXIT_FAILED;
        }
    };
    match crate::proxy::serve(cfg, ring, sessions) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("sluice: {e}");
            EXIT_FAILED
        }
    }
}

pub(super) fn dev_setup(cfg: &Config, ring: &Keyring) -> Result<(), String> {
    let store = open_store(cfg)?;
    let mut names: Vec<String> = cfg
        .upstreams
        .iter()
        .filter_map(|u| u.credential.clone())
        .collect();
    names.sort();
    names.dedup();
    let openai = std::env::var("OPENAI_API_KEY").ok().map(Zeroizing::new);
    let setup = admin::dev_bootstrap_as(
        &store,
        ring,
        &Actor::cli(),
        &names,
        openai.as_ref().map(|s| s.as_str()),
        pii_default(cfg),
    )
    .map_err(phrase)?;
    if let Some((org, key)) = &setup.created {
        println!(
            "sluice dev mode: created org {:?} ({}) and an API key (shown only this once):\n\n    {}\n\nexport OPENAI_BASE_URL=http://{}/v1 OPENAI_API_KEY=<the key above>",
            org.name,
            org.id,
            key.key.as_str(),
            cfg.listen.proxy
        );
        let _ = std::io::stdout().flush();
    }
    for name in &setup.credentials_set {
        tracing::info!(credential = %name, "dev mode: stored OPENAI_API_KEY as upstream credential");
    }
    if openai.is_none() {
        for name in &names {
            if !store
                .credentials()
                .map_err(phrase)?
                .iter()
                .any(|c| &c.name == name)
            {
                tracing::warn!(credential = %name, "dev mode: OPENAI_API_KEY is not set and the credential is missing; requests to its upstream get 503 credential_unavailable");
            }
        }
    }
    Ok(())
}

/// Logs go to stderr. pingora's own records are capped at `warn` unless the level names them:
/// its debug output can contain raw request bytes.
pub(super) fn init_logging(cfg: &Config) {
    let mut directives = cfg.log.level.clone();
    if !directives.contains("pingora") {
        directives.push_str(",pingora_core=warn,pingora_proxy=warn");
    }
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}
