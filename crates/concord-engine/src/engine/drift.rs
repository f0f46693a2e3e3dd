//! Drift detection (`concord reconcile`): each system's actual content, read by a complete scan,
//! against what the store says it holds (its snapshots). Finds what no change feed reports: a
//! row changed without its updated-at column, a hard delete past every feed, a restored
//! backup, a disabled trigger. Writes nothing; repair is an ordinary pass with full reads
//! (`JobOptions::full_read`), so drift becomes changes through the job's pattern and policies.

use super::{Engine, EngineError, SyncJob};
use concord_connector::{Connector, ConnectorError, DigestSource};
use concord_model::core::tree::{bucket_bits, bucket_of, sums, RowDigest};
use concord_model::core::{diff, Delta};
use concord_model::model::{ContentHash, EntityId, Fields, Key, NormalizeOptions, SystemId};
use concord_store::{Checkpoint, DigestEntry};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};

/// A native key as reported: its display form (`42`, `(north, 7)` for a composite key).
fn as_text<S: serde::Serializer>(k: &Key, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(k)
}

/// One difference between a system and the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Drift {
    /// The store says the system holds this record; the system does not.
    Missing {
        system: String,
        #[serde(serialize_with = "as_text")]
        key: Key,
        entity: String,
    },
    /// The system holds a record the store does not know.
    Extra {
        system: String,
        #[serde(serialize_with = "as_text")]
        key: Key,
        /// What the system holds (for repair; not reported).
        #[serde(skip_serializing)]
        observed: Fields,
    },
    /// The record's content differs from what the store last saw, in these fields.
    Different {
        system: String,
        #[serde(serialize_with = "as_text")]
        key: Key,
        entity: String,
        fields: Vec<String>,
        /// What the system holds (for repair; not reported).
        #[serde(skip_serializing)]
        observed: Fields,
    },
}

/// A system a drift check could not cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unchecked {
    pub system: String,
    pub reason: String,
}

/// How one system was checked, with what it cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SystemCheck {
    /// `hash_tree` (the system hashed its records, concord compared bucket sums and descended
    /// only into the buckets that differ) or `scan` (every record read).
    pub method: &'static str,
    /// Records the store says the system holds.
    pub stored: u64,
    /// Records whose content was read from the system.
    pub read: u64,
    /// Hash tree: records whose system-side digest was not known (new or changed in the store
    /// since the last reconcile), looked up by key first.
    pub unknown: u64,
    /// Hash tree: bucket depth (the top bits of the key hash), buckets compared, buckets that
    /// differed, and digests listed from those buckets.
    pub bits: u32,
    pub buckets: u64,
    pub differing: u64,
    pub leaves: u64,
}

/// What a drift check found, per system.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DriftReport {
    pub job: String,
    /// How each checked system was compared.
    pub checks: std::collections::BTreeMap<String, SystemCheck>,
    /// Systems not checked, with why: one that cannot be scanned completely (a destination
    /// such as NATS) or whose scan failed. The others are still checked.
    pub unchecked: Vec<Unchecked>,
    pub drift: Vec<Drift>,
}

/// A system's check failed (the system, not the store): it goes to `unchecked`.
struct NotChecked(String);

impl From<ConnectorError> for NotChecked {
    fn from(e: ConnectorError) -> Self {
        NotChecked(e.to_string())
    }
}

type Checked = Result<Result<(SystemCheck, Vec<Drift>), NotChecked>, EngineError>;

/// Above this share of unknown digests, reading every record once (learning every digest) is
/// cheaper than looking them up by key.
const UNKNOWN_SCAN_SHARE: usize = 4;
/// Keys per digested point read.
const FETCH_CHUNK: usize = 2000;

/// One record read from a system compared with its snapshot.
enum Compared {
    Same(EntityId, ContentHash),
    Differs(EntityId, Drift),
    Extra(Drift),
}

impl Engine {
    /// Checks every system of `job` against the store: by hash tree where the system hashes on
    /// its side, else by a complete scan. Reads only, except that the store remembers the
    /// system-side digests it confirmed.
    pub async fn drift(&self, job: &SyncJob) -> Result<DriftReport, EngineError> {
        let mut report = DriftReport {
            job: job.name.clone(),
            ..DriftReport::default()
        };
        // The systems are checked at the same time: each waits mostly on its database or on
        // its share of the store.
        let mut tasks = Vec::with_capacity(job.systems.len());
        for conn in &job.systems {
            let engine = Engine::new(self.state().clone());
            let conn = conn.clone();
            let norm = job.normalize;
            let full = job.options.full_read;
            tasks.push(tokio::spawn(async move {
                engine.check_system(conn.as_ref(), &norm, full).await
            }));
        }
        for (conn, task) in job.systems.iter().zip(tasks) {
            let sys = conn.system().clone();
            let checked = task.await.map_err(|e| EngineError::Config {
                job: job.name.clone(),
                message: format!("checking {sys} failed: {e}"),
            });
            // A check reads, it does not sync: what its scans would have a record wait for is
            // left to the job's next pass.
            drop(self.state().take_staged_waiting(&job.name, &sys));
            let checked = checked??;
            match checked {
                Ok((check, mut drift)) => {
                    report.checks.insert(sys.to_string(), check);
                    report.drift.append(&mut drift);
                }
                Err(NotChecked(reason)) => report.unchecked.push(Unchecked {
                    system: sys.to_string(),
                    reason,
                }),
            }
        }
        Ok(report)
    }

    /// One system's check: by hash tree where it hashes on its side (unless `full`), else by
    /// a complete scan.
    async fn check_system(
        &self,
        conn: &dyn Connector,
        norm: &NormalizeOptions,
        full: bool,
    ) -> Result<Result<(SystemCheck, Vec<Drift>), NotChecked>, EngineError> {
        let sys = conn.system().clone();
        match conn.digests() {
            // Every record read, digests learned again.
            Some(ds) if full => {
                let check = SystemCheck {
                    method: "scan",
                    ..SystemCheck::default()
                };
                let cp = self.state().checkpoint();
                self.drift_learn_all(norm, &sys, ds, check, cp).await
            }
            Some(ds) => self.drift_tree(norm, &sys, ds).await,
            None => self.drift_scan(norm, conn).await,
        }
    }

    /// Compares one record read from `sys` with the store.
    fn compare(
        &self,
        norm: &NormalizeOptions,
        sys: &SystemId,
        key: &Key,
        mut fields: Fields,
    ) -> Result<Compared, EngineError> {
        let state = self.state();
        fields.apply_options(norm);
        let entity = state.entity_for(sys, key)?;
        let snap = match entity {
            Some(e) => state.snapshot(sys, &e)?.map(|s| (e, s)),
            None => None,
        };
        Ok(match snap {
            Some((e, s)) if !s.is_tombstone() => {
                let h = fields.content_hash();
                if s.hash == Some(h) {
                    Compared::Same(e, h)
                } else {
                    let changed = match diff(s.content.as_ref(), Some(&fields)) {
                        Delta::Update(m) => m.keys().map(|k| k.to_string()).collect(),
                        _ => Vec::new(),
                    };
                    Compared::Differs(
                        e,
                        Drift::Different {
                            system: sys.to_string(),
                            key: key.clone(),
                            entity: e.to_hex(),
                            fields: changed,
                            observed: fields,
                        },
                    )
                }
            }
            _ => Compared::Extra(Drift::Extra {
                system: sys.to_string(),
                key: key.clone(),
                observed: fields,
            }),
        })
    }

    fn missing(&self, sys: &SystemId, e: &EntityId) -> Result<Drift, EngineError> {
        let key = self
            .state()
            .native_key(e, sys)?
            .unwrap_or_else(|| Key::new(""));
        Ok(Drift::Missing {
            system: sys.to_string(),
            key,
            entity: e.to_hex(),
        })
    }

    /// A complete scan of one system that cannot hash on its side.
    async fn drift_scan(&self, norm: &NormalizeOptions, conn: &dyn Connector) -> Checked {
        let check = SystemCheck {
            method: "scan",
            ..SystemCheck::default()
        };
        let cp = self.state().checkpoint();
        self.drift_full(norm, conn.system(), Full::Scan(conn), check, cp)
            .await
    }

    /// The hash-tree check of one system (see `docs/offline.md`, "The reconcile algorithm").
    async fn drift_tree(
        &self,
        norm: &NormalizeOptions,
        sys: &SystemId,
        ds: &dyn DigestSource,
    ) -> Checked {
        let state = self.state();
        let mut check = SystemCheck {
            method: "hash_tree",
            ..SystemCheck::default()
        };
        let t0 = std::time::Instant::now();
        // 1. The store's side: every live snapshot with the digest remembered for it, if that
        //    is still valid (remembered with the same snapshot content).
        let mut remembered: Vec<(EntityId, DigestEntry)> = Vec::new();
        state.scan_digests(sys, &mut |e, d| {
            remembered.push((e, d));
            true
        })?;
        tracing::debug!(system = %sys, digests = remembered.len(), ms = t0.elapsed().as_millis() as u64, "reconcile: digests read");
        let mut known: Vec<(EntityId, RowDigest)> = Vec::new();
        let mut unknown: Vec<EntityId> = Vec::new();
        let mut stale: Vec<EntityId> = Vec::new();
        {
            let mut it = remembered.iter().peekable();
            state.scan_snapshot_hashes(sys, &mut |e, hash| {
                while let Some((d, _)) = it.peek() {
                    if *d < e {
                        stale.push(*d);
                        it.next();
                    } else {
                        break;
                    }
                }
                let entry = match it.peek() {
                    Some((d, entry)) if *d == e => {
                        it.next();
                        Some(*entry)
                    }
                    _ => None,
                };
                let Some(h) = hash else {
                    if entry.is_some() {
                        stale.push(e);
                    }
                    return true;
                };
                match entry {
                    Some(d) if d.snapshot == DigestEntry::snapshot_of(&h) => known.push((
                        e,
                        RowDigest {
                            key_hash: d.key_hash,
                            row: d.row,
                        },
                    )),
                    _ => unknown.push(e),
                }
                true
            })?;
            stale.extend(it.map(|(d, _)| *d));
        }
        check.stored = (known.len() + unknown.len()) as u64;
        check.unknown = unknown.len() as u64;
        let mut cp = state.checkpoint();
        for e in &stale {
            cp.delete_digest(sys, e);
        }
        let mut drift = Vec::new();
        let same_hashing = state.digest_fingerprint(sys)? == Some(fingerprint(ds, norm));
        if !same_hashing || unknown.len() * UNKNOWN_SCAN_SHARE > known.len() + unknown.len() {
            // 2a. Mostly unknown (the first reconcile), or remembered under other columns,
            //     mapping or normalisation: read everything once, with digests.
            return self.drift_learn_all(norm, sys, ds, check, cp).await;
        }
        tracing::info!(system = %sys, known = known.len(), unknown = unknown.len(), ms = t0.elapsed().as_millis() as u64, "reconcile: store side read");
        // 2b. Look up the unknown ones by key.
        let mut reported: HashSet<Key> = HashSet::new();
        let mut keyed = Vec::with_capacity(unknown.len());
        for e in unknown {
            match state.native_key(&e, sys)? {
                Some(k) => keyed.push((k, e)),
                None => drift.push(self.missing(sys, &e)?),
            }
        }
        for chunk in keyed.chunks(FETCH_CHUNK) {
            let keys: Vec<Key> = chunk.iter().map(|(k, _)| k.clone()).collect();
            let got = match ds.fetch_digested(&keys).await {
                Ok(g) => g,
                Err(e) => return Ok(Err(e.into())),
            };
            for ((ch, dg), (_, e)) in got.into_iter().zip(chunk) {
                check.read += 1;
                let (fields, dg) = match (ch.fields, dg) {
                    (None, _) => {
                        drift.push(self.missing(sys, e)?);
                        continue;
                    }
                    // Not comparable yet (a reference not synced): looked at again next time.
                    (Some(_), None) => continue,
                    (Some(f), Some(dg)) => (f, dg),
                };
                match self.compare(norm, sys, &ch.key, fields)? {
                    Compared::Same(e, h) => {
                        learn(&mut cp, sys, &e, dg, &h);
                        known.push((e, dg));
                    }
                    Compared::Differs(e, d) => {
                        drift.push(d);
                        known.push((e, dg));
                    }
                    Compared::Extra(d) => {
                        reported.insert(ch.key.clone());
                        drift.push(d);
                    }
                }
            }
        }
        // 3. Bucket sums compared in the system: only the numbers of differing buckets return.
        let bits = bucket_bits(known.len()).min(ds.max_bits());
        check.bits = bits;
        let expected = sums(known.iter().map(|(_, d)| d), bits);
        check.buckets = expected.len() as u64;
        let differing = match ds.differing_buckets(bits, &expected).await {
            Ok(d) => d,
            Err(e) => return Ok(Err(e.into())),
        };
        check.differing = differing.len() as u64;
        tracing::info!(system = %sys, buckets = expected.len(), differing = differing.len(), ms = t0.elapsed().as_millis() as u64, "reconcile: buckets compared");
        if !differing.is_empty() {
            // 4. The leaves of those buckets: key and digest of each record, both sides.
            let wanted: HashSet<i64> = differing.iter().copied().collect();
            let mut ours: HashMap<EntityId, RowDigest> = known
                .iter()
                .filter(|(_, d)| wanted.contains(&bucket_of(d.key_hash, bits)))
                .map(|(e, d)| (*e, *d))
                .collect();
            let leaves = match ds.leaves(bits, &differing).await {
                Ok(l) => l,
                Err(e) => return Ok(Err(e.into())),
            };
            check.leaves = leaves.len() as u64;
            tracing::info!(system = %sys, leaves = leaves.len(), ms = t0.elapsed().as_millis() as u64, "reconcile: leaves listed");
            let mut candidates: Vec<Key> = Vec::new();
            for (key, theirs) in leaves {
                let entity = state.entity_for(sys, &key)?;
                // Same digests: equal. Otherwise (another digest, a record the store does not
                // know, or one in another bucket) it is read whole below.
                match entity.and_then(|e| ours.remove(&e)) {
                    Some(d) if d == theirs => {}
                    _ if reported.contains(&key) => {}
                    _ => candidates.push(key),
                }
            }
            for e in ours.keys() {
                drift.push(self.missing(sys, e)?);
            }
            // 5. The records whose digests differ or that the store does not know, read whole
            //    and compared canonically.
            for chunk in candidates.chunks(FETCH_CHUNK) {
                let got = match ds.fetch_digested(chunk).await {
                    Ok(g) => g,
                    Err(e) => return Ok(Err(e.into())),
                };
                for (ch, dg) in got {
                    check.read += 1;
                    let (fields, dg) = match (ch.fields, dg) {
                        // Gone between the listing and the read.
                        (None, _) => {
                            if let Some(e) = state.entity_for(sys, &ch.key)? {
                                drift.push(self.missing(sys, &e)?);
                            }
                            continue;
                        }
                        (Some(_), None) => continue,
                        (Some(f), Some(dg)) => (f, dg),
                    };
                    match self.compare(norm, sys, &ch.key, fields)? {
                        Compared::Same(e, h) => learn(&mut cp, sys, &e, dg, &h),
                        Compared::Differs(_, d) | Compared::Extra(d) => drift.push(d),
                    }
                }
            }
        }
        state.commit(cp)?;
        tracing::info!(system = %sys, read = check.read, ms = t0.elapsed().as_millis() as u64, "reconcile: done");
        Ok(Ok((check, drift)))
    }

    /// Reads every record of `sys` with its digest: drift as by a scan, and every digest of a
    /// record equal to its snapshot remembered.
    async fn drift_learn_all(
        &self,
        norm: &NormalizeOptions,
        sys: &SystemId,
        ds: &dyn DigestSource,
        check: SystemCheck,
        cp: Checkpoint,
    ) -> Checked {
        self.drift_full(norm, sys, Full::Digested(ds), check, cp)
            .await
    }

    /// Every record of `sys` read (by a complete scan, with digests where the system hashes)
    /// and compared with its snapshot; stored records not seen are missing. Digests of records
    /// equal to their snapshot are remembered, page by page (bounded memory).
    async fn drift_full(
        &self,
        norm: &NormalizeOptions,
        sys: &SystemId,
        source: Full<'_>,
        mut check: SystemCheck,
        mut cp: Checkpoint,
    ) -> Checked {
        let state = self.state();
        let mut cursor: Option<Vec<u8>> = None;
        let mut seen: BTreeSet<EntityId> = BTreeSet::new();
        let mut drift = Vec::new();
        loop {
            let read = match source {
                Full::Scan(conn) => conn.scan(cursor.as_deref()).await.map(|p| (p, None)),
                Full::Digested(ds) => ds
                    .scan_digested(cursor.as_deref())
                    .await
                    .map(|(p, d)| (p, Some(d))),
            };
            let (page, digests) = match read {
                Ok(p) => p,
                Err(e) => return Ok(Err(e.into())),
            };
            if !page.complete {
                return Ok(Err(NotChecked("its reads are not complete scans".into())));
            }
            let mut digests = digests.map(Vec::into_iter);
            for ch in page.changes {
                check.read += 1;
                let dg = digests.as_mut().map(|d| d.next().flatten());
                let Some(fields) = ch.fields else { continue };
                if dg == Some(None) {
                    // Not comparable yet (a reference not synced): not missing either.
                    if let Some(e) = state.entity_for(sys, &ch.key)? {
                        seen.insert(e);
                    }
                    continue;
                }
                match self.compare(norm, sys, &ch.key, fields)? {
                    Compared::Same(e, h) => {
                        seen.insert(e);
                        if let Some(Some(dg)) = dg {
                            learn(&mut cp, sys, &e, dg, &h);
                        }
                    }
                    Compared::Differs(e, d) => {
                        seen.insert(e);
                        drift.push(d);
                    }
                    Compared::Extra(d) => drift.push(d),
                }
            }
            if cp.len() >= 10_000 {
                state.commit(std::mem::take(&mut cp))?;
            }
            cursor = page.cursor;
            if !page.more {
                break;
            }
        }
        if let Full::Digested(ds) = source {
            cp.put_digest_fingerprint(sys, &fingerprint(ds, norm));
        }
        check.stored = seen.len() as u64;
        for e in state.unseen_snapshots(sys, &seen)? {
            check.stored += 1;
            drift.push(self.missing(sys, &e)?);
        }
        state.commit(cp)?;
        Ok(Ok((check, drift)))
    }
}

/// What `sys`'s digests are computed and compared under (a blake3 hex of the source's
/// fingerprint and the normalisation).
fn fingerprint(ds: &dyn DigestSource, norm: &NormalizeOptions) -> String {
    blake3::hash(format!("{} | {norm:?}", ds.fingerprint()).as_bytes())
        .to_hex()
        .to_string()
}

/// Where a complete read of a system comes from.
#[derive(Clone, Copy)]
enum Full<'a> {
    /// `Connector::scan`: records only.
    Scan(&'a dyn Connector),
    /// `DigestSource::scan_digested`: records with the system's digests.
    Digested(&'a dyn DigestSource),
}

/// Remembers a system-side digest confirmed equal to the snapshot with content hash `h`.
fn learn(cp: &mut Checkpoint, sys: &SystemId, e: &EntityId, dg: RowDigest, h: &ContentHash) {
    cp.put_digest(
        sys,
        e,
        &DigestEntry {
            key_hash: dg.key_hash,
            row: dg.row,
            snapshot: DigestEntry::snapshot_of(h),
        },
    );
}
