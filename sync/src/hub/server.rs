//! The hub's HTTP face: kiosks push records and pull the roster; administrators edit the roster and read records.
//!
//! Every answer to a push is sent only after the store's transaction committed, so a
//! kiosk that sees a reply may forget what it sent; one that sees none sends the same
//! batch again and gets `duplicate` for what was stored.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest as _, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::rows::valid_id;
use super::store::{Conflict, HubCustomer, HubDb, HubStoreError, Incoming, KioskRow, SOURCES};
use crate::wire::{
    self, BrokerEntry, CardEntry, ConsultantEntry, Entity, PROTOCOL_HEADER, PROTOCOL_VERSION,
    Record, RegistrationEntry,
};
use crate::{auth, telemetry};

/// Header naming the calling kiosk; its token is checked against this kiosk's hash.
pub const KIOSK_HEADER: &str = "x-kiosk-id";
/// The administrator's token is kept as the kiosk row with this id, which no kiosk
/// id can take (`~` is not allowed in ids).
pub const ADMIN_ID: &str = "~admin";
/// Largest upload accepted, compressed.
const MAX_UPLOAD: usize = 8 << 20;
/// Largest upload accepted, inflated.
const MAX_INFLATED: usize = 32 << 20;
/// Most lines in one upload.
const MAX_LINES: usize = 10_000;
/// A kiosk clock further off than this is logged: visits keep its `device_time`,
/// and staff reading them should know it was wrong.
const SKEW_WARNING: Duration = Duration::from_secs(120);

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct HubState {
    pub db: HubDb,
    uploads: Arc<Semaphore>,
    /// A snapshot of a large roster is built in memory (its gzip): a fleet coming
    /// back together must not build hundreds at once.
    snapshots: Arc<Semaphore>,
}

/// Snapshots built at once; more are asked to come back later (503 + Retry-After).
const MAX_CONCURRENT_SNAPSHOTS: usize = 2;

impl HubState {
    pub fn new(db: HubDb, max_concurrent_uploads: usize) -> HubState {
        HubState {
            db,
            uploads: Arc::new(Semaphore::new(max_concurrent_uploads)),
            snapshots: Arc::new(Semaphore::new(MAX_CONCURRENT_SNAPSHOTS)),
        }
    }
}

fn busy(what: &str, max_secs: u64) -> HubApiError {
    HubApiError {
        // Jittered, so the kiosks turned away together don't come back together.
        retry_after: Some(1 + crate::backoff::uniform(Duration::from_secs(max_secs)).as_secs()),
        ..HubApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("the hub is serving as many {what} as it may; try again after Retry-After"),
        )
    }
}

/// A hub bound to its port, ready to serve.
#[derive(Debug)]
pub struct Hub {
    listener: TcpListener,
    state: HubState,
    roster_retention: Duration,
}

/// Why the hub could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot listen on {addr}: {source}; is another hub or program using the port?")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] HubStoreError),
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

impl Hub {
    pub async fn build(
        listen: SocketAddr,
        db: HubDb,
        max_concurrent_uploads: usize,
        roster_retention: Duration,
    ) -> Result<Hub, HubError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| HubError::Listen {
                addr: listen,
                source,
            })?;
        telemetry::prometheus();
        Ok(Hub {
            listener,
            state: HubState::new(db, max_concurrent_uploads),
            roster_retention,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `cancel`, pruning the roster log hourly meanwhile.
    pub async fn run_until_stopped(self, cancel: CancellationToken) -> Result<(), HubError> {
        let prune = tokio::spawn(prune_loop(
            self.state.db.clone(),
            self.roster_retention,
            cancel.clone(),
        ));
        let served = axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(cancel.clone().cancelled_owned())
            .await
            .map_err(HubError::Serve);
        cancel.cancel();
        let _ = prune.await;
        served
    }
}

async fn prune_loop(db: HubDb, retention: Duration, cancel: CancellationToken) {
    loop {
        let before = jiff::Timestamp::now()
            .checked_sub(
                jiff::SignedDuration::try_from(retention).unwrap_or(jiff::SignedDuration::MAX),
            )
            .unwrap_or(jiff::Timestamp::MIN);
        match db.prune_roster_log(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "roster log pruned"),
            Err(e) => {
                tracing::warn!(error = %e, "pruning the roster log failed; trying again in an hour")
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// The routes; serving is the caller's business, so tests can drive it directly.
pub fn router(state: HubState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route(
            "/sync/v1/records",
            post(push).layer(DefaultBodyLimit::max(MAX_UPLOAD)),
        )
        .route("/sync/v1/roster", get(roster_page))
        .route("/sync/v1/roster/snapshot", get(roster_snapshot))
        .route(
            "/admin/v1/customers/{id}",
            put(put_customer).get(get_customer).delete(delete_customer),
        )
        .route(
            "/admin/v1/cards/{token}",
            put(put_card).get(get_card).delete(delete_card),
        )
        .route(
            "/admin/v1/consultants/{id}",
            put(put_consultant).delete(delete_consultant),
        )
        .route(
            "/admin/v1/brokers/{id}",
            put(put_broker).delete(delete_broker),
        )
        .route(
            "/admin/v1/registrations/{customer_id}",
            put(put_registration)
                .get(get_registration)
                .delete(delete_registration),
        )
        .route("/admin/v1/kiosks", get(list_kiosks))
        .route("/admin/v1/records", get(list_records))
        .route("/admin/v1/rejects", get(list_rejects))
        .route("/admin/v1/reports/day", get(day_report))
        .fallback(not_found)
        .with_state(state)
}

/// Errors as `{"error":{"code","message"}}`, as on the kiosk; internals are logged, not sent.
#[derive(Debug)]
pub struct HubApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl HubApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> HubApiError {
        HubApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn unauthorized(message: impl Into<String>) -> HubApiError {
        HubApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn bad_request(message: impl Into<String>) -> HubApiError {
        HubApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl From<HubStoreError> for HubApiError {
    fn from(e: HubStoreError) -> HubApiError {
        match e {
            HubStoreError::Conflict(c) => {
                let code = match c {
                    Conflict::PhoneTaken { .. } => "phone_taken",
                    Conflict::CardTaken { .. } => "card_taken",
                    Conflict::Missing { .. } => "missing_reference",
                    Conflict::ConsultantInUse { .. } => "consultant_in_use",
                    Conflict::BrokerInUse { .. } => "broker_in_use",
                    Conflict::KioskExists { .. } => "kiosk_exists",
                };
                HubApiError::new(StatusCode::CONFLICT, code, c.to_string())
            }
            HubStoreError::NotFound { entity, key } => HubApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{entity} {key:?} does not exist"),
            ),
            other => {
                tracing::error!(error = %other, "hub store error while answering a request");
                HubApiError {
                    // Jittered: a database outage must not line the fleet up.
                    retry_after: Some(
                        2 + crate::backoff::uniform(Duration::from_secs(8)).as_secs(),
                    ),
                    ..HubApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store_unavailable",
                        "the hub's database is not available; see the hub's log",
                    )
                }
            }
        }
    }
}

impl IntoResponse for HubApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

async fn not_found() -> HubApiError {
    HubApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; kiosks use /sync/v1/…, administrators /admin/v1/…",
    )
}

async fn healthz(State(s): State<HubState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"ok": true, "database": s.db.backend()}))
}

async fn metrics_text(State(s): State<HubState>) -> Response {
    // Gauges read at scrape time, so they are true whichever hub process is asked.
    if let Ok(n) = s.db.record_count().await {
        metrics::gauge!("hub_records_stored").set(n as f64);
    }
    metrics::gauge!("hub_uploads_available").set(s.uploads.available_permits() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::render(),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The calling kiosk, by its id header and token. A 401 says what to fix and never
/// which part was wrong beyond that.
async fn kiosk_auth(db: &HubDb, headers: &HeaderMap) -> Result<KioskRow, HubApiError> {
    let id = headers
        .get(KIOSK_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            HubApiError::unauthorized(format!("send the kiosk's id in the {KIOSK_HEADER} header"))
        })?;
    let token = bearer(headers).ok_or_else(|| {
        HubApiError::unauthorized("send the kiosk's token as Authorization: Bearer …")
    })?;
    let refused = || {
        metrics::counter!("hub_auth_refused_total").increment(1);
        HubApiError::unauthorized(
            "unknown kiosk or wrong token; issue one with `kiosk hub kiosks add ID` and put it in the kiosk's token_file",
        )
    };
    if id == ADMIN_ID {
        return Err(refused());
    }
    let row = db.kiosk(id).await?.ok_or_else(refused)?;
    if auth::verify(token, &row.token_hash) {
        Ok(row)
    } else {
        Err(refused())
    }
}

async fn admin_auth(db: &HubDb, headers: &HeaderMap) -> Result<(), HubApiError> {
    let refused = || {
        metrics::counter!("hub_auth_refused_total").increment(1);
        HubApiError::unauthorized(
            "send the administrator's token as Authorization: Bearer …; make one with `kiosk hub admin-token`",
        )
    };
    let token = bearer(headers).ok_or_else(refused)?;
    let row = db.kiosk(ADMIN_ID).await?.ok_or_else(refused)?;
    if auth::verify(token, &row.token_hash) {
        Ok(())
    } else {
        Err(refused())
    }
}

fn check_protocol(headers: &HeaderMap) -> Result<(), HubApiError> {
    match headers
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
    {
        // Changes are additive: a newer kiosk's requests are readable here.
        Some(v) if v >= 1 => Ok(()),
        _ => Err(HubApiError::bad_request(format!(
            "send the {PROTOCOL_HEADER} header (this hub speaks version {PROTOCOL_VERSION})"
        ))),
    }
}

async fn push(
    State(s): State<HubState>,
    request: axum::extract::Request,
) -> Result<Response, HubApiError> {
    let headers = request.headers().clone();
    check_protocol(&headers)?;
    // Token and upload slot first, body after: a refused or turned-away upload costs
    // the hub no memory and no bandwidth beyond its headers.
    let kiosk = kiosk_auth(&s.db, &headers).await?;
    let Ok(_permit) = s.uploads.clone().try_acquire_owned() else {
        metrics::counter!("hub_uploads_turned_away_total").increment(1);
        return Err(busy("uploads", 4));
    };
    let body = Bytes::from_request(request, &()).await.map_err(|e| {
        body_error(
            e,
            &format!("the upload is larger than {MAX_UPLOAD} bytes; send smaller batches"),
        )
    })?;
    let started = Instant::now();
    let received_at = jiff::Timestamp::now();
    log_skew(&kiosk.id, &headers, received_at);
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let row = kiosk.clone();
    // Inflating and parsing a batch is CPU work: off the async workers.
    let items = tokio::task::spawn_blocking(move || parse_batch(&body, gzip, &row))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "parsing a batch panicked");
            HubApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the hub failed to read the batch; see the hub's log",
            )
        })??;
    let reply = s.db.store_batch(&kiosk.id, items, received_at).await?;
    for item in &reply.items {
        let status = match item.status {
            wire::ItemStatus::Inserted => "inserted",
            wire::ItemStatus::Duplicate => "duplicate",
            wire::ItemStatus::Rejected => "rejected",
        };
        metrics::counter!("hub_records_total", "status" => status).increment(1);
    }
    metrics::counter!("hub_batches_total").increment(1);
    metrics::histogram!("hub_batch_seconds").record(started.elapsed().as_secs_f64());
    let rejected = reply
        .items
        .iter()
        .filter(|i| i.status == wire::ItemStatus::Rejected)
        .count();
    if rejected > 0 {
        tracing::warn!(kiosk = %kiosk.id, rejected, "records rejected; kept as rejects at the hub and quarantined at the kiosk");
    }
    tracing::debug!(kiosk = %kiosk.id, records = reply.items.len(), high_water = reply.high_water, "batch stored");
    Ok(Json(reply).into_response())
}

/// A batch body as the store's items, or why it cannot be read at all.
fn parse_batch(body: &[u8], gzip: bool, kiosk: &KioskRow) -> Result<Vec<Incoming>, HubApiError> {
    let text = if gzip {
        wire::gunzip(body, MAX_INFLATED).map_err(|e| match e {
            wire::GunzipError::TooLarge { .. } => HubApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("{e}; send smaller batches"),
            ),
            wire::GunzipError::Corrupt(_) => HubApiError::bad_request(e.to_string()),
        })?
    } else {
        body.to_vec()
    };
    let text = String::from_utf8(text)
        .map_err(|_| HubApiError::bad_request("the batch is not UTF-8 NDJSON"))?;
    check_office(&text, kiosk)?;
    let items: Vec<Incoming> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| parse_line(line, kiosk))
        .collect();
    if items.is_empty() {
        return Err(HubApiError::bad_request("the batch has no records"));
    }
    if items.len() > MAX_LINES {
        return Err(HubApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "{} records in one batch; send at most {MAX_LINES}",
                items.len()
            ),
        ));
    }
    Ok(items)
}

/// A kiosk whose records name another office than the one it was registered with is
/// misconfigured, not sending bad records: the whole batch is refused (403, retried
/// with backoff and shown on the kiosk's status), so no visit becomes a reject.
fn check_office(text: &str, kiosk: &KioskRow) -> Result<(), HubApiError> {
    let first = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Record>(l).ok())
        .find_map(|r| {
            (r.office_id() != kiosk.office_id && r.kiosk_id() == kiosk.id)
                .then(|| r.office_id().to_owned())
        });
    match first {
        None => Ok(()),
        Some(office) => Err(HubApiError::new(
            StatusCode::FORBIDDEN,
            "office_mismatch",
            format!(
                "kiosk {:?} is registered at the hub for office {:?}, but its visits say office {office:?}; \
                 fix kiosk.office in kiosk.toml, or re-register the kiosk: `kiosk hub kiosks revoke {}` then `kiosk hub kiosks add {} --office {office}`",
                kiosk.id, kiosk.office_id, kiosk.id, kiosk.id
            ),
        )),
    }
}

/// The record kinds this hub stores; a line of another kind is kept as a reject.
const KNOWN_KINDS: [&str; 3] = ["visit", "card_binding", "card_revocation"];

/// One NDJSON line as the store takes it. A line the hub cannot take as a record is
/// kept as a reject, with its seq when one can be read, so it never blocks the kiosk.
fn parse_line(line: &str, kiosk: &KioskRow) -> Incoming {
    let reject = |reason: String| {
        let value: Option<serde_json::Value> = serde_json::from_str(line).ok();
        let inner = value.as_ref().and_then(|v| v.get("record"));
        Incoming::Reject {
            seq: inner
                .and_then(|r| r.get("seq"))
                .and_then(serde_json::Value::as_u64),
            id: inner
                .and_then(|r| r.get("id"))
                .and_then(serde_json::Value::as_str)
                .and_then(|s| s.parse().ok()),
            kind: value
                .as_ref()
                .and_then(|v| v.get("kind"))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            reason,
            raw: line.to_owned(),
        }
    };
    let record: Record = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => {
            let kind = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned));
            return reject(match kind {
                Some(k) if !KNOWN_KINDS.contains(&k.as_str()) => format!(
                    "records of kind {k:?} are not known to this hub; it is kept at the hub as a reject; upgrade the hub to store records of this kind"
                ),
                _ => format!("not a valid record: {e}"),
            });
        }
    };
    match &record {
        r if r.kiosk_id() != kiosk.id => reject(format!(
            "the record belongs to kiosk {:?} but came with kiosk {:?}'s token",
            r.kiosk_id(),
            kiosk.id
        )),
        r if r.office_id() != kiosk.office_id => reject(format!(
            "the record is for office {:?} but kiosk {:?} is registered to office {:?}",
            r.office_id(),
            kiosk.id,
            kiosk.office_id
        )),
        r if r.seq() == 0 => reject("seq starts at 1".into()),
        _ => Incoming::Record {
            record: Box::new(record),
            raw: line.to_owned(),
        },
    }
}

/// Logs how far the kiosk's clock is from the hub's, from its `Date` header.
fn log_skew(kiosk: &str, headers: &HeaderMap, now: jiff::Timestamp) {
    let Some(date) = headers
        .get(header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| jiff::fmt::rfc2822::parse(v).ok())
    else {
        return;
    };
    let skew = date.timestamp().duration_since(now);
    metrics::gauge!("hub_kiosk_clock_skew_seconds", "kiosk" => kiosk.to_owned())
        .set(skew.as_secs_f64());
    if skew.unsigned_abs() > SKEW_WARNING {
        tracing::warn!(
            kiosk,
            skew_s = skew.as_secs(),
            "the kiosk's clock is off; its visits keep their device_time, ordering uses seq"
        );
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RosterQuery {
    since: Option<u64>,
    limit: Option<u32>,
}

async fn roster_page(
    State(s): State<HubState>,
    headers: HeaderMap,
    query: Result<Query<RosterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, HubApiError> {
    check_protocol(&headers)?;
    kiosk_auth(&s.db, &headers).await?;
    let Query(q) = query.map_err(|e| {
        HubApiError::bad_request(format!("{e}; ask /sync/v1/roster?since=CURSOR&limit=N"))
    })?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    match s.db.roster_changes(q.since.unwrap_or(0), limit).await? {
        Ok(page) => {
            metrics::counter!("hub_roster_pages_total").increment(1);
            Ok(Json(page).into_response())
        }
        Err(expired) => {
            metrics::counter!("hub_roster_expired_total").increment(1);
            Ok((StatusCode::CONFLICT, Json(expired)).into_response())
        }
    }
}

async fn roster_snapshot(
    State(s): State<HubState>,
    headers: HeaderMap,
) -> Result<Response, HubApiError> {
    check_protocol(&headers)?;
    let kiosk = kiosk_auth(&s.db, &headers).await?;
    let Ok(_permit) = s.snapshots.clone().try_acquire_owned() else {
        metrics::counter!("hub_snapshots_turned_away_total").increment(1);
        return Err(busy("roster snapshots", 20));
    };
    let body = s.db.roster_snapshot().await?;
    metrics::counter!("hub_roster_snapshots_total").increment(1);
    tracing::info!(kiosk = %kiosk.id, bytes = body.len(), "roster snapshot served");
    Ok((
        [
            (header::CONTENT_TYPE, wire::NDJSON),
            (header::CONTENT_ENCODING, "gzip"),
        ],
        body,
    )
        .into_response())
}

/// A body axum could not read, as a JSON error instead of axum's plain text: a
/// client reads every refusal the same way. `too_large` is the message for a body
/// past the route's limit.
fn body_error(rejection: BytesRejection, too_large: &str) -> HubApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        HubApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", too_large)
    } else {
        HubApiError::bad_request(format!("cannot read the body: {}", rejection.body_text()))
    }
}

/// A JSON body, with a 400 that says what is wrong instead of axum's plain text.
fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, HubApiError> {
    let body = body.map_err(|e| body_error(e, "the body is too large for one roster entry"))?;
    serde_json::from_slice(&body)
        .map_err(|e| HubApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn key_matches(path_key: &str, body_key: &str, what: &str) -> Result<(), HubApiError> {
    if path_key == body_key {
        Ok(())
    } else {
        Err(HubApiError::bad_request(format!(
            "the {what} in the URL ({path_key:?}) and in the body ({body_key:?}) differ"
        )))
    }
}

/// A customer as administrators write it; the id comes from the URL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    surname: String,
    title: String,
    tier: String,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    consultant_id: Option<String>,
    /// `outreach` | `phone` | `walk_in` | `broker`.
    #[serde(default)]
    source: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    last_follow_up: Option<String>,
}

fn check_id(id: &str) -> Result<(), HubApiError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(HubApiError::bad_request(
            "ids are 1 to 64 printable characters",
        ))
    }
}

/// An RFC 3339 time from a body field, or a 400 naming the field.
fn time_field(field: &str, text: &str) -> Result<jiff::Timestamp, HubApiError> {
    text.trim().parse().map_err(|_| {
        HubApiError::bad_request(format!(
            "{field}: {text:?} is not a time; write RFC 3339 with its offset, e.g. 2026-11-23T10:00:00+08:00"
        ))
    })
}

async fn put_customer(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HubApiError> {
    admin_auth(&s.db, &headers).await?;
    check_id(&id)?;
    let b: CustomerBody = json_body(body)?;
    if let Some(body_id) = &b.id {
        key_matches(&id, body_id, "customer id")?;
    }
    if !matches!(b.title.as_str(), "mr" | "ms") {
        return Err(HubApiError::bad_request("title: write \"mr\" or \"ms\""));
    }
    if !matches!(b.tier.as_str(), "normal" | "silver" | "gold") {
        return Err(HubApiError::bad_request(
            "tier: write \"normal\", \"silver\" or \"gold\"",
        ));
    }
    if b.surname.trim().is_empty() || b.surname.chars().count() > 8 {
        return Err(HubApiError::bad_request(
            "surname: the family name only (e.g. 张 or 欧阳); the full name goes in name",
        ));
    }
    let phone = match b.phone.as_deref() {
        None | Some("") => None,
        Some(p) => Some(normalize_phone(p).map_err(HubApiError::bad_request)?),
    };
    let source = b.source.filter(|s| !s.is_empty());
    if let Some(source) = &source
        && !SOURCES.contains(&source.as_str())
    {
        return Err(HubApiError::bad_request(format!(
            "source: {source:?} is not a source; write \"outreach\", \"phone\", \"walk_in\" or \"broker\""
        )));
    }
    let last_follow_up = match b.last_follow_up.as_deref() {
        None | Some("") => None,
        Some(t) => Some(time_field("last_follow_up", t)?),
    };
    s.db.upsert_customer(HubCustomer {
        id,
        name: b.name.filter(|n| !n.trim().is_empty()),
        surname: b.surname.trim().to_owned(),
        title: b.title,
        tier: b.tier,
        phone,
        consultant_id: b.consultant_id.filter(|c| !c.is_empty()),
        source,
        last_follow_up,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Normalizes a phone number so one number has one spelling: digits only, a Chinese
/// number without its `+86`/`0086` prefix, any other with `+` and its country code.
pub fn normalize_phone(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    let plus = trimmed.starts_with('+');
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    let only_separators = trimmed
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')' | '+' | '.'));
    if !only_separators || digits.len() < 5 || digits.len() > 15 {
        return Err(format!(
            "phone: {text:?} is not a phone number; write digits, e.g. 13800138000 or +85291234567"
        ));
    }
    let national = if plus {
        digits.strip_prefix("86")
    } else {
        digits.strip_prefix("0086")
    };
    Ok(match national {
        Some(rest) => rest.to_owned(),
        None if plus => format!("+{digits}"),
        None => digits,
    })
}

async fn get_customer(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, HubApiError> {
    admin_auth(&s.db, &headers).await?;
    found(s.db.customer(&id).await?, "customer", id)
}

/// An entry as JSON, or a 404 naming what was asked for.
fn found<T: serde::Serialize>(
    entry: Option<T>,
    entity: &'static str,
    key: String,
) -> Result<Response, HubApiError> {
    match entry {
        Some(e) => Ok(Json(e).into_response()),
        None => Err(HubStoreError::NotFound { entity, key }.into()),
    }
}

async fn delete_entry(
    s: &HubState,
    headers: &HeaderMap,
    entity: Entity,
    key: &str,
) -> Result<Response, HubApiError> {
    admin_auth(&s.db, headers).await?;
    s.db.delete(entity, key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_customer(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, HubApiError> {
    delete_entry(&s, &headers, Entity::Customer, &id).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CardBody {
    #[serde(default)]
    token: Option<String>,
    customer_id: String,
    #[serde(default = "active")]
    status: String,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    low24_only: bool,
}

fn active() -> String {
    "active".into()
}

async fn put_card(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(token): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HubApiError> {
    admin_auth(&s.db, &headers).await?;
    let b: CardBody = json_body(body)?;
    if let Some(body_token) = &b.token {
        key_matches(&token, body_token, "card token")?;
    }
    if !valid_token(&token) {
        return Err(HubApiError::bad_request(format!(
            "{token:?} is not a card token; write nfc:HEX, em:8 HEX, wg26:FACILITY/NUMBER or qr:TEXT"
        )));
    }
    if !matches!(b.status.as_str(), "active" | "revoked") {
        return Err(HubApiError::bad_request(
            "status: write \"active\" or \"revoked\"",
        ));
    }
    s.db.upsert_card(CardEntry {
        token,
        customer_id: b.customer_id,
        status: b.status,
        note: b.note.filter(|n| !n.is_empty()),
        low24_only: b.low24_only,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The shape of a normalized token (design §4); the kiosk's device crate parses them
/// fully, the hub only keeps obviously wrong ones out.
pub(super) fn valid_token(token: &str) -> bool {
    let Some((scheme, rest)) = token.split_once(':') else {
        return false;
    };
    let hex_upper = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    };
    match scheme {
        "nfc" => hex_upper(rest) && rest.len() % 2 == 0 && rest.len() <= 20,
        "em" => hex_upper(rest) && rest.len() == 8,
        "wg26" => rest
            .split_once('/')
            .is_some_and(|(f, n)| f.parse::<u8>().is_ok() && n.parse::<u16>().is_ok()),
        "qr" => {
            !rest.is_empty() && rest.chars().count() <= 256 && !rest.chars().any(char::is_control)
        }
        _ => false,
    }
}

async fn get_card(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, HubApiError> {
    admin_auth(&s.db, &headers).await?;
    found(s.db.card(&token).await?, "card", token)
}

async fn delete_card(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, HubApiError> {
    delete_entry(&s, &headers, Entity::Card, &token).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedBody {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    company: Option<String>,
}

/// The body of a consultant or broker, checked against the id in the URL.
fn named_body(
    id: &str,
    body: Result<Bytes, BytesRejection>,
    what: &str,
) -> Result<NamedBody, HubApiError> {
    check_id(id)?;
    let b: NamedBody = json_body(body)?;
    if let Some(body_id) = &b.id {
        key_matches(id, body_id, &format!("{what} id"))?;
    }
    if b.name.trim().is_empty() {
        return Err(HubApiError::bad_request(format!(
            "name: write the {what}'s name"
        )));
    }
    Ok(b)
}

async fn put_consultant(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HubApiError> {
    admin_auth(&s.db, &headers).await?;
    let b = named_body(&id, body, "consultant")?;
    if b.company.is_some() {
        return Err(HubApiError::bad_request("company: only brokers have one"));
    }
    s.db.upsert_consultant(ConsultantEntry { id, name: b.name })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_consultant(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, HubApiError> {
    delete_entry(&s, &headers, Entity::Consultant, &id).await
}

async fn put_broker(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HubApiError> {
    admin_auth(&s.db, &headers).await?;
    let b = named_body(&id, body, "broker")?;
    s.db.upsert_broker(BrokerEntry {
        id,
        name: b.name,
        company: b.company.filter(|c| !c.is_empty()),
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_broker(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, HubApiError> {
    delete_entry(&s, &headers, Entity::Broker, &id).await
}

/// A broker's registration (报备) as administrators write it; the customer comes from
/// the URL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrationBody {
    #[serde(default)]
    customer_id: Option<String>,
    broker_id: String,
    /// RFC 3339.
    registered_at: String,
    /// RFC 3339; absent: the kiosks' broker-report protection period applies.
    #[serde(default)]
    expires_at: Option<String>,
}

async fn put_registration(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(customer_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HubApiError> {
    admin_auth(&s.db, &headers).await?;
    check_id(&customer_id)?;
    let b: RegistrationBody = json_body(body)?;
    if let Some(body_id) = &b.customer_id {
        key_matches(&customer_id, body_id, "customer id")?;
    }
    if !valid_id(&b.broker_id) {
        return Err(HubApiError::bad_request(
            "broker_id: the broker's id, 1 to 64 printable characters",
        ));
    }
    let registered_at = time_field("registered_at", &b.registered_at)?;
    let expires_at = match b.expires_at.as_deref() {
        None | Some("") => None,
        Some(t) => Some(time_field("expires_at", t)?),
    };
    if expires_at.is_some_and(|e| e <= registered_at) {
        return Err(HubApiError::bad_request(
            "expires_at: a registration expires after it was made; leave it out for the default period",
        ));
    }
    // One live claim per customer: this replaces any earlier registration.
    s.db.upsert_registration(RegistrationEntry {
        customer_id,
        broker_id: b.broker_id,
        registered_at,
        expires_at,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_registration(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(customer_id): Path<String>,
) -> Result<Response, HubApiError> {
    admin_auth(&s.db, &headers).await?;
    found(
        s.db.registration(&customer_id).await?,
        "registration",
        customer_id,
    )
}

async fn delete_registration(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(customer_id): Path<String>,
) -> Result<Response, HubApiError> {
    delete_entry(&s, &headers, Entity::Registration, &customer_id).await
}

async fn list_kiosks(
    State(s): State<HubState>,
    headers: HeaderMap,
) -> Result<Response, HubApiError> {
    admin_auth(&s.db, &headers).await?;
    let kiosks: Vec<serde_json::Value> = s
        .db
        .kiosks()
        .await?
        .into_iter()
        .filter(|k| k.id != ADMIN_ID)
        .map(|k| serde_json::json!({"id": k.id, "office_id": k.office_id, "high_water": k.high_water}))
        .collect();
    Ok(Json(serde_json::json!({ "kiosks": kiosks })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsQuery {
    kiosk: String,
    #[serde(default)]
    after_seq: u64,
    limit: Option<u32>,
}

async fn list_records(
    State(s): State<HubState>,
    headers: HeaderMap,
    query: Result<Query<RecordsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, HubApiError> {
    admin_auth(&s.db, &headers).await?;
    let Query(q) = query.map_err(|e| {
        HubApiError::bad_request(format!(
            "{e}; ask /admin/v1/records?kiosk=ID&after_seq=N&limit=N"
        ))
    })?;
    let records =
        s.db.records(
            &q.kiosk,
            q.after_seq,
            q.limit.unwrap_or(1000).clamp(1, 10_000),
        )
        .await?;
    Ok(Json(serde_json::json!({ "records": records })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectsQuery {
    kiosk: String,
}

async fn list_rejects(
    State(s): State<HubState>,
    headers: HeaderMap,
    query: Result<Query<RejectsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, HubApiError> {
    admin_auth(&s.db, &headers).await?;
    let Query(q) = query
        .map_err(|e| HubApiError::bad_request(format!("{e}; ask /admin/v1/rejects?kiosk=ID")))?;
    let rejects = s.db.rejects(&q.kiosk).await?;
    Ok(Json(serde_json::json!({ "rejects": rejects })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DayQuery {
    office: String,
    day: String,
}

async fn day_report(
    State(s): State<HubState>,
    headers: HeaderMap,
    query: Result<Query<DayQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, HubApiError> {
    admin_auth(&s.db, &headers).await?;
    let Query(q) = query.map_err(|e| {
        HubApiError::bad_request(format!(
            "{e}; ask /admin/v1/reports/day?office=ID&day=YYYY-MM-DD"
        ))
    })?;
    if q.day.parse::<jiff::civil::Date>().is_err() {
        return Err(HubApiError::bad_request(format!(
            "day: {:?} is not a date; write YYYY-MM-DD",
            q.day
        )));
    }
    let report = s.db.day_report(&q.office, &q.day).await?;
    Ok(Json(report).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_have_one_spelling() {
        let table = [
            ("13800138000", Ok("13800138000")),
            ("138-0013-8000", Ok("13800138000")),
            ("+86 138 0013 8000", Ok("13800138000")),
            ("0086 13800138000", Ok("13800138000")),
            ("+852 9123 4567", Ok("+85291234567")),
            ("(021) 6888-8888", Ok("02168888888")),
            ("call me", Err(())),
            ("123", Err(())),
            ("1380013800012345678", Err(())),
        ];
        for (input, want) in table {
            assert_eq!(
                normalize_phone(input).map_err(|_| ()),
                want.map(str::to_owned),
                "{input}"
            );
        }
    }

    #[test]
    fn card_tokens_are_checked_for_shape() {
        for good in [
            "nfc:04A1B2C3",
            "em:0086F344",
            "wg26:12/34567",
            "qr:broker-77",
        ] {
            assert!(valid_token(good), "{good}");
        }
        for bad in [
            "04A1B2C3",
            "nfc:04a1",
            "nfc:ABC",
            "em:86F344",
            "wg26:300/1",
            "qr:",
            "foo:1",
        ] {
            assert!(!valid_token(bad), "{bad}");
        }
    }
}
