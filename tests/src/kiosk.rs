//! Real `kiosk` processes for tests: a temp folder with a config, the CLI, and a daemon on port 0.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A kiosk's folder: config and data, removed at the end of the test.
#[derive(Debug)]
pub struct KioskDir {
    pub bin: PathBuf,
    pub dir: tempfile::TempDir,
}

impl KioskDir {
    /// A folder whose `kiosk.toml` has `[kiosk]` on port 0 plus `extra` (readers, reception).
    pub fn new(bin: &str, extra: &str) -> KioskDir {
        KioskDir::with_id(bin, "test-kiosk", "test-office", extra)
    }

    /// A folder for kiosk `id` of `office` (several kiosks of one office, or of many).
    pub fn with_id(bin: &str, id: &str, office: &str, extra: &str) -> KioskDir {
        let dir = tempfile::Builder::new()
            .prefix("kiosk-test-")
            .tempdir()
            .expect("temp dir");
        let config = format!(
            "[kiosk]\nid = \"{id}\"\noffice = \"{office}\"\ntime_zone = \"Asia/Shanghai\"\n\
             data_dir = \"data\"\nlisten = \"127.0.0.1:0\"\n\n{extra}\n"
        );
        std::fs::write(dir.path().join("kiosk.toml"), config).expect("write config");
        KioskDir {
            bin: PathBuf::from(bin),
            dir,
        }
    }

    /// A folder watching one PC/SC reader by its exact name.
    pub fn with_reader(bin: &str, reader: &str, cooldown: &str) -> KioskDir {
        KioskDir::new(
            bin,
            &format!(
                "[[reader]]\nkind = \"pcsc\"\nname = \"{reader}\"\n\n[reception]\nsame_card_cooldown = \"{cooldown}\"\n"
            ),
        )
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("kiosk.toml")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `kiosk ARGS…` to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env("KIOSK_LOG", "warn")
            .output()
            .expect("run kiosk")
    }

    /// Writes `csv` to a file and imports it; returns the command's output.
    pub fn import(&self, csv: &str) -> Output {
        let file = self.dir.path().join("roster.csv");
        std::fs::write(&file, csv).expect("write roster");
        let config = self.config();
        self.cli(&[
            "roster",
            "import",
            "--config",
            config.to_str().expect("utf-8 path"),
            file.to_str().expect("utf-8 path"),
        ])
    }

    /// Starts `kiosk run` and waits until it prints the address it listens on.
    pub fn start(&self) -> Running {
        let mut command = Command::new(&self.bin);
        command.arg("run").arg("--config").arg(self.config());
        let (child, base) = spawn_until_line(
            command,
            "kiosk listening on ",
            &self.dir.path().join("kiosk.log"),
            "kiosk",
        );
        Running {
            child,
            base,
            reaped: false,
        }
    }
}

/// The daemons' log filter when KIOSK_TEST_LOG is unset; `debug` unless
/// [`set_daemon_log_filter`] chose another.
static DAEMON_LOG_FILTER: OnceLock<String> = OnceLock::new();

/// Sets the log filter (KIOSK_LOG) of every kiosk and hub this process starts from
/// now on, their stderr still going to their log file; KIOSK_TEST_LOG still wins.
/// Benches use `info`: debug logging of every crate is not what a deployment pays.
/// Only the first call counts.
pub fn set_daemon_log_filter(filter: &str) {
    let _ = DAEMON_LOG_FILTER.set(filter.to_owned());
}

/// Spawns a daemon and waits for its stdout line starting with `prefix`; returns the
/// child and the rest of that line without a trailing `/` (its base URL).
///
/// stderr is appended to `log` (so a restarted daemon's earlier runs stay readable),
/// or inherited when KIOSK_TEST_LOG is set, which is also the daemon's KIOSK_LOG
/// (`debug` otherwise, or what [`set_daemon_log_filter`] set).
/// stdout is read to its end on a thread, so the daemon never blocks on a full pipe.
pub(crate) fn spawn_until_line(
    mut command: Command,
    prefix: &'static str,
    log: &Path,
    what: &str,
) -> (Child, String) {
    let stderr = if std::env::var_os("KIOSK_TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        Stdio::from(file)
    };
    let mut child = command
        .env(
            "KIOSK_LOG",
            std::env::var("KIOSK_TEST_LOG").unwrap_or_else(|_| {
                DAEMON_LOG_FILTER
                    .get()
                    .map_or_else(|| "debug".into(), Clone::clone)
            }),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(prefix) {
                let _ = tx.send(rest.trim_end_matches('/').to_owned());
            }
        }
    });
    // The sender goes away if the daemon exits first, which ends the wait at once.
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(base) => (child, base),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not report its address within 30 s; its log:\n{log}");
        }
    }
}

/// Waits for process `pid` (a child of ours) to exit, up to `limit`, and reaps it.
pub(crate) fn wait_pid(pid: u32, limit: Duration) -> Option<ExitStatus> {
    let (tx, rx) = mpsc::channel();
    // waitpid blocks; a helper thread waits so we can stop at the deadline.
    let waiter = std::thread::spawn(move || {
        let status = nix::sys::wait::waitpid(Pid::from_raw(pid as i32), None);
        let _ = tx.send(status);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(nix::sys::wait::WaitStatus::Exited(_, code))) => {
            let _ = waiter.join();
            Some(std::os::unix::process::ExitStatusExt::from_raw(code << 8))
        }
        Ok(Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _))) => {
            let _ = waiter.join();
            Some(std::os::unix::process::ExitStatusExt::from_raw(sig as i32))
        }
        _ => None,
    }
}

/// A running daemon; killed when dropped.
#[derive(Debug)]
pub struct Running {
    pub child: Child,
    /// e.g. `http://127.0.0.1:41234`
    pub base: String,
    /// Set once `wait_exit` reaped the process, so Drop does not signal a reused pid.
    reaped: bool,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let resp = crate::http_client()
            .get(self.url(path))
            .send()
            .await
            .expect("GET");
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.expect("JSON body")
    }

    /// kill -9, and reap.
    pub fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        assert!(
            self.wait_exit(Duration::from_secs(15)).is_some(),
            "the kiosk did not die on SIGKILL"
        );
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(&mut self) {
        self.signal(Signal::SIGTERM);
        let status = self
            .wait_exit(Duration::from_secs(15))
            .expect("the kiosk did not stop within 15 s of SIGTERM");
        assert!(status.success(), "the kiosk exited with {status}");
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("send signal");
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let status = wait_pid(self.child.id(), limit);
        self.reaped |= status.is_some();
        status
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
