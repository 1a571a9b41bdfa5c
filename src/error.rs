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

/// A URL as an error may show it: its scheme, host and path, [`shown`] (bounded and escaped)
/// and quoted, with `…` for a query or fragment (either can hold a token). A password can hold `/`, `?` or `#`, so a
/// value with an `@` anywhere shows no more than its scheme; one that does not start with a
/// known scheme (http, https, ws, wss, redis, rediss, ftp, file) is `the value` (a secret
/// pasted in the wrong place, a scheme mistyped). For the operator's URLs (config, CLI) and
/// the ones a server sends.
pub fn shown_url(s: &str) -> String {
    let Some((scheme, rest)) = s.trim().split_once("://") else {
        return "the value".into();
    };
    // A word before `://` is shown only when it is a scheme sluice could be given.
    let known = [
        "http", "https", "ws", "wss", "redis", "rediss", "ftp", "file",
    ];
    if !known.iter().any(|k| k.eq_ignore_ascii_case(scheme)) {
        return "the value".into();
    }
    if rest.contains('@') {
        return format!("\"{scheme}://…\" (credentials not shown)");
    }
    let before = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let more = if before.len() < rest.len() { "…" } else { "" };
    format!("\"{}{more}\"", shown(&format!("{scheme}://{before}")))
}

/// A value from outside as an error may show it (not a secret: see [`shown_url`] for URLs):
/// bounded to 200 characters, `...` when cut, and escaped so control characters reach no
/// terminal or log.
pub fn shown(v: &str) -> String {
    let cut: String = v.chars().take(200).collect();
    let mut out: String = cut.escape_debug().collect();
    if cut.len() < v.len() {
        out.push_str("...");
    }
    out
}

/// The line of byte `offset` in `text` (1 for the first), for a parser's error span.
pub fn line_of(text: &str, offset: usize) -> Option<usize> {
    text.get(..offset)
        .map(|before| before.matches('\n').count() + 1)
}

/// Where a deserializer's error is, as `a.b[0].c` (empty: at the top). For an unknown field
/// (`unknown`), the table it is in: the last segment is the unknown name itself, which is the
/// caller's text and is never shown.
pub fn place(path: &serde_path_to_error::Path, unknown: bool) -> String {
    let segments: Vec<_> = path.iter().collect();
    let shown = match unknown {
        true => &segments[..segments.len().saturating_sub(1)],
        false => &segments[..],
    };
    let mut out = String::new();
    for s in shown {
        if !out.is_empty() && !matches!(s, serde_path_to_error::Segment::Seq { .. }) {
            out.push('.');
        }
        out.push_str(&s.to_string());
    }
    out
}

/// What a deserializer's message (serde's words, TOML's) says is wrong, in words that quote
/// nothing of the input: the messages quote the value they refused (`invalid type: string
/// "sk-proj-...", expected u64`) or an unknown member's name, and a file can hold a secret
/// typed into the wrong field. Kept: what was expected, and the names of missing fields and of
/// known ones (the format's own words). `None`: a message of another form (a syntax error).
pub fn described(message: &str) -> Option<String> {
    // The expectation comes last, after the value: the last ", expected " is the parser's.
    let expected = |rest: &str| {
        rest.rfind(", expected ")
            .map(|i| format!(" (expected {})", &rest[i + ", expected ".len()..]))
            .unwrap_or_default()
    };
    let m = message.trim();
    Some(if let Some(rest) = m.strip_prefix("invalid type: ") {
        format!("a value has the wrong type{}", expected(rest))
    } else if let Some(rest) = m.strip_prefix("invalid value: ") {
        format!("a value is not accepted{}", expected(rest))
    } else if let Some(rest) = m.strip_prefix("invalid length ") {
        format!("a list has the wrong length{}", expected(rest))
    } else if let Some(rest) = m.strip_prefix("unknown variant ") {
        format!("a value is not one of those accepted{}", expected(rest))
    } else if let Some(rest) = m.strip_prefix("unknown field ") {
        let known = rest
            .rfind(", expected ")
            .map(|i| format!(" (known fields: {})", &rest[i + ", expected ".len()..]))
            .unwrap_or_default();
        format!("an unknown field{known}")
    } else if let Some(field) = m
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
        .filter(|f| f.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    {
        format!("missing field `{field}`")
    } else if m.starts_with("duplicate key") {
        "a key is given twice".into()
    } else {
        return None;
    })
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
        assert_eq!(shown_url("https://h:1"), "\"https://h:1\"");
        assert_eq!(shown_url("https://h/a?q#f"), "\"https://h/a…\"");
        assert_eq!(shown_url("sk-live-CANARY"), "the value");
        assert_eq!(shown_url("u:CANARY@h"), "the value");
        assert_eq!(shown_url("https://h\u{1b}[2J"), "\"https://h\\u{1b}[2J\"");
        let long = format!("https://{}", "a".repeat(300));
        assert!(shown_url(&long).ends_with("...\""));
        assert!(shown_url(&long).chars().count() < 215);
        // Whatever a password, path, query or fragment holds, and whatever precedes `://`.
        for v in [
            "http://u:CANARY@h:1/a/b?key=CANARY#CANARY",
            "https://user:CAN/ARY@api.example.com",
            "https://user:CAN?ARY@h",
            "https://user:CAN#ARY@h",
            "https://h/?token=x@CANARY",
            "sk-live-CANARY https://api.openai.com",
            "https:/u:CANARY@h/?r=x://y",
            "CANARY://h",
        ] {
            let shown = shown_url(v);
            assert!(!shown.contains("CAN"), "{v}: {shown}");
        }
    }
}
