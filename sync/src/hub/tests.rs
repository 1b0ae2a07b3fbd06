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
};
use crate::wire::{
    BatchReply, BrokerEntry, CardEntry, ConsultantEntry, Entity, ItemStatus, Method, Outcome,
    Record, RosterChange, RosterEntry, RosterOp, VisitRecord, read_snapshot,
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
    }
    assert_eq!(all_changes(db, 0).await.len(), 4);
    assert_eq!(
        db.import(roster.clone()).await.expect("import"),
        ImportCounts::default()
    );
    assert_eq!(all_changes(db, 0).await.len(), 4);

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
        summaries(&all_changes(db, 0).await)[4..],
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
            "delete customer C1"
        ]
    );
    assert_increasing(&after);
    assert!(db.customer("C1").await.expect("read").is_none());
    assert!(db.card("nfc:01").await.expect("read").is_none());
    assert!(db.card("nfc:03").await.expect("read").is_some());

    for (entity, key) in [
        (Entity::Customer, "C1"),
        (Entity::Card, "nfc:09"),
        (Entity::Consultant, "E9"),
        (Entity::Broker, "B9"),
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
        summaries(&all_changes(db, last).await)[3..],
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
            brokers: 1
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
        ]
    );
    assert_increasing(&changes);
    assert_eq!(
        db.customer("C2").await.expect("read"),
        Some(customer("C2", Some("13800000002"), Some("E2")))
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
        customer("C1", Some("13800000001"), Some("E1")),
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
    assert_eq!(head.entries, 7);
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
    assert_eq!((report.records, report.office_visits), (6, 2));
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
    let finished = AtomicBool::new(false);
    let writers = async {
        tokio::join!(write(hub.db.clone(), "a"), write(other, "b"));
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
    assert_eq!(log.len(), 90);
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
        Err(HubStoreError::TooNew { found, supported }) => assert_eq!((found, supported), (99, 1)),
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
