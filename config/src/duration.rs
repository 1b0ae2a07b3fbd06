//! Human durations as written in `kiosk.toml`: `500ms`, `3s`, `15m`, `2h`, `15d`, or a sum like `1m30s`.

use std::time::Duration;

/// The hint every duration error ends with, so the fix is on the same line as the problem.
pub const DURATION_HINT: &str =
    r#"write a duration such as "3s", "15m" or "15d" (units: ms, s, m, h, d)"#;

/// Writes a duration the way a config file would (`90s` → `1m30s`, `0s`).
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

/// Parses a duration written as one or more `<number><unit>` parts.
///
/// Bare numbers are refused on purpose: `cooldown = 3` could mean seconds or
/// milliseconds, and a kiosk that guesses wrong misbehaves quietly for years.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("empty duration; {DURATION_HINT}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{text:?} is not a duration; {DURATION_HINT}"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?} has a number too large; {DURATION_HINT}"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => number
                .checked_mul(60)
                .map(Duration::from_secs)
                .unwrap_or(Duration::MAX),
            "h" => number
                .checked_mul(3600)
                .map(Duration::from_secs)
                .unwrap_or(Duration::MAX),
            "d" => number
                .checked_mul(86_400)
                .map(Duration::from_secs)
                .unwrap_or(Duration::MAX),
            "" => {
                return Err(format!(
                    "{text:?} has a number without a unit; {DURATION_HINT}"
                ));
            }
            other => {
                return Err(format!(
                    "{text:?} has an unknown unit {other:?}; {DURATION_HINT}"
                ));
            }
        };
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{text:?} is too long; {DURATION_HINT}"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_a_table() {
        let ok: &[(&str, Duration)] = &[
            ("3s", Duration::from_secs(3)),
            ("500ms", Duration::from_millis(500)),
            ("15m", Duration::from_secs(900)),
            ("2h", Duration::from_secs(7200)),
            ("15d", Duration::from_secs(15 * 86_400)),
            ("1m30s", Duration::from_secs(90)),
            (" 0s ", Duration::ZERO),
        ];
        for (input, expected) in ok {
            assert_eq!(parse_duration(input), Ok(*expected), "input {input:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty duration"),
            ("3", "a number without a unit"),
            ("3 s", "a number without a unit"),
            ("3sec", "unknown unit \"sec\""),
            ("s", "is not a duration"),
            ("-3s", "is not a duration"),
            ("99999999999999999999s", "number too large"),
        ];
        for (input, expected) in bad {
            let err = parse_duration(input).expect_err(input);
            assert!(err.contains(expected), "input {input:?}: {err}");
            assert!(
                err.contains("such as \"3s\""),
                "input {input:?} lacks the hint: {err}"
            );
        }
    }
}
