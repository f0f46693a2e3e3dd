//! The drain phase of a pass: each written system's outbox goes out in batches, each batch's
//! outcome committed after it; records a conditional write found changed are read again.

use super::*;

impl Engine {
    /// Writes the outboxes of the active systems the job writes (only `only`'s entities when
    /// given), skipping systems that failed in this pass — and, at a chunk boundary, the
    /// system being read, and every delete (see [`Flush`]); returns, per system, the entities
    /// whose conditional update found them changed since they were read.
    pub(super) async fn write_systems(
        &self,
        pass: &mut Pass<'_>,
        only: Option<&BTreeSet<EntityId>>,
        flush: Flush<'_>,
    ) -> Result<BTreeMap<SystemId, Vec<EntityId>>, EngineError> {
        let job = pass.job;
        let mut stale = BTreeMap::new();
        let hold_deletes = flush != Flush::Last;
        for conn in pass.active.iter().filter(|c| job.role(c.system()).write) {
            if pass.failed.contains(conn.system())
                || matches!(flush, Flush::Chunk { reading } if reading == conn.system())
            {
                continue;
            }
            match self
                .drain_outbox(job, conn.as_ref(), only, hold_deletes, &mut pass.report)
                .await
            {
                Ok(s) => {
                    if !s.is_empty() {
                        stale.insert(conn.system().clone(), s);
                    }
                }
                Err(EngineError::Connector(e)) if job.options.isolate_failures => {
                    tracing::warn!(system = %conn.system(), error = %e, "writes failed; kept in the outbox, the other systems go on");
                    pass.failed.insert(conn.system().clone());
                    pass.report
                        .errors
                        .insert(conn.system().to_string(), e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(stale)
    }

    /// Point reads of records a write found changed: their current content as observations.
    pub(super) async fn reread(
        &self,
        pass: &mut Pass<'_>,
        stale: &BTreeMap<SystemId, Vec<EntityId>>,
    ) -> Result<BTreeMap<EntityId, BTreeMap<SystemId, Observation>>, EngineError> {
        let job = pass.job;
        let mut observed: BTreeMap<EntityId, BTreeMap<SystemId, Observation>> = BTreeMap::new();
        for (sys, entities) in stale {
            let Some(conn) = job.systems.iter().find(|c| c.system() == sys) else {
                continue;
            };
            let mut keys = Vec::new();
            let mut of = Vec::new();
            for e in entities {
                if let Some(k) = self.state.native_key(e, sys)? {
                    keys.push(k);
                    of.push(*e);
                }
            }
            let got = match conn.fetch(&keys).await {
                Ok(g) => g,
                Err(e) if job.options.isolate_failures => {
                    tracing::warn!(system = %sys, error = %e, "re-reading changed records failed; their writes wait in the outbox");
                    pass.failed.insert(sys.clone());
                    pass.report.errors.insert(sys.to_string(), e.to_string());
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for (e, ch) in of.into_iter().zip(got) {
                let obs = match ch.fields {
                    Some(mut f) => {
                        f.apply_options(&job.normalize);
                        Observation::Present {
                            fields: f,
                            modstamp: ch.modstamp,
                        }
                    }
                    None => Observation::Absent,
                };
                observed.entry(e).or_default().insert(sys.clone(), obs);
            }
        }
        Ok(observed)
    }

    /// Writes `conn`'s outbox (only `only`'s entities when given; deletes left marked with
    /// `hold_deletes`). Returns the entities whose conditional update found the record
    /// changed since it was read (left in the outbox).
    pub(super) async fn drain_outbox(
        &self,
        job: &SyncJob,
        conn: &dyn Connector,
        only: Option<&BTreeSet<EntityId>>,
        hold_deletes: bool,
        report: &mut SyncReport,
    ) -> Result<Vec<EntityId>, EngineError> {
        let sys = conn.system().clone();
        let mut pending = self.state.outbox(&sys, usize::MAX)?;
        if let Some(only) = only {
            pending.retain(|(e, _)| only.contains(e));
        }
        // A system the job reads gets conditional, partial updates (what changed since its
        // snapshot, if it still holds the snapshot there); a write-only target is kept equal to
        // the head in every mapped field.
        let conditional = job.role(&sys).read;
        let mut stale = Vec::new();
        for chunk in pending.chunks(job.batch_size.max(1)) {
            let mut cp = self.state.checkpoint();
            let mut ops = Vec::new();
            let mut heads = Vec::new();
            for (entity, entry) in chunk {
                let head = self.state.head(entity)?;
                let snap = self.state.snapshot(&sys, entity)?;
                let Some(head) = head else {
                    cp.outbox_remove(&sys, entity);
                    continue;
                };
                let parked = self.parked(entity)?;
                if parked.held {
                    // A record-level conflict waits for resolution: nothing goes out.
                    cp.outbox_remove(&sys, entity);
                    continue;
                }
                // What this system should hold: the head, minus parked fields (it keeps its own).
                let keep = with_identity(&parked.fields, job.identity(&sys));
                let (content, hash) = target_for(&head, snap.as_ref(), &keep);
                // Its modification time there is unknown until the system is read again (the
                // head's is another system's clock: no precondition may be built on it).
                let target = Version {
                    content,
                    hash,
                    clock: head.clock.clone(),
                    modstamp: None,
                    origin: head.origin.clone(),
                    field_origins: head.field_origins.clone(),
                };
                if snap.as_ref().and_then(|s| s.hash) == target.hash {
                    cp.outbox_remove(&sys, entity); // already holds it
                    continue;
                }
                // A system whose snapshot is a tombstone (or absent) has no record to update:
                // writing there is a (re-)create.
                let exists = snap.as_ref().is_some_and(|s| !s.is_tombstone());
                let key = if exists {
                    self.state.native_key(entity, &sys)?
                } else {
                    None
                };
                if job.options.correlate && key.is_none() && target.content.is_some() {
                    // Correlate never creates a record in a system.
                    cp.outbox_remove(&sys, entity);
                    continue;
                }
                let base = snap
                    .as_ref()
                    .filter(|_| conditional)
                    .and_then(|s| s.content.clone().map(|c| (c, s.modstamp)));
                let op = match (&target.content, key) {
                    (Some(f), key) => {
                        let fields = match &job.options.provenance_field {
                            Some(pf) => Self::with_provenance(&head, f, pf),
                            None => f.clone(),
                        };
                        match (key, base) {
                            (Some(key), Some((b, modstamp))) => WriteOp::Update {
                                entity: *entity,
                                key,
                                fields,
                                base: WriteBase {
                                    fields: b,
                                    modstamp,
                                },
                            },
                            (key, _) => WriteOp::Upsert {
                                entity: *entity,
                                key,
                                fields,
                            },
                        }
                    }
                    (None, Some(_)) if hold_deletes => continue, // the mark waits
                    (None, Some(key)) => WriteOp::Delete {
                        entity: *entity,
                        key,
                    },
                    (None, None) => {
                        // Never existed there: nothing to delete.
                        cp.put_snapshot(&sys, entity, &target);
                        cp.outbox_remove(&sys, entity);
                        continue;
                    }
                };
                ops.push(op);
                heads.push((*entity, target, entry.clone()));
            }
            if !ops.is_empty() {
                // Write-ahead: record what is about to be sent, durably, before sending it —
                // where a lost answer needs it: a system read again (its read recognises the
                // version sent) or one whose creates are not idempotent (the content sent
                // finds the record). A write-only target with idempotent creates needs none:
                // its outbox mark sends the same write again.
                let write_ahead = conditional || !conn.creates_idempotent();
                if write_ahead {
                    let mut ahead = self.state.checkpoint();
                    for (entity, head, _) in &heads {
                        ahead.put_pending(&sys, entity, head);
                    }
                    self.state.commit(ahead)?;
                }
                let results = conn.write(ops).await?;
                if results.len() != heads.len() {
                    return Err(EngineError::Config {
                        job: job.name.clone(),
                        message: format!(
                            "system '{sys}' answered {} results for {} writes",
                            results.len(),
                            heads.len()
                        ),
                    });
                }
                for ((entity, head, entry), res) in heads.into_iter().zip(results) {
                    match res {
                        WriteResult::Ok { key } => {
                            cp.put_xref(&sys, &key, &entity);
                            cp.put_snapshot(&sys, &entity, &head);
                            if write_ahead {
                                cp.delete_pending(&sys, &entity);
                            }
                            cp.outbox_remove(&sys, &entity);
                            *report.written.entry(sys.to_string()).or_default() += 1;
                        }
                        WriteResult::Err {
                            kind: WriteErrorKind::NotFound,
                            ..
                        } => {
                            // Deleted behind our back: the next read reports the delete, and
                            // the delete rule decides. Nothing to retry.
                            cp.outbox_remove(&sys, &entity);
                        }
                        WriteResult::Err {
                            kind: WriteErrorKind::Stale,
                            message,
                        } => {
                            // Changed since it was read: nothing was written; it is read again
                            // and merged (the entry stays until then).
                            tracing::info!(system = %sys, entity = %entity, %message, "record changed since it was read; reading it again to merge");
                            cp.delete_pending(&sys, &entity);
                            cp.outbox_put(
                                &sys,
                                &entity,
                                &OutboxEntry {
                                    last_error: Some(message),
                                    ..entry
                                },
                            );
                            stale.push(entity);
                        }
                        WriteResult::Err { kind, message } => {
                            report.failed += 1;
                            tracing::warn!(system = %sys, entity = %entity, ?kind, %message, "write failed; kept in the outbox");
                            if matches!(kind, WriteErrorKind::Rejected | WriteErrorKind::NotApplied)
                            {
                                // Certainly not written: no create to look for.
                                cp.delete_pending(&sys, &entity);
                            }
                            cp.outbox_put(
                                &sys,
                                &entity,
                                &OutboxEntry {
                                    enqueued_ms: entry.enqueued_ms,
                                    attempts: entry.attempts.saturating_add(1),
                                    last_error: Some(message),
                                },
                            );
                        }
                    }
                }
            }
            self.state.commit(cp)?;
        }
        Ok(stale)
    }
}
