//! A system seen through a job side's field mapping: reads come out as canonical records, writes
//! go in as native ones. References between jobs resolve through the store's cross-references
//! (a child's `customer_id` becomes its parent's entity id, and back into each system's key).
//!
//! A child whose parent is not synced yet waits instead of failing: on read it is staged for the
//! store's `waiting` tree (the engine writes it with the read's checkpoint, in the same commit
//! as the cursor that moves past it; a connector read never writes the store) and offered again at the end of every later read until its parent is
//! known (it leaves the tree once the store holds what it carried, or a newer read of it
//! replaces it); on write it stays in the outbox, retryable, until the parent exists in that
//! system. A record already synced that now waits keeps its last synced content meanwhile.
//! Records outside the side's filter are not synced; one that leaves the filter keeps its last
//! synced content (neither is taken for deleted by a complete scan).

use async_trait::async_trait;
use concord_connector::{
    BucketSum, Change, Connector, ConnectorError, DigestSource, ReadPage, RowDigest,
    WriteErrorKind, WriteOp, WriteResult,
};
use concord_model::core::mapping::{MapError, Mapping};
use concord_model::model::{
    canonical, EntityId, Fields, Key, NormalizeOptions, SystemId, Timestamp,
};
use concord_store::{StateStore, WaitingEntry};
use std::sync::Arc;

/// A connector behind a mapping.
pub struct MappedConnector {
    inner: Arc<dyn Connector>,
    mapping: Mapping,
    state: StateStore,
    job: String,
    normalize: NormalizeOptions,
    /// A key column the mapping does not fill: it holds the entity id (hex) on create.
    entity_key: Option<String>,
    /// A canonical field passed through to the native record as it is (aggregate provenance).
    passthrough: Option<String>,
}

impl MappedConnector {
    pub fn new(
        inner: Arc<dyn Connector>,
        mapping: Mapping,
        state: StateStore,
        job: &str,
        normalize: NormalizeOptions,
    ) -> Self {
        MappedConnector {
            inner,
            mapping,
            state,
            job: job.to_string(),
            normalize,
            entity_key: None,
            passthrough: None,
        }
    }

    /// Writes canonical field `field` to the native record unchanged (the provenance field).
    pub fn with_passthrough(mut self, field: Option<String>) -> Self {
        self.passthrough = field;
        self
    }

    /// Fills `column` (a key column no mapped field provides) with the entity id on create, and
    /// with the record's key on update: destinations such as report files need no key mapping.
    pub fn with_entity_key(mut self, column: Option<String>) -> Self {
        self.entity_key = column;
        self
    }

    fn err(&self, message: String) -> ConnectorError {
        ConnectorError {
            system: self.inner.system().to_string(),
            object: String::new(),
            message,
            retryable: false,
        }
    }

    fn store_err(&self, e: concord_store::StoreError) -> ConnectorError {
        ConnectorError {
            retryable: true,
            ..self.err(format!("store: {e}"))
        }
    }

    /// A native record as canonical fields; a reference that does not resolve is a
    /// [`MapError`], a store that cannot answer the look-up fails the call.
    fn to_canonical(&self, native: &Fields) -> Result<Result<Fields, MapError>, ConnectorError> {
        let look = Lookups::new(&self.state);
        let out = self
            .mapping
            .to_canonical(native, &|parent, key| look.entity_for(parent, key));
        look.finish().map_err(|e| self.store_err(e))?;
        Ok(out)
    }

    /// The content last synced from this system for the record with native key `key`, if any.
    fn last_synced(&self, key: &Key) -> Result<Option<Fields>, ConnectorError> {
        let sys = self.inner.system();
        Ok(
            match self
                .state
                .entity_for(sys, key)
                .map_err(|e| self.store_err(e))?
            {
                Some(e) => self
                    .state
                    .snapshot(sys, &e)
                    .map_err(|e| self.store_err(e))?
                    .and_then(|v| v.content),
                None => None,
            },
        )
    }

    /// Maps one read record; `None`: not passed on (waiting and never synced, or out of scope
    /// and unknown).
    fn map_change(&self, ch: Change) -> Result<Option<Change>, ConnectorError> {
        let sys = self.inner.system();
        let Some(native) = ch.fields else {
            self.state
                .stage_waiting(&self.job, sys, &ch.key, None)
                .map_err(|e| self.store_err(e))?;
            return Ok(Some(ch));
        };
        if !self.mapping.in_scope(&native) {
            // Out of scope: a record we sync keeps its last synced content; others are skipped.
            let known = self.last_synced(&ch.key)?;
            return Ok(known.map(|f| Change {
                fields: Some(f),
                ..ch
            }));
        }
        match self.to_canonical(&native)? {
            Ok(c) => {
                self.state
                    .stage_waiting(&self.job, sys, &ch.key, None)
                    .map_err(|e| self.store_err(e))?;
                Ok(Some(Change {
                    fields: Some(c),
                    ..ch
                }))
            }
            Err(MapError::Unresolved { field, parent, key }) => {
                let mut bytes = Vec::new();
                canonical::encode_into(&native, &mut bytes);
                let entry = WaitingEntry {
                    native: bytes,
                    hint: ch.entity_hint.map(|e| e.0),
                    modstamp: ch.modstamp.map(|t| t.millis()),
                    reason: format!("{field} refers to {parent} record {key}, not synced yet"),
                };
                tracing::info!(system = %sys, key = %ch.key, %field, %parent, "record waits for the record it refers to");
                self.state
                    .stage_waiting(&self.job, sys, &ch.key, Some(entry))
                    .map_err(|e| self.store_err(e))?;
                // A record already synced keeps its last synced content meanwhile: left out of a
                // complete scan it would be taken for deleted.
                let known = self.last_synced(&ch.key)?;
                Ok(known.map(|f| Change {
                    fields: Some(f),
                    ..ch
                }))
            }
            Err(e @ MapError::Invalid { .. }) => Err(self.err(format!("record {}: {e}", ch.key))),
        }
    }

    /// Waiting records whose references now resolve (and clean-up of absorbed ones).
    fn resolved_waiting(&self) -> Result<Vec<Change>, ConnectorError> {
        let sys = self.inner.system();
        let mut out = Vec::new();
        for (key, w) in self
            .state
            .waiting(&self.job, sys)
            .map_err(|e| self.store_err(e))?
        {
            let native = canonical::decode(&w.native)
                .map_err(|e| self.err(format!("waiting record {key}: {e}")))?;
            let Ok(c) = self.to_canonical(&native)? else {
                continue; // still waiting
            };
            let mut normal = c.clone();
            normal.apply_options(&self.normalize);
            let absorbed = match self
                .state
                .entity_for(sys, &key)
                .map_err(|e| self.store_err(e))?
            {
                Some(e) => {
                    self.state
                        .snapshot(sys, &e)
                        .map_err(|e| self.store_err(e))?
                        .and_then(|v| v.hash)
                        == Some(normal.content_hash())
                }
                None => false,
            };
            if absorbed {
                self.state
                    .stage_waiting(&self.job, sys, &key, None)
                    .map_err(|e| self.store_err(e))?;
                continue;
            }
            out.push(Change {
                key,
                entity_hint: w.hint.map(EntityId),
                fields: Some(c),
                modstamp: w.modstamp.map(Timestamp),
            });
        }
        Ok(out)
    }
}

impl MappedConnector {
    /// A page of the inner connector, mapped; the last page also offers the waiting records
    /// whose parents have arrived.
    fn mapped_page(&self, page: ReadPage) -> Result<ReadPage, ConnectorError> {
        let mut changes = Vec::with_capacity(page.changes.len());
        for ch in page.changes {
            if let Some(c) = self.map_change(ch)? {
                changes.push(c);
            }
        }
        if !page.more {
            changes.extend(self.resolved_waiting()?);
        }
        Ok(ReadPage { changes, ..page })
    }
}

#[async_trait]
impl Connector for MappedConnector {
    fn system(&self) -> &SystemId {
        self.inner.system()
    }

    fn creates_idempotent(&self) -> bool {
        self.inner.creates_idempotent()
    }

    fn in_flight_limit(&self) -> std::time::Duration {
        self.inner.in_flight_limit()
    }

    fn api_usage(&self) -> Option<(u64, u64)> {
        self.inner.api_usage()
    }

    /// The system's own announcements (a hint only: what changed is read through the mapping).
    async fn subscribe(
        &self,
        from: Option<&[u8]>,
    ) -> Result<Option<concord_connector::ChangeFeed>, ConnectorError> {
        self.inner.subscribe(from).await
    }

    async fn read(&self, cursor: Option<&[u8]>) -> Result<ReadPage, ConnectorError> {
        let page = self.inner.read(cursor).await?;
        self.mapped_page(page)
    }

    async fn scan(&self, cursor: Option<&[u8]>) -> Result<ReadPage, ConnectorError> {
        let page = self.inner.scan(cursor).await?;
        self.mapped_page(page)
    }

    /// The inner system's hashing, unless the side has a filter: the database hashes every row,
    /// in scope or not, so a filtered side is checked by a scan.
    fn digests(&self) -> Option<&dyn DigestSource> {
        if !self.mapping.filter.is_empty() {
            return None;
        }
        self.inner.digests().map(|_| self as &dyn DigestSource)
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteResult>, ConnectorError> {
        let look = Lookups::new(&self.state);
        let key_of = |e: &EntityId, parent: &SystemId| look.native_key(e, parent);
        let mut results: Vec<Option<WriteResult>> = vec![None; ops.len()];
        let mut sent = Vec::new();
        let mut idx = Vec::new();
        // Updates' canonical target and base, by op index (for a stale answer).
        let mut canonical: std::collections::HashMap<usize, (Fields, Fields)> =
            std::collections::HashMap::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                WriteOp::Upsert {
                    entity,
                    key,
                    fields,
                } => match self.mapping.to_native(&fields, &key_of) {
                    Ok(mut native) => {
                        if let Some(p) = &self.passthrough {
                            if let Some(v) = fields.get(p) {
                                native.set(p.as_str(), v.clone());
                            }
                        }
                        if let Some(col) = &self.entity_key {
                            let k = key
                                .as_ref()
                                .map(|k| k.as_str().to_string())
                                .unwrap_or_else(|| entity.to_hex());
                            native.set(col.as_str(), concord_model::model::Value::text(k));
                        }
                        sent.push(WriteOp::Upsert {
                            entity,
                            key,
                            fields: native,
                        });
                        idx.push(i);
                    }
                    Err(e) => results[i] = Some(map_failure(e)),
                },
                WriteOp::Update {
                    entity,
                    key,
                    fields,
                    base,
                } => match self.native_update(&key, &fields, &base.fields)? {
                    Ok((native, native_base)) => {
                        sent.push(WriteOp::Update {
                            entity,
                            key,
                            fields: native,
                            base: concord_connector::WriteBase {
                                fields: native_base,
                                modstamp: base.modstamp,
                            },
                        });
                        canonical.insert(i, (fields, base.fields));
                        idx.push(i);
                    }
                    Err(e) => results[i] = Some(map_failure(e)),
                },
                del @ WriteOp::Delete { .. } => {
                    sent.push(del);
                    idx.push(i);
                }
            }
        }
        // A store that could not answer a look-up fails the call before anything is sent.
        look.take().map_err(|e| self.store_err(e))?;
        if !sent.is_empty() {
            // Updates are kept (cloned) for a second try after a stale answer.
            let mut updates: std::collections::HashMap<usize, WriteOp> = sent
                .iter()
                .enumerate()
                .filter(|(_, op)| matches!(op, WriteOp::Update { .. }))
                .map(|(n, op)| (n, op.clone()))
                .collect();
            let out = self.inner.write(sent).await?;
            let mut again = Vec::new();
            for (n, (i, r)) in idx.into_iter().zip(out).enumerate() {
                if let (
                    WriteResult::Err {
                        kind: WriteErrorKind::Stale,
                        ..
                    },
                    Some(op),
                    Some(canon),
                ) = (&r, updates.remove(&n), canonical.remove(&i))
                {
                    again.push((i, op, canon));
                }
                results[i] = Some(r);
            }
            if !again.is_empty() {
                for (i, r) in self.retry_stale(again).await? {
                    results[i] = Some(r);
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or(WriteResult::Err {
                    kind: WriteErrorKind::Retryable,
                    message: "no result".into(),
                })
            })
            .collect())
    }

    /// As a read sees them: a record out of the side's scope, or whose reference does not
    /// resolve yet, is its last synced content (none when it was never synced) — never taken
    /// for deleted.
    async fn fetch(&self, keys: &[Key]) -> Result<Vec<Change>, ConnectorError> {
        let got = self.inner.fetch(keys).await?;
        let mut out = Vec::with_capacity(got.len());
        for ch in got {
            let fields = match ch.fields {
                None => None,
                Some(native) if !self.mapping.in_scope(&native) => self.last_synced(&ch.key)?,
                Some(native) => match self.to_canonical(&native)? {
                    Ok(c) => Some(c),
                    Err(MapError::Unresolved { .. }) => self.last_synced(&ch.key)?,
                    Err(e @ MapError::Invalid { .. }) => {
                        return Err(self.err(format!("record {}: {e}", ch.key)))
                    }
                },
            };
            out.push(Change { fields, ..ch });
        }
        Ok(out)
    }
}

impl MappedConnector {
    /// The native target and base of an update. A reference in the base whose parent has no
    /// record in this system any more is left out of the base, so the field counts as written
    /// (the rest of the update stays conditional).
    fn native_update(
        &self,
        key: &Key,
        fields: &Fields,
        base: &Fields,
    ) -> Result<Result<(Fields, Fields), MapError>, ConnectorError> {
        let look = Lookups::new(&self.state);
        let out = self.native_update_with(key, fields, base, &look);
        look.finish().map_err(|e| self.store_err(e))?;
        Ok(out)
    }

    fn native_update_with(
        &self,
        key: &Key,
        fields: &Fields,
        base: &Fields,
        look: &Lookups<'_>,
    ) -> Result<(Fields, Fields), MapError> {
        let key_of = |e: &EntityId, parent: &SystemId| look.native_key(e, parent);
        let mut native = self.mapping.to_native(fields, &key_of)?;
        let mut base = base.clone();
        for m in &self.mapping.fields {
            if let concord_model::core::mapping::Source::Reference { parent, .. } = &m.source {
                let resolves = base
                    .get(&m.canonical)
                    .map(concord_model::model::Value::plain_text)
                    .and_then(|h| EntityId::from_hex(&h))
                    .is_none_or(|e| key_of(&e, parent).is_some());
                if !resolves {
                    base.remove(&m.canonical);
                }
            }
        }
        let mut native_base = self.mapping.to_native(&base, &key_of)?;
        if let Some(p) = &self.passthrough {
            if let Some(v) = fields.get(p) {
                native.set(p.as_str(), v.clone());
            }
            if let Some(v) = base.get(p) {
                native_base.set(p.as_str(), v.clone());
            }
        }
        if let Some(col) = &self.entity_key {
            let k = concord_model::model::Value::text(key.as_str());
            native.set(col.as_str(), k.clone());
            native_base.set(col.as_str(), k);
        }
        Ok((native, native_base))
    }

    /// Updates the system answered `Stale` for. The system compares native values, and a base
    /// mapped back from canonical values may differ from the stored ones in form only (`upper`
    /// on read, a trimmed or mapped value): the record is read again, and where its canonical
    /// fields still hold the base's values in every field the update writes, the update is
    /// sent again once against the values read. Otherwise it really changed: `Stale` stands
    /// and the engine merges.
    async fn retry_stale(
        &self,
        stale: Vec<(usize, WriteOp, (Fields, Fields))>,
    ) -> Result<Vec<(usize, WriteResult)>, ConnectorError> {
        let keys: Vec<Key> = stale
            .iter()
            .filter_map(|(_, op, _)| match op {
                WriteOp::Update { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect();
        let current = self.inner.fetch(&keys).await?;
        let mut again = Vec::new();
        let mut idx = Vec::new();
        let mut out = Vec::new();
        for ((i, op, (target, base)), now) in stale.into_iter().zip(current) {
            let WriteOp::Update {
                entity,
                key,
                fields,
                base: native_base,
            } = op
            else {
                continue;
            };
            let Some(native_now) = now.fields else {
                out.push((
                    i,
                    WriteResult::Err {
                        kind: WriteErrorKind::NotFound,
                        message: format!("record {key} not found"),
                    },
                ));
                continue;
            };
            let unchanged = self.mapping.in_scope(&native_now)
                && self.to_canonical(&native_now)?.is_ok_and(|mut c| {
                    c.apply_options(&self.normalize);
                    let canon = concord_connector::WriteBase {
                        fields: base.clone(),
                        modstamp: None,
                    };
                    canon.holds(&c, &canon.changed(&target))
                });
            if !unchanged {
                continue; // Stale stands
            }
            let mut patched = native_base.fields.clone();
            for n in native_base.changed(&fields) {
                patched.patch(n, native_now.get(n).cloned());
            }
            again.push(WriteOp::Update {
                entity,
                key,
                fields,
                base: concord_connector::WriteBase {
                    fields: patched,
                    modstamp: now.modstamp.or(native_base.modstamp),
                },
            });
            idx.push(i);
        }
        if !again.is_empty() {
            let res = self.inner.write(again).await?;
            out.extend(idx.into_iter().zip(res));
        }
        Ok(out)
    }

    fn inner_digests(&self) -> Result<&dyn DigestSource, ConnectorError> {
        self.inner
            .digests()
            .ok_or_else(|| self.err("this system cannot hash on its side".into()))
    }

    /// A record read with its digest, as canonical fields. A record whose references do not
    /// resolve yet cannot be compared: it comes back without a digest (and with its native
    /// fields, which nothing uses), and the check leaves it for next time.
    fn digested(
        &self,
        ch: Change,
        d: Option<RowDigest>,
    ) -> Result<(Change, Option<RowDigest>), ConnectorError> {
        let mapped = match ch.fields.as_ref() {
            Some(native) => Some(self.to_canonical(native)?),
            None => None,
        };
        Ok(match mapped {
            Some(Ok(c)) => (
                Change {
                    fields: Some(c),
                    ..ch
                },
                d,
            ),
            Some(Err(_)) => (ch, None),
            None => (ch, d),
        })
    }
}

#[async_trait]
impl DigestSource for MappedConnector {
    fn fingerprint(&self) -> String {
        let inner = self
            .inner
            .digests()
            .map(|d| d.fingerprint())
            .unwrap_or_default();
        format!("{inner} | mapping {:?}", self.mapping)
    }

    fn max_bits(&self) -> u32 {
        self.inner.digests().map_or(24, |d| d.max_bits())
    }

    async fn differing_buckets(
        &self,
        bits: u32,
        expected: &[BucketSum],
    ) -> Result<Vec<i64>, ConnectorError> {
        self.inner_digests()?
            .differing_buckets(bits, expected)
            .await
    }

    async fn leaves(
        &self,
        bits: u32,
        buckets: &[i64],
    ) -> Result<Vec<(Key, RowDigest)>, ConnectorError> {
        self.inner_digests()?.leaves(bits, buckets).await
    }

    async fn fetch_digested(
        &self,
        keys: &[Key],
    ) -> Result<Vec<(Change, Option<RowDigest>)>, ConnectorError> {
        let got = self.inner_digests()?.fetch_digested(keys).await?;
        got.into_iter()
            .map(|(ch, d)| self.digested(ch, d))
            .collect()
    }

    async fn scan_digested(
        &self,
        cursor: Option<&[u8]>,
    ) -> Result<(ReadPage, Vec<Option<RowDigest>>), ConnectorError> {
        let (page, digests) = self.inner_digests()?.scan_digested(cursor).await?;
        let (changes, digests) = page
            .changes
            .into_iter()
            .zip(digests)
            .map(|(ch, d)| self.digested(ch, d))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        Ok((ReadPage { changes, ..page }, digests))
    }
}

/// The result of an op whose record could not be mapped: waiting for a referenced record (not
/// applied, tried again), or refused.
fn map_failure(e: MapError) -> WriteResult {
    match e {
        e @ MapError::Unresolved { .. } => WriteResult::Err {
            kind: WriteErrorKind::NotApplied,
            message: format!("waiting: {e}"),
        },
        e => WriteResult::Err {
            kind: WriteErrorKind::Rejected,
            message: e.to_string(),
        },
    }
}

/// The store look-ups a mapping makes (a reference's entity, an entity's key in a system): a
/// store failure is kept — the mapping sees "not known" — and [`Lookups::finish`] returns it,
/// so a store that cannot answer fails the call instead of making a record wait.
struct Lookups<'a> {
    state: &'a StateStore,
    failed: std::sync::Mutex<Option<concord_store::StoreError>>,
}

impl<'a> Lookups<'a> {
    fn new(state: &'a StateStore) -> Self {
        Lookups {
            state,
            failed: std::sync::Mutex::new(None),
        }
    }

    fn keep<T>(&self, r: Result<Option<T>, concord_store::StoreError>) -> Option<T> {
        r.unwrap_or_else(|e| {
            self.failed.lock().expect("lock").get_or_insert(e);
            None
        })
    }

    fn entity_for(&self, sys: &SystemId, key: &Key) -> Option<EntityId> {
        self.keep(self.state.entity_for(sys, key))
    }

    fn native_key(&self, e: &EntityId, sys: &SystemId) -> Option<Key> {
        self.keep(self.state.native_key(e, sys))
    }

    /// The first store failure, if any (and clears it).
    fn take(&self) -> Result<(), concord_store::StoreError> {
        self.failed.lock().expect("lock").take().map_or(Ok(()), Err)
    }

    fn finish(self) -> Result<(), concord_store::StoreError> {
        self.take()
    }
}
