//! PC/SC backend: one thread with its own `pcsc::Context` watches every matching reader.
//!
//! The thread blocks in `SCardGetStatusChange` with a finite timeout, including the
//! `\\?PnP?\Notification` pseudo-reader so readers plugged in later are picked up.
//! Cancellation calls `Context::cancel()`, which wakes the blocked call at once. When
//! pcscd goes away the context is dropped and re-established with backoff: a context
//! never recovers once the service is gone.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiosk_config::PcscFeedback;
use pcsc::{Card, Context, Disposition, Protocols, ReaderState, Scope, ShareMode, State};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::thread::{self, Backoff, SpawnError, Stop};
use crate::{
    CardEvent, CardToken, Debounce, DeviceEvent, Feedback, ReaderKind, ReaderUpdate, Signal, glob,
};

/// The PC/SC "get data: UID" pseudo-APDU (PC/SC part 3), answered with UID + `90 00`.
pub const GET_UID: [u8; 5] = [0xFF, 0xCA, 0x00, 0x00, 0x00];

/// ACR122U "bi-color LED and buzzer control" (`FF 00 40 P2 04 T1 T2 repeat buzzer`),
/// answered `90` + the LED state. Welcome: green blinks once for 200 ms with a beep.
pub const LED_WELCOME: [u8; 9] = [0xFF, 0x00, 0x40, 0xA8, 0x04, 0x02, 0x01, 0x01, 0x01];
/// Refused: red blinks twice with two short beeps, then stays red (the idle colour).
pub const LED_REFUSED: [u8; 9] = [0xFF, 0x00, 0x40, 0x55, 0x04, 0x01, 0x01, 0x02, 0x01];
/// How long the thread holds a card waiting for the reception's decision. It is
/// normally a millisecond; a roster import holding the database must not stall the
/// readers for long.
const FEEDBACK_WAIT: Duration = Duration::from_secs(1);

/// One `[[reader]] kind = "pcsc"` entry.
#[derive(Debug, Clone)]
pub struct PcscReader {
    /// Reader-name glob.
    pub pattern: String,
    pub feedback: PcscFeedback,
}

/// What the PC/SC backend needs to know.
#[derive(Debug, Clone)]
pub struct PcscOptions {
    /// A reader matching any pattern is used, with the first match's settings.
    pub readers: Vec<PcscReader>,
    pub cooldown: Duration,
    /// Upper bound of one blocking wait. Finite so a lost wake-up can never hang the
    /// thread for good; long enough that an idle kiosk stays near 0% CPU.
    pub wait: Duration,
}

/// Starts the backend's thread. It runs until `cancel` fires or the receiver is dropped.
pub fn spawn(
    options: PcscOptions,
    tx: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, SpawnError> {
    thread::spawn("pcsc", cancel, move |stop| {
        Backend {
            options,
            tx,
            stop,
            memory: HashMap::new(),
        }
        .run();
    })
}

/// One watched reader; `slots[i]` goes with `states[i + 1]` (index 0 is PnP).
struct Slot {
    name: String,
    present: bool,
    event_count: u32,
    feedback: PcscFeedback,
}

/// What the backend remembers of a reader by name, across pcscd restarts and replugs:
/// a card held through either is not a second tap, and a reader that refused the LED
/// command is not asked again.
struct Memory {
    debounce: Debounce,
    feedback_refused: bool,
}

/// The receiver is gone: the daemon is shutting down.
struct Closed;

struct Backend {
    options: PcscOptions,
    tx: mpsc::Sender<DeviceEvent>,
    stop: Arc<Stop>,
    memory: HashMap<String, Memory>,
}

/// Re-establish backoff. A failed establish is one refused connect on pcscd's local
/// socket, so a low cap costs nothing and bounds the gap after a pcscd restart (a
/// package upgrade) to about 2 s.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

fn send(tx: &mpsc::Sender<DeviceEvent>, event: DeviceEvent) -> Result<(), Closed> {
    tx.blocking_send(event).map_err(|_| Closed)
}

fn reader_update(reader: String, connected: bool, problem: Option<String>) -> DeviceEvent {
    DeviceEvent::Reader(ReaderUpdate {
        reader,
        kind: ReaderKind::Pcsc,
        connected,
        problem,
        reopen_attempts: 0,
    })
}

impl Backend {
    fn send(&self, event: DeviceEvent) -> Result<(), Closed> {
        send(&self.tx, event)
    }

    fn run(mut self) {
        let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
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
                    if self.stop.wait(backoff.next_delay()) {
                        return;
                    }
                    continue;
                }
            };
            let waker = ctx.clone();
            // Context::cancel wakes the thread blocked in get_status_change; an error
            // means the context is already dead, and the thread sees the flag anyway.
            if !self.stop.set_waker(Some(Box::new(move || {
                let _ = waker.cancel();
            }))) {
                return;
            }
            tracing::info!("PC/SC service reachable; watching readers");
            if self.send(service(true, "pcscd reachable".into())).is_err() {
                return;
            }
            let started = Instant::now();
            let mut slots = Vec::new();
            let outcome = self.watch(&ctx, &mut slots);
            self.stop.set_waker(None);
            for slot in slots {
                if self.forget_presence(&slot, false).is_err() {
                    return;
                }
                let gone = reader_update(slot.name, false, Some("pcscd went away".into()));
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
                backoff.reset();
            }
            if self.stop.wait(backoff.next_delay()) {
                return;
            }
        }
    }

    /// A slot whose card is no longer seen. `left`: the reader reported it gone, so its
    /// cooldown starts now. Otherwise the reader itself went away (pcscd restart,
    /// unplug) and the card may still be on it: the memory keeps it present, so reading
    /// it again when the reader is back is no second tap.
    fn forget_presence(&mut self, slot: &Slot, left: bool) -> Result<(), Closed> {
        if let Some(m) = self.memory.get_mut(&slot.name) {
            if left {
                m.debounce.on_removed(Instant::now());
            } else {
                m.debounce.on_reader_lost(Instant::now());
            }
        }
        if slot.present {
            self.send(DeviceEvent::Presence {
                reader: slot.name.clone(),
                present: false,
            })?;
        }
        Ok(())
    }

    /// Watches readers on one context until cancelled (`Ok(Ok)`), the daemon closes
    /// (`Err`), or the service fails (`Ok(Err)`).
    fn watch(
        &mut self,
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
                    self.forget_presence(slot, true)?;
                    slot.present = false;
                } else if !present {
                    // A reader back from an outage without the card that was on it.
                    if let Some(m) = self.memory.get_mut(&slot.name) {
                        m.debounce.on_removed(Instant::now());
                    }
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

    fn read_card(&mut self, ctx: &Context, name: &CStr, slot: &Slot) -> Result<(), Closed> {
        // Card pulled mid-read (REMOVED_CARD, RESET_CARD, COMM_DATA_LOST…), or not a
        // card we can talk to: no event, and the next tap works.
        let card = match ctx.connect(name, ShareMode::Shared, Protocols::ANY) {
            Ok(card) => card,
            Err(e) => {
                tracing::debug!(reader = %slot.name, error = %e, "could not connect to the card; no event");
                return Ok(());
            }
        };
        let uid = match get_uid(&card) {
            Ok(uid) => uid,
            Err(e) => {
                tracing::debug!(reader = %slot.name, error = %e, "could not read the card's UID; no event");
                return Ok(());
            }
        };
        let read_at = Instant::now();
        let token = CardToken::nfc(&uid);
        let memory = self
            .memory
            .entry(slot.name.clone())
            .or_insert_with(|| Memory {
                debounce: Debounce::new(self.options.cooldown),
                feedback_refused: false,
            });
        if !memory.debounce.on_card(&token, read_at) {
            tracing::debug!(reader = %slot.name, card = %token, "same card inside cooldown; no event");
            return Ok(());
        }
        let wants_feedback = slot.feedback == PcscFeedback::Acr122u && !memory.feedback_refused;
        let (feedback, outcome) = if wants_feedback {
            let (tx, rx) = Feedback::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let event = CardEvent {
            reader: slot.name.clone(),
            token,
            at: jiff::Timestamp::now(),
            read_at,
            version: None,
            feedback,
        };
        send(&self.tx, DeviceEvent::Card(event))?;
        if let Some(outcome) = outcome {
            match outcome.recv_timeout(FEEDBACK_WAIT) {
                Ok(signal) => {
                    if let Err(Some(status)) = show(&card, signal) {
                        tracing::info!(reader = %slot.name, status, "the reader refused the LED/buzzer command; no more feedback on this reader");
                        memory.feedback_refused = true;
                    }
                }
                Err(_) => {
                    tracing::debug!(reader = %slot.name, "no outcome for the tap in time; no feedback")
                }
            }
        }
        // Leaving the card powered keeps the next read fast; a failure here is harmless.
        let _ = card.disconnect(Disposition::LeaveCard);
        Ok(())
    }

    /// Brings `slots` and `states` in line with the readers pcscd lists now.
    fn relist(
        &mut self,
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
                self.forget_presence(&slot, false)?;
                self.send(reader_update(slot.name, false, Some("unplugged".into())))?;
            }
        }
        for (cname, name) in names {
            if slots.iter().any(|s| s.name == name) {
                continue;
            }
            let Some(config) = self
                .options
                .readers
                .iter()
                .find(|r| glob::matches(&r.pattern, &name))
            else {
                if !ignored.contains(&name) {
                    tracing::info!(reader = %name, "ignoring reader: no [[reader]] name matches it");
                    ignored.push(name);
                }
                continue;
            };
            tracing::info!(reader = %name, "reader connected");
            states.push(ReaderState::new(cname, State::UNAWARE));
            slots.push(Slot {
                name: name.clone(),
                present: false,
                event_count: 0,
                feedback: config.feedback,
            });
            self.send(reader_update(name, true, None))?;
        }
        if slots.is_empty() && !*warned_empty {
            let patterns: Vec<&str> = self
                .options
                .readers
                .iter()
                .map(|r| r.pattern.as_str())
                .collect();
            tracing::warn!(
                ?patterns,
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

/// Sends the LED/buzzer command for `signal`. `Err(Some(status))` when the reader
/// answered that it does not do this; `Err(None)` when the card went away first.
fn show(card: &Card, signal: Signal) -> Result<(), Option<String>> {
    let apdu = match signal {
        Signal::Welcome => &LED_WELCOME,
        Signal::Refused => &LED_REFUSED,
    };
    let mut buf = [0u8; 16];
    match card.transmit(apdu, &mut buf) {
        // SW1 90: done; SW2 is the LED state, not 00.
        Ok([0x90, _]) => Ok(()),
        Ok(answer) => Err(Some(format!("{answer:02X?}"))),
        Err(e) => {
            tracing::debug!(error = %e, "feedback not shown");
            Err(None)
        }
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
    let uid = get_uid(&card)?;
    // Leaving the card powered keeps the next read fast; a failure here is harmless.
    let _ = card.disconnect(Disposition::LeaveCard);
    Ok(uid)
}

/// Asks a connected card its UID.
fn get_uid(card: &Card) -> Result<Vec<u8>, ReadError> {
    let mut buf = [0u8; 64];
    match card.transmit(&GET_UID, &mut buf)? {
        [uid @ .., 0x90, 0x00] if !uid.is_empty() => Ok(uid.to_vec()),
        [.., sw1, sw2] => Err(ReadError::Status(*sw1, *sw2)),
        short => Err(ReadError::Short(short.len())),
    }
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
