//! The rotation queue (接待轮序) kept in the store, and `/api/v1/rotation`: consultants check in, out and free from a handheld. The rules are `reception::Rotation`'s.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rusqlite::{Connection, TransactionBehavior, params};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::{ApiError, ApiState, ErrorBody};
use crate::devices::{DeviceAuth, Scope};
use crate::handheld::{self, BODY_LIMIT};
use crate::reception::{Rotation, RotationError};
use crate::store::{ReadDb, Store, StoreError};

// ---------------------------------------------------------------------------------------------
// In the store

/// The queue from the head, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RotationView {
    /// On-duty consultants from the head (next to take a walk-in) to the tail.
    pub queue: Vec<SeatView>,
    /// Who takes the next walk-in: the first free consultant from the head; null when
    /// nobody is on duty or everyone is with a visitor.
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SeatView {
    pub consultant_id: String,
    /// The roster's name; null if the roster no longer has this consultant.
    pub name: Option<String>,
    /// With a visitor: skipped until they mark themselves free.
    pub busy: bool,
}

/// One change to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationOp {
    CheckIn(String),
    CheckOut(String),
    Free(String),
    Reorder(Vec<String>),
}

/// Why a change was not made; the queue is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationRefusal {
    #[error("no consultant with id {0:?} in this kiosk's roster; check the id")]
    NoSuchConsultant(String),
    #[error(transparent)]
    Rule(#[from] RotationError),
}

/// The saved queue, head first.
pub fn load_rotation(conn: &Connection) -> Result<Rotation, StoreError> {
    let entries: Vec<(String, bool)> = conn
        .prepare_cached("SELECT consultant_id, busy FROM rotation ORDER BY position")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Rotation::from_entries(entries)?)
}

/// Replaces the saved queue with `rotation`; the caller's transaction makes it atomic.
pub fn save_rotation(conn: &Connection, rotation: &Rotation) -> Result<(), StoreError> {
    conn.execute("DELETE FROM rotation", [])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO rotation (position, consultant_id, busy) VALUES (?1, ?2, ?3)",
    )?;
    for (position, (id, busy)) in rotation.to_entries().into_iter().enumerate() {
        insert.execute(params![position as i64, id, busy])?;
    }
    Ok(())
}

/// The saved queue with the consultants' names.
fn view(conn: &Connection) -> rusqlite::Result<RotationView> {
    let queue: Vec<SeatView> = conn
        .prepare_cached(
            "SELECT r.consultant_id, c.name, r.busy FROM rotation r
             LEFT JOIN consultants c ON c.id = r.consultant_id ORDER BY r.position",
        )?
        .query_map([], |r| {
            Ok(SeatView {
                consultant_id: r.get(0)?,
                name: r.get(1)?,
                busy: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let next = queue
        .iter()
        .find(|s| !s.busy)
        .map(|s| s.consultant_id.clone());
    Ok(RotationView { queue, next })
}

fn in_roster(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM consultants WHERE id = ?1)",
        [id],
        |r| r.get(0),
    )
}

impl Store {
    /// Loads the queue, applies `op` and saves it back, in one transaction: a change is
    /// durable when this returns, and a refused one leaves the queue as it was.
    pub fn change_rotation(
        &mut self,
        op: &RotationOp,
    ) -> Result<Result<RotationView, RotationRefusal>, StoreError> {
        self.retry_busy(|store| {
            let tx = store
                .conn_mut()
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut rotation = load_rotation(&tx)?;
            // Someone on duty whom the roster has dropped may still check out or be freed.
            let known = |id: &str| -> Result<Result<(), RotationRefusal>, StoreError> {
                Ok(if rotation.is_on_duty(id) || in_roster(&tx, id)? {
                    Ok(())
                } else {
                    Err(RotationRefusal::NoSuchConsultant(id.to_owned()))
                })
            };
            let checked = match op {
                RotationOp::CheckIn(id) => known(id)?,
                RotationOp::CheckOut(id) | RotationOp::Free(id) => known(id)?,
                RotationOp::Reorder(_) => Ok(()),
            };
            let changed = checked.and_then(|()| {
                match op {
                    RotationOp::CheckIn(id) => {
                        rotation.check_in(id);
                        Ok(())
                    }
                    RotationOp::CheckOut(id) => rotation.check_out(id),
                    RotationOp::Free(id) => rotation.mark_free(id),
                    RotationOp::Reorder(ids) => rotation.reorder(ids),
                }
                .map_err(RotationRefusal::from)
            });
            if let Err(refusal) = changed {
                return Ok(Err(refusal));
            }
            save_rotation(&tx, &rotation)?;
            let answer = view(&tx)?;
            tx.commit()?;
            Ok(Ok(answer))
        })
    }
}

impl ReadDb {
    /// The queue as last committed.
    pub async fn rotation(&self) -> Result<RotationView, StoreError> {
        self.with(view).await
    }
}

// ---------------------------------------------------------------------------------------------
// Over HTTP

/// Whom a check-in, check-out or free is for.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsultantBody {
    /// A roster consultant id; the device's own consultant when absent.
    #[schema(pattern = r"\S")]
    consultant_id: Option<String>,
}

/// The queue's new order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReorderBody {
    /// Every on-duty consultant exactly once, head first.
    order: Vec<String>,
}

const CONSULTANT_SHAPE: &str =
    "the body is empty or {\"consultant_id\": id}; the device's own consultant when absent";
const REORDER_SHAPE: &str = "the body is {\"order\": [every on-duty consultant id, head first]}";

/// The body, read strictly: `None` when empty or `null`; not JSON → 400; not the shape → 422.
fn parse_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    shape: &str,
) -> Result<Option<T>, ApiError> {
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "too_large",
                format!("the body is larger than {BODY_LIMIT} bytes; {shape}"),
            )
        } else {
            ApiError::new(status, "bad_request", rejection.body_text())
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("the body is not JSON: {e}"),
        )
    })?;
    if value.is_null() {
        return Ok(None);
    }
    let unprocessable =
        |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message);
    if !value.is_object() {
        return Err(unprocessable(format!(
            "the body must be a JSON object; {shape}"
        )));
    }
    T::deserialize(value)
        .map(Some)
        .map_err(|e| unprocessable(format!("{e}; {shape}")))
}

/// The consultant a device acts for: the body's, else the device's own. A handheld acts
/// for its own consultant only, and an unbound one for nobody; a staff device for anyone.
fn acting_for(device: &DeviceAuth, body: Option<ConsultantBody>) -> Result<String, ApiError> {
    let asked = body.and_then(|b| b.consultant_id);
    if asked.as_deref().is_some_and(|id| id.trim().is_empty()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "consultant_id is empty".into(),
        ));
    }
    let forbidden = |why: String| ApiError::new(StatusCode::FORBIDDEN, "forbidden", why);
    match (asked, device.scope()) {
        (Some(asked), _) => match device.refuses(&asked) {
            Some(why) => Err(forbidden(why)),
            None => Ok(asked),
        },
        (None, Scope::Only(own)) => Ok(own),
        (None, Scope::Anyone) => match &device.consultant_id {
            Some(own) => Ok(own.clone()),
            None => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!(
                    "device {} is a staff device of no consultant; say whom with {{\"consultant_id\": id}}",
                    device.name
                ),
            )),
        },
        (None, Scope::Nobody) => Err(forbidden(format!(
            "device {} is a handheld bound to no consultant, so it acts for nobody in the queue; add the handheld with `kiosk devices add NAME --consultant ID`, or use a staff device (`--staff`)",
            device.name
        ))),
    }
}

/// Runs `op` on the writer and answers with the queue, or why not.
async fn apply(s: &ApiState, op: RotationOp) -> Result<Response, ApiError> {
    let result = s
        .writer
        .call(move |store| store.change_rotation(&op))
        .await?;
    match result {
        Ok(view) => Ok(Json(view).into_response()),
        Err(refusal) => {
            let (status, code) = match &refusal {
                RotationRefusal::NoSuchConsultant(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "no_such_consultant")
                }
                RotationRefusal::Rule(e @ RotationError::NotOnDuty(_)) => {
                    (StatusCode::CONFLICT, e.code())
                }
                RotationRefusal::Rule(e) => (StatusCode::UNPROCESSABLE_ENTITY, e.code()),
            };
            Err(ApiError::new(status, code, refusal.to_string()))
        }
    }
}

/// A check-in, check-out or free: who, then the change.
async fn consultant_change(
    s: &ApiState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    op: fn(String) -> RotationOp,
) -> Response {
    let result = async {
        let device = handheld::authenticate(s, headers).await?;
        let body = parse_body::<ConsultantBody>(body, CONSULTANT_SHAPE)
            .map_err(IntoResponse::into_response)?;
        let id = acting_for(&device, body).map_err(IntoResponse::into_response)?;
        apply(s, op(id)).await.map_err(IntoResponse::into_response)
    }
    .await;
    result.unwrap_or_else(|r| r)
}

/// Goes on duty at the tail of the queue; already on duty keeps the place.
#[utoipa::path(post, path = "/api/v1/rotation/check-in", tag = "rotation",
    security(("bearerAuth" = [])),
    request_body(content = Option<ConsultantBody>, content_type = "application/json",
        description = "Optional: whom, when not the device's own consultant"),
    responses(
        (status = 200, description = "On duty; the queue", body = RotationView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No token, an unknown one or a revoked one", body = ErrorBody),
        (status = 403, description = "A handheld of another consultant, or one bound to nobody", body = ErrorBody),
        (status = 413, description = "The body is larger than 16 KiB", body = ErrorBody),
        (status = 422, description = "Not the body's shape, no consultant given, or not in the roster", body = ErrorBody),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
pub(crate) async fn check_in(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    consultant_change(&s, &headers, body, RotationOp::CheckIn).await
}

/// Goes off duty, with or without a visitor.
#[utoipa::path(post, path = "/api/v1/rotation/check-out", tag = "rotation",
    security(("bearerAuth" = [])),
    request_body(content = Option<ConsultantBody>, content_type = "application/json",
        description = "Optional: whom, when not the device's own consultant"),
    responses(
        (status = 200, description = "Off duty; the queue", body = RotationView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No token, an unknown one or a revoked one", body = ErrorBody),
        (status = 403, description = "A handheld of another consultant, or one bound to nobody", body = ErrorBody),
        (status = 409, description = "Not on duty (`not_on_duty`)", body = ErrorBody),
        (status = 413, description = "The body is larger than 16 KiB", body = ErrorBody),
        (status = 422, description = "Not the body's shape, no consultant given, or not in the roster", body = ErrorBody),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
pub(crate) async fn check_out(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    consultant_change(&s, &headers, body, RotationOp::CheckOut).await
}

/// Back from a visitor: takes walk-ins again, from the place already held.
#[utoipa::path(post, path = "/api/v1/rotation/free", tag = "rotation",
    security(("bearerAuth" = [])),
    request_body(content = Option<ConsultantBody>, content_type = "application/json",
        description = "Optional: whom, when not the device's own consultant"),
    responses(
        (status = 200, description = "Free; the queue", body = RotationView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No token, an unknown one or a revoked one", body = ErrorBody),
        (status = 403, description = "A handheld of another consultant, or one bound to nobody", body = ErrorBody),
        (status = 409, description = "Not on duty (`not_on_duty`)", body = ErrorBody),
        (status = 413, description = "The body is larger than 16 KiB", body = ErrorBody),
        (status = 422, description = "Not the body's shape, no consultant given, or not in the roster", body = ErrorBody),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
pub(crate) async fn free(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    consultant_change(&s, &headers, body, RotationOp::Free).await
}

/// Puts the queue in a new order (reception desk devices only); each keeps their busy state.
#[utoipa::path(post, path = "/api/v1/rotation/reorder", tag = "rotation",
    security(("bearerAuth" = [])),
    request_body(content = ReorderBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Reordered; the queue", body = RotationView),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 401, description = "No token, an unknown one or a revoked one", body = ErrorBody),
        (status = 403, description = "A handheld's token: reordering needs a staff device", body = ErrorBody),
        (status = 413, description = "The body is larger than 16 KiB", body = ErrorBody),
        (status = 422, description = "Not the body's shape, or not every on-duty consultant exactly once (`not_a_permutation`)", body = ErrorBody),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
pub(crate) async fn reorder(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        // Moving everyone in the queue is the reception desk's (or the manager's) job.
        handheld::authenticate_staff(&s, &headers).await?;
        let body =
            parse_body::<ReorderBody>(body, REORDER_SHAPE).map_err(IntoResponse::into_response)?;
        let Some(body) = body else {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                REORDER_SHAPE.into(),
            )
            .into_response());
        };
        apply(&s, RotationOp::Reorder(body.order))
            .await
            .map_err(IntoResponse::into_response)
    }
    .await;
    result.unwrap_or_else(|r| r)
}

/// The queue, head first, and who takes the next walk-in.
#[utoipa::path(get, path = "/api/v1/rotation", tag = "rotation",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The queue", body = RotationView),
        (status = 401, description = "No token, an unknown one or a revoked one", body = ErrorBody),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
pub(crate) async fn get_rotation(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    let result = async {
        handheld::authenticate(&s, &headers).await?;
        let view =
            s.db.rotation()
                .await
                .map_err(|e| ApiError::from(e).into_response())?;
        Ok::<_, Response>(Json(view).into_response())
    }
    .await;
    result.unwrap_or_else(|r| r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::parse_csv;
    use crate::store::Identity;

    fn store(dir: &std::path::Path) -> Store {
        let identity = Identity {
            kiosk_id: "k1".into(),
            office_id: "o1".into(),
            time_zone: jiff::tz::TimeZone::get("Asia/Shanghai").expect("tz"),
        };
        Store::open(dir, identity).expect("open")
    }

    fn with_roster(dir: &std::path::Path) -> Store {
        let mut s = store(dir);
        let roster = parse_csv(
            "card,customer_id,surname,title,tier,card_status,consultant_id,consultant_name\n\
             nfc:04A1B2C3,C1,张,mr,gold,active,E01,李娜\n\
             nfc:04D0D0D0,C2,王,ms,normal,active,E02,陈晨\n\
             nfc:04D0D0D1,C3,赵,ms,normal,active,E03,周杰\n"
                .as_bytes(),
        )
        .expect("roster");
        s.import_roster(&roster).expect("import");
        s
    }

    fn change(s: &mut Store, op: RotationOp) -> Result<RotationView, RotationRefusal> {
        s.change_rotation(&op).expect("store")
    }

    fn ids(view: &RotationView) -> Vec<(&str, bool)> {
        view.queue
            .iter()
            .map(|s| (s.consultant_id.as_str(), s.busy))
            .collect()
    }

    #[test]
    fn rotation_load_save_round_trip() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = store(dir.path());
        let conn = s.conn_mut();
        assert_eq!(load_rotation(conn).expect("load"), Rotation::new());
        let mut rotation = Rotation::new();
        for id in ["E02", "E01", "E03"] {
            rotation.check_in(id);
        }
        assert_eq!(rotation.next_for_walk_in().as_deref(), Some("E02"));
        save_rotation(conn, &rotation).expect("save");
        assert_eq!(load_rotation(conn).expect("load"), rotation);
        // Saving replaces the whole queue, a shorter one included.
        rotation.check_out("E01").expect("on duty");
        save_rotation(conn, &rotation).expect("save");
        assert_eq!(load_rotation(conn).expect("load"), rotation);
        assert_eq!(
            load_rotation(conn).expect("load").to_entries(),
            vec![("E03".to_owned(), false), ("E02".to_owned(), true)]
        );
    }

    #[test]
    fn rotation_changes_are_checked_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = with_roster(dir.path());
        change(&mut s, RotationOp::CheckIn("E02".into())).expect("check in");
        let view = change(&mut s, RotationOp::CheckIn("E01".into())).expect("check in");
        assert_eq!(ids(&view), [("E02", false), ("E01", false)]);
        assert_eq!(view.queue[0].name.as_deref(), Some("陈晨"));
        assert_eq!(view.next.as_deref(), Some("E02"));
        // A double check-in keeps the place.
        let view = change(&mut s, RotationOp::CheckIn("E02".into())).expect("again");
        assert_eq!(ids(&view), [("E02", false), ("E01", false)]);

        assert_eq!(
            change(&mut s, RotationOp::CheckIn("E99".into())),
            Err(RotationRefusal::NoSuchConsultant("E99".into()))
        );
        assert_eq!(
            change(&mut s, RotationOp::CheckOut("E03".into())),
            Err(RotationRefusal::Rule(RotationError::NotOnDuty(
                "E03".into()
            )))
        );
        assert!(matches!(
            change(&mut s, RotationOp::Reorder(vec!["E01".into()])),
            Err(RotationRefusal::Rule(RotationError::NotAPermutation { .. }))
        ));
        let view = change(
            &mut s,
            RotationOp::Reorder(vec!["E01".into(), "E02".into()]),
        )
        .expect("reorder");
        assert_eq!(ids(&view), [("E01", false), ("E02", false)]);

        // A walk-in taken by the pure rules, saved: the head is busy at the tail.
        let mut rotation = load_rotation(s.conn_mut()).expect("load");
        assert_eq!(rotation.next_for_walk_in().as_deref(), Some("E01"));
        save_rotation(s.conn_mut(), &rotation).expect("save");
        drop(s);

        let mut s = store(dir.path());
        let view = super::view(s.conn_mut()).expect("view");
        assert_eq!(ids(&view), [("E02", false), ("E01", true)]);
        assert_eq!(view.next.as_deref(), Some("E02"));
        let view = change(&mut s, RotationOp::Free("E01".into())).expect("free");
        assert_eq!(ids(&view), [("E02", false), ("E01", false)]);
        let view = change(&mut s, RotationOp::CheckOut("E02".into())).expect("out");
        assert_eq!(ids(&view), [("E01", false)]);
    }
}
