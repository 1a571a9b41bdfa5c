//! The log filter (`[log] level`), changeable while serving: a config reload sets it.

use std::sync::OnceLock;

type Setter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static SETTER: OnceLock<Setter> = OnceLock::new();

/// The filter directives for `[log] level`: pingora's crates are capped at `warn` unless the
/// level names them (their debug output can hold raw request bytes).
pub fn directives(level: &str) -> String {
    let mut d = level.to_string();
    if !d.contains("pingora") {
        d.push_str(",pingora_core=warn,pingora_proxy=warn");
    }
    d
}

/// Set the `log` crate's maximum level to the filter's (`None`: no bound).
pub fn follow_in_log(most: Option<tracing::level_filters::LevelFilter>) {
    use tracing::level_filters::LevelFilter as L;
    log::set_max_level(match most {
        Some(L::OFF) => log::LevelFilter::Off,
        Some(L::ERROR) => log::LevelFilter::Error,
        Some(L::WARN) => log::LevelFilter::Warn,
        Some(L::INFO) => log::LevelFilter::Info,
        Some(L::DEBUG) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    });
}

/// Register how the running process's filter is changed (once, by the logging setup).
pub fn install(set: Setter) {
    let _ = SETTER.set(set);
}

/// Change the running process's log level (nothing to do when logging was not set up).
pub fn set(level: &str) -> Result<(), String> {
    match SETTER.get() {
        Some(f) => f(level),
        None => Ok(()),
    }
}
