//! Wire types that cross from a kiosk to the hub; additive changes only, versioned by [`PROTOCOL_HEADER`].
//!
//! The kiosk freezes a record's JSON into its outbox in the same transaction that
//! stores the visit, so what the hub receives is exactly what was acknowledged.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// HTTP header carrying [`PROTOCOL_VERSION`] on every sync request.
pub const PROTOCOL_HEADER: &str = "x-kiosk-protocol";
/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// One upstream record. The `kind` tag lets new kinds (card bindings, consents)
/// be added without touching old ones; `record` carries the kind's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "record", rename_all = "snake_case")]
pub enum Record {
    Visit(VisitRecord),
}

impl Record {
    pub fn id(&self) -> Uuid {
        match self {
            Record::Visit(v) => v.id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Record::Visit(_) => "visit",
        }
    }
}

/// A visit as the hub receives it (design §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisitRecord {
    /// UUIDv7 made where the visit happened; the hub's permanent dedup key.
    pub id: Uuid,
    pub kiosk_id: String,
    pub office_id: String,
    /// Per kiosk, gap-free, from 1: the hub's ordering, never device clocks.
    pub seq: u64,
    /// The reader's name, or the handheld's device id.
    pub source: String,
    pub method: Method,
    /// Normalized card token; absent for a manual visit by customer id.
    pub card: Option<String>,
    pub customer_id: Option<String>,
    pub outcome: Outcome,
    /// Why a tap was denied (machine-readable code), when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// First visit or revisit; only for a welcomed customer.
    pub kind: Option<VisitKind>,
    pub consultant_id: Option<String>,
    pub stand_in: bool,
    /// The kiosk's clock at the tap.
    pub device_time: jiff::Timestamp,
    /// The kiosk's clock when the visit committed.
    pub recorded_at: jiff::Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Nfc,
    Em4100,
    Wiegand,
    Qr,
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Welcome,
    Unknown,
    Denied,
    BrokerConfirmed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitKind {
    First,
    Revisit,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_visit_record_has_the_documented_shape() {
        let record = Record::Visit(VisitRecord {
            id: Uuid::nil(),
            kiosk_id: "k1".into(),
            office_id: "o1".into(),
            seq: 7,
            source: "ACS ACR122U 00 00".into(),
            method: Method::Nfc,
            card: Some("nfc:04A1B2C3".into()),
            customer_id: Some("C001".into()),
            outcome: Outcome::Welcome,
            reason: None,
            kind: Some(VisitKind::First),
            consultant_id: Some("E01".into()),
            stand_in: false,
            device_time: "2026-11-23T02:00:00Z".parse().expect("time"),
            recorded_at: "2026-11-23T02:00:00.001Z".parse().expect("time"),
        });
        let json = serde_json::to_value(&record).expect("serialize");
        assert_eq!(json["kind"], "visit");
        assert_eq!(json["record"]["seq"], 7);
        assert_eq!(json["record"]["kind"], "first");
        assert_eq!(json["record"]["outcome"], "welcome");
        assert_eq!(json["record"]["device_time"], "2026-11-23T02:00:00Z");
        let back: Record = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, record);
    }
}
