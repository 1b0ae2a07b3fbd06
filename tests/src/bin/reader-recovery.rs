//! Measures the reader layer's promises on the real stack: one event per held RDM6300 tag, recovery after a serial replug and after a pcscd restart.
//!
//! `cargo build --release -p kiosk && cargo run --release -p kiosk-tests --bin reader-recovery -- --rounds 10`
//! The pcscd part stops and starts the machine's pcscd (skipped where systemd
//! socket-activates it); run it on a machine where nothing else uses pcscd.

use std::time::{Duration, Instant};

use kiosk_tests::kiosk::{KioskDir, Running};
use kiosk_tests::pcscd::{READERS, ensure_pcscd, start_pcscd, stop_pcscd};
use kiosk_tests::serial::{PtyReader, rdm6300_frame};
use kiosk_tests::sse::SseClient;
use kiosk_tests::stats::{bench_args, report};
use kiosk_tests::vpcd::VirtualCard;

const WAIT: Duration = Duration::from_secs(30);
const UID: [u8; 7] = [0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6];

fn main() {
    let (rounds, bin) = bench_args("reader-recovery", "--rounds", 10);
    let bin = bin.to_str().expect("utf-8 path").to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(serial(&bin, rounds));
    runtime.block_on(pcscd(&bin, rounds));
}

/// The kiosk process's CPU time so far, summed over its threads (schedstat: ns on CPU).
fn cpu_time(kiosk: &Running) -> Duration {
    let tasks = format!("/proc/{}/task", kiosk.child.id());
    let ns: u64 = std::fs::read_dir(tasks)
        .map(|dir| {
            dir.filter_map(|t| t.ok())
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

async fn serial(bin: &str, rounds: usize) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut rfid = PtyReader::plug_in(&tmp.path().join("rfid"));
    let dir = KioskDir::new(
        bin,
        &format!(
            "[[reader]]\nkind = \"serial\"\nname = \"rfid\"\npath = \"{}\"\nprotocol = \"rdm6300\"\n\n[reception]\nsame_card_cooldown = \"3s\"\n",
            rfid.path().display()
        ),
    );
    let kiosk = dir.start();
    let mut events = SseClient::connect(&kiosk.url("/api/v1/events")).await;
    let is_rfid = |d: &serde_json::Value| d["reader"] == "rfid";
    events
        .wait_for("reader", WAIT, |d| is_rfid(d) && d["connected"] == true)
        .await;

    // A tag held for 1 s: the module repeats it every 50 ms. Count the greetings
    // until the kiosk reports the tag gone.
    let mut per_burst = Vec::new();
    for round in 0..rounds {
        let frame = rdm6300_frame(0x3E, 0x0100_0000 + round as u32);
        for _ in 0..20 {
            rfid.send(&frame);
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut greetings = 0;
        loop {
            let ev = events.next(WAIT).await.expect("event stream open");
            match ev.name.as_str() {
                "greeting" => greetings += 1,
                "reader" if is_rfid(&ev.data) && ev.data["card_present"] == false => break,
                _ => {}
            }
        }
        per_burst.push(greetings);
    }
    println!(
        "RDM6300, 1 s burst (20 frames, 50 ms apart): events per tag min {} max {} over {rounds} tags",
        per_burst.iter().min().unwrap_or(&0),
        per_burst.iter().max().unwrap_or(&0)
    );

    // Unplugged for 1-4 s (a person re-seating a cable), then plugged back.
    let mut back = Vec::new();
    let mut cpu_share = Vec::new();
    for round in 0..rounds {
        rfid.unplug();
        events
            .wait_for("reader", WAIT, |d| is_rfid(d) && d["connected"] == false)
            .await;
        let (cpu0, t0) = (cpu_time(&kiosk), Instant::now());
        std::thread::sleep(Duration::from_millis(1_000 + 300 * (round as u64 % 10)));
        cpu_share.push((cpu_time(&kiosk) - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64());
        let plugged = Instant::now();
        rfid.plug();
        events
            .wait_for("reader", WAIT, |d| is_rfid(d) && d["connected"] == true)
            .await;
        back.push(plugged.elapsed());
    }
    report("serial replug -> reader connected again", &mut back);
    let worst = cpu_share.iter().copied().fold(0.0, f64::max);
    println!(
        "kiosk CPU while the serial reader was unplugged: at most {:.3}% of one core",
        worst * 100.0
    );
}

async fn pcscd(bin: &str, rounds: usize) {
    ensure_pcscd();
    let (reader, port) = READERS[0];
    let dir = KioskDir::with_reader(bin, reader, "0s");
    assert!(
        dir.import("card,customer_id,surname,title,tier\nnfc:04A1B2C3D4E5F6,C1,张,mr,gold\n")
            .status
            .success()
    );
    let kiosk = dir.start();
    let mut events = SseClient::connect(&kiosk.url("/api/v1/events")).await;
    let is_reader = |d: &serde_json::Value| d["reader"] == reader;
    events
        .wait_for("reader", WAIT, |d| is_reader(d) && d["connected"] == true)
        .await;
    let mut down = Vec::new();
    let mut up = Vec::new();
    let mut tap = Vec::new();
    for _ in 0..rounds {
        let stopping = Instant::now();
        if !stop_pcscd() {
            println!("pcscd restart: skipped, systemd socket-activates pcscd on this machine");
            return;
        }
        events
            .wait_for("reader", WAIT, |d| is_reader(d) && d["connected"] == false)
            .await;
        down.push(stopping.elapsed());
        // start_pcscd returns once pcscd lists the reader: measure the kiosk from there.
        start_pcscd();
        let started = Instant::now();
        events
            .wait_for("reader", WAIT, |d| is_reader(d) && d["connected"] == true)
            .await;
        up.push(started.elapsed());
        let t = Instant::now();
        let card = VirtualCard::insert(port, &UID).expect("insert");
        events.wait_for("greeting", WAIT, |_| true).await;
        tap.push(t.elapsed());
        card.remove();
        events
            .wait_for("reader", WAIT, |d| {
                is_reader(d) && d["card_present"] == false
            })
            .await;
    }
    report(
        "pcscd stopped -> reader shown disconnected (includes pcscd's own exit)",
        &mut down,
    );
    report(
        "pcscd listing the reader again -> kiosk shows it connected",
        &mut up,
    );
    report("first tap after the restart -> greeting", &mut tap);
}
