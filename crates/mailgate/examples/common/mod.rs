//! What the benchmarks share (included with `#[path]`; not an example of its own).
// Each benchmark uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `mailgate` next to this example (`target/release/examples/..` → `target/release`), built
/// first: `cargo run --example` builds the package's library and the example, not its
/// binaries, so a `mailgate` left over from an older checkout would be measured.
fn build_mailgate() -> PathBuf {
    let examples = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let profile_dir = examples.parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let mut build = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    build
        .args(["build", "--quiet", "-p", "mailgate", "--bin", "mailgate"])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    // `cargo run` gives this process the package's variables; passed on, they would look
    // like a changed environment to build scripts that watch them (ring watches
    // CARGO_MANIFEST_DIR) and every run would rebuild half the dependency tree.
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&k.as_str())
        {
            build.env_remove(k);
        }
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().unwrap();
    assert!(status.success(), "building mailgate: {status}");
    profile_dir.join("mailgate")
}

/// [`build_mailgate`] once per run.
pub fn mailgate_exe() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(build_mailgate).clone()
}

/// A process a benchmark started: ended by its pid (SIGTERM, then SIGKILL after ten seconds)
/// when dropped, also when the benchmark panics.
pub struct Owned {
    pub child: std::process::Child,
}

impl Owned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        use std::time::{Duration, Instant};
        if let Ok(None) = self.child.try_wait() {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `command serve` with its log in `log`, and the lines it prints on stdout. Stdout is
/// read for as long as the server lives: it prints the listening line, then the setup link,
/// and a closed pipe would make those writes fail.
pub fn spawn_serve(mut command: Command, log: &Path) -> (Owned, std::sync::mpsc::Receiver<String>) {
    use std::process::Stdio;
    let mut child = command
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    (Owned { child }, rx)
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP relay on loopback that delivers each chunk `one_way` after it was read, in both
/// directions: a mail server `2 × one_way` of round trip away, as a provider on the
/// internet is (this machine's kernel has no `netem`). Bytes pass unchanged, so STARTTLS
/// and the certificate check work through it. Returns the relay's port; it runs until the
/// process ends.
pub async fn latency_relay(upstream: std::net::SocketAddr, one_way: std::time::Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(delayed_copy(client_read, server_write, one_way));
                tokio::spawn(delayed_copy(server_read, client_write, one_way));
            });
        }
    });
    port
}

/// Copies `from` to `to`, each chunk written `delay` after it was read; later chunks are
/// not held up by earlier ones beyond their own due time (a link's latency, not a
/// bandwidth limit). Ends when either side closes.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: std::time::Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
