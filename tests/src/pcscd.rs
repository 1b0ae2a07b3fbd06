//! The one pcscd a machine can run, shared by all tests, with Debian's vsmartcard-vpcd virtual readers.
//!
//! pcscd's socket path is fixed, so every test shares one daemon. vpcd keeps its
//! state per slot inside the driver, so a second vpcd entry in reader.conf.d
//! aliases the first one's slots (seen here: a card on the second entry's port
//! appeared in the first entry's reader), and cards on both slots of one entry at
//! once garbled answers (an empty GET UID response). So the tests use one virtual
//! reader, "Virtual PCD 00 00" of Debian's /etc/reader.conf.d/vpcd, borrowed from a
//! pool one test at a time. When no pcscd runs, the harness starts one (with
//! `--auto-exit`, so it leaves after the tests).

use std::ops::Deref;
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use pcsc::{Context, ReaderState, Scope, State};

/// The virtual readers: name and the port their virtual card connects to.
pub const READERS: [(&str, u16); 1] = [("Virtual PCD 00 00", 35963)];

/// A virtual reader a test owns while it holds this.
#[derive(Debug, Clone)]
pub struct TestReader {
    /// The name pcscd gives it; used verbatim as the kiosk's `[[reader]] name`.
    pub name: String,
    /// Where its virtual card connects.
    pub port: u16,
}

/// A borrowed reader, returned to the pool on drop.
#[derive(Debug)]
pub struct ReaderGuard {
    reader: TestReader,
    index: usize,
}

impl Deref for ReaderGuard {
    type Target = TestReader;
    fn deref(&self) -> &TestReader {
        &self.reader
    }
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        let mut free = POOL.free.lock().unwrap_or_else(PoisonError::into_inner);
        free[self.index] = true;
        POOL.wake.notify_one();
    }
}

struct Pool {
    free: Mutex<[bool; READERS.len()]>,
    wake: Condvar,
}

static POOL: Pool = Pool {
    free: Mutex::new([true; READERS.len()]),
    wake: Condvar::new(),
};

/// Makes sure pcscd runs with the virtual readers, then waits for a free one.
/// Drop the guard after the kiosk using it has stopped.
pub fn claim_reader() -> ReaderGuard {
    ensure_pcscd();
    let mut free = POOL.free.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        if let Some(index) = free.iter().position(|f| *f) {
            free[index] = false;
            drop(free);
            let (name, port) = READERS[index];
            wait_until_empty(name, Duration::from_secs(20));
            return ReaderGuard {
                reader: TestReader {
                    name: name.to_owned(),
                    port,
                },
                index,
            };
        }
        free = POOL.wake.wait(free).unwrap_or_else(PoisonError::into_inner);
    }
}

/// Waits until pcscd reports no card on `reader`. vpcd sees a closed card connection
/// only at its next poll; a kiosk started before that would take the previous
/// test's card, and a new card connecting in the same poll, as one card left lying.
fn wait_until_empty(reader: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let ctx = Context::establish(Scope::User).expect("pcscd answers");
    let mut states = [ReaderState::new(
        std::ffi::CString::new(reader).expect("reader name"),
        State::UNAWARE,
    )];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ctx.get_status_change(left, &mut states) {
            Ok(()) => {}
            Err(pcsc::Error::Timeout) => {}
            Err(e) => panic!("waiting for {reader} to be empty: {e}"),
        }
        if states[0].event_state().contains(State::EMPTY) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a card stayed on {reader} for {limit:?} after its test ended"
        );
        states[0].sync_current_state();
    }
}

static STARTED: OnceLock<()> = OnceLock::new();
static CHILD: Mutex<Option<Child>> = Mutex::new(None);

/// Starts pcscd if none runs, then waits (with a deadline) until every test reader is listed.
pub fn ensure_pcscd() {
    STARTED.get_or_init(|| {
        if Context::establish(Scope::User).is_err() {
            start_pcscd();
        }
        wait_for_readers(Duration::from_secs(20));
    });
}

/// Starts a pcscd of our own and waits until its virtual readers are listed.
pub fn start_pcscd() {
    let pcscd = ["/usr/sbin/pcscd", "/sbin/pcscd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("pcscd");
    let child = Command::new(pcscd)
        .args(["--foreground", "--auto-exit"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {pcscd}: {e}; install it with `apt-get install pcscd vsmartcard-vpcd`"
            )
        });
    *CHILD.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
    wait_for_readers(Duration::from_secs(20));
}

/// Stops every pcscd on the machine and waits until the service no longer answers.
/// Returns false when it answers anyway: systemd's socket activation restarts it on
/// the next client, so a test of "pcscd is down" cannot run on such a machine.
pub fn stop_pcscd() -> bool {
    if let Some(mut child) = CHILD.lock().unwrap_or_else(PoisonError::into_inner).take() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait();
    }
    let _ = Command::new("pkill").args(["-x", "pcscd"]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    // A pcscd that is not our child cannot be waited for; watch for it to go.
    while Command::new("pgrep")
        .args(["-x", "pcscd"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(Instant::now() < deadline, "pcscd did not stop within 20 s");
        std::thread::yield_now();
    }
    Context::establish(Scope::User).is_err()
}

fn wait_for_readers(limit: Duration) {
    let deadline = Instant::now() + limit;
    let wanted: Vec<String> = READERS.iter().map(|(n, _)| (*n).to_owned()).collect();
    // pcscd creates its socket a moment after starting; retry until it answers.
    let ctx = loop {
        match Context::establish(Scope::User) {
            Ok(ctx) => break ctx,
            Err(e) if Instant::now() > deadline => {
                panic!("pcscd did not come up within {limit:?}: {e}")
            }
            Err(_) => std::thread::yield_now(),
        }
    };
    let mut pnp = [ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE)];
    loop {
        let listed: Vec<String> = match ctx.list_readers_owned() {
            Ok(names) => names
                .into_iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        let missing: Vec<&String> = wanted.iter().filter(|w| !listed.contains(w)).collect();
        if missing.is_empty() {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!(
                "pcscd runs but lacks the virtual readers {missing:?} (it lists {listed:?}).\n\
                 Install them and restart pcscd: `apt-get install vsmartcard-vpcd`, then \
                 `systemctl restart pcscd` (or stop pcscd: the tests start their own)"
            );
        }
        // Wakes when a reader appears (PnP), or at the deadline.
        pnp[0].sync_current_state();
        let _ = ctx.get_status_change(left.min(Duration::from_secs(2)), &mut pnp);
    }
}
