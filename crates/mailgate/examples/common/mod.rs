//! What the benchmarks share (included with `#[path]`; not an example of its own).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `mailgate` next to this example (`target/release/examples/..` → `target/release`), built
/// first: `cargo run --example` builds the package's library and the example, not its
/// binaries, so a `mailgate` left over from an older checkout would be measured.
fn build_mailgate() -> PathBuf {
    let examples = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let profile_dir = examples.parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let mut build = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    build
        .args(["build", "--quiet", "-p", "mailgate", "--bin", "mailgate"])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    // `cargo run` gives this process the package's variables; passed on, they would look
    // like a changed environment to build scripts that watch them (ring watches
    // CARGO_MANIFEST_DIR) and every run would rebuild half the dependency tree.
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&k.as_str())
        {
            build.env_remove(k);
        }
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().unwrap();
    assert!(status.success(), "building mailgate: {status}");
    profile_dir.join("mailgate")
}

/// [`build_mailgate`] once per run.
pub fn mailgate_exe() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(build_mailgate).clone()
}
