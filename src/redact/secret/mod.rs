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

mod assigned;
mod runs;
mod tokens;
use assigned::*;
use runs::*;
use tokens::*;

pub(super) use assigned::{checksum_holds, looks_assigned_secret, placeholder, templated};
pub(super) use tokens::{pem_end, pem_header};

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
    /// A token of [`PREFIXED`], by index.
    Prefixed(u8),
    /// A key with a signature at a fixed place ([`SIGNED`], by index).
    Signed(u8),
    /// A Microsoft Entra client secret, anchored on its `Q~`.
    EntraSecret,
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

/// `[0-9a-f]`
fn is_hex_lower(c: u8) -> bool {
    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
}

/// `[A-Za-z0-9_]`
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// `[A-Za-z0-9_=.-]`
fn is_word_eq_dot_dash(c: u8) -> bool {
    is_key_char(c) || c == b'=' || c == b'.'
}

/// `[A-Za-z0-9+/=]`: base64 with its padding.
fn is_b64_padded(c: u8) -> bool {
    is_b64_char(c) || c == b'='
}

/// `[A-Za-z0-9_~.-]`: URL-unreserved characters (Entra client secrets).
fn is_unreserved(c: u8) -> bool {
    is_key_char(c) || c == b'~' || c == b'.'
}

fn is_upper_digit(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}

fn is_hex_dash(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b'-'
}

fn is_alnum_dot(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.'
}

/// A token made of a literal prefix and a body of one character class, `min..=max` long, as
/// the issuer documents it (sources: gitleaks' default rules, config/gitleaks.toml, and
/// TruffleHog's detectors, named per line). The body is checked for placeholders.
pub(super) struct Prefixed {
    pub prefix: &'static str,
    pub class: fn(u8) -> bool,
    pub min: usize,
    pub max: usize,
}

const fn px(prefix: &'static str, class: fn(u8) -> bool, min: usize, max: usize) -> Prefixed {
    Prefixed {
        prefix,
        class,
        min,
        max,
    }
}

pub(super) const PREFIXED: &[Prefixed] = &[
    px("hf_", is_alnum, 34, 34),         // Hugging Face access token
    px("api_org_", is_alnum, 34, 34),    // Hugging Face organization token
    px("dapi", is_hex_lower, 32, 32),    // Databricks (an optional "-N" follows)
    px("pplx-", is_alnum, 48, 48),       // Perplexity
    px("gsk_", is_alnum, 52, 52),        // Groq (TruffleHog)
    px("xai-", is_word, 80, 80),         // xAI (TruffleHog)
    px("r8_", is_key_char, 37, 37),      // Replicate (TruffleHog)
    px("dop_v1_", is_hex_lower, 64, 64), // DigitalOcean personal access token
    px("doo_v1_", is_hex_lower, 64, 64), // DigitalOcean OAuth token
    px("dor_v1_", is_hex_lower, 64, 64), // DigitalOcean refresh token
    px("shpat_", |c| c.is_ascii_hexdigit(), 32, 32), // Shopify access token
    px("shpss_", |c| c.is_ascii_hexdigit(), 32, 32), // Shopify shared secret
    px("shpca_", |c| c.is_ascii_hexdigit(), 32, 32), // Shopify custom app token
    px("shppa_", |c| c.is_ascii_hexdigit(), 32, 32), // Shopify private app token
    px("dp.pt.", is_alnum, 43, 43),      // Doppler
    px("lin_api_", is_alnum, 40, 40),    // Linear
    px("PMAK-", is_hex_dash, 59, 59),    // Postman (24 hex, '-', 34 hex)
    px("pul-", is_hex_lower, 40, 40),    // Pulumi
    px("glc_", is_b64_padded, 32, 403),  // Grafana Cloud
    px("glsa_", is_word, 41, 41),        // Grafana service account
    px("pscale_pw_", is_word_eq_dot_dash, 32, 64), // PlanetScale password
    px("pscale_tkn_", is_word_eq_dot_dash, 32, 64), // PlanetScale API token
    px("pscale_oauth_", is_word_eq_dot_dash, 32, 64), // PlanetScale OAuth token
    px("AGE-SECRET-KEY-1", is_upper_digit, 58, 58), // age secret key
    px("hvs.", is_key_char, 90, 120),    // HashiCorp Vault service token
    px("hvb.", is_key_char, 138, 300),   // HashiCorp Vault batch token
    px("sntryu_", is_hex_lower, 64, 64), // Sentry user token
    px("HRKU-AA", is_key_char, 58, 58),  // Heroku API key (v2)
    px("rubygems_", is_hex_lower, 48, 48), // RubyGems
    px("ATATT3", is_url_b64_padded, 186, 186), // Atlassian API token
    px("gldt-", is_key_char, 20, 512),   // GitLab deploy token
    px("glrt-", is_key_char, 20, 512),   // GitLab runner token
    px("glptt-", is_hex_lower, 40, 40),  // GitLab pipeline trigger token
    px("glft-", is_key_char, 20, 512),   // GitLab feed token
    px("glimt-", is_key_char, 25, 25),   // GitLab incoming mail token
    px("glagent-", is_key_char, 50, 512), // GitLab agent token
    px("gloas-", is_key_char, 64, 64),   // GitLab OAuth app secret
    px("glsoat-", is_key_char, 20, 512), // GitLab SCIM token
    px("glffct-", is_key_char, 20, 512), // GitLab feature flag client token
    px("glcbt-", is_key_char, 22, 512),  // GitLab CI/CD job token
    px("NRAK-", is_alnum, 27, 27),       // New Relic user API key
    px("sq0atp-", is_key_char, 22, 60),  // Square access token
    px("sq0csp-", is_key_char, 43, 60),  // Square OAuth secret
    px("EZAK", is_alnum, 54, 54),        // EasyPost
    px("EZTK", is_alnum, 54, 54),        // EasyPost test
    px("dt0c01.", is_alnum_dot, 89, 89), // Dynatrace (24 . 64)
    px("ops_eyJ", is_b64_padded, 250, 8192), // 1Password service account
    px("ntn_", is_alnum, 46, 46),        // Notion
    px("ABSK", is_b64_padded, 109, 272), // AWS Bedrock API key
    px("whsec_", is_b64_padded, 32, 88), // Stripe webhook signing secret
];

/// A key that carries its issuer's signature at a fixed offset (Microsoft's identifiable
/// keys, microsoft/security-utilities): `len` characters of `class` with `sig` at `at`,
/// base64 padding (`=`, `==`) at the end included in `len`.
pub(super) struct Signed {
    pub sig: &'static str,
    pub at: usize,
    pub len: usize,
    pub class: fn(u8) -> bool,
}

const fn sg(sig: &'static str, at: usize, len: usize, class: fn(u8) -> bool) -> Signed {
    Signed {
        sig,
        at,
        len,
        class,
    }
}

fn is_url_b64_padded(c: u8) -> bool {
    is_key_char(c) || c == b'='
}

pub(super) const SIGNED: &[Signed] = &[
    sg("+ASt", 76, 88, is_b64_char), // Azure Storage account key
    sg("ACDb", 76, 88, is_b64_char), // Azure Cosmos DB
    sg("+ABa", 76, 88, is_b64_char), // Azure Batch
    sg("APIM", 76, 88, is_b64_char), // Azure API Management
    sg("+AMC", 76, 88, is_b64_char), // Azure Machine Learning
    sg("AzCa", 33, 44, is_b64_char), // Azure Cache for Redis
    sg("AZEG", 33, 44, is_b64_char), // Azure Event Grid
    sg("AIoT", 33, 44, is_b64_char), // Azure IoT Hub
    sg("+ASb", 33, 44, is_b64_char), // Azure Service Bus
    sg("+AEh", 33, 44, is_b64_char), // Azure Event Hubs
    sg("+ARm", 33, 44, is_b64_char), // Azure Relay
    sg("AzFu", 44, 56, is_key_char), // Azure Functions
    sg("AzSe", 42, 52, is_alnum),    // Azure AI Search
    sg("+ACR", 42, 52, is_b64_char), // Azure Container Registry
    sg("JQQJ9", 52, 84, is_alnum),   // Azure AI services / Azure OpenAI (and 88 with "==")
];

/// How far after an AWS access key id (or `secret_access_key`) its secret key may be.
const AWS_SECRET_WINDOW: usize = 128;

/// The compiled anchors. Build once and share.
pub struct Rules {
    /// [`ANCHORS`], searched in the whole text.
    anchors: AhoCorasick,
    /// The rule of each anchor pattern.
    rules: Vec<Rule>,
    /// The anchors of tokens at least [`RUN_MIN`] characters long ([`PREFIXED`], [`SIGNED`],
    /// Entra secrets), searched only inside runs of token characters that long (see
    /// [`Rules::runs`]): kept out of `anchors`, whose search of every byte stays fast.
    long: AhoCorasick,
    long_rules: Vec<Rule>,
    /// Names that make the value assigned to them a secret (see [`assigned`]), searched only
    /// before an `=` or `:`.
    names: AhoCorasick,
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

/// `[A-Za-z0-9_.-]`: a JWT's characters (three base64url parts and their dots), and a
/// name's (`db.password`, `DB_PASSWORD`).
fn is_key_or_dot(c: u8) -> bool {
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
        let rules = ANCHORS.iter().map(|(_, r)| *r).collect();
        let mut patterns: Vec<&str> = Vec::new();
        let mut long_rules = Vec::new();
        for (i, p) in PREFIXED.iter().enumerate() {
            patterns.push(p.prefix);
            long_rules.push(Rule::Prefixed(i as u8));
        }
        for (i, p) in SIGNED.iter().enumerate() {
            patterns.push(p.sig);
            long_rules.push(Rule::Signed(i as u8));
        }
        patterns.push("Q~");
        long_rules.push(Rule::EntraSecret);
        let long = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .start_kind(aho_corasick::StartKind::Both)
            .build(&patterns)
            .expect("the built-in secret prefixes compile (checked by unit tests)");
        let names = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .ascii_case_insensitive(true)
            .build(SECRET_NAMES)
            .expect("the built-in secret names compile (checked by unit tests)");
        Rules {
            anchors,
            rules,
            long,
            long_rules,
            names,
        }
    }

    /// The secrets in `text`, appended in order to `out` as `(start, end, Entity::Secret)`; `true` when any anchor was seen (found or not, its
    /// rule read the text around it).
    pub fn find(&self, text: &str, out: &mut Vec<(usize, usize, Entity)>) -> bool {
        self.find_at(text, out, true)
    }

    /// Whether `name` (a JSON member's) holds a secret's name, so its value is read after it.
    /// The name is read without case, spaces and separators (`Secret access key`,
    /// `client-secret`), and must end in a secret word (see [`secret_name`]).
    pub fn names_a_secret(&self, name: &str) -> bool {
        if name.len() > 64 {
            return false;
        }
        let mut buf = [0u8; 64];
        let mut n = 0;
        for c in name.bytes().filter(u8::is_ascii_alphanumeric) {
            buf[n] = c.to_ascii_lowercase();
            n += 1;
        }
        let norm = &buf[..n];
        self.names
            .find_iter(norm)
            .last()
            .is_some_and(|m| secret_name(norm, 0, m.end(), norm.len()))
    }

    /// [`Rules::find`]; `decode`: also look inside encoded runs (one level).
    fn find_at(&self, text: &str, out: &mut Vec<(usize, usize, Entity)>, decode: bool) -> bool {
        let b = text.as_bytes();
        // What callers found before (PII) is not this search's.
        let first = out.len();
        let mut skip_to = 0;
        // The secret that ends at `skip_to`, by its index in `out`.
        let mut last = 0;
        let mut seen = false;
        // A fixed-length token may end where any secret's anchor starts (`Glue::next`).
        let next = |i: usize| {
            anchored(&self.anchors, b, i).is_some() || anchored(&self.long, b, i).is_some()
        };
        for m in self.anchors.find_iter(b) {
            seen = true;
            let rule = self.rules[m.pattern().as_usize()];
            let glue = Glue {
                // Right after the previous secret, or after one separator following it: the
                // character before is that secret's, not a word this anchor is part of.
                after_secret: skip_to > 0
                    && (m.start() <= skip_to || (m.start() == skip_to + 1 && is_glue(b[skip_to]))),
                next: &next,
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
        let before = out.len();
        // Where the secrets found so far end: a long token right after one starts a token.
        let ends: Vec<usize> = out[first..].iter().map(|&(_, e, _)| e).collect();
        seen |= self.runs(b, out, decode, &next, &ends);
        // And an anchored token right after a long one (`hf_...ghp_...`): found again with the
        // long token as the secret before it.
        for k in before..out.len() {
            let e = out[k].1;
            for at in [e, e + 1] {
                if at > e && !b.get(e).copied().is_some_and(is_glue) {
                    continue;
                }
                let Some(m) = anchored(&self.anchors, b, at) else {
                    continue;
                };
                let glue = Glue {
                    after_secret: true,
                    next: &next,
                };
                let rule = self.rules[m.pattern().as_usize()];
                if let Some((x, y)) = matcher(rule, b, m.start(), m.end(), &glue) {
                    out.push((x, y, Entity::Secret));
                }
            }
        }
        // Values assigned to a secret's name: `password = ...`, `"client_secret": "..."`,
        // `AccountKey=...;`, `Authorization: Basic ...`.
        seen |= self.assignments(b, out);
        if out.len() > before {
            // A token rule (an AWS secret key after its name) may have found the same value.
            out.sort_unstable_by_key(|&(s, e, _)| (s, std::cmp::Reverse(e)));
            out.dedup_by_key(|&mut (s, e, _)| (s, e));
        }
        seen
    }

    /// Runs of at least [`RUN_MIN`] token characters (`[A-Za-z0-9_.~+/=-]`), found by looking
    /// at one 8-byte block in two only, so text without long runs costs a fraction of a pass. In each: the tokens of [`PREFIXED`],
    /// [`SIGNED`] and Entra secrets (every one is at least that long), and, with `decode`, the
    /// base64 runs that decode to a secret ([`Rules::encoded`]). `true` when a run was read.
    fn runs(
        &self,
        b: &[u8],
        out: &mut Vec<(usize, usize, Entity)>,
        decode: bool,
        next: &dyn Fn(usize) -> bool,
        ends: &[usize],
    ) -> bool {
        let mut seen = false;
        for_each_run(b, |s, e| {
            seen = true;
            if e - s <= RUN_SCAN_MAX {
                let mut last_end = 0;
                for m in self.long.find_iter(&b[s..e]) {
                    let a = s + m.start();
                    // Right after a secret (found before, or just now in this run), or one
                    // separator after it.
                    let after = |x: usize| x > 0 && (ends.contains(&x) || last_end == x);
                    let glue = Glue {
                        after_secret: after(a) || (a > 0 && is_glue(b[a - 1]) && after(a - 1)),
                        next,
                    };
                    let rule = self.long_rules[m.pattern().as_usize()];
                    if let Some((x, y)) = matcher(rule, b, a, s + m.end(), &glue) {
                        out.push((x, y, Entity::Secret));
                        last_end = y;
                    }
                }
            }
            if decode {
                self.encoded(b, s, e, out)
            } else {
                e
            }
        });
        seen
    }

    /// The base64 and base64url runs of the token run `b[s..e]` that decode to text holding a
    /// secret (a key in a Kubernetes Secret, a `.env` file or a private key encoded whole, a
    /// `.dockerconfigjson`): each such run, padding included, is the secret. A run wrapped
    /// over lines of one length (`base64` wraps at 76 columns) is read as one, its
    /// indentation aside. Decoded once: what the decoded text holds is searched without
    /// decoding again. Runs longer than [`ENCODED_MAX`] (images, archives) are not decoded.
    /// Returns where the last run read ends (past `e` when it was wrapped onto more lines).
    fn encoded(
        &self,
        b: &[u8],
        s: usize,
        e: usize,
        out: &mut Vec<(usize, usize, Entity)>,
    ) -> usize {
        let mut end = e;
        let mut k = s;
        while k < e {
            if !is_encoded_char(b[k]) {
                k += 1;
                continue;
            }
            let start = k;
            let stop = k + b[k..e].iter().take_while(|&&c| is_encoded_char(c)).count();
            let pad = |at: usize| at + b[at..].iter().take(2).take_while(|&&c| c == b'=').count();
            // The block: this line and the lines of the same width after it (each after a line
            // end and indentation), the last possibly shorter or padded.
            let width = stop - start;
            let mut lines = vec![(start, stop)];
            if width >= 48 && pad(stop) == stop {
                let mut at = stop;
                let mut total = width;
                loop {
                    let nl = match (b.get(at), b.get(at + 1)) {
                        (Some(b'\n'), _) => 1,
                        (Some(b'\r'), Some(b'\n')) => 2,
                        _ => break,
                    };
                    let line = at
                        + nl
                        + b[at + nl..]
                            .iter()
                            .take(16)
                            .take_while(|&&c| c == b' ' || c == b'\t')
                            .count();
                    let len = b[line..]
                        .iter()
                        .take_while(|&&c| is_encoded_char(c))
                        .count();
                    if len == 0 || len > width || total + len > ENCODED_MAX {
                        break;
                    }
                    lines.push((line, line + len));
                    total += len;
                    at = line + len;
                    if len < width || pad(at) > at {
                        break;
                    }
                }
            }
            let holds_secret = |lines: &[(usize, usize)]| {
                let run: Vec<u8> = lines
                    .iter()
                    .flat_map(|&(x, y)| b[x..y].iter().copied())
                    .collect();
                (ENCODED_MIN..=ENCODED_MAX).contains(&run.len())
                    && decode_text(&run).is_some_and(|text| {
                        let mut inner = Vec::new();
                        self.find_at(&text, &mut inner, false);
                        !inner.is_empty()
                    })
            };
            // The whole block; without a last line shorter than the others and unpadded (a
            // word on the next line, not the block's end); the first line alone. Each block is
            // decided once, then skipped whole.
            let last = lines[lines.len() - 1];
            let mut tries: Vec<&[(usize, usize)]> = vec![&lines[..]];
            if lines.len() > 2 && last.1 - last.0 < width && pad(last.1) == last.1 {
                tries.push(&lines[..lines.len() - 1]);
            }
            if lines.len() > 1 {
                tries.push(&lines[..1]);
            }
            if let Some(found) = tries.into_iter().find(|t| holds_secret(t)) {
                let y = pad(found[found.len() - 1].1);
                out.push((start, y, Entity::Secret));
            }
            let block_end = pad(last.1);
            end = end.max(block_end);
            k = block_end.max(k + 1);
        }
        end
    }

    /// Whether `b` ends inside a value assigned to a secret's name that may still go on (a
    /// stream must not cut there: the rest of the value would be judged without its start).
    pub fn open_assignment(&self, b: &[u8]) -> bool {
        let from = b.len().saturating_sub(640);
        for o in memchr::memrchr2_iter(b':', b'=', &b[from..]).take(8) {
            let o = from + o;
            let Some((start, z)) = self.name_before(b, o) else {
                continue;
            };
            let rest = b[z..]
                .iter()
                .take(33)
                .take_while(|&&c| is_key_or_dot(c))
                .count();
            if rest > 32 || !secret_name(b, start, z, z + rest) {
                continue;
            }
            let Some((begin, quote, _)) = value_start(b, z + rest) else {
                continue;
            };
            let tail = b.get(begin..).unwrap_or_default();
            return !tail.is_empty()
                && tail.len() <= 512
                && !tail.iter().any(|&c| ends_value(c, quote));
        }
        false
    }

    /// The name before the operator at `o` (closing quotes and spaces between), and the last
    /// secret word in it: `(name start, word end)`.
    fn name_before(&self, b: &[u8], o: usize) -> Option<(usize, usize)> {
        let mut k = o;
        let mut skipped = 0;
        while k > 0 && skipped < 6 && matches!(b[k - 1], b'"' | b'\'' | b'`' | b' ' | b'\t') {
            k -= 1;
            skipped += 1;
        }
        let start = k - b[k.saturating_sub(96)..k]
            .iter()
            .rev()
            .take_while(|&&c| is_key_or_dot(c))
            .count();
        let m = self.names.find_iter(&b[start..k]).last()?;
        Some((start, start + m.end()))
    }

    /// Values assigned to a secret's name: at each `=` and `:`, the name before it (see
    /// [`assigned`]). Text without them costs one `memchr` pass.
    fn assignments(&self, b: &[u8], out: &mut Vec<(usize, usize, Entity)>) -> bool {
        let mut seen = false;
        let mut last = 0;
        // Short texts (most JSON strings): a plain loop beats the SIMD setup.
        if b.len() < 64 && !b.iter().any(|&c| c == b':' || c == b'=') {
            return false;
        }
        for o in memchr::memchr2_iter(b':', b'=', b) {
            if o < last {
                // Inside the previous value.
                continue;
            }
            // The last secret word in the name before it: what follows it is the name's end.
            let Some((name_start, z)) = self.name_before(b, o) else {
                continue;
            };
            seen = true;
            if let Some((s, e)) = assigned(b, name_start, z) {
                if e > last {
                    out.push((s, e, Entity::Secret));
                    last = e;
                }
            }
        }
        seen
    }
}

/// The anchor of `ac` that starts at `b[i]`, if one does.
fn anchored(ac: &AhoCorasick, b: &[u8], i: usize) -> Option<aho_corasick::Match> {
    if i >= b.len() {
        return None;
    }
    ac.find(
        aho_corasick::Input::new(b)
            .range(i..)
            .anchored(aho_corasick::Anchored::Yes),
    )
}

/// Whether `span` starts with a token rule's anchor (a key found by its prefix), rather than
/// being an encoded run or an assigned value.
pub(super) fn starts_with_anchor(span: &[u8]) -> bool {
    ANCHORS.iter().any(|(a, _)| span.starts_with(a.as_bytes()))
        || PREFIXED
            .iter()
            .any(|p| span.starts_with(p.prefix.as_bytes()))
}

#[cfg(test)]
mod tests;
