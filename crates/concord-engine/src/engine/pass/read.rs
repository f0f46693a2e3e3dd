//! The read phase of a pass: one system's changes become observations, linked to entities by
//! cross-reference, by a lost create's content or by match key, in the system's own
//! [`SystemRead`] until its read completes.

use super::*;

impl Engine {
    /// Reads one system: every change becomes an observation of its entity (new records are
    /// linked by cross-reference, a lost create's content or the match key), kept in `read`
    /// until the read completes; a complete scan also observes what it no longer holds.
    ///
    /// When the pass's observations reach a chunk (`chunked`), the pages read whole so far join
    /// the pass and are flushed — planned, checkpointed, written to the other systems — while
    /// the next page is read; the cursor moves only once the read completes (a read cut short
    /// is read again from the old cursor, and what was flushed compares equal).
    pub(super) async fn read_system(
        &self,
        pass: &mut Pass<'_>,
        conn: &Arc<dyn Connector>,
        read: &mut SystemRead,
        matches: &mut MatchOverlay,
        chunked: bool,
    ) -> Result<(), ReadFailure> {
        let job = pass.job;
        let sys = conn.system().clone();
        let full = job.options.full_read;
        // A full read (drift repair) scans from the start and leaves the read cursor alone.
        let cursor = if full {
            None
        } else {
            self.state
                .cursor(&job.name, &sys)
                .map_err(|e| ReadFailure::Read(e.into()))?
        };
        let mut r = Reading {
            complete: true,
            seen: BTreeSet::new(),
            // Creates sent here whose outcome is unknown (answer lost, crash), by content.
            unknown: self
                .unknown_creates(conn.as_ref())
                .map_err(ReadFailure::Read)?,
        };
        let fetch = |cursor: Option<Vec<u8>>| async move {
            if full {
                conn.scan(cursor.as_deref()).await
            } else {
                conn.read(cursor.as_deref()).await
            }
        };
        let read_err = |e: concord_connector::ConnectorError| ReadFailure::Read(e.into());
        let mut page = fetch(cursor).await.map_err(read_err)?;
        loop {
            r.complete &= page.complete;
            let changes = std::mem::take(&mut page.changes);
            *read.report.read.entry(sys.to_string()).or_default() += changes.len() as u64;
            self.observe(job, &sys, changes, &mut r, read, matches)
                .await
                .map_err(ReadFailure::Read)?;
            if !page.more {
                if let Some(c) = page.cursor.as_ref().filter(|_| !full) {
                    read.cursors.put_cursor(&job.name, &sys, c);
                }
                // (A complete scan covers the feed as well as a read from the cursor does.)
                if let Some(p) = job.options.feed_positions.get(&sys) {
                    read.cursors.put_feed_position(&job.name, &sys, p);
                }
                break;
            }
            let next = page.cursor.take();
            if chunked && pass.observed.len() + read.observed.len() >= job.chunk() {
                let cursors = std::mem::take(&mut read.cursors);
                let chunk = std::mem::replace(
                    read,
                    SystemRead {
                        cursors,
                        ..SystemRead::default()
                    },
                );
                pass.join(chunk, matches);
                // The chunk is written to the other systems while the next page is read.
                let (flushed, got) = tokio::join!(
                    self.flush(pass, Flush::Chunk { reading: &sys }),
                    fetch(next)
                );
                flushed.map_err(ReadFailure::Flush)?;
                if job.options.stopping() {
                    // Asked to stop: this chunk is checkpointed and written; the cursor stays.
                    return Err(ReadFailure::Flush(EngineError::Stopped {
                        job: job.name.clone(),
                    }));
                }
                page = got.map_err(read_err)?;
            } else {
                page = fetch(next).await.map_err(read_err)?;
            }
        }
        if r.complete {
            // A scan: what we had and did not see is gone.
            for e in self
                .state
                .unseen_snapshots(&sys, &r.seen)
                .map_err(|e| ReadFailure::Read(e.into()))?
            {
                read.observed
                    .entry(e)
                    .or_default()
                    .insert(sys.clone(), Observation::Absent);
            }
        }
        Ok(())
    }

    /// One page's changes of `sys` become observations in `read`.
    async fn observe(
        &self,
        job: &SyncJob,
        sys: &SystemId,
        changes: Vec<Change>,
        r: &mut Reading,
        read: &mut SystemRead,
        matches: &mut MatchOverlay,
    ) -> Result<(), EngineError> {
        for ch in changes {
            let Change {
                key,
                entity_hint,
                fields,
                modstamp,
            } = ch;
            let known = self.state.entity_for(sys, &key)?;
            // The record a create whose answer was lost made (the content sent): linked to
            // that entity, it is the write's echo, not a new record.
            let lost_create = match (&known, &fields) {
                (None, Some(f)) if !r.unknown.is_empty() => {
                    r.unknown.take(&normal_hash(f, &job.normalize))
                }
                _ => None,
            };
            let entity = match (known, lost_create) {
                (Some(e), _) => e,
                (None, Some(e)) => {
                    tracing::info!(system = %sys, key = %key, entity = %e, "a create whose answer was lost is found: linked");
                    read.cp.put_xref(sys, &key, &e);
                    e
                }
                (None, None) => {
                    let by_match = match &job.options.matching {
                        None => Matched::Own,
                        Some(_) => {
                            let mut f = fields.clone();
                            if let Some(f) = f.as_mut() {
                                f.apply_options(&job.normalize);
                            }
                            self.match_record(job, sys, &key, f.as_ref(), read, matches)
                                .await?
                        }
                    };
                    let e = match by_match {
                        Matched::Drop => continue,
                        Matched::Entity(e) => e,
                        Matched::Own => {
                            entity_hint.unwrap_or_else(|| EntityId::derive(sys, key.as_str()))
                        }
                    };
                    let linked_elsewhere =
                        self.state.native_key(&e, sys)?.is_some_and(|k| k != key);
                    // A stale link (the record it names is known deleted) does not count.
                    if linked_elsewhere
                        && self
                            .state
                            .snapshot(sys, &e)?
                            .is_some_and(|s| !s.is_tombstone())
                    {
                        // Another record of this system already stands for this entity.
                        read.report.duplicates_ignored += 1;
                        tracing::warn!(system = %sys, key = %key, entity = %e, "record duplicates an entity already linked; ignored");
                        continue;
                    }
                    read.cp.put_xref(sys, &key, &e);
                    e
                }
            };
            if !r.seen.insert(entity) {
                read.report.duplicates_ignored += 1;
                continue;
            }
            let obs = match fields {
                Some(mut f) => {
                    f.apply_options(&job.normalize);
                    Observation::Present {
                        fields: f,
                        modstamp,
                    }
                }
                None => Observation::Absent,
            };
            read.observed
                .entry(entity)
                .or_default()
                .insert(sys.clone(), obs);
        }
        Ok(())
    }

    /// Scans a write-only target holding creates whose outcome is unknown (and only then):
    /// every record of it not linked yet whose content is such a create's is linked to that
    /// entity, with the version sent as its snapshot. What stays unknown did not land (or was
    /// edited since) and is created again.
    pub(super) async fn link_lost_creates(
        &self,
        job: &SyncJob,
        conn: &dyn Connector,
    ) -> Result<(), EngineError> {
        let mut unknown = self.unknown_creates(conn)?;
        if unknown.is_empty() {
            return Ok(());
        }
        let sys = conn.system().clone();
        let sent: HashMap<EntityId, Version> =
            self.state.pending_creates(&sys)?.into_iter().collect();
        let mut cp = self.state.checkpoint();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let page = conn.scan(cursor.as_deref()).await?;
            for ch in page.changes {
                if self.state.entity_for(&sys, &ch.key)?.is_some() {
                    continue;
                }
                let Some(f) = &ch.fields else { continue };
                if let Some(e) = unknown.take(&normal_hash(f, &job.normalize)) {
                    tracing::info!(system = %sys, key = %ch.key, entity = %e, "a create whose answer was lost is found: linked");
                    cp.put_xref(&sys, &ch.key, &e);
                    if let Some(v) = sent.get(&e) {
                        cp.put_snapshot(&sys, &e, v);
                    }
                    cp.delete_pending(&sys, &e);
                }
            }
            if !page.more || unknown.is_empty() {
                break;
            }
            cursor = page.cursor;
        }
        // A write-only target's records are never synced from it: nothing they would wait for
        // is kept.
        drop(self.state.take_staged_waiting(&job.name, &sys));
        self.state.commit(cp)?;
        Ok(())
    }

    /// The creates sent to `conn` whose outcome is unknown, by the hash of the content sent —
    /// only where repeating a create could duplicate the record.
    pub(super) fn unknown_creates(
        &self,
        conn: &dyn Connector,
    ) -> Result<UnknownCreates, EngineError> {
        let mut out = UnknownCreates::default();
        if conn.creates_idempotent() {
            return Ok(out);
        }
        for (e, v) in self.state.pending_creates(conn.system())? {
            if let Some(h) = v.hash {
                out.0.entry(h).or_default().push(e);
            }
        }
        Ok(out)
    }

    /// Links a record without a cross-reference by its match key (see [`JobOptions::matching`]).
    pub(super) async fn match_record(
        &self,
        job: &SyncJob,
        sys: &SystemId,
        key: &Key,
        fields: Option<&Fields>,
        read: &mut SystemRead,
        matches: &mut MatchOverlay,
    ) -> Result<Matched, EngineError> {
        let Some(spec) = &job.options.matching else {
            return Ok(Matched::Own);
        };
        let hash = fields.and_then(|f| spec.hash(f));
        // Where the record was filed before (a lonely correlate record whose key changed, or
        // that was deleted): take it out of that entry.
        let previous = match matches.rev(sys, key) {
            Some(h) => h,
            None => self.state.match_of(&job.name, sys, key)?,
        };
        if let Some(h0) = previous.filter(|h0| Some(*h0) != hash) {
            let mut e0 = matches.get(&self.state, &job.name, &h0)?;
            e0.lonely
                .retain(|(s, k)| !(s == sys.as_str() && k == key.as_str()));
            matches.put(&mut read.cp, &job.name, h0, e0);
            matches.set_rev(sys, key, None);
            read.cp.delete_match_rev(&job.name, sys, key);
        }
        let Some(hash) = hash else {
            // Deleted, or no match key: correlate keeps nothing of it; others sync it alone.
            return Ok(if job.options.correlate || fields.is_none() {
                if fields.is_some() && job.options.correlate {
                    matches.set_lonely(sys, key, true);
                }
                if job.options.correlate {
                    Matched::Drop
                } else {
                    Matched::Own
                }
            } else {
                Matched::Own
            });
        };
        let mut entry = matches.get(&self.state, &job.name, &hash)?;
        if let Some(e) = entry.entity {
            if !job.options.correlate {
                read.report.matched += 1; // joins its golden record
            }
            return Ok(Matched::Entity(EntityId(e)));
        }
        if !job.options.correlate {
            // Aggregate: the first record with this key starts the entity; the others join it.
            let e = match_entity(&job.name, &hash);
            entry.entity = Some(e.0);
            matches.put(&mut read.cp, &job.name, hash, entry);
            read.report.matched += 1;
            read.report.golden_created += 1;
            return Ok(Matched::Entity(e));
        }
        let others: Vec<(String, String)> = entry
            .lonely
            .iter()
            .filter(|(s, _)| s != sys.as_str())
            .cloned()
            .collect();
        if others.is_empty() {
            if !entry
                .lonely
                .iter()
                .any(|(s, k)| s == sys.as_str() && k == key.as_str())
            {
                entry
                    .lonely
                    .push((sys.to_string(), key.as_str().to_string()));
            }
            matches.put(&mut read.cp, &job.name, hash, entry);
            matches.set_rev(sys, key, Some(hash));
            read.cp.put_match_rev(&job.name, sys, key, &hash);
            matches.set_lonely(sys, key, true);
            return Ok(Matched::Drop);
        }
        // A match: the entity starts now, with the other side's record fetched again (it was
        // not kept when it was read alone).
        let e = match_entity(&job.name, &hash);
        for (s2, k2) in &others {
            let Some(conn) = job.systems.iter().find(|c| c.system().as_str() == s2) else {
                continue;
            };
            let k2 = Key::new(k2.as_str());
            let got = conn.fetch(std::slice::from_ref(&k2)).await?;
            if let Some(Some(mut f)) = got.into_iter().next().map(|c| c.fields) {
                f.apply_options(&job.normalize);
                let s2 = conn.system().clone();
                read.cp.put_xref(&s2, &k2, &e);
                read.cp.delete_match_rev(&job.name, &s2, &k2);
                matches.set_rev(&s2, &k2, None);
                matches.set_lonely(&s2, &k2, false);
                read.observed.entry(e).or_default().insert(
                    s2,
                    Observation::Present {
                        fields: f,
                        modstamp: None,
                    },
                );
            }
        }
        entry.entity = Some(e.0);
        entry.lonely.clear();
        matches.put(&mut read.cp, &job.name, hash, entry);
        read.report.matched += 1;
        Ok(Matched::Entity(e))
    }
}

/// Where one system's read stands.
pub(super) struct Reading {
    /// Every page so far said the read is a complete scan.
    complete: bool,
    /// Entities observed (a second record for one is a duplicate; a scan's unseen are gone).
    seen: BTreeSet<EntityId>,
    unknown: UnknownCreates,
}

/// Creates whose outcome is unknown, by the hash of the content sent: several entities may
/// have sent the same content, and each record found with it links one of them.
#[derive(Default)]
pub(super) struct UnknownCreates(HashMap<concord_model::model::ContentHash, Vec<EntityId>>);

impl UnknownCreates {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One entity whose create sent content `h` (the lowest id first: the same on every run).
    pub(super) fn take(&mut self, h: &concord_model::model::ContentHash) -> Option<EntityId> {
        let list = self.0.get_mut(h)?;
        list.sort_unstable_by(|a, b| b.cmp(a));
        let e = list.pop();
        if list.is_empty() {
            self.0.remove(h);
        }
        e
    }
}

/// How a record without a cross-reference is linked.
pub(super) enum Matched {
    /// Its own new entity (from its entity hint or native key).
    Own,
    /// The entity its match key stands for.
    Entity(EntityId),
    /// Not synced (correlate: no match yet).
    Drop,
}

/// The content hash of `f` as the pass compares it (normalised).
pub(super) fn normal_hash(
    f: &Fields,
    opts: &NormalizeOptions,
) -> concord_model::model::ContentHash {
    let mut f = f.clone();
    f.apply_options(opts);
    f.content_hash()
}

/// The entity a match hash stands for in a job: the same in every pass and instance.
pub(super) fn match_entity(job: &str, hash: &[u8; 32]) -> EntityId {
    let mut h = blake3::Hasher::new();
    h.update(b"concord.match.entity.v1");
    h.update(job.as_bytes());
    h.update(&[0]);
    h.update(hash);
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize().as_bytes()[..16]);
    EntityId(id)
}

/// Match entries changed in this pass, ahead of their commit: those of the systems read so far,
/// and those of the system being read, which are dropped if its read fails.
#[derive(Default)]
pub(super) struct MatchOverlay {
    entries: HashMap<[u8; 32], MatchEntry>,
    revs: HashMap<(SystemId, Key), Option<[u8; 32]>>,
    reading: HashMap<[u8; 32], MatchEntry>,
    reading_revs: HashMap<(SystemId, Key), Option<[u8; 32]>>,
    /// Correlate: records read alone in this pass (`true`), or matched since (`false`).
    lonely: HashMap<(SystemId, Key), bool>,
    reading_lonely: HashMap<(SystemId, Key), bool>,
}

impl MatchOverlay {
    pub(super) fn get(
        &mut self,
        state: &StateStore,
        job: &str,
        hash: &[u8; 32],
    ) -> Result<MatchEntry, EngineError> {
        if let Some(e) = self.reading.get(hash).or_else(|| self.entries.get(hash)) {
            return Ok(e.clone());
        }
        Ok(state.match_entry(job, hash)?.unwrap_or_default())
    }

    pub(super) fn put(&mut self, cp: &mut Checkpoint, job: &str, hash: [u8; 32], e: MatchEntry) {
        if e.entity.is_none() && e.lonely.is_empty() {
            cp.delete_match(job, &hash);
        } else {
            cp.put_match(job, &hash, &e);
        }
        self.reading.insert(hash, e);
    }

    /// Where this pass filed a record (`Some(None)`: nowhere any more); `None`: not touched.
    pub(super) fn rev(&self, sys: &SystemId, key: &Key) -> Option<Option<[u8; 32]>> {
        let k = (sys.clone(), key.clone());
        self.reading_revs
            .get(&k)
            .or_else(|| self.revs.get(&k))
            .copied()
    }

    pub(super) fn set_rev(&mut self, sys: &SystemId, key: &Key, hash: Option<[u8; 32]>) {
        self.reading_revs.insert((sys.clone(), key.clone()), hash);
    }

    pub(super) fn set_lonely(&mut self, sys: &SystemId, key: &Key, lonely: bool) {
        self.reading_lonely
            .insert((sys.clone(), key.clone()), lonely);
    }

    /// Records read in this pass that are still without a match (each counted once).
    pub(super) fn unmatched(&self) -> u64 {
        self.lonely.values().filter(|l| **l).count() as u64
    }

    /// The system's read completed: its changes count.
    pub(super) fn keep(&mut self) {
        self.entries.extend(self.reading.drain());
        self.revs.extend(self.reading_revs.drain());
        self.lonely.extend(self.reading_lonely.drain());
    }

    /// The system's read failed: nothing it changed counts.
    pub(super) fn discard(&mut self) {
        self.reading.clear();
        self.reading_revs.clear();
        self.reading_lonely.clear();
    }
}
