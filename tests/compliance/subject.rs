//! The contract every connector passes, as scenarios over a [`Subject`]: a dataset in a real
//! system (a table, a file, an sObject in the sandbox, a memory table, a JetStream stream), the
//! means to change it natively (as a person or another application would), the connector under
//! test, and a view of what the system holds that does not go through that connector.
//!
//! What a connector guarantees (see `Connector` in `crates/concord-connector/src/lib.rs`):
//! - a read from the start returns every record, each once, with its fields decoded;
//! - a create returns the new record's key; repeating it (a retried batch) makes no second
//!   record where `creates_idempotent()` says so; an update by key changes that record only, a
//!   key that is gone answers `NotFound`, a value the system refuses rejects that record only;
//!   deletes are idempotent;
//! - what it wrote does not come back from its reads as a change, a native edit does, and a
//!   native hard delete is seen;
//! - a connector built again (a restarted process) resumes from a saved cursor losing nothing,
//!   and what it reads again is unchanged, byte for byte;
//! - as a destination it ends up holding what the source holds, edits and deletes included.

use super::read_all;
use concord::connector::memory::MemorySystem;
use concord::connector::{Connector, WriteErrorKind, WriteOp, WriteResult};
use concord::core::{DeleteRule, FieldPolicy, Policy};
use concord::engine::{Engine, JobOptions, Role, SyncJob};
use concord::model::{EntityId, Fields, Key, NormalizeOptions, SystemId, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The system's own names for the suite's three fields: `id` (an integer business number, not
/// necessarily the key), `name` (text) and `amount` (an exact decimal).
#[derive(Clone, Copy)]
pub struct Names {
    pub id: &'static str,
    pub name: &'static str,
    pub amount: &'static str,
}

/// What the system holds of one record, by `id`: its name and amount.
pub type Holds = BTreeMap<i64, (String, Value)>;

/// A dataset in one system, and the connector under test on it. Its system id is `erp`.
#[async_trait::async_trait]
pub trait Subject: Send + Sync {
    /// The connector under test; built afresh each call (as a restarted process would) on the
    /// same data.
    async fn connector(&self) -> Arc<dyn Connector>;
    fn names(&self) -> Names;
    /// The key the system gives the record with `id` when its key is that number (tables and
    /// files keyed by `id`); `None` where the system makes its own keys.
    fn key_of(&self, id: i64) -> Option<Key> {
        let _ = id;
        None
    }
    /// A well-formed key no record has (`None`: writes never look a key up).
    fn missing_key(&self) -> Option<Key>;
    /// Values the system refuses, each with its field and a word its error names.
    fn refused(&self) -> Vec<(&'static str, Value, &'static str)> {
        Vec::new()
    }
    /// Native edits, made beside the connector.
    async fn insert(&self, id: i64, name: &str, amount: &str);
    async fn update_name(&self, id: i64, name: &str);
    async fn delete(&self, id: i64);
    /// What the system holds now, seen without the connector under test.
    async fn holds(&self) -> Holds;
    /// Removes what the subject made outside the process (a table in a shared database).
    async fn finish(self: Box<Self>) {}
}

pub fn sys() -> SystemId {
    SystemId::new("erp").unwrap()
}

fn record(n: Names, id: i64, name: &str, amount: &str) -> Fields {
    Fields::new()
        .with(n.id, id)
        .with(n.name, name)
        .with(n.amount, Value::decimal_str(amount).unwrap())
}

fn id_of(n: Names, f: &Fields) -> i64 {
    match f.get(n.id) {
        Some(Value::Int(i)) => *i,
        other => panic!("{}: {other:?}", n.id),
    }
}

fn dec(s: &str) -> Value {
    Value::decimal_str(s).unwrap()
}

fn ok_key(r: &WriteResult) -> Key {
    match r {
        WriteResult::Ok { key } => key.clone(),
        other => panic!("write failed: {other:?}"),
    }
}

fn engine() -> Engine {
    crate::common::memory_engine("cc")
}

fn job(systems: Vec<Arc<dyn Connector>>, roles: Option<(bool, bool)>) -> SyncJob {
    let mut options = JobOptions::default();
    if let Some((first, rest)) = roles {
        for (i, c) in systems.iter().enumerate() {
            let write = if i == 0 { first } else { rest };
            options.roles.insert(
                c.system().clone(),
                Role {
                    read: i == 0,
                    write,
                },
            );
        }
    }
    SyncJob {
        name: "cc".into(),
        systems,
        policy: Policy::new(FieldPolicy::Newest, DeleteRule::DeleteWins),
        normalize: NormalizeOptions::default(),
        batch_size: 50,
        options,
    }
}

/// A read from the start returns every record once, decoded.
pub async fn reads_every_record(s: &dyn Subject) {
    let n = s.names();
    for i in 0..25 {
        s.insert(i, &format!("row {i}"), "12.50").await;
    }
    let c = s.connector().await;
    let rows = read_all(c.as_ref()).await;
    assert_eq!(rows.len(), 25, "{rows:?}");
    let mut keys: Vec<&Key> = rows.iter().map(|(k, _)| k).collect();
    if s.key_of(0).is_some() {
        let want: Vec<Key> = (0..25).map(|i| s.key_of(i).unwrap()).collect();
        assert_eq!(
            keys.iter().map(|k| (*k).clone()).collect::<Vec<_>>(),
            want,
            "key order and completeness"
        );
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 25, "each record once");
    let by_id: BTreeMap<i64, &Fields> = rows.iter().map(|(_, f)| (id_of(n, f), f)).collect();
    assert_eq!(
        by_id.keys().copied().collect::<Vec<_>>(),
        (0..25).collect::<Vec<_>>()
    );
    let f = by_id[&3];
    assert_eq!(f.get(n.name), Some(&Value::text("row 3")));
    assert_eq!(f.get(n.amount), Some(&dec("12.5")));
}

/// Creates (idempotent where the connector says so), updates by key, `NotFound`, a refused
/// value rejecting its record only, idempotent deletes.
pub async fn writes_creates_updates_and_deletes(s: &dyn Subject) {
    let n = s.names();
    let c = s.connector().await;
    let sys = sys();
    let creates: Vec<WriteOp> = (0..10)
        .map(|i| WriteOp::Upsert {
            entity: EntityId::derive(&sys, &i.to_string()),
            key: None,
            fields: record(n, i, "new", "3.10"),
        })
        .collect();
    let res = c.write(creates.clone()).await.unwrap();
    let keys: Vec<Key> = res.iter().map(ok_key).collect();
    if let Some(k) = s.key_of(4) {
        assert_eq!(keys[4], k);
    }
    if c.creates_idempotent() {
        // A retried batch does not duplicate.
        let again = c.write(creates).await.unwrap();
        assert_eq!(again.iter().map(ok_key).collect::<Vec<_>>(), keys);
    }
    assert_eq!(s.holds().await.len(), 10);
    // An update by key; one of a vanished record says so; the same content again succeeds.
    let mut ops = vec![
        WriteOp::Upsert {
            entity: EntityId::derive(&sys, "1"),
            key: Some(keys[1].clone()),
            fields: record(n, 1, "renamed", "3.10"),
        },
        WriteOp::Upsert {
            entity: EntityId::derive(&sys, "3"),
            key: Some(keys[3].clone()),
            fields: record(n, 3, "new", "3.10"),
        },
    ];
    if let Some(k) = s.missing_key() {
        ops.push(WriteOp::Upsert {
            entity: EntityId::derive(&sys, "99"),
            key: Some(k),
            fields: record(n, 99, "ghost", "1"),
        });
    }
    let res = c.write(ops).await.unwrap();
    assert_eq!(
        res[0],
        WriteResult::Ok {
            key: keys[1].clone()
        }
    );
    assert_eq!(
        res[1],
        WriteResult::Ok {
            key: keys[3].clone()
        }
    );
    if s.missing_key().is_some() {
        assert!(
            matches!(
                res[2],
                WriteResult::Err {
                    kind: WriteErrorKind::NotFound,
                    ..
                }
            ),
            "{res:?}"
        );
    }
    let held = s.holds().await;
    assert_eq!(
        held.len(),
        10,
        "the NotFound update created nothing: {held:?}"
    );
    assert_eq!(held[&1].0, "renamed");
    assert_eq!(held[&1].1, dec("3.1"));
    // A value the system refuses rejects that record only.
    for (field, value, word) in s.refused() {
        let ops: Vec<WriteOp> = [20, 21, 22]
            .into_iter()
            .map(|i| {
                let mut f = record(n, i, &format!("ok {i}"), "1");
                if i == 21 {
                    f = f.with(field, value.clone());
                }
                WriteOp::Upsert {
                    entity: EntityId::derive(&sys, &format!("{field}{i}")),
                    key: None,
                    fields: f,
                }
            })
            .collect();
        let res = c.write(ops).await.unwrap();
        assert!(matches!(res[0], WriteResult::Ok { .. }), "{res:?}");
        assert!(
            matches!(&res[1], WriteResult::Err { kind: WriteErrorKind::Rejected, message } if message.contains(word)),
            "{field} = {value:?}: {res:?}"
        );
        assert!(matches!(res[2], WriteResult::Ok { .. }), "{res:?}");
        let dels: Vec<WriteOp> = [&res[0], &res[2]]
            .into_iter()
            .zip([20, 22])
            .map(|(r, i)| WriteOp::Delete {
                entity: EntityId::derive(&sys, &format!("{field}{i}")),
                key: ok_key(r),
            })
            .collect();
        c.write(dels).await.unwrap();
        assert_eq!(s.holds().await.len(), 10, "{field}");
    }
    // Deletes, idempotent.
    let dels: Vec<WriteOp> = [2usize, 5, 7]
        .iter()
        .map(|i| WriteOp::Delete {
            entity: EntityId::derive(&sys, &i.to_string()),
            key: keys[*i].clone(),
        })
        .collect();
    for _ in 0..2 {
        let res = c.write(dels.clone()).await.unwrap();
        assert!(
            res.iter().all(|r| matches!(r, WriteResult::Ok { .. })),
            "{res:?}"
        );
    }
    let held = s.holds().await;
    assert_eq!(
        held.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 3, 4, 6, 8, 9]
    );
}

/// Through the engine with a memory system on the other side: what the connector wrote is not
/// read back as a change; a native edit flows back; a native hard delete propagates.
pub async fn own_writes_are_not_read_back_as_changes(s: &dyn Subject) {
    let n = s.names();
    let mem = Arc::new(MemorySystem::new(SystemId::new("mem").unwrap()));
    for i in 0..20 {
        mem.user_create(record(n, i, &format!("from mem {i}"), "7.25"));
    }
    let j = job(vec![mem.clone(), s.connector().await], None);
    let e = engine();
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(r.written.get("erp"), Some(&20), "{r:?}");
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(
        (r.changed, r.total_written()),
        (0, 0),
        "own writes read back as changes: {r:?}"
    );
    s.update_name(4, "edited natively").await;
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(
        (r.changed, r.written.get("mem").copied()),
        (1, Some(1)),
        "{r:?}"
    );
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!((r.changed, r.total_written()), (0, 0), "{r:?}");
    s.delete(7).await;
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(r.written.get("mem"), Some(&1), "{r:?}");
    let left: Vec<i64> = mem.rows().values().map(|r| id_of(n, &r.fields)).collect();
    assert_eq!(left.len(), 19);
    assert!(!left.contains(&7));
}

/// A connector built again resumes from the saved cursor: the record added meanwhile is read,
/// once; whatever is read again is unchanged.
pub async fn a_restart_from_a_saved_cursor_loses_and_repeats_nothing(s: &dyn Subject) {
    let n = s.names();
    for i in 0..10 {
        s.insert(i, &format!("row {i}"), "1").await;
    }
    let c = s.connector().await;
    let (first, cursor) = super::read_from(c.as_ref(), None).await;
    assert_eq!(first.len(), 10);
    let before: BTreeMap<Key, _> = first
        .iter()
        .map(|(k, f)| (k.clone(), f.content_hash()))
        .collect();
    drop(c);
    s.insert(10, "row 10", "1").await;
    let c = s.connector().await;
    let (next, _) = super::read_from(c.as_ref(), cursor).await;
    let mut new = Vec::new();
    for (k, f) in &next {
        match before.get(k) {
            Some(h) => assert_eq!(*h, f.content_hash(), "{k} read again, changed"),
            None => new.push(id_of(n, f)),
        }
    }
    assert_eq!(new, vec![10], "exactly the new record is new: {next:?}");
}

/// As a destination (migrate from a memory system): it ends up holding what the source holds,
/// a second pass writes nothing, and edits and deletes at the source arrive.
pub async fn a_destination_holds_what_the_source_holds(s: &dyn Subject) {
    let n = s.names();
    let src = Arc::new(MemorySystem::new(SystemId::new("src").unwrap()));
    let mut keys = Vec::new();
    for i in 0..15 {
        keys.push(src.user_create(record(n, i, &format!("src {i}"), &format!("{i}.50"))));
    }
    let j = job(vec![src.clone(), s.connector().await], Some((false, true)));
    let e = engine();
    let want = |src: &MemorySystem| -> Holds {
        src.rows()
            .values()
            .map(|r| {
                let name = match r.fields.get(n.name) {
                    Some(Value::Text(t)) => t.clone(),
                    other => panic!("{other:?}"),
                };
                (
                    id_of(n, &r.fields),
                    (name, r.fields.get(n.amount).cloned().unwrap()),
                )
            })
            .collect()
    };
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(r.written.get("erp"), Some(&15), "{r:?}");
    assert_eq!(s.holds().await, want(&src));
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(r.total_written(), 0, "{r:?}");
    src.user_update(&keys[3], record(n, 3, "src 3 edited", "3.50"));
    src.user_delete(&keys[9]);
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(r.written.get("erp"), Some(&2), "{r:?}");
    assert_eq!(s.holds().await, want(&src));
}
