//! `mailgate account ...`

use crate::cli::{AccountAdd, AccountCommand, AccountSettings, AccountUpdate, InboundChoice};
use crate::{CmdResult, Failure, views};
use mailgate_core::account::{
    AccountSpec, Inbound, InboundProtocol, OnReceived, Outbound, ServerEndpoint,
};
use mailgate_core::{Clock, OAuthApp, Port, preset};
use mailgate_store::Store;

pub async fn run(cmd: AccountCommand, store: &Store, clock: &dyn Clock) -> CmdResult {
    match cmd {
        AccountCommand::Add(args) => {
            let app = store
                .find_app(&args.app)
                .await
                .map_err(|e| Failure::BadInput(format!("--app: {e}")))?;
            let spec = spec_from_add(args, &app)?;
            spec.check()?;
            let acc = store.create_account(&spec, clock.now()).await?;
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
            let spec = spec_from_update(current.spec.clone(), args, &app)?;
            spec.check()?;
            let acc = store.update_account(current.id, &spec, clock.now()).await?;
            views::print_account(&acc, app.spec.name.as_str());
            Ok(())
        }
        AccountCommand::Remove { account } => {
            let acc = store.find_account(&account).await?;
            store.remove_account(acc.id, clock.now()).await?;
            out!(
                "Removed account {:?} (id {}) and its grant.",
                acc.spec.name.as_str(),
                acc.id
            );
            Ok(())
        }
    }
}

/// Builds a server endpoint from the preset (if any) and the overrides. A changed TLS mode
/// without a port picks that mode's usual port.
fn server(
    flag: &str,
    proto: &str,
    preset: Option<ServerEndpoint>,
    host: Option<mailgate_core::Host>,
    port: Option<Port>,
    tls: Option<mailgate_core::TlsMode>,
) -> Result<ServerEndpoint, Failure> {
    let tls_changed = tls.is_some() && tls != preset.as_ref().map(|p| p.tls);
    match (preset, host) {
        (Some(p), host) => {
            let tls = tls.unwrap_or(p.tls);
            let port = match port {
                Some(port) => port,
                None if tls_changed => Port::new(preset::default_port(proto, tls))
                    .map_err(|e| Failure::BadInput(e.to_string()))?,
                None => p.port,
            };
            Ok(ServerEndpoint {
                host: host.unwrap_or(p.host),
                port,
                tls,
            })
        }
        (None, Some(host)) => {
            let tls = tls.unwrap_or(mailgate_core::TlsMode::Implicit);
            let port = match port {
                Some(p) => p,
                None => Port::new(preset::default_port(proto, tls))
                    .map_err(|e| Failure::BadInput(e.to_string()))?,
            };
            Ok(ServerEndpoint { host, port, tls })
        }
        (None, None) => Err(Failure::BadInput(format!(
            "--{flag}-host: this app's kind has no preset server; give the host (and --{flag}-port, --{flag}-tls)"
        ))),
    }
}

fn inbound(
    app: &OAuthApp,
    proto: InboundProtocol,
    current: Option<&Inbound>,
    s: &AccountSettings,
) -> Result<Inbound, Failure> {
    let base = current
        .filter(|c| c.protocol == proto)
        .map(|c| c.server.clone())
        .or_else(|| preset::inbound(app.spec.kind, proto).map(|i| i.server));
    let server = server(
        "inbound",
        proto.as_str(),
        base,
        s.inbound_host.clone(),
        s.inbound_port,
        s.inbound_tls,
    )?;
    Ok(Inbound {
        protocol: proto,
        server,
    })
}

fn outbound(
    app: &OAuthApp,
    current: Option<&Outbound>,
    s: &AccountSettings,
) -> Result<Outbound, Failure> {
    let base = current
        .map(|c| c.server.clone())
        .or_else(|| preset::outbound(app.spec.kind, app.spec.tenant.as_ref()).map(|o| o.server));
    let server = server(
        "smtp",
        "smtp",
        base,
        s.smtp_host.clone(),
        s.smtp_port,
        s.smtp_tls,
    )?;
    Ok(Outbound { server })
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

fn reject_orphan_options(
    inbound_on: bool,
    outbound_on: bool,
    s: &AccountSettings,
) -> Result<(), Failure> {
    if !inbound_on
        && (s.inbound_host.is_some() || s.inbound_port.is_some() || s.inbound_tls.is_some())
    {
        return Err(Failure::BadInput("--inbound-host/--inbound-port/--inbound-tls: the account has no inbound protocol; add --inbound imap or pop3".into()));
    }
    if !outbound_on && (s.smtp_host.is_some() || s.smtp_port.is_some() || s.smtp_tls.is_some()) {
        return Err(Failure::BadInput("--smtp-host/--smtp-port/--smtp-tls: the account has no outbound SMTP; add --outbound smtp".into()));
    }
    Ok(())
}

fn spec_from_add(a: AccountAdd, app: &OAuthApp) -> Result<AccountSpec, Failure> {
    let s = &a.settings;
    let inbound_choice = s
        .inbound
        .unwrap_or(InboundChoice::Proto(InboundProtocol::Imap));
    let outbound_on = s.outbound.unwrap_or(true);
    reject_orphan_options(inbound_choice != InboundChoice::None, outbound_on, s)?;
    let inbound = match inbound_choice {
        InboundChoice::None => None,
        InboundChoice::Proto(p) => Some(inbound(app, p, None, s)?),
    };
    let outbound = if outbound_on {
        Some(outbound(app, None, s)?)
    } else {
        None
    };
    Ok(AccountSpec {
        name: a.name,
        description: s.description.clone().unwrap_or_default(),
        enabled: !a.disabled,
        mailbox: a.email,
        shared_mailbox: s.shared_mailbox.clone(),
        aliases: s.aliases.clone(),
        app_id: app.id,
        inbound,
        outbound,
        from_name: s.from_name.clone().filter(|n| !n.trim().is_empty()),
        reply_to: s.reply_to.clone(),
        signature: read_signature(s)?,
        on_received: s.on_received.clone().unwrap_or(OnReceived::None),
    })
}

fn spec_from_update(
    mut spec: AccountSpec,
    u: AccountUpdate,
    app: &OAuthApp,
) -> Result<AccountSpec, Failure> {
    let s = &u.settings;
    if let Some(n) = u.name {
        spec.name = n;
    }
    if let Some(e) = u.email {
        spec.mailbox = e;
    }
    let app_changed = app.id != spec.app_id;
    spec.app_id = app.id;
    if u.enable {
        spec.enabled = true;
    }
    if u.disable {
        spec.enabled = false;
    }
    if let Some(d) = &s.description {
        spec.description = d.clone();
    }
    if let Some(m) = &s.shared_mailbox {
        spec.shared_mailbox = Some(m.clone());
    }
    if !s.aliases.is_empty() {
        spec.aliases = s.aliases.clone();
    }
    let inbound_on = match s.inbound {
        Some(InboundChoice::None) => false,
        Some(InboundChoice::Proto(_)) => true,
        None => spec.inbound.is_some(),
    };
    let outbound_on = s.outbound.unwrap_or(spec.outbound.is_some());
    reject_orphan_options(inbound_on, outbound_on, s)?;
    // Moving to another app re-applies that app's presets unless hosts are given.
    let keep_in = if app_changed {
        None
    } else {
        spec.inbound.clone()
    };
    let keep_out = if app_changed {
        None
    } else {
        spec.outbound.clone()
    };
    spec.inbound = match s.inbound {
        Some(InboundChoice::None) => None,
        Some(InboundChoice::Proto(p)) => Some(inbound(app, p, keep_in.as_ref(), s)?),
        None => match keep_in.as_ref().or(spec.inbound.as_ref()) {
            Some(cur) => Some(inbound(app, cur.protocol, keep_in.as_ref(), s)?),
            None => None,
        },
    };
    spec.outbound = if outbound_on {
        Some(outbound(app, keep_out.as_ref(), s)?)
    } else {
        None
    };
    if let Some(n) = &s.from_name {
        spec.from_name = Some(n.clone()).filter(|n| !n.trim().is_empty());
    }
    if let Some(r) = &s.reply_to {
        spec.reply_to = Some(r.clone());
    }
    if let Some(sig) = read_signature(s)? {
        spec.signature = Some(sig);
    }
    if let Some(o) = &s.on_received {
        spec.on_received = o.clone();
    }
    Ok(spec)
}
