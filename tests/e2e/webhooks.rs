//! Webhooks end to end: a local receiver that refuses the first attempts gets every welcome at least once, signed, in order per consultant, and a queued notification survives a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use kiosk_tests::kiosk::{KioskDir, Running};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::BIN;
use crate::devices::add_staff_device;

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "test-webhook-secret";
/// Two customers of consultant E01, one of E02.
const ROSTER: &str = "\
card,customer_id,surname,title,tier,card_status,consultant_id,consultant_name,note
nfc:04A1B2C3D4E5F6,C0001,张,mr,gold,active,E01,李娜,
nfc:04112233445566,C0002,王,ms,silver,active,E02,陈晨,
nfc:04A1B2C3D4E5F7,C0003,刘,ms,normal,active,E01,李娜,
";

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Hit {
    body: Value,
    /// The signature headers matched the body and the shared secret.
    signed: bool,
    answered: u16,
}

#[derive(Clone)]
struct Receiver {
    /// Requests still to refuse with 500.
    refuse: Arc<AtomicI64>,
    hits: mpsc::UnboundedSender<Hit>,
}

/// Checks the signature over `"{timestamp}.{body}"` with the shared secret.
fn signed(headers: &HeaderMap, body: &str) -> bool {
    let (Some(ts), Some(sig)) = (
        headers
            .get("x-kiosk-timestamp")
            .and_then(|v| v.to_str().ok()),
        headers
            .get("x-kiosk-signature")
            .and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    let Some(hex_sig) = sig.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("{ts}.{body}").as_bytes());
    ts.parse::<i64>().is_ok() && mac.verify_slice(&expected).is_ok()
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let answer = if r.refuse.fetch_sub(1, Ordering::SeqCst) > 0 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let _ = r.hits.send(Hit {
        signed: signed(&headers, &body),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        answered: answer.as_u16(),
    });
    answer
}

/// A receiver on port 0 refusing the first `refuse` requests: its URL, the refusal
/// counter and the stream of requests.
async fn receiver(refuse: i64) -> (String, Arc<AtomicI64>, mpsc::UnboundedReceiver<Hit>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let refuse = Arc::new(AtomicI64::new(refuse));
    let state = Receiver {
        refuse: refuse.clone(),
        hits: tx,
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), refuse, rx)
}

fn kiosk_with_hook(url: &str) -> KioskDir {
    let dir = KioskDir::new(
        BIN,
        &format!("[[notify.webhook]]\nurl = \"{url}\"\nsecret_file = \"hook.secret\"\n"),
    );
    std::fs::write(dir.path().join("hook.secret"), format!("{SECRET}\n")).expect("secret");
    let out = dir.import(ROSTER);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

async fn post_customer(kiosk: &Running, token: &str, customer: &str) -> Value {
    let body = json!({"id": Uuid::now_v7(), "customer_id": customer});
    let resp = kiosk_tests::http_client()
        .post(kiosk.url("/api/v1/visits"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST /api/v1/visits");
    assert_eq!(resp.status().as_u16(), 201);
    let posted: Value = resp.json().await.expect("JSON");
    assert_eq!(posted["outcome"], "welcome", "{posted}");
    posted
}

async fn next_hit(hits: &mut mpsc::UnboundedReceiver<Hit>) -> Hit {
    tokio::time::timeout(WAIT, hits.recv())
        .await
        .expect("no webhook request within the time limit")
        .expect("receiver stopped")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deliver_signed_at_least_once_in_order_per_consultant() {
    let (url, _, mut hits) = receiver(2).await;
    let dir = kiosk_with_hook(&url);
    let desk = add_staff_device(&dir, "desk");
    let kiosk = dir.start();
    // Their owner on duty receives both customers.
    crate::reception::check_in(&kiosk, &desk, "E01").await;

    let first = post_customer(&kiosk, &desk, "C0001").await;
    let second = post_customer(&kiosk, &desk, "C0003").await;
    let visits = [
        first["visit"]["id"].as_str().expect("id").to_owned(),
        second["visit"]["id"].as_str().expect("id").to_owned(),
    ];

    // Until both are delivered: every request signed (checked by the receiver), and the
    // second never sent before the first was delivered.
    let mut delivered: Vec<String> = Vec::new();
    let mut refused = 0;
    while delivered.len() < 2 {
        let hit = next_hit(&mut hits).await;
        assert!(hit.signed, "a bad signature on {}", hit.body);
        assert_eq!(hit.body["event"], "welcome", "{}", hit.body);
        let alert = &hit.body["alert"];
        assert_eq!(alert["consultant_id"], "E01");
        let visit = alert["visit_id"].as_str().expect("visit_id").to_owned();
        let expected = &visits[delivered.len()];
        assert_eq!(
            &visit, expected,
            "order per consultant: got {visit} while {expected} is not delivered yet"
        );
        match hit.answered {
            200 => delivered.push(visit),
            _ => refused += 1,
        }
    }
    assert_eq!(
        refused, 2,
        "the first two attempts were refused and retried"
    );
    assert_eq!(delivered, visits);

    let status = kiosk.get_json("/api/v1/status").await;
    assert_eq!(status["notify"]["webhooks"], 1, "{status}");
    assert!(
        status["notify"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{status}"
    );
    let raw = status.to_string();
    assert!(!raw.contains(SECRET), "the secret leaked into the status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_queue_survives_a_restart() {
    let (url, refuse, mut hits) = receiver(i64::MAX).await;
    let dir = kiosk_with_hook(&url);
    let desk = add_staff_device(&dir, "desk");
    let mut kiosk = dir.start();
    crate::reception::check_in(&kiosk, &desk, "E02").await;

    let posted = post_customer(&kiosk, &desk, "C0002").await;
    let visit = posted["visit"]["id"].as_str().expect("id").to_owned();
    // Attempted and refused: the row is queued, undelivered.
    let hit = next_hit(&mut hits).await;
    assert!(hit.signed, "a bad signature on {}", hit.body);
    assert_eq!(hit.answered, 500);
    assert_eq!(hit.body["alert"]["visit_id"], visit.as_str());
    let alert_id = hit.body["alert"]["id"].clone();
    let status = kiosk.get_json("/api/v1/status").await;
    assert_eq!(status["notify"]["queued"], 1, "{status}");

    kiosk.stop();
    refuse.store(0, Ordering::SeqCst);
    let kiosk = dir.start();
    // Retries refused before the stop may still be in the channel; then the delivery.
    loop {
        let hit = next_hit(&mut hits).await;
        assert!(hit.signed, "a bad signature on {}", hit.body);
        assert_eq!(hit.body["alert"]["id"], alert_id, "the same notification");
        if hit.answered == 200 {
            break;
        }
    }
    drop(kiosk);
}
