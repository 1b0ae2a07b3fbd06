//! `POST /api/v1/visits`: a handheld device's visit. Bearer device token, a per-device rate limit, a strictly parsed body; then the tap's path through the writer.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiosk_device::CardToken;
use kiosk_sync::auth;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::{ApiError, ApiState, ErrorBody, VisitJson};
use crate::devices::{DeviceAuth, DeviceRole, HandheldPost, Posted};
use crate::store::Presented;

/// Largest accepted body: a visit is a few hundred bytes.
pub const BODY_LIMIT: usize = 16 * 1024;
/// How far ahead of the kiosk's clock a handheld's `at` may be (clock drift), no more.
const FUTURE_SLACK: jiff::SignedDuration = jiff::SignedDuration::from_secs(5 * 60);
/// Longest note, in characters.
pub(crate) const NOTE_MAX: usize = 200;
/// The body's shape, for error messages.
const SHAPE: &str = "the body is {\"id\": UUID, \"card\": token or \"customer_id\": id, \"at\": RFC 3339 (optional), \"note\": text (optional)}";
/// Per device: sustained posts per second, and how many may come at once.
pub const RATE_PER_SECOND: f64 = 20.0;
pub const RATE_BURST: f64 = 40.0;

/// The body as sent. Unknown fields are errors, so a typo is never silently dropped.
/// Its schema's fields are this struct's; `openapi::VisitPost` turns it into
/// the two shapes (card, or customer_id) that `parse` accepts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostBody {
    /// Made by the handheld (a UUIDv7 is best); the same id again is the same request.
    id: Uuid,
    /// The card token read, as `CardToken::parse` takes it.
    #[schema(
        pattern = r"^[ \t\r\n]*([nN][fF][cC]:([0-9A-Fa-f]{2}){4,10}|[eE][mM]:[0-9A-Fa-f]{8}|[wW][gG]26:[ \t\r\n]*([01]?[0-9]?[0-9]|2[0-4][0-9]|25[0-5])[ \t\r\n]*/[ \t\r\n]*(0*[0-5]?[0-9]{1,4}|0*6[0-4][0-9]{3}|0*65[0-4][0-9]{2}|0*655[0-2][0-9]|0*6553[0-5])|[qQ][rR]:[ \t\r\n]*[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]{0,254}[^\s\x00-\x1f\x7f-\x9f])?)[ \t\r\n]*$"
    )]
    card: Option<String>,
    /// The customer chosen on the handheld, by roster id.
    #[schema(pattern = r"\S")]
    customer_id: Option<String>,
    /// When it happened on the handheld (RFC 3339), at most 5 minutes ahead of the
    /// kiosk's clock; the request's time when absent.
    #[schema(format = DateTime)]
    at: Option<String>,
    #[schema(max_length = 200)]
    note: Option<String>,
}

/// The answer to a post: the visit (the day's earlier one for a repeat) and its outcome.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PostAnswer {
    visit: VisitJson,
    /// welcome, broker_confirmed, unknown or denied.
    outcome: String,
    /// True when the customer's visit of the day was already recorded.
    repeat: bool,
}

/// The body as understood, whose JSON is hashed: two spellings of one card or one
/// instant are the same request.
#[derive(Debug, Serialize)]
struct Canonical<'a> {
    id: Uuid,
    card: Option<&'a str>,
    customer_id: Option<&'a str>,
    at: Option<jiff::Timestamp>,
    note: Option<&'a str>,
}

/// Token buckets per device: a storm from one handheld cannot starve the kiosk's
/// writer, and one device's storm does not slow the others.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            per_second,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request's token for `key` at `now`, or says how long until one is there.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

/// `Retry-After` in whole seconds, rounded up and at least 1: 0 would invite a spin.
fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// A handheld's visit: takes the same path as a tap at the kiosk.
#[utoipa::path(post, path = "/api/v1/visits", tag = "visits",
    security(("bearerAuth" = [])),
    request_body(content = inline(crate::openapi::VisitPost), content_type = "application/json",
        description = "Exactly one of `card` and `customer_id`; unknown fields are refused"),
    responses(
        (status = 201, description = "A new visit, greeted on the screen", body = PostAnswer),
        (status = 200, description = "The same id and body again: the stored answer, nothing happens again", body = PostAnswer),
        (status = 400, description = "The body is not JSON, or could not be read", body = ErrorBody),
        (status = 401, description = "No token, an unknown one or a revoked one", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "Bearer"))),
        (status = 413, description = "The body is larger than 16 KiB", body = ErrorBody),
        (status = 422, description = "Not a visit (an unknown or missing field, a bad card, a time ahead of the kiosk's clock, a long note), \
an unknown customer, or an id already used for another body", body = ErrorBody),
        (status = 429, description = "This device posts faster than 20 visits per second", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
pub(crate) async fn post_visit(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle(&s, &headers, body).await {
        Ok(r) => r,
        Err(r) => r,
    }
}

async fn handle(
    s: &ApiState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let device = authenticate(s, headers).await?;
    if let Err(wait) = s.limiter.take(&device.name, Instant::now()) {
        let secs = retry_after_secs(wait);
        let err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "device {} sends more than {RATE_PER_SECOND} visits per second; retry after {secs} s",
                device.name
            ),
        );
        return Err(([(header::RETRY_AFTER, secs.to_string())], err).into_response());
    }
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "too_large",
                format!("the body is larger than {BODY_LIMIT} bytes; send one visit per request, with a short note"),
            )
        } else {
            ApiError::new(status, "bad_request", rejection.body_text())
        }
        .into_response()
    })?;
    let post =
        parse(&bytes, &device.name, jiff::Timestamp::now()).map_err(IntoResponse::into_response)?;
    let at = post.device_time;
    let result = s
        .writer
        // Grouped: posts arriving together share one commit (one fsync).
        .call_grouped(move |store| store.record_post_in_group(&post))
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let posted = result.map_err(|refusal| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "refused",
            refusal.to_string(),
        )
        .into_response()
    })?;
    Ok(answer(s, &device, posted, at))
}

/// The device presenting the bearer token, looked up by the token's hash on every
/// request (no cache: a revocation counts at once), then compared in constant time.
pub(crate) async fn authenticate(
    s: &ApiState,
    headers: &HeaderMap,
) -> Result<DeviceAuth, Response> {
    let unauthorized = |message: &str| {
        (
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned()),
        )
            .into_response()
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "send the device's token as `Authorization: Bearer <token>`; `kiosk devices add` issues one",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or_default();
    if token.is_empty() {
        return Err(unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ));
    }
    let found =
        s.db.device_by_token_hash(auth::hash(token))
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
    match found {
        Some(d) if !auth::verify(token, &d.token_hash) => Err(unauthorized(
            "this token belongs to no device; check it, or issue one with `kiosk devices add`",
        )),
        Some(d) if d.revoked => Err(unauthorized(
            "this device's token was revoked; issue a new one with `kiosk devices add`",
        )),
        Some(d) => Ok(d),
        None => Err(unauthorized(
            "this token belongs to no device; check it, or issue one with `kiosk devices add`",
        )),
    }
}

/// A staff device presenting the bearer token (`kiosk devices add NAME --staff`): 401 as
/// for any device, then 403 for a handheld, which may not read visits or issue cards.
pub(crate) async fn authenticate_staff(
    s: &ApiState,
    headers: &HeaderMap,
) -> Result<DeviceAuth, Response> {
    let device = authenticate(s, headers).await?;
    if device.role != DeviceRole::Staff {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "device {} is a handheld; this needs a staff device: `kiosk devices add NAME --staff`",
                device.name
            ),
        )
        .into_response());
    }
    Ok(device)
}

/// The body, read strictly: malformed JSON is a 400; JSON that is not a visit (unknown
/// or missing fields, a bad card, a time in the future) is a 422, and says why.
fn parse(bytes: &[u8], device: &str, now: jiff::Timestamp) -> Result<HandheldPost, ApiError> {
    let unprocessable =
        |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message);
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("the body is not JSON: {e}"),
        )
    })?;
    // serde would also read a struct from an array; a visit is an object only.
    if !value.is_object() {
        return Err(unprocessable(format!(
            "the body must be a JSON object; {SHAPE}"
        )));
    }
    let body = PostBody::deserialize(value).map_err(|e| unprocessable(format!("{e}; {SHAPE}")))?;
    let presented = match (&body.card, &body.customer_id) {
        (Some(card), None) => Presented::Card(
            CardToken::parse(card).map_err(|e| unprocessable(format!("card {card:?}: {e}")))?,
        ),
        (None, Some(id)) if !id.trim().is_empty() => Presented::Customer(id.clone()),
        (None, Some(_)) => return Err(unprocessable("customer_id is empty".into())),
        (Some(_), Some(_)) => {
            return Err(unprocessable(
                "send either card or customer_id, not both".into(),
            ));
        }
        (None, None) => {
            return Err(unprocessable(
                "send the card token read (card) or the customer chosen (customer_id)".into(),
            ));
        }
    };
    let at = match &body.at {
        None => None,
        Some(text) => {
            let at: jiff::Timestamp = text.parse().map_err(|e| {
                unprocessable(format!(
                    "at {text:?} is not an RFC 3339 time ({e}); write e.g. 2026-11-23T10:15:00+08:00"
                ))
            })?;
            if at.duration_since(now) > FUTURE_SLACK {
                return Err(unprocessable(format!(
                    "at {text:?} is more than 5 minutes ahead of the kiosk's clock ({now}); check the handheld's clock"
                )));
            }
            Some(at)
        }
    };
    if let Some(note) = &body.note {
        let chars = note.chars().count();
        if chars > NOTE_MAX {
            return Err(unprocessable(format!(
                "the note has {chars} characters; keep it to {NOTE_MAX}"
            )));
        }
    }
    let canonical = Canonical {
        id: body.id,
        card: match &presented {
            Presented::Card(t) => Some(t.as_str()),
            Presented::Customer(_) => None,
        },
        customer_id: body.customer_id.as_deref(),
        at,
        note: body.note.as_deref(),
    };
    let json = serde_json::to_string(&canonical).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot encode the request: {e}"),
        )
    })?;
    Ok(HandheldPost {
        id: body.id,
        device: device.to_owned(),
        presented,
        // The request's time when the handheld gave none; not part of the hash, so a
        // retry later is still the same request.
        device_time: at.unwrap_or(now),
        received_at: now,
        note: body.note,
        body_hash: auth::hash(&json),
    })
}

/// 201 with the new visit (greeted on the screen like a tap), or 200 with the stored
/// answer of a replay (nothing happens again).
fn answer(s: &ApiState, device: &DeviceAuth, posted: Posted, at: jiff::Timestamp) -> Response {
    let status = if posted.replay {
        StatusCode::OK
    } else {
        // Greeted at the post's time, also for a repeat whose visit is from earlier.
        let source = format!("handheld:{}", device.name);
        s.visit_committed(
            &posted.visit,
            posted.repeat,
            &source,
            at,
            posted.alerts.clone(),
            None,
        );
        StatusCode::CREATED
    };
    let body = PostAnswer {
        outcome: posted.visit.outcome.clone(),
        visit: VisitJson::from(posted.visit),
        repeat: posted.repeat,
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate_and_says_when() {
        let limiter = RateLimiter::new(20.0, 40.0);
        let t0 = Instant::now();
        for _ in 0..40 {
            assert_eq!(limiter.take("a", t0), Ok(()));
        }
        let wait = limiter.take("a", t0).expect_err("the burst is spent");
        assert_eq!(retry_after_secs(wait), 1);
        // Another device has its own bucket.
        assert_eq!(limiter.take("b", t0), Ok(()));
        // 50 ms refill one token at 20/s: one more, then none.
        let t1 = t0 + Duration::from_millis(50);
        assert_eq!(limiter.take("a", t1), Ok(()));
        assert!(limiter.take("a", t1).is_err());
        // A long pause refills up to the burst only.
        let t2 = t1 + Duration::from_secs(3600);
        let taken = (0..100).filter(|_| limiter.take("a", t2).is_ok()).count();
        assert_eq!(taken, 40);
    }

    fn now() -> jiff::Timestamp {
        "2026-11-23T02:00:00Z".parse().expect("time")
    }

    const ID: &str = "0192f0c4-0000-7000-8000-000000000001";

    /// Each bad body → its status and a word of the message that says what is wrong.
    #[test]
    fn bad_bodies_are_refused_with_what_is_wrong() {
        let cases: &[(&str, u16, &str)] = &[
            ("{", 400, "not JSON"),
            ("[]", 422, "JSON object"),
            (r#"{"card":"nfc:04A1B2C3"}"#, 422, "missing field `id`"),
            (r#"{"id":"nope","card":"nfc:04A1B2C3"}"#, 422, "UUID"),
            (
                &format!(r#"{{"id":"{ID}","card":"nfc:04A1B2C3","x":1}}"#),
                422,
                "unknown field `x`",
            ),
            (&format!(r#"{{"id":"{ID}"}}"#), 422, "card"),
            (
                &format!(r#"{{"id":"{ID}","card":"nfc:04A1B2C3","customer_id":"C1"}}"#),
                422,
                "not both",
            ),
            (
                &format!(r#"{{"id":"{ID}","card":"zz:1"}}"#),
                422,
                "unknown card scheme",
            ),
            (
                &format!(r#"{{"id":"{ID}","card":"nfc:04A1B2C3","at":"2026-11-23T02:06:00Z"}}"#),
                422,
                "5 minutes ahead",
            ),
            (
                &format!(r#"{{"id":"{ID}","card":"nfc:04A1B2C3","at":"yesterday"}}"#),
                422,
                "RFC 3339",
            ),
            (
                &format!(
                    r#"{{"id":"{ID}","customer_id":"C1","note":"{}"}}"#,
                    "长".repeat(201)
                ),
                422,
                "201 characters",
            ),
        ];
        for (body, status, word) in cases {
            let err = parse(body.as_bytes(), "pda", now()).expect_err(body);
            let response = err.into_response();
            assert_eq!(response.status().as_u16(), *status, "{body}");
            let bytes = futures_util::FutureExt::now_or_never(axum::body::to_bytes(
                response.into_body(),
                usize::MAX,
            ))
            .expect("ready")
            .expect("body");
            let text = String::from_utf8_lossy(&bytes);
            assert!(text.contains(word), "{body}: {text}");
        }
    }

    /// Spellings of the same request hash alike; a different note does not.
    #[test]
    fn the_hash_is_of_the_request_as_understood() {
        let hash = |body: &str| parse(body.as_bytes(), "pda", now()).expect(body).body_hash;
        let a = hash(&format!(
            r#"{{"id":"{ID}","card":"nfc:04a1b2c3","at":"2026-11-23T10:00:00+08:00"}}"#
        ));
        let b = hash(&format!(
            r#"{{"at":"2026-11-23T02:00:00Z","card":"nfc:04A1B2C3","id":"{ID}"}}"#
        ));
        assert_eq!(a, b);
        let c = hash(&format!(
            r#"{{"id":"{ID}","card":"nfc:04A1B2C3","at":"2026-11-23T02:00:00Z","note":"x"}}"#
        ));
        assert_ne!(a, c);
        // An `at` within the slack is fine.
        hash(&format!(
            r#"{{"id":"{ID}","card":"nfc:04A1B2C3","at":"2026-11-23T02:04:59Z"}}"#
        ));
    }
}
