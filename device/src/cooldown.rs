//! Same-card cooldown: a card held on a reader, or tapped again soon after, makes one event.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::CardToken;

/// Per-reader memory of recent cards. Pure logic: the caller passes the clock in.
#[derive(Debug)]
pub struct Cooldown {
    window: Duration,
    present: Option<CardToken>,
    /// When each recent card was last seen (left the field, or was suppressed).
    recent: HashMap<CardToken, Instant>,
}

impl Cooldown {
    pub fn new(window: Duration) -> Cooldown {
        Cooldown {
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
        if self.present.as_ref() == Some(token) {
            return false;
        }
        self.present = Some(token.clone());
        // Re-tapping inside the window keeps extending it: a visitor tapping
        // twice in a row wants one greeting, not a second visit attempt.
        let suppressed = self.recent.insert(token.clone(), now).is_some();
        !suppressed
    }

    /// The card left the reader at `now`; the cooldown runs from here.
    pub fn on_removed(&mut self, now: Instant) {
        if let Some(token) = self.present.take() {
            self.recent.insert(token, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum Step {
        Tap(&'static str, u64),
        Leave(u64),
    }

    #[test]
    fn cooldown_as_a_table() {
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
        ];
        for (name, steps, expected) in cases {
            let start = Instant::now();
            let mut c = Cooldown::new(Duration::from_secs(3));
            let mut got = Vec::new();
            for step in *steps {
                match step {
                    Tap(t, ms) => got.push(c.on_card(
                        &CardToken::parse(&format!("nfc:{}", t.repeat(8))).expect("token"),
                        start + Duration::from_millis(*ms),
                    )),
                    Leave(ms) => c.on_removed(start + Duration::from_millis(*ms)),
                }
            }
            assert_eq!(&got, expected, "case {name}");
        }
    }

    #[test]
    fn zero_window_only_merges_a_held_card() {
        let start = Instant::now();
        let a = CardToken::nfc(&[4, 1, 2, 3]);
        let mut c = Cooldown::new(Duration::ZERO);
        assert!(c.on_card(&a, start));
        assert!(!c.on_card(&a, start));
        c.on_removed(start);
        assert!(c.on_card(&a, start + Duration::from_millis(1)));
    }
}
