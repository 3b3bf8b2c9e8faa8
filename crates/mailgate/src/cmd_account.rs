//! `mailgate account ...`

use crate::cli::{AccountAdd, AccountCommand, AccountSettings, AccountUpdate};
use crate::{CmdResult, Failure, views};
use mailgate_core::Clock;
use mailgate_core::input::{AccountChanges, AccountSettingsInput, NewAccount};
use mailgate_store::Store;
use mailgate_usecase::changes;

pub async fn run(cmd: AccountCommand, store: &Store, clock: &dyn Clock) -> CmdResult {
    match cmd {
        AccountCommand::Add(args) => {
            let app = store
                .find_app(&args.app)
                .await
                .map_err(|e| Failure::BadInput(format!("--app: {e}")))?;
            let acc = changes::create_account(store, new_account(args)?, &app, clock.now()).await?;
            views::print_account(&acc, app.spec.name.as_str());
            out!("\nNext: authorize it, signing in as {}.", acc.spec.mailbox);
            Ok(())
        }
        AccountCommand::List { json } => {
            let accounts = store.list_accounts().await?;
            let apps = store.list_apps().await?;
            let app_name = |id| {
                apps.iter()
                    .find(|a| a.id == id)
                    .map(|a| a.spec.name.to_string())
                    .unwrap_or_default()
            };
            if json {
                let list: Vec<_> = accounts
                    .iter()
                    .map(|a| views::account_json(a, &app_name(a.spec.app_id)))
                    .collect();
                return views::print_json(&list);
            }
            if accounts.is_empty() {
                out!(
                    "No accounts yet. Add one with `mailgate account add --name N --app APP --email ADDRESS`."
                );
            }
            for a in &accounts {
                out!(
                    "{:>4}  {:<24} {:<16} {:<32} {}",
                    a.id,
                    a.spec.name.as_str(),
                    a.state,
                    a.spec.mailbox,
                    app_name(a.spec.app_id)
                );
            }
            Ok(())
        }
        AccountCommand::Show { account, json } => {
            let acc = store.find_account(&account).await?;
            let app = store.app(acc.spec.app_id).await?;
            if json {
                return views::print_json(&views::account_json(&acc, app.spec.name.as_str()));
            }
            views::print_account(&acc, app.spec.name.as_str());
            Ok(())
        }
        AccountCommand::Update(args) => {
            let current = store.find_account(&args.account).await?;
            let app = match &args.app {
                Some(a) => store
                    .find_app(a)
                    .await
                    .map_err(|e| Failure::BadInput(format!("--app: {e}")))?,
                None => store.app(current.spec.app_id).await?,
            };
            let acc = changes::update_account(
                store,
                &current,
                account_changes(args)?,
                &app,
                true,
                clock.now(),
            )
            .await?;
            views::print_account(&acc, app.spec.name.as_str());
            Ok(())
        }
        AccountCommand::Remove { account } => {
            let acc = store.find_account(&account).await?;
            changes::remove_account(store, acc.id, clock.now()).await?;
            out!(
                "Removed account {:?} (id {}) and its grant.",
                acc.spec.name.as_str(),
                acc.id
            );
            Ok(())
        }
        AccountCommand::ProxyPassword { account, revoke } => {
            let acc = store.find_account(&account).await?;
            let name = acc.spec.name.as_str();
            if revoke {
                if store.revoke_proxy_password(acc.id, clock.now()).await? {
                    out!("Revoked the proxy password of account {name:?}.");
                    return Ok(());
                }
                return Err(Failure::BadInput(format!(
                    "account {name:?} has no proxy password to revoke"
                )));
            }
            // 24 random bytes: 192 bits, well above the 128 the proxy's fast hash relies on.
            let password = mailgate_oauth::random::token(24)?;
            store
                .set_proxy_password(
                    acc.id,
                    &mailgate_oauth::random::sha256_hex(&password),
                    clock.now(),
                )
                .await?;
            eprintln!(
                "Proxy password for account {name:?} (log in as {} or {name}). It is shown once; store it now:",
                acc.spec.mailbox
            );
            out!("{password}");
            Ok(())
        }
    }
}

fn read_signature(s: &AccountSettings) -> Result<Option<String>, Failure> {
    s.signature_file
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p).map_err(|e| {
                Failure::BadInput(format!(
                    "--signature-file: cannot read {}: {e}",
                    p.display()
                ))
            })
        })
        .transpose()
}

fn settings_input(s: AccountSettings) -> Result<AccountSettingsInput, Failure> {
    Ok(AccountSettingsInput {
        signature: read_signature(&s)?,
        description: s.description,
        shared_mailbox: s.shared_mailbox,
        aliases: s.aliases,
        inbound: s.inbound,
        inbound_host: s.inbound_host,
        inbound_port: s.inbound_port,
        inbound_tls: s.inbound_tls,
        outbound: s.outbound,
        smtp_host: s.smtp_host,
        smtp_port: s.smtp_port,
        smtp_tls: s.smtp_tls,
        from_name: s.from_name,
        reply_to: s.reply_to,
        on_received: s.on_received,
        delegate: s.delegate,
        send_on_behalf: s.send_on_behalf,
        clear_delegate: s.no_delegate,
    })
}

fn new_account(a: AccountAdd) -> Result<NewAccount, Failure> {
    Ok(NewAccount {
        name: a.name,
        email: a.email,
        enabled: !a.disabled,
        settings: settings_input(a.settings)?,
    })
}

fn account_changes(u: AccountUpdate) -> Result<AccountChanges, Failure> {
    let enabled = if u.enable {
        Some(true)
    } else if u.disable {
        Some(false)
    } else {
        None
    };
    Ok(AccountChanges {
        name: u.name,
        email: u.email,
        enabled,
        settings: settings_input(u.settings)?,
    })
}
