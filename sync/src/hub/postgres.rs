//! The hub store on PostgreSQL: a connection pool; several hub processes may share one database.
//!
//! A batch locks its kiosk's row first (`SELECT … FOR UPDATE`), so batches of one kiosk
//! are serialized across processes; its records go in with one multi-row insert (arrays
//! unnested), and the lines that did not go in are explained by one more query.
//!
//! Roster writes take a transaction-scoped advisory lock as their first statement and
//! draw cursors (an identity column) after it. PostgreSQL releases that lock only after
//! the commit is visible, so cursors become visible in increasing order: a reader who
//! has seen cursor N never later finds a change below N. Each upsert is one statement
//! (checks, upsert and log entry together), so an import costs one round trip per entry.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, Transaction,
};
use futures_util::TryStreamExt as _;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls};
use uuid::Uuid;

use crate::wire::{
    BatchReply, BrokerEntry, CardEntry, ConsultantEntry, CursorExpired, CustomerEntry, Entity,
    ItemResult, ItemStatus, RegistrationEntry, RosterEntry, RosterPage, SnapshotHead,
};

use super::rows::{self, Binding, BindingFacts, BindingWrites, Effect, Line, RecordRow, RejectRow};
use super::store::{
    Conflict, DayReport, HubCustomer, HubStoreError, ImportCounts, Incoming, KioskRow,
    RosterImport, StoredConsent, StoredRecord, StoredReject, with_causes,
};

/// The schema this build writes; a newer database is refused, an older one migrated.
const SCHEMA_VERSION: i64 = 2;

/// Advisory lock keys (they are per database): creating the schema, and writing the
/// roster. Arbitrary constants, spelled to be recognizable in `pg_locks`.
const SCHEMA_LOCK: i64 = 0x6b69_6f73_6b00_0001;
const ROSTER_LOCK: i64 = 0x6b69_6f73_6b00_0002;

/// A PostgreSQL that does not answer fails the call instead of hanging it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call waits for a free connection when every one is busy.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// The whole schema of version 1; see `sqlite.rs` for the same shape, commented.
/// Bodies are TEXT, not JSONB: a record's body is the evidence, kept byte for byte
/// (cast to `json` to query it). A new database gets it and then every migration.
pub(super) const SCHEMA_V1: &str = "
CREATE TABLE kiosks (
    id TEXT PRIMARY KEY,
    office_id TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    high_water BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE records (
    id UUID PRIMARY KEY,
    kiosk_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    office_id TEXT NOT NULL,
    customer_id TEXT,
    outcome TEXT,
    office_day TEXT,
    device_time TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (kiosk_id, seq)
);
CREATE INDEX records_office_day ON records (office_id, office_day);

CREATE TABLE rejects (
    n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kiosk_id TEXT NOT NULL,
    seq BIGINT,
    record_id UUID,
    kind TEXT,
    reason TEXT NOT NULL,
    raw TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX rejects_kiosk_seq ON rejects (kiosk_id, seq) WHERE seq IS NOT NULL;
CREATE INDEX rejects_kiosk ON rejects (kiosk_id);

CREATE TABLE consultants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    name TEXT,
    surname TEXT NOT NULL,
    title TEXT NOT NULL,
    tier TEXT NOT NULL,
    phone TEXT UNIQUE,
    consultant_id TEXT REFERENCES consultants (id)
);
CREATE INDEX customers_consultant ON customers (consultant_id);

CREATE TABLE cards (
    token TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    status TEXT NOT NULL,
    note TEXT,
    low24_only BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX cards_customer ON cards (customer_id);

CREATE TABLE brokers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    company TEXT
);

CREATE TABLE roster_log (
    cursor BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT,
    changed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX roster_log_changed ON roster_log (changed_at);

INSERT INTO meta (key, value) VALUES ('schema_version', 1), ('pruned_upto', 0);
";

/// Version 2 (reception), as in `sqlite.rs`: customers' source and last follow-up,
/// broker registrations, consents.
const SCHEMA_V2: &str = "
ALTER TABLE customers ADD COLUMN source TEXT, ADD COLUMN last_follow_up TIMESTAMPTZ;

CREATE TABLE registrations (
    customer_id TEXT PRIMARY KEY REFERENCES customers (id),
    broker_id TEXT NOT NULL REFERENCES brokers (id),
    registered_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ
);
CREATE INDEX registrations_broker ON registrations (broker_id);

CREATE TABLE consents (
    record_id UUID PRIMARY KEY,
    customer_id TEXT NOT NULL,
    kiosk_id TEXT NOT NULL,
    notice_version TEXT NOT NULL,
    given_at TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX consents_customer ON consents (customer_id);

UPDATE meta SET value = 2 WHERE key = 'schema_version';
";

/// `MIGRATIONS[n]` takes a database from version `n + 1` to `n + 2`.
const MIGRATIONS: [&str; 1] = [SCHEMA_V2];

const CUSTOMER_COLUMNS: &str =
    "id, name, surname, title, tier, phone, consultant_id, source, last_follow_up";

/// A batch's records in one statement; the ordinality keeps the batch's order, so of
/// two lines with one id the first is the one stored.
const INSERT_RECORDS: &str = "
INSERT INTO records
    (id, kiosk_id, seq, kind, office_id, customer_id, outcome, office_day, device_time, received_at, body)
SELECT u.id, $1, u.seq, u.kind, u.office_id, u.customer_id, u.outcome, u.office_day, u.device_time, $2, u.body
FROM UNNEST($3::uuid[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
            $10::timestamptz[], $11::text[])
    WITH ORDINALITY AS u(id, seq, kind, office_id, customer_id, outcome, office_day, device_time, body, n)
ORDER BY u.n
ON CONFLICT DO NOTHING
RETURNING id";

/// What holds the ids or the seqs of the records that did not go in.
const EXPLAIN_CONFLICTS: &str = "
SELECT id, kiosk_id, seq FROM records
WHERE id = ANY($2::uuid[]) OR (kiosk_id = $1 AND seq = ANY($3::bigint[]))";

const INSERT_REJECTS: &str = "
INSERT INTO rejects (kiosk_id, seq, record_id, kind, reason, raw, received_at)
SELECT $1, u.seq, u.record_id, u.kind, u.reason, u.raw, $2
FROM UNNEST($3::bigint[], $4::uuid[], $5::text[], $6::text[], $7::text[])
    WITH ORDINALITY AS u(seq, record_id, kind, reason, raw, n)
ORDER BY u.n
ON CONFLICT DO NOTHING";

/// The seqs a kiosk holds (records and rejects) in a window above its high-water.
const HELD_SEQS: &str = "
SELECT seq FROM records WHERE kiosk_id = $1 AND seq > $2 AND seq <= $3
UNION
SELECT seq FROM rejects WHERE kiosk_id = $1 AND seq > $2 AND seq <= $3
ORDER BY seq";

const UPSERT_CONSULTANT: &str = "
WITH up AS (
    INSERT INTO consultants (id, name) VALUES ($1::text, $2::text)
    ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name
    WHERE consultants.name IS DISTINCT FROM EXCLUDED.name
    RETURNING id)
INSERT INTO roster_log (entity, key, body, changed_at)
SELECT 'consultant', id, $3::text, $4::timestamptz FROM up
RETURNING cursor";

/// Checks, upsert and log entry in one statement: `taken` and `missing` name what
/// refuses the write (nothing is written then); `cursor` is NULL when nothing changed.
const UPSERT_CUSTOMER: &str = "
WITH taken AS (
    SELECT id FROM customers WHERE phone = $6::text AND id <> $1::text LIMIT 1),
missing AS (
    SELECT $7::text AS id
    WHERE $7::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM consultants WHERE id = $7::text)),
up AS (
    INSERT INTO customers
        (id, name, surname, title, tier, phone, consultant_id, source, last_follow_up)
    SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $10::text,
           $11::timestamptz
    WHERE NOT EXISTS (SELECT 1 FROM taken) AND NOT EXISTS (SELECT 1 FROM missing)
    ON CONFLICT (id) DO UPDATE SET
        name = EXCLUDED.name, surname = EXCLUDED.surname, title = EXCLUDED.title,
        tier = EXCLUDED.tier, phone = EXCLUDED.phone, consultant_id = EXCLUDED.consultant_id,
        source = EXCLUDED.source, last_follow_up = EXCLUDED.last_follow_up
    WHERE (customers.name, customers.surname, customers.title, customers.tier,
           customers.phone, customers.consultant_id, customers.source,
           customers.last_follow_up)
        IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.surname, EXCLUDED.title, EXCLUDED.tier,
                          EXCLUDED.phone, EXCLUDED.consultant_id, EXCLUDED.source,
                          EXCLUDED.last_follow_up)
    RETURNING id),
logged AS (
    INSERT INTO roster_log (entity, key, body, changed_at)
    SELECT 'customer', id, $8::text, $9::timestamptz FROM up
    RETURNING cursor)
SELECT (SELECT id FROM taken), (SELECT id FROM missing), (SELECT cursor FROM logged)";

/// As for customers: `owner` is false when the customer is absent, `taken` names the
/// customer holding the card active.
const UPSERT_CARD: &str = "
WITH owner AS (
    SELECT 1 FROM customers WHERE id = $2::text),
taken AS (
    SELECT customer_id FROM cards
    WHERE token = $1::text AND status = 'active' AND customer_id <> $2::text
      AND $3::text = 'active'),
up AS (
    INSERT INTO cards (token, customer_id, status, note, low24_only)
    SELECT $1::text, $2::text, $3::text, $4::text, $5::boolean
    WHERE EXISTS (SELECT 1 FROM owner) AND NOT EXISTS (SELECT 1 FROM taken)
    ON CONFLICT (token) DO UPDATE SET
        customer_id = EXCLUDED.customer_id, status = EXCLUDED.status,
        note = EXCLUDED.note, low24_only = EXCLUDED.low24_only
    WHERE (cards.customer_id, cards.status, cards.note, cards.low24_only)
        IS DISTINCT FROM (EXCLUDED.customer_id, EXCLUDED.status, EXCLUDED.note,
                          EXCLUDED.low24_only)
    RETURNING token),
logged AS (
    INSERT INTO roster_log (entity, key, body, changed_at)
    SELECT 'card', token, $6::text, $7::timestamptz FROM up
    RETURNING cursor)
SELECT EXISTS (SELECT 1 FROM owner), (SELECT customer_id FROM taken), (SELECT cursor FROM logged)";

const UPSERT_BROKER: &str = "
WITH up AS (
    INSERT INTO brokers (id, name, company) VALUES ($1::text, $2::text, $3::text)
    ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, company = EXCLUDED.company
    WHERE (brokers.name, brokers.company) IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.company)
    RETURNING id)
INSERT INTO roster_log (entity, key, body, changed_at)
SELECT 'broker', id, $4::text, $5::timestamptz FROM up
RETURNING cursor";

/// As for cards: `owner` and `broker` are false when absent (nothing is written then).
const UPSERT_REGISTRATION: &str = "
WITH owner AS (
    SELECT 1 FROM customers WHERE id = $1::text),
broker AS (
    SELECT 1 FROM brokers WHERE id = $2::text),
up AS (
    INSERT INTO registrations (customer_id, broker_id, registered_at, expires_at)
    SELECT $1::text, $2::text, $3::timestamptz, $4::timestamptz
    WHERE EXISTS (SELECT 1 FROM owner) AND EXISTS (SELECT 1 FROM broker)
    ON CONFLICT (customer_id) DO UPDATE SET
        broker_id = EXCLUDED.broker_id, registered_at = EXCLUDED.registered_at,
        expires_at = EXCLUDED.expires_at
    WHERE (registrations.broker_id, registrations.registered_at, registrations.expires_at)
        IS DISTINCT FROM (EXCLUDED.broker_id, EXCLUDED.registered_at, EXCLUDED.expires_at)
    RETURNING customer_id),
logged AS (
    INSERT INTO roster_log (entity, key, body, changed_at)
    SELECT 'registration', customer_id, $5::text, $6::timestamptz FROM up
    RETURNING cursor)
SELECT EXISTS (SELECT 1 FROM owner), EXISTS (SELECT 1 FROM broker), (SELECT cursor FROM logged)";

const REGISTRATION_COLUMNS: &str = "customer_id, broker_id, registered_at, expires_at";

/// The largest cursor assigned so far, as of this transaction: the log's newest entry,
/// or the highest pruned one when the log was pruned empty.
const HEAD_CURSOR: &str = "GREATEST(
    COALESCE((SELECT max(cursor) FROM roster_log), 0),
    (SELECT value FROM meta WHERE key = 'pruned_upto'))";

#[derive(Debug, Clone)]
pub struct PgHub {
    pool: Pool,
}

impl From<PoolError> for HubStoreError {
    fn from(e: PoolError) -> HubStoreError {
        HubStoreError::Pool(format!(
            "{}; check that PostgreSQL is running and the hub's database URL (host, port, user, password, database)",
            with_causes(&e)
        ))
    }
}

impl PgHub {
    pub async fn open(url: &str) -> Result<PgHub, HubStoreError> {
        // The error never quotes the URL: it may carry a password.
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| HubStoreError::Open(format!("the PostgreSQL URL is not valid: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("kiosk-hub");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| HubStoreError::Open(format!("cannot set up the PostgreSQL pool: {e}")))?;
        let hub = PgHub { pool };
        hub.migrate().await?;
        Ok(hub)
    }

    /// Creates the schema in an empty database, migrates an older one in place; refuses
    /// one written by a newer hub.
    /// The advisory lock lets two hubs starting together take turns.
    async fn migrate(&self) -> Result<(), HubStoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        )
        .await?;
        let version: Option<i64> = tx
            .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        let found = match version {
            None => {
                tx.batch_execute(SCHEMA_V1).await?;
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
        // In place, in this one transaction: a failed step leaves the database as it was.
        for step in &MIGRATIONS[usize::try_from(found - 1).unwrap_or(0)..] {
            tx.batch_execute(step).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn add_kiosk(
        &self,
        id: &str,
        office_id: &str,
        token_hash: &str,
    ) -> Result<(), HubStoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO kiosks (id, office_id, token_hash) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO NOTHING",
            )
            .await?;
        if client
            .execute(&stmt, &[&id, &office_id, &token_hash])
            .await?
            == 0
        {
            return Err(HubStoreError::Conflict(Conflict::KioskExists {
                id: id.to_owned(),
            }));
        }
        Ok(())
    }

    pub async fn revoke_kiosk(&self, id: &str) -> Result<(), HubStoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached("DELETE FROM kiosks WHERE id = $1")
            .await?;
        if client.execute(&stmt, &[&id]).await? == 0 {
            return Err(HubStoreError::NotFound {
                entity: "kiosk",
                key: id.to_owned(),
            });
        }
        Ok(())
    }

    pub async fn kiosk(&self, id: &str) -> Result<Option<KioskRow>, HubStoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, office_id, token_hash, high_water FROM kiosks WHERE id = $1",
            )
            .await?;
        client
            .query_opt(&stmt, &[&id])
            .await?
            .map(|r| kiosk_row(&r))
            .transpose()
    }

    pub async fn kiosks(&self) -> Result<Vec<KioskRow>, HubStoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached("SELECT id, office_id, token_hash, high_water FROM kiosks ORDER BY id")
            .await?;
        client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(kiosk_row)
            .collect()
    }

    pub async fn store_batch(
        &self,
        kiosk_id: &str,
        items: Vec<Incoming>,
        received_at: jiff::Timestamp,
    ) -> Result<BatchReply, HubStoreError> {
        let lines = rows::plan(items);
        let at = SystemTime::from(received_at);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The kiosk's row lock serializes its batches, across hub processes too.
        let lock = tx
            .prepare_cached("SELECT high_water FROM kiosks WHERE id = $1 FOR UPDATE")
            .await?;
        let start: i64 = match tx.query_opt(&lock, &[&kiosk_id]).await? {
            Some(row) => row.try_get(0)?,
            None => {
                return Err(HubStoreError::NotFound {
                    entity: "kiosk",
                    key: kiosk_id.to_owned(),
                });
            }
        };

        // Records that change the roster are taken one by one, in batch order, between
        // runs of plain records stored with one statement each.
        let mut results: Vec<Option<ItemResult>> = vec![None; lines.len()];
        let mut run: Vec<(usize, Option<u64>, RecordRow)> = Vec::new();
        let mut rejects: Vec<(usize, RejectRow)> = Vec::new();
        let mut roster_locked = false;
        for (i, (seq, line)) in lines.into_iter().enumerate() {
            match line {
                Line::Record(mut r) => match r.effect.take() {
                    None => run.push((i, seq, r)),
                    Some(effect) => {
                        // What came before in the batch is stored (or kept) first, so
                        // this line sees it as a retry of the batch would.
                        let before = std::mem::take(&mut run);
                        store_run(&tx, kiosk_id, at, before, &mut results, &mut rejects).await?;
                        keep_rejects(&tx, kiosk_id, at, &mut rejects).await?;
                        if !roster_locked {
                            // Taken after the kiosk's row, as every batch does; an
                            // administrator's write takes only this one: no cycle.
                            let lock = tx
                                .prepare_cached("SELECT pg_advisory_xact_lock($1)")
                                .await?;
                            tx.execute(&lock, &[&ROSTER_LOCK]).await?;
                            roster_locked = true;
                        }
                        let (item, row) = effect_line(&tx, kiosk_id, at, seq, r, *effect).await?;
                        if let Some(slot) = results.get_mut(i) {
                            *slot = Some(item);
                        }
                        if let Some(row) = row {
                            rejects.push((i, row));
                        }
                    }
                },
                Line::Reject(r) => {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(rows::rejected(seq, &r.reason));
                    }
                    rejects.push((i, r));
                }
            }
        }
        store_run(&tx, kiosk_id, at, run, &mut results, &mut rejects).await?;
        keep_rejects(&tx, kiosk_id, at, &mut rejects).await?;

        let held = tx.prepare_cached(HELD_SEQS).await?;
        let mut high_water = start;
        loop {
            let end = rows::window_end(high_water);
            let seqs = tx
                .query(&held, &[&kiosk_id, &high_water, &end])
                .await?
                .iter()
                .map(|r| r.try_get::<_, i64>(0))
                .collect::<Result<Vec<_>, _>>()?;
            let from = high_water;
            high_water = rows::walk(high_water, seqs);
            // Stop at a gap, or when the window could not move (the end of i64).
            if high_water != end || end == from {
                break;
            }
        }
        if high_water != start {
            let update = tx
                .prepare_cached("UPDATE kiosks SET high_water = $2 WHERE id = $1")
                .await?;
            tx.execute(&update, &[&kiosk_id, &high_water]).await?;
        }
        tx.commit().await?;
        let items = results
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| HubStoreError::Corrupt("a batch line was left unanswered".into()))?;
        Ok(BatchReply {
            items,
            high_water: rows::unsigned(high_water, "a high-water")?,
        })
    }

    pub async fn records(
        &self,
        kiosk_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<StoredRecord>, HubStoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, kiosk_id, seq, kind, body, received_at FROM records
                 WHERE kiosk_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .await?;
        client
            .query(
                &stmt,
                &[&kiosk_id, &rows::signed(after_seq), &i64::from(limit)],
            )
            .await?
            .iter()
            .map(|r| {
                rows::stored_record(
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                    timestamp(r.try_get(5)?)?,
                )
            })
            .collect()
    }

    pub async fn rejects(&self, kiosk_id: &str) -> Result<Vec<StoredReject>, HubStoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT kiosk_id, seq, reason, raw, received_at FROM rejects
                 WHERE kiosk_id = $1 ORDER BY n",
            )
            .await?;
        client
            .query(&stmt, &[&kiosk_id])
            .await?
            .iter()
            .map(|r| {
                Ok(StoredReject {
                    kiosk_id: r.try_get(0)?,
                    seq: r
                        .try_get::<_, Option<i64>>(1)?
                        .map(|s| rows::unsigned(s, "a reject's seq"))
                        .transpose()?,
                    reason: r.try_get(2)?,
                    raw: r.try_get(3)?,
                    received_at: timestamp(r.try_get(4)?)?,
                })
            })
            .collect()
    }

    pub async fn record_count(&self) -> Result<u64, HubStoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached("SELECT count(*) FROM records")
            .await?;
        let n: i64 = client.query_one(&stmt, &[]).await?.try_get(0)?;
        rows::unsigned(n, "the record count")
    }

    pub async fn day_report(&self, office_id: &str, day: &str) -> Result<DayReport, HubStoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT count(*),
                        count(DISTINCT CASE WHEN outcome IN ('welcome', 'broker_confirmed')
                                            THEN customer_id END)
                 FROM records WHERE office_id = $1 AND office_day = $2 AND kind = 'visit'",
            )
            .await?;
        let row = client.query_one(&stmt, &[&office_id, &day]).await?;
        Ok(DayReport {
            records: rows::unsigned(row.try_get(0)?, "a record count")?,
            office_visits: rows::unsigned(row.try_get(1)?, "a visit count")?,
        })
    }

    pub async fn roster_changes(
        &self,
        since: u64,
        limit: u32,
    ) -> Result<Result<RosterPage, CursorExpired>, HubStoreError> {
        let limit = rows::page_limit(limit);
        let mut client = self.pool.get().await?;
        // One snapshot: a prune between the two queries must not slip by.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let pruned = rows::unsigned(pruned_upto(&tx).await?, "pruned_upto")?;
        if since < pruned {
            return Ok(Err(CursorExpired { oldest: pruned }));
        }
        let stmt = tx
            .prepare_cached(
                "SELECT cursor, entity, key, body FROM roster_log
                 WHERE cursor > $1 ORDER BY cursor LIMIT $2",
            )
            .await?;
        let changes = tx
            .query(&stmt, &[&rows::signed(since), &(i64::from(limit) + 1)])
            .await?
            .iter()
            .map(|r| rows::change(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))
            .collect::<Result<Vec<_>, _>>()?;
        if changes.is_empty() {
            let head: i64 = tx
                .query_one(&format!("SELECT {HEAD_CURSOR}"), &[])
                .await?
                .try_get(0)?;
            if since > rows::unsigned(head, "the roster cursor")? {
                // A cursor this hub never gave (restored from an older backup): the
                // kiosk must take a snapshot, or later changes would never reach it.
                return Ok(Err(CursorExpired { oldest: pruned }));
            }
        }
        tx.commit().await?;
        Ok(Ok(rows::page(since, changes, limit)))
    }

    pub async fn roster_snapshot(&self) -> Result<Vec<u8>, HubStoreError> {
        let mut client = self.pool.get().await?;
        // One snapshot: the head's cursor and count match the rows streamed after it.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let head = tx
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM consultants) + (SELECT count(*) FROM customers)
                          + (SELECT count(*) FROM cards) + (SELECT count(*) FROM brokers)
                          + (SELECT count(*) FROM registrations),
                            {HEAD_CURSOR}"
                ),
                &[],
            )
            .await?;
        let mut out = rows::SnapshotWriter::new(&SnapshotHead {
            cursor: rows::unsigned(head.try_get(1)?, "the roster cursor")?,
            entries: rows::unsigned(head.try_get(0)?, "the roster size")?,
        })?;
        // Rows are streamed, never collected: a million cards stay a stream.
        let mut found =
            std::pin::pin!(stream(&tx, "SELECT id, name FROM consultants ORDER BY id").await?);
        while let Some(r) = found.try_next().await? {
            out.entry(&RosterEntry::Consultant(ConsultantEntry {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
            }))?;
        }
        let mut found = std::pin::pin!(
            stream(
                &tx,
                "SELECT id, surname, title, tier, consultant_id, source, last_follow_up
                 FROM customers ORDER BY id",
            )
            .await?
        );
        while let Some(r) = found.try_next().await? {
            out.entry(&RosterEntry::Customer(CustomerEntry {
                id: r.try_get(0)?,
                surname: r.try_get(1)?,
                title: r.try_get(2)?,
                tier: r.try_get(3)?,
                consultant_id: r.try_get(4)?,
                source: r.try_get(5)?,
                last_follow_up: r
                    .try_get::<_, Option<SystemTime>>(6)?
                    .map(timestamp)
                    .transpose()?,
            }))?;
        }
        let mut found = std::pin::pin!(
            stream(
                &tx,
                "SELECT token, customer_id, status, note, low24_only FROM cards ORDER BY token",
            )
            .await?
        );
        while let Some(r) = found.try_next().await? {
            out.entry(&RosterEntry::Card(card_row(&r)?))?;
        }
        let mut found =
            std::pin::pin!(stream(&tx, "SELECT id, name, company FROM brokers ORDER BY id").await?);
        while let Some(r) = found.try_next().await? {
            out.entry(&RosterEntry::Broker(BrokerEntry {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                company: r.try_get(2)?,
            }))?;
        }
        let mut found = std::pin::pin!(
            stream(
                &tx,
                &format!("SELECT {REGISTRATION_COLUMNS} FROM registrations ORDER BY customer_id"),
            )
            .await?
        );
        while let Some(r) = found.try_next().await? {
            out.entry(&RosterEntry::Registration(registration_row(&r)?))?;
        }
        tx.commit().await?;
        out.finish()
    }

    pub async fn prune_roster_log(&self, before: jiff::Timestamp) -> Result<u64, HubStoreError> {
        let mut client = self.pool.get().await?;
        let tx = roster_tx(&mut client).await?;
        let row = tx
            .query_one(
                "WITH gone AS (DELETE FROM roster_log WHERE changed_at < $1 RETURNING cursor)
                 SELECT count(*), max(cursor) FROM gone",
                &[&SystemTime::from(before)],
            )
            .await?;
        let dropped: i64 = row.try_get(0)?;
        if let Some(highest) = row.try_get::<_, Option<i64>>(1)? {
            tx.execute(
                "UPDATE meta SET value = GREATEST(value, $1) WHERE key = 'pruned_upto'",
                &[&highest],
            )
            .await?;
        }
        tx.commit().await?;
        rows::unsigned(dropped, "a pruned count")
    }

    pub async fn import(&self, roster: RosterImport) -> Result<ImportCounts, HubStoreError> {
        let mut client = self.pool.get().await?;
        let tx = roster_tx(&mut client).await?;
        let now = SystemTime::from(jiff::Timestamp::now());
        let mut counts = ImportCounts::default();
        // Any conflict returns early: the transaction is dropped, nothing is stored.
        for c in &roster.consultants {
            counts.consultants += u64::from(upsert_consultant(&tx, c, now).await?);
        }
        for c in &roster.customers {
            counts.customers += u64::from(upsert_customer(&tx, c, now).await?);
        }
        for c in &roster.cards {
            counts.cards += u64::from(upsert_card(&tx, c, now).await?);
        }
        for b in &roster.brokers {
            counts.brokers += u64::from(upsert_broker(&tx, b, now).await?);
        }
        for r in &roster.registrations {
            counts.registrations += u64::from(upsert_registration(&tx, r, now).await?);
        }
        tx.commit().await?;
        Ok(counts)
    }

    pub async fn upsert_consultant(&self, c: ConsultantEntry) -> Result<(), HubStoreError> {
        let mut client = self.pool.get().await?;
        let tx = roster_tx(&mut client).await?;
        upsert_consultant(&tx, &c, SystemTime::from(jiff::Timestamp::now())).await?;
        Ok(tx.commit().await?)
    }

    pub async fn upsert_customer(&self, c: HubCustomer) -> Result<(), HubStoreError> {
        let mut client = self.pool.get().await?;
        let tx = roster_tx(&mut client).await?;
        upsert_customer(&tx, &c, SystemTime::from(jiff::Timestamp::now())).await?;
        Ok(tx.commit().await?)
    }

    pub async fn upsert_card(&self, c: CardEntry) -> Result<(), HubStoreError> {
        let mut client = self.pool.get().await?;
        let tx = roster_tx(&mut client).await?;
        upsert_card(&tx, &c, SystemTime::from(jiff::Timestamp::now())).await?;
        Ok(tx.commit().await?)
    }

    pub async fn upsert_broker(&self, b: BrokerEntry) -> Result<(), HubStoreError> {
        let mut client = self.pool.get().await?;
        let tx = roster_tx(&mut client).await?;
        upsert_broker(&tx, &b, SystemTime::from(jiff::Timestamp::now())).await?;
        Ok(tx.commit().await?)
    }

    pub async fn upsert_registration(&self, r: RegistrationEntry) -> Result<(), HubStoreError> {
        let mut client = self.pool.get().await?;
        let tx = roster_tx(&mut client).await?;
        upsert_registration(&tx, &r, SystemTime::from(jiff::Timestamp::now())).await?;
        Ok(tx.commit().await?)
    }

    pub async fn delete(&self, entity: Entity, key: &str) -> Result<(), HubStoreError> {
        let mut client = self.pool.get().await?;
        let tx = roster_tx(&mut client).await?;
        let now = SystemTime::from(jiff::Timestamp::now());
        let sql = match entity {
            Entity::Registration => DELETE_REGISTRATION,
            Entity::Consultant => {
                let customers: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM customers WHERE consultant_id = $1",
                        &[&key],
                    )
                    .await?
                    .try_get(0)?;
                if customers > 0 {
                    return Err(HubStoreError::Conflict(Conflict::ConsultantInUse {
                        id: key.to_owned(),
                        customers: rows::unsigned(customers, "a customer count")?,
                    }));
                }
                "WITH gone AS (DELETE FROM consultants WHERE id = $1 RETURNING id)
                 INSERT INTO roster_log (entity, key, body, changed_at)
                 SELECT 'consultant', id, NULL, $2 FROM gone"
            }
            Entity::Customer => {
                // Their cards go first, each with its tombstone, so a kiosk replaying
                // the log never holds a card whose customer is gone.
                tx.execute(
                    "WITH gone AS (DELETE FROM cards WHERE customer_id = $1 RETURNING token)
                     INSERT INTO roster_log (entity, key, body, changed_at)
                     SELECT 'card', token, NULL, $2 FROM gone ORDER BY token",
                    &[&key, &now],
                )
                .await?;
                // Their registration next, for the same reason.
                tx.execute(DELETE_REGISTRATION, &[&key, &now]).await?;
                "WITH gone AS (DELETE FROM customers WHERE id = $1 RETURNING id)
                 INSERT INTO roster_log (entity, key, body, changed_at)
                 SELECT 'customer', id, NULL, $2 FROM gone"
            }
            Entity::Card => {
                "WITH gone AS (DELETE FROM cards WHERE token = $1 RETURNING token)
                 INSERT INTO roster_log (entity, key, body, changed_at)
                 SELECT 'card', token, NULL, $2 FROM gone"
            }
            Entity::Broker => {
                let registrations: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM registrations WHERE broker_id = $1",
                        &[&key],
                    )
                    .await?
                    .try_get(0)?;
                if registrations > 0 {
                    return Err(HubStoreError::Conflict(Conflict::BrokerInUse {
                        id: key.to_owned(),
                        registrations: rows::unsigned(registrations, "a registration count")?,
                    }));
                }
                "WITH gone AS (DELETE FROM brokers WHERE id = $1 RETURNING id)
                 INSERT INTO roster_log (entity, key, body, changed_at)
                 SELECT 'broker', id, NULL, $2 FROM gone"
            }
        };
        let stmt = tx.prepare_cached(sql).await?;
        if tx.execute(&stmt, &[&key, &now]).await? == 0 {
            return Err(HubStoreError::NotFound {
                entity: entity.as_str(),
                key: key.to_owned(),
            });
        }
        Ok(tx.commit().await?)
    }

    pub async fn customer(&self, id: &str) -> Result<Option<HubCustomer>, HubStoreError> {
        customer(&self.pool.get().await?, id).await
    }

    pub async fn card(&self, token: &str) -> Result<Option<CardEntry>, HubStoreError> {
        card(&self.pool.get().await?, token).await
    }

    pub async fn registration(
        &self,
        customer_id: &str,
    ) -> Result<Option<RegistrationEntry>, HubStoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {REGISTRATION_COLUMNS} FROM registrations WHERE customer_id = $1"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&customer_id])
            .await?
            .map(|r| registration_row(&r))
            .transpose()
    }

    pub async fn consents(&self, customer_id: &str) -> Result<Vec<StoredConsent>, HubStoreError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT record_id, customer_id, kiosk_id, notice_version, given_at FROM consents
                 WHERE customer_id = $1 ORDER BY given_at, record_id",
            )
            .await?;
        client
            .query(&stmt, &[&customer_id])
            .await?
            .iter()
            .map(|r| {
                Ok(StoredConsent {
                    record_id: r.try_get(0)?,
                    customer_id: r.try_get(1)?,
                    kiosk_id: r.try_get(2)?,
                    notice_version: r.try_get(3)?,
                    given_at: timestamp(r.try_get(4)?)?,
                })
            })
            .collect()
    }
}

const DELETE_REGISTRATION: &str =
    "WITH gone AS (DELETE FROM registrations WHERE customer_id = $1 RETURNING customer_id)
     INSERT INTO roster_log (entity, key, body, changed_at)
     SELECT 'registration', customer_id, NULL, $2 FROM gone";

/// A run of plain records (visits) in one insert; the lines that did not go in are
/// explained by one more query. Answers go to `results`, rejects to `rejects`.
async fn store_run(
    tx: &Transaction<'_>,
    kiosk_id: &str,
    at: SystemTime,
    run: Vec<(usize, Option<u64>, RecordRow)>,
    results: &mut [Option<ItemResult>],
    rejects: &mut Vec<(usize, RejectRow)>,
) -> Result<(), HubStoreError> {
    if run.is_empty() {
        return Ok(());
    }
    let mut inserted = insert_records(tx, kiosk_id, at, &run).await?;
    let mut unexplained: Vec<(usize, Option<u64>, RecordRow)> = Vec::new();
    for (i, seq, r) in run {
        // `remove`: of two lines with one id, only the first was inserted.
        if inserted.remove(&r.id) {
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(rows::item(seq, ItemStatus::Inserted));
            }
        } else {
            unexplained.push((i, seq, r));
        }
    }
    if unexplained.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = unexplained.iter().map(|(_, _, r)| r.id).collect();
    let seqs: Vec<i64> = unexplained.iter().map(|(_, _, r)| r.seq).collect();
    let stmt = tx.prepare_cached(EXPLAIN_CONFLICTS).await?;
    let mut known: HashMap<Uuid, (String, i64)> = HashMap::new();
    let mut holders = HashMap::new();
    for row in tx.query(&stmt, &[&kiosk_id, &ids, &seqs]).await? {
        let id: Uuid = row.try_get(0)?;
        let (k, s): (String, i64) = (row.try_get(1)?, row.try_get(2)?);
        if k == kiosk_id {
            holders.insert(s, id);
        }
        known.insert(id, (k, s));
    }
    for (i, seq, r) in unexplained {
        let result = if let Some((k, s)) = known.get(&r.id) {
            if k == kiosk_id && *s == r.seq {
                rows::item(seq, ItemStatus::Duplicate)
            } else {
                let row = RejectRow::id_taken(r, k, *s);
                let result = rows::rejected(seq, &row.reason);
                rejects.push((i, row));
                result
            }
        } else {
            // Only (kiosk_id, seq) is left to conflict on.
            let holder = holders
                .get(&r.seq)
                .map_or_else(|| "(unknown)".to_owned(), Uuid::to_string);
            let row = RejectRow::seq_taken(r, kiosk_id, holder);
            let result = rows::rejected(seq, &row.reason);
            rejects.push((i, row));
            result
        };
        if let Some(slot) = results.get_mut(i) {
            *slot = Some(result);
        }
    }
    Ok(())
}

/// Stores the rejects gathered so far, in batch order, so the rejects table reads like
/// the batch.
async fn keep_rejects(
    tx: &Transaction<'_>,
    kiosk_id: &str,
    at: SystemTime,
    rejects: &mut Vec<(usize, RejectRow)>,
) -> Result<(), HubStoreError> {
    if rejects.is_empty() {
        return Ok(());
    }
    rejects.sort_by_key(|(i, _)| *i);
    insert_rejects(tx, kiosk_id, at, rejects).await?;
    rejects.clear();
    Ok(())
}

/// A record that changes the roster, as in `sqlite.rs`: a retry is answered as the
/// first time was; a new one is checked against the roster (the roster lock is held),
/// then applied and stored, or refused. Returns the answer and the reject to keep.
async fn effect_line(
    tx: &Transaction<'_>,
    kiosk_id: &str,
    at: SystemTime,
    seq: Option<u64>,
    r: RecordRow,
    effect: Effect,
) -> Result<(ItemResult, Option<RejectRow>), HubStoreError> {
    let stmt = tx
        .prepare_cached("SELECT kiosk_id, seq FROM records WHERE id = $1")
        .await?;
    if let Some(row) = tx.query_opt(&stmt, &[&r.id]).await? {
        let (k, s): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        if k == kiosk_id && s == r.seq {
            return Ok((rows::item(seq, ItemStatus::Duplicate), None));
        }
        let row = RejectRow::id_taken(r, &k, s);
        return Ok((rows::rejected(seq, &row.reason), Some(row)));
    }
    let stmt = tx
        .prepare_cached("SELECT id FROM records WHERE kiosk_id = $1 AND seq = $2")
        .await?;
    if let Some(row) = tx.query_opt(&stmt, &[&kiosk_id, &r.seq]).await? {
        let row = RejectRow::seq_taken(r, kiosk_id, row.try_get::<_, Uuid>(0)?);
        return Ok((rows::rejected(seq, &row.reason), Some(row)));
    }
    // Refused before: the same answer, though the roster may have changed since.
    let stmt = tx
        .prepare_cached(
            "SELECT reason FROM rejects WHERE kiosk_id = $1 AND seq = $2 AND record_id = $3",
        )
        .await?;
    if let Some(row) = tx.query_opt(&stmt, &[&kiosk_id, &r.seq, &r.id]).await? {
        return Ok((rows::rejected(seq, &row.try_get::<_, String>(0)?), None));
    }
    let refusal = match &effect {
        Effect::Bind(b) => match rows::decide_binding(b, binding_facts(tx, b).await?) {
            Ok(writes) => {
                apply(tx, writes, at).await?;
                None
            }
            Err(refusal) => Some(refusal),
        },
        Effect::Revoke(v) => match rows::decide_revocation(v, card(tx, &v.card).await?) {
            Ok(card) => {
                upsert_card(tx, &card, at).await?;
                None
            }
            Err(refusal) => Some(refusal),
        },
    };
    if let Some(refusal) = refusal {
        let row = RejectRow::refused(r, &refusal);
        return Ok((rows::rejected(seq, &row.reason), Some(row)));
    }
    insert_records(tx, kiosk_id, at, &[(0, seq, r)]).await?;
    Ok((rows::item(seq, ItemStatus::Inserted), None))
}

/// What the roster holds that `b` is checked against.
async fn binding_facts(tx: &Transaction<'_>, b: &Binding) -> Result<BindingFacts, HubStoreError> {
    let mut facts = BindingFacts {
        customer: customer(tx, &b.customer_id).await?,
        card: card(tx, &b.card).await?,
        consultant_known: true,
        phone_holder: None,
    };
    if let Some(w) = &b.walk_in {
        let stmt = tx
            .prepare_cached("SELECT id FROM customers WHERE phone = $1 AND id <> $2 LIMIT 1")
            .await?;
        facts.phone_holder = tx
            .query_opt(&stmt, &[&w.customer.phone, &b.customer_id])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        if let Some(consultant) = &w.customer.consultant_id {
            let stmt = tx
                .prepare_cached("SELECT 1 FROM consultants WHERE id = $1")
                .await?;
            facts.consultant_known = tx.query_opt(&stmt, &[consultant]).await?.is_some();
        }
    }
    Ok(facts)
}

/// Writes an accepted binding: the roster changes (logged like an administrator's)
/// and the consent.
async fn apply(
    tx: &Transaction<'_>,
    writes: BindingWrites,
    now: SystemTime,
) -> Result<(), HubStoreError> {
    if let Some(c) = &writes.customer {
        upsert_customer(tx, c, now).await?;
    }
    if let Some(c) = &writes.card {
        upsert_card(tx, c, now).await?;
    }
    if let Some(c) = &writes.consent {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO consents
                    (record_id, customer_id, kiosk_id, notice_version, given_at, received_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &c.record_id,
                &c.customer_id,
                &c.kiosk_id,
                &c.notice_version,
                &SystemTime::from(c.given_at),
                &now,
            ],
        )
        .await?;
    }
    Ok(())
}

async fn customer(db: &impl GenericClient, id: &str) -> Result<Option<HubCustomer>, HubStoreError> {
    let stmt = db
        .prepare_cached(&format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = $1"
        ))
        .await?;
    db.query_opt(&stmt, &[&id])
        .await?
        .map(|r| {
            Ok(HubCustomer {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                surname: r.try_get(2)?,
                title: r.try_get(3)?,
                tier: r.try_get(4)?,
                phone: r.try_get(5)?,
                consultant_id: r.try_get(6)?,
                source: r.try_get(7)?,
                last_follow_up: r
                    .try_get::<_, Option<SystemTime>>(8)?
                    .map(timestamp)
                    .transpose()?,
            })
        })
        .transpose()
}

async fn card(db: &impl GenericClient, token: &str) -> Result<Option<CardEntry>, HubStoreError> {
    let stmt = db
        .prepare_cached(
            "SELECT token, customer_id, status, note, low24_only FROM cards WHERE token = $1",
        )
        .await?;
    db.query_opt(&stmt, &[&token])
        .await?
        .map(|r| card_row(&r))
        .transpose()
}

fn registration_row(r: &tokio_postgres::Row) -> Result<RegistrationEntry, HubStoreError> {
    Ok(RegistrationEntry {
        customer_id: r.try_get(0)?,
        broker_id: r.try_get(1)?,
        registered_at: timestamp(r.try_get(2)?)?,
        expires_at: r
            .try_get::<_, Option<SystemTime>>(3)?
            .map(timestamp)
            .transpose()?,
    })
}

/// Inserts a batch's records in one statement; returns the ids that went in.
async fn insert_records(
    tx: &Transaction<'_>,
    kiosk_id: &str,
    at: SystemTime,
    run: &[(usize, Option<u64>, RecordRow)],
) -> Result<HashSet<Uuid>, HubStoreError> {
    let records: Vec<&RecordRow> = run.iter().map(|(_, _, r)| r).collect();
    if records.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<Uuid> = records.iter().map(|r| r.id).collect();
    let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
    let kinds: Vec<&str> = records.iter().map(|r| r.kind).collect();
    let offices: Vec<&str> = records.iter().map(|r| r.office_id.as_str()).collect();
    let customers: Vec<Option<&str>> = records.iter().map(|r| r.customer_id.as_deref()).collect();
    let outcomes: Vec<Option<&str>> = records.iter().map(|r| r.outcome).collect();
    let days: Vec<Option<&str>> = records.iter().map(|r| r.office_day.as_deref()).collect();
    let device_times: Vec<SystemTime> = records
        .iter()
        .map(|r| SystemTime::from(r.device_time))
        .collect();
    let bodies: Vec<&str> = records.iter().map(|r| r.raw.as_str()).collect();
    let stmt = tx.prepare_cached(INSERT_RECORDS).await?;
    tx.query(
        &stmt,
        &[
            &kiosk_id,
            &at,
            &ids,
            &seqs,
            &kinds,
            &offices,
            &customers,
            &outcomes,
            &days,
            &device_times,
            &bodies,
        ],
    )
    .await?
    .iter()
    .map(|r| Ok(r.try_get::<_, Uuid>(0)?))
    .collect()
}

async fn insert_rejects(
    tx: &Transaction<'_>,
    kiosk_id: &str,
    at: SystemTime,
    rejects: &[(usize, RejectRow)],
) -> Result<(), HubStoreError> {
    let seqs: Vec<Option<i64>> = rejects.iter().map(|(_, r)| r.seq).collect();
    let ids: Vec<Option<Uuid>> = rejects.iter().map(|(_, r)| r.record_id).collect();
    let kinds: Vec<Option<&str>> = rejects.iter().map(|(_, r)| r.kind.as_deref()).collect();
    let reasons: Vec<&str> = rejects.iter().map(|(_, r)| r.reason.as_str()).collect();
    let raws: Vec<&str> = rejects.iter().map(|(_, r)| r.raw.as_str()).collect();
    let stmt = tx.prepare_cached(INSERT_REJECTS).await?;
    tx.execute(
        &stmt,
        &[&kiosk_id, &at, &seqs, &ids, &kinds, &reasons, &raws],
    )
    .await?;
    Ok(())
}

/// A roster write's transaction, holding the roster lock so cursors follow commit order.
async fn roster_tx(
    client: &mut deadpool_postgres::Client,
) -> Result<Transaction<'_>, HubStoreError> {
    let tx = client.transaction().await?;
    let lock = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1)")
        .await?;
    tx.execute(&lock, &[&ROSTER_LOCK]).await?;
    Ok(tx)
}

async fn pruned_upto(tx: &Transaction<'_>) -> Result<i64, HubStoreError> {
    let stmt = tx
        .prepare_cached("SELECT value FROM meta WHERE key = 'pruned_upto'")
        .await?;
    Ok(tx.query_one(&stmt, &[]).await?.try_get(0)?)
}

/// The rows of a parameterless query as a stream.
async fn stream(
    tx: &Transaction<'_>,
    sql: &str,
) -> Result<tokio_postgres::RowStream, HubStoreError> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx
        .query_raw(&stmt, std::iter::empty::<&(dyn ToSql + Sync)>())
        .await?)
}

async fn upsert_consultant(
    tx: &Transaction<'_>,
    c: &ConsultantEntry,
    now: SystemTime,
) -> Result<bool, HubStoreError> {
    let body = rows::log_body(&RosterEntry::Consultant(c.clone()))?;
    let stmt = tx.prepare_cached(UPSERT_CONSULTANT).await?;
    Ok(tx
        .query_opt(&stmt, &[&c.id, &c.name, &body, &now])
        .await?
        .is_some())
}

async fn upsert_customer(
    tx: &Transaction<'_>,
    c: &HubCustomer,
    now: SystemTime,
) -> Result<bool, HubStoreError> {
    let body = rows::log_body(&RosterEntry::Customer(c.kiosk_entry()))?;
    let stmt = tx.prepare_cached(UPSERT_CUSTOMER).await?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &c.id,
                &c.name,
                &c.surname,
                &c.title,
                &c.tier,
                &c.phone,
                &c.consultant_id,
                &body,
                &now,
                &c.source,
                &c.last_follow_up.map(SystemTime::from),
            ],
        )
        .await?;
    if let Some(existing) = row.try_get::<_, Option<String>>(0)? {
        return Err(HubStoreError::Conflict(Conflict::PhoneTaken { existing }));
    }
    if let Some(key) = row.try_get::<_, Option<String>>(1)? {
        return Err(HubStoreError::Conflict(Conflict::Missing {
            entity: "consultant",
            key,
        }));
    }
    Ok(row.try_get::<_, Option<i64>>(2)?.is_some())
}

async fn upsert_card(
    tx: &Transaction<'_>,
    c: &CardEntry,
    now: SystemTime,
) -> Result<bool, HubStoreError> {
    let body = rows::log_body(&RosterEntry::Card(c.clone()))?;
    let stmt = tx.prepare_cached(UPSERT_CARD).await?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &c.token,
                &c.customer_id,
                &c.status,
                &c.note,
                &c.low24_only,
                &body,
                &now,
            ],
        )
        .await?;
    if !row.try_get::<_, bool>(0)? {
        return Err(HubStoreError::Conflict(Conflict::Missing {
            entity: "customer",
            key: c.customer_id.clone(),
        }));
    }
    if let Some(existing) = row.try_get::<_, Option<String>>(1)? {
        return Err(HubStoreError::Conflict(Conflict::CardTaken {
            token: c.token.clone(),
            existing,
        }));
    }
    Ok(row.try_get::<_, Option<i64>>(2)?.is_some())
}

async fn upsert_registration(
    tx: &Transaction<'_>,
    r: &RegistrationEntry,
    now: SystemTime,
) -> Result<bool, HubStoreError> {
    let body = rows::log_body(&RosterEntry::Registration(r.clone()))?;
    let stmt = tx.prepare_cached(UPSERT_REGISTRATION).await?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &r.customer_id,
                &r.broker_id,
                &SystemTime::from(r.registered_at),
                &r.expires_at.map(SystemTime::from),
                &body,
                &now,
            ],
        )
        .await?;
    for (column, entity, key) in [(0, "customer", &r.customer_id), (1, "broker", &r.broker_id)] {
        if !row.try_get::<_, bool>(column)? {
            return Err(HubStoreError::Conflict(Conflict::Missing {
                entity,
                key: key.clone(),
            }));
        }
    }
    Ok(row.try_get::<_, Option<i64>>(2)?.is_some())
}

async fn upsert_broker(
    tx: &Transaction<'_>,
    b: &BrokerEntry,
    now: SystemTime,
) -> Result<bool, HubStoreError> {
    let body = rows::log_body(&RosterEntry::Broker(b.clone()))?;
    let stmt = tx.prepare_cached(UPSERT_BROKER).await?;
    Ok(tx
        .query_opt(&stmt, &[&b.id, &b.name, &b.company, &body, &now])
        .await?
        .is_some())
}

fn kiosk_row(r: &tokio_postgres::Row) -> Result<KioskRow, HubStoreError> {
    Ok(KioskRow {
        id: r.try_get(0)?,
        office_id: r.try_get(1)?,
        token_hash: r.try_get(2)?,
        high_water: rows::unsigned(r.try_get(3)?, "a high-water")?,
    })
}

fn card_row(r: &tokio_postgres::Row) -> Result<CardEntry, HubStoreError> {
    Ok(CardEntry {
        token: r.try_get(0)?,
        customer_id: r.try_get(1)?,
        status: r.try_get(2)?,
        note: r.try_get(3)?,
        low24_only: r.try_get(4)?,
    })
}

fn timestamp(t: SystemTime) -> Result<jiff::Timestamp, HubStoreError> {
    jiff::Timestamp::try_from(t).map_err(|e| HubStoreError::Corrupt(format!("a timestamp: {e}")))
}
