//! A minimal line-protocol client for tests: it lets a test talk IMAP, POP3 and SMTP to the
//! real servers of the mail rig by hand, independently of mailgate's own clients.
//!
//! It knows lines, TLS and the few multi-line shapes (IMAP tagged completion, POP3 dot-ended
//! bodies, SMTP continued replies) — nothing else. Every read and write is bounded by a
//! timeout, so a test fails with the lines seen so far instead of hanging.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Long enough for a token introspection round trip on a loaded CI machine.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A raw text-protocol connection.
pub struct RawClient {
    /// `None` only while STARTTLS swaps the stream.
    reader: Option<BufReader<Stream>>,
    server_name: ServerName<'static>,
    timeout: Duration,
}

impl std::fmt::Debug for RawClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawClient")
            .field("server_name", &self.server_name)
            .field("tls", &self.is_tls())
            .finish()
    }
}

/// An SMTP reply: the code and the text of each line (without `250-` / `250 `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// All lines joined with `\n`, for assertions and messages.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

impl std::fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

impl RawClient {
    /// A plain TCP connection. Nothing is read: the greeting is the caller's first line.
    pub async fn connect(host: &str, port: u16) -> anyhow::Result<Self> {
        let tcp = timed(DEFAULT_TIMEOUT, TcpStream::connect((host, port)))
            .await
            .with_context(|| format!("connecting to {host}:{port}"))?;
        Ok(Self {
            reader: Some(BufReader::new(Stream::Plain(tcp))),
            server_name: ServerName::try_from(host.to_owned())?,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// A connection over implicit TLS (imaps, pop3s), checking the certificate against
    /// `host` with `tls`'s roots.
    pub async fn connect_tls(
        host: &str,
        port: u16,
        tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<Self> {
        let mut client = Self::connect(host, port).await?;
        client.upgrade_tls(tls).await?;
        Ok(client)
    }

    /// Changes the timeout of every later read and write.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub fn is_tls(&self) -> bool {
        matches!(
            self.reader.as_ref().map(BufReader::get_ref),
            Some(Stream::Tls(_))
        )
    }

    /// Runs the TLS handshake on this connection (after the protocol's STARTTLS command was
    /// accepted).
    pub async fn upgrade_tls(&mut self, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<()> {
        let reader = self
            .reader
            .take()
            .context("connection lost in a failed upgrade")?;
        // Bytes the server sent before the handshake would be read as if they had come over
        // TLS: the STARTTLS command-injection flaw (CVE-2011-0411). Refuse them.
        if !reader.buffer().is_empty() {
            bail!(
                "the server sent {:?} before the TLS handshake",
                String::from_utf8_lossy(reader.buffer())
            );
        }
        let tcp = match reader.into_inner() {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(_) => bail!("the connection already uses TLS"),
        };
        let connector = TlsConnector::from(tls);
        let tls_stream = timed(
            self.timeout,
            connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .context("TLS handshake")?;
        self.reader = Some(BufReader::new(Stream::Tls(Box::new(tls_stream))));
        Ok(())
    }

    /// IMAP: `tag STARTTLS`, its `OK`, then the handshake. Returns the tagged reply.
    pub async fn imap_starttls(
        &mut self,
        tag: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<String> {
        self.send_line(&format!("{tag} STARTTLS")).await?;
        let reply = self.read_until_tagged(tag).await?;
        let done = reply.last().cloned().unwrap_or_default();
        if !imap_status_is(&done, tag, "OK") {
            bail!("STARTTLS refused: {done}");
        }
        self.upgrade_tls(tls).await?;
        Ok(done)
    }

    /// POP3: `STLS`, its `+OK`, then the handshake. Returns the `+OK` line.
    pub async fn pop3_stls(&mut self, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<String> {
        self.send_line("STLS").await?;
        let reply = self.read_line().await?;
        if !reply.starts_with("+OK") {
            bail!("STLS refused: {reply}");
        }
        self.upgrade_tls(tls).await?;
        Ok(reply)
    }

    /// SMTP: `STARTTLS`, its `220`, then the handshake. The caller sends `EHLO` again.
    pub async fn smtp_starttls(
        &mut self,
        tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<SmtpReply> {
        self.send_line("STARTTLS").await?;
        let reply = self.read_smtp_reply().await?;
        if reply.code != 220 {
            bail!("STARTTLS refused: {reply}");
        }
        self.upgrade_tls(tls).await?;
        Ok(reply)
    }

    /// Sends `line` followed by CRLF.
    pub async fn send_line(&mut self, line: &str) -> anyhow::Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.send_raw(&bytes).await
    }

    /// Sends bytes as they are (a message body, an IMAP literal).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let timeout = self.timeout;
        let stream = self.reader.as_mut().context("connection lost")?;
        timed(timeout, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await
        .context("sending")
    }

    /// One line without its CRLF. The end of the connection is an error.
    pub async fn read_line(&mut self) -> anyhow::Result<String> {
        let timeout = self.timeout;
        let stream = self.reader.as_mut().context("connection lost")?;
        let mut buf = Vec::new();
        let n = timed(timeout, stream.read_until(b'\n', &mut buf))
            .await
            .context("reading a line")?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// IMAP: every line up to and including the one tagged `tag` (`tag OK …` / `NO` / `BAD`),
    /// which is the last. A continuation request (`+ …`) ends the read too, so that a caller
    /// waiting for a command's end is not stuck when the server wants more.
    pub async fn read_until_tagged(&mut self, tag: &str) -> anyhow::Result<Vec<String>> {
        let prefix = format!("{tag} ");
        let mut lines = Vec::new();
        loop {
            let line = self
                .read_line()
                .await
                .with_context(|| format!("waiting for {tag} after {lines:?}"))?;
            let done = line.starts_with(&prefix) || line.starts_with('+');
            lines.push(line);
            if done {
                return Ok(lines);
            }
        }
    }

    /// POP3: the body of a multi-line reply whose `+OK` line the caller has read: lines up
    /// to the lone `.`, with dot-stuffing undone.
    pub async fn read_pop3_multiline(&mut self) -> anyhow::Result<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await.context("reading a POP3 body")?;
            if line == "." {
                return Ok(lines);
            }
            lines.push(line.strip_prefix('.').map(str::to_owned).unwrap_or(line));
        }
    }

    /// SMTP: one reply, `250-…` lines up to the `250 …` one.
    pub async fn read_smtp_reply(&mut self) -> anyhow::Result<SmtpReply> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await.context("reading an SMTP reply")?;
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .with_context(|| format!("not an SMTP reply: {line:?}"))?;
            let separator = line.as_bytes().get(3).copied();
            lines.push(line.get(4..).unwrap_or("").to_owned());
            match separator {
                Some(b'-') => continue,
                None | Some(b' ') => return Ok(SmtpReply { code, lines }),
                Some(_) => bail!("not an SMTP reply: {line:?}"),
            }
        }
    }

    /// SMTP: sends `line` and reads the reply.
    pub async fn smtp_command(&mut self, line: &str) -> anyhow::Result<SmtpReply> {
        self.send_line(line).await?;
        self.read_smtp_reply().await
    }

    /// IMAP: sends `tag command` and reads up to the tagged reply (or a continuation).
    pub async fn imap_command(&mut self, tag: &str, command: &str) -> anyhow::Result<Vec<String>> {
        self.send_line(&format!("{tag} {command}")).await?;
        self.read_until_tagged(tag).await
    }
}

/// Is `line` the tagged completion `tag STATUS …`?
pub fn imap_status_is(line: &str, tag: &str, status: &str) -> bool {
    let mut words = line.split(' ');
    words.next() == Some(tag) && words.next().is_some_and(|s| s.eq_ignore_ascii_case(status))
}

async fn timed<T, E>(
    timeout: Duration,
    future: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => Ok(result?),
        Err(_) => bail!("no answer within {timeout:?}"),
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A client connected to a server that sends `script` and then keeps the connection open.
    async fn client_reading(script: &'static [u8]) -> RawClient {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.write_all(script).await.unwrap();
            // Hold the connection until the client is done with it.
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut sink).await;
        });
        let mut client = RawClient::connect("127.0.0.1", port).await.unwrap();
        client.set_timeout(Duration::from_secs(2));
        client
    }

    #[tokio::test]
    async fn reads_smtp_multiline_replies() {
        let mut c =
            client_reading(b"250-localhost\r\n250-AUTH XOAUTH2\r\n250 SIZE\r\n334 \r\n").await;
        let reply = c.read_smtp_reply().await.unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(reply.lines, ["localhost", "AUTH XOAUTH2", "SIZE"]);
        let go_ahead = c.read_smtp_reply().await.unwrap();
        assert_eq!((go_ahead.code, go_ahead.text()), (334, String::new()));
    }

    #[tokio::test]
    async fn rejects_a_line_that_is_not_an_smtp_reply() {
        let mut c = client_reading(b"+OK hello\r\n").await;
        assert!(c.read_smtp_reply().await.is_err());
    }

    #[tokio::test]
    async fn reads_pop3_bodies_undoing_dot_stuffing() {
        let mut c = client_reading(b"+OK\r\nSubject: x\r\n\r\n..dot\r\n.\r\n").await;
        assert_eq!(c.read_line().await.unwrap(), "+OK");
        let body = c.read_pop3_multiline().await.unwrap();
        assert_eq!(body, ["Subject: x", "", ".dot"]);
    }

    #[tokio::test]
    async fn reads_imap_up_to_the_tagged_line_or_a_continuation() {
        let mut c =
            client_reading(b"* CAPABILITY IMAP4rev1\r\na1 OK done\r\n+ eyJ9\r\na2 NO no\r\n").await;
        let lines = c.read_until_tagged("a1").await.unwrap();
        assert_eq!(lines, ["* CAPABILITY IMAP4rev1", "a1 OK done"]);
        assert!(imap_status_is(&lines[1], "a1", "ok"));
        assert_eq!(c.read_until_tagged("a2").await.unwrap(), ["+ eyJ9"]);
        assert!(imap_status_is(&c.read_line().await.unwrap(), "a2", "NO"));
    }

    #[tokio::test]
    async fn a_silent_server_is_a_timeout_not_a_hang() {
        let mut c = client_reading(b"").await;
        c.set_timeout(Duration::from_millis(50));
        let err = c.read_line().await.unwrap_err();
        assert!(err.to_string().contains("reading a line"), "{err:#}");
    }

    #[tokio::test]
    async fn refuses_bytes_sent_before_the_tls_handshake() {
        // The server answers STARTTLS and, in the same packet, a forged response.
        let mut c = client_reading(b"a1 OK Begin TLS\r\n* forged\r\n").await;
        let tls = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        );
        let err = c.imap_starttls("a1", tls).await.unwrap_err();
        assert!(
            err.to_string().contains("before the TLS handshake"),
            "{err:#}"
        );
    }
}
