//! POP3 responses as a client reads them (RFC 1939, SASL per RFC 5034), decoded
//! incrementally.
//!
//! POP3 does not say in a response whether more lines follow: the client knows from the
//! command it sent (CAPA, UIDL, LIST, RETR and TOP answer `+OK` with a multi-line body). So
//! the [`Reader`] has two calls, and the client picks: [`next_status`](Reader::next_status)
//! for the status line, then [`next_multiline`](Reader::next_multiline) for the body when
//! one follows.
//!
//! During `AUTH` the server sends `+ <base64>` (or a bare `+`): a SASL continuation, which is
//! neither `+OK` nor `-ERR` (RFC 5034 §4). Python's `poplib` takes any line starting with
//! `+` as success, so a refused token looks accepted there; here it is
//! [`Status::Continuation`]. Exchange Online needs the two-line form (`AUTH XOAUTH2`, wait for
//! `+`, then the response), so every OAuth login there sees one.

use crate::error::ProtoError;
use crate::line::{Framing, LineBuffer, decimal, excerpt, lossy};

const PROTOCOL: &str = "POP3";

/// Status lines are at most 512 bytes (RFC 1939 §3), but body lines of a message can be far
/// longer than RFC 5322's 998 in real mail.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
/// One multi-line body (a whole message for RETR).
pub const DEFAULT_MAX_MULTILINE: usize = 64 * 1024 * 1024;

/// A status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `+OK text`; the text may be empty.
    Ok(String),
    /// `-ERR text`; the text may start with an RFC 2449 response code, see [`response_code`].
    Err(String),
    /// `+ <text>` or `+` alone: a SASL continuation — NOT `+OK`. During AUTH the text is
    /// base64: empty when the server waits for the initial response (Exchange's two-line
    /// AUTH), or the error challenge for [`crate::sasl::decode_error_challenge`].
    Continuation(String),
}

/// A multi-line body still arriving.
#[derive(Debug, Default)]
struct Body {
    lines: Vec<Vec<u8>>,
    /// Counted as received (line plus CRLF), so that a flood of empty lines is bounded too.
    size: usize,
}

/// The incremental response decoder: [`feed`](Reader::feed) what the socket gives, then
/// call the `next_*` function for the response the last command expects.
#[derive(Debug)]
pub struct Reader {
    framing: Framing<Body>,
    max_line: usize,
    max_multiline: usize,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl Reader {
    /// A reader with [`DEFAULT_MAX_LINE`] and [`DEFAULT_MAX_MULTILINE`].
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_LINE, DEFAULT_MAX_MULTILINE)
    }

    /// `max_line` bounds every line without CRLF; `max_multiline` bounds one multi-line body,
    /// counting each line with its CRLF.
    pub fn with_limits(max_line: usize, max_multiline: usize) -> Self {
        Self {
            framing: Framing::default(),
            max_line,
            max_multiline,
        }
    }

    /// Appends bytes read from the server. After an error they are dropped unread.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.framing.feed(bytes);
    }

    /// Bytes held: received and unread, plus the lines of a body still arriving.
    pub fn buffered(&self) -> usize {
        let body = self.framing.pending();
        self.framing.unread() + body.lines.iter().map(Vec::len).sum::<usize>()
    }

    /// One status line, `Ok(None)` if more bytes are needed.
    ///
    /// After an `Err` the reader is unusable: every later call returns the same error.
    pub fn next_status(&mut self) -> Result<Option<Status>, ProtoError> {
        let max_line = self.max_line;
        self.framing.read(|buffer, _| {
            let Some(line) = next_line(buffer, max_line)? else {
                return Ok(None);
            };
            parse_status(line).map(Some)
        })
    }

    /// The body of a multi-line response, after its `+OK` was read with
    /// [`next_status`](Reader::next_status): the lines up to the terminating `.`, dot-unstuffed
    /// (a line sent as `..x` is `.x`, RFC 1939 §3), without CRLF. `Ok(None)` if more bytes are
    /// needed; the lines read so far are kept for the next call, so keep calling it (not
    /// `next_status`) until it returns the body.
    pub fn next_multiline(&mut self) -> Result<Option<Vec<Vec<u8>>>, ProtoError> {
        let (max_line, max_multiline) = (self.max_line, self.max_multiline);
        self.framing.read(|buffer, body| {
            while let Some(line) = next_line(buffer, max_line)? {
                if line == b"." {
                    return Ok(Some(std::mem::take(body).lines));
                }
                let size = body.size.saturating_add(line.len() + 2);
                if size > max_multiline {
                    return Err(malformed(format!(
                        "multi-line response longer than the {max_multiline}-byte limit"
                    )));
                }
                let unstuffed = line.strip_prefix(b".").unwrap_or(line).to_vec();
                body.size = size;
                body.lines.push(unstuffed);
            }
            Ok(None)
        })
    }
}

fn next_line(buffer: &mut LineBuffer, limit: usize) -> Result<Option<&[u8]>, ProtoError> {
    buffer
        .next_line(limit)
        .map_err(|_| ProtoError::LineTooLong { limit })
}

/// `+OK`/`-ERR` are upper case in RFC 1939 §3; they are matched case-insensitively anyway
/// and only as whole words, so a continuation (`+`, then a space or base64, RFC 5034 §4)
/// is never taken for `+OK`.
fn parse_status(line: &[u8]) -> Result<Status, ProtoError> {
    if let Some(text) = after_indicator(line, b"+OK") {
        return Ok(Status::Ok(lossy(text)));
    }
    if let Some(text) = after_indicator(line, b"-ERR") {
        return Ok(Status::Err(lossy(text)));
    }
    if let Some(rest) = line.strip_prefix(b"+") {
        let text = rest.strip_prefix(b" ").unwrap_or(rest);
        return Ok(Status::Continuation(lossy(text)));
    }
    Err(malformed(format!(
        "expected +OK, -ERR or a + continuation: {}",
        excerpt(line)
    )))
}

/// The text after `indicator` if the line starts with it as a whole word.
fn after_indicator<'a>(line: &'a [u8], indicator: &[u8]) -> Option<&'a [u8]> {
    let head = line.get(..indicator.len())?;
    if !head.eq_ignore_ascii_case(indicator) {
        return None;
    }
    let rest = line.get(indicator.len()..)?;
    match rest.first() {
        None => Some(rest),
        Some(b' ' | b'\t') => Some(rest.trim_ascii_start()),
        Some(_) => None,
    }
}

fn malformed(detail: String) -> ProtoError {
    ProtoError::Malformed {
        protocol: PROTOCOL,
        detail,
    }
}

/// The drop listing of `STAT` (RFC 1939 §5): `"3 1200"` → `(3, 1200)`, the message count
/// and their total size in octets. The `+OK ` in front may be left on; anything after the
/// two numbers is ignored ("minimal implementations should just end that line", but some
/// add text).
pub fn parse_stat(text: &str) -> Option<(u32, u64)> {
    let text = text.trim_start();
    let text = match after_indicator(text.as_bytes(), b"+OK") {
        Some(rest) => std::str::from_utf8(rest).ok()?,
        None => text,
    };
    let mut words = text.split_ascii_whitespace();
    Some((decimal(words.next()?)?, decimal(words.next()?)?))
}

/// A `LIST` line (or `LIST n`'s status text): `"1 1200"` → `(1, 1200)`, message number and
/// size in octets (RFC 1939 §5).
pub fn parse_list_line(line: &[u8]) -> Option<(u32, u64)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split_ascii_whitespace();
    let parsed = (decimal(words.next()?)?, decimal(words.next()?)?);
    words.next().is_none().then_some(parsed)
}

/// A `UIDL` line (or `UIDL n`'s status text): `"1 000000015d5ea4a5"` → `(1, "000000015d5ea4a5")`.
///
/// The unique-id is 1 to 70 characters in 0x21..=0x7E (RFC 1939 §7); anything else is
/// refused rather than guessed, since the id is what later sessions match on.
pub fn parse_uidl_line(line: &[u8]) -> Option<(u32, String)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split_ascii_whitespace();
    let number = decimal(words.next()?)?;
    let uid = words.next()?;
    let valid = (1..=70).contains(&uid.len()) && uid.bytes().all(|b| b.is_ascii_graphic());
    (valid && words.next().is_none()).then(|| (number, uid.to_owned()))
}

/// The body of a `CAPA` response (RFC 2449 §5), one entry per capability line, each as
/// upper-cased words: `"SASL XOAUTH2 OAUTHBEARER"` → `["SASL", "XOAUTH2", "OAUTHBEARER"]`.
/// Empty lines are skipped.
pub fn parse_capa(lines: &[Vec<u8>]) -> Vec<Vec<String>> {
    lines
        .iter()
        .map(|line| {
            String::from_utf8_lossy(line)
                .split_ascii_whitespace()
                .map(str::to_ascii_uppercase)
                .collect::<Vec<_>>()
        })
        .filter(|words| !words.is_empty())
        .collect()
}

/// The SASL mechanisms of a parsed `CAPA` response (its `SASL …` line, RFC 2449 §6.3).
pub fn capa_sasl_mechanisms(capa: &[Vec<String>]) -> Vec<String> {
    capa.iter()
        .filter(|words| words.first().is_some_and(|w| w == "SASL"))
        .flat_map(|words| words.iter().skip(1).cloned())
        .collect()
}

/// The RFC 2449 §8 response code at the start of a status text: `"[AUTH] Bad token"` →
/// `"AUTH"`, also `"IN-USE"`, `"LOGIN-DELAY"`, `"SYS/TEMP"`, `"SYS/PERM"` (RFC 3206).
pub fn response_code(text: &str) -> Option<&str> {
    let inner = text.trim_start().strip_prefix('[')?;
    let (code, _) = inner.split_once(']')?;
    (!code.is_empty() && !code.contains(' ')).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{
        FuzzInput, assert_same_for_every_split, fuzz_never_panics_and_ignores_cuts,
    };

    /// What the client expects next, as it would know from the command it sent.
    #[derive(Debug, Clone, Copy)]
    enum Expect {
        Status,
        Body,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Item {
        Status(Status),
        Body(Vec<Vec<u8>>),
    }

    type Outcome = (Vec<Item>, Option<ProtoError>);

    /// Feeds `chunks` one by one, reading what `script` expects after each.
    fn run_with(mut reader: Reader, script: &[Expect], chunks: &[&[u8]]) -> Outcome {
        let mut items = Vec::new();
        for chunk in chunks {
            reader.feed(chunk);
            while let Some(expect) = script.get(items.len()) {
                let read = match expect {
                    Expect::Status => reader.next_status().map(|s| s.map(Item::Status)),
                    Expect::Body => reader.next_multiline().map(|b| b.map(Item::Body)),
                };
                match read {
                    Ok(Some(item)) => items.push(item),
                    Ok(None) => {
                        // Waiting for more: at most one partial line and the body so far.
                        let bound = reader.max_line + 1 + reader.max_multiline;
                        assert!(reader.buffered() <= bound, "{} held", reader.buffered());
                        break;
                    }
                    Err(e) => return (items, Some(e)),
                }
            }
        }
        (items, None)
    }

    fn run(script: &[Expect], chunks: &[&[u8]]) -> Outcome {
        run_with(Reader::new(), script, chunks)
    }

    fn ok(text: &str) -> Item {
        Item::Status(Status::Ok(text.to_owned()))
    }

    fn body(lines: &[&str]) -> Item {
        Item::Body(lines.iter().map(|l| l.as_bytes().to_vec()).collect())
    }

    const CHALLENGE: &str = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=";

    /// Greeting, CAPA, a refused and an accepted two-line AUTH, STAT, UIDL, LIST, RETR with
    /// dot-stuffed lines, QUIT. One line ends in a bare LF.
    fn transcript() -> (Vec<u8>, Vec<Expect>, Vec<Item>) {
        use Expect::{Body as B, Status as S};
        let bytes = [
            "+OK Dovecot ready. <1896.697170952@dbc.mtview.ca.us>\r\n",
            "+OK\r\n",
            "TOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\n",
            "SASL PLAIN XOAUTH2 OAUTHBEARER\r\n.\r\n",
            "+ \r\n",
            &format!("+ {CHALLENGE}\r\n"),
            "-ERR [AUTH] Authentication failed.\r\n",
            "+\r\n",
            "+OK Logged in.\r\n",
            "+OK 3 1200\r\n",
            "+OK\r\n1 000000015d5ea4a5\r\n2 000000025d5ea4a5\n3 abc\r\n.\r\n",
            "+OK 3 messages:\r\n1 400\r\n2 500\r\n3 300\r\n.\r\n",
            "+OK 120 octets\r\n",
            "Subject: dots\r\n\r\n..leading dot\r\n..\r\n...\r\n. not the end\r\n.\r\n",
            "+OK Logging out.\r\n",
        ]
        .concat()
        .into_bytes();
        let script = vec![S, S, B, S, S, S, S, S, S, S, B, S, B, S, B, S];
        let items = vec![
            ok("Dovecot ready. <1896.697170952@dbc.mtview.ca.us>"),
            ok(""),
            body(&[
                "TOP",
                "UIDL",
                "RESP-CODES",
                "PIPELINING",
                "AUTH-RESP-CODE",
                "USER",
                "SASL PLAIN XOAUTH2 OAUTHBEARER",
            ]),
            Item::Status(Status::Continuation(String::new())),
            Item::Status(Status::Continuation(CHALLENGE.to_owned())),
            Item::Status(Status::Err("[AUTH] Authentication failed.".to_owned())),
            Item::Status(Status::Continuation(String::new())),
            ok("Logged in."),
            ok("3 1200"),
            ok(""),
            body(&["1 000000015d5ea4a5", "2 000000025d5ea4a5", "3 abc"]),
            ok("3 messages:"),
            body(&["1 400", "2 500", "3 300"]),
            ok("120 octets"),
            body(&[
                "Subject: dots",
                "",
                ".leading dot",
                ".",
                "..",
                " not the end",
            ]),
            ok("Logging out."),
        ];
        (bytes, script, items)
    }

    /// Exchange Online's wording for the same steps.
    const EXCHANGE: &[u8] = b"+OK The Microsoft Exchange POP3 service is ready. [TQBOADIAUABSADAAMgBDAEEAMAAwADEANAAuAGEAcABjAHAAcgBkADAAMgAuAHAAcgBvAGQALgBvAHUAdABsAG8AbwBrAC4AYwBvAG0A]\r\n\
+ \r\n\
-ERR Authentication failure: unknown user name or bad password.\r\n\
+ \r\n\
+OK User successfully authenticated.\r\n\
+OK 0 0\r\n";

    #[test]
    fn transcript_parses_to_the_expected_items() {
        let (bytes, script, items) = transcript();
        assert_eq!(run(&script, &[&bytes]), (items, None));
    }

    #[test]
    fn exchange_transcript_parses() {
        use Expect::Status as S;
        let (items, error) = run(&[S, S, S, S, S, S], &[EXCHANGE]);
        assert_eq!(error, None);
        assert!(
            matches!(&items[0], Item::Status(Status::Ok(t)) if t.starts_with("The Microsoft Exchange POP3"))
        );
        assert_eq!(items[1], Item::Status(Status::Continuation(String::new())));
        assert_eq!(
            items[2],
            Item::Status(Status::Err(
                "Authentication failure: unknown user name or bad password.".to_owned()
            ))
        );
        assert_eq!(items[4], ok("User successfully authenticated."));
        assert_eq!(items[5], ok("0 0"));
    }

    #[test]
    fn every_split_of_the_transcripts_gives_the_same_items() {
        let (bytes, script, _) = transcript();
        assert_same_for_every_split(&bytes, |chunks| run(&script, chunks));
        let script = [Expect::Status; 6];
        assert_same_for_every_split(EXCHANGE, |chunks| run(&script, chunks));
    }

    #[test]
    fn a_continuation_is_never_ok() {
        for (line, expected) in [
            (&b"+ \r\n"[..], Status::Continuation(String::new())),
            (b"+\r\n", Status::Continuation(String::new())),
            (b"+ OK\r\n", Status::Continuation("OK".to_owned())),
            (b"+eyJ9\r\n", Status::Continuation("eyJ9".to_owned())),
            (b"+OKAY\r\n", Status::Continuation("OKAY".to_owned())),
            (b"+OK\r\n", Status::Ok(String::new())),
            (b"+ok fine\r\n", Status::Ok("fine".to_owned())),
            (b"+OK\tfine\r\n", Status::Ok("fine".to_owned())),
            (b"-ERR\r\n", Status::Err(String::new())),
            (
                b"-err [IN-USE] busy\r\n",
                Status::Err("[IN-USE] busy".to_owned()),
            ),
        ] {
            let mut reader = Reader::new();
            reader.feed(line);
            assert_eq!(reader.next_status(), Ok(Some(expected)), "{line:?}");
        }
    }

    #[test]
    fn the_continuation_payload_decodes_as_the_sasl_error_challenge() {
        let mut reader = Reader::new();
        reader.feed(format!("+ {CHALLENGE}\r\n").as_bytes());
        let Ok(Some(Status::Continuation(text))) = reader.next_status() else {
            panic!("not a continuation");
        };
        let challenge = crate::sasl::decode_error_challenge(&text).unwrap();
        assert_eq!(challenge.status, "401");
    }

    #[test]
    fn malformed_status_lines_are_errors() {
        for line in [
            &b"\r\n"[..],
            b"OK\r\n",
            b"-ERROR\r\n",
            b"-\r\n",
            b"* OK IMAP4rev1\r\n",
            b"220 smtp ready\r\n",
            b"\xff\xfe\r\n",
        ] {
            let mut reader = Reader::new();
            reader.feed(line);
            let error = reader.next_status().unwrap_err();
            assert!(
                matches!(
                    error,
                    ProtoError::Malformed {
                        protocol: "POP3",
                        ..
                    }
                ),
                "{line:?}: {error:?}"
            );
            assert_eq!(reader.next_status(), Err(error.clone()), "sticky");
            assert_eq!(reader.next_multiline(), Err(error), "sticky");
        }
    }

    #[test]
    fn non_utf8_text_is_read_lossily_and_body_bytes_are_kept() {
        let mut reader = Reader::new();
        reader.feed(b"-ERR caf\xe9\r\n+OK\r\n\xe9t\xe9\r\n.\r\n");
        assert_eq!(
            reader.next_status(),
            Ok(Some(Status::Err("caf\u{fffd}".to_owned())))
        );
        assert_eq!(reader.next_status(), Ok(Some(Status::Ok(String::new()))));
        assert_eq!(
            reader.next_multiline(),
            Ok(Some(vec![b"\xe9t\xe9".to_vec()]))
        );
    }

    #[test]
    fn an_endless_line_fails_once_the_buffer_passes_the_limit() {
        let mut reader = Reader::with_limits(1000, 1 << 20);
        let mut fed = 0;
        let error = loop {
            assert!(fed < 10_000_000, "no error");
            reader.feed(&[b'x'; 100]);
            fed += 100;
            match reader.next_multiline() {
                Ok(None) => assert!(reader.buffered() <= 1001),
                other => break other,
            }
        };
        assert_eq!(error, Err(ProtoError::LineTooLong { limit: 1000 }));
        assert_eq!(fed, 1100);
    }

    #[test]
    fn a_body_over_the_limit_fails_while_it_arrives() {
        let mut reader = Reader::with_limits(100, 1000);
        let mut lines = 0;
        let error = loop {
            assert!(lines < 1000, "no error");
            reader.feed(b"\r\n");
            lines += 1;
            match reader.next_multiline() {
                Ok(None) => {}
                other => break other,
            }
        };
        assert!(
            matches!(&error, Err(ProtoError::Malformed { protocol: "POP3", detail }) if detail.contains("1000-byte limit")),
            "{error:?}"
        );
        assert_eq!(lines, 501, "empty lines count as their CRLF");
    }

    #[test]
    fn stat_list_and_uidl_are_parsed() {
        assert_eq!(parse_stat("3 1200"), Some((3, 1200)));
        assert_eq!(parse_stat("+OK 3 1200"), Some((3, 1200)));
        assert_eq!(parse_stat("0 0 messages"), Some((0, 0)));
        assert_eq!(parse_stat(" 2 30000000000"), Some((2, 30_000_000_000)));
        for bad in ["", "3", "+OK", "x 1", "3 -1", "+3 1", "+OKAY 3 1"] {
            assert_eq!(parse_stat(bad), None, "{bad:?}");
        }
        assert_eq!(parse_list_line(b"1 1200"), Some((1, 1200)));
        assert_eq!(parse_list_line(b"1 1200 x"), None);
        assert_eq!(
            parse_uidl_line(b"1 000000015d5ea4a5"),
            Some((1, "000000015d5ea4a5".to_owned()))
        );
        assert_eq!(
            parse_uidl_line(b"12 AAMkAGI2~!{}"),
            Some((12, "AAMkAGI2~!{}".to_owned()))
        );
        let long = format!("1 {}", "u".repeat(71));
        for bad in [
            &b""[..],
            b"1",
            b"x abc",
            b"1 a b",
            b"1 caf\xc3\xa9",
            long.as_bytes(),
        ] {
            assert_eq!(parse_uidl_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn capa_lines_are_upper_cased_words() {
        let lines: Vec<Vec<u8>> = [
            "top",
            "SASL xoauth2 OAUTHBEARER",
            "",
            "IMPLEMENTATION Dovecot",
        ]
        .iter()
        .map(|l| l.as_bytes().to_vec())
        .collect();
        let capa = parse_capa(&lines);
        assert_eq!(
            capa,
            vec![
                vec!["TOP".to_owned()],
                vec![
                    "SASL".to_owned(),
                    "XOAUTH2".to_owned(),
                    "OAUTHBEARER".to_owned()
                ],
                vec!["IMPLEMENTATION".to_owned(), "DOVECOT".to_owned()],
            ]
        );
        assert_eq!(capa_sasl_mechanisms(&capa), vec!["XOAUTH2", "OAUTHBEARER"]);
    }

    #[test]
    fn response_codes_are_read_from_the_text() {
        assert_eq!(response_code("[AUTH] Authentication failed."), Some("AUTH"));
        assert_eq!(response_code("[SYS/TEMP] try later"), Some("SYS/TEMP"));
        assert_eq!(response_code("Authentication failed."), None);
        assert_eq!(response_code("[no close"), None);
        assert_eq!(response_code("[two words] x"), None);
    }

    #[test]
    fn smtp_dot_stuffing_is_undone_by_the_multiline_reader() {
        let message = b"Subject: x\n\n.\n..two\r\n.\r\nend . \r\n";
        let mut reader = Reader::new();
        reader.feed(&crate::smtp::dot_stuff(message));
        let lines = reader.next_multiline().unwrap().unwrap();
        assert_eq!(
            lines,
            [&b"Subject: x"[..], b"", b".", b"..two", b".", b"end . "]
                .map(<[u8]>::to_vec)
                .to_vec()
        );
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn the_error_is_sticky_and_drops_the_body_so_far_and_later_bytes() {
        let mut reader = Reader::with_limits(8, 512);
        reader.feed(b"+OK\r\nline\r\n");
        assert_eq!(reader.next_status(), Ok(Some(Status::Ok(String::new()))));
        assert_eq!(reader.next_multiline(), Ok(None));
        assert!(reader.buffered() > 0, "the body's first line is held");
        reader.feed(b"0123456789\r\n");
        let error = reader.next_multiline().unwrap_err();
        assert_eq!(error, ProtoError::LineTooLong { limit: 8 });
        reader.feed(b".\r\n+OK\r\n");
        assert_eq!(reader.next_status(), Err(error.clone()));
        assert_eq!(reader.next_multiline(), Err(error));
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn fuzz_random_and_mutated_input_never_panics_and_ignores_cuts() {
        let (transcript, transcript_script, _) = transcript();
        // Random input: status and body reads alternate, as a client sending CAPA, UIDL … would.
        let alternating: Vec<Expect> = (0..64)
            .map(|i| {
                if i % 2 == 0 {
                    Expect::Status
                } else {
                    Expect::Body
                }
            })
            .collect();
        fuzz_never_panics_and_ignores_cuts(
            0x90B3_77C1,
            b"+-OKERok .\r\n",
            120,
            &[transcript],
            |input, chunks| {
                let script = match input {
                    FuzzInput::Random => &alternating,
                    FuzzInput::Mutated => &transcript_script,
                };
                run_with(Reader::with_limits(128, 512), script, chunks)
            },
        );
    }
}
