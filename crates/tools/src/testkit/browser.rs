//! A real browser for tests: Debian's headless Chromium driven through `chromedriver` over the
//! W3C WebDriver protocol (plain HTTP/1.1 to the driver on a free loopback port; a small
//! blocking client, so no WebDriver crate is compiled). Panics with what went wrong, as test
//! code does. Needs `chromium` and `chromium-driver` (`scripts/test.sh` installs them).

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key W3C WebDriver names element references with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session (its chromedriver is killed on drop).
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

#[derive(Serialize)]
struct ChromeOptions {
    binary: String,
    args: Vec<String>,
}

#[derive(Serialize)]
struct AlwaysMatch {
    #[serde(rename = "browserName")]
    browser_name: &'static str,
    #[serde(rename = "goog:chromeOptions")]
    chrome: ChromeOptions,
}

#[derive(Serialize)]
struct Capabilities {
    #[serde(rename = "alwaysMatch")]
    always_match: AlwaysMatch,
}

#[derive(Serialize)]
struct NewSession {
    capabilities: Capabilities,
}

#[derive(Serialize)]
struct Url<'a> {
    url: &'a str,
}

#[derive(Serialize)]
struct Find<'a> {
    using: &'static str,
    value: &'a str,
}

#[derive(Serialize)]
struct Keys<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct Script<'a> {
    script: &'a str,
    args: Vec<Value>,
}

#[derive(Serialize)]
struct Rect {
    width: u32,
    height: u32,
}

#[derive(Serialize)]
struct Empty {}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of `width` × `height`.
    pub fn start(width: u32, height: u32) -> Browser {
        let port = crate::testkit::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium chromium-driver; scripts/test.sh does this)");
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while browser.try_call("GET", "/status", None).is_none() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .unwrap_or("/usr/bin/chromium")
            .to_string();
        let request = NewSession {
            capabilities: Capabilities {
                always_match: AlwaysMatch {
                    browser_name: "chrome",
                    chrome: ChromeOptions {
                        binary,
                        args: vec![
                            "--headless=new".into(),
                            "--no-sandbox".into(),
                            "--disable-gpu".into(),
                            "--disable-dev-shm-usage".into(),
                            "--hide-scrollbars".into(),
                            format!("--window-size={width},{height}"),
                        ],
                    },
                },
            },
        };
        let answer = browser.call("POST", "/session", Some(body(&request)));
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {answer}"))
            .to_string();
        browser
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(body(&Url { url })));
    }

    /// The URL shown now.
    pub fn url(&self) -> String {
        self.session_call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page's HTML now.
    pub fn source(&self) -> String {
        self.session_call("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The element `css` selects, if there is one now.
    pub fn find(&self, css: &str) -> Option<String> {
        let request = body(&Find {
            using: "css selector",
            value: css,
        });
        let path = format!("/session/{}/element", self.session);
        let answer = self.try_call("POST", &path, Some(request))?;
        answer[ELEMENT].as_str().map(str::to_string)
    }

    fn element(&self, css: &str) -> String {
        self.find(css)
            .unwrap_or_else(|| panic!("no element {css} on {}", self.url()))
    }

    /// The visible text of the element `css` selects ("" when there is none).
    pub fn text(&self, css: &str) -> String {
        match self.find(css) {
            Some(id) => self
                .session_call("GET", &format!("/element/{id}/text"), None)
                .as_str()
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        }
    }

    /// Types `text` into the element `css` selects.
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.session_call(
            "POST",
            &format!("/element/{id}/clear"),
            Some(body(&Empty {})),
        );
        self.session_call(
            "POST",
            &format!("/element/{id}/value"),
            Some(body(&Keys { text })),
        );
    }

    /// Clicks the element `css` selects.
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.session_call(
            "POST",
            &format!("/element/{id}/click"),
            Some(body(&Empty {})),
        );
    }

    /// Clicks the element `css` selects (a form's button, a link) and waits until the next
    /// page has loaded (a click may return before the navigation it starts).
    pub fn submit(&self, css: &str) {
        self.run("window.__testkitOldPage = true; return null;");
        self.click(css);
        self.wait_for(Duration::from_secs(10), "the next page", |b| {
            b.run("return window.__testkitOldPage === undefined && document.readyState === 'complete';")
                == Value::Bool(true)
        });
    }

    /// Runs `script` in the page and returns its value.
    pub fn run(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(body(&Script {
                script,
                args: Vec::new(),
            })),
        )
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.session_call("POST", "/window/rect", Some(body(&Rect { width, height })));
    }

    /// Writes a PNG screenshot of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        let answer = self.session_call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(answer.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Waits up to `limit` until `check` holds; returns how long it took (panics after).
    pub fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        mut check: impl FnMut(&Browser) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if check(self) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{what}: not within {limit:?} on {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn session_call(&self, method: &str, path: &str, request: Option<Vec<u8>>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), request)
    }

    fn call(&self, method: &str, path: &str, request: Option<Vec<u8>>) -> Value {
        let (status, answer) = self
            .exchange(method, path, request.as_deref())
            .unwrap_or_else(|err| panic!("chromedriver {method} {path}: {err}"));
        assert!(
            status < 300,
            "chromedriver {method} {path}: {status} {answer}"
        );
        answer["value"].clone()
    }

    fn try_call(&self, method: &str, path: &str, request: Option<Vec<u8>>) -> Option<Value> {
        match self.exchange(method, path, request.as_deref()) {
            Ok((status, answer)) if status < 300 => Some(answer["value"].clone()),
            _ => None,
        }
    }

    fn exchange(
        &self,
        method: &str,
        path: &str,
        request: Option<&[u8]>,
    ) -> std::io::Result<(u16, Value)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let payload = request.unwrap_or(b"");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            payload.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(payload)?;
        // chromedriver may keep the connection open: read the head, then exactly the body.
        let mut raw = Vec::new();
        let mut buf = [0u8; 16384];
        let head_end = loop {
            if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break raw.len();
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let length = head.lines().find_map(|line| {
            line.strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        });
        let chunked = head.contains("transfer-encoding: chunked");
        loop {
            let have = raw.len() - head_end;
            let done = match length {
                Some(length) => have >= length,
                None if chunked => raw.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if done {
                break;
            }
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        let rest = String::from_utf8_lossy(&raw[head_end..]).to_string();
        let json = if chunked { dechunk(&rest) } else { rest };
        let value = serde_json::from_str(&json).unwrap_or(Value::Null);
        Ok((status, value))
    }
}

fn body(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("request encodes")
}

fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        text = rest[size..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.exchange("DELETE", &path, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
