//! Who may send as whom, for the mail rig's Postfix: a `tcp:` lookup table (Postfix's
//! tcp_table(5) protocol) that `smtpd_sender_login_maps` queries with the envelope sender.
//! Every address is owned by itself and by the users granted SendAs on it
//! (`UserSpec::send_as`, Exchange's `Add-RecipientPermission`), so Postfix's
//! `reject_authenticated_sender_login_mismatch` refuses a delegate that sends as a shared
//! mailbox without SendAs, as Exchange does with `5.7.60 SendAsDenied`.
//!
//! The protocol: one request per line, `get SP key LF` with the key %XX-encoded; one reply
//! per line, `200 SP value LF` (found), `500 SP reason LF` (not found), `400 SP reason LF`.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::state::AppState;

/// A longer request line is not Postfix's: the connection is closed.
const MAX_LINE: usize = 4096;

pub(crate) async fn serve(listener: TcpListener, app: AppState) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(answer(stream, app.clone()));
    }
}

async fn answer(stream: TcpStream, app: AppState) {
    let (read, mut write) = stream.into_split();
    // A bounded stream: one connection cannot make the emulator buffer without limit.
    let mut lines = BufReader::new(read.take(1 << 20)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.len() > MAX_LINE {
            return;
        }
        let reply = match line.strip_prefix("get ") {
            Some(key) => lookup(&app, &decode(key)),
            None => "400 expected: get KEY".to_owned(),
        };
        if write
            .write_all(format!("{reply}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

fn lookup(app: &AppState, key: &str) -> String {
    let address = key.trim().to_lowercase();
    // Postfix also asks for partial keys (`@domain`, `user`): nobody owns those.
    let Some((local, domain)) = address.split_once('@') else {
        return "500 not an address".to_owned();
    };
    if local.is_empty() || domain.is_empty() {
        return "500 not an address".to_owned();
    }
    let inner = app.lock();
    let mut owners = vec![address.clone()];
    owners.extend(
        inner
            .users
            .values()
            .filter(|u| u.send_as.contains(&address))
            .map(|u| u.email.to_lowercase()),
    );
    format!("200 {}", owners.join(","))
}

/// tcp_table's %XX decoding (Postfix encodes bytes <= 32, %, and >= 127).
fn decode(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn keys_are_percent_decoded() {
        assert_eq!(decode("support%40example.test"), "support@example.test");
        assert_eq!(decode("a%2"), "a%2");
        assert_eq!(decode("plain@example.test"), "plain@example.test");
    }
}
