//! The writes of one atomic, durable checkpoint.

use super::*;

/// Writes collected for one atomic, durable checkpoint.
///
/// Changes to an entity's entry (head, snapshots, native keys) are collected per entity and
/// folded into its stored entry when the checkpoint is committed ([`StateStore::commit`]); every
/// other write is a plain batch entry.
#[derive(Debug, Default)]
pub struct Checkpoint {
    pub(super) batch: Batch,
    pub(super) entities: BTreeMap<EntityId, EntityOps>,
    /// Entity changes collected (for [`Checkpoint::len`]).
    entity_ops: usize,
}

/// What a checkpoint changes in one entity entry (`None`: left as stored).
#[derive(Debug, Default)]
pub(super) struct EntityOps {
    pub head: Option<Vec<u8>>,
    pub systems: BTreeMap<String, SysOps>,
}

#[derive(Debug, Default)]
pub(super) struct SysOps {
    /// `Some(None)`: removed.
    pub native: Option<Option<String>>,
    /// `Some(None)`: removed.
    pub snapshot: Option<Option<Vec<u8>>>,
}

impl EntityOps {
    /// Applies these changes to a stored entry.
    pub fn apply_to(self, entry: &mut EntityEntry) {
        if let Some(h) = self.head {
            entry.head = Some(h);
        }
        for (name, ops) in self.systems {
            let s = entry.systems.entry(name).or_default();
            if let Some(n) = ops.native {
                s.native = n;
            }
            if let Some(v) = ops.snapshot {
                s.snapshot = v;
            }
        }
    }
    /// Folds later changes in (they win).
    fn extend(&mut self, later: EntityOps) {
        if later.head.is_some() {
            self.head = later.head;
        }
        for (name, ops) in later.systems {
            let s = self.systems.entry(name).or_default();
            if ops.native.is_some() {
                s.native = ops.native;
            }
            if ops.snapshot.is_some() {
                s.snapshot = ops.snapshot;
            }
        }
    }
}

impl Checkpoint {
    fn sys_ops(&mut self, e: &EntityId, sys: &SystemId) -> &mut SysOps {
        self.entity_ops += 1;
        let ops = self.entities.entry(*e).or_default();
        if !ops.systems.contains_key(sys.as_str()) {
            ops.systems
                .insert(sys.as_str().to_string(), SysOps::default());
        }
        ops.systems.get_mut(sys.as_str()).expect("just inserted")
    }
    pub fn put_head(&mut self, e: &EntityId, v: &Version) {
        let mut buf = Vec::with_capacity(128);
        encode_version(v, &mut buf);
        self.entity_ops += 1;
        self.entities.entry(*e).or_default().head = Some(buf);
    }
    pub fn put_snapshot(&mut self, sys: &SystemId, e: &EntityId, v: &Version) {
        let mut buf = Vec::with_capacity(128);
        encode_version_with(v, false, &mut buf);
        self.sys_ops(e, sys).snapshot = Some(Some(buf));
    }
    /// Records the version about to be written to `sys` (write-ahead), so that a read after a
    /// lost confirmation recognises it.
    /// Records `v` as sent to `sys` at `sent_at` (local clock), its outcome not yet known.
    pub fn put_pending(&mut self, sys: &SystemId, e: &EntityId, v: &Version, sent_at: Timestamp) {
        self.batch
            .put(layout::pending(sys, e), encode_pending(v, sent_at));
    }
    pub fn delete_pending(&mut self, sys: &SystemId, e: &EntityId) {
        self.batch.delete(layout::pending(sys, e));
    }
    pub fn delete_snapshot(&mut self, sys: &SystemId, e: &EntityId) {
        self.sys_ops(e, sys).snapshot = Some(None);
    }
    /// Records both directions of the cross-reference (native key → entity in the xref tree,
    /// entity → native key in the entity entry).
    pub fn put_xref(&mut self, sys: &SystemId, native: &Key, e: &EntityId) {
        self.batch
            .put(layout::xref(sys, native.as_str()), e.0.to_vec());
        self.sys_ops(e, sys).native = Some(Some(native.as_str().to_string()));
    }
    pub fn delete_xref(&mut self, sys: &SystemId, native: &Key, e: &EntityId) {
        self.batch.delete(layout::xref(sys, native.as_str()));
        self.sys_ops(e, sys).native = Some(None);
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
    /// The change feed position a completed read covers (see [`layout::feed`]).
    pub fn put_feed_position(&mut self, job: &str, sys: &SystemId, position: &[u8]) {
        let mut v = vec![ENTRY_V1];
        v.extend_from_slice(position);
        self.batch.put(layout::feed(job, sys), v);
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
    /// Takes the outbox marks this checkpoint puts for `sys` out of it: (entity, entry).
    pub fn take_outbox(
        &mut self,
        sys: &SystemId,
    ) -> Result<Vec<(EntityId, OutboxEntry)>, StoreError> {
        let prefix = layout::system_prefix(Tree::Outbox, sys);
        let mut taken = Vec::new();
        let mut kept = Vec::with_capacity(self.batch.ops.len());
        for (k, v) in std::mem::take(&mut self.batch.ops) {
            match v {
                Some(v) if k.starts_with(&prefix) => taken.push((k, v)),
                v => kept.push((k, v)),
            }
        }
        self.batch.ops = kept;
        taken
            .into_iter()
            .map(|(k, v)| Ok((entity_of(&k)?, decode_entry::<OutboxEntry>(&k, &v)?)))
            .collect()
    }
    /// Whether this checkpoint writes or removes an entry of `tree` (entity changes aside).
    pub fn touches(&self, tree: Tree) -> bool {
        self.batch
            .ops
            .iter()
            .any(|(k, _)| k.first() == Some(&tree.prefix()))
    }
    /// Appends another checkpoint's writes (applied after this one's).
    pub fn extend(&mut self, other: Checkpoint) {
        self.batch.ops.extend(other.batch.ops);
        self.entity_ops += other.entity_ops;
        for (e, ops) in other.entities {
            match self.entities.entry(e) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(ops);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().extend(ops),
            }
        }
    }
    /// The writes collected (entity changes counted one by one).
    pub fn len(&self) -> usize {
        self.batch.len() + self.entity_ops
    }
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.entities.is_empty()
    }
}
