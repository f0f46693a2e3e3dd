//! Atomic rewrite and append-only change files.

use super::config::{FileFormat, FileType};
use super::read::{to_json, to_text};
use super::{FileConnector, Table};
use crate::{ConnectorError, WriteErrorKind, WriteOp, WriteResult};
use concord_model::model::{Fields, Key};
use std::collections::HashMap;
use std::io::Write;

fn rejected(message: impl Into<String>) -> WriteResult {
    WriteResult::Err {
        kind: WriteErrorKind::Rejected,
        message: message.into(),
    }
}

/// Checks that every value of `f` can be written and read back as itself.
fn check(conn: &FileConnector, f: &Fields) -> Result<(), crate::InvalidData> {
    for (name, v) in f.iter() {
        let t: Option<FileType> = conn.cfg.types.get(&**name).copied();
        match conn.cfg.format {
            FileFormat::Csv => to_text(name, t, v).map(|_| ())?,
            FileFormat::Jsonl => to_json(name, t, v).map(|_| ())?,
        }
    }
    Ok(())
}

/// The record with the native key's parts in the key columns when they are missing.
fn target_key(
    conn: &FileConnector,
    f: &Fields,
    key: Option<&Key>,
) -> Result<Key, crate::InvalidData> {
    match key {
        Some(k) => Ok(k.clone()),
        None => conn.key_of(f),
    }
}

pub(crate) fn rewrite(
    conn: &FileConnector,
    ops: Vec<WriteOp>,
) -> Result<Vec<WriteResult>, ConnectorError> {
    let mut table = conn.load_for_write()?;
    let mut index: HashMap<Key, usize> = table
        .rows
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.clone(), i))
        .collect();
    let mut results = Vec::with_capacity(ops.len());
    let mut deleted = std::collections::HashSet::new();
    for op in ops {
        match op {
            WriteOp::Upsert { key, fields, .. } => {
                let k = match target_key(conn, &fields, key.as_ref())
                    .and_then(|k| check(conn, &fields).map(|_| k))
                {
                    Ok(k) => k,
                    Err(e) => {
                        results.push(rejected(e));
                        continue;
                    }
                };
                match (index.get(&k), key.is_some()) {
                    (Some(&i), _) if !deleted.contains(&k) => table.rows[i].1 = fields,
                    (_, true) => {
                        results.push(WriteResult::Err {
                            kind: WriteErrorKind::NotFound,
                            message: format!("record {k} not found"),
                        });
                        continue;
                    }
                    _ => {
                        deleted.remove(&k);
                        index.insert(k.clone(), table.rows.len());
                        table.rows.push((k.clone(), fields));
                    }
                }
                results.push(WriteResult::Ok { key: k });
            }
            WriteOp::Update {
                key, fields, base, ..
            } => {
                if let Err(e) = check(conn, &fields) {
                    results.push(rejected(e));
                    continue;
                }
                let Some(&i) = index.get(&key).filter(|_| !deleted.contains(&key)) else {
                    results.push(WriteResult::Err {
                        kind: WriteErrorKind::NotFound,
                        message: format!("record {key} not found"),
                    });
                    continue;
                };
                results.push(update_row(&mut table.rows[i].1, &key, &fields, &base));
            }
            WriteOp::Delete { key, .. } => {
                if index.contains_key(&key) {
                    deleted.insert(key.clone());
                }
                results.push(WriteResult::Ok { key });
            }
        }
    }
    table.rows.retain(|(k, _)| !deleted.contains(k));
    let bytes = serialise(conn, &mut table).map_err(|e| conn.err(e))?;
    atomic_write(conn, &bytes)?;
    Ok(results)
}

/// Applies a conditional partial update to a row read from the file (see
/// [`WriteOp::Update`]).
fn update_row(
    row: &mut Fields,
    key: &Key,
    fields: &Fields,
    base: &crate::WriteBase,
) -> WriteResult {
    let names = base.changed(fields);
    if !base.holds(row, &names) {
        return WriteResult::Err {
            kind: WriteErrorKind::Stale,
            message: format!("record {key} changed in the file since it was read"),
        };
    }
    for n in names {
        row.patch(n, fields.get(n).cloned());
    }
    WriteResult::Ok { key: key.clone() }
}

fn serialise(conn: &FileConnector, table: &mut Table) -> Result<Vec<u8>, String> {
    match conn.cfg.format {
        FileFormat::Csv => {
            // Keep the existing column order; key columns lead a new file; new columns follow.
            let mut header = table.header.clone();
            if header.is_empty() {
                header.extend(conn.cfg.key.iter().cloned());
            }
            for c in &conn.cfg.expect_columns {
                if !header.contains(c) {
                    header.push(c.clone());
                }
            }
            let mut extra: Vec<String> = table
                .rows
                .iter()
                .flat_map(|(_, f)| f.names().map(|n| n.to_string()))
                .filter(|n| !header.contains(n))
                .collect();
            extra.sort();
            extra.dedup();
            header.extend(extra);
            let mut w = csv::WriterBuilder::new()
                .delimiter(conn.cfg.delimiter as u8)
                .from_writer(Vec::new());
            w.write_record(&header).map_err(|e| e.to_string())?;
            for (_, f) in &table.rows {
                let mut cells = Vec::with_capacity(header.len());
                for h in &header {
                    cells.push(match f.get(h) {
                        Some(v) => to_text(h, conn.cfg.types.get(h).copied(), v)?,
                        None => String::new(),
                    });
                }
                w.write_record(&cells).map_err(|e| e.to_string())?;
            }
            table.header = header;
            w.into_inner().map_err(|e| e.to_string())
        }
        FileFormat::Jsonl => {
            let mut out = Vec::new();
            for (_, f) in &table.rows {
                out.extend_from_slice(json_line(conn, f, None)?.as_bytes());
                out.push(b'\n');
            }
            Ok(out)
        }
    }
}

fn json_line(conn: &FileConnector, f: &Fields, op: Option<&str>) -> Result<String, String> {
    let mut obj = serde_json::Map::new();
    if let Some(op) = op {
        obj.insert("_op".into(), serde_json::Value::String(op.into()));
    }
    for (name, v) in f.iter() {
        obj.insert(
            name.to_string(),
            to_json(name, conn.cfg.types.get(&**name).copied(), v)?,
        );
    }
    serde_json::to_string(&serde_json::Value::Object(obj)).map_err(|e| e.to_string())
}

/// Temporary file in the same directory, flushed to disk, renamed over the target, directory
/// flushed: a reader or a crash sees the old file or the new one.
fn atomic_write(conn: &FileConnector, bytes: &[u8]) -> Result<(), ConnectorError> {
    let path = conn.path();
    let tmp = conn.cfg.dir.join(format!(".{}.concord-tmp", conn.cfg.file));
    let io = |what: &str, e: std::io::Error| conn.err(format!("{what} {}: {e}", path.display()));
    {
        let mut f =
            std::fs::File::create(&tmp).map_err(|e| io("cannot create a temporary file for", e))?;
        f.write_all(bytes).map_err(|e| io("cannot write", e))?;
        f.sync_all().map_err(|e| io("cannot flush", e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| io("cannot replace", e))?;
    if let Ok(d) = std::fs::File::open(&conn.cfg.dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub(crate) fn append(
    conn: &FileConnector,
    ops: Vec<WriteOp>,
) -> Result<Vec<WriteResult>, ConnectorError> {
    let table = conn.load_for_write()?;
    let existing: std::collections::HashSet<Key> =
        table.rows.iter().map(|(k, _)| k.clone()).collect();
    let mut current: HashMap<&Key, &Fields> = table.rows.iter().map(|(k, f)| (k, f)).collect();
    let mut updated: HashMap<Key, Fields> = HashMap::new();
    let mut lines = String::new();
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            WriteOp::Upsert { key, fields, .. } => {
                let k = match target_key(conn, &fields, key.as_ref()) {
                    Ok(k) => k,
                    Err(e) => {
                        results.push(rejected(e));
                        continue;
                    }
                };
                if key.is_some() && !existing.contains(&k) {
                    results.push(WriteResult::Err {
                        kind: WriteErrorKind::NotFound,
                        message: format!("record {k} not found"),
                    });
                    continue;
                }
                match json_line(conn, &fields, Some("upsert")) {
                    Ok(l) => {
                        lines.push_str(&l);
                        lines.push('\n');
                        results.push(WriteResult::Ok { key: k });
                    }
                    Err(e) => results.push(rejected(e)),
                }
            }
            WriteOp::Update {
                key, fields, base, ..
            } => {
                let Some(row) = updated
                    .get(&key)
                    .cloned()
                    .or_else(|| current.get(&key).map(|f| (*f).clone()))
                else {
                    results.push(WriteResult::Err {
                        kind: WriteErrorKind::NotFound,
                        message: format!("record {key} not found"),
                    });
                    continue;
                };
                let mut row = row;
                match update_row(&mut row, &key, &fields, &base) {
                    WriteResult::Ok { key } => match json_line(conn, &row, Some("upsert")) {
                        Ok(l) => {
                            lines.push_str(&l);
                            lines.push('\n');
                            updated.insert(key.clone(), row);
                            results.push(WriteResult::Ok { key });
                        }
                        Err(e) => results.push(rejected(e)),
                    },
                    other => results.push(other),
                }
            }
            WriteOp::Delete { key, .. } => {
                current.remove(&key);
                if let Some((_, f)) = table.rows.iter().find(|(k, _)| *k == key) {
                    let mut keyed = Fields::new();
                    for c in conn.key_names() {
                        if let Some(v) = f.get(c) {
                            keyed.set(c, v.clone());
                        }
                    }
                    match json_line(conn, &keyed, Some("delete")) {
                        Ok(l) => {
                            lines.push_str(&l);
                            lines.push('\n');
                        }
                        Err(e) => {
                            results.push(rejected(e));
                            continue;
                        }
                    }
                }
                results.push(WriteResult::Ok { key });
            }
        }
    }
    if !lines.is_empty() {
        let path = conn.changes_path();
        let io = |e: std::io::Error| conn.err(format!("cannot append to {}: {e}", path.display()));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        f.write_all(lines.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    Ok(results)
}

/// Applies `<file>.changes.jsonl` to the rows read from the file.
pub(crate) fn fold_changes(
    conn: &FileConnector,
    table: &mut Table,
    index: &mut HashMap<Key, usize>,
) -> Result<(), ConnectorError> {
    let path = conn.changes_path();
    let bytes = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(conn.err(format!("cannot read {}: {e}", path.display()))),
    };
    let cfg = super::config::FileConfig {
        format: FileFormat::Jsonl,
        ..conn.cfg.clone()
    };
    let bad = |e: String| conn.err(format!("{}: {e}", path.display()));
    let parsed = super::read::parse(&cfg, &bytes).map_err(|e| bad(e.into()))?;
    let lines: Vec<&str> = super::read::utf8(&bytes)
        .map_err(|e| bad(e.into()))?
        .split('\n')
        .collect();
    let mut deleted = std::collections::HashSet::new();
    for (n, f) in parsed.rows {
        let bad = |e: String| bad(format!("line {n}: {e}"));
        let j: serde_json::Value =
            serde_json::from_str(lines[n - 1]).map_err(|e| bad(e.to_string()))?;
        let op = j
            .get("_op")
            .and_then(|o| o.as_str())
            .unwrap_or("upsert")
            .to_string();
        let k = conn.key_of(&f).map_err(|e| bad(e.into()))?;
        match op.as_str() {
            "delete" => {
                deleted.insert(k);
            }
            "upsert" => {
                deleted.remove(&k);
                match index.get(&k) {
                    Some(&i) => table.rows[i].1 = f,
                    None => {
                        index.insert(k.clone(), table.rows.len());
                        table.rows.push((k, f));
                    }
                }
            }
            other => return Err(bad(format!("unknown _op {other:?}"))),
        }
    }
    table.rows.retain(|(k, _)| !deleted.contains(k));
    Ok(())
}
