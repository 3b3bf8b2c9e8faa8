//! `mailgate app ...`

use crate::cli::{AppAdd, AppCommand, AppUpdate, EndpointOverrides, SecretInput};
use crate::config::Config;
use crate::{CmdResult, Failure, views};
use mailgate_core::app::{AppKind, AppSpec, Endpoints};
use mailgate_core::{Clock, HttpUrl, Secret, TenantId, preset};
use mailgate_store::Store;
use std::io::{IsTerminal, Read};

pub async fn run(cmd: AppCommand, store: &Store, config: &Config, clock: &dyn Clock) -> CmdResult {
    let public_url = config.public_url_for(config.listen);
    match cmd {
        AppCommand::Add(args) => {
            let spec = spec_from_add(args)?;
            spec.check()?;
            let app = store.create_app(&spec, clock.now()).await?;
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
            let (spec, clear_secret) = spec_from_update(current.spec.clone(), args)?;
            spec.check()?;
            let app = store
                .update_app(current.id, &spec, clear_secret, clock.now())
                .await?;
            views::print_app(&app, &public_url, clock);
            Ok(())
        }
        AppCommand::Remove { app } => {
            let found = store.find_app(&app).await?;
            store.remove_app(found.id, clock.now()).await?;
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
    let secret = Secret::parse("client secret", &text)
        .map_err(|e| Failure::BadInput(format!("{flag}: {e}")))?;
    if looks_like_guid(secret.expose()) {
        // AADSTS7000215 in advance: Microsoft shows a Secret ID (a GUID) beside the Value.
        return Err(Failure::BadInput(format!(
            "{flag}: this looks like the secret's ID (a GUID), not its Value; copy the Value column from \"Certificates & secrets\" (it is shown only once, right after creation)"
        )));
    }
    Ok(Some(secret))
}

/// Reads and checks a Google service-account JSON key file; the whole file is the secret.
fn read_service_account_key(path: &std::path::Path) -> Result<Secret, Failure> {
    let flag = "--service-account-key-file";
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::BadInput(format!("{flag}: cannot read {}: {e}", path.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
        Failure::BadInput(format!(
            "{flag}: {} is not JSON; download the key as JSON from the service account's Keys tab",
            path.display()
        ))
    })?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).filter(|x| !x.is_empty());
    if field("type") != Some("service_account")
        || field("client_email").is_none()
        || field("private_key").is_none()
    {
        return Err(Failure::BadInput(format!(
            "{flag}: {} is not a service-account key (expected type \"service_account\" with client_email and private_key)",
            path.display()
        )));
    }
    Ok(Secret::new(text))
}

fn looks_like_guid(s: &str) -> bool {
    mailgate_core::ClientId::parse(s).is_ok_and(|c| c.is_guid())
}

/// Fills the kind's preset endpoints, then applies the explicit overrides.
fn endpoints(
    kind: AppKind,
    tenant: Option<&TenantId>,
    authority: Option<&HttpUrl>,
    base: Option<Endpoints>,
    o: &EndpointOverrides,
) -> Result<Endpoints, Failure> {
    let preset = match base {
        Some(e) => Some(e),
        None => preset::endpoints(kind, tenant, authority)
            .map_err(|e| Failure::BadInput(format!("--authority: {e}")))?,
    };
    let mut e = match (preset, &o.token_url) {
        (Some(e), _) => e,
        (None, Some(token)) => Endpoints {
            authorize: None,
            token: token.clone(),
            device: None,
            jwks: None,
            userinfo: None,
            revoke: None,
            issuer: None,
        },
        (None, None) => {
            return Err(Failure::BadInput("--token-url: a generic app has no preset; give at least --token-url (and --authorize-url for the browser flow)".into()));
        }
    };
    let set = |slot: &mut Option<HttpUrl>, v: &Option<HttpUrl>| {
        if let Some(v) = v {
            *slot = Some(v.clone());
        }
    };
    set(&mut e.authorize, &o.authorize_url);
    set(&mut e.device, &o.device_url);
    set(&mut e.jwks, &o.jwks_url);
    set(&mut e.userinfo, &o.userinfo_url);
    set(&mut e.revoke, &o.revoke_url);
    if let Some(t) = &o.token_url {
        e.token = t.clone();
    }
    if let Some(i) = &o.issuer {
        e.issuer = Some(i.trim().to_owned());
    }
    Ok(e)
}

fn spec_from_add(a: AppAdd) -> Result<AppSpec, Failure> {
    if a.kind != AppKind::Microsoft && a.tenant.is_some() {
        return Err(Failure::BadInput(
            "--tenant: only Microsoft apps have a tenant".into(),
        ));
    }
    if a.kind == AppKind::Microsoft && a.tenant.is_none() {
        return Err(Failure::BadInput(
            "--tenant: a Microsoft app needs a tenant: the Directory (tenant) ID from the app registration's Overview page, a verified domain, or common / organizations / consumers".into(),
        ));
    }
    let endpoints = endpoints(
        a.kind,
        a.tenant.as_ref(),
        a.endpoints.authority.as_ref(),
        None,
        &a.endpoints,
    )?;
    let scopes = match a
        .endpoints
        .scopes
        .clone()
        .or_else(|| preset::scopes(a.kind, a.flow))
    {
        Some(s) => s,
        None => {
            return Err(Failure::BadInput(
                "--scopes: a generic app has no preset; give the scopes its mail server needs"
                    .into(),
            ));
        }
    };
    let secret = read_secret(&a.secret)?;
    let service_account_key = a
        .service_account_key_file
        .as_deref()
        .map(read_service_account_key)
        .transpose()?;
    Ok(AppSpec {
        service_account_key,
        name: a.name,
        kind: a.kind,
        tenant: a.tenant,
        client_id: a.client_id,
        client_secret: secret,
        secret_expires: a.secret_expires,
        endpoints,
        scopes,
        extra_params: a.endpoints.params,
        flow: a.flow,
    })
}

fn spec_from_update(mut s: AppSpec, u: AppUpdate) -> Result<(AppSpec, bool), Failure> {
    let tenant_changed = u.tenant.is_some() && u.tenant != s.tenant;
    if let Some(n) = u.name {
        s.name = n;
    }
    if let Some(t) = u.tenant {
        if s.kind != AppKind::Microsoft {
            return Err(Failure::BadInput(
                "--tenant: only Microsoft apps have a tenant".into(),
            ));
        }
        s.tenant = Some(t);
    }
    if let Some(c) = u.client_id {
        s.client_id = c;
    }
    if let Some(d) = u.secret_expires {
        s.secret_expires = Some(d);
    }
    let flow_changed = u.flow.is_some_and(|f| f != s.flow);
    if let Some(f) = u.flow {
        s.flow = f;
    }
    let recompute = u.reset_endpoints || tenant_changed || u.endpoints.authority.is_some();
    let base = if recompute {
        None
    } else {
        Some(s.endpoints.clone())
    };
    s.endpoints = endpoints(
        s.kind,
        s.tenant.as_ref(),
        u.endpoints.authority.as_ref(),
        base,
        &u.endpoints,
    )?;
    if let Some(sc) = u.endpoints.scopes.clone() {
        s.scopes = sc;
    } else if (u.reset_endpoints || flow_changed)
        && let Some(sc) = preset::scopes(s.kind, s.flow)
    {
        s.scopes = sc;
    }
    if !u.endpoints.params.is_empty() {
        s.extra_params = u.endpoints.params;
    }
    if let Some(path) = &u.service_account_key_file {
        s.service_account_key = Some(read_service_account_key(path)?);
    }
    // Not given: keep the stored secret (write-only; the administrator never sees it).
    if let Some(new) = read_secret(&u.secret)? {
        s.client_secret = Some(new);
    } else if u.clear_secret {
        s.client_secret = None;
    }
    Ok((s, u.clear_secret))
}
