//! `kiosk hub …`: run the hub, import its roster, issue kiosk and administrator tokens, prune its roster log.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use kiosk_config::HubConfig;
use kiosk_sync::auth;
use kiosk_sync::hub::store::{HubCustomer, HubStoreError, RosterImport};
use kiosk_sync::hub::{ADMIN_ID, Hub, HubDb};
use kiosk_sync::wire::{CardEntry, ConsultantEntry};
use tokio_util::sync::CancellationToken;

use crate::roster::{self, Roster};

#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Import a roster CSV into the hub (the kiosks' format, plus optional name and
    /// phone columns); all rows or none. Kiosks receive the changes on their next pull.
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
    let parsed = match roster::parse_csv(&bytes) {
        Ok(r) => r,
        Err(errors) => {
            for e in &errors {
                println!("{}: {e}", file.display());
            }
            anyhow::bail!("{} problem(s); nothing was imported", errors.len());
        }
    };
    let counts = db.import(hub_roster(&parsed)).await.map_err(|e| match e {
        HubStoreError::Conflict(c) => anyhow::anyhow!("{c}; nothing was imported"),
        other => other.into(),
    })?;
    println!(
        "imported into the hub: {} consultant(s), {} customer(s), {} card(s) changed; kiosks receive them on their next pull",
        counts.consultants, counts.customers, counts.cards
    );
    Ok(())
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
