//! Shared by the bench binaries: their arguments, and median, p99, min and max of measured durations.

use std::path::PathBuf;
use std::time::Duration;

/// Reads `[--COUNT N] [--kiosk PATH]` (count `default`, kiosk `target/release/kiosk`)
/// and checks the kiosk binary exists; exits with usage on anything else.
pub fn bench_args(name: &str, count_flag: &str, default: usize) -> (usize, PathBuf) {
    let usage = || -> ! {
        eprintln!("usage: {name} [{count_flag} N] [--kiosk PATH]");
        std::process::exit(2);
    };
    let mut count = default;
    let mut bin = PathBuf::from("target/release/kiosk");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--kiosk" => bin = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            flag if flag == count_flag => {
                count = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }
    if !bin.exists() {
        eprintln!(
            "{} not found; build it first: cargo build --release -p kiosk",
            bin.display()
        );
        std::process::exit(2);
    }
    (count, bin)
}

/// Prints `what: median …, p99 …, min …, max … (n = …)` in milliseconds.
pub fn report(what: &str, samples: &mut [Duration]) {
    if samples.is_empty() {
        println!("{what}: no samples");
        return;
    }
    samples.sort();
    let pct =
        |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1];
    println!(
        "{what}: median {:.2} ms, p99 {:.2} ms, min {:.2} ms, max {:.2} ms (n = {})",
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
