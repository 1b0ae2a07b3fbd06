//! A virtual contactless card for vsmartcard's vpcd: connecting inserts it, dropping the connection removes it.
//!
//! vpcd frames are a 2-byte big-endian length and a payload. A 1-byte payload is a
//! control (0 power off, 1 power on, 2 reset, 4 "send your ATR"); anything longer is
//! an APDU, answered with the response APDU.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread::JoinHandle;

/// ATR of a contactless storage card as PC/SC part 3 readers report it.
pub const ATR: [u8; 20] = [
    0x3B, 0x8F, 0x80, 0x01, 0x80, 0x4F, 0x0C, 0xA0, 0x00, 0x00, 0x03, 0x06, 0x03, 0x00, 0x01, 0x00,
    0x00, 0x00, 0x00, 0x6A,
];

/// A card lying on a virtual reader.
#[derive(Debug)]
pub struct VirtualCard {
    stream: TcpStream,
    thread: Option<JoinHandle<()>>,
}

impl VirtualCard {
    /// Puts a card with `uid` on the reader whose vpcd slot listens on `port`.
    pub fn insert(port: u16, uid: &[u8]) -> io::Result<VirtualCard> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        let mut serve = stream.try_clone()?;
        let uid = uid.to_vec();
        let thread = std::thread::Builder::new()
            .name(format!("vpcd-card-{port}"))
            .spawn(move || {
                // Ends when the card is removed (our shutdown) or vpcd closes.
                let _ = serve_card(&mut serve, &uid);
            })?;
        Ok(VirtualCard {
            stream,
            thread: Some(thread),
        })
    }

    /// Takes the card off the reader.
    pub fn remove(mut self) {
        self.close();
    }

    fn close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for VirtualCard {
    fn drop(&mut self) {
        self.close();
    }
}

/// What the card answers to one vpcd frame; `None` for controls that need no answer.
pub fn respond(uid: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
    match payload {
        [4] => Some(ATR.to_vec()),
        [_] => None,
        [0xFF, 0xCA, 0x00, 0x00, ..] => {
            let mut r = uid.to_vec();
            r.extend_from_slice(&[0x90, 0x00]);
            Some(r)
        }
        // Instruction not supported.
        _ => Some(vec![0x6D, 0x00]),
    }
}

fn serve_card(stream: &mut TcpStream, uid: &[u8]) -> io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len)?;
        let mut payload = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut payload)?;
        if let Some(answer) = respond(uid, &payload) {
            let mut frame = (answer.len() as u16).to_be_bytes().to_vec();
            frame.extend_from_slice(&answer);
            stream.write_all(&frame)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_answers_as_a_table() {
        let uid = [0x04, 0xA1, 0xB2, 0xC3];
        let cases: [(&[u8], Option<Vec<u8>>); 6] = [
            (&[4], Some(ATR.to_vec())),
            (&[0], None),
            (&[1], None),
            (&[2], None),
            (
                &[0xFF, 0xCA, 0, 0, 0],
                Some(vec![0x04, 0xA1, 0xB2, 0xC3, 0x90, 0x00]),
            ),
            (&[0x00, 0xA4, 0x04, 0x00], Some(vec![0x6D, 0x00])),
        ];
        for (input, expected) in cases {
            assert_eq!(respond(&uid, input), expected, "{input:02X?}");
        }
    }
}
