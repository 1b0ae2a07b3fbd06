//! What both hub stores derive from wire types the same way: a batch's lines as rows, reject reasons, the high-water walk, roster log bodies and the snapshot's encoding.
//!
//! Kept apart from the two backends so that SQLite and PostgreSQL cannot drift on
//! anything a kiosk sees (reasons, statuses, page boundaries, snapshot layout).

use std::io::Write as _;

use uuid::Uuid;

use crate::wire::{
    Entity, ItemResult, ItemStatus, Outcome, Record, RosterChange, RosterEntry, RosterOp,
    RosterPage, SnapshotHead,
};

use super::store::{HubStoreError, Incoming, StoredRecord};

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
            Incoming::Record { record, raw } => {
                let kind = record.kind();
                let v = match *record {
                    Record::Visit(v) => v,
                    other => {
                        let line = Line::Reject(RejectRow {
                            seq: i64::try_from(other.seq()).ok(),
                            record_id: Some(other.id()),
                            kind: Some(kind.to_owned()),
                            reason: format!(
                                "records of kind {kind:?} are not stored by this hub yet"
                            ),
                            raw,
                        });
                        return (Some(other.seq()), line);
                    }
                };
                let nul = [
                    Some(&v.office_id),
                    v.customer_id.as_ref(),
                    v.office_day.as_ref(),
                ]
                .into_iter()
                .flatten()
                .any(|text| text.contains('\0'));
                let line = match i64::try_from(v.seq) {
                    // PostgreSQL text cannot hold NUL; refused on both backends alike,
                    // rather than failing the whole batch on every retry.
                    Ok(seq) if nul => Line::Reject(RejectRow {
                        seq: Some(seq),
                        record_id: Some(v.id),
                        kind: Some(kind.to_owned()),
                        reason:
                            "a field contains a NUL character (\\u0000), which the hub cannot store"
                                .to_owned(),
                        raw,
                    }),
                    Ok(seq) => Line::Record(RecordRow {
                        id: v.id,
                        seq,
                        kind,
                        office_id: v.office_id,
                        customer_id: v.customer_id,
                        outcome: Some(outcome_str(v.outcome)),
                        office_day: v.office_day,
                        device_time: v.device_time,
                        raw,
                    }),
                    // Both databases hold seqs as signed 64-bit integers.
                    Err(_) => Line::Reject(RejectRow {
                        seq: None,
                        record_id: Some(v.id),
                        kind: Some(kind.to_owned()),
                        reason: format!("seq {} is larger than the hub can store", v.seq),
                        raw,
                    }),
                };
                (Some(v.seq), line)
            }
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
