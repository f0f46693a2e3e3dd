//! Upserts (idempotent by entity id), conditional partial updates, and deletes.

use super::{MemorySystem, Row};
use crate::{WriteErrorKind, WriteOp, WriteResult};
use concord_model::model::Key;
use std::sync::atomic::Ordering;

pub(super) fn apply(sys: &MemorySystem, ops: Vec<WriteOp>) -> Vec<WriteResult> {
    let mut t = sys.table.lock().expect("lock");
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        let modstamp = MemorySystem::tick(&mut t);
        let res = match op {
            WriteOp::Upsert {
                entity,
                key,
                fields,
            } => {
                let existing = match key {
                    Some(k) => {
                        if t.rows.contains_key(&k) {
                            Some(k)
                        } else {
                            out.push(WriteResult::Err {
                                kind: WriteErrorKind::NotFound,
                                message: format!("record {k} not found"),
                            });
                            continue;
                        }
                    }
                    None => t
                        .rows
                        .iter()
                        .find(|(_, r)| r.entity == Some(entity))
                        .map(|(k, _)| k.clone()),
                };
                let key = match existing {
                    Some(k) => k,
                    None => {
                        t.next_key += 1;
                        Key::new(format!("{}-{}", sys.system, t.next_key))
                    }
                };
                let row = t.rows.entry(key.clone()).or_insert(Row {
                    fields: fields.clone(),
                    entity: Some(entity),
                    modstamp,
                });
                row.fields = fields;
                row.modstamp = modstamp;
                if row.entity.is_none() {
                    row.entity = Some(entity);
                }
                WriteResult::Ok { key }
            }
            WriteOp::Update {
                key, fields, base, ..
            } => {
                let Some(row) = t.rows.get_mut(&key) else {
                    out.push(WriteResult::Err {
                        kind: WriteErrorKind::NotFound,
                        message: format!("record {key} not found"),
                    });
                    continue;
                };
                let names = base.changed(&fields);
                if !base.holds(&row.fields, &names) {
                    out.push(WriteResult::Err {
                        kind: WriteErrorKind::Stale,
                        message: format!("record {key} changed since it was read"),
                    });
                    continue;
                }
                for n in names {
                    row.fields.patch(n, fields.get(n).cloned());
                }
                row.modstamp = modstamp;
                WriteResult::Ok { key }
            }
            WriteOp::Delete { key, .. } => {
                // Deleting what is already gone is success: deletes are idempotent.
                t.rows.remove(&key);
                WriteResult::Ok { key }
            }
        };
        sys.writes.fetch_add(1, Ordering::SeqCst);
        out.push(res);
    }
    out
}
