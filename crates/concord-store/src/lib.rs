//! Storage: a narrow key-value trait ([`Store`]), three implementations (sled, in-memory,
//! fault-injecting), and the typed, versioned layout concord keeps in it ([`StateStore`]).
//!
//! The trait is deliberately small — get, ordered range scan, atomic batch, flush — so the
//! durability argument in `docs/design.md` only has to be made once, about `apply` + `flush`.

mod error;
pub mod fault;
pub mod layout;
pub mod memory;
pub mod sled_store;
mod state;

pub use error::StoreError;
pub use fault::{FaultKind, FaultStore};
pub use layout::Tree;
pub use memory::MemoryStore;
pub use sled_store::SledStore;
pub use state::{
    decode_any_entry, decode_version, encode_version, Checkpoint, ConflictEntry, ConflictSideEntry,
    DigestEntry, EntityParts, MatchEntry, OutboxEntry, PeerEntry, RunLogEntry, StateStore,
    VersionMeta, WaitingEntry, FORMAT_VERSION,
};

/// A set of writes applied atomically: all or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub(crate) ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }
    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn ops(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.ops
    }
}

/// The storage backend. Keys and values are bytes; keys sort bytewise.
pub trait Store: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Calls `f` for each entry with `start <= key < end` (no `end`: to the last key) in key
    /// order, until `f` returns false.
    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError>;

    /// Applies every write of the batch, or none of them. Not yet durable: see [`Store::flush`].
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;

    /// Makes everything applied so far durable before returning.
    fn flush(&self) -> Result<(), StoreError>;

    /// A checkpoint: atomic, and durable when it returns.
    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        self.apply(batch)?;
        self.flush()
    }
}

/// The first key after every key that starts with `prefix` (`None`: no such key).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Scans every entry whose key starts with `prefix`.
pub fn scan_prefix(
    store: &dyn Store,
    prefix: &[u8],
    f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> Result<(), StoreError> {
    let end = prefix_end(prefix);
    store.scan(prefix, end.as_deref(), f)
}

#[cfg(test)]
mod tests;

/// Encodes a head/snapshot entry value (seed generation for the fuzz corpus).
#[doc(hidden)]
pub fn encode_version_for_fuzz(v: &concord_model::model::Version, out: &mut Vec<u8>) {
    state::encode_version(v, out)
}
