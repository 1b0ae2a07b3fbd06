//! The kiosk's HTTP face: screen page, SSE events, visits, status, health; the JSON types it speaks.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use kiosk_device::{ReaderKind, ReaderUpdate};

use crate::alerts::{self, Alerts};
use crate::cards;
use crate::handheld::{self, RateLimiter};
use crate::rotation;
use crate::store::{ReadDb, Recorded, StoreError, VisitView, Writer};
use crate::sync_side::SyncStatus;

/// Shared state of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub info: Arc<KioskInfo>,
    pub db: ReadDb,
    pub board: Board,
    pub events: broadcast::Sender<PublicEvent>,
    /// Ends SSE streams on shutdown so the server can drain.
    pub shutdown: CancellationToken,
    /// The sync client's live view, when `[sync]` is configured.
    pub sync: Option<kiosk_sync::client::SyncStatus>,
    /// Handheld posts are written by the same writer as taps.
    pub writer: Writer,
    /// Wakes the sync push loop after a commit, when `[sync]` is configured.
    pub sync_wake: Option<Arc<Notify>>,
    /// Per-device rate limit of handheld posts.
    pub limiter: Arc<RateLimiter>,
    /// Alerts to consultants' handhelds: kept in the store, sent on a channel of their own.
    pub alerts: Arc<Alerts>,
    /// `[[notify.webhook]]` receivers, when any are configured.
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
}

impl ApiState {
    /// What follows every committed visit, a tap at a reader or a handheld's post alike:
    /// the push loop may send it now, the screen greets, and the alerts stored with the
    /// visit (`alerts::recipients`) are sent to whoever must hear of it.
    pub fn visit_committed(
        &self,
        visit: &VisitView,
        repeat: bool,
        source: &str,
        at: jiff::Timestamp,
        alerts: alerts::Raised,
        read_at: Option<std::time::Instant>,
    ) -> Greeting {
        tracing::info!(
            source,
            outcome = %visit.outcome,
            seq = visit.seq,
            visit = %visit.id,
            repeat,
            "visit recorded"
        );
        if let Some(wake) = &self.sync_wake {
            wake.notify_one();
        }
        let mut greeting = Greeting::from_visit(visit, repeat, source, at);
        greeting.read_at = read_at;
        // No subscriber is fine: the screen may not be open.
        let _ = self.events.send(PublicEvent::Greeting(greeting.clone()));
        // Stored with the visit, in its transaction: sent now that it committed.
        self.alerts.announce(alerts);
        greeting
    }
}

/// Fixed facts about this kiosk, shown on the status page.
#[derive(Debug, Clone)]
pub struct KioskInfo {
    pub kiosk_id: String,
    pub office: String,
    pub office_name: String,
    pub time_zone: String,
    pub data_dir: PathBuf,
    /// Configured PC/SC reader patterns, to tell "no reader matches" apart from "no reader configured".
    pub reader_patterns: Vec<String>,
    /// `reception.privacy_notice_version`: the notice a walk-in consents to at card issuing.
    pub privacy_notice_version: String,
    /// `[screen]`: language, greeting time, logo.
    pub screen: crate::console::ScreenSettings,
}

/// Live reader and service state, updated by the reception loop.
#[derive(Debug, Clone, Default)]
pub struct Board {
    inner: Arc<Mutex<BoardInner>>,
}

#[derive(Debug, Default)]
struct BoardInner {
    readers: BTreeMap<String, ReaderStatus>,
    services: BTreeMap<&'static str, ServiceStatus>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReaderStatus {
    pub name: String,
    /// pcsc, serial or simulated.
    #[schema(value_type = String)]
    pub kind: &'static str,
    pub connected: bool,
    pub card_present: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_tap: Option<jiff::Timestamp>,
    /// Why it is not connected, and what to check.
    pub problem: Option<String>,
    /// Failed reopen attempts since it was last connected (serial readers).
    pub reopen_attempts: u32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServiceStatus {
    #[schema(value_type = String)]
    pub backend: &'static str,
    pub up: bool,
    pub detail: String,
}

impl Board {
    fn with<R>(&self, f: impl FnOnce(&mut BoardInner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn reader<'a>(inner: &'a mut BoardInner, name: &str) -> &'a mut ReaderStatus {
        inner
            .readers
            .entry(name.to_owned())
            .or_insert_with(|| ReaderStatus {
                name: name.to_owned(),
                kind: ReaderKind::Pcsc.as_str(),
                connected: false,
                card_present: false,
                last_tap: None,
                problem: None,
                reopen_attempts: 0,
            })
    }

    /// Lists a configured reader before its backend reports, so the status shows a
    /// serial reader that never opened.
    pub fn register(&self, name: &str, kind: ReaderKind) {
        self.with(|b| {
            let r = Board::reader(b, name);
            r.kind = kind.as_str();
            r.problem = Some("not opened yet".into());
        });
    }

    pub fn update(&self, u: &ReaderUpdate) -> ReaderStatus {
        self.with(|b| {
            let r = Board::reader(b, &u.reader);
            r.kind = u.kind.as_str();
            r.connected = u.connected;
            r.problem = u.problem.clone();
            r.reopen_attempts = u.reopen_attempts;
            if !u.connected {
                r.card_present = false;
            }
            r.clone()
        })
    }

    pub fn set_present(&self, name: &str, present: bool) -> ReaderStatus {
        self.with(|b| {
            let r = Board::reader(b, name);
            r.card_present = present;
            r.clone()
        })
    }

    pub fn tapped(&self, name: &str, at: jiff::Timestamp) {
        self.with(|b| Board::reader(b, name).last_tap = Some(at));
    }

    pub fn set_service(&self, backend: &'static str, up: bool, detail: String) {
        self.with(|b| {
            b.services.insert(
                backend,
                ServiceStatus {
                    backend,
                    up,
                    detail,
                },
            );
        });
    }

    pub fn readers(&self) -> Vec<ReaderStatus> {
        self.with(|b| b.readers.values().cloned().collect())
    }

    fn services(&self) -> Vec<ServiceStatus> {
        self.with(|b| b.services.values().cloned().collect())
    }
}

/// What the public screen may know. No customer id, no card token, no full name, no phone.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(
    clippy::large_enum_variant,
    reason = "a few events a minute; boxing would allocate each of them for nothing"
)]
pub enum PublicEvent {
    Greeting(Greeting),
    Reader(PublicReader),
}

impl PublicEvent {
    fn name(&self) -> &'static str {
        match self {
            PublicEvent::Greeting(_) => "greeting",
            PublicEvent::Reader(_) => "reader",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PublicReader {
    pub reader: String,
    pub connected: bool,
    pub card_present: bool,
}

impl From<ReaderStatus> for PublicReader {
    fn from(r: ReaderStatus) -> PublicReader {
        PublicReader {
            reader: r.name,
            connected: r.connected,
            card_present: r.card_present,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Greeting {
    pub visit_id: Option<Uuid>,
    /// welcome, broker_confirmed (a broker's code matched the customer's registration),
    /// unknown, denied, or error when the tap could not be stored.
    pub outcome: String,
    /// Why a tap was denied: a card's (`card_revoked`, …) or a broker code's refusal
    /// (`unknown_registration`, `registration_expired`, `other_broker`,
    /// `malformed_broker_code`, `unknown_customer`).
    pub reason: Option<String>,
    /// first or revisit, for a counted visit.
    pub visit_kind: Option<String>,
    /// True when the customer's visit of the day was already recorded.
    pub repeat: bool,
    pub member: Option<MaskedMember>,
    /// The display name of the consultant who receives the visitor (the owner, a
    /// stand-in, or the rotation's turn); none when nobody on duty is free. Staff names
    /// are not personal data of the visitor.
    pub consultant: Option<String>,
    /// The consultant stands in for the customer's own consultant, who is away.
    pub stand_in: bool,
    pub reader: String,
    pub at: jiff::Timestamp,
    /// When a card reader read the UID this greeting answers (taps only): each event
    /// stream logs how long after it the greeting was written, the daemon's share of a tap.
    #[serde(skip)]
    pub read_at: Option<std::time::Instant>,
}

/// Surname plus title, the only way the screen names anyone.
#[derive(Debug, Clone, Serialize)]
pub struct MaskedMember {
    pub name_zh: String,
    pub name_en: String,
    pub tier: &'static str,
}

impl Greeting {
    pub fn from_recorded(rec: &Recorded, reader: &str, at: jiff::Timestamp) -> Greeting {
        let repeat = matches!(rec.decision, crate::rules::Decision::Repeat);
        Greeting::from_visit(&rec.visit, repeat, reader, at)
    }

    /// The greeting for a stored visit; `repeat` when it is the day's earlier visit.
    pub fn from_visit(v: &VisitView, repeat: bool, reader: &str, at: jiff::Timestamp) -> Greeting {
        Greeting {
            visit_id: Some(v.id),
            outcome: v.outcome.clone(),
            reason: v.reason.clone(),
            visit_kind: v.kind.clone(),
            repeat,
            member: v.customer.as_ref().map(|c| MaskedMember {
                name_zh: format!("{}{}", c.surname, c.title.zh()),
                name_en: format!("{} {}", c.title.en(), c.surname),
                tier: c.tier.as_str(),
            }),
            consultant: v.consultant.as_ref().map(|k| k.name.clone()),
            stand_in: v.consultant.is_some() && v.stand_in_for.is_some(),
            reader: reader.to_owned(),
            at,
            read_at: None,
        }
    }

    /// Shown when a tap could not be stored: the visitor is sent to reception.
    pub fn store_failed(reader: &str, at: jiff::Timestamp) -> Greeting {
        Greeting {
            visit_id: None,
            outcome: "error".into(),
            reason: Some("not_recorded".into()),
            visit_kind: None,
            repeat: false,
            member: None,
            consultant: None,
            stand_in: false,
            reader: reader.to_owned(),
            at,
            read_at: None,
        }
    }
}

/// Errors as `{"error":{"code","message"}}`; internals are logged once, never sent.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: String) -> ApiError {
        ApiError {
            status,
            code,
            message,
        }
    }

    fn bad_request(message: String) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "store error while answering a request");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "store_unavailable",
            message: "the kiosk's database is not available; see the kiosk's log".into(),
        }
    }
}

/// The body of every error answer: typed, so the OpenAPI document shows what is sent.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable and machine-readable, e.g. `bad_request`, `unauthorized`, `rate_limited`.
    #[schema(value_type = String)]
    code: &'static str,
    /// For people: what is wrong and what to do.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Every route of [`router`] as (path, method). axum cannot list a router's routes, so
/// this one list is what both the OpenAPI document and a test calling each route on a
/// real router are checked against: a route added in one place only fails a test.
pub const ROUTES: &[(&str, &str)] = &[
    ("/", "get"),
    ("/healthz", "get"),
    ("/api/v1/events", "get"),
    ("/api/v1/visits", "get"),
    ("/api/v1/visits", "post"),
    ("/api/v1/rotation", "get"),
    ("/api/v1/rotation/check-in", "post"),
    ("/api/v1/rotation/check-out", "post"),
    ("/api/v1/rotation/free", "post"),
    ("/api/v1/rotation/reorder", "post"),
    ("/api/v1/consultants/{id}/events", "get"),
    ("/api/v1/alerts", "get"),
    ("/api/v1/alerts/{id}/ack", "post"),
    ("/api/v1/cards/unbound", "get"),
    ("/api/v1/cards/bind", "post"),
    ("/api/v1/cards/revoke", "post"),
    ("/api/v1/cards/changes", "get"),
    ("/api/v1/status", "get"),
    ("/metrics", "get"),
    ("/api/v1/openapi.json", "get"),
    // The console's (console.rs); its `/assets/{file}` are static files, left out.
    ("/console", "get"),
    ("/api/v1/screen", "get"),
    ("/api/v1/stats", "get"),
    ("/api/v1/visits.csv", "get"),
    ("/api/v1/consultants", "get"),
    ("/api/v1/system", "get"),
];

/// Builds the router; serving it is the caller's business, so tests can drive it directly.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(screen))
        .route("/healthz", get(healthz))
        .route("/api/v1/events", get(events))
        .route(
            "/api/v1/visits",
            get(visits)
                .post(handheld::post_visit)
                .layer(DefaultBodyLimit::max(handheld::BODY_LIMIT)),
        )
        .route("/api/v1/rotation", get(rotation::get_rotation))
        .route(
            "/api/v1/rotation/check-in",
            rotation_post(rotation::check_in),
        )
        .route(
            "/api/v1/rotation/check-out",
            rotation_post(rotation::check_out),
        )
        .route("/api/v1/rotation/free", rotation_post(rotation::free))
        .route("/api/v1/rotation/reorder", rotation_post(rotation::reorder))
        .route(
            "/api/v1/consultants/{id}/events",
            get(alerts::consultant_events),
        )
        .route("/api/v1/alerts", get(alerts::list_alerts))
        .route("/api/v1/alerts/{id}/ack", post(alerts::ack))
        .route("/api/v1/cards/unbound", get(cards::unbound))
        .route(
            "/api/v1/cards/bind",
            post(cards::bind).layer(DefaultBodyLimit::max(cards::BODY_LIMIT)),
        )
        .route(
            "/api/v1/cards/revoke",
            post(cards::revoke).layer(DefaultBodyLimit::max(cards::BODY_LIMIT)),
        )
        .route("/api/v1/cards/changes", get(cards::changes))
        .route("/api/v1/status", get(status))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/openapi.json", get(crate::openapi::serve))
        .merge(crate::console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A rotation change: a POST with the handhelds' body limit.
fn rotation_post<H, T>(handler: H) -> MethodRouter<ApiState>
where
    H: Handler<T, ApiState>,
    T: 'static,
{
    post(handler).layer(DefaultBodyLimit::max(handheld::BODY_LIMIT))
}

/// The kiosk screen (HTML), shown full-screen on the kiosk.
#[utoipa::path(get, path = "/", tag = "screen",
    responses((status = 200, description = "The kiosk screen's page", content_type = "text/html", body = String)))]
async fn screen() -> Response {
    crate::console::page("screen.html")
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: "no such endpoint; see the README's HTTP section".into(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: "this endpoint does not take that method; see the README's HTTP section".into(),
    }
}

/// `{"status": "ok"}` while the kiosk's database answers.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    #[schema(value_type = String, pattern = "^ok$")]
    status: &'static str,
}

/// Liveness for a supervisor: the process answers and its database is readable.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "Up", body = Health),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
async fn healthz(State(s): State<ApiState>) -> Result<Json<Health>, ApiError> {
    s.db.counts().await?;
    Ok(Json(Health { status: "ok" }))
}

/// Public, masked event stream for the screen. Opens with the readers' state so a
/// page that reconnects never shows stale reader health.
#[utoipa::path(get, path = "/api/v1/events", tag = "screen",
    description = "Server-sent events for the screen, public and masked: no customer id, card or phone. \
Events `reader` (`{\"type\":\"reader\",\"reader\",\"connected\",\"card_present\"}`, the readers' state first) and \
`greeting` (`{\"type\":\"greeting\",\"visit_id\",\"outcome\",\"reason\",\"visit_kind\",\"repeat\",\"member\",\"consultant\",\"stand_in\",\"reader\",\"at\"}`). The stream stays open.",
    responses((status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String)))]
async fn events(State(s): State<ApiState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = BroadcastStream::new(s.events.subscribe());
    let snapshot: Vec<PublicEvent> = s
        .board
        .readers()
        .into_iter()
        .map(|r| PublicEvent::Reader(r.into()))
        .collect();
    let live = rx.filter_map(|item| async move { item.ok() });
    let stream = stream::iter(snapshot)
        .chain(live)
        .map(|ev| {
            let event = to_sse(&ev);
            // Measured here, as the encoded event goes to the connection (not when it
            // is broadcast), so the share includes the stream's own hop.
            if let PublicEvent::Greeting(Greeting {
                read_at: Some(read_at),
                reader,
                ..
            }) = &ev
            {
                tracing::debug!(
                    target: "kiosk::tap",
                    reader = %reader,
                    micros = read_at.elapsed().as_micros() as u64,
                    "tap: UID read to greeting written on an event stream"
                );
            }
            Ok(event)
        })
        .take_until(s.shutdown.clone().cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn to_sse(ev: &PublicEvent) -> Event {
    let data = serde_json::to_string(ev).unwrap_or_else(|_| "{}".into());
    Event::default()
        .event(ev.name())
        .data(data)
        .retry(std::time::Duration::from_secs(2))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct VisitsQuery {
    /// Office day, YYYY-MM-DD; today by default.
    #[param(format = Date)]
    day: Option<String>,
    /// How many visits at most, the latest first; 100 by default.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// A day's visits.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VisitList {
    #[schema(format = Date)]
    day: String,
    visits: Vec<VisitJson>,
}

/// A stored visit as staff see it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VisitJson {
    id: Uuid,
    /// Per kiosk, gap-free, from 1.
    #[schema(minimum = 1)]
    seq: u64,
    /// welcome, broker_confirmed, unknown or denied.
    outcome: String,
    /// Why it was denied (a code), e.g. card_revoked, other_broker.
    reason: Option<String>,
    /// For staff: the card's note, or a broker code's refusal in words.
    reason_detail: Option<String>,
    /// first or revisit for a counted visit; null for uncounted ones (unknown, denied, and
    /// a broker's confirmation after the customer's visit of the day).
    kind: Option<String>,
    customer_id: Option<String>,
    name_zh: Option<String>,
    #[schema(value_type = Option<String>)]
    tier: Option<&'static str>,
    /// Who received the visitor: the owner, a stand-in, or the rotation's turn (a broker's
    /// later confirmation: the day's receiver); null when nobody on duty was free, and for
    /// unknown and denied taps.
    consultant_id: Option<String>,
    consultant_name: Option<String>,
    /// The customer's own consultant, away (off duty) and told of the visit: the
    /// receiver stood in for them (义务接待), or nobody could receive.
    stand_in_for: Option<String>,
    /// The customer's protection had lapsed (公海): received by the rotation, and the hub
    /// may give them to another consultant.
    public_pool: bool,
    /// The broker of a broker code (确客), confirmed or refused.
    broker_id: Option<String>,
    source: String,
    method: String,
    card: Option<String>,
    #[schema(format = Date)]
    office_day: String,
    #[schema(format = DateTime)]
    device_time: String,
    #[schema(format = DateTime)]
    recorded_at: String,
}

impl From<VisitView> for VisitJson {
    fn from(v: VisitView) -> VisitJson {
        VisitJson {
            id: v.id,
            seq: v.seq,
            outcome: v.outcome,
            reason: v.reason,
            reason_detail: v.reason_detail,
            kind: v.kind,
            customer_id: v.customer.as_ref().map(|c| c.id.clone()),
            name_zh: v
                .customer
                .as_ref()
                .map(|c| format!("{}{}", c.surname, c.title.zh())),
            tier: v.customer.as_ref().map(|c| c.tier.as_str()),
            consultant_id: v.consultant.as_ref().map(|k| k.id.clone()),
            consultant_name: v.consultant.map(|k| k.name),
            stand_in_for: v.stand_in_for,
            public_pool: v.public_pool,
            broker_id: v.broker_id,
            source: v.source,
            method: v.method,
            card: v.card,
            office_day: v.office_day,
            device_time: v.device_time,
            recorded_at: v.recorded_at,
        }
    }
}

/// The visits of an office day, for staff: a staff device's token, or no token from the
/// kiosk itself.
#[utoipa::path(get, path = "/api/v1/visits", tag = "visits", params(VisitsQuery),
    responses(
        (status = 200, description = "The day's visits, the latest first", body = VisitList),
        (status = 400, description = "A parameter is malformed, out of range or unknown", body = ErrorBody),
        (status = 401, description = "A token was sent, but it is unknown or revoked", body = ErrorBody),
        (status = 403, description = "A handheld's token, or no token from another machine than the kiosk itself", body = ErrorBody),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
async fn visits(
    State(s): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<VisitsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    // Visits carry customer ids and card UIDs: a staff device, or the kiosk itself
    // (whatever kiosk.listen says).
    if headers.contains_key(header::AUTHORIZATION) {
        if let Err(refused) = crate::handheld::authenticate_staff(&s, &headers).await {
            return Ok(refused);
        }
    } else if !peer.ip().is_loopback() {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: "visits are for staff: send a staff device's token (`kiosk devices add NAME --staff`) as `Authorization: Bearer <token>`".into(),
        });
    }
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "{e}; the parameters are day=YYYY-MM-DD and limit=1..1000"
        ))
    })?;
    let day = match q.day {
        Some(d) => {
            let date: jiff::civil::Date = d.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "day {d:?} is not a date; write YYYY-MM-DD, e.g. 2026-11-23"
                ))
            })?;
            date.to_string()
        }
        None => s.db.today(),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is out of range; use 1 to 1000"
        )));
    }
    let list: Vec<VisitJson> =
        s.db.visits(day.clone(), limit)
            .await?
            .into_iter()
            .map(VisitJson::from)
            .collect();
    Ok(Json(VisitList { day, visits: list }).into_response())
}

/// Unsent visits older than this, with the hub unreachable, are a problem on the status page.
const UNREACHABLE_PROBLEM_AFTER_S: i64 = 600;
/// Failed attempts in a row, with the hub answering, before the status calls it a problem.
const REPEATED_FAILURES: u32 = 3;

/// Prometheus text: gauges read from the store at scrape time, counters kept by the
/// sync client as it works.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
async fn metrics_text(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let counts = s.db.counts().await?;
    metrics::gauge!("kiosk_visits_today").set(counts.visits_today as f64);
    metrics::gauge!("kiosk_outbox_backlog").set(counts.outbox_backlog as f64);
    metrics::gauge!("kiosk_roster_cards").set(counts.cards as f64);
    let sync_status = s.db.sync_status().await?;
    let now = jiff::Timestamp::now();
    metrics::gauge!("kiosk_outbox_oldest_unsent_age_seconds").set(
        sync_status
            .oldest_unsent_at
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64().max(0.0)),
    );
    metrics::gauge!("kiosk_quarantine_records").set(sync_status.quarantine_count as f64);
    for (name, at) in [
        (
            "kiosk_sync_last_push_timestamp_seconds",
            sync_status.last_push_at,
        ),
        (
            "kiosk_sync_last_pull_timestamp_seconds",
            sync_status.last_pull_at,
        ),
    ] {
        if let Some(at) = at {
            metrics::gauge!(name).set(at.as_second() as f64);
        }
    }
    if let Some(cursor) = sync_status.roster_cursor {
        metrics::gauge!("kiosk_roster_cursor").set(cursor as f64);
    }
    if let Some(sync) = &s.sync {
        let r = sync.report();
        if let Some(up) = r.hub_reachable {
            metrics::gauge!("kiosk_sync_hub_reachable").set(if up { 1.0 } else { 0.0 });
        }
        metrics::gauge!("kiosk_sync_auth_refused").set(if r.auth_refused { 1.0 } else { 0.0 });
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        kiosk_sync::telemetry::render(),
    )
        .into_response())
}

/// The status page's `sync` object: what the store knows (backlog, last push and pull,
/// cursor, quarantine), plus `extra` keys from whoever knows more (the live sync
/// client: hub URL, reachability, last error), which win over the store's.
pub fn sync_json(
    status: &SyncStatus,
    now: jiff::Timestamp,
    extra: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let latest: Vec<serde_json::Value> = status
        .quarantine_latest
        .iter()
        .map(|q| {
            serde_json::json!({
                "seq": q.seq,
                "record_id": q.record_id,
                "kind": q.kind,
                "reason": q.reason,
                "at": q.at,
            })
        })
        .collect();
    let mut sync = serde_json::json!({
        "backlog": status.backlog,
        "oldest_unsent_at": status.oldest_unsent_at,
        // Clamped: a clock set back must not show a negative age.
        "oldest_unsent_age_s": status
            .oldest_unsent_at
            .map(|t| now.duration_since(t).as_secs().max(0)),
        "last_push_at": status.last_push_at,
        "last_pull_at": status.last_pull_at,
        "roster_cursor": status.roster_cursor,
        "roster_skipped": status.roster_skipped,
        "quarantine": {"count": status.quarantine_count, "latest": latest},
    });
    if let Some(object) = sync.as_object_mut() {
        object.extend(extra);
    }
    sync
}

/// The status page's data.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StatusJson {
    #[schema(value_type = String)]
    version: &'static str,
    kiosk_id: String,
    office: String,
    office_name: String,
    time_zone: String,
    #[schema(value_type = String)]
    data_dir: PathBuf,
    readers: Vec<ReaderStatus>,
    services: Vec<ServiceStatus>,
    /// What needs a person's look, in words; empty when all is well.
    problems: Vec<String>,
    visits_today: u64,
    outbox_backlog: u64,
    roster_cards: u64,
    /// Backlog, last push and pull, roster cursor, quarantine, and the live sync
    /// client's view (`configured`, hub, reachability, last error): see `sync_json`.
    #[schema(value_type = Object)]
    sync: serde_json::Value,
    /// Webhooks: `{"webhooks", "queued", "failing", "last_error"}`.
    #[schema(value_type = Object)]
    notify: serde_json::Value,
}

/// Readers, services, sync backlog and hub reachability, and the problems among them.
#[utoipa::path(get, path = "/api/v1/status", tag = "operations",
    responses(
        (status = 200, description = "The kiosk's state", body = StatusJson),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
async fn status(State(s): State<ApiState>) -> Result<Json<StatusJson>, ApiError> {
    let counts = s.db.counts().await?;
    let sync = s.db.sync_status().await?;
    let readers = s.board.readers();
    let services = s.board.services();
    let now = jiff::Timestamp::now();
    let mut problems = Vec::new();
    for svc in &services {
        if !svc.up {
            problems.push(svc.detail.clone());
        }
    }
    let mut live = serde_json::Map::new();
    live.insert("configured".into(), s.sync.is_some().into());
    if let Some(client) = &s.sync {
        let r = client.report();
        if r.auth_refused {
            problems.push(format!(
                "sync: {}; visits wait here, nothing is lost",
                r.last_error
                    .as_deref()
                    .unwrap_or("the hub refused this kiosk's token")
            ));
        } else if r.hub_reachable == Some(false) {
            let waiting = sync
                .oldest_unsent_at
                .map_or(0, |t| now.duration_since(t).as_secs().max(0));
            // A short outage is normal; say so only when visits have waited a while.
            if waiting >= UNREACHABLE_PROBLEM_AFTER_S {
                problems.push(format!(
                    "sync: the hub at {} is unreachable and the oldest unsent visit is {} min old; {} visit(s) wait here, safe, and go up when it answers",
                    r.hub,
                    waiting / 60,
                    sync.backlog
                ));
            }
        } else if r.push_failures.max(r.pull_failures) >= REPEATED_FAILURES {
            // The hub answers but keeps refusing (a wrong office, a proxy's size
            // limit): nothing is lost, but someone has to look.
            problems.push(format!(
                "sync: {}; retrying with backoff, visits wait here",
                r.last_error
                    .as_deref()
                    .unwrap_or("the hub keeps refusing requests")
            ));
        }
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&r) {
            live.extend(map);
        }
    }
    if sync.quarantine_count > 0 {
        problems.push(format!(
            "sync: the hub rejected {} record(s); they are kept in quarantine (see sync.quarantine) and need a look",
            sync.quarantine_count
        ));
    }
    // Serial readers are configured one by one, so each missing one is a problem; PC/SC
    // readers are matched by pattern and judged together below.
    for r in readers
        .iter()
        .filter(|r| !r.connected && r.kind == ReaderKind::Serial.as_str())
    {
        if let Some(problem) = &r.problem {
            problems.push(format!("reader {}: {problem}", r.name));
        }
    }
    let pcsc_connected = readers
        .iter()
        .any(|r| r.connected && r.kind == ReaderKind::Pcsc.as_str());
    if !s.info.reader_patterns.is_empty() && !pcsc_connected {
        problems.push(format!(
            "no connected reader matches {}; check the reader's cable and `kiosk readers`",
            s.info
                .reader_patterns
                .iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    let notify = match &s.webhooks {
        Some(hooks) => hooks.status(&s.db).await,
        None => crate::webhooks::NotifyStatus::default(),
    };
    problems.extend(notify.problems.iter().cloned());
    Ok(Json(StatusJson {
        version: env!("CARGO_PKG_VERSION"),
        kiosk_id: s.info.kiosk_id.clone(),
        office: s.info.office.clone(),
        office_name: s.info.office_name.clone(),
        time_zone: s.info.time_zone.clone(),
        data_dir: s.info.data_dir.clone(),
        readers,
        services,
        problems,
        visits_today: counts.visits_today,
        outbox_backlog: counts.outbox_backlog,
        roster_cards: counts.cards,
        sync: sync_json(&sync, now, live),
        notify: serde_json::to_value(&notify).unwrap_or_default(),
    }))
}
