//! Webhooks (`[[notify.webhook]]`): every alert whose reason a webhook's `events` lists
//! (`welcome` by default) is also posted to it, in a generic JSON body or as a WeCom or
//! DingTalk group robot's markdown message, signed with HMAC-SHA256 when a secret is set.
//!
//! Delivery is at least once, from the `webhook_queue` table: the alerts module inserts
//! [`Webhooks::rows`] in the transaction that stores the alert (on the writer thread, after
//! the visit committed and the greeting was published, so neither waits on it), and
//! [`Webhooks::run`] posts due rows. A crash between the visit's commit and that insert
//! loses the notification, never the visit. A failed row is retried after `Backoff { 1 s, 10 min }` and blocks the later
//! rows of the same webhook and consultant, so each consultant's notifications arrive
//! in order.
//!
//! Signature: `X-Kiosk-Timestamp: <Unix seconds>` and
//! `X-Kiosk-Signature: sha256=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use hmac::{Hmac, Mac};
use kiosk_config::{WebhookConfig, WebhookEvent, WebhookFormat, WebhookSecret};
use kiosk_sync::backoff::Backoff;
use rusqlite::{Connection, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::alerts::{Alert, Reason, StaffRef};
use crate::store::{ReadDb, Writer};

/// Retry delays of a failed delivery.
pub const BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(600),
};
/// A webhook whose oldest pending row failed this often is a problem on the status page.
pub const PROBLEM_AFTER_ATTEMPTS: i64 = 5;
const TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One configured webhook, its secret read.
pub struct Hook {
    /// A stable hash of the URL: the queue's `hook` column, so reordering the config
    /// keeps queued rows with their webhook.
    pub key: i64,
    url: String,
    format: WebhookFormat,
    secret: Option<Vec<u8>>,
    events: Vec<WebhookEvent>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("key", &self.key)
            .field("url", &self.display_url())
            .field("format", &self.format)
            .field("signed", &self.secret.is_some())
            .finish()
    }
}

impl Hook {
    /// Reads a `secret_file`; a missing or empty file stops the kiosk with the path to fix.
    pub fn from_config(cfg: &WebhookConfig) -> anyhow::Result<Hook> {
        let secret = match &cfg.secret {
            None => None,
            Some(WebhookSecret::Inline(s)) => Some(s.as_bytes().to_vec()),
            Some(WebhookSecret::File(path)) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "cannot read the secret_file {} of webhook {}",
                        path.display(),
                        cfg.display_url()
                    )
                })?;
                let text = text.trim_end();
                anyhow::ensure!(
                    !text.is_empty(),
                    "the secret_file {} of webhook {} is empty",
                    path.display(),
                    cfg.display_url()
                );
                Some(text.as_bytes().to_vec())
            }
        };
        Ok(Hook {
            key: hook_key(&cfg.url),
            url: cfg.url.clone(),
            format: cfg.format,
            secret,
            events: cfg.events.clone(),
        })
    }

    /// The URL without its query (robots' keys live there).
    fn display_url(&self) -> &str {
        self.url.split(['?', '#']).next().unwrap_or(&self.url)
    }
}

/// The first 8 bytes of SHA-256 of `url`, as a signed integer for SQLite.
pub fn hook_key(url: &str) -> i64 {
    let digest = Sha256::digest(url.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `"{timestamp}.{body}"`).
pub fn signature(secret: &[u8], timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn tier_zh(tier: &str) -> &str {
    match tier {
        "gold" => "金卡会员",
        "silver" => "银卡会员",
        "normal" => "普通客户",
        other => other,
    }
}

fn kind_zh(kind: &str) -> &str {
    match kind {
        "first" => "首次到访",
        "revisit" => "再次到访",
        other => other,
    }
}

/// A consultant as the robots' messages name them: name（id）, or the id alone.
fn staff_zh(staff: &StaffRef) -> String {
    match &staff.name {
        Some(name) => format!("{name}（{}）", staff.id),
        None => staff.id.clone(),
    }
}

/// The body posted for `alert` in `format`. Masked like the alert: never a phone or full name.
pub fn body(
    format: WebhookFormat,
    alert: &Alert,
    consultant_name: Option<&str>,
    tz: &jiff::tz::TimeZone,
) -> String {
    let consultant = match consultant_name {
        Some(name) => format!("{name}（{}）", alert.consultant_id),
        None => alert.consultant_id.clone(),
    };
    let time = alert.at.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S");
    let receiver = alert
        .receiver
        .as_ref()
        .map_or_else(|| "无人接待".to_owned(), staff_zh);
    let customer = &alert.customer;
    let title = match alert.reason {
        Reason::Welcome => format!("客户到访：{customer}"),
        Reason::Owner => format!("您的客户到访：{customer}（{receiver} 代接待）"),
        Reason::Manager => format!("{}到访：{customer}", tier_zh(&alert.tier)),
        Reason::Unassigned => format!("客户到访无人接待：{customer}"),
        Reason::Escalation => format!("到访提醒无人确认：{customer}"),
    };
    let mut text = format!(
        "### {title}\n> 客户：**{customer}**（{}）\n> 到访：{}\n> 置业顾问：{consultant}",
        tier_zh(&alert.tier),
        kind_zh(&alert.kind),
    );
    if alert.reason != Reason::Welcome {
        text.push_str(&format!("\n> 接待：{receiver}"));
    }
    if let Some(from) = &alert.escalated_from {
        text.push_str(&format!("\n> 未确认：{}", staff_zh(from)));
    }
    text.push_str(&format!("\n> 时间：{time}\n> 来源：{}", alert.source));
    let value = match format {
        WebhookFormat::Generic => {
            serde_json::json!({"event": alert.reason.as_str(), "alert": alert})
        }
        WebhookFormat::Wecom => {
            serde_json::json!({"msgtype": "markdown", "markdown": {"content": text}})
        }
        WebhookFormat::Dingtalk => {
            serde_json::json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}})
        }
    };
    value.to_string()
}

/// The oldest pending row of one webhook and consultant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub id: i64,
    pub hook: i64,
    pub consultant_id: String,
    pub body: String,
    pub attempts: i64,
    /// Unix milliseconds.
    pub next_at: i64,
}

/// Which heads are due at `now` (ms), oldest first, and when the next one is.
pub fn plan(heads: &[Head], now: i64) -> (Vec<&Head>, Option<i64>) {
    let due = heads.iter().filter(|h| h.next_at <= now).collect();
    let next = heads
        .iter()
        .filter(|h| h.next_at > now)
        .map(|h| h.next_at)
        .min();
    (due, next)
}

/// When a row that has now failed `attempts` times is tried again.
pub fn retry_at(attempts: i64, now: i64) -> i64 {
    let failures = u32::try_from(attempts.max(1)).unwrap_or(u32::MAX);
    let delay = i64::try_from(BACKOFF.delay(failures).as_millis()).unwrap_or(i64::MAX);
    now.saturating_add(delay)
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Inserts one row per `(hook, consultant, body)`, in the caller's transaction (the one
/// that stores the alert).
pub fn insert(
    conn: &Connection,
    rows: &[(i64, String, String)],
    now: jiff::Timestamp,
) -> rusqlite::Result<()> {
    for (hook, consultant, body) in rows {
        conn.execute(
            "INSERT INTO webhook_queue (hook, consultant_id, body, created_at, attempts, next_at)
             VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            params![
                hook,
                consultant,
                body,
                now.to_string(),
                now.as_millisecond()
            ],
        )?;
    }
    Ok(())
}

/// The oldest pending row of every (webhook, consultant), oldest first.
pub fn heads(conn: &Connection) -> rusqlite::Result<Vec<Head>> {
    let mut stmt = conn.prepare_cached(
        "SELECT q.id, q.hook, q.consultant_id, q.body, q.attempts, q.next_at
         FROM webhook_queue q
         JOIN (SELECT MIN(id) AS id FROM webhook_queue WHERE delivered_at IS NULL
               GROUP BY hook, consultant_id) h ON h.id = q.id
         ORDER BY q.id",
    )?;
    stmt.query_map([], |r| {
        Ok(Head {
            id: r.get(0)?,
            hook: r.get(1)?,
            consultant_id: r.get(2)?,
            body: r.get(3)?,
            attempts: r.get(4)?,
            next_at: r.get(5)?,
        })
    })?
    .collect()
}

/// Records a delivery's outcome: delivered, or failed with the time of the next try.
pub fn record(
    conn: &Connection,
    id: i64,
    outcome: &Result<(), String>,
    now: jiff::Timestamp,
) -> rusqlite::Result<()> {
    match outcome {
        Ok(()) => conn.execute(
            "UPDATE webhook_queue SET delivered_at = ?2, attempts = attempts + 1 WHERE id = ?1",
            params![id, now.to_string()],
        )?,
        Err(e) => {
            let attempts: i64 = conn.query_row(
                "SELECT attempts + 1 FROM webhook_queue WHERE id = ?1",
                [id],
                |r| r.get(0),
            )?;
            conn.execute(
                "UPDATE webhook_queue SET attempts = ?2, next_at = ?3, last_error = ?4 WHERE id = ?1",
                params![id, attempts, retry_at(attempts, now.as_millisecond()), e],
            )?
        }
    };
    Ok(())
}

/// The status page's `notify`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct NotifyStatus {
    pub webhooks: usize,
    /// Rows not yet delivered.
    pub queued: u64,
    /// Of those, rows that failed at least once.
    pub failing: u64,
    pub last_error: Option<String>,
    /// Webhooks whose oldest pending row failed [`PROBLEM_AFTER_ATTEMPTS`] times or more.
    #[serde(skip)]
    pub problems: Vec<String>,
}

/// The configured webhooks, the delivery task's wake-up, and its last error.
#[derive(Debug)]
pub struct Webhooks {
    hooks: Vec<Hook>,
    time_zone: jiff::tz::TimeZone,
    wake: Arc<Notify>,
    last_error: Mutex<Option<String>>,
}

impl Webhooks {
    pub fn new(hooks: Vec<Hook>, time_zone: jiff::tz::TimeZone) -> Webhooks {
        Webhooks {
            hooks,
            time_zone,
            wake: Arc::new(Notify::new()),
            last_error: Mutex::new(None),
        }
    }

    /// The queue rows `(hook, consultant, body)` of `alert` for every webhook whose
    /// `events` lists its reason; `consultant_name` is the alerted consultant's. The
    /// caller inserts them ([`insert`]) with the alert, then calls [`Webhooks::wake`].
    pub fn rows(&self, alert: &Alert, consultant_name: Option<&str>) -> Vec<(i64, String, String)> {
        let event = alert.reason.webhook_event();
        self.hooks
            .iter()
            .filter(|h| h.events.contains(&event))
            .map(|h| {
                (
                    h.key,
                    alert.consultant_id.clone(),
                    body(h.format, alert, consultant_name, &self.time_zone),
                )
            })
            .collect()
    }

    /// Tells the delivery task that rows were queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Queue counts and problems for the status page.
    pub async fn status(&self, db: &ReadDb) -> NotifyStatus {
        let keys: Vec<i64> = self.hooks.iter().map(|h| h.key).collect();
        let counted = db
            .with(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT hook, COUNT(*), SUM(attempts > 0) FROM webhook_queue
                     WHERE delivered_at IS NULL GROUP BY hook",
                )?;
                let counts = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok((counts, heads(c)?))
            })
            .await;
        let mut status = NotifyStatus {
            webhooks: self.hooks.len(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            ..NotifyStatus::default()
        };
        let Ok((counts, heads)) = counted else {
            return status;
        };
        for (hook, queued, failing) in counts {
            if keys.contains(&hook) {
                status.queued += u64::try_from(queued).unwrap_or(0);
                status.failing += u64::try_from(failing).unwrap_or(0);
            }
        }
        for hook in &self.hooks {
            let stuck = heads
                .iter()
                .filter(|h| h.hook == hook.key && h.attempts >= PROBLEM_AFTER_ATTEMPTS)
                .count();
            if stuck > 0 {
                status.problems.push(format!(
                    "webhook {}: notifications for {stuck} consultant(s) keep failing ({}); they stay queued and are retried with backoff",
                    hook.display_url(),
                    status.last_error.as_deref().unwrap_or("no answer")
                ));
            }
        }
        status
    }

    /// Posts due rows until `stop`; woken by [`Webhooks::enqueue`] and by the earliest retry.
    pub async fn run(
        self: Arc<Self>,
        writer: Writer,
        db: ReadDb,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .context("cannot build the webhooks' HTTP client")?;
        loop {
            let (due, next) = match db.with(heads).await {
                Ok(all) => {
                    let now = now_ms();
                    let all: Vec<Head> = all
                        .into_iter()
                        .filter(|h| self.hooks.iter().any(|k| k.key == h.hook))
                        .collect();
                    let (due, next) = plan(&all, now);
                    let due: Vec<Head> = due.into_iter().cloned().collect();
                    (
                        due,
                        next.map(|t| Duration::from_millis((t - now).max(0) as u64)),
                    )
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the webhook queue; trying again");
                    (Vec::new(), Some(Duration::from_secs(1)))
                }
            };
            if due.is_empty() {
                let sleep = next.unwrap_or(Duration::from_secs(3600));
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(sleep) => {}
                }
                continue;
            }
            for head in due {
                let Some(hook) = self.hooks.iter().find(|k| k.key == head.hook) else {
                    continue;
                };
                let outcome = tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    o = deliver(&client, hook, &head) => o,
                };
                match &outcome {
                    Ok(()) => tracing::debug!(
                        webhook = hook.display_url(),
                        row = head.id,
                        "webhook delivered"
                    ),
                    Err(e) => {
                        tracing::warn!(webhook = hook.display_url(), row = head.id, attempts = head.attempts + 1, error = %e, "webhook delivery failed; retrying with backoff");
                        *self
                            .last_error
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = Some(e.clone());
                    }
                }
                let id = head.id;
                writer
                    .call(move |store| {
                        record(store.conn_mut(), id, &outcome, jiff::Timestamp::now())
                            .map_err(Into::into)
                    })
                    .await
                    .context("cannot record a webhook delivery")?;
            }
        }
    }
}

/// One POST; `Err` says why it did not count as delivered.
async fn deliver(client: &reqwest::Client, hook: &Hook, head: &Head) -> Result<(), String> {
    let mut req = client
        .post(&hook.url)
        .header("content-type", "application/json")
        .header("x-kiosk-delivery", head.id.to_string())
        .body(head.body.clone());
    if let Some(secret) = &hook.secret {
        let ts = jiff::Timestamp::now().as_second();
        req = req
            .header("x-kiosk-timestamp", ts.to_string())
            .header("x-kiosk-signature", signature(secret, ts, &head.body));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("{}: {}", hook.display_url(), e.without_url()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("{} answered {status}", hook.display_url()));
    }
    // Robots answer 200 with an error code in the body (a wrong key, a rate limit).
    if hook.format != WebhookFormat::Generic {
        let answer: serde_json::Value = resp.json().await.unwrap_or_default();
        if let Some(code) = answer["errcode"].as_i64().filter(|c| *c != 0) {
            return Err(format!(
                "{} refused the message: errcode {code}, {}",
                hook.display_url(),
                answer["errmsg"].as_str().unwrap_or("")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn alert(consultant: &str) -> Alert {
        Alert {
            id: Uuid::now_v7(),
            visit_id: Uuid::now_v7(),
            consultant_id: consultant.into(),
            customer: "张先生".into(),
            tier: "gold".into(),
            kind: "revisit".into(),
            source: "handheld:pda".into(),
            at: jiff::Timestamp::from_second(1_800_000_000).expect("time"),
            reason: Reason::Welcome,
            receiver: Some(StaffRef {
                id: consultant.into(),
                name: Some("李娜".into()),
            }),
            escalated_from: None,
        }
    }

    fn tz() -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get("Asia/Shanghai").expect("tz")
    }

    #[test]
    fn webhooks_bodies_in_each_format() {
        let a = alert("E01");
        let generic: serde_json::Value =
            serde_json::from_str(&body(WebhookFormat::Generic, &a, Some("李娜"), &tz()))
                .expect("json");
        assert_eq!(generic["event"], "welcome");
        assert_eq!(generic["alert"], serde_json::to_value(&a).expect("alert"));

        let wecom: serde_json::Value =
            serde_json::from_str(&body(WebhookFormat::Wecom, &a, Some("李娜"), &tz()))
                .expect("json");
        assert_eq!(wecom["msgtype"], "markdown");
        let content = wecom["markdown"]["content"].as_str().expect("content");
        for part in [
            "张先生",
            "金卡会员",
            "再次到访",
            "李娜（E01）",
            "2027-01-15 16:00:00",
        ] {
            assert!(content.contains(part), "{part} not in {content}");
        }

        let ding: serde_json::Value =
            serde_json::from_str(&body(WebhookFormat::Dingtalk, &a, None, &tz())).expect("json");
        assert_eq!(ding["msgtype"], "markdown");
        assert_eq!(ding["markdown"]["title"], "客户到访：张先生");
        let text = ding["markdown"]["text"].as_str().expect("text");
        assert!(
            text.contains("置业顾问：E01") && text.contains("金卡会员"),
            "{text}"
        );
    }

    #[test]
    fn webhooks_bodies_say_why_and_name_who_receives() {
        let staff = |id: &str, name: &str| {
            Some(StaffRef {
                id: id.into(),
                name: Some(name.into()),
            })
        };
        let robot = |a: &Alert| -> String {
            let v: serde_json::Value =
                serde_json::from_str(&body(WebhookFormat::Wecom, a, Some("周敏"), &tz()))
                    .expect("json");
            v["markdown"]["content"]
                .as_str()
                .expect("content")
                .to_owned()
        };
        // (reason, receiver, escalated_from, parts of the robot's text)
        let cases = [
            (
                Reason::Welcome,
                staff("E01", "李娜"),
                None,
                vec!["### 客户到访：张先生"],
            ),
            (
                Reason::Owner,
                staff("E02", "陈晨"),
                None,
                vec![
                    "### 您的客户到访：张先生（陈晨（E02） 代接待）",
                    "> 接待：陈晨（E02）",
                ],
            ),
            (
                Reason::Manager,
                staff("E01", "李娜"),
                None,
                vec!["### 金卡会员到访：张先生", "> 接待：李娜（E01）"],
            ),
            (
                Reason::Unassigned,
                None,
                None,
                vec!["### 客户到访无人接待：张先生", "> 接待：无人接待"],
            ),
            (
                Reason::Escalation,
                staff("E02", "陈晨"),
                staff("E01", "李娜"),
                vec![
                    "### 到访提醒无人确认：张先生",
                    "> 接待：陈晨（E02）",
                    "> 未确认：李娜（E01）",
                ],
            ),
        ];
        for (reason, receiver, escalated_from, parts) in cases {
            let a = Alert {
                reason,
                receiver,
                escalated_from,
                ..alert("E03")
            };
            let text = robot(&a);
            for part in parts {
                assert!(text.contains(part), "{reason:?}: {part} not in {text}");
            }
            assert!(text.contains("> 置业顾问：周敏（E03）"), "{text}");
            assert_eq!(
                text.contains("接待："),
                reason != Reason::Welcome,
                "{reason:?}: {text}"
            );
            let generic: serde_json::Value =
                serde_json::from_str(&body(WebhookFormat::Generic, &a, None, &tz())).expect("json");
            assert_eq!(generic["event"], reason.as_str());
        }
    }

    #[test]
    fn webhooks_rows_only_for_the_events_a_webhook_wants() {
        let hook = |url: &str, events: Vec<WebhookEvent>| {
            Hook::from_config(&WebhookConfig {
                url: url.into(),
                format: WebhookFormat::Generic,
                secret: None,
                events,
            })
            .expect("hook")
        };
        let hooks = Webhooks::new(
            vec![
                hook("http://a/welcome", vec![WebhookEvent::Welcome]),
                hook(
                    "http://b/manager",
                    vec![WebhookEvent::Escalation, WebhookEvent::Manager],
                ),
            ],
            tz(),
        );
        let with = |reason| Alert {
            reason,
            ..alert("E01")
        };
        let to = |reason| -> Vec<i64> {
            hooks
                .rows(&with(reason), None)
                .into_iter()
                .map(|(hook, consultant, _)| {
                    assert_eq!(consultant, "E01");
                    hook
                })
                .collect()
        };
        let (a, b) = (hook_key("http://a/welcome"), hook_key("http://b/manager"));
        assert_eq!(to(Reason::Welcome), [a]);
        assert_eq!(to(Reason::Escalation), [b]);
        assert_eq!(to(Reason::Manager), [b]);
        assert!(to(Reason::Owner).is_empty());
        assert!(to(Reason::Unassigned).is_empty());
    }

    #[test]
    fn webhooks_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", 0, "what do ya want for nothing?").len(),
            "sha256=".len() + 64
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The signed string is "{timestamp}.{body}".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s").expect("key");
        mac.update(b"1700000000.{\"a\":1}");
        assert_eq!(
            signature(b"s", 1_700_000_000, "{\"a\":1}"),
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        assert_ne!(signature(b"s", 1, "x"), signature(b"s", 2, "x"));
        assert_ne!(signature(b"s", 1, "x"), signature(b"t", 1, "x"));
    }

    #[test]
    fn webhooks_retries_back_off_within_the_ceiling() {
        let now = 1_000_000;
        for attempts in 1..=20 {
            let at = retry_at(attempts, now);
            let ceiling = BACKOFF.ceiling(attempts as u32).as_millis() as i64;
            assert!(at >= now && at <= now + ceiling, "attempt {attempts}: {at}");
        }
        assert_eq!(BACKOFF.ceiling(1), Duration::from_secs(1));
        assert_eq!(BACKOFF.ceiling(30), Duration::from_secs(600));
    }

    #[test]
    fn webhooks_plan_takes_due_heads_and_wakes_at_the_earliest_retry() {
        let head = |id, next_at| Head {
            id,
            hook: 1,
            consultant_id: format!("E{id}"),
            body: String::new(),
            attempts: 0,
            next_at,
        };
        let heads = [head(1, 100), head(2, 500), head(3, 50), head(4, 300)];
        let (due, next) = plan(&heads, 100);
        assert_eq!(due.iter().map(|h| h.id).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(next, Some(300));
        assert_eq!(plan(&[], 0), (Vec::new(), None));
    }

    #[test]
    fn webhooks_queue_keeps_order_per_consultant_behind_a_failing_row() {
        let dir = tempfile::tempdir().expect("temp dir");
        let identity = crate::store::Identity {
            kiosk_id: "k1".into(),
            office_id: "o1".into(),
            time_zone: tz(),
        };
        let mut store = crate::store::Store::open(dir.path(), identity).expect("store");
        let conn = store.conn_mut();
        let t0 = jiff::Timestamp::from_second(1_800_000_000).expect("time");
        let rows = [
            (7, "E01".to_owned(), "a1".to_owned()),
            (7, "E02".to_owned(), "b1".to_owned()),
            (7, "E01".to_owned(), "a2".to_owned()),
            (8, "E01".to_owned(), "c1".to_owned()),
        ];
        insert(conn, &rows, t0).expect("insert");
        let bodies = |c: &Connection| -> Vec<String> {
            heads(c)
                .expect("heads")
                .into_iter()
                .map(|h| h.body)
                .collect()
        };
        assert_eq!(bodies(conn), ["a1", "b1", "c1"]);
        // a1 fails: a2 stays behind it, and a1 waits for its retry.
        let a1 = heads(conn).expect("heads")[0].clone();
        record(conn, a1.id, &Err("500".into()), t0).expect("record");
        let after = heads(conn).expect("heads");
        assert_eq!(after[0].body, "a1");
        assert_eq!(after[0].attempts, 1);
        assert!(after[0].next_at >= t0.as_millisecond());
        let (due, _) = plan(&after, t0.as_millisecond() - 1);
        assert!(due.is_empty());
        // Delivered: a2 is next for E01 at webhook 7.
        record(conn, a1.id, &Ok(()), t0).expect("record");
        assert_eq!(bodies(conn), ["b1", "a2", "c1"]);
    }

    #[test]
    fn webhooks_hook_key_is_stable_per_url() {
        assert_eq!(hook_key("http://a/x"), hook_key("http://a/x"));
        assert_ne!(hook_key("http://a/x"), hook_key("http://a/y"));
    }
}
