//! The hub store on PostgreSQL: a connection pool; several hub processes may share one database.

use crate::wire::{
    BatchReply, BrokerEntry, CardEntry, ConsultantEntry, CursorExpired, Entity, RosterPage,
};

use super::store::{
    DayReport, HubCustomer, HubStoreError, ImportCounts, Incoming, KioskRow, RosterImport,
    StoredRecord, StoredReject,
};

#[derive(Debug, Clone)]
pub struct PgHub {}

impl PgHub {
    pub async fn open(url: &str) -> Result<PgHub, HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn add_kiosk(
        &self,
        id: &str,
        office_id: &str,
        token_hash: &str,
    ) -> Result<(), HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn revoke_kiosk(&self, id: &str) -> Result<(), HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn kiosk(&self, id: &str) -> Result<Option<KioskRow>, HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn kiosks(&self) -> Result<Vec<KioskRow>, HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn store_batch(
        &self,
        kiosk_id: &str,
        items: Vec<Incoming>,
        received_at: jiff::Timestamp,
    ) -> Result<BatchReply, HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn records(
        &self,
        kiosk_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<StoredRecord>, HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn rejects(&self, kiosk_id: &str) -> Result<Vec<StoredReject>, HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn record_count(&self) -> Result<u64, HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn day_report(&self, office_id: &str, day: &str) -> Result<DayReport, HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn roster_changes(
        &self,
        since: u64,
        limit: u32,
    ) -> Result<Result<RosterPage, CursorExpired>, HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn roster_snapshot(&self) -> Result<Vec<u8>, HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn prune_roster_log(&self, before: jiff::Timestamp) -> Result<u64, HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn import(&self, roster: RosterImport) -> Result<ImportCounts, HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn upsert_consultant(&self, c: ConsultantEntry) -> Result<(), HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn upsert_customer(&self, c: HubCustomer) -> Result<(), HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn upsert_card(&self, c: CardEntry) -> Result<(), HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn upsert_broker(&self, b: BrokerEntry) -> Result<(), HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn delete(&self, entity: Entity, key: &str) -> Result<(), HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn customer(&self, id: &str) -> Result<Option<HubCustomer>, HubStoreError> {
        unimplemented!("stub")
    }

    #[allow(unused_variables)]
    pub async fn card(&self, token: &str) -> Result<Option<CardEntry>, HubStoreError> {
        unimplemented!("stub")
    }
}
