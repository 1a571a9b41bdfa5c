//! Secret detection: provider API keys and tokens, JWTs, private key blocks and credentials in
//! URLs, replaced by `[REDACTED_SECRET]`. Every rule is written from the token's published
//! format and anchored on a literal (`sk-`, `AKIA`, `ghp_`, `eyJ`, `-----BEGIN`, `://`, ...):
//! one Aho-Corasick pass finds the anchors, then a small matcher per rule checks the token at
//! that place (character set, length, word boundaries, and a validator where the format has
//! one). Text without an anchor costs that one pass.
//!
//! Rules and what keeps them from firing on ordinary text:
//! - OpenAI, Anthropic and sluice keys (`sk-`, `sk-proj-`, `sk-ant-...`, `sk-sluice-`): at least
//!   32 characters after `sk-` from `[A-Za-z0-9_-]`, with an upper-case letter, a lower-case
//!   letter and a digit (so `sk-learn-is-a-python-library` or `sk-<uuid>` survive).
//! - AWS access key ids (`AKIA`/`ASIA` + 16 of `[A-Z0-9]`), and AWS secret keys (40 characters
//!   of `[A-Za-z0-9/+]` with both cases) within 128 characters after an access key id or after
//!   `secret_access_key` / `SecretAccessKey` (so a git SHA, lower-case hex, survives).
//! - Google `AIza` + 35; GitHub `ghp_`/`gho_`/`ghu_`/`ghs_`/`ghr_` + 36, `github_pat_` + 50 or
//!   more; GitLab `glpat-` + 20 or more; Slack `xoxa-`/`xoxb-`/`xoxp-`/`xoxr-`/`xoxs-`/`xapp-`
//!   tokens and `https://hooks.slack.com/services/...` webhooks; Stripe `sk_live_`, `rk_live_`,
//!   `sk_test_`, `rk_test_` + 24 or more; Twilio API keys `SK` + 32 hex; SendGrid
//!   `SG.<22>.<43>`; npm `npm_` + 36; PyPI `pypi-AgEIcHlwaS5vcmc` + 50 or more.
//! - JWTs: `eyJ...` whose first segment decodes (base64url) to a JSON object with an `alg`
//!   member, then `.` and the rest of the token (so random base64 that happens to hold `eyJ`
//!   survives, and so does image data: the anchor must start a token).
//! - PEM private keys: `-----BEGIN <label>PRIVATE KEY-----` through its `-----END ...-----`
//!   line, the whole block (to the end of the text when the END line is missing).
//! - Credentials in URLs: the `user:password` of `scheme://user:password@host` (the scheme and
//!   host stay).
//!
//! Every token rule needs a word boundary before its anchor and after its end: an anchor in
//! the middle of a longer token (base64 data, a hash) is not a secret start.

use aho_corasick::{AhoCorasick, MatchKind};

use super::Entity;

/// Which matcher an anchor leads to.
#[derive(Clone, Copy, Debug)]
enum Rule {
    SkKey,
    Stripe,
    AwsId,
    AwsSecretContext,
    Google,
    GithubClassic,
    GithubPat,
    Gitlab,
    Slack,
    SlackWebhook,
    Twilio,
    SendGrid,
    Npm,
    Pypi,
    Jwt,
    Pem,
    UrlCredentials,
}

const ANCHORS: &[(&str, Rule)] = &[
    ("sk-", Rule::SkKey),
    ("sk_live_", Rule::Stripe),
    ("sk_test_", Rule::Stripe),
    ("rk_live_", Rule::Stripe),
    ("rk_test_", Rule::Stripe),
    ("AKIA", Rule::AwsId),
    ("ASIA", Rule::AwsId),
    ("secret_access_key", Rule::AwsSecretContext),
    ("SECRET_ACCESS_KEY", Rule::AwsSecretContext),
    ("SecretAccessKey", Rule::AwsSecretContext),
    ("secretAccessKey", Rule::AwsSecretContext),
    ("AIza", Rule::Google),
    ("ghp_", Rule::GithubClassic),
    ("gho_", Rule::GithubClassic),
    ("ghu_", Rule::GithubClassic),
    ("ghs_", Rule::GithubClassic),
    ("ghr_", Rule::GithubClassic),
    ("github_pat_", Rule::GithubPat),
    ("glpat-", Rule::Gitlab),
    ("xoxa-", Rule::Slack),
    ("xoxb-", Rule::Slack),
    ("xoxp-", Rule::Slack),
    ("xoxr-", Rule::Slack),
    ("xoxs-", Rule::Slack),
    ("xapp-", Rule::Slack),
    ("hooks.slack.com/services/", Rule::SlackWebhook),
    ("SK", Rule::Twilio),
    ("SG.", Rule::SendGrid),
    ("npm_", Rule::Npm),
    ("pypi-AgEIcHlwaS5vcmc", Rule::Pypi),
    ("eyJ", Rule::Jwt),
    ("-----BEGIN ", Rule::Pem),
    ("://", Rule::UrlCredentials),
];

/// How far after an AWS access key id (or `secret_access_key`) its secret key may be.
const AWS_SECRET_WINDOW: usize = 128;

/// The compiled anchors. Build once and share.
pub struct Rules {
    anchors: AhoCorasick,
}

impl Default for Rules {
    fn default() -> Self {
        Rules::new()
    }
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

/// `[A-Za-z0-9_-]`: the characters of most API keys.
fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// `[A-Za-z0-9_.-]`: a JWT's characters (three base64url parts and their dots).
fn is_jwt_char(c: u8) -> bool {
    is_key_char(c) || c == b'.'
}

fn is_b64_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'/' || c == b'+'
}

/// The end of the run of `class` characters starting at `i`.
fn run(b: &[u8], i: usize, class: fn(u8) -> bool) -> usize {
    i + b[i.min(b.len())..]
        .iter()
        .position(|&c| !class(c))
        .unwrap_or(b.len().saturating_sub(i))
}

/// No `class` character right before `i`.
fn starts_token(b: &[u8], i: usize, class: fn(u8) -> bool) -> bool {
    i == 0 || !class(b[i - 1])
}

/// A token of exactly `len` `class` characters at `i`, not followed by another one.
fn exact(b: &[u8], i: usize, len: usize, class: fn(u8) -> bool) -> Option<usize> {
    let end = run(b, i, class);
    (end - i == len).then_some(end)
}

/// A token of at least `min` `class` characters at `i`.
fn at_least(b: &[u8], i: usize, min: usize, class: fn(u8) -> bool) -> Option<usize> {
    let end = run(b, i, class);
    (end - i >= min).then_some(end)
}

impl Rules {
    pub fn new() -> Rules {
        let anchors = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            // Anchored searches too: whether a secret's anchor starts right where another
            // secret's fixed length ends (`Glue::next`).
            .start_kind(aho_corasick::StartKind::Both)
            .build(ANCHORS.iter().map(|(a, _)| a))
            .expect("the built-in secret anchors compile (checked by unit tests)");
        Rules { anchors }
    }

    /// The secrets in `text`, appended to `out` as `(start, end, Entity::Secret)`.
    /// The secrets in `text`, in order; `true` when any anchor was seen (found or not, its
    /// rule read the text around it).
    pub fn find(&self, text: &str, out: &mut Vec<(usize, usize, Entity)>) -> bool {
        let b = text.as_bytes();
        let mut skip_to = 0;
        // The secret that ends at `skip_to`, by its index in `out`.
        let mut last = 0;
        let mut seen = false;
        let anchor_at = |i: usize| {
            i < b.len()
                && self
                    .anchors
                    .find(
                        aho_corasick::Input::new(b)
                            .range(i..)
                            .anchored(aho_corasick::Anchored::Yes),
                    )
                    .is_some()
        };
        for m in self.anchors.find_iter(b) {
            seen = true;
            let rule = ANCHORS[m.pattern().as_usize()].1;
            let glue = Glue {
                // Right after the previous secret, or after one separator following it: the
                // character before is that secret's, not a word this anchor is part of.
                after_secret: skip_to > 0
                    && (m.start() <= skip_to || (m.start() == skip_to + 1 && is_glue(b[skip_to]))),
                next: &anchor_at,
            };
            if m.start() < skip_to {
                // An anchor inside the previous secret: a secret starting there that runs on
                // past it (a PEM block glued to a key, whose run of key characters took the
                // "-----BEGIN" in) extends that secret, so no part of either is left.
                if let Some((_, e)) = matcher(rule, b, m.start(), m.end(), &glue) {
                    if e > skip_to {
                        out[last].1 = e;
                        skip_to = e;
                    }
                }
                continue;
            }
            if let Some((s, e)) = matcher(rule, b, m.start(), m.end(), &glue) {
                last = out.len();
                out.push((s, e, Entity::Secret));
                skip_to = e;
            }
            if let Rule::AwsId | Rule::AwsSecretContext = rule {
                if let Some((s, e)) = aws_secret_after(b, m.end()) {
                    out.push((s, e, Entity::Secret));
                }
            }
        }
        seen
    }
}

/// A separator that can join two secrets into one run of key characters.
fn is_glue(c: u8) -> bool {
    matches!(c, b'-' | b'_' | b'.')
}

/// What lets a secret's boundaries be crossed: secrets glued to each other
/// (`<key>-<key>`, `<key><key>`) are each found, instead of each refused because the other
/// runs on from it.
struct Glue<'a> {
    /// The anchor is inside, right after, or one separator after the previous secret, so it
    /// starts a token even though a key character precedes it.
    after_secret: bool,
    /// Whether an anchor starts at an index.
    next: &'a dyn Fn(usize) -> bool,
}

impl Glue<'_> {
    /// A token of a fixed length may end at `e` though the run goes on: another secret's
    /// anchor starts there, or right after one separator.
    fn ends_at(&self, b: &[u8], e: usize) -> bool {
        (self.next)(e) || (b.get(e).copied().is_some_and(is_glue) && (self.next)(e + 1))
    }

    /// [`exact`], or the first `len` characters of a longer run when another secret follows.
    fn exact(&self, b: &[u8], i: usize, len: usize, class: fn(u8) -> bool) -> Option<usize> {
        let end = run(b, i, class);
        (end - i == len || (end - i > len && self.ends_at(b, i + len))).then_some(i + len)
    }

    /// Nothing of `class` right after `e`, or another secret starts there.
    fn ends_token(&self, b: &[u8], e: usize, class: fn(u8) -> bool) -> bool {
        !b.get(e).copied().is_some_and(class) || self.ends_at(b, e)
    }
}

/// Check the token at an anchor `b[a..z]`: its span, if it is a secret.
fn matcher(rule: Rule, b: &[u8], a: usize, z: usize, glue: &Glue) -> Option<(usize, usize)> {
    // A token starts at the anchor when no key character precedes it, or only a separator
    // does (`<email>-sk-...`, `id_ghp_...`): a key is a key whatever it is joined to.
    let joined = glue.after_secret || (a > 0 && is_glue(b[a - 1]));
    let token = |class: fn(u8) -> bool| joined || starts_token(b, a, class);
    match rule {
        Rule::SkKey => {
            if !token(is_key_char) {
                return None;
            }
            let end = at_least(b, z, 32, is_key_char)?;
            let body = &b[z..end];
            let mixed = body.iter().any(u8::is_ascii_uppercase)
                && body.iter().any(u8::is_ascii_lowercase)
                && body.iter().any(u8::is_ascii_digit);
            mixed.then_some((a, end))
        }
        Rule::Stripe => {
            if !token(is_key_char) {
                return None;
            }
            let e = at_least(b, z, 24, is_alnum)?;
            if glue.ends_token(b, e, is_key_char) {
                return Some((a, e));
            }
            // Another secret glued on without a separator: the key ends where it starts.
            (z + 24..e).find(|&i| glue.ends_at(b, i)).map(|i| (a, i))
        }
        Rule::AwsId => token(is_alnum)
            .then(|| glue.exact(b, z, 16, |c| c.is_ascii_uppercase() || c.is_ascii_digit()))
            .flatten()
            .filter(|&e| glue.ends_token(b, e, is_alnum))
            .map(|e| (a, e)),
        Rule::AwsSecretContext => None,
        Rule::Google => token(is_key_char)
            .then(|| glue.exact(b, z, 35, is_key_char))
            .flatten()
            .map(|e| (a, e)),
        Rule::GithubClassic => token(is_key_char)
            .then(|| glue.exact(b, z, 36, is_alnum))
            .flatten()
            .filter(|&e| glue.ends_token(b, e, is_key_char))
            .map(|e| (a, e)),
        Rule::GithubPat => token(is_key_char)
            .then(|| at_least(b, z, 50, |c| is_alnum(c) || c == b'_'))
            .flatten()
            .map(|e| (a, e)),
        Rule::Gitlab => token(is_key_char)
            .then(|| at_least(b, z, 20, is_key_char))
            .flatten()
            .map(|e| (a, e)),
        Rule::Slack => token(is_key_char)
            .then(|| at_least(b, z, 10, is_key_char))
            .flatten()
            .map(|e| (a, e)),
        Rule::SlackWebhook => {
            let scheme = [&b"https://"[..], b"http://"]
                .into_iter()
                .find(|s| a >= s.len() && &b[a - s.len()..a] == *s)?;
            let start = a - scheme.len();
            let end = at_least(b, z, 10, |c| is_key_char(c) || c == b'/')?;
            Some((start, end))
        }
        Rule::Twilio => token(is_alnum)
            .then(|| glue.exact(b, z, 32, |c| c.is_ascii_hexdigit()))
            .flatten()
            .map(|e| (a, e)),
        Rule::SendGrid => {
            if !token(is_key_char) {
                return None;
            }
            let dot = exact(b, z, 22, is_key_char)?;
            if b.get(dot) != Some(&b'.') {
                return None;
            }
            glue.exact(b, dot + 1, 43, is_key_char).map(|e| (a, e))
        }
        Rule::Npm => token(is_key_char)
            .then(|| glue.exact(b, z, 36, is_alnum))
            .flatten()
            .map(|e| (a, e)),
        Rule::Pypi => token(is_key_char)
            .then(|| at_least(b, z, 50, is_key_char))
            .flatten()
            .map(|e| (a, e)),
        Rule::Jwt => jwt(b, a, joined),
        Rule::Pem => pem(b, a),
        Rule::UrlCredentials => url_credentials(b, a, z),
    }
}

/// `eyJ<header>.` where the header decodes to a JSON object with `alg`, plus the rest of the
/// token (payload and signature, possibly cut short).
fn jwt(b: &[u8], a: usize, joined: bool) -> Option<(usize, usize)> {
    use base64::Engine as _;
    if !joined && !starts_token(b, a, is_jwt_char) {
        return None;
    }
    let header_end = run(b, a, is_key_char);
    if b.get(header_end) != Some(&b'.') || header_end - a > 2048 {
        return None;
    }
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(
            b[a..header_end]
                .strip_suffix(b"=")
                .unwrap_or(&b[a..header_end]),
        )
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&header).ok()?;
    v.get("alg")?;
    Some((a, run(b, header_end, is_jwt_char)))
}

/// The label of a PEM private key header at `a` (`-----BEGIN <label>PRIVATE KEY-----`) and
/// the index after the header.
pub(super) fn pem_header(b: &[u8], a: usize) -> Option<(&[u8], usize)> {
    let rest = b.get(a + "-----BEGIN ".len()..)?;
    let close = memchr::memmem::find(rest.get(..rest.len().min(80))?, b"-----")?;
    let label = &rest[..close];
    let is_private = label.ends_with(b"PRIVATE KEY")
        && label
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b' ');
    is_private.then(|| (label, a + "-----BEGIN ".len() + close + "-----".len()))
}

/// The end of the `-----END <label>-----` line matching a header, searched from `from`.
pub(super) fn pem_end(b: &[u8], from: usize, label: &[u8]) -> Option<usize> {
    let mut marker = Vec::with_capacity(label.len() + 16);
    marker.extend_from_slice(b"-----END ");
    marker.extend_from_slice(label);
    marker.extend_from_slice(b"-----");
    memchr::memmem::find(&b[from..], &marker).map(|i| from + i + marker.len())
}

fn pem(b: &[u8], a: usize) -> Option<(usize, usize)> {
    let (label, after) = pem_header(b, a)?;
    // Without its END line the block runs to the end of the text: a key cut short is still
    // a key.
    Some((a, pem_end(b, after, label).unwrap_or(b.len())))
}

/// `user:password` between `scheme://` and `@host`.
fn url_credentials(b: &[u8], a: usize, z: usize) -> Option<(usize, usize)> {
    // A scheme right before "://".
    let scheme_start = b[..a]
        .iter()
        .rposition(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'.' | b'-')))
        .map_or(0, |i| i + 1);
    if scheme_start == a || !b[scheme_start].is_ascii_alphabetic() {
        return None;
    }
    let end = z + b[z..].iter().take(512).position(|&c| {
        c == b'@'
            || c == b'/'
            || c == b'?'
            || c == b'#'
            || c.is_ascii_whitespace()
            || matches!(c, b'"' | b'\'' | b'<' | b'>' | b'\\')
    })?;
    if b[end] != b'@' {
        return None;
    }
    let userinfo = &b[z..end];
    let colon = userinfo.iter().position(|&c| c == b':')?;
    (colon > 0 && colon + 1 < userinfo.len()).then_some((z, end))
}

/// An AWS secret key (40 of `[A-Za-z0-9/+]`, both cases) starting within the window after `i`.
fn aws_secret_after(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let end = (i + AWS_SECRET_WINDOW).min(b.len());
    let mut k = i;
    while k < end {
        if is_b64_char(b[k]) && starts_token(b, k, is_b64_char) {
            let e = run(b, k, is_b64_char);
            let t = &b[k..e];
            if t.len() == 40
                && t.iter().any(u8::is_ascii_uppercase)
                && t.iter().any(u8::is_ascii_lowercase)
            {
                return Some((k, e));
            }
            k = e;
        } else {
            k += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key glued to a PEM block: the block is not left behind the key's span.
    #[test]
    fn a_pem_block_glued_to_a_key_is_redacted_with_it() {
        let key = "sk-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789";
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n-----END RSA PRIVATE KEY-----";
        let text = format!("x {key}{pem} y");
        assert_eq!(secrets(&text), vec![format!("{key}{pem}").as_str()]);
        let e = crate::redact::Engine::new();
        let out = e.redact_text(&text, crate::redact::Scan::ALL, &mut Default::default());
        assert_eq!(out.as_deref(), Some("x [REDACTED_SECRET] y"));
    }

    fn secrets(text: &str) -> Vec<&str> {
        let r = Rules::new();
        let mut out = Vec::new();
        r.find(text, &mut out);
        out.iter().map(|&(s, e, _)| &text[s..e]).collect()
    }

    #[test]
    fn published_token_formats_are_found() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n-----END RSA PRIVATE KEY-----";
        for (text, want) in [
            ("key sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh end", "sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh"),
            ("old sk-T3BlbkFJa1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8 x", "sk-T3BlbkFJa1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"),
            ("anthropic sk-ant-api03-Abc123Def456Ghi789Jkl012Mno345Pqr678Stu901Vwx", "sk-ant-api03-Abc123Def456Ghi789Jkl012Mno345Pqr678Stu901Vwx"),
            ("sluice sk-sluice-0a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0uV", "sk-sluice-0a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0uV"),
            ("aws AKIAIOSFODNN7EXAMPLE.", "AKIAIOSFODNN7EXAMPLE"),
            ("sts ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A"),
            ("google AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"),
            ("gh ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R", "ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R"),
            ("pat github_pat_11ABCDEFG0123456789abc_ABCdefGHIjklMNOpqrSTUvwxYZ0123456789abcdefghijABCDEFGHIJKLMNOP", "github_pat_11ABCDEFG0123456789abc_ABCdefGHIjklMNOpqrSTUvwxYZ0123456789abcdefghijABCDEFGHIJKLMNOP"),
            ("gl glpat-xYz123AbC456dEf789gH", "glpat-xYz123AbC456dEf789gH"),
            ("slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
            ("hook https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX done", "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
            ("stripe sk_live_51H8xYzAbCdEfGhIjKlMnOpQr", "sk_live_51H8xYzAbCdEfGhIjKlMnOpQr"),
            ("restricted rk_live_51H8xYzAbCdEfGhIjKlMnOpQr", "rk_live_51H8xYzAbCdEfGhIjKlMnOpQr"),
            ("twilio SK0123456789abcdef0123456789abcdef", "SK0123456789abcdef0123456789abcdef"),
            ("sg SG.abcdefghijklmnopqrstuv.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq", "SG.abcdefghijklmnopqrstuv.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq"),
            ("npm npm_abcdefghijklmnopqrstuvwxyz0123456789", "npm_abcdefghijklmnopqrstuvwxyz0123456789"),
            ("pypi pypi-AgEIcHlwaS5vcmcCJDAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMAACKlsz", "pypi-AgEIcHlwaS5vcmcCJDAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMAACKlsz"),
            (&format!("token {jwt} ok"), jwt),
            (&format!("here:\n{pem}\nthanks"), pem),
            ("db postgres://admin:hunter2@db.internal:5432/app", "admin:hunter2"),
        ] {
            assert_eq!(secrets(text), vec![want], "{text}");
        }
        // An AWS secret key next to its access key id, and after its name.
        let t = "AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        assert_eq!(
            secrets(t),
            vec![
                "AKIAIOSFODNN7EXAMPLE",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
            ]
        );
        let t = "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        assert_eq!(secrets(t), vec!["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"]);
        // A private key without its END line runs to the end.
        let cut = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU";
        assert_eq!(secrets(cut), vec![cut]);
    }

    /// One sample of every rule, with a part of it that must never survive redaction.
    const SAMPLES: &[(&str, &str)] = &[
        ("sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh", "Yz0123456789AbCdEfGh"),
        ("sk-ant-api03-Abc123Def456Ghi789Jkl012Mno345Pqr678Stu901Vwx", "Pqr678Stu901Vwx"),
        ("AKIAIOSFODNN7EXAMPLE", "IOSFODNN7EXAMPLE"),
        ("AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "ISLn_3namBGewQe"),
        ("ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R", "3m4N5o6P7q8R"),
        ("github_pat_11ABCDEFG0123456789abc_ABCdefGHIjklMNOpqrSTUvwxYZ0123456789abcdefghijABCDEFGHIJKLMNOP", "abcdefghijABCDEFGHIJKLMNOP"),
        ("glpat-xYz123AbC456dEf789gH", "AbC456dEf789gH"),
        ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "IjKlMnOpQrStUvWx"),
        ("sk_live_51H8xYzAbCdEfGhIjKlMnOpQr", "AbCdEfGhIjKlMnOpQr"),
        ("SK0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef"),
        ("SG.abcdefghijklmnopqrstuv.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq", "UVWXYZabcdefghijklmnopq"),
        ("npm_abcdefghijklmnopqrstuvwxyz0123456789", "qrstuvwxyz0123456789"),
        ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n-----END RSA PRIVATE KEY-----", "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo"),
    ];

    #[test]
    fn secrets_next_to_each_other_are_all_redacted() {
        let e = crate::redact::Engine::new();
        let mut leaks = Vec::new();
        for (a, ma) in SAMPLES {
            for (b, mb) in SAMPLES {
                for glue in ["", " ", "-", "_", ".", "/", ":", "=", ",", "\n", "\"", "'"] {
                    let text = format!("x {a}{glue}{b} y");
                    let out = e
                        .redact_text(&text, crate::redact::Scan::ALL, &mut Default::default())
                        .unwrap_or_else(|| text.clone());
                    if out.contains(ma) || out.contains(mb) {
                        leaks.push(format!("{glue:?}: {text:?} -> {out:?}"));
                    }
                }
            }
        }
        assert!(
            leaks.is_empty(),
            "{} leaks:\n{}",
            leaks.len(),
            leaks.join("\n")
        );
    }

    #[test]
    fn a_key_after_a_separator_is_found() {
        let e = crate::redact::Engine::new();
        for (key, marker) in SAMPLES {
            for before in [
                "jane.doe@example.com",
                "4111111111111111",
                "123-45-6789",
                "id",
                "x",
            ] {
                for sep in ["-", "_", "."] {
                    let text = format!("a {before}{sep}{key} z");
                    let out = e
                        .redact_text(&text, crate::redact::Scan::ALL, &mut Default::default())
                        .unwrap_or_else(|| text.clone());
                    assert!(!out.contains(marker), "{text:?} -> {out:?}");
                    assert!(
                        out.contains("[REDACTED_SECRET]") || out.contains("[REDACTED_EMAIL]"),
                        "{text:?} -> {out:?}"
                    );
                }
            }
        }
    }

    /// An email whose domain runs into a key (`.sk` is a top-level domain): the overlapping
    /// matches are replaced as one, nothing of the key is left.
    #[test]
    fn a_key_overlapping_an_email_is_redacted_with_it() {
        let e = crate::redact::Engine::new();
        let text =
            "mail jane.doe@example.com.sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh now";
        let out = e.redact_text(text, crate::redact::Scan::ALL, &mut Default::default());
        assert_eq!(out.as_deref(), Some("mail [REDACTED_EMAIL] now"));
    }

    #[test]
    fn hard_negatives_survive() {
        let sha = "git 3f786850e387550fdab836ed7e6dc881de23001b and 9fceb02d0ae598e95dc970b74767f19372d61af8";
        let image = format!(
            "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg{}AKIAIOSFODNN7EXAMPLEeyJhbGciOiJIUzI1NiJ9sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789",
            "x".repeat(10)
        );
        for text in [
            "I use sk-learn for machine learning",
            "sk-learn-is-a-python-library-for-machine-learning-in-python",
            "id sk-550e8400-e29b-41d4-a716-446655440000-0123456789",
            "uuid 550e8400-e29b-41d4-a716-446655440000",
            sha,
            &image,
            "after AKIAIOSFODNN7EXAMPLE the commit 3f786850e387550fdab836ed7e6dc881de23001b",
            "AKIA is an acronym; ASIA is a continent; ASIANS; SKIING",
            "see https://example.com:8080/path?q=1 and mailto:bob@example.com",
            "ftp://anonymous@ftp.example.com/pub",
            "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUY\n-----END CERTIFICATE-----",
            "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYI\n-----END PUBLIC KEY-----",
            "eyJ is how base64 of {\" starts; eyJub3QiOiJhIGp3dCJ9.x lacks alg",
            "SKU SK-1234 TASK SG.1 xoxo-gossip npm_install",
            "[REDACTED_SECRET] stays as it is",
        ] {
            let found = secrets(text);
            // The AWS id in the mixed line is real; only it may be found there.
            let allowed: &[&str] = if text.starts_with("after AKIA") {
                &["AKIAIOSFODNN7EXAMPLE"]
            } else {
                &[]
            };
            assert_eq!(found, allowed, "{text}");
        }
    }
}
