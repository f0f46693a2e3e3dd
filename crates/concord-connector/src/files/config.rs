//! Configuration of one CSV or JSONL file as a system.
//!
//! [`CsvSystem`], [`JsonlSystem`] and [`FileSide`] are what a job's configuration file says
//! (`[systems.NAME]` with `type = "csv" | "jsonl"`, and each job's side on it), parsed with
//! unknown keys refused (a CSV option on a JSONL system too); [`FileConfig`] is what the
//! connector runs with, built by [`FileConfig::from_parts`] (or set field by field by a
//! program).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `[systems.NAME]`, `type = "csv"`: a folder of CSV files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSystem {
    /// Relative to the configuration file's folder; created when missing.
    pub dir: PathBuf,
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    #[serde(default = "default_true")]
    pub require_final_newline: bool,
    #[serde(default)]
    pub allow_short_rows: bool,
}

/// `[systems.NAME]`, `type = "jsonl"`: a folder of JSON Lines files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlSystem {
    /// Relative to the configuration file's folder; created when missing.
    pub dir: PathBuf,
}

/// A job's side on a files system: the file, its key and column types.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSide {
    pub file: String,
    pub key: Vec<String>,
    #[serde(default)]
    pub types: BTreeMap<String, FileType>,
    #[serde(default = "default_write_mode")]
    pub write_mode: WriteMode,
}

impl FileSide {
    /// What serde cannot check: the key named and the message.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.key.is_empty() {
            return Err(("key", "the key column(s) are required".into()));
        }
        if self.file.is_empty() {
            return Err(("file", "the file in the system's folder".into()));
        }
        Ok(())
    }
}

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

/// How the connector of one file runs.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// The directory (the system).
    pub dir: std::path::PathBuf,
    /// The file in it (the object), e.g. `customers.csv`.
    pub file: String,
    pub format: FileFormat,
    /// Key columns, in order.
    pub key: Vec<String>,
    /// Declared column types; undeclared columns are text.
    pub types: BTreeMap<String, FileType>,
    pub write_mode: WriteMode,
    /// CSV: the field delimiter (default `,`).
    pub delimiter: char,
    /// CSV: a last line without a line end is refused (the file may be cut short). Turn off
    /// for tools that end files without one (SFDX data exports do).
    pub require_final_newline: bool,
    /// CSV: rows with fewer cells than the header are read with the missing cells empty
    /// instead of refused (report exports end rows early). Off by default: a short row is
    /// usually a cut or merged line.
    pub allow_short_rows: bool,
    /// CSV: columns the job maps. A file whose header lacks one is refused (a corrupted or
    /// edited header would otherwise clear that field in every record); a rewrite always
    /// writes them to the header.
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

/// A files system of either format.
#[derive(Debug, Clone, Copy)]
pub enum FilesSystem<'a> {
    Csv(&'a CsvSystem),
    Jsonl(&'a JsonlSystem),
}

impl FileConfig {
    /// The connector of a job's side: `columns` are the mapping's native fields (a CSV header
    /// must hold them); the folder is relative to `base_dir` (the configuration file's).
    pub fn from_parts(
        system: FilesSystem<'_>,
        side: &FileSide,
        columns: Vec<String>,
        base_dir: &Path,
    ) -> Self {
        let FileSide {
            file,
            key,
            types,
            write_mode,
        } = side.clone();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            }
        };
        let (dir, format) = match system {
            FilesSystem::Csv(c) => (resolve(&c.dir), FileFormat::Csv),
            FilesSystem::Jsonl(j) => (resolve(&j.dir), FileFormat::Jsonl),
        };
        let mut c = FileConfig {
            dir,
            file,
            format,
            key,
            types,
            write_mode,
            delimiter: default_delimiter(),
            require_final_newline: true,
            allow_short_rows: false,
            expect_columns: Vec::new(),
        };
        if let FilesSystem::Csv(s) = system {
            // Destructured whole: an option added to the file schema and not used here does
            // not compile (unused variable).
            let CsvSystem {
                dir: _,
                delimiter,
                require_final_newline,
                allow_short_rows,
            } = s.clone();
            c.delimiter = delimiter;
            c.require_final_newline = require_final_newline;
            c.allow_short_rows = allow_short_rows;
            c.expect_columns = columns;
        }
        c
    }

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
