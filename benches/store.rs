//! Store throughput on sled: batch write of snapshots (10 000 per checkpoint, flushed), batch
//! write of migrated records (what a chunk flush commits for a record copied from one system
//! to another: head, both snapshots, both cross-references; 10 000 per checkpoint), point read,
//! full scan of one system's snapshots (decoded). `cargo bench --bench store`.

use concord::model::{
    ActorId, EntityId, Fields, InstanceId, SystemId, Timestamp, VectorClock, Version,
};
use concord::store::{SledStore, StateStore, Store};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

fn sizes() -> Vec<u64> {
    match std::env::var("CONCORD_BENCH_SIZES") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => vec![10_000, 1_000_000],
    }
}

fn version(i: u64, f: Fields) -> Version {
    let mut clock = VectorClock::new();
    clock.set(ActorId(1), i % 5 + 1);
    clock.set(ActorId(2), 1);
    Version::new(
        Some(f),
        clock,
        Some(Timestamp(1_700_000_000_000 + i as i64)),
        None,
    )
}

fn fill(st: &StateStore, sys: &SystemId, n: u64, ents: &[EntityId], versions: &[Version]) {
    for chunk in (0..n as usize).collect::<Vec<_>>().chunks(10_000) {
        let mut cp = st.checkpoint();
        for &i in chunk {
            cp.put_snapshot(sys, &ents[i], &versions[i]);
        }
        st.commit(cp).unwrap();
    }
}

/// What a chunk flush of a migrate commits per record: the head, the source's and the
/// target's snapshots (equal to the head) and both cross-references.
fn fill_migrated(st: &StateStore, n: u64, ents: &[EntityId], versions: &[Version]) {
    let (src, dst) = (SystemId::new("src").unwrap(), SystemId::new("dst").unwrap());
    for chunk in (0..n as usize).collect::<Vec<_>>().chunks(10_000) {
        let mut cp = st.checkpoint();
        for &i in chunk {
            let key = concord::model::Key::new(i.to_string());
            cp.put_head(&ents[i], &versions[i]);
            cp.put_snapshot(&src, &ents[i], &versions[i]);
            cp.put_xref(&src, &key, &ents[i]);
            cp.put_snapshot(&dst, &ents[i], &versions[i]);
            cp.put_xref(&dst, &key, &ents[i]);
        }
        st.commit(cp).unwrap();
    }
}

/// The time `f` takes on `iters` fresh sled stores (opening them not counted).
fn timed_on_fresh_stores(iters: u64, f: impl Fn(&StateStore)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dir = tempfile::tempdir().unwrap();
        let st = StateStore::open(
            Arc::new(SledStore::open(dir.path()).unwrap()) as Arc<dyn Store>,
            InstanceId::new("bench").unwrap(),
        )
        .unwrap();
        let t = Instant::now();
        f(&st);
        total += t.elapsed();
    }
    total
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("store_sled");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(1));
    let sys = SystemId::new("erp").unwrap();
    for &n in &sizes() {
        let ents: Vec<EntityId> = (0..n)
            .map(|i| EntityId::derive(&sys, &i.to_string()))
            .collect();
        let versions: Vec<Version> = (0..n).map(|i| version(i, common::record(i))).collect();
        g.throughput(Throughput::Elements(n));

        g.bench_function(format!("batch_write_10k_per_checkpoint/{n}"), |b| {
            b.iter_custom(|iters| {
                timed_on_fresh_stores(iters, |st| fill(st, &sys, n, &ents, &versions))
            })
        });

        g.bench_function(format!("migrated_records_10k_per_checkpoint/{n}"), |b| {
            b.iter_custom(|iters| {
                timed_on_fresh_stores(iters, |st| fill_migrated(st, n, &ents, &versions))
            })
        });

        let dir = tempfile::tempdir().unwrap();
        let st = StateStore::open(
            Arc::new(SledStore::open(dir.path()).unwrap()) as Arc<dyn Store>,
            InstanceId::new("bench").unwrap(),
        )
        .unwrap();
        fill(&st, &sys, n, &ents, &versions);

        g.bench_function(format!("scan_decode_full/{n}"), |b| {
            b.iter(|| {
                let mut k = 0u64;
                st.scan_snapshots(&sys, &mut |_, v| {
                    k += v.content.map_or(0, |c| c.len() as u64);
                    true
                })
                .unwrap();
                black_box(k)
            })
        });

        g.bench_function(format!("scan_hash_and_clock/{n}"), |b| {
            b.iter(|| {
                let mut k = 0u64;
                st.scan_snapshot_meta(&sys, &mut |_, m| {
                    k += m.clock.len() as u64;
                    true
                })
                .unwrap();
                black_box(k)
            })
        });

        let probes = 10_000u64.min(n);
        g.throughput(Throughput::Elements(probes));
        g.bench_function(format!("point_read_decoded/{n}"), |b| {
            b.iter(|| {
                let mut k = 0usize;
                for i in 0..probes {
                    let idx = (i.wrapping_mul(2_654_435_761) % n) as usize;
                    k += st
                        .snapshot(&sys, &ents[idx])
                        .unwrap()
                        .map_or(0, |v| v.content.map_or(0, |c| c.len()));
                }
                black_box(k)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
