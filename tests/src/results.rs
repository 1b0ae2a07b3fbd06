//! The benchmarks table that `bench` keeps in `docs/benchmarks/`: scenario runs merged into `results.json`, and rendered as text and Markdown.
//!
//! Pure: no processes, no clock. The `bench` binary gathers the machine's description
//! and the figures the scenario binaries emitted (see [`crate::stats::emit`]), and
//! hands them here.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::stats::Figure;

/// Scenario names in the order the table lists them (design §6's order).
pub const SCENARIOS: [&str; 6] = ["tap", "handheld", "sync", "fleet", "roster", "idle"];

/// The machine a run was measured on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` of /proc/cpuinfo, e.g. "AMD EPYC".
    pub cpu: String,
    /// CPUs this process may run on.
    pub cores: usize,
    /// MemTotal, in MiB.
    pub memory_mib: u64,
    /// e.g. "Linux 6.18.0".
    pub kernel: String,
    /// e.g. "Debian GNU/Linux 12 (bookworm), version 12.11".
    pub os: String,
    /// `rustc --version`, when rustc is on the PATH.
    pub rustc: Option<String>,
}

impl Machine {
    /// One line: "AMD EPYC, 2 cores, 7,940 MiB, Linux 6.18.0, Debian … , rustc …".
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{}, {} cores, {} MiB memory, {}, {}",
            self.cpu,
            self.cores,
            thousands(self.memory_mib as f64),
            self.kernel,
            self.os
        );
        if let Some(rustc) = &self.rustc {
            let _ = write!(text, ", {rustc}");
        }
        text
    }
}

/// One scenario as last measured: its figures and how and when they were taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioRun {
    /// One of [`SCENARIOS`].
    pub scenario: String,
    /// When it ran, RFC 3339 UTC.
    pub date: String,
    /// The git commit measured (`-dirty` when the tree had changes).
    pub commit: String,
    /// The `bench` command line that ran it.
    pub command: String,
    pub machine: Machine,
    /// /proc/loadavg (1, 5 and 15 minutes) just before and just after the scenario.
    pub load_before: String,
    pub load_after: String,
    /// What kept a figure from being measured: a binary missing, or one that failed.
    pub problems: Vec<String>,
    pub figures: Vec<Figure>,
}

/// `results.json`: the newest run's description, and every scenario's last run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub date: String,
    pub commit: String,
    pub command: String,
    pub machine: Machine,
    pub scenarios: Vec<ScenarioRun>,
}

impl Results {
    /// `self` (a new run) over `old`: a scenario this run measured replaces the old one;
    /// the ones it did not run are kept as they were, dates and commits included, so a
    /// scenario can be rerun alone. Scenarios come out in [`SCENARIOS`] order, unknown
    /// names last in their old order.
    pub fn merged_over(mut self, old: Option<Results>) -> Results {
        if let Some(old) = old {
            for kept in old.scenarios {
                if !self.scenarios.iter().any(|s| s.scenario == kept.scenario) {
                    self.scenarios.push(kept);
                }
            }
        }
        let rank = |name: &str| {
            SCENARIOS
                .iter()
                .position(|s| *s == name)
                .unwrap_or(usize::MAX)
        };
        // Stable: unknown names keep their relative order.
        self.scenarios.sort_by_key(|s| rank(&s.scenario));
        self
    }

    /// The table's rows, scenario by scenario; a problem is a row of its own.
    pub fn rows(&self) -> Vec<[String; 7]> {
        let mut rows = Vec::new();
        for run in &self.scenarios {
            for f in &run.figures {
                rows.push([
                    f.scenario.clone(),
                    f.figure.clone(),
                    value(f.value, &f.unit),
                    f.target.clone().unwrap_or_else(|| "–".into()),
                    met(f.met).into(),
                    match (&f.versus, f.versus_value) {
                        (Some(what), Some(v)) => format!("{what}: {}", value(v, &f.unit)),
                        (Some(what), None) => what.clone(),
                        _ => "–".into(),
                    },
                    f.ratio().map_or_else(|| "–".into(), ratio),
                ]);
            }
            for p in &run.problems {
                rows.push([
                    run.scenario.clone(),
                    "not measured".into(),
                    p.clone(),
                    "runs".into(),
                    met(Some(false)).into(),
                    "–".into(),
                    "–".into(),
                ]);
            }
        }
        rows
    }

    /// The table as aligned plain text, for the terminal.
    pub fn text_table(&self) -> String {
        let mut rows = vec![HEADER.map(String::from)];
        rows.extend(self.rows());
        let widths: Vec<usize> = (0..HEADER.len())
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for r in &rows {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        }
        out
    }

    /// `results.md`: a header with the machine and the command, the table, and when
    /// and on which commit each scenario was last run.
    pub fn markdown(&self) -> String {
        let mut out = String::from("# Benchmark results\n\n");
        let _ = writeln!(
            out,
            "Written by `bench` (`scripts/dev bench`, see [README.md](README.md)); do not edit by hand.\n"
        );
        let _ = writeln!(out, "- **Machine:** {}", self.machine.describe());
        let _ = writeln!(out, "- **Last command:** `{}`", self.command);
        let _ = writeln!(
            out,
            "- **Last run:** {} at commit {}",
            self.date, self.commit
        );
        let _ = writeln!(
            out,
            "- **Units:** MB is 1,000,000 bytes and MiB 1,048,576; a target in MB is checked in bytes.\n"
        );
        let _ = writeln!(out, "| {} |", HEADER.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(HEADER.len()));
        for r in self.rows() {
            let cells: Vec<String> = r.iter().map(|c| cell(c)).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        let _ = writeln!(
            out,
            "\n## Runs\n\n| scenario | date | commit | load average before → after | command | machine |\n|---|---|---|---|---|---|"
        );
        for run in &self.scenarios {
            let machine = if run.machine == self.machine {
                "as above".to_owned()
            } else {
                run.machine.describe()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} → {} | `{}` | {} |",
                run.scenario,
                run.date,
                run.commit,
                run.load_before,
                run.load_after,
                cell(&run.command),
                cell(&machine)
            );
        }
        out
    }
}

const HEADER: [&str; 7] = [
    "scenario", "figure", "value", "target", "met", "versus", "ratio",
];

/// "met", "MISSED", or "–" when the figure has no target.
pub fn met(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "–",
    }
}

/// A value with its unit: "16,342/s", "7.54 ms", "19.5 MiB", "0 count" → "0".
pub fn value(v: f64, unit: &str) -> String {
    let number = number(v);
    match unit {
        "" | "count" => number,
        "/s" | "%" | "×" => format!("{number}{unit}"),
        _ => format!("{number} {unit}"),
    }
}

/// Digits that say what the figure can tell: whole numbers with thousands separators
/// from 100 up, one decimal from 10, two below (0.48 ms, 7.54 ms, 12.2 s, 391 ms).
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a >= 100.0 || v.fract() == 0.0 {
        thousands(v)
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A ratio: "1.02×", "14.3×", "113×".
pub fn ratio(r: f64) -> String {
    let a = r.abs();
    if a >= 100.0 {
        format!("{}×", thousands(r))
    } else if a >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

/// Rounded to a whole number, with a comma every three digits.
fn thousands(v: f64) -> String {
    let rounded = v.round();
    let digits = format!("{}", rounded.abs() as u64);
    let mut out = String::new();
    if rounded < 0.0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Text fit for a Markdown table cell: a `|` would end the cell, a newline the row.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(scenario: &str, date: &str, figures: Vec<Figure>) -> ScenarioRun {
        ScenarioRun {
            scenario: scenario.into(),
            date: date.into(),
            commit: "abc1234".into(),
            command: format!("bench {scenario}"),
            machine: Machine::default(),
            load_before: "0.10 0.20 0.30".into(),
            load_after: "0.40 0.50 0.60".into(),
            problems: vec![],
            figures,
        }
    }

    fn results(date: &str, scenarios: Vec<ScenarioRun>) -> Results {
        Results {
            date: date.into(),
            commit: "abc1234".into(),
            command: "bench".into(),
            machine: Machine::default(),
            scenarios,
        }
    }

    #[test]
    fn numbers_and_ratios_as_the_table_shows_them() {
        let table = [
            (16_342.4, "/s", "16,342/s"),
            (7.5412, "ms", "7.54 ms"),
            (0.48, "ms", "0.48 ms"),
            (12.21, "s", "12.2 s"),
            (391.0, "ms", "391 ms"),
            (19.53, "MiB", "19.5 MiB"),
            (0.0, "count", "0"),
            (1_000_000.0, "count", "1,000,000"),
            (0.017, "%", "0.02%"),
            (-1234.0, "", "-1,234"),
            (3.0, "s", "3 s"),
        ];
        for (v, unit, want) in table {
            assert_eq!(value(v, unit), want, "{v} {unit}");
        }
        let ratios = [
            (1.0234, "1.02×"),
            (0.1441, "0.14×"),
            (14.33, "14.3×"),
            (113.4, "113×"),
            (1500.0, "1,500×"),
        ];
        for (r, want) in ratios {
            assert_eq!(ratio(r), want, "{r}");
        }
    }

    #[test]
    fn a_scenario_run_alone_replaces_only_its_own_figures() {
        let old = results(
            "2026-11-01",
            vec![
                run(
                    "idle",
                    "2026-11-01",
                    vec![Figure::new("idle", "RSS", 9.0, "MiB")],
                ),
                run(
                    "handheld",
                    "2026-11-01",
                    vec![Figure::new("handheld", "posts/s", 1.0, "/s")],
                ),
                run("custom", "2026-11-01", vec![]),
            ],
        );
        let new = results(
            "2026-11-02",
            vec![run(
                "handheld",
                "2026-11-02",
                vec![Figure::new("handheld", "posts/s", 2.0, "/s")],
            )],
        );
        let merged = new.merged_over(Some(old));
        let order: Vec<(&str, &str)> = merged
            .scenarios
            .iter()
            .map(|s| (s.scenario.as_str(), s.date.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("handheld", "2026-11-02"),
                ("idle", "2026-11-01"),
                ("custom", "2026-11-01")
            ]
        );
        assert_eq!(merged.scenarios[0].figures[0].value, 2.0);
        assert_eq!(merged.scenarios[1].figures[0].value, 9.0);
        assert_eq!(merged.date, "2026-11-02");
    }

    #[test]
    fn a_first_run_has_nothing_to_merge() {
        let new = results(
            "d",
            vec![run("roster", "d", vec![]), run("tap", "d", vec![])],
        );
        let names: Vec<String> = new
            .merged_over(None)
            .scenarios
            .into_iter()
            .map(|s| s.scenario)
            .collect();
        assert_eq!(names, ["tap", "roster"]);
    }

    #[test]
    fn results_survive_a_round_trip_through_json() {
        let mut r = run(
            "tap",
            "d",
            vec![Figure::new("tap", "p99", 1.5, "ms").target("p99 ≤ 5 ms", true)],
        );
        r.problems.push("tap-latency: exit status 1".into());
        let before = results("d", vec![r]);
        let text = serde_json::to_string_pretty(&before).expect("serialize");
        let after: Results = serde_json::from_str(&text).expect("parse");
        assert_eq!(after, before);
    }

    #[test]
    fn markdown_says_met_and_missed_plainly_and_shows_problems() {
        let figures = vec![
            Figure::new("tap", "end to end p99", 412.0, "ms")
                .target("≤ 1.05× the floor", false)
                .versus("bare pcsc loop", 390.0),
            Figure::new("tap", "daemon share p99", 1.75, "ms").target("p99 ≤ 5 ms", true),
            Figure::new("tap", "a | pipe", 3.0, "count"),
        ];
        let mut r = run("tap", "2026-11-02", figures);
        r.problems
            .push("tap-latency not found next to bench".into());
        let md = results("2026-11-02", vec![r]).markdown();
        let lines: Vec<&str> = md.lines().collect();
        assert!(
            lines.contains(&"| scenario | figure | value | target | met | versus | ratio |"),
            "{md}"
        );
        assert!(
            lines.contains(&"| tap | end to end p99 | 412 ms | ≤ 1.05× the floor | MISSED | bare pcsc loop: 390 ms | 1.06× |"),
            "{md}"
        );
        assert!(
            lines.contains(&"| tap | daemon share p99 | 1.75 ms | p99 ≤ 5 ms | met | – | – |"),
            "{md}"
        );
        assert!(
            lines.contains(&"| tap | a \\| pipe | 3 | – | – | – | – |"),
            "{md}"
        );
        assert!(
            lines.contains(&"| tap | not measured | tap-latency not found next to bench | runs | MISSED | – | – |"),
            "{md}"
        );
        assert!(
            lines.contains(&"| tap | 2026-11-02 | abc1234 | 0.10 0.20 0.30 → 0.40 0.50 0.60 | `bench tap` | as above |"),
            "{md}"
        );
    }

    #[test]
    fn the_text_table_lines_up_its_columns() {
        let r = run(
            "idle",
            "d",
            vec![
                Figure::new("idle", "CPU", 0.0, "%").target("≈ 0%", true),
                Figure::new("idle", "RSS (VmRSS)", 9.25, "MiB"),
            ],
        );
        let text = results("d", vec![r]).text_table();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let column = |line: &str| {
            line.find("value")
                .or_else(|| line.find("0%"))
                .or_else(|| line.find("9.25"))
        };
        assert_eq!(column(lines[0]), column(lines[1]), "{text}");
        assert_eq!(column(lines[1]), column(lines[2]), "{text}");
    }
}
