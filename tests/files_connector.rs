//! CSV and JSONL files as systems: real fixture data, atomic rewrite, append-only changes,
//! through the engine, and clear errors.

use concord::connector::files::{FileConfig, FileConnector, FileFormat, FileType, WriteMode};
use concord::connector::memory::MemorySystem;
use concord::connector::{Connector, WriteErrorKind, WriteOp, WriteResult};
use concord::model::{EntityId, Fields, Key, SystemId, Value};
use std::path::PathBuf;
use std::sync::Arc;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/salesforce-data")
}

fn sys() -> SystemId {
    SystemId::new("files").unwrap()
}

async fn read_all(c: &dyn Connector) -> Vec<(Key, Fields)> {
    let p = c.read(None).await.expect("read");
    assert!(p.complete && !p.more);
    p.changes
        .into_iter()
        .map(|c| (c.key, c.fields.unwrap()))
        .collect()
}

#[tokio::test]
async fn reads_the_shared_fixture_csvs() {
    let dir = fixtures().join("easy-spaces-lwc");
    if !dir.is_dir() {
        panic!("fixtures missing at {}", dir.display());
    }
    let cfg = FileConfig::new(&dir, "Space_Data.csv", FileFormat::Csv, &["Name"])
        .with_type("Daily_Booking_Rate", FileType::Decimal)
        .with_type("Maximum_Capacity", FileType::Int)
        .with_type("Minimum_Capacity", FileType::Int)
        .without_final_newline();
    let c = FileConnector::new(sys(), cfg).unwrap();
    let rows = read_all(&c).await;
    assert_eq!(rows.len(), 132);
    let (k, f) = &rows[0];
    assert_eq!(
        k.as_str(),
        "Outdoor Exploration Lab - Burbank",
        "BOM stripped from the header"
    );
    assert_eq!(f.get("Daily_Booking_Rate"), Some(&Value::Int(1250)));
    assert_eq!(f.get("Maximum_Capacity"), Some(&Value::Int(150)));
    // The Accounts-Contacts export, with a BOM and quoted fields.
    let cfg = FileConfig::new(
        fixtures().join("lwc-recipes"),
        "Accounts-Contacts.csv",
        FileFormat::Csv,
        &["Account: Account Name", "Contact: Email"],
    )
    .with_short_rows();
    let c = FileConnector::new(sys(), cfg).unwrap();
    let rows = read_all(&c).await;
    assert_eq!(rows.len(), 14);
    assert_eq!(
        rows[0].1.get("Account: Account Name"),
        Some(&Value::text("Alpha Dynamics"))
    );
    // Rows that end early (accounts without contacts) read with the missing cells empty when
    // the file is declared to have them; by default a short row is an error.
    assert_eq!(
        rows[6].1.get("Account: Account Name"),
        Some(&Value::text("Burlington Textiles"))
    );
    assert_eq!(rows[6].1.get("Contact: Email"), None);
    let strict = FileConfig::new(
        fixtures().join("lwc-recipes"),
        "Accounts-Contacts.csv",
        FileFormat::Csv,
        &["Account: Account Name", "Contact: Email"],
    );
    let e = FileConnector::new(sys(), strict)
        .unwrap()
        .read(None)
        .await
        .unwrap_err();
    assert!(
        e.message.contains("line 8, column") && e.message.contains("allow_short_rows"),
        "{e}"
    );
}

fn rec(i: i64, name: &str) -> Fields {
    Fields::new()
        .with("id", i)
        .with("name", name)
        .with("amount", Value::decimal_str("10.50").unwrap())
        .with("since", Value::date_str("2024-01-31").unwrap())
}

fn typed(dir: &std::path::Path, file: &str, format: FileFormat) -> FileConfig {
    FileConfig::new(dir, file, format, &["id"])
        .with_type("id", FileType::Int)
        .with_type("amount", FileType::Decimal)
        .with_type("since", FileType::Date)
}

#[tokio::test]
async fn rewrite_mode_writes_atomically_and_reads_back_what_it_wrote() {
    for format in [FileFormat::Csv, FileFormat::Jsonl] {
        let dir = tempfile::tempdir().unwrap();
        let file = if format == FileFormat::Csv {
            "out.csv"
        } else {
            "out.jsonl"
        };
        let c = FileConnector::new(sys(), typed(dir.path(), file, format)).unwrap();
        let creates: Vec<WriteOp> = (0..5)
            .map(|i| WriteOp::Upsert {
                entity: EntityId::derive(&sys(), &i.to_string()),
                key: None,
                fields: rec(i, &format!("n{i}, \"quoted\"\nline")),
            })
            .collect();
        let res = c.write(creates).await.unwrap();
        assert_eq!(res[2], WriteResult::Ok { key: Key::new("2") });
        let rows = read_all(&c).await;
        assert_eq!(rows.len(), 5);
        assert_eq!(
            rows[3].1,
            rec(3, "n3, \"quoted\"\nline"),
            "{format:?} round trip"
        );
        let res = c
            .write(vec![
                WriteOp::Upsert {
                    entity: EntityId::derive(&sys(), "1"),
                    key: Some(Key::new("1")),
                    fields: rec(1, "renamed"),
                },
                WriteOp::Upsert {
                    entity: EntityId::derive(&sys(), "9"),
                    key: Some(Key::new("9")),
                    fields: rec(9, "ghost"),
                },
                WriteOp::Upsert {
                    entity: EntityId::derive(&sys(), "7"),
                    key: None,
                    fields: rec(7, "x").with("extra", Value::date_str("2024-01-01").unwrap()),
                },
                WriteOp::Delete {
                    entity: EntityId::derive(&sys(), "4"),
                    key: Key::new("4"),
                },
            ])
            .await
            .unwrap();
        assert_eq!(res[0], WriteResult::Ok { key: Key::new("1") });
        assert!(matches!(
            res[1],
            WriteResult::Err {
                kind: WriteErrorKind::NotFound,
                ..
            }
        ));
        assert!(
            matches!(&res[2], WriteResult::Err { kind: WriteErrorKind::Rejected, message } if message.contains("extra")),
            "an undeclared date would read back as text: {res:?}"
        );
        let rows = read_all(&c).await;
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1].1.get("name"), Some(&Value::text("renamed")));
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, vec![file.to_string()], "no temporary file left");
    }
}

#[tokio::test]
async fn append_mode_never_touches_the_base_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("base.csv"),
        "id,name,amount,since\n1,one,1.5,2024-01-01\n2,two,2,2024-01-02\n",
    )
    .unwrap();
    let before = std::fs::read(dir.path().join("base.csv")).unwrap();
    let mut cfg = typed(dir.path(), "base.csv", FileFormat::Csv);
    cfg.write_mode = WriteMode::Append;
    let c = FileConnector::new(sys(), cfg).unwrap();
    c.write(vec![
        WriteOp::Upsert {
            entity: EntityId::derive(&sys(), "3"),
            key: None,
            fields: rec(3, "three"),
        },
        WriteOp::Upsert {
            entity: EntityId::derive(&sys(), "1"),
            key: Some(Key::new("1")),
            fields: rec(1, "uno"),
        },
        WriteOp::Delete {
            entity: EntityId::derive(&sys(), "2"),
            key: Key::new("2"),
        },
    ])
    .await
    .unwrap();
    assert_eq!(std::fs::read(dir.path().join("base.csv")).unwrap(), before);
    let changes = std::fs::read_to_string(c.changes_path()).unwrap();
    assert_eq!(changes.lines().count(), 3);
    let rows = read_all(&c).await;
    let keys: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["1", "3"]);
    assert_eq!(rows[0].1.get("name"), Some(&Value::text("uno")));
}

#[tokio::test]
async fn through_the_engine_without_echo_and_with_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemorySystem::new(SystemId::new("mem").unwrap()));
    for i in 0..6 {
        mem.user_create(rec(i, &format!("m{i}")));
    }
    let file = Arc::new(
        FileConnector::new(sys(), typed(dir.path(), "export.csv", FileFormat::Csv)).unwrap(),
    );
    let job = crate::common::two_way_job(
        "files",
        vec![
            mem.clone() as Arc<dyn Connector>,
            file.clone() as Arc<dyn Connector>,
        ],
        100,
    );
    let e = crate::common::memory_engine("n");
    let r = e.sync(&job, None).await.unwrap();
    assert_eq!(r.written.get("files"), Some(&6));
    let r = e.sync(&job, None).await.unwrap();
    assert_eq!((r.changed, r.total_written()), (0, 0), "{r:?}");
    // Someone edits the CSV: one row changed, one removed.
    let text = std::fs::read_to_string(dir.path().join("export.csv")).unwrap();
    let edited: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("5,"))
        .map(|l| {
            if l.starts_with("2,") {
                l.replace("m2", "edited in Excel")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(dir.path().join("export.csv"), edited.join("\n") + "\n").unwrap();
    let r = e.sync(&job, None).await.unwrap();
    assert_eq!(r.changed, 2, "{r:?}");
    assert_eq!(mem.rows().len(), 5);
    assert!(mem
        .rows()
        .values()
        .any(|r| r.fields.get("name") == Some(&Value::text("edited in Excel"))));
    let r = e.sync(&job, None).await.unwrap();
    assert_eq!((r.changed, r.total_written()), (0, 0), "{r:?}");
}

#[tokio::test]
async fn bad_input_gives_clear_errors() {
    let e = FileConnector::new(
        sys(),
        FileConfig::new("/nonexistent/concord", "x.csv", FileFormat::Csv, &["id"]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.csv"), "id,amount\n1,1.5\n2,abc\n").unwrap();
    let c = FileConnector::new(sys(), typed(dir.path(), "bad.csv", FileFormat::Csv)).unwrap();
    let msg = c.read(None).await.unwrap_err().to_string();
    assert!(
        msg.contains("bad.csv") && msg.contains("line 3") && msg.contains("amount"),
        "{msg}"
    );
    std::fs::write(dir.path().join("dup.jsonl"), "{\"id\": 1}\n{\"id\": 1}\n").unwrap();
    let c = FileConnector::new(sys(), typed(dir.path(), "dup.jsonl", FileFormat::Jsonl)).unwrap();
    let msg = c.read(None).await.unwrap_err().to_string();
    assert!(msg.contains("appears twice"), "{msg}");
    std::fs::write(dir.path().join("broken.jsonl"), "{\"id\": 1}\nnot json\n").unwrap();
    let c =
        FileConnector::new(sys(), typed(dir.path(), "broken.jsonl", FileFormat::Jsonl)).unwrap();
    let msg = c.read(None).await.unwrap_err().to_string();
    assert!(msg.contains("line 2"), "{msg}");
    // A failed read changed nothing on disk.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("broken.jsonl")).unwrap(),
        "{\"id\": 1}\nnot json\n"
    );
    // The column is counted in characters (serde_json counts bytes), and said once.
    std::fs::write(
        dir.path().join("accents.jsonl"),
        "{\"id\": 1, \"name\": \"Zoë Ærø\" x}\n",
    )
    .unwrap();
    let c =
        FileConnector::new(sys(), typed(dir.path(), "accents.jsonl", FileFormat::Jsonl)).unwrap();
    let msg = c.read(None).await.unwrap_err().to_string();
    assert!(
        msg.contains("line 1, column 29: expected") && !msg.contains("column 32"),
        "{msg}"
    );
}
