//! Wire types that cross from a kiosk to the hub; additive changes only, versioned by [`PROTOCOL_HEADER`].
//!
//! The kiosk freezes a record's JSON into its outbox in the same transaction that
//! stores the visit, so what the hub receives is exactly what was acknowledged.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// HTTP header carrying [`PROTOCOL_VERSION`] on every sync request.
pub const PROTOCOL_HEADER: &str = "x-kiosk-protocol";
/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// One upstream record. The `kind` tag lets new kinds (card bindings, consents)
/// be added without touching old ones; `record` carries the kind's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "record", rename_all = "snake_case")]
pub enum Record {
    Visit(VisitRecord),
    /// A card issued (发卡) at the kiosk: bound to an existing customer or a new walk-in.
    CardBinding(CardBindingRecord),
    /// A card withdrawn at the kiosk (lost, replaced).
    CardRevocation(CardRevocationRecord),
}

impl Record {
    pub fn id(&self) -> Uuid {
        match self {
            Record::Visit(v) => v.id,
            Record::CardBinding(b) => b.id,
            Record::CardRevocation(r) => r.id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Record::Visit(_) => "visit",
            Record::CardBinding(_) => "card_binding",
            Record::CardRevocation(_) => "card_revocation",
        }
    }

    /// The kiosk that made the record.
    pub fn kiosk_id(&self) -> &str {
        match self {
            Record::Visit(v) => &v.kiosk_id,
            Record::CardBinding(b) => &b.kiosk_id,
            Record::CardRevocation(r) => &r.kiosk_id,
        }
    }

    pub fn office_id(&self) -> &str {
        match self {
            Record::Visit(v) => &v.office_id,
            Record::CardBinding(b) => &b.office_id,
            Record::CardRevocation(r) => &r.office_id,
        }
    }

    /// Per kiosk, gap-free over every kind: one outbox, one sequence.
    pub fn seq(&self) -> u64 {
        match self {
            Record::Visit(v) => v.seq,
            Record::CardBinding(b) => b.seq,
            Record::CardRevocation(r) => r.seq,
        }
    }
}

/// A visit as the hub receives it (design §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisitRecord {
    /// UUIDv7 made where the visit happened; the hub's permanent dedup key.
    pub id: Uuid,
    pub kiosk_id: String,
    pub office_id: String,
    /// Per kiosk, gap-free, from 1: the hub's ordering, never device clocks.
    pub seq: u64,
    /// The reader's name, or the handheld's device id.
    pub source: String,
    pub method: Method,
    /// Normalized card token; absent for a manual visit by customer id.
    pub card: Option<String>,
    pub customer_id: Option<String>,
    pub outcome: Outcome,
    /// Why a tap was denied (machine-readable code), when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// First visit or revisit; only for a welcomed customer.
    pub kind: Option<VisitKind>,
    /// Who received the visitor (the owner, a stand-in or the rotation's turn); null
    /// when nobody on duty was free, and for unknown and denied visits.
    pub consultant_id: Option<String>,
    pub stand_in: bool,
    /// The kiosk's clock at the tap.
    pub device_time: jiff::Timestamp,
    /// The kiosk's clock when the visit committed.
    pub recorded_at: jiff::Timestamp,
    /// The office day (`YYYY-MM-DD`, office time zone) the visit counts for, so the hub
    /// counts one office visit per customer per day without knowing each office's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office_day: Option<String>,
    /// The broker whose customer this is, confirmed at the door (确客); `outcome` is
    /// `broker_confirmed`. A refused broker code is a `denied` visit with the broker id
    /// and the refusal's code in `reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_id: Option<String>,
    /// The customer's owner, off duty, who is told of the visit: with `stand_in`, the
    /// owner `consultant_id` stood in for (义务接待); without (`consultant_id` null),
    /// nobody on duty could receive their customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stand_in_for: Option<String>,
    /// The customer's protection had lapsed (公海): the consultant who received them got
    /// them by rotation, and the hub may reassign the customer.
    #[serde(default, skip_serializing_if = "is_false")]
    pub public_pool: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A card bound at the kiosk (发卡). The hub applies it to the roster and sends it back
/// down as roster changes; a card or phone already taken at the hub rejects it
/// (`card_taken`, `phone_taken`, `unknown_customer` in the reply's reason).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardBindingRecord {
    /// UUIDv7 made at the kiosk.
    pub id: Uuid,
    pub kiosk_id: String,
    pub office_id: String,
    pub seq: u64,
    /// Normalized card token.
    pub card: String,
    /// The customer the card now belongs to: an existing one, or the new walk-in's id
    /// made at the kiosk (`w-` + a UUIDv7) when `new_customer` is present.
    pub customer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_customer: Option<NewCustomer>,
    /// The staff device that bound it.
    pub by: String,
    pub bound_at: jiff::Timestamp,
}

/// A walk-in registered at the kiosk while binding their card. The only record that
/// carries a phone number and a full name: they go to the hub and are not kept in the
/// kiosk's roster tables. Once the hub has accepted the record (or some time after it
/// rejected it) the kiosk erases both from its copy, leaving them empty
/// ([`NewCustomer::redact`]); the rest (surname, title, consent) stays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewCustomer {
    /// Empty once redacted.
    pub name: String,
    pub surname: String,
    /// `mr` or `ms`.
    pub title: String,
    /// Empty once redacted.
    pub phone: String,
    /// `outreach`, `phone`, `walk_in` or `broker`.
    pub source: String,
    /// The consultant who received them (the rotation's turn), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consultant_id: Option<String>,
    pub consent: Consent,
}

impl NewCustomer {
    /// Erases the full name and the phone. A kiosk never sends an empty phone
    /// otherwise, so an empty one means exactly this.
    pub fn redact(&mut self) {
        self.name.clear();
        self.phone.clear();
    }

    pub fn is_redacted(&self) -> bool {
        self.name.is_empty() && self.phone.is_empty()
    }
}

/// Consent to data processing (PIPL), as given at the desk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// The version of the privacy notice the customer was shown.
    pub notice_version: String,
    pub given_at: jiff::Timestamp,
}

/// A card withdrawn at the kiosk. The hub marks it revoked (`unknown_card` when it has no
/// such card).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardRevocationRecord {
    pub id: Uuid,
    pub kiosk_id: String,
    pub office_id: String,
    pub seq: u64,
    pub card: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub by: String,
    pub revoked_at: jiff::Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Nfc,
    Em4100,
    Wiegand,
    Qr,
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Welcome,
    Unknown,
    Denied,
    BrokerConfirmed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitKind {
    First,
    Revisit,
}

/// Content type of an upstream batch: one [`Record`] as JSON per line.
pub const NDJSON: &str = "application/x-ndjson";
/// Default most records in one batch.
pub const BATCH_RECORDS: usize = 500;
/// Default most bytes of NDJSON (before gzip) in one batch.
pub const BATCH_BYTES: usize = 1 << 20;

/// The hub's answer to one batch, sent only after its transaction committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchReply {
    /// One per line of the batch, in order.
    pub items: Vec<ItemResult>,
    /// The highest `seq` up to which the hub holds every record of this kiosk
    /// (stored or rejected), with no gap below it. The kiosk marks rows sent only up
    /// to here.
    pub high_water: u64,
}

/// What became of one line of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemResult {
    /// The record's `seq`, when the line carried one.
    pub seq: Option<u64>,
    pub status: ItemStatus,
    /// Why a record was rejected: what is wrong with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Stored now.
    Inserted,
    /// Stored before (a retry); nothing changed.
    Duplicate,
    /// Not stored as a record; kept by the hub as a reject and counted as held, so it
    /// never blocks the kiosk's queue.
    Rejected,
}

/// One page of the roster change log, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RosterPage {
    pub changes: Vec<RosterChange>,
    /// The cursor to ask from next; store it with the page's changes.
    pub next: u64,
    /// More changes wait after `next`.
    pub more: bool,
}

/// The body of a `409` to a roster request: the cursor is older than the log keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorExpired {
    /// The oldest cursor the hub can still page from.
    pub oldest: u64,
}

/// One change of the roster: an entry as it is now, or a tombstone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RosterChange {
    /// Position in the hub's log; increases in commit order.
    pub cursor: u64,
    #[serde(flatten)]
    pub op: RosterOp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RosterOp {
    Upsert { entry: RosterEntry },
    Delete { entity: Entity, key: String },
}

/// What a roster entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    Consultant,
    Customer,
    Card,
    Broker,
    Registration,
}

impl Entity {
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Consultant => "consultant",
            Entity::Customer => "customer",
            Entity::Card => "card",
            Entity::Broker => "broker",
            Entity::Registration => "registration",
        }
    }

    pub fn parse(text: &str) -> Option<Entity> {
        [
            Entity::Consultant,
            Entity::Customer,
            Entity::Card,
            Entity::Broker,
            Entity::Registration,
        ]
        .into_iter()
        .find(|e| e.as_str() == text)
    }
}

/// A roster entry as kiosks receive it: only what the reception needs, never a
/// phone number or a full name of a customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "entity", rename_all = "snake_case")]
pub enum RosterEntry {
    Consultant(ConsultantEntry),
    Customer(CustomerEntry),
    Card(CardEntry),
    Broker(BrokerEntry),
    /// A broker's report (报备) of a customer; keyed by the customer: one live claim each.
    Registration(RegistrationEntry),
}

impl RosterEntry {
    pub fn entity(&self) -> Entity {
        match self {
            RosterEntry::Consultant(_) => Entity::Consultant,
            RosterEntry::Customer(_) => Entity::Customer,
            RosterEntry::Card(_) => Entity::Card,
            RosterEntry::Broker(_) => Entity::Broker,
            RosterEntry::Registration(_) => Entity::Registration,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            RosterEntry::Consultant(c) => &c.id,
            RosterEntry::Customer(c) => &c.id,
            RosterEntry::Card(c) => &c.token,
            RosterEntry::Broker(b) => &b.id,
            RosterEntry::Registration(r) => &r.customer_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsultantEntry {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerEntry {
    pub id: String,
    /// Family name only; the screen shows it with the title (张先生).
    pub surname: String,
    /// `mr` or `ms`.
    pub title: String,
    /// `normal`, `silver` or `gold`.
    pub tier: String,
    pub consultant_id: Option<String>,
    /// `outreach`, `phone`, `walk_in` or `broker`: picks the protection period. Absent:
    /// the visit period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The last qualifying contact with the owner (visit, call, report) the protection
    /// period runs from. Absent: the protection is not tracked and never lapses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_follow_up: Option<jiff::Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardEntry {
    /// Normalized card token (design §4).
    pub token: String,
    pub customer_id: String,
    /// `active` or `revoked`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Given as DEZ8: matched by its low 24 bits.
    #[serde(default)]
    pub low24_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEntry {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
}

/// A broker's report (报备): the customer came through this broker. The broker's QR code
/// (带看码) reads `qr:broker:BROKER_ID:CUSTOMER_ID` and is checked against it on arrival.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationEntry {
    pub customer_id: String,
    pub broker_id: String,
    pub registered_at: jiff::Timestamp,
    /// Absent: `registered_at` + the kiosk's broker-report protection period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<jiff::Timestamp>,
}

/// First line of a roster snapshot (`GET /sync/v1/roster/snapshot`, NDJSON, gzip):
/// the cursor the snapshot is consistent with. Each further line is a [`RosterEntry`],
/// consultants first, then customers, cards, brokers and registrations, so references resolve in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHead {
    pub cursor: u64,
    /// How many entry lines follow, so a cut-off download is caught.
    pub entries: u64,
}

/// Reads a snapshot (gzipped NDJSON) line by line: returns its head and hands each
/// entry to `on_entry`; fails when a line is malformed or the entry count differs from
/// the head's (a cut-off download). Entries of an unknown entity (a newer hub) are
/// skipped and counted, so an older kiosk keeps working.
pub fn read_snapshot(
    gz: impl std::io::Read,
    mut on_entry: impl FnMut(RosterEntry) -> Result<(), String>,
) -> Result<SnapshotHead, String> {
    use std::io::BufRead as _;
    let mut lines = std::io::BufReader::new(flate2::read::GzDecoder::new(gz)).lines();
    let head: SnapshotHead = match lines.next() {
        Some(Ok(line)) => {
            serde_json::from_str(&line).map_err(|e| format!("snapshot head is not valid: {e}"))?
        }
        Some(Err(e)) => return Err(format!("cannot read the snapshot: {e}")),
        None => return Err("the snapshot is empty".into()),
    };
    let mut count = 0u64;
    for (n, line) in lines.enumerate() {
        let line = line.map_err(|e| format!("cannot read the snapshot: {e}"))?;
        if line.is_empty() {
            continue;
        }
        count += 1;
        match serde_json::from_str::<RosterEntry>(&line) {
            Ok(entry) => on_entry(entry)?,
            Err(e) => {
                let known = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("entity").and_then(|e| e.as_str()).map(Entity::parse));
                match known {
                    Some(None) => tracing::debug!(
                        "snapshot line {}: entity unknown to this kiosk, skipped",
                        n + 2
                    ),
                    _ => return Err(format!("snapshot line {}: {e}", n + 2)),
                }
            }
        }
    }
    if count != head.entries {
        return Err(format!(
            "the snapshot has {count} entries but its head announces {}; it was cut off, fetch it again",
            head.entries
        ));
    }
    Ok(head)
}

/// Parses a roster page, skipping changes this build does not understand (an entity
/// or op added by a newer hub) rather than failing the page: changes are additive, and
/// one unknown kind must not stop every later change from arriving. Returns the page
/// and how many changes were skipped.
pub fn parse_page(body: &[u8]) -> Result<(RosterPage, usize), String> {
    #[derive(Deserialize)]
    struct Loose {
        changes: Vec<serde_json::Value>,
        next: u64,
        more: bool,
    }
    let loose: Loose = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut skipped = 0;
    let changes = loose
        .changes
        .into_iter()
        .filter_map(|c| match serde_json::from_value::<RosterChange>(c) {
            Ok(change) => Some(change),
            Err(e) => {
                tracing::debug!(error = %e, "roster change skipped");
                skipped += 1;
                None
            }
        })
        .collect();
    Ok((
        RosterPage {
            changes,
            next: loose.next,
            more: loose.more,
        },
        skipped,
    ))
}

/// Gzipped NDJSON of the given JSON lines: an upstream batch body or a snapshot.
pub fn gzip_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    use std::io::Write as _;
    // Each write into a GzEncoder zero-fills its 32 KiB output buffer first, so the
    // lines (and their newlines) are gathered and handed over 64 KiB at a time.
    let mut gz = std::io::BufWriter::with_capacity(
        64 << 10,
        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()),
    );
    for line in lines {
        // Writing to a Vec cannot fail.
        let _ = gz.write_all(line.as_bytes());
        let _ = gz.write_all(b"\n");
    }
    gz.into_inner()
        .ok()
        .and_then(|gz| gz.finish().ok())
        .unwrap_or_default()
}

/// Inflates a gzip body, refusing to grow past `limit` bytes (a gzip bomb).
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let mut gz = flate2::read::GzDecoder::new(body).take(limit as u64 + 1);
    gz.read_to_end(&mut out).map_err(GunzipError::Corrupt)?;
    if out.len() > limit {
        return Err(GunzipError::TooLarge { limit });
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum GunzipError {
    #[error("the body is not valid gzip: {0}")]
    Corrupt(std::io::Error),
    #[error("the body inflates past {limit} bytes")]
    TooLarge { limit: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_visit_record_has_the_documented_shape() {
        let record = Record::Visit(VisitRecord {
            id: Uuid::nil(),
            kiosk_id: "k1".into(),
            office_id: "o1".into(),
            seq: 7,
            source: "ACS ACR122U 00 00".into(),
            method: Method::Nfc,
            card: Some("nfc:04A1B2C3".into()),
            customer_id: Some("C001".into()),
            outcome: Outcome::Welcome,
            reason: None,
            kind: Some(VisitKind::First),
            consultant_id: Some("E01".into()),
            stand_in: false,
            device_time: "2026-11-23T02:00:00Z".parse().expect("time"),
            recorded_at: "2026-11-23T02:00:00.001Z".parse().expect("time"),
            office_day: Some("2026-11-23".into()),
            broker_id: None,
            stand_in_for: None,
            public_pool: false,
        });
        let json = serde_json::to_value(&record).expect("serialize");
        assert_eq!(json["kind"], "visit");
        assert_eq!(json["record"]["seq"], 7);
        assert_eq!(json["record"]["kind"], "first");
        assert_eq!(json["record"]["outcome"], "welcome");
        assert_eq!(json["record"]["device_time"], "2026-11-23T02:00:00Z");
        let back: Record = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, record);
    }
}

#[cfg(test)]
mod roster_tests {
    use super::*;

    #[test]
    fn roster_changes_have_the_documented_shape() {
        let upsert = RosterChange {
            cursor: 3,
            op: RosterOp::Upsert {
                entry: RosterEntry::Card(CardEntry {
                    token: "nfc:04A1".into(),
                    customer_id: "C1".into(),
                    status: "revoked".into(),
                    note: None,
                    low24_only: false,
                }),
            },
        };
        let json = serde_json::to_value(&upsert).expect("serialize");
        assert_eq!(json["cursor"], 3);
        assert_eq!(json["op"], "upsert");
        assert_eq!(json["entry"]["entity"], "card");
        assert_eq!(json["entry"]["token"], "nfc:04A1");
        let delete = RosterChange {
            cursor: 4,
            op: RosterOp::Delete {
                entity: Entity::Card,
                key: "nfc:04A1".into(),
            },
        };
        let json = serde_json::to_value(&delete).expect("serialize");
        assert_eq!(json["op"], "delete");
        assert_eq!(json["entity"], "card");
        for change in [upsert, delete] {
            let text = serde_json::to_string(&change).expect("serialize");
            assert_eq!(
                serde_json::from_str::<RosterChange>(&text).expect("parse"),
                change
            );
        }
    }

    #[test]
    fn pages_skip_changes_of_unknown_kinds_and_keep_the_rest() {
        let body = br#"{"changes":[
            {"cursor":1,"op":"upsert","entry":{"entity":"consultant","id":"E1","name":"Li"}},
            {"cursor":2,"op":"upsert","entry":{"entity":"showroom","id":"S1"}},
            {"cursor":3,"op":"archive","entity":"card","key":"nfc:04"},
            {"cursor":4,"op":"delete","entity":"card","key":"nfc:05"}
        ],"next":4,"more":false}"#;
        let (page, skipped) = parse_page(body).expect("page");
        assert_eq!(skipped, 2);
        assert_eq!(page.next, 4);
        assert_eq!(
            page.changes.iter().map(|c| c.cursor).collect::<Vec<_>>(),
            vec![1, 4]
        );
        assert!(
            parse_page(b"{\"changes\":[]}").is_err(),
            "next and more are required"
        );
    }

    #[test]
    fn gzip_round_trips_and_refuses_bombs() {
        let body = gzip_lines(["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(
            gunzip(&body, 1024).expect("inflate"),
            b"{\"a\":1}\n{\"b\":2}\n"
        );
        assert!(matches!(
            gunzip(&body, 8),
            Err(GunzipError::TooLarge { limit: 8 })
        ));
        assert!(matches!(
            gunzip(b"not gzip", 1024),
            Err(GunzipError::Corrupt(_))
        ));
    }
}
