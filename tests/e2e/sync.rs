//! Sync end to end: real kiosk and hub processes, a fault proxy between them, SQLite and PostgreSQL hubs.
//!
//! Visits are made the way a kiosk makes them: a QR scanner on a pseudo-terminal sends
//! one line per visitor, and every distinct payload is a stored visit (an unknown card is
//! evidence too). The hub's contents are read back through its admin API and compared
//! with what the kiosk acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use kiosk_tests::hub::{HubDir, RunningHub, sync_section};
use kiosk_tests::kiosk::{KioskDir, Running};
use kiosk_tests::postgres::{PgDatabase, fresh_database};
use kiosk_tests::proxy::{FaultProxy, Mode};
use kiosk_tests::serial::PtyReader;
use serde_json::Value;

use crate::BIN;

/// Long enough for 10,000 fsync'd taps and their push on a slow CI machine.
const LONG: Duration = Duration::from_secs(300);
const WAIT: Duration = Duration::from_secs(30);
const OFFICE: &str = "test-office";
const KIOSK: &str = "test-kiosk";

/// Which hub store a test runs against.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A hub folder, and the PostgreSQL database behind it (dropped after the hub).
struct HubSetup {
    dir: HubDir,
    _db: Option<PgDatabase>,
}

fn hub_dir(backend: Backend) -> HubSetup {
    match backend {
        Backend::Sqlite => HubSetup {
            dir: HubDir::sqlite(BIN),
            _db: None,
        },
        Backend::Postgres => {
            let db = fresh_database();
            HubSetup {
                dir: HubDir::postgres(BIN, db.url()),
                _db: Some(db),
            }
        }
    }
}

/// Polls `check` until it gives a value, failing after `limit` with `what`.
pub(crate) async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn sync_status(kiosk: &Running) -> Value {
    kiosk.get_json("/api/v1/status").await["sync"].clone()
}

/// A kiosk with a QR scanner on a pseudo-terminal, syncing with `hub_url`. The
/// scanner's link and the token file sit in the kiosk's folder.
struct SyncedKiosk {
    scanner: PtyReader,
    dir: KioskDir,
}

impl SyncedKiosk {
    fn new(hub: &HubDir, id: &str, hub_url: &str) -> SyncedKiosk {
        let links = tempfile::Builder::new()
            .prefix("qr-")
            .tempdir()
            .expect("temp dir");
        let scanner = PtyReader::plug_in(&links.path().join("qr"));
        let extra = format!(
            "[[reader]]\nkind = \"serial\"\nname = \"qr\"\npath = \"{}\"\nprotocol = \"line\"\n\n{}",
            scanner.path().display(),
            sync_section(hub_url, "hub.token", "")
        );
        let dir = KioskDir::with_id(BIN, id, OFFICE, &extra);
        hub.add_kiosk(id, OFFICE, &dir.path().join("hub.token"));
        // The link's folder must outlive the test's use of the scanner.
        std::mem::forget(links);
        SyncedKiosk { scanner, dir }
    }

    /// Scans `payloads` one line each: each is a distinct visitor.
    fn scan(&mut self, payloads: impl IntoIterator<Item = String>) {
        let mut text = String::new();
        for p in payloads {
            text.push_str(&p);
            text.push('\r');
        }
        self.scanner.send(text.as_bytes());
    }
}

pub(crate) async fn wait_drained(kiosk: &Running) {
    wait_until("the outbox to drain", LONG, || async {
        let s = sync_status(kiosk).await;
        (s["backlog"] == 0).then_some(())
    })
    .await;
}

/// The hub's records of a kiosk: every seq from 1 to `n` exactly once, each with a
/// distinct id; returns the cards scanned, by seq.
async fn hub_cards(hub: &RunningHub, kiosk: &str, n: u64) -> BTreeMap<u64, String> {
    let records = hub.all_records(kiosk).await;
    let mut by_seq = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for r in &records {
        let visit = &r["body"]["record"];
        let seq = r["seq"].as_u64().expect("seq");
        assert!(
            ids.insert(r["id"].as_str().expect("id").to_owned()),
            "record {} twice",
            r["id"]
        );
        assert_eq!(visit["seq"], seq, "{r}");
        assert!(
            by_seq
                .insert(seq, visit["card"].as_str().unwrap_or_default().to_owned())
                .is_none(),
            "seq {seq} twice"
        );
    }
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>(),
        "the hub must hold seq 1..={n} of {kiosk}, gap-free"
    );
    by_seq
}

fn payloads(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i:05}")).collect()
}

/// The cards the hub holds must be exactly the scans, each once.
fn assert_exactly(cards: &BTreeMap<u64, String>, scanned: &[String]) {
    let held: BTreeSet<&str> = cards.values().map(String::as_str).collect();
    let want: BTreeSet<String> = scanned.iter().map(|p| format!("qr:{p}")).collect();
    let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(held.len(), cards.len(), "a scan is held twice");
    assert_eq!(held, want);
}

async fn offline_backlog(backend: Backend) {
    let hub_setup = hub_dir(backend);
    let hub_dir = &hub_setup.dir;
    // The hub is down: the proxy refuses every connection.
    let proxy = FaultProxy::start("127.0.0.1:9".parse().expect("addr"));
    proxy.set_mode(Mode::Refuse);
    let mut k = SyncedKiosk::new(hub_dir, KIOSK, &proxy.url());
    let kiosk = k.dir.start();
    let scans = payloads("OFFLINE", 0..10_000);
    k.scan(scans.clone());
    wait_until("10,000 visits waiting", LONG, || async {
        (sync_status(&kiosk).await["backlog"] == 10_000).then_some(())
    })
    .await;
    let status = sync_status(&kiosk).await;
    assert_eq!(status["hub_reachable"], false, "{status}");
    assert!(status["oldest_unsent_at"].is_string(), "{status}");

    let hub = hub_dir.start();
    proxy.set_upstream(hub.addr());
    proxy.set_mode(Mode::Pass);
    wait_drained(&kiosk).await;
    let cards = hub_cards(&hub, KIOSK, 10_000).await;
    assert_exactly(&cards, &scans);
    let status = sync_status(&kiosk).await;
    assert_eq!(status["hub_reachable"], true, "{status}");
    assert!(status["last_push_at"].is_string(), "{status}");
    assert_eq!(status["quarantine"]["count"], 0);
    let metrics = kiosk_tests::http_client()
        .get(kiosk.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("kiosk_outbox_backlog 0"), "{metrics}");
    let hub_metrics = kiosk_tests::http_client()
        .get(hub.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        hub_metrics.contains("hub_records_stored 10000"),
        "{hub_metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_offline_visits_reach_a_sqlite_hub_exactly_once() {
    offline_backlog(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_offline_visits_reach_a_postgres_hub_exactly_once() {
    offline_backlog(Backend::Postgres).await;
}

/// With the hub unreachable, scans `n` new payloads and waits until all `n` wait in
/// the outbox (the outbox was empty before).
async fn scan_while_down(
    k: &mut SyncedKiosk,
    kiosk: &Running,
    proxy: &FaultProxy,
    prefix: &str,
    n: u32,
    scanned: &mut Vec<String>,
) {
    proxy.set_mode(Mode::Refuse);
    let batch = payloads(prefix, 0..n);
    k.scan(batch.clone());
    scanned.extend(batch);
    wait_until(&format!("{n} {prefix} visits waiting"), LONG, || async {
        (sync_status(kiosk).await["backlog"] == u64::from(n)).then_some(())
    })
    .await;
}

async fn faults(backend: Backend) {
    let hub_setup = hub_dir(backend);
    let hub_dir = &hub_setup.dir;
    let mut hub = hub_dir.start();
    let proxy = FaultProxy::start(hub.addr());
    proxy.set_mode(Mode::Refuse);
    let mut k = SyncedKiosk::new(hub_dir, KIOSK, &proxy.url());
    let mut kiosk = k.dir.start();
    let mut scanned = Vec::new();

    // 1. The hub commits, the reply is lost (twice): the kiosk sends the same batch
    //    again and the hub answers "duplicate".
    scan_while_down(&mut k, &kiosk, &proxy, "LOST-REPLY", 1200, &mut scanned).await;
    proxy.set_mode(Mode::DropResponses(2));
    proxy.wait_for_async(WAIT, |c| c.dropped >= 2).await;
    wait_drained(&kiosk).await;
    assert_exactly(&hub_cards(&hub, KIOSK, 1200).await, &scanned);

    // 2. The connection drops mid-batch, then the link is slow.
    proxy.set_mode(Mode::CutRequest { after: 700 });
    let batch = payloads("CUT", 0..800);
    k.scan(batch.clone());
    scanned.extend(batch);
    proxy.wait_for_async(WAIT, |c| c.cut >= 1).await;
    proxy.set_mode(Mode::Delay(Duration::from_millis(20)));
    wait_drained(&kiosk).await;
    assert_exactly(&hub_cards(&hub, KIOSK, 2000).await, &scanned);

    // 3. kill -9 the kiosk while it pushes (replies lost so it keeps resending), then
    //    restart it: it resends its frozen batch.
    scan_while_down(&mut k, &kiosk, &proxy, "KIOSK-KILL", 1500, &mut scanned).await;
    proxy.set_mode(Mode::DropResponse);
    proxy.wait_for_async(WAIT, |c| c.dropped >= 3).await;
    kiosk.kill9();
    proxy.set_mode(Mode::Pass);
    kiosk = k.dir.start();
    wait_drained(&kiosk).await;
    assert_exactly(&hub_cards(&hub, KIOSK, 3500).await, &scanned);

    // 4. kill -9 the hub after it committed a batch but before its reply reached the
    //    kiosk, then start it again (on a new port, behind the same proxy address).
    scan_while_down(&mut k, &kiosk, &proxy, "HUB-KILL", 1000, &mut scanned).await;
    let before = proxy.counters().dropped;
    proxy.set_mode(Mode::DropResponse);
    proxy
        .wait_for_async(WAIT, move |c| c.dropped > before)
        .await;
    hub.kill9();
    proxy.set_mode(Mode::Refuse);
    hub = hub_dir.start();
    proxy.set_upstream(hub.addr());
    proxy.set_mode(Mode::Pass);
    wait_drained(&kiosk).await;
    let cards = hub_cards(&hub, KIOSK, 4500).await;
    assert_exactly(&cards, &scanned);
    assert!(hub.rejects(KIOSK).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_replies_cut_connections_and_kill_9_lose_nothing_and_double_nothing_sqlite() {
    faults(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_replies_cut_connections_and_kill_9_lose_nothing_and_double_nothing_postgres() {
    faults(Backend::Postgres).await;
}

const MEMBERS: &str = "\
card,customer_id,surname,title,tier,card_status,consultant_id,consultant_name,note,name,phone
qr:MEMBER-1,C0001,张,mr,gold,active,E01,李娜,,张伟,13800138000
qr:MEMBER-2,C0002,王,ms,silver,active,E02,陈晨,,王芳,13900139000
qr:MEMBER-3,C0003,欧阳,ms,normal,active,E01,李娜,,,
";

/// The outcome of the kiosk's newest visit, once it has `n` visits.
async fn nth_outcome(kiosk: &Running, n: u64) -> (String, Value) {
    wait_until(&format!("visit {n}"), WAIT, || async {
        let v = kiosk.get_json("/api/v1/visits?limit=1").await;
        let newest = v["visits"][0].clone();
        (newest["seq"].as_u64() == Some(n)).then(|| {
            (
                newest["outcome"].as_str().unwrap_or_default().to_owned(),
                newest,
            )
        })
    })
    .await
}

async fn roster(backend: Backend) {
    let hub_setup = hub_dir(backend);
    let hub_dir = &hub_setup.dir;
    let out = hub_dir.import(MEMBERS);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hub = hub_dir.start();
    let mut k = SyncedKiosk::new(hub_dir, KIOSK, &hub.base);
    let mut kiosk = k.dir.start();
    // The first pull is a snapshot: the members are known.
    wait_until("the roster snapshot", WAIT, || async {
        (sync_status(&kiosk).await["roster_cursor"]
            .as_u64()
            .is_some())
        .then_some(())
    })
    .await;
    k.scan(["MEMBER-1".to_owned()]);
    let (outcome, visit) = nth_outcome(&kiosk, 1).await;
    assert_eq!(outcome, "welcome", "{visit}");

    // Revoked at the hub: the next tap at the running kiosk is denied.
    let cursor = sync_status(&kiosk).await["roster_cursor"]
        .as_u64()
        .unwrap_or(0);
    hub.put_card(
        "qr:MEMBER-2",
        serde_json::json!({"customer_id": "C0002", "status": "revoked", "note": "lost"}),
    )
    .await;
    wait_until("the revocation to arrive", WAIT, || async {
        (sync_status(&kiosk).await["roster_cursor"].as_u64() > Some(cursor)).then_some(())
    })
    .await;
    k.scan(["MEMBER-2".to_owned()]);
    let (outcome, visit) = nth_outcome(&kiosk, 2).await;
    assert_eq!(outcome, "denied", "{visit}");
    assert_eq!(visit["reason"], "card_revoked", "{visit}");

    // Deleted at the hub (a tombstone): the card is gone, so it is unknown.
    let cursor = sync_status(&kiosk).await["roster_cursor"]
        .as_u64()
        .unwrap_or(0);
    hub.delete_card("qr:MEMBER-3").await;
    wait_until("the tombstone to arrive", WAIT, || async {
        (sync_status(&kiosk).await["roster_cursor"].as_u64() > Some(cursor)).then_some(())
    })
    .await;
    k.scan(["MEMBER-3".to_owned()]);
    let (outcome, visit) = nth_outcome(&kiosk, 3).await;
    assert_eq!(outcome, "unknown", "{visit}");

    // A phone number belongs to one customer: the hub names the other customer's id only.
    let taken = hub
        .admin(reqwest::Method::PUT, "/admin/v1/customers/C0009")
        .json(&serde_json::json!({"surname": "赵", "title": "mr", "tier": "normal", "phone": "+86 138 0013 8000"}))
        .send()
        .await
        .expect("PUT customer");
    assert_eq!(taken.status(), 409);
    let body = taken.text().await.expect("body");
    assert!(
        body.contains("phone_taken") && body.contains("C0001"),
        "{body}"
    );
    assert!(
        !body.contains('张') && !body.contains("13800138000"),
        "{body}"
    );

    // The kiosk is away for long: changes pile up and the hub forgets them (pruned,
    // as 30 days of retention would); its old cursor gets 409 and it takes a snapshot.
    kiosk.stop();
    hub.put_card(
        "qr:MEMBER-4",
        serde_json::json!({"customer_id": "C0003", "status": "active"}),
    )
    .await;
    hub.put_card(
        "qr:MEMBER-1",
        serde_json::json!({"customer_id": "C0001", "status": "revoked", "note": "stolen"}),
    )
    .await;
    hub_dir.prune_all();
    kiosk = k.dir.start();
    wait_until("a snapshot after the expired cursor", WAIT, || async {
        let s = sync_status(&kiosk).await;
        (s["snapshots_taken"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    k.scan(["MEMBER-4".to_owned(), "MEMBER-1".to_owned()]);
    let (outcome, visit) = nth_outcome(&kiosk, 5).await;
    assert_eq!(
        outcome, "denied",
        "MEMBER-1 was revoked while away: {visit}"
    );
    let visits = kiosk.get_json("/api/v1/visits?limit=2").await;
    assert_eq!(visits["visits"][1]["outcome"], "welcome", "{visits}");
    assert_eq!(visits["visits"][1]["name_zh"], "欧阳女士", "{visits}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_changes_reach_a_running_kiosk_and_an_expired_cursor_takes_a_snapshot_sqlite() {
    roster(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_changes_reach_a_running_kiosk_and_an_expired_cursor_takes_a_snapshot_postgres() {
    roster(Backend::Postgres).await;
}

/// A visit record as a kiosk would send it (the wire shape of `sync::wire::VisitRecord`).
fn visit_line(kiosk: &str, seq: u64, card: &str, customer: Option<&str>, day: &str) -> String {
    serde_json::json!({
        "kind": "visit",
        "record": {
            "id": uuid::Uuid::now_v7(),
            "kiosk_id": kiosk,
            "office_id": OFFICE,
            "seq": seq,
            "source": "handheld:pda-07",
            "method": "manual",
            "card": card,
            "customer_id": customer,
            "outcome": if customer.is_some() { "welcome" } else { "unknown" },
            "kind": customer.map(|_| "revisit"),
            "consultant_id": null,
            "stand_in": false,
            "device_time": "2026-11-23T02:00:00Z",
            "recorded_at": "2026-11-23T02:00:00.001Z",
            "office_day": day,
        }
    })
    .to_string()
}

/// POSTs a batch as kiosk `id` would; returns the hub's answer.
async fn push_as(hub_base: &str, id: &str, token: &str, lines: &[String]) -> Value {
    let body = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let gz = {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(body.as_bytes()).expect("gzip");
        e.finish().expect("gzip")
    };
    let response = kiosk_tests::http_client()
        .post(format!("{hub_base}/sync/v1/records"))
        .bearer_auth(token)
        .header("x-kiosk-id", id)
        .header("x-kiosk-protocol", "1")
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(gz)
        .send()
        .await
        .expect("push");
    assert_eq!(response.status(), 200, "push as {id}");
    response.json().await.expect("reply")
}

fn read_token(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .expect("token file")
        .trim()
        .to_owned()
}

async fn two_kiosks_and_a_handheld(backend: Backend) {
    let hub_setup = hub_dir(backend);
    let hub_dir = &hub_setup.dir;
    assert!(hub_dir.import(MEMBERS).status.success());
    let hub = hub_dir.start();
    let mut a = SyncedKiosk::new(hub_dir, "kiosk-a", &hub.base);
    let mut b = SyncedKiosk::new(hub_dir, "kiosk-b", &hub.base);
    let (ka, kb) = (a.dir.start(), b.dir.start());
    for k in [&ka, &kb] {
        wait_until("the roster snapshot", WAIT, || async {
            (sync_status(k).await["roster_cursor"].as_u64().is_some()).then_some(())
        })
        .await;
    }
    // The same member taps at both kiosks of the office.
    a.scan(["MEMBER-1".to_owned()]);
    b.scan(["MEMBER-1".to_owned()]);
    let (outcome_a, visit_a) = nth_outcome(&ka, 1).await;
    let (outcome_b, _) = nth_outcome(&kb, 1).await;
    assert_eq!(
        (outcome_a.as_str(), outcome_b.as_str()),
        ("welcome", "welcome")
    );
    let day = visit_a["office_day"]
        .as_str()
        .expect("office day")
        .to_owned();
    // And a consultant records the same customer on a handheld at a third reception
    // point (a kiosk with no reader, handhelds only).
    let c_dir = KioskDir::with_id(
        BIN,
        "kiosk-c",
        OFFICE,
        &sync_section(&hub.base, "hub.token", ""),
    );
    hub_dir.add_kiosk("kiosk-c", OFFICE, &c_dir.path().join("hub.token"));
    let out = c_dir.cli(&[
        "devices",
        "add",
        "pda-07",
        "--config",
        c_dir.config().to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let device_token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let kc = c_dir.start();
    wait_until("kiosk-c's roster", WAIT, || async {
        (sync_status(&kc).await["roster_cursor"].as_u64().is_some()).then_some(())
    })
    .await;
    let posted = kiosk_tests::http_client()
        .post(kc.url("/api/v1/visits"))
        .bearer_auth(&device_token)
        .json(&serde_json::json!({"id": uuid::Uuid::now_v7(), "customer_id": "C0001"}))
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), 201);
    let posted: Value = posted.json().await.expect("body");
    assert_eq!(posted["outcome"], "welcome", "{posted}");
    for k in [&ka, &kb, &kc] {
        wait_drained(k).await;
    }
    // Three records kept as evidence, one office visit counted for the day.
    let report = hub.day_report(OFFICE, &day).await;
    assert_eq!(report["records"], 3, "{report}");
    assert_eq!(report["office_visits"], 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_kiosks_and_a_handheld_keep_three_records_and_count_one_office_visit_sqlite() {
    two_kiosks_and_a_handheld(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_kiosks_and_a_handheld_keep_three_records_and_count_one_office_visit_postgres() {
    two_kiosks_and_a_handheld(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hub_processes_on_one_postgres_store_concurrent_copies_once() {
    let setup = hub_dir(Backend::Postgres);
    let first = setup.dir.start();
    // A second process on the same database, as behind a load balancer.
    let second_dir = HubDir::postgres(BIN, setup._db.as_ref().expect("database").url());
    let second = second_dir.start();
    let token_file = setup.dir.path().join("k.token");
    setup.dir.add_kiosk(KIOSK, OFFICE, &token_file);
    let token = read_token(&token_file);
    let mut seq = 0;
    let mut inserted = 0;
    for _ in 0..20 {
        let lines: Vec<String> = (0..100)
            .map(|_| {
                seq += 1;
                visit_line(KIOSK, seq, &format!("qr:LB-{seq}"), None, "2026-11-23")
            })
            .collect();
        // The same batch reaches both processes at once (a retry through another one).
        let (r1, r2) = tokio::join!(
            push_as(&first.base, KIOSK, &token, &lines),
            push_as(&second.base, KIOSK, &token, &lines)
        );
        for (i1, i2) in r1["items"]
            .as_array()
            .expect("items")
            .iter()
            .zip(r2["items"].as_array().expect("items"))
        {
            let pair = (i1["status"].as_str(), i2["status"].as_str());
            assert!(
                matches!(
                    pair,
                    (Some("inserted"), Some("duplicate")) | (Some("duplicate"), Some("inserted"))
                ),
                "each record is inserted by exactly one process: {pair:?}"
            );
            inserted += 1;
        }
        assert_eq!(r1["high_water"], seq);
        assert_eq!(r2["high_water"], seq);
    }
    assert_eq!(inserted, 2000);
    // The second folder's admin token replaced the first's (one per database).
    let records = second.all_records(KIOSK).await;
    assert_eq!(records.len(), 2000);
    let ids: BTreeSet<&str> = records.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_keeps_every_visit_until_it_is_fixed() {
    let setup = hub_dir(Backend::Sqlite);
    let hub = setup.dir.start();
    let mut k = SyncedKiosk::new(&setup.dir, KIOSK, &hub.base);
    let token_file = k.dir.path().join("hub.token");
    let good = read_token(&token_file);
    std::fs::write(
        &token_file,
        "kt_0000000000000000000000000000000000000000000000000000000000000000\n",
    )
    .expect("write token");
    let kiosk = k.dir.start();
    k.scan(payloads("NO-TOKEN", 0..25));
    let status = wait_until("the hub to refuse the token", WAIT, || async {
        let s = kiosk.get_json("/api/v1/status").await;
        (s["sync"]["auth_refused"] == true && s["sync"]["backlog"] == 25).then_some(s)
    })
    .await;
    assert_eq!(
        status["sync"]["push_failures"], 0,
        "a 401 never counts: {status}"
    );
    assert!(
        status["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .any(|p| p
                .as_str()
                .unwrap_or("")
                .contains("refused this kiosk's token")),
        "{status}"
    );
    assert!(hub.all_records(KIOSK).await.is_empty());
    // IT puts the right token in place; the kiosk reads it on its next attempt.
    std::fs::write(&token_file, format!("{good}\n")).expect("write token");
    wait_drained(&kiosk).await;
    let cards = hub_cards(&hub, KIOSK, 25).await;
    assert_exactly(&cards, &payloads("NO-TOKEN", 0..25));
    assert_eq!(sync_status(&kiosk).await["auth_refused"], false);
}
