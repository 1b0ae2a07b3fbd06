//! Card issuing end to end: `/api/v1/cards/...` on a running daemon with real staff and handheld tokens, and bindings through a real hub that accepts or rejects them.
//!
//! Cards are presented the way a handheld presents them (`POST /api/v1/visits`), which
//! takes a tap's path; no PC/SC reader is used here.

use std::time::Duration;

use kiosk_tests::hub::{HubDir, sync_section};
use kiosk_tests::kiosk::{KioskDir, Running};
use kiosk_tests::postgres::{PgDatabase, fresh_database};
use kiosk_tests::proxy::{FaultProxy, Mode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::devices::{add_device, add_staff_device};
use crate::sync::wait_until;
use crate::{BIN, ROSTER};

const WAIT: Duration = Duration::from_secs(30);
/// The notice version configured in the tests' kiosks.
const NOTICE: &str = "2026-11";
/// A card nobody has, as a handheld reads it.
const NEW_CARD: &str = "nfc:04C0FFEE000001";
/// C0001's active card in ROSTER.
const ZHANG_CARD: &str = "nfc:04A1B2C3D4E5F6";
/// C0002's active card in ROSTER.
const WANG_CARD: &str = "nfc:04112233445566";

/// A running kiosk with a staff device (the desk's console) and a handheld.
struct Desk {
    kiosk: Running,
    dir: KioskDir,
    staff: String,
    handheld: String,
}

fn reception(extra: &str) -> String {
    format!("[reception]\nprivacy_notice_version = \"{NOTICE}\"\n\n{extra}")
}

/// A kiosk with ROSTER imported (or none, when its roster comes from a hub) and `extra` config.
fn desk_in(dir: KioskDir, roster: bool) -> Desk {
    if roster {
        let out = dir.import(ROSTER);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let staff = add_staff_device(&dir, "desk");
    let handheld = add_device(&dir, "pda-1");
    let kiosk = dir.start();
    Desk {
        kiosk,
        dir,
        staff,
        handheld,
    }
}

fn desk() -> Desk {
    desk_in(KioskDir::new(BIN, &reception("")), true)
}

fn new_id() -> String {
    Uuid::now_v7().to_string()
}

/// A walk-in's `new_customer`.
fn walk_in(phone: &str) -> Value {
    json!({
        "name": "赵六", "surname": "赵", "title": "ms", "phone": phone,
        "source": "walk_in", "consent": true
    })
}

impl Desk {
    /// A request with `token` (none when `None`) and a raw body: status and JSON body.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (u16, Value) {
        let mut req = kiosk_tests::http_client().request(method, self.kiosk.url(path));
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        let body = resp.json().await.expect("a JSON body, errors included");
        (status, body)
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            path,
            Some(&self.staff),
            Some(body.to_string()),
        )
        .await
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self
            .send(reqwest::Method::GET, path, Some(&self.staff), None)
            .await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// A handheld's post of `card`: the visit's answer.
    async fn present(&self, card: &str) -> Value {
        let body = json!({"id": new_id(), "card": card}).to_string();
        let (status, answer) = self
            .send(
                reqwest::Method::POST,
                "/api/v1/visits",
                Some(&self.handheld),
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
        answer
    }

    async fn unbound(&self) -> Vec<Value> {
        list(self.get("/api/v1/cards/unbound").await, "cards")
    }

    async fn changes(&self) -> Vec<Value> {
        list(self.get("/api/v1/cards/changes").await, "changes")
    }

    async fn outbox_backlog(&self) -> u64 {
        self.kiosk.get_json("/api/v1/status").await["outbox_backlog"]
            .as_u64()
            .expect("outbox_backlog")
    }
}

fn list(mut body: Value, key: &str) -> Vec<Value> {
    match body[key].take() {
        Value::Array(items) => items,
        _ => panic!("no {key:?} list in {body}"),
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_need_a_staff_token() {
    let d = desk();
    let bind = json!({"id": new_id(), "card": NEW_CARD, "customer_id": "C0002"}).to_string();
    let revoke = json!({"id": new_id(), "card": WANG_CARD}).to_string();
    let calls = [
        (reqwest::Method::GET, "/api/v1/cards/unbound", None),
        (reqwest::Method::POST, "/api/v1/cards/bind", Some(bind)),
        (reqwest::Method::POST, "/api/v1/cards/revoke", Some(revoke)),
        (reqwest::Method::GET, "/api/v1/cards/changes", None),
    ];
    for (method, path, body) in calls {
        for token in [None, Some("kt_nope")] {
            let (status, answer) = d.send(method.clone(), path, token, body.clone()).await;
            assert_eq!(status, 401, "{method} {path} {token:?}: {answer}");
        }
        let (status, answer) = d
            .send(method.clone(), path, Some(&d.handheld), body.clone())
            .await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert!(message(&answer).contains("--staff"), "{answer}");
    }
    // Nothing was bound or revoked by the refused calls.
    assert!(d.changes().await.is_empty());
    let visit = d.present(WANG_CARD).await;
    assert_eq!(visit["outcome"], "welcome", "{visit}");
}

/// An unknown card posted by a handheld is listed as unbound; bound to a member, it
/// greets them on its next post and leaves the list. A retry is answered from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_card_is_bound_to_a_member_who_is_then_greeted() {
    let d = desk();
    let first = d.present(NEW_CARD).await;
    assert_eq!(first["outcome"], "unknown", "{first}");
    d.present(NEW_CARD).await;
    let unbound = d.unbound().await;
    assert_eq!(unbound.len(), 1, "{unbound:?}");
    assert_eq!(unbound[0]["card"], NEW_CARD);
    assert_eq!(unbound[0]["taps"], 2);
    assert_eq!(unbound[0]["source"], "handheld:pda-1");

    let id = new_id();
    let body = json!({"id": id, "card": "nfc:04c0ffee000001", "customer_id": "C0002"});
    let (status, made) = d.post("/api/v1/cards/bind", &body).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["id"], id.as_str());
    assert_eq!(made["card"], NEW_CARD);
    assert_eq!(made["customer_id"], "C0002");
    assert_eq!(made["consultant_id"], "E02");
    assert_eq!(made["status"], "pending");
    assert_eq!(made["seq"], 3);

    // The same request again: the stored answer; another body under the id: refused.
    let (status, again) = d.post("/api/v1/cards/bind", &body).await;
    assert_eq!((status, &again), (200, &made));
    let other = json!({"id": id, "card": NEW_CARD, "customer_id": "C0001"});
    let (status, refused) = d.post("/api/v1/cards/bind", &other).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(code(&refused), "id_used", "{refused}");
    // Two visits and one binding, whatever was retried.
    assert_eq!(d.outbox_backlog().await, 3);

    let visit = d.present(NEW_CARD).await;
    assert_eq!(visit["outcome"], "welcome", "{visit}");
    assert_eq!(visit["visit"]["customer_id"], "C0002", "{visit}");
    assert_eq!(visit["visit"]["name_zh"], "王女士", "{visit}");
    assert!(d.unbound().await.is_empty());

    let changes = d.changes().await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    let c = &changes[0];
    assert_eq!(
        (&c["op"], &c["card"], &c["by"], &c["status"], &c["reason"]),
        (
            &json!("bind"),
            &json!(NEW_CARD),
            &json!("desk"),
            &json!("pending"),
            &Value::Null
        )
    );
}

/// A walk-in registered at the desk gets the rotation's head as consultant, who moves to
/// the tail with the visitor; the card greets them by surname and title.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_walk_in_gets_the_head_of_the_rotation() {
    let d = desk();
    for consultant in ["E01", "E02"] {
        let (status, body) = d
            .post(
                "/api/v1/rotation/check-in",
                &json!({"consultant_id": consultant}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    d.present(NEW_CARD).await;
    let mut new_customer = walk_in("+86 138-0013-8000");
    new_customer["notice_version"] = json!(NOTICE);
    let body = json!({"id": new_id(), "card": NEW_CARD, "new_customer": new_customer});
    let (status, made) = d.post("/api/v1/cards/bind", &body).await;
    assert_eq!(status, 201, "{made}");
    let customer = made["customer_id"]
        .as_str()
        .expect("customer id")
        .to_owned();
    assert!(customer.starts_with("w-"), "{made}");
    assert_eq!(made["consultant_id"], "E01", "{made}");
    let rotation = d.get("/api/v1/rotation").await;
    let seats: Vec<(String, bool)> = list(rotation, "queue")
        .iter()
        .map(|s| {
            (
                s["consultant_id"].as_str().expect("id").to_owned(),
                s["busy"].as_bool().expect("busy"),
            )
        })
        .collect();
    assert_eq!(seats, [("E02".into(), false), ("E01".into(), true)]);

    let visit = d.present(NEW_CARD).await;
    assert_eq!(visit["outcome"], "welcome", "{visit}");
    assert_eq!(visit["visit"]["customer_id"], customer.as_str());
    assert_eq!(visit["visit"]["name_zh"], "赵女士");
    assert_eq!(visit["visit"]["consultant_id"], "E01");
    // The kiosk's log never holds the walk-in's full name or phone.
    let log = std::fs::read_to_string(d.dir.path().join("kiosk.log")).unwrap_or_default();
    assert!(log.contains("card change recorded"), "{log}");
    assert!(
        !log.contains("赵六") && !log.contains("13800138000"),
        "{log}"
    );
}

/// Each bad binding gets its status and a message; nothing is stored by any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bindings_are_refused_and_store_nothing() {
    let d = desk();
    let with = |patch: Value| {
        let mut body =
            json!({"id": new_id(), "card": NEW_CARD, "new_customer": walk_in("13800138000")});
        if let (Some(nc), Some(patch)) = (body["new_customer"].as_object_mut(), patch.as_object()) {
            for (k, v) in patch {
                nc.insert(k.clone(), v.clone());
            }
        }
        body.to_string()
    };
    let cases: Vec<(String, u16, &str, &str)> = vec![
        ("{\"id\":".into(), 400, "bad_json", "not JSON"),
        (
            json!({"id": new_id(), "card": ZHANG_CARD, "customer_id": "C0002"}).to_string(),
            409,
            "card_taken",
            "customer C0001",
        ),
        (
            json!({"id": new_id(), "card": NEW_CARD, "customer_id": "C0099"}).to_string(),
            422,
            "unknown_customer",
            "C0099",
        ),
        (
            json!({"id": new_id(), "card": NEW_CARD, "customer_id": "C0002", "tier": "gold"})
                .to_string(),
            422,
            "invalid",
            "unknown field `tier`",
        ),
        (
            json!({"id": new_id(), "card": "nfc:085A6B7C", "customer_id": "C0002"}).to_string(),
            422,
            "not_a_membership_card",
            "random UID",
        ),
        (with(json!({"phone": "call me"})), 422, "invalid", "phone"),
        (
            with(json!({"consent": false})),
            422,
            "consent_required",
            "privacy notice",
        ),
        (
            with(json!({"notice_version": "2020-01"})),
            422,
            "notice_outdated",
            "\"2026-11\"",
        ),
        (
            with(json!({"surname": "赵六"})),
            422,
            "invalid",
            "family name",
        ),
        (
            json!({"id": new_id(), "card": NEW_CARD, "customer_id": "C0002", "x": "长".repeat(6000)})
                .to_string(),
            413,
            "too_large",
            "16384 bytes",
        ),
    ];
    for (body, status, want_code, says) in &cases {
        let (got, answer) = d
            .send(
                reqwest::Method::POST,
                "/api/v1/cards/bind",
                Some(&d.staff),
                Some(body.clone()),
            )
            .await;
        assert_eq!(got, *status, "{body:.200}: {answer}");
        assert_eq!(code(&answer), *want_code, "{answer}");
        assert!(message(&answer).contains(says), "{answer}");
    }
    // card_taken names the other customer's id, never their name.
    let (_, taken) = d
        .post(
            "/api/v1/cards/bind",
            &json!({"id": new_id(), "card": ZHANG_CARD, "customer_id": "C0002"}),
        )
        .await;
    assert!(!message(&taken).contains('张'), "{taken}");
    assert!(d.changes().await.is_empty());
    assert_eq!(d.outbox_backlog().await, 0);
    let visit = d.present(ZHANG_CARD).await;
    assert_eq!(visit["visit"]["customer_id"], "C0001", "{visit}");
}

/// A revoked card is refused at its next post with `card_revoked` and the reason for
/// staff; revoking is idempotent by id, and an unknown or already revoked card says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_card_is_denied_at_its_next_post() {
    let d = desk();
    let body = json!({"id": new_id(), "card": WANG_CARD, "reason": "lost on 11-20"});
    let (status, made) = d.post("/api/v1/cards/revoke", &body).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(
        (&made["customer_id"], &made["status"]),
        (&json!("C0002"), &json!("pending"))
    );
    let (status, again) = d.post("/api/v1/cards/revoke", &body).await;
    assert_eq!((status, &again), (200, &made));

    let visit = d.present(WANG_CARD).await;
    assert_eq!(visit["outcome"], "denied", "{visit}");
    assert_eq!(visit["visit"]["reason"], "card_revoked", "{visit}");
    assert_eq!(visit["visit"]["reason_detail"], "lost on 11-20", "{visit}");

    let (status, answer) = d
        .post(
            "/api/v1/cards/revoke",
            &json!({"id": new_id(), "card": WANG_CARD}),
        )
        .await;
    assert_eq!(
        (status, code(&answer)),
        (409, "already_revoked"),
        "{answer}"
    );
    let (status, answer) = d
        .post(
            "/api/v1/cards/revoke",
            &json!({"id": new_id(), "card": NEW_CARD}),
        )
        .await;
    assert_eq!((status, code(&answer)), (404, "unknown_card"), "{answer}");
    let changes = d.changes().await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["op"], "revoke");
    assert_eq!(changes[0]["note"], "lost on 11-20");

    // The revoked card may be issued again, to a walk-in.
    let (status, made) = d
        .post(
            "/api/v1/cards/bind",
            &json!({"id": new_id(), "card": WANG_CARD, "new_customer": walk_in("13900139000")}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(d.present(WANG_CARD).await["outcome"], "welcome");
}

// ---- with a hub

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The hub's roster: ROSTER plus a phone for C0001.
const HUB_ROSTER: &str = "\
card,customer_id,surname,title,tier,card_status,consultant_id,consultant_name,note,name,phone
nfc:04A1B2C3D4E5F6,C0001,张,mr,gold,active,E01,李娜,,张三,13800138000
nfc:04112233445566,C0002,王,ms,silver,active,E02,陈晨,,王五,
";

/// A hub with HUB_ROSTER, and a desk kiosk syncing with it that has pulled the roster.
struct Synced {
    desk: Desk,
    hub: kiosk_tests::hub::RunningHub,
    hub_dir: HubDir,
    /// Between kiosk and hub, when asked for.
    proxy: Option<FaultProxy>,
    _db: Option<PgDatabase>,
}

async fn synced(backend: Backend) -> Synced {
    synced_with(backend, false).await
}

/// [`synced`], through a fault proxy when `proxied`.
async fn synced_with(backend: Backend, proxied: bool) -> Synced {
    let (hub_dir, db) = match backend {
        Backend::Sqlite => (HubDir::sqlite(BIN), None),
        Backend::Postgres => {
            let db = fresh_database();
            (HubDir::postgres(BIN, db.url()), Some(db))
        }
    };
    let out = hub_dir.import(HUB_ROSTER);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hub = hub_dir.start();
    let proxy = proxied.then(|| FaultProxy::start(hub.addr()));
    let url = proxy
        .as_ref()
        .map_or_else(|| hub.base.clone(), FaultProxy::url);
    let dir = KioskDir::new(BIN, &reception(&sync_section(&url, "hub.token", "")));
    hub_dir.add_kiosk("test-kiosk", "test-office", &dir.path().join("hub.token"));
    let desk = desk_in(dir, false);
    wait_until("the roster to arrive from the hub", WAIT, || async {
        let status = desk.kiosk.get_json("/api/v1/status").await;
        (status["roster_cards"] == 2).then_some(())
    })
    .await;
    Synced {
        desk,
        hub,
        hub_dir,
        proxy,
        _db: db,
    }
}

/// The change `id` once the hub's verdict is in.
async fn verdict(desk: &Desk, id: &str) -> Value {
    wait_until("the hub's verdict on the card change", WAIT, || async {
        desk.changes()
            .await
            .into_iter()
            .find(|c| c["id"] == id && c["status"] != "pending")
    })
    .await
}

/// A walk-in whose phone the hub already holds for another customer: the hub rejects
/// the binding, the console shows it rejected with the reason, the quarantine lists it,
/// and the card is unbound again here.
async fn a_binding_whose_phone_the_hub_holds_is_rejected_and_undone(backend: Backend) {
    let s = synced(backend).await;
    let d = &s.desk;
    d.present(NEW_CARD).await;
    let id = new_id();
    let (status, made) = d
        .post(
            "/api/v1/cards/bind",
            &json!({"id": id, "card": NEW_CARD, "new_customer": walk_in("138 0013 8000")}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    // (Whether the card greets before the hub's answer comes back is a race: the push
    // starts at once. The unit tests and the tests above show it does.)
    let change = verdict(d, &id).await;
    assert_eq!(change["status"], "rejected", "{change}");
    let reason = change["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("phone_taken"), "{change}");
    let status = d.kiosk.get_json("/api/v1/status").await;
    let quarantined = list(status["sync"]["quarantine"].clone(), "latest");
    assert!(
        quarantined
            .iter()
            .any(|q| q["record_id"] == id.as_str() && q["kind"] == "card_binding"),
        "{status}"
    );
    // Undone: the card is unknown again, and listed for binding.
    assert_eq!(d.present(NEW_CARD).await["outcome"], "unknown");
    assert!(d.unbound().await.iter().any(|c| c["card"] == NEW_CARD));
}

/// A clean binding is accepted, and the hub's roster has the card.
async fn a_clean_binding_is_accepted_and_the_hub_has_the_card(backend: Backend) {
    let s = synced(backend).await;
    let d = &s.desk;
    let id = new_id();
    let (status, made) = d
        .post(
            "/api/v1/cards/bind",
            &json!({"id": id, "card": NEW_CARD, "new_customer": walk_in("13900139000")}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let change = verdict(d, &id).await;
    assert_eq!(change["status"], "accepted", "{change}");
    let resp = s
        .hub
        .admin(reqwest::Method::GET, &format!("/admin/v1/cards/{NEW_CARD}"))
        .send()
        .await
        .expect("GET card");
    let status = resp.status().as_u16();
    let card: Value = resp.json().await.expect("JSON");
    assert_eq!(status, 200, "{card}");
    assert_eq!(card["customer_id"], made["customer_id"], "{card}");
    assert_eq!(d.present(NEW_CARD).await["outcome"], "welcome");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_hub_rejects_a_binding_whose_phone_it_holds() {
    a_binding_whose_phone_the_hub_holds_is_rejected_and_undone(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hub_rejects_a_binding_whose_phone_it_holds() {
    a_binding_whose_phone_the_hub_holds_is_rejected_and_undone(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_hub_accepts_a_clean_binding() {
    a_clean_binding_is_accepted_and_the_hub_has_the_card(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hub_accepts_a_clean_binding() {
    a_clean_binding_is_accepted_and_the_hub_has_the_card(Backend::Postgres).await;
}

// ---- personal data on the kiosk

/// Every value of every table of the kiosk database in `data` (blobs too, where they
/// are text) that holds one of `needles`, as `table: value`.
fn db_traces(data: &std::path::Path, needles: &[&str]) -> Vec<String> {
    let conn =
        rusqlite::Connection::open(data.join("kiosk.sqlite")).expect("open the kiosk's database");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("tables");
    let mut found = Vec::new();
    for table in tables {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{table}\""))
            .expect("select");
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).expect("rows");
        while let Some(row) = rows.next().expect("row") {
            for i in 0..columns {
                let text = match row.get_ref(i).expect("value") {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        String::from_utf8_lossy(t).into_owned()
                    }
                    _ => continue,
                };
                if needles.iter().any(|n| text.contains(n)) {
                    found.push(format!("{table}: {text}"));
                }
            }
        }
    }
    found
}

/// The files in `dir` (not below) whose bytes hold one of `needles`: the database and
/// its WAL as someone holding the SD card reads them, freed pages included, or a log.
fn file_traces(dir: &std::path::Path, needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        for needle in needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(format!("{} holds {needle}", path.display()));
            }
        }
    }
    found
}

/// The walk-in `walk_in` registers: their full name and the phone as normalized.
const NAME: &str = "赵六";

/// Once the hub holds a walk-in's binding, the kiosk keeps neither their full name nor
/// their phone: not in any table, not in the bytes of its database files, not in its
/// (debug) log. A retry of the bind is still answered 200 as the same request, and
/// another body under its id is still a 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_hub_an_accepted_walk_in_leaves_no_name_or_phone_on_the_kiosk() {
    let mut s = synced(Backend::Sqlite).await;
    let d = &s.desk;
    let phone = "13900139000";
    let id = new_id();
    let body = json!({"id": id, "card": NEW_CARD, "new_customer": walk_in("139 0013 9000")});
    let (status, made) = d.post("/api/v1/cards/bind", &body).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(verdict(d, &id).await["status"], "accepted");
    let at_hub = s.hub.all_records("test-kiosk").await;
    assert!(
        at_hub.iter().any(|r| r.to_string().contains(phone)),
        "the hub has the phone: {at_hub:?}"
    );

    let (status, again) = d.post("/api/v1/cards/bind", &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (
            &again["id"],
            &again["customer_id"],
            &again["seq"],
            &again["status"]
        ),
        (
            &made["id"],
            &made["customer_id"],
            &made["seq"],
            &json!("accepted")
        )
    );
    let other = json!({"id": id, "card": NEW_CARD, "new_customer": walk_in("139 0013 9001")});
    let (status, refused) = d.post("/api/v1/cards/bind", &other).await;
    assert_eq!((status, code(&refused)), (422, "id_used"), "{refused}");
    assert_eq!(d.present(NEW_CARD).await["visit"]["name_zh"], "赵女士");

    let data = d.dir.path().join("data");
    assert_eq!(db_traces(&data, &[NAME, phone]), [] as [String; 0]);
    s.desk.kiosk.stop();
    assert_eq!(db_traces(&data, &[NAME, phone]), [] as [String; 0]);
    assert_eq!(file_traces(&data, &[NAME, phone]), [] as [String; 0]);
    let log = s.desk.dir.path().join("kiosk.log");
    assert!(
        std::fs::metadata(&log).is_ok_and(|m| m.len() > 0),
        "a log was written"
    );
    assert_eq!(
        file_traces(s.desk.dir.path(), &[NAME, phone]),
        [] as [String; 0]
    );
}

/// A walk-in the hub rejects keeps their name and phone on the kiosk (quarantine and
/// outbox) while `reception.rejected_walk_in_retention` runs, for staff to see what to
/// fix; a kiosk started after it ran out erases them before serving. (The retention is
/// set to 0s for the restart, so nothing waits.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_hub_a_rejected_walk_in_is_erased_after_the_retention() {
    let mut s = synced(Backend::Sqlite).await;
    let phone = "13800138000";
    let id = new_id();
    let (status, made) = s
        .desk
        .post(
            "/api/v1/cards/bind",
            &json!({"id": id, "card": NEW_CARD, "new_customer": walk_in("138 0013 8000")}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(verdict(&s.desk, &id).await["status"], "rejected");
    let data = s.desk.dir.path().join("data");
    let kept = db_traces(&data, &[NAME, phone]);
    assert_eq!(
        kept.len(),
        2,
        "the quarantine's copy and the outbox's: {kept:?}"
    );
    assert!(
        kept.iter().any(|t| t.starts_with("quarantine: ")),
        "{kept:?}"
    );

    s.desk.kiosk.stop();
    let config = s.desk.dir.config();
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        "[reception]\n",
        "[reception]\nrejected_walk_in_retention = \"0s\"\n",
    );
    std::fs::write(&config, text).expect("write config");
    s.desk.kiosk = s.desk.dir.start();
    assert_eq!(db_traces(&data, &[NAME, phone]), [] as [String; 0]);
    // Still rejected, with the hub's reason, and the same request when retried.
    let change = verdict(&s.desk, &id).await;
    assert_eq!(change["status"], "rejected", "{change}");
    assert!(
        change["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("phone_taken"),
        "{change}"
    );
    let (status, again) = s
        .desk
        .post(
            "/api/v1/cards/bind",
            &json!({"id": id, "card": NEW_CARD, "new_customer": walk_in("138 0013 8000")}),
        )
        .await;
    assert_eq!((status, &again["seq"]), (200, &made["seq"]), "{again}");
    s.desk.kiosk.stop();
    assert_eq!(file_traces(&data, &[NAME, phone]), [] as [String; 0]);
}

/// A card bound at the desk while the hub cannot take pushes (its roster pulls still
/// work) goes on greeting its customer through a roster snapshot, which the hub made
/// without it; once the hub takes the binding, the card and customer are there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_hub_a_snapshot_keeps_a_binding_the_hub_has_not_answered() {
    let mut s = synced_with(Backend::Sqlite, true).await;
    let proxy = s.proxy.take().expect("a proxy");
    proxy.set_mode(Mode::RefusePath("/sync/v1/records"));
    let d = &s.desk;
    let member = new_id();
    let (status, made) = d
        .post(
            "/api/v1/cards/bind",
            &json!({"id": member, "card": NEW_CARD, "customer_id": "C0002"}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let walk_in_card = "nfc:04C0FFEE000002";
    let walk_in_id = new_id();
    let (status, made) = d
        .post(
            "/api/v1/cards/bind",
            &json!({"id": walk_in_id, "card": walk_in_card, "new_customer": walk_in("13900139000")}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let customer = made["customer_id"]
        .as_str()
        .expect("the walk-in's id")
        .to_owned();

    // The kiosk is away while the roster changes and the hub forgets its log: back,
    // its cursor is too old and it takes a snapshot.
    away_then_snapshot(&mut s, "C0003").await;
    let d = &s.desk;
    let changes = d.changes().await;
    assert!(
        changes.iter().all(|c| c["status"] == "pending"),
        "the hub has not answered yet: {changes:?}"
    );
    let visit = d.present(NEW_CARD).await;
    assert_eq!(
        (&visit["outcome"], &visit["visit"]["customer_id"]),
        (&json!("welcome"), &json!("C0002")),
        "{visit}"
    );
    let visit = d.present(walk_in_card).await;
    assert_eq!(
        (
            &visit["outcome"],
            &visit["visit"]["customer_id"],
            &visit["visit"]["name_zh"]
        ),
        (&json!("welcome"), &json!(customer), &json!("赵女士")),
        "{visit}"
    );

    proxy.set_mode(Mode::Pass);
    for id in [&member, &walk_in_id] {
        assert_eq!(verdict(d, id).await["status"], "accepted");
    }
    // Once more from a snapshot, now the hub's own: each card and customer once.
    away_then_snapshot(&mut s, "C0004").await;
    let d = &s.desk;
    let status = d.kiosk.get_json("/api/v1/status").await;
    assert_eq!(status["roster_cards"], 4, "{status}");
    let bindings: Vec<Value> = s
        .hub
        .all_records("test-kiosk")
        .await
        .into_iter()
        .filter(|r| r["kind"] == "card_binding")
        .collect();
    assert_eq!(bindings.len(), 2, "{bindings:?}");
    assert_eq!(d.changes().await.len(), 2);
    assert_eq!(d.present(NEW_CARD).await["visit"]["customer_id"], "C0002");
    assert_eq!(
        d.present(walk_in_card).await["visit"]["customer_id"],
        customer.as_str()
    );
}

/// Stops the kiosk, adds customer `id` at the hub and prunes the hub's roster log, then
/// starts the kiosk again and waits for the snapshot its too old cursor leads to.
async fn away_then_snapshot(s: &mut Synced, id: &str) {
    s.desk.kiosk.stop();
    s.hub
        .put_customer(json!({"id": id, "surname": "李", "title": "mr", "tier": "normal"}))
        .await;
    s.hub_dir.prune_all();
    s.desk.kiosk = s.desk.dir.start();
    let kiosk = &s.desk.kiosk;
    wait_until("a snapshot after the pruned log", WAIT, || async {
        let status = kiosk.get_json("/api/v1/status").await;
        (status["sync"]["snapshots_taken"].as_u64() >= Some(1)).then_some(())
    })
    .await;
}
