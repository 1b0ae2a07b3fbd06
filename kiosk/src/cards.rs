//! Card issuing at the desk (发卡, 挂失): staff list unknown cards, bind one to a customer or a new walk-in, revoke a lost one; each change and its outbox record are one transaction, and a binding the hub rejects is undone.
//!
//! A walk-in's full name and phone travel only in the binding's outbox record, for the
//! hub: the kiosk's roster tables get the surname and title, as for every customer.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kiosk_device::CardToken;
use kiosk_sync::{auth, wire};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::{ApiError, ApiState, ErrorBody};
use crate::handheld;
use crate::roster::{Title, valid_surname};
use crate::rotation::{load_rotation, save_rotation};
use crate::store::{Identity, ReadDb, Store, StoreError};

/// Largest accepted body, as for handheld posts: a binding is a few hundred bytes.
pub const BODY_LIMIT: usize = handheld::BODY_LIMIT;
/// Longest full name, as the roster CSV allows.
const NAME_MAX: usize = 64;
/// Longest revocation reason, in characters (it becomes the card's note).
const REASON_MAX: usize = 200;
/// Lists: how many entries by default, and at most.
const LIST_DEFAULT: u32 = 50;
const LIST_MAX: u32 = 500;
/// A walk-in registered here gets `w-` + a UUIDv7: unique without asking the hub.
const WALK_IN_PREFIX: &str = "w-";

const BIND_SHAPE: &str = "the body is {\"id\": UUID, \"card\": token, and either \"customer_id\": id or \"new_customer\": {\"name\", \"surname\", \"title\": \"mr\"|\"ms\", \"phone\", \"source\": \"outreach\"|\"phone\"|\"walk_in\"|\"broker\", \"consent\": true, \"notice_version\" (optional)}}";
const REVOKE_SHAPE: &str =
    "the body is {\"id\": UUID, \"card\": token, \"reason\": text (optional)}";

// ---------------------------------------------------------------------------------------------
// Requests, parsed strictly (no I/O)

/// `POST /api/v1/cards/bind` as sent. Unknown fields are errors, here and in
/// `new_customer`, so a typo never drops a field silently. Its schema's fields are this
/// struct's; `openapi::CardBindPost` turns it into the two shapes `parse_bind` accepts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BindBody {
    /// Made by the console (a UUIDv7 is best); the same id again is the same request.
    id: Uuid,
    /// The card's token, as the unbound list or a reader gives it.
    card: String,
    /// An existing customer of the roster.
    #[schema(pattern = r"\S")]
    customer_id: Option<String>,
    /// A walk-in registered now.
    new_customer: Option<NewCustomerBody>,
}

/// A walk-in as the desk registers them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCustomerBody {
    /// Full name, for the hub only: the kiosk keeps surname and title.
    #[schema(min_length = 1, max_length = 64)]
    name: String,
    /// Family name only (张, 欧阳, Smith): the screen says 张先生.
    surname: String,
    title: TitleBody,
    /// Digits with an optional leading `+`; spaces and dashes are ignored. For the hub only.
    phone: String,
    source: SourceBody,
    /// Consent to data processing (PIPL); must be true.
    consent: bool,
    /// The privacy notice's version the customer was shown; the configured
    /// `reception.privacy_notice_version` when absent, and it must be that one.
    notice_version: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TitleBody {
    Mr,
    Ms,
}

/// Where the customer came from (拓客, 来电, 自访, 渠道).
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SourceBody {
    Outreach,
    Phone,
    WalkIn,
    Broker,
}

impl SourceBody {
    fn as_str(self) -> &'static str {
        match self {
            SourceBody::Outreach => "outreach",
            SourceBody::Phone => "phone",
            SourceBody::WalkIn => "walk_in",
            SourceBody::Broker => "broker",
        }
    }
}

/// `POST /api/v1/cards/revoke` as sent; `openapi::CardRevokePost` adds the card's pattern.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeBody {
    /// Made by the console; the same id again is the same request.
    id: Uuid,
    /// The card's token.
    card: String,
    /// Why (lost, replaced); kept as the card's note and shown to staff on its next tap.
    #[schema(max_length = 200)]
    reason: Option<String>,
}

/// A binding, validated.
#[derive(Debug, Clone)]
pub struct BindRequest {
    pub id: Uuid,
    /// The staff device that asks.
    pub device: String,
    pub card: CardToken,
    pub target: Target,
    /// SHA-256 of the request as understood: the same id must come with the same body.
    pub body_hash: String,
}

/// Whom the card is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Customer(String),
    WalkIn(WalkIn),
}

/// A new walk-in, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkIn {
    pub name: String,
    pub surname: String,
    pub title: Title,
    /// Digits, with a leading `+` when one was given.
    pub phone: String,
    /// outreach, phone, walk_in or broker.
    pub source: &'static str,
    pub notice_version: String,
}

/// A revocation, validated.
#[derive(Debug, Clone)]
pub struct RevokeRequest {
    pub id: Uuid,
    pub device: String,
    pub card: CardToken,
    pub reason: Option<String>,
    pub body_hash: String,
}

/// The request as understood, whose JSON is hashed: two spellings of one card or one
/// phone number are the same request; a bind and a revoke never are.
#[derive(Debug, Serialize)]
struct Canonical<'a> {
    op: &'static str,
    id: Uuid,
    card: &'a str,
    customer_id: Option<&'a str>,
    new_customer: Option<CanonicalCustomer<'a>>,
    reason: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct CanonicalCustomer<'a> {
    name: &'a str,
    surname: &'a str,
    title: &'static str,
    phone: &'a str,
    source: &'static str,
    /// As sent: a retry without it is the same request even if the configured
    /// version changed meanwhile.
    notice_version: Option<&'a str>,
}

fn unprocessable(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// The body as a JSON object: malformed JSON is a 400, anything else than an object a 422.
fn json_object(bytes: &[u8], shape: &str) -> Result<serde_json::Value, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("the body is not JSON: {e}"),
        )
    })?;
    // serde would also read a struct from an array.
    if !value.is_object() {
        return Err(unprocessable(
            "invalid",
            format!("the body must be a JSON object; {shape}"),
        ));
    }
    Ok(value)
}

/// A card token that may be a member's: well formed, and not a phone's random UID.
fn member_card(text: &str) -> Result<CardToken, ApiError> {
    let token = CardToken::parse(text)
        .map_err(|e| unprocessable("invalid", format!("card {text:?}: {e}")))?;
    if token.is_random_uid() {
        return Err(unprocessable(
            "not_a_membership_card",
            format!(
                "card {token} is a random UID (a phone or bank card), which changes on every tap; issue a membership card instead"
            ),
        ));
    }
    Ok(token)
}

/// One spelling per number, the hub's: the kiosk accepts exactly the phones the hub will,
/// so a walk-in is never refused later for how the number was written.
pub(crate) fn normalize_phone(text: &str) -> Result<String, String> {
    kiosk_sync::hub::server::normalize_phone(text)
}

fn walk_in(body: &NewCustomerBody, current_notice: &str) -> Result<WalkIn, ApiError> {
    let name = body.name.trim();
    // Counted as sent, as the schema's maxLength is.
    let chars = body.name.chars().count();
    if name.is_empty() || chars > NAME_MAX || name.chars().any(char::is_control) {
        return Err(unprocessable(
            "invalid",
            format!(
                "new_customer.name: write the customer's full name, 1 to {NAME_MAX} characters"
            ),
        ));
    }
    let surname = body.surname.trim();
    if !valid_surname(surname) {
        return Err(unprocessable(
            "invalid",
            format!(
                "new_customer.surname: {surname:?} is not a family name; write the family name only (e.g. 张 or 欧阳), the screen shows it as 张先生"
            ),
        ));
    }
    let phone = normalize_phone(&body.phone)
        .map_err(|e| unprocessable("invalid", format!("new_customer.{e}")))?;
    if !body.consent {
        return Err(unprocessable(
            "consent_required",
            "new_customer.consent must be true: show the customer the privacy notice and register them only once they agree".into(),
        ));
    }
    if let Some(shown) = body
        .notice_version
        .as_ref()
        .filter(|v| *v != current_notice)
    {
        return Err(unprocessable(
            "notice_outdated",
            format!(
                "new_customer.notice_version {shown:?} is not the current privacy notice; the current one is {current_notice:?}: show it to the customer and ask again"
            ),
        ));
    }
    Ok(WalkIn {
        name: name.to_owned(),
        surname: surname.to_owned(),
        title: match body.title {
            TitleBody::Mr => Title::Mr,
            TitleBody::Ms => Title::Ms,
        },
        phone,
        source: body.source.as_str(),
        notice_version: current_notice.to_owned(),
    })
}

fn hash(canonical: &Canonical<'_>) -> Result<String, ApiError> {
    serde_json::to_string(canonical)
        .map(|json| auth::hash(&json))
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot encode the request: {e}"),
            )
        })
}

/// A binding's body, read strictly: malformed JSON is a 400; anything that is not a
/// binding a kiosk can make (unknown or missing fields, a bad or random card, a bad phone,
/// no consent, an outdated notice) is a 422 that says what to fix.
pub(crate) fn parse_bind(
    bytes: &[u8],
    device: &str,
    current_notice: &str,
) -> Result<BindRequest, ApiError> {
    let value = json_object(bytes, BIND_SHAPE)?;
    let body = BindBody::deserialize(value)
        .map_err(|e| unprocessable("invalid", format!("{e}; {BIND_SHAPE}")))?;
    let card = member_card(&body.card)?;
    let target = match (&body.customer_id, &body.new_customer) {
        (Some(id), None) if !id.trim().is_empty() => Target::Customer(id.trim().to_owned()),
        (Some(_), None) => return Err(unprocessable("invalid", "customer_id is empty".into())),
        (None, Some(new)) => Target::WalkIn(walk_in(new, current_notice)?),
        (Some(_), Some(_)) => {
            return Err(unprocessable(
                "invalid",
                "send either customer_id (an existing customer) or new_customer (a walk-in), not both".into(),
            ));
        }
        (None, None) => {
            return Err(unprocessable(
                "invalid",
                "say whose card it is: customer_id (an existing customer) or new_customer (a walk-in)".into(),
            ));
        }
    };
    let body_hash = hash(&Canonical {
        op: "bind",
        id: body.id,
        card: card.as_str(),
        customer_id: match &target {
            Target::Customer(id) => Some(id),
            Target::WalkIn(_) => None,
        },
        new_customer: match &target {
            Target::Customer(_) => None,
            Target::WalkIn(w) => Some(CanonicalCustomer {
                name: &w.name,
                surname: &w.surname,
                title: w.title.as_str(),
                phone: &w.phone,
                source: w.source,
                notice_version: body
                    .new_customer
                    .as_ref()
                    .and_then(|n| n.notice_version.as_deref()),
            }),
        },
        reason: None,
    })?;
    Ok(BindRequest {
        id: body.id,
        device: device.to_owned(),
        card,
        target,
        body_hash,
    })
}

/// A revocation's body, read like a binding's.
pub(crate) fn parse_revoke(bytes: &[u8], device: &str) -> Result<RevokeRequest, ApiError> {
    let value = json_object(bytes, REVOKE_SHAPE)?;
    let body = RevokeBody::deserialize(value)
        .map_err(|e| unprocessable("invalid", format!("{e}; {REVOKE_SHAPE}")))?;
    // Revoking a phone's UID is harmless, but it was never a member's card either.
    let card = CardToken::parse(&body.card)
        .map_err(|e| unprocessable("invalid", format!("card {:?}: {e}", body.card)))?;
    let reason = body
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if let Some(r) = &body.reason {
        // Counted as sent, as the schema's maxLength is.
        let chars = r.chars().count();
        if chars > REASON_MAX {
            return Err(unprocessable(
                "invalid",
                format!("the reason has {chars} characters; keep it to {REASON_MAX}"),
            ));
        }
        if r.chars().any(char::is_control) {
            return Err(unprocessable(
                "invalid",
                "the reason has a line break or another control character; write it on one line"
                    .into(),
            ));
        }
    }
    let body_hash = hash(&Canonical {
        op: "revoke",
        id: body.id,
        card: card.as_str(),
        customer_id: None,
        new_customer: None,
        reason,
    })?;
    Ok(RevokeRequest {
        id: body.id,
        device: device.to_owned(),
        reason: reason.map(str::to_owned),
        card,
        body_hash,
    })
}

// ---------------------------------------------------------------------------------------------
// In the store

/// A card change as stored, with what the hub made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardChange {
    pub id: Uuid,
    pub seq: u64,
    /// bind or revoke.
    pub op: String,
    pub card: String,
    pub customer_id: Option<String>,
    /// A binding's: the walk-in's consultant (the rotation's turn), or the customer's.
    pub consultant_id: Option<String>,
    pub by: String,
    pub at: String,
    /// A revocation's reason.
    pub note: Option<String>,
    pub sync: SyncState,
}

/// Where a change's outbox record stands with the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    /// Not sent yet (or sent without an answer yet).
    Pending,
    /// The hub holds it.
    Accepted,
    /// The hub refused it, for this reason; a binding was undone here.
    Rejected(String),
}

impl SyncState {
    pub fn as_str(&self) -> &'static str {
        match self {
            SyncState::Pending => "pending",
            SyncState::Accepted => "accepted",
            SyncState::Rejected(_) => "rejected",
        }
    }
}

/// A change made now, or the stored one of a retried request.
#[derive(Debug, Clone)]
pub struct Changed {
    pub change: CardChange,
    /// The same request came before: nothing was written now.
    pub replay: bool,
}

/// A change refused by what is stored; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardRefusal {
    #[error(
        "no customer with id {0:?} in this kiosk's roster; check the id, or register the visitor with new_customer"
    )]
    UnknownCustomer(String),
    #[error(
        "card {card} is already active for customer {customer}; bind another card, or revoke this one first if it was lost or handed on"
    )]
    CardTaken { card: String, customer: String },
    #[error(
        "id {0} was already used for another request; make a new UUID for each new change and send the same body when retrying"
    )]
    IdUsed(Uuid),
    #[error(
        "no card {0} in this kiosk's roster; check the token (GET /api/v1/cards/changes lists the cards bound here)"
    )]
    UnknownCard(String),
    #[error("card {0} is already revoked; nothing to do")]
    AlreadyRevoked(String),
}

impl CardRefusal {
    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            CardRefusal::UnknownCustomer(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "unknown_customer")
            }
            CardRefusal::CardTaken { .. } => (StatusCode::CONFLICT, "card_taken"),
            CardRefusal::IdUsed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "id_used"),
            CardRefusal::UnknownCard(_) => (StatusCode::NOT_FOUND, "unknown_card"),
            CardRefusal::AlreadyRevoked(_) => (StatusCode::CONFLICT, "already_revoked"),
        }
    }
}

/// A card's row before a binding replaced it: put back if the hub rejects the binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CardRow {
    customer_id: String,
    status: String,
    note: Option<String>,
    low24_only: bool,
}

fn card_row(conn: &Connection, token: &str) -> rusqlite::Result<Option<CardRow>> {
    conn.prepare_cached("SELECT customer_id, status, note, low24_only FROM cards WHERE token = ?1")?
        .query_row([token], |r| {
            Ok(CardRow {
                customer_id: r.get(0)?,
                status: r.get(1)?,
                note: r.get(2)?,
                low24_only: r.get(3)?,
            })
        })
        .optional()
}

const CHANGE_SELECT: &str =
    "SELECT cc.id, cc.seq, cc.op, cc.card, cc.customer_id, cc.consultant_id,
        cc.by_device, cc.at, cc.note, o.seq IS NULL OR o.sent_at IS NOT NULL, q.reason
    FROM card_changes cc
    LEFT JOIN outbox o ON o.seq = cc.seq
    LEFT JOIN quarantine q ON q.seq = cc.seq";

fn change_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CardChange> {
    let id: String = r.get(0)?;
    let sent: bool = r.get(9)?;
    let rejected: Option<String> = r.get(10)?;
    Ok(CardChange {
        id: Uuid::parse_str(&id).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?,
        seq: r.get(1)?,
        op: r.get(2)?,
        card: r.get(3)?,
        customer_id: r.get(4)?,
        consultant_id: r.get(5)?,
        by: r.get(6)?,
        at: r.get(7)?,
        note: r.get(8)?,
        sync: match (rejected, sent) {
            (Some(reason), _) => SyncState::Rejected(reason),
            (None, true) => SyncState::Accepted,
            (None, false) => SyncState::Pending,
        },
    })
}

fn change_by_id(conn: &Connection, id: &str) -> rusqlite::Result<CardChange> {
    conn.prepare_cached(&format!("{CHANGE_SELECT} WHERE cc.id = ?1"))?
        .query_row([id], change_from_row)
}

/// The stored answer when `id` was used before: the change itself for the same device
/// and body, a refusal for anything else (another body, a visit's id).
fn seen(
    conn: &Connection,
    id: Uuid,
    device: &str,
    body_hash: &str,
) -> Result<Option<Result<Changed, CardRefusal>>, StoreError> {
    let key = id.to_string();
    let found: Option<(String, String)> = conn
        .prepare_cached("SELECT by_device, body_hash FROM card_changes WHERE id = ?1")?
        .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((by, hash)) = found {
        if by != device || hash != body_hash {
            return Ok(Some(Err(CardRefusal::IdUsed(id))));
        }
        return Ok(Some(Ok(Changed {
            change: change_by_id(conn, &key)?,
            replay: true,
        })));
    }
    // Every outbox record id is unique: a visit's id cannot name a card change too.
    let taken: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM outbox WHERE record_id = ?1)")?
        .query_row([&key], |r| r.get(0))?;
    Ok(taken.then_some(Err(CardRefusal::IdUsed(id))))
}

/// The next outbox seq, shared with visits: gap-free over every kind of record.
fn next_seq(conn: &Connection) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "UPDATE counters SET value = value + 1 WHERE name = 'outbox_seq' RETURNING value",
    )?
    .query_row([], |r| r.get(0))
}

fn outbox_insert(conn: &Connection, record: &wire::Record) -> Result<(), StoreError> {
    let body = serde_json::to_string(record)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.prepare_cached("INSERT INTO outbox (seq, record_id, kind, body) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![
            record.seq(),
            record.id().to_string(),
            record.kind(),
            body
        ])?;
    Ok(())
}

/// The walk-in's consultant: the rotation's next free one, who takes the turn (and the
/// visitor) and moves to the tail. None when nobody is free, or when the head has left
/// the roster (a customer's consultant must be in it); the queue is then unchanged.
fn walk_in_consultant(conn: &Connection) -> Result<Option<String>, StoreError> {
    let mut rotation = load_rotation(conn)?;
    let Some(next) = rotation.next_for_walk_in() else {
        return Ok(None);
    };
    let known: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM consultants WHERE id = ?1)")?
        .query_row([&next], |r| r.get(0))?;
    if !known {
        tracing::warn!(
            consultant = %next,
            "the rotation's next consultant is not in the roster; the walk-in gets no consultant"
        );
        return Ok(None);
    }
    save_rotation(conn, &rotation)?;
    Ok(Some(next))
}

/// Binds a card in the caller's transaction, or answers a request seen before; the
/// caller commits. Every check comes before the first write, so a refusal writes nothing.
pub(crate) fn bind_in(
    conn: &Connection,
    identity: &Identity,
    req: &BindRequest,
    now: jiff::Timestamp,
) -> Result<Result<Changed, CardRefusal>, StoreError> {
    if let Some(answer) = seen(conn, req.id, &req.device, &req.body_hash)? {
        return Ok(answer);
    }
    let card = req.card.as_str();
    let existing_consultant = match &req.target {
        Target::Customer(id) => {
            let found: Option<Option<String>> = conn
                .prepare_cached("SELECT consultant_id FROM customers WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            match found {
                Some(consultant) => consultant,
                None => return Ok(Err(CardRefusal::UnknownCustomer(id.clone()))),
            }
        }
        Target::WalkIn(_) => None,
    };
    let replaced = card_row(conn, card)?;
    if let Some(row) = &replaced {
        let same = matches!(&req.target, Target::Customer(id) if *id == row.customer_id);
        if row.status == "active" && !same {
            return Ok(Err(CardRefusal::CardTaken {
                card: card.to_owned(),
                customer: row.customer_id.clone(),
            }));
        }
    }
    let now_text = now.to_string();
    let (customer_id, consultant_id, new_customer) = match &req.target {
        Target::Customer(id) => (id.clone(), existing_consultant, None),
        Target::WalkIn(w) => {
            let consultant = walk_in_consultant(conn)?;
            let id = format!("{WALK_IN_PREFIX}{}", Uuid::now_v7());
            // Surname and title only: the full name and phone go to the hub alone.
            conn.prepare_cached(
                "INSERT INTO customers (id, surname, title, tier, consultant_id, source, last_follow_up)
                 VALUES (?1, ?2, ?3, 'normal', ?4, ?5, ?6)",
            )?
            .execute(params![
                id,
                w.surname,
                w.title.as_str(),
                consultant,
                w.source,
                now_text
            ])?;
            let new = wire::NewCustomer {
                name: w.name.clone(),
                surname: w.surname.clone(),
                title: w.title.as_str().to_owned(),
                phone: w.phone.clone(),
                source: w.source.to_owned(),
                consultant_id: consultant.clone(),
                consent: wire::Consent {
                    notice_version: w.notice_version.clone(),
                    given_at: now,
                },
            };
            (id, consultant, Some(new))
        }
    };
    conn.prepare_cached(
        "INSERT INTO cards (token, customer_id, status, note, low24_only) VALUES (?1, ?2, 'active', NULL, 0)
         ON CONFLICT (token) DO UPDATE SET customer_id = excluded.customer_id,
             status = 'active', note = NULL, low24_only = 0",
    )?
    .execute(params![card, customer_id])?;
    let seq = next_seq(conn)?;
    let replaced_json = replaced
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.prepare_cached(
        "INSERT INTO card_changes (id, seq, op, card, customer_id, by_device, at, body_hash,
                                   consultant_id, note, replaced)
         VALUES (?1, ?2, 'bind', ?3, ?4, ?5, ?6, ?7, ?8, NULL, ?9)",
    )?
    .execute(params![
        req.id.to_string(),
        seq,
        card,
        customer_id,
        req.device,
        now_text,
        req.body_hash,
        consultant_id,
        replaced_json
    ])?;
    let record = wire::Record::CardBinding(wire::CardBindingRecord {
        id: req.id,
        kiosk_id: identity.kiosk_id.clone(),
        office_id: identity.office_id.clone(),
        seq,
        card: card.to_owned(),
        customer_id: customer_id.clone(),
        new_customer,
        by: req.device.clone(),
        bound_at: now,
    });
    outbox_insert(conn, &record)?;
    Ok(Ok(Changed {
        change: CardChange {
            id: req.id,
            seq,
            op: "bind".into(),
            card: card.to_owned(),
            customer_id: Some(customer_id),
            consultant_id,
            by: req.device.clone(),
            at: now_text,
            note: None,
            sync: SyncState::Pending,
        },
        replay: false,
    }))
}

/// Revokes a card in the caller's transaction, or answers a request seen before.
pub(crate) fn revoke_in(
    conn: &Connection,
    identity: &Identity,
    req: &RevokeRequest,
    now: jiff::Timestamp,
) -> Result<Result<Changed, CardRefusal>, StoreError> {
    if let Some(answer) = seen(conn, req.id, &req.device, &req.body_hash)? {
        return Ok(answer);
    }
    let card = req.card.as_str();
    let Some(row) = card_row(conn, card)? else {
        return Ok(Err(CardRefusal::UnknownCard(card.to_owned())));
    };
    if row.status == "revoked" {
        return Ok(Err(CardRefusal::AlreadyRevoked(card.to_owned())));
    }
    let now_text = now.to_string();
    conn.prepare_cached("UPDATE cards SET status = 'revoked', note = ?2 WHERE token = ?1")?
        .execute(params![card, req.reason])?;
    let seq = next_seq(conn)?;
    conn.prepare_cached(
        "INSERT INTO card_changes (id, seq, op, card, customer_id, by_device, at, body_hash,
                                   consultant_id, note, replaced)
         VALUES (?1, ?2, 'revoke', ?3, ?4, ?5, ?6, ?7, NULL, ?8, NULL)",
    )?
    .execute(params![
        req.id.to_string(),
        seq,
        card,
        row.customer_id,
        req.device,
        now_text,
        req.body_hash,
        req.reason
    ])?;
    let record = wire::Record::CardRevocation(wire::CardRevocationRecord {
        id: req.id,
        kiosk_id: identity.kiosk_id.clone(),
        office_id: identity.office_id.clone(),
        seq,
        card: card.to_owned(),
        reason: req.reason.clone(),
        by: req.device.clone(),
        revoked_at: now,
    });
    outbox_insert(conn, &record)?;
    Ok(Ok(Changed {
        change: CardChange {
            id: req.id,
            seq,
            op: "revoke".into(),
            card: card.to_owned(),
            customer_id: Some(row.customer_id),
            consultant_id: None,
            by: req.device.clone(),
            at: now_text,
            note: req.reason.clone(),
            sync: SyncState::Pending,
        },
        replay: false,
    }))
}

/// Undoes a binding the hub rejected, in the caller's transaction (sync's settle step,
/// which quarantines the record in the same one). The card gets back the row it had
/// before (or none), unless the roster or a later binding changed it since; a walk-in
/// made by the binding goes unless a card or a visit refers to them. The roster pull
/// then brings the hub's truth. Anything but a binding is left alone.
pub(crate) fn revert_rejected(conn: &Connection, body: &str) -> rusqlite::Result<()> {
    let Ok(wire::Record::CardBinding(b)) = serde_json::from_str::<wire::Record>(body) else {
        return Ok(());
    };
    let replaced: Option<CardRow> = conn
        .prepare_cached("SELECT replaced FROM card_changes WHERE id = ?1")?
        .query_row([b.id.to_string()], |r| r.get::<_, Option<String>>(0))
        .optional()?
        .flatten()
        .and_then(|json| serde_json::from_str(&json).ok());
    let superseded: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM card_changes WHERE card = ?1 AND op = 'bind' AND seq > ?2)",
        )?
        .query_row(params![b.card, b.seq], |r| r.get(0))?;
    let still_ours = card_row(conn, &b.card)?.is_some_and(|row| row.customer_id == b.customer_id);
    if still_ours && !superseded {
        let restorable = match &replaced {
            Some(row) => conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM customers WHERE id = ?1)")?
                .query_row([&row.customer_id], |r| r.get(0))?,
            None => false,
        };
        match replaced.filter(|_| restorable) {
            Some(row) => {
                conn.prepare_cached(
                    "UPDATE cards SET customer_id = ?2, status = ?3, note = ?4, low24_only = ?5 WHERE token = ?1",
                )?
                .execute(params![
                    b.card,
                    row.customer_id,
                    row.status,
                    row.note,
                    row.low24_only
                ])?;
            }
            None => {
                conn.prepare_cached("DELETE FROM cards WHERE token = ?1")?
                    .execute([&b.card])?;
            }
        }
    }
    if b.new_customer.is_some() {
        // Visits of the walk-in can only be later than the binding: the seq range keeps
        // this to the few rows since, not the whole visits table.
        conn.prepare_cached(
            "DELETE FROM customers WHERE id = ?1
               AND NOT EXISTS (SELECT 1 FROM cards WHERE customer_id = ?1)
               AND NOT EXISTS (SELECT 1 FROM visits WHERE seq > ?2 AND customer_id = ?1)",
        )?
        .execute(params![b.customer_id, b.seq])?;
    }
    tracing::info!(
        change = %b.id,
        seq = b.seq,
        customer = %b.customer_id,
        reverted = still_ours && !superseded,
        "the hub rejected a card binding; undone here"
    );
    Ok(())
}

/// A binding's outbox body with the walk-in's full name and phone erased, or `None` when
/// there is nothing to erase (not a binding, no walk-in, erased already). Ids, card,
/// surname, title, source and the consent's time and notice version stay: the record
/// still says who consented to what, and `card_changes` (with its `body_hash`, which
/// answers a retried request) is untouched.
pub(crate) fn redacted_body(body: &str) -> Option<String> {
    let Ok(mut record) = serde_json::from_str::<wire::Record>(body) else {
        return None;
    };
    let wire::Record::CardBinding(b) = &mut record else {
        return None;
    };
    let new = b.new_customer.as_mut().filter(|n| !n.is_redacted())?;
    new.redact();
    serde_json::to_string(&record).ok()
}

/// Applies again, on top of a roster snapshot just stored in the caller's transaction,
/// the card changes made here that the hub has not answered yet (outbox row unsent, not
/// quarantined): the snapshot cannot hold them, and without this a card bound at the
/// desk would be "unknown" until the hub's answer and the next pull. In seq order; a
/// binding's walk-in is made again from its record, and its `replaced` becomes the
/// snapshot's row, which is what a rejection must now restore. A change whose customer
/// the snapshot lacks (deleted at the hub) is left out: the hub will refuse it anyway.
/// Returns how many changes were applied.
pub(crate) fn reapply_pending(conn: &Connection) -> rusqlite::Result<u64> {
    let pending: Vec<(u64, String)> = conn
        .prepare_cached(
            "SELECT cc.seq, o.body FROM card_changes cc JOIN outbox o ON o.seq = cc.seq
             WHERE o.sent_at IS NULL AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.seq = cc.seq)
             ORDER BY cc.seq",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut applied = 0;
    for (seq, body) in pending {
        let record = match serde_json::from_str::<wire::Record>(&body) {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(seq, error = %e, "a pending card change's record cannot be read; not applied again after the snapshot");
                continue;
            }
        };
        // One savepoint each, so a change the new roster cannot take is left out alone.
        conn.execute_batch("SAVEPOINT reapply")?;
        let result = match &record {
            wire::Record::CardBinding(b) => reapply_binding(conn, b),
            wire::Record::CardRevocation(r) => conn
                .prepare_cached("UPDATE cards SET status = 'revoked', note = ?2 WHERE token = ?1")?
                .execute(params![r.card, r.reason])
                .map(|n| n > 0),
            wire::Record::Visit(_) => Ok(false),
        };
        match result {
            Ok(done) => {
                conn.execute_batch("RELEASE reapply")?;
                applied += u64::from(done);
            }
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
                conn.execute_batch("ROLLBACK TO reapply; RELEASE reapply")?;
                tracing::warn!(seq, error = %e, "a pending card change does not fit the new roster; left to the hub's answer");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(applied)
}

fn reapply_binding(conn: &Connection, b: &wire::CardBindingRecord) -> rusqlite::Result<bool> {
    if let Some(n) = &b.new_customer {
        // The hub's row wins if the snapshot has one; a consultant the snapshot lacks is
        // left out, as the roster pull does.
        conn.prepare_cached(
            "INSERT INTO customers (id, surname, title, tier, consultant_id, source, last_follow_up)
             VALUES (?1, ?2, ?3, 'normal', (SELECT id FROM consultants WHERE id = ?4), ?5, ?6)
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            b.customer_id,
            n.surname,
            n.title,
            n.consultant_id,
            n.source,
            b.bound_at.to_string()
        ])?;
    }
    let known: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM customers WHERE id = ?1)")?
        .query_row([&b.customer_id], |r| r.get(0))?;
    if !known {
        return Ok(false);
    }
    let replaced = card_row(conn, &b.card)?
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.prepare_cached("UPDATE card_changes SET replaced = ?2 WHERE id = ?1")?
        .execute(params![b.id.to_string(), replaced])?;
    conn.prepare_cached(
        "INSERT INTO cards (token, customer_id, status, note, low24_only) VALUES (?1, ?2, 'active', NULL, 0)
         ON CONFLICT (token) DO UPDATE SET customer_id = excluded.customer_id,
             status = 'active', note = NULL, low24_only = 0",
    )?
    .execute(params![b.card, b.customer_id])?;
    Ok(true)
}

impl Store {
    /// [`bind_in`] inside the writer's shared transaction ([`crate::store::Writer::call_grouped`]).
    pub fn bind_card_in_group(
        &mut self,
        req: &BindRequest,
    ) -> Result<Result<Changed, CardRefusal>, StoreError> {
        let identity = self.identity().clone();
        bind_in(self.conn_mut(), &identity, req, jiff::Timestamp::now())
    }

    /// [`revoke_in`] inside the writer's shared transaction.
    pub fn revoke_card_in_group(
        &mut self,
        req: &RevokeRequest,
    ) -> Result<Result<Changed, CardRefusal>, StoreError> {
        let identity = self.identity().clone();
        revoke_in(self.conn_mut(), &identity, req, jiff::Timestamp::now())
    }
}

/// A card tapped (or posted) as unknown and still not in the roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UnboundCard {
    pub card: String,
    /// When it was first and last tapped (the device's time).
    #[schema(format = DateTime)]
    pub first_seen: String,
    #[schema(format = DateTime)]
    pub last_seen: String,
    pub taps: u64,
    /// Where it was last tapped: a reader's name or `handheld:<device>`.
    pub source: String,
}

impl ReadDb {
    /// Cards tapped as unknown that the roster still lacks, the latest tapped first.
    pub async fn unbound_cards(&self, limit: u32) -> Result<Vec<UnboundCard>, StoreError> {
        self.with(move |c| {
            c.prepare_cached(
                "WITH u AS (
                     SELECT card, count(*) AS taps, min(seq) AS first_seq, max(seq) AS last_seq
                     FROM visits WHERE outcome = 'unknown' AND card IS NOT NULL GROUP BY card)
                 SELECT u.card, f.device_time, l.device_time, u.taps, l.source
                 FROM u JOIN visits f ON f.seq = u.first_seq JOIN visits l ON l.seq = u.last_seq
                 WHERE NOT EXISTS (SELECT 1 FROM cards WHERE cards.token = u.card)
                 ORDER BY u.last_seq DESC LIMIT ?1",
            )?
            .query_map([limit], |r| {
                Ok(UnboundCard {
                    card: r.get(0)?,
                    first_seen: r.get(1)?,
                    last_seen: r.get(2)?,
                    taps: r.get(3)?,
                    source: r.get(4)?,
                })
            })?
            .collect()
        })
        .await
    }

    /// The latest card changes made here, newest first, with the hub's verdict.
    pub async fn card_changes(&self, limit: u32) -> Result<Vec<CardChange>, StoreError> {
        self.with(move |c| {
            c.prepare_cached(&format!("{CHANGE_SELECT} ORDER BY cc.seq DESC LIMIT ?1"))?
                .query_map([limit], change_from_row)?
                .collect()
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Over HTTP

/// `?limit=N` of the lists.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// How many at most, the latest first; 50 by default.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// The unknown cards staff may bind.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UnboundList {
    cards: Vec<UnboundCard>,
}

/// A binding or revocation as answered: the change and where it stands with the hub.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChangeAnswer {
    id: Uuid,
    card: String,
    /// The card's customer: for a walk-in, the id made here (`w-` + a UUIDv7).
    customer_id: Option<String>,
    /// A binding's consultant: the walk-in's (the rotation's turn, null when nobody was
    /// free) or the existing customer's.
    consultant_id: Option<String>,
    /// The outbox record's seq, shared with visits.
    #[schema(minimum = 1)]
    seq: u64,
    /// pending (not yet at the hub), accepted, or rejected (then undone here).
    #[schema(pattern = "^(pending|accepted|rejected)$")]
    status: String,
}

/// A card change for the console, with the hub's verdict.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChangeJson {
    id: Uuid,
    #[schema(minimum = 1)]
    seq: u64,
    /// bind or revoke.
    #[schema(pattern = "^(bind|revoke)$")]
    op: String,
    card: String,
    customer_id: Option<String>,
    consultant_id: Option<String>,
    /// The staff device that made it.
    by: String,
    #[schema(format = DateTime)]
    at: String,
    /// A revocation's reason.
    note: Option<String>,
    /// pending, accepted or rejected.
    #[schema(pattern = "^(pending|accepted|rejected)$")]
    status: String,
    /// Why the hub rejected it (`card_taken: …`, `phone_taken: …`, …).
    reason: Option<String>,
}

/// The latest card changes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChangeList {
    changes: Vec<ChangeJson>,
}

impl From<CardChange> for ChangeJson {
    fn from(c: CardChange) -> ChangeJson {
        ChangeJson {
            id: c.id,
            seq: c.seq,
            op: c.op,
            card: c.card,
            customer_id: c.customer_id,
            consultant_id: c.consultant_id,
            by: c.by,
            at: c.at,
            note: c.note,
            status: c.sync.as_str().to_owned(),
            reason: match c.sync {
                SyncState::Rejected(reason) => Some(reason),
                _ => None,
            },
        }
    }
}

fn limit_of(query: Result<Query<ListQuery>, QueryRejection>) -> Result<u32, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message);
    let Query(q) = query.map_err(|e| bad(format!("{e}; the parameter is limit=1..{LIST_MAX}")))?;
    let limit = q.limit.unwrap_or(LIST_DEFAULT);
    if !(1..=LIST_MAX).contains(&limit) {
        return Err(bad(format!(
            "limit {limit} is out of range; use 1 to {LIST_MAX}"
        )));
    }
    Ok(limit)
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "too_large",
                format!("the body is larger than {BODY_LIMIT} bytes; send one card per request"),
            )
        } else {
            ApiError::new(status, "bad_request", rejection.body_text())
        }
    })
}

/// 201 for a change made now (and the push loop woken to send it), 200 for the
/// stored answer of a retry, or the refusal.
fn answer(s: &ApiState, result: Result<Changed, CardRefusal>) -> Result<Response, ApiError> {
    let changed = result.map_err(|refusal| {
        let (status, code) = refusal.status();
        ApiError::new(status, code, refusal.to_string())
    })?;
    let c = changed.change;
    let status = if changed.replay {
        StatusCode::OK
    } else {
        tracing::info!(
            change = %c.id,
            op = %c.op,
            seq = c.seq,
            customer = c.customer_id.as_deref().unwrap_or_default(),
            by = %c.by,
            "card change recorded"
        );
        if let Some(wake) = &s.sync_wake {
            wake.notify_one();
        }
        StatusCode::CREATED
    };
    let body = ChangeAnswer {
        status: c.sync.as_str().to_owned(),
        id: c.id,
        card: c.card,
        customer_id: c.customer_id,
        consultant_id: c.consultant_id,
        seq: c.seq,
    };
    Ok((status, Json(body)).into_response())
}

/// Cards tapped as unknown that are not in the roster: what staff may bind.
#[utoipa::path(get, path = "/api/v1/cards/unbound", tag = "cards", params(ListQuery),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Unknown cards, the latest tapped first", body = UnboundList),
        (status = 400, description = "A parameter is malformed, out of range or unknown", body = ErrorBody),
        (status = 401, description = "No token, an unknown one or a revoked one", body = ErrorBody),
        (status = 403, description = "A handheld's token: this needs a staff device", body = ErrorBody),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
pub(crate) async fn unbound(
    State(s): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let result = async {
        handheld::authenticate_staff(&s, &headers).await?;
        let limit = limit_of(query).map_err(IntoResponse::into_response)?;
        let cards =
            s.db.unbound_cards(limit)
                .await
                .map_err(|e| ApiError::from(e).into_response())?;
        Ok::<_, Response>(Json(UnboundList { cards }).into_response())
    };
    result.await.unwrap_or_else(|r| r)
}

/// Binds a card to an existing customer or to a walk-in registered now (发卡).
#[utoipa::path(post, path = "/api/v1/cards/bind", tag = "cards",
    security(("bearerAuth" = [])),
    request_body(content = inline(crate::openapi::CardBindPost), content_type = "application/json",
        description = "Exactly one of `customer_id` and `new_customer`; unknown fields are refused"),
    responses(
        (status = 201, description = "Bound; the next tap of the card greets the customer, and the binding goes to the hub", body = ChangeAnswer),
        (status = 200, description = "The same id and body again: the stored answer, nothing happens again", body = ChangeAnswer),
        (status = 400, description = "The body is not JSON, or could not be read", body = ErrorBody),
        (status = 401, description = "No token, an unknown one or a revoked one", body = ErrorBody),
        (status = 403, description = "A handheld's token: this needs a staff device", body = ErrorBody),
        (status = 409, description = "The card is active for another customer (`card_taken`)", body = ErrorBody),
        (status = 413, description = "The body is larger than 16 KiB", body = ErrorBody),
        (status = 422, description = "Not a binding (an unknown or missing field, a bad or random card, a bad phone, no consent, \
an outdated privacy notice), an unknown customer, or an id already used for another body", body = ErrorBody),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
pub(crate) async fn bind(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let device = handheld::authenticate_staff(&s, &headers).await?;
        let respond = async {
            let bytes = body_bytes(body)?;
            let req = parse_bind(&bytes, &device.name, &s.info.privacy_notice_version)?;
            let result = s
                .writer
                .call_grouped(move |store| store.bind_card_in_group(&req))
                .await?;
            answer(&s, result)
        };
        respond.await.map_err(IntoResponse::into_response)
    };
    result.await.unwrap_or_else(|r| r)
}

/// Revokes a card (挂失): its next tap is refused as `card_revoked`.
#[utoipa::path(post, path = "/api/v1/cards/revoke", tag = "cards",
    security(("bearerAuth" = [])),
    request_body(content = inline(crate::openapi::CardRevokePost), content_type = "application/json",
        description = "Unknown fields are refused"),
    responses(
        (status = 201, description = "Revoked; the revocation goes to the hub", body = ChangeAnswer),
        (status = 200, description = "The same id and body again: the stored answer, nothing happens again", body = ChangeAnswer),
        (status = 400, description = "The body is not JSON, or could not be read", body = ErrorBody),
        (status = 401, description = "No token, an unknown one or a revoked one", body = ErrorBody),
        (status = 403, description = "A handheld's token: this needs a staff device", body = ErrorBody),
        (status = 404, description = "No such card in this kiosk's roster (`unknown_card`)", body = ErrorBody),
        (status = 409, description = "The card is revoked already (`already_revoked`)", body = ErrorBody),
        (status = 413, description = "The body is larger than 16 KiB", body = ErrorBody),
        (status = 422, description = "Not a revocation (an unknown or missing field, a bad card, a long reason), \
or an id already used for another body", body = ErrorBody),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
pub(crate) async fn revoke(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let device = handheld::authenticate_staff(&s, &headers).await?;
        let respond = async {
            let bytes = body_bytes(body)?;
            let req = parse_revoke(&bytes, &device.name)?;
            let result = s
                .writer
                .call_grouped(move |store| store.revoke_card_in_group(&req))
                .await?;
            answer(&s, result)
        };
        respond.await.map_err(IntoResponse::into_response)
    };
    result.await.unwrap_or_else(|r| r)
}

/// The latest card changes made here and what the hub made of them: a binding the hub
/// rejected (the card or phone is someone else's there) shows `rejected` and its reason.
#[utoipa::path(get, path = "/api/v1/cards/changes", tag = "cards", params(ListQuery),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "Card changes, the latest first", body = ChangeList),
        (status = 400, description = "A parameter is malformed, out of range or unknown", body = ErrorBody),
        (status = 401, description = "No token, an unknown one or a revoked one", body = ErrorBody),
        (status = 403, description = "A handheld's token: this needs a staff device", body = ErrorBody),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
pub(crate) async fn changes(
    State(s): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let result = async {
        handheld::authenticate_staff(&s, &headers).await?;
        let limit = limit_of(query).map_err(IntoResponse::into_response)?;
        let changes =
            s.db.card_changes(limit)
                .await
                .map_err(|e| ApiError::from(e).into_response())?;
        let changes = changes.into_iter().map(ChangeJson::from).collect();
        Ok::<_, Response>(Json(ChangeList { changes }).into_response())
    };
    result.await.unwrap_or_else(|r| r)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use kiosk_sync::client::KioskSide;
    use kiosk_sync::wire::{BatchReply, ItemResult, ItemStatus};

    use super::*;
    use crate::roster::parse_csv;
    use crate::rotation::RotationOp;
    use crate::rules::Decision;
    use crate::store::{Recorded, TapInput, Writer};
    use crate::sync_side::SyncSide;

    const ID: &str = "0192f0c4-0000-7000-8000-000000000001";
    const NOTICE: &str = "2026-11";

    fn walk_in_json(extra: &str) -> String {
        format!(
            r#"{{"id":"{ID}","card":"nfc:04C0FFEE000001","new_customer":{{"name":"赵六","surname":"赵","title":"ms","phone":"138 0013 8000","source":"walk_in","consent":true{extra}}}}}"#
        )
    }

    /// The status and text of an error answer.
    fn refused(err: ApiError) -> (u16, String) {
        let response = err.into_response();
        let status = response.status().as_u16();
        let bytes = futures_util::FutureExt::now_or_never(axum::body::to_bytes(
            response.into_body(),
            usize::MAX,
        ))
        .expect("ready")
        .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Each bad binding → its status and a word of the message that says what is wrong.
    #[test]
    fn bad_bindings_are_refused_with_what_is_wrong() {
        let cases: Vec<(String, u16, &str)> = vec![
            ("{".into(), 400, "not JSON"),
            ("[]".into(), 422, "JSON object"),
            (
                r#"{"card":"nfc:04A1B2C3"}"#.into(),
                422,
                "missing field `id`",
            ),
            (
                format!(r#"{{"id":"{ID}","card":"nfc:04A1B2C3","customer_id":"C1","x":1}}"#),
                422,
                "unknown field `x`",
            ),
            (
                format!(r#"{{"id":"{ID}","card":"nfc:04A1B2C3"}}"#),
                422,
                "say whose card",
            ),
            (
                format!(r#"{{"id":"{ID}","card":"nfc:04A1B2C3","customer_id":" "}}"#),
                422,
                "customer_id is empty",
            ),
            (
                walk_in_json("").replace(r#""card":"#, r#""customer_id":"C1","card":"#),
                422,
                "not both",
            ),
            (
                format!(r#"{{"id":"{ID}","card":"zz:1","customer_id":"C1"}}"#),
                422,
                "unknown card scheme",
            ),
            (
                format!(r#"{{"id":"{ID}","card":"nfc:085A6B7C","customer_id":"C1"}}"#),
                422,
                "not_a_membership_card",
            ),
            (walk_in_json(r#","age":40"#), 422, "unknown field `age`"),
            (
                walk_in_json("").replace(r#""consent":true"#, r#""consent":false"#),
                422,
                "consent_required",
            ),
            (
                walk_in_json("").replace(r#","consent":true"#, ""),
                422,
                "missing field `consent`",
            ),
            (
                walk_in_json(r#","notice_version":"2025-01""#),
                422,
                r#"the current one is \"2026-11\""#,
            ),
            (
                walk_in_json("").replace("138 0013 8000", "138-0013-800x"),
                422,
                "not a phone number",
            ),
            (
                walk_in_json("").replace("138 0013 8000", "1234"),
                422,
                "is not a phone number",
            ),
            (
                walk_in_json("").replace(r#""surname":"赵""#, r#""surname":"赵六""#),
                422,
                "not a family name",
            ),
            (
                walk_in_json("").replace(r#""name":"赵六""#, r#""name":"  ""#),
                422,
                "full name",
            ),
            (
                walk_in_json("").replace(r#""title":"ms""#, r#""title":"dr""#),
                422,
                "unknown variant `dr`",
            ),
            (
                walk_in_json("").replace(r#""source":"walk_in""#, r#""source":"web""#),
                422,
                "unknown variant `web`",
            ),
        ];
        for (body, status, word) in &cases {
            let err = parse_bind(body.as_bytes(), "desk", NOTICE).expect_err(body);
            let (got, text) = refused(err);
            assert_eq!(got, *status, "{body}: {text}");
            assert!(text.contains(word), "{body}: {text}");
        }
    }

    #[test]
    fn a_walk_in_is_read_with_the_current_notice() {
        for extra in ["", r#","notice_version":"2026-11""#] {
            let req = parse_bind(walk_in_json(extra).as_bytes(), "desk", NOTICE).expect("valid");
            assert_eq!(req.card.as_str(), "nfc:04C0FFEE000001");
            assert_eq!(
                req.target,
                Target::WalkIn(WalkIn {
                    name: "赵六".into(),
                    surname: "赵".into(),
                    title: Title::Ms,
                    phone: "13800138000".into(),
                    source: "walk_in",
                    notice_version: NOTICE.into(),
                })
            );
        }
    }

    #[test]
    fn phones_keep_digits_and_a_leading_plus() {
        let cases: &[(&str, Option<&str>)] = &[
            ("13800138000", Some("13800138000")),
            (" 138-0013-8000 ", Some("13800138000")),
            ("+86 138 0013 8000", Some("13800138000")),
            ("+852 9123 4567", Some("+85291234567")),
            ("12345", Some("12345")),
            ("1234", None),
            (&"1".repeat(15), Some("111111111111111")),
            (&"1".repeat(16), None),
            ("+", None),
            ("138 0013 800x", None),
            ("１３８００１３８０００", None),
        ];
        for (text, want) in cases {
            assert_eq!(normalize_phone(text).ok().as_deref(), *want, "{text:?}");
        }
    }

    /// Spellings of one request hash alike; another phone or a revoke do not.
    #[test]
    fn the_hash_is_of_the_request_as_understood() {
        let hash = |body: &str| {
            parse_bind(body.as_bytes(), "desk", NOTICE)
                .expect(body)
                .body_hash
        };
        let a = hash(&walk_in_json(""));
        let b = hash(
            &walk_in_json("")
                .replace("nfc:04C0FFEE000001", "NFC:04c0ffee000001")
                .replace("138 0013 8000", "138-0013-8000"),
        );
        assert_eq!(a, b);
        assert_ne!(a, hash(&walk_in_json("").replace("8000", "8001")));
        let revoke = parse_revoke(
            format!(r#"{{"id":"{ID}","card":"nfc:04C0FFEE000001"}}"#).as_bytes(),
            "desk",
        )
        .expect("revoke");
        assert_ne!(a, revoke.body_hash);
    }

    #[test]
    fn bad_revocations_are_refused_with_what_is_wrong() {
        let cases: Vec<(String, u16, &str)> = vec![
            ("nope".into(), 400, "not JSON"),
            (format!(r#"{{"id":"{ID}"}}"#), 422, "missing field `card`"),
            (
                format!(r#"{{"id":"{ID}","card":"nfc:04A1B2C3","why":"lost"}}"#),
                422,
                "unknown field `why`",
            ),
            (
                format!(
                    r#"{{"id":"{ID}","card":"nfc:04A1B2C3","reason":"{}"}}"#,
                    "丢".repeat(201)
                ),
                422,
                "201 characters",
            ),
            (
                format!(r#"{{"id":"{ID}","card":"nfc:04A1B2C3","reason":"a\nb"}}"#),
                422,
                "one line",
            ),
        ];
        for (body, status, word) in &cases {
            let err = parse_revoke(body.as_bytes(), "desk").expect_err(body);
            let (got, text) = refused(err);
            assert_eq!(got, *status, "{body}: {text}");
            assert!(text.contains(word), "{body}: {text}");
        }
    }

    // ---- the store

    /// The store as the daemon runs it: a writer thread and a read connection.
    struct Kiosk {
        writer: Writer,
        db: ReadDb,
        _thread: std::thread::JoinHandle<()>,
    }

    const ROSTER: &str =
        "card,customer_id,surname,title,tier,card_status,consultant_id,consultant_name,note
nfc:04A1B2C3D4E5F6,C1,张,mr,gold,active,E01,李娜,
nfc:04112233445566,C2,王,ms,silver,active,E02,陈晨,
nfc:04DEADBEEF0001,C1,张,mr,gold,revoked,E01,李娜,lost
";

    fn open(dir: &Path) -> Kiosk {
        let identity = Identity {
            kiosk_id: "k1".into(),
            office_id: "o1".into(),
            time_zone: jiff::tz::TimeZone::UTC,
        };
        let mut store = Store::open(dir, identity).expect("store");
        store
            .import_roster(&parse_csv(ROSTER.as_bytes()).expect("roster"))
            .expect("import");
        let db = ReadDb::open(dir, jiff::tz::TimeZone::UTC).expect("read db");
        let (writer, thread) = Writer::spawn(store).expect("writer");
        Kiosk {
            writer,
            db,
            _thread: thread,
        }
    }

    impl Kiosk {
        async fn bind(&self, body: &str, device: &str) -> Result<Changed, CardRefusal> {
            let req = parse_bind(body.as_bytes(), device, NOTICE).expect("a valid binding");
            self.writer
                .call_grouped(move |s| s.bind_card_in_group(&req))
                .await
                .expect("store")
        }

        async fn revoke(&self, body: &str) -> Result<Changed, CardRefusal> {
            let req = parse_revoke(body.as_bytes(), "desk").expect("a valid revocation");
            self.writer
                .call_grouped(move |s| s.revoke_card_in_group(&req))
                .await
                .expect("store")
        }

        async fn tap(&self, token: &str) -> Recorded {
            let input = TapInput {
                source: "reader".into(),
                token: CardToken::parse(token).expect("token"),
                device_time: jiff::Timestamp::now(),
            };
            self.writer
                .call_grouped(move |s| s.record_tap_in_group(&input))
                .await
                .expect("tap")
        }

        async fn check_in(&self, id: &str) {
            let op = RotationOp::CheckIn(id.to_owned());
            self.writer
                .call(move |s| s.change_rotation(&op))
                .await
                .expect("store")
                .expect("checked in");
        }

        async fn query<T: Send + 'static>(
            &self,
            sql: &'static str,
            f: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T> + Send + 'static,
        ) -> Vec<T> {
            self.db
                .with(move |c| c.prepare(sql)?.query_map([], f)?.collect())
                .await
                .expect("query")
        }

        async fn outbox(&self) -> Vec<(u64, String, String)> {
            self.query("SELECT seq, kind, body FROM outbox ORDER BY seq", |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .await
        }

        /// The card's row: (customer, status, note).
        async fn card(&self, token: &str) -> Option<(String, String, Option<String>)> {
            let token = token.to_owned();
            self.db
                .with(move |c| {
                    c.query_row(
                        "SELECT customer_id, status, note FROM cards WHERE token = ?1",
                        [token],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()
                })
                .await
                .expect("card")
        }
    }

    fn bind_existing(id: &str, card: &str, customer: &str) -> String {
        format!(r#"{{"id":"{id}","card":"{card}","customer_id":"{customer}"}}"#)
    }

    fn new_id() -> String {
        Uuid::now_v7().to_string()
    }

    /// A binding makes the next tap a welcome; the same request again is answered from
    /// the store and writes nothing; the id with another body, or from another device,
    /// is refused.
    #[tokio::test]
    async fn a_binding_greets_the_next_tap_and_a_retry_writes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let k = open(dir.path());
        let card = "nfc:04C0FFEE000001";
        let first = k.tap(card).await;
        assert_eq!(first.decision, Decision::Unknown);
        assert_eq!(k.db.unbound_cards(50).await.expect("unbound").len(), 1);

        let body = bind_existing(ID, card, "C2");
        let made = k.bind(&body, "desk").await.expect("bound");
        assert!(!made.replay);
        assert_eq!(
            (made.change.seq, made.change.customer_id.as_deref()),
            (2, Some("C2"))
        );
        assert_eq!(made.change.consultant_id.as_deref(), Some("E02"));
        assert_eq!(made.change.sync, SyncState::Pending);

        let again = k.bind(&body, "desk").await.expect("replay");
        assert!(again.replay);
        assert_eq!(again.change, made.change);
        assert_eq!(
            k.bind(&bind_existing(ID, card, "C1"), "desk")
                .await
                .unwrap_err(),
            CardRefusal::IdUsed(ID.parse().expect("uuid"))
        );
        assert!(matches!(
            k.bind(&body, "other-desk").await,
            Err(CardRefusal::IdUsed(_))
        ));
        // The id of a visit is not a card change's either.
        let visit_id = first.visit.id.to_string();
        assert!(matches!(
            k.bind(&bind_existing(&visit_id, card, "C2"), "desk").await,
            Err(CardRefusal::IdUsed(_))
        ));

        let outbox = k.outbox().await;
        assert_eq!(
            outbox
                .iter()
                .map(|(s, k, _)| (*s, k.as_str()))
                .collect::<Vec<_>>(),
            [(1, "visit"), (2, "card_binding")]
        );
        let wire::Record::CardBinding(record) = serde_json::from_str(&outbox[1].2).expect("wire")
        else {
            panic!("a binding");
        };
        assert_eq!(
            (
                record.card.as_str(),
                record.customer_id.as_str(),
                record.by.as_str()
            ),
            (card, "C2", "desk")
        );
        assert_eq!(record.new_customer, None);

        let tap = k.tap(card).await;
        assert!(matches!(tap.decision, Decision::Welcome(_)), "{tap:?}");
        assert_eq!(tap.visit.customer.map(|c| c.id).as_deref(), Some("C2"));
        assert!(k.db.unbound_cards(50).await.expect("unbound").is_empty());
    }

    /// A card active for another customer is theirs: refused naming that customer's id,
    /// and nothing is written. A revoked card may be issued again.
    #[tokio::test]
    async fn a_card_active_for_another_customer_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let k = open(dir.path());
        let taken = k
            .bind(
                &bind_existing(&new_id(), "nfc:04A1B2C3D4E5F6", "C2"),
                "desk",
            )
            .await
            .unwrap_err();
        assert_eq!(
            taken,
            CardRefusal::CardTaken {
                card: "nfc:04A1B2C3D4E5F6".into(),
                customer: "C1".into()
            }
        );
        let walk_in = walk_in_json("")
            .replace(ID, &new_id())
            .replace("04C0FFEE000001", "04A1B2C3D4E5F6");
        assert!(matches!(
            k.bind(&walk_in, "desk").await,
            Err(CardRefusal::CardTaken { .. })
        ));
        assert_eq!(
            k.bind(
                &bind_existing(&new_id(), "nfc:04C0FFEE000009", "C9"),
                "desk"
            )
            .await
            .unwrap_err(),
            CardRefusal::UnknownCustomer("C9".into())
        );
        assert!(k.outbox().await.is_empty());
        assert_eq!(
            k.query("SELECT count(*) FROM customers", |r| r.get::<_, u64>(0))
                .await,
            [2]
        );
        // The revoked card of C1 goes to C2.
        let made = k
            .bind(
                &bind_existing(&new_id(), "nfc:04DEADBEEF0001", "C2"),
                "desk",
            )
            .await
            .expect("a revoked card is free");
        assert_eq!(made.change.seq, 1);
        assert_eq!(
            k.card("nfc:04DEADBEEF0001").await,
            Some(("C2".into(), "active".into(), None))
        );
    }

    /// A walk-in gets a `w-` id, the rotation's next free consultant (who moves to the
    /// tail, busy), and a roster row with surname and title only: the full name and the
    /// phone are in the outbox record and nowhere else.
    #[tokio::test]
    async fn a_walk_in_gets_the_rotation_turn_and_only_the_outbox_holds_name_and_phone() {
        let dir = tempfile::tempdir().expect("dir");
        let k = open(dir.path());
        k.check_in("E01").await;
        k.check_in("E02").await;
        let made = k.bind(&walk_in_json(""), "desk").await.expect("bound");
        let customer = made.change.customer_id.clone().expect("customer");
        assert!(customer.starts_with("w-"), "{customer}");
        assert_eq!(made.change.consultant_id.as_deref(), Some("E01"));
        let rotation = k.db.rotation().await.expect("rotation");
        let seats: Vec<(String, bool)> = rotation
            .queue
            .into_iter()
            .map(|s| (s.consultant_id, s.busy))
            .collect();
        assert_eq!(seats, [("E02".into(), false), ("E01".into(), true)]);

        let row = k
            .query(
                "SELECT id, surname, title, tier, consultant_id, source, last_follow_up IS NOT NULL
                 FROM customers WHERE id LIKE 'w-%'",
                |r| {
                    Ok(format!(
                        "{} {} {} {} {} {} {}",
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, bool>(6)?
                    ))
                },
            )
            .await;
        assert_eq!(row, [format!("{customer} 赵 ms normal E01 walk_in true")]);

        let outbox = k.outbox().await;
        let wire::Record::CardBinding(record) = serde_json::from_str(&outbox[0].2).expect("wire")
        else {
            panic!("a binding");
        };
        let new = record.new_customer.expect("a new customer");
        assert_eq!(
            (
                new.name.as_str(),
                new.phone.as_str(),
                new.consultant_id.as_deref()
            ),
            ("赵六", "13800138000", Some("E01"))
        );
        assert_eq!(new.consent.notice_version, NOTICE);

        // Every text in every table but the outbox, searched for the name and the phone.
        drop(k);
        let conn = crate::store::open(dir.path()).expect("open");
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'outbox'")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("tables");
        for table in tables {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM {table}"))
                .expect("select");
            let columns = stmt.column_count();
            let mut rows = stmt.query([]).expect("rows");
            while let Some(row) = rows.next().expect("row") {
                for i in 0..columns {
                    if let Ok(Some(text)) = row.get::<_, Option<String>>(i) {
                        assert!(
                            !text.contains("赵六") && !text.contains("13800138000"),
                            "{table} holds personal data: {text}"
                        );
                    }
                }
            }
        }
    }

    /// Nobody on duty: the walk-in has no consultant, and the rotation stays empty.
    #[tokio::test]
    async fn a_walk_in_with_nobody_free_has_no_consultant() {
        let dir = tempfile::tempdir().expect("dir");
        let k = open(dir.path());
        let made = k.bind(&walk_in_json(""), "desk").await.expect("bound");
        assert_eq!(made.change.consultant_id, None);
        assert!(k.db.rotation().await.expect("rotation").queue.is_empty());
    }

    #[tokio::test]
    async fn a_revoked_card_is_denied_and_revoking_is_idempotent_by_id() {
        let dir = tempfile::tempdir().expect("dir");
        let k = open(dir.path());
        let body = format!(r#"{{"id":"{ID}","card":"nfc:04112233445566","reason":"lost"}}"#);
        let made = k.revoke(&body).await.expect("revoked");
        assert_eq!(
            (made.change.op.as_str(), made.change.customer_id.as_deref()),
            ("revoke", Some("C2"))
        );
        assert!(k.revoke(&body).await.expect("replay").replay);
        assert_eq!(
            k.card("nfc:04112233445566").await,
            Some(("C2".into(), "revoked".into(), Some("lost".into())))
        );
        let tap = k.tap("nfc:04112233445566").await;
        assert_eq!(tap.visit.reason.as_deref(), Some("card_revoked"));
        assert_eq!(tap.visit.reason_detail.as_deref(), Some("lost"));

        let again = format!(r#"{{"id":"{}","card":"nfc:04112233445566"}}"#, new_id());
        assert_eq!(
            k.revoke(&again).await.unwrap_err(),
            CardRefusal::AlreadyRevoked("nfc:04112233445566".into())
        );
        let unknown = format!(r#"{{"id":"{}","card":"nfc:04999999999999"}}"#, new_id());
        assert_eq!(
            k.revoke(&unknown).await.unwrap_err(),
            CardRefusal::UnknownCard("nfc:04999999999999".into())
        );
        let kinds: Vec<String> = k
            .outbox()
            .await
            .into_iter()
            .map(|(_, kind, _)| kind)
            .collect();
        assert_eq!(kinds, ["card_revocation", "visit"]);
        let wire::Record::CardRevocation(r) =
            serde_json::from_str(&k.outbox().await[0].2).expect("wire")
        else {
            panic!("a revocation");
        };
        assert_eq!((r.reason.as_deref(), r.by.as_str()), (Some("lost"), "desk"));
    }

    fn answer(statuses: &[(ItemStatus, Option<&str>)], high_water: u64) -> BatchReply {
        BatchReply {
            items: statuses
                .iter()
                .map(|(status, reason)| ItemResult {
                    seq: None,
                    status: *status,
                    reason: reason.map(str::to_owned),
                })
                .collect(),
            high_water,
        }
    }

    /// The hub's verdicts through sync's settle step: a rejected binding is undone in
    /// the quarantine's transaction (the card back as it was, the walk-in gone), an
    /// accepted one stays, and the changes list shows each with its reason.
    #[tokio::test]
    async fn a_rejected_binding_is_undone_and_shown_with_the_hubs_reason() {
        let dir = tempfile::tempdir().expect("dir");
        let k = open(dir.path());
        let side = SyncSide::new(k.writer.clone(), k.db.clone());
        // 1: a walk-in, 2: C1's revoked card to C2, 3: a new card to C1.
        k.bind(&walk_in_json(""), "desk").await.expect("walk-in");
        k.bind(
            &bind_existing(&new_id(), "nfc:04DEADBEEF0001", "C2"),
            "desk",
        )
        .await
        .expect("rebind");
        k.bind(
            &bind_existing(&new_id(), "nfc:04C0FFEE000002", "C1"),
            "desk",
        )
        .await
        .expect("bind");
        let batch = side
            .next_batch(500, 1 << 20)
            .await
            .expect("batch")
            .expect("rows");
        assert_eq!((batch.first_seq, batch.last_seq), (1, 3));
        let reply = answer(
            &[
                (
                    ItemStatus::Rejected,
                    Some("phone_taken: 13800138000 belongs to C7"),
                ),
                (ItemStatus::Rejected, Some("card_taken: C1")),
                (ItemStatus::Inserted, None),
            ],
            3,
        );
        side.settle(&batch, &reply, jiff::Timestamp::now())
            .await
            .expect("settled");

        assert_eq!(k.card("nfc:04C0FFEE000001").await, None);
        assert_eq!(
            k.query("SELECT id FROM customers WHERE id LIKE 'w-%'", |r| r
                .get::<_, String>(0))
                .await,
            [] as [String; 0]
        );
        assert_eq!(
            k.card("nfc:04DEADBEEF0001").await,
            Some(("C1".into(), "revoked".into(), Some("lost".into())))
        );
        assert_eq!(
            k.card("nfc:04C0FFEE000002").await,
            Some(("C1".into(), "active".into(), None))
        );
        let changes: Vec<(u64, String, Option<String>)> =
            k.db.card_changes(50)
                .await
                .expect("changes")
                .into_iter()
                .map(|c| {
                    let reason = match &c.sync {
                        SyncState::Rejected(r) => Some(r.clone()),
                        _ => None,
                    };
                    (c.seq, c.sync.as_str().to_owned(), reason)
                })
                .collect();
        assert_eq!(
            changes,
            [
                (3, "accepted".into(), None),
                (2, "rejected".into(), Some("card_taken: C1".into())),
                (
                    1,
                    "rejected".into(),
                    Some("phone_taken: 13800138000 belongs to C7".into())
                ),
            ]
        );
        // The unknown card of the walk-in is unbound again once tapped.
        assert_eq!(
            k.tap("nfc:04C0FFEE000001").await.decision,
            Decision::Unknown
        );
        assert_eq!(
            k.db.unbound_cards(50).await.expect("unbound")[0].card,
            "nfc:04C0FFEE000001"
        );
    }

    /// A walk-in who came back (a visit) before the hub's rejection stays, so the visit
    /// keeps its customer; the card still goes.
    #[tokio::test]
    async fn a_rejected_walk_in_with_a_visit_stays() {
        let dir = tempfile::tempdir().expect("dir");
        let k = open(dir.path());
        let side = SyncSide::new(k.writer.clone(), k.db.clone());
        let made = k.bind(&walk_in_json(""), "desk").await.expect("walk-in");
        let tap = k.tap("nfc:04C0FFEE000001").await;
        assert!(matches!(tap.decision, Decision::Welcome(_)));
        let batch = side
            .next_batch(500, 1 << 20)
            .await
            .expect("batch")
            .expect("rows");
        let reply = answer(
            &[
                (ItemStatus::Rejected, Some("phone_taken: C7")),
                (ItemStatus::Inserted, None),
            ],
            2,
        );
        side.settle(&batch, &reply, jiff::Timestamp::now())
            .await
            .expect("settled");
        assert_eq!(k.card("nfc:04C0FFEE000001").await, None);
        let customer = made.change.customer_id.expect("id");
        let kept = k
            .query("SELECT id FROM customers WHERE id LIKE 'w-%'", |r| {
                r.get::<_, String>(0)
            })
            .await;
        assert_eq!(kept, [customer]);
    }

    /// The walk-in's full name and phone as `walk_in_json` gives them.
    const PERSONAL: [&str; 2] = ["赵六", "13800138000"];

    /// Where any of `needles` is in the database: every column of every row of every
    /// table (blobs too, where they are text), as `table: value`.
    fn traces(conn: &Connection, needles: &[&str]) -> Vec<String> {
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("tables");
        let mut found = Vec::new();
        for table in tables {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM \"{table}\""))
                .expect("select");
            let columns = stmt.column_count();
            let mut rows = stmt.query([]).expect("rows");
            while let Some(row) = rows.next().expect("row") {
                for i in 0..columns {
                    let text = match row.get_ref(i).expect("value") {
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            String::from_utf8_lossy(t).into_owned()
                        }
                        _ => continue,
                    };
                    if needles.iter().any(|n| text.contains(n)) {
                        found.push(format!("{table}: {text}"));
                    }
                }
            }
        }
        found
    }

    /// The files of `dir` (the database, its WAL) whose bytes hold any of `needles`:
    /// what someone with the SD card could read, freed pages included.
    fn file_traces(dir: &Path, needles: &[&str]) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let bytes = std::fs::read(&path).expect("read file");
            for needle in needles {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    found.push(format!("{} holds {needle}", path.display()));
                }
            }
        }
        found
    }

    /// The binding's record as the outbox holds it.
    async fn binding_record(k: &Kiosk, seq: u64) -> wire::CardBindingRecord {
        let outbox = k.outbox().await;
        let (_, _, body) = outbox.iter().find(|(s, _, _)| *s == seq).expect("the row");
        match serde_json::from_str(body).expect("wire") {
            wire::Record::CardBinding(b) => b,
            other => panic!("a binding, not {other:?}"),
        }
    }

    /// Once the hub holds the binding, the walk-in's name and phone are erased from its
    /// record, to the bytes of the database files; ids, surname, title and the consent
    /// stay, and a retry of the same request is still recognised (200, nothing
    /// written), another body under its id still refused.
    #[tokio::test]
    async fn an_accepted_walk_in_leaves_no_name_or_phone_on_the_kiosk() {
        let dir = tempfile::tempdir().expect("dir");
        let k = open(dir.path());
        let side = SyncSide::new(k.writer.clone(), k.db.clone());
        let made = k.bind(&walk_in_json(""), "desk").await.expect("bound");
        let before = binding_record(&k, made.change.seq).await;
        assert_eq!(
            before.new_customer.as_ref().map(|n| n.phone.as_str()),
            Some("13800138000")
        );
        // As on a busy kiosk, the binding's page reaches the database file before the
        // hub answers: erasing must then overwrite the bytes there, not only free them.
        crate::store::open(dir.path())
            .expect("open")
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            })
            .expect("checkpoint");
        let batch = side
            .next_batch(500, 1 << 20)
            .await
            .expect("batch")
            .expect("rows");
        side.settle(
            &batch,
            &answer(&[(ItemStatus::Inserted, None)], 1),
            jiff::Timestamp::now(),
        )
        .await
        .expect("settled");

        let after = binding_record(&k, made.change.seq).await;
        let new = after.new_customer.clone().expect("still a walk-in");
        assert_eq!((new.name.as_str(), new.phone.as_str()), ("", ""));
        assert_eq!(
            (
                new.surname.as_str(),
                new.title.as_str(),
                new.source.as_str()
            ),
            ("赵", "ms", "walk_in")
        );
        assert_eq!(Some(new.consent), before.new_customer.map(|n| n.consent));
        assert_eq!(
            (after.id, after.card.as_str()),
            (before.id, before.card.as_str())
        );
        assert_eq!(after.customer_id, before.customer_id);

        let conn = crate::store::open(dir.path()).expect("open");
        assert_eq!(traces(&conn, &PERSONAL), [] as [String; 0]);
        drop(conn);
        assert_eq!(file_traces(dir.path(), &PERSONAL), [] as [String; 0]);

        let again = k.bind(&walk_in_json(""), "desk").await.expect("a retry");
        assert!(again.replay);
        assert_eq!(again.change.sync, SyncState::Accepted);
        assert_eq!(again.change.customer_id, made.change.customer_id);
        let other = walk_in_json("").replace("138 0013 8000", "139 0013 9000");
        assert_eq!(
            k.bind(&other, "desk").await.unwrap_err(),
            CardRefusal::IdUsed(made.change.id)
        );
        assert_eq!(k.outbox().await.len(), 1);
        let changes = k.db.card_changes(50).await.expect("changes");
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].sync, SyncState::Accepted);
        assert_eq!(
            k.tap("nfc:04C0FFEE000001")
                .await
                .visit
                .customer
                .map(|c| c.id),
            made.change.customer_id
        );
    }

    /// A rejected walk-in's name and phone stay (quarantine and outbox) for staff to see
    /// what to fix, until the retention has passed since the hub's answer; then they
    /// are erased and the rejection, its reason and the consent stay.
    #[tokio::test]
    async fn a_rejected_walk_in_keeps_name_and_phone_until_the_retention() {
        let dir = tempfile::tempdir().expect("dir");
        let k = open(dir.path());
        let retention = std::time::Duration::from_secs(30 * 86_400);
        let side = SyncSide::new(k.writer.clone(), k.db.clone()).with_rejected_retention(retention);
        let made = k.bind(&walk_in_json(""), "desk").await.expect("bound");
        let batch = side
            .next_batch(500, 1 << 20)
            .await
            .expect("batch")
            .expect("rows");
        let answered: jiff::Timestamp = "2026-11-23T02:00:00Z".parse().expect("time");
        let reply = answer(&[(ItemStatus::Rejected, Some("phone_taken: C7"))], 1);
        side.settle(&batch, &reply, answered)
            .await
            .expect("settled");
        let look = || crate::store::open(dir.path()).expect("open");
        let kept = traces(&look(), &["13800138000"]);
        assert_eq!(kept.len(), 2, "the quarantine and the outbox: {kept:?}");

        let erase = |days: i64| {
            let now = answered + jiff::SignedDuration::from_hours(24 * days);
            k.writer
                .call(move |s| crate::sync_side::erase_expired(s.conn_mut(), now, retention))
        };
        assert_eq!(erase(29).await.expect("sweep"), 0);
        assert_eq!(traces(&look(), &PERSONAL), kept);
        assert_eq!(erase(30).await.expect("sweep"), 1);
        assert_eq!(traces(&look(), &PERSONAL), [] as [String; 0]);
        assert_eq!(file_traces(dir.path(), &PERSONAL), [] as [String; 0]);
        assert_eq!(erase(31).await.expect("sweep"), 0);

        let quarantined: String = look()
            .query_row("SELECT body FROM quarantine", [], |r| r.get(0))
            .expect("still quarantined");
        let wire::Record::CardBinding(b) = serde_json::from_str(&quarantined).expect("wire") else {
            panic!("a binding");
        };
        let new = b.new_customer.expect("the walk-in");
        assert_eq!(
            (new.name.as_str(), new.phone.as_str(), new.surname.as_str()),
            ("", "", "赵")
        );
        assert_eq!(new.consent.notice_version, NOTICE);
        let changes = k.db.card_changes(50).await.expect("changes");
        assert_eq!(
            changes[0].sync,
            SyncState::Rejected("phone_taken: C7".into())
        );
        // A retry of the erased request is still the same request.
        assert!(
            k.bind(&walk_in_json(""), "desk")
                .await
                .expect("retry")
                .replay
        );
        assert_eq!(changes[0].id, made.change.id);
    }

    /// A retention of 0s erases a rejected walk-in in the transaction that quarantines it.
    #[tokio::test]
    async fn a_zero_retention_erases_a_rejected_walk_in_at_once() {
        let dir = tempfile::tempdir().expect("dir");
        let k = open(dir.path());
        let side = SyncSide::new(k.writer.clone(), k.db.clone())
            .with_rejected_retention(std::time::Duration::ZERO);
        k.bind(&walk_in_json(""), "desk").await.expect("bound");
        let batch = side
            .next_batch(500, 1 << 20)
            .await
            .expect("batch")
            .expect("rows");
        let reply = answer(&[(ItemStatus::Rejected, Some("phone_taken: C7"))], 1);
        side.settle(&batch, &reply, jiff::Timestamp::now())
            .await
            .expect("settled");
        let conn = crate::store::open(dir.path()).expect("open");
        assert_eq!(traces(&conn, &PERSONAL), [] as [String; 0]);
        let count: u64 = conn
            .query_row("SELECT count(*) FROM quarantine", [], |r| r.get(0))
            .expect("count");
        assert_eq!(count, 1);
        // Undone as any rejected binding is.
        assert_eq!(k.card("nfc:04C0FFEE000001").await, None);
    }

    #[tokio::test]
    async fn unbound_cards_are_the_unknown_ones_latest_first() {
        let dir = tempfile::tempdir().expect("dir");
        let k = open(dir.path());
        for token in [
            "nfc:04C0FFEE000001",
            "nfc:04C0FFEE000002",
            "nfc:04C0FFEE000001",
            // Known, revoked, a phone: none of them is unbound.
            "nfc:04A1B2C3D4E5F6",
            "nfc:04DEADBEEF0001",
            "nfc:085A6B7C",
        ] {
            k.tap(token).await;
        }
        let list = k.db.unbound_cards(50).await.expect("unbound");
        let got: Vec<(&str, u64, &str)> = list
            .iter()
            .map(|c| (c.card.as_str(), c.taps, c.source.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("nfc:04C0FFEE000001", 2, "reader"),
                ("nfc:04C0FFEE000002", 1, "reader")
            ]
        );
        assert!(list[0].first_seen <= list[0].last_seen);
        assert_eq!(k.db.unbound_cards(1).await.expect("unbound").len(), 1);
    }
}
