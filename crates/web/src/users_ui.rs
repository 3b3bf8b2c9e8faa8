//! `/admin/users`: administrators list, add, re-role, re-password and remove the people who
//! sign in to the admin UI. Operators are refused (403) on every route here.
//!
//! The add form is parsed by `core::user::NewUser`, the rules of `mailgate user add`, so both
//! say the same thing; errors come back beside their field with the user name and role kept
//! and the password never written back into the page. The last administrator can be neither
//! removed nor demoted (the store checks that in the statement that would do it), nobody
//! removes themself, and removing, demoting or re-passwording a user ends their sessions at
//! once. Every change is an event naming who made it, never the password.

use crate::AppState;
use crate::auth::{AdminForm, AdminSession, Session};
use crate::forms::Errors;
use crate::html::{Frame, Nav, PageError, render};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailgate_core::user::{
    MIN_PASSWORD_CHARS, NewUser, Role, User, parse_new_password, parse_role,
};
use mailgate_store::{StoreError, passwords};
use serde::Deserialize;

/// Who the events say made a change.
fn by(session: &Session) -> String {
    format!("{:?}", session.user.username)
}

/// Hashes a parsed password on the blocking pool (argon2 would stall an async worker); a
/// failure (the system's random source) is reported, not stored.
async fn hash(password: &mailgate_core::Secret) -> Result<String, PageError> {
    passwords::hash_off_thread(password.clone())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "password hashing failed");
            PageError::Other {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                title: "The password could not be stored".into(),
                message: "Nothing was changed. Try again.".into(),
            }
        })
}

/// The role choices, with what each may do, and whether each is the one chosen.
fn role_options(current: &str) -> Vec<(Role, &'static str, bool)> {
    Role::ALL
        .iter()
        .map(|r| {
            let meaning = match r {
                Role::Admin => "administrator: everything, including apps, users and API tokens",
                Role::Operator => "operator: authorize and test accounts; no settings",
            };
            (*r, meaning, parse_role(current).ok() == Some(*r))
        })
        .collect()
}

fn last_sign_in(u: &User) -> String {
    u.last_login_at
        .map(|t| t.to_string())
        .unwrap_or_else(|| "never".into())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AddForm {
    username: String,
    role: String,
    password: String,
    password_repeat: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage<'a> {
    frame: Frame,
    title: &'static str,
    /// What the page confirms it just did ("User added."), or empty.
    notice: &'static str,
    csrf: &'a str,
    me: i64,
    users: Vec<User>,
    username: &'a str,
    roles: Vec<(Role, &'static str, bool)>,
    errs: &'a Errors,
    errors: Vec<(String, String)>,
    min_chars: usize,
}

impl UsersPage<'_> {
    fn last_sign_in(&self, u: &User) -> String {
        last_sign_in(u)
    }
}

/// The list and the add form; 422 when the form comes back with errors.
async fn users_page(
    state: &AppState,
    session: &Session,
    f: &AddForm,
    errs: &Errors,
    notice: &'static str,
) -> Result<Response, PageError> {
    let users = state.store.list_users().await?;
    let role = if f.role.is_empty() {
        "operator"
    } else {
        &f.role
    };
    Ok(render(
        errs.status(),
        &UsersPage {
            frame: session.frame(Nav::Users),
            title: "Users",
            notice,
            csrf: &session.csrf,
            me: session.user.id,
            users,
            username: f.username.trim(),
            roles: role_options(role),
            errs,
            errors: errs.all(),
            min_chars: MIN_PASSWORD_CHARS,
        },
    ))
}

pub async fn list(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Query(q): Query<Done>,
) -> Result<Response, PageError> {
    // Only fixed sentences: nothing from the URL is echoed into the page.
    let notice = match q.done.as_str() {
        "added" => "User added: they can sign in now.",
        "removed" => "User removed; their sessions have ended.",
        _ => "",
    };
    users_page(
        &state,
        &session,
        &AddForm::default(),
        &Errors::default(),
        notice,
    )
    .await
}

pub async fn create(
    State(state): State<AppState>,
    AdminForm(session, f): AdminForm<AddForm>,
) -> Result<Response, PageError> {
    let mut errs = Errors::default();
    match NewUser::parse(&f.username, &f.role, &f.password, Some(&f.password_repeat)) {
        Err(errors) => {
            for e in errors {
                errs.add(e.field, e.message);
            }
        }
        Ok(new) => {
            let hash = hash(&new.password).await?;
            match state
                .store
                .create_user(
                    &new.username,
                    &hash,
                    new.role,
                    &by(&session),
                    state.clock.now(),
                )
                .await
            {
                Ok(created) => {
                    tracing::info!(user = %created.username, role = %created.role, by = %session.user.username, "user added");
                    return Ok(Redirect::to("/admin/users?done=added").into_response());
                }
                Err(e @ StoreError::Duplicate { .. }) => errs.add("username", e.to_string()),
                Err(e) => return Err(e.into()),
            }
        }
    }
    users_page(&state, &session, &f, &errs, "").await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Done {
    done: String,
}

#[derive(Template)]
#[template(path = "user.html")]
struct UserPage<'a> {
    frame: Frame,
    title: String,
    csrf: &'a str,
    user: &'a User,
    yourself: bool,
    notice: &'static str,
    last: String,
    roles: Vec<(Role, &'static str, bool)>,
    errs: &'a Errors,
    errors: Vec<(String, String)>,
    min_chars: usize,
}

/// One user: role, new password, remove; each form's errors beside its field.
async fn one_user_page(
    state: &AppState,
    session: &Session,
    id: i64,
    notice: &'static str,
    role_kept: Option<&str>,
    errs: &Errors,
) -> Result<Response, PageError> {
    let users = state.store.list_users().await?;
    let user = users
        .iter()
        .find(|u| u.id == id)
        .ok_or(PageError::NotFound("user"))?;
    Ok(render(
        errs.status(),
        &UserPage {
            frame: session.frame(Nav::Users),
            title: format!("User {}", user.username),
            csrf: &session.csrf,
            user,
            yourself: user.id == session.user.id,
            notice,
            last: last_sign_in(user),
            roles: role_options(role_kept.unwrap_or(user.role.as_str())),
            errs,
            errors: errs.all(),
            min_chars: MIN_PASSWORD_CHARS,
        },
    ))
}

pub async fn user_page(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<i64>,
    Query(q): Query<Done>,
) -> Result<Response, PageError> {
    // Only fixed sentences: nothing from the URL is echoed into the page.
    let notice = match q.done.as_str() {
        "role" => "Role changed.",
        "password" => "New password set; their sessions have ended.",
        _ => "",
    };
    one_user_page(&state, &session, id, notice, None, &Errors::default()).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RoleForm {
    role: String,
}

pub async fn set_role(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    AdminForm(session, f): AdminForm<RoleForm>,
) -> Result<Response, PageError> {
    let mut errs = Errors::default();
    match parse_role(&f.role) {
        Err(e) => errs.add(e.field, e.message),
        Ok(role) => match state
            .store
            .set_user_role(id, role, &by(&session), state.clock.now())
            .await
        {
            Ok(user) => {
                tracing::info!(user = %user.username, role = %user.role, by = %session.user.username, "user role set");
                return Ok(Redirect::to(&format!("/admin/users/{id}?done=role")).into_response());
            }
            Err(StoreError::NotFound { .. }) => return Err(PageError::NotFound("user")),
            Err(e @ StoreError::InUse(_)) => errs.add("role", e.to_string()),
            Err(e) => return Err(e.into()),
        },
    }
    one_user_page(&state, &session, id, "", Some(&f.role), &errs).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PasswordForm {
    password: String,
    password_repeat: String,
}

pub async fn reset_password(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    AdminForm(session, f): AdminForm<PasswordForm>,
) -> Result<Response, PageError> {
    let mut errs = Errors::default();
    match parse_new_password(&f.password, Some(&f.password_repeat)) {
        Err(e) => errs.add(e.field, e.message),
        Ok(password) => {
            let hash = hash(&password).await?;
            match state
                .store
                .reset_user_password(id, &hash, &by(&session), state.clock.now())
                .await
            {
                Ok(user) => {
                    tracing::info!(user = %user.username, by = %session.user.username, "user password reset");
                    return Ok(
                        Redirect::to(&format!("/admin/users/{id}?done=password")).into_response()
                    );
                }
                Err(StoreError::NotFound { .. }) => return Err(PageError::NotFound("user")),
                Err(e) => return Err(e.into()),
            }
        }
    }
    one_user_page(&state, &session, id, "", None, &errs).await
}

pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    AdminForm(session, crate::auth::NoFields {}): AdminForm<crate::auth::NoFields>,
) -> Result<Response, PageError> {
    let mut errs = Errors::default();
    if id == session.user.id {
        errs.add(
            "remove",
            "you cannot remove yourself; ask another administrator",
        );
    } else {
        match state
            .store
            .remove_user(id, &by(&session), state.clock.now())
            .await
        {
            Ok(user) => {
                tracing::info!(user = %user.username, by = %session.user.username, "user removed");
                return Ok(Redirect::to("/admin/users?done=removed").into_response());
            }
            Err(StoreError::NotFound { .. }) => return Err(PageError::NotFound("user")),
            Err(e @ StoreError::InUse(_)) => errs.add("remove", e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    one_user_page(&state, &session, id, "", None, &errs).await
}
