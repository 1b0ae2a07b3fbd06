//! Handheld devices in the store: their names and hashed tokens, and their posts, recorded by the tap's path and made idempotent by the client's id.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use crate::store::{
    Presented, ReadDb, Store, StoreError, VisitInput, VisitView, record_in, visit_by_id,
};

/// A device's name as `kiosk devices` and the visit's `source` spell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceName(String);

impl DeviceName {
    /// 1–64 letters, digits, `-`, `_` or `.`: it ends up in `handheld:<name>` sources
    /// and in logs, so nothing that needs quoting.
    pub fn parse(text: &str) -> Result<DeviceName, DeviceError> {
        let ok = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(DeviceName(text.to_owned()))
        } else {
            Err(DeviceError::BadName(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a `kiosk devices` command failed; messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "device name {0:?} is not allowed; use 1 to 64 letters, digits, '-', '_' or '.', e.g. pda-01"
    )]
    BadName(String),
    #[error(
        "device {0} already has a token; revoke it first (`kiosk devices revoke {0}`) or choose another name"
    )]
    Exists(String),
    #[error("no device named {0}; `kiosk devices list` shows them")]
    NoSuchDevice(String),
    #[error(
        "no consultant with id {0:?} in this kiosk's roster; check the id, or import the roster first"
    )]
    NoSuchConsultant(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for DeviceError {
    fn from(e: rusqlite::Error) -> DeviceError {
        DeviceError::Store(StoreError::Sqlite(e))
    }
}

/// What a device may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRole {
    /// A consultant's PDA: posts visits, works the rotation, receives alerts.
    Handheld,
    /// The reception desk's console or the manager's tablet: also reads visits and
    /// binds and revokes cards.
    Staff,
}

impl DeviceRole {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceRole::Handheld => "handheld",
            DeviceRole::Staff => "staff",
        }
    }

    /// Reads the stored value; the schema's CHECK allows only the two.
    fn from_db(text: &str) -> DeviceRole {
        if text == "staff" {
            DeviceRole::Staff
        } else {
            DeviceRole::Handheld
        }
    }
}

/// A device as `kiosk devices list` shows it; never its token or hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub role: DeviceRole,
    pub consultant_id: Option<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// What the API needs to admit a request: the stored hash to verify, and whether it
/// still counts.
#[derive(Debug, Clone)]
pub struct DeviceAuth {
    pub name: String,
    pub role: DeviceRole,
    pub token_hash: String,
    pub consultant_id: Option<String>,
    pub revoked: bool,
}

/// Whose alerts a device may follow and acknowledge, and for whom it may work the rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A staff device (the reception desk, the manager's tablet): anyone.
    Anyone,
    /// A consultant's handheld: only that consultant.
    Only(String),
    /// A handheld bound to no consultant: nobody. It may post visits, but following or
    /// acknowledging a consultant's alerts, or moving them in the queue, takes a device
    /// that is theirs or a staff one, so a spare PDA cannot act for the whole office.
    Nobody,
}

impl DeviceAuth {
    pub fn scope(&self) -> Scope {
        match (self.role, &self.consultant_id) {
            (DeviceRole::Staff, _) => Scope::Anyone,
            (DeviceRole::Handheld, Some(own)) => Scope::Only(own.clone()),
            (DeviceRole::Handheld, None) => Scope::Nobody,
        }
    }

    /// Why this device may not act for `consultant`, as a message saying what to do;
    /// `None` when it may.
    pub fn refuses(&self, consultant: &str) -> Option<String> {
        match self.scope() {
            Scope::Anyone => None,
            Scope::Only(own) if own == consultant => None,
            Scope::Only(own) => Some(format!(
                "device {} belongs to consultant {own} and may act only for them, not for {consultant}; use a staff device (`kiosk devices add NAME --staff`)",
                self.name
            )),
            Scope::Nobody => Some(format!(
                "device {} is a handheld bound to no consultant, so it may not act for {consultant}; add the handheld with `kiosk devices add NAME --consultant {consultant}`, or use a staff device (`--staff`)",
                self.name
            )),
        }
    }
}

/// A handheld's post, validated.
#[derive(Debug, Clone)]
pub struct HandheldPost {
    /// The client's id, which becomes the visit's id.
    pub id: Uuid,
    pub device: String,
    pub presented: Presented,
    /// When the handheld saw the visitor (`at`), else when the kiosk got the post.
    pub device_time: jiff::Timestamp,
    /// When the kiosk got the post: a visitor seen long before takes no rotation turn
    /// and alerts nobody (`reception::is_current`).
    pub received_at: jiff::Timestamp,
    pub note: Option<String>,
    /// SHA-256 of the request's canonical JSON: the same id must come with the same body.
    pub body_hash: String,
}

/// The answer to a post.
#[derive(Debug, Clone)]
pub struct Posted {
    /// The new visit; for a repeat, the day's existing visit.
    pub visit: VisitView,
    /// The customer had already visited today: nothing new was counted.
    pub repeat: bool,
    /// The same post came before: this is its stored answer, nothing was written now.
    pub replay: bool,
    /// The alerts stored with a new visit, to announce once it commits.
    pub alerts: crate::alerts::Raised,
}

/// A post refused by what is stored; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostRefusal {
    #[error(
        "no customer with id {0:?} in this kiosk's roster; check the id, or tap the customer's card"
    )]
    UnknownCustomer(String),
    #[error(
        "id {0} was already used for another visit; make a new UUID for each new visit and send the same body when retrying"
    )]
    IdUsed(Uuid),
}

impl Store {
    /// Issues a device: stores only `token_hash`. A revoked device's name may be issued again.
    pub fn add_device(
        &mut self,
        name: &DeviceName,
        role: DeviceRole,
        consultant_id: Option<&str>,
        token_hash: &str,
    ) -> Result<(), DeviceError> {
        let tx = self
            .conn_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(id) = consultant_id {
            let known: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM consultants WHERE id = ?1)",
                [id],
                |r| r.get(0),
            )?;
            if !known {
                return Err(DeviceError::NoSuchConsultant(id.to_owned()));
            }
        }
        let active: Option<bool> = tx
            .query_row(
                "SELECT revoked_at IS NULL FROM devices WHERE name = ?1",
                [name.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        if active == Some(true) {
            return Err(DeviceError::Exists(name.as_str().to_owned()));
        }
        tx.execute(
            "INSERT INTO devices (name, token_hash, consultant_id, created_at, revoked_at, role)
             VALUES (?1, ?2, ?3, ?4, NULL, ?5)
             ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash,
                 consultant_id = excluded.consultant_id, created_at = excluded.created_at,
                 revoked_at = NULL, role = excluded.role",
            params![
                name.as_str(),
                token_hash,
                consultant_id,
                jiff::Timestamp::now().to_string(),
                role.as_str()
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every device, by name.
    pub fn list_devices(&mut self) -> Result<Vec<Device>, DeviceError> {
        let mut stmt = self.conn_mut().prepare(
            "SELECT name, consultant_id, created_at, revoked_at, role FROM devices ORDER BY name",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Device {
                    name: r.get(0)?,
                    role: DeviceRole::from_db(&r.get::<_, String>(4)?),
                    consultant_id: r.get(1)?,
                    created_at: r.get(2)?,
                    revoked_at: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Revokes a device's token; a running daemon refuses it from its next request.
    /// Revoking twice keeps the first time.
    pub fn revoke_device(&mut self, name: &DeviceName) -> Result<(), DeviceError> {
        let changed = self.conn_mut().execute(
            "UPDATE devices SET revoked_at = coalesce(revoked_at, ?2) WHERE name = ?1",
            params![name.as_str(), jiff::Timestamp::now().to_string()],
        )?;
        if changed == 0 {
            return Err(DeviceError::NoSuchDevice(name.as_str().to_owned()));
        }
        Ok(())
    }

    /// Records a handheld's post by the tap's path (same rules, same outbox), or answers
    /// a post seen before from `device_posts`, in one transaction: concurrent posts of
    /// one id are serialized by the writer, and the later ones find the first's row.
    pub fn record_post(
        &mut self,
        post: &HandheldPost,
    ) -> Result<Result<Posted, PostRefusal>, StoreError> {
        self.retry_busy(|store| {
            let (identity, periods, alerts) =
                (store.identity().clone(), store.periods(), store.alerts());
            let tx = store
                .conn_mut()
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let posted = post_in(&tx, &identity, &periods, alerts.as_deref(), post)?;
            tx.commit()?;
            Ok(posted)
        })
    }

    /// [`Store::record_post`] inside the writer's shared transaction
    /// ([`crate::store::Writer::call_grouped`]): the group's commit makes it durable, and
    /// a post of the same id earlier in the group is found like a committed one.
    pub fn record_post_in_group(
        &mut self,
        post: &HandheldPost,
    ) -> Result<Result<Posted, PostRefusal>, StoreError> {
        let (identity, periods, alerts) = (self.identity().clone(), self.periods(), self.alerts());
        post_in(
            self.conn_mut(),
            &identity,
            &periods,
            alerts.as_deref(),
            post,
        )
    }
}

/// The post's reads and writes, in the caller's transaction; the caller commits.
fn post_in(
    tx: &rusqlite::Connection,
    identity: &crate::store::Identity,
    periods: &crate::reception::ProtectionPeriods,
    alerts: Option<&crate::alerts::Alerts>,
    post: &HandheldPost,
) -> Result<Result<Posted, PostRefusal>, StoreError> {
    let source = format!("handheld:{}", post.device);
    let id = post.id.to_string();
    let seen: Option<(String, String, String)> = tx
        .prepare_cached("SELECT device, body_hash, visit_id FROM device_posts WHERE id = ?1")?
        .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    if let Some((device, body_hash, visit_id)) = seen {
        if device != post.device || body_hash != post.body_hash {
            return Ok(Err(PostRefusal::IdUsed(post.id)));
        }
        let visit = visit_by_id(tx, &visit_id)?;
        return Ok(Ok(Posted {
            // A repeat's answer is the day's earlier visit, under another id.
            repeat: visit.id != post.id,
            visit,
            replay: true,
            alerts: crate::alerts::Raised::default(),
        }));
    }
    // A tap's visit, a card change made at the desk (any outbox record) may hold the id
    // already: refused here rather than failing on the outbox's unique id.
    let taken: bool = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM visits WHERE id = ?1)
                 OR EXISTS (SELECT 1 FROM outbox WHERE record_id = ?1)",
        )?
        .query_row([&id], |r| r.get(0))?;
    if taken {
        return Ok(Err(PostRefusal::IdUsed(post.id)));
    }
    let input = VisitInput {
        id: post.id,
        source: &source,
        presented: &post.presented,
        device_time: post.device_time,
        received_at: post.received_at,
    };
    let Some(recorded) = record_in(tx, identity, periods, alerts, &input)? else {
        let Presented::Customer(customer) = &post.presented else {
            return Err(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows));
        };
        return Ok(Err(PostRefusal::UnknownCustomer(customer.clone())));
    };
    tx.prepare_cached(
        "INSERT INTO device_posts (id, device, body_hash, visit_id, note, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        id,
        post.device,
        post.body_hash,
        recorded.visit.id.to_string(),
        post.note,
        jiff::Timestamp::now().to_string()
    ])?;
    Ok(Ok(Posted {
        repeat: matches!(recorded.decision, crate::rules::Decision::Repeat),
        visit: recorded.visit,
        replay: false,
        alerts: recorded.alerts,
    }))
}

impl ReadDb {
    /// The device whose token hashes to `token_hash`, read afresh on every request so
    /// that a revocation counts at once.
    pub async fn device_by_token_hash(
        &self,
        token_hash: String,
    ) -> Result<Option<DeviceAuth>, StoreError> {
        self.with(move |c| {
            c.prepare_cached(
                "SELECT name, token_hash, consultant_id, revoked_at IS NOT NULL, role FROM devices WHERE token_hash = ?1",
            )?
            .query_row([token_hash], |r| {
                Ok(DeviceAuth {
                    name: r.get(0)?,
                    role: DeviceRole::from_db(&r.get::<_, String>(4)?),
                    token_hash: r.get(1)?,
                    consultant_id: r.get(2)?,
                    revoked: r.get(3)?,
                })
            })
            .optional()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::parse_csv;
    use crate::store::Identity;
    use kiosk_device::CardToken;

    fn store(dir: &std::path::Path) -> Store {
        let identity = Identity {
            kiosk_id: "k1".into(),
            office_id: "o1".into(),
            time_zone: jiff::tz::TimeZone::get("Asia/Shanghai").expect("tz"),
        };
        let mut s = Store::open(dir, identity).expect("open");
        let roster = parse_csv(
            "card,customer_id,surname,title,tier,card_status,consultant_id,consultant_name\n\
             nfc:04A1B2C3,C1,张,mr,gold,active,E01,李娜\n\
             nfc:04D0D0D0,C2,王,ms,normal,active,,\n"
                .as_bytes(),
        )
        .expect("roster");
        s.import_roster(&roster).expect("import");
        s
    }

    fn post(id: u128, presented: Presented, body_hash: &str) -> HandheldPost {
        HandheldPost {
            id: Uuid::from_u128(id),
            device: "pda-1".into(),
            presented,
            device_time: "2026-11-23T02:00:00Z".parse().expect("time"),
            received_at: "2026-11-23T02:00:00Z".parse().expect("time"),
            note: None,
            body_hash: body_hash.into(),
        }
    }

    fn card(token: &str) -> Presented {
        Presented::Card(CardToken::parse(token).expect("token"))
    }

    fn count(s: &mut Store, table: &str) -> u64 {
        s.conn_mut()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    }

    #[test]
    fn device_names_are_short_and_plain() {
        for ok in ["a", "pda-01", "Front_Desk.2", &"x".repeat(64)] {
            assert!(DeviceName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "ü", "a/b", "a:b", &"x".repeat(65)] {
            assert!(DeviceName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn devices_are_added_found_by_hash_revoked_and_reissued() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = store(dir.path());
        let name = DeviceName::parse("pda-1").expect("name");
        s.add_device(&name, DeviceRole::Handheld, Some("E01"), "h1")
            .expect("add");
        let err = s
            .add_device(&name, DeviceRole::Handheld, None, "h2")
            .expect_err("twice");
        assert!(matches!(err, DeviceError::Exists(_)), "{err}");
        let err = s
            .add_device(
                &DeviceName::parse("pda-2").expect("name"),
                DeviceRole::Handheld,
                Some("E99"),
                "h3",
            )
            .expect_err("unknown consultant");
        assert!(matches!(err, DeviceError::NoSuchConsultant(_)), "{err}");

        let db = ReadDb::open(dir.path(), jiff::tz::TimeZone::UTC).expect("read db");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let found = rt
            .block_on(db.device_by_token_hash("h1".into()))
            .expect("lookup")
            .expect("found");
        assert_eq!(
            (
                found.name.as_str(),
                found.consultant_id.as_deref(),
                found.revoked
            ),
            ("pda-1", Some("E01"), false)
        );
        assert!(
            rt.block_on(db.device_by_token_hash("h2".into()))
                .expect("lookup")
                .is_none()
        );

        s.revoke_device(&name).expect("revoke");
        let found = rt
            .block_on(db.device_by_token_hash("h1".into()))
            .expect("lookup")
            .expect("still there");
        assert!(found.revoked);
        let err = s
            .revoke_device(&DeviceName::parse("nope").expect("name"))
            .expect_err("unknown");
        assert!(matches!(err, DeviceError::NoSuchDevice(_)), "{err}");

        // A revoked name may be issued again, with a new token; the old one is gone.
        s.add_device(&name, DeviceRole::Handheld, None, "h4")
            .expect("reissue");
        let list = s.list_devices().expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(
            (
                list[0].consultant_id.as_deref(),
                list[0].revoked_at.as_deref()
            ),
            (None, None)
        );
        assert!(
            rt.block_on(db.device_by_token_hash("h1".into()))
                .expect("lookup")
                .is_none()
        );
    }

    /// A post is a tap by another path: the client's id is the visit's, and the same id
    /// answers the same again without writing; another body under it is refused.
    #[test]
    fn posts_are_recorded_once_by_their_id() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = store(dir.path());
        let first = post(1, card("nfc:04A1B2C3"), "b1");
        let p = s.record_post(&first).expect("store").expect("accepted");
        assert_eq!((p.visit.id, p.repeat, p.replay), (first.id, false, false));
        assert_eq!(
            (
                p.visit.outcome.as_str(),
                p.visit.source.as_str(),
                p.visit.method.as_str()
            ),
            ("welcome", "handheld:pda-1", "nfc")
        );
        assert_eq!(p.visit.seq, 1);

        let again = s.record_post(&first).expect("store").expect("replayed");
        assert_eq!(
            (again.visit.id, again.visit.seq, again.replay),
            (first.id, 1, true)
        );

        let other = post(1, card("nfc:04D0D0D0"), "b2");
        assert_eq!(
            s.record_post(&other)
                .expect("store")
                .expect_err("reused id"),
            PostRefusal::IdUsed(first.id)
        );
        let mut from_elsewhere = first.clone();
        from_elsewhere.device = "pda-2".into();
        assert!(s.record_post(&from_elsewhere).expect("store").is_err());

        // The same customer again today, chosen by id: a repeat, answered with the day's
        // visit, and a replay of it says so again.
        let by_id = post(2, Presented::Customer("C1".into()), "b3");
        let p = s.record_post(&by_id).expect("store").expect("accepted");
        assert_eq!((p.visit.id, p.repeat, p.replay), (first.id, true, false));
        let p = s.record_post(&by_id).expect("store").expect("replayed");
        assert_eq!((p.visit.id, p.repeat, p.replay), (first.id, true, true));

        // Chosen by id, a customer not visited today: method manual, no card.
        let p = s
            .record_post(&post(3, Presented::Customer("C2".into()), "b4"))
            .expect("store")
            .expect("accepted");
        assert_eq!(
            (
                p.visit.method.as_str(),
                p.visit.card.as_deref(),
                p.visit.outcome.as_str()
            ),
            ("manual", None, "welcome")
        );
        assert_eq!(p.visit.customer.map(|c| c.id).as_deref(), Some("C2"));

        // Unknown customer: refused, nothing stored.
        assert_eq!(
            s.record_post(&post(4, Presented::Customer("C9".into()), "b5"))
                .expect("store")
                .expect_err("unknown"),
            PostRefusal::UnknownCustomer("C9".into())
        );
        // Unknown card: stored as evidence, like a tap.
        let p = s
            .record_post(&post(5, card("nfc:04EEEEEE"), "b6"))
            .expect("store")
            .expect("accepted");
        assert_eq!(p.visit.outcome, "unknown");

        assert_eq!(count(&mut s, "visits"), 3);
        assert_eq!(count(&mut s, "outbox"), 3);
        assert_eq!(count(&mut s, "device_posts"), 4);
        let body: String = s
            .conn_mut()
            .query_row(
                "SELECT body FROM outbox WHERE record_id = ?1",
                [first.id.to_string()],
                |r| r.get(0),
            )
            .expect("outbox row");
        assert!(body.contains(r#""source":"handheld:pda-1""#), "{body}");
    }

    /// An id a tap already used is not taken over by a post.
    #[test]
    fn a_post_cannot_reuse_a_taps_visit_id() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = store(dir.path());
        let tap = s
            .record_tap(&crate::store::TapInput {
                source: "r".into(),
                token: CardToken::parse("nfc:04EEEEEE").expect("token"),
                device_time: "2026-11-23T02:00:00Z".parse().expect("time"),
            })
            .expect("tap");
        let mut p = post(0, card("nfc:04A1B2C3"), "b");
        p.id = tap.visit.id;
        assert_eq!(
            s.record_post(&p).expect("store").expect_err("taken"),
            PostRefusal::IdUsed(tap.visit.id)
        );
        assert_eq!(count(&mut s, "visits"), 1);
    }

    /// Nor is an id a card change at the desk used (its outbox record holds it): a 422
    /// `id_used`, not a failed insert.
    #[test]
    fn a_post_cannot_reuse_a_card_changes_id() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = store(dir.path());
        let p = post(7, card("nfc:04A1B2C3"), "b");
        s.conn_mut()
            .execute(
                "INSERT INTO outbox (seq, record_id, kind, body) VALUES (900, ?1, 'card_revocation', '{}')",
                [p.id.to_string()],
            )
            .expect("a card change's record");
        assert_eq!(
            s.record_post(&p).expect("store").expect_err("taken"),
            PostRefusal::IdUsed(p.id)
        );
        assert_eq!(count(&mut s, "visits"), 0);
    }
}
