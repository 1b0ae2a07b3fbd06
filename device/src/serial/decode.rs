//! Serial framing: bytes as they arrive from a reader, in any chunks, become card reads.
//!
//! Pure logic with the clock passed in, so every kind of line noise is a table test.
//! A decoder never fails: bad input is dropped with a reason the thread logs at debug.

use std::time::{Duration, Instant};

use kiosk_config::SerialProtocol;

use crate::CardToken;

/// One good read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub token: CardToken,
    /// The EM4100 version (customer) byte, kept for diagnostics only: the number
    /// printed on a card, and so the token, has just the 4 bytes after it.
    pub version: Option<u8>,
}

/// What a chunk of bytes produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Card(Read),
    /// Bytes thrown away, and why.
    Dropped(String),
}

/// RDM6300 frame: STX, 10 hex digits (version + 4-byte number), 2 hex checksum, ETX.
const STX: u8 = 0x02;
const ETX: u8 = 0x03;
const RDM6300_FRAME: usize = 14;
/// A frame takes about 15 ms at 9600 baud; a partial frame that saw no byte for this
/// long was cut off (tag pulled away mid-frame) and must not be glued to later bytes.
/// Generous, because the gap is measured when the thread reads, and STX resyncs the
/// common case (the next frame) anyway.
const RDM6300_GAP: Duration = Duration::from_secs(1);
/// A line that never ends is a scanner configured without a CR/LF suffix.
const LINE_GAP: Duration = Duration::from_secs(2);
/// Longest line kept, in bytes: a QR payload of `MAX_QR_LEN` characters in UTF-8.
const MAX_LINE: usize = crate::MAX_QR_LEN * 4;

/// Turns a serial reader's byte stream into reads.
#[derive(Debug)]
pub struct Decoder {
    protocol: SerialProtocol,
    buf: Vec<u8>,
    last_byte: Option<Instant>,
    /// Inside an over-long line: drop bytes until its end.
    skipping: bool,
}

impl Decoder {
    pub fn new(protocol: SerialProtocol) -> Decoder {
        Decoder {
            protocol,
            buf: Vec::with_capacity(64),
            last_byte: None,
            skipping: false,
        }
    }

    /// Feeds bytes read at `now`; appends what they completed to `out`.
    pub fn feed(&mut self, bytes: &[u8], now: Instant, out: &mut Vec<Decoded>) {
        let gap = match self.protocol {
            SerialProtocol::Rdm6300 => RDM6300_GAP,
            _ => LINE_GAP,
        };
        if let Some(last) = self.last_byte {
            if now.saturating_duration_since(last) >= gap {
                if !self.buf.is_empty() {
                    out.push(Decoded::Dropped(match self.protocol {
                        SerialProtocol::Rdm6300 => {
                            format!("partial frame of {} bytes cut off", self.buf.len())
                        }
                        _ => "a read without CR or LF at its end; set the scanner to end each read with CR or LF".to_owned(),
                    }));
                }
                self.buf.clear();
                // An over-long read that never ended must not swallow the next one.
                self.skipping = false;
            }
        }
        if !bytes.is_empty() {
            self.last_byte = Some(now);
        }
        for &b in bytes {
            match self.protocol {
                SerialProtocol::Rdm6300 => self.rdm6300_byte(b, out),
                _ => self.line_byte(b, out),
            }
        }
    }

    fn rdm6300_byte(&mut self, b: u8, out: &mut Vec<Decoded>) {
        if b == STX {
            // STX never occurs inside a frame (the payload is ASCII hex): resync here.
            if !self.buf.is_empty() {
                out.push(Decoded::Dropped(format!(
                    "partial frame of {} bytes before a new start",
                    self.buf.len()
                )));
            }
            self.buf.clear();
            self.buf.push(b);
            return;
        }
        if self.buf.is_empty() {
            // Noise between frames (or a module sending CR/LF after ETX).
            return;
        }
        self.buf.push(b);
        if b == ETX {
            out.push(match rdm6300_frame(&self.buf) {
                Ok(read) => Decoded::Card(read),
                Err(why) => Decoded::Dropped(why),
            });
            self.buf.clear();
        } else if self.buf.len() >= RDM6300_FRAME {
            out.push(Decoded::Dropped(format!(
                "frame longer than {RDM6300_FRAME} bytes"
            )));
            self.buf.clear();
        }
    }

    fn line_byte(&mut self, b: u8, out: &mut Vec<Decoded>) {
        if b == b'\r' || b == b'\n' {
            if !self.skipping && !self.buf.is_empty() {
                out.push(self.line());
            }
            // CRLF: the LF finds an empty buffer and ends nothing.
            self.buf.clear();
            self.skipping = false;
        } else if self.skipping {
        } else if self.buf.len() >= MAX_LINE {
            out.push(Decoded::Dropped(format!(
                "a read longer than {MAX_LINE} bytes"
            )));
            self.buf.clear();
            self.skipping = true;
        } else {
            self.buf.push(b);
        }
    }

    fn line(&self) -> Decoded {
        let Ok(text) = std::str::from_utf8(&self.buf) else {
            return Decoded::Dropped(
                "a read that is not UTF-8; set the scanner's output to UTF-8".to_owned(),
            );
        };
        let text = text.trim();
        if text.is_empty() {
            return Decoded::Dropped("a blank read".to_owned());
        }
        let token = match self.protocol {
            SerialProtocol::WiegandHex => u32::from_str_radix(text, 16)
                .map_err(|_| format!("{text:?} is not a hex Wiegand frame"))
                .and_then(wiegand26),
            SerialProtocol::WiegandDec => text
                .parse::<u32>()
                .map_err(|_| format!("{text:?} is not a decimal Wiegand frame"))
                .and_then(wiegand26),
            _ => CardToken::qr(text).map_err(|e| e.to_string()),
        };
        match token {
            Ok(token) => Decoded::Card(Read {
                token,
                version: None,
            }),
            Err(why) => Decoded::Dropped(why),
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Checks a complete `STX … ETX` frame and returns its card.
fn rdm6300_frame(frame: &[u8]) -> Result<Read, String> {
    if frame.len() != RDM6300_FRAME {
        return Err(format!(
            "frame of {} bytes, not {RDM6300_FRAME}",
            frame.len()
        ));
    }
    let mut bytes = [0u8; 6];
    for (i, pair) in frame[1..13].chunks(2).enumerate() {
        match (hex_value(pair[0]), hex_value(pair[1])) {
            (Some(hi), Some(lo)) => bytes[i] = hi << 4 | lo,
            _ => return Err(format!("frame with non-hex bytes {:02X?}", &frame[1..13])),
        }
    }
    let xor = bytes[..5].iter().fold(0, |acc, b| acc ^ b);
    if xor != bytes[5] {
        return Err(format!(
            "frame with a bad checksum ({:02X}, computed {xor:02X})",
            bytes[5]
        ));
    }
    let number = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok(Read {
        token: CardToken::em(number),
        version: Some(bytes[0]),
    })
}

/// A Wiegand-26 frame as a number: bit 25 even parity over bits 24–13, bits 24–17
/// facility, bits 16–1 card number, bit 0 odd parity over bits 12–1.
fn wiegand26(frame: u32) -> Result<CardToken, String> {
    if frame >= 1 << 26 {
        return Err(format!(
            "{frame:#X} is longer than 26 bits; only Wiegand-26 converters are supported"
        ));
    }
    let even_half = (frame >> 13) & 0x1FFF;
    let odd_half = frame & 0x1FFF;
    if even_half.count_ones() % 2 != 0 || odd_half.count_ones() % 2 != 1 {
        return Err(format!(
            "Wiegand-26 frame {frame:#09X} fails its parity check"
        ));
    }
    Ok(CardToken::wg26((frame >> 17) as u8, (frame >> 1) as u16))
}

#[cfg(test)]
mod tests {
    use super::*;

    use kiosk_tests::serial::{rdm6300_frame as frame, wiegand26 as wg};

    /// A name, chunks of bytes each with its time in ms, and what they should yield.
    type Case = (&'static str, Vec<(u64, Vec<u8>)>, Vec<&'static str>);

    /// Feeds chunks, each `ms` after the start, and returns tokens and drops in order.
    fn run(protocol: SerialProtocol, chunks: &[(u64, Vec<u8>)]) -> Vec<String> {
        let start = Instant::now();
        let mut d = Decoder::new(protocol);
        let mut out = Vec::new();
        for (ms, bytes) in chunks {
            d.feed(bytes, start + Duration::from_millis(*ms), &mut out);
        }
        out.into_iter()
            .map(|x| match x {
                Decoded::Card(r) => r.token.to_string(),
                Decoded::Dropped(why) => format!("dropped: {why}"),
            })
            .collect()
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn rdm6300_streams_as_a_table() {
        let a = frame(0x3E, 0x0086_F444);
        let b = frame(0x01, 0xDEAD_BEEF);
        let mut bad_sum = a.clone();
        bad_sum[12] = b'0';
        let mut bad_hex = a.clone();
        bad_hex[3] = b'G';
        let cases: Vec<Case> = vec![
            ("one frame", vec![(0, a.clone())], vec!["em:0086F444"]),
            (
                "split across reads",
                vec![(0, a[..5].to_vec()), (3, a[5..].to_vec())],
                vec!["em:0086F444"],
            ),
            (
                "two frames in one read",
                vec![(0, cat(&[&a, &b]))],
                vec!["em:0086F444", "em:DEADBEEF"],
            ),
            (
                "noise around frames",
                vec![(0, cat(&[b"\xff\x00zz", &a, b"\r\n\x7f", &b, b"\x03\x03"]))],
                vec!["em:0086F444", "em:DEADBEEF"],
            ),
            (
                "truncated then a good frame resyncs on STX",
                vec![(0, cat(&[&a[..7], &b]))],
                vec![
                    "dropped: partial frame of 7 bytes before a new start",
                    "em:DEADBEEF",
                ],
            ),
            (
                "bad checksum",
                vec![(0, bad_sum)],
                vec!["dropped: frame with a bad checksum"],
            ),
            (
                "non-hex",
                vec![(0, bad_hex)],
                vec!["dropped: frame with non-hex"],
            ),
            (
                "short frame",
                vec![(0, cat(&[&a[..6], &[ETX]]))],
                vec!["dropped: frame of 7 bytes, not 14"],
            ),
            (
                "long frame",
                vec![(0, cat(&[&a[..13], b"00", &[ETX]]))],
                vec!["dropped: frame longer than 14"],
            ),
            (
                "partial frame after a gap is dropped, not glued",
                vec![
                    (0, a[..7].to_vec()),
                    (1_200, a[7..].to_vec()),
                    (1_250, a.clone()),
                ],
                vec!["dropped: partial frame of 7 bytes cut off", "em:0086F444"],
            ),
            (
                "lowercase hex",
                vec![(0, String::from_utf8_lossy(&a).to_lowercase().into_bytes())],
                vec!["em:0086F444"],
            ),
        ];
        for (name, chunks, expected) in cases {
            let got = run(SerialProtocol::Rdm6300, &chunks);
            assert_eq!(got.len(), expected.len(), "{name}: {got:?}");
            for (g, e) in got.iter().zip(&expected) {
                assert!(g.starts_with(e), "{name}: got {g:?}, expected {e:?}");
            }
        }
    }

    #[test]
    fn rdm6300_keeps_the_version_byte_out_of_the_token() {
        let mut out = Vec::new();
        Decoder::new(SerialProtocol::Rdm6300).feed(&frame(0x3E, 1), Instant::now(), &mut out);
        assert_eq!(
            out,
            [Decoded::Card(Read {
                token: CardToken::em(1),
                version: Some(0x3E)
            })]
        );
    }

    #[test]
    fn line_streams_as_a_table() {
        let long = "x".repeat(MAX_LINE + 1);
        let cases: Vec<Case> = vec![
            ("CR", vec![(0, b"BRK-1\r".to_vec())], vec!["qr:BRK-1"]),
            ("LF", vec![(0, b"BRK-1\n".to_vec())], vec!["qr:BRK-1"]),
            (
                "CRLF, two in one read",
                vec![(0, b"A1\r\nB2\r\n".to_vec())],
                vec!["qr:A1", "qr:B2"],
            ),
            (
                "split, trimmed, Chinese",
                vec![
                    (0, "  会员".as_bytes().to_vec()),
                    (5, " 88 \r\n".as_bytes().to_vec()),
                ],
                vec!["qr:会员 88"],
            ),
            (
                "blank lines",
                vec![(0, b"\r\n \r\n".to_vec())],
                vec!["dropped: a blank read"],
            ),
            (
                "control character",
                vec![(0, b"A\x1bB\n".to_vec())],
                vec!["dropped: \"qr:A\\u{1b}B\""],
            ),
            (
                "over-long read dropped whole",
                vec![(0, format!("{long}\nok\n").into_bytes())],
                vec!["dropped: a read longer than", "qr:ok"],
            ),
            (
                "not UTF-8",
                vec![(0, b"\xbb\xe1\xd4\xb1\n".to_vec())],
                vec!["dropped: a read that is not UTF-8"],
            ),
            (
                "no terminator, then a gap",
                vec![(0, b"ABC".to_vec()), (3_000, b"DEF\n".to_vec())],
                vec!["dropped: a read without CR or LF", "qr:DEF"],
            ),
            (
                "an over-long read without terminator does not swallow the next",
                vec![(0, long.clone().into_bytes()), (3_000, b"OK\n".to_vec())],
                vec!["dropped: a read longer than", "qr:OK"],
            ),
            (
                "256 Chinese characters fit",
                vec![(0, format!("{}\n", "码".repeat(256)).into_bytes())],
                vec!["qr:码码"],
            ),
        ];
        for (name, chunks, expected) in cases {
            let got = run(SerialProtocol::Line, &chunks);
            assert_eq!(got.len(), expected.len(), "{name}: {got:?}");
            for (g, e) in got.iter().zip(&expected) {
                assert!(g.starts_with(e), "{name}: got {g:?}, expected {e:?}");
            }
        }
    }

    #[test]
    fn wiegand_lines_as_a_table() {
        let good = wg(123, 45678);
        let cases: Vec<(SerialProtocol, String, &str)> = vec![
            (
                SerialProtocol::WiegandHex,
                format!("{good:07X}\r\n"),
                "wg26:123/45678",
            ),
            (
                SerialProtocol::WiegandHex,
                format!("{good:x}\n"),
                "wg26:123/45678",
            ),
            (
                SerialProtocol::WiegandDec,
                format!("{good}\r"),
                "wg26:123/45678",
            ),
            (
                SerialProtocol::WiegandDec,
                format!("{}\n", wg(0, 0)),
                "wg26:0/0",
            ),
            (
                SerialProtocol::WiegandDec,
                format!("{}\n", wg(255, 65535)),
                "wg26:255/65535",
            ),
            (
                SerialProtocol::WiegandHex,
                format!("{:X}\n", good ^ 1),
                "dropped: Wiegand-26 frame",
            ),
            (
                SerialProtocol::WiegandHex,
                format!("{:X}\n", good ^ (1 << 25)),
                "dropped: Wiegand-26 frame",
            ),
            (
                SerialProtocol::WiegandHex,
                format!("{:X}\n", good ^ (1 << 9)),
                "dropped: Wiegand-26 frame",
            ),
            (
                SerialProtocol::WiegandHex,
                "4000000\n".into(),
                "dropped: 0x4000000 is longer than 26 bits",
            ),
            (
                SerialProtocol::WiegandDec,
                "12AB\n".into(),
                "dropped: \"12AB\" is not a decimal",
            ),
            (
                SerialProtocol::WiegandHex,
                "XYZ\n".into(),
                "dropped: \"XYZ\" is not a hex",
            ),
        ];
        for (protocol, input, expected) in cases {
            let got = run(protocol, &[(0, input.clone().into_bytes())]);
            assert_eq!(got.len(), 1, "{input:?}: {got:?}");
            assert!(got[0].starts_with(expected), "{input:?}: got {:?}", got[0]);
        }
    }
}
