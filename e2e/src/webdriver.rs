//! Just enough of the W3C WebDriver protocol to drive the real app through tauri-driver:
//! a session, finding elements by CSS, clicking, typing, reading text, screenshots.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::process::wait_for_within;

#[derive(Debug)]
pub struct Session {
    base: String,
    id: String,
}

/// W3C's key for element references.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build()
}

fn call(method: &str, url: &str, body: Option<Value>) -> Result<Value, String> {
    let request = agent().request(method, url);
    let response = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
    let text = match response {
        Ok(r) => r.into_string().map_err(|e| e.to_string())?,
        Err(ureq::Error::Status(code, r)) => {
            let mut text = String::new();
            let _ = r.into_reader().take(64 * 1024).read_to_string(&mut text);
            return Err(format!("HTTP {code}: {text}"));
        }
        Err(e) => return Err(e.to_string()),
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    Ok(value.get("value").cloned().unwrap_or(Value::Null))
}

impl Session {
    /// Opens a session on the driver at `base` (e.g. `http://127.0.0.1:4444`) for the app
    /// at `application`; waits for the driver to accept.
    pub fn start(base: &str, application: &Path) -> Self {
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "wry",
                "tauri:options": { "application": application.display().to_string() }
            } }
        });
        let value = wait_for_within("tauri-driver to open a session", Duration::from_secs(60), || {
            call("POST", &format!("{base}/session"), Some(capabilities.clone()))
                .map_err(|e| eprintln!("session not yet: {e}"))
                .ok()
        });
        let id =
            value["sessionId"].as_str().unwrap_or_else(|| panic!("no session id in {value}")).to_string();
        Self { base: base.into(), id }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.id)
    }

    /// Elements matching a CSS selector, now.
    pub fn find_all(&self, css: &str) -> Vec<String> {
        call("POST", &self.url("/elements"), Some(json!({"using": "css selector", "value": css})))
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e[ELEMENT_KEY].as_str().map(String::from))
            .collect()
    }

    /// The first element matching `css`, waiting for it to appear; on timeout the panic
    /// carries the page, so a failure shows what the window showed instead.
    pub fn find(&self, css: &str) -> String {
        self.poll(&format!("element {css}"), || self.find_all(css).into_iter().next())
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub fn execute(&self, script: &str) -> Value {
        call("POST", &self.url("/execute/sync"), Some(json!({"script": script, "args": []})))
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// The page's HTML now.
    pub fn source(&self) -> String {
        call("GET", &self.url("/source"), None)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    }

    fn poll<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + Duration::from_secs(45);
        loop {
            if let Some(value) = check() {
                return value;
            }
            if std::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; the window shows:\n{}", self.source());
            }
            std::thread::sleep(Duration::from_millis(150)); // polling interval, not synchronization
        }
    }

    pub fn click(&self, css: &str) {
        let element = self.find(css);
        wait_for_within(&format!("a click on {css}"), Duration::from_secs(20), || {
            call("POST", &self.url(&format!("/element/{element}/click")), Some(json!({}))).ok()
        });
    }

    pub fn clear_and_type(&self, css: &str, text: &str) {
        let element = self.find(css);
        call("POST", &self.url(&format!("/element/{element}/clear")), Some(json!({})))
            .unwrap_or_else(|e| panic!("clearing {css}: {e}"));
        call("POST", &self.url(&format!("/element/{element}/value")), Some(json!({"text": text})))
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    pub fn text(&self, css: &str) -> String {
        let element = self.find(css);
        call("GET", &self.url(&format!("/element/{element}/text")), None)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    }

    /// A DOM property of the first element matching `css` (e.g. an input's `value`).
    pub fn property(&self, css: &str, name: &str) -> String {
        let element = self.find(css);
        call("GET", &self.url(&format!("/element/{element}/property/{name}")), None)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    }

    /// Waits until the text of `css` satisfies `check`; returns it.
    pub fn wait_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        self.poll(what, || {
            let element = self.find_all(css).into_iter().next()?;
            let text = call("GET", &self.url(&format!("/element/{element}/text")), None).ok()?;
            let text = text.as_str()?.to_string();
            check(&text).then_some(text)
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = call("DELETE", &self.url(""), None);
    }
}
