//! The hub's HTTP face through a real port and a real HTTP client: who may call, what an upload answers, roster pages and snapshots, the admin API.
//!
//! The store's own rules are tested in `tests.rs` on both backends; these cases are
//! about what crosses the wire, so they run on SQLite only.

use std::io::Write as _;

use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use super::store::HubCustomer;
use super::tests::{binding, walk_in};
use super::{ADMIN_ID, KIOSK_HEADER};
use crate::auth;
use crate::test_hub::{KIOSK, TestHub, visit, visit_line};
use crate::wire::{
    self, BatchReply, ConsultantEntry, CursorExpired, ItemStatus, PROTOCOL_HEADER, Record,
    RosterEntry, RosterPage,
};

// --- helpers ---

/// An error answer, checked to have exactly the documented shape
/// `{"error":{"code":"…","message":"…"}}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    code: String,
    message: String,
}

impl ApiError {
    async fn read(response: reqwest::Response) -> ApiError {
        let status = response.status();
        let headers = response.headers().clone();
        let body: serde_json::Value = response.json().await.expect("an error body in JSON");
        let object = body.as_object().expect("the error body is an object");
        assert_eq!(object.len(), 1, "only `error` at the top: {body}");
        let error = body["error"].as_object().expect("`error` is an object");
        assert_eq!(error.len(), 2, "only `code` and `message`: {body}");
        let text = |key: &str| {
            error[key]
                .as_str()
                .unwrap_or_else(|| panic!("`{key}` is a string: {body}"))
                .to_owned()
        };
        let (code, message) = (text("code"), text("message"));
        assert!(!message.is_empty(), "an error says what is wrong: {body}");
        ApiError {
            status,
            headers,
            code,
            message,
        }
    }
}

/// Uploads `lines` as the kiosk does: gzipped NDJSON.
async fn push_lines(hub: &TestHub, lines: &[String]) -> reqwest::Response {
    push_body(hub, wire::gzip_lines(lines.iter().map(String::as_str))).await
}

async fn push_body(hub: &TestHub, gzipped: Vec<u8>) -> reqwest::Response {
    hub.as_kiosk(Method::POST, "/sync/v1/records")
        .header(CONTENT_TYPE, wire::NDJSON)
        .header(CONTENT_ENCODING, "gzip")
        .body(gzipped)
        .send()
        .await
        .expect("send the upload")
}

async fn reply_of(response: reqwest::Response) -> BatchReply {
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("a batch reply")
}

fn statuses(reply: &BatchReply) -> Vec<ItemStatus> {
    reply.items.iter().map(|i| i.status).collect()
}

fn lines(seqs: impl IntoIterator<Item = u64>) -> Vec<String> {
    seqs.into_iter().map(|s| visit_line(KIOSK, s)).collect()
}

fn consultant(id: &str) -> ConsultantEntry {
    ConsultantEntry {
        id: id.into(),
        name: "李娜".into(),
    }
}

async fn put_json(hub: &TestHub, path: &str, body: &serde_json::Value) -> reqwest::Response {
    hub.as_admin(Method::PUT, path)
        .json(body)
        .send()
        .await
        .expect("send the admin request")
}

async fn roster_page(hub: &TestHub, query: &str) -> reqwest::Response {
    hub.as_kiosk(Method::GET, &format!("/sync/v1/roster?{query}"))
        .send()
        .await
        .expect("ask for a roster page")
}

/// Gzip of `size` zero bytes: tiny on the wire, huge inflated.
fn gzip_bomb(size: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..size / zeros.len() {
        gz.write_all(&zeros).expect("compress");
    }
    gz.finish().expect("compress")
}

// --- who may push ---

#[tokio::test]
async fn a_push_without_a_valid_kiosk_token_is_401_and_stores_nothing() {
    let mut hub = TestHub::spawn().await;
    let body = wire::gzip_lines([visit_line(KIOSK, 1).as_str()]);
    let stranger = auth::new_token();
    let cases = [
        ("no token", Some(KIOSK), None),
        ("a wrong token", Some(KIOSK), Some(stranger.as_str())),
        (
            "an unknown kiosk",
            Some("k9"),
            Some(hub.kiosk_token.as_str()),
        ),
        ("no kiosk id", None, Some(hub.kiosk_token.as_str())),
        (
            "the administrator's row as a kiosk",
            Some(ADMIN_ID),
            Some(hub.admin_token.as_str()),
        ),
    ];
    let mut refusals = Vec::new();
    for (case, id, token) in cases {
        let mut request = hub
            .http
            .post(hub.url("/sync/v1/records"))
            .header(PROTOCOL_HEADER, "1")
            .header(CONTENT_ENCODING, "gzip")
            .body(body.clone());
        if let Some(id) = id {
            request = request.header(KIOSK_HEADER, id);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let error = ApiError::read(request.send().await.expect("send")).await;
        assert_eq!(error.status, StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(
            error.headers.get(WWW_AUTHENTICATE).map(|v| v.as_bytes()),
            Some(&b"Bearer"[..]),
            "{case}"
        );
        assert_eq!(error.code, "unauthorized", "{case}");
        refusals.push((case, error.message));
    }
    // Which of id and token was wrong is not told: both get the same answer.
    assert_eq!(refusals[1].1, refusals[2].1);

    assert_eq!(hub.db.record_count().await.expect("count"), 0);
    assert!(hub.db.rejects(KIOSK).await.expect("rejects").is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn a_request_without_the_protocol_header_is_400() {
    let mut hub = TestHub::spawn().await;
    let body = wire::gzip_lines([visit_line(KIOSK, 1).as_str()]);
    let requests = [
        hub.http
            .post(hub.url("/sync/v1/records"))
            .header(CONTENT_ENCODING, "gzip")
            .body(body),
        hub.http.get(hub.url("/sync/v1/roster?since=0")),
        hub.http.get(hub.url("/sync/v1/roster/snapshot")),
    ];
    for request in requests {
        let request = request
            .header(KIOSK_HEADER, KIOSK)
            .bearer_auth(&hub.kiosk_token)
            .build()
            .expect("a request");
        let what = request.url().path().to_owned();
        let error = ApiError::read(hub.http.execute(request).await.expect("send")).await;
        assert_eq!(error.status, StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(error.code, "bad_request", "{what}");
        assert!(error.message.contains(PROTOCOL_HEADER), "{what}: {error:?}");
    }
    assert_eq!(hub.db.record_count().await.expect("count"), 0);
    hub.stop().await;
}

// --- uploads ---

#[tokio::test]
async fn a_batch_is_inserted_once_and_a_resend_is_duplicate() {
    let mut hub = TestHub::spawn().await;
    let batch = lines(1..=3);

    let first = reply_of(push_lines(&hub, &batch).await).await;
    assert_eq!(statuses(&first), vec![ItemStatus::Inserted; 3]);
    assert_eq!(
        first.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
        vec![Some(1), Some(2), Some(3)]
    );
    assert!(first.items.iter().all(|i| i.reason.is_none()));
    assert_eq!(first.high_water, 3);

    // The same bytes again, as a kiosk whose reply was lost sends them.
    let again = reply_of(push_lines(&hub, &batch).await).await;
    assert_eq!(statuses(&again), vec![ItemStatus::Duplicate; 3]);
    assert_eq!(again.high_water, 3);

    // gzip is allowed, not required.
    let plain = hub
        .as_kiosk(Method::POST, "/sync/v1/records")
        .header(CONTENT_TYPE, wire::NDJSON)
        .body(format!("{}\n", visit_line(KIOSK, 4)))
        .send()
        .await
        .expect("send");
    let plain = reply_of(plain).await;
    assert_eq!(statuses(&plain), vec![ItemStatus::Inserted]);
    assert_eq!(plain.high_water, 4);

    assert_eq!(hub.stored_seqs().await, vec![1, 2, 3, 4]);
    let stored = hub.db.records(KIOSK, 0, 10).await.expect("records");
    for (row, line) in stored.iter().zip(&batch) {
        assert_eq!(
            row.body,
            serde_json::from_str::<serde_json::Value>(line).expect("json"),
            "the hub keeps the line as sent"
        );
    }
    hub.stop().await;
}

#[tokio::test]
async fn lines_the_hub_cannot_take_are_rejected_with_reasons_and_hold_their_seq() {
    let mut hub = TestHub::spawn().await;
    let foreign = serde_json::to_string(&Record::Visit(visit("k2", 2))).expect("json");
    let consent = json!({
        "kind": "consent",
        "record": {"id": Uuid::now_v7(), "kiosk_id": KIOSK, "seq": 3, "customer_id": "C1"},
    })
    .to_string();
    let batch = vec![
        visit_line(KIOSK, 1),
        foreign.clone(),
        consent.clone(),
        "this is not JSON".to_owned(),
        visit_line(KIOSK, 4),
    ];

    let reply = reply_of(push_lines(&hub, &batch).await).await;
    use ItemStatus::{Inserted, Rejected};
    assert_eq!(
        statuses(&reply),
        vec![Inserted, Rejected, Rejected, Rejected, Inserted]
    );
    assert_eq!(
        reply.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
        vec![Some(1), Some(2), Some(3), None, Some(4)]
    );
    let reason = |i: usize| reply.items[i].reason.clone().unwrap_or_default();
    assert!(
        reason(1).contains("k2") && reason(1).contains(KIOSK),
        "{}",
        reason(1)
    );
    assert!(reason(2).contains("upgrade the hub"), "{}", reason(2));
    assert!(reason(3).contains("not a valid record"), "{}", reason(3));
    // Rejected seqs 2 and 3 are held, so the kiosk's queue moves past them.
    assert_eq!(reply.high_water, 4);

    assert_eq!(hub.stored_seqs().await, vec![1, 4]);
    let rejects = hub.db.rejects(KIOSK).await.expect("rejects");
    assert_eq!(
        rejects.iter().map(|r| r.raw.as_str()).collect::<Vec<_>>(),
        vec![foreign.as_str(), consent.as_str(), "this is not JSON"],
        "every reject is kept as evidence"
    );
    hub.stop().await;
}

#[tokio::test]
async fn uploads_too_large_are_413() {
    let mut hub = TestHub::spawn().await;
    let bomb = gzip_bomb(100 << 20);
    assert!(bomb.len() < 1 << 20, "{} bytes on the wire", bomb.len());
    let too_many = vec!["{}".to_owned(); 10_001];
    let cases = [
        ("a gzip bomb", bomb),
        (
            "too many lines",
            wire::gzip_lines(too_many.iter().map(String::as_str)),
        ),
        // Random bytes do not compress: past the limit on the wire.
        ("too many bytes", {
            let mut body = vec![0u8; (16 << 20) + 1];
            rand::Rng::fill_bytes(&mut rand::rng(), &mut body);
            body
        }),
    ];
    for (case, body) in cases {
        let error = ApiError::read(push_body(&hub, body).await).await;
        assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE, "{case}");
        assert_eq!(error.code, "too_large", "{case}");
    }
    assert_eq!(hub.db.record_count().await.expect("count"), 0);
    assert!(hub.db.rejects(KIOSK).await.expect("rejects").is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn corrupt_gzip_is_400() {
    let mut hub = TestHub::spawn().await;
    let good = wire::gzip_lines(lines(1..=20).iter().map(String::as_str));
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xFF;
    let cases = [
        ("not gzip", b"this is not gzip".to_vec()),
        ("cut off", good[..good.len() / 2].to_vec()),
        ("a byte flipped", flipped),
    ];
    for (case, body) in cases {
        let error = ApiError::read(push_body(&hub, body).await).await;
        assert_eq!(error.status, StatusCode::BAD_REQUEST, "{case}");
        assert_eq!(error.code, "bad_request", "{case}");
        assert!(error.message.contains("gzip"), "{case}: {error:?}");
    }
    assert_eq!(hub.db.record_count().await.expect("count"), 0);
    assert!(hub.db.rejects(KIOSK).await.expect("rejects").is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn uploads_past_the_limit_are_503_with_retry_after() {
    let mut hub = TestHub::spawn_busy().await;
    // Several, as the delay is drawn anew each time.
    for _ in 0..10 {
        let error = ApiError::read(push_lines(&hub, &lines([1])).await).await;
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code, "busy");
        let secs: u64 = error
            .headers
            .get(RETRY_AFTER)
            .expect("a Retry-After header")
            .to_str()
            .expect("text")
            .parse()
            .expect("whole seconds");
        assert!((1..=5).contains(&secs), "Retry-After: {secs}");
    }
    assert_eq!(hub.db.record_count().await.expect("count"), 0);
    hub.stop().await;
}

// --- roster ---

#[tokio::test]
async fn roster_pages_follow_the_cursor() {
    let mut hub = TestHub::spawn().await;
    for id in ["E1", "E2", "E3"] {
        hub.db.upsert_consultant(consultant(id)).await.expect("add");
    }
    let page = |r: reqwest::Response| async move {
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<RosterPage>().await.expect("a roster page")
    };
    let keys = |p: &RosterPage| -> Vec<String> {
        p.changes
            .iter()
            .map(|c| match &c.op {
                wire::RosterOp::Upsert { entry } => entry.key().to_owned(),
                wire::RosterOp::Delete { key, .. } => format!("-{key}"),
            })
            .collect()
    };

    let first = page(roster_page(&hub, "since=0&limit=2").await).await;
    assert_eq!(keys(&first), vec!["E1", "E2"]);
    assert!(first.more);
    assert_eq!(first.next, first.changes[1].cursor);

    let second = page(roster_page(&hub, &format!("since={}&limit=2", first.next)).await).await;
    assert_eq!(keys(&second), vec!["E3"]);
    assert!(!second.more);

    let last = page(roster_page(&hub, &format!("since={}", second.next)).await).await;
    assert!(last.changes.is_empty());
    assert!(!last.more);
    assert_eq!(last.next, second.next, "an empty page keeps the cursor");

    hub.db
        .delete(wire::Entity::Consultant, "E2")
        .await
        .expect("delete");
    let tombstone = page(roster_page(&hub, &format!("since={}", last.next)).await).await;
    assert_eq!(keys(&tombstone), vec!["-E2"]);

    let error = ApiError::read(roster_page(&hub, "since=yesterday").await).await;
    assert_eq!(error.status, StatusCode::BAD_REQUEST);
    assert!(error.message.contains("since=CURSOR"), "{error:?}");
    hub.stop().await;
}

#[tokio::test]
async fn an_expired_cursor_is_409_with_the_oldest_kept() {
    let mut hub = TestHub::spawn().await;
    for id in ["E1", "E2"] {
        hub.db.upsert_consultant(consultant(id)).await.expect("add");
    }
    let before = roster_page(&hub, "since=0").await;
    let before: RosterPage = before.json().await.expect("a page");
    let (c1, c2) = (before.changes[0].cursor, before.changes[1].cursor);

    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    assert_eq!(hub.db.prune_roster_log(later).await.expect("prune"), 2);
    for since in [0, c1] {
        let response = roster_page(&hub, &format!("since={since}")).await;
        assert_eq!(response.status(), StatusCode::CONFLICT, "since={since}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body, json!({ "oldest": c2 }), "since={since}");
        let expired: CursorExpired = serde_json::from_value(body).expect("the wire type");
        assert_eq!(expired.oldest, c2);
    }
    let kept = roster_page(&hub, &format!("since={c2}")).await;
    assert_eq!(kept.status(), StatusCode::OK);
    hub.stop().await;
}

#[tokio::test]
async fn a_snapshot_is_gzip_ndjson_that_read_snapshot_takes() {
    let mut hub = TestHub::spawn().await;
    hub.db
        .upsert_consultant(consultant("E1"))
        .await
        .expect("add");
    hub.db
        .upsert_customer(HubCustomer {
            id: "C1".into(),
            name: Some("张伟明".into()),
            surname: "张".into(),
            title: "mr".into(),
            tier: "gold".into(),
            phone: Some("13800138000".into()),
            consultant_id: Some("E1".into()),
            source: None,
            last_follow_up: None,
        })
        .await
        .expect("add");
    let latest: RosterPage = roster_page(&hub, "since=0")
        .await
        .json()
        .await
        .expect("a page");

    let response = hub
        .as_kiosk(Method::GET, "/sync/v1/roster/snapshot")
        .send()
        .await
        .expect("ask for the snapshot");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_ENCODING], "gzip");
    assert_eq!(response.headers()[CONTENT_TYPE], wire::NDJSON);
    let body = response.bytes().await.expect("the snapshot");

    let mut entries = Vec::new();
    let head = wire::read_snapshot(&body[..], |e| {
        entries.push(e);
        Ok(())
    })
    .expect("read the snapshot");
    assert_eq!((head.cursor, head.entries), (latest.next, 2));
    assert!(matches!(&entries[0], RosterEntry::Consultant(c) if c.id == "E1"));
    assert!(matches!(&entries[1], RosterEntry::Customer(c) if c.id == "C1" && c.surname == "张"));
    // Kiosks never receive a customer's phone or full name.
    let text = String::from_utf8(wire::gunzip(&body, 1 << 20).expect("inflate")).expect("UTF-8");
    assert!(
        !text.contains("13800138000") && !text.contains("张伟明"),
        "{text}"
    );
    hub.stop().await;
}

// --- administration ---

#[tokio::test]
async fn admin_puts_refuse_a_taken_phone_or_card_naming_the_holder() {
    let mut hub = TestHub::spawn().await;
    let customer = |phone: &str| json!({"name": "张伟明", "surname": "张", "title": "mr", "tier": "gold", "phone": phone});
    let put = put_json(&hub, "/admin/v1/customers/C1", &customer("13800138000")).await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);

    // The same number spelt another way is the same number.
    let taken = put_json(
        &hub,
        "/admin/v1/customers/C2",
        &customer("+86 138 0013 8000"),
    )
    .await;
    let error = ApiError::read(taken).await;
    assert_eq!(
        (error.status, error.code.as_str()),
        (StatusCode::CONFLICT, "phone_taken")
    );
    assert!(error.message.contains("C1"), "{error:?}");
    for private in ["C2", "13800138000", "张伟明"] {
        assert!(!error.message.contains(private), "{private}: {error:?}");
    }
    assert!(hub.db.customer("C2").await.expect("read").is_none());

    let put = put_json(&hub, "/admin/v1/customers/C2", &customer("13900139000")).await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let card = "/admin/v1/cards/nfc:04A1B2C3";
    let put = put_json(&hub, card, &json!({"customer_id": "C1"})).await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let again = put_json(&hub, card, &json!({"customer_id": "C1"})).await;
    assert_eq!(
        again.status(),
        StatusCode::NO_CONTENT,
        "a card does not clash with itself"
    );
    let error = ApiError::read(put_json(&hub, card, &json!({"customer_id": "C2"})).await).await;
    assert_eq!(
        (error.status, error.code.as_str()),
        (StatusCode::CONFLICT, "card_taken")
    );
    assert!(error.message.contains("C1"), "{error:?}");
    let kept = hub
        .db
        .card("nfc:04A1B2C3")
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(kept.customer_id, "C1");
    hub.stop().await;
}

#[tokio::test]
async fn admin_bodies_are_checked_with_a_message() {
    let mut hub = TestHub::spawn().await;
    let put = put_json(
        &hub,
        "/admin/v1/customers/C1",
        &json!({"surname": "张", "title": "mr", "tier": "gold"}),
    )
    .await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let raw = |text: &str| text.to_owned();
    let table = [
        ("/admin/v1/customers/C9", raw("{"), "invalid JSON body"),
        (
            "/admin/v1/customers/C9",
            json!({"surname": "张", "title": "mr", "tier": "gold", "nickname": "x"}).to_string(),
            "nickname",
        ),
        (
            "/admin/v1/customers/C9",
            json!({"title": "mr", "tier": "gold"}).to_string(),
            "surname",
        ),
        (
            "/admin/v1/customers/C9",
            json!({"surname": "张", "title": "dr", "tier": "gold"}).to_string(),
            "title",
        ),
        (
            "/admin/v1/customers/C9",
            json!({"surname": "张", "title": "mr", "tier": "gold", "phone": "call me"}).to_string(),
            "phone",
        ),
        (
            "/admin/v1/customers/C9",
            json!({"id": "C8", "surname": "张", "title": "mr", "tier": "gold"}).to_string(),
            "differ",
        ),
        (
            "/admin/v1/cards/nfc:04a1",
            json!({"customer_id": "C1"}).to_string(),
            "not a card token",
        ),
        (
            "/admin/v1/cards/nfc:04A1",
            json!({"customer_id": "C1", "status": "lost"}).to_string(),
            "status",
        ),
        (
            "/admin/v1/consultants/E1",
            json!({"name": "李娜", "company": "链家"}).to_string(),
            "company",
        ),
        (
            "/admin/v1/customers/C9",
            json!({"surname": "张", "title": "mr", "tier": "gold", "source": "web"}).to_string(),
            "source",
        ),
        (
            "/admin/v1/customers/C9",
            json!({"surname": "张", "title": "mr", "tier": "gold", "last_follow_up": "yesterday"})
                .to_string(),
            "last_follow_up",
        ),
        (
            "/admin/v1/customers/C9",
            json!({"surname": "张", "title": "mr", "tier": "gold", "last_follow_up": "2026-11-20"})
                .to_string(),
            "RFC 3339",
        ),
        (
            "/admin/v1/registrations/C1",
            json!({"broker_id": "B1"}).to_string(),
            "registered_at",
        ),
        (
            "/admin/v1/registrations/C1",
            json!({"broker_id": "B1", "registered_at": "last week"}).to_string(),
            "registered_at",
        ),
        (
            "/admin/v1/registrations/C1",
            json!({"broker_id": "B1", "registered_at": "2026-11-20T10:00:00+08:00",
                   "expires_at": "2026-11-19T10:00:00+08:00"})
            .to_string(),
            "expires_at",
        ),
        (
            "/admin/v1/registrations/C1",
            json!({"broker_id": "", "registered_at": "2026-11-20T10:00:00+08:00"}).to_string(),
            "broker_id",
        ),
        (
            "/admin/v1/registrations/C1",
            json!({"customer_id": "C2", "broker_id": "B1",
                   "registered_at": "2026-11-20T10:00:00+08:00"})
            .to_string(),
            "differ",
        ),
        (
            "/admin/v1/registrations/C1",
            json!({"broker_id": "B1", "registered_at": "2026-11-20T10:00:00+08:00",
                   "channel": "wechat"})
            .to_string(),
            "channel",
        ),
    ];
    for (path, body, hint) in table {
        let response = hub
            .as_admin(Method::PUT, path)
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("send");
        let error = ApiError::read(response).await;
        assert_eq!(error.status, StatusCode::BAD_REQUEST, "{path} {body}");
        assert_eq!(error.code, "bad_request", "{path} {body}");
        assert!(error.message.contains(hint), "{path} {body}: {error:?}");
    }
    // Past axum's body limit: the same JSON shape, not axum's plain text.
    let huge = json!({"surname": "张", "title": "mr", "tier": "gold", "name": "x".repeat(3 << 20)});
    let error = ApiError::read(put_json(&hub, "/admin/v1/customers/C9", &huge).await).await;
    assert_eq!(
        (error.status, error.code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );
    assert!(hub.db.customer("C9").await.expect("read").is_none());
    assert!(hub.db.registration("C1").await.expect("read").is_none());
    hub.stop().await;
}

#[tokio::test]
async fn a_customer_keeps_its_source_and_last_follow_up() {
    let mut hub = TestHub::spawn().await;
    let put = put_json(
        &hub,
        "/admin/v1/customers/C1",
        &json!({"surname": "张", "title": "mr", "tier": "gold", "source": "broker",
                "last_follow_up": "2026-11-20T10:00:00+08:00"}),
    )
    .await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let got = hub
        .as_admin(Method::GET, "/admin/v1/customers/C1")
        .send()
        .await
        .expect("send");
    assert_eq!(got.status(), StatusCode::OK);
    let body: serde_json::Value = got.json().await.expect("json");
    assert_eq!(body["source"], "broker");
    assert_eq!(body["last_follow_up"], "2026-11-20T02:00:00Z");
    // And the kiosks receive both.
    let page: RosterPage = roster_page(&hub, "since=0")
        .await
        .json()
        .await
        .expect("a page");
    let wire::RosterOp::Upsert {
        entry: RosterEntry::Customer(entry),
    } = &page.changes[0].op
    else {
        panic!("a customer: {page:?}")
    };
    assert_eq!(entry.source.as_deref(), Some("broker"));
    assert_eq!(
        entry.last_follow_up,
        Some("2026-11-20T02:00:00Z".parse().expect("time"))
    );
    hub.stop().await;
}

#[tokio::test]
async fn admin_registrations_are_put_read_replaced_and_deleted() {
    let mut hub = TestHub::spawn().await;
    let path = "/admin/v1/registrations/C1";
    let body =
        |broker: &str| json!({"broker_id": broker, "registered_at": "2026-11-20T10:00:00+08:00"});
    let get = |hub: &TestHub| hub.as_admin(Method::GET, path).send();

    // Unknown customer, then unknown broker: 409 naming the id, nothing stored.
    let error = ApiError::read(put_json(&hub, path, &body("B1")).await).await;
    assert_eq!(
        (error.status, error.code.as_str()),
        (StatusCode::CONFLICT, "missing_reference")
    );
    assert!(error.message.contains("\"C1\""), "{error:?}");
    let put = put_json(
        &hub,
        "/admin/v1/customers/C1",
        &json!({"surname": "张", "title": "mr", "tier": "normal"}),
    )
    .await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let error = ApiError::read(put_json(&hub, path, &body("B1")).await).await;
    assert_eq!(error.status, StatusCode::CONFLICT);
    assert!(error.message.contains("\"B1\""), "{error:?}");
    let error = ApiError::read(get(&hub).await.expect("send")).await;
    assert_eq!(
        (error.status, error.code.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );

    for broker in ["B1", "B2"] {
        let put = put_json(
            &hub,
            &format!("/admin/v1/brokers/{broker}"),
            &json!({"name": "王芳", "company": "链家"}),
        )
        .await;
        assert_eq!(put.status(), StatusCode::NO_CONTENT);
    }
    let put = put_json(&hub, path, &body("B1")).await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let got = get(&hub).await.expect("send");
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(
        got.json::<serde_json::Value>().await.expect("json"),
        json!({"customer_id": "C1", "broker_id": "B1", "registered_at": "2026-11-20T02:00:00Z"})
    );
    // PUT replaces: one live claim per customer.
    let put = put_json(
        &hub,
        path,
        &json!({"customer_id": "C1", "broker_id": "B2", "registered_at": "2026-11-21T10:00:00+08:00",
                "expires_at": "2026-12-06T10:00:00+08:00"}),
    )
    .await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let got: serde_json::Value = get(&hub).await.expect("send").json().await.expect("json");
    assert_eq!(got["broker_id"], "B2");
    assert_eq!(got["expires_at"], "2026-12-06T02:00:00Z");

    // A broker with a registration is kept; one without may go.
    let error = ApiError::read(
        hub.as_admin(Method::DELETE, "/admin/v1/brokers/B2")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (error.status, error.code.as_str()),
        (StatusCode::CONFLICT, "broker_in_use")
    );
    assert!(error.message.contains("B2"), "{error:?}");
    let gone = hub
        .as_admin(Method::DELETE, "/admin/v1/brokers/B1")
        .send()
        .await
        .expect("send");
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);

    let deleted = hub
        .as_admin(Method::DELETE, path)
        .send()
        .await
        .expect("send");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get(&hub).await.expect("send").status(),
        StatusCode::NOT_FOUND
    );
    let again = hub
        .as_admin(Method::DELETE, path)
        .send()
        .await
        .expect("send");
    assert_eq!(ApiError::read(again).await.status, StatusCode::NOT_FOUND);

    // Kiosks saw the claim come, change and go.
    let page: RosterPage = roster_page(&hub, "since=0")
        .await
        .json()
        .await
        .expect("a page");
    let registrations: Vec<String> = page
        .changes
        .iter()
        .filter_map(|c| match &c.op {
            wire::RosterOp::Upsert {
                entry: RosterEntry::Registration(r),
            } => Some(format!("upsert {}", r.broker_id)),
            wire::RosterOp::Delete {
                entity: wire::Entity::Registration,
                key,
            } => Some(format!("delete {key}")),
            _ => None,
        })
        .collect();
    assert_eq!(registrations, vec!["upsert B1", "upsert B2", "delete C1"]);
    hub.stop().await;
}

#[tokio::test]
async fn a_card_binding_through_the_hub_reaches_every_kiosk() {
    let mut hub = TestHub::spawn().await;
    hub.db
        .upsert_consultant(consultant("E1"))
        .await
        .expect("add");
    let bound = walk_in(1, "nfc:04AA", "w-1", "139 0000 0001");
    let batch = vec![
        serde_json::to_string(&Record::CardBinding(bound.clone())).expect("json"),
        visit_line(KIOSK, 2),
    ];
    let reply = reply_of(push_lines(&hub, &batch).await).await;
    assert_eq!(
        statuses(&reply),
        vec![ItemStatus::Inserted, ItemStatus::Inserted]
    );
    assert_eq!(reply.high_water, 2);

    // The sender's next pull (and every other kiosk's) brings the walk-in and the card.
    let page: RosterPage = roster_page(&hub, "since=1")
        .await
        .json()
        .await
        .expect("a page");
    let entries: Vec<&RosterEntry> = page
        .changes
        .iter()
        .filter_map(|c| match &c.op {
            wire::RosterOp::Upsert { entry } => Some(entry),
            wire::RosterOp::Delete { .. } => None,
        })
        .collect();
    assert!(
        matches!(entries[..], [RosterEntry::Customer(c), RosterEntry::Card(k)]
            if c.id == "w-1" && c.surname == "李" && c.tier == "normal"
                && c.source.as_deref() == Some("walk_in")
                && c.last_follow_up == Some(bound.bound_at)
                && k.token == "nfc:04AA" && k.customer_id == "w-1" && k.status == "active"),
        "{entries:?}"
    );
    let text = serde_json::to_string(&page).expect("json");
    assert!(
        !text.contains("13900000001") && !text.contains("李小龙"),
        "{text}"
    );
    // Administrators see the full record.
    let customer: serde_json::Value = hub
        .as_admin(Method::GET, "/admin/v1/customers/w-1")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            &customer["name"],
            &customer["phone"],
            &customer["consultant_id"]
        ),
        (&json!("李小龙"), &json!("13900000001"), &json!("E1"))
    );
    let card = hub
        .as_admin(Method::GET, "/admin/v1/cards/nfc:04AA")
        .send()
        .await
        .expect("send");
    assert_eq!(card.status(), StatusCode::OK);

    // The same card bound to someone else at the same kiosk comes back refused, with
    // the holder's id for the console.
    let rival =
        serde_json::to_string(&Record::CardBinding(binding(3, "nfc:04AA", "C7"))).expect("json");
    let reply = reply_of(push_lines(&hub, std::slice::from_ref(&rival)).await).await;
    assert_eq!(statuses(&reply), vec![ItemStatus::Rejected]);
    let reason = reply.items[0].reason.clone().unwrap_or_default();
    assert!(reason.starts_with("unknown_customer: "), "{reason}");
    hub.db
        .upsert_customer(HubCustomer {
            id: "C7".into(),
            name: None,
            surname: "王".into(),
            title: "ms".into(),
            tier: "normal".into(),
            phone: None,
            consultant_id: None,
            source: None,
            last_follow_up: None,
        })
        .await
        .expect("add");
    let taken =
        serde_json::to_string(&Record::CardBinding(binding(4, "nfc:04AA", "C7"))).expect("json");
    let reply = reply_of(push_lines(&hub, &[taken]).await).await;
    let reason = reply.items[0].reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("card_taken: ") && reason.contains("w-1"),
        "{reason}"
    );
    assert_eq!(reply.high_water, 4, "refused records hold their seq");
    let rejects: serde_json::Value = hub
        .as_admin(Method::GET, "/admin/v1/rejects?kiosk=k1")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(rejects["rejects"][0]["raw"], json!(rival));
    assert_eq!(rejects["rejects"][1]["reason"], json!(reason));
    hub.stop().await;
}

#[tokio::test]
async fn admin_calls_need_the_admin_token() {
    let mut hub = TestHub::spawn().await;
    let body = json!({"surname": "张", "title": "mr", "tier": "gold"});
    let calls = [
        (Method::GET, "/admin/v1/kiosks"),
        (Method::PUT, "/admin/v1/customers/C1"),
        (Method::GET, "/admin/v1/records?kiosk=k1"),
    ];
    for (method, path) in calls {
        let as_kiosk = hub.as_kiosk(method.clone(), path).json(&body);
        let stranger = hub
            .http
            .request(method.clone(), hub.url(path))
            .bearer_auth(auth::new_token())
            .json(&body);
        let anonymous = hub.http.request(method.clone(), hub.url(path)).json(&body);
        for (who, request) in [
            ("a kiosk", as_kiosk),
            ("a stranger", stranger),
            ("nobody", anonymous),
        ] {
            let error = ApiError::read(request.send().await.expect("send")).await;
            assert_eq!(
                error.status,
                StatusCode::UNAUTHORIZED,
                "{who}: {method} {path}"
            );
            assert_eq!(
                error.headers.get(WWW_AUTHENTICATE).map(|v| v.as_bytes()),
                Some(&b"Bearer"[..])
            );
        }
    }
    assert!(hub.db.customer("C1").await.expect("read").is_none());

    let kiosks = hub
        .as_admin(Method::GET, "/admin/v1/kiosks")
        .send()
        .await
        .expect("send");
    assert_eq!(kiosks.status(), StatusCode::OK);
    let kiosks: serde_json::Value = kiosks.json().await.expect("json");
    assert_eq!(
        kiosks,
        json!({"kiosks": [{"id": KIOSK, "office_id": crate::test_hub::OFFICE, "high_water": 0}]}),
        "the administrator's row is not a kiosk"
    );
    hub.stop().await;
}

// --- operations ---

#[tokio::test]
async fn healthz_metrics_and_unknown_paths_answer() {
    let mut hub = TestHub::spawn().await;
    let health = hub
        .http
        .get(hub.url("/healthz"))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        health.json::<serde_json::Value>().await.expect("json"),
        json!({"ok": true, "database": "sqlite"})
    );

    reply_of(push_lines(&hub, &lines([1])).await).await;
    let metrics = hub
        .http
        .get(hub.url("/metrics"))
        .send()
        .await
        .expect("send");
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.expect("text");
    assert!(
        text.lines()
            .any(|l| l.starts_with("hub_records_total{") && l.contains("status=\"inserted\"")),
        "{text}"
    );

    let error = ApiError::read(
        hub.http
            .get(hub.url("/nowhere"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (error.status, error.code.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_kiosk_registered_for_another_office_is_refused_whole_and_nothing_is_rejected() {
    let mut hub = TestHub::spawn().await;
    let mut elsewhere = visit(KIOSK, 1);
    elsewhere.office_id = "another-office".into();
    let line = serde_json::to_string(&Record::Visit(elsewhere)).expect("json");
    let error = ApiError::read(push_lines(&hub, &[line]).await).await;
    assert_eq!(error.status, StatusCode::FORBIDDEN);
    assert_eq!(error.code, "office_mismatch");
    assert!(
        error.message.contains("kiosk.office") && error.message.contains("kiosks add"),
        "{}",
        error.message
    );
    assert!(hub.db.rejects(KIOSK).await.expect("rejects").is_empty());
    assert_eq!(hub.db.record_count().await.expect("count"), 0);
    hub.stop().await;
}
