//! The floor the store's engine sets: sled 0.34.7 alone, written the way concord's checkpoints
//! write it, side by side with concord's checkpoint path in the same run.
//!
//! First it measures what concord stores for a migrated record (the record of
//! `benches/common`, copied from one system to another): sled entries and bytes per record.
//! Then, for each size in `CONCORD_FLOOR_SIZES` (default `1000000`), each case runs in a
//! process of its own (so its peak RSS is its own) on a fresh folder with concord's sled
//! settings (high-throughput mode, 256 MiB cache unless `CONCORD_FLOOR_CACHE_MB`):
//! - `sled random`: one sled entry per record, of concord's per-record size, under a
//!   hash-like key (entity ids are blake3-derived, so their order is random), 20 000 per
//!   `apply_batch`, flushed after each batch: the least any layout with one entry per record
//!   can cost;
//! - `sled sequential`: the same with keys in ascending order (what a layout keyed by the
//!   source's order would get);
//! - `concord`: the checkpoint path (`StateStore::commit` of migrated records, 20 000 per
//!   checkpoint) on the same settings.
//!
//! Allocation goes through mimalloc, as in the binary. `cargo bench --bench sled_floor`.

use concord::model::{ActorId, EntityId, InstanceId, Key, SystemId, VectorClock, Version};
use concord::store::{SledStore, StateStore, Store};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

#[path = "common/mod.rs"]
mod common;

/// The binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: u64 = 20_000;

fn cache_bytes() -> u64 {
    std::env::var("CONCORD_FLOOR_CACHE_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(256)
        * 1024
        * 1024
}

fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn version(i: u64) -> Version {
    let mut clock = VectorClock::new();
    clock.set(ActorId(1), 1);
    Version::new(Some(common::record(i)), clock, None, None)
}

fn open_state(dir: &std::path::Path) -> (Arc<SledStore>, StateStore) {
    let sled = Arc::new(SledStore::open_with_cache(dir, cache_bytes()).unwrap());
    let st = StateStore::open(
        sled.clone() as Arc<dyn Store>,
        InstanceId::new("bench").unwrap(),
    )
    .unwrap();
    (sled, st)
}

/// Commits `range` as migrated records (head, both snapshots equal to it, both keys), one
/// checkpoint per `BATCH`.
fn commit_migrated(st: &StateStore, range: std::ops::Range<u64>) {
    let (src, dst) = (SystemId::new("src").unwrap(), SystemId::new("dst").unwrap());
    let mut i = range.start;
    while i < range.end {
        let end = (i + BATCH).min(range.end);
        let mut cp = st.checkpoint();
        for j in i..end {
            let e = EntityId::derive(&src, &j.to_string());
            let v = version(j);
            let key = Key::new(j.to_string());
            cp.put_head(&e, &v);
            cp.put_snapshot(&src, &e, &v);
            cp.put_xref(&src, &key, &e);
            cp.put_snapshot(&dst, &e, &v);
            cp.put_xref(&dst, &key, &e);
        }
        st.commit(cp).unwrap();
        i = end;
    }
}

/// (sled entries, key + value bytes) concord stores per migrated record.
fn per_record_footprint() -> (f64, usize) {
    const N: u64 = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let (sled, st) = open_state(dir.path());
    let totals = |sled: &SledStore| {
        let (mut entries, mut bytes) = (0usize, 0usize);
        sled.scan(&[], None, &mut |k, v| {
            entries += 1;
            bytes += k.len() + v.len();
            true
        })
        .unwrap();
        (entries, bytes)
    };
    let before = totals(&sled);
    commit_migrated(&st, 0..N);
    let after = totals(&sled);
    (
        (after.0 - before.0) as f64 / N as f64,
        (after.1 - before.1) / N as usize,
    )
}

fn run_case(case: &str, n: u64, entry_bytes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let started;
    match case {
        "concord" => {
            let (sled, st) = open_state(dir.path());
            started = Instant::now();
            commit_migrated(&st, 0..n);
            sled.flush().unwrap();
        }
        "sled-random" | "sled-sequential" => {
            let db = sled::Config::new()
                .path(dir.path())
                .mode(sled::Mode::HighThroughput)
                .cache_capacity(cache_bytes())
                .open()
                .unwrap();
            let tree = db.open_tree("floor").unwrap();
            let key_len = 17.min(entry_bytes);
            let value = vec![0x5au8; entry_bytes - key_len];
            started = Instant::now();
            let mut i = 0;
            while i < n {
                let end = (i + BATCH).min(n);
                let mut batch = sled::Batch::default();
                for j in i..end {
                    let mut key = vec![b'i'];
                    if case == "sled-random" {
                        key.extend_from_slice(&blake3::hash(&j.to_le_bytes()).as_bytes()[..16]);
                    } else {
                        key.extend_from_slice(&j.to_be_bytes());
                        key.extend_from_slice(&[0; 8]);
                    }
                    let mut v = value.clone();
                    v[..8].copy_from_slice(&j.to_le_bytes());
                    batch.insert(key, v);
                }
                tree.apply_batch(batch).unwrap();
                db.flush().unwrap();
                i = end;
            }
        }
        other => panic!("unknown case {other}"),
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{case:<16} {:>10} records  {:>8.1} s  {:>9} records/s  peak RSS {:>6} MiB",
        common::thousands(n),
        secs,
        common::thousands((n as f64 / secs) as u64),
        peak_rss_mib()
    );
}

fn main() {
    if let Ok(case) = std::env::var("CONCORD_FLOOR_CASE") {
        let n = std::env::var("CONCORD_FLOOR_N").unwrap().parse().unwrap();
        let bytes = std::env::var("CONCORD_FLOOR_BYTES")
            .unwrap()
            .parse()
            .unwrap();
        run_case(&case, n, bytes);
        return;
    }
    // `cargo bench` passes `--bench`; a `cargo test --benches` run passes nothing and gets
    // a small size so it stays quick.
    let benching = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<u64> = match std::env::var("CONCORD_FLOOR_SIZES") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) if benching => vec![1_000_000],
        Err(_) => vec![2_000],
    };
    let (entries, bytes) = per_record_footprint();
    println!(
        "concord stores a migrated record as {entries:.2} sled entries, {bytes} bytes (keys and \
         values); cache {} MiB, {BATCH} records per batch",
        cache_bytes() / 1024 / 1024
    );
    let exe = std::env::current_exe().unwrap();
    for &n in &sizes {
        for case in ["sled-random", "sled-sequential", "concord"] {
            let status = Command::new(&exe)
                .env("CONCORD_FLOOR_CASE", case)
                .env("CONCORD_FLOOR_N", n.to_string())
                .env("CONCORD_FLOOR_BYTES", bytes.to_string())
                .status()
                .unwrap();
            assert!(status.success(), "{case} at {n} failed");
        }
    }
}
