//! The legacy proxy's transport edges: an upstream that drops in the middle of a large
//! FETCH must close the client cleanly (no hang, bounded).

use crate::mailtest::point_at_rig;
use crate::proxy::{deliver, proxied};
use mailgate_testkit::raw::{RawClient, imap_status_is};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A loopback TCP relay to `target` that forwards both ways (TLS passes through untouched)
/// and cuts each connection once `cut_after` bytes have gone from the server to mailgate.
/// Returns its port and how many server bytes it forwarded in all.
async fn cutting_relay(target: (String, u16), cut_after: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let forwarded = Arc::new(AtomicUsize::new(0));
    let counter = forwarded.clone();
    tokio::spawn(async move {
        while let Ok((downstream, _)) = listener.accept().await {
            let upstream = TcpStream::connect((target.0.as_str(), target.1))
                .await
                .unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let (mut down_read, mut down_write) = downstream.into_split();
                let (mut up_read, mut up_write) = upstream.into_split();
                let to_server = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut down_read, &mut up_write).await;
                });
                let mut sent = 0usize;
                let mut buf = vec![0u8; 16 * 1024];
                while sent < cut_after {
                    let n = match up_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(cut_after - sent),
                    };
                    if down_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                    counter.fetch_add(n, Ordering::Relaxed);
                }
                // Both halves dropped: mailgate sees the server's connection end mid-stream.
                to_server.abort();
            });
        }
    });
    (port, forwarded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_cut_in_the_middle_of_a_large_fetch_closes_the_client() {
    let (f, rig, addr, password) = proxied().await;
    // 2 MB of text: far more than the relay lets through.
    let body = "x".repeat(76) + "\r\n";
    let body = body.repeat(2 * 1024 * 1024 / 78);
    deliver(&f, &rig, "proxy-cut-1", &body).await;
    const CUT_AFTER: usize = 256 * 1024;
    let (relay_port, forwarded) =
        cutting_relay(("127.0.0.1".into(), rig.imaps_port()), CUT_AFTER).await;
    point_at_rig(&f, &rig);
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--inbound-port",
            &relay_port.to_string(),
        ],
        None,
    );

    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut imap = RawClient::connect(host, port.parse().unwrap())
        .await
        .unwrap();
    imap.set_timeout(Duration::from_secs(20));
    imap.read_line().await.unwrap();
    let login = imap
        .imap_command("a1", &format!("LOGIN {} \"{password}\"", f.mailbox))
        .await
        .unwrap();
    assert!(
        imap_status_is(login.last().unwrap(), "a1", "OK"),
        "{login:?}"
    );
    let select = imap.imap_command("a2", "SELECT INBOX").await.unwrap();
    assert!(
        imap_status_is(select.last().unwrap(), "a2", "OK"),
        "{select:?}"
    );
    imap.send_line("a3 FETCH 1:* BODY.PEEK[]").await.unwrap();
    // The client must see the end within a bounded time, never a completed FETCH.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let mut lines = 0usize;
    let mut saw_body = false;
    let closed = loop {
        assert!(
            Instant::now() < deadline,
            "still open 30 s after the cut ({lines} lines)"
        );
        match imap.read_line().await {
            Ok(line) => {
                assert!(
                    !imap_status_is(&line, "a3", "OK"),
                    "the FETCH completed although the upstream was cut: {line}"
                );
                saw_body |= line.starts_with("xxxx");
                lines += 1;
                assert!(lines < 100_000, "unbounded output after the cut");
            }
            Err(e) => break format!("{e:#}"),
        }
    };
    assert!(closed.contains("closed the connection"), "{closed}");
    assert!(
        saw_body,
        "the cut came before the message started: {lines} lines"
    );
    let forwarded = forwarded.load(Ordering::Relaxed);
    assert!(forwarded <= CUT_AFTER, "{forwarded}");
    eprintln!(
        "cut after {forwarded} upstream bytes; client saw {lines} lines, closed {} ms after the FETCH",
        started.elapsed().as_millis()
    );
    // The proxy runs on: a new session logs in through the real server.
    point_at_rig(&f, &rig);
    let mut again = RawClient::connect(host, port.parse().unwrap())
        .await
        .unwrap();
    again.read_line().await.unwrap();
    let login = again
        .imap_command("b1", &format!("LOGIN {} \"{password}\"", f.mailbox))
        .await
        .unwrap();
    assert!(
        imap_status_is(login.last().unwrap(), "b1", "OK"),
        "{login:?}"
    );
}
