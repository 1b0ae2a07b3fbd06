//! Card readers turned into one stream of [`DeviceEvent`]s; knows nothing of HTTP, SQL or sync.
//!
//! Each backend runs on its own thread (PC/SC calls block) or task (the fake), and
//! sends events over a tokio channel. All backends stop on one cancellation token.

mod cooldown;
pub mod fake;
pub mod glob;
pub mod pcsc;
mod token;

use std::time::Instant;

pub use cooldown::Cooldown;
pub use token::{CardToken, MAX_QR_LEN, Method, Spelling, TokenError};

/// Everything a reader backend reports.
#[derive(Debug, Clone)]
pub enum DeviceEvent {
    /// A card was read and passed the same-card cooldown: one tap.
    Card(CardEvent),
    /// A card entered or left a reader's field, whatever the cooldown decided. An
    /// arrival is sent after the card was read (so after its `Card` event, if any);
    /// tests use these to know the kiosk has handled a card.
    Presence { reader: String, present: bool },
    /// A reader appeared or went away.
    Reader { reader: String, connected: bool },
    /// A backend's service (pcscd) became reachable or not.
    Service {
        backend: &'static str,
        up: bool,
        detail: String,
    },
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
}

impl CardEvent {
    pub fn now(reader: impl Into<String>, token: CardToken) -> CardEvent {
        CardEvent {
            reader: reader.into(),
            token,
            at: jiff::Timestamp::now(),
            read_at: Instant::now(),
        }
    }
}
