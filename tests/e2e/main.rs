//! End-to-end tests through the real `kiosk` binary, a real pcscd with vpcd virtual readers, real HTTP and SQLite.

mod alerts;
mod browser;
mod cards;
mod devices;
mod openapi;
mod reception;
mod reception_day;
mod rotation;
mod serial;
mod sync;
mod webhooks;

use std::time::Duration;

use kiosk_tests::kiosk::KioskDir;
use kiosk_tests::pcscd::{ReaderGuard, claim_reader};
use kiosk_tests::sse::{SseClient, SseEvent};
use kiosk_tests::vpcd::{Behaviour, VirtualCard};
use nix::sys::signal::Signal;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kiosk");
/// Generous: pcscd polls vpcd about every 400 ms, and CI machines are slow.
const WAIT: Duration = Duration::from_secs(20);

const ROSTER: &str = "\
card,customer_id,surname,title,tier,card_status,consultant_id,consultant_name,note
nfc:04A1B2C3D4E5F6,C0001,张,mr,gold,active,E01,李娜,
nfc:04112233445566,C0002,王,ms,silver,active,E02,陈晨,
nfc:04DEADBEEF0001,C0001,张,mr,gold,revoked,E01,李娜,reported lost 2026-10-02
";
const ZHANG: [u8; 7] = [0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6];
const WANG: [u8; 7] = [0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66];
const REVOKED: [u8; 7] = [0x04, 0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0x01];
const UNKNOWN: [u8; 7] = [0x04, 0xC0, 0xFF, 0xEE, 0x00, 0x00, 0x01];
const PHONE: [u8; 4] = [0x08, 0x5A, 0x6B, 0x7C];

/// A kiosk with the roster imported, watching its own virtual reader, plus an open event stream.
/// Fields drop in order: the kiosk stops before its reader goes back to the pool.
struct Setup {
    kiosk: kiosk_tests::kiosk::Running,
    events: SseClient,
    dir: KioskDir,
    reader: ReaderGuard,
}

async fn setup(cooldown: &str) -> Setup {
    setup_with(cooldown, "none").await
}

/// `setup` with the reader's `feedback` setting.
async fn setup_with(cooldown: &str, feedback: &str) -> Setup {
    let reader = claim_reader();
    let dir = KioskDir::new(
        BIN,
        &format!(
            "[[reader]]\nkind = \"pcsc\"\nname = \"{}\"\nfeedback = \"{feedback}\"\n\n[reception]\nsame_card_cooldown = \"{cooldown}\"\n",
            reader.name
        ),
    );
    let out = dir.import(ROSTER);
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kiosk = dir.start();
    let mut events = SseClient::connect(&kiosk.url("/api/v1/events")).await;
    // The backend has found our reader: taps from now on are seen.
    events
        .wait_for("reader", WAIT, |d| {
            d["reader"] == reader.name.as_str() && d["connected"] == true
        })
        .await;
    Setup {
        dir,
        reader,
        kiosk,
        events,
    }
}

impl Setup {
    /// Puts a card on the reader and returns the greeting it produced.
    async fn tap(&mut self, uid: &[u8]) -> (VirtualCard, SseEvent) {
        let card = VirtualCard::insert(self.reader.port, uid).expect("insert virtual card");
        let greeting = self.events.wait_for("greeting", WAIT, |_| true).await;
        (card, greeting)
    }

    /// Waits until the kiosk reports a card on the reader as handled (read, or not).
    async fn handled(&mut self) {
        let name = self.reader.name.clone();
        self.events
            .wait_for("reader", WAIT, |d| {
                d["reader"] == name.as_str() && d["card_present"] == true
            })
            .await;
    }

    /// Takes the card off and waits until the kiosk has seen it go.
    async fn remove(&mut self, card: VirtualCard) {
        card.remove();
        let name = self.reader.name.clone();
        self.events
            .wait_for("reader", WAIT, |d| {
                d["reader"] == name.as_str() && d["card_present"] == false
            })
            .await;
    }

    async fn visits(&self) -> Vec<Value> {
        let v = self.kiosk.get_json("/api/v1/visits").await;
        v["visits"].as_array().cloned().unwrap_or_default()
    }
}

fn assert_public(ev: &SseEvent) {
    // The public stream never carries ids, card tokens or anything like a phone number.
    for forbidden in ["C0001", "C0002", "nfc:", "customer_id"] {
        assert!(
            !ev.raw.contains(forbidden),
            "public event leaks {forbidden:?}: {}",
            ev.raw
        );
    }
    // A phone number is a run of 11 digits (a mainland mobile) or more; a time's
    // nanoseconds are 9 at most. (A bare "138" also matched those nanoseconds.)
    let longest = ev
        .raw
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(
        longest < 11,
        "public event carries a phone-like number: {}",
        ev.raw
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_tap_greets_and_is_stored_with_status() {
    let mut s = setup("3s").await;
    // The greeting names the consultant who receives: 张's own, on duty.
    let desk = devices::add_staff_device(&s.dir, "desk");
    reception::check_in(&s.kiosk, &desk, "E01").await;
    let (_card, greeting) = s.tap(&ZHANG).await;
    let g = &greeting.data;
    assert_eq!(g["outcome"], "welcome", "{g}");
    assert_eq!(g["visit_kind"], "first");
    assert_eq!(g["repeat"], false);
    assert_eq!(g["member"]["name_zh"], "张先生");
    assert_eq!(g["member"]["name_en"], "Mr. 张");
    assert_eq!(g["member"]["tier"], "gold");
    assert_eq!(g["consultant"], "李娜");
    assert_eq!(g["reader"], s.reader.name.as_str());
    assert_public(&greeting);

    // Acknowledged means committed: the visit is already readable.
    let visits = s.visits().await;
    assert_eq!(visits.len(), 1, "{visits:?}");
    let v = &visits[0];
    assert_eq!(v["id"], g["visit_id"]);
    assert_eq!(v["seq"], 1);
    assert_eq!(v["outcome"], "welcome");
    assert_eq!(v["kind"], "first");
    assert_eq!(v["customer_id"], "C0001");
    assert_eq!(v["card"], "nfc:04A1B2C3D4E5F6");
    assert_eq!(v["method"], "nfc");
    assert_eq!(v["source"], s.reader.name.as_str());
    assert_eq!(v["consultant_id"], "E01");

    let status = s.kiosk.get_json("/api/v1/status").await;
    let reader = status["readers"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == s.reader.name.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("reader missing from status: {status}"));
    assert_eq!(reader["connected"], true);
    assert_eq!(reader["kind"], "pcsc");
    assert!(reader["last_tap"].is_string(), "{reader}");
    assert_eq!(status["outbox_backlog"], 1);
    assert_eq!(status["visits_today"], 1);
    assert_eq!(status["services"][0]["up"], true);
    assert!(
        status["data_dir"]
            .as_str()
            .is_some_and(|d| d.starts_with(s.dir.path().to_str().unwrap_or("?"))),
        "{status}"
    );
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));

    let health = s.kiosk.get_json("/healthz").await;
    assert_eq!(health["status"], "ok");

    let wrong = kiosk_tests::http_client()
        .post(s.kiosk.url("/api/v1/status"))
        .send()
        .await
        .expect("POST");
    assert_eq!(wrong.status(), 405);
    let body: Value = wrong.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tap_inside_the_cooldown_makes_no_event() {
    let mut s = setup("1h").await;
    let (card, first) = s.tap(&ZHANG).await;
    assert_eq!(first.data["member"]["name_zh"], "张先生");
    s.remove(card).await;

    // The same card again: the kiosk sees it arrive and leave, and says nothing.
    let again = VirtualCard::insert(s.reader.port, &ZHANG).expect("insert");
    let name = s.reader.name.clone();
    s.events
        .wait_for("reader", WAIT, |d| {
            d["reader"] == name.as_str() && d["card_present"] == true
        })
        .await;
    s.remove(again).await;

    // Another card right after is greeted at once, and it is the next greeting.
    let (_card, next) = s.tap(&WANG).await;
    assert_eq!(next.data["member"]["name_zh"], "王女士", "{}", next.raw);
    let visits = s.visits().await;
    assert_eq!(visits.len(), 2, "{visits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_unknown_and_phone_taps_are_recorded_but_not_counted() {
    let mut s = setup("3s").await;

    let (card, denied) = s.tap(&REVOKED).await;
    assert_eq!(denied.data["outcome"], "denied", "{}", denied.raw);
    assert_eq!(denied.data["reason"], "card_revoked");
    assert!(
        denied.data["member"].is_object(),
        "the screen may still address the card's owner"
    );
    assert_public(&denied);
    s.remove(card).await;

    let (card, unknown) = s.tap(&UNKNOWN).await;
    assert_eq!(unknown.data["outcome"], "unknown", "{}", unknown.raw);
    assert!(unknown.data["member"].is_null());
    assert_public(&unknown);
    s.remove(card).await;

    let (_card, phone) = s.tap(&PHONE).await;
    assert_eq!(phone.data["outcome"], "denied", "{}", phone.raw);
    assert_eq!(phone.data["reason"], "not_a_membership_card");
    assert!(phone.data["member"].is_null());

    let visits = s.visits().await;
    let outcomes: Vec<(&str, &str)> = visits
        .iter()
        .map(|v| {
            (
                v["outcome"].as_str().unwrap_or("?"),
                v["card"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("denied", "nfc:085A6B7C"),
            ("unknown", "nfc:04C0FFEE000001"),
            ("denied", "nfc:04DEADBEEF0001"),
        ]
    );
    let revoked = &visits[2];
    assert_eq!(revoked["reason"], "card_revoked");
    assert_eq!(revoked["reason_detail"], "reported lost 2026-10-02");
    assert!(
        visits.iter().all(|v| v["kind"].is_null()),
        "none counts as a visit: {visits:?}"
    );
    assert!(visits[0]["customer_id"].is_null() && visits[1]["customer_id"].is_null());
    let status = s.kiosk.get_json("/api/v1/status").await;
    assert_eq!(status["visits_today"], 0);
    assert_eq!(status["outbox_backlog"], 3, "evidence is synced too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tap_the_same_day_greets_again_without_a_second_visit() {
    let mut s = setup("0s").await;
    let (card, first) = s.tap(&ZHANG).await;
    assert_eq!(first.data["visit_kind"], "first");
    s.remove(card).await;
    let (_card, second) = s.tap(&ZHANG).await;
    assert_eq!(second.data["outcome"], "welcome", "{}", second.raw);
    assert_eq!(second.data["repeat"], true);
    assert_eq!(second.data["visit_id"], first.data["visit_id"]);
    let visits = s.visits().await;
    assert_eq!(visits.len(), 1, "{visits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_visit_survives_kill_9() {
    let mut s = setup("3s").await;
    let (_card, greeting) = s.tap(&WANG).await;
    // The greeting is the acknowledgement: kill at once, no chance to flush anything.
    s.kiosk.signal(Signal::SIGKILL);
    let status = s.kiosk.wait_exit(WAIT).expect("killed kiosk exits");
    assert!(!status.success());

    let restarted = s.dir.start();
    let visits = restarted.get_json("/api/v1/visits").await;
    let ids: Vec<&Value> = visits["visits"]
        .as_array()
        .map(|v| v.iter().map(|x| &x["id"]).collect())
        .unwrap_or_default();
    assert_eq!(ids, [&greeting.data["visit_id"]], "{visits}");
    let status = restarted.get_json("/api/v1/status").await;
    assert_eq!(status["outbox_backlog"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_daemon_cleanly_with_a_screen_connected() {
    let mut s = setup("3s").await;
    s.kiosk.signal(Signal::SIGTERM);
    let status = s
        .kiosk
        .wait_exit(Duration::from_secs(10))
        .expect("exits within 10 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    // The open event stream ends rather than hanging.
    assert!(s.events.next(WAIT).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_without_a_matching_reader_starts_and_says_so() {
    let dir = KioskDir::new(
        BIN,
        "[[reader]]\nkind = \"pcsc\"\nname = \"No Such Reader*\"\n",
    );
    let kiosk = dir.start();
    let status = kiosk.get_json("/api/v1/status").await;
    let problems = status["problems"].to_string();
    assert!(
        problems.contains("no connected reader matches \\\"No Such Reader*\\\""),
        "{status}"
    );
    assert_eq!(status["readers"], serde_json::json!([]));
}

#[test]
fn check_config_lists_every_problem_and_exits_1() {
    let dir = KioskDir::new(BIN, "");
    let good = dir.cli(&["check-config", dir.config().to_str().unwrap_or("?")]);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stdout)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[kiosk]\nid = 'k 1'\ntime_zone = 'Mars/Olympus'\ndata_dir = 'd'\n\n[[reader]]\nkind = 'pcsc'\nname = ''\n\n[reception]\nsame_card_cooldown = '3 seconds'\ncolor = 'red'\n",
    )
    .expect("write");
    let out = dir.cli(&["check-config", bad.to_str().unwrap_or("?")]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "kiosk.id: \"k 1\" is not a valid id",
        "kiosk.office: is missing",
        "kiosk.time_zone: unknown time zone \"Mars/Olympus\"",
        "reader[0].name: is empty",
        "reception.same_card_cooldown: \"3 seconds\"",
        "reception.color: unknown key",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_roster_file_imports_nothing() {
    let dir = KioskDir::new(BIN, "");
    assert!(dir.import(ROSTER).status.success());
    let bad = "card,customer_id,surname,title,tier\nnfc:04AAAAAAAA,C0009,李,ms,gold\nnfc:04BB,C0010,赵,mr,gold\nnfc:04CCCCCCCC,C0011,钱,mr,diamond\n";
    let out = dir.import(bad);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("line 3: card: \"nfc:04BB\""), "{stdout}");
    assert!(stdout.contains("line 4: tier: \"diamond\""), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was imported"));

    let kiosk = dir.start();
    let status = kiosk.get_json("/api/v1/status").await;
    assert_eq!(
        status["roster_cards"], 3,
        "the good row of the bad file was not stored either"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_that_cannot_be_read_makes_no_event_and_the_next_tap_works() {
    let mut s = setup("0s").await;
    // A card whose UID read fails is seen on the reader (presence) but is no visit.
    // (A card vanishing mid-APDU cannot be staged here: vpcd then keeps reporting the
    // card present, so the failed-read path is driven by an error status instead.)
    let card = VirtualCard::insert_with(s.reader.port, &UNKNOWN, Behaviour::NoUid).expect("insert");
    s.handled().await;
    s.remove(card).await;
    let (card, next) = s.tap(&ZHANG).await;
    assert_eq!(
        next.data["member"]["name_zh"], "张先生",
        "the first greeting: {}",
        next.raw
    );
    assert!(
        !card
            .apdus()
            .iter()
            .any(|a| a.starts_with(&[0xFF, 0x00, 0x40])),
        "feedback is off by default"
    );
    let visits = s.visits().await;
    assert_eq!(visits.len(), 1, "{visits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acr122u_feedback_lights_green_or_red_and_a_refusing_reader_is_not_asked_again() {
    const LED: [u8; 3] = [0xFF, 0x00, 0x40];
    let led_commands = |card: &VirtualCard| -> Vec<Vec<u8>> {
        card.apdus()
            .into_iter()
            .filter(|a| a.starts_with(&LED))
            .collect()
    };
    let mut s = setup_with("0s", "acr122u").await;

    let card = VirtualCard::insert_with(s.reader.port, &ZHANG, Behaviour::Acr122u).expect("insert");
    let g = s.events.wait_for("greeting", WAIT, |_| true).await;
    assert_eq!(g.data["outcome"], "welcome");
    s.handled().await;
    assert_eq!(
        led_commands(&card),
        [kiosk_device::pcsc::LED_WELCOME.to_vec()]
    );
    s.remove(card).await;

    let card =
        VirtualCard::insert_with(s.reader.port, &UNKNOWN, Behaviour::Acr122u).expect("insert");
    let g = s.events.wait_for("greeting", WAIT, |_| true).await;
    assert_eq!(g.data["outcome"], "unknown");
    s.handled().await;
    assert_eq!(
        led_commands(&card),
        [kiosk_device::pcsc::LED_REFUSED.to_vec()]
    );
    s.remove(card).await;

    // A reader that answers 6D 00 (no such command) is asked once...
    let card = VirtualCard::insert_with(s.reader.port, &WANG, Behaviour::Plain).expect("insert");
    s.events.wait_for("greeting", WAIT, |_| true).await;
    s.handled().await;
    assert_eq!(led_commands(&card).len(), 1);
    s.remove(card).await;

    // ...and never again, even for a card that would take it.
    let card =
        VirtualCard::insert_with(s.reader.port, &REVOKED, Behaviour::Acr122u).expect("insert");
    let g = s.events.wait_for("greeting", WAIT, |_| true).await;
    assert_eq!(g.data["outcome"], "denied");
    s.handled().await;
    assert_eq!(led_commands(&card), Vec::<Vec<u8>>::new());
}
