//! Card readers turned into one stream of [`DeviceEvent`]s; knows nothing of HTTP, SQL or sync.
//!
//! Each backend runs on its own thread (PC/SC and serial calls block) or task (the
//! fake), and sends events over a tokio channel. All backends stop on one
//! cancellation token.

mod debounce;
pub mod fake;
pub mod glob;
pub mod pcsc;
pub mod serial;
mod thread;
mod token;

use std::time::Instant;

pub use debounce::Debounce;
pub use thread::SpawnError;
pub use token::{CardToken, MAX_QR_LEN, Method, Spelling, TokenError};

/// Everything a reader backend reports.
#[derive(Debug, Clone)]
pub enum DeviceEvent {
    /// A card was read and passed the debounce: one tap.
    Card(CardEvent),
    /// A card entered or left a reader's field, whatever the debounce decided. An
    /// arrival is sent after the card was read (so after its `Card` event, if any);
    /// tests use these to know the kiosk has handled a card.
    Presence { reader: String, present: bool },
    /// A reader appeared, went away, or failed to reopen again.
    Reader(ReaderUpdate),
    /// A backend's service (pcscd) became reachable or not.
    Service {
        backend: &'static str,
        up: bool,
        detail: String,
    },
}

/// Which backend a reader belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderKind {
    Pcsc,
    Serial,
    Simulated,
}

impl ReaderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReaderKind::Pcsc => "pcsc",
            ReaderKind::Serial => "serial",
            ReaderKind::Simulated => "simulated",
        }
    }
}

/// A reader's connection changed.
#[derive(Debug, Clone)]
pub struct ReaderUpdate {
    pub reader: String,
    pub kind: ReaderKind,
    pub connected: bool,
    /// Why it is not connected, and what to check.
    pub problem: Option<String>,
    /// Failed reopen attempts since it was last connected (serial readers).
    pub reopen_attempts: u32,
}

/// One tap, as read.
#[derive(Debug, Clone)]
pub struct CardEvent {
    /// The reader's name as its backend reports it.
    pub reader: String,
    pub token: CardToken,
    /// Wall-clock time of the read: the visit's `device_time`.
    pub at: jiff::Timestamp,
    /// Monotonic time of the read, so the daemon can measure its own share of a tap.
    pub read_at: Instant,
    /// EM4100 version byte, for diagnostics (not part of the token).
    pub version: Option<u8>,
    /// Present when the reader can show the outcome (light, beep): send it one signal.
    pub feedback: Option<Feedback>,
}

impl CardEvent {
    pub fn now(reader: impl Into<String>, token: CardToken) -> CardEvent {
        CardEvent {
            reader: reader.into(),
            token,
            at: jiff::Timestamp::now(),
            read_at: Instant::now(),
            version: None,
            feedback: None,
        }
    }
}

/// What the reader should show for a tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A member was welcomed: green and a beep.
    Welcome,
    /// Denied or unknown: red.
    Refused,
}

/// The way back to the reader thread waiting to light its LED for one tap.
#[derive(Debug, Clone)]
pub struct Feedback(std::sync::mpsc::SyncSender<Signal>);

impl Feedback {
    pub(crate) fn channel() -> (Feedback, std::sync::mpsc::Receiver<Signal>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        (Feedback(tx), rx)
    }

    /// Never blocks: a reader that stopped waiting (card gone, timeout) just misses it.
    pub fn send(self, signal: Signal) {
        let _ = self.0.try_send(signal);
    }
}
