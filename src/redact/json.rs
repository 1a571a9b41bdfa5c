//! A streaming JSON rewriter: validates the whole document and redacts every string (values
//! and keys) in one pass, copying everything else byte for byte. No tree is built, so
//! duplicate keys are all seen (and all redacted), key order and number formatting survive,
//! and nesting depth costs a byte of stack per level, not recursion. Escapes (`\u0040`) are
//! decoded before scanning; a rewritten string is re-encoded by `serde_json`. A string that
//! itself holds JSON (tool-call `arguments`, a tool result quoting its own arguments) is
//! rewritten as JSON, recursively, up to [`MAX_STRING_NESTING`] levels; JSON nested deeper
//! than that inside strings is refused, not scanned with its escapes undecoded. Integers of
//! 9 to 19 digits are checked like text (a card number, an SSN after SSN context such as an
//! `"ssn":` key) and replaced by the token as a string.

use super::text::{self, Patterns};
use super::{Counts, Scan};

/// Deeper documents are refused rather than walked.
pub const MAX_DEPTH: usize = 1024;

/// How many levels of JSON inside JSON strings are decoded and walked; a document with more
/// is refused.
pub const MAX_STRING_NESTING: usize = 8;

/// Why a body is not scannable JSON. Messages never contain body text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {at}: {what}")]
pub struct Invalid {
    pub at: usize,
    pub what: &'static str,
}

fn bad<T>(at: usize, what: &'static str) -> Result<T, Invalid> {
    Err(Invalid { at, what })
}

#[derive(Clone, Copy, PartialEq)]
enum Frame {
    Object,
    /// An array, and the member name it is the value of (its strings are read after it:
    /// `{"api_keys": ["..."]}`).
    Array(Option<(usize, usize)>),
}

/// Redact `input` (which must be one JSON document). `Ok(None)`: valid and unchanged.
pub fn redact(
    p: &Patterns,
    input: &str,
    scan: Scan,
    counts: &mut Counts,
) -> Result<Option<String>, Invalid> {
    rewrite(p, input, scan, counts, MAX_STRING_NESTING)
}

/// `nesting`: how many more levels of JSON inside strings may be walked below this document.
fn rewrite(
    p: &Patterns,
    input: &str,
    scan: Scan,
    counts: &mut Counts,
    nesting: usize,
) -> Result<Option<String>, Invalid> {
    let b = input.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0; // input[..copied] is already in `out`
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = skip_ws(b, 0);
    // After a value inside a container we expect `,` or the closer; `expect_key` marks the
    // position right after `{` or an object's `,`.
    let mut done = false;
    // The member name the next value is assigned to (the key's span, quotes included).
    let mut member: Option<(usize, usize)> = None;
    loop {
        // ---- one value at i ----
        let name = member.take().or(match stack.last() {
            Some(Frame::Array(n)) => *n,
            _ => None,
        });
        match b.get(i) {
            None => return bad(i, "unexpected end"),
            Some(b'{') => {
                stack.push(Frame::Object);
                if stack.len() > MAX_DEPTH {
                    return bad(i, "nested too deeply");
                }
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&b'}') {
                    stack.pop();
                    i += 1;
                } else {
                    let (next, span) = key(p, input, i, scan, counts, &mut out, &mut copied)?;
                    (i, member) = (next, Some(span));
                    continue;
                }
            }
            Some(b'[') => {
                stack.push(Frame::Array(name));
                if stack.len() > MAX_DEPTH {
                    return bad(i, "nested too deeply");
                }
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&b']') {
                    stack.pop();
                    i += 1;
                } else {
                    continue;
                }
            }
            Some(b'"') => {
                let name = name.and_then(|(s, e)| member_name(input, s, e));
                let end = string_value(
                    p,
                    input,
                    i,
                    scan,
                    counts,
                    &mut out,
                    &mut copied,
                    Some(nesting),
                    name.as_deref(),
                )?;
                i = end;
            }
            Some(b't') => i = literal(b, i, b"true")?,
            Some(b'f') => i = literal(b, i, b"false")?,
            Some(b'n') => i = literal(b, i, b"null")?,
            Some(c) if *c == b'-' || c.is_ascii_digit() => {
                let end = number(b, i)?;
                if let Some(e) = scan.pii.then(|| text::number_entity(b, i, end)).flatten() {
                    counts.add(e);
                    let o = out.get_or_insert_with(|| String::with_capacity(input.len() + 64));
                    o.push_str(&input[copied..i]);
                    o.push('"');
                    o.push_str(e.token());
                    o.push('"');
                    copied = end;
                }
                i = end;
            }
            Some(_) => return bad(i, "expected a value"),
        }
        // ---- after a value: close containers, or move to the next element ----
        loop {
            i = skip_ws(b, i);
            let Some(top) = stack.last().copied() else {
                done = true;
                break;
            };
            match (b.get(i), top) {
                (Some(b','), Frame::Array(_)) => {
                    i = skip_ws(b, i + 1);
                    break;
                }
                (Some(b','), Frame::Object) => {
                    i = skip_ws(b, i + 1);
                    let (next, span) = key(p, input, i, scan, counts, &mut out, &mut copied)?;
                    (i, member) = (next, Some(span));
                    break;
                }
                (Some(b']'), Frame::Array(_)) | (Some(b'}'), Frame::Object) => {
                    stack.pop();
                    i += 1;
                }
                (None, _) => return bad(i, "unexpected end"),
                _ => return bad(i, "expected ',' or a closing bracket"),
            }
        }
        if done {
            break;
        }
    }
    if i != b.len() {
        return bad(i, "trailing characters after the document");
    }
    Ok(out.map(|mut o| {
        o.push_str(&input[copied..]);
        o
    }))
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The decoded name of the member whose key string spans `input[s..e]` (quotes included),
/// when it may give its value context (see `text::redact_after`): at most 64 bytes.
fn member_name(input: &str, s: usize, e: usize) -> Option<std::borrow::Cow<'_, str>> {
    let raw = &input[s + 1..e - 1];
    if raw.len() > 6 * 64 {
        return None;
    }
    if !raw.contains('\\') {
        return Some(raw.into());
    }
    parse_string(input.as_bytes(), s).ok()?.1.map(Into::into)
}

/// An object key at `i`, its colon, and the whitespace before the value. Keys are redacted
/// too. Returns where the value starts and the key's span (quotes included).
fn key(
    p: &Patterns,
    input: &str,
    i: usize,
    scan: Scan,
    counts: &mut Counts,
    out: &mut Option<String>,
    copied: &mut usize,
) -> Result<(usize, (usize, usize)), Invalid> {
    let b = input.as_bytes();
    if b.get(i) != Some(&b'"') {
        return bad(i, "expected an object key");
    }
    // Keys are scanned as text (an object key holding a JSON document is not a thing).
    let end = string_value(p, input, i, scan, counts, out, copied, None, None)?;
    let j = skip_ws(b, end);
    if b.get(j) != Some(&b':') {
        return bad(j, "expected ':'");
    }
    Ok((skip_ws(b, j + 1), (i, end)))
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Result<usize, Invalid> {
    if b[i..].starts_with(word) {
        Ok(i + word.len())
    } else {
        bad(i, "invalid literal")
    }
}

fn number(b: &[u8], mut i: usize) -> Result<usize, Invalid> {
    let start = i;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(c) if c.is_ascii_digit() => {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        _ => return bad(start, "invalid number"),
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return bad(start, "invalid number");
        }
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return bad(start, "invalid number");
        }
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    Ok(i)
}

/// The string starting at the quote `i`; rewrites it into `out` when it holds PII. Returns the
/// index after the closing quote.
#[allow(clippy::too_many_arguments)] // the walker's state, passed down rather than boxed
fn string_value(
    p: &Patterns,
    input: &str,
    i: usize,
    scan: Scan,
    counts: &mut Counts,
    out: &mut Option<String>,
    copied: &mut usize,
    nesting: Option<usize>,
    name: Option<&str>,
) -> Result<usize, Invalid> {
    let b = input.as_bytes();
    let (end, decoded) = parse_string(b, i)?;
    let raw = &input[i + 1..end - 1];
    let text: &str = decoded.as_deref().unwrap_or(raw);
    let mut local = Counts::default();
    let rewritten = scan_string(p, text, scan, &mut local, nesting, name)
        .map_err(|e| Invalid { at: i, ..e })?;
    if let Some(new) = rewritten {
        counts.merge(&local);
        let o = out.get_or_insert_with(|| String::with_capacity(input.len() + 64));
        o.push_str(&input[*copied..i]);
        // Serialising a &str cannot fail.
        o.push_str(&serde_json::to_string(&new).unwrap_or_else(|_| "\"\"".into()));
        *copied = end;
    }
    Ok(end)
}

/// Scan a decoded string: as JSON when it is a JSON object or array (recursively, within the
/// nesting budget), else as text. A string that is JSON nested deeper than the budget allows
/// is refused: its innermost escapes would go unscanned.
/// `nesting`: `None` for object keys (always text), else the levels left below this string.
fn scan_string(
    p: &Patterns,
    text: &str,
    scan: Scan,
    counts: &mut Counts,
    nesting: Option<usize>,
    name: Option<&str>,
) -> Result<Option<String>, Invalid> {
    let t = text.trim_start();
    if let (Some(left), true) = (nesting, t.starts_with('{') || t.starts_with('[')) {
        let mut inner = Counts::default();
        match rewrite(p, text, scan, &mut inner, left.saturating_sub(1)) {
            Ok(_) if left == 0 => return bad(0, TOO_NESTED),
            Ok(r) => {
                counts.merge(&inner);
                return Ok(r);
            }
            Err(e) if e.what == TOO_NESTED => return Err(e),
            Err(_) => {} // not JSON after all: text
        }
    }
    // A value assigned to a secret's name (`"client_secret": "..."`) is read after its name,
    // as the same pair written as text is.
    if let Some(name) = name.filter(|n| scan.secrets && text::names_a_secret(p, n)) {
        // The whole value is judged, whatever it holds (`"password": "Zx9;mQ2#vL"`).
        if super::secret::looks_assigned_secret(text.trim().as_bytes()) {
            counts.add(super::Entity::Secret);
            return Ok(Some(super::Entity::Secret.token().to_string()));
        }
        let context = format!("\"{name}\": \"");
        return Ok(text::redact_after(p, &context, text, scan, counts));
    }
    Ok(text::redact(p, text, scan, counts))
}

const TOO_NESTED: &str = "JSON nested too deeply inside strings";

/// Validate the string at the quote `i`. Returns the index after the closing quote and, when
/// it had escapes, the decoded text.
fn parse_string(b: &[u8], i: usize) -> Result<(usize, Option<String>), Invalid> {
    let mut j = i + 1;
    let mut decoded: Option<Vec<u8>> = None;
    let mut run = j; // start of the unescaped run not yet copied into `decoded`
    loop {
        let Some(k) = memchr::memchr3(b'"', b'\\', b'\n', &b[j..]).map(|k| j + k) else {
            return bad(i, "unterminated string");
        };
        if has_control(&b[j..k]) {
            let c = b[j..k].iter().position(|&c| c < 0x20).unwrap_or(0);
            return bad(j + c, "control character in string");
        }
        match b[k] {
            b'"' => {
                let decoded = match decoded {
                    Some(mut d) => {
                        d.extend_from_slice(&b[run..k]);
                        Some(String::from_utf8(d).map_err(|_| Invalid {
                            at: i,
                            what: "invalid escape",
                        })?)
                    }
                    None => None,
                };
                return Ok((k + 1, decoded));
            }
            b'\n' => return bad(k, "control character in string"),
            _ => {
                let d = decoded.get_or_insert_with(Vec::new);
                d.extend_from_slice(&b[run..k]);
                let (c, next) = escape(b, k)?;
                let mut buf = [0u8; 4];
                d.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                j = next;
                run = next;
            }
        }
    }
}

/// Whether `s` holds a control character (below 0x20). One pass without an early exit, which
/// the compiler vectorises: a body's strings are most of its bytes, and a byte-at-a-time search
/// for the position cost about as much as the rest of the redaction together (issue 41).
fn has_control(s: &[u8]) -> bool {
    s.iter().fold(0u8, |any, &c| any | u8::from(c < 0x20)) != 0
}

fn hex4(b: &[u8], i: usize) -> Result<u32, Invalid> {
    let s = b.get(i..i + 4).ok_or(Invalid {
        at: i,
        what: "invalid \\u escape",
    })?;
    let s = std::str::from_utf8(s).map_err(|_| Invalid {
        at: i,
        what: "invalid \\u escape",
    })?;
    u32::from_str_radix(s, 16).map_err(|_| Invalid {
        at: i,
        what: "invalid \\u escape",
    })
}

/// The escape at the backslash `k`: the character and the index after it.
fn escape(b: &[u8], k: usize) -> Result<(char, usize), Invalid> {
    let c = match b.get(k + 1) {
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => {
            let hi = hex4(b, k + 2)?;
            if (0xD800..0xDC00).contains(&hi) {
                if b.get(k + 6..k + 8) != Some(b"\\u") {
                    return bad(k, "lone surrogate");
                }
                let lo = hex4(b, k + 8)?;
                if !(0xDC00..0xE000).contains(&lo) {
                    return bad(k, "lone surrogate");
                }
                let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                return char::from_u32(c).map(|c| (c, k + 12)).ok_or(Invalid {
                    at: k,
                    what: "invalid \\u escape",
                });
            }
            if (0xDC00..0xE000).contains(&hi) {
                return bad(k, "lone surrogate");
            }
            return char::from_u32(hi).map(|c| (c, k + 6)).ok_or(Invalid {
                at: k,
                what: "invalid \\u escape",
            });
        }
        _ => return bad(k, "invalid escape"),
    };
    Ok((c, k + 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &str) -> (Result<Option<String>, Invalid>, Counts) {
        let p = Patterns::new();
        let mut c = Counts::default();
        (redact(&p, s, Scan::ALL, &mut c), c)
    }

    #[test]
    fn a_raw_control_character_in_a_string_is_refused_where_it_is() {
        // Every control character, alone, at the start, the end, and deep in a long run (the
        // vectorised check reads whole runs), escaped ones accepted.
        for c in (0u8..0x20).map(char::from) {
            let long = "x".repeat(100);
            for (s, at) in [
                (format!(r#"{{"a":"{c}"}}"#), 6),
                (format!(r#"{{"a":"{c}{long}"}}"#), 6),
                (format!(r#"{{"a":"{long}{c}"}}"#), 106),
                (format!(r#"{{"a":"{long}{c}{long}"}}"#), 106),
                (format!(r#"{{"a":"\n{long}{c}"}}"#), 108),
            ] {
                let err = run(&s).0.unwrap_err();
                assert_eq!(err.what, "control character in string", "{c:?}");
                assert_eq!(err.at, at, "{c:?} in {s:?}");
            }
        }
        let ok = format!(
            r#"{{"a":"{}\t\n\u0001 \u007f{}"}}"#,
            "y".repeat(300),
            '\u{7f}'
        );
        assert!(run(&ok).0.is_ok());
    }

    #[test]
    fn a_value_is_read_after_its_member_name() {
        // `aws sts assume-role` output, and the same names anywhere.
        let secret = "q8Xv2LmN4pR7tY1wZ3bC5dF9gH0jK6sU/eW+aQoI";
        let session = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD6m3Vtb2tlbjEyMzQ1Njc4OTBhYmNkZWY=";
        let body = format!(
            r#"{{"Credentials":{{"AccessKeyId":"ASIAWBOBYXE3TVGJGRWA","SecretAccessKey":"{secret}","SessionToken":"{session}","Expiration":"2026-12-06T12:00:00Z"}},"aws_secret_access_key":"{secret}","pass\u0077ord":"Tr0ub4dor&3x","max_tokens":4096,"token_count":"12","name":"api-key rotation"}}"#
        );
        let (r, c) = run(&body);
        let out = r.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Credentials"]["AccessKeyId"], "[REDACTED_SECRET]");
        assert_eq!(v["Credentials"]["SecretAccessKey"], "[REDACTED_SECRET]");
        assert_eq!(v["Credentials"]["SessionToken"], "[REDACTED_SECRET]");
        assert_eq!(v["Credentials"]["Expiration"], "2026-12-06T12:00:00Z");
        assert_eq!(v["aws_secret_access_key"], "[REDACTED_SECRET]");
        assert_eq!(v["password"], "[REDACTED_SECRET]");
        assert_eq!(v["max_tokens"], 4096);
        assert_eq!(v["token_count"], "12");
        assert_eq!(v["name"], "api-key rotation");
        assert_eq!(c.get(crate::redact::Entity::Secret), 5);
        for leak in [secret, session, "Tr0ub4dor"] {
            assert!(!out.contains(leak), "{leak}: {out}");
        }
    }

    #[test]
    fn a_value_under_a_secret_name_is_judged_whole() {
        let body = r#"{"password":"Zx9;mQ2#vL","Secret access key":"tlhVGhXvNLWOBA5wqY2EFoj4J1oKzwZR5l817Uq4","api_keys":["k3y-Ab12Cd34Ef56","k3y-Gh78Ij90Kl12"],"nextPageToken":"CiAKGjBpNDd2Nmp2"}"#;
        let (r, c) = run(body);
        let v: serde_json::Value = serde_json::from_str(&r.unwrap().unwrap()).unwrap();
        assert_eq!(v["password"], "[REDACTED_SECRET]");
        assert_eq!(v["Secret access key"], "[REDACTED_SECRET]");
        assert_eq!(v["api_keys"][0], "[REDACTED_SECRET]");
        assert_eq!(v["api_keys"][1], "[REDACTED_SECRET]");
        assert_eq!(v["nextPageToken"], "CiAKGjBpNDd2Nmp2");
        assert_eq!(c.get(crate::redact::Entity::Secret), 4);
    }

    #[test]
    fn redacts_every_string_and_keeps_the_rest_byte_for_byte() {
        let body = r#"{"model":"gpt-4o","temperature":0.70,"messages":[{"role":"user","content":"mail a\u0040b.com"},{"role":"user","content":[{"type":"text","text":"card 4111 1111 1111 1111"}]}],"x":"a@b.com","x":"c@d.org","n":1e5,"ok":true,"z":null}"#;
        let (r, c) = run(body);
        let out = r.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["messages"][0]["content"], "mail [REDACTED_EMAIL]");
        assert_eq!(
            v["messages"][1]["content"][0]["text"],
            "card [REDACTED_CARD]"
        );
        assert!(out.contains(r#""temperature":0.70"#));
        assert!(out.contains(r#""n":1e5"#));
        // Both duplicate keys are redacted.
        assert!(
            !out.contains("a@b.com") && !out.contains("c@d.org"),
            "{out}"
        );
        assert_eq!(c.get(super::super::Entity::Email), 3);
        assert_eq!(c.get(super::super::Entity::Card), 1);
    }

    #[test]
    fn tool_arguments_holding_json_are_rewritten_as_json() {
        let body = r#"{"tool_calls":[{"function":{"arguments":"{\"email\":\"x\\u0040y.com\",\"n\":1}"}}]}"#;
        let (r, _) = run(body);
        let out = r.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let args: serde_json::Value = serde_json::from_str(
            v["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(args["email"], "[REDACTED_EMAIL]");
        assert_eq!(args["n"], 1);
    }

    #[test]
    fn json_nested_in_strings_is_walked_to_the_bottom_within_a_budget() {
        // Two levels: arguments quoting a tool result that quotes its own arguments.
        let inner = serde_json::json!({"email": "bob\u{0040}example.com"}).to_string();
        let mid = serde_json::json!({"args": inner}).to_string();
        let body = serde_json::json!({"messages": [{"content": mid}]}).to_string();
        // The innermost escape as an attacker would write it: \u0040 three levels down.
        let body = body.replace('@', "\\\\u0040");
        assert!(!body.contains('@'));
        let (r, c) = run(&body);
        let out = r.unwrap().expect("redacted");
        assert_eq!(c.get(super::super::Entity::Email), 1, "{out}");
        assert!(!out.contains("bob"), "{out}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
        // Deeper than the budget: refused, never passed with the escapes unscanned.
        let mut doc = serde_json::json!({"e": "x@y.com"});
        for _ in 0..MAX_STRING_NESTING + 1 {
            doc = serde_json::json!({"s": doc.to_string()});
        }
        let (r, _) = run(&doc.to_string());
        assert_eq!(r.unwrap_err().what, TOO_NESTED);
        // Within the budget it is found.
        let mut doc = serde_json::json!({"e": "x@y.com"});
        for _ in 0..MAX_STRING_NESTING {
            doc = serde_json::json!({"s": doc.to_string()});
        }
        let (r, c) = run(&doc.to_string());
        assert!(r.unwrap().is_some());
        assert_eq!(c.get(super::super::Entity::Email), 1);
    }

    #[test]
    fn card_and_ssn_shaped_numbers_are_redacted_as_strings() {
        let (r, c) = run(
            r#"{"order":123456789,"default":4111111111111111,"ssn":123456789,"n":-4111111111111111,"f":4111111111111111.5,"x":4111111111111111e0,"small":42,"g":12.50}"#,
        );
        let out = r.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["default"], "[REDACTED_CARD]");
        assert_eq!(v["ssn"], "[REDACTED_SSN]");
        assert_eq!(
            v["order"], 123456789,
            "a 9-digit number without SSN context stays"
        );
        // A sign, a fraction or an exponent leaves the card's digits as a reader sees them.
        for k in ["n", "f", "x"] {
            assert_eq!(v[k], "[REDACTED_CARD]", "{k}");
        }
        assert_eq!(v["small"], 42);
        assert_eq!(c.get(super::super::Entity::Card), 4);
        assert_eq!(c.get(super::super::Entity::Ssn), 1);
        assert!(
            out.contains(r#""g":12.50"#),
            "numbers keep their formatting"
        );
        let (r, _) = run(r#"{"luhn_fails":4111111111111112,"social_security_number":123456789}"#);
        let v: serde_json::Value = serde_json::from_str(&r.unwrap().unwrap()).unwrap();
        assert_eq!(v["luhn_fails"], 4111111111111112_u64);
        assert_eq!(v["social_security_number"], "[REDACTED_SSN]");
    }

    #[test]
    fn unchanged_bodies_are_not_copied_and_invalid_ones_refused() {
        assert_eq!(run(r#"{"a":[1,2,{"b":"no pii here"}]}"#).0, Ok(None));
        for bad in [
            "",
            "{",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"[1 2]"#,
            r#"{"a":01}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\ud800"}"#,
            "{\"a\":\"line\nbreak\"}",
            r#"{"a":tru}"#,
            r#"{} {}"#,
            r#"{'a':1}"#,
        ] {
            assert!(run(bad).0.is_err(), "{bad:?} accepted");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(run(&deep).0.is_err());
        let ok_deep = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(run(&ok_deep).0, Ok(None));
    }
}
