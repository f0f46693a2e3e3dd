//! Repair of exactly the drift `concord reconcile` found: the job as a pass whose reads yield,
//! once, the drifted records (`repair_job`), and the requeue of heads for targets the job only
//! writes.

use super::drift::Drift;
use super::{Engine, EngineError, SyncJob};
use async_trait::async_trait;
use concord_connector::{Change, Connector, ConnectorError, ReadPage, WriteOp, WriteResult};
use concord_model::model::{EntityId, Key, SystemId, Timestamp, Version};
use concord_store::OutboxEntry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

impl Engine {
    /// The job as a repair of exactly `drift` runs it: each system it reads yields, once, the
    /// records drift was found in (a different or extra record with what the system holds, a
    /// missing one as deleted) instead of its change feed; writes go to the systems as usual.
    /// Run with `Engine::sync`, the drift becomes ordinary changes through the job's pattern
    /// and policies, reading nothing more from the systems. Read cursors are left alone.
    pub fn repair_job(&self, job: &SyncJob, drift: &[Drift]) -> SyncJob {
        let mut per: HashMap<String, Vec<Change>> = HashMap::new();
        for d in drift {
            let (system, key, entity, fields) = match d {
                Drift::Different {
                    system,
                    key,
                    entity,
                    observed,
                    ..
                } => (system, key, Some(entity), Some(observed.clone())),
                Drift::Extra {
                    system,
                    key,
                    observed,
                } => (system, key, None, Some(observed.clone())),
                Drift::Missing {
                    system,
                    key,
                    entity,
                } => (system, key, Some(entity), None),
            };
            if key.as_str().is_empty() {
                // A stored record with no native key: a store inconsistency, not a change.
                continue;
            }
            per.entry(system.clone()).or_default().push(Change {
                key: key.clone(),
                entity_hint: entity.and_then(|h| EntityId::from_hex(h)),
                fields,
                modstamp: None,
            });
        }
        let systems = job
            .systems
            .iter()
            .map(|c| {
                let changes = per.remove(c.system().as_str()).unwrap_or_default();
                Arc::new(DriftFeed {
                    inner: c.clone(),
                    changes: Mutex::new(Some(changes)),
                }) as Arc<dyn Connector>
            })
            .collect();
        let mut options = job.options.clone();
        options.full_read = true;
        SyncJob {
            name: job.name.clone(),
            systems,
            policy: job.policy.clone(),
            normalize: job.normalize,
            batch_size: job.batch_size,
            options,
        }
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

/// A system as a targeted repair reads it: once, the records drift was found in.
struct DriftFeed {
    inner: Arc<dyn Connector>,
    changes: Mutex<Option<Vec<Change>>>,
}

#[async_trait]
impl Connector for DriftFeed {
    fn system(&self) -> &SystemId {
        self.inner.system()
    }

    async fn read(&self, _cursor: Option<&[u8]>) -> Result<ReadPage, ConnectorError> {
        let changes = self
            .changes
            .lock()
            .expect("drift feed lock")
            .take()
            .unwrap_or_default();
        // Not a complete scan: records not listed are not taken for deleted.
        Ok(ReadPage {
            changes,
            cursor: None,
            more: false,
            complete: false,
        })
    }

    async fn scan(&self, cursor: Option<&[u8]>) -> Result<ReadPage, ConnectorError> {
        self.read(cursor).await
    }

    fn creates_idempotent(&self) -> bool {
        self.inner.creates_idempotent()
    }

    fn in_flight_limit(&self) -> std::time::Duration {
        self.inner.in_flight_limit()
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteResult>, ConnectorError> {
        self.inner.write(ops).await
    }

    async fn fetch(&self, keys: &[Key]) -> Result<Vec<Change>, ConnectorError> {
        self.inner.fetch(keys).await
    }
}
