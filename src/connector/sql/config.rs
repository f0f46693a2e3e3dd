//! Configuration of one SQL table as a system.

use serde::Deserialize;

/// How changes are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// Read the whole table each pass; the engine diffs against stored hashes and finds hard
    /// deletes. Works on any table.
    Scan,
    /// An updated-at (or version) column read with a compound (column, key) cursor and an overlap
    /// window. Does not see hard deletes.
    Column,
}

/// One table of a SQL database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlTableConfig {
    /// Name of the environment variable holding the connection URL
    /// (`postgres://…`, `mysql://…`, `sqlite:…`). The URL itself never appears in config or logs.
    pub url_env: String,
    /// Schema (PostgreSQL) or database (MySQL); default: the connection's current one.
    #[serde(default)]
    pub schema: Option<String>,
    pub table: String,
    /// Primary-key columns, in order (single or composite).
    pub key: Vec<String>,
    /// Columns to sync; default: every column of the table.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default = "default_mode")]
    pub mode: CaptureMode,
    /// For `mode = "column"`: the updated-at / version column.
    #[serde(default)]
    pub updated_column: Option<String>,
    /// For `mode = "column"`: how far back each read starts before the newest value seen, to
    /// catch rows that commit late with an older timestamp (seconds; default 300).
    #[serde(default = "default_overlap")]
    pub overlap_secs: u64,
    /// Rows per read page and per write statement (default 1000).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// UTC offset, in minutes, of `timestamp without time zone` / `DATETIME` values (default 0).
    #[serde(default)]
    pub naive_utc_offset_minutes: i32,
}

fn default_mode() -> CaptureMode {
    CaptureMode::Scan
}
fn default_overlap() -> u64 {
    300
}
fn default_batch() -> usize {
    1000
}

impl SqlTableConfig {
    /// A scan-mode table with defaults.
    pub fn new(url_env: &str, table: &str, key: &[&str]) -> Self {
        SqlTableConfig {
            url_env: url_env.into(),
            schema: None,
            table: table.into(),
            key: key.iter().map(|k| k.to_string()).collect(),
            columns: None,
            mode: CaptureMode::Scan,
            updated_column: None,
            overlap_secs: default_overlap(),
            batch_size: default_batch(),
            naive_utc_offset_minutes: 0,
        }
    }
}
