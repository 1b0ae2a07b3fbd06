//! What both hub stores derive from wire types the same way: a batch's lines as rows, reject reasons, the rules for card bindings, the high-water walk, roster log bodies and the snapshot's encoding.
//!
//! Kept apart from the two backends so that SQLite and PostgreSQL cannot drift on
//! anything a kiosk sees (reasons, statuses, page boundaries, snapshot layout).

use std::io::Write as _;

use uuid::Uuid;

use crate::wire::{
    CardBindingRecord, CardEntry, Entity, ItemResult, ItemStatus, Outcome, Record, RosterChange,
    RosterEntry, RosterOp, RosterPage, SnapshotHead,
};

use super::server::{normalize_phone, valid_token};
use super::store::{
    HubCustomer, HubStoreError, Incoming, SOURCES, StoredConsent, StoredRecord, whole_micros,
};

/// How many seqs above the high-water one query of the walk looks at: a batch of
/// 500 takes one query; a long run that arrived before its gap was filled takes a few.
pub(super) const WALK_WINDOW: i64 = 4096;

/// Most changes one roster page carries, whatever the kiosk asks for.
const MAX_PAGE: u32 = 10_000;

/// A record line, as the `records` table holds it.
#[derive(Debug)]
pub(super) struct RecordRow {
    pub id: Uuid,
    pub seq: i64,
    pub kind: &'static str,
    pub office_id: String,
    pub customer_id: Option<String>,
    pub outcome: Option<&'static str>,
    pub office_day: Option<String>,
    pub device_time: jiff::Timestamp,
    /// The line exactly as received: the evidence, stored byte for byte.
    pub raw: String,
    /// What the record does to the roster (card bindings and revocations), applied in
    /// the batch's transaction when the record is new.
    pub effect: Option<Box<Effect>>,
}

/// A record's change to the roster, checked against the hub's roster by
/// [`decide_binding`] / [`decide_revocation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Effect {
    Bind(Binding),
    Revoke(Revocation),
}

/// A card binding with its fields checked and normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Binding {
    pub card: String,
    pub customer_id: String,
    /// The walk-in registered with the card, as the hub would store them.
    pub walk_in: Option<Box<WalkIn>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WalkIn {
    /// Tier `normal`, phone normalized, `last_follow_up` = the binding's time.
    pub customer: HubCustomer,
    pub consent: StoredConsent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Revocation {
    pub card: String,
    pub reason: Option<String>,
}

/// Why a record is refused, sent to the kiosk as `CODE: message` so that its console
/// can sort by the code and show the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// What the hub holds that a binding is checked against, read in the batch's
/// transaction (with the roster lock held).
#[derive(Debug, Clone, Default)]
pub(super) struct BindingFacts {
    /// The customer with the binding's `customer_id`.
    pub customer: Option<HubCustomer>,
    /// Another customer holding the walk-in's phone number.
    pub phone_holder: Option<String>,
    /// The walk-in's consultant is in the roster.
    pub consultant_known: bool,
    /// The card as the hub holds it.
    pub card: Option<CardEntry>,
}

/// What an accepted binding writes; `None` where nothing changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct BindingWrites {
    pub customer: Option<HubCustomer>,
    pub card: Option<CardEntry>,
    pub consent: Option<StoredConsent>,
}

/// The hub's rules for a card issued at a kiosk (发卡): one customer per phone number,
/// one customer per active card; a revoked card may be issued again.
pub(super) fn decide_binding(b: &Binding, facts: BindingFacts) -> Result<BindingWrites, Refusal> {
    let mut writes = BindingWrites::default();
    match (&b.walk_in, facts.customer) {
        (Some(_), _) if facts.phone_holder.is_some() => {
            let holder = facts.phone_holder.unwrap_or_default();
            return Err(Refusal::new(
                "phone_taken",
                format!(
                    "this phone number already belongs to customer {holder}; bind the card to {holder} instead of registering a new customer"
                ),
            ));
        }
        (Some(w), Some(existing)) => {
            let differs = existing.surname != w.customer.surname
                || existing.title != w.customer.title
                || existing
                    .phone
                    .as_ref()
                    .is_some_and(|p| Some(p) != w.customer.phone.as_ref());
            if differs {
                return Err(Refusal::new(
                    "customer_exists",
                    format!(
                        "customer {} already exists at the hub with another surname, title or phone; bind the card to that customer without new customer details, or register the walk-in under a new id",
                        b.customer_id
                    ),
                ));
            }
        }
        (Some(w), None) => {
            let mut customer = w.customer.clone();
            // A consultant the hub does not know (yet) is left out, not a refusal:
            // the walk-in and their card matter more than who received them.
            if !facts.consultant_known {
                customer.consultant_id = None;
            }
            writes.customer = Some(customer);
        }
        (None, None) => {
            return Err(Refusal::new(
                "unknown_customer",
                format!(
                    "customer {} is not in the hub's roster; add them at the hub, or bind the card to a customer the hub knows",
                    b.customer_id
                ),
            ));
        }
        (None, Some(_)) => {}
    }
    writes.consent = b.walk_in.as_ref().map(|w| w.consent.clone());
    match facts.card {
        Some(card) if card.status == "active" && card.customer_id != b.customer_id => {
            return Err(Refusal::new(
                "card_taken",
                format!(
                    "card {} is active for customer {}; revoke it there first",
                    b.card, card.customer_id
                ),
            ));
        }
        // Already theirs: binding again changes nothing.
        Some(card) if card.status == "active" => {}
        _ => {
            writes.card = Some(CardEntry {
                token: b.card.clone(),
                customer_id: b.customer_id.clone(),
                status: "active".to_owned(),
                note: None,
                low24_only: false,
            });
        }
    }
    Ok(writes)
}

/// The card as a revocation leaves it: revoked, its note the reason when one was given.
pub(super) fn decide_revocation(
    r: &Revocation,
    card: Option<CardEntry>,
) -> Result<CardEntry, Refusal> {
    match card {
        None => Err(Refusal::new(
            "unknown_card",
            format!(
                "card {} is not in the hub's roster; there is nothing to revoke",
                r.card
            ),
        )),
        Some(card) => Ok(CardEntry {
            status: "revoked".to_owned(),
            note: r.reason.clone().or(card.note),
            ..card
        }),
    }
}

/// A binding's fields checked and normalized as an administrator's would be; the
/// error says which field is wrong (and never echoes a phone number).
fn binding(b: &CardBindingRecord) -> Result<Binding, String> {
    if !valid_token(&b.card) {
        return Err(format!(
            "card: {:?} is not a card token (nfc:HEX, em:8 HEX, wg26:F/N or qr:TEXT)",
            b.card
        ));
    }
    if !valid_id(&b.customer_id) {
        return Err("customer_id: ids are 1 to 64 printable characters".to_owned());
    }
    // A kiosk erases a walk-in's name and phone once the hub has accepted the binding
    // (`NewCustomer::is_redacted`). Such a record comes again only if the hub lost it
    // (restored from a backup): it then binds the card to the customer the hub has, or
    // is refused as unknown_customer, and is never answered as an invalid phone, which
    // would hide that the hub already holds it (a duplicate).
    let Some(n) = b.new_customer.as_ref().filter(|n| !n.is_redacted()) else {
        return Ok(Binding {
            card: b.card.clone(),
            customer_id: b.customer_id.clone(),
            walk_in: None,
        });
    };
    let surname = n.surname.trim();
    // As long as the kiosk's roster allows (Latin family names up to 20 letters), so a
    // walk-in the desk accepted is never refused here for its name.
    if surname.is_empty() || surname.chars().count() > 20 {
        return Err("new_customer.surname: the family name only (e.g. 张 or 欧阳)".to_owned());
    }
    if !matches!(n.title.as_str(), "mr" | "ms") {
        return Err(format!("new_customer.title: {:?} is not mr or ms", n.title));
    }
    if !SOURCES.contains(&n.source.as_str()) {
        return Err(format!(
            "new_customer.source: {:?} is not outreach, phone, walk_in or broker",
            n.source
        ));
    }
    let phone = normalize_phone(&n.phone).map_err(|_| {
        "new_customer.phone: not a phone number; write digits, e.g. 13800138000 or +85291234567"
            .to_owned()
    })?;
    let name = n.name.trim();
    if name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err("new_customer.name: the full name, at most 64 characters".to_owned());
    }
    let notice = n.consent.notice_version.trim();
    if notice.is_empty() || notice.chars().count() > 64 {
        return Err(
            "new_customer.consent.notice_version: the privacy notice's version, 1 to 64 characters"
                .to_owned(),
        );
    }
    let bound_at = whole_micros(b.bound_at);
    Ok(Binding {
        card: b.card.clone(),
        customer_id: b.customer_id.clone(),
        walk_in: Some(Box::new(WalkIn {
            customer: HubCustomer {
                id: b.customer_id.clone(),
                name: (!name.is_empty()).then(|| name.to_owned()),
                surname: surname.to_owned(),
                title: n.title.clone(),
                tier: "normal".to_owned(),
                phone: Some(phone),
                consultant_id: n.consultant_id.clone().filter(|c| valid_id(c)),
                source: Some(n.source.clone()),
                last_follow_up: Some(bound_at),
            },
            consent: StoredConsent {
                record_id: b.id,
                customer_id: b.customer_id.clone(),
                kiosk_id: b.kiosk_id.clone(),
                notice_version: notice.to_owned(),
                given_at: whole_micros(n.consent.given_at),
            },
        })),
    })
}

/// An id as the admin API takes it.
pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= 64 && !id.chars().any(char::is_control)
}

/// A line kept as a reject, as the `rejects` table holds it.
#[derive(Debug)]
pub(super) struct RejectRow {
    /// `None` when the line carried no seq (or one too large to store): such a
    /// reject never counts as held.
    pub seq: Option<i64>,
    pub record_id: Option<Uuid>,
    pub kind: Option<String>,
    pub reason: String,
    pub raw: String,
}

impl RejectRow {
    /// A record whose `(kiosk_id, seq)` another record already holds: kept as evidence
    /// under the same seq (which stays held by the first record).
    pub(super) fn seq_taken(
        record: RecordRow,
        kiosk_id: &str,
        holder: impl std::fmt::Display,
    ) -> RejectRow {
        RejectRow {
            seq: Some(record.seq),
            record_id: Some(record.id),
            kind: Some(record.kind.to_owned()),
            reason: format!(
                "seq {} of kiosk {kiosk_id} is already held by record {holder}; this record is kept as a reject",
                record.seq
            ),
            raw: record.raw,
        }
    }
}

impl RejectRow {
    /// A record whose id is already held under another `(kiosk_id, seq)` (a handheld's
    /// retry through another kiosk, say): kept as evidence under the sender's seq, so
    /// that seq counts as held and the sender's queue moves on.
    pub(super) fn id_taken(record: RecordRow, holder_kiosk: &str, holder_seq: i64) -> RejectRow {
        RejectRow {
            seq: Some(record.seq),
            record_id: Some(record.id),
            kind: Some(record.kind.to_owned()),
            reason: format!(
                "record {} is already held as seq {holder_seq} of kiosk {holder_kiosk}; this copy is kept as a reject",
                record.id
            ),
            raw: record.raw,
        }
    }
}

impl RejectRow {
    /// A record the roster's rules refuse, kept under its seq with the rule it broke.
    pub(super) fn refused(record: RecordRow, refusal: &Refusal) -> RejectRow {
        RejectRow {
            seq: Some(record.seq),
            record_id: Some(record.id),
            kind: Some(record.kind.to_owned()),
            reason: refusal.to_string(),
            raw: record.raw,
        }
    }
}

/// One line of a batch, ready for the database.
#[derive(Debug)]
pub(super) enum Line {
    Record(RecordRow),
    Reject(RejectRow),
}

/// Turns a batch's items into rows, in order, with the seq each reply item carries.
pub(super) fn plan(items: Vec<Incoming>) -> Vec<(Option<u64>, Line)> {
    items
        .into_iter()
        .map(|item| match item {
            Incoming::Record { record, raw } => record_line(*record, raw),
            Incoming::Reject {
                seq,
                id,
                kind,
                reason,
                raw,
            } => (
                seq,
                Line::Reject(RejectRow {
                    seq: seq.and_then(|s| i64::try_from(s).ok()),
                    record_id: id,
                    kind: kind.map(|k| without_nul(&k)),
                    reason: without_nul(&reason),
                    raw: without_nul(&raw),
                }),
            ),
        })
        .collect()
}

/// What a record of any kind puts in the `records` row, before the checks all kinds share.
struct Parts {
    id: Uuid,
    seq: u64,
    office_id: String,
    customer_id: Option<String>,
    outcome: Option<&'static str>,
    office_day: Option<String>,
    device_time: jiff::Timestamp,
    effect: Option<Box<Effect>>,
    /// A text field holds a NUL character.
    nul: bool,
    /// Why the hub refuses a field, before looking at the roster.
    invalid: Option<String>,
}

fn record_line(record: Record, raw: String) -> (Option<u64>, Line) {
    let kind = record.kind();
    let p = match record {
        Record::Visit(v) => Parts {
            nul: has_nul([
                Some(&v.office_id),
                v.customer_id.as_ref(),
                v.office_day.as_ref(),
            ]),
            id: v.id,
            seq: v.seq,
            office_id: v.office_id,
            customer_id: v.customer_id,
            outcome: Some(outcome_str(v.outcome)),
            office_day: v.office_day,
            device_time: v.device_time,
            effect: None,
            invalid: None,
        },
        Record::CardBinding(b) => {
            let n = b.new_customer.as_ref();
            let nul = has_nul([
                Some(&b.office_id),
                Some(&b.card),
                Some(&b.customer_id),
                n.map(|n| &n.name),
                n.map(|n| &n.surname),
                n.map(|n| &n.title),
                n.map(|n| &n.phone),
                n.map(|n| &n.source),
                n.and_then(|n| n.consultant_id.as_ref()),
                n.map(|n| &n.consent.notice_version),
            ]);
            let (effect, invalid) = match binding(&b) {
                Ok(binding) => (Some(Box::new(Effect::Bind(binding))), None),
                Err(why) => (None, Some(why)),
            };
            Parts {
                id: b.id,
                seq: b.seq,
                office_id: b.office_id,
                customer_id: Some(b.customer_id),
                outcome: None,
                office_day: None,
                device_time: b.bound_at,
                effect,
                nul,
                invalid,
            }
        }
        Record::CardRevocation(r) => Parts {
            nul: has_nul([Some(&r.office_id), Some(&r.card), r.reason.as_ref()]),
            id: r.id,
            seq: r.seq,
            office_id: r.office_id,
            customer_id: None,
            outcome: None,
            office_day: None,
            device_time: r.revoked_at,
            effect: Some(Box::new(Effect::Revoke(Revocation {
                card: r.card,
                reason: r.reason.filter(|n| !n.trim().is_empty()),
            }))),
            invalid: None,
        },
    };
    let reject = |seq: Option<i64>, reason: String, raw: String| {
        Line::Reject(RejectRow {
            seq,
            record_id: Some(p.id),
            kind: Some(kind.to_owned()),
            reason,
            raw,
        })
    };
    let line = match i64::try_from(p.seq) {
        // PostgreSQL text cannot hold NUL; refused on both backends alike, rather
        // than failing the whole batch on every retry.
        Ok(seq) if p.nul => reject(
            Some(seq),
            "a field contains a NUL character (\\u0000), which the hub cannot store".to_owned(),
            raw,
        ),
        Ok(seq) if p.invalid.is_some() => reject(
            Some(seq),
            Refusal::new("invalid", p.invalid.clone().unwrap_or_default()).to_string(),
            raw,
        ),
        Ok(seq) => Line::Record(RecordRow {
            id: p.id,
            seq,
            kind,
            office_id: p.office_id,
            customer_id: p.customer_id,
            outcome: p.outcome,
            office_day: p.office_day,
            device_time: p.device_time,
            raw,
            effect: p.effect,
        }),
        // Both databases hold seqs as signed 64-bit integers.
        Err(_) => reject(
            None,
            format!("seq {} is larger than the hub can store", p.seq),
            raw,
        ),
    };
    (Some(p.seq), line)
}

fn has_nul<'a>(texts: impl IntoIterator<Item = Option<&'a String>>) -> bool {
    texts.into_iter().flatten().any(|text| text.contains('\0'))
}

/// Text as PostgreSQL can hold it: a NUL (only ever in a line the hub could not parse)
/// becomes U+FFFD, so the rest of the evidence is kept.
fn without_nul(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// The outcome as the wire spells it (`serde`'s snake case), for day reports in SQL.
fn outcome_str(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Welcome => "welcome",
        Outcome::Unknown => "unknown",
        Outcome::Denied => "denied",
        Outcome::BrokerConfirmed => "broker_confirmed",
    }
}

pub(super) fn item(seq: Option<u64>, status: ItemStatus) -> ItemResult {
    ItemResult {
        seq,
        status,
        reason: None,
    }
}

pub(super) fn rejected(seq: Option<u64>, reason: &str) -> ItemResult {
    ItemResult {
        seq,
        status: ItemStatus::Rejected,
        reason: Some(reason.to_owned()),
    }
}

/// Where the next walk query stops looking.
pub(super) fn window_end(high_water: i64) -> i64 {
    high_water.saturating_add(WALK_WINDOW)
}

/// Advances `high_water` over `held` (distinct held seqs above it, ascending) for as
/// long as they follow on without a gap.
pub(super) fn walk(mut high_water: i64, held: impl IntoIterator<Item = i64>) -> i64 {
    for seq in held {
        if seq != high_water.saturating_add(1) {
            break;
        }
        high_water = seq;
    }
    high_water
}

/// A database integer that must not be negative (a seq, a cursor, a count).
pub(super) fn unsigned(value: i64, what: &str) -> Result<u64, HubStoreError> {
    u64::try_from(value).map_err(|_| HubStoreError::Corrupt(format!("{what} is {value}")))
}

/// A caller's position for a database comparison: past `i64::MAX` nothing is stored.
pub(super) fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The page size actually served.
pub(super) fn page_limit(limit: u32) -> u32 {
    limit.clamp(1, MAX_PAGE)
}

/// The JSON a log entry carries: the kiosk-facing entry, never the hub's own fields.
pub(super) fn log_body(entry: &RosterEntry) -> Result<String, HubStoreError> {
    serde_json::to_string(entry)
        .map_err(|e| HubStoreError::Corrupt(format!("a roster entry cannot be encoded: {e}")))
}

/// A log row back as a change: a body is an upsert, no body a tombstone.
pub(super) fn change(
    cursor: i64,
    entity: &str,
    key: String,
    body: Option<String>,
) -> Result<RosterChange, HubStoreError> {
    let cursor = unsigned(cursor, "a roster log cursor")?;
    let op = match body {
        Some(body) => RosterOp::Upsert {
            entry: serde_json::from_str(&body).map_err(|e| {
                HubStoreError::Corrupt(format!("roster log entry {cursor} is not an entry: {e}"))
            })?,
        },
        None => RosterOp::Delete {
            entity: Entity::parse(entity).ok_or_else(|| {
                HubStoreError::Corrupt(format!(
                    "roster log entry {cursor} names an unknown entity {entity:?}"
                ))
            })?,
            key,
        },
    };
    Ok(RosterChange { cursor, op })
}

/// A record row back as the admin API lists it.
pub(super) fn stored_record(
    id: Uuid,
    kiosk_id: String,
    seq: i64,
    kind: String,
    body: &str,
    received_at: jiff::Timestamp,
) -> Result<StoredRecord, HubStoreError> {
    Ok(StoredRecord {
        body: serde_json::from_str(body)
            .map_err(|e| HubStoreError::Corrupt(format!("record {id} is not JSON: {e}")))?,
        id,
        kiosk_id,
        seq: unsigned(seq, "a record's seq")?,
        kind,
        received_at,
    })
}

/// A page from the changes after `since`, fetched with one more row than `limit`
/// so that `more` needs no second query.
pub(super) fn page(since: u64, mut changes: Vec<RosterChange>, limit: u32) -> RosterPage {
    let more = changes.len() > limit as usize;
    changes.truncate(limit as usize);
    let next = changes.last().map_or(since, |c| c.cursor);
    RosterPage {
        changes,
        next,
        more,
    }
}

/// Bytes of NDJSON gathered before they go to the compressor.
const SNAPSHOT_BUFFER: usize = 64 << 10;

/// A snapshot being written: gzipped as it goes, so memory holds only the
/// compressed bytes even for a million cards.
///
/// serde_json writes a line in many small pieces, and each write into a `GzEncoder`
/// zero-fills its 32 KiB output buffer before compressing; a buffer in front makes
/// that once per 64 KiB instead of once per piece (1,000,000 cards: 22 s → 2.3 s).
#[derive(Debug)]
pub(super) struct SnapshotWriter {
    gz: std::io::BufWriter<flate2::write::GzEncoder<Vec<u8>>>,
    announced: u64,
    written: u64,
}

impl SnapshotWriter {
    pub(super) fn new(head: &SnapshotHead) -> Result<SnapshotWriter, HubStoreError> {
        let mut writer = SnapshotWriter {
            gz: std::io::BufWriter::with_capacity(
                SNAPSHOT_BUFFER,
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()),
            ),
            announced: head.entries,
            written: 0,
        };
        writer.line(head)?;
        Ok(writer)
    }

    pub(super) fn entry(&mut self, entry: &RosterEntry) -> Result<(), HubStoreError> {
        self.written += 1;
        self.line(entry)
    }

    fn line(&mut self, value: &impl serde::Serialize) -> Result<(), HubStoreError> {
        let encode = |e: String| HubStoreError::Corrupt(format!("a snapshot line: {e}"));
        serde_json::to_writer(&mut self.gz, value).map_err(|e| encode(e.to_string()))?;
        self.gz.write_all(b"\n").map_err(|e| encode(e.to_string()))
    }

    /// The gzipped snapshot; refuses one whose entries differ from its head (a kiosk
    /// would refuse it too, so better to fail here, where it can be seen).
    pub(super) fn finish(self) -> Result<Vec<u8>, HubStoreError> {
        if self.written != self.announced {
            return Err(HubStoreError::Corrupt(format!(
                "the snapshot counted {} entries but read {}",
                self.announced, self.written
            )));
        }
        self.gz
            .into_inner()
            .map_err(|e| HubStoreError::Corrupt(format!("a snapshot: {}", e.error())))?
            .finish()
            .map_err(|e| HubStoreError::Corrupt(format!("a snapshot: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_spelled_as_on_the_wire() {
        for outcome in [
            Outcome::Welcome,
            Outcome::Unknown,
            Outcome::Denied,
            Outcome::BrokerConfirmed,
        ] {
            assert_eq!(
                serde_json::to_value(outcome).expect("serialize"),
                outcome_str(outcome)
            );
        }
    }

    fn walk_in_record(phone: &str) -> CardBindingRecord {
        CardBindingRecord {
            id: Uuid::nil(),
            kiosk_id: "k1".into(),
            office_id: "o1".into(),
            seq: 1,
            card: "nfc:04A1".into(),
            customer_id: "w-1".into(),
            new_customer: Some(crate::wire::NewCustomer {
                name: " 李小龙 ".into(),
                surname: "李".into(),
                title: "mr".into(),
                phone: phone.into(),
                source: "walk_in".into(),
                consultant_id: Some("E1".into()),
                consent: crate::wire::Consent {
                    notice_version: "2026-01".into(),
                    given_at: "2026-11-23T01:59:30Z".parse().expect("time"),
                },
            }),
            by: "desk-1".into(),
            bound_at: "2026-11-23T02:00:00.000000789Z".parse().expect("time"),
        }
    }

    #[test]
    fn a_binding_is_checked_and_normalized_before_the_roster_is_read() {
        let ok = binding(&walk_in_record("+86 139-0000-0001")).expect("valid");
        let w = ok.walk_in.expect("a walk-in");
        assert_eq!(w.customer.phone.as_deref(), Some("13900000001"));
        assert_eq!(w.customer.name.as_deref(), Some("李小龙"));
        assert_eq!(w.customer.tier, "normal");
        assert_eq!(
            w.customer.last_follow_up,
            Some("2026-11-23T02:00:00Z".parse().expect("time")),
            "kept to the microsecond"
        );
        type Edit = fn(&mut CardBindingRecord);
        let table: [(&str, Edit, &str); 7] = [
            ("card", |b| b.card = "nfc:04a1".into(), "card: "),
            (
                "customer",
                |b| b.customer_id = String::new(),
                "customer_id: ",
            ),
            (
                "surname",
                |b| set(b, |n| n.surname = "Featherstonehaugh-Smythe".into()),
                "new_customer.surname: ",
            ),
            (
                "title",
                |b| set(b, |n| n.title = "dr".into()),
                "new_customer.title: ",
            ),
            (
                "source",
                |b| set(b, |n| n.source = "web".into()),
                "new_customer.source: ",
            ),
            (
                "phone",
                |b| set(b, |n| n.phone = "138 call me".into()),
                "new_customer.phone: ",
            ),
            (
                "notice",
                |b| set(b, |n| n.consent.notice_version = " ".into()),
                "new_customer.consent.notice_version: ",
            ),
        ];
        fn set(b: &mut CardBindingRecord, f: fn(&mut crate::wire::NewCustomer)) {
            if let Some(n) = &mut b.new_customer {
                f(n);
            }
        }
        for (case, edit, field) in table {
            let mut b = walk_in_record("13900000001");
            edit(&mut b);
            let why = binding(&b).expect_err(case);
            assert!(why.starts_with(field), "{case}: {why}");
            assert!(
                !why.contains("call me"),
                "{case}: a phone is never echoed: {why}"
            );
        }
    }

    /// A walk-in whose name and phone the kiosk erased after the hub accepted it is a
    /// plain binding if it comes again, so a hub that holds it answers `duplicate`; an
    /// empty phone alone is still a bad phone.
    #[test]
    fn a_redacted_walk_in_is_a_plain_binding() {
        let mut b = walk_in_record("13900000001");
        if let Some(n) = &mut b.new_customer {
            n.redact();
        }
        let plain = binding(&b).expect("valid");
        assert_eq!(
            (plain.card.as_str(), plain.customer_id.as_str()),
            ("nfc:04A1", "w-1")
        );
        assert!(plain.walk_in.is_none());

        let mut b = walk_in_record("");
        let why = binding(&b).expect_err("no phone");
        assert!(why.starts_with("new_customer.phone: "), "{why}");
        if let Some(n) = &mut b.new_customer {
            n.name.clear();
            n.phone = "13900000001".into();
        }
        assert!(binding(&b).expect("no name is fine").walk_in.is_some());
    }

    #[test]
    fn binding_rules_as_a_table() {
        let walk_in = binding(&walk_in_record("13900000001")).expect("valid");
        let plain = Binding {
            walk_in: None,
            ..walk_in.clone()
        };
        let someone = |id: &str, phone: Option<&str>| HubCustomer {
            id: id.into(),
            name: None,
            surname: "李".into(),
            title: "mr".into(),
            tier: "gold".into(),
            phone: phone.map(Into::into),
            consultant_id: None,
            source: None,
            last_follow_up: None,
        };
        let card = |customer: &str, status: &str| CardEntry {
            token: "nfc:04A1".into(),
            customer_id: customer.into(),
            status: status.into(),
            note: Some("old".into()),
            low24_only: false,
        };
        let facts = |customer: Option<HubCustomer>, holder: Option<&str>, c: Option<CardEntry>| {
            BindingFacts {
                customer,
                phone_holder: holder.map(Into::into),
                consultant_known: true,
                card: c,
            }
        };
        // Ok((creates the customer, writes the card)) or Err(the refusal's code).
        type Decision = Result<(bool, bool), &'static str>;
        let table: Vec<(&str, &Binding, BindingFacts, Decision)> = vec![
            (
                "new walk-in, new card",
                &walk_in,
                facts(None, None, None),
                Ok((true, true)),
            ),
            (
                "phone held",
                &walk_in,
                facts(None, Some("C1"), None),
                Err("phone_taken"),
            ),
            (
                "phone held, id exists",
                &walk_in,
                facts(Some(someone("w-1", None)), Some("C1"), None),
                Err("phone_taken"),
            ),
            (
                "same person again",
                &walk_in,
                facts(Some(someone("w-1", Some("13900000001"))), None, None),
                Ok((false, true)),
            ),
            (
                "id taken by another phone",
                &walk_in,
                facts(Some(someone("w-1", Some("13700000000"))), None, None),
                Err("customer_exists"),
            ),
            (
                "id taken by another surname",
                &walk_in,
                facts(
                    Some(HubCustomer {
                        surname: "王".into(),
                        ..someone("w-1", None)
                    }),
                    None,
                    None,
                ),
                Err("customer_exists"),
            ),
            (
                "unknown customer",
                &plain,
                facts(None, None, None),
                Err("unknown_customer"),
            ),
            (
                "card active elsewhere",
                &plain,
                facts(Some(someone("w-1", None)), None, Some(card("C7", "active"))),
                Err("card_taken"),
            ),
            (
                "card already theirs",
                &plain,
                facts(
                    Some(someone("w-1", None)),
                    None,
                    Some(card("w-1", "active")),
                ),
                Ok((false, false)),
            ),
            (
                "card revoked elsewhere",
                &plain,
                facts(
                    Some(someone("w-1", None)),
                    None,
                    Some(card("C7", "revoked")),
                ),
                Ok((false, true)),
            ),
        ];
        for (case, b, facts, want) in table {
            let got = decide_binding(b, facts)
                .map(|w| (w.customer.is_some(), w.card.is_some()))
                .map_err(|r| r.code);
            assert_eq!(got, want, "{case}");
        }

        let unknown_consultant = decide_binding(
            &walk_in,
            BindingFacts {
                consultant_known: false,
                ..BindingFacts::default()
            },
        )
        .expect("accepted");
        assert_eq!(
            unknown_consultant.customer.expect("created").consultant_id,
            None
        );
        let rebound = decide_binding(
            &plain,
            facts(
                Some(someone("w-1", None)),
                None,
                Some(card("C7", "revoked")),
            ),
        )
        .expect("accepted")
        .card
        .expect("written");
        assert_eq!(
            (
                rebound.customer_id.as_str(),
                rebound.status.as_str(),
                rebound.note
            ),
            ("w-1", "active", None),
            "the old revocation note goes with the old owner"
        );
    }

    #[test]
    fn a_revocation_keeps_the_note_unless_given_a_reason() {
        let held = CardEntry {
            token: "nfc:04A1".into(),
            customer_id: "C1".into(),
            status: "active".into(),
            note: Some("issued in October".into()),
            low24_only: true,
        };
        let r = |reason: Option<&str>| Revocation {
            card: "nfc:04A1".into(),
            reason: reason.map(Into::into),
        };
        let lost = decide_revocation(&r(Some("lost")), Some(held.clone())).expect("known");
        assert_eq!(
            (lost.status.as_str(), lost.note.as_deref()),
            ("revoked", Some("lost"))
        );
        assert!(lost.low24_only);
        let plain = decide_revocation(&r(None), Some(held)).expect("known");
        assert_eq!(plain.note.as_deref(), Some("issued in October"));
        let unknown = decide_revocation(&r(None), None).expect_err("unknown");
        assert_eq!(unknown.code, "unknown_card");
        assert!(
            unknown
                .to_string()
                .starts_with("unknown_card: card nfc:04A1"),
            "{unknown}"
        );
    }

    #[test]
    fn the_walk_stops_at_the_first_gap() {
        for (start, held, expected) in [
            (0, vec![], 0),
            (0, vec![1, 2, 3], 3),
            (0, vec![2, 3], 0),
            (2, vec![3, 5], 3),
            (i64::MAX - 1, vec![i64::MAX], i64::MAX),
        ] {
            assert_eq!(walk(start, held.clone()), expected, "{start} {held:?}");
        }
    }
}
