//! Deterministic engine scenarios (the model-based test covers random ones).

use concord::connector::memory::MemorySystem;
use concord::connector::Connector;
use concord::core::{DeleteRule, FieldPolicy, Policy};
use concord::engine::{Engine, SyncJob};
use concord::model::{Fields, InstanceId, Key, NormalizeOptions, SystemId, Value};
use concord::store::{MemoryStore, SledStore, StateStore, Store};
use std::sync::Arc;

struct Setup {
    a: Arc<MemorySystem>,
    b: Arc<MemorySystem>,
    job: SyncJob,
}

fn setup(policy: Policy) -> Setup {
    let a = Arc::new(MemorySystem::new(SystemId::new("a").unwrap()));
    let b = Arc::new(MemorySystem::new(SystemId::new("b").unwrap()));
    let job = SyncJob {
        name: "t".into(),
        systems: vec![
            a.clone() as Arc<dyn Connector>,
            b.clone() as Arc<dyn Connector>,
        ],
        policy,
        normalize: NormalizeOptions::default(),
        batch_size: 10,
        options: Default::default(),
    };
    Setup { a, b, job }
}

fn engine() -> Engine {
    crate::common::memory_engine("n1")
}

fn only(sys: &MemorySystem) -> (Key, Fields) {
    let rows = sys.rows();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (k, r) = rows.into_iter().next().unwrap();
    (k, r.fields)
}

#[tokio::test]
async fn failed_writes_wait_in_the_outbox_and_go_out_later() {
    let s = setup(Policy::new(FieldPolicy::Newest, DeleteRule::DeleteWins));
    let e = engine();
    s.a.user_create(Fields::new().with("n", 1i64));
    // b is unreachable for the read: the pass fails, nothing is lost.
    s.b.fail_next_calls(1);
    assert!(e.sync(&s.job, None).await.is_err());
    assert!(s.b.rows().is_empty());
    // Sync only a: the write owed to b is recorded in b's outbox.
    e.sync(&s.job, Some(&[SystemId::new("a").unwrap()]))
        .await
        .unwrap();
    assert_eq!(
        e.state().outbox_len(&SystemId::new("b").unwrap()).unwrap(),
        1
    );
    assert!(s.b.rows().is_empty());
    let r = e.sync(&s.job, None).await.unwrap();
    assert_eq!(r.written.get("b"), Some(&1));
    assert_eq!(only(&s.b).1.get("n"), Some(&Value::Int(1)));
    assert_eq!(
        e.state().outbox_len(&SystemId::new("b").unwrap()).unwrap(),
        0
    );
    // The run log has every pass, the failed one too.
    let log = e.state().run_log().unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log.iter().filter(|r| r.status == "failed").count(), 1);
    assert!(log
        .iter()
        .any(|r| r.counts.contains(&("written.b".to_string(), 1))));
}

#[tokio::test]
async fn manual_policy_parks_the_field_in_the_conflict_queue() {
    let s = setup(
        Policy::new(FieldPolicy::Newest, DeleteRule::DeleteWins)
            .with_field("price", FieldPolicy::Manual),
    );
    let e = engine();
    s.a.user_create(Fields::new().with("price", 10i64).with("name", "x"));
    e.sync(&s.job, None).await.unwrap();
    let (ka, fa) = only(&s.a);
    let (kb, fb) = only(&s.b);
    s.a.user_update(&ka, fa.with("price", 11i64));
    s.b.user_update(&kb, fb.with("price", 12i64).with("name", "y"));
    let r = e.sync(&s.job, None).await.unwrap();
    assert_eq!(r.conflicts_parked, 1);
    let q = e.state().conflicts().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].field.as_deref(), Some("price"));
    assert_eq!(q[0].sides.len(), 2);
    // The non-conflicting field kept syncing; the parked one kept each side's value.
    assert_eq!(only(&s.a).1.get("name"), Some(&Value::text("y")));
    assert_eq!(only(&s.a).1.get("price"), Some(&Value::Int(11)));
    assert_eq!(only(&s.b).1.get("price"), Some(&Value::Int(12)));
    // And nothing flip-flops while it waits.
    let r = e.sync(&s.job, None).await.unwrap();
    assert_eq!(r.total_written(), 0, "{r:?}");
    assert_eq!(r.changed, 0);
}

#[tokio::test]
async fn same_business_value_in_another_form_is_not_a_change() {
    let s = setup(Policy::new(FieldPolicy::Newest, DeleteRule::DeleteWins));
    let e = engine();
    s.a.user_create(
        Fields::new()
            .with("amount", Value::decimal_str("12.50").unwrap())
            .with("note", "x"),
    );
    e.sync(&s.job, None).await.unwrap();
    let (kb, fb) = only(&s.b);
    // b rewrites the amount as 12.500 and adds an empty string: the same business content.
    s.b.user_update(
        &kb,
        fb.with("amount", Value::decimal_str("12.500").unwrap())
            .with("extra", ""),
    );
    let r = e.sync(&s.job, None).await.unwrap();
    assert_eq!(r.changed, 0, "{r:?}");
    assert_eq!(r.total_written(), 0);
}

#[tokio::test]
async fn state_survives_a_reopen_of_the_sled_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(Policy::new(FieldPolicy::Newest, DeleteRule::DeleteWins));
    let open = || {
        let st: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        Engine::new(StateStore::open(st, InstanceId::new("n1").unwrap()).unwrap())
    };
    {
        let e = open();
        s.a.user_create(Fields::new().with("n", 1i64));
        e.sync(&s.job, None).await.unwrap();
    }
    let e = open();
    let r = e.sync(&s.job, None).await.unwrap();
    assert_eq!(
        r.total_written(),
        0,
        "restart does not start from zero: {r:?}"
    );
    assert_eq!(r.changed, 0);
    let (ka, fa) = only(&s.a);
    s.a.user_update(&ka, fa.with("n", 2i64));
    let r = e.sync(&s.job, None).await.unwrap();
    assert_eq!(r.written.get("b"), Some(&1));
    assert_eq!(only(&s.b).1.get("n"), Some(&Value::Int(2)));
}

#[tokio::test]
async fn manual_delete_rule_holds_the_record_everywhere() {
    let s = setup(Policy::new(FieldPolicy::Newest, DeleteRule::Manual));
    let e = engine();
    s.a.user_create(Fields::new().with("n", 1i64));
    e.sync(&s.job, None).await.unwrap();
    let (ka, _) = only(&s.a);
    let (kb, fb) = only(&s.b);
    s.a.user_delete(&ka);
    s.b.user_update(&kb, fb.with("n", 2i64));
    let r = e.sync(&s.job, None).await.unwrap();
    assert_eq!(r.conflicts_parked, 1);
    assert_eq!(r.total_written(), 0, "held: nothing written {r:?}");
    assert!(s.a.rows().is_empty(), "not re-created while held");
    assert_eq!(
        only(&s.b).1.get("n"),
        Some(&Value::Int(2)),
        "not deleted while held"
    );
    let q = e.state().conflicts().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].field, None);
    let r = e.sync(&s.job, None).await.unwrap();
    assert_eq!(r.total_written(), 0);
}

/// A read cut off part-way (page 2 of 3 fails) is never used: nothing it returned is planned,
/// committed or written to the other systems, even when failures are isolated. Before, the first
/// page's records were created in `b` from a read that had failed.
#[tokio::test]
async fn a_read_that_fails_part_way_is_not_used() {
    let a = Arc::new(MemorySystem::new(SystemId::new("a").unwrap()).with_page_size(2));
    let b = Arc::new(MemorySystem::new(SystemId::new("b").unwrap()));
    let mut job = crate::common::two_way_job(
        "t",
        vec![
            a.clone() as Arc<dyn Connector>,
            b.clone() as Arc<dyn Connector>,
        ],
        10,
    );
    job.options.isolate_failures = true;
    let e = engine();
    for i in 0..5 {
        a.user_create(Fields::new().with("n", i as i64));
    }
    a.fail_calls_after(1, 1);
    let r = e.sync(&job, None).await.unwrap();
    assert!(r.errors.contains_key("a"), "{r:?}");
    assert_eq!(b.rows().len(), 0, "written from a failed read: {r:?}");
    assert_eq!(r.total_written(), 0);
    assert_eq!(e.state().outbox_len(b.system()).unwrap(), 0);
    // The next complete read syncs everything once.
    let r = e.sync(&job, None).await.unwrap();
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!(b.rows().len(), 5);
}

/// Customers and their orders, JSONL files `src` → `dst` under `d`: an order refers to its
/// customer (`customer_id`), so it waits until the customer is synced.
fn orders_config(d: &std::path::Path) -> concord::config::Config {
    let text = r#"[store]
dir = "state"
[systems.src]
type = "jsonl"
dir = "src"
[systems.dst]
type = "jsonl"
dir = "dst"
[jobs.customers]
pattern = "migrate"
systems = ["src", "dst"]
[jobs.customers.sides.src]
file = "customers.jsonl"
key = ["id"]
fields = { id = "id", name = "name" }
[jobs.customers.sides.dst]
file = "customers.jsonl"
key = ["id"]
fields = { id = "id", name = "name" }
[jobs.orders]
pattern = "bidirectional"
systems = ["src", "dst"]
[jobs.orders.sides.src]
file = "orders.jsonl"
key = ["id"]
[jobs.orders.sides.src.fields]
id = "id"
item = "item"
customer = { reference = "customers", field = "customer_id" }
[jobs.orders.sides.dst]
file = "orders.jsonl"
key = ["id"]
[jobs.orders.sides.dst.fields]
id = "id"
item = "item"
customer = { reference = "customers", field = "customer_id" }
"#
    .replace(
        "dir = \"src\"",
        &format!("dir = {:?}", d.join("src").display().to_string()),
    )
    .replace(
        "dir = \"dst\"",
        &format!("dir = {:?}", d.join("dst").display().to_string()),
    );
    concord::config::Config::parse(&text, &d.join("concord.toml")).unwrap()
}

/// Issue 13 finding: a reference whose look-up failed in the store read as "parent not synced
/// yet", so a store failure parked the record as waiting (written to the store) and the pass
/// ended without error. Now the read fails and nothing is parked.
#[tokio::test]
async fn a_store_failure_in_a_reference_look_up_fails_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("src")).unwrap();
    std::fs::write(
        d.join("src/customers.jsonl"),
        "{\"id\":\"c1\",\"name\":\"Alfreds\"}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("src/orders.jsonl"),
        "{\"id\":\"o1\",\"item\":\"Chai\",\"customer_id\":\"c1\"}\n",
    )
    .unwrap();
    let cfg = orders_config(d);
    // The cross-reference of customer c1 in `src`: tree 'x', system, 0x00, native key.
    // A store that fails reads of that key while armed.
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let on = armed.clone();
    let store = Arc::new(crate::common::Intercepted {
        inner: Arc::new(MemoryStore::new()),
        on_get: Box::new(move |key| {
            if on.load(std::sync::atomic::Ordering::SeqCst) && key == b"xsrc.customers.jsonl\x00c1"
            {
                return Err(concord::store::StoreError::Io(
                    "disk read failed (injected)".into(),
                ));
            }
            Ok(())
        }),
        on_apply: Box::new(|_| {}),
    });
    let state = StateStore::open(store.clone(), InstanceId::new("main").unwrap()).unwrap();
    let engine = Engine::new(state.clone());
    for job in ["customers", "orders"] {
        let j = concord::engine::build::build_job(&cfg, job, &state, false)
            .await
            .unwrap();
        let r = engine.sync(&j, None).await.unwrap();
        assert!(r.errors.is_empty(), "{job}: {r:?}");
    }
    assert!(state
        .entity_for(
            &SystemId::new("src.customers.jsonl").unwrap(),
            &Key::new("c1")
        )
        .unwrap()
        .is_some());
    // The order changes; reading it needs its customer's cross-reference, which the store
    // cannot read now.
    std::fs::write(
        d.join("src/orders.jsonl"),
        "{\"id\":\"o1\",\"item\":\"Chai tea\",\"customer_id\":\"c1\"}\n",
    )
    .unwrap();
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let j = concord::engine::build::build_job(&cfg, "orders", &state, false)
        .await
        .unwrap();
    let failed = match engine.sync(&j, None).await {
        Err(e) => e.to_string(),
        Ok(r) => format!("{:?}", r.errors),
    };
    armed.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(
        failed.contains("disk read failed"),
        "the pass did not fail: {failed}"
    );
    let waiting = state
        .waiting("orders", &SystemId::new("src").unwrap())
        .unwrap();
    assert!(
        waiting.is_empty(),
        "a store failure parked the order: {waiting:?}"
    );
    // Once the store answers again, the edit goes through.
    let r = engine.sync(&j, None).await.unwrap();
    assert!(r.errors.is_empty(), "{r:?}");
    let dst = std::fs::read_to_string(d.join("dst/orders.jsonl")).unwrap();
    assert!(dst.contains("Chai tea"), "{dst}");
}

/// A read that has a record wait for its parent stages the waiting record; the pass writes it
/// with its checkpoint. A dry run (`concord plan`) writes nothing: before, the mapped connector
/// wrote (and flushed) the waiting record from inside its read, dry run or not.
#[tokio::test]
async fn a_dry_run_leaves_no_waiting_record_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("src")).unwrap();
    let cfg = orders_config(d);
    std::fs::write(
        d.join("src/orders.jsonl"),
        "{\"id\":\"o1\",\"item\":\"Chai\",\"customer_id\":\"c1\"}\n",
    )
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let main = InstanceId::new("main").unwrap();
    let state = StateStore::open(store.clone(), main.clone()).unwrap();
    let engine = Engine::new(state.clone());
    let src = SystemId::new("src.orders.jsonl").unwrap();
    // What is durable: a state opened afresh on the same store.
    let durable = || {
        StateStore::open(store.clone(), main.clone())
            .unwrap()
            .waiting("orders", &src)
            .unwrap()
            .len()
    };
    let dry = concord::engine::build::build_job(&cfg, "orders", &state, true)
        .await
        .unwrap();
    let r = engine.sync(&dry, None).await.unwrap();
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!(durable(), 0, "the dry run wrote a waiting record");
    let job = concord::engine::build::build_job(&cfg, "orders", &state, false)
        .await
        .unwrap();
    engine.sync(&job, None).await.unwrap();
    assert_eq!(durable(), 1, "the pass did not keep the order waiting");
    // The customer arrives: the order is synced and leaves the waiting tree, durably.
    std::fs::write(
        d.join("src/customers.jsonl"),
        "{\"id\":\"c1\",\"name\":\"Alfreds\"}\n",
    )
    .unwrap();
    for name in ["customers", "orders"] {
        let j = concord::engine::build::build_job(&cfg, name, &state, false)
            .await
            .unwrap();
        let r = engine.sync(&j, None).await.unwrap();
        assert!(r.errors.is_empty(), "{name}: {r:?}");
    }
    assert_eq!(durable(), 0);
    let out = std::fs::read_to_string(d.join("dst/orders.jsonl")).unwrap();
    assert!(out.contains("Chai"), "{out}");
}
