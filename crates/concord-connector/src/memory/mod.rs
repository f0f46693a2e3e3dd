//! An in-memory system: a table of records in this process. Used by the demo, the model-based
//! tests and as the reference for the connector compliance suite.
//!
//! It behaves like a system that keeps concord's entity id in an external-id column: creates
//! are idempotent by entity id. Reads are full scans (`complete`), so hard deletes are found.

mod read;
mod write;

use crate::ConnectorError;
use concord_model::model::{EntityId, Fields, Key, SystemId, Timestamp};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub fields: Fields,
    pub entity: Option<EntityId>,
    pub modstamp: Timestamp,
}

#[derive(Debug, Default)]
struct Table {
    rows: BTreeMap<Key, Row>,
    next_key: u64,
    clock_ms: i64,
}

/// An in-memory system of record.
#[derive(Debug)]
pub struct MemorySystem {
    system: SystemId,
    table: Mutex<Table>,
    page_size: usize,
    writes: AtomicU64,
    reads: AtomicU64,
    fail_next_calls: AtomicU64,
    /// Calls that still succeed before `fail_next_calls` applies.
    fail_after: AtomicU64,
}

impl MemorySystem {
    pub fn new(system: SystemId) -> Self {
        MemorySystem {
            system,
            table: Mutex::new(Table {
                clock_ms: 1_700_000_000_000,
                ..Table::default()
            }),
            page_size: 500,
            writes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            fail_next_calls: AtomicU64::new(0),
            fail_after: AtomicU64::new(0),
        }
    }

    /// Rows per read page.
    pub fn with_page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    fn tick(t: &mut Table) -> Timestamp {
        t.clock_ms += 1;
        Timestamp(t.clock_ms)
    }

    /// A user creates a record in this system (not through concord). Returns its key.
    pub fn user_create(&self, fields: Fields) -> Key {
        let mut t = self.table.lock().expect("lock");
        t.next_key += 1;
        let key = Key::new(format!("{}-{}", self.system, t.next_key));
        let modstamp = Self::tick(&mut t);
        t.rows.insert(
            key.clone(),
            Row {
                fields,
                entity: None,
                modstamp,
            },
        );
        key
    }

    /// A user replaces a record's content. False when the key is not there.
    pub fn user_update(&self, key: &Key, fields: Fields) -> bool {
        let mut t = self.table.lock().expect("lock");
        let modstamp = Self::tick(&mut t);
        match t.rows.get_mut(key) {
            Some(r) => {
                r.fields = fields;
                r.modstamp = modstamp;
                true
            }
            None => false,
        }
    }

    /// A user hard-deletes a record.
    pub fn user_delete(&self, key: &Key) -> bool {
        self.table.lock().expect("lock").rows.remove(key).is_some()
    }

    /// A copy of every row.
    pub fn rows(&self) -> BTreeMap<Key, Row> {
        self.table.lock().expect("lock").rows.clone()
    }

    /// Records written by concord so far (each create, update or delete counts one).
    pub fn write_count(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Read calls so far.
    pub fn read_count(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// Makes the next `n` calls (read or write) fail as if the system were unreachable.
    pub fn fail_next_calls(&self, n: u64) {
        self.fail_next_calls.store(n, Ordering::SeqCst);
    }

    /// Lets `ok` more calls succeed, then fails the `n` after them (a read cut off part-way).
    pub fn fail_calls_after(&self, ok: u64, n: u64) {
        self.fail_after.store(ok, Ordering::SeqCst);
        self.fail_next_calls.store(n, Ordering::SeqCst);
    }

    fn check_fault(&self) -> Result<(), ConnectorError> {
        let ok = self.fail_after.load(Ordering::SeqCst);
        if ok > 0 {
            self.fail_after.store(ok - 1, Ordering::SeqCst);
            return Ok(());
        }
        let n = self.fail_next_calls.load(Ordering::SeqCst);
        if n > 0 {
            self.fail_next_calls.store(n - 1, Ordering::SeqCst);
            return Err(ConnectorError {
                system: self.system.to_string(),
                object: "table".into(),
                message: "connection refused (injected)".into(),
                retryable: true,
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl crate::Connector for MemorySystem {
    fn system(&self) -> &SystemId {
        &self.system
    }

    async fn read(&self, cursor: Option<&[u8]>) -> Result<crate::ReadPage, ConnectorError> {
        self.check_fault()?;
        self.reads.fetch_add(1, Ordering::SeqCst);
        read::page(self, cursor)
    }

    async fn write(
        &self,
        ops: Vec<crate::WriteOp>,
    ) -> Result<Vec<crate::WriteResult>, ConnectorError> {
        self.check_fault()?;
        Ok(write::apply(self, ops))
    }

    async fn fetch(&self, keys: &[Key]) -> Result<Vec<crate::Change>, ConnectorError> {
        self.check_fault()?;
        let t = self.table.lock().expect("lock");
        Ok(keys
            .iter()
            .map(|k| {
                let row = t.rows.get(k);
                crate::Change {
                    key: k.clone(),
                    entity_hint: row.and_then(|r| r.entity),
                    fields: row.map(|r| r.fields.clone()),
                    modstamp: row.map(|r| r.modstamp),
                }
            })
            .collect())
    }
}
