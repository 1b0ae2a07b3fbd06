//! The kiosk's SQLite store: roster, visits and the sync outbox, written through one writer thread.
//!
//! Durability: WAL with `synchronous = FULL`, so a commit is on disk when it returns;
//! the daemon acknowledges a visit (screen, API) only after that.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use kiosk_device::{CardToken, Method};
use kiosk_sync::wire;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::alerts::{Alerts, Raised};
use crate::reception::{
    self, AssignFacts, BrokerRegistration, KnownCustomer, Owner, ProtectionPeriods, Refusal, Source,
};
use crate::roster::{Roster, Tier, Title};
use crate::rotation::{load_rotation, save_rotation};
use crate::rules::{self, BrokerFacts, CardFacts, Decision, TapFacts, VisitKind};

/// The store's file inside `data_dir`.
pub const DB_FILE: &str = "kiosk.sqlite";

/// Reads the database file once from start to end and returns its size, so that its
/// pages are in the OS page cache before the first taps. After a reboot, a lookup in a
/// 1,000,000-card roster would otherwise read its B-tree pages from the SD card one by one:
/// measured, p99 238 µs cold against 11 µs warm (`cargo bench -p kiosk --bench roster`).
/// The pages go to the kernel's cache, not the daemon's memory (RSS does not grow), and
/// the kernel drops them again under memory pressure. Sequential reads of 256 KiB, so a
/// tap's fsync meanwhile waits behind one short read at most.
pub fn preread(data_dir: &Path) -> std::io::Result<u64> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(data_dir.join(DB_FILE))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

const SCHEMA_VERSION: i64 = 7;

/// What schema version 3 added for sync, in a macro so that the new-database schema
/// and the 2 → 3 migration are the same text.
macro_rules! schema_v3 {
    () => {
        r#"
-- The one upstream batch frozen before its first send, so every retry sends the same
-- bytes; gone once the hub's answer is applied or the batch is discarded. AUTOINCREMENT
-- so a batch id is never reused: a stale answer can never settle a later batch.
CREATE TABLE IF NOT EXISTS push_batch (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    first_seq  INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    records    INTEGER NOT NULL,
    body       BLOB NOT NULL,
    created_at TEXT NOT NULL
) STRICT;

-- Outbox rows the hub rejected, with its reason: kept for staff to see. The hub holds
-- them as rejects, so they count as sent and never block the queue.
CREATE TABLE IF NOT EXISTS quarantine (
    seq       INTEGER PRIMARY KEY,
    record_id TEXT NOT NULL,
    kind      TEXT NOT NULL,
    body      TEXT NOT NULL,
    reason    TEXT NOT NULL,
    at        TEXT NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS brokers (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    company TEXT
) STRICT;

-- Unsent rows are a short tail of a long outbox: finding the oldest, the next batch
-- and the backlog reads this small index, not the whole table.
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;

-- The roster log deletes a customer with their cards and a consultant by clearing
-- their customers; without these, each such delete (and its foreign-key check)
-- would scan a million cards.
CREATE INDEX IF NOT EXISTS cards_by_customer ON cards (customer_id);
CREATE INDEX IF NOT EXISTS customers_by_consultant ON customers (consultant_id);
"#
    };
}

/// What schema version 4 added for handheld devices, shared by the new-database schema
/// and the 3 → 4 migration.
macro_rules! schema_v4 {
    () => {
        r#"
-- Handheld devices (PDAs) allowed to post visits. Only the token's SHA-256 is kept:
-- the token itself is shown once by `kiosk devices add`.
CREATE TABLE IF NOT EXISTS devices (
    name          TEXT PRIMARY KEY,
    token_hash    TEXT NOT NULL UNIQUE,
    consultant_id TEXT,
    created_at    TEXT NOT NULL,
    revoked_at    TEXT
) STRICT;

-- Every accepted handheld post by the client's id, written in the visit's transaction:
-- a retried post finds its answer here instead of making a second visit.
CREATE TABLE IF NOT EXISTS device_posts (
    id        TEXT PRIMARY KEY,
    device    TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    visit_id  TEXT NOT NULL,
    note      TEXT,
    at        TEXT NOT NULL
) STRICT;
"#
    };
}

/// What schema version 5 added for the reception rotation, shared by the new-database
/// schema and the 4 → 5 migration.
macro_rules! schema_v5 {
    () => {
        r#"
-- The rotation queue (接待轮序) from head (position 0) to tail, replaced whole by every
-- change so it survives restarts. No foreign key to consultants: the roster may drop
-- a consultant who is still on duty, who can then still check out.
CREATE TABLE IF NOT EXISTS rotation (
    position      INTEGER PRIMARY KEY,
    consultant_id TEXT UNIQUE NOT NULL,
    busy          INTEGER NOT NULL CHECK (busy IN (0, 1))
) STRICT;
"#
    };
}

/// What schema version 6 added for webhooks, shared by the new-database schema and the
/// 5 → 6 migration.
macro_rules! schema_v6 {
    () => {
        r#"
-- Webhook deliveries, at least once: one row per configured webhook (`hook`: a stable
-- hash of its URL) and alert, the body frozen when queued. `next_at` in Unix
-- milliseconds; a delivered row keeps its `delivered_at`.
CREATE TABLE IF NOT EXISTS webhook_queue (
    id            INTEGER PRIMARY KEY,
    hook          INTEGER NOT NULL,
    consultant_id TEXT NOT NULL,
    body          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_at       INTEGER NOT NULL,
    last_error    TEXT,
    delivered_at  TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS webhook_queue_pending
    ON webhook_queue (hook, consultant_id, id) WHERE delivered_at IS NULL;
"#
    };
}

/// What schema version 7 added for reception (ownership and protection, broker check-in,
/// card issuing, staff devices, persisted alerts), shared by the new-database schema and
/// the 6 → 7 migration. New columns come by `ALTER TABLE` in both, so a new database
/// and a migrated one have the same shape.
macro_rules! schema_v7 {
    () => {
        r#"
-- Protection (保护期): where the customer came from picks the period, which runs from
-- the last qualifying contact with their consultant.
ALTER TABLE customers ADD COLUMN source TEXT
    CHECK (source IN ('outreach', 'phone', 'walk_in', 'broker'));
ALTER TABLE customers ADD COLUMN last_follow_up TEXT;

-- How the visitor was received: the broker confirmed at the door (确客), the owner a
-- stand-in served for (义务接待), a customer from the public pool (公海).
ALTER TABLE visits ADD COLUMN broker_id TEXT;
ALTER TABLE visits ADD COLUMN stand_in_for TEXT;
ALTER TABLE visits ADD COLUMN public_pool INTEGER NOT NULL DEFAULT 0 CHECK (public_pool IN (0, 1));

-- A staff device (the desk's console, the manager's tablet) may also bind and revoke
-- cards and read visits; a handheld only posts visits and receives alerts.
ALTER TABLE devices ADD COLUMN role TEXT NOT NULL DEFAULT 'handheld'
    CHECK (role IN ('handheld', 'staff'));

-- Broker reports (报备) from the roster, one live claim per customer.
CREATE TABLE IF NOT EXISTS broker_registrations (
    customer_id   TEXT PRIMARY KEY,
    broker_id     TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    expires_at    TEXT
) STRICT;

-- Cards bound or revoked at this kiosk (发卡, 挂失), each also an outbox record; `seq`
-- is that record's, so the console can show the hub's verdict from `quarantine`.
-- `body_hash` makes a retried request (same id) find its answer; `replaced` is the
-- card's row before a binding (JSON), put back if the hub rejects the binding.
CREATE TABLE IF NOT EXISTS card_changes (
    id            TEXT PRIMARY KEY,
    seq           INTEGER NOT NULL UNIQUE,
    op            TEXT NOT NULL CHECK (op IN ('bind', 'revoke')),
    card          TEXT NOT NULL,
    customer_id   TEXT,
    by_device     TEXT NOT NULL,
    at            TEXT NOT NULL,
    body_hash     TEXT NOT NULL,
    consultant_id TEXT,
    note          TEXT,
    replaced      TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS card_changes_by_card ON card_changes (card, seq);

-- Unknown cards are what staff bind at the desk: the console lists them without
-- reading every visit.
CREATE INDEX IF NOT EXISTS visits_unknown_cards ON visits (card) WHERE outcome = 'unknown';

-- Alerts to consultants' handhelds, kept until acknowledged so a restart neither loses
-- nor repeats an escalation. `kind`: welcome (the receiving consultant), owner (their
-- customer came while they were off duty), manager (a gold member), escalation (nobody
-- acknowledged in time).
CREATE TABLE IF NOT EXISTS alerts (
    id            TEXT PRIMARY KEY,
    consultant_id TEXT NOT NULL,
    kind          TEXT NOT NULL,
    visit_id      TEXT,
    body          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    acked_at      TEXT,
    acked_by      TEXT,
    escalated_at  TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS alerts_unacked ON alerts (created_at) WHERE acked_at IS NULL;

-- A broker's confirmation (确客) is the customer's office visit of the day like a
-- welcome; one that comes after the day's visit has no kind and is evidence only.
-- Dropped and made again so a new database and a migrated one have the same index.
DROP INDEX IF EXISTS visits_one_per_customer_day;
CREATE UNIQUE INDEX visits_one_per_customer_day ON visits (customer_id, office_day)
    WHERE outcome IN ('welcome', 'broker_confirmed') AND kind IS NOT NULL;
"#
    };
}

/// The whole schema at `SCHEMA_VERSION`, for a new database. A database written by an
/// older kiosk is brought here by `MIGRATIONS` instead, so a change here needs one there.
const SCHEMA: &str = concat!(
    r#"
-- Which kiosk this database belongs to: seq is per kiosk, so a database must never
-- change hands (a cloned SD card, an edited kiosk.id) silently.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
INSERT OR IGNORE INTO counters (name, value) VALUES ('outbox_seq', 0);

CREATE TABLE IF NOT EXISTS consultants (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL
) STRICT;

-- Only what the screen needs: surname and title, never a full name or a phone.
CREATE TABLE IF NOT EXISTS customers (
    id            TEXT PRIMARY KEY,
    surname       TEXT NOT NULL,
    title         TEXT NOT NULL CHECK (title IN ('mr', 'ms')),
    tier          TEXT NOT NULL CHECK (tier IN ('normal', 'silver', 'gold')),
    consultant_id TEXT REFERENCES consultants (id)
) STRICT;

CREATE TABLE IF NOT EXISTS cards (
    token       TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    status      TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    note        TEXT,
    -- 1 when the roster gave the card as DEZ8, which prints only the low 24 bits of an
    -- EM4100 number: the token is em:00 + those bits, and a tap of any em: card with
    -- the same low 24 bits matches it unless that card is listed exactly.
    low24_only  INTEGER NOT NULL DEFAULT 0 CHECK (low24_only IN (0, 1))
) STRICT;

-- Every recorded tap: counted customer visits (at most one per customer per office
-- day; schema v7 below says which) and uncounted evidence (unknown and denied cards).
CREATE TABLE IF NOT EXISTS visits (
    id              TEXT PRIMARY KEY,
    seq             INTEGER NOT NULL UNIQUE,
    source          TEXT NOT NULL,
    method          TEXT NOT NULL,
    card            TEXT,
    customer_id     TEXT,
    outcome         TEXT NOT NULL,
    reason          TEXT,
    reason_detail   TEXT,
    kind            TEXT,
    consultant_id   TEXT,
    stand_in        INTEGER NOT NULL DEFAULT 0,
    office_day      TEXT NOT NULL,
    device_time     TEXT NOT NULL,
    recorded_at     TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS visits_one_per_customer_day
    ON visits (customer_id, office_day) WHERE outcome = 'welcome';
CREATE INDEX IF NOT EXISTS visits_by_day ON visits (office_day, seq);

-- What sync will push: the record's JSON frozen at commit, in seq order.
CREATE TABLE IF NOT EXISTS outbox (
    seq       INTEGER PRIMARY KEY,
    record_id TEXT NOT NULL UNIQUE,
    kind      TEXT NOT NULL,
    body      TEXT NOT NULL,
    sent_at   TEXT
) STRICT;
"#,
    schema_v3!(),
    schema_v4!(),
    schema_v5!(),
    schema_v6!(),
    schema_v7!()
);

/// `MIGRATIONS[n - 1]` takes a database from version `n` to `n + 1`, keeping its data.
/// A migrated database must end up like a new one; the store's tests compare them.
const MIGRATIONS: &[&str] = &[
    // 1 → 2: cards given as DEZ8.
    "ALTER TABLE cards ADD COLUMN low24_only INTEGER NOT NULL DEFAULT 0 CHECK (low24_only IN (0, 1));",
    // 2 → 3: sync's frozen batch, quarantine, brokers and indexes; the roster cursor
    // and the last push and pull times are rows of `meta`.
    schema_v3!(),
    // 3 → 4: handheld devices and their posts.
    schema_v4!(),
    // 4 → 5: the rotation queue.
    schema_v5!(),
    // 5 → 6: the webhook queue.
    schema_v6!(),
    // 6 → 7: reception (protection, brokers, card issuing, staff devices, alerts).
    schema_v7!(),
];
const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION - 1);

/// Why the store failed; messages say what to check.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot create the data folder {path}: {source}; check that the folder can be created and written"
    )]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the kiosk database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the kiosk database {path} has schema version {found}, newer than this kiosk ({SCHEMA_VERSION}); install the newer kiosk again"
    )]
    TooNew { path: PathBuf, found: i64 },
    #[error(
        "the kiosk database in {path} belongs to kiosk {found_kiosk:?} of office {found_office:?}, but kiosk.id / kiosk.office say {kiosk:?} / {office:?}; point kiosk.data_dir at this kiosk's own folder (or an empty one), or restore the original kiosk.id and kiosk.office"
    )]
    OtherKiosk {
        path: PathBuf,
        found_kiosk: String,
        found_office: String,
        kiosk: String,
        office: String,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the saved rotation queue is damaged: {0}")]
    Rotation(#[from] crate::reception::RotationError),
    #[error("the store's writer thread has stopped")]
    WriterGone,
    /// The shared transaction of a group of writes could not begin or commit.
    #[error("database error in a group of writes: {0}")]
    Group(String),
}

/// Who this kiosk is, as the store needs it for visits.
#[derive(Debug, Clone)]
pub struct Identity {
    pub kiosk_id: String,
    pub office_id: String,
    pub time_zone: jiff::tz::TimeZone,
}

/// Opens (creating if needed) the database in `data_dir` and brings its schema up to date.
pub fn open(data_dir: &Path) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = data_dir.join(DB_FILE);
    let open_err = |source| StoreError::Open {
        path: path.clone(),
        source,
    };
    let mut conn = Connection::open(&path).map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    // A visit runs about 15 statements; all of them stay parsed (rusqlite keeps 16).
    conn.set_prepared_statement_cache_capacity(64);
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(open_err)?;
    let mut version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(open_err)?;
    if version < SCHEMA_VERSION {
        version = upgrade(&mut conn).map_err(open_err)?;
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path,
            found: version,
        });
    }
    Ok(conn)
}

/// Creates the schema in a new database or migrates an older one, in one transaction,
/// and returns the version the database now has.
///
/// The version is read again under the write lock: the daemon and a `roster import`
/// may open an old database at the same moment, and the loser must not run an
/// `ALTER TABLE` a second time.
fn upgrade(conn: &mut Connection) -> rusqlite::Result<i64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(version);
    }
    // 0 is a new file: every kiosk so far set a version together with its tables.
    if version <= 0 {
        tx.execute_batch(SCHEMA)?;
    } else {
        for step in &MIGRATIONS[(version - 1) as usize..] {
            tx.execute_batch(step)?;
        }
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(SCHEMA_VERSION)
}

/// A tap handed to the store.
#[derive(Debug, Clone)]
pub struct TapInput {
    pub source: String,
    pub token: CardToken,
    pub device_time: jiff::Timestamp,
}

/// The customer as the store keeps them; the masked name is all there is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerView {
    pub id: String,
    pub surname: String,
    pub title: Title,
    pub tier: Tier,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsultantView {
    pub id: String,
    pub name: String,
}

/// A stored visit, or the day's existing visit for a repeat tap.
#[derive(Debug, Clone)]
pub struct VisitView {
    pub id: Uuid,
    pub seq: u64,
    pub source: String,
    pub method: String,
    pub card: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub reason_detail: Option<String>,
    pub kind: Option<String>,
    pub customer: Option<CustomerView>,
    /// Who received the visitor (reception::assign): the owner, a stand-in, or the
    /// rotation's turn; `None` when nobody on duty was free, and for uncounted taps. A
    /// broker's confirmation after the day's visit keeps that visit's receiver.
    pub consultant: Option<ConsultantView>,
    pub office_day: String,
    pub device_time: String,
    pub recorded_at: String,
    /// The broker confirmed at the door (确客), or whose code was refused.
    pub broker_id: Option<String>,
    /// The customer's owner (consultant id) when they were off duty and are to be told:
    /// `consultant` stood in for them (义务接待), or, when `consultant` is `None`, nobody
    /// on duty could receive the customer.
    pub stand_in_for: Option<String>,
    /// The customer's protection had lapsed (公海).
    pub public_pool: bool,
}

/// The result of a tap, committed.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub decision: Decision,
    /// For a repeat tap, the day's existing visit.
    pub visit: VisitView,
    /// The alerts stored with the visit, to announce once it commits.
    pub alerts: Raised,
}

/// Summary of a roster import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    pub consultants: usize,
    pub customers: usize,
    pub cards: usize,
    /// Of `cards`, those given as DEZ8, known by their low 24 bits only.
    pub dez8_cards: usize,
    /// Customers with a broker registration (报备).
    pub registrations: usize,
}

/// Counts for the status page.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub visits_today: u64,
    pub outbox_backlog: u64,
    pub cards: u64,
}

/// The single writer. Owned by one thread in the daemon, used directly by the CLI.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    identity: Identity,
    /// The protection periods visits are assigned by (`[reception]`; the defaults until
    /// the daemon sets them).
    periods: ProtectionPeriods,
    /// Who hears of a visit: its alerts are stored in its transaction. `None` (tests,
    /// commands other than `run`): visits alert nobody.
    alerts: Option<Arc<Alerts>>,
    /// Groups the writer committed (see [`Writer`]); tests count commits by it.
    group_commits: u64,
}

struct CardRow {
    status: String,
    note: Option<String>,
    customer: CustomerView,
    /// The owner.
    consultant: Option<ConsultantView>,
    /// `customers.source`, which picks the protection period.
    source: Option<String>,
    /// `customers.last_follow_up` (RFC 3339), as the roster gives it.
    last_follow_up: Option<String>,
}

impl Store {
    /// Opens the store, binding a new database to this kiosk and refusing another kiosk's.
    pub fn open(data_dir: &Path, identity: Identity) -> Result<Store, StoreError> {
        let conn = open(data_dir)?;
        let get = |key: &str| -> rusqlite::Result<Option<String>> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        };
        match (get("kiosk_id")?, get("office_id")?) {
            (Some(k), Some(o)) if k == identity.kiosk_id && o == identity.office_id => {}
            (None, None) => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('kiosk_id', ?1), ('office_id', ?2)",
                    params![identity.kiosk_id, identity.office_id],
                )?;
            }
            (k, o) => {
                return Err(StoreError::OtherKiosk {
                    path: data_dir.to_owned(),
                    found_kiosk: k.unwrap_or_default(),
                    found_office: o.unwrap_or_default(),
                    kiosk: identity.kiosk_id,
                    office: identity.office_id,
                });
            }
        }
        Ok(Store {
            conn,
            identity,
            periods: ProtectionPeriods::DEFAULT,
            alerts: None,
            group_commits: 0,
        })
    }

    /// Makes every visit recorded from now on store its alerts in its own transaction.
    pub fn set_alerts(&mut self, alerts: Arc<Alerts>) {
        self.alerts = Some(alerts);
    }

    /// The alerts visits raise, for jobs that record visits with a borrowed connection.
    pub(crate) fn alerts(&self) -> Option<Arc<Alerts>> {
        self.alerts.clone()
    }

    /// Sets the protection periods of `[reception]` for the visits recorded from now on.
    pub fn set_protection_periods(&mut self, periods: ProtectionPeriods) {
        self.periods = periods;
    }

    /// The protection periods visits are assigned by.
    pub(crate) fn periods(&self) -> ProtectionPeriods {
        self.periods
    }

    /// The connection, for sync's jobs (`sync_side`), which run on the writer like taps.
    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Records a tap (visit + outbox row, one transaction) and returns what to show.
    pub fn record_tap(&mut self, tap: &TapInput) -> Result<Recorded, StoreError> {
        let presented = Presented::Card(tap.token.clone());
        let input = VisitInput {
            id: Uuid::now_v7(),
            source: &tap.source,
            presented: &presented,
            device_time: tap.device_time,
            received_at: tap.device_time,
        };
        self.retry_busy(|store| {
            let tx = store
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let alerts = store.alerts.as_deref();
            let recorded = record_in(&tx, &store.identity, &store.periods, alerts, &input)?;
            tx.commit()?;
            // A card always yields a visit; only a customer id can be unknown.
            recorded.ok_or(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
        })
    }

    /// [`Store::record_tap`] inside the writer's shared transaction
    /// ([`Writer::call_grouped`]): the group's commit makes it durable.
    pub fn record_tap_in_group(&mut self, tap: &TapInput) -> Result<Recorded, StoreError> {
        let presented = Presented::Card(tap.token.clone());
        let input = VisitInput {
            id: Uuid::now_v7(),
            source: &tap.source,
            presented: &presented,
            device_time: tap.device_time,
            received_at: tap.device_time,
        };
        let alerts = self.alerts.as_deref();
        let recorded = record_in(&self.conn, &self.identity, &self.periods, alerts, &input)?;
        recorded.ok_or(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
    }

    /// Runs a write, retrying it while another process holds the database (a large
    /// `roster import`) so that a tap waits rather than being lost; it gives up only
    /// after a minute.
    pub(crate) fn retry_busy<R>(
        &mut self,
        mut write: impl FnMut(&mut Store) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match write(self) {
                Err(StoreError::Sqlite(e))
                    if is_busy(&e) && std::time::Instant::now() < deadline =>
                {
                    tracing::warn!(error = %e, "database busy (a roster import?); retrying the write");
                }
                other => return other,
            }
        }
    }

    /// The identity visits are recorded under.
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Applies a validated roster in one transaction: all of it or none of it.
    pub fn import_roster(&mut self, roster: &Roster) -> Result<ImportSummary, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (id, name) in &roster.consultants {
            tx.execute(
                "INSERT INTO consultants (id, name) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                params![id, name],
            )?;
        }
        for c in roster.customers.values() {
            // A customer's rows describe them whole: protection and registration left
            // empty are cleared, as the consultant is.
            tx.execute(
                "INSERT INTO customers (id, surname, title, tier, consultant_id, source, last_follow_up)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (id) DO UPDATE SET surname = excluded.surname, title = excluded.title,
                     tier = excluded.tier, consultant_id = excluded.consultant_id,
                     source = excluded.source, last_follow_up = excluded.last_follow_up",
                params![
                    c.id,
                    c.surname,
                    c.title.as_str(),
                    c.tier.as_str(),
                    c.consultant_id,
                    c.source.map(Source::as_str),
                    c.last_follow_up.map(|t| t.to_string())
                ],
            )?;
            match &c.registration {
                Some(r) => tx.execute(
                    "INSERT INTO broker_registrations (customer_id, broker_id, registered_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (customer_id) DO UPDATE SET broker_id = excluded.broker_id,
                         registered_at = excluded.registered_at, expires_at = excluded.expires_at",
                    params![
                        c.id,
                        r.broker_id,
                        r.registered_at.to_string(),
                        r.expires_at.map(|t| t.to_string())
                    ],
                )?,
                None => tx.execute(
                    "DELETE FROM broker_registrations WHERE customer_id = ?1",
                    [&c.id],
                )?,
            };
        }
        for card in &roster.cards {
            tx.execute(
                "INSERT INTO cards (token, customer_id, status, note, low24_only) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (token) DO UPDATE SET customer_id = excluded.customer_id,
                     status = excluded.status, note = excluded.note, low24_only = excluded.low24_only",
                params![
                    card.token.as_str(),
                    card.customer_id,
                    if card.active { "active" } else { "revoked" },
                    card.note,
                    card.low24_only
                ],
            )?;
        }
        tx.commit()?;
        Ok(ImportSummary {
            consultants: roster.consultants.len(),
            customers: roster.customers.len(),
            cards: roster.cards.len(),
            dez8_cards: roster.cards.iter().filter(|c| c.low24_only).count(),
            registrations: roster
                .customers
                .values()
                .filter(|c| c.registration.is_some())
                .count(),
        })
    }
}

/// Who a visit is for: a card as read, or a customer picked by hand on a handheld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    Card(CardToken),
    Customer(String),
}

/// A visit to record: a tap at a reader, or a handheld's post.
#[derive(Debug, Clone)]
pub(crate) struct VisitInput<'a> {
    /// The visit's id: new for a tap, the client's for a handheld post (so that the hub
    /// stores it once, whichever kiosk sends it).
    pub id: Uuid,
    /// A reader's name, or `handheld:<device>`.
    pub source: &'a str,
    pub presented: &'a Presented,
    /// When the visitor was seen (a handheld's `at`).
    pub device_time: jiff::Timestamp,
    /// When the kiosk heard of it: a visit seen long before ([`reception::is_current`])
    /// takes no rotation turn and alerts nobody.
    pub received_at: jiff::Timestamp,
}

/// The rows of `visits` that count as the customer's office visit of their day (at most one
/// per customer and day, by `visits_one_per_customer_day`): a welcome, or a broker's
/// confirmation that was the day's first. A macro so queries can `concat!` it and keep the
/// exact terms of the index's `WHERE`, which lets SQLite use it.
macro_rules! counted {
    () => {
        "outcome IN ('welcome', 'broker_confirmed') AND kind IS NOT NULL"
    };
}

/// Records a visit (visit + outbox row) inside the caller's transaction, by the same
/// rules whoever presented it, and returns what to show; the caller commits.
/// `None` only for a customer id that is not in the roster: nothing was written.
///
/// A counted visit is received by someone (`reception::assign`, with `periods`): the
/// rotation is loaded, changed and saved in the same transaction, so the queue and the
/// visits that moved it are durable together.
///
/// A new counted visit's alerts (`alerts::recipients`) are stored in the same transaction
/// too, unless it was seen long before it reached the kiosk (`reception::is_current`).
pub(crate) fn record_in(
    tx: &Connection,
    identity: &Identity,
    periods: &ProtectionPeriods,
    alerts: Option<&Alerts>,
    input: &VisitInput<'_>,
) -> Result<Option<Recorded>, StoreError> {
    let office_day = input
        .device_time
        .to_zoned(identity.time_zone.clone())
        .date()
        .to_string();
    if let Presented::Card(token) = input.presented {
        if let Some(code) = reception::parse_broker_code(token.as_str()) {
            let recorded = record_broker_in(
                tx,
                identity,
                periods,
                alerts,
                input,
                token,
                &office_day,
                code,
            )?;
            return Ok(Some(recorded));
        }
    }
    let (row, random_uid, method, card) = match input.presented {
        Presented::Card(token) => (
            find_card(tx, token)?,
            token.is_random_uid(),
            token.method(),
            Some(token.as_str().to_owned()),
        ),
        Presented::Customer(id) => match find_customer(tx, id)? {
            // Chosen by staff on a handheld: like an active card of that customer.
            Some(row) => (Some(row), false, Method::Manual, None),
            None => return Ok(None),
        },
    };
    let (today_visit, visited_before) = match &row {
        Some(r) => (
            counted_today(tx, &r.customer.id, &office_day)?.map(|(id, _)| id),
            counted_before(tx, &r.customer.id, &office_day)?,
        ),
        None => (None, false),
    };
    let facts = TapFacts {
        random_uid,
        card: row.as_ref().map(|r| CardFacts {
            active: r.status == "active",
        }),
        visited_today: today_visit.is_some(),
        visited_before,
    };
    let decision = rules::decide(&facts);
    if let (Decision::Repeat, Some(id)) = (decision, &today_visit) {
        // Every tap greets, but the day's visit already exists: nothing to write.
        let visit = visit_by_id(tx, id)?;
        return Ok(Some(Recorded {
            decision,
            visit,
            alerts: Raised::default(),
        }));
    }
    let (outcome, reason, kind) = match decision {
        Decision::Welcome(kind) => (wire::Outcome::Welcome, None, Some(kind)),
        Decision::Unknown => (wire::Outcome::Unknown, None, None),
        Decision::Denied(r) => (wire::Outcome::Denied, Some(r), None),
        // Neither comes out of `decide` for a card: were they to, counting the tap as
        // a revisit keeps it rather than losing it.
        Decision::Repeat | Decision::BrokerConfirmed(_) => {
            (wire::Outcome::Welcome, None, Some(VisitKind::Revisit))
        }
    };
    // A random UID identifies nobody; keeping the customer of a roster row
    // that wrongly lists one would credit a phone's tap to a member.
    let row = if random_uid { None } else { row };
    let reason_detail = match reason {
        Some(rules::DenyReason::CardRevoked) => row.as_ref().and_then(|r| r.note.clone()),
        _ => None,
    };
    let received = match (&row, kind) {
        (Some(r), Some(_)) => receive(tx, periods, r, input)?,
        // Nobody receives an unknown or refused card.
        _ => Received::default(),
    };
    let visit = insert_visit(
        tx,
        identity,
        input,
        NewVisit {
            office_day,
            method,
            card,
            customer: row.map(|r| r.customer),
            outcome,
            reason: reason.map(|r| r.code().to_owned()),
            reason_detail,
            kind,
            received,
            broker_id: None,
        },
    )?;
    let alerts = raise_in(tx, alerts, &visit, input)?;
    Ok(Some(Recorded {
        decision,
        visit,
        alerts,
    }))
}

/// Stores a new visit's alerts in its transaction, when it is current.
fn raise_in(
    tx: &Connection,
    alerts: Option<&Alerts>,
    visit: &VisitView,
    input: &VisitInput<'_>,
) -> Result<Raised, StoreError> {
    match alerts {
        Some(alerts) if reception::is_current(input.device_time, input.received_at) => {
            Ok(alerts.store_for_visit(tx, visit, input.source, input.device_time)?)
        }
        _ => Ok(Raised::default()),
    }
}

/// A broker's scanned code (确客): confirmed, it is the customer's visit (counted unless the
/// day's visit exists); refused, a denied visit saying why. Either way the broker is named.
#[allow(clippy::too_many_arguments)] // the parts of a visit's recording, as record_in has them
fn record_broker_in(
    tx: &Connection,
    identity: &Identity,
    periods: &ProtectionPeriods,
    alerts: Option<&Alerts>,
    input: &VisitInput<'_>,
    token: &CardToken,
    office_day: &str,
    code: Result<reception::BrokerCode, reception::MalformedCode>,
) -> Result<Recorded, StoreError> {
    let (broker_id, row, check) = match code {
        Err(malformed) => (malformed.broker_id, None, Err(Refusal::MalformedCode)),
        Ok(code) => match find_customer(tx, &code.customer_id)? {
            None => (Some(code.broker_id), None, Err(Refusal::UnknownCustomer)),
            Some(row) => {
                let registration = broker_registration(tx, &code.customer_id)?;
                let check = reception::broker_check_in(
                    registration.as_ref(),
                    &code.broker_id,
                    input.device_time,
                    periods,
                )
                .map(drop);
                (Some(code.broker_id), Some(row), check)
            }
        },
    };
    let (today, visited_before, confirmed_today) = match (&row, &broker_id, check) {
        (Some(r), Some(broker), Ok(())) => (
            counted_today(tx, &r.customer.id, office_day)?,
            counted_before(tx, &r.customer.id, office_day)?,
            confirmed_today(tx, &r.customer.id, broker, office_day)?,
        ),
        _ => (None, false, None),
    };
    let decision = rules::decide_broker(&BrokerFacts {
        check,
        visited_today: today.is_some(),
        visited_before,
        confirmed_today: confirmed_today.is_some(),
    });
    if let (Decision::Repeat, Some(id)) = (decision, &confirmed_today) {
        let visit = visit_by_id(tx, id)?;
        return Ok(Recorded {
            decision,
            visit,
            alerts: Raised::default(),
        });
    }
    let (outcome, kind, received, reason, reason_detail) = match (decision, &row) {
        (Decision::BrokerConfirmed(Some(kind)), Some(r)) => (
            wire::Outcome::BrokerConfirmed,
            Some(kind),
            receive(tx, periods, r, input)?,
            None,
            None,
        ),
        (Decision::BrokerConfirmed(None), _) => (
            wire::Outcome::BrokerConfirmed,
            None,
            // Whoever received the customer today receives the broker too; the rotation
            // does not move for a customer already received.
            Received {
                consultant_id: today.and_then(|(_, consultant)| consultant),
                ..Received::default()
            },
            None,
            None,
        ),
        (decision, _) => {
            let refusal = match decision {
                Decision::Denied(rules::DenyReason::Broker(refusal)) => refusal,
                // `decide_broker` refuses only with a broker refusal, and confirms
                // only a known customer; anything else is refused as unreadable.
                _ => Refusal::MalformedCode,
            };
            (
                wire::Outcome::Denied,
                None,
                Received::default(),
                Some(refusal.code().to_owned()),
                Some(refusal.reason().to_owned()),
            )
        }
    };
    let visit = insert_visit(
        tx,
        identity,
        input,
        NewVisit {
            office_day: office_day.to_owned(),
            method: token.method(),
            card: Some(token.as_str().to_owned()),
            customer: row.map(|r| r.customer),
            outcome,
            reason,
            reason_detail,
            kind,
            received,
            broker_id,
        },
    )?;
    let alerts = raise_in(tx, alerts, &visit, input)?;
    Ok(Recorded {
        decision,
        visit,
        alerts,
    })
}

/// Who received a visitor, as the visit records it.
#[derive(Debug, Default)]
struct Received {
    /// The receiver; `None` when nobody was on duty or free.
    consultant_id: Option<String>,
    /// The owner who was off duty (they are told): a stand-in received their customer,
    /// or nobody could.
    stand_in_for: Option<String>,
    /// The customer's protection had lapsed (公海).
    public_pool: bool,
}

/// Assigns a counted visit of a known customer (`reception::assign`) and saves the
/// rotation it moved; a visit seen long before it reached the kiosk is assigned after
/// the fact (`reception::assign_after_the_fact`) and moves nothing.
fn receive(
    tx: &Connection,
    periods: &ProtectionPeriods,
    row: &CardRow,
    input: &VisitInput<'_>,
) -> Result<Received, StoreError> {
    let now = input.device_time;
    let current = reception::is_current(now, input.received_at);
    let mut rotation = load_rotation(tx)?;
    let before = rotation.clone();
    let owner = match &row.consultant {
        Some(owner) => Some(Owner {
            consultant_id: owner.id.clone(),
            // Absent: the visit period, as for a walk-in.
            source: row
                .source
                .as_deref()
                .and_then(Source::parse)
                .unwrap_or(Source::WalkIn),
            last_follow_up: last_follow_up(tx, row, &owner.id)?,
            on_duty: rotation.is_on_duty(&owner.id),
        }),
        None => None,
    };
    let facts = AssignFacts {
        customer: Some(KnownCustomer {
            tier: row.customer.tier,
            owner,
        }),
        periods: *periods,
        now,
    };
    let assignment = if current {
        reception::assign(&facts, &mut rotation)
    } else {
        reception::assign_after_the_fact(&facts)
    };
    if rotation != before {
        save_rotation(tx, &rotation)?;
    }
    Ok(Received {
        consultant_id: assignment.consultant_id().map(str::to_owned),
        stand_in_for: if assignment.alert_owner {
            row.consultant.as_ref().map(|c| c.id.clone())
        } else {
            None
        },
        public_pool: assignment.public_pool,
    })
}

/// The later of the roster's last follow-up and the latest counted visit here that the
/// owner received themselves (not as a stand-in); `None` when neither is known.
fn last_follow_up(
    tx: &Connection,
    row: &CardRow,
    owner: &str,
) -> Result<Option<jiff::Timestamp>, StoreError> {
    let parse = |text: &str| match text.parse::<jiff::Timestamp>() {
        Ok(t) => Some(t),
        Err(e) => {
            // Written only by the import and sync, which validate it: say so, go on.
            tracing::warn!(customer = %row.customer.id, value = text, error = %e, "unreadable time in the store; ignored");
            None
        }
    };
    let mut latest = row.last_follow_up.as_deref().and_then(parse);
    let times: Vec<String> = tx
        .prepare_cached(concat!(
            "SELECT device_time FROM visits WHERE customer_id = ?1 AND consultant_id = ?2
             AND stand_in_for IS NULL AND ",
            counted!()
        ))?
        .query_map(params![row.customer.id, owner], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    // Compared as times: the text of two instants in one second sorts wrongly.
    for t in times.iter().filter_map(|t| parse(t)) {
        latest = latest.max(Some(t));
    }
    Ok(latest)
}

/// The customer's counted visit of `office_day`, with its receiver.
fn counted_today(
    tx: &Connection,
    customer_id: &str,
    office_day: &str,
) -> rusqlite::Result<Option<(String, Option<String>)>> {
    tx.prepare_cached(concat!(
        "SELECT id, consultant_id FROM visits WHERE customer_id = ?1 AND office_day = ?2 AND ",
        counted!()
    ))?
    .query_row(params![customer_id, office_day], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()
}

fn counted_before(tx: &Connection, customer_id: &str, office_day: &str) -> rusqlite::Result<bool> {
    tx.prepare_cached(concat!(
        "SELECT EXISTS (SELECT 1 FROM visits WHERE customer_id = ?1 AND office_day < ?2 AND ",
        counted!(),
        ")"
    ))?
    .query_row(params![customer_id, office_day], |r| r.get(0))
}

/// This broker's recorded arrival with the customer on `office_day` (counted or not).
fn confirmed_today(
    tx: &Connection,
    customer_id: &str,
    broker_id: &str,
    office_day: &str,
) -> rusqlite::Result<Option<String>> {
    tx.prepare_cached(
        "SELECT id FROM visits WHERE customer_id = ?1 AND office_day = ?2
         AND outcome = 'broker_confirmed' AND broker_id = ?3 ORDER BY seq LIMIT 1",
    )?
    .query_row(params![customer_id, office_day, broker_id], |r| r.get(0))
    .optional()
}

/// The roster's broker report (报备) of the customer, if any.
fn broker_registration(
    tx: &Connection,
    customer_id: &str,
) -> Result<Option<BrokerRegistration>, StoreError> {
    let row: Option<(String, String, Option<String>)> = tx
        .prepare_cached(
            "SELECT broker_id, registered_at, expires_at FROM broker_registrations WHERE customer_id = ?1",
        )?
        .query_row([customer_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((broker_id, registered_at, expires_at)) = row else {
        return Ok(None);
    };
    let time = |text: &str| {
        text.parse::<jiff::Timestamp>().map_err(|e| {
            StoreError::Sqlite(rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                Box::new(e),
            ))
        })
    };
    Ok(Some(BrokerRegistration {
        broker_id,
        customer_id: customer_id.to_owned(),
        registered_at: time(&registered_at)?,
        expires_at: expires_at.as_deref().map(time).transpose()?,
    }))
}

/// A visit as decided, before it has a seq.
struct NewVisit {
    office_day: String,
    method: Method,
    card: Option<String>,
    customer: Option<CustomerView>,
    outcome: wire::Outcome,
    reason: Option<String>,
    reason_detail: Option<String>,
    kind: Option<VisitKind>,
    received: Received,
    broker_id: Option<String>,
}

/// Writes the visit and its outbox row under the next seq, and returns it as stored.
fn insert_visit(
    tx: &Connection,
    identity: &Identity,
    input: &VisitInput<'_>,
    v: NewVisit,
) -> Result<VisitView, StoreError> {
    let seq: u64 = tx
        .prepare_cached(
            "UPDATE counters SET value = value + 1 WHERE name = 'outbox_seq' RETURNING value",
        )?
        .query_row([], |r| r.get(0))?;
    let received = v.received;
    // Served by a stand-in (义务接待): someone received the visitor for the absent owner.
    let stand_in = received.stand_in_for.is_some() && received.consultant_id.is_some();
    let record = wire::VisitRecord {
        id: input.id,
        kiosk_id: identity.kiosk_id.clone(),
        office_id: identity.office_id.clone(),
        seq,
        source: input.source.to_owned(),
        method: wire_method(v.method),
        card: v.card,
        customer_id: v.customer.as_ref().map(|c| c.id.clone()),
        outcome: v.outcome,
        reason: v.reason,
        kind: v.kind.map(|k| match k {
            VisitKind::First => wire::VisitKind::First,
            VisitKind::Revisit => wire::VisitKind::Revisit,
        }),
        consultant_id: received.consultant_id,
        stand_in,
        device_time: input.device_time,
        recorded_at: jiff::Timestamp::now(),
        office_day: Some(v.office_day.clone()),
        broker_id: v.broker_id,
        stand_in_for: received.stand_in_for,
        public_pool: received.public_pool,
    };
    let outcome_str = outcome_code(v.outcome);
    tx.prepare_cached(
        "INSERT INTO visits (id, seq, source, method, card, customer_id, outcome, reason, reason_detail,
                             kind, consultant_id, stand_in, office_day, device_time, recorded_at,
                             broker_id, stand_in_for, public_pool)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )?
    .execute(params![
        record.id.to_string(),
        seq,
        record.source,
        v.method.as_str(),
        record.card,
        record.customer_id,
        outcome_str,
        record.reason,
        v.reason_detail,
        v.kind.map(VisitKind::as_str),
        record.consultant_id,
        record.stand_in,
        v.office_day,
        record.device_time.to_string(),
        record.recorded_at.to_string(),
        record.broker_id,
        record.stand_in_for,
        record.public_pool,
    ])?;
    let body = serde_json::to_string(&wire::Record::Visit(record.clone()))
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    tx.prepare_cached(
        "INSERT INTO outbox (seq, record_id, kind, body) VALUES (?1, ?2, 'visit', ?3)",
    )?
    .execute(params![seq, record.id.to_string(), body])?;
    let consultant = match &record.consultant_id {
        Some(id) => consultant_by_id(tx, id)?,
        None => None,
    };
    Ok(VisitView {
        id: record.id,
        seq,
        source: record.source,
        method: v.method.as_str().to_owned(),
        card: record.card,
        outcome: outcome_str.to_owned(),
        reason: record.reason,
        reason_detail: v.reason_detail,
        kind: v.kind.map(|k| k.as_str().to_owned()),
        customer: v.customer,
        consultant,
        office_day: v.office_day,
        device_time: record.device_time.to_string(),
        recorded_at: record.recorded_at.to_string(),
        broker_id: record.broker_id,
        stand_in_for: record.stand_in_for,
        public_pool: record.public_pool,
    })
}

/// The roster's consultant, as `visit_by_id` joins them (a consultant the roster has
/// dropped is named by no one).
fn consultant_by_id(tx: &Connection, id: &str) -> rusqlite::Result<Option<ConsultantView>> {
    tx.prepare_cached("SELECT id, name FROM consultants WHERE id = ?1")?
        .query_row([id], |r| {
            Ok(ConsultantView {
                id: r.get(0)?,
                name: r.get(1)?,
            })
        })
        .optional()
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn wire_method(m: Method) -> wire::Method {
    match m {
        Method::Nfc => wire::Method::Nfc,
        Method::Em4100 => wire::Method::Em4100,
        Method::Wiegand => wire::Method::Wiegand,
        Method::Qr => wire::Method::Qr,
        Method::Manual => wire::Method::Manual,
    }
}

fn outcome_code(o: wire::Outcome) -> &'static str {
    match o {
        wire::Outcome::Welcome => "welcome",
        wire::Outcome::Unknown => "unknown",
        wire::Outcome::Denied => "denied",
        wire::Outcome::BrokerConfirmed => "broker_confirmed",
    }
}

/// The roster entry of a tapped card. The exact token comes first. An EM4100 card not
/// listed exactly may be listed by DEZ8, which lacks the top byte: then its low 24 bits
/// are looked up among the DEZ8 entries only, so that an exact (DEZ10 or `em:`) entry
/// always wins and never answers for another card that shares its low 24 bits.
fn find_card(conn: &Connection, token: &CardToken) -> Result<Option<CardRow>, rusqlite::Error> {
    if let Some(row) = lookup_card(conn, token.as_str(), false)? {
        return Ok(Some(row));
    }
    match token.em_low24() {
        // With a zero top byte the exact lookup already was the DEZ8 one.
        Some(low24) if low24 != *token => lookup_card(conn, low24.as_str(), true),
        _ => Ok(None),
    }
}

/// The customer id a tapped card resolves to, by the tap's own lookup
/// ([`find_card`], cached statement and all) on a connection from [`open`]. Not for
/// the daemon: `kiosk/benches/roster.rs` measures a tap's lookup with it.
#[doc(hidden)]
pub fn card_customer(conn: &Connection, token: &CardToken) -> Result<Option<String>, StoreError> {
    Ok(find_card(conn, token)?.map(|row| row.customer.id))
}

fn lookup_card(
    conn: &Connection,
    token: &str,
    dez8_only: bool,
) -> Result<Option<CardRow>, rusqlite::Error> {
    conn.prepare_cached(
        "SELECT cards.status, cards.note, customers.id, customers.surname, customers.title, customers.tier,
                consultants.id, consultants.name, customers.source, customers.last_follow_up
         FROM cards JOIN customers ON customers.id = cards.customer_id
         LEFT JOIN consultants ON consultants.id = customers.consultant_id
         WHERE cards.token = ?1 AND (?2 = 0 OR cards.low24_only = 1)",
    )?
    .query_row(params![token, dez8_only], |r| {
        Ok(CardRow {
            status: r.get(0)?,
            note: r.get(1)?,
            customer: CustomerView {
                id: r.get(2)?,
                surname: r.get(3)?,
                title: Title::from_db(&r.get::<_, String>(4)?),
                tier: Tier::from_db(&r.get::<_, String>(5)?),
            },
            consultant: match (r.get::<_, Option<String>>(6)?, r.get::<_, Option<String>>(7)?) {
                (Some(id), Some(name)) => Some(ConsultantView { id, name }),
                _ => None,
            },
            source: r.get(8)?,
            last_follow_up: r.get(9)?,
        })
    })
    .optional()
}

/// A customer chosen by id (a handheld's post), in the shape of an active card entry
/// so that the same rules decide it.
fn find_customer(conn: &Connection, id: &str) -> Result<Option<CardRow>, rusqlite::Error> {
    conn.prepare_cached(
        "SELECT customers.id, customers.surname, customers.title, customers.tier,
                consultants.id, consultants.name, customers.source, customers.last_follow_up
         FROM customers LEFT JOIN consultants ON consultants.id = customers.consultant_id
         WHERE customers.id = ?1",
    )?
    .query_row([id], |r| {
        Ok(CardRow {
            status: "active".to_owned(),
            note: None,
            customer: CustomerView {
                id: r.get(0)?,
                surname: r.get(1)?,
                title: Title::from_db(&r.get::<_, String>(2)?),
                tier: Tier::from_db(&r.get::<_, String>(3)?),
            },
            consultant: match (
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
            ) {
                (Some(id), Some(name)) => Some(ConsultantView { id, name }),
                _ => None,
            },
            source: r.get(6)?,
            last_follow_up: r.get(7)?,
        })
    })
    .optional()
}

pub(crate) const VISIT_COLUMNS: &str =
    "v.id, v.seq, v.source, v.method, v.card, v.outcome, v.reason, v.reason_detail, v.kind,
    c.id, c.surname, c.title, c.tier, k.id, k.name, v.office_day, v.device_time, v.recorded_at,
    v.broker_id, v.stand_in_for, v.public_pool";
pub(crate) const VISIT_FROM: &str = "FROM visits v LEFT JOIN customers c ON c.id = v.customer_id
    LEFT JOIN consultants k ON k.id = v.consultant_id";

pub(crate) fn visit_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VisitView> {
    let id: String = r.get(0)?;
    let customer = match r.get::<_, Option<String>>(9)? {
        Some(cid) => Some(CustomerView {
            id: cid,
            surname: r.get(10)?,
            title: Title::from_db(&r.get::<_, String>(11)?),
            tier: Tier::from_db(&r.get::<_, String>(12)?),
        }),
        None => None,
    };
    let consultant = match (
        r.get::<_, Option<String>>(13)?,
        r.get::<_, Option<String>>(14)?,
    ) {
        (Some(id), Some(name)) => Some(ConsultantView { id, name }),
        _ => None,
    };
    Ok(VisitView {
        id: Uuid::parse_str(&id).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?,
        seq: r.get(1)?,
        source: r.get(2)?,
        method: r.get(3)?,
        card: r.get(4)?,
        outcome: r.get(5)?,
        reason: r.get(6)?,
        reason_detail: r.get(7)?,
        kind: r.get(8)?,
        customer,
        consultant,
        office_day: r.get(15)?,
        device_time: r.get(16)?,
        recorded_at: r.get(17)?,
        broker_id: r.get(18)?,
        stand_in_for: r.get(19)?,
        public_pool: r.get(20)?,
    })
}

pub(crate) fn visit_by_id(conn: &Connection, id: &str) -> rusqlite::Result<VisitView> {
    conn.prepare_cached(&format!(
        "SELECT {VISIT_COLUMNS} {VISIT_FROM} WHERE v.id = ?1"
    ))?
    .query_row([id], visit_from_row)
}

/// Most jobs the writer puts into one shared transaction: bounds how long the first
/// job of a group waits for the others' work before its commit.
pub const MAX_GROUP: usize = 256;

/// Handle to the writer thread; every write of the daemon goes through it, in order.
///
/// Group commit: with `synchronous = FULL` every commit is an fsync, and one fsync per
/// visit caps handheld posts at the disk's fsync rate. So the jobs that queued up while
/// the previous commit was on its way to disk ([`Writer::call_grouped`]) run in ONE
/// transaction, each inside its own SAVEPOINT (a failing job rolls back only its own
/// writes), and one COMMIT makes them all durable. Every job's answer is sent only
/// after that COMMIT returned; if it fails, every job of the group gets the error.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: std_mpsc::Sender<Job>,
}

enum Job {
    /// Manages its own transactions (sync's batches, imports): runs between groups.
    Alone(Box<dyn FnOnce(&mut Store) + Send>),
    /// Runs inside the writer's shared transaction.
    Grouped(Box<dyn GroupedJob>),
}

/// A job of a group, type-erased: runs its work in its savepoint and hands back what
/// answers its caller once the group's commit is known.
trait GroupedJob: Send {
    fn run(self: Box<Self>, store: &mut Store) -> Box<dyn Finish>;
    /// The group's transaction could not even begin: the job never runs.
    fn fail(self: Box<Self>, error: &StoreError);
}

trait Finish: Send {
    /// `Err` when the shared commit failed: nothing of the group is stored.
    fn finish(self: Box<Self>, commit: Result<(), &StoreError>);
}

struct GroupedCall<F, R> {
    f: F,
    tx: oneshot::Sender<Result<R, StoreError>>,
}

struct Done<R> {
    result: Result<R, StoreError>,
    tx: oneshot::Sender<Result<R, StoreError>>,
}

/// The message of a group-wide failure, for every job of the group (a
/// `rusqlite::Error` cannot be cloned).
fn group_error(e: &StoreError) -> StoreError {
    StoreError::Group(e.to_string())
}

impl<F, R> GroupedJob for GroupedCall<F, R>
where
    F: FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
    R: Send + 'static,
{
    fn run(self: Box<Self>, store: &mut Store) -> Box<dyn Finish> {
        let GroupedCall { f, tx } = *self;
        let result = match store
            .conn
            .prepare_cached("SAVEPOINT job")
            .and_then(|mut s| s.execute([]))
        {
            Err(e) => Err(StoreError::from(e)),
            Ok(_) => {
                // A panicking job must not end the writer (and every later visit with
                // it): its savepoint is rolled back like an error's, and its caller sees
                // its answer channel dropped (WriterGone).
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(store)));
                let keep = matches!(outcome, Ok(Ok(_)));
                let ended = if keep {
                    store
                        .conn
                        .prepare_cached("RELEASE job")
                        .and_then(|mut s| s.execute([]))
                        .map(|_| ())
                } else {
                    store.conn.execute_batch("ROLLBACK TO job; RELEASE job")
                };
                match (outcome, ended) {
                    (Err(_), _) => {
                        tracing::error!("a store job panicked; its writes were rolled back");
                        return Box::new(Dropped);
                    }
                    (Ok(result), Ok(())) => result,
                    (Ok(_), Err(e)) => Err(StoreError::from(e)),
                }
            }
        };
        Box::new(Done { result, tx })
    }

    fn fail(self: Box<Self>, error: &StoreError) {
        let _ = self.tx.send(Err(group_error(error)));
    }
}

impl<R: Send> Finish for Done<R> {
    fn finish(self: Box<Self>, commit: Result<(), &StoreError>) {
        let answer = match commit {
            Ok(()) => self.result,
            // The job's own error says more than the commit's; either way nothing is stored.
            Err(e) => Err(self.result.err().unwrap_or_else(|| group_error(e))),
        };
        let _ = self.tx.send(answer);
    }
}

/// A panicked job's place in the group: its caller was already told (channel dropped).
struct Dropped;

impl Finish for Dropped {
    fn finish(self: Box<Self>, _: Result<(), &StoreError>) {}
}

/// A grouped job nobody waits on ([`Writer::submit_grouped`]): a [`GroupedCall`] whose
/// answer goes to `then`, on the writer thread, once the group's commit is known.
struct GroupedSubmit<F, R, T> {
    call: GroupedCall<F, R>,
    answer: oneshot::Receiver<Result<R, StoreError>>,
    then: T,
}

struct SubmitDone<R, T> {
    finish: Box<dyn Finish>,
    answer: oneshot::Receiver<Result<R, StoreError>>,
    then: T,
}

impl<F, R, T> GroupedJob for GroupedSubmit<F, R, T>
where
    F: FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
    R: Send + 'static,
    T: FnOnce(Result<R, StoreError>) + Send + 'static,
{
    fn run(self: Box<Self>, store: &mut Store) -> Box<dyn Finish> {
        let GroupedSubmit { call, answer, then } = *self;
        let finish = Box::new(call).run(store);
        Box::new(SubmitDone {
            finish,
            answer,
            then,
        })
    }

    fn fail(self: Box<Self>, error: &StoreError) {
        (self.then)(Err(group_error(error)));
    }
}

impl<R: Send, T: FnOnce(Result<R, StoreError>) + Send> Finish for SubmitDone<R, T> {
    fn finish(self: Box<Self>, commit: Result<(), &StoreError>) {
        let SubmitDone {
            finish,
            mut answer,
            then,
        } = *self;
        finish.finish(commit);
        // A panicked job sent nothing: like a caller of `call_grouped`, `then` sees WriterGone.
        then(answer.try_recv().unwrap_or(Err(StoreError::WriterGone)));
    }
}

impl Writer {
    /// Moves `store` onto its own thread. The thread ends, after finishing every
    /// queued job, once the last `Writer` handle is dropped.
    pub fn spawn(mut store: Store) -> std::io::Result<(Writer, JoinHandle<()>)> {
        let (jobs, rx) = std_mpsc::channel::<Job>();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let mut next = rx.recv().ok();
                while let Some(job) = next.take() {
                    match job {
                        Job::Alone(f) => {
                            f(&mut store);
                            next = rx.recv().ok();
                        }
                        Job::Grouped(first) => {
                            // Whatever queued up meanwhile joins, up to MAX_GROUP; a job
                            // that runs alone ends the group and runs after its commit,
                            // so jobs still run in the order they were sent.
                            let mut group = vec![first];
                            while group.len() < MAX_GROUP {
                                match rx.try_recv() {
                                    Ok(Job::Grouped(j)) => group.push(j),
                                    Ok(alone) => {
                                        next = Some(alone);
                                        break;
                                    }
                                    Err(_) => break,
                                }
                            }
                            store.run_group(group);
                            if next.is_none() {
                                next = rx.recv().ok();
                            }
                        }
                    }
                }
            })?;
        Ok((Writer { jobs }, handle))
    }

    /// Runs `f` on the writer thread, alone, and waits for its result without blocking
    /// the runtime. For jobs that begin and commit their own transactions.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job::Alone(Box::new(move |store| {
            let _ = tx.send(f(store));
        }));
        self.jobs.send(job).map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Queues `f` to run on the writer thread, alone, without waiting for it: jobs sent
    /// one after another run in that order. For work nobody may wait on (webhook queueing).
    pub fn submit(&self, f: impl FnOnce(&mut Store) + Send + 'static) -> Result<(), StoreError> {
        self.jobs
            .send(Job::Alone(Box::new(f)))
            .map_err(|_| StoreError::WriterGone)
    }

    /// Queues `f` to run inside the writer's shared transaction like
    /// [`Writer::call_grouped`], without waiting: `then` gets its result on the writer
    /// thread once the group's commit is known (`Err` if it failed: nothing of `f` is
    /// stored). For work nobody may wait on that should share a commit (alerts).
    pub fn submit_grouped<R, F, T>(&self, f: F, then: T) -> Result<(), StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
        T: FnOnce(Result<R, StoreError>) + Send + 'static,
    {
        let (tx, answer) = oneshot::channel();
        let job = GroupedSubmit {
            call: GroupedCall { f, tx },
            answer,
            then,
        };
        self.jobs
            .send(Job::Grouped(Box::new(job)))
            .map_err(|_| StoreError::WriterGone)
    }

    /// Runs `f` inside the writer's shared transaction, with other jobs queued at the
    /// same time, and answers once that transaction is committed (durable). `f` must not
    /// begin or commit a transaction itself (the `*_in_group` methods of [`Store`]);
    /// if it returns `Err`, its own writes are rolled back and the others' stay.
    pub async fn call_grouped<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Store) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job::Grouped(Box::new(GroupedCall { f, tx }));
        self.jobs.send(job).map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

impl Store {
    /// One group: BEGIN IMMEDIATE (waiting out another process's lock like
    /// `retry_busy`), every job in its savepoint, one COMMIT, then the answers.
    fn run_group(&mut self, group: Vec<Box<dyn GroupedJob>>) {
        let begun = self.retry_busy(|s| {
            s.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(StoreError::from)
        });
        if let Err(e) = begun {
            for job in group {
                job.fail(&e);
            }
            return;
        }
        let size = group.len();
        let finishes: Vec<Box<dyn Finish>> = group.into_iter().map(|j| j.run(self)).collect();
        let committed = self.conn.execute_batch("COMMIT").map_err(StoreError::from);
        if let Err(e) = &committed {
            tracing::error!(error = %e, jobs = size, "the group's commit failed; rolling it back");
            // Leaves the connection usable for the next group; fails only if SQLite
            // already rolled back by itself.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.group_commits += 1;
        for finish in finishes {
            finish.finish(committed.as_ref().map(|_| ()));
        }
    }
}

/// A read-only connection for the HTTP API, used from `spawn_blocking`. Sync's reads
/// (its status, the rows of the next batch) are in `sync_side`.
#[derive(Debug, Clone)]
pub struct ReadDb {
    conn: Arc<Mutex<Connection>>,
    time_zone: jiff::tz::TimeZone,
}

impl ReadDb {
    pub fn open(data_dir: &Path, time_zone: jiff::tz::TimeZone) -> Result<ReadDb, StoreError> {
        let conn = open(data_dir)?;
        conn.pragma_update(None, "query_only", "ON")?;
        Ok(ReadDb {
            conn: Arc::new(Mutex::new(conn)),
            time_zone,
        })
    }

    /// Runs `f` with the read connection on a blocking thread.
    pub(crate) async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::WriterGone)?
        .map_err(StoreError::from)
    }

    /// Today's office day in the kiosk's time zone.
    pub fn today(&self) -> String {
        jiff::Timestamp::now()
            .to_zoned(self.time_zone.clone())
            .date()
            .to_string()
    }

    /// The office's time zone, in which office days and hours are counted.
    pub(crate) fn time_zone(&self) -> &jiff::tz::TimeZone {
        &self.time_zone
    }

    /// Visits of one office day, newest first.
    pub async fn visits(&self, day: String, limit: u32) -> Result<Vec<VisitView>, StoreError> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {VISIT_COLUMNS} {VISIT_FROM} WHERE v.office_day = ?1 ORDER BY v.seq DESC LIMIT ?2"
            ))?;
            stmt.query_map(params![day, limit], visit_from_row)?
                .collect()
        })
        .await
    }

    pub async fn counts(&self) -> Result<Counts, StoreError> {
        let today = self.today();
        self.with(move |c| {
            Ok(Counts {
                visits_today: c.query_row(
                    concat!(
                        "SELECT count(*) FROM visits WHERE office_day = ?1 AND ",
                        counted!()
                    ),
                    [today],
                    |r| r.get(0),
                )?,
                outbox_backlog: c.query_row(
                    "SELECT count(*) FROM outbox WHERE sent_at IS NULL",
                    [],
                    |r| r.get(0),
                )?,
                cards: c.query_row("SELECT count(*) FROM cards", [], |r| r.get(0))?,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::parse_csv;
    use crate::rotation::RotationOp;

    fn identity() -> Identity {
        Identity {
            kiosk_id: "k1".into(),
            office_id: "o1".into(),
            time_zone: jiff::tz::TimeZone::get("Asia/Shanghai").expect("tz"),
        }
    }

    fn store(dir: &Path) -> Store {
        let mut s = Store::open(dir, identity()).expect("open");
        let roster = parse_csv(
            b"card,customer_id,surname,title,tier\nnfc:04A1B2C3,C1,\xE5\xBC\xA0,mr,gold\n",
        )
        .expect("roster");
        s.import_roster(&roster).expect("import");
        s
    }

    fn tap(s: &mut Store, token: &str, at: &str) -> Recorded {
        s.record_tap(&TapInput {
            source: "r".into(),
            token: CardToken::parse(token).expect("token"),
            device_time: at.parse().expect("time"),
        })
        .expect("tap")
    }

    /// Office days follow the office's time zone, not UTC: 15:59Z and 16:01Z are
    /// 23:59 and 00:01 in Shanghai, two days, two counted visits.
    #[test]
    fn office_days_follow_the_time_zone_and_seq_has_no_gaps() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = store(dir.path());
        let cases = [
            (
                "nfc:04A1B2C3",
                "2026-11-22T15:59:00Z",
                Decision::Welcome(VisitKind::First),
                1,
                "2026-11-22",
            ),
            (
                "nfc:04A1B2C3",
                "2026-11-22T15:59:30Z",
                Decision::Repeat,
                1,
                "2026-11-22",
            ),
            (
                "nfc:04FFFFFF",
                "2026-11-22T16:00:30Z",
                Decision::Unknown,
                2,
                "2026-11-23",
            ),
            (
                "nfc:04A1B2C3",
                "2026-11-22T16:01:00Z",
                Decision::Welcome(VisitKind::Revisit),
                3,
                "2026-11-23",
            ),
            (
                "nfc:04A1B2C3",
                "2026-11-23T15:00:00Z",
                Decision::Repeat,
                3,
                "2026-11-23",
            ),
        ];
        for (token, at, decision, seq, day) in cases {
            let rec = tap(&mut s, token, at);
            assert_eq!(rec.decision, decision, "{token} at {at}");
            assert_eq!(rec.visit.seq, seq, "{token} at {at}");
            assert_eq!(rec.visit.office_day, day, "{token} at {at}");
        }
        let outbox: Vec<(u64, String)> = s
            .conn
            .prepare("SELECT seq, body FROM outbox ORDER BY seq")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            outbox.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let last: wire::Record = serde_json::from_str(&outbox[2].1).expect("wire JSON");
        let wire::Record::Visit(v) = last else {
            panic!("expected a visit, got a {}", last.kind());
        };
        assert_eq!(
            (v.seq, v.kind, v.customer_id.as_deref()),
            (3, Some(wire::VisitKind::Revisit), Some("C1"))
        );
        assert_eq!(v.device_time.to_string(), "2026-11-22T16:01:00Z");
    }

    #[test]
    fn the_start_up_pre_read_reads_the_whole_database() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = store(dir.path());
        tap(&mut s, "nfc:04A1B2C3", "2026-11-20T02:00:00Z");
        s.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .expect("checkpoint");
        let size = std::fs::metadata(dir.path().join(DB_FILE))
            .expect("file")
            .len();
        assert!(size > 0);
        assert_eq!(preread(dir.path()).expect("pre-read"), size);
        let missing = tempfile::tempdir().expect("dir");
        assert!(
            preread(missing.path()).is_err(),
            "no database: an error to log"
        );
    }

    #[test]
    fn a_database_stays_with_its_kiosk() {
        let dir = tempfile::tempdir().expect("dir");
        drop(store(dir.path()));
        let other = Identity {
            kiosk_id: "k2".into(),
            office_id: "o1".into(),
            time_zone: jiff::tz::TimeZone::UTC,
        };
        let err = Store::open(dir.path(), other).expect_err("another kiosk");
        assert!(err.to_string().contains("belongs to kiosk \"k1\""), "{err}");
    }

    #[test]
    fn a_newer_schema_is_refused_rather_than_damaged() {
        let dir = tempfile::tempdir().expect("dir");
        drop(store(dir.path()));
        let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
        conn.pragma_update(None, "user_version", 99).expect("bump");
        drop(conn);
        let err = open(dir.path()).expect_err("newer schema");
        assert!(err.to_string().contains("newer than this kiosk"), "{err}");
    }

    fn import(s: &mut Store, rows: &str) -> ImportSummary {
        let csv = format!("card,customer_id,surname,title,tier\n{rows}");
        let roster = parse_csv(csv.as_bytes()).expect("roster");
        s.import_roster(&roster).expect("import")
    }

    /// DEZ8 prints 24 bits, so a DEZ8 entry answers for every em: card with those low 24
    /// bits, unless the card is listed exactly; the visit keeps the card as read.
    #[test]
    fn dez8_entries_match_by_the_low_24_bits_and_exact_entries_win() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = store(dir.path());
        let summary = import(
            &mut s,
            "0310834244,C2,王,ms,gold\n\"134,62532\",C3,李,ms,gold\nem:0000BEEF,C4,赵,mr,gold\n001 00001,C5,钱,mr,gold\n",
        );
        assert_eq!((summary.cards, summary.dez8_cards), (4, 2));
        let cases: &[(&str, Option<&str>)] = &[
            // DEZ10 of em:1286F444: exact, although the DEZ8 entry shares its low 24 bits.
            ("em:1286F444", Some("C2")),
            // Not listed exactly: the DEZ8 entry 134,62532 = 0x86F444.
            ("em:5586F444", Some("C3")),
            // em:0000BEEF is an exact entry, not DEZ8: it answers for itself only.
            ("em:0100BEEF", None),
            // A zero top byte is the DEZ8 entry's own token.
            ("em:00010001", Some("C5")),
            ("em:0000BEEF", Some("C4")),
            ("em:00123456", None),
        ];
        for (i, (token, customer)) in cases.iter().enumerate() {
            let at = format!("2026-11-22T0{i}:00:00Z");
            let rec = tap(&mut s, token, &at);
            let got = rec.visit.customer.as_ref().map(|c| c.id.as_str());
            assert_eq!(got, *customer, "{token}");
            assert_eq!(rec.visit.card.as_deref(), Some(*token), "{token}");
        }
        let stored: String = s
            .conn
            .query_row(
                "SELECT body FROM outbox JOIN visits USING (seq) WHERE visits.customer_id = 'C3'",
                [],
                |r| r.get(0),
            )
            .expect("C3's visit");
        assert!(stored.contains(r#""card":"em:5586F444""#), "{stored}");

        // Given again exactly (em:), the card is no longer a DEZ8 entry: its low 24
        // bits stop answering for other cards.
        let summary = import(&mut s, "em:0086F444,C3,李,ms,gold\n");
        assert_eq!(summary.dez8_cards, 0);
        let rec = tap(&mut s, "em:7786F444", "2026-11-23T01:00:00Z");
        assert_eq!(rec.decision, Decision::Unknown);
    }

    /// Every table's columns and every index, to compare a migrated database with a new one.
    fn shape(conn: &Connection) -> Vec<String> {
        let mut names: Vec<(String, String)> = conn
            .prepare("SELECT type, name FROM sqlite_master ORDER BY type, name")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let mut shape = Vec::new();
        for (kind, name) in names.drain(..) {
            shape.push(format!("{kind} {name}"));
            if kind == "table" {
                let columns: Vec<String> = conn
                    .prepare(
                        "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1)",
                    )
                    .expect("prepare")
                    .query_map([&name], |r| {
                        Ok(format!(
                            "  {} {} notnull={} default={:?} pk={}",
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, i64>(4)?
                        ))
                    })
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("rows");
                shape.extend(columns);
            }
        }
        shape
    }

    /// A database written by a version-1 kiosk opens with all its data, and then holds
    /// DEZ8 cards like a new one.
    #[test]
    fn a_version_1_database_is_migrated_with_its_data() {
        let dir = tempfile::tempdir().expect("dir");
        let conn = Connection::open(dir.path().join(DB_FILE)).expect("open");
        conn.execute_batch(include_str!("../testdata/schema-v1.sql"))
            .expect("v1 schema");
        conn.execute_batch(
            "PRAGMA user_version = 1;
             INSERT INTO meta (key, value) VALUES ('kiosk_id', 'k1'), ('office_id', 'o1');
             INSERT INTO customers (id, surname, title, tier) VALUES ('C1', '张', 'mr', 'gold');
             INSERT INTO cards (token, customer_id, status) VALUES ('nfc:04A1B2C3', 'C1', 'active');
             INSERT INTO visits (id, seq, source, method, card, customer_id, outcome, kind,
                                 office_day, device_time, recorded_at)
                 VALUES ('0192f0c4-0000-7000-8000-000000000001', 1, 'r', 'nfc', 'nfc:04A1B2C3', 'C1',
                         'welcome', 'first', '2026-11-22', '2026-11-22T02:00:00Z', '2026-11-22T02:00:00Z');
             INSERT INTO outbox (seq, record_id, kind, body)
                 VALUES (1, '0192f0c4-0000-7000-8000-000000000001', 'visit', '{}');
             UPDATE counters SET value = 1 WHERE name = 'outbox_seq';",
        )
        .expect("v1 data");
        drop(conn);

        let mut s = Store::open(dir.path(), identity()).expect("open a v1 database");
        let version: i64 = s
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        // The old card and visit are there: a tap the same day is a repeat of visit 1,
        // the next day's is a revisit that continues seq.
        let rec = tap(&mut s, "nfc:04A1B2C3", "2026-11-22T05:00:00Z");
        assert_eq!((rec.decision, rec.visit.seq), (Decision::Repeat, 1));
        let rec = tap(&mut s, "nfc:04A1B2C3", "2026-11-23T05:00:00Z");
        assert_eq!(
            (rec.decision, rec.visit.seq),
            (Decision::Welcome(VisitKind::Revisit), 2)
        );
        // The new column works on the old table.
        assert_eq!(
            import(&mut s, "\"134,62532\",C2,王,ms,gold\n").dez8_cards,
            1
        );
        let rec = tap(&mut s, "em:5586F444", "2026-11-23T06:00:00Z");
        assert_eq!(rec.visit.customer.map(|c| c.id).as_deref(), Some("C2"));

        let fresh = tempfile::tempdir().expect("dir");
        assert_eq!(shape(&s.conn), shape(&open(fresh.path()).expect("new")));
        // Opening again finds nothing to do.
        drop(s);
        Store::open(dir.path(), identity()).expect("open again");
    }

    // Reception: who receives a counted visit, and brokers' codes.

    const RECEPTION_HEADER: &str = "card,customer_id,surname,title,tier,consultant_id,consultant_name,source,last_follow_up,broker_id,registered_at,expires_at\n";

    /// (what, card, receiver, stand-in for, public pool, queue after)
    type ReceptionRow = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        bool,
        &'static str,
    );
    /// (what, card, time, receiver, stand-in for, public pool)
    type FollowUpRow = (
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        bool,
    );

    /// A store with `rows` (after `RECEPTION_HEADER`) and `on_duty` checked in, in order.
    fn reception_store(dir: &Path, rows: &str, on_duty: &[&str]) -> Store {
        let mut s = Store::open(dir, identity()).expect("open");
        let roster = parse_csv(format!("{RECEPTION_HEADER}{rows}").as_bytes()).expect("roster");
        s.import_roster(&roster).expect("import");
        for id in on_duty {
            rotate(&mut s, RotationOp::CheckIn((*id).into()));
        }
        s
    }

    fn rotate(s: &mut Store, op: RotationOp) {
        s.change_rotation(&op)
            .expect("store")
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }

    /// The saved queue as "A B*" (head first, `*` = with a visitor).
    fn queue(s: &Store) -> String {
        load_rotation(&s.conn)
            .expect("rotation")
            .to_entries()
            .iter()
            .map(|(id, busy)| if *busy { format!("{id}*") } else { id.clone() })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// How a stored visit was received, read back from the table and from its outbox
    /// record: (consultant, stand_in, stand_in_for, public_pool).
    fn received(s: &Store, id: Uuid) -> (Option<String>, bool, Option<String>, bool) {
        let stored: (Option<String>, bool, Option<String>, bool, String) = s
            .conn
            .query_row(
                "SELECT v.consultant_id, v.stand_in, v.stand_in_for, v.public_pool, o.body
                 FROM visits v JOIN outbox o USING (seq) WHERE v.id = ?1",
                [id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .expect("visit");
        let wire::Record::Visit(w) = serde_json::from_str(&stored.4).expect("wire") else {
            panic!("not a visit");
        };
        assert_eq!(
            (&w.consultant_id, w.stand_in, &w.stand_in_for, w.public_pool),
            (&stored.0, stored.1, &stored.2, stored.3),
            "the outbox record says what the table says"
        );
        (stored.0, stored.1, stored.2, stored.3)
    }

    fn who(
        consultant: Option<&str>,
        stand_in_for: Option<&str>,
        public_pool: bool,
    ) -> (Option<String>, bool, Option<String>, bool) {
        (
            consultant.map(str::to_owned),
            consultant.is_some() && stand_in_for.is_some(),
            stand_in_for.map(str::to_owned),
            public_pool,
        )
    }

    /// Each counted visit is received by the rules of `reception::assign`, and the queue
    /// it moved is saved with it.
    #[test]
    fn counted_visits_are_received_by_owner_stand_in_or_rotation() {
        let dir = tempfile::tempdir().expect("dir");
        let rows = "\
nfc:04000001,C1,张,mr,gold,E1,李娜,,,,,
nfc:04000002,C2,王,ms,normal,E2,陈晨,walk_in,2026-11-15T00:00:00Z,,,
nfc:04000003,C3,李,ms,normal,E1,李娜,phone,2026-11-01T00:00:00Z,,,
nfc:04000004,C4,赵,mr,normal,,,,,,,
nfc:04000005,C5,钱,mr,normal,E3,周,,,,,
";
        let mut s = reception_store(dir.path(), rows, &["E3", "E1"]);
        let day = "2026-11-20T02:00:00Z";
        // (what, card, receiver, stand-in for, public pool, queue after)
        let cases: Vec<ReceptionRow> = vec![
            (
                "owner on duty (protection untracked) → owner, busy",
                "nfc:04000001",
                Some("E1"),
                None,
                false,
                "E3 E1*",
            ),
            (
                "owner E2 off duty → the free head stands in",
                "nfc:04000002",
                Some("E3"),
                Some("E2"),
                false,
                "E1* E3*",
            ),
            (
                "phone protection lapsed, everyone busy → public pool, nobody",
                "nfc:04000003",
                None,
                None,
                true,
                "E1* E3*",
            ),
        ];
        let mut seen = Vec::new();
        for (what, card, consultant, stand_in_for, public_pool, after) in cases {
            let rec = tap(&mut s, card, day);
            assert!(matches!(rec.decision, Decision::Welcome(_)), "{what}");
            assert_eq!(
                received(&s, rec.visit.id),
                who(consultant, stand_in_for, public_pool),
                "{what}"
            );
            assert_eq!(
                rec.visit.consultant.as_ref().map(|c| c.id.as_str()),
                consultant,
                "{what}"
            );
            assert_eq!(rec.visit.stand_in_for.as_deref(), stand_in_for, "{what}");
            assert_eq!(rec.visit.public_pool, public_pool, "{what}");
            assert_eq!(queue(&s), after, "{what}: queue");
            seen.push(rec.visit.id);
        }
        // The greeting's consultant is the receiver, named from the roster.
        let stand_in = visit_by_id(&s.conn, &seen[1].to_string()).expect("visit");
        assert_eq!(stand_in.consultant.map(|c| c.name).as_deref(), Some("周"));

        rotate(&mut s, RotationOp::Free("E1".into()));
        rotate(&mut s, RotationOp::Free("E3".into()));
        let rec = tap(&mut s, "nfc:04000004", day);
        assert_eq!(
            received(&s, rec.visit.id),
            who(Some("E1"), None, false),
            "no owner → rotation"
        );
        assert_eq!(queue(&s), "E3 E1*");
        // A repeat tap greets with the day's visit and moves nobody.
        let rec = tap(&mut s, "nfc:04000002", "2026-11-20T03:00:00Z");
        assert_eq!((rec.decision, rec.visit.id), (Decision::Repeat, seen[1]));
        assert_eq!(queue(&s), "E3 E1*");
        // An unknown card is received by nobody and moves nobody.
        let rec = tap(&mut s, "nfc:04FFFFFF", day);
        assert_eq!(received(&s, rec.visit.id), who(None, None, false));
        assert_eq!(queue(&s), "E3 E1*");

        rotate(&mut s, RotationOp::CheckOut("E1".into()));
        rotate(&mut s, RotationOp::CheckOut("E3".into()));
        let rec = tap(&mut s, "nfc:04000005", day);
        assert_eq!(
            received(&s, rec.visit.id),
            who(None, Some("E3"), false),
            "nobody on duty: nobody receives, and the absent owner is named to be told"
        );
        assert_eq!(rec.visit.consultant, None);

        // The next day, E2 alone on duty stands in for E1; the queue saved with that
        // visit is the one a restarted kiosk finds.
        rotate(&mut s, RotationOp::CheckIn("E2".into()));
        let rec = tap(&mut s, "nfc:04000001", "2026-11-21T02:00:00Z");
        assert_eq!(
            received(&s, rec.visit.id),
            who(Some("E2"), Some("E1"), false)
        );
        assert_eq!(queue(&s), "E2*");
        drop(s);
        let s = Store::open(dir.path(), identity()).expect("reopen");
        assert_eq!(queue(&s), "E2*");
    }

    /// The protection runs from the later of the roster's follow-up and the owner's own
    /// last counted visit here; a stand-in's visit does not renew it. The periods are the
    /// store's (set from `[reception]`).
    /// A visit seen long before it reached the kiosk (an offline handheld's queue) is
    /// stored and counted, but takes no rotation turn and alerts nobody; a current one
    /// stores its alerts with it.
    #[test]
    fn a_visit_seen_long_ago_takes_no_turn_and_alerts_nobody() {
        let dir = tempfile::tempdir().expect("dir");
        let rows = "\
nfc:04000001,C1,张,mr,gold,E1,李娜,,,,,
nfc:04000002,C2,王,ms,normal,,,,,,,
nfc:04000003,C3,李,ms,normal,E2,陈晨,phone,2026-11-01T00:00:00Z,,,
nfc:04000004,C4,赵,mr,normal,,,,,,,
nfc:04000005,C5,钱,mr,normal,E3,周,,,,,
";
        let mut s = reception_store(dir.path(), rows, &["E3", "E1"]);
        let policy = crate::alerts::Policy {
            manager: Some("M".into()),
            ..crate::alerts::Policy::default()
        };
        s.set_alerts(Arc::new(crate::alerts::Alerts::new(
            policy,
            Arc::new(crate::alerts::WallClock),
            None,
        )));
        fn record(s: &mut Store, card: &str, seen: &str) -> Recorded {
            let presented = Presented::Card(CardToken::parse(card).expect("token"));
            let input = VisitInput {
                id: Uuid::now_v7(),
                source: "handheld:pda",
                presented: &presented,
                device_time: seen.parse().expect("time"),
                received_at: "2026-11-20T10:00:00Z".parse().expect("time"),
            };
            let (identity, periods, alerts) = (s.identity.clone(), s.periods, s.alerts.clone());
            let tx = s.conn.transaction().expect("tx");
            let rec = record_in(&tx, &identity, &periods, alerts.as_deref(), &input)
                .expect("record")
                .expect("a card's visit");
            tx.commit().expect("commit");
            rec
        }
        // (what, card, seen at, receiver, public pool)
        let cases = [
            (
                "unowned, seen an hour ago → nobody",
                "nfc:04000002",
                "2026-11-20T09:00:00Z",
                None,
                false,
            ),
            (
                "gold, owner on duty, seen yesterday → the owner, not marked busy",
                "nfc:04000001",
                "2026-11-19T09:00:00Z",
                Some("E1"),
                false,
            ),
            (
                "protection lapsed, seen 11 min ago → public pool, nobody",
                "nfc:04000003",
                "2026-11-20T09:49:00Z",
                None,
                true,
            ),
        ];
        for (what, card, seen, consultant, public_pool) in cases {
            let rec = record(&mut s, card, seen);
            assert!(
                matches!(rec.decision, Decision::Welcome(_)),
                "{what}: counted"
            );
            assert_eq!(
                received(&s, rec.visit.id),
                who(consultant, None, public_pool),
                "{what}"
            );
            assert_eq!(
                rec.alerts,
                crate::alerts::Raised::default(),
                "{what}: no alerts"
            );
            assert_eq!(queue(&s), "E3 E1", "{what}: the queue did not move");
        }
        let stored: i64 = s
            .conn
            .query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))
            .expect("count");
        assert_eq!(stored, 0);
        // Seen 9 minutes ago: current, so received by the head and alerted, in the
        // visit's transaction.
        let rec = record(&mut s, "nfc:04000004", "2026-11-20T09:51:00Z");
        assert_eq!(received(&s, rec.visit.id), who(Some("E3"), None, false));
        assert_eq!(queue(&s), "E1 E3*");
        let to: Vec<&str> = rec
            .alerts
            .alerts
            .iter()
            .map(|a| a.consultant_id.as_str())
            .collect();
        assert_eq!(to, ["E3"]);
        let stored: Vec<String> = s
            .conn
            .prepare("SELECT consultant_id FROM alerts WHERE visit_id = ?1")
            .expect("sql")
            .query_map([rec.visit.id.to_string()], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(stored, ["E3"]);
    }

    #[test]
    fn protection_runs_from_the_owners_own_last_visit() {
        let dir = tempfile::tempdir().expect("dir");
        let rows = "\
nfc:04000001,C1,张,mr,normal,E1,李娜,walk_in,2026-10-01T00:00:00Z,,,
nfc:04000002,C2,王,ms,normal,E2,陈晨,walk_in,2026-10-01T00:00:00Z,,,
";
        let mut s = reception_store(dir.path(), rows, &["E1"]);
        // (what, card, time, receiver, stand-in for, public pool)
        let cases: Vec<FollowUpRow> = vec![
            (
                "C1 within 15 days of the roster's follow-up",
                "nfc:04000001",
                "2026-10-10T02:00:00Z",
                Some("E1"),
                None,
                false,
            ),
            (
                "C2's owner off duty: E1 stands in",
                "nfc:04000002",
                "2026-10-10T03:00:00Z",
                Some("E1"),
                Some("E2"),
                false,
            ),
            // 19 days after the roster's follow-up, 10 after E1's own visit.
            (
                "C1 renewed by the owner's visit",
                "nfc:04000001",
                "2026-10-20T02:00:00Z",
                Some("E1"),
                None,
                false,
            ),
            // The stand-in's visit of 10-10 renewed nothing: lapsed on 10-16, and the
            // rotation's turn (E1, alone on duty) receives.
            (
                "C2 lapsed despite the stand-in's visit",
                "nfc:04000002",
                "2026-10-20T03:00:00Z",
                Some("E1"),
                None,
                true,
            ),
            (
                "C1 exactly 15 days after the owner's last visit",
                "nfc:04000001",
                "2026-11-04T02:00:00Z",
                Some("E1"),
                None,
                true,
            ),
        ];
        for (what, card, at, consultant, stand_in_for, public_pool) in cases {
            // E1 frees themselves between visitors.
            rotate(&mut s, RotationOp::Free("E1".into()));
            let rec = tap(&mut s, card, at);
            assert_eq!(
                received(&s, rec.visit.id),
                who(consultant, stand_in_for, public_pool),
                "{what}"
            );
        }

        // A longer configured visit period keeps C2 (last follow-up 10-01) protected.
        let other = tempfile::tempdir().expect("dir");
        let mut s = reception_store(other.path(), rows, &["E2"]);
        s.set_protection_periods(ProtectionPeriods {
            visit: std::time::Duration::from_secs(30 * 24 * 3600),
            ..ProtectionPeriods::DEFAULT
        });
        let rec = tap(&mut s, "nfc:04000002", "2026-10-20T03:00:00Z");
        assert_eq!(received(&s, rec.visit.id), who(Some("E2"), None, false));
    }

    /// Broker codes (确客): confirmed → the customer's visit (counted once a day, received
    /// like a welcome); refused → a denied visit with the refusal's code and reason.
    #[test]
    fn broker_codes_confirm_or_are_refused_and_count_once_a_day() {
        let dir = tempfile::tempdir().expect("dir");
        let rows = "\
nfc:04000003,C3,李,ms,normal,E1,李娜,broker,,B1,2026-11-10T00:00:00Z,
nfc:04000006,C6,孙,mr,normal,E2,陈晨,,,B2,2026-11-01T00:00:00Z,2026-11-12T00:00:00Z
nfc:04000007,C7,周,mr,normal,,,,,,,
";
        let mut s = reception_store(dir.path(), rows, &["E1", "E2"]);
        let day1 = "2026-11-20T02:00:00Z";
        let scan = |s: &mut Store, code: &str, at: &str| tap(s, code, at);

        let confirmed = scan(&mut s, "qr:broker:B1:C3", day1);
        assert_eq!(
            confirmed.decision,
            Decision::BrokerConfirmed(Some(VisitKind::First))
        );
        let v = &confirmed.visit;
        assert_eq!(
            (
                v.outcome.as_str(),
                v.kind.as_deref(),
                v.broker_id.as_deref(),
                v.method.as_str()
            ),
            ("broker_confirmed", Some("first"), Some("B1"), "qr")
        );
        assert_eq!(v.customer.as_ref().map(|c| c.id.as_str()), Some("C3"));
        // Received like a welcome: C3's owner E1 is on duty. The registration does not
        // make the broker (or anyone else) the owner.
        assert_eq!(received(&s, v.id), who(Some("E1"), None, false));
        assert_eq!(queue(&s), "E1* E2");
        let body: String = s
            .conn
            .query_row("SELECT body FROM outbox WHERE seq = ?1", [v.seq], |r| {
                r.get(0)
            })
            .expect("outbox");
        assert!(
            body.contains(r#""outcome":"broker_confirmed""#)
                && body.contains(r#""broker_id":"B1""#),
            "{body}"
        );

        // The same code again, and C3's own card, the same day: greeted, nothing written.
        for token in ["qr:broker:B1:C3", "nfc:04000003"] {
            let again = scan(&mut s, token, "2026-11-20T03:00:00Z");
            assert_eq!(
                (again.decision, again.visit.id),
                (Decision::Repeat, v.id),
                "{token}"
            );
        }

        // Next day the card comes first; the broker's scan is then evidence, uncounted,
        // with the day's receiver; a second scan only greets.
        rotate(&mut s, RotationOp::Free("E1".into()));
        let day2 = "2026-11-21T02:00:00Z";
        let welcome = tap(&mut s, "nfc:04000003", day2);
        assert_eq!(welcome.decision, Decision::Welcome(VisitKind::Revisit));
        let evidence = scan(&mut s, "qr:broker:B1:C3", "2026-11-21T02:05:00Z");
        assert_eq!(evidence.decision, Decision::BrokerConfirmed(None));
        assert_eq!(
            (
                evidence.visit.outcome.as_str(),
                evidence.visit.kind.as_deref(),
                evidence.visit.broker_id.as_deref()
            ),
            ("broker_confirmed", None, Some("B1"))
        );
        assert_eq!(
            received(&s, evidence.visit.id),
            who(Some("E1"), None, false)
        );
        let again = scan(&mut s, "qr:broker:B1:C3", "2026-11-21T02:06:00Z");
        assert_eq!(
            (again.decision, again.visit.id),
            (Decision::Repeat, evidence.visit.id)
        );
        let counted: i64 = s
            .conn
            .query_row(
                concat!("SELECT count(*) FROM visits WHERE customer_id = 'C3' AND office_day = '2026-11-21' AND ", counted!()),
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(counted, 1, "one counted visit a day");
        // And the index itself refuses a second counted confirmation of the day.
        let second = s.conn.execute(
            "INSERT INTO visits (id, seq, source, method, customer_id, outcome, kind, office_day, device_time, recorded_at)
             VALUES ('x', 999, 'r', 'qr', 'C3', 'broker_confirmed', 'revisit', '2026-11-21', 't', 't')",
            [],
        );
        assert!(
            second.is_err(),
            "the partial unique index counts broker_confirmed"
        );

        // Refusals: (code, reason, customer recorded, broker recorded).
        let cases: Vec<(&str, &str, Option<&str>, Option<&str>)> = vec![
            ("qr:broker:B2:C3", "other_broker", Some("C3"), Some("B2")),
            (
                "qr:broker:B2:C6",
                "registration_expired",
                Some("C6"),
                Some("B2"),
            ),
            // B2's registration of C6 has lapsed, so B1 simply has none.
            (
                "qr:broker:B1:C6",
                "unknown_registration",
                Some("C6"),
                Some("B1"),
            ),
            (
                "qr:broker:B1:C7",
                "unknown_registration",
                Some("C7"),
                Some("B1"),
            ),
            ("qr:broker:B1:C99", "unknown_customer", None, Some("B1")),
            ("qr:broker:B1", "malformed_broker_code", None, Some("B1")),
            ("qr:broker::C3", "malformed_broker_code", None, None),
        ];
        let before = queue(&s);
        for (code, reason, customer, broker) in cases {
            let rec = scan(&mut s, code, day1);
            let v = &rec.visit;
            assert!(matches!(rec.decision, Decision::Denied(_)), "{code}");
            assert_eq!(
                (v.outcome.as_str(), v.reason.as_deref()),
                ("denied", Some(reason)),
                "{code}"
            );
            assert_eq!(
                v.customer.as_ref().map(|c| c.id.as_str()),
                customer,
                "{code}"
            );
            assert_eq!(v.broker_id.as_deref(), broker, "{code}");
            assert_eq!(v.kind, None, "{code}");
            let detail = v.reason_detail.as_deref().unwrap_or_default();
            assert!(
                detail.contains(" · "),
                "{code}: a bilingual reason, got {detail:?}"
            );
            assert_eq!(received(&s, v.id), who(None, None, false), "{code}");
            assert_eq!(
                v.card.as_deref(),
                Some(code),
                "{code}: the code as read is kept"
            );
        }
        assert_eq!(queue(&s), before, "refusals move nobody");
        // A refused code is no visit: C6's card on that day is a first welcome.
        let rec = tap(&mut s, "nfc:04000006", day1);
        assert_eq!(rec.decision, Decision::Welcome(VisitKind::First));
    }

    // Group commit: the writer's shared transaction.

    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    type Pending<'w, R> = Pin<Box<dyn Future<Output = Result<R, StoreError>> + Send + 'w>>;

    /// Polls `call` once, which queues its job on the writer, and keeps it to await later.
    fn queued<'w, R>(
        call: impl Future<Output = Result<R, StoreError>> + Send + 'w,
    ) -> Pending<'w, R> {
        let mut call: Pending<'w, R> = Box::pin(call);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending(), "answered at once");
        call
    }

    /// Whether `call` has its answer, without waiting.
    fn answered<R>(call: &mut Pending<'_, R>) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        matches!(call.as_mut().poll(&mut cx), Poll::Ready(_))
    }

    /// Holds the writer with a job of its own until the returned sender is used (or
    /// dropped), so that the grouped jobs sent meanwhile are all queued together.
    fn hold(writer: &Writer) -> (std_mpsc::Sender<()>, Pending<'_, ()>) {
        let (release, gate) = std_mpsc::channel::<()>();
        let held = queued(writer.call(move |_| {
            let _ = gate.recv();
            Ok(())
        }));
        (release, held)
    }

    /// A grouped job that inserts `key` into `meta` and says which commit it is in.
    fn insert<'w>(writer: &'w Writer, key: &'static str) -> Pending<'w, u64> {
        queued(writer.call_grouped(move |s| {
            assert!(
                !s.conn.is_autocommit(),
                "a grouped job runs in the shared transaction"
            );
            s.conn
                .execute("INSERT INTO meta (key, value) VALUES (?1, 'x')", [key])?;
            Ok(s.group_commits)
        }))
    }

    fn keys(dir: &Path) -> Vec<String> {
        let conn = open(dir).expect("reader");
        conn.prepare("SELECT key FROM meta WHERE key LIKE 'job-%' ORDER BY key")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("keys")
    }

    #[tokio::test]
    async fn jobs_queued_together_share_one_commit() {
        let dir = tempfile::tempdir().expect("dir");
        let (writer, thread) = Writer::spawn(store(dir.path())).expect("writer");
        let (release, held) = hold(&writer);
        let jobs: Vec<_> = ["job-a", "job-b", "job-c", "job-d"]
            .into_iter()
            .map(|k| insert(&writer, k))
            .collect();
        release.send(()).expect("release");
        held.await.expect("held");
        for job in jobs {
            // Each saw the count of commits before its group: all were in the first one.
            assert_eq!(job.await.expect("grouped job"), 0);
        }
        let commits = writer.call(|s| Ok(s.group_commits)).await.expect("count");
        assert_eq!(commits, 1, "four jobs, one commit");
        assert_eq!(keys(dir.path()), ["job-a", "job-b", "job-c", "job-d"]);
        drop(writer);
        thread.join().expect("writer thread");
    }

    /// An error (after a write) and a panic roll back their own job's writes only; the
    /// others of the group are committed, and the writer goes on.
    #[tokio::test]
    async fn a_failing_job_takes_only_its_own_writes_down() {
        let dir = tempfile::tempdir().expect("dir");
        let (writer, thread) = Writer::spawn(store(dir.path())).expect("writer");
        let (release, held) = hold(&writer);
        let a = insert(&writer, "job-a");
        let failing = queued(writer.call_grouped(|s| {
            s.conn
                .execute("INSERT INTO meta (key, value) VALUES ('job-b', 'x')", [])?;
            s.conn.execute("INSERT INTO no_such_table VALUES (1)", [])?;
            Ok(())
        }));
        let panicking: Pending<'_, ()> = queued(writer.call_grouped(|s| {
            s.conn
                .execute("INSERT INTO meta (key, value) VALUES ('job-p', 'x')", [])?;
            panic!("a bug in a job");
        }));
        let c = insert(&writer, "job-c");
        release.send(()).expect("release");
        held.await.expect("held");
        assert_eq!(a.await.expect("a"), 0);
        let err = failing.await.expect_err("its SQL fails");
        assert!(err.to_string().contains("no_such_table"), "{err}");
        assert!(matches!(panicking.await, Err(StoreError::WriterGone)));
        assert_eq!(c.await.expect("c"), 0);
        assert_eq!(keys(dir.path()), ["job-a", "job-c"]);
        // The writer still works, and the next group is a new commit.
        assert_eq!(insert(&writer, "job-d").await.expect("d"), 1);
        drop(writer);
        thread.join().expect("writer thread");
    }

    /// A submitted grouped job shares the group's commit, and its `then` runs after that
    /// commit (the row is visible to another connection) with its result; a failing one's
    /// writes are rolled back and `then` gets the error.
    #[tokio::test]
    async fn submitted_grouped_jobs_share_the_commit_and_hear_after_it() {
        let dir = tempfile::tempdir().expect("dir");
        let (writer, thread) = Writer::spawn(store(dir.path())).expect("writer");
        let (release, held) = hold(&writer);
        let a = insert(&writer, "job-a");
        let (told, heard) = std_mpsc::channel();
        let path = dir.path().to_owned();
        let told_b = told.clone();
        writer
            .submit_grouped(
                |s| {
                    s.conn
                        .execute("INSERT INTO meta (key, value) VALUES ('job-b', 'x')", [])?;
                    Ok(s.group_commits)
                },
                move |result| {
                    let _ = told_b.send((result.map_err(|e| e.to_string()), keys(&path)));
                },
            )
            .expect("submit");
        writer
            .submit_grouped(
                |s| {
                    s.conn
                        .execute("INSERT INTO meta (key, value) VALUES ('job-x', 'x')", [])?;
                    s.conn.execute("INSERT INTO no_such_table VALUES (1)", [])?;
                    Ok(0)
                },
                move |result| {
                    let _ = told.send((result.map_err(|e| e.to_string()), Vec::new()));
                },
            )
            .expect("submit");
        let c = insert(&writer, "job-c");
        release.send(()).expect("release");
        held.await.expect("held");
        let wait = std::time::Duration::from_secs(10);
        let (b, seen) = heard.recv_timeout(wait).expect("then of b");
        assert_eq!(b, Ok(0), "in the first group");
        assert_eq!(seen, ["job-a", "job-b", "job-c"], "told after the commit");
        let (x, _) = heard.recv_timeout(wait).expect("then of x");
        assert!(x.expect_err("its SQL fails").contains("no_such_table"));
        assert_eq!((a.await.expect("a"), c.await.expect("c")), (0, 0));
        assert_eq!(keys(dir.path()), ["job-a", "job-b", "job-c"]);
        drop(writer);
        thread.join().expect("writer thread");
    }

    /// No job of a group hears back before the group's COMMIT: the first job's answer
    /// waits while a later job of its group is still running, and when it comes, the
    /// row is visible to another connection.
    #[tokio::test]
    async fn answers_come_only_after_the_shared_commit() {
        let dir = tempfile::tempdir().expect("dir");
        let (writer, thread) = Writer::spawn(store(dir.path())).expect("writer");
        let (release, held) = hold(&writer);
        let mut first = insert(&writer, "job-a");
        let (finish, slow_gate) = std_mpsc::channel::<()>();
        let (started, slow_started) = std_mpsc::channel::<()>();
        let slow = queued(writer.call_grouped(move |_| {
            let _ = started.send(());
            let _ = slow_gate.recv();
            Ok(())
        }));
        release.send(()).expect("release");
        held.await.expect("held");
        slow_started
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the second job runs");
        // job-a's work is done, but its group is not committed: no answer, no row.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!answered(&mut first), "answered before the commit");
        assert!(keys(dir.path()).is_empty());
        finish.send(()).expect("finish");
        assert_eq!(first.await.expect("a"), 0);
        assert_eq!(keys(dir.path()), ["job-a"]);
        slow.await.expect("slow");
        drop(writer);
        thread.join().expect("writer thread");
    }

    /// In a group, a visit's rotation turn lives in its savepoint: a job that fails after
    /// recording takes its turn back with its visit, and the others' turns are committed.
    #[tokio::test]
    async fn a_rolled_back_visit_takes_no_turn() {
        let dir = tempfile::tempdir().expect("dir");
        let rows = "\
nfc:04000001,C1,张,mr,normal,,,,,,,
nfc:04000002,C2,王,ms,normal,,,,,,,
nfc:04000003,C3,李,ms,normal,E3,周,,,,,
nfc:04000004,C4,赵,mr,normal,E4,吴,,,,,
";
        let mut s = reception_store(dir.path(), rows, &["E3", "E4"]);
        s.set_alerts(Arc::new(crate::alerts::Alerts::default()));
        let (writer, thread) = Writer::spawn(s).expect("writer");
        let tap_in_group = |card: &'static str, fail: bool| {
            queued(writer.call_grouped(move |s| {
                let rec = s.record_tap_in_group(&TapInput {
                    source: "r".into(),
                    token: CardToken::parse(card).expect("token"),
                    device_time: "2026-11-20T02:00:00Z".parse().expect("time"),
                })?;
                if fail {
                    return Err(StoreError::Group("a later step failed".into()));
                }
                Ok(rec.visit.consultant.map(|c| c.id))
            }))
        };
        let (release, held) = hold(&writer);
        let failing = tap_in_group("nfc:04000001", true);
        let next = tap_in_group("nfc:04000002", false);
        release.send(()).expect("release");
        held.await.expect("held");
        assert!(failing.await.is_err());
        // The failed visit's turn (E3's) was given back: C2 takes it.
        assert_eq!(next.await.expect("C2").as_deref(), Some("E3"));
        let saved = writer.call(|s| Ok(queue(s))).await.expect("queue");
        assert_eq!(saved, "E4 E3*");
        // Its alert went with it; C2's was committed with C2's visit.
        let alerted = writer
            .call(|s| {
                let mut stmt = s.conn.prepare(
                    "SELECT a.consultant_id, c.customer_id FROM alerts a JOIN visits c ON c.id = a.visit_id",
                )?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
            .expect("alerts");
        assert_eq!(alerted, [("E3".to_owned(), "C2".to_owned())]);
        drop(writer);
        thread.join().expect("writer thread");
    }
}
