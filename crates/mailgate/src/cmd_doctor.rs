//! `mailgate doctor [--json]`: checks the configuration and the machine the way the running
//! instance depends on them, and says what to fix. Read-only apart from the database's
//! write probe (the one `/healthz` makes): it creates no data directory, key file or
//! database and never migrates the schema (a newer binary beside an older `serve` must not
//! change the database under it). Exit code 1 when something needs fixing.

use crate::config::Config;
use crate::webhooks::root_cause;
use crate::{CmdResult, Failure};
use mailgate_core::account::MailAccount;
use mailgate_core::{AccountState, Clock, OAuthApp, SystemClock};
use mailgate_store::Store;
use mailgate_store::crypto::{self, KeySource, Keyring};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// How long one network probe (public URL, token endpoint, listener) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Beyond this, token lifetimes and signed timestamps (webhook signatures, JWT `nbf`/`exp`)
/// start to be judged wrongly; NTP keeps a server well within a second.
const MAX_CLOCK_SKEW_SECS: i64 = 60;
/// The same margin as the example alert rule in docs/operations.md.
const SECRET_WARNING_DAYS: i64 = 14;

#[derive(Debug, Serialize)]
struct Finding {
    check: &'static str,
    ok: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
    Finding {
        check,
        ok: true,
        detail: detail.into(),
        fix: None,
    }
}

fn problem(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        check,
        ok: false,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

pub async fn doctor(config: &Config, json: bool) -> CmdResult {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(PROBE_TIMEOUT)
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot build the HTTP client: {e}")))?;
    let mut findings = Vec::new();
    findings.extend(public_url(config, &http).await);
    findings.extend(listeners(config, &http).await);
    findings.push(data_dir(config));
    let keys = key_file(config, &mut findings);
    match keys {
        Some((ring, source)) => database(config, ring, source, &http, &mut findings).await,
        None => findings.push(problem(
            "database",
            "not checked: the keys are unusable (see key_file)",
            "fix the key file first",
        )),
    }
    report(&findings, json);
    let problems = findings.iter().filter(|f| !f.ok).count();
    if problems == 0 {
        Ok(())
    } else {
        Err(Failure::Runtime(format!(
            "{problems} problem(s) need fixing (see above)"
        )))
    }
}

fn report(findings: &[Finding], json: bool) {
    if json {
        let problems = findings.iter().filter(|f| !f.ok).count();
        out!(
            "{}",
            serde_json::json!({ "ok": problems == 0, "problems": problems, "checks": findings })
        );
        return;
    }
    for f in findings {
        out!(
            "{:<8} {:<12} {}",
            if f.ok { "ok" } else { "PROBLEM" },
            f.check,
            f.detail
        );
        if let Some(fix) = &f.fix {
            out!("{:<21} fix: {fix}", "");
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// https unless loopback (providers accept http redirect URIs only for localhost), and
/// `/healthz` answering at it from this machine.
async fn public_url(config: &Config, http: &reqwest::Client) -> Vec<Finding> {
    let url = config.public_url_for(config.listen);
    let mut found = Vec::new();
    let host = url.url().host_str().unwrap_or_default().to_owned();
    if url.url().scheme() != "https" && !is_loopback_host(&host) {
        found.push(problem(
            "public_url",
            format!("{url} is plain http on a non-loopback host; providers refuse such a redirect URI and sign-ins would travel unencrypted"),
            "put a TLS reverse proxy in front of mailgate and set public_url (MAILGATE_PUBLIC_URL) to its https:// address",
        ));
    }
    let health = url.join_path("/healthz");
    match http.get(health.as_str()).send().await {
        Ok(resp) if resp.status().is_success() => {
            found.push(ok("public_url", format!("{health} answers from here")));
        }
        Ok(resp) => found.push(problem(
            "public_url",
            format!("{health} answered {}", resp.status()),
            "check that the reverse proxy forwards to mailgate serve, and `curl` that URL",
        )),
        Err(e) => found.push(problem(
            "public_url",
            format!("cannot reach {health} from this machine: {}", root_cause(&e)),
            "start `mailgate serve`, and check that the name resolves here and the reverse proxy and firewall let it through",
        )),
    }
    found
}

/// `serve`'s own address answers `/healthz`, and each configured proxy listener accepts
/// connections.
async fn listeners(config: &Config, http: &reqwest::Client) -> Vec<Finding> {
    let mut found = Vec::new();
    let health = format!("http://{}/healthz", reachable(config.listen));
    found.push(match http.get(&health).send().await {
        Ok(resp) if resp.status().is_success() => ok(
            "listen",
            format!("mailgate serve answers on {}", config.listen),
        ),
        Ok(resp) => problem(
            "listen",
            format!("{health} answered {}", resp.status()),
            "another program holds this address: change listen (MAILGATE_LISTEN) or stop it",
        ),
        Err(e) => problem(
            "listen",
            format!(
                "nothing answers on {} (listen): {}",
                config.listen,
                root_cause(&e)
            ),
            "start `mailgate serve` (or check that listen matches where it runs)",
        ),
    });
    for (what, addr) in [
        ("proxy_imap", config.proxy_imap_listen),
        ("proxy_pop3", config.proxy_pop3_listen),
        ("proxy_smtp", config.proxy_smtp_listen),
    ] {
        let Some(addr) = addr else { continue };
        let connected = tokio::time::timeout(
            PROBE_TIMEOUT,
            tokio::net::TcpStream::connect(reachable(addr)),
        )
        .await;
        found.push(match connected {
            Ok(Ok(_)) => ok("listen", format!("{what} accepts connections on {addr}")),
            Ok(Err(e)) => problem(
                "listen",
                format!("nothing accepts connections on {addr} ({what}_listen): {e}"),
                "start `mailgate serve`; its log says why a proxy listener could not bind",
            ),
            Err(_) => problem(
                "listen",
                format!("{addr} ({what}_listen) did not accept within {PROBE_TIMEOUT:?}"),
                "check the firewall and that serve runs",
            ),
        });
    }
    found
}

/// An address to connect to for one to listen on: the unspecified address means "all", of
/// which loopback is one.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

fn data_dir(config: &Config) -> Finding {
    let dir = &config.data_dir;
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => problem(
            "data_dir",
            format!("{} is not a directory", dir.display()),
            "set data_dir (MAILGATE_DATA_DIR) to a directory",
        ),
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => problem(
            "data_dir",
            format!(
                "{} is open to other users (mode {:o})",
                dir.display(),
                meta.permissions().mode() & 0o777
            ),
            format!("chmod 700 {}", dir.display()),
        ),
        Ok(_) => ok("data_dir", format!("{} (mode 700)", dir.display())),
        Err(e) => problem(
            "data_dir",
            format!("cannot read {}: {e}", dir.display()),
            "start `mailgate serve` once to create it, or set data_dir to where it is",
        ),
    }
}

/// The keys, read as `serve` reads them (a key file others can read is refused), without
/// creating a key file.
fn key_file(config: &Config, findings: &mut Vec<Finding>) -> Option<(Keyring, KeySource)> {
    if let Some(key) = &config.master_key {
        return match Keyring::from_env_value(key.expose()) {
            Ok(ring) => {
                findings.push(ok("key_file", "keys from MAILGATE_MASTER_KEY"));
                Some((ring, KeySource::Env))
            }
            Err(e) => {
                findings.push(problem(
                    "key_file",
                    format!("MAILGATE_MASTER_KEY: {e}"),
                    "set MAILGATE_MASTER_KEY to the base64 keys (comma-separated)",
                ));
                None
            }
        };
    }
    let path = config.key_file();
    match crypto::read_key_file(&path) {
        Ok(Some(ring)) => {
            findings.push(ok("key_file", format!("{} (mode 600)", path.display())));
            Some((ring, KeySource::File(path)))
        }
        Ok(None) => {
            findings.push(problem(
                "key_file",
                format!("no key file at {}", path.display()),
                "start `mailgate serve` once to create it, or restore the key file kept apart from your backups",
            ));
            None
        }
        Err(e) => {
            let fix = if e.to_string().contains("chmod 600") {
                format!("chmod 600 {}", path.display())
            } else {
                "restore the key file from where you keep it apart from backups".to_owned()
            };
            findings.push(problem("key_file", e.to_string(), fix));
            None
        }
    }
}

async fn database(
    config: &Config,
    ring: Keyring,
    source: KeySource,
    http: &reqwest::Client,
    findings: &mut Vec<Finding>,
) {
    if let Some(path) = sqlite_file(&config.database_url)
        && !Path::new(&path).exists()
    {
        findings.push(problem(
            "database",
            format!("no database at {path}"),
            "start `mailgate serve` once to create it, or set database_url / data_dir to where it is",
        ));
        return;
    }
    let store = match Store::open_unmigrated(&config.database_url, ring, source).await {
        Ok(store) => store,
        Err(e) => {
            findings.push(problem(
                "database",
                format!("cannot open it: {e}"),
                "check database_url and the file's owner",
            ));
            return;
        }
    };
    let clock = SystemClock;
    let schema = match store.schema_version().await {
        Ok(v) => v,
        Err(e) => {
            findings.push(problem(
                "database",
                format!("cannot read the schema version: {e}"),
                "check that database_url names a mailgate database",
            ));
            store.close().await;
            return;
        }
    };
    match store.check_writable(clock.now(), 0).await {
        Ok(()) => findings.push(ok("database", "writable")),
        Err(e) => findings.push(problem(
            "database",
            format!("cannot store writes: {e}"),
            "free disk space, and check that the database file belongs to the user serve runs as",
        )),
    }
    let current = mailgate_store::SCHEMA_VERSION;
    if schema != current {
        let (detail, fix) = if schema < current {
            (
                format!("schema {schema}, this mailgate expects {current}"),
                "restart `mailgate serve` with this binary: it migrates at start (take a `mailgate backup` first)",
            )
        } else {
            (
                format!("schema {schema} is newer than this mailgate ({current})"),
                "run the mailgate binary that created it (or a newer one)",
            )
        };
        findings.push(problem("schema", detail, fix));
        // The queries below assume this binary's schema.
        store.close().await;
        return;
    }
    findings.push(ok("schema", format!("version {schema} (current)")));
    match store.list_apps().await {
        Ok(apps) => {
            findings.push(secrets(&apps, &clock));
            findings.extend(clock_skew(&apps, http, &clock).await);
        }
        Err(e) => findings.push(problem(
            "secrets",
            format!("cannot read the apps: {e}"),
            "see the database finding above",
        )),
    }
    match store.list_accounts().await {
        Ok(accounts) => findings.extend(accounts_needing_attention(&accounts)),
        Err(e) => findings.push(problem(
            "accounts",
            format!("cannot read the accounts: {e}"),
            "see the database finding above",
        )),
    }
    store.close().await;
}

/// The file of a `sqlite://PATH[?…]` URL.
fn sqlite_file(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite://")?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| path.to_owned())
}

fn secrets(apps: &[OAuthApp], clock: &dyn Clock) -> Finding {
    let mut soon = Vec::new();
    for app in apps {
        let Some(expires) = app.spec.secret_expires else {
            continue;
        };
        let days = crate::days_until(clock, expires);
        if days < 0 {
            soon.push(format!("{} expired on {expires}", app.spec.name));
        } else if days < SECRET_WARNING_DAYS {
            soon.push(format!(
                "{} expires on {expires} (in {days} days)",
                app.spec.name
            ));
        }
    }
    if soon.is_empty() {
        ok(
            "secrets",
            format!("no client secret expires within {SECRET_WARNING_DAYS} days"),
        )
    } else {
        problem(
            "secrets",
            format!("client secret: {}", soon.join("; ")),
            "create a new client secret at the provider, then `mailgate app update NAME --client-secret-stdin --secret-expires YYYY-MM-DD`",
        )
    }
}

/// The provider's `Date` header against this machine's clock, once per token endpoint.
async fn clock_skew(apps: &[OAuthApp], http: &reqwest::Client, clock: &dyn Clock) -> Vec<Finding> {
    let mut endpoints: Vec<String> = apps
        .iter()
        .map(|a| a.spec.endpoints.token.to_string())
        .collect();
    endpoints.sort();
    endpoints.dedup();
    if endpoints.is_empty() {
        return vec![ok("clock", "no apps yet: no provider to compare with")];
    }
    let mut found = Vec::new();
    for endpoint in endpoints {
        // Any answer carries a Date; a GET on a token endpoint is refused harmlessly.
        let resp = match http.get(&endpoint).send().await {
            Ok(resp) => resp,
            Err(e) => {
                found.push(problem(
                    "clock",
                    format!("cannot reach {endpoint}: {}", root_cause(&e)),
                    "tokens cannot be refreshed from here either: check DNS, the firewall and any outbound proxy",
                ));
                continue;
            }
        };
        let now = clock.now().0;
        let theirs = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let Some(theirs) = theirs else {
            found.push(ok(
                "clock",
                format!("{endpoint} sent no usable Date header; not compared"),
            ));
            continue;
        };
        let skew = now - theirs;
        if skew.abs() > MAX_CLOCK_SKEW_SECS {
            found.push(problem(
                "clock",
                format!(
                    "this machine's clock is {} s {} {endpoint}'s",
                    skew.abs(),
                    if skew > 0 { "ahead of" } else { "behind" }
                ),
                "synchronise the clock with NTP (e.g. `timedatectl set-ntp true`, chrony or ntpd)",
            ));
        } else {
            found.push(ok(
                "clock",
                format!("within {} s of {endpoint}", skew.abs()),
            ));
        }
    }
    found
}

/// An HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`, the one form servers send) as Unix seconds.
fn parse_http_date(value: &str) -> Option<i64> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(value.trim(), &format)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

fn accounts_needing_attention(accounts: &[MailAccount]) -> Vec<Finding> {
    let mut found = Vec::new();
    for a in accounts {
        let name = &a.spec.name;
        match a.state {
            AccountState::ReauthRequired => found.push(problem(
                "accounts",
                format!("{name} needs re-authorization (the provider rejected its grant)"),
                format!("`mailgate authorize {name}` (the admin UI shows why)"),
            )),
            AccountState::Unauthorized if a.spec.enabled => found.push(problem(
                "accounts",
                format!("{name} was never authorized"),
                format!("`mailgate authorize {name}`, or disable it"),
            )),
            _ => {}
        }
    }
    if found.is_empty() {
        found.push(ok(
            "accounts",
            format!("{} account(s), none needing attention", accounts.len()),
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse_as_servers_send_them() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784111777)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn loopback_hosts_may_be_plain_http() {
        for host in ["localhost", "127.0.0.1", "[::1]", "127.3.4.5"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["mail.example.com", "10.0.0.1", "0.0.0.0"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_file("sqlite:///var/lib/m.db?mode=rwc").as_deref(),
            Some("/var/lib/m.db")
        );
        assert_eq!(sqlite_file("postgres://db/m"), None);
    }
}
