//! The hub: receives records from every kiosk, keeps the roster and its change log, serves both over HTTP.

pub mod postgres;
mod rows;
pub mod sqlite;
pub mod store;
#[cfg(test)]
mod tests;

pub use store::HubDb;
