//! An in-memory store for tests and the demo. `flush` is a no-op: nothing survives the process.

use super::{Batch, Store, StoreError};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

#[derive(Debug, Default)]
pub struct MemoryStore {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
    /// A copy of every entry (for tests comparing states).
    pub fn dump(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.map.read().expect("lock").clone()
    }
}

pub(crate) fn scan_map(
    map: &BTreeMap<Vec<u8>, Vec<u8>>,
    start: &[u8],
    end: Option<&[u8]>,
    f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) {
    let upper = match end {
        Some(e) => Bound::Excluded(e),
        None => Bound::Unbounded,
    };
    for (k, v) in map.range::<[u8], _>((Bound::Included(start), upper)) {
        if !f(k, v) {
            break;
        }
    }
}

pub(crate) fn apply_map(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, batch: Batch) {
    for (k, v) in batch.ops {
        match v {
            Some(v) => {
                map.insert(k, v);
            }
            None => {
                map.remove(&k);
            }
        }
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.read().expect("lock").get(key).cloned())
    }
    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        scan_map(&self.map.read().expect("lock"), start, end, f);
        Ok(())
    }
    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        apply_map(&mut self.map.write().expect("lock"), batch);
        Ok(())
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
