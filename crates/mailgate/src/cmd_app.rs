//! `mailgate app ...`

use crate::cli::{AppAdd, AppCommand, AppUpdate, EndpointOverrides, SecretInput};
use crate::config::Config;
use crate::{CmdResult, Failure, views};
use mailgate_core::app::AppKind;
use mailgate_core::input::{AppChanges, EndpointInput, NewApp};
use mailgate_core::{Clock, Secret};
use mailgate_grants::Engine;
use mailgate_usecase::{ChangeError, changes};
use std::io::{IsTerminal, Read};

pub async fn run(
    cmd: AppCommand,
    engine: &Engine,
    config: &Config,
    clock: &dyn Clock,
) -> CmdResult {
    let store = engine.store();
    let public_url = config.public_url_for(config.listen);
    match cmd {
        AppCommand::Add(args) => {
            let app = changes::create_app(engine, new_app(args)?, clock.now()).await?;
            if app.spec.client_secret.is_none() && app.spec.kind == AppKind::Microsoft {
                eprintln!(
                    "note: no client secret stored; this only works if the app registration allows public client flows"
                );
            }
            views::print_app(&app, &public_url, clock);
            Ok(())
        }
        AppCommand::List { json } => {
            let apps = store.list_apps().await?;
            if json {
                let list: Vec<_> = apps
                    .iter()
                    .map(|a| views::app_json(a, &public_url, clock))
                    .collect();
                return views::print_json(&list);
            }
            if apps.is_empty() {
                out!(
                    "No apps yet. Add one with `mailgate app add --kind microsoft|google|generic ...`."
                );
            }
            for a in &apps {
                let expiry = match a.spec.secret_expires.map(|d| crate::days_until(clock, d)) {
                    Some(d) if d < 0 => "  SECRET EXPIRED".to_owned(),
                    Some(d) if d <= 30 => format!("  secret expires in {d} day(s)"),
                    _ => String::new(),
                };
                out!(
                    "{:>4}  {:<24} {:<10} {}{}",
                    a.id,
                    a.spec.name.as_str(),
                    a.spec.kind,
                    a.spec.client_id,
                    expiry
                );
            }
            Ok(())
        }
        AppCommand::Show { app, json } => {
            let app = store.find_app(&app).await?;
            if json {
                return views::print_json(&views::app_json(&app, &public_url, clock));
            }
            views::print_app(&app, &public_url, clock);
            Ok(())
        }
        AppCommand::Update(args) => {
            let current = store.find_app(&args.app).await?;
            let app = changes::update_app(engine, current, app_changes(args)?, clock.now())
                .await
                .map_err(|e| match e {
                    // The secret is never a flag's value: name the two ways to give it.
                    ChangeError::Field(e) if e.field == "client_secret" => {
                        Failure::BadInput(format!(
                            "--client-secret-stdin or --client-secret-file: {}",
                            e.message
                        ))
                    }
                    other => Failure::from(other),
                })?;
            views::print_app(&app, &public_url, clock);
            Ok(())
        }
        AppCommand::Remove { app } => {
            let found = store.find_app(&app).await?;
            changes::remove_app(store, found.id, clock.now()).await?;
            out!(
                "Removed app {:?} (id {}).",
                found.spec.name.as_str(),
                found.id
            );
            Ok(())
        }
    }
}

/// Reads the secret from stdin or a file. Never from an argument.
fn read_secret(input: &SecretInput) -> Result<Option<Secret>, Failure> {
    let text = if input.client_secret_stdin {
        let mut stdin = std::io::stdin();
        if stdin.is_terminal() {
            eprint!(
                "Client secret (the secret's Value, not its Secret ID), then Enter and Ctrl-D: "
            );
        }
        let mut s = String::new();
        stdin.read_to_string(&mut s).map_err(|e| {
            Failure::BadInput(format!(
                "--client-secret-stdin: cannot read standard input: {e}"
            ))
        })?;
        s
    } else if let Some(path) = &input.client_secret_file {
        std::fs::read_to_string(path).map_err(|e| {
            Failure::BadInput(format!(
                "--client-secret-file: cannot read {}: {e}",
                path.display()
            ))
        })?
    } else {
        return Ok(None);
    };
    let flag = if input.client_secret_stdin {
        "--client-secret-stdin"
    } else {
        "--client-secret-file"
    };
    let secret = mailgate_core::input::client_secret(&text)
        .map_err(|e| Failure::BadInput(format!("{flag}: {e}")))?;
    Ok(Some(secret))
}

/// Reads and checks a Google service-account JSON key file; the whole file is the secret.
fn read_service_account_key(path: &std::path::Path) -> Result<Secret, Failure> {
    let flag = "--service-account-key-file";
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::BadInput(format!("{flag}: cannot read {}: {e}", path.display())))?;
    mailgate_core::input::service_account_key(&text)
        .map_err(|e| Failure::BadInput(format!("{flag}: {}: {e}", path.display())))
}

fn endpoint_input(o: EndpointOverrides) -> EndpointInput {
    EndpointInput {
        authority: o.authority,
        authorize_url: o.authorize_url,
        token_url: o.token_url,
        device_url: o.device_url,
        jwks_url: o.jwks_url,
        userinfo_url: o.userinfo_url,
        revoke_url: o.revoke_url,
        issuer: o.issuer,
        scopes: o.scopes,
        params: o.params,
    }
}

/// The app asked for; `changes::create_app` discovers a generic app's endpoints and checks it.
fn new_app(a: AppAdd) -> Result<NewApp, Failure> {
    Ok(NewApp {
        client_secret: read_secret(&a.secret)?,
        service_account_key: a
            .service_account_key_file
            .as_deref()
            .map(read_service_account_key)
            .transpose()?,
        name: a.name,
        kind: a.kind,
        tenant: a.tenant,
        client_id: a.client_id,
        secret_expires: a.secret_expires,
        flow: a.flow,
        endpoints: endpoint_input(a.endpoints),
    })
}

fn app_changes(u: AppUpdate) -> Result<AppChanges, Failure> {
    Ok(AppChanges {
        client_secret: read_secret(&u.secret)?,
        service_account_key: u
            .service_account_key_file
            .as_deref()
            .map(read_service_account_key)
            .transpose()?,
        name: u.name,
        tenant: u.tenant,
        client_id: u.client_id,
        clear_secret: u.clear_secret,
        secret_expires: u.secret_expires,
        flow: u.flow,
        reset_endpoints: u.reset_endpoints,
        endpoints: endpoint_input(u.endpoints),
    })
}
