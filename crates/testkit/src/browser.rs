//! A real headless Chromium for tests, driven through chromedriver with the W3C WebDriver
//! JSON protocol (<https://www.w3.org/TR/webdriver2/>) over plain HTTP.
//!
//! [`Browser::start`] launches `/usr/bin/chromedriver` on a free loopback port, in a process
//! group of its own, and opens one session with a fresh profile directory. Dropping the
//! [`Browser`] ends that session, kills the process group it started (by id), and removes
//! the profile. Every wait is bounded; the only pause is the poll interval inside a wait.
//!
//! Debian's `chromium` and `chromium-driver` must be installed (`scripts/test` does it); a
//! missing one is an error, never a skipped test.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::time::Instant;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL_HINT: &str = "install with: apt-get install chromium chromium-driver \
                            (scripts/test does it)";

/// As root Chromium refuses to start without `--no-sandbox`; the background-networking
/// flags stop it from phoning home, which on a closed network ends in refused connections.
/// `--window-size` sizes the window: headless Chromium 156 keeps room for its toolbars, so
/// the viewport (and a screenshot) is 1280x757.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
];

/// How long [`Browser::find`] waits for an element to appear.
pub const FIND_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval of every bounded wait.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// chromedriver answers `/status` within a second or two; a cold start on a loaded
/// 2-core machine can take longer.
const DRIVER_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound on any single WebDriver command; page loads are bounded below it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const PAGE_LOAD_TIMEOUT_MS: u64 = 30_000;
const SCRIPT_TIMEOUT_MS: u64 = 30_000;
/// Ending the session in `Drop` blocks the thread, so it gets a short leash.
const DROP_QUIT_TIMEOUT: Duration = Duration::from_secs(5);
/// The W3C web element identifier key.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A failed WebDriver command, with chromedriver's `error` code (e.g. `no such element`,
/// `javascript error`) and `message`. Reach it with `anyhow::Error::downcast_ref`.
#[derive(Debug)]
pub struct WebDriverError {
    pub command: String,
    pub status: u16,
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WebDriver {} failed ({}): {}: {}",
            self.command, self.status, self.error, self.message
        )
    }
}

impl std::error::Error for WebDriverError {}

impl WebDriverError {
    /// Errors of a page that is being replaced by the next one; a wait polls on through them.
    fn is_mid_navigation(&self) -> bool {
        self.error == "stale element reference"
            || self.error == "no such execution context"
            || (self.error == "javascript error"
                && (self.message.contains("document unloaded")
                    || self.message.contains("Execution context was destroyed")))
    }
}

/// Whether a wait should poll again after `error` instead of failing.
fn is_mid_navigation(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<WebDriverError>()
        .is_some_and(WebDriverError::is_mid_navigation)
}

/// A headless Chromium session. See the module documentation.
pub struct Browser {
    session: Arc<Session>,
    /// Whether the session still needs ending (false after [`Browser::quit`]).
    session_open: bool,
    /// Outlives `Drop::drop` (fields drop after it), so the session can be ended first.
    driver: Driver,
}

/// An element of the current page, found by [`Browser::find`] or [`Browser::find_all`].
#[derive(Clone)]
pub struct Element {
    session: Arc<Session>,
    id: String,
}

/// The HTTP side of one WebDriver session.
struct Session {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    base: String,
    driver_addr: SocketAddr,
    id: String,
}

/// The chromedriver process and its scratch directory (profile and log).
struct Driver {
    child: Child,
    addr: SocketAddr,
    /// Removed after `Driver`'s `Drop::drop` has killed the processes writing to it.
    scratch: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session (window
    /// 1280x900, a new empty profile). Errors clearly if Chromium or chromedriver is missing.
    pub async fn start() -> anyhow::Result<Browser> {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(binary).exists() {
                bail!("{binary} is missing: {INSTALL_HINT}");
            }
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(COMMAND_TIMEOUT)
            .build()
            .context("building the WebDriver HTTP client")?;
        let driver = Driver::start(&http).await?;

        let profile = driver.scratch.path().join("profile");
        std::fs::create_dir(&profile)
            .with_context(|| format!("creating the profile directory {}", profile.display()))?;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": {
                        "implicit": 0,
                        "pageLoad": PAGE_LOAD_TIMEOUT_MS,
                        "script": SCRIPT_TIMEOUT_MS,
                    },
                    "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
                }
            }
        });
        let root = format!("http://{}", driver.addr);
        let created = send(
            &http,
            reqwest::Method::POST,
            &format!("{root}/session"),
            Some(capabilities),
            "new session",
        )
        .await
        .map_err(|e| anyhow!("{e:#}\nchromedriver log:\n{}", driver.log_tail()))?;
        let id = created
            .get("sessionId")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("new session: no sessionId in {created}"))?
            .to_string();
        let session = Session {
            http,
            base: format!("{root}/session/{id}"),
            driver_addr: driver.addr,
            id,
        };
        Ok(Browser {
            session: Arc::new(session),
            session_open: true,
            driver,
        })
    }

    /// The process id of the chromedriver this browser started (its process group id too).
    pub fn chromedriver_pid(&self) -> u32 {
        self.driver.child.id()
    }

    /// The temporary Chromium profile, removed on drop.
    pub fn profile_dir(&self) -> PathBuf {
        self.driver.scratch.path().join("profile")
    }

    /// Navigates and waits for the page to load (bounded by the session's page-load timeout).
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.session
            .post("/url", json!({ "url": url }), &format!("navigate to {url}"))
            .await?;
        Ok(())
    }

    pub async fn current_url(&self) -> anyhow::Result<String> {
        string(self.session.get("/url", "get current URL").await?, "URL")
    }

    pub async fn title(&self) -> anyhow::Result<String> {
        string(self.session.get("/title", "get title").await?, "title")
    }

    pub async fn page_source(&self) -> anyhow::Result<String> {
        string(
            self.session.get("/source", "get page source").await?,
            "page source",
        )
    }

    /// Text of the whole page (`document.body.innerText`; empty without a body).
    pub async fn body_text(&self) -> anyhow::Result<String> {
        let text = self
            .execute(
                "return document.body ? document.body.innerText : '';",
                Vec::new(),
            )
            .await?;
        string(text, "document.body.innerText")
    }

    /// The first element matching `css`, waiting up to [`FIND_TIMEOUT`] for it to exist.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        let deadline = Instant::now() + FIND_TIMEOUT;
        loop {
            let found = match self.session.find_from("", css).await {
                Ok(found) => found,
                Err(e) if is_mid_navigation(&e) && Instant::now() < deadline => None,
                Err(e) => return Err(e),
            };
            match found {
                Some(element) => return Ok(element),
                None if Instant::now() >= deadline => {
                    let url = self.current_url().await.unwrap_or_default();
                    bail!(
                        "no element matches CSS `{css}` after {} s on {url}",
                        FIND_TIMEOUT.as_secs()
                    );
                }
                None => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    /// Every element matching `css` now (no waiting; possibly none).
    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        let found = self
            .session
            .post(
                "/elements",
                json!({ "using": "css selector", "value": css }),
                &format!("find elements `{css}`"),
            )
            .await?;
        let Value::Array(references) = found else {
            bail!("find elements `{css}`: expected an array, got {found}");
        };
        references
            .iter()
            .map(|reference| self.session.element(reference))
            .collect()
    }

    /// Waits until the page's body text contains `needle`.
    pub async fn wait_for_text(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = match self.body_text().await {
                Ok(text) => text,
                Err(e) if is_mid_navigation(&e) && Instant::now() < deadline => String::new(),
                Err(e) => return Err(e),
            };
            if text.contains(needle) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the page never showed {needle:?} within {timeout:?}; it shows:\n{}",
                    excerpt(&text)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until the current URL satisfies `pred`, and returns it.
    pub async fn wait_for_url(
        &self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let url = match self.current_url().await {
                Ok(url) => url,
                Err(e) if is_mid_navigation(&e) && Instant::now() < deadline => String::new(),
                Err(e) => return Err(e),
            };
            if pred(&url) {
                return Ok(url);
            }
            if Instant::now() >= deadline {
                bail!("the URL never became the expected one within {timeout:?}; it is {url}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Resizes the window (W3C "Set Window Rect"), e.g. to a phone's 390 px width. Headless
    /// Chromium keeps room for toolbars in the height, not the width: `innerWidth` is
    /// `width`.
    pub async fn set_window_size(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.session
            .post(
                "/window/rect",
                json!({ "width": width, "height": height }),
                "set window rect",
            )
            .await?;
        Ok(())
    }

    /// Makes pages see `prefers-color-scheme: dark` (or light), through chromedriver's
    /// DevTools passthrough (`Emulation.setEmulatedMedia`); reload to see its effect.
    pub async fn prefer_dark(&self, dark: bool) -> anyhow::Result<()> {
        let scheme = if dark { "dark" } else { "light" };
        self.session
            .post(
                "/goog/cdp/execute",
                json!({
                    "cmd": "Emulation.setEmulatedMedia",
                    "params": { "features": [{ "name": "prefers-color-scheme", "value": scheme }] },
                }),
                "emulate prefers-color-scheme",
            )
            .await?;
        Ok(())
    }

    /// Answers the open `confirm()`/`alert()` dialog: accept (OK) or dismiss (Cancel).
    /// Returns the dialog's text.
    pub async fn answer_dialog(&self, accept: bool) -> anyhow::Result<String> {
        // The dialog opens right after the click that caused it: wait for it, bounded.
        let deadline = Instant::now() + FIND_TIMEOUT;
        let text = loop {
            match self.session.get("/alert/text", "get dialog text").await {
                Ok(v) => break string(v, "dialog text")?,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(POLL_INTERVAL).await,
                Err(e) => return Err(e.context("no dialog opened")),
            }
        };
        let path = if accept {
            "/alert/accept"
        } else {
            "/alert/dismiss"
        };
        self.session.post(path, json!({}), "answer dialog").await?;
        Ok(text)
    }

    /// Runs `script` as the body of a function (`arguments[i]` are `args`) and returns its
    /// result.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.session
            .post(
                "/execute/sync",
                json!({ "script": script, "args": args }),
                "execute script",
            )
            .await
    }

    /// PNG bytes of the viewport.
    pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        let encoded = string(
            self.session.get("/screenshot", "take screenshot").await?,
            "screenshot",
        )?;
        STANDARD
            .decode(encoded)
            .context("take screenshot: the PNG is not valid base64")
    }

    /// Writes a screenshot to `<dir>/<name>.png` (creating `dir`) and returns that path.
    pub async fn save_screenshot(&self, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.screenshot().await?;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the screenshot directory {}", dir.display()))?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)
            .with_context(|| format!("writing the screenshot {}", path.display()))?;
        Ok(path)
    }

    /// Cookies visible to the current page, as WebDriver reports them: `name`, `value`,
    /// `path`, `domain`, `secure`, `httpOnly`, `sameSite`, `expiry`.
    pub async fn cookies(&self) -> anyhow::Result<Vec<Value>> {
        match self.session.get("/cookie", "get all cookies").await? {
            Value::Array(cookies) => Ok(cookies),
            other => bail!("get all cookies: expected an array, got {other}"),
        }
    }

    pub async fn delete_all_cookies(&self) -> anyhow::Result<()> {
        self.session
            .send(
                reqwest::Method::DELETE,
                "/cookie",
                None,
                "delete all cookies",
            )
            .await?;
        Ok(())
    }

    /// Ends the session (Chromium exits); dropping then stops chromedriver.
    pub async fn quit(mut self) -> anyhow::Result<()> {
        self.session_open = false;
        self.session
            .send(reqwest::Method::DELETE, "", None, "delete session")
            .await?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.session_open {
            // Synchronous on purpose: a drop cannot await. Ending the session lets Chromium
            // exit cleanly; the driver's drop then kills whatever is left.
            if let Err(e) = self.session.delete_blocking() {
                eprintln!(
                    "browser session {} did not end cleanly ({e:#}); killing it",
                    self.session.id
                );
            }
        }
    }
}

impl Element {
    pub async fn click(&self) -> anyhow::Result<()> {
        self.post("/click", json!({}), "element click").await?;
        Ok(())
    }

    /// WebDriver "element send keys": focuses the element and types `text`.
    pub async fn type_text(&self, text: &str) -> anyhow::Result<()> {
        self.post("/value", json!({ "text": text }), "element send keys")
            .await?;
        Ok(())
    }

    pub async fn clear(&self) -> anyhow::Result<()> {
        self.post("/clear", json!({}), "element clear").await?;
        Ok(())
    }

    /// The rendered text of the element.
    pub async fn text(&self) -> anyhow::Result<String> {
        string(self.get("/text", "get element text").await?, "element text")
    }

    /// The DOM property `name` if it is set, else the HTML attribute `name`. Non-string
    /// properties come back as their JSON text (`true`, `3`).
    pub async fn attr(&self, name: &str) -> anyhow::Result<Option<String>> {
        let property = self
            .get(&format!("/property/{name}"), "get element property")
            .await?;
        let value = match property {
            Value::Null => {
                self.get(&format!("/attribute/{name}"), "get element attribute")
                    .await?
            }
            other => other,
        };
        Ok(match value {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        })
    }

    /// For a `<select>`: clicks its `<option value="...">`.
    pub async fn select_option(&self, value: &str) -> anyhow::Result<()> {
        let css = format!("option[value=\"{}\"]", css_string_escape(value));
        match self
            .session
            .find_from(&format!("/element/{}", self.id), &css)
            .await?
        {
            Some(option) => option.click().await,
            None => bail!("the <select> has no <option value={value:?}>"),
        }
    }

    async fn get(&self, path: &str, what: &str) -> anyhow::Result<Value> {
        self.session
            .get(&format!("/element/{}{path}", self.id), what)
            .await
    }

    async fn post(&self, path: &str, body: Value, what: &str) -> anyhow::Result<Value> {
        self.session
            .post(&format!("/element/{}{path}", self.id), body, what)
            .await
    }
}

impl Session {
    async fn get(&self, path: &str, what: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, None, what).await
    }

    async fn post(&self, path: &str, body: Value, what: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::POST, path, Some(body), what)
            .await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        send(&self.http, method, &url, body, what).await
    }

    /// The first match of `css` under `scope` ("" for the document, "/element/<id>" for an
    /// element), or `None` if nothing matches yet.
    async fn find_from(
        self: &Arc<Session>,
        scope: &str,
        css: &str,
    ) -> anyhow::Result<Option<Element>> {
        let url = format!("{}{scope}/element", self.base);
        let body = json!({ "using": "css selector", "value": css });
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("find element `{css}`: chromedriver unreachable"))?;
        let status = response.status();
        let reply: Value = response
            .json()
            .await
            .with_context(|| format!("find element `{css}`: reply is not JSON ({status})"))?;
        let value = reply.get("value").cloned().unwrap_or(Value::Null);
        if status.is_success() {
            return self.element(&value).map(Some);
        }
        if value.get("error").and_then(Value::as_str) == Some("no such element") {
            return Ok(None);
        }
        Err(webdriver_error(
            &format!("find element `{css}`"),
            status,
            &value,
        ))
    }

    fn element(self: &Arc<Session>, reference: &Value) -> anyhow::Result<Element> {
        let id = reference
            .get(ELEMENT_KEY)
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("not a web element reference: {reference}"))?;
        Ok(Element {
            session: Arc::clone(self),
            id: id.to_string(),
        })
    }

    /// `DELETE /session/<id>` without an async runtime, for `Drop`.
    fn delete_blocking(&self) -> anyhow::Result<()> {
        let mut stream = TcpStream::connect_timeout(&self.driver_addr, DROP_QUIT_TIMEOUT)?;
        stream.set_read_timeout(Some(DROP_QUIT_TIMEOUT))?;
        stream.set_write_timeout(Some(DROP_QUIT_TIMEOUT))?;
        write!(
            stream,
            "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.id, self.driver_addr
        )?;
        // chromedriver answers only once Chromium has quit, but keeps the connection open
        // despite `Connection: close`: the status line is all we wait for.
        let mut reply = Vec::new();
        let mut chunk = [0u8; 512];
        while !reply.contains(&b'\n') {
            let read = stream.read(&mut chunk)?;
            if read == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..read]);
        }
        let reply = String::from_utf8_lossy(&reply);
        let status_line = reply.lines().next().unwrap_or_default();
        if status_line.split(' ').nth(1) == Some("200") {
            Ok(())
        } else {
            bail!("chromedriver answered {status_line:?}")
        }
    }
}

impl Driver {
    /// Spawns chromedriver and waits until it is ready. The free port is only probed, so
    /// another process can take it first; chromedriver then exits and gets another try.
    async fn start(http: &reqwest::Client) -> anyhow::Result<Driver> {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        loop {
            let mut driver = Driver::spawn()?;
            match driver.wait_ready(http).await {
                Ok(()) => return Ok(driver),
                Err(e) if attempt < ATTEMPTS && driver.exited() => {
                    eprintln!("chromedriver exited before it was ready ({e:#}); trying again");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn spawn() -> anyhow::Result<Driver> {
        let scratch = tempfile::Builder::new()
            .prefix("mailgate-browser-")
            .tempdir()
            .context("creating a temporary directory for the browser")?;
        let port = free_loopback_port()?;
        let log_path = scratch.path().join("chromedriver.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // A group of its own, so Drop can end chromedriver and the Chromium processes it
            // started by this one id.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {CHROMEDRIVER}: {INSTALL_HINT}"))?;
        Ok(Driver {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            scratch,
        })
    }

    /// Polls `GET /status` until chromedriver reports ready.
    async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let url = format!("http://{}/status", self.addr);
        let deadline = Instant::now() + DRIVER_READY_TIMEOUT;
        loop {
            let ready = match http.get(&url).timeout(Duration::from_secs(2)).send().await {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v.pointer("/value/ready").and_then(Value::as_bool))
                    .unwrap_or(false),
                Err(_) => false,
            };
            if ready {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "chromedriver on {} exited ({status}) before it was ready; its log:\n{}",
                    self.addr,
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "chromedriver on {} was not ready within {DRIVER_READY_TIMEOUT:?}; its log:\n{}",
                    self.addr,
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn log_tail(&self) -> String {
        const LINES: usize = 40;
        let text = std::fs::read_to_string(self.scratch.path().join("chromedriver.log"))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LINES)..].join("\n")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group id is chromedriver's pid (`process_group(0)`); this reaches the Chromium
        // processes it started, even if the session could not be ended.
        let pgid = self.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Screenshot directory for people to look at: `$MAILGATE_SCREENSHOTS` or
/// `<repo>/target/screenshots`.
pub fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MAILGATE_SCREENSHOTS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .nth(2)
        .unwrap_or(manifest_dir)
        .join("target")
        .join("screenshots")
}

/// One WebDriver command: the `value` of a success, or chromedriver's `error`/`message`.
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
    what: &str,
) -> anyhow::Result<Value> {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("WebDriver {what}: no answer from chromedriver ({url})"))?;
    let status = response.status();
    let reply: Value = response
        .json()
        .await
        .with_context(|| format!("WebDriver {what}: the reply is not JSON ({status})"))?;
    let value = reply.get("value").cloned().unwrap_or(Value::Null);
    if status.is_success() {
        Ok(value)
    } else {
        Err(webdriver_error(what, status, &value))
    }
}

fn webdriver_error(what: &str, status: reqwest::StatusCode, value: &Value) -> anyhow::Error {
    let field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    anyhow::Error::new(WebDriverError {
        command: what.to_string(),
        status: status.as_u16(),
        error: field("error"),
        message: field("message"),
    })
}

fn string(value: Value, what: &str) -> anyhow::Result<String> {
    match value {
        Value::String(s) => Ok(s),
        other => bail!("expected the {what} as a string, got {other}"),
    }
}

/// A port nobody listens on now; chromedriver binds it a moment later.
fn free_loopback_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("finding a free loopback port for chromedriver")?;
    Ok(listener.local_addr()?.port())
}

/// Escapes `value` for use inside a double-quoted CSS string.
fn css_string_escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                escaped.push('\\');
                escaped.push(c);
            }
            '\n' => escaped.push_str("\\a "),
            _ => escaped.push(c),
        }
    }
    escaped
}

/// The start of a page's text, for an error message.
fn excerpt(text: &str) -> String {
    const CHARS: usize = 2000;
    let mut out: String = text.chars().take(CHARS).collect();
    if text.chars().count() > CHARS {
        out.push('…');
    }
    out
}
