//! A scripted reader for the demo: taps a list of cards in turn, forever, until cancelled.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{CardEvent, CardToken, DeviceEvent, ReaderKind, ReaderUpdate};

/// The script of a simulated reader.
#[derive(Debug, Clone)]
pub struct FakeReader {
    pub name: String,
    pub cards: Vec<CardToken>,
    /// Time between taps.
    pub every: Duration,
}

impl FakeReader {
    /// Runs the script; returns when `cancel` fires or the receiver is gone.
    pub async fn run(self, tx: mpsc::Sender<DeviceEvent>, cancel: CancellationToken) {
        let connected = DeviceEvent::Reader(ReaderUpdate {
            reader: self.name.clone(),
            kind: ReaderKind::Simulated,
            connected: true,
            problem: None,
            reopen_attempts: 0,
        });
        if tx.send(connected).await.is_err() {
            return;
        }
        for token in self.cards.iter().cycle() {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.every) => {}
            }
            let events = [
                DeviceEvent::Card(CardEvent::now(self.name.clone(), token.clone())),
                DeviceEvent::Presence {
                    reader: self.name.clone(),
                    present: true,
                },
                DeviceEvent::Presence {
                    reader: self.name.clone(),
                    present: false,
                },
            ];
            for event in events {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }
    }
}
