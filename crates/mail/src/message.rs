//! Building outgoing messages (RFC 5322) with the account's from name, reply-to and
//! signature.

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::date::Date;
use mailgate_core::Timestamp;
use mailgate_core::account::AccountSpec;

/// A new Message-ID (without angle brackets) under the sender's domain.
pub fn new_message_id(domain: &str) -> String {
    format!("mailgate.{}@{domain}", mailgate_oauth::random::token(16))
}

pub struct Outgoing<'a> {
    pub to: &'a [String],
    pub subject: &'a str,
    pub text: &'a str,
    pub message_id: &'a str,
    pub date: Timestamp,
}

/// The message as bytes, from the account's identity: From is the mailbox (or the shared
/// mailbox it sends for) with the configured display name; the signature is appended after
/// the standard `-- ` separator.
pub fn build(account: &AccountSpec, m: &Outgoing<'_>) -> Result<Vec<u8>, String> {
    let from_addr = account.sasl_user().to_string();
    let from: Address<'_> = match &account.from_name {
        Some(name) => (name.clone(), from_addr).into(),
        None => from_addr.into(),
    };
    let to: Vec<Address<'_>> = m.to.iter().map(|t| Address::from(t.clone())).collect();
    let mut body = m.text.to_owned();
    if let Some(sig) = account
        .signature
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        body.push_str("\n-- \n");
        body.push_str(sig.strip_prefix("-- \n").unwrap_or(sig));
    }
    let mut builder = MessageBuilder::new()
        .from(from)
        .to(to)
        .subject(m.subject.to_owned())
        .message_id(m.message_id.to_owned())
        .date(Date::new(m.date.0))
        .text_body(body);
    if let Some(r) = &account.reply_to {
        builder = builder.reply_to(r.to_string());
    }
    builder.write_to_vec().map_err(|e| e.to_string())
}
