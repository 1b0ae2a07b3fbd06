//! Real hub processes for tests: a temp folder with `hub.toml`, the `kiosk hub` CLI, a hub on port 0, and its admin API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::kiosk::{spawn_until_line, wait_pid};

/// A hub's folder: config, SQLite file (when it uses SQLite), tokens and log; removed
/// at the end of the test. The same folder can run a hub several times (a restart).
#[derive(Debug)]
pub struct HubDir {
    pub bin: PathBuf,
    pub dir: tempfile::TempDir,
    /// `sqlite:…` or `postgres://…`, as written in `hub.toml`.
    database: String,
    /// Extra `[hub]` lines.
    extra: String,
    /// Made on first use and kept: making another would revoke the first.
    admin: OnceLock<String>,
}

impl HubDir {
    /// A hub on SQLite, in `hub.sqlite` in its folder.
    pub fn sqlite(bin: &str) -> HubDir {
        HubDir::new(bin, "sqlite:hub.sqlite", "")
    }

    /// A hub on PostgreSQL at `url` (e.g. from [`crate::postgres::fresh_database`]).
    pub fn postgres(bin: &str, url: &str) -> HubDir {
        HubDir::new(bin, url, "")
    }

    /// A folder whose `hub.toml` has `[hub]` on port 0 with `database` plus `extra`
    /// lines (e.g. `max_concurrent_uploads = 2`).
    pub fn new(bin: &str, database: &str, extra: &str) -> HubDir {
        let dir = tempfile::Builder::new()
            .prefix("hub-test-")
            .tempdir()
            .expect("temp dir");
        let hub = HubDir {
            bin: PathBuf::from(bin),
            dir,
            database: database.to_owned(),
            extra: String::new(),
            admin: OnceLock::new(),
        };
        hub.extra(extra)
    }

    /// Adds `[hub]` lines, e.g. `HubDir::sqlite(BIN).extra("roster_retention = \"1h\"")`;
    /// the next `start` and CLI run read them.
    pub fn extra(mut self, lines: &str) -> HubDir {
        for line in lines.lines() {
            self.extra.push_str(line);
            self.extra.push('\n');
        }
        self.write_config();
        self
    }

    fn write_config(&self) {
        let config = format!(
            "[hub]\nlisten = \"127.0.0.1:0\"\ndatabase = {}\n{}\n",
            toml_str(&self.database),
            self.extra
        );
        std::fs::write(self.config(), config).expect("write hub.toml");
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("hub.toml")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `kiosk hub --config <dir>/hub.toml ARGS…` to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("hub")
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env("KIOSK_LOG", "warn")
            .output()
            .expect("run kiosk hub")
    }

    /// Runs the CLI and panics with its output unless it succeeded.
    fn cli_ok(&self, args: &[&str]) -> Output {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "kiosk hub {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The administrator's token for `/admin/v1`, made with `admin-token` on first use.
    pub fn admin_token(&self) -> String {
        self.admin
            .get_or_init(|| {
                let file = self.dir.path().join("admin.token");
                self.cli_ok(&["admin-token", "--token-file", utf8(&file)]);
                read_token(&file)
            })
            .clone()
    }

    /// Issues kiosk `id`'s token into `token_path` (e.g. the kiosk folder's
    /// `hub.token`, which [`sync_section`] can name).
    pub fn add_kiosk(&self, id: &str, office: &str, token_path: &Path) {
        self.cli_ok(&[
            "kiosks",
            "add",
            id,
            "--office",
            office,
            "--token-file",
            utf8(token_path),
        ]);
    }

    /// Writes `csv` to a file and imports it; returns the command's output.
    pub fn import(&self, csv: &str) -> Output {
        let file = self.dir.path().join("roster.csv");
        std::fs::write(&file, csv).expect("write roster");
        self.cli(&["import", utf8(&file)])
    }

    /// Drops every roster log entry now, so kiosks with any cursor must take a snapshot.
    pub fn prune_all(&self) {
        self.cli_ok(&["prune", "--older-than", "0s"]);
    }

    /// Starts `kiosk hub` and waits until it prints the address it listens on; each
    /// start binds a new port. The admin token is made first, so the helpers can use it.
    pub fn start(&self) -> RunningHub {
        let admin = self.admin_token();
        let mut command = Command::new(&self.bin);
        command.arg("hub").arg("--config").arg(self.config());
        let log = self.dir.path().join("hub.log");
        let (child, base) = spawn_until_line(command, "hub listening on ", &log, "hub");
        RunningHub {
            child,
            base,
            admin,
            http: crate::http_client(),
            log,
            reaped: false,
        }
    }
}

/// A TOML basic string: paths and URLs in tests hold nothing that needs more than this.
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn read_token(file: &Path) -> String {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("read the token in {}: {e}", file.display()))
        .trim()
        .to_owned()
}

/// A kiosk config's `[sync]` section for tests, to pass (with any other sections) to
/// [`crate::kiosk::KioskDir::new`]: fast pulls, an immediate first push and short
/// backoff, so tests don't wait on production timings. `token_file` may be relative
/// to the kiosk's folder (e.g. `"hub.token"`); `extra` lines are appended.
pub fn sync_section(hub_url: &str, token_file: impl AsRef<Path>, extra: &str) -> String {
    let token_file = token_file.as_ref().to_str().expect("utf-8 path");
    format!(
        "[sync]\nhub = {}\ntoken_file = {}\npull_interval = \"200ms\"\npush_interval = \"1s\"\n\
         initial_delay = \"0s\"\nbackoff_cap = \"2s\"\n{extra}\n",
        toml_str(hub_url),
        toml_str(token_file)
    )
}

/// A running hub; killed when dropped.
#[derive(Debug)]
pub struct RunningHub {
    pub child: Child,
    /// e.g. `http://127.0.0.1:41234`
    pub base: String,
    /// The administrator's bearer token (the folder's).
    pub admin: String,
    http: reqwest::Client,
    log: PathBuf,
    /// Set once the process was reaped, so Drop does not signal a reused pid.
    reaped: bool,
}

/// How long a stopped hub may take to finish its requests and exit.
const STOP_LIMIT: Duration = Duration::from_secs(15);

impl RunningHub {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Its address, for [`crate::proxy::FaultProxy::start`] and `set_upstream`.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .unwrap_or_else(|e| panic!("hub address {:?}: {e}", self.base))
    }

    /// SIGKILL, then reap: a crash, with whatever was in flight.
    pub fn kill9(&mut self) {
        if self.reaped {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }

    /// SIGTERM, then waits for the exit; panics with the log if it takes too long.
    pub fn stop(&mut self) -> ExitStatus {
        assert!(!self.reaped, "the hub was already stopped");
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("send SIGTERM");
        match wait_pid(self.child.id(), STOP_LIMIT) {
            Some(status) => {
                self.reaped = true;
                status
            }
            None => {
                // Still unreaped, so the pid is still ours to kill; the waiter thread
                // reaps it then.
                let _ = self.child.kill();
                self.reaped = true;
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("the hub did not exit within {STOP_LIMIT:?} of SIGTERM; its log:\n{log}");
            }
        }
    }

    /// An admin API request with the administrator's token, for the cases the helpers
    /// below don't cover (e.g. expecting an error status).
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.admin)
    }

    /// `/admin/v1/` plus `segments`, each percent-encoded: card tokens hold `/` and more.
    fn admin_url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = reqwest::Url::parse(&self.base).expect("hub base URL");
        url.path_segments_mut()
            .expect("an http URL")
            .clear()
            .extend(["admin", "v1"])
            .extend(segments);
        url
    }

    /// Sends an admin request and returns its JSON body (null for none); panics on
    /// anything but 2xx, with the hub's error.
    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> Value {
        let response = request
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = response.status();
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(status.is_success(), "{what}: {status}: {text}");
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"))
        }
    }

    async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Value {
        let url = self.admin_url(segments);
        let what = format!("GET {url}");
        self.send(self.http.get(url).query(query), &what).await
    }

    /// PUT /admin/v1/customers/{id}, the id taken from the body's `id`.
    pub async fn put_customer(&self, customer: Value) {
        let id = customer["id"]
            .as_str()
            .expect("the customer's JSON needs its \"id\"")
            .to_owned();
        let url = self.admin_url(&["customers", &id]);
        let what = format!("PUT customer {id}");
        self.send(self.http.put(url).json(&customer), &what).await;
    }

    /// PUT /admin/v1/cards/{token}.
    pub async fn put_card(&self, token: &str, card: Value) {
        let url = self.admin_url(&["cards", token]);
        let what = format!("PUT card {token}");
        self.send(self.http.put(url).json(&card), &what).await;
    }

    /// DELETE /admin/v1/cards/{token}.
    pub async fn delete_card(&self, token: &str) {
        let url = self.admin_url(&["cards", token]);
        let what = format!("DELETE card {token}");
        self.send(self.http.delete(url), &what).await;
    }

    /// One page of kiosk `kiosk`'s stored records after `after_seq`, in seq order.
    pub async fn records(&self, kiosk: &str, after_seq: u64, limit: u32) -> Vec<Value> {
        let query = [
            ("kiosk", kiosk.to_owned()),
            ("after_seq", after_seq.to_string()),
            ("limit", limit.to_string()),
        ];
        list(self.get(&["records"], &query).await, "records")
    }

    /// Every stored record of kiosk `kiosk`, paged until a page comes back empty.
    pub async fn all_records(&self, kiosk: &str) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        loop {
            let after = all.last().map_or(0, |r| {
                r["seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("a record without a seq: {r}"))
            });
            let page = self.records(kiosk, after, 1000).await;
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    }

    /// Polls until the hub holds at least `n` records of `kiosk`, then returns them
    /// all; panics after `limit`. The hub has no event stream, so asking again is
    /// the only way to see records arrive.
    pub async fn wait_records(&self, kiosk: &str, n: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let records = self.all_records(kiosk).await;
            if records.len() >= n {
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "the hub holds {} of kiosk {kiosk}'s records after {limit:?}, expected {n}",
                records.len()
            );
            // Paces the polling; the deadline above is what bounds the wait.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Lines from kiosk `kiosk` the hub rejected, with their reasons.
    pub async fn rejects(&self, kiosk: &str) -> Vec<Value> {
        let query = [("kiosk", kiosk.to_owned())];
        list(self.get(&["rejects"], &query).await, "rejects")
    }

    /// `{"records": N, "office_visits": N}` for an office and day (`YYYY-MM-DD`).
    pub async fn day_report(&self, office: &str, day: &str) -> Value {
        let query = [("office", office.to_owned()), ("day", day.to_owned())];
        self.get(&["reports", "day"], &query).await
    }

    /// `{"kiosks": [{"id", "office_id", "high_water"}, …]}`, as the hub answers.
    pub async fn kiosks(&self) -> Value {
        self.get(&["kiosks"], &[]).await
    }

    /// Kiosk `kiosk`'s high-water seq: the highest gap-free seq the hub stored.
    pub async fn high_water(&self, kiosk: &str) -> u64 {
        let kiosks = self.kiosks().await;
        let entry = list(kiosks.clone(), "kiosks")
            .into_iter()
            .find(|k| k["id"] == kiosk)
            .unwrap_or_else(|| panic!("the hub knows no kiosk {kiosk}: {kiosks}"));
        entry["high_water"]
            .as_u64()
            .unwrap_or_else(|| panic!("kiosk {kiosk} without a high_water: {entry}"))
    }
}

/// The array under `key` of an admin answer.
fn list(mut body: Value, key: &str) -> Vec<Value> {
    match body[key].take() {
        Value::Array(items) => items,
        _ => panic!("the hub's answer has no {key:?} list: {body}"),
    }
}

impl Drop for RunningHub {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::mpsc;

    // The product's own config parser judges what the harness writes.
    use kiosk_config::{Config, HubConfig};

    #[test]
    fn the_sync_section_is_valid_kiosk_config() {
        let dir = tempfile::tempdir().expect("temp dir");
        let section = sync_section("http://127.0.0.1:9/", "hub.token", "batch_size = 7");
        let config = format!(
            "[kiosk]\nid = \"k1\"\noffice = \"o1\"\ntime_zone = \"Asia/Shanghai\"\n\
             data_dir = \"data\"\nlisten = \"127.0.0.1:0\"\n\n{section}"
        );
        let parsed = Config::parse(&config, dir.path()).expect("a valid kiosk config");
        let sync = parsed.sync.expect("a [sync] section");
        assert_eq!(sync.hub, "http://127.0.0.1:9");
        assert_eq!(sync.token_file, dir.path().join("hub.token"));
        assert_eq!(sync.pull_interval, Duration::from_millis(200));
        assert_eq!(sync.push_interval, Duration::from_secs(1));
        assert_eq!(sync.initial_delay, Duration::ZERO);
        assert_eq!(sync.backoff_cap, Duration::from_secs(2));
        assert_eq!(sync.batch_size, 7);
    }

    #[test]
    fn hub_toml_is_valid_hub_config_with_the_extra_lines() {
        let hub = HubDir::new("kiosk", "sqlite:hub.sqlite", "max_concurrent_uploads = 2")
            .extra("roster_retention = \"1h\"");
        let text = std::fs::read_to_string(hub.config()).expect("read hub.toml");
        let parsed = HubConfig::parse(&text, hub.path()).expect("a valid hub config");
        assert_eq!(parsed.listen, "127.0.0.1:0".parse().expect("address"));
        assert_eq!(
            parsed.database,
            format!("sqlite:{}", hub.path().join("hub.sqlite").display())
        );
        assert_eq!(parsed.max_concurrent_uploads, 2);
        assert_eq!(parsed.roster_retention, Duration::from_secs(3600));

        let url = "postgres://kiosk:kiosk@127.0.0.1:5432/kiosk_e2e_1";
        let hub = HubDir::postgres("kiosk", url);
        let text = std::fs::read_to_string(hub.config()).expect("read hub.toml");
        let parsed = HubConfig::parse(&text, hub.path()).expect("a valid hub config");
        assert_eq!(parsed.database, url);
    }

    /// A stand-in for the `kiosk` binary: writes tokens like `kiosk hub` does, logs
    /// its arguments, and as a hub announces `addr` (a fake admin API) and waits.
    /// It lets these tests drive `HubDir` and `RunningHub` without a hub store.
    fn fake_kiosk_bin(dir: &Path, addr: SocketAddr) -> String {
        let script = dir.join("kiosk");
        let calls = dir.join("calls");
        let text = format!(
            "#!/bin/sh\n\
             echo \"$@\" >> '{calls}'\n\
             shift 3\n\
             case \"$1\" in\n\
             admin-token) echo admin-secret > \"$3\" ;;\n\
             kiosks) echo kiosk-secret > \"$7\" ;;\n\
             '') echo 'hub listening on http://{addr}/'; exec sleep 60 ;;\n\
             esac\n",
            calls = calls.display()
        );
        std::fs::write(&script, text).expect("write the fake kiosk");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("make the fake kiosk executable");
        script.to_str().expect("utf-8 path").to_owned()
    }

    /// One request the fake admin API received.
    #[derive(Debug)]
    struct Seen {
        method: String,
        target: String,
        authorization: String,
        body: String,
    }

    /// A fake admin API: answers like the hub's routes, with 2,500 records of kiosk k1.
    fn fake_admin_api() -> (SocketAddr, mpsc::Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let Some(seen) = read_request(&mut conn) else {
                    continue;
                };
                let (status, body) = answer(&seen);
                // Reported before the answer goes out, so a test that has the answer
                // finds the request in the channel.
                let _ = tx.send(seen);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (addr, rx)
    }

    fn read_request(conn: &mut TcpStream) -> Option<Seen> {
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
        let (mut authorization, mut length) = (String::new(), 0);
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).ok()?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':')?;
            match name.to_ascii_lowercase().as_str() {
                "authorization" => authorization = value.trim().to_owned(),
                "content-length" => length = value.trim().parse().ok()?,
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        Some(Seen {
            method,
            target,
            authorization,
            body: String::from_utf8(body).ok()?,
        })
    }

    fn answer(seen: &Seen) -> (&'static str, String) {
        let (path, query) = seen.target.split_once('?').unwrap_or((&seen.target, ""));
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or_default()
                .to_owned()
        };
        match (seen.method.as_str(), path) {
            ("GET", "/admin/v1/records") => {
                let after: u64 = param("after_seq").parse().expect("after_seq");
                let limit: u64 = param("limit").parse().expect("limit");
                let records: Vec<Value> = (after + 1..=(after + limit).min(2500))
                    .map(|seq| serde_json::json!({"kiosk_id": param("kiosk"), "seq": seq}))
                    .collect();
                (
                    "200 OK",
                    serde_json::json!({ "records": records }).to_string(),
                )
            }
            ("GET", "/admin/v1/kiosks") => (
                "200 OK",
                r#"{"kiosks":[{"id":"k1","office_id":"o1","high_water":7}]}"#.to_owned(),
            ),
            ("GET", "/admin/v1/rejects") => (
                "200 OK",
                r#"{"rejects":[{"seq":3,"reason":"bad"}]}"#.to_owned(),
            ),
            ("GET", "/admin/v1/reports/day") => {
                ("200 OK", r#"{"records":3,"office_visits":2}"#.to_owned())
            }
            ("PUT" | "DELETE", _) => ("204 No Content", String::new()),
            _ => (
                "404 Not Found",
                r#"{"error":{"code":"not_found","message":"no such route"}}"#.to_owned(),
            ),
        }
    }

    #[tokio::test]
    async fn the_admin_helpers_speak_the_hubs_api() {
        let (api, seen) = fake_admin_api();
        let bin_dir = tempfile::tempdir().expect("temp dir");
        let bin = fake_kiosk_bin(bin_dir.path(), api);
        let dir = HubDir::sqlite(&bin);
        let token = dir.path().join("k1.token");
        dir.add_kiosk("k1", "o1", &token);
        assert_eq!(read_token(&token), "kiosk-secret");
        let mut hub = dir.start();
        assert_eq!(hub.addr(), api);
        assert_eq!(hub.admin, "admin-secret");

        let records = hub.all_records("k1").await;
        let seqs: Vec<u64> = records.iter().filter_map(|r| r["seq"].as_u64()).collect();
        assert_eq!(seqs, (1..=2500).collect::<Vec<u64>>());
        let pages: Vec<Seen> = seen.try_iter().collect();
        let targets: Vec<&str> = pages.iter().map(|s| s.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "/admin/v1/records?kiosk=k1&after_seq=0&limit=1000",
                "/admin/v1/records?kiosk=k1&after_seq=1000&limit=1000",
                "/admin/v1/records?kiosk=k1&after_seq=2000&limit=1000",
                "/admin/v1/records?kiosk=k1&after_seq=2500&limit=1000",
            ]
        );
        assert!(
            pages
                .iter()
                .all(|s| s.authorization == "Bearer admin-secret")
        );

        hub.put_card("wg26:12/345", serde_json::json!({"customer_id": "C1"}))
            .await;
        hub.delete_card("qr:a b?c").await;
        hub.put_customer(
            serde_json::json!({"id": "C1", "surname": "张", "title": "mr", "tier": "gold"}),
        )
        .await;
        let writes: Vec<(String, String)> = seen
            .try_iter()
            .map(|s| (format!("{} {}", s.method, s.target), s.body))
            .collect();
        assert_eq!(writes[0].0, "PUT /admin/v1/cards/wg26:12%2F345");
        assert_eq!(writes[0].1, r#"{"customer_id":"C1"}"#);
        assert_eq!(writes[1].0, "DELETE /admin/v1/cards/qr:a%20b%3Fc");
        assert_eq!(writes[2].0, "PUT /admin/v1/customers/C1");

        assert_eq!(hub.high_water("k1").await, 7);
        assert_eq!(hub.rejects("k1").await[0]["reason"], "bad");
        let report = hub.day_report("o1", "2026-10-02").await;
        assert_eq!(report["office_visits"], 2);
        let last = seen.try_iter().last().expect("a request");
        assert_eq!(
            last.target,
            "/admin/v1/reports/day?office=o1&day=2026-10-02"
        );
        let missing = hub
            .admin(reqwest::Method::GET, "/admin/v1/nothing")
            .send()
            .await
            .expect("GET");
        assert_eq!(missing.status(), 404);

        let status = hub.stop();
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));
        // A restart is a new process on the same folder, with the same admin token.
        let mut again = dir.start();
        assert_eq!(again.admin, "admin-secret");
        again.kill9();
        let calls = std::fs::read_to_string(bin_dir.path().join("calls")).expect("calls");
        let config = dir.config();
        let config = config.display();
        assert_eq!(
            calls.lines().collect::<Vec<_>>(),
            [
                format!(
                    "hub --config {config} kiosks add k1 --office o1 --token-file {}",
                    token.display()
                ),
                format!(
                    "hub --config {config} admin-token --token-file {}",
                    dir.path().join("admin.token").display()
                ),
                format!("hub --config {config}"),
                format!("hub --config {config}"),
            ]
        );
    }
}
