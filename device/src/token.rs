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
                    || payload.len() > MAX_QR_LEN
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
}
