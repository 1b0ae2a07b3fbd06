//! Test harness for end-to-end tests: a shared headless Chromium, a shared pcscd with virtual readers, vpcd cards, pty serial readers, kiosk and hub processes, a fault proxy, PostgreSQL databases, an SSE client.

pub mod browser;
pub mod hub;
pub mod kiosk;
pub mod pcscd;
pub mod postgres;
pub mod proxy;
pub mod results;
pub mod serial;
pub mod sse;
pub mod stats;
pub mod vpcd;
pub mod vpcd_lock;

/// An HTTP client for tests. The workspace builds reqwest without a default TLS
/// crypto provider (it picks ring, see the root Cargo.toml), and building a client
/// without one installed panics, even for plain http; installing twice is harmless.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
