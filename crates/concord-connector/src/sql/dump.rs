//! Loads a plain-SQL PostgreSQL dump (`pg_dump --inserts` style: CREATE TABLE, INSERT, ALTER
//! TABLE … ADD CONSTRAINT) into PostgreSQL, MariaDB/MySQL or SQLite. Used to load the Northwind
//! ERP dataset into all three for tests and the demo; it handles what such dumps contain, not
//! every PostgreSQL feature (functions, sequences and views are refused by name).

use super::client::{Dialect, Pool};
use std::collections::BTreeMap;

/// Splits SQL text into statements at `;` outside single-quoted strings; drops `--` comments.
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_str = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if !in_str && c == '-' && chars.peek() == Some(&'-') {
            for n in chars.by_ref() {
                if n == '\n' {
                    break;
                }
            }
            cur.push('\n');
            continue;
        }
        if c == '\'' {
            in_str = !in_str;
        }
        if c == ';' && !in_str {
            let s = cur.trim();
            if !s.is_empty() {
                out.push(s.to_string());
            }
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    let s = cur.trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
    out
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect()
}

/// Column types of a PostgreSQL dump in the target dialect.
fn translate_type(d: Dialect, def: &str) -> String {
    if d == Dialect::Postgres {
        return def.to_string();
    }
    let mut s = def.to_string();
    let map: &[(&str, &str, &str)] = &[
        // (postgres, mysql, sqlite)
        ("character varying", "VARCHAR", "VARCHAR"),
        ("character", "CHAR", "CHAR"),
        ("bytea", "LONGBLOB", "BLOB"),
        ("real", "FLOAT", "FLOAT4"),
        ("double precision", "DOUBLE", "REAL"),
        ("smallint", "SMALLINT", "INTEGER"),
        ("integer", "INT", "INTEGER"),
        ("bigint", "BIGINT", "INTEGER"),
        ("boolean", "TINYINT(1)", "BOOLEAN"),
        ("timestamp with time zone", "TIMESTAMP(6)", "DATETIME"),
        ("timestamp without time zone", "DATETIME(6)", "DATETIME"),
    ];
    for (pg, my, lite) in map {
        if let Some(pos) = s.find(pg) {
            let after = &s[pos + pg.len()..];
            // Whole words only ("character" inside "character varying" was handled first).
            if after.starts_with(|c: char| c.is_ascii_alphabetic()) {
                continue;
            }
            let rep = if d == Dialect::MySql { *my } else { *lite };
            s = format!("{}{}{}", &s[..pos], rep, after);
            break;
        }
    }
    s
}

/// `'\x0a1b'` (PostgreSQL bytea hex) to `X'0a1b'` for the other dialects.
fn translate_bytea(d: Dialect, stmt: &str) -> String {
    if d == Dialect::Postgres || !stmt.contains("'\\x") {
        return stmt.to_string();
    }
    let mut out = String::with_capacity(stmt.len());
    let mut rest = stmt;
    while let Some(i) = rest.find("'\\x") {
        let hex_start = i + 3;
        let hex_len = rest[hex_start..].find('\'').unwrap_or(0);
        let hex = &rest[hex_start..hex_start + hex_len];
        if hex.chars().all(|c| c.is_ascii_hexdigit()) {
            out.push_str(&rest[..i]);
            out.push_str(&format!("X'{hex}'"));
            rest = &rest[hex_start + hex_len + 1..];
        } else {
            out.push_str(&rest[..hex_start]);
            rest = &rest[hex_start..];
        }
    }
    out.push_str(rest);
    out
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Rows inserted per table.
    pub rows: BTreeMap<String, u64>,
    /// Foreign keys left out (MariaDB/SQLite loads keep primary keys only).
    pub foreign_keys_skipped: u64,
}

/// Translates the dump into statements for `d`.
pub fn translate(d: Dialect, dump: &str) -> Result<(Vec<String>, LoadReport), crate::InvalidData> {
    let stmts = statements(dump);
    // Primary keys, folded into CREATE TABLE (SQLite cannot add one later).
    let mut pks: BTreeMap<String, String> = BTreeMap::new();
    for s in &stmts {
        let w = words(s);
        if w.len() >= 9 && w[0] == "alter" && w[1] == "table" && w.contains(&"primary".to_string())
        {
            let table = if w[2] == "only" { &w[3] } else { &w[2] };
            if let (Some(a), Some(b)) = (s.find('('), s.rfind(')')) {
                pks.insert(table.clone(), s[a + 1..b].to_string());
            }
        }
    }
    let mut out = Vec::new();
    let mut report = LoadReport::default();
    for s in stmts {
        let w = words(&s);
        let first = w.first().map(String::as_str).unwrap_or("");
        match first {
            "set" | "select" | "comment" => continue,
            "drop" => out.push(s.clone()),
            "create" if w.get(1).map(String::as_str) == Some("table") => {
                let table = w.get(2).cloned().unwrap_or_default();
                let (open, close) = match (s.find('('), s.rfind(')')) {
                    (Some(a), Some(b)) if a < b => (a, b),
                    _ => return Err(format!("cannot read CREATE TABLE {table}").into()),
                };
                let cols: Vec<String> = s[open + 1..close]
                    .split(",\n")
                    .map(|c| translate_type(d, c.trim()))
                    .collect();
                let mut body = cols.join(",\n    ");
                if let Some(pk) = pks.get(&table) {
                    body.push_str(&format!(",\n    PRIMARY KEY ({pk})"));
                }
                out.push(format!("CREATE TABLE {table} (\n    {body}\n)"));
            }
            "create" => {
                return Err(format!(
                    "unsupported statement in dump: {}",
                    w[..2.min(w.len())].join(" ")
                )
                .into())
            }
            "insert" => {
                let table = w.get(2).cloned().unwrap_or_default();
                *report.rows.entry(table).or_default() += 1;
                let stmt = translate_bytea(d, &s);
                // PostgreSQL dumps use standard strings (a backslash is a backslash); MySQL
                // reads backslash escapes unless they are doubled.
                out.push(if d == Dialect::MySql {
                    stmt.replace('\\', "\\\\")
                } else {
                    stmt
                });
            }
            "alter" if w.contains(&"primary".to_string()) => {} // folded above
            "alter" if w.contains(&"foreign".to_string()) => {
                if d == Dialect::Postgres {
                    out.push(s.clone());
                } else {
                    report.foreign_keys_skipped += 1;
                }
            }
            "alter" if w.iter().any(|x| x == "owner") => {}
            _ => {
                return Err(format!(
                    "unsupported statement in dump: {}",
                    s.chars().take(60).collect::<String>()
                )
                .into())
            }
        }
    }
    Ok((out, report))
}

/// Loads the dump in one transaction (nothing is left half-loaded on error). On PostgreSQL and
/// MySQL the tables go to `schema` when given (created if missing).
pub async fn load(
    pool: &Pool,
    schema: Option<&str>,
    dump: &str,
) -> Result<LoadReport, crate::InvalidData> {
    let d = pool.dialect();
    let (stmts, report) = translate(d, dump)?;
    let e = |x: sqlx::Error| super::client::describe(&x).0;
    if let Some(s) = schema {
        let q = d.quote(s);
        match d {
            Dialect::Postgres => pool
                .execute(&format!("CREATE SCHEMA IF NOT EXISTS {q}"), &[])
                .await
                .map_err(e)?,
            Dialect::MySql => pool
                .execute(&format!("CREATE DATABASE IF NOT EXISTS {q}"), &[])
                .await
                .map_err(e)?,
            Dialect::Sqlite => 0,
        };
    }
    let mut tx = pool.begin().await.map_err(e)?;
    let previous_db = if d == Dialect::MySql && schema.is_some() {
        tx.scalar_text("SELECT DATABASE()").await.map_err(e)?
    } else {
        None
    };
    if let Some(s) = schema {
        match d {
            Dialect::Postgres => tx
                .execute(&format!("SET LOCAL search_path TO {}", d.quote(s)), &[])
                .await
                .map_err(e)?,
            Dialect::MySql => tx
                .execute(&format!("USE {}", d.quote(s)), &[])
                .await
                .map_err(e)?,
            Dialect::Sqlite => 0,
        };
    }
    for s in &stmts {
        tx.execute(s, &[])
            .await
            .map_err(|x| format!("{}: in `{}`", e(x), s.chars().take(80).collect::<String>()))?;
    }
    if let Some(db) = previous_db {
        // Leave the pooled connection on its own database again.
        tx.execute(&format!("USE {}", d.quote(&db)), &[])
            .await
            .map_err(e)?;
    }
    tx.commit().await.map_err(e)?;
    Ok(report)
}
