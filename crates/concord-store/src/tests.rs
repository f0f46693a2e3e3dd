use super::*;
use concord_model::model::{Fields, InstanceId, Key, SystemId, Timestamp, VectorClock, Version};
use std::sync::Arc;

fn inst() -> InstanceId {
    InstanceId::new("n1").unwrap()
}

fn backends() -> Vec<(&'static str, Arc<dyn Store>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sled: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("db")).unwrap());
    vec![
        ("memory", Arc::new(MemoryStore::new()), None),
        ("fault", Arc::new(FaultStore::new()), None),
        ("sled", sled, Some(dir)),
    ]
}

fn version(n: i64) -> Version {
    let mut clock = VectorClock::new();
    clock.set(concord_model::model::ActorId(7), n as u64 + 1);
    Version::new(
        Some(Fields::new().with("n", n).with("name", format!("rec {n}"))),
        clock,
        Some(Timestamp(1_700_000_000_000 + n)),
        Some(SystemId::new("sf").unwrap()),
    )
}

#[test]
fn raw_trait_contract() {
    for (name, s, _dir) in backends() {
        let mut b = Batch::new();
        b.put(b"a1".to_vec(), b"x".to_vec());
        b.put(b"a2".to_vec(), b"y".to_vec());
        b.put(b"b1".to_vec(), b"z".to_vec());
        s.commit(b).unwrap();
        assert_eq!(s.get(b"a2").unwrap(), Some(b"y".to_vec()), "{name}");
        let mut seen = Vec::new();
        scan_prefix(s.as_ref(), b"a", &mut |k, _| {
            seen.push(k.to_vec());
            true
        })
        .unwrap();
        assert_eq!(seen, vec![b"a1".to_vec(), b"a2".to_vec()], "{name}");
        let mut first = Vec::new();
        s.scan(b"", None, &mut |k, _| {
            first.push(k.to_vec());
            false
        })
        .unwrap();
        assert_eq!(first.len(), 1, "{name}: scan stops when told");
        let mut b = Batch::new();
        b.delete(b"a1".to_vec());
        s.commit(b).unwrap();
        assert_eq!(s.get(b"a1").unwrap(), None, "{name}");
    }
}

#[test]
fn typed_state_round_trips() {
    for (name, s, _dir) in backends() {
        let st = StateStore::open(s, inst()).unwrap();
        let sf = SystemId::new("sf").unwrap();
        let e = concord_model::model::EntityId::derive(&sf, "001A");
        let mut cp = st.checkpoint();
        cp.put_head(&e, &version(1));
        cp.put_snapshot(&sf, &e, &version(1));
        let tomb = Version::new(None, VectorClock::new(), None, None);
        let e2 = concord_model::model::EntityId::derive(&sf, "001B");
        cp.put_snapshot(&sf, &e2, &tomb);
        cp.put_xref(&sf, &Key::new("001A"), &e);
        cp.put_cursor("job1", &sf, b"cursor-bytes");
        cp.outbox_put(
            &sf,
            &e,
            &OutboxEntry {
                enqueued_ms: 5,
                attempts: 0,
                last_error: None,
            },
        );
        cp.put_conflict(&ConflictEntry {
            job: "job1".into(),
            entity: e.0,
            field: Some("Phone".into()),
            base: vec![],
            sides: vec![],
            detected_ms: 9,
        });
        cp.log_run(&RunLogEntry {
            job: "job1".into(),
            started_ms: 1,
            finished_ms: 2,
            status: "ok".into(),
            counts: vec![("read".into(), 3)],
            message: None,
        });
        st.commit(cp).unwrap();
        assert_eq!(st.head(&e).unwrap(), Some(version(1)), "{name}");
        assert_eq!(st.snapshot(&sf, &e2).unwrap(), Some(tomb.clone()), "{name}");
        assert_eq!(st.entity_for(&sf, &Key::new("001A")).unwrap(), Some(e));
        assert_eq!(st.native_key(&e, &sf).unwrap(), Some(Key::new("001A")));
        assert_eq!(
            st.cursor("job1", &sf).unwrap().as_deref(),
            Some(&b"cursor-bytes"[..])
        );
        assert_eq!(st.outbox(&sf, 10).unwrap().len(), 1);
        assert_eq!(st.outbox_len(&sf).unwrap(), 1);
        assert_eq!(st.conflicts().unwrap().len(), 1);
        assert_eq!(st.conflicts_of(&e).unwrap().len(), 1);
        assert_eq!(st.run_log().unwrap()[0].counts[0].1, 3);
        let mut n = 0;
        st.scan_snapshots(&sf, &mut |_, _| {
            n += 1;
            true
        })
        .unwrap();
        assert_eq!(n, 2);
        assert!(st.verify().unwrap() >= 9, "{name}");
    }
}

#[test]
fn corrupt_entries_are_named_and_left_alone() {
    let s: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let st = StateStore::open(s.clone(), inst()).unwrap();
    let sf = SystemId::new("sf").unwrap();
    let e = concord_model::model::EntityId::derive(&sf, "1");
    let mut cp = st.checkpoint();
    cp.put_snapshot(&sf, &e, &version(3));
    st.commit(cp).unwrap();
    let key = layout::entity(&e);
    let mut bytes = s.get(&key).unwrap().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55; // flip content bits: hash no longer matches
    let mut b = Batch::new();
    b.put(key.clone(), bytes.clone());
    s.commit(b).unwrap();
    let err = st.snapshot(&sf, &e).unwrap_err().to_string();
    assert!(err.contains("'entity'") && err.contains("\\x"), "{err}");
    assert!(err.contains("hash"), "{err}");
    assert!(st.verify().is_err());
    assert_eq!(s.get(&key).unwrap(), Some(bytes), "never repaired silently");
    // Unknown entry version.
    let mut b = Batch::new();
    b.put(key.clone(), vec![9, 0]);
    s.commit(b).unwrap();
    assert!(st
        .snapshot(&sf, &e)
        .unwrap_err()
        .to_string()
        .contains("unknown entry version 9"));
}

#[test]
fn format_version_and_instance_are_checked() {
    let s: Arc<dyn Store> = Arc::new(MemoryStore::new());
    StateStore::open(s.clone(), inst()).unwrap();
    StateStore::open(s.clone(), inst()).unwrap();
    let other = StateStore::open(s.clone(), InstanceId::new("n2").unwrap());
    assert!(matches!(other, Err(StoreError::WrongInstance { .. })));
    let mut b = Batch::new();
    b.put(layout::meta("format"), 99u32.to_be_bytes().to_vec());
    s.commit(b).unwrap();
    let before = s.get(&layout::meta("format")).unwrap();
    let e = StateStore::open(s.clone(), inst()).err().unwrap();
    assert!(
        matches!(e, StoreError::UnsupportedFormat { found: 99, .. }),
        "{e}"
    );
    assert_eq!(
        s.get(&layout::meta("format")).unwrap(),
        before,
        "left untouched"
    );
    // Data without a marker.
    let foreign: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut b = Batch::new();
    b.put(b"hello".to_vec(), b"world".to_vec());
    foreign.commit(b).unwrap();
    assert!(matches!(
        StateStore::open(foreign, inst()),
        Err(StoreError::NotAConcordStore(_))
    ));
}

#[test]
fn sled_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let sf = SystemId::new("sf").unwrap();
    let e = concord_model::model::EntityId::derive(&sf, "1");
    {
        let st = StateStore::open(Arc::new(SledStore::open(&path).unwrap()), inst()).unwrap();
        let mut cp = st.checkpoint();
        cp.put_head(&e, &version(4));
        st.commit(cp).unwrap();
    }
    let st = StateStore::open(Arc::new(SledStore::open(&path).unwrap()), inst()).unwrap();
    assert_eq!(st.head(&e).unwrap(), Some(version(4)));
}

#[test]
fn fault_store_loses_only_unflushed_data() {
    let f = Arc::new(FaultStore::new());
    let mut b = Batch::new();
    b.put(b"k1".to_vec(), b"1".to_vec());
    f.commit(b).unwrap();
    let mut b = Batch::new();
    b.put(b"k2".to_vec(), b"2".to_vec());
    f.apply(b).unwrap();
    f.arm(1, FaultKind::Crash);
    assert!(f.flush().is_err());
    assert!(matches!(f.get(b"k1"), Err(StoreError::Crashed)));
    f.restart();
    assert_eq!(f.get(b"k1").unwrap(), Some(b"1".to_vec()));
    assert_eq!(
        f.get(b"k2").unwrap(),
        None,
        "unflushed write lost by the crash"
    );
    // A plain error changes nothing and the store goes on.
    f.arm(1, FaultKind::Error);
    let mut b = Batch::new();
    b.put(b"k3".to_vec(), b"3".to_vec());
    assert!(f.commit(b).is_err());
    assert_eq!(f.get(b"k3").unwrap(), None);
    assert_eq!(f.faults_fired(), 2);
}

/// Field origins survive a head round trip, are left out of snapshots, and malformed ones are
/// refused as corrupt (not decoded into something else).
#[test]
fn field_origins_round_trip_in_heads_only() {
    let mut origins = concord_model::model::FieldOrigins::new();
    origins.insert(Arc::from("name"), SystemId::new("erp").unwrap());
    let v = version(3).with_field_origins(origins.clone());
    assert_eq!(v.origin_of("name").unwrap().as_str(), "erp");
    assert_eq!(v.origin_of("n").unwrap().as_str(), "sf");
    let st = StateStore::open(Arc::new(MemoryStore::new()), inst()).unwrap();
    let e = concord_model::model::EntityId([9; 16]);
    let sys = SystemId::new("sf").unwrap();
    let mut cp = st.checkpoint();
    cp.put_head(&e, &v);
    cp.put_snapshot(&sys, &e, &v);
    st.commit(cp).unwrap();
    assert_eq!(st.head(&e).unwrap().unwrap().field_origins, origins);
    let snap = st.snapshot(&sys, &e).unwrap().unwrap();
    assert!(snap.field_origins.is_empty());
    assert_eq!(snap.hash, v.hash);
    let mut hashes = 0;
    st.scan_snapshot_hashes(&sys, &mut |_, h| {
        hashes += usize::from(h == v.hash);
        true
    })
    .unwrap();
    assert_eq!(hashes, 1);
    // An origin repeating the version's origin, or names out of order, is corruption.
    let mut buf = Vec::new();
    encode_version(&v, &mut buf);
    assert!(decode_version(b"h", &buf).is_ok());
    let mut bad = v.clone();
    bad.field_origins
        .insert(Arc::from("n"), SystemId::new("sf").unwrap());
    let mut buf = Vec::new();
    encode_version(&bad, &mut buf);
    assert!(decode_version(b"h", &buf).is_err());
}

/// What a format 2 store held of one entity (the test's expectation after migration).
struct LegacyEntity {
    e: concord_model::model::EntityId,
    head: Version,
    snapshots: Vec<(SystemId, Version)>,
    natives: Vec<(SystemId, Key)>,
}

/// Writes `n` entities as a format `format` (1 or 2) build laid them out: heads, snapshots
/// (shared content, own content, tombstones), both cross-reference directions, and an outbox
/// entry migration leaves alone.
fn legacy_store(s: &dyn Store, format: u32, n: i64) -> Vec<LegacyEntity> {
    use layout::legacy;
    let sf = SystemId::new("sf").unwrap();
    let pg = SystemId::new("pg").unwrap();
    let mut b = Batch::new();
    b.put(layout::meta("format"), format.to_be_bytes().to_vec());
    b.put(layout::meta("instance"), b"n1".to_vec());
    let mut out = Vec::new();
    let enc = |v: &Version, origins: bool| {
        let mut buf = Vec::new();
        if origins {
            state::encode_version(v, &mut buf);
        } else {
            state::encode_version_for_snapshot(v, &mut buf);
        }
        buf
    };
    for i in 0..n {
        let e = concord_model::model::EntityId::derive(&sf, &format!("k{i}"));
        let mut head = version(i);
        if format == 2 && i % 5 == 0 {
            head.field_origins
                .insert(std::sync::Arc::from("name"), pg.clone());
        }
        b.put(legacy::head(&e), enc(&head, true));
        let mut snapshots = vec![(
            sf.clone(),
            Version {
                field_origins: Default::default(),
                ..head.clone()
            },
        )];
        let mut natives = vec![(sf.clone(), Key::new(format!("k{i}")))];
        if i % 3 == 0 {
            snapshots.push((pg.clone(), version(i + 1)));
            natives.push((pg.clone(), Key::new(format!("p{i}"))));
        } else if i % 7 == 0 {
            snapshots.push((
                pg.clone(),
                Version::new(None, VectorClock::new(), None, None),
            ));
        }
        for (sys, v) in &snapshots {
            b.put(legacy::snapshot(sys, &e), enc(v, false));
        }
        for (sys, k) in &natives {
            b.put(legacy::xref_rev(&e, sys), k.as_str().as_bytes().to_vec());
            b.put(layout::xref(sys, k.as_str()), e.0.to_vec());
        }
        natives.sort();
        out.push(LegacyEntity {
            e,
            head,
            snapshots,
            natives,
        });
    }
    b.put(
        layout::outbox(&pg, &out[0].e),
        state::encode_entry_for_test(&OutboxEntry {
            enqueued_ms: 1,
            attempts: 0,
            last_error: None,
        }),
    );
    s.commit(b).unwrap();
    out
}

fn assert_migrated(name: &str, s: &dyn Store, st: &StateStore, want: &[LegacyEntity]) {
    use layout::legacy;
    for w in want {
        assert_eq!(st.head(&w.e).unwrap().as_ref(), Some(&w.head), "{name}");
        for (sys, v) in &w.snapshots {
            assert_eq!(st.snapshot(sys, &w.e).unwrap().as_ref(), Some(v), "{name}");
        }
        for (sys, k) in &w.natives {
            assert_eq!(
                st.native_key(&w.e, sys).unwrap().as_ref(),
                Some(k),
                "{name}"
            );
            assert_eq!(st.entity_for(sys, k).unwrap(), Some(w.e), "{name}");
        }
        assert_eq!(st.xrefs_of(&w.e).unwrap(), w.natives, "{name}");
    }
    for p in [legacy::HEAD, legacy::SNAPSHOT, legacy::XREF_REV] {
        let mut left = 0;
        scan_prefix(s, &[p], &mut |_, _| {
            left += 1;
            true
        })
        .unwrap();
        assert_eq!(left, 0, "{name}: legacy entries left under {}", p as char);
    }
    assert_eq!(
        s.get(&layout::meta("format")).unwrap(),
        Some(FORMAT_VERSION.to_be_bytes().to_vec()),
        "{name}"
    );
    assert_eq!(s.get(&layout::meta("migrating")).unwrap(), None, "{name}");
    let pg = SystemId::new("pg").unwrap();
    assert_eq!(
        st.outbox_len(&pg).unwrap(),
        1,
        "{name}: other trees untouched"
    );
    let mut n = 0;
    st.scan_snapshots(&pg, &mut |_, _| {
        n += 1;
        true
    })
    .unwrap();
    let expect = want.iter().filter(|w| w.snapshots.len() == 2).count();
    assert_eq!(n, expect, "{name}");
    st.verify().unwrap();
}

/// Format 1 and 2 stores open, are migrated to format 3 (entity entries), keep every head,
/// snapshot and cross-reference, on every backend; a later build's store is refused.
#[test]
fn format_1_and_2_stores_are_migrated_on_open() {
    assert_eq!(FORMAT_VERSION, 3);
    for format in [1, 2] {
        for (name, s, _dir) in backends() {
            let want = legacy_store(s.as_ref(), format, 300);
            let st = StateStore::open(s.clone(), inst()).unwrap();
            assert_migrated(name, s.as_ref(), &st, &want);
            // Shared snapshots: the entity entry of one whose sf snapshot equals its head
            // holds the content once.
            let raw = s.get(&layout::entity(&want[1].e)).unwrap().unwrap();
            let mut one = Vec::new();
            state::encode_version(&want[1].head, &mut one);
            assert!(
                raw.len() < one.len() + 80,
                "{name}: {} vs {}",
                raw.len(),
                one.len()
            );
        }
    }
}

/// Migration in many small batches, killed at every point along the way (the fault store
/// drops what was not flushed), always completes on a later open with nothing lost.
#[test]
fn a_migration_stopped_anywhere_resumes_on_the_next_open() {
    let probe = FaultStore::new();
    let want = legacy_store(&probe, 2, 60);
    let before = probe.ops();
    state::migrate_to_3_for_test(&probe, 16).unwrap();
    let total = probe.ops() - before;
    assert!(total > 20, "{total}");
    let mut kills = 0;
    for at in 1..=total {
        let s = Arc::new(FaultStore::new());
        legacy_store(s.as_ref(), 2, 60);
        s.arm(at, FaultKind::Crash);
        let r = state::migrate_to_3_for_test(s.as_ref(), 16);
        assert!(r.is_err(), "the kill at op {at} fired");
        kills += 1;
        s.restart();
        let st = StateStore::open(s.clone(), inst()).unwrap();
        assert_migrated(&format!("killed at op {at}"), s.as_ref(), &st, &want);
    }
    assert_eq!(kills, total);
}

/// A corrupt format 2 entry stops the migration before anything is written: the error names
/// the entry, and the store is still the format 2 store it was.
#[test]
fn a_corrupt_legacy_entry_leaves_the_store_as_it_was() {
    let s: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let want = legacy_store(s.as_ref(), 2, 40);
    let sf = SystemId::new("sf").unwrap();
    let key = layout::legacy::snapshot(&sf, &want[17].e);
    let mut v = s.get(&key).unwrap().unwrap();
    let last = v.len() - 1;
    v[last] ^= 0x55;
    let mut b = Batch::new();
    b.put(key, v);
    s.commit(b).unwrap();
    let mut before = Vec::new();
    s.scan(&[], None, &mut |k, v| {
        before.push((k.to_vec(), v.to_vec()));
        true
    })
    .unwrap();
    let err = StateStore::open(s.clone(), inst())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("format 2 snapshot entry") && err.contains("sf\\x00"),
        "{err}"
    );
    assert!(err.contains("hash"), "{err}");
    let mut after = Vec::new();
    s.scan(&[], None, &mut |k, v| {
        after.push((k.to_vec(), v.to_vec()));
        true
    })
    .unwrap();
    assert!(before == after, "nothing written");
}

/// A snapshot that shared its head's content keeps that content when the head moves on.
#[test]
fn a_shared_snapshot_keeps_its_content_when_the_head_changes() {
    for (name, s, _dir) in backends() {
        let st = StateStore::open(s.clone(), inst()).unwrap();
        let sf = SystemId::new("sf").unwrap();
        let pg = SystemId::new("pg").unwrap();
        let e = concord_model::model::EntityId::derive(&sf, "1");
        let version = |n: i64| {
            let mut v = version(n);
            let notes = format!("{n} ").repeat(100);
            v.content = v.content.map(|c| c.with("notes", notes));
            v.hash = v.content.as_ref().map(Fields::content_hash);
            v
        };
        let mut cp = st.checkpoint();
        cp.put_head(&e, &version(1));
        cp.put_snapshot(&sf, &e, &version(1));
        cp.put_snapshot(&pg, &e, &version(1));
        st.commit(cp).unwrap();
        let shared = s.get(&layout::entity(&e)).unwrap().unwrap().len();
        let mut cp = st.checkpoint();
        cp.put_head(&e, &version(2));
        cp.put_snapshot(&sf, &e, &version(2));
        st.commit(cp).unwrap();
        assert_eq!(st.head(&e).unwrap(), Some(version(2)), "{name}");
        assert_eq!(st.snapshot(&sf, &e).unwrap(), Some(version(2)), "{name}");
        assert_eq!(st.snapshot(&pg, &e).unwrap(), Some(version(1)), "{name}");
        // The one-read forms agree (a shared snapshot takes the head's decoded fields).
        assert_eq!(
            st.head_and_snapshots(&e, &[sf.clone(), pg.clone()])
                .unwrap(),
            (Some(version(2)), vec![Some(version(2)), Some(version(1))]),
            "{name}"
        );
        let parts = st.entity_parts(None, &e, &sf).unwrap();
        assert_eq!(
            (parts.head, parts.snapshot),
            (Some(version(2)), Some(version(2)))
        );
        let split = s.get(&layout::entity(&e)).unwrap().unwrap().len();
        assert!(split > shared + 150, "{name}: {shared} → {split}");
        // Deleting what is left removes the entry.
        let mut cp = st.checkpoint();
        cp.delete_snapshot(&pg, &e);
        st.commit(cp).unwrap();
        assert_eq!(st.snapshot(&pg, &e).unwrap(), None, "{name}");
        let again = s.get(&layout::entity(&e)).unwrap().unwrap().len();
        assert!(
            again <= shared + 2,
            "{name}: shared again after the split: {again}"
        );
        st.verify().unwrap();
    }
}

#[test]
fn staged_waiting_records_count_for_reads_and_are_durable_only_when_committed() {
    for (name, store, _dir) in backends() {
        let s = StateStore::open(store.clone(), inst()).unwrap();
        let sys = SystemId::new("erp.orders").unwrap();
        let entry = |r: &str| WaitingEntry {
            native: vec![1, 2, 3],
            hint: None,
            modstamp: None,
            reason: r.into(),
        };
        // Committed: o1 waits.
        let mut cp = s.checkpoint();
        cp.put_waiting("orders", &sys, &Key::new("o1"), Some(&entry("a")));
        s.commit(cp).unwrap();
        // A read stages o2 waiting and o1 resolved.
        s.stage_waiting("orders", &sys, &Key::new("o2"), Some(entry("b")))
            .unwrap();
        s.stage_waiting("orders", &sys, &Key::new("o1"), None)
            .unwrap();
        // A record that never waited stages nothing.
        s.stage_waiting("orders", &sys, &Key::new("o3"), None)
            .unwrap();
        let seen: Vec<String> = s
            .waiting("orders", &sys)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(seen, vec!["o2"], "{name}: the pass's own view");
        let fresh = StateStore::open(store.clone(), inst()).unwrap();
        let durable: Vec<String> = fresh
            .waiting("orders", &sys)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(durable, vec!["o1"], "{name}: staging wrote the store");
        // The read completes: what it staged goes into its checkpoint.
        let staged = s.take_staged_waiting("orders", &sys);
        assert_eq!(staged.len(), 2, "{name}");
        let mut cp = s.checkpoint();
        for (k, w) in &staged {
            cp.put_waiting("orders", &sys, k, w.as_ref());
        }
        s.commit(cp).unwrap();
        let durable: Vec<String> = StateStore::open(store.clone(), inst())
            .unwrap()
            .waiting("orders", &sys)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(durable, vec!["o2"], "{name}");
        assert!(s.take_staged_waiting("orders", &sys).is_empty());
    }
}

#[test]
fn pending_entries_keep_when_they_were_sent_and_older_ones_still_read() {
    for (name, store, _dir) in backends() {
        let st = StateStore::open(store.clone(), inst()).unwrap();
        let sf = SystemId::new("sf").unwrap();
        let (e1, e2) = (
            concord_model::model::EntityId::derive(&sf, "a"),
            concord_model::model::EntityId::derive(&sf, "b"),
        );
        let mut cp = st.checkpoint();
        cp.put_pending(&sf, &e1, &version(1), Timestamp(1_800_000_000_123));
        st.commit(cp).unwrap();
        // An entry as a build before the sending time was kept wrote it: the bare version.
        let mut b = Batch::new();
        let mut old = Vec::new();
        state::encode_version_for_snapshot(&version(2), &mut old);
        b.put(layout::pending(&sf, &e2), old);
        store.apply(b).unwrap();
        let sent = st.pending_entities(&sf).unwrap();
        assert_eq!(
            sent.get(&e1),
            Some(&Some(Timestamp(1_800_000_000_123))),
            "{name}"
        );
        assert_eq!(sent.get(&e2), Some(&None), "{name}");
        assert_eq!(
            st.pending(&sf, &e1).unwrap().unwrap().hash,
            version(1).hash,
            "{name}"
        );
        assert_eq!(
            st.pending(&sf, &e2).unwrap().unwrap().hash,
            version(2).hash,
            "{name}"
        );
        assert_eq!(st.pending_creates(&sf).unwrap().len(), 2, "{name}");
        for (k, v) in [
            (
                layout::pending(&sf, &e1),
                st.raw().get(&layout::pending(&sf, &e1)).unwrap().unwrap(),
            ),
            (
                layout::pending(&sf, &e2),
                st.raw().get(&layout::pending(&sf, &e2)).unwrap().unwrap(),
            ),
        ] {
            state::decode_any_entry(&k, &v).unwrap();
        }
        // A truncated sending time is named, not taken for a version.
        let e = state::decode_any_entry(&layout::pending(&sf, &e1), &[2, 0x80]).unwrap_err();
        assert!(e.to_string().contains("sending time"), "{name}: {e}");
    }
}
