//! Drift detection (`concord reconcile`): each system's actual content, read by a complete scan,
//! against what the store says it holds (its snapshots). Finds what no change feed reports: a
//! row changed without its updated-at column, a hard delete past every feed, a restored
//! backup, a disabled trigger. Writes nothing; repair is an ordinary pass with full reads
//! (`JobOptions::full_read`), so drift becomes changes through the job's pattern and policies.

use super::{Engine, EngineError, SyncJob};
use crate::core::{diff, Delta};
use crate::model::{EntityId, Fields, SystemId, Timestamp, Version};
use crate::store::OutboxEntry;
use serde::Serialize;
use std::collections::BTreeSet;

/// One difference between a system and the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Drift {
    /// The store says the system holds this record; the system does not.
    Missing {
        system: String,
        key: String,
        entity: String,
    },
    /// The system holds a record the store does not know.
    Extra { system: String, key: String },
    /// The record's content differs from what the store last saw, in these fields.
    Different {
        system: String,
        key: String,
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

/// What a drift check found, per system.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DriftReport {
    pub job: String,
    /// Records scanned per system.
    pub scanned: std::collections::BTreeMap<String, u64>,
    /// Systems not checked, with why: one that cannot be scanned completely (a destination
    /// such as NATS) or whose scan failed. The others are still checked.
    pub unchecked: Vec<Unchecked>,
    pub drift: Vec<Drift>,
}

impl Engine {
    /// Scans every system of `job` and compares it with the store. Reads only.
    pub async fn drift(&self, job: &SyncJob) -> Result<DriftReport, EngineError> {
        let state = self.state();
        let mut report = DriftReport {
            job: job.name.clone(),
            ..DriftReport::default()
        };
        for conn in &job.systems {
            let sys = conn.system().clone();
            let mut cursor: Option<Vec<u8>> = None;
            let mut seen: BTreeSet<EntityId> = BTreeSet::new();
            let mut complete = true;
            let mut n = 0u64;
            let mut drift = Vec::new();
            let failed = loop {
                let page = match conn.scan(cursor.as_deref()).await {
                    Ok(p) => p,
                    Err(e) => break Some(e.to_string()),
                };
                complete &= page.complete;
                for ch in page.changes {
                    n += 1;
                    let Some(mut fields) = ch.fields else {
                        continue;
                    };
                    fields.apply_options(&job.normalize);
                    let entity = state.entity_for(&sys, &ch.key)?;
                    let snap = match entity {
                        Some(e) => state.snapshot(&sys, &e)?,
                        None => None,
                    };
                    match (entity, snap) {
                        (Some(e), Some(s)) if !s.is_tombstone() => {
                            seen.insert(e);
                            if s.hash != Some(fields.content_hash()) {
                                let changed = match diff(s.content.as_ref(), Some(&fields)) {
                                    Delta::Update(m) => m.keys().map(|k| k.to_string()).collect(),
                                    _ => Vec::new(),
                                };
                                drift.push(Drift::Different {
                                    system: sys.to_string(),
                                    key: ch.key.to_string(),
                                    entity: e.to_hex(),
                                    fields: changed,
                                    observed: fields,
                                });
                            }
                        }
                        _ => drift.push(Drift::Extra {
                            system: sys.to_string(),
                            key: ch.key.to_string(),
                        }),
                    }
                }
                cursor = page.cursor;
                if !page.more {
                    break None;
                }
            };
            if let Some(reason) = failed {
                report.unchecked.push(Unchecked {
                    system: sys.to_string(),
                    reason,
                });
                continue;
            }
            report.scanned.insert(sys.to_string(), n);
            if !complete {
                report.unchecked.push(Unchecked {
                    system: sys.to_string(),
                    reason: "its reads are not complete scans".into(),
                });
                continue;
            }
            report.drift.append(&mut drift);
            for e in state.unseen_snapshots(&sys, &seen)? {
                let key = state
                    .native_key(&e, &sys)?
                    .map(|k| k.to_string())
                    .unwrap_or_default();
                report.drift.push(Drift::Missing {
                    system: sys.to_string(),
                    key,
                    entity: e.to_hex(),
                });
            }
        }
        Ok(report)
    }

    /// Queues the head again for drift found in systems the job writes but never reads
    /// (migrate and broadcast targets), which a pass with full reads cannot see: a missing
    /// record is created again, a different one rewritten. Returns the writes queued; the next
    /// pass sends them.
    pub fn requeue_unread_targets(
        &self,
        job: &SyncJob,
        drift: &[Drift],
    ) -> Result<u64, EngineError> {
        let state = self.state();
        let mut cp = state.checkpoint();
        let mut n = 0;
        let entry = OutboxEntry {
            enqueued_ms: Timestamp::now().millis(),
            attempts: 0,
            last_error: None,
        };
        for d in drift {
            let (system, entity) = match d {
                Drift::Missing { system, entity, .. } | Drift::Different { system, entity, .. } => {
                    (system, entity)
                }
                Drift::Extra { .. } => continue,
            };
            let (Ok(sys), Some(e)) = (SystemId::new(system.as_str()), EntityId::from_hex(entity))
            else {
                continue;
            };
            let role = job.role(&sys);
            if !role.write || role.read {
                continue;
            }
            match d {
                // The system no longer holds it: no snapshot, so the head is created there.
                Drift::Missing { .. } => cp.delete_snapshot(&sys, &e),
                // It holds something else: the snapshot says what, so the head is written over.
                Drift::Different { observed, .. } => {
                    let Some(old) = state.snapshot(&sys, &e)? else {
                        continue;
                    };
                    cp.put_snapshot(
                        &sys,
                        &e,
                        &Version::new(Some(observed.clone()), old.clock, old.modstamp, old.origin),
                    );
                }
                Drift::Extra { .. } => continue,
            }
            cp.outbox_put(&sys, &e, &entry);
            n += 1;
        }
        state.commit(cp)?;
        Ok(n)
    }
}
