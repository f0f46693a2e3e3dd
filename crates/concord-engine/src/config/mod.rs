//! The job configuration file (TOML): systems, jobs, field mappings, match keys, policies.
//! Every table refuses unknown keys, and errors name the key's path and line
//! (`jobs.accounts.sides.crm.fields.phone.transfroms`). A system's keys and those of a job's
//! side on it are its connector's own types (`concord_connector::*::config`), chosen by the
//! system's `type` (`by_kind`). Secrets and connection URLs are never in
//! the file: only the names of the environment variables that hold them. `docs/config.md`
//! documents every key; `docs/examples/` holds one working file per pattern.

mod by_kind;
mod check;

use concord_connector::files::{CsvSystem, FileSide, JsonlSystem};
use concord_connector::nats::{NatsSide, NatsSystem};
use concord_connector::salesforce::{SalesforceSide, SalesforceSystem};
use concord_connector::sql::{SqlSide, SqlSystem};
use concord_connector::{Binding, Connector, ConnectorError};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A configuration error, naming the file and where in it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read (the OS error is part of the message, said once).
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    /// TOML syntax, an unknown key, a value of the wrong type: with the line and column the
    /// parser stopped at, and the key's path when there is one.
    #[error("{path}:{line}:{column}: {}{message}", at_key(at))]
    Parse {
        path: String,
        at: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {at}: {message}")]
    Invalid {
        path: String,
        at: String,
        message: String,
    },
}

/// Why a conflict policy is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("`{0}` is not one of this job's systems")]
    NotASystem(String),
    #[error("unknown policy `{0}` (newest, manual, prefer:<system>, priority:<a>,<b>,…)")]
    Unknown(String),
    #[error(transparent)]
    Name(#[from] concord_model::model::NameError),
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(deserialize_with = "by_kind::systems")]
    pub systems: BTreeMap<String, SystemConfig>,
    pub jobs: BTreeMap<String, JobConfig>,
    /// Where the file was read from (relative paths in it are relative to its folder).
    #[serde(skip)]
    pub base_dir: PathBuf,
    #[serde(skip)]
    pub file: String,
}

/// The state store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The sled folder (default `.concord`, next to the config file).
    #[serde(default = "default_store_dir")]
    pub dir: PathBuf,
    /// This engine instance's name (default `main`): it names the actors in vector clocks.
    #[serde(default = "default_instance")]
    pub instance: String,
    /// MiB of the store's page cache (default 256): what the store keeps in memory however
    /// large it grows.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            dir: default_store_dir(),
            instance: default_instance(),
            cache_mb: default_cache_mb(),
        }
    }
}

fn default_cache_mb() -> u64 {
    concord_store::sled_store::DEFAULT_CACHE_BYTES >> 20
}

fn default_store_dir() -> PathBuf {
    PathBuf::from(".concord")
}
fn default_instance() -> String {
    "main".into()
}

/// One system of record: `type` chooses the connector, whose own type holds the keys (each
/// refuses unknown ones; parsed by `by_kind`).
#[derive(Debug, Clone)]
pub enum SystemConfig {
    Salesforce(Box<SalesforceSystem>),
    Postgres(SqlSystem),
    Mysql(SqlSystem),
    Sqlite(SqlSystem),
    Csv(CsvSystem),
    Jsonl(JsonlSystem),
    Nats(NatsSystem),
}

impl SystemConfig {
    /// The connector of a job's side on this system, built from the connector's own config
    /// types (the side was parsed by this system's kind). Network and databases are reached
    /// here.
    pub async fn connect(
        &self,
        side: &SideConfig,
        binding: Binding<'_>,
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        use concord_connector::files::{FileConnector, FilesSystem};
        use concord_connector::nats::NatsConnector;
        use concord_connector::salesforce::SalesforceConnector;
        use concord_connector::sql::SqlConnector;
        Ok(match (self, &side.options) {
            (SystemConfig::Salesforce(s), SideOptions::Salesforce(o)) => {
                Arc::new(SalesforceConnector::from_config(s, o, binding).await?)
            }
            (
                SystemConfig::Postgres(s) | SystemConfig::Mysql(s) | SystemConfig::Sqlite(s),
                SideOptions::Sql(o),
            ) => Arc::new(SqlConnector::from_config(s, o, binding).await?),
            (SystemConfig::Csv(s), SideOptions::Files(o)) => {
                Arc::new(FileConnector::from_config(FilesSystem::Csv(s), o, binding)?)
            }
            (SystemConfig::Jsonl(s), SideOptions::Files(o)) => Arc::new(
                FileConnector::from_config(FilesSystem::Jsonl(s), o, binding)?,
            ),
            (SystemConfig::Nats(s), SideOptions::Nats(o)) => {
                Arc::new(NatsConnector::from_config(s, o, binding).await?)
            }
            _ => {
                return Err(ConnectorError {
                    system: binding.system.to_string(),
                    object: side.object().to_string(),
                    message: format!("not a side of a {} system", self.kind()),
                    retryable: false,
                })
            }
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SystemConfig::Salesforce(_) => "salesforce",
            SystemConfig::Postgres(_) => "postgres",
            SystemConfig::Mysql(_) => "mysql",
            SystemConfig::Sqlite(_) => "sqlite",
            SystemConfig::Csv(_) => "csv",
            SystemConfig::Jsonl(_) => "jsonl",
            SystemConfig::Nats(_) => "nats",
        }
    }
}

/// The integration pattern of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    Migrate,
    Broadcast,
    Aggregate,
    Bidirectional,
    Correlate,
}

/// One job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub pattern: Pattern,
    /// The systems, in order: migrate and broadcast take the first as the source; aggregate
    /// takes the last as the target.
    pub systems: Vec<String>,
    /// Per system: object or table, key, field mapping, filter; each parsed by its system's
    /// kind.
    #[serde(deserialize_with = "by_kind::sides")]
    pub sides: BTreeMap<String, SideConfig>,
    #[serde(default)]
    pub conflict: ConflictConfig,
    #[serde(default = "default_delete")]
    pub delete: DeleteConfig,
    #[serde(default, rename = "match")]
    pub matching: Option<MatchConfig>,
    /// Records per write call and per checkpoint (default 200).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Records a pass reads (across its systems) before it plans, checkpoints and writes them
    /// as one chunk and reads on: what a pass holds in memory (default 20 000).
    #[serde(default = "default_chunk")]
    pub chunk_size: usize,
    /// `--watch`, and `concord serve` without `schedule`: seconds between passes (default 60).
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// `concord serve`: when passes run. A cron expression (`*/5 * * * *`: five fields,
    /// minute to weekday, UTC; six with seconds first), or `manual` (only on request or push).
    /// Default: every `interval_secs`, but `manual` for migrate jobs (a migration runs on
    /// command).
    #[serde(default)]
    pub schedule: Option<String>,
    /// `concord serve`: the variable holding the secret that signs calls to
    /// `POST /hooks/{job}` (HMAC-SHA256 of the body); without it the job takes no webhook.
    #[serde(default)]
    pub webhook_secret_env: Option<String>,
    /// `concord serve`: run a pass when a system the job reads announces a change (PostgreSQL
    /// trigger mode, Salesforce Change Data Capture); `false`: the schedule alone (default true).
    #[serde(default)]
    pub push: Option<bool>,
    /// Aggregate: the field that records, per field, the source it came from.
    #[serde(default)]
    pub provenance_field: Option<String>,
    /// Treat `""` as null (default true) and trim text (default false) before comparing.
    #[serde(default)]
    pub empty_text_is_null: Option<bool>,
    #[serde(default)]
    pub trim_text: Option<bool>,
    /// The delete guard: a pass that would delete more than this share of a system's synced
    /// records stops before writing (default 0.10).
    #[serde(default)]
    pub max_delete_share: Option<f64>,
    /// … or more than this many (default 1 000).
    #[serde(default)]
    pub max_deletes: Option<u64>,
}

fn default_delete() -> DeleteConfig {
    DeleteConfig::DeleteWins
}
fn default_batch() -> usize {
    200
}
fn default_chunk() -> usize {
    crate::engine::DEFAULT_CHUNK
}
fn default_interval() -> u64 {
    60
}

/// The delete rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteConfig {
    DeleteWins,
    UpdateWins,
    Manual,
}

/// The conflict policy: a default and per-field overrides, each `newest`, `manual`,
/// `prefer:<system>` or `priority:<system>,<system>,…`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConflictConfig {
    #[serde(default = "default_policy")]
    pub default: String,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

impl Default for ConflictConfig {
    fn default() -> Self {
        ConflictConfig {
            default: default_policy(),
            fields: BTreeMap::new(),
        }
    }
}

fn default_policy() -> String {
    "newest".into()
}

/// Match keys (correlate, aggregate).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Canonical fields, each with its normaliser (`exact`, `case`, `whitespace`, `email`,
    /// `phone`); several make a composite key.
    pub fields: Vec<MatchFieldConfig>,
    /// Privacy mode: the variable holding the key (at least 32 bytes of text) for keyed blake3
    /// match hashes.
    #[serde(default)]
    pub privacy_key_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFieldConfig {
    pub field: String,
    #[serde(default = "default_norm")]
    pub normalize: concord_model::core::Normalize,
}

fn default_norm() -> concord_model::core::Normalize {
    concord_model::core::Normalize::Exact
}

/// One system's side of a job: the mapping and filter (every kind), and the options of the
/// system's kind (its connector's own side type, parsed by the kind: see `sides`).
#[derive(Debug, Clone)]
pub struct SideConfig {
    /// Canonical field → where it comes from in this system.
    pub fields: BTreeMap<String, FieldSpec>,
    /// The records of this system the job covers (every condition must hold).
    pub filter: Vec<FilterConfig>,
    pub options: SideOptions,
}

/// The options of a side, by its system's kind.
#[derive(Debug, Clone)]
pub enum SideOptions {
    Salesforce(SalesforceSide),
    Sql(SqlSide),
    Files(FileSide),
    Nats(NatsSide),
    /// A side for a name `[systems]` does not define (refused by the checks that follow).
    Unknown,
}

impl SideConfig {
    /// The object the side names: its sObject, table, file or subject.
    pub fn object(&self) -> &str {
        match &self.options {
            SideOptions::Salesforce(o) => &o.object,
            SideOptions::Sql(o) => &o.table,
            SideOptions::Files(o) => &o.file,
            SideOptions::Nats(o) => &o.subject,
            SideOptions::Unknown => "",
        }
    }

    /// The key column(s) (SQL and files; the other kinds have their own key).
    pub fn key(&self) -> &[String] {
        match &self.options {
            SideOptions::Sql(o) => &o.key,
            SideOptions::Files(o) => &o.key,
            _ => &[],
        }
    }

    /// The capture mode of a SQL side.
    pub fn sql_mode(&self) -> Option<concord_connector::sql::CaptureMode> {
        match &self.options {
            SideOptions::Sql(o) => {
                Some(o.mode.unwrap_or(concord_connector::sql::CaptureMode::Scan))
            }
            _ => None,
        }
    }

    /// Salesforce: the External ID field that keeps concord's entity id.
    pub fn entity_id_field(&self) -> Option<&str> {
        match &self.options {
            SideOptions::Salesforce(o) => o.entity_id_field.as_deref(),
            _ => None,
        }
    }
}

/// A filter condition on a native field: `{ field = "Type", equals = "Customer" }`, `in = […]`,
/// `not_in = […]`, `is_null = true` or `is_null = false`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    pub field: String,
    #[serde(default)]
    pub equals: Option<toml::Value>,
    #[serde(default, rename = "in")]
    pub in_: Option<Vec<toml::Value>>,
    #[serde(default)]
    pub not_in: Option<Vec<toml::Value>>,
    #[serde(default)]
    pub is_null: Option<bool>,
}

/// Where a canonical field comes from: a native field's name, or a table.
#[derive(Debug, Clone)]
pub enum FieldSpec {
    Name(String),
    Spec(Box<FieldSpecTable>),
}

/// The table form of a field mapping; exactly one of `field`, `concat`, `constant`,
/// `reference` (with `field`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpecTable {
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub concat: Option<Vec<String>>,
    /// The separator of `concat` (default a space).
    #[serde(default)]
    pub sep: Option<String>,
    #[serde(default)]
    pub constant: Option<toml::Value>,
    /// The job whose entities this field refers to (its side for this system holds the
    /// parents).
    #[serde(default)]
    pub reference: Option<String>,
    /// `trim`, `upper`, `lower`, in order.
    #[serde(default)]
    pub transforms: Vec<String>,
    /// Native value → canonical value.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// Native text in this chrono format ↔ a canonical date or datetime.
    #[serde(default)]
    pub date_format: Option<String>,
    /// Used on read when the native value is missing.
    #[serde(default)]
    pub default: Option<toml::Value>,
}

impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a native field name or a table such as { field = \"Phone\", transforms = [\"trim\"] }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FieldSpec, E> {
                Ok(FieldSpec::Name(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<FieldSpec, A::Error> {
                FieldSpecTable::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(|t| FieldSpec::Spec(Box::new(t)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A TOML value as a field value.
pub fn value_of(v: &toml::Value) -> concord_model::model::Value {
    use concord_model::model::Value;
    match v {
        toml::Value::String(s) => Value::text(s.as_str()),
        toml::Value::Integer(i) => Value::Int(*i),
        toml::Value::Float(f) => Value::from_f64(*f).unwrap_or(Value::Null),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => {
            let s = d.to_string();
            Value::date_str(&s)
                .or_else(|_| Value::datetime_str(&s))
                .unwrap_or(Value::text(s))
        }
        other => Value::Json(serde_json::to_value(other).unwrap_or_default()),
    }
}

/// "at `key.path`: " for a key, nothing for the document itself (a syntax error).
fn at_key(at: &str) -> String {
    if at.is_empty() || at == "." {
        String::new()
    } else {
        format!("at `{at}`: ")
    }
}

/// The 1-based line and column (in characters) of byte `pos` of `text`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let col = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, col)
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "no such file (pass --config FILE, set CONCORD_CONFIG, or write one with `concord init`)".to_string()
                }
                _ => e.to_string(),
            },
        })?;
        Config::parse(&text, path)
    }

    /// Parses and checks configuration text (`path` names it in errors and anchors relative
    /// paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        // Each job's side is parsed by its system's kind, so the kinds are read first (a
        // document that fails here fails the full parse below, with the error's place).
        let _kinds = by_kind::Kinds::of(text);
        let de = toml::Deserializer::new(text);
        let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            let (line, column) = line_col(text, inner.span().map_or(0, |s| s.start));
            ConfigError::Parse {
                path: file.clone(),
                at,
                line,
                column,
                message: inner.message().trim().to_string(),
            }
        })?;
        cfg.file = file;
        cfg.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.check()?;
        Ok(cfg)
    }

    fn invalid(&self, at: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.file.clone(),
            at: at.into(),
            message: message.into(),
        }
    }

    /// A path in the file, resolved against the file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// A policy string as a field policy.
    pub fn policy_of(
        &self,
        p: &str,
        j: &JobConfig,
    ) -> Result<concord_model::core::FieldPolicy, PolicyError> {
        use concord_model::core::FieldPolicy;
        let sys = |n: &str| -> Result<concord_model::model::SystemId, PolicyError> {
            if !j.systems.iter().any(|s| s == n) {
                return Err(PolicyError::NotASystem(n.to_string()));
            }
            Ok(concord_model::model::SystemId::new(n)?)
        };
        match p.split_once(':') {
            None if p == "newest" => Ok(FieldPolicy::Newest),
            None if p == "manual" => Ok(FieldPolicy::Manual),
            Some(("prefer", s)) => Ok(FieldPolicy::Prefer(sys(s.trim())?)),
            Some(("priority", list)) => Ok(FieldPolicy::Priority(
                list.split(',')
                    .map(|s| sys(s.trim()))
                    .collect::<Result<_, _>>()?,
            )),
            _ => Err(PolicyError::Unknown(p.to_string())),
        }
    }
}
