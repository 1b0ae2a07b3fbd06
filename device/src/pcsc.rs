//! PC/SC backend: one thread with its own `pcsc::Context` watches every matching reader.
//!
//! The thread blocks in `SCardGetStatusChange` with a finite timeout, including the
//! `\\?PnP?\Notification` pseudo-reader so readers plugged in later are picked up.
//! Cancellation calls `Context::cancel()`, which wakes the blocked call at once. When
//! pcscd goes away the context is dropped and re-established with backoff: a context
//! never recovers once the service is gone.

use std::ffi::{CStr, CString};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pcsc::{Context, Disposition, Protocols, ReaderState, Scope, ShareMode, State};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{CardEvent, CardToken, Cooldown, DeviceEvent, glob};

/// The PC/SC "get data: UID" pseudo-APDU (PC/SC part 3), answered with UID + `90 00`.
pub const GET_UID: [u8; 5] = [0xFF, 0xCA, 0x00, 0x00, 0x00];

/// What the PC/SC backend needs to know.
#[derive(Debug, Clone)]
pub struct PcscOptions {
    /// Reader-name globs; a reader matching any of them is used.
    pub patterns: Vec<String>,
    pub cooldown: Duration,
    /// Upper bound of one blocking wait. Finite so a lost wake-up can never hang the
    /// thread for good; long enough that an idle kiosk stays near 0% CPU.
    pub wait: Duration,
}

/// Why the PC/SC backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start the PC/SC reader thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("the PC/SC backend must be started inside the tokio runtime")]
    NoRuntime,
}

/// Starts the backend's thread. It runs until `cancel` fires or the receiver is dropped.
pub fn spawn(
    options: PcscOptions,
    tx: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, SpawnError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| SpawnError::NoRuntime)?;
    let stop = Arc::new(Stop::default());
    let thread_done = CancellationToken::new();
    let handle = std::thread::Builder::new().name("pcsc".into()).spawn({
        let stop = stop.clone();
        let thread_done = thread_done.clone();
        move || {
            let _done = thread_done.drop_guard();
            Backend { options, tx, stop }.run();
        }
    })?;
    // Bridges the async token to the blocking world; ends with the thread either way.
    runtime.spawn(async move {
        tokio::select! {
            () = cancel.cancelled() => stop.fire(),
            () = thread_done.cancelled() => {}
        }
    });
    Ok(handle)
}

/// Stop flag plus the context to cancel, shared between the thread and the async side.
#[derive(Default)]
struct Stop {
    inner: Mutex<StopInner>,
    wake: Condvar,
}

#[derive(Default)]
struct StopInner {
    stopped: bool,
    context: Option<Context>,
}

impl Stop {
    fn fire(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.stopped = true;
        if let Some(ctx) = &inner.context {
            // Wakes a thread blocked in get_status_change; an error means the
            // context is already dead, and the thread will see `stopped` anyway.
            let _ = ctx.cancel();
        }
        self.wake.notify_all();
    }

    fn stopped(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stopped
    }

    /// Registers the live context; false when already stopped.
    fn set_context(&self, ctx: Option<Context>) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.context = ctx;
        !inner.stopped
    }

    /// Waits up to `d`; true when stopped meanwhile.
    fn wait(&self, d: Duration) -> bool {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (inner, _) = self
            .wake
            .wait_timeout_while(inner, d, |i| !i.stopped)
            .unwrap_or_else(PoisonError::into_inner);
        inner.stopped
    }
}

/// One watched reader; `slots[i]` goes with `states[i + 1]` (index 0 is PnP).
struct Slot {
    name: String,
    present: bool,
    event_count: u32,
    cooldown: Cooldown,
}

/// The receiver is gone: the daemon is shutting down.
struct Closed;

struct Backend {
    options: PcscOptions,
    tx: mpsc::Sender<DeviceEvent>,
    stop: Arc<Stop>,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

impl Backend {
    fn send(&self, event: DeviceEvent) -> Result<(), Closed> {
        self.tx.blocking_send(event).map_err(|_| Closed)
    }

    fn run(self) {
        let mut backoff = BACKOFF_FIRST;
        let mut service_up: Option<bool> = None;
        while !self.stop.stopped() {
            let ctx = match Context::establish(Scope::User) {
                Ok(ctx) => ctx,
                Err(e) => {
                    if service_up != Some(false) {
                        service_up = Some(false);
                        let detail = format!(
                            "pcscd is not reachable ({e}); is pcscd installed and running? On Debian: apt install pcscd; systemctl start pcscd.socket"
                        );
                        tracing::warn!(error = %e, "PC/SC service unavailable; will keep trying");
                        if self.send(service(false, detail)).is_err() {
                            return;
                        }
                    }
                    if self.stop.wait(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            if !self.stop.set_context(Some(ctx.clone())) {
                return;
            }
            tracing::info!("PC/SC service reachable; watching readers");
            if self.send(service(true, "pcscd reachable".into())).is_err() {
                return;
            }
            let started = Instant::now();
            let mut slots = Vec::new();
            let outcome = self.watch(&ctx, &mut slots);
            self.stop.set_context(None);
            for slot in slots {
                let gone = DeviceEvent::Reader {
                    reader: slot.name,
                    connected: false,
                };
                if self.send(gone).is_err() {
                    return;
                }
            }
            match outcome {
                Ok(Ok(())) | Err(Closed) => return,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "lost the PC/SC service; re-establishing");
                    service_up = Some(false);
                    let detail = format!("lost pcscd ({e}); reconnecting");
                    if self.send(service(false, detail)).is_err() {
                        return;
                    }
                }
            }
            if started.elapsed() > BACKOFF_MAX {
                backoff = BACKOFF_FIRST;
            }
            if self.stop.wait(backoff) {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Watches readers on one context until cancelled (`Ok(Ok)`), the daemon closes
    /// (`Err`), or the service fails (`Ok(Err)`).
    fn watch(
        &self,
        ctx: &Context,
        slots: &mut Vec<Slot>,
    ) -> Result<Result<(), pcsc::Error>, Closed> {
        let mut states = vec![ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE)];
        let mut ignored: Vec<String> = Vec::new();
        let mut warned_empty = false;
        let mut relist = true;
        loop {
            // Context::cancel only wakes a wait already in progress; a stop that came
            // while we were reading a card is seen here.
            if self.stop.stopped() {
                return Ok(Ok(()));
            }
            if relist {
                relist = false;
                if let Err(e) =
                    self.relist(ctx, &mut states, slots, &mut ignored, &mut warned_empty)?
                {
                    return Ok(Err(e));
                }
            }
            match ctx.get_status_change(self.options.wait, &mut states) {
                Ok(()) => {}
                Err(pcsc::Error::Timeout) => continue,
                Err(pcsc::Error::Cancelled) => return Ok(Ok(())),
                // A reader vanished between listing and waiting.
                Err(pcsc::Error::UnknownReader) => {
                    relist = true;
                    continue;
                }
                Err(e) => return Ok(Err(e)),
            }
            if self.stop.stopped() {
                return Ok(Ok(()));
            }
            if states[0].event_state().contains(State::CHANGED) {
                relist = true;
            }
            states[0].sync_current_state();
            for (slot, state) in slots.iter_mut().zip(states.iter_mut().skip(1)) {
                let ev = state.event_state();
                if !ev.contains(State::CHANGED) {
                    continue;
                }
                state.sync_current_state();
                if ev.intersects(State::UNKNOWN | State::IGNORE | State::UNAVAILABLE) {
                    relist = true;
                    continue;
                }
                let present = ev.contains(State::PRESENT);
                let count = state.event_count();
                // A removal and a new insertion between two wake-ups show up as
                // PRESENT both times with a higher event count.
                let swapped = present && slot.present && count != slot.event_count;
                slot.event_count = count;
                if slot.present && (!present || swapped) {
                    slot.present = false;
                    slot.cooldown.on_removed(Instant::now());
                    self.send(DeviceEvent::Presence {
                        reader: slot.name.clone(),
                        present: false,
                    })?;
                }
                if present && !slot.present {
                    slot.present = true;
                    if !ev.contains(State::MUTE) {
                        self.read_card(ctx, state.name(), slot)?;
                    } else {
                        tracing::debug!(reader = %slot.name, "card present but mute; no event");
                    }
                    // After the read: whoever sees this knows the card was handled
                    // (greeted, suppressed, or unreadable).
                    self.send(DeviceEvent::Presence {
                        reader: slot.name.clone(),
                        present: true,
                    })?;
                }
            }
        }
    }

    fn read_card(&self, ctx: &Context, name: &CStr, slot: &mut Slot) -> Result<(), Closed> {
        match read_uid(ctx, name) {
            Ok(uid) => {
                let read_at = Instant::now();
                let token = CardToken::nfc(&uid);
                if slot.cooldown.on_card(&token, read_at) {
                    let event = CardEvent {
                        reader: slot.name.clone(),
                        token,
                        at: jiff::Timestamp::now(),
                        read_at,
                    };
                    self.send(DeviceEvent::Card(event))?;
                } else {
                    tracing::debug!(reader = %slot.name, card = %token, "same card inside cooldown; no event");
                }
            }
            // Card pulled mid-read, reset, or not a card we can talk to: the next tap works.
            Err(e) => {
                tracing::debug!(reader = %slot.name, error = %e, "could not read the card's UID; no event")
            }
        }
        Ok(())
    }

    /// Brings `slots` and `states` in line with the readers pcscd lists now.
    fn relist(
        &self,
        ctx: &Context,
        states: &mut Vec<ReaderState>,
        slots: &mut Vec<Slot>,
        ignored: &mut Vec<String>,
        warned_empty: &mut bool,
    ) -> Result<Result<(), pcsc::Error>, Closed> {
        let names = match ctx.list_readers_owned() {
            Ok(names) => names,
            Err(pcsc::Error::NoReadersAvailable) => Vec::new(),
            Err(e) => return Ok(Err(e)),
        };
        let names: Vec<(CString, String)> = names
            .into_iter()
            .map(|c| {
                let s = c.to_string_lossy().into_owned();
                (c, s)
            })
            .collect();
        for i in (0..slots.len()).rev() {
            if !names.iter().any(|(_, s)| *s == slots[i].name) {
                let slot = slots.remove(i);
                states.remove(i + 1);
                tracing::info!(reader = %slot.name, "reader removed");
                self.send(DeviceEvent::Reader {
                    reader: slot.name,
                    connected: false,
                })?;
            }
        }
        for (cname, name) in names {
            if slots.iter().any(|s| s.name == name) {
                continue;
            }
            if !self
                .options
                .patterns
                .iter()
                .any(|p| glob::matches(p, &name))
            {
                if !ignored.contains(&name) {
                    tracing::info!(reader = %name, "ignoring reader: no [[reader]] name matches it");
                    ignored.push(name);
                }
                continue;
            }
            tracing::info!(reader = %name, "reader connected");
            states.push(ReaderState::new(cname, State::UNAWARE));
            slots.push(Slot {
                name: name.clone(),
                present: false,
                event_count: 0,
                cooldown: Cooldown::new(self.options.cooldown),
            });
            self.send(DeviceEvent::Reader {
                reader: name,
                connected: true,
            })?;
        }
        if slots.is_empty() && !*warned_empty {
            tracing::warn!(
                patterns = ?self.options.patterns,
                "no PC/SC reader matches the configured names yet; waiting for one to be plugged in (see `kiosk readers`)"
            );
        }
        *warned_empty = slots.is_empty();
        Ok(Ok(()))
    }
}

fn service(up: bool, detail: String) -> DeviceEvent {
    DeviceEvent::Service {
        backend: "pcsc",
        up,
        detail,
    }
}

/// Why a card's UID could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("PC/SC: {0}")]
    Pcsc(#[from] pcsc::Error),
    #[error("the reader answered GET UID with status {0:02X}{1:02X}")]
    Status(u8, u8),
    #[error("the reader answered GET UID with {0} bytes, too short for a UID")]
    Short(usize),
}

/// Connects to the card on `reader`, asks its UID, and leaves the card as it was.
pub fn read_uid(ctx: &Context, reader: &CStr) -> Result<Vec<u8>, ReadError> {
    let card = ctx.connect(reader, ShareMode::Shared, Protocols::ANY)?;
    let mut buf = [0u8; 64];
    let response = card.transmit(&GET_UID, &mut buf)?;
    let uid = match response {
        [uid @ .., 0x90, 0x00] if !uid.is_empty() => uid.to_vec(),
        [.., sw1, sw2] => return Err(ReadError::Status(*sw1, *sw2)),
        short => return Err(ReadError::Short(short.len())),
    };
    // Leaving the card powered keeps the next read fast; a failure here is harmless.
    let _ = card.disconnect(Disposition::LeaveCard);
    Ok(uid)
}

/// Lists the PC/SC readers pcscd knows now, for `kiosk readers`.
pub fn list_readers() -> Result<Vec<String>, pcsc::Error> {
    let ctx = Context::establish(Scope::User)?;
    match ctx.list_readers_owned() {
        Ok(names) => Ok(names
            .into_iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect()),
        Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}
