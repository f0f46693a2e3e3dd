//! Parsing CSV and JSONL into records, and the text/JSON form of each value type.

use super::config::{FileConfig, FileFormat, FileType};
use concord_model::model::{canonical, Fields, Value};

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
pub fn from_text(t: FileType, s: &str) -> Result<Value, crate::InvalidData> {
    Ok(match t {
        FileType::Text => Value::text(s),
        FileType::Int => match s.trim().parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => return Err(format!("not an integer: {s:?}").into()),
        },
        FileType::Decimal => Value::decimal_str(s).map_err(|e| e.to_string())?,
        FileType::Bool => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::Bool(true),
            "false" | "0" | "no" => Value::Bool(false),
            _ => return Err(format!("not a boolean: {s:?}").into()),
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
pub fn to_text(col: &str, t: Option<FileType>, v: &Value) -> Result<String, crate::InvalidData> {
    let tt = t.unwrap_or(FileType::Text);
    if !type_matches(tt, v) {
        return Err(mismatch(col, t, v).into());
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
pub fn from_json(
    t: Option<FileType>,
    j: &serde_json::Value,
) -> Result<Option<Value>, crate::InvalidData> {
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
                return Err(format!("not an integer: {n}").into());
            }
            v
        }
        (None | Some(FileType::Json), other) => Value::Json(other.clone()),
        (Some(FileType::Text), J::Number(n)) => Value::text(n.to_string()),
        (Some(FileType::Bool), J::Bool(b)) => Value::Bool(*b),
        (Some(t), J::String(s)) => from_text(t, s)?,
        (Some(t), other) => return Err(format!("{other} is not a {t:?}").into()),
    }))
}

/// The JSON form of a value; refuses values that would read back as something else.
pub fn to_json(
    col: &str,
    t: Option<FileType>,
    v: &Value,
) -> Result<serde_json::Value, crate::InvalidData> {
    use serde_json::Value as J;
    if let Some(tt) = t {
        if !type_matches(tt, v) {
            return Err(mismatch(col, t, v).into());
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
                _ => return Err(format!("column {col}: {d} needs more precision than a JSON number keeps: declare it `decimal`").into()),
            }
        }
        (None, Value::Json(j)) if j.is_object() || j.is_array() => j.clone(),
        (Some(FileType::Json), Value::Json(j)) => j.clone(),
        (Some(FileType::Json), other) => J::String(to_text(col, Some(FileType::Json), other)?),
        (Some(_), Value::Date(_) | Value::DateTime(_) | Value::Bytes(_)) => {
            J::String(to_text(col, t, v)?)
        }
        (None, other) => return Err(mismatch(col, None, other).into()),
        (Some(_), other) => return Err(mismatch(col, t, other).into()),
    })
}

/// One parsed file: rows in file order with the line each starts on, and the CSV header
/// (column order to keep on rewrite).
#[derive(Debug, Default)]
pub struct Parsed {
    pub header: Vec<String>,
    pub rows: Vec<(usize, Fields)>,
}

/// Where in a file a problem is: 1-based line, and column in characters.
fn at(line: usize, col: usize) -> String {
    format!("line {line}, column {col}")
}

/// One CSV record: the line it starts on and its cells, each with the (line, column) it starts
/// at.
struct CsvRecord {
    line: usize,
    cells: Vec<(String, usize, usize)>,
}

/// Splits CSV text into records, strictly (RFC 4180, with `\n` or `\r\n` line ends): a quoted
/// cell must be closed, and its closing quote followed by a delimiter, a line end or the end of
/// the file; a quote inside an unquoted cell is kept as text (a common spreadsheet habit that
/// swallows nothing). Blank lines are skipped. The `csv` crate takes a quote left open for a
/// cell running to the end of the file — the rows after it vanish and look deleted — so the
/// reader is this one.
/// Consumes the line end at the front of `chars` (`\n` or `\r\n`; a lone `\r` is an error).
fn line_end(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    line: &mut usize,
    col: &mut usize,
) -> Result<(), String> {
    if chars.next() == Some('\r') && chars.next() != Some('\n') {
        return Err(format!(
            "{}: a carriage return without a line feed",
            at(*line, *col)
        ));
    }
    *line += 1;
    *col = 1;
    Ok(())
}

fn csv_records(text: &str, delim: char) -> Result<Vec<CsvRecord>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let (mut line, mut col) = (1usize, 1usize);
    loop {
        if chars.peek().is_none() {
            break;
        }
        // A blank line.
        if chars.peek() == Some(&'\n') {
            chars.next();
            line += 1;
            col = 1;
            continue;
        }
        if chars.peek() == Some(&'\r') {
            let mut look = chars.clone();
            look.next();
            if look.peek() == Some(&'\n') {
                chars.next();
                chars.next();
                line += 1;
                col = 1;
                continue;
            }
        }
        let rec_line = line;
        let mut cells = Vec::new();
        loop {
            let (cell_line, cell_col) = (line, col);
            let mut cell = String::new();
            let ended_record;
            if chars.peek() == Some(&'"') {
                chars.next();
                col += 1;
                loop {
                    match chars.next() {
                        None => {
                            return Err(format!(
                                "{}: a quote opened here is never closed (the rest of the \
                                 file would be one cell)",
                                at(cell_line, cell_col)
                            ))
                        }
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            col += 2;
                            cell.push('"');
                        }
                        Some('"') => {
                            col += 1;
                            break;
                        }
                        Some('\n') => {
                            cell.push('\n');
                            line += 1;
                            col = 1;
                        }
                        Some(c) => {
                            cell.push(c);
                            col += 1;
                        }
                    }
                }
                match chars.peek().copied() {
                    None => ended_record = true,
                    Some(c) if c == delim => {
                        chars.next();
                        col += 1;
                        ended_record = false;
                    }
                    Some('\n' | '\r') => {
                        line_end(&mut chars, &mut line, &mut col)?;
                        ended_record = true;
                    }
                    Some(c) => {
                        return Err(format!(
                            "{}: {c:?} after the closing quote of a cell (a quote inside a \
                             quoted cell is written twice)",
                            at(line, col)
                        ))
                    }
                }
            } else {
                loop {
                    match chars.peek().copied() {
                        None => {
                            ended_record = true;
                            break;
                        }
                        Some(c) if c == delim => {
                            chars.next();
                            col += 1;
                            ended_record = false;
                            break;
                        }
                        Some('\n' | '\r') => {
                            line_end(&mut chars, &mut line, &mut col)?;
                            ended_record = true;
                            break;
                        }
                        Some(c) => {
                            chars.next();
                            col += 1;
                            cell.push(c);
                        }
                    }
                }
            }
            cells.push((cell, cell_line, cell_col));
            if ended_record {
                break;
            }
        }
        out.push(CsvRecord {
            line: rec_line,
            cells,
        });
    }
    Ok(out)
}

/// The text of a file that must be UTF-8: the first invalid byte is named by line and column.
pub fn utf8(bytes: &[u8]) -> Result<&str, crate::InvalidData> {
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let col = String::from_utf8_lossy(&good[start..]).chars().count() + 1;
        format!(
            "{}: not UTF-8 (byte 0x{:02x})",
            at(line, col),
            bytes[e.valid_up_to()]
        )
        .into()
    })
}

/// Parses a whole file's bytes. Anything malformed is an error naming the line and the column
/// (and the field): a read never returns part of a file.
pub fn parse(cfg: &FileConfig, bytes: &[u8]) -> Result<Parsed, crate::InvalidData> {
    let mut out = Parsed::default();
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let text = utf8(bytes)?;
    match cfg.format {
        FileFormat::Csv => {
            // A last line without its line end may have been cut short (a file still being
            // written, a disk full): its last cell would read as a shorter value, or the rows
            // after the cut as deleted.
            if cfg.require_final_newline && !text.is_empty() && !text.ends_with('\n') {
                let line = text.matches('\n').count() + 1;
                let col = text[text.rfind('\n').map_or(0, |i| i + 1)..]
                    .chars()
                    .count()
                    + 1;
                return Err(format!(
                    "{}: the last line has no line end: the file may be cut short (if it is \
                     complete, end it with a line break, or set `require_final_newline = false`)",
                    at(line, col)
                )
                .into());
            }
            let mut records = csv_records(text, cfg.delimiter)?.into_iter();
            let Some(header) = records.next() else {
                return Ok(out);
            };
            for (i, (name, l, c)) in header.cells.iter().enumerate() {
                if name.is_empty() {
                    return Err(
                        format!("{}: header column {} has no name", at(*l, *c), i + 1).into(),
                    );
                }
                if header.cells[..i].iter().any(|(n, _, _)| n == name) {
                    return Err(
                        format!("{}: header column {name} appears twice", at(*l, *c)).into(),
                    );
                }
            }
            out.header = header.cells.into_iter().map(|(n, _, _)| n).collect();
            if let Some(missing) = cfg.expect_columns.iter().find(|c| !out.header.contains(c)) {
                return Err(format!(
                    "{}: the header has no column {missing}, which the job maps (header: {}; add the column, an empty one is fine)",
                    at(header.line, 1),
                    out.header.join(&cfg.delimiter.to_string())
                ).into());
            }
            for rec in records {
                let short_ok = cfg.allow_short_rows && rec.cells.len() < out.header.len();
                if rec.cells.len() != out.header.len() && !short_ok {
                    let (_, l, c) = rec.cells.last().expect("a record has a cell");
                    return Err(format!(
                        "{}: {} cells where the header has {} columns{}",
                        at(*l, *c),
                        rec.cells.len(),
                        out.header.len(),
                        if rec.cells.len() < out.header.len() {
                            " (a cut or merged line? `allow_short_rows = true` reads short rows)"
                        } else {
                            " (an unquoted delimiter?)"
                        }
                    )
                    .into());
                }
                let mut f = Fields::new();
                for (col, (cell, l, c)) in out.header.iter().zip(rec.cells) {
                    if cell.is_empty() {
                        continue;
                    }
                    let t = cfg.types.get(col).copied().unwrap_or(FileType::Text);
                    let v = from_text(t, &cell)
                        .map_err(|e| format!("{} (field {col}): {e}", at(l, c)))?;
                    f.set(col.as_str(), v);
                }
                out.rows.push((rec.line, f));
            }
        }
        FileFormat::Jsonl => {
            for (n, line) in text.split('\n').enumerate() {
                let line = line.strip_suffix('\r').unwrap_or(line);
                if line.trim().is_empty() {
                    continue;
                }
                let j: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                    // serde_json counts bytes; the column is said in characters.
                    let byte = e.column().saturating_sub(1).min(line.len());
                    let col = line.char_indices().take_while(|(i, _)| *i < byte).count();
                    let msg = e.to_string();
                    let msg = msg.rsplit_once(" at line ").map_or(&*msg, |(m, _)| m);
                    format!("{}: {msg}", at(n + 1, col + 1))
                })?;
                let obj = j
                    .as_object()
                    .ok_or_else(|| format!("{}: not a JSON object", at(n + 1, 1)))?;
                let mut f = Fields::new();
                for (col, v) in obj {
                    if col == "_op" {
                        continue;
                    }
                    if let Some(v) = from_json(cfg.types.get(col).copied(), v)
                        .map_err(|e| format!("line {} (field {col}): {e}", n + 1))?
                    {
                        f.set(col.as_str(), v);
                    }
                }
                out.rows.push((n + 1, f));
            }
        }
    }
    Ok(out)
}
