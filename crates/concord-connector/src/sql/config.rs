//! Configuration of one SQL table as a system.
//!
//! [`SqlSystem`] and [`SqlSide`] are what a job's configuration file says (`[systems.NAME]` with
//! `type = "postgres" | "mysql" | "sqlite"`, and each job's side on it), parsed with unknown keys
//! refused and options of another capture mode refused; [`SqlTableConfig`] is what the connector
//! runs with, built by [`SqlTableConfig::from_parts`] (or set field by field by a program).

use serde::Deserialize;

/// `[systems.NAME]` of a SQL kind: the database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSystem {
    pub url_env: String,
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub naive_utc_offset_minutes: i32,
}

/// A job's side on a SQL system: the table, its key and how changes are found.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSide {
    pub table: String,
    pub key: Vec<String>,
    #[serde(default)]
    pub mode: Option<CaptureMode>,
    #[serde(default)]
    pub updated_column: Option<String>,
    #[serde(default)]
    pub overlap_secs: Option<u64>,
    #[serde(default)]
    pub page_size: Option<usize>,
    #[serde(default)]
    pub changelog_table: Option<String>,
    #[serde(default)]
    pub settle_secs: Option<u64>,
}

impl SqlSide {
    /// What serde cannot check: each option belongs to the side's capture mode. The key named
    /// and the message.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let mode = self.mode.unwrap_or(CaptureMode::Scan);
        let name = match mode {
            CaptureMode::Scan => "scan",
            CaptureMode::Column => "column",
            CaptureMode::Trigger => "trigger",
        };
        if self.key.is_empty() {
            return Err(("key", "the key column(s) are required".into()));
        }
        if mode == CaptureMode::Column && self.updated_column.is_none() {
            return Err((
                "updated_column",
                "`mode = \"column\"` needs the updated-at (or version) column".into(),
            ));
        }
        let only = |key: &'static str, set: bool, wanted: CaptureMode, what: &str| {
            if set && mode != wanted {
                Err((
                    key,
                    format!("`{key}` applies in {what} mode only, and this side is in {name} mode"),
                ))
            } else {
                Ok(())
            }
        };
        only(
            "updated_column",
            self.updated_column.is_some(),
            CaptureMode::Column,
            "`column`",
        )?;
        only(
            "overlap_secs",
            self.overlap_secs.is_some(),
            CaptureMode::Column,
            "`column`",
        )?;
        only(
            "changelog_table",
            self.changelog_table.is_some(),
            CaptureMode::Trigger,
            "`trigger`",
        )?;
        only(
            "settle_secs",
            self.settle_secs.is_some(),
            CaptureMode::Trigger,
            "`trigger`",
        )?;
        if self.page_size == Some(0) {
            return Err(("page_size", "must be at least 1".into()));
        }
        Ok(())
    }
}

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

/// How the connector of one table runs.
#[derive(Debug, Clone)]
pub struct SqlTableConfig {
    /// Name of the environment variable holding the connection URL
    /// (`postgres://…`, `mysql://…`, `sqlite:…`). The URL itself never appears in config or logs.
    pub url_env: String,
    /// Schema (PostgreSQL) or database (MySQL); default: the connection's current one.
    pub schema: Option<String>,
    pub table: String,
    /// Primary-key columns, in order (single or composite).
    pub key: Vec<String>,
    /// Columns to sync; default: every column of the table.
    pub columns: Option<Vec<String>>,
    pub mode: CaptureMode,
    /// For `mode = "column"`: the updated-at / version column.
    pub updated_column: Option<String>,
    /// For `mode = "column"`: how far back each read starts before the newest value seen, to
    /// catch rows that commit late with an older timestamp (seconds; default 300).
    pub overlap_secs: u64,
    /// Rows per read page and per write statement (default 1000).
    pub batch_size: usize,
    /// UTC offset, in minutes, of `timestamp without time zone` / `DATETIME` values (default 0).
    pub naive_utc_offset_minutes: i32,
    /// For `mode = "trigger"`: the change-log table `setup` creates (default
    /// `concord_changelog`).
    pub changelog_table: String,
    /// For `mode = "trigger"` on MySQL/MariaDB (no transaction snapshots): log entries younger
    /// than this are read but the cursor does not pass them yet, so an entry of a transaction
    /// still open when later ones commit is not skipped (seconds; default 300). Longer
    /// transactions on a logged table are a documented limitation.
    pub settle_secs: u64,
}

fn default_changelog() -> String {
    "concord_changelog".into()
}
fn default_settle() -> u64 {
    300
}

fn default_overlap() -> u64 {
    300
}
fn default_batch() -> usize {
    1000
}

impl SqlTableConfig {
    /// The connector of a job's side: `columns` are the mapping's native fields (the key
    /// columns are added).
    pub fn from_parts(system: &SqlSystem, side: &SqlSide, columns: Vec<String>) -> Self {
        // Destructured whole: an option added to the file schema and not used here does not
        // compile (unused variable).
        let SqlSystem {
            url_env,
            schema,
            naive_utc_offset_minutes,
        } = system.clone();
        let SqlSide {
            table,
            key,
            mode,
            updated_column,
            overlap_secs,
            page_size,
            changelog_table,
            settle_secs,
        } = side.clone();
        let mut columns = columns;
        for k in &key {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
        SqlTableConfig {
            url_env,
            schema,
            table,
            key,
            columns: Some(columns),
            mode: mode.unwrap_or(CaptureMode::Scan),
            updated_column,
            overlap_secs: overlap_secs.unwrap_or_else(default_overlap),
            batch_size: page_size.unwrap_or_else(default_batch),
            naive_utc_offset_minutes,
            changelog_table: changelog_table.unwrap_or_else(default_changelog),
            settle_secs: settle_secs.unwrap_or_else(default_settle),
        }
    }

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
