//! Reading rows: SELECT building, keyset paging, and decoding every column type to a value.

use super::client::{ColType, Column, Dialect, Param, Rows};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use concord_model::model::{canonical, Fields, Key, Timestamp, Value};
use serde::{Deserialize, Serialize};

/// Where a read continues. Values are kept in the canonical single-value encoding (hex), so a
/// cursor round-trips every type exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Key of the last row of the previous page (scan paging, and column-mode ties).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_key: Option<Vec<String>>,
    /// Column mode: updated-column value of the last row of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_updated: Option<String>,
    /// Column mode, timestamp columns: that value exactly, in the database's text form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_updated_raw: Option<String>,
    /// Column mode: where the next read starts (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Trigger mode: the last change-log sequence number consumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_seq: Option<i64>,
    /// Column mode with a timestamp column: the database's clock (epoch ms) when this read
    /// started, carried across its pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_started: Option<i64>,
    /// A page cursor inside one read (not yet checkpointed by the engine).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_read: bool,
}

pub fn value_hex(v: &Value) -> String {
    canonical::value_bytes(v)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn value_unhex(s: &str) -> Option<Value> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect();
    canonical::value_from_bytes(&bytes?).ok()
}

/// The select-list expression for a column (text casts for types concord reads as text).
pub fn select_expr(d: Dialect, c: &Column) -> String {
    let q = d.quote(&c.name);
    match (d, &c.ty) {
        (Dialect::Postgres, ColType::Other) => format!("{q}::text"),
        (Dialect::MySql, ColType::Other) => format!("CAST({q} AS CHAR)"),
        _ => q,
    }
}

/// A bind placeholder for parameter number `n` (1-based) of column `c`.
pub fn placeholder(d: Dialect, n: usize, c: &Column) -> String {
    match d {
        Dialect::Postgres => {
            let ty = if c
                .db_type
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            {
                c.db_type.clone()
            } else {
                d.quote(&c.db_type)
            };
            format!("${n}::{ty}")
        }
        _ => "?".into(),
    }
}

/// A placeholder for a parameter of a known SQL type (PostgreSQL casts it).
pub fn ph(d: Dialect, n: usize, pg_type: &str) -> String {
    match d {
        Dialect::Postgres => format!("${n}::{pg_type}"),
        _ => "?".into(),
    }
}

/// Change-log rows: (seq, key parts as JSON, unsettled).
pub fn log_entries(rows: &Rows) -> Result<Vec<(i64, String, bool)>, crate::InvalidData> {
    use sqlx::Row;
    let e = |x: sqlx::Error| x.to_string();
    let mut out = Vec::new();
    match rows {
        Rows::Pg(r) => {
            for row in r {
                out.push((
                    row.try_get(0).map_err(e)?,
                    row.try_get(1).map_err(e)?,
                    row.try_get(2).map_err(e)?,
                ));
            }
        }
        Rows::My(r) => {
            for row in r {
                let unsettled: i64 = row.try_get(2).map_err(e)?;
                out.push((
                    row.try_get(0).map_err(e)?,
                    row.try_get(1).map_err(e)?,
                    unsettled != 0,
                ));
            }
        }
        Rows::Lite(r) => {
            for row in r {
                out.push((
                    row.try_get(0).map_err(e)?,
                    row.try_get(1).map_err(e)?,
                    false,
                ));
            }
        }
    }
    Ok(out)
}

/// The first column of the first row, as an integer.
pub fn first_i64(rows: &Rows) -> Result<i64, crate::InvalidData> {
    use sqlx::Row;
    let e = |x: sqlx::Error| crate::InvalidData(x.to_string());
    match rows {
        Rows::Pg(r) => r.first().map_or(Ok(0), |x| x.try_get(0).map_err(e)),
        Rows::My(r) => r.first().map_or(Ok(0), |x| x.try_get(0).map_err(e)),
        Rows::Lite(r) => r.first().map_or(Ok(0), |x| x.try_get(0).map_err(e)),
    }
}

/// The first column of the first row as text (empty when there is no row or it is null).
pub fn first_text(rows: &Rows) -> Result<String, crate::InvalidData> {
    use sqlx::Row;
    let e = |x: sqlx::Error| x.to_string();
    let v: Option<String> = match rows {
        Rows::Pg(r) => r.first().map_or(Ok(None), |x| x.try_get(0).map_err(e))?,
        Rows::My(r) => r.first().map_or(Ok(None), |x| x.try_get(0).map_err(e))?,
        Rows::Lite(r) => r.first().map_or(Ok(None), |x| x.try_get(0).map_err(e))?,
    };
    Ok(v.unwrap_or_default())
}

/// A row-value comparison `(a, b) > (p1, p2)` with placeholders from `first`.
pub fn tuple_gt(d: Dialect, cols: &[&Column], first: usize) -> String {
    let names: Vec<String> = cols.iter().map(|c| d.quote(&c.name)).collect();
    let ph: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| placeholder(d, first + i, c))
        .collect();
    format!("({}) > ({})", names.join(", "), ph.join(", "))
}

/// The plain text of a key value (for native keys).
pub fn key_part(v: &Value) -> String {
    crate::key_text(v)
}

/// The typed value of one part of a native key (the inverse of [`key_part`]).
pub fn value_from_key_part(
    c: &Column,
    part: &str,
    off: FixedOffset,
) -> Result<Value, crate::InvalidData> {
    match &c.ty {
        ColType::Bytes => {
            if part.len() % 2 != 0 {
                return Err("odd-length hex".into());
            }
            (0..part.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(part.get(i..i + 2).unwrap_or("zz"), 16))
                .collect::<Result<Vec<u8>, _>>()
                .map(Value::Bytes)
                .map_err(|_| crate::InvalidData::from("not hex"))
        }
        ColType::TimestampTz => Value::datetime_str(part).map_err(|e| e.to_string().into()),
        ColType::Timestamp => {
            Value::datetime_str(part).or_else(|_| text_to(&c.ty, part.to_string(), off))
        }
        ty => text_to(ty, part.to_string(), off),
    }
}

pub fn row_key(fields: &Fields, key: &[&Column]) -> Result<Key, crate::InvalidData> {
    let names: Vec<&str> = key.iter().map(|c| c.name.as_str()).collect();
    crate::key_of(fields, &names)
}

fn naive_to_value(n: NaiveDateTime, off: FixedOffset) -> Result<Value, crate::InvalidData> {
    Timestamp::from_naive(n, off)
        .map(Value::DateTime)
        .map_err(|e| e.to_string().into())
}

fn parse_naive(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return Some(n);
        }
        if f == "%Y-%m-%d" {
            if let Ok(d) = NaiveDate::parse_from_str(s, f) {
                return d.and_hms_opt(0, 0, 0);
            }
        }
    }
    None
}

fn text_to(ty: &ColType, s: String, off: FixedOffset) -> Result<Value, crate::InvalidData> {
    Ok(match ty {
        ColType::Int { .. } | ColType::Decimal | ColType::Float32 | ColType::Float64 => {
            Value::decimal_str(&s).map_err(|e| e.to_string())?
        }
        ColType::Bool => match s.to_ascii_lowercase().as_str() {
            "1" | "true" | "t" | "yes" => Value::Bool(true),
            "0" | "false" | "f" | "no" => Value::Bool(false),
            _ => return Err(format!("not a boolean: {s:?}").into()),
        },
        ColType::Date => Value::date_str(s.get(..10).unwrap_or(&s)).map_err(|e| e.to_string())?,
        ColType::Timestamp => match parse_naive(&s) {
            Some(n) => naive_to_value(n, off)?,
            None => Value::datetime_str(&s).map_err(|e| e.to_string())?,
        },
        ColType::TimestampTz => Value::datetime_str(&s).map_err(|e| e.to_string())?,
        ColType::Json => {
            Value::Json(serde_json::from_str(&s).map_err(|e| format!("invalid JSON: {e}"))?)
        }
        ColType::Text { padded: true } => Value::text(s.trim_end_matches(' ')),
        _ => Value::text(s),
    })
}

macro_rules! get {
    ($row:expr, $i:expr, $t:ty) => {
        $row.try_get::<Option<$t>, _>($i)
            .map_err(|e| e.to_string())?
    };
}

/// The column types PostgreSQL and MySQL decode alike; `None` for the others.
macro_rules! common {
    ($row:expr, $i:expr, $c:expr, $off:expr) => {
        match &$c.ty {
            ColType::Bool => Some(get!($row, $i, bool).map(Value::Bool)),
            ColType::Decimal => Some(get!($row, $i, rust_decimal::Decimal).map(Value::from)),
            ColType::Float32 => Some(match get!($row, $i, f32) {
                Some(f) => Some(Value::from_f32(f).map_err(|e| e.to_string())?),
                None => None,
            }),
            ColType::Float64 => Some(match get!($row, $i, f64) {
                Some(f) => Some(Value::from_f64(f).map_err(|e| e.to_string())?),
                None => None,
            }),
            ColType::Date => Some(get!($row, $i, NaiveDate).map(Value::Date)),
            ColType::Timestamp => Some(match get!($row, $i, NaiveDateTime) {
                Some(n) => Some(naive_to_value(n, $off)?),
                None => None,
            }),
            ColType::TimestampTz => Some(
                get!($row, $i, DateTime<Utc>).map(|d| Value::DateTime(Timestamp::from_chrono(&d))),
            ),
            ColType::Bytes => Some(get!($row, $i, Vec<u8>).map(Value::Bytes)),
            _ => None,
        }
    };
}

fn pg_value(
    row: &sqlx::postgres::PgRow,
    i: usize,
    c: &Column,
    off: FixedOffset,
) -> Result<Option<Value>, crate::InvalidData> {
    use sqlx::Row;
    if let Some(v) = common!(row, i, c, off) {
        return Ok(v);
    }
    Ok(match &c.ty {
        ColType::Int { bits: 16, .. } => get!(row, i, i16).map(|v| Value::Int(v as i64)),
        ColType::Int { bits: 32, .. } => get!(row, i, i32).map(|v| Value::Int(v as i64)),
        ColType::Int { .. } => get!(row, i, i64).map(Value::Int),
        ColType::Text { padded: true } => {
            get!(row, i, String).map(|s| Value::text(s.trim_end_matches(' ')))
        }
        ColType::Json => get!(row, i, serde_json::Value).map(Value::Json),
        ColType::Uuid => get!(row, i, sqlx::types::Uuid).map(|u| Value::text(u.to_string())),
        _ => get!(row, i, String).map(Value::text),
    })
}

fn my_value(
    row: &sqlx::mysql::MySqlRow,
    i: usize,
    c: &Column,
    off: FixedOffset,
) -> Result<Option<Value>, crate::InvalidData> {
    use sqlx::Row;
    if let Some(v) = common!(row, i, c, off) {
        return Ok(v);
    }
    Ok(match &c.ty {
        ColType::Int { unsigned: true, .. } => get!(row, i, u64).map(|u| match i64::try_from(u) {
            Ok(v) => Value::Int(v),
            Err(_) => Value::from(rust_decimal::Decimal::from(u)),
        }),
        ColType::Int { .. } => get!(row, i, i64).map(Value::Int),
        ColType::Json => match row.try_get::<Option<String>, _>(i) {
            // MariaDB: LONGTEXT with a json_valid() check.
            Ok(s) => match s {
                Some(s) => Some(Value::Json(
                    serde_json::from_str(&s).map_err(|e| format!("invalid JSON: {e}"))?,
                )),
                None => None,
            },
            // MySQL: a native JSON column.
            Err(_) => get!(row, i, serde_json::Value).map(Value::Json),
        },
        _ => get!(row, i, String).map(Value::text),
    })
}

fn lite_value(
    row: &sqlx::sqlite::SqliteRow,
    i: usize,
    c: &Column,
    off: FixedOffset,
) -> Result<Option<Value>, crate::InvalidData> {
    use sqlx::{Row, TypeInfo, ValueRef};
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(None);
    }
    let storage = raw.type_info().name().to_string();
    let v = match storage.as_str() {
        "INTEGER" => {
            let n: i64 = row.try_get(i).map_err(|e| e.to_string())?;
            match &c.ty {
                ColType::Bool => Value::Bool(n != 0),
                ColType::Text { .. } | ColType::Other => Value::text(n.to_string()),
                ColType::Timestamp | ColType::TimestampTz => {
                    Value::DateTime(Timestamp(n.saturating_mul(1000)))
                }
                _ => Value::Int(n),
            }
        }
        "REAL" => {
            let f: f64 = row.try_get(i).map_err(|e| e.to_string())?;
            match &c.ty {
                ColType::Text { .. } | ColType::Other => Value::text(f.to_string()),
                ColType::Float32 => Value::from_f32(f as f32).map_err(|e| e.to_string())?,
                _ => Value::from_f64(f).map_err(|e| e.to_string())?,
            }
        }
        "BLOB" => {
            let b: Vec<u8> = row.try_get(i).map_err(|e| e.to_string())?;
            Value::Bytes(b)
        }
        _ => {
            let s: String = row.try_get(i).map_err(|e| e.to_string())?;
            text_to(&c.ty, s, off)?
        }
    };
    Ok(Some(v))
}

/// Decodes fetched rows into field sets (column name → value).
pub fn decode(
    rows: &Rows,
    cols: &[Column],
    off: FixedOffset,
) -> Result<Vec<Fields>, crate::InvalidData> {
    let mut out = Vec::new();
    macro_rules! each {
        ($rows:expr, $f:ident) => {
            for row in $rows {
                let mut fields = Fields::new();
                for (i, c) in cols.iter().enumerate() {
                    match $f(row, i, c, off) {
                        Ok(Some(v)) => fields.set(c.name.as_str(), v),
                        Ok(None) => {}
                        Err(e) => return Err(format!("column {}: {e}", c.name).into()),
                    }
                }
                out.push(fields);
            }
        };
    }
    match rows {
        Rows::Pg(r) => each!(r, pg_value),
        Rows::My(r) => each!(r, my_value),
        Rows::Lite(r) => each!(r, lite_value),
    }
    Ok(out)
}

/// The bound parameter for a value written to (or compared with) column `c`.
pub fn param_for(
    d: Dialect,
    c: &Column,
    v: Option<&Value>,
    off: FixedOffset,
) -> Result<Param, crate::InvalidData> {
    let Some(v) = v else {
        return Ok(Param::Null);
    };
    let mismatch = || {
        format!(
            "cannot store a {} value in column {} ({})",
            v.type_name(),
            c.name,
            c.db_type
        )
    };
    // Which values a column accepts.
    let ok = match (&c.ty, v) {
        (ColType::Int { .. }, Value::Int(_)) => true,
        (
            ColType::Decimal | ColType::Float32 | ColType::Float64,
            Value::Int(_) | Value::Decimal(_),
        ) => true,
        (ColType::Bool, Value::Bool(_)) => true,
        (ColType::Date, Value::Date(_)) => true,
        (ColType::Timestamp | ColType::TimestampTz, Value::DateTime(_)) => true,
        (ColType::Bytes, Value::Bytes(_)) => true,
        (ColType::Bytes, _) => false,
        (ColType::Text { .. } | ColType::Uuid | ColType::Other | ColType::Json, _) => true,
        _ => false,
    };
    if !ok {
        return Err(mismatch().into());
    }
    let text = |v: &Value| -> String {
        match v {
            Value::DateTime(t) => {
                let utc = t.to_chrono().unwrap_or_default();
                match (&c.ty, d) {
                    (ColType::Timestamp, _) => utc
                        .with_timezone(&off)
                        .naive_local()
                        .format("%Y-%m-%d %H:%M:%S%.3f")
                        .to_string(),
                    (_, Dialect::MySql) => {
                        utc.naive_utc().format("%Y-%m-%d %H:%M:%S%.3f").to_string()
                    }
                    _ => t.to_string(),
                }
            }
            Value::Bool(b) => if *b { "true" } else { "false" }.into(),
            other => key_part(other),
        }
    };
    Ok(match (d, v) {
        (_, Value::Bytes(b)) => Param::Bytes(b.clone()),
        (Dialect::Postgres, _) => Param::Text(text(v)),
        (_, Value::Bool(b)) => Param::Int(*b as i64),
        (_, Value::Int(i)) if !matches!(c.ty, ColType::Text { .. } | ColType::Other) => {
            Param::Int(*i)
        }
        (Dialect::Sqlite, Value::Decimal(x))
            if matches!(c.ty, ColType::Float32 | ColType::Float64) =>
        {
            Param::Float(x.to_string().parse::<f64>().map_err(|_| mismatch())?)
        }
        _ => Param::Text(text(v)),
    })
}
