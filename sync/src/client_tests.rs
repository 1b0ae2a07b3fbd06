//! The kiosk's sync loops against a real hub over HTTP, with an in-memory kiosk store: draining, refused tokens, a busy or absent hub, snapshots and pages.
//!
//! The store is a fake (the kiosk crate tests the real one); the HTTP and the hub are
//! real, so what is checked here is how the loops read the hub's answers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientConfig, FrozenBatch, KioskSide, SideError, SyncClient, SyncReport};
use crate::test_hub::{KIOSK, TestHub, eventually, visit_line};
use crate::wire::{
    self, BatchReply, ConsultantEntry, Entity, ItemStatus, RosterEntry, RosterOp, RosterPage,
};

// --- the fake store ---

/// The kiosk's store as the loops see it, in memory; every call is checked against
/// the contract of [`KioskSide`] and counted.
#[derive(Debug, Default)]
struct FakeSide(Mutex<Fake>);

#[derive(Debug, Default)]
struct Fake {
    /// The outbox, in seq order.
    outbox: Vec<Row>,
    frozen: Option<FrozenBatch>,
    batches_frozen: i64,
    /// How many rows each frozen batch held, in order.
    frozen_sizes: Vec<u32>,
    /// When each push attempt asked for its batch.
    asked: Vec<Instant>,
    /// The hub's answers applied, in order.
    settled: Vec<BatchReply>,
    discarded: u32,
    cursor: Option<u64>,
    roster: BTreeMap<(Entity, String), RosterEntry>,
    snapshots: u32,
    /// Pages applied that carried changes.
    pages: Vec<RosterPage>,
}

#[derive(Debug)]
struct Row {
    seq: u64,
    line: String,
    sent: bool,
}

impl FakeSide {
    /// A kiosk with visits `1..=n` waiting in its outbox.
    fn with_visits(n: u64) -> FakeSide {
        let side = FakeSide::default();
        side.lock().outbox = (1..=n)
            .map(|seq| Row {
                seq,
                line: visit_line(KIOSK, seq),
                sent: false,
            })
            .collect();
        side
    }

    fn lock(&self) -> MutexGuard<'_, Fake> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn unsent(&self) -> usize {
        self.lock().outbox.iter().filter(|r| !r.sent).count()
    }

    fn drained(&self) -> bool {
        let fake = self.lock();
        fake.frozen.is_none() && fake.outbox.iter().all(|r| r.sent)
    }
}

impl KioskSide for FakeSide {
    async fn next_batch(
        &self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<FrozenBatch>, SideError> {
        let mut fake = self.lock();
        fake.asked.push(Instant::now());
        if let Some(frozen) = &fake.frozen {
            return Ok(Some(frozen.clone()));
        }
        let mut rows = Vec::new();
        let mut bytes = 0;
        for row in fake.outbox.iter().filter(|r| !r.sent) {
            if !rows.is_empty() && (rows.len() == max_records || bytes + row.line.len() > max_bytes)
            {
                break;
            }
            bytes += row.line.len();
            rows.push(row);
        }
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(None);
        };
        let batch = FrozenBatch {
            id: fake.batches_frozen + 1,
            first_seq: first.seq,
            last_seq: last.seq,
            records: u32::try_from(rows.len()).expect("a small batch"),
            body: wire::gzip_lines(rows.iter().map(|r| r.line.as_str())),
        };
        fake.batches_frozen += 1;
        fake.frozen_sizes.push(batch.records);
        fake.frozen = Some(batch.clone());
        Ok(Some(batch))
    }

    async fn settle(
        &self,
        batch: &FrozenBatch,
        reply: &BatchReply,
        _at: jiff::Timestamp,
    ) -> Result<(), SideError> {
        let mut fake = self.lock();
        assert_eq!(
            fake.frozen.as_ref(),
            Some(batch),
            "settles the frozen batch"
        );
        let hw = reply.high_water;
        for row in &mut fake.outbox {
            if (batch.first_seq..=batch.last_seq.min(hw)).contains(&row.seq) {
                row.sent = true;
            }
            // The hub lacks rows marked sent before: they go again.
            if hw < batch.first_seq.saturating_sub(1) && row.seq > hw {
                row.sent = false;
            }
        }
        fake.frozen = None;
        fake.settled.push(reply.clone());
        Ok(())
    }

    async fn discard_batch(&self, batch: &FrozenBatch) -> Result<(), SideError> {
        let mut fake = self.lock();
        assert_eq!(
            fake.frozen.as_ref(),
            Some(batch),
            "discards the frozen batch"
        );
        fake.frozen = None;
        fake.discarded += 1;
        Ok(())
    }

    async fn roster_cursor(&self) -> Result<Option<u64>, SideError> {
        Ok(self.lock().cursor)
    }

    async fn apply_roster_page(
        &self,
        page: RosterPage,
        _at: jiff::Timestamp,
    ) -> Result<(), SideError> {
        let mut fake = self.lock();
        for change in &page.changes {
            match &change.op {
                RosterOp::Upsert { entry } => {
                    fake.roster
                        .insert((entry.entity(), entry.key().to_owned()), entry.clone());
                }
                RosterOp::Delete { entity, key } => {
                    fake.roster.remove(&(*entity, key.clone()));
                }
            }
        }
        fake.cursor = Some(page.next);
        if !page.changes.is_empty() {
            fake.pages.push(page);
        }
        Ok(())
    }

    async fn replace_roster(&self, path: &Path, _at: jiff::Timestamp) -> Result<u64, SideError> {
        let path = path.to_owned();
        // Read off the async threads, as the kiosk's store does.
        let (head, roster) = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path).map_err(|e| SideError(e.to_string()))?;
            let mut roster = BTreeMap::new();
            let head = wire::read_snapshot(file, |entry| {
                roster.insert((entry.entity(), entry.key().to_owned()), entry);
                Ok(())
            })
            .map_err(SideError)?;
            Ok::<_, SideError>((head, roster))
        })
        .await
        .map_err(|e| SideError(e.to_string()))??;
        let mut fake = self.lock();
        fake.roster = roster;
        fake.cursor = Some(head.cursor);
        fake.snapshots += 1;
        Ok(head.cursor)
    }
}

// --- a kiosk's client ---

/// A sync client with its loops running against `hub`.
struct Kiosk {
    side: Arc<FakeSide>,
    client: SyncClient<FakeSide>,
    token_file: PathBuf,
    cancel: CancellationToken,
    loops: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// Which loops a test runs.
#[derive(Debug, Clone, Copy)]
enum Loops {
    Push,
    Pull,
    Both,
}

impl Kiosk {
    /// Starts the client; `token` is written to its token file, none leaves it absent.
    fn start(hub_url: &str, token: Option<&str>, side: FakeSide, loops: Loops) -> Kiosk {
        let dir = tempfile::tempdir().expect("temp dir");
        let token_file = dir.path().join("kiosk.token");
        let cfg = ClientConfig {
            hub: hub_url.to_owned(),
            kiosk_id: KIOSK.into(),
            token_file: token_file.clone(),
            ca_file: None,
            push_interval: Duration::from_millis(100),
            pull_interval: Duration::from_millis(100),
            // Small, so a few dozen rows take several batches.
            batch_size: 10,
            backoff_cap: Duration::from_secs(1),
            initial_delay: Duration::ZERO,
            spool_dir: dir.path().to_owned(),
        };
        let side = Arc::new(side);
        let client = SyncClient::new(cfg, side.clone()).expect("a sync client");
        let mut kiosk = Kiosk {
            side,
            client,
            token_file,
            cancel: CancellationToken::new(),
            loops: Vec::new(),
            _dir: dir,
        };
        if let Some(token) = token {
            kiosk.write_token(token);
        }
        if matches!(loops, Loops::Push | Loops::Both) {
            let push = kiosk.client.clone().run_push(kiosk.cancel.clone());
            kiosk.loops.push(tokio::spawn(push));
        }
        if matches!(loops, Loops::Pull | Loops::Both) {
            let pull = kiosk.client.clone().run_pull(kiosk.cancel.clone());
            kiosk.loops.push(tokio::spawn(pull));
        }
        kiosk
    }

    /// Replaces the token file whole, so the client never reads half a token.
    fn write_token(&self, token: &str) {
        let fresh = self.token_file.with_extension("new");
        std::fs::write(&fresh, token).expect("write the token");
        std::fs::rename(&fresh, &self.token_file).expect("replace the token file");
    }

    fn report(&self) -> SyncReport {
        self.client.status().report()
    }

    /// Cancels the loops and waits for them; they must end, not panic.
    async fn stop(self) {
        self.cancel.cancel();
        for task in self.loops {
            task.await.expect("a sync loop ended cleanly");
        }
    }
}

/// Waits until `kiosk`'s report satisfies `check`.
async fn report_shows(kiosk: &Kiosk, what: &str, check: impl Fn(&SyncReport) -> bool) {
    eventually(what, || async { check(&kiosk.report()) }).await;
}

async fn drained(kiosk: &Kiosk) {
    eventually("the outbox drained", || async { kiosk.side.drained() }).await;
}

fn consultant(id: &str) -> ConsultantEntry {
    ConsultantEntry {
        id: id.into(),
        name: "李娜".into(),
    }
}

fn roster_keys(side: &FakeSide) -> Vec<String> {
    side.lock()
        .roster
        .keys()
        .map(|(entity, key)| format!("{} {key}", entity.as_str()))
        .collect()
}

/// The hub's latest roster cursor.
async fn hub_cursor(hub: &TestHub) -> u64 {
    hub.db
        .roster_changes(0, 10_000)
        .await
        .expect("read the log")
        .map_or_else(|expired| expired.oldest, |page| page.next)
}

// --- push ---

#[tokio::test]
async fn push_drains_the_outbox_to_the_hub_exactly_once() {
    let mut hub = TestHub::spawn().await;
    let kiosk = Kiosk::start(
        &hub.url,
        Some(&hub.kiosk_token),
        FakeSide::with_visits(25),
        Loops::Push,
    );
    drained(&kiosk).await;

    assert_eq!(hub.stored_seqs().await, (1..=25).collect::<Vec<_>>());
    assert!(hub.db.rejects(KIOSK).await.expect("rejects").is_empty());
    {
        let fake = kiosk.side.lock();
        assert_eq!(
            fake.settled
                .iter()
                .map(|r| r.items.len())
                .collect::<Vec<_>>(),
            vec![10, 10, 5],
            "batches of batch_size"
        );
        assert!(
            fake.settled
                .iter()
                .flat_map(|r| &r.items)
                .all(|i| i.status == ItemStatus::Inserted),
            "nothing sent twice: {:?}",
            fake.settled
        );
        assert_eq!(fake.settled.last().map(|r| r.high_water), Some(25));
        assert_eq!(fake.discarded, 0);
    }
    let report = kiosk.report();
    assert_eq!(report.hub_reachable, Some(true));
    assert!(report.last_push_ok.is_some());
    assert!(!report.auth_refused);
    assert_eq!(report.last_error, None);
    assert_eq!(report.push_failures, 0);
    assert_eq!(report.records_pushed, 25);

    kiosk.stop().await;
    hub.stop().await;
}

#[tokio::test]
async fn a_refused_token_is_never_counted_and_a_fixed_token_file_drains_the_queue() {
    let mut hub = TestHub::spawn().await;
    hub.db
        .upsert_consultant(consultant("E1"))
        .await
        .expect("add");
    let kiosk = Kiosk::start(&hub.url, None, FakeSide::with_visits(5), Loops::Both);

    // No token file: nothing can be sent, and the hub was not asked.
    report_shows(&kiosk, "the missing token file reported", |r| {
        r.auth_refused
            && r.last_error
                .as_deref()
                .is_some_and(|e| e.contains("token_file"))
    })
    .await;
    let report = kiosk.report();
    assert_eq!(report.hub_reachable, None, "the hub was never asked");
    assert_eq!((report.push_failures, report.pull_failures), (0, 0));

    // A wrong token: the hub refuses it, again and again, and nothing is counted.
    kiosk.write_token(&crate::auth::new_token());
    let asked = kiosk.side.lock().asked.len();
    report_shows(&kiosk, "the hub's refusal reported", |r| {
        r.last_error
            .as_deref()
            .is_some_and(|e| e.contains("refused this kiosk's token"))
    })
    .await;
    eventually("three more refused pushes", || async {
        kiosk.side.lock().asked.len() >= asked + 3
    })
    .await;
    let report = kiosk.report();
    assert!(report.auth_refused);
    assert_eq!(report.hub_reachable, Some(true), "the hub answered");
    assert_eq!((report.push_failures, report.pull_failures), (0, 0));
    {
        let fake = kiosk.side.lock();
        assert!(fake.settled.is_empty() && fake.discarded == 0, "{fake:?}");
        assert_eq!(fake.snapshots, 0);
    }
    assert_eq!(kiosk.side.unsent(), 5, "nothing dropped");
    assert!(hub.stored_seqs().await.is_empty());

    // The right token, written while the client runs, is read on the next attempt.
    kiosk.write_token(&hub.kiosk_token);
    drained(&kiosk).await;
    eventually("the roster pulled", || async {
        kiosk.side.lock().snapshots == 1
    })
    .await;
    assert_eq!(hub.stored_seqs().await, vec![1, 2, 3, 4, 5]);
    assert_eq!(roster_keys(&kiosk.side), vec!["consultant E1"]);
    assert_eq!(kiosk.side.lock().discarded, 0);
    let report = kiosk.report();
    assert!(!report.auth_refused);
    assert_eq!(report.push_failures, 0);

    kiosk.stop().await;
    hub.stop().await;
}

#[tokio::test]
async fn a_busy_hub_is_waited_for_and_nothing_is_dropped() {
    let mut hub = TestHub::spawn_busy().await;
    let kiosk = Kiosk::start(
        &hub.url,
        Some(&hub.kiosk_token),
        FakeSide::with_visits(5),
        Loops::Push,
    );
    report_shows(&kiosk, "two uploads turned away", |r| r.push_failures >= 2).await;

    let report = kiosk.report();
    assert_eq!(report.hub_reachable, Some(true), "a busy hub is reachable");
    assert!(!report.auth_refused);
    assert!(
        report
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("busy")),
        "{report:?}"
    );
    {
        let fake = kiosk.side.lock();
        assert!(fake.settled.is_empty() && fake.discarded == 0, "{fake:?}");
        assert_eq!(fake.batches_frozen, 1, "every retry sends the same batch");
        // The hub says to come back after 1 to 5 s; the client's backoff_cap (1 s)
        // shortens that to 1 s: the wait it chose, not a measured time.
    }
    let report = kiosk.report();
    assert_eq!(report.retry_in_ms, Some(1000), "{report:?}");
    assert_eq!(kiosk.side.unsent(), 5);
    assert!(hub.stored_seqs().await.is_empty());

    // Once the hub takes uploads again, everything arrives, once.
    hub.reopen().await;
    drained(&kiosk).await;
    assert_eq!(hub.stored_seqs().await, vec![1, 2, 3, 4, 5]);
    assert_eq!(kiosk.side.lock().discarded, 0);
    report_shows(&kiosk, "the push reported", |r| {
        r.push_failures == 0 && r.last_push_ok.is_some()
    })
    .await;

    kiosk.stop().await;
    hub.stop().await;
}

#[tokio::test]
async fn an_unreachable_hub_is_reported_and_counted() {
    // A port bound but not listening: connections to it are refused, and while the
    // socket is held no other test's hub can be given that port.
    let held = tokio::net::TcpSocket::new_v4().expect("a socket");
    held.bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let closed = held.local_addr().expect("address");
    let kiosk = Kiosk::start(
        &format!("http://{closed}"),
        Some(&crate::auth::new_token()),
        FakeSide::with_visits(3),
        Loops::Both,
    );
    report_shows(&kiosk, "failures counted on both loops", |r| {
        r.push_failures >= 2 && r.pull_failures >= 2
    })
    .await;

    let report = kiosk.report();
    assert_eq!(report.hub_reachable, Some(false));
    assert!(!report.auth_refused);
    assert!(
        report
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot reach the hub")),
        "{report:?}"
    );
    assert_eq!((report.last_push_ok, report.last_pull_ok), (None, None));
    {
        let fake = kiosk.side.lock();
        assert!(fake.settled.is_empty() && fake.discarded == 0, "{fake:?}");
        assert_eq!(fake.snapshots, 0);
    }
    assert_eq!(kiosk.side.unsent(), 3);

    kiosk.stop().await;
}

#[tokio::test]
async fn batches_refused_as_too_large_are_halved_and_a_single_record_backs_off() {
    // A proxy in front of the hub whose upload limit is below even one record: the
    // 413 comes as its plain text, not the hub's JSON.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let cancel = CancellationToken::new();
    let proxy = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "413 Request Entity Too Large",
        )
    });
    let server = tokio::spawn(
        axum::serve(listener, proxy)
            .with_graceful_shutdown(cancel.clone().cancelled_owned())
            .into_future(),
    );
    let kiosk = Kiosk::start(
        &url,
        Some(&crate::auth::new_token()),
        FakeSide::with_visits(10),
        Loops::Push,
    );
    report_shows(&kiosk, "refusals of a single record counted", |r| {
        r.push_failures >= 2
    })
    .await;

    let report = kiosk.report();
    assert!(
        report
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("too large")),
        "{report:?}"
    );
    assert_eq!(report.hub_reachable, Some(true));
    {
        let fake = kiosk.side.lock();
        assert_eq!(
            fake.frozen_sizes[..5],
            [10, 5, 2, 1, 1],
            "halved down to one record"
        );
        assert!(fake.settled.is_empty(), "{fake:?}");
    }
    assert_eq!(kiosk.side.unsent(), 10, "nothing dropped");

    kiosk.stop().await;
    cancel.cancel();
    server
        .await
        .expect("the proxy's task")
        .expect("the proxy stopped cleanly");
}

// --- pull ---

#[tokio::test]
async fn a_pull_without_a_cursor_takes_a_snapshot_then_pages() {
    let mut hub = TestHub::spawn().await;
    hub.db
        .upsert_consultant(consultant("E1"))
        .await
        .expect("add");
    let put = hub
        .as_admin(reqwest::Method::PUT, "/admin/v1/customers/C1")
        .json(&serde_json::json!({"surname": "张", "title": "mr", "tier": "gold", "consultant_id": "E1"}))
        .send()
        .await
        .expect("add a customer");
    assert!(put.status().is_success());
    let put = hub
        .as_admin(reqwest::Method::PUT, "/admin/v1/cards/nfc:04A1B2C3")
        .json(&serde_json::json!({"customer_id": "C1"}))
        .send()
        .await
        .expect("add a card");
    assert!(put.status().is_success());
    let at_snapshot = hub_cursor(&hub).await;

    let kiosk = Kiosk::start(
        &hub.url,
        Some(&hub.kiosk_token),
        FakeSide::default(),
        Loops::Pull,
    );
    eventually("the snapshot applied", || async {
        kiosk.side.lock().cursor == Some(at_snapshot)
    })
    .await;
    assert_eq!(
        roster_keys(&kiosk.side),
        vec!["consultant E1", "customer C1", "card nfc:04A1B2C3"]
    );

    // Later changes arrive as pages, tombstones included.
    hub.db
        .upsert_consultant(consultant("E2"))
        .await
        .expect("add");
    hub.db
        .delete(Entity::Card, "nfc:04A1B2C3")
        .await
        .expect("delete");
    let latest = hub_cursor(&hub).await;
    eventually("the changes paged in", || async {
        kiosk.side.lock().cursor == Some(latest)
    })
    .await;
    assert_eq!(
        roster_keys(&kiosk.side),
        vec!["consultant E1", "consultant E2", "customer C1"]
    );
    {
        let fake = kiosk.side.lock();
        assert_eq!(fake.snapshots, 1, "one snapshot, then pages");
        assert!(!fake.pages.is_empty());
    }
    let report = kiosk.report();
    assert_eq!(report.snapshots_taken, 1);
    assert!(report.last_pull_ok.is_some());
    assert_eq!(report.pull_failures, 0);
    assert_eq!(report.hub_reachable, Some(true));

    kiosk.stop().await;
    hub.stop().await;
}

#[tokio::test]
async fn an_expired_cursor_leads_to_a_snapshot() {
    let mut hub = TestHub::spawn().await;
    for id in ["E1", "E2"] {
        hub.db.upsert_consultant(consultant(id)).await.expect("add");
    }
    let changes = hub
        .db
        .roster_changes(0, 10)
        .await
        .expect("read")
        .expect("kept")
        .changes;
    let (seen, latest) = (changes[0].cursor, changes[1].cursor);
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    assert_eq!(hub.db.prune_roster_log(later).await.expect("prune"), 2);

    // A kiosk that saw E1 before the hub forgot the changes since.
    let side = FakeSide::default();
    {
        let mut fake = side.lock();
        fake.cursor = Some(seen);
        let e1 = RosterEntry::Consultant(consultant("E1"));
        fake.roster.insert((Entity::Consultant, "E1".into()), e1);
    }
    let kiosk = Kiosk::start(&hub.url, Some(&hub.kiosk_token), side, Loops::Pull);
    eventually("the snapshot applied", || async {
        kiosk.side.lock().cursor == Some(latest)
    })
    .await;
    assert_eq!(
        roster_keys(&kiosk.side),
        vec!["consultant E1", "consultant E2"]
    );
    {
        let fake = kiosk.side.lock();
        assert_eq!(fake.snapshots, 1);
        assert!(fake.pages.is_empty(), "nothing paged from the old cursor");
    }
    let report = kiosk.report();
    assert_eq!(report.snapshots_taken, 1);
    assert_eq!(report.pull_failures, 0);

    kiosk.stop().await;
    hub.stop().await;
}
