//! The test side: [`IdpAdmin`] (an HTTP client of the admin API, so an in-process and an
//! out-of-process emulator are driven the same way) and helpers that click through the
//! sign-in pages over HTTP.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use reqwest::header::LOCATION;
use reqwest::redirect::Policy;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use super::pages::{CONSENT_PATH, SIGNIN_PATH};
use super::spec::{
    ClientSpec, ClockAdvance, DateSkew, FaultSpec, LifetimeSpec, ServiceAccountSpec, User, UserSpec,
};

/// A client of the emulator's admin API.
#[derive(Debug, Clone)]
pub struct IdpAdmin {
    base_url: String,
    http: reqwest::Client,
}

fn plain_client(redirect: Policy) -> reqwest::Client {
    // The emulator is on loopback: never send its traffic through a proxy from the environment.
    reqwest::Client::builder()
        .no_proxy()
        .redirect(redirect)
        .build()
        .unwrap_or_default()
}

impl IdpAdmin {
    /// `base_url` as `Idp::base_url` or the binary's `{"base_url": …}` line gives it.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            http: plain_client(Policy::none()),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn url(&self, segments: &[&str]) -> anyhow::Result<Url> {
        let mut url = Url::parse(&self.base_url).context("parsing the emulator's base URL")?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("the emulator's base URL cannot have a path"))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<T> {
        let response = request
            .send()
            .await
            .with_context(|| format!("admin API {what}: request failed"))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .with_context(|| format!("admin API {what}: reading the answer"))?;
        if !status.is_success() {
            bail!("admin API {what} answered HTTP {status}: {body}");
        }
        serde_json::from_str(&body)
            .with_context(|| format!("admin API {what}: unexpected answer {body}"))
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> anyhow::Result<T> {
        let what = format!("POST /{}", segments.join("/"));
        let request = self.http.post(self.url(segments)?).json(body);
        self.call(request, &what).await
    }

    pub async fn add_client(&self, spec: ClientSpec) -> anyhow::Result<()> {
        let _: Value = self.post(&["admin", "clients"], &spec).await?;
        Ok(())
    }

    pub async fn add_user(&self, spec: UserSpec) -> anyhow::Result<User> {
        self.post(&["admin", "users"], &spec).await
    }

    pub async fn inject_fault(&self, spec: FaultSpec) -> anyhow::Result<()> {
        let _: Value = self.post(&["admin", "faults"], &spec).await?;
        Ok(())
    }

    /// Revokes all grants of the user: refresh and access tokens stop working.
    pub async fn revoke_user(&self, email: &str) -> anyhow::Result<()> {
        let _: Value = self
            .post(&["admin", "users", email, "revoke"], &serde_json::json!({}))
            .await?;
        Ok(())
    }

    /// Expires the user's current access tokens now; refresh tokens keep working.
    pub async fn expire_tokens(&self, email: &str) -> anyhow::Result<()> {
        let _: Value = self
            .post(
                &["admin", "users", email, "expire-tokens"],
                &serde_json::json!({}),
            )
            .await?;
        Ok(())
    }

    pub async fn set_lifetimes(&self, spec: LifetimeSpec) -> anyhow::Result<()> {
        let _: Value = self.post(&["admin", "lifetimes"], &spec).await?;
        Ok(())
    }

    /// Calls per endpoint (`token:<grant_type>`, `authorize`, `introspect`, …), for one
    /// client or for all.
    pub async fn counters(&self, client_id: Option<&str>) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut url = self.url(&["admin", "counters"])?;
        if let Some(client_id) = client_id {
            url.query_pairs_mut().append_pair("client_id", client_id);
        }
        self.call(self.http.get(url), "GET /admin/counters").await
    }

    /// Creates a Google service account; returns its JSON key file (with the private key).
    pub async fn add_service_account(&self, spec: ServiceAccountSpec) -> anyhow::Result<Value> {
        self.post(&["admin", "service-accounts"], &spec).await
    }

    /// Moves the emulator's clock forward: codes, tokens and device codes expire without sleeping.
    pub async fn advance_clock(&self, seconds: u64) -> anyhow::Result<()> {
        let _: Value = self
            .post(&["admin", "clock", "advance"], &ClockAdvance { seconds })
            .await?;
        Ok(())
    }

    /// Makes every response's `Date` header `seconds` off the wall clock (0: true again).
    pub async fn set_date_skew(&self, seconds: i64) -> anyhow::Result<()> {
        let _: Value = self
            .post(&["admin", "clock", "date-skew"], &DateSkew { seconds })
            .await?;
        Ok(())
    }

    /// Forgets every client, user, token, fault, counter and lifetime setting.
    pub async fn reset(&self) -> anyhow::Result<()> {
        let _: Value = self
            .post(&["admin", "reset"], &serde_json::json!({}))
            .await?;
        Ok(())
    }
}

/// Drives the sign-in and consent pages for `authorize_url` as `email`/`password` and accepts.
/// Returns the redirect to the application (its `redirect_uri` with `code` and `state`)
/// without fetching it.
///
/// `http` fetches the pages; it may follow redirects or not (an application link that
/// redirects to the emulator is followed either way). The final consent request, whose answer
/// is the redirect to the application, goes through a client that never follows redirects, so
/// the application's callback is not called and the code is not spent.
pub async fn sign_in(
    http: &reqwest::Client,
    authorize_url: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<Url> {
    let (page_url, page) = get_following(
        http,
        Url::parse(authorize_url).context("parsing authorize_url")?,
    )
    .await?;
    let consent = submit_sign_in(http, &page_url, &page, email, password).await?;
    let request_id = hidden_field(&consent, "request_id")?;
    let response = plain_client(Policy::none())
        .post(page_url.join(CONSENT_PATH)?)
        .form(&[("request_id", request_id.as_str()), ("decision", "accept")])
        .send()
        .await
        .context("posting the consent form")?;
    let status = response.status();
    if !status.is_redirection() {
        let body = response.text().await.unwrap_or_default();
        bail!(
            "consent answered HTTP {status} instead of a redirect: {}",
            page_error(&body)
        );
    }
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .context("the consent redirect has no Location")?;
    page_url
        .join(location)
        .context("the consent redirect's Location is not a URL")
}

/// What the person at the browser answers on a device-code sign-in's consent page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceConsent {
    Accept,
    /// Presses Cancel: the device's poll then gets `access_denied`.
    Cancel,
}

/// Answers a device-code sign-in: enters `user_code` at `verification_uri`, signs in and
/// accepts or cancels, as the person at the browser would.
pub async fn answer_device_code(
    http: &reqwest::Client,
    verification_uri: &str,
    user_code: &str,
    email: &str,
    password: &str,
    consent: DeviceConsent,
) -> anyhow::Result<()> {
    let decision = match consent {
        DeviceConsent::Accept => "accept",
        DeviceConsent::Cancel => "cancel",
    };
    let page_url = Url::parse(verification_uri).context("parsing verification_uri")?;
    let page = http
        .post(page_url.clone())
        .form(&[("user_code", user_code)])
        .send()
        .await
        .context("posting the device code")?
        .text()
        .await?;
    let consent = submit_sign_in(http, &page_url, &page, email, password).await?;
    let request_id = hidden_field(&consent, "request_id")?;
    let response = http
        .post(page_url.join(CONSENT_PATH)?)
        .form(&[("request_id", request_id.as_str()), ("decision", decision)])
        .send()
        .await
        .context("posting the consent form")?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "device consent answered HTTP {status}: {}",
            page_error(&body)
        );
    }
    Ok(())
}

/// GETs `url`, following redirects by hand when `http` does not, but never into an error
/// redirect (`error=` in the query) meant for the application.
async fn get_following(http: &reqwest::Client, mut url: Url) -> anyhow::Result<(Url, String)> {
    for _ in 0..10 {
        let response = http
            .get(url.clone())
            .send()
            .await
            .with_context(|| format!("fetching {url}"))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .context("a redirect without Location")?;
            let next = url.join(location)?;
            if next.query_pairs().any(|(k, _)| k == "error") {
                bail!("the authorization request was refused: {next}");
            }
            url = next;
            continue;
        }
        let final_url = response.url().clone();
        let body = response.text().await?;
        if !status.is_success() {
            bail!("{final_url} answered HTTP {status}: {}", page_error(&body));
        }
        return Ok((final_url, body));
    }
    bail!("too many redirects starting from the authorize URL")
}

/// Posts the sign-in form found in `page`; returns the consent page.
async fn submit_sign_in(
    http: &reqwest::Client,
    page_url: &Url,
    page: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let request_id = hidden_field(page, "request_id")?;
    let response = http
        .post(page_url.join(SIGNIN_PATH)?)
        .form(&[
            ("request_id", request_id.as_str()),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .context("posting the sign-in form")?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() || !body.contains(CONSENT_PATH) {
        bail!(
            "sign-in as {email} failed (HTTP {status}): {}",
            page_error(&body)
        );
    }
    Ok(body)
}

/// The value of `<input type="hidden" name="NAME" value="…">` in a page.
fn hidden_field(page: &str, name: &str) -> anyhow::Result<String> {
    let marker = format!(r#"name="{name}" value=""#);
    let start = page
        .find(&marker)
        .map(|i| i + marker.len())
        .with_context(|| format!("no {name} field in the page: {}", page_error(page)))?;
    let end = page[start..]
        .find('"')
        .context("unterminated value attribute")?;
    Ok(page[start..start + end].to_owned())
}

/// The error text a page shows (its `id="error"` element), or the start of the page.
fn page_error(page: &str) -> String {
    let text = page
        .find(r#"id="error">"#)
        .map(|i| &page[i + r#"id="error">"#.len()..])
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_else(|| page.get(..300).unwrap_or(page));
    text.replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hidden_fields_and_errors() {
        let page = r#"<p class="error" role="alert" id="error">Wrong &amp; bad</p><input type="hidden" name="request_id" value="abc-123">"#;
        assert_eq!(hidden_field(page, "request_id").unwrap(), "abc-123");
        assert_eq!(page_error(page), "Wrong & bad");
        assert!(hidden_field(page, "other").is_err());
    }
}
