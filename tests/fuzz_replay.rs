//! Replays every input kept under `fuzz/` (corpus seeds and any crasher artifacts) through the
//! same entry points the cargo-fuzz targets call (`concord::fuzzing`). A crasher committed to
//! `fuzz/artifacts/<target>/` stays a regression test here, on the stable toolchain.

use concord::model::{Fields, SystemId, Timestamp, Value, VectorClock, Version};
use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("canonical_decode", concord::fuzzing::canonical_decode),
    ("store_entry_decode", concord::fuzzing::store_entry_decode),
    ("clock_decode", concord::fuzzing::clock_decode),
    ("bundle_decode", concord::fuzzing::bundle_decode),
    ("csv_read", concord::fuzzing::csv_read),
    ("jsonl_read", concord::fuzzing::jsonl_read),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for kind in ["corpus", "artifacts"] {
        let dir = fuzz_dir().join(kind).join(target);
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.path().is_file() {
                    out.push(e.path());
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn replay_fuzz_inputs() {
    let mut total = 0;
    for (name, f) in TARGETS {
        let files = inputs(name);
        assert!(
            !files.is_empty(),
            "no seeds for {name} under fuzz/corpus/{name}"
        );
        for p in files {
            let data = std::fs::read(&p).unwrap();
            let res = std::panic::catch_unwind(|| f(&data));
            assert!(res.is_ok(), "{name} panicked on {}", p.display());
            total += 1;
        }
    }
    println!("replayed {total} fuzz inputs");
}

fn sample_versions() -> Vec<Version> {
    let mut clock = VectorClock::new();
    clock.set(concord::model::ActorId(42), 3);
    clock.set(concord::model::ActorId(7), 1);
    vec![
        Version::new(
            Some(
                Fields::new()
                    .with("Name", "Acme")
                    .with("Amount", Value::decimal_str("12.50").unwrap())
                    .with("Since", Value::date_str("2020-01-31").unwrap())
                    .with(
                        "Meta",
                        Value::Json(serde_json::json!({"a": [1, {"b": null}]})),
                    ),
            ),
            clock.clone(),
            Some(Timestamp(1_700_000_000_000)),
            Some(SystemId::new("sf").unwrap()),
        ),
        Version::new(None, clock, None, None),
    ]
}

/// Regenerates the seed corpus: `cargo test --test tests fuzz_replay::write_seeds -- --ignored`.
#[test]
#[ignore]
fn write_seeds() {
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };
    for (i, v) in sample_versions().iter().enumerate() {
        if let Some(c) = &v.content {
            write(
                "canonical_decode",
                &format!("seed-record-{i}"),
                &c.canonical_bytes(),
            );
        }
        write(
            "clock_decode",
            &format!("seed-clock-{i}"),
            &v.clock.to_bytes(),
        );
        let mut entry = Vec::new();
        concord::store::encode_version_for_fuzz(v, &mut entry);
        for sel in [1u8, 2] {
            let mut d = vec![sel];
            d.extend_from_slice(&entry);
            write("store_entry_decode", &format!("seed-version-{i}-{sel}"), &d);
        }
    }
    let bundle = concord::bundle::Bundle {
        sender: concord::model::InstanceId::new("site-a").unwrap(),
        recipient: concord::model::InstanceId::new("site-b").unwrap(),
        number: 3,
        acks: vec![(1, 2)],
        entities: sample_versions()
            .into_iter()
            .enumerate()
            .map(|(i, head)| concord::bundle::BundleEntity {
                entity: concord::model::EntityId([i as u8; 16]),
                dots: concord::core::dots::FieldDots::advance(
                    None,
                    head.content.as_ref(),
                    &head.clock,
                ),
                head,
                xrefs: vec![(
                    SystemId::new("crm.Account").unwrap(),
                    concord::model::Key::new("001000000000001AAA"),
                )],
                jobs: vec!["accounts".into()],
            })
            .collect(),
    };
    write(
        "bundle_decode",
        "seed-body",
        &concord::bundle::encode_body(&bundle),
    );
    write(
        "bundle_decode",
        "seed-file",
        &concord::bundle::encode(&bundle, b"fuzzing key"),
    );
    write(
        "canonical_decode",
        "seed-empty-record",
        &Fields::new().canonical_bytes(),
    );
}
