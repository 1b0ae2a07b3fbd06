//! Retry delays for the sync client: exponential with full jitter, capped, and a server's `Retry-After`.
//!
//! `backon` was considered; its jitter adds a random amount on top of the exponential
//! delay, while a fleet of kiosks coming back after an outage spreads best with "full
//! jitter" (a uniform draw between zero and the capped exponential), so this is the
//! one formula, kept pure and tested.

use std::time::Duration;

use rand::RngExt as _;

/// Delay policy for one kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The ceiling before jitter for the `failures`-th consecutive failure (1-based):
    /// `base * 2^(failures-1)`, at most `cap`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(30);
        self.base
            .checked_mul(1u32 << shift)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// A delay drawn uniformly from `[0, ceiling]`: the jitter is applied after the cap,
    /// so even capped retries of many kiosks stay spread out.
    pub fn delay(&self, failures: u32) -> Duration {
        uniform(self.ceiling(failures))
    }
}

/// A uniform draw from `[0, max]`.
pub fn uniform(max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (relative to `now`).
/// Unparseable or past values give `None`; the caller falls back to its backoff.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let span = at.duration_since(now);
    Duration::try_from(span).ok().filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(600),
        };
        let table = [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 4),
            (10, 512),
            (11, 600),
            (40, 600),
            (u32::MAX, 600),
        ];
        for (failures, secs) in table {
            assert_eq!(b.ceiling(failures), Duration::from_secs(secs), "{failures}");
        }
    }

    #[test]
    fn delays_stay_within_the_capped_ceiling_and_spread() {
        let b = Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(10),
        };
        let draws: Vec<Duration> = (0..200).map(|_| b.delay(30)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_secs(10)));
        // Full jitter: draws below half the cap are as likely as above it.
        let low = draws
            .iter()
            .filter(|d| **d < Duration::from_secs(5))
            .count();
        assert!((40..=160).contains(&low), "{low} of 200 below half the cap");
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now: jiff::Timestamp = "2026-11-23T02:00:00Z".parse().expect("time");
        let table = [
            ("120", Some(120)),
            (" 0 ", Some(0)),
            ("Mon, 23 Nov 2026 02:00:30 GMT", Some(30)),
            ("Mon, 23 Nov 2026 01:59:00 GMT", None),
            ("soon", None),
            ("-5", None),
        ];
        for (text, secs) in table {
            assert_eq!(
                parse_retry_after(text, now),
                secs.map(Duration::from_secs),
                "{text}"
            );
        }
    }
}
