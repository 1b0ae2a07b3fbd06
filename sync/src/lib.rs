//! Both ends of the kiosk–hub sync protocol: wire types, the kiosk's client loops, the hub server and its stores.

pub mod auth;
pub mod backoff;
pub mod client;
pub mod hub;
pub mod telemetry;
pub mod wire;
