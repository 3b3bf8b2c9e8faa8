//! The browser harness against a tiny form app served from the test: a real headless
//! Chromium types, selects, submits, follows the redirect and keeps the session cookie.
//!
//! These tests fail (never skip) without Chromium and chromedriver; `scripts/test`
//! installs them.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use axum::Form;
use axum::Router;
use axum::extract::Query;
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use mailgate_testkit::browser::{Browser, FIND_TIMEOUT, WebDriverError, screenshot_dir};
use serde::Deserialize;

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
const REDIRECT_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn form_submission_sets_cookie_and_shows_values() -> anyhow::Result<()> {
    let app = serve_form_app().await?;
    let browser = Browser::start().await?;

    browser.goto(&format!("{app}/")).await?;
    ensure!(
        browser.title().await? == "Sign up",
        "title: {}",
        browser.title().await?
    );
    let name = browser.find("#name").await?;
    name.type_text("placeholder").await?;
    name.clear().await?;
    name.type_text("Ada Lovelace").await?;
    ensure!(name.attr("value").await?.as_deref() == Some("Ada Lovelace"));
    let color = browser.find("select[name=color]").await?;
    color.select_option("green").await?;
    ensure!(color.attr("value").await?.as_deref() == Some("green"));
    ensure!(browser.find_all("select option").await?.len() == 3);
    let submit = browser.find("button[type=submit]").await?;
    ensure!(submit.text().await? == "Save");
    submit.click().await?;

    let url = browser
        .wait_for_url(|url| url.contains("/result"), REDIRECT_TIMEOUT)
        .await?;
    ensure!(url.starts_with(&app), "redirected outside the app: {url}");
    browser
        .wait_for_text("Name: Ada Lovelace", REDIRECT_TIMEOUT)
        .await?;
    let text = browser.body_text().await?;
    ensure!(text.contains("Color: green"), "result page: {text}");
    ensure!(browser.page_source().await?.contains("<h1>Saved</h1>"));

    let cookies = browser.cookies().await?;
    let sid = cookies
        .iter()
        .find(|c| c["name"] == "sid")
        .with_context(|| format!("no sid cookie in {cookies:?}"))?;
    ensure!(sid["value"] == "s3cr3t", "sid: {sid}");
    ensure!(sid["httpOnly"] == true, "sid not HttpOnly: {sid}");
    ensure!(sid["sameSite"] == "Lax", "sid not SameSite=Lax: {sid}");
    // HttpOnly really hides it from scripts.
    let script_cookies = browser.execute("return document.cookie;", vec![]).await?;
    ensure!(
        !script_cookies.to_string().contains("sid"),
        "{script_cookies}"
    );
    let sum = browser
        .execute(
            "return arguments[0] + arguments[1];",
            vec![2.into(), 3.into()],
        )
        .await?;
    ensure!(sum == 5, "execute returned {sum}");

    let png = browser.screenshot().await?;
    ensure!(png.len() > 8 && png[..8] == PNG_SIGNATURE, "not a PNG");
    let saved = browser
        .save_screenshot(&screenshot_dir(), "testkit-browser-form-result")
        .await?;
    let written = std::fs::read(&saved).with_context(|| saved.display().to_string())?;
    ensure!(written.starts_with(&PNG_SIGNATURE), "{}", saved.display());
    ensure!(saved.starts_with(screenshot_dir()));

    browser.delete_all_cookies().await?;
    ensure!(browser.cookies().await?.is_empty());
    browser.quit().await
}

#[tokio::test]
async fn find_gives_up_with_a_clear_error() -> anyhow::Result<()> {
    let app = serve_form_app().await?;
    let browser = Browser::start().await?;
    browser.goto(&format!("{app}/")).await?;

    let started = Instant::now();
    let missing = browser.find("#never-there").await;
    let waited = started.elapsed();
    let Err(error) = missing else {
        anyhow::bail!("found an element that does not exist");
    };
    let error = format!("{error:#}");
    ensure!(error.contains("#never-there"), "error: {error}");
    ensure!(
        error.contains(&app),
        "error does not name the page: {error}"
    );
    ensure!(
        waited >= FIND_TIMEOUT && waited < FIND_TIMEOUT + Duration::from_secs(5),
        "waited {waited:?}"
    );

    // WebDriver errors carry chromedriver's `error` and `message`.
    let error = browser
        .execute("throw new Error('boom');", vec![])
        .await
        .err()
        .context("the script did not fail")?;
    let webdriver = error
        .downcast_ref::<WebDriverError>()
        .with_context(|| format!("not a WebDriverError: {error:#}"))?;
    ensure!(webdriver.error == "javascript error", "{webdriver}");
    ensure!(webdriver.message.contains("boom"), "{webdriver}");
    ensure!(
        format!("{error:#}").contains("javascript error: "),
        "{error:#}"
    );
    Ok(())
}

/// Dropping the browser ends chromedriver and Chromium and removes the profile.
#[tokio::test]
async fn drop_ends_processes_and_removes_profile() -> anyhow::Result<()> {
    let browser = Browser::start().await?;
    let profile = browser.profile_dir();
    let driver_pid = browser.chromedriver_pid();
    ensure!(!processes_using(&profile).is_empty(), "no Chromium running");
    drop(browser);

    ensure!(!profile.exists(), "{} still exists", profile.display());
    ensure!(
        !std::path::Path::new(&format!("/proc/{driver_pid}")).exists(),
        "chromedriver {driver_pid} still running"
    );
    // Chromium's helpers may take a moment to be reaped by init.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_using(&profile);
        if left.is_empty() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "Chromium processes left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --- the form app ----------------------------------------------------------------------

#[derive(Deserialize)]
struct Submission {
    name: String,
    color: String,
}

/// Serves the form app on a free loopback port; returns `http://127.0.0.1:<port>`.
async fn serve_form_app() -> anyhow::Result<String> {
    let app = Router::new()
        .route("/", get(form_page))
        .route("/submit", axum::routing::post(submit))
        .route("/result", get(result_page));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

async fn form_page() -> Html<&'static str> {
    Html(
        r#"<!doctype html>
<html><head><title>Sign up</title></head><body>
<form method="post" action="/submit">
  <label>Name <input id="name" name="name" type="text"></label>
  <label>Colour <select name="color">
    <option value="red">Red</option>
    <option value="green">Green</option>
    <option value="blue">Blue</option>
  </select></label>
  <button type="submit">Save</button>
</form>
</body></html>"#,
    )
}

async fn submit(Form(submission): Form<Submission>) -> Response {
    let location = format!(
        "/result?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("name", &submission.name)
            .append_pair("color", &submission.color)
            .finish()
    );
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(
        SET_COOKIE,
        HeaderValue::from_static("sid=s3cr3t; Path=/; HttpOnly; SameSite=Lax"),
    );
    match HeaderValue::from_str(&location) {
        Ok(location) => {
            headers.insert(LOCATION, location);
            response
        }
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

async fn result_page(Query(submission): Query<Submission>) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><title>Saved</title></head><body>\
         <h1>Saved</h1><p>Name: {}</p><p>Color: {}</p></body></html>",
        escape_html(&submission.name),
        escape_html(&submission.color)
    ))
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Pids whose command line mentions `path` (Chromium gets the profile as `--user-data-dir`).
fn processes_using(path: &std::path::Path) -> Vec<u32> {
    let needle = path.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}
