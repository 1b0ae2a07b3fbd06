//! Test harness for end-to-end tests: a shared pcscd with virtual readers, vpcd cards, pty serial readers, kiosk processes, an SSE client.

pub mod kiosk;
pub mod pcscd;
pub mod serial;
pub mod sse;
pub mod stats;
pub mod vpcd;
