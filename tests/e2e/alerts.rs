//! Alerts to consultants' handhelds end to end: a welcome posted by a handheld reaches the consultant's stream `/api/v1/consultants/{id}/events`, masked; acknowledgements; the replay of unacknowledged alerts on connect and after a restart; the manager's alerts; escalation of an unacknowledged welcome.

use std::time::Duration;

use kiosk_tests::kiosk::{KioskDir, Running};
use kiosk_tests::sse::SseClient;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::devices::{add_device, add_staff_device};
use crate::rotation::add_bound_device;
use crate::{BIN, ROSTER};

const WAIT: Duration = Duration::from_secs(20);
/// How long "no alert" is watched for.
const QUIET: Duration = Duration::from_millis(1500);
/// No escalation while a test looks at something else.
const NO_ESCALATION: &str = "[reception]\nescalate_after = \"1h\"\n";

/// E01 and E02 take visitors; E03 (周敏) is the office manager where a test says so.
const OFFICE: &str = "\
card,customer_id,surname,title,tier,card_status,consultant_id,consultant_name,note
nfc:04A1B2C3D4E5F6,C0001,张,mr,gold,active,E01,李娜,
nfc:04112233445566,C0002,王,ms,silver,active,E02,陈晨,
nfc:04A1B2C3D4E501,C0003,赵,ms,normal,active,E01,李娜,
nfc:04A1B2C3D4E502,C0004,孙,mr,normal,active,E03,周敏,
";

/// A folder with `config` and the office's roster imported.
fn office(config: &str) -> KioskDir {
    let dir = KioskDir::new(BIN, config);
    let out = dir.import(OFFICE);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// `consultant` goes on duty (or frees up: `action` = "free"), by a desk device.
async fn rotation(kiosk: &Running, desk: &str, action: &str, consultant: &str) -> Value {
    let resp = kiosk_tests::http_client()
        .post(kiosk.url(&format!("/api/v1/rotation/{action}")))
        .bearer_auth(desk)
        .header("content-type", "application/json")
        .body(json!({"consultant_id": consultant}).to_string())
        .send()
        .await
        .expect("POST /api/v1/rotation/...");
    assert_eq!(resp.status().as_u16(), 200, "{action} {consultant}");
    resp.json().await.expect("JSON")
}

/// `GET /api/v1/alerts?state=unacked` with `token`: status and body.
async fn unacked(kiosk: &Running, token: Option<&str>, query: &str) -> (u16, Value) {
    let mut req = kiosk_tests::http_client().get(kiosk.url(&format!("/api/v1/alerts{query}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("GET /api/v1/alerts");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

/// The ids in an alert list.
fn ids(list: &Value) -> Vec<String> {
    list["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| a["id"].as_str().expect("id").to_owned())
        .collect()
}

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
    let dir = KioskDir::new(BIN, NO_ESCALATION);
    let out = dir.import(ROSTER);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let li = add_bound_device(&dir, "pda-li", "E01");
    let li_spare = add_bound_device(&dir, "pda-li-2", "E01");
    let chen = add_bound_device(&dir, "pda-chen", "E02");
    let desk = add_staff_device(&dir, "desk");
    let kiosk = dir.start();
    let e01 = kiosk.url("/api/v1/consultants/E01/events");
    rotation(&kiosk, &desk, "check-in", "E01").await;

    // Another consultant's device may not listen; no token, no stream.
    assert_eq!(stream_status(&kiosk, Some(&chen), "E01").await, 403);
    assert_eq!(stream_status(&kiosk, None, "E01").await, 401);

    let mut li_events = SseClient::connect_bearer(&e01, &li).await;
    // C0001 (张, gold) belongs to E01, on duty, who receives them.
    crate::reception::check_in(&kiosk, &li, "E01").await;
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
    assert_eq!(a["reason"], "welcome");
    assert_eq!(a["receiver"], json!({"id": "E01", "name": "李娜"}));
    assert_eq!(a["escalated_from"], Value::Null);
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
            "escalated_from",
            "id",
            "kind",
            "reason",
            "receiver",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_survive_a_restart_unacknowledged_replayed_acknowledged_not() {
    let dir = office(NO_ESCALATION);
    let li = add_bound_device(&dir, "pda-li", "E01");
    let desk = add_staff_device(&dir, "desk");
    let staff = add_staff_device(&dir, "console");
    let mut kiosk = dir.start();
    let e01 = kiosk.url("/api/v1/consultants/E01/events");
    rotation(&kiosk, &desk, "check-in", "E01").await;
    let mut events = SseClient::connect_bearer(&e01, &li).await;

    // 张 comes and E01 acknowledges; E01 frees up; 赵 comes and nobody acknowledges.
    let (status, posted) = post_customer(&kiosk, &desk, "C0001").await;
    assert_eq!(status, 201, "{posted}");
    let first = events
        .wait_for("alert", WAIT, |d| d["visit_id"] == posted["visit"]["id"])
        .await;
    let acked_id = first.data["id"].as_str().expect("id").to_owned();
    let (status, acked) = ack(&kiosk, Some(&li), &acked_id).await;
    assert_eq!(status, 200, "{acked}");
    rotation(&kiosk, &desk, "free", "E01").await;
    let (status, posted) = post_customer(&kiosk, &desk, "C0003").await;
    assert_eq!(status, 201, "{posted}");
    let second = events
        .wait_for("alert", WAIT, |d| d["visit_id"] == posted["visit"]["id"])
        .await;
    let waiting_id = second.data["id"].as_str().expect("id").to_owned();
    assert_eq!(second.data["customer"], "赵女士");
    drop(events);

    kiosk.stop();
    // On a new port (port 0).
    let kiosk = dir.start();

    // The handheld reconnects: the unacknowledged alert comes first (the acknowledged one
    // is older, so it would have come before it), the same as it was sent.
    let e01 = kiosk.url("/api/v1/consultants/E01/events");
    let mut events = SseClient::connect_bearer(&e01, &li).await;
    let replayed = events.next(WAIT).await.expect("a replayed alert");
    assert_eq!(replayed.name, "alert");
    assert_eq!(
        replayed.data, second.data,
        "the unacknowledged alert, unchanged"
    );

    // Staff see it waiting; a handheld may not list alerts.
    let (status, list) = unacked(&kiosk, Some(&staff), "?state=unacked").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(&list), [waiting_id.as_str()]);
    assert_eq!(list["alerts"][0]["escalated_at"], Value::Null);
    assert!(list["alerts"][0]["created_at"].is_string(), "{list}");
    assert_eq!(unacked(&kiosk, Some(&li), "").await.0, 403);
    assert_eq!(unacked(&kiosk, None, "").await.0, 401);
    let (status, bad) = unacked(&kiosk, Some(&staff), "?state=acked").await;
    assert_eq!(
        (status, &bad["error"]["code"]),
        (400, &json!("bad_request"))
    );
    assert_eq!(unacked(&kiosk, Some(&staff), "?limit=0").await.0, 400);

    // The acknowledgement made before the restart stands; the waiting alert can be acknowledged.
    let (status, again) = ack(&kiosk, Some(&li), &acked_id).await;
    assert_eq!((status, &again), (200, &acked));
    let (status, body) = ack(&kiosk, Some(&li), &waiting_id).await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = unacked(&kiosk, Some(&staff), "").await;
    assert!(ids(&list).is_empty(), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gold_members_welcome_reaches_the_managers_handheld() {
    let dir = office("[reception]\nmanager = \"E03\"\nescalate_after = \"1h\"\n");
    let manager = add_bound_device(&dir, "pda-zhou", "E03");
    let desk = add_staff_device(&dir, "desk");
    let kiosk = dir.start();
    rotation(&kiosk, &desk, "check-in", "E01").await;
    rotation(&kiosk, &desk, "check-in", "E02").await;
    let mut events =
        SseClient::connect_bearer(&kiosk.url("/api/v1/consultants/E03/events"), &manager).await;

    // A silver member, then a gold one: only the gold one reaches the manager.
    let (status, silver) = post_customer(&kiosk, &desk, "C0002").await;
    assert_eq!(status, 201, "{silver}");
    assert!(silver["visit"]["consultant_id"].is_string(), "{silver}");
    let (status, gold) = post_customer(&kiosk, &desk, "C0001").await;
    assert_eq!(status, 201, "{gold}");
    let alert = events.next(WAIT).await.expect("the manager's alert");
    let a = &alert.data;
    assert_eq!(alert.name, "alert");
    assert_eq!(
        a["visit_id"], gold["visit"]["id"],
        "the first alert is the gold member's"
    );
    assert_eq!(a["reason"], "manager");
    assert_eq!(a["consultant_id"], "E03");
    assert_eq!(a["customer"], "张先生");
    assert_eq!(a["tier"], "gold");
    assert_eq!(a["receiver"]["id"], gold["visit"]["consultant_id"]);
    assert!(
        !alert.raw.contains("C0001") && !alert.raw.contains("phone"),
        "{}",
        alert.raw
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_welcome_escalates_to_the_next_consultant_and_the_manager() {
    let dir = office("[reception]\nmanager = \"E03\"\nescalate_after = \"1s\"\n");
    let li = add_bound_device(&dir, "pda-li", "E01");
    let chen = add_bound_device(&dir, "pda-chen", "E02");
    let manager = add_bound_device(&dir, "pda-zhou", "E03");
    let desk = add_staff_device(&dir, "desk");
    let staff = add_staff_device(&dir, "console");
    let kiosk = dir.start();
    rotation(&kiosk, &desk, "check-in", "E02").await;
    rotation(&kiosk, &desk, "check-in", "E01").await;
    let stream = |id: &str, token: &str| {
        let url = kiosk.url(&format!("/api/v1/consultants/{id}/events"));
        let token = token.to_owned();
        async move { SseClient::connect_bearer(&url, &token).await }
    };
    let mut e01 = stream("E01", &li).await;
    let mut e02 = stream("E02", &chen).await;
    let mut e03 = stream("E03", &manager).await;

    // 王 (silver) is received by someone on duty, who never acknowledges.
    let (status, posted) = post_customer(&kiosk, &desk, "C0002").await;
    assert_eq!(status, 201, "{posted}");
    let visit = posted["visit"]["id"].clone();
    let receiver = posted["visit"]["consultant_id"]
        .as_str()
        .expect("someone on duty received the visitor")
        .to_owned();
    let other = if receiver == "E01" { "E02" } else { "E01" };
    let (mine, theirs) = if receiver == "E01" {
        (&mut e01, &mut e02)
    } else {
        (&mut e02, &mut e01)
    };
    let welcome = mine
        .wait_for("alert", WAIT, |d| d["visit_id"] == visit)
        .await;
    assert_eq!(welcome.data["reason"], "welcome");

    // After escalate_after: the other consultant on duty, and the manager.
    let is_escalation = |d: &Value| d["visit_id"] == visit && d["reason"] == "escalation";
    let to_other = theirs.wait_for("alert", WAIT, is_escalation).await;
    let to_manager = e03.wait_for("alert", WAIT, is_escalation).await;
    for (alert, to) in [(&to_other, other), (&to_manager, "E03")] {
        let a = &alert.data;
        assert_eq!(a["consultant_id"], to);
        assert_eq!(a["escalated_from"]["id"], receiver.as_str(), "{a}");
        assert_eq!(a["receiver"]["id"], other, "{a}");
        assert_eq!(a["customer"], "王女士");
        assert_ne!(a["id"], welcome.data["id"]);
    }

    // Staff see the welcome marked escalated, and the two escalations waiting.
    let (status, list) = unacked(&kiosk, Some(&staff), "?state=unacked").await;
    assert_eq!(status, 200, "{list}");
    let listed = list["alerts"].as_array().expect("alerts");
    let original = listed
        .iter()
        .find(|a| a["id"] == welcome.data["id"])
        .expect("the welcome is listed");
    assert!(original["escalated_at"].is_string(), "{original}");
    for alert in [&to_other, &to_manager] {
        assert!(listed.iter().any(|a| a["id"] == alert.data["id"]), "{list}");
    }
    // The other consultant took the visitor's turn: now with the visitor.
    let (status, queue) = {
        let resp = kiosk_tests::http_client()
            .get(kiosk.url("/api/v1/rotation"))
            .bearer_auth(&desk)
            .send()
            .await
            .expect("GET /api/v1/rotation");
        (
            resp.status().as_u16(),
            resp.json::<Value>().await.expect("JSON"),
        )
    };
    assert_eq!(status, 200);
    let seat = queue["queue"]
        .as_array()
        .expect("queue")
        .iter()
        .find(|s| s["consultant_id"] == other)
        .expect("still on duty");
    assert_eq!(seat["busy"], true, "{queue}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_commit_with_their_visit_and_old_posts_or_spare_handhelds_alert_nobody() {
    let dir = office(NO_ESCALATION);
    let li = add_bound_device(&dir, "pda-li", "E01");
    let spare = add_device(&dir, "spare");
    let staff = add_staff_device(&dir, "desk");
    let mut kiosk = dir.start();
    rotation(&kiosk, &staff, "check-in", "E01").await;
    rotation(&kiosk, &staff, "check-in", "E02").await;

    // A handheld bound to no consultant posts visits, but acts for nobody: it may not
    // follow, acknowledge or move a consultant in the queue.
    assert_eq!(stream_status(&kiosk, Some(&spare), "E01").await, 403);
    let resp = kiosk_tests::http_client()
        .post(kiosk.url("/api/v1/rotation/check-out"))
        .bearer_auth(&spare)
        .header("content-type", "application/json")
        .body(json!({"consultant_id": "E01"}).to_string())
        .send()
        .await
        .expect("POST check-out");
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = resp.json().await.expect("JSON");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("--consultant"),
        "says what to do: {message}"
    );
    let (status, posted) = post_customer(&kiosk, &spare, "C0001").await;
    assert_eq!(status, 201, "{posted}");
    let (_, list) = unacked(&kiosk, Some(&staff), "").await;
    let alert_id = list["alerts"][0]["id"]
        .as_str()
        .expect("an alert")
        .to_owned();
    let (status, body) = ack(&kiosk, Some(&spare), &alert_id).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(ack(&kiosk, Some(&li), &alert_id).await.0, 200);

    // An offline handheld's queue, flushed an hour late: stored and counted, but nobody
    // is sent to a visitor received long ago, and the queue does not move.
    let queue = |kiosk: &Running| {
        let req = kiosk_tests::http_client()
            .get(kiosk.url("/api/v1/rotation"))
            .bearer_auth(&staff);
        async move {
            let resp = req.send().await.expect("GET /api/v1/rotation");
            assert_eq!(resp.status().as_u16(), 200);
            resp.json::<Value>().await.expect("JSON")
        }
    };
    let queue_before = queue(&kiosk).await;
    let an_hour_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let resp = kiosk_tests::http_client()
        .post(kiosk.url("/api/v1/visits"))
        .bearer_auth(&li)
        .header("content-type", "application/json")
        .body(
            json!({"id": Uuid::now_v7(), "customer_id": "C0002", "at": an_hour_ago.to_string()})
                .to_string(),
        )
        .send()
        .await
        .expect("POST a late visit");
    assert_eq!(resp.status().as_u16(), 201);
    let late: Value = resp.json().await.expect("JSON");
    assert_eq!(late["outcome"], "welcome", "{late}");
    assert_eq!(
        late["visit"]["consultant_id"], "E02",
        "the owner, protected, though E02 was free and not sent: {late}"
    );
    assert_eq!(queue(&kiosk).await, queue_before);
    let (_, list) = unacked(&kiosk, Some(&staff), "").await;
    assert!(ids(&list).is_empty(), "a late post alerted: {list}");

    // A visit's alerts are in its transaction: SIGKILL right after the 201 keeps them.
    let (status, posted) = post_customer(&kiosk, &spare, "C0003").await;
    assert_eq!(status, 201, "{posted}");
    kiosk.kill9();
    let kiosk = dir.start();
    let (_, list) = unacked(&kiosk, Some(&staff), "").await;
    let alerted: Vec<&Value> = list["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter(|a| a["visit_id"] == posted["visit"]["id"])
        .collect();
    assert_eq!(alerted.len(), 1, "the welcome alert survived: {list}");
    assert_eq!(alerted[0]["reason"], "welcome");
    assert_eq!(
        alerted[0]["consultant_id"],
        posted["visit"]["consultant_id"]
    );
}
