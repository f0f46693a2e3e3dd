//! Writing: batched idempotent creates (INSERT … ON CONFLICT / ON DUPLICATE KEY), updates that
//! report a vanished row, and deletes; one transaction per batch, every value a bound parameter.
//! Creates, whole-row updates, conditional partial updates (grouped by the columns they change,
//! after one locking read) and deletes go out as multi-row statements: no round trip per record
//! on a server database. SQLite, in-process, updates row by row with prepared statements.

use super::client::{Column, Dialect, Param};
use super::decode::{param_for, placeholder, row_key};
use super::SqlConnector;
use crate::{ConnectorError, WriteErrorKind, WriteOp, WriteResult};
use concord_model::model::{Fields, Key};
use std::collections::{BTreeSet, HashSet};

/// `INSERT … VALUES (…), (…) ON CONFLICT (key) DO UPDATE …` for `rows` rows.
pub fn upsert_sql(d: Dialect, table: &str, cols: &[Column], key: &[String], rows: usize) -> String {
    let names: Vec<String> = cols.iter().map(|c| d.quote(&c.name)).collect();
    let cols_ref: Vec<&Column> = cols.iter().collect();
    let mut sql = format!(
        "INSERT INTO {table} ({}) VALUES {}",
        names.join(", "),
        value_rows(d, &cols_ref, rows)
    );
    sql.push_str(&conflict_clause(d, cols, key));
    sql
}

/// `(…), (…)`: `rows` rows of placeholders for `cols`, numbered from 1.
fn value_rows(d: Dialect, cols: &[&Column], rows: usize) -> String {
    let mut n = 1;
    let mut out = Vec::with_capacity(rows);
    for _ in 0..rows {
        let ph: Vec<String> = cols
            .iter()
            .map(|c| {
                let p = placeholder(d, n, c);
                n += 1;
                p
            })
            .collect();
        out.push(format!("({})", ph.join(", ")));
    }
    out.join(", ")
}

/// PostgreSQL: `INSERT INTO table (…) SELECT … FROM stage ON CONFLICT (key) DO UPDATE …`.
pub fn upsert_from_stage_sql(table: &str, stage: &str, cols: &[Column], key: &[String]) -> String {
    let d = Dialect::Postgres;
    let names: Vec<String> = cols.iter().map(|c| d.quote(&c.name)).collect();
    format!(
        "INSERT INTO {table} ({0}) SELECT {0} FROM {stage}{1}",
        names.join(", "),
        conflict_clause(d, cols, key)
    )
}

/// What a create meets when the key exists: every non-key column takes the new value.
fn conflict_clause(d: Dialect, cols: &[Column], key: &[String]) -> String {
    let mut sql = String::new();
    let non_key: Vec<&Column> = cols.iter().filter(|c| !key.contains(&c.name)).collect();
    let keys: Vec<String> = key.iter().map(|k| d.quote(k)).collect();
    match d {
        Dialect::MySql => {
            if non_key.is_empty() {
                sql.push_str(&format!(" ON DUPLICATE KEY UPDATE {0} = {0}", keys[0]));
            } else {
                let sets: Vec<String> = non_key
                    .iter()
                    .map(|c| format!("{0} = VALUES({0})", d.quote(&c.name)))
                    .collect();
                sql.push_str(&format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", ")));
            }
        }
        _ => {
            let excluded = if d == Dialect::Postgres {
                "EXCLUDED"
            } else {
                "excluded"
            };
            if non_key.is_empty() {
                sql.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", ")));
            } else {
                let sets: Vec<String> = non_key
                    .iter()
                    .map(|c| format!("{0} = {excluded}.{0}", d.quote(&c.name)))
                    .collect();
                sql.push_str(&format!(
                    " ON CONFLICT ({}) DO UPDATE SET {}",
                    keys.join(", "),
                    sets.join(", ")
                ));
            }
        }
    }
    sql
}

/// Creates of one batch from which PostgreSQL gets them by `COPY` into a staging table and one
/// `INSERT … SELECT … ON CONFLICT` (fewer rows go as multi-row `INSERT … VALUES`).
const COPY_MIN_ROWS: usize = 64;

/// The session's staging table for `table` (a temporary table shaped like it, emptied at every
/// commit).
fn stage_name(table: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    table.hash(&mut h);
    format!("concord_stage_{:016x}", h.finish())
}

/// `UPDATE … SET … WHERE key = …`; parameters: non-key columns, then key columns.
pub fn update_sql(d: Dialect, table: &str, cols: &[Column], key: &[String]) -> String {
    let mut n = 1;
    let mut sets = Vec::new();
    for c in cols.iter().filter(|c| !key.contains(&c.name)) {
        sets.push(format!("{} = {}", d.quote(&c.name), placeholder(d, n, c)));
        n += 1;
    }
    let mut wheres = Vec::new();
    for k in key {
        let c = cols
            .iter()
            .find(|c| &c.name == k)
            .expect("key column is mapped");
        wheres.push(format!("{} = {}", d.quote(k), placeholder(d, n, c)));
        n += 1;
    }
    if sets.is_empty() {
        // Nothing but the key: touch the key so the statement still reports a match.
        let k = d.quote(&key[0]);
        sets.push(format!("{k} = {k}"));
    }
    format!(
        "UPDATE {table} SET {} WHERE {}",
        sets.join(", "),
        wheres.join(" AND ")
    )
}

/// `SELECT COUNT(*) … WHERE key = …`.
pub fn exists_sql(d: Dialect, table: &str, cols: &[Column], key: &[String]) -> String {
    delete_sql(d, table, cols, key).replacen("DELETE FROM", "SELECT COUNT(*) FROM", 1)
}

/// `DELETE … WHERE key = …`.
pub fn delete_sql(d: Dialect, table: &str, cols: &[Column], key: &[String]) -> String {
    let wheres: Vec<String> = key
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let c = cols
                .iter()
                .find(|c| &c.name == k)
                .expect("key column is mapped");
            format!("{} = {}", d.quote(k), placeholder(d, i + 1, c))
        })
        .collect();
    format!("DELETE FROM {table} WHERE {}", wheres.join(" AND "))
}

/// The record's fields with the native key's parts put into the key columns.
fn with_key(conn: &SqlConnector, fields: &Fields, key: Option<&Key>) -> Result<Fields, String> {
    let mut f = fields.clone();
    if let Some(k) = key {
        let parts = k.parts();
        if parts.len() != conn.key_cols().len() {
            return Err(format!(
                "native key {k} does not have {} parts",
                conn.key_cols().len()
            ));
        }
        for (c, p) in conn.key_cols().iter().zip(parts) {
            // The key part read back in the column's type (a key filled in as text, such as
            // "42" for a bigint column, becomes the column's value).
            let v = match (
                super::decode::value_from_key_part(c, &p, conn.offset()),
                f.get(&c.name),
            ) {
                (Ok(v), _) => v,
                (Err(_), Some(existing)) if super::decode::key_part(existing) == p => {
                    existing.clone()
                }
                (Err(e), _) => return Err(format!("native key {k}: column {}: {e}", c.name)),
            };
            f.set(c.name.as_str(), v);
        }
    }
    Ok(f)
}

fn params(
    conn: &SqlConnector,
    cols: &[&Column],
    f: &Fields,
) -> Result<Vec<Param>, crate::InvalidData> {
    cols.iter()
        .map(|c| param_for(conn.dialect(), c, f.get(&c.name), conn.offset()))
        .collect()
}

fn rejected(message: impl Into<String>) -> WriteResult {
    WriteResult::Err {
        kind: WriteErrorKind::Rejected,
        message: message.into(),
    }
}

/// Whether a database error is about the data of a record (too long, wrong value, constraint),
/// as opposed to the connection or the server.
fn is_data_error(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    match db.kind() {
        sqlx::error::ErrorKind::UniqueViolation
        | sqlx::error::ErrorKind::ForeignKeyViolation
        | sqlx::error::ErrorKind::NotNullViolation
        | sqlx::error::ErrorKind::CheckViolation => return true,
        _ => {}
    }
    let code = db.code().map(|c| c.to_string()).unwrap_or_default();
    code.starts_with("22")
        || code.starts_with("23")
        || matches!(
            code.as_str(),
            "1048" | "1062" | "1264" | "1292" | "1366" | "1406" | "1452" | "3140" | "4025"
        )
}

/// Applies a batch in one transaction. Per-record problems found before sending (a value the
/// column cannot hold, a missing key) reject that record only. When the database refuses the
/// batch for a record's data (too long, constraint), nothing of it is committed and every record
/// is retried alone, so only the offending ones are rejected. Any other database error fails the
/// call (nothing committed).
pub async fn apply(
    conn: &SqlConnector,
    ops: Vec<WriteOp>,
) -> Result<Vec<WriteResult>, ConnectorError> {
    let fail = |e: BatchError| match e {
        BatchError::Db(e) => conn.error(&e),
        BatchError::Other(e) => e,
    };
    match apply_batch(conn, ops.clone()).await {
        Ok(r) => Ok(r),
        Err(BatchError::Db(e)) if is_data_error(&e) && ops.len() > 1 => {
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                match apply_batch(conn, vec![op]).await {
                    Ok(mut r) => out.push(r.pop().unwrap_or_else(|| rejected("not processed"))),
                    Err(BatchError::Db(e)) if is_data_error(&e) => {
                        out.push(rejected(super::client::describe(&e).0))
                    }
                    Err(e) => return Err(fail(e)),
                }
            }
            Ok(out)
        }
        Err(BatchError::Db(e)) if is_data_error(&e) => {
            Ok(vec![rejected(super::client::describe(&e).0)])
        }
        Err(e) => Err(fail(e)),
    }
}

/// Why a batch failed: the database, or reading its answer.
enum BatchError {
    Db(sqlx::Error),
    Other(ConnectorError),
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Db(e)
    }
}

/// Whole-row updates of rows that must exist (`Upsert` with a key), on a server database: the
/// rows are looked up and locked in one read per slice (`FOR UPDATE`: no delete can slip in
/// before the write), a key not found answers `NotFound`, and the rows found are written in
/// multi-row `INSERT … ON CONFLICT DO UPDATE` / `ON DUPLICATE KEY UPDATE` statements — which,
/// for a row that exists and is locked, is an update of every mapped column.
async fn update_rows(
    conn: &SqlConnector,
    tx: &mut super::client::Tx,
    updates: Vec<(usize, Key, Vec<Param>)>,
    results: &mut [Option<WriteResult>],
) -> Result<(), BatchError> {
    let d = conn.dialect();
    let table = conn.table_ref();
    let cols = conn.columns();
    let key_names: Vec<String> = conn.key_cols().iter().map(|c| c.name.clone()).collect();
    let key_cols: Vec<&Column> = conn.key_cols().iter().collect();
    let per_stmt = (d.max_params() / cols.len().max(1)).clamp(1, 1000);
    let per_select = conn.keys_per_select().min(per_stmt);
    for chunk in updates.chunks(per_select) {
        let parts: Vec<Vec<String>> = chunk.iter().map(|(_, k, _)| k.parts()).collect();
        let (cond, ps, _) = conn.key_condition(&parts).map_err(BatchError::Other)?;
        let names: Vec<String> = key_cols
            .iter()
            .map(|c| super::decode::select_expr(d, c))
            .collect();
        let sql = format!(
            "SELECT {} FROM {table} WHERE {cond} FOR UPDATE",
            names.join(", ")
        );
        let rows = tx.fetch(&sql, &ps).await?;
        let key_only: Vec<Column> = key_cols.iter().map(|c| (*c).clone()).collect();
        let found = super::decode::decode(&rows, &key_only, conn.offset())
            .map_err(|e| BatchError::Other(conn.bad(e)))?;
        let mut present = HashSet::new();
        for f in found {
            present.insert(row_key(&f, &key_cols).map_err(|e| BatchError::Other(conn.bad(e)))?);
        }
        // Rows found, in groups that hold each key once (a statement may not touch a row twice;
        // a later op on the same key goes in a later statement, so it wins).
        let mut groups: Vec<Vec<&(usize, Key, Vec<Param>)>> = Vec::new();
        let mut group_keys: Vec<HashSet<&Key>> = Vec::new();
        for u in chunk {
            if !present.contains(&u.1) {
                results[u.0] = Some(WriteResult::Err {
                    kind: WriteErrorKind::NotFound,
                    message: format!("row {} not found in {table}", u.1),
                });
                continue;
            }
            let g = group_keys
                .iter()
                .rposition(|ks| ks.contains(&u.1))
                .map_or(0, |g| g + 1);
            if g == groups.len() {
                groups.push(Vec::new());
                group_keys.push(HashSet::new());
            }
            group_keys[g].insert(&u.1);
            groups[g].push(u);
        }
        for group in groups {
            let sql = upsert_sql(d, &table, cols, &key_names, group.len());
            let ps: Vec<Param> = group.iter().flat_map(|u| u.2.iter().cloned()).collect();
            tx.execute(&sql, &ps).await?;
            for u in group {
                results[u.0] = Some(WriteResult::Ok { key: u.1.clone() });
            }
        }
    }
    Ok(())
}

/// A conditional partial update, ready for the database: the op's index, the row's key, the
/// target and base rows with the key columns filled in.
struct Conditional {
    index: usize,
    key: Key,
    target: Fields,
    base: Fields,
}

/// The conditional updates of a batch, inside its transaction: the rows are read and locked
/// (`FOR UPDATE`; SQLite's write lock is the transaction's), each row's written columns are
/// compared with the base as the read path decodes them, and only the columns that change are
/// updated. A row that changed since it was read is left alone (`Stale`).
async fn apply_conditional(
    conn: &SqlConnector,
    tx: &mut super::client::Tx,
    updates: Vec<Conditional>,
    results: &mut [Option<WriteResult>],
) -> Result<(), BatchError> {
    let d = conn.dialect();
    let table = conn.table_ref();
    let key_names: Vec<String> = conn.key_cols().iter().map(|c| c.name.clone()).collect();
    let key_cols: Vec<&Column> = conn.key_cols().iter().collect();
    let lock = match d {
        Dialect::Sqlite => "",
        _ => " FOR UPDATE",
    };
    // PostgreSQL: the rows of a slice that change the same columns, written together.
    let mut same_set: Vec<SameSet> = Vec::new();
    let mut grouped: HashSet<Key> = HashSet::new();
    let target = Target {
        d,
        table: &table,
        key_cols: &key_cols,
    };
    for chunk in updates.chunks(conn.keys_per_select()) {
        let parts: Vec<Vec<String>> = chunk.iter().map(|u| u.key.parts()).collect();
        let (sql, select_params, _) = conn
            .select_by_keys(&parts, &[], lock)
            .map_err(BatchError::Other)?;
        let rows = tx.fetch(&sql, &select_params).await?;
        let found = super::decode::decode(&rows, conn.columns(), conn.offset())
            .map_err(|e| BatchError::Other(conn.bad(e)))?;
        let mut current = std::collections::HashMap::new();
        for f in found {
            let k = row_key(&f, &key_cols).map_err(|e| BatchError::Other(conn.bad(e)))?;
            current.insert(k, f);
        }
        for u in chunk {
            let Some(now) = current.get(&u.key) else {
                results[u.index] = Some(WriteResult::Err {
                    kind: WriteErrorKind::NotFound,
                    message: format!("row {} not found in {table}", u.key),
                });
                continue;
            };
            let base = crate::WriteBase {
                fields: u.base.clone(),
                modstamp: None,
            };
            let names: Vec<&std::sync::Arc<str>> = base
                .changed(&u.target)
                .into_iter()
                .filter(|n| {
                    !key_names.iter().any(|k| k == &***n)
                        && conn.columns().iter().any(|c| c.name == ***n)
                })
                .collect();
            if !base.holds(now, &names) {
                results[u.index] = Some(WriteResult::Err {
                    kind: WriteErrorKind::Stale,
                    message: format!("row {} changed since it was read", u.key),
                });
                continue;
            }
            if names.is_empty() {
                results[u.index] = Some(WriteResult::Ok { key: u.key.clone() });
                continue;
            }
            let set: Vec<&Column> = names
                .iter()
                .filter_map(|n| conn.columns().iter().find(|c| c.name == ***n))
                .collect();
            let mut ordered = set.clone();
            ordered.extend(key_cols.iter().copied());
            let p = match params(conn, &ordered, &u.target) {
                Ok(p) => p,
                Err(e) => {
                    results[u.index] = Some(rejected(e));
                    continue;
                }
            };
            let sets: Vec<Column> = set.iter().map(|c| (*c).clone()).collect();
            if d != Dialect::Sqlite {
                // Rows that change the same columns go out together (below).
                if !grouped.insert(u.key.clone()) {
                    write_same_sets(tx, &mut same_set, &mut grouped, &target, results).await?;
                    grouped.insert(u.key.clone());
                }
                let mut names: Vec<String> = sets.iter().map(|c| c.name.clone()).collect();
                if d == Dialect::MySql {
                    // MariaDB types a derived table's column from every row's value: rows are
                    // grouped by their values' kinds too, so each column has one type.
                    names.push(p.iter().map(param_kind).collect());
                }
                let g = match same_set.iter().position(|(n, _, _)| *n == names) {
                    Some(g) => g,
                    None => {
                        same_set.push((names, sets, Vec::new()));
                        same_set.len() - 1
                    }
                };
                same_set[g].2.push((u.index, u.key.clone(), p));
                continue;
            }
            let mut cols = sets.clone();
            cols.extend(key_cols.iter().map(|c| (*c).clone()));
            tx.execute(&update_sql(d, &table, &cols, &key_names), &p)
                .await?;
            results[u.index] = Some(WriteResult::Ok { key: u.key.clone() });
        }
        write_same_sets(tx, &mut same_set, &mut grouped, &target, results).await?;
    }
    Ok(())
}

/// Where grouped updates go: the dialect, the table and its key columns.
struct Target<'a> {
    d: Dialect,
    table: &'a str,
    key_cols: &'a [&'a Column],
}

/// One letter per kind of parameter (see the MariaDB grouping above).
fn param_kind(p: &Param) -> char {
    match p {
        Param::Null => 'n',
        Param::Int(_) => 'i',
        Param::Float(_) => 'f',
        Param::Text(_) => 't',
        Param::Bytes(_) => 'b',
    }
}

/// One multi-row update per set of changed columns (PostgreSQL `UPDATE … FROM (VALUES …)`,
/// MariaDB `UPDATE … JOIN (SELECT … UNION ALL …)`). Every row there exists, is locked and holds
/// its base, and appears once (`grouped`: a key met again is written after what was grouped
/// before it).
async fn write_same_sets(
    tx: &mut super::client::Tx,
    same_set: &mut Vec<SameSet>,
    grouped: &mut HashSet<Key>,
    target: &Target<'_>,
    results: &mut [Option<WriteResult>],
) -> Result<(), BatchError> {
    let Target { d, table, key_cols } = *target;
    for (_, sets, rows) in std::mem::take(same_set) {
        let mut cols = sets.clone();
        cols.extend(key_cols.iter().map(|c| (*c).clone()));
        let per_stmt = (d.max_params() / cols.len().max(1)).clamp(1, 1000);
        for slice in rows.chunks(per_stmt) {
            let sql = match d {
                Dialect::MySql => update_join_sql(table, &sets, key_cols, slice.len()),
                _ => update_from_values_sql(table, &sets, key_cols, slice.len()),
            };
            let ps: Vec<Param> = slice.iter().flat_map(|r| r.2.iter().cloned()).collect();
            tx.execute(&sql, &ps).await?;
            for (i, k, _) in slice {
                results[*i] = Some(WriteResult::Ok { key: k.clone() });
            }
        }
    }
    grouped.clear();
    Ok(())
}

/// Rows of a slice that change the same columns: (their names, the columns, per row the op's
/// index, the key and the parameters — set columns, then key columns).
type SameSet = (Vec<String>, Vec<Column>, Vec<(usize, Key, Vec<Param>)>);

/// MariaDB/MySQL: `UPDATE t AS t JOIN (SELECT ? AS v0, … UNION ALL SELECT ?, …) AS v ON
/// t.key = v.vK AND … SET t.c = v.v0, …` for `rows` rows; parameters per row: the set columns,
/// then the key columns.
pub fn update_join_sql(table: &str, sets: &[Column], key_cols: &[&Column], rows: usize) -> String {
    let d = Dialect::MySql;
    let width = sets.len() + key_cols.len();
    let mut selects = Vec::with_capacity(rows);
    for r in 0..rows {
        let cells: Vec<String> = (0..width)
            .map(|i| {
                if r == 0 {
                    format!("? AS v{i}")
                } else {
                    "?".to_string()
                }
            })
            .collect();
        selects.push(format!("SELECT {}", cells.join(", ")));
    }
    let on: Vec<String> = key_cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("t.{} = v.v{}", d.quote(&c.name), sets.len() + i))
        .collect();
    let set: Vec<String> = sets
        .iter()
        .enumerate()
        .map(|(i, c)| format!("t.{} = v.v{i}", d.quote(&c.name)))
        .collect();
    format!(
        "UPDATE {table} AS t JOIN ({}) AS v ON {} SET {}",
        selects.join(" UNION ALL "),
        on.join(" AND "),
        set.join(", ")
    )
}

/// PostgreSQL: `UPDATE t AS t SET c = v.c, … FROM (VALUES ($1::ty, …), …) AS v(c, …, key…)
/// WHERE t.key = v.key AND …` for `rows` rows; parameters per row: the set columns, then the
/// key columns.
pub fn update_from_values_sql(
    table: &str,
    sets: &[Column],
    key_cols: &[&Column],
    rows: usize,
) -> String {
    let d = Dialect::Postgres;
    let cols: Vec<&Column> = sets.iter().chain(key_cols.iter().copied()).collect();
    // The VALUES list's columns are named v0, v1, … (a mapped column may be named anything).
    let names: Vec<String> = (0..cols.len()).map(|i| format!("v{i}")).collect();
    let set: Vec<String> = sets
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = v.v{i}", d.quote(&c.name)))
        .collect();
    let wheres: Vec<String> = key_cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("t.{} = v.v{}", d.quote(&c.name), sets.len() + i))
        .collect();
    format!(
        "UPDATE {table} AS t SET {} FROM (VALUES {}) AS v({}) WHERE {}",
        set.join(", "),
        value_rows(d, &cols, rows),
        names.join(", "),
        wheres.join(" AND ")
    )
}

async fn apply_batch(
    conn: &SqlConnector,
    ops: Vec<WriteOp>,
) -> Result<Vec<WriteResult>, BatchError> {
    let d = conn.dialect();
    let table = conn.table_ref();
    let cols = conn.columns();
    let key_names: Vec<String> = conn.key_cols().iter().map(|c| c.name.clone()).collect();
    let non_key: Vec<&Column> = cols
        .iter()
        .filter(|c| !key_names.contains(&c.name))
        .collect();
    let key_cols: Vec<&Column> = conn.key_cols().iter().collect();
    let all: Vec<&Column> = cols.iter().collect();

    let mut results: Vec<Option<WriteResult>> = vec![None; ops.len()];
    // Creates, grouped so that no statement holds one key twice.
    let mut creates: Vec<Vec<(usize, Key, Vec<Param>)>> = Vec::new();
    let mut create_keys: Vec<HashSet<Key>> = Vec::new();
    let mut updates: Vec<(usize, Key, Vec<Param>)> = Vec::new();
    let mut deletes: Vec<(usize, Key, Vec<Param>)> = Vec::new();
    let mut conditional: Vec<Conditional> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if let WriteOp::Update {
            key, fields, base, ..
        } = op
        {
            match with_key(conn, fields, Some(key))
                .and_then(|t| Ok((t, with_key(conn, &base.fields, Some(key))?)))
                .and_then(|(t, b)| Ok((row_key(&t, &key_cols)?, t, b)))
            {
                Ok((k, target, base)) => conditional.push(Conditional {
                    index: i,
                    key: k,
                    target,
                    base,
                }),
                Err(e) => results[i] = Some(rejected(e)),
            }
            continue;
        }
        let prepared = match op {
            WriteOp::Upsert { fields, key, .. } => {
                with_key(conn, fields, key.as_ref()).and_then(|f| {
                    let k = row_key(&f, &key_cols)?;
                    Ok((f, k))
                })
            }
            WriteOp::Delete { key, .. } => {
                with_key(conn, &Fields::new(), Some(key)).map(|f| (f, key.clone()))
            }
            WriteOp::Update { .. } => unreachable!("taken above"),
        };
        let (f, k) = match prepared {
            Ok(x) => x,
            Err(e) => {
                results[i] = Some(rejected(e));
                continue;
            }
        };
        match op {
            WriteOp::Upsert { key: None, .. } => match params(conn, &all, &f) {
                Ok(p) => {
                    // The first group without this key (a multi-row upsert may not touch one
                    // row twice); a set per group keeps this linear in the batch.
                    match create_keys.iter().position(|ks| !ks.contains(&k)) {
                        Some(g) => {
                            create_keys[g].insert(k.clone());
                            creates[g].push((i, k, p));
                        }
                        None => {
                            create_keys.push(HashSet::from([k.clone()]));
                            creates.push(vec![(i, k, p)]);
                        }
                    }
                }
                Err(e) => results[i] = Some(rejected(e)),
            },
            WriteOp::Upsert { key: Some(_), .. } => {
                // SQLite (in-process, no round trip) updates row by row; a server database
                // gets whole rows in multi-row statements (see below).
                let ordered: Vec<&Column> = if d == Dialect::Sqlite {
                    let mut o = non_key.clone();
                    o.extend(key_cols.iter().copied());
                    o
                } else {
                    all.clone()
                };
                match params(conn, &ordered, &f) {
                    Ok(p) => updates.push((i, k, p)),
                    Err(e) => results[i] = Some(rejected(e)),
                }
            }
            WriteOp::Delete { .. } => match params(conn, &key_cols, &f) {
                Ok(p) => deletes.push((i, k, p)),
                Err(e) => results[i] = Some(rejected(e)),
            },
            WriteOp::Update { .. } => unreachable!("taken above"),
        }
    }

    let mut tx = conn.pool().begin().await?;
    conn.mark_writer(&mut tx, true).await?;
    let per_stmt = (d.max_params() / cols.len().max(1)).clamp(1, 1000);
    if d == Dialect::Postgres && creates.len() == 1 && creates[0].len() >= COPY_MIN_ROWS {
        // One group (no key twice): COPY into the staging table, then one upsert from it.
        let group = creates.pop().expect("one group");
        let stage = stage_name(&table);
        tx.execute(
            &format!(
                "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) \
                 ON COMMIT DELETE ROWS"
            ),
            &[],
        )
        .await?;
        let names: Vec<String> = cols.iter().map(|c| d.quote(&c.name)).collect();
        let rows: Vec<&[Param]> = group.iter().map(|(_, _, p)| p.as_slice()).collect();
        tx.copy_in(&stage, &names, &rows).await?;
        tx.execute(
            &upsert_from_stage_sql(&table, &stage, cols, &key_names),
            &[],
        )
        .await?;
        for (i, k, _) in group {
            results[i] = Some(WriteResult::Ok { key: k });
        }
    }
    for group in creates {
        for chunk in group.chunks(per_stmt) {
            let sql = upsert_sql(d, &table, cols, &key_names, chunk.len());
            let ps: Vec<Param> = chunk
                .iter()
                .flat_map(|(_, _, p)| p.iter().cloned())
                .collect();
            tx.execute(&sql, &ps).await?;
            for (i, k, _) in chunk {
                results[*i] = Some(WriteResult::Ok { key: k.clone() });
            }
        }
    }
    if !updates.is_empty() && d != Dialect::Sqlite {
        update_rows(conn, &mut tx, updates, &mut results).await?;
    } else if !updates.is_empty() {
        let sql = update_sql(d, &table, cols, &key_names);
        let exists = exists_sql(d, &table, cols, &key_names);
        let nk = non_key.len();
        for (i, k, p) in updates {
            let mut n = tx.execute(&sql, &p).await?;
            if n == 0 {
                // MySQL counts changed rows, not matched ones: an update to identical values
                // reports 0. Ask whether the row is there.
                n = tx.count(&exists, &p[nk..]).await?;
            }
            results[i] = Some(if n == 0 {
                WriteResult::Err {
                    kind: WriteErrorKind::NotFound,
                    message: format!("row {k} not found in {table}"),
                }
            } else {
                WriteResult::Ok { key: k }
            });
        }
    }
    apply_conditional(conn, &mut tx, conditional, &mut results).await?;
    if !deletes.is_empty() {
        // One statement per slice of keys: `DELETE … WHERE (key = …) OR …`.
        let mut seen = BTreeSet::new();
        let mut unique = Vec::new();
        for (i, k, _) in deletes {
            if seen.insert(k.clone()) {
                unique.push(k.parts());
            }
            results[i] = Some(WriteResult::Ok { key: k });
        }
        for chunk in unique.chunks(conn.keys_per_select()) {
            let (cond, ps, _) = conn.key_condition(chunk).map_err(BatchError::Other)?;
            tx.execute(&format!("DELETE FROM {table} WHERE {cond}"), &ps)
                .await?;
        }
    }
    conn.mark_writer(&mut tx, false).await?;
    tx.commit().await?;
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| rejected("not processed")))
        .collect())
}
