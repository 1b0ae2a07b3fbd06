//! Reception rules end to end: consultants check in, then handheld posts and a QR scanner's broker codes are received by the owner, a stand-in or the rotation, and the queue they moved survives a restart.

use jiff::{SignedDuration, Timestamp};
use kiosk_tests::kiosk::{KioskDir, Running};
use kiosk_tests::serial::PtyReader;
use kiosk_tests::sse::{SseClient, SseEvent};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::devices::add_staff_device;
use crate::{BIN, WAIT};

/// Roster rows with protection and broker registrations; `{..}` are filled with times
/// relative to now, since a post without `at` happens now.
const ROSTER: &str = "\
card,customer_id,surname,title,tier,consultant_id,consultant_name,source,last_follow_up,broker_id,registered_at,expires_at
nfc:04A1B2C3D4E5F6,C0001,张,mr,gold,E01,李娜,,,,,
nfc:04112233445566,C0002,王,ms,silver,E02,陈晨,walk_in,{2_days_ago},,,
nfc:04AABBCCDD0011,C0003,欧阳,ms,normal,E01,李娜,phone,{30_days_ago},,,
nfc:0455667788,C0004,Smith,mr,normal,,,broker,,B7,{1_day_ago},
nfc:0499887766,C0005,钱,mr,normal,E03,周,,,,,
nfc:0411223344,C0006,孙,mr,normal,E02,陈晨,,,B8,{10_days_ago},{1_day_ago}
";

fn roster() -> String {
    let ago = |days: i64| (Timestamp::now() - SignedDuration::from_hours(24 * days)).to_string();
    ROSTER
        .replace("{1_day_ago}", &ago(1))
        .replace("{2_days_ago}", &ago(2))
        .replace("{10_days_ago}", &ago(10))
        .replace("{30_days_ago}", &ago(30))
}

/// A kiosk folder with `extra` config and the roster imported.
fn kiosk_dir(extra: &str) -> KioskDir {
    let dir = KioskDir::new(BIN, extra);
    let out = dir.import(&roster());
    assert!(
        out.status.success(),
        "import failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 broker registration(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    dir
}

/// POSTs `body` to `/api/v1/rotation/{action}` with a device token; the queue as
/// `["E03", "E01*"]` (`*` = with a visitor).
async fn rotation(kiosk: &Running, token: &str, action: &str, body: Value) -> Vec<String> {
    let resp = kiosk_tests::http_client()
        .post(kiosk.url(&format!("/api/v1/rotation/{action}")))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST /api/v1/rotation/...");
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.expect("JSON");
    assert_eq!(status, 200, "{action}: {v}");
    shown(&v)
}

/// The queue as the rotation's GET answers it (a device token), shown as `rotation`'s.
async fn queue(kiosk: &Running, token: &str) -> Vec<String> {
    let resp = kiosk_tests::http_client()
        .get(kiosk.url("/api/v1/rotation"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /api/v1/rotation");
    assert_eq!(resp.status(), 200);
    shown(&resp.json().await.expect("JSON"))
}

fn shown(v: &Value) -> Vec<String> {
    v["queue"]
        .as_array()
        .expect("queue")
        .iter()
        .map(|s| {
            let id = s["consultant_id"].as_str().expect("id");
            if s["busy"] == true {
                format!("{id}*")
            } else {
                id.to_owned()
            }
        })
        .collect()
}

/// Puts `consultant` on duty (at the tail), with any device's token.
pub(crate) async fn check_in(kiosk: &Running, token: &str, consultant: &str) -> Vec<String> {
    rotation(
        kiosk,
        token,
        "check-in",
        json!({"consultant_id": consultant}),
    )
    .await
}

/// A handheld's post: `{"customer_id": …}` or `{"card": …}`; status and body.
pub(crate) async fn post(kiosk: &Running, token: &str, what: Value) -> (u16, Value) {
    let mut body = what;
    body["id"] = json!(Uuid::now_v7());
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

/// How a visit was received: (consultant, stand_in_for, public_pool, broker).
fn received(v: &Value) -> (Value, Value, Value, Value) {
    (
        v["consultant_id"].clone(),
        v["stand_in_for"].clone(),
        v["public_pool"].clone(),
        v["broker_id"].clone(),
    )
}

fn who(
    consultant: Option<&str>,
    stand_in_for: Option<&str>,
    public_pool: bool,
    broker: Option<&str>,
) -> (Value, Value, Value, Value) {
    (
        json!(consultant),
        json!(stand_in_for),
        json!(public_pool),
        json!(broker),
    )
}

/// The public stream never names a customer id, a card or a broker.
fn assert_public(ev: &SseEvent) {
    for forbidden in [
        "C000",
        "nfc:",
        "qr:",
        "B7",
        "B8",
        "customer_id",
        "broker_id",
    ] {
        assert!(
            !ev.raw.contains(forbidden),
            "public event leaks {forbidden:?}: {}",
            ev.raw
        );
    }
}

async fn stored(kiosk: &Running, id: &Value) -> Value {
    let v = kiosk.get_json("/api/v1/visits?limit=1000").await;
    v["visits"]
        .as_array()
        .and_then(|list| list.iter().find(|v| v["id"] == *id).cloned())
        .unwrap_or_else(|| panic!("visit {id} not listed: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handheld_posts_are_received_by_the_rules_and_the_queue_survives_a_restart() {
    let dir = kiosk_dir("");
    let desk = add_staff_device(&dir, "desk");
    let mut kiosk = dir.start();
    let mut screen = SseClient::connect(&kiosk.url("/api/v1/events")).await;

    check_in(&kiosk, &desk, "E03").await;
    assert_eq!(check_in(&kiosk, &desk, "E01").await, ["E03", "E01"]);

    // (what, posted, receiver, stand-in for, public pool, broker, queue after)
    type Case = (
        &'static str,
        Value,
        Option<&'static str>,
        Option<&'static str>,
        bool,
        Option<&'static str>,
        [&'static str; 2],
    );
    let cases: Vec<Case> = vec![
        (
            "C0001's owner E01 is on duty: E01 receives, keeps the place, is busy",
            json!({"customer_id": "C0001"}),
            Some("E01"),
            None,
            false,
            None,
            ["E03", "E01*"],
        ),
        (
            "C0002's owner E02 is off duty: the head E03 stands in",
            json!({"card": "nfc:04112233445566"}),
            Some("E03"),
            Some("E02"),
            false,
            None,
            ["E01*", "E03*"],
        ),
    ];
    let mut ids = Vec::new();
    for (what, body, consultant, stand_in_for, public_pool, broker, after) in cases {
        let (status, answer) = post(&kiosk, &desk, body).await;
        assert_eq!(status, 201, "{what}: {answer}");
        assert_eq!(answer["outcome"], "welcome", "{what}: {answer}");
        let visit = stored(&kiosk, &answer["visit"]["id"]).await;
        assert_eq!(
            received(&visit),
            who(consultant, stand_in_for, public_pool, broker),
            "{what}: {visit}"
        );
        assert_eq!(received(&answer["visit"]), received(&visit), "{what}");
        assert_eq!(queue(&kiosk, &desk).await, after, "{what}");
        ids.push(answer["visit"]["id"].clone());
    }
    // The screen names the receiver, says a stand-in is one, and nothing else.
    let g = screen
        .wait_for("greeting", WAIT, |d| d["visit_id"] == ids[1])
        .await;
    assert_eq!(
        (&g.data["consultant"], &g.data["stand_in"]),
        (&json!("周"), &json!(true)),
        "{}",
        g.raw
    );
    assert_public(&g);

    // E01 is free again and takes the lapsed customer from the rotation (公海).
    assert_eq!(
        rotation(&kiosk, &desk, "free", json!({"consultant_id": "E01"})).await,
        ["E01", "E03*"]
    );
    let (status, answer) = post(&kiosk, &desk, json!({"customer_id": "C0003"})).await;
    assert_eq!(status, 201, "{answer}");
    let lapsed = stored(&kiosk, &answer["visit"]["id"]).await;
    assert_eq!(received(&lapsed), who(Some("E01"), None, true, None));
    assert_eq!(queue(&kiosk, &desk).await, ["E03*", "E01*"]);

    // A broker's code posted by a handheld: confirmed, counted, received like a
    // walk-in (C0004 has no owner); everyone is busy, so nobody receives.
    let (status, answer) = post(&kiosk, &desk, json!({"card": "qr:broker:B7:C0004"})).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["outcome"], "broker_confirmed", "{answer}");
    let confirmed = stored(&kiosk, &answer["visit"]["id"]).await;
    assert_eq!(received(&confirmed), who(None, None, false, Some("B7")));
    assert_eq!(confirmed["kind"], "first", "{confirmed}");
    // The same code again: the day's confirmation answers, nothing new is recorded.
    let (status, again) = post(&kiosk, &desk, json!({"card": "qr:broker:B7:C0004"})).await;
    assert_eq!((status, &again["repeat"]), (201, &json!(true)), "{again}");
    assert_eq!(again["visit"]["id"], answer["visit"]["id"]);
    assert_eq!(queue(&kiosk, &desk).await, ["E03*", "E01*"]);

    // The queue is the one saved with the visits.
    kiosk.stop();
    let kiosk = dir.start();
    assert_eq!(queue(&kiosk, &desk).await, ["E03*", "E01*"]);
    // And it goes on from there: E03, free again, receives their own customer C0005
    // without taking a turn, and is busy again.
    rotation(&kiosk, &desk, "free", json!({"consultant_id": "E03"})).await;
    let (status, answer) = post(&kiosk, &desk, json!({"customer_id": "C0005"})).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        received(&answer["visit"]),
        who(Some("E03"), None, false, None)
    );
    assert_eq!(queue(&kiosk, &desk).await, ["E03*", "E01*"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_scanner_confirms_a_brokers_customer_or_says_why_not() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut qr = PtyReader::plug_in(&tmp.path().join("qr"));
    let dir = kiosk_dir(&format!(
        "[[reader]]\nkind = \"serial\"\nname = \"door-qr\"\npath = \"{}\"\nprotocol = \"line\"\n",
        qr.path().display()
    ));
    let desk = add_staff_device(&dir, "desk");
    let kiosk = dir.start();
    let mut screen = SseClient::connect(&kiosk.url("/api/v1/events")).await;
    screen
        .wait_for("reader", WAIT, |d| {
            d["reader"] == "door-qr" && d["connected"] == true
        })
        .await;
    check_in(&kiosk, &desk, "E01").await;

    // The broker's 带看码 at the door: C0004 arrives with B7, whose report is live.
    qr.send(b"broker:B7:C0004\r\n");
    let g = screen.wait_for("greeting", WAIT, |_| true).await;
    assert_eq!(g.data["outcome"], "broker_confirmed", "{}", g.raw);
    assert_eq!(g.data["member"]["name_en"], "Mr. Smith", "{}", g.raw);
    assert_eq!(g.data["consultant"], "李娜", "{}", g.raw);
    assert_public(&g);
    let visit = stored(&kiosk, &g.data["visit_id"]).await;
    assert_eq!(received(&visit), who(Some("E01"), None, false, Some("B7")));
    assert_eq!(
        (
            &visit["kind"],
            &visit["method"],
            &visit["card"],
            &visit["source"]
        ),
        (
            &json!("first"),
            &json!("qr"),
            &json!("qr:broker:B7:C0004"),
            &json!("door-qr")
        )
    );
    assert_eq!(queue(&kiosk, &desk).await, ["E01*"]);

    // B8's report of C0006 ran out yesterday: refused, and the screen sends them to
    // the desk; the console's list says why.
    qr.send(b"broker:B8:C0006\r\n");
    let g = screen.wait_for("greeting", WAIT, |_| true).await;
    assert_eq!(
        (&g.data["outcome"], &g.data["reason"]),
        (&json!("denied"), &json!("registration_expired")),
        "{}",
        g.raw
    );
    assert_public(&g);
    let visit = stored(&kiosk, &g.data["visit_id"]).await;
    assert_eq!(received(&visit), who(None, None, false, Some("B8")));
    assert_eq!(visit["customer_id"], "C0006");
    assert!(
        visit["reason_detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired") && d.contains("过期")),
        "{visit}"
    );
    // A refusal counts nothing: today's count is C0004's visit alone.
    let status = kiosk.get_json("/api/v1/status").await;
    assert_eq!(status["visits_today"], 1, "{status}");
}
