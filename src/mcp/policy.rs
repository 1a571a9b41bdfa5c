//! Allow-lists: `server:name` entries, comma-separated, where the server may be `*` and the
//! name `*` or end with `*` for a prefix (`github:create_issue,search:*,docs:file:///srv/*`). An empty list allows nothing: a key reaches no tool until
//! one is granted (to it, or to its org as the default).

use std::fmt;

/// One entry: a server (or `*`) and a name (or `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    server: String,
    name: String,
}

/// An allow-list of tools, resources or prompts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Entry>);

/// Why a list does not parse. The message never quotes the list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("entry {0} is not server:name (a server of [a-z0-9-] or *, a non-empty name or *)")]
    Entry(usize),
    #[error("the list has more than 1000 entries or 64 KiB")]
    TooLong,
}

impl AllowList {
    /// Parse `server:name,...` (whitespace around entries ignored; empty: nothing allowed).
    pub fn parse(s: &str) -> Result<AllowList, ListError> {
        if s.len() > 64 * 1024 {
            return Err(ListError::TooLong);
        }
        let mut out = Vec::new();
        for (i, raw) in s.split(',').map(str::trim).enumerate() {
            if raw.is_empty() {
                continue;
            }
            let (server, name) = raw.split_once(':').ok_or(ListError::Entry(i + 1))?;
            let server_ok = server == "*"
                || (!server.is_empty()
                    && server.len() <= 64
                    && server
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            let name_ok = !name.is_empty()
                && name.len() <= 1024
                && !name.chars().any(|c| c.is_control() || c == ',');
            if !server_ok || !name_ok {
                return Err(ListError::Entry(i + 1));
            }
            out.push(Entry {
                server: server.into(),
                name: name.into(),
            });
        }
        if out.len() > 1000 {
            return Err(ListError::TooLong);
        }
        Ok(AllowList(out))
    }

    /// Whether `name` on `server` is allowed.
    pub fn allows(&self, server: &str, name: &str) -> bool {
        self.0.iter().any(|e| {
            let name_ok = match e.name.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => e.name == name,
            };
            (e.server == "*" || e.server == server) && name_ok
        })
    }

    /// Whether the resource `uri` on `server` is allowed: only a URI in normal form (see
    /// [`check_uri`]) can be, and a `*` entry matches at a segment boundary only
    /// (`file:///srv/docs/*` and `file:///srv/docs*` both allow `file:///srv/docs/a.md`, neither
    /// `file:///srv/docs-private/a.md`).
    pub fn allows_uri(&self, server: &str, uri: &str) -> bool {
        check_uri(uri).is_ok()
            && self.0.iter().any(|e| {
                let name_ok = match e.name.strip_suffix('*') {
                    Some(prefix) => uri.strip_prefix(prefix).is_some_and(|rest| {
                        prefix.is_empty()
                            || prefix.ends_with(['/', ':'])
                            || rest.is_empty()
                            || rest.starts_with(['/', '?', '#'])
                    }),
                    None => e.name == uri,
                };
                (e.server == "*" || e.server == server) && name_ok
            })
    }

    /// Whether the list allows nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}", e.server, e.name)?;
        }
        Ok(())
    }
}

/// Shown as its text (`server:name,...`), as stored.
impl serde::Serialize for AllowList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why a resource URI is refused before any policy is matched. Matching is on exactly the URI
/// forwarded, so only a URI that servers cannot read as another one passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// A `.` or `..` path segment (RFC 3986 section 5.2.4 would remove it), plain or encoded.
    #[error("the URI has a dot segment")]
    DotSegment,
    /// A percent-encoded `/`, `\`, NUL or control character, or a malformed escape.
    #[error("the URI has an encoded separator, control character or a malformed escape")]
    EncodedSeparator,
    /// A percent-encoded unreserved character (`%41` for `A`): not in normal form.
    #[error("the URI encodes a character that needs no encoding")]
    NotNormal,
    /// A backslash or a control character, written as it is.
    #[error("the URI has a backslash or a control character")]
    Forbidden,
}

/// Check that `uri` is in the normal form policies match on: no dot segments (in its path, or
/// after a `?` or `#`, which servers reading URIs as paths walk too), no
/// percent-encoded unreserved characters (RFC 3986 section 6.2.2.2), no encoded `/`, `\`, NUL
/// or control characters, no backslash or control character at all.
pub fn check_uri(uri: &str) -> Result<(), UriError> {
    let b = uri.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => return Err(UriError::Forbidden),
            c if c < 0x20 || c == 0x7f => return Err(UriError::Forbidden),
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                let byte = match (
                    b.get(i + 1).and_then(|&c| hex(c)),
                    b.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    (Some(h), Some(l)) => (h * 16 + l) as u8,
                    _ => return Err(UriError::EncodedSeparator),
                };
                if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                    return Err(UriError::NotNormal);
                }
                if matches!(byte, b'/' | b'\\') || byte < 0x20 || byte == 0x7f {
                    return Err(UriError::EncodedSeparator);
                }
                i += 3;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    // Segments of the whole URI, query and fragment included: a server that reads the URI as
    // a path (`file:///docs/?/../../etc/passwd`) walks them too.
    if uri
        .split(['/', '?', '#'])
        .any(|seg| seg == "." || seg == "..")
    {
        return Err(UriError::DotSegment);
    }
    Ok(())
}

/// What a key may use over MCP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `tools/call` (and what `tools/list` shows).
    pub tools: AllowList,
    /// `resources/read` by URI (and what `resources/list` shows).
    pub resources: AllowList,
    /// `prompts/get` (and what `prompts/list` shows).
    pub prompts: AllowList,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_match_and_refuse_bad_entries_without_quoting_them() {
        let l = AllowList::parse(" github:create_issue , search:*,*:ping").unwrap();
        assert!(l.allows("github", "create_issue"));
        assert!(!l.allows("github", "delete_repo"));
        assert!(l.allows("search", "anything"));
        assert!(l.allows("other", "ping"));
        assert_eq!(l.to_string(), "github:create_issue,search:*,*:ping");
        assert!(AllowList::parse("").unwrap().is_empty());
        assert!(
            !AllowList::default().allows("a", "b"),
            "empty allows nothing"
        );
        for bad in ["github", "Git:x", "a:", ":x", "a:b\nc"] {
            let e = AllowList::parse(bad).unwrap_err().to_string();
            assert!(!e.contains(bad) || bad.len() < 3, "{e}");
        }
        let uri = AllowList::parse("docs:file:///srv/docs/readme.md").unwrap();
        assert!(uri.allows("docs", "file:///srv/docs/readme.md"));
        let prefix = AllowList::parse("docs:file:///srv/*").unwrap();
        assert!(prefix.allows("docs", "file:///srv/a/b.md"));
        assert!(!prefix.allows("docs", "file:///etc/passwd"));
    }

    #[test]
    fn resource_uris_match_in_normal_form_at_segment_boundaries() {
        let l = AllowList::parse("docs:file:///srv/docs/*,docs:s3://bucket*").unwrap();
        assert!(l.allows_uri("docs", "file:///srv/docs/a/b.md"));
        assert!(l.allows_uri("docs", "file:///srv/docs/a%20b.md"));
        assert!(l.allows_uri("docs", "s3://bucket"));
        assert!(l.allows_uri("docs", "s3://bucket/k?v=1"));
        for bad in [
            "file:///srv/docs/../private/x",
            "file:///srv/docs/a/../../private/x",
            "file:///srv/docs/%2e%2e/private/x",
            "file:///srv/docs/%2E%2e/private/x",
            "file:///srv/docs/.%2e/private/x",
            "file:///srv/docs/..",
            "file:///srv/docs/./a.md",
            "./../../etc/shadow",
            "file:///srv/docs/..%2fprivate",
            "file:///srv/docs/..%2Fprivate",
            "file:///srv/docs/a%5c..%5cx",
            "file:///srv/docs/a\\..\\x",
            "file:///srv/docs/a%00.md",
            "file:///srv/docs/a\0.md",
            "file:///srv/docs/%61.md",
            "file:///srv/docs/%zz",
            "file:///srv/docs/%4",
            "s3://bucket2/k",
            "s3://bucket-private/k",
            "file:///srv/docs",
        ] {
            assert!(!l.allows_uri("docs", bad), "{bad}");
        }
        assert_eq!(check_uri("file:///a/../b"), Err(UriError::DotSegment));
        assert_eq!(check_uri("file:///a/%2E%2E/b"), Err(UriError::NotNormal));
        // A query's values are not segments; a segment after '?' or '#' is.
        assert_eq!(check_uri("file:///a?p=../b"), Ok(()));
        assert_eq!(check_uri("file:///a/?/../b"), Err(UriError::DotSegment));
        assert_eq!(check_uri("file:///a/#/.."), Err(UriError::DotSegment));
    }
}
