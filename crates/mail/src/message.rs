//! Building outgoing messages (RFC 5322) with the account's from name, reply-to and
//! signature.
//!
//! The MIME structure, from the outside in (each layer only when it is needed):
//!
//! ```text
//! multipart/mixed             attachments without a Content-ID
//! └─ multipart/related        attachments with a Content-ID (images the html refers to)
//!    └─ multipart/alternative text and html, when both are given
//!       ├─ text/plain
//!       └─ text/html
//! ```

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::mime::MimePart;
use mailgate_core::Timestamp;
use mailgate_core::account::AccountSpec;

/// A new Message-ID (without angle brackets) under the sender's domain.
pub fn new_message_id(domain: &str) -> Result<String, mailgate_core::random::RandomFailed> {
    Ok(format!(
        "mailgate.{}@{domain}",
        mailgate_core::random::token(16)?
    ))
}

/// A file to attach, already decoded and checked by the caller (file name and content
/// type free of control characters, content type `type/subtype`).
pub struct Attachment<'a> {
    pub filename: &'a str,
    pub content_type: &'a str,
    pub content: &'a [u8],
    /// Without angle brackets. With one, the part is inline and the html can show it as
    /// `cid:<content_id>`.
    pub content_id: Option<&'a str>,
}

pub struct Outgoing<'a> {
    pub to: &'a [String],
    pub cc: &'a [String],
    /// Replaces the account's reply-to when given.
    pub reply_to: Option<&'a str>,
    pub subject: &'a str,
    pub text: Option<&'a str>,
    pub html: Option<&'a str>,
    pub attachments: &'a [Attachment<'a>],
    pub message_id: &'a str,
    pub date: Timestamp,
}

/// The message as bytes, from the account's identity: From is the mailbox (or the shared
/// mailbox it sends for) with the configured display name; the signature is appended to
/// the text after the standard `-- ` separator and to the html in a `<div>`. Bcc never
/// appears here: blind copies exist only in the envelope.
pub fn build(account: &AccountSpec, m: &Outgoing<'_>) -> Result<Vec<u8>, String> {
    let from_addr = account.sasl_user().to_string();
    let from: Address<'_> = match &account.from_name {
        Some(name) => (name.clone(), from_addr).into(),
        None => from_addr.into(),
    };
    let signature = account
        .signature
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.strip_prefix("-- \n").unwrap_or(s));
    let text = m.text.map(|t| match signature {
        Some(sig) => crlf(&format!("{t}\n-- \n{sig}")),
        None => crlf(t),
    });
    let html = m.html.map(|h| match signature {
        Some(sig) => crlf(&html_with_signature(h, sig)),
        None => crlf(h),
    });
    let mut body = match (text, html) {
        (Some(t), Some(h)) => MimePart::new(
            "multipart/alternative",
            vec![
                MimePart::new("text/plain", t),
                MimePart::new("text/html", h),
            ],
        ),
        (Some(t), None) => MimePart::new("text/plain", t),
        (None, Some(h)) => MimePart::new("text/html", h),
        (None, None) => return Err("the message needs a text or an html body".into()),
    };
    let (inline, attached): (Vec<&Attachment<'_>>, Vec<&Attachment<'_>>) =
        m.attachments.iter().partition(|a| a.content_id.is_some());
    if !inline.is_empty() {
        let mut parts = vec![body];
        parts.extend(inline.into_iter().map(attachment_part));
        body = MimePart::new("multipart/related", parts);
    }
    if !attached.is_empty() {
        let mut parts = vec![body];
        parts.extend(attached.into_iter().map(attachment_part));
        body = MimePart::new("multipart/mixed", parts);
    }
    let address_list = |list: &[String]| {
        Address::new_list(list.iter().map(|a| Address::from(a.clone())).collect())
    };
    let mut builder = MessageBuilder::new().from(from);
    // SendOnBehalf: Exchange shows "delegate on behalf of mailbox" from this header.
    if account.send_on_behalf
        && let Some(delegate) = &account.delegate
    {
        builder = builder.sender(delegate.to_string());
    }
    // Without To (only Cc or Bcc recipients) the header is left out, as RFC 5322 allows.
    if !m.to.is_empty() {
        builder = builder.to(address_list(m.to));
    }
    builder = builder
        .subject(m.subject.to_owned())
        .message_id(m.message_id.to_owned())
        .date(Date::new(m.date.0))
        .body(body);
    if !m.cc.is_empty() {
        builder = builder.cc(address_list(m.cc));
    }
    match (m.reply_to, &account.reply_to) {
        (Some(r), _) => builder = builder.reply_to(r.to_owned()),
        (None, Some(r)) => builder = builder.reply_to(r.to_string()),
        (None, None) => {}
    }
    // Sized once for what base64 makes of the parts (4/3, plus CRLF every 76): a growing
    // Vec would hold up to twice a large message while it doubles.
    let parts_len: usize = m.attachments.iter().map(|a| a.content.len()).sum::<usize>()
        + m.text.map_or(0, str::len)
        + m.html.map_or(0, str::len);
    let mut out = Vec::with_capacity(parts_len / 3 * 4 + parts_len / 57 * 2 + 4096);
    builder.write_to(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn attachment_part<'a>(a: &Attachment<'a>) -> MimePart<'a> {
    let part = MimePart::new(ContentType::new(a.content_type), a.content);
    let disposition = match a.content_id {
        Some(_) => ContentType::new("inline"),
        None => ContentType::new("attachment"),
    }
    .attribute("filename", a.filename);
    let part = part.header("Content-Disposition", disposition);
    match a.content_id {
        Some(cid) => part.cid(cid),
        None => part,
    }
}

/// The signature, escaped, in a `<div>` at the end of the html: before `</body>` when the
/// html has one, else appended.
fn html_with_signature(html: &str, signature: &str) -> String {
    let block = format!(
        "<div class=\"mailgate-signature\">-- <br>\n{}</div>\n",
        mailgate_core::html::escape(signature).replace('\n', "<br>\n")
    );
    match html.to_ascii_lowercase().rfind("</body>") {
        Some(i) => format!("{}{block}{}", &html[..i], &html[i..]),
        None => format!("{html}\n{block}"),
    }
}

/// Bodies go out with CRLF line ends whatever the caller used: a bare LF in SMTP DATA is
/// refused or rewritten by some servers (Postfix's `smtpd_forbid_bare_newline`).
fn crlf(s: &str) -> String {
    s.replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\n', "\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> AccountSpec {
        let spec = serde_json::json!({
            "name": "support", "description": "", "enabled": true,
            "mailbox": "support@example.test", "shared_mailbox": null, "aliases": [],
            "app_id": 1, "inbound": null, "outbound": null,
            "from_name": "Support Desk", "reply_to": "help@example.test",
            "signature": "Support & Co <desk>", "on_received": {"action": "none"}
        });
        serde_json::from_value(spec).unwrap()
    }

    fn outgoing<'a>(
        text: Option<&'a str>,
        html: Option<&'a str>,
        attachments: &'a [Attachment<'a>],
    ) -> Outgoing<'a> {
        Outgoing {
            to: &[],
            cc: &[],
            reply_to: None,
            subject: "Hello",
            text,
            html,
            attachments,
            message_id: "m1@example.test",
            date: Timestamp(1_700_000_000),
        }
    }

    fn built(m: &Outgoing<'_>) -> String {
        String::from_utf8(build(&account(), m).unwrap()).unwrap()
    }

    #[test]
    fn text_only_is_one_text_part_with_the_signature_and_the_accounts_identity() {
        let to = ["bob@example.test".to_owned()];
        let cc = ["carol@example.test".to_owned()];
        let m = Outgoing {
            to: &to,
            cc: &cc,
            ..outgoing(Some("Hi Bob"), None, &[])
        };
        let out = built(&m);
        assert!(
            out.contains("From: \"Support Desk\" <support@example.test>\r\n"),
            "{out}"
        );
        assert!(out.contains("To: <bob@example.test>\r\n"), "{out}");
        assert!(out.contains("Cc: <carol@example.test>\r\n"), "{out}");
        assert!(out.contains("Reply-To: <help@example.test>\r\n"), "{out}");
        assert!(
            out.contains("Content-Type: text/plain; charset=\"utf-8\""),
            "{out}"
        );
        assert!(
            out.contains("Hi Bob\r\n--=20\r\nSupport & Co <desk>"),
            "{out}"
        );
        assert!(!out.contains("multipart"), "{out}");
    }

    #[test]
    fn a_delegate_is_the_sender_only_when_sending_on_behalf() {
        let mut spec = account();
        spec.delegate = Some(mailgate_core::EmailAddress::parse("alice@example.test").unwrap());
        let send_as =
            String::from_utf8(build(&spec, &outgoing(Some("x"), None, &[])).unwrap()).unwrap();
        assert!(send_as.contains("<support@example.test>"), "{send_as}");
        assert!(!send_as.contains("Sender:"), "{send_as}");
        spec.send_on_behalf = true;
        let on_behalf =
            String::from_utf8(build(&spec, &outgoing(Some("x"), None, &[])).unwrap()).unwrap();
        assert!(
            on_behalf.contains("From: \"Support Desk\" <support@example.test>\r\n"),
            "{on_behalf}"
        );
        assert!(
            on_behalf.contains("Sender: <alice@example.test>\r\n"),
            "{on_behalf}"
        );
    }

    #[test]
    fn the_reply_to_given_replaces_the_accounts() {
        let m = Outgoing {
            reply_to: Some("sales@example.test"),
            ..outgoing(Some("x"), None, &[])
        };
        let out = built(&m);
        assert!(out.contains("Reply-To: <sales@example.test>\r\n"), "{out}");
        assert!(!out.contains("help@example.test"), "{out}");
    }

    #[test]
    fn text_and_html_are_alternatives_each_with_the_signature() {
        let out = built(&outgoing(Some("Hi"), Some("<p>Hi</p>"), &[]));
        assert!(out.contains("Content-Type: multipart/alternative"), "{out}");
        assert!(
            out.contains("Content-Type: text/plain; charset=\"utf-8\""),
            "{out}"
        );
        assert!(
            out.contains("Content-Type: text/html; charset=\"utf-8\""),
            "{out}"
        );
        assert!(out.contains("Hi\r\n--=20\r\nSupport & Co <desk>"), "{out}");
        assert!(
            out.contains(
                "<div class=\"mailgate-signature\">-- <br>\r\nSupport &amp; Co &lt;desk&gt;</div>"
            ),
            "{out}"
        );
    }

    #[test]
    fn html_only_and_attachments_nest_related_inside_mixed() {
        let png = [0x89, b'P', b'N', b'G', 0, 255, 13, 10];
        let attachments = [
            Attachment {
                filename: "report.pdf",
                content_type: "application/pdf",
                content: b"%PDF-1.4",
                content_id: None,
            },
            Attachment {
                filename: "logo.png",
                content_type: "image/png",
                content: &png,
                content_id: Some("logo@x"),
            },
        ];
        let out = built(&outgoing(
            None,
            Some("<img src=\"cid:logo@x\">"),
            &attachments,
        ));
        let mixed = out.find("Content-Type: multipart/mixed").unwrap();
        let related = out.find("Content-Type: multipart/related").unwrap();
        let html = out.find("Content-Type: text/html").unwrap();
        assert!(mixed < related && related < html, "{out}");
        assert!(!out.contains("text/plain"), "{out}");
        assert!(
            out.contains("Content-Disposition: attachment; filename=\"report.pdf\""),
            "{out}"
        );
        assert!(
            out.contains("Content-Disposition: inline; filename=\"logo.png\""),
            "{out}"
        );
        assert!(out.contains("Content-ID: <logo@x>"), "{out}");
        assert!(out.contains("Content-Type: image/png"), "{out}");
    }

    #[test]
    fn a_message_needs_text_or_html() {
        assert!(build(&account(), &outgoing(None, None, &[])).is_err());
    }

    #[test]
    fn the_signature_is_escaped_in_a_div_before_the_end_of_the_body() {
        assert_eq!(
            html_with_signature("<html><body><p>Hi</p></BODY></html>", "A & B <x>\nline 2"),
            "<html><body><p>Hi</p><div class=\"mailgate-signature\">-- <br>\nA &amp; B &lt;x&gt;<br>\nline 2</div>\n</BODY></html>"
        );
        assert_eq!(
            html_with_signature("<p>Hi</p>", "Sig"),
            "<p>Hi</p>\n<div class=\"mailgate-signature\">-- <br>\nSig</div>\n"
        );
        assert_eq!(
            mailgate_core::html::escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
