//! What password-only clients send to mailgate's legacy proxy before they are logged in:
//! the commands the proxy answers itself (IMAP `CAPABILITY`/`LOGIN`/`AUTHENTICATE PLAIN`/…),
//! read incrementally and bounded like the server readers. After a good login the proxy
//! relays bytes and parses nothing more, so only the pre-login grammar lives here.
//!
//! [`ClientLines`] frames the client's bytes into lines (a line longer than its limit is an
//! error as soon as the limit is passed, so a client that never sends a newline costs at
//! most the limit); [`parse_imap_command`] reads one IMAP command line;
//! [`decode_sasl_plain`] reads a SASL PLAIN response (RFC 4616).

use crate::ProtoError;
use crate::line::LineBuffer;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The longest command line a client may send before login. `LOGIN` with a long address
/// and password, or `AUTHENTICATE PLAIN` with its initial response, fits many times over.
pub const DEFAULT_MAX_COMMAND_LINE: usize = 8 * 1024;

/// The client's bytes as lines, bounded.
#[derive(Debug)]
pub struct ClientLines {
    buffer: LineBuffer,
    max_line: usize,
}

impl ClientLines {
    pub fn new(max_line: usize) -> Self {
        Self {
            buffer: LineBuffer::default(),
            max_line,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer.feed(bytes);
    }

    /// The next complete line without its line end, `Ok(None)` until its LF arrives.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, ProtoError> {
        self.buffer
            .next_line(self.max_line)
            .map(|line| line.map(<[u8]>::to_vec))
            .map_err(|_| ProtoError::LineTooLong {
                limit: self.max_line,
            })
    }

    /// What the client sent after its last complete line (it may pipeline commands right
    /// after `LOGIN`): the proxy passes these bytes on once it relays.
    pub fn take_rest(&mut self) -> Vec<u8> {
        self.buffer.take(usize::MAX).to_vec()
    }

    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

/// An IMAP command the proxy understands before login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImapCommand {
    Capability,
    Noop,
    Logout,
    StartTls,
    Login {
        user: String,
        password: String,
    },
    /// `AUTHENTICATE mechanism [initial-response]` (RFC 4959 SASL-IR).
    Authenticate {
        mechanism: String,
        initial_response: Option<String>,
    },
    /// Any other command: not allowed before login. The name is upper-cased.
    Other(String),
}

/// One client line, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImapInput {
    Command {
        tag: String,
        command: ImapCommand,
    },
    /// Not a command the grammar allows; the proxy answers `tag BAD reason` (or `* BAD`
    /// when there is no usable tag).
    Bad {
        tag: Option<String>,
        reason: &'static str,
    },
}

/// A tag is any run of ASTRING-CHAR but `+` (RFC 3501 §9): printable ASCII without the
/// specials that would make the tagged reply unreadable.
fn is_tag_char(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'+' | b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\')
}

/// Reads one command line (without CRLF).
pub fn parse_imap_command(line: &[u8]) -> ImapInput {
    let Ok(text) = std::str::from_utf8(line) else {
        return ImapInput::Bad {
            tag: None,
            reason: "the command is not UTF-8 text",
        };
    };
    let (tag, rest) = text.split_once(' ').unwrap_or((text, ""));
    if tag.is_empty() || !tag.bytes().all(is_tag_char) {
        return ImapInput::Bad {
            tag: None,
            reason: "the command has no valid tag",
        };
    }
    let tag = tag.to_owned();
    let bad = |tag: String, reason| ImapInput::Bad {
        tag: Some(tag),
        reason,
    };
    let args = match arguments(rest) {
        Ok(args) => args,
        Err(reason) => return bad(tag, reason),
    };
    let mut args = args.into_iter();
    let Some(name) = args.next() else {
        return bad(tag, "the command name is missing");
    };
    let name = name.to_ascii_uppercase();
    let rest: Vec<String> = args.collect();
    let command = match (name.as_str(), rest.as_slice()) {
        ("CAPABILITY", []) => ImapCommand::Capability,
        ("NOOP", []) => ImapCommand::Noop,
        ("LOGOUT", []) => ImapCommand::Logout,
        ("STARTTLS", []) => ImapCommand::StartTls,
        ("CAPABILITY" | "NOOP" | "LOGOUT" | "STARTTLS", _) => {
            return bad(tag, "this command takes no arguments");
        }
        ("LOGIN", [user, password]) => ImapCommand::Login {
            user: user.clone(),
            password: password.clone(),
        },
        ("LOGIN", _) => return bad(tag, "LOGIN takes a user name and a password"),
        ("AUTHENTICATE", [mechanism]) => ImapCommand::Authenticate {
            mechanism: mechanism.to_ascii_uppercase(),
            initial_response: None,
        },
        ("AUTHENTICATE", [mechanism, initial]) => ImapCommand::Authenticate {
            mechanism: mechanism.to_ascii_uppercase(),
            initial_response: Some(initial.clone()),
        },
        ("AUTHENTICATE", _) => {
            return bad(
                tag,
                "AUTHENTICATE takes a mechanism and an optional initial response",
            );
        }
        _ => ImapCommand::Other(name),
    };
    ImapInput::Command { tag, command }
}

/// Space-separated atoms and quoted strings. Literals (`{5}`) are refused: the proxy would
/// have to answer a continuation mid-line, and the clients it serves quote their strings.
fn arguments(text: &str) -> Result<Vec<String>, &'static str> {
    let mut args = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        match chars.peek() {
            None => return Ok(args),
            Some(' ') => {
                chars.next();
            }
            Some('"') => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None => return Err("a quoted string is not closed"),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => value.push(c),
                            _ => return Err("a quoted string has a bad escape"),
                        },
                        Some(c) if c.is_control() => {
                            return Err("a quoted string holds a control character");
                        }
                        Some(c) => value.push(c),
                    }
                }
                args.push(value);
            }
            Some('{') => return Err("literals are not accepted before login; quote the value"),
            Some(_) => {
                let mut value = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ' ' {
                        break;
                    }
                    if c.is_control() || c == '"' {
                        return Err("an argument holds a control character or a stray quote");
                    }
                    value.push(c);
                    chars.next();
                }
                args.push(value);
            }
        }
    }
}

/// A SASL PLAIN response (RFC 4616): base64 of `authzid NUL authcid NUL password`. Returns
/// (login, password); the login is the authorization identity when one is given, else the
/// authentication identity (the proxy has no administrators acting for others).
pub fn decode_sasl_plain(response: &str) -> Option<(String, String)> {
    let bytes = STANDARD.decode(response.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.split('\0');
    let (authzid, authcid, password) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || authcid.is_empty() {
        return None;
    }
    let login = if authzid.is_empty() { authcid } else { authzid };
    Some((login.to_owned(), password.to_owned()))
}

/// An SMTP command the proxy answers itself before login (RFC 5321, AUTH per RFC 4954).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpCommand {
    /// `EHLO` (true) or `HELO` (false) with the client's name.
    Hello {
        extended: bool,
        name: String,
    },
    /// `AUTH mechanism [initial-response]`; the mechanism upper-cased.
    Auth {
        mechanism: String,
        initial_response: Option<String>,
    },
    StartTls,
    Noop,
    Rset,
    Quit,
    /// Anything else (MAIL, RCPT, DATA, …): needs a login first. The verb upper-cased.
    Other(String),
    /// Not an SMTP command line; the reason for a `501`.
    Bad(&'static str),
}

/// Reads one SMTP command line (without CRLF).
pub fn parse_smtp_command(line: &[u8]) -> SmtpCommand {
    let Ok(text) = std::str::from_utf8(line) else {
        return SmtpCommand::Bad("the command is not UTF-8 text");
    };
    if text.chars().any(char::is_control) {
        return SmtpCommand::Bad("the command holds a control character");
    }
    let mut words = text.split(' ').filter(|w| !w.is_empty());
    let Some(verb) = words.next() else {
        return SmtpCommand::Bad("the command is empty");
    };
    let verb = verb.to_ascii_uppercase();
    let args: Vec<&str> = words.collect();
    match (verb.as_str(), args.as_slice()) {
        ("EHLO" | "HELO", [name]) => SmtpCommand::Hello {
            extended: verb == "EHLO",
            name: (*name).to_owned(),
        },
        ("EHLO" | "HELO", _) => SmtpCommand::Bad("EHLO and HELO take the client's name"),
        ("AUTH", [mechanism]) => SmtpCommand::Auth {
            mechanism: mechanism.to_ascii_uppercase(),
            initial_response: None,
        },
        ("AUTH", [mechanism, initial]) => SmtpCommand::Auth {
            mechanism: mechanism.to_ascii_uppercase(),
            initial_response: Some((*initial).to_owned()),
        },
        ("AUTH", _) => SmtpCommand::Bad("AUTH takes a mechanism and an optional initial response"),
        ("STARTTLS", []) => SmtpCommand::StartTls,
        ("NOOP", _) => SmtpCommand::Noop,
        ("RSET", []) => SmtpCommand::Rset,
        ("QUIT", []) => SmtpCommand::Quit,
        ("STARTTLS" | "RSET" | "QUIT", _) => SmtpCommand::Bad("this command takes no arguments"),
        _ => SmtpCommand::Other(verb),
    }
}

/// A base64 line of a SASL exchange (an `AUTH LOGIN` user name or password) as text.
pub fn decode_sasl_line(line: &str) -> Option<String> {
    let bytes = STANDARD.decode(line.trim()).ok()?;
    String::from_utf8(bytes).ok()
}

/// A POP3 command the proxy answers itself before login (RFC 1939, CAPA and STLS per
/// RFC 2449/2595, AUTH per RFC 5034).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pop3Command {
    Capa,
    User(String),
    /// The rest of the line: a password may hold spaces (RFC 1939 §7).
    Pass(String),
    Auth {
        mechanism: String,
        initial_response: Option<String>,
    },
    Stls,
    Quit,
    /// Anything else (STAT, RETR, …): needs a login first. The verb upper-cased.
    Other(String),
    Bad(&'static str),
}

/// Reads one POP3 command line (without CRLF).
pub fn parse_pop3_command(line: &[u8]) -> Pop3Command {
    let Ok(text) = std::str::from_utf8(line) else {
        return Pop3Command::Bad("the command is not UTF-8 text");
    };
    if text.chars().any(char::is_control) {
        return Pop3Command::Bad("the command holds a control character");
    }
    let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
    let verb = verb.to_ascii_uppercase();
    let args: Vec<&str> = rest.split(' ').filter(|w| !w.is_empty()).collect();
    match (verb.as_str(), args.as_slice()) {
        ("", _) => Pop3Command::Bad("the command is empty"),
        ("CAPA", []) => Pop3Command::Capa,
        ("STLS", []) => Pop3Command::Stls,
        ("QUIT", []) => Pop3Command::Quit,
        ("CAPA" | "STLS" | "QUIT", _) => Pop3Command::Bad("this command takes no arguments"),
        ("USER", [name]) => Pop3Command::User((*name).to_owned()),
        ("USER", _) => Pop3Command::Bad("USER takes one name"),
        ("PASS", [_, ..]) => Pop3Command::Pass(rest.to_owned()),
        ("PASS", []) => Pop3Command::Bad("PASS takes the password"),
        ("AUTH", [mechanism]) => Pop3Command::Auth {
            mechanism: mechanism.to_ascii_uppercase(),
            initial_response: None,
        },
        ("AUTH", [mechanism, initial]) => Pop3Command::Auth {
            mechanism: mechanism.to_ascii_uppercase(),
            initial_response: Some((*initial).to_owned()),
        },
        // A bare AUTH asks for the mechanism list (some clients probe this way).
        ("AUTH", _) => Pop3Command::Bad("AUTH takes a mechanism and an optional initial response"),
        _ => Pop3Command::Other(verb),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{XorShift, assert_same_for_every_split, mutate};

    fn read_all(pieces: &[&[u8]]) -> Result<Vec<ImapInput>, ProtoError> {
        let mut lines = ClientLines::new(64);
        let mut out = Vec::new();
        for piece in pieces {
            lines.feed(piece);
            while let Some(line) = lines.next_line()? {
                out.push(parse_imap_command(&line));
            }
        }
        Ok(out)
    }

    fn command(tag: &str, command: ImapCommand) -> ImapInput {
        ImapInput::Command {
            tag: tag.to_owned(),
            command,
        }
    }

    #[test]
    fn pre_login_commands_read_the_same_however_they_are_cut() {
        let transcript = b"a1 CAPABILITY\r\na2 login alice@example.test \"p\\\"w\\\\d\"\r\n\
a3 AUTHENTICATE PLAIN AGFsaWNlAHB3\r\na4 authenticate plain\r\na5 NOOP\r\na6 SELECT INBOX\r\n\
a7 LOGIN {5}\r\nbad\"tag x\r\na8 STARTTLS\nA9 LOGOUT\r\n";
        let expected = vec![
            command("a1", ImapCommand::Capability),
            command(
                "a2",
                ImapCommand::Login {
                    user: "alice@example.test".into(),
                    password: "p\"w\\d".into(),
                },
            ),
            command(
                "a3",
                ImapCommand::Authenticate {
                    mechanism: "PLAIN".into(),
                    initial_response: Some("AGFsaWNlAHB3".into()),
                },
            ),
            command(
                "a4",
                ImapCommand::Authenticate {
                    mechanism: "PLAIN".into(),
                    initial_response: None,
                },
            ),
            command("a5", ImapCommand::Noop),
            command("a6", ImapCommand::Other("SELECT".into())),
            ImapInput::Bad {
                tag: Some("a7".into()),
                reason: "literals are not accepted before login; quote the value",
            },
            ImapInput::Bad {
                tag: None,
                reason: "the command has no valid tag",
            },
            command("a8", ImapCommand::StartTls),
            command("A9", ImapCommand::Logout),
        ];
        assert_eq!(read_all(&[transcript]).unwrap(), expected);
        assert_same_for_every_split(transcript, read_all);
    }

    #[test]
    fn an_oversize_line_is_refused_before_its_end_arrives() {
        let mut lines = ClientLines::new(16);
        lines.feed(b"a1 LOGIN 0123456");
        assert_eq!(lines.next_line(), Ok(None));
        lines.feed(b"789");
        assert_eq!(
            lines.next_line(),
            Err(ProtoError::LineTooLong { limit: 16 })
        );
    }

    #[test]
    fn malformed_commands_are_bad_not_a_panic() {
        for (line, reason) in [
            (
                &b"a1 LOGIN alice"[..],
                "LOGIN takes a user name and a password",
            ),
            (b"a1 LOGIN \"alice", "a quoted string is not closed"),
            (b"a1 NOOP now", "this command takes no arguments"),
            (b"a1", "the command name is missing"),
            (b"a1 LOGIN \"a\\x\" b", "a quoted string has a bad escape"),
        ] {
            assert_eq!(
                parse_imap_command(line),
                ImapInput::Bad {
                    tag: Some("a1".into()),
                    reason
                },
                "{line:?}"
            );
        }
        assert!(matches!(
            parse_imap_command(b"\xff\xfe LOGIN"),
            ImapInput::Bad { tag: None, .. }
        ));
        assert!(matches!(
            parse_imap_command(b""),
            ImapInput::Bad { tag: None, .. }
        ));
        // Garbage around a valid transcript: any outcome but a panic, and bounded.
        let mut rng = XorShift::new(14);
        let transcript = b"a1 LOGIN \"x\" \"y\"\r\na2 AUTHENTICATE PLAIN\r\n";
        for _ in 0..2000 {
            let input = mutate(&mut rng, transcript);
            let _ = read_all(&[&input]);
        }
    }

    #[test]
    fn sasl_plain_gives_the_login_and_password() {
        let b64 = |s: &str| STANDARD.encode(s);
        assert_eq!(
            decode_sasl_plain(&b64("\0alice@example.test\0secret")),
            Some(("alice@example.test".into(), "secret".into()))
        );
        assert_eq!(
            decode_sasl_plain(&b64("desk\0alice\0secret")),
            Some(("desk".into(), "secret".into()))
        );
        assert_eq!(decode_sasl_plain(&b64("alice\0secret")), None);
        assert_eq!(decode_sasl_plain(&b64("\0\0secret")), None);
        assert_eq!(decode_sasl_plain("not base64!"), None);
    }
    fn read_smtp(pieces: &[&[u8]]) -> Result<Vec<SmtpCommand>, ProtoError> {
        let mut lines = ClientLines::new(64);
        let mut out = Vec::new();
        for piece in pieces {
            lines.feed(piece);
            while let Some(line) = lines.next_line()? {
                out.push(parse_smtp_command(&line));
            }
        }
        Ok(out)
    }

    #[test]
    fn smtp_pre_login_commands_read_the_same_however_they_are_cut() {
        let transcript = b"ehlo client.test\r\nAUTH PLAIN AGEAYg==\r\nauth login\r\n\
MAIL FROM:<a@b>\r\nHELO\r\nNOOP\r\nRSET\nQUIT\r\nSTARTTLS now\r\n";
        let expected = vec![
            SmtpCommand::Hello {
                extended: true,
                name: "client.test".into(),
            },
            SmtpCommand::Auth {
                mechanism: "PLAIN".into(),
                initial_response: Some("AGEAYg==".into()),
            },
            SmtpCommand::Auth {
                mechanism: "LOGIN".into(),
                initial_response: None,
            },
            SmtpCommand::Other("MAIL".into()),
            SmtpCommand::Bad("EHLO and HELO take the client's name"),
            SmtpCommand::Noop,
            SmtpCommand::Rset,
            SmtpCommand::Quit,
            SmtpCommand::Bad("this command takes no arguments"),
        ];
        assert_eq!(read_smtp(&[transcript]).unwrap(), expected);
        assert_same_for_every_split(transcript, read_smtp);
        let mut rng = XorShift::new(15);
        for _ in 0..2000 {
            let _ = read_smtp(&[&mutate(&mut rng, transcript)]);
        }
        assert_eq!(
            parse_smtp_command(b"\xff"),
            SmtpCommand::Bad("the command is not UTF-8 text")
        );
        assert_eq!(decode_sasl_line("dXNlcg=="), Some("user".into()));
        assert_eq!(decode_sasl_line("%%"), None);
    }
    fn read_pop3(pieces: &[&[u8]]) -> Result<Vec<Pop3Command>, ProtoError> {
        let mut lines = ClientLines::new(64);
        let mut out = Vec::new();
        for piece in pieces {
            lines.feed(piece);
            while let Some(line) = lines.next_line()? {
                out.push(parse_pop3_command(&line));
            }
        }
        Ok(out)
    }

    #[test]
    fn pop3_pre_login_commands_read_the_same_however_they_are_cut() {
        let transcript =
            b"CAPA\r\nuser alice@example.test\r\nPASS two words\r\nAUTH PLAIN\r\nSTAT\r\nUSER\nQUIT\r\n";
        let expected = vec![
            Pop3Command::Capa,
            Pop3Command::User("alice@example.test".into()),
            Pop3Command::Pass("two words".into()),
            Pop3Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: None,
            },
            Pop3Command::Other("STAT".into()),
            Pop3Command::Bad("USER takes one name"),
            Pop3Command::Quit,
        ];
        assert_eq!(read_pop3(&[transcript]).unwrap(), expected);
        assert_same_for_every_split(transcript, read_pop3);
        let mut rng = XorShift::new(16);
        for _ in 0..2000 {
            let _ = read_pop3(&[&mutate(&mut rng, transcript)]);
        }
    }
}
