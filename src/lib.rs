//! sluice: a security sidecar for LLM traffic, on Pingora.
//!
//! The binary is a thin shell over [`cli::run`]. Domain modules (`inbound`, `residency`,
//! `config`, `metrics`) are plain Rust; `proxy` is the only module that knows pingora.

/// A `memchr::memmem::Finder` (or, as `finder!(rev ...)`, a `FinderRev`) for a fixed needle,
/// built once: building one costs more than searching a short haystack with it, and the
/// request path searches every request's body and answer (issue 41).
macro_rules! finder {
    (rev $needle:expr) => {{
        static F: std::sync::LazyLock<memchr::memmem::FinderRev<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::FinderRev::new($needle));
        &*F
    }};
    ($needle:expr) => {{
        static F: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new($needle));
        &*F
    }};
}

pub mod admin;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod inbound;
pub mod json;
pub mod limits;
pub mod log_filter;
pub mod mcp;
pub mod metrics;
pub mod overview;
pub mod policy;
pub mod proxy;
pub mod redact;
pub mod residency;
pub mod server;
pub mod sse;
pub mod store;
pub mod supervise;
pub mod usage;
pub mod vault;
