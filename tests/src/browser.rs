//! One headless Chromium for the browser tests, shared by every test of the process: Debian's `/usr/bin/chromium` driven by playwright-core through `tests/browser/driver.mjs`, spoken to in JSON lines.
//!
//! The browser is launched once (the first [`browser`] call) and pages are cheap, so a
//! test opens what it needs. The driver exits, closing the browser, when this process
//! ends and its stdin closes. Requests run concurrently in the driver; each waits for its
//! own answer, so tests may share the browser from their own threads and runtimes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// The shared browser.
#[derive(Debug)]
pub struct Browser {
    stdin: Mutex<ChildStdin>,
    waiting: Waiting,
    next: AtomicU64,
    /// Kept so the driver is a child of this process (its stdin closes when we exit).
    _child: Mutex<Child>,
    log: PathBuf,
}

/// The folder of package.json and driver.mjs.
fn driver_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// The Chromium binary: `KIOSK_CHROMIUM`, or Debian's.
fn chromium() -> PathBuf {
    std::env::var_os("KIOSK_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// The browser, launched on first use. Panics, saying how to install what is missing,
/// when node, the driver's packages or Chromium are not there: never a silent skip.
pub fn browser() -> &'static Browser {
    static BROWSER: OnceLock<Browser> = OnceLock::new();
    BROWSER.get_or_init(launch)
}

fn launch() -> Browser {
    let dir = driver_dir();
    let fix = "run `scripts/dev test` (it installs chromium, nodejs, npm and fonts-noto-cjk, and runs `npm ci` in tests/browser)";
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .exists(),
        "{} has no node_modules/playwright-core: {fix}",
        dir.display()
    );
    let chromium = chromium();
    assert!(
        chromium.exists(),
        "no Chromium at {} (KIOSK_CHROMIUM names another): {fix}",
        chromium.display()
    );
    let log = std::env::temp_dir().join(format!("kiosk-browser-driver-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).expect("browser driver log file");
    let mut child = Command::new("node")
        .arg(dir.join("driver.mjs"))
        .current_dir(&dir)
        .env("KIOSK_CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node ({e}): {fix}"));
    let stdin = child.stdin.take().expect("driver stdin");
    let stdout = child.stdout.take().expect("driver stdout");
    let waiting: Waiting = Arc::default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let dispatch = waiting.clone();
    std::thread::Builder::new()
        .name("browser-driver".into())
        .spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if msg.get("ready").is_some() {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(msg);
                    }
                    continue;
                }
                let Some(id) = msg["id"].as_u64() else {
                    continue;
                };
                let result = if msg["ok"] == true {
                    Ok(msg["value"].clone())
                } else {
                    Err(msg["error"].as_str().unwrap_or("?").to_owned())
                };
                let tx = dispatch
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                if let Some(tx) = tx {
                    let _ = tx.send(result);
                }
            }
            // The driver is gone: every request still waiting fails now, not at its deadline.
            dispatch
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        })
        .expect("driver reader thread");
    let hello = ready_rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            panic!(
                "the browser driver did not start within 60 s; its log {}:\n{}",
                log.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    eprintln!("browser: Chromium {} via playwright-core", hello["version"]);
    Browser {
        stdin: Mutex::new(stdin),
        waiting,
        next: AtomicU64::new(1),
        _child: Mutex::new(child),
        log,
    }
}

impl Browser {
    /// Sends one request and waits for its answer (the driver applies its own timeouts;
    /// `limit` is a backstop).
    async fn call(&self, op: &str, mut args: Value, limit: Duration) -> Result<Value, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        args["id"] = json!(id);
        args["op"] = json!(op);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        {
            let mut stdin = self.stdin.lock().unwrap_or_else(PoisonError::into_inner);
            writeln!(stdin, "{args}").map_err(|e| format!("the browser driver is gone: {e}"))?;
            stdin
                .flush()
                .map_err(|e| format!("the browser driver is gone: {e}"))?;
        }
        match tokio::time::timeout(limit + Duration::from_secs(15), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(format!(
                "the browser driver exited; its log is {}",
                self.log.display()
            )),
            Err(_) => Err(format!("no answer to {op} within {limit:?}")),
        }
    }

    /// A new page (its own context: storage, cookies) of `width`×`height` showing `url`.
    pub async fn open(&'static self, width: u32, height: u32, url: &str) -> Page {
        let id = self
            .call(
                "open",
                json!({"width": width, "height": height, "url": url}),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|e| panic!("open {url} at {width}×{height}: {e}"));
        Page {
            browser: self,
            id: id.as_str().unwrap_or_default().to_owned(),
            label: format!("{url} at {width}×{height}"),
        }
    }
}

/// A page of the shared browser; closed when dropped.
#[derive(Debug)]
pub struct Page {
    browser: &'static Browser,
    id: String,
    label: String,
}

impl Page {
    async fn call(&self, op: &str, mut args: Value, limit: Duration) -> Result<Value, String> {
        args["page"] = json!(self.id);
        self.browser.call(op, args, limit).await
    }

    /// The page's visible text, for failure messages.
    pub async fn body_text(&self) -> String {
        self.eval("document.body.innerText")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the JavaScript expression `js` is truthy (checked every frame), up to
    /// `limit`; panics naming `what` with the page's text.
    pub async fn wait_for(&self, what: &str, js: &str, limit: Duration) {
        let timeout = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        if let Err(e) = self
            .call("waitFor", json!({"js": js, "timeout": timeout}), limit)
            .await
        {
            let text = self.body_text().await;
            let errors = self.errors().await;
            panic!(
                "{}: waiting for {what} ({js}): {e}\nthe page's errors: {errors:?}\nthe page's text:\n{text}",
                self.label
            );
        }
    }

    /// Evaluates an expression (a promise is awaited); its JSON value.
    pub async fn eval(&self, js: &str) -> Value {
        self.call("eval", json!({"js": js}), Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{}: eval {js}: {e}", self.label))
    }

    /// The text of the first element matching `selector` ("" when none).
    pub async fn text(&self, selector: &str) -> String {
        let js = format!(
            "(document.querySelector({}) || {{}}).textContent || ''",
            json!(selector)
        );
        self.eval(&js).await.as_str().unwrap_or_default().to_owned()
    }

    async fn act(&self, op: &str, args: Value) {
        let what = args.to_string();
        if let Err(e) = self.call(op, args, Duration::from_secs(10)).await {
            let text = self.body_text().await;
            panic!("{}: {op} {what}: {e}\nthe page's text:\n{text}", self.label);
        }
    }

    pub async fn click(&self, selector: &str) {
        self.act("click", json!({"selector": selector})).await;
    }

    pub async fn fill(&self, selector: &str, value: &str) {
        self.act("fill", json!({"selector": selector, "value": value}))
            .await;
    }

    pub async fn select(&self, selector: &str, value: &str) {
        self.act("select", json!({"selector": selector, "value": value}))
            .await;
    }

    pub async fn check(&self, selector: &str) {
        self.act("check", json!({"selector": selector})).await;
    }

    /// A PNG of the viewport (or the whole page) at `path`; its folder is made.
    pub async fn screenshot(&self, path: &Path, full_page: bool) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        self.act(
            "screenshot",
            json!({"path": path.to_string_lossy(), "fullPage": full_page}),
        )
        .await;
    }

    /// Uncaught exceptions and console errors so far (a failed resource load excepted).
    pub async fn errors(&self) -> Vec<String> {
        self.call("errors", json!({}), Duration::from_secs(10))
            .await
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // Fire and forget: Drop cannot wait, and the answer does not matter.
        let id = self.browser.next.fetch_add(1, Ordering::Relaxed);
        let mut stdin = self
            .browser
            .stdin
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let _ = writeln!(
            stdin,
            "{}",
            json!({"id": id, "op": "close", "page": self.id})
        );
        let _ = stdin.flush();
    }
}
