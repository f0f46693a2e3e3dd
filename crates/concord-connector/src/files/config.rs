//! Configuration of one CSV or JSONL file as a system.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Csv,
    Jsonl,
}

/// How writes reach the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// The whole file is rewritten to a temporary file, flushed, and renamed over the old one:
    /// readers see the old or the new file, never a mix.
    Rewrite,
    /// Each batch is appended to `<file>.changes.jsonl` (`{"_op": "upsert"|"delete", …}` lines);
    /// the file itself is never touched. Reading folds the base file and the changes.
    Append,
}

/// A column's declared type. CSV holds only text and JSON only text, numbers, booleans and
/// nesting, so every other type is declared, or values would not read back as they were
/// written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    Text,
    Int,
    Decimal,
    Bool,
    Date,
    Datetime,
    Json,
    Bytes,
}

/// One file in a directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The directory (the system).
    pub dir: std::path::PathBuf,
    /// The file in it (the object), e.g. `customers.csv`.
    pub file: String,
    pub format: FileFormat,
    /// Key columns, in order.
    pub key: Vec<String>,
    /// Declared column types; undeclared columns are text.
    #[serde(default)]
    pub types: BTreeMap<String, FileType>,
    #[serde(default = "default_write_mode")]
    pub write_mode: WriteMode,
    /// CSV: the field delimiter (default `,`).
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// CSV: a last line without a line end is refused (the file may be cut short). Turn off
    /// for tools that end files without one (SFDX data exports do).
    #[serde(default = "default_true")]
    pub require_final_newline: bool,
    /// CSV: rows with fewer cells than the header are read with the missing cells empty
    /// instead of refused (report exports end rows early). Off by default: a short row is
    /// usually a cut or merged line.
    #[serde(default)]
    pub allow_short_rows: bool,
    /// CSV: columns the job maps. A file whose header lacks one is refused (a corrupted or
    /// edited header would otherwise clear that field in every record); a rewrite always
    /// writes them to the header.
    #[serde(default)]
    pub expect_columns: Vec<String>,
}

fn default_true() -> bool {
    true
}

fn default_write_mode() -> WriteMode {
    WriteMode::Rewrite
}
fn default_delimiter() -> char {
    ','
}

impl FileConfig {
    pub fn new(
        dir: impl Into<std::path::PathBuf>,
        file: &str,
        format: FileFormat,
        key: &[&str],
    ) -> Self {
        FileConfig {
            dir: dir.into(),
            file: file.into(),
            format,
            key: key.iter().map(|k| k.to_string()).collect(),
            types: BTreeMap::new(),
            write_mode: WriteMode::Rewrite,
            delimiter: ',',
            require_final_newline: true,
            allow_short_rows: false,
            expect_columns: Vec::new(),
        }
    }

    /// The columns a CSV header must have (see `expect_columns`).
    pub fn expecting(mut self, columns: &[&str]) -> Self {
        self.expect_columns = columns.iter().map(|c| c.to_string()).collect();
        self
    }

    /// Accepts CSV rows with fewer cells than the header (see `allow_short_rows`).
    pub fn with_short_rows(mut self) -> Self {
        self.allow_short_rows = true;
        self
    }

    /// Accepts a CSV whose last line has no line end (see `require_final_newline`).
    pub fn without_final_newline(mut self) -> Self {
        self.require_final_newline = false;
        self
    }
    pub fn with_type(mut self, column: &str, t: FileType) -> Self {
        self.types.insert(column.into(), t);
        self
    }
}
