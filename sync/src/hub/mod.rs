//! The hub: receives records from every kiosk, keeps the roster and its change log, serves both over HTTP.

pub mod postgres;
mod rows;
pub mod server;
#[cfg(test)]
mod server_tests;
pub mod sqlite;
pub mod store;
#[cfg(test)]
mod tests;

pub use server::{ADMIN_ID, Hub, HubError, HubState, KIOSK_HEADER, router};
pub use store::HubDb;
