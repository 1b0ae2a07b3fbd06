//! The hub store on SQLite: one file, one writer thread; for one office or a pilot.
//!
//! Every write runs on one connection owned by a dedicated thread that takes jobs from
//! a channel, so rusqlite never blocks an async worker, and a job whose caller went
//! away (a kiosk hung up) still commits: the kiosk's retry then finds duplicates.
//! Reads take a connection from a small pool on tokio's blocking threads; WAL lets
//! them run beside the writer, each inside one read transaction where consistency
//! matters. Write transactions are `BEGIN IMMEDIATE`, so another process on the same
//! file (an admin command) waits instead of failing half-way.
//!
//! Timestamps are integers, microseconds since the Unix epoch: they sort and compare
//! in SQL, and PostgreSQL keeps the same precision, so both backends answer alike.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, Transaction, TransactionBehavior, params};
use uuid::Uuid;

use crate::wire::{
    BatchReply, BrokerEntry, CardEntry, ConsultantEntry, CursorExpired, CustomerEntry, Entity,
    ItemResult, ItemStatus, RegistrationEntry, RosterEntry, RosterPage, SnapshotHead,
};

use super::rows::{self, Binding, BindingFacts, BindingWrites, Effect, Line, RecordRow, RejectRow};
use super::store::{
    Conflict, DayReport, HubCustomer, HubStoreError, ImportCounts, Incoming, KioskRow,
    RosterImport, StoredConsent, StoredRecord, StoredReject,
};

/// The schema this build writes; a newer file is refused, an older one migrated.
const SCHEMA_VERSION: i64 = 2;

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle read connections kept open; more are opened under load and closed after.
const READERS_KEPT: usize = 4;

/// The whole schema of version 1. `meta` holds the version and `pruned_upto` (the
/// highest roster log cursor ever pruned: a kiosk below it must take a snapshot).
/// A new file gets it and then every migration, so new and migrated files match.
pub(super) const SCHEMA_V1: &str = "
CREATE TABLE kiosks (
    id TEXT PRIMARY KEY,
    office_id TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    high_water INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
) STRICT;

-- `id` is the permanent dedup key; `body` the line exactly as received.
CREATE TABLE records (
    id TEXT PRIMARY KEY,
    kiosk_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    office_id TEXT NOT NULL,
    customer_id TEXT,
    outcome TEXT,
    office_day TEXT,
    device_time INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (kiosk_id, seq)
) STRICT;
CREATE INDEX records_office_day ON records (office_id, office_day);

CREATE TABLE rejects (
    kiosk_id TEXT NOT NULL,
    seq INTEGER,
    record_id TEXT,
    kind TEXT,
    reason TEXT NOT NULL,
    raw TEXT NOT NULL,
    received_at INTEGER NOT NULL
) STRICT;
-- A retried rejected line is stored once; its seq counts as held.
CREATE UNIQUE INDEX rejects_kiosk_seq ON rejects (kiosk_id, seq) WHERE seq IS NOT NULL;
CREATE INDEX rejects_kiosk ON rejects (kiosk_id);

CREATE TABLE consultants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL
) STRICT;

CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    name TEXT,
    surname TEXT NOT NULL,
    title TEXT NOT NULL,
    tier TEXT NOT NULL,
    phone TEXT UNIQUE,
    consultant_id TEXT REFERENCES consultants (id)
) STRICT;
CREATE INDEX customers_consultant ON customers (consultant_id);

CREATE TABLE cards (
    token TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    status TEXT NOT NULL,
    note TEXT,
    low24_only INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX cards_customer ON cards (customer_id);

CREATE TABLE brokers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    company TEXT
) STRICT;

-- AUTOINCREMENT: a cursor is never reused, even after the newest entries are pruned.
-- `body` is the kiosk-facing entry as JSON; NULL is a tombstone.
CREATE TABLE roster_log (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT,
    entity TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT,
    changed_at INTEGER NOT NULL
) STRICT;
CREATE INDEX roster_log_changed ON roster_log (changed_at);

INSERT INTO meta (key, value) VALUES ('schema_version', 1), ('pruned_upto', 0);
";

/// Version 2 (reception): customers' source and last follow-up; broker registrations
/// (报备), one per customer; consents given with a walk-in's card binding.
const SCHEMA_V2: &str = "
ALTER TABLE customers ADD COLUMN source TEXT;
-- Microseconds since the epoch, as every timestamp here.
ALTER TABLE customers ADD COLUMN last_follow_up INTEGER;

-- Keyed by the customer: one live claim per customer.
CREATE TABLE registrations (
    customer_id TEXT PRIMARY KEY REFERENCES customers (id),
    broker_id TEXT NOT NULL REFERENCES brokers (id),
    registered_at INTEGER NOT NULL,
    expires_at INTEGER
) STRICT;
CREATE INDEX registrations_broker ON registrations (broker_id);

-- Evidence, like records: no foreign key, so erasing a customer keeps the proof that
-- their data was processed with consent.
CREATE TABLE consents (
    record_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    kiosk_id TEXT NOT NULL,
    notice_version TEXT NOT NULL,
    given_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL
) STRICT;
CREATE INDEX consents_customer ON consents (customer_id);

UPDATE meta SET value = 2 WHERE key = 'schema_version';
";

/// `MIGRATIONS[n]` takes a file from version `n + 1` to `n + 2`, in the migration's
/// one transaction.
const MIGRATIONS: [&str; 1] = [SCHEMA_V2];

const CUSTOMER_COLUMNS: &str =
    "id, name, surname, title, tier, phone, consultant_id, source, last_follow_up";

const INSERT_RECORD: &str = "INSERT INTO records
    (id, kiosk_id, seq, kind, office_id, customer_id, outcome, office_day, device_time, received_at, body)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
    ON CONFLICT DO NOTHING";

const INSERT_REJECT: &str = "INSERT INTO rejects
    (kiosk_id, seq, record_id, kind, reason, raw, received_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
    ON CONFLICT DO NOTHING";

/// The seqs a kiosk holds (records and rejects) in a window above its high-water.
const HELD_SEQS: &str = "
    SELECT seq FROM records WHERE kiosk_id = ?1 AND seq > ?2 AND seq <= ?3
    UNION
    SELECT seq FROM rejects WHERE kiosk_id = ?1 AND seq > ?2 AND seq <= ?3
    ORDER BY seq";

/// The largest cursor assigned so far, as of this transaction: the log's newest entry,
/// or the highest pruned one when the log was pruned empty.
const HEAD_CURSOR: &str = "max(
    coalesce((SELECT max(cursor) FROM roster_log), 0),
    (SELECT value FROM meta WHERE key = 'pruned_upto'))";

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

#[derive(Debug, Clone)]
pub struct SqliteHub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// To the writer thread; it stops when the last handle is dropped.
    jobs: mpsc::Sender<Job>,
    /// Idle read connections.
    readers: Mutex<Vec<Connection>>,
}

impl SqliteHub {
    pub async fn open(path: &Path) -> Result<SqliteHub, HubStoreError> {
        let path = path.to_owned();
        let conn = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || open_writer(&path))
                .await
                .map_err(|_| HubStoreError::Gone)??
        };
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("hub-sqlite-writer".into())
            .spawn(move || {
                let mut conn = conn;
                for job in queue {
                    job(&mut conn);
                }
            })
            .map_err(|e| HubStoreError::Open(format!("cannot start the SQLite writer: {e}")))?;
        Ok(SqliteHub {
            inner: Arc::new(Inner {
                path,
                jobs,
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Runs `f` on the writer thread and waits for its answer.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, HubStoreError> + Send + 'static,
    ) -> Result<T, HubStoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller may have gone away; the work is done (and committed) anyway.
            let _ = reply.send(f(conn));
        });
        self.inner.jobs.send(job).map_err(|_| HubStoreError::Gone)?;
        answer.await.map_err(|_| HubStoreError::Gone)?
    }

    /// A roster write: one immediate transaction, stamped with the hub's clock.
    async fn roster_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>, i64) -> Result<T, HubStoreError> + Send + 'static,
    ) -> Result<T, HubStoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx, micros(jiff::Timestamp::now()))?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// Runs `f` on a read connection, on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, HubStoreError> + Send + 'static,
    ) -> Result<T, HubStoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let idle = inner
                .readers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => open_reader(&inner.path)?,
            };
            let out = f(&mut conn);
            let mut readers = inner
                .readers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if readers.len() < READERS_KEPT {
                readers.push(conn);
            }
            out
        })
        .await
        .map_err(|_| HubStoreError::Gone)?
    }

    pub async fn add_kiosk(
        &self,
        id: &str,
        office_id: &str,
        token_hash: &str,
    ) -> Result<(), HubStoreError> {
        let (id, office_id, token_hash) =
            (id.to_owned(), office_id.to_owned(), token_hash.to_owned());
        self.write(move |conn| {
            let added = conn.prepare_cached(
                "INSERT INTO kiosks (id, office_id, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![id, office_id, token_hash, micros(jiff::Timestamp::now())])?;
            if added == 0 {
                return Err(HubStoreError::Conflict(Conflict::KioskExists { id }));
            }
            Ok(())
        })
        .await
    }

    pub async fn revoke_kiosk(&self, id: &str) -> Result<(), HubStoreError> {
        let id = id.to_owned();
        self.write(move |conn| {
            let removed = conn
                .prepare_cached("DELETE FROM kiosks WHERE id = ?1")?
                .execute([&id])?;
            if removed == 0 {
                return Err(HubStoreError::NotFound {
                    entity: "kiosk",
                    key: id,
                });
            }
            Ok(())
        })
        .await
    }

    pub async fn kiosk(&self, id: &str) -> Result<Option<KioskRow>, HubStoreError> {
        let id = id.to_owned();
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT id, office_id, token_hash, high_water FROM kiosks WHERE id = ?1",
                )?
                .query_row([&id], kiosk_columns)
                .optional()?;
            row.map(kiosk_row).transpose()
        })
        .await
    }

    pub async fn kiosks(&self) -> Result<Vec<KioskRow>, HubStoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, office_id, token_hash, high_water FROM kiosks ORDER BY id",
            )?;
            let rows = stmt
                .query_map([], kiosk_columns)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(kiosk_row).collect()
        })
        .await
    }

    pub async fn store_batch(
        &self,
        kiosk_id: &str,
        items: Vec<Incoming>,
        received_at: jiff::Timestamp,
    ) -> Result<BatchReply, HubStoreError> {
        let kiosk_id = kiosk_id.to_owned();
        let lines = rows::plan(items);
        let at = micros(received_at);
        self.write(move |conn| store_batch(conn, &kiosk_id, lines, at))
            .await
    }

    pub async fn records(
        &self,
        kiosk_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<StoredRecord>, HubStoreError> {
        let kiosk_id = kiosk_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, kiosk_id, seq, kind, body, received_at FROM records
                 WHERE kiosk_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt
                .query_map(params![kiosk_id, rows::signed(after_seq), limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(id, kiosk_id, seq, kind, body, received_at)| {
                    rows::stored_record(
                        uuid(&id)?,
                        kiosk_id,
                        seq,
                        kind,
                        &body,
                        timestamp(received_at)?,
                    )
                })
                .collect()
        })
        .await
    }

    pub async fn rejects(&self, kiosk_id: &str) -> Result<Vec<StoredReject>, HubStoreError> {
        let kiosk_id = kiosk_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT kiosk_id, seq, reason, raw, received_at FROM rejects
                 WHERE kiosk_id = ?1 ORDER BY rowid",
            )?;
            let rows = stmt
                .query_map([&kiosk_id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(kiosk_id, seq, reason, raw, received_at)| {
                    Ok(StoredReject {
                        kiosk_id,
                        seq: seq
                            .map(|s| rows::unsigned(s, "a reject's seq"))
                            .transpose()?,
                        reason,
                        raw,
                        received_at: timestamp(received_at)?,
                    })
                })
                .collect()
        })
        .await
    }

    pub async fn record_count(&self) -> Result<u64, HubStoreError> {
        self.read(|conn| {
            let n: i64 = conn
                .prepare_cached("SELECT count(*) FROM records")?
                .query_row([], |r| r.get(0))?;
            rows::unsigned(n, "the record count")
        })
        .await
    }

    pub async fn day_report(&self, office_id: &str, day: &str) -> Result<DayReport, HubStoreError> {
        let (office_id, day) = (office_id.to_owned(), day.to_owned());
        self.read(move |conn| {
            let (records, visits): (i64, i64) = conn
                .prepare_cached(
                    "SELECT count(*), count(DISTINCT CASE WHEN outcome IN ('welcome', 'broker_confirmed') THEN customer_id END)
                     FROM records WHERE office_id = ?1 AND office_day = ?2 AND kind = 'visit'",
                )?
                .query_row([&office_id, &day], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(DayReport {
                records: rows::unsigned(records, "a record count")?,
                office_visits: rows::unsigned(visits, "a visit count")?,
            })
        })
        .await
    }

    pub async fn roster_changes(
        &self,
        since: u64,
        limit: u32,
    ) -> Result<Result<RosterPage, CursorExpired>, HubStoreError> {
        let limit = rows::page_limit(limit);
        self.read(move |conn| {
            // One read transaction: a prune between the two queries must not slip by.
            let tx = conn.transaction()?;
            let pruned = rows::unsigned(pruned_upto(&tx)?, "pruned_upto")?;
            if since < pruned {
                return Ok(Err(CursorExpired { oldest: pruned }));
            }
            let mut stmt = tx.prepare_cached(
                "SELECT cursor, entity, key, body FROM roster_log
                 WHERE cursor > ?1 ORDER BY cursor LIMIT ?2",
            )?;
            let found = stmt
                .query_map(params![rows::signed(since), i64::from(limit) + 1], |r| {
                    Ok((r.get(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            if found.is_empty() {
                let head: i64 = tx.query_row(&format!("SELECT {HEAD_CURSOR}"), [], |r| r.get(0))?;
                if since > rows::unsigned(head, "the roster cursor")? {
                    // A cursor this hub never gave (its database was restored from an
                    // older backup): its changes would be numbered below the kiosk's
                    // cursor and never reach it, so the kiosk takes a snapshot.
                    return Ok(Err(CursorExpired { oldest: pruned }));
                }
            }
            let changes = found
                .into_iter()
                .map(|(cursor, entity, key, body)| rows::change(cursor, &entity, key, body))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Ok(rows::page(since, changes, limit)))
        })
        .await
    }

    pub async fn roster_snapshot(&self) -> Result<Vec<u8>, HubStoreError> {
        self.read(|conn| {
            // One read transaction: the head's cursor and count match the rows read.
            let tx = conn.transaction()?;
            let (entries, cursor): (i64, i64) = tx.query_row(
                &format!(
                    "SELECT (SELECT count(*) FROM consultants) + (SELECT count(*) FROM customers)
                          + (SELECT count(*) FROM cards) + (SELECT count(*) FROM brokers)
                          + (SELECT count(*) FROM registrations),
                            {HEAD_CURSOR}"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let mut out = rows::SnapshotWriter::new(&SnapshotHead {
                cursor: rows::unsigned(cursor, "the roster cursor")?,
                entries: rows::unsigned(entries, "the roster size")?,
            })?;
            let mut stmt = tx.prepare("SELECT id, name FROM consultants ORDER BY id")?;
            let mut found = stmt.query([])?;
            while let Some(r) = found.next()? {
                out.entry(&RosterEntry::Consultant(ConsultantEntry {
                    id: r.get(0)?,
                    name: r.get(1)?,
                }))?;
            }
            let mut stmt = tx.prepare(
                "SELECT id, surname, title, tier, consultant_id, source, last_follow_up
                 FROM customers ORDER BY id",
            )?;
            let mut found = stmt.query([])?;
            while let Some(r) = found.next()? {
                out.entry(&RosterEntry::Customer(CustomerEntry {
                    id: r.get(0)?,
                    surname: r.get(1)?,
                    title: r.get(2)?,
                    tier: r.get(3)?,
                    consultant_id: r.get(4)?,
                    source: r.get(5)?,
                    last_follow_up: r.get::<_, Option<i64>>(6)?.map(timestamp).transpose()?,
                }))?;
            }
            let mut stmt = tx.prepare(
                "SELECT token, customer_id, status, note, low24_only FROM cards ORDER BY token",
            )?;
            let mut found = stmt.query([])?;
            while let Some(r) = found.next()? {
                out.entry(&RosterEntry::Card(card_columns(r)?))?;
            }
            let mut stmt = tx.prepare("SELECT id, name, company FROM brokers ORDER BY id")?;
            let mut found = stmt.query([])?;
            while let Some(r) = found.next()? {
                out.entry(&RosterEntry::Broker(BrokerEntry {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    company: r.get(2)?,
                }))?;
            }
            let mut stmt = tx.prepare(&format!(
                "SELECT {REGISTRATION_COLUMNS} FROM registrations ORDER BY customer_id"
            ))?;
            let mut found = stmt.query([])?;
            while let Some(r) = found.next()? {
                out.entry(&RosterEntry::Registration(registration_row(r)?))?;
            }
            out.finish()
        })
        .await
    }

    pub async fn prune_roster_log(&self, before: jiff::Timestamp) -> Result<u64, HubStoreError> {
        let before = micros(before);
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let highest: Option<i64> = tx.query_row(
                "SELECT max(cursor) FROM roster_log WHERE changed_at < ?1",
                [before],
                |r| r.get(0),
            )?;
            let dropped = tx.execute("DELETE FROM roster_log WHERE changed_at < ?1", [before])?;
            if let Some(highest) = highest {
                tx.execute(
                    "UPDATE meta SET value = max(value, ?1) WHERE key = 'pruned_upto'",
                    [highest],
                )?;
            }
            tx.commit()?;
            Ok(dropped as u64)
        })
        .await
    }

    pub async fn import(&self, roster: RosterImport) -> Result<ImportCounts, HubStoreError> {
        self.roster_write(move |tx, now| {
            let mut counts = ImportCounts::default();
            for c in &roster.consultants {
                counts.consultants += u64::from(upsert_consultant(tx, c, now)?);
            }
            for c in &roster.customers {
                counts.customers += u64::from(upsert_customer(tx, c, now)?);
            }
            for c in &roster.cards {
                counts.cards += u64::from(upsert_card(tx, c, now)?);
            }
            for b in &roster.brokers {
                counts.brokers += u64::from(upsert_broker(tx, b, now)?);
            }
            for r in &roster.registrations {
                counts.registrations += u64::from(upsert_registration(tx, r, now)?);
            }
            Ok(counts)
        })
        .await
    }

    pub async fn upsert_consultant(&self, c: ConsultantEntry) -> Result<(), HubStoreError> {
        self.roster_write(move |tx, now| upsert_consultant(tx, &c, now).map(drop))
            .await
    }

    pub async fn upsert_customer(&self, c: HubCustomer) -> Result<(), HubStoreError> {
        self.roster_write(move |tx, now| upsert_customer(tx, &c, now).map(drop))
            .await
    }

    pub async fn upsert_card(&self, c: CardEntry) -> Result<(), HubStoreError> {
        self.roster_write(move |tx, now| upsert_card(tx, &c, now).map(drop))
            .await
    }

    pub async fn upsert_broker(&self, b: BrokerEntry) -> Result<(), HubStoreError> {
        self.roster_write(move |tx, now| upsert_broker(tx, &b, now).map(drop))
            .await
    }

    pub async fn upsert_registration(&self, r: RegistrationEntry) -> Result<(), HubStoreError> {
        self.roster_write(move |tx, now| upsert_registration(tx, &r, now).map(drop))
            .await
    }

    pub async fn delete(&self, entity: Entity, key: &str) -> Result<(), HubStoreError> {
        let key = key.to_owned();
        self.roster_write(move |tx, now| delete(tx, entity, &key, now))
            .await
    }

    pub async fn customer(&self, id: &str) -> Result<Option<HubCustomer>, HubStoreError> {
        let id = id.to_owned();
        self.read(move |conn| customer(conn, &id)).await
    }

    pub async fn registration(
        &self,
        customer_id: &str,
    ) -> Result<Option<RegistrationEntry>, HubStoreError> {
        let customer_id = customer_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {REGISTRATION_COLUMNS} FROM registrations WHERE customer_id = ?1"
            ))?;
            let mut found = stmt.query([&customer_id])?;
            found.next()?.map(registration_row).transpose()
        })
        .await
    }

    pub async fn consents(&self, customer_id: &str) -> Result<Vec<StoredConsent>, HubStoreError> {
        let customer_id = customer_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT record_id, customer_id, kiosk_id, notice_version, given_at FROM consents
                 WHERE customer_id = ?1 ORDER BY given_at, record_id",
            )?;
            let mut found = stmt.query([&customer_id])?;
            let mut out = Vec::new();
            while let Some(r) = found.next()? {
                out.push(StoredConsent {
                    record_id: uuid(&r.get::<_, String>(0)?)?,
                    customer_id: r.get(1)?,
                    kiosk_id: r.get(2)?,
                    notice_version: r.get(3)?,
                    given_at: timestamp(r.get(4)?)?,
                });
            }
            Ok(out)
        })
        .await
    }

    pub async fn card(&self, token: &str) -> Result<Option<CardEntry>, HubStoreError> {
        let token = token.to_owned();
        self.read(move |conn| card(conn, &token)).await
    }
}

fn open_writer(path: &Path) -> Result<Connection, HubStoreError> {
    let mut conn = Connection::open(path).map_err(|e| {
        HubStoreError::Open(format!(
            "{}: {e}; check that its directory exists and is writable",
            path.display()
        ))
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(HubStoreError::Open(format!(
            "{}: SQLite refused WAL mode (got {mode}); put the database on a local disk",
            path.display()
        )));
    }
    // FULL: a batch's reply means its records survive a power cut.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Room for every statement a batch or roster write prepares.
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&mut conn)?;
    Ok(conn)
}

fn open_reader(path: &Path) -> Result<Connection, HubStoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // A reader must never write, even by a bug.
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}

/// Creates the schema in a new file, migrates an older one in place; refuses a file
/// written by a newer hub.
fn migrate(conn: &mut Connection) -> Result<(), HubStoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT",
    )?;
    let version: Option<i64> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let found = match version {
        None => {
            tx.execute_batch(SCHEMA_V1)?;
            1
        }
        Some(found) if found > SCHEMA_VERSION => {
            return Err(HubStoreError::TooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Some(found) if found < 1 => {
            return Err(HubStoreError::Corrupt(format!("schema version {found}")));
        }
        Some(found) => found,
    };
    // In place, in this one transaction: a failed step leaves the file as it was.
    for step in &MIGRATIONS[usize::try_from(found - 1).unwrap_or(0)..] {
        tx.execute_batch(step)?;
    }
    tx.commit()?;
    Ok(())
}

fn store_batch(
    conn: &mut Connection,
    kiosk_id: &str,
    lines: Vec<(Option<u64>, Line)>,
    at: i64,
) -> Result<BatchReply, HubStoreError> {
    // IMMEDIATE takes the write lock now, so the high-water read below cannot go stale.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let start: i64 = tx
        .prepare_cached("SELECT high_water FROM kiosks WHERE id = ?1")?
        .query_row([kiosk_id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| HubStoreError::NotFound {
            entity: "kiosk",
            key: kiosk_id.to_owned(),
        })?;
    let mut items = Vec::with_capacity(lines.len());
    {
        let mut insert = tx.prepare_cached(INSERT_RECORD)?;
        let mut known = tx.prepare_cached("SELECT kiosk_id, seq FROM records WHERE id = ?1")?;
        let mut seq_holder =
            tx.prepare_cached("SELECT id FROM records WHERE kiosk_id = ?1 AND seq = ?2")?;
        let mut reject = tx.prepare_cached(INSERT_REJECT)?;
        let mut keep = |r: &RejectRow| {
            reject.execute(params![
                kiosk_id,
                r.seq,
                r.record_id.map(|id| id.to_string()),
                r.kind,
                r.reason,
                r.raw,
                at
            ])
        };
        for (seq, line) in lines {
            match line {
                Line::Record(mut r) => {
                    if let Some(effect) = r.effect.take() {
                        let (item, row) = effect_line(&tx, kiosk_id, at, seq, r, *effect)?;
                        if let Some(row) = &row {
                            keep(row)?;
                        }
                        items.push(item);
                        continue;
                    }
                    let id = r.id.to_string();
                    let inserted = insert.execute(params![
                        id,
                        kiosk_id,
                        r.seq,
                        r.kind,
                        r.office_id,
                        r.customer_id,
                        r.outcome,
                        r.office_day,
                        micros(r.device_time),
                        at,
                        r.raw
                    ])?;
                    let holder: Option<(String, i64)> = if inserted == 1 {
                        None
                    } else {
                        known
                            .query_row([&id], |row| Ok((row.get(0)?, row.get(1)?)))
                            .optional()?
                    };
                    if inserted == 1 {
                        items.push(rows::item(seq, ItemStatus::Inserted));
                    } else if let Some((k, s)) = holder {
                        if k == kiosk_id && s == r.seq {
                            items.push(rows::item(seq, ItemStatus::Duplicate));
                        } else {
                            let row = RejectRow::id_taken(r, &k, s);
                            keep(&row)?;
                            items.push(rows::rejected(seq, &row.reason));
                        }
                    } else {
                        // Only (kiosk_id, seq) is left to conflict on.
                        let other: String = seq_holder
                            .query_row(params![kiosk_id, r.seq], |row| row.get(0))
                            .optional()?
                            .unwrap_or_else(|| "(unknown)".to_owned());
                        let row = RejectRow::seq_taken(r, kiosk_id, other);
                        keep(&row)?;
                        items.push(rows::rejected(seq, &row.reason));
                    }
                }
                Line::Reject(r) => {
                    keep(&r)?;
                    items.push(rows::rejected(seq, &r.reason));
                }
            }
        }
    }
    let mut high_water = start;
    {
        let mut held = tx.prepare_cached(HELD_SEQS)?;
        loop {
            let end = rows::window_end(high_water);
            let seqs = held
                .query_map(params![kiosk_id, high_water, end], |r| r.get::<_, i64>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            let from = high_water;
            high_water = rows::walk(high_water, seqs);
            // Stop at a gap, or when the window could not move (the end of i64).
            if high_water != end || end == from {
                break;
            }
        }
    }
    if high_water != start {
        tx.prepare_cached("UPDATE kiosks SET high_water = ?2 WHERE id = ?1")?
            .execute(params![kiosk_id, high_water])?;
    }
    tx.commit()?;
    Ok(BatchReply {
        items,
        high_water: rows::unsigned(high_water, "a high-water")?,
    })
}

/// A record that changes the roster (a card binding or revocation): a retry is answered
/// as the first time was, without looking at the roster again; a new one is checked
/// against the roster, then applied and stored, or rejected with the rule it breaks.
/// Returns the answer and the reject row to keep, if any.
fn effect_line(
    tx: &Transaction<'_>,
    kiosk_id: &str,
    at: i64,
    seq: Option<u64>,
    r: RecordRow,
    effect: Effect,
) -> Result<(ItemResult, Option<RejectRow>), HubStoreError> {
    let id = r.id.to_string();
    let holder: Option<(String, i64)> = tx
        .prepare_cached("SELECT kiosk_id, seq FROM records WHERE id = ?1")?
        .query_row([&id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if let Some((k, s)) = holder {
        if k == kiosk_id && s == r.seq {
            return Ok((rows::item(seq, ItemStatus::Duplicate), None));
        }
        let row = RejectRow::id_taken(r, &k, s);
        return Ok((rows::rejected(seq, &row.reason), Some(row)));
    }
    let other: Option<String> = tx
        .prepare_cached("SELECT id FROM records WHERE kiosk_id = ?1 AND seq = ?2")?
        .query_row(params![kiosk_id, r.seq], |row| row.get(0))
        .optional()?;
    if let Some(other) = other {
        let row = RejectRow::seq_taken(r, kiosk_id, other);
        return Ok((rows::rejected(seq, &row.reason), Some(row)));
    }
    // Refused before: the same answer, though the roster may have changed since.
    let refused: Option<String> = tx
        .prepare_cached(
            "SELECT reason FROM rejects WHERE kiosk_id = ?1 AND seq = ?2 AND record_id = ?3",
        )?
        .query_row(params![kiosk_id, r.seq, id], |row| row.get(0))
        .optional()?;
    if let Some(reason) = refused {
        return Ok((rows::rejected(seq, &reason), None));
    }
    let decision = match &effect {
        Effect::Bind(b) => {
            rows::decide_binding(b, binding_facts(tx, b)?).map(|writes| apply(tx, writes, at))
        }
        Effect::Revoke(v) => rows::decide_revocation(v, card(tx, &v.card)?)
            .map(|card| upsert_card(tx, &card, at).map(drop)),
    };
    match decision {
        Err(refusal) => {
            let row = RejectRow::refused(r, &refusal);
            Ok((rows::rejected(seq, &row.reason), Some(row)))
        }
        Ok(applied) => {
            applied?;
            tx.prepare_cached(INSERT_RECORD)?.execute(params![
                id,
                kiosk_id,
                r.seq,
                r.kind,
                r.office_id,
                r.customer_id,
                r.outcome,
                r.office_day,
                micros(r.device_time),
                at,
                r.raw
            ])?;
            Ok((rows::item(seq, ItemStatus::Inserted), None))
        }
    }
}

/// What the roster holds that `b` is checked against.
fn binding_facts(tx: &Transaction<'_>, b: &Binding) -> Result<BindingFacts, HubStoreError> {
    let mut facts = BindingFacts {
        customer: customer(tx, &b.customer_id)?,
        card: card(tx, &b.card)?,
        consultant_known: true,
        phone_holder: None,
    };
    if let Some(w) = &b.walk_in {
        facts.phone_holder = tx
            .prepare_cached("SELECT id FROM customers WHERE phone = ?1 AND id <> ?2")?
            .query_row(params![w.customer.phone, b.customer_id], |r| r.get(0))
            .optional()?;
        if let Some(consultant) = &w.customer.consultant_id {
            facts.consultant_known = tx
                .prepare_cached("SELECT 1 FROM consultants WHERE id = ?1")?
                .exists([consultant])?;
        }
    }
    Ok(facts)
}

/// Writes an accepted binding: the roster changes (logged like an administrator's)
/// and the consent.
fn apply(tx: &Transaction<'_>, writes: BindingWrites, now: i64) -> Result<(), HubStoreError> {
    if let Some(c) = &writes.customer {
        upsert_customer(tx, c, now)?;
    }
    if let Some(c) = &writes.card {
        upsert_card(tx, c, now)?;
    }
    if let Some(c) = &writes.consent {
        tx.prepare_cached(
            "INSERT INTO consents
                (record_id, customer_id, kiosk_id, notice_version, given_at, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            c.record_id.to_string(),
            c.customer_id,
            c.kiosk_id,
            c.notice_version,
            micros(c.given_at),
            now
        ])?;
    }
    Ok(())
}

fn customer(conn: &Connection, id: &str) -> Result<Option<HubCustomer>, HubStoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = ?1"
    ))?;
    let mut found = stmt.query([id])?;
    found.next()?.map(customer_row).transpose()
}

fn customer_row(r: &rusqlite::Row<'_>) -> Result<HubCustomer, HubStoreError> {
    Ok(HubCustomer {
        id: r.get(0)?,
        name: r.get(1)?,
        surname: r.get(2)?,
        title: r.get(3)?,
        tier: r.get(4)?,
        phone: r.get(5)?,
        consultant_id: r.get(6)?,
        source: r.get(7)?,
        last_follow_up: r.get::<_, Option<i64>>(8)?.map(timestamp).transpose()?,
    })
}

fn card(conn: &Connection, token: &str) -> Result<Option<CardEntry>, HubStoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT token, customer_id, status, note, low24_only FROM cards WHERE token = ?1",
        )?
        .query_row([token], card_columns)
        .optional()?)
}

const REGISTRATION_COLUMNS: &str = "customer_id, broker_id, registered_at, expires_at";

fn registration_row(r: &rusqlite::Row<'_>) -> Result<RegistrationEntry, HubStoreError> {
    Ok(RegistrationEntry {
        customer_id: r.get(0)?,
        broker_id: r.get(1)?,
        registered_at: timestamp(r.get(2)?)?,
        expires_at: r.get::<_, Option<i64>>(3)?.map(timestamp).transpose()?,
    })
}

fn pruned_upto(conn: &Connection) -> Result<i64, HubStoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'pruned_upto'")?
        .query_row([], |r| r.get(0))?)
}

/// Appends one change to the roster log; `body` `None` is a tombstone.
fn log(
    tx: &Transaction<'_>,
    entity: Entity,
    key: &str,
    body: Option<&str>,
    now: i64,
) -> Result<(), HubStoreError> {
    tx.prepare_cached(
        "INSERT INTO roster_log (entity, key, body, changed_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![entity.as_str(), key, body, now])?;
    Ok(())
}

/// Logs `entry` when the upsert changed a row; returns whether it did.
fn log_if(
    tx: &Transaction<'_>,
    changed: usize,
    entry: RosterEntry,
    now: i64,
) -> Result<bool, HubStoreError> {
    if changed == 0 {
        return Ok(false);
    }
    log(
        tx,
        entry.entity(),
        entry.key(),
        Some(&rows::log_body(&entry)?),
        now,
    )?;
    Ok(true)
}

fn upsert_consultant(
    tx: &Transaction<'_>,
    c: &ConsultantEntry,
    now: i64,
) -> Result<bool, HubStoreError> {
    let changed = tx
        .prepare_cached(
            "INSERT INTO consultants (id, name) VALUES (?1, ?2)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name
             WHERE consultants.name IS NOT excluded.name",
        )?
        .execute(params![c.id, c.name])?;
    log_if(tx, changed, RosterEntry::Consultant(c.clone()), now)
}

fn upsert_customer(tx: &Transaction<'_>, c: &HubCustomer, now: i64) -> Result<bool, HubStoreError> {
    if let Some(phone) = &c.phone {
        let existing: Option<String> = tx
            .prepare_cached("SELECT id FROM customers WHERE phone = ?1 AND id <> ?2")?
            .query_row(params![phone, c.id], |r| r.get(0))
            .optional()?;
        if let Some(existing) = existing {
            return Err(HubStoreError::Conflict(Conflict::PhoneTaken { existing }));
        }
    }
    if let Some(consultant) = &c.consultant_id {
        let found = tx
            .prepare_cached("SELECT 1 FROM consultants WHERE id = ?1")?
            .exists([consultant])?;
        if !found {
            return Err(HubStoreError::Conflict(Conflict::Missing {
                entity: "consultant",
                key: consultant.clone(),
            }));
        }
    }
    let changed = tx
        .prepare_cached(
            "INSERT INTO customers
                (id, name, surname, title, tier, phone, consultant_id, source, last_follow_up)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (id) DO UPDATE SET
                name = excluded.name, surname = excluded.surname, title = excluded.title,
                tier = excluded.tier, phone = excluded.phone, consultant_id = excluded.consultant_id,
                source = excluded.source, last_follow_up = excluded.last_follow_up
             WHERE customers.name IS NOT excluded.name
                OR customers.surname IS NOT excluded.surname
                OR customers.title IS NOT excluded.title
                OR customers.tier IS NOT excluded.tier
                OR customers.phone IS NOT excluded.phone
                OR customers.consultant_id IS NOT excluded.consultant_id
                OR customers.source IS NOT excluded.source
                OR customers.last_follow_up IS NOT excluded.last_follow_up",
        )?
        .execute(params![
            c.id,
            c.name,
            c.surname,
            c.title,
            c.tier,
            c.phone,
            c.consultant_id,
            c.source,
            c.last_follow_up.map(micros)
        ])?;
    log_if(tx, changed, RosterEntry::Customer(c.kiosk_entry()), now)
}

fn upsert_card(tx: &Transaction<'_>, c: &CardEntry, now: i64) -> Result<bool, HubStoreError> {
    let owner = tx
        .prepare_cached("SELECT 1 FROM customers WHERE id = ?1")?
        .exists([&c.customer_id])?;
    if !owner {
        return Err(HubStoreError::Conflict(Conflict::Missing {
            entity: "customer",
            key: c.customer_id.clone(),
        }));
    }
    if c.status == "active" {
        let existing: Option<String> = tx
            .prepare_cached(
                "SELECT customer_id FROM cards
                 WHERE token = ?1 AND status = 'active' AND customer_id <> ?2",
            )?
            .query_row(params![c.token, c.customer_id], |r| r.get(0))
            .optional()?;
        if let Some(existing) = existing {
            return Err(HubStoreError::Conflict(Conflict::CardTaken {
                token: c.token.clone(),
                existing,
            }));
        }
    }
    let changed = tx
        .prepare_cached(
            "INSERT INTO cards (token, customer_id, status, note, low24_only)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (token) DO UPDATE SET
                customer_id = excluded.customer_id, status = excluded.status,
                note = excluded.note, low24_only = excluded.low24_only
             WHERE cards.customer_id IS NOT excluded.customer_id
                OR cards.status IS NOT excluded.status
                OR cards.note IS NOT excluded.note
                OR cards.low24_only IS NOT excluded.low24_only",
        )?
        .execute(params![
            c.token,
            c.customer_id,
            c.status,
            c.note,
            c.low24_only
        ])?;
    log_if(tx, changed, RosterEntry::Card(c.clone()), now)
}

fn upsert_broker(tx: &Transaction<'_>, b: &BrokerEntry, now: i64) -> Result<bool, HubStoreError> {
    let changed = tx
        .prepare_cached(
            "INSERT INTO brokers (id, name, company) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, company = excluded.company
             WHERE brokers.name IS NOT excluded.name OR brokers.company IS NOT excluded.company",
        )?
        .execute(params![b.id, b.name, b.company])?;
    log_if(tx, changed, RosterEntry::Broker(b.clone()), now)
}

fn upsert_registration(
    tx: &Transaction<'_>,
    r: &RegistrationEntry,
    now: i64,
) -> Result<bool, HubStoreError> {
    for (entity, table, key) in [
        ("customer", "customers", &r.customer_id),
        ("broker", "brokers", &r.broker_id),
    ] {
        let found = tx
            .prepare_cached(&format!("SELECT 1 FROM {table} WHERE id = ?1"))?
            .exists([key])?;
        if !found {
            return Err(HubStoreError::Conflict(Conflict::Missing {
                entity,
                key: key.clone(),
            }));
        }
    }
    let changed = tx
        .prepare_cached(
            "INSERT INTO registrations (customer_id, broker_id, registered_at, expires_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (customer_id) DO UPDATE SET
                broker_id = excluded.broker_id, registered_at = excluded.registered_at,
                expires_at = excluded.expires_at
             WHERE registrations.broker_id IS NOT excluded.broker_id
                OR registrations.registered_at IS NOT excluded.registered_at
                OR registrations.expires_at IS NOT excluded.expires_at",
        )?
        .execute(params![
            r.customer_id,
            r.broker_id,
            micros(r.registered_at),
            r.expires_at.map(micros)
        ])?;
    log_if(tx, changed, RosterEntry::Registration(r.clone()), now)
}

fn delete(tx: &Transaction<'_>, entity: Entity, key: &str, now: i64) -> Result<(), HubStoreError> {
    let sql = match entity {
        Entity::Registration => "DELETE FROM registrations WHERE customer_id = ?1",
        Entity::Consultant => {
            let customers: i64 = tx
                .prepare_cached("SELECT count(*) FROM customers WHERE consultant_id = ?1")?
                .query_row([key], |r| r.get(0))?;
            if customers > 0 {
                return Err(HubStoreError::Conflict(Conflict::ConsultantInUse {
                    id: key.to_owned(),
                    customers: rows::unsigned(customers, "a customer count")?,
                }));
            }
            "DELETE FROM consultants WHERE id = ?1"
        }
        Entity::Customer => {
            // Their cards go first, each with its tombstone, so a kiosk replaying the
            // log never holds a card whose customer is gone.
            let tokens = tx
                .prepare_cached("SELECT token FROM cards WHERE customer_id = ?1 ORDER BY token")?
                .query_map([key], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            tx.prepare_cached("DELETE FROM cards WHERE customer_id = ?1")?
                .execute([key])?;
            for token in &tokens {
                log(tx, Entity::Card, token, None, now)?;
            }
            // Their registration next, for the same reason.
            if tx
                .prepare_cached("DELETE FROM registrations WHERE customer_id = ?1")?
                .execute([key])?
                > 0
            {
                log(tx, Entity::Registration, key, None, now)?;
            }
            "DELETE FROM customers WHERE id = ?1"
        }
        Entity::Card => "DELETE FROM cards WHERE token = ?1",
        Entity::Broker => {
            let registrations: i64 = tx
                .prepare_cached("SELECT count(*) FROM registrations WHERE broker_id = ?1")?
                .query_row([key], |r| r.get(0))?;
            if registrations > 0 {
                return Err(HubStoreError::Conflict(Conflict::BrokerInUse {
                    id: key.to_owned(),
                    registrations: rows::unsigned(registrations, "a registration count")?,
                }));
            }
            "DELETE FROM brokers WHERE id = ?1"
        }
    };
    if tx.prepare_cached(sql)?.execute([key])? == 0 {
        return Err(HubStoreError::NotFound {
            entity: entity.as_str(),
            key: key.to_owned(),
        });
    }
    log(tx, entity, key, None, now)
}

type KioskColumns = (String, String, String, i64);

fn kiosk_columns(r: &rusqlite::Row<'_>) -> rusqlite::Result<KioskColumns> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn kiosk_row(
    (id, office_id, token_hash, high_water): KioskColumns,
) -> Result<KioskRow, HubStoreError> {
    Ok(KioskRow {
        id,
        office_id,
        token_hash,
        high_water: rows::unsigned(high_water, "a high-water")?,
    })
}

fn card_columns(r: &rusqlite::Row<'_>) -> rusqlite::Result<CardEntry> {
    Ok(CardEntry {
        token: r.get(0)?,
        customer_id: r.get(1)?,
        status: r.get(2)?,
        note: r.get(3)?,
        low24_only: r.get(4)?,
    })
}

fn micros(t: jiff::Timestamp) -> i64 {
    t.as_microsecond()
}

fn timestamp(micros: i64) -> Result<jiff::Timestamp, HubStoreError> {
    jiff::Timestamp::from_microsecond(micros)
        .map_err(|e| HubStoreError::Corrupt(format!("timestamp {micros}: {e}")))
}

fn uuid(text: &str) -> Result<Uuid, HubStoreError> {
    Uuid::parse_str(text).map_err(|e| HubStoreError::Corrupt(format!("record id {text:?}: {e}")))
}
