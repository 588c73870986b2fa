//! Head office's dashboard in real headless Chromium against a real hub process and real
//! PostgreSQL: the login (no session → login page, wrong token refused then locked out, the
//! session cookie out of script's reach), a real gateway's receipts in the figures after the
//! figures job's refresh, a hostile store id and customer id shown as text, an erasure with each
//! store's confirmation, the security headers. Screenshots (tablet 768×1024, desktop 1366×900)
//! go to `docs/screenshots/hub-*.png`.

use crate::support::*;
use loyalty_tools::testkit::browser::Browser;
use loyalty_tools::testkit::crm::{self as crmkit, STORE};
use loyalty_tools::testkit::free_port;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOKEN: &str = "dashboard-admin-token-0123456789";
const EVIL_STORE: &str = "<script>window.__pwned=1</script>";
const EVIL_STORE_PATH: &str = "%3Cscript%3Ewindow.__pwned%3D1%3C%2Fscript%3E";
const EVIL_CUSTOMER: &str = "<img src=x onerror=\"window.__pwned=2\">";

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots")
}

/// A plain HTTP GET of `path`; the raw answer (status line, headers, body).
fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect to the dashboard");
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).expect("read");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_synced_stores_figures_fleet_and_erasures_in_a_browser() {
    let env = Env::new();
    let token_file = env.dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    let port = free_port();
    let hub = env.hub(&format!(
        "[admin]\ntoken_file = {token_file:?}\n[dashboard]\nlisten = \"127.0.0.1:{port}\"\nlocale = \"en\"\ncurrency = \"€\"\n"
    ));
    let dash: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let base = format!("http://{dash}");

    // A real gateway's store syncs 4 member receipts and 1 without a card.
    let data = tempfile::tempdir().expect("tempdir");
    let config = crmkit::config(
        &env.pki,
        &format!("https://localhost:{}", hub.addr.port()),
        data.path(),
    );
    let store = crmkit::open_store(&config);
    let (sync, cancel) = crmkit::start(&config, &store);
    let status = sync.status();
    for i in 0..4 {
        apply_today(&store, &format!("M{i}"), 2_000, Some("4000000000042"));
    }
    apply_today(&store, "N1", 1_000, None);
    let last = store.outbox_stats().expect("stats").last_seq;
    crmkit::wait_status(&status, |s| s.acked_through >= last).await;

    // A hostile store (its certificate's common name) enrols a customer with a hostile id.
    let evil = env.client(EVIL_STORE);
    let answer = evil
        .request(
            hub.addr,
            "POST",
            &format!("/v1/stores/{EVIL_STORE_PATH}/events"),
            body(
                EVIL_STORE,
                "i1",
                &[enrolled_at(
                    1,
                    "evil-e1",
                    EVIL_CUSTOMER,
                    "4000000000999",
                    jiff::Timestamp::now(),
                )],
            ),
            &[],
        )
        .await
        .expect("request");
    assert_eq!(answer.status, 200, "{}", answer.text());

    // Erasures: the gateway's member (the store confirms through its feed) and the hostile one.
    let sql = env.sql().await;
    let member: String = sql
        .query_one(
            "SELECT customer_id FROM receipts WHERE customer_id IS NOT NULL LIMIT 1",
            &[],
        )
        .await
        .expect("member")
        .get(0);
    let office = env.client("head-office");
    for customer in [member.as_str(), EVIL_CUSTOMER] {
        let answer = office
            .request(
                hub.addr,
                "POST",
                "/v1/admin/erasures",
                serde_json::json!({ "customer_id": customer })
                    .to_string()
                    .into_bytes(),
                &[
                    ("authorization", &format!("Bearer {TOKEN}")),
                    ("content-type", "application/json"),
                ],
            )
            .await
            .expect("request");
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let confirmed = format!(
        "SELECT count(*) FROM erasure_stores WHERE customer_id = '{member}' AND confirmed_at IS NOT NULL"
    );
    let mut confirmed_now = 0;
    for _ in 0..200 {
        confirmed_now = count(&sql, &confirmed).await;
        if confirmed_now == 1 {
            break;
        }
        // The store confirms when its long-polled feed brings the erasure: poll the row.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(confirmed_now, 1, "the gateway confirmed the erasure");

    // The figures job's work, run now rather than waited for.
    let pool_config: tokio_postgres::Config = env.pg.connection_string().parse().expect("pg");
    let pool = loyalty_hub::db::pool(pool_config, 2, loyalty_hub::db::Planning::PerExecution)
        .expect("pool");
    loyalty_hub::figures::refresh(&pool).await.expect("refresh");

    let headers = raw_get(dash, "/login");
    for header in [
        "content-security-policy: default-src 'none'; style-src 'self'",
        "x-content-type-options: nosniff",
        "x-frame-options: DENY",
        "referrer-policy: no-referrer",
    ] {
        assert!(
            headers
                .to_ascii_lowercase()
                .contains(&header.to_ascii_lowercase()),
            "{header} missing: {headers}"
        );
    }
    assert!(
        raw_get(dash, "/").starts_with("HTTP/1.1 303"),
        "no session: sent to the login page"
    );

    tokio::task::block_in_place(|| {
        let browser = Browser::start(1366, 900);
        browser.goto(&format!("{base}/"));
        assert!(browser.url().ends_with("/login"), "{}", browser.url());
        assert!(browser.find("#token").is_some());
        browser.screenshot(&screenshots().join("hub-login-desktop.png"));
        browser.resize(768, 1024);
        browser.screenshot(&screenshots().join("hub-login-tablet.png"));
        browser.resize(1366, 900);
        for _ in 0..3 {
            browser.type_into("#token", "not-the-token");
            browser.submit("#login button");
            browser.wait_for(Duration::from_secs(5), "wrong token refused", |b| {
                b.find("#login-error").is_some()
            });
            assert_eq!(browser.text("#login-error"), "Wrong token.");
        }
        browser.type_into("#token", TOKEN);
        browser.submit("#login button");
        browser.wait_for(Duration::from_secs(5), "locked out", |b| {
            b.find("#login-error")
                .is_some_and(|_| b.text("#login-error").contains("Too many"))
        });
        browser.wait_for(Duration::from_secs(10), "login after the lockout", |b| {
            if b.find("#token").is_some() {
                b.type_into("#token", TOKEN);
                b.submit("#login button");
            }
            b.find("#chain").is_some()
        });
        assert_eq!(
            browser.run("return document.cookie;"),
            serde_json::Value::String(String::new()),
            "HttpOnly"
        );

        // Today's figures: the chain and the store.
        assert_eq!(browser.text("#chain-receipts .value"), "5");
        assert_eq!(browser.text("#chain-participation .value"), "80.0 %");
        assert_eq!(browser.text("#chain-basket-members .value"), "€20.00");
        assert_eq!(browser.text("#chain-basket-others .value"), "€10.00");
        // The gateway's member (the hostile store's customer is erased before the refresh).
        assert_eq!(browser.text("#chain-enrolments .value"), "1");
        let ranking = browser.text("#ranking tbody");
        assert!(ranking.contains(STORE), "{ranking}");
        let cell =
            |n: u32| browser.text(&format!("#ranking tbody tr:first-child td:nth-child({n})"));
        assert_eq!(
            (cell(1), cell(2), cell(3), cell(4)),
            ("1".into(), STORE.into(), "5".into(), "80.0 %".into())
        );
        assert!(
            browser
                .run("return document.querySelectorAll('#chain svg.chart rect').length;")
                .as_u64()
                >= Some(7),
            "a bar per day"
        );

        // The fleet: both stores seen just now.
        let fleet = browser.text("#fleet tbody");
        assert!(fleet.contains(STORE), "{fleet}");
        assert!(
            fleet.contains(EVIL_STORE),
            "the hostile store id as text: {fleet}"
        );
        assert!(browser.find("#fleet tr.stale").is_none());

        // Erasures: the member confirmed by the store, the hostile one pending at its store.
        let erasures = browser.text("#erasures tbody");
        assert!(
            erasures.contains(&format!("{STORE}: confirmed")),
            "{erasures}"
        );
        assert!(
            erasures.contains(EVIL_CUSTOMER),
            "the hostile customer id as text: {erasures}"
        );
        assert!(
            erasures.contains(&format!("{EVIL_STORE}: pending")),
            "{erasures}"
        );
        assert_eq!(
            browser.run("return window.__pwned === undefined && document.querySelectorAll('main script, main img').length === 0;"),
            serde_json::Value::Bool(true),
            "nothing a store sent ran or rendered as markup"
        );

        // 7 and 30 days: the same receipts.
        browser.click("nav.periods a[href='/?days=30']");
        browser.wait_for(Duration::from_secs(5), "the 30-day page", |b| {
            b.url().ends_with("days=30")
        });
        assert_eq!(browser.text("#chain-receipts .value"), "5");

        browser.goto(&format!("{base}/?days=7"));
        browser.screenshot(&screenshots().join("hub-dashboard-desktop.png"));
        browser.resize(768, 1024);
        browser.screenshot(&screenshots().join("hub-dashboard-tablet.png"));
        assert_eq!(
            browser.run("return document.documentElement.scrollWidth <= window.innerWidth;"),
            serde_json::Value::Bool(true),
            "no sideways scrolling of the page at tablet width"
        );

        browser.submit("header form button");
        browser.wait_for(Duration::from_secs(5), "signed out", |b| {
            b.url().ends_with("/login")
        });
        browser.goto(&format!("{base}/"));
        assert!(
            browser.url().ends_with("/login"),
            "the session ended on the server"
        );
    });
    cancel.cancel();
}
