//! `sluice serve`: logging, the proxy, and `--dev`'s first-run setup.

use super::*;

pub(super) fn serve(config: Option<PathBuf>, dev: bool) -> i32 {
    crate::proxy::catch_early_hangups();
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
    // Another store's key would seal new secrets the right key cannot open, and open none of
    // the store's: refused before anything is written or served.
    match open_store(&cfg)
        .map_err(Failure::from)
        .and_then(|s| check_key(&s, &ring))
    {
        Ok(()) => {}
        Err(Failure { message, code }) => {
            tracing::error!(code, "cannot start: {message}");
            eprintln!("sluice: {message}");
            return code;
        }
    }
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
    // Reloads read the same file: made absolute, symlinks kept (a Kubernetes ConfigMap update
    // swaps the link, not the file).
    let path = config.map(|p| std::path::absolute(&p).unwrap_or(p));
    match crate::server::serve(cfg, path, ring, sessions) {
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
    let setup = admin::dev_bootstrap(
        &store,
        ring,
        &Actor::cli(),
        &names,
        openai.as_ref().map(|s| s.as_str()),
        pii_default(cfg),
    )
    .map_err(phrase)?;
    if let Some((org, key)) = &setup.created {
        // A closed stdout (the reader took the key and left) must not stop the server:
        // `println!` would panic on it.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "sluice dev mode: created org {:?} ({}) and an API key (shown only this once):\n\n    {}\n\nexport OPENAI_BASE_URL=http://{}/v1 OPENAI_API_KEY=<the key above>",
            org.name,
            org.id,
            key.key.as_str(),
            cfg.listen.proxy
        );
        let _ = out.flush();
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

/// Logs go to stderr. pingora's own records are capped at `warn` unless the level names them
/// (its debug output can contain raw request bytes), and even then never printed as written:
/// its messages quote what it failed to parse (a response head with its `Set-Cookie`, a request
/// head with its `Authorization`). Each is replaced by a record that names only its level,
/// origin and place in pingora's code; what happened to the request is in sluice's own line.
pub(super) fn init_logging(cfg: &Config) {
    // A panic's message can quote a value (an unwrap on an error, a slice out of range): it is
    // logged with the thread and the place in the code only, never the message. Background
    // tasks are restarted after one (see `supervise`).
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            location,
            "panic (its message is withheld: it may quote a value)"
        );
    }));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let directives = crate::log_filter::directives(&cfg.log.level);
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let most = filter.max_level_hint();
    // A reload changes the level (`crate::log_filter::set`).
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    crate::log_filter::install(Box::new(move |level| {
        let f =
            EnvFilter::try_new(crate::log_filter::directives(level)).map_err(|e| e.to_string())?;
        let most = f.max_level_hint();
        handle.reload(f).map_err(|e| e.to_string())?;
        // Records of crates that log through `log` are cut at its own maximum, set from the
        // filter at start: follow the new one.
        crate::log_filter::follow_in_log(most);
        Ok(())
    }));
    let printed = tracing_subscriber::filter::filter_fn(|m| !is_pingora(m.target()));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let fmt = match cfg.log.format {
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(printed).boxed(),
        LogFormat::Text => fmt.with_filter(printed).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(Withheld)
        .try_init();
    // `try_init` bounds the `log` crate at the subscriber's level, which the layers without a
    // filter of their own (`Withheld`) leave at TRACE: every debug record of pingora's (about
    // 25 a request) would then be built and offered to the filter only to be dropped. The
    // filter decides what is shown, so its level bounds `log`.
    crate::log_filter::follow_in_log(most);
}

/// Whether a record comes from pingora (its crates, through the `log` bridge or `tracing`).
fn is_pingora(target: &str) -> bool {
    target.starts_with("pingora")
}

/// Replaces each pingora record by one that quotes nothing of it (see [`init_logging`]).
struct Withheld;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Withheld {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let m = event.metadata();
        if !is_pingora(m.target()) {
            return;
        }
        // Records bridged from `log` carry their origin in fields; `tracing`'s metadata names
        // the bridge. Only static facts are kept: the module path and line are pingora's code.
        let mut origin = OriginVisitor::default();
        event.record(&mut origin);
        let module = origin.module.as_deref().unwrap_or(m.target());
        let line = origin.line.or(m.line()).unwrap_or(0);
        let level = m.level().as_str();
        if *m.level() <= tracing::Level::WARN {
            tracing::warn!(target: "sluice::pingora", pingora_level = level, pingora_module = module, pingora_line = line,
                "a pingora record was withheld: it may quote raw protocol bytes; the request's own log line has what happened");
        } else {
            tracing::debug!(target: "sluice::pingora", pingora_level = level, pingora_module = module, pingora_line = line,
                "a pingora record was withheld");
        }
    }
}

/// The origin fields the `log` bridge records (`log.module_path`, `log.line`), nothing else.
#[derive(Default)]
struct OriginVisitor {
    module: Option<String>,
    line: Option<u32>,
}

impl tracing::field::Visit for OriginVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        // A module path is an identifier path: anything else is not kept.
        if field.name() == "log.module_path"
            && value.len() <= 128
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        {
            self.module = Some(value.to_string());
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "log.line" {
            self.line = u32::try_from(value).ok();
        }
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}
