//! The operator's documents that are derived from code: the troubleshooting guide covers
//! every problem code mailgate can show, and nothing else.

use mailgate_mail::remedy::MailRemedy;
use mailgate_oauth::failure::Remediation;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn repo_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// Every problem code an administrator can see, with the sentence mailgate shows beside it
/// (None: the sentence is written where the problem is raised, not in a catalogue).
fn every_problem_code() -> Vec<(&'static str, Option<&'static str>)> {
    let mut codes: Vec<(&'static str, Option<&'static str>)> = Vec::new();
    codes.extend(Remediation::ALL.iter().map(|r| (r.code(), Some(r.sentence()))));
    codes.extend(MailRemedy::ALL.iter().map(|r| (r.code(), Some(r.sentence()))));
    // Account problems mailgate raises itself, outside both catalogues.
    codes.push((mailgate_store::GRANT_DROPPED, None));
    codes
}

/// The guide's entries: heading "### `code`" → the text up to the next heading.
fn guide_entries(text: &str) -> BTreeMap<String, String> {
    let mut entries = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if line.starts_with('#') {
            if let Some((code, body)) = current.take() {
                entries.insert(code, body);
            }
            if let Some(code) = line
                .strip_prefix("### `")
                .and_then(|rest| rest.strip_suffix('`'))
            {
                current = Some((code.to_owned(), String::new()));
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    if let Some((code, body)) = current {
        entries.insert(code, body);
    }
    entries
}

#[test]
fn troubleshooting_guide() {
    let path = repo_file("docs/guides/troubleshooting.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let entries = guide_entries(&text);
    let codes = every_problem_code();
    let mut faults = Vec::new();
    for (code, sentence) in &codes {
        let Some(body) = entries.get(*code) else {
            faults.push(format!(
                "code `{code}` has no entry: add a heading \"### `{code}`\" to docs/guides/troubleshooting.md with what it means and what to do{}",
                sentence
                    .map(|s| format!(", and the line \"mailgate says: {s}\""))
                    .unwrap_or_default()
            ));
            continue;
        };
        if let Some(sentence) = sentence {
            let says = format!("mailgate says: {sentence}");
            if !body.lines().any(|line| line == says) {
                faults.push(format!(
                    "entry `{code}` does not quote what mailgate says now; its line must read \"{says}\""
                ));
            }
        }
        // The catalogue's sentence alone is not an entry: it must also explain.
        let explanation = body
            .lines()
            .filter(|line| !line.starts_with("mailgate says:"))
            .map(str::len)
            .sum::<usize>();
        if explanation < 80 {
            faults.push(format!(
                "entry `{code}` says too little about what it means and what to do"
            ));
        }
    }
    for code in entries.keys() {
        if !codes.iter().any(|(known, _)| known == code) {
            faults.push(format!(
                "entry `{code}` names a code mailgate does not have: remove or rename it"
            ));
        }
    }
    assert!(faults.is_empty(), "{}", faults.join("\n"));
}
