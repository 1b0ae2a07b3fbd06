//! The `kiosk` command line: parses arguments and runs one command.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kiosk_config::{Config, ConfigError};
use kiosk_device::CardToken;
use kiosk_device::fake::FakeReader;
use tokio_util::sync::CancellationToken;

use crate::app::{App, Extras};
use crate::devices::{DeviceName, DeviceRole};
use crate::roster;
use crate::store::{Identity, Store};
use kiosk_sync::hub::{Hub, HubDb};

/// The sample roster shipped with the project, used by `kiosk demo`.
pub const SAMPLE_ROSTER: &[u8] = include_bytes!("../../examples/roster.csv");

#[derive(Debug, Parser)]
#[command(
    name = "kiosk",
    version,
    about = "Reception kiosk for sales offices: card taps become visits and greetings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the kiosk daemon.
    Run {
        #[arg(long, short, env = "KIOSK_CONFIG", default_value = "kiosk.toml")]
        config: PathBuf,
    },
    /// Run a kiosk with a sample roster and a simulated reader (plus any real PC/SC reader).
    Demo {
        /// Where the screen is served.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Keep the demo's data here instead of a temporary folder.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Seconds between simulated taps.
        #[arg(long, default_value_t = 4)]
        every: u64,
    },
    /// Check a config file; prints every problem with its key path, exit 1 if any.
    CheckConfig { file: PathBuf },
    /// Manage the local roster.
    Roster {
        #[command(subcommand)]
        command: RosterCommand,
    },
    /// List the PC/SC readers and serial ports seen now.
    Readers,
    /// Handheld devices allowed to post visits (POST /api/v1/visits).
    Devices {
        #[arg(
            long,
            short,
            env = "KIOSK_CONFIG",
            default_value = "kiosk.toml",
            global = true
        )]
        config: PathBuf,
        #[command(subcommand)]
        command: DevicesCommand,
    },
    /// Run the hub (the central receiver), or manage it.
    Hub {
        #[arg(
            long,
            short,
            env = "KIOSK_HUB_CONFIG",
            default_value = "hub.toml",
            global = true
        )]
        config: PathBuf,
        #[command(subcommand)]
        command: Option<crate::hub_cli::HubCommand>,
    },
}

#[derive(Debug, Subcommand)]
enum RosterCommand {
    /// Import a roster CSV (see the README); all rows or none.
    Import {
        file: PathBuf,
        #[arg(long, short, env = "KIOSK_CONFIG", default_value = "kiosk.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// Issue a device's token; shown once, stored hashed.
    Add {
        /// 1 to 64 letters, digits, '-', '_' or '.'; visits show it as handheld:NAME.
        name: String,
        /// The consultant carrying the device (a roster consultant id).
        #[arg(long)]
        consultant: Option<String>,
        /// Write the token to this file (mode 600) instead of printing it.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// A staff device (the reception console, the manager's tablet): may also read
        /// visits and bind and revoke cards.
        #[arg(long)]
        staff: bool,
    },
    /// List devices (never their tokens).
    List,
    /// Revoke a device's token; a running kiosk refuses it from its next request.
    Revoke { name: String },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::CheckConfig { file } => return check_config(&file),
        Command::Roster {
            command: RosterCommand::Import { file, config },
        } => return import_roster(&config, &file),
        Command::Readers => readers(),
        Command::Devices { config, command } => devices(&config, command),
        Command::Hub { config, command } => crate::hub_cli::run(&config, command),
        Command::Run { config } => load(&config).and_then(|c| serve(c, Extras::default())),
        Command::Demo {
            listen,
            data_dir,
            every,
        } => demo(listen, data_dir, every),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiosk: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KIOSK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: journald and log files get plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

fn check_config(file: &Path) -> ExitCode {
    match Config::load(file) {
        Ok(cfg) => {
            println!(
                "{}: OK (kiosk {}, office {}, {} reader entr{})",
                file.display(),
                cfg.kiosk.id,
                cfg.kiosk.office,
                cfg.readers.len(),
                if cfg.readers.len() == 1 { "y" } else { "ies" }
            );
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid { path, problems }) => {
            for p in &problems {
                println!("{}: {p}", path.display());
            }
            eprintln!(
                "{} problem(s); fix them and run check-config again",
                problems.len()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("kiosk: {e}");
            ExitCode::FAILURE
        }
    }
}

fn import_roster(config: &Path, file: &Path) -> ExitCode {
    let run = || -> anyhow::Result<Result<String, Vec<roster::RowError>>> {
        let cfg = load(config)?;
        if let Some(sync) = &cfg.sync {
            // A snapshot from the hub would replace a local import without a word.
            anyhow::bail!(
                "this kiosk takes its roster from the hub at {}; import the file there with `kiosk hub import {}`",
                sync.hub,
                file.display()
            );
        }
        let bytes = std::fs::read(file)
            .with_context(|| format!("cannot read roster file {}", file.display()))?;
        let parsed = match roster::parse_csv(&bytes) {
            Ok(r) => r,
            Err(errors) => return Ok(Err(errors)),
        };
        let mut store = Store::open(&cfg.kiosk.data_dir, identity(&cfg))?;
        let s = store.import_roster(&parsed)?;
        // DEZ8 imports fine but is a weaker match; say so while the file is at hand.
        let dez8 = if s.dez8_cards == 0 {
            String::new()
        } else {
            format!(
                "; {} of them given as DEZ8, which matches by 24 bits only: where a card also prints DEZ10, use that, it is exact",
                s.dez8_cards
            )
        };
        Ok(Ok(format!(
            "imported {} card(s), {} customer(s), {} consultant(s), {} broker registration(s) into {}{dez8}",
            s.cards,
            s.customers,
            s.consultants,
            s.registrations,
            cfg.kiosk.data_dir.display()
        )))
    };
    match run() {
        Ok(Ok(summary)) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Ok(Err(errors)) => {
            for e in &errors {
                println!("{}: {e}", file.display());
            }
            eprintln!("{} problem(s); nothing was imported", errors.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("kiosk: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The sample roster's consultants on duty, so the demo's greetings name who receives;
/// a queue already saved (a demo run again on its `--data-dir`) is kept.
fn seed_demo_rotation(data_dir: &Path, identity: Identity) -> anyhow::Result<()> {
    let mut store = Store::open(data_dir, identity)?;
    let tx = store.conn_mut().transaction()?;
    if crate::rotation::load_rotation(&tx)?.is_empty() {
        let mut rotation = crate::reception::Rotation::new();
        for id in ["E01", "E02"] {
            rotation.check_in(id);
        }
        crate::rotation::save_rotation(&tx, &rotation)?;
    }
    tx.commit()?;
    Ok(())
}

fn identity(cfg: &Config) -> Identity {
    Identity {
        kiosk_id: cfg.kiosk.id.to_string(),
        office_id: cfg.kiosk.office.to_string(),
        time_zone: cfg.kiosk.time_zone.clone(),
    }
}

/// `kiosk devices …`, on the store directly like `roster import`: SQLite orders it
/// against a running daemon, which reads devices afresh on every request.
fn devices(config: &Path, command: DevicesCommand) -> anyhow::Result<()> {
    let cfg = load(config)?;
    let mut store = Store::open(&cfg.kiosk.data_dir, identity(&cfg))?;
    match command {
        DevicesCommand::Add {
            name,
            consultant,
            token_file,
            staff,
        } => {
            let name = DeviceName::parse(&name)?;
            let token = kiosk_sync::auth::new_token();
            let role = if staff {
                DeviceRole::Staff
            } else {
                DeviceRole::Handheld
            };
            store.add_device(
                &name,
                role,
                consultant.as_deref(),
                &kiosk_sync::auth::hash(&token),
            )?;
            crate::hub_cli::hand_over(
                &token,
                token_file.as_deref(),
                &format!("device {}", name.as_str()),
                "enter it on the handheld",
            )
        }
        DevicesCommand::List => {
            let devices = store.list_devices()?;
            if devices.is_empty() {
                println!("no devices yet; add one with `kiosk devices add NAME`");
            }
            for d in devices {
                println!(
                    "{}\t{}\tconsultant {}\tcreated {}\t{}",
                    d.name,
                    d.role.as_str(),
                    d.consultant_id.as_deref().unwrap_or("-"),
                    d.created_at,
                    match &d.revoked_at {
                        Some(at) => format!("revoked {at}"),
                        None => "active".to_owned(),
                    }
                );
            }
            Ok(())
        }
        DevicesCommand::Revoke { name } => {
            let name = DeviceName::parse(&name)?;
            store.revoke_device(&name)?;
            println!(
                "device {}'s token is revoked; its visits stay. Issue a new one with `kiosk devices add`.",
                name.as_str()
            );
            Ok(())
        }
    }
}

fn readers() -> anyhow::Result<()> {
    match kiosk_device::pcsc::list_readers() {
        Ok(names) if names.is_empty() => {
            println!("PC/SC: pcscd answers, but no reader is connected")
        }
        Ok(names) => {
            for n in names {
                println!("PC/SC: {n}");
            }
        }
        Err(e) => {
            println!("PC/SC: pcscd is not reachable ({e}); install and start it: apt install pcscd")
        }
    }
    let ports = kiosk_device::serial::list_ports();
    if ports.is_empty() {
        println!("serial: no USB serial port is plugged in (/dev/serial/by-id is empty)");
    }
    for port in ports {
        // by-id names survive replugging and reboots; ttyUSB numbers do not.
        match std::fs::canonicalize(&port) {
            Ok(target) if target != port => {
                println!("serial: {} -> {}", port.display(), target.display())
            }
            _ => println!("serial: {}", port.display()),
        }
    }
    Ok(())
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kiosk-rt")
        .build()
        .context("cannot start the async runtime")
}

/// Runs the daemon until SIGTERM or Ctrl-C.
fn serve(config: Config, extras: Extras) -> anyhow::Result<()> {
    let rt = runtime()?;
    let result = rt.block_on(serve_async(config, extras, None, None));
    // Never wait forever for a blocking task at exit: the daemon must stop.
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

/// The daemon on the current runtime. `demo_hub` is the demo's in-process hub, whose
/// address is printed with the screen's.
async fn serve_async(
    config: Config,
    extras: Extras,
    demo_hub: Option<std::net::SocketAddr>,
    demo_console_token: Option<String>,
) -> anyhow::Result<()> {
    let app = App::build(config, extras).await?;
    let addr = app.local_addr()?;
    // Printed on stdout, one line, so scripts and tests can find the port.
    println!("kiosk listening on http://{addr}/");
    if let Some(hub) = demo_hub {
        println!("Kiosk screen:  http://{addr}/");
        if let Some(token) = &demo_console_token {
            println!("Staff console: http://{addr}/console  (sign in with {token})");
        }
        println!("Status (JSON): http://{addr}/api/v1/status");
        println!("Visits (JSON): http://{addr}/api/v1/visits");
        println!("Metrics:       http://{addr}/metrics");
        println!(
            "Hub (in this process): http://{hub}/healthz; the kiosk pushes its visits there and pulls the roster from it."
        );
        println!("A simulated reader taps a sample card every few seconds. Ctrl-C stops.");
    }
    let _ = std::io::stdout().flush();
    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signal(cancel.clone()));
    app.run_until_stopped(cancel).await
}

pub(crate) async fn stop_on_signal(cancel: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; use Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received"),
        () = term => tracing::info!("SIGTERM received"),
        () = cancel.cancelled() => return,
    }
    cancel.cancel();
}

fn demo(listen: std::net::SocketAddr, data_dir: Option<PathBuf>, every: u64) -> anyhow::Result<()> {
    let temp;
    let data_dir = match data_dir {
        Some(d) => d,
        None => {
            temp = tempfile::Builder::new()
                .prefix("kiosk-demo-")
                .tempdir()
                .context("cannot create a temporary folder for the demo")?;
            temp.path().to_owned()
        }
    };
    let hub_dir = data_dir.join("hub");
    std::fs::create_dir_all(&hub_dir)
        .with_context(|| format!("cannot create {}", hub_dir.display()))?;
    let token_file = data_dir.join("hub.token");
    let roster = roster::parse_csv(SAMPLE_ROSTER)
        .map_err(|e| anyhow::anyhow!("sample roster is invalid: {e:?}"))?;
    let cards = [
        "nfc:04A1B2C3D4E5F6", // gold member 张先生
        "nfc:04112233445566", // silver member 王女士
        "nfc:04C0FFEE000001", // unknown card
        "nfc:04DEADBEEF0001", // revoked card
        "nfc:08A1B2C3",       // a phone: random UID
        "nfc:04AABBCCDD0011", // 欧阳女士
        "nfc:04A1B2C3D4E5F6", // 张先生 again: greeted, same visit
    ]
    .iter()
    .map(|t| CardToken::parse(t))
    .collect::<Result<Vec<_>, _>>()?;
    let extras = Extras {
        simulated: Some(FakeReader {
            name: "Simulated reader".into(),
            cards,
            every: Duration::from_secs(every.max(1)),
        }),
    };
    let rt = runtime()?;
    let result = rt.block_on(async move {
        // The hub, in this process: the sample roster goes in there and reaches the
        // kiosk by sync, as it would in an office.
        let db = HubDb::open(&format!("sqlite:{}", hub_dir.join("hub.sqlite").display())).await?;
        db.import(crate::hub_cli::hub_roster(&roster)).await?;
        if db.kiosk("demo").await?.is_none() {
            let token = kiosk_sync::auth::new_token();
            db.add_kiosk("demo", "demo-office", &kiosk_sync::auth::hash(&token))
                .await?;
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&token_file)
                .and_then(|mut f| writeln!(f, "{token}"))
                .with_context(|| format!("cannot write {}", token_file.display()))?;
        }
        let hub = Hub::build(
            "127.0.0.1:0".parse()?,
            db,
            kiosk_config::DEFAULT_MAX_CONCURRENT_UPLOADS,
            kiosk_config::DEFAULT_ROSTER_RETENTION,
        )
        .await?;
        let hub_addr = hub.local_addr()?;
        let text = format!(
            "[kiosk]\nid = \"demo\"\noffice = \"demo-office\"\noffice_name = \"滨江壹号 售楼处 · Demo\"\n\
             time_zone = \"Asia/Shanghai\"\ndata_dir = {:?}\nlisten = \"{listen}\"\n\n\
             [sync]\nhub = \"http://{hub_addr}\"\ntoken_file = {:?}\ninitial_delay = \"0s\"\npull_interval = \"5s\"\n",
            data_dir.display().to_string(),
            token_file.display().to_string(),
        );
        let config = Config::parse(&text, Path::new("."))
            .map_err(|p| anyhow::anyhow!("demo config is invalid: {p:?}"))?;
        let (kiosk_dir, kiosk_identity) = (config.kiosk.data_dir.clone(), identity(&config));
        tokio::task::spawn_blocking(move || seed_demo_rotation(&kiosk_dir, kiosk_identity))
            .await
            .context("the demo's rotation task failed")??;
        let hub_stop = CancellationToken::new();
        let hub_task = tokio::spawn(hub.run_until_stopped(hub_stop.clone()));
        // A staff device for the console, new at every start: its token is printed
        // beside the console's URL (this is a local demo, not a deployment).
        let console_token = kiosk_sync::auth::new_token();
        let (dir, hash, tz) = (
            config.kiosk.data_dir.clone(),
            kiosk_sync::auth::hash(&console_token),
            config.kiosk.time_zone.clone(),
        );
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let identity = Identity {
                kiosk_id: "demo".into(),
                office_id: "demo-office".into(),
                time_zone: tz,
            };
            let mut store = Store::open(&dir, identity)?;
            store.add_device(
                &DeviceName::parse("demo-console")?,
                DeviceRole::Staff,
                None,
                &hash,
            )?;
            Ok(())
        })
        .await??;
        let result = serve_async(config, extras, Some(hub_addr), Some(console_token)).await;
        hub_stop.cancel();
        let _ = hub_task.await;
        result
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}
