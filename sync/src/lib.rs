//! Both ends of the kiosk–hub sync protocol: wire types, the kiosk's client loops, the hub server and its stores.

pub mod auth;
pub mod backoff;
pub mod client;
#[cfg(test)]
mod client_tests;
pub mod hub;
pub mod telemetry;
#[cfg(test)]
mod test_hub;
pub mod wire;
