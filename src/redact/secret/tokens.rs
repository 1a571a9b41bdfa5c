//! The matchers behind the anchors: each token format's characters, length and validator
//! (JWT header, PEM block, URL credentials, AWS secret keys near their key id).

use super::*;

/// `end` moved back over the full stops that end `b[from..end]`.
pub(super) fn trim_dots(b: &[u8], from: usize, mut end: usize) -> usize {
    while end > from && b[end - 1] == b'.' {
        end -= 1;
    }
    end
}

/// A separator that can join two secrets into one run of key characters.
pub(super) fn is_glue(c: u8) -> bool {
    matches!(c, b'-' | b'_' | b'.')
}

/// What lets a secret's boundaries be crossed: secrets glued to each other
/// (`<key>-<key>`, `<key><key>`) are each found, instead of each refused because the other
/// runs on from it.
pub(super) struct Glue<'a> {
    /// The anchor is inside, right after, or one separator after the previous secret, so it
    /// starts a token even though a key character precedes it.
    pub(super) after_secret: bool,
    /// Whether an anchor starts at an index.
    pub(super) next: &'a dyn Fn(usize) -> bool,
}

impl Glue<'_> {
    /// A token of a fixed length may end at `e` though the run goes on: another secret's
    /// anchor starts there, or right after one separator.
    pub(super) fn ends_at(&self, b: &[u8], e: usize) -> bool {
        (self.next)(e) || (b.get(e).copied().is_some_and(is_glue) && (self.next)(e + 1))
    }

    /// [`exact`], or the first `len` characters of a longer run when another secret follows.
    pub(super) fn exact(
        &self,
        b: &[u8],
        i: usize,
        len: usize,
        class: fn(u8) -> bool,
    ) -> Option<usize> {
        let end = run(b, i, class);
        (end - i == len || (end - i > len && self.ends_at(b, i + len))).then_some(i + len)
    }

    /// Nothing of `class` right after `e`, or another secret starts there.
    pub(super) fn ends_token(&self, b: &[u8], e: usize, class: fn(u8) -> bool) -> bool {
        !b.get(e).copied().is_some_and(class) || self.ends_at(b, e)
    }
}

/// Check the token at an anchor `b[a..z]`: its span, if it is a secret (not an issuer's
/// documented example, not a placeholder; a GitHub or npm token whose checksum holds is a
/// key whatever it looks like).
pub(super) fn matcher(
    rule: Rule,
    b: &[u8],
    a: usize,
    z: usize,
    glue: &Glue,
) -> Option<(usize, usize)> {
    let (s, e) = token_at(rule, b, a, z, glue)?;
    match rule {
        // Their own placeholder checks.
        Rule::Pem | Rule::Jwt | Rule::UrlCredentials => {
            let example = DOCUMENTED_EXAMPLES.iter().any(|x| x.as_bytes() == &b[s..e]);
            (!example).then_some((s, e))
        }
        Rule::GithubClassic | Rule::Npm if checksum_holds(&b[z..e]) => Some((s, e)),
        Rule::AwsId if b[s..e].ends_with(b"EXAMPLE") => None,
        Rule::Signed(_) | Rule::EntraSecret => (!not_a_key(b, s, 0, e)).then_some((s, e)),
        _ => (!not_a_key(b, s, z.saturating_sub(s).min(e - s), e)).then_some((s, e)),
    }
}

/// The token an anchor `b[a..z]` leads to, by its rule's shape alone.
pub(super) fn token_at(
    rule: Rule,
    b: &[u8],
    a: usize,
    z: usize,
    glue: &Glue,
) -> Option<(usize, usize)> {
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
        Rule::Prefixed(i) => {
            let spec = &PREFIXED[i as usize];
            if !token(is_key_char) {
                return None;
            }
            // A token never ends in '.': a sentence's full stop is not part of it.
            let end = trim_dots(b, z, run(b, z, spec.class));
            let n = end - z;
            let mut e = if n > spec.max && glue.ends_at(b, z + spec.max) {
                z + spec.max
            } else if (spec.min..=spec.max).contains(&n) {
                end
            } else {
                return None;
            };
            // Databricks tokens may end in `-N`.
            if spec.prefix == "dapi"
                && b.get(e) == Some(&b'-')
                && b.get(e + 1).is_some_and(u8::is_ascii_digit)
            {
                e += 2;
            }
            glue.ends_token(b, e, is_key_char).then_some((a, e))
        }
        Rule::Signed(i) => {
            let spec = &SIGNED[i as usize];
            let start = a.checked_sub(spec.at)?;
            if !b[start..a].iter().all(|&c| (spec.class)(c)) || !starts_token(b, start, spec.class)
            {
                return None;
            }
            // Base64 padding only at the end (an `=` before the key is an assignment's).
            let end = run(b, a, spec.class);
            let end = end + b[end..].iter().take(2).take_while(|&&c| c == b'=').count();
            if b.get(end)
                .copied()
                .is_some_and(|c| (spec.class)(c) || c == b'=')
            {
                return None;
            }
            // Azure AI services keys also come in an 88-character form ending in `==`.
            let lens: &[usize] = if spec.sig == "JQQJ9" {
                &[84, 88]
            } else {
                &[spec.len]
            };
            lens.contains(&(end - start)).then_some((start, end))
        }
        Rule::EntraSecret => {
            // `[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34}` (gitleaks' azure-ad-client-secret;
            // Microsoft's own: 37 characters after `7Q~`, 40 after `8Q~`).
            let start = a.checked_sub(4)?;
            if !b[a - 1].is_ascii_digit()
                || !b[start..a - 1].iter().all(|&c| is_unreserved(c))
                || !starts_token(b, start, is_unreserved)
            {
                return None;
            }
            let end = trim_dots(b, z, run(b, z, is_unreserved));
            (37..=40).contains(&(end - start)).then_some((start, end))
        }
    }
}

/// `eyJ<header>.` where the header decodes to a JSON object with `alg`, plus the rest of the
/// token (payload and signature, possibly cut short).
pub(super) fn jwt(b: &[u8], a: usize, joined: bool) -> Option<(usize, usize)> {
    use base64::Engine as _;
    if !joined && !starts_token(b, a, is_key_or_dot) {
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
    Some((a, run(b, header_end, is_key_or_dot)))
}

/// The label of a PEM private key header at `a` (`-----BEGIN <label>PRIVATE KEY-----`) and
/// the index after the header.
pub(in crate::redact) fn pem_header(b: &[u8], a: usize) -> Option<(&[u8], usize)> {
    let rest = b.get(a + "-----BEGIN ".len()..)?;
    let close = finder!(b"-----").find(rest.get(..rest.len().min(80))?)?;
    let label = &rest[..close];
    let is_private = label.ends_with(b"PRIVATE KEY")
        && label
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b' ');
    is_private.then(|| (label, a + "-----BEGIN ".len() + close + "-----".len()))
}

/// The end of the `-----END <label>-----` line matching a header, searched from `from`.
pub(in crate::redact) fn pem_end(b: &[u8], from: usize, label: &[u8]) -> Option<usize> {
    let mut marker = Vec::with_capacity(label.len() + 16);
    marker.extend_from_slice(b"-----END ");
    marker.extend_from_slice(label);
    marker.extend_from_slice(b"-----");
    memchr::memmem::find(&b[from..], &marker).map(|i| from + i + marker.len())
}

pub(super) fn pem(b: &[u8], a: usize) -> Option<(usize, usize)> {
    let (label, after) = pem_header(b, a)?;
    // Without its END line the block runs to the end of the text: a key cut short is still
    // a key.
    Some((a, pem_end(b, after, label).unwrap_or(b.len())))
}

/// `user:password` between `scheme://` and `@host`: everything up to the last `@` of the
/// authority, whatever the password's characters (`p@ss`, `%40`, `~!*`); the user may be
/// empty (`redis://:password@host`). A template in place of the password (`${DB_PASS}`,
/// `<password>`) is no secret.
pub(super) fn url_credentials(b: &[u8], a: usize, z: usize) -> Option<(usize, usize)> {
    // A scheme right before "://".
    let scheme_start = b[..a]
        .iter()
        .rposition(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'.' | b'-')))
        .map_or(0, |i| i + 1);
    if scheme_start == a || !b[scheme_start].is_ascii_alphabetic() {
        return None;
    }
    // The URL's end, and its authority's (the first `/`, `?` or `#`).
    let stop = |strict: bool| {
        let k = b[z..].iter().take(512).position(|&c| {
            c.is_ascii_whitespace()
                || matches!(c, b'"' | b'\'' | b'<' | b'>' | b'\\')
                || (strict && matches!(c, b'/' | b'?' | b'#'))
        });
        k.map_or(b.len().min(z + 512), |k| z + k)
    };
    let end = match b[z..stop(true)].iter().rposition(|&c| c == b'@') {
        Some(k) => z + k,
        None => {
            // A password holding `/`, `?` or `#` unescaped: the URL's last `@`, when what is
            // before it is `user:password` with a plain user.
            let k = z + b[z..stop(false)].iter().rposition(|&c| c == b'@')?;
            let colon = b[z..k].iter().position(|&c| c == b':')?;
            if b[z..z + colon]
                .iter()
                .any(|c| matches!(c, b'/' | b'?' | b'#'))
            {
                return None;
            }
            // `host:3000/@vite/client`, `127.0.0.1:8000/?email=a@b.co`: a port, not a password.
            let after = &b[z + colon + 1..k];
            let digits = after.iter().take_while(|c| c.is_ascii_digit()).count();
            if (1..=5).contains(&digits)
                && after
                    .get(digits)
                    .is_none_or(|c| matches!(c, b'/' | b'?' | b'#'))
            {
                return None;
            }
            k
        }
    };
    let userinfo = &b[z..end];
    let colon = userinfo.iter().position(|&c| c == b':')?;
    let password = &userinfo[colon + 1..];
    (!password.is_empty() && !templated(password)).then_some((z, end))
}

/// An AWS secret key (40 of `[A-Za-z0-9/+]`, both cases) starting within the window after `i`.
pub(super) fn aws_secret_after(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let end = (i + AWS_SECRET_WINDOW).min(b.len());
    let mut k = i;
    while k < end {
        if is_b64_char(b[k]) && starts_token(b, k, is_b64_char) {
            let e = run(b, k, is_b64_char);
            let t = &b[k..e];
            if t.len() == 40
                && t.iter().any(u8::is_ascii_uppercase)
                && t.iter().any(u8::is_ascii_lowercase)
                && !t.ends_with(b"EXAMPLEKEY")
                && !placeholder(t)
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
