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
    /// Triggers installed by `setup` write every insert, update and delete to a change-log
    /// table, read by a strictly increasing sequence cursor. Sees hard deletes; concord's own
    /// writes are not logged.
    Trigger,
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
    /// For `mode = "trigger"`: the change-log table `setup` creates (default
    /// `concord_changelog`).
    #[serde(default = "default_changelog")]
    pub changelog_table: String,
    /// For `mode = "trigger"` on MySQL/MariaDB (no transaction snapshots): log entries younger
    /// than this are read but the cursor does not pass them yet, so an entry of a transaction
    /// still open when later ones commit is not skipped (seconds; default 300). Longer
    /// transactions on a logged table are a documented limitation.
    #[serde(default = "default_settle")]
    pub settle_secs: u64,
}

fn default_changelog() -> String {
    "concord_changelog".into()
}
fn default_settle() -> u64 {
    300
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
            changelog_table: default_changelog(),
            settle_secs: default_settle(),
        }
    }
}
