//! A small W3C WebDriver client over HTTP (reqwest), enough to drive headless Chromium through
//! `chromedriver`: sessions, navigation, elements by CSS, clicks, keys, scripts, screenshots,
//! and Chrome DevTools commands (for phone-sized emulation). Every wait has a deadline.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stride_tests::{free_port, Proc};

/// The key W3C WebDriver uses for element references.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Finds an executable on `PATH`.
pub fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in names {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// A running `chromedriver`.
pub struct Driver {
    pub base: String,
    proc: Proc,
    http: reqwest::Client,
}

impl Drop for Driver {
    /// Ends the browsers this chromedriver started (a test that panics never quits its session),
    /// then chromedriver itself (by `Proc`'s drop).
    fn drop(&mut self) {
        for pid in descendants(self.proc.pid()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Every process below `root`, from /proc.
fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

impl Driver {
    pub async fn start(chromedriver: &Path, logs: &Path) -> Self {
        let port = free_port();
        let proc = Proc::spawn(
            "chromedriver",
            chromedriver,
            &[format!("--port={port}"), "--allowed-ips=127.0.0.1".into()],
            logs,
        );
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_else(|e| panic!("http client: {e}"));
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready:\n{}",
                proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { base, proc, http }
    }

    /// A new headless browser session.
    pub async fn session(&self, chromium: &Path) -> Session {
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "goog:loggingPrefs": { "browser": "ALL" },
                    "goog:chromeOptions": {
                        "binary": chromium.display().to_string(),
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--window-size=1280,900",
                            "--no-first-run",
                            "--no-default-browser-check",
                            "--disable-extensions",
                            "--disable-crash-reporter",
                            "--disable-breakpad",
                        ],
                    },
                },
            },
        });
        let r = send(
            &self.http,
            reqwest::Method::POST,
            &format!("{}/session", self.base),
            Some(caps),
        )
        .await
        .unwrap_or_else(|e| panic!("new session: {e}"));
        let id = r["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {r}"))
            .to_string();
        Session {
            url: format!("{}/session/{id}", self.base),
            http: self.http.clone(),
        }
    }
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let v: Value = resp.json().await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "{url}: {status}: {} {}",
            v["value"]["error"].as_str().unwrap_or(""),
            v["value"]["message"]
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
        ));
    }
    Ok(v["value"].clone())
}

/// One browser session.
pub struct Session {
    url: String,
    http: reqwest::Client,
}

/// An element reference.
#[derive(Clone, Debug)]
pub struct El(String);

impl Session {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        send(&self.http, method, &format!("{}{path}", self.url), body).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url }))
            .await
            .unwrap_or_else(|e| panic!("navigate: {e}"));
    }

    pub async fn find(&self, css: &str) -> Option<El> {
        let v = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await
            .ok()?;
        v[ELEMENT_KEY].as_str().map(|s| El(s.to_string()))
    }

    pub async fn find_all(&self, css: &str) -> Vec<El> {
        match self
            .post(
                "/elements",
                json!({ "using": "css selector", "value": css }),
            )
            .await
        {
            Ok(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v[ELEMENT_KEY].as_str().map(|s| El(s.to_string())))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Clicks `el`, first scrolling it to the middle of the window (so that the sticky top bar
    /// cannot be over it, which WebDriver's own scrolling does not avoid).
    pub async fn click(&self, el: &El) -> Result<(), String> {
        self.post(
            "/execute/sync",
            json!({
                "script": "arguments[0].scrollIntoView({block: 'center', inline: 'nearest'});",
                "args": [{ ELEMENT_KEY: el.0 }],
            }),
        )
        .await?;
        self.post(&format!("/element/{}/click", el.0), json!({}))
            .await
            .map(|_| ())
    }

    pub async fn clear(&self, el: &El) -> Result<(), String> {
        self.post(&format!("/element/{}/clear", el.0), json!({}))
            .await
            .map(|_| ())
    }

    pub async fn send_keys(&self, el: &El, text: &str) -> Result<(), String> {
        self.post(&format!("/element/{}/value", el.0), json!({ "text": text }))
            .await
            .map(|_| ())
    }

    pub async fn text(&self, el: &El) -> Option<String> {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{}/text", el.0),
            None,
        )
        .await
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// A Chrome DevTools Protocol command.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Result<Value, String> {
        self.post("/goog/cdp/execute", json!({ "cmd": cmd, "params": params }))
            .await
    }

    /// The page as PNG.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self
            .call(reqwest::Method::GET, "/screenshot", None)
            .await
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        base64_decode(v.as_str().unwrap_or_default())
    }

    /// The browser's console since the last call (level, message).
    pub async fn console(&self) -> Vec<(String, String)> {
        match self.post("/se/log", json!({ "type": "browser" })).await {
            Ok(Value::Array(entries)) => entries
                .iter()
                .map(|e| {
                    (
                        e["level"].as_str().unwrap_or("").to_string(),
                        e["message"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    pub async fn quit(&self) {
        let _ = self.call(reqwest::Method::DELETE, "", None).await;
    }

    // ---- waiting ----

    /// Polls `check` every 100 ms until it gives a value, or panics after `within` saying `what`.
    pub async fn wait<T, F, Fut>(&self, within: Duration, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() >= deadline {
                let page = self
                    .execute(
                        "return location.href + '\\n' + document.body.innerText.slice(0, 3000)",
                        vec![],
                    )
                    .await;
                panic!(
                    "timed out after {within:?} waiting for: {what}\npage: {}",
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Like [`Session::wait`], but `None` on timeout instead of a panic.
    pub async fn try_wait<T, F, Fut>(&self, within: Duration, mut check: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = check().await {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for an element that is displayed.
    pub async fn wait_css(&self, css: &str, within: Duration) -> El {
        self.wait(within, &format!("`{css}` to be shown"), || async {
            let el = self.find(css).await?;
            self.is_shown(&el).await.then_some(el)
        })
        .await
    }

    pub async fn is_shown(&self, el: &El) -> bool {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{}/displayed", el.0),
            None,
        )
        .await
        .is_ok_and(|v| v == true)
    }

    /// Waits until the text of `css` contains `needle`; returns the text.
    pub async fn wait_text(&self, css: &str, needle: &str, within: Duration) -> String {
        self.wait(
            within,
            &format!("`{css}` to contain {needle:?}"),
            || async {
                for el in self.find_all(css).await {
                    if let Some(t) = self.text(&el).await {
                        if t.contains(needle) {
                            return Some(t);
                        }
                    }
                }
                None
            },
        )
        .await
    }

    /// Clicks `css` once it is there and clickable (re-finding it, so re-renders do not matter).
    pub async fn click_css(&self, css: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let last = match self.find(css).await {
                Some(el) => match self.click(&el).await {
                    Ok(()) => return,
                    Err(e) => e,
                },
                None => "not found".to_string(),
            };
            if Instant::now() >= deadline {
                let page = self
                    .eval("location.href + '\\n' + document.body.innerText.slice(0, 3000)")
                    .await;
                panic!(
                    "could not click `{css}` within {within:?}: {last}\npage: {}",
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets an input's value by typing (after clearing it).
    pub async fn fill(&self, css: &str, value: &str) {
        let el = self.wait_css(css, Duration::from_secs(10)).await;
        self.clear(&el)
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        if !value.is_empty() {
            self.send_keys(&el, value)
                .await
                .unwrap_or_else(|e| panic!("type into {css}: {e}"));
        }
    }

    /// Sets a <select>'s value and fires `change`.
    pub async fn select(&self, css: &str, value: &str) {
        let el = self.wait_css(css, Duration::from_secs(10)).await;
        self.execute(
            "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change', {bubbles: true}));",
            vec![json!({ ELEMENT_KEY: el.0 }), json!(value)],
        )
        .await;
    }

    /// The value of a JavaScript expression.
    pub async fn eval(&self, expr: &str) -> Value {
        self.execute(&format!("return ({expr});"), vec![]).await
    }
}

/// Standard base64 (what WebDriver screenshots are), ignoring anything outside the alphabet.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ui_screenshot_base64_decodes() {
        assert_eq!(super::base64_decode("aGVsbG8="), b"hello");
        assert_eq!(super::base64_decode("aGk="), b"hi");
        assert_eq!(super::base64_decode("YWJj"), b"abc");
    }
}
