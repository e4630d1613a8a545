//! Headless Chromium driven over the Chrome DevTools Protocol: a fresh
//! profile per browser, one page target attached in flat mode on the
//! browser's websocket, every event of the page kept for the test to read
//! (console calls, exceptions, log entries).

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Json>>>>;

/// The browser process and its profile; both go with it.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    out: mpsc::UnboundedSender<String>,
    pending: Pending,
    events: Arc<Mutex<Vec<Json>>>,
    next_id: AtomicU64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Chromium binary: `RPS_CHROMIUM`, else `chromium` (Debian's package)
/// or `chromium-browser` on the PATH.
pub fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("RPS_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "this test needs a headless Chromium and none was found (looked for `chromium` and \
         `chromium-browser` on the PATH, or RPS_CHROMIUM). Install Debian's package: \
         `scripts/dev-env.sh up` does it (ensure_packages), or `apt-get install chromium`"
    );
}

/// Where tests leave what a person should look at (screenshots).
pub fn output_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("test-output");
    std::fs::create_dir_all(&dir).expect("test output folder");
    dir
}

impl Browser {
    /// Starts Chromium headless with a window of `width`×`height`.
    pub async fn launch(width: u32, height: u32) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("rps-chromium-")
            .tempdir()
            .expect("profile dir");
        let exe = chromium();
        let mut child = Command::new(&exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        // The websocket address is announced on stderr; the rest of stderr
        // is drained so the browser never blocks on it.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(url) = line.split("DevTools listening on ").nth(1) {
                        let _ = tx.send(url.trim().to_string());
                        sent = true;
                        continue;
                    }
                    let _ = tx.send(format!("!{line}"));
                }
            }
        });
        let mut said = Vec::new();
        let url = loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(l) if l.starts_with('!') => said.push(l[1..].to_string()),
                Ok(url) => break url,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "{} did not announce its DevTools websocket within 30 s; it said:\n{}",
                        exe.display(),
                        said.join("\n")
                    );
                }
            }
        };
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("DevTools websocket {url}: {e}"));
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(text) = out_rx.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
        });
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<Vec<Json>>> = Arc::default();
        {
            let (pending, events) = (pending.clone(), events.clone());
            tokio::spawn(async move {
                while let Some(Ok(msg)) = stream.next().await {
                    let Ok(text) = msg.to_text() else { continue };
                    let Ok(v) = serde_json::from_str::<Json>(text) else {
                        continue;
                    };
                    match v.get("id").and_then(Json::as_u64) {
                        Some(id) => {
                            if let Some(tx) = pending.lock().unwrap().remove(&id) {
                                let _ = tx.send(v);
                            }
                        }
                        None => events.lock().unwrap().push(v),
                    }
                }
            });
        }
        Browser {
            child,
            _profile: profile,
            out,
            pending,
            events,
            next_id: AtomicU64::new(1),
        }
    }

    /// One command (on a page's session, or the browser's); its `result`.
    pub async fn call(&self, session: Option<&str>, method: &str, params: Json) -> Json {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.out.send(msg.to_string()).expect("websocket writer");
        let reply = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .unwrap_or_else(|_| panic!("no answer to {method} within 60 s"))
            .expect("websocket reader");
        if let Some(e) = reply.get("error") {
            panic!("{method} failed: {e}");
        }
        reply["result"].clone()
    }

    /// Opens a blank page, attaches to it and turns on the events the test
    /// reads; returns its session.
    pub async fn new_page(&self, width: u32, height: u32) -> Page<'_> {
        let target = self
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        let session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        let page = Page {
            browser: self,
            session,
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({})).await;
        }
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        page
    }

    /// Every event received so far, in order.
    pub fn events(&self) -> Vec<Json> {
        self.events.lock().unwrap().clone()
    }
}

/// One attached page.
pub struct Page<'a> {
    browser: &'a Browser,
    session: String,
}

impl Page<'_> {
    pub async fn call(&self, method: &str, params: Json) -> Json {
        self.browser.call(Some(&self.session), method, params).await
    }

    pub async fn navigate(&self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url})).await;
        assert!(
            r.get("errorText").is_none(),
            "navigating to {url}: {}",
            r["errorText"]
        );
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns
    /// its value as JSON; an exception fails the test.
    pub async fn eval(&self, expression: &str) -> Json {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating in the page threw: {e}\n{expression}");
        }
        r["result"]["value"].clone()
    }

    /// A PNG of the whole page, however long.
    pub async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let metrics = self.call("Page.getLayoutMetrics", json!({})).await;
        let size = &metrics["cssContentSize"];
        let (w, h) = (
            size["width"].as_f64().unwrap_or(1440.0),
            size["height"].as_f64().unwrap_or(900.0),
        );
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1},
                }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 screenshot");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).expect("write screenshot");
    }

    /// The page's events (console, exceptions, log) so far.
    pub fn events(&self) -> Vec<Json> {
        self.browser
            .events()
            .into_iter()
            .filter(|e| e["sessionId"].as_str() == Some(self.session.as_str()))
            .collect()
    }
}

/// What went wrong in the page among `events`: uncaught exceptions,
/// `console.error`/`console.assert` calls and log entries of level error;
/// `allow` may excuse some log entries (by their text).
pub fn page_errors(events: &[Json], allow: impl Fn(&Json) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for e in events {
        let p = &e["params"];
        match e["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                out.push(format!("exception: {}", p["exceptionDetails"]));
            }
            Some("Runtime.consoleAPICalled")
                if matches!(p["type"].as_str(), Some("error" | "assert")) =>
            {
                out.push(format!("console.{}: {}", p["type"], p["args"]));
            }
            Some("Log.entryAdded")
                if p["entry"]["level"].as_str() == Some("error") && !allow(&p["entry"]) =>
            {
                out.push(format!(
                    "log ({}): {} {}",
                    p["entry"]["source"], p["entry"]["text"], p["entry"]["url"]
                ));
            }
            _ => {}
        }
    }
    out
}
