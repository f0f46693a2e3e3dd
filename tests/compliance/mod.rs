//! The connector compliance suite. `subject.rs` holds the contract every connector passes: the
//! [`subject::Subject`] trait (make a dataset, mutate it natively, build the connector, see what
//! the system holds) and the scenarios that run on any subject. This file holds the SQL and
//! file subjects ([`Table`]) and the scenarios only SQL tables have (capture modes, types,
//! composite keys, change logs). A new connector joins by implementing `Subject` and listing
//! itself in `tests/connector_compliance.rs`.

pub mod subject;
pub mod subjects;

use concord::connector::files::{FileConfig, FileConnector, FileFormat, FileType};
use concord::connector::memory::MemorySystem;
use concord::connector::sql::client::Param;
use concord::connector::sql::{CaptureMode, Pool, SqlConnector, SqlTableConfig};
use concord::connector::{Connector, WriteOp, WriteResult};
use concord::engine::{Engine, SyncJob};
use concord::model::{EntityId, Fields, Key, SystemId, Timestamp, Value};
use std::sync::Arc;

/// Whether a test needing `what` runs: true when reachable; when not, prints why and returns
/// false, unless CONCORD_REQUIRE_SERVICES=1, which makes it a failure.
pub async fn service(what: &str, port: u16) -> bool {
    let ok = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok();
    if !ok {
        if std::env::var("CONCORD_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("{what} on 127.0.0.1:{port} is unreachable and CONCORD_REQUIRE_SERVICES=1");
        }
        eprintln!("SKIPPED: {what} on 127.0.0.1:{port} is unreachable");
    }
    ok
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    MariaDb,
    Sqlite,
    Csv,
    Jsonl,
}

impl Kind {
    pub fn is_file(self) -> bool {
        matches!(self, Kind::Csv | Kind::Jsonl)
    }
}

/// One database table under test.
pub struct Table {
    pub kind: Kind,
    pub env: String,
    pub table: String,
    /// SQL subjects only.
    pub pool: Option<Pool>,
    _dir: Option<tempfile::TempDir>,
}

static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Table {
    /// A fresh table `name` with columns id (int key), name, amount (decimal), updated_at.
    pub async fn new(kind: Kind, scenario: &str) -> Option<Table> {
        if kind.is_file() {
            let d = tempfile::tempdir().unwrap();
            let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let table = format!(
                "cc_{scenario}_{n}.{}",
                if kind == Kind::Csv { "csv" } else { "jsonl" }
            );
            if kind == Kind::Csv {
                std::fs::write(d.path().join(&table), "id,name,amount,updated_at\n").unwrap();
            }
            return Some(Table {
                kind,
                env: d.path().display().to_string(),
                table,
                pool: None,
                _dir: Some(d),
            });
        }
        let (url, dir) = match kind {
            Kind::Postgres => {
                if !service("PostgreSQL", 5432).await {
                    return None;
                }
                ("postgres://postgres@127.0.0.1:5432/test".to_string(), None)
            }
            Kind::MariaDb => {
                if !service("MariaDB", 3306).await {
                    return None;
                }
                ("mysql://root@127.0.0.1:3306/test".to_string(), None)
            }
            Kind::Sqlite | Kind::Csv | Kind::Jsonl => {
                let d = tempfile::tempdir().unwrap();
                (
                    format!("sqlite:{}", d.path().join("erp.db").display()),
                    Some(d),
                )
            }
        };
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let table = format!("cc_{scenario}_{}_{n}", std::process::id());
        let env = format!("CONCORD_TEST_URL_{}", table.to_uppercase());
        // SAFETY of set_var: each test sets its own unique variable before any connector reads it.
        unsafe { std::env::set_var(&env, &url) };
        let pool = Pool::connect(&url, "test", &table).await.expect("connect");
        let ddl = match kind {
            Kind::Postgres => format!(
                "CREATE TABLE {table} (id integer PRIMARY KEY, name varchar(40), amount numeric(12,2), \
                 updated_at timestamptz)"
            ),
            Kind::MariaDb => format!(
                "CREATE TABLE {table} (id INT PRIMARY KEY, name VARCHAR(40), amount DECIMAL(12,2), \
                 updated_at DATETIME(6))"
            ),
            Kind::Sqlite | Kind::Csv | Kind::Jsonl => format!(
                "CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT, amount DECIMAL(12,2), updated_at DATETIME)"
            ),
        };
        pool.execute(&format!("DROP TABLE IF EXISTS {table}"), &[])
            .await
            .unwrap();
        pool.execute(&ddl, &[]).await.unwrap();
        Some(Table {
            kind,
            env,
            table,
            pool: Some(pool),
            _dir: dir,
        })
    }

    pub fn pool(&self) -> &Pool {
        self.pool.as_ref().expect("an SQL subject")
    }

    fn file_config(&self) -> FileConfig {
        let format = if self.kind == Kind::Csv {
            FileFormat::Csv
        } else {
            FileFormat::Jsonl
        };
        FileConfig::new(&self.env, &self.table, format, &["id"])
            .with_type("id", FileType::Int)
            .with_type("amount", FileType::Decimal)
            .with_type("updated_at", FileType::Datetime)
    }

    /// A connector on this subject, as the engine sees it (files ignore mode and page size:
    /// they are always read whole).
    pub async fn conn(&self, mode: CaptureMode, page: usize) -> Arc<dyn Connector> {
        if self.kind.is_file() {
            Arc::new(FileConnector::new(SystemId::new("erp").unwrap(), self.file_config()).unwrap())
        } else {
            self.connector(mode, page).await
        }
    }

    /// Files have no native writer: a person editing the file is simulated by writing with a
    /// connector of its own (no state is shared with the one under test).
    async fn file_edit(&self, op: WriteOp) {
        let c = FileConnector::new(SystemId::new("erp").unwrap(), self.file_config()).unwrap();
        let r = c.write(vec![op]).await.unwrap();
        assert!(matches!(r[0], WriteResult::Ok { .. }), "{r:?}");
    }

    pub fn config(&self, mode: CaptureMode, page: usize) -> SqlTableConfig {
        let mut c = SqlTableConfig::new(&self.env, &self.table, &["id"]);
        c.mode = mode;
        c.batch_size = page;
        if mode == CaptureMode::Column {
            c.updated_column = Some("updated_at".into());
        }
        // MySQL/MariaDB: the suite's transactions are short; let the cursor pass fresh entries.
        // (The settle window itself is checked in trigger_mode_captures_everything.)
        c.settle_secs = 0;
        // One change log per test table: the suite's tests run in parallel.
        c.changelog_table = format!("{}_log", self.table);
        c
    }

    pub async fn connector(&self, mode: CaptureMode, page: usize) -> Arc<SqlConnector> {
        Arc::new(
            SqlConnector::connect(SystemId::new("erp").unwrap(), self.config(mode, page))
                .await
                .expect("connector"),
        )
    }

    fn ph(&self, n: usize) -> String {
        match self.kind {
            Kind::Postgres => format!("${n}"),
            _ => "?".into(),
        }
    }

    fn ts(&self, ms: i64) -> Param {
        let t = Timestamp(ms).to_chrono().unwrap();
        match self.kind {
            Kind::Postgres => Param::Text(t.to_rfc3339()),
            _ => Param::Text(t.naive_utc().format("%Y-%m-%d %H:%M:%S%.3f").to_string()),
        }
    }

    fn ts_cast(&self, n: usize) -> String {
        match self.kind {
            Kind::Postgres => format!("${n}::timestamptz"),
            _ => "?".into(),
        }
    }

    /// A user's native insert.
    pub async fn insert(&self, id: i64, name: &str, amount: &str, updated_ms: i64) {
        if self.kind.is_file() {
            let f = Fields::new()
                .with("id", id)
                .with("name", name)
                .with("amount", Value::decimal_str(amount).unwrap())
                .with("updated_at", Value::DateTime(Timestamp(updated_ms)));
            let e = EntityId::derive(&SystemId::new("user").unwrap(), &id.to_string());
            return self
                .file_edit(WriteOp::Upsert {
                    entity: e,
                    key: None,
                    fields: f,
                })
                .await;
        }
        let amount_ph = match self.kind {
            Kind::Postgres => "$3::numeric".to_string(),
            _ => "?".into(),
        };
        let sql = format!(
            "INSERT INTO {} (id, name, amount, updated_at) VALUES ({}, {}, {amount_ph}, {})",
            self.table,
            self.ph(1),
            self.ph(2),
            self.ts_cast(4)
        );
        let params = [
            Param::Int(id),
            Param::Text(name.into()),
            Param::Text(amount.into()),
            self.ts(updated_ms),
        ];
        self.pool().execute(&sql, &params).await.unwrap();
    }

    pub async fn update_name(&self, id: i64, name: &str, updated_ms: i64) {
        if self.kind.is_file() {
            let c = self.conn(CaptureMode::Scan, 0).await;
            let (k, f) = read_all(c.as_ref())
                .await
                .into_iter()
                .find(|(k, _)| k.as_str() == id.to_string())
                .expect("row to update");
            let f = f
                .with("name", name)
                .with("updated_at", Value::DateTime(Timestamp(updated_ms)));
            let e = EntityId::derive(&SystemId::new("user").unwrap(), &id.to_string());
            return self
                .file_edit(WriteOp::Upsert {
                    entity: e,
                    key: Some(k),
                    fields: f,
                })
                .await;
        }
        let sql = format!(
            "UPDATE {} SET name = {}, updated_at = {} WHERE id = {}",
            self.table,
            self.ph(1),
            self.ts_cast(2),
            self.ph(3)
        );
        self.pool()
            .execute(
                &sql,
                &[
                    Param::Text(name.into()),
                    self.ts(updated_ms),
                    Param::Int(id),
                ],
            )
            .await
            .unwrap();
    }

    pub async fn delete(&self, id: i64) {
        if self.kind.is_file() {
            let e = EntityId::derive(&SystemId::new("user").unwrap(), &id.to_string());
            return self
                .file_edit(WriteOp::Delete {
                    entity: e,
                    key: Key::new(id.to_string()),
                })
                .await;
        }
        let sql = format!("DELETE FROM {} WHERE id = {}", self.table, self.ph(1));
        self.pool().execute(&sql, &[Param::Int(id)]).await.unwrap();
    }

    pub async fn drop(self) {
        if let Some(pool) = &self.pool {
            let _ = pool
                .execute(&format!("DROP TABLE IF EXISTS {}", self.table), &[])
                .await;
            pool.close().await;
        }
    }
}

#[async_trait::async_trait]
impl subject::Subject for Table {
    async fn connector(&self) -> Arc<dyn Connector> {
        self.conn(CaptureMode::Scan, 7).await
    }
    fn names(&self) -> subject::Names {
        subject::Names {
            id: "id",
            name: "name",
            amount: "amount",
        }
    }
    fn key_of(&self, id: i64) -> Option<Key> {
        Some(Key::new(id.to_string()))
    }
    fn missing_key(&self) -> Option<Key> {
        Some(Key::new("99"))
    }
    fn refused(&self) -> Vec<(&'static str, Value, &'static str)> {
        let mut r = vec![("amount", Value::Bool(true), "amount")];
        // Too long for varchar(40).
        match self.kind {
            Kind::Postgres => r.push(("name", Value::text("x".repeat(60)), "22001")),
            Kind::MariaDb => r.push(("name", Value::text("x".repeat(60)), "22001")),
            _ => {}
        }
        r
    }
    async fn insert(&self, id: i64, name: &str, amount: &str) {
        Table::insert(self, id, name, amount, T0 + id).await
    }
    async fn update_name(&self, id: i64, name: &str) {
        Table::update_name(self, id, name, T0 + 100_000 + id).await
    }
    async fn delete(&self, id: i64) {
        Table::delete(self, id).await
    }
    async fn holds(&self) -> subject::Holds {
        let c = self.conn(CaptureMode::Scan, 10_000).await;
        subjects::held_by(c.as_ref(), self.names()).await
    }
    async fn finish(self: Box<Self>) {
        Table::drop(*self).await
    }
}

/// Reads every page; returns (key, fields) of present records.
pub async fn read_all(c: &dyn Connector) -> Vec<(Key, Fields)> {
    let mut out = Vec::new();
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let page = c.read(cursor.as_deref()).await.expect("read");
        for ch in page.changes {
            out.push((ch.key, ch.fields.expect("present")));
        }
        if !page.more {
            return out;
        }
        cursor = page.cursor;
    }
}

/// Reads from `cursor` to the end; returns the changes and the cursor to store.
pub async fn read_from(
    c: &dyn Connector,
    mut cursor: Option<Vec<u8>>,
) -> (Vec<(Key, Fields)>, Option<Vec<u8>>) {
    let mut out = Vec::new();
    for _ in 0..1000 {
        let page = c.read(cursor.as_deref()).await.expect("read");
        for ch in page.changes {
            out.push((ch.key, ch.fields.expect("present")));
        }
        cursor = page.cursor;
        if !page.more {
            return (out, cursor);
        }
    }
    panic!(
        "a read did not end within 1000 pages ({} records so far)",
        out.len()
    );
}

const T0: i64 = 1_717_200_000_000; // 2024-06-01T00:00:00Z

fn name_of(f: &Fields) -> String {
    match f.get("name") {
        Some(Value::Text(s)) => s.clone(),
        other => panic!("name: {other:?}"),
    }
}

fn job(a: Arc<MemorySystem>, b: Arc<dyn Connector>) -> SyncJob {
    crate::common::two_way_job("cc", vec![a as Arc<dyn Connector>, b], 50)
}

fn engine() -> Engine {
    crate::common::memory_engine("cc")
}

pub async fn column_mode_cursor_ties_late_commits_restart(kind: Kind) {
    let Some(s) = Table::new(kind, "column").await else {
        return;
    };
    // 30 rows share one timestamp, more than a page (7): the (updated, key) position keeps
    // paging exact.
    // Stamps near the database's clock: how far back the next read looks depends on it.
    let t0 = Timestamp::now().millis() / 1000 * 1000 - 10_000;
    for i in 0..30 {
        s.insert(i, "tie", "1", t0).await;
    }
    // Microseconds (finer than concord's milliseconds): a page cursor rounded to milliseconds
    // would fall before the tied rows and return the same page for ever.
    let micro = match kind {
        Kind::Postgres => Some("updated_at + interval '123 microseconds'"),
        Kind::MariaDb => Some("updated_at + INTERVAL 123 MICROSECOND"),
        _ => None,
    };
    if let Some(expr) = micro {
        s.pool()
            .execute(&format!("UPDATE {} SET updated_at = {expr}", s.table), &[])
            .await
            .unwrap();
    }
    let c = s.connector(CaptureMode::Column, 7).await;
    let (rows, cursor) = read_from(c.as_ref(), None).await;
    let mut ids: Vec<String> = rows.iter().map(|(k, _)| k.to_string()).collect();
    ids.dedup();
    assert_eq!(
        ids.len(),
        30,
        "{kind:?}: rows sharing a timestamp lost or repeated within a read"
    );
    // A row that commits late with an older timestamp (inside the overlap window, 300 s
    // before the read's start) is found; so is a new row. Restart: a new connector from the
    // saved cursor.
    s.insert(100, "late", "1", t0 - 40_000).await;
    s.insert(101, "new", "1", t0 + 5_000).await;
    let c2 = s.connector(CaptureMode::Column, 7).await;
    let (rows2, _) = read_from(c2.as_ref(), cursor).await;
    let got: Vec<String> = rows2.iter().map(|(k, _)| k.to_string()).collect();
    assert!(
        got.contains(&"100".to_string()),
        "{kind:?}: late commit lost: {got:?}"
    );
    assert!(
        got.contains(&"101".to_string()),
        "{kind:?}: new row lost: {got:?}"
    );
    s.drop().await;
}

/// Rows older than the overlap window: the next read starts at the newest stamp (the database's
/// clock says every row before it has committed), so a quiet table is not re-read over the
/// whole window on every pass; only the rows sharing the newest stamp are read again.
pub async fn column_mode_quiet_table_is_not_reread(kind: Kind) {
    let Some(s) = Table::new(kind, "quiet").await else {
        return;
    };
    // Twelve rows in pages of four: the last page is full, and the read ends on an empty one.
    for i in 0..12 {
        s.insert(i, &format!("r{i}"), "1", T0 + i * 1000).await;
    }
    let c = s.connector(CaptureMode::Column, 4).await;
    let (rows, cursor) = read_from(c.as_ref(), None).await;
    assert_eq!(rows.len(), 12, "{kind:?}");
    let (again, cursor) = read_from(c.as_ref(), cursor).await;
    let keys: Vec<String> = again.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(
        keys,
        vec!["11".to_string()],
        "{kind:?}: a quiet table re-read"
    );
    // A row committed now is still found.
    s.insert(20, "new", "1", Timestamp::now().millis()).await;
    let (after, _) = read_from(c.as_ref(), cursor).await;
    let keys: Vec<String> = after.iter().map(|(k, _)| k.to_string()).collect();
    assert!(keys.contains(&"20".to_string()), "{kind:?}: {keys:?}");
    s.drop().await;
}

pub async fn column_mode_through_the_engine_repeats_nothing(kind: Kind) {
    let Some(s) = Table::new(kind, "colengine").await else {
        return;
    };
    for i in 0..12 {
        s.insert(i, &format!("r{i}"), "2", T0).await;
    }
    let mem = Arc::new(MemorySystem::new(SystemId::new("mem").unwrap()));
    let sql = s.connector(CaptureMode::Column, 5).await;
    let j = job(mem.clone(), sql);
    let e = engine();
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(r.changed, 12, "{r:?}");
    // The overlap window re-reads rows; their unchanged hash means no change is reported.
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(
        (r.changed, r.total_written()),
        (0, 0),
        "{kind:?}: overlap re-read reported as change: {r:?}"
    );
    s.update_name(3, "changed", T0 + 1000).await;
    // Restart the engine's connector: the cursor comes from the store.
    let sql2 = s.connector(CaptureMode::Column, 5).await;
    let j2 = job(mem.clone(), sql2);
    let r = e.sync(&j2, None).await.unwrap();
    assert_eq!(r.changed, 1, "{kind:?}: {r:?}");
    s.drop().await;
}

pub async fn clear_errors(kind: Kind) {
    let sys = SystemId::new("erp").unwrap();
    let (unreachable, bad_auth) = match kind {
        Kind::Postgres => (
            "postgres://postgres@127.0.0.1:1/test",
            Some("postgres://no_such_role_concord@127.0.0.1:5432/test"),
        ),
        Kind::MariaDb => (
            "mysql://root@127.0.0.1:1/test",
            Some("mysql://root:wrong-password@127.0.0.1:3306/test"),
        ),
        Kind::Sqlite => ("sqlite:/nonexistent-dir-concord/x.db", None),
        Kind::Csv | Kind::Jsonl => return file_errors(kind).await,
    };
    if kind != Kind::Sqlite
        && !service("database", if kind == Kind::Postgres { 5432 } else { 3306 }).await
    {
        return;
    }
    let env = format!("CONCORD_TEST_BAD_{kind:?}").to_uppercase();
    unsafe { std::env::set_var(&env, unreachable) };
    let e = SqlConnector::connect(sys.clone(), SqlTableConfig::new(&env, "customers", &["id"]))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("erp") && msg.contains("customers"), "{msg}");
    assert!(
        !msg.contains("127.0.0.1:1"),
        "the URL must not leak into errors: {msg}"
    );
    if let Some(bad) = bad_auth {
        unsafe { std::env::set_var(&env, bad) };
        let msg =
            SqlConnector::connect(sys.clone(), SqlTableConfig::new(&env, "customers", &["id"]))
                .await
                .unwrap_err()
                .to_string();
        assert!(msg.contains("authentication failed"), "{msg}");
        assert!(!msg.contains("wrong-password"), "{msg}");
    }
    let missing = SqlConnector::connect(
        sys.clone(),
        SqlTableConfig::new("CONCORD_TEST_UNSET_VAR", "t", &["id"]),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(missing.contains("CONCORD_TEST_UNSET_VAR"), "{missing}");
    // A table that does not exist.
    if let Some(s) = Table::new(kind, "errors").await {
        let mut cfg = s.config(CaptureMode::Scan, 10);
        cfg.table = "no_such_table_concord".into();
        let msg = SqlConnector::connect(sys.clone(), cfg)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("no_such_table_concord") && msg.contains("not found"),
            "{msg}"
        );
        let mut cfg = s.config(CaptureMode::Scan, 10);
        cfg.key = vec!["nope".into()];
        let msg = SqlConnector::connect(sys, cfg)
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.contains("key column nope"), "{msg}");
        s.drop().await;
    }
}

/// Every column type: what concord writes reads back as the same canonical content (else each
/// of its own writes would come back as a change).
pub async fn types_round_trip(kind: Kind) {
    assert!(
        !kind.is_file(),
        "SQL column types only; files: see files_connector.rs"
    );
    let Some(s) = Table::new(kind, "types").await else {
        return;
    };
    let t = format!("{}_all", s.table);
    let ddl = match kind {
        Kind::Postgres => format!(
            "CREATE TABLE {t} (id int8 PRIMARY KEY, s_int2 int2, s_int4 int4, s_num numeric(14,4), s_real real, \
             s_double double precision, s_bool boolean, s_text text, s_varchar varchar(40), s_char char(6), \
             s_date date, s_ts timestamp(3), s_tstz timestamptz(3), s_jsonb jsonb, s_json json, s_uuid uuid, \
             s_bytea bytea, s_time time)"
        ),
        Kind::MariaDb => format!(
            "CREATE TABLE {t} (id BIGINT PRIMARY KEY, s_bool TINYINT(1), s_int INT, s_big BIGINT UNSIGNED, \
             s_num DECIMAL(14,4), s_float FLOAT, s_double DOUBLE, s_text TEXT, s_varchar VARCHAR(40), s_char CHAR(6), \
             s_date DATE, s_dt DATETIME(3), s_ts TIMESTAMP(3) NULL, s_json JSON, s_blob BLOB, s_time TIME)"
        ),
        Kind::Sqlite | Kind::Csv | Kind::Jsonl => format!(
            "CREATE TABLE {t} (id INTEGER PRIMARY KEY, s_int INTEGER, s_num DECIMAL(14,4), s_real REAL, s_bool BOOLEAN, \
             s_text TEXT, s_date DATE, s_dt DATETIME, s_json JSON, s_blob BLOB)"
        ),
    };
    s.pool()
        .execute(&format!("DROP TABLE IF EXISTS {t}"), &[])
        .await
        .unwrap();
    s.pool().execute(&ddl, &[]).await.unwrap();
    let ts = |ms: i64| Value::DateTime(Timestamp(ms));
    let json = Value::Json(serde_json::json!({"b": [1, 2.5, "x"], "a": null, "n": {"z": true}}));
    let f = match kind {
        Kind::Postgres => Fields::new()
            .with("id", 1i64)
            .with("s_int2", 7i64)
            .with("s_int4", -123_456i64)
            .with("s_num", Value::decimal_str("1234.5").unwrap())
            .with("s_real", Value::decimal_str("19.45").unwrap())
            .with("s_double", Value::decimal_str("0.1").unwrap())
            .with("s_bool", true)
            .with("s_text", "h\u{e9}llo, \u{4e16}\u{754c}")
            .with("s_varchar", "x'); DROP TABLE t; --")
            .with("s_char", "ab")
            .with("s_date", Value::date_str("2024-02-29").unwrap())
            .with("s_ts", ts(T0 + 123))
            .with("s_tstz", ts(T0 + 456))
            .with("s_jsonb", json.clone())
            .with("s_json", Value::Json(serde_json::json!({"k": "v"})))
            .with("s_uuid", "67e55044-10b1-426f-9247-bb680e5fe0c8")
            .with("s_bytea", Value::Bytes(vec![0, 1, 255]))
            .with("s_time", "12:34:56"),
        Kind::MariaDb => Fields::new()
            .with("id", 1i64)
            .with("s_bool", true)
            .with("s_int", -5i64)
            .with("s_big", 9_000_000_000i64)
            .with("s_num", Value::decimal_str("1234.5").unwrap())
            .with("s_float", Value::decimal_str("19.45").unwrap())
            .with("s_double", Value::decimal_str("0.1").unwrap())
            .with("s_text", "h\u{e9}llo, \u{4e16}\u{754c}")
            .with("s_varchar", "x'); DROP TABLE t; --")
            .with("s_char", "ab")
            .with("s_date", Value::date_str("2024-02-29").unwrap())
            .with("s_dt", ts(T0 + 123))
            .with("s_ts", ts(T0 + 456))
            .with("s_json", json.clone())
            .with("s_blob", Value::Bytes(vec![0, 1, 255]))
            .with("s_time", "12:34:56"),
        Kind::Sqlite | Kind::Csv | Kind::Jsonl => Fields::new()
            .with("id", 1i64)
            .with("s_int", -5i64)
            .with("s_num", Value::decimal_str("1234.5").unwrap())
            .with("s_real", Value::decimal_str("19.45").unwrap())
            .with("s_bool", false)
            .with("s_text", "h\u{e9}llo, \u{4e16}\u{754c}")
            .with("s_date", Value::date_str("2024-02-29").unwrap())
            .with("s_dt", ts(T0 + 123))
            .with("s_json", json.clone())
            .with("s_blob", Value::Bytes(vec![0, 1, 255])),
    };
    let mut cfg = s.config(CaptureMode::Scan, 10);
    cfg.table = t.clone();
    let c = SqlConnector::connect(SystemId::new("erp").unwrap(), cfg)
        .await
        .expect("connector");
    let res = c
        .write(vec![WriteOp::Upsert {
            entity: EntityId::derive(&SystemId::new("erp").unwrap(), "1"),
            key: None,
            fields: f.clone(),
        }])
        .await
        .unwrap();
    assert_eq!(
        res,
        vec![WriteResult::Ok { key: Key::new("1") }],
        "{kind:?}"
    );
    let rows = read_all(&c).await;
    assert_eq!(rows.len(), 1);
    let back = &rows[0].1;
    for (name, v) in f.iter() {
        assert_eq!(
            back.get(name),
            Some(v),
            "{kind:?}: column {name} did not round-trip"
        );
    }
    assert_eq!(back.content_hash(), f.content_hash(), "{kind:?}: {back:?}");
    // And a second write of the same record, as an update by key, changes nothing.
    let res = c
        .write(vec![WriteOp::Upsert {
            entity: EntityId::derive(&SystemId::new("erp").unwrap(), "1"),
            key: Some(Key::new("1")),
            fields: f.clone(),
        }])
        .await
        .unwrap();
    assert_eq!(
        res,
        vec![WriteResult::Ok { key: Key::new("1") }],
        "{kind:?}"
    );
    assert_eq!(read_all(&c).await[0].1.content_hash(), f.content_hash());
    s.pool()
        .execute(&format!("DROP TABLE IF EXISTS {t}"), &[])
        .await
        .unwrap();
    s.drop().await;
}

/// Reads from `cursor` to the end; returns every change (None fields = deleted) and the cursor.
pub async fn changes_from(
    c: &dyn Connector,
    mut cursor: Option<Vec<u8>>,
) -> (Vec<(Key, Option<Fields>)>, Option<Vec<u8>>) {
    let mut out = Vec::new();
    for _ in 0..1000 {
        let page = c.read(cursor.as_deref()).await.expect("read");
        for ch in page.changes {
            out.push((ch.key, ch.fields));
        }
        cursor = page.cursor;
        if !page.more {
            return (out, cursor);
        }
    }
    panic!(
        "a read did not end within 1000 pages ({} records so far)",
        out.len()
    );
}

async fn log_count(s: &Table) -> i64 {
    let c = SqlConnector::connect(
        SystemId::new("erp").unwrap(),
        s.config(CaptureMode::Trigger, 10),
    )
    .await
    .unwrap();
    let sql = format!("SELECT COUNT(*) FROM {}", c.changelog_ref());
    let rows = s.pool().fetch(&sql, &[]).await.unwrap();
    concord::connector::sql::decode::first_i64(&rows).unwrap()
}

pub async fn trigger_mode_captures_everything(kind: Kind) {
    let Some(s) = Table::new(kind, "trigger").await else {
        return;
    };
    for i in 0..5 {
        s.insert(i, &format!("before setup {i}"), "1", T0).await;
    }
    let c = s.connector(CaptureMode::Trigger, 4).await;
    c.setup().await.expect("setup");
    c.setup().await.expect("setup is idempotent");
    // First read: a scan of what exists (the log starts empty).
    let (first, cursor) = changes_from(c.as_ref(), None).await;
    assert_eq!(first.len(), 5, "{kind:?}");
    // Native inserts, updates, deletes are logged and read by sequence.
    s.insert(10, "ten", "1", T0).await;
    s.update_name(2, "two", T0).await;
    s.delete(3).await;
    s.update_name(10, "ten again", T0).await;
    let (ch, cursor2) = changes_from(c.as_ref(), cursor).await;
    let keys: Vec<String> = ch.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(
        keys,
        vec!["10", "2", "3"],
        "{kind:?}: one change per key, in log order"
    );
    assert_eq!(
        name_of(ch[0].1.as_ref().unwrap()),
        "ten again",
        "current row is read"
    );
    assert!(ch[2].1.is_none(), "{kind:?}: the delete is captured");
    // concord's own writes are not logged.
    let before = log_count(&s).await;
    let sys = SystemId::new("erp").unwrap();
    c.write(vec![
        WriteOp::Upsert {
            entity: EntityId::derive(&sys, "50"),
            key: None,
            fields: Fields::new().with("id", 50i64).with("name", "by concord"),
        },
        WriteOp::Delete {
            entity: EntityId::derive(&sys, "4"),
            key: Key::new("4"),
        },
    ])
    .await
    .unwrap();
    assert_eq!(
        log_count(&s).await,
        before,
        "{kind:?}: concord's writes were logged"
    );
    // A native change after concord's write is still logged.
    s.update_name(50, "edited natively", T0).await;
    let (ch, cursor3) = changes_from(c.as_ref(), cursor2.clone()).await;
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0].0.to_string(), "50");
    // Restart from the saved cursor: a new connector resumes exactly there and prunes the log
    // up to it.
    let c2 = s.connector(CaptureMode::Trigger, 4).await;
    let (ch, cursor4) = changes_from(c2.as_ref(), cursor3).await;
    assert!(ch.is_empty(), "{kind:?}: repeated {ch:?}");
    assert_eq!(
        log_count(&s).await,
        0,
        "{kind:?}: checkpointed entries pruned"
    );
    // MySQL/MariaDB have no transaction snapshots: with a settle window the cursor does not
    // pass entries younger than it, so they are read again (and recognised by their hash).
    if kind == Kind::MariaDb {
        s.update_name(0, "zero", T0).await;
        let mut cfg = s.config(CaptureMode::Trigger, 4);
        cfg.settle_secs = 300;
        let slow = SqlConnector::connect(SystemId::new("erp").unwrap(), cfg)
            .await
            .unwrap();
        let (fresh, cs) = changes_from(&slow, cursor4.clone()).await;
        assert_eq!(fresh.len(), 1, "a fresh entry is read");
        let (again, _) = changes_from(&slow, cs).await;
        assert_eq!(again.len(), 1, "and read again: the cursor did not pass it");
    }
    // Teardown removes what setup installed: changes are no longer logged, the log is gone.
    c.teardown().await.expect("teardown");
    s.update_name(1, "after teardown", T0).await;
    let sql = format!("SELECT COUNT(*) FROM {}", c.changelog_ref());
    assert!(
        s.pool().fetch(&sql, &[]).await.is_err(),
        "{kind:?}: change log left behind"
    );
    s.drop().await;
}

pub async fn trigger_mode_through_the_engine(kind: Kind) {
    let Some(s) = Table::new(kind, "trigengine").await else {
        return;
    };
    for i in 0..8 {
        s.insert(i, &format!("r{i}"), "2", T0).await;
    }
    let c = s.connector(CaptureMode::Trigger, 3).await;
    c.setup().await.unwrap();
    let mem = Arc::new(MemorySystem::new(SystemId::new("mem").unwrap()));
    let j = job(mem.clone(), c.clone());
    let e = engine();
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(
        (r.changed, r.written.get("mem").copied()),
        (8, Some(8)),
        "{r:?}"
    );
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!((r.changed, r.total_written()), (0, 0), "{r:?}");
    // Native delete and edit; a memory-side edit flows in without being logged back.
    s.delete(5).await;
    s.update_name(6, "six", T0).await;
    let (k, f) = mem
        .rows()
        .into_iter()
        .find(|(_, r)| r.fields.get("id") == Some(&Value::Int(1)))
        .map(|(k, r)| (k, r.fields))
        .unwrap();
    mem.user_update(&k, f.with("name", "from mem"));
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!(r.changed, 3, "{kind:?}: {r:?}");
    assert_eq!(mem.rows().len(), 7, "hard delete propagated");
    let r = e.sync(&j, None).await.unwrap();
    assert_eq!((r.changed, r.total_written()), (0, 0), "{kind:?}: {r:?}");
    c.teardown().await.unwrap();
    s.drop().await;
}

/// PostgreSQL: a transaction that took its log sequence number early but commits late is not
/// skipped by a cursor that saw later, already committed entries.
pub async fn trigger_mode_late_commit_postgres() {
    let Some(s) = Table::new(Kind::Postgres, "trlate").await else {
        return;
    };
    let c = s.connector(CaptureMode::Trigger, 100).await;
    c.setup().await.unwrap();
    // LISTEN/NOTIFY wakes a watching engine.
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.wait_for_change(std::time::Duration::from_secs(20)).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    s.insert(99, "wake up", "1", T0).await;
    assert!(
        waiter.await.unwrap().unwrap(),
        "no notification for a native insert"
    );
    assert!(!c
        .wait_for_change(std::time::Duration::from_millis(200))
        .await
        .unwrap());
    let (_, cursor) = changes_from(c.as_ref(), None).await;
    // Transaction A inserts (takes a sequence number) and stays open.
    let mut a = s.pool().begin().await.unwrap();
    a.execute(
        &format!("INSERT INTO {} (id, name) VALUES ($1, $2)", s.table),
        &[Param::Int(1), Param::Text("slow".into())],
    )
    .await
    .unwrap();
    // Transaction B inserts later and commits first.
    s.insert(2, "fast", "1", T0).await;
    let (ch, cursor2) = changes_from(c.as_ref(), cursor).await;
    let keys: Vec<String> = ch.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(keys, vec!["2"]);
    a.commit().await.unwrap();
    let (ch, _) = changes_from(c.as_ref(), cursor2).await;
    let keys: Vec<String> = ch.iter().map(|(k, _)| k.to_string()).collect();
    assert!(
        keys.contains(&"1".to_string()),
        "late commit skipped: {keys:?}"
    );
    c.teardown().await.unwrap();
    s.drop().await;
}

/// Files: a missing directory, a malformed file and a duplicate key give errors naming the file
/// and the line.
pub async fn file_errors(kind: Kind) {
    let sys = SystemId::new("erp").unwrap();
    let format = if kind == Kind::Csv {
        FileFormat::Csv
    } else {
        FileFormat::Jsonl
    };
    let e = FileConnector::new(
        sys.clone(),
        FileConfig::new("/nonexistent/concord", "t", format, &["id"]),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("does not exist") && e.to_string().contains("erp"),
        "{e}"
    );
    let s = Table::new(kind, "ferr").await.unwrap();
    let body = if kind == Kind::Csv {
        "id,name,amount,updated_at\n1,a,x,\n"
    } else {
        "{\"id\": 1, \"amount\": \"x\"}\n"
    };
    std::fs::write(std::path::Path::new(&s.env).join(&s.table), body).unwrap();
    let msg = s
        .conn(CaptureMode::Scan, 1)
        .await
        .read(None)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&s.table) && msg.contains("amount"), "{msg}");
}

/// Composite keys: create, update by key, delete by key, on a two-column primary key.
pub async fn composite_keys(kind: Kind) {
    let Some(s) = Table::new(kind, "composite").await else {
        return;
    };
    let t = format!("{}_lines", s.table);
    let ddl = match kind {
        Kind::Postgres => format!("CREATE TABLE {t} (order_id int4, line int2, sku varchar(20), qty int4, PRIMARY KEY (order_id, line))"),
        Kind::MariaDb => format!("CREATE TABLE {t} (order_id INT, line SMALLINT, sku VARCHAR(20), qty INT, PRIMARY KEY (order_id, line))"),
        _ => format!("CREATE TABLE {t} (order_id INTEGER, line INTEGER, sku TEXT, qty INTEGER, PRIMARY KEY (order_id, line))"),
    };
    s.pool().execute(&ddl, &[]).await.unwrap();
    let mut cfg = s.config(CaptureMode::Scan, 2);
    cfg.table = t.clone();
    cfg.key = vec!["order_id".into(), "line".into()];
    let sys = SystemId::new("erp").unwrap();
    let c = SqlConnector::connect(sys.clone(), cfg).await.unwrap();
    let line = |o: i64, l: i64, sku: &str, q: i64| {
        Fields::new()
            .with("order_id", o)
            .with("line", l)
            .with("sku", sku)
            .with("qty", q)
    };
    let ops: Vec<WriteOp> = [(10248, 1, "A", 5), (10248, 2, "B", 1), (10249, 1, "A", 7)]
        .iter()
        .map(|&(o, l, sku, q)| WriteOp::Upsert {
            entity: EntityId::derive(&sys, &format!("{o}/{l}")),
            key: None,
            fields: line(o, l, sku, q),
        })
        .collect();
    let res = c.write(ops).await.unwrap();
    assert_eq!(
        res[1],
        WriteResult::Ok {
            key: Key::composite(&["10248", "2"])
        },
        "{kind:?}"
    );
    let k = Key::composite(&["10248", "2"]);
    let res = c
        .write(vec![
            WriteOp::Upsert {
                entity: EntityId::derive(&sys, "10248/2"),
                key: Some(k.clone()),
                fields: line(10248, 2, "B", 9),
            },
            WriteOp::Delete {
                entity: EntityId::derive(&sys, "10249/1"),
                key: Key::composite(&["10249", "1"]),
            },
        ])
        .await
        .unwrap();
    assert!(
        res.iter().all(|r| matches!(r, WriteResult::Ok { .. })),
        "{res:?}"
    );
    let rows = read_all(&c).await;
    assert_eq!(rows.len(), 2, "{kind:?}");
    assert_eq!(rows[1].0, k);
    assert_eq!(rows[1].1.get("qty"), Some(&Value::Int(9)));
    s.pool()
        .execute(&format!("DROP TABLE IF EXISTS {t}"), &[])
        .await
        .unwrap();
    s.drop().await;
}

/// Updates by key and deletes in batches larger than one statement holds (1 203 rows, a
/// composite key): every row updated, a key updated twice in one batch keeps the later value,
/// keys that do not exist answer `NotFound` and create nothing, deletes remove exactly theirs.
pub async fn large_batches_of_updates_and_deletes(kind: Kind) {
    let Some(s) = Table::new(kind, "bulkupd").await else {
        return;
    };
    let t = format!("{}_lines", s.table);
    let ddl = match kind {
        Kind::Postgres => format!("CREATE TABLE {t} (order_id int4, line int2, sku varchar(20), qty int4 NOT NULL, PRIMARY KEY (order_id, line))"),
        Kind::MariaDb => format!("CREATE TABLE {t} (order_id INT, line SMALLINT, sku VARCHAR(20), qty INT NOT NULL, PRIMARY KEY (order_id, line))"),
        _ => format!("CREATE TABLE {t} (order_id INTEGER, line INTEGER, sku TEXT, qty INTEGER NOT NULL, PRIMARY KEY (order_id, line))"),
    };
    s.pool().execute(&ddl, &[]).await.unwrap();
    let mut cfg = s.config(CaptureMode::Scan, 500);
    cfg.table = t.clone();
    cfg.key = vec!["order_id".into(), "line".into()];
    let sys = SystemId::new("erp").unwrap();
    let c = SqlConnector::connect(sys.clone(), cfg).await.unwrap();
    let line = |i: i64, q: i64| {
        Fields::new()
            .with("order_id", 10_000 + i / 7)
            .with("line", i % 7)
            .with("sku", format!("S{i}"))
            .with("qty", q)
    };
    let key = |i: i64| Key::composite(&[&(10_000 + i / 7).to_string(), &(i % 7).to_string()]);
    let n = 1_203;
    let creates: Vec<WriteOp> = (0..n)
        .map(|i| WriteOp::Upsert {
            entity: EntityId::derive(&sys, &i.to_string()),
            key: None,
            fields: line(i, 1),
        })
        .collect();
    let res = c.write(creates).await.unwrap();
    assert!(
        res.iter().all(|r| matches!(r, WriteResult::Ok { .. })),
        "{kind:?}"
    );
    let mut ops: Vec<WriteOp> = (0..n)
        .map(|i| WriteOp::Upsert {
            entity: EntityId::derive(&sys, &i.to_string()),
            key: Some(key(i)),
            fields: line(i, i + 2),
        })
        .collect();
    // The same row twice: the later op wins.
    ops.push(WriteOp::Upsert {
        entity: EntityId::derive(&sys, "5"),
        key: Some(key(5)),
        fields: line(5, 555),
    });
    for ghost in [n + 10, n + 11] {
        ops.push(WriteOp::Upsert {
            entity: EntityId::derive(&sys, &ghost.to_string()),
            key: Some(key(ghost)),
            fields: line(ghost, 9),
        });
    }
    let res = c.write(ops).await.unwrap();
    assert_eq!(res.len(), n as usize + 3);
    assert!(
        res[..n as usize + 1]
            .iter()
            .all(|r| matches!(r, WriteResult::Ok { .. })),
        "{kind:?}"
    );
    for r in &res[n as usize + 1..] {
        assert!(
            matches!(
                r,
                WriteResult::Err {
                    kind: concord::connector::WriteErrorKind::NotFound,
                    ..
                }
            ),
            "{kind:?}: {r:?}"
        );
    }
    let rows = read_all(&c).await;
    assert_eq!(
        rows.len(),
        n as usize,
        "{kind:?}: the NotFound updates created nothing"
    );
    let qty: std::collections::BTreeMap<Key, Value> = rows
        .iter()
        .map(|(k, f)| (k.clone(), f.get("qty").cloned().unwrap()))
        .collect();
    for i in 0..n {
        let want = if i == 5 { 555 } else { i + 2 };
        assert_eq!(qty[&key(i)], Value::Int(want), "{kind:?}: row {i}");
    }
    // Conditional partial updates of every row: two sets of changed columns (qty; sku and
    // qty), a row changed since its base (Stale, left alone), a missing row (NotFound).
    let mut ops: Vec<WriteOp> = (0..n)
        .map(|i| {
            let now = if i == 5 { 555 } else { i + 2 };
            let base = line(i, now);
            let target = if i % 2 == 0 {
                line(i, now + 1)
            } else {
                line(i, now + 1).with("sku", format!("T{i}"))
            };
            let base = if i == 8 {
                line(i, 12345) // not what the row holds
            } else {
                base
            };
            WriteOp::Update {
                entity: EntityId::derive(&sys, &i.to_string()),
                key: key(i),
                fields: target,
                base: concord::connector::WriteBase {
                    fields: base,
                    modstamp: None,
                },
            }
        })
        .collect();
    ops.push(WriteOp::Update {
        entity: EntityId::derive(&sys, "ghost"),
        key: key(n + 30),
        fields: line(n + 30, 1),
        base: concord::connector::WriteBase {
            fields: line(n + 30, 0),
            modstamp: None,
        },
    });
    let res = c.write(ops).await.unwrap();
    for (i, r) in res.iter().enumerate() {
        let want_ok = i < n as usize && i != 8;
        match r {
            WriteResult::Ok { .. } => assert!(want_ok, "{kind:?}: op {i}: {r:?}"),
            WriteResult::Err {
                kind: concord::connector::WriteErrorKind::Stale,
                ..
            } => assert_eq!(i, 8, "{kind:?}: {r:?}"),
            WriteResult::Err {
                kind: concord::connector::WriteErrorKind::NotFound,
                ..
            } => assert_eq!(i, n as usize, "{kind:?}: {r:?}"),
            other => panic!("{kind:?}: op {i}: {other:?}"),
        }
    }
    let rows = read_all(&c).await;
    let by_key: std::collections::BTreeMap<Key, Fields> = rows.into_iter().collect();
    for i in 0..n {
        let f = &by_key[&key(i)];
        let now = if i == 5 { 555 } else { i + 2 };
        let (q, sku) = match i {
            8 => (now, format!("S{i}")),
            i if i % 2 == 0 => (now + 1, format!("S{i}")),
            _ => (now + 1, format!("T{i}")),
        };
        assert_eq!(f.get("qty"), Some(&Value::Int(q)), "{kind:?}: row {i}");
        assert_eq!(f.get("sku"), Some(&Value::text(sku)), "{kind:?}: row {i}");
    }
    let dels: Vec<WriteOp> = (0..700)
        .chain([n + 20])
        .map(|i| WriteOp::Delete {
            entity: EntityId::derive(&sys, &i.to_string()),
            key: key(i),
        })
        .collect();
    let res = c.write(dels).await.unwrap();
    assert!(
        res.iter().all(|r| matches!(r, WriteResult::Ok { .. })),
        "{kind:?}"
    );
    let rows = read_all(&c).await;
    assert_eq!(rows.len(), n as usize - 700, "{kind:?}");
    assert!(rows.iter().all(|(k, _)| (700..n).any(|i| key(i) == *k)));
    s.pool()
        .execute(&format!("DROP TABLE IF EXISTS {t}"), &[])
        .await
        .unwrap();
    s.drop().await;
}

/// Batches of creates large enough for PostgreSQL's COPY path: text with tabs, newlines and
/// backslashes, NULLs and an update of existing keys come back as written; a value the column
/// cannot hold rejects that record only (the batch retried record by record).
pub async fn bulk_creates_round_trip(kind: Kind) {
    let Some(s) = Table::new(kind, "bulkins").await else {
        return;
    };
    let t = format!("{}_rows", s.table);
    let ddl = match kind {
        Kind::Postgres => format!("CREATE TABLE {t} (id int8 PRIMARY KEY, sku varchar(20), note text, qty int4 NOT NULL DEFAULT 0, data bytea)"),
        Kind::MariaDb => format!("CREATE TABLE {t} (id BIGINT PRIMARY KEY, sku VARCHAR(20), note TEXT, qty INT NOT NULL DEFAULT 0, data BLOB)"),
        _ => format!("CREATE TABLE {t} (id INTEGER PRIMARY KEY, sku TEXT, note TEXT, qty INTEGER NOT NULL DEFAULT 0, data BLOB)"),
    };
    s.pool().execute(&ddl, &[]).await.unwrap();
    let mut cfg = s.config(CaptureMode::Scan, 500);
    cfg.table = t.clone();
    cfg.key = vec!["id".into()];
    let sys = SystemId::new("erp").unwrap();
    let c = SqlConnector::connect(sys.clone(), cfg).await.unwrap();
    let row = |i: i64, v: &str| {
        let mut f = Fields::new()
            .with("id", i)
            .with("qty", i * 10)
            .with("note", format!("tab\there\\back\nslash {v} {i} \u{e9}"))
            .with(
                "data",
                Value::Bytes(vec![0, b'\\', b'\t', (i % 256) as u8, 255]),
            );
        if i % 10 != 3 {
            f = f.with("sku", format!("S{i}{v}"));
        }
        f
    };
    let creates = |v: &'static str| -> Vec<WriteOp> {
        (0..300)
            .map(|i| WriteOp::Upsert {
                entity: EntityId::derive(&sys, &i.to_string()),
                key: None,
                fields: row(i, v),
            })
            .collect()
    };
    let res = c.write(creates("a")).await.unwrap();
    assert!(
        res.iter().all(|r| matches!(r, WriteResult::Ok { .. })),
        "{kind:?}: {res:?}"
    );
    // The same keys again (a retried batch): updated in place, nothing duplicated.
    let res = c.write(creates("b")).await.unwrap();
    assert!(
        res.iter().all(|r| matches!(r, WriteResult::Ok { .. })),
        "{kind:?}"
    );
    let rows = read_all(&c).await;
    assert_eq!(rows.len(), 300, "{kind:?}");
    for (k, f) in &rows {
        let i: i64 = k.as_str().parse().unwrap();
        let want = row(i, "b");
        for name in ["id", "sku", "note", "qty", "data"] {
            assert_eq!(f.get(name), want.get(name), "{kind:?}: row {i} {name}");
        }
    }
    if kind != Kind::Sqlite {
        // One value too long for varchar(20) among 100 creates: that record only.
        let ops: Vec<WriteOp> = (1000..1100)
            .map(|i| {
                let mut f = row(i, "c");
                if i == 1050 {
                    f = f.with("sku", "x".repeat(40));
                }
                WriteOp::Upsert {
                    entity: EntityId::derive(&sys, &i.to_string()),
                    key: None,
                    fields: f,
                }
            })
            .collect();
        let res = c.write(ops).await.unwrap();
        for (n, r) in res.iter().enumerate() {
            if n == 50 {
                assert!(
                    matches!(
                        r,
                        WriteResult::Err {
                            kind: concord::connector::WriteErrorKind::Rejected,
                            ..
                        }
                    ),
                    "{kind:?}: {r:?}"
                );
            } else {
                assert!(matches!(r, WriteResult::Ok { .. }), "{kind:?}: {n}: {r:?}");
            }
        }
        assert_eq!(read_all(&c).await.len(), 399, "{kind:?}");
    }
    s.pool()
        .execute(&format!("DROP TABLE IF EXISTS {t}"), &[])
        .await
        .unwrap();
    s.drop().await;
}
