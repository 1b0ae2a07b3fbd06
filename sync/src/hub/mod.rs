//! The hub: receives records from every kiosk, keeps the roster and its change log, serves both over HTTP.

pub mod postgres;
pub mod sqlite;
pub mod store;

pub use store::HubDb;
