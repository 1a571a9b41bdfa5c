//! Secrets by assignment: a value after a secret-looking name (`password=`, `"api_key":`),
//! with what keeps ordinary values out (entropy, templates, placeholders, documented examples).

use super::*;

/// Names whose assigned value is a secret, matched in any case and inside longer names
/// (`DB_PASSWORD`, `aws_secret_access_key`, `x-api-key`, `client_secret`, `AccountKey`).
pub(super) const SECRET_NAMES: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "accesskey",
    "access_key",
    "accountkey",
    "sharedaccesskey",
    "private_key",
    "privatekey",
    "credential",
    "auth",
];

/// Tails after a secret's word that make a longer name name something else
/// (`token_endpoint`, `tokenizer`, `authority`, `password_hash`, `secret_name`,
/// `api_key_id`, `token_expires_at`), read without case or separators. Any other tail keeps it
/// a secret's name (`api_keys`, `secretKey`, `Authorization`, `DB_PASSWORD_PROD`,
/// `SECRET_KEY_BASE`, `password2`, `API_KEY_V2`).
pub(super) const NOT_SECRET_TAILS: &[&str] = &[
    "endpoint",
    "url",
    "uri",
    "urls",
    "izer",
    "izers",
    "ity",
    "hash",
    "hashed",
    "name",
    "names",
    "type",
    "id",
    "ids",
    "file",
    "path",
    "dir",
    "length",
    "len",
    "count",
    "size",
    "expiry",
    "expires",
    "expiresat",
    "expiresin",
    "expiration",
    "ttl",
    "header",
    "policy",
    "rotation",
    "enabled",
    "required",
    "limit",
    "limits",
    "usage",
    "format",
    "hint",
    "prefix",
    "suffix",
    "version",
    "scope",
    "scopes",
    "field",
    "index",
    "metadata",
    "info",
    "status",
    "kind",
    "label",
    "description",
    "strength",
    "reset",
    "changed",
    "updatedat",
    "createdat",
];

/// Tails that end a secret's word into another word (`author`, `authors`).
pub(super) const NOT_SECRET_EXACT_TAILS: &[&str] = &["or", "ors", "ored", "oring", "ing"];

/// Whole names (without case or separators) that hold a secret's word but name identifiers
/// that are no credential: pagination and progress tokens.
pub(super) const NOT_SECRET_NAMES: &[&str] = &[
    "pagetoken",
    "nextpagetoken",
    "nexttoken",
    "progresstoken",
    "continuationtoken",
    "resumetoken",
    "synctoken",
    "cursortoken",
    "paginationtoken",
    "nextcursortoken",
];

/// Whether the name `b[start..end]` whose secret word ends at `z` names a secret.
pub(super) fn secret_name(b: &[u8], start: usize, z: usize, end: usize) -> bool {
    let norm = |r: &[u8]| -> ([u8; 96], usize) {
        let mut buf = [0u8; 96];
        let mut k = 0;
        for &c in r.iter().filter(|c| c.is_ascii_alphanumeric()).take(96) {
            buf[k] = c.to_ascii_lowercase();
            k += 1;
        }
        (buf, k)
    };
    let (tail, t) = norm(&b[z..end]);
    let tail = &tail[..t];
    if NOT_SECRET_EXACT_TAILS.iter().any(|x| tail == x.as_bytes())
        || NOT_SECRET_TAILS
            .iter()
            .any(|x| tail.ends_with(x.as_bytes()))
    {
        return false;
    }
    let (whole, w) = norm(&b[start..end]);
    !NOT_SECRET_NAMES.iter().any(|x| &whole[..w] == x.as_bytes())
}

/// The value assigned to the secret name whose word ends at `z` (in the name starting at
/// `start`), if it looks like a secret: the rest of the name (at most 32 name characters),
/// closing quotes, `=`, `:`, `:=` or `=>`, an opening quote, an optional `Bearer `, `Basic `
/// or `Token ` scheme, then the value: to its closing quote when it opened with one, else
/// up to a space, quote or delimiter.
pub(super) fn assigned(b: &[u8], start: usize, z: usize) -> Option<(usize, usize)> {
    let rest = b[z..]
        .iter()
        .take(33)
        .take_while(|&&c| is_key_or_dot(c))
        .count();
    if rest > 32 || !secret_name(b, start, z, z + rest) {
        return None;
    }
    let (begin, quote, basic) = value_start(b, z + rest)?;
    let len = b[begin..]
        .iter()
        .take(MAX_ASSIGNED + 1)
        .take_while(|&&c| !ends_value(c, quote))
        .count();
    if len > MAX_ASSIGNED {
        return None;
    }
    // A sentence's full stop after an unquoted value is not part of it.
    let end = if quote.is_some() {
        begin + len
    } else {
        trim_dots(b, begin, begin + len)
    };
    let value = &b[begin..end];
    if basic && decode_credentials(value) {
        // `user:password`, base64: a credential whatever the password looks like.
        return Some((begin, end));
    }
    looks_assigned_secret(value).then_some((begin, end))
}

/// Where the value assigned after a name ending at `i` starts: closing quotes and spaces,
/// `=`, `:`, `:=` or `=>`, spaces and an opening quote, an optional `Bearer `, `Basic ` or
/// `Token ` scheme. With the quote the value opened with, and whether it is `Basic`.
pub(super) fn value_start(b: &[u8], mut i: usize) -> Option<(usize, Option<u8>, bool)> {
    let mut skipped = 0;
    while let Some(&c) = b.get(i) {
        if !matches!(c, b'"' | b'\'' | b'`' | b' ' | b'\t') || skipped == 6 {
            break;
        }
        skipped += 1;
        i += 1;
    }
    match (b.get(i), b.get(i + 1)) {
        (Some(b':'), Some(b'=')) | (Some(b'='), Some(b'>')) => i += 2,
        (Some(b'=' | b':'), _) => i += 1,
        _ => return None,
    }
    let mut skipped = 0;
    let mut quote = None;
    while let Some(&c) = b.get(i) {
        match c {
            b' ' | b'\t' if skipped < 6 => {}
            b'"' | b'\'' | b'`' if quote.is_none() => quote = Some(c),
            _ => break,
        }
        skipped += 1;
        i += 1;
    }
    let mut basic = false;
    for scheme in [&b"bearer "[..], b"basic ", b"token "] {
        if b.len() >= i + scheme.len() && b[i..i + scheme.len()].eq_ignore_ascii_case(scheme) {
            basic = scheme == b"basic ";
            i += scheme.len();
            break;
        }
    }
    Some((i, quote, basic))
}

/// Whether `c` ends an assigned value: its closing quote (or a line end) when it opened
/// with one, else a space, a quote or a delimiter.
pub(super) fn ends_value(c: u8, quote: Option<u8>) -> bool {
    match quote {
        Some(q) => c == q || c == b'\n' || c == b'\r',
        None => {
            c.is_ascii_whitespace()
                || matches!(
                    c,
                    b'"' | b'\'' | b'`' | b',' | b';' | b'<' | b'>' | b')' | b']' | b'}' | b'\\'
                )
        }
    }
}

/// The longest value assigned to a secret's name that is read (a single token; one with
/// spaces at most 512 bytes).
pub(super) const MAX_ASSIGNED: usize = 16 * 1024;

/// Whether a base64 value (padded or not) decodes to `user:password` (UTF-8, no control
/// characters).
pub(super) fn decode_credentials(value: &[u8]) -> bool {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    use base64::Engine as _;
    let config = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    let engine = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let Ok(bytes) = engine.decode(value) else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return false;
    };
    text.split_once(':')
        .is_some_and(|(_, pw)| !pw.is_empty() && !text.chars().any(char::is_control))
}

/// A value assigned to a secret's name that is a secret: 8 to 512 characters with a letter
/// and a digit, not too regular (Shannon entropy at least 2.5 bits per character, 3 for 16 or
/// more), not a placeholder, a template, a URL, a path, a UUID or a date; or a base64
/// `user:password`.
pub(in crate::redact) fn looks_assigned_secret(v: &[u8]) -> bool {
    // A single token may be long (a refresh or session token runs to a few KiB); a value
    // with spaces is a sentence when it holds two or more (`"Password must be 8 chars"`).
    let spaces = v.iter().filter(|c| c.is_ascii_whitespace()).count();
    if v.len() < 8 || (spaces > 0 && v.len() > 512) || v.len() > MAX_ASSIGNED {
        return false;
    }
    if spaces >= 2 {
        return decode_credentials(v);
    }
    if decode_credentials(v) {
        return true;
    }
    let letter = v.iter().any(u8::is_ascii_alphabetic);
    let digit = v.iter().any(u8::is_ascii_digit);
    let example = DOCUMENTED_EXAMPLES.iter().any(|x| x.as_bytes() == v)
        || v.ends_with(b"EXAMPLE")
        || v.ends_with(b"EXAMPLEKEY");
    if !(letter && digit) || example || placeholder_as(v, false) || templated(v) {
        return false;
    }
    let date =
        v.len() >= 10 && v[..4].iter().all(u8::is_ascii_digit) && v[4] == b'-' && v[7] == b'-';
    let url = finder!(b"://").find(v).is_some();
    let path = v.starts_with(b"/") || v.starts_with(b"~/") || v.starts_with(b"./");
    let uuid = v.len() == 36
        && v.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    let floor = if v.len() < 16 { 2.5 } else { 3.0 };
    !(date || url || path || uuid) && entropy(v) >= floor
}

/// Shannon entropy of `v`, in bits per byte.
pub(super) fn entropy(v: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &c in v {
        counts[c as usize] += 1;
    }
    let n = v.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// A value written in place of a secret, not a secret: a template or variable reference
/// (`${DB_PASS}`, `{{ token }}`, `<your-key>`, `$TOKEN`, `%PASS%`, `os.environ[...]`) or
/// masked characters (`****`).
pub(in crate::redact) fn templated(v: &[u8]) -> bool {
    let ident = |s: &[u8]| {
        !s.is_empty()
            && s.iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
    };
    let wrapped = |open: &[u8], close: &[u8]| {
        v.len() > open.len() + close.len() && v.starts_with(open) && v.ends_with(close)
    };
    // `${DB_PASS}`, `{{ token }}`, `<your-key>`, `%PASS%`, `@PASS@`, `$TOKEN`, `$(cat f)`.
    wrapped(b"${", b"}")
        || wrapped(b"{{", b"}}")
        || wrapped(b"<", b">")
        || wrapped(b"$(", b")")
        || (wrapped(b"%", b"%") && ident(&v[1..v.len() - 1]))
        || (wrapped(b"@", b"@") && ident(&v[1..v.len() - 1]))
        || (v.first() == Some(&b'$')
            && v.len() > 1
            && v[1..].iter().all(|&c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
            && !v[1].is_ascii_digit())
        // Masked: `****`, `xxxxxxxx`.
        || v.iter().all(|&c| c == b'*')
        // Code reading it from elsewhere: `os.environ["KEY"]`, `getenv("KEY")`, `process.env.KEY`.
        || {
            // `f("KEY")`, `env['KEY']`, `os.environ[KEY]`: an identifier called or indexed with
            // a quoted string or an identifier, to the end.
            let call = v.iter().position(|&c| c == b'(' || c == b'[');
            call.is_some_and(|k| {
                let inner = &v[k + 1..v.len().saturating_sub(1).max(k + 1)];
                let inner = inner
                    .strip_prefix(b"\"")
                    .or_else(|| inner.strip_prefix(b"'"))
                    .unwrap_or(inner);
                let inner = inner
                    .strip_suffix(b"\"")
                    .or_else(|| inner.strip_suffix(b"'"))
                    .unwrap_or(inner);
                k > 0
                    && ident(&v[..k])
                    && matches!(v.last(), Some(b')' | b']'))
                    && ident(inner)
                    && inner.first().is_some_and(|c| !c.is_ascii_digit())
            })
        }
        || finder!(b"process.env").find(v).is_some()
}

/// The documented example values issuers publish (AWS, GitHub, Stripe, Slack, jwt.io): never
/// real, always copied into prompts and code.
pub(super) const DOCUMENTED_EXAMPLES: &[&str] = &[
    "AKIAIOSFODNN7EXAMPLE",
    "AKIAI44QH8DHBEXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    "gho_16C7e42F292c6912E7710c838347Ae178B4a",
    "sk_test_BQokikJOvBiI2HlWgH4olfQ2",
    "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
    "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
];

/// A token body that is a placeholder, not a key: one character repeated (separators
/// aside), a regular pattern (entropy under 2 bits per character over 16 or more), a
/// placeholder word (`your`, `example`, `xxxx`, `placeholder`, `changeme`, `redacted`,
/// `dummy`), or a template.
pub(in crate::redact) fn placeholder(body: &[u8]) -> bool {
    placeholder_as(body, true)
}

/// [`placeholder`]; `token`: `body` follows a token's prefix, so `your` at its start counts
/// (`hf_yourtokenhere`); an assigned value may start with it (`Yourself#24`).
pub(super) fn placeholder_as(body: &[u8], token: bool) -> bool {
    let significant = || body.iter().filter(|c| !matches!(c, b'-' | b'_' | b'.'));
    let first = significant().next();
    if first.is_none_or(|f| significant().all(|c| c.eq_ignore_ascii_case(f))) {
        return true;
    }
    if body.len() >= 16 && entropy(body) < 2.0 {
        return true;
    }
    // Placeholder words where a person writes them: a whole segment (`xoxb-your-bot-token`)
    // or the start of the body (`hf_yourtokenhere`), not anywhere in random characters (one
    // real key in a few thousand holds `your` somewhere); six `x` in a row anywhere.
    let lower = body.to_ascii_lowercase();
    let words = [
        "your",
        "example",
        "placeholder",
        "changeme",
        "redacted",
        "dummy",
        "insert",
    ];
    let at_start = words
        .iter()
        .filter(|w| token || **w != "your")
        .any(|w| lower.starts_with(w.as_bytes()));
    let segment = lower
        .split(|c| matches!(c, b'-' | b'_' | b'.'))
        .any(|seg| words.iter().any(|w| seg == w.as_bytes()));
    at_start || segment || finder!(b"xxxxxx").find(&lower).is_some() || templated(body)
}

/// Whether the token `b[s..e]` is an issuer's documented example, or its body (after the
/// prefix, `p` bytes) a placeholder.
pub(super) fn not_a_key(b: &[u8], s: usize, p: usize, e: usize) -> bool {
    let token = &b[s..e];
    DOCUMENTED_EXAMPLES.iter().any(|x| x.as_bytes() == token) || placeholder(&b[s + p..e])
}

/// The CRC32 checksum GitHub and npm tokens end with: the last six characters are the CRC32
/// (IEEE) of the 30 before them, in base62 (`0-9A-Za-z`), left-padded with `0`.
pub(in crate::redact) fn checksum_holds(body: &[u8]) -> bool {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    if body.len() != 36 {
        return false;
    }
    let (random, check) = body.split_at(30);
    let mut crc = crc32fast::hash(random);
    let mut want = [b'0'; 6];
    for slot in want.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    crc == 0 && want == check
}
