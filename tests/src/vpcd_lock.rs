//! The machine-wide lock on the one pcscd + vpcd virtual reader, shared with `flock /tmp/kiosk-vpcd.lock` in shells.
//!
//! The in-process pool of `pcscd::claim_reader` keeps one binary's tests apart; this
//! lock keeps apart the processes of several people (benches, test runs) on one
//! machine, whose cards would otherwise land on each other's kiosks.

use std::fs::File;
use std::io::Write as _;

use nix::fcntl::{Flock, FlockArg};

/// The lock file every user of the virtual reader takes (`flock(1)` or [`hold`]).
pub const PATH: &str = "/tmp/kiosk-vpcd.lock";

/// Held until dropped.
#[derive(Debug)]
pub struct VpcdLock {
    _lock: Flock<File>,
}

/// Takes the lock, saying on stderr when it has to wait for someone else.
///
/// `flock` locks belong to an open file, not a process: a child that takes the lock
/// itself while its parent holds it waits forever, so only the process that uses the
/// reader takes it.
pub fn hold() -> VpcdLock {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(PATH)
            .unwrap_or_else(|e| panic!("open {PATH}: {e}"))
    };
    match Flock::lock(open(), FlockArg::LockExclusiveNonblock) {
        Ok(lock) => VpcdLock { _lock: lock },
        Err((file, _)) => {
            eprintln!("waiting for {PATH}: someone else is using the virtual reader …");
            let _ = std::io::stderr().flush();
            let lock = Flock::lock(file, FlockArg::LockExclusive)
                .unwrap_or_else(|(_, e)| panic!("flock {PATH}: {e}"));
            VpcdLock { _lock: lock }
        }
    }
}
