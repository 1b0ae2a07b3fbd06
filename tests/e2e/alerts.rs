//! Alerts to consultants' handhelds end to end: a welcome posted by a handheld reaches the consultant's stream `/api/v1/consultants/{id}/events`, masked; acknowledgements; the replay of unacknowledged alerts on connect.

use std::time::Duration;

use kiosk_tests::kiosk::{KioskDir, Running};
use kiosk_tests::sse::SseClient;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::devices::add_device;
use crate::rotation::add_bound_device;
use crate::{BIN, ROSTER};

const WAIT: Duration = Duration::from_secs(20);
/// How long "no alert" is watched for.
const QUIET: Duration = Duration::from_millis(1500);

/// A handheld's post of customer `customer`: status and body.
async fn post_customer(kiosk: &Running, token: &str, customer: &str) -> (u16, Value) {
    let body = json!({"id": Uuid::now_v7(), "customer_id": customer});
    let resp = kiosk_tests::http_client()
        .post(kiosk.url("/api/v1/visits"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST /api/v1/visits");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

async fn ack(kiosk: &Running, token: Option<&str>, id: &str) -> (u16, Value) {
    let mut req = kiosk_tests::http_client().post(kiosk.url(&format!("/api/v1/alerts/{id}/ack")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("POST /api/v1/alerts/{id}/ack");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

/// The status of opening `consultant`'s stream with `token`.
async fn stream_status(kiosk: &Running, token: Option<&str>, consultant: &str) -> u16 {
    let mut req = kiosk_tests::http_client()
        .get(kiosk.url(&format!("/api/v1/consultants/{consultant}/events")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("GET events").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_alerts_the_consultants_handheld_masked_once_and_until_acknowledged() {
    let dir = KioskDir::new(BIN, "");
    let out = dir.import(ROSTER);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let li = add_bound_device(&dir, "pda-li", "E01");
    let li_spare = add_bound_device(&dir, "pda-li-2", "E01");
    let chen = add_bound_device(&dir, "pda-chen", "E02");
    let desk = add_device(&dir, "desk");
    let kiosk = dir.start();
    let e01 = kiosk.url("/api/v1/consultants/E01/events");

    // Another consultant's device may not listen; no token, no stream.
    assert_eq!(stream_status(&kiosk, Some(&chen), "E01").await, 403);
    assert_eq!(stream_status(&kiosk, None, "E01").await, 401);

    let mut li_events = SseClient::connect_bearer(&e01, &li).await;
    // C0001 (张, gold) belongs to E01.
    let (status, posted) = post_customer(&kiosk, &desk, "C0001").await;
    assert_eq!(status, 201, "{posted}");
    assert_eq!(posted["outcome"], "welcome");
    let visit_id = posted["visit"]["id"].as_str().expect("visit id").to_owned();

    let alert = li_events
        .wait_for("alert", WAIT, |d| d["visit_id"] == visit_id.as_str())
        .await;
    let a = &alert.data;
    assert_eq!(a["consultant_id"], "E01");
    assert_eq!(a["customer"], "张先生");
    assert_eq!(a["tier"], "gold");
    assert_eq!(a["source"], "handheld:desk");
    assert!(a["kind"] == "first" || a["kind"] == "revisit", "{a}");
    let mut keys: Vec<&str> = a
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "at",
            "consultant_id",
            "customer",
            "id",
            "kind",
            "source",
            "tier",
            "visit_id"
        ],
        "masked: no phone, no full name, no customer id"
    );
    assert!(!alert.raw.contains("C0001") && !alert.raw.contains("phone"));
    let alert_id = a["id"].as_str().expect("alert id").to_owned();

    // The same customer again today: a repeat greeting, no second alert.
    let (status, again) = post_customer(&kiosk, &desk, "C0001").await;
    assert_eq!((status, &again["repeat"]), (201, &json!(true)), "{again}");
    assert!(
        li_events.next(QUIET).await.is_none(),
        "a repeat made an alert"
    );

    // A handheld that connects after the welcome still gets the unacknowledged alert.
    let mut late = SseClient::connect_bearer(&e01, &li_spare).await;
    let replayed = late.wait_for("alert", WAIT, |_| true).await;
    assert_eq!(replayed.data, alert.data);

    // Acknowledgements: only E01's devices (or a desk's), once or again, known ids only.
    let (status, body) = ack(&kiosk, Some(&chen), &alert_id).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(ack(&kiosk, None, &alert_id).await.0, 401);
    let (status, first) = ack(&kiosk, Some(&li), &alert_id).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["id"], alert_id.as_str());
    assert!(first["acked_at"].is_string(), "{first}");
    let (status, second) = ack(&kiosk, Some(&li_spare), &alert_id).await;
    assert_eq!((status, &second), (200, &first), "idempotent");
    let (status, body) = ack(&kiosk, Some(&li), &Uuid::now_v7().to_string()).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(ack(&kiosk, Some(&li), "not-an-id").await.0, 404);

    // Acknowledged: a handheld connecting now is not told again.
    let mut after = SseClient::connect_bearer(&e01, &li_spare).await;
    assert!(
        after.next(QUIET).await.is_none(),
        "an acknowledged alert was replayed"
    );
    // A desk device may listen to anyone's alerts.
    assert_eq!(stream_status(&kiosk, Some(&desk), "E02").await, 200);
}
