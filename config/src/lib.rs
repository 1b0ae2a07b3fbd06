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

pub use duration::{DURATION_HINT, parse_duration, show as show_duration};
use toml::{Table, Value};

/// The whole kiosk configuration, valid by construction.
#[derive(Debug, Clone)]
pub struct Config {
    pub kiosk: KioskConfig,
    pub readers: Vec<ReaderConfig>,
    pub reception: ReceptionConfig,
    /// Absent: the kiosk works alone, its roster from `kiosk roster import`.
    pub sync: Option<SyncConfig>,
    /// `[[notify.webhook]]` entries, in file order; empty when none.
    pub webhooks: Vec<WebhookConfig>,
    /// `[screen]`: how the kiosk screen speaks and how long it greets.
    pub screen: ScreenConfig,
}

/// The `[screen]` section: the kiosk screen's language, logo and greeting time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenConfig {
    pub language: ScreenLanguage,
    /// An image shown on the idle screen (PNG, JPEG, SVG or WebP), read when the kiosk
    /// starts; relative to the config file's folder.
    pub logo: Option<PathBuf>,
    /// How long a greeting stays before the screen returns to idle.
    pub greeting_duration: Duration,
}

impl ScreenConfig {
    /// Every key at its default.
    pub fn defaults() -> ScreenConfig {
        ScreenConfig {
            language: ScreenLanguage::Both,
            logo: None,
            greeting_duration: DEFAULT_GREETING_DURATION,
        }
    }
}

/// The default of `screen.greeting_duration`.
pub const DEFAULT_GREETING_DURATION: Duration = Duration::from_secs(8);

/// Which language the kiosk screen speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScreenLanguage {
    Zh,
    En,
    /// Chinese first and large, English beneath it.
    Both,
}

impl ScreenLanguage {
    pub fn as_str(self) -> &'static str {
        match self {
            ScreenLanguage::Zh => "zh",
            ScreenLanguage::En => "en",
            ScreenLanguage::Both => "both",
        }
    }
}

/// One `[[notify.webhook]]`: where welcome alerts are posted, in which body format.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `http://…` or `https://…`. May hold a robot's key (WeCom's `?key=`), so it is
    /// never logged whole; see [`WebhookConfig::display_url`].
    pub url: String,
    pub format: WebhookFormat,
    /// Signs each body (HMAC-SHA256) when set.
    pub secret: Option<WebhookSecret>,
    /// The alert reasons sent (`welcome` when the key is absent).
    pub events: Vec<WebhookEvent>,
}

impl WebhookConfig {
    /// The URL without its query, for logs and the status page.
    pub fn display_url(&self) -> &str {
        self.url.split(['?', '#']).next().unwrap_or(&self.url)
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.display_url())
            .field("format", &self.format)
            .field("secret", &self.secret)
            .field("events", &self.events)
            .finish()
    }
}

/// Where a webhook's shared secret comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum WebhookSecret {
    /// `secret = "…"` in the config.
    Inline(String),
    /// `secret_file = "…"`: read when the kiosk starts, trailing whitespace trimmed.
    File(PathBuf),
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookSecret::Inline(_) => f.write_str("Inline(<redacted>)"),
            WebhookSecret::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// A webhook's body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// `{"event":"welcome","alert":{…}}`.
    Generic,
    /// A WeCom (企业微信) group robot's markdown message.
    Wecom,
    /// A DingTalk (钉钉) group robot's markdown message.
    Dingtalk,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Generic => "generic",
            WebhookFormat::Wecom => "wecom",
            WebhookFormat::Dingtalk => "dingtalk",
        }
    }
}

/// What a webhook is sent: one event per alert reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookEvent {
    /// A new welcome, to the consultant receiving the visitor.
    Welcome,
    /// To an off-duty owner whose customer a stand-in received.
    Owner,
    /// To the manager, for a gold member.
    Manager,
    /// To the manager, when nobody received the visitor.
    Unassigned,
    /// To the next consultant and the manager, when a welcome went unacknowledged.
    Escalation,
}

impl WebhookEvent {
    /// Every event, in the order the docs list them.
    pub const ALL: [WebhookEvent; 5] = [
        WebhookEvent::Welcome,
        WebhookEvent::Owner,
        WebhookEvent::Manager,
        WebhookEvent::Unassigned,
        WebhookEvent::Escalation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::Welcome => "welcome",
            WebhookEvent::Owner => "owner",
            WebhookEvent::Manager => "manager",
            WebhookEvent::Unassigned => "unassigned",
            WebhookEvent::Escalation => "escalation",
        }
    }

    pub fn parse(text: &str) -> Option<WebhookEvent> {
        WebhookEvent::ALL.into_iter().find(|e| e.as_str() == text)
    }
}

/// The `[sync]` section: where the hub is and how often to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// `http://…` or `https://…`, without a trailing path.
    pub hub: String,
    /// A file holding this kiosk's token (from `kiosk hub kiosks add`); read before
    /// every request, so a replaced token is used without a restart.
    pub token_file: PathBuf,
    /// PEM file of a private CA the hub's certificate is signed by; the system's
    /// roots are always trusted too.
    pub ca_file: Option<PathBuf>,
    /// With nothing new to push, the outbox is checked this often anyway.
    pub push_interval: Duration,
    /// How often the roster is pulled.
    pub pull_interval: Duration,
    /// Most records in one upstream batch.
    pub batch_size: usize,
    /// Retry delays double up to this, then stay (each drawn at random below it).
    pub backoff_cap: Duration,
    /// The first push and pull wait a random time up to this, so kiosks coming back
    /// from an outage together don't all call the hub at the same moment.
    pub initial_delay: Duration,
}

/// The defaults of `[sync]`.
pub const DEFAULT_PUSH_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_PULL_INTERVAL: Duration = Duration::from_secs(15);
pub const DEFAULT_BATCH_SIZE: usize = 500;
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(600);
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_secs(10);

/// A hub's configuration (`kiosk hub --config hub.toml`), section `[hub]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    pub listen: SocketAddr,
    /// `sqlite:PATH` (relative to the config's folder) or `postgres://…`.
    pub database: String,
    /// Roster log entries older than this are dropped; a kiosk further behind takes a snapshot.
    pub roster_retention: Duration,
    /// Uploads served at once; more get `503` with `Retry-After`.
    pub max_concurrent_uploads: usize,
}

pub const DEFAULT_HUB_LISTEN: &str = "127.0.0.1:9090";
pub const DEFAULT_ROSTER_RETENTION: Duration = Duration::from_secs(30 * 86_400);
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 32;

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
    Pcsc {
        name: String,
        /// Light and sound on the reader after each tap; off by default.
        feedback: PcscFeedback,
    },
    /// A reader on a serial port (125 kHz RFID, Wiegand converter, QR scanner).
    Serial(SerialReader),
}

/// Tap feedback a PC/SC reader can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcscFeedback {
    None,
    /// The ACR122U's LED and buzzer pseudo-APDU (`FF 00 40 …`): green and a beep on a
    /// welcome, red on a denied or unknown card.
    Acr122u,
}

/// One serial reader: where it is, how to talk to it, and how it frames a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialReader {
    /// Shown in the status and recorded as the visit's source; defaults to the path.
    pub name: String,
    pub path: PathBuf,
    pub baud: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
    pub protocol: SerialProtocol,
    /// A tag counts as present while reads keep coming closer together than this.
    pub presence_timeout: Duration,
}

/// How a serial reader frames one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialProtocol {
    /// 125 kHz EM4100 modules (RDM6300 and alikes): `02`, 10 hex, 2 hex checksum, `03`.
    Rdm6300,
    /// QR and barcode scanners: one read per line.
    Line,
    /// Wiegand-to-serial converters printing each 26-bit frame as hex, one per line.
    WiegandHex,
    /// The same, printing decimal.
    WiegandDec,
}

impl SerialProtocol {
    pub const ALL: [(&str, SerialProtocol); 4] = [
        ("rdm6300", SerialProtocol::Rdm6300),
        ("line", SerialProtocol::Line),
        ("wiegand-hex", SerialProtocol::WiegandHex),
        ("wiegand-dec", SerialProtocol::WiegandDec),
    ];

    pub fn as_str(self) -> &'static str {
        SerialProtocol::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(s, _)| s)
    }
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Odd,
    Even,
}

/// The default of a serial reader's `baud`, what RDM6300 modules and most scanners use.
pub const DEFAULT_BAUD: u32 = 9600;
/// The default of a serial reader's `presence_timeout`: an RDM6300 repeats a tag about
/// every 50 ms, so 300 ms of silence means the tag has left.
pub const DEFAULT_PRESENCE_TIMEOUT: Duration = Duration::from_millis(300);

/// The `[reception]` section.
#[derive(Debug, Clone)]
pub struct ReceptionConfig {
    /// A card held on the reader or tapped again within this time makes one event.
    pub same_card_cooldown: Duration,
    /// How long a customer stays with their consultant after a visit (also outreach and
    /// walk-in customers), a phone call, a broker's report (保护期); the roster's
    /// `source` picks one.
    pub protection_visit: Duration,
    pub protection_phone: Duration,
    pub protection_broker_report: Duration,
    /// The office manager's consultant id: gold members and escalations alert them.
    pub manager: Option<Ident>,
    /// An alert nobody acknowledged within this goes to the next consultant in the queue
    /// and the manager.
    pub escalate_after: Duration,
    /// The version of the privacy notice shown when a walk-in consents at card issuing.
    pub privacy_notice_version: String,
    /// How long a walk-in's full name and phone stay on the kiosk after the hub rejected
    /// their binding (for staff to see what to fix); then they are erased. An accepted
    /// binding's are erased as soon as the hub's answer arrives.
    pub rejected_walk_in_retention: Duration,
}

impl ReceptionConfig {
    /// Every key at its default.
    pub fn defaults() -> ReceptionConfig {
        ReceptionConfig {
            same_card_cooldown: DEFAULT_SAME_CARD_COOLDOWN,
            protection_visit: DEFAULT_PROTECTION_VISIT,
            protection_phone: DEFAULT_PROTECTION_PHONE,
            protection_broker_report: DEFAULT_PROTECTION_BROKER_REPORT,
            manager: None,
            escalate_after: DEFAULT_ESCALATE_AFTER,
            privacy_notice_version: DEFAULT_PRIVACY_NOTICE_VERSION.to_owned(),
            rejected_walk_in_retention: DEFAULT_REJECTED_WALK_IN_RETENTION,
        }
    }
}

const DAY: Duration = Duration::from_secs(24 * 3600);
/// Design §2: visit 15 days, phone 7 days, broker report 15 days.
pub const DEFAULT_PROTECTION_VISIT: Duration = Duration::from_secs(15 * DAY.as_secs());
pub const DEFAULT_PROTECTION_PHONE: Duration = Duration::from_secs(7 * DAY.as_secs());
pub const DEFAULT_PROTECTION_BROKER_REPORT: Duration = Duration::from_secs(15 * DAY.as_secs());
/// The default of `reception.escalate_after`.
pub const DEFAULT_ESCALATE_AFTER: Duration = Duration::from_secs(60);
/// The default of `reception.privacy_notice_version`.
pub const DEFAULT_PRIVACY_NOTICE_VERSION: &str = "1";
/// The default of `reception.rejected_walk_in_retention`: long enough for staff to sort
/// out a refused registration, short enough that personal data does not linger.
pub const DEFAULT_REJECTED_WALK_IN_RETENTION: Duration = Duration::from_secs(30 * DAY.as_secs());

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
        let text = read_text(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }

    /// Validates TOML text; every problem found is returned, not just the first.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, Vec<Problem>> {
        let table = parse_toml(text)?;
        let mut p = Problems::default();
        let mut root = Section::new("", &table);
        let kiosk = match root.table("kiosk", &mut p, true) {
            Some(t) => parse_kiosk(Section::new("kiosk", t), base_dir, &mut p),
            None => None,
        };
        let readers = root.array_of_tables("reader", &mut p).map(|list| {
            list.iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    parse_reader(Section::new(&format!("reader[{i}]"), t), base_dir, &mut p)
                })
                .collect::<Vec<_>>()
        });
        let reception = match root.table("reception", &mut p, false) {
            Some(t) => parse_reception(Section::new("reception", t), &mut p),
            None => Some(ReceptionConfig::defaults()),
        };
        let sync = match root.table("sync", &mut p, false) {
            Some(t) => parse_sync(Section::new("sync", t), base_dir, &mut p).map(Some),
            None => Some(None),
        };
        let webhooks = match root.table("notify", &mut p, false) {
            Some(t) => parse_notify(Section::new("notify", t), base_dir, &mut p),
            None => Some(Vec::new()),
        };
        let screen = match root.table("screen", &mut p, false) {
            Some(t) => parse_screen(Section::new("screen", t), base_dir, &mut p),
            None => Some(ScreenConfig::defaults()),
        };
        if let Some(readers) = &readers {
            check_serial_readers(readers, &mut p);
        }
        root.finish(
            &["kiosk", "reader", "reception", "sync", "notify", "screen"],
            &mut p,
        );
        match (kiosk, readers, reception, sync, webhooks, screen) {
            (
                Some(kiosk),
                Some(readers),
                Some(reception),
                Some(sync),
                Some(webhooks),
                Some(screen),
            ) if p.0.is_empty() => Ok(Config {
                kiosk,
                readers,
                reception,
                sync,
                webhooks,
                screen,
            }),
            _ => Err(p.0),
        }
    }
}

impl HubConfig {
    /// Reads and validates a hub config file; relative paths are taken from its folder.
    pub fn load(path: &Path) -> Result<HubConfig, ConfigError> {
        let text = read_text(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        HubConfig::parse(&text, base).map_err(|problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }

    /// Validates hub TOML text; every problem found is returned.
    pub fn parse(text: &str, base_dir: &Path) -> Result<HubConfig, Vec<Problem>> {
        let table = parse_toml(text)?;
        let mut p = Problems::default();
        let mut root = Section::new("", &table);
        let hub = root
            .table("hub", &mut p, true)
            .and_then(|t| parse_hub(Section::new("hub", t), base_dir, &mut p));
        root.finish(&["hub"], &mut p);
        match hub {
            Some(hub) if p.0.is_empty() => Ok(hub),
            _ => Err(p.0),
        }
    }
}

fn parse_sync(mut s: Section<'_>, base_dir: &Path, p: &mut Problems) -> Option<SyncConfig> {
    let hub = s.required_str("hub", p).and_then(|v| {
        let v = v.trim_end_matches('/');
        let ok = (v.starts_with("http://") || v.starts_with("https://"))
            && v.split_once("://").is_some_and(|(_, rest)| !rest.is_empty())
            && !v.chars().any(|c| c.is_whitespace() || c.is_control());
        if ok {
            Some(v.to_owned())
        } else {
            p.push(
                s.key("hub"),
                format!("{v:?} is not a hub address; write its URL, e.g. \"https://hub.example.internal\" or \"http://10.0.0.5:9090\""),
            );
            None
        }
    });
    let token_file = s.required_str("token_file", p).and_then(|v| {
        s.check(
            "token_file",
            file_path(v, base_dir, "\"/etc/kiosk/hub.token\""),
            p,
        )
    });
    let ca_file = match s.optional_str("ca_file", p) {
        None => Some(None),
        Some(v) => s
            .check(
                "ca_file",
                file_path(v, base_dir, "\"/etc/kiosk/hub-ca.pem\""),
                p,
            )
            .map(Some),
    };
    let push_interval = s.duration_in(
        "push_interval",
        Duration::from_millis(100),
        Duration::from_secs(3600),
        DEFAULT_PUSH_INTERVAL,
        p,
    );
    let pull_interval = s.duration_in(
        "pull_interval",
        Duration::from_millis(100),
        Duration::from_secs(86_400),
        DEFAULT_PULL_INTERVAL,
        p,
    );
    let backoff_cap = s.duration_in(
        "backoff_cap",
        Duration::from_secs(1),
        Duration::from_secs(86_400),
        DEFAULT_BACKOFF_CAP,
        p,
    );
    let initial_delay = s.duration_in(
        "initial_delay",
        Duration::ZERO,
        Duration::from_secs(3600),
        DEFAULT_INITIAL_DELAY,
        p,
    );
    let batch_size = s.int_in("batch_size", 1, 5000, DEFAULT_BATCH_SIZE as i64, "500", p);
    s.finish(
        &[
            "hub",
            "token_file",
            "ca_file",
            "push_interval",
            "pull_interval",
            "batch_size",
            "backoff_cap",
            "initial_delay",
        ],
        p,
    );
    Some(SyncConfig {
        hub: hub?,
        token_file: token_file?,
        ca_file: ca_file?,
        push_interval: push_interval?,
        pull_interval: pull_interval?,
        batch_size: usize::try_from(batch_size?).ok()?,
        backoff_cap: backoff_cap?,
        initial_delay: initial_delay?,
    })
}

/// `[notify]`: so far only its `[[notify.webhook]]` entries.
fn parse_notify(
    mut s: Section<'_>,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<Vec<WebhookConfig>> {
    let hooks = s.array_of_tables("webhook", p).map(|list| {
        list.iter()
            .enumerate()
            .map(|(i, t)| {
                parse_webhook(
                    Section::new(&format!("notify.webhook[{i}]"), t),
                    base_dir,
                    p,
                )
            })
            .collect::<Vec<_>>()
    });
    s.finish(&["webhook"], p);
    hooks?.into_iter().collect()
}

fn parse_webhook(mut s: Section<'_>, base_dir: &Path, p: &mut Problems) -> Option<WebhookConfig> {
    let url = s.required_str("url", p).and_then(|v| {
        let ok = (v.starts_with("http://") || v.starts_with("https://"))
            && v.split_once("://").is_some_and(|(_, rest)| !rest.is_empty())
            && !v.chars().any(|c| c.is_whitespace() || c.is_control());
        let parsed = if ok {
            Ok(v.to_owned())
        } else {
            Err("is not an http:// or https:// URL; write the receiver's address, e.g. the group robot's webhook URL as its settings show it, or \"http://10.0.0.5:8080/hook\"".to_owned())
        };
        s.check("url", parsed, p)
    });
    let format = match s.optional_str("format", p) {
        None => (!s.table.contains_key("format")).then_some(WebhookFormat::Generic),
        Some(v) => {
            let parsed = match v {
                "generic" => Ok(WebhookFormat::Generic),
                "wecom" => Ok(WebhookFormat::Wecom),
                "dingtalk" => Ok(WebhookFormat::Dingtalk),
                other => Err(format!(
                    "unknown format {other:?}; write one of \"generic\", \"wecom\", \"dingtalk\""
                )),
            };
            s.check("format", parsed, p)
        }
    };
    let inline = s.optional_str("secret", p);
    let file = s.optional_str("secret_file", p);
    let secret = match (inline, file) {
        (Some(_), Some(_)) => {
            p.push(
                s.key("secret"),
                "give either secret or secret_file, not both; secret_file keeps it out of the config",
            );
            None
        }
        (Some(""), None) => {
            p.push(
                s.key("secret"),
                "is empty; remove it or write the shared secret",
            );
            None
        }
        (Some(v), None) => Some(Some(WebhookSecret::Inline(v.to_owned()))),
        (None, Some(v)) => s
            .check(
                "secret_file",
                file_path(v, base_dir, "\"/etc/kiosk/webhook.secret\""),
                p,
            )
            .map(|f| Some(WebhookSecret::File(f))),
        (None, None) => {
            let typed_wrong = s.table.contains_key("secret") || s.table.contains_key("secret_file");
            (!typed_wrong).then_some(None)
        }
    };
    let events = match s.get("events") {
        None => Some(vec![WebhookEvent::Welcome]),
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut events = Vec::new();
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(name) if WebhookEvent::parse(name).is_some() => {
                        events.extend(WebhookEvent::parse(name));
                    }
                    Some(other) => {
                        ok = false;
                        p.push(
                            format!("{}[{i}]", s.key("events")),
                            format!(
                                "unknown event {other:?}; write one of {}",
                                WebhookEvent::ALL
                                    .map(|e| format!("{:?}", e.as_str()))
                                    .join(", ")
                            ),
                        );
                    }
                    None => {
                        ok = false;
                        p.push(
                            format!("{}[{i}]", s.key("events")),
                            format!("must be a string in quotes, found {}", item.type_str()),
                        );
                    }
                }
            }
            ok.then_some(events)
        }
        Some(_) => {
            p.push(
                s.key("events"),
                "must be a list of event names, e.g. events = [\"welcome\"]",
            );
            None
        }
    };
    s.finish(&["url", "format", "secret", "secret_file", "events"], p);
    Some(WebhookConfig {
        url: url?,
        format: format?,
        secret: secret?,
        events: events?,
    })
}

fn parse_hub(mut s: Section<'_>, base_dir: &Path, p: &mut Problems) -> Option<HubConfig> {
    let listen = s
        .optional_str("listen", p)
        .or(Some(DEFAULT_HUB_LISTEN))
        .and_then(|v| {
            let parsed = v.parse::<SocketAddr>().map_err(|_| {
                format!(
                    "{v:?} is not an address to listen on; write IP:PORT such as \"0.0.0.0:9090\""
                )
            });
            s.check("listen", parsed, p)
        });
    let database = s.required_str("database", p).and_then(|v| {
        let parsed = if v.starts_with("postgres://") || v.starts_with("postgresql://") {
            Ok(v.to_owned())
        } else if let Some(path) = v.strip_prefix("sqlite:") {
            if path.trim().is_empty() {
                Err("names no file; write \"sqlite:hub.sqlite\" or \"sqlite:/var/lib/kiosk-hub/hub.sqlite\"".to_owned())
            } else {
                Ok(format!("sqlite:{}", base_dir.join(path).display()))
            }
        } else {
            Err(format!("{v:?} is neither \"sqlite:PATH\" nor \"postgres://USER:PASSWORD@HOST:PORT/DATABASE\""))
        };
        s.check("database", parsed, p)
    });
    let roster_retention = s.duration_in(
        "roster_retention",
        Duration::from_secs(3600),
        Duration::from_secs(10 * 365 * 86_400),
        DEFAULT_ROSTER_RETENTION,
        p,
    );
    let uploads = s.int_in(
        "max_concurrent_uploads",
        1,
        10_000,
        DEFAULT_MAX_CONCURRENT_UPLOADS as i64,
        "32",
        p,
    );
    s.finish(
        &[
            "listen",
            "database",
            "roster_retention",
            "max_concurrent_uploads",
        ],
        p,
    );
    Some(HubConfig {
        listen: listen?,
        database: database?,
        roster_retention: roster_retention?,
        max_concurrent_uploads: usize::try_from(uploads?).ok()?,
    })
}

fn parse_screen(mut s: Section<'_>, base_dir: &Path, p: &mut Problems) -> Option<ScreenConfig> {
    let language = match s.optional_str("language", p) {
        None => (!s.table.contains_key("language")).then_some(ScreenLanguage::Both),
        Some(v) => {
            let parsed = match v {
                "zh" => Ok(ScreenLanguage::Zh),
                "en" => Ok(ScreenLanguage::En),
                "both" => Ok(ScreenLanguage::Both),
                other => Err(format!(
                    "unknown language {other:?}; write \"zh\" (Chinese), \"en\" (English) or \"both\""
                )),
            };
            s.check("language", parsed, p)
        }
    };
    let logo = match s.optional_str("logo", p) {
        None => (!s.table.contains_key("logo")).then_some(None),
        Some(v) => {
            let parsed = file_path(v, base_dir, "\"/etc/kiosk/logo.png\"").and_then(|path| {
                let ext = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase);
                match ext.as_deref() {
                    Some("png" | "jpg" | "jpeg" | "svg" | "webp") => Ok(path),
                    _ => Err(format!(
                        "{v:?} is not a PNG, JPEG, SVG or WebP file; the name must end in .png, .jpg, .svg or .webp"
                    )),
                }
            });
            s.check("logo", parsed, p).map(Some)
        }
    };
    let greeting_duration = s.duration_in(
        "greeting_duration",
        Duration::from_secs(2),
        Duration::from_secs(600),
        DEFAULT_GREETING_DURATION,
        p,
    );
    s.finish(&["language", "logo", "greeting_duration"], p);
    Some(ScreenConfig {
        language: language?,
        logo: logo?,
        greeting_duration: greeting_duration?,
    })
}

/// A path key: relative paths are read from the config's folder.
fn file_path(v: &str, base_dir: &Path, example: &str) -> Result<PathBuf, String> {
    if v.trim().is_empty() || v.chars().any(char::is_control) {
        Err(format!("is not a file path; write one such as {example}"))
    } else {
        Ok(base_dir.join(v))
    }
}

/// Reads a config file as UTF-8 text.
fn read_text(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    // Editors on Chinese Windows often save as GBK; say so rather than "invalid data".
    String::from_utf8(bytes).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        problems: vec![Problem {
            path: String::new(),
            message: format!(
                "line {}: the file is not UTF-8 text; save it as UTF-8 (in Notepad: Save as, Encoding: UTF-8)",
                line_of(&String::from_utf8_lossy(e.as_bytes()), e.utf8_error().valid_up_to())
            ),
        }],
    })
}

fn parse_toml(text: &str) -> Result<Table, Vec<Problem>> {
    text.parse().map_err(|e: toml::de::Error| {
        let where_ = e
            .span()
            .map(|s| format!("line {}: ", line_of(text, s.start)))
            .unwrap_or_default();
        vec![Problem {
            path: String::new(),
            message: format!("{where_}not valid TOML: {}", e.message().trim_end()),
        }]
    })
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

fn parse_reader(mut s: Section<'_>, base_dir: &Path, p: &mut Problems) -> Option<ReaderConfig> {
    let Some(kind) = s.required_str("kind", p) else {
        s.finish(&["kind"], p);
        return None;
    };
    match kind {
        "pcsc" => parse_pcsc_reader(s, p),
        "serial" => parse_serial_reader(s, base_dir, p).map(ReaderConfig::Serial),
        other => {
            p.push(
                s.key("kind"),
                format!("unknown reader kind {other:?}; write kind = \"pcsc\" for a contactless reader or kind = \"serial\" for a serial one"),
            );
            s.finish(&["kind"], p);
            None
        }
    }
}

fn parse_pcsc_reader(mut s: Section<'_>, p: &mut Problems) -> Option<ReaderConfig> {
    let name = s.optional_str("name", p).unwrap_or("*");
    let name_ok = !name.trim().is_empty();
    if !name_ok {
        p.push(
            s.key("name"),
            "is empty; write a reader name or glob such as \"ACS ACR122U*\", or \"*\" for every reader",
        );
    }
    let feedback = match s.optional_str("feedback", p) {
        None | Some("none") => Some(PcscFeedback::None),
        Some("acr122u") => Some(PcscFeedback::Acr122u),
        Some(other) => {
            p.push(
                s.key("feedback"),
                format!("unknown feedback {other:?}; write \"acr122u\" for ACS ACR122U-class readers, or \"none\""),
            );
            None
        }
    };
    s.finish(&["kind", "name", "feedback"], p);
    let feedback = feedback?;
    name_ok.then(|| ReaderConfig::Pcsc {
        name: name.to_owned(),
        feedback,
    })
}

fn parse_serial_reader(
    mut s: Section<'_>,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<SerialReader> {
    let path = s.required_str("path", p).and_then(|v| {
        if v.chars().any(char::is_control) {
            p.push(
                s.key("path"),
                "contains a control character; write the device path, e.g. \"/dev/serial/by-id/…\"",
            );
            None
        } else if v.trim().is_empty() {
            p.push(
                s.key("path"),
                "is empty; write the device, e.g. \"/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0\"",
            );
            None
        } else {
            // Relative paths (a symlink next to the config) read from the config's folder.
            Some(base_dir.join(v))
        }
    });
    let name = s.optional_str("name", p).map(str::to_owned);
    if name.as_ref().is_some_and(|n| {
        n.trim().is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control)
    }) {
        p.push(
            s.key("name"),
            "must be 1 to 64 printable characters, e.g. \"front-desk-rfid\"",
        );
    }
    let protocol = s.required_str("protocol", p).and_then(|v| {
        let parsed = SerialProtocol::ALL
            .iter()
            .find(|(n, _)| *n == v)
            .map(|(_, proto)| *proto)
            .ok_or_else(|| {
                let names: Vec<String> = SerialProtocol::ALL
                    .iter()
                    .map(|(n, _)| format!("{n:?}"))
                    .collect();
                format!("unknown protocol {v:?}; write one of {}", names.join(", "))
            });
        s.check("protocol", parsed, p)
    });
    let baud = s.int_in("baud", 50, 4_000_000, i64::from(DEFAULT_BAUD), "9600", p);
    let data_bits = s.int_in("data_bits", 5, 8, 8, "8", p);
    let stop_bits = s.int_in("stop_bits", 1, 2, 1, "1", p);
    let parity = match s.optional_str("parity", p) {
        None | Some("none") => Some(Parity::None),
        Some("odd") => Some(Parity::Odd),
        Some("even") => Some(Parity::Even),
        Some(other) => {
            p.push(
                s.key("parity"),
                format!("unknown parity {other:?}; write \"none\", \"odd\" or \"even\""),
            );
            None
        }
    };
    let presence_timeout = match s.optional_str("presence_timeout", p) {
        None => Some(DEFAULT_PRESENCE_TIMEOUT),
        Some(v) => {
            let parsed = parse_duration(v).and_then(|d| {
                if d < Duration::from_millis(50) || d > Duration::from_secs(10) {
                    Err(format!(
                        "{v:?} is outside 50ms to 10s; a tag repeats every few tens of ms, e.g. \"300ms\""
                    ))
                } else {
                    Ok(d)
                }
            });
            s.check("presence_timeout", parsed, p)
        }
    };
    s.finish(
        &[
            "kind",
            "name",
            "path",
            "baud",
            "data_bits",
            "parity",
            "stop_bits",
            "protocol",
            "presence_timeout",
        ],
        p,
    );
    let path = path?;
    Some(SerialReader {
        name: name.unwrap_or_else(|| path.display().to_string()),
        path,
        baud: u32::try_from(baud?).ok()?,
        data_bits: u8::try_from(data_bits?).ok()?,
        parity: parity?,
        stop_bits: u8::try_from(stop_bits?).ok()?,
        protocol: protocol?,
        presence_timeout: presence_timeout?,
    })
}

/// Two entries on one port would fight over it, and two readers of one name would
/// make visits' sources ambiguous.
fn check_serial_readers(readers: &[ReaderConfig], p: &mut Problems) {
    let serial: Vec<(usize, &SerialReader)> = readers
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            ReaderConfig::Serial(s) => Some((i, s)),
            ReaderConfig::Pcsc { .. } => None,
        })
        .collect();
    for (n, (i, a)) in serial.iter().enumerate() {
        for (j, b) in &serial[..n] {
            if a.path == b.path {
                p.push(
                    format!("reader[{i}].path"),
                    format!(
                        "{} is already used by reader[{j}]; a port has one reader",
                        a.path.display()
                    ),
                );
            } else if a.name == b.name {
                p.push(
                    format!("reader[{i}].name"),
                    format!(
                        "{:?} is already the name of reader[{j}]; give each reader its own name",
                        a.name
                    ),
                );
            }
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
    let max_period = Duration::from_secs(3650 * DAY.as_secs());
    let protection_visit = s.duration_in(
        "protection_visit",
        Duration::from_secs(60),
        max_period,
        DEFAULT_PROTECTION_VISIT,
        p,
    );
    let protection_phone = s.duration_in(
        "protection_phone",
        Duration::from_secs(60),
        max_period,
        DEFAULT_PROTECTION_PHONE,
        p,
    );
    let protection_broker_report = s.duration_in(
        "protection_broker_report",
        Duration::from_secs(60),
        max_period,
        DEFAULT_PROTECTION_BROKER_REPORT,
        p,
    );
    let escalate_after = s.duration_in(
        "escalate_after",
        Duration::from_secs(1),
        Duration::from_secs(3600),
        DEFAULT_ESCALATE_AFTER,
        p,
    );
    let manager = match s.optional_str("manager", p) {
        None => Some(None),
        Some(v) => s.check("manager", Ident::parse(v), p).map(Some),
    };
    let privacy_notice_version = match s.optional_str("privacy_notice_version", p) {
        None => Some(DEFAULT_PRIVACY_NOTICE_VERSION.to_owned()),
        Some(v) if v.trim().is_empty() || v.len() > 64 => {
            p.push(
                s.key("privacy_notice_version"),
                format!(
                    "{v:?} must be 1 to 64 characters naming the notice's version, e.g. \"2026-11\""
                ),
            );
            None
        }
        Some(v) => Some(v.to_owned()),
    };
    // 0s is allowed: erase a refused walk-in's details at once.
    let rejected_walk_in_retention = s.duration_in(
        "rejected_walk_in_retention",
        Duration::ZERO,
        Duration::from_secs(365 * DAY.as_secs()),
        DEFAULT_REJECTED_WALK_IN_RETENTION,
        p,
    );
    s.finish(
        &[
            "same_card_cooldown",
            "protection_visit",
            "protection_phone",
            "protection_broker_report",
            "manager",
            "escalate_after",
            "privacy_notice_version",
            "rejected_walk_in_retention",
        ],
        p,
    );
    Some(ReceptionConfig {
        same_card_cooldown: cooldown?,
        protection_visit: protection_visit?,
        protection_phone: protection_phone?,
        protection_broker_report: protection_broker_report?,
        manager: manager?,
        escalate_after: escalate_after?,
        privacy_notice_version: privacy_notice_version?,
        rejected_walk_in_retention: rejected_walk_in_retention?,
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

    /// An optional integer key within `min..=max`, `default` when absent.
    fn int_in(
        &mut self,
        key: &str,
        min: i64,
        max: i64,
        default: i64,
        example: &str,
        p: &mut Problems,
    ) -> Option<i64> {
        match self.get(key) {
            None => Some(default),
            Some(Value::Integer(n)) if (min..=max).contains(n) => Some(*n),
            Some(Value::Integer(n)) => {
                p.push(
                    self.key(key),
                    format!("{n} is outside {min} to {max}; e.g. {key} = {example}"),
                );
                None
            }
            Some(other) => {
                p.push(
                    self.key(key),
                    format!(
                        "must be a number without quotes, e.g. {key} = {example}; found {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// An optional duration key within `min..=max`, `default` when absent.
    fn duration_in(
        &mut self,
        key: &str,
        min: Duration,
        max: Duration,
        default: Duration,
        p: &mut Problems,
    ) -> Option<Duration> {
        let Some(v) = self.optional_str(key, p) else {
            return (!self.table.contains_key(key)).then_some(default);
        };
        let parsed = parse_duration(v).and_then(|d| {
            if d < min || d > max {
                Err(format!(
                    "{v:?} is outside {} to {}",
                    duration::show(min),
                    duration::show(max)
                ))
            } else {
                Ok(d)
            }
        });
        self.check(key, parsed, p)
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
                "path" => "path = \"/dev/serial/by-id/…\"",
                "hub" => "hub = \"https://hub.example.internal\"",
                "url" => "url = \"https://receiver.example.internal/kiosk\"",
                "token_file" => "token_file = \"/etc/kiosk/hub.token\"",
                "database" => "database = \"sqlite:hub.sqlite\" (or \"postgres://…\")",
                "protocol" => {
                    "protocol = \"rdm6300\" (or \"line\", \"wiegand-hex\", \"wiegand-dec\")"
                }
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
feedback = "acr122u"

[[reader]]
kind = "serial"
path = "/dev/serial/by-id/usb-rfid"
protocol = "rdm6300"

[[reader]]
kind = "serial"
name = "qr"
path = "qr-tty"
baud = 115200
data_bits = 7
parity = "even"
stop_bits = 2
protocol = "line"
presence_timeout = "1s"

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
            vec![
                ReaderConfig::Pcsc {
                    name: "ACS ACR122U*".into(),
                    feedback: PcscFeedback::Acr122u,
                },
                ReaderConfig::Serial(SerialReader {
                    name: "/dev/serial/by-id/usb-rfid".into(),
                    path: "/dev/serial/by-id/usb-rfid".into(),
                    baud: 9600,
                    data_bits: 8,
                    parity: Parity::None,
                    stop_bits: 1,
                    protocol: SerialProtocol::Rdm6300,
                    presence_timeout: DEFAULT_PRESENCE_TIMEOUT,
                }),
                ReaderConfig::Serial(SerialReader {
                    name: "qr".into(),
                    path: "/etc/kiosk/qr-tty".into(),
                    baud: 115200,
                    data_bits: 7,
                    parity: Parity::Even,
                    stop_bits: 2,
                    protocol: SerialProtocol::Line,
                    presence_timeout: Duration::from_secs(1),
                }),
            ]
        );
        assert_eq!(cfg.reception.same_card_cooldown, Duration::from_secs(5));
    }

    #[test]
    fn a_sync_section_and_a_hub_file_become_typed_config() {
        let text = "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n[sync]\nhub='https://hub.example.internal/'\ntoken_file='hub.token'\npull_interval='250ms'\ninitial_delay='0s'\n";
        let cfg = Config::parse(text, Path::new("/etc/kiosk")).expect("valid");
        assert_eq!(
            cfg.sync,
            Some(SyncConfig {
                hub: "https://hub.example.internal".into(),
                token_file: "/etc/kiosk/hub.token".into(),
                ca_file: None,
                push_interval: DEFAULT_PUSH_INTERVAL,
                pull_interval: Duration::from_millis(250),
                batch_size: DEFAULT_BATCH_SIZE,
                backoff_cap: DEFAULT_BACKOFF_CAP,
                initial_delay: Duration::ZERO,
            })
        );
        let hub = HubConfig::parse(
            "[hub]\ndatabase='sqlite:hub.sqlite'\nroster_retention='7d'\n",
            Path::new("/srv/hub"),
        )
        .expect("valid");
        assert_eq!(
            hub,
            HubConfig {
                listen: DEFAULT_HUB_LISTEN.parse().expect("addr"),
                database: "sqlite:/srv/hub/hub.sqlite".into(),
                roster_retention: Duration::from_secs(7 * 86_400),
                max_concurrent_uploads: DEFAULT_MAX_CONCURRENT_UPLOADS,
            }
        );
        let pg = HubConfig::parse(
            "[hub]\nlisten='0.0.0.0:9090'\ndatabase='postgres://hub:pw@db:5432/hub'\nmax_concurrent_uploads=8\n",
            Path::new("/"),
        )
        .expect("valid");
        assert_eq!(pg.database, "postgres://hub:pw@db:5432/hub");
        assert_eq!(pg.max_concurrent_uploads, 8);
    }

    #[test]
    fn hub_file_problems_are_reported_with_their_key_paths() {
        let cases: &[(&str, &[&str])] = &[
            ("", &["hub: section [hub] is missing"]),
            (
                "[hub]\nlisten='everywhere'\ndatabase='mysql://x'\nroster_retention='1m'\nmax_concurrent_uploads=0\nretention='1d'\n",
                &[
                    "hub.listen: \"everywhere\" is not an address",
                    "hub.database: \"mysql://x\" is neither \"sqlite:PATH\" nor \"postgres://",
                    "hub.roster_retention: \"1m\" is outside 1h to 3650d",
                    "hub.max_concurrent_uploads: 0 is outside 1 to 10000",
                    "hub.retention: unknown key",
                ],
            ),
            (
                "[hub]\ndatabase='sqlite:'\n",
                &["hub.database: names no file"],
            ),
            (
                "[hub]\n",
                &["hub.database: is missing; add database = \"sqlite:hub.sqlite\""],
            ),
        ];
        for (input, expected) in cases {
            let problems = HubConfig::parse(input, Path::new("/")).expect_err(input);
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
    fn notify_webhooks_become_typed_config_with_secrets_redacted() {
        let text = "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n\
            [[notify.webhook]]\nurl='https://wecom-robot.invalid/send?key=abc'\nformat='wecom'\nsecret='s3cret'\n\
            [[notify.webhook]]\nurl='http://10.0.0.5:8080/hook'\nsecret_file='hook.secret'\nevents=['welcome']\n\
            [[notify.webhook]]\nurl='https://dingtalk-robot.invalid/send?access_token=t'\nformat='dingtalk'\n\
            events=['escalation','welcome','owner','manager','unassigned']\n";
        let cfg = Config::parse(text, Path::new("/etc/kiosk")).expect("valid");
        assert_eq!(
            cfg.webhooks,
            vec![
                WebhookConfig {
                    url: "https://wecom-robot.invalid/send?key=abc".into(),
                    format: WebhookFormat::Wecom,
                    secret: Some(WebhookSecret::Inline("s3cret".into())),
                    events: vec![WebhookEvent::Welcome],
                },
                WebhookConfig {
                    url: "http://10.0.0.5:8080/hook".into(),
                    format: WebhookFormat::Generic,
                    secret: Some(WebhookSecret::File("/etc/kiosk/hook.secret".into())),
                    events: vec![WebhookEvent::Welcome],
                },
                WebhookConfig {
                    url: "https://dingtalk-robot.invalid/send?access_token=t".into(),
                    format: WebhookFormat::Dingtalk,
                    secret: None,
                    events: vec![
                        WebhookEvent::Escalation,
                        WebhookEvent::Welcome,
                        WebhookEvent::Owner,
                        WebhookEvent::Manager,
                        WebhookEvent::Unassigned,
                    ],
                },
            ]
        );
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("s3cret")
                && !shown.contains("key=abc")
                && !shown.contains("access_token"),
            "{shown}"
        );
        let none = Config::parse(
            "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n",
            Path::new("/"),
        )
        .expect("valid");
        assert!(none.webhooks.is_empty());
    }

    #[test]
    fn defaults_fill_optional_keys() {
        let text = "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n";
        let cfg = Config::parse(text, Path::new("/")).expect("valid");
        assert_eq!(cfg.kiosk.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(cfg.kiosk.office_name, "o");
        assert!(cfg.readers.is_empty());
        assert_eq!(cfg.reception.same_card_cooldown, DEFAULT_SAME_CARD_COOLDOWN);
        assert_eq!(cfg.screen, ScreenConfig::defaults());
    }

    #[test]
    fn a_screen_section_becomes_typed_config() {
        let text = "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n\
                    [screen]\nlanguage='zh'\nlogo='brand/logo.SVG'\ngreeting_duration='12s'\n";
        let cfg = Config::parse(text, Path::new("/etc/kiosk")).expect("valid");
        assert_eq!(
            cfg.screen,
            ScreenConfig {
                language: ScreenLanguage::Zh,
                logo: Some(PathBuf::from("/etc/kiosk/brand/logo.SVG")),
                greeting_duration: Duration::from_secs(12),
            }
        );
    }

    #[test]
    fn reception_keys_are_read_and_default() {
        let text = "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n\
            [reception]\nprotection_visit='30d'\nprotection_phone='3d'\nprotection_broker_report='20d'\n\
            manager='M01'\nescalate_after='90s'\nprivacy_notice_version='2026-11'\n\
            rejected_walk_in_retention='0s'\n";
        let cfg = Config::parse(text, Path::new("/")).expect("valid");
        let r = &cfg.reception;
        assert_eq!(r.protection_visit, Duration::from_secs(30 * 86_400));
        assert_eq!(r.protection_phone, Duration::from_secs(3 * 86_400));
        assert_eq!(r.protection_broker_report, Duration::from_secs(20 * 86_400));
        assert_eq!(r.manager.as_ref().map(Ident::as_str), Some("M01"));
        assert_eq!(r.escalate_after, Duration::from_secs(90));
        assert_eq!(r.privacy_notice_version, "2026-11");
        assert_eq!(r.rejected_walk_in_retention, Duration::ZERO);
        assert_eq!(r.same_card_cooldown, DEFAULT_SAME_CARD_COOLDOWN);

        let bare = "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n[reception]\n";
        let cfg = Config::parse(bare, Path::new("/")).expect("valid");
        let d = ReceptionConfig::defaults();
        let r = &cfg.reception;
        assert_eq!(
            (
                r.protection_visit,
                r.protection_phone,
                r.protection_broker_report
            ),
            (
                d.protection_visit,
                d.protection_phone,
                d.protection_broker_report
            )
        );
        assert_eq!(r.protection_phone, Duration::from_secs(7 * 86_400));
        assert_eq!(
            (r.manager.clone(), r.escalate_after),
            (None, DEFAULT_ESCALATE_AFTER)
        );
        assert_eq!(r.privacy_notice_version, DEFAULT_PRIVACY_NOTICE_VERSION);
        assert_eq!(
            r.rejected_walk_in_retention,
            Duration::from_secs(30 * 86_400)
        );
    }

    /// Each case: a file, then every problem expected as `path: message fragment`.
    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n[reception]\nprotection_visit='15'\nprotection_phone='0s'\nmanager='li na'\nescalate_after='2h'\nprivacy_notice_version=''\nprotection='7d'\nrejected_walk_in_retention='400d'\n",
                &[
                    "reception.protection_visit: \"15\" has a number without a unit",
                    "reception.protection_phone: \"0s\" is outside 1m to",
                    "reception.manager: \"li na\" is not a valid id",
                    "reception.escalate_after: \"2h\" is outside 1s to 1h",
                    "reception.privacy_notice_version: \"\" must be 1 to 64 characters",
                    "reception.rejected_walk_in_retention: \"400d\" is outside 0s to 365d",
                    "reception.protection: unknown key",
                ],
            ),
            ("", &["kiosk: section [kiosk] is missing"]),
            (
                "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n[screen]\nlanguage='fr'\nlogo='logo.gif'\ngreeting_duration='1s'\ncolour='red'\n",
                &[
                    "screen.language: unknown language \"fr\"; write \"zh\" (Chinese), \"en\" (English) or \"both\"",
                    "screen.logo: \"logo.gif\" is not a PNG, JPEG, SVG or WebP file",
                    "screen.greeting_duration: \"1s\" is outside 2s to 10m",
                    "screen.colour: unknown key; known keys here: language, logo, greeting_duration",
                ],
            ),
            (
                "screen='big'\n[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n",
                &["screen: must be a section [screen], found string"],
            ),
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
                    "reader[0].path: is missing; add path = \"/dev/serial/by-id/",
                    "reader[0].protocol: is missing; add protocol = \"rdm6300\"",
                    "reader[1].kind: unknown reader kind \"usb\"; write kind = \"pcsc\"",
                    "reader[2].nmae: unknown key; did you mean \"name\"?",
                ],
            ),
            (
                "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n[[reader]]\nkind='serial'\npath='/dev/ttyUSB0'\nprotocol='em4100'\nbaud='9600'\nparity='mark'\nstop_bits=3\npresence_timeout='10ms'\n[[reader]]\nkind='serial'\npath='/dev/ttyUSB0'\nprotocol='line'\n[[reader]]\nkind='pcsc'\nfeedback='blink'\n",
                &[
                    "reader[0].protocol: unknown protocol \"em4100\"; write one of \"rdm6300\", \"line\", \"wiegand-hex\", \"wiegand-dec\"",
                    "reader[0].baud: must be a number without quotes, e.g. baud = 9600; found string",
                    "reader[0].parity: unknown parity \"mark\"",
                    "reader[0].stop_bits: 3 is outside 1 to 2",
                    "reader[0].presence_timeout: \"10ms\" is outside 50ms to 10s",
                    "reader[2].feedback: unknown feedback \"blink\"",
                ],
            ),
            (
                "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n[[reader]]\nkind='serial'\nname=\"a\\u0000b\"\npath='/dev/ttyUSB0'\nprotocol='line'\n[[reader]]\nkind='serial'\npath=\"/dev/tty\\u0000\"\nprotocol='line'\n",
                &[
                    "reader[0].name: must be 1 to 64 printable characters",
                    "reader[1].path: contains a control character",
                ],
            ),
            (
                "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n[[reader]]\nkind='serial'\npath='/dev/ttyUSB0'\nprotocol='line'\n[[reader]]\nkind='serial'\npath='/dev/ttyUSB0'\nprotocol='rdm6300'\n[[reader]]\nkind='serial'\nname='a'\npath='/dev/ttyUSB1'\nprotocol='line'\n[[reader]]\nkind='serial'\nname='a'\npath='/dev/ttyUSB2'\nprotocol='line'\n",
                &[
                    "reader[1].path: /dev/ttyUSB0 is already used by reader[0]",
                    "reader[3].name: \"a\" is already the name of reader[2]",
                ],
            ),
            (
                "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n[reception]\nsame_card_cooldown='3'\n[sync]\nhub='x'\npush_interval='10ms'\nbatch_size=0\ninitial_delay='soon'\ntoken='abc'\n[syncs]\n",
                &[
                    "reception.same_card_cooldown: \"3\" has a number without a unit",
                    "sync.hub: \"x\" is not a hub address",
                    "sync.token_file: is missing; add token_file = \"/etc/kiosk/hub.token\"",
                    "sync.push_interval: \"10ms\" is outside 100ms to 1h",
                    "sync.batch_size: 0 is outside 1 to 5000",
                    "sync.initial_delay: \"soon\" is not a duration",
                    "sync.token: unknown key; known keys here: hub, token_file",
                    "syncs: unknown key; did you mean \"sync\"?",
                ],
            ),
            (
                "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n[notify]\nmail='x'\n[[notify.webhook]]\nformat='slack'\nsecret='a'\nsecret_file='b'\nevents=['welcome','farewell',3]\n[[notify.webhook]]\nurl='ftp://x'\nsecret=''\nevents='welcome'\nurl_='y'\n[[notify.webhook]]\nurl='https://ok'\nsecret=5\n",
                &[
                    "notify.webhook[0].url: is missing; add url = ",
                    "notify.webhook[0].format: unknown format \"slack\"; write one of \"generic\", \"wecom\", \"dingtalk\"",
                    "notify.webhook[0].secret: give either secret or secret_file, not both",
                    "notify.webhook[0].events[1]: unknown event \"farewell\"; write one of \"welcome\", \"owner\", \"manager\", \"unassigned\", \"escalation\"",
                    "notify.webhook[0].events[2]: must be a string in quotes, found integer",
                    "notify.webhook[1].url: is not an http:// or https:// URL",
                    "notify.webhook[1].secret: is empty",
                    "notify.webhook[1].events: must be a list of event names",
                    "notify.webhook[1].url_: unknown key; did you mean \"url\"?",
                    "notify.webhook[2].secret: must be a string in quotes, found integer",
                    "notify.mail: unknown key; known keys here: webhook",
                ],
            ),
            (
                "[kiosk]\nid='k'\noffice='o'\ntime_zone='UTC'\ndata_dir='/d'\n[notify]\nwebhook={url='https://x'}\n",
                &["notify.webhook: must be written as [[webhook]] sections, found table"],
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
        let dir = tempfile::tempdir().expect("temp dir");
        let gbk = dir.path().join("kiosk.toml");
        // "[kiosk]\noffice_name = '售楼处'" with the name in GBK.
        let mut bytes = b"[kiosk]\noffice_name = '".to_vec();
        bytes.extend_from_slice(&[0xCA, 0xDB, 0xC2, 0xA5, 0xB4, 0xA6]);
        bytes.extend_from_slice(b"'\n");
        std::fs::write(&gbk, bytes).expect("write");
        let err = Config::load(&gbk).expect_err("GBK file").to_string();
        assert!(
            err.contains("line 2: the file is not UTF-8 text; save it as UTF-8"),
            "{err}"
        );
    }
}
