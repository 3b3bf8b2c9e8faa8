//! `/admin/help`: every problem code mailgate shows, with an anchor per code
//! (`/admin/help#secret_expired`), so each remediation in the UI links to its entry.
//!
//! The entries are docs/guides/troubleshooting.md itself, compiled into the binary: that
//! guide is checked against the remediation catalogues by a test (`troubleshooting_guide`),
//! so the page covers every code and says what mailgate says. Only the guide's plain
//! subset is rendered: `##` sections, `###` code headings, paragraphs, and `code` spans.

use crate::auth::OperatorSession;
use crate::html::{Frame, Nav, PageError, render};
use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

const GUIDE: &str = include_str!("../../../docs/guides/troubleshooting.md");

/// A run of paragraph text: plain, or a `code` span.
pub struct Span {
    pub code: bool,
    pub text: String,
}

pub struct Entry {
    pub code: String,
    pub paragraphs: Vec<Vec<Span>>,
}

pub struct Section {
    pub title: String,
    pub intro: Vec<Vec<Span>>,
    pub entries: Vec<Entry>,
}

fn spans(paragraph: &str) -> Vec<Span> {
    paragraph
        .split('`')
        .enumerate()
        .filter(|(_, t)| !t.is_empty())
        .map(|(i, t)| Span {
            code: i % 2 == 1,
            text: t.replace("**", ""),
        })
        .collect()
}

/// The guide's sections and entries, in its order.
pub fn sections() -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut paragraph = String::new();
    let flush = |out: &mut Vec<Section>, paragraph: &mut String| {
        let text = paragraph.trim().to_owned();
        paragraph.clear();
        if text.is_empty() {
            return;
        }
        if let Some(section) = out.last_mut() {
            match section.entries.last_mut() {
                Some(entry) => entry.paragraphs.push(spans(&text)),
                None => section.intro.push(spans(&text)),
            }
        }
    };
    for line in GUIDE.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            flush(&mut out, &mut paragraph);
            out.push(Section {
                title: title.trim().to_owned(),
                intro: Vec::new(),
                entries: Vec::new(),
            });
        } else if let Some(code) = line.strip_prefix("### ") {
            flush(&mut out, &mut paragraph);
            if let Some(section) = out.last_mut() {
                section.entries.push(Entry {
                    code: code.trim().trim_matches('`').to_owned(),
                    paragraphs: Vec::new(),
                });
            }
        } else if line.trim().is_empty() {
            flush(&mut out, &mut paragraph);
        } else {
            paragraph.push_str(line);
            paragraph.push(' ');
        }
    }
    flush(&mut out, &mut paragraph);
    out
}

#[derive(Template)]
#[template(path = "help.html")]
struct HelpPage {
    frame: Frame,
    title: &'static str,
    sections: Vec<Section>,
}

pub async fn help(OperatorSession(session): OperatorSession) -> Result<Response, PageError> {
    Ok(render(
        StatusCode::OK,
        &HelpPage {
            frame: session.frame(Nav::Help),
            title: "Problem codes",
            sections: sections(),
        },
    ))
}

/// docs/webhooks.md as the webhooks page links it: the bodies and how to verify their
/// signatures, compiled into the binary like the troubleshooting guide.
pub async fn webhooks_doc(OperatorSession(_session): OperatorSession) -> Response {
    use axum::response::IntoResponse;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        include_str!("../../../docs/webhooks.md"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_code_has_an_anchor() {
        let codes: Vec<String> = sections()
            .into_iter()
            .flat_map(|s| s.entries.into_iter().map(|e| e.code))
            .collect();
        for r in mailgate_oauth::Remediation::ALL {
            assert!(codes.iter().any(|c| c == r.code()), "{}", r.code());
        }
        for r in mailgate_mail::remedy::MailRemedy::ALL {
            assert!(codes.iter().any(|c| c == r.code()), "{}", r.code());
        }
    }
}
