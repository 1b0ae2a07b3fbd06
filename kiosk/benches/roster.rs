//! Roster lookup of a tap on a real SQLite file of 1,000,000 cards: the daemon's own lookup (`store::card_customer`), first touch and warm, hits and misses.
//!
//! `cargo bench -p kiosk --bench roster -- [--cards 1000000] [--lookups 100000]`
//!
//! The roster is imported by the kiosk's own import (`roster::parse_csv` and
//! `Store::import_roster`, in chunks of 100,000 rows so the bench's memory stays
//! small) into a temp folder. Card tokens are scattered over the key space, as real
//! UIDs are, so the cards B-tree is filled the way an import of a real roster fills it.
//! Then, on a connection opened as the daemon opens its own (`store::open`: WAL,
//! `synchronous = FULL`, SQLite's default 2 MiB page cache, which the kiosk keeps):
//!
//! - **first touch after the start-up pre-read**: the file's pages are dropped from the
//!   OS page cache (`posix_fadvise(DONTNEED)`, which touches no other file), the daemon's
//!   start-up pre-read (`store::preread`) runs, then each of `--lookups` random cards (90 %
//!   in the roster, 10 % not) is looked up once — a kiosk after a reboot;
//! - **first touch, cold OS cache**: dropped again, the same cards without the pre-read —
//!   what a tap sees in the seconds before the pre-read has finished;
//! - **warm**: the same cards again in another order, with the file now in the OS cache,
//!   as it is on a kiosk that has been running.
//!
//! Each lookup is timed on its own; a tap runs it inside its write transaction, here
//! each is its own read transaction (slightly dearer: it takes a WAL read mark).

use std::path::Path;
use std::time::{Duration, Instant};

use kiosk::roster::parse_csv;
use kiosk::store::{Identity, Store, card_customer, open, preread};
use kiosk_device::CardToken;
use kiosk_tests::stats::{Figure, emit};

/// Design §6: a roster lookup's p99.
const TARGET: Duration = Duration::from_micros(100);
/// Rows per import transaction.
const CHUNK: u64 = 100_000;

fn main() {
    let (cards, lookups) = args();
    let dir = tempfile::Builder::new()
        .prefix("roster-bench-")
        .tempdir()
        .expect("temp dir");
    let started = Instant::now();
    import(dir.path(), cards);
    let db = dir.path().join("kiosk.sqlite");
    let size = std::fs::metadata(&db).map_or(0, |m| m.len());
    eprintln!(
        "{cards} cards imported in {:.1} s ({:.0} MiB file)",
        started.elapsed().as_secs_f64(),
        size as f64 / 1_048_576.0
    );

    // 90 % hits, 10 % misses, drawn before the clock runs.
    let mut rng = SplitMix(0x5EED_CA7D);
    let picks: Vec<(CardToken, bool)> = (0..lookups)
        .map(|_| {
            if rng.next() % 10 == 0 {
                (card_token(cards + 1 + rng.next() % cards), false)
            } else {
                (card_token(1 + rng.next() % cards), true)
            }
        })
        .collect();

    // As a kiosk starts after a reboot: the file out of the OS cache, the daemon's
    // start-up pre-read, then the taps.
    evict(&db);
    let read_started = Instant::now();
    preread(dir.path()).expect("pre-read");
    let read_took = read_started.elapsed();
    eprintln!("start-up pre-read: {:.2} s", read_took.as_secs_f64());
    let conn = open(dir.path()).expect("open the roster database");
    let after_preread = measure(&conn, &picks);
    drop(conn);
    // Before the pre-read has finished (or without it): every page from the disk.
    evict(&db);
    let conn = open(dir.path()).expect("open the roster database");
    let first = measure(&conn, &picks);
    // Another order for the warm pass: the same cards, reversed and interleaved.
    let mut again: Vec<(CardToken, bool)> = picks.iter().rev().cloned().collect();
    let half = again.len() / 2;
    again.rotate_left(half);
    let warm = measure(&conn, &again);
    drop(conn);

    let mut figures = Vec::new();
    println!("roster lookups: {cards} cards, {lookups} lookups (90 % hits), one thread");
    println!("| pass | cards | n | p50 | p99 | p99.9 | max |\n|---|---|---|---|---|---|---|");
    figures.push(Figure::new(
        "roster",
        &format!(
            "start-up pre-read of the {:.0} MiB database file",
            size as f64 / 1_048_576.0
        ),
        read_took.as_secs_f64(),
        "s",
    ));
    let passes = [
        ("first touch, cold OS cache", first),
        ("first touch after the start-up pre-read", after_preread),
        ("warm", warm),
    ];
    for (pass, mut samples) in passes {
        for (kind, hit) in [("in the roster", true), ("not in the roster", false)] {
            let s: &mut Vec<Duration> = if hit { &mut samples.0 } else { &mut samples.1 };
            s.sort();
            let (p50, p99, p999) = (pct(s, 0.5), pct(s, 0.99), pct(s, 0.999));
            println!(
                "| {pass} | {kind} | {} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |",
                s.len(),
                us(p50),
                us(p99),
                us(p999),
                us(s.last().copied().unwrap_or_default())
            );
            let name = |q: &str| format!("lookup {q}, {pass}, card {kind} ({} cards)", int(cards));
            figures.push(Figure::new("roster", &name("p50"), us(p50), "µs"));
            let mut f99 = Figure::new("roster", &name("p99"), us(p99), "µs");
            // The design's target does not say warm or cold: every pass is held to it.
            if cards >= 1_000_000 {
                f99 = f99.target("p99 ≤ 100 µs", p99 <= TARGET);
            }
            figures.push(f99);
        }
    }
    emit(&figures);
}

fn args() -> (u64, usize) {
    let usage = || -> ! {
        eprintln!(
            "usage: cargo bench -p kiosk --bench roster -- [--cards 1000000] [--lookups 100000]"
        );
        std::process::exit(2);
    };
    let (mut cards, mut lookups) = (1_000_000u64, 100_000usize);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = || -> u64 {
            it.next()
                .and_then(|v| v.replace(['_', ','], "").parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or_else(|| usage())
        };
        match a.as_str() {
            "--cards" => cards = num(),
            "--lookups" => lookups = num() as usize,
            // cargo bench passes it to every bench binary.
            "--bench" => {}
            _ => usage(),
        }
    }
    (cards, lookups)
}

/// A distinct 7-byte NFC UID per `i` (an odd multiplier is a bijection mod 2^48).
fn card_token(i: u64) -> CardToken {
    let n = i.wrapping_mul(0x9E37_79B9_7F4B) & 0xFFFF_FFFF_FFFF;
    CardToken::parse(&format!("nfc:04{n:012X}")).expect("a card token")
}

/// Imports `cards` cards, one customer each and ten consultants, through the kiosk's
/// own CSV parser and import.
fn import(dir: &Path, cards: u64) {
    let identity = Identity {
        kiosk_id: "bench-kiosk".into(),
        office_id: "bench-office".into(),
        time_zone: jiff::tz::TimeZone::get("Asia/Shanghai").expect("time zone"),
    };
    let mut store = Store::open(dir, identity).expect("open the store");
    let mut from = 1;
    while from <= cards {
        let to = (from + CHUNK - 1).min(cards);
        let mut csv =
            String::from("card,customer_id,surname,title,tier,consultant_id,consultant_name\n");
        for i in from..=to {
            let c = i % 10;
            csv.push_str(&format!(
                "{},C{i:07},张,{},gold,E{c:02},顾问{c}\n",
                card_token(i).as_str(),
                if i % 2 == 0 { "mr" } else { "ms" }
            ));
        }
        let roster = parse_csv(csv.as_bytes()).unwrap_or_else(|e| panic!("roster rows: {e:?}"));
        store.import_roster(&roster).expect("import");
        from = to + 1;
    }
}

/// Writes the file out and drops its pages from the OS page cache, so the first pass
/// reads them as a kiosk does after a reboot.
fn evict(db: &Path) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    let file = std::fs::File::open(db).expect("open the database file");
    file.sync_all().expect("fsync");
    if let Err(e) = posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED) {
        eprintln!("could not drop the file from the page cache ({e}): first touch is warm");
    }
}

/// Times each lookup; (hits, misses), checking each answer.
fn measure(
    conn: &rusqlite::Connection,
    picks: &[(CardToken, bool)],
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut hits, mut misses) = (Vec::new(), Vec::new());
    for (token, listed) in picks {
        let t = Instant::now();
        let found = card_customer(conn, token).expect("lookup");
        let took = t.elapsed();
        assert_eq!(found.is_some(), *listed, "{}", token.as_str());
        if *listed { &mut hits } else { &mut misses }.push(took);
    }
    (hits, misses)
}

/// Nearest-rank quantile of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// 1234567 → "1,234,567".
fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// SplitMix64: reproducible picks without a dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE5_E9B7);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
