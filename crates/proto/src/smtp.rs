//! SMTP replies as a client reads them (RFC 5321 §4.2), decoded incrementally, and the
//! client-side pieces of DATA.
//!
//! A reply is one or more lines `NNN-text` ending with `NNN text` (or just `NNN`); all lines
//! carry the same code. A reply whose lines disagree is refused rather than guessed at,
//! since it means the client and server no longer agree which reply answers which command
//! (pipelining gone wrong, or not an SMTP server).

use std::fmt;

use crate::error::ProtoError;
use crate::line::{Framing, LineBuffer, excerpt, lossy};

const PROTOCOL: &str = "SMTP";

/// RFC 5321 §4.5.3.1.5 allows 512 bytes per reply line; servers exceed it with long
/// explanations (Exchange's 5.7.139 text with its diagnostic suffix), rarely by much.
pub const DEFAULT_MAX_LINE: usize = 8 * 1024;
/// An EHLO reply has about 10–20 lines; nothing legitimate comes near this.
pub const DEFAULT_MAX_LINES: usize = 128;

/// One reply: its code and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text after `NNN-` / `NNN ` of each line, possibly empty (`250` alone is valid).
    pub lines: Vec<String>,
}

impl Reply {
    /// 2xx (done) or 3xx (go on).
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// 3xx: the server waits for more, `334` during AUTH (a base64 challenge, RFC 4954 §4)
    /// and `354` after DATA.
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// The enhanced status code at the start of the first line (RFC 2034, RFC 3463),
    /// `"5.7.139"` for Exchange's "SMTP AUTH is disabled", `"5.7.8"` for Gmail's refused
    /// credentials. Only `class.subject.detail` with class 2, 4 or 5 is taken, so a greeting
    /// that starts with an IP address is not mistaken for one.
    pub fn enhanced_code(&self) -> Option<&str> {
        let first = self.lines.first()?;
        let token = first.split(' ').next()?;
        is_enhanced_code(token).then_some(token)
    }

    /// The lines' text joined with `"\n"`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// The reply as the server sent it, one `NNN text` per line (with `-` continuation marks
/// dropped), for error messages.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{} {line}", self.code)?;
        }
        Ok(())
    }
}

fn is_enhanced_code(token: &str) -> bool {
    let mut parts = token.split('.');
    let short_number = |part: Option<&str>| {
        part.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    matches!(parts.next(), Some("2" | "4" | "5"))
        && short_number(parts.next())
        && short_number(parts.next())
        && parts.next().is_none()
}

/// The incremental reply decoder: [`feed`](Reader::feed) what the socket gives, then call
/// [`next`](Reader::next) until it returns `Ok(None)`.
#[derive(Debug)]
pub struct Reader {
    /// The reply in progress is a multi-line one.
    framing: Framing<Option<Reply>>,
    max_line: usize,
    max_lines: usize,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl Reader {
    /// A reader with [`DEFAULT_MAX_LINE`] and [`DEFAULT_MAX_LINES`].
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_LINE, DEFAULT_MAX_LINES)
    }

    /// `max_line` bounds each line without CRLF, `max_lines` the lines of one reply.
    pub fn with_limits(max_line: usize, max_lines: usize) -> Self {
        Self {
            framing: Framing::default(),
            max_line,
            max_lines,
        }
    }

    /// Appends bytes read from the server. After an error they are dropped unread.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.framing.feed(bytes);
    }

    /// Bytes held: received and unread, plus the lines of a reply still arriving.
    pub fn buffered(&self) -> usize {
        let pending = self
            .framing
            .pending()
            .as_ref()
            .map_or(0, |r| r.lines.iter().map(String::len).sum());
        self.framing.unread() + pending
    }

    /// The next complete reply, `Ok(None)` if more bytes are needed.
    ///
    /// After an `Err` the reader is unusable: every later call returns the same error.
    // Not `Iterator::next`: `Ok(None)` means "feed me", not "finished", and it can fail.
    #[expect(
        clippy::should_implement_trait,
        reason = "fallible, and None is not the end"
    )]
    pub fn next(&mut self) -> Result<Option<Reply>, ProtoError> {
        let (max_line, max_lines) = (self.max_line, self.max_lines);
        self.framing
            .read(|buffer, pending| advance(buffer, pending, max_line, max_lines))
    }
}

/// The next reply from `buffer`, going on with the multi-line one in `pending`.
fn advance(
    buffer: &mut LineBuffer,
    pending: &mut Option<Reply>,
    max_line: usize,
    max_lines: usize,
) -> Result<Option<Reply>, ProtoError> {
    while let Some(line) = buffer
        .next_line(max_line)
        .map_err(|_| ProtoError::LineTooLong { limit: max_line })?
    {
        let (code, is_last, text) = parse_line(line)?;
        let reply = pending.get_or_insert_with(|| Reply {
            code,
            lines: Vec::new(),
        });
        if reply.code != code {
            return Err(malformed(format!(
                "a line with code {code} inside a {} reply: {}",
                reply.code,
                excerpt(line)
            )));
        }
        if reply.lines.len() >= max_lines {
            return Err(malformed(format!(
                "reply longer than the {max_lines}-line limit"
            )));
        }
        reply.lines.push(lossy(text));
        if is_last {
            return Ok(pending.take());
        }
    }
    Ok(None)
}

/// `Reply-code [ SP textstring ]` or `Reply-code "-" [ textstring ]` (RFC 5321 §4.2):
/// the code, whether this is the last line, and the text.
fn parse_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ProtoError> {
    let (code, rest) = match line {
        // The first digit is 2 to 5 (RFC 5321 §4.2.1).
        [first @ b'2'..=b'5', second, third, rest @ ..]
            if second.is_ascii_digit() && third.is_ascii_digit() =>
        {
            let digit = |d: &u8| u16::from(d - b'0');
            (digit(first) * 100 + digit(second) * 10 + digit(third), rest)
        }
        _ => {
            return Err(malformed(format!(
                "a reply line does not start with a three-digit code: {}",
                excerpt(line)
            )));
        }
    };
    match rest {
        [] => Ok((code, true, rest)),
        [b' ', text @ ..] => Ok((code, true, text)),
        [b'-', text @ ..] => Ok((code, false, text)),
        _ => Err(malformed(format!(
            "the reply code is not three digits followed by a space or '-': {}",
            excerpt(line)
        ))),
    }
}

fn malformed(detail: String) -> ProtoError {
    ProtoError::Malformed {
        protocol: PROTOCOL,
        detail,
    }
}

/// The extensions of an EHLO reply (RFC 5321 §4.1.1.1), one per line after the first (the
/// first line is the server's greeting), upper-cased, keyword first:
/// `"AUTH PLAIN XOAUTH2"` → `("AUTH", ["PLAIN", "XOAUTH2"])`.
///
/// A line in the pre-standard form `AUTH=PLAIN LOGIN` (Postfix sends it next to the standard
/// one with `broken_sasl_auth_clients`, for old Outlook) is read as `("AUTH", ["PLAIN",
/// "LOGIN"])`, so the same keyword may appear twice; [`ehlo_auth_mechanisms`] merges them.
pub fn ehlo_extensions(reply: &Reply) -> Vec<(String, Vec<String>)> {
    reply
        .lines
        .iter()
        .skip(1)
        .filter_map(|line| {
            let mut words = line.split_ascii_whitespace().map(str::to_ascii_uppercase);
            let first = words.next()?;
            let mut params: Vec<String> = Vec::new();
            let keyword = match first.split_once('=') {
                Some((keyword, param)) => {
                    if !param.is_empty() {
                        params.push(param.to_owned());
                    }
                    keyword.to_owned()
                }
                None => first,
            };
            params.extend(words);
            Some((keyword, params))
        })
        .collect()
}

/// The SASL mechanisms an EHLO reply offers (its `AUTH` lines, RFC 4954 §3), upper-cased,
/// without repeats, in the order offered.
pub fn ehlo_auth_mechanisms(reply: &Reply) -> Vec<String> {
    let mut mechanisms: Vec<String> = Vec::new();
    for (keyword, params) in ehlo_extensions(reply) {
        if keyword == "AUTH" {
            for mechanism in params {
                if !mechanisms.contains(&mechanism) {
                    mechanisms.push(mechanism);
                }
            }
        }
    }
    mechanisms
}

/// A message ready to send after DATA's `354`: line ends normalised to CRLF (RFC 5321
/// §2.3.8 forbids bare CR and LF; a bare CR or LF becomes CRLF), every line starting with
/// `.` gets one more (RFC 5321 §4.5.2), and the end-of-data `.` line is appended, after a
/// CRLF if the message does not end with one. An empty message is just `.\r\n`.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut stuffed = Vec::with_capacity(message.len() + message.len() / 32 + 5);
    let mut at_line_start = true;
    let mut bytes = message.iter().copied().peekable();
    while let Some(byte) = bytes.next() {
        match byte {
            b'\r' => {
                bytes.next_if_eq(&b'\n');
                stuffed.extend_from_slice(b"\r\n");
                at_line_start = true;
            }
            b'\n' => {
                stuffed.extend_from_slice(b"\r\n");
                at_line_start = true;
            }
            _ => {
                if at_line_start && byte == b'.' {
                    stuffed.push(b'.');
                }
                stuffed.push(byte);
                at_line_start = false;
            }
        }
    }
    if !at_line_start {
        stuffed.extend_from_slice(b"\r\n");
    }
    stuffed.extend_from_slice(b".\r\n");
    stuffed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{
        XorShift, assert_same_for_every_split, fuzz_never_panics_and_ignores_cuts,
    };

    type Outcome = (Vec<Reply>, Option<ProtoError>);

    fn run_with(mut reader: Reader, chunks: &[&[u8]]) -> Outcome {
        let mut replies = Vec::new();
        for chunk in chunks {
            reader.feed(chunk);
            loop {
                match reader.next() {
                    Ok(Some(reply)) => replies.push(reply),
                    Ok(None) => {
                        // Waiting for more: at most one partial line and the lines so far.
                        let bound = reader.max_line + 1 + reader.max_lines * reader.max_line;
                        assert!(reader.buffered() <= bound, "{} held", reader.buffered());
                        break;
                    }
                    Err(e) => return (replies, Some(e)),
                }
            }
        }
        (replies, None)
    }

    fn run(chunks: &[&[u8]]) -> Outcome {
        run_with(Reader::new(), chunks)
    }

    fn parse_all(input: &[u8]) -> Vec<Reply> {
        let (replies, error) = run(&[input]);
        assert_eq!(error, None, "{:?}", String::from_utf8_lossy(input));
        replies
    }

    fn reply(code: u16, lines: &[&str]) -> Reply {
        Reply {
            code,
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    const CHALLENGE: &str = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=";

    const EXCHANGE_535: &str = "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [MN2PR01CA0042.prod.exchangelabs.com 2024-01-01T10:00:00.000Z 08DC0A1B2C3D4E5F]";

    /// Exchange Online-like: greeting, EHLO, STARTTLS, EHLO with AUTH, a 334 error challenge,
    /// the 5.7.139 refusal.
    fn exchange_transcript() -> Vec<u8> {
        [
            "220 MN2PR01CA0042.outlook.office365.com Microsoft ESMTP MAIL Service ready at Mon, 1 Jan 2024 10:00:00 +0000\r\n",
            "250-MN2PR01CA0042.outlook.office365.com Hello [203.0.113.7]\r\n",
            "250-SIZE 157286400\r\n250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n",
            "250-STARTTLS\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n",
            "220 2.0.0 SMTP server ready\r\n",
            "250-MN2PR01CA0042.outlook.office365.com Hello [203.0.113.7]\r\n",
            "250-SIZE 157286400\r\n250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n",
            "250-AUTH LOGIN XOAUTH2\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n",
            &format!("334 {CHALLENGE}\r\n"),
            &format!("535 {EXCHANGE_535}\r\n"),
            "221 2.0.0 Service closing transmission channel\r\n",
        ]
        .concat()
        .into_bytes()
    }

    /// Postfix-like: EHLO with both AUTH forms, an empty 334, success, a whole DATA
    /// exchange; Gmail's two-line 535; a bare `250`; one bare LF.
    const POSTFIX_TRANSCRIPT: &[u8] = b"220 mail.example.test ESMTP Postfix (Debian/GNU)\r\n\
250-mail.example.test\r\n\
250-PIPELINING\r\n\
250-SIZE 10240000\r\n\
250-VRFY\r\n\
250-ETRN\r\n\
250-AUTH PLAIN LOGIN XOAUTH2\r\n\
250-AUTH=PLAIN LOGIN XOAUTH2\r\n\
250-ENHANCEDSTATUSCODES\r\n\
250-8BITMIME\r\n\
250-DSN\r\n\
250 CHUNKING\r\n\
334 \r\n\
235 2.7.0 Authentication successful\r\n\
250 2.1.0 Ok\n\
250 2.1.5 Ok\r\n\
354 End data with <CR><LF>.<CR><LF>\r\n\
250 2.0.0 Ok: queued as 4Bf1xX3kQ4z9sWd\r\n\
535-5.7.8 Username and Password not accepted. For more information, go to\r\n\
535 5.7.8  https://support.google.com/mail/?p=BadCredentials a1-20020a05600c\r\n\
250\r\n\
250-\r\n\
250 \r\n\
221 2.0.0 Bye\r\n";

    #[test]
    fn exchange_transcript_parses_to_the_expected_replies() {
        let replies = parse_all(&exchange_transcript());
        let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
        assert_eq!(codes, [220, 250, 220, 250, 334, 535, 221]);
        assert_eq!(replies[1].lines.len(), 10);
        assert_eq!(replies[1].lines[9], "SMTPUTF8");
        assert_eq!(replies[2], reply(220, &["2.0.0 SMTP server ready"]));
        assert_eq!(replies[4], reply(334, &[CHALLENGE]));
        assert!(replies[4].is_intermediate() && replies[4].is_positive());
        let refusal = &replies[5];
        assert_eq!(refusal, &reply(535, &[EXCHANGE_535]));
        assert!(!refusal.is_positive() && !refusal.is_intermediate());
        assert_eq!(refusal.enhanced_code(), Some("5.7.139"));
        assert_eq!(replies[0].enhanced_code(), None);
        assert_eq!(
            crate::sasl::decode_error_challenge(&replies[4].text())
                .unwrap()
                .status,
            "401"
        );
    }

    #[test]
    fn postfix_transcript_parses_to_the_expected_replies() {
        let replies = parse_all(POSTFIX_TRANSCRIPT);
        let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
        assert_eq!(
            codes,
            [220, 250, 334, 235, 250, 250, 354, 250, 535, 250, 250, 221]
        );
        assert_eq!(replies[2], reply(334, &[""]));
        assert_eq!(replies[3].enhanced_code(), Some("2.7.0"));
        assert_eq!(replies[4], reply(250, &["2.1.0 Ok"]));
        let gmail = &replies[8];
        assert_eq!(gmail.lines.len(), 2);
        assert_eq!(gmail.enhanced_code(), Some("5.7.8"));
        assert_eq!(
            gmail.text(),
            "5.7.8 Username and Password not accepted. For more information, go to\n\
             5.7.8  https://support.google.com/mail/?p=BadCredentials a1-20020a05600c"
        );
        assert_eq!(replies[9], reply(250, &[""]), "a bare code is a reply");
        assert_eq!(replies[10], reply(250, &["", ""]));
        assert_eq!(
            replies[10].to_string(),
            "250 \n250 ",
            "Display shows code and text per line"
        );
    }

    #[test]
    fn every_split_of_the_transcripts_gives_the_same_replies() {
        for transcript in [exchange_transcript(), POSTFIX_TRANSCRIPT.to_vec()] {
            assert_same_for_every_split(&transcript, run);
        }
    }

    #[test]
    fn ehlo_extensions_skip_the_greeting_and_upper_case() {
        let replies = parse_all(POSTFIX_TRANSCRIPT);
        let extensions = ehlo_extensions(&replies[1]);
        let owned = |k: &str, p: &[&str]| {
            (
                k.to_owned(),
                p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            extensions,
            vec![
                owned("PIPELINING", &[]),
                owned("SIZE", &["10240000"]),
                owned("VRFY", &[]),
                owned("ETRN", &[]),
                owned("AUTH", &["PLAIN", "LOGIN", "XOAUTH2"]),
                owned("AUTH", &["PLAIN", "LOGIN", "XOAUTH2"]),
                owned("ENHANCEDSTATUSCODES", &[]),
                owned("8BITMIME", &[]),
                owned("DSN", &[]),
                owned("CHUNKING", &[]),
            ]
        );
        assert_eq!(
            ehlo_auth_mechanisms(&replies[1]),
            ["PLAIN", "LOGIN", "XOAUTH2"]
        );
        let exchange = parse_all(&exchange_transcript());
        assert_eq!(ehlo_auth_mechanisms(&exchange[1]), Vec::<String>::new());
        assert_eq!(ehlo_auth_mechanisms(&exchange[3]), ["LOGIN", "XOAUTH2"]);
        let lower = reply(250, &["hi", "auth xoauth2 oauthbearer", "", "size"]);
        assert_eq!(
            ehlo_extensions(&lower),
            vec![
                owned("AUTH", &["XOAUTH2", "OAUTHBEARER"]),
                owned("SIZE", &[])
            ]
        );
    }

    #[test]
    fn enhanced_codes_need_the_rfc_3463_shape() {
        for (text, expected) in [
            ("5.7.139 Authentication unsuccessful", Some("5.7.139")),
            ("2.0.0", Some("2.0.0")),
            ("4.4.2 timeout", Some("4.4.2")),
            ("1.2.3.4 ESMTP", None),
            ("3.1.1 no such class", None),
            ("5.7 short", None),
            ("5.7.1234 long", None),
            ("5..1 empty", None),
            (" 5.7.1 leading space", None),
            ("", None),
        ] {
            assert_eq!(reply(550, &[text]).enhanced_code(), expected, "{text:?}");
        }
        assert_eq!(reply(250, &[]).enhanced_code(), None);
    }

    #[test]
    fn codes_must_match_within_a_reply() {
        let (replies, error) = run(&[b"250-first\r\n251 second\r\n"]);
        assert!(replies.is_empty());
        assert!(
            matches!(&error, Some(ProtoError::Malformed { protocol: "SMTP", detail }) if detail.contains("251") && detail.contains("250")),
            "{error:?}"
        );
    }

    #[test]
    fn malformed_lines_are_errors() {
        for line in [
            &b"\r\n"[..],
            b"25 ok\r\n",
            b"2500 ok\r\n",
            b"250x ok\r\n",
            b"abc ok\r\n",
            b"650 not a class\r\n",
            b"150 not SMTP\r\n",
            b"+OK POP3 ready\r\n",
            b"* OK IMAP4rev1\r\n",
            b"\x16\x03\x01\x00\xa5\x01\r\n",
        ] {
            let (_, error) = run(&[line]);
            assert!(
                matches!(
                    error,
                    Some(ProtoError::Malformed {
                        protocol: "SMTP",
                        ..
                    })
                ),
                "{line:?}: {error:?}"
            );
        }
    }

    #[test]
    fn non_utf8_text_is_read_lossily() {
        assert_eq!(
            parse_all(b"554 r\xe9fus\xe9\r\n"),
            vec![reply(554, &["r\u{fffd}fus\u{fffd}"])]
        );
    }

    #[test]
    fn limits_on_lines_and_line_count() {
        let mut reader = Reader::with_limits(600, 4);
        reader.feed(b"250-a\r\n250-b\r\n250-c\r\n250-d\r\n");
        assert_eq!(reader.next(), Ok(None));
        reader.feed(b"250 e\r\n");
        assert!(matches!(
            reader.next(),
            Err(ProtoError::Malformed { detail, .. }) if detail.contains("4-line limit")
        ));
        let mut reader = Reader::with_limits(600, 4);
        let mut fed = 0;
        let error = loop {
            reader.feed(&[b'5'; 100]);
            fed += 100;
            match reader.next() {
                Ok(None) => assert!(reader.buffered() <= 601),
                other => break other,
            }
        };
        assert_eq!(error, Err(ProtoError::LineTooLong { limit: 600 }));
        assert_eq!(fed, 700);
        reader.feed(b"\r\n250 ok\r\n");
        assert_eq!(reader.next(), error, "sticky");
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn dot_stuff_normalises_line_ends_and_escapes_dots() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a\nb\rc\r\n", b"a\r\nb\r\nc\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"x\r\n.\r\ny", b"x\r\n..\r\ny\r\n.\r\n"),
            (b"..a\n.b\n c.", b"...a\r\n..b\r\n c.\r\n.\r\n"),
            (b"\n\n", b"\r\n\r\n.\r\n"),
            (b"\r\r\n\n", b"\r\n\r\n\r\n.\r\n"),
        ];
        for (message, stuffed) in cases {
            assert_eq!(
                dot_stuff(message),
                stuffed.to_vec(),
                "{:?}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn dot_stuffed_output_has_exactly_one_end_marker_and_no_bare_line_ends() {
        let mut rng = XorShift::new(0x05EE_DD07);
        for _ in 0..2_000 {
            let message = rng.protocol_bytes(b".\r\nab", 40);
            let stuffed = dot_stuff(&message);
            let text = [b"\r\n".as_slice(), &stuffed].concat();
            let ends = text.windows(5).filter(|w| w == b"\r\n.\r\n").count();
            assert_eq!(ends, 1, "{message:?} → {stuffed:?}");
            assert!(text.ends_with(b"\r\n.\r\n"));
            for (i, &b) in stuffed.iter().enumerate() {
                match b {
                    b'\r' => assert_eq!(stuffed.get(i + 1), Some(&b'\n'), "{message:?}"),
                    b'\n' => {
                        assert_eq!(stuffed.get(i.wrapping_sub(1)), Some(&b'\r'), "{message:?}")
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn the_error_is_sticky_and_drops_the_reply_so_far_and_later_bytes() {
        let mut reader = Reader::with_limits(8, 16);
        reader.feed(b"250-one\r\n");
        assert_eq!(reader.next(), Ok(None));
        assert!(reader.buffered() > 0, "the reply's first line is held");
        reader.feed(b"250 0123456789\r\n");
        let error = reader.next().unwrap_err();
        assert_eq!(error, ProtoError::LineTooLong { limit: 8 });
        reader.feed(b"250 ok\r\n");
        assert_eq!(reader.next(), Err(error));
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn fuzz_random_and_mutated_input_never_panics_and_ignores_cuts() {
        fuzz_never_panics_and_ignores_cuts(
            0x534D_5450,
            b"0123456789- \r\n",
            120,
            &[exchange_transcript(), POSTFIX_TRANSCRIPT.to_vec()],
            |_, chunks| run_with(Reader::with_limits(512, 16), chunks),
        );
    }
}
