//! Integration tests: the real `sluice` binary on free ports in front of a recording mock
//! upstream. One test binary, one harness (`support`), one module per feature.

mod support;

mod admin;
mod admin_api;
mod admin_delete;
mod audit;
mod auth;
mod budgets;
mod config;
mod console;
mod deploy;
mod fleet;
mod forms;
mod hostile;
mod lifecycle;
mod limits;
mod mcp;
mod mcp_hostile;
mod oauth_connect;
mod pii;
mod proxy;
mod readme;
mod reload;
mod residency;
mod responses;
mod sdk;
mod tls;
mod usage;
mod vault;
