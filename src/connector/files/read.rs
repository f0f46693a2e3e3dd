//! Parsing CSV and JSONL into records, and the text/JSON form of each value type.

use super::config::{FileConfig, FileFormat, FileType};
use crate::model::{canonical, Fields, Value};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return Err("not hex".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| "not hex".to_string()))
        .collect()
}

/// A cell's text as the declared type.
pub fn from_text(t: FileType, s: &str) -> Result<Value, String> {
    Ok(match t {
        FileType::Text => Value::text(s),
        FileType::Int => match s.trim().parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => return Err(format!("not an integer: {s:?}")),
        },
        FileType::Decimal => Value::decimal_str(s).map_err(|e| e.to_string())?,
        FileType::Bool => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::Bool(true),
            "false" | "0" | "no" => Value::Bool(false),
            _ => return Err(format!("not a boolean: {s:?}")),
        },
        FileType::Date => Value::date_str(s).map_err(|e| e.to_string())?,
        FileType::Datetime => Value::datetime_str(s).map_err(|e| e.to_string())?,
        FileType::Json => {
            Value::Json(serde_json::from_str(s).map_err(|e| format!("invalid JSON: {e}"))?)
        }
        FileType::Bytes => Value::Bytes(unhex(s.trim())?),
    })
}

fn type_matches(t: FileType, v: &Value) -> bool {
    matches!(
        (t, v),
        (FileType::Text, Value::Text(_))
            | (FileType::Int, Value::Int(_))
            | (FileType::Decimal, Value::Int(_) | Value::Decimal(_))
            | (FileType::Bool, Value::Bool(_))
            | (FileType::Date, Value::Date(_))
            | (FileType::Datetime, Value::DateTime(_))
            | (FileType::Json, _)
            | (FileType::Bytes, Value::Bytes(_))
    )
}

fn mismatch(col: &str, t: Option<FileType>, v: &Value) -> String {
    match t {
        Some(t) => format!("column {col} is declared {t:?}, the value is a {}", v.type_name()),
        None => format!(
            "column {col} holds a {} value: declare its type under `types` so it reads back as written",
            v.type_name()
        ),
    }
}

/// The CSV cell for a value (undeclared columns take text only).
pub fn to_text(col: &str, t: Option<FileType>, v: &Value) -> Result<String, String> {
    let tt = t.unwrap_or(FileType::Text);
    if !type_matches(tt, v) {
        return Err(mismatch(col, t, v));
    }
    Ok(match v {
        Value::Text(s) => s.clone(),
        Value::Date(d) => d.format("%Y-%m-%d").to_string(),
        Value::Bytes(b) => hex(b),
        Value::Json(j) => {
            let mut s = String::new();
            canonical::canonical_json(j, &mut s);
            s
        }
        other => other.to_string(),
    })
}

/// A JSONL value as a field value: declared types convert; undeclared ones follow the JSON type.
pub fn from_json(t: Option<FileType>, j: &serde_json::Value) -> Result<Option<Value>, String> {
    use serde_json::Value as J;
    if j.is_null() {
        return Ok(None);
    }
    Ok(Some(match (t, j) {
        (None, J::String(s)) => Value::text(s.as_str()),
        (None, J::Bool(b)) => Value::Bool(*b),
        (None, J::Number(n)) | (Some(FileType::Decimal | FileType::Int), J::Number(n)) => {
            let v = Value::decimal_str(&n.to_string()).map_err(|e| e.to_string())?;
            if t == Some(FileType::Int) && !matches!(v, Value::Int(_)) {
                return Err(format!("not an integer: {n}"));
            }
            v
        }
        (None | Some(FileType::Json), other) => Value::Json(other.clone()),
        (Some(FileType::Text), J::Number(n)) => Value::text(n.to_string()),
        (Some(FileType::Bool), J::Bool(b)) => Value::Bool(*b),
        (Some(t), J::String(s)) => from_text(t, s)?,
        (Some(t), other) => return Err(format!("{other} is not a {t:?}")),
    }))
}

/// The JSON form of a value; refuses values that would read back as something else.
pub fn to_json(col: &str, t: Option<FileType>, v: &Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    if let Some(tt) = t {
        if !type_matches(tt, v) {
            return Err(mismatch(col, t, v));
        }
    }
    Ok(match (t, v) {
        (_, Value::Text(s)) => J::String(s.clone()),
        (_, Value::Bool(b)) => J::Bool(*b),
        (_, Value::Int(i)) => J::from(*i),
        (_, Value::Decimal(d)) => {
            let f: f64 = d.to_string().parse().map_err(|_| mismatch(col, t, v))?;
            match Value::from_f64(f) {
                Ok(back) if back == *v => J::from(f),
                _ if t == Some(FileType::Decimal) => J::String(d.to_string()),
                _ => return Err(format!("column {col}: {d} needs more precision than a JSON number keeps: declare it `decimal`")),
            }
        }
        (None, Value::Json(j)) if j.is_object() || j.is_array() => j.clone(),
        (Some(FileType::Json), Value::Json(j)) => j.clone(),
        (Some(FileType::Json), other) => J::String(to_text(col, Some(FileType::Json), other)?),
        (Some(_), Value::Date(_) | Value::DateTime(_) | Value::Bytes(_)) => {
            J::String(to_text(col, t, v)?)
        }
        (None, other) => return Err(mismatch(col, None, other)),
        (Some(_), other) => return Err(mismatch(col, t, other)),
    })
}

/// One parsed file: rows in file order, and the CSV header (column order to keep on rewrite).
#[derive(Debug, Default)]
pub struct Parsed {
    pub header: Vec<String>,
    pub rows: Vec<Fields>,
}

/// Parses a whole file's bytes. Errors say which line and column.
pub fn parse(cfg: &FileConfig, bytes: &[u8]) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    match cfg.format {
        FileFormat::Csv => {
            let mut r = csv::ReaderBuilder::new()
                .delimiter(cfg.delimiter as u8)
                // Exports often end rows early (an account without contacts): missing trailing
                // cells are empty. A row longer than the header is still an error.
                .flexible(true)
                .from_reader(bytes);
            out.header = r
                .headers()
                .map_err(|e| format!("header: {e}"))?
                .iter()
                .map(|h| h.to_string())
                .collect();
            for (n, rec) in r.records().enumerate() {
                let rec = rec.map_err(|e| format!("line {}: {e}", n + 2))?;
                if rec.len() > out.header.len() {
                    return Err(format!(
                        "line {}: {} cells but the header has {} columns",
                        n + 2,
                        rec.len(),
                        out.header.len()
                    ));
                }
                let mut f = Fields::new();
                for (col, cell) in out.header.iter().zip(rec.iter()) {
                    if cell.is_empty() {
                        continue;
                    }
                    let t = cfg.types.get(col).copied().unwrap_or(FileType::Text);
                    let v = from_text(t, cell)
                        .map_err(|e| format!("line {}, column {col}: {e}", n + 2))?;
                    f.set(col.as_str(), v);
                }
                out.rows.push(f);
            }
        }
        FileFormat::Jsonl => {
            let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let j: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
                let obj = j
                    .as_object()
                    .ok_or_else(|| format!("line {}: not a JSON object", n + 1))?;
                let mut f = Fields::new();
                for (col, v) in obj {
                    if col == "_op" {
                        continue;
                    }
                    if let Some(v) = from_json(cfg.types.get(col).copied(), v)
                        .map_err(|e| format!("line {}, field {col}: {e}", n + 1))?
                    {
                        f.set(col.as_str(), v);
                    }
                }
                out.rows.push(f);
            }
        }
    }
    Ok(out)
}
