//! IMAP responses as a client reads them (RFC 3501, RFC 9051), decoded incrementally.
//!
//! A response is one line, except that an untagged data response may carry *literals*: a
//! line ending in `{N}` is followed by exactly N raw bytes (which may hold CRLF, `{5}` or
//! anything else), after which the same response continues on the next line, possibly with
//! more literals (RFC 3501 §4.3; `{N+}` is RFC 7888's LITERAL+ form and `~{N}` RFC 3516's
//! literal8, both read the same way). The [`Reader`] takes bytes as they arrive, cut anywhere,
//! and hands out whole [`Response`]s.
//!
//! Literals are recognised only in untagged *data* responses (`* 12 FETCH …`, `* LIST …`):
//! the grammar allows them nowhere else, and a tagged or status line whose human-readable
//! text happens to end in `{3}` must not make the reader wait for three bytes that never come.
//!
//! Memory is bounded by the limits: one response's text (all its lines, without CRLF) by
//! `max_line`, its literals together by `max_literal`. A literal's announcement beyond the
//! limit is refused before any of its bytes are read.

use crate::error::ProtoError;
use crate::line::{Framing, LineBuffer, decimal, excerpt, lossy, split_word};

const PROTOCOL: &str = "IMAP";

/// Response text is short (a `CAPABILITY` line is a few hundred bytes); the limit is there
/// for a peer that never sends a newline, such as a TLS handshake on a plain-text port.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
/// Literals carry message bodies; a server announcing more than this is refused before any
/// of it is read, instead of being buffered.
pub const DEFAULT_MAX_LITERAL: usize = 64 * 1024 * 1024;

/// The status of a tagged response or an untagged status response (RFC 3501 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    /// Untagged only: the connection is already authenticated (greeting).
    Preauth,
    /// Untagged only: the server is closing the connection, e.g. Exchange's
    /// `* BYE Session invalidated - AccessTokenExpired` when the token the session was opened
    /// with expires.
    Bye,
}

impl Status {
    /// The status word as the RFC spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::No => "NO",
            Self::Bad => "BAD",
            Self::Preauth => "PREAUTH",
            Self::Bye => "BYE",
        }
    }

    /// Status words are case-insensitive (RFC 3501 §9, "case-insensitive" atoms).
    fn from_word(word: &[u8]) -> Option<Self> {
        [Self::Ok, Self::No, Self::Bad, Self::Preauth, Self::Bye]
            .into_iter()
            .find(|s| word.eq_ignore_ascii_case(s.as_str().as_bytes()))
    }
}

/// One server response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `a1 OK [CODE args] text`: the end of command `a1`. `code` is what is inside the
    /// brackets (`"AUTHENTICATIONFAILED"`, `"READ-WRITE"`, `"CAPABILITY IMAP4rev1 …"`), `text`
    /// what follows. Exchange's `a2 BAD User is authenticated but not connected.` has no code.
    Tagged {
        tag: String,
        status: Status,
        code: Option<String>,
        text: String,
    },
    /// `* …`. `line` is everything after `"* "`, with each literal's `{N}` kept where it was
    /// received and the literal's bytes in `literals`, in order:
    /// `* 1 FETCH (BODY[] {5}\r\nhello)` has line `1 FETCH (BODY[] {5})` and literals
    /// `[b"hello"]`. For `* OK/NO/BAD/PREAUTH/BYE` lines `status` is set and `code`/`text` are
    /// split as for `Tagged`; for data responses (`* 3 EXISTS`, `* CAPABILITY …`) `status`
    /// and `code` are `None` and `text` is empty.
    Untagged {
        line: String,
        literals: Vec<Vec<u8>>,
        status: Option<Status>,
        code: Option<String>,
        text: String,
    },
    /// `+ text`: the server waits for more from the client (AUTHENTICATE, a synchronising
    /// literal, IDLE). During AUTHENTICATE the text is base64, e.g. the XOAUTH2 error challenge
    /// to decode with [`crate::sasl::decode_error_challenge`]. A bare `+` gives empty text.
    Continuation { text: String },
}

/// An untagged data response whose literals are still arriving.
#[derive(Debug)]
struct Partial {
    /// The response's text so far, each literal's `{N}` included.
    line: Vec<u8>,
    /// The literals so far; the last one is still being filled while `owed > 0`.
    literals: Vec<Vec<u8>>,
    /// Sum of all sizes announced in this response, bounded by `max_literal`.
    announced: usize,
    /// Bytes still to come for the last literal.
    owed: usize,
}

/// The incremental response decoder: [`feed`](Reader::feed) what the socket gives,
/// then call [`next`](Reader::next) until it returns `Ok(None)`.
#[derive(Debug)]
pub struct Reader {
    /// The response in progress is one whose data line announced a literal.
    framing: Framing<Option<Partial>>,
    max_line: usize,
    max_literal: usize,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl Reader {
    /// A reader with [`DEFAULT_MAX_LINE`] and [`DEFAULT_MAX_LITERAL`].
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_LINE, DEFAULT_MAX_LITERAL)
    }

    /// `max_line` bounds one response's text without CRLF (all its lines together when it has
    /// literals); `max_literal` bounds the literals of one response together.
    pub fn with_limits(max_line: usize, max_literal: usize) -> Self {
        Self {
            framing: Framing::default(),
            max_line,
            max_literal,
        }
    }

    /// Appends bytes read from the server. After an error they are dropped unread.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.framing.feed(bytes);
    }

    /// The next complete response, `Ok(None)` if more bytes are needed.
    ///
    /// After an `Err` the reader is unusable: every later call returns the same error, and the
    /// caller drops the connection.
    // Not `Iterator::next`: `Ok(None)` means "feed me", not "finished", and it can fail.
    #[expect(
        clippy::should_implement_trait,
        reason = "fallible, and None is not the end"
    )]
    pub fn next(&mut self) -> Result<Option<Response>, ProtoError> {
        let (max_line, max_literal) = (self.max_line, self.max_literal);
        self.framing
            .read(|buffer, partial| advance(buffer, partial, max_line, max_literal))
    }

    /// Bytes held: received and unparsed, plus the text and literals of a response still
    /// arriving. Bounded by about `max_line + max_literal` plus the last feed.
    pub fn buffered(&self) -> usize {
        let partial = self.framing.pending().as_ref().map_or(0, |p| {
            p.line.len() + p.literals.iter().map(Vec::len).sum::<usize>()
        });
        self.framing.unread() + partial
    }
}

/// The next response from `buffer`, going on with the one in `in_progress`.
fn advance(
    buffer: &mut LineBuffer,
    in_progress: &mut Option<Partial>,
    max_line: usize,
    max_literal: usize,
) -> Result<Option<Response>, ProtoError> {
    let line_too_long = |_| ProtoError::LineTooLong { limit: max_line };
    let mut partial = match in_progress.take() {
        Some(partial) => partial,
        None => {
            let Some(line) = buffer.next_line(max_line).map_err(line_too_long)? else {
                return Ok(None);
            };
            match parse_first_line(line)? {
                FirstLine::Complete(response) => return Ok(Some(response)),
                FirstLine::LiteralFollows { line, size } => Partial {
                    line,
                    literals: vec![Vec::new()],
                    announced: check_literal(size, 0, max_literal)?,
                    owed: size,
                },
            }
        }
    };
    loop {
        if partial.owed > 0 {
            let chunk = buffer.take(partial.owed);
            partial.owed -= chunk.len();
            if let Some(literal) = partial.literals.last_mut() {
                literal.extend_from_slice(chunk);
            }
            if partial.owed > 0 {
                *in_progress = Some(partial);
                return Ok(None);
            }
        }
        let room = max_line.saturating_sub(partial.line.len());
        let Some(segment) = buffer.next_line(room).map_err(line_too_long)? else {
            *in_progress = Some(partial);
            return Ok(None);
        };
        partial.line.extend_from_slice(segment);
        let Some(size) = announced_literal(segment) else {
            return Ok(Some(Response::Untagged {
                line: lossy(&partial.line),
                literals: partial.literals,
                status: None,
                code: None,
                text: String::new(),
            }));
        };
        partial.announced = check_literal(size, partial.announced, max_literal)?;
        partial.literals.push(Vec::new());
        partial.owed = size;
    }
}

enum FirstLine {
    Complete(Response),
    /// An untagged data line ending in a literal's announcement.
    LiteralFollows {
        line: Vec<u8>,
        size: usize,
    },
}

fn parse_first_line(line: &[u8]) -> Result<FirstLine, ProtoError> {
    match line.first() {
        None => Err(malformed(
            "empty line where a response was expected".to_owned(),
        )),
        // RFC 3501 continue-req is `"+" SP (resp-text / base64)`; some servers send a bare `+`.
        Some(b'+') => {
            let text = line.get(1..).unwrap_or_default();
            let text = text.strip_prefix(b" ").unwrap_or(text);
            Ok(FirstLine::Complete(Response::Continuation {
                text: lossy(text),
            }))
        }
        Some(b'*') => {
            let Some(rest) = line.strip_prefix(b"* ").filter(|rest| !rest.is_empty()) else {
                return Err(malformed(format!(
                    "'*' is not followed by a space and a response: {}",
                    excerpt(line)
                )));
            };
            let (word, after_word) = split_word(rest);
            if let Some(status) = Status::from_word(word) {
                let (code, text) = split_resp_text(after_word);
                return Ok(FirstLine::Complete(Response::Untagged {
                    line: lossy(rest),
                    literals: Vec::new(),
                    status: Some(status),
                    code,
                    text,
                }));
            }
            if let Some(size) = announced_literal(rest) {
                return Ok(FirstLine::LiteralFollows {
                    line: rest.to_vec(),
                    size,
                });
            }
            Ok(FirstLine::Complete(Response::Untagged {
                line: lossy(rest),
                literals: Vec::new(),
                status: None,
                code: None,
                text: String::new(),
            }))
        }
        Some(_) => parse_tagged(line).map(FirstLine::Complete),
    }
}

/// `tag SP ("OK" / "NO" / "BAD") SP resp-text` (RFC 3501 §7.1, `response-tagged`).
fn parse_tagged(line: &[u8]) -> Result<Response, ProtoError> {
    let (tag, rest) = split_word(line);
    if tag.is_empty() || !tag.iter().all(|&b| is_tag_char(b)) {
        return Err(malformed(format!(
            "a response starts with neither '*', '+' nor a tag: {}",
            excerpt(line)
        )));
    }
    let (word, after_word) = split_word(rest);
    let status = match Status::from_word(word) {
        Some(status @ (Status::Ok | Status::No | Status::Bad)) => status,
        _ => {
            return Err(malformed(format!(
                "tagged response without OK, NO or BAD: {}",
                excerpt(line)
            )));
        }
    };
    let (code, text) = split_resp_text(after_word);
    Ok(Response::Tagged {
        tag: lossy(tag),
        status,
        code,
        text,
    })
}

/// RFC 3501 `tag`: ASTRING-CHAR except `+`, i.e. printable ASCII without
/// `( ) { SP % * " \ +` (`]` is allowed).
fn is_tag_char(b: u8) -> bool {
    b.is_ascii_graphic() && !b"(){%*\"\\+".contains(&b)
}

/// `resp-text = ["[" resp-text-code "]" SP] text`. A `[` without its `]` is taken as plain
/// text rather than an error: the text is for people, and losing the connection over it
/// helps nobody. Exchange's greeting ends in a bracketed base64 blob, which is text too.
fn split_resp_text(rest: &[u8]) -> (Option<String>, String) {
    let code_and_after = rest.strip_prefix(b"[").and_then(|inner| {
        let close = inner.iter().position(|&b| b == b']')?;
        Some((inner.get(..close)?, inner.get(close + 1..)?))
    });
    match code_and_after {
        Some((code, after)) => {
            let text = after.strip_prefix(b" ").unwrap_or(after);
            (Some(lossy(code)), lossy(text))
        }
        None => (None, lossy(rest)),
    }
}

/// The size announced by a line ending in `{N}` or `{N+}`; `usize::MAX` when N does not fit.
fn announced_literal(line: &[u8]) -> Option<usize> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = inner.get(open + 1..)?;
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .try_fold(0usize, |n, &d| {
                n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
            })
            .unwrap_or(usize::MAX),
    )
}

/// The new total of announced literal bytes, or the error if it passes the limit.
fn check_literal(size: usize, announced: usize, limit: usize) -> Result<usize, ProtoError> {
    match announced.checked_add(size) {
        Some(total) if total <= limit => Ok(total),
        _ => Err(ProtoError::LiteralTooLarge { size, limit }),
    }
}

fn malformed(detail: String) -> ProtoError {
    ProtoError::Malformed {
        protocol: PROTOCOL,
        detail,
    }
}

/// The capabilities in an untagged `* CAPABILITY …` response or in a `[CAPABILITY …]` code
/// (greetings and the tagged OK after authentication carry one, RFC 3501 §7.1), upper-cased:
/// `["IMAP4REV1", "SASL-IR", "AUTH=XOAUTH2", …]`. Capability names are case-insensitive.
pub fn capabilities(resp: &Response) -> Option<Vec<String>> {
    let list = match resp {
        Response::Untagged {
            status: None, line, ..
        } => after_keyword(line, "CAPABILITY")?,
        Response::Untagged {
            code: Some(code), ..
        }
        | Response::Tagged {
            code: Some(code), ..
        } => after_keyword(code, "CAPABILITY")?,
        _ => return None,
    };
    Some(
        list.split_ascii_whitespace()
            .map(str::to_ascii_uppercase)
            .collect(),
    )
}

/// Quotes `s` as an IMAP quoted string (RFC 3501 §4.3), escaping `\` and `"`.
///
/// `None` if `s` holds CR, LF or NUL, which no quoted string can carry: send a literal
/// instead. Non-ASCII text is quoted as is, which RFC 9051 and `UTF8=ACCEPT` servers allow
/// and strict IMAP4rev1 servers may refuse.
pub fn quote(s: &str) -> Option<String> {
    if s.contains(['\r', '\n', '\0']) {
        return None;
    }
    let mut quoted = String::with_capacity(s.len() + 2);
    quoted.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Some(quoted)
}

/// `* N EXISTS` (RFC 3501 §7.3.1): the number of messages in the selected mailbox.
pub fn exists_count(resp: &Response) -> Option<u32> {
    let Response::Untagged {
        status: None, line, ..
    } = resp
    else {
        return None;
    };
    let mut words = line.split(' ');
    let count = decimal(words.next()?)?;
    let keyword = words.next()?;
    (keyword.eq_ignore_ascii_case("EXISTS") && words.next().is_none()).then_some(count)
}

/// `* SEARCH 2 84 882` (RFC 3501 §7.2.5) → `[2, 84, 882]`; `* SEARCH` alone → `[]`.
///
/// A trailing `(MODSEQ n)` (CONDSTORE, RFC 7162 §3.1.5; Gmail sends it) ends the list.
pub fn search_results(resp: &Response) -> Option<Vec<u32>> {
    let Response::Untagged {
        status: None, line, ..
    } = resp
    else {
        return None;
    };
    after_keyword(line, "SEARCH")?
        .split_ascii_whitespace()
        .take_while(|word| !word.starts_with('('))
        .map(decimal)
        .collect()
}

/// The number in a response code such as `* OK [UIDVALIDITY 3857529045]` or
/// `* OK [UIDNEXT 4392]` (RFC 3501 §7.1), for `name` compared case-insensitively.
pub fn code_number(resp: &Response, name: &str) -> Option<u32> {
    let code = match resp {
        Response::Untagged {
            code: Some(code), ..
        }
        | Response::Tagged {
            code: Some(code), ..
        } => code,
        _ => return None,
    };
    decimal(after_keyword(code, name)?.trim())
}

/// What an untagged `* N FETCH (UID 7 FLAGS (\Seen) RFC822.SIZE 1234 BODY[...] {N})`
/// says about the message; the literal (headers or body) stays in the response's
/// `literals`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchAttrs {
    pub uid: Option<u32>,
    pub flags: Vec<String>,
    pub size: Option<u64>,
}

/// The attributes of a `FETCH` data response; `None` for every other response.
pub fn fetch_attrs(resp: &Response) -> Option<FetchAttrs> {
    let Response::Untagged {
        status: None, line, ..
    } = resp
    else {
        return None;
    };
    let (_seq, rest) = line.split_once(' ')?;
    let rest = after_keyword(rest, "FETCH")?.trim();
    let inner = rest.strip_prefix('(')?;
    let mut attrs = FetchAttrs::default();
    let mut words = inner.split(' ').peekable();
    while let Some(word) = words.next() {
        if word.eq_ignore_ascii_case("UID") {
            attrs.uid = words.next().and_then(|w| decimal(w.trim_end_matches(')')));
        } else if word.eq_ignore_ascii_case("RFC822.SIZE") {
            attrs.size = words.next().and_then(|w| decimal(w.trim_end_matches(')')));
        } else if word.eq_ignore_ascii_case("FLAGS") {
            // `FLAGS (\Seen \Answered)` or `FLAGS ()`.
            let Some(first) = words.next() else { break };
            let mut flag = first.strip_prefix('(').unwrap_or(first);
            loop {
                let last = flag.ends_with(')');
                let name = flag.trim_end_matches(')');
                if !name.is_empty() {
                    attrs.flags.push(name.to_owned());
                }
                if last {
                    break;
                }
                match words.next() {
                    Some(next) => flag = next,
                    None => break,
                }
            }
        }
    }
    Some(attrs)
}

/// The rest of `text` after its first word, if that word is `keyword` (case-insensitively).
fn after_keyword<'a>(text: &'a str, keyword: &str) -> Option<&'a str> {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    word.eq_ignore_ascii_case(keyword).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{assert_same_for_every_split, fuzz_never_panics_and_ignores_cuts};

    type Outcome = (Vec<Response>, Option<ProtoError>);

    /// Feeds `chunks` one by one, reading every response after each.
    fn run_with(mut reader: Reader, chunks: &[&[u8]]) -> Outcome {
        let mut responses = Vec::new();
        for chunk in chunks {
            reader.feed(chunk);
            loop {
                match reader.next() {
                    Ok(Some(response)) => responses.push(response),
                    Ok(None) => {
                        // Waiting for more: at most one partial line and the literals.
                        let bound = reader.max_line + 1 + reader.max_literal;
                        assert!(reader.buffered() <= bound, "{} held", reader.buffered());
                        break;
                    }
                    Err(e) => return (responses, Some(e)),
                }
            }
        }
        (responses, None)
    }

    fn run(chunks: &[&[u8]]) -> Outcome {
        run_with(Reader::new(), chunks)
    }

    fn parse_all(input: &[u8]) -> Vec<Response> {
        let (responses, error) = run(&[input]);
        assert_eq!(error, None, "{:?}", String::from_utf8_lossy(input));
        responses
    }

    fn parse_one(input: &[u8]) -> Response {
        let mut responses = parse_all(input);
        assert_eq!(responses.len(), 1, "{responses:?}");
        responses.remove(0)
    }

    fn error_of(input: &[u8]) -> ProtoError {
        let (_, error) = run(&[input]);
        error.unwrap_or_else(|| panic!("no error for {:?}", String::from_utf8_lossy(input)))
    }

    fn tagged(tag: &str, status: Status, code: Option<&str>, text: &str) -> Response {
        Response::Tagged {
            tag: tag.to_owned(),
            status,
            code: code.map(str::to_owned),
            text: text.to_owned(),
        }
    }

    fn untagged_status(status: Status, line: &str, code: Option<&str>, text: &str) -> Response {
        Response::Untagged {
            line: line.to_owned(),
            literals: Vec::new(),
            status: Some(status),
            code: code.map(str::to_owned),
            text: text.to_owned(),
        }
    }

    fn data(line: &str, literals: &[&[u8]]) -> Response {
        Response::Untagged {
            line: line.to_owned(),
            literals: literals.iter().map(|l| l.to_vec()).collect(),
            status: None,
            code: None,
            text: String::new(),
        }
    }

    /// The XOAUTH2 error challenge Dovecot sends: `{"status":"401","schemes":"bearer","scope":"mail"}`.
    const CHALLENGE: &str = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=";

    /// Dovecot-like: greeting with a capability code, CAPABILITY, a refused then an accepted
    /// AUTHENTICATE, SELECT, SEARCH, FETCH with one and with two literals, LOGOUT.
    fn dovecot_transcript() -> Vec<u8> {
        [
            "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER] Dovecot ready.\r\n",
            "* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER\r\n",
            "a0 OK Pre-login capabilities listed, post-login capabilities have more.\r\n",
            &format!("+ {CHALLENGE}\r\n"),
            "a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
            "a2 OK [CAPABILITY IMAP4rev1 SASL-IR IDLE UIDPLUS MOVE] Logged in\r\n",
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n",
            "* 172 EXISTS\r\n",
            "* 1 RECENT\r\n",
            "* OK [UNSEEN 12] First unseen.\r\n",
            "* OK [UIDVALIDITY 3857529045] UIDs valid\r\n",
            "* OK [UIDNEXT 4392] Predicted next UID\r\n",
            "a3 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n",
            "* SEARCH 2 84 172\r\n",
            "a4 OK Search completed (0.001 + 0.000 secs).\r\n",
            "* 12 FETCH (UID 4380 RFC822.SIZE 43 BODY[] {43}\r\n",
            "Subject: hi {3}\r\n\r\n* 1 EXISTS\r\na9 OK fake\r\n",
            ")\r\n",
            "* 84 FETCH (UID 4390 BODY[HEADER.FIELDS (SUBJECT)] {16}\r\n",
            "Subject: two\r\n\r\n",
            " BODY[TEXT] {7}\r\n",
            "hello\r\n",
            " FLAGS (\\Seen))\r\n",
            "a5 OK Fetch completed.\r\n",
            "* BYE Logging out\r\n",
            "a6 OK Logout completed.\r\n",
        ]
        .concat()
        .into_bytes()
    }

    fn dovecot_expected() -> Vec<Response> {
        let caps = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER";
        vec![
            untagged_status(
                Status::Ok,
                &format!("OK [CAPABILITY {caps}] Dovecot ready."),
                Some(&format!("CAPABILITY {caps}")),
                "Dovecot ready.",
            ),
            data(&format!("CAPABILITY {caps}"), &[]),
            tagged(
                "a0",
                Status::Ok,
                None,
                "Pre-login capabilities listed, post-login capabilities have more.",
            ),
            Response::Continuation {
                text: CHALLENGE.to_owned(),
            },
            tagged(
                "a1",
                Status::No,
                Some("AUTHENTICATIONFAILED"),
                "Authentication failed.",
            ),
            tagged(
                "a2",
                Status::Ok,
                Some("CAPABILITY IMAP4rev1 SASL-IR IDLE UIDPLUS MOVE"),
                "Logged in",
            ),
            data("FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)", &[]),
            untagged_status(
                Status::Ok,
                "OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.",
                Some("PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)"),
                "Flags permitted.",
            ),
            data("172 EXISTS", &[]),
            data("1 RECENT", &[]),
            untagged_status(
                Status::Ok,
                "OK [UNSEEN 12] First unseen.",
                Some("UNSEEN 12"),
                "First unseen.",
            ),
            untagged_status(
                Status::Ok,
                "OK [UIDVALIDITY 3857529045] UIDs valid",
                Some("UIDVALIDITY 3857529045"),
                "UIDs valid",
            ),
            untagged_status(
                Status::Ok,
                "OK [UIDNEXT 4392] Predicted next UID",
                Some("UIDNEXT 4392"),
                "Predicted next UID",
            ),
            tagged(
                "a3",
                Status::Ok,
                Some("READ-WRITE"),
                "Select completed (0.001 + 0.000 secs).",
            ),
            data("SEARCH 2 84 172", &[]),
            tagged(
                "a4",
                Status::Ok,
                None,
                "Search completed (0.001 + 0.000 secs).",
            ),
            data(
                "12 FETCH (UID 4380 RFC822.SIZE 43 BODY[] {43})",
                &[b"Subject: hi {3}\r\n\r\n* 1 EXISTS\r\na9 OK fake\r\n"],
            ),
            data(
                "84 FETCH (UID 4390 BODY[HEADER.FIELDS (SUBJECT)] {16} BODY[TEXT] {7} FLAGS (\\Seen))",
                &[b"Subject: two\r\n\r\n", b"hello\r\n"],
            ),
            tagged("a5", Status::Ok, None, "Fetch completed."),
            untagged_status(Status::Bye, "BYE Logging out", None, "Logging out"),
            tagged("a6", Status::Ok, None, "Logout completed."),
        ]
    }

    /// Exchange Online-like: greeting with a trailing bracketed blob (not a code), XOAUTH2
    /// accepted, the "authenticated but not connected" refusal, the token-expiry BYE. One
    /// line ends in a bare LF.
    const EXCHANGE_TRANSCRIPT: &[u8] = b"* OK The Microsoft Exchange IMAP4 service is ready. [TQBOADIAUABSADAAMgBDAEEAMAAwADEANAAuAGEAcABjAHAAcgBkADAAMgAuAHAAcgBvAGQALgBvAHUAdABsAG8AbwBrAC4AYwBvAG0A]\r\n\
* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+\r\n\
a0 OK CAPABILITY completed.\r\n\
a1 OK AUTHENTICATE completed.\r\n\
a2 BAD User is authenticated but not connected.\r\n\
* 0 EXISTS\n\
* SEARCH\r\n\
a3 NO [TRYCREATE] Folder not found.\r\n\
* 3 FETCH (BODY[] {0}\r\n)\r\n\
* 4 FETCH (BODY[] {3+}\r\nabc)\r\n\
* BYE Session invalidated - AccessTokenExpired\r\n";

    fn exchange_expected() -> Vec<Response> {
        vec![
            untagged_status(
                Status::Ok,
                "OK The Microsoft Exchange IMAP4 service is ready. [TQBOADIAUABSADAAMgBDAEEAMAAwADEANAAuAGEAcABjAHAAcgBkADAAMgAuAHAAcgBvAGQALgBvAHUAdABsAG8AbwBrAC4AYwBvAG0A]",
                None,
                "The Microsoft Exchange IMAP4 service is ready. [TQBOADIAUABSADAAMgBDAEEAMAAwADEANAAuAGEAcABjAHAAcgBkADAAMgAuAHAAcgBvAGQALgBvAHUAdABsAG8AbwBrAC4AYwBvAG0A]",
            ),
            data(
                "CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+",
                &[],
            ),
            tagged("a0", Status::Ok, None, "CAPABILITY completed."),
            tagged("a1", Status::Ok, None, "AUTHENTICATE completed."),
            tagged(
                "a2",
                Status::Bad,
                None,
                "User is authenticated but not connected.",
            ),
            data("0 EXISTS", &[]),
            data("SEARCH", &[]),
            tagged("a3", Status::No, Some("TRYCREATE"), "Folder not found."),
            data("3 FETCH (BODY[] {0})", &[b""]),
            data("4 FETCH (BODY[] {3+})", &[b"abc"]),
            untagged_status(
                Status::Bye,
                "BYE Session invalidated - AccessTokenExpired",
                None,
                "Session invalidated - AccessTokenExpired",
            ),
        ]
    }

    #[test]
    fn response_codes_and_fetch_attributes() {
        let ok = parse_one(b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n");
        assert_eq!(code_number(&ok, "UIDVALIDITY"), Some(3857529045));
        assert_eq!(code_number(&ok, "UIDNEXT"), None);
        let next = parse_one(b"* OK [UIDNEXT 4392] Predicted next UID\r\n");
        assert_eq!(code_number(&next, "uidnext"), Some(4392));

        let f = parse_one(
            b"* 12 FETCH (UID 7 FLAGS (\\Seen \\Answered) RFC822.SIZE 1234 BODY[HEADER] {5}\r\nhello)\r\n",
        );
        assert_eq!(
            fetch_attrs(&f),
            Some(FetchAttrs {
                uid: Some(7),
                flags: vec!["\\Seen".into(), "\\Answered".into()],
                size: Some(1234),
            })
        );
        let empty = parse_one(b"* 3 FETCH (FLAGS () UID 9)\r\n");
        assert_eq!(
            fetch_attrs(&empty),
            Some(FetchAttrs {
                uid: Some(9),
                flags: vec![],
                size: None
            })
        );
        assert_eq!(fetch_attrs(&parse_one(b"* 3 EXISTS\r\n")), None);
    }

    #[test]
    fn dovecot_transcript_parses_to_the_expected_responses() {
        assert_eq!(parse_all(&dovecot_transcript()), dovecot_expected());
    }

    #[test]
    fn exchange_transcript_parses_to_the_expected_responses() {
        let parsed = parse_all(EXCHANGE_TRANSCRIPT);
        assert_eq!(parsed, exchange_expected());
    }

    #[test]
    fn every_split_of_the_transcripts_gives_the_same_responses() {
        for transcript in [dovecot_transcript(), EXCHANGE_TRANSCRIPT.to_vec()] {
            assert_same_for_every_split(&transcript, run);
        }
    }

    #[test]
    fn literal_bytes_are_never_read_as_lines() {
        // The literal holds what looks like a tagged response and a literal announcement.
        let response = parse_one(b"* 1 FETCH (BODY[] {13}\r\na1 OK {3}\r\nxy)\r\n");
        assert_eq!(
            response,
            data("1 FETCH (BODY[] {13})", &[b"a1 OK {3}\r\nxy"])
        );
    }

    #[test]
    fn a_literal_may_be_followed_directly_by_another() {
        let response = parse_one(b"* 1 FETCH (X {2}\r\nab{1}\r\nc)\r\n");
        assert_eq!(response, data("1 FETCH (X {2}{1})", &[b"ab", b"c"]));
    }

    #[test]
    fn literal8_is_read_like_a_literal() {
        let response = parse_one(b"* 1 FETCH (BINARY[] ~{3}\r\n\0\xff\n)\r\n");
        assert_eq!(response, data("1 FETCH (BINARY[] ~{3})", &[b"\0\xff\n"]));
    }

    #[test]
    fn braces_at_the_end_of_status_and_tagged_text_are_text() {
        assert_eq!(
            parse_all(b"* OK counting {3}\r\na1 NO bad {2}\r\n+ more {1}\r\n"),
            vec![
                untagged_status(Status::Ok, "OK counting {3}", None, "counting {3}"),
                tagged("a1", Status::No, None, "bad {2}"),
                Response::Continuation {
                    text: "more {1}".to_owned()
                },
            ]
        );
        // Not an announcement: no digits, or not at the end.
        assert_eq!(
            parse_all(b"* X {}\r\n* Y {12} z\r\n* Z {1a}\r\n"),
            vec![
                data("X {}", &[]),
                data("Y {12} z", &[]),
                data("Z {1a}", &[])
            ]
        );
    }

    #[test]
    fn status_words_are_case_insensitive_and_text_is_optional() {
        assert_eq!(
            parse_all(
                b"a1 ok\r\n* bye\r\nA.2 No [ALERT]\r\n* PREAUTH [CAPABILITY IMAP4rev1] hi\r\n+\r\n"
            ),
            vec![
                tagged("a1", Status::Ok, None, ""),
                untagged_status(Status::Bye, "bye", None, ""),
                tagged("A.2", Status::No, Some("ALERT"), ""),
                untagged_status(
                    Status::Preauth,
                    "PREAUTH [CAPABILITY IMAP4rev1] hi",
                    Some("CAPABILITY IMAP4rev1"),
                    "hi"
                ),
                Response::Continuation {
                    text: String::new()
                },
            ]
        );
    }

    #[test]
    fn an_unclosed_bracket_is_text() {
        assert_eq!(
            parse_one(b"a1 NO [oops no close\r\n"),
            tagged("a1", Status::No, None, "[oops no close")
        );
    }

    #[test]
    fn non_utf8_text_is_read_lossily() {
        assert_eq!(
            parse_one(b"a1 NO Fehler: ung\xfcltig\r\n"),
            tagged("a1", Status::No, None, "Fehler: ung\u{fffd}ltig")
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        let cases: &[&[u8]] = &[
            b"\r\n",                 // empty line
            b"*\r\n",                // nothing after '*'
            b"* \r\n",               // nothing after "* "
            b"*OK hi\r\n",           // no space after '*'
            b" OK missing tag\r\n",  // missing tag
            b"a1\r\n",               // no status
            b"a1 DONE fine\r\n",     // bad status word
            b"a1 OKAY\r\n",          // not a status word
            b"a1 BYE tagged\r\n",    // BYE is untagged only
            b"a1 PREAUTH x\r\n",     // PREAUTH is untagged only
            b"(a1) OK x\r\n",        // '(' cannot be in a tag
            b"\x00\x01\x02\r\n",     // garbage
            b"HTTP/1.1 400 Bad\r\n", // wrong protocol: "HTTP/1.1" is a tag, "400" no status
        ];
        for input in cases {
            let error = error_of(input);
            assert!(
                matches!(
                    error,
                    ProtoError::Malformed {
                        protocol: "IMAP",
                        ..
                    }
                ),
                "{:?} gave {error:?}",
                String::from_utf8_lossy(input)
            );
            assert!(error.to_string().starts_with("malformed IMAP response: "));
        }
    }

    #[test]
    fn a_tls_handshake_on_the_plain_port_is_refused_within_the_line_limit() {
        // A TLS ServerHello has no LF for a long time: the limit stops it.
        let mut reader = Reader::with_limits(1024, 1024);
        let hello: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8 | 0x80).collect();
        reader.feed(&hello);
        assert_eq!(reader.next(), Err(ProtoError::LineTooLong { limit: 1024 }));
    }

    #[test]
    fn the_error_is_sticky_and_later_bytes_are_dropped() {
        let mut reader = Reader::new();
        reader.feed(b"a1 WHAT\r\n");
        let error = reader.next().unwrap_err();
        reader.feed(b"a2 OK fine\r\n");
        assert_eq!(reader.next(), Err(error));
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn an_endless_line_fails_once_the_buffer_passes_the_limit() {
        const LIMIT: usize = 64 * 1024;
        const CHUNK: usize = 4096;
        let mut reader = Reader::with_limits(LIMIT, DEFAULT_MAX_LITERAL);
        let chunk = [b'a'; CHUNK];
        let mut fed = 0;
        let error = loop {
            assert!(fed < 10 * 1024 * 1024, "10 MB without an error");
            reader.feed(&chunk);
            fed += CHUNK;
            match reader.next() {
                Ok(None) => assert!(reader.buffered() <= LIMIT + 1),
                Ok(Some(r)) => panic!("{r:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(error, ProtoError::LineTooLong { limit: LIMIT });
        assert_eq!(fed, LIMIT + CHUNK, "the first feed past the limit fails");
    }

    #[test]
    fn a_huge_literal_announcement_fails_before_its_bytes() {
        let mut reader = Reader::new();
        reader.feed(b"* 1 FETCH (BODY[] {1099511627776}\r\n");
        assert_eq!(
            reader.next(),
            Err(ProtoError::LiteralTooLarge {
                size: 1 << 40,
                limit: DEFAULT_MAX_LITERAL
            })
        );
        let error = error_of(b"* 1 FETCH (BODY[] {99999999999999999999999999}\r\n");
        assert_eq!(
            error,
            ProtoError::LiteralTooLarge {
                size: usize::MAX,
                limit: DEFAULT_MAX_LITERAL
            }
        );
    }

    #[test]
    fn literals_of_one_response_share_the_literal_limit() {
        let mut reader = Reader::with_limits(1024, 10);
        reader.feed(b"* 1 FETCH (A {6}\r\nabcdef B {5}\r\n");
        assert_eq!(
            reader.next(),
            Err(ProtoError::LiteralTooLarge { size: 5, limit: 10 })
        );
        let mut reader = Reader::with_limits(1024, 10);
        reader.feed(b"* 1 FETCH (A {6}\r\nabcdef B {4}\r\nabcd)\r\n");
        assert!(matches!(reader.next(), Ok(Some(_))));
    }

    #[test]
    fn the_line_limit_covers_all_lines_of_a_response() {
        // Empty literals cannot be used to grow a response's text without bound.
        let mut reader = Reader::with_limits(64, 1024);
        let mut fed = 0;
        reader.feed(b"* 1 FETCH (");
        let error = loop {
            assert!(fed < 1000, "no error");
            reader.feed(b"{0}\r\n");
            fed += 1;
            match reader.next() {
                Ok(None) => {}
                other => break other,
            }
        };
        assert_eq!(error, Err(ProtoError::LineTooLong { limit: 64 }));
        assert!(fed <= 64 / 3 + 1, "failed after {fed} literals");
    }

    #[test]
    fn a_literal_arriving_slowly_is_held_once() {
        let mut reader = Reader::with_limits(1024, 1 << 20);
        reader.feed(b"* 1 FETCH (BODY[] {100000}\r\n");
        assert_eq!(reader.next(), Ok(None));
        let chunk = [b'x'; 1000];
        for _ in 0..100 {
            reader.feed(&chunk);
            assert!(reader.buffered() <= 100_000 + 64);
        }
        reader.feed(b")\r\n");
        let Ok(Some(Response::Untagged { literals, .. })) = reader.next() else {
            panic!("no response");
        };
        assert_eq!(literals, vec![vec![b'x'; 100_000]]);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn an_imap_continuation_decodes_as_the_sasl_error_challenge() {
        let Response::Continuation { text } = parse_one(format!("+ {CHALLENGE}\r\n").as_bytes())
        else {
            panic!("not a continuation");
        };
        let challenge = crate::sasl::decode_error_challenge(&text).unwrap();
        assert_eq!(challenge.status, "401");
        assert_eq!(challenge.schemes.as_deref(), Some("bearer"));
        assert_eq!(challenge.scope.as_deref(), Some("mail"));
        // Google's, with a bare LF and no space before the payload's end.
        let google = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==";
        let Response::Continuation { text } = parse_one(format!("+ {google}\n").as_bytes()) else {
            panic!("not a continuation");
        };
        let challenge = crate::sasl::decode_error_challenge(&text).unwrap();
        assert_eq!(challenge.scope.as_deref(), Some("https://mail.google.com/"));
    }

    #[test]
    fn capabilities_come_from_data_lines_and_codes() {
        let responses = dovecot_expected();
        let all = |r: &Response| capabilities(r).map(|c| c.join(" "));
        let expected = "IMAP4REV1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=XOAUTH2 AUTH=OAUTHBEARER";
        assert_eq!(
            all(&responses[0]).as_deref(),
            Some(expected),
            "greeting code"
        );
        assert_eq!(all(&responses[1]).as_deref(), Some(expected), "CAPABILITY");
        assert_eq!(
            all(&responses[5]).as_deref(),
            Some("IMAP4REV1 SASL-IR IDLE UIDPLUS MOVE"),
            "tagged OK code"
        );
        for other in &responses[6..] {
            assert_eq!(capabilities(other), None, "{other:?}");
        }
        assert_eq!(
            capabilities(&parse_one(b"* capability\r\n")),
            Some(Vec::new())
        );
        assert_eq!(capabilities(&parse_one(b"* CAPABILITYX A\r\n")), None);
        assert_eq!(capabilities(&exchange_expected()[0]), None);
    }

    #[test]
    fn exists_and_search_are_read_from_their_responses() {
        assert_eq!(exists_count(&parse_one(b"* 172 EXISTS\r\n")), Some(172));
        assert_eq!(exists_count(&parse_one(b"* 0 exists\r\n")), Some(0));
        for other in [
            &b"* 1 RECENT\r\n"[..],
            b"* +1 EXISTS\r\n",
            b"* 1 EXISTS now\r\n",
            b"* EXISTS\r\n",
            b"* OK 1 EXISTS\r\n",
            b"a1 OK 1 EXISTS\r\n",
        ] {
            assert_eq!(exists_count(&parse_one(other)), None, "{other:?}");
        }
        assert_eq!(
            search_results(&parse_one(b"* SEARCH 2 84 882\r\n")),
            Some(vec![2, 84, 882])
        );
        assert_eq!(search_results(&parse_one(b"* SEARCH\r\n")), Some(vec![]));
        assert_eq!(
            search_results(&parse_one(b"* search 5 7 (MODSEQ 917162500)\r\n")),
            Some(vec![5, 7])
        );
        assert_eq!(search_results(&parse_one(b"* SEARCH 1 x\r\n")), None);
        assert_eq!(search_results(&parse_one(b"* 3 EXISTS\r\n")), None);
    }

    #[test]
    fn quote_escapes_and_refuses_line_breaks() {
        assert_eq!(quote("INBOX").as_deref(), Some("\"INBOX\""));
        assert_eq!(quote(r#"a "b" \c"#).as_deref(), Some(r#""a \"b\" \\c""#));
        assert_eq!(quote("").as_deref(), Some("\"\""));
        assert_eq!(quote("Entwürfe").as_deref(), Some("\"Entwürfe\""));
        for bad in ["a\r", "a\nb", "\0"] {
            assert_eq!(quote(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fuzz_random_and_mutated_input_never_panics_and_ignores_cuts() {
        fuzz_never_panics_and_ignores_cuts(
            0x1A4B_5E3D,
            b"*+ {}[]()0123456789aAoOkK\r\n",
            200,
            &[dovecot_transcript(), EXCHANGE_TRANSCRIPT.to_vec()],
            |_, chunks| run_with(Reader::with_limits(256, 64), chunks),
        );
    }
}
