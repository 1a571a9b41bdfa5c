//! The MCP gateway's domain logic: which tools, resources and prompts a key may use on which
//! server ([`Policy`]), what a JSON-RPC request asks for (and the refusal of what it may not
//! have), and what comes back (validated, lists filtered to what is allowed, results redacted).
//! Plain Rust: no pingora, no network.

mod policy;
mod rpc;
mod session;

pub use policy::{check_uri, AllowList, ListError, Policy, UriError};
pub use rpc::{
    inspect, unreachable_answer, Call, Inspection, Invalid, Refusal, Responses, NOTIFICATIONS,
    REQUESTS,
};
pub use session::Sessions;

/// The JSON-RPC error code of a refused tool, resource or prompt.
pub const NOT_ALLOWED: i64 = -32001;
/// The JSON-RPC error code of an MCP server answer sluice could not validate or scan.
pub const BAD_UPSTREAM: i64 = -32002;

/// A bounded label for an MCP method (metrics): the methods sluice forwards, else `other`.
pub fn method_label(method: &str) -> &'static str {
    REQUESTS
        .iter()
        .chain(NOTIFICATIONS)
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}
