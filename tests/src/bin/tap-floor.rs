//! The tap bench's floor: the least a program can do to read a card's UID through PC/SC, printed on stdout.
//!
//! `tap-floor "READER NAME"`: establish a context, wait in SCardGetStatusChange for a
//! card, connect shared, send `FF CA 00 00 00`, print `uid HEX`, then wait for the card
//! to go (`off`), and again. `ready` once the reader's state is known. Run by
//! `tap-latency`, which times the lines as they arrive.

use std::ffi::CString;
use std::io::Write as _;

use pcsc::{Context, Disposition, Protocols, ReaderState, Scope, ShareMode, State};

const GET_UID: [u8; 5] = [0xFF, 0xCA, 0x00, 0x00, 0x00];

fn main() {
    let Some(reader) = std::env::args().nth(1) else {
        eprintln!("usage: tap-floor \"READER NAME\"");
        std::process::exit(2);
    };
    let name = CString::new(reader).expect("a reader name without NUL");
    let ctx = Context::establish(Scope::User).unwrap_or_else(|e| fail("establish", e));
    let mut states = [ReaderState::new(name.clone(), State::UNAWARE)];
    wait(&ctx, &mut states);
    say("ready");
    loop {
        while !present(&states) {
            wait(&ctx, &mut states);
        }
        match read_uid(&ctx, &name) {
            Ok(uid) => say(&format!("uid {}", hex(&uid))),
            // A card pulled mid-read: nothing to print, the next one still counts.
            Err(e) => eprintln!("could not read the card: {e}"),
        }
        while present(&states) {
            wait(&ctx, &mut states);
        }
        say("off");
    }
}

fn read_uid(ctx: &Context, name: &CString) -> Result<Vec<u8>, pcsc::Error> {
    let card = ctx.connect(name, ShareMode::Shared, Protocols::ANY)?;
    let mut buf = [0u8; 32];
    let answer = card.transmit(&GET_UID, &mut buf)?.to_vec();
    let _ = card.disconnect(Disposition::LeaveCard);
    match answer.split_last_chunk::<2>() {
        Some((uid, [0x90, 0x00])) => Ok(uid.to_vec()),
        _ => Err(pcsc::Error::InvalidValue),
    }
}

fn present(states: &[ReaderState; 1]) -> bool {
    states[0].event_state().contains(State::PRESENT)
}

/// Blocks until the reader's state differs from the one last seen.
fn wait(ctx: &Context, states: &mut [ReaderState; 1]) {
    states[0].sync_current_state();
    if let Err(e) = ctx.get_status_change(None, states) {
        fail("SCardGetStatusChange", e);
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // The bench times the line when it arrives: flush now, not at exit.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn fail(what: &str, e: pcsc::Error) -> ! {
    eprintln!("tap-floor: {what}: {e}");
    std::process::exit(1);
}
