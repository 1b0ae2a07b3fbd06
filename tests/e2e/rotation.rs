//! The rotation queue end to end: `/api/v1/rotation/...` over real HTTP with real device tokens, and the queue across a restart of the daemon.

use kiosk_tests::kiosk::{KioskDir, Running};
use serde_json::{Value, json};

use crate::devices::add_staff_device;
use crate::{BIN, ROSTER};

/// `kiosk devices add NAME --consultant ID`: the token.
pub(crate) fn add_bound_device(dir: &KioskDir, name: &str, consultant: &str) -> String {
    let config = dir.config();
    let out = dir.cli(&[
        "devices",
        "add",
        name,
        "--consultant",
        consultant,
        "--config",
        config.to_str().expect("utf-8 path"),
    ]);
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

/// POSTs `body` (none when `None`) to `/api/v1/rotation/{action}`: status and JSON body.
async fn post(
    kiosk: &Running,
    token: Option<&str>,
    action: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = kiosk_tests::http_client().post(kiosk.url(&format!("/api/v1/rotation/{action}")));
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("POST /api/v1/rotation/...");
    let status = resp.status().as_u16();
    (
        status,
        resp.json().await.expect("a JSON body, errors included"),
    )
}

async fn get(kiosk: &Running, token: Option<&str>) -> (u16, Value) {
    let mut req = kiosk_tests::http_client().get(kiosk.url("/api/v1/rotation"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("GET /api/v1/rotation");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

/// The queue as `(id, busy)` from the head.
fn queue(v: &Value) -> Vec<(String, bool)> {
    v["queue"]
        .as_array()
        .expect("queue")
        .iter()
        .map(|s| {
            (
                s["consultant_id"].as_str().expect("id").to_owned(),
                s["busy"].as_bool().expect("busy"),
            )
        })
        .collect()
}

fn ids(list: &[&str]) -> Vec<(String, bool)> {
    list.iter().map(|id| ((*id).to_owned(), false)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_check_in_out_free_reorder_and_the_queue_survives_a_restart() {
    let dir = KioskDir::new(BIN, "");
    let out = dir.import(ROSTER);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let li = add_bound_device(&dir, "pda-li", "E01");
    let chen = add_bound_device(&dir, "pda-chen", "E02");
    let desk = add_staff_device(&dir, "desk");
    let mut kiosk = dir.start();

    // Nobody on duty yet.
    let (status, v) = get(&kiosk, Some(&desk)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"queue": [], "next": null}));

    // Each checks in from their own device, with no body: E02 first.
    let (status, v) = post(&kiosk, Some(&chen), "check-in", None).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = post(
        &kiosk,
        Some(&li),
        "check-in",
        Some(json!({"consultant_id": "E01"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(queue(&v), ids(&["E02", "E01"]));
    // A double tap keeps the place.
    let (status, v) = post(&kiosk, Some(&chen), "check-in", None).await;
    assert_eq!((status, queue(&v)), (200, ids(&["E02", "E01"])));

    let (status, v) = get(&kiosk, Some(&li)).await;
    assert_eq!(status, 200);
    assert_eq!(v["next"], "E02");
    assert_eq!(v["queue"][0]["name"], "陈晨");
    assert_eq!(
        v["queue"][1],
        json!({"consultant_id": "E01", "name": "李娜", "busy": false})
    );

    // No token, or a wrong one: 401 everywhere.
    for action in ["check-in", "check-out", "free", "reorder"] {
        let (status, v) = post(&kiosk, None, action, None).await;
        assert_eq!(
            (status, &v["error"]["code"]),
            (401, &json!("unauthorized")),
            "{action}"
        );
        let (status, _) = post(&kiosk, Some("kt_nope"), action, None).await;
        assert_eq!(status, 401, "{action}");
    }
    assert_eq!(get(&kiosk, None).await.0, 401);

    // A consultant's device acts for that consultant only.
    let (status, v) = post(
        &kiosk,
        Some(&li),
        "check-out",
        Some(json!({"consultant_id": "E02"})),
    )
    .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (403, &json!("forbidden")),
        "{v}"
    );
    // Not in the roster: 422; in the roster but not on duty: 409 with the rule's code.
    let (status, v) = post(
        &kiosk,
        Some(&desk),
        "check-in",
        Some(json!({"consultant_id": "E99"})),
    )
    .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (422, &json!("no_such_consultant")),
        "{v}"
    );
    let (status, v) = post(
        &kiosk,
        Some(&desk),
        "check-out",
        Some(json!({"consultant_id": "E03"})),
    )
    .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (422, &json!("no_such_consultant")),
        "{v}"
    );
    // An unbound device must say whom.
    let (status, v) = post(&kiosk, Some(&desk), "free", None).await;
    assert_eq!(status, 422, "{v}");
    // Unknown fields and bad JSON are refused.
    let (status, v) = post(
        &kiosk,
        Some(&li),
        "free",
        Some(json!({"consultant": "E01"})),
    )
    .await;
    assert_eq!(status, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .contains("unknown field"),
        "{v}"
    );

    // E01 checks out; then check-out and free are 409 for them.
    let (status, v) = post(&kiosk, Some(&li), "check-out", None).await;
    assert_eq!((status, queue(&v)), (200, ids(&["E02"])));
    for action in ["check-out", "free"] {
        let (status, v) = post(&kiosk, Some(&li), action, None).await;
        assert_eq!(
            (status, &v["error"]["code"]),
            (409, &json!("not_on_duty")),
            "{action}: {v}"
        );
    }
    let (status, v) = post(&kiosk, Some(&li), "check-in", None).await;
    assert_eq!((status, queue(&v)), (200, ids(&["E02", "E01"])));

    // Reorder: a consultant's device may not; not a permutation is 422; the desk may.
    let order = json!({"order": ["E01", "E02"]});
    let (status, v) = post(&kiosk, Some(&li), "reorder", Some(order.clone())).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (403, &json!("forbidden")),
        "{v}"
    );
    let (status, v) = post(
        &kiosk,
        Some(&desk),
        "reorder",
        Some(json!({"order": ["E01"]})),
    )
    .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (422, &json!("not_a_permutation")),
        "{v}"
    );
    let (status, v) = post(&kiosk, Some(&desk), "reorder", Some(order)).await;
    assert_eq!((status, queue(&v)), (200, ids(&["E01", "E02"])));
    // Free while free is harmless; the desk may free anyone on duty.
    let (status, v) = post(
        &kiosk,
        Some(&desk),
        "free",
        Some(json!({"consultant_id": "E02"})),
    )
    .await;
    assert_eq!((status, queue(&v)), (200, ids(&["E01", "E02"])));

    // SIGTERM and start again: the same queue.
    let before = get(&kiosk, Some(&desk)).await.1;
    kiosk.stop();
    let kiosk = dir.start();
    let (status, after) = get(&kiosk, Some(&desk)).await;
    assert_eq!(status, 200);
    assert_eq!(after, before);
    assert_eq!(queue(&after), ids(&["E01", "E02"]));
    assert_eq!(after["next"], "E01");
}
