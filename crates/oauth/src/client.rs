//! Token-endpoint requests over HTTPS. Every request has a timeout; every response is
//! parsed strictly; every failure becomes a classified [`Failure`].

use crate::egress;
use crate::failure::{self, Failure, Remediation};
use crate::jwt;
use mailgate_core::app::AppSpec;
use mailgate_core::{HttpUrl, Scopes, Secret, Timestamp};
use serde::Deserialize;
use std::time::Duration;

/// A successful token response. Tokens are `Secret`s from the moment they are parsed.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    pub access_token: Secret,
    pub expires_in: Option<i64>,
    pub refresh_token: Option<Secret>,
    pub scope: Option<Scopes>,
    pub id_token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct DeviceAuthorization {
    pub device_code: Secret,
    pub user_code: String,
    pub verification_uri: String,
    pub expires_in: i64,
    pub interval: i64,
    pub message: Option<String>,
}

#[derive(Debug, Clone)]
pub enum DevicePoll {
    Pending,
    /// Poll more slowly: add 5 seconds to the interval (RFC 8628 §3.5).
    SlowDown,
    Done(TokenResponse),
}

/// A Google service-account JSON key file (only the fields used).
#[derive(Clone, Deserialize)]
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key: String,
    pub private_key_id: Option<String>,
    pub token_uri: Option<String>,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceAccountKey({}, <redacted>)", self.client_email)
    }
}

pub struct OAuthClient {
    /// Built at the first request: a command that finds a cached token never makes one,
    /// and building it (TLS roots, connector) cost `mailgate token` about a tenth of its
    /// time (issue 15).
    http: std::sync::OnceLock<reqwest::Client>,
    timeout: Duration,
    /// The operator's `MAILGATE_IDP_ALLOW_PRIVATE`: whether identity providers on loopback
    /// or private addresses may be reached (see [`crate::egress`]).
    allow_private: bool,
}

/// The most mailgate reads of any identity-provider response (token, JWKS, userinfo,
/// device code): each is a few KB, so more is an error, and reading stops at the limit
/// instead of holding a huge answer in memory.
pub const RESPONSE_LIMIT: usize = 1 << 20;

/// How long one token request may take before it counts as a (transient) timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

impl OAuthClient {
    /// `allow_private`: whether identity providers on loopback or private addresses may be
    /// reached (`MAILGATE_IDP_ALLOW_PRIVATE`); otherwise every name is resolved by
    /// [`egress::CheckingResolver`] and the connection pinned to the addresses it checked.
    pub fn new(timeout: Duration, allow_private: bool) -> Self {
        OAuthClient {
            http: std::sync::OnceLock::new(),
            timeout,
            allow_private,
        }
    }

    /// The HTTP client, built on first use.
    fn http(&self, step: &'static str) -> Result<&reqwest::Client, Failure> {
        if let Some(http) = self.http.get() {
            return Ok(http);
        }
        let mut builder = reqwest::Client::builder();
        if !self.allow_private {
            builder = builder.dns_resolver(std::sync::Arc::new(egress::CheckingResolver {
                setting: egress::IDP_ALLOW_PRIVATE,
            }));
        }
        let http = builder
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
            // A token endpoint never redirects; following one could send the secret elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mailgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::config(step, &format!("the HTTP client: {e}")))?;
        // Two first requests at once may both build one; the first stored is kept.
        Ok(self.http.get_or_init(|| http))
    }

    /// RFC 6749 §4.1.3 with the PKCE verifier.
    pub async fn exchange_code(
        &self,
        app: &AppSpec,
        code: &str,
        verifier: &Secret,
        redirect_uri: &str,
    ) -> Result<TokenResponse, Failure> {
        let form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri.to_owned()),
            ("code_verifier", verifier.expose().to_owned()),
        ];
        self.token_request("token exchange", app, form).await
    }

    /// RFC 6749 §6. The scopes are sent again so Microsoft issues an Outlook-audience token.
    pub async fn refresh(
        &self,
        app: &AppSpec,
        refresh_token: &Secret,
    ) -> Result<TokenResponse, Failure> {
        let form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose().to_owned()),
            ("scope", app.scopes.to_string()),
        ];
        self.token_request("refresh", app, form).await
    }

    /// Microsoft app-only access.
    pub async fn client_credentials(&self, app: &AppSpec) -> Result<TokenResponse, Failure> {
        let form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("scope", app.scopes.to_string()),
        ];
        self.token_request("client credentials", app, form).await
    }

    /// Google service account with domain-wide delegation (RFC 7523): the assertion is
    /// signed with the key file's private key, `sub` is the mailbox.
    pub async fn jwt_bearer(
        &self,
        app: &AppSpec,
        key: &ServiceAccountKey,
        subject: &str,
        now: Timestamp,
    ) -> Result<TokenResponse, Failure> {
        let der = jwt::pem_to_der(&key.private_key)
            .map_err(|e| Failure::config("service account", &e.to_string()))?;
        let claims = serde_json::json!({
            "iss": key.client_email,
            "sub": subject,
            "aud": app.endpoints.token.as_str(),
            "scope": app.scopes.to_string(),
            "iat": now.0,
            "exp": now.0 + 3600,
        });
        let assertion = jwt::sign_rs256(&der, key.private_key_id.as_deref(), &claims)
            .map_err(|e| Failure::config("service account", &e.to_string()))?;
        let form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:jwt-bearer".to_owned(),
            ),
            ("assertion", assertion),
        ];
        self.post_form("service account", &app.endpoints.token, form)
            .await
            .and_then(|(s, b)| parse_token("service account", s, &b))
            .map_err(|f| f.for_app_kind(app.kind))
    }

    /// RFC 8628 §3.1.
    pub async fn start_device(&self, app: &AppSpec) -> Result<DeviceAuthorization, Failure> {
        let step = "device authorization";
        let Some(url) = &app.endpoints.device else {
            return Err(Failure::config(
                step,
                "the app has no device authorization endpoint",
            ));
        };
        let mut form = vec![
            ("client_id", app.client_id.to_string()),
            ("scope", app.scopes.to_string()),
        ];
        if let Some(s) = &app.client_secret {
            form.push(("client_secret", s.expose().to_owned()));
        }
        let (status, body) = self.post_form(step, url, form).await?;
        if !(200..300).contains(&status) {
            return Err(failure::classify(step, status, &body));
        }
        #[derive(Deserialize)]
        struct Raw {
            device_code: String,
            user_code: String,
            #[serde(alias = "verification_url")]
            verification_uri: String,
            expires_in: serde_json::Value,
            interval: Option<serde_json::Value>,
            message: Option<String>,
        }
        let raw: Raw = serde_json::from_str(&body).map_err(|e| malformed(step, &json_shape(&e)))?;
        Ok(DeviceAuthorization {
            device_code: Secret::new(raw.device_code),
            user_code: raw.user_code,
            verification_uri: raw.verification_uri,
            expires_in: number(&raw.expires_in)
                .ok_or_else(|| malformed(step, "expires_in is not a number"))?,
            interval: raw.interval.as_ref().and_then(number).unwrap_or(5).max(1),
            message: raw.message,
        })
    }

    /// RFC 8628 §3.4–3.5.
    pub async fn poll_device(
        &self,
        app: &AppSpec,
        device_code: &Secret,
    ) -> Result<DevicePoll, Failure> {
        let step = "device authorization";
        let mut form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:device_code".to_owned(),
            ),
            ("device_code", device_code.expose().to_owned()),
            ("client_id", app.client_id.to_string()),
        ];
        if let Some(s) = &app.client_secret {
            form.push(("client_secret", s.expose().to_owned()));
        }
        let (status, body) = self.post_form(step, &app.endpoints.token, form).await?;
        if (200..300).contains(&status) {
            return parse_token(step, status, &body).map(DevicePoll::Done);
        }
        let error = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
        match error.as_deref() {
            Some("authorization_pending") => Ok(DevicePoll::Pending),
            Some("slow_down") => Ok(DevicePoll::SlowDown),
            _ => Err(failure::classify(step, status, &body).for_app_kind(app.kind)),
        }
    }

    pub async fn fetch_jwks(&self, url: &HttpUrl) -> Result<jwt::Jwks, Failure> {
        let step = "signing keys";
        let body = self
            .get_ok(step, self.http(step)?.get(url.as_str()))
            .await?;
        serde_json::from_str(&body).map_err(|e| malformed(step, &json_shape(&e)))
    }

    /// OIDC userinfo, for providers whose id_token is absent.
    pub async fn userinfo(
        &self,
        url: &HttpUrl,
        access_token: &Secret,
    ) -> Result<serde_json::Value, Failure> {
        let step = "userinfo";
        let body = self
            .get_ok(
                step,
                self.http(step)?
                    .get(url.as_str())
                    .bearer_auth(access_token.expose()),
            )
            .await?;
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .filter(|v| v.is_object())
            .ok_or_else(|| malformed(step, "not a JSON object"))
    }

    /// The OpenID Connect discovery document of `issuer`, checked by `discovery::parse`.
    pub async fn fetch_discovery(
        &self,
        issuer: &str,
    ) -> Result<mailgate_core::app::Endpoints, Failure> {
        let step = crate::discovery::STEP;
        let url = crate::discovery::document_url(issuer)
            .map_err(|e| Failure::config(step, &e.to_string()))?;
        let body = self
            .get_ok(step, self.http(step)?.get(url.as_str()))
            .await?;
        crate::discovery::parse(issuer, &body)
    }

    /// Sends a GET and returns the body of a 200, or the classified failure.
    async fn get_ok(
        &self,
        step: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<String, Failure> {
        let request = request.build().map_err(|e| transport(step, &e))?;
        self.refuse_private_literal(step, request.url())?;
        let (status, body) = self.exchange(step, request).await?;
        if status != 200 {
            return Err(failure::classify(step, status, &body));
        }
        Ok(body)
    }

    /// Sends `request` and reads its answer (status and body) on the provider lane
    /// ([`provider_lane`]).
    async fn exchange(
        &self,
        step: &'static str,
        request: reqwest::Request,
    ) -> Result<(u16, String), Failure> {
        let http = self.http(step)?.clone();
        let work = async move {
            let url = request.url().clone();
            let resp = http
                .execute(request)
                .await
                .map_err(|e| transport(step, &e))?;
            let status = resp.status().as_u16();
            let body = read_capped(step, &url, resp).await?;
            Ok((status, body))
        };
        match provider_lane() {
            Some(lane) => lane.spawn(work).await.unwrap_or_else(|e| {
                Err(Failure::new(step, Remediation::NetworkError)
                    .with_detail(format!("the request to the provider ended early: {e}")))
            }),
            None => work.await,
        }
    }

    /// Adds client authentication (secret in the body, as Microsoft and Google document)
    /// and posts to the token endpoint.
    async fn token_request(
        &self,
        step: &'static str,
        app: &AppSpec,
        mut form: Vec<(&'static str, String)>,
    ) -> Result<TokenResponse, Failure> {
        form.push(("client_id", app.client_id.to_string()));
        if let Some(secret) = &app.client_secret {
            form.push(("client_secret", secret.expose().to_owned()));
        }
        let (status, body) = self.post_form(step, &app.endpoints.token, form).await?;
        parse_token(step, status, &body).map_err(|f| f.for_app_kind(app.kind))
    }

    async fn post_form(
        &self,
        step: &'static str,
        url: &HttpUrl,
        form: Vec<(&'static str, String)>,
    ) -> Result<(u16, String), Failure> {
        self.refuse_private_literal(step, url.url())?;
        let request = self
            .http(step)?
            .post(url.as_str())
            .header("Accept", "application/json")
            .form(&form)
            .build()
            .map_err(|e| transport(step, &e))?;
        self.exchange(step, request).await
    }

    /// An IP-literal URL is connected to without a DNS lookup, so the resolver's check does
    /// not see it: check it here, before anything is sent.
    fn refuse_private_literal(&self, step: &'static str, url: &url::Url) -> Result<(), Failure> {
        if self.allow_private {
            return Ok(());
        }
        egress::refuse_private_literal(url, egress::IDP_ALLOW_PRIVATE)
            .map_err(|refused| Failure::config(step, &refused.0))
    }
}

/// The thread every request to an identity provider runs on: a runtime of its own, where
/// the request's connection (hyper runs each connection as a task) is not queued behind
/// the callers' tasks. In `serve` a refresh is what a burst of token requests waits for
/// after a commit, and on the shared runtime its connection task waited its turn behind
/// those very requests: 4–31 ms for a request the emulator answers in about one
/// (issue 15: the expired-token burst, docs/benchmarks.md). Started at the first request;
/// `None` if the thread could not be started, and the request then runs where it is
/// awaited.
fn provider_lane() -> Option<&'static tokio::runtime::Handle> {
    static LANE: std::sync::OnceLock<Option<tokio::runtime::Handle>> = std::sync::OnceLock::new();
    LANE.get_or_init(|| {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let started = std::thread::Builder::new()
            .name("mailgate-idp-lane".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let _ = handle_tx.send(Some(runtime.handle().clone()));
                        // Runs the requests spawned on it for the rest of the process.
                        runtime.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start the identity-provider lane; requests run on the caller's runtime");
                        let _ = handle_tx.send(None);
                    }
                }
            });
        match started {
            Ok(_) => handle_rx.recv().ok().flatten(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the identity-provider lane; requests run on the caller's runtime");
                None
            }
        }
    })
    .as_ref()
}

/// The response body, read chunk by chunk and abandoned at [`RESPONSE_LIMIT`], so a huge
/// or endless answer costs at most the limit in memory. Not UTF-8 is an error too.
async fn read_capped(
    step: &'static str,
    url: &url::Url,
    mut resp: reqwest::Response,
) -> Result<String, Failure> {
    let too_large = || {
        malformed(
            step,
            &format!(
                "the response from {} is larger than {} KiB; mailgate stopped reading it",
                endpoint_name(url),
                RESPONSE_LIMIT / 1024
            ),
        )
    };
    if resp
        .content_length()
        .is_some_and(|n| n > RESPONSE_LIMIT as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(step, &e))? {
        if body.len() + chunk.len() > RESPONSE_LIMIT {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| malformed(step, "the response is not UTF-8 text"))
}

/// Scheme, host, port and path of an endpoint, for errors: endpoint URLs are configuration,
/// but a query string could carry anything, so it is left out.
fn endpoint_name(u: &url::Url) -> String {
    format!(
        "{}://{}{}",
        u.scheme(),
        u.host_str().unwrap_or_default(),
        u.port().map(|p| format!(":{p}")).unwrap_or_default()
    ) + u.path()
}

/// reqwest errors carry the URL; token URLs hold no secrets, but the message is trimmed to
/// the kind of failure anyway.
fn transport(step: &'static str, e: &reqwest::Error) -> Failure {
    // A connection refused by the address check is configuration, not a network failure.
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<egress::RefusedAddress>() {
            return Failure::config(step, &refused.0);
        }
        source = s.source();
    }
    let remediation = if e.is_timeout() {
        Remediation::Timeout
    } else {
        Remediation::NetworkError
    };
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    Failure::new(step, remediation).with_detail(detail)
}

fn malformed(step: &'static str, why: &str) -> Failure {
    Failure::new(step, Remediation::MalformedResponse)
        .with_detail(format!("malformed token response: {why}"))
}

/// What is wrong with a JSON reply, without its values: serde's own message quotes the
/// offending value ("invalid type: string \"…\""), which could be anything the endpoint
/// sent, so only missing fields are named and otherwise the position is given.
fn json_shape(e: &serde_json::Error) -> String {
    let message = e.to_string();
    match e.classify() {
        serde_json::error::Category::Data if message.starts_with("missing field") => message,
        serde_json::error::Category::Data => format!(
            "the JSON does not have the expected fields and types (line {}, column {})",
            e.line(),
            e.column()
        ),
        _ => "the body is not JSON".to_owned(),
    }
}

/// `expires_in` is a number, but some providers send it as a string.
fn number(v: &serde_json::Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Parses a token response strictly, naming the field at fault. Never echoes token values.
pub fn parse_token(step: &'static str, status: u16, body: &str) -> Result<TokenResponse, Failure> {
    if !(200..300).contains(&status) {
        return Err(failure::classify(step, status, body));
    }
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|_| malformed(step, "the body is not JSON"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| malformed(step, "the body is not a JSON object"))?;
    if obj.contains_key("error") {
        return Err(failure::classify(step, 400, body));
    }
    let access = match obj.get("access_token") {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Secret::new(s.trim()),
        Some(_) => {
            return Err(malformed(
                step,
                "field access_token is not a non-empty string",
            ));
        }
        None => return Err(malformed(step, "field access_token is missing")),
    };
    match obj.get("token_type").and_then(|t| t.as_str()) {
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(_) => return Err(malformed(step, "field token_type is not Bearer")),
        None => return Err(malformed(step, "field token_type is missing")),
    }
    let expires_in = match obj.get("expires_in") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match number(v) {
            Some(n) if n > 0 => Some(n),
            _ => return Err(malformed(step, "field expires_in is not a positive number")),
        },
    };
    let opt_string = |name: &str| -> Result<Option<String>, Failure> {
        match obj.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => {
                Ok(Some(s.trim().to_owned()))
            }
            Some(_) => Err(malformed(
                step,
                &format!("field {name} is not a non-empty string"),
            )),
        }
    };
    let refresh = opt_string("refresh_token")?.map(Secret::new);
    let id_token = opt_string("id_token")?.map(Secret::new);
    let scope = opt_string("scope")?
        .map(|s| Scopes::parse(&s))
        .transpose()
        .map_err(|_| malformed(step, "field scope is not a scope list"))?;
    Ok(TokenResponse {
        access_token: access,
        expires_in,
        refresh_token: refresh,
        scope,
        id_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback endpoint that answers every request with HTTP 200 and `total` bytes of
    /// body (no content-length), stopping when the client hangs up; counts connections.
    async fn endless_endpoint(total: usize) -> (HttpUrl, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{\"keys\":[\"")
                        .await;
                    let chunk = vec![b'a'; 64 * 1024];
                    let mut sent = 0;
                    while sent < total && stream.write_all(&chunk).await.is_ok() {
                        sent += chunk.len();
                    }
                });
            }
        });
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/keys")).unwrap();
        (url, connections)
    }

    #[tokio::test]
    async fn jwks_and_userinfo_replies_are_capped_while_streaming() {
        let (url, _) = endless_endpoint(512 << 20).await;
        let client = OAuthClient::new(Duration::from_secs(20), true);
        let started = std::time::Instant::now();
        let err = client.fetch_jwks(&url).await.unwrap_err().to_string();
        assert!(
            err.contains("signing keys") && err.contains("larger than 1024 KiB"),
            "{err}"
        );
        assert!(err.contains(url.as_str()), "names the endpoint: {err}");
        let err = client
            .userinfo(&url, &Secret::new("at"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("userinfo") && err.contains("larger than 1024 KiB"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn json_errors_name_the_shape_not_the_values() {
        let e = serde_json::from_str::<jwt::Jwks>(r#"{"keys":"INTERNAL-VALUE"}"#).unwrap_err();
        let shown = json_shape(&e);
        assert!(!shown.contains("INTERNAL-VALUE"), "{shown}");
        assert!(shown.contains("line 1"), "{shown}");
        let e = serde_json::from_str::<jwt::Jwks>("{}").unwrap_err();
        assert!(json_shape(&e).contains("missing field"));
        let e = serde_json::from_str::<jwt::Jwks>("<html>INTERNAL</html>").unwrap_err();
        assert_eq!(json_shape(&e), "the body is not JSON");
    }

    #[tokio::test]
    async fn private_identity_providers_are_refused_before_connecting() {
        let (url, connections) = endless_endpoint(0).await;
        let client = OAuthClient::new(Duration::from_secs(5), false);
        let err = client.fetch_jwks(&url).await.unwrap_err();
        assert_eq!(err.remediation, Remediation::Misconfigured);
        assert!(
            err.to_string().contains("MAILGATE_IDP_ALLOW_PRIVATE"),
            "{err}"
        );
        let by_name = HttpUrl::parse(&url.as_str().replace("127.0.0.1", "localhost")).unwrap();
        let err = client
            .userinfo(&by_name, &Secret::new("at"))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("MAILGATE_IDP_ALLOW_PRIVATE"),
            "{err}"
        );
        assert_eq!(connections.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn parses_good_responses() {
        let t = parse_token("refresh", 200, r#"{"token_type":"Bearer","access_token":"at","expires_in":"3599","refresh_token":"rt","scope":"a b"}"#).unwrap();
        assert_eq!(t.access_token.expose(), "at");
        assert_eq!(t.expires_in, Some(3599));
        assert_eq!(t.refresh_token.unwrap().expose(), "rt");
        assert_eq!(t.scope.unwrap().to_string(), "a b");
    }

    #[test]
    fn malformed_responses_name_the_field_and_hide_values() {
        for (body, field) in [
            ("not json", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"token_type":"Bearer"}"#, "access_token is missing"),
            (
                r#"{"token_type":"Bearer","access_token":42}"#,
                "access_token",
            ),
            (r#"{"access_token":"SECRETVALUE"}"#, "token_type is missing"),
            (
                r#"{"token_type":"mac","access_token":"SECRETVALUE"}"#,
                "token_type",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"SECRETVALUE","expires_in":"soon"}"#,
                "expires_in",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"SECRETVALUE","expires_in":-5}"#,
                "expires_in",
            ),
            (
                r#"{"token_type":"Bearer","access_token":"SECRETVALUE","refresh_token":""}"#,
                "refresh_token",
            ),
        ] {
            let f = parse_token("refresh", 200, body).unwrap_err();
            assert_eq!(f.remediation, Remediation::MalformedResponse, "{body}");
            let shown = f.to_string();
            assert!(shown.contains(field), "{body}: {shown}");
            assert!(!shown.contains("SECRETVALUE"), "{shown}");
        }
    }
}
