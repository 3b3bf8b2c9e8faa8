//! Reading received messages (RFC 5322 + MIME) into what the API and webhooks show:
//! envelope headers, every header, the text and HTML bodies, and attachment metadata
//! (never attachment bytes: those are in the raw message, available on request).

use mail_parser::{Address, MessageParser, MimeHeaders};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mailbox {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub filename: Option<String>,
    pub content_type: String,
    pub size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_id: Option<String>,
    /// `Content-Disposition: inline` (an image the HTML shows), not a file to save.
    pub inline: bool,
}

/// The envelope: what a list shows and every webhook carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Envelope {
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub from: Vec<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    /// RFC 3339, from the Date header.
    pub date: Option<String>,
}

/// A whole received message, bodies possibly cut at a limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Received {
    #[serde(flatten)]
    pub envelope: Envelope,
    pub size: usize,
    pub headers: Vec<Header>,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Whether `text` or `html` was cut at the limit the caller gave.
    pub truncated: bool,
    pub attachments: Vec<Attachment>,
}

fn mailboxes(a: Option<&Address<'_>>) -> Vec<Mailbox> {
    a.map(|a| {
        a.iter()
            .filter_map(|m| {
                Some(Mailbox {
                    name: m.name().map(str::to_owned).filter(|n| !n.is_empty()),
                    address: m.address()?.to_owned(),
                })
            })
            .collect()
    })
    .unwrap_or_default()
}

fn cut(s: &str, limit: usize, truncated: &mut bool) -> String {
    if s.len() <= limit {
        return s.to_owned();
    }
    *truncated = true;
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Only the envelope, e.g. from the header block a list fetched. Unparseable input gives
/// an empty envelope rather than an error: a list must not fail on one odd message.
pub fn envelope(raw: &[u8]) -> Envelope {
    match MessageParser::default().parse_headers(raw) {
        Some(m) => envelope_of(&m),
        None => Envelope {
            message_id: None,
            subject: None,
            from: vec![],
            to: vec![],
            cc: vec![],
            reply_to: vec![],
            date: None,
        },
    }
}

fn envelope_of(m: &mail_parser::Message<'_>) -> Envelope {
    Envelope {
        message_id: m.message_id().map(str::to_owned),
        subject: m.subject().map(str::to_owned),
        from: mailboxes(m.from()),
        to: mailboxes(m.to()),
        cc: mailboxes(m.cc()),
        reply_to: mailboxes(m.reply_to()),
        date: m.date().map(|d| d.to_rfc3339()),
    }
}

/// Parses `raw`; `body_limit` caps the text and HTML bodies (in bytes, each).
pub fn parse(raw: &[u8], body_limit: usize) -> Received {
    let parsed = MessageParser::default().parse(raw);
    let Some(m) = parsed else {
        return Received {
            envelope: envelope(b""),
            size: raw.len(),
            headers: vec![],
            text: None,
            html: None,
            truncated: false,
            attachments: vec![],
        };
    };
    let mut truncated = false;
    let text = m.body_text(0).map(|t| cut(&t, body_limit, &mut truncated));
    // A text-only message has no HTML; mail-parser would render one from the text.
    let html = (m.html_body_count() > 0 && m.html_part(0).is_some_and(|p| p.is_text_html()))
        .then(|| m.body_html(0))
        .flatten()
        .map(|h| cut(&h, body_limit, &mut truncated));
    let attachments = m
        .attachments()
        .map(|part| Attachment {
            filename: part.attachment_name().map(str::to_owned),
            content_type: part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{sub}", ct.ctype()),
                    None => ct.ctype().to_owned(),
                })
                .unwrap_or_else(|| "application/octet-stream".to_owned())
                .to_ascii_lowercase(),
            size: part.len(),
            content_id: part.content_id().map(str::to_owned),
            inline: part
                .content_disposition()
                .is_some_and(|d| d.ctype().eq_ignore_ascii_case("inline")),
        })
        .collect();
    Received {
        envelope: envelope_of(&m),
        size: raw.len(),
        headers: m
            .headers_raw()
            .map(|(name, value)| Header {
                name: name.to_owned(),
                value: unfold(value),
            })
            .collect(),
        text,
        html,
        truncated,
        attachments,
    }
}

/// A raw header value without its folding and surrounding blanks.
fn unfold(value: &str) -> String {
    value
        .split("\r\n")
        .flat_map(|l| l.split('\n'))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &[u8] = b"From: \"Ann Example\" <ann@example.test>\r\n\
To: bob@example.test, Carl <carl@example.test>\r\n\
Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\
Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <abc@example.test>\r\n\
X-Long: one\r\n two\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: multipart/alternative; boundary=\"b2\"\r\n\
\r\n\
--b2\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Hello Bob\r\n\
--b2\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>Hello Bob</p>\r\n\
--b2--\r\n\
--b1\r\n\
Content-Type: application/pdf; name=\"invoice.pdf\"\r\n\
Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQK\r\n\
--b1--\r\n";

    #[test]
    fn a_multipart_message_reads_completely() {
        let r = parse(MIXED, 1 << 20);
        assert_eq!(r.envelope.subject.as_deref(), Some("Grüße"));
        assert_eq!(r.envelope.message_id.as_deref(), Some("abc@example.test"));
        assert_eq!(
            r.envelope.from,
            vec![Mailbox {
                name: Some("Ann Example".into()),
                address: "ann@example.test".into()
            }]
        );
        assert_eq!(r.envelope.to.len(), 2);
        assert_eq!(r.envelope.to[1].name.as_deref(), Some("Carl"));
        assert_eq!(r.envelope.date.as_deref(), Some("2026-11-23T10:00:00Z"));
        assert_eq!(r.text.as_deref().map(str::trim), Some("Hello Bob"));
        assert_eq!(r.html.as_deref().map(str::trim), Some("<p>Hello Bob</p>"));
        assert_eq!(
            r.attachments,
            vec![Attachment {
                filename: Some("invoice.pdf".into()),
                content_type: "application/pdf".into(),
                size: 9,
                content_id: None,
                inline: false,
            }]
        );
        let long = r.headers.iter().find(|h| h.name == "X-Long").unwrap();
        assert_eq!(long.value, "one two");
        assert!(!r.truncated);
    }

    #[test]
    fn bodies_are_cut_at_the_limit_on_a_char_boundary() {
        let raw = "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nääää\r\n";
        let r = parse(raw.as_bytes(), 3);
        assert_eq!(r.text.as_deref(), Some("ä"));
        assert!(r.truncated);
        assert_eq!(r.html, None, "no HTML is invented for a text message");
    }

    #[test]
    fn garbage_gives_an_empty_envelope_not_a_panic() {
        let e = envelope(b"\xff\xfe\x00 not a message");
        assert!(e.from.is_empty());
        let r = parse(b"", 10);
        assert_eq!(r.size, 0);
    }
}
