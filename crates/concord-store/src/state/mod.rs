//! The typed store: concord's state on top of any [`Store`], versioned entry by entry.
//!
//! Files: `encoding` (the entry formats: versions, bincode entries, their decoders), `entries`
//! (the entry types), `checkpoint` (the writes of one atomic commit), and here the
//! [`StateStore`] itself.

mod checkpoint;
mod encoding;
mod entity;
mod entries;
mod migrate;

pub use checkpoint::Checkpoint;
pub(crate) use encoding::decode_version_with;
pub use encoding::{decode_any_entry, decode_version, encode_version, VersionMeta};
pub use entries::*;

use super::layout::{self, show_key, Tree};
use super::{scan_prefix, Batch, Store, StoreError};
use concord_model::core::dots::FieldDots;
use concord_model::model::varint;
use concord_model::model::{
    canonical, ContentHash, EntityId, InstanceId, Key, SystemId, Timestamp, VectorClock, Version,
};
use encoding::*;
use entity::{EntityEntry, EntityView};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The store format this build reads and writes. Version 2 added per-field origins to version
/// entries (flag bit 3); version 3 folds an entity's head, snapshots and reverse
/// cross-references into one entity entry, a snapshot equal to the head sharing its content.
/// Older stores are migrated on open (see `migrate.rs`); a store of a later version is refused.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest store format this build opens (and upgrades).
pub const OLDEST_FORMAT: u32 = 1;
/// concord's state in a [`Store`].
#[derive(Clone)]
pub struct StateStore {
    store: Arc<dyn Store>,
    instance: InstanceId,
    /// Waiting-record changes a read staged (per job and system), in memory until the pass
    /// commits them with the read's checkpoint or drops them with a read that failed. Shared by
    /// the clones of one state.
    staged: Arc<std::sync::Mutex<StagedWaiting>>,
    /// Held while a checkpoint's entity changes are folded into the stored entries and
    /// applied: two commits touching one entity never lose each other's changes.
    commit_lock: Arc<std::sync::Mutex<()>>,
}

/// What [`StateStore::entity_parts`] reads of an entity for one system.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityParts {
    pub head: Option<Version>,
    pub snapshot: Option<Version>,
    pub native: Option<Key>,
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
                // 1 → 2 changed no entry (version 1 entries are valid version 2 entries); 2 → 3
                // folds heads, snapshots and reverse cross-references into entity entries, in
                // batches, resuming where a run that stopped left off.
                if found < FORMAT_VERSION || migrate::in_progress(store.as_ref())? {
                    migrate::to_3(store.as_ref(), migrate::BATCH)?;
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
            commit_lock: Default::default(),
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
        self.write(cp, true)
    }

    /// Applies without flushing (for non-critical entries, e.g. retry counters).
    pub fn apply(&self, cp: Checkpoint) -> Result<(), StoreError> {
        self.write(cp, false)
    }

    /// Folds the checkpoint's entity changes into the stored entity entries and applies the
    /// whole as one batch. A stored entry that does not decode fails the commit, naming it, and
    /// nothing is written.
    fn write(&self, cp: Checkpoint, durable: bool) -> Result<(), StoreError> {
        if cp.is_empty() {
            return Ok(());
        }
        let _guard = self.commit_lock.lock().expect("commit lock");
        let mut batch = cp.batch;
        for (e, ops) in cp.entities {
            let key = layout::entity(&e);
            let mut entry = match self.store.get(&key)? {
                Some(b) => EntityEntry::decode(&key, &b)?,
                None => EntityEntry::default(),
            };
            ops.apply_to(&mut entry);
            match entry.encode(&key)? {
                Some(b) => batch.put(key, b),
                None => batch.delete(key),
            }
        }
        if durable {
            self.store.commit(batch)
        } else {
            self.store.apply(batch)
        }
    }

    /// Calls `f` with the entity's stored entry (`None`: the entity has none).
    fn with_entity<T>(
        &self,
        e: &EntityId,
        f: impl FnOnce(&[u8], Option<&EntityView>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let key = layout::entity(e);
        match self.store.get(&key)? {
            None => f(&key, None),
            Some(b) => {
                let view = EntityView::parse(&key, &b)?;
                f(&key, Some(&view))
            }
        }
    }

    pub fn head(&self, e: &EntityId) -> Result<Option<Version>, StoreError> {
        self.with_entity(e, |key, view| match view {
            None => Ok(None),
            Some(v) => v.head_version(key, true, &mut canonical::NameCache::new()),
        })
    }

    pub fn snapshot(&self, sys: &SystemId, e: &EntityId) -> Result<Option<Version>, StoreError> {
        self.with_entity(e, |key, view| match view {
            None => Ok(None),
            Some(v) => v.snapshot(key, sys.as_str(), true, &mut canonical::NameCache::new()),
        })
    }

    /// An entity's head and its snapshot in each of `systems` (in that order), in one read.
    pub fn head_and_snapshots(
        &self,
        e: &EntityId,
        systems: &[SystemId],
    ) -> Result<(Option<Version>, Vec<Option<Version>>), StoreError> {
        self.with_entity(e, |key, view| match view {
            None => Ok((None, vec![None; systems.len()])),
            Some(v) => {
                let mut names = canonical::NameCache::new();
                let head = v.head_version(key, true, &mut names)?;
                let snaps = systems
                    .iter()
                    .map(|s| v.snapshot_beside(key, s.as_str(), head.as_ref(), true, &mut names))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((head, snaps))
            }
        })
    }

    /// An entity's head, its snapshot in `sys` and its native key there, in one read, as they
    /// are once `cp` is committed (what `cp` changes of the entity wins over the store).
    pub fn entity_parts(
        &self,
        cp: Option<&Checkpoint>,
        e: &EntityId,
        sys: &SystemId,
    ) -> Result<EntityParts, StoreError> {
        let ops = cp.and_then(|cp| cp.entities.get(e));
        let sys_ops = ops.and_then(|o| o.systems.get(sys.as_str()));
        self.with_entity(e, |key, view| {
            let mut names = canonical::NameCache::new();
            let head = match ops.and_then(|o| o.head.as_deref()) {
                Some(h) => Some(decode_version_with(key, h, false, &mut names)?),
                None => match view {
                    Some(v) => v.head_version(key, true, &mut names)?,
                    None => None,
                },
            };
            let snapshot = match sys_ops.and_then(|s| s.snapshot.as_ref()) {
                Some(Some(b)) => Some(decode_version_with(key, b, false, &mut names)?),
                Some(None) => None,
                None => match view {
                    // The stored head, when the checkpoint does not replace it, is the one a
                    // shared snapshot shares.
                    Some(v) if ops.and_then(|o| o.head.as_ref()).is_none() => {
                        v.snapshot_beside(key, sys.as_str(), head.as_ref(), true, &mut names)?
                    }
                    Some(v) => v.snapshot(key, sys.as_str(), true, &mut names)?,
                    None => None,
                },
            };
            let native = match sys_ops.and_then(|s| s.native.as_ref()) {
                Some(n) => n.clone().map(Key::new),
                None => view
                    .and_then(|v| v.system(sys.as_str()))
                    .and_then(|s| s.native)
                    .map(Key::new),
            };
            Ok(EntityParts {
                head,
                snapshot,
                native,
            })
        })
    }

    /// Calls `f` for each entity entry, in entity order, until it returns false; an entry that
    /// does not decode stops the scan and is the error.
    fn scan_entities(
        &self,
        mut f: impl FnMut(&[u8], EntityId, &EntityView) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut failure = None;
        scan_prefix(self.raw(), &[Tree::Entity.prefix()], &mut |k, v| {
            let step =
                entity_of(k).and_then(|e| EntityView::parse(k, v).and_then(|view| f(k, e, &view)));
            match step {
                Ok(go) => go,
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        })?;
        failure.map_or(Ok(()), Err)
    }

    /// The version last sent to `sys` whose success is not yet confirmed.
    pub fn pending(&self, sys: &SystemId, e: &EntityId) -> Result<Option<Version>, StoreError> {
        let key = layout::pending(sys, e);
        match self.store.get(&key)? {
            None => Ok(None),
            Some(b) => decode_pending(&key, &b).map(|(v, _)| Some(v)),
        }
    }

    /// The entities with a version sent to `sys` whose success is not yet confirmed, and when
    /// each was sent (local clock; `None` for an entry stored before that was recorded).
    pub fn pending_entities(
        &self,
        sys: &SystemId,
    ) -> Result<BTreeMap<EntityId, Option<Timestamp>>, StoreError> {
        let mut out = BTreeMap::new();
        let mut bad = None;
        scan_prefix(
            self.raw(),
            &layout::system_prefix(Tree::Pending, sys),
            &mut |k, v| match entity_of(k).and_then(|e| Ok((e, split_pending(k, v)?.0))) {
                Ok((e, sent_at)) => {
                    out.insert(e, sent_at);
                    true
                }
                Err(e) => {
                    bad = Some(e);
                    false
                }
            },
        )?;
        bad.map_or(Ok(out), Err)
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
        self.with_entity(e, |_, view| {
            Ok(view
                .and_then(|v| v.system(sys.as_str()))
                .and_then(|s| s.native)
                .map(Key::new))
        })
    }

    pub fn cursor(&self, job: &str, sys: &SystemId) -> Result<Option<Vec<u8>>, StoreError> {
        self.cursor_entry(layout::cursor(job, sys))
    }

    /// The change feed position stored with `job`'s cursor of `sys` (see
    /// [`Checkpoint::put_feed_position`]).
    pub fn feed_position(&self, job: &str, sys: &SystemId) -> Result<Option<Vec<u8>>, StoreError> {
        self.cursor_entry(layout::feed(job, sys))
    }

    fn cursor_entry(&self, key: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
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
        self.scan_entities(|k, e, view| {
            match view.snapshot(k, sys.as_str(), false, &mut names)? {
                Some(v) => Ok(f(e, v)),
                None => Ok(true),
            }
        })
    }

    /// Writes sent to `sys` without confirmation that created nothing concord knows of yet
    /// (a pending version and no cross-reference): creates whose outcome is unknown, as
    /// (entity, the version sent).
    pub fn pending_creates(&self, sys: &SystemId) -> Result<Vec<(EntityId, Version)>, StoreError> {
        let mut all = Vec::new();
        self.scan_decoded(
            &layout::system_prefix(Tree::Pending, sys),
            |k, v| Ok((entity_of(k)?, decode_pending(k, v)?.0)),
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
        self.scan_entities(|k, e, view| match view.snapshot_meta(k, sys.as_str())? {
            Some(m) => Ok(f(e, m)),
            None => Ok(true),
        })
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
        self.scan_entities(
            |k, e, view| match view.system(sys.as_str()).and_then(|s| s.snapshot) {
                None => Ok(true),
                Some(snap) => match snap {
                    [ENTRY_V1, flags, rest @ ..]
                        if flags
                            & !(F_TOMB | F_MODSTAMP | F_ORIGIN | F_FIELD_ORIGINS | F_SHARED)
                            == 0 =>
                    {
                        if flags & F_TOMB != 0 {
                            Ok(f(e, None))
                        } else {
                            let h: [u8; 32] = rest
                                .get(..32)
                                .and_then(|h| h.try_into().ok())
                                .ok_or_else(|| corrupt(k, "truncated hash"))?;
                            Ok(f(e, Some(ContentHash(h))))
                        }
                    }
                    _ => Err(corrupt(k, "bad version entry header")),
                },
            },
        )
    }

    /// Every entity with a head, in id order.
    pub fn scan_heads(
        &self,
        f: &mut dyn FnMut(EntityId, Version) -> bool,
    ) -> Result<(), StoreError> {
        let mut names = canonical::NameCache::new();
        self.scan_entities(
            |k, e, view| match view.head_version(k, false, &mut names)? {
                Some(v) => Ok(f(e, v)),
                None => Ok(true),
            },
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
        self.with_entity(e, |key, view| {
            let mut out = Vec::new();
            for s in view.map_or(&[][..], |v| &v.systems[..]) {
                if let Some(n) = s.native {
                    let sys = SystemId::new(s.name).map_err(|e| corrupt(key, e.to_string()))?;
                    out.push((sys, Key::new(n)));
                }
            }
            Ok(out)
        })
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

#[cfg(test)]
pub(crate) fn encode_version_for_snapshot(v: &Version, out: &mut Vec<u8>) {
    encode_version_with(v, false, out)
}

#[cfg(test)]
pub(crate) fn encode_entry_for_test<T: Serialize>(v: &T) -> Vec<u8> {
    encode_entry(v)
}

#[cfg(test)]
pub(crate) fn migrate_to_3_for_test(store: &dyn Store, batch: usize) -> Result<(), StoreError> {
    migrate::to_3(store, batch)
}
