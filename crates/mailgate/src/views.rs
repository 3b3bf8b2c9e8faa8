//! What the CLI prints. Built by hand from the domain types so that a secret can only
//! appear as its hint ("set (…4f2a)"): nothing here serialises a `Secret`. `--json` prints
//! the views of `mailgate-usecase`, the same as the API's answers.

use crate::{CmdResult, Failure};
use mailgate_core::account::MailAccount;
use mailgate_core::{Clock, HttpUrl, OAuthApp};
use mailgate_usecase::{AccountView, AppView};
use serde::Serialize;

pub fn print_json<T: Serialize + ?Sized>(value: &T) -> CmdResult {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::Runtime(e.to_string()))?;
    out!("{text}");
    Ok(())
}

pub use mailgate_usecase::views::redirect_uri;

/// The app as `--json` shows it: the same view as the API's.
pub fn app_json(app: &OAuthApp, public_url: &HttpUrl, clock: &dyn Clock) -> AppView {
    AppView::new(app, public_url, clock.now().date())
}

fn expiry_note(days: i64) -> String {
    match days {
        d if d < 0 => format!(
            "EXPIRED {} day(s) ago: create a new secret and run `mailgate app update`",
            -d
        ),
        0 => "expires TODAY".into(),
        d if d <= 30 => format!("expires in {d} day(s): create a new secret soon"),
        d => format!("in {d} days"),
    }
}

pub fn print_app(app: &OAuthApp, public_url: &HttpUrl, clock: &dyn Clock) {
    let s = &app.spec;
    let e = &s.endpoints;
    out!("App {:?} (id {})", s.name.as_str(), app.id);
    out!("  kind:            {}", s.kind);
    if let Some(t) = &s.tenant {
        out!("  tenant:          {t}");
    }
    out!("  client id:       {}", s.client_id);
    out!(
        "  client secret:   {}",
        s.client_secret
            .as_ref()
            .map(|x| x.hint())
            .unwrap_or_else(|| "not set".into())
    );
    if let Some(d) = s.secret_expires {
        out!(
            "  secret expires:  {d} ({})",
            expiry_note(crate::days_until(clock, d))
        );
    }
    out!("  flow:            {}", s.flow);
    out!("  redirect URI:    {}", redirect_uri(public_url));
    out!("                   register exactly this URI at the provider (platform \"Web\")");
    let opt = |u: &Option<HttpUrl>| {
        u.as_ref()
            .map(|u| u.to_string())
            .unwrap_or_else(|| "-".into())
    };
    out!("  authorize URL:   {}", opt(&e.authorize));
    out!("  token URL:       {}", e.token);
    out!("  device URL:      {}", opt(&e.device));
    out!("  JWKS URL:        {}", opt(&e.jwks));
    if e.userinfo.is_some() {
        out!("  userinfo URL:    {}", opt(&e.userinfo));
    }
    if e.revoke.is_some() {
        out!("  revoke URL:      {}", opt(&e.revoke));
    }
    if let Some(i) = &e.issuer {
        out!("  issuer:          {i}");
    }
    out!("  scopes:          {}", s.scopes);
    for (k, v) in &s.extra_params {
        out!("  extra parameter: {k}={v}");
    }
}

/// The account as `--json` shows it: the same view as the API's.
pub fn account_json(acc: &MailAccount, app_name: &str) -> AccountView {
    AccountView::new(acc, app_name)
}

pub fn print_account(acc: &MailAccount, app_name: &str) {
    let s = &acc.spec;
    out!("Account {:?} (id {})", s.name.as_str(), acc.id);
    out!(
        "  state:           {}{}",
        acc.state,
        if s.enabled { "" } else { " (disabled)" }
    );
    if let Some(p) = &acc.last_problem {
        out!(
            "  last problem:    {} [{}] at {}",
            p.remediation,
            p.code,
            p.at
        );
        if let Some(d) = &p.detail {
            out!("                   provider said: {d}");
        }
    }
    out!("  mailbox:         {}", s.access_summary());
    if s.send_on_behalf {
        out!(
            "  sends:           on behalf (Sender: {})",
            s.sign_in_user()
        );
    }
    if let Some(m) = &s.shared_mailbox {
        out!("  shared mailbox:  {m}");
    }
    for a in &s.aliases {
        out!("  alias:           {a}");
    }
    out!("  app:             {app_name} (id {})", s.app_id);
    match &s.inbound {
        Some(i) => out!("  inbound:         {} {}", i.protocol, i.server),
        None => out!("  inbound:         none"),
    }
    match &s.outbound {
        Some(o) => out!("  outbound:        smtp {}", o.server),
        None => out!("  outbound:        none"),
    }
    if let Some(n) = &s.from_name {
        out!("  from name:       {n}");
    }
    if let Some(r) = &s.reply_to {
        out!("  reply-to:        {r}");
    }
    if let Some(sig) = &s.signature {
        out!("  signature:       {} line(s)", sig.lines().count());
    }
    out!("  on received:     {}", s.on_received);
    if !s.description.is_empty() {
        out!("  description:     {}", s.description);
    }
}
