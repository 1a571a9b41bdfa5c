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

    /// The secrets in `text`, appended to `out` as `(start, end, Entity::Secret)`.
    /// The secrets in `text`, in order; `true` when any anchor was seen (found or not, its
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

/// The shortest run of token characters read for [`PREFIXED`], [`SIGNED`] and Entra tokens
/// and encoded secrets: the shortest of them (`gldt-` and 20) is longer.
const RUN_MIN: usize = 24;

/// Runs longer than this are not searched for [`PREFIXED`] and [`SIGNED`] anchors (a key
/// glued inside 64 KiB of base64 is not one a person wrote).
const RUN_SCAN_MAX: usize = 64 * 1024;

/// `[A-Za-z0-9_.~+/=-]`: the characters of every token [`Rules::runs`] reads.
fn is_run_char(c: u8) -> bool {
    RUN_CHARS[c as usize]
}

static RUN_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(b, b'_' | b'-' | b'.' | b'~' | b'+' | b'/' | b'=');
        c += 1;
    }
    t
};

/// Call `f` on every maximal run of at least [`RUN_MIN`] token characters, in order; `f`
/// returns where the search goes on (the run's end, or past it).
///
/// Every such run holds a whole 8-byte block starting at a multiple of 16 (its first 17
/// starts include one, and 8 more fit): only those blocks are looked at, and one holding a
/// space, a control byte or a non-ASCII byte (prose: nearly every block) is passed over with
/// one word operation.
fn for_each_run(b: &[u8], mut f: impl FnMut(usize, usize) -> usize) {
    const L: u64 = 0x0101_0101_0101_0101;
    const H: u64 = 0x8080_8080_8080_8080;
    let mut blk = 0;
    let mut last_end = 0;
    // Exactly when a byte is below 0x21 (the subtraction borrows) or above 0x7F.
    let low_or_high = |x: u64| (x.wrapping_sub(L * 0x21) | x) & H != 0;
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    while blk + 8 <= b.len() {
        // Two blocks at a time while both can be passed over.
        if blk + 24 <= b.len() && low_or_high(word(blk)) && low_or_high(word(blk + 16)) {
            blk += 32;
            continue;
        }
        if blk < last_end
            || low_or_high(word(blk))
            || !b[blk..blk + 8].iter().all(|&c| is_run_char(c))
        {
            blk += 16;
            continue;
        }
        let mut s = blk;
        while s > last_end && is_run_char(b[s - 1]) {
            s -= 1;
        }
        let mut e = blk + 8;
        while e < b.len() && is_run_char(b[e]) {
            e += 1;
        }
        if e - s >= RUN_MIN {
            e = e.max(f(s, e));
        }
        last_end = e;
        blk = (e + 1).next_multiple_of(16);
    }
}

/// The shortest encoded run decoded (18 bytes decoded: shorter than any key it could hold
/// with its name) and the longest (a private key or a `.env` file; longer runs, images and
/// archives, are not decoded).
pub(super) const ENCODED_MIN: usize = 24;
pub(super) const ENCODED_MAX: usize = 16 * 1024;

/// A base64 or base64url character (padding apart).
fn is_encoded_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'_' | b'-')
}

/// `run` decoded as base64 (standard or URL-safe, padding optional), when it is text: valid
/// UTF-8, printable but for line ends and tabs. Cheap refusals first: a run of one case only
/// (words, hex, identifiers) is not tried.
fn decode_text(run: &[u8]) -> Option<String> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    use base64::Engine as _;
    let upper = run.iter().any(u8::is_ascii_uppercase);
    let lower = run.iter().any(u8::is_ascii_lowercase);
    if !(upper && lower) {
        return None;
    }
    let url = run.iter().any(|&c| c == b'-' || c == b'_');
    let standard = run.iter().any(|&c| c == b'+' || c == b'/');
    if url && standard {
        return None;
    }
    let config = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    let engine = if url {
        GeneralPurpose::new(&base64::alphabet::URL_SAFE, config)
    } else {
        GeneralPurpose::new(&base64::alphabet::STANDARD, config)
    };
    // One character over a multiple of four holds no whole byte (a run cut short): dropped.
    let usable = if run.len() % 4 == 1 {
        run.len() - 1
    } else {
        run.len()
    };
    let bytes = engine.decode(&run[..usable]).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.chars()
        .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
        .then_some(text)
}

/// Names whose assigned value is a secret, matched in any case and inside longer names
/// (`DB_PASSWORD`, `aws_secret_access_key`, `x-api-key`, `client_secret`, `AccountKey`).
const SECRET_NAMES: &[&str] = &[
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
const NOT_SECRET_TAILS: &[&str] = &[
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
const NOT_SECRET_EXACT_TAILS: &[&str] = &["or", "ors", "ored", "oring", "ing"];

/// Whole names (without case or separators) that hold a secret's word but name identifiers
/// that are no credential: pagination and progress tokens.
const NOT_SECRET_NAMES: &[&str] = &[
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
fn secret_name(b: &[u8], start: usize, z: usize, end: usize) -> bool {
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
fn assigned(b: &[u8], start: usize, z: usize) -> Option<(usize, usize)> {
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
fn value_start(b: &[u8], mut i: usize) -> Option<(usize, Option<u8>, bool)> {
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
fn ends_value(c: u8, quote: Option<u8>) -> bool {
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
const MAX_ASSIGNED: usize = 16 * 1024;

/// Whether a base64 value (padded or not) decodes to `user:password` (UTF-8, no control
/// characters).
fn decode_credentials(value: &[u8]) -> bool {
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
pub(super) fn looks_assigned_secret(v: &[u8]) -> bool {
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
    let url = memchr::memmem::find(v, b"://").is_some();
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
fn entropy(v: &[u8]) -> f64 {
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
pub(super) fn templated(v: &[u8]) -> bool {
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
        || memchr::memmem::find(v, b"process.env").is_some()
}

/// The documented example values issuers publish (AWS, GitHub, Stripe, Slack, jwt.io): never
/// real, always copied into prompts and code.
const DOCUMENTED_EXAMPLES: &[&str] = &[
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
pub(super) fn placeholder(body: &[u8]) -> bool {
    placeholder_as(body, true)
}

/// [`placeholder`]; `token`: `body` follows a token's prefix, so `your` at its start counts
/// (`hf_yourtokenhere`); an assigned value may start with it (`Yourself#24`).
fn placeholder_as(body: &[u8], token: bool) -> bool {
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
    at_start || segment || memchr::memmem::find(&lower, b"xxxxxx").is_some() || templated(body)
}

/// Whether the token `b[s..e]` is an issuer's documented example, or its body (after the
/// prefix, `p` bytes) a placeholder.
fn not_a_key(b: &[u8], s: usize, p: usize, e: usize) -> bool {
    let token = &b[s..e];
    DOCUMENTED_EXAMPLES.iter().any(|x| x.as_bytes() == token) || placeholder(&b[s + p..e])
}

/// The CRC32 checksum GitHub and npm tokens end with: the last six characters are the CRC32
/// (IEEE) of the 30 before them, in base62 (`0-9A-Za-z`), left-padded with `0`.
pub(super) fn checksum_holds(body: &[u8]) -> bool {
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

/// `end` moved back over the full stops that end `b[from..end]`.
fn trim_dots(b: &[u8], from: usize, mut end: usize) -> usize {
    while end > from && b[end - 1] == b'.' {
        end -= 1;
    }
    end
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

/// Check the token at an anchor `b[a..z]`: its span, if it is a secret (not an issuer's
/// documented example, not a placeholder; a GitHub or npm token whose checksum holds is a
/// key whatever it looks like).
fn matcher(rule: Rule, b: &[u8], a: usize, z: usize, glue: &Glue) -> Option<(usize, usize)> {
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
fn token_at(rule: Rule, b: &[u8], a: usize, z: usize, glue: &Glue) -> Option<(usize, usize)> {
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
fn jwt(b: &[u8], a: usize, joined: bool) -> Option<(usize, usize)> {
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

/// `user:password` between `scheme://` and `@host`: everything up to the last `@` of the
/// authority, whatever the password's characters (`p@ss`, `%40`, `~!*`); the user may be
/// empty (`redis://:password@host`). A template in place of the password (`${DB_PASS}`,
/// `<password>`) is no secret.
fn url_credentials(b: &[u8], a: usize, z: usize) -> Option<(usize, usize)> {
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
            ("aws AKIAWBOBYXE3TVGJGRWA.", "AKIAWBOBYXE3TVGJGRWA"),
            ("sts ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A"),
            ("google AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"),
            ("gh ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R", "ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R"),
            ("pat github_pat_11ABCDEFG0123456789abc_ABCdefGHIjklMNOpqrSTUvwxYZ0123456789abcdefghijABCDEFGHIJKLMNOP", "github_pat_11ABCDEFG0123456789abc_ABCdefGHIjklMNOpqrSTUvwxYZ0123456789abcdefghijABCDEFGHIJKLMNOP"),
            ("gl glpat-xYz123AbC456dEf789gH", "glpat-xYz123AbC456dEf789gH"),
            ("slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
            ("hook https://hooks.slack.com/services/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 done", "https://hooks.slack.com/services/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"),
            ("stripe sk_live_51H8xYzAbCdEfGhIjKlMnOpQr", "sk_live_51H8xYzAbCdEfGhIjKlMnOpQr"),
            ("restricted rk_live_51H8xYzAbCdEfGhIjKlMnOpQr", "rk_live_51H8xYzAbCdEfGhIjKlMnOpQr"),
            ("twilio SK0123456789abcdef0123456789abcdef", "SK0123456789abcdef0123456789abcdef"),
            ("sg SG.abcdefghijklmnopqrstuv.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq", "SG.abcdefghijklmnopqrstuv.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq"),
            ("npm 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", "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"),
            ("pypi pypi-AgEIcHlwaS5vcmcCJDAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMAACKlsz", "pypi-AgEIcHlwaS5vcmcCJDAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMAACKlsz"),
            (&format!("token {jwt} ok"), jwt),
            (&format!("here:\n{pem}\nthanks"), pem),
            ("db postgres://admin:hunter2@db.internal:5432/app", "admin:hunter2"),
        ] {
            assert_eq!(secrets(text), vec![want], "{text}");
        }
        // An AWS secret key next to its access key id, and after its name.
        let t = "AKIAWBOBYXE3TVGJGRWA tlhVGhXvNLWOBA5wqY2EFoj4J1oKzwZR5l817Uq4";
        assert_eq!(
            secrets(t),
            vec![
                "AKIAWBOBYXE3TVGJGRWA",
                "tlhVGhXvNLWOBA5wqY2EFoj4J1oKzwZR5l817Uq4"
            ]
        );
        let t = "aws_secret_access_key = tlhVGhXvNLWOBA5wqY2EFoj4J1oKzwZR5l817Uq4";
        assert_eq!(secrets(t), vec!["tlhVGhXvNLWOBA5wqY2EFoj4J1oKzwZR5l817Uq4"]);
        // A private key without its END line runs to the end.
        let cut = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU";
        assert_eq!(secrets(cut), vec![cut]);
    }

    /// One sample of every rule, with a part of it that must never survive redaction.
    const SAMPLES: &[(&str, &str)] = &[
        ("sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh", "Yz0123456789AbCdEfGh"),
        ("sk-ant-api03-Abc123Def456Ghi789Jkl012Mno345Pqr678Stu901Vwx", "Pqr678Stu901Vwx"),
        ("AKIAWBOBYXE3TVGJGRWA", "WBOBYXE3TVGJGRWA"),
        ("AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "ISLn_3namBGewQe"),
        ("ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R", "3m4N5o6P7q8R"),
        ("github_pat_11ABCDEFG0123456789abc_ABCdefGHIjklMNOpqrSTUvwxYZ0123456789abcdefghijABCDEFGHIJKLMNOP", "abcdefghijABCDEFGHIJKLMNOP"),
        ("glpat-xYz123AbC456dEf789gH", "AbC456dEf789gH"),
        ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "IjKlMnOpQrStUvWx"),
        ("sk_live_51H8xYzAbCdEfGhIjKlMnOpQr", "AbCdEfGhIjKlMnOpQr"),
        ("SK0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef"),
        ("SG.abcdefghijklmnopqrstuv.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq", "UVWXYZabcdefghijklmnopq"),
        ("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", "qrstuvwxyz01232LolCm"),
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
    fn placeholders_and_documented_examples_are_not_keys() {
        let x36 = "x".repeat(36);
        for text in [
            format!("ghp_{x36}"),
            format!("npm_{}", "0".repeat(36)),
            "glpat-xxxxxxxxxxxxxxxxxxxx".to_string(),
            "AKIAXXXXXXXXXXXXXXXX".to_string(),
            "xoxb-your-bot-token".to_string(),
            "sk_live_000000000000000000000000".to_string(),
            format!("sk-proj-{}", "X".repeat(48)),
            "AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string(),
            "aws_secret_access_key = je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY".to_string(),
            "gho_16C7e42F292c6912E7710c838347Ae178B4a".to_string(),
            "sk_test_4eC39HqLyjWDarjtT1zdp7dc".to_string(),
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
                .to_string(),
            "hf_yourhuggingfacetokenhereplease1234".to_string(),
            "postgres://app:${DB_PASSWORD}@db/app".to_string(),
            "password = <your-password>".to_string(),
        ] {
            assert_eq!(secrets(&text), Vec::<&str>::new(), "{text}");
        }
    }

    #[test]
    fn a_token_whose_checksum_holds_is_a_key_whatever_it_looks_like() {
        // Valid CRC32 checksums (GitHub's published test tokens; one computed here).
        for t in [
            "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",
            "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",
            "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",
        ] {
            assert!(checksum_holds(&t.as_bytes()[4..]), "{t}");
            assert_eq!(secrets(&format!("key {t} end")), vec![t]);
        }
        assert!(!checksum_holds(b"M7H4jxUDDWHP4kZ6A4dxlQYsQIWJuq11T4V3"));
        // A token whose checksum fails is still a key unless it is a placeholder.
        assert_eq!(
            secrets("ghp_M7H4jxUDDWHP4kZ6A4dxlQYsQIWJuq11T4V3"),
            vec!["ghp_M7H4jxUDDWHP4kZ6A4dxlQYsQIWJuq11T4V3"]
        );
    }

    #[test]
    fn credentials_in_urls_whatever_the_password_holds() {
        for (text, want) in [
            ("redis://:s3cretPass@cache:6379/0", ":s3cretPass"),
            (
                "postgres://u:p@ss~!*%40w0rd@db.internal/app",
                "u:p@ss~!*%40w0rd",
            ),
            ("amqp://rabbit:Gu3st!pw@mq/vhost", "rabbit:Gu3st!pw"),
            (
                "mongodb+srv://app:Xy9%2Fz@cluster0.example.net/db",
                "app:Xy9%2Fz",
            ),
            ("at the end mysql://root:toor9", ""),
        ] {
            let got = secrets(text);
            if want.is_empty() {
                assert!(got.is_empty(), "{text}: {got:?}");
            } else {
                assert_eq!(got, vec![want], "{text}");
            }
        }
    }

    #[test]
    fn encoded_and_assigned_secrets_are_found() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let key = "sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh";
        let env = b64(&format!("OPENAI_API_KEY={key}\nDEBUG=1\n"));
        assert_eq!(
            secrets(&format!("data:\n  env: {env}\n")),
            vec![env.as_str()]
        );
        let url_safe =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("token={key}"));
        assert_eq!(secrets(&format!("x {url_safe} y")), vec![url_safe.as_str()]);
        let basic = b64("deploy:hunter2");
        assert_eq!(
            secrets(&format!("Authorization: Basic {basic}")),
            vec![basic.as_str()]
        );
        let docker = format!(r#"{{"auths":{{"ghcr.io":{{"auth":"{basic}"}}}}}}"#);
        assert_eq!(secrets(&docker), vec![basic.as_str()]);
        for (text, want) in [
            (r#""aws_secret_access_key": "q8Xv2LmN4pR7tY1wZ3bC5dF9gH0jK6sU/eW+aQoI""#, "q8Xv2LmN4pR7tY1wZ3bC5dF9gH0jK6sU/eW+aQoI"),
            ("DB_PASSWORD=Tr0ub4dor&3x", "Tr0ub4dor&3x"),
            ("api-key: 0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef"),
            ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=K3yK3yAbCdEfGh1JkLmNoPqRsTuVwXyZ0123456789aBcDeFgHiJkLmNoPqRsTuVwXyZ+/AbCdEfGhIjKlMnOpQrSt==;EndpointSuffix=core.windows.net", "K3yK3yAbCdEfGh1JkLmNoPqRsTuVwXyZ0123456789aBcDeFgHiJkLmNoPqRsTuVwXyZ+/AbCdEfGhIjKlMnOpQrSt=="),
        ] {
            assert_eq!(secrets(text), vec![want], "{text}");
        }
        for text in [
            "max_tokens=4096",
            "the password is wrong: try again",
            "api_key = os.environ[\"OPENAI_API_KEY\"]",
            "token_expires_at: 2024-05-01T10:00:00Z",
            "hello aGVsbG8gd29ybGQsIHRoaXMgaXMganVzdCB0ZXh0 there",
        ] {
            assert_eq!(secrets(text), Vec::<&str>::new(), "{text}");
        }
    }

    /// What a cold review found: each input leaked or was masked wrongly before.
    #[test]
    fn review_findings_hold() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        // Keys whose random body holds a placeholder word, and passwords that look like
        // templates but are not.
        for (text, want) in [
            (
                "sk-proj-Ab3dyourEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh",
                "sk-proj-Ab3dyourEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh",
            ),
            ("password: $ecureP4ss!", "$ecureP4ss!"),
            ("password: Yourself#2024", "Yourself#2024"),
            ("DB_PASSWORD=\"Xk9;mQ2#vL\"", "Xk9;mQ2#vL"),
            (
                "postgres://admin:s3cr#tPa55@db.internal:5432/app",
                "admin:s3cr#tPa55",
            ),
            (
                "Authorization: Basic am9objpww6Rzc3dvcmQ",
                "am9objpww6Rzc3dvcmQ",
            ),
        ] {
            assert_eq!(secrets(text), vec![want], "{text}");
        }
        // An Azure AI services key in its 88-character form, and a storage key after `=`.
        let ai = format!(
            "{}JQQJ99{}AAABACOG{}==",
            "a1B2".repeat(13),
            "Q".repeat(14),
            "Zz9yXw"
        );
        assert_eq!(ai.len(), 88);
        assert_eq!(secrets(&format!("key1: {ai}")), vec![ai.as_str()]);
        let storage = format!("{}+ASt{}A==", "Ab3/".repeat(19), "Kq9+x");
        assert_eq!(storage.len(), 88);
        let t = format!("AZURE_STORAGE_KEY={storage}");
        assert_eq!(secrets(&t), vec![storage.as_str()]);
        // `base64` wraps at 76 columns: the lines are one run.
        let env = b64(&format!(
            "OPENAI_API_KEY=sk-proj-{}\nDEBUG=false\n",
            "Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789AbCdEfGh".repeat(2)
        ));
        let wrapped: Vec<&str> = env
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let text = format!("data:\n  env: {}\n", wrapped.join("\n       "));
        let found = secrets(&text);
        assert_eq!(found.len(), 1, "{text}: {found:?}");
        assert!(found[0].ends_with(wrapped.last().unwrap()), "{found:?}");
        // Identifiers that are not credentials.
        for text in [
            r#"{"nextPageToken":"CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA"}"#,
            r#"{"progressToken":"7f3c2a10-4b1e-4c7d-9a2b-1c2d3e4f5a6b"}"#,
            r#"{"token_endpoint":"https://oauth2.googleapis.com/token"}"#,
            r#"{"authority":"https://login.microsoftonline.com/72f988bf"}"#,
            "PWD=/home/user/project2",
            r#""tokenizer":"meta-llama/Llama-3.1-8B-Instruct""#,
        ] {
            assert_eq!(secrets(text), Vec::<&str>::new(), "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_long_run_is_found_once(parts in proptest::collection::vec(
            (0usize..40, proptest::prop_oneof![
                proptest::strategy::Just(" "), proptest::strategy::Just("\n"),
                proptest::strategy::Just("é"), proptest::strategy::Just("\""),
            ]),
            0..30,
        ), offset in 0usize..16) {
            let mut text = "x".repeat(offset);
            for (n, sep) in &parts {
                text.push_str(&"aB3+/=_-.~".chars().cycle().take(*n).collect::<String>());
                text.push_str(sep);
            }
            let b = text.as_bytes();
            let mut want = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if is_run_char(b[i]) {
                    let e = i + b[i..].iter().take_while(|&&c| is_run_char(c)).count();
                    if e - i >= RUN_MIN {
                        want.push((i, e));
                    }
                    i = e;
                } else {
                    i += 1;
                }
            }
            let mut got = Vec::new();
            for_each_run(b, |s, e| {
                got.push((s, e));
                e
            });
            proptest::prop_assert_eq!(got, want);
        }
    }

    /// What a second cold review found.
    #[test]
    fn second_review_findings_hold() {
        use base64::Engine as _;
        let long = "0.AVYA".to_string() + &"Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789-_".repeat(20);
        for (text, want) in [
            (format!(r#"{{"refresh_token":"{long}"}}"#), long.clone()),
            (format!("export AWS_SESSION_TOKEN={long}"), long.clone()),
            (
                "SECRET_KEY_BASE=".to_string() + &"9f8e7d6c5b4a3210".repeat(8),
                "9f8e7d6c5b4a3210".repeat(8),
            ),
            ("DB_PASSWORD_PROD=Xk9mQ2vLp7".into(), "Xk9mQ2vLp7".into()),
            ("password2: Hunter42!x".into(), "Hunter42!x".into()),
            (
                "CURSOR_API_KEY=key_8f3a9c2e7b1d44e0a9c7".into(),
                "key_8f3a9c2e7b1d44e0a9c7".into(),
            ),
            ("DB_PASSWORD=$ummer2024".into(), "$ummer2024".into()),
            ("password: Welcome1(2024)".into(), "Welcome1(2024".into()),
        ] {
            assert_eq!(secrets(&text), vec![want.as_str()], "{text}");
        }
        // Glued without a separator to a long-prefix token, in both orders.
        let ghp = "ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R";
        let hf = "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh";
        assert_eq!(secrets(&format!("x {ghp}{hf} y")), vec![ghp, hf]);
        assert_eq!(secrets(&format!("x {hf}{ghp} y")), vec![hf, ghp]);
        // A wrapped base64 block whose last line is full, then a word on the next line.
        let plain = format!(
            "# production settings for the api\nOPENAI_API_KEY=sk-proj-{}\n",
            "Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789".repeat(4)
        );
        let mut plain = plain.into_bytes();
        while plain.len() % 57 != 0 {
            plain.push(b'#');
        }
        let enc = base64::engine::general_purpose::STANDARD.encode(&plain);
        let lines: Vec<&str> = enc
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let text = format!("base64 -d <<EOF\n{}\nEOF\n", lines.join("\n"));
        let found = secrets(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with(lines[0]) && found[0].ends_with(lines[lines.len() - 1]));
        // A key with an invisible character inside it.
        let e = crate::redact::Engine::new();
        let t = "key ghp_1a\u{200B}2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R end";
        let out = e.redact_text(t, crate::redact::Scan::ALL, &mut Default::default());
        assert_eq!(out.as_deref(), Some("key [REDACTED_SECRET] end"));
        // Not secrets: a port before a path's `@`, a sentence under a secret's name.
        for text in [
            "http://localhost:3000/@vite/client",
            r#"{"password":"Password must be at least 8 characters"}"#,
            r#"{"token":"Enter your 6-digit code"}"#,
            r#"{"pageToken":"CiAKGjBpNDd2Nmp2"}"#,
        ] {
            assert_eq!(secrets(text), Vec::<&str>::new(), "{text}");
        }
    }

    #[test]
    fn hard_negatives_survive() {
        let sha = "git 3f786850e387550fdab836ed7e6dc881de23001b and 9fceb02d0ae598e95dc970b74767f19372d61af8";
        let image = format!(
            "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg{}AKIAWBOBYXE3TVGJGRWAeyJhbGciOiJIUzI1NiJ9sk-proj-Ab3dEf9hIjKlMnOpQrStUvWxYz0123456789",
            "x".repeat(10)
        );
        for text in [
            "I use sk-learn for machine learning",
            "sk-learn-is-a-python-library-for-machine-learning-in-python",
            "id sk-550e8400-e29b-41d4-a716-446655440000-0123456789",
            "uuid 550e8400-e29b-41d4-a716-446655440000",
            sha,
            &image,
            "after AKIAWBOBYXE3TVGJGRWA the commit 3f786850e387550fdab836ed7e6dc881de23001b",
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
                &["AKIAWBOBYXE3TVGJGRWA"]
            } else {
                &[]
            };
            assert_eq!(found, allowed, "{text}");
        }
    }
}
