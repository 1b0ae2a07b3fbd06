//! Alerts to consultants' handhelds: one per new welcome whose customer has a consultant, kept in memory (the latest [`CAPACITY`]), streamed on `GET /api/v1/consultants/{id}/events` and acknowledged with `POST /api/v1/alerts/{id}/ack`. Served by the kiosk on the LAN, so they work while the internet is down. Not yet persistent and not yet escalated.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Mutex, PoisonError};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::{ApiError, ApiState, ErrorBody};
use crate::devices::DeviceAuth;
use crate::handheld;
use crate::store::VisitView;

/// How many alerts are kept; the oldest go first.
pub const CAPACITY: usize = 1_000;
/// Unacknowledged alerts this recent are sent first to a handheld that connects.
pub const REPLAY_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_secs(10 * 60);

/// An alert as a handheld receives it: masked like the screen, never a phone or full name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Alert {
    /// A UUIDv7 made by the kiosk.
    pub id: Uuid,
    pub visit_id: Uuid,
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
    pub at: jiff::Timestamp,
}

impl Alert {
    /// The alert for a committed visit: only a new welcome of a customer with a consultant.
    pub fn for_visit(
        visit: &VisitView,
        repeat: bool,
        source: &str,
        at: jiff::Timestamp,
    ) -> Option<Alert> {
        if repeat || visit.outcome != "welcome" {
            return None;
        }
        let customer = visit.customer.as_ref()?;
        let consultant = visit.consultant.as_ref()?;
        Some(Alert {
            id: Uuid::now_v7(),
            visit_id: visit.id,
            consultant_id: consultant.id.clone(),
            customer: format!("{}{}", customer.surname, customer.title.zh()),
            tier: customer.tier.as_str().to_owned(),
            kind: visit.kind.clone().unwrap_or_default(),
            source: source.to_owned(),
            at,
        })
    }
}

#[derive(Debug)]
struct Entry {
    alert: Alert,
    /// When the kiosk made it: the replay window counts from here, not from the
    /// visit's time, which a handheld may give from earlier.
    made_at: jiff::Timestamp,
    acked_at: Option<jiff::Timestamp>,
}

/// The latest alerts, bounded, with their acknowledgements. No I/O.
#[derive(Debug)]
pub struct AlertStore {
    capacity: usize,
    entries: HashMap<Uuid, Entry>,
    /// Ids oldest first, for eviction.
    order: VecDeque<Uuid>,
}

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckRefusal {
    /// No such alert, or so old it was dropped.
    Unknown,
    /// The alert is for another consultant than the device's.
    NotYours { consultant_id: String },
}

impl AlertStore {
    pub fn new(capacity: usize) -> AlertStore {
        AlertStore {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, id: Uuid) -> Option<&Alert> {
        self.entries.get(&id).map(|e| &e.alert)
    }

    /// Keeps `alert`, dropping the oldest beyond the capacity.
    pub fn insert(&mut self, alert: Alert, now: jiff::Timestamp) {
        let id = alert.id;
        if self
            .entries
            .insert(
                id,
                Entry {
                    alert,
                    made_at: now,
                    acked_at: None,
                },
            )
            .is_none()
        {
            self.order.push_back(id);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }

    /// Acknowledges alert `id` for a device acting for `consultant` (`None`: a desk
    /// device, which may acknowledge any). A second acknowledgement answers the first's time.
    pub fn ack(
        &mut self,
        id: Uuid,
        consultant: Option<&str>,
        now: jiff::Timestamp,
    ) -> Result<jiff::Timestamp, AckRefusal> {
        let entry = self.entries.get_mut(&id).ok_or(AckRefusal::Unknown)?;
        if consultant.is_some_and(|own| own != entry.alert.consultant_id) {
            return Err(AckRefusal::NotYours {
                consultant_id: entry.alert.consultant_id.clone(),
            });
        }
        Ok(*entry.acked_at.get_or_insert(now))
    }

    /// `consultant`'s unacknowledged alerts made within [`REPLAY_WINDOW`] before `now`, oldest first.
    pub fn unacked(&self, consultant: &str, now: jiff::Timestamp) -> Vec<Alert> {
        let since = now - REPLAY_WINDOW;
        self.order
            .iter()
            .filter_map(|id| self.entries.get(id))
            .filter(|e| {
                e.acked_at.is_none() && e.made_at >= since && e.alert.consultant_id == consultant
            })
            .map(|e| e.alert.clone())
            .collect()
    }
}

/// The store and the live channel of alerts, separate from the public screen's events.
#[derive(Debug)]
pub struct Alerts {
    store: Mutex<AlertStore>,
    live: broadcast::Sender<Alert>,
}

impl Default for Alerts {
    fn default() -> Alerts {
        Alerts::new(CAPACITY)
    }
}

impl Alerts {
    pub fn new(capacity: usize) -> Alerts {
        Alerts {
            store: Mutex::new(AlertStore::new(capacity)),
            live: broadcast::channel(256).0,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut AlertStore) -> R) -> R {
        f(&mut self.store.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Keeps and sends `alert`. Under the store's lock, so a handheld connecting at the
    /// same moment gets it either in its replay or live, exactly once.
    pub fn raise(&self, alert: Alert) {
        self.with(|store| {
            store.insert(alert.clone(), jiff::Timestamp::now());
            // No listener is fine: the alert waits for a reconnect.
            let _ = self.live.send(alert);
        });
    }

    /// `consultant`'s unacknowledged recent alerts, and the live channel from just after them.
    pub fn subscribe(
        &self,
        consultant: &str,
        now: jiff::Timestamp,
    ) -> (Vec<Alert>, broadcast::Receiver<Alert>) {
        self.with(|store| (store.unacked(consultant, now), self.live.subscribe()))
    }

    pub fn ack(
        &self,
        id: Uuid,
        consultant: Option<&str>,
        now: jiff::Timestamp,
    ) -> Result<jiff::Timestamp, AckRefusal> {
        self.with(|store| store.ack(id, consultant, now))
    }
}

/// A device may follow and acknowledge `consultant`'s alerts if it is bound to them or to no one.
fn may_act_for(device: &DeviceAuth, consultant: &str) -> Result<(), ApiError> {
    match &device.consultant_id {
        Some(own) if own != consultant => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "device {} belongs to consultant {own} and receives only their alerts, not {consultant}'s",
                device.name
            ),
        )),
        _ => Ok(()),
    }
}

fn to_sse(alert: &Alert) -> Event {
    Event::default()
        .event("alert")
        .data(serde_json::to_string(alert).unwrap_or_else(|_| "{}".into()))
        .retry(std::time::Duration::from_secs(2))
}

/// A consultant's alerts, live.
#[utoipa::path(get, path = "/api/v1/consultants/{id}/events", tag = "alerts",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The consultant's roster id")),
    description = "Server-sent events `alert` with data `{\"id\",\"visit_id\",\"consultant_id\",\"customer\",\"tier\",\"kind\",\"source\",\"at\"}` \
(`customer` masked as on the screen, e.g. 张先生), one per new welcome of a customer of this consultant. \
The consultant's unacknowledged alerts of the last 10 minutes come first, so a handheld that reconnects misses none. The stream stays open.",
    responses(
        (status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String),
        (status = 401, description = "No token, an unknown one or a revoked one", body = ErrorBody),
        (status = 403, description = "The device belongs to another consultant", body = ErrorBody),
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
    let (replay, rx) = s.alerts.subscribe(&consultant, jiff::Timestamp::now());
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
    acked_at: jiff::Timestamp,
}

/// Acknowledges an alert: someone is on their way.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/ack", tag = "alerts",
    security(("bearerAuth" = [])),
    params(("id" = Uuid, Path, description = "The alert's id")),
    responses(
        (status = 200, description = "Acknowledged, now or before (the first time is kept)", body = AckAnswer),
        (status = 401, description = "No token, an unknown one or a revoked one", body = ErrorBody),
        (status = 403, description = "The alert is for another consultant than the device's", body = ErrorBody),
        (status = 404, description = "No such alert (or one so old it was dropped)", body = ErrorBody),
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
            format!("no alert with id {id:?}; it may be older than the latest {CAPACITY} alerts"),
        )
        .into_response()
    };
    let Ok(uuid) = id.parse::<Uuid>() else {
        return not_found();
    };
    match s.alerts.ack(
        uuid,
        device.consultant_id.as_deref(),
        jiff::Timestamp::now(),
    ) {
        Ok(acked_at) => Json(AckAnswer { id: uuid, acked_at }).into_response(),
        Err(AckRefusal::Unknown) => not_found(),
        Err(AckRefusal::NotYours { consultant_id }) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "alert {uuid} is for consultant {consultant_id}; device {} may acknowledge only its own consultant's",
                device.name
            ),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(consultant: &str) -> Alert {
        Alert {
            id: Uuid::now_v7(),
            visit_id: Uuid::now_v7(),
            consultant_id: consultant.into(),
            customer: "张先生".into(),
            tier: "gold".into(),
            kind: "revisit".into(),
            source: "handheld:pda".into(),
            at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    fn t(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + secs).expect("time")
    }

    #[test]
    fn alerts_store_keeps_only_the_latest() {
        let mut store = AlertStore::new(3);
        let alerts: Vec<Alert> = (0..5).map(|_| alert("E01")).collect();
        for (i, a) in alerts.iter().enumerate() {
            store.insert(a.clone(), t(i as i64));
        }
        assert_eq!(store.len(), 3);
        assert!(store.get(alerts[0].id).is_none());
        assert!(store.get(alerts[1].id).is_none());
        assert_eq!(store.get(alerts[4].id), Some(&alerts[4]));
        assert_eq!(
            store.unacked("E01", t(5)),
            alerts[2..].to_vec(),
            "oldest first"
        );
        // A dropped alert cannot be acknowledged.
        assert_eq!(
            store.ack(alerts[0].id, None, t(6)),
            Err(AckRefusal::Unknown)
        );
    }

    #[test]
    fn alerts_ack_is_idempotent_and_only_for_the_own_consultant() {
        let mut store = AlertStore::new(10);
        let a = alert("E01");
        store.insert(a.clone(), t(0));
        assert_eq!(
            store.ack(a.id, Some("E02"), t(1)),
            Err(AckRefusal::NotYours {
                consultant_id: "E01".into()
            })
        );
        assert_eq!(store.ack(a.id, Some("E01"), t(2)), Ok(t(2)));
        // Again, by the owner or a desk device: the first time stands.
        assert_eq!(store.ack(a.id, Some("E01"), t(3)), Ok(t(2)));
        assert_eq!(store.ack(a.id, None, t(4)), Ok(t(2)));
        assert_eq!(
            store.ack(Uuid::now_v7(), None, t(5)),
            Err(AckRefusal::Unknown)
        );
    }

    #[test]
    fn alerts_replay_unacked_recent_of_the_consultant_only() {
        let mut store = AlertStore::new(10);
        let old = alert("E01");
        let acked = alert("E01");
        let other = alert("E02");
        let fresh = alert("E01");
        store.insert(old.clone(), t(0));
        store.insert(acked.clone(), t(100));
        store.insert(other.clone(), t(100));
        store.insert(fresh.clone(), t(200));
        store.ack(acked.id, None, t(150)).expect("ack");
        // At 10 min past the first: it is still in the window, just.
        assert_eq!(
            store.unacked("E01", t(600)),
            vec![old.clone(), fresh.clone()]
        );
        assert_eq!(store.unacked("E01", t(601)), vec![fresh.clone()]);
        assert_eq!(store.unacked("E02", t(601)), vec![other]);
        assert!(store.unacked("E03", t(601)).is_empty());
    }

    #[tokio::test]
    async fn alerts_subscribe_replays_then_goes_live() {
        let alerts = Alerts::new(10);
        let first = alert("E01");
        alerts.raise(first.clone());
        let (replay, mut rx) = alerts.subscribe("E01", jiff::Timestamp::now());
        assert_eq!(replay, vec![first.clone()]);
        let second = alert("E01");
        alerts.raise(second.clone());
        assert_eq!(rx.recv().await.expect("live"), second);
        alerts
            .ack(first.id, Some("E01"), jiff::Timestamp::now())
            .expect("ack");
        let (replay, _rx) = alerts.subscribe("E01", jiff::Timestamp::now());
        assert_eq!(replay, vec![second]);
    }
}
