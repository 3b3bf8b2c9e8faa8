//! A small SMTP submission client (RFC 5321, AUTH per RFC 4954, STARTTLS per RFC 3207).

use crate::imap::initial_response;
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
                MailRemedy::ServerError,
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
                MailRemedy::ServerError,
                "EHLO was refused",
                says(&reply),
            ));
        }
        self.extensions = smtp::ehlo_extensions(&reply);
        Ok(())
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
        if auth.iter().any(|m| *m == "XOAUTH2") {
            Some(Mechanism::XOAuth2)
        } else if auth.iter().any(|m| *m == "OAUTHBEARER") {
            Some(Mechanism::OAuthBearer)
        } else {
            None
        }
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
        let ir = initial_response(mech, user, self.conn.host(), port, token);
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
    pub async fn send(
        &mut self,
        from: &str,
        to: &[&str],
        message: &[u8],
    ) -> Result<String, MailError> {
        let reply = self.command(&format!("MAIL FROM:<{from}>")).await?;
        if reply.code != 250 {
            return Err(MailError::server(
                MailRemedy::SendRejected,
                "MAIL FROM was refused",
                says(&reply),
            ));
        }
        for rcpt in to {
            let reply = self.command(&format!("RCPT TO:<{rcpt}>")).await?;
            if reply.code != 250 && reply.code != 251 {
                return Err(MailError::server(
                    MailRemedy::SendRejected,
                    format!("RCPT TO {rcpt} was refused"),
                    says(&reply),
                ));
            }
        }
        let reply = self.command("DATA").await?;
        if reply.code != 354 {
            return Err(MailError::server(
                MailRemedy::SendRejected,
                "DATA was refused",
                says(&reply),
            ));
        }
        self.conn.send_raw(&smtp::dot_stuff(message)).await?;
        let reply = read_reply(&mut self.conn, &mut self.reader).await?;
        if reply.code != 250 {
            return Err(MailError::server(
                MailRemedy::SendRejected,
                "the message was refused",
                says(&reply),
            ));
        }
        Ok(says(&reply))
    }

    pub async fn quit(mut self) {
        let _ = self.command("QUIT").await;
    }
}

fn auth_error(reply: &Reply) -> MailError {
    let text = reply.text();
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
