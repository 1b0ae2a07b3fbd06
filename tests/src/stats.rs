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

/// The environment variable naming the file where a bench binary appends its figures
/// (JSON lines), set by the `bench` command that runs the scenarios and builds the table.
pub const FIGURES_ENV: &str = "KIOSK_BENCH_FIGURES";

/// One figure of the benchmarks table: what a scenario measured, against its target
/// (design §6) and against a floor or a peer measured in the same run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Figure {
    /// The scenario that measured it: `tap`, `handheld`, `sync`, `fleet`, `roster`, `idle`.
    pub scenario: String,
    /// What was measured, e.g. "end to end p99 (kiosk)".
    pub figure: String,
    pub value: f64,
    /// `ms`, `µs`, `s`, `/s`, `MiB`, `%` or `count`.
    pub unit: String,
    /// The target as written in the design, e.g. "p99 ≤ 5 ms"; `None` when only reported.
    pub target: Option<String>,
    /// Whether the target was met; `None` when there is no target.
    pub met: Option<bool>,
    /// The floor or peer it is compared with, e.g. "bare pcsc loop", "pyscard".
    pub versus: Option<String>,
    /// The floor's or peer's figure, in the same unit.
    pub versus_value: Option<f64>,
}

impl Figure {
    /// A figure with no target and nothing to compare with.
    pub fn new(scenario: &str, figure: &str, value: f64, unit: &str) -> Self {
        Figure {
            scenario: scenario.to_owned(),
            figure: figure.to_owned(),
            value,
            unit: unit.to_owned(),
            target: None,
            met: None,
            versus: None,
            versus_value: None,
        }
    }

    /// Sets the target and whether it was met.
    pub fn target(mut self, target: &str, met: bool) -> Self {
        self.target = Some(target.to_owned());
        self.met = Some(met);
        self
    }

    /// Sets the floor or peer this figure is compared with.
    pub fn versus(mut self, what: &str, value: f64) -> Self {
        self.versus = Some(what.to_owned());
        self.versus_value = Some(value);
        self
    }

    /// `value / versus_value`, when there is something to compare with.
    pub fn ratio(&self) -> Option<f64> {
        self.versus_value
            .filter(|v| *v != 0.0)
            .map(|v| self.value / v)
    }
}

/// Appends the figures to the file named by [`FIGURES_ENV`], if it is set; a bench
/// binary run by hand just prints its own table.
pub fn emit(figures: &[Figure]) {
    let Some(path) = std::env::var_os(FIGURES_ENV) else {
        return;
    };
    let mut lines = String::new();
    for f in figures {
        lines.push_str(&serde_json::to_string(f).expect("a figure serializes"));
        lines.push('\n');
    }
    use std::io::Write as _;
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(lines.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "cannot append figures to {}: {e}",
            PathBuf::from(path).display()
        );
        std::process::exit(1);
    }
}
