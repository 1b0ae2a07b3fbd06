//! Sync's half of the kiosk's store: the frozen upstream batch, the hub's answers and quarantine, the roster log and snapshots, sync's status.
//!
//! Every change runs as one transaction on the store's writer thread, like a tap, so a
//! crash leaves either the old state or the new one. What takes time without writing
//! (reading the rows of the next batch, compressing them) runs on the read connection
//! and a blocking thread instead: the writer also records taps, and a tap must not
//! wait behind a 500-row gzip.
//!
//! Outbox rows are marked sent only up to the hub's high-water (a prefix) and unmarked
//! only above it (a suffix), so the unsent rows are always the newest ones: a batch is
//! a run of consecutive seqs, and its lines map to `first_seq..=last_seq` in order.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use kiosk_sync::client::{FrozenBatch, KioskSide, SideError};
use kiosk_sync::wire::{self, BatchReply, Entity, ItemStatus, RosterEntry, RosterOp, RosterPage};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::{ReadDb, StoreError, Writer};

/// Sync's rows in `meta`.
const ROSTER_CURSOR: &str = "roster_cursor";
const LAST_PUSH_AT: &str = "last_push_at";
const LAST_PULL_AT: &str = "last_pull_at";
/// Roster changes this kiosk could not store since the last snapshot: values its
/// checks refuse (a newer hub), or cards of customers it does not have.
const ROSTER_SKIPPED: &str = "roster_skipped";

/// How many quarantined rows the status lists, newest first.
pub const QUARANTINE_SHOWN: u32 = 20;

/// How many refused snapshot entries are logged one by one; the rest are counted, so
/// that a snapshot from a much newer hub does not flood the log.
const SNAPSHOT_WARNINGS: u64 = 20;

/// The kiosk's store as the sync loops see it.
#[derive(Debug, Clone)]
pub struct SyncSide {
    writer: Writer,
    /// For reads; may be the HTTP API's read connection.
    db: ReadDb,
    /// `reception.rejected_walk_in_retention`: how long a rejected walk-in's name and
    /// phone stay in the quarantine (and its outbox row).
    rejected_retention: Duration,
}

impl SyncSide {
    pub fn new(writer: Writer, db: ReadDb) -> SyncSide {
        SyncSide {
            writer,
            db,
            rejected_retention: kiosk_config::DEFAULT_REJECTED_WALK_IN_RETENTION,
        }
    }

    /// Sets `reception.rejected_walk_in_retention`.
    pub fn with_rejected_retention(mut self, retention: Duration) -> SyncSide {
        self.rejected_retention = retention;
        self
    }
}

/// Why a sync job failed inside the store.
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// The request does not fit the store's state; the message says why.
    #[error("{0}")]
    Refused(String),
}

/// Runs a sync job on the writer thread; `what` names it in the error.
async fn on_writer<R, F>(writer: &Writer, what: &'static str, f: F) -> Result<R, SideError>
where
    R: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<R, JobError> + Send + 'static,
{
    match writer.call(move |store| Ok(f(store.conn_mut()))).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(SideError(format!("{what}: {e}"))),
        Err(e) => Err(SideError(format!("{what}: {e}"))),
    }
}

fn read_failed(what: &'static str) -> impl FnOnce(StoreError) -> SideError {
    move |e| SideError(format!("{what}: {e}"))
}

impl KioskSide for SyncSide {
    async fn next_batch(
        &self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<FrozenBatch>, SideError> {
        let frozen = self
            .db
            .with(frozen_batch)
            .await
            .map_err(read_failed("reading the frozen batch"))?;
        if frozen.is_some() {
            return Ok(frozen);
        }
        let rows = self
            .db
            .with(move |c| unsent_rows(c, max_records, max_bytes))
            .await
            .map_err(read_failed("reading the outbox's unsent rows"))?;
        let draft = tokio::task::spawn_blocking(move || Draft::compress(&rows))
            .await
            .map_err(|e| SideError(format!("compressing a batch: {e}")))?;
        let Some(draft) = draft else {
            return Ok(None);
        };
        on_writer(&self.writer, "freezing a batch", move |conn| {
            freeze(conn, draft)
        })
        .await
        .map(Some)
    }

    async fn settle(
        &self,
        batch: &FrozenBatch,
        reply: &BatchReply,
        at: jiff::Timestamp,
    ) -> Result<(), SideError> {
        let (batch, reply) = (batch.clone(), reply.clone());
        let retention = self.rejected_retention;
        on_writer(&self.writer, "applying the hub's answer", move |conn| {
            let erased = securely(conn, |conn| settle(conn, &batch, &reply, at, retention))?;
            if erased > 0 {
                truncate_wal(conn);
            }
            Ok(())
        })
        .await
    }

    async fn discard_batch(&self, batch: &FrozenBatch) -> Result<(), SideError> {
        let id = batch.id;
        on_writer(&self.writer, "discarding the frozen batch", move |conn| {
            // The batch may hold a walk-in's name and phone.
            securely(conn, |conn| {
                conn.execute("DELETE FROM push_batch WHERE id = ?1", [id])?;
                Ok(())
            })
        })
        .await
    }

    async fn roster_cursor(&self) -> Result<Option<u64>, SideError> {
        let text = self
            .db
            .with(|c| get_meta(c, ROSTER_CURSOR))
            .await
            .map_err(read_failed("reading the roster cursor"))?;
        Ok(text.and_then(|t| match t.parse() {
            Ok(cursor) => Some(cursor),
            Err(_) => {
                // Without a usable cursor the pull starts over with a snapshot, which
                // stores a good one; failing here would stop the roster for good.
                tracing::warn!(cursor = %t, "the stored roster cursor is not a number; taking a snapshot");
                None
            }
        }))
    }

    async fn apply_roster_page(
        &self,
        page: RosterPage,
        at: jiff::Timestamp,
    ) -> Result<(), SideError> {
        on_writer(&self.writer, "applying a roster page", move |conn| {
            apply_page(conn, &page, at)
        })
        .await
    }

    async fn replace_roster(&self, path: &Path, at: jiff::Timestamp) -> Result<u64, SideError> {
        let path = path.to_owned();
        on_writer(&self.writer, "replacing the roster", move |conn| {
            replace_roster(conn, &path, at)
        })
        .await
    }
}

// ---- push ----

/// A batch made but not yet frozen.
#[derive(Debug)]
struct Draft {
    first_seq: u64,
    last_seq: u64,
    records: u32,
    body: Vec<u8>,
}

impl Draft {
    /// Gzips consecutive outbox rows; `None` when there are none.
    fn compress(rows: &[(u64, String)]) -> Option<Draft> {
        let (first, last) = (rows.first()?, rows.last()?);
        Some(Draft {
            first_seq: first.0,
            last_seq: last.0,
            // `unsent_rows` reads at most `u32::MAX` rows.
            records: u32::try_from(rows.len()).unwrap_or(u32::MAX),
            body: wire::gzip_lines(rows.iter().map(|(_, body)| body.as_str())),
        })
    }
}

fn frozen_batch(conn: &Connection) -> rusqlite::Result<Option<FrozenBatch>> {
    conn.prepare_cached(
        "SELECT id, first_seq, last_seq, records, body FROM push_batch ORDER BY id LIMIT 1",
    )?
    .query_row([], |r| {
        Ok(FrozenBatch {
            id: r.get(0)?,
            first_seq: r.get(1)?,
            last_seq: r.get(2)?,
            records: r.get(3)?,
            body: r.get(4)?,
        })
    })
    .optional()
}

/// The oldest unsent rows: at most `max_records`, about `max_bytes` of NDJSON but at
/// least one row, and consecutive seqs only, so that line i of the batch is always
/// row `first_seq + i`.
fn unsent_rows(
    conn: &Connection,
    max_records: usize,
    max_bytes: usize,
) -> rusqlite::Result<Vec<(u64, String)>> {
    // A batch counts its records in a u32 (`FrozenBatch::records`).
    let limit = max_records.clamp(1, u32::MAX as usize) as i64;
    let mut stmt = conn.prepare_cached(
        "SELECT seq, body FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT ?1",
    )?;
    let mut rows = stmt.query([limit])?;
    let mut out: Vec<(u64, String)> = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next()? {
        let (seq, body): (u64, String) = (row.get(0)?, row.get(1)?);
        let size = body.len() + 1;
        if let Some((prev, _)) = out.last() {
            if seq != prev + 1 || bytes + size > max_bytes {
                break;
            }
        }
        bytes += size;
        out.push((seq, body));
    }
    Ok(out)
}

/// Stores `draft` as the frozen batch, unless one exists already (then that one is
/// the batch). The draft was read outside this transaction, so it is checked to still
/// be the oldest unsent rows.
fn freeze(conn: &mut Connection, draft: Draft) -> Result<FrozenBatch, JobError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(batch) = frozen_batch(&tx)? {
        return Ok(batch);
    }
    let oldest: Option<u64> = tx
        .query_row(
            "SELECT seq FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let unsent: u64 = tx.query_row(
        "SELECT count(*) FROM outbox WHERE seq BETWEEN ?1 AND ?2 AND sent_at IS NULL",
        params![draft.first_seq, draft.last_seq],
        |r| r.get(0),
    )?;
    if oldest != Some(draft.first_seq) || unsent != u64::from(draft.records) {
        return Err(JobError::Refused(format!(
            "the outbox changed while batch {}..={} was being made; it is made again on the next attempt",
            draft.first_seq, draft.last_seq
        )));
    }
    let id: i64 = tx.query_row(
        "INSERT INTO push_batch (first_seq, last_seq, records, body, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        params![
            draft.first_seq,
            draft.last_seq,
            draft.records,
            draft.body,
            jiff::Timestamp::now().to_string()
        ],
        |r| r.get(0),
    )?;
    tx.commit()?;
    Ok(FrozenBatch {
        id,
        first_seq: draft.first_seq,
        last_seq: draft.last_seq,
        records: draft.records,
        body: draft.body,
    })
}

/// Applies the hub's answer; returns how many walk-ins' names and phones it erased.
fn settle(
    conn: &mut Connection,
    batch: &FrozenBatch,
    reply: &BatchReply,
    at: jiff::Timestamp,
    rejected_retention: Duration,
) -> Result<u64, JobError> {
    if reply.items.len() != batch.records as usize {
        return Err(JobError::Refused(format!(
            "the hub answered {} items for the {} records of batch {}..={}; the batch is sent again",
            reply.items.len(),
            batch.records,
            batch.first_seq,
            batch.last_seq
        )));
    }
    let at_text = at.to_string();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stored: Option<(u64, u64)> = tx
        .query_row(
            "SELECT first_seq, last_seq FROM push_batch WHERE id = ?1",
            [batch.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if stored != Some((batch.first_seq, batch.last_seq)) {
        // Applying it anyway would be safe for the marks but could quarantine the
        // wrong rows; the hub has the records, so sending again costs only time.
        return Err(JobError::Refused(format!(
            "batch {} ({}..={}) is no longer the frozen batch (settled or discarded already); its answer is ignored",
            batch.id, batch.first_seq, batch.last_seq
        )));
    }
    if reply.items.iter().any(|i| i.status == ItemStatus::Rejected) {
        quarantine(&tx, batch, reply, &at_text)?;
    }
    let mut erased = redact_accepted(&tx, batch, reply)?;
    // Also here, so that a retention of 0s erases a rejection at once.
    erased += redact_expired(&tx, at, rejected_retention)?;
    // Not past this batch: the hub may hold later rows from an answer that was lost
    // (then the batch discarded and made smaller), but if it rejected one of them, only
    // sending it again brings back the reason to quarantine it with. It comes back as
    // a duplicate otherwise, which costs a line.
    tx.execute(
        "UPDATE outbox SET sent_at = ?1 WHERE seq <= ?2 AND sent_at IS NULL",
        params![at_text, reply.high_water.min(batch.last_seq)],
    )?;
    if reply.high_water.saturating_add(1) < batch.first_seq {
        // This batch started after rows marked sent earlier, so the hub once held them
        // and has lost them (restored from a backup?). Sending them again is the only
        // way it gets them back; its dedup by record id makes this harmless.
        let unmarked = tx.execute(
            "UPDATE outbox SET sent_at = NULL WHERE seq > ?1 AND sent_at IS NOT NULL",
            [reply.high_water],
        )?;
        tracing::warn!(
            missing = format!("{}..={}", reply.high_water + 1, batch.first_seq - 1),
            unmarked,
            "the hub lacks records this kiosk had marked sent (was it restored from a backup?); they are sent again"
        );
    }
    tx.execute("DELETE FROM push_batch WHERE id = ?1", [batch.id])?;
    set_meta(&tx, LAST_PUSH_AT, &at_text)?;
    tx.commit()?;
    Ok(erased)
}

// ---- personal data ----

/// Runs `f` with `secure_delete` on, so that what it deletes or overwrites (a walk-in's
/// name and phone in an outbox row, a quarantine row or a frozen batch) is zeroed in
/// the pages written, not left in their free space. Off elsewhere: replacing a
/// million-card roster would otherwise write every freed page twice, and the roster
/// holds nothing personal.
fn securely<R>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Connection) -> Result<R, JobError>,
) -> Result<R, JobError> {
    let before: i64 = conn.pragma_query_value(None, "secure_delete", |r| r.get(0))?;
    conn.pragma_update(None, "secure_delete", 1)?;
    let result = f(conn);
    conn.pragma_update(None, "secure_delete", before)?;
    result
}

/// Empties the WAL file after personal data was erased: the frames written before
/// (the binding's own commit) would otherwise stay in it until overwritten. Waits for
/// readers a moment only, since it runs on the writer thread ahead of taps; when it
/// cannot finish, the frames go the usual way (overwritten as the WAL is reused).
fn truncate_wal(conn: &Connection) {
    let result = (|| -> rusqlite::Result<i64> {
        let timeout: i64 = conn.pragma_query_value(None, "busy_timeout", |r| r.get(0))?;
        conn.pragma_update(None, "busy_timeout", 100)?;
        let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0));
        conn.pragma_update(None, "busy_timeout", timeout)?;
        busy
    })();
    match result {
        Ok(0) => {}
        Ok(_) => tracing::debug!(
            "the WAL could not be emptied now (a reader is busy); it is reused as usual"
        ),
        Err(e) => tracing::warn!(error = %e, "emptying the WAL after erasing personal data failed"),
    }
}

/// Erases the walk-ins' names and phones from the batch's card bindings that the hub
/// holds now (inserted, or a duplicate): the hub has them, the kiosk needs them no more.
/// Items are positional, as in [`quarantine`].
fn redact_accepted(
    tx: &Connection,
    batch: &FrozenBatch,
    reply: &BatchReply,
) -> rusqlite::Result<u64> {
    let bindings: Vec<(u64, String)> = tx
        .prepare_cached(
            "SELECT seq, body FROM outbox WHERE seq BETWEEN ?1 AND ?2 AND kind = 'card_binding'",
        )?
        .query_map(params![batch.first_seq, batch.last_seq], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut erased = 0;
    for (seq, body) in bindings {
        let item = usize::try_from(seq - batch.first_seq)
            .ok()
            .and_then(|i| reply.items.get(i));
        if item.is_none_or(|i| i.status == ItemStatus::Rejected) {
            continue;
        }
        if let Some(redacted) = crate::cards::redacted_body(&body) {
            tx.prepare_cached("UPDATE outbox SET body = ?2 WHERE seq = ?1")?
                .execute(params![seq, redacted])?;
            erased += 1;
        }
    }
    Ok(erased)
}

/// Erases the names and phones of walk-ins whose binding the hub rejected at least
/// `retention` before `now`, from the quarantine and the outbox; the reason, ids and
/// consent stay. Rejected bindings are few; those erased already are left out here.
fn redact_expired(
    tx: &Connection,
    now: jiff::Timestamp,
    retention: Duration,
) -> rusqlite::Result<u64> {
    let retention = jiff::SignedDuration::try_from(retention).unwrap_or(jiff::SignedDuration::MAX);
    let rejected: Vec<(u64, String, String, Option<String>)> = tx
        .prepare_cached(
            "SELECT q.seq, q.at, q.body, o.body FROM quarantine q LEFT JOIN outbox o ON o.seq = q.seq
             WHERE q.kind = 'card_binding'
               AND (CASE WHEN json_valid(q.body) THEN json_extract(q.body, '$.record.new_customer.phone') END <> ''
                 OR CASE WHEN json_valid(o.body) THEN json_extract(o.body, '$.record.new_customer.phone') END <> '')",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let mut erased = 0;
    for (seq, at, quarantined, outbox) in rejected {
        // A time that does not parse can only be damage: erasing is the safe side.
        let expired = at
            .parse::<jiff::Timestamp>()
            .map_or(true, |at| now.duration_since(at) >= retention);
        if !expired {
            continue;
        }
        let mut any = false;
        if let Some(body) = crate::cards::redacted_body(&quarantined) {
            tx.prepare_cached("UPDATE quarantine SET body = ?2 WHERE seq = ?1")?
                .execute(params![seq, body])?;
            any = true;
        }
        if let Some(body) = outbox.as_deref().and_then(crate::cards::redacted_body) {
            tx.prepare_cached("UPDATE outbox SET body = ?2 WHERE seq = ?1")?
                .execute(params![seq, body])?;
            any = true;
        }
        erased += u64::from(any);
    }
    Ok(erased)
}

/// Erases what [`redact_expired`] erases, in its own transaction, then empties the WAL
/// if anything was erased; for the start and the periodic sweep (`app`). Returns how
/// many walk-ins were erased.
pub fn erase_expired(
    conn: &mut Connection,
    now: jiff::Timestamp,
    retention: Duration,
) -> Result<u64, StoreError> {
    let erased = securely(conn, |conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let erased = redact_expired(&tx, now, retention)?;
        tx.commit()?;
        Ok(erased)
    })
    .map_err(|e| match e {
        JobError::Db(e) => StoreError::Sqlite(e),
        JobError::Refused(m) => StoreError::Group(m),
    })?;
    if erased > 0 {
        truncate_wal(conn);
    }
    Ok(erased)
}

/// Copies the rejected lines' outbox rows into quarantine, undoing rejected card
/// bindings (`cards::revert_rejected`). Items are positional: item i answers line i,
/// which is row `first_seq + i`.
fn quarantine(
    tx: &Connection,
    batch: &FrozenBatch,
    reply: &BatchReply,
    at: &str,
) -> Result<(), JobError> {
    let mut stmt = tx.prepare_cached(
        "SELECT seq, record_id, kind, body FROM outbox WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
    )?;
    let rows: Vec<(u64, String, String, String)> = stmt
        .query_map(params![batch.first_seq, batch.last_seq], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    if rows.len() != batch.records as usize {
        return Err(JobError::Refused(format!(
            "batch {}..={} has {} records but the outbox holds {} rows in that range",
            batch.first_seq,
            batch.last_seq,
            batch.records,
            rows.len()
        )));
    }
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO quarantine (seq, record_id, kind, body, reason, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    // One warning per answer, not per line: a hub that refuses a whole kind of record
    // would otherwise log 500 lines a batch.
    let (mut rejected, mut misnumbered) = (0u32, 0u32);
    let mut first: Option<(u64, &str)> = None;
    for (item, (seq, record_id, kind, body)) in reply.items.iter().zip(&rows) {
        if item.seq.is_some_and(|s| s != *seq) {
            misnumbered += 1;
        }
        if item.status != ItemStatus::Rejected {
            continue;
        }
        let reason = item
            .reason
            .as_deref()
            .unwrap_or("rejected; the hub gave no reason");
        tracing::debug!(seq, record = %record_id, kind = %kind, reason, "quarantined");
        let new = insert.execute(params![seq, record_id, kind, body, reason, at])? == 1;
        // A rejected binding's local effect goes in the same transaction, once: the card
        // must not greet a customer the hub refused it for.
        if new && kind == "card_binding" {
            crate::cards::revert_rejected(tx, body)?;
        }
        rejected += 1;
        first.get_or_insert((*seq, reason));
    }
    if let Some((seq, reason)) = first {
        tracing::warn!(
            rejected,
            first_seq = seq,
            first_reason = reason,
            "the hub rejected records; they are quarantined (see sync.quarantine in the status)"
        );
    }
    if misnumbered > 0 {
        tracing::warn!(
            misnumbered,
            "the hub's answer names other seqs than the lines it answers; the lines' order is what counts"
        );
    }
    Ok(())
}

// ---- pull ----

fn is_refused_by_checks(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)
}

fn is_foreign_key(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

fn upsert(conn: &Connection, entry: &RosterEntry) -> rusqlite::Result<()> {
    match entry {
        RosterEntry::Consultant(c) => conn
            .prepare_cached(
                "INSERT INTO consultants (id, name) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name",
            )?
            .execute(params![c.id, c.name]),
        RosterEntry::Customer(c) => conn
            .prepare_cached(
                "INSERT INTO customers (id, surname, title, tier, consultant_id, source, last_follow_up)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (id) DO UPDATE SET surname = excluded.surname, title = excluded.title,
                     tier = excluded.tier, consultant_id = excluded.consultant_id,
                     source = excluded.source, last_follow_up = excluded.last_follow_up",
            )?
            .execute(params![
                c.id,
                c.surname,
                c.title,
                c.tier,
                c.consultant_id,
                c.source,
                c.last_follow_up.map(|t| t.to_string())
            ]),
        RosterEntry::Card(c) => conn
            .prepare_cached(
                "INSERT INTO cards (token, customer_id, status, note, low24_only) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (token) DO UPDATE SET customer_id = excluded.customer_id,
                     status = excluded.status, note = excluded.note, low24_only = excluded.low24_only",
            )?
            .execute(params![c.token, c.customer_id, c.status, c.note, c.low24_only]),
        RosterEntry::Broker(b) => conn
            .prepare_cached(
                "INSERT INTO brokers (id, name, company) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, company = excluded.company",
            )?
            .execute(params![b.id, b.name, b.company]),
        RosterEntry::Registration(r) => conn
            .prepare_cached(
                "INSERT INTO broker_registrations (customer_id, broker_id, registered_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (customer_id) DO UPDATE SET broker_id = excluded.broker_id,
                     registered_at = excluded.registered_at, expires_at = excluded.expires_at",
            )?
            .execute(params![
                r.customer_id,
                r.broker_id,
                r.registered_at.to_string(),
                r.expires_at.map(|t| t.to_string())
            ]),
    }
    .map(drop)
}

fn delete(conn: &Connection, entity: Entity, key: &str) -> rusqlite::Result<()> {
    let statements: &[&str] = match entity {
        Entity::Card => &["DELETE FROM cards WHERE token = ?1"],
        // A customer's cards and broker registration go with them.
        Entity::Customer => &[
            "DELETE FROM cards WHERE customer_id = ?1",
            "DELETE FROM broker_registrations WHERE customer_id = ?1",
            "DELETE FROM customers WHERE id = ?1",
        ],
        Entity::Registration => &["DELETE FROM broker_registrations WHERE customer_id = ?1"],
        // Their customers stay, without a consultant, until the hub assigns another.
        Entity::Consultant => &[
            "UPDATE customers SET consultant_id = NULL WHERE consultant_id = ?1",
            "DELETE FROM consultants WHERE id = ?1",
        ],
        Entity::Broker => &["DELETE FROM brokers WHERE id = ?1"],
    };
    for sql in statements {
        conn.prepare_cached(sql)?.execute([key])?;
    }
    Ok(())
}

fn apply_page(
    conn: &mut Connection,
    page: &RosterPage,
    at: jiff::Timestamp,
) -> Result<(), JobError> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Within a page the order of changes does not matter (a card may come before its
    // customer), so references are checked at commit. Ends with the transaction.
    tx.pragma_update(None, "defer_foreign_keys", "ON")?;
    let mut skipped = 0u64;
    let mut cards = BTreeSet::new();
    let mut customers = BTreeSet::new();
    for change in &page.changes {
        let (entity, key) = match &change.op {
            RosterOp::Upsert { entry } => (entry.entity(), entry.key()),
            RosterOp::Delete { entity, key } => (*entity, key.as_str()),
        };
        // One savepoint per change, so that a refused change is skipped whole.
        let sp = tx.savepoint()?;
        let result = match &change.op {
            RosterOp::Upsert { entry } => upsert(&sp, entry),
            RosterOp::Delete { entity, key } => delete(&sp, *entity, key),
        };
        match result {
            Ok(()) => {
                sp.commit()?;
                if let RosterOp::Upsert { entry } = &change.op {
                    match entry.entity() {
                        Entity::Card => cards.insert(key.to_owned()),
                        Entity::Customer => customers.insert(key.to_owned()),
                        Entity::Consultant | Entity::Broker | Entity::Registration => false,
                    };
                }
            }
            // A value this kiosk's checks refuse (a tier a newer hub knows): stopping
            // here would stop the roster for good, so the change is left out.
            Err(e) if is_refused_by_checks(&e) => {
                sp.finish()?;
                skipped += 1;
                tracing::warn!(
                    entity = entity.as_str(),
                    key,
                    cursor = change.cursor,
                    error = %e,
                    "a roster change is refused by this kiosk's checks (from a newer hub?); skipped"
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    skipped += resolve_references(&tx, &cards, &customers)?;
    if skipped > 0 {
        let before: u64 = get_meta(&tx, ROSTER_SKIPPED)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        set_meta(&tx, ROSTER_SKIPPED, &(before + skipped).to_string())?;
    }
    set_meta(&tx, ROSTER_CURSOR, &page.next.to_string())?;
    set_meta(&tx, LAST_PULL_AT, &at.to_string())?;
    tx.commit()?;
    tracing::debug!(
        changes = page.changes.len(),
        skipped,
        cursor = page.next,
        "roster page applied"
    );
    Ok(())
}

/// Settles references a page left dangling, which would otherwise fail the commit
/// again on every retry: a card whose customer this kiosk does not have (skipped, or
/// deleted by an earlier page) is dropped, since no tap could find it anyway; a
/// customer whose consultant it does not have is kept without one. Only rows the page
/// upserted can dangle: deletes take their dependants along. Returns the cards dropped.
fn resolve_references(
    tx: &Connection,
    cards: &BTreeSet<String>,
    customers: &BTreeSet<String>,
) -> rusqlite::Result<u64> {
    let mut dropped = 0;
    for token in cards {
        let orphan_of: Option<String> = tx
            .prepare_cached(
                "SELECT customer_id FROM cards WHERE token = ?1
                 AND NOT EXISTS (SELECT 1 FROM customers WHERE id = cards.customer_id)",
            )?
            .query_row([token], |r| r.get(0))
            .optional()?;
        if let Some(customer) = orphan_of {
            tx.prepare_cached("DELETE FROM cards WHERE token = ?1")?
                .execute([token])?;
            dropped += 1;
            tracing::warn!(
                entity = "card",
                key = %token,
                customer = %customer,
                "a roster card names a customer this kiosk does not have; skipped"
            );
        }
    }
    for id in customers {
        let cleared = tx
            .prepare_cached(
                "UPDATE customers SET consultant_id = NULL WHERE id = ?1 AND consultant_id IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM consultants WHERE id = customers.consultant_id)",
            )?
            .execute([id])?;
        if cleared > 0 {
            tracing::warn!(
                entity = "customer",
                key = %id,
                "a roster customer names a consultant this kiosk does not have; kept without a consultant"
            );
        }
    }
    Ok(dropped)
}

fn replace_roster(
    conn: &mut Connection,
    path: &Path,
    at: jiff::Timestamp,
) -> Result<u64, JobError> {
    let file = std::fs::File::open(path).map_err(|e| {
        JobError::Refused(format!(
            "cannot open the roster snapshot {}: {e}",
            path.display()
        ))
    })?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Registrations too: one the hub deleted while this kiosk was away must not go on
    // confirming a broker's customer.
    for table in [
        "broker_registrations",
        "cards",
        "customers",
        "consultants",
        "brokers",
    ] {
        tx.execute(&format!("DELETE FROM {table}"), [])?;
    }
    // The snapshot lists consultants, customers, cards, brokers in that order, so
    // references are checked as entries arrive and a dangling one is refused alone.
    let mut skipped = 0u64;
    // A database failure, kept whole (read_snapshot's callback can only return text).
    let mut failed: Option<rusqlite::Error> = None;
    let read = wire::read_snapshot(
        std::io::BufReader::new(file),
        |entry| match store_snapshot_entry(&tx, &entry) {
            Ok(()) => Ok(()),
            Err(e) if is_refused_by_checks(&e) => {
                skipped += 1;
                if skipped <= SNAPSHOT_WARNINGS {
                    tracing::warn!(
                        entity = entry.entity().as_str(),
                        key = entry.key(),
                        error = %e,
                        "a roster snapshot entry is refused by this kiosk's checks (from a newer hub?); skipped"
                    );
                }
                Ok(())
            }
            Err(e) => {
                let message = format!("storing {} {}: {e}", entry.entity().as_str(), entry.key());
                failed = Some(e);
                Err(message)
            }
        },
    );
    // Dropping `tx` on any error rolls back: the old roster and cursor stay.
    let head = match (read, failed) {
        (Ok(head), _) => head,
        (Err(_), Some(e)) => return Err(JobError::Db(e)),
        (Err(message), None) => {
            return Err(JobError::Refused(format!(
                "the roster snapshot {} is not usable ({message}); the old roster stays",
                path.display()
            )));
        }
    };
    if skipped > SNAPSHOT_WARNINGS {
        tracing::warn!(
            skipped,
            "roster snapshot entries were refused by this kiosk's checks; the first {SNAPSHOT_WARNINGS} are logged above"
        );
    }
    // The snapshot is the hub's roster without the cards bound here that it has not
    // answered yet; they must go on greeting their customers.
    let reapplied = crate::cards::reapply_pending(&tx)?;
    set_meta(&tx, ROSTER_SKIPPED, &skipped.to_string())?;
    set_meta(&tx, ROSTER_CURSOR, &head.cursor.to_string())?;
    set_meta(&tx, LAST_PULL_AT, &at.to_string())?;
    tx.commit()?;
    tracing::info!(
        entries = head.entries,
        skipped,
        reapplied,
        cursor = head.cursor,
        "roster replaced from a snapshot"
    );
    Ok(head.cursor)
}

/// Stores one snapshot entry; a customer whose consultant the snapshot lacks is kept
/// without one, as a page would keep them.
fn store_snapshot_entry(tx: &Connection, entry: &RosterEntry) -> rusqlite::Result<()> {
    match (upsert(tx, entry), entry) {
        (Err(e), RosterEntry::Customer(c)) if is_foreign_key(&e) && c.consultant_id.is_some() => {
            tracing::warn!(
                entity = "customer",
                key = %c.id,
                "a roster customer names a consultant the snapshot lacks; kept without a consultant"
            );
            let mut c = c.clone();
            c.consultant_id = None;
            upsert(tx, &RosterEntry::Customer(c))
        }
        (result, _) => result,
    }
}

// ---- meta ----

fn get_meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])
    .map(drop)
}

// ---- status ----

/// Sync's state as the store knows it, for the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    /// Outbox rows the hub does not hold yet.
    pub backlog: u64,
    /// When the oldest of them was committed.
    pub oldest_unsent_at: Option<jiff::Timestamp>,
    pub last_push_at: Option<jiff::Timestamp>,
    pub last_pull_at: Option<jiff::Timestamp>,
    /// `None` before the first snapshot.
    pub roster_cursor: Option<u64>,
    /// Roster changes left out since the last snapshot (values this kiosk refuses).
    pub roster_skipped: u64,
    pub quarantine_count: u64,
    /// The newest quarantined rows, at most [`QUARANTINE_SHOWN`].
    pub quarantine_latest: Vec<Quarantined>,
}

/// An outbox row the hub rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub seq: u64,
    pub record_id: String,
    pub kind: String,
    pub reason: String,
    /// When the hub's answer was applied (RFC 3339).
    pub at: String,
}

impl ReadDb {
    /// Sync's backlog, last push and pull, roster cursor and quarantine.
    pub async fn sync_status(&self) -> Result<SyncStatus, StoreError> {
        self.with(|c| {
            let time = |key: &str| -> rusqlite::Result<Option<jiff::Timestamp>> {
                Ok(get_meta(c, key)?.and_then(|t| t.parse().ok()))
            };
            // Taken from the record itself, so that it works for any kind of record.
            let oldest: Option<String> = c
                .query_row(
                    "SELECT CASE WHEN json_valid(body) THEN json_extract(body, '$.record.recorded_at') END
                     FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            let quarantine_latest = c
                .prepare_cached(
                    "SELECT seq, record_id, kind, reason, at FROM quarantine ORDER BY seq DESC LIMIT ?1",
                )?
                .query_map([QUARANTINE_SHOWN], |r| {
                    Ok(Quarantined {
                        seq: r.get(0)?,
                        record_id: r.get(1)?,
                        kind: r.get(2)?,
                        reason: r.get(3)?,
                        at: r.get(4)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(SyncStatus {
                backlog: c.query_row(
                    "SELECT count(*) FROM outbox WHERE sent_at IS NULL",
                    [],
                    |r| r.get(0),
                )?,
                oldest_unsent_at: oldest.and_then(|t| t.parse().ok()),
                last_push_at: time(LAST_PUSH_AT)?,
                last_pull_at: time(LAST_PULL_AT)?,
                roster_cursor: get_meta(c, ROSTER_CURSOR)?.and_then(|t| t.parse().ok()),
                roster_skipped: get_meta(c, ROSTER_SKIPPED)?
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0),
                quarantine_count: c.query_row("SELECT count(*) FROM quarantine", [], |r| {
                    r.get(0)
                })?,
                quarantine_latest,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::btree_map::Entry;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use kiosk_device::CardToken;
    use kiosk_sync::wire::{
        BrokerEntry, CardEntry, ConsultantEntry, CustomerEntry, ItemResult, RegistrationEntry,
        RosterChange, SnapshotHead,
    };
    use uuid::Uuid;

    use super::*;
    use crate::store::{Identity, Store, TapInput};

    /// The store as the daemon runs it: its writer thread, a read connection, the sync side.
    struct Kiosk {
        side: SyncSide,
        writer: Writer,
        thread: std::thread::JoinHandle<()>,
    }

    impl Kiosk {
        fn open(dir: &Path) -> Kiosk {
            let identity = Identity {
                kiosk_id: "k1".into(),
                office_id: "o1".into(),
                time_zone: jiff::tz::TimeZone::UTC,
            };
            let store = Store::open(dir, identity).expect("open the store");
            let db = ReadDb::open(dir, jiff::tz::TimeZone::UTC).expect("open a read connection");
            let (writer, thread) = Writer::spawn(store).expect("writer thread");
            Kiosk {
                side: SyncSide::new(writer.clone(), db),
                writer,
                thread,
            }
        }

        /// Stops the way a crash does as far as the store can tell: what was committed
        /// stays, everything held in memory is gone.
        fn crash(self) {
            let Kiosk {
                side,
                writer,
                thread,
            } = self;
            drop((side, writer));
            thread.join().expect("the writer thread ends");
        }

        /// Records a tap of `token`; returns the visit's id and seq.
        async fn tap(&self, token: &str) -> (Uuid, u64) {
            let input = TapInput {
                source: "test".into(),
                token: CardToken::parse(token).expect("token"),
                device_time: jiff::Timestamp::now(),
            };
            let rec = self
                .writer
                .call(move |s| s.record_tap(&input))
                .await
                .expect("tap");
            (rec.visit.id, rec.visit.seq)
        }

        /// Records `n` taps of cards nobody knows; each is a new visit.
        async fn taps(&self, n: u64) {
            for _ in 0..n {
                self.tap(&format!("qr:{}", Uuid::now_v7())).await;
            }
        }

        async fn batch(&self, max_records: usize) -> FrozenBatch {
            self.side
                .next_batch(max_records, 1 << 20)
                .await
                .expect("next batch")
                .expect("something unsent")
        }

        async fn status(&self) -> SyncStatus {
            self.side.db.sync_status().await.expect("status")
        }
    }

    /// A connection to look at the tables, as a test's eyes only.
    fn look(dir: &Path) -> Connection {
        crate::store::open(dir).expect("open for a look")
    }

    fn seqs(conn: &Connection, sql: &str) -> Vec<u64> {
        conn.prepare(sql)
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    fn unsent(conn: &Connection) -> Vec<u64> {
        seqs(
            conn,
            "SELECT seq FROM outbox WHERE sent_at IS NULL ORDER BY seq",
        )
    }

    fn quarantined(conn: &Connection) -> Vec<u64> {
        seqs(conn, "SELECT seq FROM quarantine ORDER BY seq")
    }

    /// The records of a batch body, in line order.
    fn records(body: &[u8]) -> Vec<wire::VisitRecord> {
        let text = wire::gunzip(body, 1 << 24).expect("gzip");
        text.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| match serde_json::from_slice(l).expect("record") {
                wire::Record::Visit(v) => v,
                other => panic!("expected visits only, got a {}", other.kind()),
            })
            .collect()
    }

    fn item(status: ItemStatus) -> ItemResult {
        ItemResult {
            seq: None,
            status,
            reason: (status == ItemStatus::Rejected).then(|| "no such office".to_owned()),
        }
    }

    fn reply(statuses: &[ItemStatus], high_water: u64) -> BatchReply {
        BatchReply {
            items: statuses.iter().copied().map(item).collect(),
            high_water,
        }
    }

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().expect("time")
    }

    use ItemStatus::{Duplicate, Inserted, Rejected};

    #[tokio::test]
    async fn nothing_unsent_is_no_batch() {
        let dir = tempfile::tempdir().expect("dir");
        let k = Kiosk::open(dir.path());
        assert_eq!(k.side.next_batch(500, 1 << 20).await.expect("next"), None);
    }

    /// Every retry sends the same bytes, even after a crash, and however the limits
    /// or the outbox change meanwhile.
    #[tokio::test]
    async fn a_batch_is_frozen_until_settled_and_survives_a_crash() {
        let dir = tempfile::tempdir().expect("dir");
        let k = Kiosk::open(dir.path());
        k.taps(5).await;
        let first = k.batch(3).await;
        assert_eq!((first.first_seq, first.last_seq, first.records), (1, 3, 3));
        let seqs: Vec<u64> = records(&first.body).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        k.taps(1).await;
        assert_eq!(k.batch(500).await, first);
        k.crash();
        let k = Kiosk::open(dir.path());
        assert_eq!(k.batch(1).await, first);
    }

    #[tokio::test]
    async fn a_batch_keeps_to_max_records_and_about_max_bytes() {
        let dir = tempfile::tempdir().expect("dir");
        let k = Kiosk::open(dir.path());
        k.taps(5).await;
        let sizes: Vec<usize> = look(dir.path())
            .prepare("SELECT length(body) + 1 FROM outbox ORDER BY seq")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let cases = [
            // (max_records, max_bytes, records)
            (2, 1 << 20, 2),
            (10, 1 << 20, 5),
            (10, sizes[0] + sizes[1], 2),
            (10, sizes[0] + sizes[1] - 1, 1),
            // Always at least one row, or a large record would never leave.
            (10, 1, 1),
            (0, 1 << 20, 1),
        ];
        for (max_records, max_bytes, expected) in cases {
            let batch = k
                .side
                .next_batch(max_records, max_bytes)
                .await
                .expect("next")
                .expect("a batch");
            assert_eq!(
                (batch.first_seq, batch.records),
                (1, expected),
                "max_records {max_records}, max_bytes {max_bytes}"
            );
            assert_eq!(records(&batch.body).len(), expected as usize);
            k.side.discard_batch(&batch).await.expect("discard");
        }
    }

    #[tokio::test]
    async fn settling_marks_rows_up_to_the_high_water_only() {
        let dir = tempfile::tempdir().expect("dir");
        let k = Kiosk::open(dir.path());
        k.taps(5).await;
        let batch = k.batch(500).await;
        let when = at("2026-11-23T02:00:00Z");
        k.side
            .settle(&batch, &reply(&[Inserted; 5], 3), when)
            .await
            .expect("settle");
        assert_eq!(unsent(&look(dir.path())), [4, 5]);
        let next = k.batch(500).await;
        assert_ne!(next.id, batch.id);
        assert_eq!((next.first_seq, next.last_seq), (4, 5));
        let status = k.status().await;
        assert_eq!((status.backlog, status.last_push_at), (2, Some(when)));
    }

    /// The hub holds a rejected record as held, so its seq is under the high-water;
    /// the kiosk keeps a copy for staff and goes on.
    #[tokio::test]
    async fn rejected_rows_are_quarantined_and_do_not_block() {
        let dir = tempfile::tempdir().expect("dir");
        let k = Kiosk::open(dir.path());
        k.taps(4).await;
        let batch = k.batch(500).await;
        let mut answer = reply(&[Inserted, Rejected, Duplicate, Rejected], 4);
        answer.items[3].reason = None;
        k.side
            .settle(&batch, &answer, at("2026-11-23T02:00:00Z"))
            .await
            .expect("settle");
        let conn = look(dir.path());
        assert_eq!(quarantined(&conn), [2, 4]);
        assert_eq!(unsent(&conn), [] as [u64; 0]);
        assert_eq!(k.side.next_batch(500, 1 << 20).await.expect("next"), None);
        k.taps(1).await;
        assert_eq!(k.batch(500).await.first_seq, 5);

        let status = k.status().await;
        assert_eq!(status.quarantine_count, 2);
        let latest: Vec<(u64, &str)> = status
            .quarantine_latest
            .iter()
            .map(|q| (q.seq, q.reason.as_str()))
            .collect();
        assert_eq!(
            latest,
            [
                (4, "rejected; the hub gave no reason"),
                (2, "no such office")
            ]
        );
        let body: String = conn
            .query_row("SELECT body FROM quarantine WHERE seq = 2", [], |r| {
                r.get(0)
            })
            .expect("quarantined body");
        let original: String = conn
            .query_row("SELECT body FROM outbox WHERE seq = 2", [], |r| r.get(0))
            .expect("outbox body");
        assert_eq!(body, original);
    }

    /// A hub restored from a backup answers with a high-water below rows this kiosk
    /// marked sent: those are unmarked and sent again.
    #[tokio::test]
    async fn a_hub_that_lost_rows_gets_them_again() {
        let dir = tempfile::tempdir().expect("dir");
        let k = Kiosk::open(dir.path());
        k.taps(6).await;
        let batch = k.batch(3).await;
        let when = at("2026-11-23T02:00:00Z");
        k.side
            .settle(&batch, &reply(&[Inserted; 3], 3), when)
            .await
            .expect("settle");
        let batch = k.batch(3).await;
        assert_eq!(batch.first_seq, 4);
        k.side
            .settle(&batch, &reply(&[Inserted; 3], 1), when)
            .await
            .expect("settle");
        assert_eq!(unsent(&look(dir.path())), [2, 3, 4, 5, 6]);
        assert_eq!(k.batch(500).await.first_seq, 2);
    }

    #[tokio::test]
    async fn an_answer_that_does_not_fit_changes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let k = Kiosk::open(dir.path());
        k.taps(3).await;
        let batch = k.batch(500).await;
        let when = at("2026-11-23T02:00:00Z");
        let err = k
            .side
            .settle(&batch, &reply(&[Inserted, Rejected], 3), when)
            .await
            .expect_err("two items for three records");
        assert!(err.0.contains("2 items for the 3 records"), "{err}");
        let conn = look(dir.path());
        assert_eq!(unsent(&conn), [1, 2, 3]);
        assert_eq!(quarantined(&conn), [] as [u64; 0]);
        assert_eq!(k.batch(500).await, batch);
        assert_eq!(k.status().await.last_push_at, None);

        // An answer to a batch discarded since must not settle its successor.
        k.side.discard_batch(&batch).await.expect("discard");
        let again = k.batch(500).await;
        assert_ne!(again.id, batch.id);
        assert_eq!(again.body, batch.body);
        let err = k
            .side
            .settle(&batch, &reply(&[Inserted, Rejected, Inserted], 3), when)
            .await
            .expect_err("a stale batch");
        assert!(err.0.contains("no longer the frozen batch"), "{err}");
        assert_eq!(unsent(&conn), [1, 2, 3]);
        assert_eq!(quarantined(&conn), [] as [u64; 0]);
        assert_eq!(k.batch(500).await, again);
    }

    // ---- roster ----

    fn consultant(id: &str) -> RosterEntry {
        RosterEntry::Consultant(ConsultantEntry {
            id: id.into(),
            name: format!("name of {id}"),
        })
    }

    fn customer(id: &str, tier: &str, consultant: Option<&str>) -> RosterEntry {
        RosterEntry::Customer(CustomerEntry {
            id: id.into(),
            surname: "张".into(),
            title: "mr".into(),
            tier: tier.into(),
            consultant_id: consultant.map(Into::into),
            source: None,
            last_follow_up: None,
        })
    }

    fn card(token: &str, customer: &str, status: &str) -> RosterEntry {
        RosterEntry::Card(CardEntry {
            token: token.into(),
            customer_id: customer.into(),
            status: status.into(),
            note: None,
            low24_only: false,
        })
    }

    fn broker(id: &str) -> RosterEntry {
        RosterEntry::Broker(BrokerEntry {
            id: id.into(),
            name: format!("name of {id}"),
            company: Some("链家".into()),
        })
    }

    fn page(next: u64, ops: Vec<RosterOp>) -> RosterPage {
        RosterPage {
            changes: ops
                .into_iter()
                .enumerate()
                .map(|(i, op)| RosterChange {
                    cursor: next - 1 - i as u64,
                    op,
                })
                .collect(),
            next,
            more: false,
        }
    }

    fn up(entry: RosterEntry) -> RosterOp {
        RosterOp::Upsert { entry }
    }

    fn del(entity: Entity, key: &str) -> RosterOp {
        RosterOp::Delete {
            entity,
            key: key.into(),
        }
    }

    /// The roster as rows of text, table by table, to compare whole.
    fn roster(conn: &Connection) -> Vec<String> {
        let mut out = Vec::new();
        for sql in [
            "SELECT 'consultant ' || id || ' ' || name FROM consultants ORDER BY id",
            "SELECT 'customer ' || id || ' ' || tier || ' ' || coalesce(consultant_id, '-') FROM customers ORDER BY id",
            "SELECT 'card ' || token || ' ' || customer_id || ' ' || status || ' ' || coalesce(note, '-') FROM cards ORDER BY token",
            "SELECT 'broker ' || id || ' ' || coalesce(company, '-') FROM brokers ORDER BY id",
        ] {
            let rows: Vec<String> = conn
                .prepare(sql)
                .expect("prepare")
                .query_map([], |r| r.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            out.extend(rows);
        }
        out
    }

    #[tokio::test]
    async fn roster_pages_upsert_and_delete_with_their_cursor() {
        let dir = tempfile::tempdir().expect("dir");
        let k = Kiosk::open(dir.path());
        assert_eq!(k.side.roster_cursor().await.expect("cursor"), None);
        let when = at("2026-11-23T02:00:00Z");
        // A card before its customer, a customer before their consultant: one page.
        let first = page(
            7,
            vec![
                up(card("nfc:04000001", "C1", "active")),
                up(customer("C1", "gold", Some("E1"))),
                up(consultant("E1")),
                up(customer("C2", "normal", None)),
                up(card("nfc:04000002", "C2", "active")),
                up(broker("B1")),
            ],
        );
        k.side.apply_roster_page(first, when).await.expect("apply");
        assert_eq!(
            roster(&look(dir.path())),
            [
                "consultant E1 name of E1",
                "customer C1 gold E1",
                "customer C2 normal -",
                "card nfc:04000001 C1 active -",
                "card nfc:04000002 C2 active -",
                "broker B1 链家",
            ]
        );
        assert_eq!(k.side.roster_cursor().await.expect("cursor"), Some(7));
        assert_eq!(k.status().await.last_pull_at, Some(when));
        let (visit, _) = k.tap("nfc:04000001").await;
        let welcomed: String = look(dir.path())
            .query_row(
                "SELECT outcome FROM visits WHERE id = ?1",
                [visit.to_string()],
                |r| r.get(0),
            )
            .expect("visit");
        assert_eq!(welcomed, "welcome");

        let mut revoked = card("nfc:04000003", "C1", "revoked");
        if let RosterEntry::Card(c) = &mut revoked {
            c.note = Some("lost".into());
        }
        let second = page(
            12,
            vec![
                del(Entity::Consultant, "E1"),
                del(Entity::Customer, "C2"),
                del(Entity::Card, "nfc:04000001"),
                del(Entity::Broker, "B1"),
                up(revoked),
            ],
        );
        k.side.apply_roster_page(second, when).await.expect("apply");
        assert_eq!(
            roster(&look(dir.path())),
            ["customer C1 gold -", "card nfc:04000003 C1 revoked lost",]
        );
        assert_eq!(k.side.roster_cursor().await.expect("cursor"), Some(12));
        assert_eq!(k.status().await.roster_skipped, 0);
    }

    /// A newer hub may send values this kiosk does not know: those changes are left
    /// out (and counted), the rest of the page and the cursor still go in.
    #[tokio::test]
    async fn refused_roster_values_are_skipped_and_the_rest_applied() {
        let dir = tempfile::tempdir().expect("dir");
        let k = Kiosk::open(dir.path());
        let changes = page(
            20,
            vec![
                up(customer("C1", "platinum", None)),
                up(card("nfc:04000001", "C1", "active")),
                up(customer("C2", "normal", None)),
                up(card("nfc:04000002", "C2", "lost")),
                up(card("nfc:04000003", "C2", "active")),
                up(customer("C3", "silver", Some("E9"))),
            ],
        );
        k.side
            .apply_roster_page(changes, at("2026-11-23T02:00:00Z"))
            .await
            .expect("apply");
        assert_eq!(
            roster(&look(dir.path())),
            [
                "customer C2 normal -",
                "customer C3 silver -",
                "card nfc:04000003 C2 active -",
            ]
        );
        assert_eq!(k.side.roster_cursor().await.expect("cursor"), Some(20));
        // The unknown tier, the unknown status, and the card of the refused customer.
        assert_eq!(k.status().await.roster_skipped, 3);
    }

    fn snapshot(path: &Path, cursor: u64, entries: &[RosterEntry], announced: u64) {
        let head = serde_json::to_string(&SnapshotHead {
            cursor,
            entries: announced,
        })
        .expect("head");
        let lines: Vec<String> = std::iter::once(head)
            .chain(
                entries
                    .iter()
                    .map(|e| serde_json::to_string(e).expect("entry")),
            )
            .collect();
        std::fs::write(path, wire::gzip_lines(lines.iter().map(String::as_str))).expect("write");
    }

    async fn seeded(dir: &Path) -> Kiosk {
        let k = Kiosk::open(dir);
        let seed = page(
            5,
            vec![
                up(consultant("E1")),
                up(customer("C1", "gold", Some("E1"))),
                up(card("nfc:04000001", "C1", "active")),
                up(broker("B1")),
            ],
        );
        k.side
            .apply_roster_page(seed, at("2026-11-22T02:00:00Z"))
            .await
            .expect("seed");
        k
    }

    #[tokio::test]
    async fn a_snapshot_replaces_the_whole_roster_and_the_cursor() {
        let dir = tempfile::tempdir().expect("dir");
        let k = seeded(dir.path()).await;
        let file = dir.path().join("snapshot.ndjson.gz");
        let entries = [
            consultant("E2"),
            customer("C7", "silver", Some("E2")),
            customer("C8", "diamond", None),
            customer("C9", "normal", Some("E404")),
            card("nfc:04000007", "C7", "active"),
            card("nfc:04000008", "C8", "active"),
            broker("B2"),
            RosterEntry::Registration(RegistrationEntry {
                customer_id: "C7".into(),
                broker_id: "B2".into(),
                registered_at: at("2026-11-20T02:00:00Z"),
                expires_at: None,
            }),
        ];
        snapshot(&file, 42, &entries, 8);
        // A registration the hub has since deleted: the snapshot does not list it.
        look(dir.path())
            .execute(
                "INSERT INTO broker_registrations (customer_id, broker_id, registered_at)
                 VALUES ('C1', 'B1', '2026-11-01T00:00:00Z')",
                [],
            )
            .expect("a stale registration");
        let when = at("2026-11-23T02:00:00Z");
        assert_eq!(
            k.side.replace_roster(&file, when).await.expect("replace"),
            42
        );
        assert_eq!(
            roster(&look(dir.path())),
            [
                "consultant E2 name of E2",
                "customer C7 silver E2",
                "customer C9 normal -",
                "card nfc:04000007 C7 active -",
                "broker B2 链家",
            ]
        );
        let registrations: Vec<(String, String)> = look(dir.path())
            .prepare("SELECT customer_id, broker_id FROM broker_registrations")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(registrations, [("C7".to_owned(), "B2".to_owned())]);
        let status = k.status().await;
        assert_eq!(
            (
                status.roster_cursor,
                status.last_pull_at,
                status.roster_skipped
            ),
            (Some(42), Some(when), 2)
        );
    }

    impl Kiosk {
        /// A binding or revocation from the desk (`cards`), as the API makes it.
        async fn card_change(&self, body: String) -> crate::cards::Changed {
            let req = match crate::cards::parse_bind(body.as_bytes(), "desk", "1") {
                Ok(req) => req,
                Err(_) => {
                    let req =
                        crate::cards::parse_revoke(body.as_bytes(), "desk").expect("a card change");
                    return self
                        .writer
                        .call_grouped(move |s| s.revoke_card_in_group(&req))
                        .await
                        .expect("store")
                        .expect("revoked");
                }
            };
            self.writer
                .call_grouped(move |s| s.bind_card_in_group(&req))
                .await
                .expect("store")
                .expect("bound")
        }

        /// Whom a tap of `token` greets, if anyone.
        async fn greets(&self, token: &str) -> Option<String> {
            let input = TapInput {
                source: "test".into(),
                token: CardToken::parse(token).expect("token"),
                device_time: jiff::Timestamp::now(),
            };
            let rec = self
                .writer
                .call(move |s| s.record_tap(&input))
                .await
                .expect("tap");
            (rec.visit.outcome == "welcome")
                .then(|| rec.visit.customer.map(|c| c.id))
                .flatten()
        }
    }

    /// The hub's snapshot cannot hold the card changes it has not answered yet: they are
    /// applied again on top of it (a walk-in made again from its record), so the cards
    /// bound here keep greeting and a revoked one stays refused; a change the hub has
    /// answered is the snapshot's business. Once the hub's answers and roster come, each
    /// card and customer is there once, and a rejection undoes the binding against the
    /// snapshot's roster.
    #[tokio::test]
    async fn a_snapshot_keeps_the_card_changes_the_hub_has_not_answered() {
        let dir = tempfile::tempdir().expect("dir");
        let k = seeded(dir.path()).await;
        let bind = |card: &str, customer: &str| {
            format!(
                r#"{{"id":"{}","card":"{card}","customer_id":"{customer}"}}"#,
                Uuid::now_v7()
            )
        };
        // Accepted before the snapshot, which (made earlier at the hub) lacks it anyway.
        k.card_change(bind("nfc:04000004", "C1")).await;
        let batch = k.batch(500).await;
        k.side
            .settle(&batch, &reply(&[Inserted], 1), at("2026-11-23T01:00:00Z"))
            .await
            .expect("settle");
        // Not answered yet: a member's new card, a walk-in's card, a lost card.
        k.card_change(bind("nfc:04000002", "C1")).await;
        let walk_in = k
            .card_change(format!(
                r#"{{"id":"{}","card":"nfc:04000003","new_customer":{{"name":"赵六","surname":"赵","title":"ms","phone":"13800138000","source":"walk_in","consent":true}}}}"#,
                Uuid::now_v7()
            ))
            .await;
        let w = walk_in
            .change
            .customer_id
            .clone()
            .expect("the walk-in's id");
        k.card_change(format!(
            r#"{{"id":"{}","card":"nfc:04000001","reason":"lost"}}"#,
            Uuid::now_v7()
        ))
        .await;
        let outbox_before = seqs(&look(dir.path()), "SELECT seq FROM outbox ORDER BY seq");

        let file = dir.path().join("snapshot.ndjson.gz");
        let hub_roster = [
            consultant("E1"),
            customer("C1", "gold", Some("E1")),
            card("nfc:04000001", "C1", "active"),
        ];
        snapshot(&file, 42, &hub_roster, 3);
        k.side
            .replace_roster(&file, at("2026-11-23T02:00:00Z"))
            .await
            .expect("replace");
        assert_eq!(
            roster(&look(dir.path())),
            [
                "consultant E1 name of E1".to_owned(),
                "customer C1 gold E1".to_owned(),
                format!("customer {w} normal -"),
                "card nfc:04000001 C1 revoked lost".to_owned(),
                "card nfc:04000002 C1 active -".to_owned(),
                format!("card nfc:04000003 {w} active -"),
            ]
        );
        // Nothing new to send: the changes were applied again, not made again.
        let outbox_after = seqs(&look(dir.path()), "SELECT seq FROM outbox ORDER BY seq");
        assert_eq!(outbox_after, outbox_before);
        let surname: (String, String) = look(dir.path())
            .query_row(
                "SELECT surname, title FROM customers WHERE id = ?1",
                [&w],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("the walk-in");
        assert_eq!(surname, ("赵".to_owned(), "ms".to_owned()));
        assert_eq!(k.greets("nfc:04000002").await.as_deref(), Some("C1"));
        assert_eq!(k.greets("nfc:04000003").await.as_deref(), Some(w.as_str()));
        assert_eq!(k.greets("nfc:04000001").await, None);
        assert_eq!(k.greets("nfc:04000004").await, None);

        // The hub refuses the member's card (taken there), takes the rest, and its
        // roster brings the walk-in and their card, and the revocation.
        let batch = k.batch(500).await;
        // The three changes, then the four taps above.
        assert_eq!((batch.first_seq, batch.last_seq), (2, 8));
        let mut answer = reply(
            &[
                Rejected, Inserted, Inserted, Inserted, Inserted, Inserted, Inserted,
            ],
            8,
        );
        answer.items[0].reason = Some("card_taken: C9".into());
        k.side
            .settle(&batch, &answer, at("2026-11-23T03:00:00Z"))
            .await
            .expect("settle");
        let mut walk_in_row = customer(&w, "normal", None);
        if let RosterEntry::Customer(c) = &mut walk_in_row {
            c.surname = "赵".into();
            c.title = "ms".into();
        }
        let mut revoked = card("nfc:04000001", "C1", "revoked");
        if let RosterEntry::Card(c) = &mut revoked {
            c.note = Some("lost".into());
        }
        k.side
            .apply_roster_page(
                page(
                    45,
                    vec![
                        up(walk_in_row),
                        up(card("nfc:04000003", &w, "active")),
                        up(revoked),
                    ],
                ),
                at("2026-11-23T03:00:01Z"),
            )
            .await
            .expect("page");
        assert_eq!(
            roster(&look(dir.path())),
            [
                "consultant E1 name of E1".to_owned(),
                "customer C1 gold E1".to_owned(),
                format!("customer {w} normal -"),
                "card nfc:04000001 C1 revoked lost".to_owned(),
                format!("card nfc:04000003 {w} active -"),
            ]
        );
        assert_eq!(k.greets("nfc:04000003").await.as_deref(), Some(w.as_str()));
        assert_eq!(k.greets("nfc:04000002").await, None);

        // A later snapshot applies nothing again: everything is answered.
        snapshot(&file, 50, &hub_roster, 3);
        k.side
            .replace_roster(&file, at("2026-11-23T04:00:00Z"))
            .await
            .expect("replace");
        assert_eq!(
            roster(&look(dir.path())),
            [
                "consultant E1 name of E1",
                "customer C1 gold E1",
                "card nfc:04000001 C1 active -",
            ]
        );
    }

    #[tokio::test]
    async fn a_bad_snapshot_leaves_the_old_roster_and_cursor() {
        let dir = tempfile::tempdir().expect("dir");
        let k = seeded(dir.path()).await;
        let before = roster(&look(dir.path()));
        let file = dir.path().join("snapshot.ndjson.gz");
        let entries = [
            consultant("E2"),
            customer("C7", "silver", Some("E2")),
            card("nfc:04000007", "C7", "active"),
        ];

        // Cut off: fewer entries than the head announces.
        snapshot(&file, 42, &entries, 4);
        let err = k
            .side
            .replace_roster(&file, at("2026-11-23T02:00:00Z"))
            .await
            .expect_err("cut off");
        assert!(err.0.contains("cut off"), "{err}");

        // Cut off inside the gzip stream.
        snapshot(&file, 42, &entries, 3);
        let whole = std::fs::read(&file).expect("read");
        std::fs::write(&file, &whole[..whole.len() / 2]).expect("write");
        k.side
            .replace_roster(&file, at("2026-11-23T02:00:00Z"))
            .await
            .expect_err("truncated gzip");

        // A malformed line after good ones.
        let lines = [
            r#"{"cursor":42,"entries":2}"#,
            r#"{"entity":"consultant","id":"E2","name":"n"}"#,
            r#"{"entity":"card","token":"nfc:04000009""#,
        ];
        std::fs::write(&file, wire::gzip_lines(lines)).expect("write");
        let err = k
            .side
            .replace_roster(&file, at("2026-11-23T02:00:00Z"))
            .await
            .expect_err("malformed");
        assert!(err.0.contains("line 3"), "{err}");

        let missing = dir.path().join("nowhere.gz");
        let err = k
            .side
            .replace_roster(&missing, at("2026-11-23T02:00:00Z"))
            .await
            .expect_err("missing file");
        assert!(err.0.contains("cannot open the roster snapshot"), "{err}");

        assert_eq!(roster(&look(dir.path())), before);
        let status = k.status().await;
        assert_eq!(
            (status.roster_cursor, status.last_pull_at),
            (Some(5), Some(at("2026-11-22T02:00:00Z")))
        );
    }

    #[tokio::test]
    async fn the_status_shows_backlog_age_pushes_and_quarantine() {
        let dir = tempfile::tempdir().expect("dir");
        let k = Kiosk::open(dir.path());
        let empty = k.status().await;
        assert_eq!(
            (empty.backlog, empty.oldest_unsent_at, empty.roster_cursor),
            (0, None, None)
        );
        k.taps(3).await;
        let batch = k.batch(500).await;
        let when = at("2026-11-23T02:00:00Z");
        k.side
            .settle(&batch, &reply(&[Inserted, Rejected, Inserted], 2), when)
            .await
            .expect("settle");
        let status = k.status().await;
        let third: String = look(dir.path())
            .query_row("SELECT recorded_at FROM visits WHERE seq = 3", [], |r| {
                r.get(0)
            })
            .expect("visit 3");
        assert_eq!(status.backlog, 1);
        assert_eq!(status.oldest_unsent_at, Some(at(&third)));
        assert_eq!(status.last_push_at, Some(when));

        let mut extra = serde_json::Map::new();
        extra.insert("hub_reachable".into(), true.into());
        let now = at(&third) + jiff::SignedDuration::from_secs(90);
        let json = crate::api::sync_json(&status, now, extra);
        assert_eq!(json["backlog"], 1);
        assert_eq!(json["oldest_unsent_age_s"], 90);
        assert_eq!(json["last_push_at"], "2026-11-23T02:00:00Z");
        assert_eq!(json["last_pull_at"], serde_json::Value::Null);
        assert_eq!(json["roster_cursor"], serde_json::Value::Null);
        assert_eq!(json["quarantine"]["count"], 1);
        assert_eq!(json["quarantine"]["latest"][0]["seq"], 2);
        assert_eq!(json["quarantine"]["latest"][0]["reason"], "no such office");
        assert_eq!(json["quarantine"]["latest"][0]["kind"], "visit");
        assert_eq!(json["hub_reachable"], true);
    }

    // ---- the outbox and the hub's answers, under faults ----

    /// A hub as the protocol describes it: records stored once by id, rejects kept
    /// and counted as held, the high-water the highest gap-free seq held.
    #[derive(Debug, Default)]
    struct Hub {
        stored: BTreeMap<Uuid, u64>,
        rejected: BTreeMap<Uuid, u64>,
    }

    impl Hub {
        fn receive(&mut self, body: &[u8], reject: &[bool]) -> BatchReply {
            let items = records(body)
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let status = if self.stored.contains_key(&r.id) {
                        Duplicate
                    } else if let Entry::Vacant(reject_slot) = self.rejected.entry(r.id) {
                        if reject.get(i).copied().unwrap_or(false) {
                            reject_slot.insert(r.seq);
                            Rejected
                        } else {
                            self.stored.insert(r.id, r.seq);
                            Inserted
                        }
                    } else {
                        Rejected
                    };
                    ItemResult {
                        seq: Some(r.seq),
                        status,
                        reason: (status == Rejected).then(|| "refused by the test".into()),
                    }
                })
                .collect();
            BatchReply {
                items,
                high_water: self.high_water(),
            }
        }

        fn held(&self) -> BTreeSet<u64> {
            self.stored
                .values()
                .chain(self.rejected.values())
                .copied()
                .collect()
        }

        fn high_water(&self) -> u64 {
            let held = self.held();
            (1..).find(|s| !held.contains(s)).map_or(0, |s| s - 1)
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Fault {
        None,
        /// The hub stored the batch, its answer never came back.
        LostReply,
        /// The batch reached the hub twice (a retry after a timeout).
        Duplicated,
        /// The kiosk died after sending, before settling.
        CrashBeforeSettle,
        /// The hub refused the batch's size: it is discarded unsent.
        Discarded,
    }

    #[derive(Debug, Clone)]
    enum Op {
        Record(u64),
        Push {
            max_records: usize,
            reject: Vec<bool>,
            fault: Fault,
        },
        Crash,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let fault = prop_oneof![
            4 => Just(Fault::None),
            1 => Just(Fault::LostReply),
            1 => Just(Fault::Duplicated),
            1 => Just(Fault::CrashBeforeSettle),
            1 => Just(Fault::Discarded),
        ];
        prop_oneof![
            3 => (1..5u64).prop_map(Op::Record),
            4 => (1..6usize, prop::collection::vec(prop::bool::weighted(0.2), 6), fault)
                .prop_map(|(max_records, reject, fault)| Op::Push { max_records, reject, fault }),
            1 => Just(Op::Crash),
        ]
    }

    /// What must hold after every step: every acknowledged visit is at the hub or
    /// still unsent; the hub holds only acknowledged visits, each once, under its seq;
    /// the kiosk quarantines only what the hub rejected.
    fn check(dir: &Path, hub: &Hub, acked: &BTreeMap<Uuid, u64>) {
        let conn = look(dir);
        let unsent: BTreeSet<u64> = unsent(&conn).into_iter().collect();
        for (id, seq) in acked {
            let at_hub = hub.stored.get(id) == Some(seq) || hub.rejected.get(id) == Some(seq);
            assert!(at_hub || unsent.contains(seq), "visit {seq} ({id}) is lost");
        }
        for (id, seq) in hub.stored.iter().chain(&hub.rejected) {
            assert_eq!(
                acked.get(id),
                Some(seq),
                "the hub holds {id} under seq {seq}"
            );
        }
        assert_eq!(
            hub.held().len(),
            hub.stored.len() + hub.rejected.len(),
            "a seq is held twice at the hub"
        );
        let rejected: BTreeSet<u64> = hub.rejected.values().copied().collect();
        let quarantined: BTreeSet<u64> = quarantined(&conn).into_iter().collect();
        assert!(
            quarantined.is_subset(&rejected),
            "{quarantined:?} ⊄ {rejected:?}"
        );
    }

    async fn run(ops: Vec<Op>) {
        let dir = tempfile::tempdir().expect("dir");
        let mut kiosk = Some(Kiosk::open(dir.path()));
        let mut hub = Hub::default();
        let mut acked = BTreeMap::new();
        let when = at("2026-11-23T02:00:00Z");
        for op in ops {
            let k = kiosk.take().expect("a running kiosk");
            match op {
                Op::Record(n) => {
                    for _ in 0..n {
                        let (id, seq) = k.tap(&format!("qr:{}", Uuid::now_v7())).await;
                        acked.insert(id, seq);
                    }
                }
                Op::Push {
                    max_records,
                    reject,
                    fault,
                } => {
                    if let Some(batch) =
                        k.side.next_batch(max_records, 1 << 20).await.expect("next")
                    {
                        let answer = match fault {
                            Fault::Discarded => None,
                            Fault::Duplicated => {
                                hub.receive(&batch.body, &reject);
                                Some(hub.receive(&batch.body, &reject))
                            }
                            _ => Some(hub.receive(&batch.body, &reject)),
                        };
                        match (fault, answer) {
                            (Fault::Discarded, _) => {
                                k.side.discard_batch(&batch).await.expect("discard")
                            }
                            (Fault::LostReply, _) => {}
                            (Fault::CrashBeforeSettle, _) => {
                                k.crash();
                                kiosk = Some(Kiosk::open(dir.path()));
                                check(dir.path(), &hub, &acked);
                                continue;
                            }
                            (_, Some(answer)) => {
                                k.side.settle(&batch, &answer, when).await.expect("settle")
                            }
                            (_, None) => {}
                        }
                    }
                }
                Op::Crash => {
                    k.crash();
                    kiosk = Some(Kiosk::open(dir.path()));
                    check(dir.path(), &hub, &acked);
                    continue;
                }
            }
            kiosk = Some(k);
            check(dir.path(), &hub, &acked);
        }

        // Drain with no faults and no rejects: everything must arrive, once.
        let k = kiosk.take().expect("a running kiosk");
        let mut rounds = 0;
        while let Some(batch) = k.side.next_batch(4, 1 << 20).await.expect("next") {
            let answer = hub.receive(&batch.body, &[]);
            k.side.settle(&batch, &answer, when).await.expect("settle");
            check(dir.path(), &hub, &acked);
            rounds += 1;
            assert!(rounds <= acked.len() + 1, "the drain does not end");
        }
        let n = acked.len() as u64;
        assert_eq!(hub.held(), (1..=n).collect::<BTreeSet<u64>>());
        let rejected: Vec<u64> = hub
            .rejected
            .values()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(quarantined(&look(dir.path())), rejected);
        assert_eq!(k.status().await.backlog, 0);
        k.crash();
    }

    /// The case that showed why a settle marks rows only up to its own batch: a
    /// rejected row whose answer was lost, then a smaller batch before it.
    #[tokio::test]
    async fn a_rejected_row_beyond_a_smaller_batch_is_still_quarantined() {
        let none = vec![false; 6];
        run(vec![
            Op::Record(2),
            Op::Push {
                max_records: 2,
                reject: vec![false, true, false, false, false, false],
                fault: Fault::CrashBeforeSettle,
            },
            Op::Push {
                max_records: 1,
                reject: none.clone(),
                fault: Fault::Discarded,
            },
            Op::Push {
                max_records: 1,
                reject: none,
                fault: Fault::None,
            },
        ])
        .await;
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn no_visit_is_lost_or_doubled_whatever_fails(
            ops in proptest::collection::vec(op(), 1..30)
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(run(ops));
        }
    }
}
