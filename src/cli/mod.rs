//! The command line. One function per subcommand; each parses its arguments and calls library
//! functions (`admin` for everything that changes the store). Exit codes: 0 success, 1 the
//! operation failed or was refused (nothing was changed), 2 bad usage, 64 (EX_USAGE) invalid
//! configuration.
//!
//! Every command takes `--config` (or `SLUICE_CONFIG`) and `--json`; with `--json` a command
//! prints exactly one JSON object on stdout, `{"error": {"message": ...}}` on failure.
//!
//! This module holds the clap schema (the contract operators script against), the dispatch
//! and the shared rendering helpers; each submodule is one job: `orgs`, `keys`, `users`,
//! `credentials` (and `secrets rotate`), `audit_cmd`, `bootstrap`, `serve` (and `--dev`'s
//! first run), `dev` (its secret files), `health` (the probe client) and `tools` (`redact`,
//! `check-config`, `apply`). The operations themselves live in [`crate::admin`].

use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use tracing_subscriber::EnvFilter;
use zeroize::Zeroizing;

use crate::admin::{self, Actor, KeySetting, Setting};
use crate::audit;
use crate::auth::oauth;
use crate::config::{Config, LoadError, LogFormat};
use crate::residency::Region;
use crate::store::Store;
use crate::vault::{self, Keyring};

mod audit_cmd;
mod bootstrap;
mod credentials;
mod dev;
mod health;
mod keys;
mod orgs;
mod policy_args;
mod serve;
mod tools;
mod users;

use audit_cmd::*;
use bootstrap::*;
use credentials::*;
use dev::*;
use health::*;
use keys::*;
use orgs::*;
use policy_args::*;
use serve::*;
use tools::*;
use users::*;

/// How the command line words a failure: the library's message, with flags and commands where
/// the library names fields (`token_url` is `--token-url` here) and steps.
trait Phrase {
    fn phrase(self) -> String;
}

impl Phrase for admin::Error {
    fn phrase(self) -> String {
        match self {
            admin::Error::Field { field, reason } => {
                format!("--{} {reason}", field.replace('_', "-"))
            }
            admin::Error::TotpRequired { role, user_id } => format!(
                "role {role} requires TOTP: enrol it first (`sluice users enroll-totp {user_id}`)"
            ),
            admin::Error::EmptySecret => "the secret is empty: pipe it on standard input, e.g. `printf %s \"$KEY\" | sluice credentials set NAME`".into(),
            e => e.to_string(),
        }
    }
}

/// Errors the command line shows as their library message.
macro_rules! phrase_as_message {
    ($($t:ty),* $(,)?) => {
        $(impl Phrase for $t {
            fn phrase(self) -> String {
                self.to_string()
            }
        })*
    };
}

phrase_as_message!(
    crate::store::Error,
    crate::vault::Error,
    crate::admin::session::SecretError,
    std::io::Error,
    time::error::Format,
);

/// [`Phrase::phrase`], for `map_err`.
fn phrase(e: impl Phrase) -> String {
    e.phrase()
}

/// The command line's spelling of the domain's settings and roles (the domain types know
/// nothing of clap): each value as stored, with its help.
macro_rules! value_enum {
    ($t:ty: $($v:path => $help:literal),+ $(,)?) => {
        impl clap::ValueEnum for $t {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($v),+]
            }

            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                let help = match *self {
                    $($v => $help,)+
                };
                let v = clap::builder::PossibleValue::new(self.as_str());
                Some(if help.is_empty() { v } else { v.help(help) })
            }
        }
    };
}

value_enum!(Setting: Setting::On => "", Setting::Off => "");
value_enum!(KeySetting: KeySetting::On => "", KeySetting::Off => "", KeySetting::Inherit => "");
value_enum!(admin::users::Role:
    admin::users::Role::Auditor => "Read-only: audit log and key metadata",
    admin::users::Role::Member => "Their own account only",
    admin::users::Role::Admin => "Keys, users (not owners), org settings, audit log",
    admin::users::Role::Owner => "Everything in the org, including owners and the hard delete",
);

/// Exit code for an invalid configuration (sysexits EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;

/// Exit code for a refused or failed operation.
pub const EXIT_FAILED: i32 = 1;

/// Exit code for a master key (`SLUICE_SECRETS_KEY`) that is not the store's: nothing written.
pub const EXIT_WRONG_KEY: i32 = 3;

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
    /// Outbound TLS helpers.
    #[command(subcommand)]
    Tls(TlsCmd),
    /// Make the running sluice (the one this config's admin address reaches) read its config
    /// file again, as SIGHUP does: prints what was applied and what waits for a restart. Exit
    /// 0 when applied or unchanged, 64 when the file is invalid (the running config is kept),
    /// 1 when sluice cannot be reached or the reload failed (the running config is kept).
    Reload,
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
        #[command(flatten)]
        settings: OrgArgs,
    },
    /// List orgs.
    List,
    /// Change an org's default region, PII, secrets, response redaction, MCP lists or limits.
    Update {
        org_id: String,
        #[command(flatten)]
        settings: OrgArgs,
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
        #[command(flatten)]
        change: KeyChangeArgs,
    },
    /// Revoke a key; a running `serve` refuses it within a second.
    Revoke { key_id: String },
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
        /// A pin of the token endpoint's leaf certificate (`sha256/<base64>`, as `sluice tls
        /// pin` prints it); repeat for several. Its TLS otherwise follows `[tls]`.
        #[arg(long = "pin")]
        pins: Vec<String>,
        /// Store it without obtaining a first token (the running `serve` obtains it).
        #[arg(long)]
        no_verify: bool,
        #[command(flatten)]
        input: SecretInput,
    },
    /// Connect an OAuth credential with the authorization code grant and PKCE, as hosted MCP
    /// servers require: the authorization server is discovered from the MCP server (RFC 9728,
    /// RFC 8414), sluice registers itself there (RFC 7591) unless --client-id is given, and
    /// prints a URL to open in a browser. The browser comes back to the admin listener's
    /// /oauth/callback (a running `sluice serve`), or with --paste you paste the URL it was
    /// sent to. The tokens are stored sealed and refreshed like set-oauth's. Needs
    /// SLUICE_SECRETS_KEY.
    Connect {
        name: String,
        /// A configured MCP server ([[mcp_servers]] name): its URL is the protected resource.
        #[arg(long, conflicts_with = "resource")]
        mcp_server: Option<String>,
        /// The protected resource's URL (an LLM upstream or MCP server not in the config).
        #[arg(long)]
        resource: Option<String>,
        /// The authorization server's issuer, when the resource names none (or several).
        #[arg(long)]
        issuer: Option<String>,
        /// A client registered at the authorization server (default: register dynamically).
        #[arg(long)]
        client_id: Option<String>,
        /// Read that client's secret from this file (a confidential client).
        #[arg(long, requires = "client_id")]
        client_secret_file: Option<PathBuf>,
        /// Space-separated scopes (default: what the resource, else the server, lists).
        #[arg(long)]
        scope: Option<String>,
        /// Where the browser comes back (loopback only; default: the admin listener's
        /// /oauth/callback).
        #[arg(long)]
        redirect_uri: Option<String>,
        /// Read the URL the browser was sent to from standard input instead of waiting for the
        /// callback (a machine the browser cannot reach).
        #[arg(long)]
        paste: bool,
        /// Seconds to wait for the callback (at most 600: the state expires then).
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=600))]
        timeout: u64,
    },
    /// List credentials: names, kinds, master-key fingerprints, ages, expiry and OAuth token
    /// state; never secrets.
    List,
    /// Delete a credential. A connected credential's tokens are revoked at its authorization
    /// server first (RFC 7009, when it has a revocation endpoint); the local delete happens
    /// even when that fails.
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
        /// Start after this record (`seq` of the last one a shipper has): resume without
        /// gaps or repeats. Replaces -n.
        #[arg(long)]
        after: Option<i64>,
        /// Keep printing new records. SIGTERM or SIGINT ends it after printing every record
        /// written until then.
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
enum TlsCmd {
    /// Connect to an https:// URL, verify its certificate (against --ca-file, else `[tls]
    /// ca_file`, else the bundled Mozilla roots) and print the pin of its leaf certificate
    /// (`sha256/<base64>`), for an upstream's or MCP server's `pins`.
    Pin {
        /// https://host[:port][/path]
        #[arg(long)]
        url: String,
        /// A PEM bundle of CAs to verify it against instead.
        #[arg(long)]
        ca_file: Option<PathBuf>,
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
        Command::Tls(TlsCmd::Pin { url, ca_file }) => {
            admin_command(config, json, |cfg| tls_pin(cfg, &url, ca_file.as_deref()))
        }
        Command::Healthcheck { ready } => healthcheck(config, ready, json),
        Command::Reload => reload(config, json),
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

/// clap's errors echo the offending argument. For the commands that handle secrets that could
/// print a secret typed on the command line, so those get a message that echoes nothing.
fn usage_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return 0;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    // With `--json`, the error is the one JSON object on standard output, as for every other
    // failure (`{"error": {"message", "code": "usage"}}`); the exit code is 2 either way.
    let json = args.iter().any(|a| a == "--json");
    let message = match args
        .iter()
        .find(|a| *a == "credentials" || *a == "secrets" || *a == "users")
    {
        Some(cmd) => format!(
            "invalid arguments for `{cmd}` (not echoed: they may contain a secret). See `sluice {cmd} --help`; secrets are read from standard input only."
        ),
        None if json => {
            let text = e.render().to_string();
            text.trim().trim_start_matches("error: ").to_string()
        }
        None => {
            let _ = e.print();
            return 2;
        }
    };
    if json {
        print_json(&serde_json::json!({"error": {"message": message, "code": "usage"}}));
    }
    eprintln!("sluice: {message}");
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

/// A command's outcome: a JSON value and its text rendering, or why it failed.
type Outcome = Result<(serde_json::Value, String), Failure>;

/// Why a command failed: its message and exit code ([`EXIT_FAILED`] unless said otherwise).
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    code: i32,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            code: EXIT_FAILED,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::from(message.to_string())
    }
}

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
        Err(Failure { message, code }) => {
            eprintln!("sluice: {message}");
            if json {
                print_json(&serde_json::json!({"error": {"message": message}}));
            }
            code
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
    let path = &cfg.store.path;
    let new = !path.exists();
    let store = Store::open_limited(path, cfg.store.max_bytes)
        .map_err(|e| format!("cannot open the store {}: {e}", path.display()))?;
    if new {
        // A command run without the config that names the real store would otherwise write a
        // store of its own, silently (then `serve --config ...` refuses the key it printed).
        eprintln!(
            "sluice: note: created a new, empty store at {} (the store of the config in use: pass --config or set SLUICE_CONFIG for another)",
            path.display()
        );
    }
    Ok(store)
}

fn keyring() -> Result<Keyring, String> {
    Keyring::from_env().map_err(phrase)
}

/// The master key, checked against what `store` already holds before anything is written
/// under it: another store's key exits with [`EXIT_WRONG_KEY`], the store untouched.
fn keyring_for(store: &Store) -> Result<Keyring, Failure> {
    let ring = keyring()?;
    check_key(store, &ring)?;
    Ok(ring)
}

/// See [`keyring_for`], for a key read earlier.
fn check_key(store: &Store, ring: &Keyring) -> Result<(), Failure> {
    match admin::check_master_key(store, ring) {
        Ok(()) => Ok(()),
        Err(e @ admin::Error::WrongMasterKey { .. }) => Err(Failure {
            message: e.to_string(),
            code: EXIT_WRONG_KEY,
        }),
        Err(e) => Err(phrase(e).into()),
    }
}

fn or_none(v: &Option<impl std::fmt::Display>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// An org given on the command line by its id or its name (names are unique), as its id. One
/// that is neither goes on as given: the operation then fails as for an unknown id (audited).
fn org_id(store: &Store, given: &str) -> Result<String, Failure> {
    let orgs = store.orgs().map_err(phrase)?;
    if orgs.iter().any(|o| o.id == given) {
        return Ok(given.to_string());
    }
    Ok(orgs
        .iter()
        .find(|o| o.name == given)
        .map_or_else(|| given.to_string(), |o| o.id.clone()))
}

/// Say at once when a region a command pins has no upstream in this config (its requests would
/// get 503 region_unavailable): not only at the next start.
fn warn_unserved(cfg: &Config, region: Option<Region>, what: &str) {
    if let Some(r) = region.filter(|r| !cfg.serves(*r)) {
        eprintln!(
            "sluice: warning: no [[upstreams]] entry of this config serves region {}: this {what}'s requests get 503 region_unavailable until one does",
            r.as_str()
        );
    }
}

/// A region, or `-` for none.
fn region_or_none(r: Option<Region>) -> &'static str {
    r.map_or("-", Region::as_str)
}

/// The PII setting of orgs created without one (`[pii] default`).
fn pii_default(cfg: &Config) -> Setting {
    if cfg.pii.default_on {
        Setting::On
    } else {
        Setting::Off
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enrolment_is_shown_as_a_terminal_qr_code_and_its_uri() {
        let uri =
            "otpauth://totp/sluice:a%40b.co?secret=DNMXX34W25PSLXF34PAL3NAVTSN4BLMG&issuer=sluice";
        let e = admin::users::Enrollment {
            otpauth_uri: zeroize::Zeroizing::new(uri.to_string()),
            recovery_codes: vec![zeroize::Zeroizing::new("rt7xn-q47cf-qpwqv-z3b9r".into())],
        };
        let text = users::show_enrollment(&e);
        assert!(text.contains(uri) && text.contains("rt7xn-q47cf-qpwqv-z3b9r"));
        // A QR code of a few dozen half-block rows, each as wide as the next.
        let rows: Vec<&str> = text.lines().filter(|l| l.contains('█')).collect();
        assert!(rows.len() > 15, "{text}");
        assert!(rows
            .iter()
            .all(|r| r.chars().count() == rows[0].chars().count()));
    }

    #[test]
    fn library_errors_are_worded_with_flags_and_commands() {
        let field = admin::Error::Field {
            field: "token_url",
            reason: "has no host".into(),
        };
        assert_eq!(field.to_string(), "token_url has no host");
        assert_eq!(phrase(field), "--token-url has no host");
        let totp = admin::Error::TotpRequired {
            role: admin::users::Role::Admin,
            user_id: "u1".into(),
        };
        assert!(phrase(totp).contains("`sluice users enroll-totp u1`"));
        assert!(phrase(admin::Error::EmptySecret).contains("standard input"));
        assert!(!admin::Error::EmptySecret.to_string().contains("sluice"));
    }
}
