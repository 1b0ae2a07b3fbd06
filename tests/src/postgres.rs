//! Throwaway PostgreSQL databases for tests: one fresh database per test, dropped at its end.
//!
//! The server is the one at `KIOSK_TEST_POSTGRES` (an admin URL whose role may create
//! databases), by default the local one `scripts/dev test` sets up. Each call makes a
//! database of its own, so tests run in parallel without seeing each other's rows.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::{Client, NoTls};

/// Where tests find PostgreSQL unless `KIOSK_TEST_POSTGRES` says otherwise.
pub const DEFAULT_ADMIN_URL: &str = "postgres://kiosk:kiosk@127.0.0.1:5432/postgres";

/// A database made for one test; dropped (connections and all) when this is.
#[derive(Debug)]
pub struct PgDatabase {
    /// e.g. `kiosk_e2e_4242_1718000000_3`
    pub name: String,
    /// The admin URL with this database's name: what a hub's `database` is set to.
    pub url: String,
    admin_url: String,
}

impl PgDatabase {
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The admin URL: `KIOSK_TEST_POSTGRES`, or [`DEFAULT_ADMIN_URL`].
pub fn admin_url() -> String {
    std::env::var("KIOSK_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// Creates a uniquely named empty database; panics, saying how to get one, when
/// PostgreSQL can't be reached.
///
/// Blocking, so it serves sync and async tests alike: the work runs on a thread
/// with its own runtime (a test's runtime can't be blocked on from inside).
pub fn fresh_database() -> PgDatabase {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let admin_url = admin_url();
    // pid and start time keep parallel test binaries, and databases a killed run
    // left behind, from colliding; the counter separates this process's own.
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = format!(
        "kiosk_e2e_{}_{started}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let url = with_database(&admin_url, &name);
    let statement = format!("CREATE DATABASE \"{name}\"");
    with_client(&admin_url, move |client| async move {
        client
            .batch_execute(&statement)
            .await
            .map_err(|e| format!("{statement}: {e}"))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    PgDatabase {
        name,
        url,
        admin_url,
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // FORCE ends the sessions a killed hub may have left open (PostgreSQL 13+), but
        // fails while autovacuum works in the database (after a bench stored a million
        // rows): a role without pg_signal_backend may not end that session. A plain DROP
        // ends autovacuum itself and fails only on other sessions, so the two take turns.
        let force = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let plain = format!("DROP DATABASE IF EXISTS \"{}\"", self.name);
        let mut dropped = Ok(());
        for attempt in 0..6 {
            if attempt >= 2 {
                std::thread::sleep(Duration::from_secs(1));
            }
            let statement = if attempt % 2 == 0 { &force } else { &plain }.clone();
            dropped = with_client(&self.admin_url, move |client| async move {
                client.batch_execute(&statement).await.map_err(|e| {
                    // The server's message: the error's Display is only "db error".
                    let why = e
                        .as_db_error()
                        .map_or_else(|| e.to_string(), |d| d.message().to_owned());
                    format!("{statement}: {why}")
                })
            });
            if dropped.is_ok() {
                return;
            }
        }
        // No panic here: it could abort a test that is already failing.
        if let Err(e) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// `url` with its database (the path) replaced by `name`; the query string is kept.
pub fn with_database(url: &str, name: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        panic!("{url:?} is not a postgres:// URL; set KIOSK_TEST_POSTGRES to one");
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest[authority_end..]
        .find('?')
        .map_or("", |i| &rest[authority_end + i..]);
    format!(
        "{}{}/{name}{query}",
        &url[..scheme_end],
        &rest[..authority_end]
    )
}

/// `url` fit for a message: the password replaced.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// Connects to `url` and runs `work` on a thread with its own runtime; an unreachable
/// server panics with what to do about it.
pub fn with_client<T, F, Fut>(url: &str, work: F) -> T
where
    T: Send,
    F: FnOnce(Client) -> Fut + Send,
    Fut: std::future::Future<Output = T>,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for PostgreSQL");
                rt.block_on(async {
                    let client = connect(url).await;
                    work(client).await
                })
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A client on `url`, its connection driven by a task of the current runtime.
pub async fn connect(url: &str) -> Client {
    let mut config: tokio_postgres::Config = url.parse().unwrap_or_else(|e| {
        panic!(
            "{} is not a PostgreSQL URL ({e}); set KIOSK_TEST_POSTGRES to one",
            redact(url)
        )
    });
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(NoTls).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {} ({e}): start it (scripts/dev test installs and starts it) or set KIOSK_TEST_POSTGRES",
            redact(url)
        )
    });
    // The connection ends when the client is dropped; its error then is no news.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_new_database_name() {
        let table = [
            (
                "postgres://kiosk:kiosk@127.0.0.1:5432/postgres",
                "postgres://kiosk:kiosk@127.0.0.1:5432/db1",
            ),
            (
                "postgres://kiosk@localhost/postgres?sslmode=disable",
                "postgres://kiosk@localhost/db1?sslmode=disable",
            ),
            ("postgresql://h:5433", "postgresql://h:5433/db1"),
            (
                "postgres://h?connect_timeout=3",
                "postgres://h/db1?connect_timeout=3",
            ),
        ];
        for (admin, want) in table {
            assert_eq!(with_database(admin, "db1"), want, "{admin}");
        }
        assert_eq!(
            redact("postgres://kiosk:s3cret@h/db"),
            "postgres://kiosk:***@h/db"
        );
    }

    #[tokio::test]
    async fn a_fresh_database_is_usable_and_dropped_afterwards() {
        // Blocking calls on purpose, from inside a runtime, as async tests will make them.
        let db = fresh_database();
        let other = fresh_database();
        assert_ne!(db.name, other.name);
        let client = connect(db.url()).await;
        client
            .batch_execute("CREATE TABLE t (n int); INSERT INTO t VALUES (42);")
            .await
            .expect("write to the fresh database");
        let n: i32 = client
            .query_one("SELECT n FROM t", &[])
            .await
            .expect("read it back")
            .get(0);
        assert_eq!(n, 42);
        // The session is still open: the drop must end it, not fail on it.
        let name = db.name.clone();
        drop(db);
        drop(other);
        let admin = connect(&admin_url()).await;
        let left = admin
            .query(
                "SELECT datname FROM pg_database WHERE datname = $1",
                &[&name],
            )
            .await
            .expect("list databases");
        assert!(left.is_empty(), "{name} is still there");
        assert!(client.is_closed() || client.simple_query("SELECT 1").await.is_err());
    }
}
