//! Minting tokens: access tokens (Microsoft JWTs, Google `ya29.` strings), refresh tokens,
//! id_tokens, and the token-endpoint response that carries them.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::crypto::random_token;
use super::errors::{Failure, Flavor};
use super::scopes::{self, MS_APP_MAIL_ROLES, OUTLOOK_APP_AUDIENCE};
use super::state::{AccessToken, Inner, RefreshToken, Shared, UserRecord, secs};

/// id_tokens live an hour at both providers, whatever the access-token lifetime.
const ID_TOKEN_LIFETIME_SECS: i64 = 3600;

/// A delegated (user) token request that passed all checks.
pub(crate) struct Delegated<'a> {
    pub(crate) flavor: Flavor,
    pub(crate) client_id: &'a str,
    pub(crate) user: &'a UserRecord,
    pub(crate) grant_id: Option<u64>,
    pub(crate) scopes: &'a [String],
    pub(crate) nonce: Option<&'a str>,
    pub(crate) issue_refresh_token: bool,
}

/// Issues the tokens of a delegated grant and returns the token response body.
pub(crate) fn delegated(
    shared: &Shared,
    inner: &mut Inner,
    req: &Delegated<'_>,
) -> Result<Value, Failure> {
    let now = inner.now();
    let lifetimes = inner.lifetimes(req.client_id);
    let expires_in = lifetimes.access_token_secs;
    let expires_at = now + secs(expires_in);
    let user_key = req.user.email.to_lowercase();

    let (access_token, audience, mail, scope_claim) = match req.flavor {
        Flavor::Microsoft => {
            let d = scopes::ms_delegated(req.scopes)?;
            let claims = json!({
                "aud": d.audience,
                "iss": format!("{}/{}/", shared.base_url, req.user.tid),
                "iat": now.unix_timestamp(),
                "nbf": now.unix_timestamp(),
                "exp": expires_at.unix_timestamp(),
                "appid": req.client_id,
                "idtyp": "user",
                "name": req.user.name,
                "oid": req.user.oid,
                "scp": d.scp.join(" "),
                "sub": req.user.sub,
                "tid": req.user.tid,
                "unique_name": req.user.email,
                "upn": req.user.email,
                "uti": random_token(16),
                "ver": "1.0",
            });
            (
                shared.signing_key.sign_jwt(&claims),
                d.audience,
                d.mail,
                d.scp.join(" "),
            )
        }
        Flavor::Google => (
            google_access_token(),
            req.client_id.to_owned(),
            scopes::google_mail(req.scopes),
            req.scopes.join(" "),
        ),
    };
    inner.access_tokens.insert(
        access_token.clone(),
        AccessToken {
            client_id: req.client_id.to_owned(),
            user: Some(user_key),
            grant_id: req.grant_id,
            scope: scope_claim,
            audience,
            mail,
            issued_at: now,
            expires_at,
            revoked: false,
        },
    );

    let mut body = Map::new();
    body.insert("token_type".into(), "Bearer".into());
    // Microsoft reports the granted scopes without `offline_access`.
    let reported: Vec<&str> = req
        .scopes
        .iter()
        .map(String::as_str)
        .filter(|s| req.flavor == Flavor::Google || *s != "offline_access")
        .collect();
    body.insert("scope".into(), reported.join(" ").into());
    body.insert("expires_in".into(), expires_in.into());
    if req.flavor == Flavor::Microsoft {
        body.insert("ext_expires_in".into(), expires_in.into());
    }
    body.insert("access_token".into(), access_token.into());
    if req.issue_refresh_token
        && let Some(grant_id) = req.grant_id
    {
        let refresh_token = match req.flavor {
            Flavor::Microsoft => format!("0.A{}", random_token(96)),
            Flavor::Google => format!("1//{}", random_token(64)),
        };
        inner.refresh_tokens.insert(
            refresh_token.clone(),
            RefreshToken {
                grant_id,
                client_id: req.client_id.to_owned(),
                issued_at: now,
                expires_at: now + secs(lifetimes.refresh_token_secs),
                rotated_at: None,
            },
        );
        body.insert("refresh_token".into(), refresh_token.into());
    }
    if req.scopes.iter().any(|s| s == "openid") {
        body.insert(
            "id_token".into(),
            id_token(shared, req.flavor, req.client_id, req.user, req.nonce, now).into(),
        );
    }
    Ok(Value::Object(body))
}

fn google_access_token() -> String {
    format!("ya29.{}", random_token(120))
}

/// An OpenID Connect id_token in the provider's claim set, signed with the published key.
fn id_token(
    shared: &Shared,
    flavor: Flavor,
    client_id: &str,
    user: &UserRecord,
    nonce: Option<&str>,
    now: OffsetDateTime,
) -> String {
    let iat = now.unix_timestamp();
    let exp = iat + ID_TOKEN_LIFETIME_SECS;
    let mut claims = match flavor {
        Flavor::Microsoft => json!({
            "aud": client_id,
            "iss": format!("{}/{}/v2.0", shared.base_url, user.tid),
            "iat": iat,
            "nbf": iat,
            "exp": exp,
            "email": user.email,
            "name": user.name,
            "oid": user.oid,
            "preferred_username": user.email,
            "sub": user.sub,
            "tid": user.tid,
            "uti": random_token(16),
            "ver": "2.0",
        }),
        Flavor::Google => json!({
            "iss": shared.base_url,
            "azp": client_id,
            "aud": client_id,
            "sub": user.sub,
            "email": user.email,
            "email_verified": true,
            "name": user.name,
            "iat": iat,
            "exp": exp,
        }),
    };
    if let Some(nonce) = nonce {
        claims["nonce"] = nonce.into();
    }
    shared.signing_key.sign_jwt(&claims)
}

/// The stable object id of an app's service principal, derived from its client id.
fn service_principal_oid(client_id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, client_id.as_bytes());
    let h = hex::encode(&digest.as_ref()[..16]);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A Microsoft app-only (client credentials) access token for `audience`.
pub(crate) fn ms_app_only(
    shared: &Shared,
    inner: &mut Inner,
    client_id: &str,
    tid: &str,
    audience: &str,
) -> Value {
    let now = inner.now();
    let expires_in = inner.lifetimes(client_id).access_token_secs;
    let expires_at = now + secs(expires_in);
    let oid = service_principal_oid(client_id);
    let mail = audience == OUTLOOK_APP_AUDIENCE;
    let roles: Vec<&str> = if mail {
        MS_APP_MAIL_ROLES.to_vec()
    } else {
        vec!["Mail.Send"]
    };
    let claims = json!({
        "aud": audience,
        "iss": format!("{}/{}/", shared.base_url, tid),
        "iat": now.unix_timestamp(),
        "nbf": now.unix_timestamp(),
        "exp": expires_at.unix_timestamp(),
        "appid": client_id,
        "idtyp": "app",
        "oid": oid,
        "roles": roles,
        "sub": oid,
        "tid": tid,
        "uti": random_token(16),
        "ver": "1.0",
    });
    let access_token = shared.signing_key.sign_jwt(&claims);
    inner.access_tokens.insert(
        access_token.clone(),
        AccessToken {
            client_id: client_id.to_owned(),
            user: None,
            grant_id: None,
            scope: roles.join(" "),
            audience: audience.to_owned(),
            mail,
            issued_at: now,
            expires_at,
            revoked: false,
        },
    );
    // The real response has no `scope` for client credentials.
    json!({
        "token_type": "Bearer",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": access_token,
    })
}

/// A Google access token for a service account acting as `user` (domain-wide delegation).
pub(crate) fn google_service_account(
    inner: &mut Inner,
    sa_client_id: &str,
    user: &str,
    scopes: &[String],
) -> Value {
    let now = inner.now();
    let expires_in = inner.lifetimes(sa_client_id).access_token_secs;
    let access_token = google_access_token();
    inner.access_tokens.insert(
        access_token.clone(),
        AccessToken {
            client_id: sa_client_id.to_owned(),
            user: Some(user.to_lowercase()),
            grant_id: None,
            scope: scopes.join(" "),
            audience: sa_client_id.to_owned(),
            mail: scopes::google_mail(scopes),
            issued_at: now,
            expires_at: now + secs(expires_in),
            revoked: false,
        },
    );
    json!({
        "access_token": access_token,
        "expires_in": expires_in,
        "token_type": "Bearer",
    })
}
