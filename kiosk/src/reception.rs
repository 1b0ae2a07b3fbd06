//! Reception rules with no I/O: rotation queue, ownership and protection, broker check-in, escalation.
//!
//! Everything here is a pure function of what it is given: times come in as `Timestamp`s, the
//! queue comes in as a value the caller persists (`Rotation::to_entries`), so the rules are
//! tested as tables of situation → decision and the daemon decides the same way after a restart.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::roster::Tier;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// `t + d`, held at the end of time rather than failing: a period that long never lapses.
fn after(t: Timestamp, d: Duration) -> Timestamp {
    // With a std Duration the only possible failure is overflow.
    t.saturating_add(d).unwrap_or(Timestamp::MAX)
}

// ---------------------------------------------------------------------------------------------
// Rotation (接待轮序)

/// The reception rotation: on-duty consultants in the order they take walk-in visitors.
///
/// The head takes the next visitor and moves to the tail. A consultant with a visitor keeps
/// their place but is skipped until they mark themselves free, so nobody gets two visitors at
/// once while a free colleague waits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    seats: Vec<Seat>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seat {
    consultant_id: String,
    /// With a visitor: skipped by `next_for_walk_in` until `mark_free`.
    busy: bool,
}

/// What `Rotation::check_in` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckIn {
    /// Joined at the tail.
    Joined,
    /// Was already on duty; the queue is unchanged (a double tap on the handheld keeps the place).
    AlreadyOnDuty,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    #[error("consultant {0} is not on duty; check in first")]
    NotOnDuty(String),
    #[error(
        "the new order must list every on-duty consultant exactly once; missing {missing:?}, not on duty or repeated {extra:?}"
    )]
    NotAPermutation {
        missing: Vec<String>,
        extra: Vec<String>,
    },
    #[error("consultant {0} appears twice in the saved rotation")]
    DuplicateEntry(String),
}

impl RotationError {
    /// The machine-readable code for the API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            RotationError::NotOnDuty(_) => "not_on_duty",
            RotationError::NotAPermutation { .. } => "not_a_permutation",
            RotationError::DuplicateEntry(_) => "duplicate_entry",
        }
    }
}

impl Rotation {
    pub fn new() -> Rotation {
        Rotation::default()
    }

    /// Rebuilds a queue saved with `to_entries`: `(consultant id, busy)` from head to tail.
    pub fn from_entries(
        entries: impl IntoIterator<Item = (String, bool)>,
    ) -> Result<Rotation, RotationError> {
        let mut rotation = Rotation::new();
        for (consultant_id, busy) in entries {
            if rotation.position(&consultant_id).is_some() {
                return Err(RotationError::DuplicateEntry(consultant_id));
            }
            rotation.seats.push(Seat {
                consultant_id,
                busy,
            });
        }
        Ok(rotation)
    }

    /// The queue from head to tail as `(consultant id, busy)`, for the caller to persist.
    pub fn to_entries(&self) -> Vec<(String, bool)> {
        self.seats
            .iter()
            .map(|s| (s.consultant_id.clone(), s.busy))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.seats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seats.is_empty()
    }

    pub fn is_on_duty(&self, consultant_id: &str) -> bool {
        self.position(consultant_id).is_some()
    }

    /// `Some(busy)` for an on-duty consultant.
    pub fn is_busy(&self, consultant_id: &str) -> Option<bool> {
        self.position(consultant_id).map(|i| self.seats[i].busy)
    }

    /// Who `next_for_walk_in` would pick, without taking the turn (for the console).
    pub fn peek_next(&self) -> Option<&str> {
        self.seats
            .iter()
            .find(|s| !s.busy)
            .map(|s| s.consultant_id.as_str())
    }

    fn position(&self, consultant_id: &str) -> Option<usize> {
        self.seats
            .iter()
            .position(|s| s.consultant_id == consultant_id)
    }

    /// Goes on duty at the tail, free.
    pub fn check_in(&mut self, consultant_id: &str) -> CheckIn {
        if self.is_on_duty(consultant_id) {
            return CheckIn::AlreadyOnDuty;
        }
        self.seats.push(Seat {
            consultant_id: consultant_id.to_owned(),
            busy: false,
        });
        CheckIn::Joined
    }

    /// Goes off duty, with or without a visitor.
    pub fn check_out(&mut self, consultant_id: &str) -> Result<(), RotationError> {
        let i = self
            .position(consultant_id)
            .ok_or_else(|| RotationError::NotOnDuty(consultant_id.to_owned()))?;
        self.seats.remove(i);
        Ok(())
    }

    /// Takes the turn of the first free consultant from the head: they move to the tail, with
    /// the visitor. `None` when nobody is on duty or everyone is with a visitor.
    pub fn next_for_walk_in(&mut self) -> Option<String> {
        let i = self.seats.iter().position(|s| !s.busy)?;
        let mut seat = self.seats.remove(i);
        seat.busy = true;
        let id = seat.consultant_id.clone();
        self.seats.push(seat);
        Some(id)
    }

    /// Back from a visitor: eligible again, at the place they already hold. Marking a free
    /// consultant free again is harmless (the handheld may resend).
    pub fn mark_free(&mut self, consultant_id: &str) -> Result<(), RotationError> {
        self.set_busy(consultant_id, false)
    }

    /// With a visitor without taking a turn (an owner receiving their own customer).
    pub fn mark_busy(&mut self, consultant_id: &str) -> Result<(), RotationError> {
        self.set_busy(consultant_id, true)
    }

    fn set_busy(&mut self, consultant_id: &str, busy: bool) -> Result<(), RotationError> {
        let i = self
            .position(consultant_id)
            .ok_or_else(|| RotationError::NotOnDuty(consultant_id.to_owned()))?;
        self.seats[i].busy = busy;
        Ok(())
    }

    /// Staff put the queue in a new order. `ids` must name every on-duty consultant exactly
    /// once, so a reorder can neither check someone in or out nor lose them; each keeps their
    /// busy state. On error the queue is unchanged.
    pub fn reorder<S: AsRef<str>>(&mut self, ids: &[S]) -> Result<(), RotationError> {
        let mut remaining = self.seats.clone();
        let mut ordered = Vec::with_capacity(ids.len());
        let mut extra = Vec::new();
        for id in ids {
            let id = id.as_ref();
            match remaining.iter().position(|s| s.consultant_id == id) {
                Some(i) => ordered.push(remaining.remove(i)),
                None => extra.push(id.to_owned()),
            }
        }
        if !remaining.is_empty() || !extra.is_empty() {
            return Err(RotationError::NotAPermutation {
                missing: remaining.into_iter().map(|s| s.consultant_id).collect(),
                extra,
            });
        }
        self.seats = ordered;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Ownership and protection (保护期, 义务接待, 公海)

/// Where a customer came from (design §2); it sets how long they stay with their consultant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// 拓客
    Outreach,
    /// 来电
    Phone,
    /// 自访
    WalkIn,
    /// 渠道
    Broker,
}

impl Source {
    /// The spelling of the roster, the store and the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Outreach => "outreach",
            Source::Phone => "phone",
            Source::WalkIn => "walk_in",
            Source::Broker => "broker",
        }
    }

    /// Reads `as_str`'s spelling (the store's CHECK constraint and the wire use only it).
    pub fn parse(text: &str) -> Option<Source> {
        match text {
            "outreach" => Some(Source::Outreach),
            "phone" => Some(Source::Phone),
            "walk_in" => Some(Source::WalkIn),
            "broker" => Some(Source::Broker),
            _ => None,
        }
    }
}

/// How long a customer stays with their consultant after the last qualifying contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtectionPeriods {
    /// After a visit; also outreach and walk-in customers, whose claim starts with a visit.
    pub visit: Duration,
    /// After a phone call (来电).
    pub phone: Duration,
    /// After a broker's report (报备); also how long a broker registration lasts when the
    /// roster gives no expiry.
    pub broker_report: Duration,
}

impl ProtectionPeriods {
    /// The defaults of design §2: visit 15 days, phone 7 days, broker report 15 days.
    pub const DEFAULT: ProtectionPeriods = ProtectionPeriods {
        visit: Duration::from_secs(15 * DAY.as_secs()),
        phone: Duration::from_secs(7 * DAY.as_secs()),
        broker_report: Duration::from_secs(15 * DAY.as_secs()),
    };

    pub fn for_source(&self, source: Source) -> Duration {
        match source {
            Source::Outreach | Source::WalkIn => self.visit,
            Source::Phone => self.phone,
            Source::Broker => self.broker_report,
        }
    }
}

impl ProtectionPeriods {
    /// The periods of `[reception]` (`protection_visit`, `_phone`, `_broker_report`).
    pub fn from_config(config: &kiosk_config::ReceptionConfig) -> ProtectionPeriods {
        ProtectionPeriods {
            visit: config.protection_visit,
            phone: config.protection_phone,
            broker_report: config.protection_broker_report,
        }
    }
}

impl Default for ProtectionPeriods {
    fn default() -> ProtectionPeriods {
        ProtectionPeriods::DEFAULT
    }
}

/// What the roster and the store know about the visitor, for `assign`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignFacts {
    /// `None` for an unknown visitor (unbound card, new walk-in).
    pub customer: Option<KnownCustomer>,
    pub periods: ProtectionPeriods,
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownCustomer {
    pub tier: Tier,
    /// `None` when no consultant owns the customer.
    pub owner: Option<Owner>,
}

/// The consultant who owns a customer and what keeps the claim alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub consultant_id: String,
    /// The customer's source, which picks the protection period.
    pub source: Source,
    /// The last qualifying contact (visit, call, report) the period runs from. `None`:
    /// nobody knows of one, so the protection is not tracked and never lapses (a roster
    /// that does not manage protection keeps every customer with their consultant).
    pub last_follow_up: Option<Timestamp>,
    /// Usually `rotation.is_on_duty(consultant_id)`; given apart because a dedicated (gold)
    /// consultant may be in the office without standing in the rotation.
    pub on_duty: bool,
}

impl Owner {
    /// Whether the protection has lapsed at `facts.now`: valid while `now < last_follow_up +
    /// period`; with no known follow-up it never lapses.
    fn lapsed(&self, facts: &AssignFacts) -> bool {
        self.last_follow_up
            .is_some_and(|t| facts.now >= after(t, facts.periods.for_source(self.source)))
    }
}

/// Who receives the visitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receiver {
    Consultant(String),
    /// Nobody is on duty: reception staff greet the visitor themselves.
    NoneOnDuty,
    /// Everyone on duty is with a visitor: the visitor waits for the first to mark free.
    AllBusy,
    /// The visit is recorded after the fact ([`is_current`] says no): the visitor was
    /// received back then, so nobody is sent to them now and the rotation does not move.
    AfterTheFact,
}

/// How the visitor is received; the visit records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub consultant: Receiver,
    /// The owner a stand-in (义务接待) serves for; the visit records both.
    pub stand_in_for: Option<String>,
    /// The owner is off duty and must hear that their customer came.
    pub alert_owner: bool,
    /// Protection lapsed (公海): the hub may give the customer to someone else.
    pub public_pool: bool,
    /// A gold member: the office manager is alerted too.
    pub alert_manager: bool,
}

impl Assignment {
    pub fn consultant_id(&self) -> Option<&str> {
        match &self.consultant {
            Receiver::Consultant(id) => Some(id),
            Receiver::NoneOnDuty | Receiver::AllBusy | Receiver::AfterTheFact => None,
        }
    }
}

/// Takes a turn from the rotation, saying why nobody could take it.
fn from_rotation(rotation: &mut Rotation) -> Receiver {
    match rotation.next_for_walk_in() {
        Some(id) => Receiver::Consultant(id),
        None if rotation.is_empty() => Receiver::NoneOnDuty,
        None => Receiver::AllBusy,
    }
}

/// How long after a visitor was seen the kiosk still treats the visit as happening now.
/// A handheld that was offline flushes its queue with the times it saw each visitor
/// (`at`); one seen longer ago than this has been received already, so sending the
/// queue's head or an alert to them now would send a consultant to nobody. Ten minutes
/// covers a PDA's Wi-Fi blip; alerts replay to a reconnecting handheld for as long.
pub const CURRENT_FOR: SignedDuration = SignedDuration::from_secs(10 * 60);

/// Whether a visitor seen at `seen` is still at the door at `now` (the kiosk's clock):
/// within [`CURRENT_FOR`]. A time ahead of the clock (a handheld's clock a little fast;
/// the API refuses more than 5 minutes) is current.
pub fn is_current(seen: Timestamp, now: Timestamp) -> bool {
    now.duration_since(seen) <= CURRENT_FOR
}

/// Who received a visit recorded after the fact (not [`is_current`]): the owner while
/// the protection was valid when the visitor was seen, else nobody, and never a rotation
/// turn. The public-pool mark is kept so that the hub can still reassign the customer.
pub fn assign_after_the_fact(facts: &AssignFacts) -> Assignment {
    let alert_manager = facts
        .customer
        .as_ref()
        .is_some_and(|c| c.tier == Tier::Gold);
    let mut assignment = Assignment {
        consultant: Receiver::AfterTheFact,
        stand_in_for: None,
        alert_owner: false,
        public_pool: false,
        alert_manager,
    };
    if let Some(owner) = facts.customer.as_ref().and_then(|c| c.owner.as_ref()) {
        if owner.lapsed(facts) {
            assignment.public_pool = true;
        } else {
            assignment.consultant = Receiver::Consultant(owner.consultant_id.clone());
        }
    }
    assignment
}

/// Decides who receives a visitor, taking a rotation turn when the owner cannot.
///
/// The protection is valid while `now < last_follow_up + period`: at exactly the end of the
/// period the customer is already in the public pool. With no known follow-up it never lapses.
pub fn assign(facts: &AssignFacts, rotation: &mut Rotation) -> Assignment {
    let alert_manager = facts
        .customer
        .as_ref()
        .is_some_and(|c| c.tier == Tier::Gold);
    let mut assignment = Assignment {
        consultant: Receiver::NoneOnDuty,
        stand_in_for: None,
        alert_owner: false,
        public_pool: false,
        alert_manager,
    };
    let Some(owner) = facts.customer.as_ref().and_then(|c| c.owner.as_ref()) else {
        assignment.consultant = from_rotation(rotation);
        return assignment;
    };
    if owner.lapsed(facts) {
        assignment.public_pool = true;
        assignment.consultant = from_rotation(rotation);
    } else if owner.on_duty {
        // A returning customer does not use up the owner's rotation turn (老客不占轮序), but the
        // owner is now with a visitor, so walk-ins skip them until they are free.
        // An owner outside the rotation (a dedicated consultant) has no place to mark: Err is fine.
        let _ = rotation.mark_busy(&owner.consultant_id);
        assignment.consultant = Receiver::Consultant(owner.consultant_id.clone());
    } else {
        assignment.alert_owner = true;
        assignment.consultant = from_rotation(rotation);
        // Only when the facts disagree (owner said off duty, yet in the rotation) can the head
        // be the owner; then the owner simply serves.
        if assignment.consultant_id() == Some(&owner.consultant_id) {
            assignment.alert_owner = false;
        } else if matches!(assignment.consultant, Receiver::Consultant(_)) {
            assignment.stand_in_for = Some(owner.consultant_id.clone());
        }
    }
    assignment
}

// ---------------------------------------------------------------------------------------------
// Broker check-in (确客)

/// A broker's report (报备) of a customer, from the roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub broker_id: String,
    pub customer_id: String,
    pub registered_at: Timestamp,
    /// `None`: `registered_at` + the broker-report protection period.
    pub expires_at: Option<Timestamp>,
}

impl BrokerRegistration {
    pub fn expires_at(&self, periods: &ProtectionPeriods) -> Timestamp {
        self.expires_at
            .unwrap_or_else(|| after(self.registered_at, periods.broker_report))
    }
}

/// The customer arrived with the broker who reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    pub broker_id: String,
    pub customer_id: String,
}

/// Why a broker's code was not accepted; shown on the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No registration for this customer with this broker (or another broker's has lapsed).
    UnknownRegistration,
    /// The broker's own registration ran out.
    Expired { expired_at: Timestamp },
    /// Another broker holds a live registration for this customer (撞单).
    OtherBroker,
    /// A `qr:broker:` code that does not read `qr:broker:BROKER_ID:CUSTOMER_ID`.
    MalformedCode,
    /// The code names a customer this kiosk's roster does not hold.
    UnknownCustomer,
}

impl Refusal {
    /// The machine-readable code stored on the visit and sent to the hub.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::UnknownRegistration => "unknown_registration",
            Refusal::Expired { .. } => "registration_expired",
            Refusal::OtherBroker => "other_broker",
            Refusal::MalformedCode => "malformed_broker_code",
            Refusal::UnknownCustomer => "unknown_customer",
        }
    }

    /// For the console. The expiry time is left to the console, which shows it in the office's
    /// time zone; this module knows no zones.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::UnknownRegistration => {
                "No broker registration matches this code · 未找到该渠道报备"
            }
            Refusal::Expired { .. } => "The broker registration has expired · 渠道报备已过期",
            Refusal::OtherBroker => {
                "This customer is registered with another broker · 该客户已由其他渠道报备"
            }
            Refusal::MalformedCode => {
                "This is not a valid broker code (qr:broker:BROKER_ID:CUSTOMER_ID) · 带看码无效"
            }
            Refusal::UnknownCustomer => {
                "The broker code names a customer this kiosk does not know · 带看码中的客户不在名册中"
            }
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for Refusal {}

/// What a scanned token starting with this is: a broker's code (带看码), not a card.
pub const BROKER_CODE_PREFIX: &str = "qr:broker:";

/// A broker's code as scanned: `qr:broker:BROKER_ID:CUSTOMER_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerCode {
    pub broker_id: String,
    pub customer_id: String,
}

/// A `qr:broker:` code that could not be read, with the broker id when that part was there
/// (so the refused visit still names whose code it was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedCode {
    pub broker_id: Option<String>,
}

/// Reads a card token as a broker's code: `None` when it is not one (any other token,
/// including other `qr:` codes, is a card). The customer id is everything after the
/// broker id's `:`, so a customer id may itself contain `:`; a broker id may not.
pub fn parse_broker_code(token: &str) -> Option<Result<BrokerCode, MalformedCode>> {
    let rest = token.strip_prefix(BROKER_CODE_PREFIX)?;
    let (broker, customer) = rest.split_once(':').unwrap_or((rest, ""));
    let broker_id = (!broker.is_empty()).then(|| broker.to_owned());
    Some(match (broker_id, customer.is_empty()) {
        (Some(broker_id), false) => Ok(BrokerCode {
            broker_id,
            customer_id: customer.to_owned(),
        }),
        (broker_id, _) => Err(MalformedCode { broker_id }),
    })
}

/// Checks a scanned broker code against the customer's registration (the one the roster holds
/// for the customer the code names, if any).
///
/// A registration is live while `now < expires_at`. Another broker's registration refuses the
/// scan only while it is live: once it has lapsed, the scanning broker simply has none.
pub fn broker_check_in(
    registration: Option<&BrokerRegistration>,
    scanned_broker_id: &str,
    now: Timestamp,
    periods: &ProtectionPeriods,
) -> Result<Confirmed, Refusal> {
    let registration = registration.ok_or(Refusal::UnknownRegistration)?;
    let expired_at = registration.expires_at(periods);
    let live = now < expired_at;
    match (registration.broker_id == scanned_broker_id, live) {
        (true, true) => Ok(Confirmed {
            broker_id: registration.broker_id.clone(),
            customer_id: registration.customer_id.clone(),
        }),
        (true, false) => Err(Refusal::Expired { expired_at }),
        (false, true) => Err(Refusal::OtherBroker),
        (false, false) => Err(Refusal::UnknownRegistration),
    }
}

// ---------------------------------------------------------------------------------------------
// Escalation

/// How long an alert waits for an acknowledgement by default.
pub const DEFAULT_ESCALATE_AFTER: Duration = Duration::from_secs(60);

/// What to do about an alert now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscalationStep {
    /// Acknowledged: nothing more to do.
    Done,
    /// Its escalation was due more than [`CURRENT_FOR`] ago (the kiosk was stopped
    /// meanwhile, e.g. overnight): the visitor has long been received or has left, so
    /// nobody is sent now and no rotation turn is taken.
    Stale,
    /// Not yet due: look again at `until` (the caller's timer).
    Wait { until: Timestamp },
    /// Alert the manager and the next consultant in the queue (`Rotation::next_for_walk_in`,
    /// which skips the unresponsive consultant, who is still marked with the visitor). The
    /// caller records that it escalated, so it does so once.
    Escalate,
}

/// Decides an alert's next step. The acknowledgement window is `[created, created +
/// escalate_after)`: at exactly `escalate_after` without an ack, the alert escalates.
pub fn escalation(
    alert_created: Timestamp,
    acked: bool,
    now: Timestamp,
    escalate_after: Duration,
) -> EscalationStep {
    if acked {
        return EscalationStep::Done;
    }
    let due = after(alert_created, escalate_after);
    if now < due {
        EscalationStep::Wait { until: due }
    } else if !is_current(due, now) {
        EscalationStep::Stale
    } else {
        EscalationStep::Escalate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a queue as "A B* C" (head first, `*` = with a visitor), so tables read as the
    /// console shows the queue.
    fn show(rotation: &Rotation) -> String {
        rotation
            .to_entries()
            .iter()
            .map(|(id, busy)| if *busy { format!("{id}*") } else { id.clone() })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn queue(text: &str) -> Rotation {
        let entries = text
            .split_whitespace()
            .map(|word| match word.strip_suffix('*') {
                Some(id) => (id.to_owned(), true),
                None => (word.to_owned(), false),
            });
        Rotation::from_entries(entries).unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[derive(Debug)]
    enum Op {
        In(&'static str),
        Out(&'static str),
        Next,
        Free(&'static str),
        Busy(&'static str),
        Reorder(&'static [&'static str]),
    }

    #[derive(Debug, PartialEq)]
    enum Got {
        In(CheckIn),
        Ok,
        Next(Option<String>),
        Err(RotationError),
    }

    /// One step of a rotation table: the operation, its result, the queue after it.
    type Step = (Op, Got, &'static str);
    /// A saved queue read back: as `show` writes it, or the error.
    type Restored = Result<&'static str, RotationError>;
    type CheckInResult = Result<Confirmed, Refusal>;

    fn apply(rotation: &mut Rotation, op: &Op) -> Got {
        let unit = |r: Result<(), RotationError>| match r {
            Ok(()) => Got::Ok,
            Err(e) => Got::Err(e),
        };
        match op {
            Op::In(id) => Got::In(rotation.check_in(id)),
            Op::Out(id) => unit(rotation.check_out(id)),
            Op::Free(id) => unit(rotation.mark_free(id)),
            Op::Busy(id) => unit(rotation.mark_busy(id)),
            Op::Reorder(ids) => unit(rotation.reorder(ids)),
            Op::Next => Got::Next(rotation.next_for_walk_in()),
        }
    }

    fn next(id: Option<&str>) -> Got {
        Got::Next(id.map(str::to_owned))
    }

    fn not_on_duty(id: &str) -> Got {
        Got::Err(RotationError::NotOnDuty(id.to_owned()))
    }

    fn not_a_permutation(missing: &[&str], extra: &[&str]) -> Got {
        Got::Err(RotationError::NotAPermutation {
            missing: missing.iter().map(|s| s.to_string()).collect(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn rotation_sequences_as_a_table() {
        use Op::*;
        // (what happens, starting queue, [(operation, result, queue after)])
        let cases: Vec<(&str, &str, Vec<Step>)> = vec![
            (
                "check-ins join at the tail; the head takes a walk-in and moves to the tail",
                "",
                vec![
                    (In("A"), Got::In(CheckIn::Joined), "A"),
                    (In("B"), Got::In(CheckIn::Joined), "A B"),
                    (In("C"), Got::In(CheckIn::Joined), "A B C"),
                    (Next, next(Some("A")), "B C A*"),
                    (Free("A"), Got::Ok, "B C A"),
                    (Next, next(Some("B")), "C A B*"),
                    (Free("B"), Got::Ok, "C A B"),
                    (Next, next(Some("C")), "A B C*"),
                ],
            ),
            (
                "a consultant with a visitor is skipped until free, and keeps their place",
                "A B C",
                vec![
                    (Next, next(Some("A")), "B C A*"),
                    (Next, next(Some("B")), "C A* B*"),
                    (Free("A"), Got::Ok, "C A B*"),
                    (Next, next(Some("C")), "A B* C*"),
                    (Next, next(Some("A")), "B* C* A*"),
                    (Next, next(None), "B* C* A*"),
                    (Free("C"), Got::Ok, "B* C A*"),
                    (Next, next(Some("C")), "B* A* C*"),
                ],
            ),
            (
                "a busy head is skipped without losing the head place",
                "A* B C",
                vec![
                    (Next, next(Some("B")), "A* C B*"),
                    (Free("A"), Got::Ok, "A C B*"),
                    (Next, next(Some("A")), "C B* A*"),
                ],
            ),
            (
                "checking in twice keeps the place",
                "A B",
                vec![
                    (In("A"), Got::In(CheckIn::AlreadyOnDuty), "A B"),
                    (In("B"), Got::In(CheckIn::AlreadyOnDuty), "A B"),
                ],
            ),
            (
                "check-out, also with a visitor; a second check-out is an error",
                "A B* C",
                vec![
                    (Out("B"), Got::Ok, "A C"),
                    (Out("B"), not_on_duty("B"), "A C"),
                    (Out("A"), Got::Ok, "C"),
                    (Out("C"), Got::Ok, ""),
                    (Next, next(None), ""),
                ],
            ),
            (
                "checking back in after a check-out goes to the tail, free",
                "A* B C",
                vec![
                    (Out("A"), Got::Ok, "B C"),
                    (In("A"), Got::In(CheckIn::Joined), "B C A"),
                ],
            ),
            (
                "mark free/busy: repeats are harmless, off-duty consultants are errors",
                "A B",
                vec![
                    (Free("A"), Got::Ok, "A B"),
                    (Busy("B"), Got::Ok, "A B*"),
                    (Busy("B"), Got::Ok, "A B*"),
                    (Free("Z"), not_on_duty("Z"), "A B*"),
                    (Busy("Z"), not_on_duty("Z"), "A B*"),
                ],
            ),
            (
                "reorder: a permutation keeps each busy state",
                "A B* C",
                vec![
                    (Reorder(&["C", "B", "A"]), Got::Ok, "C B* A"),
                    (Next, next(Some("C")), "B* A C*"),
                ],
            ),
            (
                "reorder: anything but a permutation is refused and changes nothing",
                "A B C",
                vec![
                    (
                        Reorder(&["A", "B"]),
                        not_a_permutation(&["C"], &[]),
                        "A B C",
                    ),
                    (
                        Reorder(&["A", "B", "C", "Z"]),
                        not_a_permutation(&[], &["Z"]),
                        "A B C",
                    ),
                    (
                        Reorder(&["A", "A", "B"]),
                        not_a_permutation(&["C"], &["A"]),
                        "A B C",
                    ),
                    (
                        Reorder(&[]),
                        not_a_permutation(&["A", "B", "C"], &[]),
                        "A B C",
                    ),
                ],
            ),
            (
                "an empty queue gives nobody and reorders to nothing",
                "",
                vec![
                    (Next, next(None), ""),
                    (Reorder(&[]), Got::Ok, ""),
                    (Out("A"), not_on_duty("A"), ""),
                ],
            ),
        ];
        for (what, start, steps) in cases {
            let mut rotation = queue(start);
            for (i, (op, expected, after)) in steps.iter().enumerate() {
                let got = apply(&mut rotation, op);
                assert_eq!(&got, expected, "{what}: step {i} {op:?}");
                assert_eq!(
                    show(&rotation),
                    *after,
                    "{what}: queue after step {i} {op:?}"
                );
            }
        }
    }

    #[test]
    fn rotation_entries_round_trip_and_refuse_duplicates() {
        // The queue survives a restart as exactly what it was, busy marks included.
        let cases: [(Vec<(&str, bool)>, Restored); 4] = [
            (vec![], Ok("")),
            (vec![("A", false), ("B", true), ("C", false)], Ok("A B* C")),
            (vec![("B", true), ("A", true)], Ok("B* A*")),
            (
                vec![("A", false), ("B", false), ("A", true)],
                Err(RotationError::DuplicateEntry("A".into())),
            ),
        ];
        for (entries, expected) in cases {
            let owned: Vec<(String, bool)> = entries
                .iter()
                .map(|(id, busy)| (id.to_string(), *busy))
                .collect();
            let got = Rotation::from_entries(owned.clone());
            match expected {
                Ok(shown) => {
                    let rotation = got.unwrap();
                    assert_eq!(show(&rotation), shown);
                    assert_eq!(rotation.to_entries(), owned);
                }
                Err(e) => assert_eq!(got, Err(e), "{entries:?}"),
            }
        }
    }

    #[test]
    fn rotation_peek_and_lookups() {
        let rotation = queue("A* B C*");
        assert_eq!(rotation.peek_next(), Some("B"));
        assert_eq!(rotation.is_busy("A"), Some(true));
        assert_eq!(rotation.is_busy("B"), Some(false));
        assert_eq!(rotation.is_busy("Z"), None);
        assert!(rotation.is_on_duty("C") && !rotation.is_on_duty("Z"));
        assert_eq!(rotation.len(), 3);
        assert_eq!(queue("A* B*").peek_next(), None);
        assert_eq!(Rotation::new().peek_next(), None);
    }

    #[test]
    fn rotation_error_codes() {
        let cases = [
            (RotationError::NotOnDuty("A".into()), "not_on_duty"),
            (
                RotationError::NotAPermutation {
                    missing: vec![],
                    extra: vec![],
                },
                "not_a_permutation",
            ),
            (RotationError::DuplicateEntry("A".into()), "duplicate_entry"),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error}");
        }
    }

    #[test]
    fn protection_periods_follow_the_design_defaults() {
        let p = ProtectionPeriods::default();
        let cases = [
            (Source::Outreach, 15),
            (Source::WalkIn, 15),
            (Source::Phone, 7),
            (Source::Broker, 15),
        ];
        for (source, days) in cases {
            assert_eq!(p.for_source(source), DAY * days, "{source:?}");
        }
    }

    /// The expected assignment in a table row.
    struct Want {
        consultant: Receiver,
        stand_in_for: Option<&'static str>,
        alert_owner: bool,
        public_pool: bool,
        alert_manager: bool,
    }

    fn to(id: &str) -> Receiver {
        Receiver::Consultant(id.to_owned())
    }

    fn want(consultant: Receiver) -> Want {
        Want {
            consultant,
            stand_in_for: None,
            alert_owner: false,
            public_pool: false,
            alert_manager: false,
        }
    }

    #[test]
    fn assignments_as_a_table() {
        let now = at("2026-11-20T10:00:00Z");
        let day = DAY.as_secs() as i64;
        // The owner's last contact `ago` seconds before now.
        let owned = |tier, source, ago: i64, on_duty| {
            Some(KnownCustomer {
                tier,
                owner: Some(Owner {
                    consultant_id: "O".into(),
                    source,
                    last_follow_up: Some(now - jiff::SignedDuration::from_secs(ago)),
                    on_duty,
                }),
            })
        };
        // An owner whose last contact nobody knows: the protection is not tracked.
        let untracked = |on_duty| {
            Some(KnownCustomer {
                tier: Tier::Normal,
                owner: Some(Owner {
                    consultant_id: "O".into(),
                    source: Source::Phone,
                    last_follow_up: None,
                    on_duty,
                }),
            })
        };
        let unowned = |tier| Some(KnownCustomer { tier, owner: None });
        use Source::*;
        use Tier::*;
        // (situation, customer, queue before, assignment, queue after)
        let cases: Vec<(&str, Option<KnownCustomer>, &str, Want, &str)> = vec![
            (
                "unknown visitor → head of the queue",
                None,
                "A B",
                want(to("A")),
                "B A*",
            ),
            (
                "known, nobody owns them → head of the queue",
                unowned(Normal),
                "A B",
                want(to("A")),
                "B A*",
            ),
            (
                "unknown visitor, busy head skipped",
                None,
                "A* B",
                want(to("B")),
                "A* B*",
            ),
            (
                "owner on duty, protection valid → owner, who keeps their place and gets busy",
                owned(Normal, WalkIn, 3 * day, true),
                "A O B",
                want(to("O")),
                "A O* B",
            ),
            (
                "owner on duty and already busy → still the owner",
                owned(Silver, Outreach, day, true),
                "O* A",
                want(to("O")),
                "O* A",
            ),
            (
                "owner on duty outside the rotation (dedicated consultant) → owner, queue untouched",
                owned(Normal, Phone, day, true),
                "A B",
                want(to("O")),
                "A B",
            ),
            (
                "visit protection one second before the end → owner",
                owned(Normal, WalkIn, 15 * day - 1, true),
                "A",
                want(to("O")),
                "A",
            ),
            (
                "visit protection at exactly 15 days → lapsed, public pool",
                owned(Normal, WalkIn, 15 * day, true),
                "A O",
                Want {
                    public_pool: true,
                    ..want(to("A"))
                },
                "O A*",
            ),
            (
                "phone protection one second before 7 days → owner",
                owned(Normal, Phone, 7 * day - 1, true),
                "A",
                want(to("O")),
                "A",
            ),
            (
                "phone protection at exactly 7 days → public pool",
                owned(Normal, Phone, 7 * day, true),
                "A",
                Want {
                    public_pool: true,
                    ..want(to("A"))
                },
                "A*",
            ),
            (
                "phone customer at 10 days: lapsed, though a visit customer would not be",
                owned(Normal, Phone, 10 * day, true),
                "A",
                Want {
                    public_pool: true,
                    ..want(to("A"))
                },
                "A*",
            ),
            (
                "broker report one second before 15 days → owner",
                owned(Normal, Broker, 15 * day - 1, true),
                "A",
                want(to("O")),
                "A",
            ),
            (
                "broker report at exactly 15 days → public pool",
                owned(Normal, Broker, 15 * day, true),
                "A",
                Want {
                    public_pool: true,
                    ..want(to("A"))
                },
                "A*",
            ),
            (
                "no known follow-up → protection untracked, never lapses: owner",
                untracked(true),
                "A O",
                want(to("O")),
                "A O*",
            ),
            (
                "no known follow-up, owner off duty → stand-in, owner alerted, not public pool",
                untracked(false),
                "A",
                Want {
                    stand_in_for: Some("O"),
                    alert_owner: true,
                    ..want(to("A"))
                },
                "A*",
            ),
            (
                "last contact in the future (a skewed clock) → still protected",
                owned(Normal, WalkIn, -day, true),
                "A",
                want(to("O")),
                "A",
            ),
            (
                "owner off duty → the head stands in, the owner is alerted",
                owned(Normal, WalkIn, day, false),
                "A B",
                Want {
                    stand_in_for: Some("O"),
                    alert_owner: true,
                    ..want(to("A"))
                },
                "B A*",
            ),
            (
                "owner off duty, nobody on duty → no stand-in, the owner is still alerted",
                owned(Normal, WalkIn, day, false),
                "",
                Want {
                    alert_owner: true,
                    ..want(Receiver::NoneOnDuty)
                },
                "",
            ),
            (
                "owner off duty, everyone busy → no stand-in, the owner is still alerted",
                owned(Normal, WalkIn, day, false),
                "A* B*",
                Want {
                    alert_owner: true,
                    ..want(Receiver::AllBusy)
                },
                "A* B*",
            ),
            (
                "owner said off duty but heads the queue → the owner serves, no stand-in",
                owned(Normal, WalkIn, day, false),
                "O A",
                want(to("O")),
                "A O*",
            ),
            (
                "lapsed and owner off duty → public pool, no stand-in, no owner alert",
                owned(Normal, WalkIn, 20 * day, false),
                "A",
                Want {
                    public_pool: true,
                    ..want(to("A"))
                },
                "A*",
            ),
            (
                "lapsed, nobody on duty → public pool, nobody",
                owned(Normal, WalkIn, 20 * day, true),
                "",
                Want {
                    public_pool: true,
                    ..want(Receiver::NoneOnDuty)
                },
                "",
            ),
            (
                "unknown visitor, nobody on duty",
                None,
                "",
                want(Receiver::NoneOnDuty),
                "",
            ),
            (
                "unknown visitor, everyone busy",
                None,
                "A* B*",
                want(Receiver::AllBusy),
                "A* B*",
            ),
            (
                "gold member with a valid owner → owner, and the manager",
                owned(Gold, WalkIn, day, true),
                "A",
                Want {
                    alert_manager: true,
                    ..want(to("O"))
                },
                "A",
            ),
            (
                "gold member, owner off duty → stand-in, owner and manager alerted",
                owned(Gold, WalkIn, day, false),
                "A",
                Want {
                    stand_in_for: Some("O"),
                    alert_owner: true,
                    alert_manager: true,
                    ..want(to("A"))
                },
                "A*",
            ),
            (
                "gold member without owner, nobody on duty → the manager still hears",
                unowned(Gold),
                "",
                Want {
                    alert_manager: true,
                    ..want(Receiver::NoneOnDuty)
                },
                "",
            ),
            (
                "silver member → no manager alert",
                unowned(Silver),
                "A",
                want(to("A")),
                "A*",
            ),
        ];
        for (what, customer, before, expected, after) in cases {
            let facts = AssignFacts {
                customer,
                periods: ProtectionPeriods::DEFAULT,
                now,
            };
            let mut rotation = queue(before);
            let got = assign(&facts, &mut rotation);
            let expected = Assignment {
                consultant: expected.consultant,
                stand_in_for: expected.stand_in_for.map(str::to_owned),
                alert_owner: expected.alert_owner,
                public_pool: expected.public_pool,
                alert_manager: expected.alert_manager,
            };
            assert_eq!(got, expected, "{what}");
            assert_eq!(show(&rotation), after, "{what}: queue after");
        }
    }

    #[test]
    fn assignment_uses_the_given_periods() {
        // Periods come from the roster/config, not only the defaults.
        let now = at("2026-11-20T10:00:00Z");
        let periods = ProtectionPeriods {
            visit: DAY * 30,
            ..ProtectionPeriods::DEFAULT
        };
        let facts = |days: i64| AssignFacts {
            customer: Some(KnownCustomer {
                tier: Tier::Normal,
                owner: Some(Owner {
                    consultant_id: "O".into(),
                    source: Source::Outreach,
                    last_follow_up: Some(now - jiff::SignedDuration::from_hours(24 * days)),
                    on_duty: true,
                }),
            }),
            periods,
            now,
        };
        let cases = [(20, Some("O"), false), (30, Some("A"), true)];
        for (days, consultant, public_pool) in cases {
            let got = assign(&facts(days), &mut queue("A"));
            assert_eq!(got.consultant_id(), consultant, "{days} days");
            assert_eq!(got.public_pool, public_pool, "{days} days");
        }
    }

    #[test]
    fn visits_are_current_for_ten_minutes() {
        let now = at("2026-11-20T10:00:00Z");
        let secs = jiff::SignedDuration::from_secs;
        // (situation, seen, current)
        let cases = [
            ("a tap, now", now, true),
            ("a handheld's clock 3 min fast", now + secs(180), true),
            ("a Wi-Fi blip: seen 9 min ago", now - secs(540), true),
            ("seen exactly 10 min ago", now - secs(600), true),
            ("seen 10 min 1 s ago", now - secs(601), false),
            (
                "an offline PDA's queue from this morning",
                now - secs(4 * 3600),
                false,
            ),
            ("yesterday", now - secs(86_400), false),
        ];
        for (what, seen, current) in cases {
            assert_eq!(is_current(seen, now), current, "{what}");
        }
    }

    #[test]
    fn visits_after_the_fact_as_a_table() {
        let now = at("2026-11-20T10:00:00Z");
        let owned = |tier, days: i64, on_duty| {
            Some(KnownCustomer {
                tier,
                owner: Some(Owner {
                    consultant_id: "O".into(),
                    source: Source::Phone,
                    last_follow_up: Some(now - jiff::SignedDuration::from_hours(24 * days)),
                    on_duty,
                }),
            })
        };
        use Tier::*;
        // (situation, customer, assignment); the queue is "A B" and never moves.
        let cases: Vec<(&str, Option<KnownCustomer>, Want)> = vec![
            (
                "unknown visitor → nobody, no turn taken",
                None,
                want(Receiver::AfterTheFact),
            ),
            (
                "nobody owns them → nobody",
                Some(KnownCustomer {
                    tier: Normal,
                    owner: None,
                }),
                want(Receiver::AfterTheFact),
            ),
            (
                "protected owner on duty → the owner",
                owned(Normal, 2, true),
                want(to("O")),
            ),
            (
                "protected owner off duty → still the owner, no stand-in, no owner alert",
                owned(Normal, 2, false),
                want(to("O")),
            ),
            (
                "protection lapsed → public pool, nobody",
                owned(Normal, 8, true),
                Want {
                    public_pool: true,
                    ..want(Receiver::AfterTheFact)
                },
            ),
            (
                "gold member → the manager flag is kept for the record",
                owned(Gold, 2, true),
                Want {
                    alert_manager: true,
                    ..want(to("O"))
                },
            ),
        ];
        for (what, customer, expected) in cases {
            let facts = AssignFacts {
                customer,
                periods: ProtectionPeriods::DEFAULT,
                now,
            };
            let got = assign_after_the_fact(&facts);
            let expected = Assignment {
                consultant: expected.consultant,
                stand_in_for: expected.stand_in_for.map(str::to_owned),
                alert_owner: expected.alert_owner,
                public_pool: expected.public_pool,
                alert_manager: expected.alert_manager,
            };
            assert_eq!(got, expected, "{what}");
        }
    }

    #[test]
    fn broker_check_ins_as_a_table() {
        let registered_at = at("2026-11-01T10:00:00Z");
        let default_end = at("2026-11-16T10:00:00Z"); // registered_at + 15 days
        let explicit_end = at("2026-11-05T10:00:00Z");
        let reg = |broker: &str, expires_at| BrokerRegistration {
            broker_id: broker.into(),
            customer_id: "C1".into(),
            registered_at,
            expires_at,
        };
        let confirmed = Ok(Confirmed {
            broker_id: "B1".into(),
            customer_id: "C1".into(),
        });
        let second = jiff::SignedDuration::from_secs(1);
        // (situation, registration, scanned broker, now, result)
        let cases: Vec<(
            &str,
            Option<BrokerRegistration>,
            &str,
            Timestamp,
            CheckInResult,
        )> = vec![
            (
                "valid, default expiry",
                Some(reg("B1", None)),
                "B1",
                at("2026-11-10T10:00:00Z"),
                confirmed.clone(),
            ),
            (
                "default expiry, one second before",
                Some(reg("B1", None)),
                "B1",
                default_end - second,
                confirmed.clone(),
            ),
            (
                "default expiry, exactly at registered_at + 15 days",
                Some(reg("B1", None)),
                "B1",
                default_end,
                Err(Refusal::Expired {
                    expired_at: default_end,
                }),
            ),
            (
                "explicit expiry, one second before",
                Some(reg("B1", Some(explicit_end))),
                "B1",
                explicit_end - second,
                confirmed.clone(),
            ),
            (
                "explicit expiry wins over the default period, exactly at it",
                Some(reg("B1", Some(explicit_end))),
                "B1",
                explicit_end,
                Err(Refusal::Expired {
                    expired_at: explicit_end,
                }),
            ),
            (
                "scanned at the moment of registration",
                Some(reg("B1", None)),
                "B1",
                registered_at,
                confirmed.clone(),
            ),
            (
                "unknown code",
                None,
                "B1",
                at("2026-11-10T10:00:00Z"),
                Err(Refusal::UnknownRegistration),
            ),
            (
                "another broker holds a live registration",
                Some(reg("B2", None)),
                "B1",
                at("2026-11-10T10:00:00Z"),
                Err(Refusal::OtherBroker),
            ),
            (
                "another broker's registration has lapsed: the scanning broker has none",
                Some(reg("B2", None)),
                "B1",
                default_end,
                Err(Refusal::UnknownRegistration),
            ),
        ];
        for (what, registration, scanned, now, expected) in cases {
            let got = broker_check_in(
                registration.as_ref(),
                scanned,
                now,
                &ProtectionPeriods::DEFAULT,
            );
            assert_eq!(got, expected, "{what}");
        }
    }

    #[test]
    fn refusals_have_codes_and_bilingual_reasons() {
        let cases = [
            (Refusal::UnknownRegistration, "unknown_registration"),
            (
                Refusal::Expired {
                    expired_at: Timestamp::UNIX_EPOCH,
                },
                "registration_expired",
            ),
            (Refusal::OtherBroker, "other_broker"),
            (Refusal::MalformedCode, "malformed_broker_code"),
            (Refusal::UnknownCustomer, "unknown_customer"),
        ];
        for (refusal, code) in cases {
            assert_eq!(refusal.code(), code);
            let reason = refusal.reason();
            // English, then Chinese, for a console staffed in either.
            assert!(!reason.is_ascii() && reason.contains(" · "), "{reason}");
            assert_eq!(refusal.to_string(), reason);
        }
    }

    #[test]
    fn broker_codes_as_a_table() {
        let code = |b: &str, c: &str| {
            Some(Ok(BrokerCode {
                broker_id: b.into(),
                customer_id: c.into(),
            }))
        };
        let malformed = |b: Option<&str>| {
            Some(Err(MalformedCode {
                broker_id: b.map(str::to_owned),
            }))
        };
        // (token as read, what it is)
        let cases = [
            ("qr:broker:B1:C1", code("B1", "C1")),
            ("qr:broker:BRK-7:C-0001", code("BRK-7", "C-0001")),
            // A customer id may contain ':'; the broker id ends at the first one.
            ("qr:broker:B1:C:1", code("B1", "C:1")),
            ("qr:broker:B1", malformed(Some("B1"))),
            ("qr:broker:B1:", malformed(Some("B1"))),
            ("qr:broker::C1", malformed(None)),
            ("qr:broker:", malformed(None)),
            // Anything else is a card: a member's QR, another scheme, another case.
            ("qr:MEMBER-0104", None),
            ("qr:brokerB1:C1", None),
            ("qr:BROKER:B1:C1", None),
            ("nfc:04A1B2C3", None),
        ];
        for (token, expected) in cases {
            assert_eq!(parse_broker_code(token), expected, "{token}");
        }
    }

    #[test]
    fn sources_round_trip_and_periods_come_from_config() {
        for source in [
            Source::Outreach,
            Source::Phone,
            Source::WalkIn,
            Source::Broker,
        ] {
            assert_eq!(Source::parse(source.as_str()), Some(source));
        }
        assert_eq!(Source::parse("walk-in"), None);
        let mut config = kiosk_config::ReceptionConfig::defaults();
        assert_eq!(
            ProtectionPeriods::from_config(&config),
            ProtectionPeriods::DEFAULT
        );
        config.protection_phone = DAY * 3;
        assert_eq!(ProtectionPeriods::from_config(&config).phone, DAY * 3);
    }

    #[test]
    fn escalations_as_a_table() {
        let created = at("2026-11-20T10:00:00Z");
        let due = at("2026-11-20T10:01:00Z");
        let after_ms = |ms: i64| created + jiff::SignedDuration::from_millis(ms);
        // (situation, acked, now, escalate_after, step)
        let cases = [
            (
                "just created",
                false,
                created,
                DEFAULT_ESCALATE_AFTER,
                EscalationStep::Wait { until: due },
            ),
            (
                "59.999 s, not acked",
                false,
                after_ms(59_999),
                DEFAULT_ESCALATE_AFTER,
                EscalationStep::Wait { until: due },
            ),
            (
                "exactly 60 s, not acked",
                false,
                after_ms(60_000),
                DEFAULT_ESCALATE_AFTER,
                EscalationStep::Escalate,
            ),
            (
                "61 s, not acked",
                false,
                after_ms(61_000),
                DEFAULT_ESCALATE_AFTER,
                EscalationStep::Escalate,
            ),
            (
                "acked before the boundary",
                true,
                after_ms(10_000),
                DEFAULT_ESCALATE_AFTER,
                EscalationStep::Done,
            ),
            (
                "acked, looked at exactly at the boundary",
                true,
                after_ms(60_000),
                DEFAULT_ESCALATE_AFTER,
                EscalationStep::Done,
            ),
            (
                "acked, long after",
                true,
                after_ms(3_600_000),
                DEFAULT_ESCALATE_AFTER,
                EscalationStep::Done,
            ),
            (
                "a configured 30 s, at 29 s",
                false,
                after_ms(29_000),
                secs(30),
                EscalationStep::Wait {
                    until: after_ms(30_000),
                },
            ),
            (
                "a configured 30 s, at 30 s",
                false,
                after_ms(30_000),
                secs(30),
                EscalationStep::Escalate,
            ),
            (
                "a clock that stepped back",
                false,
                after_ms(-5_000),
                DEFAULT_ESCALATE_AFTER,
                EscalationStep::Wait { until: due },
            ),
            (
                "zero wait escalates at once",
                false,
                created,
                secs(0),
                EscalationStep::Escalate,
            ),
            (
                "due exactly 10 min ago (the kiosk was down): still escalates",
                false,
                after_ms(60_000 + 600_000),
                DEFAULT_ESCALATE_AFTER,
                EscalationStep::Escalate,
            ),
            (
                "due 10 min and 1 ms ago: stale, nobody is sent",
                false,
                after_ms(60_000 + 600_001),
                DEFAULT_ESCALATE_AFTER,
                EscalationStep::Stale,
            ),
            (
                "from yesterday, after a night off",
                false,
                after_ms(16 * 3_600_000),
                DEFAULT_ESCALATE_AFTER,
                EscalationStep::Stale,
            ),
            (
                "acked, from yesterday",
                true,
                after_ms(16 * 3_600_000),
                DEFAULT_ESCALATE_AFTER,
                EscalationStep::Done,
            ),
            (
                "an enormous wait never overflows",
                false,
                created,
                Duration::MAX,
                EscalationStep::Wait {
                    until: Timestamp::MAX,
                },
            ),
        ];
        for (what, acked, now, escalate_after, expected) in cases {
            assert_eq!(
                escalation(created, acked, now, escalate_after),
                expected,
                "{what}"
            );
        }
    }
}
