//! The README's "A reception day", end to end through a real hub and a real kiosk: consultants check in, a returning member, a walk-in with a new card, a broker's customer, and a welcome nobody acknowledges escalating.

use std::time::Duration;

use kiosk_tests::hub::{HubDir, RunningHub, sync_section};
use kiosk_tests::kiosk::{KioskDir, Running};
use kiosk_tests::sse::SseClient;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::BIN;
use crate::devices::add_staff_device;
use crate::reception::{check_in, post};
use crate::sync::{sync_status, wait_drained, wait_until};

const WAIT: Duration = Duration::from_secs(30);
/// The office roster of the README's walkthrough, imported at the hub.
const ROSTER: &str = include_str!("../../examples/roster.csv");
const ZHANG_CARD: &str = "nfc:04A1B2C3D4E5F6";
const WANG_CARD: &str = "nfc:04112233445566";
const BLANK_CARD: &str = "nfc:04C0FFEE000001";

fn config(hub: &RunningHub, escalate_after: &str) -> String {
    format!(
        "[reception]\nmanager = \"E09\"\nescalate_after = \"{escalate_after}\"\n\n{}",
        sync_section(&hub.base, "hub.token", "")
    )
}

/// A handheld's (here the desk's) post of `card`: the answer, which must be a 201.
async fn present(kiosk: &Running, token: &str, card: &str) -> Value {
    let (status, body) = post(kiosk, token, json!({"card": card})).await;
    assert_eq!(status, 201, "{card}: {body}");
    body
}

async fn call(kiosk: &Running, token: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let req = match body {
        Some(b) => kiosk_tests::http_client().post(kiosk.url(path)).json(&b),
        None => kiosk_tests::http_client().get(kiosk.url(path)),
    };
    let resp = req.bearer_auth(token).send().await.expect(path);
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

/// The alert stream of `consultant`, read with the desk's token.
async fn alerts(kiosk: &Running, token: &str, consultant: &str) -> SseClient {
    let url = kiosk.url(&format!("/api/v1/consultants/{consultant}/events"));
    SseClient::connect_bearer(&url, token).await
}

/// Waits for `consultant`'s alert with `reason` about `visit`; returns it.
async fn alert_for(events: &mut SseClient, reason: &str, visit: &Value) -> Value {
    let visit_id = visit["visit"]["id"].clone();
    let reason = reason.to_owned();
    events
        .wait_for("alert", WAIT, move |a| {
            a["reason"] == reason.as_str() && a["visit_id"] == visit_id
        })
        .await
        .data
}

async fn ack(kiosk: &Running, token: &str, alert: &Value) {
    let id = alert["id"].as_str().expect("alert id");
    let (status, body) = call(
        kiosk,
        token,
        &format!("/api/v1/alerts/{id}/ack"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Waits until the kiosk has pulled every roster change the hub holds.
async fn wait_roster(kiosk: &Running, hub: &RunningHub, token_file: &std::path::Path) {
    let token = std::fs::read_to_string(token_file).expect("kiosk token");
    let head: Value = kiosk_tests::http_client()
        .get(hub.url("/sync/v1/roster?since=0&limit=10000"))
        .bearer_auth(token.trim())
        .header("x-kiosk-id", "test-kiosk")
        .header("x-kiosk-protocol", "1")
        .send()
        .await
        .expect("GET roster")
        .json()
        .await
        .expect("JSON");
    assert_eq!(head["more"], false, "{head}");
    let head = head["next"].as_u64().expect("next");
    wait_until("the kiosk to pull the hub's roster", WAIT, || async {
        let at = sync_status(kiosk).await["roster_cursor"].as_u64();
        (at >= Some(head)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reception_day() {
    let hub_dir = HubDir::sqlite(BIN);
    let out = hub_dir.import(ROSTER);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hub = hub_dir.start();
    let resp = hub
        .admin(reqwest::Method::PUT, "/admin/v1/consultants/E09")
        .json(&json!({"name": "周经理"}))
        .send()
        .await
        .expect("PUT consultant");
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    // Phase one: alerts escalate only after an hour, so the consultants' prompt
    // acknowledgements are not a race.
    let dir = KioskDir::new(BIN, &config(&hub, "1h"));
    let token_file = dir.path().join("hub.token");
    hub_dir.add_kiosk("test-kiosk", "test-office", &token_file);
    let desk = add_staff_device(&dir, "desk");
    let mut kiosk = dir.start();
    wait_roster(&kiosk, &hub, &token_file).await;
    let mut e01 = alerts(&kiosk, &desk, "E01").await;
    let mut e02 = alerts(&kiosk, &desk, "E02").await;
    let mut e09 = alerts(&kiosk, &desk, "E09").await;

    // 1. Consultants check in.
    check_in(&kiosk, &desk, "E01").await;
    assert_eq!(check_in(&kiosk, &desk, "E02").await, ["E01", "E02"]);

    // 2. A returning member: 张 (gold) is received by his owner, E01; the manager hears.
    let zhang = present(&kiosk, &desk, ZHANG_CARD).await;
    assert_eq!(zhang["outcome"], "welcome", "{zhang}");
    assert_eq!(zhang["visit"]["consultant_id"], "E01", "{zhang}");
    let welcome = alert_for(&mut e01, "welcome", &zhang).await;
    assert_eq!(welcome["customer"], "张先生");
    ack(&kiosk, &desk, &welcome).await;
    alert_for(&mut e09, "manager", &zhang).await;

    // 3. A walk-in with a blank card: unbound, bound with consent, received by E02.
    let blank = present(&kiosk, &desk, BLANK_CARD).await;
    assert_eq!(blank["outcome"], "unknown", "{blank}");
    let (_, unbound) = call(&kiosk, &desk, "/api/v1/cards/unbound", None).await;
    assert_eq!(unbound["cards"][0]["card"], BLANK_CARD, "{unbound}");
    let bind_id = Uuid::now_v7().to_string();
    let (status, bound) = call(
        &kiosk,
        &desk,
        "/api/v1/cards/bind",
        Some(json!({"id": bind_id, "card": BLANK_CARD, "new_customer": {
            "name": "赵六", "surname": "赵", "title": "ms", "phone": "138 0013 8000",
            "source": "walk_in", "consent": true}})),
    )
    .await;
    assert_eq!(status, 201, "{bound}");
    assert_eq!(bound["consultant_id"], "E02", "{bound}");
    let zhao = present(&kiosk, &desk, BLANK_CARD).await;
    assert_eq!(zhao["outcome"], "welcome", "{zhao}");
    assert_eq!(zhao["visit"]["name_zh"], "赵女士", "{zhao}");
    assert_eq!(zhao["visit"]["customer_id"], bound["customer_id"], "{zhao}");
    ack(&kiosk, &desk, &alert_for(&mut e02, "welcome", &zhao).await).await;
    wait_until("the hub to accept the binding", WAIT, || async {
        let (_, changes) = call(&kiosk, &desk, "/api/v1/cards/changes", None).await;
        changes["changes"]
            .as_array()?
            .iter()
            .find(|c| c["id"] == bind_id.as_str() && c["status"] == "accepted")
            .cloned()
    })
    .await;

    // 4. A broker's customer: B7 registered Mr. Smith (C0004) yesterday, at the hub.
    for (path, body) in [
        ("/admin/v1/brokers/B7", json!({"name": "安居客 王经理"})),
        (
            "/admin/v1/registrations/C0004",
            json!({"broker_id": "B7", "registered_at": jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::from_hours(24)).expect("yesterday").to_string()}),
        ),
    ] {
        let resp = hub
            .admin(reqwest::Method::PUT, path)
            .json(&body)
            .send()
            .await
            .expect(path);
        assert!(
            resp.status().is_success(),
            "{path}: {:?}",
            resp.text().await
        );
    }
    wait_roster(&kiosk, &hub, &token_file).await;
    let smith = present(&kiosk, &desk, "qr:broker:B7:C0004").await;
    assert_eq!(smith["outcome"], "broker_confirmed", "{smith}");
    assert_eq!(smith["visit"]["broker_id"], "B7", "{smith}");
    assert_eq!(smith["visit"]["kind"], "first", "{smith}");
    // E01 and E02 are with their visitors: nobody receives him, the manager is told.
    assert_eq!(smith["visit"]["consultant_id"], Value::Null, "{smith}");
    alert_for(&mut e09, "unassigned", &smith).await;
    let other = present(&kiosk, &desk, "qr:broker:B8:C0004").await;
    assert_eq!(other["outcome"], "denied", "{other}");
    assert_eq!(other["visit"]["reason"], "other_broker", "{other}");

    // 5. Both consultants are free again; the kiosk now escalates after a second.
    for e in ["E01", "E02"] {
        let (status, body) = call(
            &kiosk,
            &desk,
            "/api/v1/rotation/free",
            Some(json!({"consultant_id": e})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    drop((e01, e02, e09));
    kiosk.stop();
    let text = std::fs::read_to_string(dir.config()).expect("config");
    std::fs::write(
        dir.config(),
        text.replace("escalate_after = \"1h\"", "escalate_after = \"1s\""),
    )
    .expect("config");
    let kiosk = dir.start();
    let mut e01 = alerts(&kiosk, &desk, "E01").await;
    let mut e09 = alerts(&kiosk, &desk, "E09").await;
    // 王 (C0002) belongs to E02, who receives her and does not answer.
    let wang = present(&kiosk, &desk, WANG_CARD).await;
    assert_eq!(wang["visit"]["consultant_id"], "E02", "{wang}");
    for events in [&mut e01, &mut e09] {
        let escalation = alert_for(events, "escalation", &wang).await;
        assert_eq!(escalation["escalated_from"]["id"], "E02", "{escalation}");
        assert_eq!(escalation["customer"], "王女士", "{escalation}");
    }
    let (_, waiting) = call(&kiosk, &desk, "/api/v1/alerts?state=unacked", None).await;
    let unanswered = waiting["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .find(|a| a["reason"] == "welcome" && a["visit_id"] == wang["visit"]["id"])
        .cloned()
        .unwrap_or_else(|| panic!("E02's welcome is not listed as waiting: {waiting}"));
    assert_ne!(unanswered["escalated_at"], Value::Null, "{unanswered}");

    // The day at the hub: every record once; one office visit per customer (张, 赵, Smith, 王).
    wait_drained(&kiosk).await;
    let day = zhang["visit"]["office_day"].as_str().expect("office day");
    let report = hub.day_report("test-office", day).await;
    assert_eq!(report["office_visits"], 4, "{report}");
}
