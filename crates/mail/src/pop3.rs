//! A small POP3 client (RFC 1939, SASL per RFC 5034).

use crate::net::{Conn, MailError, TlsSettings};
use crate::remedy::MailRemedy;
use mailgate_proto::pop3::{self, Reader, Status};
use mailgate_proto::sasl::{self, Mechanism};

pub struct Pop3Client {
    conn: Conn,
    reader: Reader,
    /// CAPA lines, upper-cased words.
    pub capabilities: Vec<Vec<String>>,
}

impl Pop3Client {
    pub async fn greet(mut conn: Conn) -> Result<Pop3Client, MailError> {
        let mut reader = Reader::new();
        match read_status(&mut conn, &mut reader).await {
            Ok(Status::Ok(_)) => Ok(Pop3Client {
                conn,
                reader,
                capabilities: Vec::new(),
            }),
            Ok(Status::Err(text)) => Err(MailError::server(
                MailRemedy::ServerError,
                "the server refused the connection",
                format!("-ERR {text}"),
            )),
            Ok(Status::Continuation(text)) => Err(MailError::server(
                MailRemedy::WrongProtocol,
                "the greeting is not a POP3 greeting",
                format!("+ {text}"),
            )),
            Err(e) if matches!(e.remedy, MailRemedy::Deadline | MailRemedy::ConnectionLost) => {
                Err(e)
            }
            Err(e) => Err(MailError {
                remedy: MailRemedy::WrongProtocol,
                ..e
            }),
        }
    }

    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    async fn status(&mut self) -> Result<Status, MailError> {
        read_status(&mut self.conn, &mut self.reader).await
    }

    async fn ok(&mut self, line: &str, what: &str) -> Result<String, MailError> {
        self.conn.send_line(line).await?;
        match self.status().await? {
            Status::Ok(text) => Ok(text),
            Status::Err(text) => Err(MailError::server(
                MailRemedy::ServerError,
                format!("{what} failed"),
                format!("-ERR {text}"),
            )),
            Status::Continuation(text) => Err(MailError::server(
                MailRemedy::ServerError,
                format!("{what}: unexpected continuation"),
                format!("+ {text}"),
            )),
        }
    }

    async fn multiline(&mut self) -> Result<Vec<Vec<u8>>, MailError> {
        self.conn
            .read_item(
                &mut self.reader,
                Reader::next_multiline,
                Reader::feed,
                "POP3 response",
            )
            .await
    }

    pub async fn capa(&mut self) -> Result<Vec<Vec<String>>, MailError> {
        self.ok("CAPA", "CAPA").await?;
        let lines = self.multiline().await?;
        self.capabilities = pop3::parse_capa(&lines);
        Ok(self.capabilities.clone())
    }

    /// The authenticated connection for the proxy's byte relay; nothing may be left unread.
    pub fn into_stream(self) -> Result<Box<dyn crate::net::Io>, MailError> {
        self.conn
            .into_stream_if_drained(self.reader.buffered(), "POP3", "AUTH")
    }

    pub fn has(&self, word: &str) -> bool {
        self.capabilities
            .iter()
            .any(|l| l.first().is_some_and(|w| w == word))
    }

    pub fn oauth_mechanism(&self) -> Option<Mechanism> {
        let sasl = pop3::capa_sasl_mechanisms(&self.capabilities);
        Mechanism::preferred(|name| sasl.iter().any(|m| m == name))
    }

    pub async fn stls(&mut self, tls: &TlsSettings) -> Result<crate::TlsInfo, MailError> {
        if !self.has("STLS") {
            return Err(MailError::new(
                MailRemedy::NoStartTls,
                "the server does not offer STLS",
            ));
        }
        self.ok("STLS", "STLS").await.map_err(|e| MailError {
            remedy: MailRemedy::NoStartTls,
            ..e
        })?;
        self.conn.start_tls(tls).await
    }

    /// The two-line form (`AUTH XOAUTH2`, wait for `+`, then the response), which Exchange
    /// requires for POP3. A `+ <base64>` after the response is an error challenge — not
    /// success: a naive client (Python's poplib) takes it for `+OK`.
    pub async fn authenticate(
        &mut self,
        mech: Mechanism,
        user: &str,
        token: &str,
        port: u16,
    ) -> Result<(), MailError> {
        self.conn
            .send_line(&format!("AUTH {}", mech.name()))
            .await?;
        match self.status().await? {
            Status::Continuation(_) => {}
            Status::Err(text) => {
                return Err(MailError::server(
                    MailRemedy::AuthFailed,
                    "AUTH was refused",
                    format!("-ERR {text}"),
                ));
            }
            Status::Ok(text) => {
                return Err(MailError::server(
                    MailRemedy::ServerError,
                    "AUTH: unexpected +OK before the response",
                    format!("+OK {text}"),
                ));
            }
        }
        let ir = sasl::initial_response(mech, user, self.conn.host(), port, token);
        self.conn.send_line(&ir).await?;
        let mut challenge = None;
        loop {
            match self.status().await? {
                Status::Ok(_) => return Ok(()),
                Status::Continuation(text) => {
                    challenge = sasl::decode_error_challenge(&text).ok().map(|c| c.raw);
                    self.conn.send_line(mech.error_challenge_answer()).await?;
                }
                Status::Err(text) => {
                    let says = match challenge {
                        Some(c) => format!("-ERR {text} (challenge: {c})"),
                        None => format!("-ERR {text}"),
                    };
                    // RFC 3206: [SYS/TEMP] is a temporary system failure, not a refusal.
                    if text.to_ascii_uppercase().starts_with("[SYS/TEMP]") {
                        return Err(MailError::server(
                            MailRemedy::AuthTemporary,
                            format!("{} authentication failed temporarily", mech.name()),
                            says,
                        ));
                    }
                    return Err(MailError::server(
                        MailRemedy::AuthFailed,
                        format!("{} authentication was refused", mech.name()),
                        says,
                    ));
                }
            }
        }
    }

    /// STAT: (messages, octets).
    pub async fn stat(&mut self) -> Result<(u32, u64), MailError> {
        let text = self.ok("STAT", "STAT").await.map_err(|e| {
            if e.server_says
                .as_deref()
                .is_some_and(|s| s.to_ascii_lowercase().contains("not connected"))
            {
                MailError {
                    remedy: MailRemedy::NotConnected,
                    ..e
                }
            } else {
                MailError {
                    remedy: MailRemedy::MailboxUnavailable,
                    ..e
                }
            }
        })?;
        pop3::parse_stat(&text).ok_or_else(|| {
            MailError::server(
                MailRemedy::WrongProtocol,
                "unreadable STAT answer",
                format!("+OK {text}"),
            )
        })
    }

    pub async fn uidl(&mut self) -> Result<Vec<(u32, String)>, MailError> {
        self.ok("UIDL", "UIDL").await?;
        Ok(self
            .multiline()
            .await?
            .iter()
            .filter_map(|l| pop3::parse_uidl_line(l))
            .collect())
    }

    /// `LIST`: (message number, size in octets) of every message.
    pub async fn list(&mut self) -> Result<Vec<(u32, u64)>, MailError> {
        self.ok("LIST", "LIST").await?;
        Ok(self
            .multiline()
            .await?
            .iter()
            .filter_map(|l| {
                let text = std::str::from_utf8(l).ok()?;
                let (n, size) = text.trim().split_once(' ')?;
                Some((n.parse().ok()?, size.trim().parse().ok()?))
            })
            .collect())
    }

    /// The headers of message `n` (TOP n 0).
    pub async fn headers(&mut self, n: u32) -> Result<Vec<Vec<u8>>, MailError> {
        self.ok(&format!("TOP {n} 0"), "TOP").await?;
        self.multiline().await
    }

    pub async fn retr(&mut self, n: u32) -> Result<Vec<Vec<u8>>, MailError> {
        self.ok(&format!("RETR {n}"), "RETR").await?;
        self.multiline().await
    }

    pub async fn dele(&mut self, n: u32) -> Result<(), MailError> {
        self.ok(&format!("DELE {n}"), "DELE").await.map(|_| ())
    }

    pub async fn quit(mut self) {
        let _ = self.ok("QUIT", "QUIT").await;
    }
}

async fn read_status(conn: &mut Conn, reader: &mut Reader) -> Result<Status, MailError> {
    conn.read_item(reader, Reader::next_status, Reader::feed, "POP3 response")
        .await
}
