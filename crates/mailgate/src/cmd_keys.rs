//! `mailgate keys ...`

use crate::cli::KeysCommand;
use crate::{CmdResult, Failure, views};
use mailgate_core::Clock;
use mailgate_store::Store;
use mailgate_store::crypto::{KeySource, MasterKey};
use std::io::Read;

pub async fn run(cmd: KeysCommand, store: &Store, clock: &dyn Clock) -> CmdResult {
    match cmd {
        KeysCommand::Rotate {
            new_key_stdin,
            json,
        } => {
            let env_mode = matches!(store.key_source(), KeySource::Env);
            let new_key = if new_key_stdin {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| Failure::BadInput(format!("--new-key-stdin: {e}")))?;
                MasterKey::parse(&s)
                    .map_err(|e| Failure::BadInput(format!("--new-key-stdin: {e}")))?
            } else if env_mode {
                return Err(Failure::BadInput(
                    "--new-key-stdin: the master key comes from MAILGATE_MASTER_KEY, so mailgate cannot store a new one itself; generate one (`openssl rand -base64 32`) and pipe it in with --new-key-stdin".into(),
                ));
            } else {
                MasterKey::generate().map_err(|e| Failure::Runtime(e.to_string()))?
            };
            // One transaction re-encrypts every sealed value; on a terminal, say so while it runs.
            let progress = crate::cmd_backup::Progress::new();
            progress.line("keys rotate: re-encrypting every stored secret under the new key…");
            let r = store.rotate_keys(new_key, clock.now()).await;
            progress.finish();
            let r = r?;
            if json {
                return views::print_json(&r);
            }
            out!(
                "Re-encrypted {} secret(s) under key {}.",
                r.reencrypted,
                r.new_key_id
            );
            if env_mode {
                out!(
                    "Now set MAILGATE_MASTER_KEY to the new key followed by the old one(s) (comma-separated), restart, and drop the old ones once every instance runs with the new key."
                );
            } else {
                out!(
                    "Old key(s) {} stay in the key file for decryption only; run `mailgate keys prune` once every running mailgate has restarted.",
                    r.old_key_ids.join(", ")
                );
            }
            Ok(())
        }
        KeysCommand::Prune => {
            let dropped = store.prune_keys().await?;
            if dropped.is_empty() {
                out!("Nothing to prune.");
            } else {
                out!(
                    "Removed unused key(s) {} from the key file.",
                    dropped.join(", ")
                );
            }
            Ok(())
        }
        KeysCommand::Status { json } => {
            let in_use = store.key_ids_in_use().await?;
            let source = match store.key_source() {
                KeySource::Env => "MAILGATE_MASTER_KEY".to_owned(),
                KeySource::File(p) => p.display().to_string(),
            };
            if json {
                return views::print_json(
                    &serde_json::json!({ "source": source, "in_use": in_use }),
                );
            }
            out!("keys from:  {source}");
            out!(
                "in use:     {}",
                if in_use.is_empty() {
                    "none (no secrets stored yet)".into()
                } else {
                    in_use.join(", ")
                }
            );
            Ok(())
        }
    }
}
