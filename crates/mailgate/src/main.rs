//! The `mailgate` binary: `serve` and the administrator's command line.

/// `println!` that ends the process quietly when stdout is closed (`mailgate app list | head`)
/// instead of panicking on the broken pipe.
macro_rules! out {
    ($($t:tt)*) => { $crate::write_out(format_args!($($t)*)) };
}

mod cli;
mod cmd_account;
mod cmd_app;
mod cmd_auth;
mod cmd_backup;
mod cmd_doctor;
mod cmd_export;
mod cmd_keys;
mod cmd_user;
mod config;
mod instance;
mod metrics;
mod outbox;
mod proxy;
mod retry;
mod serve;
mod views;
mod watch;
mod webhooks;

use clap::Parser;
use cli::{Cli, Command};
use mailgate_core::{Clock, SystemClock};
use mailgate_store::crypto::{self, KeySource, Keyring};
use mailgate_store::{Store, StoreError};
use std::process::ExitCode;
use std::sync::Arc;

/// How a command failed: bad input (exit 2, nothing changed) or a runtime failure (exit 1).
#[derive(Debug)]
pub enum Failure {
    BadInput(String),
    Runtime(String),
}

impl From<mailgate_core::random::RandomFailed> for Failure {
    fn from(e: mailgate_core::random::RandomFailed) -> Self {
        Failure::Runtime(e.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. }
            | StoreError::Duplicate { .. }
            | StoreError::InUse(_)
            | StoreError::UnsupportedUrl(_)
            | StoreError::SchemaNewer { .. } => Failure::BadInput(e.to_string()),
            _ => Failure::Runtime(e.to_string()),
        }
    }
}

impl From<mailgate_usecase::ChangeError> for Failure {
    fn from(e: mailgate_usecase::ChangeError) -> Self {
        match e {
            mailgate_usecase::ChangeError::Field(e) => e.into(),
            mailgate_usecase::ChangeError::Store(e) => e.into(),
            // The CLI acts for an administrator, who may move an account (`may_move`).
            mailgate_usecase::ChangeError::MovesDestinations(moved) => Failure::BadInput(format!(
                "this change moves the account's servers ({})",
                moved.join(", ")
            )),
        }
    }
}

impl From<config::ConfigError> for Failure {
    fn from(e: config::ConfigError) -> Self {
        Failure::BadInput(e.to_string())
    }
}

impl From<mailgate_core::app::FieldError> for Failure {
    fn from(e: mailgate_core::app::FieldError) -> Self {
        Failure::BadInput(format!("--{}: {}", e.field.replace('_', "-"), e.message))
    }
}

pub type CmdResult = Result<(), Failure>;

/// Runs a command, and the database thread sqlx starts for its connection (threads inherit
/// this), on the CPU it started on. Each statement is a hand-off between this thread and
/// that one: on one CPU a context switch, across two a wake-up of the other CPU, which on
/// an idle virtual machine costs more than the statement itself (issue 15: `mailgate token`
/// against bare process start, docs/benchmarks.md). `serve` runs many jobs at once and
/// keeps every CPU, as do `export` and `import`, whose two threads overlap their work on
/// large data. Best effort: a failure leaves the command unpinned.
fn keep_to_one_cpu() {
    use rustix::thread::{CpuSet, sched_getcpu, sched_setaffinity};
    let mut here = CpuSet::new();
    here.set(sched_getcpu());
    if let Err(e) = sched_setaffinity(None, &here) {
        tracing::debug!(error = %e, "could not keep the command to one CPU");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Generated from the clap definition itself, so they cannot drift; no configuration,
    // store or runtime needed.
    match cli.command {
        Command::Completions { shell } => return print_completions(shell),
        Command::Man => return print_man_page(),
        Command::SampleConfig => {
            print!("{}", config::sample_config());
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    init_logging(matches!(cli.command, Command::Serve));
    if !matches!(
        cli.command,
        Command::Serve | Command::Export { .. } | Command::Import { .. }
    ) {
        keep_to_one_cpu();
    }
    // `serve` runs many jobs at once. A command does one thing at a time, and starting a
    // multi-thread runtime's worker threads costs it more than its own work (issue 15:
    // `mailgate token` against bare process start).
    let mut builder = if matches!(cli.command, Command::Serve) {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // A command's changes are recorded as the OS user's (the audit trail); `serve` acts
    // for its HTTP callers, who name themselves per request.
    let outcome = if matches!(cli.command, Command::Serve) {
        runtime.block_on(run(cli))
    } else {
        let actor = format!("cli:{}", os_user());
        runtime.block_on(mailgate_store::audit::within(Some(actor), None, run(cli)))
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

/// The name of the user running a CLI command, for the audit trail: `$USER` (or
/// `$LOGNAME`), else the numeric uid.
fn os_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .map(|v| v.trim().to_owned())
        .find(|v| !v.is_empty() && v.len() <= 64 && !v.chars().any(char::is_control))
        .unwrap_or_else(|| format!("uid {}", rustix::process::getuid().as_raw()))
}

fn print_completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "mailgate", &mut std::io::stdout());
    ExitCode::SUCCESS
}

fn print_man_page() -> ExitCode {
    use clap::CommandFactory;
    match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the man page: {e}");
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr so command output on stdout stays machine-readable. `RUST_LOG`
/// overrides the default (info for `serve`, warnings for commands);
/// `MAILGATE_LOG_FORMAT=json` writes one JSON object per line.
fn init_logging(serving: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if serving { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("MAILGATE_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> CmdResult {
    let env = |k: &str| std::env::var(k).ok();
    let config = config::load(cli.config.as_deref(), &env)?;
    let clock = SystemClock;
    match cli.command {
        Command::Serve => serve::serve(config).await,
        Command::App(cmd) => {
            let store = Arc::new(open_command_store(&config).await?);
            // The engine's provider client reads a generic app's discovery document.
            let engine = new_engine(&store, &config)?;
            let r = cmd_app::run(cmd, &engine, &config, &clock).await;
            store.close().await;
            r
        }
        Command::Account(cmd) => {
            let store = open_command_store(&config).await?;
            let r = cmd_account::run(cmd, &store, &clock).await;
            store.close().await;
            r
        }
        Command::Keys(cmd) => {
            let store = open_command_store(&config).await?;
            let r = cmd_keys::run(cmd, &store, &clock).await;
            store.close().await;
            r
        }
        Command::ApiToken(cmd) => {
            let store = open_command_store(&config).await?;
            let r = api_token(&store, cmd).await;
            store.close().await;
            r
        }
        Command::User(cmd) => {
            let store = open_command_store(&config).await?;
            let r = cmd_user::run(cmd, &store, &clock).await;
            store.close().await;
            r
        }
        Command::Authorize {
            account,
            device,
            no_wait,
        } => {
            let store = Arc::new(open_command_store(&config).await?);
            let engine = new_engine(&store, &config)?;
            let r = cmd_auth::authorize(&engine, &config, &account, device, no_wait).await;
            store.close().await;
            r
        }
        Command::Test {
            account,
            to,
            json,
            step_timeout,
            find_within,
        } => {
            let store = Arc::new(open_command_store(&config).await?);
            let engine = new_engine(&store, &config)?;
            let opts = mailgate_mail::check::CheckOptions {
                to: to.map(|t| t.to_string()),
                step_timeout: std::time::Duration::from_secs(step_timeout),
                find_within: std::time::Duration::from_secs(find_within),
            };
            let r = cmd_auth::test(&engine, &config, &account, &opts, json).await;
            store.close().await;
            r
        }
        Command::Backup { file, force } => {
            let store = open_command_store(&config).await?;
            let r = cmd_backup::backup(&store, &file, force).await;
            store.close().await;
            r
        }
        Command::Export { file, force } => {
            let store = open_command_store(&config).await?;
            let r = cmd_export::export(&store, &file, force).await;
            store.close().await;
            r
        }
        // Checks the file and the keys before it opens the database.
        Command::Import { file, force } => cmd_export::import(&config, &file, force).await,
        Command::Migrate { json } => {
            let store = open_command_store(&config).await?;
            let applied = store.migrations_applied_at_open().to_vec();
            let version = store.schema_version().await;
            store.close().await;
            let version = version?;
            if json {
                let applied: Vec<_> = applied
                    .iter()
                    .map(|(v, name)| serde_json::json!({ "version": v, "name": name }))
                    .collect();
                write_out(format_args!(
                    "{}",
                    serde_json::json!({ "schema_version": version, "applied": applied })
                ));
            } else if applied.is_empty() {
                write_out(format_args!(
                    "the database schema is current (version {version}); nothing to apply"
                ));
            } else {
                for (v, name) in &applied {
                    write_out(format_args!("applied migration {v} ({name})"));
                }
                write_out(format_args!(
                    "the database schema is now at version {version}"
                ));
            }
            Ok(())
        }
        // Opens the restored database itself, after the checks.
        Command::Restore { file, force } => cmd_backup::restore(&config, &file, force).await,
        Command::Doctor { json } => cmd_doctor::doctor(&config, json).await,
        // Answered in `main` before any configuration is read.
        Command::Completions { .. } | Command::Man | Command::SampleConfig => Ok(()),
        Command::Token { account, json } => {
            let store = Arc::new(open_command_store(&config).await?);
            let engine = new_engine(&store, &config)?;
            let r = cmd_auth::token(&engine, &account, json).await;
            store.close().await;
            r
        }
        Command::Events {
            account,
            actor,
            since,
            limit,
            json,
        } => {
            let store = open_command_store(&config).await?;
            let r = events(&store, account, actor, since, limit, json).await;
            store.close().await;
            r
        }
    }
}

async fn events(
    store: &Store,
    account: Option<String>,
    actor: Option<String>,
    since: Option<mailgate_core::Timestamp>,
    limit: i64,
    json: bool,
) -> CmdResult {
    if !(1..=10_000).contains(&limit) {
        return Err(Failure::BadInput(
            "--limit: expected a number from 1 to 10000".into(),
        ));
    }
    let account_id = match account {
        Some(a) => Some(store.find_account(&a).await?.id),
        None => None,
    };
    let filter = mailgate_store::EventFilter {
        actor,
        since,
        account: account_id,
        limit,
    };
    let events = store.audit_events(&filter).await?;
    if json {
        views::print_json(&events)
    } else {
        for e in events.iter().rev() {
            let by = match (&e.actor, &e.source) {
                (Some(a), Some(s)) => format!("  (by {a} from {s})"),
                (Some(a), None) => format!("  (by {a})"),
                _ => String::new(),
            };
            out!("{}  {:<24} {}{by}", e.at, e.kind.as_str(), e.message);
        }
        Ok(())
    }
}

async fn api_token(store: &Store, cmd: cli::ApiTokenCommand) -> CmdResult {
    match cmd {
        cli::ApiTokenCommand::Create {
            name,
            scopes,
            accounts,
        } => {
            use mailgate_usecase::access::{IssueTokenError, issue_api_token};
            let (token, created) =
                issue_api_token(store, &name, &scopes, &accounts, SystemClock.now())
                    .await
                    .map_err(|e| match e {
                        IssueTokenError::Invalid(errors) => Failure::BadInput(
                            errors
                                .iter()
                                .map(|e| format!("--{}: {}", e.field, e.message))
                                .collect::<Vec<_>>()
                                .join("; "),
                        ),
                        IssueTokenError::Store(e @ StoreError::NotFound { .. }) => {
                            Failure::BadInput(format!("--account: {e}"))
                        }
                        IssueTokenError::Store(e) => e.into(),
                    })?;
            eprintln!(
                "Created API token {:?} (id {}) with scopes {}. It is shown once; store it now:",
                created.name,
                created.id,
                created
                    .scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            out!("{}", token.expose());
            Ok(())
        }
        cli::ApiTokenCommand::List { json } => {
            let tokens = store.list_api_tokens().await?;
            if json {
                return views::print_json(&tokens);
            }
            for t in &tokens {
                let scopes: Vec<&str> = t.scopes.iter().map(|s| s.as_str()).collect();
                let accounts = if t.account_ids.is_empty() {
                    "all accounts".to_owned()
                } else {
                    t.account_ids
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let revoked = t
                    .revoked_at
                    .map(|at| format!("  revoked {at}"))
                    .unwrap_or_default();
                out!(
                    "{:>4}  {:<24} {:<40} {}{revoked}",
                    t.id,
                    t.name,
                    scopes.join(" "),
                    accounts
                );
            }
            Ok(())
        }
        cli::ApiTokenCommand::Revoke { name } => {
            if store.revoke_api_token(&name, SystemClock.now()).await? {
                out!("Revoked API token {name:?}.");
                Ok(())
            } else {
                Err(Failure::BadInput(format!(
                    "no live API token named or numbered {name:?} (see `mailgate api-token list`)"
                )))
            }
        }
    }
}

/// The OAuth engine over an open store.
pub fn new_engine(
    store: &Arc<Store>,
    config: &config::Config,
) -> Result<mailgate_grants::Engine, Failure> {
    let options = mailgate_grants::EngineOptions {
        timeout: std::time::Duration::from_secs(config.oauth_timeout_secs),
        in_doubt_backoff: std::time::Duration::from_secs(config.refresh_in_doubt_backoff_secs),
        allow_private_idp: config.idp_allow_private,
        ..Default::default()
    };
    mailgate_grants::Engine::new(store.clone(), Arc::new(SystemClock), options)
        .map_err(|e| Failure::Runtime(e.to_string()))
}

impl From<mailgate_grants::EngineError> for Failure {
    fn from(e: mailgate_grants::EngineError) -> Self {
        use mailgate_grants::EngineError as E;
        match e {
            E::Store(s) => s.into(),
            // The request was fine; the grant failed since (exit 1, with the remediation).
            E::NotUsable { ref state, .. }
                if state == mailgate_core::AccountState::ReauthRequired.as_str() =>
            {
                Failure::Runtime(e.to_string())
            }
            E::BadState(_) | E::Unsupported(_) | E::NotUsable { .. } => {
                Failure::BadInput(e.to_string())
            }
            E::OAuth(_) | E::WrongUser { .. } | E::ForcedRefreshLimited { .. } | E::Random(_) => {
                Failure::Runtime(e.to_string())
            }
        }
    }
}

/// [`open_store`] for `serve`: a pool of connections for its concurrent jobs.
pub async fn open_store(config: &config::Config) -> Result<Store, Failure> {
    open_store_with(config, false).await
}

/// The store for a command of the CLI: one connection (`Store::open_single_connection`),
/// since a command runs one statement at a time and each connection costs its own setup.
pub async fn open_command_store(config: &config::Config) -> Result<Store, Failure> {
    open_store_with(config, true).await
}

/// Creates the data directory (0700) and key file on first use, opens the database and
/// brings its schema up to date.
async fn open_store_with(config: &config::Config, one_connection: bool) -> Result<Store, Failure> {
    use std::os::unix::fs::PermissionsExt;
    if !config.data_dir.exists() {
        std::fs::create_dir_all(&config.data_dir)
            .and_then(|()| {
                std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| {
                Failure::Runtime(format!(
                    "cannot create the data directory {}: {e}",
                    config.data_dir.display()
                ))
            })?;
    } else if let Ok(meta) = std::fs::metadata(&config.data_dir)
        && meta.permissions().mode() & 0o077 != 0
    {
        // Every file in it is 0600, but its names and sizes still show; say so once.
        tracing::warn!(
            "the data directory {} is open to other users (mode {:o}); run `chmod 700 {}`",
            config.data_dir.display(),
            meta.permissions().mode() & 0o777,
            config.data_dir.display()
        );
    }
    let (ring, source) = match &config.master_key {
        Some(k) => (
            Keyring::from_env_value(k.expose())
                .map_err(|e| Failure::BadInput(format!("MAILGATE_MASTER_KEY: {e}")))?,
            KeySource::Env,
        ),
        None => {
            let path = config.key_file();
            (
                crypto::load_or_create_key_file(&path)
                    .map_err(|e| Failure::Runtime(e.to_string()))?,
                KeySource::File(path),
            )
        }
    };
    Ok(if one_connection {
        Store::open_single_connection(&config.database_url, ring, source).await?
    } else {
        Store::open(&config.database_url, ring, source).await?
    })
}

pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// Days from today until `date` (negative when past).
pub fn days_until(clock: &dyn Clock, date: time::Date) -> i64 {
    let today = clock.now().date().unwrap_or(date);
    (date - today).whole_days()
}
