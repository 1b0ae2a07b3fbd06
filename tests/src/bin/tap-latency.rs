//! Measures a tap on the real stack: virtual card inserted on pcscd + vpcd → greeting on the SSE stream.
//!
//! `cargo build --release -p kiosk && cargo run --release -p kiosk-tests --bin tap-latency -- --taps 100`
//! Prints the end-to-end median and p99, and the daemon's own share (UID read →
//! greeting published after commit) from the kiosk's debug log.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiosk_tests::kiosk::KioskDir;
use kiosk_tests::pcscd::claim_reader;
use kiosk_tests::sse::SseClient;
use kiosk_tests::stats::{bench_args, report};
use kiosk_tests::vpcd::VirtualCard;

const ROSTER: &str = "card,customer_id,surname,title,tier\nnfc:04A1B2C3D4E5F6,C0001,张,mr,gold\n";
const UID: [u8; 7] = [0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6];
const WAIT: Duration = Duration::from_secs(20);

fn main() {
    let (taps, bin) = bench_args("tap-latency", "--taps", 100);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(bin, taps));
}

async fn run(bin: PathBuf, taps: usize) {
    let reader = claim_reader();
    let dir = KioskDir::with_reader(bin.to_str().expect("utf-8 path"), &reader.name, "0s");
    assert!(dir.import(ROSTER).status.success(), "roster import failed");
    let kiosk = dir.start();
    let mut events = SseClient::connect(&kiosk.url("/api/v1/events")).await;
    let name = reader.name.clone();
    events
        .wait_for("reader", WAIT, |d| {
            d["reader"] == name.as_str() && d["connected"] == true
        })
        .await;

    let mut end_to_end = Vec::with_capacity(taps);
    for _ in 0..taps {
        // Visitors do not arrive in step with pcscd's 400 ms polling: a spread-out
        // pause (0-499 ms) before each tap samples every phase of the poll.
        let jitter = Duration::from_millis(u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
                % 500,
        ));
        tokio::time::sleep(jitter).await;
        let start = Instant::now();
        let card = VirtualCard::insert(reader.port, &UID).expect("insert card");
        events.wait_for("greeting", WAIT, |_| true).await;
        end_to_end.push(start.elapsed());
        card.remove();
        events
            .wait_for("reader", WAIT, |d| {
                d["reader"] == name.as_str() && d["card_present"] == false
            })
            .await;
    }
    drop(events);
    drop(kiosk);

    let log = std::fs::read_to_string(dir.path().join("kiosk.log")).unwrap_or_default();
    let mut share: Vec<Duration> = log
        .lines()
        .filter(|l| l.contains("UID read to greeting published"))
        .filter_map(|l| l.split("micros=").nth(1))
        .filter_map(|v| v.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .map(Duration::from_micros)
        .collect();

    println!("taps: {taps} on {} (pcscd + vsmartcard-vpcd)", reader.name);
    report(
        "card inserted -> SSE greeting (kiosk, end to end)",
        &mut end_to_end,
    );
    report(
        "UID read -> greeting published, visit committed (daemon share)",
        &mut share,
    );
}
