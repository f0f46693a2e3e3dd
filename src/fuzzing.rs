//! Entry points shared by the cargo-fuzz targets in `fuzz/` and by `tests/fuzz_replay.rs`, so
//! the replay test runs exactly the code the fuzzers exercise. Each must return, never panic,
//! whatever the input.

use crate::model::{canonical, VectorClock};
use crate::store::{decode_any_entry, layout::Tree};

/// Canonical record decoding; whatever decodes must re-encode to the same bytes.
pub fn canonical_decode(data: &[u8]) {
    if let Ok(fields) = canonical::decode(data) {
        assert_eq!(
            fields.canonical_bytes(),
            data,
            "accepted bytes are not canonical"
        );
    }
    let _ = canonical::value_from_bytes(data);
}

/// Store entry decoding for every tree: the first byte picks the tree, the rest is the value.
pub fn store_entry_decode(data: &[u8]) {
    let Some((&sel, value)) = data.split_first() else {
        return;
    };
    let tree = Tree::ALL[sel as usize % Tree::ALL.len()];
    let mut key = vec![tree.prefix()];
    key.extend_from_slice(b"sys\0");
    key.extend_from_slice(&[7u8; 16]);
    let _ = decode_any_entry(&key, value);
}

/// Vector clock decoding; whatever decodes must re-encode to the same prefix.
pub fn clock_decode(data: &[u8]) {
    if let Ok((clock, used)) = VectorClock::decode(data) {
        assert_eq!(
            clock.to_bytes(),
            &data[..used],
            "accepted clock is not canonical"
        );
    }
}

/// Bundle decoding: the input as a whole file (refused without the right MAC), and as a body
/// sealed with a valid MAC (reaching the body decoder); an accepted bundle re-encodes to one
/// that decodes equal.
pub fn bundle_decode(data: &[u8]) {
    let key = b"fuzzing key";
    let _ = crate::bundle::decode(data, key);
    let sealed = crate::bundle::seal_body(data, key);
    if let Ok(b) = crate::bundle::decode(&sealed, key) {
        let again = crate::bundle::decode(&crate::bundle::encode(&b, key), key)
            .expect("a re-encoded bundle decodes");
        assert_eq!(again, b, "bundle does not round-trip");
    }
}

/// The file reader's configuration the fuzz targets use: a key, declared types.
fn file_config(format: crate::connector::files::FileFormat) -> crate::connector::files::FileConfig {
    use crate::connector::files::{FileConfig, FileType};
    FileConfig::new("/nonexistent", "fuzz", format, &["id"])
        .with_type("id", FileType::Int)
        .with_type("amount", FileType::Decimal)
        .with_type("since", FileType::Date)
}

/// The strict CSV reader: an error or rows, never a panic; what it accepts has at most one
/// row per line end, and every row has a key.
pub fn csv_read(data: &[u8]) {
    files_read(data, crate::connector::files::FileFormat::Csv);
}

/// The JSONL reader, as `csv_read`.
pub fn jsonl_read(data: &[u8]) {
    files_read(data, crate::connector::files::FileFormat::Jsonl);
}

fn files_read(data: &[u8], format: crate::connector::files::FileFormat) {
    let cfg = file_config(format);
    if let Ok(parsed) = crate::connector::files::read::parse(&cfg, data) {
        let lines = data.iter().filter(|b| **b == b'\n').count() + 1;
        assert!(parsed.rows.len() <= lines, "more rows than lines");
        let mut last = 0;
        for (line, _) in &parsed.rows {
            assert!(*line > last && *line <= lines, "row lines out of order");
            last = *line;
        }
    }
    let lenient = cfg.with_short_rows().without_final_newline();
    let _ = crate::connector::files::read::parse(&lenient, data);
}
