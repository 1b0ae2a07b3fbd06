//! A TCP fault proxy for loopback HTTP/1.1 tests: put it between a kiosk and its hub to lose replies, cut uploads, slow the link or refuse.
//!
//! The proxy reads HTTP/1.1 framing (heads, `Content-Length`, chunked) in both
//! directions, so it knows where each request and each response ends. That is what
//! lets it drop a reply only after the hub sent all of it ("committed, but the answer
//! was lost"), and it is why a mode applies from the next *request*, on new and
//! kept-alive connections alike: a test cannot see the client's connection pool, so
//! a mode that only applied to new connections would silently miss the kiosk's
//! pooled one. Each connection runs on two plain threads (one per direction), so
//! the proxy works the same under any test runtime, or none.
//!
//! Not handled, because sync traffic never uses them: pipelined requests whose
//! replies need different modes, protocol upgrades, `CONNECT`.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the proxy does to the next request and its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Forward the request whole, read the upstream's whole response, then close the
    /// client's connection without a byte of it: the hub committed, the reply was lost.
    DropResponse,
    /// Like `DropResponse` for the next `n` requests, then `Pass`.
    DropResponses(usize),
    /// Forward only the first `after` bytes of the request (head included), then close
    /// both sides: the connection dropped mid-batch.
    CutRequest { after: usize },
    /// Hold every chunk this long before passing it on, both ways: a slow link that
    /// still delivers everything.
    Delay(Duration),
    /// Close connections as soon as they are accepted (and kept-alive ones at their
    /// next request): the hub is unreachable.
    Refuse,
    /// Close the connection at a request whose path starts with this, and pass the
    /// others: one endpoint is unreachable, e.g. pushes fail while roster pulls work.
    RefusePath(&'static str),
}

/// What the proxy has done so far; every field only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Client connections accepted, refused ones included.
    pub accepted: u64,
    /// Requests forwarded whole to the upstream (dropped-reply ones included).
    pub forwarded: u64,
    /// Complete upstream responses the client never saw.
    pub dropped: u64,
    /// Requests cut short by `CutRequest`.
    pub cut: u64,
}

/// A running proxy on `127.0.0.1:0`; stops and closes every connection when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy in `Pass` mode in front of `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            route: Mutex::new(Route {
                mode: Mode::Pass,
                upstream,
            }),
            counters: Mutex::new(Counters::default()),
            changed: Condvar::new(),
            open: Mutex::new(OpenConnections::default()),
            closing: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("fault-proxy-accept".into())
                .spawn(move || accept_loop(&listener, &shared))
                .expect("spawn the proxy's accept thread")
        };
        FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// e.g. `http://127.0.0.1:41234`, without a trailing slash, like the kiosk's `hub`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets what happens to the next request, on any connection.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.route().mode = mode;
    }

    /// The mode now; `DropResponses(n)` counts down and turns into `Pass`.
    pub fn mode(&self) -> Mode {
        self.shared.route().mode
    }

    /// Points new connections at another upstream: a restarted hub binds a new port.
    /// Open connections stay with the old one (and end when it does).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        self.shared.route().upstream = upstream;
    }

    pub fn counters(&self) -> Counters {
        *self.shared.counters()
    }

    /// Responses dropped so far.
    pub fn dropped(&self) -> u64 {
        self.counters().dropped
    }

    /// Waits until the counters satisfy `pred`, then returns them; panics after `limit`.
    /// Blocks the thread: from async code use [`FaultProxy::wait_for_async`].
    pub fn wait_for(&self, limit: Duration, pred: impl Fn(&Counters) -> bool) -> Counters {
        self.shared.wait_for(limit, pred)
    }

    /// [`FaultProxy::wait_for`] for async tests: waits on a blocking-pool thread, so
    /// the test's runtime keeps running its other tasks meanwhile.
    pub async fn wait_for_async(
        &self,
        limit: Duration,
        pred: impl Fn(&Counters) -> bool + Send + 'static,
    ) -> Counters {
        let shared = Arc::clone(&self.shared);
        match tokio::task::spawn_blocking(move || shared.wait_for(limit, pred)).await {
            Ok(counters) => counters,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("waiting on the fault proxy: {e}"),
            },
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        // accept() has no timeout: a connection of our own wakes it to see `closing`.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // Shutting the sockets down ends every connection's threads: their reads
        // return at once and their writes fail.
        let open = std::mem::take(&mut self.shared.open().sockets);
        for socket in open.into_values().flatten() {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

/// State shared by the handle, the accept thread and the connections' threads.
#[derive(Debug)]
struct Shared {
    route: Mutex<Route>,
    counters: Mutex<Counters>,
    /// Signalled whenever a counter changes, for `wait_for`.
    changed: Condvar,
    /// Every open connection's sockets, so dropping the proxy can close them.
    open: Mutex<OpenConnections>,
    closing: AtomicBool,
}

#[derive(Debug)]
struct Route {
    mode: Mode,
    upstream: SocketAddr,
}

#[derive(Debug, Default)]
struct OpenConnections {
    next: u64,
    sockets: HashMap<u64, [TcpStream; 2]>,
}

impl Shared {
    // A panicking connection thread must not wedge the proxy for the test: poisoned
    // locks are used as they are.
    fn route(&self) -> std::sync::MutexGuard<'_, Route> {
        self.route.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self) -> std::sync::MutexGuard<'_, OpenConnections> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, change: impl FnOnce(&mut Counters)) {
        change(&mut self.counters());
        self.changed.notify_all();
    }

    fn wait_for(&self, limit: Duration, pred: impl Fn(&Counters) -> bool) -> Counters {
        let deadline = Instant::now() + limit;
        let mut counters = self.counters();
        while !pred(&counters) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("the fault proxy waited {limit:?} in vain; its counters: {counters:?}");
            }
            counters = self
                .changed
                .wait_timeout(counters, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *counters
    }

    /// Decides the fate of a request that is about to be forwarded; `DropResponses`
    /// counts down here, so two connections racing for the last drop get one each.
    fn next_action(&self, path: &str) -> Action {
        let mut route = self.route();
        match route.mode {
            Mode::RefusePath(prefix) if path.starts_with(prefix) => Action::Refuse,
            Mode::RefusePath(_) => Action::Forward {
                delay: Duration::ZERO,
                drop: false,
            },
            Mode::Pass => Action::Forward {
                delay: Duration::ZERO,
                drop: false,
            },
            Mode::Delay(delay) => Action::Forward { delay, drop: false },
            Mode::DropResponse => Action::Forward {
                delay: Duration::ZERO,
                drop: true,
            },
            Mode::DropResponses(0) => {
                route.mode = Mode::Pass;
                Action::Forward {
                    delay: Duration::ZERO,
                    drop: false,
                }
            }
            Mode::DropResponses(n) => {
                route.mode = if n == 1 {
                    Mode::Pass
                } else {
                    Mode::DropResponses(n - 1)
                };
                Action::Forward {
                    delay: Duration::ZERO,
                    drop: true,
                }
            }
            Mode::CutRequest { after } => Action::Cut { after },
            Mode::Refuse => Action::Refuse,
        }
    }
}

/// One request's fate, fixed when its head has arrived.
#[derive(Debug, Clone, Copy)]
enum Action {
    Forward { delay: Duration, drop: bool },
    Cut { after: usize },
    Refuse,
}

/// What the response side needs to know about the request it answers.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// A response to HEAD has a head only.
    head_request: bool,
    drop: bool,
    delay: Duration,
}

impl Plan {
    /// For a response nobody asked for (e.g. a server's 408 before closing).
    const UNSOLICITED: Plan = Plan {
        head_request: false,
        drop: false,
        delay: Duration::ZERO,
    };
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.closing.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        shared.count(|c| c.accepted += 1);
        let (mode, upstream) = {
            let route = shared.route();
            (route.mode, route.upstream)
        };
        if mode == Mode::Refuse {
            drop(client);
            continue;
        }
        let shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("fault-proxy-conn".into())
            .spawn(move || connection(client, upstream, &shared));
        if spawned.is_err() {
            // Out of threads: the client sees a closed connection, like a refusal.
            continue;
        }
    }
}

/// Removes a connection from the open set when both its threads are done.
struct Registered<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.shared.open().sockets.remove(&self.id);
    }
}

fn connection(client: TcpStream, upstream: SocketAddr, shared: &Shared) {
    // Like a hub that is down: the client's connection closes without a reply.
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client_w), Ok(server_w), Ok(client_reg), Ok(server_reg)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    let _registered = {
        let mut open = shared.open();
        let id = open.next;
        open.next += 1;
        open.sockets.insert(id, [client_reg, server_reg]);
        Registered { shared, id }
    };
    if shared.closing.load(Ordering::SeqCst) {
        return;
    }
    let (plans_tx, plans_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let to_client = &client_w;
        let responses = std::thread::Builder::new()
            .name("fault-proxy-resp".into())
            .spawn_scoped(scope, move || {
                responses(Source::new(server), to_client, &plans_rx, shared);
            });
        if responses.is_err() {
            close(&client_w, &server_w);
            return;
        }
        requests(Source::new(client), &server_w, &client_w, &plans_tx, shared);
    });
}

/// Client → upstream, one request at a time.
fn requests(
    mut client: Source,
    server: &TcpStream,
    client_w: &TcpStream,
    plans: &mpsc::Sender<Plan>,
    shared: &Shared,
) {
    loop {
        let head = match client.head() {
            Ok(Some(head)) => head,
            // The client closed between requests: pass the half-close on, so a reply
            // still on its way gets through (and a server sees what it would see).
            Ok(None) => {
                let _ = server.shutdown(Shutdown::Write);
                return;
            }
            Err(_) => return close(client_w, server),
        };
        let Ok(request) = parse_request(&head) else {
            return close(client_w, server);
        };
        match shared.next_action(&request.path) {
            Action::Refuse => return close(client_w, server),
            Action::Cut { after } => {
                let mut out = Out::new(Some(server), Duration::ZERO, Some(after));
                let _ = out
                    .send(&head)
                    .and_then(|()| body(&mut client, request.framing, &mut |b| out.send(b)));
                // The count comes before the close, so a test that saw the close
                // also sees the count.
                shared.count(|c| c.cut += 1);
                return close(client_w, server);
            }
            Action::Forward { delay, drop } => {
                // The plan goes first: the response can't arrive before its request.
                let plan = Plan {
                    head_request: request.method.eq_ignore_ascii_case("HEAD"),
                    drop,
                    delay,
                };
                if plans.send(plan).is_err() {
                    return close(client_w, server);
                }
                let mut out = Out::new(Some(server), delay, None);
                let sent = out
                    .send(&head)
                    .and_then(|()| body(&mut client, request.framing, &mut |b| out.send(b)));
                if sent.is_err() {
                    return close(client_w, server);
                }
                shared.count(|c| c.forwarded += 1);
                // After a request whose reply is dropped, the response side closes
                // the connection; the next head read here sees that and returns.
            }
        }
    }
}

/// Upstream → client, one response at a time, each under its request's plan.
fn responses(
    mut server: Source,
    client: &TcpStream,
    plans: &mpsc::Receiver<Plan>,
    shared: &Shared,
) {
    let server_w = server.stream.try_clone();
    let close_all = || {
        let _ = client.shutdown(Shutdown::Both);
        if let Ok(s) = &server_w {
            let _ = s.shutdown(Shutdown::Both);
        }
    };
    loop {
        // Upstream closed (between responses, or instead of answering): the client
        // sees its connection close, as it would without the proxy.
        let Ok(Some(mut head)) = server.head() else {
            return close_all();
        };
        let plan = plans.try_recv().unwrap_or(Plan::UNSOLICITED);
        let mut out = if plan.drop {
            Out::new(None, Duration::ZERO, None)
        } else {
            Out::new(Some(client), plan.delay, None)
        };
        // Interim responses (100 Continue, 103 Early Hints) precede the final one.
        let framing = loop {
            let Ok(framing) = parse_response(&head, plan.head_request) else {
                return close_all();
            };
            if framing != Framing::Interim {
                break framing;
            }
            if out.send(&head).is_err() {
                return close_all();
            }
            head = match server.head() {
                Ok(Some(next)) => next,
                _ => return close_all(),
            };
        };
        let relayed = out
            .send(&head)
            .and_then(|()| body(&mut server, framing, &mut |b| out.send(b)));
        if relayed.is_err() {
            return close_all();
        }
        if plan.drop {
            shared.count(|c| c.dropped += 1);
            return close_all();
        }
        if framing == Framing::UntilClose {
            return close_all();
        }
    }
}

fn close(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

/// Where a message's bytes go: a socket (maybe slowly, maybe only the first few), or nowhere.
struct Out<'a> {
    to: Option<&'a TcpStream>,
    delay: Duration,
    /// Bytes still allowed through; `None` is no limit.
    budget: Option<usize>,
}

impl<'a> Out<'a> {
    fn new(to: Option<&'a TcpStream>, delay: Duration, budget: Option<usize>) -> Out<'a> {
        Out { to, delay, budget }
    }

    /// Passes `bytes` on; with a budget, fails once it is spent, which stops the message.
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let bytes = match self.budget {
            Some(left) => &bytes[..bytes.len().min(left)],
            None => bytes,
        };
        if !self.delay.is_zero() {
            // The fault itself, not a wait for something: this chunk is held back.
            std::thread::sleep(self.delay);
        }
        if let Some(mut to) = self.to {
            to.write_all(bytes)?;
        }
        if let Some(left) = &mut self.budget {
            *left -= bytes.len();
            if *left == 0 {
                return Err(io::Error::other("the request was cut here"));
            }
        }
        Ok(())
    }
}

/// The longest head or chunk line the proxy accepts.
const MAX_LINE: usize = 64 * 1024;

/// A socket's read side with a buffer, read by message framing.
struct Source {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    pos: usize,
}

impl Source {
    fn new(stream: TcpStream) -> Source {
        Source {
            stream,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }

    /// Reads more; `false` at end of stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    fn fill_or_eof(&mut self) -> io::Result<()> {
        if self.fill()? {
            Ok(())
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    }

    /// A message head through its blank line, or `None` if the stream ended cleanly
    /// before its first byte.
    fn head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = head_end(self.unread()) {
                let head = self.unread()[..end].to_vec();
                self.consume(end);
                return Ok(Some(head));
            }
            if self.unread().len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "message head too long",
                ));
            }
            if !self.fill()? {
                return if self.unread().is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    /// One line through its LF, passed to `emit` and returned.
    fn line(&mut self, emit: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.unread().iter().position(|&b| b == b'\n') {
                let line = self.unread()[..=i].to_vec();
                self.consume(i + 1);
                emit(&line)?;
                return Ok(line);
            }
            if self.unread().len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "chunk line too long",
                ));
            }
            self.fill_or_eof()?;
        }
    }

    /// Exactly `n` bytes, passed to `emit` as they arrive.
    fn exact(
        &mut self,
        mut n: u64,
        emit: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        while n > 0 {
            if self.unread().is_empty() {
                self.fill_or_eof()?;
            }
            let take = self
                .unread()
                .len()
                .min(usize::try_from(n).unwrap_or(usize::MAX));
            emit(&self.unread()[..take])?;
            self.consume(take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Everything until the peer closes.
    fn until_close(&mut self, emit: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        loop {
            if !self.unread().is_empty() {
                emit(self.unread())?;
                self.consume(self.unread().len());
            }
            if !self.fill()? {
                return Ok(());
            }
        }
    }
}

/// Where a head ends: just past its first empty line (CRLF or bare LF). Empty lines
/// before the start line belong to the head (RFC 9112 §2.2 lets servers skip them).
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    let mut seen_start_line = false;
    for (i, &b) in buf.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let line = &buf[line_start..i];
        let empty = line.is_empty() || line == b"\r";
        if empty && seen_start_line {
            return Some(i + 1);
        }
        seen_start_line |= !empty;
        line_start = i + 1;
    }
    None
}

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body.
    Empty,
    Length(u64),
    Chunked,
    /// A response without a length: its body ends when the server closes.
    UntilClose,
    /// A 1xx response: a head only, and the final response follows.
    Interim,
}

#[derive(Debug)]
struct Request {
    method: String,
    /// The request target as sent (origin form: path and query).
    path: String,
    framing: Framing,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// The head's start line and its headers (name, value), empty lines skipped.
fn head_lines(head: &[u8]) -> (String, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty());
    let start = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (start, headers)
}

/// The body framing both kinds of message share: chunked wins over a length.
fn body_framing(headers: &[(String, String)]) -> io::Result<Option<Framing>> {
    let codings: Vec<&str> = headers
        .iter()
        .filter(|(name, _)| name == "transfer-encoding")
        .flat_map(|(_, value)| value.split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if let Some(last) = codings.last() {
        return if last.eq_ignore_ascii_case("chunked") {
            Ok(Some(Framing::Chunked))
        } else {
            // A transfer coding that isn't chunked last: only a close ends the body.
            Ok(Some(Framing::UntilClose))
        };
    }
    let mut lengths = headers
        .iter()
        .filter(|(name, _)| name == "content-length")
        .map(|(_, value)| value.parse::<u64>());
    match lengths.next() {
        None => Ok(None),
        Some(Ok(n)) if lengths.all(|other| other.as_ref() == Ok(&n)) => {
            Ok(Some(Framing::Length(n)))
        }
        Some(_) => Err(invalid("bad or conflicting Content-Length")),
    }
}

fn parse_request(head: &[u8]) -> io::Result<Request> {
    let (start, headers) = head_lines(head);
    let mut parts = start.split(' ');
    let method = parts
        .next()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("no request line"))?
        .to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let framing = match body_framing(&headers)? {
        // A request can't be delimited by closing: that would leave no way to reply.
        Some(Framing::UntilClose) => return Err(invalid("request body of unknown length")),
        Some(framing) => framing,
        None => Framing::Empty,
    };
    Ok(Request {
        method,
        path,
        framing,
    })
}

fn parse_response(head: &[u8], head_request: bool) -> io::Result<Framing> {
    let (start, headers) = head_lines(head);
    let status: u16 = start
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("no status line"))?;
    Ok(match status {
        // 101 Switching Protocols: whatever follows is no longer HTTP.
        101 => Framing::UntilClose,
        100..=199 => Framing::Interim,
        204 | 304 => Framing::Empty,
        _ if head_request => Framing::Empty,
        _ => body_framing(&headers)?.unwrap_or(Framing::UntilClose),
    })
}

/// Passes one body on, in its own framing (chunked stays chunked).
fn body(
    src: &mut Source,
    framing: Framing,
    emit: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    match framing {
        Framing::Empty | Framing::Interim => Ok(()),
        Framing::Length(n) => src.exact(n, emit),
        Framing::UntilClose => src.until_close(emit),
        Framing::Chunked => loop {
            let size_line = src.line(emit)?;
            let size = chunk_size(&size_line)?;
            if size == 0 {
                // Trailer fields, up to an empty line.
                loop {
                    let line = src.line(emit)?;
                    if line == b"\r\n" || line == b"\n" {
                        return Ok(());
                    }
                }
            }
            src.exact(size, emit)?;
            let end = src.line(emit)?;
            if end != b"\r\n" && end != b"\n" {
                return Err(invalid("chunk data longer than its size"));
            }
        },
    }
}

/// A chunk's size from its size line (hex, maybe followed by `;extensions`).
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let text = std::str::from_utf8(line).map_err(|_| invalid("chunk size line"))?;
    let hex = text.split(';').next().unwrap_or_default().trim();
    if hex.is_empty() || hex.len() > 16 {
        return Err(invalid("chunk size line"));
    }
    u64::from_str_radix(hex, 16).map_err(|_| invalid("chunk size line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generous: only reached when something is broken.
    const WAIT: Duration = Duration::from_secs(10);

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    const OK_CHUNKED: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";

    fn get(path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: hub\r\n\r\n").into_bytes()
    }

    fn post(body: &str) -> Vec<u8> {
        format!(
            "POST /sync/v1/records HTTP/1.1\r\nHost: hub\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// What the tiny upstream saw on one connection.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        /// A complete request, answered.
        Request(Vec<u8>),
        /// The connection ended; these bytes were not a complete request.
        Closed { partial: Vec<u8> },
    }

    /// A tiny HTTP/1.1 server answering every complete request with a fixed response,
    /// keep-alive, reporting what it received. It reads framing its own way, not with
    /// the proxy's code, so the two can't share a mistake.
    struct Upstream {
        addr: SocketAddr,
        seen: mpsc::Receiver<Seen>,
        /// Gates the second half of every response, when the test holds one back.
        release: Option<mpsc::Sender<()>>,
    }

    impl Upstream {
        fn start(response: &'static [u8]) -> Upstream {
            Upstream::serve(response, None)
        }

        /// Sends the first `split` bytes of each response, then waits for `release`.
        fn start_split(response: &'static [u8], split: usize) -> Upstream {
            Upstream::serve(response, Some(split))
        }

        fn serve(response: &'static [u8], split: Option<usize>) -> Upstream {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
            let addr = listener.local_addr().expect("upstream address");
            let (seen_tx, seen) = mpsc::channel();
            let (release_tx, release_rx) = mpsc::channel::<()>();
            let release_rx = Arc::new(Mutex::new(release_rx));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { return };
                    let seen = seen_tx.clone();
                    let release = Arc::clone(&release_rx);
                    std::thread::spawn(move || {
                        serve_conn(conn, response, split, &seen, &release);
                    });
                }
            });
            Upstream {
                addr,
                seen,
                release: split.map(|_| release_tx),
            }
        }

        fn next(&self) -> Seen {
            self.seen
                .recv_timeout(WAIT)
                .expect("the upstream saw nothing in time")
        }

        fn release(&self) {
            if let Some(release) = &self.release {
                release.send(()).expect("upstream gone");
            }
        }
    }

    fn serve_conn(
        mut conn: TcpStream,
        response: &[u8],
        split: Option<usize>,
        seen: &mpsc::Sender<Seen>,
        release: &Mutex<mpsc::Receiver<()>>,
    ) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(len) = complete_request(&buf) {
                let request: Vec<u8> = buf.drain(..len).collect();
                let _ = seen.send(Seen::Request(request));
                let answered = match split {
                    None => conn.write_all(response),
                    Some(at) => conn.write_all(&response[..at]).and_then(|()| {
                        let _ = release.lock().expect("release lock").recv();
                        conn.write_all(&response[at..])
                    }),
                };
                if answered.is_err() {
                    return;
                }
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    let _ = seen.send(Seen::Closed { partial: buf });
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The length of a complete request at the start of `buf`: a head plus its
    /// Content-Length body, or a chunked body up to its last chunk.
    fn complete_request(buf: &[u8]) -> Option<usize> {
        let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
        if text.contains("transfer-encoding: chunked") {
            let end = buf[head..].windows(5).position(|w| w == b"0\r\n\r\n")?;
            return Some(head + end + 5);
        }
        let length = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse::<usize>().expect("content length"));
        (buf.len() >= head + length).then_some(head + length)
    }

    fn connect(proxy: &FaultProxy) -> TcpStream {
        let conn = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
        conn.set_read_timeout(Some(WAIT)).expect("read timeout");
        conn
    }

    /// Reads exactly `n` bytes.
    fn read_n(conn: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        conn.read_exact(&mut buf).expect("read the response");
        buf
    }

    /// Reads until the proxy closes; a reset counts as closed. Panics on a timeout,
    /// which would mean the proxy kept the connection open.
    fn read_until_closed(conn: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match conn.read(&mut chunk) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
                Err(e) => panic!("the proxy did not close the connection: {e}"),
            }
        }
    }

    #[test]
    fn pass_forwards_several_requests_on_one_connection() {
        let upstream = Upstream::start(OK);
        let proxy = FaultProxy::start(upstream.addr);
        let mut conn = connect(&proxy);
        for request in [get("/sync/v1/roster"), post("{\"seq\":1}\n{\"seq\":2}\n")] {
            conn.write_all(&request).expect("send");
            assert_eq!(read_n(&mut conn, OK.len()), OK);
            assert_eq!(upstream.next(), Seen::Request(request));
        }
        drop(conn);
        assert_eq!(upstream.next(), Seen::Closed { partial: vec![] });
        let counters = proxy.counters();
        assert_eq!((counters.accepted, counters.forwarded), (1, 2));
        assert_eq!((counters.dropped, counters.cut), (0, 0));
    }

    #[test]
    fn pass_forwards_chunked_bodies_both_ways() {
        let upstream = Upstream::start(OK_CHUNKED);
        let proxy = FaultProxy::start(upstream.addr);
        let mut conn = connect(&proxy);
        let request = b"POST /sync/v1/records HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        for _ in 0..2 {
            conn.write_all(request).expect("send");
            assert_eq!(read_n(&mut conn, OK_CHUNKED.len()), OK_CHUNKED);
            assert_eq!(upstream.next(), Seen::Request(request.to_vec()));
        }
        // Counted once the last byte went out, which may be just after the reply came.
        proxy.wait_for(WAIT, |c| c.forwarded == 2);
    }

    #[test]
    fn drop_response_loses_the_reply_after_the_upstream_answered() {
        for response in [OK, OK_CHUNKED] {
            let upstream = Upstream::start(response);
            let proxy = FaultProxy::start(upstream.addr);
            proxy.set_mode(Mode::DropResponse);
            let mut conn = connect(&proxy);
            let request = post("{\"seq\":1}\n");
            conn.write_all(&request).expect("send");
            assert_eq!(read_until_closed(&mut conn), b"", "no byte of the reply");
            assert_eq!(upstream.next(), Seen::Request(request));
            assert_eq!(proxy.dropped(), 1);
            // The proxy closed its upstream connection too, after the whole reply.
            assert_eq!(upstream.next(), Seen::Closed { partial: vec![] });
            assert_eq!(proxy.mode(), Mode::DropResponse, "it stays until changed");
        }
    }

    #[test]
    fn drop_response_waits_for_the_whole_reply() {
        // The upstream sends the head and half the body, then waits: the proxy must
        // not count a drop (nor close) before the rest arrives.
        for (response, split) in [(OK, OK.len() - 3), (OK_CHUNKED, OK_CHUNKED.len() - 9)] {
            let upstream = Upstream::start_split(response, split);
            let proxy = FaultProxy::start(upstream.addr);
            proxy.set_mode(Mode::DropResponse);
            let mut conn = connect(&proxy);
            conn.write_all(&get("/x")).expect("send");
            assert_eq!(upstream.next(), Seen::Request(get("/x")));
            assert_eq!(proxy.dropped(), 0, "the reply is not complete yet");
            upstream.release();
            proxy.wait_for(WAIT, |c| c.dropped == 1);
            assert_eq!(read_until_closed(&mut conn), b"");
        }
    }

    #[test]
    fn drop_responses_drops_the_first_n_then_passes() {
        let upstream = Upstream::start(OK);
        let proxy = FaultProxy::start(upstream.addr);
        proxy.set_mode(Mode::DropResponses(2));
        for _ in 0..2 {
            let mut conn = connect(&proxy);
            conn.write_all(&get("/a")).expect("send");
            assert_eq!(read_until_closed(&mut conn), b"");
        }
        assert_eq!(proxy.mode(), Mode::Pass);
        let mut conn = connect(&proxy);
        conn.write_all(&get("/a")).expect("send");
        assert_eq!(read_n(&mut conn, OK.len()), OK);
        let counters = proxy.wait_for(WAIT, |c| c.forwarded == 3);
        assert_eq!(counters.dropped, 2);
    }

    #[test]
    fn cut_request_forwards_exactly_the_first_bytes() {
        let upstream = Upstream::start(OK);
        let proxy = FaultProxy::start(upstream.addr);
        let request = post(&"{\"seq\":1}\n".repeat(20));
        // Mid-body: the head and part of the batch get through.
        let after = request.len() - 100;
        proxy.set_mode(Mode::CutRequest { after });
        let mut conn = connect(&proxy);
        // The proxy may close while this is still being written; that's the point.
        let _ = conn.write_all(&request);
        assert_eq!(read_until_closed(&mut conn), b"");
        assert_eq!(
            upstream.next(),
            Seen::Closed {
                partial: request[..after].to_vec()
            }
        );
        let counters = proxy.counters();
        assert_eq!((counters.cut, counters.forwarded), (1, 0));
    }

    #[test]
    fn delay_still_delivers_everything() {
        let upstream = Upstream::start(OK_CHUNKED);
        let proxy = FaultProxy::start(upstream.addr);
        proxy.set_mode(Mode::Delay(Duration::from_millis(5)));
        let mut conn = connect(&proxy);
        for request in [post("{\"seq\":1}\n"), get("/sync/v1/roster?since=0")] {
            conn.write_all(&request).expect("send");
            assert_eq!(read_n(&mut conn, OK_CHUNKED.len()), OK_CHUNKED);
            assert_eq!(upstream.next(), Seen::Request(request));
        }
    }

    #[test]
    fn refuse_closes_at_once_and_never_reaches_the_upstream() {
        let upstream = Upstream::start(OK);
        let proxy = FaultProxy::start(upstream.addr);
        proxy.set_mode(Mode::Refuse);
        let mut conn = connect(&proxy);
        let _ = conn.write_all(&get("/"));
        assert_eq!(read_until_closed(&mut conn), b"");
        assert_eq!(proxy.counters().accepted, 1);
        assert!(
            upstream.seen.try_recv().is_err(),
            "the upstream saw a connection"
        );
    }

    #[test]
    fn a_mode_change_reaches_a_kept_alive_connection_at_its_next_request() {
        let upstream = Upstream::start(OK);
        let proxy = FaultProxy::start(upstream.addr);
        let mut conn = connect(&proxy);
        conn.write_all(&get("/1")).expect("send");
        assert_eq!(read_n(&mut conn, OK.len()), OK);
        proxy.set_mode(Mode::DropResponse);
        conn.write_all(&get("/2")).expect("send");
        assert_eq!(read_until_closed(&mut conn), b"");
        assert_eq!(proxy.counters().accepted, 1, "the same connection");
        assert_eq!(proxy.dropped(), 1);
    }

    #[test]
    fn set_upstream_moves_new_connections() {
        let first = Upstream::start(OK);
        let second = Upstream::start(OK_CHUNKED);
        let proxy = FaultProxy::start(first.addr);
        let mut conn = connect(&proxy);
        conn.write_all(&get("/")).expect("send");
        assert_eq!(read_n(&mut conn, OK.len()), OK);
        proxy.set_upstream(second.addr);
        let mut conn = connect(&proxy);
        conn.write_all(&get("/")).expect("send");
        assert_eq!(read_n(&mut conn, OK_CHUNKED.len()), OK_CHUNKED);
        assert_eq!(second.next(), Seen::Request(get("/")));
    }

    #[test]
    fn an_upstream_that_closes_without_answering_closes_the_client() {
        // A hub killed mid-request: the listener takes the request and hangs up.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let hub = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
        });
        let proxy = FaultProxy::start(addr);
        let mut conn = connect(&proxy);
        conn.write_all(&get("/")).expect("send");
        assert_eq!(read_until_closed(&mut conn), b"");
        hub.join().expect("hub thread");
    }

    #[tokio::test]
    async fn a_pooling_client_sees_the_faults_and_recovers() {
        let upstream = Upstream::start(OK_CHUNKED);
        let proxy = FaultProxy::start(upstream.addr);
        let client = crate::http_client();
        let url = format!("{}/sync/v1/roster", proxy.url());
        let body = client.get(&url).send().await.expect("GET").text().await;
        assert_eq!(body.expect("body"), "hello world");
        proxy.set_mode(Mode::DropResponses(1));
        assert!(client.get(&url).send().await.is_err(), "the reply was lost");
        proxy.wait_for_async(WAIT, |c| c.dropped >= 1).await;
        let body = client.get(&url).send().await.expect("GET").text().await;
        assert_eq!(body.expect("body"), "hello world");
        proxy.set_mode(Mode::Refuse);
        assert!(client.get(&url).send().await.is_err(), "refused");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let table: [(&[u8], bool, Framing); 9] = [
            (OK, false, Framing::Length(5)),
            (OK, true, Framing::Empty),
            (OK_CHUNKED, false, Framing::Chunked),
            (b"HTTP/1.1 204 No Content\r\n\r\n", false, Framing::Empty),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false,
                Framing::Empty,
            ),
            (b"HTTP/1.1 100 Continue\r\n\r\n", false, Framing::Interim),
            (b"HTTP/1.0 200 OK\r\n\r\n", false, Framing::UntilClose),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
                false,
                Framing::Chunked,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length:  7 \r\n\r\n",
                false,
                Framing::Length(7),
            ),
        ];
        for (head, head_request, want) in table {
            let got = parse_response(head, head_request).expect("a response head");
            assert_eq!(got, want, "{}", String::from_utf8_lossy(head));
        }
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .is_err()
        );
        let request = parse_request(&get("/")).expect("a request head");
        assert_eq!(
            (request.method.as_str(), request.framing),
            ("GET", Framing::Empty)
        );
        let request = parse_request(&post("abc")).expect("a request head");
        assert_eq!(request.framing, Framing::Length(3));
    }

    #[test]
    fn heads_end_at_the_first_empty_line() {
        let table: [(&[u8], Option<usize>); 5] = [
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", Some(27)),
            (b"GET / HTTP/1.1\nHost: a\n\nbody", Some(24)),
            (b"\r\nGET / HTTP/1.1\r\n\r\n", Some(20)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", None),
            (b"", None),
        ];
        for (buf, want) in table {
            assert_eq!(head_end(buf), want, "{}", String::from_utf8_lossy(buf));
        }
        assert_eq!(chunk_size(b"1f;name=v\r\n").expect("size"), 31);
        assert!(chunk_size(b"\r\n").is_err());
        assert!(chunk_size(b"zz\r\n").is_err());
    }
}
