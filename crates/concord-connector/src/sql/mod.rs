//! SQL tables as systems: PostgreSQL, MariaDB/MySQL and SQLite through one code path on sqlx.
//!
//! Modes (per table): `scan` reads the whole table in key order (keyset paging) and lets the
//! engine find changes and hard deletes against its stored hashes; `column` reads rows whose
//! updated-at column is at or after the cursor, with an overlap window and a compound
//! (updated, key) position for ties; `trigger` reads a change log that triggers installed by
//! `setup` fill, and so also sees hard deletes. See `docs/connectors/sql.md`.

pub mod client;
pub mod config;
pub mod decode;
pub mod digest;
pub mod dump;
mod read;
pub mod setup;
#[cfg(test)]
mod tests;
pub mod write;

pub use client::{ColType, Column, Dialect, Pool};
pub use config::{CaptureMode, SqlSide, SqlSystem, SqlTableConfig};

use crate::{Binding, Change, Connector, ConnectorError, ReadPage, WriteOp, WriteResult};
use async_trait::async_trait;
use chrono::FixedOffset;
use concord_model::model::{SystemId, Timestamp, Value};
use decode::{decode, param_for, row_key, select_expr, tuple_gt, value_hex, value_unhex, Cursor};

/// One mapped table.
pub struct SqlConnector {
    system: SystemId,
    cfg: SqlTableConfig,
    pool: Pool,
    columns: Vec<Column>,
    key: Vec<Column>,
    updated: Option<Column>,
    offset: FixedOffset,
    /// The database can hash rows for hash-tree reconcile (PostgreSQL ≥ 14; MariaDB ≥ 10.6 or
    /// MySQL ≥ 8, which have JSON_TABLE).
    digest_ok: bool,
}

impl std::fmt::Debug for SqlConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlConnector")
            .field("system", &self.system)
            .field("dialect", &self.pool.dialect())
            .field("table", &self.cfg.table)
            .finish()
    }
}

impl SqlConnector {
    /// The connector of a job's side on a `[systems.NAME]` of a SQL kind.
    pub async fn from_config(
        system: &SqlSystem,
        side: &SqlSide,
        binding: Binding<'_>,
    ) -> Result<Self, ConnectorError> {
        let cfg = SqlTableConfig::from_parts(system, side, binding.fields);
        Self::connect(binding.system, cfg).await
    }

    /// Connects with the URL from the environment variable `cfg.url_env` and checks the table.
    pub async fn connect(system: SystemId, cfg: SqlTableConfig) -> Result<Self, ConnectorError> {
        let object = cfg.table.clone();
        let err = |message: String| ConnectorError {
            system: system.to_string(),
            object: object.clone(),
            message,
            retryable: false,
        };
        let url = std::env::var(&cfg.url_env).map_err(|_| {
            err(format!(
                "environment variable {} is not set (it holds the connection URL)",
                cfg.url_env
            ))
        })?;
        let pool = Pool::connect(&url, system.as_str(), &object).await?;
        Self::with_pool(system, cfg, pool).await
    }

    /// Uses an existing pool (tests, several tables of one database).
    pub async fn with_pool(
        system: SystemId,
        cfg: SqlTableConfig,
        pool: Pool,
    ) -> Result<Self, ConnectorError> {
        let object = cfg.table.clone();
        let err = |message: String| ConnectorError {
            system: system.to_string(),
            object: object.clone(),
            message,
            retryable: false,
        };
        if cfg.key.is_empty() {
            return Err(err("no key columns configured".into()));
        }
        let all = pool
            .columns(cfg.schema.as_deref(), &cfg.table)
            .await
            .map_err(|e| client::conn_error(system.as_str(), &object, &e))?;
        if all.is_empty() {
            return Err(err(format!(
                "table {} not found{}",
                cfg.table,
                cfg.schema
                    .as_deref()
                    .map(|s| format!(" in schema {s}"))
                    .unwrap_or_default()
            )));
        }
        let find = |name: &str| all.iter().find(|c| c.name == name).cloned();
        let columns: Vec<Column> = match &cfg.columns {
            None => all.clone(),
            Some(names) => {
                let mut cols = Vec::new();
                for n in names {
                    cols.push(find(n).ok_or_else(|| err(format!("column {n} not found")))?);
                }
                for k in &cfg.key {
                    if !names.contains(k) {
                        cols.push(find(k).ok_or_else(|| err(format!("key column {k} not found")))?);
                    }
                }
                cols
            }
        };
        let mut key = Vec::new();
        for k in &cfg.key {
            key.push(find(k).ok_or_else(|| err(format!("key column {k} not found")))?);
        }
        let updated = match (cfg.mode, &cfg.updated_column) {
            (CaptureMode::Column, None) => {
                return Err(err("mode = \"column\" needs updated_column".into()))
            }
            (CaptureMode::Column, Some(u)) => {
                Some(find(u).ok_or_else(|| err(format!("updated column {u} not found")))?)
            }
            _ => None,
        };
        let offset = FixedOffset::east_opt(cfg.naive_utc_offset_minutes * 60)
            .ok_or_else(|| err("naive_utc_offset_minutes out of range".into()))?;
        let digest_ok = match &pool {
            Pool::Pg(_) => {
                let rows = pool
                    .fetch("SELECT current_setting('server_version_num')::int8", &[])
                    .await
                    .map_err(|e| client::conn_error(system.as_str(), &object, &e))?;
                decode::first_i64(&rows).map_err(|e| err(e.into()))? >= 140_000
            }
            Pool::My(_) => pool
                .fetch(
                    "SELECT COUNT(*) FROM JSON_TABLE('[1]', '$[*]' COLUMNS(a INT PATH '$')) j",
                    &[],
                )
                .await
                .is_ok(),
            Pool::Lite(_) => false,
        };
        Ok(SqlConnector {
            system,
            cfg,
            pool,
            columns,
            key,
            updated,
            offset,
            digest_ok,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.pool.dialect()
    }
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }
    pub fn key_cols(&self) -> &[Column] {
        &self.key
    }
    pub fn offset(&self) -> FixedOffset {
        self.offset
    }
    pub fn config(&self) -> &SqlTableConfig {
        &self.cfg
    }

    /// The quoted, schema-qualified table name.
    pub fn table_ref(&self) -> String {
        let d = self.dialect();
        match (&self.cfg.schema, d) {
            (Some(s), Dialect::Postgres | Dialect::MySql) => {
                format!("{}.{}", d.quote(s), d.quote(&self.cfg.table))
            }
            _ => d.quote(&self.cfg.table),
        }
    }

    pub(crate) fn error(&self, e: &sqlx::Error) -> ConnectorError {
        client::conn_error(self.system.as_str(), &self.cfg.table, e)
    }

    pub(crate) fn bad(&self, message: impl Into<String>) -> ConnectorError {
        ConnectorError {
            system: self.system.to_string(),
            object: self.cfg.table.clone(),
            message: message.into(),
            retryable: false,
        }
    }
}

#[async_trait]
impl Connector for SqlConnector {
    fn system(&self) -> &SystemId {
        &self.system
    }

    async fn read(&self, cursor: Option<&[u8]>) -> Result<ReadPage, ConnectorError> {
        let cursor: Cursor = match cursor {
            None => Cursor::default(),
            Some(b) => serde_json::from_slice(b).map_err(|_| self.bad("corrupt read cursor"))?,
        };
        match self.cfg.mode {
            CaptureMode::Scan => self.read_scan(cursor).await,
            CaptureMode::Column => self.read_column(cursor).await,
            CaptureMode::Trigger => self.read_trigger(cursor).await,
        }
    }

    async fn scan(&self, cursor: Option<&[u8]>) -> Result<ReadPage, ConnectorError> {
        let cursor: Cursor = match cursor {
            None => Cursor::default(),
            Some(b) => serde_json::from_slice(b).map_err(|_| self.bad("corrupt scan cursor"))?,
        };
        self.read_scan(cursor).await
    }

    fn digests(&self) -> Option<&dyn crate::DigestSource> {
        self.can_digest()
            .then_some(self as &dyn crate::DigestSource)
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteResult>, ConnectorError> {
        write::apply(self, ops).await
    }

    /// PostgreSQL in trigger mode: the triggers' `NOTIFY concord_changes` for this table.
    async fn subscribe(
        &self,
        _from: Option<&[u8]>,
    ) -> Result<Option<crate::ChangeFeed>, ConnectorError> {
        if self.cfg.mode != CaptureMode::Trigger {
            return Ok(None);
        }
        self.change_feed().await
    }

    /// With an updated-at column (column mode), each record's modification time comes with it,
    /// as a read gives it (a re-read record competes under `newest` with its real time).
    async fn fetch(
        &self,
        keys: &[concord_model::model::Key],
    ) -> Result<Vec<Change>, ConnectorError> {
        let parts: Vec<Vec<String>> = keys.iter().map(|k| k.parts()).collect();
        let stamp = self.updated.as_ref().map(|upd| {
            let name = format!("{}\u{0}updated", upd.name);
            (
                select_expr(self.dialect(), upd),
                Column {
                    name,
                    ..upd.clone()
                },
            )
        });
        let mut found = self.fetch_keys_with(&parts, stamp.as_slice()).await?;
        if let Some((_, col)) = &stamp {
            for ch in &mut found {
                if let Some(f) = ch.fields.as_mut() {
                    if let Some(Value::DateTime(t)) = f.remove(&col.name) {
                        ch.modstamp = Some(t);
                    }
                }
            }
        }
        // fetch_keys answers per chunk in order; keep the caller's order by key.
        let mut by_key: std::collections::BTreeMap<concord_model::model::Key, Change> =
            found.into_iter().map(|c| (c.key.clone(), c)).collect();
        Ok(keys
            .iter()
            .map(|k| {
                by_key.remove(k).unwrap_or(Change {
                    key: k.clone(),
                    entity_hint: None,
                    fields: None,
                    modstamp: None,
                })
            })
            .collect())
    }
}
