//! A fault-injecting in-memory store for crash tests.
//!
//! It keeps two copies: what has been flushed (durable) and what has been applied (volatile).
//! A fault armed with [`FaultStore::arm`] fires on the N-th operation from then on:
//! - [`FaultKind::Error`]: that operation fails and changes nothing; later ones work;
//! - [`FaultKind::Crash`]: that operation fails and the store "dies": every later operation fails
//!   with [`StoreError::Crashed`] until [`FaultStore::restart`], which throws away everything
//!   not flushed — what a process kill does to a real store.

use super::memory::{apply_map, scan_map};
use super::{Batch, Store, StoreError};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Error,
    Crash,
}

#[derive(Debug, Default)]
struct Inner {
    durable: BTreeMap<Vec<u8>, Vec<u8>>,
    volatile: BTreeMap<Vec<u8>, Vec<u8>>,
    ops: u64,
    armed: Option<(u64, FaultKind)>,
    crashed: bool,
    faults_fired: u64,
}

#[derive(Debug, Default)]
pub struct FaultStore {
    inner: Mutex<Inner>,
}

impl FaultStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms a fault on the `after`-th operation from now (1 = the next one).
    pub fn arm(&self, after: u64, kind: FaultKind) {
        let mut i = self.inner.lock().expect("lock");
        i.armed = Some((i.ops + after.max(1), kind));
    }

    pub fn disarm(&self) {
        self.inner.lock().expect("lock").armed = None;
    }

    /// Simulates a process restart after a crash: unflushed data is lost, the fault is cleared.
    pub fn restart(&self) {
        let mut i = self.inner.lock().expect("lock");
        i.volatile = i.durable.clone();
        i.crashed = false;
        i.armed = None;
    }

    pub fn is_crashed(&self) -> bool {
        self.inner.lock().expect("lock").crashed
    }

    /// How many operations were attempted so far.
    pub fn ops(&self) -> u64 {
        self.inner.lock().expect("lock").ops
    }

    pub fn faults_fired(&self) -> u64 {
        self.inner.lock().expect("lock").faults_fired
    }

    /// The durable contents (what a restart would see).
    pub fn durable(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.inner.lock().expect("lock").durable.clone()
    }

    fn op<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Result<T, StoreError> {
        let mut i = self.inner.lock().expect("lock");
        if i.crashed {
            return Err(StoreError::Crashed);
        }
        i.ops += 1;
        if let Some((at, kind)) = i.armed {
            if i.ops >= at {
                i.armed = None;
                i.faults_fired += 1;
                if kind == FaultKind::Crash {
                    i.crashed = true;
                }
                return Err(StoreError::Injected { ops: i.ops });
            }
        }
        Ok(f(&mut i))
    }
}

impl Store for FaultStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.op(|i| i.volatile.get(key).cloned())
    }
    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.op(|i| scan_map(&i.volatile, start, end, f))
    }
    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        self.op(|i| apply_map(&mut i.volatile, batch))
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.op(|i| i.durable = i.volatile.clone())
    }
}
