//! A virtual contactless card for vsmartcard's vpcd: connecting inserts it, dropping the connection removes it.
//!
//! vpcd frames are a 2-byte big-endian length and a payload. A 1-byte payload is a
//! control (0 power off, 1 power on, 2 reset, 4 "send your ATR"); anything longer is
//! an APDU, answered with the response APDU.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// ATR of a contactless storage card as PC/SC part 3 readers report it.
pub const ATR: [u8; 20] = [
    0x3B, 0x8F, 0x80, 0x01, 0x80, 0x4F, 0x0C, 0xA0, 0x00, 0x00, 0x03, 0x06, 0x03, 0x00, 0x01, 0x00,
    0x00, 0x00, 0x00, 0x6A,
];

/// How a virtual card (standing in for card and reader firmware) behaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers GET UID; refuses anything else with `6D 00`, as a reader without
    /// LED/buzzer commands does.
    #[default]
    Plain,
    /// Also takes the ACR122U LED/buzzer command (`FF 00 40 …`), answering `90 00`.
    Acr122u,
    /// Answers GET UID with an error status (`6A 81`, function not supported).
    NoUid,
}

/// What the card answers to one vpcd frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Reply(Vec<u8>),
    /// A control that needs no answer.
    Nothing,
}

/// A card lying on a virtual reader.
#[derive(Debug)]
pub struct VirtualCard {
    stream: TcpStream,
    thread: Option<JoinHandle<()>>,
    apdus: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl VirtualCard {
    /// Puts a card with `uid` on the reader whose vpcd slot listens on `port`.
    pub fn insert(port: u16, uid: &[u8]) -> io::Result<VirtualCard> {
        VirtualCard::insert_with(port, uid, Behaviour::Plain)
    }

    /// Puts a card that behaves as `behaviour` on the reader.
    pub fn insert_with(port: u16, uid: &[u8], behaviour: Behaviour) -> io::Result<VirtualCard> {
        let mut serve = TcpStream::connect(("127.0.0.1", port))?;
        serve.set_nodelay(true)?;
        let stream = serve.try_clone()?;
        let uid = uid.to_vec();
        let apdus = Arc::new(Mutex::new(Vec::new()));
        let log = apdus.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vpcd-card-{port}"))
            .spawn(move || {
                // Ends when the card is removed (our shutdown) or vpcd closes.
                let _ = serve_card(&mut serve, &uid, &behaviour, &log);
            })?;
        Ok(VirtualCard {
            stream,
            thread: Some(thread),
            apdus,
        })
    }

    /// Every APDU the card received so far, in order. A transmit returns only after
    /// the card answered, so whatever the kiosk sent before it reported the card
    /// handled is here.
    pub fn apdus(&self) -> Vec<Vec<u8>> {
        self.apdus
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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

/// What a card with `uid` behaving as `behaviour` answers to one vpcd frame.
pub fn respond(behaviour: &Behaviour, uid: &[u8], payload: &[u8]) -> Answer {
    match (payload, behaviour) {
        ([4], _) => Answer::Reply(ATR.to_vec()),
        ([_], _) => Answer::Nothing,
        // Function not supported.
        ([0xFF, 0xCA, 0x00, 0x00, ..], Behaviour::NoUid) => Answer::Reply(vec![0x6A, 0x81]),
        ([0xFF, 0xCA, 0x00, 0x00, ..], _) => {
            let mut r = uid.to_vec();
            r.extend_from_slice(&[0x90, 0x00]);
            Answer::Reply(r)
        }
        ([0xFF, 0x00, 0x40, ..], Behaviour::Acr122u) => Answer::Reply(vec![0x90, 0x00]),
        // Instruction not supported.
        _ => Answer::Reply(vec![0x6D, 0x00]),
    }
}

fn serve_card(
    stream: &mut TcpStream,
    uid: &[u8],
    behaviour: &Behaviour,
    log: &Mutex<Vec<Vec<u8>>>,
) -> io::Result<()> {
    // Debian's vpcd (3.3) sends a frame's length and its payload in two writes, without
    // TCP_NODELAY: Nagle holds the payload until the length is acknowledged, and a
    // delayed ACK here cost ~44 ms per frame (3 frames a tap: ATR, power-on + ATR, GET
    // UID), which no real reader has. So every segment is acknowledged at once; Linux
    // leaves quick-ACK mode by itself after we answer, hence asking before each read.
    let quickack = |stream: &TcpStream| {
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    };
    loop {
        let mut len = [0u8; 2];
        quickack(stream);
        stream.read_exact(&mut len)?;
        let mut payload = vec![0u8; usize::from(u16::from_be_bytes(len))];
        quickack(stream);
        stream.read_exact(&mut payload)?;
        if payload.len() > 1 {
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(payload.clone());
        }
        match respond(behaviour, uid, &payload) {
            Answer::Reply(answer) => {
                let mut frame = (answer.len() as u16).to_be_bytes().to_vec();
                frame.extend_from_slice(&answer);
                stream.write_all(&frame)?;
            }
            Answer::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_answers_as_a_table() {
        use Behaviour::*;
        let uid = [0x04, 0xA1, 0xB2, 0xC3];
        let get_uid: &[u8] = &[0xFF, 0xCA, 0, 0, 0];
        let led: &[u8] = &[0xFF, 0x00, 0x40, 0xA8, 0x04, 0x02, 0x01, 0x01, 0x01];
        let reply = |b: &[u8]| Answer::Reply(b.to_vec());
        let cases: Vec<(Behaviour, &[u8], Answer)> = vec![
            (Plain, &[4], reply(&ATR)),
            (Plain, &[0], Answer::Nothing),
            (Plain, &[1], Answer::Nothing),
            (Plain, &[2], Answer::Nothing),
            (Plain, get_uid, reply(&[0x04, 0xA1, 0xB2, 0xC3, 0x90, 0x00])),
            (Plain, &[0x00, 0xA4, 0x04, 0x00], reply(&[0x6D, 0x00])),
            (Plain, led, reply(&[0x6D, 0x00])),
            (Acr122u, led, reply(&[0x90, 0x00])),
            (
                Acr122u,
                get_uid,
                reply(&[0x04, 0xA1, 0xB2, 0xC3, 0x90, 0x00]),
            ),
            (NoUid, get_uid, reply(&[0x6A, 0x81])),
        ];
        for (behaviour, input, expected) in cases {
            assert_eq!(
                respond(&behaviour, &uid, input),
                expected,
                "{behaviour:?} {input:02X?}"
            );
        }
    }
}
