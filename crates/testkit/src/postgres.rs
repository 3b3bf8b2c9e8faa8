//! A throwaway PostgreSQL cluster of a test's own, from Debian's `postgresql` package.
//!
//! [`PgCluster::start`] runs `initdb` and `pg_ctl start` for a fresh cluster in a new
//! directory, listening only on 127.0.0.1 on a free port, with `trust` authentication for
//! the one role `mailgate` (nothing but the loopback address can reach it, and the cluster
//! lives only as long as the test). `fsync` is off: a crash of the machine loses the cluster,
//! which a test does not mind. Dropping the guard stops the server (`pg_ctl stop -m
//! immediate`) and removes the directory, also when the test failed.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (CI does), the cluster is
//! owned by and run as the package's `postgres` system user through `runuser`; otherwise it
//! runs as the current user. Its directory is made traversable for that user (a test's temp
//! directory may sit under a 0700 parent, so the cluster gets a 0755 directory of its own
//! under the system's temporary directory).
//!
//! A machine without the package fails with the install command: under `CI=true` a missing
//! component fails the run, and `scripts/test` installs the package when it is missing.

use anyhow::{Context, bail};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The role every throwaway cluster creates, and the database tests use.
pub const ROLE: &str = "mailgate";

pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    run_as: Option<&'static str>,
    running: bool,
}

impl PgCluster {
    /// Creates and starts a new cluster. Takes a few seconds (mostly `initdb`).
    pub fn start() -> anyhow::Result<PgCluster> {
        let bin = bin_dir()?;
        let run_as = if is_root() { Some("postgres") } else { None };
        let dir = tempfile::Builder::new()
            .prefix("mailgate-pg-")
            .tempdir()
            .context("creating the cluster's directory")?
            .keep();
        let mut cluster = PgCluster {
            data: dir.join("data"),
            dir,
            bin,
            port: 0,
            run_as,
            running: false,
        };
        // From here on, dropping `cluster` cleans up whatever was made.
        std::fs::set_permissions(&cluster.dir, std::fs::Permissions::from_mode(0o755))
            .context("opening the cluster's directory to its owner")?;
        if let Some(user) = run_as {
            let status = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(&cluster.dir)
                .status()
                .context("running chown(1)")?;
            if !status.success() {
                bail!(
                    "chown {user} {} failed: is the postgresql package's `{user}` user missing?",
                    cluster.dir.display()
                );
            }
        }
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                cluster.data.as_os_str(),
                "-U".as_ref(),
                ROLE.as_ref(),
                "--auth=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        // A free port is found by binding port 0 and letting go; another process could take
        // it in between, so a failed start is retried on a new port a few times.
        let mut last_error = None;
        for _ in 0..5 {
            cluster.port = free_port()?;
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c max_connections=200",
                cluster.port,
                cluster.dir.display()
            );
            let log = cluster.dir.join("server.log");
            match cluster.run(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    cluster.data.as_os_str(),
                    "-o".as_ref(),
                    options.as_ref(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "30".as_ref(),
                    "start".as_ref(),
                ],
            ) {
                Ok(()) => {
                    cluster.running = true;
                    return Ok(cluster);
                }
                Err(e) => {
                    let tail = std::fs::read_to_string(&log).unwrap_or_default();
                    last_error = Some(e.context(format!("server log:\n{tail}")));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("pg_ctl start failed")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` as the role [`ROLE`].
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a new, empty database and returns its URL: one cluster can hold a database per
    /// test.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    /// Runs one SQL statement with `psql` and returns what it printed (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                ROLE,
                "-d",
                database,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!(
                "psql {sql:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Every row of `database` as SQL text (`pg_dump --data-only`), for a test to look for
    /// a value that must never be stored in the clear.
    pub fn dump(&self, database: &str) -> anyhow::Result<String> {
        let out = Command::new(self.bin.join("pg_dump"))
            .args([
                "--data-only",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
            ])
            .args(["-U", ROLE, "-d", database])
            .stdin(Stdio::null())
            .output()
            .context("running pg_dump")?;
        if !out.status.success() {
            bail!(
                "pg_dump {database} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs one of the package's programs as the cluster's owner. Output goes to a pipe that
    /// is read to the end (`output()`), never inherited: a daemon holding the test's stderr
    /// would keep the test runner waiting (RIG-NOTES, "the stderr hang").
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
        let path = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        let out = command
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("running {}", path.display()))?;
        if !out.status.success() {
            bail!(
                "{program} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.run(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    self.data.as_os_str(),
                    "-m".as_ref(),
                    "immediate".as_ref(),
                    "-w".as_ref(),
                    "stop".as_ref(),
                ],
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory of the newest installed PostgreSQL's programs (`/usr/lib/postgresql/N/bin`
/// on Debian, where they are not on `PATH`).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    match newest {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/N/bin/initdb): \
             `apt-get install postgresql` (scripts/test installs it when missing)"
        ),
    }
}

fn is_root() -> bool {
    // The effective uid, without `unsafe`: /proc/self/status has "Uid: real effective …".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}
