//! The command line. One function per subcommand; each parses its arguments and calls library
//! functions (`admin` for everything that changes the store). Exit codes: 0 success, 1 the
//! operation failed or was refused (nothing was changed), 2 bad usage, 64 (EX_USAGE) invalid
//! configuration.
//!
//! Every command takes `--config` (or `SLUICE_CONFIG`) and `--json`; with `--json` a command
//! prints exactly one JSON object on stdout, `{"error": {"message": ...}}` on failure.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use tracing_subscriber::EnvFilter;
use zeroize::Zeroizing;

use crate::admin::{self, Actor, KeySetting, Setting};
use crate::audit::{self, Record};
use crate::auth::oauth;
use crate::config::{Config, LoadError, LogFormat};
use crate::residency::Region;
use crate::store::Store;
use crate::vault::{self, Keyring};

/// Exit code for an invalid configuration (sysexits EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;
/// Exit code for a refused or failed operation.
pub const EXIT_FAILED: i32 = 1;

/// The file `serve --dev` keeps its generated master key in, beside the database.
pub const DEV_KEY_FILE: &str = "sluice-dev-master.key";
/// The file `serve --dev` keeps its generated JWT secret in, beside the database.
pub const DEV_JWT_FILE: &str = "sluice-dev-jwt.key";

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "A security sidecar for LLM traffic")]
struct Cli {
    /// Config file; without it (and without SLUICE_CONFIG) the compiled-in default is used.
    #[arg(long, global = true, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy (data plane, admin and metrics listeners). Needs SLUICE_SECRETS_KEY.
    Serve {
        /// Try-out mode: keep a generated master key in a 0600 file beside the database,
        /// create a default org and print an API key on first run, and store OPENAI_API_KEY
        /// (if set) as the upstream credential. Not for production.
        #[arg(long)]
        dev: bool,
    },
    /// Check a config file and exit: 0 when valid, 64 with every problem listed otherwise.
    CheckConfig,
    /// Manage orgs.
    #[command(subcommand)]
    Orgs(OrgsCmd),
    /// Manage the API keys apps authenticate with.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Manage upstream credentials (encrypted with SLUICE_SECRETS_KEY).
    #[command(subcommand)]
    Credentials(CredentialsCmd),
    /// Master key operations.
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Manage the people who use the admin API (passwords are read from stdin or a prompt).
    #[command(subcommand)]
    Users(UsersCmd),
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Try the PII rules without traffic: redact text or JSON read from stdin; the result
    /// goes to stdout and the counts to stderr (or both in one object with --json).
    Redact,
    /// Exit 0 when the local sluice answers /healthz (with --ready: /readyz) on its admin
    /// address, 1 otherwise. For container health checks and exec probes (no shell needed).
    Healthcheck {
        #[arg(long)]
        ready: bool,
    },
    /// Converge the store to a bundle file (orgs, keys by hash, limits): create and change what
    /// it lists, revoke the keys it owned and no longer lists, one audit record per change, all
    /// in one transaction. See README "Running a fleet".
    Apply {
        /// The bundle (TOML).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Idempotent provisioning for a sidecar's init step: make sure org NAME exists, that
    /// --key-file holds an API key of it (created 0600 if the file is missing, never printed),
    /// and that each --credential NAME=FILE is stored with the file's content.
    Bootstrap {
        /// The org, created if missing.
        #[arg(long)]
        org: String,
        #[arg(long, value_parser = parse_region)]
        region: Option<Region>,
        /// Where the app's API key is written (only when the file does not exist yet).
        #[arg(long)]
        key_file: PathBuf,
        /// NAME=FILE: store FILE's content (one trailing newline stripped) as credential NAME.
        #[arg(long = "credential")]
        credentials: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum OrgsCmd {
    /// Create an org; prints its id.
    Create {
        name: String,
        /// Default data region for the org's requests.
        #[arg(long, value_parser = parse_region)]
        region: Option<Region>,
        /// PII redaction for the org's requests (default: `[pii] default` in the config).
        #[arg(long, value_enum)]
        pii: Option<Setting>,
        /// Secret detection (API keys, tokens, private keys) in the org's traffic (default on).
        #[arg(long, value_enum)]
        secrets: Option<Setting>,
        /// Redaction of what comes back (responses and streams; default off).
        #[arg(long, value_enum)]
        response_redaction: Option<Setting>,
        #[command(flatten)]
        mcp: McpArgs,
        /// Limits of all the org's keys together.
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List orgs.
    List,
    /// Change an org's default region, PII, secrets, response redaction, MCP lists or limits.
    Update {
        org_id: String,
        #[arg(long, value_parser = parse_region)]
        region: Option<Region>,
        #[arg(long, value_enum)]
        pii: Option<Setting>,
        #[arg(long, value_enum)]
        secrets: Option<Setting>,
        #[arg(long, value_enum)]
        response_redaction: Option<Setting>,
        #[command(flatten)]
        mcp: McpArgs,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// GDPR hard delete: remove the org's keys, users and settings in one transaction and
    /// destroy its audit data key (its audit details become unreadable; the chain still
    /// verifies). Cannot be undone; --hard is required.
    Delete {
        org_id: String,
        #[arg(long)]
        hard: bool,
    },
}

#[derive(Subcommand, Debug)]
enum UsersCmd {
    /// Create a user. The password is read from standard input (or prompted for, twice, on a
    /// terminal). Operators, owners and admins get TOTP: the otpauth URI and 10 recovery codes
    /// are printed once.
    Create {
        /// The user's email (also accepted as `--email`).
        #[arg(
            value_name = "EMAIL",
            required_unless_present = "email",
            conflicts_with = "email"
        )]
        email_arg: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// The user's org (not for --operator).
        #[arg(
            long,
            required_unless_present = "operator",
            conflicts_with = "operator"
        )]
        org: Option<String>,
        #[arg(
            long,
            value_enum,
            required_unless_present = "operator",
            conflicts_with = "operator"
        )]
        role: Option<admin::users::Role>,
        /// An operator of the sidecar itself: manages every org.
        #[arg(long)]
        operator: bool,
        /// Enrol TOTP even where it is optional (auditor, member).
        #[arg(long)]
        totp: bool,
    },
    /// List users (never a password hash or a TOTP seed).
    List {
        #[arg(long)]
        org: Option<String>,
    },
    /// Change a user's role; takes effect on their next request.
    Update {
        user_id: String,
        #[arg(long, value_enum)]
        role: admin::users::Role,
    },
    /// Delete a user; their sessions stop working at once.
    Delete { user_id: String },
    /// Set a new password (stdin or prompt); every session of the user is revoked.
    SetPassword { user_id: String },
    /// (Re-)enrol TOTP: a new seed and 10 new recovery codes, printed once.
    EnrollTotp { user_id: String },
    /// Revoke every session (JWT) the user holds.
    RevokeSessions { user_id: String },
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// Create an API key; the key is printed once and never again.
    Create(KeyArgs),
    /// List keys (metadata only; the key itself is never shown again).
    List {
        #[arg(long)]
        org: Option<String>,
    },
    /// Change a key's settings; a running `serve` applies them within a second.
    Update {
        key_id: String,
        #[arg(long, value_enum)]
        pii: Option<KeySetting>,
        #[arg(long, value_enum)]
        secrets: Option<KeySetting>,
        #[arg(long, value_enum)]
        response_redaction: Option<KeySetting>,
        /// MCP tools the key may call (`server:tool,server:*`), or `inherit` (the org's).
        #[arg(long)]
        mcp_tools: Option<String>,
        /// MCP resources the key may read (`server:uri`, a trailing `*` for a prefix), or
        /// `inherit`.
        #[arg(long)]
        mcp_resources: Option<String>,
        /// MCP prompts the key may get (`server:prompt`), or `inherit`.
        #[arg(long)]
        mcp_prompts: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Revoke a key; a running `serve` refuses it within a second.
    Revoke { key_id: String },
}

/// Rate limits and token budgets (429 `rate_limited` or `budget_exceeded` past them). With
/// `[fleet] redis_url` they hold for every sidecar together. On update, `none` removes one.
#[derive(Args, Debug, Default)]
struct LimitArgs {
    /// Requests per minute (sliding window).
    #[arg(long, value_parser = parse_limit, value_name = "N|none")]
    rpm: Option<Limit>,
    /// Tokens (input and output) per minute.
    #[arg(long, value_parser = parse_limit, value_name = "N|none")]
    tpm: Option<Limit>,
    /// Tokens (input and output) per --budget-period.
    #[arg(long, value_parser = parse_limit, value_name = "N|none")]
    budget_tokens: Option<Limit>,
    /// The budget's period, UTC calendar days or months (default month).
    #[arg(long, value_parser = ["day", "month"], requires = "budget_tokens")]
    budget_period: Option<String>,
}

/// A limit given on the command line: a number, or `none` (no limit).
#[derive(Debug, Clone, Copy)]
struct Limit(Option<u64>);

fn parse_limit(s: &str) -> Result<Limit, String> {
    if s == "none" {
        return Ok(Limit(None));
    }
    match s.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(Limit(Some(n))),
        _ => Err("a limit is a whole number, at least 1, or `none`".into()),
    }
}

impl LimitArgs {
    fn change(&self) -> Result<admin::LimitsChange, String> {
        let given = |l: Option<Limit>| l.map(|Limit(v)| v);
        admin::limits_change(
            given(self.rpm),
            given(self.tpm),
            given(self.budget_tokens),
            self.budget_period.as_deref(),
        )
        .map_err(|e| e.to_string())
    }
}

/// MCP allow-lists (`server:name,...`; `*` for any server or name, a trailing `*` for a
/// prefix). None allowed unless given here or (for keys) inherited from the org.
#[derive(Args, Debug, Default)]
struct McpArgs {
    /// MCP tools (`tools/call`), e.g. `github:create_issue,search:*`.
    #[arg(long)]
    mcp_tools: Option<String>,
    /// MCP resources (`resources/read`) by URI, e.g. `docs:file:///srv/docs/*`.
    #[arg(long)]
    mcp_resources: Option<String>,
    /// MCP prompts (`prompts/get`).
    #[arg(long)]
    mcp_prompts: Option<String>,
}

impl McpArgs {
    fn lists(&self) -> Result<admin::McpLists, String> {
        let parse = |what: &str, v: &Option<String>| {
            v.as_deref()
                .map(|s| admin::mcp_list(what, s))
                .transpose()
                .map_err(|e| e.to_string())
        };
        Ok(admin::McpLists {
            tools: parse("--mcp-tools", &self.mcp_tools)?,
            resources: parse("--mcp-resources", &self.mcp_resources)?,
            prompts: parse("--mcp-prompts", &self.mcp_prompts)?,
        })
    }
}

/// A key's list argument: `inherit` or a list.
fn key_list(
    what: &str,
    v: &Option<String>,
) -> Result<Option<Option<crate::mcp::AllowList>>, String> {
    match v.as_deref() {
        None => Ok(None),
        Some("inherit") => Ok(Some(None)),
        Some(s) => admin::mcp_list(what, s)
            .map(|l| Some(Some(l)))
            .map_err(|e| e.to_string()),
    }
}

#[derive(Args, Debug)]
struct KeyArgs {
    /// The org the key belongs to.
    #[arg(long, required_unless_present = "print_hash")]
    org: Option<String>,
    /// Make a key for a bundle (`sluice apply`): print the key, its SHA-256 hash and prefix,
    /// and store nothing (no --org needed). Put the hash and prefix in the bundle and the key
    /// where the app reads it.
    #[arg(long, conflicts_with_all = ["org", "expires"])]
    print_hash: bool,
    #[arg(long, default_value = "default")]
    name: String,
    /// PII redaction for this key; `inherit` follows the org.
    #[arg(long, value_enum, default_value = "inherit")]
    pii: KeySetting,
    /// Secret detection for this key; `inherit` follows the org.
    #[arg(long, value_enum, default_value = "inherit")]
    secrets: KeySetting,
    /// Response redaction for this key; `inherit` follows the org.
    #[arg(long, value_enum, default_value = "inherit")]
    response_redaction: KeySetting,
    /// The key's MCP allow-lists (without them it inherits the org's).
    #[command(flatten)]
    mcp: McpArgs,
    /// Pin the key to a data region.
    #[arg(long, value_parser = parse_region)]
    region: Option<Region>,
    /// The key's own limits (its org's apply too).
    #[command(flatten)]
    limits: LimitArgs,
    /// Expiry, RFC 3339 (e.g. 2027-01-31T00:00:00Z).
    #[arg(long)]
    expires: Option<String>,
}

#[derive(Subcommand, Debug)]
enum CredentialsCmd {
    /// Store an upstream credential. The secret is read from standard input (one trailing
    /// newline stripped), never from the command line. Needs SLUICE_SECRETS_KEY.
    Set {
        name: String,
        /// Expiry, RFC 3339; an expired credential is refused rather than sent.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        input: SecretInput,
    },
    /// Store an OAuth credential: sluice obtains access tokens with it (client credentials or
    /// refresh token grant), keeps them sealed, and refreshes them before they expire. The
    /// client secret (or, with --grant refresh_token, the refresh token) is read from standard
    /// input. A first token is obtained now, so a wrong setting fails here; nothing is stored
    /// then. Needs SLUICE_SECRETS_KEY.
    SetOauth {
        name: String,
        /// The token endpoint (https://; http:// only to a loopback address).
        #[arg(long)]
        token_url: String,
        #[arg(long)]
        client_id: String,
        /// Space-separated scopes to ask for.
        #[arg(long)]
        scope: Option<String>,
        /// RFC 8707 resource indicator: the URI of the API the tokens are for.
        #[arg(long)]
        resource: Option<String>,
        /// What standard input holds: a client secret, or a refresh token.
        #[arg(long, value_enum, default_value = "client_credentials")]
        grant: GrantArg,
        /// Store it without obtaining a first token (the running `serve` obtains it).
        #[arg(long)]
        no_verify: bool,
        #[command(flatten)]
        input: SecretInput,
    },
    /// List credentials: names, kinds, master-key fingerprints, ages, expiry and OAuth token
    /// state; never secrets.
    List,
    /// Delete a credential.
    Delete { name: String },
}

/// Where a credential's secret comes from: standard input, or `--secret-file`; never argv.
#[derive(Args, Debug)]
struct SecretInput {
    /// Read the secret from this file instead of standard input.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Anything else on the command line is refused: secrets do not belong in argv.
    #[arg(
        hide = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 0..
    )]
    rest: Vec<String>,
}

impl SecretInput {
    /// Refuse extra arguments, unread, before anything else is done.
    fn refuse_argv(&mut self) -> Result<(), String> {
        refuse_argv_secret(std::mem::take(&mut self.rest))
    }

    /// The secret.
    fn read(self) -> Result<Zeroizing<String>, String> {
        match self.secret_file {
            Some(f) => read_secret_file(&f),
            None => read_secret(),
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum GrantArg {
    #[value(name = "client_credentials")]
    ClientCredentials,
    #[value(name = "refresh_token")]
    RefreshToken,
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Walk the hash chain: exit 0 when intact, 1 naming the first broken record.
    Verify,
    /// Print the last records as JSON Lines; with --follow, keep printing new ones.
    Tail {
        #[arg(long)]
        org: Option<String>,
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: i64,
        #[arg(long)]
        follow: bool,
    },
    /// Export records as JSON Lines, oldest first (for a SIEM shipper such as Vector). Org
    /// records keep their personal fields sealed (the export verifies against the chain and
    /// is shredded with the org); --decrypt opens them (needs SLUICE_SECRETS_KEY).
    Export {
        #[arg(long)]
        decrypt: bool,
        /// Only records at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        org: Option<String>,
    },
    /// Remove records older than a date, leaving a checkpoint so the rest still verifies.
    /// Refused for records not exported yet (by an unfiltered `audit export`) unless --force.
    Prune {
        /// RFC 3339 time or YYYY-MM-DD (UTC midnight).
        #[arg(long)]
        before: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
enum SecretsCmd {
    /// Re-encrypt every credential under SLUICE_SECRETS_KEY (old keys in
    /// SLUICE_SECRETS_KEY_OLD), in one transaction, while `serve` keeps running.
    Rotate,
}

fn parse_region(s: &str) -> Result<Region, String> {
    s.parse::<Region>()
        .map_err(|_| format!("unknown region {s:?} (us | eu | apac)"))
}

/// Run the command line and return the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    let json = cli.json;
    let config = cli.config;
    match cli.command {
        Command::Serve { dev } => serve(config, dev),
        Command::CheckConfig => check_config(config, json),
        Command::Orgs(c) => admin_command(config, json, |cfg| orgs(cfg, c)),
        Command::Keys(c) => admin_command(config, json, |cfg| keys(cfg, c)),
        Command::Credentials(c) => admin_command(config, json, |cfg| credentials(cfg, c)),
        Command::Secrets(SecretsCmd::Rotate) => admin_command(config, json, rotate),
        Command::Users(c) => admin_command(config, json, |cfg| users(cfg, c)),
        Command::Redact => redact(json),
        Command::Healthcheck { ready } => healthcheck(config, ready),
        Command::Bootstrap {
            org,
            region,
            key_file,
            credentials,
        } => admin_command(config, json, |cfg| {
            bootstrap(cfg, &org, region, &key_file, &credentials)
        }),
        Command::Audit(c) => audit_command(config, json, c),
        Command::Apply { file, dry_run } => {
            admin_command(config, json, |cfg| apply(cfg, &file, dry_run))
        }
    }
}

fn apply(cfg: &Config, file: &Path, dry_run: bool) -> Outcome {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {}", file.display(), e.kind()))?;
    let bundle = admin::apply::parse(&text).map_err(|e| e.to_string())?;
    let store = open_store(cfg)?;
    let actor = Actor::cli();
    let changes = if dry_run {
        admin::apply::plan(&store, &bundle, pii_default(cfg))
    } else {
        admin::apply::apply(&store, &keyring()?, &actor, &bundle, pii_default(cfg))
    }
    .map_err(|e| e.to_string())?;
    let mut text: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
    text.push(match (dry_run, changes.len()) {
        (_, 0) => "nothing to change: the store matches the bundle".into(),
        (true, n) => format!("{n} change(s) planned; nothing was changed (--dry-run)"),
        (false, n) => format!("{n} change(s) applied"),
    });
    Ok((
        serde_json::json!({"changes": changes, "dry_run": dry_run}),
        text.join("\n"),
    ))
}

/// clap's errors echo the offending argument. For the commands that handle secrets that could
/// print a secret typed on the command line, so those get a message that echoes nothing.
fn usage_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return 0;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(cmd) = args
        .iter()
        .find(|a| *a == "credentials" || *a == "secrets" || *a == "users")
    {
        eprintln!(
            "sluice: invalid arguments for `{cmd}` (not echoed: they may contain a secret). See `sluice {cmd} --help`; secrets are read from standard input only."
        );
        return 2;
    }
    let _ = e.print();
    2
}

fn load(path: Option<&Path>) -> Result<Config, i32> {
    Config::load(path).map_err(|e| {
        eprintln!("sluice: {e}");
        match e {
            LoadError::Read { .. } => EXIT_FAILED,
            LoadError::Invalid { .. } => EXIT_CONFIG,
        }
    })
}

/// A command's outcome: a JSON value and its text rendering, or an error message.
type Outcome = Result<(serde_json::Value, String), String>;

fn admin_command(config: Option<PathBuf>, json: bool, f: impl FnOnce(&Config) -> Outcome) -> i32 {
    let cfg = match load(config.as_deref()) {
        Ok(c) => c,
        Err(code) => {
            if json {
                print_json(
                    &serde_json::json!({"error": {"message": "invalid or unreadable config"}}),
                );
            }
            return code;
        }
    };
    match f(&cfg) {
        Ok((value, text)) => {
            if json {
                print_json(&value);
            } else if !text.is_empty() {
                println!("{text}");
            }
            0
        }
        Err(message) => {
            eprintln!("sluice: {message}");
            if json {
                print_json(&serde_json::json!({"error": {"message": message}}));
            }
            EXIT_FAILED
        }
    }
}

fn print_json(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, v);
    let _ = writeln!(out);
}

fn to_json(v: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn open_store(cfg: &Config) -> Result<Store, String> {
    Store::open_limited(&cfg.store.path, cfg.store.max_bytes)
        .map_err(|e| format!("cannot open the store {}: {e}", cfg.store.path.display()))
}

fn keyring() -> Result<Keyring, String> {
    Keyring::from_env().map_err(|e| e.to_string())
}

fn or_none(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

fn orgs(cfg: &Config, c: OrgsCmd) -> Outcome {
    let store = open_store(cfg)?;
    // Changes are audited, and an org's audit record is sealed under its data key.
    let ring = || keyring();
    match c {
        OrgsCmd::Create {
            name,
            region,
            pii,
            secrets,
            response_redaction,
            mcp,
            limits,
        } => {
            let spec = admin::OrgSpec {
                name,
                region,
                pii,
                secrets,
                response_redaction,
                mcp: mcp.lists()?,
                limits: limits.change()?,
            };
            let org = admin::create_org_as(
                &store,
                &ring()?,
                &Actor::cli(),
                &spec,
                pii_default(cfg),
                None,
            )
            .map_err(|e| e.to_string())?;
            let text = format!("created org {} ({})", org.id, org.name);
            Ok((to_json(&org), text))
        }
        OrgsCmd::List => {
            let orgs = store.orgs().map_err(|e| e.to_string())?;
            let text = orgs
                .iter()
                .map(|o| {
                    format!(
                        "{}  {}  {}  created={}",
                        o.id,
                        o.name,
                        org_settings(o),
                        o.created_at
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            Ok((serde_json::json!({ "orgs": orgs }), text))
        }
        OrgsCmd::Update {
            org_id,
            region,
            pii,
            secrets,
            response_redaction,
            mcp,
            limits,
        } => {
            let change = admin::OrgChange {
                region,
                pii,
                secrets,
                response_redaction,
                mcp: mcp.lists()?,
                limits: limits.change()?,
            };
            let org = admin::update_org_as(&store, &ring()?, &Actor::cli(), &org_id, &change)
                .map_err(|e| e.to_string())?;
            let text = format!("updated org {}: {}", org.id, org_settings(&org));
            Ok((to_json(&org), text))
        }
        OrgsCmd::Delete { org_id, hard } => {
            if !hard {
                return Err(format!(
                    "deleting an org removes its keys and users and shreds its audit details; this cannot be undone. Run `sluice orgs delete {org_id} --hard`"
                ));
            }
            let d = hard_delete(
                &store,
                &ring()?,
                &org_id,
                Record::admin("org.delete", &audit::cli_actor()),
            )?;
            let text = format!(
                "hard-deleted org {}: {} key(s), {} user(s) removed; its audit details are unreadable from now on{}",
                d["org_id"].as_str().unwrap_or_default(),
                d["keys"],
                d["users"],
                if d["wal_purged"] == true { "" } else { " (the WAL could not be checkpointed yet: a reader held it; it will be on the next checkpoint)" }
            );
            Ok((d, text))
        }
    }
}

/// The PII setting of orgs created without one (`[pii] default`).
fn pii_default(cfg: &Config) -> Setting {
    if cfg.pii.default_on {
        Setting::On
    } else {
        Setting::Off
    }
}

fn org_settings(o: &crate::store::Org) -> String {
    format!(
        "region={}  pii={}  secrets={}  response_redaction={}  rpm={}  tpm={}  budget={}",
        or_none(&o.region),
        o.pii,
        o.secrets,
        o.response_redaction,
        o.rpm.map_or("-".to_string(), |r| r.to_string()),
        o.tpm.map_or("-".to_string(), |r| r.to_string()),
        budget_text(o.budget_tokens, &o.budget_period),
    )
}

/// `1000000/month`, or `-` without a budget.
fn budget_text(tokens: Option<u64>, period: &Option<String>) -> String {
    match (tokens, period) {
        (Some(t), Some(p)) => format!("{t}/{p}"),
        _ => "-".into(),
    }
}

fn hard_delete(
    store: &Store,
    ring: &Keyring,
    org_id: &str,
    rec: Record,
) -> Result<serde_json::Value, String> {
    let (d, purged) = admin::hard_delete(store, ring, org_id, rec).map_err(|e| e.to_string())?;
    let mut v = to_json(&d);
    v["wal_purged"] = purged.into();
    Ok(v)
}

fn show_enrollment(e: &admin::users::Enrollment) -> String {
    format!(
        "\nTOTP (shown only this once): add this to an authenticator app:\n\n    {}\n\nRecovery codes (each works once in place of a TOTP code; store them safely):\n\n    {}\n",
        e.otpauth_uri.as_str(),
        e.recovery_codes.iter().map(|c| c.as_str()).collect::<Vec<_>>().join("\n    ")
    )
}

/// A password from standard input (one line), or prompted for twice on a terminal.
fn read_password() -> Result<Zeroizing<String>, String> {
    if std::io::stdin().is_terminal() {
        let a = Zeroizing::new(
            rpassword::prompt_password("Password: ")
                .map_err(|e| format!("cannot read the password: {e}"))?,
        );
        let b = Zeroizing::new(
            rpassword::prompt_password("Again: ")
                .map_err(|e| format!("cannot read the password: {e}"))?,
        );
        if !bool::from(subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes())) {
            return Err("the passwords differ".into());
        }
        return Ok(a);
    }
    let mut raw = Zeroizing::new(Vec::with_capacity(128));
    std::io::stdin()
        .lock()
        .take(4096)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    if raw.ends_with(b"\n") {
        raw.pop();
        if raw.ends_with(b"\r") {
            raw.pop();
        }
    }
    if raw.contains(&b'\n') {
        return Err("the password must be a single line".into());
    }
    let s = std::str::from_utf8(&raw).map_err(|_| "the password is not valid UTF-8".to_string())?;
    admin::users::check_password(s).map_err(|e| e.to_string())?;
    Ok(Zeroizing::new(s.to_string()))
}

fn user_line(v: &admin::users::UserView) -> String {
    let u = &v.user;
    format!(
        "{}  {}  {}  org={}  totp={}  recovery_codes_left={}  created={}",
        u.id,
        u.email,
        if u.operator {
            "operator"
        } else {
            u.role.as_deref().unwrap_or("-")
        },
        or_none(&u.org_id),
        if v.totp_enrolled { "on" } else { "off" },
        v.recovery_codes_left,
        u.created_at
    )
}

fn users(cfg: &Config, c: UsersCmd) -> Outcome {
    use admin::users;
    let ring = || keyring();
    let store = open_store(cfg)?;
    match c {
        UsersCmd::Create {
            email_arg,
            email,
            org,
            role,
            operator,
            totp,
        } => {
            let ring = ring()?;
            let password = read_password()?;
            let new = users::NewUser {
                email: email.or(email_arg).unwrap_or_default(),
                org_id: org.clone(),
                role,
                operator,
                totp,
            };
            let mut rec = Record::admin("user.create", &audit::cli_actor());
            rec.org_id = org;
            let created = admin::audited(
                &store,
                &ring,
                rec,
                |s| users::create_user(s, &ring, &new, &password),
                |c, r| {
                    r.target_id = Some(c.user.user.id.clone());
                    r.details = serde_json::json!({"email": c.user.user.email, "role": c.user.user.role,
                        "operator": c.user.user.operator, "totp": c.totp.is_some()});
                },
            )
            .map_err(|e| e.to_string())?;
            let mut text = format!("created user {}", user_line(&created.user));
            if let Some(e) = &created.totp {
                text.push_str(&show_enrollment(e));
            }
            Ok((to_json(&created), text))
        }
        UsersCmd::List { org } => {
            let list = users::list(&store, org.as_deref()).map_err(|e| e.to_string())?;
            let text = list.iter().map(user_line).collect::<Vec<_>>().join("\n");
            Ok((serde_json::json!({ "users": list }), text))
        }
        UsersCmd::Update { user_id, role } => {
            let v = on_user(
                &store,
                &ring()?,
                "user.update",
                &user_id,
                |s| users::set_role(s, &user_id, role),
                |v, r| r.details = serde_json::json!({"role": v.user.role}),
            )?;
            Ok((to_json(&v), format!("updated user {}", user_line(&v))))
        }
        UsersCmd::Delete { user_id } => {
            on_user(
                &store,
                &ring()?,
                "user.delete",
                &user_id,
                |s| users::delete_user(s, &user_id),
                |_, _| {},
            )?;
            Ok((
                serde_json::json!({"id": user_id, "deleted": true}),
                format!("deleted user {user_id}"),
            ))
        }
        UsersCmd::SetPassword { user_id } => {
            let ring = ring()?;
            let password = read_password()?;
            on_user(
                &store,
                &ring,
                "user.password",
                &user_id,
                |s| users::set_password(s, &user_id, &password),
                |_, _| {},
            )?;
            Ok((
                serde_json::json!({"id": user_id, "password_changed": true, "sessions_revoked": true}),
                format!("set the password of user {user_id}; their sessions are revoked"),
            ))
        }
        UsersCmd::EnrollTotp { user_id } => {
            let ring = ring()?;
            let e = on_user(
                &store,
                &ring,
                "user.totp_enroll",
                &user_id,
                |s| users::enroll_totp(s, &ring, &s.user(&user_id)?),
                |_, _| {},
            )?;
            Ok((
                to_json(&e),
                format!("enrolled TOTP for user {user_id}{}", show_enrollment(&e)),
            ))
        }
        UsersCmd::RevokeSessions { user_id } => {
            on_user(
                &store,
                &ring()?,
                "user.revoke_sessions",
                &user_id,
                |s| users::revoke_sessions(s, &user_id),
                |_, _| {},
            )?;
            Ok((
                serde_json::json!({"id": user_id, "sessions_revoked": true}),
                format!("revoked every session of user {user_id}"),
            ))
        }
    }
}

/// An audited change to one user from the CLI (the record names the user's org).
fn on_user<T>(
    store: &Store,
    ring: &Keyring,
    action: &str,
    user_id: &str,
    op: impl FnOnce(&Store) -> admin::Result<T>,
    describe: impl FnOnce(&T, &mut Record),
) -> Result<T, String> {
    let mut rec = Record::admin(action, &audit::cli_actor());
    rec.org_id = store.user(user_id).ok().and_then(|u| u.org_id);
    rec.target_id = Some(user_id.to_string());
    admin::audited(store, ring, rec, op, describe).map_err(|e| e.to_string())
}

fn keys(cfg: &Config, c: KeysCmd) -> Outcome {
    let store = open_store(cfg)?;
    let ring = || keyring();
    match c {
        KeysCmd::Create(a) if a.print_hash => {
            let new = crate::auth::generate();
            let sha256: String = new.hash.iter().map(|b| format!("{b:02x}")).collect();
            let text = format!(
                "{}\n\nsha256 = \"{sha256}\"\nprefix = \"{}\"\n\nNothing was stored. Put sha256 and prefix in the bundle; the key is shown only this once.",
                new.secret.as_str(),
                new.prefix
            );
            Ok((
                serde_json::json!({"key": new.secret.as_str(), "prefix": new.prefix, "sha256": sha256}),
                text,
            ))
        }
        KeysCmd::Create(a) => {
            let limits = a.limits.change()?;
            let spec = admin::KeySpec {
                org_id: a.org.unwrap_or_default(),
                name: a.name,
                pii: a.pii,
                secrets: a.secrets,
                response_redaction: a.response_redaction,
                mcp: a.mcp.lists()?,
                region: a.region,
                rpm: limits.rpm.flatten(),
                tpm: limits.tpm.flatten(),
                budget: limits.budget.flatten(),
                expires: a.expires,
            };
            let k = admin::create_key_as(&store, &ring()?, &Actor::cli(), &spec, None)
                .map_err(|e| e.to_string())?;
            let text = format!(
                "created key {} ({}) for org {}\n\n    {}\n\nStore it now: it is shown only this once.",
                k.id,
                k.name,
                k.org_id,
                k.key.as_str()
            );
            Ok((to_json(&k), text))
        }
        KeysCmd::List { org } => {
            let keys = admin::list_keys(&store, org.as_deref()).map_err(|e| e.to_string())?;
            let text = keys
                .iter()
                .map(|v| {
                    let k = &v.key;
                    format!(
                        "{}  {}...  {}  org={}  status={}  pii={}  secrets={}  response_redaction={}  region={}  rpm={}  tpm={}  budget={}  expires={}  last_used={}",
                        k.id,
                        k.prefix,
                        k.name,
                        k.org_id,
                        v.status,
                        k.pii,
                        k.secrets,
                        k.response_redaction,
                        or_none(&k.region),
                        k.rpm.map_or("-".to_string(), |r| r.to_string()),
                        k.tpm.map_or("-".to_string(), |r| r.to_string()),
                        budget_text(k.budget_tokens, &k.budget_period),
                        or_none(&k.expires_at),
                        or_none(&k.last_used_at)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            Ok((serde_json::json!({ "keys": keys }), text))
        }
        KeysCmd::Update {
            key_id,
            pii,
            secrets,
            response_redaction,
            mcp_tools,
            mcp_resources,
            mcp_prompts,
            limits,
        } => {
            let change = admin::KeyChange {
                pii,
                secrets,
                response_redaction,
                mcp_tools: key_list("--mcp-tools", &mcp_tools)?,
                mcp_resources: key_list("--mcp-resources", &mcp_resources)?,
                mcp_prompts: key_list("--mcp-prompts", &mcp_prompts)?,
                limits: limits.change()?,
            };
            let k = admin::update_key_as(&store, &ring()?, &Actor::cli(), &key_id, &change)
                .map_err(|e| e.to_string())?;
            Ok((to_json(&k), format!("updated key {}", k.id)))
        }
        KeysCmd::Revoke { key_id } => {
            let mut rec = Record::admin("key.revoke", &audit::cli_actor());
            rec.target_id = Some(key_id.clone());
            rec.org_id = store
                .keys(None)
                .ok()
                .and_then(|ks| ks.into_iter().find(|k| k.id == key_id).map(|k| k.org_id));
            admin::audited(
                &store,
                &ring()?,
                rec,
                |s| admin::revoke_key(s, &key_id),
                |_, _| {},
            )
            .map_err(|e| e.to_string())?;
            Ok((
                serde_json::json!({"id": key_id, "revoked": true}),
                format!("revoked key {key_id}"),
            ))
        }
    }
}

fn credentials(cfg: &Config, c: CredentialsCmd) -> Outcome {
    match c {
        CredentialsCmd::Set {
            name,
            expires,
            mut input,
        } => {
            input.refuse_argv()?;
            let ring = keyring()?;
            let secret = input.read()?;
            let store = open_store(cfg)?;
            let mut rec = Record::admin("credential.set", &audit::cli_actor());
            rec.target_id = Some(name.clone());
            let view = admin::audited(
                &store,
                &ring,
                rec,
                |s| admin::set_credential(s, &ring, &name, &secret, expires.as_deref()),
                |v, r| {
                    r.details = serde_json::json!({
                        "name": v.name, "key_fingerprint": v.key_fingerprint, "expires_at": v.expires_at,
                    })
                },
            )
            .map_err(|e| e.to_string())?;
            warn_unused_credential(cfg, &name);
            let text = format!(
                "stored credential {} (sealed with master key {})",
                view.name, view.key_fingerprint
            );
            Ok((to_json(&view), text))
        }
        CredentialsCmd::SetOauth {
            name,
            token_url,
            client_id,
            scope,
            resource,
            grant,
            no_verify,
            mut input,
        } => {
            input.refuse_argv()?;

            let settings = oauth::Settings {
                token_url,
                client_id,
                scope,
                resource,
                grant: match grant {
                    GrantArg::ClientCredentials => oauth::Grant::ClientCredentials,
                    GrantArg::RefreshToken => oauth::Grant::RefreshToken,
                },
            };
            admin::check_oauth(&settings).map_err(|e| e.to_string())?;
            let ring = keyring()?;
            let mut secret = input.read()?;
            let store = open_store(cfg)?;
            let first = if no_verify {
                None
            } else {
                Some(oauth::first_token(&settings, &mut secret).map_err(|e| {
                    format!("no token from {} ({e}; code {}): nothing was stored. Check --token-url, --client-id and the secret, or pass --no-verify to store it anyway", settings.token_url, e.code())
                })?)
            };
            let mut rec = Record::admin("credential.set_oauth", &audit::cli_actor());
            rec.target_id = Some(name.clone());
            let view = admin::audited(
                &store,
                &ring,
                rec,
                |s| {
                    admin::set_oauth_credential(s, &ring, &name, &settings, &secret, first.as_ref())
                },
                |v, r| {
                    r.details = serde_json::json!({
                        "name": v.name, "key_fingerprint": v.key_fingerprint, "oauth": v.oauth,
                        "token_expires_at": v.token_expires_at,
                    })
                },
            )
            .map_err(|e| e.to_string())?;
            warn_unused_credential(cfg, &name);
            let text = format!(
                "stored OAuth credential {} (sealed with master key {}); {}",
                view.name,
                view.key_fingerprint,
                match &view.token_expires_at {
                    Some(t) => format!("first token obtained, valid until {t}"),
                    None => "no token obtained yet: `sluice serve` obtains it".into(),
                }
            );
            Ok((to_json(&view), text))
        }
        CredentialsCmd::List => {
            let store = open_store(cfg)?;
            let fp = keyring().ok().map(|r| r.fingerprint());
            let list = admin::list_credentials(&store, fp.as_deref()).map_err(|e| e.to_string())?;
            let text = list
                .iter()
                .map(|c| {
                    format!(
                        "{}  master_key={}{}  created={}  rotated={}  age_days={}  expires={}{}",
                        c.name,
                        c.key_fingerprint,
                        match c.current_key {
                            Some(true) => " (current)",
                            Some(false) => " (old: run `sluice secrets rotate`)",
                            None => "",
                        },
                        c.created_at,
                        c.rotated_at,
                        c.age_days,
                        or_none(&c.expires_at),
                        if c.expired { "  EXPIRED" } else { "" }
                    ) + &oauth_state(c)
                })
                .collect::<Vec<_>>()
                .join("\n");
            Ok((serde_json::json!({ "credentials": list }), text))
        }
        CredentialsCmd::Delete { name } => {
            let store = open_store(cfg)?;
            let ring = keyring()?;
            let mut rec = Record::admin("credential.delete", &audit::cli_actor());
            rec.target_id = Some(name.clone());
            admin::audited(
                &store,
                &ring,
                rec,
                |s| admin::delete_credential(s, &name),
                |_, _| {},
            )
            .map_err(|e| e.to_string())?;
            Ok((
                serde_json::json!({"name": name, "deleted": true}),
                format!("deleted credential {name}"),
            ))
        }
    }
}

/// The OAuth part of a `credentials list` line (empty for a static credential).
fn oauth_state(c: &admin::CredentialView) -> String {
    let Some(o) = &c.oauth else {
        return String::new();
    };
    let mut s = format!(
        "  kind=oauth grant={} token_url={} token_expires={}",
        match o.grant {
            oauth::Grant::ClientCredentials => "client_credentials",
            oauth::Grant::RefreshToken => "refresh_token",
        },
        o.token_url,
        or_none(&c.token_expires_at)
    );
    if let Some(e) = &c.last_error {
        s.push_str(&format!(
            "  REFRESH FAILING ({e}, {} failures)",
            c.refresh_failures.unwrap_or(0)
        ));
    }
    s
}

/// Refuse extra arguments after a credential's name: they are likely a secret.
fn refuse_argv_secret(rest: Vec<String>) -> Result<(), String> {
    if rest.is_empty() {
        return Ok(());
    }
    // Drop (and wipe) whatever was typed without looking at it.
    let rest: Vec<Zeroizing<String>> = rest.into_iter().map(Zeroizing::new).collect();
    drop(rest);
    Err("refusing extra command-line arguments: a secret on the command line is visible in `ps` and shell history. Pipe it on standard input: `printf %s \"$KEY\" | sluice credentials set NAME`".into())
}

/// Warn when neither an upstream nor an MCP server of the config uses credential `name`.
fn warn_unused_credential(cfg: &Config, name: &str) {
    let used = cfg
        .upstreams
        .iter()
        .any(|u| u.credential.as_deref() == Some(name))
        || cfg
            .mcp_servers
            .iter()
            .any(|m| m.credential.as_deref() == Some(name));
    if !used {
        eprintln!(
            "sluice: warning: no upstream or MCP server in the config uses credential {name:?}"
        );
    }
}

/// Read a secret from a file (a mounted Kubernetes Secret, say), bounded; one trailing newline
/// stripped.
fn read_secret_file(file: &Path) -> Result<Zeroizing<String>, String> {
    let mut raw = Zeroizing::new(Vec::new());
    std::fs::File::open(file)
        .and_then(|f| {
            f.take(admin::MAX_SECRET_BYTES as u64 + 3)
                .read_to_end(&mut raw)
        })
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    admin::secret_from_input(raw).map_err(|e| format!("{}: {e}", file.display()))
}

/// Read the secret from standard input, bounded.
fn read_secret() -> Result<Zeroizing<String>, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("sluice: reading the secret from standard input; end with Ctrl-D");
    }
    let mut raw = Zeroizing::new(Vec::with_capacity(256));
    stdin
        .lock()
        .take(admin::MAX_SECRET_BYTES as u64 + 3)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    admin::secret_from_input(raw).map_err(|e| e.to_string())
}

fn rotate(cfg: &Config) -> Outcome {
    let ring = keyring()?;
    let store = open_store(cfg)?;
    let r = admin::audited(
        &store,
        &ring,
        Record::admin("secrets.rotate", &audit::cli_actor()),
        |s| admin::rotate(s, &ring),
        |v, r| {
            r.details =
                serde_json::json!({"rotated": v.rotated, "key_fingerprint": v.key_fingerprint})
        },
    )
    .map_err(|e| e.to_string())?;
    let text = format!(
        "re-encrypted {} credential(s), {} org audit key(s) and {} TOTP seed(s) under master key {}",
        r.rotated, r.org_keys_rotated, r.totp_rotated, r.key_fingerprint
    );
    Ok((to_json(&r), text))
}

fn serve(config: Option<PathBuf>, dev: bool) -> i32 {
    let cfg = match load(config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&cfg);
    match &config {
        Some(p) => tracing::info!(config = %p.display(), "config loaded"),
        None => tracing::info!("config: compiled-in default (conf/sluice.toml)"),
    }
    if !cfg.listen.proxy.ip().is_loopback() {
        tracing::warn!(addr = %cfg.listen.proxy, "data plane listens on a non-loopback address");
    }
    let ring = match if dev { dev_keyring(&cfg) } else { keyring() } {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: {e}");
            return EXIT_FAILED;
        }
    };
    if dev {
        if let Err(e) = dev_setup(&cfg, &ring) {
            eprintln!("sluice: {e}");
            return EXIT_FAILED;
        }
    }
    let sessions = match if dev {
        dev_jwt(&cfg)
    } else {
        admin::session::Sessions::from_env(cfg.admin.session_ttl).map_err(|e| e.to_string())
    } {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: {e}");
            return EXIT_FAILED;
        }
    };
    match crate::proxy::serve(cfg, ring, sessions) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("sluice: {e}");
            EXIT_FAILED
        }
    }
}

/// `serve --dev`: the master key from the environment if set, else from (or into) a 0600 file
/// beside the database.
fn dev_keyring(cfg: &Config) -> Result<Keyring, String> {
    if std::env::var_os(vault::KEY_ENV).is_some() {
        return keyring();
    }
    let dir = cfg
        .store
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(DEV_KEY_FILE);
    let b64 = dev_secret_file(&path)?;
    let warning = format!(
        "DEV MODE: the master key is stored in plain text in {} next to the database; anyone who can read both can decrypt every credential. Never use --dev in production: pass SLUICE_SECRETS_KEY from a secret store instead.",
        path.display()
    );
    eprintln!("sluice: WARNING: {warning}");
    tracing::warn!("{warning}");
    Keyring::new(&b64, &[]).map_err(|e| format!("{}: {e}", path.display()))
}

/// A `--dev` secret kept in a 0600 file: read it, or create it with a fresh random 32-byte
/// value (base64) when it does not exist.
fn dev_secret_file(path: &Path) -> Result<Zeroizing<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            Ok(Zeroizing::new(s))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keyring::generate();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            f.write_all(key.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// `serve --dev`: the JWT secret from the environment if set, else from (or into) a 0600 file
/// beside the database.
fn dev_jwt(cfg: &Config) -> Result<Option<admin::session::Sessions>, String> {
    use admin::session::{Sessions, JWT_ENV};
    if std::env::var_os(JWT_ENV).is_some() {
        return Sessions::from_env(cfg.admin.session_ttl).map_err(|e| e.to_string());
    }
    let dir = cfg
        .store
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let path = dir.join(DEV_JWT_FILE);
    let secret = dev_secret_file(&path)?;
    Sessions::new(secret.trim().as_bytes(), cfg.admin.session_ttl)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn dev_setup(cfg: &Config, ring: &Keyring) -> Result<(), String> {
    let store = open_store(cfg)?;
    let mut names: Vec<String> = cfg
        .upstreams
        .iter()
        .filter_map(|u| u.credential.clone())
        .collect();
    names.sort();
    names.dedup();
    let openai = std::env::var("OPENAI_API_KEY").ok().map(Zeroizing::new);
    let setup = admin::audited(
        &store,
        ring,
        Record::admin("dev.bootstrap", &audit::cli_actor()),
        |s| {
            admin::dev_bootstrap(
                s,
                ring,
                &names,
                openai.as_ref().map(|s| s.as_str()),
                pii_default(cfg),
            )
        },
        |d, r| {
            r.org_id = d.created.as_ref().map(|(o, _)| o.id.clone());
            r.target_id = d.created.as_ref().map(|(_, k)| k.id.clone());
            r.details = serde_json::json!({
                "created_org_and_key": d.created.is_some(),
                "credentials_set": d.credentials_set,
            });
        },
    )
    .map_err(|e| e.to_string())?;
    if let Some((org, key)) = &setup.created {
        println!(
            "sluice dev mode: created org {:?} ({}) and an API key (shown only this once):\n\n    {}\n\nexport OPENAI_BASE_URL=http://{}/v1 OPENAI_API_KEY=<the key above>",
            org.name,
            org.id,
            key.key.as_str(),
            cfg.listen.proxy
        );
        let _ = std::io::stdout().flush();
    }
    for name in &setup.credentials_set {
        tracing::info!(credential = %name, "dev mode: stored OPENAI_API_KEY as upstream credential");
    }
    if openai.is_none() {
        for name in &names {
            if !store
                .credentials()
                .map_err(|e| e.to_string())?
                .iter()
                .any(|c| &c.name == name)
            {
                tracing::warn!(credential = %name, "dev mode: OPENAI_API_KEY is not set and the credential is missing; requests to its upstream get 503 credential_unavailable");
            }
        }
    }
    Ok(())
}

fn healthcheck(config: Option<PathBuf>, ready: bool) -> i32 {
    let cfg = match load(config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let path = if ready { "/readyz" } else { "/healthz" };
    let mut addr = cfg.listen.admin;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let check = || -> std::io::Result<bool> {
        let t = std::time::Duration::from_secs(2);
        let mut s = std::net::TcpStream::connect_timeout(&addr, t)?;
        s.set_read_timeout(Some(t))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.1 200"))
    };
    match check() {
        Ok(true) => 0,
        Ok(false) => {
            eprintln!("sluice: {path} on {addr} is not 200");
            EXIT_FAILED
        }
        Err(e) => {
            eprintln!("sluice: cannot reach {path} on {addr}: {e}");
            EXIT_FAILED
        }
    }
}

fn bootstrap(
    cfg: &Config,
    org_name: &str,
    region: Option<Region>,
    key_file: &Path,
    credentials: &[String],
) -> Outcome {
    // Validate everything before changing anything.
    let mut creds = Vec::new();
    for c in credentials {
        let (name, file) = c
            .split_once('=')
            .ok_or_else(|| format!("--credential {c:?} must be NAME=FILE"))?;
        creds.push((name.to_string(), read_secret_file(Path::new(file))?));
    }
    let ring = keyring()?;
    let store = open_store(cfg)?;
    let actor = Actor::cli();
    let org = match store
        .orgs()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|o| o.name == org_name)
    {
        Some(o) => o,
        None => {
            let spec = admin::OrgSpec {
                name: org_name.to_string(),
                region,
                ..admin::OrgSpec::default()
            };
            admin::create_org_as(
                &store,
                &ring,
                &actor,
                &spec,
                pii_default(cfg),
                Some("bootstrap"),
            )
            .map_err(|e| e.to_string())?
        }
    };
    let mut key_created = false;
    if !key_file.exists() {
        // Create the file first (0600, must not exist), then the key, so a key is never
        // created without a place to put it.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(key_file)
            .map_err(|e| format!("cannot create {}: {e}", key_file.display()))?;
        let spec = admin::KeySpec::inheriting(&org.id, "bootstrap");
        let k = match admin::create_key_as(&store, &ring, &actor, &spec, Some("bootstrap")) {
            Ok(k) => k,
            Err(e) => {
                let _ = std::fs::remove_file(key_file);
                return Err(e.to_string());
            }
        };
        f.write_all(k.key.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", key_file.display()))?;
        key_created = true;
    }
    let mut set = Vec::new();
    {
        let stored = store.credentials().map_err(|e| e.to_string())?;
        for (name, secret) in &creds {
            let same = stored.iter().find(|c| &c.name == name).is_some_and(|c| {
                ring.open(&c.sealed, &vault::aad("credentials", &c.id, &c.name))
                    .is_ok_and(|p| p.as_slice() == secret.as_bytes())
            });
            if same {
                continue;
            }
            let mut rec = actor.record("credential.set", None);
            rec.target_id = Some(name.clone());
            admin::audited(
                &store,
                &ring,
                rec,
                |s| admin::set_credential(s, &ring, name, secret, None),
                |v, r| r.details = serde_json::json!({"name": v.name, "key_fingerprint": v.key_fingerprint, "via": "bootstrap"}),
            )
            .map_err(|e| e.to_string())?;
            set.push(name.clone());
        }
    }
    let text = format!(
        "org {} ({}); key file {}{}; credentials set: {}",
        org.name,
        org.id,
        key_file.display(),
        if key_created { " created" } else { " kept" },
        if set.is_empty() {
            "none".to_string()
        } else {
            set.join(", ")
        }
    );
    Ok((
        serde_json::json!({"org_id": org.id, "key_created": key_created, "credentials_set": set}),
        text,
    ))
}

/// An audit row for export: `details` as a JSON object, not a string.
fn audit_line(r: &crate::store::AuditRow) -> String {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(d) = v.get_mut("details") {
        let parsed = d
            .as_str()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok());
        if let Some(p) = parsed {
            *d = p;
        }
    }
    v.to_string()
}

fn rfc3339_utc(s: &str) -> Result<String, String> {
    use time::format_description::well_known::Rfc3339;
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    let t = time::OffsetDateTime::parse(&full, &Rfc3339)
        .map_err(|_| format!("{s:?} is not an RFC 3339 time or a YYYY-MM-DD date"))?;
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| e.to_string())
}

fn audit_command(config: Option<PathBuf>, json: bool, c: AuditCmd) -> i32 {
    let cfg = match load(config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store = match open_store(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: {e}");
            return EXIT_FAILED;
        }
    };
    let fail = |m: String| {
        eprintln!("sluice: {m}");
        if json {
            print_json(&serde_json::json!({"error": {"message": m}}));
        }
        EXIT_FAILED
    };
    let mut out = std::io::stdout().lock();
    match c {
        AuditCmd::Verify => match audit::verify_store(&store) {
            Err(e) => fail(e.to_string()),
            Ok(Ok(n)) => {
                if json {
                    print_json(&serde_json::json!({"ok": true, "records": n}));
                } else {
                    println!("audit log intact: {n} records");
                }
                0
            }
            Ok(Err(b)) => {
                if json {
                    print_json(&serde_json::json!({"ok": false, "broken": {
                        "seq": b.seq, "id": b.id, "reason": b.reason}}));
                }
                eprintln!("sluice: {b}");
                EXIT_FAILED
            }
        },
        AuditCmd::Tail { org, lines, follow } => {
            // Readable output: sealed fields opened when the master key is at hand.
            let ring = Keyring::from_env().ok();
            if ring.is_none() {
                eprintln!("sluice: SLUICE_SECRETS_KEY is not set: org records are shown with their personal fields sealed");
            }
            let mut keys = ring.as_ref().map(audit::OrgKeys::new);
            let start = if lines <= 0 {
                // Nothing old: only what is written from now on.
                store.audit_tail().map(|t| t.map_or(0, |(seq, _)| seq))
            } else {
                store.audit_seq_before_last(lines, org.as_deref())
            };
            let mut after = match start {
                Ok(a) => a,
                Err(e) => return fail(e.to_string()),
            };
            loop {
                let rows = match store.audit_rows(after, org.as_deref(), None, 1000) {
                    Ok(r) => r,
                    Err(e) => return fail(e.to_string()),
                };
                for r in rows.iter() {
                    after = r.seq;
                    let shown = match keys.as_mut() {
                        Some(k) => k.open_row(&store, r.clone()),
                        None => r.clone(),
                    };
                    if writeln!(out, "{}", audit_line(&shown)).is_err() {
                        return 0; // reader went away (e.g. `| head`)
                    }
                }
                let _ = out.flush();
                if !follow {
                    return 0;
                }
                if rows.is_empty() {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            }
        }
        AuditCmd::Export {
            since,
            org,
            decrypt,
        } => {
            let since = match since.as_deref().map(rfc3339_utc).transpose() {
                Ok(s) => s,
                Err(m) => return fail(m),
            };
            let ring = if decrypt {
                match keyring() {
                    Ok(r) => Some(r),
                    Err(m) => return fail(m),
                }
            } else {
                None
            };
            let mut keys = ring.as_ref().map(audit::OrgKeys::new);
            let mut after = 0;
            loop {
                let rows = match store.audit_rows(after, org.as_deref(), since.as_deref(), 5000) {
                    Ok(r) => r,
                    Err(e) => return fail(e.to_string()),
                };
                let Some(last) = rows.last() else { break };
                after = last.seq;
                for r in &rows {
                    let shown = match keys.as_mut() {
                        Some(k) => k.open_row(&store, r.clone()),
                        None => r.clone(),
                    };
                    if writeln!(out, "{}", audit_line(&shown)).is_err() {
                        return fail("cannot write the export".into());
                    }
                }
            }
            if out.flush().is_err() {
                return fail("cannot write the export".into());
            }
            // A complete export allows pruning what it covered.
            if since.is_none() && org.is_none() && after > 0 {
                if let Err(e) = store.mark_audit_exported(after) {
                    return fail(e.to_string());
                }
            }
            0
        }
        AuditCmd::Prune { before, force } => {
            let before = match rfc3339_utc(&before) {
                Ok(b) => b,
                Err(m) => return fail(m),
            };
            match audit::prune(&store, &before, force, &audit::cli_actor()) {
                Ok(p) => {
                    if json {
                        print_json(&to_json(&p));
                    } else {
                        println!(
                            "pruned {} record(s) through seq {}; a checkpoint record keeps the chain verifiable",
                            p.pruned, p.through_seq
                        );
                    }
                    0
                }
                Err(e) => fail(e.to_string()),
            }
        }
    }
}

/// `sluice redact`: JSON when stdin is a JSON document, text otherwise.
fn redact(json: bool) -> i32 {
    let mut input = Vec::new();
    let limit = 64 << 20;
    if let Err(e) = std::io::stdin()
        .lock()
        .take(limit as u64 + 1)
        .read_to_end(&mut input)
    {
        eprintln!("sluice: cannot read standard input: {e}");
        return EXIT_FAILED;
    }
    if input.len() > limit {
        eprintln!("sluice: input larger than {limit} bytes");
        return EXIT_FAILED;
    }
    let Ok(text) = String::from_utf8(input) else {
        eprintln!("sluice: input is not UTF-8");
        return EXIT_FAILED;
    };
    let engine = crate::redact::Engine::new();
    let mut counts = crate::redact::Counts::default();
    let scan = crate::redact::Scan::ALL;
    let (format, output) = match engine.redact_json(&text, scan, &mut counts) {
        Ok(r) => ("json", r.unwrap_or(text)),
        Err(_) => {
            counts = Default::default();
            let r = engine.redact_text(&text, scan, &mut counts);
            ("text", r.unwrap_or(text))
        }
    };
    if json {
        print_json(&serde_json::json!({"format": format, "output": output, "counts": counts}));
    } else {
        print!("{output}");
        let _ = std::io::stdout().flush();
        let summary = counts.header_value();
        eprintln!(
            "sluice: {format}: {}",
            if summary.is_empty() {
                "nothing redacted"
            } else {
                &summary
            }
        );
    }
    0
}

fn check_config(config: Option<PathBuf>, json: bool) -> i32 {
    match load(config.as_deref()) {
        Ok(_) => {
            if json {
                print_json(&serde_json::json!({"ok": true}));
            } else {
                println!("config ok");
            }
            0
        }
        Err(code) => {
            if json {
                print_json(&serde_json::json!({"ok": false}));
            }
            code
        }
    }
}

/// Logs go to stderr. pingora's own records are capped at `warn` unless the level names them:
/// its debug output can contain raw request bytes.
fn init_logging(cfg: &Config) {
    let mut directives = cfg.log.level.clone();
    if !directives.contains("pingora") {
        directives.push_str(",pingora_core=warn,pingora_proxy=warn");
    }
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}
