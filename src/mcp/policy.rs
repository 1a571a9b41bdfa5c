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
}
