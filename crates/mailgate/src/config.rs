//! Configuration: defaults, then `mailgate.toml` (from `--config` or `MAILGATE_CONFIG`), then
//! `MAILGATE_*` environment variables. Every bad value is one line naming the key and the
//! form expected.

use mailgate_core::{HttpUrl, Secret};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./mailgate-data";

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// None: derived from the address actually bound (`http://<listen>`).
    pub public_url: Option<HttpUrl>,
    pub database_url: String,
    /// `MAILGATE_MASTER_KEY`; otherwise the key file in the data directory.
    pub master_key: Option<Secret>,
    /// How long one request to an identity provider may take.
    pub oauth_timeout_secs: u64,
    /// How often `serve` looks for tokens to refresh and secrets about to expire.
    pub refresh_interval_secs: u64,
    /// Extra CA certificates (PEM) trusted for mail servers, beside the Mozilla roots.
    pub extra_ca_file: Option<PathBuf>,
    /// First delay before an outbox message is retried (doubles per attempt, max 1 h).
    pub outbox_retry_secs: u64,
    /// First delay before a webhook delivery is retried (doubles per attempt, max 1 h,
    /// for 24 h).
    pub webhook_retry_secs: u64,
    /// Whether webhooks may target loopback and private addresses.
    pub webhook_allow_private: bool,
    /// How often inbound watchers poll when the server offers no IMAP IDLE (and for POP3).
    pub poll_interval_secs: u64,
    /// The longest IMAP IDLE round before it is re-issued (Exchange drops IDLE at 30 min).
    pub idle_secs: u64,
    /// How long a watcher's claim on a mailbox lasts without renewal: the bound on how
    /// soon another instance takes over the mailboxes of one that died (renewed every
    /// third of it; waiting instances look every half of it).
    pub watch_lease_secs: u64,
    /// Bytes of messages one account may have waiting (queued or sending); beyond: 429.
    pub outbox_account_quota_bytes: u64,
    /// Bytes of messages all accounts together may have waiting; beyond: 507.
    pub outbox_total_quota_bytes: u64,
    /// Recipients (To + Cc + Bcc) one message may have.
    pub max_recipients: u64,
    /// After a refresh request got no answer (timeout), how long beyond the OAuth timeout
    /// before the same refresh token is sent again; doubles with each further lost answer.
    pub refresh_in_doubt_backoff_secs: u64,
    /// Whether identity-provider requests (token, JWKS, userinfo, device code) may reach
    /// loopback and private addresses: for a provider inside the network, and the tests.
    pub idp_allow_private: bool,
    /// How long a request's head may take to arrive, counted from when the connection opens
    /// or its previous response ends: also how long an idle keep-alive connection stays.
    pub http_header_timeout_secs: u64,
    /// A connection on which no byte moves either way for this long is closed (a stalled
    /// upload, a client that stops reading). Above the longest request a handler serves.
    pub http_idle_timeout_secs: u64,
    /// Open HTTP connections at most; beyond it `serve` stops accepting until one closes.
    pub http_max_connections: usize,
    /// Sends (`POST /api/v1/accounts/{id}/messages`) in progress at most; more wait
    /// `http_send_wait_secs` for a slot, then get 503.
    pub http_send_concurrency: usize,
    /// How long a send waits for a free slot (before its body is read) until 503.
    pub http_send_wait_secs: u64,
    /// Reverse proxies whose `X-Forwarded-For` is believed (addresses or CIDR networks).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long the setup link printed by `serve` stays valid.
    pub setup_link_secs: u64,
    /// SMTP sessions the outbox holds at once, all accounts together.
    pub outbox_concurrency: usize,
    /// SMTP sessions the outbox holds at once for one account (1 keeps its messages in
    /// queue order).
    pub outbox_per_account_concurrency: usize,
    /// Where the legacy IMAP proxy listens; off when unset.
    pub proxy_imap_listen: Option<SocketAddr>,
    /// Whether the proxy may take passwords in plain text on a non-loopback address.
    pub proxy_allow_plain: bool,
    /// Where the legacy SMTP (submission) proxy listens; off when unset.
    pub proxy_smtp_listen: Option<SocketAddr>,
    /// Where the legacy POP3 proxy listens; off when unset.
    pub proxy_pop3_listen: Option<SocketAddr>,
    /// Certificate chain (PEM) for the proxy listeners; with the key, they speak implicit TLS.
    pub proxy_tls_cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub proxy_tls_key_file: Option<PathBuf>,
    /// How long a proxy client has from connecting to a successful login.
    pub proxy_login_timeout_secs: u64,
    /// A relaying proxy session on which no byte moves for this long is closed.
    pub proxy_idle_timeout_secs: u64,
    /// Proxy sessions one account may have open at once.
    pub proxy_max_sessions_per_account: usize,
    /// The IMAP proxy listener starts in plain text and offers STARTTLS (logins only after
    /// it) instead of implicit TLS; needs the proxy certificate.
    pub proxy_imap_starttls: bool,
    /// The same for the POP3 proxy listener (STLS).
    pub proxy_pop3_starttls: bool,
    /// The same for the SMTP proxy listener (as on port 587).
    pub proxy_smtp_starttls: bool,
    /// When set, `/metrics` answers only `Authorization: Bearer <this>`.
    pub metrics_token: Option<Secret>,
}

/// A configuration value that does not parse; exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// The file's shape. Unknown keys are refused so a typo is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    public_url: Option<String>,
    database_url: Option<String>,
    master_key: Option<String>,
    oauth_timeout_secs: Option<u64>,
    refresh_interval_secs: Option<u64>,
    extra_ca_file: Option<PathBuf>,
    outbox_retry_secs: Option<u64>,
    webhook_retry_secs: Option<u64>,
    webhook_allow_private: Option<bool>,
    poll_interval_secs: Option<u64>,
    idle_secs: Option<u64>,
    watch_lease_secs: Option<u64>,
    outbox_account_quota_bytes: Option<u64>,
    outbox_total_quota_bytes: Option<u64>,
    max_recipients: Option<u64>,
    refresh_in_doubt_backoff_secs: Option<u64>,
    idp_allow_private: Option<bool>,
    http_header_timeout_secs: Option<u64>,
    http_idle_timeout_secs: Option<u64>,
    http_max_connections: Option<u64>,
    http_send_concurrency: Option<u64>,
    http_send_wait_secs: Option<u64>,
    trusted_proxies: Option<Vec<String>>,
    setup_link_secs: Option<u64>,
    outbox_concurrency: Option<u64>,
    outbox_per_account_concurrency: Option<u64>,
    proxy_imap_listen: Option<String>,
    proxy_allow_plain: Option<bool>,
    proxy_smtp_listen: Option<String>,
    proxy_pop3_listen: Option<String>,
    proxy_tls_cert_file: Option<PathBuf>,
    proxy_tls_key_file: Option<PathBuf>,
    proxy_login_timeout_secs: Option<u64>,
    proxy_idle_timeout_secs: Option<u64>,
    proxy_max_sessions_per_account: Option<u64>,
    proxy_imap_starttls: Option<bool>,
    proxy_pop3_starttls: Option<bool>,
    proxy_smtp_starttls: Option<bool>,
    metrics_token: Option<String>,
}

/// A setting's TOML key and its value in the file (`None`: not in the file), as
/// [`value!`] gives them.
type FileValue<T> = (&'static str, Option<T>);

/// `value!(file.key)`: the [`FileValue`] of `key`, its name spelled once.
macro_rules! value {
    ($file:ident . $key:ident) => {
        (stringify!($key), $file.$key)
    };
}

/// The environment variable of a TOML key: `MAILGATE_` and the key in capitals.
fn env_key(key: &str) -> String {
    format!("MAILGATE_{}", key.to_ascii_uppercase())
}

/// Where each value comes from: the environment beats the file, which beats the default;
/// an error names the variable, or the file and key, that set the value.
struct Sources<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    path: Option<&'a Path>,
}

impl Sources<'_> {
    /// `Some((where it was set, value))`, or None when it is not set.
    fn pick(&self, (key, file_val): FileValue<String>) -> Option<(String, String)> {
        let env_key = env_key(key);
        (self.env)(&env_key)
            .map(|v| (env_key, v))
            .or_else(|| file_val.map(|v| (self.file_key(key), v)))
    }

    fn file_key(&self, key: &str) -> String {
        match self.path {
            Some(p) => format!("{} key {key}", p.display()),
            None => key.to_owned(),
        }
    }

    /// A path, as given (its errors name the environment variable).
    fn path(&self, (key, file_val): FileValue<PathBuf>) -> Option<PathBuf> {
        (self.env)(&env_key(key)).map(PathBuf::from).or(file_val)
    }

    /// A switch: `Some((where it was set, value))`, or None when it is not set.
    fn flag(
        &self,
        (key, file_val): FileValue<bool>,
    ) -> Result<Option<(String, bool)>, ConfigError> {
        match self.pick((key, file_val.map(|b| b.to_string()))) {
            Some((key, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Some((key, true))),
                "false" | "0" | "no" => Ok(Some((key, false))),
                _ => Err(err(key, format!("{v:?} is not true or false"))),
            },
            None => Ok(None),
        }
    }

    /// A switch that is off unless set.
    fn switch(&self, value: FileValue<bool>) -> Result<bool, ConfigError> {
        Ok(self.flag(value)?.is_some_and(|(_, on)| on))
    }

    /// An address to listen on, with an example of the form in the error.
    fn address(
        &self,
        (key, file_val): FileValue<String>,
        example: &str,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        match self.pick((key, file_val)) {
            Some((key, v)) => v.trim().parse::<SocketAddr>().map(Some).map_err(|_| {
                err(
                    key,
                    format!(
                        "{v:?} is not an address to listen on; expected IP:PORT like {example}"
                    ),
                )
            }),
            None => Ok(None),
        }
    }

    /// Every count in the configuration: a whole number from 1 to `max`, named in its unit.
    fn number(
        &self,
        (key, file_val): FileValue<u64>,
        default: u64,
        max: u64,
        unit: &str,
    ) -> Result<u64, ConfigError> {
        match self.pick((key, file_val.map(|v| v.to_string()))) {
            Some((key, v)) => match v.trim().parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(err(
                    key,
                    format!("{v:?} is not a number of {unit} from 1 to {max}"),
                )),
            },
            None => Ok(default),
        }
    }

    fn seconds(&self, value: FileValue<u64>, default: u64, max: u64) -> Result<u64, ConfigError> {
        self.number(value, default, max, "seconds")
    }

    /// A number of things held in memory at once (connections, sessions).
    fn count(
        &self,
        value: FileValue<u64>,
        default: u64,
        max: u64,
        unit: &str,
    ) -> Result<usize, ConfigError> {
        self.number(value, default, max, unit)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// Where the values come from; `env` is a parameter so tests need not touch the process
/// environment.
pub fn load(
    config_path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let path = config_path
        .map(Path::to_path_buf)
        .or_else(|| env("MAILGATE_CONFIG").map(PathBuf::from));
    let file = match &path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                err(
                    "MAILGATE_CONFIG",
                    format!("cannot read {}: {e}", p.display()),
                )
            })?;
            toml::from_str::<FileConfig>(&text).map_err(|e| {
                let msg = e.message().to_owned();
                let key = msg
                    .split('`')
                    .nth(1)
                    .map(|k| format!("{}: {k}", p.display()))
                    .unwrap_or_else(|| p.display().to_string());
                err(key, msg)
            })?
        }
        None => FileConfig::default(),
    };
    let src = Sources {
        env,
        path: path.as_deref(),
    };

    let listen = match src.address(value!(file.listen), "127.0.0.1:8080 or [::1]:8080")? {
        Some(addr) => addr,
        None => DEFAULT_LISTEN
            .parse()
            .map_err(|_| err("MAILGATE_LISTEN", "bad default"))?,
    };
    let data_dir = match src.path(value!(file.data_dir)) {
        Some(d) if d.as_os_str().is_empty() => {
            return Err(err(
                "MAILGATE_DATA_DIR",
                "is empty; expected a directory path",
            ));
        }
        Some(d) => d,
        None => PathBuf::from(DEFAULT_DATA_DIR),
    };
    let public_url = match src.pick(value!(file.public_url)) {
        Some((key, v)) => {
            let url = HttpUrl::parse(&v).map_err(|e| err(key.clone(), format!("{e}")))?;
            if url.url().query().is_some() {
                return Err(err(
                    key,
                    "must not contain a ?query; expected the base URL users open, like https://mail.example.com",
                ));
            }
            Some(url)
        }
        None => None,
    };
    let database_url = match src.pick(value!(file.database_url)) {
        Some((key, v)) => {
            let v = v.trim().to_owned();
            let ok = v.starts_with("sqlite:")
                || v.starts_with("postgres://")
                || v.starts_with("postgresql://");
            if !ok {
                return Err(err(
                    key,
                    format!(
                        "{:?} is not a database URL; expected sqlite://PATH (PostgreSQL: postgres://USER@HOST/DB)",
                        mailgate_store::redact_url(&v)
                    ),
                ));
            }
            v
        }
        None => format!("sqlite://{}", data_dir.join("mailgate.db").display()),
    };
    let master_key = match src.pick(value!(file.master_key)) {
        Some((key, v)) => {
            // Check the form now so a bad key fails at start with exit code 2, without
            // echoing it.
            mailgate_store::crypto::Keyring::from_env_value(&v)
                .map_err(|e| err(key, e.to_string()))?;
            Some(Secret::new(v))
        }
        None => None,
    };
    let oauth_timeout_secs = src.seconds(value!(file.oauth_timeout_secs), 20, 300)?;
    let refresh_interval_secs = src.seconds(value!(file.refresh_interval_secs), 60, 3600)?;
    let extra_ca_file = match src.path(value!(file.extra_ca_file)) {
        Some(p) if !p.is_file() => {
            return Err(err(
                "MAILGATE_EXTRA_CA_FILE",
                format!(
                    "{} is not a readable file; expected a PEM file of CA certificates",
                    p.display()
                ),
            ));
        }
        other => other,
    };
    let outbox_retry_secs = src.seconds(value!(file.outbox_retry_secs), 30, 3600)?;
    let webhook_retry_secs = src.seconds(value!(file.webhook_retry_secs), 30, 3600)?;
    let poll_interval_secs = src.seconds(value!(file.poll_interval_secs), 60, 3600)?;
    let idle_secs = src.seconds(value!(file.idle_secs), 25 * 60, 29 * 60)?;
    let watch_lease_secs = src.seconds(value!(file.watch_lease_secs), 60, 600)?;
    if watch_lease_secs < 3 {
        return Err(err(
            "MAILGATE_WATCH_LEASE_SECS",
            format!(
                "{watch_lease_secs} is too short; expected at least 3 seconds (renewed every third of it)"
            ),
        ));
    }
    // Counts, not seconds: the same parse with its own words.
    // 16 MiB requests make at most ~14 MB messages: the defaults hold about 14 of those per
    // account and 70 in all, bounding the database (and what the worker reads back).
    let outbox_account_quota_bytes = src.number(
        value!(file.outbox_account_quota_bytes),
        200 * 1024 * 1024,
        1 << 40,
        "bytes",
    )?;
    let outbox_total_quota_bytes = src.number(
        value!(file.outbox_total_quota_bytes),
        1024 * 1024 * 1024,
        1 << 40,
        "bytes",
    )?;
    let max_recipients = src.number(value!(file.max_recipients), 500, 100_000, "recipients")?;
    let refresh_in_doubt_backoff_secs =
        src.seconds(value!(file.refresh_in_doubt_backoff_secs), 120, 3600)?;
    let webhook_allow_private = src.switch(value!(file.webhook_allow_private))?;
    let idp_allow_private = src.switch(value!(file.idp_allow_private))?;
    let http_header_timeout_secs = src.seconds(value!(file.http_header_timeout_secs), 10, 300)?;
    let http_idle_timeout_secs = src.seconds(value!(file.http_idle_timeout_secs), 120, 3600)?;
    let http_max_connections = src.count(
        value!(file.http_max_connections),
        1024,
        1_000_000,
        "connections",
    )?;
    let http_send_concurrency =
        src.count(value!(file.http_send_concurrency), 16, 10_000, "sends")?;
    let http_send_wait_secs = src.seconds(value!(file.http_send_wait_secs), 10, 300)?;
    let trusted_proxies = match src.pick((
        "trusted_proxies",
        file.trusted_proxies.map(|list| list.join(",")),
    )) {
        Some((key, v)) => parse_networks(&v).map_err(|bad| {
            err(
                key,
                format!("{bad:?} is not an IP address or network; expected a list like 127.0.0.1, 10.0.0.0/8, ::1"),
            )
        })?,
        None => Vec::new(),
    };
    let setup_link_secs = src.seconds(value!(file.setup_link_secs), 24 * 3600, 30 * 24 * 3600)?;
    let outbox_concurrency =
        src.count(value!(file.outbox_concurrency), 8, 1_000, "SMTP sessions")?;
    let outbox_per_account_concurrency = src.count(
        value!(file.outbox_per_account_concurrency),
        1,
        100,
        "SMTP sessions",
    )?;
    let proxy_imap_listen = src.address(value!(file.proxy_imap_listen), "127.0.0.1:1143")?;
    let proxy_allow_plain = src.switch(value!(file.proxy_allow_plain))?;
    let proxy_smtp_listen = src.address(value!(file.proxy_smtp_listen), "127.0.0.1:1587")?;
    let proxy_pop3_listen = src.address(value!(file.proxy_pop3_listen), "127.0.0.1:1110")?;
    // Checked now, so a mistyped path fails at start naming its key, not at the first TLS client.
    let pem_file = |(key, file_val): FileValue<PathBuf>| -> Result<Option<PathBuf>, ConfigError> {
        match src.path((key, file_val)) {
            Some(p) if !p.is_file() => Err(err(
                env_key(key),
                format!(
                    "{} is not a readable file; expected a PEM file",
                    p.display()
                ),
            )),
            other => Ok(other),
        }
    };
    let proxy_tls_cert_file = pem_file(value!(file.proxy_tls_cert_file))?;
    let proxy_tls_key_file = pem_file(value!(file.proxy_tls_key_file))?;
    if proxy_tls_cert_file.is_some() != proxy_tls_key_file.is_some() {
        let missing = if proxy_tls_cert_file.is_none() {
            "MAILGATE_PROXY_TLS_CERT_FILE"
        } else {
            "MAILGATE_PROXY_TLS_KEY_FILE"
        };
        return Err(err(
            missing,
            "is missing; the proxy's TLS needs both a certificate file and a key file",
        ));
    }
    let starttls = |value: FileValue<bool>| match src.flag(value)? {
        Some((key, true)) if proxy_tls_cert_file.is_none() => Err(err(
            key,
            "needs proxy_tls_cert_file and proxy_tls_key_file: STARTTLS upgrades to the proxy's certificate",
        )),
        Some((_, on)) => Ok(on),
        None => Ok(false),
    };
    let proxy_imap_starttls = starttls(value!(file.proxy_imap_starttls))?;
    let proxy_pop3_starttls = starttls(value!(file.proxy_pop3_starttls))?;
    let proxy_smtp_starttls = starttls(value!(file.proxy_smtp_starttls))?;
    let proxy_login_timeout_secs = src.seconds(value!(file.proxy_login_timeout_secs), 60, 3600)?;
    // IMAP IDLE may stay silent for 29 minutes (RFC 2177 asks clients to re-issue it at
    // least that often), so the default leaves it two more.
    let proxy_idle_timeout_secs =
        src.seconds(value!(file.proxy_idle_timeout_secs), 31 * 60, 24 * 3600)?;
    // Exchange allows 20 concurrent IMAP connections per mailbox; more would fail there.
    let proxy_max_sessions_per_account = src.count(
        value!(file.proxy_max_sessions_per_account),
        20,
        10_000,
        "sessions",
    )?;
    // Compared with what a scraper sends; a short or blank one would be guessable or a typo.
    let metrics_token = match src.pick(value!(file.metrics_token)) {
        Some((key, v)) => {
            let v = v.trim();
            if v.len() < 16 || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err(
                    key,
                    "must be at least 16 characters without spaces; e.g. the output of `openssl rand -hex 32`",
                ));
            }
            Some(Secret::new(v))
        }
        None => None,
    };
    Ok(Config {
        listen,
        data_dir,
        public_url,
        database_url,
        master_key,
        oauth_timeout_secs,
        refresh_interval_secs,
        extra_ca_file,
        outbox_retry_secs,
        webhook_retry_secs,
        webhook_allow_private,
        poll_interval_secs,
        idle_secs,
        watch_lease_secs,
        outbox_account_quota_bytes,
        outbox_total_quota_bytes,
        max_recipients,
        refresh_in_doubt_backoff_secs,
        idp_allow_private,
        http_header_timeout_secs,
        http_idle_timeout_secs,
        http_max_connections,
        http_send_concurrency,
        http_send_wait_secs,
        trusted_proxies,
        setup_link_secs,
        outbox_concurrency,
        outbox_per_account_concurrency,
        proxy_imap_listen,
        proxy_allow_plain,
        proxy_smtp_listen,
        proxy_pop3_listen,
        proxy_tls_cert_file,
        proxy_tls_key_file,
        proxy_login_timeout_secs,
        proxy_idle_timeout_secs,
        proxy_max_sessions_per_account,
        proxy_imap_starttls,
        proxy_pop3_starttls,
        proxy_smtp_starttls,
        metrics_token,
    })
}

/// Comma-separated addresses (`192.0.2.7`, a network of one) and CIDR networks
/// (`10.0.0.0/8`); the entry that does not parse on error.
fn parse_networks(list: &str) -> Result<Vec<ipnet::IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| entry.to_owned())
        })
        .collect()
}

impl Config {
    /// The public URL, or `http://<address>` of the socket actually bound.
    pub fn public_url_for(&self, bound: SocketAddr) -> HttpUrl {
        self.public_url.clone().unwrap_or_else(|| {
            HttpUrl::parse(&format!("http://{bound}"))
                .unwrap_or_else(|_| unreachable!("a socket address is a valid host"))
        })
    }

    pub fn key_file(&self) -> PathBuf {
        self.data_dir.join("master.key")
    }
}

/// One configuration key as the sample file (`packaging/mailgate.toml`) shows it. Every key
/// `load` reads is in [`SETTINGS`] (a test compares it with the file's shape), and the sample
/// is generated from this table (a test compares it with the packaged file).
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The TOML key; the environment variable is `MAILGATE_` and the key in capitals.
    pub key: &'static str,
    /// The default as a TOML value, or None when there is none to write (it is derived, or
    /// unset means "not used"): then `example` is shown instead.
    pub default: Option<&'static str>,
    /// A TOML value to show when there is no default.
    pub example: &'static str,
    /// What it does, for the sample's comment (one or more lines).
    pub about: &'static str,
}

const fn setting(key: &'static str, default: &'static str, about: &'static str) -> Setting {
    Setting {
        key,
        default: Some(default),
        example: default,
        about,
    }
}

const fn example(key: &'static str, example: &'static str, about: &'static str) -> Setting {
    Setting {
        key,
        default: None,
        example,
        about,
    }
}

/// Every configuration key, in the order the sample shows them. A new key goes at the end.
pub const SETTINGS: &[Setting] = &[
    setting(
        "listen",
        "\"127.0.0.1:8080\"",
        "Address and port serve listens on (IP:PORT). Put a TLS reverse proxy in front of it.",
    ),
    setting(
        "data_dir",
        "\"./mailgate-data\"",
        "Directory of the SQLite database and the master key file (created mode 0700).",
    ),
    example(
        "public_url",
        "\"https://mail.example.com\"",
        "The URL users open; the OAuth redirect URI is <public_url>/oauth/callback.\nUnset: http://<the address serve listens on>.",
    ),
    example(
        "database_url",
        "\"sqlite:///var/lib/mailgate/mailgate.db\"",
        "The database. Unset: sqlite://<data_dir>/mailgate.db.",
    ),
    example(
        "master_key",
        "\"<base64 key from `openssl rand -base64 32`>\"",
        "Keys that encrypt secrets at rest (base64, comma-separated; the first encrypts).\nUnset: the key file <data_dir>/master.key. Prefer MAILGATE_MASTER_KEY from a secret\nstore to writing a key into this file.",
    ),
    setting(
        "oauth_timeout_secs",
        "20",
        "How long one request to an identity provider may take.",
    ),
    setting(
        "refresh_interval_secs",
        "60",
        "How often serve looks for tokens to refresh and secrets about to expire.",
    ),
    example(
        "extra_ca_file",
        "\"/etc/mailgate/extra-ca.pem\"",
        "PEM CA certificates trusted for mail servers besides the Mozilla roots. Unset: none.",
    ),
    setting(
        "outbox_retry_secs",
        "30",
        "First delay before an outbox message is retried (doubles per attempt, at most 1 h).",
    ),
    setting(
        "webhook_retry_secs",
        "30",
        "First delay before a webhook delivery is retried (doubling to 1 h, for 24 h).",
    ),
    setting(
        "webhook_allow_private",
        "false",
        "Let webhooks reach loopback and private addresses.",
    ),
    setting(
        "poll_interval_secs",
        "60",
        "How often watchers poll (POP3, and IMAP servers without IDLE).",
    ),
    setting(
        "idle_secs",
        "1500",
        "Longest IMAP IDLE round before it is re-issued (at most 1740: Exchange drops IDLE at 30 min).",
    ),
    setting(
        "watch_lease_secs",
        "60",
        "How long a mailbox watcher's claim lasts unrenewed: another instance takes over a dead one's mailboxes within this plus half of it.",
    ),
    setting(
        "outbox_account_quota_bytes",
        "209715200",
        "Bytes of one account's messages queued or being sent (200 MiB); beyond, 429.",
    ),
    setting(
        "outbox_total_quota_bytes",
        "1073741824",
        "Bytes of all accounts' messages queued or being sent (1 GiB); beyond, 507.",
    ),
    setting(
        "max_recipients",
        "500",
        "Recipients (to, cc and bcc together) of one message.",
    ),
    setting(
        "refresh_in_doubt_backoff_secs",
        "120",
        "After a refresh got no answer, the wait beyond oauth_timeout_secs before the same\nrefresh token is sent again (the provider may have rotated it); doubles, at most 1 h.",
    ),
    setting(
        "idp_allow_private",
        "false",
        "Let identity-provider requests reach loopback and private addresses (a provider\ninside your network).",
    ),
    setting(
        "http_header_timeout_secs",
        "10",
        "A request's head must arrive within this of the connection opening or going idle.",
    ),
    setting(
        "http_idle_timeout_secs",
        "120",
        "A connection on which no byte moves either way for this long is closed.",
    ),
    setting(
        "http_max_connections",
        "1024",
        "Open HTTP connections at most; at the cap serve stops accepting until one closes.",
    ),
    setting(
        "http_send_concurrency",
        "16",
        "Sends (POST /api/v1/accounts/{id}/messages) in progress at once.",
    ),
    setting(
        "http_send_wait_secs",
        "10",
        "How long a send waits for a slot before 503 with Retry-After.",
    ),
    setting(
        "trusted_proxies",
        "[]",
        "Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For is believed,\ne.g. [\"127.0.0.1\", \"10.0.0.0/8\"]. Empty: the connection's peer is the client.",
    ),
    setting(
        "setup_link_secs",
        "86400",
        "How long the first-administrator setup link printed by serve stays valid.",
    ),
    setting(
        "outbox_concurrency",
        "8",
        "SMTP sessions the outbox keeps at once, over all accounts.",
    ),
    setting(
        "outbox_per_account_concurrency",
        "1",
        "SMTP sessions one account may use at once; 1 keeps an account's messages in queue order.",
    ),
    example(
        "proxy_imap_listen",
        "\"127.0.0.1:1143\"",
        "Address of the legacy IMAP proxy for password-only clients (docs/proxy.md).\nUnset: off.",
    ),
    setting(
        "proxy_allow_plain",
        "false",
        "Let the proxy listeners take passwords without TLS on a non-loopback address.",
    ),
    example(
        "proxy_smtp_listen",
        "\"127.0.0.1:1587\"",
        "Address of the legacy SMTP (submission) proxy. Unset: off.",
    ),
    example(
        "proxy_pop3_listen",
        "\"127.0.0.1:1110\"",
        "Address of the legacy POP3 proxy. Unset: off.",
    ),
    example(
        "proxy_tls_cert_file",
        "\"/etc/mailgate/proxy.crt\"",
        "Certificate chain (PEM) for the proxy listeners; with the key, they speak implicit TLS.",
    ),
    example(
        "proxy_tls_key_file",
        "\"/etc/mailgate/proxy.key\"",
        "The proxy certificate's private key (PEM).",
    ),
    setting(
        "proxy_login_timeout_secs",
        "60",
        "A proxy client must have logged in this long after connecting.",
    ),
    setting(
        "proxy_idle_timeout_secs",
        "1860",
        "A relaying proxy session on which no byte moves for this long is closed\n(IMAP IDLE is re-issued within 29 minutes).",
    ),
    setting(
        "proxy_max_sessions_per_account",
        "20",
        "Proxy sessions one account may have at once (Exchange allows 20 IMAP connections).",
    ),
    setting(
        "proxy_imap_starttls",
        "false",
        "The IMAP proxy starts in plain text and offers STARTTLS instead of implicit TLS;\nlogins only after it. Needs proxy_tls_cert_file and proxy_tls_key_file.",
    ),
    setting(
        "proxy_pop3_starttls",
        "false",
        "The POP3 proxy starts in plain text and offers STLS instead of implicit TLS.",
    ),
    setting(
        "proxy_smtp_starttls",
        "false",
        "The SMTP proxy starts in plain text and offers STARTTLS (as on port 587)\ninstead of implicit TLS.",
    ),
    example(
        "metrics_token",
        "\"replace-with-the-output-of-openssl-rand-hex-32\"",
        "Unset: /metrics is open, like /healthz. Set: it answers only\n`Authorization: Bearer <this>` (at least 16 characters). Prefer\nMAILGATE_METRICS_TOKEN from a secret store to writing it into this file.",
    ),
];

impl Setting {
    /// `MAILGATE_` and the key in capitals.
    pub fn env_name(&self) -> String {
        format!("MAILGATE_{}", self.key.to_ascii_uppercase())
    }
}

/// The sample `mailgate.toml`: every key commented out, with its default (or an example)
/// and what it does. `packaging/mailgate.toml` is exactly this (a test compares).
pub fn sample_config() -> String {
    let mut out = String::from(
        "# mailgate.toml: every setting, commented out, with its default (or an example when\n\
         # there is none). Uncomment what you change. Each key can also be set by the\n\
         # environment variable shown, which beats this file: MAILGATE_CONFIG names this file.\n\
         # Generated from crates/mailgate/src/config.rs (SETTINGS) by `mailgate sample-config`.\n",
    );
    for setting in SETTINGS {
        out.push('\n');
        for line in setting.about.lines() {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
        let shown = match setting.default {
            Some(_) => "default",
            None => "example",
        };
        out.push_str(&format!(
            "# ({}; environment {})\n# {} = {}\n",
            shown,
            setting.env_name(),
            setting.key,
            setting.default.unwrap_or(setting.example)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// `text` as the configuration file, loaded with `env` as the environment.
    fn load_file(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailgate.toml");
        std::fs::write(&path, text).unwrap();
        load(Some(&path), &env_of(env))
    }

    /// With only `key` set to `value`, loading fails naming `key` and saying `words`.
    fn assert_refused(key: &str, value: &str, words: &str) {
        let e = load(None, &env_of(&[(key, value)]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("{key}: ")) && e.contains(words),
            "{e}"
        );
    }

    #[test]
    fn defaults_without_any_configuration() {
        let c = load(None, &env_of(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./mailgate-data"));
        assert_eq!(c.database_url, "sqlite://./mailgate-data/mailgate.db");
        assert_eq!(
            c.public_url_for(c.listen).as_str(),
            "http://127.0.0.1:8080/"
        );
        assert!(c.master_key.is_none());
    }

    #[test]
    fn environment_beats_file() {
        let c = load_file(
            "listen = \"127.0.0.1:9000\"\npublic_url = \"https://mail.example.com\"\n",
            &[("MAILGATE_LISTEN", "0.0.0.0:7000")],
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:7000");
        assert_eq!(c.public_url.unwrap().as_str(), "https://mail.example.com/");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = load(None, &env_of(&[("MAILGATE_LISTEN", "localhost")])).unwrap_err();
        assert!(e.to_string().starts_with("MAILGATE_LISTEN: "), "{e}");
        assert!(e.to_string().contains("IP:PORT"));
        let e = load(
            None,
            &env_of(&[("MAILGATE_PUBLIC_URL", "mail.example.com")]),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("MAILGATE_PUBLIC_URL: "), "{e}");
        let e = load(
            None,
            &env_of(&[("MAILGATE_DATABASE_URL", "mysql://u:pw@h/db")]),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("MAILGATE_DATABASE_URL: "), "{e}");
        assert!(!e.to_string().contains("pw"), "password echoed: {e}");
        let e = load(
            None,
            &env_of(&[("MAILGATE_MASTER_KEY", "tooShortKey-SECRET")]),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("MAILGATE_MASTER_KEY: "), "{e}");
        assert!(!e.to_string().contains("SECRET"));
    }

    #[test]
    fn unknown_and_malformed_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "listn = \"127.0.0.1:1\"\n").unwrap();
        let e = load(Some(&path), &env_of(&[])).unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
        std::fs::write(&path, "listen = \"nope\"\n").unwrap();
        let e = load(Some(&path), &env_of(&[])).unwrap_err();
        assert!(e.to_string().contains("key listen"), "{e}");
        let e = load(Some(&dir.path().join("missing.toml")), &env_of(&[])).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn receiving_and_webhook_settings() {
        let c = load(None, &env_of(&[])).unwrap();
        assert_eq!(
            (c.poll_interval_secs, c.idle_secs, c.webhook_retry_secs),
            (60, 1500, 30)
        );
        assert!(
            !c.webhook_allow_private,
            "private targets are refused by default"
        );
        let c = load_file(
            "webhook_allow_private = true\npoll_interval_secs = 15\nidle_secs = 600\n",
            &[("MAILGATE_WEBHOOK_RETRY_SECS", "5")],
        )
        .unwrap();
        assert!(c.webhook_allow_private);
        assert_eq!(
            (c.poll_interval_secs, c.idle_secs, c.webhook_retry_secs),
            (15, 600, 5)
        );
        for (key, value, words) in [
            ("MAILGATE_WEBHOOK_ALLOW_PRIVATE", "maybe", "true or false"),
            ("MAILGATE_IDLE_SECS", "3600", "1 to 1740"),
            ("MAILGATE_POLL_INTERVAL_SECS", "0", "1 to 3600"),
            ("MAILGATE_WEBHOOK_RETRY_SECS", "soon", "seconds"),
            ("MAILGATE_REFRESH_IN_DOUBT_BACKOFF_SECS", "0", "1 to 3600"),
            ("MAILGATE_IDP_ALLOW_PRIVATE", "perhaps", "true or false"),
        ] {
            assert_refused(key, value, words);
        }
    }

    #[test]
    fn outbox_quotas_and_recipient_cap() {
        let c = load(None, &env_of(&[])).unwrap();
        assert_eq!(
            (
                c.outbox_account_quota_bytes,
                c.outbox_total_quota_bytes,
                c.max_recipients
            ),
            (200 * 1024 * 1024, 1024 * 1024 * 1024, 500)
        );
        let file = "outbox_account_quota_bytes = 1000\noutbox_total_quota_bytes = 5000\nmax_recipients = 50\n";
        let c = load_file(file, &[("MAILGATE_MAX_RECIPIENTS", "20")]).unwrap();
        assert_eq!(
            (
                c.outbox_account_quota_bytes,
                c.outbox_total_quota_bytes,
                c.max_recipients
            ),
            (1000, 5000, 20)
        );
        for (key, value, words) in [
            ("MAILGATE_OUTBOX_ACCOUNT_QUOTA_BYTES", "0", "bytes from 1"),
            ("MAILGATE_OUTBOX_TOTAL_QUOTA_BYTES", "1GB", "bytes from 1"),
            (
                "MAILGATE_MAX_RECIPIENTS",
                "-1",
                "recipients from 1 to 100000",
            ),
        ] {
            assert_refused(key, value, words);
        }
    }

    #[test]
    fn refresh_in_doubt_backoff() {
        let c = load(None, &env_of(&[])).unwrap();
        assert_eq!(c.refresh_in_doubt_backoff_secs, 120);
        let file = "refresh_in_doubt_backoff_secs = 300\n";
        assert_eq!(
            load_file(file, &[]).unwrap().refresh_in_doubt_backoff_secs,
            300
        );
        let c = load_file(file, &[("MAILGATE_REFRESH_IN_DOUBT_BACKOFF_SECS", "7")]).unwrap();
        assert_eq!(c.refresh_in_doubt_backoff_secs, 7);
    }

    #[test]
    fn identity_providers_on_private_addresses_need_the_operator() {
        assert!(!load(None, &env_of(&[])).unwrap().idp_allow_private);
        let c = load(None, &env_of(&[("MAILGATE_IDP_ALLOW_PRIVATE", "true")])).unwrap();
        assert!(c.idp_allow_private);
        assert!(
            load_file("idp_allow_private = true\n", &[])
                .unwrap()
                .idp_allow_private
        );
    }

    #[test]
    fn http_edge_settings() {
        let edge = |c: &Config| {
            (
                c.http_header_timeout_secs,
                c.http_idle_timeout_secs,
                c.http_max_connections,
                c.http_send_concurrency,
                c.http_send_wait_secs,
                c.setup_link_secs,
            )
        };
        let c = load(None, &env_of(&[])).unwrap();
        assert_eq!(edge(&c), (10, 120, 1024, 16, 10, 86400));
        assert!(
            c.trusted_proxies.is_empty(),
            "no proxy is trusted by default"
        );
        let file = "http_header_timeout_secs = 5\nhttp_max_connections = 64\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nsetup_link_secs = 60\n";
        let env = [
            ("MAILGATE_HTTP_SEND_CONCURRENCY", "2"),
            ("MAILGATE_HTTP_IDLE_TIMEOUT_SECS", "30"),
            ("MAILGATE_HTTP_SEND_WAIT_SECS", "1"),
        ];
        let c = load_file(file, &env).unwrap();
        assert_eq!(edge(&c), (5, 30, 64, 2, 1, 60));
        let nets: Vec<String> = c.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.0.0.0/8", "::1/128"]);
        let c = load(
            None,
            &env_of(&[("MAILGATE_TRUSTED_PROXIES", "127.0.0.1, 192.168.0.0/16")]),
        )
        .unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        for (key, value, words) in [
            (
                "MAILGATE_TRUSTED_PROXIES",
                "10.0.0.0/8,proxy.local",
                "\"proxy.local\" is not an IP",
            ),
            ("MAILGATE_HTTP_MAX_CONNECTIONS", "0", "connections from 1"),
            ("MAILGATE_HTTP_SEND_CONCURRENCY", "many", "number of sends"),
            ("MAILGATE_HTTP_HEADER_TIMEOUT_SECS", "0", "1 to 300"),
            ("MAILGATE_SETUP_LINK_SECS", "-1", "seconds"),
        ] {
            assert_refused(key, value, words);
        }
    }

    /// The field names of a `Deserialize` struct, as serde's derive declares them.
    fn struct_fields<T: for<'de> Deserialize<'de>>() -> Vec<&'static str> {
        use serde::de::{Error as _, Visitor, value::Error};
        struct Capture<'a>(&'a mut Vec<&'static str>);
        impl<'de> serde::Deserializer<'de> for Capture<'_> {
            type Error = Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
                Err(Error::custom("not a struct"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Error> {
                self.0.extend_from_slice(fields);
                Err(Error::custom("fields captured"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
                identifier ignored_any
            }
        }
        let mut fields = Vec::new();
        let _ = T::deserialize(Capture(&mut fields));
        fields
    }

    #[test]
    fn every_file_key_is_in_the_settings_table() {
        let fields = struct_fields::<FileConfig>();
        assert!(fields.len() > 20, "{fields:?}");
        for field in &fields {
            assert!(
                SETTINGS.iter().any(|s| s.key == *field),
                "the config key `{field}` is read by config::load but missing from config::SETTINGS: \
                 add it there (default, what it does) and regenerate packaging/mailgate.toml \
                 (mailgate sample-config > packaging/mailgate.toml)"
            );
        }
        for setting in SETTINGS {
            assert!(
                fields.contains(&setting.key),
                "config::SETTINGS lists `{}`, which the config file does not have",
                setting.key
            );
        }
    }

    #[test]
    fn every_setting_is_read_from_its_environment_variable() {
        for setting in SETTINGS {
            let name = setting.env_name();
            // Two values no key accepts both of: a bad value must be refused naming the variable.
            let refused = ["!not-valid!", ""].iter().any(|bad| {
                load(None, &env_of(&[(name.as_str(), bad)]))
                    .is_err_and(|e| e.to_string().starts_with(&format!("{name}: ")))
            });
            assert!(refused, "{name} is not read by config::load");
        }
    }

    #[test]
    fn packaged_sample_config_is_the_generated_one() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/mailgate.toml");
        let generated = sample_config();
        let packaged = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            packaged == generated,
            "packaging/mailgate.toml differs from config::sample_config(); regenerate it with \
             `mailgate sample-config > packaging/mailgate.toml`"
        );
    }

    #[test]
    fn sample_config_round_trips_through_the_loader() {
        let defaults = format!("{:?}", load(None, &env_of(&[])).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailgate.toml");
        let sample = sample_config();
        // As shipped (all commented out) it is the defaults.
        std::fs::write(&path, &sample).unwrap();
        assert_eq!(
            format!("{:?}", load(Some(&path), &env_of(&[])).unwrap()),
            defaults
        );
        // Every default uncommented: still exactly the defaults, so the sample tells the truth.
        let uncomment = |keep: &dyn Fn(&Setting) -> bool| -> String {
            sample
                .lines()
                .map(|line| {
                    let value_line = SETTINGS
                        .iter()
                        .find(|s| line.starts_with(&format!("# {} = ", s.key)) && keep(s));
                    match value_line {
                        Some(_) => line.trim_start_matches("# ").to_owned(),
                        None => line.to_owned(),
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let with_defaults = uncomment(&|s| s.default.is_some());
        assert_eq!(
            with_defaults
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .count(),
            SETTINGS.iter().filter(|s| s.default.is_some()).count()
        );
        std::fs::write(&path, &with_defaults).unwrap();
        assert_eq!(
            format!("{:?}", load(Some(&path), &env_of(&[])).unwrap()),
            defaults
        );
        // The examples load too, except a key (a placeholder) and a CA file (must exist).
        let with_examples = uncomment(&|s| {
            !matches!(
                s.key,
                "master_key" | "extra_ca_file" | "proxy_tls_cert_file" | "proxy_tls_key_file"
            )
        });
        std::fs::write(&path, &with_examples).unwrap();
        let c = load(Some(&path), &env_of(&[])).unwrap();
        assert_eq!(c.public_url.unwrap().as_str(), "https://mail.example.com/");
        assert_eq!(c.database_url, "sqlite:///var/lib/mailgate/mailgate.db");
    }

    #[test]
    fn outbox_session_caps() {
        let c = load(None, &env_of(&[])).unwrap();
        assert_eq!(
            (c.outbox_concurrency, c.outbox_per_account_concurrency),
            (8, 1)
        );
        let c = load_file(
            "outbox_concurrency = 4\noutbox_per_account_concurrency = 3\n",
            &[("MAILGATE_OUTBOX_CONCURRENCY", "16")],
        )
        .unwrap();
        assert_eq!(
            (c.outbox_concurrency, c.outbox_per_account_concurrency),
            (16, 3)
        );
        for (key, value) in [
            ("MAILGATE_OUTBOX_CONCURRENCY", "0"),
            ("MAILGATE_OUTBOX_PER_ACCOUNT_CONCURRENCY", "many"),
        ] {
            let e = load(None, &env_of(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("{key}: ")) && e.contains("SMTP sessions"),
                "{e}"
            );
        }
    }

    #[test]
    fn proxy_imap_starttls_needs_the_certificate() {
        let c = load(None, &env_of(&[])).unwrap();
        assert!(!c.proxy_imap_starttls);
        let e = load(None, &env_of(&[("MAILGATE_PROXY_IMAP_STARTTLS", "true")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("MAILGATE_PROXY_IMAP_STARTTLS") && e.contains("proxy_tls_cert_file"),
            "{e}"
        );
        let e = load(None, &env_of(&[("MAILGATE_PROXY_IMAP_STARTTLS", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("MAILGATE_PROXY_IMAP_STARTTLS"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        let path = dir.path().join("mailgate.toml");
        std::fs::write(
            &path,
            format!(
                "proxy_tls_cert_file = {:?}\nproxy_tls_key_file = {:?}\nproxy_imap_starttls = true\n",
                cert, key
            ),
        )
        .unwrap();
        let c = load(Some(&path), &env_of(&[])).unwrap();
        assert!(c.proxy_imap_starttls);
        assert!(!c.proxy_pop3_starttls && !c.proxy_smtp_starttls);
        let c = load(
            Some(&path),
            &env_of(&[
                ("MAILGATE_PROXY_POP3_STARTTLS", "yes"),
                ("MAILGATE_PROXY_SMTP_STARTTLS", "1"),
            ]),
        )
        .unwrap();
        assert!(c.proxy_pop3_starttls && c.proxy_smtp_starttls);
        let e = load(None, &env_of(&[("MAILGATE_PROXY_SMTP_STARTTLS", "true")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("MAILGATE_PROXY_SMTP_STARTTLS"), "{e}");
    }

    #[test]
    fn proxy_listeners_are_off_until_configured() {
        let c = load(None, &env_of(&[])).unwrap();
        assert_eq!((c.proxy_imap_listen, c.proxy_allow_plain), (None, false));
        let c = load_file(
            "proxy_imap_listen = \"127.0.0.1:1143\"\nproxy_allow_plain = true\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.proxy_imap_listen, Some("127.0.0.1:1143".parse().unwrap()));
        assert!(c.proxy_allow_plain);
        let c = load(
            None,
            &env_of(&[("MAILGATE_PROXY_IMAP_LISTEN", "[::1]:993")]),
        )
        .unwrap();
        assert_eq!(c.proxy_imap_listen, Some("[::1]:993".parse().unwrap()));
        assert_eq!(c.proxy_smtp_listen, None);
        let c = load(
            None,
            &env_of(&[("MAILGATE_PROXY_SMTP_LISTEN", "127.0.0.1:1587")]),
        )
        .unwrap();
        assert_eq!(c.proxy_smtp_listen, Some("127.0.0.1:1587".parse().unwrap()));
        let c = load(
            None,
            &env_of(&[("MAILGATE_PROXY_POP3_LISTEN", "127.0.0.1:1110")]),
        )
        .unwrap();
        assert_eq!(c.proxy_pop3_listen, Some("127.0.0.1:1110".parse().unwrap()));
        assert_eq!(c.proxy_tls_cert_file, None);
        assert_eq!(
            (c.proxy_login_timeout_secs, c.proxy_idle_timeout_secs),
            (60, 1860)
        );
        let c = load(
            None,
            &env_of(&[
                ("MAILGATE_PROXY_LOGIN_TIMEOUT_SECS", "5"),
                ("MAILGATE_PROXY_IDLE_TIMEOUT_SECS", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (c.proxy_login_timeout_secs, c.proxy_idle_timeout_secs),
            (5, 7)
        );
        assert_eq!(c.proxy_max_sessions_per_account, 20);
        let c = load(
            None,
            &env_of(&[("MAILGATE_PROXY_MAX_SESSIONS_PER_ACCOUNT", "2")]),
        )
        .unwrap();
        assert_eq!(c.proxy_max_sessions_per_account, 2);
        let e = load(None, &env_of(&[("MAILGATE_PROXY_IDLE_TIMEOUT_SECS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("MAILGATE_PROXY_IDLE_TIMEOUT_SECS: "), "{e}");
        let pem_dir = tempfile::tempdir().unwrap();
        let (chain, key) = (
            pem_dir.path().join("chain.pem"),
            pem_dir.path().join("key.pem"),
        );
        std::fs::write(&chain, "-----BEGIN CERTIFICATE-----\n").unwrap();
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        let (chain, key) = (chain.to_str().unwrap(), key.to_str().unwrap());
        let c = load(
            None,
            &env_of(&[
                ("MAILGATE_PROXY_TLS_CERT_FILE", chain),
                ("MAILGATE_PROXY_TLS_KEY_FILE", key),
            ]),
        )
        .unwrap();
        assert_eq!(c.proxy_tls_key_file.as_deref(), Some(Path::new(key)));
        let e = load(None, &env_of(&[("MAILGATE_PROXY_TLS_CERT_FILE", chain)]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("MAILGATE_PROXY_TLS_KEY_FILE: is missing"),
            "{e}"
        );
        // A path that is not there is named at start, not at the first TLS client.
        let e = load(
            None,
            &env_of(&[
                ("MAILGATE_PROXY_TLS_CERT_FILE", "/nonexistent/chain.pem"),
                ("MAILGATE_PROXY_TLS_KEY_FILE", key),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("MAILGATE_PROXY_TLS_CERT_FILE: ") && e.contains("not a readable file"),
            "{e}"
        );
        let e = load(
            None,
            &env_of(&[("MAILGATE_PROXY_IMAP_LISTEN", "imap.local")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("MAILGATE_PROXY_IMAP_LISTEN: "), "{e}");
        let e = load(None, &env_of(&[("MAILGATE_PROXY_ALLOW_PLAIN", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("MAILGATE_PROXY_ALLOW_PLAIN: "), "{e}");
    }

    #[test]
    fn metrics_token_is_optional_and_must_be_long() {
        assert!(load(None, &env_of(&[])).unwrap().metrics_token.is_none());
        let c = load(
            None,
            &env_of(&[("MAILGATE_METRICS_TOKEN", " 0123456789abcdef0123 ")]),
        )
        .unwrap();
        assert_eq!(
            c.metrics_token.as_ref().map(Secret::expose),
            Some("0123456789abcdef0123")
        );
        // Never echoed, not even in the Debug form.
        assert!(!format!("{c:?}").contains("0123456789abcdef0123"));
        for bad in ["short", "has a space in it here", ""] {
            let e = load(None, &env_of(&[("MAILGATE_METRICS_TOKEN", bad)]))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("MAILGATE_METRICS_TOKEN: "), "{e}");
            assert!(bad.is_empty() || !e.contains(bad), "{e}");
        }
    }
}
