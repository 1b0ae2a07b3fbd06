//! Wiring: readers → reception loop → store writer → SSE; the HTTP server; named tasks and shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kiosk_config::{Config, ReaderConfig};
use kiosk_device::fake::FakeReader;
use kiosk_device::{DeviceEvent, Signal, pcsc, serial};
use kiosk_sync::client::{ClientConfig, SyncClient};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerts::{Alerts, Policy, WallClock};
use crate::api::{self, ApiState, Board, Greeting, KioskInfo, PublicEvent};
use crate::console::ScreenSettings;
use crate::handheld::{RATE_BURST, RATE_PER_SECOND, RateLimiter};
use crate::store::{Identity, ReadDb, Store, StoreError, TapInput, Writer};
use crate::sync_side::SyncSide;

/// How long shutdown may take before the daemon gives up waiting for its tasks.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often rejected walk-ins' names and phones past their retention are looked for
/// (also once at start): a retention is counted in days, an hour late is nothing.
const ERASE_EVERY: Duration = Duration::from_secs(3600);

/// Extra readers beyond the config, for the demo.
#[derive(Debug, Default)]
pub struct Extras {
    pub simulated: Option<FakeReader>,
}

/// A built kiosk: store open, port bound, nothing running yet.
#[derive(Debug)]
pub struct App {
    config: Config,
    extras: Extras,
    listener: TcpListener,
    writer: Writer,
    writer_thread: std::thread::JoinHandle<()>,
    state: ApiState,
    /// Present when `[sync]` is configured.
    sync: Option<SyncClient<SyncSide>>,
}

impl App {
    /// Opens the store and binds the listener; fails with a message saying what to fix.
    pub async fn build(config: Config, extras: Extras) -> anyhow::Result<App> {
        let k = &config.kiosk;
        let identity = Identity {
            kiosk_id: k.id.to_string(),
            office_id: k.office.to_string(),
            time_zone: k.time_zone.clone(),
        };
        let webhooks = if config.webhooks.is_empty() {
            None
        } else {
            let hooks = config
                .webhooks
                .iter()
                .map(crate::webhooks::Hook::from_config)
                .collect::<anyhow::Result<Vec<_>>>()?;
            Some(Arc::new(crate::webhooks::Webhooks::new(
                hooks,
                k.time_zone.clone(),
            )))
        };
        // Stored by the store's writer with each visit, announced by the API after the commit.
        let alerts = Arc::new(Alerts::new(
            Policy {
                manager: config.reception.manager.as_ref().map(ToString::to_string),
                escalate_after: config.reception.escalate_after,
            },
            Arc::new(WallClock),
            webhooks.clone(),
        ));
        // Opening may create folders, run the schema and fsync: not on a runtime worker.
        let (data_dir, tz) = (k.data_dir.clone(), k.time_zone.clone());
        let periods = crate::reception::ProtectionPeriods::from_config(&config.reception);
        let visit_alerts = Arc::clone(&alerts);
        let retention = config.reception.rejected_walk_in_retention;
        let (store, db) = tokio::task::spawn_blocking(move || {
            let mut store = Store::open(&data_dir, identity)?;
            store.set_protection_periods(periods);
            store.set_alerts(visit_alerts);
            // Before anything is served: what expired while the kiosk was off goes first.
            let erased = crate::sync_side::erase_expired(
                store.conn_mut(),
                jiff::Timestamp::now(),
                retention,
            )?;
            if erased > 0 {
                tracing::info!(
                    erased,
                    "rejected walk-ins' names and phones erased after their retention"
                );
            }
            Ok::<_, StoreError>((store, ReadDb::open(&data_dir, tz)?))
        })
        .await
        .context("the store's opening task failed")??;
        let screen_cfg = config.screen.clone();
        let screen = tokio::task::spawn_blocking(move || ScreenSettings::load(&screen_cfg))
            .await
            .context("reading the screen's logo failed")??;
        let (writer, writer_thread) =
            Writer::spawn(store).context("cannot start the store's writer thread")?;
        let listener = TcpListener::bind(k.listen).await.with_context(|| {
            format!(
                "cannot listen on {}; is another kiosk running, or is kiosk.listen wrong?",
                k.listen
            )
        })?;
        let sync = match &config.sync {
            Some(cfg) => {
                let client_cfg = ClientConfig {
                    hub: cfg.hub.clone(),
                    kiosk_id: k.id.to_string(),
                    token_file: cfg.token_file.clone(),
                    ca_file: cfg.ca_file.clone(),
                    push_interval: cfg.push_interval,
                    pull_interval: cfg.pull_interval,
                    batch_size: cfg.batch_size,
                    backoff_cap: cfg.backoff_cap,
                    initial_delay: cfg.initial_delay,
                    spool_dir: k.data_dir.clone(),
                };
                let side = SyncSide::new(writer.clone(), db.clone())
                    .with_rejected_retention(config.reception.rejected_walk_in_retention);
                Some(SyncClient::new(client_cfg, Arc::new(side))?)
            }
            None => None,
        };
        // Before any task counts anything: the recorder must exist first.
        kiosk_sync::telemetry::prometheus();
        let (events, _) = broadcast::channel(256);
        let board = Board::default();
        for reader in &config.readers {
            if let ReaderConfig::Serial(r) = reader {
                board.register(&r.name, kiosk_device::ReaderKind::Serial);
            }
        }
        let state = ApiState {
            info: Arc::new(KioskInfo {
                kiosk_id: k.id.to_string(),
                office: k.office.to_string(),
                office_name: k.office_name.clone(),
                time_zone: k.time_zone_name.clone(),
                data_dir: k.data_dir.clone(),
                reader_patterns: pcsc_patterns(&config),
                privacy_notice_version: config.reception.privacy_notice_version.clone(),
                screen,
            }),
            db,
            board,
            events,
            shutdown: CancellationToken::new(),
            sync: sync.as_ref().map(SyncClient::status),
            writer: writer.clone(),
            sync_wake: sync.as_ref().map(SyncClient::waker),
            limiter: Arc::new(RateLimiter::new(RATE_PER_SECOND, RATE_BURST)),
            alerts,
            webhooks,
        };
        Ok(App {
            config,
            extras,
            listener,
            writer,
            writer_thread,
            state,
            sync,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs until `cancel` fires (or a task fails), then drains and stops.
    pub async fn run_until_stopped(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let App {
            config,
            extras,
            listener,
            writer,
            writer_thread,
            state,
            sync,
        } = self;
        let tasks = TaskTracker::new();
        // Not supervised: a failed pre-read costs only the first taps' speed.
        let data_dir = config.kiosk.data_dir.clone();
        tasks.spawn_blocking(move || {
            let started = std::time::Instant::now();
            match crate::store::preread(&data_dir) {
                Ok(bytes) => tracing::info!(
                    mib = bytes / (1024 * 1024),
                    millis = started.elapsed().as_millis() as u64,
                    "database read into the OS cache, so the first taps find the roster there"
                ),
                Err(e) => tracing::warn!(error = %e, "could not pre-read the database; the first taps after start may be slower"),
            }
        });
        let failed = CancellationToken::new();
        // One token for the whole daemon: a signal or a failing task stops everything.
        let stop = cancel.child_token();
        let (tx, rx) = mpsc::channel::<DeviceEvent>(256);

        let mut pcsc_readers: Vec<pcsc::PcscReader> = config
            .readers
            .iter()
            .filter_map(|r| match r {
                ReaderConfig::Pcsc { name, feedback } => Some(pcsc::PcscReader {
                    pattern: name.clone(),
                    feedback: *feedback,
                }),
                ReaderConfig::Serial(_) => None,
            })
            .collect();
        let cooldown = config.reception.same_card_cooldown;
        if !pcsc_readers.is_empty() || extras.simulated.is_some() {
            // The demo also shows any real reader when pcscd answers.
            if pcsc_readers.is_empty() {
                pcsc_readers.push(pcsc::PcscReader {
                    pattern: "*".to_owned(),
                    feedback: kiosk_config::PcscFeedback::None,
                });
            }
            let options = pcsc::PcscOptions {
                readers: pcsc_readers,
                cooldown,
                wait: Duration::from_secs(5),
            };
            let thread = pcsc::spawn(options, tx.clone(), stop.clone())?;
            supervise_thread(&tasks, "pcsc".to_owned(), thread, &stop, &failed);
        }
        for reader in &config.readers {
            if let ReaderConfig::Serial(r) = reader {
                let options = serial::SerialOptions {
                    reader: r.clone(),
                    cooldown,
                };
                let thread = serial::spawn(options, tx.clone(), stop.clone())?;
                supervise_thread(&tasks, format!("serial {}", r.name), thread, &stop, &failed);
            }
        }
        if let Some(fake) = extras.simulated {
            supervise(&tasks, "simulated-reader", &stop, &failed, {
                let (tx, stop) = (tx.clone(), stop.clone());
                async move {
                    fake.run(tx, stop).await;
                    Ok(())
                }
            });
        }
        drop(tx);

        if let Some(client) = sync {
            // Both loops retry every failure themselves; they end only at shutdown.
            let push = client.clone();
            let push_stop = stop.clone();
            supervise(&tasks, "sync-push", &stop, &failed, async move {
                push.run_push(push_stop).await;
                Ok(())
            });
            let pull_stop = stop.clone();
            supervise(&tasks, "sync-pull", &stop, &failed, async move {
                client.run_pull(pull_stop).await;
                Ok(())
            });
        }

        supervise(
            &tasks,
            "reception",
            &stop,
            &failed,
            reception(rx, writer, state.clone(), stop.clone()),
        );

        // Ends only at shutdown (or when the writer is gone).
        supervise(
            &tasks,
            "escalation",
            &stop,
            &failed,
            state.alerts.clone().run_escalation(
                state.writer.clone(),
                state.db.clone(),
                stop.clone(),
            ),
        );

        supervise(
            &tasks,
            "erase-personal-data",
            &stop,
            &failed,
            erase_expired(
                state.writer.clone(),
                config.reception.rejected_walk_in_retention,
                stop.clone(),
            ),
        );

        if let Some(hooks) = state.webhooks.clone() {
            // Retries every failure itself; ends only at shutdown.
            supervise(
                &tasks,
                "webhooks",
                &stop,
                &failed,
                hooks.run(state.writer.clone(), state.db.clone(), stop.clone()),
            );
        }

        let router = api::router(state.clone());
        supervise(&tasks, "http", &stop, &failed, {
            let stop = stop.clone();
            let sse_shutdown = state.shutdown.clone();
            async move {
                axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move {
                    stop.cancelled().await;
                    sse_shutdown.cancel();
                })
                .await
                .context("HTTP server failed")
            }
        });
        // The state holds a Writer: only the tasks may keep it, so the writer thread
        // ends once they have.
        drop(state);
        tasks.close();

        stop.cancelled().await;
        tracing::info!("stopping: finishing in-flight taps");
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            // Includes the reader threads' joins.
            tasks.wait().await;
            // The reception task dropped the last Writer: the thread has finished
            // its queue and commits by the time it ends.
            let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("some tasks did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
        }
        if failed.is_cancelled() {
            anyhow::bail!("the kiosk stopped because a task failed; see the log above");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Every [`ERASE_EVERY`], erases the names and phones of rejected walk-ins kept past
/// `retention` (`sync_side::erase_expired`). A failure is logged and tried again at the
/// next round; ends at shutdown.
async fn erase_expired(
    writer: Writer,
    retention: Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(ERASE_EVERY) => {}
        }
        let now = jiff::Timestamp::now();
        let erased = writer
            .call(move |store| crate::sync_side::erase_expired(store.conn_mut(), now, retention))
            .await;
        match erased {
            Ok(0) => {}
            Ok(erased) => tracing::info!(
                erased,
                "rejected walk-ins' names and phones erased after their retention"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "erasing rejected walk-ins' names and phones failed; tried again in an hour"
            ),
        }
    }
}

fn pcsc_patterns(config: &Config) -> Vec<String> {
    config
        .readers
        .iter()
        .filter_map(|r| match r {
            ReaderConfig::Pcsc { name, .. } => Some(name.clone()),
            ReaderConfig::Serial(_) => None,
        })
        .collect()
}

/// Watches a reader thread like a task: if it ends before shutdown (a panic), the
/// daemon stops rather than running on with a reader that silently died.
fn supervise_thread(
    tasks: &TaskTracker,
    name: String,
    thread: std::thread::JoinHandle<()>,
    stop: &CancellationToken,
    failed: &CancellationToken,
) {
    let task = name.clone();
    supervise(tasks, task, stop, failed, async move {
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => anyhow::bail!("the reader thread {name:?} panicked"),
            Err(e) => Err(anyhow::Error::new(e).context("joining a reader thread")),
        }
    });
}

/// Spawns a named long-lived task. Any exit before shutdown stops the daemon
/// (fail fast: systemd restarts it), and every exit is logged.
fn supervise(
    tasks: &TaskTracker,
    name: impl Into<String>,
    stop: &CancellationToken,
    failed: &CancellationToken,
    fut: impl Future<Output = anyhow::Result<()>> + Send + 'static,
) {
    let (stop, failed) = (stop.clone(), failed.clone());
    let name: String = name.into();
    tasks.spawn(async move {
        let result = fut.await;
        match (&result, stop.is_cancelled()) {
            (Ok(()), true) => tracing::debug!(task = %name, "task stopped"),
            (Ok(()), false) => {
                tracing::error!(task = %name, "task ended unexpectedly; stopping the kiosk");
                failed.cancel();
            }
            (Err(e), _) => {
                tracing::error!(
                    task = %name,
                    error = format!("{e:#}"),
                    "task failed; stopping the kiosk"
                );
                failed.cancel();
            }
        }
        stop.cancel();
    });
}

/// Turns device events into stored visits and screen events, strictly in order.
/// Ends at shutdown, once every reader backend has stopped and the channel is drained.
async fn reception(
    mut rx: mpsc::Receiver<DeviceEvent>,
    writer: Writer,
    state: ApiState,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let publish = |ev: PublicEvent| {
        // No subscriber is fine: the screen may not be open.
        let _ = state.events.send(ev);
    };
    while let Some(event) = rx.recv().await {
        match event {
            DeviceEvent::Card(mut card) => {
                state.board.tapped(&card.reader, card.at);
                if let Some(version) = card.version {
                    tracing::debug!(reader = %card.reader, card = %card.token, version = format!("{version:02X}"), "EM4100 tag read");
                }
                let input = TapInput {
                    source: card.reader.clone(),
                    token: card.token.clone(),
                    device_time: card.at,
                };
                let result = writer
                    .call_grouped(move |store| store.record_tap_in_group(&input))
                    .await;
                let signal = |welcome: bool| {
                    if welcome {
                        Signal::Welcome
                    } else {
                        Signal::Refused
                    }
                };
                match result {
                    Ok(rec) => {
                        if let Some(feedback) = card.feedback.take() {
                            let greeted = matches!(
                                rec.visit.outcome.as_str(),
                                "welcome" | "broker_confirmed"
                            );
                            feedback.send(signal(greeted));
                        }
                        let repeat = matches!(rec.decision, crate::rules::Decision::Repeat);
                        state.visit_committed(
                            &rec.visit,
                            repeat,
                            &card.reader,
                            card.at,
                            rec.alerts,
                            Some(card.read_at),
                        );
                    }
                    Err(e) => {
                        if let Some(feedback) = card.feedback.take() {
                            feedback.send(signal(false));
                        }
                        publish(PublicEvent::Greeting(Greeting::store_failed(
                            &card.reader,
                            card.at,
                        )));
                        if matches!(e, StoreError::WriterGone) {
                            // Nothing can be stored any more: stop so systemd restarts us.
                            anyhow::bail!("the store's writer thread has stopped");
                        }
                        tracing::error!(reader = %card.reader, error = %e, "could not store a tap; the visitor is sent to reception");
                    }
                }
                tracing::debug!(
                    reader = %card.reader,
                    micros = card.read_at.elapsed().as_micros() as u64,
                    "tap: UID read to greeting published"
                );
            }
            DeviceEvent::Presence { reader, present } => {
                publish(PublicEvent::Reader(
                    state.board.set_present(&reader, present).into(),
                ));
            }
            DeviceEvent::Reader(update) => {
                publish(PublicEvent::Reader(state.board.update(&update).into()));
            }
            DeviceEvent::Service {
                backend,
                up,
                detail,
            } => {
                state.board.set_service(backend, up, detail);
            }
        }
    }
    // Every backend has ended: at shutdown, or at once when no reader is configured
    // (handhelds only). The store stays open for the API until shutdown.
    drop(writer);
    stop.cancelled().await;
    Ok(())
}
