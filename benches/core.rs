//! Core throughput: canonicalise + hash + compare, raw blake3 on the same bytes, diff, merge.
//! `cargo bench --bench core`; figures per record (elements/s).

use concord::core::{diff, merge, DeleteRule, FieldPolicy, Policy, Side};
use concord::model::{canonical, Fields, SystemId, Value};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::time::Duration;

#[path = "common/mod.rs"]
mod common;

fn sizes() -> Vec<u64> {
    match std::env::var("CONCORD_BENCH_SIZES") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => vec![10_000, 1_000_000],
    }
}

fn bench(c: &mut Criterion) {
    println!(
        "mean canonical record size: {} bytes",
        common::mean_bytes(1000)
    );
    let mut g = c.benchmark_group("core");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    for &n in &sizes() {
        let records: Vec<Fields> = (0..n).map(common::record).collect();
        let stored: Vec<_> = records.iter().map(Fields::content_hash).collect();
        let bytes: Vec<Vec<u8>> = records.iter().map(Fields::canonical_bytes).collect();
        g.throughput(Throughput::Elements(n));

        g.bench_function(format!("canonicalise_hash_compare/{n}"), |b| {
            let mut buf = Vec::with_capacity(512);
            b.iter(|| {
                let mut changed = 0u64;
                for (r, h) in records.iter().zip(&stored) {
                    if canonical::hash_with(r, &mut buf) != *h {
                        changed += 1;
                    }
                }
                black_box(changed)
            })
        });

        g.bench_function(format!("blake3_raw_same_bytes/{n}"), |b| {
            b.iter(|| {
                let mut x = 0u8;
                for by in &bytes {
                    x ^= blake3::hash(by).as_bytes()[0];
                }
                black_box(x)
            })
        });

        let edited: Vec<Fields> = records
            .iter()
            .enumerate()
            .map(|(i, r)| r.clone().with("Quantity", (i % 7) as i64 + 1000))
            .collect();
        g.bench_function(format!("diff_one_field_changed/{n}"), |b| {
            b.iter(|| {
                let mut k = 0usize;
                for (a, e) in records.iter().zip(&edited) {
                    if let concord::core::Delta::Update(ch) = diff(Some(a), Some(e)) {
                        k += ch.len();
                    }
                }
                black_box(k)
            })
        });

        let other: Vec<Fields> = records
            .iter()
            .map(|r| r.clone().with("StageName", Value::text("Negotiation")))
            .collect();
        let (sf, erp) = (SystemId::new("sf").unwrap(), SystemId::new("erp").unwrap());
        let policy = Policy::new(FieldPolicy::Prefer(sf.clone()), DeleteRule::DeleteWins);
        g.bench_function(format!("merge_3way_disjoint_edits/{n}"), |b| {
            b.iter_batched(
                || (),
                |_| {
                    let mut k = 0usize;
                    for ((base, a), o) in records.iter().zip(&edited).zip(&other) {
                        let out = merge(
                            Some(base),
                            Side::new(&sf, Some(a), None),
                            Side::new(&erp, Some(o), None),
                            &policy,
                        );
                        k += out.content.map_or(0, |c| c.len());
                    }
                    black_box(k)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
