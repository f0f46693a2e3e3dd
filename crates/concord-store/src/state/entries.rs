//! The entry types kept besides versions (bincode 2, one version byte first).

use super::*;

/// What this instance knows of a peer instance it exchanges bundles with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// Numbers of the peer's bundles imported here, as sorted, disjoint inclusive ranges.
    pub imported: Vec<(u64, u64)>,
    /// Bundles made for the peer so far.
    pub exported: u64,
    /// Bundles made for the peer that it has not acknowledged yet: their number and what each
    /// carried (entity id, encoded version entry).
    pub unacked: Vec<(u64, Manifest)>,
}

/// What one bundle carried: entity ids and their encoded version entries.
pub type Manifest = Vec<([u8; 16], Vec<u8>)>;

/// A pending write of an entity's head to one system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub enqueued_ms: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// One side of a stored conflict; values in the canonical single-value encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictSideEntry {
    pub system: String,
    pub value: Vec<u8>,
    pub modstamp: Option<i64>,
}

/// A conflict waiting for (or decided by) a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictEntry {
    pub job: String,
    pub entity: [u8; 16],
    /// `None`: record-level (delete vs update).
    pub field: Option<String>,
    pub base: Vec<u8>,
    pub sides: Vec<ConflictSideEntry>,
    pub detected_ms: i64,
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLogEntry {
    pub job: String,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub status: String,
    pub counts: Vec<(String, u64)>,
    pub message: Option<String>,
}

/// Who carries one match hash in a job (correlate, aggregate): the entity it stands for once
/// matched, and, before that, the records of one system only that carry it (correlate keeps
/// nothing else of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchEntry {
    pub entity: Option<[u8; 16]>,
    /// (system, native key) of records seen on one side only.
    pub lonely: Vec<(String, String)>,
}

/// A record read while a record it references was not synced yet: kept until the reference
/// resolves (`native`: the record's native fields in the canonical encoding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingEntry {
    pub native: Vec<u8>,
    pub hint: Option<[u8; 16]>,
    pub modstamp: Option<i64>,
    pub reason: String,
}

/// A system's own hash of one record (hash-tree reconcile, `digest` tree): the hash of its key
/// (which bucket it falls in) and of its row, as the system computes them, remembered with the
/// first 8 bytes of the snapshot's content hash they were seen with. A snapshot that changed
/// since makes the entry stale: the record's digest is then unknown until looked at again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestEntry {
    pub key_hash: i64,
    pub row: i64,
    pub snapshot: [u8; 8],
}

impl DigestEntry {
    pub const LEN: usize = 24;
    pub fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.key_hash.to_be_bytes());
        out[8..16].copy_from_slice(&self.row.to_be_bytes());
        out[16..].copy_from_slice(&self.snapshot);
        out
    }
    pub fn decode(k: &[u8], b: &[u8]) -> Result<Self, StoreError> {
        if b.len() != Self::LEN {
            return Err(corrupt(k, "digest entry is not 24 bytes"));
        }
        let i = |r: std::ops::Range<usize>| i64::from_be_bytes(b[r].try_into().expect("8 bytes"));
        Ok(DigestEntry {
            key_hash: i(0..8),
            row: i(8..16),
            snapshot: b[16..].try_into().expect("8 bytes"),
        })
    }
    /// The snapshot-hash prefix a digest entry is valid for.
    pub fn snapshot_of(hash: &ContentHash) -> [u8; 8] {
        hash.0[..8].try_into().expect("8 bytes")
    }
}
