//! A small IMAP client: what "Test configuration", the watchers and the proxy need.

use crate::net::{Conn, MailError, TlsSettings};
use crate::remedy::MailRemedy;
use mailgate_proto::imap::{self, Reader, Response, Status};
use mailgate_proto::sasl::{self, Mechanism};

/// What SELECT/EXAMINE reported about the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected {
    pub exists: u32,
    pub uid_validity: Option<u32>,
    pub uid_next: Option<u32>,
}

pub struct ImapClient {
    conn: Conn,
    reader: Reader,
    next_tag: u32,
    pub capabilities: Vec<String>,
}

/// The end of a command: its untagged responses and the tagged result.
pub struct Completed {
    pub untagged: Vec<Response>,
    pub status: Status,
    pub code: Option<String>,
    pub text: String,
}

impl Completed {
    /// The tagged reply as the server wrote it: `NO [CODE] text`.
    fn says(&self) -> String {
        status_line(self.status, self.code.as_deref(), &self.text)
    }
}

/// The tagged reply that completes the command tagged `tag`, without the untagged responses
/// before it; any other response is given back.
fn completion(response: Response, tag: &str) -> Result<Completed, Response> {
    match response {
        Response::Tagged {
            tag: t,
            status,
            code,
            text,
        } if t == tag => Ok(Completed {
            untagged: Vec::new(),
            status,
            code,
            text,
        }),
        other => Err(other),
    }
}

fn status_line(status: Status, code: Option<&str>, text: &str) -> String {
    match code {
        Some(c) => format!("{} [{c}] {text}", status.as_str()),
        None => format!("{} {text}", status.as_str()),
    }
}

impl ImapClient {
    /// Reads the greeting on a fresh connection. A greeting that is not IMAP (an SMTP `220`,
    /// a POP3 `+OK`) is `wrong_protocol`.
    pub async fn greet(mut conn: Conn) -> Result<ImapClient, MailError> {
        let mut reader = Reader::new();
        let greeting = read_response(&mut conn, &mut reader).await.map_err(|e| {
            if e.remedy == MailRemedy::ConnectionLost || e.remedy == MailRemedy::Deadline {
                e
            } else {
                MailError {
                    remedy: MailRemedy::WrongProtocol,
                    ..e
                }
            }
        })?;
        let capabilities = imap::capabilities(&greeting).unwrap_or_default();
        match &greeting {
            Response::Untagged {
                status: Some(Status::Ok | Status::Preauth),
                ..
            } => {}
            Response::Untagged {
                status: Some(Status::Bye),
                text,
                ..
            } => {
                return Err(MailError::server(
                    MailRemedy::ServerError,
                    "the server refused the connection",
                    format!("BYE {text}"),
                ));
            }
            other => {
                return Err(MailError::server(
                    MailRemedy::WrongProtocol,
                    "the greeting is not an IMAP greeting",
                    format!("{other:?}"),
                ));
            }
        }
        Ok(ImapClient {
            conn,
            reader,
            next_tag: 1,
            capabilities,
        })
    }

    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    fn tag(&mut self) -> String {
        let t = format!("m{}", self.next_tag);
        self.next_tag += 1;
        t
    }

    /// Sends a command and reads until its tagged response.
    pub async fn command(&mut self, command: &str) -> Result<Completed, MailError> {
        let tag = self.tag();
        self.conn.send_line(&format!("{tag} {command}")).await?;
        self.until_tagged(&tag).await
    }

    /// [`command`](Self::command), with anything but OK as a server error: `"<what>
    /// failed"` and the server's words.
    async fn command_ok(&mut self, command: &str, what: &str) -> Result<Completed, MailError> {
        let done = self.command(command).await?;
        if done.status != Status::Ok {
            return Err(MailError::server(
                MailRemedy::ServerError,
                format!("{what} failed"),
                done.says(),
            ));
        }
        Ok(done)
    }

    async fn until_tagged(&mut self, tag: &str) -> Result<Completed, MailError> {
        let mut untagged = Vec::new();
        loop {
            let response = read_response(&mut self.conn, &mut self.reader).await?;
            match completion(response, tag) {
                Ok(done) => return Ok(Completed { untagged, ..done }),
                Err(Response::Untagged {
                    status: Some(Status::Bye),
                    text,
                    ..
                }) => {
                    return Err(MailError::server(
                        MailRemedy::ConnectionLost,
                        "the server ended the session",
                        format!("* BYE {text}"),
                    ));
                }
                Err(r) => untagged.push(r),
            }
        }
    }

    pub async fn capability(&mut self) -> Result<Vec<String>, MailError> {
        let done = self.command_ok("CAPABILITY", "CAPABILITY").await?;
        self.capabilities = done
            .untagged
            .iter()
            .filter_map(imap::capabilities)
            .flatten()
            .collect();
        Ok(self.capabilities.clone())
    }

    /// The authenticated connection for the proxy's byte relay. Nothing may be left unread:
    /// bytes the server sent beyond the last tagged reply would be lost.
    pub fn into_stream(self) -> Result<Box<dyn crate::net::Io>, MailError> {
        self.conn
            .into_stream_if_drained(self.reader.buffered(), "IMAP", "CAPABILITY")
    }

    pub fn has(&self, cap: &str) -> bool {
        self.capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case(cap))
    }

    /// STARTTLS and the handshake; capabilities are asked again afterwards (RFC 3501 §6.2.1).
    pub async fn starttls(&mut self, tls: &TlsSettings) -> Result<crate::TlsInfo, MailError> {
        if !self.has("STARTTLS") {
            return Err(MailError::new(
                MailRemedy::NoStartTls,
                "the server does not offer STARTTLS",
            ));
        }
        let done = self.command("STARTTLS").await?;
        if done.status != Status::Ok {
            return Err(MailError::server(
                MailRemedy::NoStartTls,
                "STARTTLS was refused",
                done.says(),
            ));
        }
        if self.reader.buffered() > 0 {
            // Bytes after the OK and before the handshake would be a plaintext injection.
            return Err(MailError::new(
                MailRemedy::TlsFailed,
                "the server sent data before the TLS handshake",
            ));
        }
        self.conn.start_tls(tls).await
    }

    /// The best OAuth mechanism offered: XOAUTH2 first (Exchange offers only it).
    pub fn oauth_mechanism(&self) -> Option<Mechanism> {
        Mechanism::preferred(|name| self.has(&format!("AUTH={name}")))
    }

    /// AUTHENTICATE with SASL-IR when offered (RFC 4959), else the continuation form. An
    /// error challenge is answered as the mechanism requires, then the tagged NO is reported
    /// with the decoded challenge.
    pub async fn authenticate(
        &mut self,
        mech: Mechanism,
        user: &str,
        token: &str,
        port: u16,
    ) -> Result<(), MailError> {
        let ir = sasl::initial_response(mech, user, self.conn.host(), port, token);
        let tag = self.tag();
        if self.has("SASL-IR") {
            self.conn
                .send_line(&format!("{tag} AUTHENTICATE {} {ir}", mech.name()))
                .await?;
        } else {
            self.conn
                .send_line(&format!("{tag} AUTHENTICATE {}", mech.name()))
                .await?;
            self.expect_continuation("AUTHENTICATE", MailRemedy::AuthFailed)
                .await?;
            self.conn.send_line(&ir).await?;
        }
        let mut challenge = None;
        loop {
            let response = read_response(&mut self.conn, &mut self.reader).await?;
            match completion(response, &tag) {
                Err(Response::Continuation { text }) => {
                    challenge = sasl::decode_error_challenge(&text).ok().map(|c| c.raw);
                    self.conn.send_line(mech.error_challenge_answer()).await?;
                }
                Ok(done) => {
                    if done.status == Status::Ok {
                        self.capabilities.clear();
                        return Ok(());
                    }
                    let says = match challenge {
                        Some(c) => format!("{} (challenge: {c})", done.says()),
                        None => done.says(),
                    };
                    // RFC 5530: UNAVAILABLE is a temporary failure (Dovecot's when its token
                    // check cannot reach the identity provider); the token was not judged.
                    if done
                        .code
                        .as_deref()
                        .is_some_and(|c| c.eq_ignore_ascii_case("UNAVAILABLE"))
                    {
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
                _ => {}
            }
        }
    }

    /// Waits for the `+` that lets a command go on; a tagged reply instead is `refused`.
    async fn expect_continuation(
        &mut self,
        command: &str,
        refused: MailRemedy,
    ) -> Result<(), MailError> {
        match read_response(&mut self.conn, &mut self.reader).await? {
            Response::Continuation { .. } => Ok(()),
            Response::Tagged {
                status, code, text, ..
            } => Err(MailError::server(
                refused,
                format!("{command} was refused"),
                status_line(status, code.as_deref(), &text),
            )),
            other => Err(MailError::server(
                MailRemedy::ServerError,
                format!("unexpected answer to {command}"),
                format!("{other:?}"),
            )),
        }
    }

    /// SELECT; returns the message count. Exchange answers `BAD User is authenticated but
    /// not connected.` here when the token's user cannot open this mailbox.
    pub async fn select(&mut self, mailbox: &str) -> Result<u32, MailError> {
        self.open_mailbox("SELECT", mailbox).await.map(|s| s.exists)
    }

    /// SELECT (`read_only`: EXAMINE) with what the watchers need to resume: the message
    /// count, UIDVALIDITY and UIDNEXT.
    pub async fn select_info(
        &mut self,
        mailbox: &str,
        read_only: bool,
    ) -> Result<Selected, MailError> {
        let verb = if read_only { "EXAMINE" } else { "SELECT" };
        self.open_mailbox(verb, mailbox).await
    }

    async fn open_mailbox(&mut self, verb: &str, mailbox: &str) -> Result<Selected, MailError> {
        let arg = imap::quote(mailbox).ok_or_else(|| {
            MailError::new(
                MailRemedy::MailboxUnavailable,
                "the mailbox name contains a line break",
            )
        })?;
        let done = self.command(&format!("{verb} {arg}")).await?;
        if done.status != Status::Ok {
            let remedy = if done
                .text
                .to_ascii_lowercase()
                .contains("authenticated but not connected")
            {
                MailRemedy::NotConnected
            } else {
                MailRemedy::MailboxUnavailable
            };
            return Err(MailError::server(
                remedy,
                format!("{verb} {mailbox} failed"),
                done.says(),
            ));
        }
        let find = |name: &str| {
            done.untagged
                .iter()
                .find_map(|r| imap::code_number(r, name))
        };
        Ok(Selected {
            exists: done
                .untagged
                .iter()
                .find_map(imap::exists_count)
                .unwrap_or(0),
            uid_validity: find("UIDVALIDITY"),
            uid_next: find("UIDNEXT"),
        })
    }

    /// UID SEARCH with `criteria` (e.g. `ALL`, `UID 42:*`), ascending.
    pub async fn uid_search(&mut self, criteria: &str) -> Result<Vec<u32>, MailError> {
        let done = self
            .command_ok(&format!("UID SEARCH {criteria}"), "SEARCH")
            .await?;
        let mut uids: Vec<u32> = done
            .untagged
            .iter()
            .filter_map(imap::search_results)
            .flatten()
            .collect();
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    /// UID, flags, size and header block of each message in `uids`, in the server's order.
    pub async fn fetch_headers(
        &mut self,
        uids: &[u32],
    ) -> Result<Vec<(imap::FetchAttrs, Vec<u8>)>, MailError> {
        if uids.is_empty() {
            return Ok(vec![]);
        }
        let set = uids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let done = self
            .command_ok(
                &format!("UID FETCH {set} (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER])"),
                "FETCH",
            )
            .await?;
        Ok(done
            .untagged
            .into_iter()
            .filter_map(|r| {
                let attrs = imap::fetch_attrs(&r)?;
                attrs.uid?;
                let Response::Untagged { mut literals, .. } = r else {
                    return None;
                };
                let header = if literals.is_empty() {
                    vec![]
                } else {
                    literals.remove(0)
                };
                Some((attrs, header))
            })
            .collect())
    }

    /// UIDs of messages whose Message-ID header contains `message_id`.
    pub async fn search_message_id(&mut self, message_id: &str) -> Result<Vec<u32>, MailError> {
        let arg = imap::quote(message_id)
            .ok_or_else(|| MailError::new(MailRemedy::ServerError, "bad Message-ID"))?;
        self.uid_search(&format!("HEADER Message-ID {arg}")).await
    }

    /// The whole message with this UID (`BODY.PEEK[]`, so it is not marked seen).
    pub async fn fetch(&mut self, uid: u32) -> Result<Option<Vec<u8>>, MailError> {
        let done = self
            .command_ok(&format!("UID FETCH {uid} (BODY.PEEK[])"), "FETCH")
            .await?;
        Ok(done.untagged.into_iter().find_map(|r| match r {
            Response::Untagged { mut literals, .. } if !literals.is_empty() => {
                Some(literals.remove(0))
            }
            _ => None,
        }))
    }

    /// Adds flags (e.g. `\Seen`) to the message with this UID.
    pub async fn add_flags(&mut self, uid: u32, flags: &str) -> Result<(), MailError> {
        self.command_ok(&format!("UID STORE {uid} +FLAGS.SILENT ({flags})"), "STORE")
            .await
            .map(|_| ())
    }

    /// Moves the message to `folder`: MOVE (RFC 6851) when offered, else COPY + \Deleted +
    /// UID EXPUNGE (or EXPUNGE).
    pub async fn move_to(&mut self, uid: u32, folder: &str) -> Result<(), MailError> {
        let target = imap::quote(folder).ok_or_else(|| {
            MailError::new(
                MailRemedy::MailboxUnavailable,
                "the folder name contains a line break",
            )
        })?;
        if self.capabilities.is_empty() {
            self.capability().await?;
        }
        let done = if self.has("MOVE") {
            self.command(&format!("UID MOVE {uid} {target}")).await?
        } else {
            let copied = self.command(&format!("UID COPY {uid} {target}")).await?;
            if copied.status != Status::Ok {
                return Err(MailError::server(
                    MailRemedy::MailboxUnavailable,
                    format!("COPY to {folder} failed"),
                    copied.says(),
                ));
            }
            self.add_flags(uid, "\\Deleted").await?;
            let expunge = if self.has("UIDPLUS") {
                format!("UID EXPUNGE {uid}")
            } else {
                "EXPUNGE".to_owned()
            };
            self.command(&expunge).await?
        };
        if done.status != Status::Ok {
            return Err(MailError::server(
                MailRemedy::MailboxUnavailable,
                format!("moving to {folder} failed"),
                done.says(),
            ));
        }
        Ok(())
    }

    /// IDLE (RFC 2177) until the server reports new mail (`* N EXISTS`) or `wait` passes,
    /// then DONE. Returns the new message count, if any. Callers re-issue IDLE well before
    /// Exchange's 30-minute cut-off.
    pub async fn idle(&mut self, wait: std::time::Duration) -> Result<Option<u32>, MailError> {
        let tag = self.tag();
        self.conn.send_line(&format!("{tag} IDLE")).await?;
        self.expect_continuation("IDLE", MailRemedy::ServerError)
            .await?;
        let saved = self.conn.timeout;
        self.conn.timeout = wait;
        let mut count = None;
        loop {
            match read_response(&mut self.conn, &mut self.reader).await {
                Ok(r) => {
                    if let Some(n) = imap::exists_count(&r) {
                        count = Some(n);
                        break;
                    }
                }
                // Nothing new within `wait`: a normal end of an IDLE round.
                Err(e) if e.remedy == MailRemedy::Deadline => break,
                Err(e) => {
                    self.conn.timeout = saved;
                    return Err(e);
                }
            }
        }
        self.conn.timeout = saved;
        self.conn.send_line("DONE").await?;
        let done = self.until_tagged(&tag).await?;
        if count.is_none() {
            count = done.untagged.iter().find_map(imap::exists_count);
        }
        Ok(count)
    }

    pub async fn noop(&mut self) -> Result<(), MailError> {
        self.command("NOOP").await.map(|_| ())
    }

    pub async fn logout(mut self) {
        let _ = self.command("LOGOUT").await;
    }
}

async fn read_response(conn: &mut Conn, reader: &mut Reader) -> Result<Response, MailError> {
    conn.read_item(reader, Reader::next, Reader::feed, "IMAP response")
        .await
}
