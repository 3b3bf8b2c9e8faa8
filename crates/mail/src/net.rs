//! Sockets, TLS and timeouts: the only place the mail clients touch the network.

use crate::remedy::MailRemedy;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A failed mail step: what to do about it, and the server's or library's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailError {
    pub remedy: MailRemedy,
    /// What happened, in mailgate's words.
    pub detail: String,
    /// The server's reply, verbatim (never a token: mailgate does not echo what it sent).
    pub server_says: Option<String>,
    /// When the token could not be had: the OAuth catalogue's code and sentence, which say
    /// more than `token_unavailable` (e.g. `secret_expired`).
    pub oauth: Option<(&'static str, &'static str)>,
}

impl MailError {
    pub fn new(remedy: MailRemedy, detail: impl Into<String>) -> Self {
        MailError {
            remedy,
            detail: detail.into(),
            server_says: None,
            oauth: None,
        }
    }

    pub fn server(remedy: MailRemedy, detail: impl Into<String>, says: impl Into<String>) -> Self {
        MailError {
            remedy,
            detail: detail.into(),
            server_says: Some(says.into()),
            oauth: None,
        }
    }
}

impl std::fmt::Display for MailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}]: {}",
            self.detail,
            self.remedy.code(),
            self.remedy.sentence()
        )?;
        if let Some(s) = &self.server_says {
            write!(f, " (server said: {s})")?;
        }
        Ok(())
    }
}

impl std::error::Error for MailError {}

/// Which certificates mailgate trusts: the Mozilla roots plus optional extra CAs (a
/// private mail server's, or the test rig's).
#[derive(Clone)]
pub struct TlsSettings {
    config: Arc<rustls::ClientConfig>,
}

impl TlsSettings {
    pub fn new(extra_ca_file: Option<&Path>) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = extra_ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    format!(
                        "{} is not a valid PEM certificate file: {e}",
                        path.display()
                    )
                })?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                found += 1;
            }
            if found == 0 {
                return Err(format!("{} holds no PEM certificate", path.display()));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsSettings {
            config: Arc::new(config),
        })
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Between taking the plain stream and getting the TLS one back.
    Upgrading,
    /// Closed on purpose ([`Conn::close`]).
    Closed,
}

/// One connection: a stream, a host name for TLS, and the timeout every read and write
/// gets.
pub struct Conn {
    stream: Stream,
    host: String,
    pub timeout: Duration,
}

pub async fn resolve(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, MailError> {
    let lookup = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await;
    match lookup {
        Err(_) => Err(MailError::new(
            MailRemedy::DnsFailed,
            format!("resolving {host} took longer than {timeout:?}"),
        )),
        Ok(Err(e)) => Err(MailError::new(
            MailRemedy::DnsFailed,
            format!("cannot resolve {host}: {e}"),
        )),
        Ok(Ok(addrs)) => {
            let v: Vec<SocketAddr> = addrs.collect();
            if v.is_empty() {
                Err(MailError::new(
                    MailRemedy::DnsFailed,
                    format!("{host} has no address"),
                ))
            } else {
                Ok(v)
            }
        }
    }
}

impl Conn {
    /// TCP to the first address that answers.
    pub async fn connect(
        host: &str,
        addrs: &[SocketAddr],
        timeout: Duration,
    ) -> Result<(Conn, SocketAddr), MailError> {
        let mut last = MailError::new(MailRemedy::ConnectionRefused, "no address to connect to");
        for addr in addrs {
            match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok((
                        Conn {
                            stream: Stream::Plain(s),
                            host: host.to_owned(),
                            timeout,
                        },
                        *addr,
                    ));
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    last = MailError::new(
                        MailRemedy::ConnectionRefused,
                        format!("{addr} refused the connection"),
                    );
                }
                Ok(Err(e)) => {
                    last = MailError::new(
                        MailRemedy::ConnectionRefused,
                        format!("cannot connect to {addr}: {e}"),
                    )
                }
                Err(_) => {
                    last = MailError::new(
                        MailRemedy::ConnectTimeout,
                        format!("connecting to {addr} took longer than {timeout:?}"),
                    )
                }
            }
        }
        Err(last)
    }

    /// The TLS handshake, for implicit TLS or after STARTTLS. Returns the negotiated
    /// version and the certificate's expiry for the report.
    pub async fn start_tls(&mut self, tls: &TlsSettings) -> Result<TlsInfo, MailError> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Upgrading) else {
            return Err(MailError::new(
                MailRemedy::TlsFailed,
                "the connection is already encrypted",
            ));
        };
        let name = rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|_| {
            MailError::new(
                MailRemedy::TlsNameMismatch,
                format!("{} is not a valid TLS server name", self.host),
            )
        })?;
        let connector = TlsConnector::from(tls.config.clone());
        let stream = match tokio::time::timeout(self.timeout, connector.connect(name, tcp)).await {
            Err(_) => {
                return Err(MailError::new(
                    MailRemedy::Deadline,
                    "the TLS handshake got no answer",
                ));
            }
            Ok(Err(e)) => return Err(classify_tls(&e)),
            Ok(Ok(s)) => s,
        };
        let session = stream.get_ref().1;
        let version = session
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        let not_after = session
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| cert_not_after(c.as_ref()));
        self.stream = Stream::Tls(Box::new(stream));
        Ok(TlsInfo { version, not_after })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The stream itself, for the proxy's byte relay after login.
    fn into_stream(self) -> Result<Box<dyn Io>, MailError> {
        match self.stream {
            Stream::Plain(s) => Ok(Box::new(s)),
            Stream::Tls(s) => Ok(s),
            Stream::Upgrading => Err(MailError::new(
                MailRemedy::ConnectionLost,
                "the connection was lost during the TLS upgrade",
            )),
            Stream::Closed => Err(MailError::new(
                MailRemedy::ConnectionLost,
                "the connection was closed",
            )),
        }
    }

    /// The stream for the relay once the client's reader holds nothing: `unread` bytes the
    /// `protocol` server sent beyond its reply to `last_command` would be lost, so any is an
    /// error.
    pub fn into_stream_if_drained(
        self,
        unread: usize,
        protocol: &str,
        last_command: &str,
    ) -> Result<Box<dyn Io>, MailError> {
        if unread > 0 {
            return Err(MailError::new(
                MailRemedy::WrongProtocol,
                format!("the {protocol} server sent more than its reply to {last_command}"),
            ));
        }
        self.into_stream()
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    fn io(&mut self) -> Result<&mut dyn Io, MailError> {
        match &mut self.stream {
            Stream::Plain(s) => Ok(s),
            Stream::Tls(s) => Ok(s.as_mut()),
            Stream::Upgrading => Err(MailError::new(
                MailRemedy::ConnectionLost,
                "the connection was lost during the TLS upgrade",
            )),
            Stream::Closed => Err(MailError::new(
                MailRemedy::ConnectionLost,
                "the connection was closed",
            )),
        }
    }

    /// Closes the connection now (TLS close_notify, then FIN), without a protocol goodbye:
    /// the server abandons whatever transaction is open. Later reads and writes fail.
    pub async fn close(&mut self) {
        let timeout = self.timeout;
        if let Ok(io) = self.io() {
            let _ = tokio::time::timeout(timeout, io.shutdown()).await;
        }
        self.stream = Stream::Closed;
    }

    /// Writes a command line (CRLF appended).
    pub async fn send_line(&mut self, line: &str) -> Result<(), MailError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.send_raw(&bytes).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), MailError> {
        let timeout = self.timeout;
        let io = self.io()?;
        match tokio::time::timeout(timeout, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
        {
            Err(_) => Err(MailError::new(
                MailRemedy::Deadline,
                "the server stopped reading",
            )),
            Ok(Err(e)) => Err(MailError::new(
                MailRemedy::ConnectionLost,
                format!("writing failed: {e}"),
            )),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Reads what is available (at least one byte), or fails on timeout or close.
    pub async fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, MailError> {
        let timeout = self.timeout;
        let io = self.io()?;
        match tokio::time::timeout(timeout, io.read(buf)).await {
            Err(_) => Err(MailError::new(
                MailRemedy::Deadline,
                format!("no answer within {timeout:?}"),
            )),
            Ok(Err(e)) => Err(MailError::new(
                MailRemedy::ConnectionLost,
                format!("reading failed: {e}"),
            )),
            Ok(Ok(0)) => Err(MailError::new(
                MailRemedy::ConnectionLost,
                "the server closed the connection",
            )),
            Ok(Ok(n)) => Ok(n),
        }
    }
}

/// What the TLS step reports.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub version: String,
    /// The server certificate's notAfter, Unix seconds.
    pub not_after: Option<i64>,
}

impl std::fmt::Display for TlsInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.version)?;
        if let Some(t) = self
            .not_after
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        {
            write!(f, ", certificate expires {}", t.date())?;
        }
        Ok(())
    }
}

/// One DER element: (tag, contents, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The notAfter of an X.509 certificate (RFC 5280 §4.1.2.5): Certificate → tbsCertificate →
/// [version] serial signature issuer validity{notBefore, notAfter}. A few lines of DER
/// walking instead of a certificate-parsing dependency.
pub fn cert_not_after(cert: &[u8]) -> Option<i64> {
    let (_, certificate, _) = der(cert)?;
    let (_, tbs, _) = der(certificate)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der(rest)?.2; // explicit version
    }
    for _ in 0..3 {
        rest = der(rest)?.2; // serial, signature algorithm, issuer
    }
    let (_, validity, _) = der(rest)?;
    let (_, _, after) = der(validity)?; // skip notBefore
    let (tag, text, _) = der(after)?;
    let text = std::str::from_utf8(text).ok()?;
    let digits = |s: &str| s.parse::<i32>().ok();
    let (year, rest) = match tag {
        0x17 => {
            let yy = digits(text.get(0..2)?)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (digits(text.get(0..4)?)?, text.get(4..)?),
        _ => return None,
    };
    let month = time::Month::try_from(digits(rest.get(0..2)?)? as u8).ok()?;
    let date = time::Date::from_calendar_date(year, month, digits(rest.get(2..4)?)? as u8).ok()?;
    let t = date
        .with_hms(
            digits(rest.get(4..6)?)? as u8,
            digits(rest.get(6..8)?)? as u8,
            digits(rest.get(8..10)?)? as u8,
        )
        .ok()?;
    Some(t.assume_utc().unix_timestamp())
}

/// DNS, TCP and, for implicit TLS, the handshake: a ready connection to `server`.
/// ("Test configuration" does the same step by step, recording each.)
pub async fn open(
    server: &mailgate_core::account::ServerEndpoint,
    timeout: Duration,
    tls: &TlsSettings,
) -> Result<Conn, MailError> {
    let addrs = resolve(server.host.as_str(), server.port.get(), timeout).await?;
    let (mut conn, _) = Conn::connect(server.host.as_str(), &addrs, timeout).await?;
    if server.tls == mailgate_core::TlsMode::Implicit {
        conn.start_tls(tls).await?;
    }
    Ok(conn)
}

impl Conn {
    /// Reads until `next` yields a complete item from `reader`, feeding it what arrives.
    /// `protocol` names the reader in the error ("IMAP response", "SMTP reply").
    pub(crate) async fn read_item<R, T>(
        &mut self,
        reader: &mut R,
        next: fn(&mut R) -> Result<Option<T>, mailgate_proto::ProtoError>,
        feed: fn(&mut R, &[u8]),
        protocol: &str,
    ) -> Result<T, MailError> {
        let mut buf = [0u8; 8192];
        loop {
            match next(reader) {
                Ok(Some(item)) => return Ok(item),
                Ok(None) => {}
                Err(e) => {
                    return Err(MailError::new(
                        MailRemedy::WrongProtocol,
                        format!("unreadable {protocol}: {e}"),
                    ));
                }
            }
            let n = self.read_some(&mut buf).await?;
            feed(reader, &buf[..n]);
        }
    }
}

fn classify_tls(e: &std::io::Error) -> MailError {
    let text = match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    };
    let lower = text.to_ascii_lowercase();
    let remedy = if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        MailRemedy::TlsNameMismatch
    } else if lower.contains("expired") || lower.contains("notvalidyet") {
        MailRemedy::TlsExpired
    } else if lower.contains("unknownissuer")
        || lower.contains("unknown issuer")
        || lower.contains("badsignature")
    {
        MailRemedy::TlsUntrusted
    } else if lower.contains("corrupt message")
        || lower.contains("invalidcontenttype")
        || lower.contains("invalid content type")
        || lower.contains("received plaintext")
        // A plain-text server waits for a command and then closes: the handshake sees EOF.
        || lower.contains("eof")
        || lower.contains("unexpected end")
    {
        MailRemedy::NotTls
    } else {
        MailRemedy::TlsFailed
    };
    MailError::new(remedy, format!("TLS handshake failed: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_ca_file_is_refused_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("mailgate-pem-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let broken = dir.join("broken-ca.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = TlsSettings::new(Some(&broken)).err().unwrap();
        assert!(err.contains("broken-ca.pem"), "{err}");
        assert!(err.contains("not a valid PEM certificate file"), "{err}");
        let empty = dir.join("empty-ca.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let err = TlsSettings::new(Some(&empty)).err().unwrap();
        assert!(
            err.contains("empty-ca.pem") && err.contains("holds no PEM certificate"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        if content.len() < 0x80 {
            v.push(content.len() as u8);
        } else {
            v.push(0x82);
            v.extend_from_slice(&(content.len() as u16).to_be_bytes());
        }
        v.extend_from_slice(content);
        v
    }

    fn cert_with_validity(not_after: Vec<u8>) -> Vec<u8> {
        let validity = tlv(0x30, &[tlv(0x17, b"250101000000Z"), not_after].concat());
        let tbs = tlv(
            0x30,
            &[
                tlv(0xa0, &tlv(0x02, &[2])),
                tlv(0x02, &[1]),
                tlv(0x30, &[]),
                tlv(0x30, &[0u8; 200]),
                validity,
                tlv(0x30, &[]),
            ]
            .concat(),
        );
        tlv(0x30, &[tbs, tlv(0x30, &[]), tlv(0x03, &[0])].concat())
    }

    #[test]
    fn reads_not_after_in_both_time_forms() {
        let t = time::macros::datetime!(2027-06-30 12:00:00 UTC).unix_timestamp();
        assert_eq!(
            cert_not_after(&cert_with_validity(tlv(0x18, b"20270630120000Z"))),
            Some(t)
        );
        assert_eq!(
            cert_not_after(&cert_with_validity(tlv(0x17, b"270630120000Z"))),
            Some(t)
        );
        assert_eq!(
            cert_not_after(&cert_with_validity(tlv(0x17, b"not a time"))),
            None
        );
        assert_eq!(cert_not_after(b"\x30\x85garbage"), None);
        assert_eq!(cert_not_after(&[]), None);
        // Truncated anywhere: never a panic.
        let good = cert_with_validity(tlv(0x18, b"20270630120000Z"));
        for cut in 0..good.len() {
            let _ = cert_not_after(&good[..cut]);
        }
    }
}
