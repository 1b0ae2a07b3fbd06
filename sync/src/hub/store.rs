//! The hub's storage API, one face over two backends: SQLite (one office, a pilot) and PostgreSQL (a fleet).
//!
//! Invariants both backends keep (the shared test suite in `hub/tests.rs` checks them):
//! - a record is stored once, keyed by its `id`, forever (`INSERT … ON CONFLICT DO NOTHING`);
//!   a second record claiming a `(kiosk_id, seq)` already held by another id is rejected;
//! - a batch's records, rejects and the kiosk's new high-water commit in one transaction,
//!   and batches of one kiosk are serialized (the kiosk row is locked first), so several
//!   hub processes on one PostgreSQL agree;
//! - the roster change log's cursor increases in commit order: roster writes are
//!   serialized (PostgreSQL: a transaction-scoped advisory lock), so a reader that has
//!   seen cursor N never later finds a change below N;
//! - every roster write appends its changes to the log in the same transaction, and so
//!   does a batch whose card bindings or revocations change the roster;
//! - timestamps are kept to the microsecond (what both databases hold), so a log entry
//!   and a snapshot say the same.

use serde::Serialize;
use uuid::Uuid;

use crate::wire::{
    BatchReply, BrokerEntry, CardEntry, ConsultantEntry, CustomerEntry, Entity, Record,
    RegistrationEntry, RosterPage,
};

use super::postgres::PgHub;
use super::sqlite::SqliteHub;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum HubStoreError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Shown with its causes: tokio-postgres's own message alone is "db error".
    /// Not marked as the source, so a chain printer does not repeat them.
    #[error("PostgreSQL: {}", with_causes(.0))]
    Postgres(tokio_postgres::Error),
    #[error("PostgreSQL pool: {0}")]
    Pool(String),
    #[error(
        "the hub database has schema version {found}, newer than this hub ({supported}); install the newer kiosk binary"
    )]
    TooNew { found: i64, supported: i64 },
    #[error("cannot open the hub database: {0}")]
    Open(String),
    #[error("{0}")]
    Conflict(Conflict),
    #[error("{entity} {key:?} does not exist")]
    NotFound { entity: &'static str, key: String },
    #[error("the store's worker has stopped")]
    Gone,
    /// A stored value this hub cannot read back (a body that is not JSON, a negative
    /// seq): someone edited the database by hand, or it is damaged.
    #[error(
        "the hub database holds a value this hub cannot read ({0}); restore it from a backup or fix that row"
    )]
    Corrupt(String),
}

impl From<tokio_postgres::Error> for HubStoreError {
    fn from(e: tokio_postgres::Error) -> HubStoreError {
        HubStoreError::Postgres(e)
    }
}

/// An error's message followed by each of its causes': `a: b: c`.
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A roster write that would break a rule; the message names ids, never a phone's owner details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// One customer per phone number (design §2).
    #[error(
        "this phone number already belongs to customer {existing}; update that customer instead of adding another"
    )]
    PhoneTaken { existing: String },
    /// One customer per active card.
    #[error("card {token} is active for customer {existing}; revoke it there first")]
    CardTaken { token: String, existing: String },
    /// A customer, card or consultant refers to something absent.
    #[error("{entity} {key:?} does not exist; add it first")]
    Missing { entity: &'static str, key: String },
    /// A consultant who still owns customers cannot be deleted.
    #[error(
        "consultant {id} still serves {customers} customers; move them to another consultant first"
    )]
    ConsultantInUse { id: String, customers: u64 },
    /// A broker who still holds registrations (报备) cannot be deleted: they are the
    /// evidence of whose customer it is.
    #[error(
        "broker {id} still holds {registrations} registrations; delete or move them first (DELETE /admin/v1/registrations/{{customer_id}})"
    )]
    BrokerInUse { id: String, registrations: u64 },
    /// A kiosk id can be issued once.
    #[error("kiosk {id} already has a token; revoke it first to issue a new one")]
    KioskExists { id: String },
}

/// A customer as the hub holds it: the CRM's view, with the phone and full name
/// that kiosks never receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HubCustomer {
    pub id: String,
    /// Full name, for staff; never sent to kiosks.
    #[serde(default)]
    pub name: Option<String>,
    pub surname: String,
    /// `mr` | `ms`.
    pub title: String,
    /// `normal` | `silver` | `gold`.
    pub tier: String,
    /// Normalized (digits, with `+` and country code for non-Chinese numbers); unique.
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub consultant_id: Option<String>,
    /// `outreach` | `phone` | `walk_in` | `broker` ([`SOURCES`]): picks the kiosk's
    /// protection period.
    #[serde(default)]
    pub source: Option<String>,
    /// The last qualifying contact the protection period runs from.
    #[serde(default)]
    pub last_follow_up: Option<jiff::Timestamp>,
}

/// The customer sources (design §2): 拓客, 来电, 自访, 渠道.
pub const SOURCES: [&str; 4] = ["outreach", "phone", "walk_in", "broker"];

impl HubCustomer {
    /// What kiosks receive of this customer.
    pub fn kiosk_entry(&self) -> CustomerEntry {
        CustomerEntry {
            id: self.id.clone(),
            surname: self.surname.clone(),
            title: self.title.clone(),
            tier: self.tier.clone(),
            consultant_id: self.consultant_id.clone(),
            source: self.source.clone(),
            last_follow_up: self.last_follow_up,
        }
    }

    /// With its timestamp cut to what the databases keep.
    fn stored(mut self) -> HubCustomer {
        self.last_follow_up = self.last_follow_up.map(whole_micros);
        self
    }
}

/// A registration with its timestamps cut to what the databases keep.
fn stored_registration(mut r: RegistrationEntry) -> RegistrationEntry {
    r.registered_at = whole_micros(r.registered_at);
    r.expires_at = r.expires_at.map(whole_micros);
    r
}

/// `t` without its sub-microsecond part: both databases keep microseconds, and what
/// the log carries must be what a snapshot later reads back.
pub(crate) fn whole_micros(t: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t)
}

/// A consent to data processing (PIPL) as the hub keeps it: given at a kiosk with a
/// walk-in's card binding, kept as evidence (it outlives the customer row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredConsent {
    /// The binding record that carried it.
    pub record_id: Uuid,
    pub customer_id: String,
    pub kiosk_id: String,
    /// The version of the privacy notice the customer was shown.
    pub notice_version: String,
    pub given_at: jiff::Timestamp,
}

/// A whole roster applied in one transaction (`kiosk hub import`): upserts only.
#[derive(Debug, Clone, Default)]
pub struct RosterImport {
    pub consultants: Vec<ConsultantEntry>,
    pub customers: Vec<HubCustomer>,
    pub cards: Vec<CardEntry>,
    pub brokers: Vec<BrokerEntry>,
    /// Applied last: they refer to customers and brokers.
    pub registrations: Vec<RegistrationEntry>,
}

/// Counts of what an import changed (an unchanged entry is not logged again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportCounts {
    pub consultants: u64,
    pub customers: u64,
    pub cards: u64,
    pub brokers: u64,
    pub registrations: u64,
}

/// One line of an upstream batch, as the HTTP layer parsed it.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A record of a kind this hub knows. `raw` is the line as received, stored as-is.
    Record { record: Box<Record>, raw: String },
    /// A line the hub cannot take (bad JSON, unknown kind, wrong kiosk, …). Kept as a
    /// reject; when it carries a seq, that seq counts as held and a resent line is
    /// kept once. Without a seq there is no key to know a resend by: kept each time.
    Reject {
        seq: Option<u64>,
        id: Option<Uuid>,
        kind: Option<String>,
        reason: String,
        raw: String,
    },
}

/// A kiosk's credentials row.
#[derive(Debug, Clone)]
pub struct KioskRow {
    pub id: String,
    pub office_id: String,
    /// SHA-256 of the token's secret, hex.
    pub token_hash: String,
    pub high_water: u64,
}

/// A stored record, as the admin API lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredRecord {
    pub id: Uuid,
    pub kiosk_id: String,
    pub seq: u64,
    pub kind: String,
    /// The record's JSON as the kiosk sent it.
    pub body: serde_json::Value,
    /// The hub's clock at commit.
    pub received_at: jiff::Timestamp,
}

/// A rejected line, kept as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredReject {
    pub kiosk_id: String,
    pub seq: Option<u64>,
    pub reason: String,
    pub raw: String,
    pub received_at: jiff::Timestamp,
}

/// One office's day as the hub counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DayReport {
    /// Visit records of the day (evidence: every kiosk's and handheld's).
    pub records: u64,
    /// Customers welcomed that day, or confirmed as a broker's (确客): one office visit
    /// per customer per day.
    pub office_visits: u64,
}

/// Either backend; chosen by the `database` URL.
#[derive(Debug, Clone)]
pub enum HubDb {
    Sqlite(SqliteHub),
    Postgres(PgHub),
}

macro_rules! dispatch {
    ($self:ident, $db:ident => $call:expr) => {
        match $self {
            HubDb::Sqlite($db) => $call.await,
            HubDb::Postgres($db) => $call.await,
        }
    };
}

impl HubDb {
    /// Opens `sqlite:PATH` or `postgres://…`, creating or upgrading the schema.
    pub async fn open(database: &str) -> Result<HubDb, HubStoreError> {
        if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            Ok(HubDb::Postgres(PgHub::open(database).await?))
        } else {
            let path = database.strip_prefix("sqlite:").unwrap_or(database);
            Ok(HubDb::Sqlite(
                SqliteHub::open(std::path::Path::new(path)).await?,
            ))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            HubDb::Sqlite(_) => "sqlite",
            HubDb::Postgres(_) => "postgres",
        }
    }

    // --- kiosks ---

    /// Stores a new kiosk's token hash; `Conflict::KioskExists` when the id has one.
    pub async fn add_kiosk(
        &self,
        id: &str,
        office_id: &str,
        token_hash: &str,
    ) -> Result<(), HubStoreError> {
        dispatch!(self, db => db.add_kiosk(id, office_id, token_hash))
    }

    /// Removes a kiosk's token (its records stay); `NotFound` when absent.
    pub async fn revoke_kiosk(&self, id: &str) -> Result<(), HubStoreError> {
        dispatch!(self, db => db.revoke_kiosk(id))
    }

    pub async fn kiosk(&self, id: &str) -> Result<Option<KioskRow>, HubStoreError> {
        dispatch!(self, db => db.kiosk(id))
    }

    pub async fn kiosks(&self) -> Result<Vec<KioskRow>, HubStoreError> {
        dispatch!(self, db => db.kiosks())
    }

    // --- upstream ---

    /// Stores a batch from `kiosk_id` in one transaction and answers per line, in order.
    /// `received_at` is the hub's clock. Card bindings and revocations are applied to
    /// the roster (and logged) in the same transaction, or rejected with a reason
    /// `CODE: message` (`phone_taken`, `customer_exists`, `card_taken`,
    /// `unknown_customer`, `unknown_card`, `invalid`). Records whose `kiosk_id` differs from the
    /// caller's were already turned into `Incoming::Reject` by the HTTP layer.
    /// A record neither database can hold as such (a seq past `i64::MAX`, a NUL
    /// character in a text field) is answered `Rejected` and kept as a reject, so it
    /// never fails the batch on every retry. `NotFound` when the kiosk has no row.
    pub async fn store_batch(
        &self,
        kiosk_id: &str,
        items: Vec<Incoming>,
        received_at: jiff::Timestamp,
    ) -> Result<BatchReply, HubStoreError> {
        dispatch!(self, db => db.store_batch(kiosk_id, items, received_at))
    }

    /// Records of one kiosk with `seq > after_seq`, in seq order.
    pub async fn records(
        &self,
        kiosk_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<StoredRecord>, HubStoreError> {
        dispatch!(self, db => db.records(kiosk_id, after_seq, limit))
    }

    pub async fn rejects(&self, kiosk_id: &str) -> Result<Vec<StoredReject>, HubStoreError> {
        dispatch!(self, db => db.rejects(kiosk_id))
    }

    /// Total records stored (all kiosks).
    pub async fn record_count(&self) -> Result<u64, HubStoreError> {
        dispatch!(self, db => db.record_count())
    }

    pub async fn day_report(&self, office_id: &str, day: &str) -> Result<DayReport, HubStoreError> {
        dispatch!(self, db => db.day_report(office_id, day))
    }

    // --- downstream ---

    /// Changes with `cursor > since`, at most `limit`, oldest first.
    /// `Err(Ok(oldest))`-like expiry is reported as `Ok(Err(CursorExpired))`.
    pub async fn roster_changes(
        &self,
        since: u64,
        limit: u32,
    ) -> Result<Result<RosterPage, crate::wire::CursorExpired>, HubStoreError> {
        dispatch!(self, db => db.roster_changes(since, limit))
    }

    /// The whole current roster as gzipped NDJSON (`SnapshotHead` then entries:
    /// consultants, customers, cards, brokers, registrations), consistent with the
    /// cursor in the head.
    pub async fn roster_snapshot(&self) -> Result<Vec<u8>, HubStoreError> {
        dispatch!(self, db => db.roster_snapshot())
    }

    /// Drops log entries older than `before`; a kiosk whose cursor falls below the
    /// oldest kept entry gets `409` and takes a snapshot. Returns how many were dropped.
    pub async fn prune_roster_log(&self, before: jiff::Timestamp) -> Result<u64, HubStoreError> {
        dispatch!(self, db => db.prune_roster_log(before))
    }

    // --- roster administration (each call one transaction, logged) ---

    pub async fn import(&self, mut roster: RosterImport) -> Result<ImportCounts, HubStoreError> {
        roster.customers = roster
            .customers
            .into_iter()
            .map(HubCustomer::stored)
            .collect();
        roster.registrations = roster
            .registrations
            .into_iter()
            .map(stored_registration)
            .collect();
        dispatch!(self, db => db.import(roster))
    }

    pub async fn upsert_consultant(&self, c: ConsultantEntry) -> Result<(), HubStoreError> {
        dispatch!(self, db => db.upsert_consultant(c))
    }

    pub async fn upsert_customer(&self, c: HubCustomer) -> Result<(), HubStoreError> {
        let c = c.stored();
        dispatch!(self, db => db.upsert_customer(c))
    }

    pub async fn upsert_card(&self, c: CardEntry) -> Result<(), HubStoreError> {
        dispatch!(self, db => db.upsert_card(c))
    }

    pub async fn upsert_broker(&self, b: BrokerEntry) -> Result<(), HubStoreError> {
        dispatch!(self, db => db.upsert_broker(b))
    }

    /// Sets the customer's broker registration (报备), replacing any earlier one: one
    /// live claim per customer. `Conflict::Missing` names an absent customer or broker.
    pub async fn upsert_registration(&self, r: RegistrationEntry) -> Result<(), HubStoreError> {
        let r = stored_registration(r);
        dispatch!(self, db => db.upsert_registration(r))
    }

    /// Deletes an entry, logging a tombstone. Deleting a customer deletes (and
    /// tombstones) their cards and registration first; a consultant still serving
    /// customers, or a broker still holding registrations, is refused.
    pub async fn delete(&self, entity: Entity, key: &str) -> Result<(), HubStoreError> {
        dispatch!(self, db => db.delete(entity, key))
    }

    pub async fn customer(&self, id: &str) -> Result<Option<HubCustomer>, HubStoreError> {
        dispatch!(self, db => db.customer(id))
    }

    pub async fn card(&self, token: &str) -> Result<Option<CardEntry>, HubStoreError> {
        dispatch!(self, db => db.card(token))
    }

    /// The registration of a customer, if any.
    pub async fn registration(
        &self,
        customer_id: &str,
    ) -> Result<Option<RegistrationEntry>, HubStoreError> {
        dispatch!(self, db => db.registration(customer_id))
    }

    /// The consents a customer gave, oldest first.
    pub async fn consents(&self, customer_id: &str) -> Result<Vec<StoredConsent>, HubStoreError> {
        dispatch!(self, db => db.consents(customer_id))
    }
}
