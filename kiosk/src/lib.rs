//! The kiosk daemon: local store, reception rules, HTTP API and screen, and the wiring between them.

pub mod alerts;
pub mod api;
pub mod app;
pub mod cards;
pub mod cli;
pub mod console;
pub mod devices;
pub mod handheld;
pub mod hub_cli;
pub mod openapi;
pub mod reception;
pub mod roster;
pub mod rotation;
pub mod rules;
pub mod store;
pub mod sync_side;
pub mod webhooks;
