//! Both ends of the kiosk–hub sync protocol. So far: the versioned wire types the kiosk's outbox stores.

pub mod wire;
