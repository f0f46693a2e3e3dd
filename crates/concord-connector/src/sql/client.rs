//! Connections, dialects, table introspection and the statement runner shared by reads and
//! writes. Every value reaches the database as a bound parameter; identifiers are quoted.

use crate::ConnectorError;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{MySql, Postgres, Sqlite, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// The SQL flavours concord speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
    Sqlite,
}

impl Dialect {
    /// From a connection URL's scheme.
    pub fn of_url(url: &str) -> Option<Dialect> {
        let scheme = url.split(':').next()?.to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            "mysql" | "mariadb" => Some(Dialect::MySql),
            "sqlite" => Some(Dialect::Sqlite),
            _ => None,
        }
    }

    /// Quotes an identifier (doubling the quote character inside it).
    pub fn quote(self, ident: &str) -> String {
        match self {
            Dialect::MySql => format!("`{}`", ident.replace('`', "``")),
            _ => format!("\"{}\"", ident.replace('"', "\"\"")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "PostgreSQL",
            Dialect::MySql => "MySQL/MariaDB",
            Dialect::Sqlite => "SQLite",
        }
    }

    /// How many bind parameters one statement may carry.
    pub fn max_params(self) -> usize {
        match self {
            Dialect::Postgres => 65_535,
            Dialect::MySql => 65_535,
            Dialect::Sqlite => 32_766,
        }
    }
}

/// How a column's values are read and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColType {
    Bool,
    /// Integer; `bits` is the storage width where the driver needs it (PostgreSQL), `unsigned`
    /// for MySQL unsigned columns.
    Int {
        bits: u8,
        unsigned: bool,
    },
    Decimal,
    Float32,
    Float64,
    /// Text; `padded` for blank-padded `character(n)` (trailing blanks are not content).
    Text {
        padded: bool,
    },
    Date,
    /// A timestamp without time zone (read in the configured offset).
    Timestamp,
    /// A timestamp with time zone (PostgreSQL `timestamptz`, MySQL `TIMESTAMP`).
    TimestampTz,
    Json,
    Uuid,
    Bytes,
    /// Anything else, read and written through its text form.
    Other,
}

/// A column of the mapped table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColType,
    /// The database's own type name (PostgreSQL `udt_name`, MySQL `COLUMN_TYPE`, SQLite declared
    /// type), used for casts.
    pub db_type: String,
}

/// Maps a PostgreSQL `data_type` / `udt_name` pair.
pub fn pg_type(data_type: &str, udt: &str) -> ColType {
    match udt {
        "bool" => ColType::Bool,
        "int2" => ColType::Int {
            bits: 16,
            unsigned: false,
        },
        "int4" => ColType::Int {
            bits: 32,
            unsigned: false,
        },
        "int8" => ColType::Int {
            bits: 64,
            unsigned: false,
        },
        "numeric" => ColType::Decimal,
        "float4" => ColType::Float32,
        "float8" => ColType::Float64,
        "text" | "varchar" | "name" | "citext" => ColType::Text { padded: false },
        "bpchar" => ColType::Text { padded: true },
        "date" => ColType::Date,
        "timestamp" => ColType::Timestamp,
        "timestamptz" => ColType::TimestampTz,
        "json" | "jsonb" => ColType::Json,
        "uuid" => ColType::Uuid,
        "bytea" => ColType::Bytes,
        _ if data_type == "USER-DEFINED" => ColType::Other,
        _ => ColType::Other,
    }
}

/// Maps a MySQL/MariaDB `DATA_TYPE` / `COLUMN_TYPE` pair.
pub fn mysql_type(data_type: &str, column_type: &str) -> ColType {
    let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
    match data_type.to_ascii_lowercase().as_str() {
        "tinyint" if column_type.eq_ignore_ascii_case("tinyint(1)") => ColType::Bool,
        "bool" | "boolean" => ColType::Bool,
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => {
            ColType::Int { bits: 64, unsigned }
        }
        "decimal" | "numeric" => ColType::Decimal,
        "float" => ColType::Float32,
        "double" | "real" => ColType::Float64,
        "char" | "varchar" | "text" | "tinytext" | "mediumtext" | "longtext" | "enum" | "set" => {
            ColType::Text { padded: false }
        }
        "date" => ColType::Date,
        "datetime" => ColType::Timestamp,
        "timestamp" => ColType::TimestampTz,
        "json" => ColType::Json,
        "binary" | "varbinary" | "blob" | "tinyblob" | "mediumblob" | "longblob" => ColType::Bytes,
        _ => ColType::Other,
    }
}

/// Maps an SQLite declared type by SQLite's affinity rules, refined for dates, booleans, json.
pub fn sqlite_type(declared: &str) -> ColType {
    let d = declared.to_ascii_uppercase();
    if d.contains("INT") {
        return ColType::Int {
            bits: 64,
            unsigned: false,
        };
    }
    if d.contains("BOOL") {
        return ColType::Bool;
    }
    if d.contains("JSON") {
        return ColType::Json;
    }
    if d == "DATE" {
        return ColType::Date;
    }
    if d.contains("DATETIME") || d.contains("TIMESTAMP") {
        return ColType::Timestamp;
    }
    if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        return ColType::Text { padded: false };
    }
    if d.contains("BLOB") {
        return ColType::Bytes;
    }
    if d.contains("FLOAT4") || d == "REAL4" {
        // Single precision by declaration (a PostgreSQL `real` loaded into SQLite): values are
        // read as the f32 they stand for, so they match the other databases.
        return ColType::Float32;
    }
    if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        return ColType::Float64;
    }
    if d.contains("DEC") || d.contains("NUM") {
        return ColType::Decimal;
    }
    ColType::Other
}

/// A connection pool to one database.
#[derive(Debug, Clone)]
pub enum Pool {
    Pg(sqlx::PgPool),
    My(sqlx::MySqlPool),
    Lite(sqlx::SqlitePool),
}

/// Turns a driver error into a message that names the system and object, never the URL.
pub fn describe(e: &sqlx::Error) -> (String, bool) {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let auth = matches!(code.as_str(), "28P01" | "28000" | "1045" | "1044");
            let msg = if auth {
                format!("authentication failed ({code}): {}", db.message())
            } else {
                format!("database error {code}: {}", db.message())
            };
            // Serialisation failures and deadlocks are worth retrying.
            let retry = matches!(code.as_str(), "40001" | "40P01" | "1213" | "1205");
            (msg, retry)
        }
        sqlx::Error::Io(io) => (format!("cannot reach the database: {io}"), true),
        sqlx::Error::Tls(t) => (format!("TLS error: {t}"), false),
        sqlx::Error::PoolTimedOut => (
            "timed out waiting for a connection (is the database reachable?)".into(),
            true,
        ),
        sqlx::Error::Configuration(c) => (format!("bad connection settings: {c}"), false),
        other => (other.to_string(), false),
    }
}

pub(crate) fn conn_error(system: &str, object: &str, e: &sqlx::Error) -> ConnectorError {
    let (message, retryable) = describe(e);
    ConnectorError {
        system: system.into(),
        object: object.into(),
        message,
        retryable,
    }
}

impl Pool {
    /// Connects to `url` (read from the environment by the caller). Errors name the system and
    /// object but never contain the URL, which may hold a password.
    pub async fn connect(url: &str, system: &str, object: &str) -> Result<Pool, ConnectorError> {
        let fail = |message: String| ConnectorError {
            system: system.into(),
            object: object.into(),
            message,
            retryable: false,
        };
        let dialect = Dialect::of_url(url).ok_or_else(|| {
            fail("connection URL must start with postgres://, mysql:// or sqlite:".into())
        })?;
        let timeout = Duration::from_secs(10);
        let pool = match dialect {
            Dialect::Postgres => {
                let opts =
                    PgConnectOptions::from_str(url).map_err(|e| conn_error(system, object, &e))?;
                Pool::Pg(
                    PgPoolOptions::new()
                        .max_connections(4)
                        .acquire_timeout(timeout)
                        .connect_with(opts)
                        .await
                        .map_err(|e| conn_error(system, object, &e))?,
                )
            }
            Dialect::MySql => {
                let opts = MySqlConnectOptions::from_str(url)
                    .map_err(|e| conn_error(system, object, &e))?;
                Pool::My(
                    MySqlPoolOptions::new()
                        .max_connections(4)
                        .acquire_timeout(timeout)
                        .connect_with(opts)
                        .await
                        .map_err(|e| conn_error(system, object, &e))?,
                )
            }
            Dialect::Sqlite => {
                let opts = SqliteConnectOptions::from_str(url)
                    .map_err(|e| conn_error(system, object, &e))?
                    .create_if_missing(true)
                    .busy_timeout(timeout);
                Pool::Lite(
                    SqlitePoolOptions::new()
                        .max_connections(4)
                        .acquire_timeout(timeout)
                        .connect_with(opts)
                        .await
                        .map_err(|e| conn_error(system, object, &e))?,
                )
            }
        };
        Ok(pool)
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Pool::Pg(_) => Dialect::Postgres,
            Pool::My(_) => Dialect::MySql,
            Pool::Lite(_) => Dialect::Sqlite,
        }
    }

    /// The table's columns in ordinal order; empty when the table does not exist.
    pub async fn columns(
        &self,
        schema: Option<&str>,
        table: &str,
    ) -> Result<Vec<Column>, sqlx::Error> {
        use sqlx::Row;
        Ok(match self {
            Pool::Pg(p) => sqlx::query(
                "SELECT column_name::text, data_type::text, udt_name::text FROM information_schema.columns \
                 WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2 ORDER BY ordinal_position",
            )
            .bind(schema)
            .bind(table)
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| {
                let (name, dt, udt): (String, String, String) = (r.get(0), r.get(1), r.get(2));
                Column {
                    ty: pg_type(&dt, &udt),
                    name,
                    db_type: udt,
                }
            })
            .collect(),
            Pool::My(p) => {
                // MariaDB stores JSON as LONGTEXT with a json_valid() check: find those columns,
                // so that JSON reads back as JSON (a type change would look like an edit).
                let checks: Vec<String> = sqlx::query(
                    "SELECT CAST(CHECK_CLAUSE AS CHAR) FROM information_schema.CHECK_CONSTRAINTS \
                     WHERE CONSTRAINT_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
                )
                .bind(schema)
                .bind(table)
                .fetch_all(p)
                .await
                .map(|rows| rows.iter().map(|r| r.get::<String, _>(0)).collect())
                .unwrap_or_default();
                sqlx::query(
                    "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), CAST(COLUMN_TYPE AS CHAR) \
                     FROM information_schema.columns WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? \
                     ORDER BY ordinal_position",
                )
                .bind(schema)
                .bind(table)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| {
                    let (name, dt, ct): (String, String, String) = (r.get(0), r.get(1), r.get(2));
                    let json_check = format!("json_valid(`{name}`)");
                    let ty = if dt.eq_ignore_ascii_case("longtext")
                        && checks.iter().any(|c| c.eq_ignore_ascii_case(&json_check))
                    {
                        ColType::Json
                    } else {
                        mysql_type(&dt, &ct)
                    };
                    Column { ty, name, db_type: ct }
                })
                .collect()
            }
            Pool::Lite(p) => sqlx::query("SELECT name, type FROM pragma_table_info(?)")
                .bind(table)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| {
                    let (name, declared): (String, String) = (r.get(0), r.get(1));
                    Column {
                        ty: sqlite_type(&declared),
                        name,
                        db_type: declared,
                    }
                })
                .collect(),
        })
    }

    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Pool::Pg(p) => Tx::Pg(p.begin().await?),
            Pool::My(p) => Tx::My(p.begin().await?),
            Pool::Lite(p) => Tx::Lite(p.begin().await?),
        })
    }

    pub async fn close(&self) {
        match self {
            Pool::Pg(p) => p.close().await,
            Pool::My(p) => p.close().await,
            Pool::Lite(p) => p.close().await,
        }
    }
}

/// COPY's text format: backslash, newline, carriage return and tab escaped.
fn copy_escape(s: &[u8], out: &mut Vec<u8>) {
    for &b in s {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
        }
    }
}

/// A transaction on one of the dialects.
pub enum Tx {
    Pg(Transaction<'static, Postgres>),
    My(Transaction<'static, MySql>),
    Lite(Transaction<'static, Sqlite>),
}

/// One bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
}

macro_rules! bind_all {
    ($q:expr, $params:expr) => {{
        let mut q = $q;
        for p in $params {
            q = match p {
                Param::Null => q.bind(Option::<String>::None),
                Param::Int(i) => q.bind(*i),
                Param::Float(f) => q.bind(*f),
                Param::Text(s) => q.bind(s.as_str()),
                Param::Bytes(b) => q.bind(b.as_slice()),
            };
        }
        q
    }};
}

impl Tx {
    /// PostgreSQL only: `COPY table (columns) FROM STDIN` in text format, the rows' parameters
    /// as the text a `$n::type` cast would read (NULL as `\N`, bytes as bytea hex); returns the
    /// rows copied. Other dialects: an error (callers check the dialect first).
    pub async fn copy_in(
        &mut self,
        table: &str,
        columns: &[String],
        rows: &[&[Param]],
    ) -> Result<u64, sqlx::Error> {
        let Tx::Pg(t) = self else {
            return Err(sqlx::Error::Protocol("COPY is PostgreSQL's".into()));
        };
        let mut buf = Vec::with_capacity(rows.len() * 128);
        for row in rows {
            for (i, p) in row.iter().enumerate() {
                if i > 0 {
                    buf.push(b'\t');
                }
                match p {
                    Param::Null => buf.extend_from_slice(b"\\N"),
                    Param::Int(n) => buf.extend_from_slice(n.to_string().as_bytes()),
                    Param::Float(f) => buf.extend_from_slice(f.to_string().as_bytes()),
                    Param::Text(s) => copy_escape(s.as_bytes(), &mut buf),
                    Param::Bytes(b) => {
                        // bytea's hex input form, its backslash escaped for COPY.
                        buf.extend_from_slice(b"\\\\x");
                        for byte in b {
                            buf.extend_from_slice(format!("{byte:02x}").as_bytes());
                        }
                    }
                }
            }
            buf.push(b'\n');
        }
        let sql = format!("COPY {table} ({}) FROM STDIN", columns.join(", "));
        let mut copy = t.copy_in_raw(&sql).await?;
        if let Err(e) = copy.send(buf).await {
            let _ = copy.abort("concord: sending the rows failed").await;
            return Err(e);
        }
        copy.finish().await
    }

    /// Runs a statement; returns the rows it affected.
    pub async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Tx::Pg(t) => bind_all!(sqlx::query(sql), params)
                .execute(&mut **t)
                .await?
                .rows_affected(),
            Tx::My(t) => bind_all!(sqlx::query(sql), params)
                .execute(&mut **t)
                .await?
                .rows_affected(),
            Tx::Lite(t) => bind_all!(sqlx::query(sql), params)
                .execute(&mut **t)
                .await?
                .rows_affected(),
        })
    }

    /// Runs a query returning one text value (or NULL).
    pub async fn scalar_text(&mut self, sql: &str) -> Result<Option<String>, sqlx::Error> {
        use sqlx::Row;
        Ok(match self {
            Tx::Pg(t) => sqlx::query(sql).fetch_one(&mut **t).await?.try_get(0)?,
            Tx::My(t) => sqlx::query(sql).fetch_one(&mut **t).await?.try_get(0)?,
            Tx::Lite(t) => sqlx::query(sql).fetch_one(&mut **t).await?.try_get(0)?,
        })
    }

    /// Runs a `SELECT COUNT(*) …` and returns the count.
    pub async fn count(&mut self, sql: &str, params: &[Param]) -> Result<u64, sqlx::Error> {
        use sqlx::Row;
        let n: i64 = match self {
            Tx::Pg(t) => bind_all!(sqlx::query(sql), params)
                .fetch_one(&mut **t)
                .await?
                .try_get(0)?,
            Tx::My(t) => bind_all!(sqlx::query(sql), params)
                .fetch_one(&mut **t)
                .await?
                .try_get(0)?,
            Tx::Lite(t) => bind_all!(sqlx::query(sql), params)
                .fetch_one(&mut **t)
                .await?
                .try_get(0)?,
        };
        Ok(n.max(0) as u64)
    }

    /// Runs a query inside the transaction.
    pub async fn fetch(&mut self, sql: &str, params: &[Param]) -> Result<Rows, sqlx::Error> {
        Ok(match self {
            Tx::Pg(t) => Rows::Pg(
                bind_all!(sqlx::query(sql), params)
                    .fetch_all(&mut **t)
                    .await?,
            ),
            Tx::My(t) => Rows::My(
                bind_all!(sqlx::query(sql), params)
                    .fetch_all(&mut **t)
                    .await?,
            ),
            Tx::Lite(t) => Rows::Lite(
                bind_all!(sqlx::query(sql), params)
                    .fetch_all(&mut **t)
                    .await?,
            ),
        })
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Pg(t) => t.commit().await,
            Tx::My(t) => t.commit().await,
            Tx::Lite(t) => t.commit().await,
        }
    }
}

/// Rows fetched by a query, still in the driver's form.
pub enum Rows {
    Pg(Vec<sqlx::postgres::PgRow>),
    My(Vec<sqlx::mysql::MySqlRow>),
    Lite(Vec<sqlx::sqlite::SqliteRow>),
}

impl Pool {
    pub async fn fetch(&self, sql: &str, params: &[Param]) -> Result<Rows, sqlx::Error> {
        Ok(match self {
            Pool::Pg(p) => Rows::Pg(bind_all!(sqlx::query(sql), params).fetch_all(p).await?),
            Pool::My(p) => Rows::My(bind_all!(sqlx::query(sql), params).fetch_all(p).await?),
            Pool::Lite(p) => Rows::Lite(bind_all!(sqlx::query(sql), params).fetch_all(p).await?),
        })
    }

    /// Runs one statement outside a transaction (setup, tests).
    pub async fn execute(&self, sql: &str, params: &[Param]) -> Result<u64, sqlx::Error> {
        let mut tx = self.begin().await?;
        let n = tx.execute(sql, params).await?;
        tx.commit().await?;
        Ok(n)
    }
}
