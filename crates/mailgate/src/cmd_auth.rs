//! `mailgate authorize` and `mailgate token`.

use crate::config::Config;
use crate::{CmdResult, Failure, views};
use mailgate_core::app::OAuthFlow;
use mailgate_core::event::EventKind;
use mailgate_grants::Engine;
use std::time::Duration;

pub async fn authorize(
    engine: &Engine,
    config: &Config,
    account: &str,
    device: bool,
    no_wait: bool,
) -> CmdResult {
    let store = engine.store();
    let acc = store.find_account(account).await?;
    let app = store.app(acc.spec.app_id).await?;
    let done = match (app.spec.flow, device) {
        (OAuthFlow::ClientCredentials | OAuthFlow::ServiceAccount, _) => {
            engine.authorize_app_only(acc.id, "cli").await?
        }
        (_, true) | (OAuthFlow::DeviceCode, _) => {
            let d = engine.start_device(acc.id).await?;
            // One stable line on stdout for scripts; the provider's own wording on stderr.
            out!(
                "Open {} and enter the code {}",
                d.verification_uri,
                d.user_code
            );
            if let Some(m) = &d.message {
                eprintln!("{m}");
            }
            eprintln!(
                "Sign in as {}. Waiting (the code is valid for {} minutes)…",
                acc.spec.mailbox,
                d.expires_in / 60
            );
            engine.finish_device(acc.id, &d, "cli").await?
        }
        (OAuthFlow::AuthorizationCode, false) => {
            let public_url = config.public_url_for(config.listen);
            let redirect_uri = mailgate_web::redirect_uri(&public_url);
            let last_event = store
                .events(Some(acc.id), 1)
                .await?
                .first()
                .map(|e| e.id)
                .unwrap_or(0);
            let started = engine
                .start_authorization(acc.id, "cli", &redirect_uri)
                .await?;
            out!("{}", started.url);
            eprintln!(
                "Open the link above in a browser and sign in as {}. If the browser is signed in as someone else, sign out first or use a private window.\nThe running mailgate server at {public_url} receives the answer; the link is valid until {}.",
                started.sign_in_as, started.expires_at
            );
            if no_wait {
                return Ok(());
            }
            return wait_for_callback(engine, acc.id, last_event, started.expires_at).await;
        }
    };
    out!(
        "Account {} is authorized as {} and is now {}.",
        done.account_name,
        done.signed_in_as,
        done.state
    );
    Ok(())
}

/// Waits for the server to record the outcome of the callback as an event.
async fn wait_for_callback(
    engine: &Engine,
    id: mailgate_core::AccountId,
    after_event: i64,
    until: mailgate_core::Timestamp,
) -> CmdResult {
    let store = engine.store();
    loop {
        for e in store
            .events(Some(id), 20)
            .await?
            .into_iter()
            .rev()
            .filter(|e| e.id > after_event)
        {
            match e.kind {
                EventKind::AccountAuthorized => {
                    out!("{}", e.message);
                    return Ok(());
                }
                EventKind::AuthorizationFailed => return Err(Failure::Runtime(e.message)),
                _ => {}
            }
        }
        let now = mailgate_core::Clock::now(&mailgate_core::SystemClock);
        if now > until {
            return Err(Failure::Runtime(
                "no answer arrived within 10 minutes; is `mailgate serve` running at the public URL, and is that URL registered as the redirect URI?".into(),
            ));
        }
        // Another process (the server) writes the event; poll the database.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn token(engine: &Engine, account: &str, json: bool) -> CmdResult {
    let acc = engine.store().find_account(account).await?;
    let t = engine.access_token_of(acc).await?;
    if json {
        return views::print_json(&serde_json::json!({
            "access_token": t.access_token.expose(),
            "token_type": "Bearer",
            "expires_at": t.expires_at.map(|e| e.rfc3339()),
            "scopes": t.scopes.iter().collect::<Vec<_>>(),
            "refreshed": t.refreshed,
        }));
    }
    out!("{}", t.access_token.expose());
    Ok(())
}

pub async fn test(
    engine: &Engine,
    config: &Config,
    account: &str,
    opts: &mailgate_mail::check::CheckOptions,
    json: bool,
) -> CmdResult {
    use mailgate_mail::check::StepStatus;
    let acc = engine.store().find_account(account).await?;
    let tls = mailgate_mail::TlsSettings::new(config.extra_ca_file.as_deref())
        .map_err(|e| Failure::BadInput(format!("MAILGATE_EXTRA_CA_FILE: {e}")))?;
    let report =
        mailgate_mail::check::run(engine, &mailgate_core::SystemClock, &tls, &acc, opts).await;
    mailgate_web::test_runs::keep_result(
        engine.store(),
        &acc,
        &report,
        mailgate_core::Clock::now(&mailgate_core::SystemClock),
    )
    .await;
    if json {
        views::print_json(&report)?;
    } else {
        out!("Testing account {} ({})", acc.spec.name, acc.spec.mailbox);
        for s in &report.steps {
            let mark = match s.status {
                StepStatus::Ok => "ok  ",
                StepStatus::Failed => "FAIL",
                StepStatus::Skipped => "skip",
                StepStatus::Warning => "warn",
            };
            out!(
                "  {mark} {:<44} {:>6} ms  {}",
                s.name,
                s.duration_ms,
                s.detail
            );
            if let Some(says) = &s.server_says {
                out!("       server said: {says}");
            }
            if let Some(r) = &s.remediation {
                out!("       what to do [{}]: {}", r.code, r.text);
            }
        }
        out!(
            "{} in {} ms",
            if report.ok {
                "All steps passed"
            } else {
                "FAILED"
            },
            report.duration_ms
        );
    }
    if report.ok {
        Ok(())
    } else {
        let code = report
            .first_failure()
            .and_then(|s| s.remediation.as_ref())
            .map(|r| r.code.clone())
            .unwrap_or_default();
        Err(Failure::Runtime(format!(
            "the test of account {} failed [{code}]",
            acc.spec.name
        )))
    }
}
