//! The store's staff page in a real browser (headless Chromium through chromedriver) against the
//! gateway binary with a real Mosquitto and a scanner on a pseudo-terminal: login (no token →
//! login page; wrong token → refused, then locked out), a card scanned over MQTT appears on
//! "now at the lanes" within 1 s, search (by card, and by phone and e-mail in other formats,
//! matched by hash), a goodwill voucher issued on the page and redeemed at
//! a lane, the figures after receipts, a device going down when its pty is unplugged, script
//! injection through a customer name and a receipt line shown as text, the security headers,
//! and the page in German with German amounts. Screenshots at tablet and desktop width go to
//! `docs/screenshots/`.

use loyalty_tools::testkit::browser::Browser;
use loyalty_tools::testkit::{free_port, sale, wait_online, GatewayBinary, Mosquitto, Till};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TOKEN: &str = "staff-token-4b1d";
const EVIL_NAME: &str = "<script>window.__pwned=1</script>Eve <b>Bold</b>";
const EVIL_LINE: &str = "<img src=x onerror=\"window.__pwned=2\">Tea";
const NAMED_CARD: &str = "2990000000026";
/// A customer head office sent with only the hashes of her phone and e-mail.
const PHONE_CUSTOMER: &str = "crm-fia";
const PHONE: &str = "+491705551234";
const EMAIL: &str = "fia.berg@example.org";
const ANSWER: Duration = Duration::from_secs(15);

fn gateway_binary() -> GatewayBinary {
    GatewayBinary::new(env!("CARGO_BIN_EXE_loyalty-gateway"))
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots")
}

/// The demo's receipt profile (a printer proxy needs one).
const RECEIPT_PROFILE: &str = r#"
[receipt_profiles.example]
item_line = '^(?:(?P<sku>\d{8,14}) )?(?P<name>\S.*?)\s{2,}(?P<amount>-?\d{1,3}(?:\.\d{3})*,\d{2}-?) [AB]$'
total = '^SUMME EUR\s+(?P<total>-?\d{1,3}(?:\.\d{3})*,\d{2})$'
receipt_id = '^Bon-Nr\.:\s*(?P<receipt_id>\d+)'
receipt_id_format = "{lane}-{receipt_id}"
decimal_separator = ","
"#;

fn config(dir: &Path, broker: u16, http: u16, scanner: &Path, printer: u16) -> String {
    let key = dir.join("voucher.key");
    loyalty_daemon::vouchers::keyfile::generate(&key).expect("signing key");
    let token = dir.join("staff.token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("mode");
    format!(
        r#"
[store]
id = "s1"
name = "Filiale Mitte"
timezone = "Europe/Berlin"
currency = "EUR"
locale = "en"
require_ntp_sync = false

[storage]
data_dir = "{data}"

[mqtt]
url = "mqtt://127.0.0.1:{broker}"
reconnect_min_ms = 50

[cards]
prefixes = ["299"]

[rules]
points_per_unit = 1
per_amount = "1.00"

[rewards]
signing_key_file = "{key}"
goodwill_max_value = "10.00"

[http]
bind = "127.0.0.1:{http}"

[http.staff]
token_file = "{token}"
# PIN 4711 (sha256 of "s4lt4711").
pins = [{{ name = "Anna", pin_hash = "sha256:s4lt:4f5d913b0ff74997867b5f2f400e4ef7365e56e9b0bfbee56e35948328c5153d" }}]

[[serial]]
name = "lane2-scanner"
path = "{scanner}"
lane = "2"

[[printer_proxy]]
name = "lane1-printer"
listen = "127.0.0.1:{proxy}"
printer = "127.0.0.1:{printer}"
lane = "1"
profile = "example"
{RECEIPT_PROFILE}
"#,
        proxy = free_port(),
        data = dir.join("data").display(),
        key = key.display(),
        token = token.display(),
        scanner = scanner.display(),
    )
}

/// A customer the CRM sent down, with a name that tries to inject a script.
fn seed_named_customer(dir: &Path) {
    let store = loyalty_store::Store::open(
        &loyalty_store::StorageConfig {
            data_dir: dir.join("data"),
            ..Default::default()
        },
        "s1",
    )
    .expect("open store");
    store
        .upsert_crm_customer(&loyalty_core::customer::Customer {
            id: "crm-eve".into(),
            card: Some(NAMED_CARD.into()),
            name: Some(EVIL_NAME.into()),
            tier: Some("gold".into()),
            enrolled_at: jiff::Timestamp::now(),
            origin: loyalty_core::customer::CustomerOrigin::Crm,
            confirmed: None,
        })
        .expect("seed customer");
    // As the CRM's feed sends her (`WireCustomer` through the sync's own mapping): hashes only.
    let wire = loyalty_protocol::crm::WireCustomer {
        customer_id: PHONE_CUSTOMER.into(),
        balance: 0,
        includes_store_seq: 0,
        tier: None,
        cards: vec!["2990000000033".into()],
        display_name: Some("Fia Berg".into()),
        consent: Some(loyalty_protocol::crm::WireConsent {
            marketing: true,
            profiling: true,
        }),
        phone_hash: loyalty_core::contact::phone_hash(PHONE),
        email_hash: loyalty_core::contact::email_hash(EMAIL),
        tags: Vec::new(),
        birthday: None,
    };
    store
        .apply_changes(&loyalty_store::sync_state::ChangeSet {
            cursor: "1".into(),
            now: jiff::Timestamp::now(),
            merged: vec![],
            customers: vec![loyalty_daemon::sync::feed::crm_customer(wire)],
            adjustments: vec![],
            erased: vec![],
            revoked_vouchers: vec![],
            keys: vec![],
            rules_json: None,
            rules_rejection: None,
            // A personal offer for her, as the feed maps it.
            offers: vec![loyalty_daemon::sync::offers::offer_change(
                serde_json::from_str(&format!(
                    r#"{{"offer_id":"OF-FIA","customer_id":"{PHONE_CUSTOMER}",
                        "text":"Double points on tea","benefit":{{"multiplier":"2"}}}}"#
                ))
                .expect("offer"),
                "EUR",
            )
            .expect("a readable offer")],
            clips: Vec::new(),
        })
        .expect("seed phone customer");
}

/// A raw GET: status and headers (lower-case names) of the answer.
fn get_headers(port: u16, path: &str) -> (u16, Vec<(String, String)>) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("answer");
    let head = raw.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

async fn answer_for(till: &mut Till, predicate: impl Fn(&Value) -> bool) -> Value {
    loop {
        let answer = till.next(ANSWER).await;
        if predicate(&answer) {
            return answer;
        }
    }
}

fn login(browser: &Browser, base: &str, token: &str) {
    browser.goto(&format!("{base}/staff/login"));
    browser.type_into("#token", token);
    browser.submit("#login");
}

fn shoot(browser: &Browser, name: &str) {
    for (label, width, height) in [("tablet", 768, 1024), ("desktop", 1366, 900)] {
        browser.resize(width, height);
        browser.screenshot(&screenshots().join(format!("staff-{name}-{label}.png")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_staff_page_in_a_real_browser() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let scanner_link = dir.path().join("scanner");
    let scanner = loyalty_tools::demo::pty::Pty::open(&scanner_link).expect("openpty");
    seed_named_customer(dir.path());
    // The lane's receipt printer: takes one connection and hands over what it printed.
    let printer = std::net::TcpListener::bind("127.0.0.1:0").expect("printer");
    let printer_port = printer.local_addr().expect("addr").port();
    let (printed_tx, printed_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        if let Ok((mut connection, _)) = printer.accept() {
            let mut bytes = Vec::new();
            let _ = connection.read_to_end(&mut bytes);
            let _ = printed_tx.send(bytes);
        }
    });
    let http = free_port();
    let _gateway = gateway_binary().start(
        dir.path(),
        &config(dir.path(), broker.port, http, &scanner_link, printer_port),
    );
    wait_online(broker.port, "loyalty/s1").await;
    let mut till = Till::connect(broker.port, "loyalty/s1", "till-1").await;
    let base = format!("http://127.0.0.1:{http}");

    // Every answer carries the security headers.
    let (status, headers) = get_headers(http, "/staff/login");
    assert_eq!(status, 200);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert!(header("content-security-policy").contains("script-src 'self'"));
    assert!(!header("content-security-policy").contains("unsafe-inline"));
    assert!(header("content-security-policy").contains("frame-ancestors 'none'"));
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("cache-control"), "no-store");
    // Without a session, a page answers with the way to the login page.
    let (status, headers) = get_headers(http, "/staff/customer?q=2990000000026");
    assert_eq!(status, 303);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "location" && v == "/staff/login"));

    let browser = Browser::start(1366, 900);
    // No token: the login page.
    browser.goto(&format!("{base}/staff/lanes"));
    assert!(browser.url().ends_with("/staff/login"), "{}", browser.url());
    assert!(browser.find("#token").is_some());
    browser.screenshot(&screenshots().join("staff-login-desktop.png"));

    // Wrong tokens: refused, then the peer is locked out (even the right token is refused).
    for _ in 0..3 {
        login(&browser, &base, "not-the-token");
        assert!(
            browser.text("#login-error").contains("wrong token"),
            "{}",
            browser.source()
        );
    }
    login(&browser, &base, TOKEN);
    assert!(
        browser
            .text("#login-error")
            .contains("Too many failed logins"),
        "{}",
        browser.source()
    );
    assert!(browser.url().ends_with("/staff/login"));
    // The lockout ends (2 s after the third failure); then the token logs in.
    browser.wait_for(Duration::from_secs(10), "login after the lockout", |b| {
        login(b, &base, TOKEN);
        b.url().ends_with("/staff/lanes")
    });
    // The session cookie is HttpOnly: the page's script cannot read it.
    assert_eq!(
        browser.run("return document.cookie;"),
        Value::String(String::new())
    );

    // The figures before any receipt.
    browser.goto(&format!("{base}/staff/figures?days=1"));
    assert_eq!(browser.text("#fig-receipts .value"), "0");
    browser.goto(&format!("{base}/staff/lanes"));

    // A card scanned at lane 1 appears within 1 s.
    let started = Instant::now();
    till.scan("1", NAMED_CARD).await;
    let shown = browser.wait_for(Duration::from_secs(5), "the customer at lane 1", |b| {
        b.text("article.lane[data-lane='1'] .who").contains("Eve")
    });
    let seen_after = started.elapsed();
    println!("customer shown {shown:?} after polling began, {seen_after:?} after the scan");
    assert!(seen_after < Duration::from_secs(1), "{seen_after:?}");
    // The name is text, not markup.
    assert_eq!(browser.text("article.lane[data-lane='1'] .who"), EVIL_NAME);
    assert_eq!(
        browser.run("return window.__pwned === undefined;"),
        Value::Bool(true)
    );
    let answer = answer_for(&mut till, |a| a["type"] == "customer").await;
    assert_eq!(answer["customer_id"], "crm-eve");

    // A receipt whose line tries to inject markup; then a second, unknown card enrols at lane 2.
    let mut receipt = sale(
        "R-STAFF-1",
        "1",
        None,
        &[
            ("4006381333931", 1, "12.40", "tea"),
            ("4006381333948", 1, "3.10", "bakery"),
        ],
    );
    receipt["lines"][0]["name"] = Value::String(EVIL_LINE.into());
    till.receipt("1", &receipt).await;
    let points = answer_for(&mut till, |a| a["type"] == "points").await;
    assert_eq!(points["customer_id"], "crm-eve", "{points}");
    browser.wait_for(Duration::from_secs(5), "the sale closed at lane 1", |b| {
        b.find("article.lane.done[data-lane='1']").is_some()
    });
    till.scan("2", "2990000000019").await;
    answer_for(&mut till, |a| a["type"] == "enrolled").await;
    browser.wait_for(Duration::from_secs(5), "the new member at lane 2", |b| {
        b.find("article.lane[data-lane='2']").is_some()
    });
    shoot(&browser, "lanes");

    // The figures changed with the receipt (a member's: participation 100 %).
    browser.goto(&format!("{base}/staff/figures?days=1"));
    assert_eq!(browser.text("#fig-receipts .value"), "1");
    assert_eq!(browser.text("#fig-participation .value"), "100.0%");
    assert_eq!(browser.text("#fig-points-issued .value"), "15");
    assert_eq!(browser.text("#fig-enrolments .value"), "1");
    assert_eq!(browser.text("#fig-basket-members .value"), "€15.50");
    assert_eq!(browser.text("#fig-outstanding .value"), "15");
    assert_eq!(
        browser.run("return document.querySelectorAll('#fig-receipts svg rect').length;"),
        Value::from(7),
        "a bar per day of the last week"
    );

    // Search by phone typed in another format, and by e-mail in other case: matched by hash.
    for typed in ["+49 (170) 555-12 34", "  FIA.Berg@Example.ORG "] {
        browser.goto(&format!("{base}/staff/customer"));
        browser.type_into("#q", typed);
        browser.submit("#search");
        browser.wait_for(Duration::from_secs(5), "the profile", |b| {
            b.find("#customer-id").is_some()
        });
        assert_eq!(browser.text("#customer-id"), PHONE_CUSTOMER, "{typed}");
        assert!(
            browser.text("#offers").contains("Double points on tea"),
            "her active offer replaces the placeholder: {}",
            browser.text("main")
        );
    }

    // Search by card: profile, purchase with its items (as text), favourite categories.
    browser.goto(&format!("{base}/staff/customer"));
    browser.type_into("#q", NAMED_CARD);
    browser.submit("#search");
    browser.wait_for(Duration::from_secs(5), "the profile", |b| {
        b.find("#customer-name").is_some()
    });
    assert_eq!(browser.text("#customer-name"), EVIL_NAME);
    assert_eq!(browser.text("#customer-id"), "crm-eve");
    assert!(
        browser.source().contains("&lt;img src=x"),
        "the line is escaped"
    );
    assert!(browser.text(".purchases").contains(EVIL_LINE));
    assert!(browser.text("#categories").starts_with("tea"));
    assert!(
        browser.text("#balance").starts_with("15"),
        "{}",
        browser.text("#balance")
    );
    assert_eq!(
        browser.run("return window.__pwned === undefined;"),
        Value::Bool(true)
    );
    assert_eq!(
        browser.run("return document.querySelectorAll('main script, main img[src=x]').length;"),
        Value::from(0)
    );
    // An unknown card: "no customer".
    browser.goto(&format!("{base}/staff/customer?q=2990000009999"));
    assert!(browser.find("#not-found").is_some());

    // Goodwill: above the cap refused; 5.00 issued, shown as QR, and valid at a lane.
    browser.goto(&format!("{base}/staff/customer?q={NAMED_CARD}"));
    browser.type_into("#goodwill-value", "50.00");
    browser.submit("#goodwill");
    browser.wait_for(Duration::from_secs(5), "the refusal", |b| {
        b.find("#issued-error").is_some()
    });
    assert!(
        browser.text("#issued-error").contains("goodwill_max_value"),
        "{}",
        browser.text("main")
    );
    browser.type_into("#goodwill-value", "5.00");
    browser.submit("#goodwill");
    browser.wait_for(Duration::from_secs(5), "the voucher issued", |b| {
        b.find("#issued code.voucher-text").is_some()
    });
    // textContent: base45 has spaces, which a rendered text would collapse.
    let voucher_text = browser
        .run("return document.querySelector('#issued code.voucher-text').textContent;")
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(voucher_text.starts_with("LGV1"), "{}", browser.text("main"));
    let qr_loaded = browser.run(
        "const i = document.querySelector('#issued img'); return i.complete && i.naturalWidth > 0;",
    );
    assert_eq!(qr_loaded, Value::Bool(true), "the QR image loads");
    shoot(&browser, "customer");
    // Printed on the lane's printer: the slip carries the voucher's QR text.
    browser.submit("#issued form.print button");
    browser.wait_for(Duration::from_secs(5), "the slip printed", |b| {
        b.find("#printed").is_some() || b.find("#issued-error").is_some()
    });
    assert!(
        browser.find("#printed").is_some(),
        "{}",
        browser.text("main")
    );
    let slip = printed_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the printer got the slip");
    assert!(
        slip.windows(voucher_text.len())
            .any(|w| w == voucher_text.as_bytes()),
        "the slip's QR command carries the voucher"
    );
    browser.goto(&format!("{base}/staff/figures?days=7"));
    assert_eq!(browser.text("#fig-vouchers-issued .value"), "1");
    shoot(&browser, "figures");
    // The voucher is personal: the customer's card first, then the voucher.
    till.scan("3", NAMED_CARD).await;
    answer_for(&mut till, |a| a["type"] == "customer" && a["lane"] == "3").await;
    till.scan("3", &voucher_text).await;
    let reward = answer_for(&mut till, |a| a["type"] == "reward" || a["type"] == "error").await;
    assert_eq!(reward["type"], "reward", "{reward}");
    assert_eq!(reward["status"], "valid", "{reward}");

    // Devices: the scanner is up; unplugged, it goes down on the page.
    browser.goto(&format!("{base}/staff/devices"));
    browser.wait_for(Duration::from_secs(10), "the scanner up", |b| {
        b.goto(&format!("{base}/staff/devices"));
        b.find("#dev-lane2-scanner.ok").is_some()
    });
    shoot(&browser, "devices");
    let _ = std::fs::remove_file(&scanner.link);
    drop(scanner);
    browser.wait_for(Duration::from_secs(10), "the scanner down", |b| {
        b.goto(&format!("{base}/staff/devices"));
        b.find("#dev-lane2-scanner.down").is_some()
    });

    // Log out; a staff member logs in with name and PIN, and the page names her.
    browser.submit("header form.logout button");
    browser.wait_for(Duration::from_secs(5), "the login page", |b| {
        b.url().ends_with("/staff/login")
    });
    browser.goto(&format!("{base}/staff/devices"));
    assert!(browser.url().ends_with("/staff/login"), "the session ended");
    browser.type_into("#name", "Anna");
    browser.type_into("#pin", "4711");
    browser.submit("#login");
    browser.wait_for(Duration::from_secs(5), "the PIN login", |b| {
        b.url().ends_with("/staff/lanes")
    });
    assert_eq!(browser.text("header .staff"), "Anna");
}

#[test]
fn check_config_refuses_the_staff_page_on_a_shared_address_without_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\nid = \"s1\"\n[storage]\ndata_dir = \"{}\"\n[http]\nbind = \"0.0.0.0:8780\"\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let output = gateway_binary()
        .command()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run check-config");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("http.staff.token_file"), "{stderr}");
    // Turning the staff page off leaves only the API's own token requirement.
    std::fs::write(
        &path,
        format!(
            "[store]\nid = \"s1\"\n[storage]\ndata_dir = \"{}\"\n[http]\nbind = \"0.0.0.0:8780\"\n\
             [http.staff]\nenabled = false\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let output = gateway_binary()
        .command()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run check-config");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("http.staff"), "{stderr}");
}

/// The page in German (`store.locale = "de"`): the login page, the navigation, the figures
/// headings and amounts in the German format (`15,50 €`), in a real browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_staff_page_speaks_german() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let scanner_link = dir.path().join("scanner");
    let _scanner = loyalty_tools::demo::pty::Pty::open(&scanner_link).expect("openpty");
    let printer = std::net::TcpListener::bind("127.0.0.1:0").expect("printer");
    let printer_port = printer.local_addr().expect("addr").port();
    let http = free_port();
    let config = config(dir.path(), broker.port, http, &scanner_link, printer_port)
        .replace("locale = \"en\"", "locale = \"de\"");
    let _gateway = gateway_binary().start(dir.path(), &config);
    wait_online(broker.port, "loyalty/s1").await;
    let mut till = Till::connect(broker.port, "loyalty/s1", "till-1").await;
    let base = format!("http://127.0.0.1:{http}");

    let browser = Browser::start(768, 1024);
    browser.goto(&format!("{base}/staff/login"));
    assert_eq!(
        browser.run("return document.documentElement.lang;"),
        Value::String("de".into())
    );
    assert!(browser.source().contains("Zugangsschlüssel"));
    login(&browser, &base, "falsch");
    assert!(
        browser.text("#login-error").contains("Anmeldung abgelehnt"),
        "{}",
        browser.source()
    );
    login(&browser, &base, TOKEN);
    browser.wait_for(Duration::from_secs(5), "the lanes page", |b| {
        b.url().ends_with("/staff/lanes")
    });
    assert_eq!(browser.text("main h1"), "Jetzt an den Kassen");
    assert!(browser.text("header nav").contains("Kennzahlen"));

    till.scan("1", "2990000000019").await;
    answer_for(&mut till, |a| a["type"] == "enrolled").await;
    let receipt = sale(
        "R-DE-1",
        "1",
        None,
        &[
            ("4006381333931", 1, "1234.40", "tea"),
            ("4006381333948", 1, "3.10", "bakery"),
        ],
    );
    till.receipt("1", &receipt).await;
    answer_for(&mut till, |a| a["type"] == "points").await;
    browser.goto(&format!("{base}/staff/figures?days=1"));
    assert!(
        browser.text("main").contains("Bons mit Karte"),
        "{}",
        browser.text("main")
    );
    // German grouping and decimal comma, the symbol after a space (a no-break space in the
    // page; WebDriver's text turns it into a plain one).
    assert_eq!(browser.text("#fig-basket-members .value"), "1.237,50 €");
    assert_eq!(browser.text("#fig-participation .value"), "100,0 %");
}
