//! A small server-sent-events client that waits for events with a deadline.

use std::time::Duration;

use tokio::time::Instant;

/// One SSE event: its name and JSON data.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub name: String,
    pub raw: String,
    pub data: serde_json::Value,
}

/// An open event stream.
#[derive(Debug)]
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

impl SseClient {
    pub async fn connect(url: &str) -> SseClient {
        SseClient::open(crate::http_client().get(url), url).await
    }

    /// `connect` with `Authorization: Bearer <token>` (a device's stream).
    pub async fn connect_bearer(url: &str, token: &str) -> SseClient {
        SseClient::open(crate::http_client().get(url).bearer_auth(token), url).await
    }

    async fn open(request: reqwest::RequestBuilder, url: &str) -> SseClient {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("cannot open the event stream {url}: {e}"));
        assert!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        SseClient {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, or `None` if the stream ended or `limit` passed first.
    pub async fn next(&mut self, limit: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(ev) = parse_block(&block) {
                    return Some(ev);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event named `name` that satisfies `pred`, skipping others; panics at the deadline.
    pub async fn wait_for(
        &mut self,
        name: &str,
        limit: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> SseEvent {
        self.wait(name, None, limit, pred).await
    }

    /// Like `wait_for`, but panics if an event named `forbidden` comes first: "this
    /// happened, and that did not".
    pub async fn wait_for_without(
        &mut self,
        name: &str,
        forbidden: &str,
        limit: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> SseEvent {
        self.wait(name, Some(forbidden), limit, pred).await
    }

    async fn wait(
        &mut self,
        name: &str,
        forbidden: Option<&str>,
        limit: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> SseEvent {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(ev) if Some(ev.name.as_str()) == forbidden => {
                    panic!("unexpected {:?} event before {name:?}: {}", ev.name, ev.raw)
                }
                Some(ev) if ev.name == name && pred(&ev.data) => return ev,
                Some(_) => continue,
                None => panic!("no matching {name:?} event within {limit:?}"),
            }
        }
    }
}

fn parse_block(block: &str) -> Option<SseEvent> {
    let mut name = String::from("message");
    let mut data = String::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    if data.is_empty() {
        // Keep-alive comments and retry-only blocks.
        return None;
    }
    let value = serde_json::from_str(&data).unwrap_or(serde_json::Value::Null);
    Some(SseEvent {
        name,
        raw: data,
        data: value,
    })
}
