//! The staff console (`GET /console`), the pages' embedded files (`/assets/…`), and the read endpoints the screen and the console need: screen settings, stats, CSV export, consultants, system.

use std::borrow::Cow;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kiosk_config::{ScreenConfig, ScreenLanguage};
use rusqlite::params;
use rust_embed::RustEmbed;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{ApiError, ApiState, ErrorBody};
use crate::handheld;
use crate::store::{StoreError, VISIT_COLUMNS, VISIT_FROM, VisitView, visit_from_row};

/// The pages, their CSS and JS, embedded so the kiosk needs no network at all.
#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// Only this origin: no CDN, font or script from outside can sneak in, and nothing may
/// frame the console.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Outcomes that count as the customer's visit of the day (a broker's confirmed
/// customer is a visit too), used as `outcome IN {COUNTED} AND kind IS NOT NULL`: a
/// broker's confirmation after the day's visit is evidence without a kind, not a visit.
const COUNTED: &str = "('welcome', 'broker_confirmed')";

/// The longest range a CSV export covers; a year of visits fits in memory easily.
const CSV_MAX_DAYS: i32 = 366;

/// Days shown in the first-visits-vs-revisits chart.
const TREND_DAYS: i32 = 30;

/// A logo larger than this is refused at start: the screen loads it on every reconnect.
const LOGO_MAX_BYTES: u64 = 1024 * 1024;

/// The console's routes and the screen's settings; merged into `api::router`.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/console", get(console))
        // Static files, not part of the API document (see `api::ROUTES`).
        .route("/assets/{file}", get(asset))
        .route("/api/v1/screen", get(screen_settings))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/visits.csv", get(visits_csv))
        .route("/api/v1/consultants", get(consultants))
        .route("/api/v1/system", get(system))
}

// ---------------------------------------------------------------------------------------------
// Screen settings

/// What `[screen]` says, with the logo read once at start.
#[derive(Debug, Clone)]
pub struct ScreenSettings {
    pub language: ScreenLanguage,
    pub greeting: Duration,
    pub logo: Option<Logo>,
}

/// The office's logo image, served at `/assets/logo`.
#[derive(Debug, Clone)]
pub struct Logo {
    bytes: Bytes,
    content_type: &'static str,
    etag: String,
}

/// Why `screen.logo` cannot be used; the kiosk does not start.
#[derive(Debug, thiserror::Error)]
pub enum LogoError {
    #[error(
        "cannot read screen.logo {path}: {source}; check the path (relative to the config file's folder) and its permissions"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("screen.logo {path} is {size} bytes; use an image under 1 MiB (a logo needs no more)")]
    TooLarge { path: PathBuf, size: u64 },
}

impl ScreenSettings {
    /// The defaults of `[screen]`, without a logo.
    pub fn defaults() -> ScreenSettings {
        ScreenSettings::without_logo(&ScreenConfig::defaults())
    }

    fn without_logo(cfg: &ScreenConfig) -> ScreenSettings {
        ScreenSettings {
            language: cfg.language,
            greeting: cfg.greeting_duration,
            logo: None,
        }
    }

    /// Reads the logo file (blocking: call it off the async workers).
    pub fn load(cfg: &ScreenConfig) -> Result<ScreenSettings, LogoError> {
        let mut settings = ScreenSettings::without_logo(cfg);
        if let Some(path) = &cfg.logo {
            settings.logo = Some(read_logo(path)?);
        }
        Ok(settings)
    }
}

fn read_logo(path: &FsPath) -> Result<Logo, LogoError> {
    let read_err = |source| LogoError::Read {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_err)?.len();
    if size > LOGO_MAX_BYTES {
        return Err(LogoError::TooLarge {
            path: path.to_owned(),
            size,
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
    let etag = format!("\"logo-{}\"", hex::encode(&digest[..8]));
    Ok(Logo {
        bytes: Bytes::from(bytes),
        content_type: content_type(ext.as_deref().unwrap_or("")),
        etag,
    })
}

/// The screen's settings, as the page reads them.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ScreenJson {
    office_name: String,
    /// `zh`, `en` or `both`.
    #[schema(value_type = String)]
    language: &'static str,
    /// How long a greeting stays before the idle screen returns.
    greeting_seconds: f64,
    /// The logo's URL, when one is configured.
    logo: Option<String>,
    /// The office's IANA time zone: the screen's clock shows office time.
    time_zone: String,
}

/// The kiosk screen's settings (`[screen]`) and the office's name; public, like the screen.
#[utoipa::path(get, path = "/api/v1/screen", tag = "screen",
    responses((status = 200, description = "The screen's settings", body = ScreenJson)))]
pub(crate) async fn screen_settings(State(s): State<ApiState>) -> Json<ScreenJson> {
    let screen = &s.info.screen;
    Json(ScreenJson {
        office_name: s.info.office_name.clone(),
        language: screen.language.as_str(),
        greeting_seconds: screen.greeting.as_secs_f64(),
        logo: screen.logo.as_ref().map(|_| "/assets/logo".to_owned()),
        time_zone: s.info.time_zone.clone(),
    })
}

// ---------------------------------------------------------------------------------------------
// Pages and files

/// An embedded page with the headers every page gets.
pub(crate) fn page(name: &str) -> Response {
    match Assets::get(name) {
        Some(file) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            file.data,
        )
            .into_response(),
        None => missing_file(name),
    }
}

fn missing_file(name: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no file {name:?} in this kiosk; the pages load their files themselves"),
    )
    .into_response()
}

/// The staff console (HTML). The page itself holds no data: it asks for a staff device's
/// token and sends it with every request.
#[utoipa::path(get, path = "/console", tag = "console",
    responses((status = 200, description = "The staff console's page", content_type = "text/html", body = String)))]
pub(crate) async fn console() -> Response {
    page("console.html")
}

fn content_type(ext: &str) -> &'static str {
    match ext {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// A file of the pages (CSS, JS, images) or the configured logo. Revalidated on every
/// load (`no-cache` + ETag): after an upgrade the screen never runs an old script.
async fn asset(
    State(s): State<ApiState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (body, content_type, etag): (Cow<'static, [u8]>, &'static str, String) = if file == "logo" {
        match &s.info.screen.logo {
            Some(logo) => (
                Cow::Owned(logo.bytes.to_vec()),
                logo.content_type,
                logo.etag.clone(),
            ),
            None => return missing_file(&file),
        }
    } else {
        let ext = file.rsplit_once('.').map_or("", |(_, e)| e);
        // Pages have their own routes (and headers).
        match Assets::get(&file).filter(|_| ext != "html") {
            Some(found) => {
                let hash = found.metadata.sha256_hash();
                (
                    found.data,
                    content_type(ext),
                    format!("\"{}\"", hex::encode(&hash[..8])),
                )
            }
            None => return missing_file(&file),
        }
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let etag = HeaderValue::from_str(&etag).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if not_modified {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Staff endpoints

fn bad_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// Well-formed dates that make no range (backwards, too long, before the calendar).
fn bad_range(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_range", message)
}

/// An office day given as a parameter, or today.
fn parse_day(key: &str, value: Option<&str>, today: &str) -> Result<jiff::civil::Date, ApiError> {
    let text = value.unwrap_or(today);
    text.parse().map_err(|_| {
        bad_request(format!(
            "{key} {text:?} is not a date; write YYYY-MM-DD, e.g. 2026-11-23"
        ))
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StatsQuery {
    /// Office day, YYYY-MM-DD; today by default.
    #[param(format = Date)]
    day: Option<String>,
}

/// A day's counts for the console, and the 30 days up to it.
#[derive(Debug, Default, Serialize, ToSchema)]
pub(crate) struct StatsJson {
    #[schema(format = Date)]
    day: String,
    /// Counted visits (one per customer per office day).
    visits: u64,
    first: u64,
    revisit: u64,
    /// Taps of unknown cards (not counted as visits).
    unknown: u64,
    /// Refused taps: revoked cards, phones, refused broker codes (not counted).
    denied: u64,
    /// Counted visits per receiving consultant, most first; `consultant_id` null for
    /// visitors nobody received.
    by_consultant: Vec<ConsultantCount>,
    /// Counted visits per source (a reader's name, or `handheld:NAME`), most first.
    by_source: Vec<SourceCount>,
    /// Counted visits per hour of the office day, 0 to 23 (office time).
    by_hour: Vec<u64>,
    /// First visits and revisits for each of the 30 office days ending with `day`, oldest first.
    days: Vec<DayCount>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConsultantCount {
    consultant_id: Option<String>,
    name: Option<String>,
    visits: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SourceCount {
    source: String,
    visits: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DayCount {
    #[schema(format = Date)]
    day: String,
    first: u64,
    revisit: u64,
}

/// The console's counts and charts for an office day: visits, first visits and revisits,
/// unknown and refused taps, by consultant, by source, by hour, and first visits vs
/// revisits over the 30 days up to it. Staff device token.
#[utoipa::path(get, path = "/api/v1/stats", tag = "console", params(StatsQuery),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The day's counts", body = StatsJson),
        (status = 400, description = "A parameter is malformed or unknown", body = ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "A handheld's token: this needs a staff device", body = ErrorBody),
        (status = 422, description = "The day is too early for a 30-day chart", body = ErrorBody),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
async fn stats(
    State(s): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    if let Err(refused) = handheld::authenticate_staff(&s, &headers).await {
        return Ok(refused);
    }
    let Query(q) =
        query.map_err(|e| bad_request(format!("{e}; the parameter is day=YYYY-MM-DD")))?;
    let day = parse_day("day", q.day.as_deref(), &s.db.today())?;
    let first_day = day
        .checked_sub(jiff::Span::new().days(TREND_DAYS - 1))
        .map_err(|_| bad_range(format!("day {day} is too early; write a recent date")))?;
    let tz = s.db.time_zone().clone();
    let stats =
        s.db.with(move |c| read_stats(c, day, first_day, &tz))
            .await?;
    Ok(Json(stats).into_response())
}

fn read_stats(
    c: &rusqlite::Connection,
    day: jiff::civil::Date,
    first_day: jiff::civil::Date,
    tz: &jiff::tz::TimeZone,
) -> rusqlite::Result<StatsJson> {
    let day_text = day.to_string();
    let mut out = StatsJson {
        day: day_text.clone(),
        by_hour: vec![0; 24],
        ..StatsJson::default()
    };
    let mut stmt = c.prepare_cached(
        "SELECT outcome, kind, count(*) FROM visits WHERE office_day = ?1 GROUP BY outcome, kind",
    )?;
    let rows = stmt.query_map([&day_text], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, u64>(2)?,
        ))
    })?;
    for row in rows {
        let (outcome, kind, n) = row?;
        match outcome.as_str() {
            "welcome" | "broker_confirmed" if kind.is_some() => {
                out.visits += n;
                match kind.as_deref() {
                    Some("first") => out.first += n,
                    Some("revisit") => out.revisit += n,
                    _ => {}
                }
            }
            "unknown" => out.unknown += n,
            "denied" => out.denied += n,
            _ => {}
        }
    }
    out.by_consultant = c
        .prepare_cached(&format!(
            "SELECT v.consultant_id, k.name, count(*) FROM visits v
             LEFT JOIN consultants k ON k.id = v.consultant_id
             WHERE v.office_day = ?1 AND v.outcome IN {COUNTED} AND v.kind IS NOT NULL
             GROUP BY v.consultant_id ORDER BY count(*) DESC, v.consultant_id"
        ))?
        .query_map([&day_text], |r| {
            Ok(ConsultantCount {
                consultant_id: r.get(0)?,
                name: r.get(1)?,
                visits: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    out.by_source = c
        .prepare_cached(&format!(
            "SELECT source, count(*) FROM visits WHERE office_day = ?1 AND outcome IN {COUNTED} AND kind IS NOT NULL
             GROUP BY source ORDER BY count(*) DESC, source"
        ))?
        .query_map([&day_text], |r| {
            Ok(SourceCount {
                source: r.get(0)?,
                visits: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = c.prepare_cached(&format!(
        "SELECT device_time FROM visits WHERE office_day = ?1 AND outcome IN {COUNTED} AND kind IS NOT NULL"
    ))?;
    for time in stmt.query_map([&day_text], |r| r.get::<_, String>(0))? {
        // A time that does not parse was stored by no kiosk; it is left out of the chart.
        if let Ok(at) = time?.parse::<jiff::Timestamp>() {
            let hour = at.to_zoned(tz.clone()).hour();
            if let Some(slot) = usize::try_from(hour)
                .ok()
                .and_then(|h| out.by_hour.get_mut(h))
            {
                *slot += 1;
            }
        }
    }
    let mut per_day = std::collections::BTreeMap::<String, (u64, u64)>::new();
    let mut stmt = c.prepare_cached(&format!(
        "SELECT office_day, kind, count(*) FROM visits
         WHERE office_day BETWEEN ?1 AND ?2 AND outcome IN {COUNTED} AND kind IS NOT NULL
         GROUP BY office_day, kind"
    ))?;
    let rows = stmt.query_map(params![first_day.to_string(), day_text], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, u64>(2)?,
        ))
    })?;
    for row in rows {
        let (d, kind, n) = row?;
        let entry = per_day.entry(d).or_default();
        match kind.as_deref() {
            Some("first") => entry.0 += n,
            Some("revisit") => entry.1 += n,
            _ => {}
        }
    }
    let mut d = first_day;
    while d <= day {
        let key = d.to_string();
        let (first, revisit) = per_day.get(&key).copied().unwrap_or_default();
        out.days.push(DayCount {
            day: key,
            first,
            revisit,
        });
        match d.tomorrow() {
            Ok(next) => d = next,
            Err(_) => break,
        }
    }
    Ok(out)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CsvQuery {
    /// First office day, YYYY-MM-DD; today by default.
    #[param(format = Date)]
    from: Option<String>,
    /// Last office day, YYYY-MM-DD, at most 366 days after `from`; `from` by default.
    #[param(format = Date)]
    to: Option<String>,
}

/// The CSV's columns, in order.
const CSV_HEADER: [&str; 20] = [
    "office_day",
    "local_time",
    "seq",
    "visit_id",
    "outcome",
    "reason",
    "reason_detail",
    "kind",
    "customer_id",
    "customer",
    "tier",
    "consultant_id",
    "consultant",
    "stand_in_for",
    "public_pool",
    "broker_id",
    "source",
    "method",
    "card",
    "recorded_at",
];

/// Every stored tap of a range of office days as CSV (UTF-8 with a BOM, so Excel reads
/// the Chinese names), in the order they were recorded. Staff device token.
#[utoipa::path(get, path = "/api/v1/visits.csv", tag = "console", params(CsvQuery),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The visits as CSV, one row per stored tap, with a header row", content_type = "text/csv", body = String),
        (status = 400, description = "A date is malformed, or a parameter unknown", body = ErrorBody),
        (status = 401, description = "No token, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "A handheld's token: this needs a staff device", body = ErrorBody),
        (status = 422, description = "`to` is before `from`, or the range is over 366 days", body = ErrorBody),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
async fn visits_csv(
    State(s): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<CsvQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    if let Err(refused) = handheld::authenticate_staff(&s, &headers).await {
        return Ok(refused);
    }
    let Query(q) = query.map_err(|e| {
        bad_request(format!(
            "{e}; the parameters are from=YYYY-MM-DD and to=YYYY-MM-DD"
        ))
    })?;
    let today = s.db.today();
    let from = parse_day("from", q.from.as_deref(), &today)?;
    let to = match q.to.as_deref() {
        Some(t) => parse_day("to", Some(t), &today)?,
        None => from,
    };
    if to < from {
        return Err(bad_range(format!(
            "to {to} is before from {from}; give the earlier day as from"
        )));
    }
    let days = from
        .until(to)
        .map(|span| span.get_days())
        .unwrap_or(i32::MAX);
    if days >= CSV_MAX_DAYS {
        return Err(bad_range(format!(
            "{from} to {to} is more than {CSV_MAX_DAYS} days; export a year at a time"
        )));
    }
    let tz = s.db.time_zone().clone();
    let (from_text, to_text) = (from.to_string(), to.to_string());
    let body =
        s.db.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {VISIT_COLUMNS} {VISIT_FROM}
                 WHERE v.office_day BETWEEN ?1 AND ?2 ORDER BY v.seq"
            ))?;
            let visits = stmt.query_map(params![from_text, to_text], visit_from_row)?;
            let mut out = csv_header();
            for v in visits {
                csv_row(&mut out, &v?, &tz);
            }
            Ok(out)
        })
        .await?;
    let name = format!(
        "attachment; filename=\"visits-{}-{from}_{to}.csv\"",
        s.info.kiosk_id
    );
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&name)
                    .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response())
}

fn csv_header() -> String {
    // The BOM: Excel reads a CSV without one in the machine's code page (GBK on Chinese
    // Windows) and garbles every name.
    let mut out = String::from("\u{FEFF}");
    out.push_str(&CSV_HEADER.join(","));
    out.push_str("\r\n");
    out
}

/// One visit as a CSV line (RFC 4180: quoted when needed, CRLF).
fn csv_row(out: &mut String, v: &VisitView, tz: &jiff::tz::TimeZone) {
    let local = v
        .device_time
        .parse::<jiff::Timestamp>()
        .map(|t| {
            t.to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| v.device_time.clone());
    let customer = v.customer.as_ref();
    let cells: [Cow<'_, str>; 20] = [
        Cow::Borrowed(&v.office_day),
        Cow::Owned(local),
        Cow::Owned(v.seq.to_string()),
        Cow::Owned(v.id.to_string()),
        Cow::Borrowed(&v.outcome),
        opt(&v.reason),
        opt(&v.reason_detail),
        opt(&v.kind),
        customer.map_or(Cow::Borrowed(""), |c| Cow::Borrowed(&c.id)),
        customer.map_or(Cow::Borrowed(""), |c| {
            Cow::Owned(format!("{}{}", c.surname, c.title.zh()))
        }),
        customer.map_or(Cow::Borrowed(""), |c| Cow::Borrowed(c.tier.as_str())),
        v.consultant
            .as_ref()
            .map_or(Cow::Borrowed(""), |k| Cow::Borrowed(&k.id)),
        v.consultant
            .as_ref()
            .map_or(Cow::Borrowed(""), |k| Cow::Borrowed(&k.name)),
        opt(&v.stand_in_for),
        Cow::Borrowed(if v.public_pool { "1" } else { "0" }),
        opt(&v.broker_id),
        Cow::Borrowed(&v.source),
        Cow::Borrowed(&v.method),
        opt(&v.card),
        Cow::Borrowed(&v.recorded_at),
    ];
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_cell(out, cell);
    }
    out.push_str("\r\n");
}

fn opt(value: &Option<String>) -> Cow<'_, str> {
    Cow::Borrowed(value.as_deref().unwrap_or(""))
}

/// A cell, quoted when it holds a separator, a quote or a line break. A cell a
/// spreadsheet would take for a formula (`=`, `+`, `-`, `@` first: a card note typed by
/// someone, a QR payload) gets a leading `'`, so opening the export runs nothing.
fn csv_cell(out: &mut String, cell: &str) {
    let formula = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || cell.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for ch in cell.chars() {
        if ch == '"' {
            out.push('"');
        }
        out.push(ch);
    }
    if quote {
        out.push('"');
    }
}

/// The roster's consultants.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConsultantList {
    consultants: Vec<ConsultantJson>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConsultantJson {
    id: String,
    name: String,
}

/// The roster's consultants, for the console's rotation (who can check in) and names.
/// Staff device token.
#[utoipa::path(get, path = "/api/v1/consultants", tag = "console",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The consultants, by id", body = ConsultantList),
        (status = 401, description = "No token, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "A handheld's token: this needs a staff device", body = ErrorBody),
        (status = 503, description = "The database is not available", body = ErrorBody),
    ))]
async fn consultants(State(s): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Err(refused) = handheld::authenticate_staff(&s, &headers).await {
        return Ok(refused);
    }
    let consultants =
        s.db.with(|c| {
            c.prepare_cached("SELECT id, name FROM consultants ORDER BY id")?
                .query_map([], |r| {
                    Ok(ConsultantJson {
                        id: r.get(0)?,
                        name: r.get(1)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .await?;
    Ok(Json(ConsultantList { consultants }).into_response())
}

/// The kiosk as a machine: version, where its data is and how full the disk is.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SystemJson {
    #[schema(value_type = String)]
    version: &'static str,
    kiosk_id: String,
    office: String,
    #[schema(value_type = String)]
    data_dir: PathBuf,
    /// The database with its write-ahead log.
    database_bytes: u64,
    /// The data folder's file system; null where it cannot be read.
    disk_total_bytes: Option<u64>,
    disk_available_bytes: Option<u64>,
}

/// Version, data folder, database size and disk space, for the console's system panel.
/// Staff device token.
#[utoipa::path(get, path = "/api/v1/system", tag = "console",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The kiosk's machine", body = SystemJson),
        (status = 401, description = "No token, or an unknown or revoked one", body = ErrorBody),
        (status = 403, description = "A handheld's token: this needs a staff device", body = ErrorBody),
        (status = 503, description = "The data folder cannot be read", body = ErrorBody),
    ))]
async fn system(State(s): State<ApiState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Err(refused) = handheld::authenticate_staff(&s, &headers).await {
        return Ok(refused);
    }
    let dir = s.info.data_dir.clone();
    // stat and statvfs are blocking calls: not on an async worker.
    let (database_bytes, disk) = tokio::task::spawn_blocking(move || {
        let database_bytes: u64 = ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                std::fs::metadata(dir.join(format!("{}{suffix}", crate::store::DB_FILE))).ok()
            })
            .map(|m| m.len())
            .sum();
        // Block counts are u32 on some 32-bit boards, u64 elsewhere.
        #[allow(clippy::useless_conversion)]
        let disk = nix::sys::statvfs::statvfs(&dir).ok().map(|v| {
            let unit = u64::from(v.fragment_size());
            (
                u64::from(v.blocks()) * unit,
                u64::from(v.blocks_available()) * unit,
            )
        });
        (database_bytes, disk)
    })
    .await
    .map_err(|_| ApiError::from(StoreError::WriterGone))?;
    Ok(Json(SystemJson {
        version: env!("CARGO_PKG_VERSION"),
        kiosk_id: s.info.kiosk_id.clone(),
        office: s.info.office.clone(),
        data_dir: s.info.data_dir.clone(),
        database_bytes,
        disk_total_bytes: disk.map(|d| d.0),
        disk_available_bytes: disk.map(|d| d.1),
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        let cases = [
            ("plain", "plain"),
            ("", ""),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("=HYPERLINK(\"x\")", "\"'=HYPERLINK(\"\"x\"\")\""),
            ("+86 138", "\"'+86 138\""),
            ("-1", "\"'-1\""),
            ("@SUM(A1)", "\"'@SUM(A1)\""),
            ("张先生", "张先生"),
            ("qr:broker:B1:C1", "qr:broker:B1:C1"),
        ];
        for (cell, want) in cases {
            let mut out = String::new();
            csv_cell(&mut out, cell);
            assert_eq!(out, want, "{cell:?}");
        }
    }

    /// Hours are office hours (Shanghai), the 30 days end at the day asked, and only
    /// counted visits count.
    #[test]
    fn stats_count_a_day_by_office_hour_and_the_30_days_before() {
        use crate::store::{Identity, Store, TapInput};
        use kiosk_device::CardToken;
        let dir = tempfile::tempdir().expect("dir");
        let tz = jiff::tz::TimeZone::get("Asia/Shanghai").expect("tz");
        let mut store = Store::open(
            dir.path(),
            Identity {
                kiosk_id: "k1".into(),
                office_id: "o1".into(),
                time_zone: tz.clone(),
            },
        )
        .expect("store");
        let roster = crate::roster::parse_csv(
            "card,customer_id,surname,title,tier,card_status,consultant_id,consultant_name,broker_id,registered_at\n\
             nfc:04A1B2C3,C1,张,mr,gold,active,E01,李娜,,\n\
             nfc:04A1B2C4,C2,王,ms,silver,active,,,B1,2026-11-20T00:00:00Z\n"
                .as_bytes(),
        )
        .expect("roster");
        store.import_roster(&roster).expect("import");
        // C1's owner on duty receives them (reception::assign).
        store
            .change_rotation(&crate::rotation::RotationOp::CheckIn("E01".into()))
            .expect("store")
            .expect("check in");
        for (card, at) in [
            ("nfc:04A1B2C3", "2026-11-15T03:00:00Z"), // C1's first visit, 11:00 on 11-15 (E01 protects C1 till 11-30)
            ("nfc:04A1B2C3", "2026-11-22T16:30:00Z"), // 00:30 on 11-23: a revisit
            ("nfc:04A1B2C4", "2026-11-23T02:10:00Z"), // 10:10 on 11-23: a first visit
            ("nfc:04A1B2C4", "2026-11-23T03:00:00Z"), // the same day again: not counted
            // C2's broker confirms them after their visit: evidence, not a visit.
            ("qr:broker:B1:C2", "2026-11-23T03:30:00Z"),
            ("nfc:04FFFFFF", "2026-11-23T04:00:00Z"), // unknown
        ] {
            store
                .record_tap(&TapInput {
                    source: "front".into(),
                    token: CardToken::parse(card).expect("token"),
                    device_time: at.parse().expect("time"),
                })
                .expect("tap");
        }
        drop(store);
        let conn = crate::store::open(dir.path()).expect("open");
        let day: jiff::civil::Date = "2026-11-23".parse().expect("day");
        let first_day: jiff::civil::Date = "2026-10-25".parse().expect("day");
        let stats = read_stats(&conn, day, first_day, &tz).expect("stats");
        assert_eq!(
            (
                stats.visits,
                stats.first,
                stats.revisit,
                stats.unknown,
                stats.denied
            ),
            (2, 1, 1, 1, 0)
        );
        let hours: Vec<(usize, u64)> = stats
            .by_hour
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(h, n)| (h, *n))
            .collect();
        assert_eq!(hours, [(0, 1), (10, 1)]);
        let consultants: Vec<(Option<&str>, u64)> = stats
            .by_consultant
            .iter()
            .map(|c| (c.consultant_id.as_deref(), c.visits))
            .collect();
        assert_eq!(consultants, [(None, 1), (Some("E01"), 1)]);
        assert_eq!(stats.days.len(), 30);
        assert_eq!(stats.days[0].day, "2026-10-25");
        let busy: Vec<(&str, u64, u64)> = stats
            .days
            .iter()
            .filter(|d| d.first + d.revisit > 0)
            .map(|d| (d.day.as_str(), d.first, d.revisit))
            .collect();
        assert_eq!(busy, [("2026-11-15", 1, 0), ("2026-11-23", 1, 1)]);
    }

    #[test]
    fn the_pages_and_their_files_are_embedded() {
        for file in [
            "screen.html",
            "console.html",
            "screen.css",
            "screen.js",
            "console.css",
            "console.js",
            "chart.js",
            "common.js",
        ] {
            assert!(Assets::get(file).is_some(), "{file} is not embedded");
        }
    }
}
