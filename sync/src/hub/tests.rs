//! The hub store's shared test suite: each case is written once against `HubDb` and runs on SQLite and on PostgreSQL.
//!
//! PostgreSQL cases need a server where the test role may create databases:
//! `KIOSK_TEST_POSTGRES` (default `postgres://kiosk:kiosk@127.0.0.1:5432/postgres`).
//! Each case gets a fresh database, dropped afterwards; `scripts/dev test` sets the
//! server up. An unreachable server fails the PostgreSQL cases, never skips them.

use std::sync::atomic::{AtomicBool, Ordering};

use uuid::Uuid;

use super::store::{
    Conflict, HubCustomer, HubDb, HubStoreError, ImportCounts, Incoming, RosterImport,
    StoredConsent,
};
use crate::wire::{
    BatchReply, BrokerEntry, CardBindingRecord, CardEntry, CardRevocationRecord, Consent,
    ConsultantEntry, Entity, ItemStatus, Method, NewCustomer, Outcome, Record, RegistrationEntry,
    RosterChange, RosterEntry, RosterOp, VisitRecord, read_snapshot,
};

const DEFAULT_POSTGRES: &str = "postgres://kiosk:kiosk@127.0.0.1:5432/postgres";
use crate::test_hub::{KIOSK, OFFICE, visit};
const DAY: &str = "2026-11-23";

/// Every case runs once per backend, as `hub::tests::sqlite::CASE` and
/// `hub::tests::postgres::CASE`.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&super::Hub::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&super::Hub::postgres().await).await;
                }
            )*
        }
    };
}

on_both_backends!(
    new_records_are_inserted_once_and_replays_are_duplicates,
    a_gap_holds_the_high_water_until_it_is_filled,
    a_reject_with_a_seq_counts_as_held,
    a_record_reusing_a_held_seq_is_rejected_naming_the_holder,
    one_id_through_two_kiosks_is_stored_once_and_blocks_neither,
    a_line_no_database_can_hold_is_rejected_not_fatal,
    kiosks_are_added_once_and_revoked_once,
    roster_changes_follow_commit_order_and_page,
    an_unchanged_upsert_is_not_logged,
    deleting_a_customer_tombstones_their_cards_first,
    roster_rules_refuse_with_ids,
    an_import_is_all_or_nothing,
    pruning_expires_old_cursors,
    a_cursor_from_the_future_takes_a_snapshot,
    a_snapshot_round_trips_without_private_fields,
    day_report_counts_one_office_visit_per_customer,
    two_hubs_store_the_same_batches_once,
    concurrent_roster_writers_keep_cursor_order,
    a_newer_schema_is_refused_and_a_current_one_reopened,
    a_version_1_database_is_migrated_in_place,
    customers_carry_source_and_last_follow_up_to_kiosks,
    registrations_are_checked_logged_and_tombstoned,
    a_walk_in_binding_creates_the_customer_card_and_consent,
    bindings_are_refused_with_a_code_naming_only_ids,
    a_refused_binding_is_answered_the_same_when_sent_again,
    a_revocation_revokes_the_card_or_names_it_unknown,
    a_batch_takes_visits_and_roster_records_in_order,
);

// --- harness ---

/// One backend under test: the store, and where it lives, so that a case can open a
/// second handle on the same database, as a second hub process would.
struct Hub {
    db: HubDb,
    target: String,
    _place: Place,
}

/// Held for its `Drop`: the temp dir or the database goes when the case ends.
enum Place {
    Sqlite { _dir: tempfile::TempDir },
    Postgres { _database: PgDatabase },
}

impl Hub {
    async fn sqlite() -> Hub {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = format!("sqlite:{}", dir.path().join("hub.db").display());
        Hub {
            db: HubDb::open(&target).await.expect("open the SQLite hub"),
            target,
            _place: Place::Sqlite { _dir: dir },
        }
    }

    async fn postgres() -> Hub {
        let database = PgDatabase::create().await;
        let target = database.url.clone();
        Hub {
            db: HubDb::open(&target).await.expect("open the PostgreSQL hub"),
            target,
            _place: Place::Postgres {
                _database: database,
            },
        }
    }

    /// Another handle on the same database: another hub process.
    async fn another(&self) -> HubDb {
        HubDb::open(&self.target)
            .await
            .expect("open a second handle")
    }

    fn is_postgres(&self) -> bool {
        matches!(self._place, Place::Postgres { .. })
    }
}

/// A database of its own for one case, dropped when the case ends (even by a panic).
struct PgDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create() -> PgDatabase {
        let admin =
            std::env::var("KIOSK_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.into());
        let client = admin_client(&admin).await;
        let name = format!("kiosk_t_{}", Uuid::now_v7().simple());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| {
                panic!("cannot create a test database: {e}; the role in KIOSK_TEST_POSTGRES needs CREATEDB (scripts/dev test sets it up)")
            });
        let url = with_database(&admin, &name);
        PgDatabase { admin, name, url }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Its own thread and runtime: `drop` cannot await, and the case's runtime may
        // be unwinding. Best effort: a database left behind is harmless.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    // FORCE: the hub's pooled connections may still be open.
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            client
        }
        Err(e) => panic!(
            "PostgreSQL for the hub tests is unreachable ({}); start PostgreSQL: scripts/dev test does it \
             (or point KIOSK_TEST_POSTGRES at a server where the role may create databases)",
            super::store::with_causes(&e)
        ),
    }
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    }
}

#[test]
fn a_test_database_url_keeps_everything_but_the_database() {
    for (url, expected) in [
        ("postgres://u:p@h:5432/postgres", "postgres://u:p@h:5432/t"),
        ("postgres://u:p@h:5432", "postgres://u:p@h:5432/t"),
        (
            "postgresql://h/db?sslmode=disable",
            "postgresql://h/t?sslmode=disable",
        ),
    ] {
        assert_eq!(with_database(url, "t"), expected);
    }
}

// --- fixtures ---

fn received_at() -> jiff::Timestamp {
    // Whole microseconds: what both databases keep.
    "2026-11-23T02:00:00.123456Z".parse().expect("time")
}

fn line(v: VisitRecord) -> Incoming {
    let record = Record::Visit(v);
    let raw = serde_json::to_string(&record).expect("serialize");
    Incoming::Record {
        record: Box::new(record),
        raw,
    }
}

fn lines(kiosk: &str, seqs: impl IntoIterator<Item = u64>) -> Vec<Incoming> {
    seqs.into_iter().map(|s| line(visit(kiosk, s))).collect()
}

fn reject(seq: Option<u64>, raw: &str) -> Incoming {
    Incoming::Reject {
        seq,
        id: None,
        kind: None,
        reason: "not valid JSON".into(),
        raw: raw.into(),
    }
}

fn statuses(reply: &BatchReply) -> Vec<ItemStatus> {
    reply.items.iter().map(|i| i.status).collect()
}

async fn store(db: &HubDb, items: Vec<Incoming>) -> BatchReply {
    db.store_batch(KIOSK, items, received_at())
        .await
        .expect("store a batch")
}

fn consultant(id: &str, name: &str) -> ConsultantEntry {
    ConsultantEntry {
        id: id.into(),
        name: name.into(),
    }
}

fn customer(id: &str, phone: Option<&str>, consultant: Option<&str>) -> HubCustomer {
    HubCustomer {
        id: id.into(),
        name: Some("张伟明".into()),
        surname: "张".into(),
        title: "mr".into(),
        tier: "gold".into(),
        phone: phone.map(Into::into),
        consultant_id: consultant.map(Into::into),
        source: None,
        last_follow_up: None,
    }
}

fn card(token: &str, customer: &str, status: &str) -> CardEntry {
    CardEntry {
        token: token.into(),
        customer_id: customer.into(),
        status: status.into(),
        note: None,
        low24_only: false,
    }
}

fn broker(id: &str) -> BrokerEntry {
    BrokerEntry {
        id: id.into(),
        name: "王芳".into(),
        company: Some("链家".into()),
    }
}

fn time(text: &str) -> jiff::Timestamp {
    text.parse().expect("a time")
}

fn registration(customer: &str, broker: &str) -> RegistrationEntry {
    RegistrationEntry {
        customer_id: customer.into(),
        broker_id: broker.into(),
        registered_at: time("2026-11-20T03:00:00Z"),
        expires_at: Some(time("2026-12-05T03:00:00Z")),
    }
}

/// A card bound at [`KIOSK`] to an existing customer.
pub(super) fn binding(seq: u64, card: &str, customer: &str) -> CardBindingRecord {
    CardBindingRecord {
        id: Uuid::now_v7(),
        kiosk_id: KIOSK.into(),
        office_id: OFFICE.into(),
        seq,
        card: card.into(),
        customer_id: customer.into(),
        new_customer: None,
        by: "desk-1".into(),
        bound_at: time("2026-11-23T02:00:00.5Z"),
    }
}

/// A card bound at [`KIOSK`] to a walk-in registered with it: 李先生, received by E1.
pub(super) fn walk_in(seq: u64, card: &str, customer: &str, phone: &str) -> CardBindingRecord {
    CardBindingRecord {
        new_customer: Some(NewCustomer {
            name: "李小龙".into(),
            surname: "李".into(),
            title: "mr".into(),
            phone: phone.into(),
            source: "walk_in".into(),
            consultant_id: Some("E1".into()),
            consent: Consent {
                notice_version: "2026-01".into(),
                given_at: time("2026-11-23T01:59:30Z"),
            },
        }),
        ..binding(seq, card, customer)
    }
}

pub(super) fn revocation(seq: u64, card: &str, reason: Option<&str>) -> CardRevocationRecord {
    CardRevocationRecord {
        id: Uuid::now_v7(),
        kiosk_id: KIOSK.into(),
        office_id: OFFICE.into(),
        seq,
        card: card.into(),
        reason: reason.map(Into::into),
        by: "desk-1".into(),
        revoked_at: time("2026-11-23T03:00:00Z"),
    }
}

fn record(record: Record) -> Incoming {
    let raw = serde_json::to_string(&record).expect("serialize");
    Incoming::Record {
        record: Box::new(record),
        raw,
    }
}

fn reasons(reply: &BatchReply) -> Vec<String> {
    reply
        .items
        .iter()
        .map(|i| i.reason.clone().unwrap_or_default())
        .collect()
}

async fn all_changes(db: &HubDb, since: u64) -> Vec<RosterChange> {
    db.roster_changes(since, 10_000)
        .await
        .expect("read the log")
        .expect("cursor not expired")
        .changes
}

/// A change in a line: `upsert consultant E1`, `delete card nfc:01`.
fn summary(change: &RosterChange) -> String {
    match &change.op {
        RosterOp::Upsert { entry } => format!("upsert {} {}", entry.entity().as_str(), entry.key()),
        RosterOp::Delete { entity, key } => format!("delete {} {key}", entity.as_str()),
    }
}

fn summaries(changes: &[RosterChange]) -> Vec<String> {
    changes.iter().map(summary).collect()
}

fn conflict<T: std::fmt::Debug>(result: Result<T, HubStoreError>) -> Conflict {
    match result {
        Err(HubStoreError::Conflict(c)) => c,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn assert_increasing(changes: &[RosterChange]) {
    for pair in changes.windows(2) {
        assert!(
            pair[0].cursor < pair[1].cursor,
            "cursors out of order: {} then {}",
            pair[0].cursor,
            pair[1].cursor
        );
    }
}

// --- upstream ---

async fn new_records_are_inserted_once_and_replays_are_duplicates(hub: &Hub) {
    let db = &hub.db;
    db.add_kiosk(KIOSK, OFFICE, "hash")
        .await
        .expect("add kiosk");
    let batch = lines(KIOSK, 1..=5);

    let first = store(db, batch.clone()).await;
    assert_eq!(statuses(&first), vec![ItemStatus::Inserted; 5]);
    assert_eq!(
        first.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
        (1..=5).map(Some).collect::<Vec<_>>()
    );
    assert_eq!(first.high_water, 5);

    let again = store(db, batch.clone()).await;
    assert_eq!(statuses(&again), vec![ItemStatus::Duplicate; 5]);
    assert_eq!(again.high_water, 5);
    assert_eq!(db.record_count().await.expect("count"), 5);
    assert_eq!(
        db.kiosk(KIOSK)
            .await
            .expect("kiosk")
            .expect("exists")
            .high_water,
        5
    );

    let stored = db.records(KIOSK, 0, 100).await.expect("records");
    assert_eq!(stored.len(), 5);
    for (row, sent) in stored.iter().zip(&batch) {
        let Incoming::Record { record, raw } = sent else {
            unreachable!("the batch holds records only")
        };
        assert_eq!(row.id, record.id());
        assert_eq!(row.kiosk_id, KIOSK);
        assert_eq!(row.kind, "visit");
        assert_eq!(row.received_at, received_at());
        assert_eq!(
            row.body,
            serde_json::from_str::<serde_json::Value>(raw).expect("json")
        );
    }
    assert_eq!(
        stored.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    let tail = db.records(KIOSK, 3, 100).await.expect("records");
    assert_eq!(tail.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(db.records(KIOSK, 0, 2).await.expect("records").len(), 2);
    assert!(db.rejects(KIOSK).await.expect("rejects").is_empty());
}

async fn a_gap_holds_the_high_water_until_it_is_filled(hub: &Hub) {
    let db = &hub.db;
    db.add_kiosk(KIOSK, OFFICE, "hash")
        .await
        .expect("add kiosk");
    assert_eq!(store(db, lines(KIOSK, [2])).await.high_water, 0);
    assert_eq!(store(db, lines(KIOSK, [1, 4])).await.high_water, 2);
    let filled = store(db, lines(KIOSK, [3])).await;
    assert_eq!(statuses(&filled), vec![ItemStatus::Inserted]);
    assert_eq!(filled.high_water, 4);
    assert_eq!(
        db.kiosk(KIOSK)
            .await
            .expect("kiosk")
            .expect("exists")
            .high_water,
        4
    );
    // A run longer than one walk window, sent before its gap is filled.
    assert_eq!(store(db, lines(KIOSK, 6..=5000)).await.high_water, 4);
    assert_eq!(store(db, lines(KIOSK, [5])).await.high_water, 5000);
}

async fn a_reject_with_a_seq_counts_as_held(hub: &Hub) {
    let db = &hub.db;
    db.add_kiosk(KIOSK, OFFICE, "hash")
        .await
        .expect("add kiosk");
    let mut batch = lines(KIOSK, [1]);
    batch.push(reject(Some(2), "{\"kind\":\"visit\",\"seq\":2,"));
    batch.extend(lines(KIOSK, [3]));
    let reply = store(db, batch).await;
    assert_eq!(
        statuses(&reply),
        vec![
            ItemStatus::Inserted,
            ItemStatus::Rejected,
            ItemStatus::Inserted
        ]
    );
    assert_eq!(reply.items[1].seq, Some(2));
    assert_eq!(reply.items[1].reason.as_deref(), Some("not valid JSON"));
    assert_eq!(reply.high_water, 3);

    // Without a seq a reject holds nothing: 4 is still missing.
    let mut batch = vec![reject(None, "garbage")];
    batch.extend(lines(KIOSK, [5]));
    let reply = store(db, batch).await;
    assert_eq!(
        statuses(&reply),
        vec![ItemStatus::Rejected, ItemStatus::Inserted]
    );
    assert_eq!(reply.items[0].seq, None);
    assert_eq!(reply.high_water, 3);

    // A rejected 4 fills the gap; sent twice, it is kept once.
    for _ in 0..2 {
        let reply = store(db, vec![reject(Some(4), "{\"seq\":4")]).await;
        assert_eq!(statuses(&reply), vec![ItemStatus::Rejected]);
        assert_eq!(reply.high_water, 5);
    }
    let rejects = db.rejects(KIOSK).await.expect("rejects");
    assert_eq!(
        rejects.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![Some(2), None, Some(4)]
    );
    assert_eq!(rejects[1].raw, "garbage");
    assert_eq!(rejects[0].reason, "not valid JSON");
    assert_eq!(rejects[0].received_at, received_at());
    assert_eq!(db.record_count().await.expect("count"), 3);
}

/// A handheld that timed out at one kiosk and retried the same visit (same id) at
/// another: the copy is kept as a reject under the second kiosk's seq, so that kiosk's
/// high-water moves on instead of stopping below it for good.
async fn one_id_through_two_kiosks_is_stored_once_and_blocks_neither(hub: &Hub) {
    let db = &hub.db;
    for k in [KIOSK, "k2"] {
        db.add_kiosk(k, OFFICE, "hash").await.expect("add kiosk");
    }
    let original = visit(KIOSK, 1);
    store(db, vec![line(original.clone())]).await;
    let mut copy = original.clone();
    copy.kiosk_id = "k2".into();
    copy.seq = 1;
    for _ in 0..2 {
        let reply = db
            .store_batch("k2", vec![line(copy.clone())], received_at())
            .await
            .expect("store");
        assert_eq!(statuses(&reply), vec![ItemStatus::Rejected]);
        let reason = reply.items[0].reason.as_deref().expect("a reason");
        assert!(reason.contains("seq 1 of kiosk k1"), "{reason}");
        assert_eq!(reply.high_water, 1, "the copy's seq counts as held");
    }
    // The original kiosk's retry is still a plain duplicate.
    let reply = store(db, vec![line(original)]).await;
    assert_eq!(statuses(&reply), vec![ItemStatus::Duplicate]);
    assert_eq!(db.record_count().await.expect("count"), 1);
    assert_eq!(db.rejects("k2").await.expect("rejects").len(), 1);
}

/// After the hub's database is restored from an older backup, kiosks hold cursors it
/// never gave; new changes would be numbered below them and never reach them.
async fn a_cursor_from_the_future_takes_a_snapshot(hub: &Hub) {
    let db = &hub.db;
    db.upsert_consultant(consultant("E01", "李娜"))
        .await
        .expect("upsert");
    let page = db
        .roster_changes(0, 10)
        .await
        .expect("page")
        .expect("not expired");
    let head = page.next;
    assert!(db.roster_changes(head, 10).await.expect("page").is_ok());
    assert!(
        db.roster_changes(head + 5, 10)
            .await
            .expect("page")
            .is_err(),
        "a cursor beyond the head is refused"
    );
}

async fn a_record_reusing_a_held_seq_is_rejected_naming_the_holder(hub: &Hub) {
    let db = &hub.db;
    db.add_kiosk(KIOSK, OFFICE, "hash")
        .await
        .expect("add kiosk");
    let first = visit(KIOSK, 1);
    let holder = first.id;
    store(db, vec![line(first)]).await;

    let usurper = visit(KIOSK, 1);
    let usurper_line = line(usurper.clone());
    for _ in 0..2 {
        let reply = store(db, vec![usurper_line.clone()]).await;
        assert_eq!(statuses(&reply), vec![ItemStatus::Rejected]);
        assert_eq!(reply.items[0].seq, Some(1));
        let reason = reply.items[0].reason.as_deref().expect("a reason");
        assert!(reason.contains(&holder.to_string()), "{reason}");
        assert!(reason.contains("seq 1 of kiosk k1"), "{reason}");
        assert_eq!(reply.high_water, 1);
    }
    let rejects = db.rejects(KIOSK).await.expect("rejects");
    assert_eq!(rejects.len(), 1, "a retried reject is kept once");
    let Incoming::Record { raw, .. } = &usurper_line else {
        unreachable!("a record line")
    };
    assert_eq!(&rejects[0].raw, raw);
    assert_eq!(rejects[0].seq, Some(1));

    // Within one batch: a seq claimed twice, and one id sent twice.
    let second = visit(KIOSK, 2);
    let rival = visit(KIOSK, 2);
    let third = visit(KIOSK, 3);
    let reply = store(
        db,
        vec![
            line(second.clone()),
            line(rival),
            line(third.clone()),
            line(third),
        ],
    )
    .await;
    assert_eq!(
        statuses(&reply),
        vec![
            ItemStatus::Inserted,
            ItemStatus::Rejected,
            ItemStatus::Inserted,
            ItemStatus::Duplicate
        ]
    );
    let reason = reply.items[1].reason.as_deref().expect("a reason");
    assert!(reason.contains(&second.id.to_string()), "{reason}");
    assert_eq!(reply.high_water, 3);
    assert_eq!(db.record_count().await.expect("count"), 3);
    let stored = db.records(KIOSK, 0, 10).await.expect("records");
    assert_eq!(stored[0].id, holder);
    assert_eq!(stored[1].id, second.id);
}

async fn a_line_no_database_can_hold_is_rejected_not_fatal(hub: &Hub) {
    let db = &hub.db;
    db.add_kiosk(KIOSK, OFFICE, "hash")
        .await
        .expect("add kiosk");
    let mut nul = visit(KIOSK, 1);
    nul.customer_id = Some("C\u{0}1".into());
    let huge = visit(KIOSK, u64::MAX);
    let batch = vec![
        line(nul),
        line(huge),
        line(visit(KIOSK, 2)),
        reject(Some(3), "{\"seq\":3,\u{0}"),
    ];
    let reply = store(db, batch.clone()).await;
    assert_eq!(
        statuses(&reply),
        vec![
            ItemStatus::Rejected,
            ItemStatus::Rejected,
            ItemStatus::Inserted,
            ItemStatus::Rejected
        ]
    );
    assert_eq!(reply.items[1].seq, Some(u64::MAX));
    assert_eq!(reply.high_water, 3, "the rejected seq 1 is held");
    assert_eq!(statuses(&store(db, batch).await)[2], ItemStatus::Duplicate);
    let rejects = db.rejects(KIOSK).await.expect("rejects");
    // A reject without a storable seq has no key to know a retry by: kept each time.
    assert_eq!(
        rejects.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![Some(1), None, Some(3), None]
    );
    assert_eq!(rejects[2].raw, "{\"seq\":3,\u{FFFD}");
}

async fn kiosks_are_added_once_and_revoked_once(hub: &Hub) {
    let db = &hub.db;
    let unknown = db.store_batch("k9", lines("k9", [1]), received_at()).await;
    assert!(
        matches!(
            unknown,
            Err(HubStoreError::NotFound {
                entity: "kiosk",
                ..
            })
        ),
        "{unknown:?}"
    );

    db.add_kiosk(KIOSK, OFFICE, "hash1")
        .await
        .expect("add kiosk");
    db.add_kiosk("~admin", "", "hash0")
        .await
        .expect("add admin");
    assert_eq!(
        conflict(db.add_kiosk(KIOSK, "o2", "hash2").await),
        Conflict::KioskExists { id: KIOSK.into() }
    );
    let row = db.kiosk(KIOSK).await.expect("kiosk").expect("exists");
    assert_eq!(
        (
            row.id.as_str(),
            row.office_id.as_str(),
            row.token_hash.as_str(),
            row.high_water
        ),
        (KIOSK, OFFICE, "hash1", 0)
    );
    let ids: Vec<String> = db
        .kiosks()
        .await
        .expect("kiosks")
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, vec!["k1", "~admin"]);

    store(db, lines(KIOSK, [1, 2])).await;
    db.revoke_kiosk(KIOSK).await.expect("revoke");
    assert!(db.kiosk(KIOSK).await.expect("kiosk").is_none());
    assert!(matches!(
        db.revoke_kiosk(KIOSK).await,
        Err(HubStoreError::NotFound {
            entity: "kiosk",
            ..
        })
    ));
    assert_eq!(db.record_count().await.expect("count"), 2, "records stay");
    // A token issued again starts a new row; the records are still there.
    db.add_kiosk(KIOSK, OFFICE, "hash3")
        .await
        .expect("add again");
    assert_eq!(db.records(KIOSK, 0, 10).await.expect("records").len(), 2);
}

// --- roster ---

async fn roster_changes_follow_commit_order_and_page(hub: &Hub) {
    let db = &hub.db;
    db.upsert_consultant(consultant("E1", "李娜"))
        .await
        .expect("consultant");
    let c1 = customer("C1", Some("13800000001"), Some("E1"));
    db.upsert_customer(c1.clone()).await.expect("customer");
    db.upsert_card(card("nfc:01", "C1", "active"))
        .await
        .expect("card");
    db.upsert_broker(broker("B1")).await.expect("broker");
    db.upsert_consultant(consultant("E1", "李娜娜"))
        .await
        .expect("rename");
    db.delete(Entity::Broker, "B1")
        .await
        .expect("delete broker");

    let page = db
        .roster_changes(0, 100)
        .await
        .expect("read")
        .expect("fresh");
    assert_eq!(
        summaries(&page.changes),
        vec![
            "upsert consultant E1",
            "upsert customer C1",
            "upsert card nfc:01",
            "upsert broker B1",
            "upsert consultant E1",
            "delete broker B1",
        ]
    );
    assert_increasing(&page.changes);
    assert_eq!(page.next, page.changes[5].cursor);
    assert!(!page.more);
    assert_eq!(
        page.changes[1].op,
        RosterOp::Upsert {
            entry: RosterEntry::Customer(c1.kiosk_entry())
        }
    );
    assert_eq!(
        page.changes[4].op,
        RosterOp::Upsert {
            entry: RosterEntry::Consultant(consultant("E1", "李娜娜"))
        }
    );

    // Paging: 4, then 2, then nothing.
    let all = page.changes;
    let first = db.roster_changes(0, 4).await.expect("read").expect("fresh");
    assert_eq!(first.changes, all[..4]);
    assert_eq!((first.next, first.more), (all[3].cursor, true));
    let second = db
        .roster_changes(first.next, 4)
        .await
        .expect("read")
        .expect("fresh");
    assert_eq!(second.changes, all[4..]);
    assert_eq!((second.next, second.more), (all[5].cursor, false));
    let third = db
        .roster_changes(second.next, 4)
        .await
        .expect("read")
        .expect("fresh");
    assert!(third.changes.is_empty());
    assert_eq!((third.next, third.more), (second.next, false));
    // Exactly a page's worth left: no `more`.
    let exact = db
        .roster_changes(all[1].cursor, 4)
        .await
        .expect("read")
        .expect("fresh");
    assert_eq!((exact.changes.len(), exact.more), (4, false));
    // A limit of 0 still serves one change; the head itself is an empty page; a cursor
    // past the head was never given (see a_cursor_from_the_future_takes_a_snapshot).
    let one = db.roster_changes(0, 0).await.expect("read").expect("fresh");
    assert_eq!((one.changes.len(), one.more), (1, true));
    let head = exact.next;
    let at_head = db
        .roster_changes(head, 10)
        .await
        .expect("read")
        .expect("fresh");
    assert!(at_head.changes.is_empty());
    assert_eq!((at_head.next, at_head.more), (head, false));
    assert!(
        db.roster_changes(1_000_000, 10)
            .await
            .expect("read")
            .is_err()
    );
}

async fn an_unchanged_upsert_is_not_logged(hub: &Hub) {
    let db = &hub.db;
    let roster = RosterImport {
        consultants: vec![consultant("E1", "李娜")],
        customers: vec![customer("C1", Some("13800000001"), Some("E1"))],
        cards: vec![card("nfc:01", "C1", "active")],
        brokers: vec![broker("B1")],
        registrations: vec![registration("C1", "B1")],
    };
    for _ in 0..2 {
        db.upsert_consultant(roster.consultants[0].clone())
            .await
            .expect("consultant");
        db.upsert_customer(roster.customers[0].clone())
            .await
            .expect("customer");
        db.upsert_card(roster.cards[0].clone()).await.expect("card");
        db.upsert_broker(roster.brokers[0].clone())
            .await
            .expect("broker");
        db.upsert_registration(roster.registrations[0].clone())
            .await
            .expect("registration");
    }
    assert_eq!(all_changes(db, 0).await.len(), 5);
    assert_eq!(
        db.import(roster.clone()).await.expect("import"),
        ImportCounts::default()
    );
    assert_eq!(all_changes(db, 0).await.len(), 5);

    // A change to a field kiosks never see is still a change (it is logged once).
    let mut renamed = roster.customers[0].clone();
    renamed.name = None;
    db.upsert_customer(renamed.clone()).await.expect("customer");
    db.upsert_customer(renamed).await.expect("customer");
    let mut noted = roster.cards[0].clone();
    noted.note = Some("lost once".into());
    db.upsert_card(noted.clone()).await.expect("card");
    db.upsert_card(noted.clone()).await.expect("card");
    assert_eq!(
        summaries(&all_changes(db, 0).await)[5..],
        ["upsert customer C1", "upsert card nfc:01"]
    );
    assert_eq!(db.card("nfc:01").await.expect("card"), Some(noted));
}

async fn deleting_a_customer_tombstones_their_cards_first(hub: &Hub) {
    let db = &hub.db;
    db.import(RosterImport {
        consultants: vec![consultant("E1", "李娜")],
        customers: vec![
            customer("C1", Some("13800000001"), Some("E1")),
            customer("C2", None, None),
        ],
        cards: vec![
            card("nfc:02", "C1", "active"),
            card("nfc:01", "C1", "revoked"),
            card("nfc:03", "C2", "active"),
        ],
        brokers: vec![broker("B1")],
        registrations: vec![registration("C1", "B1")],
    })
    .await
    .expect("import");
    let before = all_changes(db, 0).await;
    let last = before.last().expect("changes").cursor;

    db.delete(Entity::Customer, "C1").await.expect("delete");
    let after = all_changes(db, last).await;
    assert_eq!(
        summaries(&after),
        vec![
            "delete card nfc:01",
            "delete card nfc:02",
            "delete registration C1",
            "delete customer C1"
        ]
    );
    assert_increasing(&after);
    assert!(db.customer("C1").await.expect("read").is_none());
    assert!(db.card("nfc:01").await.expect("read").is_none());
    assert!(db.card("nfc:03").await.expect("read").is_some());
    assert!(db.registration("C1").await.expect("read").is_none());

    for (entity, key) in [
        (Entity::Customer, "C1"),
        (Entity::Card, "nfc:09"),
        (Entity::Consultant, "E9"),
        (Entity::Broker, "B9"),
        (Entity::Registration, "C1"),
    ] {
        let result = db.delete(entity, key).await;
        assert!(
            matches!(&result, Err(HubStoreError::NotFound { entity: e, key: k }) if *e == entity.as_str() && k == key),
            "{result:?}"
        );
    }
    db.delete(Entity::Card, "nfc:03")
        .await
        .expect("delete card");
    db.delete(Entity::Broker, "B1")
        .await
        .expect("delete broker");
    db.delete(Entity::Customer, "C2")
        .await
        .expect("delete customer");
    db.delete(Entity::Consultant, "E1")
        .await
        .expect("delete consultant");
    assert_eq!(
        summaries(&all_changes(db, last).await)[4..],
        [
            "delete card nfc:03",
            "delete broker B1",
            "delete customer C2",
            "delete consultant E1"
        ]
    );
}

async fn roster_rules_refuse_with_ids(hub: &Hub) {
    let db = &hub.db;
    db.upsert_consultant(consultant("E1", "李娜"))
        .await
        .expect("consultant");
    db.upsert_customer(customer("C1", Some("13800000001"), Some("E1")))
        .await
        .expect("customer");
    db.upsert_customer(customer("C2", None, None))
        .await
        .expect("customer");
    db.upsert_card(card("nfc:01", "C1", "active"))
        .await
        .expect("card");
    let logged = all_changes(db, 0).await.len();

    let taken = conflict(
        db.upsert_customer(customer("C2", Some("13800000001"), None))
            .await,
    );
    assert_eq!(
        taken,
        Conflict::PhoneTaken {
            existing: "C1".into()
        }
    );
    let message = taken.to_string();
    assert!(
        !message.contains('张') && !message.contains("138"),
        "{message}"
    );
    assert_eq!(
        conflict(db.upsert_customer(customer("C3", None, Some("E9"))).await),
        Conflict::Missing {
            entity: "consultant",
            key: "E9".into()
        }
    );
    assert_eq!(
        conflict(db.upsert_card(card("nfc:09", "C9", "active")).await),
        Conflict::Missing {
            entity: "customer",
            key: "C9".into()
        }
    );
    assert_eq!(
        conflict(db.upsert_card(card("nfc:01", "C2", "active")).await),
        Conflict::CardTaken {
            token: "nfc:01".into(),
            existing: "C1".into()
        }
    );
    assert_eq!(
        conflict(db.delete(Entity::Consultant, "E1").await),
        Conflict::ConsultantInUse {
            id: "E1".into(),
            customers: 1
        }
    );
    assert_eq!(
        all_changes(db, 0).await.len(),
        logged,
        "refusals log nothing"
    );
    assert_eq!(
        db.customer("C2")
            .await
            .expect("read")
            .expect("exists")
            .phone,
        None
    );

    // Keeping one's own phone is fine; a revoked card may move; revoking is fine.
    db.upsert_customer(customer("C1", Some("13800000001"), None))
        .await
        .expect("same phone, same customer");
    db.upsert_card(card("nfc:01", "C1", "revoked"))
        .await
        .expect("revoke");
    db.upsert_card(card("nfc:01", "C2", "active"))
        .await
        .expect("move");
    db.upsert_card(card("nfc:01", "C1", "revoked"))
        .await
        .expect("an inactive value never takes a card");
    assert_eq!(
        db.card("nfc:01").await.expect("read"),
        Some(card("nfc:01", "C1", "revoked"))
    );
    db.delete(Entity::Consultant, "E1")
        .await
        .expect("no longer in use");
}

async fn an_import_is_all_or_nothing(hub: &Hub) {
    let db = &hub.db;
    let good = RosterImport {
        consultants: vec![consultant("E1", "李娜"), consultant("E2", "王强")],
        customers: vec![
            customer("C1", Some("13800000001"), Some("E1")),
            customer("C2", Some("13800000002"), Some("E2")),
        ],
        cards: vec![
            card("nfc:01", "C1", "active"),
            card("nfc:02", "C2", "active"),
        ],
        brokers: vec![broker("B1")],
        registrations: vec![registration("C2", "B1")],
    };
    let mut phone_twice = good.clone();
    phone_twice
        .customers
        .push(customer("C3", Some("13800000002"), None));
    assert_eq!(
        conflict(db.import(phone_twice).await),
        Conflict::PhoneTaken {
            existing: "C2".into()
        }
    );
    let mut orphan_card = good.clone();
    orphan_card.cards.push(card("nfc:03", "C9", "active"));
    assert_eq!(
        conflict(db.import(orphan_card).await),
        Conflict::Missing {
            entity: "customer",
            key: "C9".into()
        }
    );
    let mut unknown_broker = good.clone();
    unknown_broker.registrations.push(registration("C1", "B9"));
    assert_eq!(
        conflict(db.import(unknown_broker).await),
        Conflict::Missing {
            entity: "broker",
            key: "B9".into()
        }
    );
    assert!(all_changes(db, 0).await.is_empty(), "nothing logged");
    assert!(db.customer("C1").await.expect("read").is_none());
    assert!(db.card("nfc:01").await.expect("read").is_none());
    let snapshot = db.roster_snapshot().await.expect("snapshot");
    let head = read_snapshot(&snapshot[..], |_| Ok(())).expect("read snapshot");
    assert_eq!((head.cursor, head.entries), (0, 0), "nothing stored");

    assert_eq!(
        db.import(good).await.expect("import"),
        ImportCounts {
            consultants: 2,
            customers: 2,
            cards: 2,
            brokers: 1,
            registrations: 1,
        }
    );
    let changes = all_changes(db, 0).await;
    assert_eq!(
        summaries(&changes),
        vec![
            "upsert consultant E1",
            "upsert consultant E2",
            "upsert customer C1",
            "upsert customer C2",
            "upsert card nfc:01",
            "upsert card nfc:02",
            "upsert broker B1",
            "upsert registration C2",
        ]
    );
    assert_increasing(&changes);
    assert_eq!(
        db.customer("C2").await.expect("read"),
        Some(customer("C2", Some("13800000002"), Some("E2")))
    );
    assert_eq!(
        db.registration("C2").await.expect("read"),
        Some(registration("C2", "B1"))
    );
}

async fn pruning_expires_old_cursors(hub: &Hub) {
    let db = &hub.db;
    db.upsert_consultant(consultant("E1", "李娜"))
        .await
        .expect("consultant");
    db.upsert_consultant(consultant("E2", "王强"))
        .await
        .expect("consultant");
    let changes = all_changes(db, 0).await;
    let (c1, c2) = (changes[0].cursor, changes[1].cursor);

    let long_ago: jiff::Timestamp = "2000-01-01T00:00:00Z".parse().expect("time");
    assert_eq!(db.prune_roster_log(long_ago).await.expect("prune"), 0);
    assert_eq!(all_changes(db, 0).await.len(), 2, "nothing that old");

    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    assert_eq!(db.prune_roster_log(later).await.expect("prune"), 2);
    for since in [0, c1] {
        assert_eq!(
            db.roster_changes(since, 10).await.expect("read"),
            Err(crate::wire::CursorExpired { oldest: c2 })
        );
    }
    let page = db
        .roster_changes(c2, 10)
        .await
        .expect("read")
        .expect("kept");
    assert!(page.changes.is_empty());
    assert_eq!(page.next, c2);

    // A snapshot taken now still names the last cursor, though the log is empty.
    let snapshot = db.roster_snapshot().await.expect("snapshot");
    let head = read_snapshot(&snapshot[..], |_| Ok(())).expect("read snapshot");
    assert_eq!((head.cursor, head.entries), (c2, 2));

    db.upsert_consultant(consultant("E3", "赵敏"))
        .await
        .expect("consultant");
    let page = db
        .roster_changes(c2, 10)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(summaries(&page.changes), vec!["upsert consultant E3"]);
    assert!(page.changes[0].cursor > c2, "cursors are never reused");
    assert_eq!(db.prune_roster_log(long_ago).await.expect("prune"), 0);
    assert!(
        db.roster_changes(c2, 10).await.expect("read").is_ok(),
        "pruned_upto never goes back"
    );
}

async fn a_snapshot_round_trips_without_private_fields(hub: &Hub) {
    let db = &hub.db;
    let empty = db.roster_snapshot().await.expect("snapshot");
    let head = read_snapshot(&empty[..], |_| Ok(())).expect("read snapshot");
    assert_eq!((head.cursor, head.entries), (0, 0));

    let customers = vec![
        HubCustomer {
            source: Some("broker".into()),
            last_follow_up: Some(time("2026-11-20T03:00:00.25Z")),
            ..customer("C1", Some("13800000001"), Some("E1"))
        },
        customer("C2", Some("13900000002"), None),
    ];
    db.import(RosterImport {
        consultants: vec![consultant("E1", "李娜"), consultant("E2", "王强")],
        customers: customers.clone(),
        cards: vec![
            card("nfc:01", "C1", "active"),
            CardEntry {
                low24_only: true,
                note: Some("DEZ8".into()),
                ..card("em:00ABCDEF", "C2", "active")
            },
        ],
        brokers: vec![broker("B1")],
        registrations: vec![RegistrationEntry {
            expires_at: None,
            ..registration("C1", "B1")
        }],
    })
    .await
    .expect("import");
    db.upsert_consultant(consultant("E3", "赵敏"))
        .await
        .expect("consultant");
    db.delete(Entity::Consultant, "E3").await.expect("delete");
    let latest = all_changes(db, 0).await.last().expect("changes").cursor;

    let snapshot = db.roster_snapshot().await.expect("snapshot");
    let mut entries = Vec::new();
    let head = read_snapshot(&snapshot[..], |e| {
        entries.push(e);
        Ok(())
    })
    .expect("read snapshot");
    assert_eq!(head.cursor, latest);
    assert_eq!(head.entries, 8);
    assert_eq!(
        entries,
        vec![
            RosterEntry::Consultant(consultant("E1", "李娜")),
            RosterEntry::Consultant(consultant("E2", "王强")),
            RosterEntry::Customer(customers[0].kiosk_entry()),
            RosterEntry::Customer(customers[1].kiosk_entry()),
            RosterEntry::Card(CardEntry {
                low24_only: true,
                note: Some("DEZ8".into()),
                ..card("em:00ABCDEF", "C2", "active")
            }),
            RosterEntry::Card(card("nfc:01", "C1", "active")),
            RosterEntry::Broker(broker("B1")),
            RosterEntry::Registration(RegistrationEntry {
                expires_at: None,
                ..registration("C1", "B1")
            }),
        ]
    );
    let text = crate::wire::gunzip(&snapshot, 1 << 20).expect("gunzip");
    let text = String::from_utf8(text).expect("utf-8");
    assert!(
        !text.contains("138000") && !text.contains("张伟明"),
        "no phone or full name: {text}"
    );
}

async fn day_report_counts_one_office_visit_per_customer(hub: &Hub) {
    let db = &hub.db;
    for kiosk in ["k1", "k2"] {
        db.add_kiosk(kiosk, OFFICE, "hash")
            .await
            .expect("add kiosk");
    }
    let at = |kiosk: &str, seq: u64, customer: Option<&str>, outcome: Outcome, day: &str| {
        let mut v = visit(kiosk, seq);
        v.customer_id = customer.map(Into::into);
        v.outcome = outcome;
        v.office_day = Some(day.into());
        line(v)
    };
    let mut handheld = visit("k1", 2);
    handheld.source = "pda-7".into();
    handheld.method = Method::Manual;
    let k1 = vec![
        at("k1", 1, Some("C1"), Outcome::Welcome, DAY),
        line(handheld),
        at("k1", 3, None, Outcome::Unknown, DAY),
        at("k1", 4, Some("C3"), Outcome::Denied, DAY),
        at("k1", 5, Some("C1"), Outcome::Welcome, "2026-11-24"),
    ];
    let k2 = vec![
        at("k2", 1, Some("C1"), Outcome::Welcome, DAY),
        at("k2", 2, Some("C2"), Outcome::Welcome, DAY),
        // A broker's customer confirmed at the door (确客) is an office visit too,
        // and still one per customer per day.
        at("k2", 3, Some("C4"), Outcome::BrokerConfirmed, DAY),
        at("k2", 4, Some("C1"), Outcome::BrokerConfirmed, DAY),
    ];
    db.store_batch("k1", k1, received_at()).await.expect("k1");
    db.store_batch("k2", k2, received_at()).await.expect("k2");
    let mut elsewhere = visit("k3", 1);
    elsewhere.office_id = "o2".into();
    db.add_kiosk("k3", "o2", "hash").await.expect("add kiosk");
    db.store_batch("k3", vec![line(elsewhere)], received_at())
        .await
        .expect("k3");

    let report = db.day_report(OFFICE, DAY).await.expect("report");
    assert_eq!((report.records, report.office_visits), (8, 3));
    let next_day = db.day_report(OFFICE, "2026-11-24").await.expect("report");
    assert_eq!((next_day.records, next_day.office_visits), (1, 1));
    let other = db.day_report("o2", DAY).await.expect("report");
    assert_eq!((other.records, other.office_visits), (1, 1));
    let none = db.day_report(OFFICE, "2026-11-25").await.expect("report");
    assert_eq!((none.records, none.office_visits), (0, 0));
}

// --- several hub processes on one database ---

async fn two_hubs_store_the_same_batches_once(hub: &Hub) {
    let (one, two) = (&hub.db, &hub.another().await);
    one.add_kiosk(KIOSK, OFFICE, "hash")
        .await
        .expect("add kiosk");
    for b in 0..20u64 {
        let batch = lines(KIOSK, b * 100 + 1..=b * 100 + 100);
        let (a, z) = tokio::join!(
            one.store_batch(KIOSK, batch.clone(), received_at()),
            two.store_batch(KIOSK, batch, received_at()),
        );
        let (a, z) = (a.expect("first hub"), z.expect("second hub"));
        for (x, y) in a.items.iter().zip(&z.items) {
            assert_eq!(x.seq, y.seq);
            let mut pair = [x.status, y.status];
            pair.sort_by_key(|s| *s == ItemStatus::Duplicate);
            assert_eq!(
                pair,
                [ItemStatus::Inserted, ItemStatus::Duplicate],
                "seq {:?}",
                x.seq
            );
        }
        assert_eq!((a.high_water, z.high_water), (b * 100 + 100, b * 100 + 100));
    }
    assert_eq!(one.record_count().await.expect("count"), 2000);
    assert_eq!(
        two.kiosk(KIOSK)
            .await
            .expect("kiosk")
            .expect("exists")
            .high_water,
        2000
    );
}

async fn concurrent_roster_writers_keep_cursor_order(hub: &Hub) {
    let (reader, other) = (hub.another().await, hub.another().await);
    let write = |db: HubDb, prefix: &'static str| async move {
        for i in 0..15 {
            let id = format!("{prefix}{i}");
            db.upsert_consultant(consultant(&format!("E{id}"), "李娜"))
                .await
                .expect("consultant");
            db.upsert_customer(customer(&format!("C{id}"), None, Some(&format!("E{id}"))))
                .await
                .expect("customer");
            db.upsert_card(card(&format!("nfc:{id}"), &format!("C{id}"), "active"))
                .await
                .expect("card");
        }
    };
    // A kiosk's card bindings change the roster from inside its batches' transactions.
    let kiosk = hub.another().await;
    kiosk
        .add_kiosk(KIOSK, OFFICE, "hash")
        .await
        .expect("add kiosk");
    let bind = |db: HubDb| async move {
        for seq in 1..=15u64 {
            let phone = format!("1390000{seq:04}");
            let bound = walk_in(seq, &format!("nfc:{seq:02X}"), &format!("w-{seq}"), &phone);
            let reply = db
                .store_batch(
                    KIOSK,
                    vec![record(Record::CardBinding(bound))],
                    received_at(),
                )
                .await
                .expect("store a binding");
            assert_eq!(statuses(&reply), vec![ItemStatus::Inserted]);
        }
    };
    let finished = AtomicBool::new(false);
    let writers = async {
        tokio::join!(write(hub.db.clone(), "a"), write(other, "b"), bind(kiosk));
        finished.store(true, Ordering::SeqCst);
    };
    let paging = async {
        let (mut seen, mut next) = (Vec::new(), 0);
        loop {
            // Read before paging: once the writers are done, one more full pass runs.
            let done = finished.load(Ordering::SeqCst);
            let page = reader
                .roster_changes(next, 7)
                .await
                .expect("read")
                .expect("fresh");
            seen.extend(page.changes);
            next = page.next;
            if done && !page.more {
                break seen;
            }
            tokio::task::yield_now().await;
        }
    };
    let ((), seen) = tokio::join!(writers, paging);
    let log = all_changes(&reader, 0).await;
    assert_eq!(log.len(), 120);
    assert_increasing(&log);
    assert_eq!(
        summaries(&seen),
        summaries(&log),
        "the reader missed or repeated a change"
    );
    assert_eq!(seen, log);
}

async fn a_newer_schema_is_refused_and_a_current_one_reopened(hub: &Hub) {
    hub.db
        .add_kiosk(KIOSK, OFFICE, "hash")
        .await
        .expect("add kiosk");
    // Two hubs starting together agree on the schema.
    let (a, b) = tokio::join!(HubDb::open(&hub.target), HubDb::open(&hub.target));
    let (a, _b) = (a.expect("reopen"), b.expect("reopen"));
    assert!(a.kiosk(KIOSK).await.expect("kiosk").is_some());

    let bump = "UPDATE meta SET value = 99 WHERE key = 'schema_version'";
    if hub.is_postgres() {
        let client = admin_client(&hub.target).await;
        client.batch_execute(bump).await.expect("bump version");
    } else {
        let path = hub.target.trim_start_matches("sqlite:");
        let conn = rusqlite::Connection::open(path).expect("open file");
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .expect("busy timeout");
        conn.execute_batch(bump).expect("bump version");
    }
    match HubDb::open(&hub.target).await {
        Err(HubStoreError::TooNew { found, supported }) => assert_eq!((found, supported), (99, 2)),
        other => panic!("expected TooNew, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_postgres_fails_with_a_hint() {
    // Port 1 on loopback: nothing listens there.
    let err = HubDb::open("postgres://kiosk:secret@127.0.0.1:1/hub")
        .await
        .expect_err("nothing listens there");
    let message = err.to_string();
    assert!(message.contains("PostgreSQL is running"), "{message}");
    assert!(message.contains("refused"), "the cause is shown: {message}");
    assert!(!message.contains("secret"), "{message}");
}

// --- schema ---

/// A hub database written by the first release (schema 1), with data in every table
/// that version 2 touches, is upgraded in place by opening it.
async fn a_version_1_database_is_migrated_in_place(hub: &Hub) {
    const V1_ROWS: &str = "
        INSERT INTO consultants (id, name) VALUES ('E1', '李娜');
        INSERT INTO customers (id, name, surname, title, tier, phone, consultant_id)
            VALUES ('C1', '张伟明', '张', 'mr', 'gold', '13800000001', 'E1');
        INSERT INTO cards (token, customer_id, status) VALUES ('nfc:01', 'C1', 'active');
        INSERT INTO brokers (id, name) VALUES ('B1', '王芳');";
    let log_row = serde_json::to_string(&RosterEntry::Customer(
        customer("C1", Some("13800000001"), Some("E1")).kiosk_entry(),
    ))
    .expect("json");
    let (target, _place) = if hub.is_postgres() {
        let database = PgDatabase::create().await;
        let client = admin_client(&database.url).await;
        client
            .batch_execute(&format!(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
                 {}
                 {V1_ROWS}
                 INSERT INTO kiosks (id, office_id, token_hash, high_water) VALUES ('k1', 'o1', 'hash', 3);
                 INSERT INTO roster_log (entity, key, body, changed_at)
                     VALUES ('customer', 'C1', '{log_row}', now());",
                super::postgres::SCHEMA_V1
            ))
            .await
            .expect("write a version 1 database");
        (
            database.url.clone(),
            Place::Postgres {
                _database: database,
            },
        )
    } else {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hub.db");
        let conn = rusqlite::Connection::open(&path).expect("create the file");
        conn.execute_batch(&format!(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
             {}
             {V1_ROWS}
             INSERT INTO kiosks (id, office_id, token_hash, high_water, created_at)
                 VALUES ('k1', 'o1', 'hash', 3, 0);
             INSERT INTO roster_log (entity, key, body, changed_at)
                 VALUES ('customer', 'C1', '{log_row}', 0);",
            super::sqlite::SCHEMA_V1
        ))
        .expect("write a version 1 file");
        drop(conn);
        (
            format!("sqlite:{}", path.display()),
            Place::Sqlite { _dir: dir },
        )
    };

    let db = HubDb::open(&target).await.expect("open and migrate");
    assert_eq!(
        db.customer("C1").await.expect("read"),
        Some(customer("C1", Some("13800000001"), Some("E1"))),
        "kept, with no source or follow-up yet"
    );
    assert_eq!(
        db.card("nfc:01").await.expect("read"),
        Some(card("nfc:01", "C1", "active"))
    );
    assert_eq!(
        db.kiosk(KIOSK)
            .await
            .expect("read")
            .expect("kept")
            .high_water,
        3
    );
    let old = all_changes(&db, 0).await;
    assert_eq!(summaries(&old), vec!["upsert customer C1"]);

    // What version 2 adds works on the migrated database.
    db.upsert_registration(registration("C1", "B1"))
        .await
        .expect("registration");
    db.upsert_customer(HubCustomer {
        source: Some("broker".into()),
        ..customer("C1", Some("13800000001"), Some("E1"))
    })
    .await
    .expect("customer with a source");
    assert_eq!(
        db.delete(Entity::Broker, "B1").await.map_err(conflict_of),
        Err(Some(Conflict::BrokerInUse {
            id: "B1".into(),
            registrations: 1
        }))
    );
    assert_eq!(
        summaries(&all_changes(&db, 0).await),
        vec![
            "upsert customer C1",
            "upsert registration C1",
            "upsert customer C1"
        ]
    );
    let snapshot = db.roster_snapshot().await.expect("snapshot");
    let head = read_snapshot(&snapshot[..], |_| Ok(())).expect("read snapshot");
    assert_eq!(head.entries, 5);

    // Opening again finds version 2 and changes nothing.
    drop(db);
    let again = HubDb::open(&target).await.expect("reopen");
    assert_eq!(all_changes(&again, 0).await.len(), 3);
}

fn conflict_of(e: HubStoreError) -> Option<Conflict> {
    match e {
        HubStoreError::Conflict(c) => Some(c),
        _ => None,
    }
}

// --- reception: customers' source, registrations ---

async fn customers_carry_source_and_last_follow_up_to_kiosks(hub: &Hub) {
    let db = &hub.db;
    db.upsert_consultant(consultant("E1", "李娜"))
        .await
        .expect("consultant");
    let sent = HubCustomer {
        source: Some("phone".into()),
        // Nanoseconds: more than either database keeps.
        last_follow_up: Some(time("2026-11-20T03:00:00.123456789Z")),
        ..customer("C1", Some("13800000001"), Some("E1"))
    };
    let kept = HubCustomer {
        last_follow_up: Some(time("2026-11-20T03:00:00.123456Z")),
        ..sent.clone()
    };
    db.upsert_customer(sent.clone()).await.expect("customer");
    db.upsert_customer(sent.clone()).await.expect("again");
    assert_eq!(db.customer("C1").await.expect("read"), Some(kept.clone()));

    let changes = all_changes(db, 0).await;
    assert_eq!(
        summaries(&changes),
        vec!["upsert consultant E1", "upsert customer C1"],
        "an unchanged customer is not logged again"
    );
    let RosterOp::Upsert {
        entry: RosterEntry::Customer(entry),
    } = &changes[1].op
    else {
        panic!("a customer upsert: {:?}", changes[1])
    };
    assert_eq!(entry.source.as_deref(), Some("phone"));
    assert_eq!(entry.last_follow_up, kept.last_follow_up);

    // A new follow-up alone is a change the kiosks need.
    let followed_up = HubCustomer {
        last_follow_up: Some(time("2026-11-22T08:00:00Z")),
        ..kept.clone()
    };
    db.upsert_customer(followed_up.clone())
        .await
        .expect("follow-up");
    let mut entries = Vec::new();
    let snapshot = db.roster_snapshot().await.expect("snapshot");
    read_snapshot(&snapshot[..], |e| {
        entries.push(e);
        Ok(())
    })
    .expect("read snapshot");
    assert_eq!(
        entries[1],
        RosterEntry::Customer(followed_up.kiosk_entry()),
        "the snapshot says what the log said"
    );
    assert_eq!(all_changes(db, 0).await.len(), 3);
}

async fn registrations_are_checked_logged_and_tombstoned(hub: &Hub) {
    let db = &hub.db;
    db.import(RosterImport {
        customers: vec![customer("C1", None, None), customer("C2", None, None)],
        cards: vec![card("nfc:01", "C1", "active")],
        brokers: vec![broker("B1"), broker("B2")],
        ..RosterImport::default()
    })
    .await
    .expect("import");
    let start = all_changes(db, 0).await.last().expect("changes").cursor;

    assert_eq!(
        conflict(db.upsert_registration(registration("C9", "B1")).await),
        Conflict::Missing {
            entity: "customer",
            key: "C9".into()
        }
    );
    assert_eq!(
        conflict(db.upsert_registration(registration("C1", "B9")).await),
        Conflict::Missing {
            entity: "broker",
            key: "B9".into()
        }
    );
    db.upsert_registration(registration("C1", "B1"))
        .await
        .expect("register");
    db.upsert_registration(registration("C1", "B1"))
        .await
        .expect("the same again");
    // One live claim per customer: another broker's report replaces the first.
    let replaced = RegistrationEntry {
        expires_at: None,
        ..registration("C1", "B2")
    };
    db.upsert_registration(replaced.clone())
        .await
        .expect("replace");
    assert_eq!(
        db.registration("C1").await.expect("read"),
        Some(replaced.clone())
    );
    assert_eq!(db.registration("C2").await.expect("read"), None);

    assert_eq!(
        conflict(db.delete(Entity::Broker, "B2").await),
        Conflict::BrokerInUse {
            id: "B2".into(),
            registrations: 1
        }
    );
    db.delete(Entity::Broker, "B1")
        .await
        .expect("B1 holds nothing now");
    assert!(matches!(
        db.delete(Entity::Registration, "C2").await,
        Err(HubStoreError::NotFound {
            entity: "registration",
            ..
        })
    ));
    db.upsert_registration(registration("C2", "B2"))
        .await
        .expect("register C2");
    db.delete(Entity::Registration, "C2").await.expect("delete");
    assert_eq!(db.registration("C2").await.expect("read"), None);
    db.delete(Entity::Customer, "C1")
        .await
        .expect("delete the customer");
    db.delete(Entity::Broker, "B2")
        .await
        .expect("B2 holds nothing now");

    let changes = all_changes(db, start).await;
    assert_eq!(
        summaries(&changes),
        vec![
            "upsert registration C1",
            "upsert registration C1",
            "delete broker B1",
            "upsert registration C2",
            "delete registration C2",
            "delete card nfc:01",
            "delete registration C1",
            "delete customer C1",
            "delete broker B2",
        ]
    );
    assert_eq!(
        changes[1].op,
        RosterOp::Upsert {
            entry: RosterEntry::Registration(replaced)
        }
    );
}

// --- reception: card bindings and revocations from kiosks ---

async fn a_walk_in_binding_creates_the_customer_card_and_consent(hub: &Hub) {
    let db = &hub.db;
    db.add_kiosk(KIOSK, OFFICE, "hash")
        .await
        .expect("add kiosk");
    db.upsert_consultant(consultant("E1", "李娜"))
        .await
        .expect("consultant");
    let start = all_changes(db, 0).await.last().expect("changes").cursor;
    let bound = walk_in(1, "nfc:04AA", "w-1", "+86 139 0000 0001");
    let line = record(Record::CardBinding(bound.clone()));

    let reply = store(db, vec![line.clone()]).await;
    assert_eq!(statuses(&reply), vec![ItemStatus::Inserted]);
    assert_eq!(reply.high_water, 1);
    let walk_in_customer = HubCustomer {
        id: "w-1".into(),
        name: Some("李小龙".into()),
        surname: "李".into(),
        title: "mr".into(),
        tier: "normal".into(),
        phone: Some("13900000001".into()),
        consultant_id: Some("E1".into()),
        source: Some("walk_in".into()),
        last_follow_up: Some(bound.bound_at),
    };
    assert_eq!(
        db.customer("w-1").await.expect("read"),
        Some(walk_in_customer.clone())
    );
    assert_eq!(
        db.card("nfc:04AA").await.expect("read"),
        Some(card("nfc:04AA", "w-1", "active"))
    );
    let consent = StoredConsent {
        record_id: bound.id,
        customer_id: "w-1".into(),
        kiosk_id: KIOSK.into(),
        notice_version: "2026-01".into(),
        given_at: time("2026-11-23T01:59:30Z"),
    };
    assert_eq!(
        db.consents("w-1").await.expect("read"),
        vec![consent.clone()]
    );

    // Every kiosk, the sender too, receives it as roster changes; never the phone or
    // the full name.
    let changes = all_changes(db, start).await;
    assert_eq!(
        summaries(&changes),
        vec!["upsert customer w-1", "upsert card nfc:04AA"]
    );
    assert_eq!(
        changes[0].op,
        RosterOp::Upsert {
            entry: RosterEntry::Customer(walk_in_customer.kiosk_entry())
        }
    );
    let text = serde_json::to_string(&changes).expect("json");
    assert!(
        !text.contains("13900000001") && !text.contains("李小龙"),
        "{text}"
    );
    // The record is kept as evidence, like a visit, and is not a visit of the day.
    let stored = db.records(KIOSK, 0, 10).await.expect("records");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].kind, "card_binding");
    let Incoming::Record { raw, .. } = &line else {
        unreachable!("a record line")
    };
    assert_eq!(
        stored[0].body,
        serde_json::from_str::<serde_json::Value>(raw).expect("json")
    );
    assert_eq!(db.day_report(OFFICE, DAY).await.expect("report").records, 0);

    // A replay is a duplicate and changes nothing.
    let again = store(db, vec![line]).await;
    assert_eq!(statuses(&again), vec![ItemStatus::Duplicate]);
    assert_eq!(all_changes(db, start).await.len(), 2);
    assert_eq!(db.consents("w-1").await.expect("read"), vec![consent]);
    // So is the kiosk's copy once it erased the name and phone (sent again only when
    // the kiosk believes the hub lost it): never refused as a bad phone.
    let mut redacted = bound.clone();
    if let Some(n) = &mut redacted.new_customer {
        n.redact();
    }
    let again = store(db, vec![record(Record::CardBinding(redacted))]).await;
    assert_eq!(statuses(&again), vec![ItemStatus::Duplicate]);
    assert_eq!(all_changes(db, start).await.len(), 2);
    assert_eq!(
        db.customer("w-1").await.expect("read"),
        Some(walk_in_customer.clone())
    );

    // A consultant the hub does not know is left out; the walk-in is still registered.
    let mut stranger = walk_in(2, "nfc:04BB", "w-2", "13900000002");
    if let Some(n) = &mut stranger.new_customer {
        n.consultant_id = Some("E9".into());
    }
    let reply = store(db, vec![record(Record::CardBinding(stranger))]).await;
    assert_eq!(statuses(&reply), vec![ItemStatus::Inserted]);
    let w2 = db.customer("w-2").await.expect("read").expect("stored");
    assert_eq!(w2.consultant_id, None);
}

async fn bindings_are_refused_with_a_code_naming_only_ids(hub: &Hub) {
    let db = &hub.db;
    db.add_kiosk(KIOSK, OFFICE, "hash")
        .await
        .expect("add kiosk");
    db.import(RosterImport {
        consultants: vec![consultant("E1", "李娜")],
        customers: vec![
            customer("C1", Some("13800000001"), Some("E1")),
            customer("C2", None, None),
        ],
        cards: vec![
            card("nfc:01", "C1", "active"),
            card("nfc:02", "C1", "revoked"),
        ],
        ..RosterImport::default()
    })
    .await
    .expect("import");
    let start = all_changes(db, 0).await.last().expect("changes").cursor;

    let mut other_person = walk_in(4, "nfc:05", "C2", "13700000000");
    if let Some(n) = &mut other_person.new_customer {
        n.surname = "王".into();
    }
    let mut same_person = walk_in(7, "nfc:06", "C1", "138 0000 0001");
    if let Some(n) = &mut same_person.new_customer {
        n.surname = "张".into();
    }
    let mut bad_source = walk_in(10, "nfc:07", "w-3", "13900000003");
    if let Some(n) = &mut bad_source.new_customer {
        n.source = "magazine".into();
    }
    let batch = vec![
        record(Record::CardBinding(binding(1, "nfc:01", "C2"))),
        record(Record::CardBinding(binding(2, "nfc:03", "C9"))),
        record(Record::CardBinding(walk_in(
            3,
            "nfc:04",
            "w-2",
            "138-0000-0001",
        ))),
        record(Record::CardBinding(other_person)),
        // Already theirs: accepted, nothing changes.
        record(Record::CardBinding(binding(5, "nfc:01", "C1"))),
        // A revoked card of another customer may be issued again.
        record(Record::CardBinding(binding(6, "nfc:02", "C2"))),
        // An existing customer id with the same details: bound to them.
        record(Record::CardBinding(same_person)),
        record(Record::CardBinding(binding(8, "nfc:zz", "C1"))),
        record(Record::CardRevocation(revocation(9, "nfc:99", None))),
        record(Record::CardBinding(bad_source)),
    ];
    let reply = store(db, batch).await;
    use ItemStatus::{Inserted, Rejected};
    assert_eq!(
        statuses(&reply),
        vec![
            Rejected, Rejected, Rejected, Rejected, Inserted, Inserted, Inserted, Rejected,
            Rejected, Rejected
        ]
    );
    assert_eq!(reply.high_water, 10, "refused records hold their seq");
    let reasons = reasons(&reply);
    for (i, code, ids) in [
        (0, "card_taken: ", &["nfc:01", "C1"][..]),
        (1, "unknown_customer: ", &["C9"][..]),
        (2, "phone_taken: ", &["C1"][..]),
        (3, "customer_exists: ", &["C2"][..]),
        (7, "invalid: ", &["card"][..]),
        (8, "unknown_card: ", &["nfc:99"][..]),
        (9, "invalid: ", &["source", "magazine"][..]),
    ] {
        assert!(reasons[i].starts_with(code), "{i}: {}", reasons[i]);
        for id in ids {
            assert!(reasons[i].contains(id), "{i}: {}", reasons[i]);
        }
    }
    // Never the phone, nor the holder's name.
    for reason in &reasons {
        assert!(
            !reason.contains("13800000001") && !reason.contains("0001") && !reason.contains('张'),
            "{reason}"
        );
    }
    assert_eq!(
        db.rejects(KIOSK)
            .await
            .expect("rejects")
            .iter()
            .map(|r| (r.seq, r.reason.clone()))
            .collect::<Vec<_>>(),
        [0, 1, 2, 3, 7, 8, 9]
            .iter()
            .map(|&i| (Some(i as u64 + 1), reasons[i].clone()))
            .collect::<Vec<_>>()
    );

    assert_eq!(
        summaries(&all_changes(db, start).await),
        vec!["upsert card nfc:02", "upsert card nfc:06"]
    );
    assert_eq!(
        db.card("nfc:02").await.expect("read"),
        Some(card("nfc:02", "C2", "active"))
    );
    assert_eq!(
        db.card("nfc:01").await.expect("read"),
        Some(card("nfc:01", "C1", "active"))
    );
    assert_eq!(db.card("nfc:04").await.expect("read"), None);
    assert_eq!(db.customer("w-2").await.expect("read"), None);
    assert_eq!(
        db.customer("C2").await.expect("read"),
        Some(customer("C2", None, None)),
        "a refused walk-in changes nobody"
    );
    assert_eq!(db.consents("C1").await.expect("read").len(), 1);
    assert!(db.consents("w-2").await.expect("read").is_empty());
    let kinds: Vec<String> = db
        .records(KIOSK, 0, 20)
        .await
        .expect("records")
        .into_iter()
        .map(|r| format!("{} {}", r.seq, r.kind))
        .collect();
    assert_eq!(
        kinds,
        vec!["5 card_binding", "6 card_binding", "7 card_binding"]
    );
}

/// A kiosk that lost the answer sends the batch again: what was refused stays refused
/// with the same reason, even when the conflict is gone by then, and nothing is applied.
async fn a_refused_binding_is_answered_the_same_when_sent_again(hub: &Hub) {
    let db = &hub.db;
    db.add_kiosk(KIOSK, OFFICE, "hash")
        .await
        .expect("add kiosk");
    db.import(RosterImport {
        customers: vec![customer("C1", None, None), customer("C2", None, None)],
        cards: vec![card("nfc:01", "C1", "active")],
        ..RosterImport::default()
    })
    .await
    .expect("import");
    let batch = vec![
        record(Record::CardBinding(binding(1, "nfc:01", "C2"))),
        record(Record::CardBinding(binding(2, "nfc:02", "C2"))),
    ];
    let first = store(db, batch.clone()).await;
    assert_eq!(
        statuses(&first),
        vec![ItemStatus::Rejected, ItemStatus::Inserted]
    );
    let logged = all_changes(db, 0).await.len();

    db.upsert_card(card("nfc:01", "C1", "revoked"))
        .await
        .expect("the conflict goes away");
    let again = store(db, batch).await;
    assert_eq!(
        statuses(&again),
        vec![ItemStatus::Rejected, ItemStatus::Duplicate]
    );
    assert_eq!(reasons(&again)[0], reasons(&first)[0]);
    assert_eq!(
        db.card("nfc:01").await.expect("read"),
        Some(card("nfc:01", "C1", "revoked")),
        "the refused binding was not applied on its retry"
    );
    assert_eq!(all_changes(db, 0).await.len(), logged + 1);
    assert_eq!(db.rejects(KIOSK).await.expect("rejects").len(), 1);
    // The same card bound anew (a new record) now goes through.
    let reply = store(
        db,
        vec![record(Record::CardBinding(binding(3, "nfc:01", "C2")))],
    )
    .await;
    assert_eq!(statuses(&reply), vec![ItemStatus::Inserted]);
    assert_eq!(reply.high_water, 3);
}

async fn a_revocation_revokes_the_card_or_names_it_unknown(hub: &Hub) {
    let db = &hub.db;
    db.add_kiosk(KIOSK, OFFICE, "hash")
        .await
        .expect("add kiosk");
    db.import(RosterImport {
        customers: vec![customer("C1", None, None), customer("C2", None, None)],
        cards: vec![CardEntry {
            note: Some("issued 2026-10".into()),
            ..card("nfc:01", "C1", "active")
        }],
        ..RosterImport::default()
    })
    .await
    .expect("import");
    let start = all_changes(db, 0).await.last().expect("changes").cursor;
    let lost = record(Record::CardRevocation(revocation(
        1,
        "nfc:01",
        Some("lost"),
    )));
    let reply = store(db, vec![lost.clone()]).await;
    assert_eq!(statuses(&reply), vec![ItemStatus::Inserted]);
    let revoked = CardEntry {
        note: Some("lost".into()),
        ..card("nfc:01", "C1", "revoked")
    };
    assert_eq!(
        db.card("nfc:01").await.expect("read"),
        Some(revoked.clone())
    );
    assert_eq!(
        store(db, vec![lost]).await.items[0].status,
        ItemStatus::Duplicate
    );
    // Revoked again without a reason: the note stays, nothing to log.
    let reply = store(
        db,
        vec![record(Record::CardRevocation(revocation(
            2, "nfc:01", None,
        )))],
    )
    .await;
    assert_eq!(statuses(&reply), vec![ItemStatus::Inserted]);
    let changes = all_changes(db, start).await;
    assert_eq!(summaries(&changes), vec!["upsert card nfc:01"]);
    assert_eq!(
        changes[0].op,
        RosterOp::Upsert {
            entry: RosterEntry::Card(revoked)
        }
    );
    // The revoked card may go to someone else now.
    let reply = store(
        db,
        vec![record(Record::CardBinding(binding(3, "nfc:01", "C2")))],
    )
    .await;
    assert_eq!(statuses(&reply), vec![ItemStatus::Inserted]);
    assert_eq!(
        db.card("nfc:01").await.expect("read"),
        Some(card("nfc:01", "C2", "active"))
    );
    let reply = store(
        db,
        vec![record(Record::CardRevocation(revocation(
            4, "nfc:77", None,
        )))],
    )
    .await;
    assert!(
        reasons(&reply)[0].starts_with("unknown_card: card nfc:77"),
        "{:?}",
        reasons(&reply)
    );
    assert_eq!(reply.high_water, 4);
}

async fn a_batch_takes_visits_and_roster_records_in_order(hub: &Hub) {
    let db = &hub.db;
    db.add_kiosk(KIOSK, OFFICE, "hash")
        .await
        .expect("add kiosk");
    let first = line(visit(KIOSK, 1));
    let bound = record(Record::CardBinding(walk_in(
        2,
        "nfc:10",
        "w-3",
        "13900000003",
    )));
    let mut greeted = visit(KIOSK, 3);
    greeted.card = Some("nfc:10".into());
    greeted.customer_id = Some("w-3".into());
    let batch = vec![
        first.clone(),
        bound.clone(),
        line(greeted),
        record(Record::CardRevocation(revocation(
            4,
            "nfc:10",
            Some("lost"),
        ))),
        line(visit(KIOSK, 5)),
        first,
        bound,
    ];
    let reply = store(db, batch.clone()).await;
    use ItemStatus::{Duplicate, Inserted};
    assert_eq!(
        statuses(&reply),
        vec![
            Inserted, Inserted, Inserted, Inserted, Inserted, Duplicate, Duplicate
        ]
    );
    assert_eq!(reply.high_water, 5);
    let kinds: Vec<String> = db
        .records(KIOSK, 0, 10)
        .await
        .expect("records")
        .into_iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(
        kinds,
        vec!["visit", "card_binding", "visit", "card_revocation", "visit"]
    );
    assert_eq!(
        db.card("nfc:10").await.expect("read").map(|c| c.status),
        Some("revoked".into())
    );
    assert_eq!(
        summaries(&all_changes(db, 0).await),
        vec![
            "upsert customer w-3",
            "upsert card nfc:10",
            "upsert card nfc:10"
        ]
    );
    // The whole batch again: all duplicates, nothing applied twice.
    let again = store(db, batch).await;
    assert!(statuses(&again).iter().all(|s| *s == Duplicate));
    assert_eq!(all_changes(db, 0).await.len(), 3);

    // A binding claiming a seq a visit holds is kept as a reject, not applied.
    let usurper = store(
        db,
        vec![record(Record::CardBinding(binding(3, "nfc:11", "w-3")))],
    )
    .await;
    assert_eq!(statuses(&usurper), vec![ItemStatus::Rejected]);
    assert!(
        reasons(&usurper)[0].contains("seq 3 of kiosk k1 is already held"),
        "{:?}",
        reasons(&usurper)
    );
    assert_eq!(db.card("nfc:11").await.expect("read"), None);
}
