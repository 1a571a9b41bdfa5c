//! The command line's spelling of an org's and a key's policy: the argument groups `orgs` and
//! `keys` flatten, each turned into the policy model's values (`admin::OrgPatch`,
//! `admin::KeyPolicy`, `admin::KeyPatch`) in one place.

use clap::Args;

use super::{parse_region, phrase};
use crate::admin::{self, KeySetting, Setting};
use crate::residency::Region;

/// An org's settings: on `orgs create` what is not given takes its default, on `orgs update`
/// it is kept.
#[derive(Args, Debug, Default)]
pub(super) struct OrgArgs {
    /// Default data region for the org's requests.
    #[arg(long, value_parser = parse_region)]
    pub(super) region: Option<Region>,
    /// PII redaction for the org's requests (a new org's default: `[pii] default` in the
    /// config).
    #[arg(long, value_enum)]
    pub(super) pii: Option<Setting>,
    /// Secret detection (API keys, tokens, private keys) in the org's traffic (default on).
    #[arg(long, value_enum)]
    pub(super) secrets: Option<Setting>,
    /// Redaction of what comes back (responses and streams; default off).
    #[arg(long, value_enum)]
    pub(super) response_redaction: Option<Setting>,
    #[command(flatten)]
    pub(super) mcp: McpArgs,
    /// Limits of all the org's keys together.
    #[command(flatten)]
    pub(super) limits: LimitArgs,
}

impl OrgArgs {
    pub(super) fn patch(&self) -> Result<admin::OrgPatch, String> {
        Ok(admin::OrgPatch {
            region: self.region,
            pii: self.pii,
            secrets: self.secrets,
            response_redaction: self.response_redaction,
            mcp: self.mcp.lists()?,
            limits: self.limits.change()?,
        })
    }
}

/// Changes to a key (`keys update`): what is not given is kept.
#[derive(Args, Debug, Default)]
pub(super) struct KeyChangeArgs {
    /// PII redaction for this key; `inherit` follows the org.
    #[arg(long, value_enum)]
    pub(super) pii: Option<KeySetting>,
    /// Secret detection for this key; `inherit` follows the org.
    #[arg(long, value_enum)]
    pub(super) secrets: Option<KeySetting>,
    /// Response redaction for this key; `inherit` follows the org.
    #[arg(long, value_enum)]
    pub(super) response_redaction: Option<KeySetting>,
    /// MCP tools the key may call (`server:tool,server:*`), or `inherit` (the org's).
    #[arg(long)]
    pub(super) mcp_tools: Option<String>,
    /// MCP resources the key may read (`server:uri`, a trailing `*` for a prefix), or
    /// `inherit`.
    #[arg(long)]
    pub(super) mcp_resources: Option<String>,
    /// MCP prompts the key may get (`server:prompt`), or `inherit`.
    #[arg(long)]
    pub(super) mcp_prompts: Option<String>,
    #[command(flatten)]
    pub(super) limits: LimitArgs,
}

impl KeyChangeArgs {
    pub(super) fn patch(&self) -> Result<admin::KeyPatch, String> {
        Ok(admin::KeyPatch {
            pii: self.pii,
            secrets: self.secrets,
            response_redaction: self.response_redaction,
            mcp: admin::McpPatch::parse([
                ("--mcp-tools", self.mcp_tools.as_deref()),
                ("--mcp-resources", self.mcp_resources.as_deref()),
                ("--mcp-prompts", self.mcp_prompts.as_deref()),
            ])
            .map_err(|e| phrase(admin::Error::from(e)))?,
            limits: self.limits.change()?,
        })
    }
}

/// Rate limits and token budgets (429 `rate_limited` or `budget_exceeded` past them). With
/// `[fleet] redis_url` they hold for every sidecar together. On update, `none` removes one.
#[derive(Args, Debug, Default)]
pub(super) struct LimitArgs {
    /// Requests per minute (sliding window).
    #[arg(long, value_parser = parse_limit, value_name = "N|none")]
    pub(super) rpm: Option<Limit>,
    /// Tokens (input and output) per minute.
    #[arg(long, value_parser = parse_limit, value_name = "N|none")]
    pub(super) tpm: Option<Limit>,
    /// Tokens (input and output) per --budget-period.
    #[arg(long, value_parser = parse_limit, value_name = "N|none")]
    pub(super) budget_tokens: Option<Limit>,
    /// The budget's period, UTC calendar days or months (default month).
    #[arg(long, value_parser = ["day", "month"], requires = "budget_tokens")]
    pub(super) budget_period: Option<String>,
}

/// A limit given on the command line: a number, or `none` (no limit).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limit(Option<u64>);

pub(super) fn parse_limit(s: &str) -> Result<Limit, String> {
    if s == "none" {
        return Ok(Limit(None));
    }
    match s.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(Limit(Some(n))),
        _ => Err("a limit is a whole number, at least 1, or `none`".into()),
    }
}

impl LimitArgs {
    pub(super) fn change(&self) -> Result<admin::LimitsPatch, String> {
        let given =
            |l: Option<Limit>| l.map_or(admin::Patch::Keep, |Limit(v)| admin::Patch::replace(v));
        admin::LimitsPatch::parse(
            given(self.rpm),
            given(self.tpm),
            given(self.budget_tokens),
            self.budget_period.as_deref(),
        )
        .map_err(|e| phrase(admin::Error::from(e)))
    }
}

/// MCP allow-lists (`server:name,...`; `*` for any server or name, a trailing `*` for a
/// prefix). None allowed unless given here or (for keys) inherited from the org.
#[derive(Args, Debug, Default)]
pub(super) struct McpArgs {
    /// MCP tools (`tools/call`), e.g. `github:create_issue,search:*`.
    #[arg(long)]
    pub(super) mcp_tools: Option<String>,
    /// MCP resources (`resources/read`) by URI, e.g. `docs:file:///srv/docs/*`.
    #[arg(long)]
    pub(super) mcp_resources: Option<String>,
    /// MCP prompts (`prompts/get`).
    #[arg(long)]
    pub(super) mcp_prompts: Option<String>,
}

impl McpArgs {
    /// The lists given (for an org, or a new key).
    pub(super) fn lists(&self) -> Result<admin::McpLists, String> {
        admin::McpLists::parse(self.named()).map_err(|e| phrase(admin::Error::from(e)))
    }

    pub(super) fn named(&self) -> [(&'static str, Option<&str>); 3] {
        [
            ("--mcp-tools", self.mcp_tools.as_deref()),
            ("--mcp-resources", self.mcp_resources.as_deref()),
            ("--mcp-prompts", self.mcp_prompts.as_deref()),
        ]
    }
}

#[derive(Args, Debug)]
pub(super) struct KeyArgs {
    /// The org the key belongs to.
    #[arg(long, required_unless_present = "print_hash")]
    pub(super) org: Option<String>,
    /// Make a key for a bundle (`sluice apply`): print the key, its SHA-256 hash and prefix,
    /// and store nothing (no --org needed). Put the hash and prefix in the bundle and the key
    /// where the app reads it.
    #[arg(long, conflicts_with_all = ["org", "expires"])]
    pub(super) print_hash: bool,
    #[arg(long, default_value = "default")]
    pub(super) name: String,
    /// PII redaction for this key; `inherit` follows the org.
    #[arg(long, value_enum, default_value = "inherit")]
    pub(super) pii: KeySetting,
    /// Secret detection for this key; `inherit` follows the org.
    #[arg(long, value_enum, default_value = "inherit")]
    pub(super) secrets: KeySetting,
    /// Response redaction for this key; `inherit` follows the org.
    #[arg(long, value_enum, default_value = "inherit")]
    pub(super) response_redaction: KeySetting,
    /// The key's MCP allow-lists (without them it inherits the org's).
    #[command(flatten)]
    pub(super) mcp: McpArgs,
    /// Pin the key to a data region.
    #[arg(long, value_parser = parse_region)]
    pub(super) region: Option<Region>,
    /// The key's own limits (its org's apply too).
    #[command(flatten)]
    pub(super) limits: LimitArgs,
    /// Expiry, RFC 3339 (e.g. 2027-01-31T00:00:00Z).
    #[arg(long)]
    pub(super) expires: Option<String>,
}

impl KeyArgs {
    /// The new key's policy: what is not given inherits its org's.
    pub(super) fn policy(&self) -> Result<admin::KeyPolicy, String> {
        // The limits are checked first, as they always were.
        let limits = self.limits.change()?;
        Ok(admin::KeyPolicy {
            region: self.region,
            pii: self.pii,
            secrets: self.secrets,
            response_redaction: self.response_redaction,
            mcp: self.mcp.lists()?,
            limits: limits.apply(crate::limits::Limits::default()),
        })
    }
}
