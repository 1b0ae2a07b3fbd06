//! Reader threads: blocking backends (pcsc, serialport) run on their own threads, stopped by one flag.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Why a reader backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start the reader thread {name:?}: {source}")]
    Thread {
        name: String,
        source: std::io::Error,
    },
    #[error("reader backends must be started inside the tokio runtime")]
    NoRuntime,
}

/// The stop flag a reader thread checks between blocking calls, plus an optional
/// waker that interrupts the call it is blocked in (PC/SC's `Context::cancel`).
#[derive(Default)]
pub(crate) struct Stop {
    inner: Mutex<StopInner>,
    wake: Condvar,
}

type Waker = Box<dyn Fn() + Send>;

#[derive(Default)]
struct StopInner {
    stopped: bool,
    waker: Option<Waker>,
}

impl Stop {
    fn fire(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.stopped = true;
        if let Some(wake) = &inner.waker {
            wake();
        }
        self.wake.notify_all();
    }

    pub(crate) fn stopped(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stopped
    }

    /// Registers what interrupts the thread's blocking call; false when already stopped.
    pub(crate) fn set_waker(&self, waker: Option<Waker>) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.waker = waker;
        !inner.stopped
    }

    /// Waits up to `d` (a backoff); true when stopped meanwhile.
    pub(crate) fn wait(&self, d: Duration) -> bool {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (inner, _) = self
            .wake
            .wait_timeout_while(inner, d, |i| !i.stopped)
            .unwrap_or_else(PoisonError::into_inner);
        inner.stopped
    }
}

/// Starts `body` on a thread named `name`; `cancel` fires its stop flag. The thread
/// runs until it sees the flag, or returns early when the daemon's receiver is gone.
pub(crate) fn spawn(
    name: &str,
    cancel: CancellationToken,
    body: impl FnOnce(Arc<Stop>) + Send + 'static,
) -> Result<JoinHandle<()>, SpawnError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| SpawnError::NoRuntime)?;
    let stop = Arc::new(Stop::default());
    let thread_done = CancellationToken::new();
    let handle = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn({
            let stop = stop.clone();
            let thread_done = thread_done.clone();
            move || {
                let _done = thread_done.drop_guard();
                body(stop);
            }
        })
        .map_err(|source| SpawnError::Thread {
            name: name.to_owned(),
            source,
        })?;
    // Bridges the async token to the blocking world; ends with the thread either way.
    runtime.spawn(async move {
        tokio::select! {
            () = cancel.cancelled() => stop.fire(),
            () = thread_done.cancelled() => {}
        }
    });
    Ok(handle)
}

/// Exponential backoff between reconnect attempts, doubling up to a cap.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The delay before the next attempt; each call doubles the one after.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// A connection that lasted: the next failure starts from the first delay again.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(250), ms(2_000));
        let got: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert_eq!(
            got,
            [ms(250), ms(500), ms(1_000), ms(2_000), ms(2_000), ms(2_000)]
        );
        b.reset();
        assert_eq!(b.next_delay(), ms(250));
    }
}
