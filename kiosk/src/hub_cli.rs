//! `kiosk hub …`: run the hub, import its roster, issue kiosk and administrator tokens, prune its roster log.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use kiosk_config::HubConfig;
use kiosk_sync::auth;
use kiosk_sync::hub::store::{HubCustomer, HubStoreError, RosterImport};
use kiosk_sync::hub::{ADMIN_ID, Hub, HubDb};
use kiosk_sync::wire::{CardEntry, ConsultantEntry, RegistrationEntry};
use tokio_util::sync::CancellationToken;

use crate::roster::{self, Roster, RowError};

#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Import a roster CSV into the hub (the kiosks' format, plus optional name, phone,
    /// source, last_follow_up and broker registration columns); all rows or none.
    /// Kiosks receive the changes on their next pull.
    Import { file: PathBuf },
    /// Kiosk tokens.
    Kiosks {
        #[command(subcommand)]
        command: KiosksCommand,
    },
    /// Make a new administrator token for the hub's /admin/v1 API, replacing the old one.
    AdminToken {
        /// Write the token to this file (mode 600) instead of printing it.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Drop roster log entries older than a duration now (the hub also does it hourly,
    /// by roster_retention); kiosks further behind take a snapshot.
    Prune {
        #[arg(long, default_value = "30d")]
        older_than: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KiosksCommand {
    /// Issue a kiosk's token; shown once, stored hashed.
    Add {
        id: String,
        /// The office the kiosk stands in (its kiosk.office).
        #[arg(long)]
        office: String,
        /// Write the token to this file (mode 600) instead of printing it.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// List kiosks with their high-water seq.
    List,
    /// Revoke a kiosk's token at once (its records stay).
    Revoke { id: String },
}

/// Runs `kiosk hub [COMMAND]` with the hub config at `config`.
pub fn run(config: &Path, command: Option<HubCommand>) -> anyhow::Result<()> {
    let cfg = HubConfig::load(config)?;
    let rt = crate::cli::runtime()?;
    let result = rt.block_on(async move {
        match command {
            None => serve(cfg).await,
            Some(command) => {
                let db = HubDb::open(&cfg.database).await.with_context(|| {
                    format!("cannot open the hub database ({})", redact(&cfg.database))
                })?;
                admin(&db, command).await
            }
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn serve(cfg: HubConfig) -> anyhow::Result<()> {
    let db = HubDb::open(&cfg.database)
        .await
        .with_context(|| format!("cannot open the hub database ({})", redact(&cfg.database)))?;
    let hub = Hub::build(
        cfg.listen,
        db,
        cfg.max_concurrent_uploads,
        cfg.roster_retention,
    )
    .await?;
    let addr = hub.local_addr()?;
    // One line on stdout, so scripts and tests can find the port.
    println!("hub listening on http://{addr}/");
    let _ = std::io::stdout().flush();
    tracing::info!(database = %redact(&cfg.database), "hub started");
    let cancel = CancellationToken::new();
    tokio::spawn(crate::cli::stop_on_signal(cancel.clone()));
    hub.run_until_stopped(cancel).await?;
    Ok(())
}

/// A database URL fit for logs: the password replaced, in the user part and in a
/// `password=` query parameter.
pub fn redact(url: &str) -> String {
    let mut shown = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    };
    if let Some(q) = shown.find('?') {
        let (base, query) = shown.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        shown = format!("{base}{}", query.join("&"));
    }
    shown
}

async fn admin(db: &HubDb, command: HubCommand) -> anyhow::Result<()> {
    match command {
        HubCommand::Import { file } => import(db, &file).await,
        HubCommand::Kiosks {
            command:
                KiosksCommand::Add {
                    id,
                    office,
                    token_file,
                },
        } => {
            for (what, value) in [("kiosk id", &id), ("office", &office)] {
                kiosk_config::Ident::parse(value).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
            }
            let token = auth::new_token();
            db.add_kiosk(&id, &office, &auth::hash(&token))
                .await
                .map_err(conflict_hint)?;
            hand_over(
                &token,
                token_file.as_deref(),
                &format!("kiosk {id}"),
                "put it in the token_file",
            )
        }
        HubCommand::Kiosks {
            command: KiosksCommand::List,
        } => {
            let kiosks = db.kiosks().await?;
            let kiosks: Vec<_> = kiosks.iter().filter(|k| k.id != ADMIN_ID).collect();
            if kiosks.is_empty() {
                println!("no kiosks yet; add one with `kiosk hub kiosks add ID --office OFFICE`");
            }
            for k in kiosks {
                println!(
                    "{}\toffice {}\thigh-water seq {}",
                    k.id, k.office_id, k.high_water
                );
            }
            Ok(())
        }
        HubCommand::Kiosks {
            command: KiosksCommand::Revoke { id },
        } => {
            db.revoke_kiosk(&id).await?;
            println!(
                "kiosk {id}'s token is revoked; its records stay. Issue a new one with `kiosk hub kiosks add`."
            );
            Ok(())
        }
        HubCommand::AdminToken { token_file } => {
            let token = auth::new_token();
            match db.revoke_kiosk(ADMIN_ID).await {
                Ok(()) | Err(HubStoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            db.add_kiosk(ADMIN_ID, "", &auth::hash(&token)).await?;
            hand_over(
                &token,
                token_file.as_deref(),
                "the hub's administrator",
                "put it in the token_file",
            )
        }
        HubCommand::Prune { older_than } => {
            let age = kiosk_config::parse_duration(&older_than)
                .map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
            let before = jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::try_from(age)?)
                .unwrap_or(jiff::Timestamp::MIN);
            let n = db.prune_roster_log(before).await?;
            println!(
                "dropped {n} roster log entr{}; kiosks behind them will take a snapshot",
                if n == 1 { "y" } else { "ies" }
            );
            Ok(())
        }
    }
}

fn conflict_hint(e: HubStoreError) -> anyhow::Error {
    match e {
        HubStoreError::Conflict(c) => anyhow::anyhow!("{c}: `kiosk hub kiosks revoke ID`"),
        other => other.into(),
    }
}

/// Shows a new token once, or writes it to a file only its owner can read.
/// `put_it` says where the token goes ("put it in the token_file").
pub(crate) fn hand_over(
    token: &str,
    file: Option<&Path>,
    whose: &str,
    put_it: &str,
) -> anyhow::Result<()> {
    match file {
        None => {
            println!("{token}");
            eprintln!(
                "This is {whose}'s token. It is shown once and stored only as a hash: {put_it} now."
            );
        }
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot write the token to {}", path.display()))?;
            // `mode` applies only to a new file: an existing one is narrowed too.
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .with_context(|| format!("cannot restrict {} to its owner", path.display()))?;
            writeln!(f, "{token}")
                .with_context(|| format!("cannot write the token to {}", path.display()))?;
            eprintln!("{whose}'s token is in {} (mode 600).", path.display());
        }
    }
    Ok(())
}

async fn import(db: &HubDb, file: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file)
        .with_context(|| format!("cannot read roster file {}", file.display()))?;
    let parsed = match parse_hub_csv(&bytes) {
        Ok(r) => r,
        Err(errors) => {
            for e in &errors {
                println!("{}: {e}", file.display());
            }
            anyhow::bail!("{} problem(s); nothing was imported", errors.len());
        }
    };
    let counts = db.import(parsed).await.map_err(|e| match e {
        HubStoreError::Conflict(c) => anyhow::anyhow!("{c}; nothing was imported"),
        other => other.into(),
    })?;
    println!(
        "imported into the hub: {} consultant(s), {} customer(s), {} card(s), {} registration(s) changed; kiosks receive them on their next pull",
        counts.consultants, counts.customers, counts.cards, counts.registrations
    );
    Ok(())
}

/// Columns only the hub's import takes, beside the kiosks' roster columns
/// (`roster::COLUMNS`). A customer's values must agree on each of their rows.
pub const HUB_COLUMNS: [&str; 5] = [
    "source",
    "last_follow_up",
    "broker_id",
    "registered_at",
    "expires_at",
];

/// What the hub-only columns say of one customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct HubFields {
    source: Option<String>,
    last_follow_up: Option<jiff::Timestamp>,
    /// A broker's registration (报备): broker id, registered at, expires at.
    registration: Option<(String, jiff::Timestamp, Option<jiff::Timestamp>)>,
}

/// A hub roster file as the hub stores it: the kiosks' columns are checked by
/// `roster::parse_csv` (the file with the hub-only columns taken out, every row on its
/// own line number), the hub-only ones here; every problem of both is reported by line.
pub fn parse_hub_csv(bytes: &[u8]) -> Result<RosterImport, Vec<RowError>> {
    // Excel's "CSV UTF-8" starts with a byte-order mark.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut rows = Vec::new();
    for record in reader.byte_records() {
        match record {
            Ok(r) => rows.push(r),
            // The kiosks' parser reads the same bytes and says what is wrong, by line.
            Err(_) => return roster::parse_csv(bytes).map(|r| hub_roster(&r)),
        }
    }
    let Some(header) = rows.first() else {
        return roster::parse_csv(bytes).map(|r| hub_roster(&r));
    };
    let name = |i: usize| String::from_utf8_lossy(&header[i]).to_lowercase();
    let mut errors = Vec::new();
    let mut hub = [None; HUB_COLUMNS.len()];
    for i in 0..header.len() {
        if let Some(c) = HUB_COLUMNS.iter().position(|h| *h == name(i)) {
            if hub[c].is_some() {
                errors.push(RowError {
                    line: 1,
                    message: format!("column {:?} appears twice; keep one", HUB_COLUMNS[c]),
                });
            }
            hub[c] = Some(i);
        }
    }
    let customer_column = (0..header.len()).find(|&i| name(i) == "customer_id");

    let kiosk_part = without_columns(&rows, &hub.iter().flatten().copied().collect::<Vec<_>>());
    let parsed = roster::parse_csv(&kiosk_part);
    if let Err(e) = &parsed {
        errors.extend(e.iter().cloned());
    }

    let mut fields: BTreeMap<String, (HubFields, u64)> = BTreeMap::new();
    for row in rows.iter().skip(1) {
        let line = row.position().map_or(0, csv::Position::line);
        let text = |column: Option<usize>| {
            column
                .and_then(|i| row.get(i))
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned()
        };
        let customer = text(customer_column);
        match hub_fields(&hub.map(text)) {
            Err(problems) => errors.extend(
                problems
                    .into_iter()
                    .map(|message| RowError { line, message }),
            ),
            // A row without a customer is reported by the kiosks' parser.
            Ok(_) if customer.is_empty() => {}
            Ok(f) => match fields.get(&customer) {
                Some((first, first_line)) if *first != f => errors.push(RowError {
                    line,
                    message: format!(
                        "customer {customer} has other source, last_follow_up or registration values on line {first_line}; give them alike on every row of the customer"
                    ),
                }),
                Some(_) => {}
                None => {
                    fields.insert(customer, (f, line));
                }
            },
        }
    }
    match parsed {
        Ok(roster) if errors.is_empty() => {
            let mut import = hub_roster(&roster);
            for c in &mut import.customers {
                if let Some((f, _)) = fields.get(&c.id) {
                    c.source = f.source.clone();
                    c.last_follow_up = f.last_follow_up;
                }
            }
            import.registrations = fields
                .iter()
                .filter_map(|(customer, (f, _))| {
                    let (broker, registered_at, expires_at) = f.registration.clone()?;
                    Some(RegistrationEntry {
                        customer_id: customer.clone(),
                        broker_id: broker,
                        registered_at,
                        expires_at,
                    })
                })
                .collect();
            Ok(import)
        }
        _ => {
            errors.sort_by_key(|e| e.line);
            Err(errors)
        }
    }
}

/// One row's hub-only columns (`HUB_COLUMNS` order, empty when absent), checked; each
/// problem names its column.
fn hub_fields(values: &[String; HUB_COLUMNS.len()]) -> Result<HubFields, Vec<String>> {
    let [source, follow_up, broker, registered, expires] = values;
    let mut problems = Vec::new();
    let mut time = |column: &str, text: &str| match text {
        "" => None,
        t => match t.parse::<jiff::Timestamp>() {
            Ok(t) => Some(t),
            Err(_) => {
                problems.push(format!(
                    "{column}: {t:?} is not a time; write RFC 3339 with its offset, e.g. 2026-11-23T10:00:00+08:00"
                ));
                None
            }
        },
    };
    let last_follow_up = time("last_follow_up", follow_up);
    let registered_at = time("registered_at", registered);
    let expires_at = time("expires_at", expires);
    let source = match source.to_lowercase().as_str() {
        "" => None,
        "outreach" | "拓客" => Some("outreach"),
        "phone" | "来电" => Some("phone"),
        "walk_in" | "walk-in" | "自访" => Some("walk_in"),
        "broker" | "渠道" => Some("broker"),
        other => {
            problems.push(format!(
                "source: {other:?} is not a source; write outreach, phone, walk_in or broker (拓客, 来电, 自访, 渠道)"
            ));
            None
        }
    };
    if broker.chars().count() > 64 || broker.chars().any(char::is_control) {
        problems.push("broker_id: the broker's id at the hub, at most 64 characters".into());
    }
    if broker.is_empty() != registered.is_empty() {
        problems.push(
            "broker_id and registered_at go together: fill both for a broker's registration, or leave both empty".into(),
        );
    }
    if !expires.is_empty() && broker.is_empty() {
        problems.push(
            "expires_at: only a registration expires; fill broker_id and registered_at too".into(),
        );
    }
    if let (Some(from), Some(to)) = (registered_at, expires_at)
        && to <= from
    {
        problems.push("expires_at: a registration expires after it was made; leave it empty for the default period".into());
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(HubFields {
        source: source.map(str::to_owned),
        last_follow_up,
        registration: registered_at.map(|at| (broker.clone(), at, expires_at)),
    })
}

/// `rows` written back as CSV without the `drop` columns, each row on the line it came
/// from, so that the kiosks' parser reports the file's own line numbers.
fn without_columns(rows: &[csv::ByteRecord], drop: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at_line = 1;
    for row in rows {
        let line = row.position().map_or(at_line, csv::Position::line);
        while at_line < line {
            out.push(b'\n');
            at_line += 1;
        }
        let kept: csv::ByteRecord = row
            .iter()
            .enumerate()
            .filter(|(i, _)| !drop.contains(i))
            .map(|(_, field)| field)
            .collect();
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        // Writing to a Vec cannot fail.
        let _ = writer.write_byte_record(&kept);
        let written = writer.into_inner().unwrap_or_default();
        at_line += written.iter().filter(|b| **b == b'\n').count() as u64;
        out.extend(written);
    }
    out
}

/// A parsed roster file as the hub stores it.
pub fn hub_roster(r: &Roster) -> RosterImport {
    RosterImport {
        consultants: r
            .consultants
            .iter()
            .map(|(id, name)| ConsultantEntry {
                id: id.clone(),
                name: name.clone(),
            })
            .collect(),
        customers: r
            .customers
            .values()
            .map(|c| HubCustomer {
                id: c.id.clone(),
                name: c.name.clone(),
                surname: c.surname.clone(),
                title: c.title.as_str().to_owned(),
                tier: c.tier.as_str().to_owned(),
                phone: c.phone.clone(),
                consultant_id: c.consultant_id.clone(),
                source: None,
                last_follow_up: None,
            })
            .collect(),
        cards: r
            .cards
            .iter()
            .map(|c| CardEntry {
                token: c.token.as_str().to_owned(),
                customer_id: c.customer_id.clone(),
                status: if c.active { "active" } else { "revoked" }.to_owned(),
                note: c.note.clone(),
                low24_only: c.low24_only,
            })
            .collect(),
        brokers: Vec::new(),
        registrations: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "card,customer_id,surname,title,tier,consultant_id,consultant_name,phone,source,last_follow_up,broker_id,registered_at,expires_at";

    #[test]
    fn hub_columns_reach_the_import() {
        let file = format!(
            "{HEADER}\n\
             nfc:04A1B2C3,C1,张,mr,gold,E1,李娜,13800000001,来电,2026-11-20T10:00:00+08:00,B1,2026-11-19T10:00:00+08:00,\n\
             nfc:04A2B2C3,C1,张,mr,gold,E1,李娜,13800000001,phone,2026-11-20T10:00:00+08:00,B1,2026-11-19T10:00:00+08:00,\n\
             nfc:04A3B2C3,C2,王,ms,normal,,,,,,,,\n"
        );
        let import = parse_hub_csv(file.as_bytes()).expect("a good file");
        let c1 = import.customers.iter().find(|c| c.id == "C1").expect("C1");
        assert_eq!(c1.source.as_deref(), Some("phone"), "来电 is phone");
        assert_eq!(
            c1.last_follow_up,
            Some("2026-11-20T02:00:00Z".parse().expect("time"))
        );
        assert_eq!(c1.phone.as_deref(), Some("13800000001"));
        let c2 = import.customers.iter().find(|c| c.id == "C2").expect("C2");
        assert_eq!((c2.source.as_deref(), c2.last_follow_up), (None, None));
        assert_eq!(
            import.registrations,
            vec![RegistrationEntry {
                customer_id: "C1".into(),
                broker_id: "B1".into(),
                registered_at: "2026-11-19T02:00:00Z".parse().expect("time"),
                expires_at: None,
            }]
        );
        assert_eq!(import.cards.len(), 3);

        // Without the hub columns, the kiosks' file imports as before.
        let plain = "card,customer_id,surname,title,tier\nnfc:04A1B2C3,C1,张,mr,gold\n";
        let import = parse_hub_csv(plain.as_bytes()).expect("a plain file");
        assert_eq!(import.customers[0].source, None);
        assert!(import.registrations.is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_its_line_and_column() {
        let file = format!(
            "\u{FEFF}{HEADER}\n\
             nfc:04A1B2C3,C1,张,mr,gold,,,,web,,,,\n\
             nfc:04A2B2C3,C2,张伟明,mr,gold,,,,,yesterday,,,\n\
             \"nfc:04A3B2C3\",C3,王,ms,normal,,,,,,B1,,\n\
             nfc:04A4B2C3,C4,王,ms,normal,,,,phone,,B1,2026-11-19T10:00:00+08:00,2026-11-18T10:00:00+08:00\n\
             nfc:04A5B2C3,C5,赵,ms,normal,,,,phone,,,,\n\
             nfc:04A6B2C3,C5,赵,ms,normal,,,,outreach,,,,\n"
        );
        let errors = parse_hub_csv(file.as_bytes()).expect_err("a bad file");
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let expect = [
            (2, "source: \"web\""),
            (3, "surname: \"张伟明\""),
            (3, "last_follow_up: \"yesterday\""),
            (4, "broker_id and registered_at go together"),
            (5, "expires_at: a registration expires after"),
            (7, "customer C5 has other source"),
        ];
        assert_eq!(errors.len(), expect.len(), "{shown:#?}");
        for (line, start) in expect {
            assert!(
                errors
                    .iter()
                    .any(|e| e.line == line && e.message.starts_with(start)),
                "line {line}: {start} in {shown:#?}"
            );
        }
        let sorted: Vec<u64> = errors.iter().map(|e| e.line).collect();
        assert!(sorted.is_sorted(), "{sorted:?}");

        let twice = "card,customer_id,surname,title,tier,source,SOURCE\n";
        let errors = parse_hub_csv(twice.as_bytes()).expect_err("a bad header");
        assert!(
            errors
                .iter()
                .any(|e| e.line == 1 && e.message.contains("appears twice")),
            "{errors:?}"
        );
    }

    #[tokio::test]
    async fn an_import_with_a_registration_of_an_unknown_broker_stores_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = HubDb::open(&format!("sqlite:{}", dir.path().join("hub.db").display()))
            .await
            .expect("open");
        let file = dir.path().join("roster.csv");
        std::fs::write(
            &file,
            format!(
                "{HEADER}\nnfc:04A1B2C3,C1,张,mr,gold,E1,李娜,13800000001,broker,,B1,2026-11-19T10:00:00+08:00,\n"
            ),
        )
        .expect("write");
        let error = import(&db, &file).await.expect_err("B1 is unknown");
        assert!(
            error.to_string().contains("broker \"B1\" does not exist"),
            "{error}"
        );
        assert_eq!(db.customer("C1").await.expect("read"), None);

        db.upsert_broker(kiosk_sync::wire::BrokerEntry {
            id: "B1".into(),
            name: "王芳".into(),
            company: None,
        })
        .await
        .expect("broker");
        import(&db, &file).await.expect("import");
        let c1 = db.customer("C1").await.expect("read").expect("stored");
        assert_eq!(c1.source.as_deref(), Some("broker"));
        let registration = db.registration("C1").await.expect("read").expect("stored");
        assert_eq!(registration.broker_id, "B1");
    }

    #[test]
    fn database_passwords_never_reach_the_log() {
        let table = [
            (
                "postgres://hub:s3cret@db:5432/hub",
                "postgres://hub:***@db:5432/hub",
            ),
            ("postgres://hub@db/hub", "postgres://hub@db/hub"),
            ("sqlite:/var/lib/hub.sqlite", "sqlite:/var/lib/hub.sqlite"),
            (
                "postgres://db/hub?user=hub&password=s3cret&sslmode=disable",
                "postgres://db/hub?user=hub&password=***&sslmode=disable",
            ),
        ];
        for (url, shown) in table {
            assert_eq!(redact(url), shown);
        }
    }
}
