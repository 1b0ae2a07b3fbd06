//! Tests of the alerts: who is alerted (a table), the table in SQLite (replay, acks, a
//! restart), and the escalation task on tokio's paused clock.

use std::future::Future;

use tokio::sync::broadcast::error::TryRecvError;

use super::*;
use crate::devices::DeviceRole;
use crate::reception::Rotation;
use crate::roster::{Title, parse_csv};
use crate::store::{ConsultantView, CustomerView, Identity};

const ROSTER: &str = "\
card,customer_id,surname,title,tier,card_status,consultant_id,consultant_name,note
nfc:04000001,C1,张,mr,gold,active,A,安娜,
nfc:04000002,C2,王,ms,normal,active,B,白雪,
nfc:04000003,C3,李,mr,normal,active,C,陈晨,
nfc:04000004,C4,赵,ms,normal,active,M,马丽,
";

fn at(text: &str) -> Timestamp {
    text.parse().expect("time")
}

fn plus(t: Timestamp, ms: u64) -> Timestamp {
    t.checked_add(Duration::from_millis(ms)).expect("time")
}

/// A stored visit as `record_in` hands it over: `receiver` is the consultant who
/// received the visitor, `stand_in_for` the off-duty owner.
fn visit(
    outcome: &str,
    tier: Option<Tier>,
    receiver: Option<&str>,
    stand_in_for: Option<&str>,
) -> VisitView {
    VisitView {
        id: Uuid::now_v7(),
        seq: 1,
        source: "handheld:pda".into(),
        method: "manual".into(),
        card: None,
        outcome: outcome.into(),
        reason: None,
        reason_detail: None,
        kind: Some("revisit".into()),
        customer: tier.map(|tier| CustomerView {
            id: "C1".into(),
            surname: "张".into(),
            title: Title::Mr,
            tier,
        }),
        consultant: receiver.map(|id| ConsultantView {
            id: id.into(),
            name: format!("name of {id}"),
        }),
        office_day: "2026-11-20".into(),
        device_time: "2026-11-20T02:00:00Z".into(),
        recorded_at: "2026-11-20T02:00:00Z".into(),
        broker_id: None,
        stand_in_for: stand_in_for.map(str::to_owned),
        public_pool: false,
    }
}

/// (situation, outcome, repeat, tier (None: no customer), receiver, stand-in for,
/// manager, who is alerted and why)
type Case<'a> = (
    &'a str,
    &'a str,
    bool,
    Option<Tier>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Vec<(&'a str, Reason)>,
);

#[test]
fn alerts_recipients_as_a_table() {
    use Reason::*;
    let (normal, gold) = (Some(Tier::Normal), Some(Tier::Gold));
    let cases: Vec<Case<'_>> = vec![
        (
            "a welcome alerts the receiver",
            "welcome",
            false,
            normal,
            Some("A"),
            None,
            Some("M"),
            vec![("A", Welcome)],
        ),
        (
            "a broker's confirmed customer too",
            "broker_confirmed",
            false,
            normal,
            Some("A"),
            None,
            Some("M"),
            vec![("A", Welcome)],
        ),
        (
            "a gold member also alerts the manager",
            "welcome",
            false,
            gold,
            Some("A"),
            None,
            Some("M"),
            vec![("A", Welcome), ("M", Manager)],
        ),
        (
            "a gold member without a manager configured",
            "welcome",
            false,
            gold,
            Some("A"),
            None,
            None,
            vec![("A", Welcome)],
        ),
        (
            "a stand-in received: the off-duty owner hears",
            "welcome",
            false,
            normal,
            Some("S"),
            Some("O"),
            Some("M"),
            vec![("S", Welcome), ("O", Owner)],
        ),
        (
            "a gold member with a stand-in: receiver, owner and manager",
            "welcome",
            false,
            gold,
            Some("S"),
            Some("O"),
            Some("M"),
            vec![("S", Welcome), ("O", Owner), ("M", Manager)],
        ),
        (
            "nobody received the visitor: the manager",
            "welcome",
            false,
            normal,
            None,
            None,
            Some("M"),
            vec![("M", Unassigned)],
        ),
        (
            "nobody received a gold member: unassigned says more than gold",
            "welcome",
            false,
            gold,
            None,
            None,
            Some("M"),
            vec![("M", Unassigned)],
        ),
        (
            "nobody received the visitor, the owner recorded: owner and manager",
            "welcome",
            false,
            normal,
            None,
            Some("O"),
            Some("M"),
            vec![("O", Owner), ("M", Unassigned)],
        ),
        (
            "nobody received the visitor and no manager: nobody to tell",
            "welcome",
            false,
            gold,
            None,
            None,
            None,
            vec![],
        ),
        (
            "the manager received a gold member: one alert, as receiver",
            "welcome",
            false,
            gold,
            Some("M"),
            None,
            Some("M"),
            vec![("M", Welcome)],
        ),
        (
            "the manager owns the customer a stand-in received: one alert, as owner",
            "welcome",
            false,
            gold,
            Some("S"),
            Some("M"),
            Some("M"),
            vec![("S", Welcome), ("M", Owner)],
        ),
        (
            "the day's repeat tap alerts nobody",
            "welcome",
            true,
            gold,
            Some("A"),
            Some("O"),
            Some("M"),
            vec![],
        ),
        (
            "an unknown card alerts nobody",
            "unknown",
            false,
            None,
            None,
            None,
            Some("M"),
            vec![],
        ),
        (
            "a denied card alerts nobody",
            "denied",
            false,
            gold,
            Some("A"),
            None,
            Some("M"),
            vec![],
        ),
        (
            "a refused broker code alerts nobody",
            "broker_refused",
            false,
            normal,
            Some("A"),
            None,
            Some("M"),
            vec![],
        ),
    ];
    for (what, outcome, repeat, tier, receiver, stand_in_for, manager, expected) in cases {
        let v = visit(outcome, tier, receiver, stand_in_for);
        let got = recipients(&v, repeat, manager);
        let expected: Vec<(String, Reason)> = expected
            .into_iter()
            .map(|(id, r)| (id.to_owned(), r))
            .collect();
        assert_eq!(got, expected, "{what}");
        // The alerts made from it: masked, naming the receiver.
        let alerts = Alert::for_visit(
            &v,
            repeat,
            "handheld:pda",
            at("2026-11-20T02:00:00Z"),
            manager,
        );
        assert_eq!(alerts.len(), expected.len(), "{what}");
        for (alert, (id, reason)) in alerts.iter().zip(&expected) {
            assert_eq!(
                (&alert.consultant_id, alert.reason),
                (id, *reason),
                "{what}"
            );
            assert_eq!(alert.customer, "张先生", "{what}");
            assert_eq!(
                alert.receiver.as_ref().map(|r| r.id.as_str()),
                receiver,
                "{what}"
            );
            assert_eq!(alert.escalated_from, None, "{what}");
        }
    }
}

/// A broker's confirmation after the customer's visit of the day is evidence (no kind):
/// the receiver, owner and manager heard of the visit already.
#[test]
fn a_late_broker_confirmation_alerts_nobody() {
    let mut v = visit("broker_confirmed", Some(Tier::Gold), Some("A"), Some("O"));
    v.kind = None;
    assert_eq!(recipients(&v, false, Some("M")), Vec::new());
}

#[test]
fn alerts_serialize_masked_with_their_reason() {
    let v = visit("welcome", Some(Tier::Gold), Some("A"), Some("O"));
    let alerts = Alert::for_visit(
        &v,
        false,
        "handheld:pda",
        at("2026-11-20T02:00:00Z"),
        Some("M"),
    );
    let json = serde_json::to_value(&alerts[1]).expect("json");
    assert_eq!(json["reason"], "owner");
    assert_eq!(json["consultant_id"], "O");
    assert_eq!(
        json["receiver"],
        serde_json::json!({"id": "A", "name": "name of A"})
    );
    assert_eq!(json["escalated_from"], serde_json::Value::Null);
    let text = json.to_string();
    assert!(!text.contains("C1"), "no customer id: {text}");
    // What is stored reads back the same.
    let back: Alert = serde_json::from_value(json).expect("alert");
    assert_eq!(back, alerts[1]);
}

#[test]
fn alerts_stamps_sort_as_times() {
    let times = [
        at("2026-11-20T02:00:00Z"),
        at("2026-11-20T02:00:00.5Z"),
        at("2026-11-20T02:00:00.000000001Z"),
        at("2026-11-20T02:00:01Z"),
    ];
    for a in times {
        assert_eq!(stamp(a).parse::<Timestamp>().expect("parse"), a);
        for b in times {
            assert_eq!(stamp(a).cmp(&stamp(b)), a.cmp(&b), "{a} vs {b}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// With a real store

/// A clock tests set by hand.
#[derive(Debug)]
struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    fn set(&self, t: Timestamp) {
        *self.0.lock().expect("clock") = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().expect("clock")
    }
}

/// tokio's paused clock as wall time: `base` when the test started, moved by
/// `tokio::time::advance` (and by nothing else while [`frozen`] waits).
#[derive(Debug)]
struct PausedClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl Clock for PausedClock {
    fn now(&self) -> Timestamp {
        self.base.checked_add(self.start.elapsed()).expect("time")
    }
}

/// A kiosk store with consultants A, B, C and M and the rotation `rotation` (head first,
/// `*` = with a visitor), its writer and read connection, and a plain connection for
/// checks.
struct Kiosk {
    _dir: tempfile::TempDir,
    writer: Writer,
    db: ReadDb,
    check: Connection,
}

fn kiosk(rotation: &str) -> Kiosk {
    let dir = tempfile::tempdir().expect("temp dir");
    let tz = jiff::tz::TimeZone::get("Asia/Shanghai").expect("tz");
    let identity = Identity {
        kiosk_id: "k1".into(),
        office_id: "o1".into(),
        time_zone: tz.clone(),
    };
    let mut store = Store::open(dir.path(), identity).expect("store");
    store
        .import_roster(&parse_csv(ROSTER.as_bytes()).expect("roster"))
        .expect("import");
    let seats = rotation
        .split_whitespace()
        .map(|w| match w.strip_suffix('*') {
            Some(id) => (id.to_owned(), true),
            None => (w.to_owned(), false),
        });
    save_rotation(
        store.conn_mut(),
        &Rotation::from_entries(seats).expect("rotation"),
    )
    .expect("save rotation");
    let (writer, _thread) = Writer::spawn(store).expect("writer");
    let db = ReadDb::open(dir.path(), tz).expect("read db");
    let check = crate::store::open(dir.path()).expect("check connection");
    Kiosk {
        _dir: dir,
        writer,
        db,
        check,
    }
}

impl Kiosk {
    /// The saved rotation, written as `kiosk` takes it.
    fn rotation(&self) -> String {
        load_rotation(&self.check)
            .expect("rotation")
            .to_entries()
            .iter()
            .map(|(id, busy)| if *busy { format!("{id}*") } else { id.clone() })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn escalated_at(&self, id: Uuid) -> Option<Timestamp> {
        self.check
            .query_row(
                "SELECT escalated_at FROM alerts WHERE id = ?1",
                [id.to_string()],
                |r| r.get::<_, Option<String>>(0),
            )
            .expect("alert row")
            .map(|t| t.parse().expect("time"))
    }

    fn created_at(&self, id: Uuid) -> Timestamp {
        self.check
            .query_row(
                "SELECT created_at FROM alerts WHERE id = ?1",
                [id.to_string()],
                |r| r.get::<_, String>(0),
            )
            .expect("alert row")
            .parse()
            .expect("time")
    }

    fn count(&self, sql: &str) -> i64 {
        self.check.query_row(sql, [], |r| r.get(0)).expect("count")
    }
}

fn device(name: &str, consultant: Option<&str>) -> DeviceAuth {
    DeviceAuth {
        name: name.into(),
        role: DeviceRole::Handheld,
        token_hash: String::new(),
        consultant_id: consultant.map(str::to_owned),
        revoked: false,
    }
}

/// The reception desk's device, bound to no consultant.
fn desk() -> DeviceAuth {
    DeviceAuth {
        role: DeviceRole::Staff,
        ..device("desk", None)
    }
}

/// A welcome of a normal customer received by `consultant`: its one alert, raised.
fn welcome(alerts: &Arc<Alerts>, writer: &Writer, consultant: &str) -> Alert {
    let v = visit("welcome", Some(Tier::Normal), Some(consultant), None);
    let made = alerts.for_visit(&v, false, "handheld:pda", at("2026-11-20T02:00:00Z"));
    assert_eq!(made.len(), 1);
    alerts.raise(writer, made.clone());
    made[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_kept_replayed_and_acknowledged_across_a_restart() {
    let k = kiosk("");
    let t0 = at("2026-11-20T02:00:00Z");
    let clock = Arc::new(ManualClock(Mutex::new(t0)));
    let alerts = Arc::new(Alerts::new(Policy::default(), clock.clone(), None));
    let mut live = alerts.live();
    let a1 = welcome(&alerts, &k.writer, "A");
    clock.set(plus(t0, 1_000));
    let b1 = welcome(&alerts, &k.writer, "B");
    clock.set(plus(t0, 2_000));
    let a2 = welcome(&alerts, &k.writer, "A");
    // Sent live once stored, in order.
    for want in [&a1, &b1, &a2] {
        let got = tokio::time::timeout(Duration::from_secs(20), live.recv())
            .await
            .expect("an alert within 20 s")
            .expect("live");
        assert_eq!(&got, want);
    }
    let (replay, _rx) = alerts.subscribe(&k.db, "A").await.expect("subscribe");
    assert_eq!(replay, vec![a1.clone(), a2.clone()], "A's, oldest first");

    // Acknowledgements: only A's devices or a desk's, once, known ids only.
    let ack = |id, d: DeviceAuth| {
        let (alerts, writer) = (&alerts, &k.writer);
        async move { alerts.ack(writer, id, &d).await.expect("store") }
    };
    let refused = |r: Result<Timestamp, AckRefusal>| match r {
        Err(AckRefusal::NotYours(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let why = refused(ack(a1.id, device("pda-b", Some("B"))).await);
    assert!(why.contains("belongs to consultant B"), "{why}");
    // A spare handheld bound to nobody acts for nobody.
    let why = refused(ack(a1.id, device("spare", None)).await);
    assert!(why.contains("bound to no consultant"), "{why}");
    assert!(why.contains("--consultant A"), "says what to do: {why}");
    clock.set(plus(t0, 3_000));
    let acked = plus(t0, 3_000);
    assert_eq!(ack(a1.id, device("pda-a", Some("A"))).await, Ok(acked));
    clock.set(plus(t0, 4_000));
    assert_eq!(ack(a1.id, device("pda-a2", Some("A"))).await, Ok(acked));
    assert_eq!(ack(a1.id, desk()).await, Ok(acked));
    assert_eq!(ack(Uuid::now_v7(), desk()).await, Err(AckRefusal::Unknown));
    let by: String = k
        .check
        .query_row(
            "SELECT acked_by FROM alerts WHERE id = ?1",
            [a1.id.to_string()],
            |r| r.get(0),
        )
        .expect("row");
    assert_eq!(by, "pda-a");

    // A restart: a new `Alerts` over the same database knows what the old one did.
    drop(alerts);
    let alerts = Alerts::new(Policy::default(), clock.clone(), None);
    let (replay, _rx) = alerts.subscribe(&k.db, "A").await.expect("subscribe");
    assert_eq!(
        replay,
        vec![a2.clone()],
        "the acknowledged one is not replayed"
    );
    assert_eq!(
        alerts.ack(&k.writer, a1.id, &desk()).await.expect("store"),
        Ok(acked),
        "the first acknowledgement is kept"
    );

    // The replay window counts from when the kiosk made the alert (t0 + 2 s for a2).
    clock.set(plus(t0, 2_000 + 600_000));
    let (replay, _rx) = alerts.subscribe(&k.db, "A").await.expect("subscribe");
    assert_eq!(replay, vec![a2.clone()], "10 min: still in the window");
    clock.set(plus(t0, 2_001 + 600_000));
    let (replay, _rx) = alerts.subscribe(&k.db, "A").await.expect("subscribe");
    assert!(replay.is_empty(), "past 10 min: {replay:?}");

    // Staff's list: unacknowledged ones, the latest first, however old.
    let listed = alerts.awaiting(&k.db, 10).await.expect("list");
    let ids: Vec<Uuid> = listed.iter().map(|l| l.alert.id).collect();
    assert_eq!(ids, [a2.id, b1.id]);
    assert_eq!(listed[0].created_at, plus(t0, 2_000));
    assert_eq!(listed[0].escalated_at, None);
    let one = alerts.awaiting(&k.db, 1).await.expect("list");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].alert.id, a2.id);
}

/// Awaits `fut` with tokio's paused clock held still: a paused current-thread runtime
/// does not auto-advance while a blocking task runs, so waiting on the writer thread
/// cannot move time on. Panics after 20 s of real time.
async fn frozen<T>(fut: impl Future<Output = T>) -> T {
    const REAL_LIMIT: Duration = Duration::from_secs(20);
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    let mut guard = tokio::task::spawn_blocking(move || watchdog.recv_timeout(REAL_LIMIT));
    let out = tokio::select! {
        out = fut => out,
        _ = &mut guard => panic!("nothing happened within {REAL_LIMIT:?} of real time"),
    };
    drop(done);
    let _ = guard.await;
    out
}

async fn next(live: &mut broadcast::Receiver<Alert>) -> Alert {
    frozen(live.recv()).await.expect("live alert")
}

/// Lets every task that can run, run (the paused clock does not move).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn staff(id: &str, name: &str) -> Option<StaffRef> {
    Some(StaffRef {
        id: id.into(),
        name: Some(name.into()),
    })
}

#[tokio::test(start_paused = true)]
async fn escalation_with_a_paused_clock() {
    let k = kiosk("A* B C");
    let t0 = at("2026-11-20T02:00:00Z");
    let clock = Arc::new(PausedClock {
        base: t0,
        start: tokio::time::Instant::now(),
    });
    let policy = Policy {
        manager: Some("M".into()),
        escalate_after: Duration::from_secs(60),
    };
    // A webhook for escalations only: a welcome queues nothing for it.
    let hook = webhooks::Hook::from_config(&kiosk_config::WebhookConfig {
        url: "http://127.0.0.1:9/hook".into(),
        format: kiosk_config::WebhookFormat::Generic,
        secret: None,
        events: vec![WebhookEvent::Escalation],
    })
    .expect("hook");
    let hooks = Some(Arc::new(Webhooks::new(
        vec![hook],
        jiff::tz::TimeZone::get("Asia/Shanghai").expect("tz"),
    )));
    let start = |alerts: &Arc<Alerts>, stop: &CancellationToken| {
        tokio::spawn(
            alerts
                .clone()
                .run_escalation(k.writer.clone(), k.db.clone(), stop.clone()),
        )
    };
    let alerts = Arc::new(Alerts::new(policy.clone(), clock.clone(), hooks.clone()));
    let mut live = alerts.live();
    let stop = CancellationToken::new();
    let task = start(&alerts, &stop);

    // A is with visitor 1 and does not acknowledge.
    let w1 = welcome(&alerts, &k.writer, "A");
    assert_eq!(next(&mut live).await, w1);
    tokio::time::advance(Duration::from_millis(59_999)).await;
    settle().await;
    assert!(
        matches!(live.try_recv(), Err(TryRecvError::Empty)),
        "something was sent before the deadline"
    );
    assert_eq!(k.escalated_at(w1.id), None);

    // At 60 s: the next free consultant (B; A is skipped) and the manager.
    tokio::time::advance(Duration::from_millis(1)).await;
    let to_b = next(&mut live).await;
    let to_m = next(&mut live).await;
    let due = plus(t0, 60_000);
    for (alert, to) in [(&to_b, "B"), (&to_m, "M")] {
        assert_eq!(alert.consultant_id, to);
        assert_eq!(alert.reason, Reason::Escalation);
        assert_eq!(alert.escalated_from, staff("A", "安娜"));
        assert_eq!(alert.receiver, staff("B", "白雪"));
        assert_eq!(
            (alert.visit_id, &alert.customer, alert.at),
            (w1.visit_id, &w1.customer, w1.at)
        );
        assert_ne!(alert.id, w1.id);
        assert_eq!(k.created_at(alert.id), due);
    }
    assert_eq!(
        k.escalated_at(w1.id),
        Some(due),
        "escalated exactly at the deadline"
    );
    assert_eq!(
        k.rotation(),
        "A* C B*",
        "B took the turn; A still with the visitor"
    );
    assert_eq!(
        k.count("SELECT count(*) FROM webhook_queue WHERE body LIKE '%\"event\":\"escalation\"%'"),
        2
    );
    assert_eq!(
        k.count("SELECT count(*) FROM webhook_queue"),
        2,
        "welcomes are not for this webhook"
    );

    // C is alerted at 60 s and acknowledges at 90 s: no escalation at 120 s.
    let w2 = welcome(&alerts, &k.writer, "C");
    assert_eq!(next(&mut live).await, w2);
    tokio::time::advance(Duration::from_secs(30)).await;
    let acked = frozen(alerts.ack(&k.writer, w2.id, &device("pda-c", Some("C"))))
        .await
        .expect("store");
    assert_eq!(acked, Ok(plus(t0, 90_000)));
    // A is alerted at 100 s and does not acknowledge: it escalates at 160 s.
    tokio::time::advance(Duration::from_secs(10)).await;
    let w3 = welcome(&alerts, &k.writer, "A");
    assert_eq!(next(&mut live).await, w3);
    tokio::time::advance(Duration::from_secs(60)).await;
    // The next alerts are w3's: nothing came for w2 (due at 120 s, acknowledged), and
    // nothing more for w1 (escalated once).
    let to_c = next(&mut live).await;
    let to_m = next(&mut live).await;
    assert_eq!(
        (to_c.consultant_id.as_str(), to_c.reason, to_c.visit_id),
        ("C", Reason::Escalation, w3.visit_id)
    );
    assert_eq!(
        (to_m.consultant_id.as_str(), to_m.reason, to_m.visit_id),
        ("M", Reason::Escalation, w3.visit_id)
    );
    assert_eq!(to_m.receiver, staff("C", "陈晨"));
    assert_eq!(k.escalated_at(w2.id), None);
    assert_eq!(k.escalated_at(w3.id), Some(plus(t0, 160_000)));
    assert_eq!(k.rotation(), "A* B* C*");

    // The kiosk stops; B's welcome is stored while it is down.
    stop.cancel();
    frozen(task)
        .await
        .expect("join")
        .expect("the task ends cleanly");
    let w4 = welcome(&alerts, &k.writer, "B");
    assert_eq!(next(&mut live).await, w4);
    drop(alerts);
    tokio::time::advance(Duration::from_secs(300)).await;

    // Restarted 5 minutes later: w4 is overdue and escalates at once; everyone is with a
    // visitor, so only the manager hears. w1 and w3 (escalated) and w2 (acknowledged) do not.
    let restart = plus(t0, 460_000);
    let alerts = Arc::new(Alerts::new(policy, clock.clone(), hooks));
    let mut live = alerts.live();
    let stop = CancellationToken::new();
    let task = start(&alerts, &stop);
    let to_m = next(&mut live).await;
    assert_eq!(
        (to_m.consultant_id.as_str(), to_m.reason, to_m.visit_id),
        ("M", Reason::Escalation, w4.visit_id)
    );
    assert_eq!(to_m.receiver, None, "nobody free");
    assert_eq!(to_m.escalated_from, staff("B", "白雪"));
    assert_eq!(k.escalated_at(w4.id), Some(restart));
    assert_eq!(k.rotation(), "A* B* C*");
    assert_eq!(
        k.count("SELECT count(*) FROM alerts WHERE kind = 'escalation'"),
        5
    );
    assert_eq!(
        k.count("SELECT count(*) FROM alerts WHERE escalated_at IS NOT NULL"),
        3
    );
    stop.cancel();
    frozen(task)
        .await
        .expect("join")
        .expect("the task ends cleanly");

    // C's welcome is the evening's last; nobody acknowledges it and the kiosk is off
    // overnight. Next morning it is stale: nobody is sent to a visitor long gone.
    let w5 = welcome(&alerts, &k.writer, "C");
    assert_eq!(next(&mut live).await, w5);
    drop(alerts);
    tokio::time::advance(Duration::from_secs(14 * 3600)).await;
    let alerts = Arc::new(Alerts::new(
        Policy {
            manager: Some("M".into()),
            escalate_after: Duration::from_secs(60),
        },
        clock.clone(),
        None,
    ));
    let mut live = alerts.live();
    let stop = CancellationToken::new();
    let task = start(&alerts, &stop);
    // The morning's first welcome escalates to the manager a minute later; w5 never does.
    let w6 = welcome(&alerts, &k.writer, "A");
    assert_eq!(next(&mut live).await, w6);
    tokio::time::advance(Duration::from_secs(60)).await;
    let to_m = next(&mut live).await;
    assert_eq!(
        (to_m.consultant_id.as_str(), to_m.visit_id),
        ("M", w6.visit_id),
        "the first escalation of the morning is w6's"
    );
    settle().await;
    assert!(
        matches!(live.try_recv(), Err(TryRecvError::Empty)),
        "w5 escalated after a night"
    );
    assert_eq!(k.escalated_at(w5.id), None);
    assert_eq!(
        k.count("SELECT count(*) FROM alerts WHERE kind = 'escalation'"),
        6,
        "w6's only"
    );
    stop.cancel();
    frozen(task)
        .await
        .expect("join")
        .expect("the task ends cleanly");
}
