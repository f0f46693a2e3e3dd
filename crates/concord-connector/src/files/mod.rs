//! CSV and JSONL files as systems: a directory is the system, a file in it the object. Reads are
//! scans (so deletes are found); writes rewrite the file atomically (temporary file, flush,
//! rename, directory flush) or append change lines. See `docs/connectors/files.md`.

pub mod config;
pub mod read;
#[cfg(test)]
mod tests;
pub mod write;

pub use config::{
    CsvSystem, FileConfig, FileFormat, FileSide, FileType, FilesSystem, JsonlSystem, WriteMode,
};

use crate::{Binding, Change, Connector, ConnectorError, ReadPage, WriteOp, WriteResult};
use async_trait::async_trait;
use concord_model::model::{Fields, Key, SystemId};
use std::path::PathBuf;

/// One file.
#[derive(Debug)]
pub struct FileConnector {
    system: SystemId,
    cfg: FileConfig,
    lock: tokio::sync::Mutex<()>,
}

/// A file's current content: the CSV header (or field order) and keyed rows in file order.
#[derive(Debug, Default)]
pub(crate) struct Table {
    pub header: Vec<String>,
    pub rows: Vec<(Key, Fields)>,
}

impl FileConnector {
    /// The connector of a job's side on a `[systems.NAME]` of type `csv` or `jsonl`; the folder
    /// is created when missing.
    pub fn from_config(
        system: FilesSystem<'_>,
        side: &FileSide,
        binding: Binding<'_>,
    ) -> Result<Self, ConnectorError> {
        let cfg = FileConfig::from_parts(system, side, binding.fields, binding.base_dir);
        std::fs::create_dir_all(&cfg.dir).map_err(|e| ConnectorError {
            system: binding.system.to_string(),
            object: cfg.file.clone(),
            message: format!("{}: {e}", cfg.dir.display()),
            retryable: false,
        })?;
        Self::new(binding.system, cfg)
    }

    /// Checks the directory exists; the file itself may not exist yet (it is then empty).
    pub fn new(system: SystemId, cfg: FileConfig) -> Result<Self, ConnectorError> {
        let c = FileConnector {
            system,
            cfg,
            lock: tokio::sync::Mutex::new(()),
        };
        if c.cfg.key.is_empty() {
            return Err(c.err("no key columns configured"));
        }
        if !c.cfg.dir.is_dir() {
            return Err(c.err(format!("directory {} does not exist", c.cfg.dir.display())));
        }
        Ok(c)
    }

    pub fn path(&self) -> PathBuf {
        self.cfg.dir.join(&self.cfg.file)
    }

    pub fn changes_path(&self) -> PathBuf {
        self.cfg
            .dir
            .join(format!("{}.changes.jsonl", self.cfg.file))
    }

    pub fn config(&self) -> &FileConfig {
        &self.cfg
    }

    pub(crate) fn err(&self, message: impl Into<String>) -> ConnectorError {
        ConnectorError {
            system: self.system.to_string(),
            object: self.cfg.file.clone(),
            message: message.into(),
            retryable: false,
        }
    }

    pub(crate) fn key_names(&self) -> Vec<&str> {
        self.cfg.key.iter().map(String::as_str).collect()
    }

    /// The native key of a row: the key columns' text, an empty cell counting as "" (files
    /// exported from other tools often leave cells empty). At least one part must be non-empty.
    pub(crate) fn key_of(&self, f: &Fields) -> Result<Key, crate::InvalidData> {
        let parts: Vec<String> = self
            .cfg
            .key
            .iter()
            .map(|c| f.get(c).map(crate::key_text).unwrap_or_default())
            .collect();
        if parts.iter().all(String::is_empty) {
            return Err(format!("key columns {} are all empty", self.cfg.key.join(", ")).into());
        }
        Ok(if parts.len() == 1 {
            Key::new(parts.into_iter().next().expect("one part"))
        } else {
            Key::composite(&parts)
        })
    }

    /// The file's rows, with append-mode changes folded in, as a read takes them: a CSV
    /// header must hold every mapped column (`expect_columns`).
    pub(crate) fn load(&self) -> Result<Table, ConnectorError> {
        self.load_with(true)
    }

    /// The file's rows as a write takes them: a mapped column the header lacks is not an
    /// error there (the write adds it).
    pub(crate) fn load_for_write(&self) -> Result<Table, ConnectorError> {
        self.load_with(false)
    }

    fn load_with(&self, expect_columns: bool) -> Result<Table, ConnectorError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(self.err(format!("cannot read {}: {e}", path.display()))),
        };
        let parsed = if bytes.is_empty() {
            read::Parsed::default()
        } else {
            let lenient;
            let cfg = if expect_columns || self.cfg.expect_columns.is_empty() {
                &self.cfg
            } else {
                lenient = FileConfig {
                    expect_columns: Vec::new(),
                    ..self.cfg.clone()
                };
                &lenient
            };
            read::parse(cfg, &bytes).map_err(|e| self.err(format!("{}: {e}", path.display())))?
        };
        let mut table = Table {
            header: parsed.header,
            rows: Vec::with_capacity(parsed.rows.len()),
        };
        let mut index = std::collections::HashMap::new();
        let mut lines = Vec::with_capacity(parsed.rows.len());
        for (line, f) in parsed.rows {
            let k = self
                .key_of(&f)
                .map_err(|e| self.err(format!("{}: line {line}: {e}", path.display())))?;
            if let Some(first) = index.insert(k.clone(), table.rows.len()) {
                return Err(self.err(format!(
                    "{}: line {line}: key {k} appears twice (first on line {})",
                    path.display(),
                    lines[first]
                )));
            }
            lines.push(line);
            table.rows.push((k, f));
        }
        if self.cfg.write_mode == WriteMode::Append {
            write::fold_changes(self, &mut table, &mut index)?;
        }
        Ok(table)
    }
}

#[async_trait]
impl Connector for FileConnector {
    fn system(&self) -> &SystemId {
        &self.system
    }

    async fn read(&self, _cursor: Option<&[u8]>) -> Result<ReadPage, ConnectorError> {
        let _guard = self.lock.lock().await;
        let table = self.load()?;
        Ok(ReadPage {
            changes: table
                .rows
                .into_iter()
                .map(|(key, f)| Change {
                    key,
                    entity_hint: None,
                    fields: Some(f),
                    modstamp: None,
                })
                .collect(),
            cursor: None,
            more: false,
            complete: true,
        })
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteResult>, ConnectorError> {
        let _guard = self.lock.lock().await;
        match self.cfg.write_mode {
            WriteMode::Rewrite => write::rewrite(self, ops),
            WriteMode::Append => write::append(self, ops),
        }
    }

    async fn fetch(&self, keys: &[Key]) -> Result<Vec<Change>, ConnectorError> {
        let _guard = self.lock.lock().await;
        let table = self.load()?;
        let mut rows: std::collections::BTreeMap<Key, Fields> = table.rows.into_iter().collect();
        Ok(keys
            .iter()
            .map(|k| Change {
                key: k.clone(),
                entity_hint: None,
                fields: rows.remove(k),
                modstamp: None,
            })
            .collect())
    }
}
