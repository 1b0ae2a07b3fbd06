//! Handheld devices end to end: `kiosk devices` on the real binary, and `POST /api/v1/visits` over real HTTP to a running daemon with real tokens.

use std::time::Duration;

use futures_util::future::join_all;
use kiosk_tests::kiosk::{KioskDir, Running};
use kiosk_tests::sse::SseClient;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{BIN, ROSTER};

const WAIT: Duration = Duration::from_secs(20);

/// A kiosk with the roster and no reader, running, and a device's token.
struct Handheld {
    kiosk: Running,
    dir: KioskDir,
    token: String,
}

async fn start() -> Handheld {
    let dir = KioskDir::new(BIN, "");
    let out = dir.import(ROSTER);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = add_device(&dir, "pda-1");
    let kiosk = dir.start();
    Handheld { kiosk, dir, token }
}

fn devices(dir: &KioskDir, args: &[&str]) -> std::process::Output {
    let config = dir.config();
    let mut all = vec!["devices"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", config.to_str().expect("utf-8 path")]);
    dir.cli(&all)
}

pub(crate) fn add_device(dir: &KioskDir, name: &str) -> String {
    add_device_with(dir, &["add", name])
}

/// A staff device (`--staff`): the console's token.
pub(crate) fn add_staff_device(dir: &KioskDir, name: &str) -> String {
    add_device_with(dir, &["add", name, "--staff"])
}

fn add_device_with(dir: &KioskDir, args: &[&str]) -> String {
    let out = devices(dir, args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// An answer: status, `Retry-After` if any, JSON body.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
}

impl Handheld {
    async fn post(&self, token: Option<&str>, body: impl Into<reqwest::Body>) -> Answer {
        post(&self.kiosk, token, body).await
    }

    async fn post_json(&self, body: &Value) -> Answer {
        self.post(Some(&self.token), body.to_string()).await
    }

    async fn visits(&self) -> Vec<Value> {
        let v = self.kiosk.get_json("/api/v1/visits?limit=1000").await;
        v["visits"].as_array().cloned().unwrap_or_default()
    }

    async fn outbox(&self) -> u64 {
        let v = self.kiosk.get_json("/api/v1/status").await;
        v["outbox_backlog"].as_u64().expect("outbox_backlog")
    }
}

async fn post(kiosk: &Running, token: Option<&str>, body: impl Into<reqwest::Body>) -> Answer {
    let mut req = kiosk_tests::http_client()
        .post(kiosk.url("/api/v1/visits"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("POST /api/v1/visits");
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = resp.json().await.expect("a JSON body, errors included");
    Answer {
        status,
        retry_after,
        body,
    }
}

fn new_id() -> String {
    Uuid::now_v7().to_string()
}

#[test]
fn devices_cli_shows_a_token_once_and_lists_and_revokes_without_it() {
    let dir = KioskDir::new(BIN, "");
    let out = dir.import(ROSTER);
    assert!(out.status.success());

    let out = devices(&dir, &["add", "pda-1", "--consultant", "E01"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert!(token.starts_with("kt_") && token.len() == 67, "{token}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("shown once"));

    let file = dir.path().join("pda-2.token");
    let out = devices(
        &dir,
        &[
            "add",
            "pda-2",
            "--token-file",
            file.to_str().expect("utf-8"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "the token went to the file, not stdout"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file).expect("token file").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let token2 = std::fs::read_to_string(&file)
        .expect("read")
        .trim()
        .to_owned();

    let out = devices(&dir, &["list"]);
    assert!(out.status.success());
    let list = String::from_utf8(out.stdout).expect("utf-8");
    assert!(list.contains("pda-1\thandheld\tconsultant E01\t"), "{list}");
    assert!(list.contains("pda-2\thandheld\tconsultant -\t"), "{list}");
    assert_eq!(list.matches("active").count(), 2, "{list}");
    for secret in [token.as_str(), token2.as_str(), &token[3..]] {
        assert!(!list.contains(secret), "list shows a token: {list}");
    }

    // Refusals say what to do.
    for (args, says) in [
        (vec!["add", "pda-1"], "revoke it first"),
        (vec!["add", "has space"], "letters, digits"),
        (vec!["add", "pda-3", "--consultant", "E99"], "no consultant"),
        (vec!["revoke", "nope"], "kiosk devices list"),
    ] {
        let out = devices(&dir, &args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }

    let out = devices(&dir, &["revoke", "pda-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = String::from_utf8(devices(&dir, &["list"]).stdout).expect("utf-8");
    let line = list
        .lines()
        .find(|l| l.starts_with("pda-1"))
        .expect("pda-1");
    assert!(line.contains("revoked 20"), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_needs_a_live_device_token_and_a_revocation_counts_at_once() {
    let h = start().await;
    let body = || json!({"id": new_id(), "card": "nfc:04A1B2C3D4E5F6"}).to_string();
    for token in [None, Some("kt_nope"), Some("")] {
        let a = h.post(token, body()).await;
        assert_eq!(a.status, 401, "{token:?}: {}", a.body);
        assert!(a.body["error"]["message"].as_str().is_some(), "{}", a.body);
    }
    let a = h.post(Some(&h.token), body()).await;
    assert_eq!(a.status, 201, "{}", a.body);

    let out = devices(&h.dir, &["revoke", "pda-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = h.post(Some(&h.token), body()).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("revoked")),
        "{}",
        a.body
    );
    assert_eq!(h.visits().await.len(), 1);
}

/// `GET /api/v1/visits` with a token: a staff device's reads, a handheld's is refused
/// (403), a wrong one is 401; `kiosk devices list` shows each device's role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visits_are_read_with_a_staff_token_and_not_with_a_handheld_one() {
    let h = start().await;
    let staff = add_staff_device(&h.dir, "desk");
    let a = h
        .post_json(&json!({"id": new_id(), "card": "nfc:04A1B2C3D4E5F6"}))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let read = |token: &str| {
        kiosk_tests::http_client()
            .get(h.kiosk.url("/api/v1/visits"))
            .bearer_auth(token)
            .send()
    };
    let resp = read(&staff).await.expect("GET visits");
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["visits"].as_array().map(Vec::len), Some(1), "{body}");
    let resp = read(&h.token).await.expect("GET visits");
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--staff")),
        "{body}"
    );
    let resp = read("kt_nope").await.expect("GET visits");
    assert_eq!(resp.status().as_u16(), 401);
    let out = devices(&h.dir, &["list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with("desk\tstaff") && !l.contains("revoked")),
        "{list}"
    );
    assert!(
        list.lines().any(|l| l.starts_with("pda-1\thandheld")),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_greets_is_stored_and_a_replay_answers_the_same() {
    let h = start().await;
    let mut events = SseClient::connect(&h.kiosk.url("/api/v1/events")).await;
    let id = new_id();
    let body = json!({"id": id, "card": "nfc:04A1B2C3D4E5F6", "note": "at the door"});
    let a = h.post_json(&body).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(
        (&a.body["outcome"], &a.body["repeat"]),
        (&json!("welcome"), &json!(false))
    );
    let visit = &a.body["visit"];
    assert_eq!(visit["id"], id.as_str());
    assert_eq!(visit["source"], "handheld:pda-1");
    assert_eq!(visit["method"], "nfc");
    assert_eq!(visit["customer_id"], "C0001");

    let greeting = events
        .wait_for("greeting", WAIT, |d| d["visit_id"] == id.as_str())
        .await;
    assert_eq!(greeting.data["outcome"], "welcome");
    assert!(!greeting.raw.contains("C0001") && !greeting.raw.contains("nfc:"));
    let stored = h.visits().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], id.as_str());

    // The same post again: the same answer, nothing new.
    let again = h.post_json(&body).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["visit"], a.body["visit"]);
    // Another body under the same id: refused, nothing changed.
    let other = json!({"id": id, "card": "nfc:04112233445566"});
    let refused = h.post_json(&other).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already used")),
        "{}",
        refused.body
    );
    assert_eq!(h.visits().await, stored);
    assert_eq!(h.outbox().await, 1);

    // The same customer chosen by id: a repeat, answered with the day's visit.
    let a = h
        .post_json(&json!({"id": new_id(), "customer_id": "C0001"}))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["repeat"], true);
    assert_eq!(a.body["visit"]["id"], id.as_str());
    // Another customer by id: method manual.
    let a = h
        .post_json(&json!({"id": new_id(), "customer_id": "C0002"}))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["visit"]["method"], "manual");
    // An unknown customer: refused, nothing stored.
    let a = h
        .post_json(&json!({"id": new_id(), "customer_id": "C9999"}))
        .await;
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no customer with id")),
        "{}",
        a.body
    );
    assert_eq!(h.visits().await.len(), 2);
    assert_eq!(h.outbox().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_posts_say_what_is_wrong_and_store_nothing() {
    let h = start().await;
    let id = new_id();
    let in_an_hour = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let cases: Vec<(String, u16, &str)> = vec![
        (
            json!({"id": id, "card": "nfc:04A1B2C3D4E5F6", "note": "x".repeat(17 * 1024)})
                .to_string(),
            413,
            "larger than",
        ),
        ("{\"id\": ".into(), 400, "not JSON"),
        (
            json!({"id": id, "card": "nfc:04A1B2C3D4E5F6", "door": 2}).to_string(),
            422,
            "unknown field `door`",
        ),
        (
            json!({"card": "nfc:04A1B2C3D4E5F6"}).to_string(),
            422,
            "missing field `id`",
        ),
        (
            json!({"id": id, "card": "nfc:XYZ"}).to_string(),
            422,
            "nfc:XYZ",
        ),
        (
            json!({"id": id, "card": "nfc:04A1B2C3D4E5F6", "at": in_an_hour.to_string()})
                .to_string(),
            422,
            "5 minutes ahead",
        ),
        (
            json!({"id": id, "card": "nfc:04A1B2C3D4E5F6", "customer_id": "C0001"}).to_string(),
            422,
            "not both",
        ),
    ];
    for (body, status, says) in cases {
        let a = h.post(Some(&h.token), body.clone()).await;
        let shown: String = body.chars().take(80).collect();
        assert_eq!(a.status, status, "{shown}: {}", a.body);
        let message = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{shown}: {}", a.body);
    }
    assert!(h.visits().await.is_empty());
    assert_eq!(h.outbox().await, 0);
    // The id was never used: it still makes a visit.
    let a = h
        .post_json(&json!({"id": id, "card": "nfc:04A1B2C3D4E5F6"}))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_from_one_device_is_rate_limited_and_every_accepted_post_is_stored() {
    let h = start().await;
    let answers = join_all((0..200u64).map(|i| {
        let body = json!({"id": new_id(), "card": format!("nfc:04{i:012X}")});
        h.post_json_owned(body)
    }))
    .await;
    let mut accepted = Vec::new();
    let mut limited = 0;
    for a in &answers {
        match a.status {
            201 => accepted.push(a.body["visit"]["id"].as_str().expect("id").to_owned()),
            429 => {
                limited += 1;
                assert!(a.retry_after.is_some_and(|s| s >= 1), "{}", a.body);
            }
            other => panic!("unexpected {other}: {}", a.body),
        }
    }
    assert!(limited >= 1, "200 posts at once were all accepted");
    let mut stored: Vec<String> = h
        .visits()
        .await
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_owned())
        .collect();
    stored.sort();
    accepted.sort();
    assert_eq!(stored, accepted);
    assert_eq!(h.outbox().await, accepted.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_of_one_id_make_one_visit() {
    let h = start().await;
    let id = new_id();
    let body = json!({"id": id, "card": "nfc:04112233445566"});
    let answers = join_all((0..16).map(|_| h.post_json_owned(body.clone()))).await;
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    statuses.sort();
    let mut expected = vec![200; 15];
    expected.push(201);
    assert_eq!(statuses, expected);
    for a in &answers {
        assert_eq!(a.body["visit"]["id"], id.as_str());
    }
    assert_eq!(h.visits().await.len(), 1);
    assert_eq!(h.outbox().await, 1);
}

impl Handheld {
    /// `post_json` taking its body, for many requests at once.
    async fn post_json_owned(&self, body: Value) -> Answer {
        self.post_json(&body).await
    }
}
