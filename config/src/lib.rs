//! Typed kiosk configuration: `kiosk.toml` is parsed once into [`Config`], reporting every problem with its key path.
//!
//! The raw TOML is walked by hand rather than through `#[serde(deny_unknown_fields)]`
//! because serde stops at the first error, and an IT person fixing a kiosk over a
//! remote session wants the whole list at once, each with what to write instead.

mod duration;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::{DURATION_HINT, parse_duration};
use toml::{Table, Value};

/// The whole kiosk configuration, valid by construction.
#[derive(Debug, Clone)]
pub struct Config {
    pub kiosk: KioskConfig,
    pub readers: Vec<ReaderConfig>,
    pub reception: ReceptionConfig,
}

/// The `[kiosk]` section: who this kiosk is and where it keeps its data.
#[derive(Debug, Clone)]
pub struct KioskConfig {
    pub id: Ident,
    pub office: Ident,
    /// Shown on the idle screen; defaults to the office id.
    pub office_name: String,
    /// Office days (one visit per customer per day) are counted in this zone.
    pub time_zone: jiff::tz::TimeZone,
    pub time_zone_name: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
}

/// One `[[reader]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderConfig {
    /// PC/SC readers whose name matches a glob (`*` any run, `?` one character).
    Pcsc { name: String },
}

/// The `[reception]` section.
#[derive(Debug, Clone)]
pub struct ReceptionConfig {
    /// A card held on the reader or tapped again within this time makes one event.
    pub same_card_cooldown: Duration,
}

/// A kiosk or office identifier: 1–64 of `A–Z a–z 0–9 - _ .`, safe in paths, URLs and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    pub fn parse(text: &str) -> Result<Ident, String> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if text.is_empty() || text.len() > 64 || !text.chars().all(ok_char) {
            return Err(format!(
                "{text:?} is not a valid id; use 1 to 64 letters, digits, '-', '_' or '.', e.g. \"office-01\""
            ));
        }
        Ok(Ident(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The default of `kiosk.listen`: loopback, because the screen runs on the kiosk itself.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default of `reception.same_card_cooldown`.
pub const DEFAULT_SAME_CARD_COOLDOWN: Duration = Duration::from_secs(3);

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path such as `kiosk.time_zone` or `reader[1].kind`; empty for the file as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; check the path and its permissions")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} problem(s) in {}:\n{}", .problems.len(), .path.display(), ProblemList(.problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a config file; relative paths in it are taken from the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }

    /// Validates TOML text; every problem found is returned, not just the first.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, Vec<Problem>> {
        let table: Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                let e: toml::de::Error = e;
                let where_ = e
                    .span()
                    .map(|s| format!("line {}: ", line_of(text, s.start)))
                    .unwrap_or_default();
                return Err(vec![Problem {
                    path: String::new(),
                    message: format!("{where_}not valid TOML: {}", e.message().trim_end()),
                }]);
            }
        };
        let mut p = Problems::default();
        let mut root = Section::new("", &table);
        let kiosk = match root.table("kiosk", &mut p, true) {
            Some(t) => parse_kiosk(Section::new("kiosk", t), base_dir, &mut p),
            None => None,
        };
        let readers = root.array_of_tables("reader", &mut p).map(|list| {
            list.iter()
                .enumerate()
                .filter_map(|(i, t)| parse_reader(Section::new(&format!("reader[{i}]"), t), &mut p))
                .collect::<Vec<_>>()
        });
        let reception = match root.table("reception", &mut p, false) {
            Some(t) => parse_reception(Section::new("reception", t), &mut p),
            None => Some(ReceptionConfig {
                same_card_cooldown: DEFAULT_SAME_CARD_COOLDOWN,
            }),
        };
        root.finish(&["kiosk", "reader", "reception"], &mut p);
        match (kiosk, readers, reception) {
            (Some(kiosk), Some(readers), Some(reception)) if p.0.is_empty() => Ok(Config {
                kiosk,
                readers,
                reception,
            }),
            _ => Err(p.0),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn parse_kiosk(mut s: Section<'_>, base_dir: &Path, p: &mut Problems) -> Option<KioskConfig> {
    let id = s
        .required_str("id", p)
        .and_then(|v| s.check("id", Ident::parse(v), p));
    let office = s
        .required_str("office", p)
        .and_then(|v| s.check("office", Ident::parse(v), p));
    let office_name = s.optional_str("office_name", p).map(str::to_owned);
    if let Some(name) = &office_name {
        if name.trim().is_empty() || name.chars().count() > 64 {
            p.push(
                s.key("office_name"),
                "must be 1 to 64 characters, e.g. \"滨江壹号 售楼处\"",
            );
        }
    }
    let time_zone = s.required_str("time_zone", p).and_then(|name| {
        let parsed = jiff::tz::TimeZone::get(name)
            .map(|tz| (tz, name.to_owned()))
            .map_err(|_| {
                format!("unknown time zone {name:?}; write an IANA name such as \"Asia/Shanghai\"")
            });
        s.check("time_zone", parsed, p)
    });
    let data_dir = s.required_str("data_dir", p).and_then(|v| {
        if v.trim().is_empty() {
            p.push(
                s.key("data_dir"),
                "is empty; write a folder such as \"/var/lib/kiosk\"",
            );
            None
        } else {
            Some(base_dir.join(v))
        }
    });
    let listen = s
        .optional_str("listen", p)
        .or(Some(DEFAULT_LISTEN))
        .and_then(|v| {
            let parsed = v.parse::<SocketAddr>().map_err(|_| {
                format!("{v:?} is not an address to listen on; write IP:PORT such as \"127.0.0.1:8080\" or \"0.0.0.0:8080\"")
            });
            s.check("listen", parsed, p)
        });
    s.finish(
        &[
            "id",
            "office",
            "office_name",
            "time_zone",
            "data_dir",
            "listen",
        ],
        p,
    );
    let id = id?;
    let office = office?;
    let (time_zone, time_zone_name) = time_zone?;
    Some(KioskConfig {
        office_name: office_name.unwrap_or_else(|| office.to_string()),
        id,
        office,
        time_zone,
        time_zone_name,
        data_dir: data_dir?,
        listen: listen?,
    })
}

fn parse_reader(mut s: Section<'_>, p: &mut Problems) -> Option<ReaderConfig> {
    let Some(kind) = s.required_str("kind", p) else {
        s.finish(&["kind", "name"], p);
        return None;
    };
    match kind {
        "pcsc" => {
            let name = s.optional_str("name", p).unwrap_or("*");
            let ok = !name.trim().is_empty();
            if !ok {
                p.push(
                    s.key("name"),
                    "is empty; write a reader name or glob such as \"ACS ACR122U*\", or \"*\" for every reader",
                );
            }
            s.finish(&["kind", "name"], p);
            ok.then(|| ReaderConfig::Pcsc {
                name: name.to_owned(),
            })
        }
        "serial" => {
            p.push(
                s.key("kind"),
                "serial readers are not supported by this version yet; use kind = \"pcsc\" for a contactless reader",
            );
            s.finish(&["kind", "name", "path", "baud", "protocol"], p);
            None
        }
        other => {
            p.push(
                s.key("kind"),
                format!("unknown reader kind {other:?}; write kind = \"pcsc\""),
            );
            s.finish(&["kind", "name"], p);
            None
        }
    }
}

fn parse_reception(mut s: Section<'_>, p: &mut Problems) -> Option<ReceptionConfig> {
    let cooldown = match s.optional_str("same_card_cooldown", p) {
        None => Some(DEFAULT_SAME_CARD_COOLDOWN),
        Some(v) => {
            let parsed = parse_duration(v).and_then(|d| {
                if d > Duration::from_secs(3600) {
                    Err(format!(
                        "{v:?} is longer than 1h; a cooldown is a few seconds, e.g. \"3s\""
                    ))
                } else {
                    Ok(d)
                }
            });
            s.check("same_card_cooldown", parsed, p)
        }
    };
    s.finish(&["same_card_cooldown"], p);
    Some(ReceptionConfig {
        same_card_cooldown: cooldown?,
    })
}

#[derive(Debug, Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, path: String, message: impl Into<String>) {
        self.0.push(Problem {
            path,
            message: message.into(),
        });
    }
}

/// A TOML table being read, remembering which keys were used so the rest can be reported.
struct Section<'a> {
    path: String,
    table: &'a Table,
    used: BTreeSet<&'a str>,
}

impl<'a> Section<'a> {
    fn new(path: &str, table: &'a Table) -> Section<'a> {
        Section {
            path: path.to_owned(),
            table,
            used: BTreeSet::new(),
        }
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&mut self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.table.get_key_value(key)?;
        self.used.insert(k.as_str());
        Some(v)
    }

    fn check<T>(&self, key: &str, result: Result<T, String>, p: &mut Problems) -> Option<T> {
        result.map_err(|m| p.push(self.key(key), m)).ok()
    }

    fn optional_str(&mut self, key: &str, p: &mut Problems) -> Option<&'a str> {
        match self.get(key)? {
            Value::String(s) => Some(s.as_str()),
            other => {
                p.push(
                    self.key(key),
                    format!("must be a string in quotes, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn required_str(&mut self, key: &str, p: &mut Problems) -> Option<&'a str> {
        if self.table.contains_key(key) {
            self.optional_str(key, p)
        } else {
            let example = match key {
                "id" => "id = \"office-01-kiosk-1\"",
                "office" => "office = \"office-01\"",
                "time_zone" => "time_zone = \"Asia/Shanghai\"",
                "data_dir" => "data_dir = \"/var/lib/kiosk\"",
                "kind" => "kind = \"pcsc\"",
                _ => "it (see the README's config reference)",
            };
            p.push(self.key(key), format!("is missing; add {example}"));
            None
        }
    }

    fn table(&mut self, key: &str, p: &mut Problems, required: bool) -> Option<&'a Table> {
        match self.get(key) {
            Some(Value::Table(t)) => Some(t),
            Some(other) => {
                p.push(
                    self.key(key),
                    format!("must be a section [{key}], found {}", other.type_str()),
                );
                None
            }
            None => {
                if required {
                    p.push(self.key(key), format!("section [{key}] is missing; add it"));
                }
                None
            }
        }
    }

    fn array_of_tables(&mut self, key: &str, p: &mut Problems) -> Option<Vec<&'a Table>> {
        match self.get(key) {
            None => Some(Vec::new()),
            Some(Value::Array(items)) => {
                let mut tables = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Table(t) => tables.push(t),
                        other => {
                            ok = false;
                            p.push(
                                format!("{}[{i}]", self.key(key)),
                                format!("must be a [[{key}]] section, found {}", other.type_str()),
                            );
                        }
                    }
                }
                ok.then_some(tables)
            }
            Some(other) => {
                p.push(
                    self.key(key),
                    format!(
                        "must be written as [[{key}]] sections, found {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// Reports every key that no parser asked for, suggesting the closest known key.
    fn finish(self, known: &[&str], p: &mut Problems) {
        for key in self.table.keys() {
            if self.used.contains(key.as_str()) || known.contains(&key.as_str()) {
                continue;
            }
            let hint = match closest(key, known) {
                Some(k) => format!("did you mean {k:?}?"),
                None => format!("known keys here: {}", known.join(", ")),
            };
            p.push(self.key(key), format!("unknown key; {hint}"));
        }
    }
}

/// The known key within edit distance 2 of `key`, for "did you mean" hints.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[kiosk]
id = "kiosk-01"
office = "binjiang"
office_name = "滨江壹号 售楼处"
time_zone = "Asia/Shanghai"
data_dir = "data"
listen = "127.0.0.1:0"

[[reader]]
kind = "pcsc"
name = "ACS ACR122U*"

[reception]
same_card_cooldown = "5s"
"#;

    #[test]
    fn a_good_file_becomes_typed_config() {
        let cfg = Config::parse(GOOD, Path::new("/etc/kiosk")).expect("valid");
        assert_eq!(cfg.kiosk.id.as_str(), "kiosk-01");
        assert_eq!(cfg.kiosk.data_dir, PathBuf::from("/etc/kiosk/data"));
        assert_eq!(cfg.kiosk.time_zone_name, "Asia/Shanghai");
        assert_eq!(
            cfg.readers,
            vec![ReaderConfig::Pcsc {
                name: "ACS ACR122U*".into()
            }]
        );
        assert_eq!(cfg.reception.same_card_cooldown, Duration::from_secs(5));
    }

    #[test]
    fn defaults_fill_optional_keys() {
        let text = "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n";
        let cfg = Config::parse(text, Path::new("/")).expect("valid");
        assert_eq!(cfg.kiosk.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(cfg.kiosk.office_name, "o");
        assert!(cfg.readers.is_empty());
        assert_eq!(cfg.reception.same_card_cooldown, DEFAULT_SAME_CARD_COOLDOWN);
    }

    /// Each case: a file, then every problem expected as `path: message fragment`.
    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let cases: &[(&str, &[&str])] = &[
            ("", &["kiosk: section [kiosk] is missing"]),
            (
                "[kiosk]\nid = 'k'\n",
                &[
                    "kiosk.office: is missing; add office = \"office-01\"",
                    "kiosk.time_zone: is missing; add time_zone = \"Asia/Shanghai\"",
                    "kiosk.data_dir: is missing",
                ],
            ),
            (
                "[kiosk]\nid='bad id'\noffice='o'\ntime_zone='Asia/Shangai'\ndata_dir='/d'\nlisten='localhost'\ntimezone='x'\n",
                &[
                    "kiosk.id: \"bad id\" is not a valid id",
                    "kiosk.time_zone: unknown time zone \"Asia/Shangai\"; write an IANA name",
                    "kiosk.listen: \"localhost\" is not an address",
                    "kiosk.timezone: unknown key; did you mean \"time_zone\"?",
                ],
            ),
            (
                "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n[[reader]]\nkind='serial'\n[[reader]]\nkind='usb'\n[[reader]]\nkind='pcsc'\nnmae='x'\n",
                &[
                    "reader[0].kind: serial readers are not supported",
                    "reader[1].kind: unknown reader kind \"usb\"",
                    "reader[2].nmae: unknown key; did you mean \"name\"?",
                ],
            ),
            (
                "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n[reception]\nsame_card_cooldown='3'\n[sync]\nhub='x'\n",
                &[
                    "reception.same_card_cooldown: \"3\" has a number without a unit",
                    "sync: unknown key; known keys here: kiosk, reader, reception",
                ],
            ),
            (
                "[kiosk]\nid=1\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n[reception]\nsame_card_cooldown='2h'\n",
                &[
                    "kiosk.id: must be a string in quotes, found integer",
                    "reception.same_card_cooldown: \"2h\" is longer than 1h",
                ],
            ),
            ("[kiosk\nid='k'", &["line 1: not valid TOML"]),
            (
                "[[reader]]\nnmae = 'x'\n",
                &[
                    "reader[0].kind: is missing; add kind = \"pcsc\"",
                    "reader[0].nmae: unknown key",
                ],
            ),
            (
                "reader = 'x'\n[kiosk]\n",
                &["reader: must be written as [[reader]] sections"],
            ),
        ];
        for (input, expected) in cases {
            let problems = Config::parse(input, Path::new("/")).expect_err(input);
            let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
            for want in *expected {
                assert!(
                    shown.iter().any(|s| s.contains(want)),
                    "input {input:?}: expected {want:?} among {shown:#?}"
                );
            }
        }
    }

    #[test]
    fn load_names_the_file_and_lists_problems() {
        let err = Config::load(Path::new("/nonexistent/kiosk.toml")).expect_err("missing file");
        assert!(
            err.to_string()
                .contains("cannot read config file /nonexistent/kiosk.toml")
        );
    }
}
