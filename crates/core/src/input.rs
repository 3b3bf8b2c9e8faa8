//! What an administrator asks for, before it becomes a spec: the CLI's flags and the admin
//! forms both fill these, so the presets and the rules are applied in one place.
//!
//! Every value is already parsed (newtypes); what remains are the rules between fields,
//! reported as [`FieldError`]s that name the field (`tenant`, `token_url`, `inbound_host`…).

use crate::account::{AccountSpec, Inbound, InboundProtocol, OnReceived, Outbound, ServerEndpoint};
use crate::app::{AppKind, AppSpec, Endpoints, FieldError, OAuthApp, OAuthFlow, field_error};
use crate::{
    ClientId, EmailAddress, Host, HttpUrl, Invalid, Name, Port, Scopes, Secret, TenantId, TlsMode,
    preset,
};

/// A client secret as an administrator pastes it (CLI, API). Microsoft shows a Secret ID (a
/// GUID) beside the secret's Value; the ID is refused here instead of failing later at
/// sign-in with AADSTS7000215.
pub fn client_secret(text: &str) -> Result<Secret, Invalid> {
    let secret = Secret::parse("client secret", text)?;
    if ClientId::parse(secret.expose()).is_ok_and(|c| c.is_guid()) {
        return Err(Invalid::secret(
            "client secret",
            "this looks like the secret's ID (a GUID), not its Value; copy the Value column from \"Certificates & secrets\" (it is shown only once, right after creation)",
        ));
    }
    Ok(secret)
}

/// A Google service-account JSON key, the whole text being the secret: it must be JSON with
/// `type` `service_account`, a `client_email` and a `private_key`.
pub fn service_account_key(text: &str) -> Result<Secret, Invalid> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| {
        Invalid::secret(
            "service-account key",
            "it is not JSON; download the key as JSON from the service account's Keys tab",
        )
    })?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).filter(|x| !x.is_empty());
    if field("type") != Some("service_account")
        || field("client_email").is_none()
        || field("private_key").is_none()
    {
        return Err(Invalid::secret(
            "service-account key",
            "expected a JSON key with type \"service_account\", client_email and private_key",
        ));
    }
    Ok(Secret::new(text))
}

/// Endpoint and scope overrides; anything left `None` keeps the preset (or current) value.
#[derive(Debug, Clone, Default)]
pub struct EndpointInput {
    /// Replaces the provider's sign-in host (sovereign cloud, test identity provider).
    pub authority: Option<HttpUrl>,
    pub authorize_url: Option<HttpUrl>,
    pub token_url: Option<HttpUrl>,
    pub device_url: Option<HttpUrl>,
    pub jwks_url: Option<HttpUrl>,
    pub userinfo_url: Option<HttpUrl>,
    pub revoke_url: Option<HttpUrl>,
    pub issuer: Option<String>,
    pub scopes: Option<Scopes>,
    /// Replaces the extra authorize parameters when not empty.
    pub params: Vec<(String, String)>,
}

impl EndpointInput {
    /// The issuer whose discovery document should fill in this input: a generic app (the
    /// others have presets) given an issuer but not every endpoint it could need.
    pub fn issuer_to_discover(&self, kind: AppKind) -> Option<String> {
        let issuer = self
            .issuer
            .as_deref()
            .map(str::trim)
            .filter(|i| !i.is_empty())?;
        let incomplete = self.token_url.is_none()
            || self.authorize_url.is_none()
            || (self.jwks_url.is_none() && self.userinfo_url.is_none());
        (kind == AppKind::Generic && incomplete).then(|| issuer.to_owned())
    }

    /// Fills what was not given from the endpoints a provider's OpenID Connect discovery
    /// document states (fetched and checked by `mailgate_oauth::discovery`, which always
    /// sets the issuer); what was given wins, but the issuer is the document's.
    pub fn fill_from(&mut self, found: &Endpoints) {
        let fill = |slot: &mut Option<HttpUrl>, v: &Option<HttpUrl>| {
            if slot.is_none() {
                slot.clone_from(v);
            }
        };
        fill(&mut self.authorize_url, &found.authorize);
        fill(&mut self.token_url, &Some(found.token.clone()));
        fill(&mut self.device_url, &found.device);
        fill(&mut self.jwks_url, &found.jwks);
        fill(&mut self.userinfo_url, &found.userinfo);
        fill(&mut self.revoke_url, &found.revoke);
        if found.issuer.is_some() {
            self.issuer.clone_from(&found.issuer);
        }
    }

    /// The preset (or `base`) endpoints with the overrides applied.
    fn endpoints(
        &self,
        kind: AppKind,
        tenant: Option<&TenantId>,
        base: Option<Endpoints>,
    ) -> Result<Endpoints, FieldError> {
        let preset = match base {
            Some(e) => Some(e),
            None => preset::endpoints(kind, tenant, self.authority.as_ref())
                .map_err(|e| field_error("authority", e.to_string()))?,
        };
        let mut e = match (preset, &self.token_url) {
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
                return Err(field_error(
                    "token_url",
                    "a generic app has no preset; give its issuer (mailgate then reads the endpoints from the provider's discovery document), or at least the token URL (and the authorize URL for the browser flow)",
                ));
            }
        };
        let set = |slot: &mut Option<HttpUrl>, v: &Option<HttpUrl>| {
            if let Some(v) = v {
                *slot = Some(v.clone());
            }
        };
        set(&mut e.authorize, &self.authorize_url);
        set(&mut e.device, &self.device_url);
        set(&mut e.jwks, &self.jwks_url);
        set(&mut e.userinfo, &self.userinfo_url);
        set(&mut e.revoke, &self.revoke_url);
        if let Some(t) = &self.token_url {
            e.token = t.clone();
        }
        if let Some(i) = self
            .issuer
            .as_deref()
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            e.issuer = Some(i.to_owned());
        }
        Ok(e)
    }
}

const TENANT_NEEDED: &str = "a Microsoft app needs a tenant: the Directory (tenant) ID from the app registration's Overview page, a verified domain, or common / organizations / consumers";

/// A new app.
#[derive(Debug, Clone)]
pub struct NewApp {
    pub name: Name,
    pub kind: AppKind,
    pub tenant: Option<TenantId>,
    pub client_id: ClientId,
    pub client_secret: Option<Secret>,
    pub secret_expires: Option<time::Date>,
    pub flow: OAuthFlow,
    pub service_account_key: Option<Secret>,
    pub endpoints: EndpointInput,
}

impl NewApp {
    pub fn into_spec(self) -> Result<AppSpec, FieldError> {
        if self.kind != AppKind::Microsoft && self.tenant.is_some() {
            return Err(field_error("tenant", "only Microsoft apps have a tenant"));
        }
        if self.kind == AppKind::Microsoft && self.tenant.is_none() {
            return Err(field_error("tenant", TENANT_NEEDED));
        }
        let endpoints = self
            .endpoints
            .endpoints(self.kind, self.tenant.as_ref(), None)?;
        let scopes = self
            .endpoints
            .scopes
            .clone()
            .or_else(|| preset::scopes(self.kind, self.flow))
            .ok_or_else(|| {
                field_error(
                    "scopes",
                    "a generic app has no preset; give the scopes its mail server needs",
                )
            })?;
        let spec = AppSpec {
            name: self.name,
            kind: self.kind,
            tenant: self.tenant,
            client_id: self.client_id,
            client_secret: self.client_secret,
            secret_expires: self.secret_expires,
            service_account_key: self.service_account_key,
            endpoints,
            scopes,
            extra_params: self.endpoints.params,
            flow: self.flow,
        };
        spec.check()?;
        Ok(spec)
    }
}

/// Changes to an app; `None` keeps the current value. Secrets are write-only: not giving
/// one keeps the stored one.
#[derive(Debug, Clone, Default)]
pub struct AppChanges {
    pub name: Option<Name>,
    pub tenant: Option<TenantId>,
    pub client_id: Option<ClientId>,
    pub client_secret: Option<Secret>,
    pub clear_secret: bool,
    pub secret_expires: Option<time::Date>,
    pub flow: Option<OAuthFlow>,
    pub service_account_key: Option<Secret>,
    /// Recompute endpoints and scopes from the preset.
    pub reset_endpoints: bool,
    pub endpoints: EndpointInput,
}

impl AppChanges {
    /// The changed app, or the first rule broken. Moving an endpoint (`token_url`, an
    /// authority or tenant that derives new ones, …) while the app holds a client secret
    /// or service-account key needs that secret again in the same change: otherwise
    /// whoever may edit the app could send the stored secret to a server of their choosing.
    /// (The store drops the app's grants on such a change, so refresh tokens do not follow.)
    pub fn apply(self, current: AppSpec) -> Result<AppSpec, FieldError> {
        let secret_given = self.client_secret.is_some() || self.clear_secret;
        let key_given = self.service_account_key.is_some();
        let before = current.endpoints.clone();
        let had_secret = current.client_secret.is_some();
        let had_key = current.service_account_key.is_some();
        let changed = self.apply_unchecked(current)?;
        let moved = before.changed_destinations(&changed.endpoints);
        if moved.is_empty() {
            return Ok(changed);
        }
        let why = |what: &str| {
            format!(
                "changing {} changes where the app's {what} is sent; give the {what} again in the same change (the app's accounts then need authorizing again)",
                moved.join(", ")
            )
        };
        if had_secret && !secret_given {
            return Err(field_error("client_secret", why("client secret")));
        }
        if had_key && !key_given {
            return Err(field_error(
                "service_account_key",
                why("service-account key"),
            ));
        }
        Ok(changed)
    }

    fn apply_unchecked(mut self, mut s: AppSpec) -> Result<AppSpec, FieldError> {
        let tenant_changed = self.tenant.is_some() && self.tenant != s.tenant;
        // A new tenant recomputes the Microsoft endpoints: keep the sign-in host the app
        // has now (a sovereign cloud, a test identity provider) unless a new one is given.
        if tenant_changed && self.endpoints.authority.is_none() && s.kind == AppKind::Microsoft {
            self.endpoints.authority = microsoft_authority(&s.endpoints);
        }
        if let Some(n) = self.name {
            s.name = n;
        }
        if let Some(t) = self.tenant {
            if s.kind != AppKind::Microsoft {
                return Err(field_error("tenant", "only Microsoft apps have a tenant"));
            }
            s.tenant = Some(t);
        }
        if let Some(c) = self.client_id {
            s.client_id = c;
        }
        if let Some(d) = self.secret_expires {
            s.secret_expires = Some(d);
        }
        let flow_changed = self.flow.is_some_and(|f| f != s.flow);
        if let Some(f) = self.flow {
            s.flow = f;
        }
        let recompute =
            self.reset_endpoints || tenant_changed || self.endpoints.authority.is_some();
        let base = if recompute {
            None
        } else {
            Some(s.endpoints.clone())
        };
        s.endpoints = self.endpoints.endpoints(s.kind, s.tenant.as_ref(), base)?;
        if let Some(sc) = self.endpoints.scopes.clone() {
            s.scopes = sc;
        } else if (self.reset_endpoints || flow_changed)
            && let Some(sc) = preset::scopes(s.kind, s.flow)
        {
            s.scopes = sc;
        }
        if !self.endpoints.params.is_empty() {
            s.extra_params = self.endpoints.params;
        }
        if let Some(k) = self.service_account_key {
            s.service_account_key = Some(k);
        }
        if let Some(new) = self.client_secret {
            s.client_secret = Some(new);
        } else if self.clear_secret {
            s.client_secret = None;
        }
        s.check()?;
        Ok(s)
    }
}

/// The sign-in host of Microsoft endpoints built from a preset:
/// `https://login.microsoftonline.us/<tenant>/oauth2/v2.0/token` → `https://login.microsoftonline.us`.
/// `None` for endpoints set by hand in another shape.
fn microsoft_authority(e: &crate::app::Endpoints) -> Option<HttpUrl> {
    let before = e.token.as_str().strip_suffix("/oauth2/v2.0/token")?;
    let (authority, _tenant) = before.rsplit_once('/')?;
    HttpUrl::parse(authority).ok()
}

/// Inbound protocol choice, with `none` meaning "no inbound".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundChoice {
    None,
    Proto(InboundProtocol),
}

/// Account settings shared by creating and changing an account; `None` keeps (or, when
/// creating, defaults) the value.
#[derive(Debug, Clone, Default)]
pub struct AccountSettingsInput {
    pub description: Option<String>,
    pub shared_mailbox: Option<EmailAddress>,
    /// Replaces the aliases when not empty.
    pub aliases: Vec<EmailAddress>,
    pub inbound: Option<InboundChoice>,
    pub inbound_host: Option<Host>,
    pub inbound_port: Option<Port>,
    pub inbound_tls: Option<TlsMode>,
    /// `Some(false)`: no outbound SMTP.
    pub outbound: Option<bool>,
    pub smtp_host: Option<Host>,
    pub smtp_port: Option<Port>,
    pub smtp_tls: Option<TlsMode>,
    pub from_name: Option<String>,
    pub reply_to: Option<EmailAddress>,
    pub signature: Option<String>,
    pub on_received: Option<OnReceived>,
    /// Who signs in for a shared mailbox (see `AccountSpec::delegate`).
    pub delegate: Option<EmailAddress>,
    pub send_on_behalf: Option<bool>,
    /// Removes the delegate (the mailbox signs in itself again); wins over `delegate`.
    pub clear_delegate: bool,
}

/// A server from the preset (or current) one and the overrides. A changed TLS mode without
/// a port picks that mode's usual port.
fn server(
    field: &'static str,
    proto: &str,
    base: Option<ServerEndpoint>,
    host: Option<Host>,
    port: Option<Port>,
    tls: Option<TlsMode>,
) -> Result<ServerEndpoint, FieldError> {
    let usual = |tls: TlsMode| {
        Port::new(preset::default_port(proto, tls)).map_err(|e| field_error(field, e.to_string()))
    };
    let tls_changed = tls.is_some() && tls != base.as_ref().map(|p| p.tls);
    match (base, host) {
        (Some(p), host) => {
            let tls = tls.unwrap_or(p.tls);
            let port = match port {
                Some(port) => port,
                None if tls_changed => usual(tls)?,
                None => p.port,
            };
            Ok(ServerEndpoint {
                host: host.unwrap_or(p.host),
                port,
                tls,
            })
        }
        (None, Some(host)) => {
            let tls = tls.unwrap_or(TlsMode::Implicit);
            let port = match port {
                Some(p) => p,
                None => usual(tls)?,
            };
            Ok(ServerEndpoint { host, port, tls })
        }
        (None, None) => Err(field_error(
            field,
            "this app's kind has no preset server; give the host (and port and TLS mode)",
        )),
    }
}

impl AccountSettingsInput {
    fn reject_orphans(&self, inbound_on: bool, outbound_on: bool) -> Result<(), FieldError> {
        if !inbound_on
            && (self.inbound_host.is_some()
                || self.inbound_port.is_some()
                || self.inbound_tls.is_some())
        {
            return Err(field_error(
                "inbound_host",
                "the account has no inbound protocol; choose imap or pop3 first",
            ));
        }
        if !outbound_on
            && (self.smtp_host.is_some() || self.smtp_port.is_some() || self.smtp_tls.is_some())
        {
            return Err(field_error(
                "smtp_host",
                "the account has no outbound SMTP; choose smtp first",
            ));
        }
        Ok(())
    }

    fn inbound(
        &self,
        app: &OAuthApp,
        proto: InboundProtocol,
        current: Option<&Inbound>,
    ) -> Result<Inbound, FieldError> {
        let base = current
            .filter(|c| c.protocol == proto)
            .map(|c| c.server.clone())
            .or_else(|| preset::inbound(app.spec.kind, proto).map(|i| i.server));
        let server = server(
            "inbound_host",
            proto.as_str(),
            base,
            self.inbound_host.clone(),
            self.inbound_port,
            self.inbound_tls,
        )?;
        Ok(Inbound {
            protocol: proto,
            server,
        })
    }

    fn outbound(&self, app: &OAuthApp, current: Option<&Outbound>) -> Result<Outbound, FieldError> {
        let base = current.map(|c| c.server.clone()).or_else(|| {
            preset::outbound(app.spec.kind, app.spec.tenant.as_ref()).map(|o| o.server)
        });
        let server = server(
            "smtp_host",
            "smtp",
            base,
            self.smtp_host.clone(),
            self.smtp_port,
            self.smtp_tls,
        )?;
        Ok(Outbound { server })
    }
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub name: Name,
    pub email: EmailAddress,
    pub enabled: bool,
    pub settings: AccountSettingsInput,
}

impl NewAccount {
    /// Inbound defaults to IMAP and outbound to SMTP, from the app's presets.
    pub fn into_spec(self, app: &OAuthApp) -> Result<AccountSpec, FieldError> {
        let s = &self.settings;
        let inbound_choice = s
            .inbound
            .unwrap_or(InboundChoice::Proto(InboundProtocol::Imap));
        let outbound_on = s.outbound.unwrap_or(true);
        s.reject_orphans(inbound_choice != InboundChoice::None, outbound_on)?;
        let inbound = match inbound_choice {
            InboundChoice::None => None,
            InboundChoice::Proto(p) => Some(s.inbound(app, p, None)?),
        };
        let outbound = if outbound_on {
            Some(s.outbound(app, None)?)
        } else {
            None
        };
        let spec = AccountSpec {
            name: self.name,
            description: s.description.clone().unwrap_or_default(),
            enabled: self.enabled,
            mailbox: self.email,
            shared_mailbox: s.shared_mailbox.clone(),
            aliases: s.aliases.clone(),
            app_id: app.id,
            inbound,
            outbound,
            from_name: s.from_name.clone().filter(|n| !n.trim().is_empty()),
            reply_to: s.reply_to.clone(),
            signature: s.signature.clone().filter(|x| !x.trim().is_empty()),
            on_received: s.on_received.clone().unwrap_or(OnReceived::None),
            delegate: s.delegate.clone(),
            send_on_behalf: s.send_on_behalf.unwrap_or(false),
        };
        spec.check()?;
        Ok(spec)
    }
}

/// Changes to an account; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct AccountChanges {
    pub name: Option<Name>,
    pub email: Option<EmailAddress>,
    pub enabled: Option<bool>,
    pub settings: AccountSettingsInput,
}

impl AccountChanges {
    /// `app` is the account's app after the change (moving to another app re-applies that
    /// app's presets unless hosts are given).
    pub fn apply(self, mut spec: AccountSpec, app: &OAuthApp) -> Result<AccountSpec, FieldError> {
        let s = &self.settings;
        if let Some(n) = self.name {
            spec.name = n;
        }
        if let Some(e) = self.email {
            spec.mailbox = e;
        }
        let app_changed = app.id != spec.app_id;
        spec.app_id = app.id;
        if let Some(e) = self.enabled {
            spec.enabled = e;
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
        if let Some(d) = &s.delegate {
            spec.delegate = Some(d.clone());
        }
        if s.clear_delegate {
            spec.delegate = None;
            spec.send_on_behalf = false;
        }
        if let Some(b) = s.send_on_behalf {
            spec.send_on_behalf = b;
        }
        let inbound_on = match s.inbound {
            Some(InboundChoice::None) => false,
            Some(InboundChoice::Proto(_)) => true,
            None => spec.inbound.is_some(),
        };
        let outbound_on = s.outbound.unwrap_or(spec.outbound.is_some());
        s.reject_orphans(inbound_on, outbound_on)?;
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
            Some(InboundChoice::Proto(p)) => Some(s.inbound(app, p, keep_in.as_ref())?),
            None => match keep_in.as_ref().or(spec.inbound.as_ref()) {
                Some(cur) => Some(s.inbound(app, cur.protocol, keep_in.as_ref())?),
                None => None,
            },
        };
        spec.outbound = if outbound_on {
            Some(s.outbound(app, keep_out.as_ref())?)
        } else {
            None
        };
        if let Some(n) = &s.from_name {
            spec.from_name = Some(n.clone()).filter(|n| !n.trim().is_empty());
        }
        if let Some(r) = &s.reply_to {
            spec.reply_to = Some(r.clone());
        }
        if let Some(sig) = &s.signature {
            spec.signature = Some(sig.clone()).filter(|x| !x.trim().is_empty());
        }
        if let Some(o) = &s.on_received {
            spec.on_received = o.clone();
        }
        spec.check()?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(authority: Option<&str>) -> AppSpec {
        NewApp {
            name: Name::parse("Contoso").unwrap(),
            kind: AppKind::Microsoft,
            tenant: Some(TenantId::parse("contoso.onmicrosoft.com").unwrap()),
            client_id: ClientId::parse("00000000-0000-0000-0000-00000000a001").unwrap(),
            client_secret: None,
            secret_expires: None,
            flow: OAuthFlow::AuthorizationCode,
            service_account_key: None,
            endpoints: EndpointInput {
                authority: authority.map(|a| HttpUrl::parse(a).unwrap()),
                ..Default::default()
            },
        }
        .into_spec()
        .unwrap()
    }

    fn change_tenant(s: AppSpec, authority: Option<&str>) -> AppSpec {
        AppChanges {
            name: None,
            tenant: Some(TenantId::parse("fabrikam.onmicrosoft.com").unwrap()),
            client_id: None,
            client_secret: None,
            clear_secret: false,
            secret_expires: None,
            flow: None,
            service_account_key: None,
            reset_endpoints: false,
            endpoints: EndpointInput {
                authority: authority.map(|a| HttpUrl::parse(a).unwrap()),
                ..Default::default()
            },
        }
        .apply(s)
        .unwrap()
    }

    fn with_secret(mut s: AppSpec) -> AppSpec {
        s.client_secret = Some(Secret::new("stored-secret"));
        s
    }

    #[test]
    fn moving_where_the_secret_goes_needs_the_secret_again() {
        let capture = HttpUrl::parse("http://127.0.0.1:9/token").unwrap();
        let moved = |secret: Option<&str>| AppChanges {
            client_secret: secret.map(Secret::new),
            endpoints: EndpointInput {
                token_url: Some(capture.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let refused = moved(None).apply(with_secret(app(None))).unwrap_err();
        assert_eq!(refused.field, "client_secret");
        assert!(refused.message.contains("token_url"), "{refused}");
        let ok = moved(Some("new-secret"))
            .apply(with_secret(app(None)))
            .unwrap();
        assert_eq!(ok.endpoints.token, capture);
        assert_eq!(ok.client_secret.unwrap().expose(), "new-secret");
        // A tenant or authority derives new endpoints: the same rule.
        let tenant = AppChanges {
            tenant: Some(TenantId::parse("fabrikam.onmicrosoft.com").unwrap()),
            ..Default::default()
        };
        let refused = tenant.apply(with_secret(app(None))).unwrap_err();
        assert_eq!(refused.field, "client_secret");
        assert!(refused.message.contains("token_url"), "{refused}");
        let authority = AppChanges {
            endpoints: EndpointInput {
                authority: Some(HttpUrl::parse("http://127.0.0.1:9").unwrap()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            authority.apply(with_secret(app(None))).unwrap_err().field,
            "client_secret"
        );
        // A change that sends nothing elsewhere needs no secret; nor does an app without one.
        let rename = AppChanges {
            name: Some(Name::parse("Renamed").unwrap()),
            ..Default::default()
        };
        assert!(rename.apply(with_secret(app(None))).is_ok());
        assert!(moved(None).apply(app(None)).is_ok());
        // A service-account app signs its assertion for the token URL with its key.
        let mut google = app(None);
        google.service_account_key = Some(Secret::new("{\"type\":\"service_account\"}"));
        let refused = moved(None).apply(google).unwrap_err();
        assert_eq!(refused.field, "service_account_key");
    }

    #[test]
    fn a_new_tenant_keeps_a_custom_sign_in_host() {
        let us = change_tenant(app(Some("https://login.microsoftonline.us")), None);
        assert_eq!(
            us.endpoints.token.as_str(),
            "https://login.microsoftonline.us/fabrikam.onmicrosoft.com/oauth2/v2.0/token"
        );
        let public = change_tenant(app(None), None);
        assert_eq!(
            public.endpoints.token.as_str(),
            "https://login.microsoftonline.com/fabrikam.onmicrosoft.com/oauth2/v2.0/token"
        );
        // A new authority given with the tenant wins.
        let moved = change_tenant(
            app(Some("https://login.microsoftonline.us")),
            Some("https://login.partner.microsoftonline.cn"),
        );
        assert!(
            moved
                .endpoints
                .token
                .as_str()
                .starts_with("https://login.partner.microsoftonline.cn/fabrikam"),
            "{}",
            moved.endpoints.token
        );
    }
}
