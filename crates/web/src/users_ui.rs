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
use crate::auth::Session;
use crate::forms::{Errors, form_page};
use crate::html::unavailable;
use crate::html::{escape, page};
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailgate_core::user::{
    MIN_PASSWORD_CHARS, NewUser, Role, User, parse_new_password, parse_role,
};
use mailgate_store::{StoreError, passwords};
use serde::Deserialize;

fn no_such_user() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        "<h1>No such user</h1><p>They may have been removed meanwhile.</p><p><a href=\"/admin/users\">Back to users</a></p>",
    )
}

/// Who the events say made a change.
fn by(session: &Session) -> String {
    format!("{:?}", session.user.username)
}

/// Hashes a parsed password on the blocking pool (argon2 would stall an async worker); a
/// failure (the system's random source) is reported, not stored.
async fn hash(password: &mailgate_core::Secret) -> Result<String, Response> {
    passwords::hash_off_thread(password.clone()).await.map_err(|e| {
        tracing::error!(error = %e, "password hashing failed");
        page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            "<h1 class=\"bad\">The password could not be stored</h1><p>Nothing was changed. Try again.</p>",
        )
    })
}

fn role_options(current: &str) -> String {
    Role::ALL
        .iter()
        .map(|r| {
            let selected = if parse_role(current).ok() == Some(*r) {
                " selected"
            } else {
                ""
            };
            let meaning = match r {
                Role::Admin => "administrator: everything, including apps, users and API tokens",
                Role::Operator => "operator: authorize and test accounts; no settings",
            };
            format!("<option value=\"{r}\"{selected}>{meaning}</option>")
        })
        .collect()
}

fn password_fields(errs: &Errors, label: &str) -> String {
    // Never a value attribute: a password is not written back into a page.
    format!(
        "<p><label for=\"password\">{label} (at least {MIN_PASSWORD_CHARS} characters)</label><br><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" size=\"40\"> {pw_err}</p>\
<p><label for=\"password_repeat\">Password again</label><br><input id=\"password_repeat\" name=\"password_repeat\" type=\"password\" autocomplete=\"new-password\" size=\"40\"> {repeat_err}</p>",
        pw_err = errs.for_field("password"),
        repeat_err = errs.for_field("password_repeat"),
    )
}

fn last_sign_in(u: &User) -> String {
    u.last_login_at
        .map(|t| t.to_string())
        .unwrap_or_else(|| "never".into())
}

fn user_rows(session: &Session, users: &[User]) -> String {
    let rows: String = users
        .iter()
        .map(|u| {
            let you = if u.id == session.user.id {
                " <span class=\"badge ok\" id=\"you\">you</span>"
            } else {
                ""
            };
            format!(
                "<tr id=\"user-{id}\"><td><a href=\"/admin/users/{id}\">{name}</a>{you}</td><td>{role}</td><td>{created}</td><td>{last}</td></tr>",
                id = u.id,
                name = escape(&u.username),
                role = u.role,
                created = u.created_at,
                last = last_sign_in(u),
            )
        })
        .collect();
    format!(
        "<table><tr><th>user name</th><th>role</th><th>added (UTC)</th><th>last sign-in (UTC)</th></tr>{rows}</table>"
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AddForm {
    csrf: Option<String>,
    username: String,
    role: String,
    password: String,
    password_repeat: String,
}

fn add_form(session: &Session, f: &AddForm, errs: &Errors) -> String {
    let role = if f.role.is_empty() {
        "operator"
    } else {
        &f.role
    };
    format!(
        "<h2 id=\"new-user\">Add a user</h2>{summary}<form method=\"post\" action=\"/admin/users\">{csrf}\
<p><label for=\"username\">User name</label><br><input id=\"username\" name=\"username\" value=\"{name}\" size=\"40\" autocomplete=\"off\"> {name_err}<br><small>What they type to sign in: 1 to 64 characters without spaces.</small></p>\
<p><label for=\"role\">Role</label><br><select id=\"role\" name=\"role\">{options}</select> {role_err}</p>\
{passwords}<p><button type=\"submit\" id=\"add-user\">Add user</button></p></form>",
        summary = errs.summary(),
        csrf = session.csrf_field(),
        name = escape(f.username.trim()),
        name_err = errs.for_field("username"),
        options = role_options(role),
        role_err = errs.for_field("role"),
        passwords = password_fields(errs, "Password"),
    )
}

/// The list and the add form; 422 when the form comes back with errors.
async fn users_page(state: &AppState, session: &Session, f: &AddForm, errs: &Errors) -> Response {
    let users = match state.store.list_users().await {
        Ok(u) => u,
        Err(e) => return unavailable(e),
    };
    let body = format!(
        "<h1>Users</h1><p>The people who sign in here. Administrators change everything; operators authorize and test accounts. Open a user to change their role, set a new password or remove them: each ends their sessions at once. The last administrator always stays.</p>{list}{form}",
        list = user_rows(session, &users),
        form = add_form(session, f, errs),
    );
    form_page(session, "Users", &body, errs)
}

pub async fn list(State(state): State<AppState>, session: Session) -> Response {
    if let Err(r) = session.require_admin_page() {
        return r;
    }
    users_page(&state, &session, &AddForm::default(), &Errors::default()).await
}

pub async fn create(
    State(state): State<AppState>,
    session: Session,
    Form(f): Form<AddForm>,
) -> Response {
    if let Err(r) = session.admin_form(f.csrf.as_deref()) {
        return r;
    }
    let mut errs = Errors::default();
    match NewUser::parse(&f.username, &f.role, &f.password, Some(&f.password_repeat)) {
        Err(errors) => {
            for e in errors {
                errs.add(e.field, e.message);
            }
        }
        Ok(new) => {
            let hash = match hash(&new.password).await {
                Ok(h) => h,
                Err(r) => return r,
            };
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
                    return Redirect::to("/admin/users").into_response();
                }
                Err(e @ StoreError::Duplicate { .. }) => errs.add("username", e.to_string()),
                Err(e) => return unavailable(e),
            }
        }
    }
    users_page(&state, &session, &f, &errs).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Done {
    done: String,
}

/// One user: role, new password, remove; each form's errors beside its field.
async fn one_user_page(
    state: &AppState,
    session: &Session,
    id: i64,
    notice: &str,
    role_kept: Option<&str>,
    errs: &Errors,
) -> Response {
    let users = match state.store.list_users().await {
        Ok(u) => u,
        Err(e) => return unavailable(e),
    };
    let Some(user) = users.iter().find(|u| u.id == id) else {
        return no_such_user();
    };
    let yourself = user.id == session.user.id;
    let notice = if notice.is_empty() {
        String::new()
    } else {
        format!("<p class=\"ok\" id=\"notice\" role=\"status\">{notice}</p>")
    };
    let remove = if yourself {
        format!(
            "<p id=\"remove-self\">You cannot remove yourself; another administrator can. {}</p>",
            errs.for_field("remove")
        )
    } else {
        format!(
            "<form method=\"post\" action=\"/admin/users/{id}/remove\" onsubmit=\"return confirm('Remove this user? Their sessions end at once.')\">{csrf}<button type=\"submit\" id=\"remove-user\">Remove user</button> {err}</form>",
            csrf = session.csrf_field(),
            err = errs.for_field("remove"),
        )
    };
    let own = if yourself {
        " This is you: your own sessions end too, and you sign in again."
    } else {
        ""
    };
    let body = format!(
        "<h1>User <span id=\"username\">{name}</span></h1>{notice}{summary}\
<p>Role <strong id=\"role-now\">{role}</strong>; added {created} (UTC); last sign-in {last}.</p>\
<h2>Role</h2><form method=\"post\" action=\"/admin/users/{id}/role\">{csrf}<p><select id=\"role\" name=\"role\">{options}</select> <button type=\"submit\" id=\"change-role\">Change role</button> {role_err}<br><small>Someone who is no longer an administrator is signed out at once.{own}</small></p></form>\
<h2>New password</h2><form method=\"post\" action=\"/admin/users/{id}/password\">{csrf}{passwords}<p><button type=\"submit\" id=\"reset-password\">Set password</button><br><small>Their sessions end at once.{own}</small></p></form>\
<h2>Remove</h2>{remove}<p><a href=\"/admin/users\">Back to users</a></p>",
        name = escape(&user.username),
        summary = errs.summary(),
        role = user.role,
        created = user.created_at,
        last = last_sign_in(user),
        csrf = session.csrf_field(),
        options = role_options(role_kept.unwrap_or(user.role.as_str())),
        role_err = errs.for_field("role"),
        passwords = password_fields(errs, "New password"),
    );
    form_page(session, "User", &body, errs)
}

pub async fn user_page(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Query(q): Query<Done>,
) -> Response {
    if let Err(r) = session.require_admin_page() {
        return r;
    }
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
    csrf: Option<String>,
    role: String,
}

pub async fn set_role(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<RoleForm>,
) -> Response {
    if let Err(r) = session.admin_form(f.csrf.as_deref()) {
        return r;
    }
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
                return Redirect::to(&format!("/admin/users/{id}?done=role")).into_response();
            }
            Err(StoreError::NotFound { .. }) => return no_such_user(),
            Err(e @ StoreError::InUse(_)) => errs.add("role", e.to_string()),
            Err(e) => return unavailable(e),
        },
    }
    one_user_page(&state, &session, id, "", Some(&f.role), &errs).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PasswordForm {
    csrf: Option<String>,
    password: String,
    password_repeat: String,
}

pub async fn reset_password(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<PasswordForm>,
) -> Response {
    if let Err(r) = session.admin_form(f.csrf.as_deref()) {
        return r;
    }
    let mut errs = Errors::default();
    match parse_new_password(&f.password, Some(&f.password_repeat)) {
        Err(e) => errs.add(e.field, e.message),
        Ok(password) => {
            let hash = match hash(&password).await {
                Ok(h) => h,
                Err(r) => return r,
            };
            match state
                .store
                .reset_user_password(id, &hash, &by(&session), state.clock.now())
                .await
            {
                Ok(user) => {
                    tracing::info!(user = %user.username, by = %session.user.username, "user password reset");
                    return Redirect::to(&format!("/admin/users/{id}?done=password"))
                        .into_response();
                }
                Err(StoreError::NotFound { .. }) => return no_such_user(),
                Err(e) => return unavailable(e),
            }
        }
    }
    one_user_page(&state, &session, id, "", None, &errs).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

pub async fn remove(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Err(r) = session.admin_form(f.csrf.as_deref()) {
        return r;
    }
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
                return Redirect::to("/admin/users").into_response();
            }
            Err(StoreError::NotFound { .. }) => return no_such_user(),
            Err(e @ StoreError::InUse(_)) => errs.add("remove", e.to_string()),
            Err(e) => return unavailable(e),
        }
    }
    one_user_page(&state, &session, id, "", None, &errs).await
}
