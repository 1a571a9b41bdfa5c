//! The one error vocabulary of every listener (data plane, admin API, health and metrics): the
//! OpenAI-shaped JSON body and the OpenAI error `type` of a status. Each caller keeps its own
//! table of stable codes; the shape and the `type` are decided here only.

use serde_json::{json, Value};

/// The OpenAI error `type` of a reply: what the OpenAI API itself sends for that status
/// (`invalid_api_key` is an `invalid_request_error` there, other 401s are
/// `authentication_error`).
pub fn openai_type(status: u16, code: &str) -> &'static str {
    match status {
        401 if code == "invalid_api_key" => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

/// `{"error": {"message", "type", "param": null, "code", "request_id"}}`.
pub fn body(status: u16, code: &str, message: &str, request_id: &str) -> Value {
    json!({"error": {
        "message": message,
        "type": openai_type(status, code),
        "param": null,
        "code": code,
        "request_id": request_id,
    }})
}

/// [`body`] as bytes.
pub fn body_bytes(status: u16, code: &str, message: &str, request_id: &str) -> Vec<u8> {
    serde_json::to_vec(&body(status, code, message, request_id)).unwrap_or_default()
}

/// A URL as an error may show it: without credentials (`user:password@`), query or fragment
/// (each can hold a secret), bounded to 200 characters and escaped (no control character
/// reaches a terminal or a log), quoted; `the value` when it is not `scheme://...` at all (a
/// secret pasted in the wrong place). For the operator's URLs (config, CLI) and the ones an
/// authorization server sends.
pub fn shown_url(s: &str) -> String {
    let Some((scheme, rest)) = s.trim().split_once("://") else {
        return "the value".into();
    };
    let (before, after) = rest.split_at(rest.find(['?', '#']).unwrap_or(rest.len()));
    let (authority, path) = before.split_at(before.find('/').unwrap_or(before.len()));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let note = if !after.is_empty() || host.len() < authority.len() {
        " (credentials, query and fragment not shown)"
    } else {
        ""
    };
    let url = format!("{scheme}://{host}{path}");
    let cut: String = url.chars().take(200).collect();
    let more = if cut.len() < url.len() { "..." } else { "" };
    format!("\"{}{more}\"{note}", cut.escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_the_openai_api() {
        assert_eq!(openai_type(401, "invalid_api_key"), "invalid_request_error");
        assert_eq!(openai_type(401, "invalid_token"), "authentication_error");
        assert_eq!(openai_type(403, "permission_denied"), "permission_error");
        assert_eq!(openai_type(429, "rate_limited"), "rate_limit_error");
        assert_eq!(openai_type(503, "store_unavailable"), "server_error");
        assert_eq!(
            openai_type(413, "request_too_large"),
            "invalid_request_error"
        );
        let v = body(404, "not_found", "No such route.", "r1");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["request_id"], "r1");
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn a_url_is_shown_without_what_could_be_a_secret() {
        assert_eq!(
            shown_url("http://u:CANARY@h:1/a/b?key=CANARY#CANARY"),
            "\"http://h:1/a/b\" (credentials, query and fragment not shown)"
        );
        assert_eq!(shown_url("https://h/a"), "\"https://h/a\"");
        assert_eq!(shown_url("sk-live-CANARY"), "the value");
        assert_eq!(shown_url("u:CANARY@h"), "the value");
        assert_eq!(shown_url("https://h/\u{1b}[2J"), "\"https://h/\\u{1b}[2J\"");
        let long = format!("https://h/{}", "a".repeat(300));
        assert!(shown_url(&long).ends_with("...\""));
        assert!(shown_url(&long).chars().count() < 210);
    }
}
