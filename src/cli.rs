//! The command line. One function per subcommand; each parses its arguments and calls library
//! functions. Exit codes: 0 success, 1 runtime failure, 64 (EX_USAGE) invalid configuration.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LoadError, LogFormat};

/// Exit code for an invalid configuration (sysexits EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "A security sidecar for LLM traffic")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy (data plane, admin and metrics listeners).
    Serve {
        /// Config file; without it (and without SLUICE_CONFIG) the compiled-in default is used.
        #[arg(long, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a config file and exit: 0 when valid, 64 with every problem listed otherwise.
    CheckConfig {
        #[arg(long, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Run the command line and return the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { config } => check_config(config),
    }
}

fn load(path: Option<PathBuf>) -> Result<Config, i32> {
    Config::load(path.as_deref()).map_err(|e| {
        eprintln!("sluice: {e}");
        match e {
            LoadError::Read { .. } => 1,
            LoadError::Invalid { .. } => EXIT_CONFIG,
        }
    })
}

fn serve(config: Option<PathBuf>) -> i32 {
    let cfg = match load(config.clone()) {
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
    match crate::proxy::serve(cfg) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("sluice: {e}");
            1
        }
    }
}

fn check_config(config: Option<PathBuf>) -> i32 {
    match load(config) {
        Ok(_) => {
            println!("config ok");
            0
        }
        Err(code) => code,
    }
}

/// Logs go to stderr. pingora's own records are capped at `warn` unless the level names them:
/// its debug output can contain raw request bytes.
fn init_logging(cfg: &Config) {
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
