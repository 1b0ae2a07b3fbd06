//! A real hub on a free local port for the crate's HTTP tests: a SQLite store in a temp dir, one kiosk and an administrator, stopped by its own token.
//!
//! Shared by the hub's server tests and the client's tests, so both talk to the hub
//! that `kiosk hub` runs (or, for a busy hub, to the same router with no upload permits).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth;
use crate::hub::{ADMIN_ID, Hub, HubDb, HubError, HubState, KIOSK_HEADER, router};
use crate::wire::{
    Method, Outcome, PROTOCOL_HEADER, PROTOCOL_VERSION, Record, VisitKind, VisitRecord,
};

/// The kiosk every test hub knows.
pub(crate) const KIOSK: &str = "k1";
/// Its office.
pub(crate) const OFFICE: &str = "o1";
/// Uploads a test hub serves at once. One, so that tests which push one batch after
/// another also show the permit is given back after each upload.
const UPLOADS: usize = 1;
/// Long enough that the hub's own prune loop never drops what a test wrote.
const RETENTION: Duration = Duration::from_secs(30 * 86_400);
/// How long `eventually` waits: generous, as two shared cores may be busy compiling.
const PATIENCE: Duration = Duration::from_secs(30);

/// A hub serving on 127.0.0.1, with its store and credentials at hand.
#[derive(Debug)]
pub(crate) struct TestHub {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    /// The store the hub serves, for arranging a case and checking what it stored.
    pub db: HubDb,
    /// The token of [`KIOSK`].
    pub kiosk_token: String,
    /// The administrator's token (the `~admin` row).
    pub admin_token: String,
    pub http: reqwest::Client,
    addr: SocketAddr,
    cancel: CancellationToken,
    server: Option<JoinHandle<Result<(), HubError>>>,
    /// Held for its `Drop`: the database goes when the test ends.
    _dir: tempfile::TempDir,
}

impl TestHub {
    /// A hub as `kiosk hub` runs it.
    pub async fn spawn() -> TestHub {
        let mut hub = TestHub::unstarted().await;
        hub.serve(false).await;
        hub
    }

    /// A hub that turns every upload away with 503, as one at its upload limit does.
    pub async fn spawn_busy() -> TestHub {
        let mut hub = TestHub::unstarted().await;
        hub.serve(true).await;
        hub
    }

    async fn unstarted() -> TestHub {
        // reqwest is built without a default crypto provider; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let db = HubDb::open(&format!("sqlite:{}", dir.path().join("hub.db").display()))
            .await
            .expect("open the hub's SQLite store");
        let kiosk_token = auth::new_token();
        let admin_token = auth::new_token();
        db.add_kiosk(KIOSK, OFFICE, &auth::hash(&kiosk_token))
            .await
            .expect("add the kiosk");
        db.add_kiosk(ADMIN_ID, "", &auth::hash(&admin_token))
            .await
            .expect("add the administrator");
        TestHub {
            url: String::new(),
            db,
            kiosk_token,
            admin_token,
            http: reqwest::Client::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            cancel: CancellationToken::new(),
            server: None,
            _dir: dir,
        }
    }

    /// Starts serving on this hub's port (a free one the first time); `busy` serves
    /// the router with no upload permits.
    async fn serve(&mut self, busy: bool) {
        self.cancel = CancellationToken::new();
        let cancel = self.cancel.clone();
        let server = if busy {
            let listener = TcpListener::bind(self.addr).await.expect("bind");
            self.addr = listener.local_addr().expect("local address");
            let app = router(HubState::new(self.db.clone(), 0));
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(cancel.cancelled_owned())
                    .await
                    .map_err(HubError::Serve)
            })
        } else {
            let hub = Hub::build(self.addr, self.db.clone(), UPLOADS, RETENTION)
                .await
                .expect("build the hub");
            self.addr = hub.local_addr().expect("local address");
            tokio::spawn(hub.run_until_stopped(cancel))
        };
        self.server = Some(server);
        self.url = format!("http://{}", self.addr);
    }

    /// Stops serving and serves again on the same port, now as an open hub: a busy
    /// hub that frees up, as far as a kiosk can tell.
    pub async fn reopen(&mut self) {
        self.stop().await;
        self.serve(false).await;
    }

    /// Stops serving; the server must end without an error.
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("the hub's task")
                .expect("the hub stopped cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A request as the kiosk's client makes it: its id, token and protocol version.
    pub fn as_kiosk(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header(KIOSK_HEADER, KIOSK)
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION)
            .bearer_auth(&self.kiosk_token)
    }

    /// A request with the administrator's token.
    pub fn as_admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.admin_token)
    }

    /// The seqs of what the hub stored for [`KIOSK`], in order.
    pub async fn stored_seqs(&self) -> Vec<u64> {
        self.db
            .records(KIOSK, 0, 10_000)
            .await
            .expect("read the hub's records")
            .iter()
            .map(|r| r.seq)
            .collect()
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        // A test that panicked never called `stop`; the server must not outlive it.
        self.cancel.cancel();
    }
}

/// A welcome visit of `kiosk` in [`OFFICE`].
pub(crate) fn visit(kiosk: &str, seq: u64) -> VisitRecord {
    VisitRecord {
        id: Uuid::now_v7(),
        kiosk_id: kiosk.into(),
        office_id: OFFICE.into(),
        seq,
        source: "ACS ACR122U 00 00".into(),
        method: Method::Nfc,
        card: Some("nfc:04A1B2C3".into()),
        customer_id: Some("C1".into()),
        outcome: Outcome::Welcome,
        reason: None,
        kind: Some(VisitKind::Revisit),
        consultant_id: Some("E1".into()),
        stand_in: false,
        device_time: "2026-11-23T01:59:59.5Z".parse().expect("time"),
        recorded_at: "2026-11-23T01:59:59.501Z".parse().expect("time"),
        office_day: Some("2026-11-23".into()),
        broker_id: None,
        stand_in_for: None,
        public_pool: false,
    }
}

/// A visit as one NDJSON line of an upload.
pub(crate) fn visit_line(kiosk: &str, seq: u64) -> String {
    serde_json::to_string(&Record::Visit(visit(kiosk, seq))).expect("serialize a visit")
}

/// Waits until `check` holds, polling; panics naming `what` after [`PATIENCE`].
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {PATIENCE:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
