//! Serial readers: one thread per port reads frames, debounces them, and reopens the port after an unplug.
//!
//! The thread blocks in `read` with a short timeout (the next presence deadline, or
//! `IDLE_TICK`), so it notices a stop within that time and costs nothing while idle.
//! A port that fails (unplugged: `read` returns 0 or an error) is closed and reopened
//! with backoff; the debounce memory outlives the port, so a tag held through a replug
//! is not a second tap, however long the port was gone.

pub mod decode;

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiosk_config::{Parity, SerialReader};
use serialport::{SerialPort, TTYPort};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::thread::{self, Backoff, SpawnError, Stop};
use crate::{CardEvent, Debounce, DeviceEvent, ReaderKind, ReaderUpdate};
use decode::{Decoded, Decoder};

/// What a serial reader thread needs.
#[derive(Debug, Clone)]
pub struct SerialOptions {
    pub reader: SerialReader,
    pub cooldown: Duration,
}

/// Longest blocking read while no tag is present: the stop latency, and the idle wake-up rate.
const IDLE_TICK: Duration = Duration::from_millis(250);
/// Reopen backoff. Opening a missing device is cheap, so the cap is low: a replugged
/// reader works again within about this long.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Starts the thread for one serial reader.
pub fn spawn(
    options: SerialOptions,
    tx: mpsc::Sender<DeviceEvent>,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, SpawnError> {
    let name = format!("serial {}", options.reader.name);
    thread::spawn(&name, cancel, move |stop| {
        let debounce = Debounce::new(options.cooldown);
        let decoder = Decoder::new(options.reader.protocol);
        Backend {
            options,
            tx,
            stop,
            debounce,
            decoder,
            shown_present: false,
        }
        .run();
    })
}

/// The receiver is gone: the daemon is shutting down.
struct Closed;

/// How a port's reading ended.
enum Ended {
    Stopped,
    Lost(String),
}

struct Backend {
    options: SerialOptions,
    tx: mpsc::Sender<DeviceEvent>,
    stop: Arc<Stop>,
    debounce: Debounce,
    decoder: Decoder,
    /// Whether the status shows a tag on the reader.
    shown_present: bool,
}

impl Backend {
    fn send(&self, event: DeviceEvent) -> Result<(), Closed> {
        self.tx.blocking_send(event).map_err(|_| Closed)
    }

    fn update(&self, connected: bool, problem: Option<String>, attempts: u32) -> DeviceEvent {
        DeviceEvent::Reader(ReaderUpdate {
            reader: self.options.reader.name.clone(),
            kind: ReaderKind::Serial,
            connected,
            problem,
            reopen_attempts: attempts,
        })
    }

    fn run(mut self) {
        let _ = self.run_until_closed();
    }

    fn run_until_closed(&mut self) -> Result<(), Closed> {
        let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
        let mut attempts: u32 = 0;
        let mut last_problem: Option<String> = None;
        let path = self.options.reader.path.clone();
        loop {
            if self.stop.stopped() {
                return Ok(());
            }
            let problem = match open(&self.options.reader) {
                Ok(mut port) => {
                    tracing::info!(reader = %self.options.reader.name, path = %path.display(), protocol = self.options.reader.protocol.as_str(), "serial reader connected");
                    attempts = 0;
                    last_problem = None;
                    self.send(self.update(true, None, 0))?;
                    let opened = Instant::now();
                    match self.read_port(&mut port)? {
                        Ended::Stopped => return Ok(()),
                        Ended::Lost(why) => {
                            if opened.elapsed() > BACKOFF_MAX {
                                backoff.reset();
                            }
                            tracing::warn!(reader = %self.options.reader.name, problem = %why, "serial reader lost; reopening with backoff");
                            why
                        }
                    }
                }
                Err(e) => {
                    attempts = attempts.saturating_add(1);
                    explain_open_error(&path, &e)
                }
            };
            // One warning per distinct problem; each retry still updates the status.
            if last_problem.as_ref() != Some(&problem) {
                if attempts > 0 {
                    tracing::warn!(reader = %self.options.reader.name, %problem, "serial reader unavailable; will keep trying");
                }
                last_problem = Some(problem.clone());
            }
            // A tag in the field may still be there when the port is back: it stays
            // present in the debounce (no second tap), but the status no longer shows it.
            self.debounce.on_reader_lost(Instant::now());
            if self.shown_present {
                self.shown_present = false;
                self.send(self.presence(false))?;
            }
            self.send(self.update(false, Some(problem), attempts))?;
            if self.stop.wait(backoff.next_delay()) {
                return Ok(());
            }
        }
    }

    fn presence(&self, present: bool) -> DeviceEvent {
        DeviceEvent::Presence {
            reader: self.options.reader.name.clone(),
            present,
        }
    }

    fn read_port(&mut self, port: &mut TTYPort) -> Result<Ended, Closed> {
        let timeout = self.options.reader.presence_timeout;
        let mut buf = [0u8; 512];
        let mut decoded = Vec::new();
        // A frame half-read before an unplug must not be completed by the new port, and
        // a tag held through the unplug gets a full presence timeout to show up again.
        self.decoder = Decoder::new(self.options.reader.protocol);
        self.debounce.on_reader_lost(Instant::now());
        loop {
            if self.stop.stopped() {
                return Ok(Ended::Stopped);
            }
            let now = Instant::now();
            let wait = self
                .debounce
                .expires_at(timeout)
                .map_or(IDLE_TICK, |t| t.saturating_duration_since(now))
                .clamp(Duration::from_millis(1), IDLE_TICK);
            // TTYPort::set_timeout only stores the value; it cannot fail.
            let _ = port.set_timeout(wait);
            match port.read(&mut buf) {
                Ok(0) => return Ok(Ended::Lost("the device closed (unplugged?)".into())),
                Ok(n) => {
                    self.decoder.feed(&buf[..n], Instant::now(), &mut decoded);
                    for d in decoded.drain(..) {
                        match d {
                            Decoded::Card(read) => self.on_read(read)?,
                            Decoded::Dropped(why) => {
                                tracing::debug!(reader = %self.options.reader.name, %why, "serial input dropped");
                            }
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Ok(Ended::Lost(format!("reading failed: {e} (unplugged?)"))),
            }
            if self.debounce.expire(Instant::now(), timeout) && self.shown_present {
                self.shown_present = false;
                self.send(self.presence(false))?;
            }
        }
    }

    fn on_read(&mut self, read: decode::Read) -> Result<(), Closed> {
        let read_at = Instant::now();
        let arrived = self.debounce.present_token() != Some(&read.token);
        if arrived && self.shown_present {
            // Another tag's frames: the previous one has left.
            self.shown_present = false;
            self.send(self.presence(false))?;
        }
        if self.debounce.on_card(&read.token, read_at) {
            let event = CardEvent {
                reader: self.options.reader.name.clone(),
                token: read.token,
                at: jiff::Timestamp::now(),
                read_at,
                version: read.version,
                feedback: None,
            };
            self.send(DeviceEvent::Card(event))?;
        } else if arrived {
            tracing::debug!(reader = %self.options.reader.name, card = %read.token, "same card inside cooldown; no event");
        }
        if !self.shown_present {
            // After the read, as for PC/SC: whoever sees this knows the tag was handled.
            self.shown_present = true;
            self.send(self.presence(true))?;
        }
        Ok(())
    }
}

fn open(reader: &SerialReader) -> Result<TTYPort, serialport::Error> {
    let data_bits = match reader.data_bits {
        5 => serialport::DataBits::Five,
        6 => serialport::DataBits::Six,
        7 => serialport::DataBits::Seven,
        _ => serialport::DataBits::Eight,
    };
    let parity = match reader.parity {
        Parity::None => serialport::Parity::None,
        Parity::Odd => serialport::Parity::Odd,
        Parity::Even => serialport::Parity::Even,
    };
    let stop_bits = match reader.stop_bits {
        2 => serialport::StopBits::Two,
        _ => serialport::StopBits::One,
    };
    // Exclusive (the default): a second kiosk or a stray terminal cannot steal frames.
    serialport::new(reader.path.to_string_lossy(), reader.baud)
        .data_bits(data_bits)
        .parity(parity)
        .stop_bits(stop_bits)
        .flow_control(serialport::FlowControl::None)
        .timeout(IDLE_TICK)
        .open_native()
}

/// What IT should check when a port does not open.
fn explain_open_error(path: &std::path::Path, e: &serialport::Error) -> String {
    use serialport::ErrorKind;
    let path = path.display();
    match e.kind() {
        ErrorKind::Io(std::io::ErrorKind::NotFound) => format!(
            "{path} does not exist: is the reader plugged in? `kiosk readers` lists the serial ports present"
        ),
        ErrorKind::Io(std::io::ErrorKind::PermissionDenied) => format!(
            "no permission to open {path}: add the kiosk's user to the dialout group (usermod -aG dialout USER) and restart the kiosk"
        ),
        ErrorKind::NoDevice => format!(
            "{path} is in use by another program (another kiosk, ModemManager, a serial console?)"
        ),
        _ => format!("cannot open {path}: {e}"),
    }
}

/// Serial ports present now, for `kiosk readers`: stable `/dev/serial/by-id` names
/// first (what a config should use), then USB serial devices and Raspberry Pi UARTs
/// (`ttyS*` are left out: a PC lists dozens whether or not anything is wired).
pub fn list_ports() -> Vec<PathBuf> {
    let mut ports: Vec<PathBuf> = std::fs::read_dir("/dev/serial/by-id")
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    ports.sort();
    let mut usb: Vec<PathBuf> = std::fs::read_dir("/dev")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    // USB adapters, and the UART a module wired to a Raspberry Pi uses.
                    name.starts_with("ttyUSB")
                        || name.starts_with("ttyACM")
                        || name.starts_with("ttyAMA")
                        || name == "serial0"
                        || name == "serial1"
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    usb.sort();
    ports.extend(usb);
    ports
}
