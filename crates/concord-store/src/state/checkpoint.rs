//! The writes of one atomic, durable checkpoint.

use super::*;

/// Writes collected for one atomic, durable checkpoint.
#[derive(Debug, Default)]
pub struct Checkpoint {
    pub(super) batch: Batch,
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
