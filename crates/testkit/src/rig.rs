//! The mail rig: Debian's Dovecot and Postfix on loopback ports, started by
//! `scripts/mail-rig` (see `docs/testing.md`).
//!
//! Dovecot checks every XOAUTH2/OAUTHBEARER token by introspecting it at the identity-provider
//! emulator, so a rig and an emulator go together: the rig's `introspect_url` is the
//! emulator's `POST /introspect`, and [`MailRig::idp_base_url`] gives that emulator back.
//!
//! Two ways to get one:
//! - [`MailRig::from_env`]: a shared rig (and its shared emulator) started by the test script,
//!   named by `MAILGATE_RIG=<path to rig.json>`. Dropping it stops nothing.
//! - [`MailRig::start`] / [`MailRig::start_temp`]: a rig of this test's own, stopped when the
//!   value is dropped.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// The environment variable naming a shared rig's `rig.json`.
pub const RIG_ENV: &str = "MAILGATE_RIG";

/// Starting a rig takes half a second once the packages are installed; the first start on a
/// fresh machine installs them with apt-get, which can take a minute or two.
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// How to start a rig.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RigOptions {
    /// Dovecot offers only PLAIN/LOGIN for one passwd-file user (see
    /// [`MailRig::plain_credentials`]), no XOAUTH2/OAUTHBEARER: a server that does not
    /// support OAuth.
    pub no_oauth: bool,
    /// Which scopes Dovecot itself demands of a token (`--token-scopes`).
    pub token_scopes: TokenScopes,
    /// IMAP without IDLE in its capabilities (`--no-idle`): clients must poll.
    pub no_idle: bool,
    /// Room for this many IMAP sessions (`--max-imap-sessions`, scale runs); Dovecot's
    /// defaults allow 100.
    pub max_imap_sessions: Option<u32>,
}

/// Which scopes Dovecot demands of an introspected token, besides the emulator's verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenScopes {
    /// None: the emulator introspects a token without a mail scope as inactive, so one rig
    /// serves Microsoft- and Google-shaped tokens. The shared rig of `scripts/test` is this.
    #[default]
    EmulatorDecides,
    /// The protocol's own Microsoft scope: `IMAP.AccessAsUser.All` for IMAP,
    /// `POP.AccessAsUser.All` for POP3, `SMTP.Send` for submission, as Exchange demands.
    Microsoft,
    /// `https://mail.google.com/` everywhere.
    Google,
}

impl TokenScopes {
    fn arg(self) -> &'static str {
        match self {
            Self::EmulatorDecides => "none",
            Self::Microsoft => "microsoft",
            Self::Google => "google",
        }
    }
}

/// `rig.json`, as `scripts/mail-rig` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RigInfo {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub host: String,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub pop3_port: u16,
    pub pop3s_port: u16,
    pub submission_port: u16,
    pub smtp_port: u16,
    pub lmtp_port: u16,
    pub introspect_url: Option<String>,
    pub oauth: bool,
    /// Which scope a token must carry per protocol: `microsoft`, `google` or `none`.
    #[serde(default)]
    pub token_scopes: Option<String>,
    /// The emulator's SendAs table, when submission checks the envelope sender
    /// (`--sender-login-map`; the shared rig of `scripts/test` does).
    #[serde(default)]
    pub sender_login_map: Option<String>,
    /// Only with `oauth: false`.
    #[serde(default)]
    pub plain_user: Option<String>,
    #[serde(default)]
    pub plain_password: Option<String>,
    pub domain: String,
}

/// A running mail rig.
#[derive(Debug)]
pub struct MailRig {
    info: RigInfo,
    /// Set when this value started the rig and must stop it.
    owned: bool,
    /// The temporary state directory of [`MailRig::start_temp`], removed after the stop.
    temp_dir: Option<tempfile::TempDir>,
}

impl MailRig {
    /// `<repo>/scripts/mail-rig`.
    pub fn script() -> PathBuf {
        repo_root().join("scripts/mail-rig")
    }

    /// Starts a rig whose state lives in `dir` and whose Dovecot introspects tokens at
    /// `introspect_url`; it is stopped when the value is dropped. Every directory above
    /// `dir` must be searchable by other users (Dovecot's mail user works in `dir/mail`).
    pub async fn start(
        dir: impl AsRef<Path>,
        introspect_url: &str,
        options: RigOptions,
    ) -> anyhow::Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        // Both outputs go to a file, never to a pipe: a daemon that kept a pipe open would
        // make the wait below hang (Dovecot keeps its caller's stderr).
        let log_path = dir.join("mail-rig-start.log");
        let log = std::fs::File::create(&log_path)?;
        let mut command = tokio::process::Command::new(Self::script());
        command
            .arg("start")
            .arg("--json")
            .arg("--dir")
            .arg(&dir)
            .arg("--introspect-url")
            .arg(introspect_url)
            .arg("--token-scopes")
            .arg(options.token_scopes.arg())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if options.no_idle {
            command.arg("--no-idle");
        }
        if options.no_oauth {
            command.arg("--no-oauth");
        }
        if let Some(n) = options.max_imap_sessions {
            command.arg("--max-imap-sessions").arg(n.to_string());
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("running {}", Self::script().display()))?;
        let status = match tokio::time::timeout(START_TIMEOUT, child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                child.kill().await.ok();
                bail!(
                    "mail-rig start did not finish within {START_TIMEOUT:?}:\n{}",
                    tail(&log_path)
                );
            }
        };
        check(status, "start", &log_path)?;
        let mut rig = Self::read(&dir.join("rig.json"))?;
        rig.owned = true;
        Ok(rig)
    }

    /// [`MailRig::start`] in a new temporary directory, removed after the rig is stopped.
    pub async fn start_temp(introspect_url: &str, options: RigOptions) -> anyhow::Result<Self> {
        let temp_dir = tempfile::Builder::new().prefix("mail-rig-").tempdir()?;
        // Dovecot's mail user (uid 8) and Postfix's users must reach the rig's directories.
        set_mode(temp_dir.path(), 0o755)?;
        let mut rig = Self::start(temp_dir.path(), introspect_url, options).await?;
        rig.temp_dir = Some(temp_dir);
        Ok(rig)
    }

    /// The shared rig named by `MAILGATE_RIG`, or `None` when the variable is not set.
    /// Dropping it stops nothing.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        match std::env::var_os(RIG_ENV) {
            Some(path) if !path.is_empty() => Self::read(Path::new(&path))
                .with_context(|| format!("{RIG_ENV}={}", path.to_string_lossy()))
                .map(Some),
            _ => Ok(None),
        }
    }

    fn read(rig_json: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(rig_json)
            .with_context(|| format!("reading {}", rig_json.display()))?;
        let info: RigInfo = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", rig_json.display()))?;
        Ok(Self {
            info,
            owned: false,
            temp_dir: None,
        })
    }

    pub fn info(&self) -> &RigInfo {
        &self.info
    }
    pub fn dir(&self) -> &Path {
        &self.info.dir
    }
    /// The PEM file of the throwaway CA that signed the servers' certificate.
    pub fn ca_cert(&self) -> &Path {
        &self.info.ca_cert
    }
    /// `127.0.0.1`; the certificate also names `localhost`.
    pub fn host(&self) -> &str {
        &self.info.host
    }
    /// IMAP with STARTTLS.
    pub fn imap_port(&self) -> u16 {
        self.info.imap_port
    }
    /// IMAP over implicit TLS.
    pub fn imaps_port(&self) -> u16 {
        self.info.imaps_port
    }
    /// POP3 with STLS.
    pub fn pop3_port(&self) -> u16 {
        self.info.pop3_port
    }
    /// POP3 over implicit TLS.
    pub fn pop3s_port(&self) -> u16 {
        self.info.pop3s_port
    }
    /// Dovecot's submission service (STARTTLS, AUTH), relaying to Postfix.
    pub fn submission_port(&self) -> u16 {
        self.info.submission_port
    }
    /// Postfix's smtpd: no AUTH, accepts mail from loopback; delivers the rig's domain into
    /// Dovecot and discards everything else.
    pub fn smtp_port(&self) -> u16 {
        self.info.smtp_port
    }
    pub fn lmtp_port(&self) -> u16 {
        self.info.lmtp_port
    }
    /// `example.test`: every address in it has a mailbox.
    pub fn domain(&self) -> &str {
        &self.info.domain
    }
    /// False for a `--no-oauth` rig.
    pub fn oauth(&self) -> bool {
        self.info.oauth
    }
    pub fn introspect_url(&self) -> Option<&str> {
        self.info.introspect_url.as_deref()
    }
    /// The base URL of the emulator this rig introspects tokens at (its `introspect_url`
    /// without `/introspect`).
    pub fn idp_base_url(&self) -> Option<&str> {
        let url = self.introspect_url()?;
        Some(url.strip_suffix("/introspect").unwrap_or(url))
    }
    /// Ends every Dovecot session of `user` (`doveadm kick`), as Exchange does when the
    /// token a session was opened with expires. Returns doveadm's report.
    pub fn kick(&self, user: &str) -> anyhow::Result<String> {
        let config = self.info.dir.join("dovecot/dovecot.conf");
        let out = std::process::Command::new("doveadm")
            .arg("-c")
            .arg(&config)
            .args(["kick", user])
            .stdin(std::process::Stdio::null())
            .output()
            .context("running doveadm kick")?;
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(out.status.success(), "doveadm kick {user}: {said}");
        Ok(said)
    }

    /// The user and password of a `--no-oauth` rig.
    pub fn plain_credentials(&self) -> Option<(&str, &str)> {
        Some((
            self.info.plain_user.as_deref()?,
            self.info.plain_password.as_deref()?,
        ))
    }

    /// A TLS client configuration that trusts the rig's CA (and nothing else).
    pub fn tls_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        tls_config_trusting(self.ca_cert())
    }
}

impl Drop for MailRig {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // Synchronous on purpose: a drop cannot await, and a stop takes a fraction of a
        // second. Outputs go nowhere (no pipe a daemon could hold).
        let stopped = std::process::Command::new(Self::script())
            .arg("stop")
            .arg("--dir")
            .arg(&self.info.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(stopped, Ok(s) if s.success()) {
            eprintln!(
                "mail rig in {} may still be running: mail-rig stop gave {stopped:?}",
                self.info.dir.display()
            );
        }
    }
}

/// A TLS client configuration that trusts only the CA certificates in `ca_pem`.
pub fn tls_config_trusting(ca_pem: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)
        .with_context(|| format!("reading {}", ca_pem.display()))?
    {
        roots.add(cert.with_context(|| format!("parsing {}", ca_pem.display()))?)?;
    }
    if roots.is_empty() {
        bail!("no certificate in {}", ca_pem.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `<repo>`, two levels above this crate.
fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .nth(2)
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

fn check(status: ExitStatus, what: &str, log: &Path) -> anyhow::Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("mail-rig {what} failed ({status}):\n{}", tail(log))
    }
}

/// The last lines of a log, for an error message.
fn tail(path: &Path) -> String {
    const LINES: usize = 60;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LINES)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
