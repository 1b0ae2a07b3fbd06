//! Alerts to consultants' handhelds: who hears of a visit ([`recipients`]), kept in the
//! `alerts` table until acknowledged, streamed on `GET /api/v1/consultants/{id}/events`
//! (unacknowledged ones replayed first), acknowledged with `POST /api/v1/alerts/{id}/ack`,
//! listed for staff on `GET /api/v1/alerts?state=unacked`, and escalated by the
//! `escalation` task ([`Alerts::run_escalation`]) when nobody acknowledges a welcome in
//! time. Served by the kiosk on the LAN, so they work while the internet is down.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use jiff::{SignedDuration, Timestamp};
use kiosk_config::WebhookEvent;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::{ApiError, ApiState, ErrorBody};
use crate::devices::DeviceAuth;
use crate::handheld;
use crate::reception::{self, EscalationStep};
use crate::roster::Tier;
use crate::rotation::{load_rotation, save_rotation};
#[cfg(test)]
use crate::store::Store;
use crate::store::{ReadDb, StoreError, VisitView, Writer};
use crate::webhooks::{self, Webhooks};

/// Unacknowledged alerts this recent are sent first to a handheld that connects.
pub const REPLAY_WINDOW: SignedDuration = SignedDuration::from_secs(10 * 60);
/// How many alerts `GET /api/v1/alerts` answers when no `limit` is given.
pub const LIST_DEFAULT_LIMIT: u32 = 100;
/// The most alerts one `GET /api/v1/alerts` answers.
pub const LIST_MAX_LIMIT: u32 = 1000;
/// After a failed escalation (the database was unavailable), the next try.
const ESCALATION_RETRY: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// What an alert is, and who gets one

/// Why a consultant is alerted; also the alert's webhook event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The consultant receiving the visitor.
    Welcome,
    /// An off-duty owner whose customer a stand-in received (义务接待).
    Owner,
    /// The office manager, for a gold member.
    Manager,
    /// The office manager, when nobody received the visitor.
    Unassigned,
    /// The next free consultant and the manager, when a welcome went unacknowledged.
    Escalation,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        self.webhook_event().as_str()
    }

    /// The `[[notify.webhook]] events` name that sends this reason.
    pub fn webhook_event(self) -> WebhookEvent {
        match self {
            Reason::Welcome => WebhookEvent::Welcome,
            Reason::Owner => WebhookEvent::Owner,
            Reason::Manager => WebhookEvent::Manager,
            Reason::Unassigned => WebhookEvent::Unassigned,
            Reason::Escalation => WebhookEvent::Escalation,
        }
    }
}

/// A consultant named in an alert. Staff names are not the visitor's personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StaffRef {
    /// The roster's consultant id.
    pub id: String,
    /// The roster's name; null if the roster does not know the id.
    pub name: Option<String>,
}

/// An alert as a handheld receives it: masked like the screen, never a phone or full name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    /// A UUIDv7 made by the kiosk.
    pub id: Uuid,
    pub visit_id: Uuid,
    /// The consultant alerted (the manager is one too).
    pub consultant_id: String,
    /// Surname and title, as the screen shows it, e.g. 张先生.
    pub customer: String,
    /// The customer's tier, e.g. gold.
    pub tier: String,
    /// first or revisit.
    pub kind: String,
    /// The reader, or `handheld:NAME`, that saw the visitor.
    pub source: String,
    /// When the visitor was seen.
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// Why this consultant is alerted.
    pub reason: Reason,
    /// The consultant receiving the visitor: the alerted one for `welcome`, the stand-in
    /// for `owner`, the one taking over for `escalation`; null when nobody is free.
    pub receiver: Option<StaffRef>,
    /// For `escalation`: whose welcome alert nobody acknowledged in time.
    pub escalated_from: Option<StaffRef>,
}

/// Who hears of a committed visit, and why; no I/O.
///
/// Only a new counted visit (outcome `welcome` or `broker_confirmed` with a `kind`, not the
/// day's repeat) of a known customer alerts anyone — a broker's confirmation of a customer
/// already counted that day is evidence without a kind, and alerts nobody again: the receiving consultant (`welcome`); the owner a
/// stand-in served for (`owner`); the manager, when nobody received the visitor
/// (`unassigned`) or else for a gold member (`manager`). Each consultant is alerted once
/// per visit, for the first reason in that order.
pub fn recipients(visit: &VisitView, repeat: bool, manager: Option<&str>) -> Vec<(String, Reason)> {
    let counted =
        matches!(visit.outcome.as_str(), "welcome" | "broker_confirmed") && visit.kind.is_some();
    let Some(customer) = visit.customer.as_ref().filter(|_| counted && !repeat) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Reason)> = Vec::new();
    let mut add = |id: &str, reason: Reason| {
        if !out.iter().any(|(known, _)| known == id) {
            out.push((id.to_owned(), reason));
        }
    };
    let receiver = visit.consultant.as_ref().map(|c| c.id.as_str());
    if let Some(id) = receiver {
        add(id, Reason::Welcome);
    }
    if let Some(owner) = &visit.stand_in_for {
        add(owner, Reason::Owner);
    }
    if let Some(manager) = manager {
        if receiver.is_none() {
            add(manager, Reason::Unassigned);
        } else if customer.tier == Tier::Gold {
            add(manager, Reason::Manager);
        }
    }
    out
}

impl Alert {
    /// The alerts of a committed visit, one per [`recipients`] entry.
    pub fn for_visit(
        visit: &VisitView,
        repeat: bool,
        source: &str,
        at: Timestamp,
        manager: Option<&str>,
    ) -> Vec<Alert> {
        let Some(customer) = visit.customer.as_ref() else {
            return Vec::new();
        };
        let receiver = visit.consultant.as_ref().map(|c| StaffRef {
            id: c.id.clone(),
            name: Some(c.name.clone()),
        });
        recipients(visit, repeat, manager)
            .into_iter()
            .map(|(consultant_id, reason)| Alert {
                id: Uuid::now_v7(),
                visit_id: visit.id,
                consultant_id,
                customer: format!("{}{}", customer.surname, customer.title.zh()),
                tier: customer.tier.as_str().to_owned(),
                kind: visit.kind.clone().unwrap_or_default(),
                source: source.to_owned(),
                at,
                reason,
                receiver: receiver.clone(),
                escalated_from: None,
            })
            .collect()
    }
}

/// A visit's alerts, stored in its transaction and waiting for its commit to be announced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Raised {
    /// When they were made: the escalation clock starts here.
    pub created_at: Timestamp,
    pub alerts: Vec<Alert>,
}

// ---------------------------------------------------------------------------------------------
// In the store

/// Fixed-width RFC 3339 (nanoseconds), so the text columns sort and compare as times.
fn stamp(t: Timestamp) -> String {
    format!("{t:.9}")
}

fn conversion(column: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(e))
}

fn time_at(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Timestamp> {
    let text: String = row.get(column)?;
    text.parse().map_err(|e| conversion(column, e))
}

fn alert_at(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Alert> {
    let body: String = row.get(column)?;
    serde_json::from_str(&body).map_err(|e| conversion(column, e))
}

fn insert(conn: &Connection, alert: &Alert, created_at: Timestamp) -> rusqlite::Result<()> {
    let body = serde_json::to_string(alert)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.prepare_cached(
        "INSERT INTO alerts (id, consultant_id, kind, visit_id, body, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        alert.id.to_string(),
        alert.consultant_id,
        alert.reason.as_str(),
        alert.visit_id.to_string(),
        body,
        stamp(created_at),
    ])?;
    Ok(())
}

fn consultant_name(conn: &Connection, id: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT name FROM consultants WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()
}

/// Stores `alerts` and their webhook rows, in the caller's transaction.
fn store_alerts(
    conn: &Connection,
    alerts: &[Alert],
    created_at: Timestamp,
    hooks: Option<&Webhooks>,
) -> rusqlite::Result<()> {
    for alert in alerts {
        insert(conn, alert, created_at)?;
        if let Some(hooks) = hooks {
            let name = consultant_name(conn, &alert.consultant_id)?;
            webhooks::insert(conn, &hooks.rows(alert, name.as_deref()), created_at)?;
        }
    }
    Ok(())
}

/// `consultant`'s unacknowledged alerts made since `since`, oldest first.
fn unacked_of(
    conn: &Connection,
    consultant: &str,
    since: Timestamp,
) -> rusqlite::Result<Vec<Alert>> {
    conn.prepare_cached(
        "SELECT body FROM alerts WHERE acked_at IS NULL AND created_at >= ?2 AND consultant_id = ?1
         ORDER BY created_at, id",
    )?
    .query_map(params![consultant, stamp(since)], |r| alert_at(r, 0))?
    .collect()
}

/// Welcome alerts made since `since`, neither acknowledged nor escalated: `(id, created_at)`.
fn awaiting_escalation(
    conn: &Connection,
    since: Timestamp,
) -> rusqlite::Result<Vec<(Uuid, Timestamp)>> {
    conn.prepare_cached(
        "SELECT id, created_at FROM alerts
         WHERE acked_at IS NULL AND escalated_at IS NULL AND kind = 'welcome' AND created_at >= ?1",
    )?
    .query_map([stamp(since)], |r| {
        let id: String = r.get(0)?;
        Ok((
            Uuid::parse_str(&id).map_err(|e| conversion(0, e))?,
            time_at(r, 1)?,
        ))
    })?
    .collect()
}

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckRefusal {
    /// No such alert.
    Unknown,
    /// The alert is for a consultant the device may not act for ([`DeviceAuth::refuses`]):
    /// why, and what to do.
    NotYours(String),
}

/// Acknowledges alert `id` for `device`, if it may act for the alert's consultant. A second
/// acknowledgement answers the first's time. Inside the caller's transaction.
fn ack_in(
    conn: &Connection,
    id: Uuid,
    device: &DeviceAuth,
    now: Timestamp,
) -> rusqlite::Result<Result<Timestamp, AckRefusal>> {
    let row = conn
        .prepare_cached("SELECT consultant_id, acked_at FROM alerts WHERE id = ?1")?
        .query_row([id.to_string()], |r| {
            let acked: Option<String> = r.get(1)?;
            let acked = acked
                .map(|t| t.parse::<Timestamp>().map_err(|e| conversion(1, e)))
                .transpose()?;
            Ok((r.get::<_, String>(0)?, acked))
        })
        .optional()?;
    let Some((owner, acked)) = row else {
        return Ok(Err(AckRefusal::Unknown));
    };
    if let Some(why) = device.refuses(&owner) {
        return Ok(Err(AckRefusal::NotYours(why)));
    }
    if let Some(first) = acked {
        return Ok(Ok(first));
    }
    conn.prepare_cached("UPDATE alerts SET acked_at = ?2, acked_by = ?3 WHERE id = ?1")?
        .execute(params![id.to_string(), stamp(now), device.name])?;
    Ok(Ok(now))
}

/// What one look at a due welcome alert did.
#[derive(Debug)]
enum Escalated {
    /// Acknowledged, already escalated, or gone: nothing more to do.
    Done,
    /// Due long ago (the kiosk was stopped): left as it is, nobody is sent.
    Stale,
    /// Not due yet by the clock (it was moved): look again then.
    Wait(Timestamp),
    /// Escalated from consultant `from`: these alerts were stored, to be sent live.
    Raised { from: String, alerts: Vec<Alert> },
}

/// Escalates alert `id` if [`reception::escalation`] says so at `now`: takes the next free
/// consultant's rotation turn (skipping the unresponsive one), stores an `escalation` alert
/// to them and to the manager, and marks the alert escalated, in the caller's transaction.
fn escalate_in(
    conn: &Connection,
    id: Uuid,
    now: Timestamp,
    policy: &Policy,
    hooks: Option<&Webhooks>,
) -> Result<Escalated, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT body, created_at, acked_at IS NOT NULL, escalated_at IS NOT NULL
             FROM alerts WHERE id = ?1",
        )?
        .query_row([id.to_string()], |r| {
            Ok((
                alert_at(r, 0)?,
                time_at(r, 1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })
        .optional()?;
    let Some((original, created_at, acked, escalated)) = row else {
        return Ok(Escalated::Done);
    };
    if escalated {
        return Ok(Escalated::Done);
    }
    match reception::escalation(created_at, acked, now, policy.escalate_after) {
        EscalationStep::Done => return Ok(Escalated::Done),
        EscalationStep::Stale => return Ok(Escalated::Stale),
        EscalationStep::Wait { until } => return Ok(Escalated::Wait(until)),
        EscalationStep::Escalate => {}
    }
    let from = original.consultant_id.clone();
    let mut rotation = load_rotation(conn)?;
    // The unresponsive consultant is skipped even if no one marked them busy; their
    // own state stays as it was.
    let was_free = rotation.is_busy(&from) == Some(false);
    if was_free {
        rotation.mark_busy(&from)?;
    }
    let next = rotation.next_for_walk_in();
    if was_free {
        rotation.mark_free(&from)?;
    }
    if next.is_some() {
        save_rotation(conn, &rotation)?;
    }
    let staff = |id: String| -> rusqlite::Result<StaffRef> {
        Ok(StaffRef {
            name: consultant_name(conn, &id)?,
            id,
        })
    };
    let escalated_from = staff(from.clone())?;
    let receiver = next.clone().map(staff).transpose()?;
    let mut to: Vec<String> = next.into_iter().collect();
    if let Some(manager) = policy
        .manager
        .as_ref()
        .filter(|m| **m != from && !to.contains(m))
    {
        to.push(manager.clone());
    }
    let alerts: Vec<Alert> = to
        .into_iter()
        .map(|consultant_id| Alert {
            id: Uuid::now_v7(),
            consultant_id,
            reason: Reason::Escalation,
            receiver: receiver.clone(),
            escalated_from: Some(escalated_from.clone()),
            ..original.clone()
        })
        .collect();
    for alert in &alerts {
        insert(conn, alert, now)?;
        if let Some(hooks) = hooks {
            let name = consultant_name(conn, &alert.consultant_id)?;
            webhooks::insert(conn, &hooks.rows(alert, name.as_deref()), now)?;
        }
    }
    conn.execute(
        "UPDATE alerts SET escalated_at = ?2 WHERE id = ?1",
        params![id.to_string(), stamp(now)],
    )?;
    Ok(Escalated::Raised { from, alerts })
}

// ---------------------------------------------------------------------------------------------
// The alerts of a running kiosk

/// Where "now" comes from: the wall clock in the daemon, a clock tests move by hand.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Who else hears of visits, and when an unacknowledged welcome escalates
/// (`[reception] manager`, `escalate_after`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The office manager's consultant id.
    pub manager: Option<String>,
    pub escalate_after: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            manager: None,
            escalate_after: reception::DEFAULT_ESCALATE_AFTER,
        }
    }
}

/// A stored welcome alert the escalation task must look at.
#[derive(Debug, Clone, Copy)]
struct Due {
    id: Uuid,
    created_at: Timestamp,
}

/// The alerts of a running kiosk: the policy, the clock, the live channel (separate from
/// the public screen's events), and the hand-over of new welcome alerts to the
/// escalation task.
#[derive(Debug)]
pub struct Alerts {
    policy: Policy,
    clock: Arc<dyn Clock>,
    webhooks: Option<Arc<Webhooks>>,
    live: broadcast::Sender<Alert>,
    due: mpsc::UnboundedSender<Due>,
    due_rx: Mutex<Option<mpsc::UnboundedReceiver<Due>>>,
}

impl Default for Alerts {
    fn default() -> Alerts {
        Alerts::new(Policy::default(), Arc::new(WallClock), None)
    }
}

impl Alerts {
    pub fn new(policy: Policy, clock: Arc<dyn Clock>, webhooks: Option<Arc<Webhooks>>) -> Alerts {
        let (due, due_rx) = mpsc::unbounded_channel();
        Alerts {
            policy,
            clock,
            webhooks,
            live: broadcast::channel(256).0,
            due,
            due_rx: Mutex::new(Some(due_rx)),
        }
    }

    /// The alerts of a committed visit under this kiosk's policy.
    pub fn for_visit(
        &self,
        visit: &VisitView,
        repeat: bool,
        source: &str,
        at: Timestamp,
    ) -> Vec<Alert> {
        Alert::for_visit(visit, repeat, source, at, self.policy.manager.as_deref())
    }

    /// Every alert as it is stored, for in-process listeners.
    pub fn live(&self) -> broadcast::Receiver<Alert> {
        self.live.subscribe()
    }

    /// Stores the alerts of a visit just recorded (with their webhook rows) in the visit's
    /// own transaction, so that a crash cannot keep the visit and lose who was told of it.
    /// They are announced ([`Alerts::announce`]) once that transaction commits.
    pub(crate) fn store_for_visit(
        &self,
        conn: &Connection,
        visit: &VisitView,
        source: &str,
        at: Timestamp,
    ) -> rusqlite::Result<Raised> {
        let alerts = self.for_visit(visit, false, source, at);
        if alerts.is_empty() {
            return Ok(Raised::default());
        }
        let created_at = self.clock.now();
        store_alerts(conn, &alerts, created_at, self.webhooks.as_deref())?;
        Ok(Raised { created_at, alerts })
    }

    /// Sends committed alerts live, hands the welcomes to the escalation task and wakes
    /// the webhook sender. Only after the commit: an acknowledgement always finds the
    /// alert, and no alert is heard of a visit that was rolled back.
    pub fn announce(&self, raised: Raised) {
        if raised.alerts.is_empty() {
            return;
        }
        if let Some(hooks) = &self.webhooks {
            hooks.wake();
        }
        for alert in raised.alerts {
            if alert.reason == Reason::Welcome {
                // No escalation task (in tests) is fine.
                let _ = self.due.send(Due {
                    id: alert.id,
                    created_at: raised.created_at,
                });
            }
            // No listener is fine: the alert waits in the table for a reconnect.
            let _ = self.live.send(alert);
        }
    }

    /// Stores `alerts` in a group of their own and then announces them, without waiting:
    /// the paused-clock tests raise alerts this way, with no visit around them.
    #[cfg(test)]
    pub(crate) fn raise(self: &Arc<Self>, writer: &Writer, alerts: Vec<Alert>) {
        let created_at = self.clock.now();
        let (rows, hooks) = (alerts.clone(), self.webhooks.clone());
        let store = move |store: &mut Store| {
            Ok(store_alerts(
                store.conn_mut(),
                &rows,
                created_at,
                hooks.as_deref(),
            )?)
        };
        let me = Arc::clone(self);
        let then = move |stored: Result<(), StoreError>| {
            stored.expect("alerts stored");
            me.announce(Raised { created_at, alerts });
        };
        writer.submit_grouped(store, then).expect("writer");
    }

    /// `consultant`'s unacknowledged alerts of the last [`REPLAY_WINDOW`], oldest first,
    /// and the live channel from just before them (a handheld may see an alert in both:
    /// drop the live copy).
    pub async fn subscribe(
        &self,
        db: &ReadDb,
        consultant: &str,
    ) -> Result<(Vec<Alert>, broadcast::Receiver<Alert>), StoreError> {
        // Subscribed first: an alert stored after the read below is sent live after it.
        let rx = self.live.subscribe();
        let since = self.clock.now() - REPLAY_WINDOW;
        let consultant = consultant.to_owned();
        let replay = db.with(move |c| unacked_of(c, &consultant, since)).await?;
        Ok((replay, rx))
    }

    /// Acknowledges alert `id` for `device`: committed before it answers.
    pub async fn ack(
        &self,
        writer: &Writer,
        id: Uuid,
        device: &DeviceAuth,
    ) -> Result<Result<Timestamp, AckRefusal>, StoreError> {
        let now = self.clock.now();
        let device = device.clone();
        writer
            .call_grouped(move |store| Ok(ack_in(store.conn_mut(), id, &device, now)?))
            .await
    }

    /// Alerts nobody acknowledged, the latest first, at most `limit`.
    pub async fn awaiting(&self, db: &ReadDb, limit: u32) -> Result<Vec<ListedAlert>, StoreError> {
        db.with(move |c| {
            c.prepare_cached(
                "SELECT body, created_at, escalated_at FROM alerts WHERE acked_at IS NULL
                 ORDER BY created_at DESC, id DESC LIMIT ?1",
            )?
            .query_map([limit], |r| {
                let escalated: Option<String> = r.get(2)?;
                Ok(ListedAlert {
                    alert: alert_at(r, 0)?,
                    created_at: time_at(r, 1)?,
                    escalated_at: escalated
                        .map(|t| t.parse().map_err(|e| conversion(2, e)))
                        .transpose()?,
                })
            })?
            .collect()
        })
        .await
    }

    /// The `escalation` task: waits on a timer for the earliest due welcome alert and
    /// escalates it unless acknowledged. On start it takes every stored welcome alert
    /// neither acknowledged nor escalated (overdue ones escalate at once), then those
    /// [`Alerts::raise`] hands over. Runs until `stop`; only a stopped writer ends it early.
    pub async fn run_escalation(
        self: Arc<Self>,
        writer: Writer,
        db: ReadDb,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut incoming = self
            .due_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .context("the escalation task was started twice")?;
        let after = self.policy.escalate_after;
        let due_at =
            |created_at: Timestamp| created_at.saturating_add(after).unwrap_or(Timestamp::MAX);
        // Older ones are stale (`reception::escalation`): after a night off, yesterday's
        // unacknowledged welcomes must not send anyone to the door or take turns.
        let since = self
            .clock
            .now()
            .checked_sub(SignedDuration::try_from(after).unwrap_or(SignedDuration::MAX))
            .and_then(|t| t.checked_sub(reception::CURRENT_FOR))
            .unwrap_or(Timestamp::MIN);
        let mut queue: BinaryHeap<Reverse<(Timestamp, Uuid)>> = db
            .with(move |c| awaiting_escalation(c, since))
            .await
            .context("cannot read the unacknowledged alerts to escalate")?
            .into_iter()
            .map(|(id, created_at)| Reverse((due_at(created_at), id)))
            .collect();
        if !queue.is_empty() {
            tracing::info!(
                alerts = queue.len(),
                "unacknowledged alerts picked up for escalation"
            );
        }
        loop {
            while let Ok(d) = incoming.try_recv() {
                queue.push(Reverse((due_at(d.created_at), d.id)));
            }
            let now = self.clock.now();
            let due_now = queue.peek().is_some_and(|Reverse((due, _))| *due <= now);
            if let Some(Reverse((_, id))) = due_now.then(|| queue.pop()).flatten() {
                let (policy, hooks) = (self.policy.clone(), self.webhooks.clone());
                let step = writer
                    .call_grouped(move |store| {
                        escalate_in(store.conn_mut(), id, now, &policy, hooks.as_deref())
                    })
                    .await;
                match step {
                    Ok(Escalated::Done) => {}
                    Ok(Escalated::Stale) => {
                        tracing::info!(alert = %id, "an unacknowledged alert is too old to escalate (the kiosk was stopped); nobody else was told");
                    }
                    Ok(Escalated::Wait(until)) => queue.push(Reverse((until, id))),
                    Ok(Escalated::Raised { from, alerts }) => {
                        if alerts.is_empty() {
                            tracing::warn!(alert = %id, from = %from, "an alert went unacknowledged, but nobody is free and no reception.manager is set; nobody else was told");
                        } else {
                            let to: Vec<&str> =
                                alerts.iter().map(|a| a.consultant_id.as_str()).collect();
                            tracing::info!(alert = %id, from = %from, ?to, "an unacknowledged alert escalated");
                        }
                        if let Some(hooks) = &self.webhooks {
                            hooks.wake();
                        }
                        for alert in alerts {
                            let _ = self.live.send(alert);
                        }
                    }
                    Err(StoreError::WriterGone) => {
                        anyhow::bail!("the store's writer thread has stopped")
                    }
                    Err(e) => {
                        tracing::warn!(alert = %id, error = %e, "could not escalate an alert; trying again");
                        let retry = now
                            .saturating_add(ESCALATION_RETRY)
                            .unwrap_or(Timestamp::MAX);
                        queue.push(Reverse((retry, id)));
                    }
                }
                continue;
            }
            // The timer is re-armed from the clock each round: a clock that moved is
            // caught by `reception::escalation` answering Wait.
            let wait = queue
                .peek()
                .map(|Reverse((due, _))| now.duration_until(*due).unsigned_abs());
            let timer = async {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                d = incoming.recv() => {
                    if let Some(d) = d {
                        queue.push(Reverse((due_at(d.created_at), d.id)));
                    }
                }
                () = timer => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Over HTTP

/// A device may follow and acknowledge `consultant`'s alerts if it is theirs or a staff device.
fn may_act_for(device: &DeviceAuth, consultant: &str) -> Result<(), ApiError> {
    match device.refuses(consultant) {
        Some(why) => Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", why)),
        None => Ok(()),
    }
}

fn to_sse(alert: &Alert) -> Event {
    Event::default()
        .event("alert")
        .data(serde_json::to_string(alert).unwrap_or_else(|_| "{}".into()))
        .retry(Duration::from_secs(2))
}

/// A consultant's alerts, live.
#[utoipa::path(get, path = "/api/v1/consultants/{id}/events", tag = "alerts",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The consultant's roster id")),
    description = "Server-sent events `alert` with data `{\"id\",\"visit_id\",\"consultant_id\",\"customer\",\"tier\",\"kind\",\"source\",\"at\",\"reason\",\"receiver\",\"escalated_from\"}` \
(`customer` masked as on the screen, e.g. 张先生), one per alert to this consultant: `reason` is `welcome` (they receive the visitor), \
`owner` (a stand-in received their customer), `manager` (a gold member), `unassigned` (nobody received the visitor) or `escalation` \
(nobody acknowledged a welcome in time). The consultant's unacknowledged alerts of the last 10 minutes come first, so a handheld that reconnects, \
or a kiosk that restarted, misses none. The stream stays open.",
    responses(
        (status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String),
        (status = 401, description = "No token, an unknown one or a revoked one", body = ErrorBody),
        (status = 403, description = "A handheld of another consultant, or one bound to nobody", body = ErrorBody),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
pub(crate) async fn consultant_events(
    State(s): State<ApiState>,
    Path(consultant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let device = match handheld::authenticate(&s, &headers).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    if let Err(e) = may_act_for(&device, &consultant) {
        return e.into_response();
    }
    let (replay, rx) = match s.alerts.subscribe(&s.db, &consultant).await {
        Ok(subscribed) => subscribed,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let replayed: HashSet<Uuid> = replay.iter().map(|a| a.id).collect();
    let live = BroadcastStream::new(rx).filter_map(move |item| {
        let keep = item
            .ok()
            .filter(|a| a.consultant_id == consultant && !replayed.contains(&a.id));
        async move { keep }
    });
    let stream = stream::iter(replay)
        .chain(live)
        .map(|a| Ok::<_, Infallible>(to_sse(&a)))
        .take_until(s.shutdown.clone().cancelled_owned());
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The answer to an acknowledgement.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AckAnswer {
    id: Uuid,
    /// The first acknowledgement's time.
    #[schema(value_type = String, format = DateTime)]
    acked_at: Timestamp,
}

/// Acknowledges an alert: someone is on their way. A welcome acknowledged in time does not escalate.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/ack", tag = "alerts",
    security(("bearerAuth" = [])),
    params(("id" = Uuid, Path, description = "The alert's id")),
    responses(
        (status = 200, description = "Acknowledged, now or before (the first time is kept)", body = AckAnswer),
        (status = 401, description = "No token, an unknown one or a revoked one", body = ErrorBody),
        (status = 403, description = "The alert is for a consultant this handheld may not act for (another one's, or it is bound to nobody)", body = ErrorBody),
        (status = 404, description = "No such alert", body = ErrorBody),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
pub(crate) async fn ack(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let device = match handheld::authenticate(&s, &headers).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_alert",
            format!(
                "no alert with id {id:?}; use the id of an alert from the consultant's event stream"
            ),
        )
        .into_response()
    };
    let Ok(uuid) = id.parse::<Uuid>() else {
        return not_found();
    };
    match s.alerts.ack(&s.writer, uuid, &device).await {
        Ok(Ok(acked_at)) => Json(AckAnswer { id: uuid, acked_at }).into_response(),
        Ok(Err(AckRefusal::Unknown)) => not_found(),
        Ok(Err(AckRefusal::NotYours(why))) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("alert {uuid}: {why}"),
        )
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Which alerts `GET /api/v1/alerts` lists.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AlertState {
    /// Not acknowledged yet (escalated or not).
    Unacked,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AlertsQuery {
    /// `unacked`, the default and the only state so far: alerts nobody acknowledged.
    #[param(inline)]
    state: Option<AlertState>,
    /// How many alerts at most, the latest first; 100 by default.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// An alert as staff see it in a list: the alert and its state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListedAlert {
    #[serde(flatten)]
    pub alert: Alert,
    /// When the kiosk made the alert (escalation counts from here).
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When a welcome nobody acknowledged was escalated; null otherwise.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub escalated_at: Option<Timestamp>,
}

/// Alerts awaiting acknowledgement.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AlertList {
    alerts: Vec<ListedAlert>,
}

/// Alerts nobody has acknowledged yet, the latest first, for the staff console.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", params(AlertsQuery),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Unacknowledged alerts, the latest first", body = AlertList),
        (status = 400, description = "A parameter is malformed, out of range or unknown", body = ErrorBody),
        (status = 401, description = "No token, an unknown one or a revoked one", body = ErrorBody),
        (status = 403, description = "A handheld's token: this needs a staff device", body = ErrorBody),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
pub(crate) async fn list_alerts(
    State(s): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<AlertsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(refused) = handheld::authenticate_staff(&s, &headers).await {
        return refused;
    }
    let bad = |message: String| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message).into_response()
    };
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return bad(format!(
                "{e}; the parameters are state=unacked and limit=1..{LIST_MAX_LIMIT}"
            ));
        }
    };
    let AlertState::Unacked = q.state.unwrap_or(AlertState::Unacked);
    let limit = q.limit.unwrap_or(LIST_DEFAULT_LIMIT);
    if !(1..=LIST_MAX_LIMIT).contains(&limit) {
        return bad(format!(
            "limit {limit} is out of range; use 1 to {LIST_MAX_LIMIT}"
        ));
    }
    match s.alerts.awaiting(&s.db, limit).await {
        Ok(alerts) => Json(AlertList { alerts }).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests;
