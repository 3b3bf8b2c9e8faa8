//! A small SMTP submission client (RFC 5321, AUTH per RFC 4954, STARTTLS per RFC 3207).

use crate::net::{Conn, MailError, TlsSettings};
use crate::remedy::MailRemedy;
use mailgate_proto::sasl::{self, Mechanism};
use mailgate_proto::smtp::{self, Reader, Reply};

pub struct SmtpClient {
    conn: Conn,
    reader: Reader,
    /// EHLO extensions: keyword → parameters.
    pub extensions: Vec<(String, Vec<String>)>,
}

fn says(r: &Reply) -> String {
    r.lines
        .iter()
        .map(|l| format!("{} {l}", r.code))
        .collect::<Vec<_>>()
        .join("\n")
}

impl SmtpClient {
    pub async fn greet(mut conn: Conn) -> Result<SmtpClient, MailError> {
        let mut reader = Reader::new();
        let reply = read_reply(&mut conn, &mut reader)
            .await
            .map_err(|e| match e.remedy {
                MailRemedy::Deadline | MailRemedy::ConnectionLost => e,
                _ => MailError {
                    remedy: MailRemedy::WrongProtocol,
                    ..e
                },
            })?;
        if reply.code != 220 {
            return Err(MailError::server(
                busy_or(MailRemedy::ServerError, &reply),
                "the server did not greet with 220",
                says(&reply),
            ));
        }
        Ok(SmtpClient {
            conn,
            reader,
            extensions: Vec::new(),
        })
    }

    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    pub async fn command(&mut self, line: &str) -> Result<Reply, MailError> {
        self.conn.send_line(line).await?;
        read_reply(&mut self.conn, &mut self.reader).await
    }

    pub async fn ehlo(&mut self, name: &str) -> Result<(), MailError> {
        let reply = self.command(&format!("EHLO {name}")).await?;
        if reply.code != 250 {
            return Err(MailError::server(
                busy_or(MailRemedy::ServerError, &reply),
                "EHLO was refused",
                says(&reply),
            ));
        }
        self.extensions = smtp::ehlo_extensions(&reply);
        Ok(())
    }

    /// The authenticated connection for the proxy's byte relay; nothing may be left unread.
    pub fn into_stream(self) -> Result<Box<dyn crate::net::Io>, MailError> {
        self.conn
            .into_stream_if_drained(self.reader.buffered(), "SMTP", "AUTH")
    }

    pub fn has(&self, keyword: &str) -> bool {
        self.extensions.iter().any(|(k, _)| k == keyword)
    }

    pub fn oauth_mechanism(&self) -> Option<Mechanism> {
        let auth: Vec<&String> = self
            .extensions
            .iter()
            .filter(|(k, _)| k == "AUTH")
            .flat_map(|(_, v)| v)
            .collect();
        Mechanism::preferred(|name| auth.iter().any(|m| *m == name))
    }

    /// STARTTLS, the handshake, and EHLO again (RFC 3207 §4.2: forget what was learnt).
    pub async fn starttls(
        &mut self,
        tls: &TlsSettings,
        ehlo_name: &str,
    ) -> Result<crate::TlsInfo, MailError> {
        if !self.has("STARTTLS") {
            return Err(MailError::new(
                MailRemedy::NoStartTls,
                "the server does not offer STARTTLS",
            ));
        }
        let reply = self.command("STARTTLS").await?;
        if reply.code != 220 {
            return Err(MailError::server(
                MailRemedy::NoStartTls,
                "STARTTLS was refused",
                says(&reply),
            ));
        }
        let version = self.conn.start_tls(tls).await?;
        self.ehlo(ehlo_name).await?;
        Ok(version)
    }

    /// AUTH in the two-line form: `AUTH XOAUTH2`, `334`, then the response on its own line.
    /// A Microsoft token makes the response longer than some servers accept on the command
    /// line (Dovecot's submission: 1 KiB), and RFC 4954 allows both forms.
    pub async fn authenticate(
        &mut self,
        mech: Mechanism,
        user: &str,
        token: &str,
        port: u16,
    ) -> Result<(), MailError> {
        let reply = self.command(&format!("AUTH {}", mech.name())).await?;
        if reply.code != 334 {
            return Err(auth_error(&reply));
        }
        let ir = sasl::initial_response(mech, user, self.conn.host(), port, token);
        let mut reply = self.command(&ir).await?;
        let mut challenge = None;
        if reply.code == 334 {
            challenge = reply
                .lines
                .first()
                .and_then(|l| sasl::decode_error_challenge(l).ok())
                .map(|c| c.raw);
            reply = self.command(mech.error_challenge_answer()).await?;
        }
        if reply.code == 235 {
            return Ok(());
        }
        let mut e = auth_error(&reply);
        if let (Some(c), Some(s)) = (challenge, e.server_says.as_mut()) {
            s.push_str(&format!(" (challenge: {c})"));
        }
        Err(e)
    }

    /// MAIL FROM, RCPT TO, DATA. Returns the server's final reply (its queue id).
    ///
    /// With PIPELINING (RFC 2920; Exchange Online, Gmail, Dovecot and Postfix offer it)
    /// the envelope goes in one write and costs one round trip instead of two plus one per
    /// recipient: most of a message's time when the server is far away.
    pub async fn send(
        &mut self,
        from: &str,
        to: &[&str],
        message: &[u8],
    ) -> Result<String, MailError> {
        self.transaction(false, from, to, message)
            .await
            .map_err(AfterReset::into_error)
    }

    /// RSET, then the message: the next message on a session that carried one before
    /// (RFC 5321 §4.1.1.5: whatever the previous transaction left is cleared). With
    /// PIPELINING the RSET goes in the envelope's write, one round trip fewer. An RSET that
    /// fails, typically because the server closed the session between messages, is
    /// [`AfterReset::Reset`]: nothing of this message was taken, so another session may
    /// send it at once.
    pub async fn reset_and_send(
        &mut self,
        from: &str,
        to: &[&str],
        message: &[u8],
    ) -> Result<String, AfterReset> {
        self.transaction(true, from, to, message).await
    }

    async fn transaction(
        &mut self,
        reset: bool,
        from: &str,
        to: &[&str],
        message: &[u8],
    ) -> Result<String, AfterReset> {
        if self.has("PIPELINING") {
            self.envelope_pipelined(reset, from, to).await?;
        } else {
            if reset {
                self.reset().await.map_err(AfterReset::Reset)?;
            }
            self.envelope_in_lock_step(from, to)
                .await
                .map_err(AfterReset::Message)?;
        }
        self.conn
            .send_raw(&smtp::dot_stuff(message))
            .await
            .map_err(AfterReset::Message)?;
        let reply = read_reply(&mut self.conn, &mut self.reader)
            .await
            .map_err(AfterReset::Message)?;
        if reply.code != 250 {
            return Err(AfterReset::Message(send_refused(
                "the message (after DATA)",
                &reply,
            )));
        }
        Ok(says(&reply))
    }

    /// (RSET,) MAIL FROM, each RCPT TO and DATA in one write; then their replies, in order.
    /// A failed RSET (no reply: the session is gone; or a refusal) ends it before anything
    /// of the message counts. Any refusal after it fails the message as in lock step. If
    /// DATA was accepted although a step before it was refused, the data is never sent and
    /// the connection is closed, which abandons the transaction (RFC 2920 §3.1): no
    /// partial delivery.
    async fn envelope_pipelined(
        &mut self,
        reset: bool,
        from: &str,
        to: &[&str],
    ) -> Result<(), AfterReset> {
        let mut batch = String::new();
        if reset {
            batch.push_str("RSET\r\n");
        }
        batch.push_str(&format!("MAIL FROM:<{from}>\r\n"));
        for rcpt in to {
            batch.push_str(&format!("RCPT TO:<{rcpt}>\r\n"));
        }
        batch.push_str("DATA\r\n");
        let written = self.conn.send_raw(batch.as_bytes()).await;
        if reset {
            // A closed session may still take the write (the kernel's buffer): its RSET
            // reply is what tells.
            let rset = match written {
                Ok(()) => read_reply(&mut self.conn, &mut self.reader).await,
                Err(e) => Err(e),
            };
            match rset {
                Ok(reply) if reply.code == 250 => {}
                Ok(reply) => {
                    // Whatever the server makes of the rest, this session is done with.
                    self.conn.close().await;
                    return Err(AfterReset::Reset(reset_refused(&reply)));
                }
                Err(e) => return Err(AfterReset::Reset(e)),
            }
        } else {
            written.map_err(AfterReset::Message)?;
        }
        self.envelope_replies(to).await.map_err(AfterReset::Message)
    }

    async fn envelope_replies(&mut self, to: &[&str]) -> Result<(), MailError> {
        let reply = read_reply(&mut self.conn, &mut self.reader).await?;
        let mut refused = (reply.code != 250).then(|| send_refused("MAIL FROM", &reply));
        for rcpt in to {
            let reply = read_reply(&mut self.conn, &mut self.reader).await?;
            if refused.is_none() && reply.code != 250 && reply.code != 251 {
                refused = Some(send_refused(&format!("RCPT TO {rcpt}"), &reply));
            }
        }
        let reply = read_reply(&mut self.conn, &mut self.reader).await?;
        match refused {
            None if reply.code == 354 => Ok(()),
            None => Err(send_refused("DATA", &reply)),
            Some(e) => {
                if reply.code == 354 {
                    self.conn.close().await;
                }
                Err(e)
            }
        }
    }

    async fn envelope_in_lock_step(&mut self, from: &str, to: &[&str]) -> Result<(), MailError> {
        let reply = self.command(&format!("MAIL FROM:<{from}>")).await?;
        if reply.code != 250 {
            return Err(send_refused("MAIL FROM", &reply));
        }
        for rcpt in to {
            let reply = self.command(&format!("RCPT TO:<{rcpt}>")).await?;
            if reply.code != 250 && reply.code != 251 {
                return Err(send_refused(&format!("RCPT TO {rcpt}"), &reply));
            }
        }
        let reply = self.command("DATA").await?;
        if reply.code != 354 {
            return Err(send_refused("DATA", &reply));
        }
        Ok(())
    }

    pub async fn quit(mut self) {
        let _ = self.command("QUIT").await;
    }

    /// RSET between two messages of one session (RFC 5321 §4.1.1.5): whatever the previous
    /// transaction left is cleared. It also finds a connection the server has closed
    /// before any of the next message is sent.
    pub async fn reset(&mut self) -> Result<(), MailError> {
        let reply = self.command("RSET").await?;
        if reply.code != 250 {
            return Err(reset_refused(&reply));
        }
        Ok(())
    }
}

/// How [`SmtpClient::reset_and_send`] failed: at the RSET, before anything of the message
/// counted, or with the message itself.
#[derive(Debug)]
pub enum AfterReset {
    Reset(MailError),
    Message(MailError),
}

impl AfterReset {
    pub fn into_error(self) -> MailError {
        match self {
            AfterReset::Reset(e) | AfterReset::Message(e) => e,
        }
    }
}

fn reset_refused(reply: &Reply) -> MailError {
    MailError::server(
        busy_or(MailRemedy::ServerError, reply),
        "RSET was refused",
        says(reply),
    )
}

/// A 4xx reply is the server saying "not now" (RFC 5321 §4.2.1): the same command may
/// succeed later. Every step words it as temporary, never as a refusal to act on.
fn is_transient(reply: &Reply) -> bool {
    (400..500).contains(&reply.code)
}

/// `busy` for a 4xx reply (421 service not available, …), else `otherwise`.
fn busy_or(otherwise: MailRemedy, reply: &Reply) -> MailRemedy {
    if is_transient(reply) {
        MailRemedy::ServerBusy
    } else {
        otherwise
    }
}

/// MAIL FROM, RCPT TO or DATA not accepted: deferred (4xx, retried) or refused (5xx).
fn send_refused(step: &str, reply: &Reply) -> MailError {
    if is_transient(reply) {
        MailError::server(
            MailRemedy::SendDeferred,
            format!(
                "{step} was deferred by the server (a temporary {} reply)",
                reply.code
            ),
            says(reply),
        )
    } else {
        MailError::server(
            if is_send_as_denied(&reply.text()) {
                MailRemedy::SendAsDenied
            } else {
                MailRemedy::SendRejected
            },
            format!("{step} was refused"),
            says(reply),
        )
    }
}

/// Exchange's `5.7.60 SendAsDenied` (STOREDRV.Submission.Exception:SendAsDeniedException),
/// and Postfix's `reject_sender_login_mismatch` ("not owned by user"), which is the same
/// refusal: the authenticated user may not send as the envelope sender.
fn is_send_as_denied(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("5.7.60")
        || lower.contains("sendasdenied")
        || lower.contains("not owned by user")
}

fn auth_error(reply: &Reply) -> MailError {
    let text = reply.text();
    // 454 4.7.0 "Temporary authentication failure" (Dovecot when its token check cannot
    // reach the identity provider), 421, 432: the token was not judged; try again later.
    if is_transient(reply) {
        return MailError::server(
            MailRemedy::AuthTemporary,
            "SMTP AUTH failed temporarily (the server could not check the token)",
            says(reply),
        );
    }
    let remedy = if text.contains("5.7.139")
        || text
            .to_ascii_lowercase()
            .contains("smtpclientauthentication is disabled")
    {
        MailRemedy::SmtpAuthDisabled
    } else {
        MailRemedy::AuthFailed
    };
    MailError::server(remedy, "SMTP AUTH was refused", says(reply))
}

async fn read_reply(conn: &mut Conn, reader: &mut Reader) -> Result<Reply, MailError> {
    conn.read_item(reader, Reader::next, Reader::feed, "SMTP reply")
        .await
}

#[cfg(test)]
mod tests {
    use super::{auth_error, busy_or, send_refused};
    use crate::remedy::MailRemedy;
    use mailgate_proto::smtp::Reply;

    fn reply(code: u16, text: &str) -> Reply {
        Reply {
            code,
            lines: vec![text.to_owned()],
        }
    }

    #[test]
    fn a_temporary_reply_at_each_step_has_its_own_words() {
        // The case: a relay failure at MAIL FROM was worded as "Send As".
        let e = send_refused("MAIL FROM", &reply(421, "4.4.0 Connection to relay failed"));
        assert_eq!(e.remedy, MailRemedy::SendDeferred);
        assert!(
            e.detail.contains("deferred") && e.detail.contains("temporary"),
            "{e}"
        );
        assert_eq!(
            e.server_says.as_deref(),
            Some("421 4.4.0 Connection to relay failed")
        );
        assert!(!e.remedy.sentence().contains("Send As"));
        for step in ["RCPT TO a@example.test", "DATA", "the message (after DATA)"] {
            let e = send_refused(step, &reply(451, "4.3.0 Try again later"));
            assert_eq!(e.remedy, MailRemedy::SendDeferred, "{step}");
            assert!(e.detail.starts_with(step), "{e}");
        }
        let e = send_refused("RCPT TO x@example.test", &reply(550, "5.1.1 User unknown"));
        assert_eq!(e.remedy, MailRemedy::SendRejected);
        assert!(e.detail.contains("refused"), "{e}");
        for code in [454, 421, 432] {
            let e = auth_error(&reply(code, "4.7.0 Temporary authentication failure"));
            assert_eq!(e.remedy, MailRemedy::AuthTemporary, "{code}");
            assert!(e.detail.contains("temporarily"), "{e}");
        }
        assert_eq!(
            auth_error(&reply(535, "5.7.8 Authentication failed")).remedy,
            MailRemedy::AuthFailed
        );
        assert_eq!(
            auth_error(&reply(
                535,
                "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled"
            ))
            .remedy,
            MailRemedy::SmtpAuthDisabled
        );
        assert_eq!(
            busy_or(
                MailRemedy::ServerError,
                &reply(421, "4.3.2 Service not available")
            ),
            MailRemedy::ServerBusy
        );
        assert_eq!(
            busy_or(MailRemedy::ServerError, &reply(554, "5.3.2 No service")),
            MailRemedy::ServerError
        );
    }

    /// A scripted SMTP server on loopback for one connection: greets, answers EHLO with
    /// `extensions`, then runs `script` on the connection.
    async fn scripted<F, Fut>(
        extensions: &'static str,
        script: F,
    ) -> (super::SmtpClient, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(tokio::io::BufReader<tokio::net::TcpStream>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut conn = tokio::io::BufReader::new(socket);
            conn.get_mut()
                .write_all(b"220 test ready\r\n")
                .await
                .unwrap();
            let mut line = String::new();
            conn.read_line(&mut line).await.unwrap();
            assert!(line.starts_with("EHLO"), "{line}");
            conn.get_mut()
                .write_all(extensions.as_bytes())
                .await
                .unwrap();
            script(conn).await;
        });
        let timeout = std::time::Duration::from_secs(5);
        let (conn, _) = crate::net::Conn::connect("localhost", &[addr], timeout)
            .await
            .unwrap();
        let mut client = super::SmtpClient::greet(conn).await.unwrap();
        client.ehlo("client.test").await.unwrap();
        (client, server)
    }

    /// Reads lines until (and with) `last`, within 5 s.
    async fn lines_until(
        conn: &mut tokio::io::BufReader<tokio::net::TcpStream>,
        last: &str,
    ) -> Vec<String> {
        use tokio::io::AsyncBufReadExt;
        let mut lines = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                let mut line = String::new();
                assert!(
                    conn.read_line(&mut line).await.unwrap() > 0,
                    "closed after {lines:?}"
                );
                let done = line == format!("{last}\r\n");
                lines.push(line);
                if done {
                    break;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {last:?} within 5 s; had {lines:?}"));
        lines
    }

    #[tokio::test]
    async fn with_pipelining_the_envelope_goes_in_one_round_trip() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = scripted("250-test\r\n250 PIPELINING\r\n", |mut conn| async move {
            // Nothing is answered before DATA has arrived: a client waiting for MAIL's
            // reply would never send it.
            let envelope = lines_until(&mut conn, "DATA").await;
            assert_eq!(
                envelope,
                ["MAIL FROM:<a@example.test>\r\n", "RCPT TO:<b@example.test>\r\n", "RCPT TO:<c@example.test>\r\n", "DATA\r\n"]
            );
            let w = conn.get_mut();
            w.write_all(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n251 2.1.5 Forwarded\r\n354 End data with .\r\n").await.unwrap();
            let data = lines_until(&mut conn, ".").await;
            assert_eq!(data, ["Subject: hi\r\n", "\r\n", "..dot\r\n", ".\r\n"]);
            conn.get_mut().write_all(b"250 2.0.0 Ok: queued as 42\r\n").await.unwrap();
        })
        .await;
        let reply = client
            .send(
                "a@example.test",
                &["b@example.test", "c@example.test"],
                b"Subject: hi\r\n\r\n.dot\r\n",
            )
            .await
            .unwrap();
        assert_eq!(reply, "250 2.0.0 Ok: queued as 42");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_pipelined_refusal_fails_the_message_and_sends_none_of_its_data() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = scripted("250-test\r\n250 PIPELINING\r\n", |mut conn| async move {
            lines_until(&mut conn, "DATA").await;
            // One recipient refused, DATA accepted for the other: the client must not
            // send the message to part of its recipients.
            conn.get_mut()
                .write_all(b"250 2.1.0 Ok\r\n550 5.1.1 No such user\r\n250 2.1.5 Ok\r\n354 End data with .\r\n")
                .await
                .unwrap();
            let mut rest = Vec::new();
            tokio::time::timeout(std::time::Duration::from_secs(5), conn.read_to_end(&mut rest))
                .await
                .expect("the client closes the connection")
                .unwrap();
            assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
        })
        .await;
        let e = client
            .send(
                "a@example.test",
                &["nobody@example.test", "c@example.test"],
                b"Subject: hi\r\n\r\nbody\r\n",
            )
            .await
            .unwrap_err();
        assert_eq!(e.remedy, MailRemedy::SendRejected);
        assert!(e.detail.contains("RCPT TO nobody@example.test"), "{e}");
        assert_eq!(e.server_says.as_deref(), Some("550 5.1.1 No such user"));
        server.await.unwrap();
        // The session is unusable afterwards, not half in a data phase.
        assert_eq!(
            client.reset().await.unwrap_err().remedy,
            MailRemedy::ConnectionLost
        );
    }

    #[tokio::test]
    async fn a_next_message_pipelines_its_rset_and_a_closed_session_fails_at_the_rset() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) =
            scripted("250-test\r\n250 PIPELINING\r\n", |mut conn| async move {
                let batch = lines_until(&mut conn, "DATA").await;
                assert_eq!(
                    batch,
                    [
                        "RSET\r\n",
                        "MAIL FROM:<a@example.test>\r\n",
                        "RCPT TO:<b@example.test>\r\n",
                        "DATA\r\n"
                    ]
                );
                conn.get_mut()
                    .write_all(
                        b"250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with .\r\n",
                    )
                    .await
                    .unwrap();
                lines_until(&mut conn, ".").await;
                conn.get_mut()
                    .write_all(b"250 2.0.0 Ok: queued as 8\r\n")
                    .await
                    .unwrap();
                // Then the server ends the session, as an idle timeout would.
            })
            .await;
        let reply = client
            .reset_and_send(
                "a@example.test",
                &["b@example.test"],
                b"Subject: one\r\n\r\nbody\r\n",
            )
            .await
            .unwrap();
        assert_eq!(reply, "250 2.0.0 Ok: queued as 8");
        server.await.unwrap();
        match client
            .reset_and_send(
                "a@example.test",
                &["b@example.test"],
                b"Subject: two\r\n\r\nbody\r\n",
            )
            .await
        {
            Err(super::AfterReset::Reset(e)) => {
                assert!(matches!(e.remedy, MailRemedy::ConnectionLost), "{e}")
            }
            other => panic!("expected the RSET to fail: {other:?}"),
        }
    }

    #[tokio::test]
    async fn without_pipelining_each_command_waits_for_its_reply() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = scripted("250 test\r\n", |mut conn| async move {
            for (command, reply) in [
                ("MAIL FROM:<a@example.test>", "250 2.1.0 Ok\r\n"),
                ("RCPT TO:<b@example.test>", "250 2.1.5 Ok\r\n"),
                ("DATA", "354 End data with .\r\n"),
            ] {
                let got = lines_until(&mut conn, command).await;
                assert_eq!(got.len(), 1, "{got:?}");
                // The client sent nothing more before this reply.
                assert!(
                    conn.buffer().is_empty(),
                    "{:?}",
                    String::from_utf8_lossy(conn.buffer())
                );
                conn.get_mut().write_all(reply.as_bytes()).await.unwrap();
            }
            lines_until(&mut conn, ".").await;
            conn.get_mut()
                .write_all(b"250 2.0.0 Ok: queued as 7\r\n")
                .await
                .unwrap();
        })
        .await;
        let reply = client
            .send(
                "a@example.test",
                &["b@example.test"],
                b"Subject: hi\r\n\r\nbody\r\n",
            )
            .await
            .unwrap();
        assert_eq!(reply, "250 2.0.0 Ok: queued as 7");
        server.await.unwrap();
    }

    #[test]
    fn temporary_remedies_read_as_temporary() {
        for r in [
            MailRemedy::ServerBusy,
            MailRemedy::AuthTemporary,
            MailRemedy::SendDeferred,
        ] {
            assert!(r.sentence().contains("again later"), "{}", r.code());
        }
    }
}
