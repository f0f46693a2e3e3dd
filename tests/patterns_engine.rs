//! The engine's pattern options over in-memory systems: one-way roles (migrate, broadcast),
//! failure isolation, correlate (only matched entities, nothing of the unmatched stored, late
//! matches fetched), aggregate (match keys, source priority, provenance) and dry runs.

use concord::connector::memory::MemorySystem;
use concord::connector::Connector;
use concord::core::{DeleteRule, FieldPolicy, MatchField, MatchSpec, Normalize, Policy};
use concord::engine::{Engine, JobOptions, Role, SyncJob};
use concord::model::{Fields, InstanceId, NormalizeOptions, SystemId, Value};
use concord::store::{MemoryStore, StateStore, Store};
use std::collections::BTreeMap;
use std::sync::Arc;

fn sys(n: &str) -> Arc<MemorySystem> {
    Arc::new(MemorySystem::new(SystemId::new(n).unwrap()))
}

fn job(systems: &[&Arc<MemorySystem>], policy: Policy, options: JobOptions) -> SyncJob {
    SyncJob {
        name: "p".into(),
        systems: systems
            .iter()
            .map(|s| (*s).clone() as Arc<dyn Connector>)
            .collect(),
        policy,
        normalize: NormalizeOptions::default(),
        batch_size: 10,
        options,
    }
}

fn engine() -> (Engine, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let e = Engine::new(StateStore::open(store.clone(), InstanceId::new("n1").unwrap()).unwrap());
    (e, store)
}

fn roles(list: &[(&str, bool, bool)]) -> BTreeMap<SystemId, Role> {
    list.iter()
        .map(|(n, read, write)| {
            (
                SystemId::new(*n).unwrap(),
                Role {
                    read: *read,
                    write: *write,
                },
            )
        })
        .collect()
}

fn names(s: &MemorySystem, field: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .rows()
        .values()
        .filter_map(|r| r.fields.get(field).map(|v| v.plain_text()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn one_way_roles_and_isolated_destinations() {
    let (src, d1, d2) = (sys("src"), sys("d1"), sys("d2"));
    for i in 0..5 {
        src.user_create(Fields::new().with("name", format!("r{i}")));
    }
    let options = JobOptions {
        roles: roles(&[
            ("src", true, false),
            ("d1", false, true),
            ("d2", false, true),
        ]),
        isolate_failures: true,
        ..JobOptions::default()
    };
    let j = job(
        &[&src, &d1, &d2],
        Policy::new(FieldPolicy::Newest, DeleteRule::DeleteWins),
        options,
    );
    let (e, _) = engine();
    // d2 is down: d1 still gets everything; d2's writes wait in its outbox.
    d2.fail_next_calls(1);
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(r.written.get("d1"), Some(&5));
    assert!(r.errors.contains_key("d2"), "{r:?}");
    assert!(d2.rows().is_empty());
    assert_eq!(
        e.state().outbox_len(&SystemId::new("d2").unwrap()).unwrap(),
        5
    );
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(r.written.get("d2"), Some(&5), "{r:?}");
    assert!(r.errors.is_empty());
    // Destinations are never read: an edit there does not flow back to the source...
    let (k, _) = d1.rows().into_iter().next().unwrap();
    d1.user_update(&k, Fields::new().with("name", "edited in d1"));
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(r.total_written(), 0);
    assert!(!names(&src, "name").contains(&"edited in d1".to_string()));
    // ... and sources are never written: a source change reaches every destination.
    let (k, _) = src.rows().into_iter().next().unwrap();
    src.user_update(&k, Fields::new().with("name", "r0 v2"));
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(
        (
            r.written.get("d1"),
            r.written.get("d2"),
            r.written.get("src")
        ),
        (Some(&1), Some(&1), None)
    );
    assert_eq!(src.write_count(), 0);
}

fn by_email() -> MatchSpec {
    MatchSpec {
        fields: vec![MatchField {
            field: "email".into(),
            normalize: Normalize::Email,
        }],
        key: Some([42; 32]),
    }
}

fn dump(store: &MemoryStore) -> Vec<u8> {
    let mut all = Vec::new();
    store
        .scan(&[], None, &mut |k, v| {
            all.extend_from_slice(k);
            all.extend_from_slice(v);
            true
        })
        .unwrap();
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn correlate_syncs_only_matched_entities_and_stores_nothing_of_the_rest() {
    let (a, b) = (sys("a"), sys("b"));
    a.user_create(
        Fields::new()
            .with("email", "Only.In.A@example.com")
            .with("tier", "gold"),
    );
    let shared_a = a.user_create(
        Fields::new()
            .with("email", "both@example.com")
            .with("tier", "silver"),
    );
    b.user_create(
        Fields::new()
            .with("email", " BOTH@example.com")
            .with("tier", "silver"),
    );
    b.user_create(
        Fields::new()
            .with("email", "only.in.b@example.com")
            .with("tier", "bronze"),
    );
    let options = JobOptions {
        matching: Some(by_email()),
        correlate: true,
        ..JobOptions::default()
    };
    let j = job(
        &[&a, &b],
        Policy::new(FieldPolicy::Newest, DeleteRule::DeleteWins),
        options,
    );
    let (e, store) = engine();
    let r = e.sync(&j, None).await.unwrap();
    // Matched through the normalised e-mail; the raw texts differ, so the newer one is written
    // to the other side (an update, not a create).
    assert_eq!((r.matched, r.total_written()), (1, 1), "{r:?}");
    assert_eq!(
        (a.rows().len(), b.rows().len()),
        (2, 2),
        "nothing created on either side"
    );
    let raw = dump(&store);
    for secret in ["only.in.a", "Only.In.A", "only.in.b", "gold", "bronze"] {
        assert!(!contains(&raw, secret), "{secret} must not be stored");
    }
    // The matched pair syncs both ways.
    a.user_update(
        &shared_a,
        Fields::new()
            .with("email", "both@example.com")
            .with("tier", "platinum"),
    );
    e.sync(&j, None).await.unwrap();
    assert!(names(&b, "tier").contains(&"platinum".to_string()));
    // A late match: b gains a record matching a's lonely one; a's record is fetched again.
    b.user_create(
        Fields::new()
            .with("email", "only.in.a@EXAMPLE.com")
            .with("tier", "gold"),
    );
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(r.matched, 1, "{r:?}");
    let a_key = a
        .rows()
        .into_iter()
        .find(|(_, r)| r.fields.get("tier") == Some(&Value::text("gold")))
        .unwrap()
        .0;
    a.user_update(
        &a_key,
        Fields::new()
            .with("email", "only.in.a@EXAMPLE.com")
            .with("tier", "gold+"),
    );
    e.sync(&j, None).await.unwrap();
    assert!(names(&b, "tier").contains(&"gold+".to_string()));
    assert_eq!(
        (a.rows().len(), b.rows().len()),
        (2, 3),
        "still no record created"
    );
}

#[tokio::test]
async fn aggregate_by_match_key_with_priority_and_provenance() {
    let (crm, erp, report) = (sys("crm"), sys("erp"), sys("report"));
    crm.user_create(
        Fields::new()
            .with("email", "ada@x.org")
            .with("phone", "1")
            .with("name", "Ada"),
    );
    erp.user_create(
        Fields::new()
            .with("email", "ADA@x.org")
            .with("phone", "2")
            .with("credit", 500i64),
    );
    erp.user_create(Fields::new().with("email", "bob@x.org").with("phone", "3"));
    let policy = Policy::new(
        FieldPolicy::Priority(vec![
            SystemId::new("erp").unwrap(),
            SystemId::new("crm").unwrap(),
        ]),
        DeleteRule::UpdateWins,
    );
    let options = JobOptions {
        roles: roles(&[
            ("crm", true, false),
            ("erp", true, false),
            ("report", false, true),
        ]),
        matching: Some(MatchSpec {
            key: None,
            ..by_email()
        }),
        provenance_field: Some("_sources".into()),
        ..JobOptions::default()
    };
    let j = job(&[&crm, &erp, &report], policy, options);
    let (e, _) = engine();
    e.sync(&j, None).await.unwrap();
    let rows = report.rows();
    assert_eq!(rows.len(), 2, "one golden record per match key");
    let ada = rows
        .values()
        .find(|r| r.fields.get("name").is_some())
        .unwrap()
        .fields
        .clone();
    assert_eq!(
        ada.get("phone"),
        Some(&Value::text("2")),
        "erp has priority"
    );
    assert_eq!(ada.get("credit"), Some(&Value::Int(500)));
    let prov = match ada.get("_sources") {
        Some(Value::Json(j)) => j.clone(),
        other => panic!("provenance missing: {other:?}"),
    };
    assert_eq!(prov["phone"], "erp");
    assert_eq!(prov["name"], "crm");
    assert_eq!(prov["credit"], "erp");
    assert_eq!(
        crm.write_count() + erp.write_count(),
        0,
        "sources are never written"
    );
}

#[tokio::test]
async fn dry_runs_plan_without_committing_or_writing() {
    let (a, b) = (sys("a"), sys("b"));
    for i in 0..3 {
        a.user_create(Fields::new().with("n", i as i64));
    }
    let mut j = job(
        &[&a, &b],
        Policy::new(FieldPolicy::Newest, DeleteRule::DeleteWins),
        JobOptions::default(),
    );
    j.options.dry_run = true;
    let (e, store) = engine();
    let before = dump(&store);
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(r.planned["b"].creates, 3, "{r:?}");
    assert!(b.rows().is_empty());
    assert_eq!(dump(&store), before, "nothing committed");
    j.options.dry_run = false;
    e.sync(&j, None).await.unwrap();
    let (k, _) = a.rows().into_iter().next().unwrap();
    a.user_update(&k, Fields::new().with("n", 99i64));
    a.user_delete(&a.rows().into_keys().nth(1).unwrap());
    j.options.dry_run = true;
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(
        (
            r.planned["b"].updates,
            r.planned["b"].deletes,
            r.planned["b"].creates
        ),
        (1, 1, 0),
        "{r:?}"
    );
}

/// Bug 9: a source that deletes its record no longer contributes to the golden record: fields
/// only it had disappear, fields others have come from them, provenance follows; when no
/// source holds the entity, the golden record is deleted. Before, the golden record kept the
/// deleted source's values and provenance.
#[tokio::test]
async fn aggregate_recomputes_the_golden_record_when_a_source_deletes() {
    let (a, b, report) = (sys("a"), sys("b"), sys("report"));
    let ka = a.user_create(
        Fields::new()
            .with("email", "ada@x.org")
            .with("phone", "A")
            .with("fax", "only in a"),
    );
    let kb = b.user_create(
        Fields::new()
            .with("email", "ada@x.org")
            .with("phone", "B")
            .with("city", "Oslo"),
    );
    let policy = Policy::new(
        FieldPolicy::Priority(vec![
            SystemId::new("a").unwrap(),
            SystemId::new("b").unwrap(),
        ]),
        DeleteRule::DeleteWins,
    );
    let options = JobOptions {
        roles: roles(&[
            ("a", true, false),
            ("b", true, false),
            ("report", false, true),
        ]),
        matching: Some(MatchSpec {
            key: None,
            ..by_email()
        }),
        provenance_field: Some("_sources".into()),
        ..JobOptions::default()
    };
    let j = job(&[&a, &b, &report], policy, options);
    let (e, _) = engine();
    e.sync(&j, None).await.unwrap();
    let golden = || report.rows().into_values().next().map(|r| r.fields);
    let g = golden().unwrap();
    assert_eq!(g.get("phone"), Some(&Value::text("A")));
    assert_eq!(g.get("fax"), Some(&Value::text("only in a")));
    a.user_delete(&ka);
    e.sync(&j, None).await.unwrap();
    let g = golden().unwrap();
    assert_eq!(g.get("phone"), Some(&Value::text("B")), "{g:?}");
    assert_eq!(
        g.get("fax"),
        None,
        "a field no remaining source has is removed"
    );
    assert_eq!(g.get("city"), Some(&Value::text("Oslo")));
    let Some(Value::Json(prov)) = g.get("_sources") else {
        panic!("{g:?}")
    };
    assert_eq!(prov["phone"], "b");
    assert!(prov.get("fax").is_none());
    b.user_delete(&kb);
    e.sync(&j, None).await.unwrap();
    assert!(report.rows().is_empty(), "no source holds it: deleted");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
        std::env::var("CONCORD_AGGREGATE_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64)
    ))]
    /// Bug 4: with N = 2..5 sources, any priority order, any set of fields per source and any
    /// order of reading them (some in one pass, the others later), every field of the golden
    /// record is the value of the first source in the priority order that has it, and the
    /// provenance names that source. Before, new versions were folded pairwise and the merged
    /// head attributed to one system, so a third source was compared with the second.
    #[test]
    fn aggregate_priority_is_exact_for_any_sources_and_read_order(
        n in 2usize..=5,
        order_seed in proptest::prelude::any::<u64>(),
        has in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<bool>(), 3), 5),
        first_pass in proptest::collection::vec(proptest::prelude::any::<bool>(), 5),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
            let srcs: Vec<Arc<MemorySystem>> = names.iter().map(|s| sys(s)).collect();
            let report = sys("report");
            // A priority order: a permutation of the sources from the seed.
            let mut prio: Vec<usize> = (0..n).collect();
            let mut x = order_seed;
            for i in (1..n).rev() {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                prio.swap(i, (x >> 33) as usize % (i + 1));
            }
            for (i, s) in srcs.iter().enumerate() {
                let mut f = Fields::new().with("email", "k@x.org");
                for (j, h) in has[i].iter().enumerate() {
                    if *h {
                        f.set(format!("f{j}"), format!("from s{i}"));
                    }
                }
                s.user_create(f);
            }
            let mut roles_list: Vec<(&str, bool, bool)> =
                names.iter().map(|s| (s.as_str(), true, false)).collect();
            roles_list.push(("report", false, true));
            let options = JobOptions {
                roles: roles(&roles_list),
                matching: Some(MatchSpec { key: None, ..by_email() }),
                provenance_field: Some("_sources".into()),
                ..JobOptions::default()
            };
            let policy = Policy::new(
                FieldPolicy::Priority(prio.iter().map(|&i| SystemId::new(&names[i]).unwrap()).collect()),
                DeleteRule::UpdateWins,
            );
            let mut all: Vec<&Arc<MemorySystem>> = srcs.iter().collect();
            all.push(&report);
            let j = job(&all, policy, options);
            let (e, _) = engine();
            let early: Vec<SystemId> = (0..n)
                .filter(|i| first_pass[*i])
                .map(|i| SystemId::new(&names[i]).unwrap())
                .chain([SystemId::new("report").unwrap()])
                .collect();
            e.sync(&j, Some(&early)).await.unwrap();
            e.sync(&j, None).await.unwrap();
            let rows = report.rows();
            assert_eq!(rows.len(), 1, "{rows:?}");
            let g = rows.into_values().next().unwrap().fields;
            let Some(Value::Json(prov)) = g.get("_sources").cloned() else {
                panic!("{g:?}")
            };
            for j in 0..3 {
                let field = format!("f{j}");
                let want = prio.iter().find(|&&i| has[i][j]);
                match want {
                    Some(&i) => {
                        assert_eq!(g.get(&field), Some(&Value::text(format!("from s{i}"))), "{field} with priority {prio:?}, has {has:?}: {g:?}");
                        assert_eq!(prov[&field], names[i].as_str(), "{field}");
                    }
                    None => assert_eq!(g.get(&field), None),
                }
            }
        });
    }
}
