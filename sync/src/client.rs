//! The kiosk's side of sync: a push loop draining the outbox to the hub and a pull loop bringing the roster down.
//!
//! The loops speak HTTP; everything they keep lives in the kiosk's store behind
//! [`KioskSide`], so a crash at any point leaves either the old or the new state:
//! - push: a batch is frozen in the store before its first send, so every retry sends
//!   the same bytes; the hub's answer is applied in one transaction (rows up to the
//!   hub's high-water marked sent, rejected lines quarantined, batch forgotten);
//! - pull: each roster page is applied together with its cursor; a snapshot replaces
//!   the whole roster and the cursor in one transaction.

use std::future::Future;
use std::path::Path;

use crate::wire::{BatchReply, RosterPage};

/// An upstream batch frozen in the kiosk's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrozenBatch {
    /// The store's id for this batch.
    pub id: i64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Number of NDJSON lines (one per outbox row, in seq order).
    pub records: u32,
    /// Gzipped NDJSON, byte-identical on every retry.
    pub body: Vec<u8>,
}

/// A failure of the kiosk's store while syncing; the loop logs it and retries later.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SideError(pub String);

/// What the sync loops need from the kiosk's store. Implemented by the kiosk over its
/// SQLite writer; every method is one transaction.
pub trait KioskSide: Send + Sync + 'static {
    /// The batch frozen earlier and not yet settled; otherwise a new batch frozen now
    /// from the oldest unsent outbox rows (at most `max_records` rows and about
    /// `max_bytes` of NDJSON, but always at least one row); `None` when nothing is unsent.
    fn next_batch(
        &self,
        max_records: usize,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Option<FrozenBatch>, SideError>> + Send;

    /// Applies the hub's answer to `batch`, in one transaction:
    /// - each `Rejected` item goes to the quarantine table (with its reason);
    /// - outbox rows with `seq <= reply.high_water` are marked sent at `at`;
    /// - when `reply.high_water < batch.first_seq - 1`, the hub lacks rows this kiosk
    ///   marked sent before: rows above the high-water are unmarked, to be sent again;
    /// - the frozen batch is forgotten, and `at` stored as the last successful push.
    fn settle(
        &self,
        batch: &FrozenBatch,
        reply: &BatchReply,
        at: jiff::Timestamp,
    ) -> impl Future<Output = Result<(), SideError>> + Send;

    /// Forgets the frozen batch without marking anything (the hub refused its size);
    /// the next `next_batch` freezes the same rows again in smaller batches.
    fn discard_batch(
        &self,
        batch: &FrozenBatch,
    ) -> impl Future<Output = Result<(), SideError>> + Send;

    /// The roster cursor applied so far; `None` before the first snapshot.
    fn roster_cursor(&self) -> impl Future<Output = Result<Option<u64>, SideError>> + Send;

    /// Applies one page and stores `page.next` as the cursor, in one transaction;
    /// `at` is stored as the last successful pull.
    fn apply_roster_page(
        &self,
        page: RosterPage,
        at: jiff::Timestamp,
    ) -> impl Future<Output = Result<(), SideError>> + Send;

    /// Replaces the whole roster with the snapshot in the file at `path` (gzipped
    /// NDJSON, see [`crate::wire::SnapshotHead`]) and stores its cursor, in one
    /// transaction; read with [`crate::wire::read_snapshot`], streaming, so a large
    /// roster never sits in memory whole.
    fn replace_roster(
        &self,
        path: &Path,
        at: jiff::Timestamp,
    ) -> impl Future<Output = Result<u64, SideError>> + Send;
}
