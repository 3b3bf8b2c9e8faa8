//! The send rules: what a request to send a message (the API's JSON body) must hold before
//! a message is built from it. `SendRequest::parse` checks the recipients, subject, bodies,
//! reply-to and attachments, and answers the field at fault
//! (`attachments[2].content_base64`); the edges turn that into their own refusal.

use crate::EmailAddress;

/// Decoded attachments together may not exceed this. Base64 in the message makes it about
/// 13.7 MB, under what Gmail (25 MB) and Exchange Online (35 MB) accept by default.
pub const MAX_ATTACHMENT_BYTES: usize = 10 * 1024 * 1024;

/// The JSON body of a send. Unknown fields are refused, so a misspelt `htm` is an error
/// rather than a message sent without its html.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    #[serde(default)]
    pub bcc: Vec<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Replaces the account's reply-to for this message.
    pub reply_to: Option<String>,
    #[serde(default)]
    pub attachments: Vec<AttachmentRequest>,
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentRequest {
    pub filename: String,
    pub content_type: String,
    pub content_base64: String,
    pub content_id: Option<String>,
}

/// An attachment after its checks: decoded, with a media type and names safe in headers.
#[derive(Debug)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub content: Vec<u8>,
    pub content_id: Option<String>,
}

/// A send request that passed every rule: parsed addresses and decoded attachments.
#[derive(Debug)]
pub struct CheckedSend {
    pub to: Vec<EmailAddress>,
    pub cc: Vec<EmailAddress>,
    /// In the envelope only: the message's headers never name them.
    pub bcc: Vec<EmailAddress>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub reply_to: Option<EmailAddress>,
    pub attachments: Vec<Attachment>,
}

/// Why a send request was refused, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendRefused {
    Invalid {
        field: String,
        message: String,
    },
    /// The attachments together are over `MAX_ATTACHMENT_BYTES`.
    TooLarge {
        field: &'static str,
        message: String,
    },
}

impl SendRefused {
    fn invalid(field: &str, message: impl Into<String>) -> SendRefused {
        SendRefused::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

fn parse_addresses(field: &'static str, list: &[String]) -> Result<Vec<EmailAddress>, SendRefused> {
    list.iter()
        .map(|a| EmailAddress::parse(a).map_err(|e| SendRefused::invalid(field, e.to_string())))
        .collect()
}

impl SendRequest {
    /// Every send rule, in the order a caller reads the answer: at most `max_recipients`
    /// (counted before any address is parsed: a huge list costs nothing to refuse), each
    /// address valid and at least one, a one-line subject, a body, no NUL, a valid reply-to,
    /// then the attachments.
    pub fn parse(mut self, max_recipients: usize) -> Result<CheckedSend, SendRefused> {
        let mut counted = 0usize;
        for (field, list) in [("to", &self.to), ("cc", &self.cc), ("bcc", &self.bcc)] {
            counted += list.len();
            if counted > max_recipients {
                return Err(SendRefused::invalid(
                    field,
                    format!(
                        "a message may have at most {max_recipients} recipients (to, cc and bcc together)"
                    ),
                ));
            }
        }
        let to = parse_addresses("to", &self.to)?;
        let cc = parse_addresses("cc", &self.cc)?;
        let bcc = parse_addresses("bcc", &self.bcc)?;
        if to.is_empty() && cc.is_empty() && bcc.is_empty() {
            return Err(SendRefused::invalid(
                "to",
                "at least one recipient is needed (to, cc or bcc)",
            ));
        }
        if self.subject.chars().any(|c| c == '\r' || c == '\n') || self.subject.len() > 998 {
            return Err(SendRefused::invalid(
                "subject",
                "the subject must be one line of at most 998 bytes",
            ));
        }
        if self.text.is_none() && self.html.is_none() {
            return Err(SendRefused::invalid(
                "text",
                "the message needs a body: give text, html or both (html alone is sent as text/html)",
            ));
        }
        for (field, value) in [("text", &self.text), ("html", &self.html)] {
            if value.as_deref().is_some_and(|v| v.contains('\0')) {
                return Err(SendRefused::invalid(
                    field,
                    "the body contains a NUL character, which mail cannot carry",
                ));
            }
        }
        let reply_to = self
            .reply_to
            .as_deref()
            .map(EmailAddress::parse)
            .transpose()
            .map_err(|e| SendRefused::invalid("reply_to", e.to_string()))?;
        let attachments = check_attachments(&self.attachments)?;
        // Decoded now: the base64 text is not needed again.
        self.attachments = Vec::new();
        Ok(CheckedSend {
            to,
            cc,
            bcc,
            subject: self.subject,
            text: self.text,
            html: self.html,
            reply_to,
            attachments,
        })
    }
}

/// RFC 2045 token characters: what a media type's type and subtype may hold.
fn is_token_char(c: char) -> bool {
    c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?=".contains(c)
}

/// Characters that change how a name is shown without being seen: the bidirectional
/// controls (U+202E makes `invoice\u{202E}fdp.exe` read as `invoiceexe.pdf`), zero-width and
/// line/paragraph separators, the byte-order mark.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        // Not U+200C/U+200D (ZWNJ/ZWJ): Persian and Indic names and emoji need them.
        '\u{061C}' | '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Decodes and checks every attachment; the problem names `attachments[i].<field>`.
pub fn check_attachments(list: &[AttachmentRequest]) -> Result<Vec<Attachment>, SendRefused> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    // Padding optional: some encoders leave it off.
    const BASE64: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let mut out: Vec<Attachment> = Vec::with_capacity(list.len());
    let mut total = 0usize;
    for (i, a) in list.iter().enumerate() {
        let field = |name: &str| format!("attachments[{i}].{name}");
        if a.filename.trim().is_empty() {
            return Err(SendRefused::invalid(
                &field("filename"),
                "the file name is empty",
            ));
        }
        if a.filename.len() > 255
            || a.filename
                .chars()
                .any(|c| c.is_control() || is_invisible_format(c) || c == '/' || c == '\\')
        {
            return Err(SendRefused::invalid(
                &field("filename"),
                "a file name of at most 255 bytes, without control characters (such as line breaks or bidirectional controls like U+202E), / or \\",
            ));
        }
        let content_type = a.content_type.trim().to_ascii_lowercase();
        let well_formed = content_type.len() <= 127
            && content_type.split_once('/').is_some_and(|(t, s)| {
                !t.is_empty()
                    && !s.is_empty()
                    && t.chars().all(is_token_char)
                    && s.chars().all(is_token_char)
                    && t != "multipart"
                    && t != "message"
            });
        if !well_formed {
            return Err(SendRefused::invalid(
                &field("content_type"),
                "a media type such as application/pdf or image/png (type/subtype, no parameters; not multipart/* or message/*)",
            ));
        }
        let content_id = match &a.content_id {
            None => None,
            Some(cid) => {
                let bare = cid.trim();
                let bare = bare
                    .strip_prefix('<')
                    .and_then(|b| b.strip_suffix('>'))
                    .unwrap_or(bare);
                if bare.is_empty()
                    || bare.len() > 250
                    || !bare
                        .chars()
                        .all(|c| c.is_ascii_graphic() && !"<>()[]\\\",;:".contains(c))
                {
                    return Err(SendRefused::invalid(
                        &field("content_id"),
                        "a Content-ID such as logo@example.com: 1 to 250 visible ASCII characters without <>()[]\\\",;:",
                    ));
                }
                if out.iter().any(|o| {
                    o.content_id
                        .as_deref()
                        .is_some_and(|c| c.eq_ignore_ascii_case(bare))
                }) {
                    return Err(SendRefused::invalid(
                        &field("content_id"),
                        format!("the Content-ID {bare} is used by an earlier attachment"),
                    ));
                }
                Some(bare.to_owned())
            }
        };
        // A copy without line breaks only when there are any: a large attachment is
        // otherwise held once more for nothing.
        let raw = a.content_base64.as_bytes();
        let compact: std::borrow::Cow<'_, [u8]> = if raw.iter().any(u8::is_ascii_whitespace) {
            raw.iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect::<Vec<u8>>()
                .into()
        } else {
            raw.into()
        };
        let content = BASE64.decode(&compact).map_err(|e| {
            SendRefused::invalid(
                &field("content_base64"),
                format!("the content is not valid base64 (standard alphabet): {e}"),
            )
        })?;
        total += content.len();
        if total > MAX_ATTACHMENT_BYTES {
            return Err(SendRefused::TooLarge {
                field: "attachments",
                message: format!(
                    "the attachments come to more than {MAX_ATTACHMENT_BYTES} bytes (decoded); send less or link to the files"
                ),
            });
        }
        out.push(Attachment {
            filename: a.filename.clone(),
            content_type,
            content,
            content_id,
        });
    }
    Ok(out)
}
