//! The command line. Secrets are never arguments (they would land in shell history and
//! `ps`): they come from stdin or a file.

use clap::{Args, Parser, Subcommand};
use mailgate_core::account::{InboundProtocol, OnReceived};
use mailgate_core::app::{AppKind, OAuthFlow, parse_extra_param};
pub use mailgate_core::input::InboundChoice;
use mailgate_core::{ClientId, EmailAddress, Host, HttpUrl, Name, Port, Scopes, TenantId, TlsMode};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "mailgate",
    version,
    about = "OAuth2 mail gateway for Microsoft 365, Google and other OAuth2 mail servers"
)]
pub struct Cli {
    /// Configuration file (TOML). Also MAILGATE_CONFIG.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process; boxing variants would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: admin UI, API, OAuth callback and background jobs.
    Serve,
    /// OAuth apps (the registration at Microsoft, Google or another provider).
    #[command(subcommand)]
    App(AppCommand),
    /// Mail accounts (one mailbox each).
    #[command(subcommand)]
    Account(AccountCommand),
    /// API tokens for applications calling /api/v1.
    #[command(subcommand, name = "api-token")]
    ApiToken(ApiTokenCommand),
    /// People who sign in to the admin UI.
    #[command(subcommand)]
    User(UserCommand),
    /// Recent events: state changes, warnings, configuration changes.
    Events {
        /// Only this account's events.
        #[arg(long)]
        account: Option<String>,
        /// Only changes made by this actor: a user name, `api-token:NAME`, `cli:USER`, or
        /// `cli` / `api-token` for every one of that kind.
        #[arg(long)]
        actor: Option<String>,
        /// Only events at or after this date (YYYY-MM-DD, UTC) or RFC 3339 time.
        #[arg(long, value_name = "WHEN", value_parser = mailgate_core::event::parse_since)]
        since: Option<mailgate_core::Timestamp>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// The master keys that encrypt secrets at rest.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Write a consistent copy of the database to FILE (0600) while `serve` runs. Sealed
    /// secrets stay encrypted and the key file is not included: keep it apart.
    Backup {
        file: std::path::PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Bring the database's schema up to date and say what was applied. `serve` and every
    /// command also migrate when they open the database; run this first to upgrade under
    /// control (several instances on one PostgreSQL: migrate once, then start them).
    /// A database migrated by a newer mailgate is refused.
    Migrate {
        #[arg(long)]
        json: bool,
    },
    /// Write all of mailgate's data to FILE (JSON lines, 0600), to move it to another
    /// database (SQLite or PostgreSQL) with `import`. Sealed secrets stay encrypted and the
    /// key file is not included: the target needs the same key. Stop `serve` first for an
    /// exact copy.
    Export {
        file: std::path::PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Load an `export` FILE into the configured database (same mailgate version). Refused
    /// when the database holds data unless --force (which replaces everything in it), and
    /// when the key file lacks a key the export's secrets are sealed with.
    Import {
        file: std::path::PathBuf,
        /// Replace everything in the database.
        #[arg(long)]
        force: bool,
    },
    /// Restore a backup into the configured database. Refused while a `serve` of this data
    /// directory runs, over an existing database unless --force, and when the key file lacks
    /// a key the backup's secrets were sealed with.
    Restore {
        file: std::path::PathBuf,
        /// Replace the existing database.
        #[arg(long)]
        force: bool,
    },
    /// Authorize an account: prints the sign-in link and waits for the running server to
    /// receive the callback; `--device` for servers without a browser; app-only flows
    /// (client credentials, service account) fetch the first token directly.
    Authorize {
        /// Name or id.
        account: String,
        /// Use the device-code flow: enter a code on another device.
        #[arg(long)]
        device: bool,
        /// Print the link and return without waiting for the callback.
        #[arg(long)]
        no_wait: bool,
    },
    /// Test an account's configuration: DNS, TCP, TLS, greeting, OAuth offered, token,
    /// authenticate, select/stat, send a test message and find it in the inbox. Exit code 1
    /// when a step fails.
    Test {
        /// Name or id.
        account: String,
        /// Send the test message here instead of to the mailbox itself (then it is not looked for).
        #[arg(long, value_parser = EmailAddress::parse)]
        to: Option<EmailAddress>,
        /// The steps as JSON (see docs/test-configuration.md).
        #[arg(long)]
        json: bool,
        /// Limit for every network operation, in seconds.
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=300))]
        step_timeout: u64,
        /// How long to look for the test message in the inbox, in seconds.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
        find_within: u64,
    },
    /// Print a fresh access token for an account (refreshing it first if needed), for
    /// msmtp's passwordeval, mutt, `curl --oauth2-bearer` and scripts.
    Token {
        /// Name or id.
        account: String,
        /// JSON with the token, its expiry and scopes.
        #[arg(long)]
        json: bool,
    },
    /// Check the configuration and this machine as the running instance depends on them
    /// (public URL, clock, permissions, database, secrets, accounts, listeners) and print
    /// what to fix; exit code 1 when something needs fixing.
    Doctor {
        /// One JSON object: {"ok", "problems", "checks": [{"check", "ok", "detail", "fix"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions to standard output, e.g.
    /// `mailgate completions bash > /usr/share/bash-completion/completions/mailgate`.
    #[command(hide = true)]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to standard output, e.g.
    /// `mailgate man > /usr/local/share/man/man1/mailgate.1`.
    #[command(hide = true)]
    Man,
    /// Print a mailgate.toml with every setting commented out beside its default, e.g.
    /// `mailgate sample-config > /etc/mailgate/mailgate.toml`.
    #[command(hide = true)]
    SampleConfig,
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Register an OAuth app. Endpoints and scopes come from the kind's preset.
    Add(AppAdd),
    /// List apps.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one app, with the redirect URI to register at the provider.
    Show {
        /// Name or id.
        app: String,
        #[arg(long)]
        json: bool,
    },
    /// Change an app; options not given keep their value.
    Update(AppUpdate),
    /// Remove an app that no account uses.
    Remove { app: String },
}

#[derive(Debug, Args)]
pub struct SecretInput {
    /// Read the client secret from standard input (paste the secret's Value, not its ID).
    #[arg(long, conflicts_with = "client_secret_file")]
    pub client_secret_stdin: bool,
    /// Read the client secret from a file.
    #[arg(long, value_name = "FILE")]
    pub client_secret_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EndpointOverrides {
    /// Replace the provider's sign-in host (sovereign clouds such as
    /// https://login.microsoftonline.us, or a test identity provider).
    #[arg(long, value_parser = HttpUrl::parse)]
    pub authority: Option<HttpUrl>,
    #[arg(long, value_parser = HttpUrl::parse)]
    pub authorize_url: Option<HttpUrl>,
    #[arg(long, value_parser = HttpUrl::parse)]
    pub token_url: Option<HttpUrl>,
    #[arg(long, value_parser = HttpUrl::parse)]
    pub device_url: Option<HttpUrl>,
    #[arg(long, value_parser = HttpUrl::parse)]
    pub jwks_url: Option<HttpUrl>,
    #[arg(long, value_parser = HttpUrl::parse)]
    pub userinfo_url: Option<HttpUrl>,
    #[arg(long, value_parser = HttpUrl::parse)]
    pub revoke_url: Option<HttpUrl>,
    /// Expected id_token issuer (`{tenantid}` stands for the token's tenant). For a generic
    /// app the issuer alone is enough: the endpoints not given are read from
    /// <issuer>/.well-known/openid-configuration.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Scopes, space- or comma-separated; replaces the preset.
    #[arg(long, value_parser = Scopes::parse)]
    pub scopes: Option<Scopes>,
    /// Extra authorize parameter NAME=VALUE (repeatable), e.g. domain_hint=contoso.com.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_extra_param)]
    pub params: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct AppAdd {
    #[arg(long, value_parser = AppKind::parse)]
    pub kind: AppKind,
    #[arg(long, value_parser = Name::parse)]
    pub name: Name,
    /// Microsoft tenant: Directory (tenant) ID, a verified domain, or common/organizations/consumers.
    #[arg(long, value_parser = TenantId::parse)]
    pub tenant: Option<TenantId>,
    /// Application (client) ID.
    #[arg(long, value_parser = ClientId::parse)]
    pub client_id: ClientId,
    #[command(flatten)]
    pub secret: SecretInput,
    /// When the client secret expires (YYYY-MM-DD); drives the expiry warnings.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    pub secret_expires: Option<time::Date>,
    #[arg(long, value_parser = OAuthFlow::parse, default_value = "authorization_code")]
    pub flow: OAuthFlow,
    /// Google service-account JSON key file (flow service_account); stored encrypted.
    #[arg(long, value_name = "FILE")]
    pub service_account_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub endpoints: EndpointOverrides,
}

#[derive(Debug, Args)]
pub struct AppUpdate {
    /// Name or id of the app to change.
    pub app: String,
    #[arg(long, value_parser = Name::parse)]
    pub name: Option<Name>,
    #[arg(long, value_parser = TenantId::parse)]
    pub tenant: Option<TenantId>,
    #[arg(long, value_parser = ClientId::parse)]
    pub client_id: Option<ClientId>,
    #[command(flatten)]
    pub secret: SecretInput,
    /// Remove the stored client secret (public client).
    #[arg(long, conflicts_with_all = ["client_secret_stdin", "client_secret_file"])]
    pub clear_secret: bool,
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    pub secret_expires: Option<time::Date>,
    #[arg(long, value_parser = OAuthFlow::parse)]
    pub flow: Option<OAuthFlow>,
    /// Google service-account JSON key file (flow service_account); stored encrypted.
    #[arg(long, value_name = "FILE")]
    pub service_account_key_file: Option<PathBuf>,
    /// Recompute endpoints and scopes from the kind's preset (after a tenant change).
    #[arg(long)]
    pub reset_endpoints: bool,
    #[command(flatten)]
    pub endpoints: EndpointOverrides,
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Add a mail account. Hosts and ports come from the app's kind.
    Add(AccountAdd),
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        /// Name or id.
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// Change an account; options not given keep their value.
    Update(AccountUpdate),
    /// Remove an account and its grant.
    Remove { account: String },
    /// Generate (or regenerate) the password that password-only IMAP/POP3/SMTP clients use
    /// at mailgate's proxy for this account; shown once. `--revoke` removes it.
    ProxyPassword {
        /// Name or id.
        account: String,
        /// Remove the password instead: clients using it are refused from now on.
        #[arg(long)]
        revoke: bool,
    },
}

pub fn parse_inbound(s: &str) -> Result<InboundChoice, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(InboundChoice::None);
    }
    InboundProtocol::parse(s)
        .map(InboundChoice::Proto)
        .map_err(|_| format!("{s:?} is not an inbound protocol; expected imap, pop3 or none"))
}

pub fn parse_outbound(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "smtp" => Ok(true),
        "none" => Ok(false),
        _ => Err(format!(
            "{s:?} is not an outbound protocol; expected smtp or none"
        )),
    }
}

pub fn parse_date(s: &str) -> Result<time::Date, String> {
    const F: &[time::format_description::FormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s.trim(), F)
        .map_err(|_| format!("{s:?} is not a date; expected YYYY-MM-DD like 2027-03-31"))
}

#[derive(Debug, Args)]
pub struct AccountSettings {
    #[arg(long)]
    pub description: Option<String>,
    /// A shared or delegated mailbox opened with the signed-in user's token.
    #[arg(long, value_parser = EmailAddress::parse)]
    pub shared_mailbox: Option<EmailAddress>,
    /// Another sign-in name accepted at consent (repeatable).
    #[arg(long = "alias", value_parser = EmailAddress::parse)]
    pub aliases: Vec<EmailAddress>,
    /// imap, pop3 or none.
    #[arg(long, value_parser = parse_inbound)]
    pub inbound: Option<InboundChoice>,
    #[arg(long, value_parser = Host::parse)]
    pub inbound_host: Option<Host>,
    #[arg(long, value_parser = Port::parse)]
    pub inbound_port: Option<Port>,
    /// implicit or starttls.
    #[arg(long, value_parser = TlsMode::parse)]
    pub inbound_tls: Option<TlsMode>,
    /// smtp or none.
    #[arg(long, value_parser = parse_outbound)]
    pub outbound: Option<bool>,
    #[arg(long, value_parser = Host::parse)]
    pub smtp_host: Option<Host>,
    #[arg(long, value_parser = Port::parse)]
    pub smtp_port: Option<Port>,
    #[arg(long, value_parser = TlsMode::parse)]
    pub smtp_tls: Option<TlsMode>,
    #[arg(long)]
    pub from_name: Option<String>,
    #[arg(long, value_parser = EmailAddress::parse)]
    pub reply_to: Option<EmailAddress>,
    /// Signature appended to outgoing mail, read from a file.
    #[arg(long, value_name = "FILE")]
    pub signature_file: Option<PathBuf>,
    /// none, webhook, mark_seen, delete or move:FOLDER.
    #[arg(long, value_parser = OnReceived::parse)]
    pub on_received: Option<OnReceived>,
    /// For a shared mailbox: the user with FullAccess (and SendAs) on it who signs in.
    #[arg(long, value_parser = EmailAddress::parse, conflicts_with = "no_delegate")]
    pub delegate: Option<EmailAddress>,
    /// Remove the delegate: the mailbox signs in itself again.
    #[arg(long)]
    pub no_delegate: bool,
    /// With a delegate, send on behalf (true: `Sender:` the delegate) or as the mailbox (false).
    #[arg(long, value_name = "BOOL")]
    pub send_on_behalf: Option<bool>,
}

#[derive(Debug, Args)]
pub struct AccountAdd {
    #[arg(long, value_parser = Name::parse)]
    pub name: Name,
    /// The OAuth app (name or id).
    #[arg(long)]
    pub app: String,
    /// The mailbox address; the user who authorizes must sign in as this address.
    #[arg(long, value_parser = EmailAddress::parse)]
    pub email: EmailAddress,
    /// Create the account switched off.
    #[arg(long)]
    pub disabled: bool,
    #[command(flatten)]
    pub settings: AccountSettings,
}

#[derive(Debug, Args)]
pub struct AccountUpdate {
    /// Name or id of the account to change.
    pub account: String,
    #[arg(long, value_parser = Name::parse)]
    pub name: Option<Name>,
    #[arg(long)]
    pub app: Option<String>,
    #[arg(long, value_parser = EmailAddress::parse)]
    pub email: Option<EmailAddress>,
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    #[arg(long)]
    pub disable: bool,
    #[command(flatten)]
    pub settings: AccountSettings,
}

#[derive(Debug, Subcommand)]
pub enum ApiTokenCommand {
    /// Create a token; it is printed once and stored only as a hash.
    // Plain strings: `mailgate_core::user::NewApiToken` parses them, with the rules (and
    // the words) of the admin form.
    Create {
        #[arg(long)]
        name: String,
        /// accounts:read, accounts:write, messages:send, messages:read, tokens:read,
        /// webhooks:write (repeatable; at least one).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Limit the token to this account (name or id; repeatable). Default: all accounts.
        #[arg(long = "account")]
        accounts: Vec<String>,
    },
    /// Every token, revoked ones included.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by name or id; it stops working at once and stays listed as revoked.
    Revoke { name: String },
}

// Plain strings: `mailgate_core::user::NewUser` and `parse_role` parse them with the rules
// (and the words) of the admin UI's users page.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is read from stdin (at least 12 characters).
    Add {
        username: String,
        /// admin (everything) or operator (authorize and test accounts; no app changes).
        #[arg(long, default_value = "operator")]
        role: String,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Every user: name, role, when added, last sign-in.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a user; their sessions end at once. The last administrator cannot be removed.
    Remove { username: String },
    /// Give a user another role; one who is no longer an administrator is signed out at once.
    /// The last administrator keeps the role.
    SetRole {
        username: String,
        /// admin or operator.
        #[arg(long)]
        role: String,
    },
    /// Set a new password, read from stdin (at least 12 characters); the user's sessions
    /// end at once.
    ResetPassword {
        username: String,
        /// The password always comes from stdin; accepted for symmetry with `user add`.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-encrypt every secret under a new master key, atomically.
    Rotate {
        /// Read the new key (base64 of 32 bytes) from stdin; required with MAILGATE_MASTER_KEY.
        #[arg(long)]
        new_key_stdin: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove old keys from the key file once no stored value uses them.
    Prune,
    /// Show key ids: which encrypts, which are still in use.
    Status {
        #[arg(long)]
        json: bool,
    },
}
