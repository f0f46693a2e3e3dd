//! The typed store: concord's state on top of any [`Store`], versioned entry by entry.

use super::layout::{self, show_key, Tree};
use super::{scan_prefix, Batch, Store, StoreError};
use concord_model::core::dots::FieldDots;
use concord_model::model::varint;
use concord_model::model::{
    canonical, ContentHash, EntityId, InstanceId, Key, SystemId, Timestamp, VectorClock, Version,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The store format this build reads and writes. Version 2 added per-field origins to version
/// entries (flag bit 3); a version 1 store is upgraded on open (its entries are valid version 2
/// entries, so only the marker changes). A store of a later version is refused.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest store format this build opens (and upgrades).
pub const OLDEST_FORMAT: u32 = 1;
/// The largest bincode entry (outbox, conflict, run log) the decoder will allocate for.
const ENTRY_LIMIT: usize = 16 << 20;
/// Version byte that starts every entry value.
const ENTRY_V1: u8 = 1;

const F_TOMB: u8 = 1;
const F_MODSTAMP: u8 = 2;
const F_ORIGIN: u8 = 4;
/// Per-field origins follow the origin: varint count, then per field (name order) varint
/// length + name, varint length + system.
const F_FIELD_ORIGINS: u8 = 8;

fn corrupt(key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tree: Tree::of_key(key).unwrap_or(Tree::Meta),
        key: show_key(key),
        reason: reason.into(),
    }
}

/// Encodes a head or snapshot version.
pub fn encode_version(v: &Version, out: &mut Vec<u8>) {
    encode_version_with(v, true, out)
}

/// Encodes a version; without `origins` its per-field origins are left out (a snapshot says
/// what a system holds, not where each value came from).
fn encode_version_with(v: &Version, origins: bool, out: &mut Vec<u8>) {
    let origins = origins && !v.field_origins.is_empty();
    out.push(ENTRY_V1);
    let mut flags = 0;
    if v.content.is_none() {
        flags |= F_TOMB;
    }
    if v.modstamp.is_some() {
        flags |= F_MODSTAMP;
    }
    if v.origin.is_some() {
        flags |= F_ORIGIN;
    }
    if origins {
        flags |= F_FIELD_ORIGINS;
    }
    out.push(flags);
    if let Some(h) = &v.hash {
        out.extend_from_slice(&h.0);
    }
    v.clock.encode_into(out);
    if let Some(m) = v.modstamp {
        varint::put_u64(out, varint::zigzag64(m.millis()));
    }
    if let Some(o) = &v.origin {
        varint::put_u64(out, o.as_str().len() as u64);
        out.extend_from_slice(o.as_str().as_bytes());
    }
    if origins {
        varint::put_u64(out, v.field_origins.len() as u64);
        for (name, sys) in &v.field_origins {
            for part in [&**name, sys.as_str()] {
                varint::put_u64(out, part.len() as u64);
                out.extend_from_slice(part.as_bytes());
            }
        }
    }
    if let Some(c) = &v.content {
        canonical::encode_into(c, out);
    }
}

/// The cheap part of a version entry: no field decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMeta {
    pub hash: Option<ContentHash>,
    pub clock: VectorClock,
    pub modstamp: Option<Timestamp>,
    pub origin: Option<SystemId>,
    pub field_origins: concord_model::model::FieldOrigins,
}

fn decode_version_parts<'a>(
    key: &[u8],
    b: &'a [u8],
) -> Result<(VersionMeta, &'a [u8]), StoreError> {
    let Some((&ver, rest)) = b.split_first() else {
        return Err(corrupt(key, "empty value"));
    };
    if ver != ENTRY_V1 {
        return Err(corrupt(key, format!("unknown entry version {ver}")));
    }
    let Some((&flags, mut rest)) = rest.split_first() else {
        return Err(corrupt(key, "truncated flags"));
    };
    if flags & !(F_TOMB | F_MODSTAMP | F_ORIGIN | F_FIELD_ORIGINS) != 0 {
        return Err(corrupt(key, format!("unknown flags 0x{flags:02x}")));
    }
    let hash = if flags & F_TOMB == 0 {
        if rest.len() < 32 {
            return Err(corrupt(key, "truncated hash"));
        }
        let mut h = [0u8; 32];
        h.copy_from_slice(&rest[..32]);
        rest = &rest[32..];
        Some(ContentHash(h))
    } else {
        None
    };
    let (clock, used) = VectorClock::decode(rest).map_err(|e| corrupt(key, e.to_string()))?;
    let mut pos = used;
    let modstamp = if flags & F_MODSTAMP != 0 {
        let m = varint::get_u64(rest, &mut pos).map_err(|_| corrupt(key, "bad modstamp"))?;
        Some(Timestamp(varint::unzigzag64(m)))
    } else {
        None
    };
    let origin = if flags & F_ORIGIN != 0 {
        let n = varint::get_u64(rest, &mut pos).map_err(|_| corrupt(key, "bad origin length"))?
            as usize;
        let raw = rest
            .get(pos..pos.saturating_add(n))
            .ok_or_else(|| corrupt(key, "truncated origin"))?;
        pos += n;
        let s = std::str::from_utf8(raw).map_err(|_| corrupt(key, "origin not UTF-8"))?;
        Some(SystemId::new(s).map_err(|e| corrupt(key, e.to_string()))?)
    } else {
        None
    };
    let mut field_origins = concord_model::model::FieldOrigins::new();
    if flags & F_FIELD_ORIGINS != 0 {
        let n = varint::get_u64(rest, &mut pos).map_err(|_| corrupt(key, "bad origin count"))?;
        if n == 0 {
            return Err(corrupt(key, "empty field origins"));
        }
        let mut text = || -> Result<&str, StoreError> {
            let len = varint::get_u64(rest, &mut pos)
                .map_err(|_| corrupt(key, "bad field origin length"))?
                as usize;
            let raw = rest
                .get(pos..pos.saturating_add(len))
                .ok_or_else(|| corrupt(key, "truncated field origin"))?;
            pos += len;
            std::str::from_utf8(raw).map_err(|_| corrupt(key, "field origin not UTF-8"))
        };
        let mut last: Option<String> = None;
        for _ in 0..n {
            let name = text()?.to_string();
            let sys = SystemId::new(text()?).map_err(|e| corrupt(key, e.to_string()))?;
            if last.as_ref().is_some_and(|l| *l >= name) {
                return Err(corrupt(key, "field origins out of order"));
            }
            if Some(&sys) == origin.as_ref() {
                return Err(corrupt(key, "field origin repeats the origin"));
            }
            last = Some(name.clone());
            field_origins.insert(std::sync::Arc::from(name), sys);
        }
    }
    let content = &rest[pos..];
    if hash.is_none() && !content.is_empty() {
        return Err(corrupt(key, "tombstone with content"));
    }
    Ok((
        VersionMeta {
            hash,
            clock,
            modstamp,
            origin,
            field_origins,
        },
        content,
    ))
}

/// Decodes a version entry, checking that the content matches its stored hash.
pub fn decode_version(key: &[u8], b: &[u8]) -> Result<Version, StoreError> {
    decode_version_with(key, b, true, &mut canonical::NameCache::new())
}

/// Decodes a version entry. Structure and canonical form are always checked; the content hash
/// is recomputed only with `verify_hash` (point reads and `verify`; bulk scans rely on the
/// structural checks and sled's own checksums).
pub(crate) fn decode_version_with(
    key: &[u8],
    b: &[u8],
    verify_hash: bool,
    names: &mut canonical::NameCache,
) -> Result<Version, StoreError> {
    let (meta, content) = decode_version_parts(key, b)?;
    let content = match meta.hash {
        None => None,
        Some(h) => {
            if verify_hash && ContentHash::of_bytes(content) != h {
                return Err(corrupt(key, "content does not match its hash"));
            }
            Some(canonical::decode_with(content, names).map_err(|e| corrupt(key, e.to_string()))?)
        }
    };
    Ok(Version {
        content,
        hash: meta.hash,
        clock: meta.clock,
        modstamp: meta.modstamp,
        origin: meta.origin,
        field_origins: meta.field_origins,
    })
}

/// The entity id that ends a snapshot / outbox / head key.
fn entity_of(k: &[u8]) -> Result<EntityId, StoreError> {
    layout::entity_suffix(k).ok_or_else(|| corrupt(k, "short key"))
}

fn encode_entry<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![ENTRY_V1];
    out.extend(
        bincode::serde::encode_to_vec(v, bincode::config::standard())
            .expect("in-memory encoding cannot fail"),
    );
    out
}

fn decode_entry<T: DeserializeOwned>(key: &[u8], b: &[u8]) -> Result<T, StoreError> {
    match b.split_first() {
        Some((&ENTRY_V1, rest)) => {
            // The limit caps what a corrupt length prefix can make the decoder allocate.
            let config = bincode::config::standard().with_limit::<ENTRY_LIMIT>();
            let (v, used) = bincode::serde::decode_from_slice(rest, config)
                .map_err(|e| corrupt(key, e.to_string()))?;
            if used != rest.len() {
                return Err(corrupt(key, "trailing bytes"));
            }
            Ok(v)
        }
        Some((&v, _)) => Err(corrupt(key, format!("unknown entry version {v}"))),
        None => Err(corrupt(key, "empty value")),
    }
}

/// The 8-byte name of a version in the history tree: its clock's hash.
fn clock_id(v: &Version) -> [u8; 8] {
    let mut b = Vec::new();
    v.clock.encode_into(&mut b);
    let mut id = [0u8; 8];
    id.copy_from_slice(&blake3::hash(&b).as_bytes()[..8]);
    id
}

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

/// Writes collected for one atomic, durable checkpoint.
#[derive(Debug, Default)]
pub struct Checkpoint {
    batch: Batch,
}

impl Checkpoint {
    pub fn put_head(&mut self, e: &EntityId, v: &Version) {
        let mut buf = Vec::with_capacity(128);
        encode_version(v, &mut buf);
        self.batch.put(layout::head(e), buf);
    }
    pub fn put_snapshot(&mut self, sys: &SystemId, e: &EntityId, v: &Version) {
        let mut buf = Vec::with_capacity(128);
        encode_version_with(v, false, &mut buf);
        self.batch.put(layout::snapshot(sys, e), buf);
    }
    /// Records the version about to be written to `sys` (write-ahead), so that a read after a
    /// lost confirmation recognises it.
    pub fn put_pending(&mut self, sys: &SystemId, e: &EntityId, v: &Version) {
        let mut buf = Vec::with_capacity(128);
        encode_version_with(v, false, &mut buf);
        self.batch.put(layout::pending(sys, e), buf);
    }
    pub fn delete_pending(&mut self, sys: &SystemId, e: &EntityId) {
        self.batch.delete(layout::pending(sys, e));
    }
    pub fn delete_snapshot(&mut self, sys: &SystemId, e: &EntityId) {
        self.batch.delete(layout::snapshot(sys, e));
    }
    /// Records both directions of the cross-reference.
    pub fn put_xref(&mut self, sys: &SystemId, native: &Key, e: &EntityId) {
        self.batch
            .put(layout::xref(sys, native.as_str()), e.0.to_vec());
        self.batch.put(
            layout::xref_rev(e, sys),
            native.as_str().as_bytes().to_vec(),
        );
    }
    pub fn delete_xref(&mut self, sys: &SystemId, native: &Key, e: &EntityId) {
        self.batch.delete(layout::xref(sys, native.as_str()));
        self.batch.delete(layout::xref_rev(e, sys));
    }
    /// Puts (or, with `None`, removes) a record waiting in `job` for a referenced record.
    pub fn put_waiting(
        &mut self,
        job: &str,
        sys: &SystemId,
        native: &Key,
        entry: Option<&WaitingEntry>,
    ) {
        let k = layout::waiting(job, sys, native.as_str());
        match entry {
            Some(e) => self.batch.put(k, encode_entry(e)),
            None => self.batch.delete(k),
        }
    }
    pub fn put_cursor(&mut self, job: &str, sys: &SystemId, cursor: &[u8]) {
        let mut v = vec![ENTRY_V1];
        v.extend_from_slice(cursor);
        self.batch.put(layout::cursor(job, sys), v);
    }
    pub fn outbox_put(&mut self, sys: &SystemId, e: &EntityId, entry: &OutboxEntry) {
        self.batch.put(layout::outbox(sys, e), encode_entry(entry));
    }
    pub fn outbox_remove(&mut self, sys: &SystemId, e: &EntityId) {
        self.batch.delete(layout::outbox(sys, e));
    }
    pub fn put_conflict(&mut self, c: &ConflictEntry) {
        let e = EntityId(c.entity);
        self.batch
            .put(layout::conflict(&e, c.field.as_deref()), encode_entry(c));
    }
    pub fn remove_conflict(&mut self, e: &EntityId, field: Option<&str>) {
        self.batch.delete(layout::conflict(e, field));
    }
    pub fn put_match(&mut self, job: &str, hash: &[u8; 32], m: &MatchEntry) {
        self.batch
            .put(layout::match_key(job, hash), encode_entry(m));
    }
    pub fn delete_match(&mut self, job: &str, hash: &[u8; 32]) {
        self.batch.delete(layout::match_key(job, hash));
    }
    pub fn put_match_rev(&mut self, job: &str, sys: &SystemId, native: &Key, hash: &[u8; 32]) {
        self.batch
            .put(layout::match_rev(job, sys, native.as_str()), hash.to_vec());
    }
    pub fn delete_match_rev(&mut self, job: &str, sys: &SystemId, native: &Key) {
        self.batch
            .delete(layout::match_rev(job, sys, native.as_str()));
    }
    /// Keeps `v` among the exchanged versions of `e` (see [`StateStore::history_of`]).
    pub fn put_history(&mut self, e: &EntityId, v: &Version) {
        let mut buf = Vec::with_capacity(128);
        encode_version(v, &mut buf);
        self.batch.put(layout::history(e, &clock_id(v)), buf);
    }
    pub fn delete_history(&mut self, e: &EntityId, v: &Version) {
        self.batch.delete(layout::history(e, &clock_id(v)));
    }
    pub fn put_digest(&mut self, sys: &SystemId, e: &EntityId, d: &DigestEntry) {
        self.batch.put(layout::digest(sys, e), d.encode().to_vec());
    }
    /// Records the field dots of `v`, the entity's version last exchanged with a peer.
    pub fn put_dots(&mut self, e: &EntityId, v: &Version, dots: &FieldDots) {
        let mut ver = Vec::with_capacity(128);
        encode_version(v, &mut ver);
        let mut buf = Vec::with_capacity(ver.len() + 64);
        varint::put_u64(&mut buf, ver.len() as u64);
        buf.extend_from_slice(&ver);
        dots.encode_into(&mut buf);
        self.batch.put(layout::dots(e), buf);
    }
    /// What the remembered digests of `sys` were computed under (columns, hashing, mapping):
    /// digests made under another are not compared.
    pub fn put_digest_fingerprint(&mut self, sys: &SystemId, fingerprint: &str) {
        self.batch.put(
            layout::meta(&format!("digest-fingerprint:{sys}")),
            fingerprint.as_bytes().to_vec(),
        );
    }
    pub fn delete_digest(&mut self, sys: &SystemId, e: &EntityId) {
        self.batch.delete(layout::digest(sys, e));
    }
    pub fn put_peer(&mut self, instance: &InstanceId, p: &PeerEntry) {
        self.batch
            .put(layout::peer(instance.as_str()), encode_entry(p));
    }
    pub fn log_run(&mut self, r: &RunLogEntry) {
        self.batch
            .put(layout::runlog(r.started_ms, &r.job), encode_entry(r));
    }
    /// Appends another checkpoint's writes (applied after this one's).
    pub fn extend(&mut self, other: Checkpoint) {
        self.batch.ops.extend(other.batch.ops);
    }
    pub fn len(&self) -> usize {
        self.batch.len()
    }
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

/// concord's state in a [`Store`].
#[derive(Clone)]
pub struct StateStore {
    store: Arc<dyn Store>,
    instance: InstanceId,
    /// Waiting-record changes a read staged (per job and system), in memory until the pass
    /// commits them with the read's checkpoint or drops them with a read that failed. Shared by
    /// the clones of one state.
    staged: Arc<std::sync::Mutex<StagedWaiting>>,
}

type StagedWaiting = BTreeMap<(String, SystemId), BTreeMap<Key, Option<WaitingEntry>>>;

const META_FORMAT: &str = "format";
const META_INSTANCE: &str = "instance";

impl StateStore {
    /// Opens the state in `store` for `instance`. An empty store is initialised (format marker and
    /// instance, flushed); a store with another format version, another instance, or data without
    /// a marker is refused and left untouched.
    pub fn open(store: Arc<dyn Store>, instance: InstanceId) -> Result<Self, StoreError> {
        let fkey = layout::meta(META_FORMAT);
        match store.get(&fkey)? {
            Some(v) => {
                let raw: [u8; 4] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt(&fkey, "format marker is not 4 bytes"))?;
                let found = u32::from_be_bytes(raw);
                if !(OLDEST_FORMAT..=FORMAT_VERSION).contains(&found) {
                    return Err(StoreError::UnsupportedFormat {
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                let ikey = layout::meta(META_INSTANCE);
                let inst = store
                    .get(&ikey)?
                    .ok_or_else(|| corrupt(&ikey, "missing instance name"))?;
                let inst =
                    String::from_utf8(inst).map_err(|_| corrupt(&ikey, "instance not UTF-8"))?;
                if inst != instance.as_str() {
                    return Err(StoreError::WrongInstance {
                        found: inst,
                        expected: instance.to_string(),
                    });
                }
                if found < FORMAT_VERSION {
                    // 1 → 2: nothing to rewrite; the marker says an older build must not open it
                    // (it would refuse the new entries as corrupt).
                    let mut b = Batch::new();
                    b.put(fkey, FORMAT_VERSION.to_be_bytes().to_vec());
                    store.commit(b)?;
                    tracing::info!(from = found, to = FORMAT_VERSION, "store format upgraded");
                }
            }
            None => {
                let mut any = false;
                store.scan(&[], None, &mut |_, _| {
                    any = true;
                    false
                })?;
                if any {
                    return Err(StoreError::NotAConcordStore("the store".into()));
                }
                let mut b = Batch::new();
                b.put(fkey, FORMAT_VERSION.to_be_bytes().to_vec());
                b.put(
                    layout::meta(META_INSTANCE),
                    instance.as_str().as_bytes().to_vec(),
                );
                store.commit(b)?;
            }
        }
        Ok(StateStore {
            store,
            instance,
            staged: Default::default(),
        })
    }

    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    pub fn raw(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint::default()
    }

    /// Applies the checkpoint atomically and flushes it to disk before returning.
    pub fn commit(&self, cp: Checkpoint) -> Result<(), StoreError> {
        if cp.is_empty() {
            return Ok(());
        }
        self.store.commit(cp.batch)
    }

    /// Applies without flushing (for non-critical entries, e.g. retry counters).
    pub fn apply(&self, cp: Checkpoint) -> Result<(), StoreError> {
        self.store.apply(cp.batch)
    }

    fn get_version(&self, key: Vec<u8>) -> Result<Option<Version>, StoreError> {
        match self.store.get(&key)? {
            None => Ok(None),
            Some(b) => decode_version(&key, &b).map(Some),
        }
    }

    pub fn head(&self, e: &EntityId) -> Result<Option<Version>, StoreError> {
        self.get_version(layout::head(e))
    }

    pub fn snapshot(&self, sys: &SystemId, e: &EntityId) -> Result<Option<Version>, StoreError> {
        self.get_version(layout::snapshot(sys, e))
    }

    /// The version last sent to `sys` whose success is not yet confirmed.
    pub fn pending(&self, sys: &SystemId, e: &EntityId) -> Result<Option<Version>, StoreError> {
        self.get_version(layout::pending(sys, e))
    }

    pub fn entity_for(&self, sys: &SystemId, native: &Key) -> Result<Option<EntityId>, StoreError> {
        let key = layout::xref(sys, native.as_str());
        match self.store.get(&key)? {
            None => Ok(None),
            Some(b) => {
                let raw: [u8; 16] = b
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt(&key, "entity id is not 16 bytes"))?;
                Ok(Some(EntityId(raw)))
            }
        }
    }

    pub fn native_key(&self, e: &EntityId, sys: &SystemId) -> Result<Option<Key>, StoreError> {
        let key = layout::xref_rev(e, sys);
        match self.store.get(&key)? {
            None => Ok(None),
            Some(b) => Ok(Some(Key::new(
                String::from_utf8(b).map_err(|_| corrupt(&key, "native key not UTF-8"))?,
            ))),
        }
    }

    pub fn cursor(&self, job: &str, sys: &SystemId) -> Result<Option<Vec<u8>>, StoreError> {
        let key = layout::cursor(job, sys);
        match self.store.get(&key)? {
            None => Ok(None),
            Some(b) => match b.split_first() {
                Some((&ENTRY_V1, rest)) => Ok(Some(rest.to_vec())),
                Some((&v, _)) => Err(corrupt(&key, format!("unknown entry version {v}"))),
                None => Err(corrupt(&key, "empty value")),
            },
        }
    }

    /// Scans `prefix`, decoding each entry with `decode`, until `f` returns false; the first
    /// entry that does not decode stops the scan and is the error.
    fn scan_decoded<T>(
        &self,
        prefix: &[u8],
        mut decode: impl FnMut(&[u8], &[u8]) -> Result<T, StoreError>,
        mut f: impl FnMut(T) -> bool,
    ) -> Result<(), StoreError> {
        let mut failure = None;
        scan_prefix(self.raw(), prefix, &mut |k, v| match decode(k, v) {
            Ok(x) => f(x),
            Err(e) => {
                failure = Some(e);
                false
            }
        })?;
        failure.map_or(Ok(()), Err)
    }

    /// Records of `sys` waiting in `job` for a referenced record: (native key, entry), in key
    /// order; what a read of this pass staged counts (see [`StateStore::stage_waiting`]).
    pub fn waiting(
        &self,
        job: &str,
        sys: &SystemId,
    ) -> Result<Vec<(Key, WaitingEntry)>, StoreError> {
        let prefix = layout::waiting_prefix(job, sys);
        let mut out = Vec::new();
        self.scan_decoded(
            &prefix,
            |k, v| {
                let key = std::str::from_utf8(&k[prefix.len()..])
                    .map_err(|_| corrupt(k, "native key not UTF-8"))?;
                Ok((Key::new(key), decode_entry::<WaitingEntry>(k, v)?))
            },
            |x| {
                out.push(x);
                true
            },
        )?;
        let staged = self.staged.lock().expect("staged waiting records");
        if let Some(m) = staged.get(&(job.to_string(), sys.clone())) {
            let mut all: BTreeMap<Key, WaitingEntry> = out.into_iter().collect();
            for (k, w) in m {
                match w {
                    Some(w) => all.insert(k.clone(), w.clone()),
                    None => all.remove(k),
                };
            }
            out = all.into_iter().collect();
        }
        Ok(out)
    }

    /// Stages a waiting record (or, with `None`, its removal) read by a pass: nothing is
    /// written; the pass moves what it staged into its checkpoint when the read completes
    /// ([`StateStore::take_staged_waiting`], [`Checkpoint::put_waiting`]), so a waiting record is
    /// durable in the same commit as the cursor that moves past it, and a read that failed
    /// leaves nothing.
    pub fn stage_waiting(
        &self,
        job: &str,
        sys: &SystemId,
        native: &Key,
        entry: Option<WaitingEntry>,
    ) -> Result<(), StoreError> {
        let at = (job.to_string(), sys.clone());
        let mut staged = self.staged.lock().expect("staged waiting records");
        let known = staged.get(&at).is_some_and(|m| m.contains_key(native));
        // Nothing to remove (the common case: a record that never waited): nothing staged.
        if entry.is_none()
            && !known
            && self
                .store
                .get(&layout::waiting(job, sys, native.as_str()))?
                .is_none()
        {
            return Ok(());
        }
        staged.entry(at).or_default().insert(native.clone(), entry);
        Ok(())
    }

    /// Takes what reads staged for `job` and `sys` (see [`StateStore::stage_waiting`]).
    pub fn take_staged_waiting(
        &self,
        job: &str,
        sys: &SystemId,
    ) -> Vec<(Key, Option<WaitingEntry>)> {
        self.staged
            .lock()
            .expect("staged waiting records")
            .remove(&(job.to_string(), sys.clone()))
            .map(|m| m.into_iter().collect())
            .unwrap_or_default()
    }

    /// The match entry of `hash` in `job`.
    pub fn match_entry(
        &self,
        job: &str,
        hash: &[u8; 32],
    ) -> Result<Option<MatchEntry>, StoreError> {
        let k = layout::match_key(job, hash);
        match self.store.get(&k)? {
            Some(v) => decode_entry(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    /// The match hash a record of `sys` was last filed under in `job`.
    pub fn match_of(
        &self,
        job: &str,
        sys: &SystemId,
        native: &Key,
    ) -> Result<Option<[u8; 32]>, StoreError> {
        let k = layout::match_rev(job, sys, native.as_str());
        match self.store.get(&k)? {
            Some(v) => {
                let h: [u8; 32] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt(&k, "match hash is not 32 bytes"))?;
                Ok(Some(h))
            }
            None => Ok(None),
        }
    }

    pub fn outbox(
        &self,
        sys: &SystemId,
        limit: usize,
    ) -> Result<Vec<(EntityId, OutboxEntry)>, StoreError> {
        let mut out = Vec::new();
        self.scan_decoded(
            &layout::system_prefix(Tree::Outbox, sys),
            |k, v| Ok((entity_of(k)?, decode_entry::<OutboxEntry>(k, v)?)),
            |x| {
                out.push(x);
                out.len() < limit
            },
        )?;
        Ok(out)
    }

    pub fn outbox_len(&self, sys: &SystemId) -> Result<u64, StoreError> {
        let mut n = 0;
        scan_prefix(
            self.raw(),
            &layout::system_prefix(Tree::Outbox, sys),
            &mut |_, _| {
                n += 1;
                true
            },
        )?;
        Ok(n)
    }

    /// Calls `f` for each snapshot of `sys` with the entity and its decoded version.
    pub fn scan_snapshots(
        &self,
        sys: &SystemId,
        f: &mut dyn FnMut(EntityId, Version) -> bool,
    ) -> Result<(), StoreError> {
        let mut names = canonical::NameCache::new();
        self.scan_decoded(
            &layout::system_prefix(Tree::Snapshot, sys),
            |k, v| Ok((entity_of(k)?, decode_version_with(k, v, false, &mut names)?)),
            |(e, ver)| f(e, ver),
        )
    }

    /// Writes sent to `sys` without confirmation that created nothing concord knows of yet
    /// (a pending version and no cross-reference): creates whose outcome is unknown, as
    /// (entity, the version sent).
    pub fn pending_creates(&self, sys: &SystemId) -> Result<Vec<(EntityId, Version)>, StoreError> {
        let mut all = Vec::new();
        self.scan_decoded(
            &layout::system_prefix(Tree::Pending, sys),
            |k, v| Ok((entity_of(k)?, decode_version(k, v)?)),
            |x| {
                all.push(x);
                true
            },
        )?;
        let mut out = Vec::new();
        for (e, v) in all {
            if v.content.is_some() && self.native_key(&e, sys)?.is_none() {
                out.push((e, v));
            }
        }
        Ok(out)
    }

    /// The entities whose snapshot in `sys` holds a record (not a tombstone) and that are not
    /// in `seen`: after a complete scan of `sys`, the records that are gone from it.
    pub fn unseen_snapshots(
        &self,
        sys: &SystemId,
        seen: &std::collections::BTreeSet<EntityId>,
    ) -> Result<Vec<EntityId>, StoreError> {
        let mut gone = Vec::new();
        self.scan_snapshot_meta(sys, &mut |e, m| {
            if m.hash.is_some() && !seen.contains(&e) {
                gone.push(e);
            }
            true
        })?;
        Ok(gone)
    }

    /// Like [`StateStore::scan_snapshots`] but decodes only hash, clock and modstamp.
    pub fn scan_snapshot_meta(
        &self,
        sys: &SystemId,
        f: &mut dyn FnMut(EntityId, VersionMeta) -> bool,
    ) -> Result<(), StoreError> {
        self.scan_decoded(
            &layout::system_prefix(Tree::Snapshot, sys),
            |k, v| Ok((entity_of(k)?, decode_version_parts(k, v)?.0)),
            |(e, m)| f(e, m),
        )
    }

    /// The version of `e` last exchanged with a peer and its field dots.
    pub fn dots(&self, e: &EntityId) -> Result<Option<(Version, FieldDots)>, StoreError> {
        let k = layout::dots(e);
        match self.store.get(&k)? {
            None => Ok(None),
            Some(b) => decode_dots(&k, &b).map(Some),
        }
    }

    /// See [`Checkpoint::put_digest_fingerprint`].
    pub fn digest_fingerprint(&self, sys: &SystemId) -> Result<Option<String>, StoreError> {
        let k = layout::meta(&format!("digest-fingerprint:{sys}"));
        Ok(self
            .store
            .get(&k)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// The remembered system-side digests of `sys`'s records, in entity order.
    pub fn scan_digests(
        &self,
        sys: &SystemId,
        f: &mut dyn FnMut(EntityId, DigestEntry) -> bool,
    ) -> Result<(), StoreError> {
        self.scan_decoded(
            &layout::system_prefix(Tree::Digest, sys),
            |k, v| Ok((entity_of(k)?, DigestEntry::decode(k, v)?)),
            |(e, d)| f(e, d),
        )
    }

    /// Like [`StateStore::scan_snapshot_meta`] but decodes only the content hash (`None`: a
    /// tombstone): the cheapest pass over a system's snapshots.
    pub fn scan_snapshot_hashes(
        &self,
        sys: &SystemId,
        f: &mut dyn FnMut(EntityId, Option<ContentHash>) -> bool,
    ) -> Result<(), StoreError> {
        self.scan_decoded(
            &layout::system_prefix(Tree::Snapshot, sys),
            |k, v| {
                let e = entity_of(k)?;
                match v {
                    [ENTRY_V1, flags, rest @ ..]
                        if flags & !(F_TOMB | F_MODSTAMP | F_ORIGIN | F_FIELD_ORIGINS) == 0 =>
                    {
                        if flags & F_TOMB != 0 {
                            Ok((e, None))
                        } else {
                            let h: [u8; 32] = rest
                                .get(..32)
                                .and_then(|h| h.try_into().ok())
                                .ok_or_else(|| corrupt(k, "truncated hash"))?;
                            Ok((e, Some(ContentHash(h))))
                        }
                    }
                    _ => Err(corrupt(k, "bad version entry header")),
                }
            },
            |(e, h)| f(e, h),
        )
    }

    /// Every entity with a head, in id order.
    pub fn scan_heads(
        &self,
        f: &mut dyn FnMut(EntityId, Version) -> bool,
    ) -> Result<(), StoreError> {
        let mut names = canonical::NameCache::new();
        self.scan_decoded(
            &[Tree::Head.prefix()],
            |k, v| Ok((entity_of(k)?, decode_version_with(k, v, false, &mut names)?)),
            |(e, ver)| f(e, ver),
        )
    }

    fn collect<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        self.scan_decoded(prefix, decode_entry, |x| {
            out.push(x);
            true
        })?;
        Ok(out)
    }

    /// What this instance knows of peer `instance` (bundle exchange).
    pub fn peer(&self, instance: &InstanceId) -> Result<PeerEntry, StoreError> {
        let k = layout::peer(instance.as_str());
        match self.store.get(&k)? {
            None => Ok(PeerEntry::default()),
            Some(b) => decode_entry(&k, &b),
        }
    }

    /// The versions of an entity exchanged with peers (bundle merge bases).
    pub fn history_of(&self, e: &EntityId) -> Result<Vec<Version>, StoreError> {
        let mut out = Vec::new();
        self.scan_decoded(&layout::history_prefix(e), decode_version, |v| {
            out.push(v);
            true
        })?;
        Ok(out)
    }

    /// Every cross-reference of an entity: (system, native key).
    pub fn xrefs_of(&self, e: &EntityId) -> Result<Vec<(SystemId, Key)>, StoreError> {
        let prefix = layout::xref_rev_prefix(e);
        let mut out = Vec::new();
        let mut bad = None;
        self.store.scan(&prefix, None, &mut |k, v| {
            if !k.starts_with(&prefix) {
                return false;
            }
            let sys = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|s| SystemId::new(s).ok());
            match (sys, std::str::from_utf8(v)) {
                (Some(s), Ok(n)) => out.push((s, Key::new(n))),
                _ => {
                    bad = Some(k.to_vec());
                    return false;
                }
            }
            true
        })?;
        match bad {
            Some(k) => Err(corrupt(&k, "bad cross-reference")),
            None => Ok(out),
        }
    }

    pub fn conflicts(&self) -> Result<Vec<ConflictEntry>, StoreError> {
        self.collect(&[Tree::Conflict.prefix()])
    }

    pub fn conflicts_of(&self, e: &EntityId) -> Result<Vec<ConflictEntry>, StoreError> {
        self.collect(&layout::conflict_prefix(e))
    }

    pub fn run_log(&self) -> Result<Vec<RunLogEntry>, StoreError> {
        self.collect(&[Tree::RunLog.prefix()])
    }

    /// Reads every entry of every tree and decodes it: the first corrupt one is the error.
    pub fn verify(&self) -> Result<u64, StoreError> {
        let mut n = 0u64;
        self.scan_decoded(&[], decode_any_entry, |()| {
            n += 1;
            true
        })?;
        Ok(n)
    }
}

fn decode_dots(k: &[u8], b: &[u8]) -> Result<(Version, FieldDots), StoreError> {
    let mut pos = 0;
    let n = varint::get_u64(b, &mut pos).map_err(|_| corrupt(k, "bad version length"))?;
    let end = pos
        .checked_add(usize::try_from(n).unwrap_or(usize::MAX))
        .filter(|e| *e <= b.len())
        .ok_or_else(|| corrupt(k, "version length larger than the entry"))?;
    let v = decode_version(k, &b[pos..end])?;
    let mut pos = end;
    let dots = FieldDots::decode(b, &mut pos).map_err(|e| corrupt(k, e.to_string()))?;
    if pos != b.len() {
        return Err(corrupt(k, "trailing bytes after the field dots"));
    }
    Ok((v, dots))
}

/// Decodes a raw store entry by its tree (fuzzing and `verify`): never panics.
pub fn decode_any_entry(k: &[u8], v: &[u8]) -> Result<(), StoreError> {
    match Tree::of_key(k) {
        None => Err(corrupt(k, "key outside every tree")),
        Some(Tree::Head) | Some(Tree::Snapshot) | Some(Tree::Pending) | Some(Tree::History) => {
            decode_version(k, v).map(|_| ())
        }
        Some(Tree::Outbox) => decode_entry::<OutboxEntry>(k, v).map(|_| ()),
        Some(Tree::Conflict) => decode_entry::<ConflictEntry>(k, v).map(|_| ()),
        Some(Tree::RunLog) => decode_entry::<RunLogEntry>(k, v).map(|_| ()),
        Some(Tree::Match) => decode_entry::<MatchEntry>(k, v).map(|_| ()),
        Some(Tree::Waiting) => decode_entry::<WaitingEntry>(k, v).map(|_| ()),
        Some(Tree::Peer) => decode_entry::<PeerEntry>(k, v).map(|_| ()),
        Some(Tree::Digest) => DigestEntry::decode(k, v).map(|_| ()),
        Some(Tree::Dots) => decode_dots(k, v).map(|_| ()),
        Some(Tree::MatchRev) if v.len() != 32 => Err(corrupt(k, "match hash is not 32 bytes")),
        Some(Tree::Xref) if v.len() != 16 => Err(corrupt(k, "entity id is not 16 bytes")),
        Some(Tree::XrefRev) if std::str::from_utf8(v).is_err() => {
            Err(corrupt(k, "native key not UTF-8"))
        }
        Some(Tree::Cursor) if v.first() != Some(&ENTRY_V1) => {
            Err(corrupt(k, "unknown entry version"))
        }
        _ => Ok(()),
    }
}
