//! Debounce: a card held on a reader, repeated by it, or tapped again soon after, makes one event.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::CardToken;

/// One reader's memory of recent cards. Pure logic: the caller passes the clock in.
///
/// A card is *present* from its first read until the reader says it left (PC/SC) or,
/// for readers that only repeat frames (RDM6300 every ~50 ms), until no frame came
/// for the presence timeout. A present card makes no new event. After it leaves, the
/// same card is suppressed for the cooldown `window`; a different card is an event at
/// once.
#[derive(Debug)]
pub struct Debounce {
    window: Duration,
    present: Option<Present>,
    /// When each recent card was last seen (left the field, or was suppressed).
    recent: HashMap<CardToken, Instant>,
}

#[derive(Debug)]
struct Present {
    token: CardToken,
    last_seen: Instant,
}

impl Debounce {
    pub fn new(window: Duration) -> Debounce {
        Debounce {
            window,
            present: None,
            recent: HashMap::new(),
        }
    }

    /// A card was read at `now`; returns true when it should become an event.
    pub fn on_card(&mut self, token: &CardToken, now: Instant) -> bool {
        let window = self.window;
        self.recent
            .retain(|_, seen| now.saturating_duration_since(*seen) < window);
        match &mut self.present {
            Some(p) if p.token == *token => {
                p.last_seen = now;
                return false;
            }
            // Another card's frames: the previous one has left.
            Some(_) => self.on_removed(now),
            None => {}
        }
        self.present = Some(Present {
            token: token.clone(),
            last_seen: now,
        });
        // Re-tapping inside the window keeps extending it: a visitor tapping
        // twice in a row wants one greeting, not a second visit attempt.
        let suppressed = self.recent.insert(token.clone(), now).is_some();
        !suppressed
    }

    /// The card left the reader at `now`; the cooldown runs from here.
    pub fn on_removed(&mut self, now: Instant) {
        if let Some(p) = self.present.take() {
            self.recent.insert(p.token, now);
        }
    }

    /// The reader went away (pcscd restart, serial unplug) with the card on it. Whether
    /// the card is still there is unknown, so it stays present: if the reader comes back
    /// with it, that is no new tap. The caller calls `on_removed` if the reader comes
    /// back empty, and a repeating reader's presence timeout restarts from `now`.
    pub fn on_reader_lost(&mut self, now: Instant) {
        if let Some(p) = &mut self.present {
            p.last_seen = now;
        }
    }

    /// For readers that only repeat frames: the present card has left when nothing was
    /// read for `timeout`. Returns true when it left now. The cooldown runs from its
    /// last frame, when it really left.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> bool {
        match &self.present {
            Some(p) if now.saturating_duration_since(p.last_seen) >= timeout => {
                let left = p.last_seen;
                self.on_removed(left);
                true
            }
            _ => false,
        }
    }

    /// When the present card will expire with `timeout`; None when no card is present.
    pub fn expires_at(&self, timeout: Duration) -> Option<Instant> {
        self.present.as_ref().map(|p| p.last_seen + timeout)
    }

    pub fn present_token(&self) -> Option<&CardToken> {
        self.present.as_ref().map(|p| &p.token)
    }

    pub fn is_present(&self) -> bool {
        self.present.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum Step {
        Tap(&'static str, u64),
        Leave(u64),
        /// Presence check with a 300 ms timeout; whether the card left.
        Quiet(u64, bool),
    }

    const PRESENCE: Duration = Duration::from_millis(300);

    #[test]
    fn debounce_as_a_table() {
        use Step::*;
        // Each case: steps with the time in ms, and which taps become events.
        let cases: &[(&str, &[Step], &[bool])] = &[
            ("first tap emits", &[Tap("A", 0)], &[true]),
            (
                "held card read again",
                &[Tap("A", 0), Tap("A", 10_000)],
                &[true, false],
            ),
            (
                "re-tap inside window",
                &[Tap("A", 0), Leave(500), Tap("A", 2_000)],
                &[true, false],
            ),
            (
                "re-tap after window",
                &[Tap("A", 0), Leave(500), Tap("A", 3_600)],
                &[true, true],
            ),
            (
                "other card at once",
                &[Tap("A", 0), Leave(100), Tap("B", 200)],
                &[true, true],
            ),
            (
                "window runs from leaving",
                &[Tap("A", 0), Leave(10_000), Tap("A", 12_000)],
                &[true, false],
            ),
            (
                "A B A inside window",
                &[
                    Tap("A", 0),
                    Leave(100),
                    Tap("B", 200),
                    Leave(300),
                    Tap("A", 400),
                ],
                &[true, true, false],
            ),
            (
                "repeating reader: a 1 s burst every 50 ms is one event",
                &[
                    Tap("A", 0),
                    Tap("A", 50),
                    Tap("A", 100),
                    Quiet(120, false),
                    Tap("A", 500),
                    Tap("A", 950),
                    Tap("A", 1_000),
                    Quiet(1_299, false),
                    Quiet(1_300, true),
                    Quiet(1_400, false),
                ],
                &[true, false, false, false, false, false],
            ),
            (
                "repeating reader: back after the cooldown",
                &[
                    Tap("A", 0),
                    Quiet(400, true),
                    Tap("A", 3_000),
                    Tap("A", 3_050),
                ],
                &[true, true, false],
            ),
            (
                "repeating reader: back inside the cooldown (runs from the last frame)",
                &[
                    Tap("A", 0),
                    Tap("A", 50),
                    Quiet(400, true),
                    Tap("A", 3_049),
                    Quiet(3_400, true),
                    Tap("A", 9_000),
                ],
                &[true, false, false, true],
            ),
            (
                "repeating reader: another tag takes over at once",
                &[Tap("A", 0), Tap("A", 50), Tap("B", 100), Tap("A", 150)],
                &[true, false, true, false],
            ),
        ];
        for (name, steps, expected) in cases {
            let start = Instant::now();
            let mut c = Debounce::new(Duration::from_secs(3));
            let mut got = Vec::new();
            for step in *steps {
                match step {
                    Tap(t, ms) => got.push(c.on_card(
                        &CardToken::parse(&format!("nfc:{}", t.repeat(8))).expect("token"),
                        start + Duration::from_millis(*ms),
                    )),
                    Leave(ms) => c.on_removed(start + Duration::from_millis(*ms)),
                    Quiet(ms, left) => assert_eq!(
                        c.expire(start + Duration::from_millis(*ms), PRESENCE),
                        *left,
                        "case {name}: presence at {ms} ms"
                    ),
                }
            }
            assert_eq!(&got, expected, "case {name}");
        }
    }

    #[test]
    fn a_card_held_through_a_reader_outage_is_one_tap() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let a = CardToken::nfc(&[4, 1, 2, 3]);
        let mut c = Debounce::new(Duration::ZERO);
        assert!(c.on_card(&a, at(0)));
        // Gone for 10 s, far beyond the cooldown; back with the same card on it.
        c.on_reader_lost(at(100));
        assert!(!c.on_card(&a, at(10_100)));
        // A repeating reader back without frames: the card left, after the timeout
        // counted from the reader's return.
        c.on_reader_lost(at(20_000));
        assert!(!c.expire(at(20_299), PRESENCE));
        assert!(c.expire(at(20_300), PRESENCE));
        assert!(c.on_card(&a, at(20_400)));
    }

    #[test]
    fn zero_window_only_merges_a_held_card() {
        let start = Instant::now();
        let a = CardToken::nfc(&[4, 1, 2, 3]);
        let mut c = Debounce::new(Duration::ZERO);
        assert_eq!(c.expires_at(PRESENCE), None);
        assert!(c.on_card(&a, start));
        assert!(!c.on_card(&a, start));
        assert!(c.is_present());
        assert_eq!(c.expires_at(PRESENCE), Some(start + PRESENCE));
        c.on_removed(start);
        assert!(c.on_card(&a, start + Duration::from_millis(1)));
    }
}
