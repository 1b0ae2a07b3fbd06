//! Serial readers end to end: pseudo-terminals stand in for an RDM6300, a QR scanner and a Wiegand converter.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kiosk_tests::kiosk::{KioskDir, Running};
use kiosk_tests::serial::{PtyReader, noise, rdm6300_frame, wiegand26};
use kiosk_tests::sse::SseClient;
use serde_json::Value;

use crate::{BIN, WAIT};

/// Cards as printed (DEZ10, DEZ8) and as tokens; the import converts them.
const ROSTER: &str = "\
card,customer_id,surname,title,tier,card_status,consultant_id,consultant_name,note
0008844356,C0101,赵,mr,gold,active,E01,李娜,
\"052,31775\",C0102,钱,ms,silver,active,E02,陈晨,
wg26:123/45678,C0103,孙,mr,normal,active,E01,李娜,
qr:MEMBER-0104,C0104,李,ms,gold,active,E02,陈晨,
";

fn serial_reader(name: &str, path: &str, protocol: &str) -> String {
    format!(
        "[[reader]]\nkind = \"serial\"\nname = \"{name}\"\npath = \"{path}\"\nprotocol = \"{protocol}\"\n\n"
    )
}

/// Starts a kiosk with `readers`, imports the roster, and waits until every named
/// reader reports connected.
async fn start(readers: &str, names: &[&str]) -> (KioskDir, Running, SseClient) {
    let dir = KioskDir::new(BIN, readers);
    let out = dir.import(ROSTER);
    assert!(
        out.status.success(),
        "import failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let kiosk = dir.start();
    let mut events = SseClient::connect(&kiosk.url("/api/v1/events")).await;
    let mut waiting: BTreeSet<&str> = names.iter().copied().collect();
    while !waiting.is_empty() {
        let ev = events
            .wait_for("reader", WAIT, |d| d["connected"] == true)
            .await;
        waiting.remove(ev.data["reader"].as_str().unwrap_or(""));
    }
    (dir, kiosk, events)
}

async fn visits_from(kiosk: &Running, source: &str) -> Vec<(String, String)> {
    let v = kiosk.get_json("/api/v1/visits?limit=1000").await;
    let mut list: Vec<(String, String)> = v["visits"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|v| v["source"] == source)
        .map(|v| {
            (
                v["card"].as_str().unwrap_or("?").to_owned(),
                v["method"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    // The API lists newest first.
    list.reverse();
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_readers_of_every_kind_make_one_event_per_tag() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let link = |n: &str| tmp.path().join(n);
    let mut rfid = PtyReader::plug_in(&link("rfid"));
    let mut qr = PtyReader::plug_in(&link("qr"));
    let mut door = PtyReader::plug_in(&link("door"));
    let config = [
        serial_reader("rfid", &rfid.path().display().to_string(), "rdm6300"),
        serial_reader("qr", &qr.path().display().to_string(), "line"),
        serial_reader("door", &door.path().display().to_string(), "wiegand-hex"),
    ]
    .concat();
    let (_dir, kiosk, mut events) = start(&config, &["rfid", "qr", "door"]).await;

    // An RDM6300 repeats a held tag every ~50 ms: a one-second burst is one greeting.
    let zhao = rdm6300_frame(0x3E, 0x0086_F444);
    for _ in 0..20 {
        rfid.send(&zhao);
        // Pacing the simulated module, not waiting for the kiosk.
        std::thread::sleep(Duration::from_millis(50));
    }
    let g = events.wait_for("greeting", WAIT, |_| true).await;
    assert_eq!(g.data["member"]["name_zh"], "赵先生", "{}", g.raw);
    assert_eq!(g.data["reader"], "rfid");
    // No second greeting (not even a "welcome back") before the tag has left, which
    // the kiosk decides when its frames stop (presence timeout).
    events
        .wait_for_without("reader", "greeting", WAIT, |d| {
            d["reader"] == "rfid" && d["card_present"] == false
        })
        .await;

    // Line noise: random bytes, a truncated frame, a bad checksum, a frame split
    // across two reads, two frames in one read. Only the three valid frames count.
    let qian = rdm6300_frame(0x01, 0x1234_7C1F); // DEZ8 "052,31775" on a card whose top byte is 0x12
    let stranger = rdm6300_frame(0x01, 0x00C0_FFEE);
    let other = rdm6300_frame(0x01, 0x0BAD_CAFE);
    let truncated = rdm6300_frame(0x01, 0x0AAA_0001);
    let mut bad_sum = rdm6300_frame(0x01, 0x0BBB_0002);
    bad_sum[11] ^= 0x01;
    rfid.send(&noise(200, 7));
    rfid.send(&truncated[..9]);
    rfid.send(&bad_sum);
    rfid.send(&noise(33, 11));
    rfid.send(&qian[..6]);
    rfid.send(&qian[6..]);
    rfid.send(&[stranger.as_slice(), other.as_slice()].concat());
    let g = events.wait_for("greeting", WAIT, |_| true).await;
    assert_eq!(g.data["member"]["name_zh"], "钱女士", "{}", g.raw);
    let g = events.wait_for("greeting", WAIT, |_| true).await;
    assert_eq!(g.data["outcome"], "unknown", "{}", g.raw);
    let g = events.wait_for("greeting", WAIT, |_| true).await;
    assert_eq!(g.data["outcome"], "unknown", "{}", g.raw);
    let em = |t: &str| (t.to_owned(), "em4100".to_owned());
    assert_eq!(
        visits_from(&kiosk, "rfid").await,
        [
            em("em:0086F444"),
            em("em:12347C1F"),
            em("em:00C0FFEE"),
            em("em:0BADCAFE")
        ]
    );

    // A QR scanner: one read per line.
    qr.send(b"MEMBER-0104\r\n");
    let g = events.wait_for("greeting", WAIT, |_| true).await;
    assert_eq!(g.data["member"]["name_zh"], "李女士", "{}", g.raw);
    assert_eq!(
        visits_from(&kiosk, "qr").await,
        [("qr:MEMBER-0104".to_owned(), "qr".to_owned())]
    );

    // A Wiegand converter: a frame with a parity error is dropped, the good one greets.
    let frame = wiegand26(123, 45678);
    door.send(format!("{:07X}\r\n{frame:07X}\r\n", frame ^ 1).as_bytes());
    let g = events.wait_for("greeting", WAIT, |_| true).await;
    assert_eq!(g.data["member"]["name_zh"], "孙先生", "{}", g.raw);
    assert_eq!(
        visits_from(&kiosk, "door").await,
        [("wg26:123/45678".to_owned(), "wiegand".to_owned())]
    );
}

/// Earliest time by which `n` reopen attempts can have happened: the backoff starts at
/// 250 ms and doubles to 2 s. A reader reopened in a tight loop would beat it by far.
fn earliest_attempt(n: u32) -> Duration {
    (0..n).map(|i| Duration::from_millis(250 << i.min(3))).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_reader_unplugged_and_plugged_back_reads_again() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut rfid = PtyReader::plug_in(&tmp.path().join("rfid"));
    // No cooldown: only presence keeps a tag held through the unplug from being a second tap.
    let config = serial_reader("rfid", &rfid.path().display().to_string(), "rdm6300")
        + "[reception]\nsame_card_cooldown = \"0s\"\n";
    let (_dir, kiosk, mut events) = start(&config, &["rfid"]).await;
    let zhao = rdm6300_frame(0x3E, 0x0086_F444);
    rfid.send(&zhao);
    let g = events.wait_for("greeting", WAIT, |_| true).await;
    assert_eq!(g.data["member"]["name_zh"], "赵先生", "{}", g.raw);

    let unplugged = Instant::now();
    rfid.unplug();
    let gone = |d: &Value| d["reader"] == "rfid" && d["connected"] == false;
    // The hang-up, then one event per failed reopen.
    events.wait_for("reader", WAIT, gone).await;
    for _ in 0..3 {
        events.wait_for("reader", WAIT, gone).await;
    }
    let elapsed = unplugged.elapsed();
    assert!(
        elapsed >= earliest_attempt(3),
        "3 reopen attempts within {elapsed:?}: the reader is retried without backoff"
    );
    let status = kiosk.get_json("/api/v1/status").await;
    let reader = &status["readers"][0];
    assert_eq!(reader["name"], "rfid", "{status}");
    assert_eq!(reader["kind"], "serial");
    assert_eq!(reader["connected"], false);
    assert!(reader["reopen_attempts"].as_u64() >= Some(3), "{reader}");
    assert!(
        status["problems"]
            .to_string()
            .contains("does not exist: is the reader plugged in?"),
        "{status}"
    );

    let plugged = Instant::now();
    rfid.plug();
    events
        .wait_for("reader", WAIT, |d| {
            d["reader"] == "rfid" && d["connected"] == true
        })
        .await;
    eprintln!("serial reader back {:?} after replug", plugged.elapsed());
    // The tag was held through the unplug: its frames again are no new tap.
    rfid.send(&zhao);
    events
        .wait_for_without("reader", "greeting", WAIT, |d| {
            d["reader"] == "rfid" && d["card_present"] == true
        })
        .await;
    rfid.send(&rdm6300_frame(0x01, 0x1234_7C1F));
    let g = events.wait_for("greeting", WAIT, |_| true).await;
    assert_eq!(g.data["member"]["name_zh"], "钱女士", "{}", g.raw);
}
