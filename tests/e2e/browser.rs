//! The screen and the console in a real browser (Debian's Chromium, headless, through playwright-core) against the real `kiosk` binary, with taps on pcscd + vpcd or handheld posts; plus the console's endpoints over real HTTP. Screenshots go to `target/screenshots/`.

use std::path::PathBuf;

use kiosk_tests::browser::{Page, browser};
use kiosk_tests::kiosk::{KioskDir, Running};
use kiosk_tests::pcscd::claim_reader;
use kiosk_tests::sse::SseClient;
use kiosk_tests::vpcd::VirtualCard;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::devices::{add_device, add_staff_device};
use crate::{BIN, ROSTER, UNKNOWN, WAIT, ZHANG};

/// A phone number and a full name the kiosk is given at card issuing; neither may ever
/// appear on the screen or in the console.
const PHONE: &str = "13800138000";
const FULL_NAME: &str = "赵敏";

/// An office's logo, as `screen.logo` takes it.
const LOGO: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 120 120"><rect x="4" y="4" width="112" height="112" rx="22" fill="none" stroke="#d9b871" stroke-width="6"/><path d="M30 86 L60 30 L90 86 Z" fill="#d9b871"/><rect x="52" y="62" width="16" height="24" fill="#0d1828"/></svg>"##;

/// Where the screenshots go: `target/screenshots/`, beside the test binaries.
fn shot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("screenshots")
        .join(format!("{name}.png"))
}

fn js_str(s: &str) -> String {
    json!(s).to_string()
}

/// A kiosk folder with the test roster and `extra` config.
fn kiosk_dir(extra: &str) -> KioskDir {
    let dir = KioskDir::new(BIN, extra);
    let out = dir.import(ROSTER);
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// A handheld's visit for a card: `POST /api/v1/visits`, 201 expected.
async fn post_card(kiosk: &Running, token: &str, card: &str) -> Value {
    let resp = kiosk_tests::http_client()
        .post(kiosk.url("/api/v1/visits"))
        .bearer_auth(token)
        .json(&json!({"id": Uuid::now_v7(), "card": card}))
        .send()
        .await
        .expect("POST /api/v1/visits");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(status, 201, "{body}");
    body
}

async fn get(kiosk: &Running, path: &str, token: Option<&str>) -> (u16, reqwest::Response) {
    let mut req = kiosk_tests::http_client().get(kiosk.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("GET");
    (resp.status().as_u16(), resp)
}

async fn post_json(kiosk: &Running, path: &str, token: &str, body: Value) -> (u16, Value) {
    let resp = kiosk_tests::http_client()
        .post(kiosk.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Puts consultants on duty (a desk device may act for anyone): with the reception rules,
/// a customer is received by their own consultant only while they are on duty.
async fn on_duty(kiosk: &Running, token: &str, ids: &[&str]) {
    for id in ids {
        let (status, body) = post_json(
            kiosk,
            "/api/v1/rotation/check-in",
            token,
            json!({"consultant_id": id}),
        )
        .await;
        assert_eq!(status, 200, "check-in {id}: {body}");
    }
}

/// The screen has loaded its settings and its event stream is open.
async fn screen_ready(page: &Page) {
    page.wait_for(
        "the screen connected and idle",
        "document.body.dataset.link === 'up' && document.body.dataset.state === 'idle' \
         && document.getElementById('office').textContent.length > 0",
        WAIT,
    )
    .await;
}

/// Waits for the screen to show a greeting whose title contains `title`.
async fn screen_shows(page: &Page, state: &str, title: &str) {
    page.wait_for(
        &format!("the {state} greeting {title:?}"),
        &format!(
            "document.body.dataset.state === {} && document.getElementById('g-title').textContent.includes({})",
            js_str(state),
            js_str(title)
        ),
        WAIT,
    )
    .await;
}

/// What the screen must never show: ids, card tokens, phone numbers, full names.
async fn assert_screen_private(page: &Page) {
    let text = page.body_text().await;
    for leak in ["C0001", "C0002", "nfc:", PHONE, FULL_NAME] {
        assert!(!text.contains(leak), "the screen shows {leak:?}:\n{text}");
    }
    let digits = text
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(
        digits < 7,
        "the screen shows a long number (a phone?):\n{text}"
    );
}

/// The page's layout shifts since it loaded: `{value, at, moved}` each.
async fn layout_shifts(page: &Page) -> Vec<Value> {
    page.eval("window.__shifts")
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn assert_no_page_errors(page: &Page) {
    let errors = page.errors().await;
    assert!(errors.is_empty(), "the page logged errors: {errors:?}");
}

/// Signs the console in with a staff token and waits for its first full load.
async fn sign_in(page: &Page, token: &str) {
    page.wait_for(
        "the sign-in form",
        "!document.getElementById('signin').hidden",
        WAIT,
    )
    .await;
    page.fill("#token", token).await;
    page.click("#signin-form button[type=submit]").await;
    page.wait_for(
        "the console's first load",
        "!document.getElementById('app').hidden && document.body.dataset.loaded && document.body.dataset.link === 'up'",
        WAIT,
    )
    .await;
}

/// The console's rotation as `(id, busy)` from the head, as the page shows it.
async fn console_queue(page: &Page) -> Value {
    page.eval("[...document.querySelectorAll('#rotation li')].map(li => [li.dataset.id, li.dataset.busy === '1'])")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screen_greets_a_tapped_member_masked_and_sends_an_unknown_card_to_reception() {
    let reader = claim_reader();
    // A long greeting, so the second tap provably replaces the first one.
    let dir = kiosk_dir(&format!(
        "office_name = \"滨江壹号 售楼处\"\n\n[[reader]]\nkind = \"pcsc\"\nname = \"{}\"\n\n\
         [reception]\nsame_card_cooldown = \"0s\"\n\n\
         [screen]\ngreeting_duration = \"60s\"\nlogo = \"logo.svg\"\n",
        reader.name
    ));
    std::fs::write(dir.path().join("logo.svg"), LOGO).expect("write logo");
    let desk = add_staff_device(&dir, "desk");
    let kiosk = dir.start();
    on_duty(&kiosk, &desk, &["E01"]).await;
    let mut events = SseClient::connect(&kiosk.url("/api/v1/events")).await;
    events
        .wait_for("reader", WAIT, |d| {
            d["reader"] == reader.name.as_str() && d["connected"] == true
        })
        .await;
    let b = browser();
    let landscape = b.open(1920, 1080, &kiosk.url("/")).await;
    let portrait = b.open(1080, 1920, &kiosk.url("/")).await;
    let pages = [(&landscape, "1920x1080"), (&portrait, "1080x1920")];
    for (page, size) in pages {
        screen_ready(page).await;
        page.wait_for(
            "the logo",
            "document.getElementById('logo').complete && document.getElementById('logo').naturalWidth > 0",
            WAIT,
        )
        .await;
        page.screenshot(&shot(&format!("screen-idle-{size}")), false)
            .await;
    }

    let card = VirtualCard::insert(reader.port, &ZHANG).expect("insert");
    for (page, size) in pages {
        screen_shows(page, "welcome", "欢迎光临，张先生").await;
        assert_eq!(page.text("#g-title-en").await, "Welcome, Mr. 张");
        assert_eq!(page.text("#g-tier").await, "金卡会员 · Gold member");
        assert_eq!(page.text("#g-line").await, "您的顾问 李娜 马上到");
        assert_eq!(page.text("#g-kicker").await, "首次到访 · First visit");
        assert_screen_private(page).await;
        page.screenshot(&shot(&format!("screen-greeting-{size}")), false)
            .await;
    }
    card.remove();
    events
        .wait_for("reader", WAIT, |d| {
            d["reader"] == reader.name.as_str() && d["card_present"] == false
        })
        .await;
    for (page, _) in pages {
        assert_eq!(
            page.eval("document.body.dataset.state").await,
            "welcome",
            "the greeting stays for screen.greeting_duration"
        );
    }

    let card = VirtualCard::insert(reader.port, &UNKNOWN).expect("insert");
    for (page, size) in pages {
        screen_shows(page, "unknown", "您好，请到前台").await;
        assert_eq!(
            page.text("#g-title-en").await,
            "Hello — please see reception"
        );
        assert_screen_private(page).await;
        page.screenshot(&shot(&format!("screen-unknown-{size}")), false)
            .await;
        // Idle → greeting → another greeting moved nothing on the page.
        let shifts = layout_shifts(page).await;
        assert!(shifts.is_empty(), "layout shifts at {size}: {shifts:?}");
        assert_no_page_errors(page).await;
    }
    card.remove();
    drop((landscape, portrait));
    drop(kiosk);
    drop(reader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screen_returns_to_idle_and_recovers_by_itself_after_the_daemon_restarts() {
    let dir = kiosk_dir("[screen]\ngreeting_duration = \"2s\"\n");
    let token = add_device(&dir, "pda-1");
    let mut kiosk = dir.start();
    // The restarted daemon must come back on the same port, as a real kiosk does.
    let port = kiosk.base.rsplit(':').next().expect("port").to_owned();
    let config = std::fs::read_to_string(dir.config()).expect("config");
    let pinned = config.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(dir.config(), &pinned).expect("write config");

    let page = browser().open(1080, 1920, &kiosk.url("/")).await;
    screen_ready(&page).await;
    assert_eq!(page.text("#office").await, "test-office");
    page.eval("window.__sameDocument = true").await;

    post_card(&kiosk, &token, "nfc:04A1B2C3D4E5F6").await;
    screen_shows(&page, "welcome", "张先生").await;
    page.wait_for(
        "idle again after screen.greeting_duration",
        "document.body.dataset.state === 'idle'",
        WAIT,
    )
    .await;

    kiosk.stop();
    page.wait_for(
        "the screen noticing the daemon is gone",
        "document.body.dataset.link === 'down' && !document.getElementById('h-link').hidden",
        WAIT,
    )
    .await;
    // While it is down the office gets a new name: the page must show it after the
    // reconnect, not what it had before.
    let renamed = pinned.replace(
        "office = \"test-office\"",
        "office = \"test-office\"\noffice_name = \"滨江壹号 售楼处\"",
    );
    std::fs::write(dir.config(), renamed).expect("write config");
    let kiosk = dir.start();
    assert!(kiosk.base.ends_with(&format!(":{port}")), "{}", kiosk.base);
    page.wait_for(
        "the reconnect and the new office name",
        "document.body.dataset.link === 'up' && document.getElementById('office').textContent === '滨江壹号 售楼处'",
        WAIT,
    )
    .await;

    post_card(&kiosk, &token, "nfc:04112233445566").await;
    screen_shows(&page, "welcome", "王女士").await;
    assert_eq!(
        page.eval("window.__sameDocument === true").await,
        true,
        "the page was reloaded"
    );
    assert_screen_private(&page).await;
    assert_no_page_errors(&page).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_visits_live_and_moves_the_rotation() {
    let dir = kiosk_dir("");
    let staff = add_staff_device(&dir, "desk");
    let pda = add_device(&dir, "pda-1");
    let kiosk = dir.start();
    let b = browser();
    let page = b.open(1920, 1080, &kiosk.url("/console")).await;
    sign_in(&page, &staff).await;
    assert_eq!(page.text("#t-visits").await, "0");

    // Check two consultants in from the console; the first is next.
    for id in ["E01", "E02"] {
        page.select("#checkin-select", id).await;
        page.click("#checkin-form button[type=submit]").await;
        page.wait_for(
            &format!("{id} on duty"),
            &format!("!!document.querySelector('#rotation li[data-id={id}]')"),
            WAIT,
        )
        .await;
    }
    assert_eq!(
        console_queue(&page).await,
        json!([["E01", false], ["E02", false]])
    );
    assert_eq!(page.text("#rot-next").await, "李娜");
    // Move 李娜 down: 陈晨 is next, and the kiosk agrees.
    page.click("#rotation li[data-id=E01] button[aria-label^='下移']")
        .await;
    page.wait_for(
        "the new order",
        "document.querySelector('#rotation li').dataset.id === 'E02'",
        WAIT,
    )
    .await;
    assert_eq!(page.text("#rot-next").await, "陈晨");
    let (status, resp) = get(&kiosk, "/api/v1/rotation", Some(&pda)).await;
    assert_eq!(status, 200);
    let rotation: Value = resp.json().await.expect("JSON");
    assert_eq!(rotation["next"], "E02", "{rotation}");

    // A handheld's visit appears at once, with its counts.
    post_card(&kiosk, &pda, "nfc:04112233445566").await;
    page.wait_for(
        "王女士's visit in the table",
        "[...document.querySelectorAll('#visits tbody tr')].some(tr => tr.textContent.includes('王女士'))",
        WAIT,
    )
    .await;
    page.wait_for(
        "the counts",
        "document.getElementById('t-visits').textContent === '1' && document.getElementById('t-first').textContent === '1'",
        WAIT,
    )
    .await;
    let row = page
        .eval("[...document.querySelector('#visits tbody tr').cells].map(td => td.textContent)")
        .await;
    let cells: Vec<&str> = row
        .as_array()
        .expect("cells")
        .iter()
        .map(|c| c.as_str().unwrap_or(""))
        .collect();
    assert!(cells[1].starts_with("王女士"), "{cells:?}");
    assert_eq!(cells[2], "银卡会员", "{cells:?}");
    assert!(cells[3].contains("首访"), "{cells:?}");
    assert!(cells[4].starts_with("陈晨"), "{cells:?}");
    assert_eq!(cells[5], "手持机 pda-1", "{cells:?}");

    // 陈晨's alert for her visitor waits for acknowledgement, and is acknowledged here.
    page.wait_for(
        "the alert for 陈晨",
        "[...document.querySelectorAll('#alerts li')].some(li => li.textContent.includes('王女士') && li.textContent.includes('陈晨'))",
        WAIT,
    )
    .await;
    page.click("#alerts li button").await;
    page.wait_for(
        "no alert waiting",
        "document.querySelectorAll('#alerts li').length === 0 && !document.getElementById('alerts-empty').hidden",
        WAIT,
    )
    .await;

    post_card(&kiosk, &pda, "nfc:04C0FFEE000001").await;
    page.wait_for(
        "the unknown card's row",
        "document.querySelectorAll('#visits tbody tr').length === 2 && document.getElementById('t-unknown').textContent === '1'",
        WAIT,
    )
    .await;
    // The filter and the search narrow the table.
    page.select("#filter", "unknown").await;
    page.wait_for(
        "only the unknown card",
        "document.querySelectorAll('#visits tbody tr').length === 1 && document.querySelector('#visits tbody tr').dataset.outcome === 'unknown'",
        WAIT,
    )
    .await;
    page.select("#filter", "all").await;
    page.fill("#search", "陈晨").await;
    page.wait_for(
        "only 陈晨's visitor",
        "document.querySelectorAll('#visits tbody tr').length === 1 && document.querySelector('#visits tbody tr').textContent.includes('王女士')",
        WAIT,
    )
    .await;
    page.fill("#search", "").await;
    page.eval("document.activeElement.blur()").await;
    // The hour chart drew a bar.
    assert_eq!(
        page.eval("document.querySelectorAll('#chart-hours rect.bar').length")
            .await,
        1
    );
    page.screenshot(&shot("console-1920x1080"), false).await;
    page.screenshot(&shot("console-1920x1080-full"), true).await;

    // Checking out from the console.
    page.click("#rotation li[data-id=E01] button.out").await;
    page.wait_for(
        "李娜 off duty",
        "!document.querySelector('#rotation li[data-id=E01]')",
        WAIT,
    )
    .await;
    assert_no_page_errors(&page).await;

    // A tablet at the desk: its own sign-in (its own browser storage).
    let tablet = b.open(1280, 800, &kiosk.url("/console")).await;
    tablet
        .wait_for(
            "the sign-in form",
            "!document.getElementById('signin').hidden && document.getElementById('signin-office').textContent.length > 0",
            WAIT,
        )
        .await;
    tablet
        .screenshot(&shot("console-signin-1280x800"), false)
        .await;
    sign_in(&tablet, &staff).await;
    tablet
        .wait_for(
            "both visits",
            "document.querySelectorAll('#visits tbody tr').length === 2",
            WAIT,
        )
        .await;
    tablet.screenshot(&shot("console-1280x800"), false).await;
    let overflow = tablet
        .eval("document.documentElement.scrollWidth > document.documentElement.clientWidth")
        .await;
    assert_eq!(
        overflow, false,
        "the console is wider than a 1280×800 tablet"
    );
    assert_no_page_errors(&tablet).await;

    // A handheld's token is refused at sign-in.
    let refused = b.open(1280, 800, &kiosk.url("/console")).await;
    refused
        .wait_for(
            "the sign-in form",
            "!document.getElementById('signin').hidden",
            WAIT,
        )
        .await;
    refused.fill("#token", &pda).await;
    refused.click("#signin-form button[type=submit]").await;
    refused
        .wait_for(
            "the refusal",
            "document.getElementById('signin-error').textContent.includes('staff device')",
            WAIT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_consultant_taking_a_visitor_in_the_rotation() {
    let dir = kiosk_dir("");
    let staff = add_staff_device(&dir, "desk");
    let pda = add_device(&dir, "pda-1");
    let kiosk = dir.start();
    on_duty(&kiosk, &staff, &["E01", "E02"]).await;
    let page = browser().open(1280, 800, &kiosk.url("/console")).await;
    sign_in(&page, &staff).await;
    assert_eq!(
        console_queue(&page).await,
        json!([["E01", false], ["E02", false]])
    );

    // 张先生 belongs to 李娜 (E01), who is on duty: she takes him and is busy.
    post_card(&kiosk, &pda, "nfc:04A1B2C3D4E5F6").await;
    let (_, resp) = get(&kiosk, "/api/v1/rotation", Some(&pda)).await;
    let rotation: Value = resp.json().await.expect("JSON");
    assert!(
        rotation["queue"][0]["busy"] == true || rotation["queue"][1]["busy"] == true,
        "the kiosk did not give the visitor to a consultant of the rotation ({rotation}); \
         this needs the reception rules wired into visits (branch reception-wiring)"
    );
    page.wait_for(
        "李娜 with a visitor",
        "document.querySelector('#rotation li[data-id=E01]').dataset.busy === '1'",
        WAIT,
    )
    .await;
    assert_eq!(page.text("#rot-next").await, "陈晨");
    page.click("#rotation li[data-id=E01] button.free").await;
    page.wait_for(
        "李娜 free again",
        "document.querySelector('#rotation li[data-id=E01]').dataset.busy === '0'",
        WAIT,
    )
    .await;
    assert_no_page_errors(&page).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_bound_in_the_console_greets_its_new_member_at_the_next_tap() {
    let reader = claim_reader();
    let dir = kiosk_dir(&format!(
        "[[reader]]\nkind = \"pcsc\"\nname = \"{}\"\n\n[reception]\nsame_card_cooldown = \"0s\"\n",
        reader.name
    ));
    let staff = add_staff_device(&dir, "desk");
    let kiosk = dir.start();
    let mut events = SseClient::connect(&kiosk.url("/api/v1/events")).await;
    events
        .wait_for("reader", WAIT, |d| {
            d["reader"] == reader.name.as_str() && d["connected"] == true
        })
        .await;
    let b = browser();
    let screen = b.open(1080, 1920, &kiosk.url("/")).await;
    screen_ready(&screen).await;
    let console = b.open(1280, 800, &kiosk.url("/console")).await;
    sign_in(&console, &staff).await;

    let card = VirtualCard::insert(reader.port, &UNKNOWN).expect("insert");
    screen_shows(&screen, "unknown", "请到前台").await;
    card.remove();
    events
        .wait_for("reader", WAIT, |d| {
            d["reader"] == reader.name.as_str() && d["card_present"] == false
        })
        .await;
    let (status, _) = get(&kiosk, "/api/v1/cards/unbound", Some(&staff)).await;
    assert_ne!(
        status, 404,
        "GET /api/v1/cards/unbound is missing: card issuing (branch card-issuing) is not merged yet"
    );
    let row = "#unbound li[data-card='nfc:04C0FFEE000001']";
    console
        .wait_for(
            "the unbound card",
            &format!("!!document.querySelector({})", js_str(row)),
            WAIT,
        )
        .await;
    console.click(&format!("{row} button")).await;
    console.check("input[name=mode][value=new]").await;
    console.fill("#new-name", FULL_NAME).await;
    assert_eq!(
        console
            .eval("document.getElementById('new-surname').value")
            .await,
        "赵"
    );
    console.select("#new-title", "ms").await;
    console.fill("#new-phone", PHONE).await;
    console.check("#new-consent").await;
    console.click("#bind-submit").await;
    console
        .wait_for(
            "the binding accepted",
            "!document.getElementById('bind-dialog').open && !!document.querySelector(\"#changes li[data-card='nfc:04C0FFEE000001']\")",
            WAIT,
        )
        .await;

    let card = VirtualCard::insert(reader.port, &UNKNOWN).expect("insert");
    screen_shows(&screen, "welcome", "赵女士").await;
    assert_screen_private(&screen).await;
    card.remove();
    let console_text = console.body_text().await;
    assert!(
        !console_text.contains(PHONE) && !console_text.contains(FULL_NAME),
        "the console shows the phone or the full name:\n{console_text}"
    );
    drop((screen, console));
    drop(kiosk);
    drop(reader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_endpoints_need_a_staff_token_and_count_and_export_the_visits() {
    let dir =
        kiosk_dir("[screen]\nlanguage = \"zh\"\ngreeting_duration = \"5s\"\nlogo = \"logo.svg\"\n");
    std::fs::write(dir.path().join("logo.svg"), LOGO).expect("write logo");
    let staff = add_staff_device(&dir, "desk");
    let pda = add_device(&dir, "pda-1");
    let kiosk = dir.start();
    on_duty(&kiosk, &staff, &["E01", "E02"]).await;
    post_card(&kiosk, &pda, "nfc:04A1B2C3D4E5F6").await;
    post_card(&kiosk, &pda, "nfc:04112233445566").await;
    post_card(&kiosk, &pda, "nfc:04C0FFEE000001").await;
    post_card(&kiosk, &pda, "nfc:04DEADBEEF0001").await;

    for path in [
        "/api/v1/stats",
        "/api/v1/visits.csv",
        "/api/v1/consultants",
        "/api/v1/system",
    ] {
        let (status, _) = get(&kiosk, path, None).await;
        assert_eq!(status, 401, "{path} without a token");
        let (status, resp) = get(&kiosk, path, Some(&pda)).await;
        assert_eq!(status, 403, "{path} with a handheld's token");
        let body: Value = resp.json().await.expect("JSON error");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("--staff")),
            "{body}"
        );
    }

    let (status, resp) = get(&kiosk, "/api/v1/screen", None).await;
    assert_eq!(status, 200);
    let screen: Value = resp.json().await.expect("JSON");
    assert_eq!(
        screen,
        json!({"office_name": "test-office", "language": "zh", "greeting_seconds": 5.0,
               "logo": "/assets/logo", "time_zone": "Asia/Shanghai"})
    );
    let (status, resp) = get(&kiosk, "/assets/logo", None).await;
    assert_eq!(status, 200);
    assert_eq!(resp.headers()["content-type"], "image/svg+xml");
    assert_eq!(resp.text().await.expect("logo"), LOGO);

    let (status, resp) = get(&kiosk, "/api/v1/stats", Some(&staff)).await;
    assert_eq!(status, 200);
    let stats: Value = resp.json().await.expect("JSON");
    assert_eq!(
        (
            &stats["visits"],
            &stats["first"],
            &stats["revisit"],
            &stats["unknown"],
            &stats["denied"]
        ),
        (&json!(2), &json!(2), &json!(0), &json!(1), &json!(1)),
        "{stats}"
    );
    assert_eq!(
        stats["by_consultant"],
        json!([{"consultant_id": "E01", "name": "李娜", "visits": 1},
               {"consultant_id": "E02", "name": "陈晨", "visits": 1}])
    );
    assert_eq!(
        stats["by_source"],
        json!([{"source": "handheld:pda-1", "visits": 2}])
    );
    let hours: u64 = stats["by_hour"]
        .as_array()
        .expect("by_hour")
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(hours, 2);
    let days = stats["days"].as_array().expect("days");
    assert_eq!(days.len(), 30);
    assert_eq!(days[29]["day"], stats["day"]);
    assert_eq!(
        (&days[29]["first"], &days[29]["revisit"]),
        (&json!(2), &json!(0))
    );

    let today = stats["day"].as_str().expect("day").to_owned();
    let (status, resp) = get(
        &kiosk,
        &format!("/api/v1/visits.csv?from={today}&to={today}"),
        Some(&staff),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/csv")),
    );
    assert!(
        resp.headers()["content-disposition"]
            .to_str()
            .is_ok_and(|d| d.contains(&format!("visits-test-kiosk-{today}_{today}.csv"))),
    );
    let csv = resp.text().await.expect("CSV");
    let csv = csv.strip_prefix('\u{FEFF}').expect("a BOM for Excel");
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 5, "{csv}");
    assert!(lines[0].starts_with("office_day,local_time,seq,visit_id,outcome"));
    assert!(
        lines[1].contains(",welcome,") && lines[1].contains(",张先生,gold,E01,李娜,"),
        "{}",
        lines[1]
    );
    assert!(lines[3].contains(",unknown,"), "{}", lines[3]);
    assert!(
        lines[4].contains(",denied,card_revoked,reported lost 2026-10-02,"),
        "{}",
        lines[4]
    );

    for (query, code, want) in [
        ("from=2026-13-01", 400, "is not a date"),
        ("since=2026-01-01", 400, "unknown field"),
        ("from=2026-11-02&to=2026-11-01", 422, "is before"),
        ("from=2024-01-01&to=2026-01-01", 422, "more than 366 days"),
    ] {
        let (status, resp) =
            get(&kiosk, &format!("/api/v1/visits.csv?{query}"), Some(&staff)).await;
        assert_eq!(status, code, "{query}");
        let body: Value = resp.json().await.expect("JSON");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(want)),
            "{query}: {body}"
        );
    }

    let (status, resp) = get(&kiosk, "/api/v1/consultants", Some(&staff)).await;
    assert_eq!(status, 200);
    let consultants: Value = resp.json().await.expect("JSON");
    assert_eq!(
        consultants,
        json!({"consultants": [{"id": "E01", "name": "李娜"}, {"id": "E02", "name": "陈晨"}]})
    );
    let (status, resp) = get(&kiosk, "/api/v1/system", Some(&staff)).await;
    assert_eq!(status, 200);
    let system: Value = resp.json().await.expect("JSON");
    assert!(
        system["database_bytes"].as_u64().is_some_and(|n| n > 0),
        "{system}"
    );
    assert!(
        system["disk_available_bytes"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{system}"
    );

    // The pages and their files, with the headers that keep them offline and fresh.
    for (path, kind) in [
        ("/", "text/html"),
        ("/console", "text/html"),
        ("/assets/console.js", "text/javascript"),
        ("/assets/screen.css", "text/css"),
    ] {
        let (status, resp) = get(&kiosk, path, None).await;
        assert_eq!(status, 200, "{path}");
        let headers = resp.headers();
        assert!(
            headers["content-type"]
                .to_str()
                .is_ok_and(|t| t.starts_with(kind)),
            "{path}"
        );
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        if kind == "text/html" {
            assert!(
                headers["content-security-policy"]
                    .to_str()
                    .is_ok_and(|c| c.contains("default-src 'self'")),
                "{path}"
            );
        }
    }
    let (_, resp) = get(&kiosk, "/assets/console.js", None).await;
    let etag = resp.headers()["etag"].clone();
    let again = kiosk_tests::http_client()
        .get(kiosk.url("/assets/console.js"))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("GET");
    assert_eq!(again.status(), 304);
    for path in [
        "/assets/nope.js",
        "/assets/console.html",
        "/assets/..%2FCargo.toml",
    ] {
        let (status, _) = get(&kiosk, path, None).await;
        assert_eq!(status, 404, "{path}");
    }
}
