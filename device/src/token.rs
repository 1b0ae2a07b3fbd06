//! Card tokens: the one normalized spelling of a card, identical whichever reader or file it came from.

use std::fmt;

/// How a card was read; recorded on every visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Nfc,
    Em4100,
    Wiegand,
    Qr,
    Manual,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Nfc => "nfc",
            Method::Em4100 => "em4100",
            Method::Wiegand => "wiegand",
            Method::Qr => "qr",
            Method::Manual => "manual",
        }
    }
}

/// A normalized card token such as `nfc:04A1B2C3D4E5F6` (design §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CardToken(String);

/// Why text is not a card token; the message says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(String);

/// Longest QR payload kept; longer codes are not membership or broker codes.
pub const MAX_QR_LEN: usize = 256;

impl CardToken {
    /// The token for a contactless UID as the reader returned it.
    pub fn nfc(uid: &[u8]) -> CardToken {
        let mut s = String::with_capacity(4 + uid.len() * 2);
        s.push_str("nfc:");
        for b in uid {
            s.push_str(&format!("{b:02X}"));
        }
        CardToken(s)
    }

    /// The token for an EM4100 card: its 4-byte card number, without the version byte.
    pub fn em(number: u32) -> CardToken {
        CardToken(format!("em:{number:08X}"))
    }

    /// The token for a Wiegand-26 card: 8-bit facility code and 16-bit card number.
    pub fn wg26(facility: u8, number: u16) -> CardToken {
        CardToken(format!("wg26:{facility}/{number}"))
    }

    /// The token for a scanned code; the same checks as `parse("qr:…")`.
    pub fn qr(payload: &str) -> Result<CardToken, TokenError> {
        CardToken::parse(&format!("qr:{payload}"))
    }

    /// The EM4100 card number of an `em:` token.
    pub fn em_number(&self) -> Option<u32> {
        u32::from_str_radix(self.0.strip_prefix("em:")?, 16).ok()
    }

    /// Parses and normalizes a token written by a person or another system.
    pub fn parse(text: &str) -> Result<CardToken, TokenError> {
        let text = text.trim();
        let (scheme, rest) = text.split_once(':').ok_or_else(|| {
            TokenError(format!(
                "{text:?} is not a card token; write it as nfc:<hex UID> (e.g. nfc:04A1B2C3D4E5F6), em:<8 hex digits>, wg26:<facility>/<number> or qr:<payload>"
            ))
        })?;
        match scheme.to_ascii_lowercase().as_str() {
            "nfc" => {
                let hex = rest.to_ascii_uppercase();
                let valid = hex.len() % 2 == 0
                    && (8..=20).contains(&hex.len())
                    && hex.bytes().all(|b| b.is_ascii_hexdigit());
                if valid {
                    Ok(CardToken(format!("nfc:{hex}")))
                } else {
                    Err(TokenError(format!(
                        "{text:?}: an nfc token is 4 to 10 bytes of hex, e.g. nfc:04A1B2C3D4E5F6"
                    )))
                }
            }
            "em" => {
                let hex = rest.to_ascii_uppercase();
                if hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(CardToken(format!("em:{hex}")))
                } else {
                    Err(TokenError(format!(
                        "{text:?}: an em token is the 4-byte card number in 8 hex digits, e.g. em:0086F244"
                    )))
                }
            }
            "wg26" => {
                let parsed = rest.split_once('/').and_then(|(f, n)| {
                    Some((f.trim().parse::<u8>().ok()?, n.trim().parse::<u16>().ok()?))
                });
                match parsed {
                    Some((facility, number)) => Ok(CardToken(format!("wg26:{facility}/{number}"))),
                    None => Err(TokenError(format!(
                        "{text:?}: a wg26 token is facility (0-255) / number (0-65535), e.g. wg26:123/45678"
                    ))),
                }
            }
            "qr" => {
                let payload = rest.trim();
                if payload.is_empty()
                    || payload.chars().count() > MAX_QR_LEN
                    || payload.chars().any(char::is_control)
                {
                    Err(TokenError(format!(
                        "{text:?}: a qr token is 1 to {MAX_QR_LEN} printable characters after qr:"
                    )))
                } else {
                    Ok(CardToken(format!("qr:{payload}")))
                }
            }
            other => Err(TokenError(format!(
                "unknown card scheme {other:?} in {text:?}; use nfc:, em:, wg26: or qr:"
            ))),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn method(&self) -> Method {
        match self.0.split_once(':').map(|(s, _)| s) {
            Some("em") => Method::Em4100,
            Some("wg26") => Method::Wiegand,
            Some("qr") => Method::Qr,
            _ => Method::Nfc,
        }
    }

    /// True for a random UID (ISO 14443-3: a 4-byte UID whose first byte is 0x08), as
    /// phones and bank cards emulating a card present. Such a UID changes on every tap,
    /// so it can never identify a member.
    pub fn is_random_uid(&self) -> bool {
        self.0.len() == 4 + 8 && self.0.starts_with("nfc:08")
    }
}

impl fmt::Display for CardToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a card was written down by a person: as a token, or as the number printed on an
/// EM4100 card. Kept because a DEZ8 number names only the low 24 bits of the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// `nfc:…`, `em:…`, `wg26:…` or `qr:…`.
    Token,
    /// The 4-byte card number in decimal, e.g. `0008844356`: exact.
    Dez10,
    /// The third byte and the low 16 bits in decimal, e.g. `134,62532`: the top byte is lost.
    Dez8,
}

/// The readable shape of each printed form, for error messages.
const DEZ10_HINT: &str = "a DEZ10 number is 1 to 10 digits, at most 4294967295, e.g. 0008844356";
const DEZ8_HINT: &str = "a DEZ8 number is 0-255, a comma or a space, then 0-65535, e.g. 134,62532";

/// The numbers printed on EM4100 cards (DEZ10, DEZ8), read into and written from `em:` tokens.
impl CardToken {
    /// Reads a DEZ10 number: the card number in decimal. Fewer than 10 digits are
    /// accepted because Excel drops leading zeros from a cell it takes for a number.
    pub fn from_dez10(text: &str) -> Result<CardToken, TokenError> {
        let text = text.trim();
        // Checked by hand: `u32::from_str` would also take a leading `+`.
        let digits = (1..=10).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
        match text.parse::<u32>() {
            Ok(number) if digits => Ok(CardToken::em(number)),
            _ => Err(TokenError(format!("{text:?}: {DEZ10_HINT}"))),
        }
    }

    /// Reads a DEZ8 number into `em:00` + the low 24 bits. DEZ8 does not print the top
    /// byte, so this token equals a read card's only when that byte is zero; to find
    /// the others, compare [`CardToken::em_low24`] of the card read.
    pub fn from_dez8(text: &str) -> Result<CardToken, TokenError> {
        let text = text.trim();
        let part = |s: &str, max_digits: usize| {
            let s = s.trim();
            let digits =
                (1..=max_digits).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
            digits.then(|| s.parse::<u32>().ok()).flatten()
        };
        // Cards print a comma; a space is what remains where a spreadsheet or a
        // person avoided the comma in a CSV field.
        let split = text
            .split_once(',')
            .or_else(|| text.split_once(char::is_whitespace));
        let parsed = split.and_then(|(high, low)| Some((part(high, 3)?, part(low, 5)?)));
        match parsed {
            Some((high, low)) if high <= 0xFF && low <= 0xFFFF => {
                Ok(CardToken::em((high << 16) | low))
            }
            _ => Err(TokenError(format!("{text:?}: {DEZ8_HINT}"))),
        }
    }

    /// Like [`CardToken::parse`], and also reads the number printed on an EM4100 card.
    /// Bare digits are always DEZ10 (an 8-digit DEZ8 without its comma cannot be told
    /// from a DEZ10 that lost its leading zeros); digits around a comma or a space are DEZ8.
    pub fn parse_written(text: &str) -> Result<(CardToken, Spelling), TokenError> {
        let text = text.trim();
        let numeric = !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_digit() || c == ',' || c.is_whitespace());
        if text.contains(':') {
            CardToken::parse(text).map(|t| (t, Spelling::Token))
        } else if numeric && text.bytes().all(|b| b.is_ascii_digit()) {
            CardToken::from_dez10(text).map(|t| (t, Spelling::Dez10))
        } else if numeric {
            CardToken::from_dez8(text).map(|t| (t, Spelling::Dez8))
        } else {
            Err(TokenError(format!(
                "{text:?} is not a card token; write it as nfc:<hex UID> (e.g. nfc:04A1B2C3D4E5F6), em:<8 hex digits>, wg26:<facility>/<number> or qr:<payload>, or as the number printed on an EM4100 card: DEZ10 (e.g. 0008844356) or DEZ8 (e.g. 134,62532)"
            )))
        }
    }

    /// The DEZ10 number of an `em:` token, 10 digits, e.g. `0008844356`.
    pub fn dez10(&self) -> Option<String> {
        self.em_number().map(|n| format!("{n:010}"))
    }

    /// The DEZ8 number of an `em:` token, e.g. `134,62532`; the top byte is not in it.
    pub fn dez8(&self) -> Option<String> {
        self.em_number()
            .map(|n| format!("{:03},{:05}", (n >> 16) & 0xFF, n & 0xFFFF))
    }

    /// The `em:` token with its top byte cleared: how a card given as DEZ8 is stored.
    pub fn em_low24(&self) -> Option<CardToken> {
        self.em_number().map(|n| CardToken::em(n & 0x00FF_FFFF))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_normalize_as_a_table() {
        let ok: &[(&str, &str)] = &[
            ("nfc:04a1b2c3d4e5f6", "nfc:04A1B2C3D4E5F6"),
            (" NFC:DEADBEEF ", "nfc:DEADBEEF"),
            ("em:0086f244", "em:0086F244"),
            ("wg26:012/00345", "wg26:12/345"),
            ("qr:BRK-2026-0001", "qr:BRK-2026-0001"),
        ];
        for (input, expected) in ok {
            assert_eq!(
                CardToken::parse(input).map(|t| t.0),
                Ok(expected.to_string()),
                "{input}"
            );
        }
        let bad: &[(&str, &str)] = &[
            ("04A1B2C3", "is not a card token"),
            ("nfc:04A1B", "4 to 10 bytes of hex"),
            ("nfc:ZZZZZZZZ", "4 to 10 bytes of hex"),
            ("nfc:04", "4 to 10 bytes of hex"),
            ("em:123", "8 hex digits"),
            ("wg26:300/1", "facility (0-255)"),
            ("qr:", "1 to 256 printable"),
            ("qr:a\u{7}b", "1 to 256 printable"),
            ("mifare:01020304", "unknown card scheme"),
        ];
        for (input, expected) in bad {
            let err = CardToken::parse(input).expect_err(input).to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }

    #[test]
    fn uid_bytes_become_uppercase_hex_and_random_uids_are_spotted() {
        assert_eq!(CardToken::nfc(&[0x04, 0xa1, 0x0b]).as_str(), "nfc:04A10B");
        assert!(CardToken::nfc(&[0x08, 1, 2, 3]).is_random_uid());
        assert!(!CardToken::nfc(&[0x08, 1, 2, 3, 4, 5, 6]).is_random_uid());
        assert!(!CardToken::nfc(&[0x04, 1, 2, 3]).is_random_uid());
        assert_eq!(CardToken::nfc(&[1, 2, 3, 4]).method(), Method::Nfc);
    }

    #[test]
    fn constructors_spell_tokens_like_parse() {
        assert_eq!(
            CardToken::em(0x0086_F444),
            CardToken::parse("em:0086f444").unwrap()
        );
        assert_eq!(CardToken::em(0x0086_F444).em_number(), Some(0x0086_F444));
        assert_eq!(CardToken::em(0x0086_F444).method(), Method::Em4100);
        assert_eq!(CardToken::wg26(12, 345).as_str(), "wg26:12/345");
        assert_eq!(CardToken::wg26(12, 345).method(), Method::Wiegand);
        assert_eq!(CardToken::qr(" BRK-1 ").unwrap().as_str(), "qr:BRK-1");
        assert!(CardToken::qr("a\u{1b}b").is_err());
        assert_eq!(CardToken::nfc(&[4, 1, 2, 3]).em_number(), None);
    }

    #[test]
    fn printed_em_numbers_read_as_a_table() {
        let dez10: &[(&str, Option<&str>)] = &[
            ("0008844356", Some("em:0086F444")),
            (" 0008844356 ", Some("em:0086F444")),
            ("8844356", Some("em:0086F444")), // Excel dropped the leading zeros
            ("0", Some("em:00000000")),
            ("0000000000", Some("em:00000000")),
            ("4294967295", Some("em:FFFFFFFF")),
            ("4294967296", None),
            ("9999999999", None),
            ("00000000001", None), // 11 digits, although the value fits
            ("", None),
            ("+8844356", None),
            ("-1", None),
            ("8.844356E+06", None),
            ("\u{FF18}", None), // a full-width digit
        ];
        for (input, expected) in dez10 {
            match (CardToken::from_dez10(input), expected) {
                (Ok(t), Some(want)) => assert_eq!(t.as_str(), *want, "{input:?}"),
                (Err(e), None) => assert!(e.to_string().contains("0008844356"), "{input:?}: {e}"),
                (got, _) => panic!("{input:?}: got {got:?}, expected {expected:?}"),
            }
        }
        let dez8: &[(&str, Option<&str>)] = &[
            ("134,62532", Some("em:0086F444")),
            ("134 62532", Some("em:0086F444")),
            (" 134 , 62532 ", Some("em:0086F444")),
            ("000,00000", Some("em:00000000")),
            ("0,0", Some("em:00000000")),
            ("255,65535", Some("em:00FFFFFF")),
            ("256,0", None),
            ("0,65536", None),
            ("0255,1", None),   // 4 digits before the comma
            ("1,000001", None), // 6 digits after it
            ("134,", None),
            (",62532", None),
            ("134,625,32", None),
            ("134;62532", None),
            ("13462532", None), // no separator: that is DEZ10's shape
        ];
        for (input, expected) in dez8 {
            match (CardToken::from_dez8(input), expected) {
                (Ok(t), Some(want)) => assert_eq!(t.as_str(), *want, "{input:?}"),
                (Err(e), None) => assert!(e.to_string().contains("134,62532"), "{input:?}: {e}"),
                (got, _) => panic!("{input:?}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn em_tokens_print_as_dez10_and_dez8() {
        let cases: &[(u32, &str, &str)] = &[
            (0x0086_F444, "0008844356", "134,62532"),
            (0, "0000000000", "000,00000"),
            (u32::MAX, "4294967295", "255,65535"),
            (0x1286_F444, "0310834244", "134,62532"), // DEZ8 loses the top byte
            (0x00FF_FFFF, "0016777215", "255,65535"),
        ];
        for &(number, dez10, dez8) in cases {
            let token = CardToken::em(number);
            assert_eq!(token.dez10().as_deref(), Some(dez10), "{token}");
            assert_eq!(token.dez8().as_deref(), Some(dez8), "{token}");
            // And back: DEZ10 is exact, DEZ8 gives the token with the top byte cleared.
            assert_eq!(CardToken::from_dez10(dez10), Ok(token.clone()));
            assert_eq!(CardToken::from_dez8(dez8).ok(), token.em_low24());
        }
        let nfc = CardToken::nfc(&[4, 1, 2, 3]);
        assert_eq!(
            (nfc.dez10(), nfc.dez8(), nfc.em_low24()),
            (None, None, None)
        );
    }

    #[test]
    fn written_cards_are_told_apart_by_shape() {
        let ok: &[(&str, &str, Spelling)] = &[
            ("nfc:04a1b2c3", "nfc:04A1B2C3", Spelling::Token),
            ("em:0086f444", "em:0086F444", Spelling::Token),
            ("0008844356", "em:0086F444", Spelling::Dez10),
            // Eight bare digits are DEZ10 even if someone meant 134,62532 without the comma.
            ("13462532", "em:00CD6C04", Spelling::Dez10),
            ("134,62532", "em:0086F444", Spelling::Dez8),
            ("134 62532", "em:0086F444", Spelling::Dez8),
        ];
        for (input, token, spelling) in ok {
            assert_eq!(
                CardToken::parse_written(input).map(|(t, s)| (t.0, s)),
                Ok((token.to_string(), *spelling)),
                "{input}"
            );
        }
        let bad: &[(&str, &[&str])] = &[
            (
                "04A1B2C3",
                &[
                    "is not a card token",
                    "DEZ10 (e.g. 0008844356)",
                    "DEZ8 (e.g. 134,62532)",
                ],
            ),
            ("", &["is not a card token"]),
            ("nfc:04", &["4 to 10 bytes of hex"]),
            ("4294967296", &["at most 4294967295"]),
            ("256,1", &["0-255"]),
        ];
        for (input, expected) in bad {
            let err = CardToken::parse_written(input)
                .expect_err(input)
                .to_string();
            for want in *expected {
                assert!(err.contains(want), "{input}: {err}");
            }
        }
    }
}
