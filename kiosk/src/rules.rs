//! Reception rules with no I/O: from what the store knows about a tap to what the kiosk does.

use crate::reception::Refusal;

/// What the store found out about a tapped card, inside the tap's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapFacts {
    /// A phone or bank card presenting a random UID.
    pub random_uid: bool,
    /// The roster's card entry, if the card is in the roster.
    pub card: Option<CardFacts>,
    /// The customer already has a counted visit (welcome or broker confirmed) this office day.
    pub visited_today: bool,
    /// The customer had a counted visit on an earlier day.
    pub visited_before: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardFacts {
    pub active: bool,
}

/// What to do with a tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Greet and record a counted visit of this kind.
    Welcome(VisitKind),
    /// A broker's code matched the customer's registration (确客). `Some(kind)`: the
    /// customer's counted visit of the day, like a welcome. `None`: the customer was
    /// already counted today; the confirmation is recorded as evidence, uncounted (no kind).
    BrokerConfirmed(Option<VisitKind>),
    /// Greet again; the visit of the day already exists, nothing is recorded.
    Repeat,
    /// Not in the roster: record as evidence and for card issuing; "please see reception".
    Unknown,
    /// Recorded, not counted as a visit.
    Denied(DenyReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitKind {
    First,
    Revisit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// A random UID: a phone or bank card, never a member.
    NotAMembershipCard,
    /// The roster marks the card revoked (lost, replaced, withdrawn).
    CardRevoked,
    /// A broker's code that was refused, and why.
    Broker(Refusal),
}

impl DenyReason {
    /// The machine-readable code stored on the visit and sent to the hub.
    pub fn code(self) -> &'static str {
        match self {
            DenyReason::NotAMembershipCard => "not_a_membership_card",
            DenyReason::CardRevoked => "card_revoked",
            DenyReason::Broker(refusal) => refusal.code(),
        }
    }
}

impl VisitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VisitKind::First => "first",
            VisitKind::Revisit => "revisit",
        }
    }
}

/// Decides a tap. One counted visit per customer per office day; every tap greets.
pub fn decide(facts: &TapFacts) -> Decision {
    if facts.random_uid {
        return Decision::Denied(DenyReason::NotAMembershipCard);
    }
    match &facts.card {
        None => Decision::Unknown,
        Some(card) if !card.active => Decision::Denied(DenyReason::CardRevoked),
        Some(_) if facts.visited_today => Decision::Repeat,
        Some(_) if facts.visited_before => Decision::Welcome(VisitKind::Revisit),
        Some(_) => Decision::Welcome(VisitKind::First),
    }
}

/// What the store found out about a scanned broker code, inside the scan's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerFacts {
    /// The code read, named a known customer and matched a live registration of that
    /// broker (`reception::broker_check_in`), or why not.
    pub check: Result<(), Refusal>,
    /// The customer already has a counted visit this office day.
    pub visited_today: bool,
    /// The customer had a counted visit on an earlier day.
    pub visited_before: bool,
    /// This broker's arrival with the customer is already recorded today.
    pub confirmed_today: bool,
}

/// Decides a broker's scan. A confirmation counts as the customer's office visit of the
/// day unless one is counted already; a second scan of the same code the same day only
/// greets again.
pub fn decide_broker(facts: &BrokerFacts) -> Decision {
    match facts.check {
        Err(refusal) => Decision::Denied(DenyReason::Broker(refusal)),
        Ok(()) if facts.confirmed_today => Decision::Repeat,
        Ok(()) if facts.visited_today => Decision::BrokerConfirmed(None),
        Ok(()) if facts.visited_before => Decision::BrokerConfirmed(Some(VisitKind::Revisit)),
        Ok(()) => Decision::BrokerConfirmed(Some(VisitKind::First)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_as_a_table() {
        let active = Some(CardFacts { active: true });
        let revoked = Some(CardFacts { active: false });
        // (random_uid, card, visited_today, visited_before) → decision
        let cases = [
            (
                false,
                active.clone(),
                false,
                false,
                Decision::Welcome(VisitKind::First),
            ),
            (
                false,
                active.clone(),
                false,
                true,
                Decision::Welcome(VisitKind::Revisit),
            ),
            (false, active.clone(), true, true, Decision::Repeat),
            (false, active.clone(), true, false, Decision::Repeat),
            (false, None, false, false, Decision::Unknown),
            (
                false,
                revoked.clone(),
                false,
                false,
                Decision::Denied(DenyReason::CardRevoked),
            ),
            (
                false,
                revoked,
                true,
                true,
                Decision::Denied(DenyReason::CardRevoked),
            ),
            (
                true,
                None,
                false,
                false,
                Decision::Denied(DenyReason::NotAMembershipCard),
            ),
            // A random UID can never be a member, even if someone put it in the roster.
            (
                true,
                active,
                false,
                false,
                Decision::Denied(DenyReason::NotAMembershipCard),
            ),
        ];
        for (random_uid, card, visited_today, visited_before, expected) in cases {
            let facts = TapFacts {
                random_uid,
                card,
                visited_today,
                visited_before,
            };
            assert_eq!(decide(&facts), expected, "{facts:?}");
        }
    }

    #[test]
    fn broker_scans_as_a_table() {
        use VisitKind::*;
        let ok = Ok(());
        // (check, visited_today, visited_before, confirmed_today) → decision
        let cases = [
            (
                ok,
                false,
                false,
                false,
                Decision::BrokerConfirmed(Some(First)),
            ),
            (
                ok,
                false,
                true,
                false,
                Decision::BrokerConfirmed(Some(Revisit)),
            ),
            // The customer tapped their card first: the confirmation is evidence only.
            (ok, true, false, false, Decision::BrokerConfirmed(None)),
            (ok, true, true, false, Decision::BrokerConfirmed(None)),
            // The same broker's code again the same day: greeted, nothing recorded.
            (ok, true, true, true, Decision::Repeat),
            (
                Err(Refusal::OtherBroker),
                false,
                false,
                false,
                Decision::Denied(DenyReason::Broker(Refusal::OtherBroker)),
            ),
            // A refusal stays a refusal whatever the customer's day looks like.
            (
                Err(Refusal::UnknownRegistration),
                true,
                true,
                true,
                Decision::Denied(DenyReason::Broker(Refusal::UnknownRegistration)),
            ),
            (
                Err(Refusal::MalformedCode),
                false,
                false,
                false,
                Decision::Denied(DenyReason::Broker(Refusal::MalformedCode)),
            ),
        ];
        for (check, visited_today, visited_before, confirmed_today, expected) in cases {
            let facts = BrokerFacts {
                check,
                visited_today,
                visited_before,
                confirmed_today,
            };
            assert_eq!(decide_broker(&facts), expected, "{facts:?}");
        }
        assert_eq!(
            DenyReason::Broker(Refusal::UnknownCustomer).code(),
            "unknown_customer"
        );
    }
}
