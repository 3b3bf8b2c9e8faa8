//! `mailgate-idp [--listen 127.0.0.1:0] [--config FILE.json]`: the identity-provider emulator
//! as a process. Prints one JSON line `{"base_url":"http://127.0.0.1:PORT",
//! "sender_login_map":"tcp:127.0.0.1:PORT2"}` on stdout once
//! listening, logs to stderr, serves until SIGTERM or Ctrl-C. See docs/idp-emulator.md.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use mailgate_testkit::idp::{Idp, IdpConfig};

const USAGE: &str = "usage: mailgate-idp [--listen ADDR:PORT] [--config FILE.json]";

struct Args {
    listen: Option<SocketAddr>,
    config: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        listen: None,
        config: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                args.listen = Some(v.parse().with_context(|| {
                    format!("--listen {v}: expected ADDR:PORT, e.g. 127.0.0.1:0")
                })?);
            }
            "--config" => args.config = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = parse_args()?;
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the config file {}", path.display()))?;
            serde_json::from_str::<IdpConfig>(&text).with_context(|| {
                format!(
                    "{}: expected {{\"clients\":[...],\"users\":[...]}}",
                    path.display()
                )
            })?
        }
        None => IdpConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let idp = Idp::start(config)?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "{}",
            serde_json::json!({
                "base_url": idp.base_url(),
                "sender_login_map": idp.sender_login_map(),
            })
        )?;
        stdout.flush()?;
    }
    wait_for_stop_signal().await?;
    tracing::info!("stopping");
    idp.stop().await;
    Ok(())
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
    }
    Ok(())
}
