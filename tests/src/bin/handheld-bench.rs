//! Handheld posts under load: `POST /api/v1/visits` on a real `kiosk run` driven by wrk, with an HTTP floor and a storage floor measured in the same run.
//!
//! `cargo build --release -p kiosk && cargo run --release -p kiosk-tests --bin handheld-bench -- --seconds 30 --connections 64`
//!
//! The kiosk gets a roster of `--customers` cards and `--devices` handhelds added with
//! `kiosk devices add`. The per-device rate limit (20/s, burst 40) stays as shipped; the
//! load is spread over enough devices (default 1,024: 20,480/s) that it is not what is
//! measured, and any 429 shows in the table. wrk (Debian's `wrk`) runs
//! `handheld-bench.lua`: a fresh UUID per request, each wrk thread rotating its own
//! devices' tokens. Afterwards the kiosk is killed with SIGKILL and its database is
//! opened: every visit answered 2xx must be there, and the posts stored may exceed the
//! 2xx count only by requests still in flight when wrk stopped (at most one per connection).
//!
//! Floors, with the same wrk and script: (a) an axum server in this process answering
//! 201 with a small JSON (the HTTP floor); (b) a rusqlite loop inserting one row per
//! transaction at the kiosk's durability (WAL, `synchronous = FULL`), and the same with
//! 64 rows per transaction (what sharing one commit can reach).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kiosk_tests::kiosk::{KioskDir, set_daemon_log_filter};
use kiosk_tests::stats::{Figure, emit, ms};

const SCRIPT: &str = include_str!("handheld-bench.lua");

#[derive(Debug)]
struct Args {
    seconds: u64,
    connections: usize,
    threads: usize,
    devices: usize,
    customers: usize,
    bin: PathBuf,
    floors: bool,
}

fn args() -> Args {
    let usage = || -> ! {
        eprintln!(
            "usage: handheld-bench [--seconds 30] [--connections 64] [--threads 2] [--devices 1024] \
             [--customers 1000000] [--no-floors] [--kiosk PATH]"
        );
        std::process::exit(2);
    };
    let mut a = Args {
        seconds: 30,
        connections: 64,
        threads: 2,
        devices: 1024,
        customers: 1_000_000,
        bin: PathBuf::from("target/release/kiosk"),
        floors: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = || -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage())
        };
        match flag.as_str() {
            "--seconds" => a.seconds = num() as u64,
            "--connections" => a.connections = num(),
            "--threads" => a.threads = num(),
            "--devices" => a.devices = num(),
            "--customers" => a.customers = num(),
            "--no-floors" => a.floors = false,
            "--kiosk" => a.bin = it.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            _ => usage(),
        }
    }
    if !a.bin.exists() {
        eprintln!(
            "{} not found; build it first: cargo build --release -p kiosk",
            a.bin.display()
        );
        std::process::exit(2);
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk not found; install it: apt-get install wrk");
        std::process::exit(2);
    }
    a
}

/// What wrk's `done()` printed.
#[derive(Debug, Default)]
struct WrkResult {
    duration: Duration,
    statuses: Vec<(u16, u64)>,
    socket_errors: u64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
}

impl WrkResult {
    fn ok(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(s))
            .map(|(_, n)| n)
            .sum()
    }

    fn per_second(&self) -> f64 {
        self.ok() as f64 / self.duration.as_secs_f64()
    }

    fn non_2xx(&self) -> String {
        let bad: Vec<String> = self
            .statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(s))
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        let mut text = if bad.is_empty() {
            "none".to_owned()
        } else {
            bad.join(", ")
        };
        if self.socket_errors > 0 {
            text.push_str(&format!("; socket errors {}", self.socket_errors));
        }
        text
    }
}

fn run_wrk(
    a: &Args,
    url: &str,
    tokens: &[String],
    ids_dir: Option<&Path>,
    work: &Path,
) -> WrkResult {
    let quoted: Vec<String> = tokens.iter().map(|t| format!("\"{t}\"")).collect();
    let script = format!(
        "tokens = {{{}}}\ncustomers = {}\nnonce = {}\nthread_count = {}\nids_dir = \"{}\"\n{SCRIPT}",
        quoted.join(","),
        a.customers,
        // Ids differ between runs, as a real fleet's do.
        rand_u32(),
        a.threads,
        ids_dir.map(|d| d.display().to_string()).unwrap_or_default(),
    );
    let path = work.join("bench.lua");
    std::fs::write(&path, script).expect("write wrk script");
    let out = Command::new("wrk")
        .args([
            "-t",
            &a.threads.to_string(),
            "-c",
            &a.connections.to_string(),
        ])
        .args(["-d", &format!("{}s", a.seconds), "--timeout", "10s", "-s"])
        .arg(&path)
        .arg(url)
        .output()
        .expect("run wrk");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("WRK_RESULT"))
        .unwrap_or_else(|| panic!("no WRK_RESULT in wrk's output:\n{stdout}"));
    let mut r = WrkResult::default();
    let us = |v: &str| Duration::from_micros(v.parse::<f64>().expect("number") as u64);
    for pair in line.split_whitespace().skip(1) {
        let (k, v) = pair.split_once('=').expect("key=value");
        match k {
            "duration_us" => r.duration = us(v),
            "p50_us" => r.p50 = us(v),
            "p99_us" => r.p99 = us(v),
            "p999_us" => r.p999 = us(v),
            "max_us" => r.max = us(v),
            "connect_errors" | "read_errors" | "write_errors" | "timeouts" => {
                r.socket_errors += v.parse::<u64>().expect("count")
            }
            "requests" => {}
            k => {
                if let Some(code) = k.strip_prefix("status_") {
                    r.statuses
                        .push((code.parse().expect("status"), v.parse().expect("count")));
                }
            }
        }
    }
    r.statuses.sort();
    r
}

fn rand_u32() -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.subsec_nanos() ^ now.as_secs() as u32
}

/// The roster: `customers` cards nfc:04 + 12 hex digits of 1..=N, as the Lua script makes them.
fn roster(customers: usize) -> String {
    let mut csv = String::from("card,customer_id,surname,title,tier\n");
    for n in 1..=customers {
        csv.push_str(&format!("nfc:04{n:012X},C{n},张,mr,gold\n"));
    }
    csv
}

/// Issues `count` devices with `kiosk devices add`, four processes at a time.
fn add_devices(dir: &KioskDir, count: usize) -> Vec<String> {
    let config = dir.config();
    let mut tokens = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(4) {
        let children: Vec<_> = chunk
            .iter()
            .map(|i| {
                let file = dir.path().join(format!("dev-{i}.token"));
                let child = Command::new(&dir.bin)
                    .args(["devices", "add", &format!("pda-{i:04}"), "--config"])
                    .arg(&config)
                    .arg("--token-file")
                    .arg(&file)
                    .env("KIOSK_LOG", "warn")
                    .output();
                (file, child)
            })
            .collect();
        for (file, out) in children {
            let out = out.expect("run kiosk devices add");
            assert!(
                out.status.success(),
                "kiosk devices add: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            tokens.push(
                std::fs::read_to_string(&file)
                    .expect("token file")
                    .trim()
                    .to_owned(),
            );
        }
    }
    tokens
}

#[derive(Debug)]
struct KioskRun {
    wrk: WrkResult,
    answered: usize,
    missing: usize,
    posts_stored: u64,
    visits_stored: u64,
}

fn kiosk_run(a: &Args) -> KioskRun {
    set_daemon_log_filter("info");
    let dir = KioskDir::new(a.bin.to_str().expect("utf-8 path"), "");
    let t = Instant::now();
    let out = dir.import(&roster(a.customers));
    assert!(
        out.status.success(),
        "roster import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "roster of {} imported in {:.1} s",
        a.customers,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let tokens = add_devices(&dir, a.devices);
    eprintln!(
        "{} devices added in {:.1} s",
        a.devices,
        t.elapsed().as_secs_f64()
    );
    let mut kiosk = dir.start();
    let ids_dir = dir.path().join("ids");
    std::fs::create_dir(&ids_dir).expect("ids dir");
    eprintln!("kiosk: {} connections for {} s …", a.connections, a.seconds);
    let wrk = run_wrk(
        a,
        &kiosk.url("/api/v1/visits"),
        &tokens,
        Some(&ids_dir),
        dir.path(),
    );
    // SIGKILL: no clean shutdown to finish anything; what a 2xx promised must be there.
    kiosk.kill9();
    let conn = rusqlite::Connection::open(dir.path().join("data/kiosk.sqlite")).expect("open db");
    let count = |sql: &str| -> u64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
    let posts_stored = count("SELECT count(*) FROM device_posts");
    let visits_stored = count("SELECT count(*) FROM visits");
    let stored: HashSet<String> = conn
        .prepare("SELECT id FROM visits")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("ids");
    let mut answered = 0;
    let mut missing = 0;
    for entry in std::fs::read_dir(&ids_dir).expect("ids dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("ids file");
        for id in text.lines() {
            answered += 1;
            if !stored.contains(id) {
                missing += 1;
            }
        }
    }
    KioskRun {
        wrk,
        answered,
        missing,
        posts_stored,
        visits_stored,
    }
}

/// (a) The HTTP floor: the same requests to an axum handler that answers 201 at once.
fn http_floor(a: &Args, work: &Path) -> WrkResult {
    use axum::routing::post;
    // Like the kiosk's: a multi-threaded runtime with one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/api/v1/visits",
        post(|_body: axum::body::Bytes| async {
            (
                axum::http::StatusCode::CREATED,
                axum::Json(serde_json::json!({"visit": {"id": "0"}, "outcome": "welcome"})),
            )
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await });
    eprintln!(
        "HTTP floor: {} connections for {} s …",
        a.connections, a.seconds
    );
    let tokens = vec!["floor".to_owned()];
    let r = run_wrk(
        a,
        &format!("http://{addr}/api/v1/visits"),
        &tokens,
        None,
        work,
    );
    rt.shutdown_background();
    r
}

/// (b) The storage floor: `per_tx` inserts per transaction, WAL + `synchronous = FULL`,
/// for `seconds`; returns rows/s and the commit latencies.
fn storage_floor(work: &Path, per_tx: usize, seconds: u64) -> (f64, Vec<Duration>) {
    let path = work.join(format!("floor-{per_tx}.sqlite"));
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("sync");
    conn.execute_batch("CREATE TABLE visits (id TEXT PRIMARY KEY, seq INTEGER, body TEXT)")
        .expect("table");
    // About a visit row plus its outbox body.
    let body = "x".repeat(500);
    let start = Instant::now();
    let limit = Duration::from_secs(seconds);
    let mut rows = 0u64;
    let mut commits = Vec::new();
    while start.elapsed() < limit {
        let t = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        for _ in 0..per_tx {
            rows += 1;
            conn.execute(
                "INSERT INTO visits (id, seq, body) VALUES (?1, ?2, ?3)",
                rusqlite::params![uuid::Uuid::now_v7().to_string(), rows, body],
            )
            .expect("insert");
        }
        conn.execute_batch("COMMIT").expect("commit");
        commits.push(t.elapsed());
    }
    (rows as f64 / start.elapsed().as_secs_f64(), commits)
}

fn pct(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1]
}

fn main() {
    let a = args();
    let work = tempfile::Builder::new()
        .prefix("handheld-bench-")
        .tempdir()
        .expect("temp dir");
    let k = kiosk_run(&a);
    let floors = a.floors.then(|| {
        let http = http_floor(&a, work.path());
        let floor_seconds = a.seconds.min(10);
        eprintln!("storage floor: {floor_seconds} s each …");
        let one = storage_floor(work.path(), 1, floor_seconds);
        let batch = storage_floor(work.path(), 64, floor_seconds);
        (http, one, batch)
    });

    let w = &k.wrk;
    println!("| figure | value | target (design §6) | met? |\n|---|---|---|---|");
    let yes = |b: bool| if b { "yes" } else { "**no**" };
    println!(
        "| kiosk: 2xx posts/s at {} connections ({} s, {} devices) | {:.0}/s ({} in {:.1} s) | ≥ 5,000/s | {} |",
        a.connections,
        a.seconds,
        a.devices,
        w.per_second(),
        w.ok(),
        w.duration.as_secs_f64(),
        yes(w.per_second() >= 5000.0)
    );
    println!(
        "| kiosk: latency p50 / p99 / p99.9 / max | {:.2} / {:.2} / {:.2} / {:.2} ms | p99 ≤ 20 ms | {} |",
        ms(w.p50),
        ms(w.p99),
        ms(w.p999),
        ms(w.max),
        yes(w.p99 <= Duration::from_millis(20))
    );
    println!(
        "| kiosk: non-2xx answers | {} | none | {} |",
        w.non_2xx(),
        yes(w.non_2xx() == "none")
    );
    let in_flight = k.posts_stored as i64 - w.ok() as i64;
    let durable = k.missing == 0
        && k.answered as u64 == w.ok()
        && (0..=a.connections as i64).contains(&in_flight);
    println!(
        "| kiosk: after SIGKILL, 2xx visits found / missing; posts stored − 2xx (in flight at the stop) | {} / {}; {} | all / 0; 0 ≤ n ≤ {} | {} |",
        k.answered - k.missing,
        k.missing,
        in_flight,
        a.connections,
        yes(durable)
    );
    println!(
        "| kiosk: rows after the run: device posts / visits | {} / {} | – | – |",
        k.posts_stored, k.visits_stored
    );
    if let Some((http, (one_rate, one), (batch_rate, batch))) = &floors {
        let (mut one, mut batch) = (one.clone(), batch.clone());
        println!(
            "| HTTP floor (axum answering 201, same wrk script): 2xx/s; p50 / p99 | {:.0}/s; {:.2} / {:.2} ms | – | – |",
            http.per_second(),
            ms(http.p50),
            ms(http.p99)
        );
        println!(
            "| storage floor: 1 insert per transaction (WAL, synchronous=FULL): rows/s; commit p50 / p99 | {:.0}/s; {:.2} / {:.2} ms | – | – |",
            one_rate,
            ms(pct(&mut one, 0.5)),
            ms(pct(&mut one, 0.99))
        );
        println!(
            "| storage floor: 64 inserts per transaction: rows/s; commit p50 / p99 | {:.0}/s; {:.2} / {:.2} ms | – | – |",
            batch_rate,
            ms(pct(&mut batch, 0.5)),
            ms(pct(&mut batch, 0.99))
        );
    }
    emit(&figures(&a, &k, floors.as_ref(), durable));
    if !durable {
        eprintln!("DURABILITY CHECK FAILED");
        std::process::exit(1);
    }
}

/// The HTTP floor's run, and the storage floors' rows/s and commit latencies (1 and 64
/// rows per transaction).
type Floors = (WrkResult, (f64, Vec<Duration>), (f64, Vec<Duration>));

/// The figures for `bench`'s table (scenario `handheld`), against design §6's targets
/// and the floors measured in the same run.
fn figures(a: &Args, k: &KioskRun, floors: Option<&Floors>, durable: bool) -> Vec<Figure> {
    const S: &str = "handheld";
    let w = &k.wrk;
    let rate = w.per_second();
    let mut posts = Figure::new(
        S,
        &format!(
            "2xx posts/s, {} connections, {} s",
            a.connections, a.seconds
        ),
        rate,
        "/s",
    )
    .target("≥ 5,000/s", rate >= 5000.0);
    let mut p99 = Figure::new(S, "post latency p99", ms(w.p99), "ms")
        .target("p99 ≤ 20 ms", w.p99 <= Duration::from_millis(20));
    if let Some((http, _, _)) = floors {
        posts = posts.versus("HTTP floor (axum answering 201)", http.per_second());
        p99 = p99.versus("HTTP floor", ms(http.p99));
    }
    let mut out = vec![
        posts,
        Figure::new(S, "post latency p50", ms(w.p50), "ms"),
        p99,
        Figure::new(S, "post latency p99.9", ms(w.p999), "ms"),
        Figure::new(
            S,
            "non-2xx answers and socket errors",
            non_2xx_count(w) as f64,
            "count",
        )
        .target("none", non_2xx_count(w) == 0),
        Figure::new(
            S,
            "2xx visits found after SIGKILL",
            (k.answered - k.missing) as f64,
            "count",
        ),
        Figure::new(
            S,
            "2xx visits missing after SIGKILL",
            k.missing as f64,
            "count",
        )
        .target("all durable", durable),
    ];
    if let Some((_, (one_rate, _), (batch_rate, _))) = floors {
        out.push(
            Figure::new(S, "2xx posts/s against one commit per row", rate, "/s").versus(
                "storage floor: rusqlite, 1 insert per commit (WAL, synchronous=FULL)",
                *one_rate,
            ),
        );
        out.push(
            Figure::new(S, "2xx posts/s against 64 rows per commit", rate, "/s").versus(
                "storage floor: rusqlite, 64 inserts per commit",
                *batch_rate,
            ),
        );
    }
    out
}

/// Answers that were not 2xx, and requests that got no answer at all.
fn non_2xx_count(w: &WrkResult) -> u64 {
    let bad: u64 = w
        .statuses
        .iter()
        .filter(|(s, _)| !(200..300).contains(s))
        .map(|(_, n)| n)
        .sum();
    bad + w.socket_errors
}
