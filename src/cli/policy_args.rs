//! The command line's spelling of an org's and a key's policy: the argument groups `orgs` and
//! `keys` flatten, each turned into the policy model's values (`admin::OrgPatch`,
//! `admin::KeyPolicy`, `admin::KeyPatch`) in one place.

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches, ValueEnum};

use super::{parse_region, phrase};
use crate::admin::{self, KeySetting, Setting};
use crate::policy::{Switch, Switches, SWITCHES};
use crate::residency::Region;

/// The policy's switches as flags, one per switch of [`SWITCHES`] (`--response-redaction on`):
/// `T` is what each takes (an org's setting, or a key's, which may also be `inherit`); one not
/// given is `None`, or `inherit` for a new key (`INHERIT`, shown as the flags' default).
#[derive(Debug, Clone)]
pub(super) struct SwitchArgs<T, const INHERIT: bool = false>(pub(super) Switches<Option<T>>);

impl<T, const INHERIT: bool> Default for SwitchArgs<T, INHERIT> {
    fn default() -> Self {
        SwitchArgs(Switches::from_table(|_, _| None))
    }
}

/// What a switch's flag takes, and its help.
pub(super) trait SwitchValue: ValueEnum + Clone + Send + Sync + 'static {
    fn help(s: &Switch) -> &'static str;
}

impl SwitchValue for Setting {
    fn help(s: &Switch) -> &'static str {
        s.help
    }
}

impl SwitchValue for KeySetting {
    fn help(s: &Switch) -> &'static str {
        s.key_help
    }
}

impl<T: SwitchValue, const INHERIT: bool> FromArgMatches for SwitchArgs<T, INHERIT> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(SwitchArgs(Switches::from_table(|name, _| {
            m.get_one::<T>(name).cloned()
        })))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = SwitchArgs::from_arg_matches(m)?;
        Ok(())
    }
}

impl<T: SwitchValue, const INHERIT: bool> Args for SwitchArgs<T, INHERIT> {
    fn augment_args(cmd: Command) -> Command {
        SWITCHES.iter().fold(cmd, |cmd, (name, s)| {
            let arg = Arg::new(name)
                .long(name.replace('_', "-"))
                .value_name(name.to_uppercase())
                .value_parser(clap::builder::EnumValueParser::<T>::new())
                // As clap's derive shows a one-sentence doc comment.
                .help(T::help(s).trim_end_matches('.'));
            cmd.arg(match INHERIT {
                true => arg.default_value(KeySetting::Inherit.as_str()),
                false => arg,
            })
        })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        SwitchArgs::<T, INHERIT>::augment_args(cmd)
    }
}

/// An org's settings: on `orgs create` what is not given takes its default, on `orgs update`
/// it is kept.
#[derive(Args, Debug, Default)]
pub(super) struct OrgArgs {
    /// Default data region for the org's requests.
    #[arg(long, value_parser = parse_region)]
    pub(super) region: Option<Region>,
    #[command(flatten)]
    pub(super) switches: SwitchArgs<Setting>,
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
            switches: self.switches.0,
            mcp: self.mcp.lists()?,
            limits: self.limits.change()?,
        })
    }
}

/// Changes to a key (`keys update`): what is not given is kept.
#[derive(Args, Debug, Default)]
pub(super) struct KeyChangeArgs {
    #[command(flatten)]
    pub(super) switches: SwitchArgs<KeySetting>,
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
            switches: self.switches.0,
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
    /// Its switches (`inherit` when not given).
    #[command(flatten)]
    pub(super) switches: SwitchArgs<KeySetting, true>,
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
            switches: (self.switches.0).map(|s| s.unwrap_or(KeySetting::Inherit)),
            mcp: self.mcp.lists()?,
            limits: limits.apply(crate::limits::Limits::default()),
        })
    }
}
