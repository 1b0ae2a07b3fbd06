//! STUB (replaced by the kioskside branch): the kiosk's store as the sync client sees it.

use std::path::Path;

use kiosk_sync::client::{FrozenBatch, KioskSide, SideError};
use kiosk_sync::wire::{BatchReply, RosterPage};

use crate::store::{ReadDb, Writer};

#[derive(Debug, Clone)]
pub struct SyncSide {
    #[allow(dead_code)]
    writer: Writer,
    #[allow(dead_code)]
    db: ReadDb,
}

impl SyncSide {
    pub fn new(writer: Writer, db: ReadDb) -> SyncSide {
        SyncSide { writer, db }
    }
}

impl KioskSide for SyncSide {
    async fn next_batch(&self, _: usize, _: usize) -> Result<Option<FrozenBatch>, SideError> {
        unimplemented!()
    }
    async fn settle(
        &self,
        _: &FrozenBatch,
        _: &BatchReply,
        _: jiff::Timestamp,
    ) -> Result<(), SideError> {
        unimplemented!()
    }
    async fn discard_batch(&self, _: &FrozenBatch) -> Result<(), SideError> {
        unimplemented!()
    }
    async fn roster_cursor(&self) -> Result<Option<u64>, SideError> {
        unimplemented!()
    }
    async fn apply_roster_page(&self, _: RosterPage, _: jiff::Timestamp) -> Result<(), SideError> {
        unimplemented!()
    }
    async fn replace_roster(&self, _: &Path, _: jiff::Timestamp) -> Result<u64, SideError> {
        unimplemented!()
    }
}
