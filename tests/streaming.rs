//! The streaming pass: a pass plans, checkpoints and writes its observations a chunk at a
//! time. What a read cut short part-way leaves (the chunks flushed before the cut, nothing
//! after it, no cursor moved, no delete inferred), and deletes held for the delete guard until
//! the read completes. (The model-based test runs random scenarios with small chunks.)

use async_trait::async_trait;
use concord::connector::memory::MemorySystem;
use concord::connector::{Change, Connector, ConnectorError, ReadPage, WriteOp, WriteResult};
use concord::core::{DeleteRule, FieldPolicy, Policy};
use concord::engine::{DeleteGuard, Engine, JobOptions, Role, SyncJob};
use concord::model::{Fields, Key, NormalizeOptions, SystemId};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A source whose change feed is scripted, page by page, for each pass; it can fail at a page.
struct Feed {
    system: SystemId,
    pages: Mutex<Vec<Vec<Change>>>,
    fail_at: Mutex<Option<usize>>,
    reads: AtomicU64,
}

impl Feed {
    fn new() -> Arc<Self> {
        Arc::new(Feed {
            system: SystemId::new("src").unwrap(),
            pages: Mutex::new(Vec::new()),
            fail_at: Mutex::new(None),
            reads: AtomicU64::new(0),
        })
    }

    /// The next pass reads these pages (and fails at page `fail_at`, counted from 0).
    fn script(&self, pages: Vec<Vec<Change>>, fail_at: Option<usize>) {
        *self.pages.lock().unwrap() = pages;
        *self.fail_at.lock().unwrap() = fail_at;
    }
}

fn upsert(key: &str, n: i64) -> Change {
    Change {
        key: Key::new(key),
        entity_hint: None,
        fields: Some(Fields::new().with("name", key).with("n", n)),
        modstamp: None,
    }
}

fn delete(key: &str) -> Change {
    Change {
        key: Key::new(key),
        entity_hint: None,
        fields: None,
        modstamp: None,
    }
}

fn key(i: usize) -> String {
    format!("k{i:02}")
}

#[async_trait]
impl Connector for Feed {
    fn system(&self) -> &SystemId {
        &self.system
    }

    async fn read(&self, cursor: Option<&[u8]>) -> Result<ReadPage, ConnectorError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        // The cursor between pages is the next page's index; the one after the last is "end".
        let at: usize = cursor
            .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok())
            .unwrap_or(0);
        if *self.fail_at.lock().unwrap() == Some(at) {
            return Err(ConnectorError {
                system: "src".into(),
                object: "feed".into(),
                message: format!("connection reset at page {at}"),
                retryable: true,
            });
        }
        let pages = self.pages.lock().unwrap();
        let more = at + 1 < pages.len();
        Ok(ReadPage {
            changes: pages.get(at).cloned().unwrap_or_default(),
            cursor: Some(if more {
                (at + 1).to_string().into_bytes()
            } else {
                b"end".to_vec()
            }),
            more,
            complete: false,
        })
    }

    async fn write(&self, _ops: Vec<WriteOp>) -> Result<Vec<WriteResult>, ConnectorError> {
        panic!("the source is never written")
    }
}

/// `src` (read only) into `dst` (write only), in chunks of `chunk` records.
fn job(src: &Arc<Feed>, dst: &Arc<MemorySystem>, chunk: usize) -> SyncJob {
    let roles: BTreeMap<SystemId, Role> = [
        (
            src.system().clone(),
            Role {
                read: true,
                write: false,
            },
        ),
        (
            dst.system().clone(),
            Role {
                read: false,
                write: true,
            },
        ),
    ]
    .into();
    SyncJob {
        name: "stream".into(),
        systems: vec![
            src.clone() as Arc<dyn Connector>,
            dst.clone() as Arc<dyn Connector>,
        ],
        policy: Policy::new(FieldPolicy::Newest, DeleteRule::DeleteWins),
        normalize: NormalizeOptions::default(),
        batch_size: 3,
        options: JobOptions {
            roles,
            chunk_size: Some(chunk),
            delete_guard: Some(DeleteGuard::default()),
            ..Default::default()
        },
    }
}

fn values(dst: &MemorySystem) -> BTreeMap<String, i64> {
    dst.rows()
        .into_values()
        .map(|r| {
            let name = match r.fields.get("name") {
                Some(concord::model::Value::Text(s)) => s.clone(),
                other => panic!("{other:?}"),
            };
            let n = match r.fields.get("n") {
                Some(concord::model::Value::Int(n)) => *n,
                other => panic!("{other:?}"),
            };
            (name, n)
        })
        .collect()
}

/// Pages of `per` upserts of keys `0..n`, value `v`.
fn pages(n: usize, per: usize, v: i64) -> Vec<Vec<Change>> {
    (0..n)
        .collect::<Vec<_>>()
        .chunks(per)
        .map(|c| c.iter().map(|i| upsert(&key(*i), v)).collect())
        .collect()
}

fn engine() -> Engine {
    crate::common::memory_engine("n1")
}

#[tokio::test]
async fn a_read_cut_short_keeps_the_chunks_flushed_before_the_cut_and_nothing_after() {
    let src = Feed::new();
    let dst = Arc::new(MemorySystem::new(SystemId::new("dst").unwrap()));
    let e = engine();
    let j = job(&src, &dst, 4);

    // 12 records in 6 pages of 2; the read fails at page 3 (the fourth). The chunk flushed at
    // the boundary before it (pages 0 and 1: 4 records) is written; page 2, read whole but not
    // flushed when the read failed, is not.
    src.script(pages(12, 2, 1), Some(3));
    let err = e.sync(&j, None).await.unwrap_err();
    assert!(err.to_string().contains("page 3"), "{err}");
    let got = values(&dst);
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        (0..4).map(key).collect::<Vec<_>>(),
        "exactly the first chunk is written: {got:?}"
    );
    // The cursor did not move: the next pass reads from the start again.
    assert_eq!(e.state().cursor("stream", src.system()).unwrap(), None);

    // The next pass reads everything again; what the first chunk wrote compares equal and is
    // not written twice.
    src.script(pages(12, 2, 1), None);
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(values(&dst).len(), 12);
    assert_eq!(r.written.get("dst"), Some(&8), "{r:?}");
    assert_eq!(r.read.get("src"), Some(&12), "{r:?}");
    assert_eq!(
        e.state().cursor("stream", src.system()).unwrap(),
        Some(b"end".to_vec())
    );
    assert_eq!(e.state().outbox_len(dst.system()).unwrap(), 0);
}

#[tokio::test]
async fn deletes_met_mid_read_wait_for_the_delete_guard_at_the_end_of_the_read() {
    let src = Feed::new();
    let dst = Arc::new(MemorySystem::new(SystemId::new("dst").unwrap()));
    let e = engine();
    let j = job(&src, &dst, 2);
    src.script(pages(20, 4, 1), None);
    e.sync(&j, None).await.unwrap();
    assert_eq!(values(&dst).len(), 20);

    // The feed reports three deletes first (15 % of the 20 synced: over the guard's 10 %),
    // then eight updates over two pages. The chunk holding the deletes is flushed before the
    // updates are read; the deletes must not go out before the guard has seen the whole read.
    let mut feed = vec![vec![delete(&key(0)), delete(&key(1)), delete(&key(2))]];
    feed.extend(
        (10..18)
            .collect::<Vec<_>>()
            .chunks(4)
            .map(|c| c.iter().map(|i| upsert(&key(*i), 2)).collect()),
    );
    src.script(feed, None);
    let r = e.sync(&j, None).await.unwrap();
    let held = &r.held_deletes["dst"];
    assert_eq!((held.deletes, held.synced), (3, 20), "{r:?}");
    let got = values(&dst);
    assert_eq!(got.len(), 20, "no delete went out: {got:?}");
    // Updates flushed in chunks before the end were written (nothing deletes them).
    assert!((10..14).all(|i| got[&key(i)] == 2), "{got:?}");

    // Allowed, the held deletes go out with the next pass (the feed has nothing new).
    let mut allow = job(&src, &dst, 2);
    allow.options.allow_deletes = true;
    src.script(vec![vec![]], None);
    let r = e.sync(&allow, None).await.unwrap();
    assert!(r.held_deletes.is_empty(), "{r:?}");
    let got = values(&dst);
    assert_eq!(got.len(), 17, "{got:?}");
    assert!(!got.contains_key(&key(0)) && (10..18).all(|i| got[&key(i)] == 2));
}

fn engine_on(store: Arc<dyn concord::store::Store>) -> Engine {
    Engine::new(
        concord::store::StateStore::open(store, concord::model::InstanceId::new("n1").unwrap())
            .unwrap(),
    )
}

/// A chunk flush writes a write-only target straight from its plan: the chunk's records are
/// written and committed with it, no outbox mark stored for them; only the last flush (where
/// the delete guard must see the whole pass before anything goes out) queues its marks.
#[tokio::test]
async fn chunk_flushes_write_a_write_only_target_without_storing_outbox_marks() {
    let src = Feed::new();
    let dst = Arc::new(MemorySystem::new(SystemId::new("dst").unwrap()));
    // Counts the outbox marks written through the store.
    let marks = Arc::new(AtomicU64::new(0));
    let count = marks.clone();
    let store = Arc::new(crate::common::Intercepted {
        inner: Arc::new(concord::store::MemoryStore::new()),
        on_get: Box::new(|_| Ok(())),
        on_apply: Box::new(move |batch| {
            let n = batch
                .ops()
                .iter()
                .filter(|(k, v)| k.first() == Some(&b'o') && v.is_some())
                .count();
            count.fetch_add(n as u64, Ordering::SeqCst);
        }),
    });
    let e = engine_on(store.clone());
    let j = job(&src, &dst, 4);
    // 14 records in pages of 2: chunks flushed after 4, 8 and 12 records, the last 2 at the end.
    src.script(pages(14, 2, 1), None);
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(values(&dst).len(), 14);
    assert_eq!(r.written.get("dst"), Some(&14), "{r:?}");
    assert_eq!(
        marks.load(Ordering::SeqCst),
        2,
        "only the last flush's records were marked"
    );
    assert_eq!(e.state().outbox_len(dst.system()).unwrap(), 0);
    for i in 0..14 {
        let ent = e
            .state()
            .entity_for(src.system(), &Key::new(key(i)))
            .unwrap()
            .unwrap();
        let snap = e.state().snapshot(dst.system(), &ent).unwrap().unwrap();
        assert_eq!(snap.hash, e.state().head(&ent).unwrap().unwrap().hash);
        assert!(e.state().native_key(&ent, dst.system()).unwrap().is_some());
    }
}

/// A target that fails part-way through a chunk's direct writes: what it did not take keeps
/// its outbox mark (committed with the chunk's plan), and the next pass delivers it.
#[tokio::test]
async fn a_direct_write_that_fails_keeps_the_marks_of_what_was_not_written() {
    let src = Feed::new();
    let dst = Arc::new(MemorySystem::new(SystemId::new("dst").unwrap()));
    let e = engine();
    let j = job(&src, &dst, 6);
    // The first write call (3 records of the first chunk) goes through, the second fails.
    dst.fail_calls_after(1, 1);
    src.script(pages(12, 2, 1), None);
    let err = e.sync(&j, None).await.unwrap_err();
    assert!(err.to_string().contains("dst"), "{err}");
    assert_eq!(values(&dst).len(), 3);
    // The other 3 of the chunk are queued, with the chunk's plan committed.
    assert_eq!(e.state().outbox_len(dst.system()).unwrap(), 3);
    src.script(pages(12, 2, 1), None);
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(values(&dst).len(), 12, "{r:?}");
    assert_eq!(e.state().outbox_len(dst.system()).unwrap(), 0);
}

/// The store dies at every one of its operations in turn during a chunked pass whose chunks
/// are written directly; after a restart, the next pass leaves the target holding every
/// record with its latest value and nothing queued.
#[tokio::test]
async fn a_crash_anywhere_in_a_directly_written_pass_loses_nothing() {
    use concord::store::{FaultKind, FaultStore};
    let probe_store = Arc::new(FaultStore::new());
    let probe_src = Feed::new();
    let probe_dst = Arc::new(MemorySystem::new(SystemId::new("dst").unwrap()));
    let pe = engine_on(probe_store.clone());
    let before = probe_store.ops();
    probe_src.script(pages(10, 2, 1), None);
    pe.sync(&job(&probe_src, &probe_dst, 4), None)
        .await
        .unwrap();
    let total = probe_store.ops() - before;
    assert!(total > 10, "{total}");
    for at in 1..=total {
        let store = Arc::new(FaultStore::new());
        let src = Feed::new();
        let dst = Arc::new(MemorySystem::new(SystemId::new("dst").unwrap()));
        let e = engine_on(store.clone());
        let j = job(&src, &dst, 4);
        store.arm(at, FaultKind::Crash);
        src.script(pages(10, 2, 1), None);
        assert!(
            e.sync(&j, None).await.is_err(),
            "the crash at op {at} fired"
        );
        store.restart();
        let e = engine_on(store.clone());
        // The source moved on meanwhile: every record's value is now 2.
        src.script(pages(10, 2, 2), None);
        e.sync(&j, None).await.unwrap();
        let got = values(&dst);
        assert_eq!(got.len(), 10, "crash at op {at}: {got:?}");
        assert!(got.values().all(|v| *v == 2), "crash at op {at}: {got:?}");
        assert_eq!(e.state().outbox_len(dst.system()).unwrap(), 0, "op {at}");
    }
}
