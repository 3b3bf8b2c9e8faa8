//! The admin UI's users page over HTTP and the `mailgate user` commands: a user added in the
//! form signs in with their role; passwords live only as argon2id hashes (not in the
//! database file, a page or the log); bad input comes back beside its field and stores
//! nothing; the last administrator stays; removing, demoting or re-passwording a user ends
//! their sessions at once; operators and forged forms change nothing; the CLI says the same.

use crate::fixtures::AdminUi;
use crate::support::{db_contains, text};
use reqwest::StatusCode;

const ADMIN_PASSWORD: &str = "admin CANARY passphrase 01";
const OLGA_PASSWORD: &str = "olga CANARY passphrase 02";
const ADA_PASSWORD: &str = "ada CANARY passphrase 03";
const NEW_PASSWORD: &str = "fresh CANARY passphrase 04";

/// The shared admin-UI fixture, with this module's helpers.
struct Ui(AdminUi);

impl std::ops::Deref for Ui {
    type Target = AdminUi;
    fn deref(&self) -> &AdminUi {
        &self.0
    }
}

impl Ui {
    /// A server whose first administrator `admin` came from the setup link, signed in.
    async fn start() -> Ui {
        Ui(AdminUi::with_admin(ADMIN_PASSWORD).await)
    }

    /// Posts `fields` with the session's CSRF token.
    async fn submit(&self, path: &str, cookie: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let csrf = self.csrf(cookie).await;
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        self.post(path, cookie, &form).await
    }

    fn add_with_cli(&self, user: &str, role: &str, password: &str) {
        self.env.ok(
            &["user", "add", user, "--role", role, "--password-stdin"],
            Some(&format!("{password}\n")),
        );
    }

    fn user_id(&self, name: &str) -> i64 {
        let list = self.env.json(&["user", "list", "--json"]);
        list.as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == name)
            .unwrap_or_else(|| panic!("no user {name}: {list}"))["id"]
            .as_i64()
            .unwrap()
    }

    /// Whether `cookie` still opens the admin UI (otherwise: a redirect to the login page).
    async fn signed_in(&self, cookie: &str) -> bool {
        let resp = self
            .http
            .get(self.url("/admin"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        match resp.status() {
            StatusCode::OK => true,
            StatusCode::SEE_OTHER => {
                assert_eq!(resp.headers().get("location").unwrap(), "/login");
                false
            }
            s => panic!("unexpected {s}"),
        }
    }

    /// Every event's kind (as `mailgate events` names it) and message, oldest first.
    fn events(&self) -> Vec<(String, String)> {
        self.env
            .ok(&["events", "--limit", "1000"], None)
            .lines()
            .map(|line| {
                let mut parts = line.split_whitespace();
                let (_at, kind) = (parts.next().unwrap(), parts.next().unwrap());
                let message = line.split_once(kind).unwrap().1.trim().to_owned();
                (kind.to_owned(), message)
            })
            .collect()
    }
}

/// The list row of user `name`.
fn row<'a>(html: &'a str, name: &str) -> &'a str {
    html.split("<tr id=\"user-")
        .skip(1)
        .map(|r| r.split("</tr>").next().unwrap())
        .find(|r| r.contains(&format!(">{name}</a>")))
        .unwrap_or_else(|| panic!("no row for {name}: {html}"))
}

/// The error shown beside `field`.
fn beside<'a>(html: &'a str, field: &str) -> &'a str {
    html.split(&format!("data-field=\"{field}\">"))
        .nth(1)
        .unwrap_or_else(|| panic!("no error beside {field}: {html}"))
        .split("</span>")
        .next()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_added_in_the_form_signs_in_with_their_role() {
    let ui = Ui::start().await;
    let (status, dashboard) = ui.get("/admin", &ui.admin).await;
    assert_eq!(status, 200);
    assert!(
        dashboard.contains("href=\"/admin/users\""),
        "nav link: {dashboard}"
    );
    let (status, html) = ui.get("/admin/users", &ui.admin).await;
    assert_eq!(status, 200, "{html}");
    let me = row(&html, "admin");
    assert!(
        me.contains("<td>admin</td>") && me.contains("id=\"you\"") && !me.contains("never"),
        "role, you, and the sign-in of the setup link: {me}"
    );

    for (name, role, password) in [
        ("olga", "operator", OLGA_PASSWORD),
        ("ada", "admin", ADA_PASSWORD),
    ] {
        let resp = ui
            .submit(
                "/admin/users",
                &ui.admin,
                &[
                    ("username", name),
                    ("role", role),
                    ("password", password),
                    ("password_repeat", password),
                ],
            )
            .await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{name}");
        assert_eq!(
            resp.headers().get("location").unwrap(),
            "/admin/users?done=added"
        );
    }
    let (_, html) = ui.get("/admin/users", &ui.admin).await;
    let olga = row(&html, "olga");
    assert!(
        olga.contains("<td>operator</td>") && olga.contains("never") && !olga.contains("you"),
        "{olga}"
    );
    assert!(row(&html, "ada").contains("<td>admin</td>"));

    // The operator signs in and is refused the users page; the new admin is not.
    let olga = ui.sign_in("olga", OLGA_PASSWORD).await;
    let (status, dashboard) = ui.get("/admin", &olga).await;
    assert_eq!(status, 200);
    assert!(dashboard.contains("olga (operator)") && !dashboard.contains("/admin/users"));
    let (status, html) = ui.get("/admin/users", &olga).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
    let ada = ui.sign_in("ada", ADA_PASSWORD).await;
    let (status, html) = ui.get("/admin/users", &ada).await;
    assert_eq!(status, 200);
    assert!(row(&html, "ada").contains("id=\"you\""));
    assert!(
        !row(&html, "olga").contains("never"),
        "the last sign-in is recorded: {html}"
    );

    // The passwords exist only as argon2id hashes: not in the database file, a page or the log.
    let db = ui.env.db_path();
    assert!(db_contains(&db, "$argon2id$"));
    for pw in [ADMIN_PASSWORD, OLGA_PASSWORD, ADA_PASSWORD] {
        assert!(!db_contains(&db, pw), "a password in the database file");
    }
    let olga_id = ui.user_id("olga");
    for path in [
        "/admin",
        "/admin/users",
        &format!("/admin/users/{olga_id}"),
        "/admin/events",
    ] {
        let (status, html) = ui.get(path, &ui.admin).await;
        assert_eq!(status, 200, "{path}");
        assert!(!html.contains("CANARY"), "a password in {path}");
    }
    let log = ui.log();
    assert!(!log.contains("CANARY"), "a password in the log");
    assert!(log.contains("user added"), "the change is logged");

    let events = ui.events();
    let created: Vec<&str> = events
        .iter()
        .filter(|(k, _)| k == "user.created")
        .map(|(_, m)| m.as_str())
        .collect();
    assert_eq!(created.len(), 3, "{events:?}");
    assert!(
        created[1].contains("\"admin\" added the operator \"olga\""),
        "{created:?}"
    );
    assert!(events.iter().all(|(_, m)| !m.contains("CANARY")));
}

/// A form submission that must come back with `says` beside `field`, keeping `kept`.
struct BadInput<'a> {
    form: &'a [(&'a str, &'a str)],
    field: &'a str,
    says: &'a str,
    kept: &'a [&'a str],
}

async fn refused_beside_the_field(ui: &Ui, path: &str, cases: &[BadInput<'_>]) {
    let before = ui.env.dump_db().await;
    for c in cases {
        let resp = ui.submit(path, &ui.admin, c.form).await;
        assert_eq!(
            resp.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path} {:?}",
            c.form
        );
        let html = resp.text().await.unwrap();
        assert!(
            beside(&html, c.field).contains(&c.says.replace('"', "&#34;")),
            "{} says {:?}: {html}",
            c.field,
            c.says
        );
        for k in c.kept {
            assert!(html.contains(k), "{k:?} kept for {:?}: {html}", c.form);
        }
        assert!(html.contains("Nothing was saved"), "{html}");
        assert!(!html.contains("CANARY"), "a password echoed: {html}");
        assert_eq!(
            ui.env.dump_db().await,
            before,
            "nothing stored for {path} {:?}",
            c.form
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_user_input_comes_back_beside_its_field_and_stores_nothing() {
    let ui = Ui::start().await;
    ui.add_with_cli("olga", "operator", OLGA_PASSWORD);
    let short = "CANARY 4 ch";
    let pw = [
        ("password", OLGA_PASSWORD),
        ("password_repeat", OLGA_PASSWORD),
    ];
    let with_pw = |fields: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        [fields, &pw[..]].concat()
    };
    let (short_pw, mismatch, duplicate, empty, bad_role, spaced) = (
        [
            ("username", "ada"),
            ("role", "admin"),
            ("password", short),
            ("password_repeat", short),
        ],
        [
            ("username", "ada"),
            ("role", "admin"),
            ("password", ADA_PASSWORD),
            ("password_repeat", "ada CANARY passphrase 3"),
        ],
        with_pw(&[("username", "olga"), ("role", "admin")]),
        with_pw(&[("username", "  "), ("role", "admin")]),
        with_pw(&[("username", "ada"), ("role", "boss")]),
        with_pw(&[("username", "ada lovelace"), ("role", "operator")]),
    );
    let admin_selected = "value=\"admin\" selected";
    refused_beside_the_field(
        &ui,
        "/admin/users",
        &[
            BadInput {
                form: &short_pw,
                field: "password",
                says: "the password must be at least 12 characters",
                kept: &["value=\"ada\"", admin_selected],
            },
            BadInput {
                form: &mismatch,
                field: "password_repeat",
                says: "the two passwords differ",
                kept: &["value=\"ada\"", admin_selected],
            },
            BadInput {
                form: &duplicate,
                field: "username",
                says: "a user named \"olga\" already exists; choose another name",
                kept: &["value=\"olga\"", admin_selected],
            },
            BadInput {
                form: &empty,
                field: "username",
                says: "expected 1 to 64 characters without spaces",
                kept: &[admin_selected],
            },
            BadInput {
                form: &bad_role,
                field: "role",
                says: "\"boss\" is not a valid role: expected one of: admin, operator",
                kept: &["value=\"ada\""],
            },
            BadInput {
                form: &spaced,
                field: "username",
                says: "\"ada lovelace\" is not a valid user name",
                kept: &["value=\"ada lovelace\"", "value=\"operator\" selected"],
            },
        ],
    )
    .await;

    // The user page's forms follow the same rules.
    let olga = ui.user_id("olga");
    refused_beside_the_field(
        &ui,
        &format!("/admin/users/{olga}/password"),
        &[
            BadInput {
                form: &[("password", short), ("password_repeat", short)],
                field: "password",
                says: "the password must be at least 12 characters",
                kept: &[],
            },
            BadInput {
                form: &[
                    ("password", NEW_PASSWORD),
                    ("password_repeat", OLGA_PASSWORD),
                ],
                field: "password_repeat",
                says: "the two passwords differ",
                kept: &[],
            },
        ],
    )
    .await;
    refused_beside_the_field(
        &ui,
        &format!("/admin/users/{olga}/role"),
        &[BadInput {
            form: &[("role", "boss")],
            field: "role",
            says: "\"boss\" is not a valid role",
            kept: &[],
        }],
    )
    .await;

    // The command line refuses the same input in the same words, on one line, exit 2.
    let before = ui.env.dump_db().await;
    let ada = ["user", "add", "ada", "--role", "admin", "--password-stdin"];
    let cases: [(&[&str], &str, &str); 7] = [
        (
            &ada,
            short,
            "--password-stdin: the password must be at least 12 characters",
        ),
        (
            &["user", "add", "olga", "--password-stdin"],
            ADA_PASSWORD,
            "USERNAME: a user named \"olga\" already exists; choose another name",
        ),
        (
            &["user", "add", " ", "--password-stdin"],
            ADA_PASSWORD,
            "USERNAME: invalid user name: expected 1 to 64 characters without spaces",
        ),
        (
            &["user", "add", "ada", "--role", "boss", "--password-stdin"],
            ADA_PASSWORD,
            "--role: \"boss\" is not a valid role: expected one of: admin, operator",
        ),
        (
            &["user", "set-role", "olga", "--role", "boss"],
            "",
            "--role: \"boss\" is not a valid role",
        ),
        (
            &["user", "reset-password", "olga"],
            short,
            "--password-stdin: the password must be at least 12 characters",
        ),
        (
            &["user", "remove", "ghost"],
            "",
            "no user named or numbered \"ghost\"",
        ),
    ];
    for (args, stdin, says) in cases {
        let out = ui.env.run(args, Some(stdin));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?} says {says:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(
            err.starts_with("error: ") && !err.contains("CANARY"),
            "{err}"
        );
        assert_eq!(ui.env.dump_db().await, before, "{args:?} changed nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_administrator_can_be_neither_removed_nor_demoted() {
    let ui = Ui::start().await;
    ui.add_with_cli("olga", "operator", OLGA_PASSWORD);
    let admin = ui.user_id("admin");
    let before = ui.env.dump_db().await;

    let resp = ui
        .submit(
            &format!("/admin/users/{admin}/role"),
            &ui.admin,
            &[("role", "operator")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(
        beside(&html, "role").contains("&#34;admin&#34; is the last administrator"),
        "{html}"
    );
    assert!(html.contains("value=\"operator\" selected"), "choice kept");
    let resp = ui
        .submit(&format!("/admin/users/{admin}/remove"), &ui.admin, &[])
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(
        beside(&html, "remove").contains("you cannot remove yourself"),
        "{html}"
    );
    assert!(
        !html.contains("id=\"remove-user\""),
        "no button for yourself"
    );
    for (args, says) in [
        (
            &["user", "remove", "admin"][..],
            "\"admin\" is the last administrator",
        ),
        (
            &["user", "set-role", "admin", "--role", "operator"],
            "\"admin\" is the last administrator",
        ),
    ] {
        let out = ui.env.run(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
        assert_eq!(text(&out.stderr).lines().count(), 1);
    }
    assert_eq!(ui.env.dump_db().await, before, "nothing changed");
    assert!(ui.signed_in(&ui.admin).await, "still signed in");
    assert_eq!(
        ui.get("/admin/users", &ui.admin).await.0,
        200,
        "still admin"
    );

    // With a second administrator, one may remove the other, who is signed out at once;
    // then the remaining one is the last again.
    ui.env
        .ok(&["user", "set-role", "olga", "--role", "admin"], None);
    let olga = ui.sign_in("olga", OLGA_PASSWORD).await;
    let resp = ui
        .submit(&format!("/admin/users/{admin}/remove"), &olga, &[])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(
        !ui.signed_in(&ui.admin).await,
        "the removed admin is signed out"
    );
    let olga_id = ui.user_id("olga");
    let resp = ui
        .submit(
            &format!("/admin/users/{olga_id}/role"),
            &olga,
            &[("role", "operator")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(beside(&resp.text().await.unwrap(), "role").contains("is the last administrator"));
    let out = ui.env.run(&["user", "remove", "olga"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_demoting_or_resetting_a_user_ends_their_sessions_at_once() {
    let ui = Ui::start().await;
    ui.add_with_cli("olga", "operator", OLGA_PASSWORD);
    ui.add_with_cli("ada", "admin", ADA_PASSWORD);
    let (olga_id, ada_id) = (ui.user_id("olga"), ui.user_id("ada"));
    let olga = ui.sign_in("olga", OLGA_PASSWORD).await;
    let ada = ui.sign_in("ada", ADA_PASSWORD).await;
    assert!(ui.signed_in(&olga).await && ui.signed_in(&ada).await);

    // Demoted: signed out; signing in again gives an operator.
    let resp = ui
        .submit(
            &format!("/admin/users/{ada_id}/role"),
            &ui.admin,
            &[("role", "operator")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (_, page) = ui
        .get(resp.headers()["location"].to_str().unwrap(), &ui.admin)
        .await;
    assert!(page.contains("id=\"role-now\">operator<"), "{page}");
    assert!(!ui.signed_in(&ada).await, "the demoted admin is signed out");
    let ada = ui.sign_in("ada", ADA_PASSWORD).await;
    assert_eq!(ui.get("/admin/users", &ada).await.0, StatusCode::FORBIDDEN);

    // A new password: signed out; the old password no longer opens, the new one does.
    let resp = ui
        .submit(
            &format!("/admin/users/{olga_id}/password"),
            &ui.admin,
            &[
                ("password", NEW_PASSWORD),
                ("password_repeat", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(!ui.signed_in(&olga).await, "signed out by the new password");
    assert_eq!(
        ui.login("olga", OLGA_PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let olga = ui.sign_in("olga", NEW_PASSWORD).await;
    assert!(!db_contains(&ui.env.db_path(), NEW_PASSWORD));

    // Removed: signed out, and cannot sign in again.
    let resp = ui
        .submit(&format!("/admin/users/{olga_id}/remove"), &ui.admin, &[])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        resp.headers().get("location").unwrap(),
        "/admin/users?done=removed"
    );
    assert!(!ui.signed_in(&olga).await, "the removed user is signed out");
    assert_eq!(
        ui.login("olga", NEW_PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (_, html) = ui.get("/admin/users", &ui.admin).await;
    assert!(!html.contains(">olga<"), "{html}");
    assert_eq!(
        ui.get(&format!("/admin/users/{olga_id}"), &ui.admin)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert!(
        ui.signed_in(&ui.admin).await,
        "the acting admin stays signed in"
    );

    let events = ui.events();
    let changes: Vec<(&str, &str)> = events
        .iter()
        .filter(|(k, _)| k == "user.updated" || k == "user.removed")
        .map(|(k, m)| (k.as_str(), m.as_str()))
        .collect();
    assert_eq!(changes.len(), 3, "{events:?}");
    assert_eq!(changes[0].0, "user.updated");
    assert!(
        changes[0].1.contains("\"ada\" from admin to operator"),
        "{changes:?}"
    );
    assert!(changes[1].1.contains("new password for \"olga\""));
    assert_eq!(changes[2].0, "user.removed");
    assert!(events.iter().all(|(_, m)| !m.contains("CANARY")));
    assert!(!ui.log().contains("CANARY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_is_refused_on_every_users_route() {
    let ui = Ui::start().await;
    ui.add_with_cli("olga", "operator", OLGA_PASSWORD);
    let olga = ui.sign_in("olga", OLGA_PASSWORD).await;
    let admin = ui.user_id("admin");
    let before = ui.env.dump_db().await;
    for path in ["/admin/users".to_owned(), format!("/admin/users/{admin}")] {
        let (status, html) = ui.get(&path, &olga).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert!(html.contains("Administrators only"), "{html}");
    }
    let posts: [(String, Vec<(&str, &str)>); 4] = [
        (
            "/admin/users".into(),
            vec![
                ("username", "mallory"),
                ("role", "admin"),
                ("password", ADA_PASSWORD),
                ("password_repeat", ADA_PASSWORD),
            ],
        ),
        (
            format!("/admin/users/{admin}/role"),
            vec![("role", "operator")],
        ),
        (
            format!("/admin/users/{admin}/password"),
            vec![
                ("password", NEW_PASSWORD),
                ("password_repeat", NEW_PASSWORD),
            ],
        ),
        (format!("/admin/users/{admin}/remove"), vec![]),
    ];
    for (path, fields) in &posts {
        let resp = ui.submit(path, &olga, fields).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(ui.env.dump_db().await, before, "nothing changed");
    assert!(ui.signed_in(&ui.admin).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_forms_without_the_csrf_token_are_refused() {
    let ui = Ui::start().await;
    ui.add_with_cli("olga", "operator", OLGA_PASSWORD);
    let olga_id = ui.user_id("olga");
    let olga = ui.sign_in("olga", OLGA_PASSWORD).await;
    let before = ui.env.dump_db().await;
    let posts: [(String, Vec<(&str, &str)>); 4] = [
        (
            "/admin/users".into(),
            vec![
                ("username", "mallory"),
                ("role", "admin"),
                ("password", ADA_PASSWORD),
                ("password_repeat", ADA_PASSWORD),
            ],
        ),
        (
            format!("/admin/users/{olga_id}/role"),
            vec![("role", "admin")],
        ),
        (
            format!("/admin/users/{olga_id}/password"),
            vec![
                ("password", NEW_PASSWORD),
                ("password_repeat", NEW_PASSWORD),
            ],
        ),
        (format!("/admin/users/{olga_id}/remove"), vec![]),
    ];
    for csrf in [None, Some("forged")] {
        for (path, fields) in &posts {
            let mut form = fields.clone();
            form.extend(csrf.map(|c| ("csrf", c)));
            let resp = ui.post(path, &ui.admin, &form).await;
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path} csrf {csrf:?}");
            assert!(resp.text().await.unwrap().contains("CSRF check failed"));
        }
    }
    assert_eq!(ui.env.dump_db().await, before, "nothing changed");
    assert!(ui.signed_in(&olga).await, "olga keeps her session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_commands_round_trip() {
    let ui = Ui::start().await;
    let out = ui.env.ok(
        &["user", "add", "olga", "--password-stdin"],
        Some(&format!("{OLGA_PASSWORD}\n")),
    );
    assert!(out.contains("Added operator olga"), "{out}");
    let olga = ui.sign_in("olga", OLGA_PASSWORD).await;

    let list = ui.env.json(&["user", "list", "--json"]);
    let users = list.as_array().unwrap();
    assert_eq!(users.len(), 2, "{list}");
    assert_eq!(users[0]["username"], "admin");
    assert_eq!(users[0]["role"], "admin");
    assert_eq!(users[1]["username"], "olga");
    assert_eq!(users[1]["role"], "operator");
    assert!(users[1]["created_at"].is_number() && users[1]["last_login_at"].is_number());
    assert!(!list.to_string().contains("argon2"), "no hash in the list");
    let table = ui.env.ok(&["user", "list"], None);
    assert!(
        table
            .lines()
            .any(|l| l.contains("olga") && l.contains("operator")),
        "{table}"
    );

    let out = ui
        .env
        .ok(&["user", "set-role", "olga", "--role", "admin"], None);
    assert!(out.contains("olga is now an administrator"), "{out}");
    assert!(ui.signed_in(&olga).await, "a promotion keeps the session");
    assert_eq!(ui.get("/admin/users", &olga).await.0, 200, "now an admin");
    let out = ui
        .env
        .ok(&["user", "set-role", "olga", "--role", "operator"], None);
    assert!(out.contains("sessions have ended"), "{out}");
    assert!(!ui.signed_in(&olga).await, "a demotion ends the session");

    let olga = ui.sign_in("olga", OLGA_PASSWORD).await;
    ui.env.ok(
        &["user", "reset-password", "olga", "--password-stdin"],
        Some(&format!("{NEW_PASSWORD}\n")),
    );
    assert!(
        !ui.signed_in(&olga).await,
        "a new password ends the session"
    );
    assert_eq!(
        ui.login("olga", OLGA_PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let olga = ui.sign_in("olga", NEW_PASSWORD).await;

    let out = ui.env.ok(&["user", "remove", "olga"], None);
    assert!(out.contains("Removed operator olga"), "{out}");
    assert!(!ui.signed_in(&olga).await, "removal ends the session");
    let list = ui.env.json(&["user", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    let kinds: Vec<String> = ui.events().into_iter().map(|(k, _)| k).collect();
    let users: Vec<&str> = kinds
        .iter()
        .map(String::as_str)
        .filter(|k| k.starts_with("user."))
        .collect();
    assert_eq!(
        users,
        [
            "user.created",
            "user.created",
            "user.updated",
            "user.updated",
            "user.updated",
            "user.removed"
        ],
        "{kinds:?}"
    );
    for pw in [OLGA_PASSWORD, NEW_PASSWORD] {
        assert!(!db_contains(&ui.env.db_path(), pw));
    }
}
