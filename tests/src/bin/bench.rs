//! `bench [tap|handheld|sync|fleet|roster|idle …] [--quick] [--out DIR]`: runs the benchmark scenarios, prints the table and writes `results.json` and `results.md`.
//!
//! Each scenario runs its bench binaries, found next to this one (`target/release/`),
//! with `KIOSK_BENCH_FIGURES` naming a file they append their figures to; their own
//! output goes straight through. A binary that is missing or fails becomes a row saying
//! so, and the other scenarios still run. The roster lookup is a Cargo bench of the
//! kiosk package (it measures the daemon's private lookup function), so it runs
//! through `cargo bench` in the workspace. Scenarios not run this time keep their
//! figures, dates and commits from the `results.json` already there.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiosk_tests::results::{Machine, Results, SCENARIOS, ScenarioRun};
use kiosk_tests::stats::{FIGURES_ENV, Figure};

const USAGE: &str = "usage: bench [tap|handheld|sync|fleet|roster|idle …] [--quick] [--out DIR]\n\
    no scenario runs all of them; --quick runs smaller sizes; --out defaults to docs/benchmarks";

#[derive(Debug)]
struct Args {
    scenarios: Vec<&'static str>,
    quick: bool,
    out: PathBuf,
}

fn usage(code: i32) -> ! {
    eprintln!("{USAGE}");
    std::process::exit(code);
}

fn parse_args() -> Args {
    let mut a = Args {
        scenarios: Vec::new(),
        quick: false,
        out: PathBuf::from("docs/benchmarks"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--out" => a.out = it.next().map(PathBuf::from).unwrap_or_else(|| usage(2)),
            "-h" | "--help" => usage(0),
            name => match SCENARIOS.iter().find(|s| **s == name) {
                Some(s) if !a.scenarios.contains(s) => a.scenarios.push(s),
                Some(_) => {}
                None => usage(2),
            },
        }
    }
    if a.scenarios.is_empty() {
        a.scenarios = SCENARIOS.to_vec();
    }
    a
}

/// What runs a step of a scenario.
#[derive(Debug)]
enum Program {
    /// A binary next to `bench`.
    Bin(&'static str),
    /// `cargo bench -p PACKAGE --bench NAME --`, in the workspace.
    CargoBench(&'static str, &'static str),
}

#[derive(Debug)]
struct Step {
    program: Program,
    args: Vec<String>,
}

fn step(program: Program, args: &[&str]) -> Step {
    Step {
        program,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
    }
}

/// The steps of a scenario; `kiosk` is the kiosk binary the daemons are started from.
fn steps(scenario: &str, quick: bool, kiosk: &str) -> Vec<Step> {
    let q = |full: &'static str, small: &'static str| if quick { small } else { full };
    let with_kiosk = |mut s: Step| {
        s.args.extend(["--kiosk".to_owned(), kiosk.to_owned()]);
        s
    };
    match scenario {
        "tap" => vec![with_kiosk(step(
            Program::Bin("tap-latency"),
            &["--taps", q("200", "20")],
        ))],
        "handheld" => vec![with_kiosk(step(
            Program::Bin("handheld-bench"),
            &[
                "--seconds",
                q("30", "5"),
                "--connections",
                "64",
                "--customers",
                q("1000000", "100000"),
            ],
        ))],
        "sync" => vec![with_kiosk(step(
            Program::Bin("sync-bench"),
            &[
                "--scenario",
                "backlog",
                "--postgres",
                "--visits",
                q("1000000", "100000"),
            ],
        ))],
        "fleet" => vec![with_kiosk(step(
            Program::Bin("sync-bench"),
            &[
                "--scenario",
                "fleet",
                "--postgres",
                "--kiosks",
                q("200", "20"),
            ],
        ))],
        "roster" => vec![
            with_kiosk(step(
                Program::Bin("sync-bench"),
                &["--scenario", "roster", "--cards", q("1000000", "100000")],
            )),
            step(
                Program::CargoBench("kiosk", "roster"),
                &[
                    "--cards",
                    q("1000000", "100000"),
                    "--lookups",
                    q("100000", "20000"),
                ],
            ),
        ],
        "idle" => vec![with_kiosk(step(
            Program::Bin("idle-bench"),
            &[
                "--seconds",
                q("60", "10"),
                "--cards",
                q("1000000", "100000"),
            ],
        ))],
        other => unreachable!("unknown scenario {other}"),
    }
}

fn main() {
    let args = parse_args();
    let exe = std::env::current_exe().expect("the path of this binary");
    let bin_dir = exe.parent().expect("a folder").to_owned();
    let kiosk = bin_dir.join("kiosk");
    let command = std::iter::once("bench".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let root = workspace_root(&bin_dir);
    let machine = machine();
    let commit = commit(&root);
    let work = tempfile::Builder::new()
        .prefix("bench-")
        .tempdir()
        .expect("temp dir");
    println!(
        "bench: {command}\nmachine: {}\ncommit: {commit}",
        machine.describe()
    );

    let mut runs = Vec::new();
    for scenario in &args.scenarios {
        println!("\n==== {scenario}");
        let figures_file = work.path().join(format!("{scenario}.jsonl"));
        let load_before = loadavg();
        let date = now();
        let mut problems = Vec::new();
        if !kiosk.exists() {
            problems.push(format!(
                "{} not found; build it: cargo build --release -p kiosk",
                kiosk.display()
            ));
        } else {
            for s in steps(scenario, args.quick, kiosk.to_str().expect("utf-8 path")) {
                if let Err(p) = run_step(&s, &bin_dir, &root, &figures_file) {
                    eprintln!("bench: {scenario}: {p}");
                    problems.push(p);
                }
            }
        }
        let (figures, unreadable) = read_figures(&figures_file);
        problems.extend(unreadable);
        if figures.is_empty() && problems.is_empty() {
            problems.push("no figures were emitted".into());
        }
        runs.push(ScenarioRun {
            scenario: (*scenario).to_owned(),
            date,
            commit: commit.clone(),
            command: command.clone(),
            machine: machine.clone(),
            load_before,
            load_after: loadavg(),
            problems,
            figures,
        });
    }
    let failed = runs.iter().any(|r| !r.problems.is_empty());

    let this_run = Results {
        date: now(),
        commit,
        command,
        machine,
        scenarios: runs,
    };
    let json_path = args.out.join("results.json");
    let old = match std::fs::read_to_string(&json_path) {
        Ok(text) => match serde_json::from_str::<Results>(&text) {
            Ok(old) => Some(old),
            Err(e) => {
                eprintln!(
                    "bench: {} is not a results file ({e}); it is replaced",
                    json_path.display()
                );
                None
            }
        },
        Err(_) => None,
    };
    let results = this_run.merged_over(old);
    println!("\n{}", results.text_table());
    std::fs::create_dir_all(&args.out)
        .unwrap_or_else(|e| panic!("create {}: {e}", args.out.display()));
    let json = serde_json::to_string_pretty(&results).expect("results serialize");
    write(&json_path, &format!("{json}\n"));
    write(&args.out.join("results.md"), &results.markdown());
    println!(
        "written: {} and {}",
        json_path.display(),
        args.out.join("results.md").display()
    );
    if failed {
        std::process::exit(1);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Runs one step with its output passed through; `Err` says why it gave no figures.
fn run_step(s: &Step, bin_dir: &Path, root: &Path, figures: &Path) -> Result<(), String> {
    let (mut command, shown) = match s.program {
        Program::Bin(name) => {
            let path = bin_dir.join(name);
            if !path.exists() {
                return Err(format!(
                    "{name} not found in {}; build it: cargo build --release -p kiosk-tests",
                    bin_dir.display()
                ));
            }
            (Command::new(path), name.to_owned())
        }
        Program::CargoBench(package, bench) => {
            let mut c = Command::new("cargo");
            c.args(["bench", "-p", package, "--bench", bench, "--"])
                .current_dir(root);
            (c, format!("cargo bench -p {package} --bench {bench} --"))
        }
    };
    let shown = format!("{shown} {}", s.args.join(" "));
    println!("---- {shown}");
    let status = command
        .args(&s.args)
        .env(FIGURES_ENV, figures)
        .status()
        .map_err(|e| format!("{shown}: cannot start it: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown}: failed ({status})"))
    }
}

/// The figures appended to `path`, and a problem for each line that is not one.
fn read_figures(path: &Path) -> (Vec<Figure>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut figures = Vec::new();
    let mut problems = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(f) => figures.push(f),
            Err(e) => problems.push(format!("an unreadable figure ({e}): {line}")),
        }
    }
    (figures, problems)
}

/// The workspace this binary was built in: `target/release/..` when that holds a
/// Cargo.toml, else where this package's sources were at build time.
fn workspace_root(bin_dir: &Path) -> PathBuf {
    bin_dir
        .ancestors()
        .nth(2)
        .filter(|d| d.join("Cargo.toml").exists())
        .map(Path::to_owned)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            Some(
                l.strip_prefix("model name")?
                    .split_once(':')?
                    .1
                    .trim()
                    .to_owned(),
            )
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory_mib = read("/proc/meminfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb / 1024);
    let os_release = read("/etc/os-release");
    let pretty = os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "unknown OS".into());
    let debian = read("/etc/debian_version").trim().to_owned();
    let os = if debian.is_empty() {
        pretty
    } else {
        format!("{pretty}, version {debian}")
    };
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_mib,
        kernel: format!("Linux {}", read("/proc/sys/kernel/osrelease").trim()),
        os,
        rustc,
    }
}

/// The commit checked out in `root`, `-dirty` when the tree has changes, or "unknown".
fn commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{head}-dirty"),
            _ => head,
        },
        None => "unknown".into(),
    }
}
