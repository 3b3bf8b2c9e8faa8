//! `mailgate user ...`: the people who sign in to the admin UI. The rules are the users
//! page's (`core::user::NewUser`, `parse_role`, `parse_new_password`; the last administrator
//! stays in `Store`), so both refuse the same input in the same words.

use crate::cli::UserCommand;
use crate::{CmdResult, Failure, views};
use mailgate_core::Clock;
use mailgate_core::app::FieldError;
use mailgate_core::user::{NewUser, Role, User, parse_new_password, parse_role};
use mailgate_store::{Store, StoreError, passwords};
use std::io::Read;

/// Who the events say made the change.
const BY: &str = "the command line";

/// The core's field names in the words of this command line.
fn flag(field: &str) -> &str {
    match field {
        "username" => "USERNAME",
        "role" => "--role",
        "password" | "password_repeat" => "--password-stdin",
        other => other,
    }
}

fn bad_input(errors: &[FieldError]) -> Failure {
    Failure::BadInput(
        errors
            .iter()
            .map(|e| format!("{}: {}", flag(e.field), e.message))
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// The password on stdin, without the line ending `echo` adds.
fn read_password() -> Result<String, Failure> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Failure::BadInput(format!("--password-stdin: {e}")))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

fn hash(password: &mailgate_core::Secret) -> Result<String, Failure> {
    passwords::hash(password).map_err(Failure::Runtime)
}

pub async fn run(cmd: UserCommand, store: &Store, clock: &dyn Clock) -> CmdResult {
    match cmd {
        UserCommand::Add {
            username,
            role,
            password_stdin: _,
        } => {
            let password = read_password()?;
            let new = NewUser::parse(&username, &role, &password, None)
                .map_err(|errors| bad_input(&errors))?;
            let user = store
                .create_user(
                    &new.username,
                    &hash(&new.password)?,
                    new.role,
                    BY,
                    clock.now(),
                )
                .await
                .map_err(|e| match e {
                    StoreError::Duplicate { .. } => Failure::BadInput(format!("USERNAME: {e}")),
                    e => e.into(),
                })?;
            out!("Added {} {} (id {}).", user.role, user.username, user.id);
            Ok(())
        }
        UserCommand::List { json } => {
            let users = store.list_users().await?;
            if json {
                return views::print_json(&users);
            }
            for u in &users {
                out!("{}", user_line(u));
            }
            Ok(())
        }
        UserCommand::Remove { username } => {
            let user = store.user_by_name(&username).await?;
            let removed = store.remove_user(user.id, BY, clock.now()).await?;
            out!(
                "Removed {} {}; their sessions have ended.",
                removed.role,
                removed.username
            );
            Ok(())
        }
        UserCommand::SetRole { username, role } => {
            let role = parse_role(&role).map_err(|e| bad_input(&[e]))?;
            let before = store.user_by_name(&username).await?;
            let user = store
                .set_user_role(before.id, role, BY, clock.now())
                .await?;
            if before.role == user.role {
                out!("{} is already {}.", user.username, article_role(user.role));
            } else if user.role == Role::Admin {
                out!("{} is now an administrator.", user.username);
            } else {
                out!(
                    "{} is now {}; their sessions have ended.",
                    user.username,
                    article_role(user.role)
                );
            }
            Ok(())
        }
        UserCommand::ResetPassword {
            username,
            password_stdin: _,
        } => {
            let user = store.user_by_name(&username).await?;
            let password =
                parse_new_password(&read_password()?, None).map_err(|e| bad_input(&[e]))?;
            store
                .reset_user_password(user.id, &hash(&password)?, BY, clock.now())
                .await?;
            out!(
                "Set a new password for {}; their sessions have ended.",
                user.username
            );
            Ok(())
        }
    }
}

fn article_role(role: Role) -> &'static str {
    match role {
        Role::Admin => "an administrator",
        Role::Operator => "an operator",
    }
}

fn user_line(u: &User) -> String {
    format!(
        "{:>4}  {:<24} {:<8}  added {}  last sign-in {}",
        u.id,
        u.username,
        u.role.as_str(),
        u.created_at,
        u.last_login_at
            .map(|t| t.to_string())
            .unwrap_or_else(|| "never".into())
    )
}
