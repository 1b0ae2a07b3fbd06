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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::StatusCode;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, parse_retry_after, uniform};
use crate::hub::KIOSK_HEADER;
use crate::wire::{
    BATCH_BYTES, BatchReply, CursorExpired, NDJSON, PROTOCOL_HEADER, PROTOCOL_VERSION, RosterPage,
};

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
    /// - outbox rows of this batch with `seq <= reply.high_water` are marked sent at
    ///   `at` (never rows past the batch: a rejected row there, from a batch whose reply
    ///   was lost, must come back to be quarantined; resending it costs a duplicate);
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

/// How the client reaches its hub and paces itself (from `[sync]` in kiosk.toml).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL, no trailing slash.
    pub hub: String,
    pub kiosk_id: String,
    pub token_file: std::path::PathBuf,
    pub ca_file: Option<std::path::PathBuf>,
    pub push_interval: Duration,
    pub pull_interval: Duration,
    pub batch_size: usize,
    pub backoff_cap: Duration,
    pub initial_delay: Duration,
    /// Where a snapshot is downloaded before it replaces the roster.
    pub spool_dir: std::path::PathBuf,
}

/// Rows per roster page asked for.
const PAGE_LIMIT: u32 = 1000;
/// The first retry waits up to this; each further failure doubles it up to the cap.
const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// What the loops last saw, for `/api/v1/status` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub hub: String,
    /// `None` until the hub was first asked (a missing token file asks nothing).
    pub hub_reachable: Option<bool>,
    /// The hub refused this kiosk's token (or the token file is unreadable); nothing
    /// is dropped meanwhile, and the next attempt reads the token file again.
    pub auth_refused: bool,
    pub last_error: Option<String>,
    pub last_push_ok: Option<jiff::Timestamp>,
    pub last_pull_ok: Option<jiff::Timestamp>,
    pub push_failures: u32,
    pub pull_failures: u32,
    /// How long the push loop waits after its last failure before trying again.
    pub retry_in_ms: Option<u64>,
    pub records_pushed: u64,
    pub snapshots_taken: u64,
}

/// Shared view of the client's state.
#[derive(Debug, Clone, Default)]
pub struct SyncStatus(Arc<Mutex<SyncReport>>);

impl SyncStatus {
    pub fn report(&self) -> SyncReport {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut SyncReport)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Why a request did not go through; decides how long to wait.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// 401: wait the normal interval, never count, never drop.
    #[error("{0}")]
    Auth(String),
    /// No token to send (the token file is unreadable or empty): as a 401, but the
    /// hub was not asked, so it says nothing about whether the hub is reachable.
    #[error("{0}")]
    NoToken(String),
    /// 429/503: the hub says when to come back.
    #[error("the hub is busy (HTTP {status})")]
    Busy {
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    /// 413: the batch is larger than the hub takes.
    #[error("the hub refused the batch as too large")]
    TooLarge,
    /// Network trouble or the hub failing: back off.
    #[error("{0}")]
    Unreachable(String),
    /// The hub answered, but not as the protocol says (a 4xx, a malformed reply).
    #[error("{0}")]
    Refused(String),
    /// The kiosk's own store failed.
    #[error("the kiosk's store: {0}")]
    Store(#[from] SideError),
}

/// The kiosk's sync client: a push loop and a pull loop over one HTTP client.
#[derive(Debug)]
pub struct SyncClient<S> {
    http: reqwest::Client,
    cfg: ClientConfig,
    side: Arc<S>,
    status: SyncStatus,
    /// Woken after each committed visit, so a push starts at once.
    wake: Arc<Notify>,
}

impl<S> Clone for SyncClient<S> {
    fn clone(&self) -> Self {
        SyncClient {
            http: self.http.clone(),
            cfg: self.cfg.clone(),
            side: self.side.clone(),
            status: self.status.clone(),
            wake: self.wake.clone(),
        }
    }
}

/// Why the client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read sync.ca_file {path}: {source}")]
    CaFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("sync.ca_file {path} holds no PEM certificate: {source}")]
    CaPem {
        path: std::path::PathBuf,
        source: reqwest::Error,
    },
    #[error("cannot set up HTTPS: {0}")]
    Http(reqwest::Error),
}

impl<S: KioskSide> SyncClient<S> {
    pub fn new(cfg: ClientConfig, side: Arc<S>) -> Result<SyncClient<S>, ClientError> {
        // reqwest is built without a default crypto provider (ring instead of aws-lc);
        // installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("kiosk/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path).map_err(|source| ClientError::CaFile {
                path: path.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                ClientError::CaPem {
                    path: path.clone(),
                    source,
                }
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(ClientError::Http)?;
        let status = SyncStatus::default();
        status.update(|r| r.hub = cfg.hub.clone());
        Ok(SyncClient {
            http,
            cfg,
            side,
            status,
            wake: Arc::new(Notify::new()),
        })
    }

    pub fn status(&self) -> SyncStatus {
        self.status.clone()
    }

    /// Call after a record is committed to the outbox: the push loop starts at once.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            base: BACKOFF_BASE,
            cap: self.cfg.backoff_cap,
        }
    }

    fn token(&self) -> Result<String, Failure> {
        let text = std::fs::read_to_string(&self.cfg.token_file).map_err(|e| {
            Failure::NoToken(format!(
                "cannot read sync.token_file {}: {e}; put this kiosk's token there (from `kiosk hub kiosks add {}`)",
                self.cfg.token_file.display(),
                self.cfg.kiosk_id
            ))
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(Failure::NoToken(format!(
                "sync.token_file {} is empty; put this kiosk's token there (from `kiosk hub kiosks add {}`)",
                self.cfg.token_file.display(),
                self.cfg.kiosk_id
            )));
        }
        Ok(token.to_owned())
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, Failure> {
        let token = self.token()?;
        let now = jiff::Timestamp::now();
        let date = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&now)
            .unwrap_or_default();
        Ok(self
            .http
            .request(method, format!("{}{path}", self.cfg.hub))
            .bearer_auth(token)
            .header(KIOSK_HEADER, &self.cfg.kiosk_id)
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION)
            .header(reqwest::header::DATE, date))
    }

    /// Sends, and sorts a non-2xx answer into a [`Failure`].
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        let response = req.send().await.map_err(|e| {
            Failure::Unreachable(format!(
                "cannot reach the hub at {}: {}",
                self.cfg.hub,
                error_chain(&e)
            ))
        })?;
        let status = response.status();
        if status.is_success() || status == StatusCode::CONFLICT {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
        let message = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_default();
        Err(match status {
            StatusCode::UNAUTHORIZED => {
                Failure::Auth(format!("the hub refused this kiosk's token: {message}"))
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Failure::Busy {
                status,
                retry_after,
            },
            StatusCode::PAYLOAD_TOO_LARGE => Failure::TooLarge,
            s if s.is_server_error() => {
                Failure::Unreachable(format!("the hub failed (HTTP {s}): {message}"))
            }
            s => Failure::Refused(format!("the hub refused the request (HTTP {s}): {message}")),
        })
    }

    /// How long to wait after `failure`, and the failure count to carry on with.
    fn wait_after(&self, failure: &Failure, failures: u32, interval: Duration) -> (Duration, u32) {
        match failure {
            // Never counted: a wrong token is fixed by a person, and backing off to
            // the cap would make the fix take ten minutes to show.
            Failure::Auth(_) | Failure::NoToken(_) => (interval, failures),
            Failure::Busy { retry_after, .. } => {
                let n = failures.saturating_add(1);
                // At least what the hub asks; the backoff draw on top keeps a fleet
                // told the same Retry-After from coming back in step.
                let drawn = self.backoff().delay(n);
                let wait = retry_after.map_or(drawn, |r| r.max(drawn));
                (wait.min(self.cfg.backoff_cap), n)
            }
            Failure::TooLarge => (Duration::ZERO, failures),
            Failure::Unreachable(_) | Failure::Refused(_) | Failure::Store(_) => {
                let n = failures.saturating_add(1);
                (self.backoff().delay(n), n)
            }
        }
    }

    fn note_failure(&self, failure: &Failure, push: bool, failures: u32) {
        // Only an attempt that went to the hub tells whether it is reachable.
        let reachable = match failure {
            Failure::Store(_) | Failure::NoToken(_) => None,
            Failure::Unreachable(_) => Some(false),
            Failure::Auth(_) | Failure::Busy { .. } | Failure::TooLarge | Failure::Refused(_) => {
                Some(true)
            }
        };
        let message = failure.to_string();
        self.status.update(|r| {
            if reachable.is_some() {
                r.hub_reachable = reachable;
            }
            r.auth_refused = matches!(failure, Failure::Auth(_) | Failure::NoToken(_));
            r.last_error = Some(message.clone());
            if push {
                r.push_failures = failures;
            } else {
                r.pull_failures = failures;
            }
        });
        if let Some(reachable) = reachable {
            metrics::gauge!("kiosk_sync_hub_reachable").set(if reachable { 1.0 } else { 0.0 });
        }
        let what = if push { "push" } else { "pull" };
        match failure {
            Failure::Store(_) | Failure::Refused(_) | Failure::Auth(_) | Failure::NoToken(_) => {
                tracing::error!(error = %message, "sync {what} failed");
            }
            _ => tracing::warn!(error = %message, failures, "sync {what} failed; retrying"),
        }
    }

    /// Drains the outbox to the hub until `cancel`; never returns an error: every
    /// failure is retried, and nothing is dropped.
    pub async fn run_push(self, cancel: CancellationToken) {
        if !pause(&cancel, uniform(self.cfg.initial_delay)).await {
            return;
        }
        let mut failures = 0u32;
        let mut batch_size = self.cfg.batch_size.max(1);
        loop {
            match self.push_once(batch_size).await {
                Ok(true) => {
                    // A size that went through is kept (until a restart): growing back
                    // would walk down the halving ladder again on every batch.
                    failures = 0;
                }
                Ok(false) => {
                    failures = 0;
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(self.cfg.push_interval) => {}
                    }
                }
                Err(failure) => {
                    let failure = match failure {
                        // Nothing smaller to send: retrying at once would loop hot
                        // against the hub, so it is a failure like any other, backed off.
                        Failure::TooLarge if batch_size == 1 => Failure::Refused(
                            "the hub refused even a single record as too large (HTTP 413); \
                             check the upload limit of any proxy in front of the hub"
                                .into(),
                        ),
                        Failure::TooLarge => {
                            batch_size = (batch_size / 2).max(1);
                            tracing::warn!(
                                batch_size,
                                "the hub refused a batch as too large; sending smaller ones"
                            );
                            Failure::TooLarge
                        }
                        other => other,
                    };
                    let (wait, n) = self.wait_after(&failure, failures, self.cfg.push_interval);
                    failures = n;
                    self.note_failure(&failure, true, failures);
                    self.status
                        .update(|r| r.retry_in_ms = Some(wait.as_millis() as u64));
                    if !pause(&cancel, wait).await {
                        return;
                    }
                }
            }
            if cancel.is_cancelled() {
                return;
            }
        }
    }

    /// Sends one batch; `Ok(false)` when the outbox is empty.
    async fn push_once(&self, batch_size: usize) -> Result<bool, Failure> {
        let Some(batch) = self.side.next_batch(batch_size, BATCH_BYTES).await? else {
            return Ok(false);
        };
        let req = self
            .request(reqwest::Method::POST, "/sync/v1/records")?
            .header(reqwest::header::CONTENT_TYPE, NDJSON)
            .header(reqwest::header::CONTENT_ENCODING, "gzip")
            .body(batch.body.clone());
        let response = match self.send(req).await {
            Err(Failure::TooLarge) => {
                self.side.discard_batch(&batch).await?;
                return Err(Failure::TooLarge);
            }
            other => other?,
        };
        if response.status() == StatusCode::CONFLICT {
            return Err(Failure::Refused("the hub answered 409 to a push".into()));
        }
        let reply: BatchReply = response.json().await.map_err(|e| {
            Failure::Unreachable(format!(
                "the hub's reply was cut off or malformed: {}",
                error_chain(&e)
            ))
        })?;
        if reply.items.len() != batch.records as usize {
            return Err(Failure::Refused(format!(
                "the hub answered {} items for a batch of {}",
                reply.items.len(),
                batch.records
            )));
        }
        let at = jiff::Timestamp::now();
        self.side.settle(&batch, &reply, at).await?;
        if reply.high_water + 1 == batch.first_seq {
            // The hub took the batch yet holds nothing of it gap-free: sending it
            // again at once would loop hot; back off and say so.
            return Err(Failure::Refused(format!(
                "the hub answered for seq {}..={} but its high-water stays at {}; the batch will be sent again",
                batch.first_seq, batch.last_seq, reply.high_water
            )));
        }
        let rejected = reply
            .items
            .iter()
            .filter(|i| i.status == crate::wire::ItemStatus::Rejected)
            .count();
        metrics::counter!("kiosk_sync_records_pushed_total").increment(u64::from(batch.records));
        metrics::counter!("kiosk_sync_batches_total").increment(1);
        metrics::gauge!("kiosk_sync_hub_reachable").set(1.0);
        metrics::gauge!("kiosk_sync_last_push_timestamp_seconds").set(at.as_second() as f64);
        if rejected > 0 {
            metrics::counter!("kiosk_sync_records_quarantined_total").increment(rejected as u64);
        }
        self.status.update(|r| {
            r.hub_reachable = Some(true);
            r.auth_refused = false;
            r.last_error = None;
            r.last_push_ok = Some(at);
            r.push_failures = 0;
            r.retry_in_ms = None;
            r.records_pushed += u64::from(batch.records);
        });
        tracing::debug!(
            first = batch.first_seq,
            last = batch.last_seq,
            high_water = reply.high_water,
            rejected,
            "batch pushed"
        );
        Ok(true)
    }

    /// Keeps the roster current until `cancel`.
    pub async fn run_pull(self, cancel: CancellationToken) {
        if !pause(&cancel, uniform(self.cfg.initial_delay)).await {
            return;
        }
        let mut failures = 0u32;
        loop {
            let wait = match self.pull_once().await {
                Ok(()) => {
                    failures = 0;
                    self.cfg.pull_interval
                }
                Err(failure) => {
                    let (wait, n) = self.wait_after(&failure, failures, self.cfg.pull_interval);
                    failures = n;
                    self.note_failure(&failure, false, failures);
                    wait
                }
            };
            if !pause(&cancel, wait).await {
                return;
            }
        }
    }

    /// Brings the roster up to the hub's latest cursor: pages, or a snapshot when
    /// there is no cursor yet or the hub no longer keeps changes that old.
    async fn pull_once(&self) -> Result<(), Failure> {
        let mut cursor = match self.side.roster_cursor().await? {
            Some(c) => c,
            None => self.snapshot().await?,
        };
        loop {
            let req = self
                .request(reqwest::Method::GET, "/sync/v1/roster")?
                .query(&[
                    ("since", cursor.to_string()),
                    ("limit", PAGE_LIMIT.to_string()),
                ]);
            let response = self.send(req).await?;
            if response.status() == StatusCode::CONFLICT {
                let oldest = response
                    .json::<CursorExpired>()
                    .await
                    .map(|e| e.oldest)
                    .unwrap_or(0);
                tracing::info!(
                    cursor,
                    oldest,
                    "the hub no longer keeps changes since this kiosk's cursor; taking a snapshot"
                );
                metrics::counter!("kiosk_sync_cursor_expired_total").increment(1);
                cursor = self.snapshot().await?;
                continue;
            }
            let body = response.bytes().await.map_err(|e| {
                Failure::Unreachable(format!(
                    "the hub's roster page was cut off: {}",
                    error_chain(&e)
                ))
            })?;
            let (page, unknown) = crate::wire::parse_page(&body).map_err(|e| {
                Failure::Refused(format!("the hub's roster page is malformed: {e}"))
            })?;
            if unknown > 0 {
                // A newer hub's kinds of entry: skipped, so the rest still applies.
                tracing::info!(
                    unknown,
                    "roster changes of kinds this kiosk does not know were skipped"
                );
            }
            let (next, more, changes) = (page.next, page.more, page.changes.len());
            if next < cursor {
                return Err(Failure::Refused(format!(
                    "the hub's roster cursor went back from {cursor} to {next}"
                )));
            }
            let at = jiff::Timestamp::now();
            self.side.apply_roster_page(page, at).await?;
            if changes > 0 {
                tracing::info!(changes, cursor = next, "roster changes applied");
                metrics::counter!("kiosk_sync_roster_changes_total").increment(changes as u64);
            }
            self.pulled(at);
            cursor = next;
            if !more {
                return Ok(());
            }
        }
    }

    fn pulled(&self, at: jiff::Timestamp) {
        metrics::gauge!("kiosk_sync_hub_reachable").set(1.0);
        metrics::gauge!("kiosk_sync_last_pull_timestamp_seconds").set(at.as_second() as f64);
        self.status.update(|r| {
            r.hub_reachable = Some(true);
            r.auth_refused = false;
            r.last_error = None;
            r.last_pull_ok = Some(at);
            r.pull_failures = 0;
        });
    }

    /// Downloads a snapshot to the spool folder and hands it to the store.
    async fn snapshot(&self) -> Result<u64, Failure> {
        use futures_util::StreamExt as _;
        use tokio::io::AsyncWriteExt as _;

        // A million cards are tens of MB: on an office line that takes longer than
        // the client's usual limit, which the read timeout still guards.
        let req = self
            .request(reqwest::Method::GET, "/sync/v1/roster/snapshot")?
            .timeout(Duration::from_secs(3600));
        let response = self.send(req).await?;
        let path = self.cfg.spool_dir.join("roster-snapshot.ndjson.gz");
        let store_err = |e: std::io::Error| {
            Failure::Store(SideError(format!("cannot write {}: {e}", path.display())))
        };
        let mut file = tokio::fs::File::create(&path).await.map_err(store_err)?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                Failure::Unreachable(format!(
                    "the roster snapshot download broke off: {}",
                    error_chain(&e)
                ))
            })?;
            file.write_all(&chunk).await.map_err(store_err)?;
        }
        file.flush().await.map_err(store_err)?;
        drop(file);
        let at = jiff::Timestamp::now();
        let result = self.side.replace_roster(&path, at).await;
        let _ = tokio::fs::remove_file(&path).await;
        let cursor = result?;
        metrics::counter!("kiosk_sync_snapshots_total").increment(1);
        self.status.update(|r| r.snapshots_taken += 1);
        self.pulled(at);
        tracing::info!(cursor, "roster replaced from the hub's snapshot");
        Ok(cursor)
    }
}

/// Waits `d` unless cancelled first; `false` when cancelled.
async fn pause(cancel: &CancellationToken, d: Duration) -> bool {
    if d.is_zero() {
        return !cancel.is_cancelled();
    }
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// An error and its causes on one line ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
