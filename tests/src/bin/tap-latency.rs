//! Measures a tap on the real stack (pcscd + vpcd): the kiosk against a bare pcsc loop, nfc-pcsc and pyscard, in turns.
//!
//! `cargo build --release -p kiosk -p kiosk-tests && target/release/tap-latency --taps 200`
//! (`--taps` per contestant; the peers need `tests/bench-peers/setup`). It takes the
//! machine's virtual-reader lock (`/tmp/kiosk-vpcd.lock`) itself, so do not wrap it in
//! `flock(1)`.
//!
//! Every contestant is its own process watching the same virtual reader, started once:
//! the kiosk (done = its SSE greeting at our client), `tap-floor` (a bare `pcsc` loop),
//! `nfc-pcsc` (Node) and `pyscard` (CardMonitor), the last three done = their `uid` line
//! on stdout, timed as it arrives. They take turns tap by tap. All of them would see
//! every card and race for it, so the ones whose turn it is not are frozen (SIGSTOP)
//! while the card is on the reader: the one measured has the reader to itself, and
//! nobody starts cold. Each round draws one pause (0-499 ms after pcscd noticed the
//! previous card go, plus a settle time) and uses it for every contestant, so each
//! meets the same phases of pcscd's ~400 ms polling. A passive SCardGetStatusChange
//! observer here times when pcscd noticed the card, which splits each tap into pcscd's
//! share and the contestant's own.
//!
//! Prints the table; with `KIOSK_BENCH_FIGURES` set, appends the `tap` figures.

use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pcsc::{Context, ReaderState, Scope, State};

use kiosk_tests::kiosk::{KioskDir, set_daemon_log_filter};
use kiosk_tests::pcscd::claim_reader;
use kiosk_tests::sse::SseClient;
use kiosk_tests::stats::{Figure, bench_args, emit, ms, report};
use kiosk_tests::vpcd::VirtualCard;

const ROSTER: &str = "card,customer_id,surname,title,tier\nnfc:04A1B2C3D4E5F6,C0001,张,mr,gold\n";
const UID: [u8; 7] = [0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6];
const UID_HEX: &str = "04A1B2C3D4E5F6";
const WAIT: Duration = Duration::from_secs(20);
/// After pcscd noticed a card go: time for the contestant to see it too (pyscard polls
/// every 0.1 s) before the next card comes, so the pause drawn is the pause taken.
const SETTLE: Duration = Duration::from_millis(200);
/// A contestant is woken 0 to this many ms after pcscd noticed the previous card go
/// (less than SETTLE, so it is awake before its card comes).
const THAW_SPREAD: u64 = 100;
/// What the kiosk logs as each greeting is written on an event stream.
const SHARE_LINE: &str = "UID read to greeting written on an event stream";
/// What it logs once the greeting is handed to the streams (before they write it).
const PUBLISHED_LINE: &str = "UID read to greeting published";

const KIOSK: &str = "kiosk";
const FLOOR: &str = "bare pcsc loop";
const NFC_PCSC: &str = "nfc-pcsc";
const PYSCARD: &str = "pyscard";

/// What a contestant said, as it arrived.
#[derive(Debug)]
enum Said {
    Ready,
    Uid(String),
    Off,
    /// The contestant's output ended (it exited).
    Gone,
}

#[derive(Debug)]
struct Contestant {
    name: &'static str,
    /// What it is, for the table: e.g. "nfc-pcsc 0.8.1 on Node v20".
    what: String,
    pid: Option<Pid>,
    child: Option<Child>,
    said: Option<Receiver<(Instant, Said)>>,
    /// Why it was not measured, or stopped being measured.
    problem: Option<String>,
    end_to_end: Vec<Duration>,
    /// The same, with the round each was taken in, to pair contestants' taps.
    by_round: Vec<(usize, Duration)>,
    /// pcscd's notice → done.
    own: Vec<Duration>,
    /// card inserted → pcscd's notice, on this contestant's taps.
    notice: Vec<Duration>,
    frozen: bool,
}

impl Contestant {
    fn new(name: &'static str, what: String) -> Contestant {
        Contestant {
            name,
            what,
            pid: None,
            child: None,
            said: None,
            problem: None,
            end_to_end: Vec::new(),
            by_round: Vec::new(),
            own: Vec::new(),
            notice: Vec::new(),
            frozen: false,
        }
    }

    fn not_run(name: &'static str, what: String, problem: String) -> Contestant {
        let mut c = Contestant::new(name, what);
        c.problem = Some(problem);
        c
    }

    fn runs(&self) -> bool {
        self.problem.is_none()
    }

    fn signal(&mut self, signal: Signal) {
        if let Some(pid) = self.pid {
            let _ = kill(pid, signal);
        }
        self.frozen = signal == Signal::SIGSTOP;
    }

    fn freeze(&mut self) {
        if !self.frozen {
            self.signal(Signal::SIGSTOP);
        }
    }

    fn thaw(&mut self) {
        if self.frozen {
            self.signal(Signal::SIGCONT);
        }
    }

    /// The next thing it says that `pick` takes, skipping others; `Err` says why not.
    fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        pick: impl Fn(&Said) -> bool,
    ) -> Result<Instant, String> {
        let said = self.said.as_ref().expect("a running contestant has output");
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match said.recv_timeout(left) {
                Ok((at, s)) if pick(&s) => return Ok(at),
                Ok((_, Said::Gone)) | Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("exited while waiting for {what}"));
                }
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("no {what} within {limit:?}"));
                }
            }
        }
    }

    /// Drops what it said while we were not listening.
    fn drain(&self) {
        if let Some(said) = &self.said {
            while said.try_recv().is_ok() {}
        }
    }
}

fn main() {
    let (taps, bin) = bench_args("tap-latency", "--taps", 200);
    let _lock = kiosk_tests::vpcd_lock::hold();
    // As deployed (info), plus the two tap lines the daemon's share is read from.
    set_daemon_log_filter("info,kiosk::tap=debug,kiosk::app=debug");
    let reader = claim_reader();
    let (pcscd_tx, pcscd_rx) = mpsc::channel();
    {
        let name = reader.name.clone();
        std::thread::spawn(move || observe(&name, pcscd_tx));
    }
    let mut pcscd = Observer { rx: pcscd_rx };

    let dir = KioskDir::with_reader(bin.to_str().expect("utf-8 path"), &reader.name, "0s");
    assert!(dir.import(ROSTER).status.success(), "roster import failed");
    let kiosk = dir.start();
    let mut contestants = vec![
        start_kiosk(&kiosk.url("/api/v1/events"), kiosk.child.id()),
        start_floor(&reader.name, dir.path()),
        start_nfc_pcsc(&reader.name, dir.path()),
        start_pyscard(&reader.name, dir.path()),
    ];
    for c in contestants.iter_mut().filter(|c| c.runs()) {
        if let Err(e) = c.wait_for(WAIT, "`ready`", |s| matches!(s, Said::Ready)) {
            c.problem = Some(format!(
                "did not start: {e}{}",
                log_tail(dir.path(), c.name)
            ));
        }
    }
    for c in &mut contestants {
        c.freeze();
    }

    println!(
        "taps: {taps} per contestant (+1 warm-up each) on {} (pcscd + vsmartcard-vpcd), in turns",
        reader.name
    );
    let mut anchor = Instant::now();
    let sleep_until = |t: Instant| std::thread::sleep(t.saturating_duration_since(Instant::now()));
    for round in 0..=taps {
        let pause = jitter(500);
        for i in 0..contestants.len() {
            if !contestants[i].runs() {
                continue;
            }
            // Woken at a random point after pcscd's last notice: a contestant that polls
            // (pyscard's monitor, every 0.1 s) restarts its period when it wakes, and
            // waking it on pcscd's beat would line its polls up with pcscd's.
            sleep_until(anchor + jitter(THAW_SPREAD));
            contestants[i].thaw();
            sleep_until(anchor + SETTLE + pause);
            // The previous contestant has seen its card go by now; from here on the one
            // measured has the reader to itself.
            for (j, other) in contestants.iter_mut().enumerate() {
                if j != i {
                    other.freeze();
                }
            }
            let c = &mut contestants[i];
            c.drain();
            match tap(c, &mut pcscd, reader.port) {
                Ok((tap, gone)) => {
                    anchor = gone;
                    // Round 0 warms every contestant up (first connection, caches).
                    if round > 0 {
                        c.end_to_end.push(tap.done - tap.inserted);
                        c.by_round.push((round, tap.done - tap.inserted));
                        c.own.push(tap.done.saturating_duration_since(tap.noticed));
                        c.notice.push(tap.noticed - tap.inserted);
                    }
                }
                Err((e, gone)) => {
                    anchor = gone;
                    eprintln!("{}: {e}; no more taps for it", c.name);
                    c.problem = Some(format!(
                        "stopped at tap {round}: {e}{}",
                        log_tail(dir.path(), c.name)
                    ));
                }
            }
        }
    }
    for c in &mut contestants {
        c.thaw();
        if let Some(child) = c.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    drop(kiosk);

    let log = std::fs::read_to_string(dir.path().join("kiosk.log")).unwrap_or_default();
    let mut share = log_micros(&log, SHARE_LINE);
    let mut published = log_micros(&log, PUBLISHED_LINE);
    let figures = table(&mut contestants, &mut share, &mut published);
    emit(&figures);
}

/// One measured tap's instants.
struct Tap {
    inserted: Instant,
    noticed: Instant,
    done: Instant,
}

/// Puts the card on, waits for pcscd and the contestant, takes it off, and waits until
/// pcscd and the contestant saw it go. Returns when pcscd noticed it go, also on error.
fn tap(
    c: &Contestant,
    pcscd: &mut Observer,
    port: u16,
) -> Result<(Tap, Instant), (String, Instant)> {
    let inserted = Instant::now();
    let card = VirtualCard::insert(port, &UID)
        .unwrap_or_else(|e| panic!("cannot insert the virtual card: {e}"));
    let noticed = pcscd.wait(true);
    let done = c.wait_for(
        WAIT,
        "UID",
        |s| matches!(s, Said::Uid(uid) if uid.contains(UID_HEX)),
    );
    card.remove();
    let gone = pcscd.wait(false);
    let done = done.map_err(|e| (e, gone))?;
    c.wait_for(WAIT, "card removal", |s| matches!(s, Said::Off))
        .map_err(|e| (e, gone))?;
    Ok((
        Tap {
            inserted,
            noticed,
            done,
        },
        gone,
    ))
}

/// The pcscd notices of the passive observer: (when, card present).
struct Observer {
    rx: Receiver<(Instant, bool)>,
}

impl Observer {
    /// When pcscd reported the card present (or gone); panics past the deadline, as
    /// nothing can be measured without pcscd.
    fn wait(&mut self, present: bool) -> Instant {
        loop {
            match self.rx.recv_timeout(WAIT) {
                Ok((at, p)) if p == present => return at,
                Ok(_) => continue,
                Err(e) => panic!(
                    "pcscd did not report the card {} within {WAIT:?} ({e})",
                    if present { "present" } else { "gone" }
                ),
            }
        }
    }
}

/// Watches the reader without ever connecting to a card, so it takes nothing from the
/// contestants; sends each change of presence with the instant pcscd reported it.
fn observe(reader: &str, tx: Sender<(Instant, bool)>) {
    let ctx = Context::establish(Scope::User).expect("pcscd answers");
    let mut states = [ReaderState::new(
        CString::new(reader).expect("reader name"),
        State::UNAWARE,
    )];
    let mut last = None;
    loop {
        states[0].sync_current_state();
        if let Err(e) = ctx.get_status_change(None, &mut states) {
            eprintln!("the pcscd observer stopped: {e}");
            return;
        }
        let at = Instant::now();
        let present = states[0].event_state().contains(State::PRESENT);
        if last != Some(present) {
            last = Some(present);
            if tx.send((at, present)).is_err() {
                return;
            }
        }
    }
}

/// The kiosk's SSE stream, read on a thread of its own like the other contestants'
/// stdout: `greeting` is done, a reader event with the card gone is `off`.
fn start_kiosk(events_url: &str, pid: u32) -> Contestant {
    let (tx, rx) = mpsc::channel();
    let url = events_url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let mut events = SseClient::connect(&url).await;
            let mut ready = false;
            // Frozen turns last seconds; an hour of silence means the kiosk is gone.
            while let Some(ev) = events.next(Duration::from_secs(3600)).await {
                let at = Instant::now();
                let said = match ev.name.as_str() {
                    "greeting" => Said::Uid(UID_HEX.to_owned()),
                    "reader" if ev.data["connected"] == true && !ready => {
                        ready = true;
                        Said::Ready
                    }
                    "reader" if ev.data["card_present"] == false => Said::Off,
                    _ => continue,
                };
                if tx.send((at, said)).is_err() {
                    return;
                }
            }
            let _ = tx.send((Instant::now(), Said::Gone));
        });
    });
    let mut c = Contestant::new(KIOSK, "kiosk run (this build), SSE greeting".into());
    c.pid = Some(Pid::from_raw(pid as i32));
    c.said = Some(rx);
    c
}

fn start_floor(reader: &str, logs: &Path) -> Contestant {
    let what = "tap-floor (pcsc crate, SCardGetStatusChange loop)".to_owned();
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("tap-floor")));
    match exe {
        Some(exe) if exe.exists() => spawn(FLOOR, what, Command::new(exe).arg(reader), logs),
        _ => Contestant::not_run(
            FLOOR,
            what,
            "tap-floor is not built next to tap-latency: cargo build --release -p kiosk-tests"
                .into(),
        ),
    }
}

fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-peers")
}

fn start_nfc_pcsc(reader: &str, logs: &Path) -> Contestant {
    let dir = peers_dir();
    let version = std::fs::read_to_string(dir.join("node_modules/nfc-pcsc/package.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned));
    let node = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let what = format!(
        "nfc-pcsc {} on Node {}, `card` event",
        version.as_deref().unwrap_or("?"),
        node.as_deref().unwrap_or("?")
    );
    let native = dir.join("node_modules/@pokusew/pcsclite/build/Release/pcsclite.node");
    if node.is_none() {
        return Contestant::not_run(
            NFC_PCSC,
            what,
            "node not found: run tests/bench-peers/setup".into(),
        );
    }
    if version.is_none() || !native.exists() {
        return Contestant::not_run(
            NFC_PCSC,
            what,
            "nfc-pcsc or its native module is not installed: run tests/bench-peers/setup".into(),
        );
    }
    spawn(
        NFC_PCSC,
        what,
        Command::new("node")
            .arg(dir.join("nfc-pcsc.js"))
            .arg(reader)
            .current_dir(&dir),
        logs,
    )
}

fn start_pyscard(reader: &str, logs: &Path) -> Contestant {
    // Debian's python3-pyscard is installed for Debian's Python, whichever python3
    // comes first on PATH.
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let version = Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('pyscard'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let Some(version) = version else {
        return Contestant::not_run(
            PYSCARD,
            "pyscard, CardMonitor + CardObserver".into(),
            format!(
                "pyscard is not importable by {python}: run tests/bench-peers/setup (python3-pyscard)"
            ),
        );
    };
    let what = format!("pyscard {version}, CardMonitor + CardObserver");
    spawn(
        PYSCARD,
        what,
        Command::new(python)
            .arg("-u")
            .arg(peers_dir().join("pyscard-tap.py"))
            .arg(reader),
        logs,
    )
}

/// Starts a peer whose stdout lines are `ready`, `uid HEX` and `off`; its stderr goes
/// to `<logs>/<name>.log`.
fn spawn(name: &'static str, what: String, command: &mut Command, logs: &Path) -> Contestant {
    let log = std::fs::File::create(log_path(logs, name)).expect("peer log file");
    let mut child = match command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return Contestant::not_run(name, what, format!("cannot start: {e}")),
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // Timed before anything else is done with the line.
            let at = Instant::now();
            let said = match line.trim_end() {
                "ready" => Said::Ready,
                "off" => Said::Off,
                l => match l.strip_prefix("uid ") {
                    Some(uid) => Said::Uid(uid.to_owned()),
                    None => continue,
                },
            };
            if tx.send((at, said)).is_err() {
                return;
            }
        }
        let _ = tx.send((Instant::now(), Said::Gone));
    });
    let mut c = Contestant::new(name, what);
    c.pid = Some(Pid::from_raw(child.id() as i32));
    c.child = Some(child);
    c.said = Some(rx);
    c
}

fn log_path(logs: &Path, name: &str) -> PathBuf {
    logs.join(format!("{}.log", name.replace(' ', "-")))
}

/// The last lines a peer wrote on stderr, to say why it failed.
fn log_tail(logs: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(log_path(logs, name)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() {
        String::new()
    } else {
        format!(" (stderr: {tail})")
    }
}

/// A pause of 0 to `limit_ms` - 1 ms. Before a round's taps: visitors do not arrive in
/// step with pcscd's ~400 ms polling, so taps sample every phase of it.
fn jitter(limit_ms: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Duration::from_millis(u64::from(nanos) % limit_ms)
}

/// Every `micros=` of the log lines saying `what`, but the first: the kiosk's first
/// tap is its warm-up, as for the end-to-end figures.
fn log_micros(log: &str, what: &str) -> Vec<Duration> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| l.split("micros=").nth(1))
        .filter_map(|v| {
            v.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse().ok())
        })
        .map(Duration::from_micros)
        .skip(1)
        .collect()
}

/// The `p`-th percentile (0..1) of sorted samples, in ms, by the nearest rank.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    ms(sorted[rank - 1])
}

/// Prints the table and returns the figures.
fn table(
    contestants: &mut [Contestant],
    share: &mut [Duration],
    published: &mut [Duration],
) -> Vec<Figure> {
    let mut figures = Vec::new();
    let mut all_notices: Vec<Duration> = Vec::new();
    println!("\ncard inserted -> UID at the contestant (end to end):");
    for c in contestants.iter_mut() {
        c.end_to_end.sort();
        c.own.sort();
        all_notices.extend(&c.notice);
        match &c.problem {
            Some(p) => println!("  {} ({}): NOT MEASURED: {p}", c.name, c.what),
            None => report(&format!("  {} ({})", c.name, c.what), &mut c.end_to_end),
        }
    }
    println!("\npcscd's notice -> UID at the contestant (the contestant's own share):");
    for c in contestants.iter_mut().filter(|c| !c.own.is_empty()) {
        report(&format!("  {}", c.name), &mut c.own);
    }
    report(
        "\ncard inserted -> pcscd reports it (passive SCardGetStatusChange observer), all taps",
        &mut all_notices,
    );
    report(
        "UID read -> greeting written on the SSE stream, visit committed (daemon share)",
        share,
    );
    report(
        "UID read -> greeting handed to the event streams (before they write it)",
        published,
    );

    let floor_rounds = contestants
        .iter()
        .find(|c| c.name == FLOOR)
        .map(|c| c.by_round.clone())
        .unwrap_or_default();
    let mut paired_floor = None;
    if !floor_rounds.is_empty() {
        println!("\nend to end minus the bare pcsc loop's in the same round (same pause):");
        for c in contestants
            .iter()
            .filter(|c| c.name != FLOOR && !c.by_round.is_empty())
        {
            let mut diffs: Vec<f64> = c
                .by_round
                .iter()
                .filter_map(|(round, d)| {
                    let (_, f) = floor_rounds.iter().find(|(r, _)| r == round)?;
                    Some(ms(*d) - ms(*f))
                })
                .collect();
            if diffs.is_empty() {
                continue;
            }
            diffs.sort_by(f64::total_cmp);
            let median = diffs[diffs.len().div_ceil(2) - 1];
            println!(
                "  {}: median {median:+.2} ms, p1 {:+.2} ms, p99 {:+.2} ms (n = {})",
                c.name,
                diffs[((diffs.len() as f64 * 0.01).ceil() as usize).clamp(1, diffs.len()) - 1],
                diffs[((diffs.len() as f64 * 0.99).ceil() as usize).clamp(1, diffs.len()) - 1],
                diffs.len()
            );
            if c.name == KIOSK {
                paired_floor = Some(median);
            }
        }
    }

    if !share.is_empty() {
        let p99 = pct(share, 0.99);
        figures.push(Figure::new(
            "tap",
            "daemon share p50 (UID read → SSE greeting written, visit committed)",
            pct(share, 0.5),
            "ms",
        ));
        figures.push(
            Figure::new(
                "tap",
                "daemon share p99 (UID read → SSE greeting written, visit committed)",
                p99,
                "ms",
            )
            .target("p99 ≤ 5 ms", p99 <= 5.0),
        );
    } else {
        figures.push(
            Figure::new(
                "tap",
                "daemon share: not measured (no tap line in the kiosk's log)",
                0.0,
                "ms",
            )
            .target("p99 ≤ 5 ms", false),
        );
    }

    let measured = |name: &str| {
        contestants
            .iter()
            .find(|c| c.name == name && !c.end_to_end.is_empty() && c.problem.is_none())
    };
    let kiosk = measured(KIOSK);
    let floor = measured(FLOOR);
    for c in contestants.iter() {
        if c.name == KIOSK {
            continue;
        }
        match &c.problem {
            None if !c.end_to_end.is_empty() => {
                for (p, label) in [(0.5, "p50"), (0.99, "p99")] {
                    figures.push(Figure::new(
                        "tap",
                        &format!("end to end {label} ({}: {})", c.name, c.what),
                        pct(&c.end_to_end, p),
                        "ms",
                    ));
                }
            }
            problem => figures.push(
                Figure::new(
                    "tap",
                    &format!(
                        "end to end ({}): not measured — {}",
                        c.name,
                        problem.as_deref().unwrap_or("no taps")
                    ),
                    0.0,
                    "ms",
                )
                .target("measured in the same run", false),
            ),
        }
    }
    if let Some(k) = kiosk {
        let (k50, k99) = (pct(&k.end_to_end, 0.5), pct(&k.end_to_end, 0.99));
        let mut p50 = Figure::new("tap", "end to end p50 (kiosk, SSE greeting)", k50, "ms");
        let mut p99 = Figure::new("tap", "end to end p99 (kiosk, SSE greeting)", k99, "ms");
        if let Some(f) = floor {
            let f50 = pct(&f.end_to_end, 0.5);
            p50 = p50
                .target("≤ 1.05× the floor (medians)", k50 <= 1.05 * f50)
                .versus(FLOOR, f50);
            p99 = p99.versus(FLOOR, pct(&f.end_to_end, 0.99));
        } else {
            p50 = p50.target("≤ 1.05× the floor (medians)", false);
        }
        figures.push(p50);
        figures.push(p99);
        if let Some(d) = paired_floor {
            figures.push(Figure::new(
                "tap",
                "end to end, kiosk minus bare pcsc loop in the same round (median of the differences)",
                d,
                "ms",
            ));
        }
        let faster = [NFC_PCSC, PYSCARD]
            .iter()
            .filter_map(|n| measured(n))
            .map(|c| (c.name, pct(&c.end_to_end, 0.5)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let vs = Figure::new(
            "tap",
            "end to end p50 (kiosk) against the faster peer",
            k50,
            "ms",
        );
        figures.push(match faster {
            Some((name, v)) => vs
                .target("no slower than the faster peer (medians)", k50 <= v)
                .versus(name, v),
            None => vs.target("no slower than the faster peer (no peer measured)", false),
        });
    } else {
        let why = contestants
            .iter()
            .find(|c| c.name == KIOSK)
            .and_then(|c| c.problem.clone())
            .unwrap_or_else(|| "no taps".into());
        figures.push(
            Figure::new(
                "tap",
                &format!("end to end (kiosk): not measured — {why}"),
                0.0,
                "ms",
            )
            .target("≤ 1.05× the floor (medians)", false),
        );
    }
    for c in contestants.iter().filter(|c| !c.own.is_empty()) {
        figures.push(Figure::new(
            "tap",
            &format!("after pcscd's notice p50 ({})", c.name),
            pct(&c.own, 0.5),
            "ms",
        ));
    }
    if !all_notices.is_empty() {
        all_notices.sort();
        for (p, label) in [(0.5, "p50"), (0.99, "p99")] {
            figures.push(Figure::new(
                "tap",
                &format!("pcscd's notice {label} (card inserted → pcscd reports it)"),
                pct(&all_notices, p),
                "ms",
            ));
        }
    }

    println!();
    for f in &figures {
        let ratio = f.ratio().map(|r| format!(" ({r:.3}×)")).unwrap_or_default();
        let versus = match (&f.versus, f.versus_value) {
            (Some(w), Some(v)) => format!(" vs {w} {v:.2}{ratio}"),
            _ => String::new(),
        };
        let target = match (&f.target, f.met) {
            (Some(t), Some(m)) => format!(" [{t}: {}]", if m { "met" } else { "MISSED" }),
            _ => String::new(),
        };
        println!("{}: {:.2} {}{versus}{target}", f.figure, f.value, f.unit);
    }
    figures
}
